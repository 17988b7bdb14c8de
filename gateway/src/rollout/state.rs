//! Where each rollout stands: its position among the steps, since when, whether it is paused,
//! its failed checks and the last analysis. This is state, kept by a [`super::store`], never
//! written into routes.toml; the route table is compiled from the file *and* the [`Overlay`] of
//! these positions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::Placement;
use crate::stage::Stage;

/// The placement each rolling-out route is at, by route name. A route with a rollout and no
/// entry keeps the placement it was served with (legacy when new).
pub type Overlay = BTreeMap<String, Placement>;

/// A gate's verdict in one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not enough data yet: the step waits.
    Inconclusive,
}

/// One gate in one analysis: its verdict, the value measured and what it was held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub gate: String,
    pub verdict: Verdict,
    /// Human-readable measurement, e.g. "match rate 0.998 over 1200 comparisons (min 0.99)".
    pub detail: String,
    /// The measured value, when there is one.
    pub value: Option<f64>,
}

/// One analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub at_unix_ms: u64,
    pub verdict: Verdict,
    pub gates: Vec<GateResult>,
}

/// Where one route's rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// 0 = legacy (before the first step), `i` = step `i - 1`.
    pub position: usize,
    /// When the current position began.
    pub since_unix_ms: u64,
    pub paused: bool,
    /// Why it is paused (a rollback, an operator).
    #[serde(default)]
    pub paused_reason: Option<String>,
    /// Consecutive failed analyses at this position.
    pub failures: u32,
    #[serde(default)]
    pub last_check: Option<Check>,
    /// The plan's steps when this state was last reconciled with it (see
    /// [`super::plan::RolloutPlan::steps_fingerprint`]).
    pub steps: String,
    /// The placement of `position` (what the route serves).
    pub placement: StoredPlacement,
}

/// [`Placement`] as stored (stage name and weight in percent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoredPlacement {
    pub stage: StoredStage,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredStage {
    Legacy,
    Shadow,
    Canary,
    Extracted,
}

impl From<Placement> for StoredPlacement {
    fn from(p: Placement) -> Self {
        let stage = match p.stage {
            Stage::Legacy => StoredStage::Legacy,
            Stage::Shadow => StoredStage::Shadow,
            Stage::Canary => StoredStage::Canary,
            Stage::Extracted => StoredStage::Extracted,
        };
        StoredPlacement { stage, weight: p.weight_bp as f64 / 100.0 }
    }
}

impl From<StoredPlacement> for Placement {
    fn from(p: StoredPlacement) -> Self {
        let stage = match p.stage {
            StoredStage::Legacy => Stage::Legacy,
            StoredStage::Shadow => Stage::Shadow,
            StoredStage::Canary => Stage::Canary,
            StoredStage::Extracted => Stage::Extracted,
        };
        Placement { stage, weight_bp: (p.weight * 100.0).round().clamp(0.0, 10_000.0) as u32 }
    }
}

/// Every rollout's state, by route name.
pub type States = BTreeMap<String, RolloutState>;

/// The overlay the route table is compiled with.
pub fn overlay(states: &States) -> Overlay {
    states.iter().map(|(name, s)| (name.clone(), Placement::from(s.placement))).collect()
}

/// One entry of the audit trail: a change of a route's effective stage or weight, or an
/// operator's action on a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_unix_ms: u64,
    pub route: String,
    /// `start`, `promote`, `rollback`, `pause`, `resume`, `abort`, `reload`, `plan_changed`.
    pub kind: String,
    pub from: String,
    pub to: String,
    /// `controller`, `admin:<token name>`, `reload:<trigger>`.
    pub who: String,
    pub why: String,
    #[serde(default)]
    pub gates: Vec<GateResult>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

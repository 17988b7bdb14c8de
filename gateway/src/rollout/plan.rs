//! A route's compiled `[routes.rollout]`: ordered steps, the analysis interval, the failure
//! limit and the gates. Pure data, compiled with the route table; where a rollout stands is
//! state ([`super::state`]), never part of the plan.

use std::time::Duration;

use crate::stage::Stage;

/// One step of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub stage: Stage,
    /// Canary weight in basis points (0 for other stages).
    pub weight_bp: u32,
    /// How long the step must run (with passing checks) before promotion; `None` only for the
    /// last step, where the rollout ends.
    pub duration: Option<Duration>,
}

/// Where traffic goes at a position: the stage and the canary weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub stage: Stage,
    pub weight_bp: u32,
}

impl Placement {
    pub const LEGACY: Placement = Placement { stage: Stage::Legacy, weight_bp: 0 };

    /// Order of exposure: legacy < shadow < canary by weight < extracted.
    pub fn rank(self) -> (u8, u32) {
        match self.stage {
            Stage::Legacy => (0, 0),
            Stage::Shadow => (1, 0),
            Stage::Canary => (2, self.weight_bp),
            Stage::Extracted => (3, 0),
        }
    }

    /// The less exposed of the two (the plan in routes.toml caps what a rollout may reach).
    pub fn narrowed_by(self, ceiling: Placement) -> Placement {
        if self.rank() <= ceiling.rank() {
            self
        } else {
            ceiling
        }
    }

    /// "legacy", "shadow", "canary 25%", "extracted".
    pub fn label(self) -> String {
        match self.stage {
            Stage::Canary => format!("canary {}%", self.weight_bp as f64 / 100.0),
            s => s.as_str().to_string(),
        }
    }
}

/// `[routes.rollout.gates]`: the evidence a step needs. Each gate is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gates {
    /// Shadow match rate ≥ `min` over at least `min_comparisons` comparisons (while the route
    /// shadows: shadow steps, and canary steps with `on_canary`).
    pub match_rate: Option<MatchRateGate>,
    /// Extracted 5xx rate ≤ legacy 5xx rate + `max_delta`, over at least `min_requests` per side
    /// (canary steps: both sides serve).
    pub error_rate: Option<ErrorRateGate>,
    /// Extracted p99 ≤ `max_ratio` × legacy p99, over at least `min_requests` per side.
    pub latency: Option<LatencyGate>,
    /// Every named cdc-sync pipeline reachable, ready, and lagging at most `max`.
    pub cdc_lag: Option<CdcLagGate>,
    /// A Prometheus query whose value must lie within [`min`, `max`].
    pub prometheus: Option<PrometheusGate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchRateGate {
    pub min: f64,
    pub min_comparisons: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRateGate {
    pub max_delta: f64,
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyGate {
    pub max_ratio: f64,
    pub min_requests: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CdcLagGate {
    /// Status URLs (`http://host:port/status`) of the pipelines.
    pub status: Vec<String>,
    pub max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusGate {
    /// Base URL of the Prometheus server (`http://127.0.0.1:9090`).
    pub url: String,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A route's rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    pub steps: Vec<Step>,
    /// Time between two analyses.
    pub interval: Duration,
    /// Consecutive failed analyses that roll the route back (and pause it).
    pub failure_limit: u32,
    pub gates: Gates,
}

impl RolloutPlan {
    /// Placement at `position`: 0 is legacy (before the first step), `i` is step `i - 1`.
    pub fn placement(&self, position: usize) -> Placement {
        match position.checked_sub(1).and_then(|i| self.steps.get(i)) {
            Some(s) => Placement { stage: s.stage, weight_bp: s.weight_bp },
            None if position == 0 => Placement::LEGACY,
            None => {
                self.steps.last().map_or(Placement::LEGACY, |s| Placement { stage: s.stage, weight_bp: s.weight_bp })
            }
        }
    }

    /// The last position (the final step).
    pub fn last_position(&self) -> usize {
        self.steps.len()
    }

    /// A stable fingerprint of the steps (a plan edit that changes them restarts the step).
    pub fn steps_fingerprint(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("{}:{}:{}", s.stage.as_str(), s.weight_bp, s.duration.map_or(0, |d| d.as_millis())))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_rank_and_narrow() {
        let c5 = Placement { stage: Stage::Canary, weight_bp: 500 };
        let c50 = Placement { stage: Stage::Canary, weight_bp: 5000 };
        let ext = Placement { stage: Stage::Extracted, weight_bp: 0 };
        let shadow = Placement { stage: Stage::Shadow, weight_bp: 0 };
        assert!(Placement::LEGACY.rank() < shadow.rank() && shadow.rank() < c5.rank() && c5.rank() < c50.rank());
        assert!(c50.rank() < ext.rank());
        assert_eq!(ext.narrowed_by(c5), c5, "the plan caps the rollout");
        assert_eq!(shadow.narrowed_by(ext), shadow);
        assert_eq!(c50.label(), "canary 50%");
    }
}

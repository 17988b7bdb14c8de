//! Shadow traffic: mirror a request to the extracted service, compare the two answers, report.
//!
//! - [`policy`]: a route's compiled `[routes.shadow]` table.
//! - [`capture`]: the proxy-side hooks (hot path): choose, capture chunk references, enqueue.
//! - [`worker`]: the dedicated runtime with per-route bounded queues, the mirror client,
//!   noise replay and comparison.
//! - [`compare`]: the pure comparison engine (also used by the contract tests).
//! - [`report`]: per-route reports (admin API, CLI table); [`store`] persists them.

pub mod capture;
pub mod cli;
pub mod compare;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod store;
pub mod worker;

use std::path::PathBuf;

pub use capture::{finish, start, Capture};
pub use policy::{ShadowPolicy, ShadowSpec};
pub use report::{registry, RouteReport};
pub use worker::{Shadower, SHADOW_HEADER};

/// `[gateway]` settings of the shadow runtime (apply at restart).
#[derive(Debug, Clone)]
pub struct ShadowSettings {
    /// Where samples (rotating JSONL) and report snapshots are kept; nothing is persisted when
    /// absent.
    pub dir: Option<PathBuf>,
    /// Worker threads of the shadow runtime.
    pub threads: usize,
    /// Size at which `samples.jsonl` is rotated.
    pub file_bytes: u64,
    /// Sample files kept (the current one included).
    pub files: usize,
    /// Nice value of the shadow threads (0–19): under CPU contention the proxy's threads win and
    /// mirrors queue up and are dropped instead.
    pub nice: i32,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self { dir: None, threads: 1, file_bytes: 8 * 1024 * 1024, files: 4, nice: 10 }
    }
}

/// The shadow section of the admin API: every report, with its route's stage in the serving
/// config (`-` when the route no longer exists) and, for one route, the samples.
pub fn reports_json(table: &crate::table::RouteTable, route: Option<&str>) -> Option<serde_json::Value> {
    let decorate = |r: &RouteReport, samples: bool| {
        let mut v = r.to_json(samples);
        let live = table.routes.iter().find(|x| x.name == r.name);
        v["stage"] = serde_json::json!(live.map(|x| x.stage.as_str()).unwrap_or("-"));
        v["active"] = serde_json::json!(live.is_some_and(|x| x.shadow.is_some()));
        if let Some(p) = live.and_then(|x| x.shadow.as_ref()) {
            v["sample"] = serde_json::json!(p.spec.sample);
        }
        v
    };
    match route {
        Some(name) => registry().get(name).map(|r| decorate(&r, true)),
        None => {
            Some(serde_json::json!({"routes": registry().all().iter().map(|r| decorate(r, false)).collect::<Vec<_>>()}))
        }
    }
}

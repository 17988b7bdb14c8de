//! The shadow service the proxy owns: the runtime that sends mirrors, every route's report by
//! name, and the binding of the serving route table's shadow rules to per-route queues and
//! samplers. No process-wide state: two gateways in one process (tests) never share a report.
//!
//! The route table holds only rules. The first shadowed request after a reload binds the new
//! table (one lock, once per table); every other request does one `ArcSwap` load and an index.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use super::lane::{Lane, RouteShadow};
use super::policy::ShadowSettings;
use super::report::{Reports, RouteReport};
use super::worker::Shadower;
use crate::sampler::Sampler;
use crate::table::RouteTable;

/// The shadow rules of one route table bound to queues and reports.
struct Binding {
    /// The table this binding is for (compared by address; the `Weak` keeps the address from
    /// being reused while the binding exists).
    table: Weak<RouteTable>,
    /// By route index.
    routes: Vec<Option<Arc<RouteShadow>>>,
}

/// Mirrors, compares and reports; owned by the proxy (and shared with the admin API).
pub struct ShadowService {
    /// `None`: shadowing is off (nothing is mirrored; reports still answer).
    runtime: Option<Arc<Shadower>>,
    reports: Arc<Reports>,
    binding: ArcSwap<Binding>,
    /// Serialises rebinding.
    bind_lock: Mutex<()>,
}

impl ShadowService {
    /// Starts the shadow runtime with `settings`: restores persisted reports, starts the workers
    /// and the sample store.
    pub fn start(settings: &ShadowSettings) -> anyhow::Result<Arc<Self>> {
        let reports = Arc::new(Reports::default());
        let runtime = Shadower::start(settings, &reports)?;
        Ok(Arc::new(Self::with(Some(Arc::new(runtime)), reports)))
    }

    /// A service that mirrors nothing (tools and tests that only need the proxy's routing).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self::with(None, Arc::new(Reports::default())))
    }

    fn with(runtime: Option<Arc<Shadower>>, reports: Arc<Reports>) -> Self {
        Self {
            runtime,
            reports,
            binding: ArcSwap::from_pointee(Binding { table: Weak::new(), routes: Vec::new() }),
            bind_lock: Mutex::new(()),
        }
    }

    /// The shadow runtime of route `route` of `table`, when that route mirrors.
    #[inline]
    pub fn route(&self, table: &Arc<RouteTable>, route: usize) -> Option<Arc<RouteShadow>> {
        table.routes.get(route)?.shadow.as_ref()?;
        let b = self.binding.load();
        if std::ptr::eq(b.table.as_ptr(), Arc::as_ptr(table)) {
            return b.routes.get(route).cloned().flatten();
        }
        drop(b);
        self.bind(table).routes.get(route).cloned().flatten()
    }

    /// Binds `table` (unless another thread just did): each route with shadow rules gets its
    /// report (by name), a sampler, and a queue — the previous binding's queue when the route's
    /// `queue` and `concurrency` did not change, so a reload loses no queued mirror.
    fn bind(&self, table: &Arc<RouteTable>) -> Arc<Binding> {
        let _guard = self.bind_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.binding.load_full();
        if std::ptr::eq(current.table.as_ptr(), Arc::as_ptr(table)) {
            return current;
        }
        let previous: HashMap<&str, &Arc<RouteShadow>> =
            current.routes.iter().flatten().map(|r| (r.route.as_str(), r)).collect();
        let routes = table
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let spec = r.shadow.as_ref()?;
                let runtime = self.runtime.as_ref()?;
                let shape = (spec.queue, spec.concurrency);
                let lane: Lane = match previous.get(r.name.as_str()) {
                    Some(p) if p.lane.queue.shape == shape => p.lane.clone(),
                    _ => runtime.lane(spec.queue, spec.concurrency),
                };
                let report = self.reports.report(&r.name);
                report.set_sample_capacity(spec.samples);
                Some(Arc::new(RouteShadow {
                    route: r.name.clone(),
                    spec: spec.clone(),
                    report,
                    sampler: Sampler::new(spec.sample),
                    lane,
                    activity: table.activity.clone(),
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                }))
            })
            .collect();
        let binding = Arc::new(Binding { table: Arc::downgrade(table), routes });
        self.binding.store(binding.clone());
        binding
    }

    /// The report of `route`, made when missing (tests that record comparisons by hand).
    #[cfg(test)]
    pub(crate) fn report_or_new(&self, route: &str) -> Arc<RouteReport> {
        self.reports.report(route)
    }

    /// The report of `route`, if it ever mirrored (or was restored from disk).
    pub fn report(&self, route: &str) -> Option<Arc<RouteReport>> {
        self.reports.get(route)
    }

    /// The shadow section of the admin API: every report, with its route's stage in the serving
    /// config (`-` when the route no longer exists) and, for one route, the samples.
    pub fn reports_json(&self, table: &RouteTable, route: Option<&str>) -> Option<Value> {
        let decorate = |r: &RouteReport, samples: bool| {
            let mut v = r.to_json(samples);
            let live = table.route(&r.name);
            v["stage"] = json!(live.map(|x| x.stage.as_str()).unwrap_or("-"));
            v["active"] = json!(live.is_some_and(|x| x.shadow.is_some()));
            if let Some(spec) = live.and_then(|x| x.shadow.as_ref()) {
                v["sample"] = json!(spec.sample);
            }
            v
        };
        match route {
            Some(name) => self.reports.get(name).map(|r| decorate(&r, true)),
            None => Some(json!({"routes": self.reports.all().iter().map(|r| decorate(r, false)).collect::<Vec<_>>()})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str_offline;

    const ROUTES: &str = r#"
[defaults]
upstream = "legacy"
[upstreams.legacy]
endpoints = ["127.0.0.1:1"]
[upstreams.svc]
endpoints = ["127.0.0.1:2"]
[[routes]]
name = "plain"
match = { path = "/plain" }
stage = "legacy"
[[routes]]
name = "mirrored"
match = { path = "/m" }
to = "svc"
stage = "shadow"
"#;

    #[test]
    fn binds_per_table_and_keeps_reports_and_lanes_across_reloads() {
        let svc = ShadowService::start(&ShadowSettings::default()).unwrap();
        let t1 = Arc::new(load_str_offline("r.toml", ROUTES).unwrap());
        assert!(svc.route(&t1, 0).is_none(), "a legacy route mirrors nothing");
        let a = svc.route(&t1, 1).unwrap();
        assert!(Arc::ptr_eq(&a, &svc.route(&t1, 1).unwrap()), "one binding per table");
        // a reload: new rules, same report and queue
        let t2 = Arc::new(load_str_offline("r.toml", &ROUTES.replace("/m\"", "/mm\"")).unwrap());
        let b = svc.route(&t2, 1).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a.report, &b.report), "the report survives the reload");
        assert!(Arc::ptr_eq(&a.lane.queue, &b.lane.queue), "the queue survives the reload");
        // two services never share a report, even for the same route name
        let other = ShadowService::disabled();
        assert!(other.route(&t2, 1).is_none(), "a disabled service mirrors nothing");
        assert!(other.report("mirrored").is_none());
        assert!(svc.report("mirrored").is_some());
    }
}

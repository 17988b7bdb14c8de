//! The dashboard's sampler: every [`TICK`], on the admin runtime, it reads the counters the
//! gateway already keeps — the Prometheus request counters and latency histograms of each route
//! and side, and the shadow reports' comparison counts — and keeps the difference from the last
//! tick in each route's bounded rings ([`super::series`]). The proxy's request path does no work
//! for it: reading a counter is an atomic load.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::series::{chart, HourRing, Point, ShadowDelta, SideDelta, StageSeries, BUCKETS};
use crate::shadow::report::Count;
use crate::shadow::ShadowService;
use crate::stage::Side;
use crate::table::{Route, RouteTable};

/// How often the sampler reads the counters.
pub const TICK: Duration = Duration::from_secs(2);
/// What the hour ring keeps.
pub const HOUR_MS: u64 = 3_600_000;
/// The routes list's window.
pub const MINUTE_MS: u64 = 60_000;
/// Points kept for "since the stage began" (their width doubles when full).
const STAGE_POINTS: usize = 240;
/// Points a chart is merged into.
const CHART_POINTS: usize = 120;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The counters of a route at one instant (cumulative since the process started).
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    sides: [SideDelta; 2],
    shadow: ShadowDelta,
}

/// A route's counters now. Reading a counter is an atomic load; the latency buckets are read
/// (which builds Prometheus' protobuf form) only for a side whose request count moved since
/// `before`, so a tick over thousands of idle routes stays cheap.
fn read(route: &Route, shadow: &ShadowService, before: Option<&Reading>) -> Reading {
    let mut r = Reading::default();
    for (i, side) in [Side::Legacy, Side::Extracted].into_iter().enumerate() {
        let s = &mut r.sides[i];
        let Some(m) = route.metrics.side(side) else {
            // nothing recorded through this table yet: the series (shared by name across
            // reloads) stand where they stood
            if let Some(b) = before {
                *s = b.sides[i];
            }
            continue;
        };
        let classes = m.class_counts();
        s.requests = classes.iter().sum();
        s.errors_5xx = classes[5];
        let count = m.latency_count();
        match before.map(|b| &b.sides[i]) {
            Some(b) if b.buckets[BUCKETS - 1] == count => s.buckets = b.buckets,
            _ => {
                m.latency_buckets(&mut s.buckets[..BUCKETS - 1]);
                s.buckets[BUCKETS - 1] = count;
            }
        }
    }
    if let Some(report) = shadow.report(&route.name) {
        r.shadow = ShadowDelta { compared: report.get(Count::Compared), matched: report.get(Count::Matched) };
    }
    r
}

/// What the sampler keeps of one route.
#[derive(Debug)]
struct RouteHistory {
    last: Option<(u64, Reading)>,
    hour: HourRing,
    stage: &'static str,
    /// When the current stage was first seen (Unix ms).
    stage_since_ms: u64,
    /// `false` when the stage was already in place when the sampler started: it began earlier.
    stage_since_known: bool,
    since_stage: StageSeries,
}

/// Every route's recent history, by name. Routes that leave routes.toml are forgotten.
#[derive(Debug, Default)]
pub struct TrafficHistory {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ticked: bool,
    routes: HashMap<String, RouteHistory>,
}

impl TrafficHistory {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every route of `table` and records what changed since the last tick.
    pub fn tick(&self, table: &RouteTable, shadow: &ShadowService, now: u64) {
        let names: HashSet<&str> = table.routes.iter().map(|r| r.name.as_str()).collect();
        let mut state = self.state();
        let first_tick = !std::mem::replace(&mut state.ticked, true);
        let routes = &mut state.routes;
        routes.retain(|name, _| names.contains(name.as_str()));
        for route in &table.routes {
            let name = route.name.as_str();
            let stage = route.stage.as_str();
            let reading = read(route, shadow, routes.get(name).and_then(|h| h.last.as_ref()).map(|(_, r)| r));
            if !routes.contains_key(name) {
                let h = RouteHistory {
                    last: None,
                    hour: HourRing::default(),
                    stage,
                    stage_since_ms: now,
                    // a route added by a reload starts its stage now; one present at start did not
                    stage_since_known: !first_tick,
                    since_stage: StageSeries::new(STAGE_POINTS),
                };
                routes.insert(name.to_string(), h);
            }
            let Some(h) = routes.get_mut(name) else { continue };
            if h.stage != stage {
                h.stage = stage;
                h.stage_since_ms = now;
                h.stage_since_known = true;
                h.since_stage = StageSeries::new(STAGE_POINTS);
            }
            if let Some((then, before)) = h.last {
                let p = Point {
                    start_ms: then,
                    end_ms: now,
                    sides: [reading.sides[0].since(&before.sides[0]), reading.sides[1].since(&before.sides[1])],
                    shadow: reading.shadow.since(&before.shadow),
                };
                h.hour.push(p, HOUR_MS);
                h.since_stage.push(p);
            }
            h.last = Some((now, reading));
        }
    }

    /// The last minute of `route`, for the routes list: per side requests/s, 5xx rate and p99;
    /// the share extracted answered; the shadow match rate; when the stage began.
    pub fn summary(&self, route: &str, now: u64) -> Value {
        let state = self.state();
        let Some(h) = state.routes.get(route) else {
            return json!({"window_s": 0.0, "legacy": SideDelta::default().summary(0.0),
                "extracted": SideDelta::default().summary(0.0), "extracted_share": null,
                "match_rate": null, "compared": 0, "stage_since_ms": null, "stage_since_known": false});
        };
        let w = h.hour.window(now, MINUTE_MS);
        let secs = w.seconds();
        let total = w.sides[0].requests + w.sides[1].requests;
        json!({
            "window_s": secs,
            "legacy": w.sides[0].summary(secs),
            "extracted": w.sides[1].summary(secs),
            "extracted_share": (total > 0).then(|| (w.sides[1].requests as f64 / total as f64 * 10_000.0).round() / 10_000.0),
            "match_rate": w.shadow.match_rate(),
            "compared": w.shadow.compared,
            "stage_since_ms": h.stage_since_ms,
            "stage_since_known": h.stage_since_known,
        })
    }

    /// `route`'s charts: the last hour, and since its stage began.
    pub fn charts(&self, route: &str) -> Value {
        let state = self.state();
        let Some(h) = state.routes.get(route) else {
            return json!({"tick_ms": TICK.as_millis() as u64, "hour": chart(&[], CHART_POINTS),
                "since_stage": chart(&[], CHART_POINTS)});
        };
        json!({
            "tick_ms": TICK.as_millis() as u64,
            "hour": chart(&h.hour.points(), CHART_POINTS),
            "since_stage": chart(h.since_stage.points(), CHART_POINTS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::series::LATENCY_BOUNDS;
    use super::*;
    use crate::config::load_str_offline;
    use crate::metrics::metrics;
    use prometheus::core::Metric;

    const ROUTES: &str = r#"
[defaults]
upstream = "legacy"
[upstreams.legacy]
endpoints = ["127.0.0.1:1"]
[upstreams.svc]
endpoints = ["127.0.0.1:2"]
[[routes]]
name = "ui-sampler-unit"
match = { path = "/u" }
to = "svc"
stage = "canary"
weight = 50
"#;

    #[test]
    fn the_latency_bounds_are_the_gateways() {
        let h = metrics().latency.with_label_values(&["ui-bounds", "legacy"]);
        let proto = h.metric();
        let bounds: Vec<f64> = proto.get_histogram().get_bucket().iter().map(|b| b.upper_bound()).collect();
        assert_eq!(bounds, LATENCY_BOUNDS[..BUCKETS - 1].to_vec());
    }

    #[test]
    fn ticks_record_what_changed_and_stage_changes() {
        let table = load_str_offline("r.toml", ROUTES).unwrap();
        let shadow = ShadowService::disabled();
        let hist = TrafficHistory::default();
        hist.tick(&table, &shadow, 1_000);
        let route = &table.routes[0];
        for i in 0..10 {
            let side = if i % 2 == 0 { Side::Legacy } else { Side::Extracted };
            route.metrics.observe(side, if i == 9 { 503 } else { 200 }, 0.003);
        }
        hist.tick(&table, &shadow, 3_000);
        let s = hist.summary("ui-sampler-unit", 3_000);
        assert_eq!(s["window_s"], 2.0);
        assert_eq!(s["legacy"]["requests"], 5);
        assert_eq!(s["extracted"]["error_rate"], 0.2);
        assert_eq!(s["extracted_share"], 0.5);
        assert_eq!(s["legacy"]["rps"], 2.5);
        let p99 = s["legacy"]["p99_ms"].as_f64().unwrap();
        assert!((2.5..=5.0).contains(&p99), "{p99}");
        assert_eq!(s["stage_since_known"], false, "present at start");
        // the stage moves: a new series starts
        let moved = load_str_offline("r.toml", &ROUTES.replace("\"canary\"\nweight = 50", "\"extracted\"")).unwrap();
        hist.tick(&moved, &shadow, 5_000);
        let s = hist.summary("ui-sampler-unit", 5_000);
        assert_eq!((s["stage_since_ms"].as_u64(), &s["stage_since_known"]), (Some(5_000), &json!(true)));
        let c = hist.charts("ui-sampler-unit");
        assert_eq!(c["hour"]["t"], json!([3_000, 5_000]));
        assert_eq!(c["since_stage"]["t"], json!([5_000]));
        // a route that leaves the file is forgotten
        let empty = load_str_offline("r.toml", ROUTES.split("[[routes]]").next().unwrap()).unwrap();
        hist.tick(&empty, &shadow, 7_000);
        assert_eq!(hist.summary("ui-sampler-unit", 7_000)["window_s"], 0.0);
    }
}

//! The dashboard's sampler: every [`TICK`], on the admin runtime, it reads the counters the
//! gateway already keeps — the Prometheus request counters and latency histograms of each route
//! and side, and the shadow reports' comparison counts — and keeps the difference from the last
//! tick in each route's bounded rings ([`super::series`]). The proxy's request path does no work
//! for it beyond marking a route active (a bit in [`crate::metrics::RouteActivity`], set once
//! per route between two ticks).
//!
//! A tick costs what the routes with traffic cost, not what the route count does: it reads the
//! routes marked active since the last tick (and those marked the tick before, for a request
//! that raced with the reading), and only on a new route table every route (to follow
//! additions, removals and stage changes). A shadow comparison, which ends after its request was
//! counted, marks its route too, in the table its mirror was bound in: after a reload the
//! previous table's marks are still taken for [`RETIRED_TICKS`] ticks. The rings' shape (which ticks a point
//! covers, when) is kept once, in the sampler's clocks: one for the hour, one per moment a stage
//! began. A route keeps only the counts of the points where it did something; an idle interval
//! is a point of zeros that nobody stores, filled in when the route is shown.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::series::{chart, window, HourRing, Point, ShadowDelta, SideDelta, Span, StageSeries, BUCKETS};
use crate::metrics::RouteActivity;
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
/// Ticks for which a replaced table's activity marks are still taken: mirrors queued before a
/// reload are compared after it (a queue drains and a mirror gives up well within this).
pub const RETIRED_TICKS: u64 = 60;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The counters of a route at one instant (cumulative since the process started).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Reading {
    sides: [SideDelta; 2],
    shadow: ShadowDelta,
}

/// A route's counters now. Reading a counter is an atomic load; the latency buckets are read
/// (which builds Prometheus' protobuf form) only for a side whose request count moved since
/// `before`.
fn read(route: &Route, shadow: &ShadowService, before: Option<&Reading>) -> Reading {
    let mut r = Reading::default();
    for (i, side) in [Side::Legacy, Side::Extracted].into_iter().enumerate() {
        let s = &mut r.sides[i];
        let b = before.map(|b| &b.sides[i]);
        let m = match (route.metrics.side(side), b) {
            (Some(m), _) => m,
            // counted through an earlier table: the series exist, and may have moved since
            (None, Some(b)) if b.buckets[BUCKETS - 1] > 0 => route.metrics.existing_side(side),
            (None, b) => {
                // nothing recorded through this table yet: the series stand where they stood
                *s = b.copied().unwrap_or_default();
                continue;
            }
        };
        let classes = m.class_counts();
        s.requests = classes.iter().sum();
        s.errors_5xx = classes[5];
        let count = m.latency_count();
        match b {
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

/// What the sampler keeps of one route. An idle route holds this and nothing more.
#[derive(Debug)]
struct RouteHistory {
    /// The tick that read the route first (its first point is the next tick's), and its time.
    first_tick: u64,
    first_ms: u64,
    /// The counters at the last reading (`None`: all zero).
    last: Option<Box<Reading>>,
    /// The last tick that read the route.
    read_at: u64,
    stage: &'static str,
    /// When the current stage was first seen (Unix ms).
    stage_since_ms: u64,
    /// `false` when the stage was already in place when the sampler started: it began earlier.
    stage_since_known: bool,
    /// The stage clock of the current stage (keyed by its first tick).
    stage_clock: u64,
    /// The counts of the points where the route did something.
    counts: Option<Box<Counts>>,
}

/// A route's non-idle points, keyed by the first tick of the clock point they belong to
/// (ascending). A key may be finer than the clock's point when the clock merged points since
/// the route last counted: whoever reads maps each key to the clock point that contains it.
#[derive(Debug, Default)]
struct Counts {
    /// The hour: merged points, then single ticks (as the hour clock).
    hour_coarse: VecDeque<(u64, Point)>,
    hour_fine: VecDeque<(u64, Point)>,
    /// Since the stage began, at the stage clock's `stage_resolution`.
    stage: VecDeque<(u64, Point)>,
    stage_resolution: usize,
}

/// The clock point (of `spans`, oldest first) that contains `tick`.
fn span_of(spans: &[Span], tick: u64) -> Option<&Span> {
    let i = spans.partition_point(|s| s.first <= tick).checked_sub(1)?;
    spans.get(i).filter(|s| s.contains(tick))
}

/// Adds `(key, p)` at the end of `list`, into its last entry when that has the same key.
fn add(list: &mut VecDeque<(u64, Point)>, key: u64, p: &Point) {
    match list.back_mut() {
        Some((k, q)) if *k == key => q.add_counts(p),
        _ => list.push_back((key, *p)),
    }
}

/// The points of `spans` (a clock, oldest first) from tick `from` on, with `counts` (sorted by
/// key) added to the point containing each key: a route's points, idle ones included. The first
/// point starts at `from_ms` when it began before `from`.
fn fill<'a, 'b>(
    spans: impl Iterator<Item = &'a Span>,
    counts: impl Iterator<Item = &'b (u64, Point)>,
    from: u64,
    from_ms: u64,
) -> Vec<Point> {
    let mut counts = counts.peekable();
    let mut out = Vec::new();
    for s in spans.filter(|s| s.last >= from) {
        let mut p = Point {
            start_ms: if s.first < from { s.start_ms.max(from_ms) } else { s.start_ms },
            end_ms: s.end_ms,
            ..Point::default()
        };
        while let Some((k, c)) = counts.peek() {
            if *k > s.last {
                break;
            }
            if *k >= s.first {
                p.add_counts(c);
            }
            counts.next();
        }
        out.push(p);
    }
    out
}

impl Counts {
    /// Records `p`, the route's counts at tick `tick` (the clocks have that tick already).
    fn record(&mut self, tick: u64, p: &Point, hour: &HourRing<Span>, stage: &StageSeries<Span>) {
        // the hour: move ticks the clock merged into its coarse points, drop what it dropped
        let fine_from = hour.fine().front().map_or(u64::MAX, |s| s.first);
        let coarse = hour.coarse();
        while self.hour_fine.front().is_some_and(|(k, _)| *k < fine_from) {
            let Some((k, q)) = self.hour_fine.pop_front() else { break };
            let i = coarse.partition_point(|s| s.first <= k);
            if let Some(s) = i.checked_sub(1).and_then(|i| coarse.get(i)).filter(|s| s.contains(k)) {
                add(&mut self.hour_coarse, s.first, &q);
            }
        }
        let oldest = hour.iter().next().map_or(u64::MAX, |s| s.first);
        while self.hour_coarse.front().is_some_and(|(k, _)| *k < oldest) {
            self.hour_coarse.pop_front();
        }
        self.hour_fine.push_back((tick, *p));
        // since the stage began: re-key when the clock halved its resolution
        let spans = stage.points();
        if self.stage_resolution != stage.resolution() {
            let old = std::mem::take(&mut self.stage);
            for (k, q) in old {
                if let Some(s) = span_of(spans, k) {
                    add(&mut self.stage, s.first, &q);
                }
            }
            self.stage_resolution = stage.resolution();
        }
        if let Some(s) = spans.last().filter(|s| s.contains(tick)) {
            add(&mut self.stage, s.first, p);
        }
    }
}

/// Every route's recent history, by name. Routes that leave routes.toml are forgotten.
#[derive(Debug, Default)]
pub struct TrafficHistory {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Ticks so far (the next tick's number).
    ticks: u64,
    /// The last tick's time.
    last_ms: u64,
    /// The table the last tick read (to see a reload).
    table: Weak<RouteTable>,
    routes: HashMap<String, RouteHistory>,
    /// The hour's points (every route's hour ring has this shape from its first point on).
    hour: HourRing<Span>,
    /// The points since each moment a stage began, by its first tick (only those some route
    /// is in).
    stages: BTreeMap<u64, StageSeries<Span>>,
    /// The activity marks of the table followed last, with its shadowed routes.
    marks: Option<TableMarks>,
    /// Those of the tables it replaced, taken until their `until` tick.
    retired: Vec<TableMarks>,
    /// Routes marked active at the last tick: read once more (a request that was counted as
    /// the tick read its route is in the next reading).
    recheck: Vec<String>,
    /// Scratch for the activity marks.
    marked: Vec<usize>,
    /// Routes read by the last tick.
    reads: usize,
}

/// A table's activity marks and its shadowed routes (index, name), by index.
#[derive(Debug)]
struct TableMarks {
    activity: Arc<RouteActivity>,
    shadowed: Vec<(usize, String)>,
    until: u64,
}

impl State {
    /// Follows a new route table: forgets routes that left, starts the history of new ones,
    /// restarts "since the stage began" of routes whose stage changed. Reads every route.
    fn follow(&mut self, table: &RouteTable, shadow: &ShadowService, tick: u64, now: u64) {
        let first_tick = tick == 0;
        self.routes.retain(|name, _| table.route(name).is_some());
        // mirrors bound in the previous table still mark it when their comparison ends
        if let Some(mut m) = self.marks.take().filter(|m| !Arc::ptr_eq(&m.activity, &table.activity)) {
            m.until = tick + RETIRED_TICKS;
            self.retired.push(m);
        }
        let shadowed = table.routes.iter().enumerate().filter(|(_, r)| r.shadow.is_some());
        self.marks = Some(TableMarks {
            activity: table.activity.clone(),
            shadowed: shadowed.map(|(i, r)| (i, r.name.clone())).collect(),
            until: u64::MAX,
        });
        for route in &table.routes {
            let stage = route.stage.as_str();
            match self.routes.get_mut(route.name.as_str()) {
                None => {
                    self.reads += 1;
                    let reading = read(route, shadow, None);
                    let h = RouteHistory {
                        first_tick: tick,
                        first_ms: now,
                        last: (reading != Reading::default()).then(|| Box::new(reading)),
                        read_at: tick,
                        stage,
                        stage_since_ms: now,
                        // a route added by a reload starts its stage now; one present at start did not
                        stage_since_known: !first_tick,
                        // its first point is the next tick's
                        stage_clock: tick + 1,
                        counts: None,
                    };
                    self.routes.insert(route.name.clone(), h);
                }
                Some(h) if h.stage != stage => {
                    h.stage = stage;
                    h.stage_since_ms = now;
                    h.stage_since_known = true;
                    h.stage_clock = tick;
                    if let Some(c) = h.counts.as_mut() {
                        c.stage.clear();
                        c.stage_resolution = 1;
                    }
                }
                Some(_) => {}
            }
        }
        let used: std::collections::BTreeSet<u64> = self.routes.values().map(|h| h.stage_clock).collect();
        self.stages.retain(|k, _| used.contains(k));
        for k in used {
            self.stages.entry(k).or_insert_with(|| StageSeries::new(STAGE_POINTS));
        }
    }

    /// Reads `route` and records what changed since its last reading.
    fn sample(&mut self, route: &Route, shadow: &ShadowService, tick: u64) {
        let Some(h) = self.routes.get_mut(route.name.as_str()) else { return };
        if h.read_at == tick {
            return;
        }
        h.read_at = tick;
        self.reads += 1;
        let reading = read(route, shadow, h.last.as_deref());
        let before = h.last.as_deref().copied().unwrap_or_default();
        let p = Point {
            start_ms: 0,
            end_ms: 0,
            sides: [reading.sides[0].since(&before.sides[0]), reading.sides[1].since(&before.sides[1])],
            shadow: reading.shadow.since(&before.shadow),
        };
        if reading != before {
            h.last = Some(Box::new(reading));
        }
        if p.is_idle() {
            return;
        }
        let Some(stage) = self.stages.get(&h.stage_clock) else { return };
        h.counts.get_or_insert_with(Default::default).record(tick, &p, &self.hour, stage);
    }
}

impl TrafficHistory {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what changed since the last tick: reads the routes of `table` marked active (by a
    /// request or a finished shadow comparison), the ones marked at the last tick, and every
    /// route when `table` is not the one the last tick read.
    pub fn tick(&self, table: &Arc<RouteTable>, shadow: &ShadowService, now: u64) {
        let mut guard = self.state();
        let state = &mut *guard;
        let tick = state.ticks;
        state.ticks += 1;
        state.reads = 0;
        let new_table = !std::ptr::eq(state.table.as_ptr(), Arc::as_ptr(table));
        if new_table {
            state.follow(table, shadow, tick, now);
            state.table = Arc::downgrade(table);
        }
        if tick > 0 {
            let span = Span::tick(tick, state.last_ms, now);
            state.hour.push(span, HOUR_MS);
            for (_, clock) in state.stages.range_mut(..=tick) {
                clock.push(span);
            }
        }
        state.last_ms = now;
        let mut marked = std::mem::take(&mut state.marked);
        marked.clear();
        table.activity.take(&mut marked);
        // comparisons of mirrors bound in a table since replaced
        state.retired.retain(|m| m.until > tick);
        let mut late = Vec::new();
        for m in &state.retired {
            let from = marked.len();
            m.activity.take(&mut marked);
            for i in marked.drain(from..) {
                if let Ok(k) = m.shadowed.binary_search_by_key(&i, |(j, _)| *j) {
                    late.push(m.shadowed[k].1.clone());
                }
            }
        }
        let recheck = std::mem::take(&mut state.recheck);
        for name in recheck.iter().chain(&late) {
            if let Some(route) = table.route(name) {
                state.sample(route, shadow, tick);
            }
        }
        state.recheck.extend(late);
        for &i in &marked {
            if let Some(route) = table.routes.get(i) {
                state.sample(route, shadow, tick);
                state.recheck.push(route.name.clone());
            }
        }
        if new_table {
            // requests counted through the previous table since its last reading
            let counted: Vec<usize> = (0..table.routes.len())
                .filter(|&i| state.routes.get(table.routes[i].name.as_str()).is_some_and(|h| h.last.is_some()))
                .collect();
            for i in counted {
                state.sample(&table.routes[i], shadow, tick);
            }
        }
        state.marked = marked;
    }

    /// Routes the last tick read.
    pub fn read_at_last_tick(&self) -> usize {
        self.state().reads
    }

    /// Routes holding counts (the others hold no points: they were idle).
    pub fn routes_with_points(&self) -> usize {
        self.state().routes.values().filter(|h| h.counts.is_some()).count()
    }

    /// A route's hour (idle points included) and since-stage points.
    fn points(state: &State, h: &RouteHistory) -> (Vec<Point>, Vec<Point>) {
        let none = Counts::default();
        let c = h.counts.as_deref().unwrap_or(&none);
        let hour = fill(state.hour.iter(), c.hour_coarse.iter().chain(&c.hour_fine), h.first_tick + 1, h.first_ms);
        let stage = match state.stages.get(&h.stage_clock) {
            Some(clock) => fill(clock.points().iter(), c.stage.iter(), h.stage_clock, 0),
            None => Vec::new(),
        };
        (hour, stage)
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
        // only the points of the last minute are filled in
        let from = now.saturating_sub(MINUTE_MS);
        let recent = state.hour.iter().rev().take_while(|s| s.end_ms > from).count();
        let spans = state.hour.iter().skip(state.hour.len() - recent);
        let none = Counts::default();
        let c = h.counts.as_deref().unwrap_or(&none);
        let w = window(fill(spans, c.hour_fine.iter(), h.first_tick + 1, h.first_ms).into_iter(), now, MINUTE_MS);
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
        let (hour, since_stage) = Self::points(&state, h);
        json!({
            "tick_ms": TICK.as_millis() as u64,
            "hour": chart(&hour, CHART_POINTS),
            "since_stage": chart(&since_stage, CHART_POINTS),
        })
    }
}

#[cfg(test)]
#[path = "sampler_equivalence.rs"]
mod equivalence;

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
        let table = Arc::new(table);
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
        let moved =
            Arc::new(load_str_offline("r.toml", &ROUTES.replace("\"canary\"\nweight = 50", "\"extracted\"")).unwrap());
        hist.tick(&moved, &shadow, 5_000);
        let s = hist.summary("ui-sampler-unit", 5_000);
        assert_eq!((s["stage_since_ms"].as_u64(), &s["stage_since_known"]), (Some(5_000), &json!(true)));
        let c = hist.charts("ui-sampler-unit");
        assert_eq!(c["hour"]["t"], json!([3_000, 5_000]));
        assert_eq!(c["since_stage"]["t"], json!([5_000]));
        // a route that leaves the file is forgotten
        let empty = Arc::new(load_str_offline("r.toml", ROUTES.split("[[routes]]").next().unwrap()).unwrap());
        hist.tick(&empty, &shadow, 7_000);
        assert_eq!(hist.summary("ui-sampler-unit", 7_000)["window_s"], 0.0);
    }

    /// A comparison that ends ticks after its request (or with no request counted at all)
    /// marks its route (as the worker does: counts, then the binding's mark): it is read at the
    /// next tick, and a route whose comparisons have stopped is not read. After a reload, a
    /// mirror bound in the previous table marks that one: still taken, for a while.
    #[test]
    fn a_finished_comparison_marks_its_route() {
        let routes =
            ROUTES.replace("ui-sampler-unit", "ui-sampler-cmp").replace("\"canary\"\nweight = 50", "\"shadow\"");
        let table = Arc::new(load_str_offline("r.toml", &routes).unwrap());
        assert!(table.routes[0].shadow.is_some());
        let shadow = ShadowService::disabled();
        let report = shadow.report_or_new("ui-sampler-cmp");
        let compared = |table: &RouteTable, n: usize| {
            for i in 0..n {
                report.record_comparison(&if i == 0 { vec!["/price".to_string()] } else { vec![] }, &[]);
                table.activity.mark(0);
            }
        };
        let hist = TrafficHistory::default();
        hist.tick(&table, &shadow, 1_000);
        hist.tick(&table, &shadow, 3_000);
        assert_eq!(hist.read_at_last_tick(), 0, "nothing to read");
        compared(&table, 3);
        hist.tick(&table, &shadow, 5_000);
        assert_eq!(hist.read_at_last_tick(), 1);
        let s = hist.summary("ui-sampler-cmp", 5_000);
        assert_eq!((&s["compared"], &s["legacy"]["requests"]), (&json!(3), &json!(0)), "{s}");
        hist.tick(&table, &shadow, 7_000); // the recheck
        hist.tick(&table, &shadow, 9_000);
        assert_eq!(hist.read_at_last_tick(), 0, "no comparison since: not read");
        // a reload; then a mirror queued before it is compared
        let reloaded = Arc::new(load_str_offline("r.toml", &routes).unwrap());
        hist.tick(&reloaded, &shadow, 11_000);
        hist.tick(&reloaded, &shadow, 13_000);
        compared(&table, 1);
        hist.tick(&reloaded, &shadow, 15_000);
        assert_eq!(hist.read_at_last_tick(), 1, "the previous table's mark is taken");
        assert_eq!(hist.summary("ui-sampler-cmp", 15_000)["compared"], 4);
        // long after the reload it is not
        let mut now = 15_000;
        for _ in 0..RETIRED_TICKS {
            now += 2_000;
            hist.tick(&reloaded, &shadow, now);
        }
        table.activity.mark(0);
        hist.tick(&reloaded, &shadow, now + 2_000);
        assert_eq!(hist.read_at_last_tick(), 0);
    }
}

//! The sampler against the dense model it replaced (every route read at every tick, every tick
//! a point in each route's rings, idle or not): over an hour and more of random traffic,
//! reloads that add, remove and re-stage routes and irregular tick times, both give the same
//! summaries and the same charts. Also: a tick reads only the routes with traffic.

use std::collections::HashMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::super::series::{chart, HourRing, Point, StageSeries, COARSE_MS};
use super::*;
use crate::config::load_str_offline;

/// The sampler as it was: a point per route per tick.
#[derive(Default)]
struct Dense {
    ticked: bool,
    routes: HashMap<String, DenseRoute>,
}

struct DenseRoute {
    last: Option<(u64, Reading)>,
    hour: HourRing,
    stage: &'static str,
    stage_since_ms: u64,
    stage_since_known: bool,
    since_stage: StageSeries,
}

impl Dense {
    fn tick(&mut self, table: &RouteTable, shadow: &ShadowService, now: u64) {
        let first_tick = !std::mem::replace(&mut self.ticked, true);
        self.routes.retain(|name, _| table.route(name).is_some());
        for route in &table.routes {
            let stage = route.stage.as_str();
            let before = self.routes.get(&route.name).and_then(|h| h.last.as_ref()).map(|(_, r)| r);
            let reading = read(route, shadow, before);
            let h = self.routes.entry(route.name.clone()).or_insert_with(|| DenseRoute {
                last: None,
                hour: HourRing::default(),
                stage,
                stage_since_ms: now,
                stage_since_known: !first_tick,
                since_stage: StageSeries::new(STAGE_POINTS),
            });
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

    fn summary(&self, route: &str, now: u64) -> Option<Value> {
        let h = self.routes.get(route)?;
        let w = h.hour.window(now, MINUTE_MS);
        let secs = w.seconds();
        let total = w.sides[0].requests + w.sides[1].requests;
        Some(json!({
            "window_s": secs,
            "legacy": w.sides[0].summary(secs),
            "extracted": w.sides[1].summary(secs),
            "extracted_share": (total > 0).then(|| (w.sides[1].requests as f64 / total as f64 * 10_000.0).round() / 10_000.0),
            "match_rate": w.shadow.match_rate(),
            "compared": w.shadow.compared,
            "stage_since_ms": h.stage_since_ms,
            "stage_since_known": h.stage_since_known,
        }))
    }
}

fn table(routes: &[(usize, &str)]) -> Arc<RouteTable> {
    let mut src = String::from(
        "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"127.0.0.1:1\"]\n\
         [upstreams.svc]\nendpoints = [\"127.0.0.1:2\"]\n",
    );
    for (i, stage) in routes {
        let weight = if *stage == "canary" { "weight = 30\n" } else { "" };
        src.push_str(&format!(
            "[[routes]]\nname = \"ui-eq-{i}\"\nmatch = {{ path = \"/eq/{i}\" }}\nto = \"svc\"\nstage = \"{stage}\"\n{weight}"
        ));
    }
    Arc::new(load_str_offline("eq.toml", &src).unwrap())
}

/// Requests per side over `points`, and the time they span.
fn totals(points: &[Point]) -> ([u64; 2], u64, u64) {
    let requests = [0, 1].map(|i| points.iter().map(|p| p.sides[i].requests).sum());
    (requests, points.first().map_or(0, |p| p.start_ms), points.last().map_or(0, |p| p.end_ms))
}

#[test]
fn summaries_and_charts_are_the_dense_models() {
    const STAGES: [&str; 4] = ["legacy", "shadow", "canary", "extracted"];
    let mut rng = StdRng::seed_from_u64(16);
    let shadow = ShadowService::disabled();
    let sparse = TrafficHistory::default();
    let mut dense = Dense::default();
    // (route number, stage); the first six are there from the start
    let mut live: Vec<(usize, &str)> = (0..6).map(|i| (i, STAGES[i % 4])).collect();
    let mut next_route = 6;
    // how busy each route is: share of ticks with requests
    let busy = |i: usize| [0.0, 0.9, 0.05, 0.5, 0.0, 1.0][i % 6];
    let mut t = table(&live);
    let mut now = 1_000_000u64;
    let mut compared = 0;
    for tick in 0..2_300u32 {
        if tick > 0 && tick % 157 == 0 {
            // a reload: a stage moves, a route comes, one goes
            let k = rng.gen_range(0..live.len());
            live[k].1 = STAGES[(STAGES.iter().position(|s| *s == live[k].1).unwrap() + 1) % 4];
            live.push((next_route, STAGES[next_route % 4]));
            next_route += 1;
            if tick % 2 == 0 {
                live.remove(rng.gen_range(0..live.len()));
            }
            t = table(&live);
        }
        for (i, route) in live.iter().map(|(i, _)| *i).zip(&t.routes) {
            if rng.gen_bool(busy(i)) {
                for _ in 0..rng.gen_range(1..20) {
                    let side = if rng.gen_bool(0.5) { Side::Legacy } else { Side::Extracted };
                    let status = if rng.gen_bool(0.1) { 503 } else { 200 };
                    route.metrics.observe(side, status, rng.gen_range(0.0001..0.3));
                }
            }
        }
        now += if rng.gen_bool(0.1) { rng.gen_range(2_000..9_000) } else { 2_000 };
        sparse.tick(&t, &shadow, now);
        dense.tick(&t, &shadow, now);
        if tick % 37 == 5 || tick > 2_280 {
            let at = now + rng.gen_range(0..1_500);
            for route in &t.routes {
                let name = route.name.as_str();
                assert_eq!(Some(sparse.summary(name, at)), dense.summary(name, at), "summary of {name} at tick {tick}");
                let charts = sparse.charts(name);
                let h = &dense.routes[name];
                let since = chart(h.since_stage.points(), CHART_POINTS);
                assert_eq!(charts["since_stage"], since, "since-stage chart of {name} at tick {tick}");
                let hour = chart(&h.hour.points(), CHART_POINTS);
                let number: usize = name.trim_start_matches("ui-eq-").parse().unwrap();
                if number < 6 {
                    assert_eq!(charts["hour"], hour, "hour chart of {name} at tick {tick}");
                } else {
                    // a route that came later groups its ticks older than two minutes as the
                    // sampler's clock does, not from its own first tick: the same counts over
                    // the same time, until the hour's edge cuts the groups at other ticks
                    let state = sparse.state();
                    let (points, _) = TrafficHistory::points(&state, &state.routes[name]);
                    let (got, want) = (totals(&points), totals(&h.hour.points()));
                    assert_eq!(got.2, want.2, "hour of {name} at tick {tick}");
                    if got.1 == want.1 {
                        assert_eq!(got, want, "hour of {name} at tick {tick}");
                    } else {
                        assert!(
                            got.1.abs_diff(want.1) < 2 * COARSE_MS,
                            "hour of {name} at tick {tick}: {got:?} {want:?}"
                        );
                    }
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 300, "{compared}");
}

#[test]
fn a_tick_reads_the_routes_with_traffic_not_every_route() {
    let routes: Vec<(usize, &str)> = (1_000..3_000).map(|i| (i, "legacy")).collect();
    let t = table(&routes);
    let shadow = ShadowService::disabled();
    let h = TrafficHistory::default();
    h.tick(&t, &shadow, 1_000);
    assert_eq!(h.read_at_last_tick(), 2_000, "a new table: every route once");
    h.tick(&t, &shadow, 3_000);
    assert_eq!(h.read_at_last_tick(), 0, "nothing happened");
    t.routes[1_234].metrics.observe(Side::Legacy, 200, 0.001);
    h.tick(&t, &shadow, 5_000);
    assert_eq!(h.read_at_last_tick(), 1);
    h.tick(&t, &shadow, 7_000);
    assert_eq!(h.read_at_last_tick(), 1, "read once more, then left alone");
    h.tick(&t, &shadow, 9_000);
    assert_eq!(h.read_at_last_tick(), 0);
    assert_eq!(h.summary("ui-eq-2234", 9_000)["legacy"]["requests"], 1);
    assert_eq!(h.summary("ui-eq-2234", 9_000)["window_s"], 8.0);
    // idle routes hold no points
    assert_eq!(h.routes_with_points(), 1);
}

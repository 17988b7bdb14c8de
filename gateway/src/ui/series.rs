//! The dashboard's time series, pure: what one sampler tick saw of a route ([`Point`]: deltas of
//! the request counters, the latency histogram and the shadow counters), how points merge into a
//! window (the routes list's last minute, a chart bucket), and the two bounded rings a route keeps
//! ([`HourRing`]: the last hour, every tick of its last two minutes and 10 s points before;
//! [`StageSeries`]: since the stage began, halving its resolution whenever it fills).

use std::collections::VecDeque;

use serde_json::{json, Value};

/// Upper bounds (seconds) of the gateway's latency histogram buckets, `+Inf` last
/// (`strangler_gateway_request_duration_seconds`; checked against the registry by the sampler).
pub const LATENCY_BOUNDS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, f64::INFINITY];
pub const BUCKETS: usize = LATENCY_BOUNDS.len();

/// One side (legacy or extracted) of a route over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideDelta {
    pub requests: u64,
    pub errors_5xx: u64,
    /// Requests per latency bucket, cumulative by upper bound like Prometheus' (`le`).
    pub buckets: [u64; BUCKETS],
}

impl SideDelta {
    fn add(&mut self, o: &SideDelta) {
        self.requests += o.requests;
        self.errors_5xx += o.errors_5xx;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
    }

    /// `self - earlier`, for monotonic counters (0 where a counter went backwards).
    pub fn since(&self, earlier: &SideDelta) -> SideDelta {
        let mut buckets = [0; BUCKETS];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        SideDelta {
            requests: self.requests.saturating_sub(earlier.requests),
            errors_5xx: self.errors_5xx.saturating_sub(earlier.errors_5xx),
            buckets,
        }
    }

    /// The latency quantile `q` in milliseconds, interpolated inside its bucket as Prometheus'
    /// `histogram_quantile` does (the highest finite bound when it falls in `+Inf`). `None`
    /// without observations.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.buckets[BUCKETS - 1];
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut prev_count = 0u64;
        for (i, &count) in self.buckets.iter().enumerate() {
            if count as f64 >= rank && count > prev_count {
                let upper = LATENCY_BOUNDS[i];
                if upper.is_infinite() {
                    return Some(LATENCY_BOUNDS[BUCKETS - 2] * 1000.0);
                }
                let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS[i - 1] };
                let within = (rank - prev_count as f64) / (count - prev_count) as f64;
                return Some((lower + (upper - lower) * within.clamp(0.0, 1.0)) * 1000.0);
            }
            prev_count = count;
        }
        Some(LATENCY_BOUNDS[BUCKETS - 2] * 1000.0)
    }

    /// Requests/s, 5xx rate and p99 over `seconds`.
    pub fn summary(&self, seconds: f64) -> Value {
        json!({
            "requests": self.requests,
            "rps": round3(if seconds > 0.0 { self.requests as f64 / seconds } else { 0.0 }),
            "error_rate": (self.requests > 0).then(|| round4(self.errors_5xx as f64 / self.requests as f64)),
            "p99_ms": self.quantile_ms(0.99).map(round3),
        })
    }
}

/// Shadow comparisons over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowDelta {
    pub compared: u64,
    pub matched: u64,
}

impl ShadowDelta {
    pub fn since(&self, earlier: &ShadowDelta) -> ShadowDelta {
        ShadowDelta {
            compared: self.compared.saturating_sub(earlier.compared),
            matched: self.matched.saturating_sub(earlier.matched),
        }
    }

    pub fn match_rate(&self) -> Option<f64> {
        (self.compared > 0).then(|| round4(self.matched as f64 / self.compared as f64))
    }
}

/// What a route did between two sampler ticks (or, merged, over a longer window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Point {
    /// Start and end of the interval, Unix milliseconds.
    pub start_ms: u64,
    pub end_ms: u64,
    /// Legacy, extracted.
    pub sides: [SideDelta; 2],
    pub shadow: ShadowDelta,
}

impl Point {
    /// Adds `o` (a neighbouring interval) to this one.
    pub fn merge(&mut self, o: &Point) {
        if self.end_ms == 0 {
            *self = *o;
            return;
        }
        self.start_ms = self.start_ms.min(o.start_ms);
        self.end_ms = self.end_ms.max(o.end_ms);
        self.add_counts(o);
    }

    /// Adds `o`'s counts, leaving the interval as it is.
    pub fn add_counts(&mut self, o: &Point) {
        for (a, b) in self.sides.iter_mut().zip(&o.sides) {
            a.add(b);
        }
        self.shadow.compared += o.shadow.compared;
        self.shadow.matched += o.shadow.matched;
    }

    /// Nothing counted (an idle interval).
    pub fn is_idle(&self) -> bool {
        self.sides.iter().all(|s| s.requests == 0 && s.buckets[BUCKETS - 1] == 0)
            && self.shadow == ShadowDelta::default()
    }

    pub fn seconds(&self) -> f64 {
        self.end_ms.saturating_sub(self.start_ms) as f64 / 1000.0
    }
}

/// What the rings hold: an interval that merges with its neighbours.
pub trait Interval: Copy {
    fn start_ms(&self) -> u64;
    fn end_ms(&self) -> u64;
    /// Adds `o` (a neighbouring interval) to this one.
    fn merge(&mut self, o: &Self);
}

impl Interval for Point {
    fn start_ms(&self) -> u64 {
        self.start_ms
    }
    fn end_ms(&self) -> u64 {
        self.end_ms
    }
    fn merge(&mut self, o: &Self) {
        Point::merge(self, o)
    }
}

/// A stretch of sampler ticks: tick numbers `first..=last`, from `start_ms` to `end_ms`. The
/// sampler keeps the rings' shape once, as spans (its clocks), and each route only the counts
/// of the spans where it did something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Span {
    /// Tick `tick`, from `start_ms` to `end_ms`.
    pub fn tick(tick: u64, start_ms: u64, end_ms: u64) -> Self {
        Self { first: tick, last: tick, start_ms, end_ms }
    }

    pub fn contains(&self, tick: u64) -> bool {
        (self.first..=self.last).contains(&tick)
    }
}

impl Interval for Span {
    fn start_ms(&self) -> u64 {
        self.start_ms
    }
    fn end_ms(&self) -> u64 {
        self.end_ms
    }
    fn merge(&mut self, o: &Self) {
        if self.end_ms == 0 {
            *self = *o;
            return;
        }
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
        self.start_ms = self.start_ms.min(o.start_ms);
        self.end_ms = self.end_ms.max(o.end_ms);
    }
}

/// Merges points into at most `max_points` buckets of equal time and renders them as the
/// parallel arrays a chart draws (`t` = bucket end, Unix ms; empty buckets left out).
pub fn chart(points: &[Point], max_points: usize) -> Value {
    let mut buckets: Vec<Point> = Vec::new();
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let n = max_points.max(1);
        let t0 = first.start_ms;
        let step = last.end_ms.saturating_sub(t0).div_ceil(n as u64).max(1);
        buckets = vec![Point::default(); n];
        for p in points {
            let i = (p.end_ms.saturating_sub(t0).saturating_sub(1) / step) as usize;
            buckets[i.min(n - 1)].merge(p);
        }
        buckets.retain(|b| b.end_ms != 0);
    }
    let merged = buckets;
    let side = |i: usize| {
        json!({
            "rps": merged.iter().map(|p| {
                let s = p.seconds();
                round3(if s > 0.0 { p.sides[i].requests as f64 / s } else { 0.0 })
            }).collect::<Vec<_>>(),
            "error_rate": merged.iter().map(|p| {
                let r = &p.sides[i];
                (r.requests > 0).then(|| round4(r.errors_5xx as f64 / r.requests as f64))
            }).collect::<Vec<_>>(),
            "p99_ms": merged.iter().map(|p| p.sides[i].quantile_ms(0.99).map(round3)).collect::<Vec<_>>(),
        })
    };
    json!({
        "t": merged.iter().map(|p| p.end_ms).collect::<Vec<_>>(),
        "legacy": side(0),
        "extracted": side(1),
        "match_rate": merged.iter().map(|p| p.shadow.match_rate()).collect::<Vec<_>>(),
        "compared": merged.iter().map(|p| p.shadow.compared).collect::<Vec<_>>(),
    })
}

/// The last `span_ms` of ticks, oldest first: every tick of the last [`FINE_MS`], and older ones
/// merged into points [`COARSE_MS`] wide (an hour of 2 s ticks: 60 + ~350 points).
#[derive(Debug)]
pub struct HourRing<T = Point> {
    coarse: VecDeque<T>,
    fine: VecDeque<T>,
}

impl<T> Default for HourRing<T> {
    fn default() -> Self {
        Self { coarse: VecDeque::new(), fine: VecDeque::new() }
    }
}

/// Ticks younger than this are kept as they are.
pub const FINE_MS: u64 = 120_000;
/// Older ones are merged into points this wide.
pub const COARSE_MS: u64 = 10_000;

impl<T: Interval> HourRing<T> {
    /// Adds a tick; merges ticks older than [`FINE_MS`] and drops what ended more than
    /// `span_ms` before it.
    pub fn push(&mut self, p: T, span_ms: u64) {
        self.fine.push_back(p);
        let fine_from = p.end_ms().saturating_sub(FINE_MS);
        while let Some(old) = self.fine.front().copied().filter(|f| f.end_ms() <= fine_from) {
            self.fine.pop_front();
            match self.coarse.back_mut() {
                Some(c) if c.end_ms().saturating_sub(c.start_ms()) < COARSE_MS => c.merge(&old),
                _ => self.coarse.push_back(old),
            }
        }
        let oldest = p.end_ms().saturating_sub(span_ms);
        while self.coarse.front().is_some_and(|f| f.end_ms() <= oldest) {
            self.coarse.pop_front();
        }
        while self.fine.front().is_some_and(|f| f.end_ms() <= oldest) {
            self.fine.pop_front();
        }
    }

    /// Oldest first: the merged points, then the ticks.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + Clone {
        self.coarse.iter().chain(self.fine.iter())
    }

    pub fn points(&self) -> Vec<T> {
        self.iter().copied().collect()
    }

    /// The merged points, oldest first.
    pub fn coarse(&self) -> &VecDeque<T> {
        &self.coarse
    }

    /// The ticks kept as they are, oldest first.
    pub fn fine(&self) -> &VecDeque<T> {
        &self.fine
    }

    pub fn len(&self) -> usize {
        self.coarse.len() + self.fine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl HourRing<Point> {
    /// The points that ended within `window_ms` of `now_ms`, merged (zero when none).
    pub fn window(&self, now_ms: u64, window_ms: u64) -> Point {
        window(self.iter().copied(), now_ms, window_ms)
    }
}

/// `points` (oldest first) that ended within `window_ms` of `now_ms`, merged (zero when none).
pub fn window(points: impl DoubleEndedIterator<Item = Point>, now_ms: u64, window_ms: u64) -> Point {
    let from = now_ms.saturating_sub(window_ms);
    let mut p = Point::default();
    for x in points.rev().take_while(|x| x.end_ms > from) {
        p.merge(&x);
    }
    p
}

/// A route's ticks since its stage began, in at most `capacity` points: when full, neighbours
/// merge pairwise and later ticks are merged `resolution` at a time, so a stage of any length
/// costs the same memory.
#[derive(Debug)]
pub struct StageSeries<T = Point> {
    capacity: usize,
    points: Vec<T>,
    /// Ticks per point.
    resolution: usize,
    /// Ticks in the last point.
    filling: usize,
}

impl<T: Interval> StageSeries<T> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(2), points: Vec::new(), resolution: 1, filling: 0 }
    }

    pub fn push(&mut self, p: T) {
        match self.points.last_mut() {
            Some(last) if self.filling < self.resolution => {
                last.merge(&p);
                self.filling += 1;
                return;
            }
            _ => {}
        }
        if self.points.len() == self.capacity {
            self.points = self
                .points
                .chunks(2)
                .map(|c| {
                    let mut m = c[0];
                    if let Some(b) = c.get(1) {
                        m.merge(b);
                    }
                    m
                })
                .collect();
            self.resolution *= 2;
        }
        self.points.push(p);
        self.filling = 1;
    }

    pub fn points(&self) -> &[T] {
        &self.points
    }

    /// Ticks per point (doubles each time the series fills).
    pub fn resolution(&self) -> usize {
        self.resolution
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: u64, errors_5xx: u64, per_bucket: &[(usize, u64)]) -> SideDelta {
        let mut buckets = [0; BUCKETS];
        for &(i, n) in per_bucket {
            for b in buckets.iter_mut().skip(i) {
                *b += n;
            }
        }
        SideDelta { requests, errors_5xx, buckets }
    }

    fn point(start_ms: u64, end_ms: u64, legacy: u64, compared: u64, matched: u64) -> Point {
        Point {
            start_ms,
            end_ms,
            sides: [side(legacy, 0, &[(4, legacy)]), SideDelta::default()],
            shadow: ShadowDelta { compared, matched },
        }
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        // 100 requests: 50 in (1ms, 2.5ms], 50 in (5ms, 10ms]
        let s = side(100, 0, &[(2, 50), (4, 50)]);
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!((p50 - 2.5).abs() < 1e-9, "{p50}");
        let p99 = s.quantile_ms(0.99).unwrap();
        assert!((p99 - 9.9).abs() < 1e-9, "{p99}");
        // everything beyond the last finite bound: that bound
        assert_eq!(side(3, 0, &[(14, 3)]).quantile_ms(0.99), Some(10_000.0));
        assert_eq!(SideDelta::default().quantile_ms(0.99), None);
    }

    #[test]
    fn deltas_never_go_negative() {
        let a = side(10, 2, &[(0, 10)]);
        let b = side(4, 1, &[(0, 4)]);
        assert_eq!(b.since(&a), SideDelta::default());
        assert_eq!(a.since(&b).requests, 6);
    }

    #[test]
    fn the_hour_ring_forgets_and_windows() {
        let mut r = HourRing::default();
        for i in 0..100u64 {
            r.push(point(i * 1000, (i + 1) * 1000, 2, 2, 1), 30_000);
        }
        assert_eq!(r.len(), 30, "only the last 30 s");
        let w = r.window(100_000, 10_000);
        assert_eq!((w.start_ms, w.end_ms, w.sides[0].requests), (90_000, 100_000, 20));
        assert_eq!(w.shadow.match_rate(), Some(0.5));
        assert_eq!(r.window(200_000, 10_000), Point::default());
    }

    #[test]
    fn an_hour_of_ticks_is_a_few_hundred_points_and_loses_nothing() {
        let mut r = HourRing::default();
        let ticks = 3 * 3600 / 2;
        for i in 0..ticks {
            r.push(point(i * 2000, (i + 1) * 2000, 1, 0, 0), HOUR_MS_TEST);
        }
        assert!((400..=425).contains(&r.len()), "{}", r.len());
        let pts = r.points();
        assert!(pts.windows(2).all(|w| w[0].end_ms == w[1].start_ms), "contiguous, oldest first");
        assert_eq!(pts.last().unwrap().end_ms, ticks * 2000);
        assert!(pts[0].start_ms >= ticks * 2000 - HOUR_MS_TEST - COARSE_MS);
        let total: u64 = pts.iter().map(|p| p.sides[0].requests).sum();
        let span = pts.last().unwrap().end_ms - pts[0].start_ms;
        assert_eq!(total, span / 2000, "one request per tick, none lost in merging");
        // the last minute is still at tick resolution
        let w = r.window(ticks * 2000, 60_000);
        assert_eq!((w.seconds(), w.sides[0].requests), (60.0, 30));
    }

    const HOUR_MS_TEST: u64 = 3_600_000;

    #[test]
    fn charts_merge_into_equal_time_buckets() {
        let pts: Vec<Point> = (0..10u64).map(|i| point(i * 2000, (i + 1) * 2000, 4, i % 2, 0)).collect();
        let c = chart(&pts, 4);
        assert_eq!(c["t"], json!([4000, 10000, 14000, 20000]));
        assert_eq!(c["legacy"]["rps"][0], json!(2.0));
        assert_eq!(c["extracted"]["p99_ms"][0], Value::Null);
        assert_eq!(c["match_rate"][0], json!(0.0));
        let none = chart(&[point(0, 2000, 1, 0, 0)], 4);
        assert_eq!(none["match_rate"], json!([null]));
    }

    #[test]
    fn the_stage_series_halves_its_resolution_when_full() {
        let mut s = StageSeries::new(4);
        for i in 0..9u64 {
            s.push(point(i * 1000, (i + 1) * 1000, 1, 1, 1));
        }
        // 4 points of 2 ticks fill at tick 8; tick 9 starts a new point after halving
        let spans: Vec<(u64, u64)> = s.points().iter().map(|p| (p.start_ms, p.end_ms)).collect();
        assert_eq!(spans, vec![(0, 4000), (4000, 8000), (8000, 9000)]);
        assert_eq!(s.points().iter().map(|p| p.sides[0].requests).sum::<u64>(), 9, "nothing lost");
        for i in 9..100u64 {
            s.push(point(i * 1000, (i + 1) * 1000, 1, 1, 1));
        }
        assert!(s.points().len() <= 4);
        assert_eq!(s.points()[0].start_ms, 0);
        assert_eq!(s.points().last().unwrap().end_ms, 100_000);
    }
}

//! Per-route shadow reports: counters, latency of each side, top differing fields, learnt noise
//! and a bounded ring of sample mismatches. Kept by route name in the shadow service's
//! [`Reports`], so a report survives reloads; [`super::store`] persists it so it survives restarts
//! too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::compare::NoiseModel;
use super::metrics::RouteShadowMetrics;

/// What a report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Sent to the extracted upstream.
    Mirrored,
    /// Both answers arrived and were compared.
    Compared,
    Matched,
    Mismatched,
    /// The route's queue was full.
    Dropped,
    /// Skipped: not in the sample.
    NotSampled,
    /// Skipped: a write on a route without `writes = "dry-run"`.
    Writes,
    /// Skipped: request body larger than `max_body`.
    Oversize,
    /// Skipped: the request body was not read completely (client went away).
    Incomplete,
    /// A response body was larger than `max_body` (compared by hash, or not compared).
    BodyOversize,
    /// The primary (legacy) side failed.
    ErrorsLegacy,
    /// The mirror (extracted) failed: connect error, timeout, broken connection.
    ErrorsShadow,
    /// Comparisons whose only differences were learnt noise.
    NoiseSuppressed,
}

const COUNTS: [(Count, &str); 13] = [
    (Count::Mirrored, "mirrored"),
    (Count::Compared, "compared"),
    (Count::Matched, "matched"),
    (Count::Mismatched, "mismatched"),
    (Count::Dropped, "dropped"),
    (Count::NotSampled, "skipped_not_sampled"),
    (Count::Writes, "skipped_writes"),
    (Count::Oversize, "skipped_oversize"),
    (Count::Incomplete, "skipped_incomplete"),
    (Count::BodyOversize, "body_oversize"),
    (Count::ErrorsLegacy, "errors_legacy"),
    (Count::ErrorsShadow, "errors_shadow"),
    (Count::NoiseSuppressed, "noise_suppressed"),
];

/// Distinct differing fields tracked per route; the rest are counted under `(other)`.
const MAX_FIELDS: usize = 500;

/// Latency histogram with logarithmic buckets (25% wide, 50 µs to ~4 min): bounded memory,
/// mergeable, and quantiles within one bucket width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
}

const LAT_BUCKETS: usize = 70;
const LAT_MIN_MS: f64 = 0.05;
const LAT_GROWTH: f64 = 1.25;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { buckets: vec![0; LAT_BUCKETS] }
    }
}

impl LatencyHistogram {
    pub fn record_ms(&mut self, ms: f64) {
        let i = if ms <= LAT_MIN_MS { 0 } else { ((ms / LAT_MIN_MS).ln() / LAT_GROWTH.ln()).ceil() as usize };
        self.buckets[i.min(LAT_BUCKETS - 1)] += 1;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Upper bound of the bucket holding quantile `q` (0 when empty).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LAT_MIN_MS * LAT_GROWTH.powi(i as i32);
            }
        }
        LAT_MIN_MS * LAT_GROWTH.powi(LAT_BUCKETS as i32 - 1)
    }

    fn to_json(&self) -> Value {
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        json!({"count": self.count(), "p50_ms": r(self.quantile_ms(0.5)), "p99_ms": r(self.quantile_ms(0.99))})
    }

    fn restore(&mut self, buckets: &[u64]) {
        for (i, n) in buckets.iter().enumerate().take(LAT_BUCKETS) {
            self.buckets[i] += n;
        }
    }
}

/// State only the workers touch (behind a mutex, never held across an await).
#[derive(Default)]
struct Detail {
    latency_legacy: LatencyHistogram,
    latency_shadow: LatencyHistogram,
    fields: HashMap<String, u64>,
    noise: NoiseModel,
    /// Noise pattern -> differences it suppressed.
    noise_hits: BTreeMap<String, u64>,
    samples: VecDeque<Value>,
}

/// The report of one route.
pub struct RouteReport {
    pub name: String,
    counts: [AtomicU64; COUNTS.len()],
    prom: [Option<prometheus::IntCounter>; COUNTS.len()],
    metrics: RouteShadowMetrics,
    sample_capacity: AtomicUsize,
    detail: Mutex<Detail>,
}

/// The persisted form of a report (see [`super::store`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub counts: BTreeMap<String, u64>,
    pub latency_legacy: Vec<u64>,
    pub latency_shadow: Vec<u64>,
    pub fields: BTreeMap<String, u64>,
    /// Learnt noise pattern -> differences it suppressed.
    pub noise: BTreeMap<String, u64>,
}

impl RouteReport {
    fn new(name: &str) -> Self {
        let m = RouteShadowMetrics::new(name);
        let prom = COUNTS.map(|(c, _)| {
            Some(match c {
                Count::Mirrored => m.mirrored.clone(),
                Count::Compared => m.compared.clone(),
                Count::Matched => m.matched.clone(),
                Count::Mismatched => m.mismatched.clone(),
                Count::Dropped => m.dropped.clone(),
                Count::NotSampled => m.not_sampled.clone(),
                Count::Writes => m.writes.clone(),
                Count::Oversize => m.oversize.clone(),
                Count::Incomplete => m.incomplete.clone(),
                Count::BodyOversize => m.body_oversize.clone(),
                Count::ErrorsLegacy => m.errors_legacy.clone(),
                Count::ErrorsShadow => m.errors_shadow.clone(),
                Count::NoiseSuppressed => return None,
            })
        });
        Self {
            name: name.to_string(),
            counts: Default::default(),
            prom,
            metrics: m,
            sample_capacity: AtomicUsize::new(super::policy::DEFAULT_SAMPLES),
            detail: Mutex::new(Detail::default()),
        }
    }

    /// Counts one event (an atomic increment; used on the proxy's hot path too).
    #[inline]
    pub fn count(&self, c: Count) {
        self.counts[c as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &self.prom[c as usize] {
            p.inc();
        }
    }

    pub fn get(&self, c: Count) -> u64 {
        self.counts[c as usize].load(Ordering::Relaxed)
    }

    pub fn set_sample_capacity(&self, n: usize) {
        self.sample_capacity.store(n, Ordering::Relaxed);
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record_latency(&self, legacy_ms: f64, shadow_ms: Option<f64>) {
        self.metrics.latency_legacy.observe(legacy_ms / 1000.0);
        if let Some(s) = shadow_ms {
            self.metrics.latency_shadow.observe(s / 1000.0);
        }
        let mut d = self.detail();
        d.latency_legacy.record_ms(legacy_ms);
        if let Some(s) = shadow_ms {
            d.latency_shadow.record_ms(s);
        }
    }

    /// A copy of the learnt noise model.
    pub fn noise(&self) -> NoiseModel {
        self.detail().noise.clone()
    }

    /// Splits a comparison's differences into (real mismatches, learnt noise).
    pub fn split_noise(
        &self,
        diffs: Vec<super::compare::Difference>,
    ) -> (Vec<super::compare::Difference>, Vec<super::compare::Difference>) {
        if diffs.is_empty() {
            return (diffs, Vec::new());
        }
        self.detail().noise.split(diffs)
    }

    /// Adds learnt noise patterns.
    pub fn learn_noise(&self, patterns: impl IntoIterator<Item = String>) {
        let mut d = self.detail();
        for p in patterns {
            if d.noise.insert(p.clone()) {
                d.noise_hits.entry(p).or_insert(0);
            }
        }
        self.metrics.noise_fields.set(d.noise.len() as i64);
    }

    /// Records the outcome of one comparison: real differences (by field) and suppressed noise.
    pub fn record_comparison(&self, fields: &[String], noise: &[String]) {
        self.count(Count::Compared);
        if fields.is_empty() {
            self.count(Count::Matched);
            if !noise.is_empty() {
                self.count(Count::NoiseSuppressed);
            }
        } else {
            self.count(Count::Mismatched);
        }
        if fields.is_empty() && noise.is_empty() {
            return;
        }
        let mut d = self.detail();
        for f in fields {
            if d.fields.len() >= MAX_FIELDS && !d.fields.contains_key(f) {
                *d.fields.entry("(other)".to_string()).or_insert(0) += 1;
            } else {
                *d.fields.entry(f.clone()).or_insert(0) += 1;
            }
        }
        for n in noise {
            *d.noise_hits.entry(n.clone()).or_insert(0) += 1;
        }
    }

    /// Keeps a sample mismatch (the ring drops the oldest).
    pub fn push_sample(&self, sample: Value) {
        let cap = self.sample_capacity.load(Ordering::Relaxed);
        let mut d = self.detail();
        d.samples.push_back(sample);
        while d.samples.len() > cap {
            d.samples.pop_front();
        }
    }

    /// Counters as a name -> value map.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        COUNTS.iter().map(|(c, n)| (n.to_string(), self.get(*c))).collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        let d = self.detail();
        Snapshot {
            counts: self.counts(),
            latency_legacy: d.latency_legacy.buckets.clone(),
            latency_shadow: d.latency_shadow.buckets.clone(),
            fields: d.fields.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            noise: d.noise_hits.clone(),
        }
    }

    /// Adds a persisted snapshot to this report (at start, before traffic).
    pub fn restore(&self, s: &Snapshot) {
        for (c, name) in COUNTS {
            if let Some(v) = s.counts.get(name) {
                self.counts[c as usize].fetch_add(*v, Ordering::Relaxed);
                if let Some(p) = &self.prom[c as usize] {
                    p.inc_by(*v);
                }
            }
        }
        let mut d = self.detail();
        d.latency_legacy.restore(&s.latency_legacy);
        d.latency_shadow.restore(&s.latency_shadow);
        for (k, v) in &s.fields {
            *d.fields.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &s.noise {
            d.noise.insert(k.clone());
            *d.noise_hits.entry(k.clone()).or_insert(0) += v;
        }
        self.metrics.noise_fields.set(d.noise.len() as i64);
    }

    /// The report as JSON; `samples` adds the sample mismatches (newest last).
    pub fn to_json(&self, samples: bool) -> Value {
        let counts = |c| self.get(c);
        let compared = counts(Count::Compared);
        let matched = counts(Count::Matched);
        let d = self.detail();
        let mut fields: Vec<(&String, &u64)> = d.fields.iter().collect();
        fields.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut v = json!({
            "route": self.name,
            "mirrored": counts(Count::Mirrored),
            "compared": compared,
            "matched": matched,
            "mismatched": counts(Count::Mismatched),
            "match_rate": if compared == 0 { Value::Null } else { json!((matched as f64 / compared as f64 * 10_000.0).round() / 10_000.0) },
            "dropped": counts(Count::Dropped),
            "skipped": {
                "not_sampled": counts(Count::NotSampled),
                "writes": counts(Count::Writes),
                "oversize": counts(Count::Oversize),
                "incomplete": counts(Count::Incomplete),
            },
            "body_oversize": counts(Count::BodyOversize),
            "noise_suppressed": counts(Count::NoiseSuppressed),
            "errors": {"legacy": counts(Count::ErrorsLegacy), "shadow": counts(Count::ErrorsShadow)},
            "latency": {"legacy": d.latency_legacy.to_json(), "shadow": d.latency_shadow.to_json()},
            "top_fields": fields.iter().take(20).map(|(f, n)| json!({"field": f, "count": n})).collect::<Vec<_>>(),
            "noise_fields": d.noise_hits.iter().map(|(f, n)| json!({"field": f, "suppressed": n})).collect::<Vec<_>>(),
            "sample_count": d.samples.len(),
        });
        if samples {
            v["samples"] = Value::Array(d.samples.iter().cloned().collect());
        }
        v
    }
}

/// Every route's report, by name (owned by the shadow service).
#[derive(Default)]
pub struct Reports {
    reports: Mutex<BTreeMap<String, Arc<RouteReport>>>,
}

impl Reports {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<RouteReport>>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The report of `route`, created when absent.
    pub fn report(&self, route: &str) -> Arc<RouteReport> {
        self.map().entry(route.to_string()).or_insert_with(|| Arc::new(RouteReport::new(route))).clone()
    }

    pub fn get(&self, route: &str) -> Option<Arc<RouteReport>> {
        self.map().get(route).cloned()
    }

    /// All reports, by name.
    pub fn all(&self) -> Vec<Arc<RouteReport>> {
        self.map().values().cloned().collect()
    }
}

/// Renders the JSON of `GET /admin/shadow` (or one route's report) as a terminal table.
pub fn render_table(v: &Value) -> String {
    let routes: Vec<&Value> = match v.get("routes").and_then(Value::as_array) {
        Some(a) => a.iter().collect(),
        None => vec![v],
    };
    let n = |r: &Value, p: &str| r.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let f = |r: &Value, p: &str| r.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
    let mut rows = vec![[
        "ROUTE",
        "STAGE",
        "MIRRORED",
        "COMPARED",
        "MATCH",
        "MISMATCH",
        "DROPPED",
        "SKIPPED",
        "ERR L/S",
        "LEGACY p50/p99",
        "SHADOW p50/p99",
    ]
    .map(String::from)];
    for r in &routes {
        let skipped = n(r, "/skipped/not_sampled")
            + n(r, "/skipped/writes")
            + n(r, "/skipped/oversize")
            + n(r, "/skipped/incomplete");
        rows.push([
            r["route"].as_str().unwrap_or("?").to_string(),
            r.get("stage").and_then(Value::as_str).unwrap_or("-").to_string(),
            n(r, "/mirrored").to_string(),
            n(r, "/compared").to_string(),
            r["match_rate"].as_f64().map(|m| format!("{:.1}%", m * 100.0)).unwrap_or_else(|| "-".into()),
            n(r, "/mismatched").to_string(),
            n(r, "/dropped").to_string(),
            skipped.to_string(),
            format!("{}/{}", n(r, "/errors/legacy"), n(r, "/errors/shadow")),
            format!("{:.1}/{:.1} ms", f(r, "/latency/legacy/p50_ms"), f(r, "/latency/legacy/p99_ms")),
            format!("{:.1}/{:.1} ms", f(r, "/latency/shadow/p50_ms"), f(r, "/latency/shadow/p99_ms")),
        ]);
    }
    let mut out = crate::columns::render(&rows);
    for r in &routes {
        let name = r["route"].as_str().unwrap_or("?");
        let top = r["top_fields"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if !top.is_empty() {
            out.push_str(&format!("\n{name}: top differing fields\n"));
            for t in top.iter().take(10) {
                out.push_str(&format!("  {:>8}  {}\n", t["count"], t["field"].as_str().unwrap_or("?")));
            }
        }
        let noise = r["noise_fields"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if !noise.is_empty() {
            out.push_str(&format!("{name}: learnt noise (not counted as mismatches)\n"));
            for t in noise {
                out.push_str(&format!("  {:>8}  {}\n", t["suppressed"], t["field"].as_str().unwrap_or("?")));
            }
        }
        if let Some(samples) = r.get("samples").and_then(Value::as_array) {
            for s in samples.iter().rev().take(3) {
                out.push_str(&format!(
                    "{name}: sample {} {} (request {})\n",
                    s.pointer("/request/method").and_then(Value::as_str).unwrap_or("?"),
                    s.pointer("/request/uri").and_then(Value::as_str).unwrap_or("?"),
                    s["request_id"].as_str().unwrap_or("-"),
                ));
                for d in s["differences"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    out.push_str(&format!("  {}\n", describe(d)));
                }
            }
        }
    }
    out
}

fn describe(d: &Value) -> String {
    let show = |v: &Value| if v.is_null() { "(absent)".to_string() } else { v.to_string() };
    match d["kind"].as_str() {
        Some("json") => format!(
            "{}: legacy {}, shadow {}",
            d["pointer"].as_str().unwrap_or("?"),
            show(&d["legacy"]),
            show(&d["shadow"])
        ),
        Some("status") => format!("status: legacy {}, shadow {}", d["legacy"], d["shadow"]),
        Some("header") => format!(
            "header {}: legacy {}, shadow {}",
            d["name"].as_str().unwrap_or("?"),
            show(&d["legacy"]),
            show(&d["shadow"])
        ),
        Some("bytes") => format!("body bytes differ (legacy {} B, shadow {} B)", d["legacy_len"], d["shadow_len"]),
        _ => d.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_within_a_bucket() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000 {
            h.record_ms(f64::from(i) / 10.0); // 0.1 .. 100 ms
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((50.0..=50.0 * LAT_GROWTH).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * LAT_GROWTH).contains(&p99), "{p99}");
        h.record_ms(1e9);
        assert_eq!(h.count(), 1001);
    }

    #[test]
    fn report_counts_fields_and_restores() {
        let r = RouteReport::new("report-unit");
        r.set_sample_capacity(2);
        r.record_comparison(&["/price".into()], &[]);
        r.record_comparison(&[], &["/nonce".into()]);
        r.learn_noise(["/nonce".to_string()]);
        for i in 0..3 {
            r.push_sample(json!({"i": i}));
        }
        r.record_latency(1.0, Some(2.0));
        let v = r.to_json(true);
        assert_eq!(v["compared"], 2);
        assert_eq!(v["matched"], 1);
        assert_eq!(v["match_rate"], 0.5);
        assert_eq!(v["top_fields"][0]["field"], "/price");
        assert_eq!(v["noise_fields"][0]["field"], "/nonce");
        assert_eq!(v["samples"].as_array().unwrap().len(), 2);
        let snap = serde_json::to_string(&r.snapshot()).unwrap();
        let back = RouteReport::new("report-unit-2");
        back.restore(&serde_json::from_str(&snap).unwrap());
        let w = back.to_json(false);
        assert_eq!(w["compared"], 2);
        assert_eq!(w["top_fields"], v["top_fields"]);
        assert_eq!(w["latency"], v["latency"]);
        assert!(back.noise().patterns().any(|p| p == "/nonce"));
        assert!(render_table(&w).contains("report-unit-2"));
    }
}

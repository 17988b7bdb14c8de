//! Judging a step: what a route did over a window (from the counters the proxy already keeps:
//! requests, 5xx and latency per side, shadow comparisons) and each gate's verdict. The
//! judgements are pure functions of the measurements; only the CDC and Prometheus gates fetch.

use std::time::Duration;

use serde_json::Value;

use super::plan::{CdcLagGate, ErrorRateGate, Gates, LatencyGate, MatchRateGate, PrometheusGate};
use super::state::{GateResult, Verdict};
use crate::metrics::SideSnapshot;

/// Counters of one route at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measure {
    pub legacy: SideSnapshot,
    pub extracted: SideSnapshot,
    /// Shadow comparisons and how many matched.
    pub compared: u64,
    pub matched: u64,
}

impl Measure {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Measure) -> Measure {
        Measure {
            legacy: self.legacy.since(&earlier.legacy),
            extracted: self.extracted.since(&earlier.extracted),
            compared: self.compared.saturating_sub(earlier.compared),
            matched: self.matched.saturating_sub(earlier.matched),
        }
    }
}

fn result(gate: &str, verdict: Verdict, detail: String, value: Option<f64>) -> GateResult {
    GateResult { gate: gate.to_string(), verdict, detail, value }
}

/// Shadow match rate (applies while the route shadows).
pub fn match_rate(g: &MatchRateGate, w: &Measure) -> GateResult {
    if w.compared < g.min_comparisons {
        return result(
            "match_rate",
            Verdict::Inconclusive,
            format!("{} of {} comparisons needed", w.compared, g.min_comparisons),
            None,
        );
    }
    let rate = w.matched as f64 / w.compared as f64;
    let verdict = if rate >= g.min { Verdict::Pass } else { Verdict::Fail };
    result(
        "match_rate",
        verdict,
        format!("match rate {rate:.4} over {} comparisons (min {})", w.compared, g.min),
        Some(rate),
    )
}

/// Extracted failure rate vs legacy's (applies when both sides serve).
pub fn error_rate(g: &ErrorRateGate, w: &Measure) -> GateResult {
    let (l, e) = (&w.legacy, &w.extracted);
    if l.requests < g.min_requests || e.requests < g.min_requests {
        return result(
            "error_rate",
            Verdict::Inconclusive,
            format!("{} legacy and {} extracted requests of {} each needed", l.requests, e.requests, g.min_requests),
            None,
        );
    }
    let (lr, er) = (l.failure_rate().unwrap_or(0.0), e.failure_rate().unwrap_or(0.0));
    let verdict = if er <= lr + g.max_delta { Verdict::Pass } else { Verdict::Fail };
    result(
        "error_rate",
        verdict,
        format!("5xx rate extracted {er:.4} vs legacy {lr:.4} (max +{})", g.max_delta),
        Some(er),
    )
}

/// Extracted p99 vs legacy's (applies when both sides serve).
pub fn latency(g: &LatencyGate, w: &Measure) -> GateResult {
    let (l, e) = (&w.legacy, &w.extracted);
    let (Some(lp), Some(ep)) = (l.quantile(0.99), e.quantile(0.99)) else {
        return result("latency", Verdict::Inconclusive, "no requests on one side".into(), None);
    };
    if l.requests < g.min_requests || e.requests < g.min_requests {
        return result(
            "latency",
            Verdict::Inconclusive,
            format!("{} legacy and {} extracted requests of {} each needed", l.requests, e.requests, g.min_requests),
            None,
        );
    }
    // a p99 in the +Inf bucket is only "slower than the largest bucket": no ratio (inf/inf is
    // NaN, which no max_ratio passes, and the gate would fail for as long as it lasts). Both
    // there: no evidence either way; only the extracted side there: it is the slower one
    if !lp.is_finite() || !ep.is_finite() {
        let verdict = match (lp.is_finite(), ep.is_finite()) {
            (false, false) => Verdict::Inconclusive,
            (true, false) => Verdict::Fail,
            _ => Verdict::Pass,
        };
        return result(
            "latency",
            verdict,
            format!(
                "p99 extracted ≤{:.1} ms vs legacy ≤{:.1} ms: beyond the largest latency bucket, no ratio",
                ep * 1e3,
                lp * 1e3
            ),
            None,
        );
    }
    let ratio = ep / lp;
    let verdict = if ratio <= g.max_ratio { Verdict::Pass } else { Verdict::Fail };
    result(
        "latency",
        verdict,
        format!(
            "p99 extracted ≤{:.1} ms vs legacy ≤{:.1} ms, ratio {ratio:.2} (max {})",
            ep * 1e3,
            lp * 1e3,
            g.max_ratio
        ),
        Some(ratio),
    )
}

/// The CDC pipelines' lag, from their status endpoints. A pipeline that cannot be reached, is
/// not ready or reports an error fails the gate: no data, no promotion.
pub async fn cdc_lag(g: &CdcLagGate, client: &reqwest::Client) -> GateResult {
    let mut worst = 0.0f64;
    for url in &g.status {
        let got = async { client.get(url).timeout(Duration::from_secs(2)).send().await?.json::<Value>().await }.await;
        let v = match got {
            Ok(v) => v,
            Err(e) => return result("cdc_lag", Verdict::Fail, format!("{url} cannot be read: {e}"), None),
        };
        if v["ready"] != Value::Bool(true) {
            return result("cdc_lag", Verdict::Fail, format!("{url} is not ready"), None);
        }
        for (name, p) in v["pipelines"].as_object().into_iter().flatten() {
            if !p["error"].is_null() {
                return result("cdc_lag", Verdict::Fail, format!("{url} {name}: {}", p["error"]), None);
            }
            worst = worst.max(p["lag_seconds"].as_f64().unwrap_or(f64::INFINITY));
        }
    }
    let max = g.max.as_secs_f64();
    let verdict = if worst <= max { Verdict::Pass } else { Verdict::Fail };
    result("cdc_lag", verdict, format!("worst lag {worst:.3} s (max {max} s)"), Some(worst))
}

/// A Prometheus instant query; its (first) value must lie within the gate's range. No answer,
/// or an empty result, fails.
pub async fn prometheus(g: &PrometheusGate, client: &reqwest::Client) -> GateResult {
    let url = format!("{}/api/v1/query", g.url);
    let got = async {
        client
            .get(&url)
            .query(&[("query", g.query.as_str())])
            .timeout(Duration::from_secs(3))
            .send()
            .await?
            .json::<Value>()
            .await
    }
    .await;
    let v = match got {
        Ok(v) => v,
        Err(e) => return result("prometheus", Verdict::Fail, format!("{url} cannot be queried: {e}"), None),
    };
    let data = &v["data"];
    let raw = match data["resultType"].as_str() {
        Some("scalar") => data["result"][1].as_str(),
        Some("vector") => data["result"][0]["value"][1].as_str(),
        _ => None,
    };
    let Some(value) = raw.and_then(|s| s.parse::<f64>().ok()) else {
        return result("prometheus", Verdict::Fail, format!("no value for {:?}: {}", g.query, v["error"]), None);
    };
    let ok = g.min.is_none_or(|m| value >= m) && g.max.is_none_or(|m| value <= m);
    let range =
        format!("[{}, {}]", g.min.map_or("-∞".into(), |m| m.to_string()), g.max.map_or("∞".into(), |m| m.to_string()));
    let verdict = if ok { Verdict::Pass } else { Verdict::Fail };
    result("prometheus", verdict, format!("{} = {value} (range {range})", g.query), Some(value))
}

/// Which gates apply at a placement: the match rate while the route shadows, the side-by-side
/// gates while both sides serve (canary), the data and Prometheus gates always.
#[derive(Debug, Clone, Copy)]
pub struct Applicable {
    pub shadowing: bool,
    pub both_sides: bool,
}

/// Every applicable gate's verdict, and the analysis's: fail if any failed, inconclusive if any
/// lacked data, pass otherwise (also when no gate applies).
pub async fn analyse(
    gates: &Gates,
    when: Applicable,
    w: &Measure,
    client: &reqwest::Client,
) -> (Verdict, Vec<GateResult>) {
    let mut out = Vec::new();
    if let (Some(g), true) = (&gates.match_rate, when.shadowing) {
        out.push(match_rate(g, w));
    }
    if when.both_sides {
        if let Some(g) = &gates.error_rate {
            out.push(error_rate(g, w));
        }
        if let Some(g) = &gates.latency {
            out.push(latency(g, w));
        }
    }
    if let Some(g) = &gates.cdc_lag {
        out.push(cdc_lag(g, client).await);
    }
    if let Some(g) = &gates.prometheus {
        out.push(prometheus(g, client).await);
    }
    (overall(&out), out)
}

/// The analysis's verdict from its gates'.
pub fn overall(results: &[GateResult]) -> Verdict {
    if results.iter().any(|r| r.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if results.iter().any(|r| r.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: u64, failed: u64, slow: u64) -> SideSnapshot {
        // buckets: ≤10 ms, ≤100 ms, +Inf; `slow` requests took > 10 ms
        let fast = requests - slow;
        SideSnapshot { requests, failed, buckets: vec![(0.01, fast), (0.1, requests), (f64::INFINITY, requests)] }
    }

    #[test]
    fn gate_table() {
        let mr = MatchRateGate { min: 0.99, min_comparisons: 100 };
        let w = |compared, matched| Measure { compared, matched, ..Default::default() };
        assert_eq!(match_rate(&mr, &w(50, 50)).verdict, Verdict::Inconclusive);
        assert_eq!(match_rate(&mr, &w(1000, 995)).verdict, Verdict::Pass);
        assert_eq!(match_rate(&mr, &w(1000, 900)).verdict, Verdict::Fail);

        let er = ErrorRateGate { max_delta: 0.01, min_requests: 100 };
        let m = |l: SideSnapshot, e: SideSnapshot| Measure { legacy: l, extracted: e, ..Default::default() };
        assert_eq!(error_rate(&er, &m(side(1000, 10, 0), side(50, 0, 0))).verdict, Verdict::Inconclusive);
        assert_eq!(error_rate(&er, &m(side(1000, 10, 0), side(1000, 19, 0))).verdict, Verdict::Pass);
        assert_eq!(error_rate(&er, &m(side(1000, 10, 0), side(1000, 30, 0))).verdict, Verdict::Fail);

        let lat = LatencyGate { max_ratio: 2.0, min_requests: 100 };
        assert_eq!(latency(&lat, &m(side(1000, 0, 0), side(1000, 0, 0))).verdict, Verdict::Pass);
        let r = latency(&lat, &m(side(1000, 0, 0), side(1000, 0, 500)));
        assert_eq!((r.verdict, r.value), (Verdict::Fail, Some(10.0)), "{r:?}");
        assert_eq!(latency(&lat, &m(side(1000, 0, 0), SideSnapshot::default())).verdict, Verdict::Inconclusive);
        // every request over the largest bucket: p99 is +Inf, and inf/inf no ratio at all
        let over = |requests| SideSnapshot { requests, failed: 0, buckets: vec![(0.01, 0), (f64::INFINITY, requests)] };
        let r = latency(&lat, &m(over(1000), over(1000)));
        assert_eq!((r.verdict, r.value), (Verdict::Inconclusive, None), "{r:?}");
        // only the extracted side beyond it fails; only legacy beyond it passes
        assert_eq!(latency(&lat, &m(side(1000, 0, 0), over(1000))).verdict, Verdict::Fail);
        assert_eq!(latency(&lat, &m(over(1000), side(1000, 0, 0))).verdict, Verdict::Pass);

        let g = |v| GateResult { gate: "x".into(), verdict: v, detail: String::new(), value: None };
        assert_eq!(overall(&[]), Verdict::Pass);
        assert_eq!(overall(&[g(Verdict::Pass), g(Verdict::Inconclusive)]), Verdict::Inconclusive);
        assert_eq!(overall(&[g(Verdict::Inconclusive), g(Verdict::Fail)]), Verdict::Fail);
    }

    #[test]
    fn windows_subtract_snapshots() {
        let a = Measure { legacy: side(10, 1, 0), extracted: side(5, 0, 0), compared: 3, matched: 3 };
        let b = Measure { legacy: side(30, 1, 0), extracted: side(25, 4, 5), compared: 10, matched: 8 };
        let w = b.since(&a);
        assert_eq!((w.legacy.requests, w.extracted.requests, w.extracted.failed), (20, 20, 4));
        assert_eq!((w.compared, w.matched), (7, 5));
        assert_eq!(w.extracted.quantile(0.99), Some(0.1));
    }
}

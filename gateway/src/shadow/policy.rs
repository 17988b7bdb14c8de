//! A route's compiled `[routes.shadow]` table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::compare::CompareRules;
use super::report::{registry, RouteReport};
use super::worker::Lane;

/// What happens to requests with methods that may write (anything but GET, HEAD, OPTIONS, TRACE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Not mirrored (default); counted as skipped (`writes`).
    Skip,
    /// Mirrored with `x-strangler-shadow: 1`; the extracted service rolls its transaction back.
    DryRun,
}

/// What happens to response bodies larger than `max_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Compared by length + CRC-32 of the whole body (default).
    Hash,
    /// Not compared (status and headers still are); counted.
    Skip,
}

/// Shadow settings of one route, compiled from `[routes.shadow]` (or the defaults for a route at
/// stage `shadow` without the table).
pub struct ShadowPolicy {
    /// The route's name (reports are kept by name, so they survive reloads and restarts).
    pub route: String,
    /// The route's settings, normalised (`sample` within 0.0–1.0, `queue` and `concurrency` ≥ 1).
    pub spec: ShadowSpec,
    sample_threshold: u64,
    sample_counter: AtomicU64,
    /// The route's report (shared by every snapshot that has this route name).
    pub report: Arc<RouteReport>,
    /// Created on first use (needs the shadow runtime); dropped with the snapshot.
    pub(crate) lane: OnceLock<Option<Lane>>,
}

impl std::fmt::Debug for ShadowPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowPolicy")
            .field("route", &self.route)
            .field("sample", &self.spec.sample)
            .finish_non_exhaustive()
    }
}

/// 2^64 / golden ratio: successive multiples are a low-discrepancy (Weyl) sequence.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The defaults of a `[routes.shadow]` table.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
pub const DEFAULT_QUEUE: usize = 1024;
pub const DEFAULT_CONCURRENCY: usize = 32;
pub const DEFAULT_SAMPLES: usize = 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REDACT: [&str; 3] = ["authorization", "cookie", "set-cookie"];

/// Everything a `[routes.shadow]` table sets (already validated).
#[derive(Debug, Clone)]
pub struct ShadowSpec {
    /// Share of eligible requests mirrored, 0.0–1.0.
    pub sample: f64,
    /// What to compare and how.
    pub rules: CompareRules,
    /// Request and response bodies are kept up to this many bytes.
    pub max_body: usize,
    pub oversize: Oversize,
    pub writes: Writes,
    /// Replay safe requests to legacy a second time and learn differing fields as noise.
    pub learn_noise: bool,
    /// Lowercase header names whose values are replaced by `[redacted]` in samples.
    pub redact_headers: Vec<String>,
    /// The route is at stage `canary`: mirror the requests legacy served.
    pub on_canary: bool,
    /// Deadline of one mirrored request (and of the noise replay).
    pub timeout: Duration,
    /// Jobs waiting for a worker; beyond this they are dropped and counted.
    pub queue: usize,
    /// Mirrored requests in flight at once for this route.
    pub concurrency: usize,
    /// Sample mismatches kept per route.
    pub samples: usize,
}

impl Default for ShadowSpec {
    fn default() -> Self {
        Self {
            sample: 1.0,
            rules: CompareRules::default(),
            max_body: DEFAULT_MAX_BODY,
            oversize: Oversize::Hash,
            writes: Writes::Skip,
            learn_noise: false,
            redact_headers: DEFAULT_REDACT.iter().map(|s| s.to_string()).collect(),
            on_canary: false,
            timeout: DEFAULT_TIMEOUT,
            queue: DEFAULT_QUEUE,
            concurrency: DEFAULT_CONCURRENCY,
            samples: DEFAULT_SAMPLES,
        }
    }
}

impl ShadowPolicy {
    /// Compiles a spec for route `route`, attaching the route's (process-wide) report.
    pub fn new(route: &str, mut spec: ShadowSpec) -> Self {
        let report = registry().report(route);
        report.set_sample_capacity(spec.samples);
        spec.sample = spec.sample.clamp(0.0, 1.0);
        spec.queue = spec.queue.max(1);
        spec.concurrency = spec.concurrency.max(1);
        Self {
            route: route.to_string(),
            sample_threshold: (spec.sample * 18_446_744_073_709_551_616.0) as u64,
            sample_counter: AtomicU64::new(0),
            spec,
            report,
            lane: OnceLock::new(),
        }
    }

    /// Whether this request is in the sample (a Weyl sequence: the share is exact in aggregate).
    #[inline]
    pub fn sampled(&self) -> bool {
        if self.spec.sample >= 1.0 {
            return true;
        }
        if self.spec.sample <= 0.0 {
            return false;
        }
        let n = self.sample_counter.fetch_add(1, Ordering::Relaxed);
        n.wrapping_add(1).wrapping_mul(GOLDEN) < self.sample_threshold
    }

    pub(crate) fn lane(self: &Arc<Self>) -> Option<&Lane> {
        self.lane
            .get_or_init(|| super::worker::Shadower::get().map(|s| s.lane(self.spec.queue, self.spec.concurrency)))
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_share_is_exact_in_aggregate() {
        for s in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let p = ShadowPolicy::new("sampling-test", ShadowSpec { sample: s, ..Default::default() });
            let n = (0..10_000).filter(|_| p.sampled()).count();
            assert!((n as f64 / 100.0 - s * 100.0).abs() < 0.2, "sample {s}: {n}");
        }
    }
}

//! The shadow rules: a route's compiled `[routes.shadow]` table ([`ShadowSpec`]) and the
//! `[gateway]` settings of the shadow runtime ([`ShadowSettings`]). Pure data; the queues,
//! samplers and reports that run them belong to [`super::service::ShadowService`].

use std::path::PathBuf;
use std::time::Duration;

use http::Method;

use super::compare::CompareRules;

/// What happens to requests with methods that may write (anything but GET, HEAD, OPTIONS, TRACE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Not mirrored (default); counted as skipped (`writes`).
    Skip,
    /// Mirrored with `x-strangler-shadow` and the shared secret; the extracted service rolls its
    /// transaction back.
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

impl ShadowSpec {
    /// The spec with its values in range (`sample` within 0.0–1.0, `queue` and `concurrency` ≥ 1).
    pub fn normalised(mut self) -> Self {
        self.sample = self.sample.clamp(0.0, 1.0);
        self.queue = self.queue.max(1);
        self.concurrency = self.concurrency.max(1);
        self
    }
}

/// Methods that never write: mirrored always, and replayed to legacy for noise learning.
pub fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// `[gateway]` settings of the shadow runtime (apply at restart).
#[derive(Debug, Clone)]
pub struct ShadowSettings {
    /// Where samples (rotating JSONL) and report snapshots are kept; nothing is persisted when
    /// absent.
    pub dir: Option<PathBuf>,
    /// Shadow threads (a single-threaded runtime each; each route's mirrors run on one of them).
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

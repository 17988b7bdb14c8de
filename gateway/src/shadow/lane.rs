//! One route's shadow runtime as the request path sees it ([`RouteShadow`]): the rules it was
//! bound with, its report, its sampler and its bounded queue ([`Lane`]) into the workers, and the
//! [`Job`] a request becomes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};

use super::body::BodyCapture;
use super::policy::ShadowSpec;
use super::report::RouteReport;
use crate::table::Upstream;

/// Everything the worker needs about one request (built in `logging`).
pub(crate) struct Job {
    pub route: Arc<RouteShadow>,
    pub req: Box<RequestHeader>,
    pub request_chunks: Vec<Bytes>,
    /// The request body was larger than `max_body`.
    pub request_over: bool,
    /// The whole request body was read from the client.
    pub request_complete: bool,
    pub body_read: usize,
    /// The response header sent to the client (None: nothing was sent).
    pub primary: Option<Box<ResponseHeader>>,
    /// The proxy reported an error for the primary request.
    pub primary_failed: bool,
    pub primary_ms: f64,
    pub response: BodyCapture,
    pub shadow_upstream: Arc<Upstream>,
    pub legacy_upstream: Arc<Upstream>,
    pub request_id: Option<HeaderValue>,
    /// `x-strangler-shadow` with the shared secret (None: no secret configured, no header).
    pub dry_run_header: Option<HeaderValue>,
}

/// A route's bounded queue into the workers. When the last clone is dropped (with the binding
/// that made it), the dispatcher finishes what is queued and stops.
///
/// The proxy side only pushes under an uncontended mutex; the dispatcher polls (1–10 ms) instead
/// of being woken, so enqueuing never costs the proxy thread a wake-up syscall.
#[derive(Clone)]
pub(crate) struct Lane {
    pub(crate) queue: Arc<LaneQueue>,
}

pub(crate) struct LaneQueue {
    jobs: Mutex<VecDeque<Job>>,
    capacity: usize,
    /// The `queue` and `concurrency` this lane was made with (a binding reuses a lane only when
    /// both are unchanged).
    pub(crate) shape: (usize, usize),
}

impl LaneQueue {
    pub(crate) fn new(queue: usize, concurrency: usize) -> Self {
        Self { jobs: Mutex::new(VecDeque::new()), capacity: queue, shape: (queue, concurrency) }
    }

    pub(crate) fn pop(&self) -> Option<Job> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

impl Lane {
    /// Never blocks: a full queue gives the job back (the caller counts a drop).
    #[inline]
    pub fn try_send(&self, job: Job) -> Result<(), Box<Job>> {
        let mut q = self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= self.queue.capacity {
            return Err(Box::new(job));
        }
        q.push_back(job);
        Ok(())
    }
}

/// 2^64 / golden ratio: successive multiples are a low-discrepancy (Weyl) sequence.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Picks a share of requests: a Weyl sequence, so the share is exact in aggregate.
#[derive(Debug)]
pub struct Sampler {
    share: f64,
    threshold: u64,
    counter: AtomicU64,
}

impl Sampler {
    pub fn new(share: f64) -> Self {
        let share = share.clamp(0.0, 1.0);
        Self { share, threshold: (share * 18_446_744_073_709_551_616.0) as u64, counter: AtomicU64::new(0) }
    }

    /// Whether this request is in the sample.
    #[inline]
    pub fn sampled(&self) -> bool {
        if self.share >= 1.0 {
            return true;
        }
        if self.share <= 0.0 {
            return false;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        n.wrapping_add(1).wrapping_mul(GOLDEN) < self.threshold
    }
}

/// One route's shadow runtime, made by the shadow service when it binds a route table.
pub struct RouteShadow {
    /// The route's name (reports are kept by name, so they survive reloads and restarts).
    pub route: String,
    /// The rules this binding runs.
    pub spec: Arc<ShadowSpec>,
    /// The route's report (shared by every binding of this route name).
    pub report: Arc<RouteReport>,
    pub sampler: Sampler,
    pub(crate) lane: Lane,
}

impl std::fmt::Debug for RouteShadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteShadow").field("route", &self.route).field("sample", &self.spec.sample).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_share_is_exact_in_aggregate() {
        for s in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let p = Sampler::new(s);
            let n = (0..10_000).filter(|_| p.sampled()).count();
            assert!((n as f64 / 100.0 - s * 100.0).abs() < 0.2, "sample {s}: {n}");
        }
    }
}

//! One route's shadow runtime as the request path sees it ([`RouteShadow`]): the rules it was
//! bound with, its report, its sampler and its bounded queue ([`Lane`]) into the workers, and the
//! [`Job`] a request becomes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};

use super::body::BodyCapture;
use super::policy::ShadowSpec;
use super::report::RouteReport;
use crate::sampler::Sampler;
use crate::table::Upstream;

/// Everything the worker needs about one request (built in `logging`).
pub(crate) struct Job {
    pub route: Arc<RouteShadow>,
    pub req: Box<RequestHeader>,
    /// The mirror as the extracted side's rewrite makes it (None: `req` as it is).
    pub shadow_req: Option<Box<RequestHeader>>,
    /// The noise replay to legacy as the legacy side's rewrite makes it (None: `req`).
    pub legacy_req: Option<Box<RequestHeader>>,
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

//! One route's shadow runtime as the request path sees it ([`RouteShadow`]): the rules it was
//! bound with, its report, its sampler and its bounded queue ([`Lane`]) into the workers, and the
//! [`Job`] a request becomes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;

use super::body::BodyCapture;
use super::h1::AnswerHeaders;
use super::policy::ShadowSpec;
use super::report::RouteReport;
use crate::metrics::RouteActivity;
use crate::sampler::Sampler;
use crate::table::Upstream;

/// Everything the worker needs about one request (built in `logging`).
pub(crate) struct Job {
    pub route: Arc<RouteShadow>,
    pub req: RequestHeader,
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
    pub primary: Option<PrimaryHead>,
    /// The proxy reported an error for the primary request.
    pub primary_failed: bool,
    pub primary_ms: f64,
    pub response: BodyCapture,
    pub shadow_upstream: Arc<Upstream>,
    pub legacy_upstream: Arc<Upstream>,
    pub request_id: Option<HeaderValue>,
    /// `x-strangler-shadow` with the shared secret (None: no secret configured, no header).
    pub dry_run_header: Option<HeaderValue>,
    /// The place in the queue this job was given when its request started ([`Lane::reserve`]);
    /// given back when a worker takes the job.
    pub slot: Option<Slot>,
}

/// The primary answer as sent to the client: its status and a copy of its headers.
pub(crate) struct PrimaryHead {
    pub status: u16,
    pub headers: AnswerHeaders,
}

/// A route's bounded queue into the workers. When the last clone is dropped (with the binding
/// that made it), the dispatcher finishes what is queued and stops.
///
/// The proxy side only pushes under an uncontended mutex; the dispatcher
/// ([`super::dispatch`]) polls (1–10 ms, and whenever a mirror finishes) instead of being woken,
/// so enqueuing never costs the proxy thread a wake-up syscall.
///
/// A request reserves its place when it starts ([`Lane::reserve`], one atomic add), before any
/// capture work: when the queue is full the mirror is dropped there, and the request costs the
/// proxy thread nothing more than that add. Jobs queued plus requests holding a place never
/// exceed the capacity, so the push at the end of the request always finds room.
#[derive(Clone)]
pub(crate) struct Lane {
    pub(crate) queue: Arc<LaneQueue>,
}

pub(crate) struct LaneQueue {
    jobs: Mutex<VecDeque<Job>>,
    capacity: usize,
    /// Places taken: jobs queued plus shadowed requests still in flight.
    reserved: AtomicUsize,
    /// The `queue` and `concurrency` this lane was made with (a binding reuses a lane only when
    /// both are unchanged).
    pub(crate) shape: (usize, usize),
}

impl LaneQueue {
    pub(crate) fn new(queue: usize, concurrency: usize) -> Self {
        Self {
            jobs: Mutex::new(VecDeque::new()),
            capacity: queue,
            reserved: AtomicUsize::new(0),
            shape: (queue, concurrency),
        }
    }

    /// Takes the oldest `max` jobs (fewer when there are fewer) into `into`, under one lock, and
    /// gives their places back.
    pub(crate) fn pop_into(&self, into: &mut Vec<Job>, max: usize) {
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let n = jobs.len().min(max);
            into.extend(jobs.drain(..n));
        }
        for job in into.iter_mut() {
            job.slot = None;
        }
    }

    /// The lane is gone (no `Lane` and no reserved place left: no job can come any more) and
    /// the queue is empty. `self` is the dispatcher's own reference.
    pub(crate) fn is_closed(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && self.jobs.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Places taken (jobs queued plus shadowed requests in flight).
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }
}

/// A place in a lane's queue, held from the start of a shadowed request until a worker takes its
/// job; dropping it (the request ended without a job, or the job was taken) gives it back.
pub(crate) struct Slot {
    queue: Arc<LaneQueue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.reserved.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lane {
    /// A place for one more job, or `None` when the queue (with the requests already holding a
    /// place) is full: the caller drops the mirror before capturing anything.
    #[inline]
    pub(crate) fn reserve(&self) -> Option<Slot> {
        let q = &self.queue;
        if q.reserved.fetch_add(1, Ordering::Relaxed) >= q.capacity {
            q.reserved.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot { queue: q.clone() })
    }

    /// Never blocks: a full queue gives the job back (the caller counts a drop). With a place
    /// reserved first, the queue is never full here.
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
    /// Where a finished comparison marks the route active for the dashboard's sampler (which
    /// reads the routes marked active; a comparison ends after its request was counted, up to the
    /// route's timeout later): the activity of the table this binding is for, and the route's
    /// index in it.
    pub(crate) activity: Arc<RouteActivity>,
    pub(crate) index: u32,
}

impl std::fmt::Debug for RouteShadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteShadow").field("route", &self.route).field("sample", &self.spec.sample).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places are taken up to the capacity, refused beyond it, and given back when dropped.
    #[test]
    fn reserve_refuses_beyond_capacity_and_gives_places_back() {
        let lane = Lane { queue: Arc::new(LaneQueue::new(2, 1)) };
        let a = lane.reserve().expect("first place");
        let b = lane.reserve().expect("second place");
        assert!(lane.reserve().is_none(), "a full queue refuses a third request");
        assert_eq!(lane.queue.reserved(), 2, "a refused reservation takes no place");
        drop(a);
        let c = lane.reserve().expect("a place given back is free again");
        drop((b, c));
        assert_eq!(lane.queue.reserved(), 0);
    }
}

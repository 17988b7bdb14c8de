//! The proxy-side half of shadowing: decide whether a request is mirrored, keep references to
//! its body chunks and to the primary response's chunks as they stream (no copies: `Bytes`
//! clones), and hand everything to the route's queue when the request ends. Everything here runs
//! on the proxy's hot path, so it only clones `Bytes`, bumps atomics and does one `try_send`.
//! Whether a request is mirrored at all (writes, sample, a place in the queue) is decided in
//! [`start`], before any capture: a mirror that would be dropped costs the proxy nothing more.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::body::BodyCapture;
use super::h1::AnswerHeaders;
use super::lane::{Job, PrimaryHead, RouteShadow, Slot};
use super::policy::{is_safe, Writes};
use super::report::Count;
use crate::stage::Side;
use crate::table::RouteTable;

/// Shadow traffic for one request: made in `request_filter` (by [`start`]) when the route mirrors
/// and the request is in the sample. `request_body_filter` and `response_body_filter` feed the
/// capture; `logging` hands it to the route's queue ([`finish`]).
#[derive(Debug)]
pub struct ShadowHook {
    /// Index of the extracted upstream to mirror to, in the request's snapshot.
    pub upstream: usize,
    /// Request and primary response as captured so far.
    pub capture: Box<Capture>,
}

/// Pingora replays its retry buffer (at most 64 KiB) through `request_body_filter` on a retry;
/// the capture keeps that much slack per attempt and takes the last `body_bytes_read` bytes.
const REPLAY_SLACK: usize = 8 * 64 * 1024;

/// What one shadowed request has captured so far.
pub struct Capture {
    route: Arc<RouteShadow>,
    /// This request's place in the route's queue.
    slot: Slot,
    request: Vec<Bytes>,
    request_len: usize,
    request_over: bool,
    response: BodyCapture,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("route", &self.route.route)
            .field("request_len", &self.request_len)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// A request body chunk on its way upstream.
    #[inline]
    pub fn request_chunk(&mut self, body: &Option<Bytes>) {
        let Some(b) = body else { return };
        if b.is_empty() || self.request_over {
            return;
        }
        self.request_len += b.len();
        if self.request_len > self.route.spec.max_body + REPLAY_SLACK {
            self.request_over = true;
            self.request = Vec::new();
        } else {
            self.request.push(b.clone());
        }
    }

    /// A primary response body chunk on its way to the client.
    #[inline]
    pub fn response_chunk(&mut self, body: &Option<Bytes>) {
        if let Some(b) = body {
            self.response.push(b, self.route.spec.max_body, self.route.spec.oversize);
        }
    }
}

/// Decides in `request_filter` whether this request is shadowed. `None` (and nothing else to
/// do) for requests legacy did not serve, upgrades, writes without dry-run, unsampled ones, and
/// when the route's queue is full (counted as dropped, before any capture work).
#[inline]
pub fn start(route: Arc<RouteShadow>, to: Option<usize>, side: Side, req: &RequestHeader) -> Option<ShadowHook> {
    let upstream = to?;
    if side != Side::Legacy || req.headers.contains_key(http::header::UPGRADE) {
        return None;
    }
    if !is_safe(&req.method) && route.spec.writes != Writes::DryRun {
        route.report.count(Count::Writes);
        return None;
    }
    if !route.sampler.sampled() {
        route.report.count(Count::NotSampled);
        return None;
    }
    let Some(slot) = route.lane.reserve() else {
        route.report.count(Count::Dropped);
        return None;
    };
    let capture = Capture {
        route,
        slot,
        request: Vec::new(),
        request_len: 0,
        request_over: false,
        response: BodyCapture::default(),
    };
    Some(ShadowHook { upstream, capture: Box::new(capture) })
}

/// Called from `logging`: packages the request and the primary response and queues them for the
/// route's workers. A full queue drops the job and counts it.
pub fn finish(
    hook: ShadowHook,
    session: &mut Session,
    failed: bool,
    started: Instant,
    table: &RouteTable,
    route_index: Option<usize>,
    request_id: Option<&HeaderValue>,
) {
    let Capture { route, slot, request, request_over, response, .. } = *hook.capture;
    // each side's request as that side's rewrite makes it (the mirror goes to the extracted side)
    let rewrites = route_index.and_then(|i| table.routes.get(i)).and_then(|r| r.rewrite.as_deref());
    let rewritten = |side: Side| {
        rewrites.and_then(|rw| rw.side(side)).map(|rw| {
            let mut req = Box::new(session.req_header().clone());
            rw.apply_request(&mut req);
            req
        })
    };
    let (shadow_req, legacy_req) = (rewritten(Side::Extracted), rewritten(Side::Legacy));
    let body_read = session.as_ref().body_bytes_read();
    let body_done = session.as_mut().is_body_done();
    // the job needs the request's parts and the answer's status and headers, not the header case
    // Pingora keeps for the wire beside them (a second header map per header) nor extensions:
    // copied without them, and without `http`'s builders (`as_owned_parts`)
    let job = Job {
        req: request_parts(session.req_header()),
        shadow_req,
        legacy_req,
        request_chunks: request,
        request_over: request_over || body_read > route.spec.max_body,
        request_complete: body_done,
        body_read,
        primary: session
            .response_written()
            .map(|r| PrimaryHead { status: r.status.as_u16(), headers: AnswerHeaders::Map(r.headers.clone()) }),
        primary_failed: failed,
        primary_ms: started.elapsed().as_secs_f64() * 1000.0,
        response,
        shadow_upstream: table.upstreams[hook.upstream].clone(),
        legacy_upstream: table.upstreams[table.legacy].clone(),
        request_id: request_id.cloned(),
        dry_run_header: table.settings.dry_run_header.clone(),
        route: route.clone(),
        slot: Some(slot),
    };
    if route.lane.try_send(job).is_err() {
        route.report.count(Count::Dropped);
    }
}

/// A copy of the request's method, target, version and headers: what a mirror and a sample read
/// (not its extensions nor the header case). Built in place rather than through `http`'s request
/// builder as `as_owned_parts` does (its `Result`s move the whole parts at each step).
fn request_parts(req: &RequestHeader) -> RequestHeader {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = req.method.clone();
    parts.uri = req.uri.clone();
    parts.version = req.version;
    parts.headers = req.headers.clone();
    RequestHeader::from(parts)
}

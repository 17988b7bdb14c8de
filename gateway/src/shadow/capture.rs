//! The proxy-side half of shadowing: decide whether a request is mirrored, keep references to
//! its body chunks and to the primary response's chunks as they stream (no copies: `Bytes`
//! clones), and hand everything to the route's queue when the request ends. Everything here runs
//! on the proxy's hot path, so it only clones `Bytes`, bumps atomics and does one `try_send`.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::compare::BodyDigest;
use super::policy::{Oversize, ShadowPolicy, Writes};
use super::report::Count;
use super::worker::Job;
use crate::proxy::ShadowHook;
use crate::table::{RouteTable, Side};

/// Methods that never write: mirrored always, and replayed to legacy for noise learning.
pub fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Pingora replays its retry buffer (at most 64 KiB) through `request_body_filter` on a retry;
/// the capture keeps that much slack per attempt and takes the last `body_bytes_read` bytes.
const REPLAY_SLACK: usize = 8 * 64 * 1024;

/// A body as it streamed past: chunk references up to the limit, then (when hashing) a running
/// CRC-32 of the whole body.
#[derive(Clone, Default)]
pub struct BodyCapture {
    chunks: Vec<Bytes>,
    len: usize,
    crc: Option<crc32fast::Hasher>,
    over: bool,
}

/// A finished body capture.
#[derive(Debug, Clone)]
pub struct CapturedBody {
    /// The body, or empty when it was larger than the limit.
    pub body: Bytes,
    pub len: usize,
    pub truncated: bool,
    pub digest: Option<BodyDigest>,
}

impl BodyCapture {
    /// Adds a chunk; past `max` the kept chunks are hashed and dropped (or just dropped).
    #[inline]
    pub fn push(&mut self, b: &Bytes, max: usize, oversize: Oversize) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        if let Some(h) = &mut self.crc {
            h.update(b);
        } else if self.over {
        } else if self.len > max {
            self.over = true;
            if oversize == Oversize::Hash {
                let mut h = crc32fast::Hasher::new();
                for c in self.chunks.drain(..) {
                    h.update(&c);
                }
                h.update(b);
                self.crc = Some(h);
            }
            self.chunks = Vec::new();
        } else {
            self.chunks.push(b.clone());
        }
    }

    pub fn finish(self) -> CapturedBody {
        let digest = self.crc.map(|h| BodyDigest { len: self.len as u64, crc32: h.finalize() });
        CapturedBody { body: concat(self.chunks), len: self.len, truncated: self.over, digest }
    }
}

fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    }
}

/// What one shadowed request has captured so far.
#[derive(Clone)]
pub struct Capture {
    policy: Arc<ShadowPolicy>,
    request: Vec<Bytes>,
    request_len: usize,
    request_over: bool,
    response: BodyCapture,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("route", &self.policy.route)
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
        if self.request_len > self.policy.spec.max_body + REPLAY_SLACK {
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
            self.response.push(b, self.policy.spec.max_body, self.policy.spec.oversize);
        }
    }
}

/// Decides in `request_filter` whether this request is shadowed. `None` (and nothing else to
/// do) for requests legacy did not serve, upgrades, writes without dry-run, and unsampled ones.
#[inline]
pub fn start(
    policy: &Arc<ShadowPolicy>,
    route: usize,
    to: Option<usize>,
    side: Side,
    req: &RequestHeader,
) -> Option<ShadowHook> {
    let upstream = to?;
    if side != Side::Legacy || req.headers.contains_key(http::header::UPGRADE) {
        return None;
    }
    if !is_safe(&req.method) && policy.spec.writes != Writes::DryRun {
        policy.report.count(Count::Writes);
        return None;
    }
    if !policy.sampled() {
        policy.report.count(Count::NotSampled);
        return None;
    }
    let capture = Capture {
        policy: policy.clone(),
        request: Vec::new(),
        request_len: 0,
        request_over: false,
        response: BodyCapture::default(),
    };
    Some(ShadowHook { route, upstream, capture: Box::new(capture) })
}

/// Called from `logging`: packages the request and the primary response and queues them for the
/// route's workers. A full queue drops the job and counts it.
pub fn finish(
    hook: ShadowHook,
    session: &mut Session,
    failed: bool,
    started: Instant,
    table: &RouteTable,
    request_id: Option<&HeaderValue>,
) {
    let Capture { policy, request, request_over, response, .. } = *hook.capture;
    let Some(lane) = policy.lane() else { return };
    let body_read = session.as_ref().body_bytes_read();
    let body_done = session.as_mut().is_body_done();
    let job = Job {
        req: Box::new(session.req_header().clone()),
        request_chunks: request,
        request_over: request_over || body_read > policy.spec.max_body,
        request_complete: body_done,
        body_read,
        primary: session.response_written().map(|r| Box::new(r.clone())),
        primary_failed: failed,
        primary_ms: started.elapsed().as_secs_f64() * 1000.0,
        response,
        shadow_upstream: table.upstreams[hook.upstream].clone(),
        legacy_upstream: table.upstreams[table.legacy].clone(),
        request_id: request_id.cloned(),
        dry_run_header: table.settings.dry_run_header.clone(),
        policy: policy.clone(),
    };
    if lane.try_send(job).is_err() {
        policy.report.count(Count::Dropped);
    }
}

/// The complete request body from the captured chunks: after retries the chunks hold replays of
/// Pingora's retry buffer followed by the rest, so the body is the last `len` bytes.
pub(crate) fn request_body(chunks: Vec<Bytes>, len: usize) -> Option<Bytes> {
    let all = concat(chunks);
    (all.len() >= len).then(|| all.slice(all.len() - len..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_capture_keeps_small_bodies_and_hashes_large_ones() {
        let mut c = BodyCapture::default();
        c.push(&Bytes::from_static(b"hello "), 16, Oversize::Hash);
        c.push(&Bytes::from_static(b"world"), 16, Oversize::Hash);
        let b = c.finish();
        assert_eq!(&b.body[..], b"hello world");
        assert!(!b.truncated && b.digest.is_none());

        let mut c = BodyCapture::default();
        for _ in 0..10 {
            c.push(&Bytes::from_static(b"0123456789"), 16, Oversize::Hash);
        }
        let b = c.finish();
        assert!(b.truncated && b.body.is_empty());
        assert_eq!(b.digest, Some(BodyDigest::of("0123456789".repeat(10).as_bytes())));

        let mut c = BodyCapture::default();
        for _ in 0..10 {
            c.push(&Bytes::from_static(b"0123456789"), 16, Oversize::Skip);
        }
        let b = c.finish();
        assert!(b.truncated && b.digest.is_none() && b.len == 100);
    }

    #[test]
    fn request_body_is_the_suffix_after_retry_replays() {
        // attempt 1 saw "ab", "cd"; the retry replayed "abcd", then "ef" arrived
        let chunks = ["ab", "cd", "abcd", "ef"].map(|s| Bytes::from_static(s.as_bytes())).to_vec();
        assert_eq!(&request_body(chunks, 6).unwrap()[..], b"abcdef");
        assert_eq!(request_body(vec![Bytes::from_static(b"abc")], 3).unwrap(), Bytes::from_static(b"abc"));
        assert!(request_body(vec![], 0).unwrap().is_empty());
        assert!(request_body(vec![Bytes::from_static(b"ab")], 3).is_none());
    }
}

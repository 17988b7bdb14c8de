//! Request buffering, bounded (nginx's `proxy_request_buffering`, in memory and up to
//! [`BUFFER_BYTES`]): before the upstream is contacted, the start of an HTTP/1 request body is
//! read, so that a malformed chunked body is answered `400` and one over `max_body_bytes` `413`
//! while no upstream has seen a byte of the request.
//!
//! The body is read through Pingora (`read_request_body` in `request_filter`) into its retry
//! buffer, which Pingora sends upstream first (through `request_body_filter`, so shadow capture
//! and the body limit see it as usual) and again on a retry. That buffer holds 64 KiB and is
//! dropped whole when a read overflows it, so the reads are kept small: the edge's
//! [`HeadGuard`] hands over at most [`MAX_BODY_READ`] per read while a body is buffered (and with
//! a head), and reading stops once [`BUFFER_BYTES`] are in. A longer body streams on from there:
//! a framing error later in it fails the read, the upstream request is aborted, and the client
//! gets `400` if no response has begun (see [`is_framing_error`]).
//!
//! HTTP/2 requests have no HTTP/1 framing (h2 frames carry their own lengths) and upgrade
//! requests are not buffered.

use std::time::Instant;

use http::{header, HeaderValue};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::edge::framing::FramingError;
use crate::edge::head_guard::{HeadGuard, MAX_BODY_READ};
use crate::respond::respond_json;

/// Body bytes read before the upstream is contacted; a longer body streams on from there.
pub const BUFFER_BYTES: usize = 32 * 1024;

// The last read may bring MAX_BODY_READ more; all of it must fit Pingora's 64 KiB retry buffer.
const _: () = assert!(BUFFER_BYTES + MAX_BODY_READ < 64 * 1024);

/// Whether a request failed reading a malformed body (from the edge's framing checks, or from
/// Pingora's own chunked parser).
pub fn is_framing_error(e: &Error) -> bool {
    framing_error(e).is_some() || e.etype().as_str() == "InvalidChunk" || e.etype().as_str() == "InvalidTrailerEnd"
}

fn framing_error(e: &Error) -> Option<FramingError> {
    let cause: &(dyn std::error::Error + 'static) = e.root_cause();
    HeadGuard::framing_error_of(cause)
}

/// Why a buffered body was not sent upstream.
#[derive(Debug)]
enum Refusal {
    Malformed,
    TooLarge,
    TooSlow,
    /// The client went away (nothing to answer).
    Gone,
    /// The buffer overflowed after all (a bug: the reads are capped); nothing was forwarded.
    Overflow,
}

/// Buffers the start of the body when `on` (see the module comment); answers the client and
/// returns `true` when the request must not go upstream. The connection is then closed.
pub async fn refused(
    session: &mut Session,
    on: bool,
    limit: u64,
    deadline: Instant,
    request_id: Option<&HeaderValue>,
) -> bool {
    // HTTP/1 only: an HTTP/2 session has no stream of its own (and no HeadGuard)
    if !on || session.as_ref().stream().and_then(HeadGuard::of).is_none() {
        return false;
    }
    if session.is_upgrade_req() || session.as_mut().is_body_empty() {
        return false;
    }
    if let Some(guard) = session.as_ref().stream().and_then(HeadGuard::of) {
        guard.set_read_cap(MAX_BODY_READ);
    }
    let read = buffer(session, limit, deadline).await;
    if let Some(guard) = session.as_ref().stream().and_then(HeadGuard::of) {
        guard.set_read_cap(0);
    }
    let refusal = match read {
        Ok(()) => return false,
        Err(r) => r,
    };
    session.set_keepalive(None);
    let (status, code, message) = match refusal {
        Refusal::Malformed => (400, "bad_request", "the request body is malformed"),
        Refusal::TooLarge => (413, "payload_too_large", "the request body is larger than this route accepts"),
        Refusal::TooSlow => (408, "request_timeout", "the request was not received in time"),
        Refusal::Overflow => {
            tracing::error!("request body buffer overflowed: the request was refused");
            (500, "internal_error", "the gateway failed to buffer the request body")
        }
        Refusal::Gone => return true,
    };
    respond_json(session, status, code, message, request_id).await;
    true
}

async fn buffer(session: &mut Session, limit: u64, deadline: Instant) -> Result<(), Refusal> {
    if is_expect_continue(session.req_header()) {
        // the client waits for this before it sends the body; the upstream will see no Expect
        if session.write_continue_response().await.is_err() {
            return Err(Refusal::Gone);
        }
        session.req_header_mut().remove_header(&header::EXPECT);
    }
    session.as_mut().enable_retry_buffering();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let read = tokio::time::timeout(remaining, async {
        let mut read = 0u64;
        while !session.is_body_done() && read < BUFFER_BYTES as u64 {
            match session.read_request_body().await {
                Ok(Some(b)) => read += b.len() as u64,
                Ok(None) => break,
                Err(e) if is_framing_error(&e) => return Err(Refusal::Malformed),
                Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => return Err(Refusal::TooSlow),
                Err(_) => return Err(Refusal::Gone),
            }
            if read > limit {
                return Err(Refusal::TooLarge);
            }
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) if session.as_ref().retry_buffer_truncated() => Err(Refusal::Overflow),
        Ok(r) => r,
        Err(_) => Err(Refusal::TooSlow),
    }
}

fn is_expect_continue(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

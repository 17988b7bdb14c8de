//! [`HeadGuard`]: the client connection as Pingora sees it on HTTP/1, with a deadline on every
//! request head and HTTP/1 framing checked on every byte a client sends.
//!
//! Pingora reads a request head with a timeout per read (60 s) and no total: a client that sends
//! a byte now and then holds the connection for ever (slowloris). The guard watches the bytes
//! Pingora reads: the clock starts at accept for a connection's first request and at the first
//! byte of each later one, and stops at the end of the head. Past the deadline the guard writes
//! `408` and fails the read, so Pingora closes the connection.
//!
//! Every byte read goes through [`Framing`], which follows the requests on the connection: where
//! each head starts and ends, and how its body is framed. So every head is checked from its first
//! byte (the request line: what Pingora's parser would escape rather than refuse), pipelined ones
//! and ones after a body included, and chunked bodies are held to RFC 9112 (sizes, extensions,
//! CRLFs, trailers). The bytes before an invalid one are handed over; the invalid one and all
//! after it never are. The error comes with the next read of the request it is in:
//! - in a head (Pingora has no request to answer): the guard writes `400` and fails the read;
//! - in a body (Pingora parsed the head): the read fails with a [`FramingError`] inside an
//!   [`io::ErrorKind::InvalidData`] error, which the proxy answers with `400` and a close (before
//!   the upstream is contacted when the body is buffered, see `request_buffer`).
//!
//! A request's error never shows before the requests ahead of it on the connection are answered:
//! until Pingora reads that request, reads find nothing more (pipelined requests are answered in
//! order, then the bad one is refused).
//!
//! A head that comes in one read (nearly all) is passed through without a copy. One that comes
//! in pieces is held back until it is complete (see [`HeadGuard::release`]), so that Pingora,
//! which logs an error for every connection that ends while it holds part of a head, stays
//! quiet about slow or abandoned heads: the gateway counts and logs those itself.
//!
//! Between requests on a kept-alive connection (Pingora waits for the next head with no timeout
//! of its own) the guard closes the connection after `client_keepalive_timeout` of silence, the
//! way nginx's `keepalive_timeout` does: no response, and an end of stream to Pingora, which
//! takes one before any byte of a head as the client leaving. That clock starts only when a read
//! of the next head has to wait. The connection keeps one timer for it: armed at the first such
//! wait and moved on only when it fires before the silence it is measuring has lasted the
//! timeout (it was armed by an earlier wait), so the wait before each keep-alive request costs
//! no timer registration, and a request already there none at all.
//!
//! [`EdgeApp`](super::EdgeApp) first waits for the next request without Pingora
//! ([`HeadGuard::wait_next_head`]: the same timeout and the same count), so that an idle
//! connection holds no Pingora session; the idle clock above then runs only for a request whose
//! bytes came in with the previous one's.
//!
//! [`EdgeApp`](super::EdgeApp) re-arms the guard before Pingora reads each keep-alive request.
//! After an `Upgrade` request (or a head the proxy refuses for its framing) the stream is not
//! followed (it may be another protocol); if Pingora reads another request on it, the guard
//! follows again from there, but a head that bytes were passed into unfollowed is only timed, not
//! judged or held, and its deadline also ends at the first byte the gateway writes back.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::events::EdgeEvent;
use super::framing::{Framing, FramingError, Step};

/// The longest incomplete head held back from Pingora; a longer one is handed over as it comes
/// (Pingora and `max_header_bytes` then judge its size).
const MAX_HELD: usize = 64 * 1024;

/// The largest buffer [`HeadGuard::wait_next_head`] keeps between requests (the first read of
/// a keep-alive request is copied into it: a typical head fits, and the allocation is made once
/// per connection instead of once per request).
const AHEAD_KEPT: usize = 512;

/// The most body bytes handed over with the end of a head: whatever Pingora reads with a head it
/// gives back as the first piece of the body, and a buffered body must fit Pingora's retry
/// buffer (see `request_buffer`), so the first piece is kept as small as a capped read.
pub const MAX_BODY_READ: usize = 16 * 1024;

/// Why the guard ended a connection with a response of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The head was not complete by the deadline.
    HeaderTimeout,
    /// The head is invalid.
    Bad(FramingError),
}

impl Refusal {
    fn response(self) -> &'static [u8] {
        match self {
            Refusal::HeaderTimeout => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Refusal::Bad(_) => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        }
    }

    fn error(self) -> io::Error {
        match self {
            Refusal::HeaderTimeout => io::Error::new(io::ErrorKind::TimedOut, "client_header_timeout passed"),
            Refusal::Bad(e) => framing_error(e),
        }
    }
}

/// The error a read fails with at invalid bytes: [`FramingError`] inside
/// [`io::ErrorKind::InvalidData`] (see [`HeadGuard::framing_error_of`]).
fn framing_error(e: FramingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The refusal being written.
#[derive(Debug)]
struct Refusing {
    why: Refusal,
    written: usize,
    flushed: bool,
}

/// An invalid byte found ahead of what Pingora has read: the next read of request `index`
/// fails with it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    index: u64,
    error: FramingError,
}

/// What one read's bytes did to the framing.
struct Absorbed {
    /// How many of the bytes Pingora may have (all but those from an invalid byte or head on).
    keep: usize,
    /// Where the head Pingora is reading ended in them.
    head_end: Option<usize>,
    /// The request being read is invalid at these bytes: refuse now, hand nothing over.
    refuse_now: Option<FramingError>,
}

/// A client stream with a deadline on each request head and on the silence before each later
/// one, and HTTP/1 framing checked (see the module comment).
#[derive(Debug)]
pub struct HeadGuard {
    inner: Stream,
    /// `Duration::ZERO`: no deadline (the checks still run).
    timeout: Duration,
    /// Silence allowed before a kept-alive connection's next head (`Duration::ZERO`: no limit).
    keepalive_timeout: Duration,
    /// Pingora is reading request `request`'s head and it has not ended yet.
    reading_head: bool,
    /// Waiting for the first byte of a kept-alive connection's next head, under
    /// `keepalive_timeout` (see `idle_timer`).
    idle: bool,
    /// When the current wait for the next head's first byte began (a read of it had to wait).
    idle_since: Option<Instant>,
    /// The keep-alive timer, kept for the connection's life: its deadline may be an earlier
    /// wait's (then it fires early and is moved on, see [`HeadGuard::idle_expired`]).
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// The task `idle_timer` last registered to wake (a poll of it returned pending): while the
    /// timer has not fired, it will wake that task by its deadline, so a wait of the same task
    /// does not poll it again (see [`HeadGuard::idle_expired`]).
    idle_waker: Option<Waker>,
    /// Closed for silence: every read is an end of stream.
    idled_out: bool,
    /// The requests on the connection, followed on every byte read.
    framing: Framing,
    /// Index of the request Pingora is on (0: the connection's first).
    request: u64,
    /// When the head `framing` is in began, if it is a later request's than Pingora's.
    head_began: Option<Instant>,
    /// Bytes were passed through while `framing` was opaque.
    opaque_bytes: bool,
    /// An invalid byte ahead (see [`Pending`]).
    pending: Option<Pending>,
    /// When the head being read must be complete (`None` until its first byte, or no deadline).
    deadline: Option<Instant>,
    /// The head's deadline timer, registered only once a read of the head had to wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Hold the bytes of an incomplete head back from Pingora (see [`HeadGuard::release`]).
    hold: bool,
    /// There is a deadline: without one, Pingora's read of a held head would be one long read,
    /// which its own read timeout would end silently.
    may_hold: bool,
    /// The incomplete head held back, or bytes read past a head not handed over yet; kept
    /// (empty) for the connection's next slow head, freed while it waits for its next request.
    held: Vec<u8>,
    /// How much of `held` Pingora has been given.
    released: usize,
    /// What [`HeadGuard::wait_next_head`] read of the next request, to go through the guard's
    /// reads as if read from the client then (its allocation kept between requests, up to
    /// [`AHEAD_KEPT`]).
    ahead: Vec<u8>,
    /// Largest read handed over past a head (0: no cap); set while the proxy buffers a body.
    read_cap: AtomicUsize,
    refusing: Option<Refusing>,
}

impl HeadGuard {
    /// Guards a connection just accepted: its first head is due `timeout` from now; later heads
    /// `timeout` from their first byte, which may take `keepalive_timeout` to come.
    pub fn new(inner: Stream, timeout: Duration, keepalive_timeout: Duration) -> Self {
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        let may_hold = !timeout.is_zero();
        Self {
            inner,
            timeout,
            keepalive_timeout,
            reading_head: true,
            idle: false,
            idle_since: None,
            idle_timer: None,
            idle_waker: None,
            idled_out: false,
            framing: Framing::new(),
            request: 0,
            head_began: None,
            opaque_bytes: false,
            pending: None,
            deadline,
            timer: None,
            hold: may_hold,
            may_hold,
            held: Vec::new(),
            released: 0,
            ahead: Vec::new(),
            read_cap: AtomicUsize::new(0),
            refusing: None,
        }
    }

    /// The guard under a Pingora stream, if the stream is one.
    pub fn of(stream: &Stream) -> Option<&HeadGuard> {
        stream.as_any().downcast_ref::<HeadGuard>()
    }

    /// Caps each read handed over past a head at `cap` bytes (0: no cap): while a body is
    /// buffered, every piece Pingora returns stays small.
    pub fn set_read_cap(&self, cap: usize) {
        self.read_cap.store(cap, Ordering::Relaxed);
    }

    /// The [`FramingError`] a read failed with, if it failed at invalid bytes.
    pub fn framing_error_of(e: &(dyn std::error::Error + 'static)) -> Option<FramingError> {
        let io = e.downcast_ref::<io::Error>()?;
        io.get_ref()?.downcast_ref::<FramingError>().copied()
    }

    /// The next request is expected: its head may already be here (pipelined), begun, or not
    /// begun yet, when its clock starts at its first byte, which may take `keepalive_timeout`.
    pub fn rearm(&mut self) {
        self.request += 1;
        let mut checked = true;
        if self.framing.is_opaque() {
            checked = !std::mem::take(&mut self.opaque_bytes);
            self.framing.resume_at(self.request, checked);
        }
        self.reading_head = self.framing.heads_done() <= self.request;
        self.timer = None;
        self.deadline = None;
        self.idle = false;
        self.idle_since = None;
        self.hold = false;
        if !self.reading_head {
            return;
        }
        if self.framing.in_started_head() {
            // begun while the previous request was served: its deadline runs from its first byte
            let began = self.head_began.take().unwrap_or_else(Instant::now);
            self.deadline = (!self.timeout.is_zero()).then(|| began + self.timeout);
        } else {
            self.idle = !self.keepalive_timeout.is_zero();
            self.hold = self.may_hold && checked;
        }
    }

    /// Whether Pingora is to read a kept-alive connection's next request and no byte of it has
    /// been read yet (by the guard, so by Pingora): the first byte may be waited for before
    /// Pingora's session for the request is made (see [`HeadGuard::wait_next_head`]).
    pub fn before_next_head(&self) -> bool {
        self.request > 0
            && self.reading_head
            && !self.framing.is_opaque()
            && !self.framing.in_started_head()
            && self.released == self.held.len()
            && self.ahead.is_empty()
            && self.pending.is_none()
            && self.refusing.is_none()
            && !self.idled_out
    }

    /// Waits until the client sends the next request (`true`: what came is read ahead, and
    /// Pingora's reads get it through the guard's checks as if it came then), or leaves
    /// (`false`), or has been silent for `keepalive_timeout` (`false`, counted as when a read of
    /// the head times out: see [`HeadGuard::close_idle`]). Only after
    /// [`HeadGuard::before_next_head`].
    ///
    /// An idle kept-alive connection so holds no Pingora session: its request future (~13 KiB)
    /// and head buffer (4 KiB) are made once the client sends (`scale-bench.sh`, part `conns`).
    /// One read, as Pingora's own would be; the bytes are copied once more.
    pub async fn wait_next_head(&mut self) -> bool {
        self.held = Vec::new();
        let timed = !self.keepalive_timeout.is_zero();
        let read = std::future::poll_fn(|cx| {
            // on the stack of each poll, not in the future (which lives as long as the wait);
            // left uninitialised (the read writes what it fills): zeroing 2 KiB on each poll
            // (two or three per request) was ~400 instructions and 2 KiB of stores per request
            let mut first = [MaybeUninit::<u8>::uninit(); 2048];
            let mut buf = ReadBuf::uninit(&mut first);
            match Pin::new(&mut *self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(read) => Poll::Ready(Some(read.map(|()| {
                    // into the connection's small buffer, kept from the previous request
                    self.ahead.extend_from_slice(buf.filled());
                }))),
                // the connection's keep-alive timer, as for a wait inside Pingora: no timer
                // registration per request
                Poll::Pending if timed && self.idle_expired(cx) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        // the next wait measures its own silence
        self.idle_since = None;
        match read {
            None => {
                let _ = self.close_idle();
                false
            }
            Some(Ok(())) if !self.ahead.is_empty() => true,
            // an end of stream or a broken one, before any byte of a head: ended quietly, as
            // Pingora does
            _ => false,
        }
    }

    /// Reads from the client: what [`HeadGuard::wait_next_head`] read ahead first.
    fn poll_client(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.ahead.is_empty() {
            return Pin::new(&mut *self.inner).poll_read(cx, buf);
        }
        let n = buf.remaining().min(self.ahead.len());
        buf.put_slice(&self.ahead[..n]);
        if n == self.ahead.len() {
            // kept for the next request unless large (an idle connection holds it)
            if self.ahead.capacity() > AHEAD_KEPT {
                self.ahead = Vec::new();
            } else {
                self.ahead.clear();
            }
        } else {
            self.ahead.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Gives Pingora as much of the held bytes as `buf` takes (at most `cap`, when not 0).
    ///
    /// Held bytes make Pingora's silence possible: it logs an error for every connection that
    /// ends while it holds part of a head, and nothing when it had none. So a head read in
    /// several pieces is held here until it is complete, then handed over at once; a head that
    /// comes in one read (nearly all) is never copied.
    fn release(&mut self, buf: &mut ReadBuf<'_>, cap: usize) {
        let mut n = buf.remaining().min(self.held.len() - self.released);
        if cap > 0 {
            n = n.min(cap);
        }
        buf.put_slice(&self.held[self.released..self.released + n]);
        self.released += n;
        if self.released == self.held.len() {
            self.held.clear();
            self.released = 0;
        }
    }

    /// Follows the bytes just read (see [`Absorbed`]).
    fn absorb(&mut self, new: &[u8]) -> Absorbed {
        let mut off = 0;
        // where the head being scanned began in `new`, if it did
        let mut head_start = None;
        let mut head_end = None;
        loop {
            if self.framing.is_opaque() {
                self.opaque_bytes |= off < new.len();
                break;
            }
            match self.framing.step(&new[off..]) {
                Step::More => break,
                Step::HeadStart(n) => {
                    off += n;
                    head_start = Some(off);
                }
                Step::HeadEnd(n) => {
                    off += n;
                    head_start = None;
                    self.head_began = None;
                    if self.framing.heads_done() == self.request + 1 {
                        head_end = Some(off);
                    }
                }
                Step::Bad(n, error) => {
                    if !error.in_head() {
                        EdgeEvent::BadFraming.record(self.peer());
                    }
                    let index = self.framing.index();
                    let keep = if error.in_head() { head_start.unwrap_or(0) } else { off + n };
                    if index == self.request && (error.in_head() || (keep == 0 && self.held.is_empty())) {
                        return Absorbed { keep: 0, head_end: None, refuse_now: Some(error) };
                    }
                    self.pending = Some(Pending { index, error });
                    return Absorbed { keep, head_end, refuse_now: None };
                }
            }
        }
        if self.framing.index() > self.request && self.head_began.is_none() && self.framing.in_started_head() {
            self.head_began = Some(Instant::now());
        }
        Absorbed { keep: new.len(), head_end, refuse_now: None }
    }

    /// The error ahead, once Pingora reads the request it is in; until then nothing more comes.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(p) = self.pending else { return Poll::Ready(Ok(())) };
        if p.index > self.request {
            // the requests before it are being answered; this read is Pingora watching for a
            // close (or the next request's bytes), which ends with the response
            return Poll::Pending;
        }
        if p.error.in_head() {
            self.pending = None;
            return self.refuse(cx, Refusal::Bad(p.error));
        }
        Poll::Ready(Err(framing_error(p.error)))
    }

    /// Reads from the client, at most `cap` bytes when not 0.
    fn read_inner(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>, cap: usize) -> Poll<io::Result<()>> {
        if cap == 0 || buf.remaining() <= cap {
            return self.poll_client(cx, buf);
        }
        let mut capped = ReadBuf::new(buf.initialize_unfilled_to(cap));
        let read = self.poll_client(cx, &mut capped);
        let n = capped.filled().len();
        buf.advance(n);
        read
    }

    /// The client closed (or broke) the connection; a head it had begun is dropped.
    fn abandon(&mut self) {
        if self.framing.in_started_head() {
            EdgeEvent::HeadAbandoned.record(self.peer());
        }
        self.drop_held();
        self.end_head();
    }

    fn drop_held(&mut self) {
        self.held.clear();
        self.released = 0;
    }

    fn end_head(&mut self) {
        self.reading_head = false;
        self.idle = false;
        self.idle_since = None;
        self.deadline = None;
        self.timer = None;
    }

    /// Whether the deadline has passed; registers the timer with `cx` when it has not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else { return false };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Whether the connection has been silent for `keepalive_timeout` since a read of the next
    /// head first had to wait (that wait begins now if none had); registers the timer with `cx`
    /// when it has not.
    ///
    /// The timer is the connection's: a registration in tokio's timer wheel (and its removal) per
    /// keep-alive request was ~1k instructions. An earlier wait's deadline is sooner than this
    /// one's, so the timer may fire early; then, and only then, it is moved to this wait's.
    ///
    /// A timer already registered to wake this task by `due` (polled pending with coop budget
    /// left, not fired since) is not polled again: a poll (coop budget, waker registration) was ~120 instructions, two
    /// per keep-alive request. It wakes the task when it fires; that wake's poll finds it
    /// elapsed and takes the path below.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        let due = since + self.keepalive_timeout;
        if let (Some(timer), Some(waker)) = (&self.idle_timer, &self.idle_waker) {
            if timer.deadline() <= due && !timer.is_elapsed() && waker.will_wake(cx.waker()) {
                return false;
            }
        }
        let timer = self.idle_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            // a poll refused for want of the task's coop budget registers nothing (tokio wakes
            // the task to poll again): such a timer must be polled on the next wake, not skipped
            let had_budget = tokio::task::coop::has_budget_remaining();
            if timer.as_mut().poll(cx).is_pending() {
                if !had_budget {
                    self.idle_waker = None;
                } else if !self.idle_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    self.idle_waker = Some(cx.waker().clone());
                }
                return false;
            }
            if timer.deadline() >= due {
                return true;
            }
            timer.as_mut().reset(due);
        }
    }

    /// Ends a connection silent for `keepalive_timeout`: no response (nginx sends none), and an
    /// end of stream to Pingora, which ends the connection quietly when it has no byte of a head.
    fn close_idle(&mut self) -> Poll<io::Result<()>> {
        if !self.idled_out {
            self.idled_out = true;
            EdgeEvent::KeepaliveTimeout.record(self.peer());
        }
        Poll::Ready(Ok(()))
    }

    fn refuse(&mut self, cx: &mut Context<'_>, why: Refusal) -> Poll<io::Result<()>> {
        self.end_head();
        self.drop_held();
        let event = match why {
            Refusal::HeaderTimeout => EdgeEvent::HeaderTimeout,
            Refusal::Bad(_) => EdgeEvent::BadRequestLine,
        };
        event.record(self.peer());
        self.refusing = Some(Refusing { why, written: 0, flushed: false });
        self.poll_refusal(cx)
    }

    /// Writes the refusal (as far as the socket takes it), then fails the read.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(r) = self.refusing.as_mut() else { return Poll::Ready(Ok(())) };
        let response = r.why.response();
        while r.written < response.len() {
            match Pin::new(&mut *self.inner).poll_write(cx, &response[r.written..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) if n > 0 => r.written += n,
                Poll::Ready(_) => {
                    r.written = response.len();
                    r.flushed = true;
                }
            }
        }
        if !r.flushed {
            if Pin::new(&mut *self.inner).poll_flush(cx).is_pending() {
                return Poll::Pending;
            }
            r.flushed = true;
        }
        Poll::Ready(Err(r.why.error()))
    }

    fn peer(&self) -> Option<std::net::IpAddr> {
        self.inner.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet().map(|a| a.ip())))
    }

    /// Past the head Pingora is reading: bodies, pipelined requests, upgraded streams.
    fn poll_read_past_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let cap = self.read_cap.load(Ordering::Relaxed);
        let before = buf.filled().len();
        match self.read_inner(cx, buf, cap) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if buf.filled().len() == before {
            return Poll::Ready(Ok(()));
        }
        let absorbed = self.absorb(&buf.filled()[before..]);
        if let Some(e) = absorbed.refuse_now {
            buf.set_filled(before);
            if e.in_head() {
                return self.refuse(cx, Refusal::Bad(e));
            }
            return Poll::Ready(Err(framing_error(e)));
        }
        buf.set_filled(before + absorbed.keep);
        if absorbed.keep == 0 {
            return self.poll_pending(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return this.poll_refusal(cx);
        }
        if this.released < this.held.len() && !(this.reading_head && this.hold) {
            // the rest of a head, or what was read past one, handed over
            let cap = if this.reading_head { 0 } else { this.read_cap.load(Ordering::Relaxed) };
            this.release(buf, cap);
            return Poll::Ready(Ok(()));
        }
        if this.pending.is_some() {
            return this.poll_pending(cx);
        }
        if !this.reading_head {
            return this.poll_read_past_head(cx, buf);
        }
        if this.idle {
            if this.idled_out || (this.idle_since.is_some() && this.idle_expired(cx)) {
                return this.close_idle();
            }
        } else if this.timer.is_some() && this.expired(cx) {
            return this.refuse(cx, Refusal::HeaderTimeout);
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let before = buf.filled().len();
            match this.poll_client(cx, buf) {
                Poll::Pending => {
                    if this.idle {
                        if this.idle_expired(cx) {
                            return this.close_idle();
                        }
                        return Poll::Pending;
                    }
                    if this.expired(cx) {
                        return this.refuse(cx, Refusal::HeaderTimeout);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    this.abandon();
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => {}
            }
            if buf.filled().len() == before {
                // end of stream: Pingora sees none of a head it was not given
                this.abandon();
                return Poll::Ready(Ok(()));
            }
            if this.idle {
                // the next head has begun: its own deadline from here (the idle timer stays armed
                // for the next wait)
                this.idle = false;
                this.idle_since = None;
            }
            let absorbed = this.absorb(&buf.filled()[before..]);
            if let Some(e) = absorbed.refuse_now {
                // Pingora never sees the bytes (nor, so, the request)
                buf.set_filled(before);
                return this.refuse(cx, Refusal::Bad(e));
            }
            let keep = absorbed.keep;
            if let Some(end) = absorbed.head_end {
                this.end_head();
                if this.held.is_empty() && keep - end <= MAX_BODY_READ {
                    buf.set_filled(before + keep);
                    return Poll::Ready(Ok(()));
                }
                // the held head and what came after it: the head and the first piece of the
                // body now, the rest with the next reads
                let first = this.held.len() - this.released + end + MAX_BODY_READ;
                this.held.extend_from_slice(&buf.filled()[before..before + keep]);
                buf.set_filled(before);
                this.release(buf, first);
                return Poll::Ready(Ok(()));
            }
            buf.set_filled(before + keep);
            if this.deadline.is_none() && !this.timeout.is_zero() {
                this.deadline = Some(Instant::now() + this.timeout);
            }
            if this.hold && this.held.len() + keep <= MAX_HELD {
                this.held.extend_from_slice(&buf.filled()[before..]);
                buf.set_filled(before);
                continue;
            }
            if !this.held.is_empty() {
                // too long to hold: Pingora gets it now (and judges its size)
                this.hold = false;
                this.held.extend_from_slice(&buf.filled()[before..]);
                buf.set_filled(before);
                this.release(buf, 0);
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.reading_head {
            // Pingora answers only a request whose head it has parsed
            this.end_head();
        }
        Pin::new(&mut *this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.reading_head {
            this.end_head();
        }
        Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

// The rest of Pingora's `IO`: the connection's identity and digests are the inner stream's.

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
#[path = "head_guard_tests.rs"]
mod tests;

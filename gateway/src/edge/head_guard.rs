//! [`HeadGuard`]: the client connection as Pingora sees it on HTTP/1, with a deadline on every
//! request head.
//!
//! Pingora reads a request head with a timeout per read (60 s) and no total: a client that sends
//! a byte now and then holds the connection for ever (slowloris). The guard watches the bytes
//! Pingora reads: the clock starts at accept for a connection's first request and at the first
//! byte of each later one; the scan of [`HeadScanner`] stops it at the end of the head. Past the
//! deadline the guard writes `408` and fails the read, so Pingora closes the connection. Between
//! the end of a head and the next one (bodies, responses, upgraded streams) it only passes bytes
//! through.
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
//! of the next head has to wait, so a request already there costs no timer.
//!
//! [`EdgeApp`](super::EdgeApp) re-arms the guard before Pingora reads each keep-alive request.
//! When bytes were read past the previous head (a body, or a pipelined request Pingora already
//! has), the next scan may not start at a head's first byte: it then only looks for the end of
//! the head, neither holds bytes back nor judges the request line, and the deadline also ends at
//! the first byte the gateway writes back (Pingora only answers a request it has parsed).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
use super::head_scan::{HeadScanner, Scan};

/// The longest incomplete head held back from Pingora; a longer one is handed over as it comes
/// (Pingora and `max_header_bytes` then judge its size).
const MAX_HELD: usize = 64 * 1024;

/// Why the guard ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The head was not complete by the deadline.
    HeaderTimeout,
    /// The request line had a control character, DEL or a space in the target.
    BadRequestLine,
}

impl Refusal {
    fn response(self) -> &'static [u8] {
        match self {
            Refusal::HeaderTimeout => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Refusal::BadRequestLine => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        }
    }

    fn error(self) -> io::Error {
        match self {
            Refusal::HeaderTimeout => io::Error::new(io::ErrorKind::TimedOut, "client_header_timeout passed"),
            Refusal::BadRequestLine => io::Error::new(io::ErrorKind::InvalidData, "invalid byte in the request line"),
        }
    }
}

/// The refusal being written.
#[derive(Debug)]
struct Refusing {
    why: Refusal,
    written: usize,
    flushed: bool,
}

/// A client stream with a deadline on each request head and on the silence before each later
/// one (see the module comment).
#[derive(Debug)]
pub struct HeadGuard {
    inner: Stream,
    /// `Duration::ZERO`: no deadline (the request-line check still runs).
    timeout: Duration,
    /// Silence allowed before a kept-alive connection's next head (`Duration::ZERO`: no limit).
    keepalive_timeout: Duration,
    /// A head is expected or being read.
    reading_head: bool,
    /// Waiting for the first byte of a kept-alive connection's next head, under
    /// `keepalive_timeout`: `timer` (if set) is the idle timer, not the head's.
    idle: bool,
    /// Closed for silence: every read is an end of stream.
    idled_out: bool,
    scanner: HeadScanner,
    /// When the head being read must be complete (`None` until its first byte, or no deadline).
    deadline: Option<Instant>,
    /// Registered only once a read of the head (or, when `idle`, of its first byte) had to wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes were read after the current head ended.
    read_past_head: bool,
    /// Hold the bytes of an incomplete head back from Pingora (see [`HeadGuard::release`]).
    hold: bool,
    /// There is a deadline: without one, Pingora's read of a held head would be one long read,
    /// which its own read timeout would end silently.
    may_hold: bool,
    /// The incomplete head held back; kept (empty) for the connection's next slow head.
    held: Vec<u8>,
    /// How much of `held` Pingora has been given.
    released: usize,
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
            idled_out: false,
            scanner: HeadScanner::new(true),
            deadline,
            timer: None,
            read_past_head: false,
            hold: may_hold,
            may_hold,
            held: Vec::new(),
            released: 0,
            refusing: None,
        }
    }

    /// The next request head is expected: its clock starts at its first byte, which may take
    /// `keepalive_timeout`.
    pub fn rearm(&mut self) {
        self.reading_head = true;
        self.idle = !self.keepalive_timeout.is_zero();
        self.scanner = HeadScanner::new(!self.read_past_head);
        self.hold = self.may_hold && !self.read_past_head;
        self.read_past_head = false;
        self.deadline = None;
        self.timer = None;
    }

    /// Gives Pingora as much of the held head as `buf` takes.
    ///
    /// Held bytes make Pingora's silence possible: it logs an error for every connection that
    /// ends while it holds part of a head (a slowloris cut off, a client giving up), and nothing
    /// when it had none. So a head read in several pieces is held here until it is complete,
    /// then handed over at once; a head that comes in one read (nearly all) is never copied.
    fn release(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.held.len() - self.released);
        buf.put_slice(&self.held[self.released..self.released + n]);
        self.released += n;
        if self.released == self.held.len() {
            self.held.clear();
            self.released = 0;
        }
    }

    /// The client closed (or broke) the connection; a head it had begun is dropped.
    fn abandon(&mut self) {
        if self.scanner.started() {
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
    /// head first had to wait; registers the timer with `cx` when it has not.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let idle_for = self.keepalive_timeout;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle_for)));
        timer.as_mut().poll(cx).is_ready()
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
            Refusal::BadRequestLine => EdgeEvent::BadRequestLine,
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
}

impl AsyncRead for HeadGuard {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return this.poll_refusal(cx);
        }
        if this.released < this.held.len() && !(this.reading_head && this.hold) {
            // the rest of a head handed over
            this.release(buf);
            return Poll::Ready(Ok(()));
        }
        if !this.reading_head {
            let before = buf.filled().len();
            let read = Pin::new(&mut *this.inner).poll_read(cx, buf);
            this.read_past_head |= buf.filled().len() > before;
            return read;
        }
        if this.idle {
            if this.idled_out || (this.timer.is_some() && this.idle_expired(cx)) {
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
            match Pin::new(&mut *this.inner).poll_read(cx, buf) {
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
            let new = &buf.filled()[before..];
            if new.is_empty() {
                // end of stream: Pingora sees none of a head it was not given
                this.abandon();
                return Poll::Ready(Ok(()));
            }
            if this.idle {
                // the next head has begun: its own deadline from here
                this.idle = false;
                this.timer = None;
            }
            match this.scanner.feed(new) {
                Scan::Complete(n) => {
                    this.read_past_head = n < new.len();
                    this.end_head();
                    if !this.held.is_empty() {
                        this.held.extend_from_slice(new);
                        buf.set_filled(before);
                        this.release(buf);
                    }
                    return Poll::Ready(Ok(()));
                }
                Scan::Partial => {
                    if this.deadline.is_none() && !this.timeout.is_zero() {
                        this.deadline = Some(Instant::now() + this.timeout);
                    }
                    if this.hold && this.held.len() + new.len() <= MAX_HELD {
                        this.held.extend_from_slice(new);
                        buf.set_filled(before);
                        continue;
                    }
                    if !this.held.is_empty() {
                        // too long to hold: Pingora gets it now (and judges its size)
                        this.hold = false;
                        this.held.extend_from_slice(new);
                        buf.set_filled(before);
                        this.release(buf);
                    }
                    return Poll::Ready(Ok(()));
                }
                Scan::BadRequestLine(_) => {
                    // Pingora never sees the bytes (nor, so, the request)
                    buf.set_filled(before);
                    return this.refuse(cx, Refusal::BadRequestLine);
                }
            }
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
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const DEADLINE: Duration = Duration::from_secs(5);

    fn guarded() -> (HeadGuard, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        (HeadGuard::new(Box::new(server), DEADLINE, Duration::ZERO), client)
    }

    /// What the guard gives within `within` (`None`: nothing, it is still waiting).
    async fn read_within(g: &mut HeadGuard, within: Duration) -> Option<io::Result<Vec<u8>>> {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(within, g.read(&mut buf)).await.ok()?;
        Some(n.map(|n| buf[..n].to_vec()))
    }

    async fn answer(client: &mut DuplexStream) -> String {
        let mut buf = vec![0u8; 256];
        let n = client.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    const IDLE: Duration = Duration::from_secs(2);

    /// A guard with both deadlines, after one request answered: waiting for the next head.
    async fn kept_alive() -> (HeadGuard, DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut g, mut client) = (HeadGuard::new(Box::new(server), DEADLINE, IDLE), client);
        client.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap();
        g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
        g.rearm();
        (g, client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_kept_alive_connection_ends_at_the_idle_timeout_without_a_response() {
        let (mut g, mut client) = kept_alive().await;
        let started = Instant::now();
        let got = read_within(&mut g, IDLE * 3).await.expect("still waiting after the idle timeout").unwrap();
        assert_eq!(got, b"", "an end of stream, so Pingora closes quietly");
        assert!(started.elapsed() >= IDLE && started.elapsed() < IDLE + Duration::from_millis(10));
        assert_eq!(read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap(), b"", "and stays ended");
        drop(g);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "no 408 for an idle connection: {:?}", String::from_utf8_lossy(&rest));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_within_the_idle_timeout_is_read_and_its_head_has_its_own_deadline() {
        let (mut g, mut client) = kept_alive().await;
        assert!(read_within(&mut g, IDLE - Duration::from_millis(100)).await.is_none());
        client.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        assert_eq!(
            read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap(),
            b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        // a head begun just before the idle timeout is held to the head deadline, not cut at it
        g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
        g.rearm();
        assert!(read_within(&mut g, IDLE - Duration::from_millis(100)).await.is_none());
        let first_byte = Instant::now();
        client.write_all(b"GET /3 HTTP/1.1\r\n").await.unwrap();
        let err = read_within(&mut g, DEADLINE * 2).await.expect("held to the head deadline").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(first_byte.elapsed() >= DEADLINE, "cut off after {:?}", first_byte.elapsed());
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 408"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_already_there_costs_no_timer() {
        let (mut g, mut client) = kept_alive().await;
        client.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap();
        assert!(g.timer.is_none() && !g.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_bodies_and_responses_are_not_held_to_the_idle_timeout() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut g, mut client) = (HeadGuard::new(Box::new(server), DEADLINE, IDLE), client);
        // the first head: the head deadline from accept, not the idle timeout
        assert!(read_within(&mut g, IDLE * 2).await.is_none());
        client.write_all(b"POST /1 HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\n\r\n").await.unwrap();
        read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap();
        // a body trickled slower than the idle timeout
        assert!(read_within(&mut g, IDLE * 2).await.is_none());
        client.write_all(b"h").await.unwrap();
        assert_eq!(read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap(), b"h");
        // a response slower than the idle timeout (Pingora reads nothing from the client meanwhile)
        tokio::time::sleep(IDLE * 2).await;
        client.write_all(b"i").await.unwrap();
        assert_eq!(read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap(), b"i");
        g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        // after it, silence is held to the idle timeout
        g.rearm();
        assert_eq!(read_within(&mut g, IDLE * 2).await.unwrap().unwrap(), b"");
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_stream_is_not_held_to_the_idle_timeout() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut g, mut client) = (HeadGuard::new(Box::new(server), DEADLINE, IDLE), client);
        client.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
        read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap();
        g.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").await.unwrap();
        for _ in 0..3 {
            assert!(read_within(&mut g, IDLE * 2).await.is_none());
            client.write_all(b"\x81\x01x").await.unwrap();
            assert_eq!(read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap(), b"\x81\x01x");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_in_pieces_is_held_back_until_complete() {
        let (mut g, mut client) = guarded();
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        assert!(read_within(&mut g, Duration::from_secs(1)).await.is_none(), "half a head was handed over");
        client.write_all(b"st: a\r\n\r\nbody").await.unwrap();
        let got = read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_heads_pass_through_as_they_come() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut g, mut client) = (HeadGuard::new(Box::new(server), Duration::ZERO, Duration::ZERO), client);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        assert_eq!(read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap(), b"GET / HTTP/1.1\r\nHo");
        assert!(read_within(&mut g, Duration::from_secs(3600)).await.is_none(), "no deadline, no 408");
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_head_is_handed_over_in_order_through_a_small_buffer() {
        let (mut g, mut client) = guarded();
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "x-filler: 0123456789\r\n".repeat(20));
        let (a, b) = head.as_bytes().split_at(head.len() / 2);
        client.write_all(a).await.unwrap();
        let mut small = [0u8; 16];
        assert!(tokio::time::timeout(Duration::from_secs(1), g.read(&mut small)).await.is_err());
        client.write_all(b).await.unwrap();
        let mut got = Vec::new();
        while got.len() < head.len() {
            let n = g.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, head.as_bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_gets_408_at_the_deadline() {
        let (mut g, mut client) = guarded();
        let started = Instant::now();
        client.write_all(b"GET / HTTP/1.1\r\nx-slow: 1").await.unwrap();
        let err = read_within(&mut g, DEADLINE * 2).await.expect("cut off by the deadline").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= DEADLINE, "cut off after {:?}", started.elapsed());
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_control_character_in_the_target_gets_400_and_nothing_is_handed_over() {
        let (mut g, mut client) = guarded();
        client.write_all(b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let err = read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_giving_up_mid_head_is_an_end_of_stream_with_nothing_read() {
        let (mut g, mut client) = guarded();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        drop(client);
        assert_eq!(read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap(), b"");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_bodyless_request_the_next_head_is_checked_and_its_clock_starts_at_its_first_byte() {
        let (mut g, mut client) = guarded();
        client.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap();
        g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        g.rearm();
        // idle between requests is client_keepalive_timeout's (off here), not this deadline
        assert!(read_within(&mut g, DEADLINE * 3).await.is_none());
        let first_byte = Instant::now();
        client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
        let err = read_within(&mut g, DEADLINE * 2).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(first_byte.elapsed() >= DEADLINE && first_byte.elapsed() < DEADLINE * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_body_the_next_head_is_only_timed() {
        let (mut g, mut client) = guarded();
        client.write_all(b"POST /1 HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
        read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap();
        g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        g.rearm();
        // the bytes may be the rest of a pipelined head: passed through, not judged
        client.write_all(b"GET /a\x01b HTTP/1.1\r\n").await.unwrap();
        assert_eq!(read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap(), b"GET /a\x01b HTTP/1.1\r\n");
        let err = read_within(&mut g, DEADLINE * 2).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_and_upgraded_streams_are_not_timed() {
        let (mut g, mut client) = guarded();
        client.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
        read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap();
        g.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").await.unwrap();
        for _ in 0..4 {
            tokio::time::sleep(DEADLINE).await;
            client.write_all(b"\x81\x01x").await.unwrap();
            assert_eq!(read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap(), b"\x81\x01x");
        }
    }
}

//! [`HeadGuard`]: the client connection as Pingora sees it on HTTP/1, with a deadline on every
//! request head.
//!
//! Pingora reads a request head with a timeout per read (60 s) and no total: a client that sends
//! a byte now and then holds the connection for ever (slowloris). The guard watches the bytes
//! Pingora reads, without copying them: the clock starts at accept for a connection's first
//! request and at the first byte of each later one; the scan of [`HeadScanner`] stops it at the
//! end of the head. Past the deadline the guard writes `408` and fails the read, so Pingora
//! closes the connection. Between the end of a head and the next one (bodies, responses,
//! upgraded streams) it only passes bytes through.
//!
//! [`EdgeApp`](super::EdgeApp) re-arms the guard before Pingora reads each keep-alive request.
//! When bytes were read past the previous head (a body, or a pipelined request already taken
//! by Pingora), the next scan may not start at a head's first byte: it then looks only for the
//! end of the head and does not judge the request line, and the deadline also ends at the first
//! byte the gateway writes back (Pingora only answers a request whose head it has parsed).

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

use super::head_scan::{HeadScanner, Scan};
use super::EdgeEvent;

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

/// A client stream with a deadline on each request head (see the module comment).
#[derive(Debug)]
pub struct HeadGuard {
    inner: Stream,
    /// `Duration::ZERO`: no deadline (the request-line check still runs).
    timeout: Duration,
    /// A head is expected or being read.
    reading_head: bool,
    scanner: HeadScanner,
    /// When the head being read must be complete (`None` until its first byte, or no deadline).
    deadline: Option<Instant>,
    /// Registered only once a read of the head had to wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes were read after the current head ended.
    read_past_head: bool,
    refusing: Option<Refusing>,
}

impl HeadGuard {
    /// Guards a connection just accepted: its first head is due `timeout` from now.
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        Self {
            inner,
            timeout,
            reading_head: true,
            scanner: HeadScanner::new(true),
            deadline,
            timer: None,
            read_past_head: false,
            refusing: None,
        }
    }

    /// The next request head is expected: its clock starts at its first byte.
    pub fn rearm(&mut self) {
        self.reading_head = true;
        self.scanner = HeadScanner::new(!self.read_past_head);
        self.read_past_head = false;
        self.deadline = None;
        self.timer = None;
    }

    fn end_head(&mut self) {
        self.reading_head = false;
        self.deadline = None;
        self.timer = None;
    }

    /// Whether the deadline has passed; registers the timer with `cx` when it has not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else { return false };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).is_ready()
    }

    fn refuse(&mut self, cx: &mut Context<'_>, why: Refusal) -> Poll<io::Result<()>> {
        self.end_head();
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
        if !this.reading_head {
            if this.refusing.is_some() {
                return this.poll_refusal(cx);
            }
            let before = buf.filled().len();
            let read = Pin::new(&mut *this.inner).poll_read(cx, buf);
            this.read_past_head |= buf.filled().len() > before;
            return read;
        }
        if this.timer.is_some() && this.expired(cx) {
            return this.refuse(cx, Refusal::HeaderTimeout);
        }
        let before = buf.filled().len();
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    if this.scanner.started() {
                        EdgeEvent::HeadAbandoned.record(this.peer());
                    }
                    this.end_head();
                    return Poll::Ready(Ok(()));
                }
                match this.scanner.feed(new) {
                    Scan::Complete(n) => {
                        this.read_past_head = n < new.len();
                        this.end_head();
                    }
                    Scan::Partial => {
                        if this.deadline.is_none() && !this.timeout.is_zero() {
                            this.deadline = Some(Instant::now() + this.timeout);
                        }
                    }
                    Scan::BadRequestLine(_) => {
                        // Pingora never sees the bytes (nor, so, the request)
                        buf.set_filled(before);
                        return this.refuse(cx, Refusal::BadRequestLine);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.expired(cx) {
                    return this.refuse(cx, Refusal::HeaderTimeout);
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
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

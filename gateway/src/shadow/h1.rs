//! The mirror's HTTP/1.1 client for plain (no TLS, not h2c) endpoints: the request written and
//! the answer read inline, in the mirror's own future, over pooled keep-alive connections.
//!
//! Why not hyper-util's pooled client here (it still serves TLS and h2 endpoints,
//! [`super::client`]): hyper splits every request between the caller and a task per connection
//! that owns the socket, joined by channels, behind a pool keyed by scheme and authority. On a
//! mirror that is a wake-up of the connection task to write, another to read, a oneshot back to
//! the caller and the pool's checkout: callgrind put hyper and hyper-util at about half of a
//! mirror's ~40k instructions (docs/perf.md, "Shadow traffic"). A mirror needs none of what that
//! machinery is for (no streaming bodies, no pipelining, no upgrades): its request is complete
//! before it is sent, and its answer is read whole into a bounded capture. Pingora's own client
//! (`pingora::connectors`) spawns an idle-watch task per connection released to its pool, the
//! same per-request task we are removing. So: one buffer with the head (and a small body), one
//! write, reads into one buffer, `httparse` (hyper's and Pingora's parser) for the head and the
//! chunk sizes.
//!
//! Framing as RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when it is the last
//! transfer coding; else `Content-Length` (conflicting values are an error); else up to the end
//! of the connection (which is then not reused). A connection goes back to the pool only after
//! a complete HTTP/1.1 answer without `Connection: close` and with nothing read past it.
//!
//! A mirror is never delivered twice unless its method allows it (RFC 9110 §9.2.2, as hyper's
//! client). Before a pooled connection is reused it is checked without blocking: one the server
//! has closed (end of stream) or that has bytes nobody asked for is dropped and the next one (or
//! a new one) taken, so the usual case, a candidate's keep-alive timeout that closed an idle
//! connection, costs nothing. A pooled connection can still fail after the check: the server's
//! close racing our write, or a candidate that read the request and then closed (crashed)
//! without answering. The mirror is then sent once more on a new connection only when it cannot
//! have been received (writing it failed) or when its method is idempotent (GET, HEAD, OPTIONS,
//! TRACE, PUT, DELETE); a POST, PATCH or other write that may have been received is a failed
//! mirror (counted as a shadow error) saying so, not a second delivery. A new connection is
//! never retried. Connections are kept per shadow thread (a socket stays on the runtime whose
//! reactor it is registered with).

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{BodyCapture, CapturedBody};
use super::policy::Oversize;

/// Idle connections kept per endpoint, and for how long.
const MAX_IDLE: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer's head may not be larger, nor have more headers.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Bodies up to this size go in the head's write (one system call); larger ones follow it.
const INLINE_BODY: usize = 16 * 1024;
/// What one read asks for at least.
const READ_CHUNK: usize = 8 * 1024;

/// One plain HTTP/1.1 endpoint and its idle connections.
pub(crate) struct H1Endpoint {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    thread: ThreadId,
    since: Instant,
    stream: TcpStream,
}

/// A request as the mirror sends it: the head's parts (headers without hop-by-hop and framing
/// ones; the client adds `Content-Length`) and the whole body.
pub(crate) struct H1Request<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    /// Sent as `Host` when `headers` have none.
    pub authority: &'a str,
    /// Sent but for the names in `skip` and in `extra`.
    pub headers: &'a HeaderMap,
    pub skip: &'a [&'a str],
    /// Sent after `headers`, in place of any header of the same name.
    pub extra: &'a [(&'static str, &'a HeaderValue)],
    pub body: &'a Bytes,
}

/// An answer: status, the raw head (headers are parsed into a map only when asked for) and the
/// captured body.
pub(crate) struct H1Answer {
    pub status: u16,
    pub head: Bytes,
    pub body: CapturedBody,
}

/// An answer's headers: a map (hyper's, or the primary's), or the raw head read by the inline
/// client, parsed into a map only when a comparison or a sample needs it.
pub(crate) enum AnswerHeaders {
    Map(HeaderMap),
    Raw(Bytes),
}

impl AnswerHeaders {
    pub(crate) fn map(&self) -> std::borrow::Cow<'_, HeaderMap> {
        match self {
            AnswerHeaders::Map(m) => std::borrow::Cow::Borrowed(m),
            AnswerHeaders::Raw(head) => std::borrow::Cow::Owned(head_headers(head)),
        }
    }
}

/// The headers of a raw answer head (as [`H1Answer::head`]), in order.
pub(crate) fn head_headers(head: &[u8]) -> HeaderMap {
    let mut raw = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let mut map = HeaderMap::new();
    if httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, head, &mut raw).is_ok() {
        for h in resp.headers.iter() {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
                map.append(n, v);
            }
        }
    }
    map
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Why an exchange failed, and how far it got: whether the request may be sent again.
struct Failed {
    error: io::Error,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Writing the request's head failed: the server cannot have received all of it.
    Unsent,
    /// The request's head was written, then the connection ended (or failed) before any answer
    /// byte, or writing the body failed: the server may have received it, and even acted on it.
    SentUnanswered,
    /// Part of an answer was read, or it was invalid.
    Answering,
}

/// Methods a client may send again after a failure without asking (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

impl H1Endpoint {
    pub(crate) fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        H1Endpoint { addr, connect_timeout, idle: Mutex::new(Vec::new()) }
    }

    /// Sends `req` and reads the whole answer (its body captured up to `max`).
    pub(crate) async fn send(&self, req: H1Request<'_>, max: usize, oversize: Oversize) -> io::Result<H1Answer> {
        let (head, head_len, rest) = encode(&req);
        let head_only = req.method == Method::HEAD;
        if let Some(stream) = self.checkout() {
            match self.exchange(stream, (&head, head_len, rest), head_only, max, oversize).await {
                Ok(a) => return Ok(a),
                Err(Failed { stage: Stage::Unsent, .. }) => {} // not received: once more, new
                Err(Failed { stage: Stage::SentUnanswered, .. }) if idempotent(req.method) => {}
                Err(Failed { stage: Stage::SentUnanswered, error }) => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!(
                            "{error} (on a reused connection, after the request was written; a {} may \
                             have been received, so it is not sent again)",
                            req.method
                        ),
                    ))
                }
                Err(f) => return Err(f.error),
            }
        }
        let stream = self.connect().await?;
        self.exchange(stream, (&head, head_len, rest), head_only, max, oversize).await.map_err(|f| f.error)
    }

    /// The most recently used idle connection of this thread (the least likely to have been
    /// closed by the server) that is still open. Connections are pushed in the order they become
    /// idle, so expired ones are at the front: dropped from there when the oldest has expired.
    fn checkout(&self) -> Option<TcpStream> {
        let me = std::thread::current().id();
        loop {
            let stream = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.first().is_some_and(|i| i.since.elapsed() >= IDLE_TIMEOUT) {
                    let now = Instant::now();
                    idle.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
                }
                let i = idle.iter().rposition(|i| i.thread == me)?;
                idle.remove(i).stream
            };
            if still_open(&stream) {
                return Some(stream);
            }
        }
    }

    fn checkin(&self, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle { thread: std::thread::current().id(), since: Instant::now(), stream });
        }
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr)).await {
            Ok(s) => {
                let s = s?;
                s.set_nodelay(true)?;
                Ok(s)
            }
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {} timed out", self.addr))),
        }
    }

    async fn exchange(
        &self,
        mut stream: TcpStream,
        (head, head_len, rest): (&[u8], usize, Option<&Bytes>),
        head_only: bool,
        max: usize,
        oversize: Oversize,
    ) -> Result<H1Answer, Failed> {
        let early = |error| Failed { error, stage: Stage::SentUnanswered };
        let late = |error| Failed { error, stage: Stage::Answering };
        write_request(&mut stream, head, head_len, rest).await?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut first = true;
        // the head; 1xx interim answers (100 Continue) are skipped
        let parsed = loop {
            match parse_head(&buf, head_only).map_err(late)? {
                Some(p) if (100..200).contains(&p.status) => {
                    buf.advance(p.len);
                    continue;
                }
                Some(p) => break p,
                None if buf.len() >= MAX_HEAD => return Err(late(invalid("answer head too large"))),
                None => {}
            }
            let n = fill(&mut stream, &mut buf).await.map_err(|e| if first { early(e) } else { late(e) })?;
            if n == 0 {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a complete answer");
                return Err(if first { early(e) } else { late(e) });
            }
            first = false;
        };
        let head = buf.split_to(parsed.len).freeze();
        let mut cap = BodyCapture::default();
        let mut reusable = parsed.keep_alive;
        match parsed.framing {
            Framing::None => {}
            Framing::Length(mut left) => {
                while left > 0 {
                    if buf.is_empty() && fill(&mut stream, &mut buf).await.map_err(late)? == 0 {
                        return Err(late(eof("in the body")));
                    }
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    cap.push(&buf.split_to(n).freeze(), max, oversize);
                    left -= n as u64;
                }
            }
            Framing::Chunked => read_chunked(&mut stream, &mut buf, &mut cap, max, oversize).await.map_err(late)?,
            Framing::UntilClose => {
                reusable = false;
                loop {
                    if !buf.is_empty() {
                        cap.push(&buf.split().freeze(), max, oversize);
                    }
                    if fill(&mut stream, &mut buf).await.map_err(late)? == 0 {
                        break;
                    }
                }
            }
        }
        // bytes past the answer: the connection is out of step, not reused
        if reusable && buf.is_empty() {
            self.checkin(stream);
        }
        Ok(H1Answer { status: parsed.status, head, body: cap.finish() })
    }
}

/// Whether an idle connection may carry a request: not closed by the server, and with nothing
/// to read (bytes nobody asked for put it out of step). A non-blocking read: no system call at
/// all when the reactor has seen nothing since the last read found the socket empty, else one
/// `recv` that finds it empty (`WouldBlock`), closed (0) or not (bytes).
fn still_open(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(stream.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Reads a chunked body (RFC 9112 §7.1) into `cap`; trailers are read and dropped.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    cap: &mut BodyCapture,
    max: usize,
    oversize: Oversize,
) -> io::Result<()> {
    loop {
        // the chunk-size line
        let size = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    break size;
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                    if fill(stream, buf).await? == 0 {
                        return Err(eof("in a chunk size"));
                    }
                }
                _ => return Err(invalid("invalid chunk size line")),
            }
        };
        if size == 0 {
            // trailer fields up to the empty line
            loop {
                if let Some(i) = find_crlf(buf) {
                    let empty = i == 0;
                    buf.advance(i + 2);
                    if empty {
                        return Ok(());
                    }
                    continue;
                }
                if buf.len() >= MAX_HEAD {
                    return Err(invalid("trailers too large"));
                }
                if fill(stream, buf).await? == 0 {
                    return Err(eof("in the trailers"));
                }
            }
        }
        let mut left = size;
        while left > 0 {
            if buf.is_empty() && fill(stream, buf).await? == 0 {
                return Err(eof("in a chunk"));
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            cap.push(&buf.split_to(n).freeze(), max, oversize);
            left -= n as u64;
        }
        while buf.len() < 2 {
            if fill(stream, buf).await? == 0 {
                return Err(eof("after a chunk"));
            }
        }
        if &buf[..2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        buf.advance(2);
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn eof(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("connection closed {what}"))
}

/// The request's head (and its body when small) in one buffer, the head's length in it, and the
/// body to write after it when it is not in there.
fn encode<'a>(req: &H1Request<'a>) -> (Vec<u8>, usize, Option<&'a Bytes>) {
    let body = req.body;
    let inline = body.len() <= INLINE_BODY;
    let mut b = Vec::with_capacity(256 + if inline { body.len() } else { 0 });
    b.extend_from_slice(req.method.as_str().as_bytes());
    b.push(b' ');
    b.extend_from_slice(req.path_and_query.as_bytes());
    b.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = false;
    for (k, v) in req.headers.iter() {
        let name = k.as_str();
        if req.skip.contains(&name) || req.extra.iter().any(|(n, _)| *n == name) {
            continue;
        }
        host |= k == http::header::HOST;
        b.extend_from_slice(k.as_str().as_bytes());
        b.extend_from_slice(b": ");
        b.extend_from_slice(v.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    for (k, v) in req.extra {
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(b": ");
        b.extend_from_slice(v.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    if !host {
        b.extend_from_slice(b"host: ");
        b.extend_from_slice(req.authority.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    // as hyper does: a length for any body, and 0 for an empty one of a method that has a body
    let has_body = !matches!(
        *req.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT
    );
    if !body.is_empty() || has_body {
        b.extend_from_slice(b"content-length: ");
        b.extend_from_slice(body.len().to_string().as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"\r\n");
    let head_len = b.len();
    if inline {
        b.extend_from_slice(body);
        (b, head_len, None)
    } else {
        (b, head_len, Some(body))
    }
}

/// Writes a request: `buf` (its head, the first `head_len` bytes, and a small body), then
/// `rest`. A failed write is [`Stage::Unsent`] only while the head is not all written: a server
/// may act on a complete head before it has read the body (answer early, stream it) and then
/// close on the rest, so a failure after the head is [`Stage::SentUnanswered`].
async fn write_request(
    stream: &mut TcpStream,
    buf: &[u8],
    head_len: usize,
    rest: Option<&Bytes>,
) -> Result<(), Failed> {
    let mut written = 0;
    for mut part in [buf, rest.map_or(&[][..], |b| &b[..])] {
        while !part.is_empty() {
            let stage = if written >= head_len { Stage::SentUnanswered } else { Stage::Unsent };
            match stream.write(part).await {
                Ok(0) => return Err(Failed { error: io::ErrorKind::WriteZero.into(), stage }),
                Ok(n) => {
                    part = &part[n..];
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(Failed { error, stage }),
            }
        }
    }
    Ok(())
}

struct ParsedHead {
    len: usize,
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

/// The answer's head when `buf` holds all of it, with its framing (RFC 9112 §6.3).
fn parse_head(buf: &[u8], head_only: bool) -> io::Result<Option<ParsedHead>> {
    if buf.is_empty() {
        return Ok(None);
    }
    // not zeroed first: 128 headers are 4 KiB to clear, more than parsing a small head
    let mut raw = [MaybeUninit::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&format!("invalid answer head: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let mut keep_alive = resp.version == Some(1);
    let (mut coded, mut chunked, mut length): (bool, bool, Option<u64>) = (false, false, None);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            // chunked only when it is the last coding
            chunked = h.value.rsplit(|&c| c == b',').next().map(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                == Some(true);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|s| s.trim().parse::<u64>().ok());
            match (v, length) {
                (None, _) => return Err(invalid("invalid Content-Length")),
                (Some(v), Some(l)) if v != l => return Err(invalid("conflicting Content-Length")),
                (v, _) => length = v,
            }
        } else if h.name.eq_ignore_ascii_case("connection")
            && h.value.split(|&c| c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        }
    }
    let framing = if head_only || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if coded {
        // a transfer coding that is not chunked last: the body ends with the connection, whatever
        // a Content-Length says (RFC 9112 §6.3, rule 4)
        Framing::UntilClose
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    Ok(Some(ParsedHead { len, status, framing, keep_alive }))
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next scripted answer (whole
    /// bytes), closing the connection after an answer marked `close`; an empty answer marked
    /// `close` reads the request and closes without answering. Counts connections, and those it
    /// has closed; keeps the requests it read.
    struct Script {
        addr: SocketAddr,
        conns: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<u8>>>,
    }

    impl Script {
        fn requests(&self, method: &str) -> usize {
            let seen = self.seen.lock().unwrap();
            let line = format!("{method} /x?y=1 HTTP/1.1\r\n");
            seen.windows(line.len()).filter(|w| *w == line.as_bytes()).count()
        }

        /// Until the server has closed `n` connections (polled, with a deadline).
        async fn wait_closed(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.closed.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "the server did not close {n} connections");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    async fn scripted(answers: Vec<(&'static [u8], bool)>) -> Script {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, d, s) = (conns.clone(), closed.clone(), seen.clone());
        tokio::spawn(async move {
            let mut next = 0;
            loop {
                let (mut sock, _) = l.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                loop {
                    // one request: its head, then as many body bytes as its Content-Length says
                    let req = strangler_support::raw_http::read_request(&mut sock).await.unwrap_or_default();
                    if req.is_empty() || next >= answers.len() {
                        break;
                    }
                    s.lock().unwrap().extend_from_slice(&req);
                    let (a, close) = answers[next];
                    next += 1;
                    sock.write_all(a).await.unwrap();
                    if close {
                        break;
                    }
                }
                drop(sock);
                d.fetch_add(1, Ordering::SeqCst);
            }
        });
        Script { addr, conns, closed, seen }
    }

    async fn get(ep: &H1Endpoint, method: &Method) -> io::Result<H1Answer> {
        let headers = HeaderMap::new();
        let v = HeaderValue::from_static("r-1");
        let body = if *method == Method::POST { Bytes::from_static(b"{\"n\":1}") } else { Bytes::new() };
        let r = H1Request {
            method,
            path_and_query: "/x?y=1",
            authority: "svc.local:80",
            headers: &headers,
            skip: &[],
            extra: &[("x-request-id", &v)],
            body: &body,
        };
        ep.send(r, 1 << 20, Oversize::Hash).await
    }

    #[tokio::test]
    async fn reads_each_framing_and_reuses_the_connection() {
        let script = scripted(vec![
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello", false),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: t\r\n\r\n", false),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", false), // HEAD: no body follows
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true),
        ])
        .await;
        let ep = H1Endpoint::new(script.addr, Duration::from_secs(2));
        let a = get(&ep, &Method::GET).await.unwrap();
        assert_eq!((a.status, &a.body.body[..]), (200, &b"hello"[..]));
        assert_eq!(head_headers(&a.head).get("x-a").unwrap(), "1");
        let a = get(&ep, &Method::GET).await.unwrap();
        assert_eq!((a.status, &a.body.body[..]), (201, &b"abcde"[..]), "chunked, after a 100 Continue");
        let a = get(&ep, &Method::GET).await.unwrap();
        assert_eq!((a.status, a.body.len), (204, 0));
        let a = get(&ep, &Method::HEAD).await.unwrap();
        assert_eq!((a.status, a.body.len), (200, 0), "a HEAD answer has no body whatever its length");
        let a = get(&ep, &Method::GET).await.unwrap();
        assert_eq!((a.status, &a.body.body[..]), (200, &b"until the end"[..]));
        assert_eq!(script.conns.load(Ordering::SeqCst), 1, "one kept-alive connection for all five");
        assert!(ep.idle.lock().unwrap().is_empty(), "a body read to the close is not pooled");
        let seen = String::from_utf8(script.seen.lock().unwrap().clone()).unwrap();
        assert!(seen.starts_with("GET /x?y=1 HTTP/1.1\r\nx-request-id: r-1\r\nhost: svc.local:80\r\n\r\n"), "{seen}");
        assert!(!seen.contains("content-length"), "a GET without a body has no length: {seen}");
    }

    /// A pooled connection the server closed while idle is seen closed before it is used: the
    /// request goes on a new one, a POST too (nothing was received).
    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        for method in [Method::GET, Method::POST] {
            let script = scripted(vec![
                (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", true), // closes after answering
                (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", false),
            ])
            .await;
            let ep = H1Endpoint::new(script.addr, Duration::from_secs(2));
            assert_eq!(&get(&ep, &method).await.unwrap().body.body[..], b"a");
            assert_eq!(ep.idle.lock().unwrap().len(), 1, "pooled: the answer did not say close");
            script.wait_closed(1).await;
            assert_eq!(&get(&ep, &method).await.unwrap().body.body[..], b"b", "{method}");
            assert_eq!(script.conns.load(Ordering::SeqCst), 2);
            assert_eq!(script.requests(method.as_str()), 2, "{method}: each request received once");
        }
    }

    /// A candidate that reads a request on a pooled connection and closes without answering (it
    /// crashed, or its keep-alive timeout raced our write) may have acted on it: a POST is a
    /// failed mirror, received exactly once; a GET is sent once more on a new connection.
    #[tokio::test]
    async fn a_request_received_and_unanswered_is_resent_only_when_idempotent() {
        for method in [Method::POST, Method::GET] {
            let script = scripted(vec![
                (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", false),
                (b"", true), // reads the second request, closes without answering
                (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain", false),
            ])
            .await;
            let ep = H1Endpoint::new(script.addr, Duration::from_secs(2));
            assert_eq!(&get(&ep, &method).await.unwrap().body.body[..], b"a");
            let second = get(&ep, &method).await;
            if method == Method::POST {
                let e = second.err().expect("a POST that may have been received is an error");
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                assert!(e.to_string().contains("a POST may have been received, so it is not sent again"), "{e}");
                assert_eq!(script.requests("POST"), 2, "the second POST received exactly once");
                assert_eq!(script.conns.load(Ordering::SeqCst), 1, "no new connection");
            } else {
                assert_eq!(&second.unwrap().body.body[..], b"again", "a GET is sent again");
                assert_eq!(script.requests("GET"), 3);
                assert_eq!(script.conns.load(Ordering::SeqCst), 2);
            }
        }
    }

    /// A candidate that reads a large request's head on a pooled connection and closes without
    /// reading its body (it answered early, or acted on the head and crashed): our write of the
    /// body fails, but the head was received, so a POST is a failed mirror, received exactly
    /// once; a PUT is sent once more on a new connection.
    #[tokio::test]
    async fn a_body_failing_after_its_head_was_written_is_resent_only_when_idempotent() {
        for method in [Method::POST, Method::PUT] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let heads = Arc::new(AtomicUsize::new(0));
            let h = heads.clone();
            tokio::spawn(async move {
                let mut first = true;
                loop {
                    let (mut sock, _) = l.accept().await.unwrap();
                    if std::mem::replace(&mut first, false) {
                        strangler_support::raw_http::read_request(&mut sock).await.unwrap();
                        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na").await.unwrap();
                    }
                    // the next request's head only, then close with its body unread (a reset)
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if got.starts_with(b"POST ") || got.starts_with(b"PUT ") {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            let ep = H1Endpoint::new(addr, Duration::from_secs(2));
            assert_eq!(&get(&ep, &Method::GET).await.unwrap().body.body[..], b"a");
            assert_eq!(ep.idle.lock().unwrap().len(), 1, "pooled");
            let (headers, big) = (HeaderMap::new(), Bytes::from(vec![b'x'; 16 << 20]));
            let r = H1Request {
                method: &method,
                path_and_query: "/x",
                authority: "svc.local:80",
                headers: &headers,
                skip: &[],
                extra: &[],
                body: &big,
            };
            let sent = ep.send(r, 1 << 20, Oversize::Hash).await;
            let e = sent.err().expect("the body's write fails, then the retry's too");
            if method == Method::POST {
                assert!(e.to_string().contains("a POST may have been received, so it is not sent again"), "{e}");
                assert_eq!(heads.load(Ordering::SeqCst), 1, "the POST's head received exactly once");
            } else {
                assert_eq!(heads.load(Ordering::SeqCst), 2, "a PUT is sent again");
            }
        }
    }

    #[tokio::test]
    async fn bad_answers_are_errors_and_not_pooled() {
        let script = scripted(vec![
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nab", false),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", false),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort", true),
        ])
        .await;
        let ep = H1Endpoint::new(script.addr, Duration::from_secs(2));
        for want in ["conflicting Content-Length", "invalid chunk size", "closed in the body"] {
            let e = get(&ep, &Method::GET).await.err().expect("an error");
            assert!(e.to_string().contains(want), "{e} (wanted {want})");
            assert!(ep.idle.lock().unwrap().is_empty());
        }
    }

    #[test]
    fn requests_with_bodies_carry_their_length() {
        let headers = HeaderMap::from_iter([
            (http::header::HOST, HeaderValue::from_static("a.example")),
            (http::header::CONNECTION, HeaderValue::from_static("close")),
            (HeaderName::from_static("x-request-id"), HeaderValue::from_static("client-chosen")),
        ]);
        let id = HeaderValue::from_static("ours");
        for (method, body, want) in [
            (Method::POST, Bytes::from_static(b"{}"), Some("2")),
            (Method::POST, Bytes::new(), Some("0")),
            (Method::GET, Bytes::new(), None),
        ] {
            let r = H1Request {
                method: &method,
                path_and_query: "/",
                authority: "ignored:1",
                headers: &headers,
                skip: &["connection"],
                extra: &[("x-request-id", &id)],
                body: &body,
            };
            let (head, head_len, rest) = encode(&r);
            assert!(rest.is_none());
            let text = String::from_utf8(head).unwrap();
            assert!(text.contains("host: a.example\r\n") && !text.contains("ignored"), "{text}");
            assert!(!text.contains("connection") && !text.contains("client-chosen"), "{text}");
            assert!(text.contains("x-request-id: ours\r\n"), "{text}");
            match want {
                Some(n) => assert!(text.contains(&format!("content-length: {n}\r\n\r\n")), "{text}"),
                None => assert!(!text.contains("content-length"), "{text}"),
            }
            assert!(text.ends_with(std::str::from_utf8(&body).unwrap()));
            assert!(text[..head_len].ends_with("\r\n\r\n") && text.len() == head_len + body.len(), "{text}");
        }
        let big = Bytes::from(vec![b'x'; INLINE_BODY + 1]);
        let method = Method::PUT;
        let r = H1Request {
            method: &method,
            path_and_query: "/",
            authority: "a:1",
            headers: &headers,
            skip: &[],
            extra: &[],
            body: &big,
        };
        let (head, head_len, rest) = encode(&r);
        assert_eq!(rest.map(Bytes::len), Some(INLINE_BODY + 1), "a large body is written after the head");
        assert_eq!(head_len, head.len());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |head: &str, head_only: bool| {
            parse_head(head.as_bytes(), head_only).unwrap().map(|p| (p.framing, p.keep_alive)).unwrap()
        };
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(framing(&format!("{ok}content-length: 5\r\n\r\n"), false), (Framing::Length(5), true));
        assert_eq!(framing(&format!("{ok}content-length: 5\r\n\r\n"), true), (Framing::None, true));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n", false).0, Framing::None);
        assert_eq!(
            framing(&format!("{ok}transfer-encoding: gzip, chunked\r\ncontent-length: 5\r\n\r\n"), false).0,
            Framing::Chunked
        );
        assert_eq!(
            framing(&format!("{ok}transfer-encoding: chunked, gzip\r\ncontent-length: 5\r\n\r\n"), false).0,
            Framing::UntilClose,
            "a coding that is not chunked last ends with the connection, not at the Content-Length"
        );
        assert_eq!(framing(&format!("{ok}connection: keep-alive, close\r\n\r\n"), false), (Framing::UntilClose, false));
        assert_eq!(framing("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false), (Framing::Length(0), false));
        assert!(parse_head(format!("{ok}content-length: 1\r\ncontent-length: 2\r\n\r\n").as_bytes(), false).is_err());
        assert!(parse_head(ok.as_bytes(), false).unwrap().is_none(), "a partial head");
    }
}

//! Raw HTTP/1 over sockets, for tests that must send what no HTTP client would: a recording
//! backend that keeps every byte it receives, and a client side that reads responses off the wire
//! and watches for the gateway closing the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};

/// How long an exchange waits for the responses it expects.
pub const RESPONSE_WITHIN: Duration = Duration::from_secs(3);
/// After the responses, how long an exchange waits for the gateway to close the connection.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The recording backend

/// A raw TCP backend that keeps every byte it receives (one buffer per connection) and answers
/// each request it can frame with `200` and the request target as the body.
pub struct Recorder {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let idx = {
                    let mut c = connections.lock().unwrap();
                    c.push(Vec::new());
                    c.len() - 1
                };
                tokio::spawn(serve(stream, idx, Arc::clone(&connections)));
            }
        });
        Recorder { addr, received }
    }

    /// Whether any connection carried `marker`.
    pub fn saw(&self, marker: &str) -> bool {
        self.line_with(marker).is_some()
    }

    /// The first line (escaped) the backend received with `marker` in it.
    pub fn line_with(&self, marker: &str) -> Option<String> {
        self.received.lock().unwrap().iter().find_map(|c| {
            let at = find(c, marker.as_bytes())?;
            let start = c[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let end = find(&c[at..], b"\r\n").map_or(c.len(), |e| at + e);
            Some(c[start..end].escape_ascii().to_string())
        })
    }

    /// The body (chunked coding removed) of the first complete request whose target has `marker`.
    pub fn body_of(&self, marker: &str) -> Option<Vec<u8>> {
        self.received.lock().unwrap().iter().find_map(|c| {
            let mut rest = &c[..];
            while let Some((len, target)) = frame_request(rest) {
                if find(&target, marker.as_bytes()).is_some() {
                    let head_end = find(rest, b"\r\n\r\n")? + 4;
                    let head = String::from_utf8_lossy(&rest[..head_end]);
                    let body = &rest[head_end..len];
                    let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                    return if chunked { dechunk(body) } else { Some(body.to_vec()) };
                }
                rest = &rest[len..];
            }
            None
        })
    }
}

pub async fn serve(mut stream: TcpStream, idx: usize, received: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        received.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        while let Some((len, target)) = frame_request(&pending) {
            pending.drain(..len);
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n", target.len());
            if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&target).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the first complete request in `buf` and its target; `None` while incomplete
/// (or unframeable: the recorder then never answers, which the gateway's deadline handles).
pub fn frame_request(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let target = head.split("\r\n").next()?.split(' ').nth(1).unwrap_or("").as_bytes().to_vec();
    let body = &buf[head_end..];
    let body_len = if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        chunked_len(body)?
    } else {
        header(&head, "content-length").map_or(Some(0), |v| v.parse().ok())?
    };
    (body.len() >= body_len).then_some((head_end + body_len, target))
}

/// The length of a complete chunked body (trailers included) at the start of `body`.
pub fn chunked_len(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&body[at..], b"\r\n")?;
        let line = String::from_utf8_lossy(&body[at..line_end]);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            loop {
                let end = at + find(&body[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if body.len() < at {
            return None;
        }
    }
}

/// The data of a complete chunked body (extensions and trailers dropped).
pub fn dechunk(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&body[at..], b"\r\n")?;
        let line = String::from_utf8_lossy(&body[at..line_end]);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(at..at + size)?);
        at += size + 2;
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first value of header `name` in a head (request or status line first).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

// ---------------------------------------------------------------------------------------------
// The client side

/// One response read off the wire.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The complete responses at the start of `buf`; a response without a length ends at `eof`.
pub fn parse_responses(buf: &[u8], eof: bool) -> Vec<Response> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(end) = find(&buf[at..], b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[at..at + end]).into_owned();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let start = at + end + 4;
        let rest = &buf[start..];
        let len = if header(&head, "transfer-encoding").is_some() {
            chunked_len(rest)
        } else if let Some(cl) = header(&head, "content-length") {
            cl.parse().ok().filter(|cl| rest.len() >= *cl)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Some(0)
        } else if eof {
            Some(rest.len())
        } else {
            None
        };
        let Some(len) = len else { break };
        out.push(Response { status, body: rest[..len].to_vec() });
        at = start + len;
    }
    out
}

/// What the gateway did with one connection's bytes.
pub struct Outcome {
    pub responses: Vec<Response>,
    /// The gateway closed the connection (EOF or reset).
    pub closed: bool,
}

/// Reads until `expected` responses are complete, the peer closes, or `deadline`; returns whether
/// the peer closed.
pub async fn read_responses(stream: &mut TcpStream, buf: &mut Vec<u8>, expected: usize, deadline: Instant) -> bool {
    while parse_responses(buf, false).len() < expected {
        match timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Whether the peer closes the connection within `within` (bytes it sends meanwhile go to `buf`).
pub async fn wait_closed(stream: &mut TcpStream, buf: &mut Vec<u8>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Sends `request` on a fresh connection, reads up to `expected` responses, then watches whether
/// the gateway closes the connection.
pub async fn exchange(port: u16, request: &[u8], expected: usize) -> Outcome {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The gateway may answer and close before it has read everything: a failed write is part of
    // the outcome, not an error of the test.
    let _ = timeout(RESPONSE_WITHIN, stream.write_all(request)).await;
    let mut buf = Vec::new();
    let mut closed = read_responses(&mut stream, &mut buf, expected, Instant::now() + RESPONSE_WITHIN).await;
    if !closed {
        closed = wait_closed(&mut stream, &mut buf, CLOSE_WITHIN).await;
    }
    Outcome { responses: parse_responses(&buf, closed), closed }
}

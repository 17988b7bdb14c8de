//! The gateway as an edge, over raw sockets against the real binary: slow request heads
//! (slowloris) are cut off at `[gateway] client_header_timeout` with 408, and the connections one
//! client address holds open are capped at `max_connections_per_client` (503). Neither a
//! trickled request nor one over the cap reaches the backend (a [`Recorder`]); bodies and
//! keep-alive idle time are not held to the head deadline; and Pingora logs no error for a head
//! cut off or abandoned (the gateway counts and logs those itself). A kept-alive connection silent
//! between requests is closed at `client_keepalive_timeout`, quietly, and nothing else is.

mod common;

use std::time::Duration;

use common::raw_http::{exchange, parse_responses, read_responses, Recorder, RESPONSE_WITHIN};
use common::{dead_addr, upstreams, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Slow request heads (slowloris)

/// How long nginx lets a client take over its request head (`client_header_timeout`'s default):
/// the gateway's default must be no more lenient.
const DEFAULT_HEADER_DEADLINE: Duration = Duration::from_secs(60);
/// The deadline set in the tests of `[gateway] client_header_timeout`.
const CONFIGURED_HEADER_DEADLINE: Duration = Duration::from_secs(2);
/// Timer granularity and scheduling: the close may come this much after the deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);
/// A slowloris client sends one byte this often, so no per-read timeout ever fires.
const TRICKLE_EVERY: Duration = Duration::from_millis(500);

/// Sends `start`, then a never-ending header block one byte every [`TRICKLE_EVERY`]. Returns
/// when the gateway closed the connection (`None` if it still had not after `give_up`) and what
/// it answered (responses to complete requests in `start` included).
async fn trickle(stream: TcpStream, start: &[u8], give_up: Duration) -> (Option<Duration>, String) {
    let started = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let _ = wr.write_all(start).await;
    let filler = b"x-slow: 1\r\n";
    let mut tick = tokio::time::interval(TRICKLE_EVERY);
    let mut buf = Vec::new();
    let mut sent = 0;
    let closed = loop {
        if started.elapsed() > give_up {
            break None;
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => {
                if matches!(r, Ok(0) | Err(_)) {
                    break Some(started.elapsed());
                }
            }
            _ = tick.tick() => {
                if wr.write_all(&filler[sent % filler.len()..][..1]).await.is_err() {
                    break Some(started.elapsed());
                }
                sent += 1;
            }
        }
    };
    (closed, String::from_utf8_lossy(&buf).into_owned())
}

const SLOW_HEAD: &[u8] = b"GET /case-slow/bad HTTP/1.1\r\nHost: gw.test\r\n";

async fn assert_slowloris_cut_off(extra_config: &str, deadline: Duration, at_least: Duration) {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&format!("{extra_config}{}", upstreams(recorder.addr, dead_addr())));
    let stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let (closed, answer) = trickle(stream, SLOW_HEAD, deadline + DEADLINE_SLACK).await;
    let Some(after) = closed else {
        panic!("a request head trickled for {:?} and the connection is still open", deadline + DEADLINE_SLACK);
    };
    println!("slowloris: closed after {after:?}, answered {:?}", answer.lines().next().unwrap_or("nothing"));
    assert!(after >= at_least, "closed after {after:?}, before the {at_least:?} deadline");
    // nginx closes without a response (and logs 408); a 408 is as good.
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(!recorder.saw("/case-slow/"), "the backend saw the trickled request");
    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_client_connections_closed_total{reason=\"header_timeout\"} 1"), "{m}");
    let log = gw.log();
    assert!(log.contains("request head not complete within client_header_timeout"), "no warning of our own:\n{log}");
    assert!(!log.contains("ERROR"), "Pingora logged the cut-off head as an error:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_at_the_default_header_deadline() {
    assert_slowloris_cut_off("", DEFAULT_HEADER_DEADLINE, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_at_the_configured_header_deadline() {
    let config = format!("client_header_timeout = \"{}s\"\n\n", CONFIGURED_HEADER_DEADLINE.as_secs());
    let at_least = CONFIGURED_HEADER_DEADLINE - Duration::from_millis(500);
    assert_slowloris_cut_off(&config, CONFIGURED_HEADER_DEADLINE, at_least).await;
}

/// On a keep-alive connection, the idle time before a request is not the head's (that is the
/// keep-alive timeout); a head trickled after it is cut off at the deadline from its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_request_on_a_kept_alive_connection_is_held_to_the_deadline_too() {
    let recorder = Recorder::start().await;
    let config = format!("client_header_timeout = \"{}s\"\n\n", CONFIGURED_HEADER_DEADLINE.as_secs());
    let gw = Gateway::start(&format!("{config}{}", upstreams(recorder.addr, dead_addr())));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    stream.write_all(b"GET /case-ka/first HTTP/1.1\r\nHost: gw.test\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    read_responses(&mut stream, &mut buf, 1, Instant::now() + RESPONSE_WITHIN).await;
    let statuses: Vec<u16> = parse_responses(&buf, false).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200]);
    // idle for longer than the head deadline: the connection stays open
    let idle = CONFIGURED_HEADER_DEADLINE + Duration::from_secs(1);
    let mut probe = [0u8; 1];
    let read = tokio::time::timeout(idle, stream.read(&mut probe)).await;
    assert!(read.is_err(), "the gateway ended an idle kept-alive connection within {idle:?}: {read:?}");

    let first_byte = Instant::now();
    let (closed, answer) =
        trickle(stream, b"GET /case-ka/bad HTTP/1.1\r\n", CONFIGURED_HEADER_DEADLINE + DEADLINE_SLACK).await;
    let after = closed.expect("the second, trickled head was not cut off");
    assert!(first_byte.elapsed() >= CONFIGURED_HEADER_DEADLINE - Duration::from_millis(500), "closed after {after:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(recorder.saw("/case-ka/first") && !recorder.saw("/case-ka/bad"));
}

/// With h2c on, the gateway first waits for the 24 bytes of an HTTP/2 preface (Pingora's peek
/// has no deadline of its own): a client that stops short of them is cut off too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_silent_start_on_an_h2c_listener_is_cut_off() {
    let recorder = Recorder::start().await;
    let config = format!("h2c = true\nclient_header_timeout = \"{}s\"\n\n", CONFIGURED_HEADER_DEADLINE.as_secs());
    let gw = Gateway::start(&format!("{config}{}", upstreams(recorder.addr, dead_addr())));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /case-h2c/bad").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(CONFIGURED_HEADER_DEADLINE + DEADLINE_SLACK, stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "still open after {:?}", started.elapsed());
    assert!(started.elapsed() >= CONFIGURED_HEADER_DEADLINE - Duration::from_millis(500));
    assert!(!recorder.saw("/case-h2c/"));
    // an HTTP/1.1 request still works on the h2c listener
    let out = exchange(gw.port, b"GET /case-h2c/ok HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1).await;
    assert_eq!(out.responses.first().map(|r| r.status), Some(200));
}

/// An HTTP/1 request shorter than the HTTP/2 preface (a load balancer's `OPTIONS / HTTP/1.0`
/// health check) is answered at once on an h2c listener, not after the header deadline: the
/// gateway reads only as far as the bytes agree with the preface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_shorter_than_the_h2_preface_is_answered_at_once_on_an_h2c_listener() {
    let recorder = Recorder::start().await;
    let config = format!("h2c = true\nclient_header_timeout = \"{}s\"\n\n", CONFIGURED_HEADER_DEADLINE.as_secs());
    let gw = Gateway::start(&format!("{config}{}", upstreams(recorder.addr, dead_addr())));
    let started = Instant::now();
    let out = exchange(gw.port, b"GET /h HTTP/1.0\r\n\r\n", 1).await;
    assert_eq!(out.responses.first().map(|r| r.status), Some(200));
    assert!(started.elapsed() < CONFIGURED_HEADER_DEADLINE / 2, "answered after {:?}", started.elapsed());
}

/// A request body sent slowly is the request's business (the route's deadlines), not the head's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_not_held_to_the_head_deadline() {
    let recorder = Recorder::start().await;
    let config = format!("client_header_timeout = \"{}s\"\n\n", CONFIGURED_HEADER_DEADLINE.as_secs());
    let gw = Gateway::start(&format!("{config}{}", upstreams(recorder.addr, dead_addr())));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let body = b"0123456789";
    stream
        .write_all(
            format!("POST /case-body/ok HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n", body.len())
                .as_bytes(),
        )
        .await
        .unwrap();
    let every = (CONFIGURED_HEADER_DEADLINE * 2) / body.len() as u32;
    for b in body {
        tokio::time::sleep(every).await;
        stream.write_all(&[*b]).await.unwrap();
    }
    let mut buf = Vec::new();
    read_responses(&mut stream, &mut buf, 1, Instant::now() + RESPONSE_WITHIN).await;
    let statuses: Vec<u16> = parse_responses(&buf, false).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200], "{}", String::from_utf8_lossy(&buf));
}

/// A client that gives up in the middle of a head is counted, and Pingora logs no error for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_abandoned_by_the_client_is_counted_quietly() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&upstreams(recorder.addr, dead_addr()));
    for _ in 0..3 {
        let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        stream.write_all(SLOW_HEAD).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // a second piece: the head is in two reads
        stream.write_all(b"x-slow: 1\r\n").await.unwrap();
        drop(stream);
    }
    let want = "strangler_gateway_client_connections_closed_total{reason=\"head_abandoned\"} 3";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if m.contains(want) {
            break;
        }
        assert!(Instant::now() < deadline, "{want} not counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = gw.log();
    assert!(!log.contains("ERROR"), "Pingora logged an abandoned head as an error:\n{log}");
    assert!(!recorder.saw("/case-slow/"));
}

// ---------------------------------------------------------------------------------------------
// Idle keep-alive connections

/// `[gateway] client_keepalive_timeout` in the tests that set it.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// The close may come this much after the idle timeout (timer granularity, a loaded machine).
const KEEPALIVE_SLACK: Duration = Duration::from_secs(2);

fn keepalive_config(backend: std::net::SocketAddr) -> String {
    format!("client_keepalive_timeout = \"{}s\"\n\n{}", KEEPALIVE.as_secs(), upstreams(backend, dead_addr()))
}

/// Sends one request on `stream` and returns the status of its response.
async fn request(stream: &mut TcpStream, req: &[u8]) -> Vec<u16> {
    stream.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    read_responses(stream, &mut buf, 1, Instant::now() + RESPONSE_WITHIN).await;
    parse_responses(&buf, false).iter().map(|r| r.status).collect()
}

/// Polls /metrics until it has `want` (or fails after a few seconds).
async fn wait_metric(gw: &Gateway, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if m.contains(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{want} not counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A backend that answers each request `200` only after `delay` (a slow service).
async fn slow_backend(delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    while let Some((len, _)) = common::raw_http::frame_request(&buf) {
                        buf.drain(..len);
                        tokio::time::sleep(delay).await;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    if matches!(stream.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Like nginx's `keepalive_timeout`: a connection silent after its request is closed, without a
/// response, counted, and without an error in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_kept_alive_connection_is_closed_at_the_keepalive_timeout() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&keepalive_config(recorder.addr));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    assert_eq!(request(&mut stream, b"GET /case-idle/first HTTP/1.1\r\nHost: gw.test\r\n\r\n").await, [200]);
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(KEEPALIVE + KEEPALIVE_SLACK, stream.read_to_end(&mut rest)).await;
    let after = idle_from.elapsed();
    assert!(closed.is_ok(), "an idle kept-alive connection still open after {after:?}");
    println!("idle keep-alive connection closed after {after:?}");
    assert!(after >= KEEPALIVE - Duration::from_millis(100), "closed after {after:?}, before the idle timeout");
    assert!(rest.is_empty(), "an idle connection is closed without a response: {:?}", String::from_utf8_lossy(&rest));
    wait_metric(&gw, "strangler_gateway_client_connections_closed_total{reason=\"keepalive_timeout\"} 1").await;
    let log = gw.log();
    assert!(!log.contains("ERROR"), "Pingora logged the idle close as an error:\n{log}");
}

/// Each request restarts the idle clock: a connection used more often than the timeout stays
/// open for longer than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_within_the_keepalive_timeout_are_served() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&keepalive_config(recorder.addr));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let started = Instant::now();
    for i in 0..4 {
        let req = format!("GET /case-busy/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
        assert_eq!(request(&mut stream, req.as_bytes()).await, [200], "request {i}");
        // silent for a bit over half the idle timeout: the gateway must not close meanwhile
        let mut probe = [0u8; 1];
        let read = tokio::time::timeout(KEEPALIVE * 6 / 10, stream.read(&mut probe)).await;
        assert!(read.is_err(), "closed after request {i}, {:?} in: {read:?}", started.elapsed());
    }
    assert!(started.elapsed() > KEEPALIVE * 2, "the connection lived {:?}", started.elapsed());
    assert!(recorder.saw("/case-busy/3"));
    let m = gw.metrics().await;
    assert!(!m.contains("reason=\"keepalive_timeout\"} 1"), "{m}");
}

/// The idle clock runs only between requests: a response slower than it, and a request body
/// sent more slowly than it, are not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_or_a_slow_body_is_not_cut_by_the_keepalive_timeout() {
    let slow = KEEPALIVE * 5 / 2;
    let gw = Gateway::start(&keepalive_config(slow_backend(slow).await));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let asked = Instant::now();
    stream.write_all(b"GET /case-slow-answer/1 HTTP/1.1\r\nHost: gw.test\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    read_responses(&mut stream, &mut buf, 1, Instant::now() + slow + RESPONSE_WITHIN).await;
    let statuses: Vec<u16> = parse_responses(&buf, false).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200], "{}", String::from_utf8_lossy(&buf));
    assert!(asked.elapsed() >= slow, "the backend was not slow ({:?})", asked.elapsed());

    let recorder = Recorder::start().await;
    let gw = Gateway::start(&keepalive_config(recorder.addr));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    // a first request, so that the body's is a kept-alive connection's later one
    assert_eq!(request(&mut stream, b"GET /case-slow-body/0 HTTP/1.1\r\nHost: gw.test\r\n\r\n").await, [200]);
    let body = b"01234";
    let head = format!("POST /case-slow-body/1 HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    let every = (KEEPALIVE * 5 / 2) / body.len() as u32;
    for b in body {
        tokio::time::sleep(every).await; // the client's pace, not synchronisation
        stream.write_all(&[*b]).await.unwrap();
    }
    let mut buf = Vec::new();
    read_responses(&mut stream, &mut buf, 1, Instant::now() + RESPONSE_WITHIN).await;
    let statuses: Vec<u16> = parse_responses(&buf, false).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200], "{}", String::from_utf8_lossy(&buf));
    let m = gw.metrics().await;
    assert!(!m.contains("reason=\"keepalive_timeout\"} 1"), "{m}");
}

/// The default (75 s, nginx's) does not close an idle connection early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_keepalive_timeout_keeps_an_idle_connection_open() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&upstreams(recorder.addr, dead_addr()));
    let mut stream = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    assert_eq!(request(&mut stream, b"GET /case-default/1 HTTP/1.1\r\nHost: gw.test\r\n\r\n").await, [200]);
    let idle = Duration::from_millis(2500);
    let mut probe = [0u8; 1];
    let read = tokio::time::timeout(idle, stream.read(&mut probe)).await;
    assert!(read.is_err(), "the gateway ended an idle kept-alive connection within {idle:?}: {read:?}");
    assert_eq!(request(&mut stream, b"GET /case-default/2 HTTP/1.1\r\nHost: gw.test\r\n\r\n").await, [200]);
}

// ---------------------------------------------------------------------------------------------
// Connections per client address

/// `[gateway] max_connections_per_client` in the test's config.
const CONNECTIONS_PER_CLIENT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_capped() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&format!(
        "max_connections_per_client = {CONNECTIONS_PER_CLIENT}\n\n{}",
        upstreams(recorder.addr, dead_addr())
    ));
    // Fill the cap with served connections, left open (idle keep-alive counts).
    let mut held = Vec::new();
    for i in 0..CONNECTIONS_PER_CLIENT {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        s.write_all(format!("GET /case-cap/held-{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        read_responses(&mut s, &mut buf, 1, Instant::now() + RESPONSE_WITHIN).await;
        let statuses: Vec<u16> = parse_responses(&buf, false).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200], "connection {i} under the cap");
        held.push(s);
    }
    // One more from the same address is refused: closed, with at most a 429/503 (nginx's
    // limit_conn answers 503), and nothing of it forwarded.
    let out = exchange(gw.port, b"GET /case-cap/bad HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1).await;
    let statuses: Vec<u16> = out.responses.iter().map(|r| r.status).collect();
    assert!(out.closed, "the connection over the cap stayed open (answered {statuses:?})");
    assert!(statuses.iter().all(|s| *s == 429 || *s == 503), "over the cap answered {statuses:?}");
    assert!(!recorder.saw("/case-cap/bad"), "the backend saw a request over the cap");
    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_client_connections_closed_total{reason=\"over_client_cap\"} 1"), "{m}");
    // Closing one frees its slot (the gateway learns of the close asynchronously: poll).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = exchange(gw.port, b"GET /case-cap/again HTTP/1.0\r\n\r\n", 1).await;
        if out.responses.first().is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed after a held connection closed");
    }
    assert!(recorder.saw("/case-cap/again"));
}

/// `max_connections_per_client = 0` turns the cap off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_the_connection_cap_off() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&format!("max_connections_per_client = 0\n\n{}", upstreams(recorder.addr, dead_addr())));
    let mut held = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        s.write_all(format!("GET /case-nocap/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        read_responses(&mut s, &mut buf, 1, Instant::now() + RESPONSE_WITHIN).await;
        let statuses: Vec<u16> = parse_responses(&buf, false).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200], "connection {i}");
        held.push(s);
    }
    let m = gw.metrics().await;
    assert!(m.contains("strangler_gateway_client_connections_open 20"), "{m}");
}

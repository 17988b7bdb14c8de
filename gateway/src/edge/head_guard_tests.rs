//! [`HeadGuard`] on an in-memory stream, with paused time.

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

/// The idle timer is the connection's: made once, and when it fires for an earlier wait (sooner
/// than this wait's timeout) it is moved on, not taken for this wait's.
#[tokio::test(start_paused = true)]
async fn the_idle_timer_is_kept_across_requests_and_measures_each_wait_from_its_start() {
    let (mut g, mut client) = kept_alive().await;
    let mut timer_at = None;
    for i in 2..5 {
        // each wait lasts nearly the timeout, so the timer armed by the one before fires in it
        assert!(read_within(&mut g, IDLE - Duration::from_millis(100)).await.is_none(), "closed early");
        let at = g.idle_timer.as_ref().map(|t| &**t as *const Sleep).expect("armed by the wait");
        assert_eq!(*timer_at.get_or_insert(at), at, "the same timer for every wait");
        client.write_all(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).await.unwrap();
        read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap();
        g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        assert!(answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
        g.rearm();
    }
    let started = Instant::now();
    assert_eq!(read_within(&mut g, IDLE * 3).await.unwrap().unwrap(), b"", "closed at the idle timeout");
    let waited = started.elapsed();
    assert!(waited >= IDLE && waited < IDLE + Duration::from_millis(10), "closed after {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_request_already_there_costs_no_timer() {
    let (mut g, mut client) = kept_alive().await;
    client.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap();
    assert!(g.timer.is_none() && g.idle_timer.is_none() && !g.idle);
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
async fn after_a_body_the_next_head_is_checked_too() {
    let (mut g, mut client) = guarded();
    client.write_all(b"POST /1 HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\n\r\nhello").await.unwrap();
    read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap();
    g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    assert!(answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
    g.rearm();
    client.write_all(b"GET /a\x01b HTTP/1.1\r\n").await.unwrap();
    let err = read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(answer(&mut client).await.starts_with("HTTP/1.1 400 Bad Request\r\n"));
}

/// Reads what the guard gives until it waits, fails or ends.
async fn drain(g: &mut HeadGuard) -> (Vec<u8>, Option<io::Result<()>>) {
    let mut got = Vec::new();
    loop {
        match read_within(g, Duration::from_millis(10)).await {
            None => return (got, None),
            Some(Ok(b)) if b.is_empty() => return (got, Some(Ok(()))),
            Some(Ok(b)) => got.extend_from_slice(&b),
            Some(Err(e)) => return (got, Some(Err(e))),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_bad_pipelined_request_is_refused_only_after_the_good_one_is_answered() {
    let (mut g, mut client) = guarded();
    let good = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    client.write_all(&[&good[..], b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"].concat()).await.unwrap();
    let (got, end) = drain(&mut g).await;
    assert_eq!(got, good, "only the good request is handed over");
    assert!(end.is_none(), "and then nothing, while it is answered");
    g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    g.rearm();
    let err = read_within(&mut g, Duration::from_millis(10)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let mut rest = Vec::new();
    drop(g);
    client.read_to_end(&mut rest).await.unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("\r\n\r\nHTTP/1.1 400 Bad Request\r\n"), "the 400 after the 200: {rest}");
}

#[tokio::test(start_paused = true)]
async fn a_malformed_chunk_fails_the_read_after_the_valid_bytes_and_writes_nothing() {
    let (mut g, mut client) = guarded();
    let valid = b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\"\r\nhello\r\n";
    client.write_all(&[&valid[..], b"5;\x01\r\nworld\r\n0\r\n\r\n"].concat()).await.unwrap();
    let (got, end) = drain(&mut g).await;
    assert_eq!(got, [&valid[..], b"5;"].concat(), "every byte before the bad one");
    let err = end.expect("the read fails").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(HeadGuard::framing_error_of(&err), Some(FramingError::ChunkExtension));
    drop(g);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "the proxy answers a request it parsed: {:?}", String::from_utf8_lossy(&rest));
}

#[tokio::test(start_paused = true)]
async fn pipelined_requests_after_a_chunked_body_are_already_there_at_rearm() {
    let (mut g, mut client) = guarded();
    let stream = b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
        GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n";
    client.write_all(stream).await.unwrap();
    let (got, end) = drain(&mut g).await;
    assert_eq!((got.as_slice(), end.is_none()), (&stream[..], true));
    for _ in 0..2 {
        g.rearm();
        assert!(!g.reading_head && g.timer.is_none(), "the head is complete: no clock");
    }
    // the fourth request's head is timed from its first byte, which came before the rearm
    client.write_all(b"GET /4 HTTP/1.1\r\n").await.unwrap();
    assert_eq!(drain(&mut g).await.0, b"GET /4 HTTP/1.1\r\n");
    tokio::time::sleep(DEADLINE / 2).await;
    g.rearm();
    let started = Instant::now();
    let err = read_within(&mut g, DEADLINE).await.expect("cut off by the deadline").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() <= DEADLINE / 2 + Duration::from_millis(10), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn body_bytes_come_in_capped_pieces() {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let (mut g, mut client) = (HeadGuard::new(Box::new(server), DEADLINE, Duration::ZERO), client);
    let head = b"POST /1 HTTP/1.1\r\nHost: a\r\ncontent-length: 60000\r\n\r\n";
    client.write_all(&[&head[..], &[b'x'; 60000]].concat()).await.unwrap();
    let mut buf = vec![0u8; 128 * 1024];
    let n = g.read(&mut buf).await.unwrap();
    assert_eq!(n, head.len() + MAX_BODY_READ, "the first piece of the body with the head is capped");
    g.set_read_cap(1000);
    let n = g.read(&mut buf).await.unwrap();
    assert_eq!(n, 1000);
    g.set_read_cap(0);
    let n = g.read(&mut buf).await.unwrap();
    assert_eq!(n, 60000 - MAX_BODY_READ - 1000);
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

// Waiting for a kept-alive connection's next request before Pingora's session is made: on a
// Pingora TCP stream, in real time.

/// A guard over a loopback TCP connection with the idle timeout `idle`, after one request
/// answered and the guard re-armed, and the client's end.
async fn kept_alive_tcp(idle: Duration) -> (HeadGuard, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
    let mut g = HeadGuard::new(stream, DEADLINE, idle);
    assert!(!g.before_next_head(), "a connection's first request is read by Pingora at once");
    client.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = g.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    g.flush().await.unwrap();
    let n = client.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    g.rearm();
    (g, client)
}

#[tokio::test]
async fn the_next_request_is_waited_for_and_then_read_whole_through_the_checks() {
    let (mut g, mut client) = kept_alive_tcp(Duration::from_secs(30)).await;
    assert!(g.before_next_head());
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await; // the client's pace
        client.write_all(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        client
    });
    let started = Instant::now();
    assert!(g.wait_next_head().await, "the client sent a request");
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "returned after {:?}, before the request",
        started.elapsed()
    );
    let _client = sender.await.unwrap();
    // what the wait read comes through the guard's reads: the head, followed to its end
    let got = read_within(&mut g, Duration::from_secs(5)).await.expect("the head is there").unwrap();
    assert_eq!(got, b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!g.reading_head, "the head was followed to its end");
}

#[tokio::test]
async fn a_silent_connection_ends_the_wait_at_the_idle_timeout_and_stays_ended() {
    let idle = Duration::from_millis(300);
    let (mut g, _client) = kept_alive_tcp(idle).await;
    let started = Instant::now();
    let sent = tokio::time::timeout(idle * 20, g.wait_next_head()).await.expect("the wait ends");
    assert!(!sent, "nothing was sent");
    assert!(started.elapsed() >= idle, "ended after {:?}", started.elapsed());
    assert!(g.idled_out, "counted as a keep-alive timeout");
    assert!(!g.before_next_head());
    assert_eq!(read_within(&mut g, Duration::from_secs(1)).await.unwrap().unwrap(), b"", "an end of stream");
}

#[tokio::test]
async fn a_client_leaving_ends_the_wait_quietly() {
    let (mut g, client) = kept_alive_tcp(Duration::from_secs(30)).await;
    drop(client);
    let sent = tokio::time::timeout(Duration::from_secs(5), g.wait_next_head()).await.expect("the wait ends");
    assert!(!sent && !g.idled_out);
}

#[tokio::test]
async fn a_request_read_already_is_not_waited_for() {
    let (mut g, mut client) = kept_alive_tcp(Duration::from_secs(30)).await;
    // request 2 and the start of request 3 read before request 3 is due
    let sent = b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\n";
    client.write_all(sent).await.unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.extend(read_within(&mut g, Duration::from_secs(5)).await.expect("more bytes").unwrap());
    }
    assert_eq!(got, sent);
    g.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    g.rearm();
    assert!(!g.before_next_head(), "request 3 has begun: Pingora reads it at once");
}

/// The idle timer is polled again only for another task than the one it was registered to wake:
/// a wait moved to another task is still ended by it.
#[tokio::test(start_paused = true)]
async fn the_idle_timer_wakes_the_task_that_waits_now() {
    let (mut g, _client) = kept_alive().await;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let first = Waker::noop();
    let mut cx = Context::from_waker(first);
    assert!(Pin::new(&mut g).poll_read(&mut cx, &mut ReadBuf::new(&mut buf)).is_pending());
    assert!(g.idle_waker.is_some(), "the timer registered for the first waker");
    // this test's task: a different waker, which the timer must wake at the idle timeout
    let got = read_within(&mut g, IDLE * 3).await.expect("ended by the idle timer").unwrap();
    assert_eq!(got, b"");
    let waited = started.elapsed();
    assert!(waited >= IDLE && waited < IDLE + Duration::from_millis(10), "closed after {waited:?}");
}

/// A connection task that has spent its coop budget (it has just streamed a large response, say)
/// when it starts to wait for the next head: tokio refuses that poll of the idle timer without
/// registering it. The timer must be polled again on the next wake, or the connection is never
/// ended by the idle timeout.
#[tokio::test(start_paused = true)]
async fn the_idle_timer_is_armed_when_the_first_wait_had_no_budget_left() {
    let (mut g, _client) = kept_alive().await;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let mut spent = false;
    let read = std::future::poll_fn(|cx| {
        if !std::mem::replace(&mut spent, true) {
            while tokio::task::coop::has_budget_remaining() {
                let _ = std::pin::pin!(tokio::task::coop::consume_budget()).poll(cx);
            }
        }
        let mut rb = ReadBuf::new(&mut buf);
        Pin::new(&mut g).poll_read(cx, &mut rb).map_ok(|()| rb.filled().len())
    });
    let n = tokio::time::timeout(IDLE * 3, read).await.expect("ended by the idle timer").unwrap();
    assert_eq!(n, 0, "an end of stream");
    let waited = started.elapsed();
    assert!(waited >= IDLE && waited < IDLE + Duration::from_millis(10), "closed after {waited:?}");
}

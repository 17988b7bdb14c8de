//! Request buffering (`request_buffering`), over raw sockets against the real gateway binary and a
//! [`Recorder`] backend that keeps every byte it receives.
//!
//! With buffering on (the default) the start of a body is read before the upstream is contacted:
//! a body whose framing breaks after the head arrived alone is refused with 400 and the backend
//! never sees the request; a body over the buffer streams on and reaches the backend intact.
//! With buffering off the head goes upstream at once, and a framing error later aborts the
//! upstream request with 400 to the client (the documented limit).

mod common;

use std::time::Duration;

use common::raw_http::{parse_responses, read_responses, wait_closed, Recorder, CLOSE_WITHIN};
use common::{dead_addr, upstreams, Gateway};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(5);

fn gateway(recorder: &Recorder) -> Gateway {
    Gateway::start(&format!(
        "max_body_bytes = 1000000\n\n{}\
         [[routes]]\nname = \"streamed\"\nmatch = {{ path = \"/streamed/**\" }}\nstage = \"legacy\"\nrequest_buffering = \"off\"\n\n\
         [[routes]]\nname = \"small\"\nmatch = {{ path = \"/small/**\" }}\nstage = \"legacy\"\nmax_body_bytes = 1000\n",
        upstreams(recorder.addr, dead_addr())
    ))
}

/// A deterministic body of `len` bytes (every byte value, no pattern a framing bug could hide in).
fn body(len: usize) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// `data` in chunks of varied sizes, some with extensions, and a trailer.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0usize);
    while at < data.len() {
        let size = [1, 7, 4096, 8191, 100, 20000, 3][i % 7].min(data.len() - at);
        let ext = if i % 3 == 0 { ";n=v;q=\"a b\"" } else { "" };
        out.extend_from_slice(format!("{size:x}{ext}\r\n").as_bytes());
        out.extend_from_slice(&data[at..at + size]);
        out.extend_from_slice(b"\r\n");
        at += size;
        i += 1;
    }
    out.extend_from_slice(b"0\r\nx-done: 1\r\n\r\n");
    out
}

/// Sends `request` (from another task, so a gateway streaming it upstream is never blocked by
/// this one), reads `expected` responses and whether the connection was closed after them
/// (within [`CLOSE_WITHIN`]).
async fn send(port: u16, request: Vec<u8>, expected: usize) -> (Vec<u16>, bool) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut buf = Vec::new();
    let mut closed = false;
    let deadline = Instant::now() + WITHIN;
    while parse_responses(&buf, false).len() < expected {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    if !closed {
        use tokio::io::AsyncReadExt;
        let deadline = Instant::now() + CLOSE_WITHIN;
        while let Ok(read) = tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
            if matches!(read, Ok(0) | Err(_)) {
                closed = true;
                break;
            }
        }
    }
    let _wr = writer.await.unwrap();
    let statuses = parse_responses(&buf, closed).iter().map(|r| r.status).collect();
    (statuses, closed)
}

/// Polls until the recorder saw `marker` (or `WITHIN` passed).
async fn wait_saw(recorder: &Recorder, marker: &str) -> bool {
    let deadline = Instant::now() + WITHIN;
    while Instant::now() < deadline {
        if recorder.saw(marker) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_and_content_length_uploads_reach_the_backend_intact() {
    let recorder = Recorder::start().await;
    let gw = gateway(&recorder);
    let data = body(300 * 1024);
    for (marker, framing) in [
        ("/buffered/chunked", "chunked"),
        ("/streamed/chunked", "chunked"),
        ("/buffered/length", "length"),
        ("/buffered/small-chunked", "small"),
    ] {
        let data = if framing == "small" { &data[..10] } else { &data[..] };
        let (framing_header, wire) = match framing {
            "length" => (format!("Content-Length: {}", data.len()), data.to_vec()),
            _ => ("Transfer-Encoding: chunked".to_string(), chunked(data)),
        };
        let head = format!("POST {marker} HTTP/1.1\r\nHost: gw.test\r\n{framing_header}\r\n\r\n");
        let (statuses, closed) = send(gw.port, [head.as_bytes(), &wire].concat(), 1).await;
        assert_eq!((statuses, closed), (vec![200], false), "{marker}\n{}", gw.log());
        let got = recorder.body_of(marker).unwrap_or_else(|| panic!("{marker}: the backend has no complete request"));
        assert_eq!(got.len(), data.len(), "{marker}");
        assert!(got == data, "{marker}: the body changed on the way");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_after_the_head_came_alone_is_refused_before_the_upstream_sees_the_head() {
    let recorder = Recorder::start().await;
    let gw = gateway(&recorder);
    for (marker, rest, want) in [
        ("/late/bad", &b"5\r\nhello\r\n5;a(b\r\nworld\r\n0\r\n\r\n"[..], 400),
        ("/late/good", b"5\r\nhello\r\n0\r\n\r\n", 200),
    ] {
        // the client waits for 100 Continue: the body really comes after the head was read
        let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let head = format!(
            "POST {marker} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        read_responses(&mut s, &mut buf, 1, Instant::now() + WITHIN).await;
        assert_eq!(parse_responses(&buf, false).first().map(|r| r.status), Some(100), "{marker}");
        assert!(!recorder.saw(marker), "{marker}: the upstream saw the head before the body was read");
        s.write_all(rest).await.unwrap();
        let closed = read_responses(&mut s, &mut buf, 2, Instant::now() + WITHIN).await;
        let statuses: Vec<u16> = parse_responses(&buf, closed).iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![100, want], "{marker}\n{}", gw.log());
        if want == 400 {
            assert!(closed || wait_closed(&mut s, &mut buf, WITHIN).await, "{marker}: left open");
            assert!(!recorder.saw(marker), "{marker}: the backend saw the refused request");
        } else {
            assert_eq!(recorder.body_of(marker).as_deref(), Some(&b"hello"[..]));
            let line = recorder.line_with("100-continue");
            assert!(line.is_none(), "the gateway answered the Expect: it does not go upstream ({line:?})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_max_body_bytes_gets_413_before_the_upstream_sees_it() {
    let recorder = Recorder::start().await;
    let gw = gateway(&recorder);
    let head = "POST /small/big HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (statuses, closed) = send(gw.port, [head.as_bytes(), &chunked(&body(5000))].concat(), 1).await;
    assert_eq!(statuses, vec![413], "{}", gw.log());
    assert!(closed, "the rest of the body is not read: the connection closes");
    assert!(!recorder.saw("/small/big"));
    // within the limit, the same route passes it
    let head = "POST /small/fits HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (statuses, _) = send(gw.port, [head.as_bytes(), &chunked(&body(900))].concat(), 1).await;
    assert_eq!(statuses, vec![200]);
    assert_eq!(recorder.body_of("/small/fits").map(|b| b.len()), Some(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_buffering_the_head_goes_upstream_first_and_a_later_framing_error_aborts_with_400() {
    let recorder = Recorder::start().await;
    let gw = gateway(&recorder);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    s.write_all(
        b"POST /streamed/late-bad HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    assert!(wait_saw(&recorder, "/streamed/late-bad").await, "request_buffering = \"off\": the head is sent at once");
    s.write_all(b"zz\r\n0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let closed = read_responses(&mut s, &mut buf, 1, Instant::now() + WITHIN).await;
    let statuses: Vec<u16> = parse_responses(&buf, closed).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![400], "{}", gw.log());
    assert!(closed || wait_closed(&mut s, &mut buf, WITHIN).await, "left open");
    assert_eq!(recorder.body_of("/streamed/late-bad"), None, "the backend never got a complete request");
}

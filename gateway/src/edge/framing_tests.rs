//! Tables for [`Framing`]: every stream is fed whole and in pieces of every size, and must give
//! the same heads and the same error at the same offset.

use super::*;

/// What a stream gave: the offsets where heads started and ended, and the first error.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    starts: Vec<usize>,
    ends: Vec<usize>,
    bad: Option<(usize, FramingError)>,
    opaque: bool,
}

fn run(stream: &[u8], piece: usize) -> Seen {
    let mut f = Framing::new();
    let mut seen = Seen { starts: vec![], ends: vec![], bad: None, opaque: false };
    let mut base = 0;
    for chunk in stream.chunks(piece) {
        let mut off = 0;
        loop {
            match f.step(&chunk[off..]) {
                Step::More => break,
                Step::HeadStart(n) => {
                    off += n;
                    seen.starts.push(base + off);
                }
                Step::HeadEnd(n) => {
                    off += n;
                    seen.ends.push(base + off);
                }
                Step::Bad(n, e) => {
                    seen.bad = Some((base + off + n, e));
                    return seen;
                }
            }
        }
        base += chunk.len();
    }
    seen.opaque = f.is_opaque();
    seen
}

fn run_all_splits(stream: &[u8]) -> Seen {
    let whole = run(stream, stream.len().max(1));
    for piece in 1..stream.len() {
        assert_eq!(run(stream, piece), whole, "{:?} in pieces of {piece}", stream.escape_ascii().to_string());
    }
    whole
}

const CHUNKED: &str = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

#[test]
fn good_streams_are_followed_to_every_head() {
    let cases: &[(String, usize)] = &[
        ("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n".into(), 2),
        ("POST /1 HTTP/1.1\r\ncontent-LENGTH: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\n\r\n".into(), 2),
        ("POST /1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\n\r\n".into(), 2),
        (format!("{CHUNKED}5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"), 2),
        (format!("{CHUNKED}A\r\n0123456789\r\n0\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"), 2),
        (
            format!(
                "{CHUNKED}5;a=b;c=\"x\\\"y\" ; d\r\nhello\r\n0;last\r\nx-t: 1\r\nY-U:\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
            ),
            2,
        ),
        (format!("{CHUNKED}0000000000000005\r\nhello\r\n0\r\n\r\n"), 1),
        ("POST /1 HTTP/1.1\nTransfer-Encoding: CHUNKED \n\n5\r\nhello\r\n0\r\n\r\nGET /2 HTTP/1.1\n\n".into(), 2),
    ];
    for (stream, heads) in cases {
        let seen = run_all_splits(stream.as_bytes());
        assert_eq!(seen.bad, None, "{stream:?}");
        assert_eq!((seen.starts.len(), seen.ends.len()), (*heads, *heads), "{stream:?}: {seen:?}");
        assert!(!seen.opaque, "{stream:?}");
        if let Some(at) = stream.find("GET /2") {
            assert_eq!(seen.starts[1], at, "{stream:?}: the second head starts where it is");
        }
    }
}

#[test]
fn malformed_chunked_bodies_are_refused_at_the_bad_byte() {
    use FramingError as E;
    let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
    let big_trailer = format!("0\r\n{}\r\n", "x-t: 1234567890\r\n".repeat(MAX_TRAILER_BYTES / 16));
    let cases: &[(&str, &str, E)] = &[
        ("zz\r\nhello\r\n0\r\n\r\n", "zz", E::ChunkSize),
        ("0x5\r\nhello\r\n0\r\n\r\n", "x5", E::ChunkSize),
        ("-5\r\nhello\r\n0\r\n\r\n", "-5", E::ChunkSize),
        ("+5\r\nhello\r\n0\r\n\r\n", "+5", E::ChunkSize),
        (" 5\r\nhello\r\n0\r\n\r\n", " 5", E::ChunkSize),
        ("\r\nhello\r\n0\r\n\r\n", "\r\nhello", E::ChunkSize),
        ("5x\r\nhello\r\n0\r\n\r\n", "x\r", E::ChunkSize),
        ("00000000000000005\r\nhello\r\n0\r\n\r\n", "5\r\nh", E::ChunkSizeTooLong),
        ("fffffffffffffffff5\r\nhello\r\n0\r\n\r\n", "f5", E::ChunkSizeTooLong),
        ("5;\r\nhello\r\n0\r\n\r\n", "\r\nhello", E::ChunkExtension),
        ("5;=x\r\nhello\r\n0\r\n\r\n", "=x", E::ChunkExtension),
        ("5;a=\r\nhello\r\n0\r\n\r\n", "\r\nhello", E::ChunkExtension),
        ("5;a(b\r\nhello\r\n0\r\n\r\n", "(b", E::ChunkExtension),
        ("5;a=b(c\r\nhello\r\n0\r\n\r\n", "(c", E::ChunkExtension),
        ("5;a\0b\r\nhello\r\n0\r\n\r\n", "\0b", E::ChunkExtension),
        ("5;a=\"x\r\nhello\r\n0\r\n\r\n", "\r\nhello", E::ChunkExtension),
        ("5;a=\"x\0\"\r\nhello\r\n0\r\n\r\n", "\0\"", E::ChunkExtension),
        ("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", "y\r", E::ChunkExtension),
        ("5 \r\nhello\r\n0\r\n\r\n", "\r\nhello", E::ChunkExtension),
        ("5;a \r\nhello\r\n0\r\n\r\n", "\r\nhello", E::ChunkExtension),
        ("5;a\nxx\r\nhello\r\n0\r\n\r\n", "\nxx", E::ChunkExtension),
        ("5\nhello\r\n0\r\n\r\n", "\nhello", E::ChunkLineEnd),
        ("5\rhello\r\n0\r\n\r\n", "hello", E::ChunkLineEnd),
        (&long, "", E::ChunkLineTooLong),
        ("3\r\nhello\r\n0\r\n\r\n", "lo\r", E::ChunkDataEnd),
        ("5\r\nhello\n0\r\n\r\n", "\n0", E::ChunkDataEnd),
        ("5\r\nhello\r0\r\n\r\n", "0\r\n\r\n", E::ChunkDataEnd),
        ("0\r\nx-t : 1\r\n\r\n", " : 1", E::Trailer),
        ("0\r\n: 1\r\n\r\n", ": 1", E::Trailer),
        ("0\r\nx-t 1\r\n\r\n", " 1", E::Trailer),
        ("0\r\nx-t: a\0b\r\n\r\n", "\0b", E::Trailer),
        ("0\r\nx-t: 1\r\n b\r\n\r\n", " b", E::Trailer),
        ("0\r\nx-t: 1\n\r\n", "\n\r\n", E::Trailer),
        ("0\r\n\n", "", E::Trailer),
        ("0\r\n\rx", "x", E::Trailer),
        (&big_trailer, "", E::TrailerTooLong),
    ];
    for (body, at, want) in cases {
        let stream = format!("{CHUNKED}{body}GET /next HTTP/1.1\r\n\r\n");
        let seen = run_all_splits(stream.as_bytes());
        let (off, e) = seen.bad.unwrap_or_else(|| panic!("{body:?} was accepted: {seen:?}"));
        assert_eq!(e, *want, "{body:?}");
        assert!(!e.in_head());
        if !at.is_empty() {
            assert_eq!(off, CHUNKED.len() + body.find(at).unwrap(), "{body:?}: refused at the wrong byte");
        }
        assert_eq!(seen.starts.len(), 1, "{body:?}: nothing after the bad byte is a head");
    }
}

#[test]
fn a_bad_pipelined_request_line_is_found_at_its_head() {
    let stream = b"POST /1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /a\x01b HTTP/1.1\r\n\r\n";
    let seen = run_all_splits(stream);
    let second = 44;
    assert_eq!(&stream[second..second + 3], b"GET");
    assert_eq!(seen.starts, vec![0, second]);
    assert_eq!(seen.bad, Some((second + 6, FramingError::BadRequestLine)));
}

#[test]
fn heads_the_proxy_refuses_or_upgrades_are_not_followed() {
    for stream in [
        // both framings, or framings the proxy refuses: 400/501 and the connection closed
        String::from("POST /1 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        String::from("POST /1 HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\nzz\r\n"),
        String::from("POST /1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        String::from("POST /1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello\x01"),
        String::from("POST /1 HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello\x01"),
        format!("POST /1 HTTP/1.1\r\nContent-Length: {}\r\n\r\nhello\x01", "9".repeat(40)),
        format!("POST /1 HTTP/1.1\r\nContent-Length: 5{}6\r\n\r\nhello\x01", " ".repeat(40)),
        // an upgrade: after its (empty) body the bytes may be another protocol
        String::from("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x01\x01x\x00\x01"),
    ] {
        let seen = run_all_splits(stream.as_bytes());
        assert_eq!((seen.ends.len(), seen.bad, seen.opaque), (1, None, true), "{stream:?}");
    }
    // names that only begin like a framing header frame nothing (every browser sends the last)
    let stream = b"POST /1 HTTP/1.1\r\nContent-Lengthy: 5\r\nTransfer: chunked\r\nUp: 1\r\n\
        Upgrade-Insecure-Requests: 1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
    let seen = run_all_splits(stream);
    assert_eq!((seen.ends.len(), seen.bad, seen.opaque), (2, None, false));
}

#[test]
fn resumes_after_an_opaque_stream_where_pingora_reads_next() {
    let mut f = Framing::new();
    assert_eq!(f.step(b"GET /ws HTTP/1.1\r\nUpgrade: x\r\n\r\n"), Step::HeadStart(0));
    assert_eq!(f.step(b"GET /ws HTTP/1.1\r\nUpgrade: x\r\n\r\n"), Step::HeadEnd(32));
    assert!(f.is_opaque() && f.index() == 1);
    assert_eq!(f.step(b"GET /a\x01b HTTP/1.1\r\n\r\n"), Step::More, "opaque: not judged");
    f.resume_at(1, true);
    assert!(f.at_head_start());
    assert_eq!(f.step(b"GET /a\x01b"), Step::HeadStart(0));
    assert_eq!(f.step(b"GET /a\x01b"), Step::Bad(6, FramingError::BadRequestLine));
    // a head scanned from its middle: found, not judged, and what follows it not followed
    f.resume_at(2, false);
    assert_eq!(f.step(b"a\x01b HTTP/1.1\r\n\r\n"), Step::HeadStart(0));
    assert_eq!(f.step(b"a\x01b HTTP/1.1\r\n\r\n"), Step::HeadEnd(16));
    assert!(f.is_opaque());
}

/// Every framing the proxy accepts is followed: a head whose body the guard does not follow
/// would leave the connection's later requests unchecked (see `crate::validate`).
#[test]
fn a_head_the_proxy_accepts_is_followed() {
    let pad = " ".repeat(40);
    let cases: &[(&str, String)] = &[
        ("content-length", "5".into()),
        ("content-length", "0000000000000000005".into()),
        ("content-length", "00000000000000000005".into()),
        ("content-length", format!("{}5", "0".repeat(40))),
        // Pingora's parser drops the whitespace around a value, however much of it
        ("content-length", format!("{pad}5{pad}")),
        ("content-length", format!("\t{pad}5")),
        ("transfer-encoding", format!("{pad}chunked{pad}")),
    ];
    for (name, value) in cases {
        let head = format!("POST /1 HTTP/1.1\r\nHost: a\r\n{name}:{value}\r\n\r\n");
        let mut req = pingora::http::RequestHeader::build("POST", b"/1", None).unwrap();
        req.append_header("host", "a").unwrap();
        req.append_header(*name, value.trim_matches([' ', '\t'])).unwrap();
        if crate::validate::validate_request(&req, 16 * 1024).is_some() {
            continue;
        }
        let body = if *name == "content-length" { "hello" } else { "5\r\nhello\r\n0\r\n\r\n" };
        let stream = format!("{head}{body}GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
        let seen = run_all_splits(stream.as_bytes());
        assert_eq!((seen.ends.len(), seen.bad, seen.opaque), (2, None, false), "{name}: {value:?}");
    }
}

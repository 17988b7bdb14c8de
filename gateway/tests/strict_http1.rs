//! Strict HTTP/1 parsing, over raw sockets against the real gateway binary.
//!
//! A gateway in front of the monolith must be at least as strict as nginx: a request that a
//! backend might frame or read differently from the gateway is a request-smuggling risk, so it is
//! answered 400 (414/431/501/505 where those fit) and its connection closed before any upstream
//! sees a byte of it. The legacy upstream here is a [`Recorder`], a raw TCP server that keeps
//! every byte it receives. Each case's requests carry unique markers (`/case-NN/ok1`,
//! `/case-NN/bad`): an `ok` marker must reach the recorder (and its response come back in
//! order), a `bad` one never.
//!
//! Cases the gateway gets wrong today carry `fails_today(Gap::..)`, naming the cause: they still
//! run and are printed in the summary table, but do not fail the test. Remove the flag with the
//! fix; a flagged case that passes is marked "passes now" in the table.
//!
//! Each case notes what nginx (1.21.1 or later, default configuration, request buffering on)
//! does with the same bytes.

mod common;

use common::raw_http::{exchange, Outcome, Recorder};
use common::{dead_addr, upstreams, Gateway};

/// `[gateway] max_header_bytes` in the table's config (nginx: `large_client_header_buffers 4 8k`).
const MAX_HEADER_BYTES: usize = 8192;

// ---------------------------------------------------------------------------------------------
// The table

/// What the connection must look like after the responses.
#[derive(Clone, Copy, PartialEq)]
enum After {
    Closed,
    Open,
}

struct Case {
    name: &'static str,
    /// The bytes sent; `{ok1}`, `{ok2}` and `{bad}` become this case's markers.
    template: String,
    /// Acceptable statuses, one set per response the connection must carry, in order.
    expect: &'static [&'static [u16]],
    after: After,
    /// Why the gateway gets this case wrong today; `None` once it behaves.
    fails_today: Option<Gap>,
}

/// A request the gateway must refuse with 400 and a closed connection.
fn bad(name: &'static str, template: impl Into<String>) -> Case {
    Case { name, template: template.into(), expect: &[&[400]], after: After::Closed, fails_today: None }
}

/// A request the gateway must pass to the backend, keeping the connection open.
fn ok(name: &'static str, template: impl Into<String>) -> Case {
    Case { name, template: template.into(), expect: &[&[200]], after: After::Open, fails_today: None }
}

impl Case {
    fn expect(mut self, expect: &'static [&'static [u16]]) -> Case {
        self.expect = expect;
        self
    }

    fn after(mut self, after: After) -> Case {
        self.after = after;
        self
    }

    #[allow(dead_code)] // for the next known gap
    fn fails_today(mut self, gap: Gap) -> Case {
        self.fails_today = Some(gap);
        self
    }

    fn marker(idx: usize, which: &str) -> String {
        format!("/case-{idx:02}/{which}")
    }

    fn request(&self, idx: usize) -> Vec<u8> {
        ["ok1", "ok2", "bad"]
            .iter()
            .fold(self.template.clone(), |t, m| t.replace(&format!("{{{m}}}"), &Self::marker(idx, m)))
            .into_bytes()
    }
}

/// Why a case fails today, one variant per cause (see `Gap::why`). None left: chunked bodies
/// are checked by the edge and buffered before the upstream is contacted.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Gap {}

impl Gap {
    const ALL: [Gap; 0] = [];

    fn why(self) -> &'static str {
        match self {}
    }
}

/// Every case; a case's index is its marker (`/case-NN/...`).
fn cases() -> Vec<Case> {
    let long_target = "a".repeat(MAX_HEADER_BYTES + 2000);
    let big = "v".repeat(MAX_HEADER_BYTES + 2000);
    let many_small: String = (0..120).map(|i| format!("x-filler-{i:03}: {}\r\n", "f".repeat(64))).collect();
    let too_many: String = (0..300).map(|i| format!("x-h{i:03}: 1\r\n")).collect();
    let smuggled = "0\r\n\r\nGET {bad}/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    vec![
        // --- controls: these must reach the backend, answered in order ---
        // nginx: 200, keep-alive.
        ok("control: GET", "GET {ok1} HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        // nginx: 200; the query is passed as sent.
        ok("control: path with query", "GET {ok1}/p?a=1&b=%20x&c HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        // nginx: 200; HTTP/1.0 needs no Host, and the connection closes after the response.
        ok("control: HTTP/1.0 without Host", "GET {ok1} HTTP/1.0\r\n\r\n").after(After::Closed),
        // nginx: 200.
        ok(
            "control: POST with Content-Length",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello",
        ),
        // nginx: 200 (reads the whole body first, sends it with Content-Length).
        ok(
            "control: chunked POST",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        ),
        // nginx: 200; the coding name is case-insensitive.
        ok(
            "control: chunked POST, TE in capitals",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        // nginx: 200; chunk extensions and trailers are allowed and ignored.
        ok(
            "control: chunk extension and trailer",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                5;name=value\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
        ),
        // nginx: both answered, in order.
        ok(
            "control: pipelined GET, GET",
            "GET {ok1} HTTP/1.1\r\nHost: gw.test\r\n\r\nGET {ok2} HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        )
        .expect(&[&[200], &[200]]),
        // nginx: both answered, in order; the body ends where Content-Length says.
        ok(
            "control: pipelined POST(CL), GET",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\n\
                helloGET {ok2} HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        )
        .expect(&[&[200], &[200]]),
        // nginx: both answered, in order; the body ends at the last chunk.
        ok(
            "control: pipelined POST(chunked), GET",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\n\r\nGET {ok2} HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        )
        .expect(&[&[200], &[200]]),
        // nginx: the first is answered 200, the second 400 and the connection closed.
        bad(
            "pipelined GET, then two Hosts",
            "GET {ok1} HTTP/1.1\r\nHost: gw.test\r\n\r\nGET {bad} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        )
        .expect(&[&[200], &[400]]),
        // --- request target ---
        // nginx: 400 for control characters, NUL or spaces in the request line (since 1.21.1).
        bad("control char in target", "GET {bad}/a\x01b HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        bad("NUL in target", "GET {bad}/a\0b HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        bad("DEL in target", "GET {bad}/a\x7fb HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        bad("tab in target", "GET {bad}/a\tb HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        bad("space in target", "GET {bad}/a b HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        bad("space in target, fake version", "GET {bad}/a HTTP/1.1 HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        // --- request line and version ---
        // nginx: 505 for a major version other than 1.
        bad("HTTP/2.0 on HTTP/1", "GET {bad} HTTP/2.0\r\nHost: gw.test\r\n\r\n").expect(&[&[400, 505]]),
        // nginx accepts any HTTP/1.x as 1.1; the issue allows only 1.0 and 1.1.
        bad("HTTP/1.2", "GET {bad} HTTP/1.2\r\nHost: gw.test\r\n\r\n").expect(&[&[400, 505]]),
        // nginx answers an HTTP/0.9 GET with a bare body; the gateway must not speak 0.9.
        bad("HTTP/0.9 (no version)", "GET {bad}\r\nHost: gw.test\r\n\r\n"),
        // nginx: 400.
        bad("lowercase version", "GET {bad} http/1.1\r\nHost: gw.test\r\n\r\n"),
        bad("garbage after version", "GET {bad} HTTP/1.1 junk\r\nHost: gw.test\r\n\r\n"),
        // nginx: 400 (a method is upper-case letters, `_` and `-` only); a backend matching
        // methods case-insensitively would read `get` as GET.
        bad("lowercase method", "get {bad} HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        // nginx tolerates several spaces before the target; the gateway refuses.
        bad("two spaces after method", "GET  {bad} HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
        // nginx: 400.
        bad("missing target", "GET HTTP/1.1\r\nHost: gw.test\r\nx-case: {bad}\r\n\r\n"),
        // --- header names and lines ---
        // nginx ignores (drops) a header whose name has invalid characters (ignore_invalid_headers)
        // and serves the request; refusing is at least as safe.
        bad("invalid char in header name", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-Fo(o: 1\r\n\r\n"),
        // nginx: 400 for spaces or control characters in a header name (since 1.21.1).
        bad("space before colon", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-Case : 1\r\n\r\n"),
        bad(
            "space before colon, TE (smuggling classic)",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        bad("tab before colon", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-Case\t: 1\r\n\r\n"),
        bad("empty header name", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\n: 1\r\n\r\n"),
        bad("header line without colon", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-Case 1\r\n\r\n"),
        // nginx: 400 (a line starting with whitespace is not a header).
        bad("obs-fold (space)", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-A: a\r\n b\r\n\r\n"),
        bad("obs-fold (tab)", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-A: a\r\n\tb\r\n\r\n"),
        // nginx: 400 for NUL in a header line.
        bad("NUL in header value", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-A: a\0b\r\n\r\n"),
        // nginx: 400.
        bad("bare CR in header value", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nX-A: a\rb\r\n\r\n"),
        // --- message framing ---
        // nginx: 400 when both are present (since 1.21.1).
        bad(
            "Content-Length and Transfer-Encoding (CL.TE)",
            format!(
                "POST {{bad}} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
                    {smuggled}",
                // `{bad}` becomes `/case-NN/bad`: Content-Length covers the smuggled request
                smuggled.len() + Case::marker(0, "bad").len() - "{bad}".len()
            ),
        ),
        bad(
            "Transfer-Encoding and Content-Length (TE.CL)",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
                5\r\nhello\r\n0\r\n\r\n",
        ),
        // nginx: 400 (Content-Length is a unique header; duplicates are refused).
        bad(
            "two differing Content-Length",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        bad(
            "two identical Content-Length",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ),
        // nginx: 400 (the value must be digits).
        bad("Content-Length list 5, 6", "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        bad("Content-Length not a number", "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: abc\r\n\r\nhello"),
        bad("Content-Length +5", "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: +5\r\n\r\nhello"),
        bad("Content-Length -1", "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: -1\r\n\r\nhello"),
        bad("Content-Length 0x5", "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0x5\r\n\r\nhello"),
        // nginx reads any number of leading zeros; the gateway refuses more than 19 digits (the
        // edge's framing would not follow the body, and so not check the requests after it)
        bad(
            "Content-Length of 20 digits",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 00000000000000000005\r\n\r\nhello",
        ),
        // nginx: 501 for any Transfer-Encoding but exactly `chunked`.
        bad("TE gzip", "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip\r\n\r\nhello")
            .expect(&[&[400, 501]]),
        bad(
            "TE chunked, gzip (chunked not final)",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .expect(&[&[400, 501]]),
        bad(
            "TE xchunked",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .expect(&[&[400, 501]]),
        // nginx: 501. Chunked is final here, but a backend that does not know gzip as a transfer
        // coding (most do not) frames or decodes this differently from the gateway.
        bad(
            "TE gzip, chunked",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .expect(&[&[400, 501]]),
        // RFC 9112 6.1: chunked must not be applied twice. nginx: 400 (a duplicate header line).
        bad(
            "TE chunked twice (two lines)",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\n\r\n",
        )
        .expect(&[&[400, 501]]),
        // RFC 9112 6.1: faulty framing in HTTP/1.0. nginx: 400.
        bad(
            "TE chunked on HTTP/1.0",
            "POST {bad} HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        // --- chunked bodies ---
        // nginx (request buffering on) reads the whole body before it picks an upstream: 400 and
        // the upstream sees nothing.
        bad(
            "chunk size not hex",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk size 0x5",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk size -5",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        ),
        // nginx: 400 (or 413 once over client_max_body_size).
        bad(
            "chunk size overflow",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                fffffffffffffffff5\r\nhello\r\n0\r\n\r\n",
        )
        .expect(&[&[400, 413]]),
        bad(
            "chunk data longer than its size",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        ),
        // nginx accepts any byte in a chunk extension but ends the line at a bare LF, where httparse
        // reads on to the CRLF: the two disagree on where the chunk data starts.
        bad(
            "chunk extension with bare LF",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nxx\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk extension with NUL",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a\0b\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk extension without a name",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;=\"x\r\nhello\r\n0\r\n\r\n",
        ),
        // nginx: 400 for a sign or more digits than its size type holds.
        bad(
            "chunk size +5",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk size with 17 digits (leading zeros)",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                00000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk size then a space",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        ),
        // RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ).
        bad(
            "chunk extension: bare ;",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk extension: invalid token char",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a(b\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk extension: unterminated quoted-string",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                5;a=\"x\r\nhello\r\n0\r\n\r\n",
        ),
        bad(
            "chunk extension: value missing",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n",
        ),
        // nginx: 400.
        bad(
            "no CRLF after chunk data",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n",
        ),
        bad(
            "bare LF after chunk data",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
        ),
        // nginx discards trailers; a backend that reads them must not read a different field.
        bad(
            "trailer: space before colon",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\nx-t : 1\r\n\r\n",
        ),
        bad(
            "trailer: line without colon",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\nnot a field\r\n\r\n",
        ),
        bad(
            "trailer: obs-fold",
            "POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\nx-t: 1\r\n 2\r\n\r\n",
        ),
        // --- pipelining with a bad request behind a good one ---
        // nginx: the first is answered 200, the second 400 and the connection closed.
        bad(
            "pipelined GET, then a control char in the target",
            "GET {ok1} HTTP/1.1\r\nHost: gw.test\r\n\r\nGET {bad}/a\x01b HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        )
        .expect(&[&[200], &[400]]),
        bad(
            "pipelined POST(CL), then a control char in the target",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello\
                GET {bad}/a\x01b HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        )
        .expect(&[&[200], &[400]]),
        bad(
            "pipelined GET, then a malformed chunk size",
            "GET {ok1} HTTP/1.1\r\nHost: gw.test\r\n\r\n\
                POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )
        .expect(&[&[200], &[400]]),
        bad(
            "pipelined chunked POST, then a bad chunk extension",
            "POST {ok1} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\n\r\n\
                POST {bad} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5;a(b\r\nhello\r\n0\r\n\r\n",
        )
        .expect(&[&[200], &[400]]),
        // --- Host ---
        // nginx: 400 ("client sent HTTP/1.1 request without Host header").
        bad("HTTP/1.1 without Host", "GET {bad} HTTP/1.1\r\nx-case: 1\r\n\r\n"),
        // nginx: 400 (Host is a unique header).
        bad("two Host headers", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nHost: other.test\r\n\r\n"),
        bad("two identical Host headers", "GET {bad} HTTP/1.1\r\nHost: gw.test\r\nHost: gw.test\r\n\r\n"),
        // nginx: 400 for spaces or control characters in Host (since 1.21.1).
        bad("space in Host", "GET {bad} HTTP/1.1\r\nHost: gw test\r\n\r\n"),
        // --- limits (max_header_bytes = MAX_HEADER_BYTES) ---
        // nginx: 414 for a request line longer than a large_client_header_buffers buffer.
        bad("request line over the limit", format!("GET {{bad}}/{long_target} HTTP/1.1\r\nHost: gw.test\r\n\r\n"))
            .expect(&[&[414, 431]]),
        // nginx: 400 "Request Header Or Cookie Too Large" for one header line over a buffer.
        bad("header line over the limit", format!("GET {{bad}} HTTP/1.1\r\nHost: gw.test\r\nx-big: {big}\r\n\r\n"))
            .expect(&[&[431, 400]]),
        // nginx allows 4 x 8k in total; the gateway's limit is for the whole head.
        bad("header block over the limit", format!("GET {{bad}} HTTP/1.1\r\nHost: gw.test\r\n{many_small}\r\n"))
            .expect(&[&[431, 400]]),
        // nginx has no limit on the number of headers; Pingora parses at most 256.
        bad("300 headers", format!("GET {{bad}} HTTP/1.1\r\nHost: gw.test\r\n{too_many}\r\n")).expect(&[&[431, 400]]),
    ]
}

/// What one case did, judged against the table.
struct Verdict {
    got: String,
    closed: bool,
    /// Whether the backend saw the `bad` marker (`None`: the case has none).
    leaked: Option<bool>,
    problems: Vec<String>,
}

fn judge(idx: usize, case: &Case, out: &Outcome, recorder: &Recorder) -> Verdict {
    let mut problems = Vec::new();
    let statuses: Vec<u16> = out.responses.iter().map(|r| r.status).collect();
    let status_ok =
        statuses.len() == case.expect.len() && statuses.iter().zip(case.expect).all(|(s, want)| want.contains(s));
    if !status_ok {
        problems.push("status".to_string());
    }
    match (case.after, out.closed) {
        (After::Closed, false) => problems.push("left open".to_string()),
        (After::Open, true) => problems.push("closed".to_string()),
        _ => {}
    }
    let template = &case.template;
    let leaked = template.contains("{bad}").then(|| recorder.saw(&Case::marker(idx, "bad")));
    if leaked == Some(true) {
        problems.push("backend saw it".to_string());
    }
    for (i, which) in ["ok1", "ok2"].into_iter().enumerate() {
        if !template.contains(&format!("{{{which}}}")) {
            continue;
        }
        let marker = Case::marker(idx, which);
        if !recorder.saw(&marker) {
            problems.push(format!("backend missed {which}"));
        }
        // the recorder echoes the target: the i-th response must be the i-th request's
        if out.responses.get(i).is_some_and(|r| r.status == 200 && !r.body.starts_with(marker.as_bytes())) {
            problems.push(format!("response {} out of order", i + 1));
        }
    }
    let got = if statuses.is_empty() {
        "none".to_string()
    } else {
        statuses.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    };
    Verdict { got, closed: out.closed, leaked, problems }
}

fn expected(case: &Case) -> String {
    let statuses: Vec<String> =
        case.expect.iter().map(|set| set.iter().map(u16::to_string).collect::<Vec<_>>().join("|")).collect();
    let after = match case.after {
        After::Closed => "close",
        After::Open => "open",
    };
    format!("{} {after}", statuses.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_http1_table() {
    let recorder = Recorder::start().await;
    let gw =
        Gateway::start(&format!("max_header_bytes = {MAX_HEADER_BYTES}\n\n{}", upstreams(recorder.addr, dead_addr())));
    let cases = cases();

    // Every case on its own connection, all at once: each takes up to RESPONSE_WITHIN +
    // CLOSE_WITHIN, and the markers keep the recorder's bytes apart.
    let mut running = tokio::task::JoinSet::new();
    for (idx, case) in cases.iter().enumerate() {
        let (port, request, expected) = (gw.port, case.request(idx), case.expect.len());
        running.spawn(async move { (idx, exchange(port, &request, expected).await) });
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..cases.len()).map(|_| None).collect();
    while let Some(done) = running.join_next().await {
        let (idx, outcome) = done.unwrap();
        outcomes[idx] = Some(outcome);
    }

    let mut unexpected = Vec::new();
    let mut passing_flagged = Vec::new();
    let mut gaps = Vec::new();
    let mut rows = Vec::new();
    for (idx, (case, out)) in cases.iter().zip(&outcomes).enumerate() {
        let v = judge(idx, case, out.as_ref().unwrap(), &recorder);
        let result = match (v.problems.is_empty(), case.fails_today) {
            (true, None) => "ok".to_string(),
            (true, Some(_)) => {
                passing_flagged.push(case.name);
                "passes now: remove fails_today".to_string()
            }
            (false, None) => {
                unexpected.push(format!("{idx:02} {}: {}", case.name, v.problems.join(", ")));
                format!("FAIL ({})", v.problems.join(", "))
            }
            (false, Some(gap)) => {
                gaps.push(gap);
                format!("fails today: {gap:?} ({})", v.problems.join(", "))
            }
        };
        let leaked = match v.leaked {
            Some(true) => "YES",
            Some(false) => "no",
            None => "-",
        };
        rows.push(format!(
            "{idx:>2}  {:<46} {:<14} {:<8} {:<7} {:<6} {result}",
            case.name,
            expected(case),
            v.got,
            if v.closed { "yes" } else { "no" },
            leaked
        ));
    }
    println!(
        "\n{:>2}  {:<46} {:<14} {:<8} {:<7} {:<6} result\n{}",
        "#",
        "case",
        "expected",
        "got",
        "closed",
        "leaked",
        rows.join("\n")
    );
    let reasons: Vec<String> =
        Gap::ALL.iter().filter(|g| gaps.contains(g)).map(|g| format!("{g:?}: {}", g.why())).collect();
    if !reasons.is_empty() {
        println!("\nwhy they fail today:\n{}", reasons.join("\n"));
    }
    let leaks: Vec<String> = (0..cases.len())
        .filter_map(|idx| recorder.line_with(&Case::marker(idx, "bad")).map(|line| format!("{idx:>2}  {line}")))
        .collect();
    if !leaks.is_empty() {
        println!("\nwhat the backend received of the requests it should never have seen:\n{}", leaks.join("\n"));
    }
    if !passing_flagged.is_empty() {
        println!("\nflagged fails_today but passing now: {passing_flagged:?}");
    }
    assert!(unexpected.is_empty(), "cases that should pass failed:\n{}\n{}", unexpected.join("\n"), gw.log());
}

/// A batch of good requests pipelined behind a chunked body (with an extension and a trailer)
/// on one connection: every one reaches the backend and is answered, in order, and the
/// connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_batch_after_a_chunked_body_is_answered_in_order() {
    let recorder = Recorder::start().await;
    let gw = Gateway::start(&upstreams(recorder.addr, dead_addr()));
    let mut batch = String::from(
        "POST /batch/0 HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;n=v\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\n",
    );
    let n = 12;
    for i in 1..n {
        batch += &match i % 3 {
            0 => format!("POST /batch/{i} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc"),
            1 => format!("GET /batch/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n"),
            _ => format!(
                "POST /batch/{i} HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            ),
        };
    }
    let out = exchange(gw.port, batch.as_bytes(), n).await;
    let bodies: Vec<String> = out.responses.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    let want: Vec<String> = (0..n).map(|i| format!("/batch/{i}")).collect();
    assert_eq!(bodies, want, "{}", gw.log());
    assert!(out.responses.iter().all(|r| r.status == 200));
    assert!(!out.closed, "the connection stays open");
    assert_eq!(recorder.body_of("/batch/0").as_deref(), Some(&b"hello!"[..]));
}

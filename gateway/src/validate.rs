//! Request validation in the earliest filter: the target, the headers and the framing are checked
//! before any upstream sees the request, at least as strictly as nginx (see the README for what
//! Pingora's parser still lets through). Pure.
//!
//! It runs on every request, so it reads the target once (a byte-class table) and the headers
//! once (no lookups by name): a path with no `.`, `%` or `\` has no dot segment, encoded slash
//! or backslash to look for.

use http::{header, HeaderValue, Method};
use pingora::http::RequestHeader;
use strangler_wire::headers::INTERNAL_PREFIX;

use crate::edge::framing::MAX_LENGTH_DIGITS;
use crate::forwarding::{TRACEPARENT, X_REQUEST_ID};

/// What a byte of the request target is, for [`validate_request`]'s single pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TargetByte {
    Plain,
    /// Controls, space, DEL, `#` and non-ASCII: refused.
    Invalid,
    /// `.`, `%` or `\`: the path may hold a dot segment, an encoded slash or a backslash.
    DotOrPercent,
    /// `/`: two in a row are an empty segment.
    Slash,
    /// `?`: the path ends here.
    Query,
}

const TARGET_BYTES: [TargetByte; 256] = {
    let mut t = [TargetByte::Plain; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            0..=0x20 | 0x7f | b'#' | 0x80..=0xff => TargetByte::Invalid,
            b'.' | b'%' | b'\\' => TargetByte::DotOrPercent,
            b'/' => TargetByte::Slash,
            b'?' => TargetByte::Query,
            _ => TargetByte::Plain,
        };
        b += 1;
    }
    t
};

/// A problem with the request: status, error code and message of the answer.
pub type Problem = (u16, &'static str, &'static str);

/// What the request path reads from a valid request's headers, found in [`check_request`]'s one
/// pass over them (each would otherwise be a lookup by name of its own). First values, like
/// `HeaderMap::get`.
#[derive(Default)]
pub struct Seen<'a> {
    pub request_id: Option<&'a HeaderValue>,
    pub traceparent: Option<&'a HeaderValue>,
    /// The `Content-Length` (only one, and digits, once checked).
    pub content_length: Option<&'a HeaderValue>,
    pub upgrade: Option<&'a HeaderValue>,
    pub accept: Option<&'a HeaderValue>,
}

impl Seen<'_> {
    /// The declared body length (validated: a single `Content-Length`, at most 19 digits).
    pub fn declared_length(&self) -> Option<u64> {
        self.content_length?.to_str().ok()?.parse().ok()
    }
}

/// Problems with the request itself, found before any upstream sees it.
pub fn validate_request(req: &RequestHeader, max_header_bytes: usize) -> Option<Problem> {
    check_request(req, max_header_bytes).err()
}

/// [`validate_request`], and on a valid request the headers the request path reads next.
pub fn check_request(req: &RequestHeader, max_header_bytes: usize) -> Result<Seen<'_>, Problem> {
    let raw = req.raw_path();
    // origin-form only (or `*` for OPTIONS)
    let origin_form = raw.first() == Some(&b'/');
    if !(origin_form || (raw == b"*" && req.method == Method::OPTIONS)) {
        return Err((400, "bad_request", "request target must be an absolute path"));
    }
    let mut path_end = raw.len();
    let mut dot_or_percent = false;
    // An empty segment (`//`): routes match the path as sent, and an upstream that merges
    // slashes (as nginx does) would serve `//api/orders` as `/api/orders` without the route's
    // auth and limits. Refused, as are backslashes (`\`, `%5C`: a path separator to some
    // servers) and dot segments with parameters (`..;`) below.
    let mut last_slash: Option<usize> = None;
    let mut empty_segment = false;
    for (i, b) in raw.iter().enumerate() {
        match TARGET_BYTES[usize::from(*b)] {
            TargetByte::Plain => {}
            TargetByte::Slash => {
                empty_segment |= last_slash.is_some_and(|l| l + 1 == i) && i < path_end;
                last_slash = Some(i);
            }
            TargetByte::Invalid => return Err((400, "bad_request", "invalid character in request target")),
            TargetByte::DotOrPercent => dot_or_percent |= i < path_end,
            TargetByte::Query => path_end = path_end.min(i),
        }
    }
    if empty_segment {
        return Err((400, "bad_request", "empty segment (//) in the path"));
    }
    if dot_or_percent {
        if let Some(problem) = path_segment_problem(&raw[..path_end]) {
            return Err((400, "bad_request", problem));
        }
    }
    let mut size = req.method.as_str().len() + raw.len() + 12;
    let (mut hosts, mut host) = (0usize, None::<&HeaderValue>);
    let (mut tes, mut te) = (0usize, None::<&HeaderValue>);
    let (mut cls, mut cl, mut cl_invalid) = (0usize, None::<&HeaderValue>, false);
    let mut nominates_internal = false;
    let mut seen = Seen::default();
    for (k, v) in req.headers.iter() {
        size += k.as_str().len() + v.len() + 4;
        if v.as_bytes().iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
            return Err((400, "bad_request", "invalid character in a header value"));
        }
        if *k == header::HOST {
            hosts += 1;
            host.get_or_insert(v);
        } else if *k == header::TRANSFER_ENCODING {
            tes += 1;
            te.get_or_insert(v);
        } else if *k == header::CONTENT_LENGTH {
            // digits only (so no comma list); nginx refuses a second one, even an identical one.
            // No more digits than the edge's framing follows: one it did not would leave the
            // connection's later requests unchecked (Pingora reads leading zeros as nothing).
            cls += 1;
            cl.get_or_insert(v);
            cl_invalid |= v.is_empty() || v.len() > MAX_LENGTH_DIGITS || !v.as_bytes().iter().all(u8::is_ascii_digit);
        } else if *k == header::CONNECTION {
            // the headers it names are hop-by-hop: Pingora and `strip_hop_by_hop` remove them
            // after auth wrote the gateway's own, so a client could delete its identity headers
            nominates_internal |= v.as_bytes().split(|b| *b == b',').any(|t| {
                t.trim_ascii()
                    .get(..INTERNAL_PREFIX.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(INTERNAL_PREFIX.as_bytes()))
            });
        } else if *k == header::UPGRADE {
            seen.upgrade.get_or_insert(v);
        } else if *k == header::ACCEPT {
            seen.accept.get_or_insert(v);
        } else if *k == X_REQUEST_ID {
            seen.request_id.get_or_insert(v);
        } else if *k == TRACEPARENT {
            seen.traceparent.get_or_insert(v);
        }
    }
    if size > max_header_bytes {
        return Err((431, "request_header_fields_too_large", "request headers are too large"));
    }
    // nginx accepts only uppercase methods; a backend that upper-cases would read another one
    if !req.method.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') {
        return Err((400, "bad_request", "invalid method"));
    }
    if hosts > 1 || (hosts == 0 && req.version == http::Version::HTTP_11) {
        return Err((400, "bad_request", "exactly one Host header is required"));
    }
    if host.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Err((400, "bad_request", "invalid Host header"));
    }
    if tes > 1 {
        return Err((400, "bad_request", "several Transfer-Encoding headers"));
    }
    if te.is_some_and(|te| !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")) {
        // nginx: only a single "chunked" coding is understood; anything else is 501
        return Err((501, "not_implemented", "only Transfer-Encoding: chunked is supported"));
    }
    if cl.is_some() {
        if te.is_some() {
            return Err((400, "bad_request", "both Content-Length and Transfer-Encoding"));
        }
        if cls > 1 {
            return Err((400, "bad_request", "several Content-Length headers"));
        }
        if cl_invalid {
            return Err((400, "bad_request", "invalid Content-Length"));
        }
    }
    if nominates_internal {
        return Err((400, "bad_request", "Connection names a gateway header (x-strangler-*)"));
    }
    seen.content_length = cl;
    Ok(seen)
}

/// The byte `%` followed by `hi lo` stands for, when they are two hex digits.
fn decoded(hi: u8, lo: u8) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    Some((hex(hi)? * 16 + hex(lo)?) as u8)
}

/// A dot segment (`.`, `..`, also percent-encoded, also with parameters: `..;x`), an encoded
/// slash, a backslash (`\`, `%5C`) or a percent-encoded unreserved character in the path,
/// segment by segment (the first segment with one decides).
fn path_segment_problem(path: &[u8]) -> Option<&'static str> {
    for seg in path.split(|b| *b == b'/') {
        // each escape decoded once; what it stands for decides. `%6f` is `o` to an upstream
        // that decodes before it routes, not to the route table: `/api/%6frders` would miss
        // `/api/orders` and its auth (RFC 3986 §2.3: producers should not encode these). Dots
        // (`%2e`) are the dot segments' business, below.
        for w in seg.windows(3).filter(|w| w[0] == b'%') {
            match decoded(w[1], w[2]) {
                Some(b'/') => return Some("encoded slash in the path"),
                Some(b'\\') => return Some("backslash in the path"),
                Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'~') => {
                    return Some("percent-encoded letter, digit, '-', '_' or '~' in the path (send it as is)")
                }
                _ => {}
            }
        }
        if seg.contains(&b'\\') {
            return Some("backslash in the path");
        }
        let mut dots = 0;
        let mut i = 0;
        let mut other = false;
        while i < seg.len() {
            if seg[i] == b'.' {
                dots += 1;
                i += 1;
            } else if seg.len() >= i + 3 && seg[i] == b'%' && seg[i + 1] == b'2' && (seg[i + 2] | 0x20) == b'e' {
                dots += 1;
                i += 3;
            } else {
                // `..;x` is `..` to servers that take `;` as the start of path parameters
                other = seg[i] != b';';
                break;
            }
        }
        if !other && (dots == 1 || dots == 2) {
            return Some("dot segments are not allowed in the path");
        }
    }
    None
}

/// A Host value: a host name, IPv4 or bracketed IPv6 literal, optionally `:port` (RFC 3986
/// reg-name characters; no spaces, slashes, `@` or controls).
fn valid_host(h: &[u8]) -> bool {
    !h.is_empty()
        && h.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn request_validation_table() {
        let host = [("host", "x")];
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<u16>);
        let cases: &[Case] = &[
            ("GET", "/ok?x=1", &host, None),
            ("GET", "/a/../b", &host, Some(400)),
            ("GET", "/a/%2e%2E/b", &host, Some(400)),
            ("GET", "/a/./b", &host, Some(400)),
            ("GET", "/a/...b/c", &host, None),
            ("GET", "/a%2fb", &host, Some(400)),
            ("GET", "/ok", &[], Some(400)),
            ("GET", "/ok", &[("host", "a"), ("host", "b")], Some(400)),
            ("POST", "/ok", &[("host", "a"), ("content-length", "3"), ("transfer-encoding", "chunked")], Some(400)),
            ("POST", "/ok", &[("host", "a"), ("content-length", "3"), ("content-length", "4")], Some(400)),
            ("POST", "/ok", &[("host", "a"), ("content-length", "-1")], Some(400)),
            // nginx: 400 for a second Content-Length, even an identical one
            ("POST", "/ok", &[("host", "a"), ("content-length", "3"), ("content-length", "3")], Some(400)),
            ("POST", "/ok", &[("host", "a"), ("content-length", "3,3")], Some(400)),
            ("POST", "/ok", &[("host", "a"), ("content-length", "0000000000000000003")], None),
            // more digits than the edge's framing follows (it would stop checking the connection)
            ("POST", "/ok", &[("host", "a"), ("content-length", "00000000000000000003")], Some(400)),
            ("POST", "/ok", &[("host", "a"), ("content-length", "000000000000000000001")], Some(400)),
            // a Connection header naming a gateway-owned header would have it stripped after
            // the gateway set it
            (
                "GET",
                "/ok",
                &[("host", "a"), ("connection", "x-strangler-claim-tenant, x-strangler-consumer")],
                Some(400),
            ),
            ("GET", "/ok", &[("host", "a"), ("connection", "keep-alive,X-Strangler-Auth")], Some(400)),
            ("GET", "/ok", &[("host", "a"), ("connection", " ,\tx-STRANGLER-consumer\t,")], Some(400)),
            ("GET", "/ok", &[("host", "a"), ("connection", "close"), ("connection", "x-strangler-")], Some(400)),
            ("GET", "/ok", &[("host", "a"), ("connection", "keep-alive, x-other, strangler")], None),
            ("GET", "/ok", &[("host", "a"), ("connection", "Upgrade"), ("upgrade", "websocket")], None),
            ("POST", "/ok", &[("host", "a"), ("content-length", "")], Some(400)),
            ("POST", "/ok", &[("host", "a"), ("transfer-encoding", "chunked")], None),
            ("POST", "/ok", &[("host", "a"), ("transfer-encoding", " Chunked ")], None),
            ("POST", "/ok", &[("host", "a"), ("transfer-encoding", "gzip")], Some(501)),
            (
                "POST",
                "/ok",
                &[("host", "a"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
                Some(400),
            ),
            ("GET", "/ok", &[("host", "a/b")], Some(400)),
            ("GET", "/ok", &[("host", "[::1]:8080")], None),
            // dots and %2f after the `?` are the query's business
            ("GET", "/a/b?x=../c&y=%2F&z=.", &host, None),
            ("GET", "/a/%2E./b", &host, Some(400)),
            ("GET", "/a/.../b/.x/%2e%2e%2e/%25", &host, None),
            ("GET", "/a/%2Fb/../c", &host, Some(400)),
            ("GET", "/a%", &host, None),
            ("GET", "/.", &host, Some(400)),
            // empty segments, backslashes, dot segments with parameters
            ("GET", "//api/orders", &host, Some(400)),
            ("GET", "/api//orders", &host, Some(400)),
            ("GET", "/api/orders/", &host, None),
            ("GET", "/a?x=//y", &host, None),
            ("GET", "/a\\b", &host, Some(400)),
            ("GET", "/a/%5cb", &host, Some(400)),
            ("GET", "/a/..;/b", &host, Some(400)),
            ("GET", "/a/.;x/b", &host, Some(400)),
            ("GET", "/a/b;v=1/c", &host, None),
            // encoded unreserved characters: an upstream that decodes would route elsewhere
            ("GET", "/api/%6frders", &host, Some(400)),
            ("GET", "/api/orders/%37", &host, Some(400)),
            ("GET", "/a/%7E/b", &host, Some(400)),
            ("GET", "/a/%20b/%2Bc/%25", &host, None),
            ("GET", "/a?q=%6f", &host, None),
            ("OPTIONS", "*", &host, None),
            ("GET", "*", &host, Some(400)),
            ("get", "/ok", &host, Some(400)),
        ];
        for (m, t, h, want) in cases {
            let got = validate_request(&req(m, t, h), 16 * 1024).map(|v| v.0);
            assert_eq!(got, *want, "{m} {t} {h:?}");
        }
        let big = "x".repeat(20_000);
        // the one-pass checks against the header counted as a whole, in order of precedence
        let both = req("POST", "/a/../b", &[("host", "a"), ("content-length", "1"), ("transfer-encoding", "x")]);
        assert_eq!(validate_request(&both, 16 * 1024).map(|v| v.2), Some("dot segments are not allowed in the path"));
        let both = req("POST", "/b", &[("host", "a"), ("host", "b"), ("transfer-encoding", "x")]);
        assert_eq!(validate_request(&both, 16 * 1024).map(|v| v.2), Some("exactly one Host header is required"));
        assert_eq!(
            validate_request(&req("GET", "/", &[("host", "a"), ("x-big", &big)]), 16 * 1024).map(|v| v.0),
            Some(431)
        );
    }

    /// A valid request's first values of the headers the request path reads, as `get` gives them.
    #[test]
    fn a_valid_request_reports_the_headers_read_next() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let r = req(
            "POST",
            "/a?b=1",
            &[
                ("host", "a"),
                ("Content-Length", "12"),
                ("x-request-id", "id-1"),
                ("X-Request-Id", "id-2"),
                ("traceparent", tp),
                ("upgrade", "websocket"),
                ("accept", "text/event-stream"),
            ],
        );
        let seen = check_request(&r, 16 * 1024).unwrap();
        assert_eq!(seen.request_id.unwrap(), r.headers.get("x-request-id").unwrap());
        assert_eq!(seen.request_id.unwrap(), "id-1");
        assert_eq!(seen.traceparent.unwrap(), tp);
        assert_eq!(seen.upgrade.unwrap(), "websocket");
        assert_eq!(seen.accept.unwrap(), "text/event-stream");
        assert_eq!(seen.declared_length(), Some(12));
        let bare = req("GET", "/a", &[("host", "a")]);
        let bare = check_request(&bare, 16 * 1024).unwrap();
        assert!(bare.request_id.is_none() && bare.traceparent.is_none() && bare.upgrade.is_none());
        assert!(bare.accept.is_none() && bare.declared_length().is_none());
    }
}

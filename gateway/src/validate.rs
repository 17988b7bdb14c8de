//! Request validation in the earliest filter: the target, the headers and the framing are checked
//! before any upstream sees the request, at least as strictly as nginx (see the README for what
//! Pingora's parser still lets through). Pure.

use http::{header, HeaderValue, Method};
use pingora::http::RequestHeader;

/// Problems with the request itself, found before any upstream sees it.
pub fn validate_request(req: &RequestHeader, max_header_bytes: usize) -> Option<(u16, &'static str, &'static str)> {
    let raw = req.raw_path();
    // origin-form only (or `*` for OPTIONS)
    let origin_form = raw.first() == Some(&b'/');
    if !(origin_form || (raw == b"*" && req.method == Method::OPTIONS)) {
        return Some((400, "bad_request", "request target must be an absolute path"));
    }
    if raw.iter().any(|b| *b <= 0x20 || *b == 0x7f || *b == b'#' || *b >= 0x80) {
        return Some((400, "bad_request", "invalid character in request target"));
    }
    let path = raw.split(|b| *b == b'?').next().unwrap_or(raw);
    for seg in path.split(|b| *b == b'/') {
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
                other = true;
                break;
            }
        }
        if !other && (dots == 1 || dots == 2) {
            return Some((400, "bad_request", "dot segments are not allowed in the path"));
        }
        if seg.windows(3).any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'f') {
            return Some((400, "bad_request", "encoded slash in the path"));
        }
    }
    let mut size = req.method.as_str().len() + raw.len() + 12;
    for (k, v) in req.headers.iter() {
        size += k.as_str().len() + v.len() + 4;
        if v.as_bytes().iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
            return Some((400, "bad_request", "invalid character in a header value"));
        }
    }
    if size > max_header_bytes {
        return Some((431, "request_header_fields_too_large", "request headers are too large"));
    }
    // nginx accepts only uppercase methods; a backend that upper-cases would read another one
    if !req.method.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') {
        return Some((400, "bad_request", "invalid method"));
    }
    let hosts = req.headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version == http::Version::HTTP_11) {
        return Some((400, "bad_request", "exactly one Host header is required"));
    }
    if req.headers.get(header::HOST).is_some_and(|h| !valid_host(h.as_bytes())) {
        return Some((400, "bad_request", "invalid Host header"));
    }
    let tes: Vec<&HeaderValue> = req.headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if tes.len() > 1 {
        return Some((400, "bad_request", "several Transfer-Encoding headers"));
    }
    if tes.first().is_some_and(|te| !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")) {
        // nginx: only a single "chunked" coding is understood; anything else is 501
        return Some((501, "not_implemented", "only Transfer-Encoding: chunked is supported"));
    }
    let cls: Vec<&HeaderValue> = req.headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if !cls.is_empty() {
        if req.headers.contains_key(header::TRANSFER_ENCODING) {
            return Some((400, "bad_request", "both Content-Length and Transfer-Encoding"));
        }
        if cls.iter().any(|v| v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit))
            || cls.windows(2).any(|w| w[0] != w[1])
        {
            return Some((400, "bad_request", "invalid Content-Length"));
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
        ];
        for (m, t, h, want) in cases {
            let got = validate_request(&req(m, t, h), 16 * 1024).map(|v| v.0);
            assert_eq!(got, *want, "{m} {t} {h:?}");
        }
        let big = "x".repeat(20_000);
        assert_eq!(
            validate_request(&req("GET", "/", &[("host", "a"), ("x-big", &big)]), 16 * 1024).map(|v| v.0),
            Some(431)
        );
    }
}

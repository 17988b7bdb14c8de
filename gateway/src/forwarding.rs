//! The headers a request loses and gains on its way upstream: hop-by-hop headers removed (and
//! those `Connection` names; a WebSocket upgrade keeps its handshake), the gateway's own
//! `x-strangler-*` namespace removed, `X-Forwarded-For` appended, `X-Forwarded-Proto`/`-Host`,
//! `x-request-id` and `traceparent` added; and the response's `x-request-id`.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::metrics::metrics;

/// Header names the gateway reads and writes on every request, parsed at compile time (a name
/// given as `&str` is parsed, and for a non-standard one allocated, on every use).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What the gateway adds to a request it forwards.
pub struct Forwarding<'a> {
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_ip: Option<std::net::IpAddr>,
    /// The client connection is TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// The peer is one of `trusted_proxies`: the `X-Forwarded-Proto` and `X-Forwarded-Host` it
    /// sent are kept. From any other peer they are the client's word and are replaced by what the
    /// gateway saw (the connection's scheme, the request's Host).
    pub from_trusted_proxy: bool,
    pub request_id: Option<&'a HeaderValue>,
    pub traceparent: Option<HeaderValue>,
}

/// Adds the forwarding headers (`X-Forwarded-For` appended to, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set — kept as sent only from a trusted proxy —, `x-request-id`,
/// `traceparent`) to the request about to go upstream.
///
/// The request Pingora hands to `upstream_request_filter` is a clone of the client's, carrying
/// Pingora's case-preserving name map beside the `http::HeaderMap`: each
/// `RequestHeader::insert_header` parses the name (allocating a non-standard one), clones it
/// (a second allocation) and writes both maps, growing them when full: ~2k instructions per
/// header. Here the header is taken apart instead, the case map dropped, room reserved once,
/// and the pre-parsed names inserted into the one map, then it is put back together. The
/// upstream therefore receives header names in their canonical form (`Host`, `Content-Type`,
/// `Content-Length` ... titled, the others lowercase) rather than as the client spelled them;
/// HTTP/1 header names are case-insensitive (RFC 9110 section 5.1). A request-target the URI
/// does not reproduce (absolute-form, non-UTF-8) keeps the case-preserving path.
pub fn add_forwarding_headers(req: &mut RequestHeader, f: Forwarding<'_>) -> pingora::Result<()> {
    // one pass over the client's headers instead of a lookup by name for each (first values,
    // like `HeaderMap::get`)
    let (mut host, mut xff, mut has_xfp, mut has_xfh) = (None, None, false, false);
    for (k, v) in req.headers.iter() {
        if *k == header::HOST {
            host.get_or_insert(v);
        } else if *k == X_FORWARDED_FOR {
            xff.get_or_insert(v);
        } else if *k == X_FORWARDED_PROTO {
            has_xfp = true;
        } else if *k == X_FORWARDED_HOST {
            has_xfh = true;
        }
    }
    let mut add: [Option<(HeaderName, HeaderValue)>; 5] = Default::default();
    if let Some(ip) = f.client_ip {
        add[0] = Some((X_FORWARDED_FOR, forwarded_for(xff.map(|v| v.as_bytes()), ip)));
    }
    if !f.from_trusted_proxy || !has_xfp {
        add[1] = Some((X_FORWARDED_PROTO, HeaderValue::from_static(if f.tls { "https" } else { "http" })));
    }
    // no Host to state (an HTTP/2 request names its authority in the URI): the client's claim
    // does not go upstream either
    let mut drop_xfh = false;
    if !f.from_trusted_proxy || !has_xfh {
        add[2] = host.map(|h| (X_FORWARDED_HOST, h.clone()));
        drop_xfh = add[2].is_none() && !f.from_trusted_proxy && has_xfh;
    }
    if drop_xfh {
        req.remove_header(&X_FORWARDED_HOST);
    }
    add[3] = f.request_id.map(|id| (X_REQUEST_ID, id.clone()));
    add[4] = f.traceparent.map(|t| (TRACEPARENT, t));
    // the URI reproduces the target exactly (origin-form, UTF-8): rebuilding from the URI is
    // lossless
    let from_uri =
        req.raw_path_is_utf8() && req.uri.path_and_query().is_some_and(|p| p.as_str().as_bytes() == req.raw_path());
    if !from_uri {
        for (name, value) in add.into_iter().flatten() {
            req.insert_header(name, value)?;
        }
        return Ok(());
    }
    let end_stream = req.send_end_stream();
    // an empty `Parts` (no allocation) stands in while the real one is taken apart
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, placeholder).into();
    parts.headers.reserve(add.iter().flatten().count());
    for (name, value) in add.into_iter().flatten() {
        parts.headers.insert(name, value);
    }
    *req = RequestHeader::from(parts);
    if let Some(end_stream) = end_stream {
        req.set_send_end_stream(end_stream);
    }
    Ok(())
}

/// Sets `x-request-id` on the response going to the client.
///
/// Pingora writes its own `Connection` (and `Date`) on every final HTTP/1 response after the
/// filters ran, replacing the upstream's, and drops `Connection` on HTTP/2; on a 1xx (a 101
/// upgrade included) it keeps the upstream's. Its `insert_header` reserves room for one more
/// entry before looking the name up, and the header it hands to the filters is a clone whose
/// maps have room for the upstream's headers only: with `x-request-id` added, its insertion of
/// `Connection` (even as a replacement) grew both maps on every request (~1.4k instructions,
/// two reallocations). The upstream's `Connection` is therefore removed first on a final
/// response: the client receives the same headers, names spelled as before, with Pingora's
/// `Connection` after `x-request-id` instead of in the upstream's place (the order of
/// different field names carries no meaning, RFC 9110 section 5.3).
pub fn add_response_request_id(resp: &mut ResponseHeader, id: &HeaderValue) -> pingora::Result<()> {
    if !resp.status.is_informational() {
        resp.remove_header(&header::CONNECTION);
    }
    // a `&'static str` name: Pingora keeps it as the name's spelling without an allocation
    resp.insert_header("x-request-id", id.clone())
}

const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer"];

/// Whether any hop-by-hop header (or one a `Connection` header could name) is present: one pass
/// over the names, so the common request with none skips the removals entirely.
pub fn has_hop_by_hop(headers: &http::HeaderMap) -> bool {
    headers.keys().any(|k| {
        *k == header::CONNECTION
            || *k == header::UPGRADE
            || *k == header::TE
            || *k == header::TRAILER
            || *k == header::PROXY_AUTHENTICATE
            || *k == header::PROXY_AUTHORIZATION
            || k.as_str() == "keep-alive"
            || k.as_str() == "proxy-connection"
    })
}

/// `X-Forwarded-For` with `ip` appended, into a buffer of the exact size: one allocation (the
/// address is formatted on the stack; `Bytes` from a `Vec` whose length is not its capacity
/// allocates a second, shared, header).
pub fn forwarded_for(prev: Option<&[u8]>, ip: std::net::IpAddr) -> HeaderValue {
    let prev = prev.filter(|p| !p.is_empty());
    let mut buf = [0u8; 45]; // the longest IPv6 text form
    let n = write_ip(&mut buf, ip);
    let mut v = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + n);
    if let Some(p) = prev {
        v.extend_from_slice(p);
        v.extend_from_slice(b", ");
    }
    v.extend_from_slice(&buf[..n]);
    // the previous value was a valid header value and we only appended ASCII
    HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Writes `ip` in its text form into `buf`, returning the length. IPv4 digit by digit: `write!`
/// through `fmt` was ~1k instructions per request for the usual IPv4 client.
fn write_ip(buf: &mut [u8; 45], ip: std::net::IpAddr) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut addr = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(addr, "{ip}");
            addr.position() as usize
        }
    }
}

/// A WebSocket upgrade request.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    is_websocket_value(req.headers.get(header::UPGRADE))
}

/// The request's (first) `Upgrade` asks for a WebSocket.
pub fn is_websocket_value(upgrade: Option<&HeaderValue>) -> bool {
    upgrade.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Strips hop-by-hop headers, and those the `Connection` header names; keeps the upgrade
/// handshake of a WebSocket request.
pub fn strip_hop_by_hop(req: &mut RequestHeader) {
    let websocket = is_websocket_upgrade(req);
    // headers named in Connection are hop-by-hop too
    let named: Vec<String> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "upgrade" && t != "close" && t != "keep-alive")
        .collect();
    for n in named {
        req.remove_header(n.as_str());
    }
    for h in HOP_BY_HOP {
        if websocket && h == "connection" {
            continue;
        }
        req.remove_header(h);
    }
    if !websocket {
        req.remove_header("upgrade");
    }
}

/// Whether the client sent any header in the gateway's `x-strangler-*` namespace.
#[inline]
pub fn has_internal_headers(headers: &http::HeaderMap) -> bool {
    headers.keys().any(|k| strangler_wire::headers::is_internal(k.as_str()))
}

/// Removes every `x-strangler-*` header a client sent, and counts them.
pub fn strip_internal_headers(req: &mut RequestHeader) {
    let names: Vec<http::HeaderName> =
        req.headers.keys().filter(|k| strangler_wire::headers::is_internal(k.as_str())).cloned().collect();
    for n in &names {
        req.remove_header(n);
    }
    metrics().internal_headers_stripped.inc_by(names.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client_ip() {
        let v4: std::net::IpAddr = "10.0.200.7".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(forwarded_for(None, v4), "10.0.200.7");
        assert_eq!(forwarded_for(Some(b""), "0.9.99.255".parse().unwrap()), "0.9.99.255");
        assert_eq!(forwarded_for(Some(b"1.2.3.4"), v4), "1.2.3.4, 10.0.200.7");
        assert_eq!(forwarded_for(None, v6), "2001:db8::1");
        assert_eq!(forwarded_for(Some(b"a"), "255.255.255.255".parse().unwrap()), "a, 255.255.255.255");
        // every octet width in every position, against the standard library's text form
        for s in ["100.10.1.0", "0.0.0.0", "9.99.100.199", "200.20.2.250", "127.0.0.1"] {
            let ip: std::net::IpAddr = s.parse().unwrap();
            assert_eq!(forwarded_for(None, ip), ip.to_string().as_str());
        }
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        assert_eq!(forwarded_for(None, v6), v6.to_string().as_str());
    }

    fn forwarding(id: &HeaderValue) -> Forwarding<'_> {
        Forwarding {
            client_ip: Some("10.1.2.3".parse().unwrap()),
            tls: true,
            from_trusted_proxy: false,
            request_id: Some(id),
            traceparent: Some(HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
        }
    }

    /// An origin-form request is rebuilt without the case map: the client's headers, target and
    /// the added ones all there, names in canonical form on the wire.
    #[test]
    fn origin_form_requests_lose_the_case_map_and_keep_everything_else() {
        let mut req = RequestHeader::build("POST", b"/orders/7?x=1&y=%20", None).unwrap();
        req.append_header("Host", "shop.example").unwrap();
        req.append_header("X-Forwarded-For", "203.0.113.9").unwrap();
        req.append_header("X-Custom", "a").unwrap();
        req.append_header("x-custom", "b").unwrap();
        let id = HeaderValue::from_static("rid-1");
        add_forwarding_headers(&mut req, forwarding(&id)).unwrap();
        assert!(!req.has_case());
        assert_eq!(req.raw_path(), b"/orders/7?x=1&y=%20");
        assert_eq!(req.method, http::Method::POST);
        let h = &req.headers;
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.9, 10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example");
        assert_eq!(h[&X_REQUEST_ID], "rid-1");
        assert_eq!(h[&TRACEPARENT].len(), 55);
        assert_eq!(h.get_all("x-custom").iter().collect::<Vec<_>>(), ["a", "b"]);
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("Host: shop.example\r\n"), "{wire}");
        assert!(wire.contains("x-custom: a\r\nx-custom: b\r\n"), "{wire}");
        assert!(wire.contains("x-forwarded-proto: https\r\n"), "{wire}");
    }

    /// The response as Pingora hands it to `response_filter` (a clone of the upstream's, parsed
    /// with room for its headers only), then what Pingora's HTTP/1 writer does after the
    /// filters (`Date` and `Connection` inserted).
    fn upstream_response(status: u16, connection: &'static str) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, Some(5)).unwrap();
        for (k, v) in [
            ("server", "nginx"),
            ("Date", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ("Content-TYPE", "application/json"),
            ("Content-Length", "2"),
            ("Connection", connection),
        ] {
            resp.append_header(k, v).unwrap();
        }
        resp.clone()
    }

    fn pingora_writes(resp: &mut ResponseHeader) -> String {
        if !resp.status.is_informational() {
            resp.insert_header(header::DATE, "Tue, 01 Dec 2026 00:00:01 GMT").unwrap();
            resp.insert_header(header::CONNECTION, "keep-alive").unwrap();
        }
        let mut wire = Vec::new();
        resp.header_to_h1_wire(&mut wire);
        String::from_utf8(wire).unwrap()
    }

    /// The response's `x-request-id` leaves the client the same headers, spelled as the upstream
    /// spelled them, and Pingora's own `Connection` no longer grows the header maps.
    #[test]
    fn the_response_request_id_keeps_the_headers_and_the_maps_room() {
        let id = HeaderValue::from_static("rid-9");
        let mut resp = upstream_response(200, "close");
        let room = resp.headers.capacity();
        add_response_request_id(&mut resp, &id).unwrap();
        let wire = pingora_writes(&mut resp);
        assert_eq!(resp.headers.capacity(), room, "the header map grew");
        for line in [
            "server: nginx\r\n",
            "Content-TYPE: application/json\r\n",
            "Content-Length: 2\r\n",
            "x-request-id: rid-9\r\n",
            "Date: Tue, 01 Dec 2026 00:00:01 GMT\r\n",
            "Connection: keep-alive\r\n",
        ] {
            assert_eq!(wire.matches(line).count(), 1, "{line:?} in {wire}");
        }
        assert_eq!(wire.matches("\r\n").count(), 6, "{wire}");
        assert!(!wire.contains("close"), "{wire}");

        // what it replaced: inserting into the upstream's header as it stands grows both maps
        let mut old = upstream_response(200, "close");
        old.insert_header("x-request-id", id.clone()).unwrap();
        let old_wire = pingora_writes(&mut old);
        assert!(old.headers.capacity() > room);
        let lines = |w: &str| w.split("\r\n").map(str::to_string).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(lines(&old_wire), lines(&wire), "the same header lines");

        // a 101 keeps the upstream's `Connection: upgrade` (Pingora does not write its own)
        let mut up = upstream_response(101, "Upgrade");
        add_response_request_id(&mut up, &id).unwrap();
        let wire = pingora_writes(&mut up);
        assert!(wire.contains("Connection: Upgrade\r\n") && wire.contains("x-request-id: rid-9\r\n"), "{wire}");
    }

    /// A target the URI does not reproduce (absolute-form) keeps its bytes and the case map.
    #[test]
    fn other_targets_keep_their_bytes_and_case() {
        let mut req = RequestHeader::build("GET", b"http://shop.example/a", None).unwrap();
        req.append_header("Host", "shop.example").unwrap();
        req.append_header("X-Forwarded-Proto", "https").unwrap();
        let id = HeaderValue::from_static("rid-2");
        // from a trusted proxy (the untrusted case: the test below)
        add_forwarding_headers(&mut req, Forwarding { tls: false, from_trusted_proxy: true, ..forwarding(&id) })
            .unwrap();
        assert!(req.has_case());
        assert_eq!(req.raw_path(), b"http://shop.example/a");
        assert_eq!(req.headers[&X_FORWARDED_PROTO], "https", "the client's value is kept");
        assert_eq!(req.headers[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(req.headers[&X_REQUEST_ID], "rid-2");
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert!(String::from_utf8(wire).unwrap().contains("X-Forwarded-Proto: https\r\n"));
    }

    /// `X-Forwarded-Proto` and `X-Forwarded-Host` from a peer that is not a trusted proxy are the
    /// client's claim: replaced by the connection's scheme and the request's Host (removed when
    /// there is no Host), on both ways of rebuilding the header; a trusted proxy's are kept.
    #[test]
    fn forwarded_proto_and_host_are_kept_only_from_a_trusted_proxy() {
        let id = HeaderValue::from_static("rid-3");
        for target in [&b"/a"[..], b"http://shop.example/a"] {
            for (host, trusted) in [(Some("shop.example"), false), (None, false), (Some("shop.example"), true)] {
                let mut req = RequestHeader::build("GET", target, None).unwrap();
                if let Some(h) = host {
                    req.append_header("Host", h).unwrap();
                }
                req.append_header("X-Forwarded-Proto", "https").unwrap();
                req.append_header("X-Forwarded-Host", "evil.example").unwrap();
                let f = Forwarding { tls: false, from_trusted_proxy: trusted, ..forwarding(&id) };
                add_forwarding_headers(&mut req, f).unwrap();
                let h = &req.headers;
                let case = format!("{} host={host:?} trusted={trusted}", String::from_utf8_lossy(target));
                let (proto, fwd_host) = match (trusted, host) {
                    (true, _) => (Some("https"), Some("evil.example")),
                    (false, Some(h)) => (Some("http"), Some(h)),
                    (false, None) => (Some("http"), None),
                };
                assert_eq!(h.get(&X_FORWARDED_PROTO).map(|v| v.to_str().unwrap()), proto, "{case}");
                assert_eq!(h.get(&X_FORWARDED_HOST).map(|v| v.to_str().unwrap()), fwd_host, "{case}");
                assert_eq!(h.get_all(&X_FORWARDED_PROTO).iter().count(), 1, "{case}");
            }
        }
    }
}

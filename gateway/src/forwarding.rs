//! The headers a request loses and gains on its way upstream: hop-by-hop headers removed (and
//! those `Connection` names; a WebSocket upgrade keeps its handshake), the gateway's own
//! `x-strangler-*` namespace removed, `X-Forwarded-For` appended.

use bytes::Bytes;
use http::{header, HeaderValue};
use pingora::http::RequestHeader;

use crate::metrics::metrics;

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

/// `X-Forwarded-For` with `ip` appended, built without `fmt` (IPv4 digits written directly).
pub fn forwarded_for(prev: Option<&[u8]>, ip: std::net::IpAddr) -> HeaderValue {
    let prev = prev.filter(|p| !p.is_empty());
    let mut v = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + 45);
    if let Some(p) = prev {
        v.extend_from_slice(p);
        v.extend_from_slice(b", ");
    }
    match ip {
        std::net::IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    v.push(b'.');
                }
                if o >= 100 {
                    v.push(b'0' + o / 100);
                }
                if o >= 10 {
                    v.push(b'0' + (o / 10) % 10);
                }
                v.push(b'0' + o % 10);
            }
        }
        std::net::IpAddr::V6(a) => v.extend_from_slice(a.to_string().as_bytes()),
    }
    // the previous value was a valid header value and we only appended ASCII
    HeaderValue::from_maybe_shared(Bytes::from(v)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A WebSocket upgrade request.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    req.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
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
    }
}

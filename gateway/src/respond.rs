//! Answers the gateway gives itself (errors in the JSON shape every side uses, redirects,
//! preflights), written straight to the client without an upstream.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use strangler_wire::ErrorBody;

/// Writes a JSON error response. Never includes internal detail.
pub async fn respond_json(
    session: &mut Session,
    status: u16,
    code: &'static str,
    message: &'static str,
    request_id: Option<&HeaderValue>,
) {
    reply(session, &Reply::new(status, code, message), request_id).await;
}

/// An answer the gateway gives itself: a status, the JSON error body, extra headers
/// (`WWW-Authenticate`, `Retry-After`, CORS).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    pub fn new(status: u16, code: &'static str, message: &'static str) -> Self {
        Self { status, code, message, headers: Vec::new() }
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Writes `r`: its JSON error body (none for 204) and headers. Never includes internal detail.
pub async fn reply(session: &mut Session, r: &Reply, request_id: Option<&HeaderValue>) {
    let status = r.status;
    let rid = request_id.and_then(|v| v.to_str().ok()).unwrap_or("");
    let body =
        if status == 204 { String::new() } else { ErrorBody::new(r.code, r.message).with_request_id(rid).to_json() };
    let Ok(mut resp) = ResponseHeader::build(status, Some(5 + r.headers.len())) else { return };
    for (k, v) in &r.headers {
        let _ = resp.append_header(k.clone(), v.clone());
    }
    if status == 204 {
        if let Some(v) = request_id {
            let _ = resp.insert_header("x-request-id", v.clone());
        }
        let _ = session.write_response_header(Box::new(resp), true).await;
        return;
    }
    let _ = resp.insert_header(header::CONTENT_TYPE, "application/json");
    let _ = resp.insert_header(header::CONTENT_LENGTH, body.len().to_string());
    let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
    if let Some(v) = request_id {
        let _ = resp.insert_header("x-request-id", v.clone());
    }
    session.set_keepalive(None);
    if session.write_response_header(Box::new(resp), false).await.is_ok() {
        let _ = session.write_response_body(Some(Bytes::from(body)), true).await;
    }
}

/// `https://` + the request's host (its port replaced by the HTTPS listener's, dropped when 443)
/// + the request target.
pub fn https_location(req: &RequestHeader, https_port: u16) -> String {
    let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(req.uri.host()).unwrap_or("localhost");
    // strip a port (but not the colons of a bracketed IPv6 literal)
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if https_port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{https_port}{target}")
    }
}

/// Answers 308 (method and body kept) to `location`.
pub async fn redirect(session: &mut Session, location: &str, request_id: Option<&HeaderValue>) {
    let Ok(mut resp) = ResponseHeader::build(308, Some(4)) else { return };
    let _ = resp.insert_header(header::LOCATION, location);
    let _ = resp.insert_header(header::CONTENT_LENGTH, "0");
    if let Some(v) = request_id {
        let _ = resp.insert_header("x-request-id", v.clone());
    }
    let _ = session.write_response_header(Box::new(resp), true).await;
}

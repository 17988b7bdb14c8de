//! The dashboard's data endpoints take the same bearer token as `/admin/*`: a middleware that
//! answers 401 (with the admin API's error body) unless `Authorization: Bearer <token>` matches,
//! compared in constant time. Without a configured token they are open, like `/admin/*`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::reload::ConfigStore;

/// The admin token, read from the serving config at each check: a reload that changes it (a
/// leaked token rotated) takes effect at once, and the old one stops working.
#[derive(Clone)]
pub struct AdminToken(Arc<ConfigStore>);

impl AdminToken {
    pub fn new(store: Arc<ConfigStore>) -> Self {
        AdminToken(store)
    }

    /// Whether a token is configured (without one the protected endpoints are open).
    pub fn required(&self) -> bool {
        self.0.current().settings.admin_token.is_some()
    }

    /// Whether `headers` carry the configured token. Without one (a loopback-only admin port,
    /// see the config's rule), whether the request names this machine in its Host: a web page
    /// whose host name an attacker re-points at 127.0.0.1 (DNS rebinding) sends its own name.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        match self.0.current().settings.admin_token.as_deref() {
            Some(token) => bearer_ok(Some(token), headers),
            None => host_is_local(headers),
        }
    }
}

/// Whether the Host header names this machine: `localhost` or a loopback address, any port.
fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `headers` carry `token` (always, when there is none).
pub fn bearer_ok(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else { return true };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// `axum::middleware::from_fn_with_state` guard for the dashboard's JSON.
pub async fn require_token(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    if token.accepts(req.headers()) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Bearer"), ("cache-control", "no-store")],
        Json(json!({"error": {"code": "unauthorized", "message": "a valid bearer token is required"}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_names_are_local_hosts() {
        for (host, local) in [
            ("127.0.0.1:9901", true),
            ("localhost:9901", true),
            ("LOCALHOST", true),
            ("127.8.9.10", true),
            ("[::1]:9901", true),
            ("evil.example:9901", false),
            ("evil.example", false),
            ("10.0.0.1:9901", false),
            ("[::2]:1", false),
            ("localhost.evil.example", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(axum::http::header::HOST, host.parse().unwrap());
            assert_eq!(host_is_local(&h), local, "{host}");
        }
        assert!(!host_is_local(&HeaderMap::new()), "no Host");
    }

    #[test]
    fn compares_the_whole_token() {
        let mut h = HeaderMap::new();
        assert!(bearer_ok(None, &h));
        assert!(!bearer_ok(Some("secret"), &h));
        h.insert("authorization", "Bearer secre".parse().unwrap());
        assert!(!bearer_ok(Some("secret"), &h));
        h.insert("authorization", "Bearer secretx".parse().unwrap());
        assert!(!bearer_ok(Some("secret"), &h));
        h.insert("authorization", "Basic secret".parse().unwrap());
        assert!(!bearer_ok(Some("secret"), &h));
        h.insert("authorization", "Bearer secret".parse().unwrap());
        assert!(bearer_ok(Some("secret"), &h));
    }
}

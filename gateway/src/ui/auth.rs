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

    /// Whether `headers` carry the configured token (always, when none is configured).
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        bearer_ok(self.0.current().settings.admin_token.as_deref(), headers)
    }
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

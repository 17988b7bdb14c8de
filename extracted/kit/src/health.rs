//! `/health/live`, `/health/ready` and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::KitState;

pub(crate) async fn live(State(s): State<KitState>) -> impl IntoResponse {
    Json(json!({ "status": "live", "service": s.name }))
}

/// Ready only when a pooled connection answers `SELECT 1` within two seconds.
pub(crate) async fn ready(State(s): State<KitState>) -> impl IntoResponse {
    let check = async {
        let c = s.pool.get().await.map_err(|e| e.to_string())?;
        c.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready", "service": s.name }))),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "service": s.name, "reason": format!("database: {e}") })),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "service": s.name, "reason": "database: timed out" })),
        ),
    }
}

pub(crate) async fn metrics(State(s): State<KitState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

//! Liveness (the process answers) and readiness (the database answers).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::error::ApiError;

/// GET /health/live
pub async fn live() -> Response {
    Json(serde_json::json!({ "status": "live" })).into_response()
}

/// GET /health/ready: 200 when `SELECT 1` succeeds within two seconds, else 503.
pub async fn ready(State(st): State<AppState>) -> Response {
    let check = async {
        let db = st.pool().get().await.map_err(|e| e.to_string())?;
        db.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => not_ready(e),
        Err(_) => not_ready("database did not answer within 2s".into()),
    }
}

fn not_ready(detail: String) -> Response {
    tracing::debug!(%detail, "not ready");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("database unavailable: {detail}"))
        .into_response()
}

//! One JSON error shape for every service: `{"error": {"code": "...", "message": "..."}}` — the
//! legacy monolith's shape, with the same status/code conventions and the same mapping of
//! PostgreSQL errors, so shadow comparison sees equal error bodies on both sides. The body is
//! [`strangler_wire::ErrorBody`], the type the gateway answers its own errors with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use strangler_wire::ErrorBody;
use tokio_postgres::error::SqlState;

/// An HTTP API error: status, a stable machine-readable `code` and a human message.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The response status.
    pub status: StatusCode,
    /// Stable machine-readable code (e.g. `not_found`, `out_of_stock`).
    pub code: &'static str,
    /// Human-readable message (never internal detail).
    pub message: String,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    /// 400: malformed request (bad path id, bad query string, unparsable JSON).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404 `not_found`: "`what` `id` not found".
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {id} not found"))
    }
    /// 409: conflicts with the current state (out of stock, already cancelled, …).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 422: well-formed but invalid content.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    /// 500 `internal`: the detail is logged, never sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }
    /// 503 `unavailable`: the database is not reachable right now.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "database unavailable");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "database unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody::new(self.code, self.message))).into_response()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
                Self::conflict("duplicate", "a record with the same unique key already exists")
            }
            Some(c) if *c == SqlState::CHECK_VIOLATION => {
                Self::conflict("constraint_violation", "the change violates a data constraint")
            }
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                Self::unprocessable("unknown_reference", "the request references a missing record")
            }
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "retry", "transient conflict, retry")
            }
            _ if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) => {
                Self::unavailable(e)
            }
            _ => Self::internal(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => Self::unavailable(other),
        }
    }
}

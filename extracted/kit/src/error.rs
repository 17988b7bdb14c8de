//! One JSON error shape for every service: `{"error": {"code": "...", "message": "..."}}`,
//! the same shape the legacy monolith uses, so shadow comparison sees equal error bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error a handler returns; becomes a JSON response with the matching status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the current state (e.g. out of stock, already cancelled).
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed but semantically invalid.
    #[error("{0}")]
    Unprocessable(String),
    /// 503: the database is unavailable (pool exhausted or connection failed).
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: anything else. The detail is logged, never sent to the client.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(e) | ApiError::Unavailable(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed")
            }
            _ => {}
        }
        let body = serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (self.status(), Json(body)).into_response()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::Unavailable(e.into())
    }
}

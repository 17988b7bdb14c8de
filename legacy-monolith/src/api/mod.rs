//! The HTTP API: router, shared state, request ids, the response envelope and the handlers.
//!
//! Every successful response is an envelope
//! `{"data": …, ["page": {limit, offset, total},] "request_id": "…", "generated_at": "…"}`;
//! `request_id` echoes the `x-request-id` header (or is a fresh UUID) and `generated_at` is the
//! time the response was built, so two identical requests differ only in those two fields.

mod categories;
mod customers;
mod extract;
pub(crate) mod format;
mod health;
mod inventory;
mod notifications;
mod orders;
mod payments;
mod products;

use std::time::Instant;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;

use crate::db::{self, DbError};
use crate::error::{ApiError, ApiResult};

pub use extract::{ApiJson, ApiPath, ApiQuery};

/// Shared state of the handlers: the connection pool.
#[derive(Clone)]
pub struct AppState {
    pool: Pool,
}

impl AppState {
    /// State over an existing pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// State over a new lazy pool of `max_connections` to `database_url` (key/value or URL form).
    pub fn connect_lazy(database_url: &str, max_connections: usize) -> Result<Self, DbError> {
        Ok(Self::new(db::create_pool(database_url, max_connections)?))
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) async fn db(&self) -> ApiResult<deadpool_postgres::Client> {
        Ok(self.pool.get().await?)
    }
}

/// The whole application as an axum router (no socket), ready for `axum::serve` or tests.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/products", get(products::list).post(products::create))
        .route("/api/products/{id}", get(products::get_one).put(products::update))
        .route("/api/categories", get(categories::list))
        .route("/api/customers", post(customers::create))
        .route("/api/customers/{id}", get(customers::get_one))
        .route("/api/customers/{id}/orders", get(customers::orders))
        .route("/api/orders", post(orders::create))
        .route("/api/orders/{id}", get(orders::get_one))
        .route("/api/orders/{id}/cancel", post(orders::cancel))
        .route("/api/inventory/{sku}", get(inventory::get_one))
        .route("/api/inventory/{sku}/adjust", post(inventory::adjust))
        .route("/api/notifications", get(notifications::list))
        .route("/api/payments", post(payments::create))
        .route("/api/payments/{id}", get(payments::get_one))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));
    api.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            ApiError::internal("handler panicked").into_response()
        }))
        .layer(axum::middleware::from_fn(request_id))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", format!("no route for {}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// The id of the request being served (from `x-request-id`, else a fresh UUID v4).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: &str = "x-request-id";

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 200 && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
}

/// Assigns the request id, echoes it in the `x-request-id` response header and logs the request
/// at debug level.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id =
        req.headers().get(REQUEST_ID).and_then(valid_request_id).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    tracing::debug!(
        %method, %path, status = resp.status().as_u16(), request_id = %id,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "request"
    );
    resp
}

/// Per-request context handlers use to build enveloped responses.
pub struct Ctx {
    request_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let request_id = match parts.extensions.get::<RequestId>() {
            Some(id) => id.0.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        Ok(Ctx { request_id })
    }
}

/// Pagination of list responses.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
    pub total: i64,
}

#[derive(Serialize)]
struct Envelope<T> {
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<Page>,
    request_id: String,
    generated_at: String,
}

impl Ctx {
    fn envelope<T: Serialize>(&self, status: StatusCode, data: T, page: Option<Page>) -> Response {
        let body = Envelope {
            data,
            page,
            request_id: self.request_id.clone(),
            generated_at: format::timestamp(&chrono::Utc::now()),
        };
        (status, Json(body)).into_response()
    }

    /// 200 with `data`.
    pub fn ok<T: Serialize>(&self, data: T) -> Response {
        self.envelope(StatusCode::OK, data, None)
    }

    /// 201 with `data`.
    pub fn created<T: Serialize>(&self, data: T) -> Response {
        self.envelope(StatusCode::CREATED, data, None)
    }

    /// 200 with a page of `data`.
    pub fn page<T: Serialize>(&self, data: T, page: Page) -> Response {
        self.envelope(StatusCode::OK, data, Some(page))
    }
}

/// `limit`/`offset` query parameters shared by the list endpoints.
pub(crate) const DEFAULT_LIMIT: i64 = 20;
pub(crate) const MAX_LIMIT: i64 = 100;

/// Validates pagination: `limit` in 1..=100 (default 20), `offset` in 0..=1_000_000 (default 0).
pub(crate) fn pagination(limit: Option<i64>, offset: Option<i64>) -> ApiResult<(i64, i64)> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let offset = offset.unwrap_or(0);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
        ));
    }
    if !(0..=1_000_000).contains(&offset) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("offset must be between 0 and 1000000, got {offset}"),
        ));
    }
    Ok((limit, offset))
}

//! The shop's public JSON API conventions, shared by every extracted service so that its answers
//! have exactly the legacy monolith's shape:
//!
//! - success: `{"data": …, ["page": {limit, offset, total},] "request_id": "…", "generated_at": "…"}`
//! - money: a string with exactly two decimals (`"19.99"`); timestamps: RFC 3339 UTC with
//!   microseconds (`"2024-05-01T12:00:00.000000Z"`)
//! - rejections: bad path segment → 400 `invalid_path`, bad query → 400 `invalid_query`,
//!   unparsable JSON → 400 `malformed_json`, wrong JSON shape → 422 `invalid_body`,
//!   no JSON content type → 415, unknown route → 404 `no_route`, wrong method → 405.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};

use crate::error::ApiError;
use crate::state::RequestId;

/// Pagination of list responses.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
    pub total: i64,
}

/// Default and maximum `limit` of list endpoints.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// Validates pagination: `limit` in 1..=100 (default 20), `offset` in 0..=1_000_000 (default 0).
pub fn pagination(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let (limit, offset) = (limit.unwrap_or(DEFAULT_LIMIT), offset.unwrap_or(0));
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

#[derive(Serialize)]
struct Envelope<T> {
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<Page>,
    request_id: String,
    generated_at: String,
}

/// Per-request context that builds enveloped responses.
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

impl Ctx {
    fn envelope<T: Serialize>(&self, status: StatusCode, data: T, page: Option<Page>) -> Response {
        let body = Envelope { data, page, request_id: self.request_id.clone(), generated_at: timestamp(&Utc::now()) };
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

/// A timestamp as the API writes it.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// serde `serialize_with` for timestamps.
pub fn ts<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(t))
}

/// serde `serialize_with` for optional timestamps.
pub fn opt_ts<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&timestamp(t)),
        None => s.serialize_none(),
    }
}

/// Integer cents as the API's money string: `1999` → `"19.99"`, `-5` → `"-0.05"`.
pub fn money_from_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// serde `serialize_with` for integer cents.
pub fn cents<S: Serializer>(c: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&money_from_cents(*c))
}

/// `Path<T>`; a segment that does not parse is 400 `invalid_path`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| ApiError::bad_request("invalid_path", r.body_text()))
    }
}

/// `Query<T>`; a malformed query is 400 `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r| ApiError::bad_request("invalid_query", r.body_text()))
    }
}

/// `Json<T>`: unparsable → 400 `malformed_json`, wrong shape → 422 `invalid_body`, no JSON
/// content type → 415 `unsupported_media_type`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state).await.map(|Json(v)| ApiJson(v)).map_err(|r| {
            let (status, code) = match &r {
                JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
                JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
                JsonRejection::MissingJsonContentType(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                }
                _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
                }
                _ => (StatusCode::BAD_REQUEST, "bad_body"),
            };
            ApiError::new(status, code, r.body_text())
        })
    }
}

pub(crate) async fn no_route(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", format!("no route for {}", req.uri().path()))
}

pub(crate) async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_format_as_two_decimal_strings() {
        for (c, s) in
            [(0, "0.00"), (5, "0.05"), (1999, "19.99"), (100, "1.00"), (-5, "-0.05"), (123456789, "1234567.89")]
        {
            assert_eq!(money_from_cents(c), s);
        }
    }

    #[test]
    fn pagination_bounds() {
        assert_eq!(pagination(None, None).unwrap(), (20, 0));
        assert_eq!(pagination(Some(100), Some(5)).unwrap(), (100, 5));
        for (l, o) in [(Some(0), None), (Some(101), None), (None, Some(-1)), (None, Some(1_000_001))] {
            assert_eq!(pagination(l, o).unwrap_err().code, "invalid_query");
        }
    }
}

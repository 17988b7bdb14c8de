//! Notifications queued for a customer (e-mails and texts the legacy mailer picks up).

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::customers::customer_exists;
use super::format;
use super::{pagination, ApiQuery, AppState, Ctx, Page};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Serialize)]
pub struct Notification {
    pub id: i64,
    pub customer_id: i64,
    pub order_id: Option<i64>,
    pub channel: String,
    pub template: String,
    pub payload: Value,
    pub status: String,
    #[serde(serialize_with = "format::ts")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    customer: i64,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// GET /api/notifications?customer=&limit=&offset=
pub async fn list(State(st): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Response> {
    let (limit, offset) = pagination(q.limit, q.offset)?;
    let db = st.db().await?;
    if !customer_exists(&db, q.customer).await? {
        return Err(ApiError::not_found("customer", q.customer));
    }
    let stmt = db
        .prepare_cached(
            "SELECT id, cust_id, order_id, channel, template, payload, status_cd, ins_ts
               FROM notifications WHERE cust_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
        )
        .await?;
    let count = db.prepare_cached("SELECT count(*) FROM notifications WHERE cust_id = $1").await?;
    let rows = db.query(&stmt, &[&q.customer, &limit, &offset]).await?;
    let total: i64 = db.query_one(&count, &[&q.customer]).await?.get(0);
    let list: Vec<Notification> = rows
        .iter()
        .map(|r| Notification {
            id: r.get("id"),
            customer_id: r.get("cust_id"),
            order_id: r.get("order_id"),
            channel: r.get("channel"),
            template: r.get("template"),
            payload: r.get("payload"),
            status: r.get("status_cd"),
            created_at: r.get("ins_ts"),
        })
        .collect();
    Ok(ctx.page(list, Page { limit, offset, total }))
}

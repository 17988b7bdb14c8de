//! Payments against orders.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;

use super::format::{self, parse_money};
use super::{ApiJson, ApiPath, AppState, Ctx};
use crate::error::{ApiError, ApiResult};

pub(crate) const PAYMENT_METHODS: &[&str] = &["card", "paypal", "bank_transfer", "gift_card"];

/// Columns for [`payment_from_row`]; the query must join `payments p` with `orders o`.
pub(crate) const PAYMENT_COLUMNS: &str = "p.id, p.order_id, p.amount, p.method, p.status_cd, \
     p.provider_ref, p.ins_ts, p.upd_ts, o.cust_id, o.status_cd AS order_status";

#[derive(Debug, Serialize)]
pub struct Payment {
    pub id: i64,
    pub order_id: i64,
    pub customer_id: i64,
    #[serde(serialize_with = "format::money")]
    pub amount: Decimal,
    pub method: String,
    pub status: String,
    pub provider_ref: String,
    pub order_status: String,
    #[serde(serialize_with = "format::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "format::ts")]
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn payment_from_row(r: &Row) -> Payment {
    Payment {
        id: r.get("id"),
        order_id: r.get("order_id"),
        customer_id: r.get("cust_id"),
        amount: r.get("amount"),
        method: r.get("method"),
        status: r.get("status_cd"),
        provider_ref: r.get("provider_ref"),
        order_status: r.get("order_status"),
        created_at: r.get("ins_ts"),
        updated_at: r.get("upd_ts"),
    }
}

async fn load_payment(c: &impl GenericClient, id: i64) -> ApiResult<Option<Payment>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id WHERE p.id = $1"
        ))
        .await?;
    Ok(c.query_opt(&stmt, &[&id]).await?.as_ref().map(payment_from_row))
}

/// GET /api/payments/{id}
pub async fn get_one(State(st): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let db = st.db().await?;
    match load_payment(&db, id).await? {
        Some(p) => Ok(ctx.ok(p)),
        None => Err(ApiError::not_found("payment", id)),
    }
}

#[derive(Debug, Deserialize)]
pub struct NewPayment {
    order_id: i64,
    method: String,
    /// Optional; when given it must equal the order total.
    amount: Option<Value>,
}

/// POST /api/payments: pays an order that is pending payment (the full total, captured at once).
pub async fn create(State(st): State<AppState>, ctx: Ctx, ApiJson(body): ApiJson<NewPayment>) -> ApiResult<Response> {
    if !PAYMENT_METHODS.contains(&body.method.as_str()) {
        return Err(ApiError::unprocessable(
            "invalid_payment_method",
            format!("method must be one of {}", PAYMENT_METHODS.join(", ")),
        ));
    }
    let amount = body.amount.as_ref().map(|a| parse_money("amount", a)).transpose()?;

    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    let stmt = tx.prepare_cached("SELECT cust_id, status_cd, total_amt FROM orders WHERE id = $1 FOR UPDATE").await?;
    let Some(row) = tx.query_opt(&stmt, &[&body.order_id]).await? else {
        return Err(ApiError::unprocessable("unknown_order", format!("order {} does not exist", body.order_id)));
    };
    let cust_id: i64 = row.get(0);
    let status: String = row.get(1);
    let total: Decimal = row.get(2);
    match status.as_str() {
        "pending_payment" => {}
        "cancelled" => {
            return Err(ApiError::conflict("order_cancelled", format!("order {} is cancelled", body.order_id)))
        }
        _ => return Err(ApiError::conflict("already_paid", format!("order {} is already paid", body.order_id))),
    }
    if let Some(a) = amount {
        if a != total {
            return Err(ApiError::unprocessable(
                "amount_mismatch",
                format!(
                    "amount {} does not match the order total {}",
                    format::money_string(&a),
                    format::money_string(&total)
                ),
            ));
        }
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO payments (order_id, amount, method, status_cd, provider_ref)
             VALUES ($1, $2, $3, 'captured', $4) RETURNING id",
        )
        .await?;
    let provider_ref = format!("psp_{}", uuid::Uuid::new_v4().simple());
    let id: i64 = tx.query_one(&stmt, &[&body.order_id, &total, &body.method, &provider_ref]).await?.get(0);
    let stmt = tx.prepare_cached("UPDATE orders SET status_cd = 'paid', upd_ts = now() WHERE id = $1").await?;
    tx.execute(&stmt, &[&body.order_id]).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notifications (cust_id, order_id, channel, template, payload)
             VALUES ($1, $2, 'email', 'payment_received',
                     jsonb_build_object('payment_id', $3::bigint, 'amount', $4::text))",
        )
        .await?;
    tx.execute(&stmt, &[&cust_id, &body.order_id, &id, &format::money_string(&total)]).await?;
    let payment = load_payment(&tx, id).await?.ok_or_else(|| ApiError::internal("payment vanished"))?;
    tx.commit().await?;
    Ok(ctx.created(payment))
}

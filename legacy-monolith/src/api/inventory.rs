//! Stock levels by SKU and manual adjustments.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};

use super::format::{self, required_text};
use super::{ApiJson, ApiPath, AppState, Ctx};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Serialize)]
pub struct InventoryLevel {
    pub sku: String,
    pub product_id: i64,
    pub product_name: String,
    pub quantity: i32,
    pub in_stock: bool,
    /// Units in orders that are placed but not shipped or cancelled.
    pub open_order_units: i64,
    pub warehouse: String,
    #[serde(serialize_with = "format::ts")]
    pub updated_at: DateTime<Utc>,
}

fn check_sku(sku: &str) -> ApiResult<()> {
    if sku.is_empty() || sku.len() > 64 {
        return Err(ApiError::bad_request("invalid_path", "sku must be 1 to 64 characters"));
    }
    Ok(())
}

async fn load_level(c: &impl GenericClient, sku: &str) -> ApiResult<Option<InventoryLevel>> {
    let stmt = c
        .prepare_cached(
            "SELECT i.sku, i.product_id, p.name, i.quantity, i.warehouse_code, i.upd_ts,
                    (SELECT COALESCE(sum(oi.qty), 0)::bigint
                       FROM order_items oi JOIN orders o ON o.id = oi.order_id
                      WHERE oi.product_id = i.product_id
                        AND o.status_cd IN ('pending_payment', 'paid')) AS open_units
               FROM inventory i
               JOIN products p ON p.id = i.product_id
              WHERE i.sku = $1",
        )
        .await?;
    Ok(c.query_opt(&stmt, &[&sku]).await?.map(|r| {
        let quantity: i32 = r.get("quantity");
        InventoryLevel {
            sku: r.get("sku"),
            product_id: r.get("product_id"),
            product_name: r.get("name"),
            quantity,
            in_stock: quantity > 0,
            open_order_units: r.get("open_units"),
            warehouse: r.get("warehouse_code"),
            updated_at: r.get("upd_ts"),
        }
    }))
}

/// GET /api/inventory/{sku}
pub async fn get_one(State(st): State<AppState>, ctx: Ctx, ApiPath(sku): ApiPath<String>) -> ApiResult<Response> {
    check_sku(&sku)?;
    let db = st.db().await?;
    match load_level(&db, &sku).await? {
        Some(l) => Ok(ctx.ok(l)),
        None => Err(ApiError::not_found("sku", &sku)),
    }
}

#[derive(Debug, Deserialize)]
pub struct Adjustment {
    delta: i64,
    reason: Option<String>,
}

/// POST /api/inventory/{sku}/adjust {"delta": -3, "reason": "damaged"}: 409 when the stock would
/// go below zero.
pub async fn adjust(
    State(st): State<AppState>,
    ctx: Ctx,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<Adjustment>,
) -> ApiResult<Response> {
    check_sku(&sku)?;
    if body.delta == 0 || body.delta.abs() > 1_000_000 {
        return Err(ApiError::unprocessable(
            "invalid_delta",
            "delta must be a non-zero integer between -1000000 and 1000000",
        ));
    }
    let reason = match body.reason.as_deref() {
        Some(r) => required_text("reason", r, 200)?,
        None => "manual_adjustment".to_string(),
    };
    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE inventory SET quantity = (quantity::bigint + $1)::int, upd_ts = now()
              WHERE sku = $2 AND quantity::bigint + $1 BETWEEN 0 AND 2000000000
          RETURNING id",
        )
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&body.delta, &sku]).await? else {
        let exists = tx.prepare_cached("SELECT quantity FROM inventory WHERE sku = $1").await?;
        return match tx.query_opt(&exists, &[&sku]).await? {
            None => Err(ApiError::not_found("sku", &sku)),
            Some(r) => Err(ApiError::conflict(
                "insufficient_stock",
                format!("{sku} has {} units; cannot apply {}", r.get::<_, i32>(0), body.delta),
            )),
        };
    };
    let inv_id: i64 = row.get(0);
    let delta = i32::try_from(body.delta).map_err(ApiError::internal)?;
    let stmt =
        tx.prepare_cached("INSERT INTO inventory_movements (inventory_id, delta, reason) VALUES ($1, $2, $3)").await?;
    tx.execute(&stmt, &[&inv_id, &delta, &reason]).await?;
    let level = load_level(&tx, &sku).await?.ok_or_else(|| ApiError::internal("inventory vanished"))?;
    tx.commit().await?;
    Ok(ctx.ok(level))
}

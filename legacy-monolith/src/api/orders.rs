//! Orders: placement (reserve stock, insert order and items, capture payment, queue a
//! notification — one transaction), lookup and cancellation.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::customers::{address_from_row, customer_exists, Address};
use super::format;
use super::payments::{payment_from_row, Payment, PAYMENT_COLUMNS, PAYMENT_METHODS};
use super::{ApiJson, ApiPath, AppState, Ctx};
use crate::error::{ApiError, ApiResult};

/// Most distinct lines an order may have, and most units of one product per order.
const MAX_LINES: usize = 100;
const MAX_UNITS: i64 = 1000;

#[derive(Debug, Serialize)]
pub struct CustomerRef {
    pub id: i64,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct OrderItem {
    pub id: i64,
    pub product_id: i64,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    #[serde(serialize_with = "format::money")]
    pub unit_price: Decimal,
    #[serde(serialize_with = "format::money")]
    pub line_total: Decimal,
}

#[derive(Debug, Serialize)]
pub struct Order {
    pub id: i64,
    pub status: String,
    pub customer: CustomerRef,
    #[serde(serialize_with = "format::money")]
    pub total: Decimal,
    pub currency: String,
    pub notes: Option<String>,
    pub shipping_address: Option<Address>,
    pub items: Vec<OrderItem>,
    pub payments: Vec<Payment>,
    #[serde(serialize_with = "format::ts")]
    pub placed_at: DateTime<Utc>,
    #[serde(serialize_with = "format::opt_ts")]
    pub cancelled_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "format::ts")]
    pub updated_at: DateTime<Utc>,
}

/// Loads an order with its customer, address, items (joined to products) and payments.
pub(crate) async fn load_order(c: &impl GenericClient, id: i64) -> ApiResult<Option<Order>> {
    let head = c
        .prepare_cached(
            "SELECT o.id, o.status_cd, o.total_amt, o.currency, o.notes, o.placed_at,
                    o.cancelled_at, o.upd_ts, o.ship_addr_id,
                    c.id AS cust_id, c.email, c.first_name || ' ' || c.last_name AS cust_name
               FROM orders o
               JOIN customers c ON c.id = o.cust_id
              WHERE o.id = $1",
        )
        .await?;
    let Some(o) = c.query_opt(&head, &[&id]).await? else {
        return Ok(None);
    };
    let items = c
        .prepare_cached(
            "SELECT oi.id, oi.product_id, oi.sku, p.name, oi.qty, oi.unit_price, oi.line_total
               FROM order_items oi
               JOIN products p ON p.id = oi.product_id
              WHERE oi.order_id = $1
              ORDER BY oi.id",
        )
        .await?;
    let items = c
        .query(&items, &[&id])
        .await?
        .iter()
        .map(|r| OrderItem {
            id: r.get("id"),
            product_id: r.get("product_id"),
            sku: r.get("sku"),
            name: r.get("name"),
            quantity: r.get("qty"),
            unit_price: r.get("unit_price"),
            line_total: r.get("line_total"),
        })
        .collect();
    let pays = c
        .prepare_cached(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments p JOIN orders o ON o.id = p.order_id
              WHERE p.order_id = $1 ORDER BY p.id"
        ))
        .await?;
    let payments = c.query(&pays, &[&id]).await?.iter().map(payment_from_row).collect();
    let addr_id: Option<i64> = o.get("ship_addr_id");
    let shipping_address = match addr_id {
        None => None,
        Some(a) => {
            let stmt = c
                .prepare_cached(
                    "SELECT id, kind, line1, line2, city, postal_code, country, is_default
                       FROM addresses WHERE id = $1",
                )
                .await?;
            c.query_opt(&stmt, &[&a]).await?.as_ref().map(address_from_row)
        }
    };
    Ok(Some(Order {
        id: o.get("id"),
        status: o.get("status_cd"),
        customer: CustomerRef { id: o.get("cust_id"), email: o.get("email"), name: o.get("cust_name") },
        total: o.get("total_amt"),
        currency: o.get("currency"),
        notes: o.get("notes"),
        shipping_address,
        items,
        payments,
        placed_at: o.get("placed_at"),
        cancelled_at: o.get("cancelled_at"),
        updated_at: o.get("upd_ts"),
    }))
}

/// GET /api/orders/{id}
pub async fn get_one(State(st): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let db = st.db().await?;
    match load_order(&db, id).await? {
        Some(o) => Ok(ctx.ok(o)),
        None => Err(ApiError::not_found("order", id)),
    }
}

#[derive(Debug, Deserialize)]
pub struct NewItem {
    product_id: i64,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
pub struct NewPayment {
    method: String,
}

#[derive(Debug, Deserialize)]
pub struct NewOrder {
    customer_id: i64,
    items: Vec<NewItem>,
    payment: Option<NewPayment>,
    shipping_address_id: Option<i64>,
    notes: Option<String>,
}

/// Validates the lines and merges repeated products. The result is ordered by product id, which
/// is also the order in which stock rows are locked, so concurrent orders cannot deadlock.
fn merge_lines(items: &[NewItem]) -> ApiResult<BTreeMap<i64, i32>> {
    if items.is_empty() {
        return Err(ApiError::unprocessable("invalid_items", "an order needs at least one item"));
    }
    if items.len() > MAX_LINES {
        return Err(ApiError::unprocessable("invalid_items", format!("at most {MAX_LINES} items")));
    }
    let mut lines: BTreeMap<i64, i64> = BTreeMap::new();
    for it in items {
        if !(1..=MAX_UNITS).contains(&it.quantity) {
            return Err(ApiError::unprocessable(
                "invalid_quantity",
                format!("quantity must be between 1 and {MAX_UNITS}, got {}", it.quantity),
            ));
        }
        *lines.entry(it.product_id).or_default() += it.quantity;
    }
    lines
        .into_iter()
        .map(|(p, q)| {
            i32::try_from(q).ok().filter(|q| i64::from(*q) <= MAX_UNITS).map(|q| (p, q)).ok_or_else(|| {
                ApiError::unprocessable(
                    "invalid_quantity",
                    format!("at most {MAX_UNITS} units of product {p} per order"),
                )
            })
        })
        .collect()
}

/// POST /api/orders
pub async fn create(State(st): State<AppState>, ctx: Ctx, ApiJson(body): ApiJson<NewOrder>) -> ApiResult<Response> {
    let lines = merge_lines(&body.items)?;
    if let Some(p) = &body.payment {
        if !PAYMENT_METHODS.contains(&p.method.as_str()) {
            return Err(ApiError::unprocessable(
                "invalid_payment_method",
                format!("payment.method must be one of {}", PAYMENT_METHODS.join(", ")),
            ));
        }
    }
    if body.notes.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(ApiError::unprocessable("invalid_field", "notes is at most 1000 characters"));
    }

    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    if !customer_exists(&tx, body.customer_id).await? {
        return Err(ApiError::unprocessable(
            "unknown_customer",
            format!("customer {} does not exist", body.customer_id),
        ));
    }
    let ship_addr: Option<i64> = match body.shipping_address_id {
        Some(a) => {
            let stmt = tx.prepare_cached("SELECT 1 FROM addresses WHERE id = $1 AND cust_id = $2").await?;
            if tx.query_opt(&stmt, &[&a, &body.customer_id]).await?.is_none() {
                return Err(ApiError::unprocessable(
                    "unknown_address",
                    format!("address {a} does not belong to customer {}", body.customer_id),
                ));
            }
            Some(a)
        }
        None => {
            let stmt = tx
                .prepare_cached(
                    "SELECT id FROM addresses WHERE cust_id = $1 AND kind = 'shipping'
                      ORDER BY is_default DESC, id LIMIT 1",
                )
                .await?;
            tx.query_opt(&stmt, &[&body.customer_id]).await?.map(|r| r.get(0))
        }
    };

    // Products: all must exist and be active; prices are taken from the catalog.
    let ids: Vec<i64> = lines.keys().copied().collect();
    let stmt =
        tx.prepare_cached("SELECT id, sku, price, currency, active_flg FROM products WHERE id = ANY($1)").await?;
    let products: HashMap<i64, (String, Decimal, String, bool)> =
        tx.query(&stmt, &[&ids]).await?.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4)))).collect();
    let missing: Vec<String> = ids.iter().filter(|id| !products.contains_key(id)).map(i64::to_string).collect();
    if !missing.is_empty() {
        return Err(ApiError::unprocessable(
            "unknown_product",
            format!("unknown product id(s): {}", missing.join(", ")),
        ));
    }
    let mut currency: Option<&str> = None;
    for id in &ids {
        let (_, _, cur, active) = &products[id];
        if !active {
            return Err(ApiError::unprocessable("product_inactive", format!("product {id} is not for sale")));
        }
        match currency {
            None => currency = Some(cur),
            Some(c) if c != cur => {
                return Err(ApiError::unprocessable("mixed_currency", "all products must share one currency"))
            }
            Some(_) => {}
        }
    }
    let currency = currency.unwrap_or("USD").to_string();

    // Reserve stock, locking inventory rows in product id order. The conditional UPDATE never
    // lets the quantity go below zero; a concurrent order waits for the row lock and re-checks.
    let reserve = tx
        .prepare_cached(
            "UPDATE inventory SET quantity = quantity - $1, upd_ts = now()
              WHERE product_id = $2 AND quantity >= $1
          RETURNING id",
        )
        .await?;
    let mut inv_ids = Vec::with_capacity(lines.len());
    let mut deltas = Vec::with_capacity(lines.len());
    for (pid, qty) in &lines {
        match tx.query_opt(&reserve, &[qty, pid]).await? {
            Some(r) => {
                inv_ids.push(r.get::<_, i64>(0));
                deltas.push(-qty);
            }
            None => {
                let sku = &products[pid].0;
                return Err(ApiError::conflict(
                    "out_of_stock",
                    format!("not enough stock for {sku} (product {pid}): requested {qty}"),
                ));
            }
        }
    }

    let mut total = Decimal::ZERO;
    let (mut p_ids, mut skus, mut qtys, mut prices, mut line_totals) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (pid, qty) in &lines {
        let (sku, price, _, _) = &products[pid];
        let line = *price * Decimal::from(*qty);
        total += line;
        p_ids.push(*pid);
        skus.push(sku.clone());
        qtys.push(*qty);
        prices.push(*price);
        line_totals.push(line);
    }
    let status = if body.payment.is_some() { "paid" } else { "pending_payment" };
    let stmt = tx
        .prepare_cached(
            "INSERT INTO orders (cust_id, status_cd, total_amt, currency, ship_addr_id, notes)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .await?;
    let order_id: i64 =
        tx.query_one(&stmt, &[&body.customer_id, &status, &total, &currency, &ship_addr, &body.notes]).await?.get(0);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO order_items (order_id, product_id, sku, qty, unit_price, line_total)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::int[], $5::numeric[], $6::numeric[])",
        )
        .await?;
    tx.execute(&stmt, &[&order_id, &p_ids, &skus, &qtys, &prices, &line_totals]).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO inventory_movements (inventory_id, delta, reason, order_id)
             SELECT inv, d, 'order_placed', $3 FROM unnest($1::bigint[], $2::int[]) AS m(inv, d)",
        )
        .await?;
    tx.execute(&stmt, &[&inv_ids, &deltas, &order_id]).await?;
    if let Some(p) = &body.payment {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO payments (order_id, amount, method, status_cd, provider_ref)
                 VALUES ($1, $2, $3, 'captured', $4)",
            )
            .await?;
        let provider_ref = format!("psp_{}", uuid::Uuid::new_v4().simple());
        tx.execute(&stmt, &[&order_id, &total, &p.method, &provider_ref]).await?;
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notifications (cust_id, order_id, channel, template, payload)
             VALUES ($1, $2, 'email', 'order_placed',
                     jsonb_build_object('order_id', $2::bigint, 'total', $3::text, 'items', $4::int))",
        )
        .await?;
    let units: i32 = qtys.iter().sum();
    tx.execute(&stmt, &[&body.customer_id, &order_id, &format::money_string(&total), &units]).await?;
    let order = load_order(&tx, order_id).await?.ok_or_else(|| ApiError::internal("order vanished"))?;
    tx.commit().await?;
    Ok(ctx.created(order))
}

/// POST /api/orders/{id}/cancel: restores stock, refunds captured payments, queues a
/// notification. 409 when the order is already cancelled or has shipped.
pub async fn cancel(State(st): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    let stmt = tx.prepare_cached("SELECT cust_id, status_cd FROM orders WHERE id = $1 FOR UPDATE").await?;
    let Some(row) = tx.query_opt(&stmt, &[&id]).await? else {
        return Err(ApiError::not_found("order", id));
    };
    let cust_id: i64 = row.get(0);
    let status: String = row.get(1);
    match status.as_str() {
        "cancelled" => return Err(ApiError::conflict("already_cancelled", format!("order {id} is already cancelled"))),
        "shipped" => return Err(ApiError::conflict("already_shipped", format!("order {id} has shipped"))),
        _ => {}
    }
    // Lock the stock rows in product id order (the same order as placement), then restock.
    let stmt = tx
        .prepare_cached(
            "SELECT i.id FROM inventory i
              WHERE i.product_id IN (SELECT product_id FROM order_items WHERE order_id = $1)
              ORDER BY i.product_id
                FOR UPDATE",
        )
        .await?;
    tx.query(&stmt, &[&id]).await?;
    let stmt = tx
        .prepare_cached(
            "WITH lines AS (
                 SELECT product_id, sum(qty)::int AS qty FROM order_items
                  WHERE order_id = $1 GROUP BY product_id ORDER BY product_id),
             restocked AS (
                 UPDATE inventory i SET quantity = i.quantity + l.qty, upd_ts = now()
                   FROM lines l WHERE i.product_id = l.product_id
               RETURNING i.id, l.qty)
             INSERT INTO inventory_movements (inventory_id, delta, reason, order_id)
             SELECT id, qty, 'order_cancelled', $1 FROM restocked",
        )
        .await?;
    tx.execute(&stmt, &[&id]).await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE payments SET status_cd = 'refunded', upd_ts = now()
              WHERE order_id = $1 AND status_cd = 'captured'",
        )
        .await?;
    let refunded = tx.execute(&stmt, &[&id]).await?;
    let stmt = tx
        .prepare_cached("UPDATE orders SET status_cd = 'cancelled', cancelled_at = now(), upd_ts = now() WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&id]).await?;
    let refunded = i64::try_from(refunded).unwrap_or(i64::MAX);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notifications (cust_id, order_id, channel, template, payload)
             VALUES ($1, $2, 'email', 'order_cancelled',
                     jsonb_build_object('order_id', $2::bigint, 'refunded_payments', $3::bigint))",
        )
        .await?;
    tx.execute(&stmt, &[&cust_id, &id, &refunded]).await?;
    let order = load_order(&tx, id).await?.ok_or_else(|| ApiError::internal("order vanished"))?;
    tx.commit().await?;
    Ok(ctx.ok(order))
}

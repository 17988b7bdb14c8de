//! Handlers. Same validation, same status codes and error codes, same JSON as legacy; money is
//! integer cents here and formatted as legacy's two-decimal strings.

use std::collections::{BTreeMap, HashMap};

use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strangler_kit::api::{cents, money_from_cents, opt_ts, pagination, ts};
use strangler_kit::{ApiError, ApiJson, ApiPath, ApiQuery, Ctx, Db, DbClient, Page};
use tokio_postgres::Row;

/// Most distinct lines an order may have, and most units of one product per order.
const MAX_LINES: usize = 100;
const MAX_UNITS: i64 = 1000;
const PAYMENT_METHODS: &[&str] = &["card", "paypal", "bank_transfer", "gift_card"];

#[derive(Debug, Serialize)]
pub struct CustomerRef {
    id: i64,
    email: String,
    name: String,
}

#[derive(Debug, Serialize)]
pub struct Address {
    id: i64,
    kind: String,
    line1: String,
    line2: Option<String>,
    city: String,
    postal_code: String,
    country: String,
    is_default: bool,
}

#[derive(Debug, Serialize)]
pub struct OrderItem {
    id: i64,
    product_id: i64,
    sku: String,
    name: String,
    quantity: i32,
    #[serde(serialize_with = "cents")]
    unit_price: i64,
    #[serde(serialize_with = "cents")]
    line_total: i64,
}

#[derive(Debug, Serialize)]
pub struct Payment {
    id: i64,
    order_id: i64,
    customer_id: i64,
    #[serde(serialize_with = "cents")]
    amount: i64,
    method: String,
    status: String,
    provider_ref: String,
    order_status: String,
    #[serde(serialize_with = "ts")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts")]
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Order {
    id: i64,
    status: String,
    customer: CustomerRef,
    #[serde(serialize_with = "cents")]
    total: i64,
    currency: String,
    notes: Option<String>,
    shipping_address: Option<Address>,
    items: Vec<OrderItem>,
    payments: Vec<Payment>,
    #[serde(serialize_with = "ts")]
    placed_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_ts")]
    cancelled_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ts")]
    updated_at: DateTime<Utc>,
}

fn payment(r: &Row) -> Payment {
    Payment {
        id: r.get("id"),
        order_id: r.get("order_id"),
        customer_id: r.get("customer_id"),
        amount: r.get("amount_cents"),
        method: r.get("method"),
        status: r.get("status"),
        provider_ref: r.get("provider_ref"),
        order_status: r.get("order_status"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Loads an order with its customer, address, lines (joined to products) and payments.
async fn load_order(c: &DbClient<'_>, id: i64) -> Result<Option<Order>, ApiError> {
    let head = c
        .prepare_cached(
            "SELECT o.id, o.status, o.total_cents, o.currency, o.notes, o.placed_at, o.cancelled_at,
                    o.updated_at, o.shipping_address_id, c.id AS cust_id, c.email,
                    c.given_name || ' ' || c.family_name AS cust_name
               FROM orders o JOIN customers c ON c.id = o.customer_id
              WHERE o.id = $1",
        )
        .await?;
    let Some(o) = c.query_opt(&head, &[&id]).await? else {
        return Ok(None);
    };
    let lines = c
        .prepare_cached(
            "SELECT l.id, l.product_id, l.sku, p.name, l.quantity, l.unit_price_cents, l.line_total_cents
               FROM order_lines l JOIN products p ON p.id = l.product_id
              WHERE l.order_id = $1 ORDER BY l.id",
        )
        .await?;
    let items = c
        .query(&lines, &[&id])
        .await?
        .iter()
        .map(|r| OrderItem {
            id: r.get("id"),
            product_id: r.get("product_id"),
            sku: r.get("sku"),
            name: r.get("name"),
            quantity: r.get("quantity"),
            unit_price: r.get("unit_price_cents"),
            line_total: r.get("line_total_cents"),
        })
        .collect();
    let pays = c
        .prepare_cached(
            "SELECT p.id, p.order_id, p.amount_cents, p.method, p.status, p.provider_ref, p.created_at,
                    p.updated_at, o.customer_id, o.status AS order_status
               FROM payments p JOIN orders o ON o.id = p.order_id
              WHERE p.order_id = $1 ORDER BY p.id",
        )
        .await?;
    let payments = c.query(&pays, &[&id]).await?.iter().map(payment).collect();
    let addr_id: Option<i64> = o.get("shipping_address_id");
    let shipping_address = match addr_id {
        None => None,
        Some(a) => {
            let stmt = c
                .prepare_cached(
                    "SELECT id, kind, line1, line2, city, postal_code, country, is_default
                       FROM addresses WHERE id = $1",
                )
                .await?;
            c.query_opt(&stmt, &[&a]).await?.map(|r| Address {
                id: r.get("id"),
                kind: r.get("kind"),
                line1: r.get("line1"),
                line2: r.get("line2"),
                city: r.get("city"),
                postal_code: r.get("postal_code"),
                country: r.get("country"),
                is_default: r.get("is_default"),
            })
        }
    };
    Ok(Some(Order {
        id: o.get("id"),
        status: o.get("status"),
        customer: CustomerRef { id: o.get("cust_id"), email: o.get("email"), name: o.get("cust_name") },
        total: o.get("total_cents"),
        currency: o.get("currency"),
        notes: o.get("notes"),
        shipping_address,
        items,
        payments,
        placed_at: o.get("placed_at"),
        cancelled_at: o.get("cancelled_at"),
        updated_at: o.get("updated_at"),
    }))
}

/// GET /api/orders/{id}
pub async fn get_one(db: Db, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> Result<Response, ApiError> {
    let c = db.client().await?;
    match load_order(&c, id).await? {
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

/// Validates the lines and merges repeated products; ordered by product id, which is also the
/// order stock rows are locked in, so concurrent orders cannot deadlock.
fn merge_lines(items: &[NewItem]) -> Result<BTreeMap<i64, i32>, ApiError> {
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
pub async fn create(db: Db, ctx: Ctx, ApiJson(body): ApiJson<NewOrder>) -> Result<Response, ApiError> {
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
    let c = db.client().await?;
    let exists = c.prepare_cached("SELECT 1 FROM customers WHERE id = $1").await?;
    if c.query_opt(&exists, &[&body.customer_id]).await?.is_none() {
        return Err(ApiError::unprocessable(
            "unknown_customer",
            format!("customer {} does not exist", body.customer_id),
        ));
    }
    let ship_addr: Option<i64> = match body.shipping_address_id {
        Some(a) => {
            let stmt = c.prepare_cached("SELECT 1 FROM addresses WHERE id = $1 AND customer_id = $2").await?;
            if c.query_opt(&stmt, &[&a, &body.customer_id]).await?.is_none() {
                return Err(ApiError::unprocessable(
                    "unknown_address",
                    format!("address {a} does not belong to customer {}", body.customer_id),
                ));
            }
            Some(a)
        }
        None => {
            let stmt = c
                .prepare_cached(
                    "SELECT id FROM addresses WHERE customer_id = $1 AND kind = 'shipping'
                      ORDER BY is_default DESC, id LIMIT 1",
                )
                .await?;
            c.query_opt(&stmt, &[&body.customer_id]).await?.map(|r| r.get(0))
        }
    };

    let ids: Vec<i64> = lines.keys().copied().collect();
    let stmt =
        c.prepare_cached("SELECT id, sku, price_cents, currency, active FROM products WHERE id = ANY($1)").await?;
    let products: HashMap<i64, (String, i64, String, bool)> = c
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get::<_, String>(3), r.get(4))))
        .collect();
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

    // Reserve stock in product id order; the conditional UPDATE never goes below zero.
    let reserve = c
        .prepare_cached(
            "UPDATE stock SET quantity = quantity - $1, updated_at = now()
              WHERE product_id = $2 AND quantity >= $1 RETURNING id",
        )
        .await?;
    let (mut stock_ids, mut deltas) = (Vec::new(), Vec::new());
    for (pid, qty) in &lines {
        match c.query_opt(&reserve, &[qty, pid]).await? {
            Some(r) => {
                stock_ids.push(r.get::<_, i64>(0));
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

    let mut total: i64 = 0;
    let (mut p_ids, mut skus, mut qtys, mut prices, mut line_totals) = (vec![], vec![], vec![], vec![], vec![]);
    for (pid, qty) in &lines {
        let (sku, price, _, _) = &products[pid];
        let line = price * i64::from(*qty);
        total += line;
        p_ids.push(*pid);
        skus.push(sku.clone());
        qtys.push(*qty);
        prices.push(*price);
        line_totals.push(line);
    }
    let status = if body.payment.is_some() { "paid" } else { "pending_payment" };
    let stmt = c
        .prepare_cached(
            "INSERT INTO orders (customer_id, status, total_cents, currency, shipping_address_id, notes)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .await?;
    let order_id: i64 =
        c.query_one(&stmt, &[&body.customer_id, &status, &total, &currency, &ship_addr, &body.notes]).await?.get(0);
    let stmt = c
        .prepare_cached(
            "INSERT INTO order_lines (order_id, product_id, sku, quantity, unit_price_cents, line_total_cents)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::int[], $5::bigint[], $6::bigint[])",
        )
        .await?;
    c.execute(&stmt, &[&order_id, &p_ids, &skus, &qtys, &prices, &line_totals]).await?;
    let stmt = c
        .prepare_cached(
            "INSERT INTO stock_movements (stock_id, delta, reason, order_id)
             SELECT s, d, 'order_placed', $3 FROM unnest($1::bigint[], $2::int[]) AS m(s, d)",
        )
        .await?;
    c.execute(&stmt, &[&stock_ids, &deltas, &order_id]).await?;
    if let Some(p) = &body.payment {
        let stmt = c
            .prepare_cached(
                "INSERT INTO payments (order_id, amount_cents, method, status, provider_ref)
                 VALUES ($1, $2, $3, 'captured', $4)",
            )
            .await?;
        let provider_ref = format!("psp_{}", uuid::Uuid::new_v4().simple());
        c.execute(&stmt, &[&order_id, &total, &p.method, &provider_ref]).await?;
    }
    let stmt = c
        .prepare_cached(
            "INSERT INTO notifications (customer_id, order_id, channel, template, payload)
             VALUES ($1, $2, 'email', 'order_placed',
                     jsonb_build_object('order_id', $2::bigint, 'total', $3::text, 'items', $4::int))",
        )
        .await?;
    let units: i32 = qtys.iter().sum();
    c.execute(&stmt, &[&body.customer_id, &order_id, &money_from_cents(total), &units]).await?;
    let order = load_order(&c, order_id).await?.ok_or_else(|| ApiError::internal("order vanished"))?;
    Ok(ctx.created(order))
}

/// POST /api/orders/{id}/cancel: restock, refund captured payments, queue a notification.
/// 409 when already cancelled or shipped.
pub async fn cancel(db: Db, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> Result<Response, ApiError> {
    let c = db.client().await?;
    let stmt = c.prepare_cached("SELECT customer_id, status FROM orders WHERE id = $1 FOR UPDATE").await?;
    let Some(row) = c.query_opt(&stmt, &[&id]).await? else {
        return Err(ApiError::not_found("order", id));
    };
    let (customer_id, status): (i64, String) = (row.get(0), row.get(1));
    match status.as_str() {
        "cancelled" => return Err(ApiError::conflict("already_cancelled", format!("order {id} is already cancelled"))),
        "shipped" => return Err(ApiError::conflict("already_shipped", format!("order {id} has shipped"))),
        _ => {}
    }
    let stmt = c
        .prepare_cached(
            "SELECT s.id FROM stock s
              WHERE s.product_id IN (SELECT product_id FROM order_lines WHERE order_id = $1)
              ORDER BY s.product_id FOR UPDATE",
        )
        .await?;
    c.query(&stmt, &[&id]).await?;
    let stmt = c
        .prepare_cached(
            "WITH lines AS (
                 SELECT product_id, sum(quantity)::int AS qty FROM order_lines
                  WHERE order_id = $1 GROUP BY product_id ORDER BY product_id),
             restocked AS (
                 UPDATE stock s SET quantity = s.quantity + l.qty, updated_at = now()
                   FROM lines l WHERE s.product_id = l.product_id
               RETURNING s.id, l.qty)
             INSERT INTO stock_movements (stock_id, delta, reason, order_id)
             SELECT id, qty, 'order_cancelled', $1 FROM restocked",
        )
        .await?;
    c.execute(&stmt, &[&id]).await?;
    let stmt = c
        .prepare_cached(
            "UPDATE payments SET status = 'refunded', updated_at = now() WHERE order_id = $1 AND status = 'captured'",
        )
        .await?;
    let refunded = i64::try_from(c.execute(&stmt, &[&id]).await?).unwrap_or(i64::MAX);
    let stmt = c
        .prepare_cached(
            "UPDATE orders SET status = 'cancelled', cancelled_at = now(), updated_at = now() WHERE id = $1",
        )
        .await?;
    c.execute(&stmt, &[&id]).await?;
    let stmt = c
        .prepare_cached(
            "INSERT INTO notifications (customer_id, order_id, channel, template, payload)
             VALUES ($1, $2, 'email', 'order_cancelled',
                     jsonb_build_object('order_id', $2::bigint, 'refunded_payments', $3::bigint))",
        )
        .await?;
    c.execute(&stmt, &[&customer_id, &id, &refunded]).await?;
    let order = load_order(&c, id).await?.ok_or_else(|| ApiError::internal("order vanished"))?;
    Ok(ctx.ok(order))
}

#[derive(Debug, Deserialize)]
pub struct OrdersQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct OrderSummary {
    id: i64,
    status: String,
    #[serde(serialize_with = "cents")]
    total: i64,
    currency: String,
    item_count: i64,
    unit_count: i64,
    #[serde(serialize_with = "ts")]
    placed_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_ts")]
    cancelled_at: Option<DateTime<Utc>>,
}

/// GET /api/customers/{id}/orders?limit=&offset=: the customer's orders, oldest first.
pub async fn customer_orders(
    db: Db,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> Result<Response, ApiError> {
    let (limit, offset) = pagination(q.limit, q.offset)?;
    let c = db.client().await?;
    let exists = c.prepare_cached("SELECT 1 FROM customers WHERE id = $1").await?;
    if c.query_opt(&exists, &[&id]).await?.is_none() {
        return Err(ApiError::not_found("customer", id));
    }
    let stmt = c
        .prepare_cached(
            "SELECT o.id, o.status, o.total_cents, o.currency, o.placed_at, o.cancelled_at,
                    count(l.id) AS item_count, COALESCE(sum(l.quantity), 0)::bigint AS unit_count
               FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id
              WHERE o.customer_id = $1
              GROUP BY o.id ORDER BY o.id LIMIT $2 OFFSET $3",
        )
        .await?;
    let count = c.prepare_cached("SELECT count(*) FROM orders WHERE customer_id = $1").await?;
    let rows = c.query(&stmt, &[&id, &limit, &offset]).await?;
    let total: i64 = c.query_one(&count, &[&id]).await?.get(0);
    let orders: Vec<OrderSummary> = rows
        .iter()
        .map(|r| OrderSummary {
            id: r.get("id"),
            status: r.get("status"),
            total: r.get("total_cents"),
            currency: r.get("currency"),
            item_count: r.get("item_count"),
            unit_count: r.get("unit_count"),
            placed_at: r.get("placed_at"),
            cancelled_at: r.get("cancelled_at"),
        })
        .collect();
    Ok(ctx.page(orders, Page { limit, offset, total }))
}

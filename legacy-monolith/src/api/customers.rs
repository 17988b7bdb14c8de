//! Customers, their addresses and their order history.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::format::{self, required_text};
use super::{pagination, ApiJson, ApiPath, ApiQuery, AppState, Ctx, Page};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Serialize)]
pub struct Address {
    pub id: i64,
    pub kind: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    pub is_default: bool,
}

#[derive(Debug, Serialize)]
pub struct CustomerStats {
    pub order_count: i64,
    #[serde(serialize_with = "format::money")]
    pub lifetime_value: Decimal,
    #[serde(serialize_with = "format::opt_ts")]
    pub last_order_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct Customer {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    pub loyalty_tier: String,
    pub addresses: Vec<Address>,
    pub stats: CustomerStats,
    #[serde(serialize_with = "format::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "format::ts")]
    pub updated_at: DateTime<Utc>,
}

pub(crate) async fn customer_exists(c: &impl GenericClient, id: i64) -> ApiResult<bool> {
    let stmt = c.prepare_cached("SELECT 1 FROM customers WHERE id = $1").await?;
    Ok(c.query_opt(&stmt, &[&id]).await?.is_some())
}

pub(crate) fn address_from_row(r: &tokio_postgres::Row) -> Address {
    Address {
        id: r.get("id"),
        kind: r.get("kind"),
        line1: r.get("line1"),
        line2: r.get("line2"),
        city: r.get("city"),
        postal_code: r.get("postal_code"),
        country: r.get("country"),
        is_default: r.get("is_default"),
    }
}

async fn load_customer(c: &impl GenericClient, id: i64) -> ApiResult<Option<Customer>> {
    let stmt = c
        .prepare_cached(
            "SELECT c.id, c.email, c.first_name, c.last_name, c.phone, c.loyalty_tier, c.ins_ts,
                    c.upd_ts, s.order_count, s.lifetime_value, s.last_order_at
               FROM customers c
               CROSS JOIN LATERAL (
                   SELECT count(*) AS order_count,
                          COALESCE(sum(o.total_amt) FILTER (WHERE o.status_cd IN ('paid', 'shipped')), 0)
                              AS lifetime_value,
                          max(o.placed_at) AS last_order_at
                     FROM orders o WHERE o.cust_id = c.id) s
              WHERE c.id = $1",
        )
        .await?;
    let Some(r) = c.query_opt(&stmt, &[&id]).await? else {
        return Ok(None);
    };
    let addr = c
        .prepare_cached(
            "SELECT id, kind, line1, line2, city, postal_code, country, is_default
               FROM addresses WHERE cust_id = $1 ORDER BY id",
        )
        .await?;
    let addresses = c.query(&addr, &[&id]).await?.iter().map(address_from_row).collect();
    Ok(Some(Customer {
        id: r.get("id"),
        email: r.get("email"),
        first_name: r.get("first_name"),
        last_name: r.get("last_name"),
        phone: r.get("phone"),
        loyalty_tier: r.get("loyalty_tier"),
        addresses,
        stats: CustomerStats {
            order_count: r.get("order_count"),
            lifetime_value: r.get("lifetime_value"),
            last_order_at: r.get("last_order_at"),
        },
        created_at: r.get("ins_ts"),
        updated_at: r.get("upd_ts"),
    }))
}

/// GET /api/customers/{id}
pub async fn get_one(State(st): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let db = st.db().await?;
    match load_customer(&db, id).await? {
        Some(c) => Ok(ctx.ok(c)),
        None => Err(ApiError::not_found("customer", id)),
    }
}

#[derive(Debug, Deserialize)]
pub struct NewAddress {
    kind: Option<String>,
    line1: String,
    line2: Option<String>,
    city: String,
    postal_code: String,
    country: String,
}

#[derive(Debug, Deserialize)]
pub struct NewCustomer {
    email: String,
    first_name: String,
    last_name: String,
    phone: Option<String>,
    loyalty_tier: Option<String>,
    address: Option<NewAddress>,
}

fn validate_email(e: &str) -> ApiResult<String> {
    let e = e.trim().to_lowercase();
    let ok = e.len() <= 254
        && !e.chars().any(char::is_whitespace)
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if !ok {
        return Err(ApiError::unprocessable("invalid_email", format!("{e:?} is not an email address")));
    }
    Ok(e)
}

/// POST /api/customers: creates a customer (and an optional default address) and queues a
/// welcome e-mail.
pub async fn create(State(st): State<AppState>, ctx: Ctx, ApiJson(body): ApiJson<NewCustomer>) -> ApiResult<Response> {
    let email = validate_email(&body.email)?;
    let first = required_text("first_name", &body.first_name, 100)?;
    let last = required_text("last_name", &body.last_name, 100)?;
    let phone = body.phone.as_deref().map(|p| required_text("phone", p, 40)).transpose()?;
    let tier = body.loyalty_tier.unwrap_or_else(|| "standard".into());
    if !["standard", "silver", "gold"].contains(&tier.as_str()) {
        return Err(ApiError::unprocessable("invalid_field", "loyalty_tier must be standard, silver or gold"));
    }
    let address = match body.address {
        None => None,
        Some(a) => {
            let kind = a.kind.unwrap_or_else(|| "shipping".into());
            if kind != "shipping" && kind != "billing" {
                return Err(ApiError::unprocessable("invalid_field", "address.kind must be shipping or billing"));
            }
            let country = a.country.trim().to_uppercase();
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ApiError::unprocessable("invalid_field", "address.country must be a two-letter code"));
            }
            Some((
                kind,
                required_text("address.line1", &a.line1, 200)?,
                a.line2.as_deref().map(|l| required_text("address.line2", l, 200)).transpose()?,
                required_text("address.city", &a.city, 100)?,
                required_text("address.postal_code", &a.postal_code, 20)?,
                country,
            ))
        }
    };

    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    let ins = tx
        .prepare_cached(
            "INSERT INTO customers (email, first_name, last_name, phone, loyalty_tier)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email) DO NOTHING
             RETURNING id",
        )
        .await?;
    let Some(row) = tx.query_opt(&ins, &[&email, &first, &last, &phone, &tier]).await? else {
        return Err(ApiError::conflict("duplicate_email", format!("a customer with email {email} exists")));
    };
    let id: i64 = row.get(0);
    if let Some((kind, line1, line2, city, postal, country)) = address {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO addresses (cust_id, kind, line1, line2, city, postal_code, country, is_default)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, true)",
            )
            .await?;
        tx.execute(&stmt, &[&id, &kind, &line1, &line2, &city, &postal, &country]).await?;
    }
    let note = tx
        .prepare_cached(
            "INSERT INTO notifications (cust_id, channel, template, payload)
             VALUES ($1, 'email', 'welcome', jsonb_build_object('first_name', $2::text))",
        )
        .await?;
    tx.execute(&note, &[&id, &first]).await?;
    let customer = load_customer(&tx, id).await?.ok_or_else(|| ApiError::internal("customer vanished"))?;
    tx.commit().await?;
    Ok(ctx.created(customer))
}

#[derive(Debug, Deserialize)]
pub struct OrdersQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct OrderSummary {
    pub id: i64,
    pub status: String,
    #[serde(serialize_with = "format::money")]
    pub total: Decimal,
    pub currency: String,
    pub item_count: i64,
    pub unit_count: i64,
    #[serde(serialize_with = "format::ts")]
    pub placed_at: DateTime<Utc>,
    #[serde(serialize_with = "format::opt_ts")]
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// GET /api/customers/{id}/orders?limit=&offset=: the customer's orders, oldest first.
pub async fn orders(
    State(st): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> ApiResult<Response> {
    let (limit, offset) = pagination(q.limit, q.offset)?;
    let db = st.db().await?;
    if !customer_exists(&db, id).await? {
        return Err(ApiError::not_found("customer", id));
    }
    let stmt = db
        .prepare_cached(
            "SELECT o.id, o.status_cd, o.total_amt, o.currency, o.placed_at, o.cancelled_at,
                    count(oi.id) AS item_count, COALESCE(sum(oi.qty), 0)::bigint AS unit_count
               FROM orders o
               LEFT JOIN order_items oi ON oi.order_id = o.id
              WHERE o.cust_id = $1
              GROUP BY o.id
              ORDER BY o.id
              LIMIT $2 OFFSET $3",
        )
        .await?;
    let count = db.prepare_cached("SELECT count(*) FROM orders WHERE cust_id = $1").await?;
    let rows = db.query(&stmt, &[&id, &limit, &offset]).await?;
    let total: i64 = db.query_one(&count, &[&id]).await?.get(0);
    let orders: Vec<OrderSummary> = rows
        .iter()
        .map(|r| OrderSummary {
            id: r.get("id"),
            status: r.get("status_cd"),
            total: r.get("total_amt"),
            currency: r.get("currency"),
            item_count: r.get("item_count"),
            unit_count: r.get("unit_count"),
            placed_at: r.get("placed_at"),
            cancelled_at: r.get("cancelled_at"),
        })
        .collect();
    Ok(ctx.page(orders, Page { limit, offset, total }))
}

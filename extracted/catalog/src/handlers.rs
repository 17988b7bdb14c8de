//! Handlers. Each query reads the catalog's own tables and builds the legacy JSON shape.

use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strangler_kit::api::{cents, pagination, ts};
use strangler_kit::{ApiError, ApiPath, ApiQuery, Ctx, Db, Page};
use tokio_postgres::Row;

#[derive(Debug, Serialize)]
pub struct CategoryRef {
    id: i64,
    name: String,
    slug: String,
}

#[derive(Debug, Serialize)]
pub struct Stock {
    quantity: i32,
    warehouse: String,
    in_stock: bool,
}

#[derive(Debug, Serialize)]
pub struct Product {
    id: i64,
    sku: String,
    name: String,
    description: String,
    #[serde(serialize_with = "cents")]
    price: i64,
    currency: String,
    category: CategoryRef,
    attributes: Value,
    tags: Vec<String>,
    active: bool,
    stock: Option<Stock>,
    #[serde(serialize_with = "ts")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts")]
    updated_at: DateTime<Utc>,
}

const PRODUCT_SELECT: &str = "
    SELECT p.id, p.sku, p.title, p.description, pp.price_cents, pp.currency, p.attributes, p.tags,
           p.is_active, p.created_at, p.updated_at, c.id AS cat_id, c.title AS cat_title,
           c.slug AS cat_slug, s.on_hand, s.warehouse
      FROM products p
      JOIN product_prices pp ON pp.product_id = p.id
      JOIN categories c ON c.id = p.category_id
      LEFT JOIN stock_levels s ON s.product_id = p.id";

/// Category (id or slug, including its direct children), case-insensitive substring of name or
/// description, and tag — the legacy search semantics.
const PRODUCT_FILTER: &str = "
     WHERE ($1::text IS NULL OR p.category_id IN (
              SELECT c2.id FROM categories c2 LEFT JOIN categories cp ON cp.id = c2.parent_id
               WHERE c2.id::text = $1 OR c2.slug = $1 OR cp.id::text = $1 OR cp.slug = $1))
       AND ($2::text IS NULL OR strpos(lower(p.title || ' ' || p.description), lower($2)) > 0)
       AND ($3::text IS NULL OR $3 = ANY (p.tags))";

fn product(r: &Row) -> Product {
    let on_hand: Option<i32> = r.get("on_hand");
    Product {
        id: r.get("id"),
        sku: r.get("sku"),
        name: r.get("title"),
        description: r.get("description"),
        price: r.get("price_cents"),
        currency: r.get("currency"),
        category: CategoryRef { id: r.get("cat_id"), name: r.get("cat_title"), slug: r.get("cat_slug") },
        attributes: r.get("attributes"),
        tags: r.get("tags"),
        active: r.get("is_active"),
        stock: on_hand.map(|q| Stock { quantity: q, warehouse: r.get("warehouse"), in_stock: q > 0 }),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    category: Option<String>,
    q: Option<String>,
    tag: Option<String>,
}

/// GET /api/products?limit=&offset=&category=&q=&tag=
pub async fn list_products(db: Db, ctx: Ctx, ApiQuery(q): ApiQuery<ListQuery>) -> Result<Response, ApiError> {
    let (limit, offset) = pagination(q.limit, q.offset)?;
    let non_empty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let (category, search, tag) = (non_empty(q.category), non_empty(q.q), non_empty(q.tag));
    if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::bad_request("invalid_query", "q must be at most 200 characters"));
    }
    let c = db.client().await?;
    let list = c.prepare_cached(&format!("{PRODUCT_SELECT}{PRODUCT_FILTER} ORDER BY p.id LIMIT $4 OFFSET $5")).await?;
    let count = c.prepare_cached(&format!("SELECT count(*) FROM products p{PRODUCT_FILTER}")).await?;
    let rows = c.query(&list, &[&category, &search, &tag, &limit, &offset]).await?;
    let total: i64 = c.query_one(&count, &[&category, &search, &tag]).await?.get(0);
    Ok(ctx.page(rows.iter().map(product).collect::<Vec<_>>(), Page { limit, offset, total }))
}

/// GET /api/products/{id}
pub async fn get_product(db: Db, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> Result<Response, ApiError> {
    let c = db.client().await?;
    let stmt = c.prepare_cached(&format!("{PRODUCT_SELECT} WHERE p.id = $1")).await?;
    match c.query_opt(&stmt, &[&id]).await? {
        Some(r) => Ok(ctx.ok(product(&r))),
        None => Err(ApiError::not_found("product", id)),
    }
}

#[derive(Debug, Serialize)]
pub struct Category {
    id: i64,
    parent_id: Option<i64>,
    name: String,
    slug: String,
    sort_order: i32,
    product_count: i64,
    #[serde(serialize_with = "ts")]
    created_at: DateTime<Utc>,
}

/// GET /api/categories: every category by id, with its number of products.
pub async fn list_categories(db: Db, ctx: Ctx) -> Result<Response, ApiError> {
    let c = db.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT c.id, c.parent_id, c.title, c.slug, c.position, c.created_at, count(p.id) AS n
               FROM categories c LEFT JOIN products p ON p.category_id = c.id
              GROUP BY c.id ORDER BY c.id",
        )
        .await?;
    let cats: Vec<Category> = c
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| Category {
            id: r.get("id"),
            parent_id: r.get("parent_id"),
            name: r.get("title"),
            slug: r.get("slug"),
            sort_order: r.get("position"),
            product_count: r.get("n"),
            created_at: r.get("created_at"),
        })
        .collect();
    Ok(ctx.ok(cats))
}

#[derive(Debug, Serialize)]
pub struct StockLevel {
    sku: String,
    product_id: i64,
    product_name: String,
    quantity: i32,
    in_stock: bool,
    open_order_units: i64,
    warehouse: String,
    #[serde(serialize_with = "ts")]
    updated_at: DateTime<Utc>,
}

/// GET /api/inventory/{sku}: stock on hand and units in open (placed, not shipped) orders.
pub async fn get_stock(db: Db, ctx: Ctx, ApiPath(sku): ApiPath<String>) -> Result<Response, ApiError> {
    if sku.is_empty() || sku.len() > 64 {
        return Err(ApiError::bad_request("invalid_path", "sku must be 1 to 64 characters"));
    }
    let c = db.client().await?;
    let stmt = c
        .prepare_cached(
            "SELECT s.sku, s.product_id, p.title, s.on_hand, s.warehouse, s.updated_at,
                    (SELECT COALESCE(sum(l.qty), 0)::bigint
                       FROM open_order_lines l JOIN order_states o ON o.id = l.order_id
                      WHERE l.product_id = s.product_id
                        AND o.status IN ('pending_payment', 'paid')) AS open_units
               FROM stock_levels s JOIN products p ON p.id = s.product_id
              WHERE s.sku = $1",
        )
        .await?;
    let Some(r) = c.query_opt(&stmt, &[&sku]).await? else {
        return Err(ApiError::not_found("sku", &sku));
    };
    let quantity: i32 = r.get("on_hand");
    Ok(ctx.ok(StockLevel {
        sku: r.get("sku"),
        product_id: r.get("product_id"),
        product_name: r.get("title"),
        quantity,
        in_stock: quantity > 0,
        open_order_units: r.get("open_units"),
        warehouse: r.get("warehouse"),
        updated_at: r.get("updated_at"),
    }))
}

//! Products: the catalog, joined with categories and inventory.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::format::{self, parse_money, required_text};
use super::{pagination, ApiJson, ApiPath, ApiQuery, AppState, Ctx, Page};
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Serialize)]
pub struct CategoryRef {
    pub id: i64,
    pub name: String,
    pub slug: String,
}

#[derive(Debug, Serialize)]
pub struct Stock {
    pub quantity: i32,
    pub warehouse: String,
    pub in_stock: bool,
}

#[derive(Debug, Serialize)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: String,
    #[serde(serialize_with = "format::money")]
    pub price: Decimal,
    pub currency: String,
    pub category: CategoryRef,
    pub attributes: Value,
    pub tags: Vec<String>,
    pub active: bool,
    pub stock: Option<Stock>,
    #[serde(serialize_with = "format::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "format::ts")]
    pub updated_at: DateTime<Utc>,
}

const PRODUCT_SELECT: &str = "
    SELECT p.id, p.sku, p.name, p.descr, p.price, p.currency, p.attributes, p.tags, p.active_flg,
           p.ins_ts, p.upd_ts, c.id AS cat_id, c.name AS cat_name, c.slug AS cat_slug,
           i.quantity, i.warehouse_code
      FROM products p
      JOIN categories c ON c.id = p.cat_id
      LEFT JOIN inventory i ON i.product_id = p.id";

/// The legacy search filter: category (id or slug, including its direct children), a substring
/// of name or description (case-insensitive) and a tag.
const PRODUCT_FILTER: &str = "
     WHERE ($1::text IS NULL OR p.cat_id IN (
              SELECT c2.id FROM categories c2 LEFT JOIN categories cp ON cp.id = c2.parent_id
               WHERE c2.id::text = $1 OR c2.slug = $1 OR cp.id::text = $1 OR cp.slug = $1))
       AND ($2::text IS NULL OR strpos(lower(p.name || ' ' || p.descr), lower($2)) > 0)
       AND ($3::text IS NULL OR $3 = ANY (p.tags))";

fn product_from_row(r: &Row) -> Product {
    let quantity: Option<i32> = r.get("quantity");
    Product {
        id: r.get("id"),
        sku: r.get("sku"),
        name: r.get("name"),
        description: r.get("descr"),
        price: r.get("price"),
        currency: r.get("currency"),
        category: CategoryRef { id: r.get("cat_id"), name: r.get("cat_name"), slug: r.get("cat_slug") },
        attributes: r.get("attributes"),
        tags: r.get("tags"),
        active: r.get("active_flg"),
        stock: quantity.map(|q| Stock { quantity: q, warehouse: r.get("warehouse_code"), in_stock: q > 0 }),
        created_at: r.get("ins_ts"),
        updated_at: r.get("upd_ts"),
    }
}

pub(crate) async fn load_product(c: &impl GenericClient, id: i64) -> ApiResult<Option<Product>> {
    let stmt = c.prepare_cached(&format!("{PRODUCT_SELECT} WHERE p.id = $1")).await?;
    Ok(c.query_opt(&stmt, &[&id]).await?.as_ref().map(product_from_row))
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
pub async fn list(State(st): State<AppState>, ctx: Ctx, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Response> {
    let (limit, offset) = pagination(q.limit, q.offset)?;
    let non_empty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let category = non_empty(q.category);
    let search = non_empty(q.q);
    let tag = non_empty(q.tag);
    if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::bad_request("invalid_query", "q must be at most 200 characters"));
    }
    let db = st.db().await?;
    let list_stmt =
        db.prepare_cached(&format!("{PRODUCT_SELECT}{PRODUCT_FILTER} ORDER BY p.id LIMIT $4 OFFSET $5")).await?;
    let count_stmt = db.prepare_cached(&format!("SELECT count(*) FROM products p{PRODUCT_FILTER}")).await?;
    let rows = db.query(&list_stmt, &[&category, &search, &tag, &limit, &offset]).await?;
    let total: i64 = db.query_one(&count_stmt, &[&category, &search, &tag]).await?.get(0);
    let products: Vec<Product> = rows.iter().map(product_from_row).collect();
    Ok(ctx.page(products, Page { limit, offset, total }))
}

/// GET /api/products/{id}
pub async fn get_one(State(st): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let db = st.db().await?;
    match load_product(&db, id).await? {
        Some(p) => Ok(ctx.ok(p)),
        None => Err(ApiError::not_found("product", id)),
    }
}

#[derive(Debug, Deserialize)]
pub struct NewProduct {
    sku: String,
    name: String,
    description: Option<String>,
    category_id: i64,
    price: Value,
    currency: Option<String>,
    attributes: Option<Value>,
    tags: Option<Vec<String>>,
    active: Option<bool>,
    initial_stock: Option<i64>,
}

fn validate_sku(sku: &str) -> ApiResult<String> {
    let sku = sku.trim();
    if sku.is_empty() || sku.len() > 64 || !sku.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::unprocessable(
            "invalid_sku",
            "sku must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
        ));
    }
    Ok(sku.to_string())
}

fn validate_currency(c: Option<&str>) -> ApiResult<String> {
    let c = c.unwrap_or("USD");
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::unprocessable("invalid_currency", "currency must be a three-letter ISO code like USD"));
    }
    Ok(c.to_string())
}

fn validate_attributes(a: Option<Value>) -> ApiResult<Option<Value>> {
    match a {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(ApiError::unprocessable("invalid_attributes", "attributes must be an object")),
    }
}

fn validate_tags(t: Option<Vec<String>>) -> ApiResult<Option<Vec<String>>> {
    let Some(tags) = t else { return Ok(None) };
    if tags.len() > 20 {
        return Err(ApiError::unprocessable("invalid_tags", "at most 20 tags"));
    }
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.trim().to_lowercase();
        if t.is_empty() || t.chars().count() > 50 {
            return Err(ApiError::unprocessable("invalid_tags", "tags must be 1 to 50 characters"));
        }
        out.push(t);
    }
    Ok(Some(out))
}

async fn ensure_category(c: &impl GenericClient, id: i64) -> ApiResult<()> {
    let stmt = c.prepare_cached("SELECT 1 FROM categories WHERE id = $1").await?;
    if c.query_opt(&stmt, &[&id]).await?.is_none() {
        return Err(ApiError::unprocessable("unknown_category", format!("category {id} does not exist")));
    }
    Ok(())
}

/// POST /api/products: creates the product and its inventory row in one transaction.
pub async fn create(State(st): State<AppState>, ctx: Ctx, ApiJson(body): ApiJson<NewProduct>) -> ApiResult<Response> {
    let sku = validate_sku(&body.sku)?;
    let name = required_text("name", &body.name, 200)?;
    let descr = body.description.unwrap_or_default();
    if descr.chars().count() > 5000 {
        return Err(ApiError::unprocessable("invalid_field", "description is at most 5000 characters"));
    }
    let price = parse_money("price", &body.price)?;
    let currency = validate_currency(body.currency.as_deref())?;
    let attributes = validate_attributes(body.attributes)?.unwrap_or_else(|| serde_json::json!({}));
    let tags = validate_tags(body.tags)?.unwrap_or_default();
    let active = body.active.unwrap_or(true);
    let stock = body.initial_stock.unwrap_or(0);
    let stock = i32::try_from(stock)
        .ok()
        .filter(|s| (0..=1_000_000).contains(s))
        .ok_or_else(|| ApiError::unprocessable("invalid_quantity", "initial_stock must be between 0 and 1000000"))?;

    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    ensure_category(&tx, body.category_id).await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO products (sku, name, descr, cat_id, price, currency, attributes, tags, active_flg)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (sku) DO NOTHING
             RETURNING id",
        )
        .await?;
    let row = tx
        .query_opt(&insert, &[&sku, &name, &descr, &body.category_id, &price, &currency, &attributes, &tags, &active])
        .await?;
    let Some(row) = row else {
        return Err(ApiError::conflict("duplicate_sku", format!("a product with sku {sku} exists")));
    };
    let id: i64 = row.get(0);
    let inv =
        tx.prepare_cached("INSERT INTO inventory (product_id, sku, quantity) VALUES ($1, $2, $3) RETURNING id").await?;
    let inv_id: i64 = tx.query_one(&inv, &[&id, &sku, &stock]).await?.get(0);
    if stock > 0 {
        let mv = tx
            .prepare_cached(
                "INSERT INTO inventory_movements (inventory_id, delta, reason) VALUES ($1, $2, 'initial_stock')",
            )
            .await?;
        tx.execute(&mv, &[&inv_id, &stock]).await?;
    }
    let product = load_product(&tx, id).await?.ok_or_else(|| ApiError::internal("product vanished"))?;
    tx.commit().await?;
    Ok(ctx.created(product))
}

#[derive(Debug, Deserialize)]
pub struct ProductUpdate {
    sku: Option<String>,
    name: Option<String>,
    description: Option<String>,
    category_id: Option<i64>,
    price: Option<Value>,
    attributes: Option<Value>,
    tags: Option<Vec<String>>,
    active: Option<bool>,
}

/// PUT /api/products/{id}: updates the fields present in the body (legacy "PUT means patch").
/// The sku is immutable (inventory and order items reference it).
pub async fn update(
    State(st): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ProductUpdate>,
) -> ApiResult<Response> {
    let name = body.name.as_deref().map(|n| required_text("name", n, 200)).transpose()?;
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 5000) {
        return Err(ApiError::unprocessable("invalid_field", "description is at most 5000 characters"));
    }
    let price = body.price.as_ref().map(|p| parse_money("price", p)).transpose()?;
    let attributes = validate_attributes(body.attributes)?;
    let tags = validate_tags(body.tags)?;
    let nothing_to_update = name.is_none()
        && body.description.is_none()
        && body.category_id.is_none()
        && price.is_none()
        && attributes.is_none()
        && tags.is_none()
        && body.active.is_none();
    let empty = || ApiError::unprocessable("empty_update", "the body names no field to update");
    if nothing_to_update && body.sku.is_none() {
        return Err(empty());
    }

    let mut db = st.db().await?;
    let tx = db.transaction().await?;
    let current = tx.prepare_cached("SELECT sku FROM products WHERE id = $1 FOR UPDATE").await?;
    let Some(row) = tx.query_opt(&current, &[&id]).await? else {
        return Err(ApiError::not_found("product", id));
    };
    let current_sku: String = row.get(0);
    if body.sku.as_deref().is_some_and(|s| s.trim() != current_sku) {
        return Err(ApiError::unprocessable("sku_immutable", "the sku of a product cannot change"));
    }
    if let Some(cat) = body.category_id {
        ensure_category(&tx, cat).await?;
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE products
                SET name = COALESCE($2, name),
                    descr = COALESCE($3, descr),
                    cat_id = COALESCE($4, cat_id),
                    price = COALESCE($5, price),
                    attributes = COALESCE($6, attributes),
                    tags = COALESCE($7, tags),
                    active_flg = COALESCE($8, active_flg),
                    upd_ts = now()
              WHERE id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&id, &name, &body.description, &body.category_id, &price, &attributes, &tags, &body.active])
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                ApiError::unprocessable("unknown_category", "category does not exist")
            }
            _ => e.into(),
        })?;
    let product = load_product(&tx, id).await?.ok_or_else(|| ApiError::not_found("product", id))?;
    tx.commit().await?;
    Ok(ctx.ok(product))
}

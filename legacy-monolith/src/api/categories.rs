//! Categories: a two-level tree with product counts.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;

use super::format;
use super::{AppState, Ctx};
use crate::error::ApiResult;

#[derive(Debug, Serialize)]
pub struct Category {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub name: String,
    pub slug: String,
    pub sort_order: i32,
    pub product_count: i64,
    #[serde(serialize_with = "format::ts")]
    pub created_at: DateTime<Utc>,
}

/// GET /api/categories: every category, ordered by id, with how many products it holds.
pub async fn list(State(st): State<AppState>, ctx: Ctx) -> ApiResult<Response> {
    let db = st.db().await?;
    let stmt = db
        .prepare_cached(
            "SELECT c.id, c.parent_id, c.name, c.slug, c.sort_order, c.ins_ts, count(p.id) AS n
               FROM categories c
               LEFT JOIN products p ON p.cat_id = c.id
              GROUP BY c.id
              ORDER BY c.id",
        )
        .await?;
    let cats: Vec<Category> = db
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| Category {
            id: r.get("id"),
            parent_id: r.get("parent_id"),
            name: r.get("name"),
            slug: r.get("slug"),
            sort_order: r.get("sort_order"),
            product_count: r.get("n"),
            created_at: r.get("ins_ts"),
        })
        .collect();
    Ok(ctx.ok(cats))
}

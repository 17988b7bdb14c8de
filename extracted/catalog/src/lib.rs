//! The extracted catalog service: products, categories, stock reads and product search, from
//! its own database, answering with exactly the legacy monolith's JSON contract.

mod handlers;

use axum::routing::get;
use axum::Router;
use strangler_kit::{KitState, Migration, Service};

/// This service's schema migrations.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "catalog", sql: include_str!("../migrations/0001_catalog.sql") }];

/// The routes this service owns (reads only; catalog writes stay on legacy).
pub fn routes(r: Router<KitState>) -> Router<KitState> {
    r.route("/api/products", get(handlers::list_products))
        .route("/api/products/{id}", get(handlers::get_product))
        .route("/api/categories", get(handlers::list_categories))
        .route("/api/inventory/{sku}", get(handlers::get_stock))
}

/// The service, listening on 127.0.0.1:8091 unless told otherwise.
pub fn service() -> Service {
    Service::new("catalog", MIGRATIONS, routes).default_listen(([127, 0, 0, 1], 8091).into())
}

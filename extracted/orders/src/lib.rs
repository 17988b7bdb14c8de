//! The extracted orders service: order placement (reserve stock, insert order and lines,
//! capture payment, queue a notification — one transaction), lookup, cancellation and a
//! customer's orders, from its own database, with exactly the legacy monolith's JSON contract.

mod handlers;

use axum::routing::{get, post};
use axum::Router;
use strangler_kit::{KitState, Migration, Service};

/// This service's schema migrations.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "orders", sql: include_str!("../migrations/0001_orders.sql") }];

/// The routes this service owns.
pub fn routes(r: Router<KitState>) -> Router<KitState> {
    r.route("/api/orders", post(handlers::create))
        .route("/api/orders/{id}", get(handlers::get_one))
        .route("/api/orders/{id}/cancel", post(handlers::cancel))
        .route("/api/customers/{id}/orders", get(handlers::customer_orders))
}

/// The service, listening on 127.0.0.1:8092 unless told otherwise.
pub fn service() -> Service {
    Service::new("orders", MIGRATIONS, routes).default_listen(([127, 0, 0, 1], 8092).into())
}

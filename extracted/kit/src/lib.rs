//! strangler-kit: what every extracted service shares.
//!
//! A service is its migrations plus an axum `Router` of handlers; the kit adds the rest:
//! flags/env config ([`ServiceArgs`]), a Postgres pool, migrations under an advisory lock,
//! `/health/live` + `/health/ready` (ready only while the database answers), `/metrics`
//! (Prometheus text), request tracing that continues the gateway's W3C `traceparent`, JSON error
//! bodies ([`ApiError`]), graceful shutdown, and the **shadow dry-run**.
//!
//! # Unit of work and shadow dry-run
//! Handlers reach the database only through the [`Db`] extractor. The first use opens a pooled
//! connection and `BEGIN`s a transaction that spans the whole request. When the handler returns,
//! the kit `COMMIT`s if the response is a success, and `ROLLBACK`s if it is an error **or if the
//! request carried `x-strangler-shadow: 1`** — the header the gateway adds to mirrored writes.
//! A shadowed write therefore runs the real code path against the real schema and constraints,
//! returns the real response, and leaves no row behind (sequences still advance, as in any
//! rolled-back transaction). Dry runs are marked in logs (`shadow=true`) and counted in
//! `kit_shadow_dry_runs_total`.
//!
//! ```no_run
//! use axum::{routing::get, Json, Router};
//! use strangler_kit::{ApiError, Db, KitState, Migration, Service};
//!
//! async fn count(db: Db) -> Result<Json<i64>, ApiError> {
//!     let row = db.client().await?.query_one("SELECT count(*) FROM things", &[]).await?;
//!     Ok(Json(row.get(0)))
//! }
//!
//! const MIGRATIONS: &[Migration] = &[Migration { version: 1, name: "things", sql: "CREATE TABLE things(id bigint)" }];
//!
//! fn main() -> anyhow::Result<()> {
//!     Service::new("things", MIGRATIONS, |r: Router<KitState>| r.route("/count", get(count))).main()
//! }
//! ```

pub mod api;
mod db;
mod error;
mod health;
mod metrics;
mod migrate;
mod service;
mod telemetry;

pub use api::{ApiJson, ApiPath, ApiQuery, Ctx, Page};
pub use db::{pool, Db, DbClient, SHADOW_HEADER};
pub use error::ApiError;
pub use metrics::Metrics;
pub use migrate::{migrate, Migration};
pub use service::{shutdown_signal, KitState, RequestId, Service, ServiceArgs};
pub use telemetry::{init_telemetry, init_tracing, otlp_traces_url, Telemetry, TraceContext};

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
//! request is an authorised dry run**: it carries `x-strangler-shadow: 1; secret=<secret>`
//! ([`SHADOW_HEADER`]), the header the gateway adds to mirrored writes, with the secret the
//! gateway and the service share ([`ServiceArgs::shadow_secret`]: `--shadow-secret-file` /
//! `$STRANGLER_SHADOW_SECRET_FILE`, else `$STRANGLER_SHADOW_SECRET`).
//! A shadowed write therefore runs the real code path against the real schema and constraints,
//! returns the real response, and leaves no row behind (sequences still advance, as in any
//! rolled-back transaction). Dry runs are marked in logs (`shadow=true`) and counted in
//! `kit_shadow_dry_runs_total`.
//!
//! The gateway strips every `x-strangler-*` header a client sends, but a caller that reaches the
//! service directly could still send one. So a dry-run header **without** the right secret — no
//! secret (`x-strangler-shadow: 1`), a wrong one, or any header at all when the service has no
//! secret configured — is ignored: the request commits like any other, and is counted in
//! `kit_shadow_header_ignored_total{reason="missing_secret|wrong_secret|not_configured"}` (logged
//! at debug only; the header's value never is). The comparison is [`DryRun::classify`] from
//! `strangler-wire`, the crate that holds every contract the gateway and the services share.
//! A service started without a secret honours no dry run at all (it says so once at start), so
//! never shadow writes to it: they would commit.
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

//!
//! # Modules
//! Dependencies run one way: `service` (bootstrap, middleware) uses `db`, `api`, `health`,
//! `telemetry`, `migrate`; those use `state` (the shared [`KitState`], [`RequestId`]), `error`
//! and `metrics`, which import nothing of the kit above them.

pub mod api;
mod db;
mod error;
mod health;
mod metrics;
mod migrate;
mod service;
mod state;
mod telemetry;

pub use api::{ApiJson, ApiPath, ApiQuery, Ctx, Page};
pub use db::{check_connection, pool, Db, DbClient};
pub use error::ApiError;
pub use metrics::Metrics;
pub use migrate::{migrate, Migration};
pub use service::{shutdown_signal, Service, ServiceArgs, SHADOW_SECRET_ENV};
pub use state::{KitState, RequestId};
pub use strangler_wire::{DryRun, SharedSecret, SHADOW_HEADER};
pub use telemetry::{init_telemetry, init_tracing, otlp_traces_url, Telemetry, TraceContext};

//! The database: pool, the per-request unit of work, and the shadow dry-run.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use strangler_wire::{DryRun, SHADOW_HEADER};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tracing::Instrument;

use crate::error::ApiError;
use crate::state::KitState;

/// Builds a connection pool. `database_url` is a libpq key/value string or a `postgres://` URL;
/// its `sslmode` (default `prefer`; up to `verify-full`), `sslrootcert`, `sslcert` and `sslkey`
/// are honoured (`strangler-pg-connect`, rustls), and certificate files are read at each new
/// connection. A bad TLS parameter is an error here, before any connection; the message never
/// quotes the string.
pub fn pool(database_url: &str, max_size: usize) -> anyhow::Result<Pool> {
    let (cfg, tls) =
        strangler_pg_connect::prepare(database_url).map_err(|e| anyhow::anyhow!("invalid database URL: {e}"))?;
    let mgr = Manager::from_config(cfg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Ok(Pool::builder(mgr)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .build()?)
}

/// Opens (or takes) one connection from `pool`, built from `database_url`, to check the
/// database is reachable. A failure names host, port, database and user and, when waiting will
/// not fix it (a certificate refused under `verify-full`, a server that requires TLS while the
/// URL says `sslmode=disable`, a refused login), what to change in `DATABASE_URL`; never the
/// password.
pub async fn check_connection(pool: &Pool, database_url: &str) -> anyhow::Result<()> {
    match pool.get().await {
        Ok(_) => Ok(()),
        Err(PoolError::Backend(e)) => Err(anyhow::Error::new(strangler_pg_connect::ConnectError::new(
            database_url,
            "DATABASE_URL",
            "then restart the service",
            e,
        ))),
        Err(e) => Err(anyhow::anyhow!(
            "cannot connect to PostgreSQL {}: {e}",
            strangler_pg_connect::describe_endpoint(database_url)
        )),
    }
}

/// One request's database work: a pooled connection in an open transaction, taken lazily.
pub(crate) struct UnitOfWork {
    pool: Pool,
    shadow: bool,
    conn: Mutex<Option<Object>>,
    /// `db.transaction`, from taking the connection to COMMIT/ROLLBACK (a child of `request`).
    span: std::sync::Mutex<Option<tracing::Span>>,
}

impl UnitOfWork {
    pub(crate) fn new(pool: Pool, shadow: bool) -> Self {
        Self { pool, shadow, conn: Mutex::new(None), span: std::sync::Mutex::new(None) }
    }

    fn take_span(&self) -> Option<tracing::Span> {
        self.span.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Ends the transaction (if one was opened): commit when `commit`, else roll back.
    async fn finish(&self, commit: bool) -> Result<(), tokio_postgres::Error> {
        let mut guard = self.conn.lock().await;
        let span = self.take_span().unwrap_or_else(tracing::Span::none);
        if let Some(obj) = guard.as_ref() {
            let sql = if commit { "COMMIT" } else { "ROLLBACK" };
            span.record("db.outcome", sql);
            if let Err(e) = obj.batch_execute(sql).instrument(span.clone()).await {
                span.record("error", true);
                // Never return a connection in an unknown transaction state to the pool.
                if let Some(obj) = guard.take() {
                    drop(Object::take(obj));
                }
                return Err(e);
            }
        }
        guard.take();
        Ok(())
    }
}

impl Drop for UnitOfWork {
    fn drop(&mut self) {
        // Reached with a connection only if the handler panicked or the request was cancelled:
        // close the connection (the server rolls back) instead of pooling an open transaction.
        if let Some(obj) = self.conn.get_mut().take() {
            drop(Object::take(obj));
        }
    }
}

/// Extractor giving a handler its request's database transaction.
///
/// The transaction is committed when the handler's response is a success and rolled back when
/// it is an error or the request is an authorised shadow dry run. Handlers must not issue `COMMIT` or
/// `ROLLBACK` themselves.
pub struct Db(Arc<UnitOfWork>);

/// A borrowed connection inside the request's transaction.
pub struct DbClient<'a>(MappedMutexGuard<'a, deadpool_postgres::ClientWrapper>);

impl Deref for DbClient<'_> {
    type Target = deadpool_postgres::ClientWrapper;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Db {
    /// The request's connection, opening the transaction on first use.
    pub async fn client(&self) -> Result<DbClient<'_>, ApiError> {
        let mut guard = self.0.conn.lock().await;
        if guard.is_none() {
            let span = tracing::info_span!(
                "db.transaction",
                otel.kind = "client",
                db.system = "postgresql",
                db.outcome = tracing::field::Empty,
                error = tracing::field::Empty,
            );
            let begin = async {
                let obj = self.0.pool.get().await?;
                obj.batch_execute("BEGIN").await?;
                Ok::<_, ApiError>(obj)
            };
            let obj = begin.instrument(span.clone()).await.inspect_err(|_| {
                span.record("error", true);
            })?;
            *self.0.span.lock().unwrap_or_else(|e| e.into_inner()) = Some(span);
            *guard = Some(obj);
        }
        Ok(DbClient(MutexGuard::map(guard, |o| {
            let obj = o.as_mut().expect("set above");
            &mut **obj
        })))
    }

    /// True when this request is an authorised shadow dry run (its writes will be rolled back).
    pub fn is_shadow(&self) -> bool {
        self.0.shadow
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Db {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<UnitOfWork>>()
            .cloned()
            .map(Db)
            .ok_or_else(|| ApiError::internal("Db used outside the kit's router"))
    }
}

/// How the kit treats this request's [`SHADOW_HEADER`]: a dry run only with the service's
/// shared secret. A header without it (or with a wrong one, or on a service that has none) is
/// ignored — the request commits like any other — and counted in
/// `kit_shadow_header_ignored_total{reason}`. The header's value is never logged.
pub(crate) fn dry_run(state: &KitState, headers: &HeaderMap) -> DryRun {
    let value = headers.get(SHADOW_HEADER).map(HeaderValue::as_bytes);
    let dry_run = DryRun::classify(value, state.shadow_secret.as_deref());
    if let Some(reason) = dry_run.rejection() {
        state.metrics.shadow_header_ignored.with_label_values(&[reason]).inc();
        tracing::debug!(reason, "{SHADOW_HEADER} ignored: the request runs and commits like any other");
    }
    dry_run
}

/// Middleware: wraps the handler in its unit of work and ends the transaction afterwards.
pub(crate) async fn unit_of_work(State(state): State<KitState>, mut req: Request, next: Next) -> Response {
    let shadow = dry_run(&state, req.headers()).roll_back();
    // the `request` span (from `observe`) is current here
    tracing::Span::current().record("shadow", shadow);
    let uow = Arc::new(UnitOfWork::new(state.pool.clone(), shadow));
    req.extensions_mut().insert(uow.clone());
    let resp = next.run(req).await;
    let success = resp.status().is_success() || resp.status().is_redirection();
    if shadow {
        state.metrics.shadow_dry_runs.inc();
        tracing::debug!(shadow = true, status = resp.status().as_u16(), "shadow dry run rolled back");
    }
    match uow.finish(success && !shadow).await {
        Ok(()) => resp,
        Err(e) => ApiError::internal(format!("ending the transaction: {e}")).into_response(),
    }
}

//! Service bootstrap: flags and env, pool, migrations, router, serve with graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use deadpool_postgres::Pool;
use strangler_wire::{SecretError, SharedSecret, SHADOW_HEADER};
use tracing::Instrument;

use crate::api::{method_not_allowed, no_route};
use crate::db::{check_connection, pool, unit_of_work};
use crate::health;
use crate::metrics::Metrics;
use crate::migrate::{migrate, Migration};
use crate::state::{KitState, RequestId};
use crate::telemetry::{continue_trace, init_telemetry, TraceContext};

/// The environment variable holding the shared dry-run secret (the gateway's
/// `shadow_secret_env` names the same one). Read from the environment only, never from a flag:
/// a process's arguments are visible to every user of the machine.
pub const SHADOW_SECRET_ENV: &str = "STRANGLER_SHADOW_SECRET";

/// Flags (and environment variables) every service accepts.
#[derive(Debug, Clone, Parser)]
pub struct ServiceArgs {
    /// Address to listen on (default: the service's own port on 127.0.0.1).
    #[arg(long, env = "LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The service's own database: libpq key/value string or postgres:// URL. TLS as libpq:
    /// sslmode (disable, prefer [default], require, verify-ca, verify-full), sslrootcert, sslcert,
    /// sslkey.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Maximum pooled database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
    /// Log lines as JSON instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,
    /// Apply migrations and exit.
    #[arg(long, default_value_t = false)]
    pub migrate_only: bool,
    /// File holding the secret shared with the gateway (16–512 visible ASCII characters, no `;`;
    /// a trailing newline is fine). Wins over $STRANGLER_SHADOW_SECRET, the other way to give it.
    /// Without either, the service honours no dry run: a request carrying `x-strangler-shadow`
    /// commits like any other.
    #[arg(long, env = "STRANGLER_SHADOW_SECRET_FILE")]
    pub shadow_secret_file: Option<PathBuf>,
}

impl ServiceArgs {
    /// The shared dry-run secret: from `--shadow-secret-file` when given, else from
    /// $STRANGLER_SHADOW_SECRET when set and not empty, else `None` (no dry runs).
    /// Err when the file cannot be read or the value is not a valid secret.
    pub fn shadow_secret(&self) -> Result<Option<SharedSecret>, SecretError> {
        shadow_secret_from(self.shadow_secret_file.as_deref(), |k| std::env::var_os(k))
    }
}

fn shadow_secret_from(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Option<SharedSecret>, SecretError> {
    if file.is_some() {
        return SharedSecret::load(None, file);
    }
    match env(SHADOW_SECRET_ENV) {
        Some(v) if !v.is_empty() => {
            let v = v.into_string().map_err(|_| SecretError::Invalid(format!("{SHADOW_SECRET_ENV} is not UTF-8")))?;
            SharedSecret::new(&v).map(Some)
        }
        _ => Ok(None),
    }
}

/// An extracted service: a name, its migrations and its routes. The kit does the rest.
pub struct Service {
    name: &'static str,
    default_listen: SocketAddr,
    migrations: &'static [Migration],
    routes: fn(Router<KitState>) -> Router<KitState>,
    shadow_secret: Option<Arc<SharedSecret>>,
}

impl Service {
    /// A service called `name` whose handlers are added to the router by `routes`.
    pub fn new(
        name: &'static str,
        migrations: &'static [Migration],
        routes: fn(Router<KitState>) -> Router<KitState>,
    ) -> Self {
        Self { name, default_listen: ([127, 0, 0, 1], 8090).into(), migrations, routes, shadow_secret: None }
    }

    /// The listen address used when neither `--listen` nor `LISTEN` is given.
    pub fn default_listen(mut self, addr: SocketAddr) -> Self {
        self.default_listen = addr;
        self
    }

    /// The secret that makes a dry-run header authoritative (see the crate docs). [`Service::run`]
    /// and [`Service::main`] take it from [`ServiceArgs::shadow_secret`] unless set here.
    pub fn shadow_secret(mut self, secret: Option<SharedSecret>) -> Self {
        self.shadow_secret = secret.map(Arc::new);
        self
    }

    /// The whole process: parse flags, set up logging, run. For `fn main`. Exits with code 2,
    /// before the runtime starts, when the dry-run secret is given but unusable.
    pub fn main(self) -> anyhow::Result<()> {
        let args = ServiceArgs::parse();
        let telemetry = init_telemetry(self.name, args.log_json);
        let mut service = self;
        if service.shadow_secret.is_none() {
            match args.shadow_secret() {
                Ok(secret) => service = service.shadow_secret(secret),
                Err(e) => {
                    tracing::error!(service = service.name, "the shadow dry-run secret: {e}");
                    drop(telemetry);
                    std::process::exit(2);
                }
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let result = runtime.block_on(service.run(args));
        drop(runtime);
        // after the drain: export the last requests' spans (blocking, so outside the runtime)
        telemetry.shutdown();
        result
    }

    /// Connects, migrates and serves until SIGTERM or Ctrl-C.
    pub async fn run(mut self, args: ServiceArgs) -> anyhow::Result<()> {
        if self.shadow_secret.is_none() {
            self = self.shadow_secret(args.shadow_secret()?);
        }
        let pool = pool(&args.database_url, args.pool_size)?;
        check_connection(&pool, &args.database_url).await?;
        self.migrate(&pool).await?;
        if args.migrate_only {
            return Ok(());
        }
        let addr = args.listen.unwrap_or(self.default_listen);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
        tracing::info!(service = self.name, %addr, "listening");
        self.serve(listener, pool, shutdown_signal()).await
    }

    /// Applies this service's migrations.
    pub async fn migrate(&self, pool: &Pool) -> anyhow::Result<()> {
        let mut obj = pool.get().await.map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
        let client: &mut tokio_postgres::Client = &mut obj;
        migrate(client, self.name, self.migrations).await?;
        Ok(())
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        pool: Pool,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if self.shadow_secret.is_some() {
            tracing::info!(
                service = self.name,
                "shadow dry runs enabled: {SHADOW_HEADER} is honoured with the shared secret"
            );
        } else {
            tracing::info!(
                service = self.name,
                "shadow dry runs disabled (no {SHADOW_SECRET_ENV}): a request carrying {SHADOW_HEADER} commits like any other"
            );
        }
        axum::serve(listener, self.app(pool)).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }

    /// The complete router (handlers + health + metrics + middleware), for tests without a socket.
    pub fn app(&self, pool: Pool) -> Router {
        let state = KitState {
            name: self.name,
            pool,
            metrics: Arc::new(Metrics::new(self.name)),
            shadow_secret: self.shadow_secret.clone(),
        };
        let api = (self.routes)(Router::new()).route_layer(from_fn_with_state(state.clone(), unit_of_work));
        Router::new()
            .route("/health/live", get(health::live))
            .route("/health/ready", get(health::ready))
            .route("/metrics", get(health::metrics))
            .merge(api)
            .route_layer(from_fn_with_state(state.clone(), observe))
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state)
    }
}

/// Middleware: request id, trace context, one span per request, metrics.
async fn observe(State(state): State<KitState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let incoming = TraceContext::incoming(req.headers());
    // Probes (orchestrator, the gateway's active health checks, Prometheus) are not traffic:
    // no span, so they neither flood the trace backend nor the debug log. Still counted below.
    let probe = route.starts_with("/health/") || route == "/metrics";
    let span = if probe {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "request",
            service = state.name,
            method = %method,
            route = %route,
            trace_id = tracing::field::Empty,
            request_id = %request_id,
            // recorded by the unit of work: true for an authorised dry run
            shadow = tracing::field::Empty,
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.response.status_code = tracing::field::Empty,
        )
    };
    // exported: a child of the gateway's span; the logged trace id is the exported one
    let trace_id = continue_trace(&span, incoming.as_ref())
        .or_else(|| incoming.map(|t| t.trace_id))
        .unwrap_or_else(|| TraceContext::from_headers(&Default::default()).trace_id);
    span.record("trace_id", tracing::field::display(&trace_id));
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    let elapsed = start.elapsed();
    state.metrics.requests.with_label_values(&[route.as_str(), method.as_str(), status.as_str()]).inc();
    state.metrics.latency.with_label_values(&[route.as_str(), method.as_str()]).observe(elapsed.as_secs_f64());
    span.record("http.response.status_code", status.as_u16());
    span.in_scope(|| {
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp.into_response()
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: draining in-flight requests");
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn env(value: Option<&'static str>) -> impl Fn(&str) -> Option<OsString> {
        move |k| (k == SHADOW_SECRET_ENV).then_some(value).flatten().map(OsString::from)
    }

    #[test]
    fn shadow_secret_from_file_or_env() {
        let dir = tempfile_dir();
        let file = dir.join("secret");
        std::fs::write(&file, "from-the-file-0123456789\n").unwrap();
        // the file wins over the environment
        let s = shadow_secret_from(Some(&file), env(Some("from-the-env-0123456789"))).unwrap().unwrap();
        assert_eq!(s.expose(), "from-the-file-0123456789");
        let s = shadow_secret_from(None, env(Some("from-the-env-0123456789"))).unwrap().unwrap();
        assert_eq!(s.expose(), "from-the-env-0123456789");
        // unset or empty: no dry runs
        assert_eq!(shadow_secret_from(None, env(None)).unwrap(), None);
        assert_eq!(shadow_secret_from(None, env(Some(""))).unwrap(), None);
        // given but unusable: an error, never silently "no secret"
        assert!(matches!(shadow_secret_from(None, env(Some("short"))), Err(SecretError::Invalid(_))));
        assert!(matches!(shadow_secret_from(Some(&dir.join("missing")), env(None)), Err(SecretError::File(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_secret_is_no_flag_and_its_file_is() {
        let a = ServiceArgs::try_parse_from(["svc", "--database-url", "x", "--shadow-secret-file", "/run/s"]).unwrap();
        assert_eq!(a.shadow_secret_file.as_deref(), Some(Path::new("/run/s")));
        assert!(ServiceArgs::try_parse_from(["svc", "--database-url", "x", "--shadow-secret", "s"]).is_err());
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kit-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

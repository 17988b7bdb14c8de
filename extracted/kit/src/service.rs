//! Service bootstrap: flags and env, pool, migrations, router, serve with graceful shutdown.

use std::net::SocketAddr;
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
use tracing::Instrument;

use crate::db::{is_shadow, unit_of_work};
use crate::{health, migrate, Metrics, Migration, TraceContext};

/// What handlers and the kit's own routes share.
#[derive(Clone)]
pub struct KitState {
    /// The service's name (in logs, metrics and health bodies).
    pub name: &'static str,
    /// The service's own database.
    pub pool: Pool,
    /// The service's metrics registry.
    pub metrics: Arc<Metrics>,
}

/// Flags (and environment variables) every service accepts.
#[derive(Debug, Clone, Parser)]
pub struct ServiceArgs {
    /// Address to listen on (default: the service's own port on 127.0.0.1).
    #[arg(long, env = "LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The service's own database: libpq key/value string or postgres:// URL.
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
}

/// The request id of the current request (`x-request-id`, kept if the client or gateway sent
/// one, generated otherwise). Handlers may extract it with `Extension<RequestId>`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An extracted service: a name, its migrations and its routes. The kit does the rest.
pub struct Service {
    name: &'static str,
    default_listen: SocketAddr,
    migrations: &'static [Migration],
    routes: fn(Router<KitState>) -> Router<KitState>,
}

impl Service {
    /// A service called `name` whose handlers are added to the router by `routes`.
    pub fn new(
        name: &'static str,
        migrations: &'static [Migration],
        routes: fn(Router<KitState>) -> Router<KitState>,
    ) -> Self {
        Self { name, default_listen: ([127, 0, 0, 1], 8090).into(), migrations, routes }
    }

    /// The listen address used when neither `--listen` nor `LISTEN` is given.
    pub fn default_listen(mut self, addr: SocketAddr) -> Self {
        self.default_listen = addr;
        self
    }

    /// The whole process: parse flags, set up logging, run. For `fn main`.
    pub fn main(self) -> anyhow::Result<()> {
        let args = ServiceArgs::parse();
        let telemetry = crate::init_telemetry(self.name, args.log_json);
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let result = runtime.block_on(self.run(args));
        drop(runtime);
        // after the drain: export the last requests' spans (blocking, so outside the runtime)
        telemetry.shutdown();
        result
    }

    /// Connects, migrates and serves until SIGTERM or Ctrl-C.
    pub async fn run(self, args: ServiceArgs) -> anyhow::Result<()> {
        let pool = crate::pool(&args.database_url, args.pool_size)?;
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
        axum::serve(listener, self.app(pool)).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }

    /// The complete router (handlers + health + metrics + middleware), for tests without a socket.
    pub fn app(&self, pool: Pool) -> Router {
        let state = KitState { name: self.name, pool, metrics: Arc::new(Metrics::new(self.name)) };
        let api = (self.routes)(Router::new()).route_layer(from_fn_with_state(state.clone(), unit_of_work));
        Router::new()
            .route("/health/live", get(health::live))
            .route("/health/ready", get(health::ready))
            .route("/metrics", get(health::metrics))
            .merge(api)
            .route_layer(from_fn_with_state(state.clone(), observe))
            .fallback(crate::api::no_route)
            .method_not_allowed_fallback(crate::api::method_not_allowed)
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
    let shadow = is_shadow(req.headers());
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
            shadow,
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.response.status_code = tracing::field::Empty,
        )
    };
    // exported: a child of the gateway's span; the logged trace id is the exported one
    let trace_id = crate::telemetry::continue_trace(&span, incoming.as_ref())
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

//! The admin port: health (open), metrics, config management and shadow reports (bearer token).
//! Runs on its own single-threaded tokio runtime so it never competes with the proxy's hot path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::metrics::metrics;
use crate::reload::ConfigStore;
use crate::rollout::controller::{Action, Controller};
use crate::shadow::ShadowService;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<ConfigStore>,
    /// Shadow reports.
    pub shadow: Arc<ShadowService>,
    /// Rollouts: status, history, operators' actions.
    pub rollouts: Option<Arc<Controller>>,
    /// The required bearer token, as the serving config says (none configured: the protected
    /// endpoints are open, and a warning is logged at start).
    pub token: crate::ui::auth::AdminToken,
    /// The dashboard at `/ui` (its JSON behind the same token).
    pub ui: crate::ui::Dashboard,
}

/// The admin routes, usable without a socket in tests.
pub fn app(state: AdminState) -> Router {
    let ui = crate::ui::router(state.ui.clone());
    Router::new()
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/admin/routes", get(routes))
        .route("/admin/reload", post(reload))
        .route("/admin/config-errors", get(config_errors))
        .route("/admin/shadow", get(shadow_reports))
        .route("/admin/shadow/{route}", get(shadow_report))
        .route("/admin/rollouts", get(rollouts))
        .route("/admin/rollouts/{route}", get(rollout))
        .route("/admin/rollouts/{route}/{action}", post(rollout_action))
        .route("/admin/history", get(history))
        .with_state(state)
        .merge(ui)
}

fn authorized(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    // one constant-time check for the admin API and the dashboard's JSON
    if state.token.accepts(headers) {
        return Ok(());
    }
    Err(Box::new(
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            Json(json!({"error": {"code": "unauthorized", "message": "a valid bearer token is required"}})),
        )
            .into_response(),
    ))
}

async fn ready(State(s): State<AdminState>) -> Response {
    let listen = s.store.current().settings.listen;
    let up = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(listen))
        .await
        .is_ok_and(|r| r.is_ok());
    if up {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "proxy listener not accepting yet\n").into_response()
    }
}

async fn metrics_text(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    ([("content-type", "text/plain; version=0.0.4")], metrics().render()).into_response()
}

async fn routes(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let table = s.store.current();
    let mut body = table.to_json();
    body["last_reload_error"] = json!(s.store.last_error().is_some());
    Json(body).into_response()
}

async fn reload(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.reload("admin")).await {
        Ok(Ok(version)) => Json(json!({"reloaded": true, "version": version})).into_response(),
        Ok(Err(err)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "reloaded": false,
                "version": s.store.current().version,
                "errors": err.issues.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn config_errors(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    Json(json!({"serving_version": s.store.current().version, "last_error": s.store.last_error()})).into_response()
}

async fn shadow_reports(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    Json(s.shadow.reports_json(&s.store.current(), None)).into_response()
}

async fn shadow_report(
    State(s): State<AdminState>,
    axum::extract::Path(route): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    match s.shadow.reports_json(&s.store.current(), Some(&route)) {
        Some(v) => Json(v).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": format!("no shadow report for route {route:?}")}})),
        )
            .into_response(),
    }
}

fn not_found(message: String) -> Response {
    (StatusCode::NOT_FOUND, Json(strangler_wire::ErrorBody::new("not_found", message).to_value())).into_response()
}

fn no_rollouts() -> Response {
    not_found("rollouts are not running in this gateway".into())
}

async fn rollouts(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    match &s.rollouts {
        Some(c) => Json(c.status(None)).into_response(),
        None => no_rollouts(),
    }
}

async fn rollout(
    State(s): State<AdminState>,
    axum::extract::Path(route): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    match s.rollouts.as_ref().map(|c| c.status(Some(&route))) {
        None => no_rollouts(),
        Some(serde_json::Value::Null) => not_found(format!("route {route:?} has no rollout")),
        Some(v) => Json(v).into_response(),
    }
}

async fn rollout_action(
    State(s): State<AdminState>,
    axum::extract::Path((route, action)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    // The token is a header, never a cookie, so another site cannot send it; refusing requests
    // a browser marks as cross-site is a second guard.
    if headers.get("sec-fetch-site").is_some_and(|v| v != "same-origin" && v != "none") {
        let msg = "cross-site requests cannot act on rollouts";
        return (StatusCode::FORBIDDEN, Json(strangler_wire::ErrorBody::new("forbidden", msg).to_value()))
            .into_response();
    }
    let Some(c) = s.rollouts.clone() else { return no_rollouts() };
    let Some(action) = Action::parse(&action) else {
        let msg = format!("unknown action {action:?}: use pause, resume, promote or abort");
        return (StatusCode::BAD_REQUEST, Json(strangler_wire::ErrorBody::new("bad_request", msg).to_value()))
            .into_response();
    };
    // one admin token, so one name for whoever holds it
    let who = headers
        .get("x-operator")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map_or_else(|| "admin".to_string(), |name| format!("admin ({name})"));
    match tokio::task::spawn_blocking(move || c.act(&route, action, &who)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => {
            (StatusCode::CONFLICT, Json(strangler_wire::ErrorBody::new("conflict", e.to_string()).to_value()))
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    route: Option<String>,
    limit: Option<usize>,
}

async fn history(
    State(s): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<HistoryQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let Some(c) = s.rollouts.clone() else { return no_rollouts() };
    let limit = q.limit.unwrap_or(200).min(10_000);
    let events = tokio::task::spawn_blocking(move || c.history(q.route.as_deref(), limit)).await.unwrap_or_default();
    Json(json!({ "events": events })).into_response()
}

/// Starts the admin thread: binds `addr` now (so a bad address fails at startup), then serves
/// until the process exits.
pub fn spawn(addr: SocketAddr, state: AdminState) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new().name("admin".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            state.ui.start();
            if let Err(e) = axum::serve(listener, app(state)).await {
                tracing::error!("admin server stopped: {e}");
            }
        });
    })?;
    ready_rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("admin thread died")))
}

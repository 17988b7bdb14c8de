//! The dashboard at `/ui` on the admin listener: a page and its assets embedded in the binary
//! ([`assets`]), and the token-protected JSON it polls (`/ui/api/*`, guarded by [`auth`]). The
//! data are what the gateway already has — the serving route table, the shadow reports, the
//! reload store — plus two background tasks on the admin runtime: the [`sampler`] that turns the
//! existing counters into bounded time series ([`series`]), and the [`sync`] poller that asks the
//! cdc-sync status endpoints. The proxy's request path does nothing for any of it but mark a
//! route active (a bit, set once per route between two sampler ticks).
//!
//! Endpoints (JSON, `Authorization: Bearer <admin token>`):
//! - `GET /ui/api/session` (open): whether a token is required and whether the one sent is good,
//!   so the page asks for it without a failed request.
//! - `GET /ui/api/routes`: every route in routes.toml order with its last minute per side.
//! - `GET /ui/api/routes/{name}`: one route with its charts and shadow report (samples too).
//! - `GET /ui/api/sync`: the last answer of each cdc-sync status endpoint.
//! - `GET /ui/api/config`: the serving version and the last rejected reload.

pub mod assets;
pub mod auth;
pub mod sampler;
pub mod series;
pub mod sync;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::reload::ConfigStore;
use crate::rollout::controller::Controller;
use crate::shadow::report::Count;
use crate::shadow::ShadowService;
use crate::table::RouteTable;
use sampler::{now_ms, TrafficHistory, TICK};
use sync::SyncPoller;
pub use sync::SyncSource;

/// What the dashboard reads and keeps. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<ConfigStore>,
    shadow: Arc<ShadowService>,
    token: auth::AdminToken,
    history: TrafficHistory,
    sync: SyncPoller,
    started: AtomicBool,
    /// The rollout controller: each route's step, next step and last analysis.
    rollouts: Option<Arc<Controller>>,
}

impl Dashboard {
    /// `token`: the admin token (`None`: the JSON is open, like `/admin/*`); `sync`: the cdc-sync
    /// status endpoints to poll.
    pub fn new(
        store: Arc<ConfigStore>,
        shadow: Arc<ShadowService>,
        token: auth::AdminToken,
        sync: Vec<SyncSource>,
        rollouts: Option<Arc<Controller>>,
    ) -> Self {
        let inner = Inner {
            store,
            shadow,
            token,
            history: TrafficHistory::default(),
            sync: SyncPoller::new(sync),
            started: AtomicBool::new(false),
            rollouts,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Starts the sampler and the sync poller on the current tokio runtime (the admin one).
    /// Once: later calls do nothing.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("dashboard: no runtime to sample on; its charts stay empty");
            return;
        };
        let inner = self.inner.clone();
        rt.spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                inner.history.tick(&inner.store.current(), &inner.shadow, now_ms());
            }
        });
        if self.inner.sync.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        rt.spawn(async move {
            let client = match reqwest::Client::builder().no_proxy().build() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("dashboard: no HTTP client for the sync status endpoints: {e}");
                    return;
                }
            };
            let mut every = tokio::time::interval(sync::POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                inner.sync.poll(&client).await;
            }
        });
    }
}

/// `/ui` (the page, open) and `/ui/api/*` (its data, behind the admin token).
pub fn router(dashboard: Dashboard) -> Router {
    let token = dashboard.inner.token.clone();
    let token_for_session = token.clone();
    let api = Router::new()
        .route("/ui/api/routes", get(routes))
        .route("/ui/api/routes/{name}", get(route))
        .route("/ui/api/sync", get(sync_status))
        .route("/ui/api/config", get(config))
        .route_layer(axum::middleware::from_fn_with_state(token, auth::require_token))
        .with_state(dashboard);
    let session = Router::new().route("/ui/api/session", get(session)).with_state(token_for_session);
    Router::new()
        .route("/ui", get(assets::index))
        .route("/ui/", get(assets::index))
        .route("/ui/assets/{name}", get(assets::asset))
        .merge(session)
        .merge(api)
}

async fn session(State(token): State<auth::AdminToken>, headers: axum::http::HeaderMap) -> Response {
    no_store(json!({
        "token_required": token.required(),
        "token_valid": token.accepts(&headers),
    }))
}

fn no_store(v: Value) -> Response {
    ([("cache-control", "no-store")], Json(v)).into_response()
}

/// One route as the list and its page show it: the serving config, the last minute, the shadow
/// report's totals. `rollout` is filled in by the rollout controller (not yet wired).
fn route_row(d: &Inner, table: &RouteTable, config: &Value, i: usize, now: u64) -> Value {
    let r = &table.routes[i];
    let mut row = config["routes"][i].clone();
    row["minute"] = d.history.summary(&r.name, now);
    row["shadow"] = match d.shadow.report(&r.name) {
        Some(rep) => {
            let (compared, matched) = (rep.get(Count::Compared), rep.get(Count::Matched));
            json!({
                "active": r.shadow.is_some(),
                "compared": compared,
                "mismatched": rep.get(Count::Mismatched),
                "match_rate": (compared > 0).then(|| (matched as f64 / compared as f64 * 10_000.0).round() / 10_000.0),
            })
        }
        None if r.shadow.is_some() => json!({"active": true, "compared": 0, "mismatched": 0, "match_rate": null}),
        None => Value::Null,
    };
    row["rollout"] = d.rollouts.as_ref().map_or(Value::Null, |c| c.status(Some(&r.name)));
    row
}

async fn routes(State(d): State<Dashboard>) -> Response {
    let d = &d.inner;
    let table = d.store.current();
    let config = table.to_json();
    let now = now_ms();
    let rows: Vec<Value> = (0..table.routes.len()).map(|i| route_row(d, &table, &config, i, now)).collect();
    no_store(json!({
        "version": table.version,
        "loaded_at_unix": config["loaded_at_unix"],
        "now_ms": now,
        "tick_ms": TICK.as_millis() as u64,
        "last_reload_failed": d.store.last_error().is_some(),
        "routes": rows,
    }))
}

async fn route(State(d): State<Dashboard>, Path(name): Path<String>) -> Response {
    let d = &d.inner;
    let table = d.store.current();
    let Some(i) = table.route_index(&name) else {
        let msg = format!("no route {name:?} in the serving config");
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": msg}}))).into_response();
    };
    let config = table.to_json();
    let now = now_ms();
    no_store(json!({
        "version": table.version,
        "now_ms": now,
        "route": route_row(d, &table, &config, i, now),
        "charts": d.history.charts(&name),
        "shadow": d.shadow.reports_json(&table, Some(&name)).map(with_value_text),
    }))
}

/// Adds `legacy_text`/`shadow_text` to each JSON difference of a report's samples: the values as
/// serde_json writes them, so the page shows a 64-bit id exactly (JavaScript numbers cannot).
fn with_value_text(mut report: Value) -> Value {
    let samples = report.get_mut("samples").and_then(Value::as_array_mut).map(|a| a.iter_mut()).into_iter().flatten();
    for sample in samples {
        for list in ["differences", "noise"] {
            for d in sample.get_mut(list).and_then(Value::as_array_mut).map(|a| a.iter_mut()).into_iter().flatten() {
                if d["kind"] == "json" {
                    for side in ["legacy", "shadow"] {
                        let text = if d[side].is_null() { "(absent)".to_string() } else { d[side].to_string() };
                        d[format!("{side}_text")] = Value::String(text);
                    }
                }
            }
        }
    }
    report
}

async fn sync_status(State(d): State<Dashboard>) -> Response {
    let mut v = d.inner.sync.to_json();
    v["now_ms"] = json!(now_ms());
    no_store(v)
}

async fn config(State(d): State<Dashboard>) -> Response {
    let d = &d.inner;
    let table = d.store.current();
    let config = table.to_json();
    no_store(json!({
        "version": table.version,
        "loaded_at_unix": config["loaded_at_unix"],
        "now_ms": now_ms(),
        "path": d.store.path().display().to_string(),
        "listen": config["listen"],
        "admin_listen": config["admin_listen"],
        "routes": table.routes.len(),
        "upstreams": config["upstreams"],
        "last_error": d.store.last_error(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_differences_carry_their_values_as_text() {
        let report = json!({"samples": [{"differences": [
            {"kind": "json", "pointer": "/id", "legacy": 18446744073709551615u64, "shadow": null},
            {"kind": "status", "legacy": 200, "shadow": 500},
        ]}]});
        let v = with_value_text(report);
        let d = &v["samples"][0]["differences"];
        assert_eq!(d[0]["legacy_text"], "18446744073709551615");
        assert_eq!(d[0]["shadow_text"], "(absent)");
        assert!(d[1].get("legacy_text").is_none());
        assert_eq!(with_value_text(json!({"route": "r"})), json!({"route": "r"}), "no samples, nothing added");
    }
}

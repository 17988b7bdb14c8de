//! strangler-gateway: a Pingora proxy in front of a legacy monolith, driven by a hot-reloaded
//! `routes.toml`. See the crate README for the file format and the admin API.

//!
//! Modules, in the order a request meets them: [`edge`] (the client connection's checks
//! before Pingora reads a request: per-client cap, head deadline) hands it to [`proxy`] (the
//! Pingora callbacks), which asks the serving [`table`] (held by [`reload`], compiled by
//! [`config`]) which [`router`] route takes the request and which [`stage::Side`] answers; [`shadow`] mirrors and compares; [`metrics`]
//! and [`telemetry`] observe; [`tls`] picks certificates for the HTTPS listener; [`admin`] (with
//! the [`ui`] dashboard), [`rollout`] and [`background`] run beside the proxy.

pub mod access_log;
pub mod admin;
pub mod admin_client;
pub mod admission;
pub mod auth;
pub mod background;
pub mod client_ip;
pub mod columns;
pub mod config;
pub mod cors;
pub mod edge;
pub mod forwarding;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod request_buffer;
pub mod respond;
pub mod rewrite;
pub mod rollout;
pub mod router;
pub mod sampler;
pub mod shadow;
pub mod stage;
pub mod table;
pub mod table_view;
pub mod telemetry;
pub mod tls;
pub mod ui;
pub mod validate;

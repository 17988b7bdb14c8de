//! Shadow traffic: mirror a request to the extracted service, compare the two answers, report.
//!
//! In the order a mirrored request flows through them:
//! - [`policy`]: the rules (a route's compiled `[routes.shadow]`, the runtime's settings). Pure.
//! - [`service`]: the [`ShadowService`] the proxy owns: binds a route table's rules to per-route
//!   queues, samplers and reports; answers the admin API.
//! - [`capture`]: the proxy-side hooks (hot path): choose, capture chunk references, enqueue.
//! - [`body`]: a body kept by reference up to a limit, hashed beyond it.
//! - [`lane`]: one route's runtime state and its bounded queue; the job a request becomes.
//! - [`threads`]: the shadow threads (a current-thread tokio runtime each); [`dispatch`]: a
//!   lane's dispatcher on one of them (takes jobs, runs them with bounded concurrency, deadlines).
//! - [`worker`]: what runs there: mirror, noise replay, compare; [`client`]: its HTTP
//!   clients (plain, h2c, TLS with ALPN, as the upstream is configured); [`h1`]: the inline
//!   HTTP/1.1 client of plain endpoints.
//! - [`compare`]: the pure comparison engine (also used by the contract tests).
//! - [`report`]: per-route reports (admin API, CLI table); [`store`] persists them;
//!   [`metrics`] exports their counters; [`cli`] fetches them for `shadow report`.

pub mod body;
pub mod capture;
pub mod cli;
pub mod client;
pub mod compare;
pub mod dispatch;
pub mod h1;
pub mod lane;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod service;
pub mod store;
pub mod threads;
pub mod worker;

pub use policy::{ShadowSettings, ShadowSpec};
pub use service::ShadowService;

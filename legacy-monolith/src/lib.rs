//! The legacy e-commerce monolith: one PostgreSQL schema, many tables, join-heavy JSON handlers.
//!
//! It is the thing strangler retires route by route, so it is written to be realistic rather than
//! pretty: historical column names, responses with request ids and generation timestamps, and
//! transactional writes spanning half the schema.
//!
//! Entry points for callers (the binary, tests, the local stack runner):
//! - [`db::create_pool`] / [`db::connect`] open the database,
//! - [`migrate::run`] brings the schema up to date (idempotent, safe to run concurrently),
//! - [`AppState::new`] + [`app`] build the axum [`axum::Router`],
//! - [`seed::run`] fills an empty database with deterministic sample data.

#![forbid(unsafe_code)]

pub mod api;
pub mod db;
pub mod error;
pub mod migrate;
pub mod seed;

pub use api::{app, AppState};
pub use error::ApiError;

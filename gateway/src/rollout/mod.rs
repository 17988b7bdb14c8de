//! Progressive rollouts: a route with a `[routes.rollout]` moves through its steps (shadow,
//! canary weights, extracted) on evidence, and steps back on its own when the evidence turns bad.
//!
//! - [`plan`]: the compiled `[routes.rollout]` (pure; part of the route table).
//! - [`state`]: where each rollout stands, the overlay the table is compiled with, the audit trail
//!   events.
//! - [`store`]: where state and history are kept ([`store::RolloutStore`]: a file, or memory).
//! - [`pg_store`]: the store several replicas share: PostgreSQL, one leader by advisory lock,
//!   followers told by LISTEN/NOTIFY.
//! - [`replicas`]: every replica's counters, summed for the leader's gates.
//! - [`gates`]: measuring a route over a window and judging each gate.
//! - [`controller`]: the loop that analyses, promotes, rolls back, and applies operators' actions.
//!
//! routes.toml stays the declared plan and is never rewritten: the effective stage of a route is
//! its plan narrowed by its rollout's position.

pub mod cli;
pub mod controller;
pub mod gates;
pub mod pg_store;
pub mod plan;
pub mod replicas;
pub mod state;
pub mod store;

//! Progressive rollouts: a route with a `[routes.rollout]` moves through its steps (shadow,
//! canary weights, extracted) on evidence, and steps back on its own when the evidence turns bad.
//!
//! - [`plan`]: the compiled `[routes.rollout]` (pure; part of the route table).
//! - [`state`]: where each rollout stands, the overlay the table is compiled with, the audit trail
//!   events.
//! - [`store`]: where state and history are kept ([`store::RolloutStore`]: a file, or memory).
//! - [`gates`]: measuring a route over a window and judging each gate.
//! - [`controller`]: the loop that analyses, promotes, rolls back, and applies operators' actions.
//!
//! routes.toml stays the declared plan and is never rewritten: the effective stage of a route is
//! its plan narrowed by its rollout's position.

pub mod cli;
pub mod controller;
pub mod gates;
pub mod plan;
pub mod state;
pub mod store;

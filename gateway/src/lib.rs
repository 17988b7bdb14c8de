//! strangler-gateway: a Pingora proxy in front of a legacy monolith, driven by a hot-reloaded
//! `routes.toml`. See the crate README for the file format and the admin API.

pub mod admin;
pub mod columns;
pub mod config;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod shadow;
pub mod table;
pub mod telemetry;

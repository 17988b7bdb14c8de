//! cdc-sync: logical-replication CDC that keeps the legacy monolith's database and an extracted
//! service's database in step, forward, backward or both ways, and proves they agree.
//!
//! Modules mirror the design, in the order a change flows: [`config`] (sync.toml), [`plan`] (what
//! each direction reads, writes and names), [`source`] (publication, slot, snapshot, the
//! [`source::ChangeStream`]), [`mapping`] (column mapping, pure), [`apply`] (the engine and the
//! [`apply::Sink`]s), [`checkpoint`] (progress in the target); around them [`runner`] (`run`),
//! [`retry`] and [`error`] (what happens after an error), [`status`], [`verify`], [`lock`],
//! [`reverse_snapshot`] (the service's rows carried to legacy when reverse sync starts),
//! [`clock`] (the servers' clock skew), [`slot_watch`] (lag and slot safety), [`schema`] (schema
//! changes seen in the stream), [`reload`] (sync.toml re-read on SIGHUP), [`commands`] (the
//! one-shot commands), [`deferred_indexes`] (indexes built after a table's initial copy),
//! [`catalog`], [`connect`], [`model`].
#![forbid(unsafe_code)]

pub mod apply;
pub mod catalog;
pub mod checkpoint;
pub mod clock;
pub mod commands;
pub mod config;
pub mod connect;
pub mod deferred_indexes;
pub mod error;
pub mod lock;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod reload;
pub mod retry;
pub mod reverse_snapshot;
pub mod runner;
pub mod schema;
pub mod slot_watch;
pub mod source;
pub mod status;
pub mod verify;

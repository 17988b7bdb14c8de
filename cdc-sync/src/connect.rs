//! Connecting to PostgreSQL: plain sessions (apply, checkpoints, snapshot copies, the lock,
//! verify, status, admin SQL) through [`connect`], and the TLS every session uses, the walsender's
//! included: [`conninfo`] reads a connection string's TLS parameters, [`tls`] builds the rustls
//! config and speaks the SSLRequest. Used by `source` and `apply` alike.
//!
//! All of it lives in the `strangler-pg-connect` crate, which the gateway's rollout store,
//! legacy-monolith and the extracted services' kit use too; this module keeps cdc-sync's paths.

pub use strangler_pg_connect::{check_conninfo, connect, connect_raw, conninfo, tls, PgConnection};

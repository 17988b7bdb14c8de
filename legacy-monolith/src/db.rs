//! Database connections: a pool for the HTTP handlers and single clients for migrations and seeding.
//! The connection string's `sslmode` (default `prefer`; up to `verify-full`), `sslrootcert`,
//! `sslcert` and `sslkey` are honoured (`strangler-pg-connect`, rustls), as in every strangler
//! component.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use strangler_pg_connect::{ConnInfoError, ConnectError, MakePgTls};
use thiserror::Error;
use tokio_postgres::Client;

/// Why the database could not be reached or configured.
#[derive(Debug, Error)]
pub enum DbError {
    /// The connection string is neither a libpq key/value string nor a `postgres://` URL, or a
    /// TLS parameter is wrong. Never quotes the string.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] ConnInfoError),
    #[error("could not build the connection pool: {0}")]
    Pool(String),
    /// Names host, port, database and user and, when waiting will not fix it, what to change.
    #[error(transparent)]
    Connect(Box<ConnectError>),
}

impl DbError {
    /// Whether waiting will not fix it: a bad URL, or a refused certificate, login or TLS.
    pub fn is_permanent(&self) -> bool {
        match self {
            DbError::Connect(e) => e.is_permanent(),
            DbError::InvalidUrl(_) => true,
            DbError::Pool(_) => false,
        }
    }
}

/// Parses a connection string. Accepts both `host=… dbname=…` and `postgres://…` forms; the
/// TLS hook honours its `sslmode` and certificate files.
pub fn parse_config(database_url: &str) -> Result<(tokio_postgres::Config, MakePgTls), DbError> {
    let (mut cfg, tls) = strangler_pg_connect::prepare(database_url).map_err(DbError::InvalidUrl)?;
    if cfg.get_application_name().is_none() {
        cfg.application_name("legacy-monolith");
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    Ok((cfg, tls))
}

/// A connection pool of at most `max_size` connections. Connections are opened lazily, so this
/// succeeds even while the database is down (`/health/ready` reports it).
pub fn create_pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let (cfg, tls) = parse_config(database_url)?;
    let manager = Manager::from_config(cfg, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// One dedicated connection (its driver task is spawned on the current runtime).
pub async fn connect(database_url: &str) -> Result<Client, DbError> {
    let (cfg, tls) = parse_config(database_url)?;
    let (client, connection) = cfg.connect(tls).await.map_err(|e| {
        DbError::Connect(Box::new(ConnectError::new(
            database_url,
            "--database-url / DATABASE_URL",
            "then start legacy-monolith again",
            e,
        )))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed with an error");
        }
    });
    Ok(client)
}

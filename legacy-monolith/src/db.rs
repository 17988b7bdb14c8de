//! Database connections: a pool for the HTTP handlers and single clients for migrations and seeding.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use thiserror::Error;
use tokio_postgres::{Client, NoTls};

/// Why the database could not be reached or configured.
#[derive(Debug, Error)]
pub enum DbError {
    /// The connection string is neither a libpq key/value string nor a `postgres://` URL.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("could not build the connection pool: {0}")]
    Pool(String),
    #[error("could not connect to the database: {0}")]
    Connect(#[source] tokio_postgres::Error),
}

/// Parses a connection string. Accepts both `host=… dbname=…` and `postgres://…` forms.
pub fn parse_config(database_url: &str) -> Result<tokio_postgres::Config, DbError> {
    let mut cfg: tokio_postgres::Config = database_url.parse().map_err(DbError::InvalidUrl)?;
    if cfg.get_application_name().is_none() {
        cfg.application_name("legacy-monolith");
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    Ok(cfg)
}

/// A connection pool of at most `max_size` connections. Connections are opened lazily, so this
/// succeeds even while the database is down (`/health/ready` reports it).
pub fn create_pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let cfg = parse_config(database_url)?;
    let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
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
    let cfg = parse_config(database_url)?;
    let (client, connection) = cfg.connect(NoTls).await.map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed with an error");
        }
    });
    Ok(client)
}

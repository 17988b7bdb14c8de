//! Embedded schema migrations, applied in order and recorded in `schema_migrations`.
//!
//! All pending migrations run in ONE transaction that first takes a transaction-scoped advisory
//! lock, so two instances starting together serialise: the second waits, then finds nothing to do.
//! Each applied migration's checksum is stored; an applied migration whose embedded SQL has since
//! changed is reported as an error instead of being silently skipped.

use thiserror::Error;
use tokio_postgres::Client;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration of the schema, in the order they apply.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "core_schema", sql: include_str!("../migrations/0001_core_schema.sql") },
    Migration { version: 2, name: "inventory_audit", sql: include_str!("../migrations/0002_inventory_audit.sql") },
];

/// Advisory lock key ("legacy-mono" in spirit); only needs to be stable and unlikely to collide.
const LOCK_KEY: i64 = 0x6c65_6761_6379_6d6f;

/// Why migrating failed.
#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("database error while migrating: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("migration {version} ({name}) failed: {source}")]
    Apply {
        version: i64,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "migration {version} ({name}) was applied with checksum {applied} but the embedded SQL \
         now has checksum {embedded}; migrations must never be edited after release"
    )]
    ChecksumMismatch { version: i64, name: &'static str, applied: String, embedded: String },
    #[error("the database has migration {0} applied, which this build does not know (newer build?)")]
    UnknownVersion(i64),
}

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order.
    pub applied: Vec<i64>,
    /// Versions that were already present.
    pub already_applied: Vec<i64>,
}

/// FNV-1a over the SQL text, as hex: stable across builds and platforms.
pub fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Applies every pending migration. Idempotent; safe to call from several processes at once.
pub async fn run(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    let tx = client.transaction().await?;
    // "already exists, skipping" notices are expected on every start after the first.
    tx.batch_execute("SET LOCAL client_min_messages = warning").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     BIGINT PRIMARY KEY,
             name        TEXT NOT NULL,
             checksum    TEXT NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let rows = tx.query("SELECT version, checksum FROM schema_migrations ORDER BY version", &[]).await?;
    let mut report = MigrationReport::default();
    let applied: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (version, sum) in &applied {
        let Some(m) = MIGRATIONS.iter().find(|m| m.version == *version) else {
            return Err(MigrateError::UnknownVersion(*version));
        };
        let embedded = checksum(m.sql);
        if &embedded != sum {
            return Err(MigrateError::ChecksumMismatch {
                version: m.version,
                name: m.name,
                applied: sum.clone(),
                embedded,
            });
        }
        report.already_applied.push(*version);
    }
    for m in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(|source| MigrateError::Apply {
            version: m.version,
            name: m.name,
            source,
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        report.applied.push(m.version);
    }
    tx.commit().await?;
    Ok(report)
}

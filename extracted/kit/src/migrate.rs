//! Schema migrations embedded in each service, applied in order on start.

use tokio_postgres::Client;

/// One migration: applied once, in `version` order, inside its own transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing version number.
    pub version: i64,
    /// Short description, recorded with the version.
    pub name: &'static str,
    /// SQL to run (may hold several statements).
    pub sql: &'static str,
}

/// Applies the migrations not yet recorded in `kit_schema_migrations`, holding a session
/// advisory lock so that two instances starting together do not race. Returns how many ran.
pub async fn migrate(client: &mut Client, service: &str, migrations: &[Migration]) -> anyhow::Result<usize> {
    if migrations.windows(2).any(|w| w[0].version >= w[1].version) {
        anyhow::bail!("{service}: migration versions must be strictly increasing");
    }
    let lock_key = format!("strangler-kit-migrate:{service}");
    client.execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key]).await?;
    let result = apply(client, migrations).await;
    client.execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key]).await?;
    result
}

async fn apply(client: &mut Client, migrations: &[Migration]) -> anyhow::Result<usize> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS kit_schema_migrations (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i64> =
        client.query("SELECT version FROM kit_schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut n = 0;
    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| anyhow::anyhow!("migration {} ({}) failed: {e}", m.version, m.name))?;
        tx.execute("INSERT INTO kit_schema_migrations(version, name) VALUES ($1, $2)", &[&m.version, &m.name]).await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "migration applied");
        n += 1;
    }
    Ok(n)
}

//! Indexes built after a table's initial copy instead of maintained row by row during it, as
//! `pg_restore` does. Several COPY workers inserting into one btree at several key ranges at
//! once mostly wait on each other (measured here: four parallel COPYs into a table with its
//! primary key took as long as one); a sorted build after the load is a fraction of that.
//!
//! Only when it is safe, per index, at the start of a fresh copy of a table (inside the
//! transaction that truncates it, so the table is empty and its contents are ours until the
//! copy is done):
//! - the table is a plain table we own (`pg_has_role(owner, 'USAGE')`), in no publication, and
//!   not one of a bidirectional pipeline's tables (the caller checks that);
//! - the index is valid, not the replica identity, not clustered, not an exclusion constraint,
//!   not a partition's child index, has no comment, and no other constraint (a foreign key of
//!   another table) depends on it;
//! - a unique index only when it is on exactly the mapped key, without expressions or a
//!   predicate, and the source has a unique index on the key (so the rows copied cannot
//!   violate it); other unique indexes stay, so a violation still stops the copy at the row.
//!
//! Each deferred index is recorded in `cdc_sync.deferred_index` (its `CREATE INDEX` or
//! `ALTER TABLE ... ADD CONSTRAINT` statement) and dropped in that same transaction. When every
//! chunk of the table is in, the indexes are created again and their records removed in one
//! transaction, before the table is marked done. After a crash in between, the next `run`
//! rebuilds every recorded index first (before the mappings are checked: the upserts need the
//! key's index), and so do `reset` and `drop`. Names, definitions, constraint names and
//! options are kept (`pg_get_indexdef`, `pg_get_constraintdef`); the rebuilt index is a new
//! object (new OID).

use tokio_postgres::Client;

use crate::mapping::{DirectedTable, OutputValue};
use crate::model::quote_qualified;

/// DDL of the record table, idempotent (run with the state schema).
pub const SCHEMA_SQL: &str = "\
CREATE TABLE IF NOT EXISTS cdc_sync.deferred_index (
    pipeline    text NOT NULL,
    table_name  text NOT NULL,
    index_name  text NOT NULL,
    create_sql  text NOT NULL,
    deferred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, table_name, index_name)
);";

/// Rebuilding a deferred index failed: the table is without it until the cause is fixed.
#[derive(Debug, thiserror::Error)]
#[error(
    "rebuilding index {index} of {table} after its initial copy failed; it stays recorded in \
     cdc_sync.deferred_index and is rebuilt at the next start (or run yourself: {create_sql})"
)]
pub struct DeferredIndexError {
    /// Target table.
    pub table: String,
    /// The index.
    pub index: String,
    /// The statement that failed.
    pub create_sql: String,
    /// The failure.
    #[source]
    pub source: tokio_postgres::Error,
}

/// The indexes of a table that can be deferred: name, statement to create it, statement to
/// drop it. `$1` table, `$2` may the key's unique index go, `$3` the target key columns, sorted.
const DEFERRABLE_SQL: &str = "\
SELECT format('%I.%I', n.nspname, ic.relname),
       CASE WHEN c.oid IS NOT NULL
            THEN format('ALTER TABLE %s ADD CONSTRAINT %I %s', i.indrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
            ELSE pg_get_indexdef(i.indexrelid) END,
       CASE WHEN c.oid IS NOT NULL
            THEN format('ALTER TABLE %s DROP CONSTRAINT %I', i.indrelid::regclass, c.conname)
            ELSE format('DROP INDEX %I.%I', n.nspname, ic.relname) END
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = tc.relnamespace
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u')
WHERE i.indrelid = $1::text::regclass
  AND tc.relkind = 'r' AND NOT tc.relispartition
  AND pg_has_role(tc.relowner, 'USAGE')
  AND NOT EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.schemaname = tn.nspname AND p.tablename = tc.relname)
  AND i.indisvalid AND i.indisready AND i.indislive
  AND NOT i.indisreplident AND NOT i.indisclustered AND NOT i.indisexclusion
  AND NOT EXISTS (SELECT 1 FROM pg_constraint o WHERE o.conindid = i.indexrelid AND o.oid IS DISTINCT FROM c.oid)
  AND NOT EXISTS (SELECT 1 FROM pg_description d WHERE d.objoid = i.indexrelid OR d.objoid = c.oid)
  AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
  AND (NOT i.indisunique OR ($2 AND i.indpred IS NULL AND i.indexprs IS NULL
       AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text COLLATE \"C\") FROM pg_attribute a
            WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = $3::text[]))
ORDER BY 1";

/// Does the source have a unique index on exactly the key of `t` (so copied rows are unique
/// by key), and are the target's key columns plain copies of it? Run at the source.
pub async fn key_unique_at_source(src: &Client, t: &DirectedTable) -> Result<bool, tokio_postgres::Error> {
    if !t.key_outputs.iter().all(|o| matches!(t.outputs[*o].value, OutputValue::Input(i) if i < t.key_len)) {
        return Ok(false);
    }
    let mut key: Vec<String> = t.inputs[..t.key_len].to_vec();
    key.sort();
    let r = src
        .query_opt(
            "SELECT 1 FROM pg_index i WHERE i.indrelid = $1::text::regclass AND i.indisunique AND i.indisvalid \
               AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text COLLATE \"C\") FROM pg_attribute a \
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = $2::text[] LIMIT 1",
            &[&quote_qualified(&t.from_table), &key],
        )
        .await?;
    Ok(r.is_some())
}

/// Inside the transaction that has just truncated `t`'s target table for a fresh copy: record
/// and drop the indexes that can be built after the copy. Returns their names.
pub async fn defer(
    tgt: &Client,
    pipeline: &str,
    t: &DirectedTable,
    key_unique: bool,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let mut key: Vec<String> = t.key_outputs.iter().map(|o| t.outputs[*o].column.clone()).collect();
    key.sort();
    let rows = tgt.query(DEFERRABLE_SQL, &[&quote_qualified(&t.to_table), &key_unique, &key]).await?;
    let mut names = Vec::with_capacity(rows.len());
    for r in rows {
        let (name, create, drop): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        tgt.execute(
            "INSERT INTO cdc_sync.deferred_index (pipeline, table_name, index_name, create_sql) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pipeline, table_name, index_name) DO UPDATE SET create_sql = EXCLUDED.create_sql",
            &[&pipeline, &t.to_table, &name, &create],
        )
        .await?;
        tgt.batch_execute(&drop).await?;
        names.push(name);
    }
    Ok(names)
}

/// Build the recorded indexes of `pipeline`'s `table` (every table when `None`; every
/// pipeline's when `pipeline` is `None` too) again and remove their records, one transaction
/// per table. Returns how many were built. Nothing to do (and no error) when the record table
/// does not exist.
///
/// `parallel`: how many parallel workers each build may ask for (`max_parallel_maintenance_workers`
/// for the transaction), when that is more than the server's setting; `None` keeps the server's.
/// PostgreSQL still caps it by the table's size and `max_parallel_workers`, and builds
/// serially when no worker is free.
pub async fn rebuild(
    tgt: &Client,
    pipeline: Option<&str>,
    table: Option<&str>,
    parallel: Option<usize>,
) -> Result<usize, DeferredIndexError> {
    let fail = |table: &str, index: &str, sql: &str| {
        let (table, index, create_sql) = (table.to_string(), index.to_string(), sql.to_string());
        move |source| DeferredIndexError { table, index, create_sql, source }
    };
    let exists = tgt
        .query_one("SELECT to_regclass('cdc_sync.deferred_index') IS NOT NULL", &[])
        .await
        .map_err(fail("cdc_sync.deferred_index", "-", "-"))?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let rows = tgt
        .query(
            "SELECT pipeline, table_name, index_name, create_sql FROM cdc_sync.deferred_index \
             WHERE ($1::text IS NULL OR pipeline = $1) AND ($2::text IS NULL OR table_name = $2) \
             ORDER BY pipeline, table_name, index_name",
            &[&pipeline, &table],
        )
        .await
        .map_err(fail(table.unwrap_or("-"), "-", "-"))?;
    let mut built = 0;
    let mut i = 0;
    while i < rows.len() {
        let (p, t): (String, String) = (rows[i].get(0), rows[i].get(1));
        let same: Vec<&tokio_postgres::Row> =
            rows[i..].iter().take_while(|r| r.get::<_, String>(0) == p && r.get::<_, String>(1) == t).collect();
        i += same.len();
        // a sorted build: give it memory for the sort (the session's own setting, this
        // transaction only; a parallel build shares it among its participants, each needing
        // 32MB)
        tgt.batch_execute("BEGIN; SET LOCAL maintenance_work_mem = '256MB'").await.map_err(fail(&t, "-", "BEGIN"))?;
        let workers = match parallel {
            Some(n) => tgt
                .query_one(
                    "SELECT set_config('max_parallel_maintenance_workers', \
                     GREATEST($1::int, current_setting('max_parallel_maintenance_workers')::int)::text, true)::int",
                    &[&(n.min(64) as i32)],
                )
                .await
                .map(|r| r.get::<_, i32>(0)),
            None => tgt
                .query_one("SELECT current_setting('max_parallel_maintenance_workers')::int", &[])
                .await
                .map(|r| r.get::<_, i32>(0)),
        };
        let workers = match workers {
            Ok(w) => w,
            Err(e) => {
                let _ = tgt.batch_execute("ROLLBACK").await;
                return Err(fail(&t, "-", "SET max_parallel_maintenance_workers")(e));
            }
        };
        for r in &same {
            let (index, sql): (String, String) = (r.get(2), r.get(3));
            let started = std::time::Instant::now();
            if let Err(e) = tgt.batch_execute(&sql).await {
                let _ = tgt.batch_execute("ROLLBACK").await;
                return Err(fail(&t, &index, &sql)(e));
            }
            tracing::info!(table = %t, index = %index, seconds = started.elapsed().as_secs_f64(), parallel_workers_allowed = workers,
                "snapshot: index built after the copy");
        }
        let done =
            tgt.execute("DELETE FROM cdc_sync.deferred_index WHERE pipeline = $1 AND table_name = $2", &[&p, &t]).await;
        let done = match done {
            Ok(_) => tgt.batch_execute("COMMIT").await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            let _ = tgt.batch_execute("ROLLBACK").await;
            return Err(fail(&t, "-", "COMMIT")(e));
        }
        built += same.len();
    }
    Ok(built)
}

//! Progress kept in the written-side database: the last applied commit LSN per pipeline
//! (written by the applier inside the same transaction as the rows) and the per-table
//! snapshot state.

use std::collections::HashMap;
use std::future::Future;

use tokio_postgres::Client;

use crate::model::Lsn;

/// DDL for the state schema, idempotent.
pub const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS cdc_sync;
CREATE TABLE IF NOT EXISTS cdc_sync.checkpoint (
    pipeline   text PRIMARY KEY,
    lsn        pg_lsn NOT NULL,
    commit_ts  timestamptz,
    txns       bigint NOT NULL DEFAULT 0,
    rows       bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS cdc_sync.snapshot_table (
    pipeline     text NOT NULL,
    table_name   text NOT NULL,
    state        text NOT NULL,
    snapshot_lsn pg_lsn,
    rows         bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, table_name)
);";

/// The statement the applier runs inside each apply transaction ($1 pipeline, $2 lsn text,
/// $3 commit time, $4 txns applied, $5 rows applied). Progress never moves backwards.
pub const ADVANCE_SQL: &str = "\
INSERT INTO cdc_sync.checkpoint AS c (pipeline, lsn, commit_ts, txns, rows, updated_at)
VALUES ($1, $2::text::pg_lsn, $3, $4, $5, now())
ON CONFLICT (pipeline) DO UPDATE SET lsn = GREATEST(c.lsn, EXCLUDED.lsn), commit_ts = EXCLUDED.commit_ts,
    txns = c.txns + EXCLUDED.txns, rows = c.rows + EXCLUDED.rows, updated_at = now()";

/// A pipeline's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// End LSN of the last applied source commit: resume streaming here.
    pub lsn: Lsn,
    /// Source transactions applied so far (all time).
    pub txns: i64,
}

/// Snapshot progress of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSnapshot {
    /// `pending`, `copying` or `done`.
    pub state: String,
    /// The snapshot's consistent point: stream changes of this table committed before it are
    /// already in the copy and must be skipped.
    pub snapshot_lsn: Option<Lsn>,
    /// Rows copied.
    pub rows: i64,
}

/// Where progress lives.
///
/// Contract:
/// - `load` returns what the last committed apply transaction wrote; progress never moves
///   backwards (a smaller LSN written later is ignored).
/// - The row data and the checkpoint are written in one transaction by the sink, so after a
///   crash the store never claims more than what is in the target; replay from the checkpoint
///   may repeat nothing that was committed.
/// - Snapshot state for a table reaches `done` only after all its rows are committed.
pub trait CheckpointStore: Send {
    /// Create the state schema if needed.
    fn prepare(&mut self) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;
    /// The pipeline's checkpoint, if it has one.
    fn load(
        &mut self,
        pipeline: &str,
    ) -> impl Future<Output = Result<Option<Checkpoint>, tokio_postgres::Error>> + Send;
    /// Record an initial checkpoint if the pipeline has none (slot just created).
    fn init(&mut self, pipeline: &str, lsn: Lsn) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;
    /// Per-table snapshot state of a pipeline.
    fn tables(
        &mut self,
        pipeline: &str,
    ) -> impl Future<Output = Result<HashMap<String, TableSnapshot>, tokio_postgres::Error>> + Send;
    /// Set one table's snapshot state.
    fn set_table(
        &mut self,
        pipeline: &str,
        table: &str,
        state: &TableSnapshot,
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;
    /// Forget everything about a pipeline (full re-snapshot).
    fn reset(&mut self, pipeline: &str) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;
}

/// [`CheckpointStore`] in the written-side database.
pub struct PgCheckpointStore {
    /// A plain (non-replication) connection.
    pub client: Client,
}

impl CheckpointStore for PgCheckpointStore {
    async fn prepare(&mut self) -> Result<(), tokio_postgres::Error> {
        self.client.batch_execute(SCHEMA_SQL).await
    }
    async fn load(&mut self, pipeline: &str) -> Result<Option<Checkpoint>, tokio_postgres::Error> {
        let r = self
            .client
            .query_opt("SELECT lsn::text, txns FROM cdc_sync.checkpoint WHERE pipeline = $1", &[&pipeline])
            .await?;
        Ok(r.and_then(|r| Some(Checkpoint { lsn: Lsn::parse(&r.get::<_, String>(0))?, txns: r.get(1) })))
    }
    async fn init(&mut self, pipeline: &str, lsn: Lsn) -> Result<(), tokio_postgres::Error> {
        self.client
            .execute(
                "INSERT INTO cdc_sync.checkpoint (pipeline, lsn) VALUES ($1, $2::text::pg_lsn) ON CONFLICT DO NOTHING",
                &[&pipeline, &lsn.to_string()],
            )
            .await
            .map(|_| ())
    }
    async fn tables(&mut self, pipeline: &str) -> Result<HashMap<String, TableSnapshot>, tokio_postgres::Error> {
        let rows = self
            .client
            .query(
                "SELECT table_name, state, snapshot_lsn::text, rows FROM cdc_sync.snapshot_table WHERE pipeline = $1",
                &[&pipeline],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    TableSnapshot {
                        state: r.get(1),
                        snapshot_lsn: r.get::<_, Option<String>>(2).and_then(|s| Lsn::parse(&s)),
                        rows: r.get(3),
                    },
                )
            })
            .collect())
    }
    async fn set_table(&mut self, pipeline: &str, table: &str, s: &TableSnapshot) -> Result<(), tokio_postgres::Error> {
        self.client
            .execute(
                "INSERT INTO cdc_sync.snapshot_table (pipeline, table_name, state, snapshot_lsn, rows, updated_at) \
                 VALUES ($1, $2, $3, $4::text::pg_lsn, $5, now()) ON CONFLICT (pipeline, table_name) DO UPDATE SET \
                 state = EXCLUDED.state, snapshot_lsn = EXCLUDED.snapshot_lsn, rows = EXCLUDED.rows, updated_at = now()",
                &[&pipeline, &table, &s.state, &s.snapshot_lsn.map(|l| l.to_string()), &s.rows],
            )
            .await
            .map(|_| ())
    }
    async fn reset(&mut self, pipeline: &str) -> Result<(), tokio_postgres::Error> {
        self.client.execute("DELETE FROM cdc_sync.checkpoint WHERE pipeline = $1", &[&pipeline]).await?;
        self.client.execute("DELETE FROM cdc_sync.snapshot_table WHERE pipeline = $1", &[&pipeline]).await.map(|_| ())
    }
}

/// In-memory [`CheckpointStore`] for unit tests.
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    /// Checkpoints by pipeline.
    pub checkpoints: HashMap<String, Checkpoint>,
    /// Snapshot state by (pipeline, table).
    pub snapshot: HashMap<(String, String), TableSnapshot>,
}

impl MemoryCheckpointStore {
    /// Advance (never backwards), as the sink does inside its transaction.
    pub fn advance(&mut self, pipeline: &str, lsn: Lsn, txns: i64) {
        let c = self.checkpoints.entry(pipeline.to_string()).or_insert(Checkpoint { lsn, txns: 0 });
        c.lsn = c.lsn.max(lsn);
        c.txns += txns;
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    async fn prepare(&mut self) -> Result<(), tokio_postgres::Error> {
        Ok(())
    }
    async fn load(&mut self, pipeline: &str) -> Result<Option<Checkpoint>, tokio_postgres::Error> {
        Ok(self.checkpoints.get(pipeline).copied())
    }
    async fn init(&mut self, pipeline: &str, lsn: Lsn) -> Result<(), tokio_postgres::Error> {
        self.checkpoints.entry(pipeline.to_string()).or_insert(Checkpoint { lsn, txns: 0 });
        Ok(())
    }
    async fn tables(&mut self, pipeline: &str) -> Result<HashMap<String, TableSnapshot>, tokio_postgres::Error> {
        Ok(self.snapshot.iter().filter(|((p, _), _)| p == pipeline).map(|((_, t), s)| (t.clone(), s.clone())).collect())
    }
    async fn set_table(&mut self, pipeline: &str, table: &str, s: &TableSnapshot) -> Result<(), tokio_postgres::Error> {
        self.snapshot.insert((pipeline.to_string(), table.to_string()), s.clone());
        Ok(())
    }
    async fn reset(&mut self, pipeline: &str) -> Result<(), tokio_postgres::Error> {
        self.checkpoints.remove(pipeline);
        self.snapshot.retain(|(p, _), _| p != pipeline);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_never_moves_backwards() {
        let mut s = MemoryCheckpointStore::default();
        s.init("p", Lsn(10)).await.unwrap();
        s.init("p", Lsn(5)).await.unwrap();
        assert_eq!(s.load("p").await.unwrap().unwrap().lsn, Lsn(10));
        s.advance("p", Lsn(20), 2);
        s.advance("p", Lsn(15), 1);
        let c = s.load("p").await.unwrap().unwrap();
        assert_eq!((c.lsn, c.txns), (Lsn(20), 3));
    }
}

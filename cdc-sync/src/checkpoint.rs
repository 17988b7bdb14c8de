//! Progress kept in the written-side database: the last applied commit LSN per pipeline
//! (written by the applier inside the same transaction as the rows) and the per-table
//! snapshot state.

use std::collections::HashMap;
use std::future::Future;

use tokio_postgres::Client;

use crate::connect::connect;
use crate::deferred_indexes;
use crate::error::{pg_kind, ErrorKind};
use crate::mapping::Mapping;
use crate::model::Lsn;

/// DDL for the state schema, idempotent.
/// The commit time of the last transaction `pipeline` applied in this database (`None` before
/// its first, or without a checkpoint).
pub async fn applied_commit_ts(
    client: &Client,
    pipeline: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT commit_ts FROM cdc_sync.checkpoint WHERE pipeline = $1", &[&pipeline])
        .await?
        .and_then(|r| r.get(0)))
}

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

/// DDL of the chunk table, idempotent (run by [`CheckpointStore::prepare`]): the
/// key-range chunks of interrupted snapshot copies, see `source::chunks`.
pub const CHUNK_SCHEMA_SQL: &str = "\
CREATE TABLE IF NOT EXISTS cdc_sync.snapshot_chunk (
    pipeline     text NOT NULL,
    table_name   text NOT NULL,
    chunk        int NOT NULL,
    lo           text[],
    hi           text[],
    plan_lsn     pg_lsn NOT NULL,
    copied_lsn   pg_lsn,
    rows         bigint NOT NULL DEFAULT 0,
    done         boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, table_name, chunk)
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

/// Where a table's initial copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotState {
    /// Not copied yet.
    Pending,
    /// Being copied (or the copy was interrupted): truncate and copy again.
    Copying,
    /// Every row of the snapshot is committed in the target.
    Done,
}

impl SnapshotState {
    /// The text stored in `cdc_sync.snapshot_table.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Copying => "copying",
            SnapshotState::Done => "done",
        }
    }

    /// Parse the stored text.
    pub fn parse(s: &str) -> Option<SnapshotState> {
        match s {
            "pending" => Some(SnapshotState::Pending),
            "copying" => Some(SnapshotState::Copying),
            "done" => Some(SnapshotState::Done),
            _ => None,
        }
    }
}

impl std::fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Snapshot progress of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSnapshot {
    /// Where the copy stands.
    pub state: SnapshotState,
    /// The snapshot's consistent point: stream changes of this table committed before it are
    /// already in the copy and must be skipped.
    pub snapshot_lsn: Option<Lsn>,
    /// Rows copied.
    pub rows: i64,
}

/// Failures of the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// SQL on the state tables failed.
    #[error("checkpoint store: {what}")]
    Sql {
        /// What the store was doing.
        what: &'static str,
        /// The failure.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A snapshot state the store does not know (written by something else).
    #[error("checkpoint store: table {table} of pipeline {pipeline} has unknown snapshot state {state:?}")]
    UnknownState {
        /// Pipeline.
        pipeline: String,
        /// Target table.
        table: String,
        /// The stored text.
        state: String,
    },
}

impl CheckpointError {
    /// Retry or stop (by SQLSTATE; an unknown state needs a human).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CheckpointError::Sql { source, .. } => pg_kind(source),
            CheckpointError::UnknownState { .. } => ErrorKind::Schema,
        }
    }
}

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CheckpointError {
    move |source| CheckpointError::Sql { what, source }
}

/// Where progress lives.
///
/// Contract:
/// - `load` returns what the last committed apply transaction wrote; progress never moves
///   backwards (a smaller LSN written later is ignored).
/// - The row data and the checkpoint are written in one transaction by the sink, so after a
///   crash the store never claims more than what is in the target; replay from the checkpoint
///   may repeat nothing that was committed.
/// - Snapshot state for a table reaches [`SnapshotState::Done`] only after all its rows are
///   committed.
/// - Reading (`is_prepared`, `load`, `tables`) never creates the state schema; only `prepare`
///   does.
pub trait CheckpointStore: Send {
    /// Create the state schema if needed.
    fn prepare(&mut self) -> impl Future<Output = Result<(), CheckpointError>> + Send;
    /// Does the state schema exist (has any pipeline ever run against this database)?
    fn is_prepared(&mut self) -> impl Future<Output = Result<bool, CheckpointError>> + Send;
    /// The pipeline's checkpoint, if it has one.
    fn load(&mut self, pipeline: &str) -> impl Future<Output = Result<Option<Checkpoint>, CheckpointError>> + Send;
    /// Record an initial checkpoint if the pipeline has none (slot just created).
    fn init(&mut self, pipeline: &str, lsn: Lsn) -> impl Future<Output = Result<(), CheckpointError>> + Send;
    /// Per-table snapshot state of a pipeline.
    fn tables(
        &mut self,
        pipeline: &str,
    ) -> impl Future<Output = Result<HashMap<String, TableSnapshot>, CheckpointError>> + Send;
    /// Set one table's snapshot state.
    fn set_table(
        &mut self,
        pipeline: &str,
        table: &str,
        state: &TableSnapshot,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send;
    /// Forget one table's snapshot state and chunk plan (it left the mapping: added again, it
    /// is copied afresh).
    fn forget_table(&mut self, pipeline: &str, table: &str)
        -> impl Future<Output = Result<(), CheckpointError>> + Send;
    /// Forget everything about a pipeline (full re-snapshot).
    fn reset(&mut self, pipeline: &str) -> impl Future<Output = Result<(), CheckpointError>> + Send;
    /// Drop the state schema with every pipeline's progress in it (`drop --purge`).
    fn purge(&mut self) -> impl Future<Output = Result<(), CheckpointError>> + Send;
}

/// [`CheckpointStore`] in the written-side database.
pub struct PgCheckpointStore {
    /// A plain (non-replication) connection.
    pub client: Client,
}

impl PgCheckpointStore {
    /// Connect to the database holding the state schema.
    pub async fn connect(conn: &str) -> Result<Self, CheckpointError> {
        Ok(PgCheckpointStore { client: connect(conn).await.map_err(sql("connecting"))? })
    }
}

impl CheckpointStore for PgCheckpointStore {
    async fn prepare(&mut self) -> Result<(), CheckpointError> {
        self.client.batch_execute(SCHEMA_SQL).await.map_err(sql("creating the state schema"))?;
        // the key-range chunks of interrupted snapshot copies (source::chunks)
        self.client.batch_execute(CHUNK_SCHEMA_SQL).await.map_err(sql("creating the state schema"))?;
        self.client.batch_execute(deferred_indexes::SCHEMA_SQL).await.map_err(sql("creating the state schema"))
    }
    async fn is_prepared(&mut self) -> Result<bool, CheckpointError> {
        let r = self
            .client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = 'cdc_sync'", &[])
            .await
            .map_err(sql("looking for the state schema"))?;
        Ok(r.is_some())
    }
    async fn load(&mut self, pipeline: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let r = self
            .client
            .query_opt("SELECT lsn::text, txns FROM cdc_sync.checkpoint WHERE pipeline = $1", &[&pipeline])
            .await
            .map_err(sql("loading the checkpoint"))?;
        Ok(r.and_then(|r| Some(Checkpoint { lsn: Lsn::parse(&r.get::<_, String>(0))?, txns: r.get(1) })))
    }
    async fn init(&mut self, pipeline: &str, lsn: Lsn) -> Result<(), CheckpointError> {
        self.client
            .execute(
                "INSERT INTO cdc_sync.checkpoint (pipeline, lsn) VALUES ($1, $2::text::pg_lsn) ON CONFLICT DO NOTHING",
                &[&pipeline, &lsn.to_string()],
            )
            .await
            .map_err(sql("recording the initial checkpoint"))?;
        Ok(())
    }
    async fn tables(&mut self, pipeline: &str) -> Result<HashMap<String, TableSnapshot>, CheckpointError> {
        let rows = self
            .client
            .query(
                "SELECT table_name, state, snapshot_lsn::text, rows FROM cdc_sync.snapshot_table WHERE pipeline = $1",
                &[&pipeline],
            )
            .await
            .map_err(sql("loading the snapshot state"))?;
        rows.iter()
            .map(|r| {
                let table: String = r.get(0);
                let text: String = r.get(1);
                let Some(state) = SnapshotState::parse(&text) else {
                    return Err(CheckpointError::UnknownState { pipeline: pipeline.to_string(), table, state: text });
                };
                let snapshot_lsn = r.get::<_, Option<String>>(2).and_then(|s| Lsn::parse(&s));
                Ok((table, TableSnapshot { state, snapshot_lsn, rows: r.get(3) }))
            })
            .collect()
    }
    async fn set_table(&mut self, pipeline: &str, table: &str, s: &TableSnapshot) -> Result<(), CheckpointError> {
        self.client
            .execute(
                "INSERT INTO cdc_sync.snapshot_table (pipeline, table_name, state, snapshot_lsn, rows, updated_at) \
                 VALUES ($1, $2, $3, $4::text::pg_lsn, $5, now()) ON CONFLICT (pipeline, table_name) DO UPDATE SET \
                 state = EXCLUDED.state, snapshot_lsn = EXCLUDED.snapshot_lsn, rows = EXCLUDED.rows, updated_at = now()",
                &[&pipeline, &table, &s.state.as_str(), &s.snapshot_lsn.map(|l| l.to_string()), &s.rows],
            )
            .await
            .map_err(sql("recording a table's snapshot state"))?;
        Ok(())
    }
    async fn forget_table(&mut self, pipeline: &str, table: &str) -> Result<(), CheckpointError> {
        let what = "forgetting a table's snapshot state";
        self.client
            .execute(
                "DELETE FROM cdc_sync.snapshot_table WHERE pipeline = $1 AND table_name = $2",
                &[&pipeline, &table],
            )
            .await
            .map_err(sql(what))?;
        let chunked = self.client.query_one("SELECT to_regclass('cdc_sync.snapshot_chunk') IS NOT NULL", &[]).await;
        if chunked.map_err(sql(what))?.get::<_, bool>(0) {
            self.client
                .execute(
                    "DELETE FROM cdc_sync.snapshot_chunk WHERE pipeline = $1 AND table_name = $2",
                    &[&pipeline, &table],
                )
                .await
                .map_err(sql(what))?;
        }
        Ok(())
    }
    async fn reset(&mut self, pipeline: &str) -> Result<(), CheckpointError> {
        // indexes dropped for an interrupted copy are not forgotten with the pipeline
        deferred_indexes::rebuild(&self.client, Some(pipeline), None, None).await.map_err(|e| {
            CheckpointError::Sql { what: "rebuilding indexes deferred by a snapshot copy", source: e.source }
        })?;
        for sql_text in [
            "DELETE FROM cdc_sync.checkpoint WHERE pipeline = $1",
            "DELETE FROM cdc_sync.snapshot_table WHERE pipeline = $1",
        ] {
            self.client.execute(sql_text, &[&pipeline]).await.map_err(sql("forgetting a pipeline"))?;
        }
        // a state schema from before chunked snapshots has no chunk table
        let chunked = self
            .client
            .query_one("SELECT to_regclass('cdc_sync.snapshot_chunk') IS NOT NULL", &[])
            .await
            .map_err(sql("forgetting a pipeline"))?;
        if chunked.get::<_, bool>(0) {
            self.client
                .execute("DELETE FROM cdc_sync.snapshot_chunk WHERE pipeline = $1", &[&pipeline])
                .await
                .map_err(sql("forgetting a pipeline"))?;
        }
        Ok(())
    }
    async fn purge(&mut self) -> Result<(), CheckpointError> {
        deferred_indexes::rebuild(&self.client, None, None, None).await.map_err(|e| CheckpointError::Sql {
            what: "rebuilding indexes deferred by a snapshot copy",
            source: e.source,
        })?;
        self.client
            .batch_execute("DROP SCHEMA IF EXISTS cdc_sync CASCADE")
            .await
            .map_err(sql("dropping the state schema"))
    }
}

impl PgCheckpointStore {
    /// Per table of `mapping`: the LSN up to which the stream replays changes onto rows that may
    /// already be newer than them — the newest snapshot a resumed copy of the table was finished
    /// under, when later than its first (`Lsn(0)`: none). See `source::chunks`.
    pub async fn replay_windows(&mut self, pipeline: &str, mapping: &Mapping) -> Result<Vec<Lsn>, CheckpointError> {
        let what = "loading the snapshot chunks";
        let chunked = self.client.query_one("SELECT to_regclass('cdc_sync.snapshot_chunk') IS NOT NULL", &[]).await;
        if !chunked.map_err(sql(what))?.get::<_, bool>(0) {
            return Ok(vec![Lsn(0); mapping.tables.len()]);
        }
        let rows = self
            .client
            .query(
                "SELECT table_name, max(copied_lsn)::text FROM cdc_sync.snapshot_chunk \
                 WHERE pipeline = $1 AND copied_lsn > plan_lsn GROUP BY table_name",
                &[&pipeline],
            )
            .await
            .map_err(sql(what))?;
        let by_table: HashMap<String, Lsn> = rows
            .iter()
            .filter_map(|r| Some((r.get::<_, String>(0), Lsn::parse(&r.get::<_, Option<String>>(1)?)?)))
            .collect();
        Ok(mapping.tables.iter().map(|t| by_table.get(&t.to_table).copied().unwrap_or_default()).collect())
    }
}

/// In-memory [`CheckpointStore`] for unit tests.
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    /// Has `prepare` run (and no `purge` since)?
    pub prepared: bool,
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
    async fn prepare(&mut self) -> Result<(), CheckpointError> {
        self.prepared = true;
        Ok(())
    }
    async fn is_prepared(&mut self) -> Result<bool, CheckpointError> {
        Ok(self.prepared)
    }
    async fn load(&mut self, pipeline: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.checkpoints.get(pipeline).copied())
    }
    async fn init(&mut self, pipeline: &str, lsn: Lsn) -> Result<(), CheckpointError> {
        self.checkpoints.entry(pipeline.to_string()).or_insert(Checkpoint { lsn, txns: 0 });
        Ok(())
    }
    async fn tables(&mut self, pipeline: &str) -> Result<HashMap<String, TableSnapshot>, CheckpointError> {
        Ok(self.snapshot.iter().filter(|((p, _), _)| p == pipeline).map(|((_, t), s)| (t.clone(), s.clone())).collect())
    }
    async fn set_table(&mut self, pipeline: &str, table: &str, s: &TableSnapshot) -> Result<(), CheckpointError> {
        self.snapshot.insert((pipeline.to_string(), table.to_string()), s.clone());
        Ok(())
    }
    async fn forget_table(&mut self, pipeline: &str, table: &str) -> Result<(), CheckpointError> {
        self.snapshot.remove(&(pipeline.to_string(), table.to_string()));
        Ok(())
    }
    async fn reset(&mut self, pipeline: &str) -> Result<(), CheckpointError> {
        self.checkpoints.remove(pipeline);
        self.snapshot.retain(|(p, _), _| p != pipeline);
        Ok(())
    }
    async fn purge(&mut self) -> Result<(), CheckpointError> {
        *self = MemoryCheckpointStore::default();
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

    #[test]
    fn snapshot_state_round_trips_through_its_stored_text() {
        for s in [SnapshotState::Pending, SnapshotState::Copying, SnapshotState::Done] {
            assert_eq!(SnapshotState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SnapshotState::parse("finished"), None);
    }

    #[tokio::test]
    async fn memory_store_reset_and_purge_forget() {
        let mut s = MemoryCheckpointStore::default();
        assert!(!s.is_prepared().await.unwrap());
        s.prepare().await.unwrap();
        s.init("a", Lsn(1)).await.unwrap();
        s.init("b", Lsn(2)).await.unwrap();
        let done = TableSnapshot { state: SnapshotState::Done, snapshot_lsn: Some(Lsn(1)), rows: 3 };
        s.set_table("a", "t", &done).await.unwrap();
        s.set_table("a", "u", &done).await.unwrap();
        s.forget_table("a", "u").await.unwrap();
        assert_eq!(s.tables("a").await.unwrap().keys().collect::<Vec<_>>(), ["t"]);
        s.reset("a").await.unwrap();
        assert!(s.load("a").await.unwrap().is_none() && s.tables("a").await.unwrap().is_empty());
        assert!(s.load("b").await.unwrap().is_some());
        s.purge().await.unwrap();
        assert!(!s.is_prepared().await.unwrap() && s.load("b").await.unwrap().is_none());
    }
}

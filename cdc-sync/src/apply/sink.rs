//! The sink contract: where mapped changes are written, and what a commit records.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::mapping::Op;
use crate::model::Lsn;

/// Errors of the written side.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// SQL failed (connection loss is retryable; constraint errors usually are not).
    #[error("target SQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// What a batch of writes did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows written.
    pub rows: u64,
    /// Incoming changes discarded because the target row was written later (last writer wins).
    pub conflicts: u64,
}

/// What a commit records, atomically with the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// End LSN of the last source commit included.
    pub lsn: Lsn,
    /// Its commit time on the source.
    pub commit_ts: DateTime<Utc>,
    /// Source transactions applied in this target transaction.
    pub txns: i64,
    /// Row changes applied in this target transaction.
    pub rows: i64,
}

/// Where mapped changes are written.
///
/// Contract:
/// - `write` applies the ops in order inside one open target transaction (opened by the
///   first `write` after a commit); nothing is visible to others before `commit`. It may return
///   before the ops are executed (the PostgreSQL sink overlaps execution with the caller
///   preparing the next batch); then their errors surface at a later `write` or at `commit`,
///   and their stats are returned by `commit`.
/// - `commit` records `CommitInfo::lsn` as the pipeline's checkpoint in the same transaction as
///   the rows (so rows and progress are durable together, or neither is), then commits. It may
///   be called with no prior `write` to advance the checkpoint alone.
/// - Writes are idempotent under replay from the checkpoint: upserts by key, deletes by key.
/// - After an error the open transaction is gone (rolled back); the caller resumes from the
///   checkpoint.
pub trait Sink: Send {
    /// Apply `ops` in order.
    fn write(&mut self, ops: Vec<Op>) -> impl Future<Output = Result<WriteStats, SinkError>> + Send;
    /// Record the checkpoint and commit. Returns the stats of writes `write` did not report.
    fn commit(&mut self, info: &CommitInfo) -> impl Future<Output = Result<WriteStats, SinkError>> + Send;
}

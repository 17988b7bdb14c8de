//! The sink contract: where mapped changes are written, and what a commit records.

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::error::{pg_kind, ErrorKind};
use crate::mapping::Op;
use crate::model::Lsn;

/// Which change a target error is about, as far as the sink could tell: the table always
/// (unless the error is not tied to a statement), the row's key and the source commit LSN when
/// the failing statement carried exactly one change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeRef {
    /// Written-side table(s).
    pub table: Option<String>,
    /// The row's key, as `(v1,v2)` text, when one change failed.
    pub key: Option<String>,
    /// Commit LSN of the source transaction the failing change belongs to, when known.
    pub lsn: Option<Lsn>,
    /// The highest source commit LSN among the changes of the failing statement or
    /// transaction: re-applying up to here one change at a time pins the row.
    pub up_to: Option<Lsn>,
    /// How many changes the failing statement carried (0: not tied to a statement).
    pub changes: usize,
}

impl ChangeRef {
    /// Is the failing change known (the statement carried exactly one)?
    pub fn pinned(&self) -> bool {
        self.changes == 1 && self.lsn.is_some()
    }
}

impl fmt::Display for ChangeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(t) = &self.table {
            parts.push(format!("table {t}"));
        }
        if let Some(k) = &self.key {
            parts.push(format!("key {k}"));
        }
        if let Some(l) = &self.lsn {
            parts.push(format!("commit LSN {l}"));
        } else if let Some(l) = &self.up_to {
            parts.push(format!("source commits up to LSN {l}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Errors of the written side. [`SinkError::kind`] says whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A statement on the target failed.
    #[error("target: {doing}{at}")]
    Sql {
        /// What the sink was doing (`connecting`, `writing`, `committing`, ...).
        doing: &'static str,
        /// The change it was writing, as far as known.
        at: ChangeRef,
        /// The failure.
        #[source]
        source: tokio_postgres::Error,
    },
    /// An earlier write of this transaction failed and its error was already returned.
    #[error("target transaction aborted by an earlier error")]
    Aborted,
    /// The writer task is gone.
    #[error("target writer task ended")]
    WriterGone,
}

impl SinkError {
    /// A failure not tied to a particular change.
    pub fn sql(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
        move |source| SinkError::Sql { doing, at: ChangeRef::default(), source }
    }

    /// Retry or stop, by SQLSTATE.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SinkError::Sql { source, .. } => pg_kind(source),
            SinkError::Aborted | SinkError::WriterGone => ErrorKind::Other,
        }
    }

    /// The change the error is about, if it is tied to one.
    pub fn change(&self) -> Option<&ChangeRef> {
        match self {
            SinkError::Sql { at, .. } => Some(at),
            _ => None,
        }
    }
}

/// What a batch of writes did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows written.
    pub rows: u64,
    /// Conflicts found and recorded (see [`crate::apply::conflict`]).
    pub conflicts: u64,
    /// Of those, incoming changes discarded because the written side's version won.
    pub conflicts_kept_local: u64,
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
    /// `write(ops)` (when not empty) then `commit(info)`, as one step: a sink may send both
    /// together (the PostgreSQL sink pipelines the rows, the checkpoint and `COMMIT` in one
    /// round trip). Same contract as the two calls.
    fn write_commit(
        &mut self,
        ops: Vec<Op>,
        info: &CommitInfo,
    ) -> impl Future<Output = Result<WriteStats, SinkError>> + Send {
        async move {
            let mut stats = if ops.is_empty() { WriteStats::default() } else { self.write(ops).await? };
            let s = self.commit(info).await?;
            stats.rows += s.rows;
            stats.conflicts += s.conflicts;
            stats.conflicts_kept_local += s.conflicts_kept_local;
            Ok(stats)
        }
    }
    /// The stream passed an echo: a transaction the opposite direction's applier wrote on the
    /// read side, carrying the written side's versions committed up to `ts` (conflict detection;
    /// see [`crate::apply::conflict`]). Ordered with `write`: ops written before the call were
    /// made before the echo. Default: nothing to do.
    fn note_echo(&mut self, ts: DateTime<Utc>) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = ts;
        async { Ok(()) }
    }
}

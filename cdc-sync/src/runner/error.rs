//! Why `run` ended: [`RunError`] and the errors it carries (another instance active, a
//! direction stopped, a slot lost), with what each means for the caller: retry the session
//! ([`RunError::retry_kind`]) or stop and wait for a human ([`RunError::needs_human`], exit
//! code 4).

use crate::apply::PipelineError;
use crate::catalog::CatalogError;
use crate::checkpoint::CheckpointError;
use crate::error::{connect_advice, pg_kind, ErrorKind};
use crate::lock::Holder;
use crate::model::Lsn;
use crate::retry::StopReason;
use crate::reverse_snapshot::ReverseSnapshotError;
use crate::source::snapshot::SnapshotError;
use crate::source::SourceError;
use crate::status::ErrorReport;

/// `run --no-wait` found another instance of the pipeline active.
#[derive(Debug, thiserror::Error)]
#[error(
    "another cdc-sync instance of pipeline {pipeline} is active: the instance lock on the source \
     (advisory lock on {key:?}) is held by {holder}; not waiting because of --no-wait"
)]
pub struct AnotherInstanceActive {
    /// Pipeline name.
    pub pipeline: String,
    /// Lock key text.
    pub key: String,
    /// Who holds it.
    pub holder: Holder,
}

/// `run` gave up taking the instance lock on the source: the error will not pass by waiting (a
/// refused login or certificate, a missing database), or it came back `retry_max_attempts`
/// times in a row. The message names the server and what to change, never the connection
/// string (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("cannot take the instance lock on the source {endpoint} ({origin}); {}; the error", self.advice())]
pub struct LockFailed {
    /// Host(s), port, database and user, from the connection string.
    pub endpoint: String,
    /// Where the connection string came from (`source.url` or `$VAR`).
    pub origin: String,
    /// The kind that decided to give up.
    pub kind: ErrorKind,
    /// Consecutive failed attempts.
    pub attempts: u32,
    /// The last failure.
    #[source]
    pub source: tokio_postgres::Error,
}

impl LockFailed {
    /// What to do about it.
    pub fn advice(&self) -> String {
        let fix = "then start cdc-sync again (SIGHUP does not re-read [source])";
        match connect_advice(&self.source, &self.origin, fix) {
            Some(a) => a,
            None if self.kind == ErrorKind::Access => format!("waiting will not fix this: fix {}, {fix}", self.origin),
            None => format!(
                "it failed {} times in a row (kind {}; [replication] retry_max_attempts), so a restart may get past it",
                self.attempts, self.kind
            ),
        }
    }
}

pub use crate::connect::conninfo::describe_endpoint;

/// A streaming direction stopped: an error that needs a human, or a transient one that kept
/// repeating. The source is the last error; [`report`](Self::report) is what `/status` shows.
#[derive(Debug, thiserror::Error)]
#[error("{direction} pipeline stopped{}", match .reason {
    StopReason::Fatal => String::new(),
    StopReason::Repeated(n) => format!(" after {n} failed attempts in a row"),
})]
pub struct DirectionStopped {
    /// `forward` or `reverse`.
    pub direction: &'static str,
    /// Why it stopped rather than retried.
    pub reason: StopReason,
    /// What `/status` shows.
    pub report: ErrorReport,
    /// The error.
    #[source]
    pub source: PipelineError,
}

/// How a slot was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLoss {
    /// The server invalidated it (`wal_status = 'lost'`: it retained more than
    /// `max_slot_wal_keep_size`).
    Invalidated,
    /// It no longer exists (dropped).
    Missing,
}

/// A slot the pipeline streams from is gone: the changes after its checkpoint are no longer at
/// the source, so the target cannot be brought up to date by streaming.
#[derive(Debug, thiserror::Error)]
#[error(
    "replication slot {slot} of pipeline {pipeline} {}: the changes after checkpoint {checkpoint} are no longer at \
     the source, so the target (left as it is) cannot catch up by streaming. To copy every table again, set \
     [replication] on_slot_lost = \"resnapshot\" (forward only; it truncates the target tables) or run \
     `cdc-sync drop` and start again",
    match .how {
        SlotLoss::Invalidated => "was invalidated by the server (wal_status = lost: it retained more WAL than max_slot_wal_keep_size)",
        SlotLoss::Missing => "no longer exists",
    }
)]
pub struct SlotLost {
    /// The slot.
    pub slot: String,
    /// The pipeline (checkpoint key).
    pub pipeline: String,
    /// Invalidated or gone.
    pub how: SlotLoss,
    /// The checkpoint the target is at.
    pub checkpoint: Lsn,
}

/// Why `run` ended.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A database could not be reached.
    #[error("connecting to {what}")]
    Connect {
        /// Which side, and where its URL came from.
        what: String,
        /// The failure.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The status port could not be bound.
    #[error("binding status port {listen}")]
    Bind {
        /// The address.
        listen: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The instance lock could not be taken (an error that does not pass by waiting, or one
    /// that kept repeating).
    #[error(transparent)]
    Lock(Box<LockFailed>),
    /// `--no-wait` and another instance holds the lock.
    #[error(transparent)]
    AnotherInstance(#[from] AnotherInstanceActive),
    /// The forward slot exists but its checkpoint does not.
    #[error(
        "slot {slot} exists on the source but the target has no checkpoint for pipeline {pipeline}; \
         if it is a leftover, run `cdc-sync drop` and start again"
    )]
    SlotWithoutCheckpoint {
        /// The slot.
        slot: String,
        /// The pipeline.
        pipeline: String,
    },
    /// The reverse slot exists but its checkpoint does not.
    #[error("reverse slot {slot} exists but the source has no checkpoint for {pipeline}; run `cdc-sync drop`")]
    ReverseSlotWithoutCheckpoint {
        /// The slot.
        slot: String,
        /// The pipeline.
        pipeline: String,
    },
    /// A slot the checkpoint streams from is gone or invalidated (and `on_slot_lost` does not
    /// allow a re-snapshot).
    #[error(transparent)]
    SlotLost(SlotLost),
    /// The mapping does not fit the live catalogs.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Publication or slot setup failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state schema could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Carrying the target-only rows to the source failed.
    #[error(transparent)]
    ReverseSnapshot(#[from] ReverseSnapshotError),
    /// The initial copy failed (unfinished tables are copied again at the next start).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A streaming direction stopped.
    #[error(transparent)]
    Stopped(#[from] Box<DirectionStopped>),
    /// A task panicked or was cancelled.
    #[error("a task of the pipeline failed")]
    Task(#[from] tokio::task::JoinError),
}

impl RunError {
    /// The kind of the failure (for `/status` and the retry decision).
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Connect { source, .. } => pg_kind(source),
            RunError::Catalog(e) => e.kind(),
            RunError::Source(e) => e.kind(),
            RunError::Checkpoint(e) => e.kind(),
            RunError::ReverseSnapshot(e) => e.kind(),
            RunError::Snapshot(e) => e.kind(),
            RunError::SlotLost(_)
            | RunError::SlotWithoutCheckpoint { .. }
            | RunError::ReverseSlotWithoutCheckpoint { .. } => ErrorKind::Slot,
            RunError::Stopped(s) => s.source.kind(),
            RunError::Lock(l) => l.kind,
            RunError::Bind { .. } | RunError::AnotherInstance(_) | RunError::Task(_) => ErrorKind::Other,
        }
    }

    /// Did `run` stop on an error that a restart would meet again (data, schema, a lost slot, a
    /// slot without checkpoint), so that a supervisor should not restart it until a human has
    /// looked (`main` exits with code 4)? A transient error that kept repeating is not one: a
    /// restart may well get past it.
    pub fn needs_human(&self) -> bool {
        match self {
            RunError::Stopped(s) => s.reason == StopReason::Fatal && !s.source.kind().is_transient(),
            RunError::Bind { .. } | RunError::AnotherInstance(_) | RunError::Task(_) => false,
            e => !e.kind().is_transient(),
        }
    }

    /// When the session may be tried again (reconnect, prepare, resume from the checkpoints):
    /// the kind of a transient failure. `None`: it needs a human (or another instance is active
    /// and `--no-wait` was asked).
    pub fn retry_kind(&self) -> Option<ErrorKind> {
        match self {
            RunError::Bind { .. }
            | RunError::AnotherInstance(_)
            | RunError::Stopped(_)
            | RunError::Task(_)
            | RunError::Lock(_) => None,
            e => Some(e.kind()).filter(|k| k.is_transient()),
        }
    }
}

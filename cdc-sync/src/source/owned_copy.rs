//! A forward copy into tables that also flow back (a pipeline with `reverse`/`both` tables).
//!
//! Two things differ from a plain copy, so that the service can keep writing a `both` table
//! while it is copied (see "Both directions" in the crate README):
//! - Every commit of the copy on the target (the `TRUNCATE`, each chunk) carries the forward
//!   applier's replication origin, with an origin commit time no later than what the target has
//!   absorbed of legacy. The reverse stream, which already runs over the table, skips these
//!   transactions like any echo of the forward applier (and the time keeps its conflict horizon
//!   truthful), and conflict detection takes the copied rows for the forward side's own: a later
//!   legacy change of a copied row is no conflict.
//! - A `both` table is emptied under an `EXCLUSIVE` lock (the service waits, nothing is lost),
//!   in the transaction that first carries its rows that legacy lacks back to legacy and keeps
//!   them on the target ([`CarryBack`]); everything the service commits on the table after that
//!   transaction is in the reverse stream.
//!
//! PostgreSQL 15 lets one session at a time hold a replication origin, so the copy's sessions
//! take turns around their `COMMIT`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::ErrorKind;
use crate::mapping::DirectedTable;
use crate::model::Lsn;

/// Carrying a table's rows back before its copy failed.
#[derive(Debug, thiserror::Error)]
#[error("carrying the rows of {table} that only the target has back to the source before its copy")]
pub struct CarryBackError {
    /// The target table.
    pub table: String,
    /// Retry or stop.
    pub kind: ErrorKind,
    /// The failure.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What happens to a table's current rows before its copy empties it.
pub trait CarryBack: Send + Sync {
    /// Inside the target transaction `tgt` that empties `t` (a forward table) for its copy,
    /// before the `TRUNCATE`. Does nothing for a table that does not flow back.
    fn before_truncate<'a>(
        &'a self,
        tgt: &'a Client,
        t: &'a DirectedTable,
    ) -> BoxFuture<'a, Result<(), CarryBackError>>;
    /// In the same transaction, right after the `TRUNCATE`.
    fn after_truncate<'a>(&'a self, tgt: &'a Client, t: &'a DirectedTable)
        -> BoxFuture<'a, Result<(), CarryBackError>>;
}

/// How a copy writes into tables that also flow back.
pub struct OwnedCopy {
    /// The forward applier's replication origin (it must exist).
    pub origin: String,
    /// The origin commit time stamped on the copy's commits: legacy's time up to which the
    /// target holds legacy's rows (`None`: none stamped, the reverse horizon does not move).
    pub at: Option<DateTime<Utc>>,
    /// Before a table is emptied.
    pub carry: Box<dyn CarryBack>,
    /// The copy's sessions take turns holding the origin.
    pub turn: tokio::sync::Mutex<()>,
}

impl OwnedCopy {
    /// Commit the open transaction of `c` stamped with the origin (`lsn`: the snapshot's).
    pub async fn commit(&self, c: &Client, lsn: Lsn) -> Result<(), tokio_postgres::Error> {
        let _turn = self.turn.lock().await;
        // the backend of a killed predecessor may hold the origin a moment longer
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            c.batch_execute("SAVEPOINT cdc_sync_origin").await?;
            match c.execute("SELECT pg_replication_origin_session_setup($1)", &[&self.origin]).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                    c.batch_execute("ROLLBACK TO SAVEPOINT cdc_sync_origin").await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let committed = async {
            if let Some(at) = &self.at {
                c.execute("SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2)", &[&lsn.to_string(), at])
                    .await?;
            }
            c.batch_execute("COMMIT").await
        }
        .await;
        // free the origin for the next session (also after a failed commit)
        let reset = c.batch_execute("SELECT pg_replication_origin_session_reset()").await;
        committed.and(reset)
    }
}

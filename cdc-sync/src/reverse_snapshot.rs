//! The reverse initial snapshot: rows that exist only in the service's (target) database when a
//! pipeline with `reverse`/`both` tables starts are carried to legacy (the source), so that both
//! sides start from the union, consistent with the reverse stream.
//!
//! It happens at two moments, both while nothing streams yet:
//! - **When the reverse slot is created** (a fresh pipeline, before anything is copied forward;
//!   or later, e.g. a table turned `both`): after the slot exists, the target rows not written
//!   by the forward applier or copy (origin `cdc_sync_<name>`) nor committed before a table's
//!   copy finished (per `cdc_sync.snapshot_table`, for copies made before they were stamped)
//!   whose key legacy lacks are inserted into legacy. Anything committed on the target after the
//!   slot was created is also in the reverse stream, which replays it idempotently on top. These
//!   inserts carry the reverse applier's origin and the copy's time, so the forward stream skips
//!   them as echoes. Tables whose forward copy starts from scratch right after (every `both`
//!   table of a fresh pipeline) are left to that copy's carry: carried here, their rows would be
//!   in the copy's snapshot, and a service delete or update of them committed before the copy
//!   locks the table (older than the table's floor in the reverse stream) would be undone by it.
//!   In a table that was forward-only until now the forward applier's rows carry no origin, like
//!   the service's: only rows with an origin or committed after the forward direction's last
//!   commit are carried there (a row legacy deleted meanwhile is not brought back).
//! - **Before a table that flows back is copied forward** (a fresh pipeline's first copy, a
//!   table added by SIGHUP, a table added back): [`CarryOnCopy`], inside the transaction that
//!   empties the target table under a lock, carries its rows not written by the forward side,
//!   and sets where the reverse stream takes the table up (see [`crate::source::owned_copy`]);
//!   first it settles the service's versions of keys both sides have that legacy had not
//!   received ([`recopy`]).
//!
//! Then each direction's conflict horizon (see [`crate::apply::conflict`]) starts at what the
//! other side has just absorbed: the forward one at the copy's time (target clock), the reverse
//! one at the forward checkpoint's commit time (source clock; the source's current time when
//! the forward direction has applied nothing yet).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::apply::conflict::{HORIZON_SQL, SCHEMA_SQL as CONFLICT_SCHEMA_SQL};
use crate::apply::{setup_origin, SinkError};
use crate::checkpoint::{CheckpointError, CheckpointStore, PgCheckpointStore, SnapshotState, TableSnapshot};
use crate::connect::connect;
use crate::error::{pg_kind, ErrorKind};
use crate::mapping::{DirectedTable, Mapping};
use crate::model::{quote_ident, quote_literal, quote_qualified, Lsn};
use crate::source::owned_copy::{CarryBack, CarryBackError};
use crate::source::snapshot::source_select_list;
use futures::future::BoxFuture;

mod recopy;

/// Failures of the reverse snapshot (retried like any setup step, by their kind).
#[derive(Debug, thiserror::Error)]
pub enum ReverseSnapshotError {
    /// SQL on either side.
    #[error("reverse snapshot: {doing}")]
    Sql {
        /// What it was doing.
        doing: String,
        /// The failure.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Recording the table's floor in the reverse stream failed.
    #[error("reverse snapshot")]
    Checkpoint(#[from] CheckpointError),
    /// Stamping the origin failed.
    #[error("reverse snapshot")]
    Origin(#[from] SinkError),
}

impl ReverseSnapshotError {
    /// By the failure underneath.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReverseSnapshotError::Sql { source, .. } => pg_kind(source),
            ReverseSnapshotError::Origin(e) => e.kind(),
            ReverseSnapshotError::Checkpoint(e) => e.kind(),
        }
    }
}

fn sql(doing: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ReverseSnapshotError {
    let doing = doing.into();
    move |source| ReverseSnapshotError::Sql { doing, source }
}

/// Which target rows are carried.
#[derive(Debug, Clone)]
pub enum Carry {
    /// Rows not written by the forward applier or copy (`forward_origin`), before a table's
    /// copy ([`CarryOnCopy`]).
    NotCopied {
        /// The forward applier's origin name.
        forward_origin: String,
    },
    /// Rows not written by the forward applier (`forward_origin`) nor by the forward snapshot
    /// (committed at or before the table's copy finished, per `cdc_sync.snapshot_table` of
    /// `forward_pipeline` on the target).
    NotFromForward {
        /// The forward applier's origin name.
        forward_origin: String,
        /// The forward checkpoint key.
        forward_pipeline: String,
    },
}

/// Where the carried rows are stamped (the reverse applier's origin, so the forward stream
/// skips them), or `None` to leave them unstamped.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// The reverse applier's origin name.
    pub origin: String,
    /// The origin LSN recorded (the reverse slot's consistent point).
    pub lsn: Lsn,
}

/// What was carried.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    /// Rows inserted into legacy, per legacy table.
    pub rows: Vec<(String, u64)>,
    /// The target's time at the copy's snapshot.
    pub at: Option<DateTime<Utc>>,
}

/// The `WHERE` clause choosing the rows of target table `t` (the reverse mapping's read side,
/// aliased `x`).
fn filter(t: &DirectedTable, carry: &Carry) -> String {
    match carry {
        Carry::NotFromForward { forward_origin, forward_pipeline } => format!(
            " WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin o WHERE o.roname = {} \
               AND o.roident = (pg_xact_commit_timestamp_origin(x.xmin)).roident) \
             AND (pg_xact_commit_timestamp(x.xmin) IS NULL OR pg_xact_commit_timestamp(x.xmin) > \
               COALESCE((SELECT s.updated_at FROM cdc_sync.snapshot_table s WHERE s.pipeline = {} \
                 AND s.table_name = {} AND s.state = 'done'), '-infinity'::timestamptz)){}",
            quote_literal(forward_origin),
            quote_literal(forward_pipeline),
            quote_literal(&t.from_table),
            if t.lww { unstamped_forward(forward_pipeline) } else { String::new() },
        ),
        Carry::NotCopied { forward_origin } => format!(
            " WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin o WHERE o.roname = {} \
               AND o.roident = (pg_xact_commit_timestamp_origin(x.xmin)).roident)",
            quote_literal(forward_origin)
        ),
    }
}

/// For a table the forward applier also writes (`both`), when that applier did not stamp its
/// writes (a pipeline that flowed one way only until now: its checkpoint row, written in each
/// of its target transactions, has no origin): a row without an origin may be its write, so
/// only a row with an origin (another pipeline's) or committed after the forward direction's
/// last target commit (the checkpoint row's commit time; the pipeline is stopped meanwhile) is
/// provably the service's. A row legacy deleted that the forward direction had written is
/// then not carried back (resurrected); a row the service wrote before the forward
/// direction's last commit is not carried either (it cannot be told from the applier's).
fn unstamped_forward(forward_pipeline: &str) -> String {
    let cp = format!("cdc_sync.checkpoint c WHERE c.pipeline = {}", quote_literal(forward_pipeline));
    format!(
        " AND ((pg_xact_commit_timestamp_origin(x.xmin)).roident <> 0 \
           OR NOT EXISTS (SELECT 1 FROM {cp} AND (pg_xact_commit_timestamp_origin(c.xmin)).roident = 0) \
           OR pg_xact_commit_timestamp(x.xmin) > (SELECT pg_xact_commit_timestamp(c.xmin) FROM {cp}))"
    )
}

/// Copy the target rows `carry` chooses of every table of `reverse` (the reverse mapping: read
/// side = target, written side = legacy) but those in `left_to_copy` (target table names: their
/// forward copy is about to carry them itself, with [`CarryOnCopy`]) into legacy where their
/// key is missing there, under one snapshot of the target, one legacy transaction per table.
pub async fn carry_target_only_rows(
    reverse: &Arc<Mapping>,
    target_conn: &str,
    legacy_conn: &str,
    carry: &Carry,
    stamp: Option<&Stamp>,
    left_to_copy: &HashSet<String>,
) -> Result<Carried, ReverseSnapshotError> {
    let tgt = connect(target_conn).await.map_err(sql("connecting to the target"))?;
    tgt.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(sql("starting the target snapshot"))?;
    // the first statement takes the snapshot; now() is the transaction's start, just before it
    let at: DateTime<Utc> =
        tgt.query_one("SELECT now()", &[]).await.map_err(sql("starting the target snapshot"))?.get(0);
    let legacy = connect(legacy_conn).await.map_err(sql("connecting to the source"))?;
    let _ = legacy.batch_execute("SET session_replication_role = replica").await;
    if let Some(s) = stamp {
        setup_origin(&legacy, &s.origin).await?;
    }
    let mut out = Carried { rows: Vec::new(), at: Some(at) };
    for t in &reverse.tables {
        if left_to_copy.contains(&t.from_table) {
            tracing::info!(table = %t.from_table,
                "reverse snapshot: the table is copied forward next; its copy carries the rows only the target has");
            continue;
        }
        let n = carry_table(t, &tgt, &legacy, carry, stamp, at).await?.len() as u64;
        if n > 0 {
            tracing::info!(table = %t.to_table, rows = n, "reverse snapshot: carried rows that only the target had");
        }
        out.rows.push((t.to_table.clone(), n));
    }
    let _ = tgt.batch_execute("COMMIT").await;
    if stamp.is_some() {
        // free the origin for the reverse applier's session
        let _ = legacy.batch_execute("SELECT pg_replication_origin_session_reset()").await;
    }
    Ok(out)
}

async fn carry_table(
    t: &DirectedTable,
    tgt: &Client,
    legacy: &Client,
    carry: &Carry,
    stamp: Option<&Stamp>,
    at: DateTime<Utc>,
) -> Result<Vec<Vec<String>>, ReverseSnapshotError> {
    let to = quote_qualified(&t.to_table);
    let cols: Vec<String> = t.outputs.iter().map(|o| quote_ident(&o.column)).collect();
    let keys: Vec<String> = t.key_outputs.iter().map(|o| quote_ident(&t.outputs[*o].column)).collect();
    let cols = cols.join(", ");
    let what = |doing: &str| format!("{doing} {}", t.to_table);
    legacy.batch_execute("BEGIN").await.map_err(sql(what("beginning the copy into")))?;
    legacy
        .batch_execute(&format!(
            "CREATE TEMP TABLE cdc_sync_carry ON COMMIT DROP AS SELECT {cols} FROM {to} WITH NO DATA"
        ))
        .await
        .map_err(sql(what("staging rows for")))?;
    let out_sql = format!(
        // `x.xmin`: inside the filter's subqueries a bare `xmin` would be the catalog row's
        "COPY (SELECT {} FROM {} AS x{}) TO STDOUT",
        source_select_list(t),
        quote_qualified(&t.from_table),
        filter(t, carry)
    );
    let copied = async {
        let out = tgt.copy_out(out_sql.as_str()).await?;
        let sink = legacy.copy_in::<_, bytes::Bytes>(&format!("COPY cdc_sync_carry ({cols}) FROM STDIN")).await?;
        futures::pin_mut!(out);
        futures::pin_mut!(sink);
        while let Some(buf) = out.next().await {
            sink.feed(buf?).await?;
        }
        sink.as_mut().finish().await
    }
    .await;
    let r = async {
        copied?;
        // the keys carried (as text), in key column order
        let carried: Vec<Vec<String>> = legacy
            .query(
                &format!(
                    // an identity column GENERATED ALWAYS takes the carried value too
                    "INSERT INTO {to} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM cdc_sync_carry \
                     ON CONFLICT ({}) DO NOTHING RETURNING {}",
                    keys.join(", "),
                    keys.iter().map(|k| format!("{k}::text")).collect::<Vec<_>>().join(", ")
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| (0..keys.len()).map(|i| r.get(i)).collect())
            .collect();
        if let (Some(s), false) = (stamp, carried.is_empty()) {
            legacy
                .execute("SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2)", &[&s.lsn.to_string(), &at])
                .await?;
        }
        legacy.batch_execute("COMMIT").await?;
        Ok::<_, tokio_postgres::Error>(carried)
    }
    .await;
    match r {
        Ok(n) => Ok(n),
        Err(e) => {
            let _ = legacy.batch_execute("ROLLBACK").await;
            Err(sql(what("carrying the target-only rows of"))(e))
        }
    }
}

/// Before the forward copy of a table that also flows back empties it on the target (inside
/// that transaction): lock it against writes (`EXCLUSIVE`: the service waits), carry its rows
/// that were not written by the forward applier or copy and whose key legacy lacks to legacy
/// (stamped with the reverse origin, so the forward stream skips them, without an origin time,
/// so no conflict horizon moves), keep those rows through the `TRUNCATE` (written back in the
/// same transaction: the service never misses them), and record the target's WAL position as
/// the table's floor in the reverse stream (`cdc_sync.snapshot_table` of the reverse pipeline
/// in legacy): what the service committed on the table before is in the carry or was replaced
/// by legacy's rows, everything after (the lock is held until the transaction commits) is in
/// the reverse stream. See [`crate::source::owned_copy`].
pub struct CarryOnCopy {
    /// The reverse mapping (read side = target).
    pub reverse: Arc<Mapping>,
    /// Legacy's connection string.
    pub legacy_conn: String,
    /// The forward applier's origin.
    pub forward_origin: String,
    /// The reverse applier's origin (stamped on the carried rows).
    pub reverse_origin: String,
    /// The reverse checkpoint key (its table floors are recorded under it).
    pub reverse_pipeline: String,
    /// The forward checkpoint key (its checkpoint and conflict horizon tell what each side has
    /// received of the other).
    pub forward_pipeline: String,
}

impl CarryBack for CarryOnCopy {
    fn before_truncate<'a>(
        &'a self,
        tgt: &'a Client,
        t: &'a DirectedTable,
    ) -> BoxFuture<'a, Result<(), CarryBackError>> {
        Box::pin(async move {
            let Some(r) = self.reverse.tables.iter().find(|r| r.from_table == t.to_table) else { return Ok(()) };
            self.carry_before_truncate(tgt, r).await.map_err(|e| CarryBackError {
                table: t.to_table.clone(),
                kind: e.kind(),
                source: Box::new(e),
            })
        })
    }

    fn after_truncate<'a>(
        &'a self,
        tgt: &'a Client,
        t: &'a DirectedTable,
    ) -> BoxFuture<'a, Result<(), CarryBackError>> {
        Box::pin(async move {
            if !self.reverse.tables.iter().any(|r| r.from_table == t.to_table) {
                return Ok(());
            }
            let to = quote_qualified(&t.to_table);
            let keep = async {
                // every column but the generated ones (GENERATED ALWAYS AS ... STORED: the
                // server computes them and refuses a value); identity columns keep their values
                let cols: String =
                    tgt.query_one(WRITABLE_COLUMNS_SQL, &[&to]).await?.get::<_, Option<String>>(0).unwrap_or_default();
                tgt.batch_execute(&format!(
                    "INSERT INTO {to} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM cdc_sync_keep"
                ))
                .await
            };
            keep.await.map_err(sql(format!("keeping the carried rows of {}", t.to_table))).map_err(|e| CarryBackError {
                table: t.to_table.clone(),
                kind: e.kind(),
                source: Box::new(e),
            })
        })
    }
}

/// A table's columns that an `INSERT` may give values (`$1`: the table, as text): every live
/// column but the generated ones, quoted and comma-separated, in column order.
const WRITABLE_COLUMNS_SQL: &str = "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute \
     WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''";

impl CarryOnCopy {
    async fn carry_before_truncate(&self, tgt: &Client, r: &DirectedTable) -> Result<(), ReverseSnapshotError> {
        tgt.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", quote_qualified(&r.from_table)))
            .await
            .map_err(sql(format!("locking {} against writes for its copy", r.from_table)))?;
        let legacy = connect(&self.legacy_conn).await.map_err(sql("connecting to the source"))?;
        let _ = legacy.batch_execute("SET session_replication_role = replica").await;
        // before the origin is set up: a service version that stays must reach the forward stream
        recopy::settle_shared_keys(self, r, tgt, &legacy).await?;
        setup_origin(&legacy, &self.reverse_origin).await?;
        let carry = Carry::NotCopied { forward_origin: self.forward_origin.clone() };
        let carried = carry_table(r, tgt, &legacy, &carry, None, Utc::now()).await;
        let _ = legacy.batch_execute("SELECT pg_replication_origin_session_reset()").await;
        let carried = carried?;
        let n = carried.len();
        // the carried rows stay on the target: kept aside, written back after the TRUNCATE
        let key_len = r.key_len;
        let cols: Vec<String> = r.inputs[..key_len].iter().map(|c| format!("t.{}", quote_ident(c))).collect();
        let casts: Vec<String> = (0..key_len).map(|i| format!("u.k{i}::{}", r.input_types[i])).collect();
        let params: Vec<String> = (0..key_len).map(|i| format!("${}::text[]", i + 1)).collect();
        let names: Vec<String> = (0..key_len).map(|i| format!("k{i}")).collect();
        let keep = format!(
            "CREATE TEMP TABLE cdc_sync_keep ON COMMIT DROP AS SELECT t.* FROM {} t WHERE ({}) IN \
             (SELECT {} FROM unnest({}) AS u({}))",
            quote_qualified(&r.from_table),
            cols.join(", "),
            casts.join(", "),
            params.join(", "),
            names.join(", ")
        );
        let by_col: Vec<Vec<&str>> = (0..key_len).map(|i| carried.iter().map(|k| k[i].as_str()).collect()).collect();
        let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            by_col.iter().map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        tgt.execute(keep.as_str(), &p).await.map_err(sql(format!("keeping the carried rows of {}", r.from_table)))?;
        let floor: String = tgt
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(sql("reading the target's WAL position"))?
            .get(0);
        let floor = Lsn::parse(&floor).unwrap_or_default();
        let mut store = PgCheckpointStore { client: legacy };
        let state = TableSnapshot { state: SnapshotState::Done, snapshot_lsn: Some(floor), rows: n as i64 };
        store.set_table(&self.reverse_pipeline, &r.to_table, &state).await?;
        tracing::info!(table = %r.from_table, carried = n, reverse_floor = %floor,
            "before the table's copy: carried its rows that legacy lacked to legacy; the reverse stream takes the table's changes from here");
        Ok(())
    }
}

/// Start both directions' conflict horizons: the forward one (on the target) at `forward_at`
/// (the target's current time when `None`), the reverse one (on legacy) at the forward
/// checkpoint's commit time, or legacy's current time when it has none. With `only_missing`
/// (a pipeline that ran before conflicts were detected) a horizon already there is kept;
/// otherwise one is never moved back.
pub async fn init_horizons(
    target: &Client,
    legacy: &Client,
    forward_pipeline: &str,
    reverse_pipeline: &str,
    forward_at: Option<DateTime<Utc>>,
    only_missing: bool,
) -> Result<(), ReverseSnapshotError> {
    for c in [target, legacy] {
        if let Err(e) = c.batch_execute(CONFLICT_SCHEMA_SQL).await {
            // another pipeline creating them in the same database at once
            if !matches!(e.code(), Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE) {
                return Err(sql("creating the conflict tables")(e));
            }
        }
    }
    let horizon_sql = if only_missing {
        "INSERT INTO cdc_sync.conflict_horizon (pipeline, echoed_through) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    } else {
        HORIZON_SQL
    };
    let forward_at = match forward_at {
        Some(t) => t,
        None => target.query_one("SELECT now()", &[]).await.map_err(sql("reading the target's time"))?.get(0),
    };
    target.execute(horizon_sql, &[&forward_pipeline, &forward_at]).await.map_err(sql("starting the horizon"))?;
    let forward_ts = crate::checkpoint::applied_commit_ts(target, forward_pipeline)
        .await
        .map_err(sql("reading the forward checkpoint"))?;
    let absorbed = match forward_ts {
        Some(ts) => ts,
        None => legacy.query_one("SELECT now()", &[]).await.map_err(sql("reading the source's time"))?.get(0),
    };
    legacy.execute(horizon_sql, &[&reverse_pipeline, &absorbed]).await.map_err(sql("starting the horizon"))?;
    tracing::info!(forward = %forward_at, reverse = %absorbed, "conflict horizons start");
    Ok(())
}

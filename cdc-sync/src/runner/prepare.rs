//! What `run` does before a direction streams, each step idempotent (run again after a
//! restart, a lost lock or a SIGHUP): first the reverse direction's publication and slot, with
//! the reverse snapshot (except of the tables the forward copy is about to carry itself, see
//! [`forward_fresh_copies`]) and the conflict horizons when its slot is created (so that
//! whatever the service writes from then on is in the reverse stream, also while a table is
//! copied forward);
//! then the forward direction's publication, slot and copy of unfinished tables (a table that
//! flows back is copied as [`crate::source::owned_copy`] says).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use tokio_postgres::Client;

use super::error::{RunError, SlotLoss, SlotLost};
use crate::checkpoint::{CheckpointStore, PgCheckpointStore, SnapshotState, TableSnapshot};
use crate::config::{OnSlotLost, SyncConfig};
use crate::connect::connect;
use crate::mapping::Mapping;
use crate::model::Lsn;
use crate::plan::DirectionPlan;
use crate::reverse_snapshot::{self, Carry, Stamp};
use crate::source;
use crate::source::owned_copy::{CarryBack, OwnedCopy};
use crate::source::snapshot::{copy_tables, SnapshotJob};
use crate::status::Metrics;

pub(super) async fn connect_to(conn: &str, what: &str) -> Result<Client, RunError> {
    connect(conn).await.map_err(|source| RunError::Connect { what: what.to_string(), source })
}

/// Forget the snapshot state of `pipeline`'s tables that `mapping` no longer writes: added
/// again later, such a table is copied afresh (the stream went on without it).
pub(super) async fn forget_unmapped(
    store: &mut PgCheckpointStore,
    pipeline: &str,
    mapping: &Mapping,
) -> Result<HashMap<String, TableSnapshot>, RunError> {
    let mut states = store.tables(pipeline).await?;
    let mapped: HashSet<&str> = mapping.tables.iter().map(|t| t.to_table.as_str()).collect();
    let gone: Vec<String> = states.keys().filter(|t| !mapped.contains(t.as_str())).cloned().collect();
    for table in gone {
        store.forget_table(pipeline, &table).await?;
        states.remove(&table);
        tracing::info!(pipeline, table = %table,
            "the table is no longer in sync.toml: forgot its snapshot state (added again, it is copied afresh)");
    }
    Ok(states)
}

/// Prepare the forward direction: publication, slot, snapshot of unfinished tables. Returns the
/// checkpoint to stream from and each table's snapshot floor. `carry`: the pipeline also flows
/// back (its reverse direction is prepared): the copy writes as [`OwnedCopy`].
pub(super) async fn prepare_forward(
    cfg: &SyncConfig,
    plan: &DirectionPlan,
    mapping: &Arc<Mapping>,
    src: &Client,
    store: &mut PgCheckpointStore,
    metrics: &Arc<Metrics>,
    carry: Option<Box<dyn CarryBack>>,
) -> Result<(Lsn, Vec<Lsn>), RunError> {
    let r = &cfg.replication;
    let name = &plan.pipeline;
    store.prepare().await?;
    source::ensure_publication(src, &plan.publication, &mapping.from_table_names()).await?;
    let mut cp = store.load(name).await?;
    let mut slot = source::slot_info(src, &plan.slot).await?;
    let mut states = forget_unmapped(store, name, mapping).await?;
    let mut exported = None;
    if let Some(cp) = &cp {
        let lost = match &slot {
            None => Some(SlotLoss::Missing),
            Some(s) if s.is_lost() => Some(SlotLoss::Invalidated),
            Some(_) => None,
        };
        if let Some(how) = lost {
            let lost = SlotLost { slot: plan.slot.clone(), pipeline: name.clone(), how, checkpoint: cp.lsn };
            if r.on_slot_lost == OnSlotLost::Stop {
                return Err(RunError::SlotLost(lost));
            }
            tracing::warn!(slot = %plan.slot, checkpoint = %cp.lsn, "{lost}; on_slot_lost = \"resnapshot\": creating it again and copying every table again");
            if slot.is_some() {
                source::drop_slot(src, &plan.slot).await?;
            }
            slot = None;
        }
    }
    // a fresh pipeline's copy: legacy's time before its snapshot (stamped on the copy's commits
    // when the pipeline flows back)
    let mut before_snapshot = None;
    match (&slot, &cp) {
        (None, _) => {
            store.reset(name).await?;
            states.clear();
            before_snapshot = Some(legacy_time(src).await?);
            let e = source::create_slot_exporting(&plan.from_conn, &plan.slot, false).await?;
            tracing::info!(slot = %plan.slot, consistent_point = %e.consistent_point, "created slot with exported snapshot");
            store.init(name, e.consistent_point).await?;
            cp = store.load(name).await?;
            exported = Some(e);
        }
        (Some(_), None) => {
            return Err(RunError::SlotWithoutCheckpoint { slot: plan.slot.clone(), pipeline: name.clone() })
        }
        (Some(_), Some(_)) => {}
    }
    let cp = cp.expect("set above").lsn;
    let todo: Vec<usize> = (0..mapping.tables.len())
        .filter(|i| states.get(&mapping.tables[*i].to_table).map(|s| s.state != SnapshotState::Done).unwrap_or(true))
        .collect();
    if !todo.is_empty() {
        metrics.set_state("snapshot");
        let e = match exported.take() {
            Some(e) => e,
            None => {
                // Resume: a temporary slot gives a fresh snapshot; the stream skips these tables'
                // changes committed before its consistent point.
                let slot_name = format!("{}_snap_{}", plan.slot, std::process::id());
                source::create_slot_exporting(&plan.from_conn, &slot_name, true).await?
            }
        };
        let job = SnapshotJob {
            pipeline: name.clone(),
            mapping: Arc::clone(mapping),
            tables: todo,
            source: plan.from_conn.clone(),
            target: plan.to_conn.clone(),
            snapshot: e.snapshot.clone(),
            lsn: e.consistent_point,
            stream_from: cp,
            workers: r.snapshot_workers,
            chunk_pages: r.snapshot_chunk_pages,
            defer_indexes: r.snapshot_defer_indexes,
            metrics: Arc::clone(metrics),
            owned: match carry {
                Some(carry) => Some(Arc::new(owned_copy(store, plan, carry, before_snapshot).await?)),
                None => None,
            },
        };
        copy_tables(job, store).await?;
        drop(e);
        states = store.tables(name).await?;
    }
    let floors = mapping
        .tables
        .iter()
        .map(|t| states.get(&t.to_table).and_then(|s| s.snapshot_lsn).unwrap_or_default())
        .collect();
    Ok((cp, floors))
}

async fn legacy_time(src: &Client) -> Result<DateTime<Utc>, RunError> {
    Ok(src.query_one("SELECT now()", &[]).await.map_err(source::SourceError::from)?.get(0))
}

/// How a copy writes into tables that also flow back: stamped with the forward origin (created
/// here if the applier never ran) and, as its origin time, what the target has absorbed of
/// legacy: the forward checkpoint's commit time, or on a fresh pipeline legacy's time before
/// the copy's snapshot (`before_snapshot`); otherwise no time.
async fn owned_copy(
    store: &mut PgCheckpointStore,
    plan: &DirectionPlan,
    carry: Box<dyn CarryBack>,
    before_snapshot: Option<DateTime<Utc>>,
) -> Result<OwnedCopy, RunError> {
    let c = &store.client;
    let fail = |e| RunError::Source(source::SourceError::Sql(e));
    c.execute(
        "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
        &[&plan.origin],
    )
    .await
    .map_err(fail)?;
    let applied = crate::checkpoint::applied_commit_ts(c, &plan.pipeline).await.map_err(fail)?;
    let at = applied.or(before_snapshot);
    Ok(OwnedCopy { origin: plan.origin.clone(), at, carry, turn: tokio::sync::Mutex::new(()) })
}

/// The target tables whose forward copy [`prepare_forward`] is going to start from scratch at
/// this start (as it will decide: every table of a new or recreated forward slot, otherwise the
/// tables not copied yet). A table that also flows back has its rows carried to legacy by that
/// copy ([`reverse_snapshot::CarryOnCopy`], under a lock), so the reverse snapshot at slot
/// creation must leave it alone: rows it carried earlier would be in legacy's copy snapshot, and
/// a later service delete or update of them, committed before the copy's floor in the reverse
/// stream, would be undone by the copy. A copy that resumes (state `copying`) or a start that
/// is going to fail is not counted: those tables are carried at slot creation as before (a
/// `both` table's interrupted copy at a start that creates the reverse slot starts over
/// instead, see [`restart_interrupted_both_copies`], and is counted).
pub(super) async fn forward_fresh_copies(
    cfg: &SyncConfig,
    plan: &DirectionPlan,
    mapping: &Mapping,
    src: &Client,
    store: &mut PgCheckpointStore,
) -> Result<HashSet<String>, RunError> {
    let cp = store.load(&plan.pipeline).await?;
    let slot = source::slot_info(src, &plan.slot).await?;
    let all = || mapping.tables.iter().map(|t| t.to_table.clone()).collect();
    Ok(match (slot, cp) {
        (None, None) => all(),
        (None, Some(_)) => match cfg.replication.on_slot_lost {
            OnSlotLost::Stop => HashSet::new(),
            _ => all(),
        },
        (Some(s), Some(_)) if s.is_lost() => match cfg.replication.on_slot_lost {
            OnSlotLost::Stop => HashSet::new(),
            _ => all(),
        },
        (Some(_), None) => HashSet::new(),
        (Some(_), Some(_)) => {
            let states = store.tables(&plan.pipeline).await?;
            mapping
                .tables
                .iter()
                .filter(|t| states.get(&t.to_table).is_none_or(|s| s.state == SnapshotState::Pending))
                .map(|t| t.to_table.clone())
                .collect()
        }
    })
}

/// At a start that is going to create the reverse slot (no reverse slot nor checkpoint yet: a
/// forward-only pipeline turned `both`), a `both` table whose forward copy was interrupted
/// (state `copying`) starts its copy over instead of resuming it: its state is forgotten, so
/// [`forward_fresh_copies`] counts it and its copy empties it under the lock with the carry of
/// [`reverse_snapshot::CarryOnCopy`]. Resumed, it would have been carried at slot creation
/// instead, and a service delete or update of a carried row committed before the copy reached
/// it would have been undone by the copy (the rows it already copied are copied again).
pub(super) async fn restart_interrupted_both_copies(
    forward: &DirectionPlan,
    reverse: &DirectionPlan,
    mapping: &Mapping,
    tgt: &Client,
    tstore: &mut PgCheckpointStore,
    sstore: &mut PgCheckpointStore,
) -> Result<(), RunError> {
    if source::slot_info(tgt, &reverse.slot).await?.is_some() || sstore.load(&reverse.pipeline).await?.is_some() {
        return Ok(());
    }
    let states = tstore.tables(&forward.pipeline).await?;
    for t in mapping.tables.iter().filter(|t| t.lww) {
        if states.get(&t.to_table).is_some_and(|s| s.state == SnapshotState::Copying) {
            tstore.forget_table(&forward.pipeline, &t.to_table).await?;
            tracing::info!(table = %t.to_table,
                "the table now flows back and its interrupted copy starts over (the reverse slot is created at this start)");
        }
    }
    Ok(())
}

/// Prepare the reverse direction: publication and slot on the target, checkpoint in the source.
/// A new slot comes with the reverse snapshot (the target-only rows carried to legacy, except
/// those of the tables in `copied_forward`: their forward copy carries them, see
/// [`forward_fresh_copies`]) and the conflict horizons' start.
pub(super) async fn prepare_reverse(
    plan: &DirectionPlan,
    forward: &DirectionPlan,
    mapping: &Arc<Mapping>,
    tgt: &Client,
    src: &Client,
    store: &mut PgCheckpointStore,
    copied_forward: &HashSet<String>,
) -> Result<Lsn, RunError> {
    let name = &plan.pipeline;
    store.prepare().await?;
    source::ensure_publication(tgt, &plan.publication, &mapping.from_table_names()).await?;
    let cp = store.load(name).await?;
    let slot = source::slot_info(tgt, &plan.slot).await?;
    if let Some(cp) = &cp {
        // The reverse direction has no snapshot to fall back on: a lost slot always stops.
        let how = match &slot {
            None => Some(SlotLoss::Missing),
            Some(s) if s.is_lost() => Some(SlotLoss::Invalidated),
            Some(_) => None,
        };
        if let Some(how) = how {
            return Err(RunError::SlotLost(SlotLost {
                slot: plan.slot.clone(),
                pipeline: name.clone(),
                how,
                checkpoint: cp.lsn,
            }));
        }
    }
    match (slot, cp) {
        (None, _) => {
            store.reset(name).await?;
            let lsn = source::create_slot(tgt, &plan.slot).await?;
            tracing::info!(slot = %plan.slot, %lsn, "created reverse slot on the target");
            // before the checkpoint: a crash in between stops at the next start (slot without
            // checkpoint) rather than streaming without the carried rows
            let carry = Carry::NotFromForward {
                forward_origin: forward.origin.clone(),
                forward_pipeline: forward.pipeline.clone(),
            };
            let stamp = Stamp { origin: plan.origin.clone(), lsn };
            let carried = reverse_snapshot::carry_target_only_rows(
                mapping,
                &plan.from_conn,
                &plan.to_conn,
                &carry,
                Some(&stamp),
                copied_forward,
            )
            .await?;
            reverse_snapshot::init_horizons(tgt, src, &forward.pipeline, name, carried.at, false).await?;
            store.init(name, lsn).await?;
            Ok(lsn)
        }
        (Some(_), None) => {
            Err(RunError::ReverseSlotWithoutCheckpoint { slot: plan.slot.clone(), pipeline: name.clone() })
        }
        (Some(_), Some(c)) => {
            // a pipeline that ran before conflicts were detected has no horizons yet
            reverse_snapshot::init_horizons(tgt, src, &forward.pipeline, name, None, true).await?;
            Ok(c.lsn)
        }
    }
}

//! What `run` does before a direction streams, each step idempotent (run again after a
//! restart, a lost lock or a SIGHUP): the forward direction's publication, slot and copy of
//! unfinished tables; the reverse snapshot before a fresh pipeline's first copy; the reverse
//! direction's publication and slot, with the reverse snapshot and the conflict horizons when
//! its slot is created.

use std::collections::HashMap;
use std::sync::Arc;

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
use crate::source::snapshot::{copy_tables, SnapshotJob};
use crate::status::Metrics;

pub(super) async fn connect_to(conn: &str, what: &str) -> Result<Client, RunError> {
    connect(conn).await.map_err(|source| RunError::Connect { what: what.to_string(), source })
}

/// Prepare the forward direction: publication, slot, snapshot of unfinished tables. Returns the
/// checkpoint to stream from and each table's snapshot floor.
pub(super) async fn prepare_forward(
    cfg: &SyncConfig,
    plan: &DirectionPlan,
    mapping: &Arc<Mapping>,
    src: &Client,
    store: &mut PgCheckpointStore,
    metrics: &Arc<Metrics>,
) -> Result<(Lsn, Vec<Lsn>), RunError> {
    let r = &cfg.replication;
    let name = &plan.pipeline;
    store.prepare().await?;
    source::ensure_publication(src, &plan.publication, &mapping.from_table_names()).await?;
    let mut cp = store.load(name).await?;
    let mut slot = source::slot_info(src, &plan.slot).await?;
    let mut states: HashMap<String, TableSnapshot> = store.tables(name).await?;
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
    match (&slot, &cp) {
        (None, _) => {
            store.reset(name).await?;
            states.clear();
            let (conn, slot_name) = (plan.from_conn.clone(), plan.slot.clone());
            let e =
                tokio::task::spawn_blocking(move || source::create_slot_exporting(&conn, &slot_name, false)).await??;
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
                let (conn, slot_name) = (plan.from_conn.clone(), format!("{}_snap_{}", plan.slot, std::process::id()));
                tokio::task::spawn_blocking(move || source::create_slot_exporting(&conn, &slot_name, true)).await??
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

/// Before the forward direction is prepared: when it will copy for the first time (no slot, no
/// checkpoint) and some tables flow back, carry the target's rows that legacy lacks to legacy
/// first, since the forward copy replaces the target tables' contents (see
/// [`crate::reverse_snapshot`]).
pub(super) async fn carry_before_first_copy(
    plan: &DirectionPlan,
    reverse: &Arc<Mapping>,
    src: &Client,
    store: &mut PgCheckpointStore,
) -> Result<(), RunError> {
    store.prepare().await?;
    if store.load(&plan.pipeline).await?.is_some() || source::slot_info(src, &plan.slot).await?.is_some() {
        return Ok(());
    }
    let carried =
        reverse_snapshot::carry_target_only_rows(reverse, &plan.to_conn, &plan.from_conn, &Carry::All, None).await?;
    let rows: u64 = carried.rows.iter().map(|(_, n)| n).sum();
    tracing::info!(rows, "reverse snapshot: the target's rows that legacy lacked are in legacy before the first copy");
    Ok(())
}

/// Prepare the reverse direction: publication and slot on the target, checkpoint in the source.
/// A new slot comes with the reverse snapshot (the target-only rows carried to legacy) and the
/// conflict horizons' start.
pub(super) async fn prepare_reverse(
    plan: &DirectionPlan,
    forward: &DirectionPlan,
    mapping: &Arc<Mapping>,
    tgt: &Client,
    src: &Client,
    store: &mut PgCheckpointStore,
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
            let carried =
                reverse_snapshot::carry_target_only_rows(mapping, &plan.from_conn, &plan.to_conn, &carry, Some(&stamp))
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

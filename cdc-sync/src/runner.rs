//! `cdc-sync run`: take the single-instance lock, prepare each direction (publication, slot,
//! snapshot of unfinished tables), then stream until an error that needs a human. Each
//! direction resumes from its checkpoint after transient errors (capped, jittered exponential
//! backoff; [`crate::retry`]) and stops on data and schema errors or on a transient error that
//! keeps repeating; `/status` and the log then name the table, key, commit LSN, SQLSTATE and
//! message, and `run` returns an error (the process exits non-zero).
//!
//! Around that, a session loop keeps the process up through database restarts: when the
//! connection holding the instance lock is lost (the source restarted), streaming stops at once,
//! the lock is taken again after a backoff (standby if another instance was quicker), and the
//! pipeline is prepared again and resumes from its checkpoints; a setup step that fails on an
//! unavailable database (the target restarting while we start) is retried the same way.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio_postgres::Client;

use crate::apply::{PgSink, Pipeline, PipelineError, PipelineOptions};
use crate::catalog::{resolved_mapping, CatalogError};
use crate::checkpoint::{CheckpointError, CheckpointStore, PgCheckpointStore, SnapshotState, TableSnapshot};
use crate::config::{OnSlotLost, SyncConfig};
use crate::connect::connect;
use crate::error::{pg_kind, ErrorKind};
use crate::lock::{self, Attempt, Holder, InstanceLock, Waiting};
use crate::mapping::{Mapping, Way};
use crate::model::Lsn;
use crate::plan::{DirectionPlan, Plan};
use crate::retry::{Failure, Next, Retrier, RetryPolicy, StopReason};
use crate::source::snapshot::{copy_tables, SnapshotError, SnapshotJob};
use crate::source::{self, PgChangeStream, SourceError};
use crate::status::{self, ErrorReport, Metrics, Registry, SlotWalStatus};

/// How `run` runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Status HTTP listen address; overrides `[status] listen`.
    pub status_listen: Option<String>,
    /// Return [`RunError::AnotherInstance`] instead of waiting on standby.
    pub no_wait: bool,
    /// After a direction stops on an error, keep serving the status port this long (so
    /// `/status` shows why) before returning.
    pub linger_after_stop: Duration,
}

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
            RunError::Snapshot(e) => e.kind(),
            RunError::SlotLost(_)
            | RunError::SlotWithoutCheckpoint { .. }
            | RunError::ReverseSlotWithoutCheckpoint { .. } => ErrorKind::Slot,
            RunError::Stopped(s) => s.source.kind(),
            RunError::Bind { .. } | RunError::AnotherInstance(_) | RunError::Task(_) => ErrorKind::Other,
        }
    }

    /// When the session may be tried again (reconnect, prepare, resume from the checkpoints):
    /// the kind of a transient failure. `None`: it needs a human (or another instance is active
    /// and `--no-wait` was asked).
    pub fn retry_kind(&self) -> Option<ErrorKind> {
        match self {
            RunError::Bind { .. } | RunError::AnotherInstance(_) | RunError::Stopped(_) | RunError::Task(_) => None,
            e => Some(e.kind()).filter(|k| k.is_transient()),
        }
    }
}

async fn connect_to(conn: &str, what: &str) -> Result<Client, RunError> {
    connect(conn).await.map_err(|source| RunError::Connect { what: what.to_string(), source })
}

/// Prepare the forward direction: publication, slot, snapshot of unfinished tables. Returns the
/// checkpoint to stream from and each table's snapshot floor.
async fn prepare_forward(
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
            workers: r.snapshot_workers,
            chunk_pages: r.snapshot_chunk_pages,
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

/// Prepare the reverse direction: publication and slot on the target, checkpoint in the source.
async fn prepare_reverse(
    plan: &DirectionPlan,
    mapping: &Arc<Mapping>,
    tgt: &Client,
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
            store.init(name, lsn).await?;
            Ok(lsn)
        }
        (Some(_), None) => {
            Err(RunError::ReverseSlotWithoutCheckpoint { slot: plan.slot.clone(), pipeline: name.clone() })
        }
        (Some(_), Some(c)) => Ok(c.lsn),
    }
}

/// One attempt: connect the sink and the stream, resume from the checkpoint, apply until an
/// error.
async fn attempt(
    plan: &DirectionPlan,
    mapping: &Arc<Mapping>,
    floors: &[Lsn],
    metrics: &Arc<Metrics>,
    isolate_through: Option<Lsn>,
) -> Result<(), PipelineError> {
    let mut store = PgCheckpointStore::connect(&plan.to_conn).await?;
    let cp = store.load(&plan.pipeline).await?.map(|c| c.lsn).unwrap_or_default();
    let replay_until = store.replay_windows(&plan.pipeline, mapping).await?;
    let sink = PgSink::connect(&plan.to_conn, Arc::clone(mapping), &plan.pipeline, plan.applied_origin()).await?;
    let stream =
        PgChangeStream::start(&plan.from_conn, &plan.slot, &plan.publication, Some(cp).filter(|l| l.0 > 0)).await?;
    metrics.applied_lsn.fetch_max(cp.0, Relaxed);
    metrics.ready.store(true, Relaxed);
    metrics.set_state("streaming");
    match isolate_through {
        Some(l) => tracing::info!(direction = plan.label, checkpoint = %cp, through = %l,
            "streaming; applying source transactions up to the failed batch one change at a time to name the failing row"),
        None => {
            tracing::info!(direction = plan.label, checkpoint = %cp, skip_origins = ?plan.skip_origins.to_vec(), "streaming")
        }
    }
    Pipeline {
        stream,
        sink,
        mapping: Arc::clone(mapping),
        options: PipelineOptions {
            name: plan.pipeline.clone(),
            batch_rows: plan.batch_rows,
            max_batch_age: Duration::from_millis(500),
            skip_origins: plan.skip_origins.clone(),
            isolate_through,
        },
        checkpoint: cp,
        table_floor: floors.to_vec(),
        table_replay_until: replay_until,
        metrics: Arc::clone(metrics),
    }
    .run()
    .await
}

fn or_dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// One direction's streaming loop: after an error, resumes from the checkpoint as the
/// [`Retrier`] decides (backoff, or pinning the failing row), or stops with the report.
async fn stream_loop(
    plan: DirectionPlan,
    mapping: Arc<Mapping>,
    floors: Vec<Lsn>,
    metrics: Arc<Metrics>,
) -> Result<(), DirectionStopped> {
    let label = plan.label;
    let mut retrier = Retrier::new(RetryPolicy::default());
    let mut rng = rand::rngs::StdRng::from_entropy();
    *metrics.skip_origins.lock().expect("not poisoned") = plan.skip_origins.to_vec();
    loop {
        let applied_before = metrics.applied_lsn.load(Relaxed);
        let started = Instant::now();
        let e = match attempt(&plan, &mapping, &floors, &metrics, retrier.isolate_through()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        metrics.ready.store(false, Relaxed);
        let change = e.change();
        let failure = Failure {
            kind: e.kind(),
            pinned: change.is_some_and(|c| c.pinned()),
            up_to: change.and_then(|c| c.up_to),
            progressed: metrics.applied_lsn.load(Relaxed) > applied_before
                || started.elapsed() >= retrier.policy().healthy_after,
        };
        if matches!(e, PipelineError::Source(SourceError::SlotLost { .. })) {
            metrics.note_slot_lost(); // the monitor stops with the direction
        }
        let next = retrier.next(failure, &mut rng);
        let report = e.report(retrier.failures());
        match next {
            Next::Retry { delay } => {
                tracing::warn!(direction = label, kind = %report.kind, sqlstate = or_dash(&report.sqlstate),
                    table = or_dash(&report.table), key = or_dash(&report.key), commit_lsn = or_dash(&report.lsn),
                    attempt = report.attempts, retry_in_ms = delay.as_millis() as u64, error = %report.error,
                    "retrying: resuming from the checkpoint");
                metrics.note_retry(report);
                tokio::time::sleep(delay).await;
            }
            Next::Isolate { through } => {
                tracing::warn!(direction = label, kind = %report.kind, sqlstate = or_dash(&report.sqlstate),
                    table = or_dash(&report.table), through = %through, error = %report.error,
                    "a batch failed on the target; re-applying it one change at a time to name the failing row");
                metrics.note_retry(report);
            }
            Next::Stop(reason) => {
                tracing::error!(direction = label, kind = %report.kind, table = or_dash(&report.table),
                    key = or_dash(&report.key), commit_lsn = or_dash(&report.lsn), sqlstate = or_dash(&report.sqlstate),
                    message = %report.message, detail = or_dash(&report.detail), attempts = report.attempts,
                    "pipeline stopped: {}", report.error);
                metrics.note_stop(report.clone());
                return Err(DirectionStopped { direction: label, reason, report, source: e });
            }
        }
    }
}

/// How close a slot is to being invalidated by the server, from `wal_status` and `safe_wal_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotDanger {
    /// Fine, or `max_slot_wal_keep_size` is unlimited.
    None,
    /// More than 80 % of `max_slot_wal_keep_size` retained.
    Near,
    /// Past `max_slot_wal_keep_size`: lost at the next checkpoint unless it catches up.
    Unreserved,
    /// Invalidated.
    Lost,
}

/// The danger a slot is in (pure; logged by the monitor when it grows).
pub fn slot_danger(status: SlotWalStatus, retained_bytes: i64, safe_wal_bytes: Option<i64>) -> SlotDanger {
    match status {
        SlotWalStatus::Lost => SlotDanger::Lost,
        SlotWalStatus::Unreserved => SlotDanger::Unreserved,
        _ => match safe_wal_bytes {
            // retained / (retained + still safe) is the used share of max_slot_wal_keep_size
            Some(safe)
                if retained_bytes > 0 && retained_bytes as f64 >= 0.8 * (retained_bytes + safe.max(0)) as f64 =>
            {
                SlotDanger::Near
            }
            _ => SlotDanger::None,
        },
    }
}

/// Polls the read side once a second: its WAL position (lag), the WAL the slot retains (with a
/// warning over the threshold), the slot's `wal_status` and `safe_wal_size` (a warning past 80 %
/// of `max_slot_wal_keep_size`, an error past it and when the slot is invalidated), and the
/// recent apply rate.
async fn monitor(plan: DirectionPlan, metrics: Arc<Metrics>) {
    let (conn, slot, warn_mb) = (plan.from_conn, plan.slot, plan.retained_wal_warn_mb);
    let mut client: Option<Client> = None;
    let mut last_rows = metrics.rows_applied.load(Relaxed);
    let mut last_t = std::time::Instant::now();
    let mut warned = false;
    let mut last_danger = SlotDanger::None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rows = metrics.rows_applied.load(Relaxed);
        let dt = last_t.elapsed().as_secs_f64();
        metrics.rows_per_s_milli.store(((rows - last_rows) as f64 / dt * 1000.0) as u64, Relaxed);
        (last_rows, last_t) = (rows, std::time::Instant::now());
        if client.is_none() {
            client = connect(&conn).await.ok();
        }
        let Some(c) = &client else { continue };
        match c.query_one("SELECT pg_current_wal_lsn()::text", &[]).await {
            Ok(r) => {
                if let Some(l) = Lsn::parse(&r.get::<_, String>(0)) {
                    metrics.source_lsn.store(l.0, Relaxed);
                }
            }
            Err(_) => {
                client = None;
                continue;
            }
        }
        match source::slot_info(c, &slot).await {
            Ok(Some(s)) => {
                let status = SlotWalStatus::parse(s.wal_status.as_deref());
                metrics.note_slot(status, s.retained_bytes, s.safe_wal_bytes);
                let over = s.retained_bytes as u64 > warn_mb * 1024 * 1024;
                if over && !warned {
                    tracing::warn!(slot = %slot, retained_mb = s.retained_bytes / 1024 / 1024, threshold_mb = warn_mb,
                        "slot retains a lot of WAL; if cdc-sync is retired, run `cdc-sync drop` to release it");
                }
                warned = over;
                let danger = slot_danger(status, s.retained_bytes, s.safe_wal_bytes);
                if danger > last_danger {
                    let (retained_mb, safe_mb) = (s.retained_bytes >> 20, s.safe_wal_bytes.map(|b| b >> 20));
                    match danger {
                        SlotDanger::Lost => {
                            tracing::error!(slot = %slot, "the server invalidated the slot (wal_status = lost): it retained more than max_slot_wal_keep_size; the changes it held are gone")
                        }
                        SlotDanger::Unreserved => {
                            tracing::error!(slot = %slot, retained_mb, "slot is past max_slot_wal_keep_size (wal_status = unreserved): the next checkpoint invalidates it unless it catches up")
                        }
                        SlotDanger::Near => {
                            tracing::warn!(slot = %slot, retained_mb, safe_mb, "slot has used over 80% of max_slot_wal_keep_size; if it keeps falling behind the server will invalidate it")
                        }
                        SlotDanger::None => {}
                    }
                }
                last_danger = danger;
            }
            Ok(None) => metrics.note_slot(SlotWalStatus::Unknown, 0, None),
            Err(_) => client = None,
        }
    }
}

/// `run`: take the single-instance lock on the source (waiting on standby unless `no_wait`),
/// snapshot if needed, then stream (both directions when configured) until a direction stops.
/// Database restarts are waited out (see the module docs). The status port is served when
/// configured (`status_listen` wins), also on standby and while reconnecting, and for
/// `linger_after_stop` after a stop.
pub async fn run(cfg: SyncConfig, opts: RunOptions) -> Result<(), RunError> {
    let plan = Plan::new(&cfg);
    let fwd_metrics = Arc::new(Metrics::default());
    fwd_metrics.set_state("starting");
    let rev_metrics = Arc::new(Metrics::default());
    let mut reg: Registry = vec![("forward".into(), Arc::clone(&fwd_metrics))];
    if plan.bidirectional {
        rev_metrics.set_state("waiting for snapshot");
        reg.push(("reverse".into(), Arc::clone(&rev_metrics)));
    }
    let mut serving = false;
    if let Some(listen) = opts.status_listen.clone().or(cfg.status_listen.clone()) {
        let bind = |source| RunError::Bind { listen: listen.clone(), source };
        let l = tokio::net::TcpListener::bind(&listen).await.map_err(bind)?;
        tracing::info!(addr = %l.local_addr().map_err(bind)?, "status port");
        tokio::spawn(status::serve(l, reg.clone()));
        serving = true;
    }
    let key = lock::lock_key(&plan.forward.slot);
    let policy = RetryPolicy::default();
    // failed sessions in a row (lock lost, setup failed); a session that ran a while resets it
    let mut sessions = Retrier::new(policy);
    let mut rng = StdRng::from_entropy();
    'lock: loop {
        let mut instance = take_lock(&cfg, &plan, &opts, &reg, policy).await?;
        for (_, m) in &reg {
            m.standby.store(false, Relaxed);
            m.set_state("starting");
        }
        if plan.bidirectional {
            rev_metrics.set_state("waiting for snapshot");
        }
        tracing::info!(pipeline = %cfg.name, lock = %key, "took the instance lock on the source: active");
        loop {
            let started = Instant::now();
            let applied_before = applied(&reg);
            let ended = tokio::select! {
                r = run_active(&cfg, &plan, &fwd_metrics, &rev_metrics) => Ok(r),
                why = instance.lost() => Err(why),
            };
            // Whatever ended, `run_active` is gone: its tasks are aborted, nothing streams.
            let progressed = started.elapsed() >= policy.healthy_after || applied(&reg) > applied_before;
            let e = match ended {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(RunError::Stopped(stopped)))
                    if stopped.direction == "forward"
                        && stopped.source.kind() == ErrorKind::Slot
                        && cfg.replication.on_slot_lost == OnSlotLost::Resnapshot =>
                {
                    tracing::warn!(pipeline = %cfg.name, error = %stopped.report.error,
                        "the forward slot was lost while streaming; on_slot_lost = \"resnapshot\": preparing the pipeline again");
                    for (_, m) in &reg {
                        m.clear_stop();
                        m.set_state("starting");
                    }
                    continue;
                }
                Ok(Err(RunError::Stopped(stopped))) => {
                    linger_after_stop(&reg, stopped.direction, serving, opts.linger_after_stop).await;
                    return Err(RunError::Stopped(stopped));
                }
                Ok(Err(e)) if e.retry_kind().is_none() => {
                    // a setup step that needs a human (a lost slot, a mapping that does not fit):
                    // /status says so until we exit
                    if let RunError::SlotLost(l) = &e {
                        for (p, (_, m)) in plan.running().zip(&reg) {
                            if p.slot == l.slot && l.how == SlotLoss::Invalidated {
                                m.note_slot_lost();
                            }
                        }
                    }
                    let report = ErrorReport::of(e.kind(), &e, sessions.failures() + 1);
                    tracing::error!(pipeline = %cfg.name, kind = %report.kind, error = %report.error, "pipeline stopped");
                    for (_, m) in &reg {
                        m.note_stop(report.clone());
                    }
                    linger_after_stop(&reg, "setup", serving, opts.linger_after_stop).await;
                    return Err(e);
                }
                Ok(Err(e)) => e,
                Err(lost) => {
                    // another instance may take over from now on: we must not stream until the
                    // lock is ours again
                    drop(instance);
                    let failure = Failure { kind: ErrorKind::Connection, pinned: true, up_to: None, progressed };
                    let Next::Retry { delay } = sessions.next(failure, &mut rng) else {
                        unreachable!("an unavailable source is always waited out")
                    };
                    let report = ErrorReport::of(ErrorKind::Connection, &lost, sessions.failures());
                    tracing::warn!(pipeline = %cfg.name, error = %report.error, retry_in_ms = delay.as_millis() as u64,
                        "lost the instance lock: stopped streaming; taking the lock again (standby if another instance is quicker)");
                    for (_, m) in &reg {
                        m.note_reconnecting("lost the instance lock", report.clone(), delay);
                    }
                    tokio::time::sleep(delay).await;
                    continue 'lock;
                }
            };
            let Some(kind) = e.retry_kind() else { unreachable!("handled above") };
            let failure = Failure { kind, pinned: true, up_to: None, progressed };
            let delay = match sessions.next(failure, &mut rng) {
                Next::Retry { delay } => delay,
                Next::Isolate { .. } | Next::Stop(_) => return Err(e),
            };
            let report = ErrorReport::of(kind, &e, sessions.failures());
            tracing::warn!(pipeline = %cfg.name, kind = %kind, error = %report.error, retry_in_ms = delay.as_millis() as u64,
                "preparing the pipeline failed; trying again");
            for (_, m) in &reg {
                m.note_reconnecting("preparing the pipeline failed", report.clone(), delay);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                lost = instance.lost() => {
                    tracing::warn!(pipeline = %cfg.name, error = %crate::error::chain(&lost), "lost the instance lock while waiting to try again");
                    continue 'lock;
                }
            }
        }
    }
}

/// The sum of every direction's applied position (to tell whether a session made progress).
fn applied(reg: &Registry) -> u64 {
    reg.iter().map(|(_, m)| m.applied_lsn.load(Relaxed)).fold(0, u64::wrapping_add)
}

/// Take the instance lock: wait on standby while another instance holds it (unless `no_wait`:
/// then [`RunError::AnotherInstance`]), and wait out an unreachable source with capped backoff.
/// `/status` says which.
async fn take_lock(
    cfg: &SyncConfig,
    plan: &Plan,
    opts: &RunOptions,
    reg: &Registry,
    policy: RetryPolicy,
) -> Result<InstanceLock, RunError> {
    let (conn, slot) = (&plan.forward.from_conn, &plan.forward.slot);
    let key = lock::lock_key(slot);
    let unreachable = |error: &tokio_postgres::Error, attempts: u32, retry_in: Duration| {
        let kind = pg_kind(error);
        let report = ErrorReport::of(kind, error, attempts);
        tracing::warn!(pipeline = %cfg.name, error = %report.error, attempts, retry_in_ms = retry_in.as_millis() as u64,
            "cannot reach the source to take the instance lock; retrying");
        for (_, m) in reg {
            m.note_reconnecting("cannot reach the source to take the instance lock", report.clone(), retry_in);
        }
    };
    if !opts.no_wait {
        let poll = Duration::from_millis(500);
        return Ok(InstanceLock::acquire_waiting(conn, &cfg.name, slot, poll, policy, |w| match w {
            Waiting::Standby(h) => {
                for (_, m) in reg {
                    m.ready.store(false, Relaxed);
                    m.standby.store(true, Relaxed);
                    m.set_state(format!("standby: instance lock held by {h}"));
                }
                tracing::info!(pipeline = %cfg.name, lock = %key, holder = %h, "standby: another instance is active; waiting for the instance lock");
            }
            Waiting::Unreachable { error, attempts, retry_in } => unreachable(error, attempts, retry_in),
        })
        .await);
    }
    let mut rng = StdRng::from_entropy();
    let mut attempts = 0;
    loop {
        match InstanceLock::try_acquire(conn, &cfg.name, slot).await {
            Ok(Attempt::Acquired(l)) => return Ok(l),
            Ok(Attempt::Held(holder)) => {
                return Err(AnotherInstanceActive { pipeline: cfg.name.clone(), key, holder }.into())
            }
            Err(e) => {
                attempts += 1;
                let retry_in = policy.delay(attempts, &mut rng);
                unreachable(&e, attempts, retry_in);
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

/// After a direction (or the setup) stopped: every direction shows it, and the status port stays
/// up a while.
async fn linger_after_stop(reg: &Registry, what: &str, serving: bool, linger: Duration) {
    for (_, m) in reg {
        m.ready.store(false, Relaxed);
        if !m.stopped.load(Relaxed) {
            m.set_state(format!("stopped: the {what} direction stopped"));
        }
    }
    if serving && !linger.is_zero() {
        tracing::info!(seconds = linger.as_secs_f64(), "keeping the status port up before exiting");
        // the lock's connection is ours until we exit; nothing streams any more
        tokio::time::sleep(linger).await;
    }
}

async fn run_active(
    cfg: &SyncConfig,
    plan: &Plan,
    fwd_metrics: &Arc<Metrics>,
    rev_metrics: &Arc<Metrics>,
) -> Result<(), RunError> {
    let (fwd_plan, rev_plan) = (plan.forward.clone(), plan.reverse.clone());
    let src = connect_to(&fwd_plan.from_conn, &fwd_plan.from_label).await?;
    let tgt = connect_to(&fwd_plan.to_conn, &fwd_plan.to_label).await?;
    let fwd = Arc::new(resolved_mapping(cfg, Way::Forward, &src, &tgt, false).await?);
    let mut tstore = PgCheckpointStore::connect(&fwd_plan.to_conn).await?;
    let (_, floors) = prepare_forward(cfg, &fwd_plan, &fwd, &src, &mut tstore, fwd_metrics).await?;
    let mut tasks: tokio::task::JoinSet<Result<(), RunError>> = tokio::task::JoinSet::new();
    let (p, m) = (fwd_plan.clone(), Arc::clone(fwd_metrics));
    tasks.spawn(async move {
        monitor(p, m).await;
        Ok(())
    });
    if !fwd.tables.is_empty() {
        let (m, f) = (Arc::clone(fwd_metrics), Arc::clone(&fwd));
        tasks.spawn(async move { Ok(stream_loop(fwd_plan, f, floors, m).await.map_err(Box::new)?) });
    }
    if plan.bidirectional {
        let rev = Arc::new(resolved_mapping(cfg, Way::Reverse, &tgt, &src, false).await?);
        let mut sstore = PgCheckpointStore::connect(&rev_plan.to_conn).await?;
        prepare_reverse(&rev_plan, &rev, &tgt, &mut sstore).await?;
        let (p, m) = (rev_plan.clone(), Arc::clone(rev_metrics));
        tasks.spawn(async move {
            monitor(p, m).await;
            Ok(())
        });
        let floors = vec![Lsn(0); rev.tables.len()];
        let m = Arc::clone(rev_metrics);
        tasks.spawn(async move { Ok(stream_loop(rev_plan, rev, floors, m).await.map_err(Box::new)?) });
    }
    while let Some(res) = tasks.join_next().await {
        res??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_danger_grows_with_the_share_of_max_slot_wal_keep_size_used() {
        let mb = 1 << 20;
        // unlimited max_slot_wal_keep_size: no danger whatever is retained
        assert_eq!(slot_danger(SlotWalStatus::Extended, 5000 * mb, None), SlotDanger::None);
        assert_eq!(slot_danger(SlotWalStatus::Reserved, 70 * mb, Some(30 * mb)), SlotDanger::None);
        assert_eq!(slot_danger(SlotWalStatus::Reserved, 80 * mb, Some(20 * mb)), SlotDanger::Near);
        assert_eq!(slot_danger(SlotWalStatus::Extended, 95 * mb, Some(0)), SlotDanger::Near);
        assert_eq!(slot_danger(SlotWalStatus::Unreserved, 120 * mb, Some(-20 * mb)), SlotDanger::Unreserved);
        assert_eq!(slot_danger(SlotWalStatus::Lost, 0, None), SlotDanger::Lost);
        assert!(SlotDanger::Near < SlotDanger::Unreserved && SlotDanger::Unreserved < SlotDanger::Lost);
    }

    #[test]
    fn setup_failures_retry_only_when_transient() {
        let lost = RunError::SlotLost(SlotLost {
            slot: "s".into(),
            pipeline: "p".into(),
            how: SlotLoss::Invalidated,
            checkpoint: Lsn(1),
        });
        assert_eq!((lost.kind(), lost.retry_kind()), (ErrorKind::Slot, None));
        assert!(lost.to_string().contains("on_slot_lost = \"resnapshot\""), "{lost}");
        let stalled = RunError::Source(SourceError::WalSender(crate::source::walsender::WalSenderError::Closed));
        assert_eq!(stalled.retry_kind(), Some(ErrorKind::Connection));
        let missing = RunError::SlotWithoutCheckpoint { slot: "s".into(), pipeline: "p".into() };
        assert_eq!(missing.retry_kind(), None);
    }
}

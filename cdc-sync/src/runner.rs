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
//! unavailable database (the target restarting while we start) is retried the same way. A
//! SIGHUP ([`crate::reload`]) ends streaming the same way and prepares again with the re-read
//! sync.toml.
//!
//! The preparation steps are in `runner::prepare`, the reasons `run` ends in `runner::error`.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::apply::{ddl, PgSink, Pipeline, PipelineError, PipelineOptions};
use crate::catalog::resolved_mapping;
use crate::checkpoint::{CheckpointStore, PgCheckpointStore};
use crate::config::{OnSlotLost, SyncConfig};
use crate::error::{pg_kind, ErrorKind};
use crate::lock::{self, Attempt, GaveUp, InstanceLock, Waiting};
use crate::mapping::{Mapping, Way};
use crate::model::Lsn;
use crate::plan::{DirectionPlan, Plan};
use crate::reload;
use crate::retry::{Failure, Next, Retrier, RetryPolicy};
use crate::reverse_snapshot::CarryOnCopy;
use crate::schema::SchemaChange;
use crate::slot_watch::monitor;
pub use crate::slot_watch::{slot_danger, SlotDanger};
use crate::source::owned_copy::CarryBack;
use crate::source::{PgChangeStream, SourceError};
use crate::status::{self, ErrorReport, Metrics, Registry};
use rand::rngs::StdRng;
use rand::SeedableRng;

mod error;
mod prepare;

pub use error::{describe_endpoint, AnotherInstanceActive, DirectionStopped, LockFailed, RunError, SlotLoss, SlotLost};
use prepare::{
    connect_to, forget_unmapped, forward_fresh_copies, prepare_forward, prepare_reverse,
    restart_interrupted_both_copies,
};

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
    /// The sync.toml file, re-read on SIGHUP ([`crate::reload`]); `None`: not re-read.
    pub config_path: Option<std::path::PathBuf>,
}

/// One attempt: connect the sink and the stream, resume from the checkpoint, apply until an
/// error.
async fn attempt(
    plan: &DirectionPlan,
    mapping: &Arc<Mapping>,
    floors: &[Lsn],
    metrics: &Arc<Metrics>,
    isolate_through: Option<Lsn>,
    schema: (Option<Lsn>, Lsn),
) -> Result<(), PipelineError> {
    // the checkpoint and the sink's session are independent: set up side by side
    let checkpoint = async {
        let mut store = PgCheckpointStore::connect(&plan.to_conn).await?;
        let cp = store.load(&plan.pipeline).await?.map(|c| c.lsn).unwrap_or_default();
        let replay_until = store.replay_windows(&plan.pipeline, mapping).await?;
        Ok::<_, PipelineError>((cp, replay_until))
    };
    let sink = async {
        Ok::<_, PipelineError>(
            PgSink::connect(&plan.to_conn, Arc::clone(mapping), &plan.pipeline, plan.applied_origin(), plan.way)
                .await?,
        )
    };
    let ((cp, replay_until), sink) = tokio::try_join!(checkpoint, sink)?;
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
            echo_origin: plan.stamps_origin.then(|| plan.echo_origin.clone()),
            stop_before: schema.0,
            types_checked_after: schema.1,
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
///
/// A schema change seen in the stream ([`PipelineError::Schema`]) is first fenced: the next
/// attempt applies and checkpoints everything before the transaction that met it. Then new
/// columns of a propagating table are added, back-filled and mapped ([`ddl::reshape`]), and
/// streaming goes on; a dropped or retyped column stops, with the checkpoint right before it.
/// `interruptible` is false while the columns are added and back-filled (a SIGHUP waits).
async fn stream_loop(
    cfg: Arc<SyncConfig>,
    plan: DirectionPlan,
    mapping: Arc<Mapping>,
    floors: Vec<Lsn>,
    metrics: Arc<Metrics>,
    types_after: Lsn,
    interruptible: tokio::sync::watch::Sender<bool>,
) -> Result<(), DirectionStopped> {
    let label = plan.label;
    let mut retrier = Retrier::new(cfg.replication.retry);
    let mut rng = rand::rngs::StdRng::from_entropy();
    *metrics.skip_origins.lock().expect("not poisoned") = plan.skip_origins.to_vec();
    let (mut mapping, mut types_after) = (mapping, types_after);
    let mut fence: Option<Box<SchemaChange>> = None;
    let mut shapes = HashMap::new();
    loop {
        let applied_before = metrics.applied_lsn.load(Relaxed);
        let started = Instant::now();
        let schema = (fence.as_ref().map(|f| f.at()), types_after);
        let e = match attempt(&plan, &mapping, &floors, &metrics, retrier.isolate_through(), schema).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let e = match (e, fence.take()) {
            (PipelineError::Schema(change), None) => {
                tracing::info!(direction = label, table = %change.table(), commit_lsn = %change.at(),
                    "schema change seen in the stream; applying what precedes that transaction first: {change}");
                fence = Some(change);
                continue;
            }
            (PipelineError::Fenced(_), Some(change)) if matches!(*change, SchemaChange::Reshape { .. }) => {
                let SchemaChange::Reshape { table, columns, added, .. } = *change else { unreachable!("matched") };
                // adding a column and back-filling it are two transactions: a SIGHUP waits for both
                interruptible.send_replace(false);
                let reshaped =
                    ddl::reshape(&cfg, &plan, &mapping, &mut shapes, &table, columns, &added, &metrics).await;
                interruptible.send_replace(true);
                match reshaped {
                    Ok((m, at)) => {
                        tracing::info!(direction = label, table = %table, added = ?added, "mapped the table again after a change of its columns");
                        (mapping, types_after) = (Arc::new(m), at);
                        continue;
                    }
                    Err(e) => PipelineError::Reshape(e),
                }
            }
            // stop, with the checkpoint right before the transaction that met the change
            (PipelineError::Fenced(_), Some(change)) => PipelineError::Schema(change),
            (e, f) => {
                fence = f; // not there yet (a transient failure): fence again
                e
            }
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
                    message = %report.message, detail = or_dash(&report.detail), hint = or_dash(&report.hint), attempts = report.attempts,
                    "pipeline stopped: {}", report.error);
                metrics.note_stop(report.clone());
                return Err(DirectionStopped { direction: label, reason, report, source: e });
            }
        }
    }
}

/// `run`: take the single-instance lock on the source (waiting on standby unless `no_wait`),
/// snapshot if needed, then stream (both directions when configured) until a direction stops.
/// Database restarts are waited out (see the module docs). The status port is served when
/// configured (`status_listen` wins), also on standby and while reconnecting, and for
/// `linger_after_stop` after a stop.
pub async fn run(cfg: SyncConfig, opts: RunOptions) -> Result<(), RunError> {
    let mut cfg = cfg;
    let mut hangups = reload::Hangups::install(opts.config_path.clone());
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
    let policy = cfg.replication.retry;
    // failed sessions in a row (lock lost, setup failed); a session that ran a while resets it
    let mut sessions = Retrier::new(policy);
    let mut rng = StdRng::from_entropy();
    'lock: loop {
        let mut instance = match take_lock(&cfg, &plan, &opts, &reg, policy).await {
            Ok(l) => l,
            Err(RunError::Lock(l)) => {
                let report = ErrorReport::of(l.kind, &*l, l.attempts);
                tracing::error!(pipeline = %cfg.name, kind = %report.kind, error = %report.error,
                    "pipeline stopped: gave up taking the instance lock");
                for (_, m) in &reg {
                    m.note_stop(report.clone());
                }
                linger_after_stop(&reg, "setup", serving, opts.linger_after_stop).await;
                return Err(RunError::Lock(l));
            }
            Err(e) => return Err(e),
        };
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
            let mut reloaded = None;
            // A SIGHUP is acted on once both directions are prepared and while no direction is
            // adding columns: ending `run_active` in the middle of a step (e.g. between creating
            // the reverse slot and recording its checkpoint, around the reverse snapshot; between
            // adding a column and back-filling it) would leave a state the next start refuses or
            // does not repair. Until then the signal waits (tokio keeps it).
            let (interruptible_tx, mut interruptible) = tokio::sync::watch::channel(false);
            let reread = async {
                let _ = interruptible.wait_for(|p| *p).await;
                let new = hangups.next(&cfg, &reg).await;
                let _ = interruptible.wait_for(|p| *p).await;
                new
            };
            let ended = tokio::select! {
                r = run_active(&cfg, &plan, &fwd_metrics, &rev_metrics, &interruptible_tx) => Ok(r),
                why = instance.lost() => Err(why),
                new = reread => {
                    reloaded = Some(new);
                    Ok(Ok(()))
                }
            };
            if let Some(new) = reloaded {
                // streaming stopped (uncommitted work rolled back); prepare again with the new tables
                cfg = new;
                for (_, m) in &reg {
                    m.ready.store(false, Relaxed);
                    m.set_state("starting: sync.toml re-read (SIGHUP)");
                }
                continue;
            }
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
    let gave_up = |g: GaveUp| -> RunError {
        RunError::Lock(Box::new(LockFailed {
            endpoint: describe_endpoint(conn),
            origin: cfg.source.origin.clone(),
            kind: g.kind,
            attempts: g.attempts,
            source: g.error,
        }))
    };
    if !opts.no_wait {
        let poll = Duration::from_millis(500);
        return InstanceLock::acquire_waiting(conn, &cfg.name, slot, poll, policy, |w| match w {
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
        .await
        .map_err(gave_up);
    }
    let mut rng = StdRng::from_entropy();
    let mut retrier = Retrier::new(policy);
    loop {
        match InstanceLock::try_acquire(conn, &cfg.name, slot).await {
            Ok(Attempt::Acquired(l)) => return Ok(l),
            Ok(Attempt::Held(holder)) => {
                return Err(AnotherInstanceActive { pipeline: cfg.name.clone(), key, holder }.into())
            }
            Err(error) => {
                let kind = pg_kind(&error);
                let Some(retry_in) = lock::lock_retry(&mut retrier, kind, &mut rng) else {
                    return Err(gave_up(GaveUp { kind, attempts: retrier.failures(), error }));
                };
                unreachable(&error, retrier.failures(), retry_in);
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

/// One active session: resolve the mappings, prepare both directions (the reverse one first, so
/// that a table copied forward has the service's writes in the reverse stream; both prepared
/// before either streams), say so on
/// `interruptible` (a SIGHUP may end the session from then on, except while a direction adds
/// columns), then stream until a direction ends.
async fn run_active(
    cfg: &SyncConfig,
    plan: &Plan,
    fwd_metrics: &Arc<Metrics>,
    rev_metrics: &Arc<Metrics>,
    interruptible: &tokio::sync::watch::Sender<bool>,
) -> Result<(), RunError> {
    let (fwd_plan, rev_plan) = (plan.forward.clone(), plan.reverse.clone());
    let src = connect_to(&fwd_plan.from_conn, &fwd_plan.from_label).await?;
    let tgt = connect_to(&fwd_plan.to_conn, &fwd_plan.to_label).await?;
    // types in Relation messages are compared for transactions after the mappings were read
    let fwd_types_after = ddl::wal_position(&src).await.map_err(SourceError::from)?;
    // indexes an interrupted snapshot copy dropped are back before the mappings are checked
    crate::deferred_indexes::rebuild(&tgt, Some(&fwd_plan.pipeline), None, None)
        .await
        .map_err(crate::source::snapshot::SnapshotError::from)?;
    let fwd = Arc::new(resolved_mapping(cfg, Way::Forward, &src, &tgt, false).await?);
    let rev_types_after = match plan.bidirectional {
        true => ddl::wal_position(&tgt).await.map_err(SourceError::from)?,
        false => Lsn(0),
    };
    let rev = match plan.bidirectional {
        true => Some(Arc::new(resolved_mapping(cfg, Way::Reverse, &tgt, &src, false).await?)),
        false => None,
    };
    let mut tstore = PgCheckpointStore::connect(&fwd_plan.to_conn).await?;
    tstore.prepare().await?;
    // The reverse direction first: from its slot on, whatever the service writes is in the
    // reverse stream, also while a table is copied forward. Both directions are prepared before
    // either streams: the reverse snapshot and the conflict horizons must be in place before the
    // first change is applied.
    let mut sstore = match &rev {
        Some(rev) => {
            let mut sstore = PgCheckpointStore::connect(&rev_plan.to_conn).await?;
            sstore.prepare().await?;
            restart_interrupted_both_copies(&fwd_plan, &rev_plan, &fwd, &tgt, &mut tstore, &mut sstore).await?;
            let copied_forward = forward_fresh_copies(cfg, &fwd_plan, &fwd, &src, &mut tstore).await?;
            prepare_reverse(&rev_plan, &fwd_plan, rev, &tgt, &src, &mut sstore, &copied_forward).await?;
            Some(sstore)
        }
        None => None,
    };
    let carry = rev.as_ref().map(|rev| {
        Box::new(CarryOnCopy {
            reverse: Arc::clone(rev),
            legacy_conn: rev_plan.to_conn.clone(),
            forward_origin: fwd_plan.origin.clone(),
            reverse_origin: rev_plan.origin.clone(),
            reverse_pipeline: rev_plan.pipeline.clone(),
            forward_pipeline: fwd_plan.pipeline.clone(),
        }) as Box<dyn CarryBack>
    });
    let (_, floors) = prepare_forward(cfg, &fwd_plan, &fwd, &src, &mut tstore, fwd_metrics, carry).await?;
    // the reverse stream takes a table copied forward from the point its copy emptied it
    let rev_floors = match (&rev, &mut sstore) {
        (Some(rev), Some(sstore)) => {
            let states = forget_unmapped(sstore, &rev_plan.pipeline, rev).await?;
            rev.tables
                .iter()
                .map(|t| states.get(&t.to_table).and_then(|s| s.snapshot_lsn).unwrap_or_default())
                .collect()
        }
        _ => vec![],
    };
    interruptible.send_replace(true);
    let mut tasks: tokio::task::JoinSet<Result<(), RunError>> = tokio::task::JoinSet::new();
    let (p, m) = (fwd_plan.clone(), Arc::clone(fwd_metrics));
    tasks.spawn(async move {
        monitor(p, m).await;
        Ok(())
    });
    if !fwd.tables.is_empty() {
        let (m, f, c, i) = (Arc::clone(fwd_metrics), Arc::clone(&fwd), Arc::new(cfg.clone()), interruptible.clone());
        tasks.spawn(
            async move { Ok(stream_loop(c, fwd_plan, f, floors, m, fwd_types_after, i).await.map_err(Box::new)?) },
        );
    }
    if let Some(rev) = rev {
        let watched = vec![Arc::clone(fwd_metrics), Arc::clone(rev_metrics)];
        let (s, t, clock) = (plan.forward.from_conn.clone(), plan.forward.to_conn.clone(), cfg.clock);
        tasks.spawn(async move {
            crate::clock::watch(s, t, clock, watched).await;
            Ok(())
        });
        let (p, m) = (rev_plan.clone(), Arc::clone(rev_metrics));
        tasks.spawn(async move {
            monitor(p, m).await;
            Ok(())
        });
        let (m, c, i) = (Arc::clone(rev_metrics), Arc::new(cfg.clone()), interruptible.clone());
        tasks.spawn(async move {
            Ok(stream_loop(c, rev_plan, rev, rev_floors, m, rev_types_after, i).await.map_err(Box::new)?)
        });
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

//! Wiring for the CLI: `run` (snapshot if needed, then stream both ways), `check --connect`,
//! `verify`, `drop`, `status`.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio_postgres::Client;

use crate::apply::{PgSink, Pipeline, PipelineOptions};
use crate::catalog;
use crate::checkpoint::{CheckpointStore, PgCheckpointStore, SnapshotState, TableSnapshot};
use crate::config::SyncConfig;
use crate::connect::connect;
use crate::lock::{self, Attempt, InstanceLock};
use crate::mapping::{Mapping, Way};
use crate::model::Lsn;
use crate::plan::{DirectionPlan, Plan};
use crate::source::snapshot::{copy_tables, SnapshotJob};
use crate::source::{self, PgChangeStream};
use crate::status::{self, Metrics, Registry};
use crate::verify::{verify, VerifyReport};

/// A mapping compiled for `way` with types resolved against the live catalogs.
pub async fn resolved_mapping(
    cfg: &SyncConfig,
    way: Way,
    from: &Client,
    to: &Client,
    all: bool,
) -> anyhow::Result<Mapping> {
    let mut m = if all {
        Mapping::from_tables(cfg.tables.iter().map(|t| crate::mapping::DirectedTable::compile(t, way)).collect())
    } else {
        Mapping::compile(cfg, way)
    };
    let problems = catalog::resolve(&mut m, from, to).await?;
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|p| format!("sync.toml:{}: {}", p.line, p.message)).collect();
        bail!("{}", text.join("\n"));
    }
    Ok(Mapping::from_tables(m.tables))
}

/// `check --connect`: every problem found against the live catalogs (empty = fine).
pub async fn check_connect(cfg: &SyncConfig) -> anyhow::Result<Vec<String>> {
    let src =
        connect(&cfg.source.conn).await.with_context(|| format!("connecting to source ({})", cfg.source.origin))?;
    let tgt =
        connect(&cfg.target.conn).await.with_context(|| format!("connecting to target ({})", cfg.target.origin))?;
    let mut out = vec![];
    let wal: String = src.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal != "logical" {
        out.push(format!("source: wal_level is {wal}, needs logical"));
    }
    let mut m = Mapping::from_tables(
        cfg.tables.iter().map(|t| crate::mapping::DirectedTable::compile(t, Way::Forward)).collect(),
    );
    for p in catalog::resolve(&mut m, &src, &tgt).await? {
        out.push(format!("line {}: {}", p.line, p.message));
    }
    if cfg.has_reverse() {
        let wal: String = tgt.query_one("SHOW wal_level", &[]).await?.get(0);
        if wal != "logical" {
            out.push(format!("target: wal_level is {wal}, needs logical for the reverse direction"));
        }
        let mut r = Mapping::compile(cfg, Way::Reverse);
        for p in catalog::resolve(&mut r, &tgt, &src).await? {
            out.push(format!("line {} (reverse): {}", p.line, p.message));
        }
        let ts: String = tgt.query_one("SHOW track_commit_timestamp", &[]).await?.get(0);
        let ts2: String = src.query_one("SHOW track_commit_timestamp", &[]).await?.get(0);
        if ts != "on" || ts2 != "on" {
            out.push("track_commit_timestamp must be on at both sides for last-writer-wins".into());
        }
    }
    // expressions: let PostgreSQL parse them
    for t in &m.tables {
        for (o, out_col) in t.outputs.iter().enumerate() {
            if matches!(out_col.value, crate::mapping::OutputValue::Input(_)) || t.output_types.len() <= o {
                continue;
            }
            let sql = format!(
                "EXPLAIN SELECT {}::{} FROM {}",
                crate::source::snapshot::source_value(t, o),
                t.output_types[o],
                crate::model::quote_qualified(&t.from_table)
            );
            if let Err(e) = src.batch_execute(&sql).await {
                out.push(format!(
                    "line {}: column {}: expression does not work on the source: {}",
                    t.line,
                    out_col.column,
                    db_msg(&e)
                ));
            }
        }
    }
    Ok(out)
}

fn db_msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}

/// `verify`: compare all mapped tables.
pub async fn run_verify(cfg: &SyncConfig, chunk_rows: i64) -> anyhow::Result<VerifyReport> {
    let src = connect(&cfg.source.conn).await.context("connecting to source")?;
    let tgt = connect(&cfg.target.conn).await.context("connecting to target")?;
    let m = resolved_mapping(cfg, Way::Forward, &src, &tgt, true).await?;
    Ok(verify(&m, &src, &tgt, chunk_rows).await?)
}

/// `drop`: remove slots, publications and origins (and with `purge`, the state schema).
pub async fn run_drop(cfg: &SyncConfig, purge: bool) -> anyhow::Result<()> {
    let src = connect(&cfg.source.conn).await.context("connecting to source")?;
    let tgt = connect(&cfg.target.conn).await.context("connecting to target")?;
    let plan = Plan::new(cfg);
    let (f, r) = (&plan.forward, &plan.reverse);
    if source::drop_slot(&src, &f.slot).await? {
        println!("dropped slot {} on source", f.slot);
    }
    source::drop_publication(&src, &f.publication).await?;
    source::drop_origin(&tgt, &f.origin).await?;
    if source::drop_slot(&tgt, &r.slot).await? {
        println!("dropped slot {} on target", r.slot);
    }
    source::drop_publication(&tgt, &r.publication).await?;
    source::drop_origin(&src, &r.origin).await?;
    for mut store in [PgCheckpointStore { client: src }, PgCheckpointStore { client: tgt }] {
        if purge {
            store.purge().await?;
        } else if store.is_prepared().await? {
            for p in [&f.pipeline, &r.pipeline] {
                store.reset(p).await?;
            }
        }
    }
    println!("dropped publications, origins and checkpoints of pipeline {}", cfg.name);
    Ok(())
}

/// `status`: slots, checkpoints and snapshot state, from the databases.
pub async fn run_status(cfg: &SyncConfig) -> anyhow::Result<serde_json::Value> {
    let src = connect(&cfg.source.conn).await.context("connecting to source")?;
    let tgt = connect(&cfg.target.conn).await.context("connecting to target")?;
    let slot = |c: Client, name: String| async move {
        let s = source::slot_info(&c, &name).await?;
        Ok::<_, anyhow::Error>(s.map(|s| {
            serde_json::json!({"slot": name, "active": s.active, "confirmed_flush": s.confirmed_flush.map(|l| l.to_string()), "retained_wal_bytes": s.retained_bytes})
        }))
    };
    let plan = Plan::new(cfg);
    let mut out = serde_json::json!({
        "forward_slot": slot(src, plan.forward.slot.clone()).await?,
        "reverse_slot": slot(tgt, plan.reverse.slot.clone()).await?,
    });
    let mut tstore = PgCheckpointStore::connect(&plan.forward.to_conn).await?;
    if tstore.is_prepared().await? {
        let cp = tstore.load(&plan.forward.pipeline).await?;
        out["forward_checkpoint"] =
            serde_json::json!(cp.map(|c| serde_json::json!({"lsn": c.lsn.to_string(), "txns": c.txns})));
        let tables = tstore.tables(&plan.forward.pipeline).await?;
        out["snapshot"] = serde_json::json!(tables
            .iter()
            .map(|(t, s)| (t.clone(), serde_json::json!({"state": s.state.as_str(), "rows": s.rows})))
            .collect::<serde_json::Map<_, _>>());
    }
    Ok(out)
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
) -> anyhow::Result<(Lsn, Vec<Lsn>)> {
    let r = &cfg.replication;
    let name = &plan.pipeline;
    store.prepare().await?;
    source::ensure_publication(src, &plan.publication, &mapping.from_table_names()).await?;
    let mut cp = store.load(name).await?;
    let slot = source::slot_info(src, &plan.slot).await?;
    let mut states: HashMap<String, TableSnapshot> = store.tables(name).await?;
    let mut exported = None;
    match (&slot, &cp) {
        (None, _) => {
            if cp.is_some() {
                tracing::warn!(slot = %plan.slot, "slot is gone but a checkpoint exists: changes since then are lost at the source; doing a full re-snapshot");
            }
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
        (Some(_), None) => bail!(
            "slot {} exists on the source but the target has no checkpoint for pipeline {}; \
             if it is a leftover, run `cdc-sync drop` and start again",
            plan.slot,
            name
        ),
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
) -> anyhow::Result<Lsn> {
    let name = &plan.pipeline;
    store.prepare().await?;
    source::ensure_publication(tgt, &plan.publication, &mapping.from_table_names()).await?;
    let cp = store.load(name).await?;
    match (source::slot_info(tgt, &plan.slot).await?, cp) {
        (None, _) => {
            store.reset(name).await?;
            let lsn = source::create_slot(tgt, &plan.slot).await?;
            tracing::info!(slot = %plan.slot, %lsn, "created reverse slot on the target");
            store.init(name, lsn).await?;
            Ok(lsn)
        }
        (Some(_), None) => {
            bail!("reverse slot {} exists but the source has no checkpoint for {name}; run `cdc-sync drop`", plan.slot)
        }
        (Some(_), Some(c)) => Ok(c.lsn),
    }
}

/// One direction's streaming loop: reconnects and resumes from the checkpoint on retryable
/// errors, returns on fatal ones.
async fn stream_loop(
    plan: DirectionPlan,
    mapping: Arc<Mapping>,
    floors: Vec<Lsn>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let label = plan.label;
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut store = PgCheckpointStore::connect(&plan.to_conn).await?;
            let cp = store.load(&plan.pipeline).await?.map(|c| c.lsn).unwrap_or_default();
            let sink =
                PgSink::connect(&plan.to_conn, Arc::clone(&mapping), &plan.pipeline, plan.applied_origin()).await?;
            let stream =
                PgChangeStream::start(&plan.from_conn, &plan.slot, &plan.publication, Some(cp).filter(|l| l.0 > 0))
                    .await?;
            metrics.applied_lsn.fetch_max(cp.0, Relaxed);
            metrics.ready.store(true, Relaxed);
            metrics.set_state("streaming");
            *metrics.skip_origins.lock().expect("not poisoned") = plan.skip_origins.to_vec();
            tracing::info!(direction = label, checkpoint = %cp, skip_origins = ?plan.skip_origins.to_vec(), "streaming");
            Pipeline {
                stream,
                sink,
                mapping: Arc::clone(&mapping),
                options: PipelineOptions {
                    name: plan.pipeline.clone(),
                    batch_rows: plan.batch_rows,
                    max_batch_age: Duration::from_millis(500),
                    skip_origins: plan.skip_origins.clone(),
                },
                checkpoint: cp,
                table_floor: floors.clone(),
                metrics: Arc::clone(&metrics),
            }
            .run()
            .await
        }
        .await;
        let e = match attempt {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        metrics.ready.store(false, Relaxed);
        if e.is_fatal() {
            metrics.set_state(format!("stopped: {e}"));
            tracing::error!(direction = label, error = %e, "pipeline stopped");
            return Err(anyhow::Error::new(e).context(format!("{label} pipeline stopped")));
        }
        metrics.set_state(format!("retrying: {e}"));
        tracing::warn!(direction = label, error = %e, "pipeline error, resuming from checkpoint");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Polls the read side once a second: its WAL position (lag), the WAL the slot retains (with a
/// warning over the threshold), and the recent apply rate.
async fn monitor(plan: DirectionPlan, metrics: Arc<Metrics>) {
    let (conn, slot, warn_mb) = (plan.from_conn, plan.slot, plan.retained_wal_warn_mb);
    let mut client: Option<Client> = None;
    let mut last_rows = metrics.rows_applied.load(Relaxed);
    let mut last_t = std::time::Instant::now();
    let mut warned = false;
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
        if let Ok(Some(s)) = source::slot_info(c, &slot).await {
            metrics.retained_wal_bytes.store(s.retained_bytes, Relaxed);
            let over = s.retained_bytes as u64 > warn_mb * 1024 * 1024;
            if over && !warned {
                tracing::warn!(slot = %slot, retained_mb = s.retained_bytes / 1024 / 1024, threshold_mb = warn_mb,
                    "slot retains a lot of WAL; if cdc-sync is retired, run `cdc-sync drop` to release it");
            }
            warned = over;
        }
    }
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
    pub holder: crate::lock::Holder,
}

/// `run`: take the single-instance lock on the source (waiting on standby unless `no_wait`),
/// snapshot if needed, then stream (both directions when configured) until a fatal error or
/// the loss of the lock's connection. The status port is served when configured
/// (`status_override` wins), also on standby.
pub async fn run(cfg: SyncConfig, status_override: Option<String>, no_wait: bool) -> anyhow::Result<()> {
    let plan = Plan::new(&cfg);
    let fwd_metrics = Arc::new(Metrics::default());
    fwd_metrics.set_state("starting");
    let rev_metrics = Arc::new(Metrics::default());
    let mut reg: Registry = vec![("forward".into(), Arc::clone(&fwd_metrics))];
    if plan.bidirectional {
        rev_metrics.set_state("waiting for snapshot");
        reg.push(("reverse".into(), Arc::clone(&rev_metrics)));
    }
    if let Some(listen) = status_override.or(cfg.status_listen.clone()) {
        let l =
            tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding status port {listen}"))?;
        tracing::info!(addr = %l.local_addr()?, "status port");
        tokio::spawn(status::serve(l, reg.clone()));
    }
    let slot = &plan.forward.slot;
    let key = lock::lock_key(slot);
    let mut instance = if no_wait {
        match InstanceLock::try_acquire(&plan.forward.from_conn, &cfg.name, slot)
            .await
            .with_context(|| format!("taking the instance lock on the {}", plan.forward.from_label))?
        {
            Attempt::Acquired(l) => l,
            Attempt::Held(holder) => {
                return Err(AnotherInstanceActive { pipeline: cfg.name.clone(), key, holder }.into())
            }
        }
    } else {
        InstanceLock::acquire_waiting(&plan.forward.from_conn, &cfg.name, slot, Duration::from_millis(500), |h| {
            for (_, m) in &reg {
                m.standby.store(true, Relaxed);
                m.set_state(format!("standby: instance lock held by {h}"));
            }
            tracing::info!(pipeline = %cfg.name, lock = %key, holder = %h, "standby: another instance is active; waiting for the instance lock");
        })
        .await
    };
    for (_, m) in &reg {
        m.standby.store(false, Relaxed);
        m.set_state("starting");
    }
    if plan.bidirectional {
        rev_metrics.set_state("waiting for snapshot");
    }
    tracing::info!(pipeline = %cfg.name, lock = %key, "took the instance lock on the source: active");
    tokio::select! {
        r = run_active(&cfg, &plan, &fwd_metrics, &rev_metrics) => r,
        _ = instance.lost() => {
            for (_, m) in &reg {
                m.ready.store(false, Relaxed);
                m.set_state("stopped: lost the instance lock");
            }
            bail!("lost the source connection holding the instance lock; stopping so that another instance can take over safely")
        }
    }
}

async fn run_active(
    cfg: &SyncConfig,
    plan: &Plan,
    fwd_metrics: &Arc<Metrics>,
    rev_metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let (fwd_plan, rev_plan) = (plan.forward.clone(), plan.reverse.clone());
    let src = connect(&fwd_plan.from_conn).await.with_context(|| format!("connecting to {}", fwd_plan.from_label))?;
    let tgt = connect(&fwd_plan.to_conn).await.with_context(|| format!("connecting to {}", fwd_plan.to_label))?;
    let fwd = Arc::new(resolved_mapping(cfg, Way::Forward, &src, &tgt, false).await?);
    let mut tstore = PgCheckpointStore::connect(&fwd_plan.to_conn).await?;
    let (_, floors) = prepare_forward(cfg, &fwd_plan, &fwd, &src, &mut tstore, fwd_metrics).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(monitor(fwd_plan.clone(), Arc::clone(fwd_metrics)).map_unit());
    if !fwd.tables.is_empty() {
        tasks.spawn(stream_loop(fwd_plan, Arc::clone(&fwd), floors, Arc::clone(fwd_metrics)));
    }
    if plan.bidirectional {
        let rev = Arc::new(resolved_mapping(cfg, Way::Reverse, &tgt, &src, false).await?);
        let mut sstore = PgCheckpointStore::connect(&rev_plan.to_conn).await?;
        prepare_reverse(&rev_plan, &rev, &tgt, &mut sstore).await?;
        tasks.spawn(monitor(rev_plan.clone(), Arc::clone(rev_metrics)).map_unit());
        let floors = vec![Lsn(0); rev.tables.len()];
        tasks.spawn(stream_loop(rev_plan, Arc::clone(&rev), floors, Arc::clone(rev_metrics)));
    }
    while let Some(res) = tasks.join_next().await {
        res??;
    }
    Ok(())
}

trait MapUnit {
    fn map_unit(self) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

impl<F: std::future::Future<Output = ()> + Send> MapUnit for F {
    async fn map_unit(self) -> anyhow::Result<()> {
        self.await;
        Ok(())
    }
}

//! Initial copy under an exported snapshot: per table, chunks copied in parallel by
//! `snapshot_workers` connections with `COPY (SELECT mapped columns ...) TO STDOUT` →
//! `COPY target FROM STDIN` (binary when the columns allow it, [`binary_copy`]; text
//! otherwise), the target's indexes built after the copy where that is safe
//! ([`crate::deferred_indexes`]).
//!
//! Chunks are ranges of the table's key when the source has an index on it, ctid ranges
//! otherwise ([`super::chunks`]). A table is `done` only after all its chunks committed. A crash
//! leaves it `copying`: a key-range table then continues with the chunks its stored plan does
//! not mark done, under a fresh snapshot, keeping its first snapshot as its stream floor (the
//! argument is in [`super::chunks`]); a ctid-range table is truncated and copied again under the
//! fresh snapshot (the runner decides which tables to copy).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::chunks::{self, KeyRange};
use super::copy_relay::{RelayError, SourceSession};
use super::owned_copy::{CarryBackError, OwnedCopy};
use crate::checkpoint::{CheckpointError, CheckpointStore, SnapshotState, TableSnapshot};
use crate::connect::connect;
use crate::error::{pg_kind, ErrorKind};
use crate::mapping::{DirectedTable, Mapping, OutputValue};
use crate::model::{quote_ident, quote_literal, quote_qualified, Lsn};
use crate::status::Metrics;

/// Snapshot failures (all retryable by restarting: unfinished tables are re-copied).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// SQL on either side.
    #[error("snapshot")]
    Sql(#[from] tokio_postgres::Error),
    /// Recording a table's state failed.
    #[error("snapshot")]
    Checkpoint(#[from] CheckpointError),
    /// A worker panicked.
    #[error("snapshot worker")]
    Worker(#[from] tokio::task::JoinError),
    /// Carrying a `both` table's rows back before its copy failed.
    #[error("snapshot")]
    CarryBack(#[from] CarryBackError),
    /// Building an index after the copy failed.
    #[error(transparent)]
    Indexes(#[from] crate::deferred_indexes::DeferredIndexError),
    /// Relaying a chunk from the source to the target failed.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// The workers ended before every table was copied.
    #[error("snapshot incomplete: {done} of {total} tables copied")]
    Incomplete {
        /// Tables finished.
        done: usize,
        /// Tables to copy.
        total: usize,
    },
}

impl SnapshotError {
    /// By the failure underneath; a copy that ended early is retried (unfinished tables are
    /// copied again).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::Sql(e) => pg_kind(e),
            SnapshotError::Checkpoint(e) => e.kind(),
            SnapshotError::CarryBack(e) => e.kind,
            SnapshotError::Indexes(e) => pg_kind(&e.source),
            SnapshotError::Relay(e) => e.kind(),
            SnapshotError::Worker(_) | SnapshotError::Incomplete { .. } => ErrorKind::Other,
        }
    }
}

/// What to copy and how.
pub struct SnapshotJob {
    /// Pipeline name (state key).
    pub pipeline: String,
    /// Compiled mapping (types resolved).
    pub mapping: Arc<Mapping>,
    /// Mapping indexes to copy.
    pub tables: Vec<usize>,
    /// Source connection string.
    pub source: String,
    /// Target connection string.
    pub target: String,
    /// Exported snapshot name.
    pub snapshot: String,
    /// The snapshot's consistent point.
    pub lsn: Lsn,
    /// The checkpoint the stream resumes from once the copy is done. A stored chunk plan is
    /// resumed only when its snapshot is not before it: the resume needs the stream to bring
    /// every change of the table committed after the plan's snapshot (see
    /// [`super::chunks`]). A plan older than the checkpoint (the table left the mapping after
    /// a crash mid-copy while the stream went on, and was added again) is dropped and the table
    /// copied afresh.
    pub stream_from: Lsn,
    /// Parallel workers.
    pub workers: usize,
    /// Heap pages per chunk.
    pub chunk_pages: u32,
    /// Progress counters.
    pub metrics: Arc<Metrics>,
    /// When some tables also flow back: how the copy writes into them
    /// ([`super::owned_copy`]).
    pub owned: Option<Arc<OwnedCopy>>,
    /// Build a table's indexes after its copy when that is safe ([`crate::deferred_indexes`]).
    pub defer_indexes: bool,
}

/// The source-side SQL computing output `o` of `t`.
pub fn source_value(t: &DirectedTable, o: usize) -> String {
    match &t.outputs[o].value {
        OutputValue::Input(i) => quote_ident(&t.inputs[*i]),
        OutputValue::Expr { sql, .. } | OutputValue::Const(sql) => format!("({sql})"),
    }
}

/// The `SELECT` list computing the target columns on the source side.
pub fn source_select_list(t: &DirectedTable) -> String {
    (0..t.outputs.len()).map(|o| source_value(t, o)).collect::<Vec<_>>().join(", ")
}

/// Is `t` copied in binary (`COPY ... (FORMAT binary)` on both sides)? When every target
/// column is a plain source column of the same type (same `format_type`, so the same typmod)
/// and a built-in one (OID below 10000, whose binary send/receive formats PostgreSQL keeps
/// stable) whose binary form means the same in the target database ([`NOT_BINARY_SAFE`]):
/// then no value is printed as text at the source and parsed again at the target (the
/// target's COPY of the bench's `accounts` rows takes about a sixth less CPU). Anything else
/// (an expression, a cast between types, a user-defined type or enum, a `reg*` type) is copied
/// as text, where the target's input function does the conversion as before.
pub fn binary_copy(t: &DirectedTable) -> bool {
    t.outputs.iter().enumerate().all(|(o, out)| match out.value {
        OutputValue::Input(i) => {
            t.input_types.get(i).is_some_and(|ty| Some(ty) == t.output_types.get(o))
                && t.input_oids.get(i).is_some_and(|oid| *oid != 0 && *oid < 10_000 && !NOT_BINARY_SAFE.contains(oid))
        }
        _ => false,
    })
}

/// Built-in types (PostgreSQL 15's catalog) that a binary copy would get wrong, with their
/// array types: the `reg*` types send the OID of the object they name, which in the target
/// database names another object or none (their text form is the name, resolved again at the
/// target); `aclitem` and `gtsvector` have no binary format at all (a binary COPY of them fails).
pub const NOT_BINARY_SAFE: &[u32] = &[
    24, 1008, // regproc
    2202, 2207, // regprocedure
    2203, 2208, // regoper
    2204, 2209, // regoperator
    2205, 2210, // regclass
    2206, 2211, // regtype
    3734, 3735, // regconfig
    3769, 3770, // regdictionary
    4089, 4090, // regnamespace
    4096, 4097, // regrole
    4191, 4192, // regcollation
    1033, 1034, // aclitem
    3642, 3644, // gtsvector
];

#[derive(Debug, Clone)]
struct Chunk {
    table: usize,
    /// ctid range (pages `lo..hi`), used when `key` is `None`.
    lo: u64,
    hi: Option<u64>,
    /// A key range of the table's stored plan.
    key: Option<KeyRange>,
}

enum Event {
    ChunkDone { table: usize, rows: u64 },
}

/// Chunks waiting for a worker: planning sends a table's chunks as soon as its copy is started
/// (the workers copy the first tables while the others are planned); closed when planning ends.
type ChunkQueue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Chunk>>>;

/// Copy `job.tables`, recording state in `store`. Returns rows copied per table.
///
/// Tables are planned and copied biggest first: a table's indexes are built as soon as its own
/// chunks are in ([`table_done`]) while the workers go on with the smaller tables, so the build
/// left after the last chunk is that of a small table.
pub async fn copy_tables<C: CheckpointStore>(
    job: SnapshotJob,
    store: &mut C,
) -> Result<HashMap<usize, u64>, SnapshotError> {
    let (target, planner) = tokio::try_join!(connect(&job.target), connect(&job.source))?;
    planner
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&job.snapshot)
        ))
        .await?;
    let mut remaining: HashMap<usize, usize> = HashMap::new();
    // per table: its stream floor (first snapshot of an interrupted copy) and rows already in
    let mut floor: HashMap<usize, Lsn> = HashMap::new();
    let mut copied: HashMap<usize, u64> = HashMap::new();
    let mut estimate = 0u64;
    let step = job.chunk_pages as u64;
    // sizes first: the order of the copy, and how many workers there is work for
    let mut sized = Vec::with_capacity(job.tables.len());
    for &ti in &job.tables {
        let t = &job.mapping.tables[ti];
        let r = planner
            .query_one(
                "SELECT (pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint)::bigint, \
                 GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
                &[&quote_qualified(&t.from_table)],
            )
            .await?;
        estimate += r.get::<_, i64>(1) as u64;
        sized.push((ti, r.get::<_, i64>(0).max(0) as u64));
    }
    sized.sort_by_key(|(_, pages)| std::cmp::Reverse(*pages));
    let chunk_bound: u64 = sized.iter().map(|(_, pages)| pages.div_ceil(step).max(1)).sum();
    job.metrics.snapshot_rows_estimate.store(estimate, Relaxed);
    job.metrics.snapshot_tables_total.store(job.tables.len() as u64, Relaxed);
    job.metrics.snapshot_tables_done.store(0, Relaxed);
    job.metrics.snapshot_rows.store(0, Relaxed);
    job.metrics.snapshot_finished_us.store(0, Relaxed);
    job.metrics.snapshot_started_us.store(chrono::Utc::now().timestamp_micros(), Relaxed);
    let started = Instant::now();

    // the workers connect and import the snapshot while the tables are planned; aborted (their
    // open chunk rolled back) when this function returns early
    let (chunk_tx, chunk_rx) = mpsc::unbounded_channel::<Chunk>();
    let queue: ChunkQueue = Arc::new(tokio::sync::Mutex::new(chunk_rx));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Event, SnapshotError>>();
    let workers = job.workers.min(chunk_bound as usize).max(1);
    let mut handles = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let queue = Arc::clone(&queue);
        let tx = tx.clone();
        let mapping = Arc::clone(&job.mapping);
        let (source, target, snapshot) = (job.source.clone(), job.target.clone(), job.snapshot.clone());
        let metrics = Arc::clone(&job.metrics);
        let (pipeline, lsn, owned) = (job.pipeline.clone(), job.lsn, job.owned.clone());
        handles.spawn(async move {
            let ctx = WorkerCtx {
                pipeline: &pipeline,
                lsn,
                source: &source,
                target: &target,
                snapshot: &snapshot,
                owned: owned.as_deref(),
            };
            let r = worker(queue, &tx, mapping, ctx, metrics).await;
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
        });
    }
    drop(tx);

    let mut total_chunks = 0usize;
    let states = store.tables(&job.pipeline).await?;
    for (ti, pages) in sized {
        let t = &job.mapping.tables[ti];
        let mut chunks = Vec::new();
        // only a copy that was under way resumes (a table set back to pending starts afresh)
        let copying = states.get(&t.to_table).is_some_and(|s| s.state == SnapshotState::Copying);
        let mut stored = if copying { chunks::load_plan(&target, &job.pipeline, &t.to_table).await? } else { None };
        if let Some(plan) = stored.take_if(|p| p.plan_lsn < job.stream_from) {
            tracing::warn!(table = %t.to_table, first_snapshot = %plan.plan_lsn, checkpoint = %job.stream_from,
                "snapshot: the table's interrupted copy is older than the checkpoint (the stream went on without it): copying it afresh");
        }
        if let Some(plan) = stored {
            // an interrupted key-range copy: continue with the chunks not done
            tracing::info!(table = %t.to_table, chunks_done = plan.done, chunks_left = plan.todo.len(),
                rows_done = plan.done_rows, first_snapshot = %plan.plan_lsn, snapshot = %job.lsn,
                "snapshot: resuming the table's copy from its last finished chunk");
            let state = TableSnapshot {
                state: SnapshotState::Copying,
                snapshot_lsn: Some(plan.plan_lsn),
                rows: plan.done_rows as i64,
            };
            store.set_table(&job.pipeline, &t.to_table, &state).await?;
            floor.insert(ti, plan.plan_lsn);
            copied.insert(ti, plan.done_rows);
            // rows of chunks finished before a restart count as copied (progress and ETA stay right)
            job.metrics.snapshot_rows.fetch_add(plan.done_rows, Relaxed);
            remaining.insert(ti, plan.todo.len());
            chunks.extend(plan.todo.into_iter().map(|k| Chunk { table: ti, lo: 0, hi: None, key: Some(k) }));
        } else {
            store
                .set_table(
                    &job.pipeline,
                    &t.to_table,
                    &TableSnapshot { state: SnapshotState::Copying, snapshot_lsn: Some(job.lsn), rows: 0 },
                )
                .await?;
            floor.insert(ti, job.lsn);
            copied.insert(ti, 0);
            let n_chunks = pages.div_ceil(step).max(1);
            // indexes built after the load (not for a bidirectional table: its target is also a
            // source, whose replica identity and publications we leave alone)
            let defer = match job.defer_indexes && !t.lww {
                true => Some(crate::deferred_indexes::key_unique_at_source(&planner, t).await?),
                false => None,
            };
            if chunks::has_key_index(&planner, t).await? {
                let ranges = chunks::plan_ranges(&planner, t, pages, n_chunks).await?;
                note_deferred(t, start_table(&target, &job, t, &ranges, defer).await?);
                chunks.extend(ranges.into_iter().map(|k| Chunk { table: ti, lo: 0, hi: None, key: Some(k) }));
            } else {
                note_deferred(t, start_table(&target, &job, t, &[], defer).await?);
                if pages <= step {
                    chunks.push(Chunk { table: ti, lo: 0, hi: None, key: None });
                } else {
                    let mut lo = 0;
                    while lo < pages {
                        let hi = lo + step;
                        chunks.push(Chunk { table: ti, lo, hi: if hi >= pages { None } else { Some(hi) }, key: None });
                        lo = hi;
                    }
                }
            }
            remaining.insert(ti, chunks.len());
        }
        total_chunks += chunks.len();
        for c in chunks {
            // the workers end only after this sender is dropped: they are there to receive
            let _ = chunk_tx.send(c);
        }
    }
    drop(chunk_tx);
    planner.batch_execute("COMMIT").await?;
    let binary: Vec<&str> = job
        .tables
        .iter()
        .map(|t| &job.mapping.tables[*t])
        .filter(|t| binary_copy(t))
        .map(|t| t.to_table.as_str())
        .collect();
    tracing::info!(tables = job.tables.len(), chunks = total_chunks, workers, estimated_rows = estimate, lsn = %job.lsn,
        binary = ?binary, "snapshot: copying");

    let mut last_log = Instant::now();
    let mut done_tables = 0usize;
    // a table whose every chunk committed before a crash that came before it was marked done
    let finished: Vec<usize> = remaining.iter().filter(|(_, n)| **n == 0).map(|(t, _)| *t).collect();
    // chunks queued or in flight: the workers not busy with one leave their cores to an index
    // build
    let mut outstanding = total_chunks;
    for table in finished {
        table_done(&target, &job, store, table, copied[&table], floor[&table], workers.saturating_sub(outstanding))
            .await?;
        done_tables += 1;
    }
    job.metrics.snapshot_tables_done.store(done_tables as u64, Relaxed);
    while let Some(ev) = rx.recv().await {
        let Event::ChunkDone { table, rows } = ev?;
        outstanding -= 1;
        *copied.entry(table).or_default() += rows;
        let left = remaining.get_mut(&table).expect("planned");
        *left -= 1;
        if *left == 0 {
            let idle = workers.saturating_sub(outstanding);
            table_done(&target, &job, store, table, copied[&table], floor[&table], idle).await?;
            done_tables += 1;
            job.metrics.snapshot_tables_done.store(done_tables as u64, Relaxed);
        }
        if last_log.elapsed() >= Duration::from_secs(2) {
            last_log = Instant::now();
            let rows = job.metrics.snapshot_rows.load(Relaxed);
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
            let eta = if rate > 0.0 && estimate > rows { (estimate - rows) as f64 / rate } else { 0.0 };
            tracing::info!(
                rows,
                rows_per_s = rate as u64,
                eta_s = eta as u64,
                tables_done = done_tables,
                "snapshot: progress"
            );
        }
    }
    while let Some(h) = handles.join_next().await {
        h?;
    }
    if done_tables != job.tables.len() {
        return Err(SnapshotError::Incomplete { done: done_tables, total: job.tables.len() });
    }
    job.metrics.snapshot_finished_us.store(chrono::Utc::now().timestamp_micros(), Relaxed);
    let rows: u64 = copied.values().sum();
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(rows, seconds = secs, rows_per_s = (rows as f64 / secs.max(0.001)) as u64, "snapshot: finished");
    Ok(copied)
}

/// Empty `t` on the target and store its plan ([`chunks::start_table`]); for a pipeline that
/// flows back, after carrying its rows back and stamped with the origin ([`OwnedCopy`]).
async fn start_table(
    target: &tokio_postgres::Client,
    job: &SnapshotJob,
    t: &DirectedTable,
    ranges: &[KeyRange],
    defer: Option<bool>,
) -> Result<Vec<String>, SnapshotError> {
    let Some(owned) = &job.owned else {
        return Ok(chunks::start_table(target, &job.pipeline, t, ranges, job.lsn, defer).await?);
    };
    target.batch_execute("BEGIN").await?;
    let r = async {
        owned.carry.before_truncate(target, t).await?;
        chunks::start_table_in(target, &job.pipeline, t, ranges, job.lsn).await?;
        owned.carry.after_truncate(target, t).await?;
        let deferred = match defer {
            Some(key_unique) => crate::deferred_indexes::defer(target, &job.pipeline, t, key_unique).await?,
            None => Vec::new(),
        };
        owned.commit(target, job.lsn).await?;
        Ok::<_, SnapshotError>(deferred)
    }
    .await;
    if r.is_err() {
        let _ = target.batch_execute("ROLLBACK").await;
    }
    r
}

fn note_deferred(t: &DirectedTable, names: Vec<String>) {
    if !names.is_empty() {
        tracing::info!(table = %t.to_table, indexes = ?names, "snapshot: building these indexes after the copy");
    }
}

/// Every chunk of `table` is in: build its deferred indexes (a parallel build may use as many
/// workers as copy workers are `idle`, at least the server's `max_parallel_maintenance_workers`),
/// record it done with its stream floor.
async fn table_done<C: CheckpointStore>(
    target: &tokio_postgres::Client,
    job: &SnapshotJob,
    store: &mut C,
    table: usize,
    rows: u64,
    floor: Lsn,
    idle: usize,
) -> Result<(), SnapshotError> {
    let t = &job.mapping.tables[table];
    // before it is marked done: a crash in between leaves the records, rebuilt at the next start
    crate::deferred_indexes::rebuild(target, Some(&job.pipeline), Some(&t.to_table), Some(idle)).await?;
    let state = TableSnapshot { state: SnapshotState::Done, snapshot_lsn: Some(floor), rows: rows as i64 };
    store.set_table(&job.pipeline, &t.to_table, &state).await?;
    tracing::info!(table = %t.to_table, rows, "snapshot: table done");
    Ok(())
}

struct WorkerCtx<'a> {
    pipeline: &'a str,
    lsn: Lsn,
    source: &'a str,
    target: &'a str,
    snapshot: &'a str,
    owned: Option<&'a OwnedCopy>,
}

async fn worker(
    queue: ChunkQueue,
    tx: &mpsc::UnboundedSender<Result<Event, SnapshotError>>,
    mapping: Arc<Mapping>,
    ctx: WorkerCtx<'_>,
    metrics: Arc<Metrics>,
) -> Result<(), SnapshotError> {
    let WorkerCtx { pipeline, lsn, source, target, snapshot, owned } = ctx;
    let mut src = SourceSession::open(source, snapshot).await?;
    let dst = connect(target).await?;
    let _ = dst.batch_execute("SET session_replication_role = replica").await;
    dst.batch_execute("SET synchronous_commit = off").await?;
    loop {
        let next = queue.lock().await.recv().await;
        let Some(chunk) = next else { break };
        let t = &mapping.tables[chunk.table];
        let range = match (&chunk.key, chunk.lo, chunk.hi) {
            (Some(k), _, _) if k.lo.is_none() && k.hi.is_none() => String::new(),
            (Some(k), _, _) => format!(" WHERE {}", chunks::range_condition(t, k)),
            (None, 0, None) => String::new(),
            (None, lo, None) => format!(" WHERE ctid >= '({lo},0)'::tid"),
            (None, lo, Some(hi)) => format!(" WHERE ctid >= '({lo},0)'::tid AND ctid < '({hi},0)'::tid"),
        };
        let binary = binary_copy(t);
        let format = if binary { " (FORMAT binary)" } else { "" };
        let out_sql = format!(
            "COPY (SELECT {} FROM {}{range}) TO STDOUT{format}",
            source_select_list(t),
            quote_qualified(&t.from_table)
        );
        let cols: Vec<String> = t.outputs.iter().map(|o| quote_ident(&o.column)).collect();
        let in_sql = format!("COPY {} ({}) FROM STDIN{format}", quote_qualified(&t.to_table), cols.join(", "));
        dst.batch_execute("BEGIN").await?;
        let sink = dst.copy_in::<_, bytes::Bytes>(in_sql.as_str()).await?;
        futures::pin_mut!(sink);
        // the source's rows go on to the target in batches (a message each), progress counted
        // as they stream for text (a row per line), at the end for binary
        src.relay(&out_sql, sink.as_mut(), !binary, &metrics).await?;
        let rows = sink.as_mut().finish().await?;
        if binary {
            metrics.snapshot_rows.fetch_add(rows, Relaxed);
        }
        if let Some(k) = &chunk.key {
            // in the chunk's own transaction: after a crash the mark and the rows are both in
            // or both out
            chunks::mark_done(&dst, pipeline, &t.to_table, k.chunk, rows, lsn).await?;
        }
        match owned {
            Some(o) => o.commit(&dst, lsn).await?,
            None => dst.batch_execute("COMMIT").await?,
        }
        if tx.send(Ok(Event::ChunkDone { table: chunk.table, rows })).is_err() {
            break;
        }
    }
    src.finish().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with_env;
    use crate::mapping::Way;

    #[test]
    fn binary_only_for_plain_columns_of_the_same_built_in_type() {
        let cfg = parse_with_env(
            "t",
            "name='t'\n[source]\nurl='a'\n[target]\nurl='b'\n[[table]]\nsource='items'\ntarget='items2'\nkey=['id']\n[table.columns]\nid='id'\nbody='body'\nn='n'\n",
            &|_| None,
        )
        .unwrap();
        let mut t = Mapping::compile(&cfg, Way::Forward).tables.remove(0);
        t.input_types = t.inputs.iter().map(|c| if c == "body" { "text".into() } else { "integer".into() }).collect();
        t.output_types =
            t.outputs.iter().map(|o| if o.column == "body" { "text".into() } else { "integer".into() }).collect();
        t.input_oids = t.inputs.iter().map(|c| if c == "body" { 25 } else { 23 }).collect();
        assert!(binary_copy(&t));
        // a catalog that did not name the type, or a user-defined one (an enum): text
        let input = t.inputs.iter().position(|c| c == "body").unwrap();
        t.input_oids[input] = 0;
        assert!(!binary_copy(&t));
        t.input_oids[input] = 16_500;
        assert!(!binary_copy(&t));
        // a different type (the target's input function converts): text
        t.input_oids[input] = 25;
        let body = t.outputs.iter().position(|o| o.column == "body").unwrap();
        t.output_types[body] = "character varying(10)".into();
        assert!(!binary_copy(&t));
        t.output_types[body] = "text".into();
        assert!(binary_copy(&t));
        // a type whose binary form is an OID of the source database (regclass, regtype[]) or
        // that has no binary form (aclitem): text
        for oid in [2205, 2211, 1033] {
            t.input_oids[input] = oid;
            assert!(!binary_copy(&t), "{oid}");
        }
        t.input_oids[input] = 25;
        // a computed column: text
        t.outputs[body].value = OutputValue::Const("'x'".into());
        assert!(!binary_copy(&t));
    }
}

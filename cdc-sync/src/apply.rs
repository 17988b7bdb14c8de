//! Apply: map source changes and write them into the target in source commit order.
//!
//! [`Pipeline`] is the engine (pure logic over the two traits); [`Sink`] is where rows go
//! ([`PgSink`] for PostgreSQL, [`MemorySink`] for unit tests).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::checkpoint::ADVANCE_SQL;
use crate::config::SkipOrigins;
use crate::mapping::{MapError, Mapping, Op, OutputValue};
use crate::model::{quote_ident, quote_qualified, Cell, Lsn, SourceMessage};
use crate::source::{ChangeStream, SourceError};
use crate::status::Metrics;

/// Errors of the written side.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// SQL failed (connection loss is retryable; constraint errors usually are not).
    #[error("target SQL: {0}")]
    Sql(#[from] tokio_postgres::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Source side failed (retryable: resume from the checkpoint).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Target side failed (retryable unless the same error repeats).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The mapping cannot be applied (schema drift): fatal, needs a human.
    #[error(transparent)]
    Map(#[from] MapError),
}

impl PipelineError {
    /// Should the pipeline stop for good rather than reconnect and resume?
    pub fn is_fatal(&self) -> bool {
        matches!(self, PipelineError::Map(_))
    }
}

/// What a batch of writes did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows written.
    pub rows: u64,
    /// Incoming changes discarded because the target row was written later (last writer wins).
    pub conflicts: u64,
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
}

// ------------------------------------------------------------------------------ engine

/// Pipeline tunables.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Pipeline name (checkpoint key).
    pub name: String,
    /// Flush ops to the sink every this many row changes.
    pub batch_rows: usize,
    /// Commit the target transaction at the next source commit once it is this old.
    pub max_batch_age: Duration,
    /// Skip transactions tagged with these replication origins (loop prevention).
    pub skip_origins: SkipOrigins,
}

/// The apply engine: reads a [`ChangeStream`], maps, writes to a [`Sink`], commits with the
/// checkpoint, then confirms to the stream.
pub struct Pipeline<S: ChangeStream, K: Sink> {
    /// The change stream.
    pub stream: S,
    /// The sink.
    pub sink: K,
    /// Compiled mapping.
    pub mapping: Arc<Mapping>,
    /// Tunables.
    pub options: PipelineOptions,
    /// Resume point: source transactions whose commit is before it are already applied.
    pub checkpoint: Lsn,
    /// Per mapping index: changes committed before this LSN are already in the table's
    /// snapshot copy.
    pub table_floor: Vec<Lsn>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

struct Txn {
    commit_lsn: Lsn,
    ts: DateTime<Utc>,
    replayed: bool,
    /// Tagged with an origin in the skip set: not applied.
    origin: bool,
    rows: i64,
}

impl<S: ChangeStream, K: Sink> Pipeline<S, K> {
    /// Run until the stream ends or an error occurs.
    pub async fn run(mut self) -> Result<(), PipelineError> {
        let batch = self.options.batch_rows.max(1);
        let mut ops: Vec<Op> = Vec::with_capacity(batch.min(65536));
        let mut open = false; // sink has an open transaction with writes
        let mut cur: Option<Txn> = None;
        let mut pending: Option<CommitInfo> = None;
        let mut started = Instant::now();
        loop {
            let msg = self.stream.next().await?;
            match msg {
                SourceMessage::Begin { final_lsn, commit_ts, .. } => {
                    cur = Some(Txn {
                        commit_lsn: final_lsn,
                        ts: commit_ts,
                        replayed: final_lsn < self.checkpoint,
                        origin: false,
                        rows: 0,
                    });
                }
                SourceMessage::Origin { name } => {
                    if let Some(t) = cur.as_mut() {
                        t.origin = self.options.skip_origins.skips(&name);
                    }
                }
                SourceMessage::Relation(r) => {
                    for &i in self.mapping.indexes_of(&r.table) {
                        self.mapping.tables[i].check_relation(&r.columns)?;
                    }
                }
                SourceMessage::Change(c) => {
                    let Some(t) = cur.as_mut() else { continue };
                    if t.replayed || t.origin {
                        continue;
                    }
                    // One op per target table the source table maps to (fan-out).
                    let mut mapped = false;
                    for &i in self.mapping.indexes_of(&c.table) {
                        if t.commit_lsn < self.table_floor[i] {
                            continue;
                        }
                        ops.push(self.mapping.tables[i].map_change(i, &c, t.ts)?);
                        mapped = true;
                    }
                    if !mapped {
                        continue;
                    }
                    t.rows += 1;
                    if ops.len() >= batch {
                        self.flush(&mut ops, &mut open).await?;
                    }
                }
                SourceMessage::Truncate { tables } => {
                    let Some(t) = cur.as_mut() else { continue };
                    if t.replayed || t.origin {
                        continue;
                    }
                    let idx: Vec<usize> = tables
                        .iter()
                        .flat_map(|n| self.mapping.indexes_of(n).iter().copied())
                        .filter(|i| t.commit_lsn >= self.table_floor[*i])
                        .collect();
                    if !idx.is_empty() {
                        ops.push(Op::Truncate { tables: idx });
                        t.rows += 1;
                    }
                }
                SourceMessage::Commit { end_lsn, commit_ts, .. } => {
                    let Some(t) = cur.take() else { continue };
                    if t.replayed {
                        continue;
                    }
                    if t.origin {
                        self.metrics.txns_skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let applied = !t.origin;
                    if pending.is_none() && ops.is_empty() && !open && !applied {
                        // Nothing of ours in flight: the slot may pass this skipped transaction.
                        self.stream.confirm(end_lsn);
                        self.metrics.note_commit(end_lsn, commit_ts, 0, 0);
                        continue;
                    }
                    if pending.is_none() {
                        started = Instant::now();
                    }
                    let p = pending.get_or_insert(CommitInfo { lsn: end_lsn, commit_ts, txns: 0, rows: 0 });
                    p.lsn = end_lsn;
                    if applied {
                        // only our own transactions' times stamp the rows (last writer wins)
                        p.commit_ts = commit_ts;
                        p.txns += 1;
                        p.rows += t.rows;
                    }
                    if !self.stream.pending() || ops.len() >= batch || started.elapsed() >= self.options.max_batch_age {
                        let info = pending.take().expect("set above");
                        self.flush(&mut ops, &mut open).await?;
                        let stats = self.sink.commit(&info).await?;
                        self.metrics.conflicts.fetch_add(stats.conflicts, std::sync::atomic::Ordering::Relaxed);
                        open = false;
                        self.stream.confirm(info.lsn);
                        self.metrics.note_commit(info.lsn, info.commit_ts, info.txns, info.rows);
                    }
                }
                SourceMessage::Idle => {}
            }
        }
    }

    async fn flush(&mut self, ops: &mut Vec<Op>, open: &mut bool) -> Result<(), PipelineError> {
        if ops.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(ops, Vec::with_capacity(self.options.batch_rows.clamp(1, 65536)));
        let stats = self.sink.write(batch).await?;
        self.metrics.conflicts.fetch_add(stats.conflicts, std::sync::atomic::Ordering::Relaxed);
        *open = true;
        Ok(())
    }
}

// ------------------------------------------------------------------------------ batching

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Shape {
    Upsert,
    Update { present: Vec<bool>, with_key: bool },
    Delete,
    Truncate(Vec<usize>),
}

/// Consecutive ops of one table and shape, with no key repeated (a repeat starts a new run so
/// order is preserved), and for last-writer-wins tables one source commit time.
struct Run<'a> {
    table: usize,
    shape: Shape,
    ts: DateTime<Utc>,
    ops: Vec<&'a Op>,
}

fn shape_of(op: &Op, key_len: usize) -> Shape {
    match op {
        Op::Upsert { .. } => Shape::Upsert,
        Op::Update { match_key, row, .. } => {
            let present: Vec<bool> = row.iter().map(|c| *c != Cell::Unchanged).collect();
            let with_key = row[..key_len].iter().zip(match_key).any(|(c, k)| c.as_text() != Some(k.as_ref()));
            Shape::Update { present, with_key }
        }
        Op::Delete { .. } => Shape::Delete,
        Op::Truncate { tables } => Shape::Truncate(tables.clone()),
    }
}

fn op_keys(op: &Op, key_len: usize) -> Vec<Vec<Arc<str>>> {
    let key_of_row = |row: &[Cell]| -> Vec<Arc<str>> {
        row[..key_len]
            .iter()
            .map(|c| match c {
                Cell::Text(s) => Arc::clone(s),
                _ => Arc::from(""),
            })
            .collect()
    };
    match op {
        Op::Upsert { row, .. } => vec![key_of_row(row)],
        Op::Update { match_key, row, .. } => vec![match_key.clone(), key_of_row(row)],
        Op::Delete { key, .. } => vec![key.clone()],
        Op::Truncate { .. } => vec![],
    }
}

/// How freely a flush may regroup ops into runs. Everything in one flush lands in one target
/// transaction, so only the final state matters, provided each key's ops keep their order and
/// no constraint sees an intermediate state it would reject.
#[derive(Debug, Clone, Default)]
pub struct Regroup {
    /// Ops of different tables may be reordered: FK (and user) triggers do not fire, because
    /// the session runs with `session_replication_role = replica`.
    pub cross_table: bool,
    /// Per mapping table: ops on different keys commute — the table has no unique index or
    /// exclusion constraint besides the key's (only meaningful with `cross_table`).
    pub commutes: Vec<bool>,
}

fn op_table_ts(op: &Op) -> (usize, DateTime<Utc>) {
    match op {
        Op::Upsert { table, ts, .. } | Op::Update { table, ts, .. } | Op::Delete { table, ts, .. } => (*table, *ts),
        Op::Truncate { .. } => (usize::MAX, DateTime::<Utc>::MIN_UTC),
    }
}

/// Split `ops` into runs, each executed as one statement, in the returned order.
///
/// Without `regroup.cross_table` only consecutive ops of one table and shape form a run (source
/// order kept exactly). With it, TRUNCATEs stay barriers, and between them each table's ops are
/// gathered (tables are independent when FK triggers do not fire); within a table whose ops on
/// different keys commute, an op joins the latest run of its shape that comes after every earlier
/// op on its keys (so per-key order holds), else starts a new run. A pgbench-like interleaving
/// of 4 tables then needs a handful of statements per flush instead of one per row.
fn runs<'a>(mapping: &Mapping, ops: &'a [Op], regroup: &Regroup) -> Vec<Run<'a>> {
    if !regroup.cross_table {
        return consecutive_runs(mapping, ops);
    }
    let mut out = Vec::new();
    let mut order: Vec<usize> = Vec::new();
    let mut per_table: HashMap<usize, Vec<&'a Op>> = HashMap::new();
    let flush = |out: &mut Vec<Run<'a>>, order: &mut Vec<usize>, per_table: &mut HashMap<usize, Vec<&'a Op>>| {
        for t in order.drain(..) {
            let ops = per_table.remove(&t).unwrap_or_default();
            if regroup.commutes.get(t).copied().unwrap_or(false) {
                out.extend(commuting_runs(mapping, t, ops));
            } else {
                out.extend(consecutive_runs(mapping, ops));
            }
        }
    };
    for op in ops {
        if let Op::Truncate { .. } = op {
            flush(&mut out, &mut order, &mut per_table);
            out.extend(consecutive_runs(mapping, std::iter::once(op)));
            continue;
        }
        let (t, _) = op_table_ts(op);
        per_table
            .entry(t)
            .or_insert_with(|| {
                order.push(t);
                Vec::new()
            })
            .push(op);
    }
    flush(&mut out, &mut order, &mut per_table);
    out
}

/// Collapse several changes of one key inside a flush into one, where the result is the same
/// final row: e.g. a row updated 1,000 times in one target transaction would otherwise leave a
/// 1,000-version HOT chain that every later lookup of that row walks (our own uncommitted
/// versions cannot be pruned), making hot rows quadratic. Only for tables whose ops commute
/// (see [`Regroup`]) and that are not last-writer-wins; a key change, or a TRUNCATE of the table,
/// ends what can be merged. An update is merged into an earlier change only when it carries
/// every column (no unchanged TOAST value), so expression columns end up exactly as in-order
/// application leaves them.
fn coalesce(mapping: &Mapping, ops: Vec<Op>, regroup: &Regroup) -> Vec<Op> {
    if !regroup.cross_table {
        return ops;
    }
    let mut out: Vec<Option<Op>> = Vec::with_capacity(ops.len());
    let mut latest: HashMap<(usize, Vec<Arc<str>>), usize> = HashMap::new();
    for op in ops {
        let table = match &op {
            Op::Truncate { tables } => {
                latest.retain(|(t, _), _| !tables.contains(t));
                out.push(Some(op));
                continue;
            }
            Op::Upsert { table, .. } | Op::Update { table, .. } | Op::Delete { table, .. } => *table,
        };
        let t = &mapping.tables[table];
        if t.lww || !regroup.commutes.get(table).copied().unwrap_or(false) {
            out.push(Some(op));
            continue;
        }
        let mut keys = op_keys(&op, t.key_len);
        keys.dedup();
        if keys.len() != 1 {
            // a key change: nothing merges across it
            for k in keys {
                latest.remove(&(table, k));
            }
            out.push(Some(op));
            continue;
        }
        let slot = (table, keys.pop().expect("one key"));
        let full = |row: &[Cell]| row.iter().all(|c| *c != Cell::Unchanged);
        enum Merge {
            Append,
            Replace,
            KeepPrevious,
            UpsertFromUpdate,
        }
        let (prev, how) = match latest.get(&slot).map(|&i| (i, out[i].as_ref().expect("latest op is live"))) {
            None => (None, Merge::Append),
            Some((i, prev)) => (
                Some(i),
                match (prev, &op) {
                    (_, Op::Delete { .. } | Op::Upsert { .. }) => Merge::Replace,
                    (Op::Delete { .. }, Op::Update { .. }) => Merge::KeepPrevious,
                    (Op::Upsert { .. }, Op::Update { row, .. }) if full(row) => Merge::UpsertFromUpdate,
                    (Op::Update { .. }, Op::Update { row, .. }) if full(row) => Merge::Replace,
                    _ => Merge::Append,
                },
            ),
        };
        let op = match (prev, how) {
            (Some(i), Merge::Replace) => {
                out[i] = None;
                op
            }
            (Some(i), Merge::KeepPrevious) => out[i].take().expect("latest op is live"),
            (Some(i), Merge::UpsertFromUpdate) => {
                out[i] = None;
                match op {
                    Op::Update { table, row, ts, .. } => Op::Upsert { table, row, ts },
                    other => other,
                }
            }
            _ => op,
        };
        out.push(Some(op));
        latest.insert(slot, out.len() - 1);
    }
    out.into_iter().flatten().collect()
}

/// Runs of one table whose ops on different keys commute: see [`runs`].
fn commuting_runs<'a>(mapping: &Mapping, table: usize, ops: Vec<&'a Op>) -> Vec<Run<'a>> {
    let t = &mapping.tables[table];
    let mut out: Vec<Run<'a>> = Vec::new();
    let mut last_run_of_key: HashMap<Vec<Arc<str>>, usize> = HashMap::new();
    let mut last_run_of_shape: HashMap<(Shape, Option<DateTime<Utc>>), usize> = HashMap::new();
    for op in ops {
        let (_, ts) = op_table_ts(op);
        let shape = shape_of(op, t.key_len);
        let keys = op_keys(op, t.key_len);
        let after = keys.iter().filter_map(|k| last_run_of_key.get(k)).max().copied();
        let slot = (shape.clone(), t.lww.then_some(ts));
        let idx = match last_run_of_shape.get(&slot) {
            Some(&r) if after.is_none_or(|a| r > a) => r,
            _ => {
                out.push(Run { table, shape, ts, ops: Vec::new() });
                last_run_of_shape.insert(slot, out.len() - 1);
                out.len() - 1
            }
        };
        out[idx].ops.push(op);
        for k in keys {
            last_run_of_key.insert(k, idx);
        }
    }
    out
}

/// Group consecutive ops only (order kept exactly).
fn consecutive_runs<'a>(mapping: &Mapping, ops: impl IntoIterator<Item = &'a Op>) -> Vec<Run<'a>> {
    let mut out: Vec<Run<'a>> = Vec::new();
    let mut keys: HashSet<Vec<Arc<str>>> = HashSet::new();
    for op in ops {
        let (table, ts) = match op {
            Op::Upsert { table, ts, .. } | Op::Update { table, ts, .. } | Op::Delete { table, ts, .. } => (*table, *ts),
            Op::Truncate { .. } => (usize::MAX, DateTime::<Utc>::MIN_UTC),
        };
        let key_len = if table == usize::MAX { 0 } else { mapping.tables[table].key_len };
        let shape = shape_of(op, key_len);
        let lww = table != usize::MAX && mapping.tables[table].lww;
        let op_keys = op_keys(op, key_len);
        let extend = match out.last() {
            Some(r) => {
                r.table == table
                    && r.shape == shape
                    && !matches!(shape, Shape::Truncate(_))
                    && (!lww || r.ts == ts)
                    && op_keys.iter().all(|k| !keys.contains(k))
            }
            None => false,
        };
        if !extend {
            keys.clear();
            out.push(Run { table, shape, ts, ops: Vec::new() });
        }
        keys.extend(op_keys);
        out.last_mut().expect("pushed").ops.push(op);
    }
    out
}

// ------------------------------------------------------------------------------ PostgreSQL sink

/// Writes into PostgreSQL with batched, pipelined statements: each run of same-shape changes
/// becomes one `unnest`-array statement, and all statements of a flush are sent without
/// waiting for each other. Driven by [`PgSink`]'s writer task.
struct PgWriter {
    client: Client,
    mapping: Arc<Mapping>,
    pipeline: String,
    origin: Option<String>,
    in_txn: bool,
    stmts: HashMap<(usize, Shape, bool), Statement>,
    advance: Statement,
    origin_xact: Option<Statement>,
    regroup: Regroup,
}

fn lww_cond(n: usize) -> String {
    format!("(pg_xact_commit_timestamp(t.xmin) IS NULL OR pg_xact_commit_timestamp(t.xmin) <= ${n}::timestamptz)")
}

/// Build the SQL for one run shape of mapping table `t`.
fn build_sql(m: &crate::mapping::DirectedTable, shape: &Shape, lww: bool) -> String {
    let to = quote_qualified(&m.to_table);
    // Which inputs are passed, in parameter order.
    let all: Vec<bool> = vec![true; m.inputs.len()];
    let present: &[bool] = match shape {
        Shape::Update { present, .. } => present,
        _ => &all,
    };
    let passed: Vec<usize> = (0..m.inputs.len()).filter(|i| present[*i]).collect();
    let out_expr = |o: usize| -> String {
        let ty = &m.output_types[o];
        match &m.outputs[o].value {
            OutputValue::Input(i) => format!("u.c{i}::{ty}"),
            OutputValue::Expr { sql, .. } | OutputValue::Const(sql) => format!("({sql})::{ty}"),
        }
    };
    let lateral = |present: &[bool]| -> String {
        let mut deps: Vec<usize> = m
            .outputs
            .iter()
            .filter_map(|o| match &o.value {
                OutputValue::Expr { deps, .. } if deps.iter().all(|d| present[*d]) => Some(deps.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        deps.sort();
        deps.dedup();
        if deps.is_empty() {
            return String::new();
        }
        let cols: Vec<String> =
            deps.iter().map(|d| format!("u.c{d}::{} AS {}", m.input_types[*d], quote_ident(&m.inputs[*d]))).collect();
        format!(" CROSS JOIN LATERAL (SELECT {}) e", cols.join(", "))
    };
    let key_cols: Vec<String> = m.key_outputs.iter().map(|o| quote_ident(&m.outputs[*o].column)).collect();
    match shape {
        Shape::Upsert => {
            let params: Vec<String> = passed.iter().enumerate().map(|(n, _)| format!("${}::text[]", n + 1)).collect();
            let names: Vec<String> = passed.iter().map(|i| format!("c{i}")).collect();
            let cols: Vec<String> = m.outputs.iter().map(|o| quote_ident(&o.column)).collect();
            let exprs: Vec<String> = (0..m.outputs.len()).map(out_expr).collect();
            let sets: Vec<String> = (0..m.outputs.len())
                .filter(|o| !m.key_outputs.contains(o))
                .map(|o| format!("{c} = EXCLUDED.{c}", c = quote_ident(&m.outputs[o].column)))
                .collect();
            let conflict = if sets.is_empty() {
                "DO NOTHING".to_string()
            } else if lww {
                format!("DO UPDATE SET {} WHERE {}", sets.join(", "), lww_cond(passed.len() + 1))
            } else {
                format!("DO UPDATE SET {}", sets.join(", "))
            };
            format!(
                "INSERT INTO {to} AS t ({}) SELECT {} FROM unnest({}) AS u({}){} ON CONFLICT ({}) {conflict}",
                cols.join(", "),
                exprs.join(", "),
                params.join(", "),
                names.join(", "),
                lateral(&all),
                key_cols.join(", ")
            )
        }
        Shape::Update { present, with_key } => {
            let settable = m.settable_outputs(present, *with_key);
            let n_passed = passed.len();
            let mut params: Vec<String> = (0..n_passed).map(|n| format!("${}::text[]", n + 1)).collect();
            let mut names: Vec<String> = passed.iter().map(|i| format!("c{i}")).collect();
            for k in 0..m.key_len {
                params.push(format!("${}::text[]", n_passed + k + 1));
                names.push(format!("m{k}"));
            }
            let mut sel: Vec<String> = settable.iter().map(|o| format!("{} AS o{o}", out_expr(*o))).collect();
            for k in 0..m.key_len {
                sel.push(format!("u.m{k}"));
            }
            let sets: Vec<String> =
                settable.iter().map(|o| format!("{} = s.o{o}", quote_ident(&m.outputs[*o].column))).collect();
            let mut conds: Vec<String> = m
                .key_outputs
                .iter()
                .enumerate()
                .map(|(k, o)| format!("t.{} = s.m{k}::{}", quote_ident(&m.outputs[*o].column), m.output_types[*o]))
                .collect();
            if lww {
                conds.push(lww_cond(n_passed + m.key_len + 1));
            }
            format!(
                "UPDATE {to} AS t SET {} FROM (SELECT {} FROM unnest({}) AS u({}){}) s WHERE {}",
                sets.join(", "),
                sel.join(", "),
                params.join(", "),
                names.join(", "),
                lateral(present),
                conds.join(" AND ")
            )
        }
        Shape::Delete => {
            let params: Vec<String> = (0..m.key_len).map(|k| format!("${}::text[]", k + 1)).collect();
            let names: Vec<String> = (0..m.key_len).map(|k| format!("m{k}")).collect();
            let mut conds: Vec<String> = m
                .key_outputs
                .iter()
                .enumerate()
                .map(|(k, o)| format!("t.{} = u.m{k}::{}", quote_ident(&m.outputs[*o].column), m.output_types[*o]))
                .collect();
            if lww {
                conds.push(lww_cond(m.key_len + 1));
            }
            format!(
                "DELETE FROM {to} AS t USING unnest({}) AS u({}) WHERE {}",
                params.join(", "),
                names.join(", "),
                conds.join(" AND ")
            )
        }
        Shape::Truncate(_) => unreachable!("truncate has its own SQL"),
    }
}

type Params<'a> = Vec<Box<dyn ToSql + Sync + Send + 'a>>;

fn params_for<'a>(m: &crate::mapping::DirectedTable, run: &Run<'a>, lww: bool) -> Params<'a> {
    let mut out: Params<'a> = Vec::new();
    let col = |i: usize| -> Vec<Option<&'a str>> {
        run.ops
            .iter()
            .map(|op| match op {
                Op::Upsert { row, .. } | Op::Update { row, .. } => row[i].as_text(),
                _ => None,
            })
            .collect()
    };
    match &run.shape {
        Shape::Upsert => {
            for i in 0..m.inputs.len() {
                out.push(Box::new(col(i)));
            }
        }
        Shape::Update { present, .. } => {
            for (i, p) in present.iter().enumerate() {
                if *p {
                    out.push(Box::new(col(i)));
                }
            }
            for k in 0..m.key_len {
                let v: Vec<Option<&'a str>> = run
                    .ops
                    .iter()
                    .map(|op| match op {
                        Op::Update { match_key, .. } => Some(match_key[k].as_ref()),
                        _ => None,
                    })
                    .collect();
                out.push(Box::new(v));
            }
        }
        Shape::Delete => {
            for k in 0..m.key_len {
                let v: Vec<Option<&'a str>> = run
                    .ops
                    .iter()
                    .map(|op| match op {
                        Op::Delete { key, .. } => Some(key[k].as_ref()),
                        _ => None,
                    })
                    .collect();
                out.push(Box::new(v));
            }
        }
        Shape::Truncate(_) => {}
    }
    if lww && !matches!(run.shape, Shape::Truncate(_)) {
        out.push(Box::new(run.ts));
    }
    out
}

/// Connect a plain tokio-postgres client, driving the connection on a task.
pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// Set up a replication origin on this session so the other direction can recognise (and
/// skip) what we write. Retries while a previous session of ours still holds it.
pub async fn setup_origin(client: &Client, origin: &str) -> Result<(), SinkError> {
    client
        .execute(
            "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&origin],
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.execute("SELECT pg_replication_origin_session_setup($1)", &[&origin]).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline && e.to_string().contains("already active") => {
                // the backend of a killed predecessor has not noticed yet
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl PgWriter {
    async fn connect(
        conn: &str,
        mapping: Arc<Mapping>,
        pipeline: &str,
        origin: Option<&str>,
    ) -> Result<PgWriter, SinkError> {
        let client = connect(conn).await?;
        // Like native logical replication: user triggers and FK triggers do not fire for
        // replicated rows (needs superuser; best effort).
        let replica = match client.batch_execute("SET session_replication_role = replica").await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot SET session_replication_role = replica; triggers will fire on applied rows");
                false
            }
        };
        let mut commutes = Vec::with_capacity(mapping.tables.len());
        for t in &mapping.tables {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass AND (indisunique OR indisexclusion)",
                    &[&quote_qualified(&t.to_table)],
                )
                .await?
                .get(0);
            commutes.push(replica && n <= 1);
        }
        let regroup = Regroup { cross_table: replica, commutes };
        client.batch_execute("SET synchronous_commit = off").await?;
        // Every apply statement is a key lookup driven by unnest() arrays: the generic plan
        // (nested loop over the key index) is right for any batch size, while custom plans would
        // be re-planned per execution and, seeing thousands of array elements, may pick a hash
        // join over a sequential scan of the whole table.
        client.batch_execute("SET plan_cache_mode = force_generic_plan").await?;
        if let Some(o) = origin {
            setup_origin(&client, o).await?;
        }
        let advance = client.prepare(ADVANCE_SQL).await?;
        let origin_xact = match origin {
            Some(_) => Some(client.prepare("SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2)").await?),
            None => None,
        };
        Ok(PgWriter {
            client,
            mapping,
            pipeline: pipeline.to_string(),
            origin: origin.map(str::to_string),
            in_txn: false,
            stmts: HashMap::new(),
            advance,
            origin_xact,
            regroup,
        })
    }

    async fn statement(&mut self, table: usize, shape: &Shape) -> Result<Statement, SinkError> {
        let m = &self.mapping.tables[table];
        let key = (table, shape.clone(), m.lww);
        if let Some(s) = self.stmts.get(&key) {
            return Ok(s.clone());
        }
        let sql = build_sql(m, shape, m.lww);
        let st = self.client.prepare(&sql).await.map_err(|e| SinkError::Other(format!("preparing `{sql}`: {e}")))?;
        self.stmts.insert(key, st.clone());
        Ok(st)
    }
}

impl PgWriter {
    async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
        if !self.in_txn {
            self.client.batch_execute("BEGIN").await?;
            self.in_txn = true;
        }
        let mapping = Arc::clone(&self.mapping);
        let ops = coalesce(&mapping, ops, &self.regroup);
        let runs = runs(&mapping, &ops, &self.regroup);
        // Prepare (cached) statements first, then send everything pipelined.
        let mut work: Vec<(Option<Statement>, String, Params<'_>, usize, bool)> = Vec::with_capacity(runs.len());
        for r in &runs {
            if let Shape::Truncate(tables) = &r.shape {
                // Prepared like everything else: an unprepared statement would need an extra
                // round trip and so overtake the statements pipelined before it.
                let key = (usize::MAX, r.shape.clone(), false);
                let st = match self.stmts.get(&key) {
                    Some(st) => st.clone(),
                    None => {
                        let list: Vec<String> =
                            tables.iter().map(|t| quote_qualified(&mapping.tables[*t].to_table)).collect();
                        let st = self.client.prepare(&format!("TRUNCATE {}", list.join(", "))).await?;
                        self.stmts.insert(key, st.clone());
                        st
                    }
                };
                work.push((Some(st), String::new(), Vec::new(), 0, false));
                continue;
            }
            let m = &mapping.tables[r.table];
            let st = self.statement(r.table, &r.shape).await?;
            let counts = m.lww && r.shape == Shape::Upsert;
            work.push((Some(st), String::new(), params_for(m, r, m.lww), r.ops.len(), counts));
        }
        let client = &self.client;
        let futs = work.iter().map(|(st, sql, params, _, _)| async move {
            match st {
                Some(st) => {
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
                    client.execute(st, &refs).await
                }
                None => client.execute(sql.as_str(), &[]).await,
            }
        });
        let results = match futures::future::try_join_all(futs).await {
            Ok(r) => r,
            Err(e) => {
                self.in_txn = false;
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
        };
        let mut stats = WriteStats::default();
        for ((n, (_, _, _, len, counts)), r) in results.iter().zip(&work).zip(&runs) {
            stats.rows += *n;
            if *counts && (*len as u64) > *n {
                stats.conflicts += *len as u64 - *n;
                let keys: Vec<String> = r
                    .ops
                    .iter()
                    .take(5)
                    .map(|op| format!("{:?}", op_keys(op, mapping.tables[r.table].key_len)[0]))
                    .collect();
                tracing::warn!(table = %mapping.tables[r.table].to_table, source_commit_ts = %r.ts, lost = *len as u64 - *n,
                    candidate_keys = %keys.join(" "), "last-writer-wins conflict: target rows are newer than these incoming changes");
            }
        }
        Ok(stats)
    }

    async fn commit(&mut self, info: &CommitInfo) -> Result<(), SinkError> {
        if !self.in_txn {
            self.client.batch_execute("BEGIN").await?;
            self.in_txn = true;
        }
        let lsn = info.lsn.to_string();
        let r = async {
            if let Some(st) = &self.origin_xact {
                self.client.execute(st, &[&lsn, &info.commit_ts]).await?;
            }
            self.client
                .execute(&self.advance, &[&self.pipeline, &lsn, &info.commit_ts, &info.txns, &info.rows])
                .await?;
            self.client.batch_execute("COMMIT").await
        }
        .await;
        self.in_txn = false;
        if r.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        let _ = &self.origin;
        r.map_err(Into::into)
    }
}

enum WriterJob {
    Write(Vec<Op>),
    Commit(CommitInfo, tokio::sync::oneshot::Sender<Result<WriteStats, SinkError>>),
}

/// [`Sink`] writing into PostgreSQL. A writer task owns the connection and executes batches
/// in order while the pipeline maps the next one (at most two batches queued, so memory stays
/// bounded); `commit` waits for everything before it. After a failed write, later writes of
/// the same transaction are dropped and the error is returned by the next `write` or `commit`.
pub struct PgSink {
    jobs: tokio::sync::mpsc::Sender<WriterJob>,
    failed: Arc<std::sync::Mutex<Option<SinkError>>>,
}

impl PgSink {
    /// Connect to the written side. `origin` is set on the session (loop prevention).
    pub async fn connect(
        conn: &str,
        mapping: Arc<Mapping>,
        pipeline: &str,
        origin: Option<&str>,
    ) -> Result<PgSink, SinkError> {
        let mut writer = PgWriter::connect(conn, mapping, pipeline, origin).await?;
        let (jobs, mut rx) = tokio::sync::mpsc::channel::<WriterJob>(2);
        let failed: Arc<std::sync::Mutex<Option<SinkError>>> = Arc::default();
        let fail = Arc::clone(&failed);
        tokio::spawn(async move {
            let mut stats = WriteStats::default();
            let mut error: Option<SinkError> = None;
            while let Some(job) = rx.recv().await {
                match job {
                    WriterJob::Write(ops) => {
                        if error.is_some() {
                            continue;
                        }
                        match writer.write(ops).await {
                            Ok(s) => {
                                stats.rows += s.rows;
                                stats.conflicts += s.conflicts;
                            }
                            Err(e) => {
                                *fail.lock().expect("not poisoned") = Some(SinkError::Other(format!("{e}")));
                                error = Some(e);
                            }
                        }
                    }
                    WriterJob::Commit(info, reply) => {
                        let r = match error.take() {
                            Some(e) => Err(e),
                            None => writer.commit(&info).await.map(|()| std::mem::take(&mut stats)),
                        };
                        stats = WriteStats::default();
                        fail.lock().expect("not poisoned").take();
                        let _ = reply.send(r);
                    }
                }
            }
        });
        Ok(PgSink { jobs, failed })
    }

    fn gone() -> SinkError {
        SinkError::Other("target writer task ended".into())
    }
}

impl Sink for PgSink {
    async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
        if let Some(e) = self.failed.lock().expect("not poisoned").take() {
            return Err(e);
        }
        self.jobs.send(WriterJob::Write(ops)).await.map_err(|_| PgSink::gone())?;
        Ok(WriteStats::default())
    }

    async fn commit(&mut self, info: &CommitInfo) -> Result<WriteStats, SinkError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.send(WriterJob::Commit(*info, tx)).await.map_err(|_| PgSink::gone())?;
        rx.await.map_err(|_| PgSink::gone())?
    }
}

// ------------------------------------------------------------------------------ in-memory sink

/// In-memory [`Sink`] for unit tests: tables keyed by key text, rows as input-column text.
/// Uncommitted writes live in `working` and become `committed` on commit.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    mapping: Arc<Mapping>,
    /// Per mapping index: key → row cells (by input column).
    pub committed: Vec<BTreeMap<Vec<String>, Vec<Option<String>>>>,
    working: Vec<BTreeMap<Vec<String>, Vec<Option<String>>>>,
    /// Last committed checkpoint.
    pub checkpoint: Option<CommitInfo>,
    /// Number of commits.
    pub commits: usize,
}

impl MemorySink {
    /// An empty sink for `mapping`.
    pub fn new(mapping: Arc<Mapping>) -> Self {
        let n = mapping.tables.len();
        MemorySink {
            mapping,
            committed: vec![BTreeMap::new(); n],
            working: vec![BTreeMap::new(); n],
            checkpoint: None,
            commits: 0,
        }
    }
}

impl Sink for MemorySink {
    async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
        let mut stats = WriteStats::default();
        for op in &ops {
            match op {
                Op::Upsert { table, row, .. } => {
                    let k = self.mapping.tables[*table].key_len;
                    let key: Vec<String> = row[..k].iter().map(|c| c.as_text().unwrap_or("").to_string()).collect();
                    self.working[*table].insert(key, row.iter().map(|c| c.as_text().map(str::to_string)).collect());
                    stats.rows += 1;
                }
                Op::Update { table, match_key, row, .. } => {
                    let k = self.mapping.tables[*table].key_len;
                    let old: Vec<String> = match_key.iter().map(|s| s.to_string()).collect();
                    if let Some(mut cur) = self.working[*table].remove(&old) {
                        for (i, c) in row.iter().enumerate() {
                            if *c != Cell::Unchanged {
                                cur[i] = c.as_text().map(str::to_string);
                            }
                        }
                        let key: Vec<String> = cur[..k].iter().map(|c| c.clone().unwrap_or_default()).collect();
                        self.working[*table].insert(key, cur);
                        stats.rows += 1;
                    }
                }
                Op::Delete { table, key, .. } => {
                    let key: Vec<String> = key.iter().map(|s| s.to_string()).collect();
                    stats.rows += self.working[*table].remove(&key).is_some() as u64;
                }
                Op::Truncate { tables } => {
                    for t in tables {
                        self.working[*t].clear();
                    }
                }
            }
        }
        Ok(stats)
    }

    async fn commit(&mut self, info: &CommitInfo) -> Result<WriteStats, SinkError> {
        self.committed = self.working.clone();
        self.checkpoint = Some(*info);
        self.commits += 1;
        Ok(WriteStats::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with_env;
    use crate::mapping::Way;
    use crate::model::{ChangeKind, RelationInfo, Row, RowChange};
    use crate::source::ScriptedStream;

    fn mapping() -> Arc<Mapping> {
        let cfg = parse_with_env(
            "t",
            "name='t'\n[source]\nurl='a'\n[target]\nurl='b'\n[[table]]\nsource='items'\ntarget='items2'\nkey=['id']\n[table.columns]\nid='id'\nbody='body'\nn='n'\n",
            &|_| None,
        )
        .unwrap();
        let mut m = Mapping::compile(&cfg, Way::Forward);
        for t in &mut m.tables {
            t.input_types = vec!["integer".into(), "text".into(), "integer".into()];
            t.output_types =
                t.outputs.iter().map(|o| if o.column == "body" { "text".into() } else { "integer".into() }).collect();
        }
        Arc::new(m)
    }

    fn tx(lsn: u64, origin: Option<&str>, changes: Vec<ChangeKind>) -> Vec<SourceMessage> {
        let ts = Utc::now();
        let mut v = vec![SourceMessage::Begin { xid: 1, final_lsn: Lsn(lsn), commit_ts: ts }];
        if let Some(name) = origin {
            v.push(SourceMessage::Origin { name: name.into() });
        }
        for c in changes {
            v.push(SourceMessage::Change(RowChange { table: "public.items".into(), kind: c }));
        }
        v.push(SourceMessage::Commit { commit_lsn: Lsn(lsn), end_lsn: Lsn(lsn + 1), commit_ts: ts });
        v
    }

    fn r(id: &str, body: Option<&str>, n: &str) -> Row {
        let b = match body {
            Some(s) => Cell::Text(s.into()),
            None => Cell::Unchanged,
        };
        Row::from_pairs([("id", Cell::Text(id.into())), ("body", b), ("n", Cell::Text(n.into()))])
    }

    /// Runs a pipeline over a [`MemorySink`] we can read back afterwards.
    struct Shared(Arc<tokio::sync::Mutex<MemorySink>>);
    impl Sink for Shared {
        async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
            self.0.lock().await.write(ops).await
        }
        async fn commit(&mut self, info: &CommitInfo) -> Result<WriteStats, SinkError> {
            self.0.lock().await.commit(info).await
        }
    }

    async fn run(msgs: Vec<SourceMessage>, checkpoint: Lsn) -> (MemorySink, Result<(), PipelineError>, Lsn) {
        let m = mapping();
        let stream = ScriptedStream::new(msgs);
        let confirmed = Arc::clone(&stream.confirmed);
        let shared = Arc::new(tokio::sync::Mutex::new(MemorySink::new(Arc::clone(&m))));
        let p = Pipeline {
            stream,
            sink: Shared(Arc::clone(&shared)),
            mapping: Arc::clone(&m),
            options: PipelineOptions {
                name: "t".into(),
                batch_rows: 2,
                max_batch_age: Duration::from_secs(1),
                skip_origins: SkipOrigins::new(["cdc_sync_x".to_string()]),
            },
            checkpoint,
            table_floor: vec![Lsn(0)],
            metrics: Arc::new(Metrics::default()),
        };
        let res = p.run().await;
        let sink = shared.lock().await.clone();
        let c = *confirmed.lock().unwrap();
        (sink, res, c)
    }

    fn ended(r: &Result<(), PipelineError>) -> bool {
        matches!(r, Err(PipelineError::Source(SourceError::Ended)))
    }

    #[tokio::test]
    async fn applies_in_order_with_toast_key_change_and_delete() {
        let mut msgs = tx(
            100,
            None,
            vec![
                ChangeKind::Insert { new: r("1", Some("big"), "0") },
                ChangeKind::Insert { new: r("2", Some("b2"), "0") },
                ChangeKind::Update { old: None, new: r("1", None, "1") },
            ],
        );
        msgs.extend(tx(
            200,
            None,
            vec![
                ChangeKind::Update {
                    old: Some(Row::from_pairs([("id", Cell::Text("2".into()))])),
                    new: r("3", Some("b3"), "5"),
                },
                ChangeKind::Insert { new: r("4", Some("x"), "0") },
                ChangeKind::Delete { old: Row::from_pairs([("id", Cell::Text("4".into()))]) },
            ],
        ));
        let (sink, res, confirmed) = run(msgs, Lsn(0)).await;
        assert!(ended(&res), "{res:?}");
        let t = &sink.committed[0];
        assert_eq!(t.len(), 2);
        assert_eq!(t[&vec!["1".to_string()]], vec![Some("1".into()), Some("big".into()), Some("1".into())]);
        assert_eq!(t[&vec!["3".to_string()]][1], Some("b3".into()));
        assert_eq!(sink.checkpoint.unwrap().lsn, Lsn(201));
        assert_eq!(confirmed, Lsn(201));
    }

    #[tokio::test]
    async fn skips_replayed_and_origin_transactions() {
        let mut msgs = tx(100, None, vec![ChangeKind::Insert { new: r("1", Some("a"), "0") }]);
        msgs.extend(tx(200, Some("cdc_sync_x"), vec![ChangeKind::Insert { new: r("2", Some("a"), "0") }]));
        msgs.extend(tx(300, None, vec![ChangeKind::Insert { new: r("3", Some("a"), "0") }]));
        let (sink, res, confirmed) = run(msgs, Lsn(150)).await;
        assert!(ended(&res));
        let keys: Vec<_> = sink.committed[0].keys().cloned().collect();
        assert_eq!(keys, vec![vec!["3".to_string()]]);
        assert_eq!(sink.checkpoint.unwrap().txns, 1);
        assert_eq!(confirmed, Lsn(301));
    }

    #[tokio::test]
    async fn applies_transactions_of_origins_outside_the_skip_set() {
        // another pipeline's applier wrote these into our source: real changes for us
        let mut msgs = tx(100, Some("cdc_sync_other_rev"), vec![ChangeKind::Insert { new: r("1", Some("a"), "0") }]);
        msgs.extend(tx(200, Some("cdc_sync_x"), vec![ChangeKind::Insert { new: r("2", Some("a"), "0") }]));
        msgs.extend(tx(300, Some("pg_16384"), vec![ChangeKind::Insert { new: r("3", Some("a"), "0") }]));
        let (sink, res, confirmed) = run(msgs, Lsn(0)).await;
        assert!(ended(&res));
        let keys: Vec<_> = sink.committed[0].keys().cloned().collect();
        assert_eq!(keys, vec![vec!["1".to_string()], vec!["3".to_string()]]);
        assert_eq!(sink.checkpoint.unwrap().txns, 2);
        assert_eq!(confirmed, Lsn(301));
    }

    #[tokio::test]
    async fn dropped_mapped_column_stops() {
        let mut msgs = vec![SourceMessage::Relation(RelationInfo {
            table: "public.items".into(),
            columns: vec!["id".into(), "n".into(), "added".into()],
        })];
        msgs.extend(tx(100, None, vec![]));
        let (_, res, _) = run(msgs, Lsn(0)).await;
        let e = res.unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("mapped column body of public.items"), "{e}");
    }

    #[test]
    fn runs_split_on_repeated_key_and_shape() {
        let m = mapping();
        let ts = Utc::now();
        let row = |id: &str| vec![Cell::Text(id.into()), Cell::Text("b".into()), Cell::Text("1".into())];
        let ops = vec![
            Op::Upsert { table: 0, row: row("1"), ts },
            Op::Upsert { table: 0, row: row("2"), ts },
            Op::Upsert { table: 0, row: row("1"), ts },
            Op::Delete { table: 0, key: vec!["2".into()], ts },
        ];
        let rs = runs(&m, &ops, &Regroup::default());
        assert_eq!(rs.iter().map(|r| r.ops.len()).collect::<Vec<_>>(), vec![2, 1, 1]);
    }

    /// Random but valid source histories (keys only inserted when absent, key changes only to
    /// free keys, truncates as barriers) over two tables: the regrouped order must reach exactly
    /// the state the source order reaches, with no key twice in a run, in far fewer runs.
    #[tokio::test]
    async fn regrouped_runs_reach_the_same_state() {
        let cfg = parse_with_env(
            "t",
            "name='t'\n[source]\nurl='a'\n[target]\nurl='b'\n\
             [[table]]\nsource='items'\ntarget='items2'\nkey=['id']\n[table.columns]\nid='id'\nbody='body'\nn='n'\n\
             [[table]]\nsource='other'\ntarget='other2'\nkey=['id']\n[table.columns]\nid='id'\nbody='body'\nn='n'\n",
            &|_| None,
        )
        .unwrap();
        let m = Arc::new(Mapping::compile(&cfg, Way::Forward));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let ts = Utc::now();
        for round in 0..20 {
            let mut live: Vec<HashSet<u64>> = vec![HashSet::new(), HashSet::new()];
            let mut ops = Vec::new();
            for i in 0..3000u64 {
                let table = rnd(2) as usize;
                let k = rnd(30);
                let cell = |s: String| Cell::Text(s.into());
                let row = |id: u64, body: Cell| vec![cell(id.to_string()), body, cell(format!("{round}-{i}"))];
                let choice = rnd(100);
                if choice == 0 {
                    ops.push(Op::Truncate { tables: vec![table] });
                    live[table].clear();
                } else if !live[table].contains(&k) {
                    ops.push(Op::Upsert { table, row: row(k, cell(format!("b{i}"))), ts });
                    live[table].insert(k);
                } else if choice < 20 {
                    ops.push(Op::Delete { table, key: vec![k.to_string().into()], ts });
                    live[table].remove(&k);
                } else if choice < 30 {
                    let to = rnd(30);
                    if !live[table].contains(&to) {
                        ops.push(Op::Update {
                            table,
                            match_key: vec![k.to_string().into()],
                            row: row(to, Cell::Unchanged),
                            ts,
                        });
                        live[table].remove(&k);
                        live[table].insert(to);
                    }
                } else {
                    let body = if choice < 60 { Cell::Unchanged } else { cell(format!("u{i}")) };
                    ops.push(Op::Update { table, match_key: vec![k.to_string().into()], row: row(k, body), ts });
                }
            }
            let regroup = Regroup { cross_table: true, commutes: vec![true, round % 2 == 0] };
            let coalesced = coalesce(&m, ops.clone(), &regroup);
            assert!(coalesced.len() < ops.len());
            let rs = runs(&m, &coalesced, &regroup);
            for r in &rs {
                let mut seen = HashSet::new();
                if r.table != usize::MAX {
                    for op in &r.ops {
                        let keys: HashSet<_> = op_keys(op, 1).into_iter().collect();
                        for k in keys {
                            assert!(seen.insert(k.clone()), "key {k:?} twice in one run");
                        }
                    }
                }
            }
            let plain = consecutive_runs(&m, &ops).len();
            assert!(rs.len() < plain, "{} runs regrouped vs {plain} consecutive", rs.len());
            let flat: Vec<Op> = rs.iter().flat_map(|r| r.ops.iter().map(|o| (*o).clone())).collect();
            assert_eq!(flat.len(), coalesced.len());
            let (mut a, mut b) = (MemorySink::new(Arc::clone(&m)), MemorySink::new(Arc::clone(&m)));
            let info = CommitInfo { lsn: Lsn(1), commit_ts: ts, txns: 1, rows: 1 };
            a.write(ops.clone()).await.unwrap();
            a.commit(&info).await.unwrap();
            b.write(flat).await.unwrap();
            b.commit(&info).await.unwrap();
            assert_eq!(a.committed, b.committed, "round {round}");
        }
        // interleaved tables with distinct keys (pgbench-like): one run per table and shape
        let ops: Vec<Op> = (0..1000u64)
            .flat_map(|i| {
                let row = |t: u64| {
                    vec![Cell::Text(i.to_string().into()), Cell::Text("b".into()), Cell::Text(t.to_string().into())]
                };
                [Op::Upsert { table: 0, row: row(0), ts }, Op::Upsert { table: 1, row: row(1), ts }]
            })
            .collect();
        let regroup = Regroup { cross_table: true, commutes: vec![true, true] };
        assert_eq!(consecutive_runs(&m, &ops).len(), 2000);
        assert_eq!(runs(&m, &ops, &regroup).len(), 2);
    }

    #[test]
    fn sql_shapes() {
        let m = mapping();
        let t = &m.tables[0];
        let up = build_sql(t, &Shape::Upsert, false);
        assert!(up.starts_with("INSERT INTO \"public\".\"items2\" AS t (\"body\", \"id\", \"n\")"), "{up}");
        assert!(up.contains("ON CONFLICT (\"id\") DO UPDATE SET"), "{up}");
        let upd = build_sql(t, &Shape::Update { present: vec![true, false, true], with_key: false }, true);
        assert!(upd.contains("SET \"n\" = s.o2") && !upd.contains("\"body\" ="), "{upd}");
        assert!(upd.contains("pg_xact_commit_timestamp(t.xmin) <= $4::timestamptz"), "{upd}");
        let del = build_sql(t, &Shape::Delete, false);
        assert!(del.contains("t.\"id\" = u.m0::integer"), "{del}");
    }
}

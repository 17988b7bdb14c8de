//! The PostgreSQL sink: batched `unnest` statements, pipelined, executed by a writer task while
//! the pipeline maps the next batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::apply::batch::{coalesce, op_keys, runs, Regroup, Run, Shape};
use crate::apply::conflict::Conflicts;
use crate::apply::sink::{ChangeRef, CommitInfo, Sink, SinkError, WriteStats};
use crate::checkpoint::ADVANCE_SQL;
use crate::connect::connect;
use crate::error::chain;
use crate::mapping::{Mapping, Op, OutputValue, Way};
use crate::model::{quote_ident, quote_qualified};

/// Writes into PostgreSQL with batched, pipelined statements: each run of same-shape changes
/// becomes one `unnest`-array statement, and all statements of a flush are sent without
/// waiting for each other. Driven by [`PgSink`]'s writer task.
struct PgWriter {
    client: Client,
    mapping: Arc<Mapping>,
    pipeline: String,
    in_txn: bool,
    stmts: HashMap<(usize, Shape, bool), Statement>,
    advance: Statement,
    origin_xact: Option<Statement>,
    regroup: Regroup,
    /// Conflict handling of the bidirectional tables (`None` when there are none).
    conflicts: Option<Conflicts>,
    /// Of the last `send`: building the statements, waiting for the target, statements sent.
    timing: (Duration, Duration, usize),
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
                // OVERRIDING SYSTEM VALUE: an identity column GENERATED ALWAYS takes the value carried
                "INSERT INTO {to} AS t ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM unnest({}) AS u({}){} ON CONFLICT ({}) {conflict}",
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

/// Set up a replication origin on this session so the other direction can recognise (and
/// skip) what we write. Retries while a previous session of ours still holds it.
pub async fn setup_origin(client: &Client, origin: &str) -> Result<(), SinkError> {
    client
        .execute(
            "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&origin],
        )
        .await
        .map_err(SinkError::sql("creating the replication origin"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.execute("SELECT pg_replication_origin_session_setup($1)", &[&origin]).await {
            Ok(_) => return Ok(()),
            // "replication origin ... is already active for PID ...": the backend of a killed
            // predecessor has not noticed yet
            Err(e) if Instant::now() < deadline && e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(SinkError::sql("setting up the replication origin")(e)),
        }
    }
}

/// `(v1,v2)`: the key of the row an op writes (the old key of an update).
fn key_text(op: &Op, key_len: usize) -> String {
    let key = op_keys(op, key_len).into_iter().next().unwrap_or_default();
    format!("({})", key.iter().map(|k| k.as_ref()).collect::<Vec<_>>().join(","))
}

/// Which change(s) a run writes, for errors.
fn change_ref(mapping: &Mapping, run: &Run<'_>) -> ChangeRef {
    let up_to = run.ops.iter().map(|o| o.lsn()).max();
    let lsn = up_to.filter(|l| run.ops.iter().all(|o| o.lsn() == *l));
    let (table, key) = match &run.shape {
        Shape::Truncate(tables) => {
            let names: Vec<&str> = tables.iter().map(|t| mapping.tables[*t].to_table.as_str()).collect();
            (names.join(", "), None)
        }
        _ => {
            let t = &mapping.tables[run.table];
            let key = match run.ops.as_slice() {
                [op] => Some(key_text(op, t.key_len)),
                _ => None,
            };
            (t.to_table.clone(), key)
        }
    };
    ChangeRef { table: Some(table), key, lsn, up_to, changes: run.ops.len() }
}

impl PgWriter {
    async fn connect(
        conn: &str,
        mapping: Arc<Mapping>,
        pipeline: &str,
        origin: Option<&str>,
        way: Way,
    ) -> Result<PgWriter, SinkError> {
        let setup = SinkError::sql;
        let client = connect(conn).await.map_err(setup("connecting"))?;
        // Like native logical replication: user triggers and FK triggers do not fire for
        // replicated rows (needs superuser; best effort).
        let replica = match client.batch_execute("SET session_replication_role = replica").await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot SET session_replication_role = replica; triggers will fire on applied rows");
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
                .await
                .map_err(|source| SinkError::Sql {
                    doing: "reading the indexes",
                    at: ChangeRef { table: Some(t.to_table.clone()), ..ChangeRef::default() },
                    source,
                })?
                .get(0);
            commutes.push(replica && n <= 1);
        }
        let regroup = Regroup { cross_table: replica, commutes };
        // Every apply statement is a key lookup driven by unnest() arrays: the generic plan
        // (nested loop over the key index) is right for any batch size, while custom plans would
        // be re-planned per execution and, seeing thousands of array elements, may pick a hash
        // join over a sequential scan of the whole table.
        //
        // The generic plan is made once, at a statement's first execution, and kept for the
        // session (until the table's statistics change). Planned while the table is still small
        // (a table that starts empty and fills through the stream), a join with the unnest() is
        // cheapest as a hash join over a sequential scan, and that plan then stays: measured in
        // the lag benchmark (loaded machine), history's DELETE took 8.9 ms per execution with
        // ~40k rows, against ~0.1 ms through the index. Seq scans and hash/merge joins are
        // therefore disabled on this session (penalised, not forbidden: a statement with no
        // usable index still runs), so the plan is the index lookup whatever the table's size
        // when it was made. The target's key
        // always has a unique index (a requirement of the upserts).
        //
        // Commits are durable on the target before they return (`synchronous_commit = local`:
        // the target's own WAL flush, not its standbys'): the pipeline confirms a commit's LSN to
        // the source as soon as it returns, and the source then no longer keeps that WAL, so an
        // asynchronous commit lost in a crash of the target server would be a transaction lost
        // for good (PostgreSQL's own apply worker commits asynchronously only because it
        // confirms no further than the subscriber's flushed WAL). `local` also overrides a
        // server-wide `synchronous_commit = off` on the target.
        client
            .batch_execute(
                "SET synchronous_commit = local; SET plan_cache_mode = force_generic_plan; \
                 SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off",
            )
            .await
            .map_err(setup("setting up the session"))?;
        if let Some(o) = origin {
            setup_origin(&client, o).await?;
        }
        let conflicts = Conflicts::setup(&client, &mapping, pipeline, way, origin)
            .await
            .map_err(setup("setting up conflict detection"))?;
        let advance = client.prepare(ADVANCE_SQL).await.map_err(setup("preparing the checkpoint statement"))?;
        let origin_xact = match origin {
            Some(_) => Some(
                client
                    .prepare("SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, $2)")
                    .await
                    .map_err(setup("preparing the origin statement"))?,
            ),
            None => None,
        };
        Ok(PgWriter {
            client,
            mapping,
            pipeline: pipeline.to_string(),
            in_txn: false,
            stmts: HashMap::new(),
            advance,
            origin_xact,
            regroup,
            conflicts,
            timing: Default::default(),
        })
    }

    /// The (cached) prepared statement of a run.
    async fn statement(&mut self, run: &Run<'_>) -> Result<Statement, tokio_postgres::Error> {
        let lww = self.lww_sql(run.table);
        let key = (run.table, run.shape.clone(), lww);
        if let Some(s) = self.stmts.get(&key) {
            return Ok(s.clone());
        }
        let sql = match &run.shape {
            // Prepared like everything else: an unprepared statement would need an extra round
            // trip and so overtake the statements pipelined before it.
            Shape::Truncate(tables) => {
                let list: Vec<String> =
                    tables.iter().map(|t| quote_qualified(&self.mapping.tables[*t].to_table)).collect();
                format!("TRUNCATE {}", list.join(", "))
            }
            shape => build_sql(&self.mapping.tables[run.table], shape, lww),
        };
        let st = self.client.prepare(&sql).await?;
        self.stmts.insert(key, st.clone());
        Ok(st)
    }

    /// Does a run of `table` carry the last-writer-wins condition in its SQL? Not when conflicts
    /// are decided before the write ([`Conflicts::resolve`]), which is always the case for
    /// bidirectional tables now; kept for a sink without conflict handling.
    fn lww_sql(&self, table: usize) -> bool {
        table != usize::MAX && self.mapping.tables[table].lww && self.conflicts.is_none()
    }

    /// Roll the open transaction back after `source` failed and say what failed.
    async fn abort(&mut self, doing: &'static str, at: ChangeRef, source: tokio_postgres::Error) -> SinkError {
        self.in_txn = false;
        if let Some(c) = self.conflicts.as_mut() {
            c.rolled_back();
        }
        let _ = self.client.batch_execute("ROLLBACK").await;
        SinkError::Sql { doing, at, source }
    }

    async fn begin(&mut self) -> Result<(), SinkError> {
        if !self.in_txn {
            self.client.batch_execute("BEGIN").await.map_err(SinkError::sql("beginning a transaction"))?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Write `ops`, and with `commit` also commit: the statements go out pipelined — `BEGIN`
    /// when no transaction is open, one statement per run, then (with `commit`) the origin's
    /// and the checkpoint's statements and `COMMIT` — so a small source transaction costs one
    /// round trip to the target instead of four. The checkpoint still lands in the same target
    /// transaction as the rows: a failing statement makes the pipelined `COMMIT` a rollback,
    /// and the first failure is the one reported.
    ///
    /// With conflict detection the rows are looked up (and locked) inside the transaction
    /// before the writes, and the horizon is persisted after them, so those round trips stay.
    async fn send(&mut self, ops: Vec<Op>, commit: Option<&CommitInfo>) -> Result<WriteStats, SinkError> {
        let mapping = Arc::clone(&self.mapping);
        let mut stats = WriteStats::default();
        let ops = if self.conflicts.is_some() {
            self.begin().await?;
            let c = self.conflicts.as_mut().expect("checked");
            match c.resolve(&self.client, &mapping, ops).await {
                Ok((ops, resolved)) => {
                    stats.conflicts = resolved.conflicts;
                    stats.conflicts_kept_local = resolved.kept_local;
                    ops
                }
                Err(source) => {
                    let at = ChangeRef { table: None, ..ChangeRef::default() };
                    return Err(self.abort("looking up conflicting rows", at, source).await);
                }
            }
        } else {
            ops
        };
        let t0 = Instant::now();
        let ops = coalesce(&mapping, ops, &self.regroup);
        let runs = runs(&mapping, &ops, &self.regroup);
        // Prepare (cached) statements first, then send everything pipelined.
        let mut work: Vec<(Statement, Params<'_>)> = Vec::with_capacity(runs.len());
        for r in &runs {
            let st = match self.statement(r).await {
                Ok(st) => st,
                Err(source) => return Err(self.abort("preparing", change_ref(&mapping, r), source).await),
            };
            let params = match &r.shape {
                Shape::Truncate(_) => Vec::new(),
                _ => params_for(&mapping.tables[r.table], r, self.lww_sql(r.table)),
            };
            work.push((st, params));
        }
        // the commit goes in the same burst unless the conflict horizon must be persisted first
        let tail = commit.filter(|_| self.conflicts.is_none());
        let lsn = tail.map(|i| i.lsn.to_string()).unwrap_or_default();
        let client = &self.client;
        let mut steps: Vec<(Step, Pending<'_>)> = Vec::with_capacity(work.len() + 4);
        if !self.in_txn {
            steps.push((Step::Begin, Box::pin(async move { client.batch_execute("BEGIN").await.map(|()| 0) })));
        }
        for (i, (st, params)) in work.iter().enumerate() {
            steps.push((
                Step::Run(i),
                Box::pin(async move {
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
                    client.execute(st, &refs).await
                }),
            ));
        }
        if let Some(info) = tail {
            let lsn = &lsn;
            if let Some(st) = &self.origin_xact {
                steps.push((Step::Tail, Box::pin(async move { client.execute(st, &[lsn, &info.commit_ts]).await })));
            }
            let (advance, pipeline) = (&self.advance, &self.pipeline);
            steps.push((
                Step::Tail,
                Box::pin(async move {
                    client.execute(advance, &[pipeline, lsn, &info.commit_ts, &info.txns, &info.rows]).await
                }),
            ));
            steps.push((Step::Tail, Box::pin(async move { client.batch_execute("COMMIT").await.map(|()| 0) })));
        }
        let (labels, futs): (Vec<Step>, Vec<Pending<'_>>) = steps.into_iter().unzip();
        // join_all polls in order, so the requests go out in this order (each is sent on its
        // first poll), and their answers come back in it
        let t1 = Instant::now();
        let n_steps = futs.len();
        let results = futures::future::join_all(futs).await;
        self.timing = (t1 - t0, t1.elapsed(), n_steps);
        self.in_txn = true;
        for (label, r) in labels.into_iter().zip(results) {
            match r {
                Ok(n) => {
                    if let Step::Run(_) = label {
                        stats.rows += n;
                    }
                }
                // in order: the statements after a failed one only report the aborted transaction
                Err(source) => {
                    let (doing, at) = match label {
                        Step::Begin => ("beginning a transaction", ChangeRef::default()),
                        Step::Run(i) => ("writing", change_ref(&mapping, &runs[i])),
                        Step::Tail => {
                            let up_to = commit.map(|i| i.lsn);
                            ("committing", ChangeRef { up_to, ..ChangeRef::default() })
                        }
                    };
                    return Err(self.abort(doing, at, source).await);
                }
            }
        }
        match commit {
            Some(_) if tail.is_some() => self.in_txn = false,
            Some(info) => self.commit(info).await?,
            None => {}
        }
        Ok(stats)
    }

    /// Persist the conflict horizon, record the checkpoint and commit (the origin's and the
    /// checkpoint's statements and `COMMIT` pipelined).
    async fn commit(&mut self, info: &CommitInfo) -> Result<(), SinkError> {
        self.begin().await?;
        let lsn = info.lsn.to_string();
        let r = async {
            if let Some(c) = self.conflicts.as_mut() {
                c.persist(&self.client).await?;
            }
            let client = &self.client;
            let origin = async {
                match &self.origin_xact {
                    Some(st) => client.execute(st, &[&lsn, &info.commit_ts]).await,
                    None => Ok(0),
                }
            };
            let params: [&(dyn ToSql + Sync); 5] = [&self.pipeline, &lsn, &info.commit_ts, &info.txns, &info.rows];
            let advance = client.execute(&self.advance, &params);
            let (o, a, c) = futures::join!(origin, advance, client.batch_execute("COMMIT"));
            o?;
            a?;
            c
        }
        .await;
        match r {
            Ok(()) => {
                self.in_txn = false;
                Ok(())
            }
            Err(source) => {
                let at = ChangeRef { up_to: Some(info.lsn), ..ChangeRef::default() };
                Err(self.abort("committing", at, source).await)
            }
        }
    }
}

/// A request sent to the target whose answer is awaited.
type Pending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// What a pipelined request is, to say what failed.
#[derive(Clone, Copy)]
enum Step {
    Begin,
    /// Run number `i` of the batch.
    Run(usize),
    /// The origin's or the checkpoint's statement, or `COMMIT`.
    Tail,
}

enum WriterJob {
    Write(Vec<Op>),
    Echo(chrono::DateTime<chrono::Utc>),
    /// Write the ops (may be empty), then commit.
    Commit(Vec<Op>, CommitInfo, tokio::sync::oneshot::Sender<Result<WriteStats, SinkError>>, Instant),
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
    /// Connect to the written side. `origin` is set on the session (loop prevention); `way` is
    /// the direction written (which side a conflict's incoming change comes from).
    pub async fn connect(
        conn: &str,
        mapping: Arc<Mapping>,
        pipeline: &str,
        origin: Option<&str>,
        way: Way,
    ) -> Result<PgSink, SinkError> {
        let mut writer = PgWriter::connect(conn, mapping, pipeline, origin, way).await?;
        let (jobs, mut rx) = tokio::sync::mpsc::channel::<WriterJob>(2);
        let failed: Arc<std::sync::Mutex<Option<SinkError>>> = Arc::default();
        let fail = Arc::clone(&failed);
        tokio::spawn(async move {
            let mut stats = WriteStats::default();
            let mut aborted = false;
            while let Some(job) = rx.recv().await {
                match job {
                    WriterJob::Write(ops) => {
                        if aborted {
                            continue;
                        }
                        match writer.send(ops, None).await {
                            Ok(s) => {
                                stats.rows += s.rows;
                                stats.conflicts += s.conflicts;
                                stats.conflicts_kept_local += s.conflicts_kept_local;
                            }
                            Err(e) => {
                                *fail.lock().expect("not poisoned") = Some(e);
                                aborted = true;
                            }
                        }
                    }
                    WriterJob::Echo(ts) => {
                        if let Some(c) = writer.conflicts.as_mut() {
                            c.note_echo(ts);
                        }
                    }
                    WriterJob::Commit(ops, info, reply, sent) => {
                        let got = Instant::now();
                        let r = if aborted {
                            Err(fail.lock().expect("not poisoned").take().unwrap_or(SinkError::Aborted))
                        } else {
                            writer.send(ops, Some(&info)).await.map(|s| WriteStats {
                                rows: stats.rows + s.rows,
                                conflicts: stats.conflicts + s.conflicts,
                                conflicts_kept_local: stats.conflicts_kept_local + s.conflicts_kept_local,
                            })
                        };
                        tracing::debug!(
                            queue_us = (got - sent).as_micros() as u64,
                            build_us = writer.timing.0.as_micros() as u64,
                            target_us = writer.timing.1.as_micros() as u64,
                            statements = writer.timing.2,
                            "target commit"
                        );
                        stats = WriteStats::default();
                        aborted = false;
                        let _ = reply.send(r);
                    }
                }
            }
        });
        Ok(PgSink { jobs, failed })
    }
}

impl Sink for PgSink {
    async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
        if let Some(e) = self.failed.lock().expect("not poisoned").take() {
            return Err(e);
        }
        self.jobs.send(WriterJob::Write(ops)).await.map_err(|_| SinkError::WriterGone)?;
        Ok(WriteStats::default())
    }

    async fn commit(&mut self, info: &CommitInfo) -> Result<WriteStats, SinkError> {
        self.write_commit(Vec::new(), info).await
    }

    async fn write_commit(&mut self, ops: Vec<Op>, info: &CommitInfo) -> Result<WriteStats, SinkError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.send(WriterJob::Commit(ops, *info, tx, Instant::now())).await.map_err(|_| SinkError::WriterGone)?;
        rx.await.map_err(|_| SinkError::WriterGone)?
    }

    async fn note_echo(&mut self, ts: chrono::DateTime<chrono::Utc>) -> Result<(), SinkError> {
        self.jobs.send(WriterJob::Echo(ts)).await.map_err(|_| SinkError::WriterGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::testing::mapping;

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

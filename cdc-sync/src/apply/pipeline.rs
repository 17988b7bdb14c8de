//! The apply engine: reads a [`ChangeStream`], maps each change, writes batches to a [`Sink`],
//! commits them with the checkpoint, then confirms to the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::apply::sink::{ChangeRef, CommitInfo, Sink, SinkError};
use crate::checkpoint::CheckpointError;
use crate::config::SkipOrigins;
use crate::error::{chain, ErrorKind, ServerError};
use crate::mapping::{MapError, Mapping, Op};
use crate::model::{Lsn, RelationInfo, SourceMessage};
use crate::schema::{self, SchemaChange};
use crate::source::{ChangeStream, SourceError};
use crate::status::{ErrorReport, Metrics};

/// Why a pipeline attempt ended. [`PipelineError::kind`] decides whether to resume from the
/// checkpoint or stop.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source side failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The target side failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The mapping cannot be applied (schema drift): needs a human.
    #[error(transparent)]
    Map(#[from] MapError),
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A table's shape changed at the source (seen in a Relation message) in a way the mapping
    /// does not fit: a read column dropped or retyped (needs a human), or new columns to carry.
    #[error(transparent)]
    Schema(#[from] Box<SchemaChange>),
    /// Not a failure: [`PipelineOptions::stop_before`] was reached, everything committed before
    /// that transaction is applied and checkpointed.
    #[error("stopped before the source transaction committing at {0}, as asked")]
    Fenced(Lsn),
    /// Carrying new columns (adding them to the target, mapping again) failed.
    #[error(transparent)]
    Reshape(#[from] crate::apply::ddl::ReshapeError),
}

impl PipelineError {
    /// The kind, from the side that failed.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::Source(e) => e.kind(),
            PipelineError::Sink(e) => e.kind(),
            PipelineError::Map(_) | PipelineError::Schema(_) => ErrorKind::Schema,
            PipelineError::Checkpoint(e) => e.kind(),
            PipelineError::Fenced(_) => ErrorKind::Other,
            PipelineError::Reshape(e) => e.kind(),
        }
    }

    /// Should the pipeline stop for good rather than reconnect and resume?
    pub fn is_fatal(&self) -> bool {
        !self.kind().is_transient()
    }

    /// The target change the error is about, if it is tied to one.
    pub fn change(&self) -> Option<&ChangeRef> {
        match self {
            PipelineError::Sink(e) => e.change(),
            _ => None,
        }
    }

    /// What `/status` and the log show about it.
    pub fn report(&self, attempts: u32) -> ErrorReport {
        let server = ServerError::of(self);
        let hint = match self {
            PipelineError::Sink(_) => schema::written_side_hint(server.sqlstate.as_deref()),
            _ => None,
        };
        let at = self.change();
        let kind = self.kind();
        let table = match self {
            PipelineError::Map(m) => Some(m.table().to_string()),
            PipelineError::Schema(s) => Some(s.table().to_string()),
            _ => at.and_then(|c| c.table.clone()),
        };
        let schema_at = match self {
            PipelineError::Schema(s) => Some(s.at().to_string()),
            _ => None,
        };
        ErrorReport {
            kind: kind.as_str().to_string(),
            retryable: kind.is_transient(),
            table,
            key: at.and_then(|c| c.key.clone()),
            lsn: at.and_then(|c| c.lsn).map(|l| l.to_string()).or(schema_at),
            sqlstate: server.sqlstate,
            message: server.message,
            detail: server.detail,
            error: chain(self),
            attempts,
            at: Utc::now().to_rfc3339(),
            hint,
        }
    }
}

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
    /// Apply source transactions whose commit LSN is at or below this one change per write and
    /// one transaction per commit, so that a failing change is named exactly (the runner sets
    /// it after a batch failed without naming its row).
    pub isolate_through: Option<Lsn>,
    /// The opposite direction's origin: its transactions on the read side are echoes of the
    /// written side's versions, which the sink's conflict detection follows
    /// ([`Sink::note_echo`]). `None`: not followed.
    pub echo_origin: Option<String>,
    /// Commit what precedes the source transaction committing at this LSN, then end with
    /// [`PipelineError::Fenced`] (the runner sets it to act on a schema change with the
    /// checkpoint right before the transaction that met it).
    pub stop_before: Option<Lsn>,
    /// Compare column types in Relation messages only for transactions committed after this
    /// LSN (when the mapping's types were read from the catalog).
    pub types_checked_after: Lsn,
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
    /// Per mapping index (missing = none): changes committed before this LSN may land on rows
    /// already newer than them (a resumed snapshot copy) and are applied by
    /// [`super::replay::onto_newer_rows`].
    pub table_replay_until: Vec<Lsn>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

struct Txn {
    commit_lsn: Lsn,
    ts: DateTime<Utc>,
    replayed: bool,
    /// Tagged with an origin in the skip set: not applied.
    origin: bool,
    /// Tagged with [`PipelineOptions::echo_origin`].
    echo: bool,
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
        // the oldest source commit in the open target transaction (for the per-commit timing log)
        let mut first_ts = Utc::now();
        let isolate_through = self.options.isolate_through;
        let isolating = |commit_lsn: Lsn| isolate_through.is_some_and(|l| commit_lsn <= l);
        // Relation messages not yet compared with the mapping: checked at the table's next
        // applied change (a replayed or skipped transaction may carry an older shape).
        let mut relations: std::collections::HashMap<Arc<str>, RelationInfo> = Default::default();
        loop {
            let msg = self.stream.next().await?;
            match msg {
                SourceMessage::Begin { final_lsn, .. }
                    if final_lsn >= self.checkpoint && self.options.stop_before.is_some_and(|s| final_lsn >= s) =>
                {
                    if let Some(info) = pending.take() {
                        self.commit(&mut ops, &info).await?;
                        self.stream.confirm(info.lsn);
                        self.metrics.note_commit(info.lsn, info.commit_ts, info.txns, info.rows);
                    }
                    return Err(PipelineError::Fenced(final_lsn));
                }
                SourceMessage::Begin { final_lsn, commit_ts, .. } => {
                    cur = Some(Txn {
                        commit_lsn: final_lsn,
                        ts: commit_ts,
                        replayed: final_lsn < self.checkpoint,
                        origin: false,
                        echo: false,
                        rows: 0,
                    });
                }
                SourceMessage::Origin { name } => {
                    if let Some(t) = cur.as_mut() {
                        t.origin = self.options.skip_origins.skips(&name);
                        t.echo = self.options.echo_origin.as_deref() == Some(name.as_str())
                            && self.mapping.tables.iter().any(|t| t.lww);
                    }
                }
                SourceMessage::Relation(r) => {
                    if !self.mapping.indexes_of(&r.table).is_empty() {
                        relations.insert(Arc::clone(&r.table), r);
                    }
                }
                SourceMessage::Change(c) => {
                    let Some(t) = cur.as_mut() else { continue };
                    if t.replayed || t.origin {
                        continue;
                    }
                    if let Some(rel) = relations.remove(&c.table) {
                        let check_types = t.commit_lsn > self.options.types_checked_after;
                        for &i in self.mapping.indexes_of(&c.table) {
                            let new = schema::check(&self.mapping.tables[i], &rel, t.commit_lsn, check_types)?;
                            for col in new {
                                if self.metrics.note_unmapped(&rel.table, &col) {
                                    tracing::warn!(table = %rel.table, column = %col, to_table = %self.mapping.tables[i].to_table,
                                        "unmapped source column: not carried to the target (map it in sync.toml, or set add_columns = \"propagate\")");
                                }
                            }
                        }
                    }
                    // One op per target table the source table maps to (fan-out).
                    let mut mapped = false;
                    for &i in self.mapping.indexes_of(&c.table) {
                        if t.commit_lsn < self.table_floor[i] {
                            continue;
                        }
                        let op = self.mapping.tables[i].map_change(i, &c, t.commit_lsn, t.ts)?;
                        if self.table_replay_until.get(i).is_some_and(|l| t.commit_lsn < *l) {
                            ops.extend(super::replay::onto_newer_rows(op, self.mapping.tables[i].key_len));
                        } else {
                            ops.push(op);
                        }
                        mapped = true;
                    }
                    if !mapped {
                        continue;
                    }
                    t.rows += 1;
                    if ops.len() >= batch || isolating(t.commit_lsn) {
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
                        ops.push(Op::Truncate { tables: idx, lsn: t.commit_lsn });
                        t.rows += 1;
                        if isolating(t.commit_lsn) {
                            self.flush(&mut ops, &mut open).await?;
                        }
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
                    let echo = t.origin && t.echo;
                    if echo {
                        // the ops before it were made before the echo: write them first
                        self.flush(&mut ops, &mut open).await?;
                        self.sink.note_echo(t.ts).await?;
                    }
                    let applied = !t.origin;
                    // an echo is committed (not just confirmed) so that the horizon it moved is
                    // persisted with the checkpoint
                    if pending.is_none() && ops.is_empty() && !open && !applied && !echo {
                        // Nothing of ours in flight: the slot may pass this skipped transaction.
                        self.stream.confirm(end_lsn);
                        self.metrics.note_commit(end_lsn, commit_ts, 0, 0);
                        continue;
                    }
                    if pending.is_none() {
                        started = Instant::now();
                        first_ts = commit_ts;
                    }
                    let p = pending.get_or_insert(CommitInfo { lsn: end_lsn, commit_ts, txns: 0, rows: 0 });
                    p.lsn = end_lsn;
                    if applied {
                        // only our own transactions' times stamp the rows (last writer wins)
                        p.commit_ts = commit_ts;
                        p.txns += 1;
                        p.rows += t.rows;
                    }
                    if isolating(t.commit_lsn)
                        || !self.stream.pending()
                        || ops.len() >= batch
                        || started.elapsed() >= self.options.max_batch_age
                    {
                        let info = pending.take().expect("set above");
                        let seen = Utc::now();
                        self.commit(&mut ops, &info).await?;
                        open = false;
                        if tracing::enabled!(tracing::Level::DEBUG) {
                            // where a transaction's lag goes: from its source commit to the
                            // pipeline seeing it (walsender, reader, queue), then the target
                            // round trip; the oldest one waited for the batch too
                            let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
                            let done = Utc::now();
                            tracing::debug!(
                                txns = info.txns,
                                rows = info.rows,
                                seen_ms = ms(seen - commit_ts),
                                commit_ms = ms(done - seen),
                                oldest_ms = ms(done - first_ts),
                                "applied"
                            );
                        }
                        self.stream.confirm(info.lsn);
                        self.metrics.note_commit(info.lsn, info.commit_ts, info.txns, info.rows);
                    }
                }
                SourceMessage::Idle { wal_end } => {
                    if cur.is_some() {
                        continue; // a keepalive inside a transaction being sent
                    }
                    // nothing follows for now: commit what waits for more
                    if let Some(info) = pending.take() {
                        self.commit(&mut ops, &info).await?;
                        open = false;
                        self.stream.confirm(info.lsn);
                        self.metrics.note_commit(info.lsn, info.commit_ts, info.txns, info.rows);
                    }
                    // Everything before the keepalive is applied or skipped: the slot may pass
                    // what the server had for it up to there (transactions on other tables, or
                    // none), so that a quiet slot does not hold the source's WAL. Not past a
                    // fence: what is beyond it belongs to whoever resumes there.
                    if ops.is_empty() && !open && self.options.stop_before.is_none_or(|s| wal_end < s) {
                        self.stream.confirm(wal_end);
                    }
                }
            }
        }
    }

    /// Write what is left of the batch and commit it with the checkpoint, as one sink step (one
    /// round trip to a PostgreSQL target).
    async fn commit(&mut self, ops: &mut Vec<Op>, info: &CommitInfo) -> Result<(), PipelineError> {
        let batch = std::mem::replace(ops, Vec::with_capacity(self.options.batch_rows.clamp(1, 65536)));
        let stats = self.sink.write_commit(batch, info).await?;
        self.metrics.note_conflicts(stats.conflicts, stats.conflicts_kept_local);
        Ok(())
    }

    async fn flush(&mut self, ops: &mut Vec<Op>, open: &mut bool) -> Result<(), PipelineError> {
        if ops.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(ops, Vec::with_capacity(self.options.batch_rows.clamp(1, 65536)));
        let stats = self.sink.write(batch).await?;
        self.metrics.note_conflicts(stats.conflicts, stats.conflicts_kept_local);
        *open = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::memory_sink::MemorySink;
    use crate::apply::sink::WriteStats;
    use crate::apply::testing::mapping;
    use crate::model::{Cell, ChangeKind, RelationInfo, Row, RowChange};
    use crate::source::ScriptedStream;

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
                isolate_through: None,
                echo_origin: None,
                stop_before: None,
                types_checked_after: Lsn(0),
            },
            checkpoint,
            table_floor: vec![Lsn(0)],
            table_replay_until: vec![],
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

    /// A keepalive after everything was applied lets the slot pass the server's position (a
    /// slot whose tables are quiet must not hold the source's WAL), after committing what waited
    /// for more; one that comes inside a transaction being sent does not.
    #[tokio::test]
    async fn a_keepalive_with_nothing_in_flight_is_confirmed() {
        let mut msgs = tx(100, None, vec![ChangeKind::Insert { new: r("1", Some("a"), "0") }]);
        msgs.push(SourceMessage::Idle { wal_end: Lsn(500) });
        let (sink, res, confirmed) = run(msgs, Lsn(0)).await;
        assert!(ended(&res), "{res:?}");
        assert_eq!(sink.checkpoint.unwrap().lsn, Lsn(101), "the transaction before it is committed");
        assert_eq!(confirmed, Lsn(500));

        let mut msgs = tx(100, None, vec![ChangeKind::Insert { new: r("1", Some("a"), "0") }]);
        msgs.extend(tx(600, None, vec![ChangeKind::Insert { new: r("2", Some("a"), "0") }]));
        msgs.insert(msgs.len() - 2, SourceMessage::Idle { wal_end: Lsn(500) }); // after 600's Begin
        let (sink, res, confirmed) = run(msgs, Lsn(0)).await;
        assert!(ended(&res), "{res:?}");
        assert_eq!(sink.checkpoint.unwrap().lsn, Lsn(601));
        assert_eq!(confirmed, Lsn(601), "the keepalive inside 600 confirmed nothing on its own");
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
            type_oids: vec![],
        })];
        msgs.extend(tx(100, None, vec![ChangeKind::Insert { new: r("1", Some("a"), "0") }]));
        let (_, res, _) = run(msgs, Lsn(0)).await;
        let e = res.unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("mapped column body of public.items"), "{e}");
        let r = e.report(1);
        assert_eq!((r.kind.as_str(), r.retryable, r.table.as_deref()), ("schema", false, Some("public.items")));
        assert_eq!((&r.sqlstate, &r.key, r.lsn.as_deref()), (&None, &None, Some("0/64")));
        assert!(r.message.contains("mapped column body of public.items"), "{r:?}");
    }

    /// One sink call: a write of this many ops, or a commit at this LSN.
    type Call = (usize, Option<Lsn>);

    /// Records the size of every write and every commit's LSN.
    #[derive(Default)]
    struct Recording {
        log: Arc<std::sync::Mutex<Vec<Call>>>,
    }
    impl Sink for Recording {
        async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
            self.log.lock().unwrap().push((ops.len(), None));
            Ok(WriteStats::default())
        }
        async fn commit(&mut self, info: &CommitInfo) -> Result<WriteStats, SinkError> {
            self.log.lock().unwrap().push((0, Some(info.lsn)));
            Ok(WriteStats::default())
        }
    }

    #[tokio::test]
    async fn isolating_writes_one_change_and_commits_one_transaction_at_a_time() {
        let three = |base: u64| {
            (0..3).map(|i| ChangeKind::Insert { new: r(&(base + i).to_string(), Some("b"), "0") }).collect::<Vec<_>>()
        };
        let mut msgs = tx(100, None, three(10));
        msgs.extend(tx(200, None, three(20)));
        msgs.extend(tx(300, None, three(30)));
        msgs.extend(tx(400, None, three(40)));
        let sink = Recording::default();
        let log = Arc::clone(&sink.log);
        let p = Pipeline {
            stream: ScriptedStream::new(msgs),
            sink,
            mapping: mapping(),
            options: PipelineOptions {
                name: "t".into(),
                batch_rows: 5000,
                max_batch_age: Duration::from_secs(60),
                skip_origins: SkipOrigins::default(),
                isolate_through: Some(Lsn(200)),
                echo_origin: None,
                stop_before: None,
                types_checked_after: Lsn(0),
            },
            checkpoint: Lsn(0),
            table_floor: vec![Lsn(0)],
            table_replay_until: vec![],
            metrics: Arc::new(Metrics::default()),
        };
        assert!(matches!(p.run().await, Err(PipelineError::Source(SourceError::Ended))));
        let got = log.lock().unwrap().clone();
        // through LSN 200: one change per write, a commit per transaction; then batched as usual
        // (the stream has more pending, so 300 and 400 share one target transaction)
        let want = vec![
            (1, None),
            (1, None),
            (1, None),
            (0, Some(Lsn(101))),
            (1, None),
            (1, None),
            (1, None),
            (0, Some(Lsn(201))),
            (6, None),
            (0, Some(Lsn(401))),
        ];
        assert_eq!(got, want);
    }

    /// Records what the pipeline asks of its sink, in order.
    struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);
    impl Sink for Recorder {
        async fn write(&mut self, ops: Vec<Op>) -> Result<WriteStats, SinkError> {
            let lsns: Vec<String> = ops.iter().map(|o| o.lsn().0.to_string()).collect();
            self.0.lock().unwrap().push(format!("write {}", lsns.join(",")));
            Ok(WriteStats::default())
        }
        async fn commit(&mut self, info: &CommitInfo) -> Result<WriteStats, SinkError> {
            self.0.lock().unwrap().push(format!("commit {}", info.lsn.0));
            Ok(WriteStats::default())
        }
        async fn note_echo(&mut self, _ts: DateTime<Utc>) -> Result<(), SinkError> {
            self.0.lock().unwrap().push("echo".into());
            Ok(())
        }
    }

    async fn record(msgs: Vec<SourceMessage>, bidirectional: bool) -> Vec<String> {
        let mut m = (*mapping()).clone();
        m.tables[0].lww = bidirectional;
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let p = Pipeline {
            stream: ScriptedStream::new(msgs),
            sink: Recorder(Arc::clone(&events)),
            mapping: Arc::new(m),
            options: PipelineOptions {
                name: "t".into(),
                batch_rows: 100,
                max_batch_age: Duration::from_secs(60),
                skip_origins: SkipOrigins::new(["cdc_sync_t_rev".to_string()]),
                isolate_through: None,
                echo_origin: Some("cdc_sync_t_rev".into()),
                stop_before: None,
                types_checked_after: Lsn(0),
            },
            checkpoint: Lsn(0),
            table_floor: vec![Lsn(0)],
            table_replay_until: vec![],
            metrics: Arc::new(Metrics::default()),
        };
        assert!(ended(&p.run().await));
        let v = events.lock().unwrap().clone();
        v
    }

    #[tokio::test]
    async fn an_echo_reaches_the_sink_after_the_changes_made_before_it_and_is_committed() {
        let ins = |id: &str| vec![ChangeKind::Insert { new: r(id, Some("b"), "0") }];
        let mut msgs = tx(100, None, ins("1"));
        msgs.extend(tx(200, Some("cdc_sync_t_rev"), ins("9")));
        msgs.extend(tx(300, None, ins("2")));
        let events = record(msgs, true);
        let events = events.await;
        let at = |e: &str| events.iter().position(|x| x == e).unwrap_or_else(|| panic!("no {e:?} in {events:?}"));
        // the change before the echo is handed over before it, the one after it after
        assert!(at("write 100") < at("echo") && at("echo") < at("write 300"), "{events:?}");
        assert!(
            !events.iter().any(|e| e.contains("200,") || e.ends_with(" 200")),
            "the echo is not applied: {events:?}"
        );
        // an echo alone is committed (so the horizon it moved is persisted), not just confirmed
        let events = record(tx(200, Some("cdc_sync_t_rev"), ins("9")), true).await;
        assert_eq!(events, ["echo", "commit 201"]);
        // without bidirectional tables there is nothing to follow: skipped and confirmed only
        let events = record(tx(200, Some("cdc_sync_t_rev"), ins("9")), false).await;
        assert!(events.is_empty(), "{events:?}");
    }

    #[tokio::test]
    async fn stop_before_commits_what_precedes_and_ends_fenced() {
        let mut msgs = tx(100, None, vec![ChangeKind::Insert { new: r("1", Some("b"), "0") }]);
        msgs.extend(tx(150, None, vec![ChangeKind::Insert { new: r("2", Some("b"), "0") }]));
        msgs.extend(tx(200, None, vec![ChangeKind::Insert { new: r("3", Some("b"), "0") }]));
        let sink = Recording::default();
        let log = Arc::clone(&sink.log);
        let stream = ScriptedStream::new(msgs);
        let confirmed = Arc::clone(&stream.confirmed);
        let p = Pipeline {
            stream,
            sink,
            mapping: mapping(),
            options: PipelineOptions {
                name: "t".into(),
                batch_rows: 5000,
                max_batch_age: Duration::from_secs(60),
                skip_origins: SkipOrigins::default(),
                isolate_through: None,
                echo_origin: None,
                stop_before: Some(Lsn(200)),
                types_checked_after: Lsn(0),
            },
            checkpoint: Lsn(0),
            table_floor: vec![Lsn(0)],
            table_replay_until: vec![],
            metrics: Arc::new(Metrics::default()),
        };
        let e = p.run().await.unwrap_err();
        assert!(matches!(e, PipelineError::Fenced(Lsn(200))), "{e:?}");
        // 100 and 150 are group-committed together (the stream had more pending), 200 not at all
        assert_eq!(log.lock().unwrap().clone(), vec![(2, None), (0, Some(Lsn(151)))]);
        assert_eq!(*confirmed.lock().unwrap(), Lsn(151));
    }

    #[tokio::test]
    async fn a_relation_is_checked_at_the_next_applied_change_of_its_table() {
        let rel = |cols: &[&str]| {
            SourceMessage::Relation(RelationInfo {
                table: "public.items".into(),
                columns: cols.iter().map(|c| Arc::from(*c)).collect(),
                type_oids: vec![],
            })
        };
        // an older shape (body missing) inside a transaction already applied: not checked; the
        // next applied transaction brings the current shape
        let mut msgs = tx(100, None, vec![]);
        msgs.insert(1, rel(&["id", "n"]));
        msgs.insert(
            2,
            SourceMessage::Change(RowChange {
                table: "public.items".into(),
                kind: ChangeKind::Insert { new: r("1", Some("a"), "0") },
            }),
        );
        let mut next = tx(200, None, vec![ChangeKind::Insert { new: r("2", Some("b"), "0") }]);
        next.insert(1, rel(&["id", "body", "n"]));
        msgs.extend(next);
        let (sink, res, _) = run(msgs.clone(), Lsn(150)).await;
        assert!(ended(&res), "{res:?}");
        assert_eq!(sink.committed[0].len(), 1);
        // the same older shape in a transaction to apply stops it before any of its rows
        let (sink, res, confirmed) = run(msgs, Lsn(0)).await;
        assert!(
            matches!(res, Err(PipelineError::Schema(ref s)) if matches!(**s, SchemaChange::Dropped { .. })),
            "{res:?}"
        );
        assert!(sink.committed[0].is_empty() && confirmed == Lsn(0));
    }
}

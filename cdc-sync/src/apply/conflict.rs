//! Conflicts of `direction = "both"` tables: what counts as one, who wins, and the record.
//!
//! **What a conflict is.** Each side's applier stamps what it writes with its replication origin
//! and with the *original* commit time of the change (so a row version carries the time it was
//! first written, on whichever side). An incoming change of a bidirectional table conflicts when
//! the row it writes (by key; the old key for an update) exists on the written side and its
//! current version
//! - was not written by this direction's applier (its origin is none, i.e. a local write, or
//!   another pipeline's), and
//! - had not reached the other side when the other side made the incoming change.
//!
//! The second point is read from the stream itself: what this direction's opposite applier
//! writes on the other side is tagged with its origin (the "echo"), and the stream skips it but
//! notes its commit time, which is the original commit time on the written side. The largest
//! such time seen so far in stream order is the *horizon*: every written-side version committed
//! at or before it had been carried to the other side before the changes that follow in the
//! stream. So a version newer than the horizon was still unseen over there: both sides changed
//! the row without seeing each other's change. The comparison is between two times of the written
//! side's own clock, so it does not depend on the two servers' clocks agreeing. The horizon is
//! persisted with the checkpoint (`cdc_sync.conflict_horizon`), so a restart keeps it.
//!
//! **Who wins** ([`ConflictPolicy`], per table): `lww` compares the two commit times (the
//! incoming change wins ties) — this one does depend on the clocks (see the crate README);
//! `source_wins` / `target_wins` name the sync file's side whose version stays, whichever way
//! the change flows. Both directions decide the same way, so both sides end with the winner.
//!
//! **An update racing a delete.** An incoming update of a row the written side no longer has is
//! a conflict too: the other side still had the row when it changed it, so the delete here was
//! unseen there (the direction carrying the delete meets the updated version as an ordinary
//! conflict). The side lacking the row has no commit time of its delete, so these pairs are
//! decided by side, the same way from both directions ([`winner_against_delete`]): `lww` lets
//! the delete win, `source_wins` / `target_wins` that side's change. An update that wins is
//! written again as the whole row (when it carries every column).
//!
//! **The record.** Every conflict is a row in `cdc_sync.conflicts` on the written side, in the
//! same transaction as the applied rows: table, key, both versions as JSON (the written side's
//! row as it was, the incoming change's columns as its side sent them), both commit times, the
//! origin of the local version, the policy, the winner and what was done.
//!
//! Rows whose commit time is unknown (written before `track_commit_timestamp` was on, or frozen)
//! never conflict. The rows looked up are locked (`FOR UPDATE`) until the apply transaction
//! commits, so a local write cannot slip in between the decision and the write.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::apply::batch::op_keys;
use crate::config::ConflictPolicy;
use crate::mapping::{DirectedTable, Mapping, Op, Way};
use crate::model::{quote_ident, quote_qualified, Cell, Lsn};

/// DDL of the conflict record and the horizon, idempotent (in the state schema `cdc_sync`).
pub const SCHEMA_SQL: &str = "\
CREATE SCHEMA IF NOT EXISTS cdc_sync;
CREATE TABLE IF NOT EXISTS cdc_sync.conflicts (
    id                 bigserial PRIMARY KEY,
    pipeline           text NOT NULL,
    table_name         text NOT NULL,
    key                text NOT NULL,
    change             text NOT NULL,
    policy             text NOT NULL,
    winner             text NOT NULL,
    decision           text NOT NULL,
    local_version      jsonb,
    incoming_version   jsonb,
    local_commit_ts    timestamptz,
    incoming_commit_ts timestamptz NOT NULL,
    local_origin       text,
    source_lsn         pg_lsn NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conflicts_pipeline_id ON cdc_sync.conflicts (pipeline, id);
-- an update meeting a row deleted on the written side has no local version nor its time
ALTER TABLE cdc_sync.conflicts ALTER COLUMN local_commit_ts DROP NOT NULL;
CREATE TABLE IF NOT EXISTS cdc_sync.conflict_horizon (
    pipeline       text PRIMARY KEY,
    echoed_through timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);";

/// Move a pipeline's horizon forward (never back): `$1` pipeline, `$2` time.
/// Records conflicts in bulk: `$1` the pipeline, then one array per column of
/// `cdc_sync.conflicts` (table, key, change, policy, winner, decision, both versions as JSON text,
/// both commit times, the local origin, the source LSN).
pub const RECORD_SQL: &str = "INSERT INTO cdc_sync.conflicts (pipeline, table_name, key, change, policy, winner, \
     decision, local_version, incoming_version, local_commit_ts, incoming_commit_ts, local_origin, source_lsn) \
     SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
     $8::text[]::jsonb[], $9::text[]::jsonb[], $10::timestamptz[], $11::timestamptz[], $12::text[], \
     $13::text[]::pg_lsn[]) AS u";

/// The conflict horizon of `pipeline` in this database (`None` before it has one).
pub async fn horizon(client: &Client, pipeline: &str) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    Ok(client
        .query_opt("SELECT echoed_through FROM cdc_sync.conflict_horizon WHERE pipeline = $1", &[&pipeline])
        .await?
        .map(|r| r.get(0)))
}

pub const HORIZON_SQL: &str = "\
INSERT INTO cdc_sync.conflict_horizon AS h (pipeline, echoed_through) VALUES ($1, $2)
ON CONFLICT (pipeline) DO UPDATE SET echoed_through = GREATEST(h.echoed_through, EXCLUDED.echoed_through),
    updated_at = now()";

/// A side of the sync file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source (legacy).
    Source,
    /// The target (service).
    Target,
}

impl Side {
    /// `source` / `target`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }

    /// The side a direction reads (where its incoming changes were made).
    pub fn incoming(way: Way) -> Side {
        match way {
            Way::Forward => Side::Source,
            Way::Reverse => Side::Target,
        }
    }
}

/// The written side's current version of a row, as looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVersion {
    /// `row_to_json` of the row.
    pub json: String,
    /// Its commit time (`None`: unknown).
    pub commit_ts: Option<DateTime<Utc>>,
    /// Its replication origin id (0: a local write).
    pub origin: u32,
    /// The origin's name, when it has one.
    pub origin_name: Option<String>,
}

/// Is an incoming change in conflict with `local` (see the module docs)? `ours` is this
/// applier's origin id, `horizon` the latest written-side commit time known to have reached the
/// other side (`None`: nothing has yet).
pub fn is_conflict(local: &LocalVersion, ours: Option<u32>, horizon: Option<DateTime<Utc>>) -> bool {
    let Some(ts) = local.commit_ts else { return false };
    Some(local.origin) != ours && horizon.is_none_or(|h| ts > h)
}

/// Which side's version stays, by `policy`, for a change flowing `way` made at `incoming_ts`
/// against a local version committed at `local_ts`.
pub fn winner(policy: ConflictPolicy, way: Way, local_ts: DateTime<Utc>, incoming_ts: DateTime<Utc>) -> Side {
    let incoming = Side::incoming(way);
    let local = match incoming {
        Side::Source => Side::Target,
        Side::Target => Side::Source,
    };
    match policy {
        ConflictPolicy::Lww if incoming_ts >= local_ts => incoming,
        ConflictPolicy::Lww => local,
        ConflictPolicy::SourceWins => Side::Source,
        ConflictPolicy::TargetWins => Side::Target,
    }
}

/// Which side's change stays when one side updated a row and the other deleted it, neither
/// having seen the other's change (`incoming_deletes`: the incoming change is the delete, and
/// the written side changed the row; else the incoming change is an update of a row the
/// written side deleted). `source_wins` / `target_wins` name the side as for any conflict.
/// `lww` cannot compare times here: the side that lacks the row has no commit time of its
/// delete (no tombstones), so both directions apply one rule that needs none — the delete
/// wins (the lost update stays in the record).
pub fn winner_against_delete(policy: ConflictPolicy, way: Way, incoming_deletes: bool) -> Side {
    let incoming = Side::incoming(way);
    let deleter = match (incoming_deletes, incoming) {
        (true, side) => side,
        (false, Side::Source) => Side::Target,
        (false, Side::Target) => Side::Source,
    };
    match policy {
        ConflictPolicy::Lww => deleter,
        ConflictPolicy::SourceWins => Side::Source,
        ConflictPolicy::TargetWins => Side::Target,
    }
}

/// An update that won against the written side's delete: the row to write again, as an
/// upsert of the whole row; `None` when the update does not carry every column (unchanged
/// TOAST values, which only the deleted row had).
fn rebuilt(op: Op) -> Result<Op, Op> {
    match op {
        Op::Update { table, row, lsn, ts, .. } if row.iter().all(|c| *c != Cell::Unchanged) => {
            Ok(Op::Upsert { table, row, lsn, ts })
        }
        other => Err(other),
    }
}

/// What conflict handling did to one flush.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Conflicts found (and recorded).
    pub conflicts: u64,
    /// Of those, incoming changes discarded (the local version stayed).
    pub kept_local: u64,
}

/// The incoming change's columns as its side sent them (unchanged TOAST values left out), as a
/// JSON object; `None` for a delete.
fn incoming_json(t: &DirectedTable, op: &Op) -> Option<String> {
    let row = match op {
        Op::Upsert { row, .. } | Op::Update { row, .. } => row,
        _ => return None,
    };
    let mut m = serde_json::Map::new();
    for (name, cell) in t.inputs.iter().zip(row) {
        match cell {
            Cell::Text(s) => m.insert(name.clone(), serde_json::Value::String(s.to_string())),
            Cell::Null => m.insert(name.clone(), serde_json::Value::Null),
            Cell::Unchanged => None,
        };
    }
    Some(serde_json::Value::Object(m).to_string())
}

fn op_ts(op: &Op) -> Option<DateTime<Utc>> {
    match op {
        Op::Upsert { ts, .. } | Op::Update { ts, .. } | Op::Delete { ts, .. } => Some(*ts),
        Op::Truncate { .. } => None,
    }
}

fn change_word(op: &Op) -> &'static str {
    match op {
        Op::Upsert { .. } => "upsert",
        Op::Update { .. } => "update",
        Op::Delete { .. } => "delete",
        Op::Truncate { .. } => "truncate",
    }
}

/// Conflict handling of one direction's sink: its origin id, the horizon, prepared statements.
pub struct Conflicts {
    pipeline: String,
    way: Way,
    ours: Option<u32>,
    horizon: Option<DateTime<Utc>>,
    persisted: Option<DateTime<Utc>>,
    lookups: HashMap<usize, Statement>,
    record: Statement,
    advance: Statement,
    /// Per mapping index: changes committed before this LSN are replayed onto rows copied at a
    /// later snapshot (a resumed copy, see [`super::replay`]).
    replay_until: HashMap<usize, Lsn>,
}

impl Conflicts {
    /// Set up on the written side's apply session when `mapping` has a bidirectional table
    /// (`None` otherwise): the record tables, the persisted horizon, this applier's origin id.
    pub async fn setup(
        client: &Client,
        mapping: &Mapping,
        pipeline: &str,
        way: Way,
        origin: Option<&str>,
    ) -> Result<Option<Conflicts>, tokio_postgres::Error> {
        if !mapping.tables.iter().any(|t| t.lww) {
            return Ok(None);
        }
        if let Err(e) = client.batch_execute(SCHEMA_SQL).await {
            // two pipelines creating the tables in one database at once: the other one won
            if !matches!(e.code(), Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE) {
                return Err(e);
            }
        }
        let horizon = horizon(client, pipeline).await?;
        let ours = match origin {
            Some(o) => client
                .query_opt("SELECT roident FROM pg_replication_origin WHERE roname = $1", &[&o])
                .await?
                .map(|r| r.get::<_, u32>(0)),
            None => None,
        };
        let mut lookups = HashMap::new();
        for (i, t) in mapping.tables.iter().enumerate().filter(|(_, t)| t.lww) {
            lookups.insert(i, client.prepare(&lookup_sql(t)).await?);
        }
        let record = client.prepare(RECORD_SQL).await?;
        let advance = client.prepare(HORIZON_SQL).await?;
        let replay_until = replay_windows(client, mapping, pipeline).await?;
        tracing::info!(pipeline, horizon = ?horizon, origin_id = ?ours, "conflict detection on for the bidirectional tables");
        Ok(Some(Conflicts {
            pipeline: pipeline.to_string(),
            way,
            ours,
            horizon,
            persisted: horizon,
            lookups,
            record,
            advance,
            replay_until,
        }))
    }

    /// The other side has absorbed the written side's versions committed up to `ts` (an echo
    /// went by in the stream).
    pub fn note_echo(&mut self, ts: DateTime<Utc>) {
        if self.horizon.is_none_or(|h| ts > h) {
            self.horizon = Some(ts);
        }
    }

    /// Inside the apply transaction, before the ops are written: look up (and lock) the rows the
    /// bidirectional tables' ops write, decide every conflict, record it, and return the ops to
    /// write (the discarded ones removed).
    pub async fn resolve(
        &mut self,
        client: &Client,
        mapping: &Mapping,
        ops: Vec<Op>,
    ) -> Result<(Vec<Op>, Resolved), tokio_postgres::Error> {
        let mut by_table: HashMap<usize, Vec<Vec<String>>> = HashMap::new();
        for op in &ops {
            if let Some(t) = op.table().filter(|t| self.lookups.contains_key(t)) {
                let key = op_keys(op, mapping.tables[t].key_len).into_iter().next().unwrap_or_default();
                by_table.entry(t).or_default().push(key.iter().map(|k| k.to_string()).collect());
            }
        }
        if by_table.is_empty() {
            return Ok((ops, Resolved::default()));
        }
        let mut local: HashMap<(usize, Vec<String>), LocalVersion> = HashMap::new();
        for (t, mut keys) in by_table {
            keys.sort();
            keys.dedup();
            let key_len = mapping.tables[t].key_len;
            let cols: Vec<Vec<&str>> = (0..key_len).map(|k| keys.iter().map(|key| key[k].as_str()).collect()).collect();
            let params: Vec<&(dyn ToSql + Sync)> = cols.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            for r in client.query(&self.lookups[&t], &params).await? {
                let i: i64 = r.get(0);
                let v = LocalVersion {
                    json: r.get(1),
                    commit_ts: r.get(2),
                    origin: r.get::<_, Option<u32>>(3).unwrap_or(0),
                    origin_name: r.get(4),
                };
                local.insert((t, keys[(i - 1) as usize].clone()), v);
            }
        }
        let mut rec = Record::default();
        let mut out = Vec::with_capacity(ops.len());
        let mut resolved = Resolved::default();
        // rows this flush has already written: the lookup above saw them as they were before
        // the flush, so a later op on one (an update after its row's insert) is judged against
        // the incoming side's own write, which is no conflict
        let mut written: HashSet<(usize, Vec<String>)> = HashSet::new();
        for op in ops {
            let Some(t) = op.table().filter(|t| self.lookups.contains_key(t)) else {
                out.push(op);
                continue;
            };
            let m = &mapping.tables[t];
            let key: Vec<String> =
                op_keys(&op, m.key_len).into_iter().next().unwrap_or_default().iter().map(|k| k.to_string()).collect();
            let row = (t, key);
            if written.contains(&row) {
                out.push(op);
                continue;
            }
            let found = local.get(&row);
            let Some(incoming_ts) = op_ts(&op) else {
                written.insert(row);
                out.push(op);
                continue;
            };
            let key = &row.1;
            let key_text = format!("({})", key.join(","));
            let (win, local_ts, v) = match found {
                // an update of a row the written side no longer has: deleted here, unseen by the
                // other side (it still had the row when it changed it) — unless the change is
                // replayed onto a resumed copy's rows: the row may be missing because the other
                // side deleted it before the later snapshot (that delete follows in the stream)
                None if matches!(op, Op::Update { .. }) && self.replay_until.get(&t).is_none_or(|l| op.lsn() >= *l) => {
                    (winner_against_delete(m.conflict, self.way, false), None, None)
                }
                Some(v) if is_conflict(v, self.ours, self.horizon) => {
                    let local_ts = v.commit_ts.expect("is_conflict checked it");
                    let win = match op {
                        Op::Delete { .. } => winner_against_delete(m.conflict, self.way, true),
                        _ => winner(m.conflict, self.way, local_ts, incoming_ts),
                    };
                    (win, Some(local_ts), Some(v))
                }
                _ => {
                    written.insert(row);
                    out.push(op);
                    continue;
                }
            };
            let mut applied = win == Side::incoming(self.way);
            resolved.conflicts += 1;
            tracing::warn!(pipeline = %self.pipeline, table = %m.to_table, key = %key_text, change = change_word(&op),
                local = if v.is_some() { "changed" } else { "deleted" },
                policy = m.conflict.as_str(), winner = win.as_str(), local_commit_ts = ?local_ts, incoming_commit_ts = %incoming_ts,
                "conflict: both sides changed the row without seeing each other's change");
            let mut decision = if applied { "incoming_applied" } else { "local_kept" };
            let op = match (v, applied) {
                // the update wins over the delete: write the row again, whole
                (None, true) => match rebuilt(op) {
                    Ok(upsert) => upsert,
                    Err(op) => {
                        tracing::warn!(pipeline = %self.pipeline, table = %m.to_table, key = %key_text,
                            "the update won over this side's delete but does not carry every column (unchanged TOAST \
                             values): the row cannot be written again here, the two sides differ in this row; \
                             update it on the winning side to carry it over");
                        (applied, decision) = (false, "incoming_incomplete");
                        op
                    }
                },
                _ => op,
            };
            rec.push(m, &op, key_text, v, local_ts, incoming_ts, win, decision);
            if applied {
                written.insert(row);
                out.push(op);
            } else {
                resolved.kept_local += 1;
            }
        }
        if !rec.table.is_empty() {
            let p: [&(dyn ToSql + Sync); 13] = [
                &self.pipeline,
                &rec.table,
                &rec.key,
                &rec.change,
                &rec.policy,
                &rec.winner,
                &rec.decision,
                &rec.local,
                &rec.incoming,
                &rec.local_ts,
                &rec.incoming_ts,
                &rec.origin,
                &rec.lsn,
            ];
            client.execute(&self.record, &p).await?;
        }
        Ok((out, resolved))
    }

    /// Inside the apply transaction, before it commits: persist the horizon if it moved.
    pub async fn persist(&mut self, client: &Client) -> Result<(), tokio_postgres::Error> {
        if let Some(h) = self.horizon.filter(|h| self.persisted.is_none_or(|p| *h > p)) {
            client.execute(&self.advance, &[&self.pipeline, &h]).await?;
            self.persisted = Some(h);
        }
        Ok(())
    }

    /// After a rollback: the persisted horizon is what the database has again.
    pub fn rolled_back(&mut self) {
        // the in-memory horizon may run ahead: the echoes that moved it are replayed anyway
        self.persisted = None;
    }
}

/// What `cdc-sync status` shows of a pipeline's conflicts on one side: how many, by table and
/// winner, and the latest few records. `None` when that side has no conflict record table.
pub async fn summary(
    client: &Client,
    pipeline: &str,
    latest: i64,
) -> Result<Option<serde_json::Value>, tokio_postgres::Error> {
    let exists = client.query_one("SELECT to_regclass('cdc_sync.conflicts') IS NOT NULL", &[]).await?.get::<_, bool>(0);
    if !exists {
        return Ok(None);
    }
    let by = client
        .query(
            "SELECT table_name, winner, decision, count(*) FROM cdc_sync.conflicts WHERE pipeline = $1 \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[&pipeline],
        )
        .await?;
    let total: i64 = by.iter().map(|r| r.get::<_, i64>(3)).sum();
    let by: Vec<serde_json::Value> = by
        .iter()
        .map(|r| {
            serde_json::json!({"table": r.get::<_, String>(0), "winner": r.get::<_, String>(1),
                "decision": r.get::<_, String>(2), "count": r.get::<_, i64>(3)})
        })
        .collect();
    let recent = client
        .query(
            "SELECT json_build_object('id', id, 'table', table_name, 'key', key, 'change', change, 'policy', policy, \
             'winner', winner, 'decision', decision, 'local_version', local_version, 'incoming_version', incoming_version, \
             'local_commit_ts', local_commit_ts, 'incoming_commit_ts', incoming_commit_ts, 'local_origin', local_origin, \
             'source_lsn', source_lsn::text, 'recorded_at', recorded_at)::text \
             FROM cdc_sync.conflicts WHERE pipeline = $1 ORDER BY id DESC LIMIT $2",
            &[&pipeline, &latest],
        )
        .await?;
    let recent: Vec<serde_json::Value> =
        recent.iter().filter_map(|r| serde_json::from_str(&r.get::<_, String>(0)).ok()).collect();
    Ok(Some(serde_json::json!({"total": total, "by_table": by, "latest": recent})))
}

/// Conflict records of one flush, column by column (for one `unnest` insert).
#[derive(Default)]
struct Record {
    table: Vec<String>,
    key: Vec<String>,
    change: Vec<&'static str>,
    policy: Vec<&'static str>,
    winner: Vec<&'static str>,
    decision: Vec<&'static str>,
    local: Vec<Option<String>>,
    incoming: Vec<Option<String>>,
    local_ts: Vec<Option<DateTime<Utc>>>,
    incoming_ts: Vec<DateTime<Utc>>,
    origin: Vec<Option<String>>,
    lsn: Vec<String>,
}

impl Record {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        t: &DirectedTable,
        op: &Op,
        key: String,
        v: Option<&LocalVersion>,
        local_ts: Option<DateTime<Utc>>,
        incoming_ts: DateTime<Utc>,
        win: Side,
        decision: &'static str,
    ) {
        self.table.push(t.to_table.clone());
        self.key.push(key);
        // an update that won over a delete is written as a whole-row upsert; it was an update
        self.change.push(if v.is_none() { "update" } else { change_word(op) });
        self.policy.push(t.conflict.as_str());
        self.winner.push(win.as_str());
        self.decision.push(decision);
        self.local.push(v.map(|v| v.json.clone()));
        self.incoming.push(incoming_json(t, op));
        self.local_ts.push(local_ts);
        self.incoming_ts.push(incoming_ts);
        self.origin.push(match v {
            Some(v) if v.origin != 0 => Some(v.origin_name.clone().unwrap_or(v.origin.to_string())),
            _ => None,
        });
        self.lsn.push(op.lsn().to_string());
    }
}

/// Per bidirectional table of `mapping` whose copy was resumed: the newest snapshot a chunk of
/// it was copied under, when later than its first (as
/// [`crate::checkpoint::PgCheckpointStore::replay_windows`], on the written side).
async fn replay_windows(
    client: &Client,
    mapping: &Mapping,
    pipeline: &str,
) -> Result<HashMap<usize, Lsn>, tokio_postgres::Error> {
    if !client.query_one("SELECT to_regclass('cdc_sync.snapshot_chunk') IS NOT NULL", &[]).await?.get::<_, bool>(0) {
        return Ok(HashMap::new());
    }
    let rows = client
        .query(
            "SELECT table_name, max(copied_lsn)::text FROM cdc_sync.snapshot_chunk \
             WHERE pipeline = $1 AND copied_lsn > plan_lsn GROUP BY table_name",
            &[&pipeline],
        )
        .await?;
    let by_table: HashMap<String, Lsn> = rows
        .iter()
        .filter_map(|r| Some((r.get::<_, String>(0), Lsn::parse(&r.get::<_, Option<String>>(1)?)?)))
        .collect();
    Ok(mapping
        .tables
        .iter()
        .enumerate()
        .filter(|(_, t)| t.lww)
        .filter_map(|(i, t)| by_table.get(&t.to_table).map(|l| (i, *l)))
        .collect())
}

/// Look up and lock the written side's rows by key: `$k` text arrays, one per key column.
/// Returns the key's 1-based position, the row as JSON, its commit time, origin id and name.
fn lookup_sql(t: &DirectedTable) -> String {
    let params: Vec<String> = (0..t.key_len).map(|k| format!("${}::text[]", k + 1)).collect();
    let names: Vec<String> = (0..t.key_len).map(|k| format!("k{k}")).collect();
    let conds: Vec<String> = t
        .key_outputs
        .iter()
        .enumerate()
        .map(|(k, o)| format!("t.{} = u.k{k}::{}", quote_ident(&t.outputs[*o].column), t.output_types[*o]))
        .collect();
    format!(
        "SELECT u.i, row_to_json(t)::text, c.timestamp, c.roident, r.roname \
         FROM unnest({}) WITH ORDINALITY AS u({}, i) JOIN {} AS t ON {} \
         CROSS JOIN LATERAL pg_xact_commit_timestamp_origin(t.xmin) AS c \
         LEFT JOIN pg_replication_origin r ON r.roident = c.roident FOR UPDATE OF t",
        params.join(", "),
        names.join(", "),
        quote_qualified(&t.to_table),
        conds.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lsn;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn version(ts: Option<i64>, origin: u32) -> LocalVersion {
        LocalVersion { json: "{}".into(), commit_ts: ts.map(at), origin, origin_name: None }
    }

    #[test]
    fn a_conflict_is_a_foreign_version_the_other_side_had_not_seen() {
        let ours = Some(7);
        // written by this applier: never
        assert!(!is_conflict(&version(Some(100), 7), ours, None));
        // a local write newer than everything echoed back: yes; already echoed: no
        assert!(is_conflict(&version(Some(100), 0), ours, Some(at(99))));
        assert!(!is_conflict(&version(Some(100), 0), ours, Some(at(100))));
        // nothing echoed yet: every foreign version is unseen
        assert!(is_conflict(&version(Some(1), 0), ours, None));
        // another pipeline's write counts as a local one
        assert!(is_conflict(&version(Some(100), 3), ours, Some(at(50))));
        // unknown commit time: never
        assert!(!is_conflict(&version(None, 0), ours, None));
    }

    /// An update and a delete of one row, unseen by each other: each direction sees one of
    /// them as incoming; both must name the same winner.
    #[test]
    fn update_against_delete_has_one_winner_seen_from_either_side() {
        use ConflictPolicy::*;
        for policy in [Lww, SourceWins, TargetWins] {
            // the source updated, the target deleted: forward carries the update, reverse the delete
            let fwd = winner_against_delete(policy, Way::Forward, false);
            let rev = winner_against_delete(policy, Way::Reverse, true);
            assert_eq!(fwd, rev, "{policy:?}");
            // the source deleted, the target updated
            let fwd2 = winner_against_delete(policy, Way::Forward, true);
            let rev2 = winner_against_delete(policy, Way::Reverse, false);
            assert_eq!(fwd2, rev2, "{policy:?}");
            let want = match policy {
                Lww => (Side::Target, Side::Source), // the deleter
                SourceWins => (Side::Source, Side::Source),
                TargetWins => (Side::Target, Side::Target),
            };
            assert_eq!((fwd, fwd2), want, "{policy:?}");
        }
        let ts = at(0);
        let cell = |s: &str| Cell::Text(std::sync::Arc::from(s));
        let k = vec![std::sync::Arc::<str>::from("1")];
        let whole = Op::Update { table: 0, match_key: k.clone(), row: vec![cell("1"), cell("a")], lsn: Lsn(1), ts };
        assert!(matches!(rebuilt(whole), Ok(Op::Upsert { .. })));
        let toast = Op::Update { table: 0, match_key: k, row: vec![cell("1"), Cell::Unchanged], lsn: Lsn(1), ts };
        assert!(matches!(rebuilt(toast), Err(Op::Update { .. })));
    }

    #[test]
    fn the_policy_picks_the_same_winner_in_both_directions() {
        use ConflictPolicy::*;
        let (older, newer) = (at(10), at(20));
        // lww: the later commit wins, whichever side it is on; the incoming change wins ties
        assert_eq!(winner(Lww, Way::Forward, older, newer), Side::Source);
        assert_eq!(winner(Lww, Way::Forward, newer, older), Side::Target);
        assert_eq!(winner(Lww, Way::Reverse, older, newer), Side::Target);
        assert_eq!(winner(Lww, Way::Reverse, newer, older), Side::Source);
        assert_eq!(winner(Lww, Way::Reverse, older, older), Side::Target);
        for way in [Way::Forward, Way::Reverse] {
            for (l, i) in [(older, newer), (newer, older)] {
                assert_eq!(winner(SourceWins, way, l, i), Side::Source);
                assert_eq!(winner(TargetWins, way, l, i), Side::Target);
            }
        }
    }
}

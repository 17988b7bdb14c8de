//! A `both` table copied again from the start (a ctid-range table whose copy was interrupted,
//! `on_slot_lost = "resnapshot"`, a table added back, also a fresh pipeline's first copy): the
//! copy brings legacy's version of every key legacy has, and the reverse stream skips what the
//! service committed on the table before the copy's lock (the table's floor). Left alone, a
//! service version of a key both sides have that legacy had not received yet would be lost.
//!
//! So before the copy empties the table (inside its locked target transaction), the service's
//! versions that legacy has not received are settled like the stream's conflicts
//! ([`crate::apply::conflict`]), as the reverse direction would have met them:
//! - a target row *not received by legacy*: not written by the forward applier or copy, with a
//!   commit time after every target version known to have reached legacy (the forward
//!   direction's conflict horizon, and the reverse checkpoint's commit time), differing from
//!   legacy's row, and not legacy's row itself (written back by the reverse applier with the
//!   same origin time);
//! - against legacy's version: if the target had received it (written back by the reverse
//!   applier, or committed no later than the forward checkpoint's commit time or the reverse
//!   direction's conflict horizon) or its time is
//!   unknown, the service's change simply follows it and is carried; otherwise both sides changed
//!   the row without seeing each other's change, a conflict decided by the table's policy
//!   ([`winner`]) and recorded in legacy's `cdc_sync.conflicts` (the reverse direction's written
//!   side), with a warning.
//!
//! A service version that stays is written into legacy's row in a legacy transaction with *no*
//! replication origin, committed before the copy's rows land: the forward stream (its floor for
//! the table is the copy's snapshot, older) carries it onto the copied row, and the reverse
//! stream skips that write as the forward applier's echo. Until the forward stream has applied it,
//! the service reads legacy's older version of that row.

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::{sql, CarryOnCopy, ReverseSnapshotError};
use crate::apply::conflict::{horizon, winner, Side, RECORD_SQL};
use crate::checkpoint::applied_commit_ts;
use crate::mapping::{DirectedTable, Way};
use crate::model::{quote_ident, quote_literal, quote_qualified};
use crate::source::snapshot::source_select_list;

/// What settling a table's shared keys did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Service versions written into legacy (no conflict: legacy's row was older news).
    pub carried: u64,
    /// Conflicts recorded.
    pub conflicts: u64,
    /// Of those, the service's version won (written into legacy).
    pub service_won: u64,
}

/// One target row legacy has not received, with legacy's row of the same key.
struct Candidate {
    key: String,
    incoming_json: String,
    incoming_ts: DateTime<Utc>,
    local_json: String,
    local_ts: Option<DateTime<Utc>>,
    local_origin: Option<String>,
}

/// Settle the target rows of `r` (the reverse mapping's table: read side = target) that legacy
/// has not received, before the copy empties the table. `tgt` holds the table locked; `legacy`
/// must have no replication origin set up (the writes here must reach the forward stream).
pub(super) async fn settle_shared_keys(
    c: &CarryOnCopy,
    r: &DirectedTable,
    tgt: &Client,
    legacy: &Client,
) -> Result<Settled, ReverseSnapshotError> {
    if !r.lww {
        return Ok(Settled::default());
    }
    // target versions known to have reached legacy: the forward horizon (on the target) and the
    // reverse checkpoint's commit time (on legacy, target clock)
    let forward_horizon =
        horizon(tgt, &c.forward_pipeline).await.map_err(sql("reading the forward conflict horizon"))?;
    let reverse_applied =
        applied_commit_ts(legacy, &c.reverse_pipeline).await.map_err(sql("reading the reverse checkpoint"))?;
    // legacy versions known to have reached the target (legacy clock): the forward checkpoint's
    // commit time and the reverse direction's conflict horizon (kept when the forward slot was
    // lost and its checkpoint started over)
    let forward_applied =
        applied_commit_ts(tgt, &c.forward_pipeline).await.map_err(sql("reading the forward checkpoint"))?;
    let reverse_horizon =
        horizon(legacy, &c.reverse_pipeline).await.map_err(sql("reading the reverse conflict horizon"))?;
    let forward_applied = forward_applied.max(reverse_horizon);
    let seen_through = forward_horizon.max(reverse_applied);
    let since = match seen_through {
        Some(t) => format!(" AND pg_xact_commit_timestamp(x.xmin) > {}::timestamptz", quote_literal(&t.to_rfc3339())),
        None => String::new(),
    };
    let to = quote_qualified(&r.to_table);
    let cols: Vec<String> = r.outputs.iter().map(|o| quote_ident(&o.column)).collect();
    let keys: Vec<String> = r.key_outputs.iter().map(|o| quote_ident(&r.outputs[*o].column)).collect();
    let what = |doing: &str| format!("{doing} {}", r.to_table);
    let out_sql = format!(
        "COPY (SELECT {}, pg_xact_commit_timestamp(x.xmin), row_to_json(x)::text FROM {} AS x \
         WHERE pg_xact_commit_timestamp(x.xmin) IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM pg_replication_origin o WHERE o.roname = {} \
           AND o.roident = (pg_xact_commit_timestamp_origin(x.xmin)).roident){since}) TO STDOUT",
        source_select_list(r),
        quote_qualified(&r.from_table),
        quote_literal(&c.forward_origin),
    );
    legacy.batch_execute("BEGIN").await.map_err(sql(what("settling the service's versions of")))?;
    let r_out = async {
        legacy
            .batch_execute(&format!(
                "CREATE TEMP TABLE cdc_sync_recopy ON COMMIT DROP AS SELECT {} FROM {to} WITH NO DATA; \
                 ALTER TABLE cdc_sync_recopy ADD COLUMN cdc_sync_ts timestamptz, ADD COLUMN cdc_sync_json text",
                cols.join(", ")
            ))
            .await?;
        let out = tgt.copy_out(out_sql.as_str()).await?;
        let sink = legacy
            .copy_in::<_, bytes::Bytes>(&format!(
                "COPY cdc_sync_recopy ({}, cdc_sync_ts, cdc_sync_json) FROM STDIN",
                cols.join(", ")
            ))
            .await?;
        futures::pin_mut!(out);
        futures::pin_mut!(sink);
        while let Some(buf) = out.next().await {
            sink.feed(buf?).await?;
        }
        sink.as_mut().finish().await?;
        let on: Vec<String> = keys.iter().map(|k| format!("l.{k} = c.{k}")).collect();
        let c_cols: Vec<String> = cols.iter().map(|k| format!("c.{k}")).collect();
        let l_cols: Vec<String> = cols.iter().map(|k| format!("l.{k}")).collect();
        let key_text: Vec<String> = keys.iter().map(|k| format!("c.{k}::text")).collect();
        let found = legacy
            .query(
                &format!(
                    "SELECT '(' || concat_ws(',', {}) || ')', c.cdc_sync_json, c.cdc_sync_ts, row_to_json(l)::text, \
                     v.timestamp, o.roname FROM cdc_sync_recopy c JOIN {to} AS l ON {} \
                     CROSS JOIN LATERAL pg_xact_commit_timestamp_origin(l.xmin) AS v \
                     LEFT JOIN pg_replication_origin o ON o.roident = v.roident \
                     WHERE ({}) IS DISTINCT FROM ({}) FOR UPDATE OF l",
                    key_text.join(", "),
                    on.join(" AND "),
                    c_cols.join(", "),
                    l_cols.join(", ")
                ),
                &[],
            )
            .await?;
        let candidates: Vec<Candidate> = found
            .iter()
            .map(|row| Candidate {
                key: row.get(0),
                incoming_json: row.get(1),
                incoming_ts: row.get(2),
                local_json: row.get(3),
                local_ts: row.get(4),
                local_origin: row.get(5),
            })
            .collect();
        let mut settled = Settled::default();
        let mut write = Vec::new();
        let mut rec = Vec::new();
        for cand in candidates {
            let reverse_written = cand.local_origin.as_deref() == Some(c.reverse_origin.as_str());
            if reverse_written && cand.local_ts == Some(cand.incoming_ts) {
                // legacy's row is this very version, written back (mapped differently)
                continue;
            }
            let received = reverse_written || forward_applied.zip(cand.local_ts).is_some_and(|(a, l)| l <= a);
            let Some(local_ts) = cand.local_ts.filter(|_| !received) else {
                // the service changed a version it had: legacy has not received that change yet
                settled.carried += 1;
                write.push(cand.key);
                continue;
            };
            let win = winner(r.conflict, Way::Reverse, local_ts, cand.incoming_ts);
            settled.conflicts += 1;
            tracing::warn!(pipeline = %c.reverse_pipeline, table = %r.to_table, key = %cand.key,
                policy = r.conflict.as_str(), winner = win.as_str(), local_commit_ts = %local_ts,
                incoming_commit_ts = %cand.incoming_ts,
                "conflict before the table's copy: both sides changed the row without seeing each other's change");
            if win == Side::Target {
                settled.service_won += 1;
                write.push(cand.key.clone());
            }
            rec.push((cand, local_ts, win));
        }
        if !write.is_empty() {
            let set: Vec<String> = r
                .outputs
                .iter()
                .enumerate()
                .filter(|(i, _)| !r.key_outputs.contains(i))
                .map(|(_, o)| format!("{0} = c.{0}", quote_ident(&o.column)))
                .collect();
            if !set.is_empty() {
                legacy
                    .execute(
                        &format!(
                            "UPDATE {to} AS l SET {} FROM cdc_sync_recopy c WHERE {} \
                             AND '(' || concat_ws(',', {}) || ')' = ANY($1)",
                            set.join(", "),
                            on.join(" AND "),
                            key_text.join(", ")
                        ),
                        &[&write],
                    )
                    .await?;
            }
        }
        if !rec.is_empty() {
            record(legacy, tgt, c, r, rec).await?;
        }
        legacy.batch_execute("COMMIT").await?;
        Ok::<_, tokio_postgres::Error>(settled)
    }
    .await;
    match r_out {
        Ok(s) => {
            if s != Settled::default() {
                tracing::info!(table = %r.from_table, carried = s.carried, conflicts = s.conflicts,
                    service_won = s.service_won,
                    "before the table's copy: settled the service's versions legacy had not received");
            }
            Ok(s)
        }
        Err(e) => {
            let _ = legacy.batch_execute("ROLLBACK").await;
            Err(sql(what("settling the service's versions of"))(e))
        }
    }
}

/// Record the conflicts in legacy's `cdc_sync.conflicts`, as the reverse direction does.
async fn record(
    legacy: &Client,
    tgt: &Client,
    c: &CarryOnCopy,
    r: &DirectedTable,
    rec: Vec<(Candidate, DateTime<Utc>, Side)>,
) -> Result<(), tokio_postgres::Error> {
    // the conflict tables exist: the reverse direction was prepared (its horizon started) first
    // where the service's changes stand on the target (no commit LSN of each is at hand)
    let lsn: String = tgt.query_one("SELECT pg_current_wal_insert_lsn()::text", &[]).await?.get(0);
    let n = rec.len();
    let table = vec![r.to_table.clone(); n];
    let key: Vec<String> = rec.iter().map(|(c, _, _)| c.key.clone()).collect();
    let change = vec!["update"; n];
    let policy = vec![r.conflict.as_str(); n];
    let winner: Vec<&str> = rec.iter().map(|(_, _, w)| w.as_str()).collect();
    let decision: Vec<&str> =
        rec.iter().map(|(_, _, w)| if *w == Side::Target { "incoming_applied" } else { "local_kept" }).collect();
    let local: Vec<String> = rec.iter().map(|(c, _, _)| c.local_json.clone()).collect();
    let incoming: Vec<String> = rec.iter().map(|(c, _, _)| c.incoming_json.clone()).collect();
    let local_ts: Vec<DateTime<Utc>> = rec.iter().map(|(_, t, _)| *t).collect();
    let incoming_ts: Vec<DateTime<Utc>> = rec.iter().map(|(c, _, _)| c.incoming_ts).collect();
    let origin: Vec<Option<String>> = rec.iter().map(|(c, _, _)| c.local_origin.clone()).collect();
    let lsns = vec![lsn; n];
    let p: [&(dyn ToSql + Sync); 13] = [
        &c.reverse_pipeline,
        &table,
        &key,
        &change,
        &policy,
        &winner,
        &decision,
        &local,
        &incoming,
        &local_ts,
        &incoming_ts,
        &origin,
        &lsns,
    ];
    legacy.execute(RECORD_SQL, &p).await?;
    Ok(())
}

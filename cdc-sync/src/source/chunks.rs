//! Key-range chunks of a table's initial copy, and their progress kept in the target next to
//! the checkpoint (`cdc_sync.snapshot_chunk`), so that a restart during a long copy continues
//! from the last finished chunk instead of the table's start.
//!
//! A table whose configured key is the leading part of a btree index at the source is cut into
//! ranges of that key, `lo <= key < hi` (no bound = open end): boundaries are quantiles of a
//! `TABLESAMPLE SYSTEM` sample of the keys, sized to about `snapshot_chunk_pages` heap pages per
//! chunk. The plan (every range) is written in the same target transaction as the table's
//! `TRUNCATE`; each chunk is marked done in the same transaction as its rows. After a crash the
//! plan says exactly which ranges are in the target; the others are copied under a new snapshot.
//!
//! Why a new snapshot is sound (the exported snapshot of the slot's creation died with the
//! process that held it): let L1 be the table's first snapshot and L2 > L1 the new one. The
//! finished ranges hold the source as of L1, the remaining ranges will hold it as of L2. The
//! table's stream floor stays L1 (it is recorded with the plan and never raised by a resume), so
//! the stream applies every change of the table committed after L1, in commit order, to every
//! range. For the finished ranges that is the normal snapshot + stream argument. For the ranges
//! copied at L2, the changes in (L1, L2] are applied a second time on rows that already contain
//! them; every change is applied idempotently by key (insert and full-row update = upsert of the
//! whole row, update with unchanged TOAST or a key change = update by key that may match nothing,
//! delete = delete by key, TRUNCATE = truncate), so after the stream passes L2 each key holds the
//! row of its last change, i.e. the source's row. Rows in between may be transiently older, which
//! is what a snapshot in progress looks like anyway: the pipeline is not ready until the copy is
//! done. Ranges partition the key space, so a row never belongs to two chunks, whatever moves
//! between L1 and L2 (a key change moves a row from one range to another through the stream).
//!
//! Known limit: an update that changes the key *and* leaves a TOASTed column unchanged is
//! applied in that window as an update by the new key, which needs the row to be there already.
//! A row whose key changed twice in (L1, L2] that way, ending in a range copied at L1, is missed
//! until its next full-row change (verify names it). Tables whose key never changes, or without
//! TOASTed columns, are not affected.
//!
//! The argument needs the stream to start at or before L1 (it resumes from the pipeline's
//! checkpoint). That holds for the first copy (checkpoint = L1) and for a table added while
//! running (copied under a newer snapshot while nothing streams, so a crash leaves the
//! checkpoint below L1). It fails only when the stream went on without the table after a crash
//! mid-copy (the table left the mapping, then came back): a plan older than the checkpoint is
//! never resumed, the table is copied afresh (`SnapshotJob::stream_from`).
//!
//! A table without such an index is copied in ctid ranges as before (a key-range scan without
//! an index would read the whole table per chunk); an interrupted copy of it restarts the table.

use tokio_postgres::Client;

use crate::mapping::DirectedTable;
use crate::model::{quote_ident, quote_literal, quote_qualified, Lsn};

/// One range of a table's key: `lo <= key < hi`, text values in key column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Chunk number in the plan.
    pub chunk: i32,
    /// Inclusive lower bound; `None` = from the start.
    pub lo: Option<Vec<String>>,
    /// Exclusive upper bound; `None` = to the end.
    pub hi: Option<Vec<String>>,
}

/// A table's stored plan.
#[derive(Debug, Clone, Default)]
pub struct StoredPlan {
    /// The snapshot the plan was made under: the table's stream floor.
    pub plan_lsn: Lsn,
    /// Ranges still to copy.
    pub todo: Vec<KeyRange>,
    /// Ranges finished.
    pub done: usize,
    /// Rows in the finished ranges.
    pub done_rows: u64,
}

/// The source-side key columns of `t` (they come first among its inputs).
pub fn key_columns(t: &DirectedTable) -> &[String] {
    &t.inputs[..t.key_len]
}

/// The source `WHERE` condition of a range (no leading `WHERE`; `true` for the whole table).
/// Bounds are literals cast to the key columns' source types.
pub fn range_condition(t: &DirectedTable, r: &KeyRange) -> String {
    let cols: Vec<String> = key_columns(t).iter().map(|c| quote_ident(c)).collect();
    let lit = |vals: &[String]| -> Vec<String> {
        vals.iter().zip(&t.input_types).map(|(v, ty)| format!("{}::{ty}", quote_literal(v))).collect()
    };
    let side = |vals: &[String], op: &str| {
        let v = lit(vals);
        if cols.len() == 1 {
            format!("{} {op} {}", cols[0], v[0])
        } else {
            format!("ROW({}) {op} ROW({})", cols.join(", "), v.join(", "))
        }
    };
    let mut conds = vec![];
    if let Some(lo) = &r.lo {
        conds.push(side(lo, ">="));
    }
    if let Some(hi) = &r.hi {
        conds.push(side(hi, "<"));
    }
    if conds.is_empty() {
        "true".into()
    } else {
        conds.join(" AND ")
    }
}

/// Is the key of `t` the leading part of a valid btree index at the source (so a range of it
/// is an index scan)? Run inside the snapshot transaction.
pub async fn has_key_index(src: &Client, t: &DirectedTable) -> Result<bool, tokio_postgres::Error> {
    let cols: Vec<String> = key_columns(t).to_vec();
    let r = src
        .query_opt(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam \
             WHERE i.indrelid = $1::text::regclass AND i.indisvalid AND am.amname = 'btree' \
               AND (SELECT array_agg(a.attname::text ORDER BY k.o) FROM unnest(i.indkey) WITH ORDINALITY k(n, o) \
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n WHERE k.o <= $3) = $2::text[] \
             LIMIT 1",
            &[&quote_qualified(&t.from_table), &cols, &(cols.len() as i64)],
        )
        .await?;
    Ok(r.is_some())
}

/// Cut `t` into about `chunks` key ranges from a sample of its keys (inside the snapshot
/// transaction; `pages` is the table's size). Fewer ranges when the sample is small; one range
/// for a small or empty table.
pub async fn plan_ranges(
    src: &Client,
    t: &DirectedTable,
    pages: u64,
    chunks: u64,
) -> Result<Vec<KeyRange>, tokio_postgres::Error> {
    if chunks <= 1 || pages == 0 {
        return Ok(vec![KeyRange { chunk: 0, lo: None, hi: None }]);
    }
    // about 8 sampled pages per chunk: plenty of keys for even quantiles, a small share of the
    // table for a big one
    let pct = (100.0 * (chunks * 8) as f64 / pages as f64).min(100.0);
    let cols: Vec<String> = key_columns(t).iter().map(|c| quote_ident(c)).collect();
    let sql = format!(
        "SELECT {} FROM {} TABLESAMPLE SYSTEM ({pct}) ORDER BY {}",
        // aliased: `ORDER BY id` would otherwise sort by an output column `id::text AS id`
        cols.iter().enumerate().map(|(i, c)| format!("{c}::text AS k{i}")).collect::<Vec<_>>().join(", "),
        quote_qualified(&t.from_table),
        cols.join(", ")
    );
    let sample: Vec<Vec<String>> =
        src.query(sql.as_str(), &[]).await?.iter().map(|r| (0..cols.len()).map(|i| r.get(i)).collect()).collect();
    Ok(ranges_from_sample(&sample, chunks as usize))
}

/// Ranges from sorted sampled keys: `chunks - 1` quantiles as boundaries (repeats dropped).
pub fn ranges_from_sample(sample: &[Vec<String>], chunks: usize) -> Vec<KeyRange> {
    let mut bounds: Vec<Vec<String>> = vec![];
    if chunks > 1 && sample.len() >= chunks {
        for i in 1..chunks {
            let b = &sample[i * sample.len() / chunks];
            if bounds.last() != Some(b) {
                bounds.push(b.clone());
            }
        }
    }
    let mut out = vec![];
    let mut lo = None;
    for b in bounds {
        out.push(KeyRange { chunk: out.len() as i32, lo: lo.take(), hi: Some(b.clone()) });
        lo = Some(b);
    }
    out.push(KeyRange { chunk: out.len() as i32, lo, hi: None });
    out
}

/// The stored plan of a table, if one was made (by a copy that did not finish, or one that
/// did: then `todo` is empty).
pub async fn load_plan(tgt: &Client, pipeline: &str, table: &str) -> Result<Option<StoredPlan>, tokio_postgres::Error> {
    let rows = tgt
        .query(
            "SELECT chunk, lo, hi, plan_lsn::text, done, rows FROM cdc_sync.snapshot_chunk \
             WHERE pipeline = $1 AND table_name = $2 ORDER BY chunk",
            &[&pipeline, &table],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut plan = StoredPlan::default();
    for r in rows {
        plan.plan_lsn = Lsn::parse(&r.get::<_, String>(3)).unwrap_or_default();
        if r.get::<_, bool>(4) {
            plan.done += 1;
            plan.done_rows += r.get::<_, i64>(5).max(0) as u64;
        } else {
            plan.todo.push(KeyRange { chunk: r.get(0), lo: r.get(1), hi: r.get(2) });
        }
    }
    Ok(Some(plan))
}

/// Start a table's copy afresh, in one target transaction: forget an old plan, empty the
/// target table, store the new plan (`lsn` = the snapshot it is made under). An empty `ranges`
/// stores no plan (a ctid-range copy). With `defer` (`Some(key unique at the source)`), the
/// indexes that can be built after the load are recorded and dropped in that transaction too
/// ([`crate::deferred_indexes`]); returns their names.
pub async fn start_table(
    tgt: &Client,
    pipeline: &str,
    t: &DirectedTable,
    ranges: &[KeyRange],
    lsn: Lsn,
    defer: Option<bool>,
) -> Result<Vec<String>, tokio_postgres::Error> {
    tgt.batch_execute("BEGIN").await?;
    let r = async {
        start_table_in(tgt, pipeline, t, ranges, lsn).await?;
        let deferred = match defer {
            Some(key_unique) => crate::deferred_indexes::defer(tgt, pipeline, t, key_unique).await?,
            None => Vec::new(),
        };
        tgt.batch_execute("COMMIT").await?;
        Ok(deferred)
    }
    .await;
    if r.is_err() {
        let _ = tgt.batch_execute("ROLLBACK").await;
    }
    r
}

/// [`start_table`] inside a transaction the caller opened (and commits).
pub async fn start_table_in(
    tgt: &Client,
    pipeline: &str,
    t: &DirectedTable,
    ranges: &[KeyRange],
    lsn: Lsn,
) -> Result<(), tokio_postgres::Error> {
    tgt.execute(
        "DELETE FROM cdc_sync.snapshot_chunk WHERE pipeline = $1 AND table_name = $2",
        &[&pipeline, &t.to_table],
    )
    .await?;
    tgt.batch_execute(&format!("TRUNCATE {}", quote_qualified(&t.to_table))).await?;
    let insert = tgt
        .prepare(
            "INSERT INTO cdc_sync.snapshot_chunk (pipeline, table_name, chunk, lo, hi, plan_lsn) \
             VALUES ($1, $2, $3, $4, $5, $6::text::pg_lsn)",
        )
        .await?;
    for c in ranges {
        tgt.execute(&insert, &[&pipeline, &t.to_table, &c.chunk, &c.lo, &c.hi, &lsn.to_string()]).await?;
    }
    Ok(())
}

/// Inside a chunk's copy transaction: mark it done (rows copied, under the snapshot at `lsn`).
pub async fn mark_done(
    tgt: &Client,
    pipeline: &str,
    table: &str,
    chunk: i32,
    rows: u64,
    lsn: Lsn,
) -> Result<(), tokio_postgres::Error> {
    tgt.execute(
        "UPDATE cdc_sync.snapshot_chunk SET done = true, rows = $4, copied_lsn = $5::text::pg_lsn, updated_at = now() \
         WHERE pipeline = $1 AND table_name = $2 AND chunk = $3",
        &[&pipeline, &table, &chunk, &(rows as i64), &lsn.to_string()],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[i64]) -> Vec<Vec<String>> {
        v.iter().map(|k| vec![k.to_string()]).collect()
    }

    #[test]
    fn ranges_partition_the_key_space_at_sample_quantiles() {
        let r = ranges_from_sample(&keys(&(0..100).collect::<Vec<_>>()), 4);
        let b: Vec<_> = r.iter().map(|c| (c.lo.clone(), c.hi.clone())).collect();
        let s = |k: &str| Some(vec![k.to_string()]);
        assert_eq!(b, vec![(None, s("25")), (s("25"), s("50")), (s("50"), s("75")), (s("75"), None)]);
        assert_eq!(r.iter().map(|c| c.chunk).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // repeated keys in the sample (a composite key's leading column) give no empty range
        let r = ranges_from_sample(&keys(&[1, 1, 1, 1, 1, 1, 2, 2]), 4);
        assert_eq!(r.len(), 3, "{r:?}");
        // a sample smaller than the chunk count: one range
        assert_eq!(ranges_from_sample(&keys(&[1, 2]), 4), vec![KeyRange { chunk: 0, lo: None, hi: None }]);
    }
}

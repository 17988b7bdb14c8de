//! `cdc-sync verify`: prove source and target agree on every mapped table, as of one point of
//! the source's history, while both sides keep being written.
//!
//! **The point.** The source is read in one repeatable-read snapshot; its LSN `S` is
//! `pg_current_wal_lsn()` taken as that snapshot's first statement. verify then waits (up to
//! `--wait`) until the target's checkpoint for the pipeline is at or past `S` — the target then
//! holds every source transaction committed before the snapshot — and opens one repeatable-read
//! snapshot on the target, whose checkpoint `T >= S` it reads in that snapshot. When the
//! checkpoint stops moving below `S` (the pipeline is idle: nothing after its last commit touched
//! the mapped tables, or it is stopped) verify compares as of the checkpoint it has; a stopped
//! pipeline's backlog then shows as differences, which is what it should show.
//!
//! **The comparison.** Each table is cut into ranges of its key (boundaries from a
//! `TABLESAMPLE` of the source's keys, about `--chunk-rows` rows each); per range each side
//! computes, in SQL and concurrently, the row count and an order-independent digest (xor and sum
//! of a 64-bit `hashtextextended` of the row's text, the source side evaluating the mapping and
//! casting to the target's types). Only ranges whose digests differ are compared key by key.
//!
//! **Rows in flight.** The target snapshot is at `T >= S`, so a row changed by a source
//! transaction in `(S, T]` can differ although nothing is wrong. The keys found differing are
//! therefore compared again, looked up by key, at fresh points (`--rechecks` rounds, each with a
//! new `S` and `T`); a key that agrees at any round is equal. The keys that differ at every round
//! are reported. A key written in every round's window (a row updated many times a second) can
//! still be reported: rerun verify, or compare while that key rests. Row counts are those of the
//! first round.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::mapping::{DirectedTable, Mapping};
use crate::model::{quote_ident, quote_qualified, Lsn};
use crate::source::snapshot::source_value;

/// How `verify` runs.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// About this many rows per hashed range.
    pub chunk_rows: i64,
    /// The target checkpoint to wait for (the forward pipeline's name); `None`: do not wait.
    pub pipeline: Option<String>,
    /// Longest wait for the target to apply the source snapshot's LSN.
    pub wait: Duration,
    /// Rounds in which differing ranges are compared again at a fresh point.
    pub rechecks: u32,
    /// Print progress on stderr (every 2 s, so only long runs show it).
    pub progress: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            chunk_rows: 10_000,
            pipeline: None,
            wait: Duration::from_secs(30),
            rechecks: 3,
            progress: false,
        }
    }
}

/// How one table compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// Source table.
    pub source: String,
    /// Target table.
    pub target: String,
    /// Rows at the source.
    pub source_rows: i64,
    /// Rows at the target.
    pub target_rows: i64,
    /// Keys (as `(v1,v2)` text) that differ, are missing or are extra; capped at 100.
    pub differing_keys: Vec<String>,
    /// Did every range agree (at some round)?
    pub equal: bool,
}

/// The point a round compared at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point {
    /// LSN of the source snapshot.
    pub source_lsn: Lsn,
    /// The target's checkpoint in its snapshot (`None`: no checkpoint for the pipeline).
    pub target_lsn: Option<Lsn>,
}

impl Point {
    /// Had the target applied everything the source snapshot holds?
    pub fn caught_up(&self) -> bool {
        self.target_lsn.is_some_and(|t| t >= self.source_lsn)
    }
}

/// The whole comparison.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// One entry per mapped table.
    pub tables: Vec<TableReport>,
    /// Where the first round compared.
    pub first: Point,
    /// Where the last round compared (the keys reported were read there).
    pub last: Point,
    /// Rounds run (1 + rechecks needed).
    pub rounds: u32,
    /// Rows compared in the first round (both sides' row counts, source side).
    pub rows: i64,
    /// Wall time.
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Every table equal?
    pub fn equal(&self) -> bool {
        self.tables.iter().all(|t| t.equal)
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.tables {
            if t.equal {
                writeln!(f, "{} -> {}: equal ({} rows)", t.source, t.target, t.source_rows)?;
            } else {
                writeln!(
                    f,
                    "{} -> {}: DIFFERENT (source {} rows, target {} rows); differing keys: {}",
                    t.source,
                    t.target,
                    t.source_rows,
                    t.target_rows,
                    t.differing_keys.join(" ")
                )?;
            }
        }
        let at = |p: &Point| match p.target_lsn {
            Some(t) => format!("source LSN {} (target applied through {t})", p.source_lsn),
            None => format!("source LSN {} (target has no checkpoint)", p.source_lsn),
        };
        write!(f, "compared as of {}", at(&self.first))?;
        if self.rounds > 1 {
            write!(f, "; differing keys compared again {} time(s), last as of {}", self.rounds - 1, at(&self.last))?;
        }
        writeln!(
            f,
            "; {} rows in {:.2} s ({:.0} rows/s)",
            self.rows,
            self.elapsed.as_secs_f64(),
            self.rows as f64 / self.elapsed.as_secs_f64().max(0.001)
        )
    }
}

/// The SQL both sides compare, for one table.
struct Sides {
    src_key: Vec<String>,
    tgt_key: Vec<String>,
    src_row: String,
    tgt_row: String,
    key_types: Vec<String>,
}

fn sides(t: &DirectedTable) -> Sides {
    let src_vals: Vec<String> =
        (0..t.outputs.len()).map(|o| format!("({})::{}", source_value(t, o), t.output_types[o])).collect();
    let tgt_vals: Vec<String> = t.outputs.iter().map(|o| format!("t.{}", quote_ident(&o.column))).collect();
    Sides {
        src_key: t.key_outputs.iter().map(|o| src_vals[*o].clone()).collect(),
        tgt_key: t.key_outputs.iter().map(|o| tgt_vals[*o].clone()).collect(),
        src_row: format!("ROW({})::text", src_vals.join(", ")),
        tgt_row: format!("ROW({})::text", tgt_vals.join(", ")),
        key_types: t.key_outputs.iter().map(|o| t.output_types[*o].clone()).collect(),
    }
}

type Bound = Option<Vec<String>>;

/// A key range `lo <= key < hi` and what the last round saw in it.
#[derive(Debug, Clone)]
struct Range {
    lo: Bound,
    hi: Bound,
    source_rows: i64,
    target_rows: i64,
    equal: bool,
}

/// `WHERE` condition of a range over `key` (typed by `types`) and its parameters.
fn range_cond(key: &[String], types: &[String], r: &Range) -> (String, Vec<String>) {
    let row = |k: &[String]| if k.len() == 1 { k[0].clone() } else { format!("ROW({})", k.join(", ")) };
    let mut conds = vec![];
    let mut params = vec![];
    for (b, op) in [(&r.lo, ">="), (&r.hi, "<")] {
        if let Some(vals) = b {
            let casts: Vec<String> =
                (0..vals.len()).map(|i| format!("${}::text::{}", params.len() + i + 1, types[i])).collect();
            conds.push(format!("{} {op} {}", row(key), row(&casts)));
            params.extend(vals.iter().cloned());
        }
    }
    (if conds.is_empty() { "true".into() } else { conds.join(" AND ") }, params)
}

fn refs(params: &[String]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

async fn begin(c: &Client) -> Result<(), tokio_postgres::Error> {
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; \
         SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'; SET LOCAL IntervalStyle = 'postgres'",
    )
    .await
}

async fn target_checkpoint(tgt: &Client, pipeline: &str) -> Result<Option<Lsn>, tokio_postgres::Error> {
    let has = tgt.query_one("SELECT to_regclass('cdc_sync.checkpoint') IS NOT NULL", &[]).await?;
    if !has.get::<_, bool>(0) {
        return Ok(None);
    }
    let r = tgt.query_opt("SELECT lsn::text FROM cdc_sync.checkpoint WHERE pipeline = $1", &[&pipeline]).await?;
    Ok(r.and_then(|r| Lsn::parse(&r.get::<_, String>(0))))
}

/// Open a round's snapshots: the source's, then (after waiting for the target to apply its
/// LSN) the target's. Both stay open until [`close`].
async fn open_point(src: &Client, tgt: &Client, opts: &VerifyOptions) -> Result<Point, tokio_postgres::Error> {
    begin(src).await?;
    let s = src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?;
    let source_lsn = Lsn::parse(&s.get::<_, String>(0)).unwrap_or_default();
    if let Some(p) = &opts.pipeline {
        let deadline = Instant::now() + opts.wait;
        let mut last = target_checkpoint(tgt, p).await?;
        let mut moved = Instant::now();
        // idle or stopped: the checkpoint stays put below the source's LSN
        let still = Duration::from_millis(500);
        while last.is_some_and(|l| l < source_lsn) && Instant::now() < deadline && moved.elapsed() < still {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = target_checkpoint(tgt, p).await?;
            if now != last {
                moved = Instant::now();
                last = now;
            }
        }
    }
    begin(tgt).await?;
    let target_lsn = match &opts.pipeline {
        Some(p) => target_checkpoint(tgt, p).await?,
        None => None,
    };
    Ok(Point { source_lsn, target_lsn })
}

async fn close(src: &Client, tgt: &Client) -> Result<(), tokio_postgres::Error> {
    src.batch_execute("COMMIT").await?;
    tgt.batch_execute("COMMIT").await
}

/// Most keys kept per table for re-checking (and, of those, 100 are reported); a table with more
/// differing keys is reported different whatever the re-checks find.
const MAX_KEYS: usize = 10_000;

/// Compare every table of `mapping` (compiled source → target, types resolved).
pub async fn verify(
    mapping: &Mapping,
    src: &Client,
    tgt: &Client,
    opts: &VerifyOptions,
) -> Result<VerifyReport, tokio_postgres::Error> {
    let started = Instant::now();
    let mut report = VerifyReport { first: open_point(src, tgt, opts).await?, rounds: 1, ..Default::default() };
    report.last = report.first;
    let mut progress = Progress::new(opts.progress);
    // round 1: every range's digest; keys of the ranges that differ
    let mut keys: Vec<Vec<Key>> = vec![];
    let mut undrilled_tables: Vec<bool> = vec![];
    for t in &mapping.tables {
        let s = sides(t);
        let mut ranges = plan_ranges(t, &s, src, opts.chunk_rows.max(1)).await?;
        let n = ranges.len();
        let mut differing = vec![];
        // a differing range left undrilled (past MAX_KEYS): the table cannot be called equal
        let mut undrilled = false;
        for (i, r) in ranges.iter_mut().enumerate() {
            compare_range(t, &s, r, src, tgt).await?;
            report.rows += r.source_rows;
            if !r.equal {
                if differing.len() < MAX_KEYS {
                    differing.extend(differing_keys(t, &s, r, src, tgt).await?);
                } else {
                    undrilled = true;
                }
            }
            progress.tick(&t.to_table, i + 1, n, report.rows, started);
        }
        undrilled |= differing.len() > MAX_KEYS;
        differing.truncate(MAX_KEYS);
        undrilled_tables.push(undrilled);
        report.tables.push(TableReport {
            source: t.from_table.clone(),
            target: t.to_table.clone(),
            source_rows: ranges.iter().map(|r| r.source_rows).sum(),
            target_rows: ranges.iter().map(|r| r.target_rows).sum(),
            differing_keys: vec![],
            equal: true,
        });
        keys.push(differing);
    }
    // rows in flight: compare the differing keys again at fresh points
    let count = |keys: &[Vec<Key>]| keys.iter().map(Vec::len).sum::<usize>();
    while count(&keys) > 0 && report.rounds <= opts.rechecks {
        close(src, tgt).await?;
        report.last = open_point(src, tgt, opts).await?;
        report.rounds += 1;
        if opts.progress {
            eprintln!("verify: {} key(s) differ; comparing them again (round {})", count(&keys), report.rounds);
        }
        for (t, k) in mapping.tables.iter().zip(&mut keys) {
            if !k.is_empty() {
                *k = still_differing(t, &sides(t), k, src, tgt).await?;
            }
        }
    }
    close(src, tgt).await?;
    for ((rep, k), undrilled) in report.tables.iter_mut().zip(keys).zip(undrilled_tables) {
        rep.equal = k.is_empty() && !undrilled;
        rep.differing_keys = k.into_iter().take(100).map(|k| k.text).collect();
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A differing key: its `(v1,v2)` text and its values as text (target types).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    text: String,
    values: Vec<String>,
}

/// Key ranges of about `chunk_rows` rows, from a sample of the source's keys (in the source
/// snapshot; keys cast to the target's types, so both sides cut at the same values).
async fn plan_ranges(
    t: &DirectedTable,
    s: &Sides,
    src: &Client,
    chunk_rows: i64,
) -> Result<Vec<Range>, tokio_postgres::Error> {
    let whole = || vec![Range { lo: None, hi: None, source_rows: 0, target_rows: 0, equal: true }];
    let from = quote_qualified(&t.from_table);
    let r = src
        .query_one("SELECT reltuples::float8, relpages::float8 FROM pg_class WHERE oid = $1::text::regclass", &[&from])
        .await?;
    let (tuples, pages): (f64, f64) = (r.get(0), r.get(1));
    // never analysed: guess from the size on disk
    let rows = if tuples > 0.0 { tuples } else { pages * 60.0 };
    let chunks = (rows / chunk_rows as f64).ceil() as usize;
    if chunks <= 1 {
        return Ok(whole());
    }
    // ~50 sampled keys per range
    let pct = (100.0 * (chunks * 50) as f64 / rows).clamp(0.0001, 100.0);
    let n = s.src_key.len();
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let sql = format!(
        "SELECT {txt} FROM (SELECT {sel} FROM {from} TABLESAMPLE SYSTEM ({pct})) x ORDER BY {order}",
        txt = keys.iter().map(|k| format!("{k}::text")).collect::<Vec<_>>().join(", "),
        sel = s.src_key.iter().zip(&keys).map(|(e, k)| format!("{e} AS {k}")).collect::<Vec<_>>().join(", "),
        // qualified: a bare `k0` would name the output column `k0::text` and sort as text
        order = keys.iter().map(|k| format!("x.{k}")).collect::<Vec<_>>().join(", "),
    );
    let sample: Vec<Vec<String>> =
        src.query(sql.as_str(), &[]).await?.iter().map(|r| (0..n).map(|i| r.get(i)).collect()).collect();
    if sample.len() < chunks {
        return Ok(whole());
    }
    let mut bounds: Vec<Vec<String>> = vec![];
    for i in 1..chunks {
        let b = &sample[i * sample.len() / chunks];
        if bounds.last() != Some(b) {
            bounds.push(b.clone());
        }
    }
    let mut out = vec![];
    let mut lo = None;
    for b in bounds {
        out.push(Range { lo: lo.take(), hi: Some(b.clone()), source_rows: 0, target_rows: 0, equal: true });
        lo = Some(b);
    }
    out.push(Range { lo, hi: None, source_rows: 0, target_rows: 0, equal: true });
    Ok(out)
}

/// Count and digest `r` on both sides at once; record whether they agree.
async fn compare_range(
    t: &DirectedTable,
    s: &Sides,
    r: &mut Range,
    src: &Client,
    tgt: &Client,
) -> Result<(), tokio_postgres::Error> {
    let digest = |row: &str, table: &str, cond: &str| {
        format!(
            "SELECT count(*), coalesce(bit_xor(h), 0), coalesce(sum(h), 0)::text \
             FROM (SELECT hashtextextended({row}, 0) AS h FROM {table} t WHERE {cond}) x"
        )
    };
    let (scond, params) = range_cond(&s.src_key, &s.key_types, r);
    let (tcond, _) = range_cond(&s.tgt_key, &s.key_types, r);
    let (ssql, tsql) = (
        digest(&s.src_row, &quote_qualified(&t.from_table), &scond),
        digest(&s.tgt_row, &quote_qualified(&t.to_table), &tcond),
    );
    let p = refs(&params);
    let (a, b) = tokio::try_join!(src.query_one(ssql.as_str(), &p), tgt.query_one(tsql.as_str(), &p))?;
    let (sc, sx, ss): (i64, i64, String) = (a.get(0), a.get(1), a.get(2));
    let (tc, tx, ts): (i64, i64, String) = (b.get(0), b.get(1), b.get(2));
    r.source_rows = sc;
    r.target_rows = tc;
    r.equal = sc == tc && sx == tx && ss == ts;
    Ok(())
}

/// The keys of `r` whose rows differ, are missing or are extra (sorted).
async fn differing_keys(
    t: &DirectedTable,
    s: &Sides,
    r: &Range,
    src: &Client,
    tgt: &Client,
) -> Result<Vec<Key>, tokio_postgres::Error> {
    let (scond, params) = range_cond(&s.src_key, &s.key_types, r);
    let (tcond, _) = range_cond(&s.tgt_key, &s.key_types, r);
    let ssql = key_rows(&s.src_key, &s.src_row, &quote_qualified(&t.from_table), &scond);
    let tsql = key_rows(&s.tgt_key, &s.tgt_row, &quote_qualified(&t.to_table), &tcond);
    let p = refs(&params);
    let (a, b) = tokio::try_join!(src.query(ssql.as_str(), &p), tgt.query(tsql.as_str(), &p))?;
    Ok(diff_rows(s.src_key.len(), &a, &b))
}

/// `SELECT (key)::text, key values as text..., row hash` of the rows matching `cond`.
fn key_rows(key: &[String], row: &str, table: &str, cond: &str) -> String {
    format!(
        "SELECT ROW({})::text, {}, hashtextextended({row}, 0) FROM {table} t WHERE {cond}",
        key.join(", "),
        key.iter().map(|k| format!("({k})::text")).collect::<Vec<_>>().join(", ")
    )
}

/// Keys whose hashes differ between the two results of [`key_rows`] (sorted).
fn diff_rows(n: usize, a: &[tokio_postgres::Row], b: &[tokio_postgres::Row]) -> Vec<Key> {
    let keyed = |rows: &[tokio_postgres::Row]| -> Vec<KeyedRow> {
        rows.iter().map(|r| (r.get(0), (1..=n).map(|i| r.get(i)).collect(), r.get(n + 1))).collect()
    };
    diff_keyed(keyed(a), keyed(b))
}

/// A row as [`key_rows`] reads it: its key's text, its key values as text, its hash.
type KeyedRow = (String, Vec<String>, i64);

/// Keys whose rows differ between the two sides (sorted): a different hash, a row on one side
/// only, or a key that one side has more than once (a source table without a unique key: the
/// target, keyed, cannot hold both rows, so the sides differ even where one of them hashes the
/// same; collapsing them by key would hide that).
fn diff_keyed(a: Vec<KeyedRow>, b: Vec<KeyedRow>) -> Vec<Key> {
    let map = |rows: Vec<KeyedRow>| {
        let mut m: HashMap<String, (Vec<String>, i64)> = HashMap::with_capacity(rows.len());
        let mut repeated = Vec::new();
        for (k, v, h) in rows {
            match m.entry(k) {
                std::collections::hash_map::Entry::Occupied(e) => repeated.push(e.key().clone()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((v, h));
                }
            }
        }
        (m, repeated)
    };
    let ((sm, sr), (tm, tr)) = (map(a), map(b));
    let mut differing: std::collections::BTreeMap<&String, &Vec<String>> = sm
        .iter()
        .filter(|(k, (_, h))| tm.get(*k).map(|t| t.1) != Some(*h))
        .chain(tm.iter().filter(|(k, _)| !sm.contains_key(*k)))
        .map(|(k, (v, _))| (k, v))
        .collect();
    for k in sr.iter().chain(&tr) {
        if let Some((k, (v, _))) = sm.get_key_value(k).or_else(|| tm.get_key_value(k)) {
            differing.insert(k, v);
        }
    }
    differing.into_iter().map(|(k, v)| Key { text: k.clone(), values: v.clone() }).collect()
}

/// Of `keys`, those that still differ in the current snapshots (looked up by key).
async fn still_differing(
    t: &DirectedTable,
    s: &Sides,
    keys: &[Key],
    src: &Client,
    tgt: &Client,
) -> Result<Vec<Key>, tokio_postgres::Error> {
    let n = s.src_key.len();
    // one text array per key column, unnested in step and cast to the key's types
    let arrays: Vec<Vec<String>> = (0..n).map(|i| keys.iter().map(|k| k.values[i].clone()).collect()).collect();
    let cond = |key: &[String]| {
        let us: Vec<String> = (0..n).map(|i| format!("u.c{i}::{}", s.key_types[i])).collect();
        let params: Vec<String> = (0..n).map(|i| format!("${}::text[]", i + 1)).collect();
        let cols: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let lhs = if n == 1 { key[0].clone() } else { format!("ROW({})", key.join(", ")) };
        format!("{lhs} IN (SELECT {} FROM unnest({}) AS u({}))", us.join(", "), params.join(", "), cols.join(", "))
    };
    let ssql = key_rows(&s.src_key, &s.src_row, &quote_qualified(&t.from_table), &cond(&s.src_key));
    let tsql = key_rows(&s.tgt_key, &s.tgt_row, &quote_qualified(&t.to_table), &cond(&s.tgt_key));
    let p: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    let (a, b) = tokio::try_join!(src.query(ssql.as_str(), &p), tgt.query(tsql.as_str(), &p))?;
    Ok(diff_rows(n, &a, &b))
}

/// Progress lines on stderr, at most one every 2 s.
struct Progress {
    on: bool,
    last: Instant,
}

impl Progress {
    fn new(on: bool) -> Progress {
        Progress { on, last: Instant::now() }
    }

    fn tick(&mut self, table: &str, done: usize, of: usize, rows: i64, started: Instant) {
        if !self.on || self.last.elapsed() < Duration::from_secs(2) {
            return;
        }
        self.last = Instant::now();
        let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
        eprintln!("verify: {table}: range {done}/{of}; {rows} rows compared so far ({rate:.0} rows/s)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_hash_by_side_and_by_repetition() {
        let row = |k: &str, h: i64| (format!("({k})"), vec![k.to_string()], h);
        let texts = |d: Vec<Key>| d.into_iter().map(|k| k.text).collect::<Vec<_>>();
        // same rows: nothing differs
        assert!(diff_keyed(vec![row("1", 10), row("2", 20)], vec![row("2", 20), row("1", 10)]).is_empty());
        // another hash, one side only (either side)
        let d =
            diff_keyed(vec![row("1", 10), row("2", 20), row("3", 30)], vec![row("1", 11), row("2", 20), row("4", 40)]);
        assert_eq!(texts(d), ["(1)", "(3)", "(4)"]);
        // a key twice on the source, once on the target with the same hash as one of them
        let d = diff_keyed(vec![row("5", 50), row("5", 50)], vec![row("5", 50)]);
        assert_eq!(texts(d), ["(5)"], "a repeated key differs");
        assert_eq!(diff_keyed(vec![row("5", 50), row("5", 51)], vec![row("5", 51)])[0].values, ["5"]);
    }

    #[test]
    fn range_conditions_bind_bounds_as_typed_parameters() {
        let r = Range {
            lo: Some(vec!["5".into()]),
            hi: Some(vec!["9".into()]),
            source_rows: 0,
            target_rows: 0,
            equal: true,
        };
        let (c, p) = range_cond(&["t.\"id\"".into()], &["bigint".into()], &r);
        assert_eq!(c, "t.\"id\" >= $1::text::bigint AND t.\"id\" < $2::text::bigint");
        assert_eq!(p, ["5", "9"]);
        let r = Range { lo: None, hi: Some(vec!["a".into(), "1".into()]), source_rows: 0, target_rows: 0, equal: true };
        let (c, p) = range_cond(&["t.a".into(), "t.b".into()], &["text".into(), "int".into()], &r);
        assert_eq!(c, "ROW(t.a, t.b) < ROW($1::text::text, $2::text::int)");
        assert_eq!(p.len(), 2);
        let whole = Range { lo: None, hi: None, source_rows: 0, target_rows: 0, equal: true };
        assert_eq!(range_cond(&["k".into()], &["int".into()], &whole).0, "true");
    }
}

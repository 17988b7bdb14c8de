//! `cdc-sync verify`: prove source and target agree on every mapped table.
//!
//! Both sides compute, in SQL, row counts and an md5 over the mapped columns (source side
//! evaluates the mapping, cast to the target types) per key range of `chunk_rows` rows, ordered
//! by key. Differing ranges are drilled down row by row to name the differing keys.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::mapping::{DirectedTable, Mapping};
use crate::model::{quote_ident, quote_qualified};
use crate::source::snapshot::source_value;

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
    /// Did every chunk hash match?
    pub equal: bool,
}

/// The whole comparison.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// One entry per mapped table.
    pub tables: Vec<TableReport>,
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
        Ok(())
    }
}

struct Sides {
    src_key: Vec<String>,
    tgt_key: Vec<String>,
    src_hash: String,
    tgt_hash: String,
    key_types: Vec<String>,
}

fn sides(t: &DirectedTable) -> Sides {
    let src_vals: Vec<String> =
        (0..t.outputs.len()).map(|o| format!("({})::{}", source_value(t, o), t.output_types[o])).collect();
    let tgt_vals: Vec<String> = t.outputs.iter().map(|o| format!("t.{}", quote_ident(&o.column))).collect();
    let src_key: Vec<String> = t.key_outputs.iter().map(|o| src_vals[*o].clone()).collect();
    let tgt_key: Vec<String> = t.key_outputs.iter().map(|o| tgt_vals[*o].clone()).collect();
    Sides {
        src_hash: format!("md5(ROW({})::text)", src_vals.join(", ")),
        tgt_hash: format!("md5(ROW({})::text)", tgt_vals.join(", ")),
        key_types: t.key_outputs.iter().map(|o| t.output_types[*o].clone()).collect(),
        src_key,
        tgt_key,
    }
}

fn range_cond(key: &[String], types: &[String], lo: bool, hi: bool) -> (String, usize) {
    let n = key.len();
    let row = format!("ROW({})", key.join(", "));
    let mut conds = vec![];
    let mut p = 0;
    if lo {
        let vals: Vec<String> = (0..n).map(|i| format!("${}::text::{}", p + i + 1, types[i])).collect();
        conds.push(format!("{row} > ROW({})", vals.join(", ")));
        p += n;
    }
    if hi {
        let vals: Vec<String> = (0..n).map(|i| format!("${}::text::{}", p + i + 1, types[i])).collect();
        conds.push(format!("{row} <= ROW({})", vals.join(", ")));
        p += n;
    }
    (if conds.is_empty() { "true".into() } else { conds.join(" AND ") }, p)
}

async fn begin(c: &Client) -> Result<(), tokio_postgres::Error> {
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; \
         SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'; SET LOCAL IntervalStyle = 'postgres'",
    )
    .await
}

/// Compare every table of `mapping` (compiled source → target, types resolved).
pub async fn verify(
    mapping: &Mapping,
    src: &Client,
    tgt: &Client,
    chunk_rows: i64,
) -> Result<VerifyReport, tokio_postgres::Error> {
    begin(src).await?;
    begin(tgt).await?;
    let mut report = VerifyReport::default();
    for t in &mapping.tables {
        report.tables.push(verify_table(t, src, tgt, chunk_rows.max(1)).await?);
    }
    src.batch_execute("COMMIT").await?;
    tgt.batch_execute("COMMIT").await?;
    Ok(report)
}

async fn verify_table(
    t: &DirectedTable,
    src: &Client,
    tgt: &Client,
    chunk_rows: i64,
) -> Result<TableReport, tokio_postgres::Error> {
    let s = sides(t);
    let from = quote_qualified(&t.from_table);
    let to = quote_qualified(&t.to_table);
    let src_keys_txt: Vec<String> = s.src_key.iter().map(|k| format!("({k})::text")).collect();
    // Boundaries: every chunk_rows-th key at the source.
    let bsql = format!(
        "SELECT {cols} FROM (SELECT {keys}, row_number() OVER (ORDER BY {order}) AS rn FROM {from} t) x WHERE rn % {chunk_rows} = 0 ORDER BY rn",
        cols = (0..s.src_key.len()).map(|i| format!("k{i}")).collect::<Vec<_>>().join(", "),
        keys = src_keys_txt.iter().enumerate().map(|(i, k)| format!("{k} AS k{i}")).collect::<Vec<_>>().join(", "),
        order = s.src_key.join(", "),
    );
    let bounds: Vec<Vec<String>> = src
        .query(bsql.as_str(), &[])
        .await?
        .iter()
        .map(|r| (0..s.src_key.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    type Bound = Option<Vec<String>>;
    let mut ranges: Vec<(Bound, Bound)> = vec![];
    let mut prev: Option<Vec<String>> = None;
    for b in bounds {
        ranges.push((prev.clone(), Some(b.clone())));
        prev = Some(b);
    }
    ranges.push((prev, None));

    let mut rep = TableReport {
        source: t.from_table.clone(),
        target: t.to_table.clone(),
        source_rows: 0,
        target_rows: 0,
        differing_keys: vec![],
        equal: true,
    };
    for (lo, hi) in ranges {
        let mut params: Vec<String> = vec![];
        if let Some(l) = &lo {
            params.extend(l.iter().cloned());
        }
        if let Some(h) = &hi {
            params.extend(h.iter().cloned());
        }
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let (scond, _) = range_cond(&s.src_key, &s.key_types, lo.is_some(), hi.is_some());
        let (tcond, _) = range_cond(&s.tgt_key, &s.key_types, lo.is_some(), hi.is_some());
        let agg = |hash: &str, key: &[String], table: &str, cond: &str| {
            format!(
                "SELECT count(*), coalesce(md5(string_agg({hash}, '' ORDER BY {})), '') FROM {table} t WHERE {cond}",
                key.join(", ")
            )
        };
        let sr = src.query_one(agg(&s.src_hash, &s.src_key, &from, &scond).as_str(), &refs).await?;
        let tr = tgt.query_one(agg(&s.tgt_hash, &s.tgt_key, &to, &tcond).as_str(), &refs).await?;
        let (sc, sh): (i64, String) = (sr.get(0), sr.get(1));
        let (tc, th): (i64, String) = (tr.get(0), tr.get(1));
        rep.source_rows += sc;
        rep.target_rows += tc;
        if sc == tc && sh == th {
            continue;
        }
        rep.equal = false;
        // drill down
        let rows = |hash: &str, key: &[String], table: &str, cond: &str| {
            format!("SELECT ROW({})::text, {hash} FROM {table} t WHERE {cond}", key.join(", "))
        };
        let smap: HashMap<String, String> = src
            .query(rows(&s.src_hash, &s.src_key, &from, &scond).as_str(), &refs)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let tmap: HashMap<String, String> = tgt
            .query(rows(&s.tgt_hash, &s.tgt_key, &to, &tcond).as_str(), &refs)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut diff: Vec<String> = smap
            .iter()
            .filter(|(k, h)| tmap.get(*k) != Some(h))
            .map(|(k, _)| k.clone())
            .chain(tmap.keys().filter(|k| !smap.contains_key(*k)).cloned())
            .collect();
        diff.sort();
        for d in diff {
            if rep.differing_keys.len() < 100 {
                rep.differing_keys.push(d);
            }
        }
    }
    Ok(rep)
}

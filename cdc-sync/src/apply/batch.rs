//! Batching: how one flush of ops is regrouped into few statements (runs) without changing the
//! state the target ends in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::mapping::{Mapping, Op};
use crate::model::Cell;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Shape {
    Upsert,
    Update { present: Vec<bool>, with_key: bool },
    Delete,
    Truncate(Vec<usize>),
}

/// Consecutive ops of one table and shape, with no key repeated (a repeat starts a new run so
/// order is preserved), and for last-writer-wins tables one source commit time.
pub(crate) struct Run<'a> {
    pub(crate) table: usize,
    pub(crate) shape: Shape,
    pub(crate) ts: DateTime<Utc>,
    pub(crate) ops: Vec<&'a Op>,
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
        Op::Truncate { tables, .. } => Shape::Truncate(tables.clone()),
    }
}

pub(crate) fn op_keys(op: &Op, key_len: usize) -> Vec<Vec<Arc<str>>> {
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
pub(crate) fn runs<'a>(mapping: &Mapping, ops: &'a [Op], regroup: &Regroup) -> Vec<Run<'a>> {
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
/// ends what can be merged, and a delete is never merged into the insert that follows it. An update is merged into an earlier change only when it carries
/// every column (no unchanged TOAST value), so expression columns end up exactly as in-order
/// application leaves them.
pub(crate) fn coalesce(mapping: &Mapping, ops: Vec<Op>, regroup: &Regroup) -> Vec<Op> {
    if !regroup.cross_table {
        return ops;
    }
    let mut out: Vec<Option<Op>> = Vec::with_capacity(ops.len());
    let mut latest: HashMap<(usize, Vec<Arc<str>>), usize> = HashMap::new();
    for op in ops {
        let table = match &op {
            Op::Truncate { tables, .. } => {
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
                    // a row deleted and inserted again: the insert must not become an update of
                    // the old row (`ON CONFLICT DO UPDATE` sets the mapped columns only, and the
                    // target's other columns must start again from their defaults)
                    (Op::Delete { .. }, Op::Upsert { .. }) => Merge::Append,
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
                    Op::Update { table, row, lsn, ts, .. } => Op::Upsert { table, row, lsn, ts },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::memory_sink::MemorySink;
    use crate::apply::sink::{CommitInfo, Sink};
    use crate::apply::testing::mapping;
    use crate::config::parse_with_env;
    use crate::mapping::Way;
    use crate::model::Lsn;

    #[test]
    fn runs_split_on_repeated_key_and_shape() {
        let m = mapping();
        let (lsn, ts) = (Lsn(1), Utc::now());
        let row = |id: &str| vec![Cell::Text(id.into()), Cell::Text("b".into()), Cell::Text("1".into())];
        let ops = vec![
            Op::Upsert { table: 0, row: row("1"), lsn, ts },
            Op::Upsert { table: 0, row: row("2"), lsn, ts },
            Op::Upsert { table: 0, row: row("1"), lsn, ts },
            Op::Delete { table: 0, key: vec!["2".into()], lsn, ts },
        ];
        let rs = runs(&m, &ops, &Regroup::default());
        assert_eq!(rs.iter().map(|r| r.ops.len()).collect::<Vec<_>>(), vec![2, 1, 1]);
    }

    /// A row deleted and inserted again keeps its delete: merged into one upsert, the insert
    /// would update the old row and leave the target's unmapped columns as they were, where
    /// applying in order resets them to their defaults. What follows merges into the insert.
    #[test]
    fn a_delete_then_an_insert_of_the_key_stay_two_ops() {
        let m = mapping();
        let (lsn, ts) = (Lsn(1), Utc::now());
        let row = |n: &str| vec![Cell::Text("1".into()), Cell::Text("b".into()), Cell::Text(n.into())];
        let ops = vec![
            Op::Update { table: 0, match_key: vec!["1".into()], row: row("1"), lsn, ts },
            Op::Delete { table: 0, key: vec!["1".into()], lsn, ts },
            Op::Upsert { table: 0, row: row("2"), lsn, ts },
            Op::Update { table: 0, match_key: vec!["1".into()], row: row("3"), lsn, ts },
        ];
        let regroup = Regroup { cross_table: true, commutes: vec![true] };
        let got = coalesce(&m, ops, &regroup);
        assert!(
            matches!(got.as_slice(), [Op::Delete { .. }, Op::Upsert { row, .. }] if row[2] == Cell::Text("3".into())),
            "{got:?}"
        );
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
        let (lsn, ts) = (Lsn(1), Utc::now());
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
                    ops.push(Op::Truncate { tables: vec![table], lsn });
                    live[table].clear();
                } else if !live[table].contains(&k) {
                    ops.push(Op::Upsert { table, row: row(k, cell(format!("b{i}"))), lsn, ts });
                    live[table].insert(k);
                } else if choice < 20 {
                    ops.push(Op::Delete { table, key: vec![k.to_string().into()], lsn, ts });
                    live[table].remove(&k);
                } else if choice < 30 {
                    let to = rnd(30);
                    if !live[table].contains(&to) {
                        ops.push(Op::Update {
                            table,
                            match_key: vec![k.to_string().into()],
                            row: row(to, Cell::Unchanged),
                            lsn,
                            ts,
                        });
                        live[table].remove(&k);
                        live[table].insert(to);
                    }
                } else {
                    let body = if choice < 60 { Cell::Unchanged } else { cell(format!("u{i}")) };
                    ops.push(Op::Update { table, match_key: vec![k.to_string().into()], row: row(k, body), lsn, ts });
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
                [Op::Upsert { table: 0, row: row(0), lsn, ts }, Op::Upsert { table: 1, row: row(1), lsn, ts }]
            })
            .collect();
        let regroup = Regroup { cross_table: true, commutes: vec![true, true] };
        assert_eq!(consecutive_runs(&m, &ops).len(), 2000);
        assert_eq!(runs(&m, &ops, &regroup).len(), 2);
    }
}

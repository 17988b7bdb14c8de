//! Column mapping compiled per direction, and the pure translation of a source row change
//! into a target operation ([`Op`]). No I/O here.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{ColumnSpec, SyncConfig, TableConfig};
use crate::model::{Cell, ChangeKind, Lsn, Row, RowChange};

/// Which pipeline a mapping is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// Source → target.
    Forward,
    /// Target → source.
    Reverse,
}

/// How an output (written) column gets its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputValue {
    /// The input column with this index (text-in to the output column's type).
    Input(usize),
    /// A SQL expression over input columns (evaluated by PostgreSQL, with the inputs typed as
    /// on their own side). `deps` are the input indices it reads.
    Expr {
        /// The SQL.
        sql: String,
        /// Input indices the expression reads.
        deps: Vec<usize>,
    },
    /// A constant SQL expression.
    Const(String),
}

/// One written column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Column name on the written side.
    pub column: String,
    /// Its value.
    pub value: OutputValue,
}

/// A table mapping compiled for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectedTable {
    /// Read-side table (qualified).
    pub from_table: String,
    /// Written-side table (qualified).
    pub to_table: String,
    /// Read-side columns the mapping needs; the key columns come first.
    pub inputs: Vec<String>,
    /// Number of key columns (`inputs[..key_len]`).
    pub key_len: usize,
    /// Written columns.
    pub outputs: Vec<Output>,
    /// For each key column, the index of the output it is written to.
    pub key_outputs: Vec<usize>,
    /// Read-side types of `inputs` (`format_type`), filled from the catalog.
    pub input_types: Vec<String>,
    /// Written-side types of `outputs`, filled from the catalog.
    pub output_types: Vec<String>,
    /// Last-writer-wins conflict handling (bidirectional tables).
    pub lww: bool,
    /// The conflict policy of a bidirectional table (see [`crate::apply::conflict`]).
    pub conflict: crate::config::ConflictPolicy,
    /// `[[table]]` line in sync.toml.
    pub line: usize,
    /// Type OIDs of `inputs` at the read side, filled from the catalog (empty until then).
    pub input_oids: Vec<u32>,
    /// Every read-side column when the mapping was resolved (to tell a new one).
    pub from_columns: Vec<String>,
    /// `add_columns = "propagate"`: unread read-side columns are carried under their own name.
    pub propagate: bool,
    /// The columns carried that way (a subset of `inputs`, each written to a same-named output).
    pub carried: Vec<String>,
    /// Columns of the stream's shape that cannot be carried (gone from the read side's catalog,
    /// e.g. added and dropped again before the stream reached them): reported, not added again.
    pub uncarried: Vec<String>,
}

/// Errors translating a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A mapped column is gone at the source: stop rather than write NULLs.
    #[error(
        "mapped column {column} of {table} is no longer present at the source (dropped or renamed?); \
         refusing to continue: fix the mapping in sync.toml (line {line}) or restore the column"
    )]
    MissingColumn {
        /// Read-side table.
        table: String,
        /// The column.
        column: String,
        /// sync.toml line.
        line: usize,
    },
    /// The old key was not sent (replica identity does not cover the configured key).
    #[error(
        "{table}: {what} arrived without key column {column}; set REPLICA IDENTITY FULL on {table} \
         or make the configured key its primary key"
    )]
    NoKey {
        /// Read-side table.
        table: String,
        /// update/delete.
        what: &'static str,
        /// The key column.
        column: String,
    },
}

impl MapError {
    /// The read-side table.
    pub fn table(&self) -> &str {
        match self {
            MapError::MissingColumn { table, .. } | MapError::NoKey { table, .. } => table,
        }
    }
}

/// Identifier-like tokens of an SQL expression outside of string literals and quoted
/// identifiers are matched against the read-side columns to find what an expression reads.
pub fn expr_identifiers(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else if c == b'"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            out.push(sql[start..i.min(b.len())].to_string());
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                i += 1;
            }
            // `::type` casts are type names, not columns
            let prev_cast = start >= 2 && &sql[start - 2..start] == "::";
            if !prev_cast {
                out.push(sql[start..i].to_ascii_lowercase());
            }
        } else {
            i += 1;
        }
    }
    out
}

impl DirectedTable {
    /// Compile `t` for `way`. Expression dependencies are resolved later with
    /// [`resolve_exprs`](Self::resolve_exprs) once the read-side columns are known.
    pub fn compile(t: &TableConfig, way: Way) -> DirectedTable {
        let mut inputs: Vec<String> = Vec::new();
        let mut outputs = Vec::new();
        let mut key_outputs = Vec::new();
        let input_idx = |inputs: &mut Vec<String>, c: &str| -> usize {
            if let Some(i) = inputs.iter().position(|x| x == c) {
                i
            } else {
                inputs.push(c.to_string());
                inputs.len() - 1
            }
        };
        match way {
            Way::Forward => {
                for k in &t.key {
                    input_idx(&mut inputs, k);
                }
                for c in &t.columns {
                    let value = match &c.spec {
                        ColumnSpec::Column(s) => OutputValue::Input(input_idx(&mut inputs, s)),
                        ColumnSpec::Expr { sql, .. } => OutputValue::Expr { sql: sql.clone(), deps: vec![] },
                        ColumnSpec::Constant(sql) => OutputValue::Const(sql.clone()),
                    };
                    outputs.push(Output { column: c.target.clone(), value });
                }
                for k in &t.key {
                    let pos = outputs
                        .iter()
                        .position(|o| matches!(&o.value, OutputValue::Input(i) if inputs[*i] == *k))
                        .expect("validated: key mapped");
                    key_outputs.push(pos);
                }
                DirectedTable::new(t, t.source.clone(), t.target.clone(), inputs, outputs, key_outputs)
            }
            Way::Reverse => {
                let target_key: Vec<String> = t
                    .key
                    .iter()
                    .map(|k| {
                        t.columns
                            .iter()
                            .find(|c| c.spec == ColumnSpec::Column(k.clone()))
                            .expect("validated: key mapped")
                            .target
                            .clone()
                    })
                    .collect();
                for k in &target_key {
                    input_idx(&mut inputs, k);
                }
                for c in &t.columns {
                    match &c.spec {
                        ColumnSpec::Column(s) => outputs.push(Output {
                            column: s.clone(),
                            value: OutputValue::Input(input_idx(&mut inputs, &c.target)),
                        }),
                        ColumnSpec::Expr { reverse_column: Some(rc), reverse_expr: Some(re), .. } => {
                            outputs.push(Output {
                                column: rc.clone(),
                                value: OutputValue::Expr { sql: re.clone(), deps: vec![] },
                            })
                        }
                        _ => {}
                    }
                }
                for k in &t.key {
                    key_outputs.push(outputs.iter().position(|o| o.column == *k).expect("validated"));
                }
                let mut d = DirectedTable::new(t, t.target.clone(), t.source.clone(), inputs, outputs, key_outputs);
                d.propagate = false; // columns are only ever added to the service side
                d
            }
        }
    }

    fn new(
        t: &TableConfig,
        from_table: String,
        to_table: String,
        inputs: Vec<String>,
        outputs: Vec<Output>,
        key_outputs: Vec<usize>,
    ) -> Self {
        DirectedTable {
            from_table,
            to_table,
            key_len: t.key.len(),
            inputs,
            outputs,
            key_outputs,
            input_types: vec![],
            output_types: vec![],
            lww: t.direction == crate::config::Direction::Both,
            conflict: t.conflict,
            line: t.line,
            input_oids: vec![],
            from_columns: vec![],
            propagate: t.add_columns == crate::config::AddColumns::Propagate,
            carried: vec![],
            uncarried: vec![],
        }
    }

    /// Carry these read-side columns under their own name (`add_columns = "propagate"`): each
    /// one the mapping does not already read, and whose name no output has, becomes an input
    /// written to a same-named output. Call after [`resolve_exprs`](Self::resolve_exprs).
    pub fn carry(&mut self, columns: &[String]) {
        for c in columns {
            if self.inputs.contains(c) || self.outputs.iter().any(|o| o.column == *c) {
                continue;
            }
            self.inputs.push(c.clone());
            self.outputs.push(Output { column: c.clone(), value: OutputValue::Input(self.inputs.len() - 1) });
            self.carried.push(c.clone());
        }
    }

    /// Find which read-side columns each expression reads (adding them to `inputs`).
    pub fn resolve_exprs(&mut self, from_columns: &[String]) {
        for o in 0..self.outputs.len() {
            if let OutputValue::Expr { sql, .. } = &self.outputs[o].value {
                let mut deps = Vec::new();
                for ident in expr_identifiers(sql) {
                    if from_columns.contains(&ident) {
                        let i = match self.inputs.iter().position(|x| *x == ident) {
                            Some(i) => i,
                            None => {
                                self.inputs.push(ident);
                                self.inputs.len() - 1
                            }
                        };
                        if !deps.contains(&i) {
                            deps.push(i);
                        }
                    }
                }
                if let OutputValue::Expr { deps: d, .. } = &mut self.outputs[o].value {
                    *d = deps;
                }
            }
        }
    }

    /// Check a Relation message: every input column must still exist.
    pub fn check_relation(&self, columns: &[Arc<str>]) -> Result<(), MapError> {
        for c in &self.inputs {
            if !columns.iter().any(|x| x.as_ref() == c) {
                return Err(MapError::MissingColumn {
                    table: self.from_table.clone(),
                    column: c.clone(),
                    line: self.line,
                });
            }
        }
        Ok(())
    }

    fn cells(&self, row: &Row) -> Vec<Cell> {
        self.inputs.iter().map(|c| row.get(c).cloned().unwrap_or(Cell::Unchanged)).collect()
    }

    fn key_of(&self, row: &Row, what: &'static str) -> Result<Vec<Arc<str>>, MapError> {
        self.inputs[..self.key_len]
            .iter()
            .map(|k| match row.get(k) {
                Some(Cell::Text(s)) => Ok(Arc::clone(s)),
                _ => Err(MapError::NoKey { table: self.from_table.clone(), what, column: k.clone() }),
            })
            .collect()
    }

    /// Translate one change of this table. `table` is this mapping's index, stored in the op;
    /// `lsn` and `ts` are the commit LSN and time of the source transaction.
    pub fn map_change(&self, table: usize, change: &RowChange, lsn: Lsn, ts: DateTime<Utc>) -> Result<Op, MapError> {
        match &change.kind {
            ChangeKind::Insert { new } => {
                let cells = self.cells(new);
                if let Some(i) = cells.iter().position(|c| *c == Cell::Unchanged) {
                    return Err(MapError::MissingColumn {
                        table: self.from_table.clone(),
                        column: self.inputs[i].clone(),
                        line: self.line,
                    });
                }
                Ok(Op::Upsert { table, row: cells, lsn, ts })
            }
            ChangeKind::Update { old, new } => {
                let new_key = self.key_of(new, "update")?;
                let old_key = match old {
                    Some(o) => self.key_of(o, "update")?,
                    None => new_key.clone(),
                };
                let cells = self.cells(new);
                // A bidirectional table keeps an update an update, even with every column: a
                // row the written side no longer has was deleted there unseen, which is a
                // conflict ([`crate::apply::conflict`]) rather than an insert.
                if !self.lww && old_key == new_key && cells.iter().all(|c| *c != Cell::Unchanged) {
                    Ok(Op::Upsert { table, row: cells, lsn, ts })
                } else {
                    Ok(Op::Update { table, match_key: old_key, row: cells, lsn, ts })
                }
            }
            ChangeKind::Delete { old } => Ok(Op::Delete { table, key: self.key_of(old, "delete")?, lsn, ts }),
        }
    }

    /// Which outputs an update with these present inputs may set (all of whose inputs are
    /// present; constants never change on update). Key outputs are included only if `with_key`.
    pub fn settable_outputs(&self, present: &[bool], with_key: bool) -> Vec<usize> {
        (0..self.outputs.len())
            .filter(|o| with_key || !self.key_outputs.contains(o))
            .filter(|o| match &self.outputs[*o].value {
                OutputValue::Input(i) => present[*i],
                OutputValue::Expr { deps, .. } => deps.iter().all(|d| present[*d]),
                OutputValue::Const(_) => false,
            })
            .collect()
    }
}

/// A write on the target, in terms of the mapping's input columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or overwrite the whole mapped row (all inputs present).
    Upsert {
        /// Mapping index.
        table: usize,
        /// One cell per input, none `Unchanged`.
        row: Vec<Cell>,
        /// Commit LSN of the source transaction (names it in errors).
        lsn: Lsn,
        /// Source commit time (for last-writer-wins).
        ts: DateTime<Utc>,
    },
    /// Update the row with key `match_key`, setting only outputs whose inputs are present (a
    /// TOAST-unchanged column is left alone), including the key if it changed.
    Update {
        /// Mapping index.
        table: usize,
        /// The old key values.
        match_key: Vec<Arc<str>>,
        /// One cell per input; `Unchanged` ones are not written.
        row: Vec<Cell>,
        /// Commit LSN of the source transaction.
        lsn: Lsn,
        /// Source commit time.
        ts: DateTime<Utc>,
    },
    /// Delete the row with this key.
    Delete {
        /// Mapping index.
        table: usize,
        /// Key values.
        key: Vec<Arc<str>>,
        /// Commit LSN of the source transaction.
        lsn: Lsn,
        /// Source commit time.
        ts: DateTime<Utc>,
    },
    /// Truncate these mapped tables.
    Truncate {
        /// Mapping indexes.
        tables: Vec<usize>,
        /// Commit LSN of the source transaction.
        lsn: Lsn,
    },
}

impl Op {
    /// Commit LSN of the source transaction the op comes from.
    pub fn lsn(&self) -> Lsn {
        match self {
            Op::Upsert { lsn, .. } | Op::Update { lsn, .. } | Op::Delete { lsn, .. } | Op::Truncate { lsn, .. } => *lsn,
        }
    }

    /// The mapping index (None for truncate).
    pub fn table(&self) -> Option<usize> {
        match self {
            Op::Upsert { table, .. } | Op::Update { table, .. } | Op::Delete { table, .. } => Some(*table),
            Op::Truncate { .. } => None,
        }
    }
}

/// All table mappings of one direction, indexed by read-side table name.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// The compiled tables.
    pub tables: Vec<DirectedTable>,
    by_from: HashMap<String, Vec<usize>>,
}

impl Mapping {
    /// Compile every table of `cfg` that flows in `way`.
    pub fn compile(cfg: &SyncConfig, way: Way) -> Mapping {
        let tables: Vec<DirectedTable> = cfg
            .tables
            .iter()
            .filter(|t| match way {
                Way::Forward => t.direction.forward(),
                Way::Reverse => t.direction.reverse(),
            })
            .map(|t| DirectedTable::compile(t, way))
            .collect();
        Mapping::from_tables(tables)
    }

    /// Build from already compiled tables.
    pub fn from_tables(tables: Vec<DirectedTable>) -> Mapping {
        let mut by_from: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_from.entry(t.from_table.clone()).or_default().push(i);
        }
        Mapping { tables, by_from }
    }

    /// The mapping indexes of a read-side table: usually one; several when one source table
    /// fans out into several target tables (forward only, e.g. a legacy table split in two).
    pub fn indexes_of(&self, from_table: &str) -> &[usize] {
        self.by_from.get(from_table).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first mapping index of a read-side table.
    pub fn index_of(&self, from_table: &str) -> Option<usize> {
        self.indexes_of(from_table).first().copied()
    }

    /// Read-side table names, each once.
    pub fn from_table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for t in &self.tables {
            if !names.contains(&t.from_table) {
                names.push(t.from_table.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with_env;

    fn cfg() -> SyncConfig {
        parse_with_env(
            "t",
            r#"
name = "t"
[source]
url = "a"
[target]
url = "b"
[[table]]
source = "products"
target = "items"
key = ["id"]
direction = "both"
[table.columns]
id = "id"
title = "name"
price_cents = { expr = "(price * 100)::bigint", reverse_column = "price", reverse_expr = "(price_cents / 100.0)::numeric" }
src = { constant = "'legacy'" }
"#,
            &|_| None,
        )
        .unwrap()
    }

    fn t(s: &str) -> Cell {
        Cell::Text(Arc::from(s))
    }

    #[test]
    fn forward_compile_and_resolve() {
        let m = Mapping::compile(&cfg(), Way::Forward);
        let mut d = m.tables[0].clone();
        d.resolve_exprs(&["id".into(), "name".into(), "price".into(), "extra".into()]);
        assert_eq!(d.inputs, vec!["id", "name", "price"]);
        assert_eq!(d.key_len, 1);
        let pc = d.outputs.iter().find(|o| o.column == "price_cents").unwrap();
        assert_eq!(pc.value, OutputValue::Expr { sql: "(price * 100)::bigint".into(), deps: vec![2] });
        assert_eq!(d.outputs[d.key_outputs[0]].column, "id");
    }

    #[test]
    fn reverse_compile() {
        let m = Mapping::compile(&cfg(), Way::Reverse);
        let mut d = m.tables[0].clone();
        d.resolve_exprs(&["id".into(), "title".into(), "price_cents".into(), "src".into()]);
        assert_eq!(d.from_table, "public.items");
        assert_eq!(d.to_table, "public.products");
        assert_eq!(d.inputs, vec!["id", "title", "price_cents"]);
        let cols: Vec<_> = d.outputs.iter().map(|o| o.column.as_str()).collect();
        assert!(cols.contains(&"name") && cols.contains(&"price") && cols.contains(&"id"));
        assert!(!cols.contains(&"src"));
    }

    #[test]
    fn identifiers_skip_literals_and_types() {
        assert_eq!(expr_identifiers("coalesce(a, 'b c')::bigint + \"D\""), vec!["coalesce", "a", "D"]);
    }

    #[test]
    fn update_translation_handles_toast_and_key_change() {
        let mut d = Mapping::compile(&cfg(), Way::Forward).tables[0].clone();
        d.resolve_exprs(&["id".into(), "name".into(), "price".into()]);
        let ts = Utc::now();
        let full = Row::from_pairs([("id", t("1")), ("name", t("a")), ("price", t("2.5"))]);
        let ch =
            RowChange { table: "public.products".into(), kind: ChangeKind::Update { old: None, new: full.clone() } };
        assert!(matches!(d.map_change(0, &ch, Lsn(1), ts).unwrap(), Op::Update { .. }), "a `both` table");
        let mut forward_only = d.clone();
        forward_only.lww = false;
        assert!(matches!(forward_only.map_change(0, &ch, Lsn(1), ts).unwrap(), Op::Upsert { .. }));
        // unchanged TOAST name: partial update that does not touch title
        let partial = Row::from_pairs([("id", t("1")), ("name", Cell::Unchanged), ("price", t("3"))]);
        let ch = RowChange { table: "public.products".into(), kind: ChangeKind::Update { old: None, new: partial } };
        let op = d.map_change(0, &ch, Lsn(1), ts).unwrap();
        let Op::Update { match_key, row, .. } = op else { panic!() };
        assert_eq!(match_key, vec![Arc::<str>::from("1")]);
        let present: Vec<bool> = row.iter().map(|c| *c != Cell::Unchanged).collect();
        let set: Vec<_> = d.settable_outputs(&present, false).iter().map(|o| d.outputs[*o].column.clone()).collect();
        assert_eq!(set, vec!["price_cents".to_string()]);
        // key change
        let old = Row::from_pairs([("id", t("1"))]);
        let new = Row::from_pairs([("id", t("9")), ("name", t("a")), ("price", t("2.5"))]);
        let ch = RowChange { table: "x".into(), kind: ChangeKind::Update { old: Some(old), new } };
        let Op::Update { match_key, .. } = d.map_change(0, &ch, Lsn(1), ts).unwrap() else { panic!() };
        assert_eq!(match_key, vec![Arc::<str>::from("1")]);
    }

    #[test]
    fn dropped_column_is_an_error() {
        let mut d = Mapping::compile(&cfg(), Way::Forward).tables[0].clone();
        d.resolve_exprs(&["id".into(), "name".into(), "price".into()]);
        let e = d.check_relation(&["id".into(), "price".into(), "new_col".into()]).unwrap_err();
        assert!(e.to_string().contains("mapped column name of public.products"), "{e}");
        assert!(d.check_relation(&["id".into(), "name".into(), "price".into(), "new_col".into()]).is_ok());
    }

    #[test]
    fn fan_out_maps_one_source_table_to_several_targets() {
        let src = "name = 't'\n[source]\nurl = 'a'\n[target]\nurl = 'b'\n\
                   [[table]]\nsource = 'products'\ntarget = 'products'\nkey = ['id']\n[table.columns]\nid = 'id'\ntitle = 'name'\n\
                   [[table]]\nsource = 'products'\ntarget = 'product_prices'\nkey = ['id']\n[table.columns]\nproduct_id = 'id'\n\
                   price_cents = { expr = '(price * 100)::bigint' }\n";
        let cfg = parse_with_env("s.toml", src, &|_: &str| None).unwrap();
        let m = Mapping::compile(&cfg, Way::Forward);
        assert_eq!(m.indexes_of("public.products"), [0, 1]);
        assert_eq!(m.from_table_names(), ["public.products"]);
    }
}

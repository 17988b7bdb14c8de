//! Schema changes seen in the stream: a pgoutput Relation message (sent before the first change
//! of a table after DDL, and once per session) compared with a table's resolved mapping. Pure:
//! the pipeline calls [`check`] before it maps the first change of the table that follows the
//! message, so nothing of a transaction that meets a changed table is applied; the runner
//! decides what happens next (stop, or add the new columns and map again).

use crate::mapping::{DirectedTable, OutputValue};
use crate::model::{Lsn, RelationInfo};

/// A change of a read-side table's shape that the mapping does not fit as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaChange {
    /// A column the mapping reads is gone (dropped or renamed at the read side).
    #[error(
        "mapped column {column} of {table} is no longer present at the source (dropped or renamed), seen in the \
         source transaction committing at {at}; nothing of it was applied and the checkpoint is before it. To go on: \
         in sync.toml (table at line {line}) remove or re-map target column(s) {targets} of {to_table} (e.g. to the \
         column's new name), or restore the column at the source; then run again"
    )]
    Dropped {
        /// Read-side table.
        table: String,
        /// The column.
        column: String,
        /// Written-side table.
        to_table: String,
        /// Written-side columns computed from it.
        targets: String,
        /// Commit LSN of the transaction where it was seen.
        at: Lsn,
        /// sync.toml line of the table.
        line: usize,
    },
    /// A column the mapping reads changed type.
    #[error(
        "column {column} of {table} changed type at the source from {was} to {now}, seen in the source transaction \
         committing at {at}; nothing of it was applied and the checkpoint is before it. To go on: make target \
         column(s) {targets} of {to_table} take the new type (ALTER TABLE ... ALTER COLUMN ... TYPE ...) or change \
         their mapping in sync.toml (table at line {line}, e.g. an `expr` with a cast); then run again"
    )]
    Retyped {
        /// Read-side table.
        table: String,
        /// The column.
        column: String,
        /// Written-side table.
        to_table: String,
        /// Written-side columns computed from it.
        targets: String,
        /// Its type when the mapping was resolved.
        was: String,
        /// Its type in the Relation message.
        now: String,
        /// Commit LSN of the transaction where it was seen.
        at: Lsn,
        /// sync.toml line of the table.
        line: usize,
    },
    /// `add_columns = "propagate"`: the table's shape differs from the carried columns (new
    /// columns to add to the target, or a carried one absent from an older shape). Not an error
    /// for the user: the runner adds and back-fills `added`, then maps again to `columns`.
    #[error("the shape of {table} changed at {at} (new columns to carry: {added:?}); mapping it again")]
    Reshape {
        /// Read-side table.
        table: String,
        /// The relation's columns.
        columns: Vec<String>,
        /// Columns to add to the target and back-fill.
        added: Vec<String>,
        /// Commit LSN of the transaction where it was seen.
        at: Lsn,
    },
}

impl SchemaChange {
    /// The commit LSN of the transaction that met the change.
    pub fn at(&self) -> Lsn {
        match self {
            SchemaChange::Dropped { at, .. } | SchemaChange::Retyped { at, .. } | SchemaChange::Reshape { at, .. } => {
                *at
            }
        }
    }

    /// The read-side table.
    pub fn table(&self) -> &str {
        match self {
            SchemaChange::Dropped { table, .. }
            | SchemaChange::Retyped { table, .. }
            | SchemaChange::Reshape { table, .. } => table,
        }
    }
}

/// What to do when applying failed because the written side lacks a mapped column or table
/// (SQLSTATE `42703` undefined column, `42P01` undefined table).
pub fn written_side_hint(sqlstate: Option<&str>) -> Option<String> {
    let what = match sqlstate? {
        "42703" => "a mapped column",
        "42P01" => "a mapped table",
        _ => return None,
    };
    Some(format!(
        "{what} is missing on the written side (dropped or renamed there?); nothing of this source transaction was \
         applied and the checkpoint is before it. To go on: restore it there, or change sync.toml to match \
         (remove or re-map it), then run again (or SIGHUP)"
    ))
}

/// The name of a built-in type OID (the common ones), else `type oid N`.
pub fn type_name(oid: u32) -> String {
    let n = match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return format!("type oid {oid}"),
    };
    n.to_string()
}

/// The written-side columns computed from input `i`.
fn targets_of(t: &DirectedTable, i: usize) -> String {
    let v: Vec<&str> = t
        .outputs
        .iter()
        .filter(|o| match &o.value {
            OutputValue::Input(x) => *x == i,
            OutputValue::Expr { deps, .. } => deps.contains(&i),
            OutputValue::Const(_) => false,
        })
        .map(|o| o.column.as_str())
        .collect();
    v.join(", ")
}

/// Compare a Relation message with table `t`'s mapping, for the transaction committing at
/// `at`. `check_types`: compare column types too (only for transactions committed after the
/// mapping was resolved; older ones may legitimately show the shape from before a change the
/// catalog already has). Returns the relation's columns that are new since the mapping was
/// resolved and that nothing reads (to report once as unmapped).
pub fn check(
    t: &DirectedTable,
    rel: &RelationInfo,
    at: Lsn,
    check_types: bool,
) -> Result<Vec<String>, Box<SchemaChange>> {
    let columns: Vec<String> = rel.columns.iter().map(|c| c.to_string()).collect();
    let reshape = |added: Vec<String>| {
        Box::new(SchemaChange::Reshape { table: t.from_table.clone(), columns: columns.clone(), added, at })
    };
    for (i, c) in t.inputs.iter().enumerate() {
        let Some(p) = columns.iter().position(|x| x == c) else {
            if t.carried.contains(c) {
                return Err(reshape(vec![]));
            }
            return Err(Box::new(SchemaChange::Dropped {
                table: t.from_table.clone(),
                column: c.clone(),
                to_table: t.to_table.clone(),
                targets: targets_of(t, i),
                at,
                line: t.line,
            }));
        };
        let (was, now) = (t.input_oids.get(i).copied(), rel.type_oids.get(p).copied());
        if let (true, Some(was), Some(now)) = (check_types, was, now) {
            if was != now && was != 0 {
                return Err(Box::new(SchemaChange::Retyped {
                    table: t.from_table.clone(),
                    column: c.clone(),
                    to_table: t.to_table.clone(),
                    targets: targets_of(t, i),
                    was: t.input_types.get(i).cloned().unwrap_or_else(|| type_name(was)),
                    now: type_name(now),
                    at,
                    line: t.line,
                }));
            }
        }
    }
    let unread: Vec<String> = columns.iter().filter(|c| !t.inputs.contains(c)).cloned().collect();
    if t.propagate {
        let added: Vec<String> = unread
            .iter()
            .filter(|c| !t.outputs.iter().any(|o| o.column == **c) && !t.uncarried.contains(c))
            .cloned()
            .collect();
        if !added.is_empty() {
            return Err(reshape(added));
        }
    }
    Ok(unread.into_iter().filter(|c| !t.from_columns.contains(c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with_env;
    use crate::mapping::{Mapping, Way};
    use std::sync::Arc;

    fn table(propagate: bool) -> DirectedTable {
        let extra = if propagate { "add_columns = 'propagate'\n" } else { "" };
        let src = format!(
            "name='t'\n[source]\nurl='a'\n[target]\nurl='b'\n[[table]]\nsource='items'\ntarget='items'\nkey=['id']\n\
             {extra}[table.columns]\nid='id'\ntitle='name'\ncents={{ expr = '(price * 100)::bigint' }}\n"
        );
        let cfg = parse_with_env("s.toml", &src, &|_| None).unwrap();
        let mut t = Mapping::compile(&cfg, Way::Forward).tables[0].clone();
        let from: Vec<String> = ["id", "name", "price", "notes"].map(String::from).to_vec();
        t.resolve_exprs(&from);
        t.from_columns = from;
        t.input_oids = vec![23, 25, 1700];
        t.input_types = vec!["integer".into(), "text".into(), "numeric(12,2)".into()];
        t
    }

    fn rel(cols: &[(&str, u32)]) -> RelationInfo {
        RelationInfo {
            table: "public.items".into(),
            columns: cols.iter().map(|c| Arc::from(c.0)).collect(),
            type_oids: cols.iter().map(|c| c.1).collect(),
        }
    }

    #[test]
    fn same_shape_passes_and_new_unread_columns_are_reported() {
        let t = table(false);
        let base = [("id", 23), ("name", 25), ("price", 1700), ("notes", 25)];
        assert_eq!(check(&t, &rel(&base), Lsn(9), true).unwrap(), Vec::<String>::new());
        let mut more = base.to_vec();
        more.push(("color", 25));
        assert_eq!(check(&t, &rel(&more), Lsn(9), true).unwrap(), vec!["color".to_string()]);
    }

    #[test]
    fn a_dropped_read_column_names_its_targets() {
        let t = table(false);
        let e = check(&t, &rel(&[("id", 23), ("name", 25), ("notes", 25)]), Lsn(0x10), true).unwrap_err();
        let SchemaChange::Dropped { column, targets, .. } = &*e else { panic!("{e:?}") };
        assert_eq!((column.as_str(), targets.as_str()), ("price", "cents"));
        assert!(e.to_string().contains("0/10") && e.to_string().contains("line 6"), "{e}");
    }

    #[test]
    fn a_retype_stops_only_for_transactions_after_the_resolution() {
        let t = table(false);
        let r = rel(&[("id", 23), ("name", 25), ("price", 25)]);
        let e = check(&t, &r, Lsn(1), true).unwrap_err();
        assert!(e.to_string().contains("from numeric(12,2) to text"), "{e}");
        assert!(check(&t, &r, Lsn(1), false).is_ok());
    }

    #[test]
    fn propagate_reshapes_for_new_and_for_missing_carried_columns() {
        let mut t = table(true);
        t.carry(&["notes".to_string()]);
        let base = [("id", 23), ("name", 25), ("price", 1700), ("notes", 25)];
        assert_eq!(check(&t, &rel(&base), Lsn(1), true).unwrap(), Vec::<String>::new());
        let mut more = base.to_vec();
        more.push(("color", 25));
        let SchemaChange::Reshape { added, columns, .. } = *check(&t, &rel(&more), Lsn(1), true).unwrap_err() else {
            panic!()
        };
        assert_eq!((added, columns.len()), (vec!["color".to_string()], 5));
        // an older shape without a carried column: map again to that shape, nothing to add
        let older = check(&t, &rel(&base[..3]), Lsn(1), true).unwrap_err();
        assert!(matches!(*older, SchemaChange::Reshape { ref added, .. } if added.is_empty()), "{older:?}");
        // a column that could not be carried (gone from the source meanwhile) is only reported
        t.uncarried = vec!["color".to_string()];
        assert_eq!(check(&t, &rel(&more), Lsn(1), true).unwrap(), vec!["color".to_string()]);
    }
}

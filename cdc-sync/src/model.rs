//! The change model shared by the source, the pipeline and the sinks.
//!
//! These types are ours, not the replication crate's, so the decoder behind
//! the source's `ChangeStream` can be swapped without touching apply code.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A WAL position (PostgreSQL `pg_lsn`), as a plain 64-bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parse the `X/Y` text form PostgreSQL prints.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// One column value as it arrived from pgoutput (text format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// The value's text representation (the type's output function).
    Text(Arc<str>),
    /// An unchanged TOASTed value: pgoutput did not send it, so the target must keep its value.
    Unchanged,
}

impl Cell {
    /// The text, `None` for NULL or unchanged.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A decoded row: column name → value, in the relation's column order. Unchanged TOAST values
/// are present as [`Cell::Unchanged`] (or simply absent, which means the same).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    /// `(column name, value)` pairs.
    pub cells: Vec<(Arc<str>, Cell)>,
}

impl Row {
    /// Build from pairs (test helper and decoder output).
    pub fn from_pairs<I, K>(pairs: I) -> Row
    where
        I: IntoIterator<Item = (K, Cell)>,
        K: Into<Arc<str>>,
    {
        Row { cells: pairs.into_iter().map(|(k, v)| (k.into(), v)).collect() }
    }

    /// The value of `column`; `None` if the column was not sent (unchanged TOAST).
    pub fn get(&self, column: &str) -> Option<&Cell> {
        self.cells.iter().find(|(k, _)| k.as_ref() == column).map(|(_, v)| v).filter(|v| !matches!(v, Cell::Unchanged))
    }
}

/// What happened to a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new row.
    Insert {
        /// The full new row.
        new: Row,
    },
    /// An updated row. `old` carries the old key (replica identity DEFAULT/INDEX, only when the
    /// key changed) or the whole old row (REPLICA IDENTITY FULL).
    Update {
        /// Old key or old row, when the server sent one.
        old: Option<Row>,
        /// The new row; unchanged TOAST columns are [`Cell::Unchanged`] or absent.
        new: Row,
    },
    /// A deleted row, identified by its old key (or old row under REPLICA IDENTITY FULL).
    Delete {
        /// Old key or old row.
        old: Row,
    },
}

/// A row change on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    /// Qualified table name `schema.table`.
    pub table: Arc<str>,
    /// What happened.
    pub kind: ChangeKind,
}

/// A table's shape as announced by a pgoutput Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    /// Qualified table name `schema.table`.
    pub table: Arc<str>,
    /// Column names in order.
    pub columns: Vec<Arc<str>>,
    /// Type OID of each column, in the same order (empty when unknown).
    pub type_oids: Vec<u32>,
}

/// One message of the logical change stream, in WAL order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMessage {
    /// A transaction starts. `final_lsn` is the LSN of its commit record.
    Begin {
        /// Source transaction id.
        xid: u32,
        /// LSN of the commit record.
        final_lsn: Lsn,
        /// Commit time on the source.
        commit_ts: DateTime<Utc>,
    },
    /// The current transaction was written by a session with a replication origin set (it came
    /// from some replication applier, maybe ours).
    Origin {
        /// The origin name.
        name: String,
    },
    /// A table's shape (first sighting in the session or after a schema change).
    Relation(RelationInfo),
    /// A row change of the current transaction.
    Change(RowChange),
    /// Tables truncated in the current transaction (qualified names).
    Truncate {
        /// `schema.table` names.
        tables: Vec<Arc<str>>,
    },
    /// The current transaction committed.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// LSN just past the commit record: the position to resume after.
        end_lsn: Lsn,
        /// Commit time on the source.
        commit_ts: DateTime<Utc>,
    },
    /// A keepalive: the server has sent everything it has for this slot up to `wal_end`, and
    /// every message before it has been delivered. A consumer with nothing in flight may confirm
    /// `wal_end`, so that a slot whose tables are quiet while the rest of the database is busy
    /// does not hold the source's WAL (a transaction still open on the source is not skipped by
    /// that: it is sent at its commit, whose LSN is past `wal_end`). Optional for
    /// implementations.
    Idle {
        /// The server's position (the keepalive's WAL end).
        wal_end: Lsn,
    },
}

/// Quote an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quote a possibly qualified `schema.table` name.
pub fn quote_qualified(s: &str) -> String {
    match s.split_once('.') {
        Some((schema, table)) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
        None => quote_ident(s),
    }
}

/// Put `public.` in front of an unqualified name.
pub fn qualify(s: &str) -> String {
    if s.contains('.') {
        s.to_string()
    } else {
        format!("public.{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_roundtrip() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!(Lsn::parse("nope").is_none());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_qualified("public.a\"b"), "\"public\".\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualify("t"), "public.t");
    }
}

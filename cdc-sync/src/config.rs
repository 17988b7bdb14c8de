//! `sync.toml`: what to replicate, where, and how columns map.
//!
//! Loading is pure (no I/O besides reading environment variables named by `url_env`), collects
//! every problem at once, and names the line and column of each. See the crate README for a
//! commented example.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::model::qualify;

mod both_ways;
use both_ways::{clock_config, table_conflict, RawClock};
pub use both_ways::{ClockConfig, ConflictPolicy};
mod retry_keys;
use retry_keys::{retry_policy, RawRetry};
mod add_columns;
use add_columns::add_columns_of;
pub use add_columns::AddColumns;

/// A single configuration problem with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub col: usize,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// File name used in messages.
    pub file: String,
    /// All problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.col, p.message)?;
        }
        Ok(())
    }
}

/// Which way a table's changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Source → target only (default).
    #[default]
    Forward,
    /// Target → source only.
    Reverse,
    /// Both ways, loop-free, last writer wins.
    Both,
}

impl Direction {
    /// Does the source → target pipeline carry this table?
    pub fn forward(self) -> bool {
        matches!(self, Direction::Forward | Direction::Both)
    }
    /// Does the target → source pipeline carry this table?
    pub fn reverse(self) -> bool {
        matches!(self, Direction::Reverse | Direction::Both)
    }
}

/// What `run` does when the forward slot is lost: invalidated by the server (`wal_status =
/// 'lost'`, it retained more than `max_slot_wal_keep_size`) or dropped, while a checkpoint says
/// the target was streaming from it. The changes since the checkpoint are gone from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnSlotLost {
    /// Stop with a status naming the slot, and leave the target as it is (default).
    #[default]
    Stop,
    /// Drop the lost slot, create a new one and copy every table again (each target table is
    /// truncated before its copy).
    Resnapshot,
}

// ---------------------------------------------------------------- raw file model

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Pipeline name: default slot/publication/origin names derive from it.
    name: Spanned<String>,
    source: Spanned<RawEndpoint>,
    target: Spanned<RawEndpoint>,
    #[serde(default)]
    replication: RawReplication,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    clock: Option<Spanned<RawClock>>,
    #[serde(default, rename = "table")]
    tables: Vec<Spanned<RawTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    /// libpq key=value connection string or postgres:// URL.
    url: Option<String>,
    /// Name of an environment variable holding the connection string.
    url_env: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    publication: Option<String>,
    slot: Option<String>,
    reverse_publication: Option<String>,
    reverse_slot: Option<String>,
    batch_rows: Option<usize>,
    snapshot_workers: Option<usize>,
    snapshot_chunk_pages: Option<u32>,
    snapshot_defer_indexes: Option<bool>,
    retained_wal_warn_mb: Option<u64>,
    on_slot_lost: Option<OnSlotLost>,
    skip_origins: Option<Spanned<Vec<String>>>,
    reverse_skip_origins: Option<Spanned<Vec<String>>>,
    retry_initial_ms: Option<Spanned<i64>>,
    retry_max_ms: Option<Spanned<i64>>,
    retry_max_attempts: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    source: Spanned<String>,
    target: Spanned<String>,
    key: Spanned<Vec<String>>,
    #[serde(default)]
    direction: Direction,
    /// Conflict policy (`direction = "both"` only).
    conflict: Option<Spanned<ConflictPolicy>>,
    columns: Spanned<BTreeMap<String, Spanned<ColumnSpec>>>,
    add_columns: Option<Spanned<AddColumns>>,
}

/// How one target column gets its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSpec {
    /// Copy the named source column (a rename when the names differ). Reversible.
    Column(String),
    /// A SQL expression over source columns, e.g. `(price * 100)::bigint`. Forward only unless
    /// `reverse_column` + `reverse_expr` say how to compute the source column from target columns.
    Expr {
        /// Expression over source columns.
        sql: String,
        /// Source column written by the reverse direction.
        reverse_column: Option<String>,
        /// Expression over target columns computing `reverse_column`.
        reverse_expr: Option<String>,
    },
    /// A constant SQL expression (e.g. `'legacy'`). Not written back in reverse.
    Constant(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumnDetail {
    column: Option<String>,
    expr: Option<String>,
    constant: Option<toml::Value>,
    reverse_column: Option<String>,
    reverse_expr: Option<String>,
}

impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ColumnSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a source column name or a table { column | expr | constant }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ColumnSpec, E> {
                Ok(ColumnSpec::Column(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ColumnSpec, A::Error> {
                let d = RawColumnDetail::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let n = d.column.is_some() as u8 + d.expr.is_some() as u8 + d.constant.is_some() as u8;
                if n != 1 {
                    return Err(de::Error::custom("give exactly one of `column`, `expr`, `constant`"));
                }
                if (d.reverse_column.is_some() || d.reverse_expr.is_some()) && d.expr.is_none() {
                    return Err(de::Error::custom("`reverse_column`/`reverse_expr` only go with `expr`"));
                }
                if d.reverse_column.is_some() != d.reverse_expr.is_some() {
                    return Err(de::Error::custom("give both `reverse_column` and `reverse_expr`, or neither"));
                }
                if let Some(c) = d.column {
                    return Ok(ColumnSpec::Column(c));
                }
                if let Some(sql) = d.expr {
                    return Ok(ColumnSpec::Expr {
                        sql,
                        reverse_column: d.reverse_column,
                        reverse_expr: d.reverse_expr,
                    });
                }
                let c = match d.constant.expect("checked above") {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => return Err(de::Error::custom("`constant` must be a SQL literal string, number or boolean")),
                };
                Ok(ColumnSpec::Constant(c))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------- validated model

/// A database endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The connection string (resolved from `url` or the `url_env` variable).
    pub conn: String,
    /// Where it came from, for messages (`url` or `$VAR`).
    pub origin: String,
}

/// One mapped column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    /// Target column name.
    pub target: String,
    /// How it is computed.
    pub spec: ColumnSpec,
    /// Line in the file.
    pub line: usize,
}

/// One mapped table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Qualified source table.
    pub source: String,
    /// Qualified target table.
    pub target: String,
    /// Source key columns (each mapped by plain `column`).
    pub key: Vec<String>,
    /// Which way changes flow.
    pub direction: Direction,
    /// Target columns in file order (sorted by name).
    pub columns: Vec<ColumnMap>,
    /// Line of the `[[table]]` entry.
    pub line: usize,
    /// How conflicts are resolved (meaningful for `direction = "both"`; default last writer wins).
    pub conflict: ConflictPolicy,
    /// Source columns the mapping does not read: ignored (default) or carried.
    pub add_columns: AddColumns,
}

/// Tunables with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    /// Publication on the source (forward).
    pub publication: String,
    /// Slot on the source (forward).
    pub slot: String,
    /// Publication on the target (reverse).
    pub reverse_publication: String,
    /// Slot on the target (reverse).
    pub reverse_slot: String,
    /// Rows per apply statement batch (default 5000).
    pub batch_rows: usize,
    /// Parallel snapshot copy workers (default 2).
    pub snapshot_workers: usize,
    /// About this many heap pages per snapshot chunk, key range or ctid range (default 2048 = 16 MiB).
    pub snapshot_chunk_pages: u32,
    /// Drop a freshly copied table's indexes and build them after its copy (default true; only
    /// where safe, see cdc-sync/README.md "Big tables").
    pub snapshot_defer_indexes: bool,
    /// Warn when a slot retains more WAL than this (MiB, default 1024).
    pub retained_wal_warn_mb: u64,
    /// What to do when the forward slot is lost (default: stop).
    pub on_slot_lost: OnSlotLost,
    /// Extra replication origins whose transactions the forward stream (source → target) skips,
    /// besides this pipeline's own reverse origin. `"*"` skips every origin-tagged transaction.
    pub skip_origins: Vec<String>,
    /// Extra replication origins whose transactions the reverse stream (target → source) skips,
    /// besides this pipeline's own forward origin. `"*"` skips every origin-tagged transaction.
    pub reverse_skip_origins: Vec<String>,
    /// Backoff and escalation of every retry (`retry_initial_ms`, default 200; `retry_max_ms`,
    /// default 30000; `retry_max_attempts`, default 20): a direction resuming from its
    /// checkpoint, the pipeline prepared again, the instance lock taken.
    pub retry: crate::retry::RetryPolicy,
}

/// Which origin-tagged transactions a stream skips (loop prevention).
///
/// A transaction applied by a cdc-sync applier carries that applier's replication origin
/// (pgoutput sends an Origin message after Begin). A stream must skip its own pipeline's
/// echoes, and only those by default: changes another pipeline wrote into the same database
/// are real changes for everyone else reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipOrigins {
    /// Skip every origin-tagged transaction (`"*"`).
    pub any: bool,
    /// Skip transactions whose origin is one of these.
    pub names: BTreeSet<String>,
}

impl SkipOrigins {
    /// Skip transactions with exactly these origins (`"*"` = any).
    pub fn new<I: IntoIterator<Item = String>>(names: I) -> Self {
        let mut s = SkipOrigins::default();
        for n in names {
            if n == "*" {
                s.any = true;
            } else {
                s.names.insert(n);
            }
        }
        s
    }

    /// Is a transaction tagged with `origin` skipped?
    pub fn skips(&self, origin: &str) -> bool {
        self.any || self.names.contains(origin)
    }

    /// The set as configured (`"*"` first when present), for status output.
    pub fn to_vec(&self) -> Vec<String> {
        self.any.then(|| "*".to_string()).into_iter().chain(self.names.iter().cloned()).collect()
    }
}

/// A validated `sync.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Pipeline name.
    pub name: String,
    /// The legacy side.
    pub source: Endpoint,
    /// The service side.
    pub target: Endpoint,
    /// Slot, publication and tunables.
    pub replication: Replication,
    /// Status HTTP listen address, e.g. `127.0.0.1:9902` (optional).
    pub status_listen: Option<String>,
    /// Mapped tables.
    pub tables: Vec<TableConfig>,
    /// `[clock]`: the clock-skew watch.
    pub clock: ClockConfig,
}

impl SyncConfig {
    /// Is any table replicated target → source?
    pub fn has_reverse(&self) -> bool {
        self.tables.iter().any(|t| t.direction.reverse())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn valid_table_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (parts.len() == 1 || parts.len() == 2) && parts.iter().all(|p| valid_ident(p))
}

/// Parse and validate `text`. `env` resolves `url_env` names (pass `|k| std::env::var(k).ok()`).
pub fn parse_with_env(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<SyncConfig, ConfigError> {
    let err = |problems| ConfigError { file: file.to_string(), problems };
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            return Err(err(vec![Problem { line, col, message: e.message().to_string() }]));
        }
    };
    let mut problems = Vec::new();
    let mut push = |span: std::ops::Range<usize>, message: String| {
        let (line, col) = line_col(text, span.start);
        problems.push(Problem { line, col, message });
    };

    let name = raw.name.get_ref().clone();
    if !valid_ident(&name) {
        push(raw.name.span(), format!("name {name:?} must be a plain identifier (letters, digits, _)"));
    }
    let mut endpoint = |label: &str, ep: &Spanned<RawEndpoint>| -> Endpoint {
        let e = ep.get_ref();
        let resolved = match (&e.url, &e.url_env) {
            (Some(u), None) => Endpoint { conn: u.clone(), origin: format!("{label}.url") },
            (None, Some(var)) => match env(var) {
                Some(v) if !v.is_empty() => Endpoint { conn: v, origin: format!("${var}") },
                _ => {
                    push(ep.span(), format!("[{label}] url_env names ${var}, which is not set"));
                    Endpoint { conn: String::new(), origin: format!("${var}") }
                }
            },
            _ => {
                push(ep.span(), format!("[{label}] needs exactly one of `url` or `url_env`"));
                Endpoint { conn: String::new(), origin: String::new() }
            }
        };
        if let (false, Err(m)) = (resolved.conn.is_empty(), crate::connect::check_conninfo(&resolved.conn)) {
            push(ep.span(), format!("[{label}] {}: {m}", resolved.origin));
        }
        resolved
    };
    let source = endpoint("source", &raw.source);
    let target = endpoint("target", &raw.target);

    let r = raw.replication;
    let mut origin_lists = |what: &str, list: &Option<Spanned<Vec<String>>>| -> Vec<String> {
        let Some(list) = list else { return Vec::new() };
        for o in list.get_ref() {
            if o != "*" && (!valid_ident(o) || o.contains('$')) {
                push(
                    list.span(),
                    format!(
                        "[replication] {what}: {o:?} is not a replication origin name (letters, digits, _) or \"*\""
                    ),
                );
            }
        }
        list.get_ref().clone()
    };
    let skip_origins = origin_lists("skip_origins", &r.skip_origins);
    let reverse_skip_origins = origin_lists("reverse_skip_origins", &r.reverse_skip_origins);
    let retry = retry_policy(
        RawRetry {
            initial_ms: r.retry_initial_ms.as_ref(),
            max_ms: r.retry_max_ms.as_ref(),
            max_attempts: r.retry_max_attempts.as_ref(),
        },
        &mut push,
    );
    let replication = Replication {
        publication: r.publication.unwrap_or_else(|| format!("cdc_sync_{name}")),
        slot: r.slot.unwrap_or_else(|| format!("cdc_sync_{name}")),
        reverse_publication: r.reverse_publication.unwrap_or_else(|| format!("cdc_sync_{name}_rev")),
        reverse_slot: r.reverse_slot.unwrap_or_else(|| format!("cdc_sync_{name}_rev")),
        batch_rows: r.batch_rows.unwrap_or(5000).max(1),
        snapshot_workers: r.snapshot_workers.unwrap_or(2).clamp(1, 16),
        snapshot_chunk_pages: r.snapshot_chunk_pages.unwrap_or(2048).max(1),
        snapshot_defer_indexes: r.snapshot_defer_indexes.unwrap_or(true),
        retained_wal_warn_mb: r.retained_wal_warn_mb.unwrap_or(1024),
        on_slot_lost: r.on_slot_lost.unwrap_or_default(),
        skip_origins,
        reverse_skip_origins,
        retry,
    };
    for (what, v) in [
        ("publication", &replication.publication),
        ("slot", &replication.slot),
        ("reverse_publication", &replication.reverse_publication),
        ("reverse_slot", &replication.reverse_slot),
    ] {
        if !valid_ident(v) || (what.contains("slot") && v.chars().any(|c| c.is_ascii_uppercase())) {
            problems.push(Problem {
                line: 0,
                col: 0,
                message: format!("[replication] {what} {v:?} must be a lower-case identifier"),
            });
        }
    }
    let mut push = |span: std::ops::Range<usize>, message: String| {
        let (line, col) = line_col(text, span.start);
        problems.push(Problem { line, col, message });
    };

    if raw.tables.is_empty() {
        push(0..0, "no [[table]] entries: nothing to replicate".to_string());
    }
    let mut tables = Vec::new();
    let mut seen_sources: BTreeMap<String, bool> = BTreeMap::new();
    let mut seen_targets = BTreeSet::new();
    for st in &raw.tables {
        let t = st.get_ref();
        let (line, _) = line_col(text, st.span().start);
        for (label, n) in [("source", &t.source), ("target", &t.target)] {
            if !valid_table_name(n.get_ref()) {
                push(n.span(), format!("{label} table {:?} must be `table` or `schema.table`", n.get_ref()));
            }
        }
        let source = qualify(t.source.get_ref());
        let target = qualify(t.target.get_ref());
        // A source table may fan out into several target tables (e.g. a legacy table split in
        // two), forward only: the way back would have to merge rows of several tables.
        let reverse = t.direction.reverse();
        match seen_sources.get(&source) {
            None => {
                seen_sources.insert(source.clone(), reverse);
            }
            Some(first_reverse) if *first_reverse || reverse => push(
                t.source.span(),
                format!("source table {source} is mapped more than once; that is only allowed when every mapping of it is forward-only"),
            ),
            Some(_) => {}
        }
        if !seen_targets.insert(target.clone()) {
            push(t.target.span(), format!("target table {target} is mapped twice"));
        }
        if t.columns.get_ref().is_empty() {
            push(t.columns.span(), format!("table {source}: no columns mapped"));
        }
        let mut columns = Vec::new();
        for (tcol, spec) in t.columns.get_ref() {
            let (cline, _) = line_col(text, spec.span().start);
            if !valid_ident(tcol) {
                push(spec.span(), format!("target column {tcol:?} is not a plain identifier"));
            }
            match spec.get_ref() {
                ColumnSpec::Column(c) if !valid_ident(c) => {
                    push(spec.span(), format!("source column {c:?} is not a plain identifier"))
                }
                ColumnSpec::Expr { reverse_column: None, .. } if t.direction.reverse() => push(
                    spec.span(),
                    format!(
                        "table {source} is direction = \"{}\" but target column {tcol} is an `expr` without \
                         `reverse_column` + `reverse_expr`; expressions are forward-only unless you say how to invert them",
                        match t.direction {
                            Direction::Both => "both",
                            _ => "reverse",
                        }
                    ),
                ),
                _ => {}
            }
            columns.push(ColumnMap { target: tcol.clone(), spec: spec.get_ref().clone(), line: cline });
        }
        let key = t.key.get_ref().clone();
        if key.is_empty() {
            push(t.key.span(), format!("table {source}: key must name at least one column"));
        }
        for k in &key {
            let n = columns.iter().filter(|c| c.spec == ColumnSpec::Column(k.clone())).count();
            if n != 1 {
                push(
                    t.key.span(),
                    format!(
                        "table {source}: key column {k} must be mapped to exactly one target column with a plain \
                         `column` mapping (found {n})"
                    ),
                );
            }
        }
        if t.direction.reverse() {
            // Reverse writes source columns from target columns: no two target columns may write the same one.
            let mut written = BTreeMap::new();
            for c in &columns {
                let w = match &c.spec {
                    ColumnSpec::Column(s) => Some(s.clone()),
                    ColumnSpec::Expr { reverse_column, .. } => reverse_column.clone(),
                    ColumnSpec::Constant(_) => None,
                };
                if let Some(w) = w {
                    if let Some(prev) = written.insert(w.clone(), c.target.clone()) {
                        push(
                            t.columns.span(),
                            format!(
                                "table {source}: source column {w} would be written back by both {prev} and {}",
                                c.target
                            ),
                        );
                    }
                }
            }
        }
        let conflict =
            table_conflict(t.conflict.as_ref(), t.direction == Direction::Both, t.source.get_ref(), &mut push);
        let add_columns = add_columns_of(t.add_columns.as_ref(), t.direction == Direction::Forward, &source, &mut push);
        tables.push(TableConfig { source, target, key, direction: t.direction, columns, line, conflict, add_columns });
    }

    let status_listen = raw.status.listen;
    if let Some(l) = &status_listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            problems.push(Problem { line: 0, col: 0, message: format!("[status] listen {l:?} is not host:port") });
        }
    }

    let clock = clock_config(raw.clock.as_ref(), &mut |span, message| {
        let (line, col) = line_col(text, span.start);
        problems.push(Problem { line, col, message });
    });

    if problems.is_empty() {
        Ok(SyncConfig { name, source, target, replication, status_listen, tables, clock })
    } else {
        problems.sort_by_key(|p| (p.line, p.col));
        Err(err(problems))
    }
}

/// Parse and validate `text`, resolving `url_env` from the process environment.
pub fn parse(file: &str, text: &str) -> Result<SyncConfig, ConfigError> {
    parse_with_env(file, text, &|k| std::env::var(k).ok())
}

/// Read, parse and validate a file.
pub fn load(path: &std::path::Path) -> Result<SyncConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        problems: vec![Problem { line: 0, col: 0, message: format!("cannot read: {e}") }],
    })?;
    parse(&file, &text)
}

#[cfg(test)]
pub(crate) mod tests;

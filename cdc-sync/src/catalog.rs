//! Catalog look-ups: table columns and types, keys, replica identity.

use tokio_postgres::Client;

use crate::config::SyncConfig;
use crate::error::{pg_kind, ErrorKind};
use crate::mapping::{DirectedTable, Mapping, Way};
use crate::model::quote_ident;

/// A table's live columns.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// `(name, format_type)` in attnum order, dropped columns excluded.
    pub columns: Vec<(String, String)>,
    /// Primary key column names.
    pub primary_key: Vec<String>,
    /// `relreplident`: d(efault), f(ull), i(ndex), n(othing).
    pub replica_identity: char,
    /// Sets of columns covered by a unique index (or PK).
    pub unique_sets: Vec<Vec<String>>,
    /// Type OID of each of `columns`.
    pub type_oids: Vec<u32>,
    /// Whether each of `columns` is a generated column (`GENERATED ALWAYS AS (...) STORED`):
    /// the server computes it, refuses a value for it, and logical replication does not send it.
    pub generated: Vec<bool>,
    /// Whether each of `columns` is `NOT NULL`.
    pub not_null: Vec<bool>,
}

impl TableInfo {
    /// Is `column` a generated column of this table?
    pub fn is_generated(&self, column: &str) -> bool {
        self.columns.iter().zip(&self.generated).any(|(c, g)| *g && c.0 == column)
    }
}

/// Look up a qualified table; `None` when it does not exist.
pub async fn table_info(client: &Client, table: &str) -> Result<Option<TableInfo>, tokio_postgres::Error> {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    let Some(rel) = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r','p')",
            &[&schema, &name],
        )
        .await?
    else {
        return Ok(None);
    };
    let oid: u32 = rel.get(0);
    let ri: String = rel.get(1);
    let cols = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), atttypid, attgenerated <> '', attnotnull FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await?;
    let idx = client
        .query(
            "SELECT i.indisprimary, array_agg(a.attname::text ORDER BY k.ord) \
             FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid, i.indisprimary",
            &[&oid],
        )
        .await?;
    let mut primary_key = vec![];
    let mut unique_sets = vec![];
    for r in idx {
        let cols: Vec<String> = r.get(1);
        if r.get::<_, bool>(0) {
            primary_key = cols.clone();
        }
        unique_sets.push(cols);
    }
    Ok(Some(TableInfo {
        columns: cols.iter().map(|r| (r.get(0), r.get(1))).collect(),
        primary_key,
        replica_identity: ri.chars().next().unwrap_or('d'),
        unique_sets,
        type_oids: cols.iter().map(|r| r.get::<_, u32>(2)).collect(),
        generated: cols.iter().map(|r| r.get::<_, bool>(3)).collect(),
        not_null: cols.iter().map(|r| r.get::<_, bool>(4)).collect(),
    }))
}

/// A problem found resolving a mapping against the live catalogs.
#[derive(Debug, Clone)]
pub struct CatalogProblem {
    /// sync.toml line of the table.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Resolving a mapping against the live catalogs failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A catalog query failed.
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    /// The mapping does not fit the tables (one `sync.toml:<line>: <message>` line each).
    #[error("{}", .0.iter().map(|p| format!("sync.toml:{}: {}", p.line, p.message)).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<CatalogProblem>),
}

impl CatalogError {
    /// Retry (a catalog query failed, e.g. the server restarted) or stop (the mapping does not
    /// fit the tables).
    pub fn kind(&self) -> ErrorKind {
        match self {
            CatalogError::Sql(e) => pg_kind(e),
            CatalogError::Problems(_) => ErrorKind::Schema,
        }
    }
}

/// A mapping compiled for `way` with types resolved against the live catalogs (`all`: every
/// table, whatever its direction, as `verify` compares them).
pub async fn resolved_mapping(
    cfg: &SyncConfig,
    way: Way,
    from: &Client,
    to: &Client,
    all: bool,
) -> Result<Mapping, CatalogError> {
    let mut m = if all {
        Mapping::from_tables(cfg.tables.iter().map(|t| DirectedTable::compile(t, way)).collect())
    } else {
        Mapping::compile(cfg, way)
    };
    let problems = resolve(&mut m, from, to).await?;
    if !problems.is_empty() {
        return Err(CatalogError::Problems(problems));
    }
    Ok(Mapping::from_tables(m.tables))
}

/// [`resolved_mapping`] for one direction, where the columns carried by `add_columns =
/// "propagate"` tables follow `shapes` (read-side table → its columns as the stream last
/// announced them) instead of the catalog, for the tables it names.
pub async fn resolved_mapping_shaped(
    cfg: &SyncConfig,
    way: Way,
    from: &Client,
    to: &Client,
    shapes: &std::collections::HashMap<String, Vec<String>>,
) -> Result<Mapping, CatalogError> {
    let mut m = Mapping::compile(cfg, way);
    let mut problems = vec![];
    for t in &mut m.tables {
        let shape = shapes.get(&t.from_table);
        problems.extend(resolve_table(t, from, to, shape).await?);
    }
    if !problems.is_empty() {
        return Err(CatalogError::Problems(problems));
    }
    Ok(Mapping::from_tables(m.tables))
}

/// Resolve expression dependencies and column types of every table in `mapping` against the
/// read-side (`from`) and written-side (`to`) databases. Returns all problems found.
pub async fn resolve(
    mapping: &mut Mapping,
    from: &Client,
    to: &Client,
) -> Result<Vec<CatalogProblem>, tokio_postgres::Error> {
    let mut problems = vec![];
    for t in &mut mapping.tables {
        problems.extend(resolve_table(t, from, to, None).await?);
    }
    Ok(problems)
}

async fn resolve_table(
    t: &mut DirectedTable,
    from: &Client,
    to: &Client,
    shape: Option<&Vec<String>>,
) -> Result<Vec<CatalogProblem>, tokio_postgres::Error> {
    let mut problems = vec![];
    let line = t.line;
    let mut p = |m: String| problems.push(CatalogProblem { line, message: m });
    let Some(fi) = table_info(from, &t.from_table).await? else {
        p(format!("table {} does not exist", t.from_table));
        return Ok(problems);
    };
    let Some(ti) = table_info(to, &t.to_table).await? else {
        p(format!("table {} does not exist", t.to_table));
        return Ok(problems);
    };
    let from_cols: Vec<String> = fi.columns.iter().map(|c| c.0.clone()).collect();
    t.resolve_exprs(&from_cols);
    if t.propagate {
        // carried: the read-side columns (as the stream announced them, else the catalog's)
        // that the target already has; the others are added when the stream shows them
        let (carry, skip): (Vec<String>, Vec<String>) = shape.unwrap_or(&from_cols).iter().cloned().partition(|c| {
            from_cols.contains(c) && ti.columns.iter().any(|x| x.0 == *c) && !fi.is_generated(c) && !ti.is_generated(c)
        });
        t.carry(&carry);
        if shape.is_some() {
            // the stream showed them and they were added where possible: what is left cannot be
            t.uncarried = skip.into_iter().filter(|c| !t.inputs.contains(c)).collect();
        }
    }
    t.from_columns = from_cols.clone();
    t.input_oids = t
        .inputs
        .iter()
        .map(|c| fi.columns.iter().position(|x| x.0 == *c).map(|p| fi.type_oids[p]).unwrap_or(0))
        .collect();
    t.input_types = t
        .inputs
        .iter()
        .map(|c| match fi.columns.iter().find(|x| x.0 == *c) {
            Some(x) => x.1.clone(),
            None => {
                p(format!("column {c} does not exist in {}", t.from_table));
                "text".into()
            }
        })
        .collect();
    t.output_types = t
        .outputs
        .iter()
        .map(|o| match ti.columns.iter().find(|x| x.0 == o.column) {
            Some(x) => x.1.clone(),
            None => {
                p(format!("column {} does not exist in {}", o.column, t.to_table));
                "text".into()
            }
        })
        .collect();
    for o in &t.outputs {
        if ti.is_generated(&o.column) {
            p(format!(
                "column {} of {} is a generated column (GENERATED ALWAYS AS ... STORED): the server computes it and \
                 refuses a value; remove it from [table.columns] (map the columns it is computed from)",
                o.column, t.to_table
            ));
        }
    }
    for o in &t.outputs {
        if let crate::mapping::OutputValue::Input(i) = o.value {
            if fi.is_generated(&t.inputs[i]) {
                p(format!(
                    "column {} of {} is a generated column: logical replication does not send its values; map the \
                     columns it is computed from, and compute it on the written side (a generated column there too)",
                    t.inputs[i], t.from_table
                ));
            }
        }
    }
    let key: Vec<String> = t.inputs[..t.key_len].to_vec();
    let mut sorted_key = key.clone();
    sorted_key.sort();
    let mut pk = fi.primary_key.clone();
    pk.sort();
    if fi.replica_identity != 'f' && pk != sorted_key {
        p(format!(
            "{}: key {:?} is not its primary key ({:?}) and REPLICA IDENTITY is not FULL; updates and deletes \
             would arrive without the key. Run: ALTER TABLE {} REPLICA IDENTITY FULL",
            t.from_table, key, fi.primary_key, t.from_table
        ));
    }
    // a key that may be NULL (possible with REPLICA IDENTITY FULL and a key that is not the
    // primary key) would panic the snapshot's sampling, or be left out of the key ranges that
    // copy and verify the table, and a NULL key never matches on the target
    for c in &key {
        let nullable = fi.columns.iter().zip(&fi.not_null).any(|(col, nn)| col.0 == *c && !nn);
        if nullable {
            p(format!(
                "{}: key column {c} allows NULL: rows with a NULL key cannot be copied by key range, compared or \
                 matched on the target. Run: ALTER TABLE {} ALTER COLUMN {} SET NOT NULL (or key on columns \
                 that are NOT NULL)",
                t.from_table,
                t.from_table,
                quote_ident(c)
            ));
        }
    }
    let mut to_key: Vec<String> = t.key_outputs.iter().map(|o| t.outputs[*o].column.clone()).collect();
    to_key.sort();
    if !ti.unique_sets.iter().any(|s| {
        let mut s = s.clone();
        s.sort();
        s == to_key
    }) {
        p(format!("{}: no primary key or unique index on exactly {:?} (needed for upserts)", t.to_table, to_key));
    }
    Ok(problems)
}

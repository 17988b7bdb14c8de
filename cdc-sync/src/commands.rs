//! The one-shot commands: `check --connect` (the mapping against the live catalogs), `verify`,
//! `drop` and `status`. (`run` is the runner's.)

use tokio_postgres::Client;

use crate::catalog::{self, CatalogError};
use crate::checkpoint::{CheckpointError, CheckpointStore, PgCheckpointStore};
use crate::config::SyncConfig;
use crate::connect::connect;
use crate::mapping::{DirectedTable, Mapping, OutputValue, Way};
use crate::model::quote_qualified;
use crate::plan::Plan;
use crate::source::snapshot::source_value;
use crate::source::{self, SourceError};
use crate::verify::{verify, VerifyOptions, VerifyReport};

/// Failures of the one-shot commands.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A database could not be reached.
    #[error("connecting to {what}")]
    Connect {
        /// `source`, `target`, `source (<where the URL came from>)`, ...
        what: String,
        /// The failure.
        #[source]
        source: tokio_postgres::Error,
    },
    /// SQL failed.
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    /// The mapping does not fit the live catalogs.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Slot, publication or origin administration failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state schema could not be read or changed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

async fn connect_to(conn: &str, what: impl Into<String>) -> Result<Client, CommandError> {
    connect(conn).await.map_err(|source| CommandError::Connect { what: what.into(), source })
}

/// `check --connect`: every problem found against the live catalogs (empty = fine).
pub async fn check_connect(cfg: &SyncConfig) -> Result<Vec<String>, CommandError> {
    let src = connect_to(&cfg.source.conn, format!("source ({})", cfg.source.origin)).await?;
    let tgt = connect_to(&cfg.target.conn, format!("target ({})", cfg.target.origin)).await?;
    let mut out = vec![];
    let wal: String = src.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal != "logical" {
        out.push(format!("source: wal_level is {wal}, needs logical"));
    }
    let mut m = Mapping::from_tables(cfg.tables.iter().map(|t| DirectedTable::compile(t, Way::Forward)).collect());
    for p in catalog::resolve(&mut m, &src, &tgt).await? {
        out.push(format!("line {}: {}", p.line, p.message));
    }
    if cfg.has_reverse() {
        let wal: String = tgt.query_one("SHOW wal_level", &[]).await?.get(0);
        if wal != "logical" {
            out.push(format!("target: wal_level is {wal}, needs logical for the reverse direction"));
        }
        let mut r = Mapping::compile(cfg, Way::Reverse);
        for p in catalog::resolve(&mut r, &tgt, &src).await? {
            out.push(format!("line {} (reverse): {}", p.line, p.message));
        }
        let ts: String = tgt.query_one("SHOW track_commit_timestamp", &[]).await?.get(0);
        let ts2: String = src.query_one("SHOW track_commit_timestamp", &[]).await?.get(0);
        if ts != "on" || ts2 != "on" {
            out.push("track_commit_timestamp must be on at both sides for bidirectional tables (conflict detection and last-writer-wins)".into());
        }
    }
    // expressions: let PostgreSQL parse them
    for t in &m.tables {
        for (o, out_col) in t.outputs.iter().enumerate() {
            if matches!(out_col.value, OutputValue::Input(_)) || t.output_types.len() <= o {
                continue;
            }
            let sql = format!(
                "EXPLAIN SELECT {}::{} FROM {}",
                source_value(t, o),
                t.output_types[o],
                quote_qualified(&t.from_table)
            );
            if let Err(e) = src.batch_execute(&sql).await {
                out.push(format!(
                    "line {}: column {}: expression does not work on the source: {}",
                    t.line,
                    out_col.column,
                    db_msg(&e)
                ));
            }
        }
    }
    Ok(out)
}

/// The server's message for a problem line (the error's own text when there is none).
fn db_msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}

/// `verify`: compare all mapped tables as of one source LSN the target has applied (waiting for
/// the forward pipeline's checkpoint, see [`crate::verify`]).
pub async fn run_verify(cfg: &SyncConfig, mut opts: VerifyOptions) -> Result<VerifyReport, CommandError> {
    let src = connect_to(&cfg.source.conn, "source").await?;
    let tgt = connect_to(&cfg.target.conn, "target").await?;
    let m = catalog::resolved_mapping(cfg, Way::Forward, &src, &tgt, true).await?;
    opts.pipeline.get_or_insert_with(|| Plan::new(cfg).forward.pipeline);
    Ok(verify(&m, &src, &tgt, &opts).await?)
}

/// `drop`: remove slots, publications and origins (and with `purge`, the state schema).
pub async fn run_drop(cfg: &SyncConfig, purge: bool) -> Result<(), CommandError> {
    let src = connect_to(&cfg.source.conn, "source").await?;
    let tgt = connect_to(&cfg.target.conn, "target").await?;
    let plan = Plan::new(cfg);
    let (f, r) = (&plan.forward, &plan.reverse);
    if source::drop_slot(&src, &f.slot).await? {
        println!("dropped slot {} on source", f.slot);
    }
    source::drop_publication(&src, &f.publication).await?;
    source::drop_origin(&tgt, &f.origin).await?;
    if source::drop_slot(&tgt, &r.slot).await? {
        println!("dropped slot {} on target", r.slot);
    }
    source::drop_publication(&tgt, &r.publication).await?;
    source::drop_origin(&src, &r.origin).await?;
    for mut store in [PgCheckpointStore { client: src }, PgCheckpointStore { client: tgt }] {
        if purge {
            store.purge().await?;
        } else if store.is_prepared().await? {
            for p in [&f.pipeline, &r.pipeline] {
                store.reset(p).await?;
            }
        }
    }
    println!("dropped publications, origins and checkpoints of pipeline {}", cfg.name);
    Ok(())
}

/// `status`: slots, checkpoints and snapshot state, from the databases.
pub async fn run_status(cfg: &SyncConfig) -> Result<serde_json::Value, CommandError> {
    let src = connect_to(&cfg.source.conn, "source").await?;
    let tgt = connect_to(&cfg.target.conn, "target").await?;
    let slot = |c: Client, name: String| async move {
        let s = source::slot_info(&c, &name).await?;
        Ok::<_, CommandError>(s.map(|s| {
            serde_json::json!({"slot": name, "active": s.active, "confirmed_flush": s.confirmed_flush.map(|l| l.to_string()), "retained_wal_bytes": s.retained_bytes, "wal_status": s.wal_status, "safe_wal_bytes": s.safe_wal_bytes})
        }))
    };
    let plan = Plan::new(cfg);
    let mut out = serde_json::json!({
        "forward_slot": slot(src, plan.forward.slot.clone()).await?,
        "reverse_slot": slot(tgt, plan.reverse.slot.clone()).await?,
    });
    let mut tstore = PgCheckpointStore::connect(&plan.forward.to_conn).await?;
    if tstore.is_prepared().await? {
        let cp = tstore.load(&plan.forward.pipeline).await?;
        out["forward_checkpoint"] =
            serde_json::json!(cp.map(|c| serde_json::json!({"lsn": c.lsn.to_string(), "txns": c.txns})));
        let tables = tstore.tables(&plan.forward.pipeline).await?;
        out["snapshot"] = serde_json::json!(tables
            .iter()
            .map(|(t, s)| (t.clone(), serde_json::json!({"state": s.state.as_str(), "rows": s.rows})))
            .collect::<serde_json::Map<_, _>>());
    }
    out["columns"] = column_status(cfg).await?;
    if plan.bidirectional {
        out["conflicts"] = conflicts_status(&plan).await?;
    }
    Ok(out)
}

/// The conflicts each direction recorded on the side it writes (see [`crate::apply::conflict`]).
async fn conflicts_status(plan: &Plan) -> Result<serde_json::Value, CommandError> {
    let mut out = serde_json::Map::new();
    for d in [&plan.forward, &plan.reverse] {
        let c = connect_to(&d.to_conn, d.to_label.clone()).await?;
        let s = crate::apply::conflict::summary(&c, &d.pipeline, 10).await?;
        out.insert(d.label.to_string(), s.unwrap_or(serde_json::json!({"total": 0})));
    }
    Ok(serde_json::Value::Object(out))
}

/// `status` → `columns`: per table of each running direction (by written-side table), the read
/// side's columns nothing reads (`unmapped_source_columns`) and those `add_columns =
/// "propagate"` carries, against the live catalogs; `{"error": ...}` when the mapping no longer
/// fits them (e.g. a mapped column was dropped).
async fn column_status(cfg: &SyncConfig) -> Result<serde_json::Value, CommandError> {
    let src = connect_to(&cfg.source.conn, "source").await?;
    let tgt = connect_to(&cfg.target.conn, "target").await?;
    let mut out = serde_json::Map::new();
    let plan = Plan::new(cfg);
    for d in plan.running() {
        let (from, to) = if d.way == Way::Forward { (&src, &tgt) } else { (&tgt, &src) };
        let v = match catalog::resolved_mapping(cfg, d.way, from, to, false).await {
            Ok(m) => serde_json::Value::Object(
                m.tables
                    .iter()
                    .map(|t| {
                        let unread: Vec<&String> = t.from_columns.iter().filter(|c| !t.inputs.contains(c)).collect();
                        (
                            t.to_table.clone(),
                            serde_json::json!({"unmapped_source_columns": unread, "carried": t.carried}),
                        )
                    })
                    .collect(),
            ),
            Err(CatalogError::Problems(p)) => serde_json::json!({"error": CatalogError::Problems(p).to_string()}),
            Err(e) => return Err(e.into()),
        };
        out.insert(d.label.to_string(), v);
    }
    Ok(serde_json::Value::Object(out))
}

//! Columns carried by `add_columns = "propagate"`: add a column that appeared at the source to
//! the target table (same type, nullable) and back-fill it for the rows already there.
//!
//! Called by the runner with the target at the checkpoint right before the source transaction
//! that first showed the column. The back-fill copies the column's current source values by
//! key; the stream then replays from that checkpoint and every later change of a row carries
//! the column too, so each row ends at its last source value.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::catalog::{resolved_mapping_shaped, CatalogError};
use crate::config::SyncConfig;
use crate::connect::connect;
use crate::error::{pg_kind, ErrorKind};
use crate::mapping::{DirectedTable, Mapping};
use crate::model::{quote_ident, quote_qualified, Lsn};
use crate::plan::DirectionPlan;
use crate::status::Metrics;

/// Mapping a table again after its shape changed failed.
#[derive(Debug, thiserror::Error)]
pub enum ReshapeError {
    /// Adding or back-filling a column.
    #[error(transparent)]
    Ddl(#[from] DdlError),
    /// Resolving the mapping against the catalogs again.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Connecting, or reading the WAL position.
    #[error("mapping again after a schema change")]
    Sql(#[from] tokio_postgres::Error),
}

impl ReshapeError {
    /// Retry (a database restarting) or stop.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReshapeError::Ddl(e) => e.kind(),
            ReshapeError::Catalog(e) => e.kind(),
            ReshapeError::Sql(e) => pg_kind(e),
        }
    }
}

/// The read side's current WAL position: transactions committed after it are compared with
/// catalog types read from now on.
pub async fn wal_position(client: &Client) -> Result<Lsn, tokio_postgres::Error> {
    let r = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?;
    Ok(Lsn::parse(&r.get::<_, String>(0)).unwrap_or_default())
}

/// A propagating table's shape changed (new columns, or an older shape without a carried
/// column): add and back-fill `added` in every target the table maps to, remember `columns` as
/// the table's shape in `shapes`, and resolve the direction's mapping again. Returns the new
/// mapping and the WAL position its types were read at.
#[allow(clippy::too_many_arguments)]
pub async fn reshape(
    cfg: &SyncConfig,
    plan: &DirectionPlan,
    mapping: &Mapping,
    shapes: &mut HashMap<String, Vec<String>>,
    table: &str,
    columns: Vec<String>,
    added: &[String],
    metrics: &Metrics,
) -> Result<(Mapping, Lsn), ReshapeError> {
    for &i in mapping.indexes_of(table) {
        if added.is_empty() {
            break;
        }
        let n = add_and_backfill(&plan.from_conn, &plan.to_conn, &mapping.tables[i], added).await?;
        metrics.columns_propagated.fetch_add(n.len() as u64, Relaxed);
    }
    shapes.insert(table.to_string(), columns);
    let from = connect(&plan.from_conn).await?;
    let to = connect(&plan.to_conn).await?;
    let at = wal_position(&from).await?;
    let m = resolved_mapping_shaped(cfg, plan.way, &from, &to, shapes).await?;
    Ok((m, at))
}

/// Adding or back-filling a column failed.
#[derive(Debug, thiserror::Error)]
#[error("adding column(s) {columns} to {table}")]
pub struct DdlError {
    /// Written-side table.
    pub table: String,
    /// The columns.
    pub columns: String,
    /// The failure.
    #[source]
    pub source: tokio_postgres::Error,
}

impl DdlError {
    /// By SQLSTATE (a restart of either database is retried; a type the target lacks stops).
    pub fn kind(&self) -> ErrorKind {
        pg_kind(&self.source)
    }
}

/// Add `columns` of `t`'s read-side table to its written-side table where missing (the source
/// column's type, nullable), then copy their current values for every key. Columns no longer at
/// the source are skipped. Returns the columns added to the target.
pub async fn add_and_backfill(
    from_conn: &str,
    to_conn: &str,
    t: &DirectedTable,
    columns: &[String],
) -> Result<Vec<String>, DdlError> {
    let err = |source| DdlError { table: t.to_table.clone(), columns: columns.join(", "), source };
    let src = connect(from_conn).await.map_err(err)?;
    let dst = connect(to_conn).await.map_err(err)?;
    let mut present = Vec::new();
    let mut added = Vec::new();
    for c in columns {
        let ty: Option<String> = src
            .query_opt(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                &[&quote_qualified(&t.from_table), c],
            )
            .await
            .map_err(err)?
            .map(|r| r.get(0));
        let Some(ty) = ty else { continue };
        let exists = dst
            .query_opt(
                "SELECT 1 FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                &[&quote_qualified(&t.to_table), c],
            )
            .await
            .map_err(err)?
            .is_some();
        if !exists {
            // the type name comes from format_type on the source: a custom type must exist on
            // the target too
            dst.batch_execute(&format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {ty}",
                quote_qualified(&t.to_table),
                quote_ident(c)
            ))
            .await
            .map_err(err)?;
            tracing::info!(table = %t.to_table, column = %c, r#type = %ty, "added a column that appeared at the source (add_columns = \"propagate\")");
            added.push(c.clone());
        }
        present.push(c.clone());
    }
    if present.is_empty() {
        return Ok(added);
    }
    let src_keys: Vec<String> = t.inputs[..t.key_len].iter().map(|k| quote_ident(k)).collect();
    let dst_keys: Vec<String> = t.key_outputs.iter().map(|o| quote_ident(&t.outputs[*o].column)).collect();
    let cols: Vec<String> = present.iter().map(|c| quote_ident(c)).collect();
    let _ = dst.batch_execute("SET session_replication_role = replica").await;
    dst.batch_execute(&format!(
        "BEGIN; CREATE TEMP TABLE cdc_sync_backfill ON COMMIT DROP AS SELECT {}, {} FROM {} WITH NO DATA",
        dst_keys.join(", "),
        cols.join(", "),
        quote_qualified(&t.to_table)
    ))
    .await
    .map_err(err)?;
    let out_sql = format!(
        "COPY (SELECT {}, {} FROM {}) TO STDOUT",
        src_keys.join(", "),
        cols.join(", "),
        quote_qualified(&t.from_table)
    );
    let out = src.copy_out(out_sql.as_str()).await.map_err(err)?;
    let sink = dst.copy_in::<_, bytes::Bytes>("COPY cdc_sync_backfill FROM STDIN").await.map_err(err)?;
    futures::pin_mut!(out);
    futures::pin_mut!(sink);
    while let Some(buf) = out.next().await {
        sink.feed(buf.map_err(err)?).await.map_err(err)?;
    }
    let rows = sink.as_mut().finish().await.map_err(err)?;
    let set: Vec<String> = cols.iter().map(|c| format!("{c} = b.{c}")).collect();
    let on: Vec<String> = dst_keys.iter().map(|k| format!("t.{k} = b.{k}")).collect();
    let updated = dst
        .execute(
            &format!(
                "UPDATE {} t SET {} FROM cdc_sync_backfill b WHERE {}",
                quote_qualified(&t.to_table),
                set.join(", "),
                on.join(" AND ")
            ),
            &[],
        )
        .await
        .map_err(err)?;
    dst.batch_execute("COMMIT").await.map_err(err)?;
    tracing::info!(table = %t.to_table, columns = ?present, source_rows = rows, updated, "back-filled carried column(s) from the source");
    Ok(added)
}

//! Counters and the status HTTP port: `/health/live`, `/health/ready`, `/metrics`
//! (Prometheus text) and `/status` (JSON).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::{chain, ErrorKind, ServerError};
use crate::model::Lsn;

/// An error as `/status` shows it: what kind, which change (table, key, source commit LSN), and
/// what the server said (SQLSTATE, message, detail).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErrorReport {
    /// `connection`, `shutdown`, `conflict`, `resources`, `data`, `schema` or `other`.
    pub kind: String,
    /// Would it be retried?
    pub retryable: bool,
    /// Written-side table, when the error is tied to one.
    pub table: Option<String>,
    /// The row's key, `(v1,v2)`, when known.
    pub key: Option<String>,
    /// Commit LSN of the source transaction, when known.
    pub lsn: Option<String>,
    /// SQLSTATE, when the server sent one.
    pub sqlstate: Option<String>,
    /// The server's message (or the error's own text).
    pub message: String,
    /// The server's DETAIL line.
    pub detail: Option<String>,
    /// The whole error chain, one line.
    pub error: String,
    /// Consecutive failed attempts so far.
    pub attempts: u32,
    /// When it happened (RFC 3339).
    pub at: String,
    /// What to do about it, when cdc-sync can tell (e.g. a mapped column missing on the written
    /// side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ErrorReport {
    /// The report of an error tied to no particular change (a lost connection, a failed setup
    /// step): its kind, what the server said, and the whole chain.
    pub fn of(kind: ErrorKind, e: &(dyn std::error::Error + 'static), attempts: u32) -> ErrorReport {
        let server = ServerError::of(e);
        ErrorReport {
            kind: kind.as_str().to_string(),
            retryable: kind.is_transient(),
            sqlstate: server.sqlstate,
            message: server.message,
            detail: server.detail,
            error: chain(e),
            attempts,
            at: Utc::now().to_rfc3339(),
            ..ErrorReport::default()
        }
    }
}

/// A slot's `wal_status`, ordered from safe to gone; the number is the
/// `cdc_sync_slot_wal_status` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotWalStatus {
    /// Not known yet (no poll, or the slot is missing).
    Unknown = -1,
    /// Within `max_wal_size`.
    Reserved = 0,
    /// Beyond `max_wal_size`, kept for the slot (within `max_slot_wal_keep_size`).
    Extended = 1,
    /// Beyond `max_slot_wal_keep_size`: invalidated at the next checkpoint unless it catches up.
    Unreserved = 2,
    /// Invalidated.
    Lost = 3,
}

impl SlotWalStatus {
    /// From `pg_replication_slots.wal_status`.
    pub fn parse(s: Option<&str>) -> SlotWalStatus {
        match s {
            Some("reserved") => SlotWalStatus::Reserved,
            Some("extended") => SlotWalStatus::Extended,
            Some("unreserved") => SlotWalStatus::Unreserved,
            Some("lost") => SlotWalStatus::Lost,
            _ => SlotWalStatus::Unknown,
        }
    }

    fn from_code(c: i64) -> SlotWalStatus {
        match c {
            0 => SlotWalStatus::Reserved,
            1 => SlotWalStatus::Extended,
            2 => SlotWalStatus::Unreserved,
            3 => SlotWalStatus::Lost,
            _ => SlotWalStatus::Unknown,
        }
    }

    /// PostgreSQL's word for it (`null` in JSON when unknown).
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            SlotWalStatus::Unknown => None,
            SlotWalStatus::Reserved => Some("reserved"),
            SlotWalStatus::Extended => Some("extended"),
            SlotWalStatus::Unreserved => Some("unreserved"),
            SlotWalStatus::Lost => Some("lost"),
        }
    }
}

/// Counters of one pipeline direction. Cheap to update from the hot path.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `starting`, `snapshot`, `streaming`, `retrying: <why>`, `reconnecting: <why>`,
    /// `standby: <holder>`, `stopped: <why>`.
    pub state: Mutex<String>,
    /// The error that stopped this direction (`None` while it runs).
    pub error: Mutex<Option<ErrorReport>>,
    /// The last error that was retried.
    pub last_retry: Mutex<Option<ErrorReport>>,
    /// Errors retried (resumed from the checkpoint).
    pub retries: AtomicU64,
    /// Stopped for good (an error that needs a human, or one that kept repeating).
    pub stopped: AtomicBool,
    /// Streaming (snapshot finished, stream started).
    pub ready: AtomicBool,
    /// Waiting on standby for the single-instance lock.
    pub standby: AtomicBool,
    /// Row changes applied.
    pub rows_applied: AtomicU64,
    /// Source transactions applied.
    pub txns_applied: AtomicU64,
    /// Source transactions skipped because they carry a replication origin in the skip set.
    pub txns_skipped: AtomicU64,
    /// The origins this direction's stream skips (`*` = any).
    pub skip_origins: Mutex<Vec<String>>,
    /// Last-writer-wins conflicts (incoming change lost to a newer target row).
    pub conflicts: AtomicU64,
    /// End LSN of the last applied commit.
    pub applied_lsn: AtomicU64,
    /// Its source commit time (µs since epoch).
    pub applied_commit_us: AtomicI64,
    /// Source's current WAL position (polled).
    pub source_lsn: AtomicU64,
    /// WAL retained by the slot (bytes, polled).
    pub retained_wal_bytes: AtomicI64,
    /// The slot's `wal_status` as `SlotWalStatus as i64 + 1` (0: not polled yet); read it with
    /// [`Metrics::wal_status`].
    pub slot_wal_status: AtomicI64,
    /// The slot's `safe_wal_size` in bytes; -1 when unlimited or not known yet (polled).
    pub safe_wal_bytes: AtomicI64,
    /// Rows/s applied over the last sampling interval (×1000 for precision).
    pub rows_per_s_milli: AtomicU64,
    /// Snapshot rows copied.
    pub snapshot_rows: AtomicU64,
    /// Snapshot rows expected (planner estimate).
    pub snapshot_rows_estimate: AtomicU64,
    /// Snapshot tables done.
    pub snapshot_tables_done: AtomicU64,
    /// Snapshot tables to copy.
    pub snapshot_tables_total: AtomicU64,
    /// When the snapshot copy started (µs since epoch; 0 = not started).
    pub snapshot_started_us: AtomicI64,
    /// When it finished (µs since epoch; 0 = not finished).
    pub snapshot_finished_us: AtomicI64,
    /// Of the conflicts, those where the written side's version stayed (incoming discarded).
    pub conflicts_kept_local: AtomicU64,
    /// The last clock comparison of the two servers (`None` before the first).
    pub clock: Mutex<Option<ClockReading>>,
    /// Schema changes: source columns that appeared while streaming and that nothing carries
    /// (`schema.table.column`), each reported once.
    pub unmapped_columns: Mutex<Vec<String>>,
    /// Schema changes: columns added to target tables (`add_columns = "propagate"`).
    pub columns_propagated: AtomicU64,
    /// The last sync.toml re-read (SIGHUP) that was refused, until one is taken.
    pub reload_error: Mutex<Option<String>>,
    /// Re-reads of sync.toml refused.
    pub reload_failures: AtomicU64,
}

/// One comparison of the two servers' clocks, as `/status` and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClockReading {
    /// Target clock minus source clock, in milliseconds (corrected for the round trips).
    pub skew_ms: f64,
    /// Half the sum of the two round trips: how far off the estimate may be (ms).
    pub uncertainty_ms: f64,
    /// `[clock] max_skew_ms`.
    pub bound_ms: u64,
    /// `|skew_ms|` is larger than the bound.
    pub over_bound: bool,
    /// When it was measured (RFC 3339).
    pub at: String,
}

impl ClockReading {
    /// The warning `/status` carries while the skew is over the bound.
    pub fn warning(&self) -> Option<String> {
        self.over_bound.then(|| {
            format!(
                "clock skew between the source and target servers is {:.3} ms (±{:.3} ms), over [clock] max_skew_ms = {}: \
                 last-writer-wins compares commit times of the two clocks and may pick the wrong winner",
                self.skew_ms, self.uncertainty_ms, self.bound_ms
            )
        })
    }
}

impl Metrics {
    /// Count conflicts found in a flush, and how many kept the written side's version.
    pub fn note_conflicts(&self, found: u64, kept_local: u64) {
        self.conflicts.fetch_add(found, Relaxed);
        self.conflicts_kept_local.fetch_add(kept_local, Relaxed);
    }

    /// Record a clock comparison.
    pub fn note_clock(&self, reading: ClockReading) {
        *self.clock.lock().expect("not poisoned") = Some(reading);
    }

    /// Note an unmapped source column; `true` the first time (log it then).
    pub fn note_unmapped(&self, table: &str, column: &str) -> bool {
        let name = format!("{table}.{column}");
        let mut v = self.unmapped_columns.lock().expect("not poisoned");
        if v.contains(&name) {
            return false;
        }
        v.push(name);
        true
    }

    /// Record a committed target transaction.
    pub fn note_commit(&self, lsn: Lsn, ts: DateTime<Utc>, txns: i64, rows: i64) {
        self.applied_lsn.fetch_max(lsn.0, Relaxed);
        self.applied_commit_us.store(ts.timestamp_micros(), Relaxed);
        self.txns_applied.fetch_add(txns.max(0) as u64, Relaxed);
        self.rows_applied.fetch_add(rows.max(0) as u64, Relaxed);
    }

    /// Set the state text.
    pub fn set_state(&self, s: impl Into<String>) {
        *self.state.lock().expect("not poisoned") = s.into();
    }

    /// Record an error that is being retried.
    pub fn note_retry(&self, report: ErrorReport) {
        self.ready.store(false, Relaxed);
        self.retries.fetch_add(1, Relaxed);
        self.set_state(format!("retrying: {}", report.error));
        *self.last_retry.lock().expect("not poisoned") = Some(report);
    }

    /// The whole pipeline lost a database and is reconnecting (`why`: what it is doing about
    /// it); not ready until it streams again.
    pub fn note_reconnecting(&self, why: &str, report: ErrorReport, retry_in: std::time::Duration) {
        self.ready.store(false, Relaxed);
        self.standby.store(false, Relaxed);
        self.retries.fetch_add(1, Relaxed);
        self.set_state(format!(
            "reconnecting: {why}: {}; next attempt in {:.1} s",
            report.error,
            retry_in.as_secs_f64()
        ));
        *self.last_retry.lock().expect("not poisoned") = Some(report);
    }

    /// Forget a stop (the pipeline is being prepared again).
    pub fn clear_stop(&self) {
        self.stopped.store(false, Relaxed);
        *self.error.lock().expect("not poisoned") = None;
    }

    /// Record the error that stopped this direction.
    pub fn note_stop(&self, report: ErrorReport) {
        self.ready.store(false, Relaxed);
        self.stopped.store(true, Relaxed);
        self.set_state(format!("stopped: {}", report.error));
        *self.error.lock().expect("not poisoned") = Some(report);
    }

    /// Record a poll of the slot (`None`: not found).
    pub fn note_slot(&self, wal_status: SlotWalStatus, retained_bytes: i64, safe_wal_bytes: Option<i64>) {
        self.retained_wal_bytes.store(retained_bytes, Relaxed);
        // stored +1 so that the default 0 means "not polled yet"
        self.slot_wal_status.store(wal_status as i64 + 1, Relaxed);
        self.safe_wal_bytes.store(safe_wal_bytes.unwrap_or(-1), Relaxed);
    }

    /// The slot is known to be invalidated (the stream could not start on it).
    pub fn note_slot_lost(&self) {
        self.slot_wal_status.store(SlotWalStatus::Lost as i64 + 1, Relaxed);
        self.safe_wal_bytes.store(-1, Relaxed);
    }

    /// The slot's `wal_status` at the last poll.
    pub fn wal_status(&self) -> SlotWalStatus {
        SlotWalStatus::from_code(self.slot_wal_status.load(Relaxed) - 1)
    }

    /// Lag in bytes (source WAL position minus applied position; 0 when unknown).
    pub fn lag_bytes(&self) -> u64 {
        let (src, app) = (self.source_lsn.load(Relaxed), self.applied_lsn.load(Relaxed));
        if src == 0 || app == 0 {
            0
        } else {
            src.saturating_sub(app)
        }
    }

    /// Lag in seconds: 0 when caught up, else time since the last applied commit was made.
    pub fn lag_seconds(&self) -> f64 {
        if self.lag_bytes() == 0 || !self.ready.load(Relaxed) {
            return 0.0;
        }
        let ts = self.applied_commit_us.load(Relaxed);
        if ts == 0 {
            return 0.0;
        }
        ((Utc::now().timestamp_micros() - ts) as f64 / 1e6).max(0.0)
    }

    /// Snapshot progress: (rows/s so far, estimated seconds left). Zero before the copy starts;
    /// after it finishes the rate is the overall one and the ETA 0.
    pub fn snapshot_rate_eta(&self) -> (f64, f64) {
        let started = self.snapshot_started_us.load(Relaxed);
        if started == 0 {
            return (0.0, 0.0);
        }
        let finished = self.snapshot_finished_us.load(Relaxed);
        let end = if finished != 0 { finished } else { Utc::now().timestamp_micros() };
        let secs = ((end - started) as f64 / 1e6).max(0.001);
        let rows = self.snapshot_rows.load(Relaxed);
        let rate = rows as f64 / secs;
        let estimate = self.snapshot_rows_estimate.load(Relaxed);
        let eta = if finished == 0 && rate > 0.0 && estimate > rows { (estimate - rows) as f64 / rate } else { 0.0 };
        (rate, eta)
    }

    fn json(&self) -> serde_json::Value {
        let (snap_rate, snap_eta) = self.snapshot_rate_eta();
        json!({
            "state": *self.state.lock().expect("not poisoned"),
            "ready": self.ready.load(Relaxed),
            "stopped": self.stopped.load(Relaxed),
            "error": *self.error.lock().expect("not poisoned"),
            "retries": self.retries.load(Relaxed),
            "last_retry": *self.last_retry.lock().expect("not poisoned"),
            "rows_applied": self.rows_applied.load(Relaxed),
            "txns_applied": self.txns_applied.load(Relaxed),
            "txns_skipped_origin": self.txns_skipped.load(Relaxed),
            "skip_origins": self.skip_origins.lock().expect("not poisoned").clone(),
            "conflicts": self.conflicts.load(Relaxed),
            "conflicts_kept_local": self.conflicts_kept_local.load(Relaxed),
            "clock": *self.clock.lock().expect("not poisoned"),
            "warnings": self.clock.lock().expect("not poisoned").as_ref().and_then(ClockReading::warning).into_iter().collect::<Vec<_>>(),
            "applied_lsn": Lsn(self.applied_lsn.load(Relaxed)).to_string(),
            "source_lsn": Lsn(self.source_lsn.load(Relaxed)).to_string(),
            "lag_bytes": self.lag_bytes(),
            "lag_seconds": self.lag_seconds(),
            "rows_per_second": self.rows_per_s_milli.load(Relaxed) as f64 / 1000.0,
            "retained_wal_bytes": self.retained_wal_bytes.load(Relaxed),
            "wal_status": self.wal_status().as_str(),
            "unmapped_source_columns": self.unmapped_columns.lock().expect("not poisoned").clone(),
            "columns_propagated": self.columns_propagated.load(Relaxed),
            "config_reload_error": *self.reload_error.lock().expect("not poisoned"),
            "safe_wal_bytes": Some(self.safe_wal_bytes.load(Relaxed)).filter(|b| *b >= 0 && self.wal_status() != SlotWalStatus::Unknown),
            "snapshot": {
                "rows": self.snapshot_rows.load(Relaxed),
                "rows_estimate": self.snapshot_rows_estimate.load(Relaxed),
                "tables_done": self.snapshot_tables_done.load(Relaxed),
                "tables_total": self.snapshot_tables_total.load(Relaxed),
                "rows_per_second": (snap_rate * 10.0).round() / 10.0,
                "eta_seconds": (snap_eta * 10.0).round() / 10.0,
                "finished": self.snapshot_finished_us.load(Relaxed) != 0,
            }
        })
    }
}

/// The pipelines a status port reports on, by direction label (`forward`, `reverse`).
pub type Registry = Vec<(String, Arc<Metrics>)>;

/// The JSON status document.
pub fn status_json(reg: &Registry) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (label, metrics) in reg {
        m.insert(label.clone(), metrics.json());
    }
    let standby = reg.iter().any(|(_, m)| m.standby.load(Relaxed));
    json!({ "pipelines": m, "ready": ready(reg), "role": if standby { "standby" } else { "active" } })
}

fn ready(reg: &Registry) -> bool {
    !reg.is_empty() && reg.iter().all(|(_, m)| m.ready.load(Relaxed))
}

/// Prometheus text exposition.
pub fn prometheus(reg: &Registry) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, f: &dyn Fn(&Metrics) -> String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (label, m) in reg {
            out.push_str(&format!("{name}{{direction=\"{label}\"}} {}\n", f(m)));
        }
    };
    metric("cdc_sync_rows_applied_total", "Row changes applied", "counter", &|m| {
        m.rows_applied.load(Relaxed).to_string()
    });
    metric("cdc_sync_txns_applied_total", "Source transactions applied", "counter", &|m| {
        m.txns_applied.load(Relaxed).to_string()
    });
    metric(
        "cdc_sync_txns_skipped_origin_total",
        "Transactions skipped because their replication origin is in the skip set",
        "counter",
        &|m| m.txns_skipped.load(Relaxed).to_string(),
    );
    metric(
        "cdc_sync_conflicts_total",
        "Conflicts on bidirectional tables: both sides changed a row without seeing each other's change (recorded in cdc_sync.conflicts)",
        "counter",
        &|m| m.conflicts.load(Relaxed).to_string(),
    );
    metric(
        "cdc_sync_conflicts_kept_local_total",
        "Conflicts where the written side's version won and the incoming change was discarded",
        "counter",
        &|m| m.conflicts_kept_local.load(Relaxed).to_string(),
    );
    metric(
        "cdc_sync_clock_skew_seconds",
        "Target server clock minus source server clock, corrected for round trips (0 before the first measurement)",
        "gauge",
        &|m| format!("{:.6}", m.clock.lock().expect("not poisoned").as_ref().map_or(0.0, |c| c.skew_ms / 1000.0)),
    );
    metric("cdc_sync_clock_skew_over_bound", "1 while the clock skew is over [clock] max_skew_ms", "gauge", &|m| {
        (m.clock.lock().expect("not poisoned").as_ref().is_some_and(|c| c.over_bound) as u8).to_string()
    });
    metric("cdc_sync_lag_bytes", "Source WAL position minus applied position", "gauge", &|m| m.lag_bytes().to_string());
    metric("cdc_sync_lag_seconds", "Apply lag in seconds", "gauge", &|m| format!("{:.3}", m.lag_seconds()));
    metric("cdc_sync_rows_per_second", "Rows applied per second (recent)", "gauge", &|m| {
        format!("{:.1}", m.rows_per_s_milli.load(Relaxed) as f64 / 1000.0)
    });
    metric("cdc_sync_retained_wal_bytes", "WAL retained by the slot", "gauge", &|m| {
        m.retained_wal_bytes.load(Relaxed).to_string()
    });
    metric(
        "cdc_sync_slot_wal_status",
        "The slot's wal_status: 0 reserved, 1 extended, 2 unreserved (lost at the next checkpoint), 3 lost, -1 unknown",
        "gauge",
        &|m| (m.wal_status() as i64).to_string(),
    );
    metric(
        "cdc_sync_slot_safe_wal_bytes",
        "WAL that can still be written before the slot is in danger of being invalidated (-1: unlimited)",
        "gauge",
        &|m| {
            if m.wal_status() == SlotWalStatus::Unknown {
                "-1".into()
            } else {
                m.safe_wal_bytes.load(Relaxed).to_string()
            }
        },
    );
    metric("cdc_sync_snapshot_rows_total", "Snapshot rows copied", "counter", &|m| {
        m.snapshot_rows.load(Relaxed).to_string()
    });
    metric("cdc_sync_snapshot_rows_estimate", "Snapshot rows expected (planner estimate)", "gauge", &|m| {
        m.snapshot_rows_estimate.load(Relaxed).to_string()
    });
    metric("cdc_sync_snapshot_rows_per_second", "Snapshot copy rate so far", "gauge", &|m| {
        format!("{:.1}", m.snapshot_rate_eta().0)
    });
    metric("cdc_sync_snapshot_eta_seconds", "Estimated seconds until the snapshot copy finishes", "gauge", &|m| {
        format!("{:.1}", m.snapshot_rate_eta().1)
    });
    metric("cdc_sync_snapshot_tables_done", "Snapshot tables finished", "gauge", &|m| {
        m.snapshot_tables_done.load(Relaxed).to_string()
    });
    metric("cdc_sync_ready", "1 when streaming", "gauge", &|m| (m.ready.load(Relaxed) as u8).to_string());
    metric("cdc_sync_retries_total", "Errors retried by resuming from the checkpoint", "counter", &|m| {
        m.retries.load(Relaxed).to_string()
    });
    metric("cdc_sync_stopped", "1 when stopped on an error that needs a human", "gauge", &|m| {
        (m.stopped.load(Relaxed) as u8).to_string()
    });
    metric("cdc_sync_standby", "1 while waiting for the single-instance lock", "gauge", &|m| {
        (m.standby.load(Relaxed) as u8).to_string()
    });
    metric(
        "cdc_sync_unmapped_source_columns",
        "Source columns that appeared while streaming and are not carried to the target",
        "gauge",
        &|m| m.unmapped_columns.lock().expect("not poisoned").len().to_string(),
    );
    metric("cdc_sync_config_reload_failures_total", "Re-reads of sync.toml (SIGHUP) refused", "counter", &|m| {
        m.reload_failures.load(Relaxed).to_string()
    });
    metric(
        "cdc_sync_columns_propagated_total",
        "Columns added to target tables (add_columns = propagate)",
        "counter",
        &|m| m.columns_propagated.load(Relaxed).to_string(),
    );
    out
}

/// Serve the status endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, reg: Registry) {
    let reg = Arc::new(reg);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let reg = Arc::clone(&reg);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = match path {
                "/health/live" => (200, "text/plain", "ok\n".to_string()),
                "/health/ready" if ready(&reg) => (200, "text/plain", "ready\n".to_string()),
                "/health/ready" => (503, "text/plain", "not ready\n".to_string()),
                "/metrics" => (200, "text/plain; version=0.0.4", prometheus(&reg)),
                "/status" => (200, "application/json", status_json(&reg).to_string()),
                _ => (404, "text/plain", "not found\n".to_string()),
            };
            let reason = match code {
                200 => "OK",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_metrics_and_json() {
        let m = Arc::new(Metrics::default());
        m.note_commit(Lsn(100), Utc::now(), 2, 10);
        m.source_lsn.store(150, Relaxed);
        let reg: Registry = vec![("forward".into(), Arc::clone(&m))];
        let text = prometheus(&reg);
        assert!(text.contains("cdc_sync_rows_applied_total{direction=\"forward\"} 10"), "{text}");
        assert!(text.contains("cdc_sync_slot_wal_status{direction=\"forward\"} -1"), "{text}");
        assert_eq!(status_json(&reg)["pipelines"]["forward"]["wal_status"], serde_json::Value::Null);
        m.note_slot(SlotWalStatus::parse(Some("unreserved")), 5 << 20, Some(0));
        let text = prometheus(&reg);
        assert!(text.contains("cdc_sync_slot_wal_status{direction=\"forward\"} 2"), "{text}");
        assert!(text.contains("cdc_sync_slot_safe_wal_bytes{direction=\"forward\"} 0"), "{text}");
        let j = status_json(&reg);
        assert_eq!(
            (&j["pipelines"]["forward"]["wal_status"], &j["pipelines"]["forward"]["safe_wal_bytes"]),
            (&"unreserved".into(), &0.into())
        );
        assert!(text.contains("cdc_sync_lag_bytes{direction=\"forward\"} 50"), "{text}");
        let j = status_json(&reg);
        assert_eq!(j["pipelines"]["forward"]["txns_applied"], 2);
        assert_eq!(j["ready"], false);
    }
}

//! The access log: one line per request (JSON or the combined format), written by a dedicated
//! thread so a slow disk never slows a response. The request path builds the entry and does one
//! `try_send` into a bounded channel; a full channel drops the line and counts it
//! (`strangler_gateway_access_log_dropped_total`). A log file moved away (logrotate) is reopened
//! within a second.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::metrics::metrics;
use crate::sampler::Sampler;
use crate::table::{AccessLogFormat, AccessLogSettings};

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    pub client: Option<SocketAddr>,
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub protocol: &'static str,
    pub host: Option<String>,
    /// 0 when no response was sent.
    pub status: u16,
    pub bytes_received: usize,
    pub bytes_sent: usize,
    /// From the request head to the end of the response.
    pub duration_ms: f64,
    /// From the request head to the upstream's response head (absent when none came).
    pub upstream_header_ms: Option<f64>,
    pub route: Option<String>,
    pub stage: Option<&'static str>,
    pub side: &'static str,
    pub upstream: Option<SocketAddr>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    /// Why the request failed (the gateway's error kind), when it did.
    pub error: Option<&'static str>,
}

impl Entry {
    /// The line, without its newline.
    pub fn format(&self, format: AccessLogFormat) -> String {
        match format {
            AccessLogFormat::Json => serde_json::to_string(self).unwrap_or_default(),
            AccessLogFormat::Combined => {
                // NCSA combined, then our fields: route side status-of-upstream ids duration
                let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                let time = chrono_like_clf(&self.time);
                format!(
                    "{} - - [{time}] \"{} {} {}\" {} {} \"{}\" \"{}\" route={} side={} upstream={} request_id={} trace_id={} duration_ms={:.3}",
                    self.client.map(|c| c.ip().to_string()).unwrap_or_else(|| "-".into()),
                    self.method,
                    self.target,
                    self.protocol,
                    self.status,
                    self.bytes_sent,
                    dash(&self.referer).replace('"', "%22"),
                    dash(&self.user_agent).replace('"', "%22"),
                    self.route.as_deref().unwrap_or("-"),
                    self.side,
                    self.upstream.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                    dash(&self.request_id),
                    dash(&self.trace_id),
                    self.duration_ms,
                )
            }
        }
    }
}

/// `2026-11-30T06:40:01.123Z` -> `30/Nov/2026:06:40:01 +0000` (the combined format's time).
fn chrono_like_clf(rfc3339: &str) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (date, rest) = rfc3339.split_once('T').unwrap_or((rfc3339, ""));
    let mut d = date.split('-');
    let (y, m, day) = (d.next().unwrap_or("0"), d.next().unwrap_or("1"), d.next().unwrap_or("1"));
    let month = m.parse::<usize>().ok().and_then(|m| MONTHS.get(m.wrapping_sub(1))).unwrap_or(&"Jan");
    let time = rest.get(..8).unwrap_or("00:00:00");
    format!("{day}/{month}/{y}:{time} +0000")
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-30T06:40:01.123Z`.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The running access log: where lines go, and which requests are logged.
pub struct AccessLog {
    tx: SyncSender<String>,
    sampler: ArcSwap<Sampler>,
}

/// Lines waiting for the writer; beyond this they are dropped and counted.
const QUEUE: usize = 16 * 1024;

impl AccessLog {
    /// Starts the writer thread for `path` ("-" = stdout). The file is created if missing and
    /// appended to.
    pub fn start(path: &str) -> std::io::Result<Arc<AccessLog>> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let target = if path == "-" { None } else { Some(PathBuf::from(path)) };
        let mut out = Output::open(target.clone())?;
        std::thread::Builder::new().name("access-log".into()).spawn(move || {
            let mut last_check = Instant::now();
            loop {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(line) => {
                        out.write_line(&line);
                        // drain what is queued before flushing
                        while let Ok(line) = rx.try_recv() {
                            out.write_line(&line);
                        }
                        out.flush();
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        out.flush();
                        return;
                    }
                }
                if last_check.elapsed() >= Duration::from_secs(1) {
                    last_check = Instant::now();
                    out.reopen_if_moved();
                }
            }
        })?;
        Ok(Arc::new(AccessLog { tx, sampler: ArcSwap::from_pointee(Sampler::new(1.0)) }))
    }

    /// Whether this request is logged under `settings` (off when absent or `sample = 0`).
    #[inline]
    pub fn wants(&self, settings: Option<&AccessLogSettings>) -> bool {
        let Some(s) = settings else { return false };
        let sampler = self.sampler.load();
        if sampler.share() != s.sample {
            self.sampler.store(Arc::new(Sampler::new(s.sample)));
        }
        sampler.sampled()
    }

    /// Queues one line (never blocks).
    pub fn log(&self, entry: &Entry, format: AccessLogFormat) {
        if self.tx.try_send(entry.format(format)).is_err() {
            metrics().access_log_dropped.inc();
        }
    }
}

/// Where the writer writes: stdout, or a file it reopens when it was moved away.
struct Output {
    path: Option<PathBuf>,
    file: Box<dyn Write + Send>,
    inode: Option<u64>,
}

impl Output {
    fn open(path: Option<PathBuf>) -> std::io::Result<Output> {
        use std::os::unix::fs::MetadataExt;
        match &path {
            None => Ok(Output { path, file: Box::new(std::io::BufWriter::new(std::io::stdout())), inode: None }),
            Some(p) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                let inode = f.metadata().ok().map(|m| m.ino());
                Ok(Output { file: Box::new(std::io::BufWriter::with_capacity(64 * 1024, f)), path, inode })
            }
        }
    }

    fn write_line(&mut self, line: &str) {
        let _ = self.file.write_all(line.as_bytes());
        let _ = self.file.write_all(b"\n");
    }

    fn flush(&mut self) {
        let _ = self.file.flush();
    }

    fn reopen_if_moved(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(p) = self.path.clone() else { return };
        let now = std::fs::metadata(&p).ok().map(|m| m.ino());
        if now != self.inode {
            self.flush();
            match Output::open(Some(p.clone())) {
                Ok(o) => *self = o,
                Err(e) => tracing::warn!("cannot reopen the access log {}: {e}", p.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: "2026-11-30T06:40:01.123Z".into(),
            client: Some("10.0.0.7:5555".parse().unwrap()),
            method: "GET".into(),
            target: "/api/orders/7?x=1".into(),
            protocol: "HTTP/1.1",
            host: Some("shop.test".into()),
            status: 200,
            bytes_received: 0,
            bytes_sent: 42,
            duration_ms: 1.5,
            upstream_header_ms: Some(1.2),
            route: Some("orders".into()),
            stage: Some("canary"),
            side: "extracted",
            upstream: Some("127.0.0.1:8092".parse().unwrap()),
            request_id: Some("abc".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            user_agent: Some("curl/8 \"x\"".into()),
            referer: None,
            error: None,
        }
    }

    #[test]
    fn formats() {
        let e = entry();
        let json: serde_json::Value = serde_json::from_str(&e.format(AccessLogFormat::Json)).unwrap();
        assert_eq!(
            (json["route"].as_str(), json["side"].as_str(), json["status"].as_u64()),
            (Some("orders"), Some("extracted"), Some(200))
        );
        assert_eq!(
            e.format(AccessLogFormat::Combined),
            "10.0.0.7 - - [30/Nov/2026:06:40:01 +0000] \"GET /api/orders/7?x=1 HTTP/1.1\" 200 42 \"-\" \"curl/8 %22x%22\" \
             route=orders side=extracted upstream=127.0.0.1:8092 request_id=abc trace_id=4bf92f3577b34da6a3ce929d0e0e4736 duration_ms=1.500"
        );
    }

    #[test]
    fn rfc3339_is_well_formed() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T", "{t}");
    }
}

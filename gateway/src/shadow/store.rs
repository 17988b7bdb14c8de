//! Persistence of shadow reports under `[gateway] shadow_dir`: sample mismatches are appended to
//! `samples.jsonl` (rotated by size into `samples.1.jsonl` … keeping `shadow_files` files), and
//! every report is snapshotted to `report.json` once a second (written atomically, only when
//! changed). At start both are read back, so a report survives a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::sync::Arc;

use super::report::{Reports, Snapshot};

const SNAPSHOT: &str = "report.json";
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Sends samples to the store thread (never blocks; a backlog drops samples from the file only).
pub struct StoreHandle {
    tx: SyncSender<Value>,
}

impl StoreHandle {
    pub fn append(&self, sample: Value) {
        let _ = self.tx.try_send(sample);
    }
}

fn samples_path(dir: &Path, i: usize) -> PathBuf {
    if i == 0 {
        dir.join("samples.jsonl")
    } else {
        dir.join(format!("samples.{i}.jsonl"))
    }
}

/// Starts the store thread.
pub fn spawn(dir: PathBuf, file_bytes: u64, files: usize, reports: Arc<Reports>) -> std::io::Result<StoreHandle> {
    let (tx, rx) = sync_channel::<Value>(4096);
    std::thread::Builder::new().name("shadow-store".into()).spawn(move || {
        let mut last = String::new();
        let mut next = Instant::now() + SNAPSHOT_EVERY;
        loop {
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(v) => {
                    if let Err(e) = append(&dir, &v, file_bytes, files) {
                        tracing::warn!("cannot write shadow sample to {}: {e}", dir.display());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = write_snapshot(&dir, &reports, &mut last);
                    return;
                }
            }
            if Instant::now() >= next {
                if let Err(e) = write_snapshot(&dir, &reports, &mut last) {
                    tracing::warn!("cannot write shadow report snapshot to {}: {e}", dir.display());
                }
                next = Instant::now() + SNAPSHOT_EVERY;
            }
        }
    })?;
    Ok(StoreHandle { tx })
}

fn append(dir: &Path, v: &Value, file_bytes: u64, files: usize) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    let cur = samples_path(dir, 0);
    let size = std::fs::metadata(&cur).map(|m| m.len()).unwrap_or(0);
    if size > 0 && size + line.len() as u64 > file_bytes {
        rotate(dir, files)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&cur)?;
    f.write_all(line.as_bytes())
}

/// samples.jsonl -> samples.1.jsonl -> … ; the oldest beyond `files` is removed.
fn rotate(dir: &Path, files: usize) -> std::io::Result<()> {
    let files = files.max(1);
    let _ = std::fs::remove_file(samples_path(dir, files - 1));
    for i in (0..files - 1).rev() {
        let from = samples_path(dir, i);
        if from.exists() {
            std::fs::rename(&from, samples_path(dir, i + 1))?;
        }
    }
    Ok(())
}

fn write_snapshot(dir: &Path, reports: &Reports, last: &mut String) -> std::io::Result<()> {
    let routes: serde_json::Map<String, Value> = reports
        .all()
        .iter()
        .map(|r| (r.name.clone(), serde_json::to_value(r.snapshot()).unwrap_or(Value::Null)))
        .collect();
    let text = json!({"version": 1, "routes": routes}).to_string();
    if text == *last {
        return Ok(());
    }
    let tmp = dir.join(".report.json.tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT))?;
    *last = text;
    Ok(())
}

/// Reads `report.json` and the sample files back into `reports` (oldest samples first).
pub fn restore(dir: &Path, files: usize, reports: &Reports) -> std::io::Result<()> {
    match std::fs::read_to_string(dir.join(SNAPSHOT)) {
        Ok(text) => {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            for (name, snap) in v["routes"].as_object().into_iter().flatten() {
                match serde_json::from_value::<Snapshot>(snap.clone()) {
                    Ok(s) => reports.report(name).restore(&s),
                    Err(e) => tracing::warn!("ignoring saved shadow report of route {name}: {e}"),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for i in (0..files.max(1)).rev() {
        let Ok(text) = std::fs::read_to_string(samples_path(dir, i)) else { continue };
        for line in text.lines() {
            // a torn last line (crash mid-write) is skipped
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if let Some(route) = v["route"].as_str() {
                    reports.report(route).push_sample(v.clone());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_rotate_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..100 {
            append(dir.path(), &json!({"route": "rot", "i": i, "pad": "x".repeat(50)}), 1000, 3).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["samples.1.jsonl", "samples.2.jsonl", "samples.jsonl"]);
        for n in &names {
            assert!(std::fs::metadata(dir.path().join(n)).unwrap().len() <= 1000);
        }
        // the newest line is in the current file
        let cur = std::fs::read_to_string(dir.path().join("samples.jsonl")).unwrap();
        assert!(cur.lines().last().unwrap().contains("\"i\":99"));
    }
}

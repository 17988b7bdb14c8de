//! `run` re-reads its sync.toml on SIGHUP. Only `[[table]]` entries (a table added, a mapping
//! fixed, a table removed, a conflict policy) and `[clock]` (the skew watch restarts with the
//! rest) may change while running: the runner then stops streaming, prepares
//! the pipeline again (also when the file is unchanged: e.g. a table whose snapshot state was
//! deleted is copied again) with the new tables (a new table is added to the publication and copied
//! alone, under a fresh snapshot; the others keep their state; a removed table's state is
//! forgotten, so added back it is copied afresh) and resumes every direction from
//! its checkpoint. A file that does not load, or that changes anything else, is refused: logged
//! once per signal, and the running configuration stays as it is. A signal that arrives while
//! the pipeline is being prepared, or while a direction adds columns, is acted on once it
//! streams again (the runner waits for that).

use std::path::Path;

use crate::config::{self, ConfigError, SyncConfig};
use crate::status::Registry;

/// Why a re-read configuration is not taken.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load (every problem with its place).
    #[error("sync.toml not reloaded, the running configuration stays: {0}")]
    Invalid(#[from] ConfigError),
    /// Something besides `[[table]]` entries and `[clock]` changed.
    #[error(
        "sync.toml not reloaded, the running configuration stays: only [[table]] entries and [clock] can change \
         while running (changed: {0}); restart cdc-sync to apply it"
    )]
    NeedsRestart(String),
}

/// Can `new` replace `old` in a running process? Pure.
pub fn accept(old: &SyncConfig, new: SyncConfig) -> Result<SyncConfig, ReloadError> {
    let mut changed = Vec::new();
    if old.name != new.name {
        changed.push("name");
    }
    if old.source != new.source {
        changed.push("[source]");
    }
    if old.target != new.target {
        changed.push("[target]");
    }
    if old.replication != new.replication {
        changed.push("[replication]");
    }
    if old.status_listen != new.status_listen {
        changed.push("[status]");
    }
    if old.has_reverse() != new.has_reverse() {
        changed.push("whether any table flows in reverse");
    }
    if changed.is_empty() {
        Ok(new)
    } else {
        Err(ReloadError::NeedsRestart(changed.join(", ")))
    }
}

/// The SIGHUP handler, installed once when `run` starts (from then on SIGHUP no longer ends
/// the process, also while on standby; a signal received meanwhile is acted on once active).
pub struct Hangups {
    path: Option<std::path::PathBuf>,
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Install the handler when there is a file to re-read.
    pub fn install(path: Option<std::path::PathBuf>) -> Hangups {
        let signal = path.as_ref().and_then(|_| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot install the SIGHUP handler: sync.toml is not re-read while running"))
                .ok()
        });
        Hangups { path, signal }
    }

    /// Waits for SIGHUP and returns the re-read configuration once one is accepted (refused
    /// ones are logged, shown in `/status` as `config_reload_error` of every direction, counted,
    /// and waited past). Never returns without a handler.
    pub async fn next(&mut self, running: &SyncConfig, reg: &Registry) -> SyncConfig {
        let (Some(path), Some(hup)) = (self.path.as_deref(), self.signal.as_mut()) else {
            return std::future::pending().await;
        };
        loop {
            if hup.recv().await.is_none() {
                return std::future::pending().await;
            }
            match reread(path, running) {
                Ok(new) => {
                    for (_, m) in reg {
                        *m.reload_error.lock().expect("not poisoned") = None;
                    }
                    let added: Vec<&str> = new
                        .tables
                        .iter()
                        .filter(|t| !running.tables.iter().any(|o| o.target == t.target))
                        .map(|t| t.target.as_str())
                        .collect();
                    tracing::info!(file = %path.display(), tables = new.tables.len(), added = ?added, unchanged = (new == *running),
                        "SIGHUP: sync.toml re-read; preparing the pipeline again (new tables are copied alone) and resuming from the checkpoints");
                    return new;
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), "{e}");
                    for (_, m) in reg {
                        *m.reload_error.lock().expect("not poisoned") = Some(e.to_string());
                        m.reload_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

fn reread(path: &Path, running: &SyncConfig) -> Result<SyncConfig, ReloadError> {
    accept(running, config::load(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with_env;

    const BASE: &str = "name = 'p'\n[source]\nurl = 'a'\n[target]\nurl = 'b'\n\
                        [[table]]\nsource = 'items'\ntarget = 'items'\nkey = ['id']\n[table.columns]\nid = 'id'\n";

    fn cfg(text: &str) -> SyncConfig {
        parse_with_env("s.toml", text, &|_| None).unwrap()
    }

    #[test]
    fn tables_may_change_anything_else_needs_a_restart() {
        let old = cfg(BASE);
        let more = format!(
            "{BASE}[[table]]\nsource = 'orders'\ntarget = 'orders'\nkey = ['id']\n[table.columns]\nid = 'id'\n"
        );
        assert_eq!(accept(&old, cfg(&more)).unwrap().tables.len(), 2);
        let renamed = BASE.replace("name = 'p'", "name = 'q'").replace("url = 'b'", "url = 'c'");
        let e = accept(&old, cfg(&renamed)).unwrap_err().to_string();
        assert!(e.contains("changed: name, [target]") && e.contains("restart"), "{e}");
        let clock = BASE.replace("[[table]]", "[clock]\nmax_skew_ms = 5\n[[table]]");
        assert_eq!(accept(&old, cfg(&clock)).unwrap().clock.max_skew_ms, 5);
        let both = BASE.replace("key = ['id']", "key = ['id']\ndirection = 'both'");
        let e = accept(&old, cfg(&both)).unwrap_err().to_string();
        assert!(e.contains("reverse"), "{e}");
    }
}

//! The live configuration: the current [`RouteTable`] behind an `ArcSwap`, and the reload path
//! (debounce → parse → validate → swap). A file that fails validation is never swapped in; the
//! failure is logged once, counted and kept for the admin API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{load_str, ConfigError, ConfigIssue};
use crate::table::{version_hash, RouteTable};
use crate::telemetry::metrics;

/// The last failed reload, as shown on `GET /admin/config-errors`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadFailure {
    pub at_unix: u64,
    pub trigger: String,
    pub errors: Vec<String>,
    pub issues: Vec<ConfigIssue>,
}

/// The serving configuration and how to replace it.
pub struct ConfigStore {
    path: PathBuf,
    display: String,
    current: ArcSwap<RouteTable>,
    last_error: Mutex<Option<ReloadFailure>>,
    /// Serialises reloads (file watch, SIGHUP and admin may race).
    reload_lock: Mutex<()>,
}

fn read(path: &Path, display: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        issues: vec![ConfigIssue {
            file: display.to_string(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
            hint: Some("check the path and permissions".into()),
        }],
    })
}

impl ConfigStore {
    /// Loads the file for the first time; the caller exits with code 2 on error.
    pub fn open(path: impl Into<PathBuf>) -> Result<Arc<Self>, ConfigError> {
        let path = path.into();
        let display = path.display().to_string();
        let src = read(&path, &display)?;
        let table = load_str(&display, &src, None)?;
        metrics().set_version(&table.version);
        Ok(Arc::new(Self {
            path,
            display,
            current: ArcSwap::from_pointee(table),
            last_error: Mutex::new(None),
            reload_lock: Mutex::new(()),
        }))
    }

    /// The serving snapshot. Requests keep the `Arc` they started with.
    #[inline]
    pub fn current(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last failed reload, cleared by the next successful one.
    pub fn last_error(&self) -> Option<ReloadFailure> {
        self.last_error.lock().map(|g| g.clone()).unwrap_or(None)
    }

    /// Whether the file on disk differs from the serving version.
    pub fn file_changed(&self) -> bool {
        match std::fs::read_to_string(&self.path) {
            Ok(src) => version_hash(&src) != self.current.load().version,
            Err(_) => false,
        }
    }

    /// Re-reads, validates and swaps in the file. Returns the new version.
    pub fn reload(&self, trigger: &str) -> Result<String, ConfigError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let m = metrics();
        let result = read(&self.path, &self.display).and_then(|src| {
            let old = self.current.load();
            load_str(&self.display, &src, Some(&old))
        });
        match result {
            Ok(table) => {
                let old = self.current.load();
                if table.settings.listen != old.settings.listen || table.settings.admin_listen != old.settings.admin_listen {
                    tracing::warn!("listen addresses changed in {}; they take effect only at restart", self.display);
                }
                let version = table.version.clone();
                m.set_version(&version);
                self.current.store(Arc::new(table));
                m.reloads.with_label_values(&["ok", trigger]).inc();
                m.last_reload_failed.set(0);
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                tracing::info!(version = %version, trigger, "config reloaded");
                Ok(version)
            }
            Err(err) => {
                m.reloads.with_label_values(&["error", trigger]).inc();
                m.last_reload_failed.set(1);
                tracing::error!(trigger, "config reload rejected, keeping version {}:\n{err}", self.current.load().version);
                let failure = ReloadFailure {
                    at_unix: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    trigger: trigger.to_string(),
                    errors: err.issues.iter().map(ToString::to_string).collect(),
                    issues: err.issues.clone(),
                };
                if let Ok(mut e) = self.last_error.lock() {
                    *e = Some(failure);
                }
                Err(err)
            }
        }
    }

    /// Watches the file's directory (so editors' rename-writes and ConfigMap symlink swaps are
    /// seen) and reloads after `debounce` of quiet, when the content actually changed.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        })?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let store = Arc::clone(self);
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || {
                let _watcher = watcher; // keep it alive as long as the thread
                while rx.recv().is_ok() {
                    // debounce: wait for a quiet period
                    while rx.recv_timeout(debounce).is_ok() {}
                    if store.file_changed() {
                        let _ = store.reload("file");
                    }
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(())
    }
}

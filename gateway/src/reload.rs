//! The live configuration: the current [`RouteTable`] behind an `ArcSwap`, and the reload path
//! (debounce → parse → validate → swap). A file that fails validation is never swapped in; the
//! failure is logged once, counted and kept for the admin API.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{
    files_fingerprint, load_with_overlay, parse_endpoint, system_resolve, ConfigError, ConfigIssue, EndpointSpec,
    Resolve,
};
use crate::metrics::metrics;
use crate::rollout::state::Overlay;
use crate::table::{version_hash, RouteTable};

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
    /// The source text of the serving table, recompiled when a host name's addresses change.
    source: Mutex<String>,
    /// Endpoint host names whose last re-resolution failed (logged once per failure streak).
    unresolved: Mutex<HashSet<(String, u16)>>,
    /// Where rolling-out routes stand (see `crate::rollout`): every compile applies it.
    overlay: Mutex<Overlay>,
    /// Called after a reload swapped in a new table: (old, new, trigger).
    on_reload: Mutex<Option<ReloadHook>>,
}

/// See [`ConfigStore::on_reload`].
pub type ReloadHook = Box<dyn Fn(&RouteTable, &RouteTable, &str) + Send + Sync>;

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

/// `strangler_gateway_route_info` for the routes of `table`.
fn set_route_info(table: &RouteTable) {
    metrics().set_routes(
        table.routes.iter().map(|r| (r.name.as_str(), r.owner.as_deref().unwrap_or("-"), r.stage.as_str())),
    );
}

/// [`set_route_info`] when some route's name, owner or stage differs from `old`'s (in order);
/// an unchanged list touches no series (and builds no set of 10,000 label triples).
fn update_route_info(old: &RouteTable, new: &RouteTable) {
    let same = old.routes.len() == new.routes.len()
        && old
            .routes
            .iter()
            .zip(&new.routes)
            .all(|(a, b)| a.name == b.name && a.owner == b.owner && a.stage == b.stage);
    if !same {
        set_route_info(new);
    }
}

/// Frees replaced tables off the reload path and off the request path: a 10,000-route table
/// takes milliseconds to free, which would otherwise delay the reload's answer or, when a request
/// still holds the old table, land on a proxy thread when that request ends. The thread waits
/// (up to `RETIRE_WAIT`) for such requests to let go, then frees the table itself.
fn retire(table: Arc<RouteTable>) {
    static RETIRED: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<Arc<RouteTable>>>> = std::sync::OnceLock::new();
    const RETIRE_WAIT: Duration = Duration::from_secs(30);
    let tx = RETIRED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<RouteTable>>();
        let spawned = std::thread::Builder::new().name("config-retire".into()).spawn(move || {
            for table in rx {
                let since = std::time::Instant::now();
                // in-flight requests hold their own Arc; poll until this is the last one
                while Arc::strong_count(&table) > 1 && since.elapsed() < RETIRE_WAIT {
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(table);
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the config-retire thread ({e}); replaced tables are freed in place");
        }
        Mutex::new(tx)
    });
    // without the thread (the receiver is gone) the table comes back and is freed here
    if let Err(std::sync::mpsc::SendError(table)) = tx.lock().unwrap_or_else(|p| p.into_inner()).send(table) {
        drop(table);
    }
}

impl ConfigStore {
    /// Loads the file for the first time; the caller exits with code 2 on error.
    pub fn open(path: impl Into<PathBuf>) -> Result<Arc<Self>, ConfigError> {
        Self::open_with(path, Overlay::new())
    }

    /// [`Self::open`] with the rollout positions the routes serve at.
    pub fn open_with(path: impl Into<PathBuf>, overlay: Overlay) -> Result<Arc<Self>, ConfigError> {
        let path = path.into();
        let display = path.display().to_string();
        let src = read(&path, &display)?;
        let table = load_with_overlay(&display, &src, None, &system_resolve, &overlay)?;
        metrics().set_version(&table.version);
        set_route_info(&table);
        Ok(Arc::new(Self {
            path,
            display,
            current: ArcSwap::from_pointee(table),
            last_error: Mutex::new(None),
            reload_lock: Mutex::new(()),
            source: Mutex::new(src),
            unresolved: Mutex::new(HashSet::new()),
            overlay: Mutex::new(overlay),
            on_reload: Mutex::new(None),
        }))
    }

    /// Calls `hook` after each reload that swapped in a new table (the rollout controller records
    /// what a reload changed in its audit trail).
    pub fn on_reload(&self, hook: ReloadHook) {
        *self.on_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The rollout positions the serving table was compiled with.
    pub fn overlay(&self) -> Overlay {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Recompiles the serving source with new rollout positions and swaps it in. The source was
    /// valid a moment ago, so this fails only if something outside it changed (a secret or a
    /// certificate file); then the serving table stays and the error is returned.
    pub fn set_overlay(&self, overlay: Overlay) -> Result<(), ConfigError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let src = self.source.lock().map(|s| s.clone()).unwrap_or_default();
        let old = self.current.load_full();
        let table = load_with_overlay(&self.display, &src, Some(&old), &system_resolve, &overlay)?;
        *self.overlay.lock().unwrap_or_else(|p| p.into_inner()) = overlay;
        metrics().set_version(&table.version);
        // a rollout step changes the stage a route serves at: route_info follows it
        update_route_info(&old, &table);
        drop(old);
        retire(self.current.swap(Arc::new(table)));
        Ok(())
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
        let overlay = self.overlay();
        let result = read(&self.path, &self.display).and_then(|src| {
            let old = self.current.load();
            load_with_overlay(&self.display, &src, Some(&old), &system_resolve, &overlay).map(|t| (t, src))
        });
        match result {
            Ok((table, src)) => {
                if let Ok(mut s) = self.source.lock() {
                    *s = src;
                }
                let old = self.current.load();
                if table.settings.listen != old.settings.listen
                    || table.settings.admin_listen != old.settings.admin_listen
                {
                    tracing::warn!("listen addresses changed in {}; they take effect only at restart", self.display);
                }
                let version = table.version.clone();
                m.set_version(&version);
                update_route_info(&old, &table);
                drop(old);
                // cleared before the swap: whoever sees the new version sees no stale failure
                m.last_reload_failed.set(0);
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                let table = Arc::new(table);
                let old = self.current.swap(table.clone());
                if let Some(hook) = self.on_reload.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    hook(&old, &table, trigger);
                }
                retire(old);
                m.reloads.with_label_values(&["ok", trigger]).inc();
                tracing::info!(version = %version, trigger, "config reloaded");
                Ok(version)
            }
            Err(err) => {
                m.reloads.with_label_values(&["error", trigger]).inc();
                m.last_reload_failed.set(1);
                tracing::error!(
                    trigger,
                    "config reload rejected, keeping version {}:\n{err}",
                    self.current.load().version
                );
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

    /// Resolves the endpoint host names of the serving table again. When a name's addresses
    /// changed, the serving source is recompiled with the new addresses (endpoint state carried
    /// over) and swapped in; a name that fails to resolve keeps its last addresses, logged once
    /// until it resolves again. Blocking (DNS): run it off the request path. Returns whether a
    /// new table was swapped in.
    pub fn refresh_names(&self, resolve: Resolve<'_>) -> bool {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.current.load_full();
        let mut serving: HashMap<(String, u16), Vec<SocketAddr>> = HashMap::new();
        for u in &cur.upstreams {
            for e in &u.endpoints {
                if let Some(Ok(EndpointSpec::Host(h, p))) = e.host.as_deref().map(parse_endpoint) {
                    serving.entry((h, p)).or_default().push(e.addr);
                }
            }
        }
        if serving.is_empty() {
            return false;
        }
        let mut fresh: HashMap<(String, u16), Vec<SocketAddr>> = HashMap::new();
        let mut changed = false;
        let mut unresolved = self.unresolved.lock().unwrap_or_else(|p| p.into_inner());
        for ((host, port), mut old) in serving {
            match resolve(&host, port) {
                Ok(mut addrs) if !addrs.is_empty() => {
                    addrs.sort();
                    addrs.dedup();
                    old.sort();
                    old.dedup();
                    if unresolved.remove(&(host.clone(), port)) {
                        tracing::info!(endpoint = %format!("{host}:{port}"), "endpoint host name resolves again");
                    }
                    if addrs != old {
                        tracing::info!(endpoint = %format!("{host}:{port}"), ?old, new = ?addrs, "endpoint addresses changed");
                        changed = true;
                    }
                    fresh.insert((host, port), addrs);
                }
                res => {
                    if unresolved.insert((host.clone(), port)) {
                        let why = res.map(|_| "no addresses".to_string()).unwrap_or_else(|e| e.to_string());
                        tracing::warn!(endpoint = %format!("{host}:{port}"), "cannot resolve ({why}); keeping the last addresses {old:?}");
                    }
                }
            }
        }
        drop(unresolved);
        if !changed {
            return false;
        }
        let src = self.source.lock().map(|s| s.clone()).unwrap_or_default();
        let cached = |h: &str, p: u16| -> std::io::Result<Vec<SocketAddr>> {
            fresh.get(&(h.to_string(), p)).cloned().ok_or_else(|| std::io::Error::other("did not resolve"))
        };
        match load_with_overlay(&self.display, &src, Some(&cur), &cached, &self.overlay()) {
            Ok(table) => {
                retire(self.current.swap(Arc::new(table)));
                true
            }
            Err(err) => {
                tracing::error!("cannot apply new endpoint addresses, keeping the serving table:\n{err}");
                false
            }
        }
    }

    /// Whether a certificate or key file of the serving `[gateway.tls]` changed on disk.
    pub fn tls_files_changed(&self) -> bool {
        let table = self.current.load();
        table.settings.tls.as_ref().is_some_and(|t| files_fingerprint(&t.files) != t.fingerprint)
    }

    /// Whether an API key file or the JWKS file of the serving config changed on disk.
    pub fn auth_files_changed(&self) -> bool {
        let table = self.current.load();
        !table.auth.files.is_empty() && files_fingerprint(&table.auth.files) != table.auth.fingerprint
    }

    /// Directories to watch: the config file's, and those of the serving certificates and keys.
    fn watched_dirs(&self) -> HashSet<PathBuf> {
        let parent = |p: &Path| {
            p.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let mut dirs: HashSet<PathBuf> = HashSet::from([parent(&self.path)]);
        let table = self.current.load();
        if let Some(tls) = &table.settings.tls {
            dirs.extend(tls.files.iter().map(|f| parent(f)));
        }
        dirs.extend(table.auth.files.iter().map(|f| parent(f)));
        dirs
    }

    /// Watches the file's directory (so editors' rename-writes and ConfigMap symlink swaps are
    /// seen) and the directories of the TLS certificates and keys (a rotated Kubernetes Secret),
    /// and reloads after `debounce` of quiet, when the content actually changed.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if let Ok(ev) = ev {
                if !matches!(ev.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        })?;
        let mut watching = HashSet::new();
        for dir in self.watched_dirs() {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            watching.insert(dir);
        }
        let store = Arc::clone(self);
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // debounce: wait for a quiet period
                    while rx.recv_timeout(debounce).is_ok() {}
                    if store.file_changed() {
                        let _ = store.reload("file");
                    } else if store.tls_files_changed() {
                        let _ = store.reload("tls");
                    } else if store.auth_files_changed() {
                        let _ = store.reload("keys");
                    }
                    // a reload may name certificates in directories not watched yet
                    for dir in store.watched_dirs() {
                        if !watching.contains(&dir) && watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
                            watching.insert(dir);
                        }
                    }
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_resolution_follows_address_changes_and_keeps_the_last_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.toml");
        let src = "[defaults]\nupstream = \"legacy\"\n[upstreams.legacy]\nendpoints = [\"localhost:8081\"]\n";
        std::fs::write(&path, src).unwrap();
        let store = ConfigStore::open(&path).unwrap();
        let version = store.current().version.clone();
        let moved =
            |_: &str, p: u16| -> std::io::Result<Vec<SocketAddr>> { Ok(vec![SocketAddr::from(([10, 1, 2, 3], p))]) };
        assert!(store.refresh_names(&moved));
        let t = store.current();
        assert_eq!(t.upstreams[0].endpoints[0].addr, SocketAddr::from(([10, 1, 2, 3], 8081)));
        assert_eq!(t.version, version, "same file, same version");
        // unchanged: nothing swapped
        assert!(!store.refresh_names(&moved));
        // failing: the last addresses stay
        let down = |_: &str, _: u16| -> std::io::Result<Vec<SocketAddr>> { Err(std::io::Error::other("SERVFAIL")) };
        assert!(!store.refresh_names(&down));
        assert!(!store.refresh_names(&down));
        assert_eq!(store.current().upstreams[0].endpoints[0].addr, SocketAddr::from(([10, 1, 2, 3], 8081)));
    }
}

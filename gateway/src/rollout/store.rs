//! Where rollout state and the audit trail live, behind [`RolloutStore`]: a file beside
//! routes.toml for one gateway ([`FileStore`]), memory for tests ([`MemoryStore`]), PostgreSQL
//! for several replicas ([`super::pg_store::PgStore`]).
//!
//! Contract: `save` replaces the whole state atomically (a crash leaves the old or the new
//! state, never a mix); `commit` does that and appends its events as one step (both or
//! neither); `append` adds to the history and never rewrites it; `history` returns events
//! oldest first. A store error never stops traffic: the controller logs it and, with a store of
//! its own, keeps the state it has in memory; with a shared store it keeps what the store holds.
//!
//! A shared store also says who leads: only the leader evaluates and writes state; the others
//! follow what the store holds (see [`RolloutStore::leadership`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::replicas::RouteMeasures;
use super::state::{HistoryEvent, States};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a rollout state file: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The shared store cannot be reached (or answered with an error).
    #[error("rollout store: {0}")]
    Shared(String),
    /// This replica no longer leads: another replica took over, the write was refused.
    #[error("this replica no longer leads the rollouts (another replica took over); nothing was written")]
    Deposed,
}

/// Whether this replica decides (evaluates the gates and writes state) or follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    Leader,
    /// Another replica leads (its id and admin address, when known).
    Follower {
        leader: Option<String>,
    },
}

/// How `[gateway] rollout_store` says to keep rollout state.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum StoreSettings {
    /// A file beside routes.toml (or in `rollout_state_dir`): one gateway.
    #[default]
    File,
    /// PostgreSQL, shared by several replicas; the connection string was read from `env`.
    Postgres { url: String, env: String },
}

/// Never shows the connection string (it may hold a password).
impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSettings::File => f.write_str("File"),
            StoreSettings::Postgres { env, .. } => write!(f, "Postgres {{ url: <from ${env}> }}"),
        }
    }
}

/// Rollout state and history storage.
pub trait RolloutStore: Send + Sync {
    /// Every rollout's state (empty when nothing was saved yet).
    fn load(&self) -> Result<States, StoreError>;
    /// Replaces the saved state, atomically.
    fn save(&self, states: &States) -> Result<(), StoreError>;
    /// Appends one event to the audit trail.
    fn append(&self, event: &HistoryEvent) -> Result<(), StoreError>;
    /// The newest `limit` events (of `route` when given), oldest first.
    fn history(&self, route: Option<&str>, limit: usize) -> Result<Vec<HistoryEvent>, StoreError>;

    /// Saves `states` and appends `events` as one step: both or neither. A shared store refuses
    /// ([`StoreError::Deposed`]) when this replica no longer leads, so a deposed leader can never
    /// overwrite its successor's state.
    fn commit(&self, states: &States, events: &[HistoryEvent]) -> Result<(), StoreError> {
        self.save(states)?;
        events.iter().try_for_each(|e| self.append(e))
    }

    /// Whether several replicas share this store (then a failed write is not kept in memory:
    /// the replicas must agree on what the store holds).
    fn shared(&self) -> bool {
        false
    }

    /// Whether this replica leads now. Cheap (no I/O): a shared store keeps it current on its
    /// own. A store of one gateway always leads.
    fn leadership(&self) -> Leadership {
        Leadership::Leader
    }

    /// A number that changes whenever another replica may have changed the state (a
    /// notification arrived); followers load the state again when it does. Cheap (no I/O).
    fn revision(&self) -> u64 {
        0
    }

    /// This replica's id (in history events and counters).
    fn replica(&self) -> &str {
        "local"
    }

    /// Publishes this replica's per-route counters for the leader's gates. Cheap: a shared
    /// store sends them on its own schedule.
    fn publish(&self, _measures: RouteMeasures) {}

    /// Every other live replica's latest counters (replica id → route → counters); empty for a
    /// store of one gateway. Cheap: a shared store refreshes them on its own.
    fn measures(&self) -> BTreeMap<String, RouteMeasures> {
        BTreeMap::new()
    }
}

/// State in `<dir>/rollouts.json`, history in `<dir>/history.jsonl`.
pub struct FileStore {
    state: PathBuf,
    history: PathBuf,
    /// Serialises appends from the controller and the admin thread.
    lock: Mutex<()>,
}

impl FileStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        Ok(FileStore { state: dir.join("rollouts.json"), history: dir.join("history.jsonl"), lock: Mutex::new(()) })
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.display().to_string(), source }
}

impl RolloutStore for FileStore {
    fn load(&self) -> Result<States, StoreError> {
        match std::fs::read_to_string(&self.state) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|source| StoreError::Corrupt { path: self.state.display().to_string(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(States::new()),
            Err(e) => Err(io(&self.state, e)),
        }
    }

    fn save(&self, states: &States) -> Result<(), StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let tmp = self.state.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(states).expect("states serialize");
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &self.state).map_err(|e| io(&self.state, e))
    }

    fn append(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut line = serde_json::to_string(event).expect("events serialize");
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.history)
            .map_err(|e| io(&self.history, e))?;
        f.write_all(line.as_bytes()).map_err(|e| io(&self.history, e))
    }

    fn history(&self, route: Option<&str>, limit: usize) -> Result<Vec<HistoryEvent>, StoreError> {
        let text = match std::fs::read_to_string(&self.history) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.history, e)),
        };
        // a torn last line (crash mid-append) is skipped
        let all: Vec<HistoryEvent> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<HistoryEvent>(l).ok())
            .filter(|e| route.is_none_or(|r| e.route == r))
            .collect();
        Ok(all[all.len().saturating_sub(limit)..].to_vec())
    }
}

/// Everything in memory (tests, and gateways run without a place to keep state).
#[derive(Default)]
pub struct MemoryStore {
    states: Mutex<States>,
    events: Mutex<Vec<HistoryEvent>>,
}

impl RolloutStore for MemoryStore {
    fn load(&self) -> Result<States, StoreError> {
        Ok(self.states.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
    fn save(&self, states: &States) -> Result<(), StoreError> {
        *self.states.lock().unwrap_or_else(|p| p.into_inner()) = states.clone();
        Ok(())
    }
    fn append(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event.clone());
        Ok(())
    }
    fn history(&self, route: Option<&str>, limit: usize) -> Result<Vec<HistoryEvent>, StoreError> {
        let all: Vec<HistoryEvent> = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| route.is_none_or(|r| e.route == r))
            .cloned()
            .collect();
        Ok(all[all.len().saturating_sub(limit)..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::plan::Placement;
    use crate::rollout::state::RolloutState;

    fn event(route: &str, kind: &str) -> HistoryEvent {
        HistoryEvent {
            at_unix_ms: 1,
            route: route.into(),
            kind: kind.into(),
            from: "legacy".into(),
            to: "shadow".into(),
            who: "controller".into(),
            why: "test".into(),
            gates: vec![],
        }
    }

    #[test]
    fn file_store_round_trips_and_keeps_history_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for store in
            [Box::new(FileStore::open(dir.path()).unwrap()) as Box<dyn RolloutStore>, Box::new(MemoryStore::default())]
        {
            assert!(store.load().unwrap().is_empty());
            let mut states = States::new();
            states.insert(
                "orders".into(),
                RolloutState {
                    position: 2,
                    since_unix_ms: 5,
                    paused: true,
                    paused_reason: Some("rollback".into()),
                    failures: 0,
                    last_check: None,
                    steps: "x".into(),
                    placement: Placement::LEGACY.into(),
                },
            );
            store.save(&states).unwrap();
            assert_eq!(store.load().unwrap(), states);
            for (r, k) in [("orders", "start"), ("products", "start"), ("orders", "promote")] {
                store.append(&event(r, k)).unwrap();
            }
            let h = store.history(Some("orders"), 10).unwrap();
            assert_eq!(h.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["start", "promote"]);
            assert_eq!(store.history(None, 2).unwrap().len(), 2);
        }
        // a corrupt state file is an error that names the file, not an empty state
        std::fs::write(dir.path().join("rollouts.json"), "{not json").unwrap();
        let e = FileStore::open(dir.path()).unwrap().load().unwrap_err().to_string();
        assert!(e.contains("rollouts.json") && e.contains("not a rollout state file"), "{e}");
    }
}

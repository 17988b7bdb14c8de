//! The rollout store shared by several gateway replicas: PostgreSQL.
//!
//! - **Who leads.** Each replica keeps one session; the replica whose session holds
//!   `pg_try_advisory_lock(LOCK_KEY)` leads. When that session ends (the process died, the
//!   connection broke), PostgreSQL releases the lock and another replica takes it at its next
//!   attempt (every [`EVERY`]). Taking the lead bumps the state row's `epoch`.
//! - **Fenced writes.** The leader writes state and history in one transaction whose `UPDATE`
//!   requires the epoch it took the lead with: once another replica has taken over, a deposed
//!   leader's write changes nothing ([`StoreError::Deposed`]). Rows are locked by the `UPDATE`,
//!   so a takeover and a write are ordered, never interleaved.
//! - **Followers are told.** The writing transaction sends `NOTIFY strangler_rollouts`; every
//!   replica `LISTEN`s on its session and bumps [`RolloutStore::revision`], and its controller
//!   loads and applies the state at its next tick (200 ms).
//! - **Counters of every replica.** Each replica upserts its per-route counters into
//!   `strangler_rollout_measures` every [`EVERY`]; the leader reads the others' (those refreshed
//!   in the last [`STALE`]) so its gates judge all the traffic.
//!
//! The [`RolloutStore`] trait is synchronous and the controller runs on the background thread's
//! runtime, so this store runs its own: a thread with a single-threaded tokio runtime that owns
//! the session; the trait's methods send it work and wait (at most [`CALL_TIMEOUT`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use strangler_pg_connect::{describe_endpoint, ConnectError, MakePgTls};
use tokio_postgres::AsyncMessage;

use super::replicas::{self, RouteMeasures};
use super::state::{HistoryEvent, States};
use super::store::{Leadership, RolloutStore, StoreError};

/// The advisory lock the leader holds ("strangler rollouts", as a number).
pub const LOCK_KEY: i64 = 0x5354_524e_524f_4c4c;
/// How often a replica tries to lead, publishes its counters and (leading) reads the others'.
pub const EVERY: Duration = Duration::from_millis(250);
/// Counters not refreshed for this long are a gone replica's: ignored.
pub const STALE: Duration = Duration::from_secs(30);
/// The longest a trait call waits for the database.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The channel the leader notifies on.
const CHANNEL: &str = "strangler_rollouts";

/// `strangler_rollout_leader` (1 while this replica leads) and
/// `strangler_rollout_store_errors_total`, in the gateway's registry (served on /metrics).
struct StoreMetrics {
    leader: prometheus::IntGauge,
    errors: prometheus::IntCounter,
}

fn store_metrics() -> &'static StoreMetrics {
    static M: std::sync::OnceLock<StoreMetrics> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let leader = prometheus::IntGauge::new(
            "strangler_rollout_leader",
            "1 while this replica leads the rollouts of the shared (PostgreSQL) store",
        )
        .expect("valid metric");
        let errors = prometheus::IntCounter::new(
            "strangler_rollout_store_errors_total",
            "Failed rounds with the shared rollout store (connect, lead, publish, read)",
        )
        .expect("valid metric");
        let registry = &crate::metrics::metrics().registry;
        let _ = registry.register(Box::new(leader.clone()));
        let _ = registry.register(Box::new(errors.clone()));
        StoreMetrics { leader, errors }
    })
}

/// Tables created when missing, under a transaction-level advisory lock so replicas starting
/// together do not race on `CREATE TABLE IF NOT EXISTS`.
const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(6083146427001100372);
CREATE TABLE IF NOT EXISTS strangler_rollout_state (
    id int PRIMARY KEY CHECK (id = 1),
    states jsonb NOT NULL,
    revision bigint NOT NULL,
    epoch bigint NOT NULL,
    leader text NOT NULL,
    leader_admin text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO strangler_rollout_state (id, states, revision, epoch, leader, leader_admin)
    VALUES (1, '{}', 0, 0, '', '') ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS strangler_rollout_history (
    seq bigserial PRIMARY KEY,
    at_unix_ms bigint NOT NULL,
    route text NOT NULL,
    replica text NOT NULL,
    event jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS strangler_rollout_history_route ON strangler_rollout_history (route, seq);
CREATE TABLE IF NOT EXISTS strangler_rollout_measures (
    replica text PRIMARY KEY,
    at timestamptz NOT NULL,
    measures jsonb NOT NULL
);
COMMIT;
";

/// Rollout state, history and counters in PostgreSQL, shared by every replica using the same
/// database.
pub struct PgStore {
    handle: tokio::runtime::Handle,
    shared: Arc<Shared>,
}

struct Shared {
    config: tokio_postgres::Config,
    /// The TLS the connection string's `sslmode` / `sslrootcert` ask for (files read at each
    /// connection attempt).
    tls: MakePgTls,
    /// Host, port, database and user, for errors (never the password).
    endpoint: String,
    replica: String,
    admin: String,
    session: tokio::sync::Mutex<Option<Session>>,
    leading: AtomicBool,
    /// The epoch this replica took the lead with.
    epoch: AtomicI64,
    /// Who leads, as the followers last read it.
    leader: Mutex<Option<String>>,
    notified: AtomicU64,
    /// This replica's latest counters, waiting to be published.
    local: Mutex<Option<RouteMeasures>>,
    /// The other replicas' counters (read while leading).
    others: Mutex<BTreeMap<String, RouteMeasures>>,
}

struct Session {
    client: tokio_postgres::Client,
    closed: Arc<AtomicBool>,
}

fn db(e: tokio_postgres::Error) -> StoreError {
    // the source chain names the SQLSTATE and the server's message
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    StoreError::Shared(msg)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a connection string without connecting (for `check` and startup), its `sslmode` and
/// other TLS parameters included (`strangler-pg-connect`). The error never repeats the string
/// (it may hold a password).
pub fn parse_url(url: &str) -> Result<(tokio_postgres::Config, MakePgTls), String> {
    strangler_pg_connect::prepare(url).map_err(|e| format!("not a PostgreSQL connection string ({e})"))
}

/// Where the store's connection string comes from, and what to do after fixing it, for errors.
const ORIGIN: &str = "the variable named by rollout_store_url_env";
const FIX: &str = "then restart the gateway";

/// This replica's id: the host name (a pod's name in Kubernetes), the process id and when the
/// process started. The start time makes a restarted process a new replica even where it gets
/// the same host name and pid (a container's gateway is pid 1): its counters start from zero,
/// and a window that began with the old process's counters must not subtract them from the new
/// one's (that hid the new process's failures, or invented some).
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{host}-{}-{started:x}", std::process::id())
}

impl PgStore {
    /// Starts the store's thread; connects in the background (a database that is down at
    /// startup only delays leading and following, it never stops traffic). `admin` is this
    /// replica's admin address, shown to operators who act on a follower.
    pub fn open(url: &str, replica: String, admin: String) -> Result<PgStore, StoreError> {
        let (mut config, tls) = parse_url(url).map_err(StoreError::Shared)?;
        store_metrics().leader.set(0);
        config.application_name("strangler-gateway rollouts");
        config.connect_timeout(Duration::from_secs(3));
        // a session that silently vanished must end, so the lock moves on (this side; the
        // server's side of the session is set up in `session`)
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
        let shared = Arc::new(Shared {
            config,
            tls,
            endpoint: describe_endpoint(url),
            replica,
            admin,
            session: tokio::sync::Mutex::new(None),
            leading: AtomicBool::new(false),
            epoch: AtomicI64::new(0),
            leader: Mutex::new(None),
            notified: AtomicU64::new(0),
            local: Mutex::new(None),
            others: Mutex::new(BTreeMap::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("rollout-store".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(maintain(s));
            })
            .map_err(|e| StoreError::Shared(format!("cannot start the store's thread: {e}")))?;
        let handle =
            rx.recv().map_err(|_| StoreError::Shared("the store's thread died".into()))?.map_err(StoreError::Shared)?;
        Ok(PgStore { handle, shared })
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn call<T, F>(&self, f: impl FnOnce(Arc<Shared>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.shared.clone());
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(CALL_TIMEOUT)
            .map_err(|_| StoreError::Shared(format!("no answer from PostgreSQL within {CALL_TIMEOUT:?}")))?
    }
}

/// The session, connected (and listening, and the tables there) if it was not.
async fn session(shared: &Arc<Shared>) -> Result<tokio::sync::MutexGuard<'_, Option<Session>>, StoreError> {
    let mut g = shared.session.lock().await;
    if g.as_ref().is_some_and(|s| !s.closed.load(Ordering::SeqCst) && !s.client.is_closed()) {
        return Ok(g);
    }
    *g = None;
    shared.leading.store(false, Ordering::SeqCst);
    let (client, mut conn) = shared.config.connect(shared.tls.clone()).await.map_err(|e| {
        // names host, port, database and user and, when waiting will not help (TLS refused or
        // required, a certificate refused, a refused login), what to change
        StoreError::Shared(ConnectError::at(shared.endpoint.clone(), ORIGIN, FIX, e).chain())
    })?;
    let closed = Arc::new(AtomicBool::new(false));
    let (c, sh) = (closed.clone(), shared.clone());
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(_)) => {
                    sh.notified.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("rollout store: the session ended: {e}");
                    break;
                }
            }
        }
        c.store(true, Ordering::SeqCst);
        store_metrics().leader.set(0);
        *lock(&sh.leader) = None;
        if sh.leading.swap(false, Ordering::SeqCst) {
            tracing::warn!("rollout store: this replica no longer leads the rollouts (its session ended)");
        }
        // what was missed meanwhile is read again
        sh.notified.fetch_add(1, Ordering::SeqCst);
    });
    // The advisory lock is the server's: it is freed only when the server ends this session. A
    // leader whose host died (or was cut off) sends no FIN, and with the operating system's
    // keepalive defaults (2 h idle) the server would hold the lock, and no replica could lead,
    // for hours. Probe after 5 s of silence, every 2 s, give up after 3 (ignored on a Unix
    // socket, where a dead peer cannot happen).
    client
        .batch_execute("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3")
        .await
        .map_err(db)?;
    client.batch_execute(SCHEMA).await.map_err(db)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(db)?;
    shared.notified.fetch_add(1, Ordering::SeqCst);
    tracing::info!(replica = %shared.replica, "rollout store: connected to PostgreSQL");
    *g = Some(Session { client, closed });
    Ok(g)
}

/// The store's own loop: lead when the lock is free, publish this replica's counters, read the
/// others' while leading.
async fn maintain(shared: Arc<Shared>) {
    let mut last_error = String::new();
    loop {
        match round(&shared).await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                store_metrics().errors.inc();
                let e = e.to_string();
                if e != last_error {
                    tracing::error!("rollout store: {e} (retrying every {EVERY:?})");
                    last_error = e;
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn round(shared: &Arc<Shared>) -> Result<(), StoreError> {
    let mut g = session(shared).await?;
    let client = &g.as_mut().expect("connected").client;
    if !shared.leading.load(Ordering::SeqCst) {
        let row = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY]).await.map_err(db)?;
        if row.get::<_, bool>(0) {
            let row = client
                .query_one(
                    "UPDATE strangler_rollout_state SET epoch = epoch + 1, leader = $1, leader_admin = $2 \
                     WHERE id = 1 RETURNING epoch",
                    &[&shared.replica, &shared.admin],
                )
                .await
                .map_err(db)?;
            let epoch: i64 = row.get(0);
            shared.epoch.store(epoch, Ordering::SeqCst);
            read_others(shared, client).await?;
            *lock(&shared.leader) = Some(format!("{} (admin {})", shared.replica, shared.admin));
            // before `leading`: whoever sees this replica lead in its status also sees the metric say so
            store_metrics().leader.set(1);
            shared.leading.store(true, Ordering::SeqCst);
            tracing::info!(replica = %shared.replica, epoch, "rollout store: this replica now leads the rollouts");
        } else {
            let row = client
                .query_one("SELECT leader, leader_admin FROM strangler_rollout_state WHERE id = 1", &[])
                .await
                .map_err(db)?;
            let (leader, admin): (String, String) = (row.get(0), row.get(1));
            *lock(&shared.leader) = (!leader.is_empty()).then(|| format!("{leader} (admin {admin})"));
        }
    }
    let mine = lock(&shared.local).take();
    if let Some(m) = mine {
        client
            .execute(
                "INSERT INTO strangler_rollout_measures (replica, at, measures) VALUES ($1, now(), $2) \
                 ON CONFLICT (replica) DO UPDATE SET at = now(), measures = excluded.measures",
                &[&shared.replica, &replicas::to_json(&m)],
            )
            .await
            .map_err(db)?;
    }
    let leading = shared.leading.load(Ordering::SeqCst);
    store_metrics().leader.set(i64::from(leading));
    if leading {
        read_others(shared, client).await?;
    }
    Ok(())
}

async fn read_others(shared: &Shared, client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let stale = format!("{} seconds", STALE.as_secs());
    let rows = client
        .query(
            "SELECT replica, measures FROM strangler_rollout_measures \
             WHERE replica <> $1 AND at > now() - $2::text::interval",
            &[&shared.replica, &stale],
        )
        .await
        .map_err(db)?;
    let others = rows
        .into_iter()
        .filter_map(|r| Some((r.get::<_, String>(0), replicas::from_json(r.get::<_, Value>(1))?)))
        .collect();
    *lock(&shared.others) = others;
    // rows of replicas gone for long are dropped
    client
        .execute("DELETE FROM strangler_rollout_measures WHERE at < now() - interval '1 hour'", &[])
        .await
        .map_err(db)?;
    Ok(())
}

fn states_json(states: &States) -> Value {
    serde_json::to_value(states).expect("states serialize")
}

impl RolloutStore for PgStore {
    fn load(&self) -> Result<States, StoreError> {
        self.call(|shared| async move {
            let g = session(&shared).await?;
            let client = &g.as_ref().expect("connected").client;
            let row =
                client.query_one("SELECT states FROM strangler_rollout_state WHERE id = 1", &[]).await.map_err(db)?;
            serde_json::from_value(row.get::<_, Value>(0))
                .map_err(|e| StoreError::Shared(format!("strangler_rollout_state holds no rollout state: {e}")))
        })
    }

    fn save(&self, states: &States) -> Result<(), StoreError> {
        self.commit(states, &[])
    }

    fn commit(&self, states: &States, events: &[HistoryEvent]) -> Result<(), StoreError> {
        if !self.shared.leading.load(Ordering::SeqCst) {
            return Err(StoreError::Deposed);
        }
        let json = states_json(states);
        let events: Vec<(i64, String, Value)> = events
            .iter()
            .map(|e| (e.at_unix_ms as i64, e.route.clone(), serde_json::to_value(e).expect("events serialize")))
            .collect();
        self.call(move |shared| async move {
            let epoch = shared.epoch.load(Ordering::SeqCst);
            let mut g = session(&shared).await?;
            let client = &mut g.as_mut().expect("connected").client;
            let tx = client.transaction().await.map_err(db)?;
            // fenced: only the epoch this replica took the lead with may write
            let row = tx
                .query_opt(
                    "UPDATE strangler_rollout_state SET states = $2, revision = revision + 1, at = now() \
                     WHERE id = 1 AND epoch = $1 RETURNING revision",
                    &[&epoch, &json],
                )
                .await
                .map_err(db)?;
            let Some(row) = row else {
                shared.leading.store(false, Ordering::SeqCst);
                return Err(StoreError::Deposed);
            };
            for (at, route, event) in &events {
                tx.execute(
                    "INSERT INTO strangler_rollout_history (at_unix_ms, route, replica, event) VALUES ($1, $2, $3, $4)",
                    &[at, route, &shared.replica, event],
                )
                .await
                .map_err(db)?;
            }
            let revision: i64 = row.get(0);
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &revision.to_string()]).await.map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn append(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        let (at, route) = (event.at_unix_ms as i64, event.route.clone());
        let event = serde_json::to_value(event).expect("events serialize");
        self.call(move |shared| async move {
            let g = session(&shared).await?;
            let client = &g.as_ref().expect("connected").client;
            client
                .execute(
                    "INSERT INTO strangler_rollout_history (at_unix_ms, route, replica, event) VALUES ($1, $2, $3, $4)",
                    &[&at, &route, &shared.replica, &event],
                )
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn history(&self, route: Option<&str>, limit: usize) -> Result<Vec<HistoryEvent>, StoreError> {
        let route = route.map(str::to_string);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |shared| async move {
            let g = session(&shared).await?;
            let client = &g.as_ref().expect("connected").client;
            let rows = client
                .query(
                    "SELECT event FROM (SELECT seq, event FROM strangler_rollout_history \
                     WHERE $1::text IS NULL OR route = $1 ORDER BY seq DESC LIMIT $2) newest ORDER BY seq",
                    &[&route, &limit],
                )
                .await
                .map_err(db)?;
            Ok(rows.into_iter().filter_map(|r| serde_json::from_value(r.get::<_, Value>(0)).ok()).collect())
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn leadership(&self) -> Leadership {
        if self.shared.leading.load(Ordering::SeqCst) {
            Leadership::Leader
        } else {
            Leadership::Follower { leader: lock(&self.shared.leader).clone() }
        }
    }

    fn revision(&self) -> u64 {
        self.shared.notified.load(Ordering::SeqCst)
    }

    fn replica(&self) -> &str {
        &self.shared.replica
    }

    fn publish(&self, measures: RouteMeasures) {
        *lock(&self.shared.local) = Some(measures);
    }

    fn measures(&self) -> BTreeMap<String, RouteMeasures> {
        lock(&self.shared.others).clone()
    }
}

//! Single active instance: a session-level PostgreSQL advisory lock on the source database.
//!
//! `cdc-sync run` takes the lock before it touches slots and holds the connection that owns it
//! for the life of the process. A second instance of the same pipeline (same forward slot)
//! waits on standby and takes over when the holder's session ends — a crash or `kill -9`
//! closes the socket, the server ends the session and releases the lock. If the connection
//! holding the lock is lost while we are active, another instance may take over, so the active
//! instance must stop streaming at once ([`InstanceLock::lost`]); it may then try to take the
//! lock again (and wait on standby if another instance was quicker).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::error::{pg_kind, ErrorKind};
use crate::retry::{Failure, Next, Retrier, RetryPolicy};

/// The lock's key text; the server hashes it into the 64-bit advisory lock key
/// (`hashtextextended(key, 0)`), so every instance derives the same key from the slot name.
pub fn lock_key(slot: &str) -> String {
    format!("cdc-sync:{slot}")
}

/// Who holds a lock we could not get (from `pg_locks` + `pg_stat_activity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    /// Backend pid of the holding session.
    pub pid: Option<i32>,
    /// Its `application_name` (cdc-sync sets `cdc-sync <pipeline> (<host> pid <pid>)`).
    pub application: Option<String>,
    /// Its client address.
    pub client: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            None => f.write_str("another session"),
            Some(pid) => {
                write!(f, "backend pid {pid}")?;
                if let Some(a) = self.application.as_deref().filter(|a| !a.is_empty()) {
                    write!(f, " ({a})")?;
                }
                if let Some(c) = &self.client {
                    write!(f, " from {c}")?;
                }
                Ok(())
            }
        }
    }
}

/// A held advisory lock. Dropping it closes the connection, which releases the lock.
pub struct InstanceLock {
    client: Client,
    connection: JoinHandle<Result<(), tokio_postgres::Error>>,
    key: String,
}

/// Why the lock is no longer ours.
#[derive(Debug, thiserror::Error)]
pub enum LockLost {
    /// The session holding it ended (the source restarted, the connection broke).
    #[error("the source session holding the instance lock ended")]
    Closed(#[source] Option<tokio_postgres::Error>),
    /// The session did not answer a check in time (a half-open connection).
    #[error("the source session holding the instance lock did not answer within {0:?}")]
    Unresponsive(Duration),
}

/// What happens while [`InstanceLock::acquire_waiting`] waits.
#[derive(Debug)]
pub enum Waiting<'a> {
    /// Another instance holds the lock (called when first seen and whenever the holder changes).
    Standby(&'a Holder),
    /// The source cannot be reached (or answered with an error worth another try); the next
    /// attempt is in `retry_in`.
    Unreachable {
        /// The failure.
        error: &'a tokio_postgres::Error,
        /// Consecutive failures so far.
        attempts: u32,
        /// Pause before the next attempt.
        retry_in: Duration,
    },
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The decision after a failed attempt to take the lock: the pause before the next one, or
/// `None` to give up (the error will not pass by waiting, or kept repeating).
pub fn lock_retry(retrier: &mut Retrier, kind: ErrorKind, rng: &mut impl rand::Rng) -> Option<Duration> {
    match retrier.next(Failure { kind, pinned: true, up_to: None, progressed: false }, rng) {
        Next::Retry { delay } => Some(delay),
        Next::Isolate { .. } | Next::Stop(_) => None,
    }
}

/// [`InstanceLock::acquire_waiting`] gave up: the last error, its kind and how many attempts
/// failed in a row.
#[derive(Debug)]
pub struct GaveUp {
    /// The kind that decided it.
    pub kind: ErrorKind,
    /// Consecutive failed attempts.
    pub attempts: u32,
    /// The last failure.
    pub error: tokio_postgres::Error,
}

/// Result of one attempt.
pub enum Attempt {
    /// We hold the lock.
    Acquired(InstanceLock),
    /// Someone else does.
    Held(Holder),
}

impl InstanceLock {
    /// Open the connection that will hold the lock for `slot` on `conn` (the source database).
    pub async fn connect(conn: &str, pipeline: &str, slot: &str) -> Result<InstanceLock, tokio_postgres::Error> {
        let (client, connection) = crate::connect::connect_raw(conn).await?;
        let connection = tokio::spawn(connection);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let app = format!("cdc-sync {pipeline} ({} pid {})", host.trim(), std::process::id());
        let app: String = app.chars().take(63).collect();
        let lock = InstanceLock { client, connection, key: lock_key(slot) };
        lock.client.execute("SELECT set_config('application_name', $1, false)", &[&app]).await?;
        Ok(lock)
    }

    /// Try once, without waiting: `Ok(None)` when this session now holds the lock, else who does.
    async fn try_lock(&self) -> Result<Option<Holder>, tokio_postgres::Error> {
        let got: bool =
            self.client.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&self.key]).await?.get(0);
        if got {
            Ok(None)
        } else {
            Ok(Some(self.holder().await.unwrap_or_default()))
        }
    }

    /// Try once to take the lock for `slot` on `conn` (the source database), without waiting.
    pub async fn try_acquire(conn: &str, pipeline: &str, slot: &str) -> Result<Attempt, tokio_postgres::Error> {
        let lock = InstanceLock::connect(conn, pipeline, slot).await?;
        Ok(match lock.try_lock().await? {
            None => Attempt::Acquired(lock),
            Some(h) => Attempt::Held(h),
        })
    }

    async fn holder(&self) -> Result<Holder, tokio_postgres::Error> {
        let row = self
            .client
            .query_opt(
                "SELECT l.pid, a.application_name, host(a.client_addr) \
                 FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.database = \
                   (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0) \
                   AND l.objsubid = 1 \
                 LIMIT 1",
                &[&self.key],
            )
            .await?;
        Ok(row.map(|r| Holder { pid: r.get(0), application: r.get(1), client: r.get(2) }).unwrap_or_default())
    }

    /// Take the lock, waiting on standby while another instance holds it (retried every
    /// `poll`). A failure to connect or to ask is classified ([`pg_kind`]) and decided by a
    /// [`Retrier`] with `policy`, as a streaming direction's errors are: a source that is not
    /// there (connection refused, shutting down, starting up) is waited out at the capped,
    /// jittered backoff for as long as it takes; an error that waiting does not fix (a refused
    /// login or certificate, a missing database: [`ErrorKind::Access`]) gives up at once; any
    /// other error gives up once it has failed `policy.max_attempts` times in a row. `on_wait`
    /// hears about the standby and each retry.
    pub async fn acquire_waiting(
        conn: &str,
        pipeline: &str,
        slot: &str,
        poll: Duration,
        policy: RetryPolicy,
        mut on_wait: impl FnMut(Waiting<'_>),
    ) -> Result<InstanceLock, GaveUp> {
        let mut last: Option<Holder> = None;
        let mut session: Option<InstanceLock> = None;
        let mut retrier = Retrier::new(policy);
        let mut rng = StdRng::from_entropy();
        loop {
            let attempt = match session.take() {
                Some(l) => Ok(l),
                None => InstanceLock::connect(conn, pipeline, slot).await,
            };
            let failed = match attempt {
                Ok(l) => match l.try_lock().await {
                    Ok(None) => return Ok(l),
                    Ok(Some(h)) => {
                        retrier = Retrier::new(policy);
                        if last.as_ref() != Some(&h) {
                            on_wait(Waiting::Standby(&h));
                            last = Some(h);
                        }
                        session = Some(l);
                        None
                    }
                    Err(e) => Some(e),
                },
                Err(e) => Some(e),
            };
            let pause = match failed {
                None => poll,
                Some(error) => {
                    last = None;
                    let kind = pg_kind(&error);
                    match lock_retry(&mut retrier, kind, &mut rng) {
                        Some(retry_in) => {
                            let attempts = retrier.failures();
                            on_wait(Waiting::Unreachable { error: &error, attempts, retry_in });
                            retry_in
                        }
                        None => return Err(GaveUp { kind, attempts: retrier.failures(), error }),
                    }
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Resolves when the session holding the lock is gone (the lock is then no longer ours).
    /// Checks the connection every few seconds as well, so a half-open TCP connection is noticed.
    pub async fn lost(&mut self) -> LockLost {
        const CHECK_EVERY: Duration = Duration::from_secs(5);
        const ANSWER_WITHIN: Duration = Duration::from_secs(10);
        loop {
            tokio::select! {
                ended = &mut self.connection => return LockLost::Closed(ended.ok().and_then(Result::err)),
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    match tokio::time::timeout(ANSWER_WITHIN, self.client.query_one("SELECT 1", &[])).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return LockLost::Closed(Some(e)),
                        Err(_) => return LockLost::Unresponsive(ANSWER_WITHIN),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_text() {
        assert_eq!(Holder::default().to_string(), "another session");
        let h = Holder {
            pid: Some(42),
            application: Some("cdc-sync x (h pid 7)".into()),
            client: Some("127.0.0.1".into()),
        };
        assert_eq!(h.to_string(), "backend pid 42 (cdc-sync x (h pid 7)) from 127.0.0.1");
        assert_eq!(lock_key("cdc_sync_catalog"), "cdc-sync:cdc_sync_catalog");
    }

    /// The lock loop decides like a streaming direction: a source that is not there is waited
    /// out, a refused login gives up at once, anything else after `max_attempts` in a row.
    #[test]
    fn lock_retries_are_classified() {
        let mut rng = StdRng::seed_from_u64(9);
        let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
        for kind in [ErrorKind::Connection, ErrorKind::Shutdown] {
            let mut r = Retrier::new(policy);
            for i in 0..100 {
                let d = lock_retry(&mut r, kind, &mut rng).unwrap_or_else(|| panic!("{kind} gave up at {i}"));
                assert!(d <= policy.max_delay);
            }
        }
        let mut r = Retrier::new(policy);
        assert_eq!(lock_retry(&mut r, ErrorKind::Access, &mut rng), None);
        assert_eq!(r.failures(), 1);
        let mut r = Retrier::new(policy);
        assert!(lock_retry(&mut r, ErrorKind::Other, &mut rng).is_some());
        assert!(lock_retry(&mut r, ErrorKind::Resources, &mut rng).is_some());
        assert_eq!(lock_retry(&mut r, ErrorKind::Other, &mut rng), None);
        assert_eq!(r.failures(), 3);
    }
}

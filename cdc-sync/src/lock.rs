//! Single active instance: a session-level PostgreSQL advisory lock on the source database.
//!
//! `cdc-sync run` takes the lock before it touches slots and holds the connection that owns it
//! for the life of the process. A second instance of the same pipeline (same forward slot)
//! waits on standby and takes over when the holder's session ends — a crash or `kill -9`
//! closes the socket, the server ends the session and releases the lock. If the connection
//! holding the lock is lost while we are active, another instance may take over, so the active
//! instance must stop streaming at once ([`InstanceLock::lost`]).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::Client;

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
    connection: JoinHandle<()>,
    key: String,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        self.connection.abort();
    }
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
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "lock connection closed");
            }
        });
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

    /// Take the lock, waiting on standby while another instance holds it. `on_standby` is
    /// called with the holder whenever it is first seen or changes; retries every `poll`.
    /// Connection errors are retried too (the source may be restarting).
    pub async fn acquire_waiting(
        conn: &str,
        pipeline: &str,
        slot: &str,
        poll: Duration,
        mut on_standby: impl FnMut(&Holder),
    ) -> InstanceLock {
        let mut last: Option<Holder> = None;
        let mut session: Option<InstanceLock> = None;
        loop {
            if session.is_none() {
                match InstanceLock::connect(conn, pipeline, slot).await {
                    Ok(l) => session = Some(l),
                    Err(e) => tracing::warn!(error = %e, "cannot reach the source to take the instance lock; retrying"),
                }
            }
            if let Some(l) = &session {
                match l.try_lock().await {
                    Ok(None) => return session.take().expect("checked"),
                    Ok(Some(h)) => {
                        if last.as_ref() != Some(&h) {
                            on_standby(&h);
                            last = Some(h);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "instance lock session failed; reconnecting");
                        session = None;
                    }
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Resolves when the session holding the lock is gone (the lock is then no longer ours).
    /// Checks the connection every few seconds as well, so a half-open TCP connection is noticed.
    pub async fn lost(&mut self) {
        loop {
            tokio::select! {
                _ = &mut self.connection => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    let check = tokio::time::timeout(Duration::from_secs(10), self.client.query_one("SELECT 1", &[])).await;
                    if !matches!(check, Ok(Ok(_))) {
                        return;
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
}

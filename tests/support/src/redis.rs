//! An ephemeral Redis server (Debian's `redis-server`) on a free loopback port, with nothing
//! persisted, stopped when dropped.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_for_tcp, ChildGuard};

/// A running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: ChildGuard,
}

impl RedisServer {
    /// Starts `redis-server` (from `REDIS_SERVER` or the PATH) on a free port and waits until it
    /// accepts connections.
    pub fn start() -> Result<Self, String> {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {bin} (scripts/ensure-deps.sh installs redis-server): {e}"))?;
        let child = ChildGuard::new("redis-server", child);
        wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10))?;
        Ok(Self { port, child })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server now (to test what happens when Redis is gone).
    pub fn stop(&mut self) {
        self.child.kill_now();
    }
}

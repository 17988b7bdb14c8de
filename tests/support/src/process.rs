//! Ports, readiness checks and child processes cleaned up on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// A TCP port on 127.0.0.1, free now and reserved for this process: no other caller of
/// `free_port` (in this process or another) gets it while this process lives.
///
/// Binding port 0 and releasing it is not enough when tests run in parallel: the kernel hands
/// the same ephemeral range to every `bind(0)` and to every outgoing connection, so a server
/// started a moment later elsewhere could take the port first, and the test would then talk to
/// that server instead of its own. So ports come from below the kernel's ephemeral range (which
/// `bind(0)` and outgoing connections never use), each one claimed with a lock file (`flock`,
/// released by the kernel when the process exits, so nothing is left to clean up).
pub fn free_port() -> u16 {
    ports::reserve().unwrap_or_else(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0 must work on loopback")
    })
}

mod ports {
    use std::fs::{File, OpenOptions};
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::sync::Mutex;

    /// The lowest port handed out; the range ends where the kernel's ephemeral range starts.
    const FIRST: u16 = 12_000;

    /// Lock files of the ports this process holds (kept open for the process' life).
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

    fn ephemeral_low() -> u16 {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768)
    }

    fn lock_dir() -> Option<PathBuf> {
        let dir = std::env::temp_dir().join("strangler-test-ports");
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }

    /// A port in `FIRST..ephemeral_low()` that no other holder has locked and nothing listens on;
    /// `None` when the range is unusable here (then the caller falls back to `bind(0)`).
    pub(super) fn reserve() -> Option<u16> {
        let (lo, hi) = (FIRST, ephemeral_low());
        if hi <= lo + 100 {
            return None;
        }
        let dir = lock_dir()?;
        let span = u32::from(hi - lo);
        // start at a different place in each process so that concurrent test binaries rarely
        // contend for the same lock files
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..span {
            let port = lo + ((seed.wrapping_add(i)) % span) as u16;
            let Ok(file) =
                OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("{port}")))
            else {
                continue;
            };
            if file.try_lock().is_err() {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue; // something outside the tests listens there; the lock drops with `file`
            }
            held.push(file);
            return Some(port);
        }
        None
    }
}

/// Waits until something accepts TCP connections on `addr`, or `timeout` passes.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{addr} did not accept connections within {timeout:?}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// Waits until `GET path` on `addr` answers with a 2xx status, or `timeout` passes.
///
/// Uses a minimal HTTP/1.1 exchange over a raw socket so that this crate needs no HTTP client.
pub fn wait_for_http(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt made");
    while Instant::now() < deadline {
        match http_status(addr, path) {
            Ok(s) if (200..300).contains(&s) => return Ok(()),
            Ok(s) => last = format!("status {s}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("GET http://{addr}{path} not ready within {timeout:?}: {last}"))
}

fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))
}

/// A child process that is killed (SIGTERM, then SIGKILL after a grace period) when dropped,
/// including while a test unwinds from a panic.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self { name: name.into(), child: Some(child) }
    }

    /// The process id of the child.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends a signal (e.g. `Signal::SIGHUP`) to the child.
    pub fn signal(&self, sig: Signal) -> std::io::Result<()> {
        signal_pid(self.pid(), sig)
    }

    /// Returns `Some(status)` if the child has exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Ok(None),
        }
    }

    /// Kills the child at once (SIGKILL) and reaps it.
    pub fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status if it could be reaped.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = signal_pid(c.id(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Sends `sig` to `pid`.
pub fn signal_pid(pid: u32, sig: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
    if pid <= 0 {
        return Err(std::io::Error::other("refusing to signal pid <= 0"));
    }
    nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(std::io::Error::from)
}

/// True if a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let low = ports_low_for_test();
        let got: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let unique: std::collections::HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "a port handed out twice: {got:?}");
        for p in &got {
            assert!(*p < low, "{p} is in the ephemeral range (from {low})");
            TcpListener::bind(("127.0.0.1", *p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        // another process (here: a second open of the lock file) cannot claim a held port
        let dir = std::env::temp_dir().join("strangler-test-ports");
        let f = std::fs::OpenOptions::new().write(true).open(dir.join(got[0].to_string())).unwrap();
        assert!(f.try_lock().is_err(), "port {} is not held", got[0]);
    }

    fn ports_low_for_test() -> u16 {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

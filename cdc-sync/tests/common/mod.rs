//! Shared test helpers: two clusters, a sync.toml, the real binary, state polling.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strangler_support::{free_port, wait_for_http, ChildGuard, PgCluster, PgClusterBuilder};

pub struct Env {
    pub src: PgCluster,
    pub tgt: PgCluster,
    pub src_db: String,
    pub tgt_db: String,
    pub src_conn: String,
    pub tgt_conn: String,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Two separate clusters with one database each, schemas applied.
    pub fn new(src_schema: &str, tgt_schema: &str) -> Env {
        Env::with_source_conf(src_schema, tgt_schema, &[])
    }

    /// Like [`Env::new`], with extra `postgresql.conf` lines for the source cluster.
    pub fn with_source_conf(src_schema: &str, tgt_schema: &str, conf: &[&str]) -> Env {
        let src = conf.iter().fold(PgCluster::builder(), |b, line| b.conf(*line));
        Env::with_clusters(src, PgCluster::builder(), src_schema, tgt_schema)
    }

    /// Like [`Env::new`], with the clusters built as given (e.g. with `ssl` and `hba` lines).
    pub fn with_clusters(src: PgClusterBuilder, tgt: PgClusterBuilder, src_schema: &str, tgt_schema: &str) -> Env {
        let src = src.start().expect("source cluster");
        let tgt = tgt.start().expect("target cluster");
        let (src_db, src_conn) = src.create_unique_database("src").unwrap();
        let (tgt_db, tgt_conn) = tgt.create_unique_database("tgt").unwrap();
        src.psql(&src_db, src_schema).unwrap();
        tgt.psql(&tgt_db, tgt_schema).unwrap();
        Env { src, tgt, src_db, tgt_db, src_conn, tgt_conn, dir: tempfile::tempdir().unwrap() }
    }

    pub fn s(&self, sql: &str) -> String {
        self.src.psql(&self.src_db, sql).unwrap()
    }

    pub fn t(&self, sql: &str) -> String {
        self.tgt.psql(&self.tgt_db, sql).unwrap()
    }

    /// Write sync.toml with `[source]`/`[target]` filled in; `body` holds the tables.
    pub fn write_config(&self, name: &str, body: &str) -> PathBuf {
        self.write_config_to(name, &self.tgt_conn, body)
    }

    /// Like [`Env::write_config`] with another target database.
    pub fn write_config_to(&self, name: &str, target_conn: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{target_conn}\"\n{body}\n",
            self.src_conn
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cdc-sync"));
    c.env("RUST_LOG", "info,pg_walstream=warn");
    c
}

pub struct Running {
    pub child: ChildGuard,
    pub status: SocketAddr,
    pub log: PathBuf,
}

impl Running {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Spawn `cdc-sync run` and wait until /health/ready.
pub fn start(config: &PathBuf, log_name: &str) -> Running {
    let r = spawn(config, log_name);
    if let Err(e) = wait_for_http(r.status, "/health/ready", Duration::from_secs(90)) {
        panic!("not ready: {e}\n{}", r.log_text());
    }
    r
}

/// Spawn `cdc-sync run` without waiting.
pub fn spawn(config: &PathBuf, log_name: &str) -> Running {
    spawn_with(config, log_name, &[])
}

/// [`spawn`] with extra `run` arguments (e.g. `--linger-after-stop 30`).
pub fn spawn_with(config: &PathBuf, log_name: &str, extra: &[&str]) -> Running {
    let port = free_port();
    let status: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = config.parent().unwrap().join(format!("{log_name}.log"));
    let f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let child = bin()
        .args(["run", "--config"])
        .arg(config)
        .args(["--status", &status.to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap();
    Running { child: ChildGuard::new("cdc-sync", child), status, log }
}

pub fn verify(config: &PathBuf) -> Output {
    bin().args(["verify", "--config"]).arg(config).output().unwrap()
}

/// Poll `verify` until it reports equal (exit 0) or the deadline passes.
pub fn wait_equal(config: &PathBuf, within: Duration, running: Option<&Running>) -> Output {
    let deadline = Instant::now() + within;
    loop {
        let out = verify(config);
        if out.status.code() == Some(0) {
            return out;
        }
        if Instant::now() >= deadline {
            panic!(
                "not equal within {within:?}: {}\n{}\nlog:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                running.map(|r| r.log_text()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Poll a SQL query until it returns `want`.
pub fn wait_sql(run: &dyn Fn() -> String, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = run();
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            panic!("waited {within:?} for {want:?}, last got {got:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `txn` in a loop on its own thread until stopped; counts committed transactions.
pub struct Workload {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Workload {
    pub fn start(conn: String, sql: fn(u64, &mut rand::rngs::ThreadRng) -> String) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&committed));
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                let mut rng = rand::thread_rng();
                let mut i = 0;
                while !s.load(Ordering::Relaxed) {
                    i += 1;
                    client.batch_execute(&sql(i, &mut rng)).await.unwrap();
                    c.fetch_add(1, Ordering::Relaxed);
                }
            });
        });
        Workload { stop, committed, handle: Some(handle) }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.committed.load(Ordering::Relaxed)
    }
}

/// GET a path on the status port: `None` while nothing listens there.
pub fn try_http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The JSON `/status` document, `None` while the port is not up.
pub fn try_status(addr: SocketAddr) -> Option<serde_json::Value> {
    let raw = try_http_get(addr, "/status")?;
    serde_json::from_str(raw.split("\r\n\r\n").nth(1)?).ok()
}

/// GET a path on the status port.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

/// The counters workload shared by the crash, bidirectional and standby tests: 100 counters
/// incremented by transactions, plus an append-only log (duplicates would be visible).
pub const COUNTERS: &str = "
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE log (id bigserial PRIMARY KEY, counter int NOT NULL, v text);
INSERT INTO counters SELECT g, 0 FROM generate_series(1, 100) g;
";

pub const COUNTERS_TGT: &str = "
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE log (id bigint PRIMARY KEY, counter int NOT NULL, v text);
";

pub const COUNTERS_MAP: &str = r#"
[[table]]
source = "counters"
target = "counters"
key = ["id"]
[table.columns]
id = "id"
n = "n"

[[table]]
source = "log"
target = "log"
key = ["id"]
[table.columns]
id = "id"
counter = "counter"
v = "v"
"#;

/// One table on both sides, `items (id, v)`, mapped one to one (the access, TLS and role tests).
pub const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";

pub const ITEMS_MAP: &str = r#"
[[table]]
source = "items"
target = "items"
key = ["id"]
[table.columns]
id = "id"
v = "v"
"#;

/// Wait for the process to exit (bounded); its exit status.
pub fn wait_exit(run: &mut Running, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = run.child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            panic!("still running after {within:?}:\n{}", run.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `/status` until `done` holds for it (bounded); that document.
pub fn wait_status(run: &Running, within: Duration, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some(s) = try_status(run.status) {
            if done(&s) {
                return s;
            }
            last = Some(s);
        }
        if Instant::now() >= deadline {
            panic!("status not reached within {within:?}; last {last:?}\nlog:\n{}", run.log_text());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `pg_ctl -D <data> -l <log> <args>` for a cluster, as its unprivileged owner when we are
/// root (like the harness does); panics when it fails.
pub fn pg_ctl(c: &strangler_support::PgCluster, args: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    let pg_ctl = c.bin_dir().join("pg_ctl");
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    let mut cmd = if root {
        let user = std::env::var("STRANGLER_PG_USER").unwrap_or_else(|_| "postgres".into());
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &user, "--"]).arg(pg_ctl);
        cmd
    } else {
        Command::new(pg_ctl)
    };
    cmd.arg("-D").arg(c.data_dir()).arg("-l").arg(c.log_file()).args(args);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Restart a cluster in place (`pg_ctl restart -m fast`, same port and data): its sessions end
/// with SQLSTATE 57P01, and connections are refused until it is back.
pub fn restart_cluster(c: &strangler_support::PgCluster) {
    pg_ctl(c, &["-m", "fast", "-w", "-t", "60", "restart"]);
}

/// Stop a cluster (`-m fast`); [`start_cluster`] brings it back with the same data and port.
pub fn stop_cluster(c: &strangler_support::PgCluster) {
    pg_ctl(c, &["-m", "fast", "-w", "-t", "60", "stop"]);
}

/// Start a cluster stopped by [`stop_cluster`] (on its port, which the harness passes on the
/// command line rather than in postgresql.conf).
pub fn start_cluster(c: &strangler_support::PgCluster) {
    let port = format!("-p {}", c.port());
    pg_ctl(c, &["-w", "-t", "60", "-o", &port, "start"]);
}

/// A writer that keeps writing through restarts of its database: on an error it reconnects
/// (pausing a little between attempts) and goes on. Whether a transaction caught by a restart
/// committed is unknown to it, so count committed work on the database itself.
pub struct ResilientWorkload {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ResilientWorkload {
    pub fn start(conn: String, sql: fn(u64, &mut rand::rngs::ThreadRng) -> String) -> ResilientWorkload {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let (s, e) = (Arc::clone(&stop), Arc::clone(&errors));
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut rng = rand::thread_rng();
                let mut i = 0;
                while !s.load(Ordering::Relaxed) {
                    let client = match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
                        Ok((client, connection)) => {
                            tokio::spawn(connection);
                            client
                        }
                        Err(_) => {
                            e.fetch_add(1, Ordering::Relaxed);
                            // the server is restarting: a retry pause, not synchronisation
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    while !s.load(Ordering::Relaxed) {
                        i += 1;
                        if client.batch_execute(&sql(i, &mut rng)).await.is_err() {
                            e.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            });
        });
        ResilientWorkload { stop, errors, handle: Some(handle) }
    }

    /// Errors seen so far (connections refused or broken).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Stop writing; the errors it saw.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        self.errors()
    }
}

/// Parse a `X/Y` LSN.
pub fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim().split_once('/').unwrap_or_else(|| panic!("not an LSN: {s:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// A service session on the target in an open transaction holding `table` in ROW SHARE mode: a
/// copy's EXCLUSIVE lock on the table waits for it, the session's own writes do not (and, with no
/// transaction id yet, creating the slots does not wait for it either). The copy-race tests
/// commit the service's changes through it while the copy waits ([`Self::commit`]).
pub struct TableLockHolder {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl TableLockHolder {
    pub fn new(env: &Env, table: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&env.tgt_conn, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ROW SHARE MODE")).await.unwrap();
            c
        });
        TableLockHolder { rt, client }
    }

    /// Runs `sql` in the open transaction, then commits it (releasing the lock).
    pub fn commit(&self, sql: &str) {
        self.rt.block_on(self.client.batch_execute(&format!("{sql}; COMMIT"))).unwrap();
    }
}

/// Waits (at most 60 s) until `run`'s copy waits for its EXCLUSIVE lock on the target's `table`.
pub fn wait_copy_waits_for_lock(env: &Env, run: &mut Running, table: &str) {
    let waiting = format!(
        "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass AND mode = 'ExclusiveLock' \
         AND NOT granted"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.t(&waiting) != "1" {
        assert!(Instant::now() < deadline, "the copy never waited for the lock:\n{}", run.log_text());
        assert!(run.child.try_wait().unwrap().is_none(), "exited:\n{}", run.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

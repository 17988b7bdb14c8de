//! Ephemeral PostgreSQL clusters.
//!
//! `PgCluster::start()` runs `initdb` into a fresh temporary directory, configures the cluster for
//! logical replication (`wal_level = logical`, slots and WAL senders sized for the tests,
//! `track_commit_timestamp` for last-writer-wins), starts it on a free loopback port with its Unix
//! socket inside its own run directory, and waits until it accepts connections. Dropping the value
//! stops the server (immediate shutdown) and deletes the directory, also while a test unwinds from a
//! panic. A small guardian shell process does the same if the owning process dies without
//! unwinding (SIGKILL, abort), so no postmaster outlives its test run.
//!
//! PostgreSQL refuses to run as root. When the current user is root, the server processes run as
//! the unprivileged `postgres` OS user (override with `STRANGLER_PG_USER`) via `runuser`, and the
//! cluster directory is handed to that user.
//!
//! The database superuser is always `postgres`, with `trust` authentication on loopback only.
//! For TLS tests, `PgCluster::builder().ssl(cert, key, ca)` turns `ssl = on` with a certificate
//! (e.g. from [`crate::tls::PgPki`]) and `.hba(line)` puts `hostssl ... cert` style lines first.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::unistd::{Uid, User};
use thiserror::Error;

/// Why a cluster could not be started or used.
#[derive(Debug, Error)]
pub enum PgError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {searched}.\n\
         Install them on Debian with:  apt-get install -y postgresql-15\n\
         or point PG_BIN at the directory that holds them (e.g. /usr/lib/postgresql/15/bin)"
    )]
    NotInstalled { searched: String },
    #[error(
        "running as root, but PostgreSQL refuses to run as root and the unprivileged OS user \
         '{0}' does not exist. Install postgresql-15 (it creates the 'postgres' user) or set \
         STRANGLER_PG_USER to an existing unprivileged user"
    )]
    NoUnprivilegedUser(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("I/O error while {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Io { what, source }
}

/// Options for a new cluster. `PgCluster::start()` uses the test defaults.
#[derive(Debug, Clone)]
pub struct PgClusterBuilder {
    fsync: bool,
    max_replication_slots: u32,
    max_connections: u32,
    base_dir: Option<PathBuf>,
    extra_conf: Vec<String>,
    ssl: Option<SslFiles>,
    hba: Vec<String>,
}

/// The server's TLS files ([`PgClusterBuilder::ssl`]).
#[derive(Debug, Clone)]
struct SslFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
}

impl Default for PgClusterBuilder {
    fn default() -> Self {
        Self {
            fsync: false,
            max_replication_slots: 32,
            max_connections: 200,
            base_dir: None,
            extra_conf: Vec::new(),
            ssl: None,
            hba: Vec::new(),
        }
    }
}

impl PgClusterBuilder {
    /// Keep `fsync` on (durable). Tests leave it off for speed; the local stack may turn it on.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// `max_replication_slots` and `max_wal_senders` (default 32).
    pub fn max_replication_slots(mut self, n: u32) -> Self {
        self.max_replication_slots = n;
        self
    }

    /// `max_connections` (default 200).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Create the cluster directory under `dir` instead of the system temp dir.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Append a raw `postgresql.conf` line, e.g. `"log_min_messages = debug1"`.
    pub fn conf(mut self, line: impl Into<String>) -> Self {
        self.extra_conf.push(line.into());
        self
    }

    /// `ssl = on` with this certificate and key (PEM; copied into the data directory, the key
    /// made private to the server's user), and `ca` as `ssl_ca_file` (the roots client
    /// certificates must chain to, for `cert` authentication). Plain connections are still
    /// accepted unless a `hostssl`/`hostnossl` line says otherwise ([`Self::hba`]).
    pub fn ssl(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>, ca: Option<PathBuf>) -> Self {
        self.ssl = Some(SslFiles { cert: cert.into(), key: key.into(), ca });
        self
    }

    /// TLS with `pki`'s server certificate (for `localhost` and 127.0.0.1), and plain-text TCP
    /// connections refused (`hostnossl ... reject`): a server as a platform that requires
    /// `sslmode=verify-full` runs it. The harness's own `psql` negotiates TLS and still gets in.
    pub fn tls_required(self, pki: &crate::tls::PgPki) -> Self {
        self.ssl(&pki.server_cert, &pki.server_key, Some(pki.ca.clone()))
            .hba("hostnossl all all 127.0.0.1/32 reject")
            .hba("hostnossl all all ::1/128 reject")
    }

    /// Put a `pg_hba.conf` line before the harness's own (`trust` on loopback), e.g.
    /// `"hostssl all certuser 127.0.0.1/32 cert"`.
    pub fn hba(mut self, line: impl Into<String>) -> Self {
        self.hba.push(line.into());
        self
    }

    /// initdb, configure, start and wait until the server accepts connections.
    pub fn start(self) -> Result<PgCluster, PgError> {
        PgCluster::start_with(self)
    }
}

/// A running, private PostgreSQL cluster. Stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    data_dir: PathBuf,
    run_dir: PathBuf,
    log_file: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<String>,
    port: u16,
    pid: u32,
    guardian: Option<std::process::Child>,
}

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    /// Starts a cluster with the test defaults (fsync off, logical replication on).
    pub fn start() -> Result<Self, PgError> {
        PgClusterBuilder::default().start()
    }

    /// A builder for non-default options.
    pub fn builder() -> PgClusterBuilder {
        PgClusterBuilder::default()
    }

    fn start_with(opts: PgClusterBuilder) -> Result<Self, PgError> {
        let bin_dir = find_bin_dir()?;
        let run_as = if Uid::effective().is_root() {
            let name = std::env::var("STRANGLER_PG_USER").unwrap_or_else(|_| "postgres".into());
            let user =
                User::from_name(&name).ok().flatten().ok_or_else(|| PgError::NoUnprivilegedUser(name.clone()))?;
            Some((name, user))
        } else {
            None
        };

        let base = opts.base_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).map_err(io(format!("creating {}", base.display())))?;
        let root = tempfile::Builder::new()
            .prefix("strangler-pg-")
            .tempdir_in(&base)
            .map_err(io("creating the cluster directory"))?;
        let root_path = root.path().to_path_buf();
        let data_dir = root_path.join("data");
        let run_dir = root_path.join("run");
        let log_file = root_path.join("postgres.log");
        std::fs::create_dir(&run_dir).map_err(io("creating the run directory"))?;
        if let Some((_, user)) = &run_as {
            for p in [&root_path, &run_dir] {
                nix::unistd::chown(p.as_path(), Some(user.uid), Some(user.gid))
                    .map_err(|e| PgError::Io { what: format!("chown {}", p.display()), source: e.into() })?;
            }
        }

        let mut cluster = PgCluster {
            root: Some(root),
            root_path,
            data_dir,
            run_dir,
            log_file,
            bin_dir,
            run_as: run_as.map(|(n, _)| n),
            port: 0,
            pid: 0,
            guardian: None,
        };

        let mut initdb = cluster.command("initdb");
        initdb.arg("-D").arg(&cluster.data_dir).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"]);
        if !opts.fsync {
            initdb.arg("--no-sync");
        }
        run_checked(initdb, "initdb")?;

        let mut conf = OpenOptions::new()
            .append(true)
            .open(cluster.data_dir.join("postgresql.conf"))
            .map_err(io("opening postgresql.conf"))?;
        let slots = opts.max_replication_slots;
        let mut lines = vec![
            "# strangler-support".to_string(),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", cluster.run_dir.display()),
            "wal_level = logical".into(),
            format!("max_replication_slots = {slots}"),
            format!("max_wal_senders = {slots}"),
            format!("max_connections = {}", opts.max_connections),
            format!("max_worker_processes = {}", slots.max(8) + 8),
            format!("max_logical_replication_workers = {}", slots.max(4)),
            "track_commit_timestamp = on".into(),
            "shared_buffers = '128MB'".into(),
            "log_min_messages = warning".into(),
            "log_line_prefix = '%m [%p] %d '".into(),
        ];
        if !opts.fsync {
            lines.extend(["fsync = off", "synchronous_commit = off", "full_page_writes = off"].map(String::from));
        }
        if let Some(ssl) = &opts.ssl {
            lines.extend(cluster.install_ssl(ssl)?);
        }
        lines.extend(opts.extra_conf.iter().cloned());
        writeln!(conf, "{}", lines.join("\n")).map_err(io("writing postgresql.conf"))?;
        drop(conf);
        if !opts.hba.is_empty() {
            let path = cluster.data_dir.join("pg_hba.conf");
            let old = std::fs::read_to_string(&path).map_err(io("reading pg_hba.conf"))?;
            std::fs::write(&path, format!("{}\n{old}", opts.hba.join("\n"))).map_err(io("writing pg_hba.conf"))?;
        }

        // The port is chosen free a moment before the server binds it; another process can take
        // it in between, so retry with a new port a few times.
        let mut last_err = None;
        for _ in 0..5 {
            cluster.port = crate::free_port();
            let mut pg_ctl = cluster.command("pg_ctl");
            pg_ctl
                .arg("-D")
                .arg(&cluster.data_dir)
                .arg("-l")
                .arg(&cluster.log_file)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", cluster.port))
                .arg("start");
            match run_checked(pg_ctl, "pg_ctl start") {
                Ok(_) => {
                    last_err = None;
                    break;
                }
                Err(e) => {
                    let log = std::fs::read_to_string(&cluster.log_file).unwrap_or_default();
                    if log.contains("could not bind") || log.contains("already in use") {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(PgError::Command {
                        what: "starting postgres".into(),
                        detail: format!("{e}\n--- {} ---\n{log}", cluster.log_file.display()),
                    });
                }
            }
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        cluster.pid = std::fs::read_to_string(cluster.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        cluster.guardian = cluster.spawn_guardian();
        Ok(cluster)
    }

    /// Copy the TLS files into the data directory, owned by the server's user (the key mode
    /// 0600, which the server insists on); the `postgresql.conf` lines that use them.
    fn install_ssl(&self, ssl: &SslFiles) -> Result<Vec<String>, PgError> {
        use std::os::unix::fs::PermissionsExt;
        let owner = match &self.run_as {
            Some(name) => User::from_name(name).ok().flatten().map(|u| (u.uid, u.gid)),
            None => None,
        };
        let mut lines = vec!["ssl = on".to_string()];
        let files = [("server.crt", Some(&ssl.cert), "ssl_cert_file"), ("server.key", Some(&ssl.key), "ssl_key_file")];
        let ca = [("root.crt", ssl.ca.as_ref(), "ssl_ca_file")];
        for (name, from, setting) in files.into_iter().chain(ca) {
            let Some(from) = from else { continue };
            let to = self.data_dir.join(name);
            std::fs::copy(from, &to).map_err(io(format!("copying {} into the data directory", from.display())))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod 600"))?;
            if let Some((uid, gid)) = owner {
                nix::unistd::chown(&to, Some(uid), Some(gid))
                    .map_err(|e| PgError::Io { what: format!("chown {}", to.display()), source: e.into() })?;
            }
            lines.push(format!("{setting} = '{name}'"));
        }
        Ok(lines)
    }

    /// A command for one of the server binaries, run as the unprivileged user when we are root.
    fn command(&self, bin: &str) -> Command {
        let path = self.bin_dir.join(bin);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// Watches the owning process; if it disappears without dropping the cluster (SIGKILL, abort),
    /// shuts the server down (SIGQUIT = immediate shutdown) and removes the directory.
    fn spawn_guardian(&self) -> Option<std::process::Child> {
        if self.pid == 0 {
            return None;
        }
        let script = r#"
            owner="$1"; pg="$2"; root="$3"
            while kill -0 "$owner" 2>/dev/null && [ -d "$root" ]; do sleep 1; done
            if [ -d "$root" ]; then
                kill -QUIT "$pg" 2>/dev/null
                for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pg" 2>/dev/null || break; sleep 0.5; done
                kill -KILL "$pg" 2>/dev/null
                rm -rf "$root"
            fi
        "#;
        Command::new("sh")
            .args(["-c", script, "strangler-pg-guardian"])
            .arg(std::process::id().to_string())
            .arg(self.pid.to_string())
            .arg(&self.root_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    }

    /// TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host to connect to.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory that holds data, socket and log; removed on drop.
    pub fn root_dir(&self) -> &Path {
        &self.root_path
    }

    /// The server log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Directory of the PostgreSQL binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A libpq key/value connection string for `db` (as `tokio-postgres` accepts).
    pub fn connection_string(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={db}", self.port)
    }

    /// A `postgres://` URL for `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its connection string.
    pub fn create_database(&self, name: &str) -> Result<String, PgError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(PgError::Command {
                what: "create_database".into(),
                detail: format!("database name {name:?} must be [A-Za-z0-9_]+"),
            });
        }
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.connection_string(name))
    }

    /// Creates a database with a name unique within this process, starting with `prefix`.
    pub fn create_unique_database(&self, prefix: &str) -> Result<(String, String), PgError> {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        let conn = self.create_database(&name)?;
        Ok((name, conn))
    }

    /// Runs SQL with `psql` against `db` and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, PgError> {
        let mut c = Command::new(self.bin_dir.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql);
        let out = run_checked(c, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Stops the server now (immediate shutdown) and deletes its directory.
    pub fn stop(&mut self) {
        if self.root.is_none() {
            return;
        }
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(&self.data_dir).args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let stopped = c.status().map(|s| s.success()).unwrap_or(false);
        if !stopped && self.pid != 0 && crate::pid_alive(self.pid) {
            let _ = crate::signal_pid(self.pid, nix::sys::signal::Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(root) = self.root.take() {
            let _ = root.close();
        }
        if let Some(mut g) = self.guardian.take() {
            let _ = g.kill();
            let _ = g.wait();
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_checked(mut c: Command, what: &str) -> Result<Output, PgError> {
    c.stdin(Stdio::null());
    let out = c.output().map_err(io(format!("running {what}")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(PgError::Command {
            what: what.to_string(),
            detail: format!(
                "{}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

/// Finds the server binaries: `$PG_BIN`, then the newest `/usr/lib/postgresql/*/bin`, then `PATH`.
pub fn find_bin_dir() -> Result<PathBuf, PgError> {
    let has = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).is_file());
    let mut searched = Vec::new();
    if let Ok(p) = std::env::var("PG_BIN") {
        let d = PathBuf::from(&p);
        if has(&d) {
            return Ok(d);
        }
        searched.push(format!("$PG_BIN={p}"));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    searched.push("/usr/lib/postgresql/*/bin".into());
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has(&d) {
                return Ok(d);
            }
        }
    }
    searched.push("$PATH".into());
    Err(PgError::NotInstalled { searched: searched.join(", ") })
}

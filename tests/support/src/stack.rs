//! The whole strangler stack as processes: two ephemeral PostgreSQL clusters (legacy, services),
//! the legacy monolith (migrated, seeded), cdc-sync pipelines (catalog forward, orders both ways),
//! the extracted services and the gateway. Used by `strangler-stack` (`make up`) with the demo
//! ports and by the end-to-end tests with free ports.
//!
//! Configuration comes from the repository's own files — `routes.toml` and `sync/*.toml` — with
//! only addresses rewritten when the ports differ from the demo ones, so the tests exercise the
//! same plan a user runs.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_http, ChildGuard, PgCluster};

/// Every port the stack listens on.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub gateway: u16,
    pub admin: u16,
    pub legacy: u16,
    pub catalog: u16,
    pub orders: u16,
    pub cdc_catalog: u16,
    pub cdc_orders: u16,
}

impl Ports {
    /// The demo ports from design.md (and routes.toml / sync/*.toml as committed).
    pub const DEMO: Ports = Ports {
        gateway: 8080,
        admin: 9901,
        legacy: 8081,
        catalog: 8091,
        orders: 8092,
        cdc_catalog: 9902,
        cdc_orders: 9903,
    };

    /// Free loopback ports, for tests running in parallel.
    pub fn free() -> Ports {
        Ports {
            gateway: free_port(),
            admin: free_port(),
            legacy: free_port(),
            catalog: free_port(),
            orders: free_port(),
            cdc_catalog: free_port(),
            cdc_orders: free_port(),
        }
    }

    fn rewrites(&self) -> Vec<(String, String)> {
        let d = Ports::DEMO;
        [
            (d.gateway, self.gateway),
            (d.admin, self.admin),
            (d.legacy, self.legacy),
            (d.catalog, self.catalog),
            (d.orders, self.orders),
            (d.cdc_catalog, self.cdc_catalog),
            (d.cdc_orders, self.cdc_orders),
        ]
        .into_iter()
        .map(|(a, b)| (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}")))
        .collect()
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Directory holding the built binaries (`legacy-monolith`, `catalog`, `orders`, `cdc-sync`,
    /// `strangler-gateway`).
    pub bin_dir: PathBuf,
    /// The repository root (for `routes.toml` and `sync/`).
    pub repo_dir: PathBuf,
    /// Logs, rewritten configs and the clusters go here.
    pub run_dir: PathBuf,
    pub ports: Ports,
    /// Extra flags for `legacy-monolith seed` (e.g. `--products 500`).
    pub seed_args: Vec<String>,
    /// Bearer token of the gateway's admin API.
    pub admin_token: String,
    /// The dry-run secret shared by the gateway and the extracted services, given to all three as
    /// `STRANGLER_SHADOW_SECRET` (routes.toml: `shadow_secret_env`). [`random_secret`] by default:
    /// every stack has its own.
    pub shadow_secret: String,
    /// Start cdc-sync and the extracted services (otherwise only legacy [+ gateway]).
    pub services: bool,
    /// Start the gateway.
    pub gateway: bool,
    /// Also serve HTTPS (and h2) on this port, with a certificate for `localhost` and 127.0.0.1
    /// made at start by a throwaway CA (`<run-dir>/tls/ca.pem`). Off in tests.
    pub https: Option<u16>,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl StackOptions {
    /// Defaults for a test: free ports, a small seed, everything started, run dir under `run_dir`.
    pub fn for_test(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: workspace_bin_dir(),
            repo_dir: repo_dir(),
            run_dir: run_dir.into(),
            ports: Ports::free(),
            seed_args: ["--products", "300", "--customers", "60", "--orders", "400"].map(String::from).to_vec(),
            admin_token: "test-admin-token".into(),
            shadow_secret: random_secret(),
            services: true,
            gateway: true,
            https: None,
            verbose: false,
        }
    }
}

/// The environment variable the gateway (routes.toml `shadow_secret_env`) and the extracted
/// services (strangler-kit) read the dry-run secret from.
pub const SHADOW_SECRET_ENV: &str = "STRANGLER_SHADOW_SECRET";

/// A fresh dry-run secret: 32 hex digits (128 bits) from the kernel's random source.
pub fn random_secret() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .unwrap_or_else(|e| panic!("reading /dev/urandom: {e}"));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Telemetry settings for the processes that emit request traces: the gateway and the extracted
/// services (catalog, orders). Unset fields leave those processes' inherited environment alone.
#[derive(Debug, Clone, Default)]
pub struct Observability {
    /// Base URL of an OTLP/HTTP receiver, passed as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// Log filter, passed as `RUST_LOG`.
    pub log_filter: Option<String>,
}

impl Observability {
    fn apply(&self, cmd: &mut Command) {
        if let Some(e) = &self.otlp_endpoint {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", e);
        }
        if let Some(f) = &self.log_filter {
            cmd.env("RUST_LOG", f);
        }
    }
}

/// The repository root (two levels above this crate's manifest).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// Where `cargo build` put the workspace's debug binaries (`$CARGO_TARGET_DIR` or `target/`),
/// overridable with `STRANGLER_BIN_DIR`.
pub fn workspace_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("STRANGLER_BIN_DIR") {
        return d.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_dir().join("target"));
    target.join("debug")
}

/// A running stack. Dropping it stops every process, then the clusters.
pub struct Stack {
    // Field order is drop order: processes first, then the databases they use.
    children: Vec<ChildGuard>,
    /// Cluster of the legacy database `legacy`.
    pub legacy_pg: PgCluster,
    /// Cluster of the services' databases `catalog` and `orders`.
    pub services_pg: PgCluster,
    pub opts: StackOptions,
    routes_path: PathBuf,
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

impl Stack {
    /// Starts everything asked for, in dependency order, waiting for each to be ready.
    pub fn start(opts: StackOptions) -> Result<Stack, String> {
        Self::start_observed(opts, Observability::default())
    }

    /// [`Stack::start`], with `obs` applied to the gateway and the extracted services.
    pub fn start_observed(opts: StackOptions, obs: Observability) -> Result<Stack, String> {
        std::fs::create_dir_all(opts.run_dir.join("logs")).map_err(|e| format!("creating run dir: {e}"))?;
        let verbose = opts.verbose;
        let say = move |m: &str| {
            if verbose {
                eprintln!("==> {m}");
            }
        };
        say("starting PostgreSQL clusters (legacy, services)");
        let legacy_pg = PgCluster::builder().base_dir(&opts.run_dir).start().map_err(|e| e.to_string())?;
        let services_pg = PgCluster::builder().base_dir(&opts.run_dir).start().map_err(|e| e.to_string())?;
        let routes_path = opts.run_dir.join("routes.toml");
        let mut stack = Stack { children: Vec::new(), legacy_pg, services_pg, opts, routes_path };
        let o = stack.opts.clone();

        let legacy_db = stack.legacy_pg.create_database("legacy").map_err(|e| e.to_string())?;
        say("legacy-monolith: migrate + seed");
        stack.run_once(
            "migrate",
            Command::new(stack.bin("legacy-monolith")?).args(["migrate", "--database-url", &legacy_db]),
        )?;
        stack.run_once(
            "seed",
            Command::new(stack.bin("legacy-monolith")?).args(["seed", "--database-url", &legacy_db]).args(&o.seed_args),
        )?;
        let listen = addr(o.ports.legacy).to_string();
        stack.spawn(
            "legacy-monolith",
            Command::new(stack.bin("legacy-monolith")?).args([
                "serve",
                "--listen",
                &listen,
                "--database-url",
                &legacy_db,
            ]),
            o.ports.legacy,
            "/health/ready",
        )?;

        if o.services {
            let catalog_db = stack.services_pg.create_database("catalog").map_err(|e| e.to_string())?;
            let orders_db = stack.services_pg.create_database("orders").map_err(|e| e.to_string())?;
            for (svc, db) in [("catalog", &catalog_db), ("orders", &orders_db)] {
                say(&format!("{svc}: migrate"));
                stack.run_once(
                    &format!("{svc}-migrate"),
                    Command::new(stack.bin(svc)?).args(["--migrate-only", "--database-url", db]),
                )?;
            }
            for (name, port) in [("catalog", o.ports.cdc_catalog), ("orders", o.ports.cdc_orders)] {
                say(&format!("cdc-sync {name}: snapshot, then stream"));
                let cfg = stack.rewrite_config(&format!("sync/{name}.toml"), &format!("sync-{name}.toml"))?;
                let mut cmd = Command::new(stack.bin("cdc-sync")?);
                cmd.arg("run").arg("--config").arg(&cfg);
                stack.with_db_env(&mut cmd);
                stack.spawn(&format!("cdc-sync-{name}"), &mut cmd, port, "/health/ready")?;
            }
            for (svc, db, port) in [("catalog", &catalog_db, o.ports.catalog), ("orders", &orders_db, o.ports.orders)] {
                let listen = addr(port).to_string();
                let mut cmd = Command::new(stack.bin(svc)?);
                cmd.args(["--listen", &listen, "--database-url", db]);
                // the stack's secret, not one a file inherited from our environment would override
                cmd.env(SHADOW_SECRET_ENV, &o.shadow_secret).env_remove("STRANGLER_SHADOW_SECRET_FILE");
                obs.apply(&mut cmd);
                stack.spawn(svc, &mut cmd, port, "/health/ready")?;
            }
        }

        if o.gateway {
            say("gateway");
            let routes = stack.rewrite_config("routes.toml", "routes.toml")?;
            if let Some(port) = o.https {
                let tls = crate::tls::self_signed(&o.run_dir.join("tls"))?;
                let mut text = std::fs::read_to_string(&routes).map_err(|e| e.to_string())?;
                text.push_str(&format!(
                    "\n# added by the local stack: HTTPS with a throwaway CA ({})\n[gateway.tls]\nlisten = \"127.0.0.1:{port}\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
                    tls.ca.display(),
                    tls.cert.display(),
                    tls.key.display()
                ));
                std::fs::write(&routes, text).map_err(|e| e.to_string())?;
            }
            let mut cmd = Command::new(stack.bin("strangler-gateway")?);
            cmd.arg("run").arg("--config").arg(&routes);
            cmd.arg("--upgrade-sock").arg(o.run_dir.join("gateway-upgrade.sock"));
            cmd.arg("--pid-file").arg(o.run_dir.join("gateway.pid"));
            if o.services {
                // the dashboard's Data sync view
                for (name, port) in [("catalog", o.ports.cdc_catalog), ("orders", o.ports.cdc_orders)] {
                    cmd.arg("--sync-status").arg(format!("{name}=http://127.0.0.1:{port}/status"));
                }
            }
            cmd.env("STRANGLER_ADMIN_TOKEN", &o.admin_token);
            cmd.env(SHADOW_SECRET_ENV, &o.shadow_secret);
            obs.apply(&mut cmd);
            stack.spawn("strangler-gateway", &mut cmd, o.ports.admin, "/health/ready")?;
            wait_for_http(addr(o.ports.gateway), "/health/live", Duration::from_secs(30))
                .or_else(|_| crate::wait_for_tcp(addr(o.ports.gateway), Duration::from_secs(30)))?;
        }
        Ok(stack)
    }

    /// Environment for cdc-sync: the database URLs its configs name.
    pub fn with_db_env(&self, cmd: &mut Command) {
        cmd.env("LEGACY_DATABASE_URL", self.legacy_pg.connection_string("legacy"))
            .env("CATALOG_DATABASE_URL", self.services_pg.connection_string("catalog"))
            .env("ORDERS_DATABASE_URL", self.services_pg.connection_string("orders"));
    }

    /// The value of `x-strangler-shadow` that makes this stack's services run a request as a dry
    /// run (what the gateway sends on mirrored writes).
    pub fn dry_run_header(&self) -> String {
        format!("1; secret={}", self.opts.shadow_secret)
    }

    /// The live routes.toml the gateway watches (edit it to move traffic).
    pub fn routes_path(&self) -> &Path {
        &self.routes_path
    }

    /// The live sync config of pipeline `name` (`catalog` or `orders`).
    pub fn sync_path(&self, name: &str) -> PathBuf {
        self.opts.run_dir.join(format!("sync-{name}.toml"))
    }

    /// The HTTPS address, when the stack serves HTTPS.
    pub fn gateway_https_url(&self) -> Option<String> {
        self.opts.https.map(|p| format!("https://localhost:{p}"))
    }
    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.ports.gateway)
    }
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.ports.admin)
    }
    pub fn legacy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.ports.legacy)
    }
    pub fn catalog_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.ports.catalog)
    }
    pub fn orders_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.opts.ports.orders)
    }

    /// `cdc-sync verify` of pipeline `name`: Ok(true) equal, Ok(false) different (output in the
    /// error log), Err on failure to run.
    pub fn cdc_verify(&self, name: &str) -> Result<(bool, String), String> {
        let mut cmd = Command::new(self.bin("cdc-sync")?);
        cmd.arg("verify").arg("--config").arg(self.sync_path(name));
        self.with_db_env(&mut cmd);
        let out = cmd.output().map_err(|e| format!("running cdc-sync verify: {e}"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        match out.status.code() {
            Some(0) => Ok((true, text)),
            Some(1) => Ok((false, text)),
            _ => Err(format!("cdc-sync verify {name} failed ({}): {text}", out.status)),
        }
    }

    /// Stops component `name` at once (SIGKILL), as a crash would; false when there is none.
    pub fn kill(&mut self, name: &str) -> bool {
        match self.children.iter_mut().find(|c| c.name() == name) {
            Some(c) => {
                c.kill_now();
                true
            }
            None => false,
        }
    }

    /// Returns the name of a component that exited on its own, if any.
    pub fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|c| matches!(c.try_wait(), Ok(Some(_))).then(|| c.name().to_string()))
    }

    /// Path of a component's log file.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.opts.run_dir.join("logs").join(format!("{name}.log"))
    }

    fn bin(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.opts.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} not found; build the workspace first (`cargo build --workspace --bins`)", p.display()))
        }
    }

    /// Copies a repository config into the run dir, pointing its addresses at our ports.
    fn rewrite_config(&self, from: &str, to: &str) -> Result<PathBuf, String> {
        let src = self.opts.repo_dir.join(from);
        let mut text = std::fs::read_to_string(&src).map_err(|e| format!("reading {}: {e}", src.display()))?;
        // Rewrite via placeholders so a port swap (a→b, b→a) cannot chain.
        let rewrites = self.opts.ports.rewrites();
        for (i, (a, _)) in rewrites.iter().enumerate() {
            text = text.replace(a.as_str(), &format!("@@PORT{i}@@"));
        }
        for (i, (_, b)) in rewrites.iter().enumerate() {
            text = text.replace(&format!("@@PORT{i}@@"), b);
        }
        let dst = self.opts.run_dir.join(to);
        std::fs::write(&dst, text).map_err(|e| format!("writing {}: {e}", dst.display()))?;
        Ok(dst)
    }

    fn log(&self, name: &str) -> Result<(File, File), String> {
        let p = self.log_path(name);
        let f = File::create(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        let g = f.try_clone().map_err(|e| e.to_string())?;
        Ok((f, g))
    }

    fn run_once(&self, name: &str, cmd: &mut Command) -> Result<(), String> {
        let (out, err) = self.log(name)?;
        let status = cmd.stdin(Stdio::null()).stdout(out).stderr(err).status().map_err(|e| format!("{name}: {e}"))?;
        if !status.success() {
            let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
            return Err(format!("{name} failed ({status}):\n{}", tail(&log, 40)));
        }
        Ok(())
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command, port: u16, ready: &str) -> Result<(), String> {
        let (out, err) = self.log(name)?;
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().map_err(|e| format!("{name}: {e}"))?;
        let mut guard = ChildGuard::new(name, child);
        // Poll readiness in short rounds so a process that exits early is reported at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            let exited = guard.try_wait().ok().flatten();
            let last = match exited {
                Some(status) => format!("exited with {status}"),
                None => match wait_for_http(addr(port), ready, Duration::from_millis(500)) {
                    Ok(()) => break,
                    Err(e) => e,
                },
            };
            if exited.is_some() || std::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
                return Err(format!("{name} did not become ready ({last}):\n{}", tail(&log, 40)));
            }
        }
        self.children.push(guard);
        Ok(())
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

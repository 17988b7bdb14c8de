//! `strangler-stack`: runs the whole local stack in the foreground and prints where to look.
//!
//! An ephemeral PostgreSQL cluster (socket and data in the stack's run directory), the legacy
//! monolith (migrated and seeded), and every other component whose binary and config exist.
//! Ctrl-C (or SIGTERM) stops everything and deletes the cluster.
//!
//! Usually started through `make up`, which builds the release binaries first.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strangler_support::{wait_for_http, ChildGuard, PgCluster};

const HELP: &str = "\
strangler-stack: run the local strangler stack (ephemeral Postgres + monolith + services + gateway)

USAGE: strangler-stack [--bin-dir DIR] [--run-dir DIR] [--products N] [--customers N] [--orders N]

  --bin-dir DIR   where the release binaries are (default: this binary's directory)
  --run-dir DIR   logs and the Postgres cluster go here (default: ./.stack)
  --products N    seed size (defaults: the monolith's own: 10k products, 2k customers, 20k orders)
  --customers N
  --orders N

Ctrl-C stops every process and deletes the cluster.";

struct Options {
    bin_dir: PathBuf,
    run_dir: PathBuf,
    seed_args: Vec<String>,
}

fn parse_args() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Options {
        bin_dir: exe.parent().map(Path::to_path_buf).unwrap_or_default(),
        run_dir: PathBuf::from(".stack"),
        seed_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            "--bin-dir" => o.bin_dir = value()?.into(),
            "--run-dir" => o.run_dir = value()?.into(),
            "--products" | "--customers" | "--orders" => {
                let v = value()?;
                v.parse::<u64>().map_err(|_| format!("{a} wants a number, got {v:?}"))?;
                o.seed_args.extend([a.clone(), v]);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{HELP}")),
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(opts) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

struct Stack {
    run_dir: PathBuf,
    bin_dir: PathBuf,
    // Declared before the cluster so processes stop before the database does.
    children: Vec<ChildGuard>,
}

impl Stack {
    fn log(&self, name: &str) -> Result<File, String> {
        let p = self.run_dir.join("logs").join(format!("{name}.log"));
        File::create(&p).map_err(|e| format!("creating {}: {e}", p.display()))
    }

    fn bin(&self, name: &str) -> Result<PathBuf, String> {
        let p = self.bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} not found; build with `cargo build --release --workspace`", p.display()))
        }
    }

    /// Runs a one-shot command to completion, logging into `logs/<name>.log`.
    fn run_once(&self, name: &str, mut cmd: Command) -> Result<(), String> {
        let log = self.log(name)?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let status = cmd
            .stdout(log)
            .stderr(err)
            .status()
            .map_err(|e| format!("starting {name}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "{name} failed ({status}); see {}",
                self.run_dir.join("logs").join(format!("{name}.log")).display()
            ));
        }
        Ok(())
    }

    /// Spawns a long-running process and waits until `GET ready_path` answers 2xx.
    fn spawn(&mut self, name: &str, mut cmd: Command, ready: SocketAddr, path: &str) -> Result<(), String> {
        let log = self.log(name)?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let mut guard = ChildGuard::new(name, child);
        eprintln!("    {name}: waiting for http://{ready}{path}");
        if let Err(e) = wait_for_http(ready, path, Duration::from_secs(60)) {
            let exited = guard.try_wait().ok().flatten();
            return Err(format!(
                "{name} did not become ready ({e}){}; see {}",
                exited.map(|s| format!(", exited with {s}")).unwrap_or_default(),
                self.run_dir.join("logs").join(format!("{name}.log")).display()
            ));
        }
        self.children.push(guard);
        Ok(())
    }
}

fn run(opts: Options) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;

    std::fs::create_dir_all(opts.run_dir.join("logs"))
        .map_err(|e| format!("creating {}: {e}", opts.run_dir.display()))?;
    let run_dir = std::fs::canonicalize(&opts.run_dir).map_err(|e| e.to_string())?;

    eprintln!("==> starting PostgreSQL (ephemeral, under {})", run_dir.display());
    let pg = PgCluster::builder().base_dir(&run_dir).start().map_err(|e| e.to_string())?;
    let mut stack = Stack { run_dir: run_dir.clone(), bin_dir: opts.bin_dir.clone(), children: Vec::new() };

    // --- legacy monolith -------------------------------------------------------------------
    let legacy_db = pg.create_database("legacy").map_err(|e| e.to_string())?;
    let mono = stack.bin("legacy-monolith")?;
    eprintln!("==> legacy-monolith: migrating and seeding (log: .stack/logs/seed.log)");
    let mut migrate = Command::new(&mono);
    migrate.args(["migrate", "--database-url", &legacy_db]);
    stack.run_once("migrate", migrate)?;
    let mut seed = Command::new(&mono);
    seed.args(["seed", "--database-url", &legacy_db]).args(&opts.seed_args);
    stack.run_once("seed", seed)?;
    let mut serve = Command::new(&mono);
    serve.args(["serve", "--listen", "127.0.0.1:8081", "--database-url", &legacy_db]);
    stack.spawn("legacy-monolith", serve, ([127, 0, 0, 1], 8081).into(), "/health/ready")?;

    println!();
    println!("strangler local stack is up");
    println!("  legacy monolith   http://127.0.0.1:8081   (try: curl http://127.0.0.1:8081/api/products/1)");
    println!("  PostgreSQL        {}   (socket dir {})", pg.url("legacy"), pg.socket_dir().display());
    println!("  logs              {}/logs/", run_dir.display());
    println!();
    println!("Ctrl-C stops everything and deletes the cluster.");

    // Wait for Ctrl-C, or for a component to die on its own.
    loop {
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            eprintln!("\n==> stopping");
            break;
        }
        for c in &mut stack.children {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(format!(
                    "{} exited unexpectedly ({status}); see {}/logs/{}.log",
                    c.name(),
                    run_dir.display(),
                    c.name()
                ));
            }
        }
    }
    drop(stack);
    drop(pg);
    Ok(())
}

//! `strangler-stack`: runs the whole local stack in the foreground and prints where to look.
//!
//! Two ephemeral PostgreSQL clusters (legacy, services) under the run directory, the legacy
//! monolith (migrated and seeded), cdc-sync (catalog forward, orders both ways), the extracted
//! catalog and orders services, and the gateway with the repository's `routes.toml`.
//! Ctrl-C (or SIGTERM) stops everything and deletes the clusters.
//!
//! Usually started through `make up`, which builds the release binaries first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strangler_support::stack::{random_secret, repo_dir, SHADOW_SECRET_ENV};
use strangler_support::{Ports, Stack, StackOptions};

const HELP: &str = "\
strangler-stack: run the local strangler stack
  (ephemeral Postgres + legacy monolith + cdc-sync + catalog + orders + gateway)

USAGE: strangler-stack [OPTIONS]

  --bin-dir DIR     where the binaries are (default: this binary's directory)
  --run-dir DIR     logs, live configs and the Postgres clusters go here (default: ./.stack)
  --legacy-only     start only Postgres and the legacy monolith
  --no-https        do not serve HTTPS on 8443 (by default a throwaway CA signs a certificate
                    for localhost, written to <run-dir>/tls/)
  --products N      seed size (defaults: the monolith's own: 10k products, 2k customers,
  --customers N       20k orders)
  --orders N

The gateway reads <run-dir>/routes.toml (a copy of the repository's routes.toml): edit it to move
traffic; it is reloaded on save. Ctrl-C stops every process and deletes the clusters.

The gateway and the services share a dry-run secret ($STRANGLER_SHADOW_SECRET, or a random one
per run), written to <run-dir>/shadow-secret (mode 0600).";

fn parse_args() -> Result<StackOptions, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = StackOptions {
        bin_dir: exe.parent().map(Path::to_path_buf).unwrap_or_default(),
        repo_dir: std::env::current_dir().map_err(|e| e.to_string())?,
        run_dir: PathBuf::from(".stack"),
        ports: Ports::DEMO,
        seed_args: Vec::new(),
        admin_token: std::env::var("STRANGLER_ADMIN_TOKEN").unwrap_or_else(|_| "dev-admin-token".into()),
        shadow_secret: std::env::var(SHADOW_SECRET_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(random_secret),
        services: true,
        gateway: true,
        https: Some(8443),
        verbose: true,
    };
    if !o.repo_dir.join("routes.toml").is_file() {
        o.repo_dir = repo_dir();
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            "--bin-dir" => o.bin_dir = value()?.into(),
            "--no-https" => o.https = None,
            "--run-dir" => o.run_dir = value()?.into(),
            "--legacy-only" => {
                o.services = false;
                o.gateway = false;
            }
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

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    writeln!(f, "{text}").map_err(|e| format!("writing {}: {e}", path.display()))
}

fn run(mut opts: StackOptions) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    std::fs::create_dir_all(&opts.run_dir).map_err(|e| format!("creating {}: {e}", opts.run_dir.display()))?;
    opts.run_dir = std::fs::canonicalize(&opts.run_dir).map_err(|e| e.to_string())?;
    let token = opts.admin_token.clone();
    let secret_file = opts.run_dir.join("shadow-secret");
    write_private(&secret_file, &opts.shadow_secret)?;
    let mut stack = Stack::start(opts)?;
    let run = stack.opts.run_dir.clone();

    println!();
    println!("strangler local stack is up");
    if stack.opts.gateway {
        println!("  gateway         {}        <- clients talk to this", stack.gateway_url());
        if let Some(https) = stack.gateway_https_url() {
            println!(
                "  gateway HTTPS   {https}       (HTTP/2 too; curl --cacert {}/tls/ca.pem)",
                stack.opts.run_dir.display()
            );
        }
        println!("  gateway admin   {}        (token: {token})", stack.admin_url());
        println!("  dashboard       {}/ui     (routes, shadow diffs, data sync, config)", stack.admin_url());
    }
    println!("  legacy monolith {}", stack.legacy_url());
    if stack.opts.services {
        println!("  catalog service {}", stack.catalog_url());
        println!("  orders service  {}", stack.orders_url());
        println!(
            "  cdc-sync status http://127.0.0.1:{}/status (catalog), http://127.0.0.1:{}/status (orders)",
            stack.opts.ports.cdc_catalog, stack.opts.ports.cdc_orders
        );
    }
    println!(
        "  PostgreSQL      {} (legacy), {} (catalog, orders)",
        stack.legacy_pg.url("legacy"),
        stack.services_pg.url("catalog")
    );
    println!("  logs            {}/logs/", run.display());
    if stack.opts.services {
        println!(
            "  dry-run secret  {} (x-strangler-shadow: 1; secret=<it> makes a service roll back)",
            secret_file.display()
        );
    }
    println!();
    if stack.opts.gateway {
        println!("Try this:");
        println!("  curl -s {}/api/products/1", stack.gateway_url());
        println!(
            "  sed -i '0,/stage = \"legacy\"/s//stage = \"shadow\"/' {}   # shadow the products route",
            stack.routes_path().display()
        );
        println!("  curl -s -H 'authorization: Bearer {token}' {}/admin/routes   # (then the shadow report: strangler-gateway shadow report)", stack.admin_url());
        println!();
    }
    println!("Ctrl-C stops everything and deletes the clusters.");

    loop {
        if rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            eprintln!("\n==> stopping");
            break;
        }
        if let Some(name) = stack.exited() {
            return Err(format!("{name} exited unexpectedly; see {}", stack.log_path(&name).display()));
        }
    }
    drop(stack);
    Ok(())
}

//! `strangler-gateway`: loads and validates routes.toml, then runs the proxy and the admin port.
//! Exit code 2 on a bad config, before anything starts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use strangler_gateway::access_log::AccessLog;
use strangler_gateway::admin::{self, AdminState};
use strangler_gateway::background;
use strangler_gateway::config::{load_str_offline, load_str_with};
use strangler_gateway::edge::{self, EdgeApp};
use strangler_gateway::limits::LimitService;
use strangler_gateway::proxy::GatewayProxy;
use strangler_gateway::reload::ConfigStore;
use strangler_gateway::rollout::cli as rollout_cli;
use strangler_gateway::rollout::controller::Controller;
use strangler_gateway::rollout::pg_store::{self, PgStore};
use strangler_gateway::rollout::store::{FileStore, MemoryStore, RolloutStore, StoreSettings};
use strangler_gateway::shadow::ShadowService;
use strangler_gateway::telemetry;
use strangler_gateway::tls::SniResolver;
use strangler_gateway::ui::{Dashboard, SyncSource};

/// mimalloc: the request path allocates a few dozen small objects (Pingora's header maps, futures,
/// buffers); glibc malloc spent about a fifth of the gateway's user-space instructions on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Strangler-fig gateway: a Pingora proxy that routes each request to the legacy monolith or an
/// extracted service according to routes.toml, reloaded without dropping requests.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a routes.toml without starting; print the effective route table.
    /// Exits 2 listing every error as file:line:col: error: ... (hint: ...).
    Check {
        /// Path to routes.toml.
        file: PathBuf,
        /// Print the effective table as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Do not resolve endpoint host names nor read secrets (check a file meant for another
        /// environment, e.g. a Kubernetes ConfigMap naming in-cluster Services and Secrets);
        /// names are shown as 0.0.0.0:PORT.
        #[arg(long)]
        no_resolve: bool,
    },
    /// Run the gateway. Reloads routes.toml on file change, SIGHUP or POST /admin/reload.
    /// SIGTERM drains in-flight requests; SIGQUIT hands the listener to a process started with
    /// --upgrade (zero-downtime binary upgrade).
    Run {
        /// Path to routes.toml.
        #[arg(long, short = 'c', default_value = "routes.toml")]
        config: PathBuf,
        /// Take over the listening socket from a running instance (after it got SIGQUIT).
        #[arg(long)]
        upgrade: bool,
        /// Unix socket used to hand over listeners during an upgrade.
        #[arg(long, default_value = "/tmp/strangler-gateway-upgrade.sock")]
        upgrade_sock: String,
        /// Pid file (needed by the upgrade flow).
        #[arg(long, default_value = "/tmp/strangler-gateway.pid")]
        pid_file: String,
        /// Do not watch the config file (SIGHUP and the admin API still reload).
        #[arg(long)]
        no_watch: bool,
        /// A cdc-sync status endpoint shown in the dashboard's Data sync view, `[NAME=]URL`
        /// (e.g. `catalog=http://127.0.0.1:9902/status`). Repeat it for each pipeline.
        #[arg(long = "sync-status", value_name = "[NAME=]URL", value_parser = SyncSource::parse)]
        sync_status: Vec<SyncSource>,
    },
    /// Progressive rollouts of a running gateway: status, and operators' actions.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The audit trail of a running gateway: every change of a route's stage or weight, who made
    /// it and why, with the gate values.
    History {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Newest events shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the JSON from the admin API.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// What reloading FILE would change in a running gateway, route by route (stage and weight
    /// as they would be served, running rollouts applied). Exits 0 when nothing would change, 1
    /// when something would, 2 when the file is invalid or the gateway cannot be asked.
    Diff {
        /// The routes.toml to compare with what is serving.
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Shadow traffic reports.
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
    },
}

/// Where the running gateway's admin API is.
#[derive(clap::Args)]
struct AdminArgs {
    /// Base URL of the gateway's admin port.
    #[arg(long, default_value = "http://127.0.0.1:9901", global = true)]
    admin: String,
    /// Admin bearer token.
    #[arg(long, env = "STRANGLER_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Where each rollout stands (or one route's): step, time left, last analysis per gate.
    Status {
        #[arg(long)]
        route: Option<String>,
        /// Print the JSON from the admin API.
        #[arg(long)]
        json: bool,
    },
    /// Stop automatic promotion and rollback where the route stands.
    Pause {
        #[arg(long)]
        route: String,
    },
    /// Continue a paused rollout.
    Resume {
        #[arg(long)]
        route: String,
    },
    /// Skip the rest of the current step.
    Promote {
        #[arg(long)]
        route: String,
    },
    /// Send the route back to legacy now, and pause it.
    Abort {
        #[arg(long)]
        route: String,
    },
}

#[derive(Subcommand)]
enum ShadowCommand {
    /// Print the shadow report of a running gateway (from its admin API): mirrored, compared,
    /// match rate, drops, errors, latency per side, top differing fields, learnt noise.
    Report {
        /// Base URL of the gateway's admin port.
        #[arg(long, default_value = "http://127.0.0.1:9901")]
        admin: String,
        /// Admin bearer token.
        #[arg(long, env = "STRANGLER_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the JSON from the admin API instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this route (adds its sample mismatches).
        #[arg(long)]
        route: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file, json, no_resolve } => check(&file, json, no_resolve),
        Command::Run { config, upgrade, upgrade_sock, pid_file, no_watch, sync_status } => {
            run(config, upgrade, upgrade_sock, pid_file, no_watch, sync_status)
        }
        Command::Rollout { command, admin } => rollout(command, &admin),
        Command::History { route, limit, json, admin } => {
            let token = admin.token.as_deref();
            print_or_fail(
                rollout_cli::history(&admin.admin, token, route.as_deref(), limit),
                json,
                rollout_cli::render_history,
            )
        }
        Command::Diff { file, admin } => match rollout_cli::diff(&admin.admin, admin.token.as_deref(), &file) {
            Ok(lines) if lines.is_empty() => {
                println!("{}: no change to what is serving", file.display());
                ExitCode::SUCCESS
            }
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Shadow { command: ShadowCommand::Report { admin, token, json, route } } => {
            shadow_report(&admin, token.as_deref(), json, route.as_deref())
        }
    }
}

fn rollout(command: RolloutCommand, admin: &AdminArgs) -> ExitCode {
    let (base, token) = (admin.admin.as_str(), admin.token.as_deref());
    let (route, action) = match command {
        RolloutCommand::Status { route, json } => {
            return print_or_fail(rollout_cli::status(base, token, route.as_deref()), json, rollout_cli::render_status)
        }
        RolloutCommand::Pause { route } => (route, "pause"),
        RolloutCommand::Resume { route } => (route, "resume"),
        RolloutCommand::Promote { route } => (route, "promote"),
        RolloutCommand::Abort { route } => (route, "abort"),
    };
    print_or_fail(rollout_cli::act(base, token, &route, action), false, rollout_cli::render_status)
}

/// Prints `result` as JSON or through `render`; exit 1 with the error otherwise.
fn print_or_fail(
    result: anyhow::Result<serde_json::Value>,
    json: bool,
    render: fn(&serde_json::Value) -> String,
) -> ExitCode {
    match result {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", render(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn shadow_report(admin: &str, token: Option<&str>, json: bool, route: Option<&str>) -> ExitCode {
    match strangler_gateway::shadow::cli::fetch(admin, token, route) {
        Ok(v) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", strangler_gateway::shadow::report::render_table(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(file: &PathBuf, json: bool, no_resolve: bool) -> ExitCode {
    let display = file.display().to_string();
    let src = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{display}:1:1: error: cannot read the file: {e} (hint: check the path)");
            return ExitCode::from(2);
        }
    };
    let loaded = if no_resolve {
        load_str_offline(&display, &src)
    } else {
        load_str_with(&display, &src, None, &strangler_gateway::config::system_resolve)
    };
    match loaded {
        Ok(table) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&table.to_json()).unwrap_or_default());
            } else {
                print!("{}", table.to_text());
                let note = if no_resolve { "; host names not resolved (--no-resolve)" } else { "" };
                println!("{display}: OK ({} routes, {} upstreams{note})", table.routes.len(), table.upstreams.len());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            eprintln!("{display}: {} error(s)", err.issues.len());
            ExitCode::from(2)
        }
    }
}

/// The rollout controller, with its state from its store (routes then serve where their
/// rollouts stood before a restart): a file beside routes.toml, or PostgreSQL shared by several
/// replicas. Without a writable state directory the file store keeps state in memory and says so.
fn start_rollouts(
    config: &std::path::Path,
    settings: &strangler_gateway::table::GatewaySettings,
    store: &Arc<ConfigStore>,
    shadow: &Arc<ShadowService>,
) -> anyhow::Result<Arc<Controller>> {
    let dir = settings.rollout_state_dir.clone().unwrap_or_else(|| {
        config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).join(".strangler")
    });
    let state: Box<dyn RolloutStore> = match &settings.rollout_store {
        StoreSettings::Postgres { url, env } => Box::new(
            PgStore::open(url, pg_store::replica_id(), settings.admin_listen.to_string())
                .map_err(|e| anyhow::anyhow!("rollout store (${env}): {e}"))?,
        ),
        StoreSettings::File => match FileStore::open(&dir) {
            Ok(s) => Box::new(s),
            Err(e) => {
                tracing::error!(
                    "rollout state cannot be kept in {} ({e}); keeping it in memory (lost at restart)",
                    dir.display()
                );
                Box::new(MemoryStore::default())
            }
        },
    };
    let overlay = Controller::load_overlay(&*state);
    if !overlay.is_empty() {
        if let Err(e) = store.set_overlay(overlay) {
            tracing::error!("cannot apply the saved rollout positions:\n{e}");
        }
    }
    Ok(Controller::new(store.clone(), shadow.clone(), state))
}

fn run(
    config: PathBuf,
    upgrade: bool,
    upgrade_sock: String,
    pid_file: String,
    no_watch: bool,
    sync_status: Vec<SyncSource>,
) -> ExitCode {
    telemetry::init_logging();
    let store = match ConfigStore::open(&config) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let table = store.current();
    let settings = table.settings.clone();
    drop(table);
    let shadow = match ShadowService::start(&settings.shadow) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start shadow traffic (shadow_dir {:?}): {e}", settings.shadow.dir);
            return ExitCode::from(1);
        }
    };
    if let Some(url) = telemetry::otlp_traces_url(settings.otlp_endpoint.as_deref(), |k| std::env::var(k).ok()) {
        match telemetry::start_otlp_export(&url) {
            Ok(()) => tracing::info!("exporting request spans over OTLP/HTTP to {url}"),
            Err(e) => tracing::error!("OTLP export is off: {e:#}"),
        }
    }
    // read from the serving config at each request: a reload can rotate it
    let token = strangler_gateway::ui::auth::AdminToken::new(store.clone());
    if !token.required() {
        tracing::warn!("no admin token configured: /metrics and /admin/* are open on {}", settings.admin_listen);
    }
    let access_log = match settings.access_log.as_ref().map(|a| AccessLog::start(&a.path)).transpose() {
        Ok(log) => log,
        Err(e) => {
            eprintln!("cannot open the access log: {e}");
            return ExitCode::from(1);
        }
    };
    let limits = match LimitService::start(settings.redis.clone()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot start the rate limiter: {e}");
            return ExitCode::from(1);
        }
    };
    let rollouts = match start_rollouts(&config, &settings, &store, &shadow) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the rollouts: {e:#}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = background::spawn(store.clone(), Some(rollouts.clone())) {
        eprintln!("cannot start the background tasks (SIGHUP, health checks, DNS refresh): {e}");
        return ExitCode::from(1);
    }
    let ui = Dashboard::new(store.clone(), shadow.clone(), token.clone(), sync_status, Some(rollouts.clone()));
    let admin_state = AdminState { store: store.clone(), shadow: shadow.clone(), rollouts: Some(rollouts), token, ui };
    if upgrade {
        // the old process still holds the admin port until it has drained: take it when free
        let addr = settings.admin_listen;
        std::thread::spawn(move || {
            for _ in 0..1200 {
                if admin::spawn(addr, admin_state.clone()).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            tracing::error!("admin port {addr} never became free");
        });
    } else if let Err(e) = admin::spawn(settings.admin_listen, admin_state) {
        eprintln!("cannot start the admin port on {}: {e}", settings.admin_listen);
        return ExitCode::from(1);
    }
    if !no_watch {
        if let Err(e) = store.watch(Duration::from_millis(150)) {
            tracing::warn!("cannot watch {}: {e}; use SIGHUP or POST /admin/reload", config.display());
        }
    }

    let opt = pingora::server::configuration::Opt { upgrade, ..Default::default() };
    let conf = pingora::server::configuration::ServerConf {
        threads: settings.threads,
        work_stealing: false,
        upgrade_sock,
        pid_file,
        grace_period_seconds: Some(settings.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout.as_secs().max(1)),
        upstream_keepalive_pool_size: 512,
        max_retries: 8,
        // Pingora wraps every upstream read and write that has a timeout (the gateway sets them
        // all: the route's deadline, `read_timeout`, the pool's `idle_timeout`) in a timer of its
        // own wheel unless the timeout exceeds this threshold (default 900 s). A timer there costs
        // more than a tokio one: a boxed future, a lookup in a BTreeMap of 10 ms slots that
        // Pingora's clock thread also locks, two `Arc`s and a `Notify` waiter list. Timeouts of
        // a second or more use tokio's wheel instead: the same deadlines, less work per request
        // (docs/perf.md, issue 16 §1).
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy(
        &server.configuration,
        GatewayProxy { store: store.clone(), shadow, access_log, limits },
    );
    if settings.h2c {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        proxy.server_options = Some(options);
    }
    // The edge checks (per-client connection cap, request head deadline) wrap Pingora's app.
    let mut service =
        pingora::services::listening::Service::new("strangler-gateway".to_string(), EdgeApp::new(proxy, store.clone()));
    service.add_listener(edge::plain_listener(&settings.listen.to_string()));
    if let Some(tls) = &settings.tls {
        // The resolver reads the serving table at each handshake: certificates reload with it.
        let mut tls_settings = match pingora::listeners::tls::TlsSettings::intermediate("", "") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot set up TLS on {}: {e}", tls.listen);
                return ExitCode::from(1);
            }
        };
        tls_settings.set_cert_resolver(Arc::new(SniResolver::new(store.clone())));
        if tls.http2 {
            tls_settings.enable_h2();
        }
        service.add_tls_with_settings(&tls.listen.to_string(), None, tls_settings);
    }
    server.add_service(service);
    let https = settings.tls.as_ref().map(|t| t.listen.to_string()).unwrap_or_else(|| "-".into());
    tracing::info!(listen = %settings.listen, https = %https, admin = %settings.admin_listen, version = %store.current().version, "gateway starting");
    server.run_forever()
}

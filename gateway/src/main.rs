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
use strangler_gateway::limits::LimitService;
use strangler_gateway::proxy::GatewayProxy;
use strangler_gateway::reload::ConfigStore;
use strangler_gateway::shadow::ShadowService;
use strangler_gateway::telemetry;
use strangler_gateway::tls::SniResolver;

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
    },
    /// Shadow traffic reports.
    Shadow {
        #[command(subcommand)]
        command: ShadowCommand,
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
        Command::Run { config, upgrade, upgrade_sock, pid_file, no_watch } => {
            run(config, upgrade, upgrade_sock, pid_file, no_watch)
        }
        Command::Shadow { command: ShadowCommand::Report { admin, token, json, route } } => {
            shadow_report(&admin, token.as_deref(), json, route.as_deref())
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

fn run(config: PathBuf, upgrade: bool, upgrade_sock: String, pid_file: String, no_watch: bool) -> ExitCode {
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
    let token: Option<Arc<str>> = settings.admin_token.as_deref().map(Arc::from);
    if token.is_none() {
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
    if let Err(e) = background::spawn(store.clone()) {
        eprintln!("cannot start the background tasks (SIGHUP, health checks, DNS refresh): {e}");
        return ExitCode::from(1);
    }
    let admin_state = AdminState { store: store.clone(), shadow: shadow.clone(), token };
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
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        GatewayProxy { store: store.clone(), shadow, access_log, limits },
        "strangler-gateway",
    );
    service.add_tcp(&settings.listen.to_string());
    if settings.h2c {
        if let Some(app) = service.app_logic_mut() {
            let mut options = pingora::apps::HttpServerOptions::default();
            options.h2c = true;
            app.server_options = Some(options);
        }
    }
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

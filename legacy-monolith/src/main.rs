//! `legacy-monolith`: serve the shop, migrate its schema, or seed it with sample data.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use legacy_monolith::{app, db, migrate, seed, AppState};

/// The legacy e-commerce monolith that strangler retires route by route.
///
/// One PostgreSQL schema (customers, addresses, categories, products, inventory, orders,
/// order_items, payments, notifications, inventory_movements) behind a JSON HTTP API.
/// Every subcommand first applies the embedded schema migrations (idempotent).
#[derive(Debug, Parser)]
#[command(name = "legacy-monolith", version, about, long_about)]
struct Cli {
    /// PostgreSQL connection string: libpq key/value ("host=127.0.0.1 port=5432 user=postgres
    /// dbname=shop") or URL ("postgres://postgres@127.0.0.1:5432/shop"). TLS as libpq: sslmode
    /// (disable, prefer [default], require, verify-ca, verify-full), sslrootcert, sslcert, sslkey.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Log format on stderr. The level comes from RUST_LOG (default "info"; per-request logs
    /// are at debug).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// How long to keep retrying the first database connection at startup.
    #[arg(long, env = "DB_WAIT_SECS", default_value_t = 30, global = true)]
    db_wait_secs: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations, then serve the HTTP API until SIGTERM or Ctrl-C (graceful: in-flight
    /// requests finish).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Maximum database connections in the pool.
        #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
        pool_size: usize,
    },
    /// Apply pending schema migrations and exit.
    Migrate,
    /// Apply migrations, then fill an empty database with deterministic sample data (binary
    /// COPY, one transaction). Refuses a database that already holds shop data unless --force.
    Seed {
        /// Number of products (each gets an inventory row).
        #[arg(long, default_value_t = 10_000)]
        products: u64,
        /// Number of customers (each gets one or two addresses).
        #[arg(long, default_value_t = 2_000)]
        customers: u64,
        /// Number of orders (1-5 items each, with payments and notifications).
        #[arg(long, default_value_t = 20_000)]
        orders: u64,
        /// Number of categories (a fifth are top-level departments).
        #[arg(long, default_value_t = 30)]
        categories: u64,
        /// Seed of the random generator: the same value always produces the same data.
        #[arg(long, default_value_t = 42)]
        seed_value: u64,
        /// Empty the shop's tables first if they hold data.
        #[arg(long)]
        force: bool,
        /// Do not print progress to stderr.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // Bad configuration exits with 2 before any runtime starts.
    let Some(url) = cli.database_url.clone() else {
        eprintln!("error: no database given; pass --database-url or set DATABASE_URL");
        return ExitCode::from(2);
    };
    if let Err(e) = db::parse_config(&url) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Connects, retrying while the server is not up yet (e.g. started together with us).
async fn connect_with_retry(url: &str, wait: Duration) -> anyhow::Result<tokio_postgres::Client> {
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        match db::connect(url).await {
            Ok(c) => return Ok(c),
            // a refused certificate, login or TLS does not pass by waiting
            Err(e) if !e.is_permanent() && Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "database not reachable yet, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e).context("connecting to the database"),
        }
    }
}

async fn migrate_db(url: &str, wait: Duration) -> anyhow::Result<tokio_postgres::Client> {
    let mut client = connect_with_retry(url, wait).await?;
    let report = migrate::run(&mut client).await.context("migrating the schema")?;
    tracing::info!(
        applied = ?report.applied,
        already_applied = report.already_applied.len(),
        "schema up to date"
    );
    Ok(client)
}

async fn run(cli: Cli, url: String) -> anyhow::Result<()> {
    let wait = Duration::from_secs(cli.db_wait_secs);
    match cli.command {
        Command::Migrate => {
            migrate_db(&url, wait).await?;
        }
        Command::Serve { listen, pool_size } => {
            drop(migrate_db(&url, wait).await?);
            let state = AppState::connect_lazy(&url, pool_size)?;
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
            tracing::info!(addr = %listener.local_addr()?, pool_size, "legacy-monolith listening");
            axum::serve(listener, app(state))
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serving HTTP")?;
            tracing::info!("shut down cleanly");
        }
        Command::Seed { products, customers, orders, categories, seed_value, force, quiet } => {
            let mut client = migrate_db(&url, wait).await?;
            let opts = seed::SeedOptions {
                products,
                customers,
                orders,
                categories,
                seed: seed_value,
                force,
                progress: !quiet,
            };
            let report = seed::run(&mut client, &opts).await?;
            tracing::info!(
                products = report.products,
                customers = report.customers,
                orders = report.orders,
                order_items = report.order_items,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "seeded"
            );
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

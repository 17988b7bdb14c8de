//! The `cdc-sync` binary: parse flags, load and validate sync.toml (exit 2 on bad config,
//! before any runtime starts), then run the requested command.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use cdc_sync::runner::RunError;
use clap::{Parser, Subcommand};

/// Logical-replication CDC between the legacy database and an extracted service's database.
///
/// Forward: the legacy (source) tables are snapshotted and then streamed into the service
/// (target) with per-table column mapping. Reverse/both: rows only the service has are carried
/// to legacy at the start, then the service's writes stream back, loop-free (replication
/// origins); a conflict (both sides changed a row without seeing each other's change) is decided
/// by the table's policy (last writer wins by default, or source_wins / target_wins) and recorded
/// in cdc_sync.conflicts on the written side.
///
/// Connection strings ([source]/[target] url or url_env) are libpq's, TLS included, for every
/// session (the replication one too): sslmode = disable | prefer (default) | require | verify-ca
/// | verify-full, sslrootcert = CA file (default: the system's trust store, not
/// ~/.postgresql/root.crt), sslcert + sslkey = client certificate. See the README.
///
/// Exit codes: 0 ok/equal; 1 failure or (verify) differences — for `run`: a transient error that
/// kept repeating, which a restart may get past —; 2 bad configuration or error before starting;
/// 3 (`run --no-wait`) another instance of the pipeline is active; 4 (`run`) stopped on an error
/// that a restart would meet again (data, schema, a lost or orphaned slot, a database refusing the
/// login or the certificate, or missing): fix the cause before
/// starting it again (the systemd unit does not restart on 2 and 4).
#[derive(Parser, Debug)]
#[command(name = "cdc-sync", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Validate sync.toml offline (all problems at once, with line:col); with --connect also
    /// check tables, columns, keys and expressions against the live databases.
    Check {
        /// The sync.toml file.
        file: PathBuf,
        /// Also check against the live catalogs.
        #[arg(long)]
        connect: bool,
    },
    /// Take the single-instance lock (an advisory lock on the source; a second instance of the
    /// same pipeline waits on standby and takes over when the first dies), create
    /// publication/slot if needed, snapshot unfinished tables, then stream until stopped. SIGHUP
    /// re-reads the file: [[table]] entries and [clock] may change (a new table is copied alone), anything
    /// else needs a restart.
    Run {
        /// The sync.toml file.
        #[arg(long, short)]
        config: PathBuf,
        /// Status HTTP listen address (overrides [status] listen), e.g. 127.0.0.1:9902.
        #[arg(long)]
        status: Option<String>,
        /// Exit (code 3) instead of waiting on standby when another instance is active.
        #[arg(long)]
        no_wait: bool,
        /// When a direction stops on an error, keep serving the status port this many seconds
        /// (so /status shows the table, key, LSN, SQLSTATE and message) before exiting (code 4 when the cause needs a human, 1 otherwise).
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        linger_after_stop: f64,
    },
    /// Compare source and target as of one source LSN the target has applied, so it can run
    /// while both sides are written: counts and digests per key range, then keys inside the
    /// ranges that differ; ranges that differ are compared again at a fresh point (rows in
    /// flight). Progress on stderr. Exit 0 when equal, 1 when different (differing keys are
    /// printed), 2 on error.
    Verify {
        /// The sync.toml file.
        #[arg(long, short)]
        config: PathBuf,
        /// About this many rows per hashed key range.
        #[arg(long, default_value_t = 10_000)]
        chunk_rows: i64,
        /// Longest wait (seconds) for the target to apply the source snapshot's LSN.
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
        /// Rounds in which differing ranges are compared again at a fresh point.
        #[arg(long, default_value_t = 3)]
        rechecks: u32,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Drop slots, publications and replication origins of this pipeline (refuses while a slot
    /// is in use). Forgets checkpoints; --purge also drops the cdc_sync state schema.
    Drop {
        /// The sync.toml file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also drop the cdc_sync schema on both sides.
        #[arg(long)]
        purge: bool,
    },
    /// Print slots (retained WAL), checkpoints, snapshot state, per table the source columns
    /// nothing carries (or why the mapping no longer fits the catalogs) and (bidirectional
    /// pipelines) the conflicts each direction recorded (count by table and winner, the latest
    /// ten) as JSON.
    Status {
        /// The sync.toml file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<cdc_sync::config::SyncConfig, ExitCode> {
    cdc_sync::config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

/// An error and its causes on one line, as `anyhow` prints them.
fn chain(e: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,pg_walstream=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Check { file, connect } => {
            let cfg = match load(&file) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if !connect {
                println!("{}: ok ({} tables)", file.display(), cfg.tables.len());
                return ExitCode::SUCCESS;
            }
            match runtime().block_on(cdc_sync::commands::check_connect(&cfg)) {
                Ok(problems) if problems.is_empty() => {
                    println!(
                        "{}: ok ({} tables, checked against the live databases)",
                        file.display(),
                        cfg.tables.len()
                    );
                    ExitCode::SUCCESS
                }
                Ok(problems) => {
                    for p in problems {
                        eprintln!("{}: {p}", file.display());
                    }
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("error: {}", chain(e));
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Run { config, status, no_wait, linger_after_stop } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let opts = cdc_sync::runner::RunOptions {
                status_listen: status,
                no_wait,
                linger_after_stop: std::time::Duration::try_from_secs_f64(linger_after_stop).unwrap_or_default(),
                config_path: Some(config.clone()),
            };
            match runtime().block_on(cdc_sync::runner::run(cfg, opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(RunError::AnotherInstance(e)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(3)
                }
                Err(e) if e.needs_human() => {
                    eprintln!("error (needs a human; exit code 4): {}", chain(e));
                    ExitCode::from(4)
                }
                Err(e) => {
                    eprintln!("error: {}", chain(e));
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Verify { config, chunk_rows, wait, rechecks, quiet } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let opts = cdc_sync::verify::VerifyOptions {
                chunk_rows,
                pipeline: None,
                wait: std::time::Duration::from_secs_f64(wait.clamp(0.0, 86_400.0)),
                rechecks,
                progress: !quiet,
            };
            match runtime().block_on(cdc_sync::commands::run_verify(&cfg, opts)) {
                Ok(report) => {
                    print!("{report}");
                    if report.equal() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("error: {}", chain(e));
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Drop { config, purge } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match runtime().block_on(cdc_sync::commands::run_drop(&cfg, purge)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", chain(e));
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Status { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match runtime().block_on(cdc_sync::commands::run_status(&cfg)) {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}", chain(e));
                    ExitCode::from(1)
                }
            }
        }
    }
}

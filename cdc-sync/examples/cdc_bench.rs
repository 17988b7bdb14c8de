//! cdc-sync vs PostgreSQL native logical replication (run by `tests/perf/cdc-bench.sh`).
//!
//! Three ephemeral PG15 clusters on this machine: the source, a target for cdc-sync and a target
//! for a native `CREATE SUBSCRIPTION`, identically shaped (pgbench-like tables). Phases, each
//! bounded in time:
//! 1. snapshot: `pg_dump --data-only | psql` of the seeded tables into a spare database, then
//!    cdc-sync's initial snapshot of the same tables (spawn → ready; `SNAPSHOT_WORKERS` parallel
//!    key-range COPY workers, `[replication] snapshot_workers`), then the native initial sync
//!    (for information).
//! 2. throughput: with cdc-sync stopped and the subscription disabled, write a backlog of
//!    mixed row changes (updates on three tables, inserts and deletes on history) followed by a
//!    marker row; drain native, then cdc-sync, one at a time, timing until the marker is visible
//!    on the target.
//! 3. lag: both running; a steady mixed workload at `RATE` row changes/s plus a tick row every
//!    20 ms carrying `clock_timestamp()`; each target is polled every few ms and a tick's lag is
//!    the target's `clock_timestamp()` when it first becomes visible minus its source time (same
//!    machine, same clock).
//! 4. verify: `cdc-sync verify` of every table with cdc-sync still running (idle) after the lag
//!    phase; rows compared per second of the command's wall time.
//!
//! Environment: `CDC_SYNC_BIN` (default `target/release/cdc-sync`), `ACCOUNTS` (seed rows,
//! default 2000000), `SNAPSHOT_WORKERS` (default 4), `BACKLOG_ROWS` (default 500000), `RATE` (rows/s, default 5000),
//! `LAG_SECONDS` (default 20), `CDC_SYNC_LOG` (cdc-sync's `RUST_LOG`; its logs are kept in
//! `KEEP_LOGS` when set), `BRANCHES` (default 10, tellers = 10 per branch; pgbench's hot
//! rows — raise it to spread the updates over many keys), `PARTS` (`all` by default; `snapshot`:
//! phase 1 without the native sync, then a verify, and a report of the copies alone).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strangler_support::{free_port, ChildGuard, PgCluster};
use tokio_postgres::{Client, NoTls};

const SCHEMA: &str = "
CREATE TABLE branches (bid int PRIMARY KEY, bbalance bigint NOT NULL, filler text);
CREATE TABLE tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance bigint NOT NULL, filler text);
CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance bigint NOT NULL, filler text);
CREATE TABLE history (hid bigint PRIMARY KEY, tid int, bid int, aid int, delta int, mtime timestamptz, filler text);
CREATE TABLE ticks (id bigint PRIMARY KEY, sent_at timestamptz NOT NULL);
";

const SOURCE_EXTRA: &str = "
CREATE SEQUENCE history_hid;
CREATE SEQUENCE tick_id;
-- n pgbench-like transactions, each committed: 3 updates + 1 insert, and every 5th also deletes
-- an older history row (~4.2 row changes per transaction).
CREATE PROCEDURE bench_txns(n int) LANGUAGE plpgsql AS $$
DECLARE
  a int; t int; b int; d int; h bigint;
  na int := (SELECT max(aid) FROM accounts);
  nt int := (SELECT max(tid) FROM tellers);
  nb int := (SELECT max(bid) FROM branches);
BEGIN
  FOR i IN 1..n LOOP
    a := 1 + floor(random() * na)::int; t := 1 + floor(random() * nt)::int;
    b := 1 + floor(random() * nb)::int; d := floor(random() * 10001)::int - 5000;
    UPDATE accounts SET abalance = abalance + d WHERE aid = a;
    UPDATE tellers SET tbalance = tbalance + d WHERE tid = t;
    UPDATE branches SET bbalance = bbalance + d WHERE bid = b;
    h := nextval('history_hid');
    INSERT INTO history VALUES (h, t, b, a, d, clock_timestamp(), 'h' || h);
    IF h % 5 = 0 THEN DELETE FROM history WHERE hid = h - 3; END IF;
    COMMIT;
  END LOOP;
END $$;
";

const TABLES: [&str; 5] = ["branches", "tellers", "accounts", "history", "ticks"];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn connect(conn: &str) -> Result<Client> {
    let (c, connection) = tokio_postgres::connect(conn, NoTls).await.with_context(|| format!("connecting {conn}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(c)
}

/// Poll `cond` every `every` until true, failing after `within`.
async fn wait_until<F, Fut>(what: &str, within: Duration, every: Duration, mut cond: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let t0 = Instant::now();
    loop {
        if cond().await? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > within {
            bail!("{what}: not done within {within:?}");
        }
        tokio::time::sleep(every).await;
    }
}

async fn tick(c: &Client) -> Result<i64> {
    let r = c.query_one("INSERT INTO ticks VALUES (nextval('tick_id'), clock_timestamp()) RETURNING id", &[]).await?;
    Ok(r.get(0))
}

async fn last_hid(c: &Client) -> Result<i64> {
    Ok(c.query_one("SELECT last_value FROM history_hid", &[]).await?.get(0))
}

async fn has_tick(c: &Client, id: i64) -> Result<bool> {
    Ok(c.query_opt("SELECT 1 FROM ticks WHERE id = $1", &[&id]).await?.is_some())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// User + system CPU of a process (all its threads) so far, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the parenthesised command name: state(3) ppid(4) ... utime(14) stime(15)
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
}

/// A cluster's processes: the postmaster and its children (backends, walsenders, apply workers).
fn cluster_pids(postmaster: u32) -> Vec<u32> {
    let mut pids = vec![postmaster];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok()));
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

/// CPU ticks of a set of processes, to subtract two readings (processes that ended in between
/// are not counted; new ones count from zero).
#[derive(Default)]
struct CpuReading(std::collections::HashMap<u32, u64>);

impl CpuReading {
    fn of(pids: impl IntoIterator<Item = u32>) -> Self {
        CpuReading(pids.into_iter().filter_map(|p| Some((p, cpu_ticks(p)?))).collect())
    }
    /// Milliseconds of CPU used since `before`.
    fn ms_since(&self, before: &CpuReading) -> f64 {
        // USER_HZ, the unit of /proc's CPU times: 100 on Linux's x86 and arm64 (sysconf is not in std)
        const TICKS_PER_S: f64 = 100.0;
        let ticks: u64 = self.0.iter().map(|(p, t)| t.saturating_sub(before.0.get(p).copied().unwrap_or(0))).sum();
        ticks as f64 * 1000.0 / TICKS_PER_S
    }
}

/// The walsender of a consumer on the source (`application_name` = the consumer's).
async fn walsender_pid(src: &Client, application_name: &str) -> Result<Option<u32>> {
    let r =
        src.query_opt("SELECT pid FROM pg_stat_replication WHERE application_name = $1", &[&application_name]).await?;
    Ok(r.map(|r| r.get::<_, i32>(0) as u32))
}

struct Bench {
    src: PgCluster,
    cdc: PgCluster,
    nat: PgCluster,
    src_conn: String,
    cdc_conn: String,
    nat_conn: String,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Bench {
    fn spawn_cdc(&self, config: &std::path::Path, log: &str) -> Result<(ChildGuard, std::net::SocketAddr)> {
        let status: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let logf = std::fs::File::create(self.dir.path().join(log))?;
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(config)
            .args(["--status", &status.to_string()])
            .env("RUST_LOG", std::env::var("CDC_SYNC_LOG").unwrap_or_else(|_| "info,pg_walstream=warn".into()))
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        Ok((ChildGuard::new("cdc-sync", child), status))
    }

    fn config(&self, name: &str, target_conn: &str, snapshot_workers: u64) -> Result<PathBuf> {
        let mut text = format!(
            "name = \"{name}\"\n[source]\nurl = \"{}\"\n[target]\nurl = \"{target_conn}\"\n\
             [replication]\nsnapshot_workers = {snapshot_workers}\n",
            self.src_conn
        );
        let cols: [(&str, &[&str], &str); 5] = [
            ("branches", &["bid", "bbalance", "filler"], "bid"),
            ("tellers", &["tid", "bid", "tbalance", "filler"], "tid"),
            ("accounts", &["aid", "bid", "abalance", "filler"], "aid"),
            ("history", &["hid", "tid", "bid", "aid", "delta", "mtime", "filler"], "hid"),
            ("ticks", &["id", "sent_at"], "id"),
        ];
        for (t, cs, k) in cols {
            text.push_str(&format!(
                "[[table]]\nsource = \"{t}\"\ntarget = \"{t}\"\nkey = [\"{k}\"]\n[table.columns]\n"
            ));
            for c in cs {
                text.push_str(&format!("{c} = \"{c}\"\n"));
            }
        }
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

fn wait_ready(status: std::net::SocketAddr, within: Duration, log: &std::path::Path) -> Result<Duration> {
    let t0 = Instant::now();
    strangler_support::wait_for_http(status, "/health/ready", within).map_err(|e| {
        anyhow::anyhow!("cdc-sync not ready: {e}\n{}", std::fs::read_to_string(log).unwrap_or_default())
    })?;
    Ok(t0.elapsed())
}

/// CPU seconds (user + system) from `/proc/<pid>/stat`: the process's own, and that of its
/// children it has waited for (`cutime` + `cstime`; for a postmaster: every backend that ended).
fn proc_cpu(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return (0.0, 0.0) };
    // fields after the command name (which may hold spaces): state is field 3, utime 14 ... cstime 17
    let f: Vec<f64> =
        stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("").split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
    let t = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / 100.0; // USER_HZ = 100 on Linux
    (t(14) + t(15), t(16) + t(17))
}

/// A cluster's CPU seconds so far: the postmaster with its ended backends, plus its live
/// children (background processes, open sessions), the latter also on their own.
/// The postmaster reaps an ended backend a moment after it exits (only then is its CPU in the
/// postmaster's `cutime`): polls until no child is a zombie and none was reaped while the
/// children were read (at most 3 s).
fn cluster_cpu(postmaster: u32) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (own, ended) = proc_cpu(postmaster);
        let (mut live, mut zombies) = (0.0, false);
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let mut f = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("").split(' ');
            let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok()));
            if ppid == Some(postmaster) {
                zombies |= state == Some("Z");
                let (a, b) = proc_cpu(pid);
                live += a + b;
            }
        }
        // a backend reaped while the children were read would be in neither sum: read again
        let reaped = proc_cpu(postmaster).1 != ended;
        if (!zombies && !reaped) || Instant::now() > deadline {
            return (own + ended + live, live);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU seconds spent during a snapshot phase: source cluster, target cluster (each with the
/// change in what its still-running processes have used: background processes and open
/// sessions; negative when a session that ran before the phase ended during it), and the client
/// side.
struct PhaseCpu {
    src: (f64, f64),
    tgt: (f64, f64),
    client: f64,
}

impl PhaseCpu {
    fn since(before: &(std::time::Instant, (f64, f64), (f64, f64)), b: &Bench, client: f64) -> PhaseCpu {
        let (s, t) = (cluster_cpu(b.src.pid()), cluster_cpu(b.cdc.pid()));
        PhaseCpu { src: (s.0 - before.1 .0, s.1 - before.1 .1), tgt: (t.0 - before.2 .0, t.1 - before.2 .1), client }
    }
    fn total(&self) -> f64 {
        self.src.0 + self.tgt.0 + self.client
    }
    fn line(&self) -> String {
        format!(
            "{:.2} s CPU = source cluster {:.2} (still-running processes Δ {:.2}) + target cluster {:.2} (Δ {:.2}) + client {:.2}",
            self.total(), self.src.0, self.src.1, self.tgt.0, self.tgt.1, self.client
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let accounts = env_num("ACCOUNTS", 2_000_000) as i64;
    let snapshot_workers = env_num("SNAPSHOT_WORKERS", 4);
    let backlog_rows = env_num("BACKLOG_ROWS", 500_000);
    let rate = env_num("RATE", 5000);
    let lag_seconds = env_num("LAG_SECONDS", 20);
    // pgbench's shape: 10 branches and 100 tellers are hot rows; BRANCHES=100000 spreads them out
    let branches = env_num("BRANCHES", 10) as i64;
    // PARTS=snapshot: only the initial copies (pg_dump|psql, then cdc-sync's) and a verify
    let snapshot_only = match std::env::var("PARTS").as_deref() {
        Ok("snapshot") => true,
        Ok("all") | Err(_) => false,
        Ok(other) => bail!("PARTS={other}: expected `all` (default) or `snapshot`"),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = std::env::var("CDC_SYNC_BIN").map(PathBuf::from).unwrap_or_else(|_| root.join("target/release/cdc-sync"));
    if !bin.exists() {
        bail!("{} not built (cargo build --release -p cdc-sync)", bin.display());
    }
    eprintln!("== setup: 3 clusters, {accounts} accounts");
    let conf = |builder: strangler_support::PgClusterBuilder| {
        builder.conf("max_wal_size = '4GB'").conf("checkpoint_timeout = '15min'")
    };
    // The test clusters run with fsync and synchronous_commit off; on the source that would make
    // the WAL sender wait for the WAL writer (wal_writer_delay, 200 ms) before it sends a commit,
    // which would dominate both lags. Commit synchronously there (fsync stays off).
    let src = conf(PgCluster::builder()).conf("synchronous_commit = on").start()?;
    let cdc = conf(PgCluster::builder()).start()?;
    let nat = conf(PgCluster::builder()).start()?;
    for (c, db) in [(&src, "src"), (&cdc, "tgt"), (&cdc, "dump"), (&nat, "tgt")] {
        c.create_database(db)?;
        c.psql(db, SCHEMA)?;
    }
    src.psql("src", SOURCE_EXTRA)?;
    src.psql(
        "src",
        &format!(
            "INSERT INTO branches SELECT g, 0, repeat('b', 80) FROM generate_series(1, {branches}) g;
             INSERT INTO tellers SELECT g, 1 + (g - 1) / 10, 0, repeat('t', 80) FROM generate_series(1, {branches} * 10) g;
             INSERT INTO accounts SELECT g, 1 + (g - 1) * 10 / {accounts}, 0, repeat('a', 80) FROM generate_series(1, {accounts}) g;
             SELECT setval('history_hid', 1);"
        ),
    )?;
    src.psql("src", "VACUUM ANALYZE")?;
    let b = Bench {
        src_conn: src.connection_string("src"),
        cdc_conn: cdc.connection_string("tgt"),
        nat_conn: nat.connection_string("tgt"),
        src,
        cdc,
        nat,
        bin,
        dir: tempfile::tempdir()?,
    };
    let seed_rows = accounts + branches * 11;

    // ------------------------------------------------------------------ snapshot
    eprintln!("== snapshot: pg_dump --data-only | psql");
    let bindir = b.src.bin_dir().to_path_buf();
    let cpu0 = (Instant::now(), cluster_cpu(b.src.pid()), cluster_cpu(b.cdc.pid()));
    let client0 = proc_cpu(std::process::id()).1;
    let t0 = Instant::now();
    let dump = format!(
        "set -o pipefail; {}/pg_dump -h 127.0.0.1 -p {} -U postgres --data-only {} src | {}/psql -X -q -h 127.0.0.1 -p {} -U postgres -v ON_ERROR_STOP=1 dump",
        bindir.display(),
        b.src.port(),
        TABLES.iter().map(|t| format!("-t {t}")).collect::<Vec<_>>().join(" "),
        bindir.display(),
        b.cdc.port()
    );
    let out = Command::new("timeout").args(["600", "bash", "-c", &dump]).output()?;
    if !out.status.success() {
        bail!("pg_dump | psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let t_dump = t0.elapsed();
    // pg_dump and psql (and the shell around them) were waited for: in this process's cutime
    let dump_cpu = PhaseCpu::since(&cpu0, &b, proc_cpu(std::process::id()).1 - client0);
    let check = b.cdc.psql("dump", "SELECT count(*) FROM accounts")?;
    if check != accounts.to_string() {
        bail!("pg_dump copy has {check} accounts");
    }

    eprintln!("== snapshot: cdc-sync");
    let cfg = b.config("bench", &b.cdc_conn, snapshot_workers)?;
    let cpu0 = (Instant::now(), cluster_cpu(b.src.pid()), cluster_cpu(b.cdc.pid()));
    let (mut cdc_run, status) = b.spawn_cdc(&cfg, "cdc1.log")?;
    let t_snap = wait_ready(status, Duration::from_secs(600), &b.dir.path().join("cdc1.log"))?;
    let snap_cpu = PhaseCpu::since(&cpu0, &b, proc_cpu(cdc_run.pid()).0);
    eprintln!("   pg_dump|psql {:.2} s: {}", t_dump.as_secs_f64(), dump_cpu.line());
    eprintln!("   cdc-sync     {:.2} s: {}", t_snap.as_secs_f64(), snap_cpu.line());

    if snapshot_only {
        return snapshot_report(
            &b,
            &cfg,
            cdc_run,
            (t_dump, &dump_cpu),
            (t_snap, &snap_cpu),
            seed_rows,
            snapshot_workers,
        );
    }

    eprintln!("== snapshot: native initial sync (information)");
    let nat_client = connect(&b.nat_conn).await?;
    let t0 = Instant::now();
    nat_client
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION bench_sub CONNECTION 'host=127.0.0.1 port={} user=postgres dbname=src' \
             PUBLICATION cdc_sync_bench WITH (copy_data = true)",
            b.src.port()
        ))
        .await?;
    wait_until("native initial sync", Duration::from_secs(600), Duration::from_millis(50), || async {
        let r = nat_client
            .query_one("SELECT count(*) FILTER (WHERE srsubstate <> 'r') FROM pg_subscription_rel", &[])
            .await?;
        Ok(r.get::<_, i64>(0) == 0)
    })
    .await?;
    let t_native_sync = t0.elapsed();

    // ------------------------------------------------------------------ throughput
    let src_client = connect(&b.src_conn).await?;
    let cdc_client = connect(&b.cdc_conn).await?;
    // both caught up before we stop them
    let m = tick(&src_client).await?;
    wait_until("cdc caught up", Duration::from_secs(300), Duration::from_millis(20), || has_tick(&cdc_client, m))
        .await?;
    wait_until("native caught up", Duration::from_secs(300), Duration::from_millis(20), || has_tick(&nat_client, m))
        .await?;
    cdc_run.stop(Duration::from_secs(10));
    nat_client.batch_execute("ALTER SUBSCRIPTION bench_sub DISABLE").await?;
    wait_until("native apply worker stopped", Duration::from_secs(60), Duration::from_millis(50), || async {
        let r =
            b.src.psql("src", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'bench_sub' AND active")?;
        Ok(r == "0")
    })
    .await?;

    let txns = (backlog_rows as f64 / 4.2).ceil() as i64;
    eprintln!("== throughput: writing a backlog of ~{backlog_rows} row changes ({txns} transactions)");
    let hid_before = last_hid(&src_client).await?;
    let t0 = Instant::now();
    let mut done = 0;
    while done < txns {
        let n = (txns - done).min(5000) as i32;
        tokio::time::timeout(Duration::from_secs(300), src_client.execute("CALL bench_txns($1)", &[&n])).await??;
        done += n as i64;
    }
    let marker = tick(&src_client).await?;
    let hid_after = last_hid(&src_client).await?;
    // 4 changes per transaction, plus one delete per history id divisible by 5, plus the marker
    let deletes = hid_after / 5 - hid_before / 5;
    let rows = (txns * 4 + deletes + 1) as f64;
    eprintln!("   written in {:?}", t0.elapsed());

    eprintln!("== throughput: native drain");
    let t0 = Instant::now();
    nat_client.batch_execute("ALTER SUBSCRIPTION bench_sub ENABLE").await?;
    wait_until("native drain", Duration::from_secs(900), Duration::from_millis(10), || has_tick(&nat_client, marker))
        .await?;
    let t_native = t0.elapsed();

    eprintln!("== throughput: cdc-sync drain");
    let t0 = Instant::now();
    let (cdc_run2, status) = b.spawn_cdc(&cfg, "cdc2.log")?;
    wait_until("cdc-sync drain", Duration::from_secs(900), Duration::from_millis(10), || has_tick(&cdc_client, marker))
        .await?;
    let t_cdc = t0.elapsed();
    wait_ready(status, Duration::from_secs(60), &b.dir.path().join("cdc2.log"))?;

    // ------------------------------------------------------------------ lag
    eprintln!("== lag: steady ~{rate} rows/s for {lag_seconds}s, both running");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (conn, stop) = (b.src_conn.clone(), stop.clone());
        tokio::spawn(async move {
            let c = connect(&conn).await?;
            let per_tick = (rate as f64 / 4.2 / 50.0).max(1.0); // transactions per 20 ms
            let mut debt = 0.0;
            let mut iv = tokio::time::interval(Duration::from_millis(20));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut written = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                iv.tick().await;
                debt += per_tick;
                let n = debt.floor() as i32;
                debt -= n as f64;
                if n > 0 {
                    c.execute("CALL bench_txns($1)", &[&n]).await?;
                    written += n as i64;
                }
            }
            Ok::<i64, anyhow::Error>(written)
        })
    };
    let ticker = {
        let (conn, stop) = (b.src_conn.clone(), stop.clone());
        tokio::spawn(async move {
            let c = connect(&conn).await?;
            let mut iv = tokio::time::interval(Duration::from_millis(20));
            let mut last = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                iv.tick().await;
                last = c
                    .query_one("INSERT INTO ticks VALUES (nextval('tick_id'), clock_timestamp()) RETURNING id", &[])
                    .await?
                    .get(0);
            }
            Ok::<i64, anyhow::Error>(last)
        })
    };
    let sampler = |conn: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>, from: i64| {
        tokio::spawn(async move {
            let c = connect(&conn).await?;
            let mut lags = Vec::new();
            let mut last = from;
            let q = c
                .prepare("SELECT id, (extract(epoch FROM clock_timestamp() - sent_at) * 1000)::float8 FROM ticks WHERE id > $1 ORDER BY id")
                .await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
                for r in c.query(&q, &[&last]).await? {
                    last = r.get(0);
                    lags.push(r.get::<_, f64>(1));
                }
                if stopping && (lags.len() > 10 || Instant::now() > deadline) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<(Vec<f64>, i64), anyhow::Error>((lags, last))
        })
    };
    let stop_s = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cdc_s = sampler(b.cdc_conn.clone(), stop_s.clone(), marker);
    let nat_s = sampler(b.nat_conn.clone(), stop_s.clone(), marker);
    // CPU used while the load runs (a machine-load-independent cost): cdc-sync = its process,
    // its target cluster and its walsender; native = its target cluster (the apply worker) and
    // its walsender. Both target clusters also serve one lag sampler.
    let (cdc_ws, nat_ws) =
        (walsender_pid(&src_client, "cdc-sync").await?, walsender_pid(&src_client, "bench_sub").await?);
    let cpu_sets = || {
        let cdc = cluster_pids(b.cdc.pid()).into_iter().chain([cdc_run2.pid()]).chain(cdc_ws);
        (CpuReading::of(cdc), CpuReading::of(cluster_pids(b.nat.pid()).into_iter().chain(nat_ws)))
    };
    let cpu_before = cpu_sets();
    let hid_lag_start = last_hid(&src_client).await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(lag_seconds)).await;
    let cpu_after = cpu_sets();
    let lag_rows = (last_hid(&src_client).await? - hid_lag_start) as f64 * 4.2 + t0.elapsed().as_secs_f64() * 50.0;
    let cdc_cpu = cpu_after.0.ms_since(&cpu_before.0) * 1000.0 / lag_rows;
    let nat_cpu = cpu_after.1.ms_since(&cpu_before.1) * 1000.0 / lag_rows;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await??;
    let last_tick = ticker.await??;
    let achieved = (written as f64 * 4.2 + (t0.elapsed().as_secs_f64() * 50.0)) / t0.elapsed().as_secs_f64();
    // let the last ticks arrive, then stop sampling; a final marker after the writer stopped
    wait_until("cdc last tick", Duration::from_secs(120), Duration::from_millis(20), || {
        has_tick(&cdc_client, last_tick)
    })
    .await?;
    wait_until("native last tick", Duration::from_secs(120), Duration::from_millis(20), || {
        has_tick(&nat_client, last_tick)
    })
    .await?;
    let fin = tick(&src_client).await?;
    wait_until("cdc final marker", Duration::from_secs(120), Duration::from_millis(20), || has_tick(&cdc_client, fin))
        .await?;
    wait_until("native final marker", Duration::from_secs(120), Duration::from_millis(20), || {
        has_tick(&nat_client, fin)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_s.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut cdc_lags, _) = cdc_s.await??;
    let (mut nat_lags, _) = nat_s.await??;
    cdc_lags.sort_by(f64::total_cmp);
    nat_lags.sort_by(f64::total_cmp);

    // ------------------------------------------------------------------ verify
    eprintln!("== verify: cdc-sync verify (cdc-sync running, idle)");
    let t0 = Instant::now();
    let out =
        Command::new("timeout").arg("600").arg(&b.bin).args(["verify", "--quiet", "--config"]).arg(&cfg).output()?;
    let t_verify = t0.elapsed();
    let vtext = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("verify did not report equal: {vtext}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    // "...; N rows in S s (R rows/s)"
    let verify_rows: f64 = vtext
        .rsplit("; ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("verify's summary line")?;
    let verify_rps = verify_rows / t_verify.as_secs_f64();
    drop(cdc_run2);
    if let Ok(keep) = std::env::var("KEEP_LOGS") {
        for f in ["cdc1.log", "cdc2.log"] {
            std::fs::copy(b.dir.path().join(f), PathBuf::from(&keep).join(f))
                .with_context(|| format!("keeping {f}"))?;
        }
    }

    // equal at the end (cheap check: counts and balance sums)
    let sums = "SELECT (SELECT sum(abalance) FROM accounts)::text || '/' || (SELECT count(*) FROM history) || '/' || (SELECT sum(tbalance) FROM tellers)";
    let (s1, s2, s3) = (b.src.psql("src", sums)?, b.cdc.psql("tgt", sums)?, b.nat.psql("tgt", sums)?);
    let equal = s1 == s2 && s1 == s3;

    // ------------------------------------------------------------------ report
    let cdc_rps = rows / t_cdc.as_secs_f64();
    let nat_rps = rows / t_native.as_secs_f64();
    let snap_rps = seed_rows as f64 / t_snap.as_secs_f64();
    let dump_rps = seed_rows as f64 / t_dump.as_secs_f64();
    let native_sync_rps = seed_rows as f64 / t_native_sync.as_secs_f64();
    let (c50, c99, cmax) =
        (percentile(&cdc_lags, 0.5), percentile(&cdc_lags, 0.99), cdc_lags.last().copied().unwrap_or(f64::NAN));
    let (n50, n99, nmax) =
        (percentile(&nat_lags, 0.5), percentile(&nat_lags, 0.99), nat_lags.last().copied().unwrap_or(f64::NAN));
    println!();
    println!(
        "cdc-sync vs native logical replication (PG15, 3 local clusters, fsync off, source synchronous_commit on; \
         {branches} branches, {} tellers, {accounts} accounts)",
        branches * 10
    );
    println!("| measure | cdc-sync | native | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| backlog drain: {rows:.0} row changes in {txns} txns | {:.2} s = {cdc_rps:.0} rows/s | {:.2} s = {nat_rps:.0} rows/s | {:.2}x |",
        t_cdc.as_secs_f64(),
        t_native.as_secs_f64(),
        cdc_rps / nat_rps
    );
    println!(
        "| lag at ~{achieved:.0} rows/s, p50 / p99 / max ({} / {} samples) | {c50:.1} / {c99:.1} / {cmax:.1} ms | {n50:.1} / {n99:.1} / {nmax:.1} ms | p99 {:.2}x |",
        cdc_lags.len(),
        nat_lags.len(),
        c99 / n99
    );
    println!(
        "| CPU during the lag phase, ms per 1000 row changes (cdc-sync: process + target cluster + walsender; native: target cluster + walsender) | {cdc_cpu:.1} | {nat_cpu:.1} | {:.2}x |",
        cdc_cpu / nat_cpu
    );
    println!(
        "| initial copy of {seed_rows} rows | cdc-sync snapshot ({snapshot_workers} workers) {:.2} s = {snap_rps:.0} rows/s | pg_dump\\|psql {:.2} s = {dump_rps:.0} rows/s | {:.2}x |",
        t_snap.as_secs_f64(),
        t_dump.as_secs_f64(),
        snap_rps / dump_rps
    );
    println!(
        "| CPU seconds of that copy, every process (source, target, client) | {:.2} s | pg_dump\\|psql {:.2} s | {:.2}x |",
        snap_cpu.total(),
        dump_cpu.total(),
        dump_cpu.total() / snap_cpu.total()
    );
    println!(
        "| (info) native initial sync of the same rows | | {:.2} s = {native_sync_rps:.0} rows/s | |",
        t_native_sync.as_secs_f64()
    );
    println!(
        "| verify of {verify_rows:.0} rows (every table, process wall time) | {:.2} s = {verify_rps:.0} rows/s | | |",
        t_verify.as_secs_f64()
    );
    println!("| end state equal (sums/counts) | {} | {} | |", s1 == s2, s1 == s3);
    println!();
    if !equal {
        eprintln!("WARNING: end states differ: source {s1}, cdc {s2}, native {s3}");
    }
    println!(
        "RESULT cdc_vs_native_rows_per_s={:.2} cdc_p99_lag_ms={c99:.0} native_p99_lag_ms={n99:.0} snapshot_vs_pgdump={:.2} \
         cdc_vs_native_p99_lag={:.2} snapshot_rows={seed_rows} snapshot_workers={snapshot_workers} verify_rows={verify_rows:.0} \
         verify_rows_per_s={verify_rps:.0} cdc_cpu_ms_per_krow={cdc_cpu:.1} native_cpu_ms_per_krow={nat_cpu:.1} \
         snapshot_cpu_s={:.2} pgdump_cpu_s={:.2}",
        cdc_rps / nat_rps,
        snap_rps / dump_rps,
        c99 / n99,
        snap_cpu.total(),
        dump_cpu.total()
    );
    if !equal {
        std::process::exit(1);
    }
    Ok(())
}

/// `PARTS=snapshot`: verify the copy, print the two initial copies (wall time, load average, CPU
/// seconds per cluster and client) and a `RESULT` line with the snapshot fields only.
fn snapshot_report(
    b: &Bench,
    cfg: &std::path::Path,
    cdc_run: ChildGuard,
    (t_dump, dump_cpu): (Duration, &PhaseCpu),
    (t_snap, snap_cpu): (Duration, &PhaseCpu),
    seed_rows: i64,
    workers: u64,
) -> Result<()> {
    let out =
        Command::new("timeout").arg("600").arg(&b.bin).args(["verify", "--quiet", "--config"]).arg(cfg).output()?;
    let equal = out.status.success();
    drop(cdc_run);
    if let Ok(keep) = std::env::var("KEEP_LOGS") {
        std::fs::copy(b.dir.path().join("cdc1.log"), PathBuf::from(&keep).join("cdc1.log"))
            .context("keeping cdc1.log")?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let ratio = t_dump.as_secs_f64() / t_snap.as_secs_f64();
    println!();
    println!("initial copy of {seed_rows} rows (load average now {})", load.join(" "));
    println!("| copy | wall | CPU seconds, every process |");
    println!("| --- | ---: | --- |");
    println!("| pg_dump\\|psql | {:.2} s | {} |", t_dump.as_secs_f64(), dump_cpu.line());
    println!("| cdc-sync, {workers} workers | {:.2} s | {} |", t_snap.as_secs_f64(), snap_cpu.line());
    println!("| verify equal | {equal} | |");
    println!();
    println!(
        "RESULT snapshot_vs_pgdump={ratio:.2} snapshot_rows={seed_rows} snapshot_workers={workers} snapshot_s={:.2} pgdump_s={:.2} \
         snapshot_cpu_s={:.2} pgdump_cpu_s={:.2} snapshot_client_cpu_s={:.2} snapshot_source_cpu_s={:.2} snapshot_target_cpu_s={:.2} \
         load1={}",
        t_snap.as_secs_f64(),
        t_dump.as_secs_f64(),
        snap_cpu.total(),
        dump_cpu.total(),
        snap_cpu.client,
        snap_cpu.src.0,
        snap_cpu.tgt.0,
        load.first().unwrap_or(&"?")
    );
    if !equal {
        bail!(
            "verify did not report equal: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

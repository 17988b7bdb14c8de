//! Crash safety (kill -9 at 20 random moments under load: no loss, no duplicates),
//! bidirectional sync without loops (last writer wins), and a 1M-row transaction under a
//! memory bound.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use strangler_support::Signal;

#[test]
fn kill_9_at_20_random_moments_loses_and_duplicates_nothing() {
    let env = Env::new(COUNTERS, COUNTERS_TGT);
    let cfg = env.write_config("crash", COUNTERS_MAP);
    let mut run = start(&cfg, "crash");
    let work = Workload::start(env.src_conn.clone(), |i, rng| {
        let id = rng.gen_range(1..=100);
        let extra = if i % 50 == 0 { format!("DELETE FROM log WHERE id = {};", i / 2) } else { String::new() };
        format!(
            "BEGIN; UPDATE counters SET n = n + 1 WHERE id = {id}; INSERT INTO log (counter, v) VALUES ({id}, 'w{i}'); {extra} COMMIT"
        )
    });
    let mut rng = rand::thread_rng();
    for _ in 0..20 {
        // let it run (and, sometimes, not even finish starting) for a random while
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..700)));
        run.child.signal(Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while run.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "did not die");
            std::thread::sleep(Duration::from_millis(10));
        }
        run = spawn(&cfg, "crash");
    }
    let txns = work.finish();
    assert!(txns > 200, "workload too small: {txns}");
    wait_equal(&cfg, Duration::from_secs(120), Some(&run));
    // exact contents: every increment and insert exactly once
    assert_eq!(env.t("SELECT sum(n) FROM counters"), txns.to_string());
    assert_eq!(env.s("SELECT count(*) FROM log"), env.t("SELECT count(*) FROM log"));
    // and every source transaction was applied exactly once (the counter is written in the
    // same target transaction as the rows)
    wait_sql(
        &|| env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'crash'"),
        &txns.to_string(),
        Duration::from_secs(30),
    );
}

const ACCOUNTS: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
INSERT INTO accounts SELECT g, 0, 'seed' FROM generate_series(1, 100) g;
";

const ACCOUNTS_TGT: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);";

const ACCOUNTS_MAP: &str = r#"
[[table]]
source = "accounts"
target = "accounts"
key = ["id"]
direction = "both"
[table.columns]
id = "id"
balance = "balance"
note = "note"
"#;

#[test]
fn bidirectional_writes_converge_without_loops() {
    let env = Env::new(ACCOUNTS, ACCOUNTS_TGT);
    let cfg = env.write_config("bidi", ACCOUNTS_MAP);
    let run = start(&cfg, "bidi");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));

    let src_work = Workload::start(env.src_conn.clone(), |i, rng| {
        format!("UPDATE accounts SET balance = balance + 1, note = 'src{i}' WHERE id = {}", rng.gen_range(1..=50))
    });
    let tgt_work = Workload::start(env.tgt_conn.clone(), |i, rng| {
        if i % 5 == 0 {
            format!("INSERT INTO accounts VALUES ({}, 0, 'new on target')", 1000 + i)
        } else {
            format!("UPDATE accounts SET balance = balance + 1, note = 'tgt{i}' WHERE id = {}", rng.gen_range(51..=100))
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let (s, t) = (src_work.finish(), tgt_work.finish());
    // the same row written on both sides at (nearly) the same time: last writer wins on both
    let (sc, tc) = (env.src_conn.clone(), env.tgt_conn.clone());
    let a = std::thread::spawn(move || {
        std::process::Command::new("psql")
            .args([&sc, "-c", "UPDATE accounts SET note = 'from source' WHERE id = 7"])
            .output()
            .unwrap()
    });
    let b = std::thread::spawn(move || {
        std::process::Command::new("psql")
            .args([&tc, "-c", "UPDATE accounts SET note = 'from target' WHERE id = 7"])
            .output()
            .unwrap()
    });
    assert!(a.join().unwrap().status.success() && b.join().unwrap().status.success());
    let out = wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert!(String::from_utf8_lossy(&out.stdout).contains("equal"));
    let note = env.s("SELECT note FROM accounts WHERE id = 7");
    assert!(note == "from source" || note == "from target", "{note}");
    assert_eq!(env.t("SELECT note FROM accounts WHERE id = 7"), note);
    // no ping-pong: each side applied exactly the other side's transactions, nothing more
    wait_sql(
        &|| env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'bidi'"),
        &(s + 1).to_string(),
        Duration::from_secs(30),
    );
    wait_sql(
        &|| env.s("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'bidi_rev'"),
        &(t + 1).to_string(),
        Duration::from_secs(30),
    );
    let status: serde_json::Value = serde_json::from_str(&http_get(run.status, "/status")).unwrap();
    let skipped_fwd = status["pipelines"]["forward"]["txns_skipped_origin"].as_u64().unwrap();
    let skipped_rev = status["pipelines"]["reverse"]["txns_skipped_origin"].as_u64().unwrap();
    // each applier batches many source transactions per target transaction, so the other side
    // skips fewer (but some) origin-tagged transactions
    assert!(skipped_fwd > 0 && skipped_rev > 0, "{status}");
    eprintln!("bidi: {s} source txns, {t} target txns, status {status}");
    if std::env::var("CDC_DEBUG_LOG").is_ok() {
        eprintln!("{}", run.log_text());
    }
}

#[test]
fn one_million_row_transaction_in_bounded_memory() {
    let env = Env::new(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL, n int);",
        "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL, n int);",
    );
    let cfg = env.write_config(
        "big",
        "[[table]]\nsource = \"big\"\ntarget = \"big\"\nkey = [\"id\"]\n[table.columns]\nid = \"id\"\nv = \"v\"\nn = \"n\"\n",
    );
    let run = start(&cfg, "big");
    let t0 = Instant::now();
    env.s("INSERT INTO big SELECT g, 'value number ' || g, g % 1000 FROM generate_series(1, 1000000) g");
    let inserted = t0.elapsed();
    let t1 = Instant::now();
    wait_sql(&|| env.t("SELECT count(*) FROM big"), "1000000", Duration::from_secs(240));
    let applied = t1.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.child.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!(
        "1M-row txn: source insert {inserted:?}, applied {applied:?} after commit, peak RSS {} MiB",
        hwm_kb / 1024
    );
    assert!(hwm_kb < 300 * 1024, "peak RSS {} MiB", hwm_kb / 1024);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
}

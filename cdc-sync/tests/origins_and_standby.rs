//! Loop prevention per origin (two pipelines on one source: one pipeline's reverse writes must
//! reach the other pipeline's target, and must not echo back through its own forward), and the
//! single-instance advisory lock (standby, kill -9 takeover, `--no-wait`).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use strangler_support::{ChildGuard, Signal};

const STOCK: &str = "
CREATE TABLE stock (id int PRIMARY KEY, qty int NOT NULL, note text);
INSERT INTO stock SELECT g, 100, 'seed' FROM generate_series(1, 100) g;
";

const STOCK_TGT: &str = "CREATE TABLE stock (id int PRIMARY KEY, qty int NOT NULL, note text);";

fn stock_map(direction: &str) -> String {
    format!(
        "[[table]]\nsource = \"stock\"\ntarget = \"stock\"\nkey = [\"id\"]\ndirection = \"{direction}\"\n\
         [table.columns]\nid = \"id\"\nqty = \"qty\"\nnote = \"note\"\n"
    )
}

#[test]
fn another_pipelines_reverse_writes_reach_this_pipelines_target() {
    // source = legacy; target A = the orders DB (both ways); target B = the catalog DB (forward)
    let env = Env::new(STOCK, STOCK_TGT);
    let (b_db, b_conn) = env.tgt.create_unique_database("tgtb").unwrap();
    env.tgt.psql(&b_db, STOCK_TGT).unwrap();
    let tb = |sql: &str| env.tgt.psql(&b_db, sql).unwrap();
    let cfg_a = env.write_config("pa", &stock_map("both"));
    let cfg_b = env.write_config_to("pb", &b_conn, &stock_map("forward"));
    let run_a = start(&cfg_a, "pa");
    let run_b = start(&cfg_b, "pb");
    wait_equal(&cfg_a, Duration::from_secs(30), Some(&run_a));
    wait_equal(&cfg_b, Duration::from_secs(30), Some(&run_b));

    // the service behind target A reserves stock and adds rows; legacy restocks other rows
    let tgt_work = Workload::start(env.tgt_conn.clone(), |i, rng| {
        if i % 4 == 0 {
            format!("INSERT INTO stock VALUES ({}, 5, 'from A')", 10_000 + i)
        } else {
            format!("UPDATE stock SET qty = qty - 1, note = 'reserved {i}' WHERE id = {}", rng.gen_range(1..=50))
        }
    });
    let src_work = Workload::start(env.src_conn.clone(), |i, rng| {
        format!("UPDATE stock SET qty = qty + 1, note = 'restock {i}' WHERE id = {}", rng.gen_range(51..=100))
    });
    std::thread::sleep(Duration::from_secs(3));
    let (t, s) = (tgt_work.finish(), src_work.finish());
    assert!(t > 20 && s > 20, "workload too small: {t} / {s}");

    wait_equal(&cfg_a, Duration::from_secs(60), Some(&run_a));
    wait_equal(&cfg_b, Duration::from_secs(60), Some(&run_b));
    // target B holds what A's reverse wrote into the source
    let from_a = env.s("SELECT count(*) FROM stock WHERE note = 'from A'");
    assert_eq!(from_a, (t / 4).to_string());
    assert_eq!(tb("SELECT count(*) FROM stock WHERE note = 'from A'"), from_a);
    assert_eq!(tb("SELECT sum(qty) FROM stock"), env.t("SELECT sum(qty) FROM stock"));
    assert_eq!(tb("SELECT sum(qty) FROM stock"), env.s("SELECT sum(qty) FROM stock"));

    // A's forward applied exactly the source's own transactions: no echo of A's reverse writes
    wait_sql(
        &|| env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'pa'"),
        &s.to_string(),
        Duration::from_secs(30),
    );
    wait_sql(
        &|| env.s("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'pa_rev'"),
        &t.to_string(),
        Duration::from_secs(30),
    );
    let sa = try_status(run_a.status).unwrap();
    let sb = try_status(run_b.status).unwrap();
    assert!(sa["pipelines"]["forward"]["txns_skipped_origin"].as_u64().unwrap() > 0, "{sa}");
    assert_eq!(sa["pipelines"]["forward"]["skip_origins"], serde_json::json!(["cdc_sync_pa_rev"]), "{sa}");
    assert_eq!(sa["pipelines"]["reverse"]["skip_origins"], serde_json::json!(["cdc_sync_pa"]), "{sa}");
    // B skipped nothing: A's reverse transactions are real changes for B
    assert_eq!(sb["pipelines"]["forward"]["txns_skipped_origin"], 0, "{sb}");
    let b_txns: u64 = tb("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'pb'").parse().unwrap();
    assert!(b_txns > s, "B applied {b_txns} transactions, the source's own are {s}");
    // and nothing moves any more (no ping-pong)
    let before = (
        env.s("SELECT sum(qty), count(*) FROM stock"),
        env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'pa'"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = (
        env.s("SELECT sum(qty), count(*) FROM stock"),
        env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'pa'"),
    );
    assert_eq!(before, after);
}

fn is_ready(r: &Running) -> bool {
    try_status(r.status).is_some_and(|s| s["ready"] == true && s["role"] == "active")
}

fn is_standby(r: &Running) -> bool {
    try_status(r.status).is_some_and(|s| s["role"] == "standby")
}

#[test]
fn one_active_instance_standby_takes_over_after_kill_9() {
    let env = Env::new(COUNTERS, COUNTERS_TGT);
    let cfg = env.write_config("ha", COUNTERS_MAP);
    let first = spawn(&cfg, "ha1");
    let second = spawn(&cfg, "ha2");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut active, standby) = loop {
        if is_ready(&first) && is_standby(&second) {
            break (first, second);
        }
        if is_ready(&second) && is_standby(&first) {
            break (second, first);
        }
        assert!(Instant::now() < deadline, "no active/standby pair:\n{}\n---\n{}", first.log_text(), second.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    let st = try_status(standby.status).unwrap();
    assert!(st["pipelines"]["forward"]["state"].as_str().unwrap().starts_with("standby"), "{st}");
    assert_eq!(st["ready"], false);
    let live = try_http_get(standby.status, "/health/live").unwrap();
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let ready = try_http_get(standby.status, "/health/ready").unwrap();
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(standby.log_text().contains("standby"), "{}", standby.log_text());

    // --no-wait refuses with a clear message and its own exit code
    let mut nw = ChildGuard::new(
        "cdc-sync --no-wait",
        bin()
            .args(["run", "--no-wait", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    let code = loop {
        if let Some(s) = nw.try_wait().unwrap() {
            break s.code();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "--no-wait did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(3));

    let work = Workload::start(env.src_conn.clone(), |i, rng| {
        let id = rng.gen_range(1..=100);
        format!("BEGIN; UPDATE counters SET n = n + 1 WHERE id = {id}; INSERT INTO log (counter, v) VALUES ({id}, 'w{i}'); COMMIT")
    });
    std::thread::sleep(Duration::from_millis(1500));
    active.child.signal(Signal::SIGKILL).unwrap();
    let t0 = Instant::now();
    while !is_ready(&standby) {
        assert!(t0.elapsed() < Duration::from_secs(60), "standby did not take over:\n{}", standby.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("standby took over {:?} after kill -9", t0.elapsed());
    assert!(standby.log_text().contains("took the instance lock"));
    std::thread::sleep(Duration::from_millis(1500));
    let txns = work.finish();
    assert!(active.child.try_wait().unwrap().is_some());
    wait_equal(&cfg, Duration::from_secs(60), Some(&standby));
    assert_eq!(env.t("SELECT sum(n) FROM counters"), txns.to_string());
    wait_sql(
        &|| env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'ha'"),
        &txns.to_string(),
        Duration::from_secs(30),
    );
}

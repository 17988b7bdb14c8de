//! Errors that decide what happens next: a constraint violation on the target stops the
//! pipeline and says which row (and loses nothing once the row is fixed); a target restart
//! mid-stream is retried and ends equal.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::Rng;

const ITEMS: &str = "
CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL, v text);
INSERT INTO items SELECT g, 'c' || g, 'seed' FROM generate_series(1, 100) g;
";

// The target has a rule the source does not: codes are unique.
const ITEMS_TGT: &str = "CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text);";

const ITEMS_MAP: &str = r#"
[[table]]
source = "items"
target = "items"
key = ["id"]
[table.columns]
id = "id"
code = "code"
v = "v"
"#;

#[test]
fn unique_violation_stops_with_the_row_named_and_loses_nothing() {
    let env = Env::new(ITEMS, ITEMS_TGT);
    let cfg = env.write_config("uv", ITEMS_MAP);
    let mut run = start(&cfg, "uv");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));

    // a local write on the target takes a code the source will use
    env.t("INSERT INTO items VALUES (9999, 'dup', 'stray')");
    // A: fine
    env.s("INSERT INTO items SELECT g, 'c' || g, 'a' FROM generate_series(101, 150) g");
    // B: fifty rows, the last of which collides on the target
    let before = lsn(&env.s("SELECT pg_current_wal_insert_lsn()"));
    env.s("BEGIN; INSERT INTO items SELECT g, 'c' || g, 'b' FROM generate_series(151, 199) g; \
         INSERT INTO items VALUES (200, 'dup', 'b'); COMMIT");
    let after = lsn(&env.s("SELECT pg_current_wal_insert_lsn()"));
    // C: after the failing one
    env.s("UPDATE items SET v = 'c' WHERE id <= 10");

    let s = wait_status(&run, Duration::from_secs(60), |s| s["pipelines"]["forward"]["stopped"] == true);
    let fwd = &s["pipelines"]["forward"];
    let e = &fwd["error"];
    assert_eq!(e["sqlstate"], "23505", "{s}");
    assert_eq!(e["kind"], "data", "{s}");
    assert_eq!(e["retryable"], false, "{s}");
    assert_eq!(e["table"], "public.items", "{s}");
    assert_eq!(e["key"], "(200)", "{s}");
    let at = lsn(e["lsn"].as_str().unwrap_or_else(|| panic!("no LSN: {s}")));
    assert!(before < at && at <= after, "commit LSN {at:X} not within B ({before:X}..{after:X}): {s}");
    assert!(
        e["message"].as_str().unwrap().contains("duplicate key value violates unique constraint \"items_code_key\""),
        "{s}"
    );
    assert_eq!(e["detail"], "Key (code)=(dup) already exists.", "{s}");
    assert!(fwd["state"].as_str().unwrap().starts_with("stopped: "), "{s}");
    assert_eq!(s["ready"], false, "{s}");
    assert!(try_http_get(run.status, "/health/ready").unwrap().starts_with("HTTP/1.1 503"));
    assert!(http_get(run.status, "/metrics").contains("cdc_sync_stopped{direction=\"forward\"} 1"));

    // it exits non-zero, and the log says the same
    let status = wait_exit(&mut run, Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "{}", run.log_text());
    let log = run.log_text();
    for want in
        ["pipeline stopped", "23505", "public.items", "(200)", &format!("{:X}/{:X}", at >> 32, at & 0xFFFF_FFFF)]
    {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }
    // A is in, B (atomically) and C are not
    assert_eq!(env.t("SELECT count(*) FROM items WHERE id BETWEEN 101 AND 150"), "50");
    assert_eq!(env.t("SELECT count(*) FROM items WHERE id BETWEEN 151 AND 200"), "0");
    assert_eq!(env.t("SELECT count(*) FROM items WHERE v = 'c'"), "0");

    // fix the row on the target, start again: B and C arrive, each once
    env.t("DELETE FROM items WHERE id = 9999");
    let run = start(&cfg, "uv2");
    let out = wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("equal (200 rows)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_sql(&|| env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'uv'"), "3", Duration::from_secs(30));
    assert_eq!(env.t("SELECT code FROM items WHERE id = 200"), "dup");
}

#[test]
fn target_restart_mid_stream_is_retried_and_ends_equal() {
    let env = Env::new(COUNTERS, COUNTERS_TGT);
    let cfg = env.write_config("rs", COUNTERS_MAP);
    let mut run = start(&cfg, "rs");
    let work = Workload::start(env.src_conn.clone(), |i, rng| {
        let id = rng.gen_range(1..=100);
        format!("BEGIN; UPDATE counters SET n = n + 1 WHERE id = {id}; INSERT INTO log (counter, v) VALUES ({id}, 'w{i}'); COMMIT")
    });
    // streaming under load
    wait_status(&run, Duration::from_secs(30), |s| s["pipelines"]["forward"]["txns_applied"].as_u64() >= Some(20));

    let t0 = Instant::now();
    restart_cluster(&env.tgt);
    let restarted = t0.elapsed();

    // it notices, retries, and streams again, with more applied after the restart
    let s = wait_status(&run, Duration::from_secs(60), |s| s["pipelines"]["forward"]["retries"].as_u64() >= Some(1));
    let applied = s["pipelines"]["forward"]["txns_applied"].as_u64().unwrap();
    let s = wait_status(&run, Duration::from_secs(60), |s| {
        s["ready"] == true && s["pipelines"]["forward"]["txns_applied"].as_u64() > Some(applied + 20)
    });
    let txns = work.finish();
    assert!(run.child.try_wait().unwrap().is_none(), "exited:\n{}", run.log_text());
    let fwd = &s["pipelines"]["forward"];
    eprintln!(
        "target restart took {restarted:?}; streaming again {:?} after it began, {} retries, last: {}",
        t0.elapsed(),
        fwd["retries"],
        fwd["last_retry"]["error"]
    );
    assert_eq!(fwd["stopped"], false, "{s}");
    assert_eq!(fwd["error"], serde_json::Value::Null, "{s}");
    let kind = fwd["last_retry"]["kind"].as_str().unwrap_or_default();
    assert!(kind == "connection" || kind == "shutdown", "{s}");
    assert!(run.log_text().contains("retrying"), "{}", run.log_text());

    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert_eq!(env.t("SELECT sum(n) FROM counters"), txns.to_string());
    // every source transaction applied exactly once
    wait_sql(
        &|| env.t("SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = 'rs'"),
        &txns.to_string(),
        Duration::from_secs(30),
    );
}

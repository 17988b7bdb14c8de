//! Staying up through restarts. A steady writer on the source while the source goes away and
//! comes back, then the target restarts, then both at once: the process stays up, is not ready
//! (and `/status` says why) while it reconnects, nothing is lost or applied twice, and both sides
//! end equal. And an instance whose lock is taken by another session while it reconnects waits
//! as that session's standby, then takes over.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::Rng;

fn counters_txn(i: u64, rng: &mut rand::rngs::ThreadRng) -> String {
    let id = rng.gen_range(1..=100);
    format!("BEGIN; UPDATE counters SET n = n + 1 WHERE id = {id}; INSERT INTO log (counter, v) VALUES ({id}, 'w{i}'); COMMIT")
}

/// Source transactions the target has applied for `pipeline` (the counter is written in the same
/// target transaction as the rows).
fn applied_txns(env: &Env, pipeline: &str) -> u64 {
    env.t(&format!("SELECT coalesce((SELECT txns FROM cdc_sync.checkpoint WHERE pipeline = '{pipeline}'), 0)"))
        .parse()
        .unwrap()
}

/// Waits until the target has applied `more` transactions beyond what it has now.
fn wait_progress(env: &Env, run: &mut Running, pipeline: &str, more: u64) {
    let want = applied_txns(env, pipeline) + more;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert_running(run);
        let got = applied_txns(env, pipeline);
        if got >= want {
            return;
        }
        assert!(Instant::now() < deadline, "applied {got} of {want} transactions\nlog:\n{}", run.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_running(run: &mut Running) {
    if let Some(status) = run.child.try_wait().unwrap() {
        panic!("cdc-sync exited ({status}):\n{}", run.log_text());
    }
}

fn ready_code(run: &Running) -> String {
    let resp = try_http_get(run.status, "/health/ready").unwrap_or_default();
    resp.split_whitespace().nth(1).unwrap_or("-").to_string()
}

fn state(s: &serde_json::Value) -> &str {
    s["pipelines"]["forward"]["state"].as_str().unwrap_or("")
}

#[test]
fn source_and_target_restarts_are_waited_out_under_writes() {
    let env = Env::new(COUNTERS, COUNTERS_TGT);
    let cfg = env.write_config("restarts", COUNTERS_MAP);
    let mut run = start(&cfg, "restarts");
    let work = ResilientWorkload::start(env.src_conn.clone(), counters_txn);
    wait_progress(&env, &mut run, "restarts", 50);

    // 1. the source goes away: not ready, and /status says why
    stop_cluster(&env.src);
    let s = wait_status(&run, Duration::from_secs(30), |s| s["ready"] == false && state(s).starts_with("reconnecting"));
    assert!(state(&s).contains("instance lock"), "{s}");
    assert_eq!(s["role"], "active", "{s}");
    assert!(s["pipelines"]["forward"]["last_retry"]["kind"].is_string(), "{s}");
    assert_eq!(ready_code(&run), "503");
    assert_running(&mut run);
    start_cluster(&env.src);
    wait_status(&run, Duration::from_secs(60), |s| s["ready"] == true);
    wait_progress(&env, &mut run, "restarts", 50);

    // 2. the target restarts
    restart_cluster(&env.tgt);
    wait_progress(&env, &mut run, "restarts", 50);

    // 3. both at once
    std::thread::scope(|scope| {
        scope.spawn(|| restart_cluster(&env.tgt));
        restart_cluster(&env.src);
    });
    wait_progress(&env, &mut run, "restarts", 50);
    assert_eq!(ready_code(&run), "200");

    let errors = work.finish();
    assert!(errors >= 2, "the writer should have seen the source go away twice: {errors} errors");
    wait_equal(&cfg, Duration::from_secs(120), Some(&run));
    // every committed source transaction applied exactly once: the source's own sum counts them
    let committed = env.s("SELECT sum(n) FROM counters");
    assert_eq!(env.t("SELECT sum(n) FROM counters"), committed);
    assert_eq!(env.t("SELECT count(*) FROM log"), env.s("SELECT count(*) FROM log"));
    wait_sql(&|| applied_txns(&env, "restarts").to_string(), &committed, Duration::from_secs(30));
    let s = try_status(run.status).unwrap();
    assert!(s["pipelines"]["forward"]["retries"].as_u64().unwrap() >= 3, "{s}");
    assert_running(&mut run);
    let log = run.log_text();
    assert!(log.contains("lost the instance lock"), "{log}");
}

#[test]
fn a_lock_taken_meanwhile_is_waited_for_on_standby() {
    let env = Env::new(COUNTERS, COUNTERS_TGT);
    let cfg = env.write_config("takeover", COUNTERS_MAP);
    let mut run = start(&cfg, "takeover");
    env.s("UPDATE counters SET n = n + 1 WHERE id = 1");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));

    // Another session ends the one holding cdc-sync's lock and takes the lock itself, as a
    // second instance would when the first one's connection broke.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let key = "cdc-sync:cdc_sync_takeover";
    let (other, other_pid) = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&env.src_conn, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let ended: bool = client
            .query_one(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                 AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0)",
                &[&key],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ended);
        // waits in the lock queue until that backend is gone, so it is first in line
        client.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key]).await.unwrap();
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        (client, pid)
    });
    let s = wait_status(&run, Duration::from_secs(30), |s| s["role"] == "standby");
    assert!(state(&s).contains(&format!("standby: instance lock held by backend pid {other_pid}")), "{s}");
    assert_eq!(ready_code(&run), "503");
    let metrics = http_get(run.status, "/metrics");
    assert!(metrics.contains("cdc_sync_standby{direction=\"forward\"} 1"), "{metrics}");
    assert_running(&mut run);

    // the holder goes away: cdc-sync takes the lock and streams again from its checkpoint
    env.s("UPDATE counters SET n = n + 1 WHERE id = 2");
    drop(other);
    drop(rt);
    let s = wait_status(&run, Duration::from_secs(30), |s| s["role"] == "active" && s["ready"] == true);
    assert_eq!(state(&s), "streaming", "{s}");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    assert_eq!(env.t("SELECT sum(n) FROM counters"), "2");
    assert_eq!(applied_txns(&env, "takeover"), 2);
    assert_running(&mut run);
}

/// A crash of the target server right after a commit was applied and confirmed to the source
/// loses nothing: the apply session's commits are on the target's disk before they return
/// (`synchronous_commit = local`), whatever the server's default. The target here commits
/// asynchronously by default (the harness's setting) and its WAL writer wakes only every 10 s,
/// so an asynchronous apply commit is still in shared memory when the server is killed, and the
/// source, already past it, would never send it again.
#[test]
fn a_target_crash_after_a_confirmed_commit_loses_nothing() {
    let tgt = strangler_support::PgCluster::builder().conf("wal_writer_delay = 10000ms");
    let env = Env::with_clusters(strangler_support::PgCluster::builder(), tgt, COUNTERS, COUNTERS_TGT);
    let cfg = env.write_config("tcrash", COUNTERS_MAP);
    let mut run = start(&cfg, "tcrash");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let before = env.s("SELECT pg_current_wal_lsn()");
    env.s("UPDATE counters SET n = 42 WHERE id = 7");
    wait_sql(&|| env.t("SELECT n FROM counters WHERE id = 7"), "42", Duration::from_secs(30));
    // the source has let go of the change
    let confirmed =
        format!("SELECT bool_or(confirmed_flush_lsn > '{before}') FROM pg_replication_slots WHERE NOT temporary");
    wait_sql(&|| env.s(&confirmed), "t", Duration::from_secs(30));
    // the target server dies at once (no shutdown checkpoint, shared memory lost), then recovers
    pg_ctl(&env.tgt, &["-m", "immediate", "-w", "-t", "60", "stop"]);
    start_cluster(&env.tgt);
    assert_eq!(env.t("SELECT n FROM counters WHERE id = 7"), "42", "the confirmed change survived the crash");
    // and the pipeline goes on from there
    env.s("UPDATE counters SET n = 43 WHERE id = 8");
    wait_sql(&|| env.t("SELECT n FROM counters WHERE id = 8"), "43", Duration::from_secs(60));
    assert_running(&mut run);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
}

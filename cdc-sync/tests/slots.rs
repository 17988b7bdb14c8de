//! Slot and WAL safety. A pipeline stalled on its target (a table locked there) while the source
//! writes on and checkpoints with a tiny `max_slot_wal_keep_size`: the server invalidates the
//! slot. By default cdc-sync stops with a status naming the slot and leaves the target alone, and
//! a restart stops the same way before touching anything; with `on_slot_lost = "resnapshot"` it
//! copies every table again without exiting and ends equal. `wal_status` and `safe_wal_size` are
//! in `/status` and `/metrics`. And a slot whose tables are quiet while the rest of the source is
//! written follows the server instead of holding its WAL.

mod common;

use std::time::{Duration, Instant};

use common::*;

const SLOT_CONF: &[&str] = &["max_slot_wal_keep_size = 1MB"];

fn conf(resnapshot: bool) -> String {
    let policy = if resnapshot { "[replication]\non_slot_lost = \"resnapshot\"\n" } else { "" };
    format!("{policy}{COUNTERS_MAP}")
}

/// Stall the pipeline (lock a target table it writes), write on the source, and switch WAL
/// segments and checkpoint until the server invalidates the slot; then let the target go.
fn stall_until_the_slot_is_lost(env: &Env, slot: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (tgt, connection) = tokio_postgres::connect(&env.tgt_conn, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        tgt.batch_execute("BEGIN; LOCK TABLE counters IN ACCESS EXCLUSIVE MODE").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let lost = format!("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'");
        let mut i = 0;
        while env.s(&lost) != "lost" {
            assert!(Instant::now() < deadline, "the slot was never invalidated: {}", env.s(&lost));
            i += 1;
            env.s(&format!("UPDATE counters SET n = n + 1 WHERE id = {}", i % 100 + 1));
            env.s("INSERT INTO log (counter, v) SELECT 1, repeat('x', 1000) FROM generate_series(1, 100)");
            env.s("SELECT pg_switch_wal()");
            env.s("CHECKPOINT");
        }
        tgt.batch_execute("ROLLBACK").await.unwrap();
    });
}

#[test]
fn an_invalidated_slot_stops_the_pipeline_and_leaves_the_target_alone() {
    let env = Env::with_source_conf(COUNTERS, COUNTERS_TGT, SLOT_CONF);
    let cfg = env.write_config("lost", &conf(false));
    let mut run = spawn_with(&cfg, "lost", &["--linger-after-stop", "60"]);
    wait_status(&run, Duration::from_secs(60), |s| s["ready"] == true);
    env.s("UPDATE counters SET n = n + 1 WHERE id = 1");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    let s = wait_status(&run, Duration::from_secs(10), |s| s["pipelines"]["forward"]["wal_status"].is_string());
    assert!(s["pipelines"]["forward"]["safe_wal_bytes"].is_i64(), "{s}");

    stall_until_the_slot_is_lost(&env, "cdc_sync_lost");
    env.s("UPDATE counters SET n = n + 1000 WHERE id = 3"); // can no longer reach the target
    let s = wait_status(&run, Duration::from_secs(60), |s| s["pipelines"]["forward"]["stopped"] == true);
    let error = &s["pipelines"]["forward"]["error"];
    assert_eq!(error["kind"], "slot", "{s}");
    assert!(error["message"].as_str().unwrap().contains("replication slot cdc_sync_lost was invalidated"), "{s}");
    assert_eq!(s["ready"], false);
    let metrics = http_get(run.status, "/metrics");
    assert!(metrics.contains("cdc_sync_stopped{direction=\"forward\"} 1"), "{metrics}");
    assert!(metrics.contains("cdc_sync_slot_wal_status{direction=\"forward\"} 3"), "{metrics}");
    run.child.signal(strangler_support::Signal::SIGTERM).ok();
    let _ = wait_exit(&mut run, Duration::from_secs(30));
    assert!(
        run.log_text().contains("pipeline stopped: replication slot cdc_sync_lost was invalidated"),
        "{}",
        run.log_text()
    );
    assert_eq!(env.t("SELECT count(*) FROM counters"), "100", "the target is not truncated");

    // a restart stops too, before it touches the target, and says what to do
    let mut again = spawn_with(&cfg, "lost-again", &["--linger-after-stop", "0"]);
    let status = wait_exit(&mut again, Duration::from_secs(60));
    assert_eq!(status.code(), Some(4));
    let log = again.log_text();
    assert!(log.contains("replication slot cdc_sync_lost of pipeline lost was invalidated by the server"), "{log}");
    assert!(log.contains("on_slot_lost"), "{log}");
    assert_eq!(env.t("SELECT count(*) FROM counters"), "100");
    assert_eq!(env.t("SELECT n FROM counters WHERE id = 3"), "0");
}

#[test]
fn with_on_slot_lost_resnapshot_an_invalidated_slot_is_copied_again() {
    let env = Env::with_source_conf(COUNTERS, COUNTERS_TGT, SLOT_CONF);
    let cfg = env.write_config("resnap", &conf(true));
    let mut run = start(&cfg, "resnap");
    env.s("UPDATE counters SET n = n + 1 WHERE id = 1");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));

    stall_until_the_slot_is_lost(&env, "cdc_sync_resnap");
    // the process stays up, copies everything again and streams from the new slot
    env.s("UPDATE counters SET n = n + 100 WHERE id = 2");
    wait_equal(&cfg, Duration::from_secs(90), Some(&run));
    assert!(run.child.try_wait().unwrap().is_none(), "exited:\n{}", run.log_text());
    assert_eq!(env.t("SELECT sum(n) FROM counters"), env.s("SELECT sum(n) FROM counters"));
    assert_eq!(env.s("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'cdc_sync_resnap'"), "reserved");
    let log = run.log_text();
    assert!(log.contains("on_slot_lost = \"resnapshot\""), "{log}");
    wait_status(&run, Duration::from_secs(30), |s| s["ready"] == true && s["pipelines"]["forward"]["stopped"] == false);
}

/// The mapped tables are quiet and another table of the source is written: the slot still moves
/// on (cdc-sync confirms a keepalive's position when it has nothing in flight, as PostgreSQL's
/// own subscriber does), so it does not hold the source's WAL until `max_slot_wal_keep_size`
/// invalidates it or the disk fills. Then a change to a mapped table still arrives.
#[test]
fn a_quiet_slot_follows_the_server_while_other_tables_are_written() {
    let schema = format!("{COUNTERS} CREATE TABLE noise (id bigserial PRIMARY KEY, v text);");
    let env = Env::with_source_conf(&schema, COUNTERS_TGT, &["wal_sender_timeout = 2s"]);
    let cfg = env.write_config("quiet", COUNTERS_MAP);
    let run = start(&cfg, "quiet");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    env.s("INSERT INTO noise (v) SELECT repeat('x', 200) FROM generate_series(1, 20000)");
    let after = env.s("SELECT pg_current_wal_lsn()");
    let passed =
        format!("SELECT bool_or(confirmed_flush_lsn >= '{after}') FROM pg_replication_slots WHERE NOT temporary");
    wait_sql(&|| env.s(&passed), "t", Duration::from_secs(30));
    env.s("UPDATE counters SET n = 5 WHERE id = 3");
    wait_sql(&|| env.t("SELECT n FROM counters WHERE id = 3"), "5", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
}

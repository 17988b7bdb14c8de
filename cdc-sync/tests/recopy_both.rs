//! `both` tables and the limits that lost or resurrected data, on two real clusters with the real
//! binary:
//! - a `both` table copied again from the start (`on_slot_lost = "resnapshot"`, the forward slot
//!   dropped while the pipeline was stopped) keeps the service's changes the reverse stream had
//!   not applied: a plain service edit is carried to legacy, a row both sides changed is decided
//!   by the table's policy (`lww`) and recorded in legacy's `cdc_sync.conflicts`;
//! - a forward-only table turned `both` does not carry back a row legacy deleted while the
//!   pipeline was stopped (the forward applier had written it without an origin), and does carry
//!   a row only the service inserted;
//! - a forward-only copy interrupted before the table turned `both` starts over under the copy's
//!   lock, so the service's changes committed meanwhile stand (before: a duplicate key stop);
//! - a resumed `both` copy records no update-vs-delete conflict for a row deleted in its replay
//!   window.
//!
//! Every test ends with `cdc-sync verify` equal.

mod common;

use std::time::{Duration, Instant};

use common::*;

const T: &str = "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text NOT NULL);";

fn items(direction: &str, extra: &str) -> String {
    format!(
        "{extra}[[table]]\nsource = \"items\"\ntarget = \"items\"\nkey = [\"id\"]\ndirection = \"{direction}\"\n\
         [table.columns]\nid = \"id\"\nv = \"v\"\nnote = \"note\"\n"
    )
}

const ALL: &str = "SELECT string_agg(concat_ws(':', id, v, note), ',' ORDER BY id) FROM items";

/// Stop the pipeline (kill) and wait until its slots are inactive.
fn stop(env: &Env, run: Running) {
    drop(run);
    let q = "SELECT count(*) FROM pg_replication_slots WHERE active";
    wait_sql(&|| env.s(q), "0", Duration::from_secs(30));
    wait_sql(&|| env.t(q), "0", Duration::from_secs(30));
}

#[test]
fn a_both_table_copied_again_keeps_the_service_changes_legacy_had_not_received() {
    let env = Env::new(&format!("{T} INSERT INTO items SELECT g, 0, 'legacy' FROM generate_series(1, 10) g;"), T);
    let cfg = env.write_config("recopy", &items("both", "[replication]\non_slot_lost = \"resnapshot\"\n"));
    let run = start(&cfg, "recopy");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    stop(&env, run);

    // while stopped, in this order (commit times): 1 only the service edits; 2 legacy, then the
    // service (both changed it: the service's is later); 3 the service, then legacy (legacy's is
    // later); 4 only legacy edits
    env.t("UPDATE items SET v = 1, note = 'service' WHERE id = 1");
    env.s("UPDATE items SET v = 2, note = 'legacy' WHERE id = 2");
    env.t("UPDATE items SET v = 2, note = 'service' WHERE id = 2");
    env.t("UPDATE items SET v = 3, note = 'service' WHERE id = 3");
    env.s("UPDATE items SET v = 3, note = 'legacy' WHERE id = 3");
    env.s("UPDATE items SET v = 4, note = 'legacy' WHERE id = 4");
    // the forward slot is lost: the next start copies every table again
    env.s("SELECT pg_drop_replication_slot('cdc_sync_recopy')");

    let run = start(&cfg, "recopy");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let want = "1:1:service,2:2:service,3:3:legacy,4:4:legacy,5:0:legacy,6:0:legacy,7:0:legacy,8:0:legacy,\
                9:0:legacy,10:0:legacy";
    // the service's version reaches the target back through the forward stream
    wait_sql(&|| env.t(ALL), want, Duration::from_secs(30));
    assert_eq!(env.s(ALL), want, "{}", run.log_text());
    // the rows both sides changed are recorded on legacy (the reverse direction's written side)
    let conflicts = "SELECT string_agg(concat_ws(':', pipeline, key, change, policy, winner, decision, \
                     local_version->>'note', incoming_version->>'note'), ',' ORDER BY key) FROM cdc_sync.conflicts";
    assert_eq!(
        env.s(conflicts),
        "recopy_rev:(2):update:lww:target:incoming_applied:legacy:service,\
         recopy_rev:(3):update:lww:source:local_kept:legacy:service"
    );
    assert_eq!(env.t("SELECT count(*) FROM cdc_sync.conflicts"), "0");
    // both ways as usual afterwards
    env.t("UPDATE items SET note = 'service after' WHERE id = 1");
    env.s("UPDATE items SET note = 'legacy after' WHERE id = 2");
    wait_sql(&|| env.s("SELECT note FROM items WHERE id = 1"), "service after", Duration::from_secs(30));
    wait_sql(&|| env.t("SELECT note FROM items WHERE id = 2"), "legacy after", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let log = run.log_text();
    assert!(log.contains("settled the service's versions legacy had not received"), "{log}");
}

#[test]
fn a_forward_table_turned_both_does_not_resurrect_a_row_legacy_deleted() {
    let env = Env::new(&format!("{T} INSERT INTO items SELECT g, 0, 'legacy' FROM generate_series(1, 5) g;"), T);
    let cfg = env.write_config("turned", &items("forward", ""));
    let run = start(&cfg, "turned");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    // rows the forward applier writes (after the copy): without an origin, it flows one way only
    env.s("INSERT INTO items VALUES (6, 6, 'streamed'), (7, 7, 'streamed')");
    wait_sql(&|| env.t("SELECT count(*) FROM items"), "7", Duration::from_secs(30));
    stop(&env, run);

    // legacy deletes a row the target still has; the service inserts a row of its own
    env.s("DELETE FROM items WHERE id = 6");
    env.t("INSERT INTO items VALUES (100, 100, 'service only')");

    let cfg = env.write_config("turned", &items("both", ""));
    let run = start(&cfg, "turned");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let want = "1:0:legacy,2:0:legacy,3:0:legacy,4:0:legacy,5:0:legacy,7:7:streamed,100:100:service only";
    assert_eq!(env.s(ALL), want, "{}", run.log_text());
    assert_eq!(env.t(ALL), want);
    // both ways afterwards
    env.t("UPDATE items SET note = 'service after' WHERE id = 7");
    wait_sql(&|| env.s("SELECT note FROM items WHERE id = 7"), "service after", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
}

const BIG: &str = "CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, note text NOT NULL);";

fn big(direction: &str) -> String {
    format!(
        // indexes kept through the copy: rebuilding a deferred primary key would wait for the test's
        // lock on the table
        "[replication]\nsnapshot_workers = 2\nsnapshot_chunk_pages = 10\nsnapshot_defer_indexes = false\n\
         [[table]]\nsource = \"big\"\ntarget = \"big\"\nkey = [\"id\"]\ndirection = \"{direction}\"\n\
         [table.columns]\nid = \"id\"\nv = \"v\"\nnote = \"note\"\n"
    )
}

/// A forward-only pipeline killed (SIGKILL) in the middle of `big`'s multi-chunk copy, with a
/// chunk in flight.
fn kill_mid_copy(env: &Env, cfg: &std::path::PathBuf, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tgt = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&env.tgt_conn, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        c
    });
    let mut run = spawn(cfg, name);
    let chunks = format!(
        "SELECT count(*) FILTER (WHERE done) FROM cdc_sync.snapshot_chunk WHERE pipeline = '{name}' AND table_name = 'public.big'"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the copy did not start:\n{}", run.log_text());
        assert!(run.child.try_wait().unwrap().is_none(), "exited:\n{}", run.log_text());
        if rt.block_on(tgt.query_opt(chunks.as_str(), &[])).ok().flatten().is_some_and(|r| r.get::<_, i64>(0) >= 2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // hold the unfinished chunks' state rows: a worker finishing its COPY blocks on them
    rt.block_on(tgt.batch_execute(&format!(
        "BEGIN; SELECT chunk FROM cdc_sync.snapshot_chunk WHERE pipeline = '{name}' AND table_name = 'public.big' \
         AND NOT done FOR UPDATE"
    )))
    .unwrap();
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE 'UPDATE cdc_sync.snapshot_chunk%'";
    wait_sql(&|| (env.t(blocked) != "0").to_string(), "true", Duration::from_secs(60));
    run.child.signal(strangler_support::Signal::SIGKILL).unwrap();
    let _ = wait_exit(&mut run, Duration::from_secs(10));
    rt.block_on(tgt.batch_execute("ROLLBACK")).unwrap();
    assert_eq!(env.t(&format!("SELECT state FROM cdc_sync.snapshot_table WHERE pipeline = '{name}'")), "copying");
}

/// A forward-only pipeline turned `both` in mid-copy: the interrupted copy starts over under the
/// copy's lock (not resumed after a carry at slot creation), so a service delete and update of
/// its own rows committed while the copy waits for that lock are what both sides end with.
#[test]
fn a_copy_interrupted_before_the_table_turned_both_starts_over_and_keeps_the_service_changes() {
    let env = Env::new(
        &format!("{BIG} INSERT INTO big SELECT g, 0, repeat('l', 100) FROM generate_series(1, 20000) g; ANALYZE big;"),
        BIG,
    );
    let cfg = env.write_config("midcopy", &big("forward"));
    kill_mid_copy(&env, &cfg, "midcopy");
    // the service's own rows (a forward-only copy empties the table before it fills it)
    env.t("INSERT INTO big SELECT g, 1, 'service' FROM generate_series(5000001, 5000010) g");

    let cfg = env.write_config("midcopy", &big("both"));
    let service = TableLockHolder::new(&env, "big");
    let mut run = spawn(&cfg, "midcopy");
    wait_copy_waits_for_lock(&env, &mut run, "big");
    // the reverse slot exists by now: these changes are in the reverse stream, before the floor
    assert_eq!(env.t("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc_sync_midcopy_rev'"), "1");
    service.commit("DELETE FROM big WHERE id = 5000001; UPDATE big SET v = 42, note = 'changed' WHERE id = 5000002");
    wait_status(&run, Duration::from_secs(90), |s| s["ready"] == true);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let q = "SELECT count(*), sum(v), string_agg(note, ',' ORDER BY id) FROM big WHERE id > 5000000";
    let want = format!("9|{}|changed{}", 42 + 8, ",service".repeat(8));
    assert_eq!(env.t(q), want, "{}", run.log_text());
    assert_eq!(env.s(q), want);
    let log = run.log_text();
    assert!(log.contains("its interrupted copy starts over"), "{log}");
}

/// A `both` table whose first copy is resumed after a crash: the stream replays the changes
/// between the two snapshots onto rows copied at the later one, and an update of a row legacy
/// deleted in that window finds no row. That is no update-vs-delete conflict (the delete follows
/// in the stream): nothing is recorded (before, a conflict was).
#[test]
fn a_resumed_both_copy_records_no_conflict_for_a_row_deleted_in_its_replay_window() {
    let env = Env::new(
        &format!("{BIG} INSERT INTO big SELECT g, 0, repeat('l', 100) FROM generate_series(1, 20000) g; ANALYZE big;"),
        BIG,
    );
    let cfg = env.write_config("resumed", &big("both"));
    kill_mid_copy(&env, &cfg, "resumed");
    // the last chunk is not copied yet: its rows come from the resumed copy's snapshot
    let last_done = "SELECT done FROM cdc_sync.snapshot_chunk WHERE pipeline = 'resumed' ORDER BY chunk DESC LIMIT 1";
    assert_eq!(env.t(last_done), "f");
    env.s("UPDATE big SET v = 7, note = 'edited' WHERE id = 20000");
    env.s("DELETE FROM big WHERE id = 20000");
    env.s("UPDATE big SET v = 8, note = 'edited' WHERE id = 19999");

    let run = start(&cfg, "resumed");
    wait_equal(&cfg, Duration::from_secs(90), Some(&run));
    let log = run.log_text();
    assert!(log.contains("resuming the table's copy from its last finished chunk"), "{log}");
    assert_eq!(env.t("SELECT count(*) FROM big WHERE id = 20000"), "0");
    assert_eq!(env.t("SELECT concat_ws(':', v, note) FROM big WHERE id = 19999"), "8:edited");
    assert_eq!(env.t("SELECT count(*) FROM cdc_sync.conflicts"), "0", "{}", env.t("SELECT * FROM cdc_sync.conflicts"));
    assert_eq!(env.s("SELECT count(*) FROM cdc_sync.conflicts"), "0");
}

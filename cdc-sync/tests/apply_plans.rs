//! The apply session's statements keep using the key index when the target table grows after
//! they were first planned (generic plans are made once per session): a table that starts empty
//! and fills through the stream must not be scanned whole by every later delete.

mod common;

use std::time::Duration;

use common::*;

const SRC: &str = "CREATE TABLE log (id bigint PRIMARY KEY, v text);";
// no autovacuum: nothing but the apply session reads the table while it is watched
const TGT: &str = "CREATE TABLE log (id bigint PRIMARY KEY, v text) WITH (autovacuum_enabled = off);";

/// The target table's cumulative counters: (seq_scan, idx_scan, n_tup_ins, n_tup_del). Read from
/// the statistics view only: a count(*) on the table would itself be a scan.
fn counters(env: &Env) -> (i64, i64, i64, i64) {
    let s = env.t(
        "SELECT seq_scan, coalesce(idx_scan, 0), n_tup_ins, n_tup_del FROM pg_stat_user_tables WHERE relname = 'log'",
    );
    let v: Vec<i64> = s.split('|').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2], v[3])
}

/// Wait until the apply session's statistics show `ins` inserts and `del` deletes (they are
/// flushed when its backend goes idle, about once a second).
fn wait_counted(env: &Env, ins: i64, del: i64) -> (i64, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (seq, idx, i, d) = counters(env);
        if i >= ins && d >= del {
            return (seq, idx);
        }
        assert!(std::time::Instant::now() < deadline, "applied {i} inserts and {d} deletes, want {ins} and {del}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deletes_use_the_key_index_after_the_table_grew() {
    let env = Env::new(SRC, TGT);
    let cfg = env.write_config(
        "plans",
        "[[table]]\nsource = \"log\"\ntarget = \"log\"\nkey = [\"id\"]\n[table.columns]\nid = \"id\"\nv = \"v\"\n",
    );
    let run = start(&cfg, "plans");
    // the apply session plans its upsert and delete while the table holds a row or two
    // (waiting in between: a batch holding both would merge the insert and the delete of row 1)
    env.s("INSERT INTO log VALUES (1, 'a'), (2, 'b')");
    wait_counted(&env, 2, 0);
    env.s("DELETE FROM log WHERE id = 1");
    wait_counted(&env, 2, 1);
    // then it grows: a scan per statement would now read 30,000 rows
    env.s("INSERT INTO log SELECT g, 'v' || g FROM generate_series(3, 30000) g");
    let (seq_before, idx_before) = wait_counted(&env, 30000, 1);
    // 50 source transactions, each deleting one row
    env.s("DO $$ BEGIN FOR i IN 1..50 LOOP DELETE FROM log WHERE id = i * 100; COMMIT; END LOOP; END $$");
    let (seq_after, idx_after) = wait_counted(&env, 30000, 51);
    assert_eq!(
        seq_after,
        seq_before,
        "the deletes scanned the whole table ({} sequential scans)\n{}",
        seq_after - seq_before,
        run.log_text()
    );
    assert!(idx_after > idx_before, "the deletes did not use the key index: {idx_before} -> {idx_after}");
    assert_eq!(env.t("SELECT count(*) FROM log"), "29949");
}

//! Copies of tables that also flow back (`direction = "both"`), on two real clusters with the
//! real binary: the service writing a table while its first forward copy runs (nothing it wrote
//! is lost on either side); a `both` table added by SIGHUP to a pipeline that already flows back
//! (the service's own rows reach legacy, and later legacy edits of copied rows are no conflicts);
//! and a table taken out of sync.toml and added back later (copied again, so the changes made
//! while it was out are not missed); a `both` table with an identity key (GENERATED ALWAYS) and a
//! stored generated column, copied with the service's own rows and streamed both ways (and a
//! mapping of the generated column refused). Every test ends with `cdc-sync verify` equal.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::Rng;

fn count(out: String) -> u64 {
    out.trim().parse().unwrap_or_else(|_| panic!("not a count: {out:?}"))
}

fn hup(run: &Running) {
    let pid = run.child.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

fn table(name: &str, direction: &str, extra: &str) -> String {
    format!(
        "[[table]]\nsource = \"{name}\"\ntarget = \"{name}\"\nkey = [\"id\"]\ndirection = \"{direction}\"\n{extra}\
         [table.columns]\nid = \"id\"\nv = \"v\"\nnote = \"note\"\n"
    )
}

const BIG: &str = "
CREATE TABLE acc (id bigint PRIMARY KEY, v int NOT NULL, note text NOT NULL);
INSERT INTO acc SELECT g, 0, repeat('l', 100) FROM generate_series(1, 150000) g;
ANALYZE acc;
";

const BIG_TGT: &str = "CREATE TABLE acc (id bigint PRIMARY KEY, v int NOT NULL, note text NOT NULL);";

/// The service's writes: new rows of its own (some deleted again), and updates anywhere in the
/// key space (during the copy they hit the rows already copied, or nothing).
fn service_writes(i: u64, rng: &mut rand::rngs::ThreadRng) -> String {
    match i % 5 {
        0 | 1 => format!("INSERT INTO acc VALUES ({}, {i}, 'service')", 10_000_000 + i),
        2 => format!("DELETE FROM acc WHERE id = {}", 10_000_000 + i - 2),
        _ => format!("UPDATE acc SET v = v + 1, note = 'service {i}' WHERE id = {}", rng.gen_range(1..=150_000)),
    }
}

#[test]
fn service_writes_during_the_first_copy_of_a_both_table_are_not_lost() {
    // the service already has rows of its own (and a stale copy of some of legacy's)
    let env = Env::new(
        BIG,
        &format!(
            "{BIG_TGT} INSERT INTO acc SELECT g, -1, 'stale' FROM generate_series(1, 100) g; \
             INSERT INTO acc SELECT g, g, 'only on the service' FROM generate_series(5000001, 5000200) g;"
        ),
    );
    let cfg = env.write_config(
        "first",
        &format!("[replication]\nsnapshot_workers = 2\nsnapshot_chunk_pages = 40\n{}", table("acc", "both", "")),
    );
    // the service writes before cdc-sync starts, during the copy and after it
    let service = Workload::start(env.tgt_conn.clone(), service_writes);
    let mut run = spawn(&cfg, "first");
    let deadline = Instant::now() + Duration::from_secs(120);
    while try_status(run.status).is_none_or(|s| s["ready"] != true) {
        assert!(Instant::now() < deadline, "not ready:\n{}", run.log_text());
        assert!(run.child.try_wait().unwrap().is_none(), "exited:\n{}", run.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500)); // keep writing past the switch to streaming
    let writes = service.finish();
    assert!(writes > 200, "too few writes: {writes}");
    wait_equal(&cfg, Duration::from_secs(120), Some(&run));
    // the copy really ran while the service wrote: rows the service inserted then are still there
    let during = "SELECT count(*) FROM acc WHERE id > 10000000 AND pg_xact_commit_timestamp(xmin) > \
                  (SELECT min(updated_at) FROM cdc_sync.snapshot_chunk WHERE table_name = 'public.acc') AND \
                  pg_xact_commit_timestamp(xmin) < (SELECT updated_at FROM cdc_sync.snapshot_table \
                  WHERE pipeline = 'first' AND table_name = 'public.acc')";
    assert!(count(env.t(during)) > 0, "no service write landed during the copy:\n{}", run.log_text());
    assert!(count(env.t("SELECT count(*) FROM cdc_sync.snapshot_chunk WHERE table_name = 'public.acc'")) >= 10);
    // every row the service inserted and did not delete is on both sides, as it last wrote it
    let own = "SELECT count(*), coalesce(sum(v), 0) FROM acc WHERE id > 10000000";
    assert_eq!(env.s(own), env.t(own));
    let kept = (0..=writes).filter(|i| i % 5 == 1 || (i % 5 == 0 && i + 2 > writes)).count() as u64;
    assert_eq!(count(env.t("SELECT count(*) FROM acc WHERE id > 10000000")), kept);
    // the rows only the service had are in legacy; its stale copies gave way to legacy's rows
    assert_eq!(count(env.s("SELECT count(*) FROM acc WHERE id BETWEEN 5000001 AND 5000200")), 200);
    assert_eq!(count(env.t("SELECT count(*) FROM acc WHERE note = 'stale'")), 0);
    let all = "SELECT count(*), sum(v), sum(id) FROM acc";
    assert_eq!(env.s(all), env.t(all));
}

/// The service's change of one of its own rows, committed after the reverse slot (and the
/// forward copy's snapshot) exist but before the copy locks the table, is what both sides end
/// with (gap: the reverse snapshot at slot creation had already carried the old rows to legacy,
/// so they were in the copy's snapshot and the copy brought them back, while the reverse stream
/// skipped the change as older than the table's floor). Deterministic: a session of the test
/// holds a lock the copy must wait for, and commits its changes while the copy waits.
#[test]
fn a_service_change_committed_just_before_the_copy_locks_the_table_is_not_undone() {
    let env = Env::new(
        "CREATE TABLE acc (id bigint PRIMARY KEY, v int NOT NULL, note text NOT NULL); \
         INSERT INTO acc SELECT g, 0, 'legacy' FROM generate_series(1, 1000) g;",
        &format!("{BIG_TGT} INSERT INTO acc SELECT g, 1, 'service' FROM generate_series(5000001, 5000010) g;"),
    );
    let cfg = env.write_config("early", &table("acc", "both", ""));
    let service = TableLockHolder::new(&env, "acc");
    let mut run = spawn(&cfg, "early");
    wait_copy_waits_for_lock(&env, &mut run, "acc");
    // (this session holds a lock the waiting copy conflicts with: its writes go ahead of it)
    service.commit("DELETE FROM acc WHERE id = 5000001; UPDATE acc SET v = 42, note = 'changed' WHERE id = 5000002");
    wait_status(&run, Duration::from_secs(60), |s| s["ready"] == true);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let q = "SELECT count(*), sum(v), string_agg(note, ',' ORDER BY id) FROM acc WHERE id > 5000000";
    let want = format!("9|{}|changed{}", 42 + 8, ",service".repeat(8));
    assert_eq!(env.t(q), want, "{}", run.log_text());
    assert_eq!(env.s(q), want);
}

const ACC: &str = "CREATE TABLE accounts (id int PRIMARY KEY, v int NOT NULL, note text);
CREATE TABLE extra (id int PRIMARY KEY, v int NOT NULL, note text);";

#[test]
fn a_both_table_added_by_sighup_carries_the_service_rows_and_sees_no_false_conflicts() {
    let env = Env::new(
        &format!(
            "{ACC} INSERT INTO accounts SELECT g, 0, 'legacy' FROM generate_series(1, 20) g; \
             INSERT INTO extra SELECT g, 0, 'legacy' FROM generate_series(1, 50) g;"
        ),
        // the service already has extra's rows 1..50 (a stale copy of 1..5) and 1001..1020 of its own
        &format!(
            "{ACC} INSERT INTO extra SELECT g, 0, CASE WHEN g <= 5 THEN 'stale' ELSE 'legacy' END \
             FROM generate_series(1, 50) g; INSERT INTO extra SELECT g, g, 'the service''s own' FROM generate_series(1001, 1020) g;"
        ),
    );
    let cfg = env.write_config("added", &table("accounts", "both", ""));
    let run = start(&cfg, "added");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    // flowing back already
    env.t("UPDATE accounts SET note = 'service' WHERE id = 1");
    wait_sql(&|| env.s("SELECT note FROM accounts WHERE id = 1"), "service", Duration::from_secs(30));

    // extra added (and nothing written on the service after it: no echo moves the horizon past
    // the copy)
    let cfg = env.write_config(
        "added",
        &format!("{}{}", table("accounts", "both", ""), table("extra", "both", "conflict = \"target_wins\"\n")),
    );
    hup(&run);
    wait_sql(&|| run.log_text().contains("SIGHUP: sync.toml re-read").to_string(), "true", Duration::from_secs(30));
    let done = "SELECT count(*) FROM cdc_sync.snapshot_table WHERE table_name = 'public.extra' AND state = 'done'";
    wait_status(&run, Duration::from_secs(60), |s| s["ready"] == true && env.t(done) == "1");

    // legacy edits of copied rows are no conflicts, whatever the policy (gap: copied rows carried
    // no origin, so they looked like the service's own unseen writes)
    env.s("UPDATE extra SET note = 'legacy edit' WHERE id <= 10");
    wait_sql(&|| env.t("SELECT count(*) FROM extra WHERE note = 'legacy edit'"), "10", Duration::from_secs(30));
    // the rows only the service had reached legacy (gap: no reverse snapshot for an added table)
    wait_sql(&|| env.s("SELECT count(*) FROM extra WHERE id BETWEEN 1001 AND 1020"), "20", Duration::from_secs(30));
    env.s("UPDATE extra SET note = 'legacy edit' WHERE id BETWEEN 1001 AND 1005");
    wait_sql(&|| env.t("SELECT count(*) FROM extra WHERE note = 'legacy edit'"), "15", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert_eq!(
        count(env.t("SELECT count(*) FROM cdc_sync.conflicts")),
        0,
        "{}",
        env.t("SELECT * FROM cdc_sync.conflicts")
    );
    assert_eq!(
        count(env.s("SELECT count(*) FROM cdc_sync.conflicts")),
        0,
        "{}",
        env.s("SELECT * FROM cdc_sync.conflicts")
    );
    // the stale copies gave way to legacy's rows
    assert_eq!(count(env.t("SELECT count(*) FROM extra WHERE note = 'stale'")), 0);
    let all = "SELECT count(*), sum(v), string_agg(note, ',' ORDER BY id) FROM extra";
    assert_eq!(env.s(all), env.t(all));
}

const ITEMS: &str = "
CREATE TABLE small (id int PRIMARY KEY, v int NOT NULL, note text);
CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO small SELECT g, 0, 'n' FROM generate_series(1, 10) g;
INSERT INTO items SELECT g, 0, 'n' FROM generate_series(1, 300) g;
";

const ITEMS_TGT: &str = "
CREATE TABLE small (id int PRIMARY KEY, v int NOT NULL, note text);
CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text);
";

#[test]
fn a_table_taken_out_and_added_back_is_copied_again() {
    let env = Env::new(ITEMS, ITEMS_TGT);
    let both = format!("{}{}", table("small", "forward", ""), table("items", "forward", ""));
    let cfg = env.write_config("outin", &both);
    let run = start(&cfg, "outin");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));

    // items out
    env.write_config("outin", &table("small", "forward", ""));
    hup(&run);
    let forgot =
        "SELECT count(*) FROM cdc_sync.snapshot_table WHERE pipeline = 'outin' AND table_name = 'public.items'";
    wait_sql(&|| env.t(forgot), "0", Duration::from_secs(60));
    wait_status(&run, Duration::from_secs(60), |s| s["ready"] == true);
    // changes while it is out, and the stream goes on past them
    env.s("UPDATE items SET v = v + 1, note = 'while out' WHERE id <= 100; DELETE FROM items WHERE id > 290; \
           INSERT INTO items SELECT g, 7, 'new while out' FROM generate_series(1001, 1010) g");
    env.s("UPDATE small SET v = v + 1");
    wait_sql(&|| env.t("SELECT sum(v) FROM small"), "10", Duration::from_secs(30));
    let q = "SELECT count(*), sum(v), string_agg(note, ',' ORDER BY id) FROM items";
    assert_ne!(env.t(q), env.s(q), "the changes while it is out are not applied");

    // items back: copied again
    let cfg = env.write_config("outin", &both);
    hup(&run);
    let done = "SELECT state FROM cdc_sync.snapshot_table WHERE pipeline = 'outin' AND table_name = 'public.items'";
    wait_sql(&|| env.t(done), "done", Duration::from_secs(60));
    env.s("UPDATE items SET note = 'after' WHERE id = 5");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let all = "SELECT count(*), sum(v), string_agg(note, ',' ORDER BY id) FROM items";
    assert_eq!(env.s(all), env.t(all));
    let log = run.log_text();
    assert!(log.contains("no longer in sync.toml"), "{log}");
}

// A table with an identity column (GENERATED ALWAYS: an INSERT must say OVERRIDING SYSTEM VALUE
// to give it a value) as its key and a stored generated column,
// on both sides; the service numbers its rows from 5000.
const ORDERS: &str = "CREATE TABLE orders (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, qty int NOT NULL, \
                      price int NOT NULL, total int GENERATED ALWAYS AS (qty * price) STORED);";
const ORDERS_MAP: &str = "[[table]]\nsource = \"orders\"\ntarget = \"orders\"\nkey = [\"id\"]\ndirection = \"both\"\n\
                          [table.columns]\nid = \"id\"\nqty = \"qty\"\nprice = \"price\"\n";

fn orders(sql: &dyn Fn(&str) -> String) -> String {
    sql("SELECT string_agg(concat_ws(':', id, qty, price, total), ',' ORDER BY id) FROM orders")
}

#[test]
fn a_both_table_with_identity_and_generated_columns_is_copied_and_streamed_both_ways() {
    let env = Env::new(
        &format!("{ORDERS} INSERT INTO orders (qty, price) SELECT g, 10 FROM generate_series(1, 100) g;"),
        &(ORDERS.replace("IDENTITY PRIMARY KEY", "IDENTITY (START WITH 5000) PRIMARY KEY")
            + "INSERT INTO orders (qty, price) SELECT g, 20 FROM generate_series(1, 10) g;"),
    );
    // mapping the generated column itself is refused, naming it, before anything runs
    let bad = env.write_config("gen_bad", &format!("{ORDERS_MAP}total = \"total\"\n"));
    let out = bin().args(["check"]).arg(&bad).arg("--connect").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("column total of public.orders is a generated column (GENERATED ALWAYS AS ... STORED)")
            && err.contains("logical replication does not send its values"),
        "{err}"
    );
    let cfg = env.write_config("gen", ORDERS_MAP);
    // the first copy carries the service's rows (5000..5009) to legacy and keeps them on the
    // service through the truncate: both write back every column but the generated one
    let run = start(&cfg, "gen");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert_eq!(count(env.s("SELECT count(*) FROM orders WHERE id >= 5000")), 10);
    assert_eq!(count(env.t("SELECT count(*) FROM orders")), 110);
    // streaming both ways: inserts (the identity value travels), updates (the generated
    // column follows on each side), deletes
    env.s("INSERT INTO orders (qty, price) VALUES (7, 3); UPDATE orders SET qty = 1000 WHERE id = 1; \
           DELETE FROM orders WHERE id = 2");
    env.t("INSERT INTO orders (qty, price) VALUES (8, 4); UPDATE orders SET price = 99 WHERE id = 3; \
           UPDATE orders SET qty = 0 WHERE id = 5001; DELETE FROM orders WHERE id = 5002");
    wait_sql(
        &|| env.t("SELECT count(*) FROM orders WHERE id IN (101, 1, 3) AND total IN (21, 10000, 297)"),
        "3",
        Duration::from_secs(30),
    );
    wait_sql(
        &|| env.s("SELECT count(*) FROM orders WHERE id IN (5010, 5001) AND total IN (32, 0)"),
        "2",
        Duration::from_secs(30),
    );
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    assert_eq!(orders(&|q| env.s(q)), orders(&|q| env.t(q)));
    assert_eq!(count(env.s("SELECT count(*) FROM orders")), 110);
    assert!(!run.log_text().contains("retrying"), "{}", run.log_text());
}

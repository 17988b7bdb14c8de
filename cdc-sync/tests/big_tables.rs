//! Big tables: an initial copy killed (SIGKILL) in the middle of a multi-chunk table continues
//! from its last finished chunk under a new snapshot and ends exact; `verify` under a steady
//! write load reports equal, and narrows a difference planted on the target down to its key. A
//! table added by SIGHUP and killed mid-copy resumes the same way; one whose interrupted copy is
//! older than the checkpoint (taken out of sync.toml meanwhile) is copied afresh. Indexes are
//! built after the copy (and again at the next start after a crash), except the replica
//! identity; the build may use as many parallel workers as copy workers are idle, and the
//! rebuilt indexes are the ones the target had.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use strangler_support::Signal;

const BIG: &str = "
CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL);
INSERT INTO big SELECT g, 0, repeat('x', 100) FROM generate_series(1, 200000) g;
ANALYZE big;
";

const BIG_TGT: &str =
    "CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, pad text NOT NULL) WITH (fillfactor = 90);
CREATE INDEX big_v ON big (v) WITH (fillfactor = 80);";

/// The target's indexes of `big`, and its constraints.
const BIG_INDEXES: &str = "SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'big' \
    UNION ALL SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'big'::regclass";

const REPL: &str = "
[replication]
snapshot_workers = 2
snapshot_chunk_pages = 40
";

const BIG_TABLE: &str = r#"
[[table]]
source = "big"
target = "big"
key = ["id"]
[table.columns]
id = "id"
v = "v"
pad = "pad"
"#;

/// A small table the pipeline streams before `big` is added to it.
const SMALL: &str = "
CREATE TABLE small (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO small SELECT g, 0 FROM generate_series(1, 10) g;
";

const SMALL_TGT: &str = "CREATE TABLE small (id int PRIMARY KEY, n int NOT NULL);";

const SMALL_TABLE: &str = r#"
[[table]]
source = "small"
target = "small"
key = ["id"]
[table.columns]
id = "id"
n = "n"
"#;

/// A steady writer over the whole key space of `big`: updates, inserts above the seed, and
/// deletes, so both finished and unfinished chunks change while the copy runs.
fn big_writes(i: u64, rng: &mut rand::rngs::ThreadRng) -> String {
    // keys below 1000 are left alone (the verify test plants its differences there)
    let id = rng.gen_range(1000..=200_000);
    match i % 4 {
        0 => format!("INSERT INTO big VALUES ({}, 1, 'new') ON CONFLICT DO NOTHING", 1_000_000 + i),
        1 => format!("DELETE FROM big WHERE id = {id}"),
        _ => format!("UPDATE big SET v = v + 1 WHERE id = {id}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Kill `run` (SIGKILL) in the middle of a multi-chunk copy of pipeline `pipeline`, with chunks in
/// flight: returns the chunks done before the kill and the plan's chunk count.
fn kill_mid_copy(
    env: &Env,
    rt: &tokio::runtime::Runtime,
    tgt: &tokio_postgres::Client,
    run: &mut Running,
    pipeline: &str,
) -> (i64, i64) {
    // Let a few chunks commit, then hold every unfinished chunk's state row: a worker that
    // finishes its COPY blocks on marking its chunk done, inside its transaction. Killing the
    // process then is a crash in the middle of the table, with chunks in flight. The rows are
    // locked without SKIP LOCKED: a worker that has just marked its chunk done (row locked, not
    // yet committed) is waited for, and its chunk then counts as done before the kill, as it is.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (done_before, total) = loop {
        assert!(Instant::now() < deadline, "the copy did not start:\n{}", run.log_text());
        assert!(run.child.try_wait().unwrap().is_none(), "exited:\n{}", run.log_text());
        let counts = rt.block_on(tgt.query_opt(
            &format!("SELECT count(*) FILTER (WHERE done) FROM cdc_sync.snapshot_chunk WHERE pipeline = '{pipeline}' AND table_name = 'public.big'"),
            &[],
        ));
        if let Ok(Some(r)) = counts {
            if r.get::<_, i64>(0) >= 3 {
                rt.block_on(tgt.batch_execute(&format!(
                    "BEGIN; SELECT chunk FROM cdc_sync.snapshot_chunk WHERE pipeline = '{pipeline}' AND table_name = 'public.big' AND NOT done \
                     FOR UPDATE"
                )))
                .unwrap();
                let r = rt
                    .block_on(tgt.query_one(
                        &format!("SELECT count(*) FILTER (WHERE done), count(*) FROM cdc_sync.snapshot_chunk WHERE pipeline = '{pipeline}' AND table_name = 'public.big'"),
                        &[],
                    ))
                    .unwrap();
                break (r.get::<_, i64>(0), r.get::<_, i64>(1));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(total >= 20, "the table should be cut into many chunks, got {total}");
    assert!(done_before < total, "the copy finished before the crash ({done_before} of {total})");
    // wait until a worker is blocked on the held rows (mid-chunk, rows written, not committed)
    let blocked = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE cdc_sync.snapshot_chunk%'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.t(blocked) == "0" {
        assert!(Instant::now() < deadline, "no worker reached the end of a chunk:\n{}", run.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    run.child.signal(Signal::SIGKILL).unwrap();
    let _ = wait_exit(run, Duration::from_secs(10));
    rt.block_on(tgt.batch_execute("ROLLBACK")).unwrap();
    (done_before, total)
}

#[test]
fn snapshot_killed_mid_table_resumes_from_the_last_finished_chunk() {
    let env = Env::new(BIG, BIG_TGT);
    let cfg = env.write_config("big", &format!("{REPL}{BIG_TABLE}"));
    let work = Workload::start(env.src_conn.clone(), big_writes);
    let rt = runtime();
    let tgt = rt.block_on(cdc_sync::connect::connect(&env.tgt_conn)).unwrap();
    let indexes = env.t(BIG_INDEXES);
    assert!(indexes.contains("PRIMARY KEY (id)") && indexes.contains("big_v"), "{indexes}");
    let mut run = spawn(&cfg, "big");

    let (done_before, total) = kill_mid_copy(&env, &rt, &tgt, &mut run, "big");
    // the indexes are built after the copy: recorded and dropped while it runs
    assert_eq!(
        env.t("SELECT string_agg(index_name, ',' ORDER BY index_name) FROM cdc_sync.deferred_index WHERE pipeline = 'big'"),
        "public.big_pkey,public.big_v"
    );
    assert_eq!(env.t("SELECT count(*) FROM pg_indexes WHERE tablename = 'big'"), "0");
    let first = env.t("SELECT DISTINCT plan_lsn FROM cdc_sync.snapshot_chunk WHERE pipeline = 'big'");
    assert_eq!(
        env.t("SELECT count(*) FROM cdc_sync.snapshot_chunk WHERE pipeline = 'big' AND done"),
        done_before.to_string(),
        "a chunk in flight at the kill must not count as done"
    );
    assert_eq!(env.t("SELECT state FROM cdc_sync.snapshot_table WHERE pipeline = 'big'"), "copying");
    // and a key change across chunks while nothing runs
    env.s("UPDATE big SET id = 900000 WHERE id = 7");

    let run = start(&cfg, "big2");
    assert!(run.log_text().contains("resuming the table's copy from its last finished chunk"), "{}", run.log_text());
    // built again at the start (before the mappings are checked), exactly as they were
    assert_eq!(env.t(BIG_INDEXES), indexes);
    assert_eq!(env.t("SELECT count(*) FROM cdc_sync.deferred_index"), "0");
    // the chunks finished before the kill were not copied again: they keep the first snapshot;
    // the others were copied under a newer one
    assert_eq!(
        env.t(&format!(
            "SELECT count(*) FROM cdc_sync.snapshot_chunk WHERE pipeline = 'big' AND copied_lsn = '{first}'"
        )),
        done_before.to_string()
    );
    assert_eq!(
        env.t(&format!(
            "SELECT count(*) FROM cdc_sync.snapshot_chunk WHERE pipeline = 'big' AND done AND copied_lsn > '{first}'"
        )),
        (total - done_before).to_string()
    );
    // the table's stream floor stayed at the first snapshot
    assert_eq!(
        env.t("SELECT state, snapshot_lsn FROM cdc_sync.snapshot_table WHERE pipeline = 'big'"),
        format!("done|{first}")
    );
    let txns = work.finish();
    assert!(txns > 100, "workload too small: {txns}");
    let out = wait_equal(&cfg, Duration::from_secs(120), Some(&run));
    assert!(String::from_utf8_lossy(&out.stdout).contains("equal"), "{}", String::from_utf8_lossy(&out.stdout));
    // nothing lost, nothing twice
    assert_eq!(env.s("SELECT count(*), sum(v), sum(id) FROM big"), env.t("SELECT count(*), sum(v), sum(id) FROM big"));
    assert_eq!(env.t("SELECT count(*) FROM big WHERE id = 900000"), "1");
}

#[test]
fn verify_under_write_load_is_equal_and_narrows_a_planted_difference_to_its_keys() {
    let env = Env::new(BIG, BIG_TGT);
    let cfg = env.write_config("vload", &format!("{REPL}{BIG_TABLE}"));
    let run = start(&cfg, "vload");
    let work = Workload::start(env.src_conn.clone(), big_writes);
    let verify_with = |args: &[&str]| bin().args(["verify", "--config"]).arg(&cfg).args(args).output().unwrap();
    // under load: equal every time (rows in flight are not differences)
    for _ in 0..3 {
        let out = verify_with(&["--chunk-rows", "5000"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            run.log_text()
        );
        assert!(stdout.contains("public.big -> public.big: equal"), "{stdout}");
        assert!(stdout.contains("compared as of source LSN"), "{stdout}");
    }
    // a changed row, a missing row and an extra row on the target, all outside the writer's keys
    env.t("UPDATE big SET v = -1 WHERE id = 500; DELETE FROM big WHERE id = 600; INSERT INTO big VALUES (5000000, 0, 'extra')");
    let out = verify_with(&["--chunk-rows", "5000"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let line = stdout.lines().find(|l| l.contains("DIFFERENT")).unwrap_or_else(|| panic!("{stdout}"));
    let keys = line.split("differing keys: ").nth(1).unwrap();
    assert_eq!(keys.split_whitespace().collect::<Vec<_>>(), ["(500)", "(5000000)", "(600)"], "{stdout}");
    // the differing ranges were compared again at fresh points before keys were reported
    assert!(stderr.contains("comparing them again"), "{stderr}");
    assert!(stdout.contains("differing keys compared again 3 time(s)"), "{stdout}");
    // repaired, equal again, still under load
    env.t("UPDATE big SET v = 0 WHERE id = 500; INSERT INTO big VALUES (600, 0, repeat('x', 100)); DELETE FROM big WHERE id = 5000000");
    let out = verify_with(&["--chunk-rows", "5000"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let txns = work.finish();
    assert!(txns > 100, "workload too small: {txns}");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
}

/// `big_writes` with an update of `small` every fifth transaction (so the checkpoint moves also
/// while `big` is not mapped).
fn grow_writes(i: u64, rng: &mut rand::rngs::ThreadRng) -> String {
    match i % 5 {
        0 => format!("UPDATE small SET n = n + 1 WHERE id = {}", rng.gen_range(1..=10)),
        _ => big_writes(i, rng),
    }
}

fn hup(run: &Running) {
    let pid = run.child.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

/// A pipeline streaming `small`, then `big` added by SIGHUP under writes to both and the process
/// killed in the middle of `big`'s copy. Returns the running writer, the config (with `big`),
/// the chunks done before the kill, the plan's chunk count and the copy's first snapshot.
fn add_big_and_kill_mid_copy(env: &Env, name: &str) -> (Workload, std::path::PathBuf, i64, i64, String) {
    let rt = runtime();
    let tgt = rt.block_on(cdc_sync::connect::connect(&env.tgt_conn)).unwrap();
    let cfg = env.write_config(name, &format!("{REPL}{SMALL_TABLE}"));
    let mut run = start(&cfg, name);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let work = Workload::start(env.src_conn.clone(), grow_writes);
    let cfg = env.write_config(name, &format!("{REPL}{SMALL_TABLE}{BIG_TABLE}"));
    hup(&run);
    let (done_before, total) = kill_mid_copy(env, &rt, &tgt, &mut run, name);
    assert!(run.log_text().contains("SIGHUP: sync.toml re-read"), "{}", run.log_text());
    let first = env.t(&format!(
        "SELECT DISTINCT plan_lsn FROM cdc_sync.snapshot_chunk WHERE pipeline = '{name}' AND table_name = 'public.big'"
    ));
    let checkpoint = env.t(&format!("SELECT lsn FROM cdc_sync.checkpoint WHERE pipeline = '{name}'"));
    // the added table was copied under a snapshot newer than the checkpoint the stream resumes from
    assert!(lsn(&first) > lsn(&checkpoint), "plan {first}, checkpoint {checkpoint}");
    assert_eq!(env.t("SELECT state FROM cdc_sync.snapshot_table WHERE table_name = 'public.big'"), "copying");
    (work, cfg, done_before, total, first)
}

fn assert_same_rows(env: &Env) {
    for q in ["SELECT count(*), sum(v), sum(id) FROM big", "SELECT count(*), sum(n) FROM small"] {
        assert_eq!(env.s(q), env.t(q), "{q}");
    }
}

#[test]
fn a_table_added_by_sighup_and_killed_mid_copy_resumes_from_its_last_finished_chunk() {
    let env = Env::new(&format!("{BIG}{SMALL}"), &format!("{BIG_TGT}{SMALL_TGT}"));
    let (work, cfg, done_before, total, first) = add_big_and_kill_mid_copy(&env, "grow");

    let run = start(&cfg, "grow2");
    let log = run.log_text();
    assert!(log.contains("resuming the table's copy from its last finished chunk"), "{log}");
    assert!(!log.contains("copying it afresh"), "{log}");
    let chunks = |cond: &str| {
        env.t(&format!("SELECT count(*) FROM cdc_sync.snapshot_chunk WHERE pipeline = 'grow' AND table_name = 'public.big' AND done AND {cond}"))
    };
    assert_eq!(chunks(&format!("copied_lsn = '{first}'")), done_before.to_string());
    assert_eq!(chunks(&format!("copied_lsn > '{first}'")), (total - done_before).to_string());
    assert_eq!(
        env.t("SELECT state, snapshot_lsn FROM cdc_sync.snapshot_table WHERE table_name = 'public.big'"),
        format!("done|{first}")
    );
    let txns = work.finish();
    assert!(txns > 100, "workload too small: {txns}");
    wait_equal(&cfg, Duration::from_secs(120), Some(&run));
    assert_same_rows(&env);
}

#[test]
fn an_interrupted_copy_older_than_the_checkpoint_is_copied_afresh() {
    let env = Env::new(&format!("{BIG}{SMALL}"), &format!("{BIG_TGT}{SMALL_TGT}"));
    let (work, cfg, _, _, first) = add_big_and_kill_mid_copy(&env, "stale");

    // `big` taken out again: the stream goes on without it, past its copy's first snapshot
    let small_only = env.write_config("stale", &format!("{REPL}{SMALL_TABLE}"));
    let run = start(&small_only, "stale2");
    let past = format!("SELECT lsn > '{first}' FROM cdc_sync.checkpoint WHERE pipeline = 'stale'");
    wait_sql(&|| env.t(&past), "t", Duration::from_secs(60));
    // and added back: the stored plan would miss the changes the stream passed; copied afresh
    let cfg2 = env.write_config("stale", &format!("{REPL}{SMALL_TABLE}{BIG_TABLE}"));
    assert_eq!(cfg, cfg2);
    hup(&run);
    let done = "SELECT state FROM cdc_sync.snapshot_table WHERE table_name = 'public.big'";
    wait_sql(&|| env.t(done), "done", Duration::from_secs(90));
    // taken out, its state was forgotten (the plan with it); added back, it is copied afresh
    let log = run.log_text();
    assert!(log.contains("no longer in sync.toml: forgot its snapshot state"), "{log}");
    assert!(!log.contains("resuming the table's copy"), "{log}");
    let old = format!("SELECT count(*) FROM cdc_sync.snapshot_chunk WHERE pipeline = 'stale' AND plan_lsn = '{first}'");
    assert_eq!(env.t(&old), "0", "the old plan is gone");
    let txns = work.finish();
    assert!(txns > 100, "workload too small: {txns}");
    wait_equal(&cfg, Duration::from_secs(120), Some(&run));
    assert_same_rows(&env);
}

#[test]
fn the_replica_identity_index_is_kept_during_the_copy_and_the_others_are_built_after_it() {
    // big's primary key is the target table's replica identity (explicitly): it stays; big_v
    // is built after the copy
    let identity = "ALTER TABLE big REPLICA IDENTITY USING INDEX big_pkey;";
    let env = Env::new(BIG, &format!("{BIG_TGT}{identity}"));
    // three copy workers, idle once big's last chunk is in: its build may use three parallel
    // workers (more than the server's default of two; big is large enough for a parallel build)
    let repl = "[replication]\nsnapshot_workers = 3\nsnapshot_chunk_pages = 40\n";
    let cfg = env.write_config("fk", &format!("{repl}{BIG_TABLE}"));
    let indexes = env.t(BIG_INDEXES);
    let run = start(&cfg, "fk");
    let log = without_ansi(&run.log_text());
    assert!(log.contains("building these indexes after the copy"), "{log}");
    let built = log.lines().find(|l| l.contains("index built after the copy") && l.contains("public.big_v"));
    assert!(built.is_some_and(|l| l.contains("parallel_workers_allowed=3")), "{log}");
    assert!(!log.contains("big_pkey"), "the replica identity must stay: {log}");
    assert_eq!(env.t(BIG_INDEXES), indexes);
    assert_eq!(env.t("SELECT count(*) FROM cdc_sync.deferred_index"), "0");
    assert_eq!(env.s("SELECT count(*), sum(id), sum(v) FROM big"), env.t("SELECT count(*), sum(id), sum(v) FROM big"));
}

/// `text` without its terminal colour codes (`ESC [ ... m`).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

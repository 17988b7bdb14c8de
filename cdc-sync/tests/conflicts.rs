//! Both directions for real: the reverse initial snapshot (rows only the service had reach
//! legacy, with writes going on at both sides), each conflict policy with its record and
//! metrics, and the clock-skew warning.

mod common;

use std::time::Duration;

use common::*;
use rand::Rng;
use strangler_support::Signal;

const ACCOUNTS: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);";

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

fn count(out: String) -> u64 {
    out.trim().parse().unwrap_or_else(|_| panic!("not a count: {out:?}"))
}

#[test]
fn reverse_snapshot_carries_rows_only_the_target_had_with_writes_on_both_sides() {
    // legacy: 1..100; the service: 1..20 too (stale copies: legacy's version wins at the start)
    // and 1001..1200, which only it has
    let env = Env::new(
        &format!("{ACCOUNTS} INSERT INTO accounts SELECT g, g, 'legacy' FROM generate_series(1, 100) g;"),
        &format!(
            "{ACCOUNTS} INSERT INTO accounts SELECT g, -1, 'stale' FROM generate_series(1, 20) g; \
             INSERT INTO accounts SELECT g, g, 'only on the service' FROM generate_series(1001, 1200) g;"
        ),
    );
    let cfg = env.write_config("rsnap", ACCOUNTS_MAP);
    // legacy keeps writing while cdc-sync starts, snapshots both ways and streams
    let legacy_work = Workload::start(env.src_conn.clone(), |i, rng| {
        if i % 4 == 0 {
            format!("INSERT INTO accounts VALUES ({}, 0, 'new on legacy')", 100_000 + i)
        } else {
            format!(
                "UPDATE accounts SET balance = balance + 1, note = 'legacy {i}' WHERE id = {}",
                rng.gen_range(1..=50)
            )
        }
    });
    let run = start(&cfg, "rsnap");
    // the service writes as soon as the pipeline is up, on its own rows and new ones
    let service_work = Workload::start(env.tgt_conn.clone(), |i, rng| {
        if i % 4 == 0 {
            format!("INSERT INTO accounts VALUES ({}, 0, 'new on the service')", 500_000 + i)
        } else {
            let id = if i % 2 == 0 { rng.gen_range(51..=100) } else { rng.gen_range(1001..=1200) };
            format!("UPDATE accounts SET balance = balance + 1, note = 'service {i}' WHERE id = {id}")
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let (l, s) = (legacy_work.finish(), service_work.finish());
    assert!(l > 20 && s > 20, "too few writes: legacy {l}, service {s}");
    wait_equal(&cfg, Duration::from_secs(90), Some(&run));
    // every row only the service had is in legacy, with the service's content (as last written)
    assert_eq!(count(env.s("SELECT count(*) FROM accounts WHERE id BETWEEN 1001 AND 1200")), 200);
    assert_eq!(
        env.s("SELECT string_agg(id || ':' || balance || ':' || note, ',' ORDER BY id) FROM accounts WHERE id > 1000 AND id < 100000"),
        env.t("SELECT string_agg(id || ':' || balance || ':' || note, ',' ORDER BY id) FROM accounts WHERE id > 1000 AND id < 100000"),
    );
    // the stale copies were replaced by legacy's rows, and both sides' new rows are on both sides
    assert_eq!(count(env.t("SELECT count(*) FROM accounts WHERE note = 'stale'")), 0);
    assert_eq!(count(env.s("SELECT count(*) FROM accounts WHERE id >= 500000")), s / 4);
    assert_eq!(count(env.t("SELECT count(*) FROM accounts WHERE id BETWEEN 100000 AND 499999")), l / 4);
    // writes on different rows are no conflicts
    assert_eq!(count(env.t("SELECT count(*) FROM cdc_sync.conflicts")), 0);
    assert_eq!(count(env.s("SELECT count(*) FROM cdc_sync.conflicts")), 0);
    assert!(run.log_text().contains("reverse snapshot"), "{}", run.log_text());
}

#[test]
fn a_table_turned_both_later_carries_the_rows_the_service_wrote_meanwhile() {
    let env = Env::new(
        &format!("{ACCOUNTS} INSERT INTO accounts SELECT g, g, 'legacy' FROM generate_series(1, 50) g;"),
        ACCOUNTS,
    );
    // forward only at first; the service writes the table anyway: rows of its own, and an edit
    // of a row it got from legacy
    let fwd_only = ACCOUNTS_MAP.replace("direction = \"both\"\n", "");
    let cfg = env.write_config("later", &fwd_only);
    let mut run = start(&cfg, "later");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    env.s("UPDATE accounts SET note = 'streamed' WHERE id <= 10");
    wait_sql(&|| env.t("SELECT count(*) FROM accounts WHERE note = 'streamed'"), "10", Duration::from_secs(30));
    env.t("INSERT INTO accounts SELECT g, g, 'the service''s own' FROM generate_series(1001, 1010) g");
    run.child.signal(Signal::SIGKILL).unwrap();
    wait_exit(&mut run, Duration::from_secs(10));
    // while it is down legacy deletes a row the target still has (from the forward copy): not
    // the service's own, so it must not come back
    env.s("DELETE FROM accounts WHERE id = 30");

    // now both ways: the reverse slot is created and the service's own rows are carried over
    let cfg = env.write_config("later", ACCOUNTS_MAP);
    let run = start(&cfg, "later-both");
    assert_eq!(count(env.s("SELECT count(*) FROM accounts WHERE note = 'the service''s own'")), 10);
    assert_eq!(count(env.s("SELECT count(*) FROM accounts")), 59);
    // and from now on both sides' writes flow, with no conflict among them
    env.t("UPDATE accounts SET note = 'service edit' WHERE id IN (1001, 20)");
    env.s("UPDATE accounts SET note = 'legacy edit' WHERE id IN (1002, 21)");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert_eq!(env.s("SELECT note FROM accounts WHERE id = 20"), "service edit");
    assert_eq!(env.t("SELECT note FROM accounts WHERE id = 1002"), "legacy edit");
    assert_eq!(count(env.t("SELECT count(*) FROM accounts WHERE id = 30")), 0);
    assert_eq!(count(env.t("SELECT count(*) FROM cdc_sync.conflicts")), 0);
    assert_eq!(count(env.s("SELECT count(*) FROM cdc_sync.conflicts")), 0);
    assert!(run.log_text().contains("reverse snapshot: carried rows that only the target had"), "{}", run.log_text());
}

/// A row inserted and then updated within one flush (here in one transaction) on a `both`
/// table under last-writer-wins: the conflict check looks the flush's rows up before writing
/// any of them, and used to judge the update against the row as it was before its own insert
/// (absent: "an update racing a delete"), dropping it. Both changes arrive, on each side.
#[test]
fn an_insert_and_its_update_in_one_flush_both_arrive_and_are_no_conflict() {
    let env = Env::new(ACCOUNTS, ACCOUNTS);
    let cfg = env.write_config("insupd", ACCOUNTS_MAP);
    let run = start(&cfg, "insupd");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    env.s("BEGIN; INSERT INTO accounts VALUES (7, 1, 'inserted on legacy'); \
         UPDATE accounts SET balance = 2, note = 'updated on legacy' WHERE id = 7; COMMIT;");
    env.t("BEGIN; INSERT INTO accounts VALUES (8, 1, 'inserted on the service'); \
         UPDATE accounts SET balance = 2, note = 'updated on the service' WHERE id = 8; COMMIT;");
    // each side gets the other's row as last written (with the fault, the insert's version)
    let t7 = || env.t("SELECT note FROM accounts WHERE id = 7");
    wait_sql(&t7, "updated on legacy", Duration::from_secs(30));
    let s8 = || env.s("SELECT note FROM accounts WHERE id = 8");
    wait_sql(&s8, "updated on the service", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    for side in [
        env.s("SELECT string_agg(id || ':' || balance || ':' || note, ',' ORDER BY id) FROM accounts"),
        env.t("SELECT string_agg(id || ':' || balance || ':' || note, ',' ORDER BY id) FROM accounts"),
    ] {
        assert_eq!(side, "7:2:updated on legacy,8:2:updated on the service");
    }
    assert_eq!(count(env.t("SELECT count(*) FROM cdc_sync.conflicts")), 0);
    assert_eq!(count(env.s("SELECT count(*) FROM cdc_sync.conflicts")), 0);
}

const POLICIES: &str = "
CREATE TABLE acc_lww (id int PRIMARY KEY, note text);
CREATE TABLE acc_src (id int PRIMARY KEY, note text);
CREATE TABLE acc_tgt (id int PRIMARY KEY, note text);
";

fn policies_map() -> String {
    let table = |name: &str, policy: Option<&str>| {
        format!(
            "[[table]]\nsource = \"{name}\"\ntarget = \"{name}\"\nkey = [\"id\"]\ndirection = \"both\"\n{}\
             [table.columns]\nid = \"id\"\nnote = \"note\"\n",
            policy.map(|p| format!("conflict = \"{p}\"\n")).unwrap_or_default()
        )
    };
    [table("acc_lww", None), table("acc_src", Some("source_wins")), table("acc_tgt", Some("target_wins"))].join("\n")
}

/// `cdc_sync.conflicts` on one side, one line per record: table, change, policy, winner,
/// decision, the note of each version, and whether the incoming change is the older one.
fn records(sql: &dyn Fn(&str) -> String) -> Vec<String> {
    sql("SELECT string_agg(concat_ws(' ', table_name, change, policy, winner, decision, local_version->>'note', \
         incoming_version->>'note', key, (incoming_commit_ts < local_commit_ts)::text), E'\\n' ORDER BY table_name) \
         FROM cdc_sync.conflicts")
    .lines()
    .map(str::to_string)
    .collect()
}

fn metric(text: &str, name: &str, direction: &str) -> u64 {
    let prefix = format!("{name}{{direction=\"{direction}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn each_policy_decides_a_conflict_the_same_way_on_both_sides_and_records_it() {
    let seed = "INSERT INTO acc_lww SELECT g, 'seed' FROM generate_series(1, 10) g; \
                INSERT INTO acc_src SELECT g, 'seed' FROM generate_series(1, 10) g; \
                INSERT INTO acc_tgt SELECT g, 'seed' FROM generate_series(1, 10) g;";
    let env = Env::new(&format!("{POLICIES}{seed}"), POLICIES);
    let cfg = env.write_config("pol", &policies_map());
    let mut run = start(&cfg, "pol");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));

    // sequential changes of one row, each side after it saw the other's: no conflict
    for t in ["acc_lww", "acc_src", "acc_tgt"] {
        env.s(&format!("UPDATE {t} SET note = 'legacy first' WHERE id = 3"));
        wait_sql(&|| env.t(&format!("SELECT note FROM {t} WHERE id = 3")), "legacy first", Duration::from_secs(30));
        env.t(&format!("UPDATE {t} SET note = 'service next' WHERE id = 3"));
        wait_sql(&|| env.s(&format!("SELECT note FROM {t} WHERE id = 3")), "service next", Duration::from_secs(30));
        env.s(&format!("UPDATE {t} SET note = 'legacy again' WHERE id = 3"));
        wait_sql(&|| env.t(&format!("SELECT note FROM {t} WHERE id = 3")), "legacy again", Duration::from_secs(30));
    }
    assert_eq!(count(env.t("SELECT count(*) FROM cdc_sync.conflicts")), 0, "{:?}", records(&|q| env.t(q)));
    assert_eq!(count(env.s("SELECT count(*) FROM cdc_sync.conflicts")), 0, "{:?}", records(&|q| env.s(q)));

    // a true conflict: with cdc-sync down, legacy changes row 7, then the service changes it too;
    // neither saw the other's change (and the service's is the later one)
    run.child.signal(Signal::SIGKILL).unwrap();
    wait_exit(&mut run, Duration::from_secs(10));
    for t in ["acc_lww", "acc_src", "acc_tgt"] {
        env.s(&format!("UPDATE {t} SET note = 'from legacy' WHERE id = 7"));
    }
    for t in ["acc_lww", "acc_src", "acc_tgt"] {
        env.t(&format!("UPDATE {t} SET note = 'from the service' WHERE id = 7"));
    }
    let run = start(&cfg, "pol");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let note = |t: &str| {
        (env.s(&format!("SELECT note FROM {t} WHERE id = 7")), env.t(&format!("SELECT note FROM {t} WHERE id = 7")))
    };
    let both = |v: &str| (v.to_string(), v.to_string());
    assert_eq!(note("acc_lww"), both("from the service"), "last writer wins");
    assert_eq!(note("acc_src"), both("from legacy"), "source wins");
    assert_eq!(note("acc_tgt"), both("from the service"), "target wins");

    // each side recorded the conflict it saw: the incoming change, the local version, who won
    assert_eq!(
        records(&|q| env.t(q)),
        [
            "public.acc_lww update lww target local_kept from the service from legacy (7) true",
            "public.acc_src update source_wins source incoming_applied from the service from legacy (7) true",
            "public.acc_tgt update target_wins target local_kept from the service from legacy (7) true",
        ],
        "forward (recorded on the target)"
    );
    assert_eq!(
        records(&|q| env.s(q)),
        [
            "public.acc_lww update lww target incoming_applied from legacy from the service (7) false",
            "public.acc_src update source_wins source local_kept from legacy from the service (7) false",
            "public.acc_tgt update target_wins target incoming_applied from legacy from the service (7) false",
        ],
        "reverse (recorded on the source)"
    );
    // counted in /metrics and /status (this process saw all of them)
    let metrics = http_get(run.status, "/metrics");
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_total", "forward"), 3);
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_total", "reverse"), 3);
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_kept_local_total", "forward"), 2);
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_kept_local_total", "reverse"), 1);
    let status: serde_json::Value = serde_json::from_str(&http_get(run.status, "/status")).unwrap();
    assert_eq!(status["pipelines"]["forward"]["conflicts"], 3, "{status}");
    assert_eq!(status["pipelines"]["reverse"]["conflicts_kept_local"], 1, "{status}");
    // and `cdc-sync status` shows what each side recorded
    let out = bin().args(["status", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["conflicts"]["forward"]["total"], 3, "{v}");
    assert_eq!(v["conflicts"]["reverse"]["total"], 3, "{v}");
    let latest = &v["conflicts"]["reverse"]["latest"][0];
    assert_eq!(latest["key"], "(7)", "{v}");
    assert!(latest["local_version"]["note"].is_string() && latest["incoming_commit_ts"].is_string(), "{v}");

    // after the conflict, changes flow as before (nothing more recorded)
    env.t("UPDATE acc_tgt SET note = 'after' WHERE id = 7");
    wait_sql(&|| env.s("SELECT note FROM acc_tgt WHERE id = 7"), "after", Duration::from_secs(30));
    env.s("UPDATE acc_src SET note = 'after' WHERE id = 7");
    wait_sql(&|| env.t("SELECT note FROM acc_src WHERE id = 7"), "after", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    assert_eq!(count(env.t("SELECT count(*) FROM cdc_sync.conflicts")), 3);
    assert_eq!(count(env.s("SELECT count(*) FROM cdc_sync.conflicts")), 3);
}

/// `cdc_sync.conflicts` on one side, ordered by table and key: table, key, change, policy,
/// winner, decision, the local version's note (`-` when it is absent: the row was deleted
/// here), the incoming note (`-` for a delete), whether each commit time is known.
fn delete_records(sql: &dyn Fn(&str) -> String) -> Vec<String> {
    sql("SELECT string_agg(concat_ws(' ', table_name, key, change, policy, winner, decision, \
         coalesce(local_version->>'note', '-'), coalesce(incoming_version->>'note', '-'), \
         (local_commit_ts IS NOT NULL)::text, (incoming_commit_ts IS NOT NULL)::text), E'\\n' ORDER BY table_name, key) \
         FROM cdc_sync.conflicts")
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn an_update_racing_a_delete_is_recorded_and_decided_by_the_policy_on_both_sides() {
    let seed = "INSERT INTO acc_lww SELECT g, 'seed' FROM generate_series(1, 10) g; \
                INSERT INTO acc_src SELECT g, 'seed' FROM generate_series(1, 10) g; \
                INSERT INTO acc_tgt SELECT g, 'seed' FROM generate_series(1, 10) g;";
    let env = Env::new(&format!("{POLICIES}{seed}"), POLICIES);
    let cfg = env.write_config("updel", &policies_map());
    let mut run = start(&cfg, "updel");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));

    // with cdc-sync down, neither side sees the other's change: row 4 updated on legacy and
    // deleted on the service; row 5 deleted on legacy and updated on the service
    run.child.signal(Signal::SIGKILL).unwrap();
    wait_exit(&mut run, Duration::from_secs(10));
    for t in ["acc_lww", "acc_src", "acc_tgt"] {
        env.s(&format!("UPDATE {t} SET note = 'legacy edit' WHERE id = 4; DELETE FROM {t} WHERE id = 5"));
        env.t(&format!("DELETE FROM {t} WHERE id = 4; UPDATE {t} SET note = 'service edit' WHERE id = 5"));
    }
    let run = start(&cfg, "updel");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let rows = |t: &str| {
        let q =
            format!("SELECT coalesce(string_agg(id || ':' || note, ',' ORDER BY id), '') FROM {t} WHERE id IN (4, 5)");
        (env.s(&q), env.t(&q))
    };
    let both = |v: &str| (v.to_string(), v.to_string());
    // lww: the delete wins (no time to compare the delete with); source_wins: legacy's change
    // (its update of 4, its delete of 5); target_wins: the service's
    assert_eq!(rows("acc_lww"), both(""), "lww: the deletes win");
    assert_eq!(rows("acc_src"), both("4:legacy edit"), "source wins");
    assert_eq!(rows("acc_tgt"), both("5:service edit"), "target wins");

    // each side recorded both conflicts it saw: the update meeting a deleted row (no local
    // version, no local commit time) and the delete meeting a changed row
    assert_eq!(
        delete_records(&|q| env.t(q)),
        [
            "public.acc_lww (4) update lww target local_kept - legacy edit false true",
            "public.acc_lww (5) delete lww source incoming_applied service edit - true true",
            "public.acc_src (4) update source_wins source incoming_applied - legacy edit false true",
            "public.acc_src (5) delete source_wins source incoming_applied service edit - true true",
            "public.acc_tgt (4) update target_wins target local_kept - legacy edit false true",
            "public.acc_tgt (5) delete target_wins target local_kept service edit - true true",
        ],
        "forward (recorded on the target)"
    );
    assert_eq!(
        delete_records(&|q| env.s(q)),
        [
            "public.acc_lww (4) delete lww target incoming_applied legacy edit - true true",
            "public.acc_lww (5) update lww source local_kept - service edit false true",
            "public.acc_src (4) delete source_wins source local_kept legacy edit - true true",
            "public.acc_src (5) update source_wins source local_kept - service edit false true",
            "public.acc_tgt (4) delete target_wins target incoming_applied legacy edit - true true",
            "public.acc_tgt (5) update target_wins target incoming_applied - service edit false true",
        ],
        "reverse (recorded on the source)"
    );
    let metrics = http_get(run.status, "/metrics");
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_total", "forward"), 6);
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_total", "reverse"), 6);
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_kept_local_total", "forward"), 3);
    assert_eq!(metric(&metrics, "cdc_sync_conflicts_kept_local_total", "reverse"), 3);
    let out = bin().args(["status", "--config"]).arg(&cfg).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["conflicts"]["forward"]["total"], 6, "{v}");

    // the row written again flows on like any other
    env.t("UPDATE acc_src SET note = 'later' WHERE id = 4");
    wait_sql(&|| env.s("SELECT note FROM acc_src WHERE id = 4"), "later", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    assert_eq!(count(env.s("SELECT count(*) FROM cdc_sync.conflicts")), 6);
}

#[test]
fn both_sides_hammering_the_same_rows_converge_under_every_policy() {
    let seed = "INSERT INTO acc_lww SELECT g, 'seed' FROM generate_series(1, 20) g; \
                INSERT INTO acc_src SELECT g, 'seed' FROM generate_series(1, 20) g; \
                INSERT INTO acc_tgt SELECT g, 'seed' FROM generate_series(1, 20) g;";
    let env = Env::new(&format!("{POLICIES}{seed}"), POLICIES);
    let cfg = env.write_config("hammer", &policies_map());
    let run = start(&cfg, "hammer");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    // both sides pick among the same 20 rows of each table (one row per transaction: a writer
    // holding one row lock cannot deadlock with the applier)
    fn txn(side: &str, i: u64, rng: &mut rand::rngs::ThreadRng) -> String {
        let table = ["acc_lww", "acc_src", "acc_tgt"][(i % 3) as usize];
        format!("UPDATE {table} SET note = '{side} {i}' WHERE id = {}", rng.gen_range(1..=20))
    }
    let legacy = Workload::start(env.src_conn.clone(), |i, rng| txn("legacy", i, rng));
    let service = Workload::start(env.tgt_conn.clone(), |i, rng| txn("service", i, rng));
    std::thread::sleep(Duration::from_secs(4));
    let (l, s) = (legacy.finish(), service.finish());
    assert!(l > 50 && s > 50, "too few writes: legacy {l}, service {s}");
    wait_equal(&cfg, Duration::from_secs(90), Some(&run));
    // conflicts happened, and every one was recorded by the side that saw it
    let metrics = http_get(run.status, "/metrics");
    let (fwd, rev) = (
        metric(&metrics, "cdc_sync_conflicts_total", "forward"),
        metric(&metrics, "cdc_sync_conflicts_total", "reverse"),
    );
    assert!(fwd > 0 && rev > 0, "{metrics}");
    assert_eq!(count(env.t("SELECT count(*) FROM cdc_sync.conflicts")), fwd);
    assert_eq!(count(env.s("SELECT count(*) FROM cdc_sync.conflicts")), rev);
    // a policy naming a side never lets the other side's version overwrite its own in a conflict
    assert_eq!(
        count(env.t("SELECT count(*) FROM cdc_sync.conflicts WHERE policy = 'source_wins' AND winner <> 'source'")),
        0
    );
    assert_eq!(
        count(env.s("SELECT count(*) FROM cdc_sync.conflicts WHERE policy = 'target_wins' AND winner <> 'target'")),
        0
    );
    eprintln!("hammer: legacy {l} txns, service {s} txns, conflicts forward {fwd}, reverse {rev}");
}

#[test]
fn a_clock_skew_over_the_bound_is_warned_and_one_within_it_is_not() {
    let env = Env::new(
        &format!("{ACCOUNTS} INSERT INTO accounts SELECT g, 0, 'seed' FROM generate_series(1, 10) g;"),
        ACCOUNTS,
    );
    let clock = |bound: u64| format!("[clock]\nmax_skew_ms = {bound}\ncheck_interval_s = 1\n{ACCOUNTS_MAP}");
    // a bound of 0: any measured difference between the two servers' clocks is over it
    let cfg = env.write_config("skew", &clock(0));
    let mut run = start(&cfg, "skew");
    let s = wait_status(&run, Duration::from_secs(30), |s| !s["pipelines"]["forward"]["clock"].is_null());
    let c = &s["pipelines"]["forward"]["clock"];
    assert_eq!(c["over_bound"], true, "{s}");
    assert_eq!(c["bound_ms"], 0, "{s}");
    let skew = c["skew_ms"].as_f64().unwrap();
    // two servers on one machine: some microseconds apart, far below a second
    assert!(skew.abs() < 1000.0, "{s}");
    let warnings = s["pipelines"]["reverse"]["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains(&format!("{skew:.3} ms"))
            && w.as_str().unwrap().contains("max_skew_ms = 0")),
        "{s}"
    );
    let metrics = http_get(run.status, "/metrics");
    assert!(metrics.contains("cdc_sync_clock_skew_over_bound{direction=\"forward\"} 1"), "{metrics}");
    assert!(metrics.contains("cdc_sync_clock_skew_seconds{direction=\"forward\"} "), "{metrics}");
    assert!(run.log_text().contains("clocks differ by more than [clock] max_skew_ms"), "{}", run.log_text());
    run.child.signal(Signal::SIGKILL).unwrap();
    wait_exit(&mut run, Duration::from_secs(10));

    // a bound of a minute: measured, not warned
    let cfg = env.write_config("skew", &clock(60_000));
    let run = start(&cfg, "skew-ok");
    let s = wait_status(&run, Duration::from_secs(30), |s| !s["pipelines"]["forward"]["clock"].is_null());
    assert_eq!(s["pipelines"]["forward"]["clock"]["over_bound"], false, "{s}");
    assert_eq!(s["pipelines"]["forward"]["warnings"], serde_json::json!([]), "{s}");
    assert!(http_get(run.status, "/metrics").contains("cdc_sync_clock_skew_over_bound{direction=\"forward\"} 0"));
    env.t("UPDATE accounts SET note = 'written' WHERE id = 1");
    env.s("UPDATE accounts SET note = 'written' WHERE id = 2");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    assert!(!run.log_text().contains("clocks differ by more than"), "{}", run.log_text());
}

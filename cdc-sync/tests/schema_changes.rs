//! Schema changes while syncing, on two real clusters with the real binary: a column added at
//! the source carried to the target (added, back-filled, streamed) with `add_columns =
//! "propagate"` or ignored and reported once without it; a mapped column dropped, and one
//! retyped, stopping with the checkpoint right before the transaction that met the change (and
//! nothing of it applied), then resuming after the fix with nothing lost; the same for a mapped
//! column missing on the target; a table added to
//! sync.toml while running (SIGHUP) copied alone under concurrent writes. Every test that writes
//! ends with `cdc-sync verify` equal.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use rand::Rng;

const ITEMS: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int);
CREATE TABLE events (id int PRIMARY KEY, v text);
INSERT INTO items SELECT g, 'n' || g, g FROM generate_series(1, 200) g;
";

const ITEMS_TGT: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int);
CREATE TABLE events (id int PRIMARY KEY, v text);
";

fn items_map(add_columns: &str, with_qty: bool) -> String {
    format!(
        "[[table]]\nsource = \"items\"\ntarget = \"items\"\nkey = [\"id\"]\n{add_columns}\n[table.columns]\nid = \"id\"\n\
         name = \"name\"\n{}\n[[table]]\nsource = \"events\"\ntarget = \"events\"\nkey = [\"id\"]\n[table.columns]\n\
         id = \"id\"\nv = \"v\"\n",
        if with_qty { "qty = \"qty\"" } else { "" }
    )
}

/// The log without its ANSI colours (`key=value` fields are coloured).
fn plain_log(run: &Running) -> String {
    let raw = run.log_text();
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Poll `done` until it holds (bounded); panics with the log.
fn wait_until(run: &Running, within: Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not reached within {within:?}; log:\n{}", plain_log(run));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn forward(s: &serde_json::Value) -> &serde_json::Value {
    &s["pipelines"]["forward"]
}

#[test]
fn an_added_column_is_propagated_with_back_fill() {
    let env = Env::new(ITEMS, ITEMS_TGT);
    let cfg = env.write_config("prop", &items_map("add_columns = \"propagate\"", false));
    let run = start(&cfg, "prop");
    // qty is not in [table.columns] but exists on both sides: carried from the start
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert_eq!(env.t("SELECT sum(qty) FROM items"), "20100");

    // two new columns (one with a default every existing row takes), then changes that use them
    env.s("ALTER TABLE items ADD COLUMN color text DEFAULT 'red', ADD COLUMN weight numeric(10,2)");
    env.s("UPDATE items SET weight = id * 1.5 WHERE id <= 10");
    env.s("INSERT INTO items VALUES (1000, 'new', 1, 'green', 2.25)");
    env.s("UPDATE items SET color = 'blue' WHERE id BETWEEN 11 AND 20");
    let has_color = "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'color'";
    wait_until(&run, Duration::from_secs(60), || env.t(has_color) == "1");
    wait_sql(&|| env.t("SELECT count(*) FROM items WHERE id = 1000 AND color = 'green'"), "1", Duration::from_secs(60));
    // added with the source's types, nullable
    assert_eq!(
        env.t("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull, ', ' ORDER BY attnum) \
               FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname IN ('color', 'weight')"),
        "color text false, weight numeric(10,2) false"
    );
    // back-filled: rows no change touched since have the source's default
    let red = "SELECT count(*) FROM items WHERE color = 'red'";
    assert_eq!(env.s(red), "190");
    wait_sql(&|| env.t(red), "190", Duration::from_secs(30));
    assert_eq!(env.t("SELECT sum(weight) FROM items"), env.s("SELECT sum(weight) FROM items"));
    let s = try_status(run.status).unwrap();
    assert_eq!(forward(&s)["columns_propagated"], 2, "{s}");
    assert_eq!(forward(&s)["unmapped_source_columns"], serde_json::json!([]), "{s}");
    assert!(run.log_text().contains("added a column that appeared at the source"), "{}", run.log_text());
    // verify compares the carried columns too
    env.s("UPDATE items SET color = 'last' WHERE id = 1");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    env.t("UPDATE items SET color = 'tampered' WHERE id = 2");
    assert_eq!(verify(&cfg).status.code(), Some(1), "verify must see the carried column");
}

#[test]
fn an_added_column_is_ignored_and_reported_once() {
    let env = Env::new(ITEMS, ITEMS_TGT);
    let cfg = env.write_config("ign", &items_map("", true));
    let run = start(&cfg, "ign");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));

    env.s("ALTER TABLE items ADD COLUMN note text");
    for i in 0..5 {
        env.s(&format!("UPDATE items SET note = 'x{i}', qty = qty + 1 WHERE id = {}", i + 1));
    }
    env.s("INSERT INTO items VALUES (500, 'five hundred', 5, 'n')");
    wait_sql(&|| env.t("SELECT count(*) FROM items WHERE id = 500"), "1", Duration::from_secs(30));
    let s = wait_status(&run, Duration::from_secs(10), |s| {
        forward(s)["unmapped_source_columns"] == serde_json::json!(["public.items.note"])
    });
    assert_eq!(forward(&s)["ready"], true, "{s}");
    assert!(http_get(run.status, "/metrics").contains("cdc_sync_unmapped_source_columns{direction=\"forward\"} 1"));
    assert_eq!(env.t("SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'note'"), "0");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    let log = plain_log(&run);
    assert_eq!(log.matches("unmapped source column").count(), 1, "{log}");
    assert!(log.contains("column=note"), "{log}");
    // `cdc-sync status` shows it from the catalogs too
    let st = status_cmd(&cfg);
    assert_eq!(
        st["columns"]["forward"]["public.items"]["unmapped_source_columns"],
        serde_json::json!(["note"]),
        "{st}"
    );
}

/// `cdc-sync status` as JSON.
fn status_cmd(cfg: &PathBuf) -> serde_json::Value {
    let out = bin().args(["status", "--config"]).arg(cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Wait until the forward direction stopped; its `/status`.
fn stopped(run: &Running) -> serde_json::Value {
    wait_status(run, Duration::from_secs(60), |s| forward(s)["stopped"] == true)
}

/// The source transaction that meets the change: an `events` row first (it must not be applied
/// half-way), then the changed table. Returns its commit LSN range.
fn txn_after_ddl(env: &Env, id: i32) -> (u64, u64) {
    let before = lsn(&env.s("SELECT pg_current_wal_insert_lsn()"));
    env.s(&format!(
        "BEGIN; INSERT INTO events VALUES ({id}, 'with the change'); INSERT INTO items (id, name) VALUES ({id}, 'after'); COMMIT"
    ));
    (before, lsn(&env.s("SELECT pg_current_wal_insert_lsn()")))
}

fn restart_and_catch_up(cfg: &PathBuf, name: &str) -> Running {
    let run = start(cfg, name);
    wait_equal(cfg, Duration::from_secs(60), Some(&run));
    run
}

#[test]
fn a_dropped_mapped_column_stops_cleanly_and_resumes_after_the_fix() {
    let env = Env::new(ITEMS, ITEMS_TGT);
    let cfg = env.write_config("drop", &items_map("", true));
    let mut run = spawn_with(&cfg, "drop", &["--linger-after-stop", "30"]);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));

    // before the drop: applied (the checkpoint ends right before the transaction that meets it)
    env.s("INSERT INTO items VALUES (300, 'before', 3); INSERT INTO events VALUES (300, 'before')");
    env.s("ALTER TABLE items DROP COLUMN qty");
    let (lo, hi) = txn_after_ddl(&env, 301);
    env.s("INSERT INTO items (id, name) VALUES (302, 'later')");

    let s = stopped(&run);
    let e = &forward(&s)["error"];
    assert_eq!((e["kind"].as_str(), e["retryable"].as_bool()), (Some("schema"), Some(false)), "{s}");
    assert_eq!(e["table"], "public.items", "{s}");
    let at = lsn(e["lsn"].as_str().unwrap_or_else(|| panic!("no lsn: {s}")));
    assert!(lo < at && at <= hi, "stopped at {at:X}, not at the transaction after the drop ({lo:X}..{hi:X})");
    let msg = e["message"].as_str().unwrap();
    for want in ["mapped column qty of public.items", "dropped or renamed", "nothing of it was applied", "To go on"] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    assert_eq!(env.t("SELECT count(*) FROM items WHERE id = 300"), "1");
    assert_eq!(env.t("SELECT count(*) FROM events WHERE id = 300"), "1");
    assert_eq!(env.t("SELECT count(*) FROM events WHERE id = 301"), "0", "half of the transaction was applied");
    assert_eq!(env.t("SELECT count(*) FROM items WHERE id >= 301"), "0");
    let cp = lsn(&env.t("SELECT lsn FROM cdc_sync.checkpoint WHERE pipeline = 'drop'"));
    assert!(cp <= at, "checkpoint {cp:X} is past the stopping transaction {at:X}");
    assert_eq!(
        wait_exit(&mut run, Duration::from_secs(60)).code(),
        Some(4),
        "a schema stop needs a human: exit code 4"
    );
    let st = status_cmd(&cfg);
    let why = st["columns"]["forward"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("column qty does not exist in public.items"), "{st}");

    // the fix: qty is no longer mapped; run continues from the checkpoint
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("qty = \"qty\"", "")).unwrap();
    let run = restart_and_catch_up(&cfg, "drop2");
    assert_eq!(env.t("SELECT string_agg(id::text, ',' ORDER BY id) FROM items WHERE id >= 300"), "300,301,302");
    assert_eq!(env.t("SELECT v FROM events WHERE id = 301"), "with the change");
    drop(run);
}

#[test]
fn a_retyped_mapped_column_stops_and_resumes_once_the_target_follows() {
    let env = Env::new(ITEMS, ITEMS_TGT);
    let cfg = env.write_config("retype", &items_map("", true));
    let mut run = spawn_with(&cfg, "retype", &["--linger-after-stop", "30"]);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));

    env.s("ALTER TABLE items ALTER COLUMN qty TYPE text USING 'q' || qty");
    let (lo, hi) = txn_after_ddl(&env, 400);
    let s = stopped(&run);
    let e = &forward(&s)["error"];
    assert_eq!(e["kind"], "schema", "{s}");
    let at = lsn(e["lsn"].as_str().unwrap());
    assert!(lo < at && at <= hi, "{s}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("column qty of public.items changed type at the source from integer to text"), "{msg}");
    assert!(msg.contains("ALTER TABLE ... ALTER COLUMN"), "{msg}");
    assert_eq!(env.t("SELECT count(*) FROM events WHERE id = 400"), "0");
    assert_eq!(
        wait_exit(&mut run, Duration::from_secs(60)).code(),
        Some(4),
        "a schema stop needs a human: exit code 4"
    );

    // the fix: the target column takes the new type (existing values converted by hand)
    env.t("ALTER TABLE items ALTER COLUMN qty TYPE text USING 'q' || qty");
    env.s("UPDATE items SET qty = 'changed' WHERE id = 7");
    let _run = restart_and_catch_up(&cfg, "retype2");
    assert_eq!(env.t("SELECT qty FROM items WHERE id = 7"), "changed");
    assert_eq!(env.t("SELECT count(*) FROM events WHERE id = 400"), "1");
}

#[test]
fn a_mapped_column_missing_on_the_target_stops_with_what_to_do() {
    let env = Env::new(ITEMS, ITEMS_TGT);
    let cfg = env.write_config("tgtcol", &items_map("", true));
    let mut run = spawn_with(&cfg, "tgtcol", &["--linger-after-stop", "30"]);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));

    env.t("ALTER TABLE items DROP COLUMN qty");
    env.s("INSERT INTO events VALUES (600, 'before')");
    // applied on its own first (a batch that fails is rolled back whole: the checkpoint is then
    // before all of it, which loses nothing either)
    wait_sql(&|| env.t("SELECT count(*) FROM events WHERE id = 600"), "1", Duration::from_secs(30));
    let (lo, hi) = txn_after_ddl(&env, 601);
    let s = stopped(&run);
    let e = &forward(&s)["error"];
    assert_eq!((e["kind"].as_str(), e["sqlstate"].as_str()), (Some("schema"), Some("42703")), "{s}");
    assert_eq!(e["table"], "public.items", "{s}");
    assert_eq!(e["key"], "(601)", "{s}");
    let at = lsn(e["lsn"].as_str().unwrap());
    assert!(lo < at && at <= hi, "{s}");
    assert!(e["message"].as_str().unwrap().contains("column \"qty\""), "{s}");
    assert!(e["hint"].as_str().unwrap_or_default().contains("a mapped column is missing on the written side"), "{s}");
    assert_eq!(env.t("SELECT count(*) FROM events WHERE id = 601"), "0", "half of the transaction was applied");
    assert_eq!(
        wait_exit(&mut run, Duration::from_secs(60)).code(),
        Some(4),
        "a schema stop needs a human: exit code 4"
    );

    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("qty = \"qty\"", "")).unwrap();
    let _run = restart_and_catch_up(&cfg, "tgtcol2");
    assert_eq!(env.t("SELECT count(*) FROM events WHERE id = 601"), "1");
    assert_eq!(env.t("SELECT name FROM items WHERE id = 601"), "after");
}

const SHOP: &str = "
CREATE TABLE items (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, n bigint NOT NULL, note text);
INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g;
INSERT INTO orders SELECT g, 0, 'seed' FROM generate_series(1, 20000) g;
";

const SHOP_TGT: &str = "
CREATE TABLE items (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, n bigint NOT NULL, note text);
";

const SHOP_ITEMS: &str =
    "[[table]]\nsource = \"items\"\ntarget = \"items\"\nkey = [\"id\"]\n[table.columns]\nid = \"id\"\nn = \"n\"\n";
const SHOP_ORDERS: &str = "[[table]]\nsource = \"orders\"\ntarget = \"orders\"\nkey = [\"id\"]\n[table.columns]\nid = \"id\"\nn = \"n\"\nnote = \"note\"\n";

/// Both tables written in every transaction: counters incremented, orders inserted and updated.
fn shop_txn(i: u64, rng: &mut rand::rngs::ThreadRng) -> String {
    let (item, order) = (rng.gen_range(1..=100), rng.gen_range(1..=20000));
    format!(
        "BEGIN; UPDATE items SET n = n + 1 WHERE id = {item}; UPDATE orders SET n = n + 1 WHERE id = {order}; \
         INSERT INTO orders VALUES ({}, {i}, 'w'); COMMIT",
        100_000 + i
    )
}

#[test]
fn a_table_added_while_running_is_copied_alone_without_gap_or_duplicate() {
    let env = Env::new(SHOP, SHOP_TGT);
    let cfg = env.write_config("shop", &format!("[replication]\nsnapshot_chunk_pages = 20\n{SHOP_ITEMS}"));
    let run = start(&cfg, "shop");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let items_state =
        "SELECT state || ' ' || snapshot_lsn FROM cdc_sync.snapshot_table WHERE table_name = 'public.items'";
    let items_before = env.t(items_state);

    let work = Workload::start(env.src_conn.clone(), shop_txn);
    wait_sql(&|| env.t("SELECT sum(n) > 50 FROM items"), "t", Duration::from_secs(60));
    // a broken file is refused and changes nothing
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap() + "[[table]]\nsource = \"orders\"\n").unwrap();
    let pid = run.child.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_sql(&|| run.log_text().contains("sync.toml not reloaded").to_string(), "true", Duration::from_secs(20));
    let s = try_status(run.status).unwrap();
    assert_eq!(forward(&s)["stopped"], false);
    assert!(forward(&s)["config_reload_error"].as_str().unwrap_or_default().contains("missing field `target`"), "{s}");
    assert!(http_get(run.status, "/metrics").contains("cdc_sync_config_reload_failures_total{direction=\"forward\"} 1"));
    // the real change, while the writes go on
    let cfg = env.write_config("shop", &format!("[replication]\nsnapshot_chunk_pages = 20\n{SHOP_ITEMS}{SHOP_ORDERS}"));
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_status(&run, Duration::from_secs(90), |s| {
        s["ready"] == true
            && forward(s)["snapshot"]["tables_done"] == 1
            && env.t("SELECT count(*) > 0 FROM orders") == "t"
    });
    std::thread::sleep(Duration::from_millis(500)); // keep writing past the switch
    let txns = work.finish();
    assert!(txns > 20, "too few writes to tell: {txns}");

    let out = wait_equal(&cfg, Duration::from_secs(90), Some(&run));
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders"), "verify covers the new table");
    // each source transaction added exactly 1 to both sums and one order: nothing lost, none twice
    assert_eq!(env.t("SELECT sum(n) FROM items"), env.s("SELECT sum(n) FROM items"));
    assert_eq!(env.t("SELECT count(*), sum(n) FROM orders"), env.s("SELECT count(*), sum(n) FROM orders"));
    assert_eq!(env.s("SELECT count(*) FROM orders WHERE id > 100000"), txns.to_string());
    // items was not copied again: same snapshot state, and one table copied in this process after the start
    assert_eq!(env.t(items_state), items_before);
    assert_eq!(forward(&try_status(run.status).unwrap())["config_reload_error"], serde_json::Value::Null);
    let log = plain_log(&run);
    assert!(log.contains("SIGHUP: sync.toml re-read"), "{log}");
    assert_eq!(log.matches("snapshot: table done").count(), 2, "items once at the start, orders once: {log}");
    assert!(log.contains("table=public.orders"), "{log}");
}

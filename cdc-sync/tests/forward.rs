//! Forward sync end to end: snapshot + stream, mapping (rename, drop, cast expression,
//! constant), TOAST, key change, truncate, NULLs and types, verify (equal and a named
//! difference), and a mapped column dropped at the source stopping the pipeline.

mod common;

use std::time::{Duration, Instant};

use common::*;

const SRC: &str = "
CREATE TABLE products (
    id bigint PRIMARY KEY, name text NOT NULL, price numeric(12,2), tags text[], attrs jsonb,
    uid uuid, created timestamptz, legacy_flag boolean, big text);
CREATE TABLE events (id int PRIMARY KEY, v text);
INSERT INTO products SELECT g, 'name ' || g, g * 1.25, ARRAY['a', 'b' || g], jsonb_build_object('g', g),
    md5(g::text)::uuid, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', g % 2 = 0, NULL
    FROM generate_series(1, 20000) g;
INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 100) g;
";

const TGT: &str = "
CREATE SCHEMA catalog;
CREATE TABLE catalog.items (
    id bigint PRIMARY KEY, title text NOT NULL, price_cents bigint, tags text[], attrs jsonb,
    uid uuid, created timestamptz, origin text, big text, local_only text DEFAULT 'keep');
CREATE TABLE events (id int PRIMARY KEY, v text);
";

const TABLES: &str = r#"
[replication]
snapshot_chunk_pages = 40

[[table]]
source = "products"
target = "catalog.items"
key = ["id"]
[table.columns]
id = "id"
title = "name"
price_cents = { expr = "(price * 100)::bigint" }
tags = "tags"
attrs = "attrs"
uid = "uid"
created = "created"
origin = { constant = "'legacy'" }
big = "big"

[[table]]
source = "events"
target = "events"
key = ["id"]
[table.columns]
id = "id"
v = "v"
"#;

/// A key that may be NULL (REPLICA IDENTITY FULL, keyed on a column that is not the primary key)
/// is refused by `check --connect`, naming the column and the fix, before anything runs.
#[test]
fn a_key_column_that_allows_null_is_refused() {
    let schema = "CREATE TABLE tags (id int PRIMARY KEY, code text UNIQUE, v text); \
                  ALTER TABLE tags REPLICA IDENTITY FULL;";
    let env = Env::new(schema, "CREATE TABLE tags (code text PRIMARY KEY, v text);");
    let map = "[[table]]\nsource = \"tags\"\ntarget = \"tags\"\nkey = [\"code\"]\n[table.columns]\ncode = \"code\"\nv = \"v\"\n";
    let cfg = env.write_config("nullkey", map);
    let out = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("key column code allows NULL") && err.contains("SET NOT NULL"), "{err}");
    env.s("ALTER TABLE tags ALTER COLUMN code SET NOT NULL");
    let out = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn snapshot_then_stream_with_mapping_toast_keys_truncate_and_verify() {
    let env = Env::new(SRC, TGT);
    let cfg = env.write_config("fwd", TABLES);
    let check = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let run = start(&cfg, "fwd");
    // snapshot copied (ctid chunks: 40 pages per chunk => several chunks)
    assert_eq!(env.t("SELECT count(*), sum(price_cents) FROM catalog.items"), "20000|25001250000");
    assert_eq!(env.t("SELECT origin, local_only FROM catalog.items WHERE id = 7"), "legacy|keep");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));

    // streaming: inserts with unicode / NULLs / types, updates, deletes, key change, TOAST
    env.s("INSERT INTO products VALUES (30001, 'Zürich ☕ 日本', 9.99, '{x,NULL}', '{\"k\": [1, 2]}', gen_random_uuid(), now(), true, NULL),
                                       (30002, 'nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL)");
    env.s(
        "UPDATE products SET big = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 4000) g) WHERE id = 5",
    );
    env.s("UPDATE products SET price = price + 1 WHERE id BETWEEN 1 AND 3000");
    env.s("DELETE FROM products WHERE id BETWEEN 3001 AND 3500");
    env.s("UPDATE products SET id = 40000 WHERE id = 4000");
    env.s("UPDATE products SET price = 777 WHERE id = 5"); // big is TOASTed and unchanged: not sent
    env.s("BEGIN; TRUNCATE events; INSERT INTO events VALUES (1, 'after truncate'); COMMIT");
    let out = wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("public.products -> catalog.items: equal (19502 rows)"), "{text}");
    assert!(text.contains("public.events -> public.events: equal (1 rows)"), "{text}");
    assert_eq!(env.t("SELECT length(big), price_cents FROM catalog.items WHERE id = 5"), "128000|77700");
    assert_eq!(env.t("SELECT count(*) FROM catalog.items WHERE id IN (4000, 40000)"), "1");
    assert_eq!(env.t("SELECT title FROM catalog.items WHERE id = 30001"), "Zürich ☕ 日本");

    // status endpoint
    let status = http_get(run.status, "/status");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["ready"], true, "{status}");
    assert!(v["pipelines"]["forward"]["txns_applied"].as_u64().unwrap() >= 7, "{status}");
    assert!(http_get(run.status, "/metrics").contains("cdc_sync_rows_applied_total{direction=\"forward\"}"));

    // a deliberate difference is found and named
    env.t("UPDATE catalog.items SET title = 'tampered' WHERE id = 12345; DELETE FROM catalog.items WHERE id = 777");
    let out = verify(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DIFFERENT") && text.contains("(12345)") && text.contains("(777)"), "{text}");

    // a mapped column dropped at the source stops the pipeline with a clear error
    env.s("ALTER TABLE products DROP COLUMN price; INSERT INTO products (id, name) VALUES (50000, 'after drop')");
    let mut run = run;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = run.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after the drop:\n{}", run.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(4));
    let log = run.log_text();
    assert!(log.contains("mapped column price of public.products is no longer present"), "{log}");
    assert_eq!(env.t("SELECT count(*) FROM catalog.items WHERE id = 50000"), "0");
}

#[test]
fn bad_config_exits_2_with_all_problems() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "name = \"x\"\n[source]\nurl = \"a\"\n[target]\nurl_env = \"NOPE_NOT_SET\"\n[[table]]\nsource = \"a\"\ntarget = \"b\"\nkey = [\"id\"]\n[table.columns]\nother = \"x\"\n").unwrap();
    let out = bin().args(["check"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:1") && err.contains("NOPE_NOT_SET"), "{err}");
    assert!(err.contains("key column id must be mapped"), "{err}");
    let out = bin().args(["run", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn snapshot_progress_is_visible_in_status() {
    // a target column default that sleeps a little per row keeps the copy running long enough to
    // watch (defaults are evaluated by COPY even with session_replication_role = replica)
    let env = Env::new(
        "CREATE TABLE wide (id int PRIMARY KEY, v text);
         INSERT INTO wide SELECT g, repeat('v', 50) FROM generate_series(1, 10000) g; ANALYZE wide;",
        "CREATE FUNCTION slow_default() RETURNS int LANGUAGE sql AS 'SELECT 1 FROM pg_sleep(0.00005)';
         CREATE TABLE wide (id int PRIMARY KEY, v text, slow int DEFAULT slow_default());",
    );
    let cfg = env.write_config(
        "progress",
        "[replication]\nsnapshot_workers = 1\nsnapshot_chunk_pages = 16\n\
         [[table]]\nsource = \"wide\"\ntarget = \"wide\"\nkey = [\"id\"]\n[table.columns]\nid = \"id\"\nv = \"v\"\n",
    );
    let run = spawn(&cfg, "progress");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut during = Vec::new();
    loop {
        if let Some(s) = try_status(run.status) {
            if s["ready"] == true {
                let snap = &s["pipelines"]["forward"]["snapshot"];
                assert_eq!(snap["rows"], 10000, "{s}");
                assert_eq!(snap["finished"], true, "{s}");
                assert_eq!(snap["eta_seconds"], 0.0, "{s}");
                assert!(snap["rows_per_second"].as_f64().unwrap() > 0.0, "{s}");
                break;
            }
            let fwd = &s["pipelines"]["forward"];
            let snap = &fwd["snapshot"];
            if fwd["state"] == "snapshot" && snap["rows"].as_u64().unwrap_or(0) > 0 && snap["finished"] == false {
                during.push(snap.clone());
            }
        }
        assert!(Instant::now() < deadline, "not ready:\n{}", run.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(during.len() >= 3, "saw only {} progress samples: {during:?}", during.len());
    let rows: Vec<u64> = during.iter().map(|s| s["rows"].as_u64().unwrap()).collect();
    assert!(rows.windows(2).all(|w| w[0] <= w[1]), "{rows:?}");
    for s in &during {
        assert_eq!(s["rows_estimate"], 10000, "{s}");
        assert_eq!(s["tables_total"], 1, "{s}");
        assert!(s["rows_per_second"].as_f64().unwrap() > 0.0, "{s}");
    }
    // while rows remain, an ETA is shown
    assert!(during.iter().any(|s| s["eta_seconds"].as_f64().unwrap() > 0.0), "{during:?}");
    let metrics = http_get(run.status, "/metrics");
    assert!(metrics.contains("cdc_sync_snapshot_rows_total{direction=\"forward\"} 10000"), "{metrics}");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
}

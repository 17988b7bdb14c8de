//! Tests of the sync file's parsing and validation (shared fixtures for the config modules).

use super::*;

/// A valid sync file (with a `both` table), shared by the config modules' tests.
pub(crate) const GOOD: &str = r#"
name = "catalog"
[source]
url = "host=a dbname=legacy"
[target]
url_env = "CAT_DB"

[[table]]
source = "products"
target = "catalog.items"
key = ["id"]
direction = "both"
[table.columns]
id = "id"
title = "name"
price_cents = { expr = "(price * 100)::bigint", reverse_column = "price", reverse_expr = "(price_cents / 100.0)::numeric(12,2)" }
system = { constant = "'legacy'" }
"#;

pub(crate) fn env(k: &str) -> Option<String> {
    (k == "CAT_DB").then(|| "host=b dbname=cat".to_string())
}

#[test]
fn parses_a_good_file() {
    let c = parse_with_env("sync.toml", GOOD, &env).unwrap();
    assert_eq!(c.name, "catalog");
    assert_eq!(c.target.conn, "host=b dbname=cat");
    assert_eq!(c.replication.slot, "cdc_sync_catalog");
    let t = &c.tables[0];
    assert_eq!(t.source, "public.products");
    assert_eq!(t.target, "catalog.items");
    assert_eq!(t.direction, Direction::Both);
    assert_eq!(t.columns.len(), 4);
    assert!(t.columns.iter().any(|c| c.target == "system" && c.spec == ColumnSpec::Constant("'legacy'".into())));
    assert_eq!(c.replication.on_slot_lost, OnSlotLost::Stop);
}

#[test]
fn on_slot_lost_is_stop_or_resnapshot() {
    let with = |v: &str| GOOD.replace("[[table]]", &format!("[replication]\non_slot_lost = {v}\n[[table]]"));
    let c = parse_with_env("s.toml", &with("\"resnapshot\""), &env).unwrap();
    assert_eq!(c.replication.on_slot_lost, OnSlotLost::Resnapshot);
    let e = parse_with_env("s.toml", &with("\"truncate\""), &env).unwrap_err().to_string();
    assert!(e.contains("s.toml:9:") && e.contains("stop") && e.contains("resnapshot"), "{e}");
}

#[test]
fn reports_every_problem_with_a_line() {
    let bad = r#"
name = "x"
[source]
url = "a"
[target]
url_env = "NOPE"

[[table]]
source = "a"
target = "b"
key = ["id"]
direction = "both"
[table.columns]
ident = "id2"
p = { expr = "x + 1" }

[[table]]
source = "a"
target = "c"
key = []
[table.columns]
id = "id"
"#;
    let e = parse_with_env("s.toml", bad, &env).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("s.toml:5:1: [target] url_env names $NOPE"), "{text}");
    assert!(text.contains("key column id must be mapped"), "{text}");
    assert!(text.contains("expressions are forward-only"), "{text}");
    assert!(text.contains("source table public.a is mapped more than once"), "{text}");
    assert!(text.contains("key must name at least one column"), "{text}");
    assert!(e.problems.len() >= 5, "{text}");
    assert!(e.problems.iter().all(|p| p.line > 0));
}

#[test]
fn unknown_fields_are_rejected_with_place() {
    let bad = "name = \"x\"\nbogus = 1\n[source]\nurl='a'\n[target]\nurl='b'\n";
    let e = parse_with_env("s.toml", bad, &env).unwrap_err();
    assert_eq!(e.problems[0].line, 2, "{e}");
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn skip_origins_are_validated() {
    let with = GOOD.replace(
        "[[table]]",
        "[replication]\nskip_origins = [\"cdc_sync_orders_rev\"]\nreverse_skip_origins = [\"*\"]\n[[table]]",
    );
    let c = parse_with_env("sync.toml", &with, &env).unwrap();
    assert_eq!(c.replication.skip_origins, ["cdc_sync_orders_rev"]);
    assert_eq!(c.replication.reverse_skip_origins, ["*"]);
    let bad = GOOD.replace("[[table]]", "[replication]\nskip_origins = [\"ok\", \"bad name\", \"\"]\n[[table]]");
    let e = parse_with_env("s.toml", &bad, &env).unwrap_err();
    assert_eq!(e.problems.len(), 2, "{e}");
    assert!(e.to_string().contains("s.toml:9:16: [replication] skip_origins: \"bad name\""), "{e}");
}

#[test]
fn add_columns_is_ignore_or_propagate_and_forward_only() {
    let c = parse_with_env("s.toml", GOOD, &env).unwrap();
    assert_eq!(c.tables[0].add_columns, AddColumns::Ignore);
    let fwd = GOOD.replace("direction = \"both\"", "add_columns = \"propagate\"").replace(
        "price_cents = { expr = \"(price * 100)::bigint\", reverse_column = \"price\", reverse_expr = \"(price_cents / 100.0)::numeric(12,2)\" }",
        "",
    );
    assert_eq!(parse_with_env("s.toml", &fwd, &env).unwrap().tables[0].add_columns, AddColumns::Propagate);
    let both = GOOD.replace("direction = \"both\"", "direction = \"both\"\nadd_columns = \"propagate\"");
    let e = parse_with_env("s.toml", &both, &env).unwrap_err().to_string();
    assert!(e.contains("s.toml:13:15: table public.products: add_columns = \"propagate\" needs direction"), "{e}");
    // with a conflict policy too, each key keeps its rule (propagate: forward only; conflict:
    // both only)
    let e = parse_with_env(
        "s.toml",
        &both.replace("direction = \"both\"", "direction = \"both\"\nconflict = \"source_wins\""),
        &env,
    )
    .unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert!(e.to_string().contains("add_columns = \"propagate\" needs direction"), "{e}");
    let e = parse_with_env("s.toml", &fwd.replace("add_columns", "conflict = \"lww\"\nadd_columns"), &env).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert!(e.to_string().contains("`conflict` only applies to direction = \"both\""), "{e}");
    let bad = GOOD.replace("direction = \"both\"", "add_columns = \"copy\"");
    let e = parse_with_env("s.toml", &bad, &env).unwrap_err().to_string();
    assert!(e.contains("s.toml:12:") && e.contains("ignore") && e.contains("propagate"), "{e}");
}

#[test]
fn column_spec_needs_exactly_one_kind() {
    let bad = "name='x'\n[source]\nurl='a'\n[target]\nurl='b'\n[[table]]\nsource='a'\ntarget='b'\nkey=['id']\n[table.columns]\nid='id'\nz = { column = 'a', constant = 1 }\n";
    let e = parse_with_env("s.toml", bad, &env).unwrap_err();
    assert!(e.to_string().contains("exactly one of"), "{e}");
    assert_eq!(e.problems[0].line, 12, "{e}");
}

#[test]
fn a_source_table_may_fan_out_forward_only() {
    let src = r#"
name = "t"
[source]
url = "a"
[target]
url = "b"
[[table]]
source = "products"
target = "products"
key = ["id"]
[table.columns]
id = "id"
title = "name"
[[table]]
source = "products"
target = "product_prices"
key = ["id"]
[table.columns]
product_id = "id"
price_cents = { expr = "(price * 100)::bigint" }
"#;
    let cfg = parse_with_env("s.toml", src, &|_: &str| None).unwrap();
    assert_eq!(cfg.tables.len(), 2);
    assert_eq!(cfg.tables[0].source, cfg.tables[1].source);
}

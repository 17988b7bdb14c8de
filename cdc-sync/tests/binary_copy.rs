//! The initial copy in binary (`COPY ... (FORMAT binary)` on both sides) against two real
//! clusters with the real binary: a table of plain built-in columns of the same types on both
//! sides is copied in binary over several chunks and ends with exactly the source's rows (NULLs,
//! numerics, floats, timestamps and infinities, intervals, text with tabs and newlines, bytea,
//! uuid, inet, json kept as written, jsonb, ranges and arrays with NULL elements); a table whose
//! mapping changes a column's type is copied as text, and so is a table with `reg*` and
//! `aclitem` columns, whose binary form is an OID of the source database (or none at all).

mod common;

use std::time::Duration;

use common::*;

/// The table of every type, the same on both sides.
macro_rules! typed_table {
    () => {
        "
CREATE TABLE typed (
    id int PRIMARY KEY, n numeric, n2 numeric(12, 4), f8 float8, f4 real, i2 smallint, i8 bigint, b bool,
    ts timestamp, tz timestamptz, d date, tm time, iv interval,
    t text, vc varchar(10), ch char(3), bin bytea, u uuid, ip inet,
    j json, jb jsonb, arr int[], tarr text[], grid int[][], r int4range
);
"
    };
}

const TYPED: &str = concat!(
    typed_table!(),
    "
INSERT INTO typed (id) VALUES (1);
INSERT INTO typed VALUES
  (2, 'NaN', 12.3400, 'Infinity', '-Infinity', -32768, 9223372036854775807, true,
   'infinity', '-infinity', 'infinity', '24:00:00', '-1 year 2 mons -3 days 04:05:06.000007',
   E'tab\\there\\nnew line \\\\ back \"quoted\" é✓', 'ten chars!', 'ab', '\\x00ff0a5c', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   '10.1.2.3/8', '{\"b\": 1,  \"a\": [1, 2],  \"b\": 2}', '{\"b\": 1, \"a\": {\"c\": null}}',
   '{1,NULL,3}', '{\"a b\",NULL,\"q\\\"uote\",\"\"}', '{{1,2},{3,4}}', '[1,10)'),
  (3, '-0.000000000000000000001', -0.0001, 'NaN', '-0', 0, -1, false,
   '2024-02-29 23:59:59.999999', '4713-01-01 00:00:00+00 BC', '0001-01-01', '00:00:00.000001', '0',
   '', '', '', '', '00000000-0000-0000-0000-000000000000', '::1', 'null', '[]', '{}', '{}', '{}', 'empty'),
  (4, 1e300, 99999999.9999, 1.0000000000000002, 3.4e38, 32767, 0, NULL,
   NULL, '2000-01-01 00:00:00+14', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{NULL}', '{NULL}', NULL, NULL);
INSERT INTO typed (id, n, f8, tz, t, jb, arr)
  SELECT g, g / 7.0, g / 3.0, '2020-01-01 00:00:00+00'::timestamptz + g * interval '1 second', repeat('x', g % 300),
         jsonb_build_object('g', g), ARRAY[g, NULL, -g]
  FROM generate_series(10, 3000) g;
ANALYZE typed;
"
);

const TYPED_TGT: &str = typed_table!();

/// The same values, one column retyped by the target (int → bigint, varchar → text).
const RETYPED: &str = "
CREATE TABLE retyped (id int PRIMARY KEY, v int, name varchar(20));
INSERT INTO retyped SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE -g END, 'name ' || g FROM generate_series(1, 500) g;
";

const RETYPED_TGT: &str = "CREATE TABLE retyped (id int PRIMARY KEY, v bigint, name text);";

/// Columns naming database objects. The target creates other tables first, so `named` has
/// another OID there than at the source.
const REGS: &str = "
CREATE TABLE named (x int);
CREATE TABLE regs (id int PRIMARY KEY, rel regclass, typ regtype, rels regclass[], acl aclitem);
INSERT INTO regs VALUES (1, 'named', 'named', '{named,regs}', 'postgres=r/postgres'), (2, NULL, 'int8', NULL, NULL);
";

const REGS_TGT: &str = "
CREATE TABLE pad1 (x int);
CREATE TABLE pad2 (x int);
CREATE TABLE named (x int);
CREATE TABLE regs (id int PRIMARY KEY, rel regclass, typ regtype, rels regclass[], acl aclitem);
";

fn table(name: &str, cols: &[&str]) -> String {
    let mut s = format!("[[table]]\nsource = \"{name}\"\ntarget = \"{name}\"\nkey = [\"id\"]\n[table.columns]\n");
    for c in cols {
        s.push_str(&format!("{c} = \"{c}\"\n"));
    }
    s
}

/// `text` without its terminal colour codes.
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn binary_copy_gives_the_sources_rows_and_falls_back_to_text_where_binary_would_differ() {
    let env = Env::new(&format!("{TYPED}{RETYPED}{REGS}"), &format!("{TYPED_TGT}{RETYPED_TGT}{REGS_TGT}"));
    assert_ne!(
        env.s("SELECT 'named'::regclass::oid"),
        env.t("SELECT 'named'::regclass::oid"),
        "the test needs `named` to have different OIDs on the two sides"
    );
    let typed_cols = [
        "id", "n", "n2", "f8", "f4", "i2", "i8", "b", "ts", "tz", "d", "tm", "iv", "t", "vc", "ch", "bin", "u", "ip",
        "j", "jb", "arr", "tarr", "grid", "r",
    ];
    // small chunks: typed is copied as several binary COPYs by two workers
    let body = format!(
        "[replication]\nsnapshot_workers = 2\nsnapshot_chunk_pages = 8\n{}{}{}",
        table("typed", &typed_cols),
        table("retyped", &["id", "v", "name"]),
        table("regs", &["id", "rel", "typ", "rels", "acl"]),
    );
    let cfg = env.write_config("bin", &body);
    let run = start(&cfg, "bin");
    let log = without_ansi(&run.log_text());
    let copying = log.lines().find(|l| l.contains("snapshot: copying")).unwrap_or_else(|| panic!("{log}"));
    let binary = copying.split("binary=").nth(1).unwrap_or_else(|| panic!("{copying}"));
    assert!(binary.contains("\"public.typed\""), "typed must be copied in binary: {copying}");
    assert!(!binary.contains("retyped"), "a retyped column means text: {copying}");
    assert!(!binary.contains("regs"), "reg* and aclitem columns mean text: {copying}");
    let chunks: usize = env
        .t("SELECT count(*) FROM cdc_sync.snapshot_chunk WHERE table_name = 'public.typed' AND done")
        .parse()
        .unwrap();
    assert!(chunks > 2, "typed in several chunks: {chunks}");

    // every row, every column, as the source prints it (and json exactly as written)
    let rows = "SELECT string_agg(x::text, E'\\n' ORDER BY id) FROM typed x";
    assert_eq!(env.t(rows), env.s(rows));
    assert_eq!(env.t("SELECT count(*) FROM typed"), "2995");
    assert_eq!(env.t("SELECT j::text FROM typed WHERE id = 2"), "{\"b\": 1,  \"a\": [1, 2],  \"b\": 2}");
    assert_eq!(
        env.t("SELECT count(*) FROM typed WHERE id = 1 AND num_nulls(n, f8, tz, t, bin, j, jb, arr, r) = 9"),
        "1"
    );
    assert_eq!(
        env.t("SELECT n::text, f8::text, ts::text, tz::text, arr::text FROM typed WHERE id = 2"),
        "NaN|Infinity|infinity|-infinity|{1,NULL,3}"
    );
    let retyped = "SELECT string_agg(concat_ws(',', id, v, name), ';' ORDER BY id) FROM retyped";
    assert_eq!(env.t(retyped), env.s(retyped));
    // the names, resolved again at the target (a binary copy would have carried source OIDs)
    assert_eq!(
        env.t("SELECT concat_ws('|', rel, typ, rels, acl) FROM regs ORDER BY id"),
        "named|named|{named,regs}|postgres=r/postgres\nbigint"
    );
    assert_eq!(env.t("SELECT rel::oid = 'named'::regclass::oid FROM regs WHERE id = 1"), "t");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
}

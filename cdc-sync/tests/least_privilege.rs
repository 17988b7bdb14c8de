//! cdc-sync as a role without superuser, set up exactly as the README's "Minimal role setup"
//! says: LOGIN REPLICATION, table privileges, CREATE on the database, EXECUTE on the replication
//! origin functions, the publications created by an administrator and owned by the role. A `both` pipeline copies,
//! streams both ways, verifies, reports its status and is dropped, every session as that role.

mod common;

use std::time::Duration;

use common::*;

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";
const MAP: &str = r#"
[[table]]
source = "items"
target = "items"
key = ["id"]
direction = "both"
[table.columns]
id = "id"
v = "v"
"#;

/// The README's grants for role `cdc` on database `db` (run by a superuser), plus the
/// publication, created by the table owner and handed to the role (so `drop` may drop it).
fn grants(db: &str, publication: &str) -> String {
    format!(
        "CREATE ROLE cdc LOGIN REPLICATION PASSWORD 'cdc-password';
         GRANT USAGE ON SCHEMA public TO cdc;
         GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO cdc;
         GRANT CREATE ON DATABASE {db} TO cdc;
         GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text),
                                   pg_replication_origin_session_setup(text),
                                   pg_replication_origin_session_reset(),
                                   pg_replication_origin_xact_setup(pg_lsn, timestamptz),
                                   pg_replication_origin_drop(text) TO cdc;
         CREATE PUBLICATION {publication} FOR TABLE items;
         ALTER PUBLICATION {publication} OWNER TO cdc;"
    )
}

const PLUMBING: &str = "SELECT (SELECT count(*) FROM pg_replication_slots) || '|' || \
     (SELECT count(*) FROM pg_publication) || '|' || (SELECT count(*) FROM pg_replication_origin)";

fn as_cdc(conn: &str) -> String {
    conn.replace("user=postgres", "user=cdc password=cdc-password")
}

#[test]
fn a_both_pipeline_runs_as_a_role_without_superuser() {
    let mut env = Env::new(
        &format!("{ITEMS} INSERT INTO items SELECT g, 'legacy ' || g FROM generate_series(1, 500) g;"),
        &format!("{ITEMS} INSERT INTO items SELECT g, 'service ' || g FROM generate_series(1001, 1050) g;"),
    );
    env.s(&grants(&env.src_db, "cdc_sync_lp"));
    env.t(&grants(&env.tgt_db, "cdc_sync_lp_rev"));
    assert_eq!(env.s("SELECT rolsuper FROM pg_roles WHERE rolname = 'cdc'"), "f");
    env.src_conn = as_cdc(&env.src_conn);
    env.tgt_conn = as_cdc(&env.tgt_conn);
    assert!(env.src_conn.contains("user=cdc"), "{}", env.src_conn);
    let cfg = env.write_config("lp", MAP);

    let check = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let mut run = start(&cfg, "lp");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert_eq!(env.s("SELECT count(*) FROM items"), "550", "the service's rows were carried");
    env.s("INSERT INTO items VALUES (501, 'legacy new'); UPDATE items SET v = 'legacy edit' WHERE id = 1");
    env.t("INSERT INTO items VALUES (1051, 'service new'); DELETE FROM items WHERE id = 2");
    wait_sql(&|| env.t("SELECT v FROM items WHERE id = 1"), "legacy edit", Duration::from_secs(30));
    wait_sql(&|| env.s("SELECT count(*) FROM items WHERE id IN (1051, 2)"), "1", Duration::from_secs(30));
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));
    // every session is the role's: both walsenders, the applier, the instance lock
    assert_eq!(env.s("SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_replication"), "cdc");
    assert_eq!(env.t("SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_replication"), "cdc");
    let users = "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity \
                 WHERE application_name LIKE 'cdc-sync%' OR backend_type = 'walsender'";
    assert_eq!(env.s(users), "cdc");
    // without superuser, triggers fire on replicated rows: said once, not an error
    assert!(run.log_text().contains("session_replication_role"), "{}", run.log_text());
    let status = bin().args(["status", "--config"]).arg(&cfg).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    assert!(run.child.stop(Duration::from_secs(10)).is_some());
    let drop = bin().args(["drop", "--config"]).arg(&cfg).output().unwrap();
    assert!(drop.status.success(), "{}", String::from_utf8_lossy(&drop.stderr));
    // a session's temporary slot goes when its backend has exited, which the server finishes
    // after the client is gone: poll (a persistent leftover still fails at the deadline)
    wait_sql(&|| env.s(PLUMBING), "0|0|0", Duration::from_secs(10));
    wait_sql(&|| env.t(PLUMBING), "0|0|0", Duration::from_secs(10));
}

//! `both` tables and the limits that lost or resurrected data, on two real clusters with the real
//! binary:
//! - a `both` table copied again from the start (`on_slot_lost = "resnapshot"`, the forward slot
//!   dropped while the pipeline was stopped) keeps the service's changes the reverse stream had
//!   not applied: a plain service edit is carried to legacy, a row both sides changed is decided
//!   by the table's policy (`lww`) and recorded in legacy's `cdc_sync.conflicts`;
//! - a forward-only table turned `both` does not carry back a row legacy deleted while the
//!   pipeline was stopped (the forward applier had written it without an origin), and does carry
//!   a row only the service inserted.
//!
//! Every test ends with `cdc-sync verify` equal.

mod common;

use std::time::Duration;

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

//! The admin commands that read and clear the state schema through the checkpoint store:
//! `status` (slots, checkpoint, per-table snapshot state) and `drop` / `drop --purge`.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn status_shows_snapshot_state_and_drop_clears_it() {
    let env = Env::new(COUNTERS, COUNTERS_TGT);
    let cfg = env.write_config("adm", COUNTERS_MAP);
    let mut run = start(&cfg, "adm");
    env.s("UPDATE counters SET n = n + 1 WHERE id <= 10");
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));

    let out = bin().args(["status", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["forward_slot"]["slot"], "cdc_sync_adm", "{v}");
    assert_eq!(v["forward_slot"]["active"], true, "{v}");
    assert_eq!(v["reverse_slot"], serde_json::Value::Null, "{v}");
    assert_eq!(v["snapshot"]["public.counters"]["state"], "done", "{v}");
    assert_eq!(v["snapshot"]["public.counters"]["rows"], 100, "{v}");
    assert_eq!(v["snapshot"]["public.log"]["state"], "done", "{v}");
    assert!(v["forward_checkpoint"]["lsn"].as_str().is_some_and(|l| l.contains('/')), "{v}");

    // drop refuses while the slot is in use
    let out = bin().args(["drop", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));

    run.child.stop(Duration::from_secs(10));
    // the walsender lets go of the slot shortly after its client is gone
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = bin().args(["drop", "--config"]).arg(&cfg).output().unwrap();
        if out.status.success() || Instant::now() >= deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dropped slot cdc_sync_adm on source"));
    assert_eq!(env.s("SELECT count(*) FROM pg_replication_slots"), "0");
    assert_eq!(env.s("SELECT count(*) FROM pg_publication"), "0");
    assert_eq!(env.t("SELECT count(*) FROM cdc_sync.checkpoint"), "0");
    assert_eq!(env.t("SELECT count(*) FROM cdc_sync.snapshot_table"), "0");

    let out = bin().args(["drop", "--purge", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.t("SELECT count(*) FROM pg_namespace WHERE nspname = 'cdc_sync'"), "0");
    let out = bin().args(["status", "--config"]).arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["forward_slot"], serde_json::Value::Null, "{v}");
    assert!(v.get("snapshot").is_none(), "{v}");
}

//! The replication connection (cdc-sync's own walsender client) classifies its failures like
//! the normal connections: one that waiting does not fix (here a role that lost the
//! `REPLICATION` attribute, so the server refuses the walsender at login while the instance
//! lock and the other sessions still work) ends `run` at once with exit code 4 and a message
//! naming host, port, database, user and what to change — never the password; one that passes
//! (the walsender's backend terminated) is retried and the pipeline catches up.

mod common;

use std::time::{Duration, Instant};

use common::*;
use strangler_support::tls::PgPki;
use strangler_support::PgCluster;

const MAP: &str = ITEMS_MAP;
const PASSWORD: &str = "cdc-secret-not-shown";

#[test]
fn a_refused_replication_session_stops_run_and_a_broken_one_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(&dir.path().join("pki")).unwrap();
    let src = PgCluster::builder()
        .ssl(&pki.server_cert, &pki.server_key, Some(pki.ca.clone()))
        .hba("hostssl all cdc 127.0.0.1/32 scram-sha-256");
    let env = Env::with_clusters(
        src,
        PgCluster::builder(),
        &format!("{ITEMS} INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;"),
        ITEMS,
    );
    // a role without superuser (a superuser may always start a walsender)
    env.s(&format!(
        "CREATE ROLE cdc LOGIN REPLICATION PASSWORD '{PASSWORD}';
         GRANT USAGE ON SCHEMA public TO cdc;
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc;
         CREATE PUBLICATION cdc_sync_ra FOR TABLE items;
         ALTER PUBLICATION cdc_sync_ra OWNER TO cdc;"
    ));
    let port = env.src.port();
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=cdc dbname={} password={PASSWORD} \
         sslmode=verify-full sslrootcert={}",
        env.src_db,
        pki.ca.display()
    );
    let body = format!("[replication]\nretry_initial_ms = 20\nretry_max_ms = 200\nretry_max_attempts = 3\n{MAP}");
    let cfg = env.write_config("ra", &body);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&env.src_conn, &conn);
    std::fs::write(&cfg, text).unwrap();
    let mut run = spawn_with(&cfg, "ra", &["--linger-after-stop", "3"]);
    wait_status(&run, Duration::from_secs(60), |s| s["ready"] == true);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    // the stream runs over TLS, as the role
    wait_sql(
        &|| {
            env.s("SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
                   WHERE r.usename = 'cdc' AND s.ssl")
        },
        "1",
        Duration::from_secs(30),
    );

    // 1. transient: the walsender's backend is terminated (57P01 / a closed socket); the
    //    reconnect goes through the same connect path and succeeds, the pipeline catches up
    let retries = |s: &serde_json::Value| s["pipelines"]["forward"]["retries"].as_u64().unwrap_or(0);
    let before = retries(&try_status(run.status).unwrap());
    for round in 0..3 {
        assert_eq!(
            env.s("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication WHERE usename = 'cdc'"),
            "1"
        );
        env.s(&format!("INSERT INTO items VALUES ({}, 'after terminate')", 1000 + round));
        wait_sql(
            &|| env.t(&format!("SELECT count(*) FROM items WHERE id = {}", 1000 + round)),
            "1",
            Duration::from_secs(30),
        );
    }
    let s = try_status(run.status).unwrap();
    let after_round_1 = retries(&s);
    assert!(after_round_1 > before, "the broken streams were retried: {s}");
    assert!(run.child.try_wait().unwrap().is_none(), "{}", run.log_text());
    wait_equal(&cfg, Duration::from_secs(30), Some(&run));

    // 2. refused: the role loses REPLICATION; the lock connection (held) and the slot check
    //    (a normal session) still work, the walsender login is refused with 42501 ("must be
    //    superuser or replication role to start walsender")
    env.s("ALTER ROLE cdc NOREPLICATION");
    let refused_at = Instant::now();
    assert_eq!(env.s("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication WHERE usename = 'cdc'"), "1");
    let s = wait_status(&run, Duration::from_secs(20), |s| s["pipelines"]["forward"]["stopped"] == true);
    let status = wait_exit(&mut run, Duration::from_secs(20));
    let log = run.log_text();
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(refused_at.elapsed() < Duration::from_secs(20), "took {:?}", refused_at.elapsed());
    let last = log.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error (needs a human; exit code 4): forward pipeline stopped"), "{last}");
    for want in [
        &format!(
            "the replication connection to host localhost port {port} database {} user cdc was refused",
            env.src_db
        ) as &str,
        "give it the REPLICATION attribute",
        "[42501]",
        "start walsender",
    ] {
        assert!(last.contains(want), "last line lacks {want:?}:\n{log}");
    }
    assert_eq!(last.matches("; the error: ").count(), 1, "{last}");
    let e = &s["pipelines"]["forward"]["error"];
    assert_eq!(
        (&e["kind"], &e["retryable"], &e["sqlstate"]),
        (&"access".into(), &false.into(), &"42501".into()),
        "{s}"
    );
    assert!(!log.contains(PASSWORD) && !s.to_string().contains(PASSWORD), "{log}");
    // the terminated stream is retried once; the refused session is not retried
    assert!(retries(&s) <= after_round_1 + 1, "the refused session was retried: {s}\n{log}");
}

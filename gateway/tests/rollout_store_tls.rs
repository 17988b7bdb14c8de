//! The shared rollout store honours its connection string's `sslmode` and `sslrootcert`
//! (`strangler-pg-connect`), against a real cluster that refuses plain-text connections and
//! holds a certificate from a test CA: with `verify-full` and that CA the store connects, leads
//! and its session is encrypted; with another CA, or with `sslmode=disable`, it fails with an
//! error naming host, port, database and user and what to change, never the password.

use std::time::{Duration, Instant};

use strangler_gateway::rollout::pg_store::PgStore;
use strangler_gateway::rollout::store::{Leadership, RolloutStore, StoreError};
use strangler_support::tls::PgPki;
use strangler_support::PgCluster;

const PASSWORD: &str = "hunter2-not-shown";

/// A connection string for `db` on `pg` by the name the certificate holds, with `tls`; it
/// carries a password no error may show (trust authentication ignores it).
fn conn(pg: &PgCluster, db: &str, tls: &str) -> String {
    format!("host=localhost port={} user=postgres password={PASSWORD} dbname={db} {tls}", pg.port())
}

/// The error the store's first call meets (it connects on demand).
fn first_error(store: &PgStore) -> String {
    match store.load() {
        Err(StoreError::Shared(m)) => m,
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[test]
fn the_store_connects_with_verify_full_and_refuses_a_wrong_ca_or_plain_text_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(&dir.path().join("good")).unwrap();
    let other = PgPki::new(&dir.path().join("other")).unwrap();
    let pg = PgCluster::builder().tls_required(&pki).start().unwrap();
    let (db, _) = pg.create_unique_database("rollout_tls").unwrap();

    // verify-full with the CA that signed the server's certificate: connects, leads, encrypted
    let good = format!("sslmode=verify-full sslrootcert={}", pki.ca.display());
    let store = PgStore::open(&conn(&pg, &db, &good), "tls".into(), "127.0.0.1:1".into()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.leadership() != Leadership::Leader {
        assert!(Instant::now() < deadline, "never led: {:?}", store.load());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(store.load().is_ok());
    let ssl = pg
        .psql(
            &db,
            "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s \
             USING (pid) WHERE a.application_name = 'strangler-gateway rollouts'",
        )
        .unwrap();
    assert_eq!(ssl, "1/1", "the store's session is encrypted");
    drop(store);

    // a CA that did not sign the server's certificate: refused, saying where and what to change
    let wrong = format!("sslmode=verify-full sslrootcert={}", other.ca.display());
    let store = PgStore::open(&conn(&pg, &db, &wrong), "wrong-ca".into(), "127.0.0.1:2".into()).unwrap();
    let e = first_error(&store);
    let endpoint = format!("host localhost port {} database {db} user postgres", pg.port());
    assert!(e.contains(&endpoint), "{e}");
    assert!(e.contains("the server's certificate was refused under sslmode=verify-full"), "{e}");
    assert!(e.contains("sslrootcert") && e.contains("rollout_store_url_env"), "{e}");
    assert!(e.contains("invalid peer certificate"), "the cause is kept: {e}");
    assert!(!e.contains(PASSWORD), "{e}");
    assert_eq!(store.leadership(), Leadership::Follower { leader: None }, "a refused store never leads");

    // plain text to a server that requires TLS
    let store = PgStore::open(&conn(&pg, &db, "sslmode=disable"), "plain".into(), "127.0.0.1:3".into()).unwrap();
    let e = first_error(&store);
    assert!(e.contains(&endpoint), "{e}");
    assert!(e.contains("the server accepts only TLS connections from here: set sslmode=verify-full"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");

    // a bad sslmode is refused before any connection, without quoting the string
    let e = PgStore::open(&conn(&pg, &db, "sslmode=verify"), "bad".into(), "127.0.0.1:4".into()).err().unwrap();
    let e = e.to_string();
    assert!(e.contains("sslmode \"verify\" is not one of") && !e.contains(PASSWORD), "{e}");
}

//! The binary honours `DATABASE_URL`'s `sslmode` and `sslrootcert` (`strangler-pg-connect`),
//! against its own cluster that refuses plain-text connections and holds a certificate from a
//! test CA: `migrate` with `verify-full` and that CA succeeds over TLS; with another CA, or with
//! `sslmode=disable`, it stops at once (no retrying for `--db-wait-secs`) with an error naming
//! host, port, database and user and what to change, never the password.

use std::process::Command;
use std::time::{Duration, Instant};

use strangler_support::tls::PgPki;
use strangler_support::PgCluster;

const BIN: &str = env!("CARGO_BIN_EXE_legacy-monolith");
const PASSWORD: &str = "hunter2-not-shown";

/// `migrate` against `url`: (success, stderr, how long it took).
fn migrate(url: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = Command::new(BIN).args(["migrate", "--db-wait-secs", "30"]).env("DATABASE_URL", url).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
}

#[test]
fn migrate_over_verify_full_and_refuse_a_wrong_ca_or_plain_text_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(&dir.path().join("good")).unwrap();
    let other = PgPki::new(&dir.path().join("other")).unwrap();
    let pg = PgCluster::builder().tls_required(&pki).start().unwrap();
    let (db, _) = pg.create_unique_database("mono_tls").unwrap();
    let conn =
        |tls: String| format!("host=localhost port={} user=postgres password={PASSWORD} dbname={db} {tls}", pg.port());
    let endpoint = format!("host localhost port {} database {db} user postgres", pg.port());

    let (ok, err, _) = migrate(&conn(format!("sslmode=verify-full sslrootcert={}", pki.ca.display())));
    assert!(ok, "{err}");
    assert_eq!(pg.psql(&db, "SELECT to_regclass('products') IS NOT NULL").unwrap(), "t");

    let (ok, err, took) = migrate(&conn(format!("sslmode=verify-full sslrootcert={}", other.ca.display())));
    assert!(!ok);
    assert!(err.contains(&endpoint), "{err}");
    assert!(err.contains("certificate was refused under sslmode=verify-full: name the CA"), "{err}");
    assert!(err.contains("DATABASE_URL") && !err.contains(PASSWORD), "{err}");
    assert!(took < Duration::from_secs(20), "a refused certificate is not retried for 30 s: {took:?}");

    let (ok, err, took) = migrate(&conn("sslmode=disable".into()));
    assert!(!ok);
    assert!(err.contains(&endpoint), "{err}");
    assert!(err.contains("the server accepts only TLS connections from here: set sslmode=verify-full"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // an sslmode tokio-postgres alone does not know, refused before connecting (exit code 2)
    let out = Command::new(BIN).arg("migrate").env("DATABASE_URL", conn("sslmode=verify".into())).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("sslmode \"verify\" is not one of") && !err.contains(PASSWORD), "{err}");
}

//! The kit's pool honours `DATABASE_URL`'s `sslmode` and `sslrootcert` (`strangler-pg-connect`),
//! against a real cluster that refuses plain-text connections and holds a certificate from a
//! test CA: `Service::run` with `verify-full` and that CA migrates over an encrypted session,
//! and the pool's connections are encrypted; with another CA, or `sslmode=disable`, it stops
//! with an error naming host, port, database and user and what to change, never the password.

use axum::Router;
use strangler_kit::{KitState, Migration, Service, ServiceArgs};
use strangler_support::tls::PgPki;
use strangler_support::PgCluster;

const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "notes", sql: "CREATE TABLE notes (id bigserial PRIMARY KEY)" }];
const PASSWORD: &str = "hunter2-not-shown";

fn routes(r: Router<KitState>) -> Router<KitState> {
    r
}

fn args(database_url: String) -> ServiceArgs {
    ServiceArgs {
        listen: None,
        database_url,
        pool_size: 2,
        log_json: false,
        migrate_only: true,
        shadow_secret_file: None,
    }
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_encrypted_and_a_wrong_ca_or_plain_text_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(&dir.path().join("good")).unwrap();
    let other = PgPki::new(&dir.path().join("other")).unwrap();
    let pg = PgCluster::builder().tls_required(&pki).start().unwrap();
    let (db, _) = pg.create_unique_database("kit_tls").unwrap();
    let url = |query: &str| format!("postgres://postgres:{PASSWORD}@localhost:{}/{db}?{query}", pg.port());
    let endpoint = format!("host localhost port {} database {db} user postgres", pg.port());

    // the service starts (migrate only) over verify-full with the CA that signed the server
    let good = url(&format!("sslmode=verify-full&sslrootcert={}", pki.ca.display()));
    Service::new("notes", MIGRATIONS, routes).run(args(good.clone())).await.expect("migrates over TLS");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM notes").unwrap(), "0");
    let pool = strangler_kit::pool(&good, 2).unwrap();
    let c = pool.get().await.unwrap();
    let ssl: bool = c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl, "the pool's session is encrypted");

    // a CA that did not sign the server's certificate
    let wrong = url(&format!("sslmode=verify-full&sslrootcert={}", other.ca.display()));
    let e = Service::new("notes", MIGRATIONS, routes).run(args(wrong)).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains(&endpoint), "{e}");
    assert!(e.contains("certificate was refused under sslmode=verify-full: name the CA"), "{e}");
    assert!(e.contains("DATABASE_URL") && e.contains("invalid peer certificate"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");

    // plain text to a server that requires TLS
    let e = Service::new("notes", MIGRATIONS, routes).run(args(url("sslmode=disable"))).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains(&endpoint), "{e}");
    assert!(e.contains("the server accepts only TLS connections from here: set sslmode=verify-full"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");

    // an sslmode tokio-postgres does not know, refused before any connection
    let e = strangler_kit::pool(&url("sslmode=verify"), 2).unwrap_err().to_string();
    assert!(e.contains("sslmode \"verify\" is not one of") && !e.contains(PASSWORD), "{e}");
}

#[tokio::test]
async fn a_plain_local_url_still_works_against_a_server_without_tls() {
    let pg = PgCluster::start().unwrap();
    let (db, _) = pg.create_unique_database("kit_plain").unwrap();
    // default sslmode (prefer): the server says no to TLS, the session goes on in plain text
    let url = pg.url(&db);
    let pool = strangler_kit::pool(&url, 2).unwrap();
    strangler_kit::check_connection(&pool, &url).await.unwrap();
    let c = pool.get().await.unwrap();
    let ssl: bool = c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(!ssl);
}

//! The `legacy-monolith` binary: seed and serve as a real process.

use std::process::{Command, Stdio};
use std::time::Duration;

use strangler_support::{free_port, wait_for_http, ChildGuard};

use crate::common::{cluster, fresh_database, ok_data, read};

const BIN: &str = env!("CARGO_BIN_EXE_legacy-monolith");

#[tokio::test]
async fn seed_then_serve_then_stop_gracefully() {
    let (db, _) = fresh_database();
    let url = cluster().url(&db);
    let out = Command::new(BIN)
        .args(["seed", "--products", "30", "--customers", "5", "--orders", "20", "--categories", "4"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "seed failed: {}", String::from_utf8_lossy(&out.stderr));
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("products"), "progress on stderr: {progress}");
    assert_eq!(cluster().psql(&db, "SELECT count(*) FROM products").unwrap(), "30");

    // Again without --force: refused, with a hint.
    let out = Command::new(BIN).args(["seed", "--database-url", &url]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", cluster().connection_string(&db))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new("legacy-monolith", child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::task::spawn_blocking(move || wait_for_http(addr, "/health/ready", Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the server becomes ready");
    let r = reqwest::get(format!("http://127.0.0.1:{port}/api/products/1")).await.unwrap();
    let p = ok_data(&read(r).await, 200);
    assert_eq!(p["sku"], "SKU-000001");
    let status =
        tokio::task::spawn_blocking(move || guard.stop(Duration::from_secs(10))).await.unwrap().expect("reaped");
    assert!(status.success(), "SIGTERM is a clean shutdown, got {status}");
}

#[test]
fn bad_configuration_exits_with_2() {
    let out = Command::new(BIN).arg("migrate").env_remove("DATABASE_URL").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["migrate", "--database-url", "host=x port=notaport"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "migrate", "seed", "DATABASE_URL"] {
        assert!(help.contains(word), "--help mentions {word}");
    }
}

/// libpq's environment variables fill what the connection string leaves out (pg-connect), so a
/// deployment can keep the host and the password out of DATABASE_URL; a bad one is refused
/// naming the variable.
#[tokio::test]
async fn connection_parameters_come_from_pg_environment_variables() {
    let (db, _) = fresh_database();
    let out = Command::new(BIN)
        .args(["seed", "--products", "3", "--customers", "1", "--orders", "1", "--categories", "1"])
        .env("DATABASE_URL", format!("dbname={db}"))
        .env("PGHOST", cluster().host())
        .env("PGPORT", cluster().port().to_string())
        .env("PGUSER", "postgres")
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert!(out.status.success(), "seed with PG* variables failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster().psql(&db, "SELECT count(*) FROM products").unwrap(), "3");

    // the string wins: a port in DATABASE_URL is used even when PGPORT names a dead one
    let out = Command::new(BIN)
        .args(["seed", "--force", "--products", "2", "--customers", "1", "--orders", "1", "--categories", "1"])
        .env("DATABASE_URL", cluster().connection_string(&db))
        .env("PGPORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "DATABASE_URL's port must win: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster().psql(&db, "SELECT count(*) FROM products").unwrap(), "2");

    let out = Command::new(BIN)
        .args(["migrate"])
        .env("DATABASE_URL", format!("dbname={db}"))
        .env("PGHOST", cluster().host())
        .env("PGPORT", "54x32")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("PGPORT"), "a bad PGPORT is named: {err}");
}

//! Taking the instance lock at start: an error that waiting does not fix (a certificate
//! rejected under `verify-full`, a wrong password, a database that does not exist) ends `run`
//! at once with exit code 4 and a message naming the host, what failed and what to change —
//! never the password; a source that is down when `run` starts is still waited for, with the
//! retry pauses `[replication] retry_*` configures, and the pipeline proceeds once it is up.

mod common;

use std::time::{Duration, Instant};

use common::*;
use strangler_support::tls::PgPki;
use strangler_support::PgCluster;

const SRC: &str = "
CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g;
CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'right-password';
";
const TGT: &str = ITEMS;
const MAP: &str = ITEMS_MAP;

const PASSWORD: &str = "hunter2-not-shown";

/// Runs `cdc-sync run` with the source connection string `src`; it must exit within 20 s.
/// Returns (exit code, log, /status seen while it lingered).
fn run_until_exit(env: &Env, name: &str, src: &str, body: &str) -> (Option<i32>, String, serde_json::Value) {
    let cfg = env.write_config(name, body);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&env.src_conn, src);
    std::fs::write(&cfg, text).unwrap();
    let started = Instant::now();
    let mut run = spawn_with(&cfg, name, &["--linger-after-stop", "3"]);
    let s = wait_status(&run, Duration::from_secs(20), |s| s["pipelines"]["forward"]["stopped"] == true);
    let status = wait_exit(&mut run, Duration::from_secs(20));
    // the message says the cause once
    let last = run.log_text().lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error (needs a human; exit code 4): cannot take the instance lock"), "{last}");
    assert_eq!(last.matches("; the error: ").count(), 1, "{last}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    (status.code(), run.log_text(), s)
}

#[test]
fn errors_that_waiting_does_not_fix_end_run_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(&dir.path().join("good")).unwrap();
    let other = PgPki::new(&dir.path().join("other")).unwrap();
    let src = PgCluster::builder()
        .ssl(&pki.server_cert, &pki.server_key, Some(pki.ca.clone()))
        .hba("host all pwuser 127.0.0.1/32 scram-sha-256");
    let env = Env::with_clusters(src, PgCluster::builder(), SRC, TGT);
    let port = env.src.port();
    let conn = |user: &str, db: &str, extra: &str| {
        format!("host=localhost hostaddr=127.0.0.1 port={port} user={user} dbname={db} password={PASSWORD} {extra}")
    };

    // 1. a CA that did not sign the server's certificate
    let untrusted = format!("sslmode=verify-full sslrootcert={}", other.ca.display());
    let (code, log, s) = run_until_exit(&env, "bad_ca", &conn("postgres", &env.src_db, &untrusted), MAP);
    assert_eq!(code, Some(4), "{log}");
    for want in [
        "cannot take the instance lock on the source host localhost port",
        "(source.url)",
        "TLS with localhost (sslmode=verify-full): the server's certificate was rejected",
        "the server's certificate was refused under sslmode=verify-full: name the CA that signed it with \
         sslrootcert=FILE in source.url",
    ] {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }
    let e = &s["pipelines"]["forward"]["error"];
    assert_eq!((&e["kind"], &e["retryable"]), (&"access".into(), &false.into()), "{s}");
    assert!(!log.contains(PASSWORD) && !s.to_string().contains(PASSWORD), "{log}");
    assert_eq!(log.matches("retrying").count(), 0, "gave up without retrying:\n{log}");

    // 2. a wrong password
    let (code, log, s) = run_until_exit(&env, "bad_pw", &conn("pwuser", &env.src_db, "sslmode=disable"), MAP);
    assert_eq!(code, Some(4), "{log}");
    for want in [
        "host localhost port",
        &format!("database {} user pwuser", env.src_db),
        "password authentication failed for user \"pwuser\"",
        "the server refused the password: fix the user or password in source.url",
    ] {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }
    assert_eq!(s["pipelines"]["forward"]["error"]["sqlstate"], "28P01", "{s}");
    assert!(!log.contains(PASSWORD), "{log}");

    // 3. a database that does not exist
    let (code, log, _) = run_until_exit(&env, "bad_db", &conn("postgres", "no_such_db", "sslmode=disable"), MAP);
    assert_eq!(code, Some(4), "{log}");
    for want in ["database \"no_such_db\" does not exist", "the database does not exist: fix dbname in source.url"] {
        assert!(log.contains(want), "log lacks {want:?}:\n{log}");
    }

    // the right settings work (the same cluster, nothing else changed)
    let good = conn("pwuser", &env.src_db, &format!("sslmode=verify-full sslrootcert={}", pki.ca.display()))
        .replace(PASSWORD, "right-password");
    let cfg = env.write_config("good", MAP);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&env.src_conn, &good);
    std::fs::write(&cfg, text).unwrap();
    let run = start(&cfg, "good");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
}

#[test]
fn a_source_down_at_start_is_waited_for() {
    let env = Env::new(SRC, TGT);
    // short pauses, and an escalation after 2 failures of any kind that is not "unavailable":
    // a refused connection must not count towards it
    let body = format!("[replication]\nretry_initial_ms = 20\nretry_max_ms = 100\nretry_max_attempts = 2\n{MAP}");
    let cfg = env.write_config("down_at_start", &body);
    stop_cluster(&env.src);
    let mut run = spawn(&cfg, "down_at_start");
    let s = wait_status(&run, Duration::from_secs(30), |s| s["pipelines"]["forward"]["retries"].as_u64() >= Some(20));
    let fwd = &s["pipelines"]["forward"];
    assert!(fwd["state"].as_str().unwrap().contains("cannot reach the source to take the instance lock"), "{s}");
    assert_eq!(fwd["last_retry"]["kind"], "connection", "{s}");
    // the pauses are the configured ones (20 ms doubling to 100 ms): 20 retries in well under
    // the default policy's first 20 pauses (minutes)
    assert!(run.child.try_wait().unwrap().is_none(), "exited while the source was down:\n{}", run.log_text());
    start_cluster(&env.src);
    wait_status(&run, Duration::from_secs(60), |s| s["ready"] == true);
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    assert!(run.child.try_wait().unwrap().is_none(), "{}", run.log_text());
}

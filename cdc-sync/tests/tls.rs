//! TLS on every cdc-sync session, against real clusters with `ssl = on` and a test CA: a full
//! pipeline (snapshot, stream, verify) with `verify-full` on both sides whose sessions
//! `pg_stat_ssl` shows encrypted, the walsender's included; `verify-full` with a wrong host name
//! and an untrusted CA failing clearly while `verify-ca` accepts the name; `require` against a
//! server without TLS failing clearly; `prefer` falling back to plain text; a client
//! certificate that pg_hba.conf requires (`hostssl ... cert`). No error shows the password.

mod common;

use std::path::Path;
use std::time::Duration;

use cdc_sync::source::walsender::WalSenderConnection;
use common::*;
use strangler_support::tls::PgPki;
use strangler_support::{PgCluster, PgClusterBuilder};

const SRC: &str = "
CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g;
";
const TGT: &str = "CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);";
const MAP: &str = r#"
[replication]
snapshot_chunk_pages = 8

[[table]]
source = "items"
target = "items"
key = ["id"]
[table.columns]
id = "id"
v = "v"
"#;

const PASSWORD: &str = "hunter2-not-shown";

fn ssl_cluster(pki: &PgPki) -> PgClusterBuilder {
    PgCluster::builder().ssl(&pki.server_cert, &pki.server_key, Some(pki.ca.clone()))
}

/// `c`'s connection string for `db` with host `localhost` (a name the certificate holds)
/// and `tls` appended; it carries a password that no error may show (trust auth ignores it).
fn conn(c: &PgCluster, db: &str, tls: &str) -> String {
    format!("host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname={db} password={PASSWORD} {tls}", c.port())
}

fn verify_full(ca: &Path) -> String {
    format!("sslmode=verify-full sslrootcert={}", ca.display())
}

/// Write, update and delete at the source; the target follows.
fn stream_some_changes(env: &Env, cfg: &std::path::PathBuf, run: &Running) {
    env.s("INSERT INTO items SELECT g, 'new ' || g FROM generate_series(5001, 5200) g");
    env.s("UPDATE items SET v = v || ' changed' WHERE id % 7 = 0");
    env.s("DELETE FROM items WHERE id BETWEEN 100 AND 149");
    wait_sql(&|| env.t("SELECT count(*) FROM items"), "5150", Duration::from_secs(60));
    wait_equal(cfg, Duration::from_secs(30), Some(run));
}

/// Client sessions of `c` other than the asking one: (total, encrypted, walsenders encrypted).
fn ssl_sessions(c: &PgCluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT count(*), count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE s.ssl AND a.backend_type = 'walsender') \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.backend_type IN ('client backend', 'walsender') AND a.pid <> pg_backend_pid()",
    )
    .unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The error chain of a failed walsender connection attempt.
fn walsender_error(conn: &str) -> String {
    match runtime().block_on(WalSenderConnection::connect(conn, "tls-test")) {
        Ok(_) => panic!("the replication connection succeeded"),
        Err(e) => format!("{:#}", anyhow::Error::new(e)),
    }
}

#[test]
fn verify_full_pipeline_on_both_sides_runs_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(dir.path()).unwrap();
    let mut env = Env::with_clusters(ssl_cluster(&pki), ssl_cluster(&pki), SRC, TGT);
    env.src_conn = conn(&env.src, &env.src_db, &verify_full(&pki.ca));
    env.tgt_conn = conn(&env.tgt, &env.tgt_db, &verify_full(&pki.ca));
    let cfg = env.write_config("tls_full", MAP);
    let check = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    assert!(check.status.success(), "{}", stderr_of(&check));

    let run = start(&cfg, "tls_full");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    stream_some_changes(&env, &cfg, &run);

    // every session cdc-sync holds is encrypted: the walsender, the instance lock, the apply
    // session; and the protocol is the one rustls prefers
    let src = ssl_sessions(&env.src, &env.src_db);
    let (total, encrypted, walsenders) = parse3(&src);
    assert!(total >= 2 && encrypted == total && walsenders == 1, "source sessions (total, ssl, walsender): {src}");
    let repl = env.s("SELECT s.ssl, s.version FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)");
    assert_eq!(repl, "t|TLSv1.3", "the replication session");
    let tgt = ssl_sessions(&env.tgt, &env.tgt_db);
    let (total, encrypted, _) = parse3(&tgt);
    assert!(total >= 1 && encrypted == total, "target sessions (total, ssl, walsender): {tgt}");
    assert!(!run.log_text().contains(PASSWORD));
}

fn parse3(s: &str) -> (u64, u64, u64) {
    let v: Vec<u64> = s.split('|').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

#[test]
fn certificate_failures_name_host_mode_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(&dir.path().join("good")).unwrap();
    let other = PgPki::new(&dir.path().join("other")).unwrap();
    let env = Env::with_clusters(ssl_cluster(&pki), PgCluster::builder(), SRC, TGT);
    let port = env.src.port();
    // a name the certificate does not hold, at the server's address
    let wrong = |tls: &str| {
        format!(
            "host=db.wrong.example hostaddr=127.0.0.1 port={port} user=postgres dbname={} password={PASSWORD} {tls}",
            env.src_db
        )
    };

    let cfg = env.write_config_to("tls_wrong", &env.tgt_conn, MAP);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&env.src_conn, &wrong(&verify_full(&pki.ca)));
    std::fs::write(&cfg, text).unwrap();
    let out = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("TLS with db.wrong.example (sslmode=verify-full): the server's certificate was rejected")
            && err.contains("not valid for name"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");

    // the replication connection says the same
    let err = walsender_error(&wrong(&verify_full(&pki.ca)));
    assert!(
        err.contains("TLS with db.wrong.example (sslmode=verify-full)") && err.contains("not valid for name"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");

    // verify-ca checks the chain only: the wrong name passes, a CA we do not trust does not
    let ca_only = format!("sslmode=verify-ca sslrootcert={}", pki.ca.display());
    let rt = runtime();
    let client = rt.block_on(cdc_sync::connect::connect(&wrong(&ca_only))).expect("verify-ca ignores the name");
    let ssl: bool =
        rt.block_on(client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])).unwrap().get(0);
    assert!(ssl, "encrypted");
    assert!(rt.block_on(WalSenderConnection::connect(&wrong(&ca_only), "tls-test")).is_ok());
    let untrusted = format!("sslmode=verify-ca sslrootcert={}", other.ca.display());
    let err = walsender_error(&conn(&env.src, &env.src_db, &untrusted));
    // (the other CA has the same name, so webpki finds it and the signature does not match)
    assert!(
        err.contains(
            "TLS with localhost (sslmode=verify-ca): the server's certificate was rejected: invalid peer certificate"
        ),
        "{err}"
    );
    // require with an sslrootcert checks the chain too, as in libpq
    let require_ca = format!("sslmode=require sslrootcert={}", other.ca.display());
    let Err(e) = rt.block_on(cdc_sync::connect::connect(&conn(&env.src, &env.src_db, &require_ca))) else {
        panic!("an untrusted chain passed under require + sslrootcert")
    };
    let err = format!("{:#}", anyhow::Error::new(e));
    assert!(
        err.contains("(sslmode=require): the server's certificate was rejected: invalid peer certificate"),
        "{err}"
    );
}

#[test]
fn require_against_a_server_without_tls_fails_clearly_and_prefer_falls_back() {
    // source without TLS, target with it; `prefer` on both
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(dir.path()).unwrap();
    let mut env = Env::with_clusters(PgCluster::builder(), ssl_cluster(&pki), SRC, TGT);
    let require = conn(&env.src, &env.src_db, "sslmode=require");
    let err = walsender_error(&require);
    assert!(err.contains("TLS with localhost (sslmode=require): the server does not accept TLS connections"), "{err}");
    let cfg = env.write_config_to("tls_require", &env.tgt_conn, MAP);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&env.src_conn, &require);
    std::fs::write(&cfg, text).unwrap();
    let out = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains("TLS with localhost (sslmode=require): the server does not accept TLS connections"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    env.src_conn = conn(&env.src, &env.src_db, "sslmode=prefer");
    env.tgt_conn = conn(&env.tgt, &env.tgt_db, "sslmode=prefer");
    let cfg = env.write_config("tls_prefer", MAP);
    let run = start(&cfg, "tls_prefer");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    stream_some_changes(&env, &cfg, &run);
    let (total, encrypted, _) = parse3(&ssl_sessions(&env.src, &env.src_db));
    assert!(total >= 2 && encrypted == 0, "plain text where TLS is refused");
    let (total, encrypted, _) = parse3(&ssl_sessions(&env.tgt, &env.tgt_db));
    assert!(total >= 1 && encrypted == total, "TLS where it is offered");
}

#[test]
fn a_client_certificate_required_by_pg_hba_is_presented() {
    let dir = tempfile::tempdir().unwrap();
    let pki = PgPki::new(dir.path()).unwrap();
    let (cert, key) = pki.client("certuser").unwrap();
    let src = ssl_cluster(&pki)
        .hba("hostssl all certuser 127.0.0.1/32 cert")
        .hba("hostssl all certuser ::1/128 cert")
        .hba("host all certuser all reject")
        .hba("hostssl all scramuser 127.0.0.1/32 scram-sha-256");
    let mut env = Env::with_clusters(src, PgCluster::builder(), SRC, TGT);
    env.s("CREATE ROLE certuser LOGIN SUPERUSER REPLICATION");
    let as_certuser = |tls: &str| {
        format!(
            "host=localhost port={} user=certuser dbname={} {tls} {}",
            env.src.port(),
            env.src_db,
            verify_full(&pki.ca)
        )
    };

    // without the certificate: refused by the server, and said so
    env.src_conn = as_certuser("");
    let cfg = env.write_config("tls_nocert", MAP);
    let out = bin().args(["check"]).arg(&cfg).arg("--connect").output().unwrap();
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains("certificate"), "{err}");
    // a key without its certificate is a config error, with its place
    env.src_conn = as_certuser(&format!("sslkey={}", key.display()));
    let cfg = env.write_config("tls_halfcert", MAP);
    let out = bin().args(["check"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("tls_halfcert.toml:2:1") && err.contains("sslcert and sslkey go together"), "{err}");

    env.src_conn = as_certuser(&format!("sslcert={} sslkey={}", cert.display(), key.display()));
    let cfg = env.write_config("tls_cert", MAP);
    let run = start(&cfg, "tls_cert");
    wait_equal(&cfg, Duration::from_secs(60), Some(&run));
    stream_some_changes(&env, &cfg, &run);
    let repl = env.s("SELECT r.usename, s.ssl, s.client_dn FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)");
    assert_eq!(repl, "certuser|t|/CN=certuser", "the replication session authenticated by its certificate");

    // SCRAM over TLS: the SQL sessions bind it to the channel (channel_binding=require passes),
    // the replication session authenticates without binding
    env.s("CREATE ROLE scramuser LOGIN REPLICATION PASSWORD 'scram-pw'");
    let scram = |extra: &str| {
        format!(
            "host=localhost port={} user=scramuser password=scram-pw dbname={} {} {extra}",
            env.src.port(),
            env.src_db,
            verify_full(&pki.ca)
        )
    };
    let rt = runtime();
    let client = rt.block_on(cdc_sync::connect::connect(&scram("channel_binding=require"))).unwrap();
    let who: String = rt.block_on(client.query_one("SELECT current_user::text", &[])).unwrap().get(0);
    assert_eq!(who, "scramuser");
    let mut ws = rt.block_on(WalSenderConnection::connect(&scram(""), "tls-test")).unwrap();
    let rows = rt.block_on(ws.simple_query("IDENTIFY_SYSTEM")).unwrap();
    assert_eq!(rows[0][3].as_deref(), Some(env.src_db.as_str()), "IDENTIFY_SYSTEM names the database");
    let err = walsender_error(&scram("channel_binding=require"));
    assert!(err.contains("channel_binding=require"), "{err}");
}

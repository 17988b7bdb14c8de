//! The harness itself, against real PostgreSQL clusters.

use std::time::{Duration, Instant};

use strangler_support::{pid_alive, PgCluster};

#[test]
fn a_cluster_is_configured_for_logical_replication() {
    let pg = PgCluster::start().expect("start cluster");
    assert_eq!(pg.psql("postgres", "SHOW wal_level").unwrap(), "logical");
    let slots: u32 = pg.psql("postgres", "SHOW max_replication_slots").unwrap().parse().unwrap();
    assert!(slots >= 16, "max_replication_slots = {slots}");
    assert_eq!(pg.psql("postgres", "SHOW fsync").unwrap(), "off");
    assert_eq!(pg.psql("postgres", "SHOW listen_addresses").unwrap(), "127.0.0.1");
    let socket_dir = pg.psql("postgres", "SHOW unix_socket_directories").unwrap();
    assert_eq!(std::path::Path::new(&socket_dir), pg.socket_dir());
    assert!(pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port())).exists());
}

#[test]
fn two_clusters_run_at_once_and_are_independent() {
    let a = PgCluster::start().expect("start a");
    let b = PgCluster::start().expect("start b");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    a.create_database("only_in_a").unwrap();
    a.psql("only_in_a", "CREATE TABLE t(x int); INSERT INTO t VALUES (1),(2)").unwrap();
    b.create_database("only_in_a").unwrap();
    // Same database name in b, but it is a different cluster: no table there.
    let err = b.psql("only_in_a", "SELECT count(*) FROM t").unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(a.psql("only_in_a", "SELECT count(*) FROM t").unwrap(), "2");
}

#[tokio::test]
async fn tokio_postgres_connects_over_tcp() {
    let pg = PgCluster::start().expect("start cluster");
    let (_, conn) = pg.create_unique_database("tp").unwrap();
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[test]
fn bad_database_names_are_refused() {
    let pg = PgCluster::start().expect("start cluster");
    let err = pg.create_database("x\"; DROP DATABASE postgres; --").unwrap_err();
    assert!(err.to_string().contains("must be"), "{err}");
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
}

#[test]
fn dropping_the_cluster_stops_the_server_and_removes_its_directory() {
    let pg = PgCluster::start().expect("start cluster");
    let (pid, root) = (pg.pid(), pg.root_dir().to_path_buf());
    assert!(pid != 0 && pid_alive(pid));
    drop(pg);
    assert!(!root.exists(), "{} still exists", root.display());
    wait_dead(pid);
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let pg = PgCluster::start().expect("start cluster");
        tx.send((pg.pid(), pg.root_dir().to_path_buf())).unwrap();
        panic!("test body fails while the cluster is running");
    });
    assert!(result.is_err());
    let (pid, root) = rx.recv().unwrap();
    assert!(!root.exists(), "{} survived the panic", root.display());
    wait_dead(pid);
}

#[test]
fn a_killed_owner_is_cleaned_up_by_the_guardian() {
    // Start a cluster in a child process (this test binary, re-run in a special mode), SIGKILL the
    // child so no destructor runs, and check the guardian stops the server and removes the dir.
    if std::env::var("STRANGLER_HARNESS_CHILD").is_ok() {
        let pg = PgCluster::start().expect("start cluster");
        println!("CLUSTER {} {}", pg.pid(), pg.root_dir().display());
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_killed_owner_is_cleaned_up_by_the_guardian", "--nocapture"])
        .env("STRANGLER_HARNESS_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (pid, root) = loop {
        let line = lines.next().expect("child printed its cluster").unwrap();
        if let Some(rest) = line.strip_prefix("CLUSTER ") {
            let (pid, root) = rest.split_once(' ').unwrap();
            break (pid.parse::<u32>().unwrap(), std::path::PathBuf::from(root));
        }
    };
    assert!(pid_alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while root.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!root.exists(), "guardian did not remove {}", root.display());
    wait_dead(pid);
}

/// Waits for `pid` to be gone (or a zombie awaiting its parent).
fn wait_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while pid_alive(pid) {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.is_empty() || state.contains(") Z ") {
            return;
        }
        assert!(Instant::now() < deadline, "postmaster {pid} still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

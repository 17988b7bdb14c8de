//! The change stream on its own, against a real walsender: messages that are already waiting on
//! the socket in full when the reader gets to them must be read to the end.
//!
//! `a_large_message_waiting_in_full_is_read` is the stall of the forward end-to-end test made
//! deterministic. pg_walstream 0.9.0's libpq reader cleared its edge-triggered readiness whenever
//! one `PQconsumeInput` left the current message incomplete, but `PQconsumeInput` reads at most
//! libpq's input buffer (16 KB at first), so the rest of a large message could still be on the
//! socket: with nothing more coming from the server, no new readiness edge ever came and the
//! reader waited for good. Here the runtime is not running while the source commits a 48 KB
//! value, so the whole message is on the socket before the reader looks (in production: the
//! reader busy for a moment while the walsender sends a large row).

use std::time::{Duration, Instant};

use cdc_sync::model::{ChangeKind, Lsn, SourceMessage};
use cdc_sync::source::{self, ChangeStream, PgChangeStream};
use strangler_support::PgCluster;

const BIG: usize = 128_000;

fn sql(c: &PgCluster, db: &str, q: &str) -> String {
    c.psql(db, q).unwrap()
}

/// Waits until the walsender serving `slot` has produced everything up to `lsn`, or is blocked
/// writing to a full socket: either way the data we want queued is queued.
fn wait_backlog_queued(c: &PgCluster, db: &str, slot: &str, lsn: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let q = format!(
        "SELECT coalesce(r.sent_lsn >= '{lsn}'::pg_lsn, false) OR coalesce(a.wait_event = 'WalSenderWriteData', false) \
         FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid \
         JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = '{slot}'"
    );
    while sql(c, db, &q) != "t" {
        assert!(Instant::now() < deadline, "walsender never caught up with {lsn}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads until `commits` more commits; each change's `big` length (0 when absent).
async fn read_commits(stream: &mut PgChangeStream, commits: usize) -> (Vec<usize>, Lsn) {
    let (mut seen, mut lens, mut last) = (0, Vec::new(), Lsn(0));
    while seen < commits {
        let msg = tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .unwrap_or_else(|_| panic!("stream stalled after {seen} commits and {} changes", lens.len()))
            .unwrap();
        match msg {
            SourceMessage::Change(ch) => {
                let row = match &ch.kind {
                    ChangeKind::Insert { new } | ChangeKind::Update { new, .. } => Some(new),
                    ChangeKind::Delete { .. } => None,
                };
                lens.push(row.and_then(|r| r.get("big")).and_then(|c| c.as_text()).map_or(0, str::len));
            }
            SourceMessage::Commit { end_lsn, .. } => {
                seen += 1;
                last = end_lsn;
            }
            _ => {}
        }
    }
    (lens, last)
}

#[test]
fn a_large_message_waiting_in_full_is_read() {
    // no server keepalives: a reader that stopped reading would wait for good, not 30 s
    let c = PgCluster::builder().conf("wal_sender_timeout = 0").start().expect("cluster");
    let (db, conn) = c.create_unique_database("stream").unwrap();
    sql(&c, &db, "CREATE TABLE t (id int PRIMARY KEY, big text)");
    // one thread, driven only inside block_on: while we run SQL below, nothing reads the socket
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut stream = rt.block_on(async {
        let client = cdc_sync::connect::connect(&conn).await.unwrap();
        source::ensure_publication(&client, "p", &["public.t".to_string()]).await.unwrap();
        source::create_slot(&client, "s").await.unwrap();
        PgChangeStream::start(&conn, "s", "p", None).await.unwrap()
    });
    sql(&c, &db, "INSERT INTO t VALUES (1, 'small')");
    let (lens, _) = rt.block_on(read_commits(&mut stream, 1));
    assert_eq!(lens, vec![5]);

    // 48 KB: fits the socket's initial receive window whole, larger than libpq's first reads
    sql(&c, &db, "UPDATE t SET big = repeat(md5('x'), 1536) WHERE id = 1");
    let end = sql(&c, &db, "SELECT pg_current_wal_lsn()");
    wait_backlog_queued(&c, &db, "s", &end);
    let (lens, last) = rt.block_on(read_commits(&mut stream, 1));
    assert_eq!(lens, vec![48 * 1024]);
    stream.confirm(last);
}

/// The reader stops reading while the consumer lags (its channel is full of a 10 000-row
/// transaction nobody consumes yet); meanwhile the source commits a 128 KB value and 3 000 more
/// changes, the walsender fills the socket and the TCP window closes. Consuming then reads it all.
#[test]
fn a_backlog_behind_a_full_channel_is_read_to_the_end() {
    let c = PgCluster::start().expect("cluster");
    let (db, conn) = c.create_unique_database("stream").unwrap();
    sql(&c, &db, "CREATE TABLE t (id int PRIMARY KEY, big text, n int NOT NULL DEFAULT 0)");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = cdc_sync::connect::connect(&conn).await.unwrap();
        source::ensure_publication(&client, "p", &["public.t".to_string()]).await.unwrap();
        source::create_slot(&client, "s").await.unwrap();
    });

    // 1. more row changes than the stream's channel holds: the reader fills it and waits
    sql(&c, &db, "INSERT INTO t (id) SELECT g FROM generate_series(1, 10000) g");
    let mut stream = rt.block_on(PgChangeStream::start(&conn, "s", "p", None)).unwrap();
    let end = sql(&c, &db, "SELECT pg_current_wal_lsn()");
    wait_backlog_queued(&c, &db, "s", &end);

    // 2. a 128 KB value, then enough changes behind it to fill the socket
    sql(&c, &db, &format!("UPDATE t SET big = repeat(md5('x'), {}) WHERE id = 1", BIG / 32));
    sql(&c, &db, "UPDATE t SET n = n + 1 WHERE id <= 3000");
    let end = sql(&c, &db, "SELECT pg_current_wal_lsn()");
    wait_backlog_queued(&c, &db, "s", &end);

    // 3. now read everything
    let (lens, last) = rt.block_on(read_commits(&mut stream, 3));
    assert_eq!(lens.len(), 10000 + 1 + 3000);
    assert_eq!(lens[10000], BIG);
    stream.confirm(last);
}

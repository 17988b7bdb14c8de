//! The source side of a snapshot worker: one session under the exported snapshot that reads each
//! chunk's `COPY ... TO STDOUT` and relays its bytes to the target's `COPY ... FROM STDIN` in
//! batches of about [`RELAY_BATCH`] bytes.
//!
//! The session is our own protocol client ([`WalSenderConnection::connect_plain`], the
//! walsender's startup, authentication and TLS without the `replication` parameter): it takes the
//! rows off the socket in bulk and copies each row's bytes once into the batch. tokio-postgres
//! hands a COPY over as one `Bytes` message per row, parsed and passed between tasks one by one,
//! which cost the relay about as much CPU as the copy's target backend spends parsing the rows.
//! A connection string that our client does not speak (`channel_binding=require`) falls back to
//! tokio-postgres.

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio_postgres::{Client, CopyInSink};

use super::walsender::{WalSenderConnection, WalSenderError};
use crate::connect::connect;
use crate::error::{pg_kind, ErrorKind};
use crate::model::quote_literal;
use crate::status::Metrics;

/// Bytes of COPY data sent to the target in one message.
pub const RELAY_BATCH: usize = 64 * 1024;

/// Relaying a chunk failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the source's COPY through our client.
    #[error("snapshot: reading the source's COPY")]
    Source(#[source] WalSenderError),
    /// SQL on either side through tokio-postgres.
    #[error("snapshot")]
    Sql(#[from] tokio_postgres::Error),
}

impl RelayError {
    /// Retry or stop, by the failure underneath.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RelayError::Source(e) => e.kind(),
            RelayError::Sql(e) => pg_kind(e),
        }
    }
}

/// A worker's source session, in a read-only transaction under the exported snapshot.
pub enum SourceSession {
    /// Our client: rows read in bulk.
    Raw(Box<WalSenderConnection>),
    /// tokio-postgres (a connection string our client does not speak).
    Client(Client),
}

impl SourceSession {
    /// Connect to `conn` and import `snapshot`.
    pub async fn open(conn: &str, snapshot: &str) -> Result<Self, RelayError> {
        let begin = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        );
        match WalSenderConnection::connect_plain(conn, "cdc-sync snapshot").await {
            Ok(mut c) => {
                c.simple_query(&begin).await.map_err(RelayError::Source)?;
                Ok(SourceSession::Raw(Box::new(c)))
            }
            Err(WalSenderError::Unsupported(why)) => {
                tracing::debug!(%why, "snapshot: reading the source's COPY through tokio-postgres");
                let c = connect(conn).await?;
                c.batch_execute(&begin).await?;
                Ok(SourceSession::Client(c))
            }
            Err(e) => Err(RelayError::Source(e)),
        }
    }

    /// Run `out_sql` (`COPY ... TO STDOUT`) and feed its bytes to `sink` in batches; `lines`:
    /// text format, count its rows into `metrics` as they stream (binary rows are counted by
    /// the caller from the target's row count).
    pub async fn relay(
        &mut self,
        out_sql: &str,
        mut sink: Pin<&mut CopyInSink<Bytes>>,
        lines: bool,
        metrics: &Metrics,
    ) -> Result<(), RelayError> {
        let mut batch = BytesMut::with_capacity(RELAY_BATCH);
        let count = |b: &BytesMut| {
            if lines {
                metrics.snapshot_rows.fetch_add(b.iter().filter(|c| **c == b'\n').count() as u64, Relaxed);
            }
        };
        match self {
            SourceSession::Raw(c) => {
                c.start_copy_out(out_sql).await.map_err(RelayError::Source)?;
                loop {
                    let more = c.copy_out_into(&mut batch, RELAY_BATCH).await.map_err(RelayError::Source)?;
                    if !batch.is_empty() {
                        count(&batch);
                        sink.feed(batch.split().freeze()).await?;
                        batch.reserve(RELAY_BATCH);
                    }
                    if !more {
                        return Ok(());
                    }
                }
            }
            SourceSession::Client(c) => {
                let out = c.copy_out(out_sql).await?;
                futures::pin_mut!(out);
                while let Some(buf) = out.next().await {
                    batch.extend_from_slice(&buf?);
                    if batch.len() >= RELAY_BATCH {
                        count(&batch);
                        sink.feed(batch.split().freeze()).await?;
                        batch.reserve(RELAY_BATCH);
                    }
                }
                if !batch.is_empty() {
                    count(&batch);
                    sink.feed(batch.split().freeze()).await?;
                }
                Ok(())
            }
        }
    }

    /// End the snapshot transaction (best effort: the session closes next).
    pub async fn finish(self) {
        match self {
            SourceSession::Raw(mut c) => {
                let _ = c.simple_query("COMMIT").await;
                c.terminate().await;
            }
            SourceSession::Client(c) => {
                let _ = c.batch_execute("COMMIT").await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::super::walsender::{Startup, WalSenderConnection, WalSenderError};
    use crate::source::test_wire::msg;

    async fn session(
        script: Vec<u8>,
    ) -> (WalSenderConnection<tokio::io::DuplexStream>, tokio::task::JoinHandle<Vec<u8>>) {
        let (client, mut server) = duplex(4096); // small pipe: many partial reads
        let srv = tokio::spawn(async move {
            let mut got = vec![0u8; 4096];
            let n = server.read(&mut got).await.unwrap();
            got.truncate(n);
            for piece in script.chunks(777) {
                server.write_all(piece).await.unwrap();
            }
            // keep the pipe open (the client's query must not meet a closed pipe) until the
            // client goes
            let mut rest = vec![0u8; 4096];
            while server.read(&mut rest).await.is_ok_and(|n| n > 0) {}
            got
        });
        let startup = Startup {
            user: "u".into(),
            password: None,
            database: "d".into(),
            application_name: "t".into(),
            options: None,
            replication: false,
        };
        (WalSenderConnection::handshake(client, &startup).await.unwrap(), srv)
    }

    #[tokio::test]
    async fn copy_data_is_batched_without_framing_and_ends_at_ready_for_query() {
        let rows: Vec<Vec<u8>> = (0..500u32).map(|i| format!("{i}\trow {i}\n").into_bytes()).collect();
        let mut wire = msg(b'R', &0i32.to_be_bytes());
        wire.extend(msg(b'Z', b"I"));
        wire.extend(msg(b'H', &[0, 0, 2, 0, 0, 0, 0]));
        for r in &rows {
            wire.extend(msg(b'd', r));
        }
        wire.extend(msg(b'c', b""));
        wire.extend(msg(b'C', b"COPY 500\0"));
        wire.extend(msg(b'Z', b"T"));
        let (mut c, srv) = session(wire).await;
        c.start_copy_out("COPY t TO STDOUT").await.unwrap();
        let (mut batch, mut all, mut batches) = (BytesMut::new(), Vec::new(), 0);
        loop {
            let more = c.copy_out_into(&mut batch, 1000).await.unwrap();
            assert!(!more || batch.len() >= 1000, "a batch short of the minimum only at the end");
            all.extend_from_slice(&batch.split());
            batches += 1;
            if !more {
                break;
            }
        }
        assert_eq!(all, rows.concat(), "every row's bytes, in order, without the message framing");
        assert!(batches > 1 && batches < 50, "{batches} batches");
        drop(c);
        let sent = srv.await.unwrap();
        assert!(!sent.windows(11).any(|w| w == b"replication"), "a plain session");
    }

    #[tokio::test]
    async fn a_copy_that_fails_reports_the_servers_error() {
        let mut wire = msg(b'R', &0i32.to_be_bytes());
        wire.extend(msg(b'Z', b"I"));
        wire.extend(msg(b'H', &[0, 0, 1, 0, 0]));
        wire.extend(msg(b'd', b"1\n"));
        wire.extend(msg(b'E', b"SERROR\0C57014\0Mcanceling statement due to user request\0\0"));
        wire.extend(msg(b'Z', b"E"));
        let (mut c, _srv) = session(wire).await;
        c.start_copy_out("COPY t TO STDOUT").await.unwrap();
        let mut batch = BytesMut::new();
        match c.copy_out_into(&mut batch, 1 << 20).await {
            Err(WalSenderError::Server(e)) => assert_eq!(e.sqlstate.as_deref(), Some("57014")),
            other => panic!("{other:?}"),
        }
        // a statement that fails before any row: its error, not a hang
        let mut wire = msg(b'R', &0i32.to_be_bytes());
        wire.extend(msg(b'Z', b"I"));
        wire.extend(msg(b'E', b"SERROR\0C42P01\0Mrelation \"t\" does not exist\0\0"));
        wire.extend(msg(b'Z', b"I"));
        let (mut c, _srv) = session(wire).await;
        match c.start_copy_out("COPY t TO STDOUT").await {
            Err(WalSenderError::Server(e)) => assert_eq!(e.sqlstate.as_deref(), Some("42P01")),
            other => panic!("{other:?}"),
        }
    }
}

//! The source side: publication, slot, the logical change stream behind [`ChangeStream`], and
//! the initial snapshot ([`snapshot`]).

pub mod chunks;
pub mod copy_relay;
pub mod owned_copy;
pub mod snapshot;
pub mod walsender;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_walstream::{CancellationToken, EventType, PgOutputDecoder, ReplicationError, RowData};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::connect::connect;
use crate::error::{pg_kind, ErrorKind};
use crate::model::{
    quote_ident, quote_literal, quote_qualified, Cell, ChangeKind, Lsn, RelationInfo, Row, RowChange, SourceMessage,
};
use walsender::{Frame, StandbyStatus, WalSenderConnection, WalSenderError};

/// Errors of the source side. [`SourceError::kind`] says whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The streaming session failed.
    #[error("replication stream")]
    WalSender(#[from] WalSenderError),
    /// A pgoutput message did not decode.
    #[error("decoding a pgoutput message")]
    Decode(#[source] ReplicationError),
    /// A replication command failed.
    #[error("replication command `{command}`")]
    Command {
        /// The command.
        command: String,
        /// The failure.
        #[source]
        source: WalSenderError,
    },
    /// The server's answer to a replication command lacked what we asked for.
    #[error("{command} returned no {missing}")]
    Incomplete {
        /// The command.
        command: &'static str,
        /// What was missing.
        missing: &'static str,
    },
    /// Plain SQL on the source failed.
    #[error("source SQL")]
    Sql(#[from] tokio_postgres::Error),
    /// A slot stayed in use by another backend longer than we wait.
    #[error("replication slot {slot} is still in use by backend pid {pid} after {waited:?}")]
    SlotBusy {
        /// The slot.
        slot: String,
        /// The backend holding it.
        pid: i32,
        /// How long we waited.
        waited: Duration,
    },
    /// A slot to drop is in use.
    #[error("slot {slot} is in use by a running cdc-sync (or another consumer); stop it first")]
    SlotInUse {
        /// The slot.
        slot: String,
    },
    /// The slot was invalidated by the server (`wal_status = 'lost'`): it retained more WAL
    /// than `max_slot_wal_keep_size`, and the changes it held are gone.
    #[error(
        "replication slot {slot} was invalidated by the server (wal_status = lost: it retained more WAL than \
         max_slot_wal_keep_size); the changes since the checkpoint are no longer at the source"
    )]
    SlotLost {
        /// The slot.
        slot: String,
    },
    /// The slot does not exist (any more).
    #[error("replication slot {slot} does not exist (any more); the changes since the checkpoint are no longer at the source")]
    SlotMissing {
        /// The slot.
        slot: String,
    },
    /// The stream ended (server closed it).
    #[error("replication stream ended")]
    Ended,
}

impl SourceError {
    /// Retry or stop: by the SQLSTATE the server sent, else by whether the failure is one of
    /// the connection.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::WalSender(e) | SourceError::Command { source: e, .. } => e.kind(),
            SourceError::Decode(_) => ErrorKind::Other,
            SourceError::Sql(e) => pg_kind(e),
            SourceError::Ended => ErrorKind::Connection,
            SourceError::SlotLost { .. } | SourceError::SlotMissing { .. } => ErrorKind::Slot,
            SourceError::Incomplete { .. } | SourceError::SlotBusy { .. } | SourceError::SlotInUse { .. } => {
                ErrorKind::Other
            }
        }
    }
}

/// An ordered stream of logical changes from one slot.
///
/// Contract:
/// - Messages arrive in commit order; every change of a transaction comes between its `Begin`
///   and `Commit`, and transactions never interleave (`streaming` of in-progress transactions
///   is not used, see the README).
/// - After a restart the stream may repeat transactions the consumer already applied (anything
///   above the slot's confirmed position); consumers must skip by commit LSN.
/// - [`confirm`](ChangeStream::confirm) is the only way the slot's `confirmed_flush` moves, and
///   callers must only confirm LSNs whose effects are durably committed downstream. Confirming
///   never moves backwards.
/// - Keepalives are answered by the implementation, also while the consumer is busy.
pub trait ChangeStream: Send {
    /// The next message; `Err(SourceError::Ended)` when the stream closed.
    fn next(&mut self) -> impl Future<Output = Result<SourceMessage, SourceError>> + Send;
    /// Is another message ready right now (without waiting)? Used to decide when to commit a
    /// batch: the pipeline commits as soon as the stream has nothing pending.
    fn pending(&self) -> bool;
    /// Everything up to `lsn` is durably applied downstream; the slot may advance to it.
    fn confirm(&self, lsn: Lsn);
}

/// An in-memory [`ChangeStream`] for unit tests: plays back a script of messages.
#[derive(Debug, Default)]
pub struct ScriptedStream {
    /// Messages still to deliver.
    pub messages: VecDeque<SourceMessage>,
    /// The highest LSN confirmed so far.
    pub confirmed: Arc<std::sync::Mutex<Lsn>>,
}

impl ScriptedStream {
    /// A stream that will deliver `messages` then end.
    pub fn new(messages: Vec<SourceMessage>) -> Self {
        ScriptedStream { messages: messages.into(), confirmed: Default::default() }
    }
}

impl ChangeStream for ScriptedStream {
    async fn next(&mut self) -> Result<SourceMessage, SourceError> {
        self.messages.pop_front().ok_or(SourceError::Ended)
    }
    fn pending(&self) -> bool {
        !self.messages.is_empty()
    }
    fn confirm(&self, lsn: Lsn) {
        let mut c = self.confirmed.lock().expect("not poisoned");
        if lsn > *c {
            *c = lsn;
        }
    }
}

/// The [`ChangeStream`] over a real slot: a [`WalSenderConnection`] carries the pgoutput
/// messages (protocol v1, text format) and `pg_walstream` decodes them. A reader task owns the
/// connection, decodes, answers keepalives, reports progress, and feeds a bounded channel, so
/// decoding overlaps applying and memory stays bounded.
pub struct PgChangeStream {
    rx: mpsc::Receiver<Result<SourceMessage, SourceError>>,
    confirmed: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Drop for PgChangeStream {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How the reader keeps the session alive and notices a dead one.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Send a status update at least this often (progress, and so the walsender's
    /// `wal_sender_timeout` never fires while we are busy applying).
    pub status_every: Duration,
    /// After this long without any message while we are waiting for one, ask the server for a
    /// reply (a status update with `reply_requested`).
    pub ping_after: Duration,
    /// After this long without any message while waiting, give up on the connection
    /// ([`WalSenderError::Silent`]); the runner reconnects and resumes from the checkpoint.
    pub silent_limit: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            status_every: Duration::from_secs(10),
            ping_after: Duration::from_secs(10),
            silent_limit: Duration::from_secs(30),
        }
    }
}

impl PgChangeStream {
    /// Start streaming `slot` (which must exist) for `publication` from `start` (the last
    /// applied commit's end LSN; `None` = the slot's confirmed position).
    pub async fn start(conn: &str, slot: &str, publication: &str, start: Option<Lsn>) -> Result<Self, SourceError> {
        PgChangeStream::start_with(conn, slot, publication, start, Liveness::default()).await
    }

    /// [`start`](Self::start) with explicit keepalive timings.
    pub async fn start_with(
        conn: &str,
        slot: &str,
        publication: &str,
        start: Option<Lsn>,
        liveness: Liveness,
    ) -> Result<Self, SourceError> {
        wait_slot_usable(conn, slot, Duration::from_secs(60)).await?;
        let mut ws = WalSenderConnection::connect(conn, "cdc-sync").await?;
        let options = [("proto_version", "1".to_string()), ("publication_names", quote_ident(publication))];
        let start = start.unwrap_or_default();
        ws.start_logical(slot, start, &options).await?;
        Ok(PgChangeStream::over(ws, start, liveness))
    }

    /// The stream over a walsender session already streaming from `start`.
    fn over<S>(ws: WalSenderConnection<S>, start: Lsn, liveness: Liveness) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let confirmed = Arc::new(AtomicU64::new(start.0));
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::channel(8192);
        let reader = Reader { ws, tx, confirmed: Arc::clone(&confirmed), received: start, liveness };
        tokio::spawn(reader.run(cancel.clone()));
        PgChangeStream { rx, confirmed, cancel }
    }
}

/// The reader task: frames in, decoded messages out, status updates back.
struct Reader<S> {
    ws: WalSenderConnection<S>,
    tx: mpsc::Sender<Result<SourceMessage, SourceError>>,
    confirmed: Arc<AtomicU64>,
    received: Lsn,
    liveness: Liveness,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Reader<S> {
    async fn run(mut self, cancel: CancellationToken) {
        let result = self.stream(&cancel).await;
        // final progress, then leave; the socket closes when `self` is dropped
        let _ = self.status(false).await;
        self.ws.terminate().await;
        if let Err(e) = result {
            if !cancel.is_cancelled() {
                let _ = self.tx.send(Err(e)).await;
            }
        }
    }

    /// Report progress: the slot may advance to what the consumer confirmed (committed
    /// downstream). `ping` asks the server to answer at once.
    async fn status(&mut self, ping: bool) -> Result<(), WalSenderError> {
        let flushed = Lsn(self.confirmed.load(Relaxed));
        let s = StandbyStatus { received: self.received, flushed, applied: flushed, reply_requested: ping };
        self.ws.send_status(s).await
    }

    async fn stream(&mut self, cancel: &CancellationToken) -> Result<(), SourceError> {
        let mut decoder = PgOutputDecoder::with_protocol_version(1);
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(self.liveness.ping_after / 2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        let (mut last_status, mut last_flushed) = (Instant::now(), Lsn(0));
        let mut last_idle = Lsn(0);
        // a message the channel had no room for: we stop reading until it fits
        let mut pending: Option<SourceMessage> = None;
        loop {
            enum Step {
                Frame(Result<Frame, WalSenderError>),
                Tick,
            }
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                permit = self.tx.reserve(), if pending.is_some() => match permit {
                    Ok(p) => {
                        p.send(Ok(pending.take().expect("checked")));
                        heard = Instant::now(); // we were not listening meanwhile
                        continue;
                    }
                    Err(_) => return Ok(()), // the consumer is gone
                },
                frame = self.ws.next_frame(), if pending.is_none() => Step::Frame(frame),
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Frame(frame) => {
                    heard = Instant::now();
                    match frame? {
                        Frame::Data { wal_start, wal_end, body } => {
                            self.received = self.received.max(wal_end);
                            let event = decoder
                                .decode_message(body, pg_walstream::Lsn::new(wal_start.0))
                                .map_err(SourceError::Decode)?;
                            if let Some(msg) = event.and_then(|e| convert(e.event_type)) {
                                if let SourceMessage::Commit { commit_ts, .. } = &msg {
                                    if tracing::enabled!(tracing::Level::TRACE) {
                                        // the walsender's share of a transaction's lag
                                        let ms = (chrono::Utc::now() - *commit_ts).num_microseconds().unwrap_or(0);
                                        tracing::trace!(recv_ms = ms as f64 / 1000.0, "commit received");
                                    }
                                }
                                match self.tx.try_send(Ok(msg)) {
                                    Ok(()) => {}
                                    Err(mpsc::error::TrySendError::Full(Ok(m))) => pending = Some(m),
                                    Err(_) => return Ok(()),
                                }
                            }
                        }
                        Frame::Keepalive { wal_end, reply_requested } => {
                            self.received = self.received.max(wal_end);
                            // behind everything received so far, for the consumer to confirm
                            // when it has nothing in flight; when the channel is full the
                            // consumer is busy and a later keepalive does it
                            if pending.is_none() && wal_end > last_idle {
                                match self.tx.try_send(Ok(SourceMessage::Idle { wal_end })) {
                                    Ok(()) => last_idle = wal_end,
                                    Err(mpsc::error::TrySendError::Full(_)) => {}
                                    Err(_) => return Ok(()),
                                }
                            }
                            if reply_requested {
                                self.status(false).await?;
                                last_status = Instant::now();
                            }
                        }
                    }
                }
                Step::Tick => {
                    // While waiting for the server (not while the consumer holds us back):
                    // silence is first answered with a ping, then ends the connection.
                    let silent = if pending.is_none() { heard.elapsed() } else { Duration::ZERO };
                    if silent >= self.liveness.silent_limit {
                        return Err(WalSenderError::Silent(silent).into());
                    }
                    let ping = silent >= self.liveness.ping_after;
                    let flushed = Lsn(self.confirmed.load(Relaxed));
                    if ping || flushed != last_flushed || last_status.elapsed() >= self.liveness.status_every {
                        self.status(ping).await?;
                        (last_status, last_flushed) = (Instant::now(), flushed);
                    }
                }
            }
        }
    }
}

/// Waits until no backend holds `slot`, and checks that it can still stream. A walsender
/// releases its slot asynchronously after its client goes away — the connection that created
/// the slot and exported the snapshot, or the stream of a process that was just killed — and
/// `START_REPLICATION` on a slot that is still active fails. Starting the stream only once the
/// slot is free removes that race. A slot that is gone or invalidated is reported as such
/// ([`SourceError::SlotMissing`], [`SourceError::SlotLost`]) rather than as a failed command.
async fn wait_slot_usable(conn: &str, slot: &str, within: Duration) -> Result<(), SourceError> {
    let client = connect(conn).await?;
    let deadline = std::time::Instant::now() + within;
    loop {
        let row = client
            .query_opt("SELECT active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await?;
        let Some(row) = row else { return Err(SourceError::SlotMissing { slot: slot.to_string() }) };
        if row.get::<_, Option<String>>(1).as_deref() == Some("lost") {
            return Err(SourceError::SlotLost { slot: slot.to_string() });
        }
        match row.get::<_, Option<i32>>(0) {
            None => return Ok(()),
            Some(pid) if std::time::Instant::now() >= deadline => {
                return Err(SourceError::SlotBusy { slot: slot.to_string(), pid, waited: within })
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl ChangeStream for PgChangeStream {
    async fn next(&mut self) -> Result<SourceMessage, SourceError> {
        self.rx.recv().await.unwrap_or(Err(SourceError::Ended))
    }
    fn pending(&self) -> bool {
        !self.rx.is_empty()
    }
    fn confirm(&self, lsn: Lsn) {
        self.confirmed.fetch_max(lsn.0, Relaxed);
    }
}

fn row(data: RowData) -> Row {
    Row {
        cells: data
            .iter()
            .map(|(k, v)| {
                let cell = if v.is_null() {
                    Cell::Null
                } else {
                    Cell::Text(Arc::from(String::from_utf8_lossy(v.as_bytes()).as_ref()))
                };
                (Arc::clone(k), cell)
            })
            .collect(),
    }
}

fn qualified(schema: &str, table: &str) -> Arc<str> {
    Arc::from(format!("{}.{}", if schema.is_empty() { "pg_catalog" } else { schema }, table))
}

fn convert(ev: EventType) -> Option<SourceMessage> {
    Some(match ev {
        EventType::Begin { transaction_id, final_lsn, commit_timestamp } => {
            SourceMessage::Begin { xid: transaction_id, final_lsn: Lsn(final_lsn.value()), commit_ts: commit_timestamp }
        }
        EventType::Commit { commit_timestamp, commit_lsn, end_lsn } => SourceMessage::Commit {
            commit_lsn: Lsn(commit_lsn.value()),
            end_lsn: Lsn(end_lsn.value()),
            commit_ts: commit_timestamp,
        },
        EventType::Origin { origin_name, .. } => SourceMessage::Origin { name: origin_name.to_string() },
        EventType::Relation { namespace, relation_name, columns, .. } => SourceMessage::Relation(RelationInfo {
            table: qualified(&namespace, &relation_name),
            type_oids: columns.iter().map(|c| c.type_id).collect(),
            columns: columns.into_iter().map(|c| c.name).collect(),
        }),
        EventType::Insert { schema, table, data, .. } => SourceMessage::Change(RowChange {
            table: qualified(&schema, &table),
            kind: ChangeKind::Insert { new: row(data) },
        }),
        EventType::Update { schema, table, old_data, new_data, .. } => SourceMessage::Change(RowChange {
            table: qualified(&schema, &table),
            kind: ChangeKind::Update { old: old_data.map(row), new: row(new_data) },
        }),
        EventType::Delete { schema, table, old_data, .. } => SourceMessage::Change(RowChange {
            table: qualified(&schema, &table),
            kind: ChangeKind::Delete { old: row(old_data) },
        }),
        EventType::Truncate { tables, .. } => SourceMessage::Truncate { tables },
        _ => return None,
    })
}

// ------------------------------------------------------------------ slot & publication admin

/// Ensure `publication` exists and contains exactly-at-least `tables` (qualified names).
/// Idempotent: missing tables are added, nothing is removed.
pub async fn ensure_publication(client: &Client, publication: &str, tables: &[String]) -> Result<(), SourceError> {
    let exists = client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&publication]).await?.is_some();
    let list = tables.iter().map(|t| quote_qualified(t)).collect::<Vec<_>>().join(", ");
    if !exists {
        client.batch_execute(&format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(publication))).await?;
        return Ok(());
    }
    let rows = client
        .query("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1", &[&publication])
        .await?;
    let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for t in tables {
        if !have.contains(t) {
            client
                .batch_execute(&format!(
                    "ALTER PUBLICATION {} ADD TABLE {}",
                    quote_ident(publication),
                    quote_qualified(t)
                ))
                .await?;
        }
    }
    Ok(())
}

/// State of a slot as seen in `pg_replication_slots`.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    /// Is a walsender using it right now?
    pub active: bool,
    /// `confirmed_flush_lsn`.
    pub confirmed_flush: Option<Lsn>,
    /// WAL bytes retained for it (`pg_current_wal_lsn() - restart_lsn`).
    pub retained_bytes: i64,
    /// `wal_status`: `reserved` (within `max_wal_size`), `extended` (beyond it, kept for the
    /// slot), `unreserved` (beyond `max_slot_wal_keep_size`: lost at the next checkpoint unless
    /// it catches up), `lost` (invalidated).
    pub wal_status: Option<String>,
    /// `safe_wal_size`: bytes of WAL that can still be written before the slot is in danger of
    /// being lost; `None` when `max_slot_wal_keep_size` is unlimited (-1).
    pub safe_wal_bytes: Option<i64>,
}

impl SlotInfo {
    /// Has the server invalidated the slot?
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// Look a slot up.
pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>, SourceError> {
    let row = client
        .query_opt(
            "SELECT active, confirmed_flush_lsn::text, \
             COALESCE((pg_current_wal_lsn() - restart_lsn)::bigint, 0), wal_status, safe_wal_size \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| SlotInfo {
        active: r.get(0),
        confirmed_flush: r.get::<_, Option<String>>(1).and_then(|s| Lsn::parse(&s)),
        retained_bytes: r.get(2),
        wal_status: r.get(3),
        safe_wal_bytes: r.get(4),
    }))
}

/// A slot created with `EXPORT_SNAPSHOT`. The snapshot stays importable while this value
/// (and so the replication connection) lives and runs no other command: drop it only after
/// every snapshot copy has imported the snapshot.
pub struct ExportedSlot {
    _conn: WalSenderConnection,
    /// The snapshot name for `SET TRANSACTION SNAPSHOT`.
    pub snapshot: String,
    /// The slot's consistent point: changes committed at or after it are streamed, everything
    /// before is in the snapshot.
    pub consistent_point: Lsn,
}

/// Create a logical pgoutput slot with an exported snapshot, over a walsender session (with the
/// TLS the connection string asks for). `temporary` slots vanish with the connection (used to
/// re-snapshot single tables).
pub async fn create_slot_exporting(conn: &str, slot: &str, temporary: bool) -> Result<ExportedSlot, SourceError> {
    let mut c = WalSenderConnection::connect(conn, "cdc-sync").await?;
    let sql = format!(
        "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput EXPORT_SNAPSHOT",
        quote_ident(slot),
        if temporary { " TEMPORARY" } else { "" }
    );
    let rows = c.simple_query(&sql).await.map_err(|source| SourceError::Command { command: sql.clone(), source })?;
    let field = |i: usize| rows.first().and_then(|r| r.get(i).cloned().flatten()).filter(|s| !s.is_empty());
    let consistent_point = field(1)
        .and_then(|s| Lsn::parse(&s))
        .ok_or(SourceError::Incomplete { command: "CREATE_REPLICATION_SLOT", missing: "consistent point" })?;
    let snapshot =
        field(2).ok_or(SourceError::Incomplete { command: "CREATE_REPLICATION_SLOT", missing: "exported snapshot" })?;
    Ok(ExportedSlot { _conn: c, snapshot, consistent_point })
}

/// Create a slot without a snapshot (used for the reverse direction). Returns its consistent point.
pub async fn create_slot(client: &Client, slot: &str) -> Result<Lsn, SourceError> {
    let row =
        client.query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot]).await?;
    Lsn::parse(&row.get::<_, String>(0))
        .ok_or(SourceError::Incomplete { command: "pg_create_logical_replication_slot", missing: "LSN" })
}

/// Drop a slot if it exists and is not in use. Returns whether it was dropped.
pub async fn drop_slot(client: &Client, slot: &str) -> Result<bool, SourceError> {
    match slot_info(client, slot).await? {
        None => Ok(false),
        Some(s) if s.active => Err(SourceError::SlotInUse { slot: slot.to_string() }),
        Some(_) => {
            client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await?;
            Ok(true)
        }
    }
}

/// Drop a publication if it exists.
pub async fn drop_publication(client: &Client, publication: &str) -> Result<(), SourceError> {
    client.batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(publication))).await?;
    Ok(())
}

/// Drop a replication origin if it exists.
pub async fn drop_origin(client: &Client, origin: &str) -> Result<(), SourceError> {
    client
        .batch_execute(&format!(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = {}",
            quote_literal(origin)
        ))
        .await?;
    Ok(())
}

/// What the scripted servers of this module's tests send.
#[cfg(test)]
pub(crate) mod test_wire {
    /// One backend protocol message: its tag, its length, its body.
    pub(crate) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::test_wire::msg;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A stream over a scripted walsender that says nothing once streaming; `answer_pings`: it
    /// answers a status update that requests a reply with a keepalive, as a live server does.
    /// Returns the stream and how many pings the server saw.
    async fn silent_server(answer_pings: bool) -> (PgChangeStream, Arc<AtomicU64>) {
        let (client, mut server) = tokio::io::duplex(4096);
        let pings = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&pings);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let _ = server.read(&mut buf).await; // startup
            let mut hello = msg(b'R', &0i32.to_be_bytes());
            hello.extend(msg(b'Z', b"I"));
            server.write_all(&hello).await.unwrap();
            let _ = server.read(&mut buf).await; // START_REPLICATION
            server.write_all(&msg(b'W', &[0, 0, 0])).await.unwrap();
            serve_status_updates(server, seen, answer_pings).await;
        });
        let startup = walsender::Startup {
            user: "u".into(),
            password: None,
            database: "d".into(),
            application_name: "t".into(),
            options: None,
            replication: true,
        };
        let mut ws = WalSenderConnection::handshake(client, &startup).await.unwrap();
        ws.start_logical("s", Lsn(0), &[]).await.unwrap();
        let liveness = Liveness {
            status_every: Duration::from_secs(60),
            ping_after: Duration::from_millis(200),
            silent_limit: Duration::from_millis(600),
        };
        (PgChangeStream::over(ws, Lsn(0), liveness), pings)
    }

    async fn serve_status_updates(mut server: DuplexStream, pings: Arc<AtomicU64>, answer: bool) {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok(n) = server.read(&mut buf).await else { return };
            if n == 0 {
                return;
            }
            // each status update is one CopyData of 34 bytes: 'd' len 'r' ... reply byte last
            for m in buf[..n].chunks(39).filter(|m| m.len() == 39 && m[5] == b'r') {
                if m[38] == 1 {
                    pings.fetch_add(1, Relaxed);
                    if answer {
                        let mut k = vec![b'k'];
                        k.extend_from_slice(&7u64.to_be_bytes());
                        k.extend_from_slice(&0i64.to_be_bytes());
                        k.push(0);
                        server.write_all(&msg(b'd', &k)).await.unwrap();
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn a_silent_walsender_is_pinged_then_given_up() {
        let (mut stream, pings) = silent_server(false).await;
        let t0 = std::time::Instant::now();
        let e =
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("gave up in time").unwrap_err();
        assert!(matches!(e, SourceError::WalSender(WalSenderError::Silent(_))), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Connection);
        assert!(t0.elapsed() >= Duration::from_millis(500), "{:?}", t0.elapsed());
        assert!(pings.load(Relaxed) >= 1, "asked for a reply before giving up");
    }

    #[tokio::test]
    async fn a_walsender_that_answers_pings_is_kept() {
        let (mut stream, pings) = silent_server(true).await;
        // no error well past the silence limit; the answers' position reaches the consumer once
        // (for it to confirm when it has nothing in flight), not again while it does not move
        let first = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await.expect("a keepalive");
        assert!(matches!(first, Ok(SourceMessage::Idle { wal_end: Lsn(7) })), "{first:?}");
        assert!(tokio::time::timeout(Duration::from_millis(1500), stream.next()).await.is_err());
        assert!(pings.load(Relaxed) >= 2, "{}", pings.load(Relaxed));
    }

    #[tokio::test]
    async fn scripted_stream_confirms_monotonically() {
        let s = ScriptedStream::new(vec![SourceMessage::Idle { wal_end: Lsn(1) }]);
        assert!(s.pending());
        s.confirm(Lsn(10));
        s.confirm(Lsn(5));
        assert_eq!(*s.confirmed.lock().unwrap(), Lsn(10));
    }
}

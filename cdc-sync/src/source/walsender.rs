//! The client side of a walsender session, on plain tokio sockets: startup and authentication,
//! `START_REPLICATION ... LOGICAL`, CopyData frames in (XLogData, keepalives), standby status
//! updates out. pg_walstream decodes the pgoutput messages the frames carry
//! ([`pg_walstream::PgOutputDecoder`]); its own libpq-based reader is not used for streaming.
//!
//! Why not: pg_walstream 0.9.0 waits on the libpq socket with an edge-triggered tokio `AsyncFd`
//! and, after one `PQconsumeInput`, clears the socket's readiness whenever no complete message is
//! buffered yet. But `PQconsumeInput` is not a drain: it reads at most libpq's free input buffer
//! (16 KB at first), and stops after one `recv` while it holds 32 KB or less. When a message
//! larger than that (a 128 KB TOAST value) was already waiting in full, the first read only
//! taught libpq its length, the readiness was cleared with the rest still on the socket, and
//! nothing ever raised it again: the unread bytes had filled the TCP receive window, so the
//! server could send nothing more (not even its keepalive or, at `wal_sender_timeout`, its
//! goodbye). Seen as `Recv-Q 111616` on the replication socket of a stalled run with every
//! runtime thread parked. Here a read is tokio's `read_buf`, whose readiness is cleared only when
//! the kernel says `WouldBlock`, so bytes on the socket are always read.
//!
//! TLS as every cdc-sync session speaks it ([`crate::connect::tls`]): the SSLRequest on the
//! TCP socket, then rustls, as the connection string's `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey` ask. SCRAM runs without channel binding here (`channel_binding=require` is refused).

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{ChannelBinding, Host};

use crate::connect::conninfo::ConnInfo;
use crate::connect::tls::{negotiate, PgStream, TlsSetup};
use crate::error::ServerError;
use crate::model::{quote_ident, quote_literal, Lsn};

mod error;

use error::refused;
pub use error::WalSenderError;

/// One CopyData frame of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// XLogData: one output-plugin message.
    Data {
        /// WAL position of the message.
        wal_start: Lsn,
        /// The server's WAL end when it sent the message.
        wal_end: Lsn,
        /// The pgoutput message.
        body: Bytes,
    },
    /// Primary keepalive.
    Keepalive {
        /// The server's send position.
        wal_end: Lsn,
        /// The server wants a status update now.
        reply_requested: bool,
    },
}

/// A standby status update: what we received, and what is durably applied downstream (the slot
/// may advance to `flushed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    /// Last WAL position received.
    pub received: Lsn,
    /// Durably applied downstream (`confirmed_flush` follows it). `0` = nothing yet.
    pub flushed: Lsn,
    /// Applied downstream.
    pub applied: Lsn,
    /// Ask the server to answer with a keepalive at once (a ping).
    pub reply_requested: bool,
}

/// A TCP or Unix-domain socket.
#[derive(Debug)]
pub enum Socket {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain socket.
    Unix(UnixStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Who we are to the server.
#[derive(Debug, Clone)]
pub struct Startup {
    /// Role.
    pub user: String,
    /// Its password, when the connection string has one.
    pub password: Option<Vec<u8>>,
    /// Database (logical replication is per database).
    pub database: String,
    /// `application_name` (shows in `pg_stat_replication`).
    pub application_name: String,
    /// Extra `options` (command-line options for the backend).
    pub options: Option<String>,
    /// A walsender (`replication=database`); `false`: a plain backend session, as the snapshot's
    /// COPY readers use ([`WalSenderConnection::connect_plain`]).
    pub replication: bool,
}

/// A walsender session (`replication=database`).
pub struct WalSenderConnection<S = PgStream<Socket>> {
    io: S,
    inbuf: BytesMut,
    out: BytesMut,
    /// The error of a COPY being read, reported at its ReadyForQuery.
    copy_error: Option<ServerError>,
}

/// How long a connection attempt may take when the connection string does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl WalSenderConnection<PgStream<Socket>> {
    /// Connect to the server a libpq-style connection string (key=value or URL) names, as a
    /// logical replication session, over TLS as its `sslmode` asks, and authenticate (trust,
    /// password, md5, SCRAM-SHA-256, a client certificate).
    pub async fn connect(conn: &str, application_name: &str) -> Result<Self, WalSenderError> {
        WalSenderConnection::connect_unclassified(conn, application_name, true).await.map_err(|e| refused(conn, e))
    }

    /// The same client as a plain backend session (no `replication` parameter, no REPLICATION
    /// attribute needed): the snapshot's chunk reader, which takes a COPY's rows off the socket
    /// in bulk ([`WalSenderConnection::copy_out_into`]) instead of as a message each.
    pub async fn connect_plain(conn: &str, application_name: &str) -> Result<Self, WalSenderError> {
        WalSenderConnection::connect_unclassified(conn, application_name, false).await
    }

    async fn connect_unclassified(
        conn: &str,
        application_name: &str,
        replication: bool,
    ) -> Result<Self, WalSenderError> {
        let info = ConnInfo::parse(conn).map_err(WalSenderError::Config)?;
        let tls = TlsSetup::new(&info.tls).map_err(|e| WalSenderError::TlsSetup(Box::new(e)))?;
        let cfg = info.config;
        if cfg.get_channel_binding() == ChannelBinding::Require {
            return Err(WalSenderError::Unsupported(
                "channel_binding=require: the replication connection speaks SCRAM without channel binding".into(),
            ));
        }
        let user = match cfg.get_user() {
            Some(u) => u.to_string(),
            None => std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .map_err(|_| WalSenderError::Unsupported("the connection string names no user".into()))?,
        };
        let startup = Startup {
            database: cfg.get_dbname().unwrap_or(&user).to_string(),
            password: cfg.get_password().map(<[u8]>::to_vec),
            user,
            application_name: cfg.get_application_name().unwrap_or(application_name).to_string(),
            options: cfg.get_options().map(str::to_string),
            replication,
        };
        let io = open_session(&cfg, &tls).await?;
        WalSenderConnection::handshake(io, &startup).await
    }
}

/// Connect to the first host of `cfg` that accepts (hosts in order, each with its port and its
/// `hostaddr` if given), and negotiate TLS on TCP (libpq never uses TLS on a Unix socket).
async fn open_session(cfg: &tokio_postgres::Config, tls: &TlsSetup) -> Result<PgStream<Socket>, WalSenderError> {
    let timeout = cfg.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
    let ports = cfg.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let (hosts, addrs) = (cfg.get_hosts(), cfg.get_hostaddrs());
    // (address to connect to, name for TLS; None = Unix socket)
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    for i in 0..hosts.len().max(addrs.len()) {
        let name = match hosts.get(i) {
            Some(Host::Tcp(name)) => Some(name.clone()),
            Some(Host::Unix(dir)) if addrs.get(i).is_none() => {
                targets.push((dir.join(format!(".s.PGSQL.{}", port(i))).display().to_string(), None));
                continue;
            }
            _ => addrs.get(i).map(|a| a.to_string()),
        };
        let target = match addrs.get(i) {
            Some(a) => std::net::SocketAddr::new(*a, port(i)).to_string(),
            None => format!("{}:{}", name.as_deref().unwrap_or_default(), port(i)),
        };
        targets.push((target, name));
    }
    if targets.is_empty() {
        return Err(WalSenderError::Unsupported("the connection string names no host".into()));
    }
    let mut last = None;
    for (target, name) in targets {
        let attempt = async {
            match &name {
                Some(_) => {
                    let s = TcpStream::connect(&target).await?;
                    s.set_nodelay(true)?;
                    Ok(Socket::Tcp(s))
                }
                None => UnixStream::connect(Path::new(&target)).await.map(Socket::Unix),
            }
        };
        let socket = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = Some(WalSenderError::Connect { target, source: e });
                continue;
            }
            Err(_) => {
                let source = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                last = Some(WalSenderError::Connect { target, source });
                continue;
            }
        };
        let Some(name) = name else { return Ok(PgStream::Plain(socket)) };
        match tokio::time::timeout(timeout, negotiate(socket, tls, &name)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some(WalSenderError::Tls(Box::new(e))),
            Err(_) => {
                let source = io::Error::new(io::ErrorKind::TimedOut, "TLS negotiation timed out");
                last = Some(WalSenderError::Connect { target, source });
            }
        }
    }
    Err(last.expect("at least one target"))
}

impl<S: AsyncRead + AsyncWrite + Unpin> WalSenderConnection<S> {
    /// Start up and authenticate on an open socket; returns once the server is ready for a
    /// command.
    pub async fn handshake(io: S, startup: &Startup) -> Result<Self, WalSenderError> {
        let mut c = WalSenderConnection {
            io,
            inbuf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
            copy_error: None,
        };
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &startup.user),
            ("database", &startup.database),
            ("application_name", &startup.application_name),
            ("client_encoding", "UTF8"),
        ];
        if startup.replication {
            params.push(("replication", "database"));
        }
        if let Some(o) = &startup.options {
            params.push(("options", o));
        }
        frontend::startup_message(params, &mut c.out)?;
        c.send().await?;
        let mut scram: Option<sasl::ScramSha256> = None;
        let password = || startup.password.as_deref().ok_or(WalSenderError::NoPassword);
        loop {
            let (tag, mut body) = c.message().await?;
            match tag {
                b'R' if body.len() < 4 => return Err(WalSenderError::Protocol("short authentication request".into())),
                b'R' => match body.get_i32() {
                    0 => {} // AuthenticationOk
                    3 => {
                        frontend::password_message(password()?, &mut c.out)?;
                        c.send().await?;
                    }
                    5 if body.len() < 4 => return Err(WalSenderError::Protocol("md5 request without salt".into())),
                    5 => {
                        let mut salt = [0u8; 4];
                        body.copy_to_slice(&mut salt);
                        let hash = md5_hash(startup.user.as_bytes(), password()?, salt);
                        frontend::password_message(hash.as_bytes(), &mut c.out)?;
                        c.send().await?;
                    }
                    10 => {
                        let mechanisms = body.split(|b| *b == 0).filter(|m| !m.is_empty()).collect::<Vec<_>>();
                        if !mechanisms.contains(&sasl::SCRAM_SHA_256.as_bytes()) {
                            return Err(WalSenderError::Unsupported(format!(
                                "SASL mechanisms {:?} (only {} without channel binding is spoken)",
                                mechanisms.iter().map(|m| String::from_utf8_lossy(m)).collect::<Vec<_>>(),
                                sasl::SCRAM_SHA_256
                            )));
                        }
                        let s = sasl::ScramSha256::new(password()?, sasl::ChannelBinding::unsupported());
                        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut c.out)?;
                        c.send().await?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| WalSenderError::Protocol("SASLContinue before SASL".into()))?;
                        s.update(&body)?;
                        frontend::sasl_response(s.message(), &mut c.out)?;
                        c.send().await?;
                    }
                    12 => {
                        let s =
                            scram.as_mut().ok_or_else(|| WalSenderError::Protocol("SASLFinal before SASL".into()))?;
                        s.finish(&body)?;
                    }
                    other => {
                        return Err(WalSenderError::Unsupported(format!(
                            "authentication request {other} (trust, password, md5 and SCRAM-SHA-256 are spoken)"
                        )))
                    }
                },
                b'E' => return Err(WalSenderError::Startup(server_error(&body))),
                b'Z' => return Ok(c),
                // ParameterStatus, BackendKeyData, NoticeResponse, NegotiateProtocolVersion
                b'S' | b'K' | b'N' | b'v' => {}
                other => {
                    return Err(WalSenderError::Protocol(format!("unexpected message {:?} at startup", other as char)))
                }
            }
        }
    }

    /// Run a replication command (`CREATE_REPLICATION_SLOT ...`) and return its rows as text
    /// (`None` = NULL); the server's error if it failed.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WalSenderError> {
        frontend::query(sql, &mut self.out)?;
        self.send().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.message().await?;
            match tag {
                b'D' => rows.push(data_row(body)?),
                b'E' => error = Some(server_error(&body)),
                b'Z' => return error.map_or(Ok(rows), |e| Err(WalSenderError::Server(e))),
                b'T' | b'C' | b'I' | b'N' | b'S' => {}
                other => {
                    return Err(WalSenderError::Protocol(format!(
                        "unexpected message {:?} in a command's answer",
                        other as char
                    )))
                }
            }
        }
    }

    /// `START_REPLICATION SLOT slot LOGICAL start (options)`; returns once the server streams.
    /// `start` 0 resumes from the slot's confirmed position.
    pub async fn start_logical(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
    ) -> Result<(), WalSenderError> {
        let opts = options.iter().map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v))).collect::<Vec<_>>();
        let sql = format!("START_REPLICATION SLOT {} LOGICAL {start} ({})", quote_ident(slot), opts.join(", "));
        self.start_copy(&sql, b'W', "START_REPLICATION ended without streaming", "after START_REPLICATION").await
    }

    /// Sends `sql` as a simple query and reads until the server starts the copy it asked for
    /// (`want`: `W` CopyBoth for replication, `H` CopyOut). The server's error, or `none` when
    /// it became ready without one, if it did not; `where_` names the step in a protocol error.
    async fn start_copy(&mut self, sql: &str, want: u8, none: &str, where_: &str) -> Result<(), WalSenderError> {
        frontend::query(sql, &mut self.out)?;
        self.send().await?;
        let mut error = None;
        loop {
            let (tag, body) = self.message().await?;
            match tag {
                t if t == want => return Ok(()),
                b'E' => error = Some(server_error(&body)),
                b'Z' => {
                    return Err(error
                        .map(WalSenderError::Server)
                        .unwrap_or_else(|| WalSenderError::Protocol(none.into())))
                }
                b'N' | b'S' => {}
                other => {
                    return Err(WalSenderError::Protocol(format!("unexpected message {:?} {where_}", other as char)))
                }
            }
        }
    }

    /// The next XLogData or keepalive frame. Cancel safe: bytes read stay buffered for the next
    /// call.
    pub async fn next_frame(&mut self) -> Result<Frame, WalSenderError> {
        loop {
            let (tag, mut body) = self.message().await?;
            match tag {
                b'd' if body.first() == Some(&b'w') && body.len() >= 25 => {
                    body.advance(1);
                    let wal_start = Lsn(body.get_u64());
                    let wal_end = Lsn(body.get_u64());
                    body.advance(8); // send time
                    return Ok(Frame::Data { wal_start, wal_end, body });
                }
                b'd' if body.first() == Some(&b'k') && body.len() >= 18 => {
                    body.advance(1);
                    let wal_end = Lsn(body.get_u64());
                    body.advance(8);
                    return Ok(Frame::Keepalive { wal_end, reply_requested: body.get_u8() == 1 });
                }
                b'd' => {
                    return Err(WalSenderError::Protocol(format!("unknown or short CopyData ({} bytes)", body.len())))
                }
                b'E' => return Err(WalSenderError::Server(server_error(&body))),
                b'c' | b'C' | b'Z' => return Err(WalSenderError::StreamEnded),
                b'N' | b'S' => {}
                other => {
                    return Err(WalSenderError::Protocol(format!(
                        "unexpected message {:?} while streaming",
                        other as char
                    )))
                }
            }
        }
    }

    /// Send a standby status update.
    pub async fn send_status(&mut self, s: StandbyStatus) -> Result<(), WalSenderError> {
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(s.received.0);
        msg.put_u64(s.flushed.0);
        msg.put_u64(s.applied.0);
        msg.put_i64(pg_now_micros());
        msg.put_u8(u8::from(s.reply_requested));
        frontend::CopyData::new(&msg[..])?.write(&mut self.out);
        self.send().await
    }

    /// Tell the server we are leaving (best effort; the socket closes when this is dropped).
    pub async fn terminate(&mut self) {
        frontend::terminate(&mut self.out);
        let _ = self.send().await;
    }

    /// Start `COPY ... TO STDOUT` (a simple query); returns once the server sends the rows.
    pub async fn start_copy_out(&mut self, sql: &str) -> Result<(), WalSenderError> {
        self.start_copy(sql, b'H', "COPY TO STDOUT sent no rows", "before COPY data").await
    }

    /// Append the COPY data of the started COPY to `batch` (without the message framing) until
    /// it holds at least `min` bytes or the COPY ended. `Ok(false)` once the server is ready for
    /// the next command (the last bytes may be in `batch`); the server's error if the COPY
    /// failed. One copy of each row's bytes, no allocation per row.
    pub async fn copy_out_into(&mut self, batch: &mut BytesMut, min: usize) -> Result<bool, WalSenderError> {
        loop {
            while self.inbuf.len() >= 5 {
                let len = u32::from_be_bytes([self.inbuf[1], self.inbuf[2], self.inbuf[3], self.inbuf[4]]) as usize;
                if len < 4 {
                    return Err(WalSenderError::Protocol(format!("message length {len}")));
                }
                if self.inbuf.len() <= len {
                    self.inbuf.reserve(1 + len - self.inbuf.len());
                    break;
                }
                let tag = self.inbuf[0];
                match tag {
                    b'd' => batch.extend_from_slice(&self.inbuf[5..1 + len]),
                    b'E' => self.copy_error = Some(server_error(&self.inbuf[5..1 + len])),
                    b'Z' => {
                        self.inbuf.advance(1 + len);
                        return match self.copy_error.take() {
                            Some(e) => Err(WalSenderError::Server(e)),
                            None => Ok(false),
                        };
                    }
                    // CopyDone, CommandComplete, notices, parameter changes
                    b'c' | b'C' | b'N' | b'S' => {}
                    other => {
                        return Err(WalSenderError::Protocol(format!(
                            "unexpected message {:?} in COPY data",
                            other as char
                        )))
                    }
                }
                self.inbuf.advance(1 + len);
                if batch.len() >= min {
                    return Ok(true);
                }
            }
            if self.inbuf.capacity() - self.inbuf.len() < 8192 {
                self.inbuf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.inbuf).await? == 0 {
                return Err(WalSenderError::Closed);
            }
        }
    }

    async fn send(&mut self) -> Result<(), WalSenderError> {
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.flush().await?;
        Ok(())
    }

    /// The next backend message (type byte, body). Reads only while no whole message is
    /// buffered, and then until the kernel has no more bytes for us or the message is whole.
    async fn message(&mut self) -> Result<(u8, Bytes), WalSenderError> {
        loop {
            if self.inbuf.len() >= 5 {
                let len = u32::from_be_bytes([self.inbuf[1], self.inbuf[2], self.inbuf[3], self.inbuf[4]]) as usize;
                if len < 4 {
                    return Err(WalSenderError::Protocol(format!("message length {len}")));
                }
                if self.inbuf.len() > len {
                    let mut m = self.inbuf.split_to(1 + len).freeze();
                    let tag = m[0];
                    m.advance(5);
                    return Ok((tag, m));
                }
                self.inbuf.reserve(1 + len - self.inbuf.len());
            }
            if self.inbuf.capacity() - self.inbuf.len() < 8192 {
                self.inbuf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.inbuf).await? == 0 {
                return Err(WalSenderError::Closed);
            }
        }
    }
}

/// The text values of a DataRow.
fn data_row(mut body: Bytes) -> Result<Vec<Option<String>>, WalSenderError> {
    let short = || WalSenderError::Protocol("short DataRow".into());
    if body.len() < 2 {
        return Err(short());
    }
    let n = body.get_i16();
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        if body.len() < 4 {
            return Err(short());
        }
        let len = body.get_i32();
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return Err(short());
        }
        out.push(Some(String::from_utf8_lossy(&body.split_to(len)).into_owned()));
    }
    Ok(out)
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch).
fn pg_now_micros() -> i64 {
    const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.as_micros() as i64 - (PG_EPOCH_UNIX_SECS as i64) * 1_000_000
}

/// The fields of an ErrorResponse: SQLSTATE (`C`), message (`M`), detail (`D`).
fn server_error(body: &[u8]) -> ServerError {
    let mut e = ServerError::default();
    for field in body.split(|b| *b == 0) {
        let Some((&code, value)) = field.split_first() else { continue };
        let value = String::from_utf8_lossy(value).into_owned();
        match code {
            b'C' => e.sqlstate = Some(value),
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            _ => {}
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::source::test_wire::msg;
    use tokio::io::{duplex, DuplexStream};

    fn xlog(start: u64, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![b'w'];
        b.extend_from_slice(&start.to_be_bytes());
        b.extend_from_slice(&(start + 1).to_be_bytes());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(payload);
        msg(b'd', &b)
    }

    fn keepalive(end: u64, reply: bool) -> Vec<u8> {
        let mut b = vec![b'k'];
        b.extend_from_slice(&end.to_be_bytes());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.push(u8::from(reply));
        msg(b'd', &b)
    }

    fn startup() -> Startup {
        Startup {
            user: "u".into(),
            password: Some(b"pw".to_vec()),
            database: "db".into(),
            application_name: "t".into(),
            options: None,
            replication: true,
        }
    }

    /// A server script: bytes to send, in chunks as given (split anywhere).
    async fn serve(mut server: DuplexStream, chunks: Vec<Vec<u8>>) -> Vec<u8> {
        let mut got = vec![0u8; 4096];
        let n = server.read(&mut got).await.unwrap(); // startup message
        got.truncate(n);
        for c in chunks {
            server.write_all(&c).await.unwrap();
            tokio::task::yield_now().await;
        }
        got
    }

    #[tokio::test]
    async fn frames_split_anywhere_and_large_ones_are_read_whole() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = msg(b'R', &0i32.to_be_bytes());
        wire.extend(msg(b'S', b"server_version\x0015\x00"));
        wire.extend(msg(b'Z', b"I"));
        wire.extend(msg(b'W', &[0, 0, 0]));
        wire.extend(xlog(100, b"B-small"));
        wire.extend(xlog(200, &big));
        wire.extend(keepalive(300, true));
        wire.extend(xlog(400, b"C-small"));
        // cut into uneven pieces, one of them inside a length word
        let cuts = [3usize, 17, 40, 41, 4000, 70_000, 70_003, 250_000];
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([wire.len()]) {
            chunks.push(wire[prev..c].to_vec());
            prev = c;
        }
        let (client, server) = duplex(8192); // small pipe: the big frame arrives in many reads
        let srv = tokio::spawn(serve(server, chunks));
        let mut c = WalSenderConnection::handshake(client, &startup()).await.unwrap();
        c.start_logical("s", Lsn(0), &[("proto_version", "1".into())]).await.unwrap();
        let f1 = c.next_frame().await.unwrap();
        assert_eq!(f1, Frame::Data { wal_start: Lsn(100), wal_end: Lsn(101), body: Bytes::from_static(b"B-small") });
        match c.next_frame().await.unwrap() {
            Frame::Data { wal_start, body, .. } => assert_eq!((wal_start, &body[..]), (Lsn(200), &big[..])),
            f => panic!("{f:?}"),
        }
        assert_eq!(c.next_frame().await.unwrap(), Frame::Keepalive { wal_end: Lsn(300), reply_requested: true });
        assert!(matches!(c.next_frame().await.unwrap(), Frame::Data { wal_start: Lsn(400), .. }));
        let sent = srv.await.unwrap();
        assert!(sent.windows(11).any(|w| w == b"replication"), "startup names replication=database");
    }

    #[tokio::test]
    async fn server_errors_keep_their_sqlstate() {
        let mut wire = msg(b'R', &0i32.to_be_bytes());
        wire.extend(msg(b'Z', b"I"));
        wire.extend(msg(b'E', b"SERROR\0C42704\0Mreplication slot \"s\" does not exist\0\0"));
        wire.extend(msg(b'Z', b"I"));
        let (client, server) = duplex(1024);
        tokio::spawn(serve(server, vec![wire]));
        let mut c = WalSenderConnection::handshake(client, &startup()).await.unwrap();
        let e = c.start_logical("s", Lsn(0), &[]).await.unwrap_err();
        match &e {
            WalSenderError::Server(s) => {
                assert_eq!(s.sqlstate.as_deref(), Some("42704"));
                assert_eq!(s.message, "replication slot \"s\" does not exist");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(e.kind(), ErrorKind::Schema);
        assert_eq!(WalSenderError::Closed.kind(), ErrorKind::Connection);
    }

    #[tokio::test]
    async fn status_update_layout() {
        let (client, mut server) = duplex(1024);
        let mut c = WalSenderConnection { io: client, inbuf: BytesMut::new(), out: BytesMut::new(), copy_error: None };
        c.send_status(StandbyStatus { received: Lsn(3), flushed: Lsn(2), applied: Lsn(1), reply_requested: true })
            .await
            .unwrap();
        let mut got = vec![0u8; 64];
        let n = server.read(&mut got).await.unwrap();
        assert_eq!(n, 1 + 4 + 34);
        assert_eq!(&got[..6], &[b'd', 0, 0, 0, 38, b'r']);
        assert_eq!(&got[6..30], &[&3u64.to_be_bytes()[..], &2u64.to_be_bytes(), &1u64.to_be_bytes()].concat()[..]);
        assert_eq!(got[38], 1);
    }
}

//! What kind of failure an error is, as far as deciding what happens next: retry with backoff,
//! or stop the pipeline for a human. Errors are classified where they arise, by SQLSTATE (or by
//! the I/O failure underneath when there is none), and keep their source.

use std::fmt;

/// The kind of a failure. Transient kinds are retried (resume from the checkpoint, capped
/// exponential backoff with jitter) until they repeat past a limit; the others stop the
/// pipeline at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection was refused, lost or broken: SQLSTATE class `08`, or an I/O error (no
    /// SQLSTATE). Transient.
    Connection,
    /// The server is shutting down, crashed or is still starting: `57P01`, `57P02`, `57P03`.
    /// Transient.
    Shutdown,
    /// Serialization failure or deadlock (`40001`, `40P01`): running the transaction again may
    /// succeed. Transient.
    Conflict,
    /// The server is out of resources: disk, memory, connections (class `53`). Transient.
    Resources,
    /// The data does not fit the target: an invalid value or a violated constraint (classes
    /// `22` and `23`). Stops: retrying writes the same row again.
    Data,
    /// The schema does not fit the mapping: missing table or column, wrong type, privileges
    /// (class `42`), or a mapped column dropped at the source. Stops.
    Schema,
    /// The replication slot was invalidated by the server or dropped: the changes the stream
    /// needs are gone from the source. Stops (or, when configured, re-snapshots).
    Slot,
    /// The server or the TLS layer refused us for a reason that does not go away by waiting:
    /// authentication or authorization failed (class `28`: wrong password, no `pg_hba.conf`
    /// entry), the database does not exist (`3D000`), the server's certificate was rejected or
    /// the server refused TLS. Stops: the connection string (or the server's settings) must
    /// change.
    Access,
    /// Anything else. Retried like a transient error, and escalated to a stop when it repeats.
    Other,
}

impl ErrorKind {
    /// The kind of a five-character SQLSTATE.
    pub fn from_sqlstate(code: &str) -> ErrorKind {
        match code {
            "57P01" | "57P02" | "57P03" => ErrorKind::Shutdown,
            "40001" | "40P01" => ErrorKind::Conflict,
            _ => match code.get(..2) {
                Some("08") => ErrorKind::Connection,
                Some("53") => ErrorKind::Resources,
                Some("22") | Some("23") => ErrorKind::Data,
                Some("42") => ErrorKind::Schema,
                Some("28") | Some("3D") => ErrorKind::Access,
                _ => ErrorKind::Other,
            },
        }
    }

    /// Is it worth trying again (after a pause), resuming from the checkpoint?
    pub fn is_transient(self) -> bool {
        !matches!(self, ErrorKind::Data | ErrorKind::Schema | ErrorKind::Slot | ErrorKind::Access)
    }

    /// Is a server simply not there (down, restarting, unreachable)? Such errors are retried
    /// for as long as they last, never escalated to a stop.
    pub fn is_unavailable(self) -> bool {
        matches!(self, ErrorKind::Connection | ErrorKind::Shutdown)
    }

    /// Lower-case name, as shown on `/status` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connection => "connection",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Resources => "resources",
            ErrorKind::Data => "data",
            ErrorKind::Schema => "schema",
            ErrorKind::Slot => "slot",
            ErrorKind::Access => "access",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a tokio-postgres error: by SQLSTATE when the server sent one, else by the TLS
/// failure underneath ([`ErrorKind::Connection`] when the network failed during negotiation or
/// a certificate file could not be read yet, [`ErrorKind::Access`] when a certificate or the
/// TLS request was refused), else [`ErrorKind::Connection`] for a closed connection or an I/O
/// failure, else [`ErrorKind::Other`].
pub fn pg_kind(e: &tokio_postgres::Error) -> ErrorKind {
    if let Some(code) = e.code() {
        return ErrorKind::from_sqlstate(code.code());
    }
    if let Some(tls) = tls_source(e) {
        return if tls.is_transient() { ErrorKind::Connection } else { ErrorKind::Access };
    }
    if e.is_closed() || has_io_source(e) {
        return ErrorKind::Connection;
    }
    ErrorKind::Other
}

/// What to change after a refused connection, and the TLS failure in an error's chain: shared
/// with every strangler component (`strangler-pg-connect`).
pub use strangler_pg_connect::{access_advice, connect_advice, tls_source};

fn has_io_source(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = e.source();
    while let Some(s) = cur {
        if s.is::<std::io::Error>() {
            return true;
        }
        cur = s.source();
    }
    false
}

/// The server's account of a failure, when there is one: SQLSTATE, message, detail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    /// Five-character SQLSTATE, e.g. `23505`.
    pub sqlstate: Option<String>,
    /// The primary message (the server's, or the error's own text when there is none).
    pub message: String,
    /// The server's DETAIL line, e.g. `Key (code)=(x) already exists.`
    pub detail: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "[{code}] {}", self.message)?,
            None => f.write_str(&self.message)?,
        }
        match &self.detail {
            Some(d) => write!(f, " ({d})"),
            None => Ok(()),
        }
    }
}

/// A `ServerError` is also the error itself where the server's answer is all there is (the
/// replication connection's ErrorResponse).
impl std::error::Error for ServerError {}

impl ServerError {
    /// What an error says: from the first tokio-postgres error or server answer in its chain,
    /// else its innermost cause, with a `[XXXXX]` SQLSTATE prefix if there is one.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> ServerError {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut innermost = e;
        while let Some(c) = cur {
            if let Some(pg) = c.downcast_ref::<tokio_postgres::Error>() {
                return ServerError::of_pg(pg);
            }
            if let Some(s) = c.downcast_ref::<ServerError>() {
                return s.clone();
            }
            innermost = c;
            cur = c.source();
        }
        let message = innermost.to_string();
        ServerError { sqlstate: bracketed_sqlstate(&message).map(str::to_string), message, detail: None }
    }

    /// What a tokio-postgres error says.
    pub fn of_pg(e: &tokio_postgres::Error) -> ServerError {
        match e.as_db_error() {
            Some(db) => ServerError {
                sqlstate: Some(db.code().code().to_string()),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
            },
            None => ServerError { sqlstate: None, message: chain(e), detail: None },
        }
    }
}

/// An error and its sources as one line, `outer: inner: innermost`, leaving out a source whose
/// text its parent already contains.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// The SQLSTATE a message carries as a `[XXXXX] ` prefix (how `pg_walstream` reports server
/// errors of the replication connection).
pub fn bracketed_sqlstate(message: &str) -> Option<&str> {
    let start = message.find('[')?;
    let code = message.get(start + 1..start + 6)?;
    let ok = message.get(start + 6..start + 7) == Some("]") && code.chars().all(|c| c.is_ascii_alphanumeric());
    ok.then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classification table the issue fixes: what retries, what stops.
    #[test]
    fn sqlstate_classification_table() {
        let table: &[(&str, ErrorKind, bool)] = &[
            // connection exceptions: retry
            ("08000", ErrorKind::Connection, true),
            ("08003", ErrorKind::Connection, true),
            ("08006", ErrorKind::Connection, true),
            ("08001", ErrorKind::Connection, true),
            ("08P01", ErrorKind::Connection, true),
            // shutdown / restart: retry
            ("57P01", ErrorKind::Shutdown, true),
            ("57P02", ErrorKind::Shutdown, true),
            ("57P03", ErrorKind::Shutdown, true),
            // serialization failure, deadlock: retry
            ("40001", ErrorKind::Conflict, true),
            ("40P01", ErrorKind::Conflict, true),
            // insufficient resources: retry
            ("53000", ErrorKind::Resources, true),
            ("53100", ErrorKind::Resources, true),
            ("53200", ErrorKind::Resources, true),
            ("53300", ErrorKind::Resources, true),
            // data exceptions and integrity violations: stop
            ("22001", ErrorKind::Data, false),
            ("22P02", ErrorKind::Data, false),
            ("22003", ErrorKind::Data, false),
            ("23505", ErrorKind::Data, false),
            ("23503", ErrorKind::Data, false),
            ("23502", ErrorKind::Data, false),
            ("23514", ErrorKind::Data, false),
            ("23P01", ErrorKind::Data, false),
            // syntax error or access rule violation: stop
            ("42P01", ErrorKind::Schema, false),
            ("42703", ErrorKind::Schema, false),
            ("42804", ErrorKind::Schema, false),
            ("42501", ErrorKind::Schema, false),
            ("42601", ErrorKind::Schema, false),
            // refused login, missing database: stop (waiting does not fix a connection string)
            ("28P01", ErrorKind::Access, false),
            ("28000", ErrorKind::Access, false),
            ("3D000", ErrorKind::Access, false),
            // everything else: retried (and escalated past the limit)
            ("40002", ErrorKind::Other, true),
            ("57014", ErrorKind::Other, true),
            ("55006", ErrorKind::Other, true),
            ("25P02", ErrorKind::Other, true),
            ("XX000", ErrorKind::Other, true),
            ("", ErrorKind::Other, true),
        ];
        for &(code, kind, transient) in table {
            assert_eq!(ErrorKind::from_sqlstate(code), kind, "{code}");
            assert_eq!(kind.is_transient(), transient, "{code}");
        }
    }

    #[test]
    fn sqlstate_in_brackets() {
        assert_eq!(bracketed_sqlstate("Transient connection error: [57P01] terminating connection"), Some("57P01"));
        assert_eq!(
            bracketed_sqlstate("Replication slot error: [42704] replication slot \"x\" does not exist"),
            Some("42704")
        );
        assert_eq!(bracketed_sqlstate("Protocol parsing error: short read"), None);
        assert_eq!(bracketed_sqlstate("[abc]"), None);
    }

    #[test]
    fn chain_skips_repeated_text() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}

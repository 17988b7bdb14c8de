//! Failures of the walsender session and what each means: retry, or stop with a message that
//! names the server and what to change (a refused login, TLS or privilege, like the normal
//! connections' [`crate::runner::LockFailed`]).

use std::io;
use std::time::Duration;

use crate::connect::conninfo::{describe_endpoint, ConnInfoError};
use crate::connect::tls::{TlsError, TlsSetupError};
use crate::error::{access_advice, ErrorKind, ServerError};

/// Failures of the walsender session. [`WalSenderError::kind`] says whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum WalSenderError {
    /// The connection string does not parse.
    #[error("connection string")]
    Config(#[source] ConnInfoError),
    /// The connection string's TLS files could not be loaded.
    #[error("TLS setup of the replication connection")]
    TlsSetup(#[source] Box<TlsSetupError>),
    /// TLS with the server failed (names the host and the sslmode).
    #[error("replication connection")]
    Tls(#[source] Box<TlsError>),
    /// The server asks for a password and the connection string has none.
    #[error("the server asks for a password; put one in the connection string")]
    NoPassword,
    /// Something this client does not speak (TLS, an authentication method).
    #[error("{0}")]
    Unsupported(String),
    /// No host accepted the connection.
    #[error("connecting to {target}")]
    Connect {
        /// The last host tried.
        target: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("replication connection")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("the server closed the replication connection")]
    Closed,
    /// The server ended the COPY stream.
    #[error("the server ended the replication stream")]
    StreamEnded,
    /// The server reported an error.
    #[error("the walsender reported an error")]
    Server(#[source] ServerError),
    /// A message we did not expect, or a malformed one.
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// Nothing arrived although we asked the server for a reply: the connection is dead or
    /// stuck. Reconnecting (from the checkpoint) is the cure.
    #[error("nothing received from the walsender for {0:?} although a reply was requested")]
    Silent(Duration),
    /// The server refused the session at startup (an ErrorResponse before ReadyForQuery): a
    /// refused login, a missing database, a role without the `REPLICATION` attribute, or the
    /// server starting or shutting down.
    #[error("the server refused the replication session")]
    Startup(#[source] ServerError),
    /// The connection was refused for a reason waiting does not fix ([`ErrorKind::Access`]): the
    /// message names the server (never the password) and what to change.
    #[error("the replication connection to {endpoint} was refused; {advice}; the error")]
    Refused {
        /// Host(s), port, database and user, from the connection string.
        endpoint: String,
        /// What to change.
        advice: String,
        /// The failure.
        #[source]
        source: Box<WalSenderError>,
    },
}

impl WalSenderError {
    /// Retry or stop: by the server's SQLSTATE, else a connection failure (retried).
    pub fn kind(&self) -> ErrorKind {
        match self {
            WalSenderError::Server(e) => {
                e.sqlstate.as_deref().map(ErrorKind::from_sqlstate).unwrap_or(ErrorKind::Other)
            }
            // at startup, a missing privilege is a refused login: only roles with REPLICATION
            // may start a walsender (42501)
            WalSenderError::Startup(e) => match e.sqlstate.as_deref() {
                Some(c) if c.starts_with("42") => ErrorKind::Access,
                Some(c) => ErrorKind::from_sqlstate(c),
                None => ErrorKind::Other,
            },
            WalSenderError::Refused { .. } | WalSenderError::NoPassword => ErrorKind::Access,
            WalSenderError::Connect { .. }
            | WalSenderError::Io(_)
            | WalSenderError::Closed
            | WalSenderError::StreamEnded
            | WalSenderError::Silent(_) => ErrorKind::Connection,
            WalSenderError::Tls(e) if e.is_transient() => ErrorKind::Connection,
            WalSenderError::TlsSetup(e) if e.is_transient() => ErrorKind::Connection,
            // a certificate rejected, TLS refused by the server under require / verify-*, a
            // certificate or key file that does not parse: like the normal connections
            WalSenderError::Tls(_) | WalSenderError::TlsSetup(_) => ErrorKind::Access,
            WalSenderError::Config(_) | WalSenderError::Unsupported(_) | WalSenderError::Protocol(_) => {
                ErrorKind::Other
            }
        }
    }
}

/// A connect failure that waiting does not fix, as [`WalSenderError::Refused`]: with the
/// server's host, port, database and user and what to change. Other failures are left as they
/// are (retried).
pub(super) fn refused(conn: &str, e: WalSenderError) -> WalSenderError {
    if e.kind() != ErrorKind::Access {
        return e;
    }
    let (origin, fix) = ("the connection string", "then start cdc-sync again");
    let tls = matches!(e, WalSenderError::Tls(_) | WalSenderError::TlsSetup(_));
    let sqlstate = match &e {
        WalSenderError::Startup(s) => s.sqlstate.clone(),
        _ => None,
    };
    let advice = match (access_advice(sqlstate.as_deref(), tls, origin, fix), sqlstate.as_deref()) {
        (Some(a), _) => a,
        (None, Some(c)) if c.starts_with("42") => format!(
            "the role may not start a replication session: give it the REPLICATION attribute (ALTER ROLE ... \
             REPLICATION) or use a role that has it in {origin}, {fix}"
        ),
        _ if matches!(e, WalSenderError::NoPassword) => format!("put the password in {origin}, {fix}"),
        _ => format!("waiting will not fix this: fix {origin}, {fix}"),
    };
    let endpoint = describe_endpoint(conn);
    WalSenderError::Refused { endpoint, advice, source: Box::new(e) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::conninfo::SslMode;
    use crate::connect::tls::TlsFailure;

    const CONN: &str = "host=db1 port=6543 dbname=app user=cdc password=s3cret sslmode=verify-full";

    fn startup(code: &str) -> WalSenderError {
        WalSenderError::Startup(ServerError { sqlstate: Some(code.into()), message: "no".into(), detail: None })
    }

    fn tls(failure: TlsFailure) -> WalSenderError {
        WalSenderError::Tls(Box::new(TlsError { host: "db1".into(), mode: SslMode::VerifyFull, failure }))
    }

    /// The replication connection's failures at connect: what stops (access) and what retries.
    #[test]
    fn connect_failures_are_classified_like_the_normal_connections() {
        let table: Vec<(WalSenderError, ErrorKind)> = vec![
            (startup("28P01"), ErrorKind::Access),
            (startup("28000"), ErrorKind::Access),
            (startup("3D000"), ErrorKind::Access),
            (startup("42501"), ErrorKind::Access),
            (startup("57P03"), ErrorKind::Shutdown),
            (startup("57P01"), ErrorKind::Shutdown),
            (startup("53300"), ErrorKind::Resources),
            (WalSenderError::NoPassword, ErrorKind::Access),
            (tls(TlsFailure::Refused), ErrorKind::Access),
            (tls(TlsFailure::Protocol('E')), ErrorKind::Access),
            (tls(TlsFailure::Io(io::Error::from(io::ErrorKind::ConnectionReset))), ErrorKind::Connection),
            (
                WalSenderError::Connect {
                    target: "db1:6543".into(),
                    source: io::Error::from(io::ErrorKind::ConnectionRefused),
                },
                ErrorKind::Connection,
            ),
            (WalSenderError::Io(io::Error::from(io::ErrorKind::ConnectionReset)), ErrorKind::Connection),
        ];
        for (e, kind) in table {
            assert_eq!(e.kind(), kind, "{e:?}");
            let wrapped = refused(CONN, e);
            assert_eq!(wrapped.kind(), kind, "{wrapped:?}");
            assert_eq!(matches!(wrapped, WalSenderError::Refused { .. }), kind == ErrorKind::Access, "{wrapped:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_server_and_what_to_change_never_the_password() {
        let text = |e| crate::error::chain(&refused(CONN, e));
        let t = text(tls(TlsFailure::Refused));
        assert!(t.starts_with("the replication connection to host db1 port 6543 database app user cdc was refused; TLS failed: fix sslmode / sslrootcert"), "{t}");
        assert!(t.contains("the server does not accept TLS connections"), "{t}");
        let t = text(startup("28P01"));
        assert!(t.contains("the server refused the password: fix the user or password"), "{t}");
        assert!(t.contains("[28P01] no"), "{t}");
        let t = text(startup("3D000"));
        assert!(t.contains("the database does not exist: fix dbname"), "{t}");
        let t = text(startup("42501"));
        assert!(t.contains("REPLICATION attribute"), "{t}");
        for e in [startup("28000"), WalSenderError::NoPassword, tls(TlsFailure::Refused)] {
            assert!(!text(e).contains("s3cret"));
        }
    }
}

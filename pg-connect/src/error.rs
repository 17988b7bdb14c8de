//! Why a connection failed and what to change, for messages that name the server (host, port,
//! database, user: [`describe_endpoint`]) and never the password or the connection string.
//! cdc-sync, the gateway's rollout store, legacy-monolith and the kit say the same things.

use crate::conninfo::describe_endpoint;
use crate::tls::{TlsError, TlsFailure};

/// What to change after a connection was refused for a reason waiting does not fix, for a
/// message that names the server: `origin` is where the connection string came from (`source.url`,
/// `$VAR`, "the connection string"), `fix` what to do afterwards. `tls`: the failure was TLS's.
/// `None` when the SQLSTATE is not a refused login or a missing database.
pub fn access_advice(sqlstate: Option<&str>, tls: bool, origin: &str, fix: &str) -> Option<String> {
    if tls {
        return Some(format!(
            "TLS failed: fix sslmode / sslrootcert / sslcert / sslkey in {origin} (or the server's certificate), {fix}"
        ));
    }
    match sqlstate {
        Some("28P01") => Some(format!("the server refused the password: fix the user or password in {origin}, {fix}")),
        Some(c) if c.starts_with("28") => Some(format!(
            "the server refused the login: allow this host, user and database in the server's pg_hba.conf (or \
             the role to log in), or fix the user in {origin}, {fix}"
        )),
        Some("3D000") => Some(format!("the database does not exist: fix dbname in {origin}, {fix}")),
        _ => None,
    }
}

/// The TLS failure in an error's chain, if any.
pub fn tls_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a TlsError> {
    let mut cur = e.source();
    while let Some(s) = cur {
        if let Some(t) = s.downcast_ref::<TlsError>() {
            return Some(t);
        }
        cur = s.source();
    }
    None
}

/// What to change after `e` (a failed connection), more precisely than [`access_advice`] where
/// the cause is known: a server that accepts only TLS while the string says `sslmode=disable`,
/// a certificate refused under `verify-ca` / `verify-full`, a server that refuses TLS. `None`
/// when waiting may fix it (the server is down or unreachable, the network failed).
pub fn connect_advice(e: &tokio_postgres::Error, origin: &str, fix: &str) -> Option<String> {
    if let Some(tls) = tls_source(e) {
        return match &tls.failure {
            TlsFailure::Io(_) => None,
            TlsFailure::Certificate(_) => Some(format!(
                "the server's certificate was refused under sslmode={}: name the CA that signed it with \
                 sslrootcert=FILE in {origin} (or connect to a host name the certificate holds), {fix}",
                tls.mode
            )),
            TlsFailure::Refused => Some(format!(
                "the server does not accept TLS: turn ssl on at the server, or set sslmode=prefer or disable in \
                 {origin} (only on a trusted network), {fix}"
            )),
            _ => access_advice(None, true, origin, fix),
        };
    }
    let db = e.as_db_error();
    // pg_hba.conf has only `hostssl` lines for this client: "no pg_hba.conf entry for host ...,
    // no encryption"
    if db.is_some_and(|d| d.code().code().starts_with("28") && d.message().ends_with("no encryption")) {
        return Some(format!(
            "the server accepts only TLS connections from here: set sslmode=verify-full and sslrootcert=FILE (the \
             server's CA), or at least sslmode=require, in {origin}, {fix}"
        ));
    }
    access_advice(db.map(|d| d.code().code()), false, origin, fix)
}

/// A connection that failed, with the server it was for and what to change. Shows host, port,
/// database and user, never the password or the connection string; the cause is the source.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL {endpoint} ({origin}){}", match advice {
    Some(a) => format!("; {a}"),
    None => String::new(),
})]
pub struct ConnectError {
    /// Host(s), port, database and user, from the connection string.
    pub endpoint: String,
    /// Where the connection string came from (`$DATABASE_URL`, a config key).
    pub origin: String,
    /// What to change, when waiting will not fix it ([`connect_advice`]).
    pub advice: Option<String>,
    /// The failure.
    #[source]
    pub source: tokio_postgres::Error,
}

impl ConnectError {
    /// `source`, for the connection string `conn` from `origin`; `fix` says what to do after
    /// changing it (e.g. "then restart the service").
    pub fn new(conn: &str, origin: &str, fix: &str, source: tokio_postgres::Error) -> ConnectError {
        ConnectError::at(describe_endpoint(conn), origin, fix, source)
    }

    /// As [`ConnectError::new`], with the endpoint already described ([`describe_endpoint`]),
    /// for callers that keep no copy of the connection string.
    pub fn at(endpoint: String, origin: &str, fix: &str, source: tokio_postgres::Error) -> ConnectError {
        ConnectError { endpoint, origin: origin.to_string(), advice: connect_advice(&source, origin, fix), source }
    }

    /// Whether waiting will not fix it (a refused login or certificate, TLS refused or required,
    /// a missing database): the string or the server's settings must change.
    pub fn is_permanent(&self) -> bool {
        self.advice.is_some()
    }

    /// The message with its causes, on one line (for logs and errors that keep no source).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }
}

//! Connecting to PostgreSQL the way libpq users expect, for every strangler component (cdc-sync,
//! the gateway's rollout store, legacy-monolith, the extracted services' kit): a libpq connection
//! string (key=value or `postgres://` URL) whose `sslmode` (disable, prefer — the default —,
//! require, verify-ca, verify-full), `sslrootcert`, `sslcert` and `sslkey` are honoured over
//! rustls, which tokio-postgres alone does not do (it knows only disable/prefer/require and
//! checks no certificate).
//!
//! - [`conninfo`] splits a connection string into its TLS parameters and the rest;
//! - [`tls`] builds the rustls config and speaks the SSLRequest ([`tls::MakePgTls`] is the
//!   tokio-postgres / deadpool-postgres hook);
//! - [`error`] turns a failed connection into a message that names host, port, database and user
//!   and what to change, never the password or the string itself.
//!
//! [`prepare`] is the one entry point for clients that build their own pool or tweak the
//! `tokio_postgres::Config`; [`connect`] / [`connect_raw`] open one session.

pub mod conninfo;
pub mod error;
pub mod tls;

pub use conninfo::{describe_endpoint, ConnInfo, ConnInfoError, RootCerts, SslMode, TlsParams};
pub use error::{access_advice, connect_advice, tls_source, ConnectError};
pub use tls::{MakePgTls, PgStream, TlsError, TlsFailure, TlsSetup, TlsSetupError};

use tokio_postgres::config::{Host, SslMode as PgSslMode, SslNegotiation};
use tokio_postgres::{Client, Config, Connection, Socket};

/// A tokio-postgres connection over this crate's TLS.
pub type PgConnection = Connection<Socket, PgStream<Socket>>;

/// A connection string made ready to connect: the tokio-postgres config (its TLS negotiation
/// handed to our hook) and the hook, which loads the certificate files at each new connection
/// (so a pool picks up a renewed certificate). Errors name the bad parameter, never the string.
pub fn prepare(conn: &str) -> Result<(Config, MakePgTls), ConnInfoError> {
    let info = ConnInfo::parse(conn)?;
    let mut config = info.config;
    hand_tls_to_hook(&mut config, info.tls.mode);
    Ok((config, MakePgTls::per_connection(info.tls)))
}

/// Connect a plain tokio-postgres client, driving the connection on a task.
pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = connect_raw(conn).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// Connect a tokio-postgres client with the TLS the connection string asks for; the caller
/// drives the connection.
pub async fn connect_raw(conn: &str) -> Result<(Client, PgConnection), tokio_postgres::Error> {
    let (config, tls) = session(conn)?;
    config.connect(tls).await
}

/// The tokio-postgres config and TLS hook for a connection string. A TLS part that does not
/// parse or load (a config check reports the former at load time, see [`check_conninfo`]) fails
/// the connection attempt with a [`TlsError`] naming the host.
fn session(conn: &str) -> Result<(Config, MakePgTls), tokio_postgres::Error> {
    let (mut config, mode, setup) = match ConnInfo::parse(conn) {
        Ok(info) => {
            let setup = TlsSetup::new(&info.tls);
            (info.config, info.tls.mode, setup)
        }
        Err(ConnInfoError::Postgres(e)) => return Err(e),
        Err(other) => (conn.parse::<Config>()?, SslMode::Require, Err(TlsSetupError::ConnInfo(other))),
    };
    hand_tls_to_hook(&mut config, mode);
    Ok((config, MakePgTls::new(mode, setup)))
}

/// Sets `config` up for [`MakePgTls`]: plain text for `disable` and Unix sockets, else TLS
/// negotiated by our hook.
fn hand_tls_to_hook(config: &mut Config, mode: SslMode) {
    if config.get_hosts().is_empty() {
        // only hostaddr: the addresses are the names the certificate is checked against
        for a in config.get_hostaddrs().to_vec() {
            config.host(a.to_string());
        }
    }
    // libpq never uses TLS over a Unix-domain socket
    let all_unix = !config.get_hosts().is_empty() && config.get_hosts().iter().all(|h| !matches!(h, Host::Tcp(_)));
    if mode == SslMode::Disable || all_unix {
        config.ssl_mode(PgSslMode::Disable);
    } else {
        // see `tls`: our hook sends the SSLRequest itself
        config.ssl_mode(PgSslMode::Require).ssl_negotiation(SslNegotiation::Direct);
    }
}

/// Check a connection string's TLS parameters without connecting (not the files they name;
/// the rest of the string is left to the connection). The message never quotes the string.
pub fn check_conninfo(conn: &str) -> Result<(), String> {
    match ConnInfo::parse(conn) {
        Ok(_) | Err(ConnInfoError::Syntax(_) | ConnInfoError::Postgres(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_negotiate_tls_through_our_hook() {
        let (c, _) = session("host=db.example user=u sslmode=verify-full").unwrap();
        assert_eq!((c.get_ssl_mode(), c.get_ssl_negotiation()), (PgSslMode::Require, SslNegotiation::Direct));
        let (c, _) = session("postgres://u@db.example/d").unwrap();
        assert_eq!(c.get_ssl_mode(), PgSslMode::Require, "prefer, the default, also goes through the hook");
        let (c, _) = session("host=db.example sslmode=disable").unwrap();
        assert_eq!(c.get_ssl_mode(), PgSslMode::Disable);
        let (c, _) = session("host=/run/postgresql sslmode=require").unwrap();
        assert_eq!(c.get_ssl_mode(), PgSslMode::Disable, "no TLS over a Unix socket, as in libpq");
        let (c, _) = session("hostaddr=127.0.0.1 sslmode=verify-full").unwrap();
        assert_eq!(c.get_hosts(), &[Host::Tcp("127.0.0.1".into())], "the address is the name checked");
        assert!(session("host=h unknown=1").is_err());
        assert!(check_conninfo("host=h password=pw sslmode=bogus").unwrap_err().contains("sslmode \"bogus\""));
        assert!(!check_conninfo("host=h password=pw sslmode=bogus").unwrap_err().contains("pw"));
    }

    #[test]
    fn prepare_fails_early_and_keeps_the_mode() {
        let (c, tls) = prepare("postgres://u:pw@db.example:6432/d?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!((c.get_ssl_mode(), tls.mode()), (PgSslMode::Require, SslMode::VerifyFull));
        assert_eq!(c.get_ports(), &[6432]);
        let (c, tls) = prepare("host=localhost dbname=d").unwrap();
        assert_eq!((c.get_ssl_mode(), tls.mode()), (PgSslMode::Require, SslMode::Prefer));
        let e = prepare("host=h password=secret sslmode=verify").unwrap_err().to_string();
        assert!(e.contains("sslmode \"verify\"") && !e.contains("secret"), "{e}");
        assert!(matches!(prepare("host=h nonsense=1"), Err(ConnInfoError::Postgres(_))));
    }
}

//! Connecting to PostgreSQL: plain sessions (apply, checkpoints, snapshot copies, the lock,
//! verify, status, admin SQL) through [`connect`], and the TLS every session uses, the walsender's
//! included: [`conninfo`] reads a connection string's TLS parameters, [`tls`] builds the rustls
//! config and speaks the SSLRequest. Used by `source` and `apply` alike.

pub mod conninfo;
pub mod tls;

use tokio_postgres::config::{Host, SslMode as PgSslMode, SslNegotiation};
use tokio_postgres::{Client, Config, Connection, Socket};

use conninfo::{ConnInfo, ConnInfoError, SslMode};
use tls::{MakePgTls, PgStream, TlsSetup, TlsSetupError};

/// A tokio-postgres connection over cdc-sync's TLS.
pub type PgConnection = Connection<Socket, PgStream<Socket>>;

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
/// parse or load (config validation reports the former at load time) fails the connection
/// attempt with a [`tls::TlsError`] naming the host.
fn session(conn: &str) -> Result<(Config, MakePgTls), tokio_postgres::Error> {
    let (mut config, mode, setup) = match ConnInfo::parse(conn) {
        Ok(info) => {
            let setup = TlsSetup::new(&info.tls);
            (info.config, info.tls.mode, setup)
        }
        Err(ConnInfoError::Postgres(e)) => return Err(e),
        Err(other) => (conn.parse::<Config>()?, SslMode::Require, Err(TlsSetupError::ConnInfo(other))),
    };
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
    Ok((config, MakePgTls::new(mode, setup)))
}

/// Check a connection string's TLS parameters without connecting (not the files they name;
/// the rest of the string is left to the connection, as before TLS). The message never quotes
/// the string.
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
}

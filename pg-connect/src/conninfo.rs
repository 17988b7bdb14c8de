//! A libpq connection string (key=value or `postgres://` URL) split in two: the TLS parameters
//! this crate handles itself — `sslmode` with all of libpq's modes, `sslrootcert`, `sslcert`,
//! `sslkey` — and the rest, which tokio-postgres parses (it knows only `disable`, `prefer` and
//! `require`, and no certificate files). Errors never quote the string: it may hold a password.

use std::fmt;
use std::path::PathBuf;

/// libpq's `sslmode`, less `allow` (plain text first), which is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, plain text when it refuses; the certificate is not checked.
    /// libpq's default, and ours.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked (unless `sslrootcert` is given, which makes
    /// it `verify-ca`, as in libpq).
    Require,
    /// TLS, and the server's certificate chains to a trusted root.
    VerifyCa,
    /// `verify-ca`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, ConnInfoError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err(ConnInfoError::Allow),
            other => return Err(ConnInfoError::SslMode(other.to_string())),
        })
    }

    /// Whether the session must be encrypted (no plain-text fallback).
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The operating system's store (`sslrootcert` absent, or `sslrootcert=system` as in
    /// PostgreSQL 16's libpq). Not libpq's default `~/.postgresql/root.crt`.
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

/// The TLS half of a connection string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsParams {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`; `None` = not given (system roots).
    pub root_cert: Option<RootCerts>,
    /// `sslcert` and `sslkey`: a client certificate (PEM, leaf first) and its key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A connection string that is not usable. Never quotes the string.
#[derive(Debug, thiserror::Error)]
pub enum ConnInfoError {
    /// An `sslmode` we do not know.
    #[error("sslmode {0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    /// `sslmode=allow`.
    #[error("sslmode \"allow\" (plain text first) is not supported: use prefer, or require and above")]
    Allow,
    /// `sslcert` without `sslkey` or the other way round.
    #[error("sslcert and sslkey go together: the connection string names only {0}")]
    HalfClientCert(&'static str),
    /// `sslnegotiation` (PostgreSQL 17's direct TLS).
    #[error("sslnegotiation is not supported (only the SSLRequest negotiation every server speaks)")]
    Negotiation,
    /// The key=value syntax is broken (or a URL parameter).
    #[error("connection string syntax: {0}")]
    Syntax(&'static str),
    /// A libpq environment variable (used for a parameter the string leaves out) has a value
    /// that is not usable.
    #[error("environment variable {0} is not {1}")]
    Env(&'static str, &'static str),
    /// tokio-postgres refused the rest.
    #[error("connection string")]
    Postgres(#[source] tokio_postgres::Error),
}

/// A parsed connection string.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Everything but TLS, as tokio-postgres parsed it (its `sslmode` left at `prefer`; the
    /// connect layer sets what it needs).
    pub config: tokio_postgres::Config,
    /// The TLS parameters.
    pub tls: TlsParams,
}

/// libpq's environment variables for the parameters a connection string leaves out, and the
/// parameter each one stands for (`PGPASSFILE`/`~/.pgpass`, `PGSERVICE` and the rest are not
/// read).
pub const ENV_DEFAULTS: [(&str, &str); 12] = [
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGAPPNAME", "application_name"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
];

impl ConnInfo {
    /// Parse a key=value connection string or a `postgres://` / `postgresql://` URL. As in libpq,
    /// a parameter the string leaves out is taken from its environment variable when set
    /// (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, `PGSSLROOTCERT`,
    /// `PGSSLCERT`, `PGSSLKEY`, ... see [`ENV_DEFAULTS`]); the string always wins.
    pub fn parse(conn: &str) -> Result<ConnInfo, ConnInfoError> {
        Self::parse_with_env(conn, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`Self::parse`] with the environment given (tests, or a caller that wants none: `|_| None`).
    pub fn parse_with_env(conn: &str, env: impl Fn(&str) -> Option<String>) -> Result<ConnInfo, ConnInfoError> {
        let (rest, mut pairs) = split(conn)?;
        for (var, key) in ENV_DEFAULTS.into_iter().filter(|(_, key)| key.starts_with("ssl")) {
            if !pairs.iter().any(|(k, _)| k == key) {
                pairs.extend(env(var).map(|v| (key.to_string(), v)));
            }
        }
        let mut tls = TlsParams::default();
        let (mut cert, mut key) = (None, None);
        for (k, v) in pairs {
            match k.as_str() {
                "sslmode" => tls.mode = SslMode::parse(&v)?,
                "sslrootcert" if v == "system" => tls.root_cert = Some(RootCerts::System),
                "sslrootcert" => tls.root_cert = Some(RootCerts::File(v.into())),
                "sslcert" => cert = Some(PathBuf::from(v)),
                "sslkey" => key = Some(PathBuf::from(v)),
                "sslnegotiation" => return Err(ConnInfoError::Negotiation),
                _ => unreachable!("split returns TLS keys only"),
            }
        }
        tls.client = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(ConnInfoError::HalfClientCert("sslcert")),
            (None, Some(_)) => return Err(ConnInfoError::HalfClientCert("sslkey")),
        };
        let mut config: tokio_postgres::Config = rest.parse().map_err(ConnInfoError::Postgres)?;
        env_defaults(&mut config, &env)?;
        Ok(ConnInfo { config, tls })
    }
}

/// Fills what `config` lacks from libpq's environment variables (the TLS ones are read with the
/// other TLS keys). A bad value is an error naming the variable, never its value.
fn env_defaults(
    config: &mut tokio_postgres::Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConnInfoError> {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = env("PGHOST") {
            for h in hosts.split(',') {
                config.host(h.trim());
            }
        }
        if let Some(addrs) = env("PGHOSTADDR") {
            for a in addrs.split(',') {
                config.hostaddr(a.trim().parse().map_err(|_| ConnInfoError::Env("PGHOSTADDR", "an IP address"))?);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = env("PGPORT") {
            for p in ports.split(',') {
                config.port(p.trim().parse().map_err(|_| ConnInfoError::Env("PGPORT", "a port number"))?);
            }
        }
    }
    if config.get_dbname().is_none() {
        if let Some(v) = env("PGDATABASE") {
            config.dbname(v);
        }
    }
    if config.get_user().is_none() {
        if let Some(v) = env("PGUSER") {
            config.user(v);
        }
    }
    if config.get_password().is_none() {
        if let Some(v) = env("PGPASSWORD") {
            config.password(v);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(v) = env("PGAPPNAME") {
            config.application_name(v);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(v) = env("PGCONNECT_TIMEOUT") {
            let secs: u64 = v.trim().parse().map_err(|_| ConnInfoError::Env("PGCONNECT_TIMEOUT", "whole seconds"))?;
            // libpq: zero, or no value, means wait indefinitely
            if secs > 0 {
                config.connect_timeout(std::time::Duration::from_secs(secs.max(2)));
            }
        }
    }
    Ok(())
}

const TLS_KEYS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "sslnegotiation"];

/// The string without the TLS keys (same form as given), and the TLS pairs, decoded.
fn split(conn: &str) -> Result<(String, Vec<(String, String)>), ConnInfoError> {
    let t = conn.trim();
    if t.starts_with("postgres://") || t.starts_with("postgresql://") {
        let Some((base, query)) = t.split_once('?') else { return Ok((t.to_string(), vec![])) };
        let mut kept = Vec::new();
        let mut tls = Vec::new();
        for p in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').ok_or(ConnInfoError::Syntax("a URL parameter without '='"))?;
            let key = percent_decode(k)?;
            if TLS_KEYS.contains(&key.as_str()) {
                tls.push((key, percent_decode(v)?));
            } else {
                kept.push(p);
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, tls));
    }
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for (k, v) in key_values(t)? {
        if TLS_KEYS.contains(&k.as_str()) {
            tls.push((k, v));
        } else {
            kept.push(format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")));
        }
    }
    Ok((kept.join(" "), tls))
}

/// libpq's key=value syntax: `key = value` pairs split by whitespace; a value is single-quoted
/// or bare, backslash escapes the next character in either.
fn key_values(s: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = it.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if it.peek().is_some() {
                return Err(ConnInfoError::Syntax("'=' without a key"));
            }
            return Ok(out);
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        if it.next() != Some('=') {
            return Err(ConnInfoError::Syntax("a key without '=' and a value"));
        }
        while it.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next() {
                    None => return Err(ConnInfoError::Syntax("an unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => value.extend(it.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = it.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return Err(ConnInfoError::Syntax("a key without a value"));
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String, ConnInfoError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.ok_or(ConnInfoError::Syntax("a bad %-escape in a URL parameter"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnInfoError::Syntax("a URL parameter that is not UTF-8"))
}

/// Host(s), port(s), database and user of a connection string, for messages: never the
/// password or the string itself.
pub fn describe_endpoint(conn: &str) -> String {
    use tokio_postgres::config::Host;
    let Ok(info) = ConnInfo::parse(conn) else {
        return "(connection string does not parse)".into();
    };
    let c = &info.config;
    let mut hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if hosts.is_empty() {
        hosts = c.get_hostaddrs().iter().map(|a| a.to_string()).collect();
    }
    let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
    let mut out = format!("host {}", if hosts.is_empty() { "localhost".into() } else { hosts.join(",") });
    if !ports.is_empty() {
        out.push_str(&format!(" port {}", ports.join(",")));
    }
    if let Some(db) = c.get_dbname() {
        out.push_str(&format!(" database {db}"));
    }
    if let Some(u) = c.get_user() {
        out.push_str(&format!(" user {u}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_form_keeps_the_rest_exactly() {
        let c = ConnInfo::parse(
            "host=db.example port = 6432 user=u password='p w\\'x' dbname=d sslmode=verify-full \
             sslrootcert='/etc/ca dir/ca.pem' sslcert=/c.pem sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_cert, Some(RootCerts::File("/etc/ca dir/ca.pem".into())));
        assert_eq!(c.tls.client, Some(("/c.pem".into(), "/k.pem".into())));
        assert_eq!(c.config.get_password(), Some(&b"p w'x"[..]));
        assert_eq!(c.config.get_ports(), &[6432]);
        assert_eq!(c.config.get_dbname(), Some("d"));
    }

    #[test]
    fn url_form() {
        let c = ConnInfo::parse(
            "postgres://u:pw@h1:5432,h2:5433/d?sslmode=verify-ca&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyCa);
        assert_eq!(c.tls.root_cert, Some(RootCerts::File("/tmp/ca.pem".into())));
        assert_eq!(c.config.get_application_name(), Some("x"));
        assert_eq!(c.config.get_hosts().len(), 2);
        let plain = ConnInfo::parse("postgresql://u@h/d").unwrap();
        assert_eq!(plain.tls, TlsParams::default());
        let system = ConnInfo::parse("postgres://h/d?sslrootcert=system&sslmode=require").unwrap();
        assert_eq!((system.tls.mode, system.tls.root_cert), (SslMode::Require, Some(RootCerts::System)));
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn environment_fills_what_the_string_leaves_out() {
        let vars = [
            ("PGHOST", "db1,db2"),
            ("PGPORT", "6432,6433"),
            ("PGDATABASE", "envdb"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGAPPNAME", "envapp"),
            ("PGCONNECT_TIMEOUT", "7"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/env/ca.pem"),
            ("PGSSLCERT", "/env/c.pem"),
            ("PGSSLKEY", "/env/k.pem"),
        ];
        let c = ConnInfo::parse_with_env("", env(&vars)).unwrap();
        assert_eq!(c.config.get_hosts().len(), 2);
        assert_eq!(c.config.get_ports(), &[6432, 6433]);
        assert_eq!(c.config.get_dbname(), Some("envdb"));
        assert_eq!(c.config.get_user(), Some("envuser"));
        assert_eq!(c.config.get_password(), Some(&b"envpw"[..]));
        assert_eq!(c.config.get_application_name(), Some("envapp"));
        assert_eq!(c.config.get_connect_timeout(), Some(&std::time::Duration::from_secs(7)));
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_cert, Some(RootCerts::File("/env/ca.pem".into())));
        assert_eq!(c.tls.client, Some(("/env/c.pem".into(), "/env/k.pem".into())));

        // the string wins, parameter by parameter, in both forms
        for s in [
            "host=h port=5432 dbname=d user=u password=p application_name=a connect_timeout=3 \
             sslmode=disable sslrootcert=/ca sslcert=/c sslkey=/k",
            "postgres://u:p@h:5432/d?application_name=a&connect_timeout=3&sslmode=disable&sslrootcert=/ca&sslcert=/c&sslkey=/k",
        ] {
            let c = ConnInfo::parse_with_env(s, env(&vars)).unwrap();
            assert_eq!(c.config.get_hosts(), &[tokio_postgres::config::Host::Tcp("h".into())], "{s}");
            assert_eq!(c.config.get_ports(), &[5432]);
            assert_eq!((c.config.get_dbname(), c.config.get_user()), (Some("d"), Some("u")));
            assert_eq!(c.config.get_password(), Some(&b"p"[..]));
            assert_eq!(c.config.get_application_name(), Some("a"));
            assert_eq!(c.tls.mode, SslMode::Disable);
            assert_eq!(c.tls.client, Some(("/c".into(), "/k".into())));
        }
        // hostaddr in the string: PGHOST is not added next to it
        let c = ConnInfo::parse_with_env("hostaddr=127.0.0.1", env(&vars)).unwrap();
        assert!(c.config.get_hosts().is_empty());
        // nothing set, nothing added
        let c = ConnInfo::parse_with_env("host=h", |_| None).unwrap();
        assert_eq!((c.config.get_user(), c.tls.mode), (None, SslMode::Prefer));
    }

    #[test]
    fn bad_environment_values_name_the_variable_not_the_value() {
        let e = |k: &str, v: &str| ConnInfo::parse_with_env("host=h", env(&[(k, v)])).unwrap_err().to_string();
        assert_eq!(e("PGPORT", "54x32"), "environment variable PGPORT is not a port number");
        assert_eq!(e("PGCONNECT_TIMEOUT", "soon"), "environment variable PGCONNECT_TIMEOUT is not whole seconds");
        assert_eq!(
            e("PGSSLMODE", "verify"),
            "sslmode \"verify\" is not one of disable, prefer, require, verify-ca, verify-full"
        );
        assert_eq!(e("PGSSLCERT", "/c"), "sslcert and sslkey go together: the connection string names only sslcert");
        let e = ConnInfo::parse_with_env("", env(&[("PGHOSTADDR", "secret-host")])).unwrap_err().to_string();
        assert!(e.contains("PGHOSTADDR") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn errors_name_the_problem_not_the_string() {
        let e = |s: &str| ConnInfo::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("host=h sslmode=verify"),
            "sslmode \"verify\" is not one of disable, prefer, require, verify-ca, verify-full"
        );
        assert!(e("host=h sslmode=allow").contains("not supported"));
        assert_eq!(
            e("host=h password=secret sslcert=/c"),
            "sslcert and sslkey go together: the connection string names only sslcert"
        );
        assert!(!e("host=h password='secret").contains("secret"));
        assert!(e("host=h sslnegotiation=direct").contains("sslnegotiation"));
        assert!(e("postgres://h/d?sslmode").contains("without '='"));
        assert!(matches!(ConnInfo::parse("host=h bogus=1").unwrap_err(), ConnInfoError::Postgres(_)));
    }
}

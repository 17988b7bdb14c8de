//! The `[gateway]` section: listen addresses, the admin token, limits and timeouts, the shadow
//! runtime's settings and the dry-run secret.

use std::time::Duration;

use super::diagnostics::Issues;
use super::raw::{RawAccessLog, RawGateway};
use super::values::Secrets;
use super::values::{addr, dur, int_in};
use crate::shadow::ShadowSettings;
use crate::table::{AccessLogFormat, AccessLogSettings, GatewaySettings};

/// Compiles `[gateway]` (every key optional).
pub(super) fn compile_gateway(issues: &mut Issues<'_>, g: &RawGateway, secrets: Secrets) -> GatewaySettings {
    let admin_token = match (&g.admin_token, &g.admin_token_env) {
        (Some(t), _) if !t.is_empty() => Some(t.clone()),
        (_, Some(var)) => std::env::var(var).ok().filter(|t| !t.is_empty()),
        _ => None,
    };
    let admin_listen = addr(issues, &g.admin_listen, "127.0.0.1:9901");
    // /admin/* can promote, abort and reload, and shows shadow samples (request and answer
    // bodies): open on loopback is a local setup (a warning at start), open to the network is
    // not. Checked where the token is read (not by an offline `check`, which reads no secret).
    if let Some(listen) = g.admin_listen.as_ref().filter(|_| secrets == Secrets::Read) {
        if admin_token.is_none() && !admin_listen.ip().is_loopback() {
            let why = match &g.admin_token_env {
                Some(var) => format!("admin_token_env names ${var}, which is unset or empty"),
                None => "no admin_token or admin_token_env is set".to_string(),
            };
            issues.at(
                listen,
                format!("the admin API would be open on {admin_listen}: {why}"),
                Some("set the token (admin_token_env), or listen on 127.0.0.1".into()),
            );
        }
    }
    GatewaySettings {
        listen: addr(issues, &g.listen, "127.0.0.1:8080"),
        admin_listen,
        admin_token,
        admin_token_env: g.admin_token_env.clone(),
        max_header_bytes: g.max_header_bytes.unwrap_or(16 * 1024),
        client_header_timeout: dur(issues, &g.client_header_timeout, DEFAULT_CLIENT_HEADER_TIMEOUT),
        client_keepalive_timeout: dur(issues, &g.client_keepalive_timeout, DEFAULT_CLIENT_KEEPALIVE_TIMEOUT),
        max_connections_per_client: int_in(
            issues,
            &g.max_connections_per_client,
            "max_connections_per_client",
            0..=1_000_000,
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT as i64,
        ) as usize,
        max_body_bytes: body_limit(issues, &g.max_body_bytes, DEFAULT_MAX_BODY_BYTES),
        request_buffering: request_buffering(issues, &g.request_buffering, true),
        request_timeout: dur(issues, &g.request_timeout, Duration::from_secs(30)),
        stream_idle_timeout: dur(issues, &g.stream_idle_timeout, Duration::from_secs(60)),
        threads: g.threads.unwrap_or(1).max(1),
        shutdown_grace: dur(issues, &g.shutdown_grace, Duration::ZERO),
        shutdown_timeout: dur(issues, &g.shutdown_timeout, Duration::from_secs(10)),
        otlp_endpoint: g.otlp_endpoint.clone(),
        resolve_interval: dur(issues, &g.resolve_interval, Duration::from_secs(30)).max(Duration::from_millis(100)),
        shadow: shadow_settings(issues, g),
        dry_run_header: dry_run_header(issues, g, secrets),
        h2c: g.h2c.unwrap_or(false),
        tls: g.tls.as_ref().and_then(|t| super::tls::compile_tls(issues, t, secrets)),
        access_log: g.access_log.as_ref().map(|a| access_log(issues, a)),
        rollout_state_dir: g.rollout_state_dir.as_ref().filter(|d| !d.is_empty()).map(std::path::PathBuf::from),
        rollout_store: super::rollout::rollout_store(issues, g, secrets),
        trusted_proxies: super::limits::trusted_proxies(issues, g),
        redis: super::limits::redis(issues, g),
    }
}

/// `[gateway.access_log]`.
fn access_log(issues: &mut Issues<'_>, a: &RawAccessLog) -> AccessLogSettings {
    let format = match a.format.as_ref() {
        None => AccessLogFormat::Json,
        Some(f) => match f.get_ref().as_str() {
            "json" => AccessLogFormat::Json,
            "combined" => AccessLogFormat::Combined,
            other => {
                issues.at(
                    f,
                    format!("unknown access log format {other:?}"),
                    Some("use \"json\" or \"combined\"".into()),
                );
                AccessLogFormat::Json
            }
        },
    };
    let sample = match &a.sample {
        None => 1.0,
        Some(s) if (0.0..=1.0).contains(&s.get_ref().as_f64()) => s.get_ref().as_f64(),
        Some(s) => {
            issues.at(
                s,
                format!("sample {} is outside 0.0–1.0", s.get_ref().as_f64()),
                Some("sample is the share of requests logged, e.g. 0.1 for 10%".into()),
            );
            1.0
        }
    };
    AccessLogSettings { path: a.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "-".into()), format, sample }
}

/// Default `[gateway] client_header_timeout`: nginx's `client_header_timeout`.
pub(super) const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `[gateway] client_keepalive_timeout`: nginx's `keepalive_timeout`.
pub(super) const DEFAULT_CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// Default `[gateway] max_connections_per_client`: far above what a browser opens (6 per host
/// over HTTP/1.1), low enough that one address cannot take a worker's file descriptors.
pub(super) const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 512;

/// Default `[gateway] max_body_bytes`: 16 MiB.
pub(super) const DEFAULT_MAX_BODY_BYTES: u64 = 16 << 20;

/// A `max_body_bytes` value: bytes, 0 meaning no limit (`u64::MAX`).
pub(super) fn body_limit(issues: &mut Issues<'_>, v: &Option<toml::Spanned<i64>>, default: u64) -> u64 {
    match int_in(issues, v, "max_body_bytes", 0..=(1 << 50), -1) {
        -1 => default,
        0 => u64::MAX,
        n => n as u64,
    }
}

/// A `request_buffering` value: "on" or "off".
pub(super) fn request_buffering(issues: &mut Issues<'_>, v: &Option<toml::Spanned<String>>, default: bool) -> bool {
    let Some(v) = v else { return default };
    match v.get_ref().as_str() {
        "on" => true,
        "off" => false,
        other => {
            issues.at(
                v,
                format!("unknown request_buffering {other:?}"),
                Some("use \"on\" (read the start of the body before contacting the upstream) or \"off\"".into()),
            );
            default
        }
    }
}

/// Whether `[gateway]` names a dry-run secret (read or not).
pub(super) fn has_dry_run_secret(g: &RawGateway) -> bool {
    g.shadow_secret_env.is_some() || g.shadow_secret_file.is_some()
}

/// Reads the dry-run secret `[gateway]` names and turns it into the header value mirrored writes
/// carry (marked sensitive, so `Debug` never shows it).
fn dry_run_header(issues: &mut Issues<'_>, g: &RawGateway, secrets: Secrets) -> Option<http::HeaderValue> {
    let (env, file) = (g.shadow_secret_env.as_ref(), g.shadow_secret_file.as_ref());
    if let (Some(_), Some(f)) = (env, file) {
        issues.at(f, "set only one of shadow_secret_env and shadow_secret_file", None);
        return None;
    }
    let at = env.or(file)?;
    if secrets == Secrets::Skip {
        return None;
    }
    let loaded = strangler_wire::SharedSecret::load(
        env.map(|e| e.get_ref().as_str()),
        file.map(|f| std::path::Path::new(f.get_ref().as_str())),
    );
    match loaded {
        Ok(Some(secret)) => {
            let mut v = http::HeaderValue::from_str(&strangler_wire::DryRun::header_value(&secret))
                .expect("a validated secret is a valid header value");
            v.set_sensitive(true);
            Some(v)
        }
        Ok(None) => None,
        Err(e) => {
            issues.at(
                at,
                format!("cannot read the dry-run secret: {e}"),
                Some("the gateway and the extracted services must be given the same secret".into()),
            );
            None
        }
    }
}

fn shadow_settings(issues: &mut Issues<'_>, g: &RawGateway) -> ShadowSettings {
    let d = ShadowSettings::default();
    ShadowSettings {
        dir: g.shadow_dir.as_ref().filter(|s| !s.is_empty()).map(std::path::PathBuf::from),
        threads: int_in(issues, &g.shadow_threads, "shadow_threads", 1..=64, d.threads as i64) as usize,
        file_bytes: int_in(issues, &g.shadow_file_bytes, "shadow_file_bytes", 4096..=(1 << 40), d.file_bytes as i64)
            as u64,
        files: int_in(issues, &g.shadow_files, "shadow_files", 1..=1000, d.files as i64) as usize,
        nice: int_in(issues, &g.shadow_nice, "shadow_nice", 0..=19, i64::from(d.nice)) as i32,
    }
}

//! `routes.toml`: its model, its validation and its compilation into an immutable [`RouteTable`].
//!
//! Loading is pure (no I/O besides what the caller read, the resolver and the secret file it
//! names): [`load_str`] parses, validates and compiles in one step and reports *every* problem it
//! finds, each with a place (`file:line:col`) and a hint, instead of stopping at the first one.
//!
//! - [`raw`]: the serde model, exactly what the file may contain.
//! - [`diagnostics`]: issues with places, and the first pass that reports every unknown key.
//! - [`quick`]: a one-pass reader for the plain TOML most files are written in; a valid file
//!   read by it skips toml's parser, anything else (and every error) goes through toml.
//! - [`values`]: durations, addresses, endpoints and bounded integers.
//! - one module per section, in the order [`compile`] runs them: [`gateway`], [`upstreams`]
//!   (with `[defaults]`), [`routes`] (with the router), [`shadow`] (a route's `[routes.shadow]`),
//!   [`tls`] (`[gateway.tls]`: the HTTPS listener and its certificates), [`rollout`] (a route's
//!   `[routes.rollout]`).

mod consumers;
mod diagnostics;
mod gateway;
mod limits;
mod quick;
pub mod raw;
mod rollout;
mod routes;
mod shadow;
mod tls;
mod transforms;
mod upstreams;
mod values;

use std::collections::BTreeMap;

pub use consumers::jwks_keys;
pub use diagnostics::{line_col, ConfigError, ConfigIssue};
pub use tls::{files_fingerprint, load_certificate};
pub use values::KNOWN_METHODS;
pub use values::{parse_duration, parse_endpoint, system_resolve, EndpointSpec, Resolve, MAX_DURATION};

use crate::rollout::state::Overlay;
use crate::shadow::compare::CompareRules;
use crate::stage::Stage;
use crate::table::RouteTable;
use diagnostics::{parse_raw, Issues};
use raw::RawConfig;
use values::Secrets;

/// Parses, validates and compiles `src` (named `file` in messages) into a [`RouteTable`].
///
/// Returns every problem found. Endpoint health state is carried over from `previous` (same
/// upstream name and address) so a reload does not forget which endpoints are ejected.
pub fn load_str(file: &str, src: &str, previous: Option<&RouteTable>) -> Result<RouteTable, ConfigError> {
    load_str_with(file, src, previous, &system_resolve)
}

/// [`load_str`] with the resolver for endpoint host names given (tests, re-resolution).
///
/// A name that does not resolve is an error, unless `previous` has addresses for the same
/// upstream and name: then those are kept (and a warning logged), so a DNS hiccup during a
/// reload neither fails it nor empties the upstream.
pub fn load_str_with(
    file: &str,
    src: &str,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
) -> Result<RouteTable, ConfigError> {
    load(file, src, previous, resolve, Secrets::Read, &Overlay::new())
}

/// [`load_str_with`] with the rollout state applied: each route with a `[routes.rollout]`
/// serves at the placement `overlay` gives it (capped by its own stage and weight).
pub fn load_with_overlay(
    file: &str,
    src: &str,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
    overlay: &Overlay,
) -> Result<RouteTable, ConfigError> {
    load(file, src, previous, resolve, Secrets::Read, overlay)
}

/// Validates and compiles `src` without touching the machine it runs on: host names are not
/// resolved (they become `0.0.0.0:PORT`) and secrets are not read (only whether one is
/// configured counts). For checking a file meant for another environment.
pub fn load_str_offline(file: &str, src: &str) -> Result<RouteTable, ConfigError> {
    load_offline_with_overlay(file, src, &Overlay::new())
}

/// [`load_str_offline`] with rollout positions applied (what `diff` compares).
pub fn load_offline_with_overlay(file: &str, src: &str, overlay: &Overlay) -> Result<RouteTable, ConfigError> {
    load(file, src, None, &values::unresolved, Secrets::Skip, overlay)
}

fn load(
    file: &str,
    src: &str,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
    secrets: Secrets,
    overlay: &Overlay,
) -> Result<RouteTable, ConfigError> {
    // A valid file read by the quick reader is compiled from that; a file it cannot read, or
    // whose compile reports a problem, is parsed again by toml below, which places every error.
    if let Some(raw) = quick::parse(src) {
        #[cfg(debug_assertions)]
        quick::assert_same_as_toml(src, &raw);
        if let Ok(table) = compile(file, src, raw, previous, resolve, secrets, overlay) {
            return Ok(table);
        }
    }
    let (raw, structural) = parse_raw(file, src);
    let Some(raw) = raw else {
        return Err(structural.expect("a failed parse records an issue"));
    };
    match (compile(file, src, raw, previous, resolve, secrets, overlay), structural) {
        (Ok(table), None) => Ok(table),
        (Ok(_), Some(err)) => Err(err),
        (Err(err), None) => Err(err),
        (Err(mut err), Some(s)) => {
            err.issues.extend(s.issues);
            err.issues.sort_by_key(|i| (i.line, i.column));
            Err(err)
        }
    }
}

/// Runs every section's validation and, when nothing was wrong, assembles the table.
fn compile(
    file: &str,
    src: &str,
    raw: RawConfig,
    previous: Option<&RouteTable>,
    resolve: Resolve<'_>,
    secrets: Secrets,
    overlay: &Overlay,
) -> Result<RouteTable, ConfigError> {
    let mut issues = Issues::new(file, src);
    let settings = gateway::compile_gateway(&mut issues, &raw.gateway, secrets);
    let upstreams = upstreams::compile_upstreams(&mut issues, &raw.upstreams, previous, resolve, secrets);
    let legacy = upstreams::default_upstream(&mut issues, &raw.defaults, &upstreams);
    let dry_run_secret = gateway::has_dry_run_secret(&raw.gateway);
    let auth = consumers::compile_auth(&mut issues, &raw.consumers, raw.auth.as_ref(), secrets);
    let cx = routes::RouteContext {
        settings: &settings,
        upstreams: &upstreams,
        dry_run_secret,
        auth: &auth,
        previous,
        overlay,
    };
    let (routes, router) = routes::compile_routes(&mut issues, &raw.routes, &cx);
    if let Some(err) = issues.into_error() {
        return Err(err);
    }
    let router = router.expect("no issues means the router was built");
    let mut table = RouteTable::new(settings, upstreams.list, legacy, routes, router, src);
    table.auth = auth;
    Ok(table)
}

/// The comparison rules of every route that has a `[routes.shadow]` table, at any stage, by
/// route name. Contract checks use this so they judge "the same answer" exactly as shadowing
/// will. Errors are the same as [`load_str`]'s.
pub fn compare_rules(file: &str, src: &str) -> Result<BTreeMap<String, CompareRules>, ConfigError> {
    load_str_offline(file, src)?;
    let (raw, err) = parse_raw(file, src);
    let raw = match (raw, err) {
        (Some(raw), None) => raw,
        (_, Some(e)) => return Err(e),
        (None, None) => return Ok(Default::default()),
    };
    let mut issues = Issues::new(file, src);
    let mut out = BTreeMap::new();
    for r in &raw.routes {
        let stage = Stage::parse(r.stage.get_ref()).unwrap_or(Stage::Legacy);
        if let Some(spec) = shadow::shadow_spec(&mut issues, r, stage) {
            out.insert(r.name.get_ref().clone(), spec.rules);
        }
    }
    match issues.into_error() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod client_tests;

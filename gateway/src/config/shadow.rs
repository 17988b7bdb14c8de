//! The `[routes.shadow]` table: what to mirror and how to compare. A table on a route at stage
//! `legacy` or `extracted` (or `canary` without `on_canary`) is validated and kept for contract
//! checks, but mirrors nothing.

use std::sync::Arc;

use super::diagnostics::Issues;
use super::raw::RawRoute;
use super::values::{dur, int_in};
use crate::shadow::compare::{ArrayOrder, PathPattern as IgnorePattern};
use crate::shadow::policy::{Oversize, ShadowSpec, Writes};
use crate::stage::Stage;

/// The shadow rules the route runs with: its table (or the defaults at stage `shadow`) when
/// mirroring is active at this stage and there is an upstream to mirror to.
/// `stage` is where the route serves now; `validate_as` the stage its keys are checked against
/// (`canary` for a route with a rollout, whose steps may include canary).
pub(super) fn shadow_rules(
    issues: &mut Issues<'_>,
    r: &RawRoute,
    stage: Stage,
    validate_as: Stage,
    to: Option<usize>,
) -> Option<Arc<ShadowSpec>> {
    let spec = match shadow_spec(issues, r, validate_as) {
        Some(spec) => spec,
        // no `[routes.shadow]`: only stage "shadow" mirrors, with the default rules (the
        // default spec is built only then, not for every route of a large file)
        None if stage == Stage::Shadow => ShadowSpec::default(),
        None => return None,
    };
    let active = match stage {
        Stage::Shadow => true,
        Stage::Canary => spec.on_canary,
        _ => false,
    };
    (active && to.is_some()).then(|| Arc::new(spec.normalised()))
}

/// `writes = "dry-run"` needs the secret shared with the services: without it they would commit
/// every mirrored write.
pub(super) fn check_dry_run_secret(issues: &mut Issues<'_>, r: &RawRoute, secret_configured: bool) {
    let Some(w) = r.shadow.as_ref().and_then(|t| t.get_ref().writes.as_ref()) else { return };
    if w.get_ref() == "dry-run" && !secret_configured {
        issues.at(
            w,
            "writes = \"dry-run\" needs the dry-run secret shared with the extracted services",
            Some(
                "set [gateway] shadow_secret_env = \"STRANGLER_SHADOW_SECRET\" (or shadow_secret_file) and give the \
                 services the same value; without it they commit mirrored writes"
                    .into(),
            ),
        );
    }
}

/// Validates and compiles a route's `[routes.shadow]` table; `None` when the route has none.
pub(super) fn shadow_spec(issues: &mut Issues<'_>, r: &RawRoute, stage: Stage) -> Option<ShadowSpec> {
    let mut spec = ShadowSpec::default();
    let raw = r.shadow.as_ref()?;
    let t = raw.get_ref();
    let on_canary = t.on_canary.as_ref().is_some_and(|b| *b.get_ref());
    match (stage, &t.on_canary) {
        (Stage::Shadow, None) | (Stage::Canary, Some(_)) => {}
        (_, Some(b)) if stage != Stage::Canary => {
            issues.at(b, "on_canary only applies to stage \"canary\"", Some("remove it".into()))
        }
        // legacy / extracted, or canary without on_canary: the rules are prepared (and used by
        // contract checks) but inactive.
        _ => {}
    }
    spec.on_canary = on_canary;
    if let Some(s) = &t.sample {
        let v = s.get_ref().as_f64();
        if (0.0..=1.0).contains(&v) {
            spec.sample = v;
        } else {
            issues.at(
                s,
                format!("sample {v} is outside 0.0–1.0"),
                Some("sample is the share of requests mirrored, e.g. 0.1 for 10%".into()),
            );
        }
    }
    if let Some(c) = &t.compare {
        spec.rules.status = c.status.unwrap_or(true);
        spec.rules.body = c.body.unwrap_or(true);
        for h in c.headers.iter().flatten() {
            match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(n) => spec.rules.headers.push(n.as_str().to_string()),
                Err(_) => issues.at(h, format!("bad header name {:?}", h.get_ref()), None),
            }
        }
    }
    for i in t.ignore.iter().flatten() {
        match IgnorePattern::parse(i.get_ref()) {
            Ok(p) => spec.rules.ignore.push(p),
            Err(e) => {
                issues.at(i, e, Some("e.g. \"/generated_at\", \"/items/*/updated_at\", \"/**/request_id\"".into()))
            }
        }
    }
    if let Some(n) = &t.numeric_tolerance {
        let v = n.get_ref().as_f64();
        if v >= 0.0 && v.is_finite() {
            spec.rules.numeric_tolerance = v;
        } else {
            issues.at(n, format!("numeric_tolerance {v} must be a finite number >= 0"), None);
        }
    }
    if let Some(a) = &t.array_order {
        spec.rules.array_order = match a.get_ref().as_str() {
            "ordered" => ArrayOrder::Ordered,
            "multiset" => ArrayOrder::Multiset,
            other => {
                issues.at(a, format!("unknown array_order {other:?}"), Some("use \"ordered\" or \"multiset\"".into()));
                ArrayOrder::Ordered
            }
        };
    }
    spec.max_body = int_in(issues, &t.max_body, "max_body", 1..=(64 << 20), spec.max_body as i64) as usize;
    if let Some(o) = &t.oversize {
        spec.oversize = match o.get_ref().as_str() {
            "hash" => Oversize::Hash,
            "skip" => Oversize::Skip,
            other => {
                issues.at(o, format!("unknown oversize policy {other:?}"), Some("use \"hash\" or \"skip\"".into()));
                Oversize::Hash
            }
        };
    }
    if let Some(w) = &t.writes {
        spec.writes = match w.get_ref().as_str() {
            "dry-run" => Writes::DryRun,
            "skip" => Writes::Skip,
            other => {
                issues.at(
                    w,
                    format!("unknown writes mode {other:?}"),
                    Some("use \"dry-run\" (mirror writes with x-strangler-shadow: 1) or \"skip\"".into()),
                );
                Writes::Skip
            }
        };
    }
    spec.learn_noise = t.learn_noise.unwrap_or(false);
    if let Some(list) = &t.redact_headers {
        spec.redact_headers.clear();
        for h in list {
            match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(n) => spec.redact_headers.push(n.as_str().to_string()),
                Err(_) => issues.at(h, format!("bad header name {:?}", h.get_ref()), None),
            }
        }
    }
    spec.timeout = dur(issues, &t.timeout, spec.timeout);
    spec.queue = int_in(issues, &t.queue, "queue", 1..=1_000_000, spec.queue as i64) as usize;
    spec.concurrency = int_in(issues, &t.concurrency, "concurrency", 1..=4096, spec.concurrency as i64) as usize;
    spec.samples = int_in(issues, &t.samples, "samples", 0..=10_000, spec.samples as i64) as usize;
    Some(spec)
}

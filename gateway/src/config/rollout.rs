//! The `[routes.rollout]` table: steps in order of exposure, the analysis interval, the failure
//! limit and the gates, each checked with its place.

use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::{RawGates, RawGateway, RawNumber, RawRollout, RawRoute};
use super::values::{dur, int_in, Secrets};
use crate::rollout::plan::{
    CdcLagGate, ErrorRateGate, Gates, LatencyGate, MatchRateGate, Placement, PrometheusGate, RolloutPlan, Step,
};
use crate::rollout::store::StoreSettings;
use crate::stage::Stage;

/// `[gateway] rollout_store` and `rollout_store_url_env`: where rollout state lives. The
/// connection string is read from the environment (never from the file) when secrets are read;
/// an offline `check` only checks the keys.
pub(super) fn rollout_store(issues: &mut Issues<'_>, g: &RawGateway, secrets: Secrets) -> StoreSettings {
    let env = g.rollout_store_url_env.as_ref();
    let Some(kind) = g.rollout_store.as_ref() else {
        if let Some(e) = env {
            issues.at(e, "rollout_store_url_env needs rollout_store = \"postgres\"", None);
        }
        return StoreSettings::File;
    };
    match kind.get_ref().as_str() {
        "file" => {
            if let Some(e) = env {
                issues.at(e, "rollout_store_url_env is for rollout_store = \"postgres\"", None);
            }
            StoreSettings::File
        }
        "postgres" => {
            let Some(env) = env else {
                issues.at(
                    kind,
                    "rollout_store = \"postgres\" needs rollout_store_url_env",
                    Some("name the environment variable holding the connection string, e.g. rollout_store_url_env = \"STRANGLER_ROLLOUT_PG\"".into()),
                );
                return StoreSettings::File;
            };
            let name = env.get_ref();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                issues.at(env, format!("{name:?} is not an environment variable name"), None);
                return StoreSettings::File;
            }
            if secrets == Secrets::Skip {
                return StoreSettings::Postgres { url: String::new(), env: name.clone() };
            }
            let url = match std::env::var(name) {
                Ok(u) if !u.trim().is_empty() => u,
                _ => {
                    issues.at(
                        env,
                        format!(
                            "environment variable {name} is not set (it holds the rollout store's connection string)"
                        ),
                        Some("e.g. host=db.internal dbname=strangler user=gateway password=...".into()),
                    );
                    return StoreSettings::File;
                }
            };
            if let Err(e) = crate::rollout::pg_store::parse_url(&url) {
                issues.at(env, format!("${name}: {e}"), None);
                return StoreSettings::File;
            }
            StoreSettings::Postgres { url, env: name.clone() }
        }
        other => {
            issues.at(
                kind,
                format!("unknown rollout store {other:?}"),
                Some("use \"file\" (one gateway) or \"postgres\" (several replicas)".into()),
            );
            StoreSettings::File
        }
    }
}

/// Compiles a route's `[routes.rollout]`; `None` when it has none.
pub(super) fn rollout_plan(issues: &mut Issues<'_>, r: &RawRoute, to: Option<usize>) -> Option<Arc<RolloutPlan>> {
    let raw = r.rollout.as_ref()?;
    let t: &RawRollout = raw.get_ref();
    if to.is_none() && r.to.is_none() {
        issues.at(raw, "a rollout needs `to` (the extracted upstream)", Some("add to = \"<upstream name>\"".into()));
    }
    if t.steps.is_empty() {
        issues.at(
            raw,
            "a rollout needs at least one step",
            Some("e.g. steps = [{ stage = \"shadow\", duration = \"30m\" }, { stage = \"extracted\" }]".into()),
        );
    }
    let mut steps = Vec::new();
    let mut previous = Placement::LEGACY;
    for (i, s) in t.steps.iter().enumerate() {
        let raw_step = s.get_ref();
        let last = i + 1 == t.steps.len();
        let stage = match Stage::parse(raw_step.stage.get_ref()) {
            Some(Stage::Legacy) => {
                issues.at(
                    &raw_step.stage,
                    "a rollout step cannot be \"legacy\"",
                    Some("legacy is where a rollout starts and where it rolls back to".into()),
                );
                continue;
            }
            Some(st) => st,
            None => {
                issues.at(
                    &raw_step.stage,
                    format!("unknown stage {:?}", raw_step.stage.get_ref()),
                    Some("use one of: shadow, canary, extracted".into()),
                );
                continue;
            }
        };
        let weight_bp = match (&raw_step.weight, stage) {
            (Some(w), Stage::Canary) if (1..=99).contains(w.get_ref()) => (*w.get_ref() as u32) * 100,
            // 0 and 100 send every request to one side: the gates that compare the two sides
            // (error rate, latency) would not apply, and the step would pass on time alone
            (Some(w), Stage::Canary) if [0, 100].contains(w.get_ref()) => {
                issues.at(
                    w,
                    format!("a canary step of weight {} sends every request to one side", w.get_ref()),
                    Some("use a weight of 1–99, or a step with stage = \"extracted\" for 100".into()),
                );
                0
            }
            (Some(w), Stage::Canary) => {
                issues.at(w, format!("weight {} is outside 1–99", w.get_ref()), None);
                0
            }
            (Some(w), _) => {
                issues.at(w, "weight only applies to canary steps", Some("remove it".into()));
                0
            }
            (None, Stage::Canary) => {
                issues.at(&raw_step.stage, "a canary step needs a weight", Some("add weight = 10 (percent)".into()));
                0
            }
            (None, _) => 0,
        };
        let duration = match &raw_step.duration {
            Some(_) => Some(dur(issues, &raw_step.duration, Duration::from_secs(60))),
            None if last => None,
            None => {
                issues.at(s, "every step but the last needs a duration", Some("add duration = \"15m\"".into()));
                None
            }
        };
        let placement = Placement { stage, weight_bp };
        if placement.rank() <= previous.rank() {
            issues.at(
                s,
                format!(
                    "step {} ({}) is not further than the step before it ({})",
                    i + 1,
                    placement.label(),
                    previous.label()
                ),
                Some("order steps by exposure: shadow, canary with rising weights, extracted".into()),
            );
        }
        previous = placement;
        steps.push(Step { stage, weight_bp, duration });
    }
    let interval = dur(issues, &t.interval, Duration::from_secs(30)).max(Duration::from_millis(100));
    let failure_limit = int_in(issues, &t.failure_limit, "failure_limit", 1..=100, 3) as u32;
    let gates = t.gates.as_ref().map(|g| gates(issues, g)).unwrap_or_default();
    Some(Arc::new(RolloutPlan { steps, interval, failure_limit, gates }))
}

fn fraction(issues: &mut Issues<'_>, v: &Spanned<RawNumber>, what: &str) -> f64 {
    let x = v.get_ref().as_f64();
    if (0.0..=1.0).contains(&x) {
        x
    } else {
        issues.at(v, format!("{what} {x} is outside 0.0–1.0"), None);
        0.0
    }
}

fn positive(issues: &mut Issues<'_>, v: &Spanned<RawNumber>, what: &str) -> f64 {
    let x = v.get_ref().as_f64();
    if x > 0.0 && x.is_finite() {
        x
    } else {
        issues.at(v, format!("{what} {x} must be a number > 0"), None);
        1.0
    }
}

fn gates(issues: &mut Issues<'_>, g: &RawGates) -> Gates {
    let count = |issues: &mut Issues<'_>, v: &Option<Spanned<i64>>, what: &str| {
        int_in(issues, v, what, 1..=100_000_000, 100) as u64
    };
    Gates {
        match_rate: g.match_rate.as_ref().map(|m| {
            let m = m.get_ref();
            MatchRateGate {
                min: fraction(issues, &m.min, "min"),
                min_comparisons: count(issues, &m.min_comparisons, "min_comparisons"),
            }
        }),
        error_rate: g.error_rate.as_ref().map(|e| {
            let e = e.get_ref();
            ErrorRateGate {
                max_delta: fraction(issues, &e.max_delta, "max_delta"),
                min_requests: count(issues, &e.min_requests, "min_requests"),
            }
        }),
        latency: g.latency.as_ref().map(|l| {
            let l = l.get_ref();
            LatencyGate {
                max_ratio: positive(issues, &l.max_ratio, "max_ratio"),
                min_requests: count(issues, &l.min_requests, "min_requests"),
            }
        }),
        cdc_lag: g.cdc_lag.as_ref().map(|c| {
            let raw = c.get_ref();
            let mut status = Vec::new();
            for u in &raw.status {
                if u.get_ref().starts_with("http://") {
                    status.push(u.get_ref().clone());
                } else {
                    issues.at(
                        u,
                        format!("{:?} is not an http:// URL", u.get_ref()),
                        Some("a cdc-sync status endpoint, e.g. \"http://127.0.0.1:9903/status\"".into()),
                    );
                }
            }
            if raw.status.is_empty() {
                issues.at(c, "cdc_lag needs at least one status URL", None);
            }
            CdcLagGate { status, max: dur(issues, &Some(raw.max.clone()), Duration::from_secs(10)) }
        }),
        prometheus: g.prometheus.as_ref().map(|p| {
            let raw = p.get_ref();
            if !raw.url.get_ref().starts_with("http://") {
                issues.at(&raw.url, format!("{:?} is not an http:// URL", raw.url.get_ref()), None);
            }
            if raw.query.get_ref().trim().is_empty() {
                issues.at(&raw.query, "the query is empty", None);
            }
            let (min, max) =
                (raw.min.as_ref().map(|v| v.get_ref().as_f64()), raw.max.as_ref().map(|v| v.get_ref().as_f64()));
            if min.is_none() && max.is_none() {
                issues.at(p, "a prometheus gate needs min, max or both", None);
            }
            if let (Some(a), Some(b)) = (min, max) {
                if a > b {
                    issues.at(p, format!("min {a} is above max {b}"), None);
                }
            }
            PrometheusGate {
                url: raw.url.get_ref().trim_end_matches('/').to_string(),
                query: raw.query.get_ref().clone(),
                min,
                max,
            }
        }),
    }
}

#[cfg(test)]
mod store_tests {
    use crate::config::{load_str, load_str_offline};
    use crate::rollout::store::StoreSettings;

    const ROUTES: &str = "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"127.0.0.1:8081\"]\n";

    fn errors(src: &str) -> Vec<String> {
        load_str("r.toml", src, None).unwrap_err().issues.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn the_rollout_store_keys_are_checked_with_places_and_the_url_never_shown() {
        let file = load_str("r.toml", ROUTES, None).unwrap();
        assert_eq!(file.settings.rollout_store, StoreSettings::File);

        let src = |keys: &str| format!("[gateway]\n{keys}\n{ROUTES}");
        let e = errors(&src("rollout_store = \"etcd\""));
        assert!(e[0].starts_with("r.toml:2:17: error: unknown rollout store \"etcd\""), "{e:?}");
        let e = errors(&src("rollout_store = \"postgres\""));
        assert!(
            e[0].starts_with("r.toml:2:17: error: rollout_store = \"postgres\" needs rollout_store_url_env"),
            "{e:?}"
        );
        let e = errors(&src("rollout_store_url_env = \"X\""));
        assert!(
            e[0].starts_with("r.toml:2:25: error: rollout_store_url_env needs rollout_store = \"postgres\""),
            "{e:?}"
        );
        let e = errors(&src("rollout_store = \"postgres\"\nrollout_store_url_env = \"NOT A NAME\""));
        assert!(e[0].starts_with("r.toml:3:25: error: \"NOT A NAME\" is not an environment variable name"), "{e:?}");

        // unset: an error at the key when run, not for an offline `check`
        let unset = src("rollout_store = \"postgres\"\nrollout_store_url_env = \"STRANGLER_ROLLOUT_TEST_UNSET\"");
        let e = errors(&unset);
        assert!(
            e[0].starts_with("r.toml:3:25: error: environment variable STRANGLER_ROLLOUT_TEST_UNSET is not set"),
            "{e:?}"
        );
        assert!(load_str_offline("r.toml", &unset).is_ok());

        // set: read, kept out of Debug; a malformed string is an error that does not repeat it
        std::env::set_var("STRANGLER_ROLLOUT_TEST_URL", "host=db.internal dbname=s password=hunter2");
        let ok = load_str(
            "r.toml",
            &src("rollout_store = \"postgres\"\nrollout_store_url_env = \"STRANGLER_ROLLOUT_TEST_URL\""),
            None,
        )
        .unwrap();
        assert!(matches!(&ok.settings.rollout_store, StoreSettings::Postgres { url, .. } if url.contains("hunter2")));
        assert!(!format!("{:?}", ok.settings).contains("hunter2"));
        std::env::set_var("STRANGLER_ROLLOUT_TEST_BAD", "host=db password='hunter2");
        let e = errors(&src("rollout_store = \"postgres\"\nrollout_store_url_env = \"STRANGLER_ROLLOUT_TEST_BAD\""));
        assert!(
            e[0].starts_with("r.toml:3:25: error: $STRANGLER_ROLLOUT_TEST_BAD: not a PostgreSQL connection string"),
            "{e:?}"
        );
        assert!(!e[0].contains("hunter2"), "{e:?}");
    }
}

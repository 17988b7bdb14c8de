//! The `[[routes]]` section: one function per key group (name, stage and target, canary split,
//! fallback and retry, the match), then the router, which rejects ambiguous overlaps.

use std::collections::HashMap;
use std::sync::Arc;

use super::consumers::route_auth;
use super::diagnostics::Issues;
use super::gateway::{body_limit, request_buffering};
use super::limits::route_limits;
use super::raw::{RawMatch, RawRetry, RawRoute};
use super::rollout::rollout_plan;
use super::shadow::{check_dry_run_secret, shadow_rules};
use super::transforms::{cors, rewrites};
use super::upstreams::Upstreams;
use super::values::{dur, int_in, KNOWN_METHODS};
use crate::auth::AuthConfig;
use crate::metrics::RouteMetrics;
use crate::rollout::plan::Placement;
use crate::rollout::state::Overlay;
use crate::router::{HeaderMatch, HostMatch, PathPattern, Router, RouterBuildError};
use crate::stage::Stage;
use crate::table::{
    CanaryPolicy, Compression, GatewaySettings, RetryPolicy, Route, RouteCounters, RouteTable, StickyKey,
};

const STAGES: &str = "legacy, shadow, canary, extracted";

/// What the routes are compiled against: the other sections, and where rollouts stand.
pub(super) struct RouteContext<'a> {
    pub settings: &'a GatewaySettings,
    pub upstreams: &'a Upstreams,
    /// `[gateway]` names a dry-run secret.
    pub dry_run_secret: bool,
    pub auth: &'a AuthConfig,
    /// The serving table (where a new rollout starts from).
    pub previous: Option<&'a RouteTable>,
    /// Where each rollout stands.
    pub overlay: &'a Overlay,
}

/// Compiles every route in file order, and the router over them (`None` when it could not be
/// built; the reason is reported).
pub(super) fn compile_routes(
    issues: &mut Issues<'_>,
    raw: &[Box<RawRoute>],
    cx: &RouteContext<'_>,
) -> (Vec<Route>, Option<Arc<Router>>) {
    let RouteContext { settings, upstreams, dry_run_secret, auth, previous, overlay } = *cx;
    let consumer_names: Vec<&str> = auth.consumers.iter().map(|c| c.name.as_str()).collect();
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::with_capacity(raw.len());
    let mut spans: Vec<usize> = Vec::with_capacity(raw.len());
    for r in raw {
        let name = r.name.get_ref().clone();
        check_name(issues, r, &mut names);
        let plan_stage = stage(issues, r);
        let to = target(issues, r, plan_stage, upstreams);
        let plan = Placement { stage: plan_stage, weight_bp: weight_bp(issues, r, plan_stage) };
        let rollout = rollout_plan(issues, r, to);
        // With a rollout, the file's stage and weight cap what the rollout may reach; where it
        // stands now is state (the overlay), else what the route was served with.
        let served = match &rollout {
            None => plan,
            Some(_) => overlay
                .get(&name)
                .copied()
                .or_else(|| served_before(previous, &name))
                .unwrap_or(Placement::LEGACY)
                .narrowed_by(plan),
        };
        let stage = served.stage;
        let validate_as = if rollout.is_some() { Stage::Canary } else { plan_stage };
        let canary = CanaryPolicy { weight_bp: served.weight_bp, sticky: sticky(issues, r, validate_as) };
        let fallback_legacy = fallback_legacy(issues, r, to);
        let timeout = dur(issues, &r.timeout, settings.request_timeout);
        let max_body_bytes = body_limit(issues, &r.max_body_bytes, settings.max_body_bytes);
        let request_buffering = request_buffering(issues, &r.request_buffering, settings.request_buffering);
        let stream_idle_timeout = dur(issues, &r.stream_idle_timeout, settings.stream_idle_timeout);
        let compression = r.compression.as_ref().map(|c| Compression {
            level: int_in(issues, &c.level, "level", 1..=9, 5) as u32,
            min_bytes: int_in(issues, &c.min_bytes, "min_bytes", 0..=(1 << 40), 1024) as u64,
        });
        let retry = r.retry.as_ref().map(|rr| retry(issues, rr)).unwrap_or_default();
        let m = r.matcher.get_ref();
        let shadow = shadow_rules(issues, r, stage, validate_as, to);
        check_dry_run_secret(issues, r, dry_run_secret);
        let route_auth = route_auth(issues, r, auth, &consumer_names);
        let limits = route_limits(issues, r, settings.redis.is_some());
        let methods = methods(issues, m);
        let cors = cors(issues, r, methods.as_deref());
        let rewrite = rewrites(issues, r);
        spans.push(r.matcher.span().start);
        routes.push(Route {
            metrics: RouteMetrics::new(&name),
            counters: RouteCounters::default(),
            name,
            host: host(issues, m),
            pattern: pattern(issues, m),
            methods,
            headers: header_filters(issues, r, m),
            stage,
            to,
            canary,
            fallback_legacy,
            timeout,
            stream_idle_timeout,
            compression,
            max_body_bytes,
            request_buffering,
            retry,
            shadow,
            plan,
            rollout,
            auth: route_auth,
            limits,
            cors,
            rewrite,
            owner: r.owner.as_ref().map(|o| o.get_ref().clone()),
            description: r.description.clone(),
            labels: r.labels.clone().unwrap_or_default(),
        });
    }
    let router = router(issues, &routes, &spans, previous);
    (routes, router)
}

/// Where route `name` was served in the previous table.
fn served_before(previous: Option<&RouteTable>, name: &str) -> Option<Placement> {
    let r = previous?.route(name)?;
    Some(Placement { stage: r.stage, weight_bp: r.canary.weight_bp })
}

fn check_name(issues: &mut Issues<'_>, r: &RawRoute, names: &mut HashMap<String, usize>) {
    let name = r.name.get_ref();
    if name.is_empty() {
        issues.at(&r.name, "route name is empty", None);
    }
    if let Some(first) = names.get(name) {
        let place = issues.place(*first);
        issues.at(
            &r.name,
            format!("duplicate route name {name:?}"),
            Some(format!("first defined at {place}; names must be unique")),
        );
    } else {
        names.insert(name.clone(), r.name.span().start);
    }
}

fn stage(issues: &mut Issues<'_>, r: &RawRoute) -> Stage {
    match Stage::parse(r.stage.get_ref()) {
        Some(s) => s,
        None => {
            issues.at(
                &r.stage,
                format!("unknown stage {:?}", r.stage.get_ref()),
                Some(format!("use one of: {STAGES}")),
            );
            Stage::Legacy
        }
    }
}

/// `to`: the extracted upstream, required by every stage but `legacy`.
fn target(issues: &mut Issues<'_>, r: &RawRoute, stage: Stage, upstreams: &Upstreams) -> Option<usize> {
    match &r.to {
        Some(t) => upstreams.lookup(issues, t),
        None => {
            if stage != Stage::Legacy {
                issues.at(
                    &r.stage,
                    format!("stage {:?} needs `to` (the extracted upstream)", r.stage.get_ref()),
                    Some("add to = \"<upstream name>\"".into()),
                );
            }
            None
        }
    }
}

/// `weight` in basis points: canary only, 0–100 percent.
fn weight_bp(issues: &mut Issues<'_>, r: &RawRoute, stage: Stage) -> u32 {
    match (&r.weight, stage) {
        (Some(w), _) if !(0..=100).contains(w.get_ref()) => {
            issues.at(
                w,
                format!("weight {} is outside 0–100", w.get_ref()),
                Some("weight is the percentage sent to the extracted upstream".into()),
            );
            0
        }
        (Some(w), Stage::Canary) => (*w.get_ref() as u32) * 100,
        (Some(w), _) => {
            issues.at(w, "weight only applies to stage \"canary\"", Some("remove it or set stage = \"canary\"".into()));
            0
        }
        (None, Stage::Canary) => {
            issues.at(&r.stage, "stage \"canary\" needs a weight", Some("add weight = 10 (percent)".into()));
            0
        }
        (None, _) => 0,
    }
}

/// `sticky = "header:NAME" | "cookie:NAME"` (canary only).
fn sticky(issues: &mut Issues<'_>, r: &RawRoute, stage: Stage) -> Option<StickyKey> {
    let s = r.sticky.as_ref()?;
    let v = s.get_ref();
    let parsed = if let Some(h) = v.strip_prefix("header:") {
        http::HeaderName::from_bytes(h.trim().as_bytes()).ok().map(StickyKey::Header)
    } else if let Some(c) = v.strip_prefix("cookie:") {
        let c = c.trim();
        (!c.is_empty() && !c.contains([';', '=', ' '])).then(|| StickyKey::Cookie(c.to_string()))
    } else {
        None
    };
    if parsed.is_none() {
        issues.at(s, format!("bad sticky key {v:?}"), Some("use \"header:NAME\" or \"cookie:NAME\"".into()));
    } else if stage != Stage::Canary {
        issues.at(s, "sticky only applies to stage \"canary\"", None);
    }
    parsed
}

/// `fallback = "legacy"` (needs an extracted upstream).
fn fallback_legacy(issues: &mut Issues<'_>, r: &RawRoute, to: Option<usize>) -> bool {
    match &r.fallback {
        None => false,
        Some(f) if f.get_ref() == "legacy" => {
            if to.is_none() {
                issues.at(f, "fallback needs an extracted upstream (`to`)", None);
            }
            true
        }
        Some(f) => {
            issues.at(f, format!("unknown fallback {:?}", f.get_ref()), Some("the only fallback is \"legacy\"".into()));
            false
        }
    }
}

/// `retry = { attempts, on_5xx, budget }`.
fn retry(issues: &mut Issues<'_>, rr: &RawRetry) -> RetryPolicy {
    let attempts = *rr.attempts.get_ref();
    if !(0..=5).contains(&attempts) {
        issues.at(&rr.attempts, format!("retry attempts {attempts} outside 0–5"), None);
    }
    let budget = rr.budget.as_ref().map(|b| *b.get_ref()).unwrap_or(0.2);
    if let Some(b) = &rr.budget {
        if !(0.0..=1.0).contains(b.get_ref()) {
            issues.at(
                b,
                "retry budget must be between 0.0 and 1.0",
                Some("0.2 allows retries for 20% of requests".into()),
            );
        }
    }
    RetryPolicy { attempts: attempts.clamp(0, 5) as u32, on_5xx: rr.on_5xx, budget_ratio: budget }
}

/// `match.path`.
fn pattern(issues: &mut Issues<'_>, m: &RawMatch) -> PathPattern {
    match PathPattern::parse(m.path.get_ref()) {
        Ok(p) => p,
        Err(e) => {
            issues.at(
                &m.path,
                e,
                Some("patterns look like /api/orders/{id}, /api/categories or /api/products/**".into()),
            );
            PathPattern::parse("/").expect("root parses")
        }
    }
}

/// `match.host` (any when absent).
fn host(issues: &mut Issues<'_>, m: &RawMatch) -> Option<HostMatch> {
    let h = m.host.as_ref()?;
    match HostMatch::parse(h.get_ref()) {
        Ok(hm) => Some(hm),
        Err(e) => {
            issues.at(h, e, Some("e.g. \"api.example.com\" or \"*.example.com\" (one leading wildcard)".into()));
            None
        }
    }
}

/// `match.methods` (any when absent).
fn methods(issues: &mut Issues<'_>, m: &RawMatch) -> Option<Vec<http::Method>> {
    let ms = m.methods.as_ref()?;
    let mut out = Vec::new();
    for s in ms {
        let up = s.get_ref().to_ascii_uppercase();
        match http::Method::from_bytes(up.as_bytes()) {
            Ok(mm) if KNOWN_METHODS.contains(&up.as_str()) => out.push(mm),
            _ => issues.at(
                s,
                format!("unknown method {:?}", s.get_ref()),
                Some(format!("use one of: {}", KNOWN_METHODS.join(", "))),
            ),
        }
    }
    Some(out)
}

/// `match.headers`, sorted by name (the router compares filter lists).
fn header_filters(issues: &mut Issues<'_>, r: &RawRoute, m: &RawMatch) -> Vec<HeaderMatch> {
    let mut headers = Vec::new();
    for (k, v) in m.headers.iter().flatten() {
        match (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
            (Ok(n), Ok(val)) => headers.push(HeaderMatch { name: n, value: val }),
            _ => issues.at(&r.matcher, format!("bad header filter {k:?} = {v:?}"), None),
        }
    }
    headers.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    headers
}

/// Whether two route lists route alike: the same host, path pattern, methods and header filters
/// per route, in the same order (what [`Router::build`] reads, and all it reads).
fn same_routing(a: &[Route], b: &[Route]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.pattern.source == b.pattern.source && a.host == b.host && a.methods == b.methods && a.headers == b.headers
        })
}

/// Builds the router, or shares the previous table's when the routing keys did not change (a
/// reload that moves a stage or a weight, or edits anything but `match`, rebuilds no trie); a
/// `match` edit rebuilds only the tries of the host keys whose routes changed.
/// Ambiguous overlaps and trie conflicts are reported at the route's match.
fn router(
    issues: &mut Issues<'_>,
    routes: &[Route],
    spans: &[usize],
    previous: Option<&RouteTable>,
) -> Option<Arc<Router>> {
    if let Some(prev) = previous.filter(|p| same_routing(&p.routes, routes)) {
        return Some(Arc::clone(&prev.router));
    }
    let errs = match Router::build_reusing(routes, previous.map(|p| (&*p.router, &p.routes[..]))) {
        Ok(r) => return Some(Arc::new(r)),
        Err(errs) => errs,
    };
    for e in errs {
        match e {
            RouterBuildError::Ambiguous { route, other } => {
                let place = issues.place(spans[other]);
                issues.push(
                    spans[route],
                    format!(
                        "route {:?} overlaps route {:?} ambiguously (same host, same path pattern, overlapping methods, same header filters)",
                        routes[route].name, routes[other].name
                    ),
                    Some(format!(
                        "{:?} is at {place}; narrow `methods` or add a header filter to one of them",
                        routes[other].name
                    )),
                );
            }
            RouterBuildError::Conflict { route, message } => issues.push(
                spans[route],
                format!("route {:?} conflicts with another pattern: {message}", routes[route].name),
                Some("two patterns differ only in parameter names; use the same parameter name".into()),
            ),
        }
    }
    None
}

//! Metrics (Prometheus): every metric the gateway exports, in one registry served on the admin
//! port. Per-route metric handles are resolved once when a [`crate::table::RouteTable`] is
//! compiled, so the request path only does atomic increments (no label lookups, no allocation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::stage::Side;

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    /// `strangler_gateway_requests_total{route,side,class}`
    pub requests: IntCounterVec,
    /// `strangler_gateway_request_duration_seconds{route,side}`
    pub latency: HistogramVec,
    /// `strangler_gateway_upstream_errors_total{upstream,kind}`
    pub upstream_errors: IntCounterVec,
    /// `strangler_gateway_retries_total{route,kind}` (kind = retry | fallback)
    pub retries: IntCounterVec,
    /// `strangler_gateway_config_reloads_total{result,trigger}`
    pub reloads: IntCounterVec,
    /// `strangler_gateway_config_last_reload_failed` 1 when the last reload attempt failed
    pub last_reload_failed: IntGauge,
    /// `strangler_gateway_config_info{version}` 1 for the version being served
    pub config_info: IntGaugeVec,
    /// `strangler_gateway_endpoint_ejections_total{upstream}`
    pub ejections: IntCounterVec,
    /// `strangler_gateway_otlp_spans_exported_total`
    pub spans_exported: IntCounter,
    /// `strangler_gateway_otlp_spans_dropped_total` (queue full or export failed)
    pub spans_dropped: IntCounter,
    /// `strangler_gateway_client_internal_headers_stripped_total`: `x-strangler-*` headers
    /// clients sent (the gateway owns that namespace and removes them).
    pub internal_headers_stripped: IntCounter,
    /// `strangler_gateway_access_log_dropped_total`: lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
    /// `strangler_gateway_auth_denied_total{route,reason}`: 401s and 403s the gateway answered.
    pub auth_denied: IntCounterVec,
    /// `strangler_gateway_rate_limited_total{route,consumer}`: 429s (consumer `-` when none).
    pub rate_limited: IntCounterVec,
    /// `strangler_gateway_rate_limit_fail_open_total`: requests let through because Redis did
    /// not answer within the budget.
    pub rate_limit_fail_open: IntCounter,
    /// `strangler_gateway_route_info{route,owner,stage}` 1 for every route being served.
    pub route_info: RouteInfo,
    /// `strangler_gateway_client_connections_open`: client connections being served.
    pub client_connections_open: IntGauge,
    /// `strangler_gateway_client_connections_closed_total{reason}`: client connections the
    /// gateway ended before a request was read (`header_timeout`, `bad_request_line`,
    /// `over_client_cap`), idle between requests (`keepalive_timeout`), or that the client gave
    /// up mid-head (`head_abandoned`).
    pub client_connections_closed: IntCounterVec,
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("strangler_gateway_requests_total", "Requests answered, by route, side and status class"),
            &["route", "side", "class"],
        )
        .expect("metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("strangler_gateway_request_duration_seconds", "Time from request to end of response")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route", "side"],
        )
        .expect("metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new("strangler_gateway_upstream_errors_total", "Upstream failures (connect, timeout, 5xx, other)"),
            &["upstream", "kind"],
        )
        .expect("metric");
        let retries = IntCounterVec::new(
            Opts::new("strangler_gateway_retries_total", "Retries and legacy fallbacks, by route"),
            &["route", "kind"],
        )
        .expect("metric");
        let reloads = IntCounterVec::new(
            Opts::new("strangler_gateway_config_reloads_total", "Config reload attempts by result and trigger"),
            &["result", "trigger"],
        )
        .expect("metric");
        let last_reload_failed = IntGauge::new(
            "strangler_gateway_config_last_reload_failed",
            "1 when the last config reload failed and an older config is serving",
        )
        .expect("metric");
        let config_info = IntGaugeVec::new(
            Opts::new("strangler_gateway_config_info", "The config version being served (value 1)"),
            &["version"],
        )
        .expect("metric");
        let ejections = IntCounterVec::new(
            Opts::new("strangler_gateway_endpoint_ejections_total", "Endpoints ejected by passive health checks"),
            &["upstream"],
        )
        .expect("metric");
        let spans_exported =
            IntCounter::new("strangler_gateway_otlp_spans_exported_total", "Request spans exported over OTLP")
                .expect("metric");
        let spans_dropped = IntCounter::new(
            "strangler_gateway_otlp_spans_dropped_total",
            "Request spans dropped (export queue full or export failed)",
        )
        .expect("metric");
        let internal_headers_stripped = IntCounter::new(
            "strangler_gateway_client_internal_headers_stripped_total",
            "x-strangler-* headers sent by clients and removed by the gateway",
        )
        .expect("metric");
        let access_log_dropped = IntCounter::new(
            "strangler_gateway_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind",
        )
        .expect("metric");
        let auth_denied = IntCounterVec::new(
            Opts::new(
                "strangler_gateway_auth_denied_total",
                "Requests refused for missing, bad or unauthorized credentials",
            ),
            &["route", "reason"],
        )
        .expect("metric");
        let rate_limited = IntCounterVec::new(
            Opts::new("strangler_gateway_rate_limited_total", "Requests refused with 429 by a rate limit"),
            &["route", "consumer"],
        )
        .expect("metric");
        let rate_limit_fail_open = IntCounter::new(
            "strangler_gateway_rate_limit_fail_open_total",
            "Requests let through because Redis (shared rate limits) did not answer in time",
        )
        .expect("metric");
        let route_info = RouteInfo::new();
        let client_connections_open =
            IntGauge::new("strangler_gateway_client_connections_open", "Client connections being served")
                .expect("metric");
        let client_connections_closed = IntCounterVec::new(
            Opts::new(
                "strangler_gateway_client_connections_closed_total",
                "Client connections ended before a request was read (header_timeout, bad_request_line, \
                 over_client_cap), idle between requests (keepalive_timeout) or given up by the client \
                 mid-head (head_abandoned)",
            ),
            &["reason"],
        )
        .expect("metric");
        for c in [
            Box::new(access_log_dropped.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(client_connections_open.clone()),
            Box::new(client_connections_closed.clone()),
            Box::new(route_info.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limit_fail_open.clone()),
            Box::new(auth_denied.clone()),
            Box::new(internal_headers_stripped.clone()),
            Box::new(requests.clone()),
            Box::new(latency.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(retries.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_failed.clone()),
            Box::new(config_info.clone()),
            Box::new(ejections.clone()),
            Box::new(spans_exported.clone()),
            Box::new(spans_dropped.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            upstream_errors,
            retries,
            reloads,
            last_reload_failed,
            config_info,
            ejections,
            spans_exported,
            spans_dropped,
            internal_headers_stripped,
            access_log_dropped,
            auth_denied,
            rate_limited,
            rate_limit_fail_open,
            route_info,
            client_connections_open,
            client_connections_closed,
        }
    })
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Lists the routes being served: (name, owner or `-`, stage).
    pub fn set_routes<'a>(&self, routes: impl Iterator<Item = (&'a str, &'a str, &'a str)>) {
        self.route_info.set(routes);
    }

    /// Marks `version` as the one serving.
    pub fn set_version(&self, version: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[version]).set(1);
    }
}

/// `strangler_gateway_route_info{route,owner,stage}`: 1 for every route being served, written
/// at each scrape from the list [`Metrics::set_routes`] keeps. A gauge series per route would
/// hold its own copy of the descriptor and label pairs (~700 bytes a route: 7 MB for 10,000
/// routes) and cost a hashed, validated series per route added at each reload.
#[derive(Clone)]
pub struct RouteInfo {
    desc: prometheus::core::Desc,
    routes: Arc<Mutex<RouteList>>,
}

/// (route, owner, stage) of each route, in routes.toml order.
type RouteList = Arc<[[Box<str>; 3]]>;

impl RouteInfo {
    fn new() -> Self {
        let desc = prometheus::core::Desc::new(
            "strangler_gateway_route_info".into(),
            "The routes being served, with their owner and stage (value 1)".into(),
            vec!["route".into(), "owner".into(), "stage".into()],
            Default::default(),
        )
        .expect("metric");
        Self { desc, routes: Arc::new(Mutex::new(Arc::from(Vec::new()))) }
    }

    fn set<'a>(&self, routes: impl Iterator<Item = (&'a str, &'a str, &'a str)>) {
        let list: RouteList = routes.map(|(r, o, s)| [r.into(), o.into(), s.into()]).collect();
        *self.routes.lock().unwrap_or_else(|p| p.into_inner()) = list;
    }
}

impl prometheus::core::Collector for RouteInfo {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
        let list = Arc::clone(&self.routes.lock().unwrap_or_else(|p| p.into_inner()));
        let metrics = list
            .iter()
            .map(|[route, owner, stage]| {
                // by label name, as the registry's own series are
                let labels = [("owner", owner), ("route", route), ("stage", stage)].map(|(n, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(n.to_string());
                    l.set_value(v.to_string());
                    l
                });
                let mut g = Gauge::default();
                g.set_value(1.0);
                let mut m = Metric::from_gauge(g);
                m.set_label(labels.to_vec());
                m
            })
            .collect();
        let mut f = MetricFamily::default();
        f.set_name(self.desc.fq_name.clone());
        f.set_help(self.desc.help.clone());
        f.set_field_type(MetricType::GAUGE);
        f.set_metric(metrics);
        vec![f]
    }
}

/// Pre-resolved handles for one side of one route.
#[derive(Clone)]
pub struct SideMetrics {
    /// Index = status / 100 (0 = no response).
    classes: [IntCounter; 6],
    latency: Histogram,
}

/// Handles for one route, resolved on first use: a route that never takes a request creates no
/// series (a 10,000-route file would otherwise create 140,000 series at every `check` and start,
/// and expose them all). After the first request of a side, recording is one atomic load more.
#[derive(Clone)]
pub struct RouteMetrics {
    route: Arc<str>,
    legacy: OnceLock<SideMetrics>,
    extracted: OnceLock<SideMetrics>,
    /// Where a recorded request marks the route as active (see [`RouteActivity`]); set when the
    /// route table is built.
    activity: Option<(Arc<RouteActivity>, u32)>,
}

/// Which routes of one route table recorded a request since a reader last took the marks: a
/// bit per route. The dashboard's sampler reads only the marked routes, so its tick costs what
/// the routes with traffic cost, not what the route count does. Marking is one relaxed load of
/// a word the request path shares with 63 other routes; the atomic `or` happens only when the
/// bit is clear (once per route between two readings).
#[derive(Debug)]
pub struct RouteActivity {
    words: Box<[AtomicU64]>,
}

impl RouteActivity {
    /// Marks for `routes` routes, all clear.
    pub fn new(routes: usize) -> Self {
        Self { words: (0..routes.div_ceil(64)).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Marks route `i`.
    #[inline]
    pub fn mark(&self, i: u32) {
        let (w, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if let Some(w) = self.words.get(w) {
            if w.load(Ordering::Relaxed) & bit == 0 {
                w.fetch_or(bit, Ordering::AcqRel);
            }
        }
    }

    /// Clears every mark, appending the indices of the marked routes to `out` (ascending).
    /// A request recorded while this runs is in this reading or marks its route again.
    pub fn take(&self, out: &mut Vec<usize>) {
        for (wi, w) in self.words.iter().enumerate() {
            if w.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = w.swap(0, Ordering::AcqRel);
            while bits != 0 {
                out.push(wi * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

impl SideMetrics {
    fn new(route: &str, side: &str) -> Self {
        let m = metrics();
        Self {
            classes: CLASSES.map(|c| m.requests.with_label_values(&[route, side, c])),
            latency: m.latency.with_label_values(&[route, side]),
        }
    }
}

/// What one side of one route has counted so far (for windows: subtract two snapshots).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideSnapshot {
    /// Requests answered (any status, or none).
    pub requests: u64,
    /// Of which 5xx (and requests that got no response at all).
    pub failed: u64,
    /// Latency histogram: (upper bound in seconds, cumulative count), the +Inf bucket last.
    pub buckets: Vec<(f64, u64)>,
}

impl SideSnapshot {
    /// `self - earlier`, bucket by bucket.
    pub fn since(&self, earlier: &SideSnapshot) -> SideSnapshot {
        SideSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            failed: self.failed.saturating_sub(earlier.failed),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, (le, n))| (*le, n.saturating_sub(earlier.buckets.get(i).map_or(0, |b| b.1))))
                .collect(),
        }
    }

    /// Share of requests that failed (None without requests).
    pub fn failure_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.failed as f64 / self.requests as f64)
    }

    /// The upper bound of the bucket holding quantile `q` (None without requests).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil() as u64;
        self.buckets.iter().find(|(_, n)| *n >= rank.max(1)).map(|(le, _)| *le)
    }
}

impl SideMetrics {
    fn snapshot(&self) -> SideSnapshot {
        use prometheus::core::Metric;
        let c = |i: usize| self.classes[i].get();
        let requests = (0..6).map(c).sum();
        let h = self.latency.metric();
        let hist = h.get_histogram();
        let mut buckets: Vec<(f64, u64)> =
            hist.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect();
        buckets.push((f64::INFINITY, hist.get_sample_count()));
        SideSnapshot { requests, failed: c(5) + c(0), buckets }
    }
}

impl SideMetrics {
    /// Requests by status class (index = status / 100, 0 = no response): atomic loads only.
    pub fn class_counts(&self) -> [u64; 6] {
        self.classes.each_ref().map(|c| c.get())
    }

    /// Requests the latency histogram has observed: one atomic load.
    pub fn latency_count(&self) -> u64 {
        self.latency.get_sample_count()
    }

    /// Cumulative counts of the latency histogram's finite buckets, into `out` (as many as fit).
    /// This builds Prometheus' protobuf form: read it only when [`Self::latency_count`] moved.
    pub fn latency_buckets(&self, out: &mut [u64]) {
        use prometheus::core::Metric;
        let proto = self.latency.metric();
        for (o, b) in out.iter_mut().zip(proto.get_histogram().get_bucket()) {
            *o = b.cumulative_count();
        }
    }
}

impl RouteMetrics {
    fn cell(&self, side: Side) -> &OnceLock<SideMetrics> {
        match side {
            Side::Legacy => &self.legacy,
            Side::Extracted => &self.extracted,
        }
    }

    /// One side's handles, resolved (the series exist from here on).
    fn resolved(&self, side: Side) -> &SideMetrics {
        self.cell(side).get_or_init(|| SideMetrics::new(&self.route, side.as_str()))
    }

    /// One side's handles if this table has recorded or read that side yet, for readers that
    /// must not create series (the dashboard's sampler; `None`: nothing new through this table).
    pub fn side(&self, side: Side) -> Option<&SideMetrics> {
        self.cell(side).get()
    }

    /// One side's handles, resolved: for a reader that knows the series exist already (it read
    /// requests on them through an earlier table), so resolving creates none.
    pub fn existing_side(&self, side: Side) -> &SideMetrics {
        self.resolved(side)
    }

    /// Makes recorded requests mark route `index` in `activity` (done once, when the route table
    /// is built).
    pub fn report_activity(&mut self, activity: &Arc<RouteActivity>, index: usize) {
        self.activity = u32::try_from(index).ok().map(|i| (Arc::clone(activity), i));
    }

    /// (legacy, extracted) counts so far (the series are shared by name across reloads).
    pub fn snapshot(&self) -> (SideSnapshot, SideSnapshot) {
        (self.resolved(Side::Legacy).snapshot(), self.resolved(Side::Extracted).snapshot())
    }

    pub fn new(route: &str) -> Self {
        Self { route: Arc::from(route), legacy: OnceLock::new(), extracted: OnceLock::new(), activity: None }
    }

    /// Records one finished request (and marks the route active, after the counts: a reader
    /// that clears the mark and then reads the counts sees this request now or at its next
    /// reading).
    #[inline]
    pub fn observe(&self, side: Side, status: u16, seconds: f64) {
        let s = self.resolved(side);
        let class = usize::from(status / 100).min(5);
        s.classes[class].inc();
        s.latency.observe(seconds);
        if let Some((a, i)) = &self.activity {
            a.mark(*i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_info_lists_the_routes_of_the_last_call_only() {
        let info = RouteInfo::new();
        let registry = Registry::new();
        registry.register(Box::new(info.clone())).unwrap();
        let render = || {
            let mut buf = Vec::new();
            TextEncoder::new().encode(&registry.gather(), &mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(render(), "", "no routes, no family");
        info.set([("orders", "team-orders", "canary"), ("b\"q", "-", "legacy")].into_iter());
        let text = render();
        assert!(text.contains("# TYPE strangler_gateway_route_info gauge\n"), "{text}");
        assert!(
            text.contains("strangler_gateway_route_info{owner=\"team-orders\",route=\"orders\",stage=\"canary\"} 1\n")
        );
        assert!(
            text.contains("strangler_gateway_route_info{owner=\"-\",route=\"b\\\"q\",stage=\"legacy\"} 1\n"),
            "{text}"
        );
        info.set([("orders", "team-orders", "extracted")].into_iter());
        let text = render();
        assert_eq!(text.matches("strangler_gateway_route_info{").count(), 1, "{text}");
        assert!(text.contains("route=\"orders\",stage=\"extracted\"} 1\n"), "{text}");
    }
}

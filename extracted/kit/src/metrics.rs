//! Prometheus metrics every service exposes on `/metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};
use strangler_wire::DryRun;

/// The kit's metrics, in a registry of the service's own (not the process-global one, so tests
/// can run several services in one process).
pub struct Metrics {
    registry: Registry,
    /// Requests by route template, method and status code.
    pub requests: IntCounterVec,
    /// Handler latency in seconds by route template and method.
    pub latency: HistogramVec,
    /// Requests run as shadow dry runs (always rolled back).
    pub shadow_dry_runs: IntCounter,
    /// Requests that carried the dry-run header without the right secret, and so committed like
    /// any other, by `reason` (`missing_secret`, `wrong_secret`, `not_configured`).
    pub shadow_header_ignored: IntCounterVec,
}

impl Metrics {
    /// Registers the metrics with `service` as a constant label.
    pub fn new(service: &str) -> Self {
        let registry = Registry::new_custom(None, Some([("service".to_string(), service.to_string())].into()))
            .expect("static registry config is valid");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["route", "method"],
        )
        .expect("valid metric");
        let shadow_dry_runs =
            IntCounter::new("kit_shadow_dry_runs_total", "Requests run as shadow dry runs (rolled back)")
                .expect("valid metric");
        let shadow_header_ignored = IntCounterVec::new(
            Opts::new(
                "kit_shadow_header_ignored_total",
                "Requests whose dry-run header was ignored (no or wrong secret, or none configured): they committed",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // every reason from the start, so an alert on any increase sees a 0 first
        for reason in [DryRun::MissingSecret, DryRun::WrongSecret, DryRun::NotConfigured].map(DryRun::rejection) {
            shadow_header_ignored.with_label_values(&[reason.expect("a rejection")]);
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(shadow_dry_runs.clone()),
            Box::new(shadow_header_ignored.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self { registry, requests, latency, shadow_dry_runs, shadow_header_ignored }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

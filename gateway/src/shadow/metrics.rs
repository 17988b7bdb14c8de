//! Shadow metrics, registered in the gateway's Prometheus registry. Per-route handles are
//! resolved once per route name, so counting is an atomic increment.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};

use crate::metrics::metrics;

struct ShadowMetrics {
    mirrored: IntCounterVec,
    compared: IntCounterVec,
    matched: IntCounterVec,
    mismatched: IntCounterVec,
    dropped: IntCounterVec,
    skipped: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    noise_fields: IntGaugeVec,
}

fn shadow_metrics() -> &'static ShadowMetrics {
    static M: OnceLock<ShadowMetrics> = OnceLock::new();
    M.get_or_init(|| {
        let c = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
        let m = ShadowMetrics {
            mirrored: c("strangler_shadow_mirrored_total", "Requests mirrored to the extracted upstream", &["route"]),
            compared: c("strangler_shadow_compared_total", "Mirrored requests whose two answers were compared", &["route"]),
            matched: c("strangler_shadow_matched_total", "Comparisons without differences (learnt noise aside)", &["route"]),
            mismatched: c("strangler_shadow_mismatched_total", "Comparisons with differences", &["route"]),
            dropped: c("strangler_shadow_dropped_total", "Mirrors dropped because the route's queue was full", &["route"]),
            skipped: c(
                "strangler_shadow_skipped_total",
                "Requests not mirrored or not compared, by reason (not_sampled, writes, oversize, incomplete, body_oversize)",
                &["route", "reason"],
            ),
            errors: c("strangler_shadow_errors_total", "Failed answers by side (legacy = primary, shadow = extracted)", &["route", "side"]),
            latency: HistogramVec::new(
                HistogramOpts::new("strangler_shadow_latency_seconds", "Latency of each side of mirrored requests")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["route", "side"],
            )
            .expect("metric"),
            noise_fields: IntGaugeVec::new(Opts::new("strangler_shadow_noise_fields", "Fields learnt as noise"), &["route"]).expect("metric"),
        };
        let reg = &metrics().registry;
        for col in [
            Box::new(m.mirrored.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.compared.clone()),
            Box::new(m.matched.clone()),
            Box::new(m.mismatched.clone()),
            Box::new(m.dropped.clone()),
            Box::new(m.skipped.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.noise_fields.clone()),
        ] {
            reg.register(col).expect("unique metric names");
        }
        m
    })
}

/// Pre-resolved handles for one route.
pub struct RouteShadowMetrics {
    pub mirrored: IntCounter,
    pub compared: IntCounter,
    pub matched: IntCounter,
    pub mismatched: IntCounter,
    pub dropped: IntCounter,
    pub not_sampled: IntCounter,
    pub writes: IntCounter,
    pub oversize: IntCounter,
    pub incomplete: IntCounter,
    pub body_oversize: IntCounter,
    pub errors_legacy: IntCounter,
    pub errors_shadow: IntCounter,
    pub latency_legacy: prometheus::Histogram,
    pub latency_shadow: prometheus::Histogram,
    pub noise_fields: prometheus::IntGauge,
}

impl RouteShadowMetrics {
    pub fn new(route: &str) -> Self {
        let m = shadow_metrics();
        let skipped = |reason: &str| m.skipped.with_label_values(&[route, reason]);
        Self {
            mirrored: m.mirrored.with_label_values(&[route]),
            compared: m.compared.with_label_values(&[route]),
            matched: m.matched.with_label_values(&[route]),
            mismatched: m.mismatched.with_label_values(&[route]),
            dropped: m.dropped.with_label_values(&[route]),
            not_sampled: skipped("not_sampled"),
            writes: skipped("writes"),
            oversize: skipped("oversize"),
            incomplete: skipped("incomplete"),
            body_oversize: skipped("body_oversize"),
            errors_legacy: m.errors.with_label_values(&[route, "legacy"]),
            errors_shadow: m.errors.with_label_values(&[route, "shadow"]),
            latency_legacy: m.latency.with_label_values(&[route, "legacy"]),
            latency_shadow: m.latency.with_label_values(&[route, "shadow"]),
            noise_fields: m.noise_fields.with_label_values(&[route]),
        }
    }
}

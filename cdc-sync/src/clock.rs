//! The two servers' clocks. Last-writer-wins compares a commit time of the source server's clock
//! with one of the target server's clock, so it assumes they agree; this module measures how far
//! apart they are and warns (log, `/status`, `/metrics`) when that is more than
//! `[clock] max_skew_ms`.
//!
//! Measuring: ask each server for `clock_timestamp()` and take our own clock before and after;
//! the server's reading is compared with the middle of that round trip. The skew is the target's
//! offset minus the source's (both against our clock, which cancels out); it is off by at most
//! half of each round trip, reported as the uncertainty. The sample with the shortest round trip
//! of a few is used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::config::ClockConfig;
use crate::connect::connect;
use crate::status::{ClockReading, Metrics};

/// One server's clock against ours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Server clock minus the middle of our round trip (µs).
    pub offset_us: f64,
    /// The round trip (µs).
    pub rtt_us: f64,
}

impl Sample {
    /// From our clock before the query, the round trip, and the server's reading.
    pub fn of(before: DateTime<Utc>, rtt: Duration, server: DateTime<Utc>) -> Sample {
        let rtt_us = rtt.as_secs_f64() * 1e6;
        let middle_us = before.timestamp_micros() as f64 + rtt_us / 2.0;
        Sample { offset_us: server.timestamp_micros() as f64 - middle_us, rtt_us }
    }
}

/// Sample a server's clock `n` times; the sample with the shortest round trip.
pub async fn sample(client: &Client, n: usize) -> Result<Sample, tokio_postgres::Error> {
    let mut best: Option<Sample> = None;
    for _ in 0..n.max(1) {
        let before = Utc::now();
        let started = Instant::now();
        let row = client.query_one("SELECT clock_timestamp()", &[]).await?;
        let s = Sample::of(before, started.elapsed(), row.get(0));
        if best.is_none_or(|b| s.rtt_us < b.rtt_us) {
            best = Some(s);
        }
    }
    Ok(best.expect("at least one sample"))
}

/// The reading from a sample of each server, against `bound_ms`.
pub fn reading(source: Sample, target: Sample, bound_ms: u64, at: DateTime<Utc>) -> ClockReading {
    let skew_ms = (target.offset_us - source.offset_us) / 1000.0;
    ClockReading {
        skew_ms: (skew_ms * 1000.0).round() / 1000.0,
        uncertainty_ms: ((source.rtt_us + target.rtt_us) / 2.0 / 1000.0 * 1000.0).round() / 1000.0,
        bound_ms,
        over_bound: skew_ms.abs() > bound_ms as f64,
        at: at.to_rfc3339(),
    }
}

/// Measure now: both servers, a few samples each.
pub async fn measure(source: &Client, target: &Client, bound_ms: u64) -> Result<ClockReading, tokio_postgres::Error> {
    let s = sample(source, 3).await?;
    let t = sample(target, 3).await?;
    Ok(reading(s, t, bound_ms, Utc::now()))
}

/// Measure every `cfg.check_interval_s` (first at once) and record it in each of `metrics`;
/// logs a warning when the skew goes over the bound and a note when it is back under. Runs
/// until dropped; a database that cannot be reached is tried again at the next interval.
pub async fn watch(source_conn: String, target_conn: String, cfg: ClockConfig, metrics: Vec<Arc<Metrics>>) {
    let mut clients: Option<(Client, Client)> = None;
    let mut over = false;
    loop {
        if clients.is_none() {
            if let (Ok(s), Ok(t)) = (connect(&source_conn).await, connect(&target_conn).await) {
                clients = Some((s, t));
            }
        }
        if let Some((s, t)) = &clients {
            match measure(s, t, cfg.max_skew_ms).await {
                Ok(r) => {
                    if r.over_bound && !over {
                        tracing::warn!(skew_ms = r.skew_ms, uncertainty_ms = r.uncertainty_ms, bound_ms = r.bound_ms,
                            "the source and target servers' clocks differ by more than [clock] max_skew_ms: last-writer-wins may pick the wrong winner");
                    } else if !r.over_bound && over {
                        tracing::info!(
                            skew_ms = r.skew_ms,
                            bound_ms = r.bound_ms,
                            "clock skew back within [clock] max_skew_ms"
                        );
                    }
                    over = r.over_bound;
                    for m in &metrics {
                        m.note_clock(r.clone());
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %crate::error::chain(&e), "measuring the clock skew failed; trying again later");
                    clients = None;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(cfg.check_interval_s)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_us(us: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_700_000_000_000_000 + us).unwrap()
    }

    #[test]
    fn skew_is_the_difference_of_offsets_measured_at_the_middle_of_each_round_trip() {
        // source: asked at 0, answered in 2 ms, read 1 ms (in step with us)
        let s = Sample::of(at_us(0), Duration::from_millis(2), at_us(1_000));
        assert_eq!((s.offset_us, s.rtt_us), (0.0, 2000.0));
        // target: asked at 10 ms, answered in 4 ms, read 262 ms: 250 ms ahead
        let t = Sample::of(at_us(10_000), Duration::from_millis(4), at_us(262_000));
        assert_eq!(t.offset_us, 250_000.0);
        let r = reading(s, t, 200, at_us(0));
        assert_eq!((r.skew_ms, r.uncertainty_ms, r.over_bound), (250.0, 3.0, true));
        assert!(r.warning().unwrap().contains("250.000 ms"), "{:?}", r.warning());
        let r = reading(t, s, 300, at_us(0));
        assert_eq!((r.skew_ms, r.over_bound), (-250.0, false));
        assert_eq!(r.warning(), None);
        // a bound of 0: any measured difference is over it
        assert!(reading(s, Sample { offset_us: 1.0, rtt_us: 10.0 }, 0, at_us(0)).over_bound);
    }
}

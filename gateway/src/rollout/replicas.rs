//! What several gateway replicas share for the gates: each replica's per-route counters
//! ([`Measure`]), published to the store, and windows summed over every replica, so the leader
//! judges the traffic all replicas served, not only its own.
//!
//! Counters are cumulative per replica process, so a window is the sum over replicas of
//! (now − start) *per replica*: a replica that stops publishing (gone or stale) simply stops
//! contributing instead of making the sum go backwards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::gates::Measure;
use crate::metrics::SideSnapshot;

/// One replica's counters, by route name.
pub type RouteMeasures = BTreeMap<String, Measure>;

/// Every replica's counters of one route, by replica id.
pub type ReplicaMeasures = BTreeMap<String, Measure>;

/// The counters of `route` from every replica in `all` (replica → its routes), with this
/// replica's own fresh `local` counters in place of what it published earlier.
pub fn of_route(all: &BTreeMap<String, RouteMeasures>, me: &str, route: &str, local: Measure) -> ReplicaMeasures {
    let mut out: ReplicaMeasures = all
        .iter()
        .filter(|(r, _)| r.as_str() != me)
        .filter_map(|(r, m)| Some((r.clone(), m.get(route)?.clone())))
        .collect();
    out.insert(me.to_string(), local);
    out
}

/// What happened between `start` and `now`, summed over replicas. A replica absent from
/// `start` (it appeared later) counts from zero; one absent from `now` (stale) counts nothing.
pub fn window(now: &ReplicaMeasures, start: &ReplicaMeasures) -> Measure {
    now.iter().fold(Measure::default(), |acc, (replica, m)| {
        let since = m.since(start.get(replica).unwrap_or(&Measure::default()));
        plus(&acc, &since)
    })
}

fn plus(a: &Measure, b: &Measure) -> Measure {
    Measure {
        legacy: side_plus(&a.legacy, &b.legacy),
        extracted: side_plus(&a.extracted, &b.extracted),
        compared: a.compared + b.compared,
        matched: a.matched + b.matched,
    }
}

/// Bucket by bucket (every replica runs the same binary, so the bounds agree; the longer list
/// gives them).
fn side_plus(a: &SideSnapshot, b: &SideSnapshot) -> SideSnapshot {
    let (long, short) = if a.buckets.len() >= b.buckets.len() { (a, b) } else { (b, a) };
    SideSnapshot {
        requests: a.requests + b.requests,
        failed: a.failed + b.failed,
        buckets: long
            .buckets
            .iter()
            .enumerate()
            .map(|(i, (le, n))| (*le, n + short.buckets.get(i).map_or(0, |x| x.1)))
            .collect(),
    }
}

/// [`Measure`] as stored (JSON has no infinity: the +Inf bucket's bound is `null`).
#[derive(Debug, Serialize, Deserialize)]
struct WireMeasure {
    legacy: WireSide,
    extracted: WireSide,
    compared: u64,
    matched: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireSide {
    requests: u64,
    failed: u64,
    buckets: Vec<(Option<f64>, u64)>,
}

impl From<&SideSnapshot> for WireSide {
    fn from(s: &SideSnapshot) -> Self {
        WireSide {
            requests: s.requests,
            failed: s.failed,
            buckets: s.buckets.iter().map(|(le, n)| (le.is_finite().then_some(*le), *n)).collect(),
        }
    }
}

impl From<WireSide> for SideSnapshot {
    fn from(s: WireSide) -> Self {
        SideSnapshot {
            requests: s.requests,
            failed: s.failed,
            buckets: s.buckets.into_iter().map(|(le, n)| (le.unwrap_or(f64::INFINITY), n)).collect(),
        }
    }
}

/// One replica's counters as a JSON value (for the store).
pub fn to_json(m: &RouteMeasures) -> serde_json::Value {
    let wire: BTreeMap<&str, WireMeasure> = m
        .iter()
        .map(|(route, m)| {
            (
                route.as_str(),
                WireMeasure {
                    legacy: (&m.legacy).into(),
                    extracted: (&m.extracted).into(),
                    compared: m.compared,
                    matched: m.matched,
                },
            )
        })
        .collect();
    serde_json::to_value(wire).expect("measures serialize")
}

/// One replica's counters back from the store (None when the value is not ours).
pub fn from_json(v: serde_json::Value) -> Option<RouteMeasures> {
    let wire: BTreeMap<String, WireMeasure> = serde_json::from_value(v).ok()?;
    Some(
        wire.into_iter()
            .map(|(route, w)| {
                let m = Measure {
                    legacy: w.legacy.into(),
                    extracted: w.extracted.into(),
                    compared: w.compared,
                    matched: w.matched,
                };
                (route, m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(requests: u64, failed: u64) -> SideSnapshot {
        SideSnapshot { requests, failed, buckets: vec![(0.01, requests), (f64::INFINITY, requests)] }
    }

    fn m(requests: u64, compared: u64) -> Measure {
        Measure { legacy: side(requests, 0), extracted: side(requests, 1), compared, matched: compared }
    }

    #[test]
    fn windows_sum_per_replica_deltas() {
        let start: ReplicaMeasures = [("a".to_string(), m(10, 5)), ("b".to_string(), m(100, 50))].into();
        // a grew by 5, b by 20, c is new (counts from zero); a stale replica would be absent
        let now: ReplicaMeasures =
            [("a".to_string(), m(15, 5)), ("b".to_string(), m(120, 70)), ("c".to_string(), m(3, 3))].into();
        let w = window(&now, &start);
        assert_eq!((w.legacy.requests, w.compared, w.matched), (28, 23, 23));
        assert_eq!(w.extracted.failed, 1, "c's failure; a's and b's were before the window");
        assert_eq!(w.legacy.buckets, vec![(0.01, 28), (f64::INFINITY, 28)]);
        // b gone: the sum does not go backwards, it just stops counting b
        let gone: ReplicaMeasures = [("a".to_string(), m(15, 5))].into();
        assert_eq!(window(&gone, &start).legacy.requests, 5);
    }

    #[test]
    fn measures_round_trip_through_json_with_the_infinite_bucket() {
        let mine: RouteMeasures = [("items".to_string(), m(7, 2))].into();
        let v = to_json(&mine);
        assert!(v["items"]["legacy"]["buckets"][1][0].is_null(), "{v}");
        let back = from_json(v).unwrap();
        assert_eq!(back, mine);
        assert_eq!(from_json(serde_json::json!({"items": 3})), None);

        let all: BTreeMap<String, RouteMeasures> =
            [("me".to_string(), mine.clone()), ("other".to_string(), mine)].into();
        let r = of_route(&all, "me", "items", m(9, 0));
        assert_eq!((r["me"].legacy.requests, r["other"].legacy.requests), (9, 7));
    }
}

//! Picking a share of events (requests to mirror, requests to log) without randomness: a Weyl
//! sequence, so the share is exact in aggregate and the choice costs one atomic increment.

use std::sync::atomic::{AtomicU64, Ordering};

/// 2^64 / golden ratio: successive multiples are a low-discrepancy (Weyl) sequence.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Picks a share of requests: a Weyl sequence, so the share is exact in aggregate.
#[derive(Debug)]
pub struct Sampler {
    share: f64,
    threshold: u64,
    counter: AtomicU64,
}

impl Sampler {
    pub fn new(share: f64) -> Self {
        let share = share.clamp(0.0, 1.0);
        Self { share, threshold: (share * 18_446_744_073_709_551_616.0) as u64, counter: AtomicU64::new(0) }
    }

    /// The share this sampler picks.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Whether this request is in the sample.
    #[inline]
    pub fn sampled(&self) -> bool {
        if self.share >= 1.0 {
            return true;
        }
        if self.share <= 0.0 {
            return false;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        n.wrapping_add(1).wrapping_mul(GOLDEN) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_share_is_exact_in_aggregate() {
        for s in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let p = Sampler::new(s);
            let n = (0..10_000).filter(|_| p.sampled()).count();
            assert!((n as f64 / 100.0 - s * 100.0).abs() < 0.2, "sample {s}: {n}");
        }
    }
}

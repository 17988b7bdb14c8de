//! What a streaming direction does after an error: retry from the checkpoint after a capped,
//! jittered exponential backoff, re-apply one change at a time to pin the failing row, or stop.
//! Pure logic (no I/O), so the policy is unit-tested.

use std::time::Duration;

use rand::Rng;

use crate::error::ErrorKind;
use crate::model::Lsn;

/// Backoff and escalation limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Pause before the first retry.
    pub first_delay: Duration,
    /// Longest pause between retries.
    pub max_delay: Duration,
    /// Consecutive failed attempts after which a transient error stops the pipeline too —
    /// except a server being unavailable (connection, shutdown), which is waited out.
    pub max_attempts: u32,
    /// An attempt that streamed this long counts as healthy: the next error starts a fresh
    /// count, even if nothing was applied (an idle source).
    pub healthy_after: Duration,
}

impl Default for RetryPolicy {
    /// 200 ms doubling up to 30 s; escalate at the 20th consecutive failure (about 7 minutes
    /// of trying) unless the server is unavailable; an attempt that streamed a minute or
    /// applied anything resets the count.
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_attempts: 20,
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `attempt` (1-based): `first_delay * 2^(attempt-1)`, capped
    /// at `max_delay`, then jittered to a uniformly random value in its upper half (so
    /// instances that failed together do not retry in lockstep).
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let exp = self.first_delay.saturating_mul(1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX));
        let base = exp.min(self.max_delay);
        let half = base / 2;
        half + half.mul_f64(rng.gen_range(0.0..=1.0))
    }
}

/// Why a direction stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The error needs a human (data or schema).
    Fatal,
    /// A transient error kept repeating: this many consecutive failures.
    Repeated(u32),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Resume from the checkpoint after `delay`.
    Retry {
        /// The pause.
        delay: Duration,
    },
    /// Resume from the checkpoint now, applying and committing source transactions up to this
    /// commit LSN one change at a time, so the change that fails is named exactly.
    Isolate {
        /// Re-apply one at a time through here.
        through: Lsn,
    },
    /// Stop the direction.
    Stop(StopReason),
}

/// One failed attempt, as far as the retry decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Its kind.
    pub kind: ErrorKind,
    /// Is the failing change known exactly? (Only matters for fatal kinds.)
    pub pinned: bool,
    /// The highest source commit LSN the failing statement or transaction covered.
    pub up_to: Option<Lsn>,
    /// Did the attempt make progress (applied something, or streamed long enough)?
    pub progressed: bool,
}

/// The retry state of one direction.
#[derive(Debug, Clone)]
pub struct Retrier {
    policy: RetryPolicy,
    failures: u32,
    isolate_through: Option<Lsn>,
}

impl Retrier {
    /// A fresh state.
    pub fn new(policy: RetryPolicy) -> Self {
        Retrier { policy, failures: 0, isolate_through: None }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Consecutive failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// While pinning a failing change: apply source transactions up to this LSN one change at
    /// a time. Stays set across retries (a connection error while pinning keeps pinning).
    pub fn isolate_through(&self) -> Option<Lsn> {
        self.isolate_through
    }

    /// Decide what follows a failed attempt.
    pub fn next(&mut self, f: Failure, rng: &mut impl Rng) -> Next {
        if f.progressed {
            self.failures = 0;
        }
        self.failures += 1;
        if !f.kind.is_transient() {
            return match (f.pinned, f.up_to, self.isolate_through) {
                // the first time a batch fails without naming its row: pin it
                (false, Some(through), None) => {
                    self.isolate_through = Some(through);
                    Next::Isolate { through }
                }
                _ => Next::Stop(StopReason::Fatal),
            };
        }
        if self.failures >= self.policy.max_attempts && !f.kind.is_unavailable() {
            return Next::Stop(StopReason::Repeated(self.failures));
        }
        Next::Retry { delay: self.policy.delay(self.failures, rng) }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn failure(kind: ErrorKind) -> Failure {
        Failure { kind, pinned: true, up_to: None, progressed: false }
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_in_the_upper_half() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=40u32 {
            let base = (p.first_delay * 2u32.saturating_pow(attempt - 1).min(1 << 20)).min(p.max_delay);
            for _ in 0..50 {
                let d = p.delay(attempt, &mut rng);
                assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?} not in [{:?}, {base:?}]", base / 2);
            }
        }
        // jitter: not every pause is the same
        let ds: Vec<Duration> = (0..20).map(|_| p.delay(5, &mut rng)).collect();
        assert!(ds.iter().any(|d| *d != ds[0]), "{ds:?}");
        assert_eq!(p.delay(200, &mut rng).max(p.max_delay), p.max_delay);
    }

    #[test]
    fn transient_errors_retry_until_the_limit_then_stop() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut r = Retrier::new(RetryPolicy::default());
        for kind in [ErrorKind::Connection, ErrorKind::Shutdown, ErrorKind::Conflict, ErrorKind::Resources] {
            let mut r = Retrier::new(RetryPolicy::default());
            assert!(matches!(r.next(failure(kind), &mut rng), Next::Retry { .. }), "{kind}");
        }
        for i in 1..20 {
            assert!(matches!(r.next(failure(ErrorKind::Connection), &mut rng), Next::Retry { .. }), "attempt {i}");
        }
        assert_eq!(r.next(failure(ErrorKind::Other), &mut rng), Next::Stop(StopReason::Repeated(20)));
    }

    #[test]
    fn an_unavailable_server_is_waited_out_at_the_capped_pause() {
        let mut rng = StdRng::seed_from_u64(4);
        let p = RetryPolicy::default();
        for kind in [ErrorKind::Connection, ErrorKind::Shutdown] {
            let mut r = Retrier::new(p);
            for i in 1..=200 {
                match r.next(failure(kind), &mut rng) {
                    Next::Retry { delay } => assert!(delay <= p.max_delay, "{kind} attempt {i}: {delay:?}"),
                    n => panic!("{kind} attempt {i}: {n:?}"),
                }
            }
            assert_eq!(r.failures(), 200);
            // anything else that keeps failing is still escalated
            assert_eq!(r.next(failure(ErrorKind::Resources), &mut rng), Next::Stop(StopReason::Repeated(201)));
        }
    }

    #[test]
    fn progress_resets_the_count() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut r = Retrier::new(RetryPolicy::default());
        for _ in 0..19 {
            r.next(failure(ErrorKind::Connection), &mut rng);
        }
        let again = Failure { progressed: true, ..failure(ErrorKind::Connection) };
        assert!(matches!(r.next(again, &mut rng), Next::Retry { .. }));
        assert_eq!(r.failures(), 1);
    }

    #[test]
    fn data_and_schema_errors_stop_once_the_row_is_known() {
        let mut rng = StdRng::seed_from_u64(3);
        for kind in [ErrorKind::Data, ErrorKind::Schema] {
            let mut r = Retrier::new(RetryPolicy::default());
            assert_eq!(r.next(failure(kind), &mut rng), Next::Stop(StopReason::Fatal));
        }
        // a batch failed: pin the row first, then stop
        let mut r = Retrier::new(RetryPolicy::default());
        let batch = Failure { kind: ErrorKind::Data, pinned: false, up_to: Some(Lsn(500)), progressed: false };
        assert_eq!(r.next(batch, &mut rng), Next::Isolate { through: Lsn(500) });
        assert_eq!(r.isolate_through(), Some(Lsn(500)));
        // a connection error while pinning keeps pinning
        assert!(matches!(r.next(failure(ErrorKind::Connection), &mut rng), Next::Retry { .. }));
        assert_eq!(r.isolate_through(), Some(Lsn(500)));
        let row = Failure { kind: ErrorKind::Data, pinned: true, up_to: Some(Lsn(400)), progressed: true };
        assert_eq!(r.next(row, &mut rng), Next::Stop(StopReason::Fatal));
        // not pinned even one change at a time (e.g. a deferred constraint at COMMIT): stop
        let mut r = Retrier::new(RetryPolicy::default());
        assert_eq!(r.next(batch, &mut rng), Next::Isolate { through: Lsn(500) });
        assert_eq!(r.next(batch, &mut rng), Next::Stop(StopReason::Fatal));
        // a fatal error tied to no change at all (schema drift): stop at once
        let mut r = Retrier::new(RetryPolicy::default());
        let drift = Failure { kind: ErrorKind::Schema, pinned: false, up_to: None, progressed: false };
        assert_eq!(r.next(drift, &mut rng), Next::Stop(StopReason::Fatal));
    }
}

//! The sync file's retry keys in `[replication]` (`retry_initial_ms`, `retry_max_ms`,
//! `retry_max_attempts`): the backoff and escalation of every retry `run` makes — a streaming
//! direction resuming from its checkpoint, preparing the pipeline again, taking the instance
//! lock. Part of [`crate::config`].

use std::time::Duration;

use toml::Spanned;

use crate::retry::RetryPolicy;

/// The raw keys, as `[replication]` holds them.
#[derive(Debug, Default)]
pub(super) struct RawRetry<'a> {
    pub initial_ms: Option<&'a Spanned<i64>>,
    pub max_ms: Option<&'a Spanned<i64>>,
    pub max_attempts: Option<&'a Spanned<i64>>,
}

/// Longest pause that may be configured (1 hour).
const MAX_PAUSE_MS: i64 = 3_600_000;

/// The retry policy the keys describe (defaults: [`RetryPolicy::default`]); every problem is
/// pushed with its place.
pub(super) fn retry_policy(raw: RawRetry<'_>, push: &mut dyn FnMut(std::ops::Range<usize>, String)) -> RetryPolicy {
    let d = RetryPolicy::default();
    let mut ranged = |key: &str, v: Option<&Spanned<i64>>, lo: i64, hi: i64, default: i64| -> i64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if n < lo || n > hi {
            push(v.span(), format!("[replication] {key} = {n} must be between {lo} and {hi}"));
            return default;
        }
        n
    };
    let initial = ranged("retry_initial_ms", raw.initial_ms, 1, MAX_PAUSE_MS, d.first_delay.as_millis() as i64);
    let max = ranged("retry_max_ms", raw.max_ms, 1, MAX_PAUSE_MS, d.max_delay.as_millis() as i64);
    let attempts = ranged("retry_max_attempts", raw.max_attempts, 1, 1_000_000, d.max_attempts as i64);
    let max = if max < initial {
        let span = raw.max_ms.or(raw.initial_ms).map(|s| s.span()).unwrap_or(0..0);
        push(
            span,
            format!("[replication] retry_max_ms = {max} is below retry_initial_ms = {initial}: the pause only grows"),
        );
        initial
    } else {
        max
    };
    RetryPolicy {
        first_delay: Duration::from_millis(initial as u64),
        max_delay: Duration::from_millis(max as u64),
        max_attempts: attempts as u32,
        ..d
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{env, GOOD};
    use super::super::*;
    use super::*;

    fn with(lines: &str) -> String {
        GOOD.replace("[[table]]", &format!("[replication]\n{lines}\n[[table]]"))
    }

    #[test]
    fn defaults_and_values() {
        let c = parse_with_env("s.toml", GOOD, &env).unwrap();
        assert_eq!(c.replication.retry, RetryPolicy::default());
        let c =
            parse_with_env("s.toml", &with("retry_initial_ms = 50\nretry_max_ms = 400\nretry_max_attempts = 3"), &env)
                .unwrap();
        let r = c.replication.retry;
        assert_eq!(
            (r.first_delay, r.max_delay, r.max_attempts),
            (Duration::from_millis(50), Duration::from_millis(400), 3)
        );
        assert_eq!(r.healthy_after, RetryPolicy::default().healthy_after);
    }

    #[test]
    fn bad_values_are_reported_with_their_place() {
        let text = with("retry_initial_ms = 0\nretry_max_ms = 99999999\nretry_max_attempts = -1");
        let e = parse_with_env("s.toml", &text, &env).unwrap_err().to_string();
        assert!(e.contains("s.toml:9:20: [replication] retry_initial_ms = 0 must be between 1 and 3600000"), "{e}");
        assert!(e.contains("s.toml:10:16: [replication] retry_max_ms = 99999999"), "{e}");
        assert!(e.contains("s.toml:11:22: [replication] retry_max_attempts = -1"), "{e}");
        let e = parse_with_env("s.toml", &with("retry_initial_ms = 500\nretry_max_ms = 100"), &env).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("s.toml:10:16: [replication] retry_max_ms = 100 is below retry_initial_ms = 500"), "{e}");
        let e = parse_with_env("s.toml", &with("retry_max_ms = \"1s\""), &env).unwrap_err().to_string();
        assert!(e.contains("s.toml:9:16:"), "{e}");
    }
}

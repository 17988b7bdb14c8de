//! The sync file's keys for both directions: a table's conflict policy and the `[clock]`
//! section (the clock-skew watch), with their validation. Part of [`crate::config`].

use serde::Deserialize;
use toml::Spanned;

/// How a `direction = "both"` table resolves a conflict: an incoming change meeting a version of
/// the row that the other side had not seen when it made the change (see
/// [`crate::apply::conflict`]). `source` and `target` are the sync file's: legacy and service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The version with the later commit time wins (default); needs clocks in step.
    #[default]
    Lww,
    /// The source's (legacy's) version wins.
    SourceWins,
    /// The target's (service's) version wins.
    TargetWins,
}

impl ConflictPolicy {
    /// The sync file's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::Lww => "lww",
            ConflictPolicy::SourceWins => "source_wins",
            ConflictPolicy::TargetWins => "target_wins",
        }
    }
}

/// `[clock]`: watching the clocks of the two servers, which last-writer-wins compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockConfig {
    /// Warn (status, log, metric) when the servers' clocks differ by more than this (ms,
    /// default 500).
    pub max_skew_ms: u64,
    /// Measure every this many seconds (default 30).
    pub check_interval_s: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig { max_skew_ms: 500, check_interval_s: 30 }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClock {
    max_skew_ms: Option<Spanned<i64>>,
    check_interval_s: Option<Spanned<i64>>,
}

/// A table's `conflict` key: only for `direction = "both"` (the other directions have no
/// conflicts to resolve).
pub(super) fn table_conflict(
    conflict: Option<&Spanned<ConflictPolicy>>,
    both: bool,
    table: &str,
    push: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> ConflictPolicy {
    let Some(c) = conflict else { return ConflictPolicy::default() };
    if !both {
        push(
            c.span(),
            format!(
                "table {table}: `conflict` only applies to direction = \"both\" (conflicts need writes on both sides)"
            ),
        );
    }
    *c.get_ref()
}

/// The `[clock]` section, with defaults.
pub(super) fn clock_config(
    raw: Option<&Spanned<RawClock>>,
    push: &mut dyn FnMut(std::ops::Range<usize>, String),
) -> ClockConfig {
    let mut c = ClockConfig::default();
    let Some(raw) = raw else { return c };
    if let Some(v) = &raw.get_ref().max_skew_ms {
        match u64::try_from(*v.get_ref()) {
            Ok(ms) => c.max_skew_ms = ms,
            Err(_) => push(v.span(), "[clock] max_skew_ms must be 0 or more (milliseconds)".to_string()),
        }
    }
    if let Some(v) = &raw.get_ref().check_interval_s {
        match u64::try_from(*v.get_ref()) {
            Ok(s) if (1..=86_400).contains(&s) => c.check_interval_s = s,
            _ => push(v.span(), "[clock] check_interval_s must be between 1 and 86400 (seconds)".to_string()),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_with_env;
    use crate::config::tests::{env, GOOD};

    #[test]
    fn conflict_policy_per_table_and_the_clock_bound() {
        let c = parse_with_env("s.toml", GOOD, &env).unwrap();
        assert_eq!((c.tables[0].conflict, c.clock), (ConflictPolicy::Lww, ClockConfig::default()));
        let with = GOOD
            .replace("direction = \"both\"", "direction = \"both\"\nconflict = \"target_wins\"")
            .replace("[[table]]", "[clock]\nmax_skew_ms = 0\ncheck_interval_s = 5\n[[table]]");
        let c = parse_with_env("s.toml", &with, &env).unwrap();
        assert_eq!(c.tables[0].conflict, ConflictPolicy::TargetWins);
        assert_eq!(c.clock, ClockConfig { max_skew_ms: 0, check_interval_s: 5 });
        // an unknown policy, a policy on a one-way table, bad clock values: every one, with its place
        let bad = GOOD
            .replace("direction = \"both\"", "conflict = \"newest\"")
            .replace("[[table]]", "[clock]\nmax_skew_ms = -1\ncheck_interval_s = 0\n[[table]]");
        let e = parse_with_env("s.toml", &bad, &env).unwrap_err().to_string();
        assert!(e.contains("s.toml:15:12") && e.contains("lww") && e.contains("target_wins"), "{e}");
        let bad = GOOD
            .replace("direction = \"both\"", "conflict = \"source_wins\"")
            .replace("[[table]]", "[clock]\nmax_skew_ms = -1\ncheck_interval_s = 0\n[[table]]");
        let e = parse_with_env("s.toml", &bad, &env).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.problems.len(), 3, "{text}");
        assert!(text.contains("s.toml:9:15: [clock] max_skew_ms must be 0 or more"), "{text}");
        assert!(text.contains("s.toml:10:20: [clock] check_interval_s must be between 1 and 86400"), "{text}");
        assert!(
            text.contains("s.toml:15:12: table products: `conflict` only applies to direction = \"both\""),
            "{text}"
        );
    }
}

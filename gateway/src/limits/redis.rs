//! Shared rate limits in Redis: the same GCRA as the local limiter, run as one Lua script so
//! the read-modify-write is atomic and every gateway uses Redis's clock (`TIME`).
//!
//! The connection (the redis crate's multiplexed connection) lives on a one-thread runtime of
//! its own, which also reconnects in the background. The request path only clones the handle
//! and waits at most `budget`: a slow, broken or absent Redis lets the request through (fail
//! open), counted in `strangler_gateway_rate_limit_fail_open_total` and logged once per outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use super::rules::RateLimit;
use crate::metrics::metrics;

/// GCRA: KEYS[1] holds the theoretical arrival time in microseconds; ARGV = interval (µs),
/// burst. Returns {allowed, remaining, wait µs}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local diff = tat + interval - now
if diff > tolerance then
  return {0, 0, diff - tolerance}
end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(diff / 1000) + 1)
return {1, math.floor((tolerance - diff) / interval), 0}
";

/// `[gateway.redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    /// The longest a request waits for Redis.
    pub budget: Duration,
    /// Prefix of every key.
    pub prefix: String,
}

/// What Redis decided.
pub enum Verdict {
    Allowed {
        remaining: u32,
    },
    Limited {
        wait: Duration,
    },
    /// Redis did not answer within the budget or failed: let the request through.
    Unavailable,
}

/// A connection to Redis shared by every request, kept up in the background.
pub struct RedisStore {
    settings: RedisSettings,
    conn: Arc<ArcSwapOption<MultiplexedConnection>>,
    broken: Arc<AtomicBool>,
    down_logged: AtomicBool,
    script: redis::Script,
    _runtime: tokio::runtime::Runtime,
}

impl RedisStore {
    /// Starts the connection runtime and connects, waiting at most a second: the gateway starts
    /// even when Redis is down, and keeps trying in the background.
    pub fn start(settings: RedisSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.as_str())?;
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("redis").enable_all().build()?;
        let conn: Arc<ArcSwapOption<MultiplexedConnection>> = Arc::new(ArcSwapOption::empty());
        let broken = Arc::new(AtomicBool::new(true));
        let first = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection()).await
        });
        match first {
            Ok(Ok(c)) => {
                conn.store(Some(Arc::new(c)));
                broken.store(false, Ordering::Relaxed);
            }
            _ => {
                tracing::warn!(url = %settings.url, "Redis is unavailable at start: shared rate limits fail open until it answers")
            }
        }
        let (c, b) = (conn.clone(), broken.clone());
        runtime.spawn(async move {
            loop {
                if b.load(Ordering::Relaxed) {
                    let attempt =
                        tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection());
                    if let Ok(Ok(new)) = attempt.await {
                        c.store(Some(Arc::new(new)));
                        b.store(false, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Self {
            settings,
            conn,
            broken,
            down_logged: AtomicBool::new(false),
            script: redis::Script::new(GCRA),
            _runtime: runtime,
        })
    }

    /// Takes one request from the bucket `key` of `limit`, waiting at most the budget.
    pub async fn check(&self, limit: &RateLimit, key: &str) -> Verdict {
        let Some(conn) = self.conn.load_full() else {
            return self.unavailable("not connected");
        };
        let mut conn = (*conn).clone();
        let full_key = format!("{}:{key}", self.settings.prefix);
        let mut inv = self.script.key(full_key);
        inv.arg(limit.interval().as_micros() as u64).arg(limit.burst);
        match tokio::time::timeout(self.settings.budget, inv.invoke_async::<(i64, i64, i64)>(&mut conn)).await {
            Ok(Ok((allowed, remaining, wait))) => {
                if self.down_logged.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: shared rate limits apply");
                }
                if allowed == 1 {
                    Verdict::Allowed { remaining: remaining.max(0) as u32 }
                } else {
                    Verdict::Limited { wait: Duration::from_micros(wait.max(0) as u64) }
                }
            }
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.conn.store(None);
                    self.broken.store(true, Ordering::Relaxed);
                }
                self.unavailable(&e.to_string())
            }
            Err(_) => self.unavailable("no answer within the budget"),
        }
    }

    fn unavailable(&self, why: &str) -> Verdict {
        metrics().rate_limit_fail_open.inc();
        if !self.down_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!("Redis is unavailable ({why}): shared rate limits fail open until it answers again");
        }
        Verdict::Unavailable
    }
}

//! The rate limiter the proxy owns: the serving route table's limits bound to their buckets.
//! Local buckets are governor's keyed GCRA (a well-kept crate; keyed by a hash of the consumer's
//! name and the client IP, no allocation per request); shared ones go to [`RedisStore`].
//!
//! Like the shadow service, the table holds only rules: the first limited request after a reload
//! binds the new table (one lock, once per table), reusing the buckets of every limit whose
//! route name, position and rule are unchanged, so a reload does not reset the counts.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::redis::{RedisSettings, RedisStore, Verdict};
use super::rules::RateLimit;
use crate::table::RouteTable;

/// The key of one local bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    /// FNV-1a of the consumer's name (0: not counted by consumer).
    consumer: u64,
    ip: Option<IpAddr>,
}

type Keyed = RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// One limit of one route with its buckets.
struct Bucket {
    route: String,
    index: usize,
    rule: RateLimit,
    local: Option<Keyed>,
}

struct Binding {
    table: Weak<RouteTable>,
    routes: Vec<Option<Arc<[Arc<Bucket>]>>>,
}

/// A request over a limit.
#[derive(Debug, Clone)]
pub struct Limited {
    /// The limit that refused it.
    pub rule: RateLimit,
    /// When a request of this key would be let through again.
    pub wait: Duration,
}

/// Rate limits of every route; owned by the proxy.
pub struct LimitService {
    binding: ArcSwap<Binding>,
    bind_lock: Mutex<()>,
    redis: Option<RedisStore>,
    clock: DefaultClock,
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

impl LimitService {
    /// A limiter without Redis when `redis` is `None` (shared limits then count locally).
    /// Starts a thread that forgets idle local buckets every 30 s.
    pub fn start(redis: Option<RedisSettings>) -> anyhow::Result<Arc<Self>> {
        let redis = redis.map(RedisStore::start).transpose()?;
        let me = Arc::new(Self {
            binding: ArcSwap::from_pointee(Binding { table: Weak::new(), routes: Vec::new() }),
            bind_lock: Mutex::new(()),
            redis,
            clock: DefaultClock::default(),
        });
        let weak = Arc::downgrade(&me);
        std::thread::Builder::new().name("limits-gc".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(30));
            let Some(me) = weak.upgrade() else { return };
            for b in me.binding.load().routes.iter().flatten().flat_map(|r| r.iter()) {
                if let Some(l) = &b.local {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
            }
        })?;
        Ok(me)
    }

    /// Takes one request from every limit of route `route`; the first limit it is over refuses
    /// it. `consumer` is the authenticated consumer's name.
    pub async fn check(
        &self,
        table: &Arc<RouteTable>,
        route: usize,
        consumer: Option<&str>,
        ip: IpAddr,
    ) -> Result<(), Limited> {
        let Some(buckets) = self.buckets(table, route) else { return Ok(()) };
        for b in buckets.iter() {
            let key = Key {
                consumer: if b.rule.by_consumer { consumer.map_or(0, fnv) } else { 0 },
                ip: b.rule.by_ip.then_some(ip),
            };
            if let Some(local) = &b.local {
                if let Err(not_until) = local.check_key(&key) {
                    return Err(Limited { rule: b.rule.clone(), wait: not_until.wait_time_from(self.clock.now()) });
                }
                continue;
            }
            let Some(redis) = &self.redis else { continue };
            let redis_key = format!(
                "{}:{}:{}:{}",
                b.route,
                b.index,
                if b.rule.by_consumer { consumer.unwrap_or("-") } else { "-" },
                key.ip.map_or_else(|| "-".to_string(), |i| i.to_string())
            );
            if let Verdict::Limited { wait } = redis.check(&b.rule, &redis_key).await {
                return Err(Limited { rule: b.rule.clone(), wait });
            }
        }
        Ok(())
    }

    fn buckets(&self, table: &Arc<RouteTable>, route: usize) -> Option<Arc<[Arc<Bucket>]>> {
        table.routes.get(route)?.limits.as_ref()?;
        let b = self.binding.load();
        if std::ptr::eq(b.table.as_ptr(), Arc::as_ptr(table)) {
            return b.routes.get(route).cloned().flatten();
        }
        drop(b);
        self.bind(table).routes.get(route).cloned().flatten()
    }

    fn bind(&self, table: &Arc<RouteTable>) -> Arc<Binding> {
        let _guard = self.bind_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.binding.load_full();
        if std::ptr::eq(current.table.as_ptr(), Arc::as_ptr(table)) {
            return current;
        }
        let previous: Vec<&Arc<Bucket>> = current.routes.iter().flatten().flat_map(|r| r.iter()).collect();
        let routes = table
            .routes
            .iter()
            .map(|r| {
                let limits = r.limits.as_ref()?;
                let buckets: Vec<Arc<Bucket>> = limits
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| {
                        let same = |b: &&&Arc<Bucket>| b.route == r.name && b.index == index && b.rule == *rule;
                        match previous.iter().find(same) {
                            Some(b) => Arc::clone(b),
                            None => Arc::new(self.bucket(&r.name, index, rule)),
                        }
                    })
                    .collect();
                Some(buckets.into())
            })
            .collect();
        let binding = Arc::new(Binding { table: Arc::downgrade(table), routes });
        self.binding.store(binding.clone());
        binding
    }

    fn bucket(&self, route: &str, index: usize, rule: &RateLimit) -> Bucket {
        let local = (!rule.shared || self.redis.is_none()).then(|| {
            let rate = NonZeroU32::new(rule.rate.max(1)).expect("at least 1");
            let burst = NonZeroU32::new(rule.burst.max(1)).expect("at least 1");
            let quota =
                if rule.window >= Duration::from_secs(60) { Quota::per_minute(rate) } else { Quota::per_second(rate) };
            RateLimiter::keyed(quota.allow_burst(burst)).with_middleware::<StateInformationMiddleware>()
        });
        Bucket { route: route.to_string(), index, rule: rule.clone(), local }
    }
}

//! The rate limiter the proxy owns: the serving route table's limits bound to their buckets.
//! Local buckets are governor's keyed GCRA (a well-kept crate; keyed by a hash of the consumer's
//! name and the client IP, IPv6 per /64, no allocation per request); shared ones go to
//! [`RedisStore`].
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
use crate::client_ip::client_key;
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

impl Bucket {
    /// The local bucket a request of `consumer` from `ip` counts in. The client is counted as
    /// the connection cap counts it: an IPv6 client per /64, else each address of one host would
    /// get a fresh bucket (and grow the table).
    fn key(&self, consumer: Option<&str>, ip: IpAddr) -> Key {
        Key {
            consumer: if self.rule.by_consumer { consumer.map_or(0, fnv) } else { 0 },
            ip: self.rule.by_ip.then(|| client_key(ip)),
        }
    }

    /// The shared bucket of the request whose local bucket is `key`.
    fn redis_key(&self, consumer: Option<&str>, key: &Key) -> String {
        format!(
            "{}:{}:{}:{}",
            self.route,
            self.index,
            if self.rule.by_consumer { consumer.unwrap_or("-") } else { "-" },
            key.ip.map_or_else(|| "-".to_string(), |i| i.to_string())
        )
    }
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
            let key = b.key(consumer, ip);
            if let Some(local) = &b.local {
                if let Err(not_until) = local.check_key(&key) {
                    return Err(Limited { rule: b.rule.clone(), wait: not_until.wait_time_from(self.clock.now()) });
                }
                continue;
            }
            let Some(redis) = &self.redis else { continue };
            if let Verdict::Limited { wait } = redis.check(&b.rule, &b.redis_key(consumer, &key)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients are counted per address as the connection cap counts them: a host's whole IPv6
    /// /64 in one bucket (else each of its addresses gets a fresh one and the table grows), an
    /// IPv4-mapped address as its IPv4 one.
    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let rule = RateLimit::new(true, true, 1, Duration::from_secs(1), 1, false);
        let b = Bucket { route: "r".into(), index: 0, rule, local: None };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let same = [("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"), ("::ffff:192.0.2.7", "192.0.2.7")];
        for (one, other) in same {
            let (k1, k2) = (b.key(Some("c"), ip(one)), b.key(Some("c"), ip(other)));
            assert_eq!(k1, k2, "{one} {other}");
            assert_eq!(b.redis_key(Some("c"), &k1), b.redis_key(Some("c"), &k2), "{one} {other}");
        }
        assert_eq!(b.redis_key(Some("c"), &b.key(Some("c"), ip("2001:db8:1:2::1"))), "r:0:c:2001:db8:1:2::");
        for (one, other) in [("2001:db8:1:2::1", "2001:db8:1:3::1"), ("192.0.2.7", "192.0.2.8")] {
            assert_ne!(b.key(Some("c"), ip(one)), b.key(Some("c"), ip(other)), "{one} {other}");
        }
        assert_ne!(b.key(Some("c"), ip("192.0.2.7")), b.key(Some("d"), ip("192.0.2.7")));
    }
}

//! A route's rate limits as the config declares them ([`RateLimit`]), and how the 429 names them
//! (the IETF httpapi `RateLimit-Policy` / `RateLimit` fields). Pure data.

use std::time::Duration;

use http::HeaderValue;

/// One `[[routes.rate_limit]]`: `rate` requests per `window`, up to `burst` at once, counted
/// per route and, when asked, per consumer and/or per client IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub by_consumer: bool,
    pub by_ip: bool,
    pub rate: u32,
    /// One second (`rps`) or one minute (`rpm`).
    pub window: Duration,
    pub burst: u32,
    /// Counted in Redis (shared by every gateway using the same Redis) instead of in this process.
    pub shared: bool,
    /// The policy's name in the headers: `route`, `consumer`, `ip` or `consumer-ip`.
    pub name: &'static str,
    /// `RateLimit-Policy` value, e.g. `"consumer";q=100;w=60`.
    pub policy: HeaderValue,
}

impl RateLimit {
    pub fn new(by_consumer: bool, by_ip: bool, rate: u32, window: Duration, burst: u32, shared: bool) -> Self {
        let name = match (by_consumer, by_ip) {
            (false, false) => "route",
            (true, false) => "consumer",
            (false, true) => "ip",
            (true, true) => "consumer-ip",
        };
        let policy = HeaderValue::from_str(&format!("\"{name}\";q={rate};w={}", window.as_secs()))
            .expect("ASCII digits and a fixed name");
        Self { by_consumer, by_ip, rate, window, burst, shared, name, policy }
    }

    /// Time between two requests at the steady rate.
    pub fn interval(&self) -> Duration {
        self.window / self.rate.max(1)
    }
}

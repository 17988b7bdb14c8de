//! Rate limits: a route's rules ([`rules`]), the service that counts them ([`service`]: local
//! GCRA buckets), and the shared store ([`redis`]) several gateways can count in.

pub mod redis;
pub mod rules;
pub mod service;

pub use rules::RateLimit;
pub use service::{LimitService, Limited};

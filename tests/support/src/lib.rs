//! Test and local-stack support: ephemeral PostgreSQL clusters, free ports, readiness waits
//! and child processes that die with their owner.
//!
//! Everything here is blocking `std` code so it can be used from sync tests, async tests (call
//! it before or outside the runtime's hot path) and from the local stack runner alike; the one
//! exceptions are the test OTLP receiver (`otlp`, feature `otlp`) and the raw HTTP/1.1 request
//! reader for scripted peers (`raw_http`, feature `raw-http`), which run on tokio.

#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pg;
pub mod process;
#[cfg(feature = "raw-http")]
pub mod raw_http;
pub mod redis;
pub mod stack;
pub mod tls;

pub use pg::{PgCluster, PgClusterBuilder, PgError};
pub use process::{free_port, pid_alive, signal_pid, wait_for_http, wait_for_tcp, ChildGuard, Signal};
pub use redis::RedisServer;
pub use stack::{Ports, Stack, StackOptions};

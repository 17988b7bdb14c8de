//! [`EdgeEvent`]: what the edge did to a client connection, counted in
//! `strangler_gateway_client_connections_closed_total{reason}` and logged.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::metrics::metrics;

/// Something the edge did to a client connection: counted, logged at debug, and summed up in a
/// warning at most every [`WARN_EVERY_SECS`] per kind (an attack must not flood the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeEvent {
    /// A request head was not complete within `client_header_timeout` (408, closed).
    HeaderTimeout,
    /// A request line with a control character, DEL or a space in the target, the connection's
    /// first request or a later one (400, closed).
    BadRequestLine,
    /// A connection over `max_connections_per_client` (503, closed).
    OverClientCap,
    /// The client closed the connection in the middle of a request head.
    HeadAbandoned,
    /// A kept-alive connection stayed silent for `client_keepalive_timeout` before its next
    /// request (closed without a response, like nginx's `keepalive_timeout`).
    KeepaliveTimeout,
    /// A malformed chunked body (400 from the proxy, closed).
    BadFraming,
}

const WARN_EVERY_SECS: u64 = 10;

impl EdgeEvent {
    pub fn reason(self) -> &'static str {
        match self {
            EdgeEvent::HeaderTimeout => "header_timeout",
            EdgeEvent::BadRequestLine => "bad_request_line",
            EdgeEvent::OverClientCap => "over_client_cap",
            EdgeEvent::HeadAbandoned => "head_abandoned",
            EdgeEvent::KeepaliveTimeout => "keepalive_timeout",
            EdgeEvent::BadFraming => "bad_framing",
        }
    }

    fn what(self) -> &'static str {
        match self {
            EdgeEvent::HeaderTimeout => "closed with 408: request head not complete within client_header_timeout",
            EdgeEvent::BadRequestLine => "closed with 400: control character, DEL or space in the request target",
            EdgeEvent::OverClientCap => "closed with 503: the client holds max_connections_per_client connections",
            EdgeEvent::HeadAbandoned => "closed by the client in the middle of a request head",
            EdgeEvent::KeepaliveTimeout => "closed: idle between requests for client_keepalive_timeout",
            EdgeEvent::BadFraming => "closed with 400: malformed chunked request body",
        }
    }

    /// Counts the event, logs it at debug, and warns (rate-limited) for the refusals (a client
    /// giving up, or an idle keep-alive connection closed, is routine: no warning).
    pub fn record(self, peer: Option<IpAddr>) {
        let counter = metrics().client_connections_closed.with_label_values(&[self.reason()]);
        counter.inc();
        let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
        tracing::debug!(client = %peer, reason = self.reason(), "client connection {}", self.what());
        if matches!(self, EdgeEvent::HeadAbandoned | EdgeEvent::KeepaliveTimeout) {
            return;
        }
        static LAST_WARN: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = &LAST_WARN[self as usize];
        let seen = last.load(Ordering::Relaxed);
        if now.saturating_sub(seen) >= WARN_EVERY_SECS
            && last.compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                client = %peer,
                reason = self.reason(),
                total = counter.get(),
                "client connection {} (counted in strangler_gateway_client_connections_closed_total; \
                 further ones within {WARN_EVERY_SECS}s are logged at debug)",
                self.what()
            );
        }
    }
}

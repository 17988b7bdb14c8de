//! Open connections per client address, counted in a sharded map so that accepts on different
//! threads rarely meet on one lock. A [`ClientSlot`] is held for the connection's life and gives
//! its place back when dropped.
//!
//! Addresses are counted as nginx's `limit_conn $binary_remote_addr` does, except that IPv6
//! clients are counted per /64 (one host commonly holds a whole /64) and IPv4-mapped IPv6
//! addresses as the IPv4 address they carry ([`client_key`], as rate limits by IP count them).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::client_ip::client_key;

const SHARDS: usize = 64;

/// Open connections per client address.
pub struct ClientCap {
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
}

/// One open connection of one client; gives the place back when dropped.
pub struct ClientSlot {
    cap: Arc<ClientCap>,
    key: IpAddr,
}

impl ClientCap {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() })
    }

    /// Takes a place for a connection from `ip`, unless it already holds `max` (0: no cap).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let key = client_key(ip);
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let open = shard.entry(key).or_insert(0);
        if max != 0 && *open as usize >= max {
            if *open == 0 {
                shard.remove(&key);
            }
            return None;
        }
        *open += 1;
        Some(ClientSlot { cap: self.clone(), key })
    }

    /// Connections `ip` holds open.
    pub fn open(&self, ip: IpAddr) -> u32 {
        let key = client_key(ip);
        self.shard(key).lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied().unwrap_or(0)
    }

    fn shard(&self, key: IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let bits = match key {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
        };
        // Fibonacci hashing: the top bits of the product mix every bit of the address
        &self.shards[(bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS]
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut shard = self.cap.shard(self.key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = shard.get_mut(&self.key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_and_frees_places_on_drop() {
        let cap = ClientCap::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| cap.acquire(a, 3).expect("under the cap")).collect();
        assert!(cap.acquire(a, 3).is_none(), "a fourth connection from one address");
        assert!(cap.acquire(b, 3).is_some(), "another address has its own count");
        drop(held);
        assert_eq!(cap.open(a), 0);
        assert!(cap.shards.iter().all(|s| s.lock().unwrap().is_empty()), "no entry is left behind");
        let _x = cap.acquire(a, 3).expect("places came back");
    }

    #[test]
    fn zero_means_no_cap_but_still_counts() {
        let cap = ClientCap::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| cap.acquire(a, 0).expect("no cap")).collect();
        assert_eq!(cap.open(a), 1000);
        drop(held);
        assert_eq!(cap.open(a), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let cap = ClientCap::new();
        let _one = cap.acquire("2001:db8:1:2::1".parse().unwrap(), 1).unwrap();
        assert!(cap.acquire("2001:db8:1:2:ffff::9".parse().unwrap(), 1).is_none(), "same /64");
        assert!(cap.acquire("2001:db8:1:3::1".parse().unwrap(), 1).is_some(), "another /64");
        let _v4 = cap.acquire("192.0.2.7".parse().unwrap(), 1).unwrap();
        assert!(cap.acquire("::ffff:192.0.2.7".parse().unwrap(), 1).is_none(), "mapped IPv4");
    }
}

//! Connection admission shared by the NFS listeners: a per-address cap checked
//! before the total cap, so one address opening connections until the server
//! is full costs that address only, and a rate limit for the "refused" log
//! line so a flood cannot fill the log either.
//!
//! Sans-I/O: the listener asks [`ConnLimits::admit`] with the peer address
//! after accept and closes the socket at once on a refusal; the returned
//! [`ConnSlot`] gives the place back when dropped.
//!
//! Addresses are counted as the peer's IPv4 address, or its IPv6 /64 (one
//! host commonly holds a whole /64); IPv4-mapped IPv6 counts as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer's address already holds `max_per_address` connections.
    PerAddress,
    /// The server holds `max_total` connections.
    Total,
}

impl Refusal {
    /// Short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address",
            Refusal::Total => "total",
        }
    }
}

#[derive(Default)]
struct Counts {
    by_addr: HashMap<IpAddr, usize>,
    total: usize,
}

/// Per-address and total connection counts.
pub struct ConnLimits {
    max_per_address: usize,
    max_total: usize,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    key: IpAddr,
}

/// The key a peer address is counted under.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl ConnLimits {
    pub fn new(max_per_address: usize, max_total: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits { max_per_address, max_total, counts: Mutex::new(Counts::default()) })
    }

    /// Admits a connection from `peer`, or says why not. The per-address cap
    /// is checked first: an address at its cap is refused even when the
    /// server has room, and its refusals never count against others.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnSlot, Refusal> {
        let key = address_key(peer);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = c.by_addr.get(&key).copied().unwrap_or(0);
        if held >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        if c.total >= self.max_total {
            return Err(Refusal::Total);
        }
        *c.by_addr.entry(key).or_insert(0) += 1;
        c.total += 1;
        Ok(ConnSlot { limits: self.clone(), key })
    }

    /// Connections held now: (from `peer`'s address, in total).
    pub fn held(&self, peer: IpAddr) -> (usize, usize) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (c.by_addr.get(&address_key(peer)).copied().unwrap_or(0), c.total)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_addr.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.by_addr.remove(&self.key);
            }
        }
    }
}

/// Lets a log line through at most once per `every`, counting what it held back.
pub struct LogLimiter {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter { every, state: Mutex::new((None, 0)) }
    }

    /// Call once per event: `Some(n)` means log now, `n` events having been
    /// held back since the last line; `None` means stay quiet.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_cap_is_checked_before_the_total() {
        let l = ConnLimits::new(2, 3);
        let a1 = l.admit(ip("10.0.0.1")).unwrap();
        let _a2 = l.admit(ip("10.0.0.1")).unwrap();
        // The flooding address is refused on its own cap while room remains.
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refusal::PerAddress));
        let _b1 = l.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(l.held(ip("10.0.0.2")), (1, 3));
        // Full: another address is refused on the total, but the flooder
        // still hears "per address" (its refusals are its own).
        assert_eq!(l.admit(ip("10.0.0.3")).err(), Some(Refusal::Total));
        assert_eq!(l.admit(ip("10.0.0.1")).err(), Some(Refusal::PerAddress));
        drop(a1);
        assert_eq!(l.held(ip("10.0.0.1")), (1, 2));
        let _c = l.admit(ip("10.0.0.3")).unwrap();
    }

    #[test]
    fn slots_free_their_place_and_empty_addresses_are_forgotten() {
        let l = ConnLimits::new(1, 10);
        for _ in 0..5 {
            let s = l.admit(ip("192.0.2.7")).unwrap();
            assert_eq!(l.admit(ip("192.0.2.7")).err(), Some(Refusal::PerAddress));
            drop(s);
        }
        assert_eq!(l.held(ip("192.0.2.7")), (0, 0));
        assert!(l.counts.lock().unwrap().by_addr.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = ConnLimits::new(1, 10);
        let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(l.admit(ip("2001:db8:1:2:ffff::9")).err(), Some(Refusal::PerAddress));
        let _b = l.admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = l.admit(ip("198.51.100.1")).unwrap();
        assert_eq!(l.admit(ip("::ffff:198.51.100.1")).err(), Some(Refusal::PerAddress));
    }

    #[test]
    fn log_limiter_lets_one_line_through_per_period() {
        let lim = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(lim.allow(t0), Some(0));
        assert_eq!(lim.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(lim.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(lim.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(lim.allow(t0 + Duration::from_secs(11)), None);
    }
}

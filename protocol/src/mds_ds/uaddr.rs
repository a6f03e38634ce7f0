//! Universal addresses (RFC 5665 section 5.2.3), as data servers register
//! them and clients find them in device addresses (`netaddr4`).
//!
//! - netid `tcp`: `h1.h2.h3.h4.p1.p2`, the IPv4 address in dotted decimal;
//! - netid `tcp6`: `x1:x2:...:x8.p1.p2`, the IPv6 address in any text form
//!   of RFC 4291 section 2.2 (written compressed, RFC 5952);
//!
//! where `p1.p2` is the port, high byte then low byte, in decimal. Parsing
//! is bounded ([`MAX_LEN`]) and strict (decimal octets of at most three
//! digits, no signs, no zone id), and rejects anything else without
//! panicking.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The netid of TCP over IPv4.
pub const NETID_TCP: &str = "tcp";
/// The netid of TCP over IPv6.
pub const NETID_TCP6: &str = "tcp6";
/// Longest universal address accepted: an IPv6 address in its longest text
/// form (`ffff:...:255.255.255.255`, 45 bytes) and `.255.255`.
pub const MAX_LEN: usize = 53;

/// Why a universal address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaddrError {
    /// Not `tcp` or `tcp6`.
    UnknownNetid,
    /// Longer than [`MAX_LEN`].
    TooLong,
    /// Not an address followed by two port octets.
    Malformed,
    /// An IPv6 address with netid `tcp`, or IPv4 with `tcp6`.
    WrongFamily,
}

impl fmt::Display for UaddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UaddrError::UnknownNetid => "netid is neither \"tcp\" nor \"tcp6\"",
            UaddrError::TooLong => "universal address too long",
            UaddrError::Malformed => "not a universal address (address.p1.p2)",
            UaddrError::WrongFamily => "address family does not match the netid (tcp: IPv4, tcp6: IPv6)",
        })
    }
}

impl std::error::Error for UaddrError {}

/// The netid of `a`'s address family.
pub fn netid(a: &SocketAddr) -> &'static str {
    match a {
        SocketAddr::V4(_) => NETID_TCP,
        SocketAddr::V6(_) => NETID_TCP6,
    }
}

/// The universal address of `a` (`10.0.2.2.8.1`, `::1.8.1`); a scope id is
/// not part of it.
pub fn format(a: &SocketAddr) -> String {
    format!("{}.{}.{}", a.ip(), a.port() >> 8, a.port() & 0xff)
}

/// The `(netid, universal address)` pair of `a`, as in a `netaddr4`.
pub fn netaddr(a: &SocketAddr) -> (&'static str, String) {
    (netid(a), format(a))
}

/// One port octet: one to three decimal digits, at most 255.
fn port_octet(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p < 256)
}

/// Parses a universal address of either family.
pub fn parse(s: &str) -> Result<SocketAddr, UaddrError> {
    if s.len() > MAX_LEN {
        return Err(UaddrError::TooLong);
    }
    let mut parts = s.rsplitn(3, '.');
    let p2 = parts.next().and_then(port_octet).ok_or(UaddrError::Malformed)?;
    let p1 = parts.next().and_then(port_octet).ok_or(UaddrError::Malformed)?;
    let ip: IpAddr = parts.next().and_then(|h| h.parse().ok()).ok_or(UaddrError::Malformed)?;
    Ok(SocketAddr::new(ip, p1 << 8 | p2))
}

/// Parses a `netaddr4`: netid `tcp` with an IPv4 universal address or
/// `tcp6` with an IPv6 one.
pub fn parse_netaddr(netid: &str, addr: &str) -> Result<SocketAddr, UaddrError> {
    let want_v6 = match netid {
        NETID_TCP => false,
        NETID_TCP6 => true,
        _ => return Err(UaddrError::UnknownNetid),
    };
    let a = parse(addr)?;
    if a.is_ipv6() != want_v6 {
        return Err(UaddrError::WrongFamily);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4() {
        assert_eq!(netaddr(&sa("10.0.2.2:2049")), ("tcp", "10.0.2.2.8.1".to_string()));
        assert_eq!(format(&sa("192.168.1.2:20049")), "192.168.1.2.78.81");
        assert_eq!(format(&sa("1.2.3.4:65535")), "1.2.3.4.255.255");
        assert_eq!(format(&sa("1.2.3.4:0")), "1.2.3.4.0.0");
        assert_eq!(parse("10.0.2.2.78.81"), Ok(sa("10.0.2.2:20049")));
        assert_eq!(parse_netaddr("tcp", "127.0.0.1.8.1"), Ok(sa("127.0.0.1:2049")));
    }

    #[test]
    fn ipv6_full_and_compressed() {
        assert_eq!(netaddr(&sa("[::1]:2049")), ("tcp6", "::1.8.1".to_string()));
        assert_eq!(format(&sa("[fe80::1]:2049")), "fe80::1.8.1");
        assert_eq!(format(&sa("[2001:db8:0:0:1:0:0:1]:20049")), "2001:db8::1:0:0:1.78.81");
        let one = sa("[::1]:23000");
        assert_eq!(parse("::1.89.216"), Ok(one));
        assert_eq!(parse("0:0:0:0:0:0:0:1.89.216"), Ok(one), "full form");
        assert_eq!(parse("0000:0000:0000:0000:0000:0000:0000:0001.89.216"), Ok(one), "full form, leading zeros");
        assert_eq!(parse("fe80::1:2.0.80"), Ok(sa("[fe80::1:2]:80")));
        assert_eq!(parse("::ffff:10.0.0.1.8.1"), Ok(sa("[::ffff:10.0.0.1]:2049")), "IPv4-mapped");
        assert_eq!(parse("::.0.1"), Ok(sa("[::]:1")));
        assert_eq!(parse_netaddr("tcp6", "::1.8.1"), Ok(sa("[::1]:2049")));
        // The scope id is not part of a universal address.
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 2049, 0, 3));
        assert_eq!(format(&scoped), "fe80::1.8.1");
    }

    #[test]
    fn junk_is_refused() {
        for bad in [
            "",
            ".",
            "..",
            "10.0.2.2",
            "10.0.2.2.8",
            "10.0.2.2.8.256",
            "10.0.2.2.256.1",
            "10.0.2.2.+8.1",
            "10.0.2.2.-0.1",
            "10.0.2.2.8. 1",
            "10.0.2.2.0008.1",
            "10.0.2.2.8.1.",
            "10.0.2.999.8.1",
            "host.example.8.1",
            "::1",
            "::1.8",
            "[::1].8.1",
            "fe80::1%eth0.8.1",
            ":::1.8.1",
            "1.2.3.4:2049",
            "\u{0}.8.1",
        ] {
            assert_eq!(parse(bad).map_err(|_| ()), Err(()), "{bad:?}");
        }
        assert_eq!(parse(&"1".repeat(MAX_LEN + 1)), Err(UaddrError::TooLong));
        assert_eq!(parse_netaddr("tcp", "::1.8.1"), Err(UaddrError::WrongFamily));
        assert_eq!(parse_netaddr("tcp6", "127.0.0.1.8.1"), Err(UaddrError::WrongFamily));
        assert_eq!(parse_netaddr("udp", "127.0.0.1.8.1"), Err(UaddrError::UnknownNetid));
        assert_eq!(parse_netaddr("rdma", "127.0.0.1.8.1"), Err(UaddrError::UnknownNetid));
    }

    #[test]
    fn longest_forms_fit() {
        let v6 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255.255.255";
        assert_eq!(v6.len(), MAX_LEN);
        assert!(parse(v6).is_ok());
        let a = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff)), 65535);
        assert!(format(&a).len() <= MAX_LEN);
        let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)), 65535);
        assert!(format(&a).len() <= MAX_LEN);
    }

    proptest! {
        #[test]
        fn v4_round_trips(ip in any::<u32>(), port in any::<u16>()) {
            let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port);
            let (n, s) = netaddr(&a);
            prop_assert_eq!(parse_netaddr(n, &s), Ok(a));
        }

        #[test]
        fn v6_round_trips(ip in any::<u128>(), port in any::<u16>()) {
            let a = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port);
            let (n, s) = netaddr(&a);
            prop_assert!(s.len() <= MAX_LEN);
            prop_assert_eq!(parse_netaddr(n, &s), Ok(a));
        }

        #[test]
        fn junk_never_panics(s in "\\PC{0,80}") {
            if let Ok(a) = parse(&s) {
                // Whatever parses formats back to an address that parses the same.
                prop_assert_eq!(parse(&format(&a)), Ok(a));
            }
        }

        #[test]
        fn near_misses_never_panic(s in "[0-9a-f:.%+-]{0,60}") {
            let _ = parse(&s);
            let _ = parse_netaddr("tcp6", &s);
        }
    }
}

//! Device IDs and data server addresses: the IDs handed out (`V` records,
//! GETDEVICELIST) and the address lists a device ID resolves to
//! (GETDEVICEINFO).

use super::{Pnfs, StripeSet};
use pnfs_protocol::wire::deviceid4;
use std::net::{IpAddr, SocketAddr};

/// Device IDs are a bitmap of DS indices (14 bytes), so at most 112 DSes.
pub const MAX_DATA_SERVERS: usize = 112;
const DEVICEID_MAGIC: u8 = b'P';
const DEVICEID_VERSION: u8 = 1;
pub const DS_FH_LEN: usize = 16;

/// Device ID of a stripe set: magic, version, then a bitmap of DS indices.
pub fn deviceid_of(ds: &[u32]) -> deviceid4 {
    let mut id = [0u8; 16];
    id[0] = DEVICEID_MAGIC;
    id[1] = DEVICEID_VERSION;
    for &d in ds {
        let d = d as usize;
        assert!(d < MAX_DATA_SERVERS, "DS index {d} out of range");
        id[2 + d / 8] |= 1 << (d % 8);
    }
    id
}

/// The DS indices of a device ID, ascending; None if it is not one of ours.
pub fn ds_of_deviceid(id: &deviceid4) -> Option<Vec<u32>> {
    if id[0] != DEVICEID_MAGIC || id[1] != DEVICEID_VERSION {
        return None;
    }
    let ds: Vec<u32> = (0..MAX_DATA_SERVERS).filter(|d| id[2 + d / 8] & (1 << (d % 8)) != 0).map(|d| d as u32).collect();
    (!ds.is_empty()).then_some(ds)
}

/// DS filehandle: b'D', version 1, stripe index, 0, inode (BE), generation (BE).
pub fn ds_fh(stripe: u8, ino: u64, generation: u32) -> [u8; DS_FH_LEN] {
    let mut fh = [0u8; DS_FH_LEN];
    fh[0] = b'D';
    fh[1] = 1;
    fh[2] = stripe;
    fh[4..12].copy_from_slice(&ino.to_be_bytes());
    fh[12..16].copy_from_slice(&generation.to_be_bytes());
    fh
}

/// RFC 5665 universal address of a socket address: "a.b.c.d.p1.p2".
pub fn uaddr(a: &SocketAddr) -> (String, String) {
    let (p1, p2) = (a.port() >> 8, a.port() & 0xff);
    match a.ip() {
        IpAddr::V4(ip) => ("tcp".into(), format!("{ip}.{p1}.{p2}")),
        IpAddr::V6(ip) => ("tcp6".into(), format!("{ip}.{p1}.{p2}")),
    }
}

/// Parses a universal address (IPv4 or IPv6 with the two port octets).
pub fn parse_uaddr(s: &str) -> Option<SocketAddr> {
    let mut parts = s.rsplitn(3, '.');
    let p2: u16 = parts.next()?.parse().ok().filter(|p| *p < 256)?;
    let p1: u16 = parts.next()?.parse().ok().filter(|p| *p < 256)?;
    let ip: IpAddr = parts.next()?.parse().ok()?;
    Some(SocketAddr::new(ip, p1 * 256 + p2))
}

pub(super) fn device_key(id: &deviceid4) -> Vec<u8> {
    let mut k = vec![b'V'];
    k.extend_from_slice(id);
    k
}

impl Pnfs {
    /// Device IDs handed out so far, ascending.
    pub fn device_ids(&self) -> Vec<deviceid4> {
        self.devices.lock().unwrap().iter().copied().collect()
    }

    /// Multipath address lists of a device, in stripe-index order; None if
    /// the device is not ours or one of its data servers is unknown.
    pub fn device_lists(&self, id: &deviceid4) -> Option<Vec<Vec<(String, String)>>> {
        let ds = ds_of_deviceid(id)?;
        ds.iter().map(|d| self.registry.get(*d).map(|i| i.addrs)).collect()
    }

    /// True when every data server of `set` is alive.
    pub fn all_alive(&self, set: &StripeSet) -> bool {
        set.ds.iter().all(|d| self.registry.alive(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deviceid_and_fh_and_uaddr() {
        let id = deviceid_of(&[0, 5, 111]);
        assert_eq!(ds_of_deviceid(&id), Some(vec![0, 5, 111]));
        assert_eq!(ds_of_deviceid(&[0u8; 16]), None);
        let fh = ds_fh(2, 0x0102030405060708, 9);
        assert_eq!(fh, [b'D', 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9]);
        let a: SocketAddr = "10.0.2.2:2049".parse().unwrap();
        assert_eq!(uaddr(&a), ("tcp".to_string(), "10.0.2.2.8.1".to_string()));
        assert_eq!(parse_uaddr("10.0.2.2.78.81"), Some("10.0.2.2:20049".parse().unwrap()));
        let v6: SocketAddr = "[fe80::1]:2049".parse().unwrap();
        assert_eq!(uaddr(&v6), ("tcp6".to_string(), "fe80::1.8.1".to_string()));
        assert_eq!(parse_uaddr("fe80::1.8.1"), Some(v6));
        assert_eq!(parse_uaddr("10.0.2.2"), None);
    }
}

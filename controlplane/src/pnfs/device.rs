//! Device IDs and data server addresses, MDS side: the IDs handed out
//! (`V` records, GETDEVICELIST) and the address lists a device ID resolves
//! to (GETDEVICEINFO). Their formats are the MDS-DS contract's
//! (`pnfs_protocol::mds_ds::{deviceid, uaddr}`).

use super::{Pnfs, StripeSet};
use crate::keyspace;
use pnfs_protocol::mds_ds::{deviceid, uaddr};
use pnfs_protocol::wire::deviceid4;
use std::net::SocketAddr;

/// The socket address of a universal address of either family
/// (`pnfs_protocol::mds_ds::uaddr::parse`; tests use it on device addresses).
pub fn parse_uaddr(s: &str) -> Option<SocketAddr> {
    uaddr::parse(s).ok()
}

pub(super) fn device_key(id: &deviceid4) -> Vec<u8> {
    keyspace::with_bytes(keyspace::DEVICE_ID, id)
}

impl Pnfs {
    /// Device IDs handed out so far, ascending.
    pub fn device_ids(&self) -> Vec<deviceid4> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// Multipath address lists of a device, in stripe-index order; None if
    /// the device is not ours or one of its data servers is unknown.
    pub fn device_lists(&self, id: &deviceid4) -> Option<Vec<Vec<(String, String)>>> {
        let ds = deviceid::decode(id)?;
        ds.iter().map(|d| self.registry.get(*d).map(|i| i.addrs)).collect()
    }

    /// True when every data server of `set` is alive.
    pub fn all_alive(&self, set: &StripeSet) -> bool {
        set.ds.iter().all(|d| self.registry.alive(*d))
    }
}

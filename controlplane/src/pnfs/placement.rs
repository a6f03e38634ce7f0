//! Placement: choosing a new file's data servers, creating its objects and
//! persisting its placement (`L` ino, never changed afterwards: a stripe
//! set, or a mirror set for `mirror2`/`mirror3` files), with a cache of
//! placements and per-file placement hints (`H` ino).

use super::device::device_key;
use super::mirror::{LayoutPolicy, MirrorSet};
use super::{kv_io, Pnfs, Policy, StripeSet, MAX_TXN_RETRIES};
use crate::keyspace::{self, PLACEMENT_HINT, STRIPE_SET};
use pnfs_kv::{transact, KvError};
use pnfs_protocol::mds_ds::ds_handle::IDENTITY_LEN;
use pnfs_protocol::wire::layouttype4;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const STRIPE_SET_CACHE_MAX: usize = 100_000;


#[derive(Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// No live data server (or the file has data on the MDS's local store).
    Unavailable,
    Io(String),
}

/// Where a placed file's data lives: the kind is fixed at placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Files layout: stripe objects, dense (RFC 8881 13.4).
    Striped(Arc<StripeSet>),
    /// Flexfiles: byte-range segments, each on `mirrors` data servers.
    Mirrored(Arc<MirrorSet>),
}

impl Placement {
    pub(crate) fn decode(b: &[u8]) -> Option<Placement> {
        match MirrorSet::decode(b) {
            Some(m) => Some(Placement::Mirrored(Arc::new(m))),
            None => StripeSet::decode(b).map(|s| Placement::Striped(Arc::new(s))),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Placement::Striped(s) => s.encode(),
            Placement::Mirrored(m) => m.encode(),
        }
    }

    /// The layout type LAYOUTGET hands out for the file (the other type is
    /// LAYOUTUNAVAILABLE for it; see `mirror`).
    pub fn layout_type(&self) -> layouttype4 {
        match self {
            Placement::Striped(_) => layouttype4::LAYOUT4_NFSV4_1_FILES,
            Placement::Mirrored(_) => layouttype4::LAYOUT4_FLEX_FILES,
        }
    }

    /// The data servers holding any of the file's objects.
    pub fn data_servers(&self) -> &[u32] {
        match self {
            Placement::Striped(s) => &s.ds,
            Placement::Mirrored(m) => &m.ds,
        }
    }

    /// True when some byte of the file has no copy left on a data server
    /// `gone` does not name: for a striped file any of its data servers, for
    /// a mirrored one every mirror of some segment (segment k's data
    /// servers repeat with period `ds.len()`).
    pub fn data_lost(&self, gone: impl Fn(u32) -> bool) -> bool {
        match self {
            Placement::Striped(s) => s.ds.iter().any(|&d| gone(d)),
            Placement::Mirrored(m) => (0..m.ds.len() as u64).any(|k| m.segment_ds(k).into_iter().all(&gone)),
        }
    }

    /// Every object of file `ino`: (data server, object identity).
    pub fn objects(&self, ino: u64) -> Vec<(u32, [u8; IDENTITY_LEN])> {
        match self {
            Placement::Striped(s) => s.ds.iter().enumerate().map(|(j, d)| (*d, s.ds_fh(j as u32, ino))).collect(),
            Placement::Mirrored(m) => m.ds.iter().map(|d| (*d, m.object_fh(ino))).collect(),
        }
    }
}

fn set_key(ino: u64) -> Vec<u8> {
    keyspace::with_u64(STRIPE_SET, ino)
}

/// Placement policy recorded for a file at creation when it differs from
/// the MDS-wide one (export or directory setting): `H` ino.
fn hint_key(ino: u64) -> Vec<u8> {
    keyspace::with_u64(PLACEMENT_HINT, ino)
}

impl Pnfs {
    /// The persisted stripe set of `ino`, if it is striped (None for a
    /// mirrored file too: see [`Self::placement`]).
    pub fn stripe_set(&self, ino: u64) -> io::Result<Option<Arc<StripeSet>>> {
        Ok(match self.placement(ino)? {
            Some(Placement::Striped(s)) => Some(s),
            _ => None,
        })
    }

    /// The persisted placement of `ino`, if it has one.
    pub fn placement(&self, ino: u64) -> io::Result<Option<Placement>> {
        if let Some(s) = self.sets.lock().unwrap_or_else(|p| p.into_inner()).get(&ino) {
            return Ok(s.clone());
        }
        let raw = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.get(&set_key(ino))).map_err(kv_io)?;
        let set = match raw {
            Some(b) => Some(Placement::decode(&b).ok_or_else(|| io::Error::other(format!("corrupt placement record of inode {ino}")))?),
            None => None,
        };
        self.cache_set(ino, set.clone());
        Ok(set)
    }

    fn cache_set(&self, ino: u64, set: Option<Placement>) {
        let mut c = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= STRIPE_SET_CACHE_MAX {
            c.clear();
        }
        c.insert(ino, set);
    }

    /// Chooses the data servers of a new stripe set: `stripe_count` live
    /// ones (all when 0), preferring more free space (GiB buckets), ties
    /// rotated so files spread; the first stripe index rotates too.
    pub fn policy(&self) -> Policy {
        Policy { stripe_count: self.cfg.stripe_count, stripe_unit: self.cfg.stripe_unit, layout: self.cfg.layout }
    }

    /// Records a non-default placement policy for a new file.
    pub fn set_hint(&self, ino: u64, p: Policy) -> io::Result<()> {
        let v = encode_hint(&p);
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.put(&hint_key(ino), &v)).map_err(kv_io)
    }

    fn hint(&self, ino: u64) -> Policy {
        let rec = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.get(&hint_key(ino))).ok().flatten();
        rec.and_then(|v| decode_hint(&v)).unwrap_or_else(|| self.policy())
    }

    /// Chooses the data servers of a new mirrored file: a pool of
    /// `stripe_count` live ones (all when 0, at least `mirrors`), by free
    /// space as for stripe sets; None when fewer than `mirrors` are alive.
    pub fn choose_mirrored(&self, generation: u32, policy: Policy) -> Option<MirrorSet> {
        let mirrors = policy.layout.mirrors();
        let (ds, first) = self.pick_data_servers(policy.stripe_count, mirrors as usize)?;
        Some(MirrorSet { mirrors, segment_bytes: self.cfg.flex_segment_bytes, generation, first, ds })
    }

    pub fn choose(&self, generation: u32) -> Option<StripeSet> {
        self.choose_with(generation, self.policy())
    }

    pub fn choose_with(&self, generation: u32, policy: Policy) -> Option<StripeSet> {
        let (ds, first) = self.pick_data_servers(policy.stripe_count, 1)?;
        Some(StripeSet { stripe_unit: policy.stripe_unit, first, generation, ds })
    }

    /// `count` live data servers (all when 0, at least `at_least`; None when
    /// fewer are alive), ascending, and a rotating first index into them.
    fn pick_data_servers(&self, count: u32, at_least: usize) -> Option<(Vec<u32>, u32)> {
        // Live and active: draining, removed and lost data servers get no new files.
        let live = self.registry.placeable();
        if live.len() < at_least.max(1) {
            return None;
        }
        let rot = self.rotor.fetch_add(1, Ordering::Relaxed) as usize;
        let total = live.len();
        let mut cands: Vec<(u64, usize, u32)> =
            live.iter().enumerate().map(|(i, d)| (d.free >> 30, (i + total - rot % total) % total, d.index)).collect();
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let want = match count {
            0 => total,
            n => (n as usize).clamp(at_least.max(1), total),
        };
        let mut ds: Vec<u32> = cands.into_iter().take(want).map(|c| c.2).collect();
        ds.sort_unstable();
        let first = (rot % ds.len()) as u32;
        Some((ds, first))
    }

    /// The placement of `ino`, placing the file on data servers first if
    /// it has none yet, by its policy (hint or MDS default): objects are
    /// created on every DS, then the placement is persisted (so it never
    /// changes for this file).
    pub fn place(&self, ino: u64) -> Result<Placement, PlaceError> {
        let io = |e: io::Error| PlaceError::Io(e.to_string());
        if let Some(s) = self.placement(ino).map_err(io)? {
            return Ok(s);
        }
        let _g = self.place_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).remove(&ino);
        if let Some(s) = self.placement(ino).map_err(io)? {
            return Ok(s);
        }
        let inode = self.ns.get(ino).map_err(|s| PlaceError::Io(format!("inode {ino}: {s:?}")))?;
        let policy = self.hint(ino);
        let placement = if policy.layout.is_mirrored() {
            let m = self.choose_mirrored(inode.generation, policy);
            if m.is_none() {
                log::warn!("placing inode {ino} ({policy:?}): fewer live data servers than mirrors");
            }
            Placement::Mirrored(Arc::new(m.ok_or(PlaceError::Unavailable)?))
        } else {
            Placement::Striped(Arc::new(self.choose_with(inode.generation, policy).ok_or(PlaceError::Unavailable)?))
        };
        for (d, fh) in placement.objects(ino) {
            if let Err(e) = self.obj_create(d, &fh) {
                log::warn!("placing inode {ino}: OBJ_CREATE on data server {d} failed: {e}");
                return Err(PlaceError::Unavailable);
            }
        }
        // Files-layout device IDs are listed by GETDEVICELIST; a flexfiles
        // device is one registered DS and needs no record.
        let devid = match &placement {
            Placement::Striped(s) => Some(s.deviceid()),
            Placement::Mirrored(_) => None,
        };
        let new_device = devid.filter(|d| !self.devices.lock().unwrap_or_else(|p| p.into_inner()).contains(d));
        let bytes = placement.encode();
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| {
            t.put(&set_key(ino), &bytes)?;
            if let Some(d) = &new_device {
                t.put(&device_key(d), &[])?;
            }
            Ok::<_, KvError>(())
        })
        .map_err(|e| PlaceError::Io(e.to_string()))?;
        if let Some(d) = new_device {
            self.devices.lock().unwrap_or_else(|p| p.into_inner()).insert(d);
        }
        match &placement {
            Placement::Striped(s) => log::debug!("inode {ino} striped over data servers {:?} (first stripe {})", s.ds, s.first),
            Placement::Mirrored(m) => log::debug!(
                "inode {ino} mirrored {}x over data servers {:?} in {} byte segments (first {})",
                m.mirrors,
                m.ds,
                m.segment_bytes,
                m.first
            ),
        }
        self.cache_set(ino, Some(placement.clone()));
        Ok(placement)
    }

    /// Forgets the stripe set of a removed file (its objects are removed by the caller).
    pub fn forget(&self, ino: u64) -> io::Result<()> {
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| {
            t.delete(&hint_key(ino))?;
            t.delete(&set_key(ino))
        })
        .map_err(kv_io)?;
        self.cache_set(ino, None);
        Ok(())
    }

    /// Inodes with a placement (to find orphans after a crash).
    pub fn placed_inodes(&self) -> io::Result<Vec<u64>> {
        let rows = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.scan_prefix(&[STRIPE_SET], usize::MAX)).map_err(kv_io)?;
        Ok(rows.into_iter().filter_map(|(k, _)| pnfs_kv::key::decode_u64_be(&k[1..])).collect())
    }
}

/// `H` value: stripe count, stripe unit (u32 each), then the layout policy
/// (u32: 1 stripe, 2 mirror2, 3 mirror3; absent in records written before
/// mirrors existed, meaning stripe).
fn encode_hint(p: &Policy) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&p.stripe_count.to_be_bytes());
    v.extend_from_slice(&p.stripe_unit.to_be_bytes());
    v.extend_from_slice(&p.layout.code().to_be_bytes());
    v
}

fn decode_hint(v: &[u8]) -> Option<Policy> {
    let word = |i: usize| v.get(i * 4..i * 4 + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let layout = match v.len() {
        8 => LayoutPolicy::Stripe,
        12 => LayoutPolicy::from_code(word(2)?)?,
        _ => return None,
    };
    Some(Policy { stripe_count: word(0)?, stripe_unit: word(1)?, layout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_and_old_records_mean_stripe() {
        let p = Policy { stripe_count: 3, stripe_unit: 65536, layout: LayoutPolicy::Mirror3 };
        assert_eq!(decode_hint(&encode_hint(&p)), Some(p));
        let old = [0, 0, 0, 2, 0, 1, 0, 0];
        assert_eq!(decode_hint(&old), Some(Policy { stripe_count: 2, stripe_unit: 65536, layout: LayoutPolicy::Stripe }));
        let mut bad = encode_hint(&p);
        bad[11] = 9;
        assert_eq!(decode_hint(&bad), None);
        assert_eq!(decode_hint(&[0; 5]), None);
    }

    #[test]
    fn placement_records_say_their_kind() {
        let s = StripeSet { stripe_unit: 1 << 20, first: 1, generation: 2, ds: vec![0, 3] };
        let m = MirrorSet { mirrors: 2, segment_bytes: 4 << 20, generation: 2, first: 0, ds: vec![0, 3, 5] };
        let ps = Placement::Striped(Arc::new(s.clone()));
        let pm = Placement::Mirrored(Arc::new(m.clone()));
        assert_eq!(Placement::decode(&ps.encode()), Some(ps.clone()));
        assert_eq!(Placement::decode(&pm.encode()), Some(pm.clone()));
        assert_eq!(ps.layout_type(), layouttype4::LAYOUT4_NFSV4_1_FILES);
        assert_eq!(pm.layout_type(), layouttype4::LAYOUT4_FLEX_FILES);
        assert_eq!(ps.objects(9), vec![(0, s.ds_fh(0, 9)), (3, s.ds_fh(1, 9))]);
        assert_eq!(pm.objects(9), vec![(0, m.object_fh(9)), (3, m.object_fh(9)), (5, m.object_fh(9))]);
    }
}

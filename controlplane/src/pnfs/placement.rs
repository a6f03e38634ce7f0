//! Placement: choosing a new file's data servers, creating its objects and
//! persisting its stripe set (`L` ino, never changed afterwards), with a
//! cache of stripe sets and per-file placement hints (`H` ino).

use super::device::device_key;
use super::{kv_io, Pnfs, Policy, StripeSet, MAX_TXN_RETRIES};
use crate::keyspace::{self, PLACEMENT_HINT, STRIPE_SET};
use pnfs_kv::{transact, KvError};
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

fn set_key(ino: u64) -> Vec<u8> {
    keyspace::with_u64(STRIPE_SET, ino)
}

/// Placement policy recorded for a file at creation when it differs from
/// the MDS-wide one (export or directory setting): `H` ino.
fn hint_key(ino: u64) -> Vec<u8> {
    keyspace::with_u64(PLACEMENT_HINT, ino)
}

impl Pnfs {
    /// The persisted stripe set of `ino`, if it has one.
    pub fn stripe_set(&self, ino: u64) -> io::Result<Option<Arc<StripeSet>>> {
        if let Some(s) = self.sets.lock().unwrap_or_else(|p| p.into_inner()).get(&ino) {
            return Ok(s.clone());
        }
        let raw = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.get(&set_key(ino))).map_err(kv_io)?;
        let set = match raw {
            Some(b) => Some(Arc::new(
                StripeSet::decode(&b).ok_or_else(|| io::Error::other(format!("corrupt stripe set of inode {ino}")))?,
            )),
            None => None,
        };
        self.cache_set(ino, set.clone());
        Ok(set)
    }

    fn cache_set(&self, ino: u64, set: Option<Arc<StripeSet>>) {
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
        Policy { stripe_count: self.cfg.stripe_count, stripe_unit: self.cfg.stripe_unit }
    }

    /// Records a non-default placement policy for a new file.
    pub fn set_hint(&self, ino: u64, p: Policy) -> io::Result<()> {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(&p.stripe_count.to_be_bytes());
        v.extend_from_slice(&p.stripe_unit.to_be_bytes());
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.put(&hint_key(ino), &v)).map_err(kv_io)
    }

    fn hint(&self, ino: u64) -> Policy {
        let rec = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.get(&hint_key(ino))).ok().flatten();
        match rec {
            Some(v) if v.len() == 8 => Policy {
                stripe_count: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                stripe_unit: u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
            },
            _ => self.policy(),
        }
    }

    pub fn choose(&self, generation: u32) -> Option<StripeSet> {
        self.choose_with(generation, self.policy())
    }

    pub fn choose_with(&self, generation: u32, policy: Policy) -> Option<StripeSet> {
        // Live and active: draining, removed and lost data servers get no new files.
        let live = self.registry.placeable();
        if live.is_empty() {
            return None;
        }
        let rot = self.rotor.fetch_add(1, Ordering::Relaxed) as usize;
        let total = live.len();
        let mut cands: Vec<(u64, usize, u32)> =
            live.iter().enumerate().map(|(i, d)| (d.free >> 30, (i + total - rot % total) % total, d.index)).collect();
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let want = match policy.stripe_count {
            0 => total,
            n => (n as usize).min(total),
        };
        let mut ds: Vec<u32> = cands.into_iter().take(want).map(|c| c.2).collect();
        ds.sort_unstable();
        let first = (rot % ds.len()) as u32;
        Some(StripeSet { stripe_unit: policy.stripe_unit, first, generation, ds })
    }

    /// The stripe set of `ino`, placing the file on data servers first if
    /// it has none yet: objects are created on every DS, then the set is
    /// persisted (so it never changes for this file).
    pub fn place(&self, ino: u64) -> Result<Arc<StripeSet>, PlaceError> {
        let io = |e: io::Error| PlaceError::Io(e.to_string());
        if let Some(s) = self.stripe_set(ino).map_err(io)? {
            return Ok(s);
        }
        let _g = self.place_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).remove(&ino);
        if let Some(s) = self.stripe_set(ino).map_err(io)? {
            return Ok(s);
        }
        let inode = self.ns.get(ino).map_err(|s| PlaceError::Io(format!("inode {ino}: {s:?}")))?;
        let set = self.choose_with(inode.generation, self.hint(ino)).ok_or(PlaceError::Unavailable)?;
        for (j, &d) in set.ds.iter().enumerate() {
            let fh = set.ds_fh(j as u32, ino);
            if let Err(e) = self.obj_create(d, &fh) {
                log::warn!("placing inode {ino}: OBJ_CREATE on data server {d} failed: {e}");
                return Err(PlaceError::Unavailable);
            }
        }
        let devid = set.deviceid();
        let new_device = !self.devices.lock().unwrap_or_else(|p| p.into_inner()).contains(&devid);
        let bytes = set.encode();
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| {
            t.put(&set_key(ino), &bytes)?;
            if new_device {
                t.put(&device_key(&devid), &[])?;
            }
            Ok::<_, KvError>(())
        })
        .map_err(|e| PlaceError::Io(e.to_string()))?;
        if new_device {
            self.devices.lock().unwrap_or_else(|p| p.into_inner()).insert(devid);
        }
        log::debug!("inode {ino} striped over data servers {:?} (first stripe {})", set.ds, set.first);
        let set = Arc::new(set);
        self.cache_set(ino, Some(set.clone()));
        Ok(set)
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

    /// Inodes with a stripe set (to find orphans after a crash).
    pub fn placed_inodes(&self) -> io::Result<Vec<u64>> {
        let rows = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.scan_prefix(&[STRIPE_SET], usize::MAX)).map_err(kv_io)?;
        Ok(rows.into_iter().filter_map(|(k, _)| pnfs_kv::key::decode_u64_be(&k[1..])).collect())
    }
}

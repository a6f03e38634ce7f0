//! What the data servers hold, as the MDS's records say, for pnfsctl
//! (`crate::admin`): objects per data server, counted from the placement
//! records, and one file's layout with each object's size as its data
//! server reports it (OBJ_STAT).
//!
//! The layout description is a small tree (segments, mirrors, stripes) so
//! mirrored files with byte-range segments fit it without a new shape: a
//! files-layout file is one segment over the whole file with one mirror.

use super::{kv_io, Pnfs, MAX_TXN_RETRIES};
use crate::keyspace::STRIPE_SET;
use pnfs_kv::{transact, KvStore};
use std::collections::BTreeMap;
use std::io;

/// Keys read per transaction while scanning a prefix: one page at a time,
/// so a large namespace is never held in memory (nor in one etcd reply).
const SCAN_PAGE: usize = 4096;

/// Objects per data server, from the placement records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Data server index -> files with an object on it.
    pub per_ds: BTreeMap<u32, u64>,
    /// Files with a placement record.
    pub files: u64,
    /// Placement records this MDS could not read: their data servers are
    /// unknown, so a data server's count may be short by as many.
    pub unreadable: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Files layout (policy `stripe`).
    Files,
    /// Flexfiles with mirrors (`mirror2`, `mirror3`).
    Flex,
}

/// One object of a file: stripe `stripe` of a mirror, on data server `ds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub stripe: u32,
    pub ds: u32,
    pub ds_id: Vec<u8>,
    /// (size, space used) as the data server answered, or why not.
    pub stat: Result<(u64, u64), String>,
}

/// Bytes [offset, offset + length) of a file (length 0: to its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub length: u64,
    pub stripe_unit: u32,
    pub first_stripe: u32,
    /// Each mirror's stripes, in stripe order (one mirror: no mirroring).
    pub mirrors: Vec<Vec<ObjectInfo>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    pub kind: LayoutKind,
    /// The placement policy's name (`stripe`, `mirror2`, ...).
    pub policy: String,
    pub segments: Vec<Segment>,
}

/// Calls `each` with every record (key, value) under `prefix`, one page per
/// transaction. The pages are not one snapshot: a record created or removed
/// meanwhile may be missed or seen, which counting tolerates.
pub fn scan_pages(store: &dyn KvStore, prefix: u8, keys_only: bool, mut each: impl FnMut(&[u8], &[u8])) -> io::Result<()> {
    let end = [prefix + 1];
    let mut start = vec![prefix];
    loop {
        let page = transact(store, MAX_TXN_RETRIES, |t| {
            if keys_only {
                Ok(t.scan_keys(&start, Some(&end), SCAN_PAGE)?.into_iter().map(|k| (k, Vec::new())).collect())
            } else {
                t.scan(&start, Some(&end), SCAN_PAGE)
            }
        })
        .map_err(kv_io)?;
        for (k, v) in &page {
            each(k, v);
        }
        match page.last() {
            Some((k, _)) if page.len() == SCAN_PAGE => {
                start = k.clone();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// Why a data server was not removed.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoveError {
    /// It holds this many objects: drain it first.
    HoldsObjects(u64),
    /// This many placement records could not be read: its count is unknown.
    Unreadable(u64),
    Io(String),
}

impl Pnfs {
    /// Marks data server `index` removed, unless it holds objects: it is
    /// taken out of placement first, placements already choosing it
    /// (`place_lock`) finish, other cluster nodes get `settle` to follow,
    /// then its objects are counted; any found put its state back.
    pub fn remove_data_server(&self, index: u32, settle: std::time::Duration) -> Result<(), RemoveError> {
        use super::registry::AdminState;
        let before = self.registry.set_admin_state(index, AdminState::Removed).map_err(|e| RemoveError::Io(format!("{e:?}")))?;
        drop(self.place_lock.lock().unwrap_or_else(|p| p.into_inner()));
        std::thread::sleep(settle);
        let refused = match self.object_counts() {
            Ok(c) if c.unreadable > 0 => RemoveError::Unreadable(c.unreadable),
            Ok(c) => match c.per_ds.get(&index).copied().unwrap_or(0) {
                0 => return Ok(()),
                n => RemoveError::HoldsObjects(n),
            },
            Err(e) => RemoveError::Io(e.to_string()),
        };
        if let Err(e) = self.registry.set_admin_state(index, before) {
            log::error!("data server {index}: putting its admin state back to {} failed: {e:?}", before.name());
        }
        Err(refused)
    }

    /// The data servers a placement record names (striped or mirrored);
    /// None for a record this MDS does not read.
    fn placement_servers(raw: &[u8]) -> Option<Vec<u32>> {
        super::placement::Placement::decode(raw).map(|p| p.data_servers().to_vec())
    }

    /// Objects on each data server: a scan of every placement record
    /// (O(files), in pages).
    pub fn object_counts(&self) -> io::Result<ObjectCounts> {
        let mut c = ObjectCounts::default();
        scan_pages(&**self.ns.store(), STRIPE_SET, false, |_, v| {
            c.files += 1;
            match Self::placement_servers(v) {
                Some(ds) => ds.into_iter().for_each(|d| *c.per_ds.entry(d).or_default() += 1),
                None => c.unreadable += 1,
            }
        })?;
        Ok(c)
    }

    /// The layout of `ino` with its objects' sizes (OBJ_STAT on each data
    /// server alive; a dead one is named, not waited for). None: the file
    /// has no objects on data servers (yet).
    ///
    /// A mirrored file's segments repeat their data servers every
    /// `ds.len()` segments, so one period of segments is listed (from offset
    /// 0); each mirror is one object holding the file's bytes at file
    /// offsets, and its size is that object's (the same object serves every
    /// segment of that data server).
    pub fn file_layout(&self, ino: u64) -> io::Result<Option<FileLayout>> {
        let set = match self.placement(ino)? {
            None => return Ok(None),
            Some(super::placement::Placement::Mirrored(m)) => return Ok(Some(self.mirrored_layout(ino, &m))),
            Some(super::placement::Placement::Striped(s)) => s,
        };
        let stripes = set.ds.iter().enumerate().map(|(j, &d)| self.object_info(d, &set.ds_fh(j as u32, ino), j as u32)).collect();
        let whole = Segment { offset: 0, length: 0, stripe_unit: set.stripe_unit, first_stripe: set.first, mirrors: vec![stripes] };
        Ok(Some(FileLayout { kind: LayoutKind::Files, policy: "stripe".into(), segments: vec![whole] }))
    }

    fn object_info(&self, d: u32, fh: &[u8], stripe: u32) -> ObjectInfo {
        let info = self.registry.get(d);
        let stat = match &info {
            None => Err(format!("data server {d} is not known")),
            Some(_) if !self.registry.alive(d) => Err(format!("data server {d} is not alive")),
            Some(_) => self.obj_stat(d, fh).map_err(|e| e.to_string()),
        };
        ObjectInfo { stripe, ds: d, ds_id: info.map(|i| i.id).unwrap_or_default(), stat }
    }

    fn mirrored_layout(&self, ino: u64, m: &super::mirror::MirrorSet) -> FileLayout {
        let fh = m.object_fh(ino);
        // One OBJ_STAT per data server, however many segments name it.
        let objects: BTreeMap<u32, ObjectInfo> = m.ds.iter().map(|&d| (d, self.object_info(d, &fh, 0))).collect();
        let segments = (0..m.ds.len() as u64)
            .map(|k| {
                let (offset, length) = m.segment_range(k);
                let mirrors = m.segment_ds(k).into_iter().map(|d| vec![objects[&d].clone()]).collect();
                Segment { offset, length, stripe_unit: 0, first_stripe: 0, mirrors }
            })
            .collect();
        let policy = match m.mirrors {
            2 => "mirror2",
            3 => "mirror3",
            _ => "mirror",
        };
        FileLayout { kind: LayoutKind::Flex, policy: policy.into(), segments }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_kv::MemStore;

    #[test]
    fn pages_cover_every_record_of_the_prefix_and_nothing_else() {
        let store = MemStore::new();
        let n = 2 * SCAN_PAGE as u64 + 3;
        transact(&store, 1, |t| {
            for i in 0..n {
                t.put(&crate::keyspace::with_u64(STRIPE_SET, i), &i.to_be_bytes())?;
            }
            // Neighbours on both sides must not be counted.
            t.put(&[STRIPE_SET - 1, 9], b"x")?;
            t.put(&[STRIPE_SET + 1], b"x")?;
            Ok::<_, pnfs_kv::KvError>(())
        })
        .unwrap();
        for keys_only in [false, true] {
            let mut seen = Vec::new();
            scan_pages(&store, STRIPE_SET, keys_only, |k, v| seen.push((k.to_vec(), v.len()))).unwrap();
            assert_eq!(seen.len() as u64, n, "keys_only {keys_only}");
            assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in order, none twice");
            assert!(seen.iter().all(|(_, l)| *l == if keys_only { 0 } else { 8 }));
        }
    }
}

//! One object of the volume in memory ([`VolObj`]): its slot, size, mtime,
//! extent map (allocated in chunks on demand), dirty flags and
//! generations, and the lock that keeps I/O off extents being given back.

use super::errno;
use super::format::MAP_LEN;
use crate::fh::DsFh;
use crate::storage::ObjStat;
use pnfs_protocol::sync;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};

/// Map entries per lazily allocated in-memory chunk.
const CHUNK: usize = 64;
const CHUNKS: usize = MAP_LEN.div_ceil(CHUNK);

/// One object of the volume, in memory for as long as it exists.
#[derive(Debug)]
pub struct VolObj {
    pub fh: DsFh,
    pub(super) slot: u32,
    /// I/O holds it shared for its duration; truncate and remove exclusive,
    /// so no I/O is in flight on extents they give back.
    pub(super) io: RwLock<()>,
    pub(super) removed: AtomicBool,
    pub(super) size: AtomicU64,
    pub(super) mtime_ns: AtomicU64,
    /// Extent map, index + 1 (0: hole), allocated in chunks on demand.
    pub(super) map: [OnceLock<Box<[AtomicU32; CHUNK]>>; CHUNKS],
    pub(super) allocated: AtomicU32,
    /// Sequence number of the entry on disk; held across entry writes,
    /// extent allocation and commits of this object.
    pub(super) meta: Mutex<u64>,
    /// Size or map changed since the entry was last written.
    pub(super) meta_dirty: AtomicBool,
    /// Volume generation of the last write to this object.
    pub(super) last_gen: AtomicU64,
    /// Generation this object's own last commit covered.
    pub(super) committed_gen: AtomicU64,
    /// The version the MDS set (0: never); in the table entry.
    pub(super) version: AtomicU64,
}

impl VolObj {
    pub(super) fn new(fh: DsFh, slot: u32, seq: u64, size: u64, mtime_ns: u64) -> VolObj {
        VolObj {
            fh,
            slot,
            io: RwLock::new(()),
            removed: AtomicBool::new(false),
            size: AtomicU64::new(size),
            mtime_ns: AtomicU64::new(mtime_ns),
            map: std::array::from_fn(|_| OnceLock::new()),
            allocated: AtomicU32::new(0),
            meta: Mutex::new(seq),
            meta_dirty: AtomicBool::new(false),
            last_gen: AtomicU64::new(0),
            committed_gen: AtomicU64::new(0),
            version: AtomicU64::new(0),
        }
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    /// The version the MDS set (0: never set).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Map entry `i`: extent index + 1, 0 for a hole.
    pub(super) fn extent(&self, i: usize) -> u32 {
        self.map[i / CHUNK].get().map_or(0, |c| c[i % CHUNK].load(Ordering::Acquire))
    }

    pub(super) fn set_extent(&self, i: usize, v: u32) {
        let c = self.map[i / CHUNK].get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU32::new(0))));
        c[i % CHUNK].store(v, Ordering::Release);
    }

    /// (map index, extent + 1) of every allocated extent.
    pub(super) fn extents(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        (0..MAP_LEN).filter_map(|i| match self.extent(i) {
            0 => None,
            e => Some((i, e)),
        })
    }

    /// Shared I/O access; ESTALE once removed.
    pub(crate) fn begin_io(&self) -> io::Result<RwLockReadGuard<'_, ()>> {
        let g = sync::read(&self.io);
        if self.removed.load(Ordering::SeqCst) {
            return Err(errno(libc::ESTALE));
        }
        Ok(g)
    }

    pub fn attrs(&self, extent_bytes: u64) -> ObjStat {
        let m = self.mtime_ns.load(Ordering::SeqCst);
        ObjStat {
            size: self.size(),
            change: m,
            space_used: self.allocated.load(Ordering::SeqCst) as u64 * extent_bytes,
            mtime: ((m / 1_000_000_000) as i64, (m % 1_000_000_000) as u32),
        }
    }
}

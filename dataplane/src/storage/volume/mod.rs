//! The volume backend: every object of the data server on one raw block
//! device (`ds.volume = "/dev/nvme0n1"`) or one big preallocated file,
//! selected with `ds.backing = "volume"`. READ/WRITE go through the same
//! per-reactor io_uring [`crate::storage::Engine`] as the files backend:
//! aligned requests are O_DIRECT between the device and a registered pool
//! buffer (no copy), naming the one registered-file slot of the volume;
//! unaligned ones use a buffered descriptor of the volume (the page cache
//! does the read-modify-write, as with files).
//!
//! # On-disk layout (all offsets multiples of 4096)
//!
//! | where | what |
//! |---|---|
//! | 0 | superblock, one 4 KiB block: magic `PNFSVOL\x01`, version, extent size, volume size, object-table capacity, extent count, the DS id, FNV-1a checksum |
//! | 4096 | object table: `max_objects` slots of two 4 KiB copies each |
//! | after the table | extent bitmap, one bit per extent, whole 4 KiB blocks |
//! | rounded up to the extent size | the extents |
//!
//! An object-table copy holds: magic `PNFSOBJ\x01`, a sequence number, the
//! 16-byte DS filehandle, flags (in use or not), the object size, its mtime,
//! a checksum, and the extent map: [`MAP_LEN`] (1008) 32-bit entries, extent
//! index + 1 or 0 for a hole. An object is therefore at most 1008 extents
//! long (63 GiB with the default 64 MiB extents): a WRITE or truncate past
//! that is NFS4ERR_FBIG. Extents are allocated on the first write to their
//! range; reads of holes return zeros.
//!
//! # Crash consistency
//!
//! The object table is the truth; the bitmap is a summary of it.
//! - Each entry update writes the copy the previous version does not
//!   occupy (sequence number n goes to copy n % 2) through a descriptor
//!   opened with O_DSYNC (FUA or write + flush), so it is durable when the
//!   write returns and a torn write leaves the previous copy intact; at
//!   start the valid copy with the higher sequence number wins. Two
//!   corrupt non-empty copies refuse the start.
//! - An extent is zeroed when it is allocated (BLKZEROOUT on a block
//!   device, fallocate ZERO_RANGE / PUNCH_HOLE on a file), before any data
//!   goes into it, and its bitmap bit is set in memory and written to disk
//!   without waiting. Free extents may hold old bytes; allocated ones never
//!   show another object's.
//! - An entry naming newly allocated extents or a grown size is written only
//!   after a flush of the volume, so the zeroing and the data it covers are
//!   durable before the entry points at them (COMMIT, stable WRITE,
//!   truncate: flush, then entry).
//! - Extents leave an object (truncate, remove) by writing the entry
//!   without them (durable) first; only then may they be reused.
//! - At start the table is read whole: extents named by no entry are free,
//!   those named are allocated (referenced twice, or out of range: refuse
//!   the start, naming the slot); the on-disk bitmap is corrected where a
//!   crash left it behind (a set bit of an unreferenced extent, a clear one
//!   of a referenced extent) and the count logged. Finally one flush, so
//!   everything on the volume is durable before the first COMMIT.
//!
//! What a crash loses is exactly what was not acknowledged as durable:
//! unstable writes (the client resends them: the write verifier changes
//! every boot) and size growth not yet committed. An object's size is the
//! high-water mark of its writes (or what truncate set); it is persisted by
//! COMMIT, stable WRITE, truncate and a clean shutdown. As with the files
//! backend the data server removes or trims nothing by itself at start:
//! the MDS does that through the control program (its recovery removes
//! orphans and leaves striped objects' sizes alone).
//!
//! # COMMIT
//!
//! Every data write through the volume takes a volume-wide generation
//! number; a flush records the generation read before it started. COMMIT on
//! an object whose last write's generation is already covered by some flush
//! (for any object) answers without a syscall (`commits_covered`); otherwise
//! one fdatasync of the volume (IORING_OP_FSYNC on its fixed slot, i.e. an
//! NVMe flush) covers every object at once, followed by the entry write if
//! the object's size or extent map changed.
//!
//! # Formatting
//!
//! A volume whose first 4 KiB are all zeros is formatted at start (object
//! table and bitmap zeroed, then the superblock written). Anything else that
//! is not a valid superblock refuses the start with a message naming the
//! volume, so a device holding a file system is never overwritten.
//!
//! # Not here
//!
//! NVMe passthrough (`ds.volume_passthrough = true`: io_uring
//! `IORING_OP_URING_CMD` on the `/dev/ngXnY` character device, NVMe
//! read/write/flush commands built in the SQE) is in [`crate::storage::nvme`]: the
//! device offsets [`Volume::map_range`] yields become starting LBAs; the
//! metadata keeps the block device's descriptors. Objects longer than
//! 1008 extents (an indirect map), online growth of the volume, and a
//! per-object mtime more precise than "last write seen by this boot" are
//! not implemented.

use crate::config::IO_ALIGN;
use crate::fh::{DsFh, FH_LEN};
use crate::stats::{bump, DsStats};
use pnfs_protocol::sync::{self, lock};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

const BLOCK: u64 = IO_ALIGN as u64;
const SB_MAGIC: &[u8; 8] = b"PNFSVOL\x01";
const VERSION: u32 = 1;
const ENTRY_MAGIC: &[u8; 8] = b"PNFSOBJ\x01";
/// Extent-map entries in one object-table copy (4096 - 64 header bytes).
pub const MAP_LEN: usize = (IO_ALIGN - ENTRY_HDR) / 4;
const ENTRY_HDR: usize = 64;
const FLAG_IN_USE: u32 = 1;
/// Map entries per lazily allocated in-memory chunk.
const CHUNK: usize = 64;
const CHUNKS: usize = MAP_LEN.div_ceil(CHUNK);
const ID_MAX: usize = 64;
/// Bits in one bitmap block.
const BITS_PER_BLOCK: u64 = BLOCK * 8;
/// Object-table slots read per I/O at start.
const SCAN_SLOTS: u64 = 128;
/// Metadata scratch blocks kept for reuse.
const META_BUFS: usize = 16;

// ioctls (linux/fs.h): BLKGETSIZE64 = _IOR(0x12, 114, size_t), BLKZEROOUT = _IO(0x12, 127).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKZEROOUT: libc::c_ulong = 0x127f;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// FNV-1a 64 over `parts`.
fn checksum(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A heap buffer aligned for O_DIRECT.
pub(crate) struct Aligned {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is owned exclusively; access goes through &/&mut self.
unsafe impl Send for Aligned {}
unsafe impl Sync for Aligned {}

impl Aligned {
    pub(crate) fn new(len: usize) -> Aligned {
        let layout = Layout::from_size_align(len.max(IO_ALIGN), IO_ALIGN).expect("valid layout");
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Aligned { ptr, len: layout.size() }
    }
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr/len from the allocation, owned by us.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above; &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { dealloc(self.ptr, Layout::from_size_align(self.len, IO_ALIGN).expect("valid layout")) }
    }
}

/// Where everything is on the volume; derived from the volume size, the
/// extent size and the table capacity alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub volume_bytes: u64,
    pub extent_bytes: u64,
    pub max_objects: u32,
    pub extent_count: u32,
    pub table_off: u64,
    pub bitmap_off: u64,
    pub bitmap_len: u64,
    pub data_off: u64,
}

impl Geometry {
    pub fn compute(volume_bytes: u64, extent_bytes: u64, max_objects: u32) -> Result<Geometry, String> {
        if !extent_bytes.is_power_of_two() || extent_bytes < BLOCK {
            return Err(format!("extent size {extent_bytes} is not a power of two of at least 4096"));
        }
        if max_objects == 0 {
            return Err("an object table of 0 slots".into());
        }
        let table_off = BLOCK;
        let bitmap_off = table_off + max_objects as u64 * 2 * BLOCK;
        // An upper bound of the extent count sizes the bitmap.
        let bound = (volume_bytes / extent_bytes).min(u32::MAX as u64 - 1);
        let bitmap_len = bound.div_ceil(8).div_ceil(BLOCK).max(1) * BLOCK;
        let data_off = (bitmap_off + bitmap_len).div_ceil(extent_bytes) * extent_bytes;
        let extent_count = (volume_bytes.saturating_sub(data_off) / extent_bytes).min(bound);
        if extent_count == 0 {
            return Err(format!(
                "{volume_bytes} bytes hold no extent of {extent_bytes} bytes after the superblock, an object table of \
                 {max_objects} slots ({} bytes) and the bitmap; make it larger or lower ds.volume_max_objects",
                max_objects as u64 * 2 * BLOCK
            ));
        }
        Ok(Geometry {
            volume_bytes,
            extent_bytes,
            max_objects,
            extent_count: extent_count as u32,
            table_off,
            bitmap_off,
            bitmap_len,
            data_off,
        })
    }

    /// Largest object size: the extent map's reach.
    pub fn max_object_bytes(&self) -> u64 {
        MAP_LEN as u64 * self.extent_bytes
    }

    pub fn extent_off(&self, e: u32) -> u64 {
        self.data_off + e as u64 * self.extent_bytes
    }

    fn slot_off(&self, slot: u32, copy: u64) -> u64 {
        self.table_off + (slot as u64 * 2 + copy) * BLOCK
    }
}

/// Options of [`Volume::open`] (from the `[ds]` config).
#[derive(Debug, Clone)]
pub struct VolumeOptions {
    pub path: PathBuf,
    /// Size of a volume file (created or extended to it); ignored for a
    /// block device (its size is read from the device).
    pub bytes: Option<u64>,
    pub extent_bytes: u64,
    pub max_objects: u32,
    /// The DS id, recorded in the superblock at format and checked at open.
    pub ds_id: String,
    pub o_direct: bool,
    /// Aligned data I/O and flushes as NVMe commands on the namespace's
    /// generic device ([`crate::storage::nvme`]); needs an NVMe namespace block
    /// device and O_DIRECT.
    pub passthrough: bool,
}

/// Result of [`Volume::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Nothing written since this object's last commit.
    Clean,
    /// Writes there were, but a flush made since covered them.
    Covered,
    /// Flushed the volume (and wrote the entry when it changed).
    Flushed,
}

/// Attributes of an object (GETATTR, control OBJ_STAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjStat {
    pub size: u64,
    pub change: u64,
    pub space_used: u64,
    pub mtime: (i64, u32),
}

/// One object of the volume, in memory for as long as it exists.
#[derive(Debug)]
pub struct VolObj {
    pub fh: DsFh,
    slot: u32,
    /// I/O holds it shared for its duration; truncate and remove exclusive,
    /// so no I/O is in flight on extents they give back.
    io: RwLock<()>,
    removed: AtomicBool,
    size: AtomicU64,
    mtime_ns: AtomicU64,
    /// Extent map, index + 1 (0: hole), allocated in chunks on demand.
    map: [OnceLock<Box<[AtomicU32; CHUNK]>>; CHUNKS],
    allocated: AtomicU32,
    /// Sequence number of the entry on disk; held across entry writes,
    /// extent allocation and commits of this object.
    meta: Mutex<u64>,
    /// Size or map changed since the entry was last written.
    meta_dirty: AtomicBool,
    /// Volume generation of the last write to this object.
    last_gen: AtomicU64,
    /// Generation this object's own last commit covered.
    committed_gen: AtomicU64,
}

impl VolObj {
    fn new(fh: DsFh, slot: u32, seq: u64, size: u64, mtime_ns: u64) -> VolObj {
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
        }
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    /// Map entry `i`: extent index + 1, 0 for a hole.
    fn extent(&self, i: usize) -> u32 {
        self.map[i / CHUNK].get().map_or(0, |c| c[i % CHUNK].load(Ordering::Acquire))
    }

    fn set_extent(&self, i: usize, v: u32) {
        let c = self.map[i / CHUNK].get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU32::new(0))));
        c[i % CHUNK].store(v, Ordering::Release);
    }

    /// (map index, extent + 1) of every allocated extent.
    fn extents(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
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

struct Alloc {
    /// One bit per extent, set = allocated.
    bits: Vec<u64>,
    free: u64,
    /// Where the next search starts (word index).
    hint: usize,
}

impl Alloc {
    fn is_set(&self, e: u32) -> bool {
        self.bits[e as usize / 64] >> (e % 64) & 1 == 1
    }
    fn set(&mut self, e: u32, v: bool) {
        let (w, b) = (e as usize / 64, e % 64);
        if v {
            self.bits[w] |= 1 << b;
        } else {
            self.bits[w] &= !(1 << b);
        }
    }
    fn take(&mut self, count: u32) -> Option<u32> {
        if self.free == 0 {
            return None;
        }
        let words = self.bits.len();
        for k in 0..words {
            let w = (self.hint + k) % words;
            if self.bits[w] != u64::MAX {
                let e = (w * 64) as u32 + (!self.bits[w]).trailing_zeros();
                if e >= count {
                    continue;
                }
                self.set(e, true);
                self.free -= 1;
                self.hint = w;
                return Some(e);
            }
        }
        None
    }
}

struct Index {
    by_fh: HashMap<DsFh, Arc<VolObj>>,
    /// Free slots, lowest last.
    free_slots: Vec<u32>,
    /// Highest sequence number on disk in each slot (either copy).
    seqs: Vec<u64>,
}

/// A decoded object-table copy.
struct Entry {
    seq: u64,
    fh: DsFh,
    in_use: bool,
    size: u64,
    mtime_ns: u64,
    map: Vec<u32>,
}

/// The volume: see the module documentation.
pub struct Volume {
    path: PathBuf,
    geo: Geometry,
    blockdev: bool,
    /// Buffered descriptor: unaligned I/O, zeroing fallbacks.
    buffered: File,
    /// O_DIRECT descriptor for aligned data I/O and bitmap blocks.
    direct: Option<File>,
    /// O_DSYNC (and O_DIRECT when possible) descriptor for table entries.
    meta: File,
    /// NVMe passthrough, when enabled.
    passthrough: Option<crate::storage::nvme::Passthrough>,
    alloc: Mutex<Alloc>,
    index: Mutex<Index>,
    /// Volume write generations: each data write takes the next one; a
    /// flush that started after generation g completed raises `synced` to g.
    written: AtomicU64,
    synced: AtomicU64,
    meta_bufs: Mutex<Vec<Aligned>>,
    stats: Arc<DsStats>,
    /// Set by tests to drop the volume as a crash would (no entry writes).
    crash_on_drop: AtomicBool,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume").field("path", &self.path).field("geometry", &self.geo).finish()
    }
}

fn device_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    if unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

impl Volume {
    /// Opens (formatting an all-zero one) and recovers the volume. Errors
    /// name the volume and what is wrong.
    pub fn open(o: &VolumeOptions, stats: Arc<DsStats>) -> Result<Arc<Volume>, String> {
        let p = o.path.display().to_string();
        let e = |m: String| format!("volume {p}: {m}");
        if o.ds_id.len() > ID_MAX {
            return Err(e("DS id longer than 64 bytes".into()));
        }
        let existing = std::fs::metadata(&o.path).ok();
        let blockdev = existing.as_ref().is_some_and(|m| m.file_type().is_block_device());
        if existing.as_ref().is_some_and(|m| !blockdev && !m.is_file()) {
            return Err(e("neither a block device nor a regular file".into()));
        }
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(!blockdev)
            .truncate(false)
            .open(&o.path)
            .map_err(|x| e(format!("opening: {x}")))?;
        let size = if blockdev {
            device_size(&buffered).map_err(|x| e(format!("BLKGETSIZE64: {x}")))?
        } else {
            let len = buffered.metadata().map_err(|x| e(x.to_string()))?.len();
            match o.bytes {
                Some(want) if want > len => {
                    buffered.set_len(want).map_err(|x| e(format!("extending the file to {want} bytes: {x}")))?;
                    // Preallocate, so the host file system cannot run out later.
                    // SAFETY: plain syscall on our descriptor.
                    if unsafe { libc::fallocate(buffered.as_raw_fd(), 0, len as i64, (want - len) as i64) } != 0 {
                        log::info!("volume {p}: preallocating: {} (left sparse)", io::Error::last_os_error());
                    }
                    want
                }
                _ if len == 0 => return Err(e("an empty file and no ds.volume_bytes to create it with".into())),
                _ => len,
            }
        };
        let direct = if o.o_direct {
            match OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&o.path) {
                Ok(f) => Some(f),
                Err(x) => {
                    log::info!("volume {p}: O_DIRECT refused ({x}); buffered I/O");
                    None
                }
            }
        } else {
            None
        };
        let passthrough = if o.passthrough {
            if !blockdev {
                return Err(e("ds.volume_passthrough needs an NVMe namespace block device (/dev/nvmeXnY)".into()));
            }
            if direct.is_none() {
                return Err(e("ds.volume_passthrough needs O_DIRECT (ds.o_direct = true, and accepted by the device)".into()));
            }
            let pt = crate::storage::nvme::Passthrough::open(&o.path).map_err(e)?;
            // Passthrough writes do not invalidate the page cache: no
            // readahead into it (see buffered_data_io).
            // SAFETY: plain syscall on our descriptor.
            unsafe { libc::posix_fadvise(buffered.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
            log::info!(
                "volume {p}: NVMe passthrough on {} (nsid {}, {}-byte LBAs, at most {} bytes per command)",
                pt.path.display(),
                pt.nsid,
                1u32 << pt.lba_shift,
                pt.max_bytes
            );
            Some(pt)
        } else {
            None
        };
        let meta_flags = libc::O_DSYNC | if direct.is_some() { libc::O_DIRECT } else { 0 };
        let meta = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(meta_flags)
            .open(&o.path)
            .map_err(|x| e(format!("opening with O_DSYNC: {x}")))?;
        // A placeholder geometry until the superblock is read.
        let geo = Geometry::compute(size, o.extent_bytes, o.max_objects).map_err(e)?;
        let mut vol = Volume {
            path: o.path.clone(),
            geo,
            blockdev,
            buffered,
            direct,
            meta,
            passthrough,
            alloc: Mutex::new(Alloc { bits: vec![], free: 0, hint: 0 }),
            index: Mutex::new(Index { by_fh: HashMap::new(), free_slots: vec![], seqs: vec![] }),
            written: AtomicU64::new(1),
            synced: AtomicU64::new(1),
            meta_bufs: Mutex::new((0..META_BUFS).map(|_| Aligned::new(IO_ALIGN)).collect()),
            stats,
            crash_on_drop: AtomicBool::new(false),
        };
        let mut sb = Aligned::new(IO_ALIGN);
        vol.read_exact(sb.as_mut_slice(), 0).map_err(|x| e(format!("reading the superblock: {x}")))?;
        if sb.as_slice().iter().all(|b| *b == 0) {
            vol.format(&o.ds_id).map_err(|x| e(format!("formatting: {x}")))?;
            log::info!(
                "volume {p}: formatted: {} extents of {} bytes, {} object slots",
                vol.geo.extent_count,
                vol.geo.extent_bytes,
                vol.geo.max_objects
            );
        } else {
            vol.geo = vol.check_superblock(sb.as_slice(), size, o)?;
        }
        vol.recover().map_err(e)?;
        vol.flush().map_err(|x| e(format!("flushing: {x}")))?;
        Ok(Arc::new(vol))
    }

    fn check_superblock(&self, b: &[u8], size: u64, o: &VolumeOptions) -> Result<Geometry, String> {
        let p = self.path.display();
        if &b[0..8] != SB_MAGIC {
            return Err(format!(
                "volume {p}: bad magic: not a pnfsd volume (or damaged); refusing to use it. To format it, zero its \
                 first 4 KiB (this destroys what is on it)"
            ));
        }
        if get_u64(b, 4088) != checksum(&[&b[..4088]]) {
            return Err(format!("volume {p}: superblock checksum mismatch (damaged superblock); refusing to use it"));
        }
        let version = get_u32(b, 8);
        if version != VERSION {
            return Err(format!("volume {p}: format version {version}, this pnfsd knows {VERSION}"));
        }
        let (max_objects, extent_bytes, volume_bytes, extent_count) = (get_u32(b, 12), get_u64(b, 16), get_u64(b, 24), get_u32(b, 32));
        let id_len = (get_u32(b, 36) as usize).min(ID_MAX);
        let id = String::from_utf8_lossy(&b[40..40 + id_len]).into_owned();
        if id != o.ds_id {
            return Err(format!("volume {p}: belongs to data server {id:?}, not {:?} (ds.id)", o.ds_id));
        }
        if extent_bytes != o.extent_bytes {
            return Err(format!(
                "volume {p}: formatted with extents of {extent_bytes} bytes, but ds.volume_extent_bytes is {}",
                o.extent_bytes
            ));
        }
        if max_objects != o.max_objects {
            return Err(format!(
                "volume {p}: formatted with {max_objects} object slots, but ds.volume_max_objects is {}",
                o.max_objects
            ));
        }
        if volume_bytes > size {
            return Err(format!("volume {p}: formatted for {volume_bytes} bytes but only {size} are there"));
        }
        if volume_bytes < size {
            log::info!("volume {p}: formatted for {volume_bytes} of its {size} bytes; the rest stays unused");
        }
        let geo = Geometry::compute(volume_bytes, extent_bytes, max_objects).map_err(|x| format!("volume {p}: {x}"))?;
        if geo.extent_count != extent_count {
            return Err(format!("volume {p}: superblock extent count {extent_count} does not match its geometry"));
        }
        Ok(geo)
    }

    fn format(&mut self, ds_id: &str) -> io::Result<()> {
        let g = self.geo;
        self.zero_range(g.table_off, g.data_off - g.table_off)?;
        self.flush()?;
        let mut b = Aligned::new(IO_ALIGN);
        let s = b.as_mut_slice();
        s[0..8].copy_from_slice(SB_MAGIC);
        put_u32(s, 8, VERSION);
        put_u32(s, 12, g.max_objects);
        put_u64(s, 16, g.extent_bytes);
        put_u64(s, 24, g.volume_bytes);
        put_u32(s, 32, g.extent_count);
        put_u32(s, 36, ds_id.len() as u32);
        s[40..40 + ds_id.len()].copy_from_slice(ds_id.as_bytes());
        let c = checksum(&[&s[..4088]]);
        put_u64(s, 4088, c);
        self.meta_write(b.as_slice(), 0)
    }

    /// Reads the object table and the bitmap; rebuilds the allocator and
    /// the index; repairs the on-disk bitmap.
    fn recover(&mut self) -> Result<(), String> {
        let g = self.geo;
        let mut by_fh: HashMap<DsFh, Arc<VolObj>> = HashMap::new();
        let mut seqs = vec![0u64; g.max_objects as usize];
        let mut free_slots = Vec::new();
        let mut owner: HashMap<u32, u32> = HashMap::new();
        let mut buf = Aligned::new((SCAN_SLOTS * 2 * BLOCK) as usize);
        let mut first = 0u64;
        while first < g.max_objects as u64 {
            let n = SCAN_SLOTS.min(g.max_objects as u64 - first);
            let len = (n * 2 * BLOCK) as usize;
            self.read_exact(&mut buf.as_mut_slice()[..len], g.slot_off(first as u32, 0))
                .map_err(|x| format!("reading the object table: {x}"))?;
            for k in 0..n {
                let slot = (first + k) as u32;
                let at = (k * 2 * BLOCK) as usize;
                let copies = [&buf.as_slice()[at..at + IO_ALIGN], &buf.as_slice()[at + IO_ALIGN..at + 2 * IO_ALIGN]];
                let decoded: Vec<Result<Option<Entry>, ()>> = copies.iter().map(|c| decode_entry(c)).collect();
                let best = match (&decoded[0], &decoded[1]) {
                    (Err(()), Err(())) => {
                        return Err(format!("object table slot {slot}: both copies are corrupt; refusing to guess"));
                    }
                    (Err(()), _) | (_, Err(())) => {
                        // A torn last write, or a damaged copy: the other one stands.
                        log::warn!("volume {}: object table slot {slot}: one copy is corrupt; using the other", self.path.display());
                        decoded
                            .into_iter()
                            .filter_map(|d| d.ok().flatten())
                            .max_by_key(|en| en.seq)
                    }
                    _ => decoded
                        .into_iter()
                        .filter_map(|d| d.ok().flatten())
                        .max_by_key(|en| en.seq),
                };
                let Some(en) = best else {
                    free_slots.push(slot);
                    continue;
                };
                seqs[slot as usize] = en.seq;
                if !en.in_use {
                    free_slots.push(slot);
                    continue;
                }
                if en.size > g.max_object_bytes() {
                    return Err(format!("object table slot {slot}: size {} beyond the largest object", en.size));
                }
                if by_fh.contains_key(&en.fh) {
                    return Err(format!("object table slot {slot}: handle {} is in another slot too", en.fh.object_name()));
                }
                let vo = VolObj::new(en.fh, slot, en.seq, en.size, en.mtime_ns);
                for (i, e) in en.map.iter().enumerate() {
                    if *e == 0 {
                        continue;
                    }
                    if *e > g.extent_count {
                        return Err(format!("object table slot {slot}: extent {} out of range", e - 1));
                    }
                    if let Some(other) = owner.insert(e - 1, slot) {
                        return Err(format!("object table slots {other} and {slot} both claim extent {}", e - 1));
                    }
                    vo.set_extent(i, *e);
                    vo.allocated.fetch_add(1, Ordering::Relaxed);
                }
                by_fh.insert(en.fh, Arc::new(vo));
            }
            first += n;
        }
        free_slots.reverse();
        // The bitmap: what the table says, written back where it differs.
        let words = (g.extent_count as usize).div_ceil(64);
        let mut alloc = Alloc { bits: vec![0u64; words], free: g.extent_count as u64, hint: 0 };
        for e in owner.keys() {
            alloc.set(*e, true);
            alloc.free -= 1;
        }
        let blocks = (g.extent_count as u64).div_ceil(BITS_PER_BLOCK);
        let mut on_disk = Aligned::new(IO_ALIGN);
        let (mut leaked, mut missing) = (0u64, 0u64);
        for blk in 0..blocks {
            self.read_exact(on_disk.as_mut_slice(), g.bitmap_off + blk * BLOCK).map_err(|x| format!("reading the bitmap: {x}"))?;
            let want = bitmap_block(&alloc, blk);
            if want.as_slice() != on_disk.as_slice() {
                for (w, d) in want.as_slice().iter().zip(on_disk.as_slice()) {
                    leaked += (d & !w).count_ones() as u64;
                    missing += (w & !d).count_ones() as u64;
                }
                self.data_write(want.as_slice(), g.bitmap_off + blk * BLOCK).map_err(|x| format!("writing the bitmap: {x}"))?;
            }
        }
        if leaked + missing > 0 {
            log::info!(
                "volume {}: bitmap repaired after an unclean stop: {leaked} extent(s) freed (allocated, never \
                 committed), {missing} marked allocated",
                self.path.display()
            );
        }
        log::info!(
            "volume {}: {} object(s), {} of {} extents free",
            self.path.display(),
            by_fh.len(),
            alloc.free,
            g.extent_count
        );
        *lock(&self.alloc) = alloc;
        *lock(&self.index) = Index { by_fh, free_slots, seqs };
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    pub fn uses_o_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The descriptor aligned data I/O uses (registered in each reactor's
    /// file table), when O_DIRECT is on.
    pub fn direct_file(&self) -> Option<&File> {
        self.direct.as_ref()
    }

    /// The buffered descriptor (unaligned I/O). Data I/O through it goes
    /// through [`Volume::buffered_data_io`].
    pub fn buffered_file(&self) -> &File {
        &self.buffered
    }

    /// NVMe passthrough, when enabled.
    pub fn passthrough(&self) -> Option<&crate::storage::nvme::Passthrough> {
        self.passthrough.as_ref()
    }

    /// Runs `f` (data I/O through the buffered descriptor on
    /// `[place, place + len)` of the volume). With passthrough, which does
    /// not invalidate the page cache, the cached pages of the range are
    /// dropped before (a stale page would serve a read or a
    /// read-modify-write) and, for a write, written back (and waited for)
    /// and dropped after; after a read, dropped. Outside such a call the
    /// page cache therefore holds no data pages passthrough could make
    /// stale, and a later passthrough flush covers what was written.
    pub fn buffered_data_io<R>(&self, place: u64, len: usize, write: bool, f: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        if self.passthrough.is_none() {
            return f(&self.buffered);
        }
        let fd = self.buffered.as_raw_fd();
        let start = place & !(BLOCK - 1);
        let n = (place + len as u64).div_ceil(BLOCK) * BLOCK - start;
        let drop_pages = || {
            // SAFETY: plain syscall on our descriptor.
            unsafe { libc::posix_fadvise(fd, start as i64, n as i64, libc::POSIX_FADV_DONTNEED) };
        };
        drop_pages();
        let r = f(&self.buffered);
        if write {
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: plain syscall on our descriptor.
            if unsafe { libc::sync_file_range(fd, start as i64, n as i64, flags) } != 0 {
                let x = io::Error::last_os_error();
                drop_pages();
                return Err(x);
            }
        }
        drop_pages();
        r
    }

    /// The descriptor a flush goes to.
    pub fn flush_file(&self) -> &File {
        self.direct.as_ref().unwrap_or(&self.buffered)
    }

    /// (capacity, free) bytes of the data area.
    pub fn capacity(&self) -> (u64, u64) {
        let a = lock(&self.alloc);
        (self.geo.extent_count as u64 * self.geo.extent_bytes, a.free * self.geo.extent_bytes)
    }

    pub fn object_count(&self) -> usize {
        lock(&self.index).by_fh.len()
    }

    pub fn lookup(&self, fh: &DsFh) -> Option<Arc<VolObj>> {
        lock(&self.index).by_fh.get(fh).cloned()
    }

    /// Idempotent; the new entry is durable when it returns. ENOSPC when
    /// the object table is full.
    pub fn create(&self, fh: &DsFh) -> io::Result<Arc<VolObj>> {
        let mut idx = lock(&self.index);
        if let Some(v) = idx.by_fh.get(fh) {
            return Ok(v.clone());
        }
        let slot = match idx.free_slots.pop() {
            Some(s) => s,
            None => {
                log::warn!("volume {}: object table full ({} slots)", self.path.display(), self.geo.max_objects);
                return Err(errno(libc::ENOSPC));
            }
        };
        let seq = idx.seqs[slot as usize] + 1;
        let vo = Arc::new(VolObj::new(*fh, slot, seq, 0, now_ns()));
        if let Err(e) = self.write_entry(&vo, seq, true) {
            idx.free_slots.push(slot);
            return Err(e);
        }
        idx.seqs[slot as usize] = seq;
        idx.by_fh.insert(*fh, vo.clone());
        Ok(vo)
    }

    /// Idempotent; true when it existed. Waits for I/O in flight on it;
    /// later I/O through a stale reference gets ESTALE. The extents are
    /// reusable once the removal is durable.
    pub fn remove(&self, fh: &DsFh) -> io::Result<bool> {
        let Some(vo) = self.lookup(fh) else { return Ok(false) };
        let _w = sync::write(&vo.io);
        if vo.removed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let mut seq = lock(&vo.meta);
        self.write_entry(&vo, *seq + 1, false)?;
        *seq += 1;
        vo.removed.store(true, Ordering::SeqCst);
        let freed: Vec<u32> = vo.extents().map(|(_, e)| e - 1).collect();
        self.free_extents(&freed);
        let mut idx = lock(&self.index);
        if idx.by_fh.get(fh).is_some_and(|v| Arc::ptr_eq(v, &vo)) {
            idx.by_fh.remove(fh);
        }
        idx.seqs[vo.slot as usize] = *seq;
        idx.free_slots.push(vo.slot);
        Ok(true)
    }

    /// Sets the object's size: extents wholly past it are freed, the rest
    /// of the last one is zeroed (a later extension reads zeros), and the
    /// new entry is durable when it returns.
    pub fn truncate(&self, vo: &VolObj, size: u64) -> io::Result<()> {
        if size > self.geo.max_object_bytes() {
            return Err(errno(libc::EFBIG));
        }
        let _w = sync::write(&vo.io);
        if vo.removed.load(Ordering::SeqCst) {
            return Err(errno(libc::ESTALE));
        }
        let mut seq = lock(&vo.meta);
        let eb = self.geo.extent_bytes;
        let keep = size.div_ceil(eb) as usize;
        let mut freed = Vec::new();
        for (i, e) in vo.extents().filter(|(i, _)| *i >= keep).collect::<Vec<_>>() {
            vo.set_extent(i, 0);
            vo.allocated.fetch_sub(1, Ordering::SeqCst);
            freed.push(e - 1);
        }
        let within = size % eb;
        if within != 0 && size < vo.size() {
            let e = vo.extent((size / eb) as usize);
            if e != 0 {
                self.zero_range(self.geo.extent_off(e - 1) + within, eb - within)?;
            }
        }
        vo.size.store(size, Ordering::SeqCst);
        vo.mtime_ns.store(now_ns(), Ordering::SeqCst);
        vo.meta_dirty.store(false, Ordering::SeqCst);
        // The zeroing, and any extent allocated by writes not committed yet,
        // durable before the entry names them.
        let g = self.written.load(Ordering::SeqCst);
        let r = self.flush().and_then(|()| self.write_entry(vo, *seq + 1, true));
        if let Err(e) = r {
            vo.meta_dirty.store(true, Ordering::SeqCst);
            return Err(e);
        }
        self.synced.fetch_max(g, Ordering::SeqCst);
        *seq += 1;
        self.free_extents(&freed);
        Ok(())
    }

    /// Makes every write to `vo` completed before the call durable, with
    /// its size and extent map: see the module documentation. `flush`
    /// flushes the volume (the engine passes its ring's fsync).
    pub fn commit(&self, vo: &VolObj, flush: &mut dyn FnMut() -> io::Result<()>) -> io::Result<Commit> {
        let mut seq = lock(&vo.meta);
        let lg = vo.last_gen.load(Ordering::SeqCst);
        let meta_dirty = vo.meta_dirty.swap(false, Ordering::SeqCst);
        let own_clean = lg <= vo.committed_gen.load(Ordering::SeqCst);
        let covered = self.synced.load(Ordering::SeqCst) >= lg;
        if !meta_dirty && own_clean {
            return Ok(Commit::Clean);
        }
        if !meta_dirty && covered {
            vo.committed_gen.fetch_max(lg, Ordering::SeqCst);
            return Ok(Commit::Covered);
        }
        // Snapshot of size and map (taken in write_entry below) must not
        // name anything that completes after the flush: take the block now.
        let mut block = self.take_block();
        if meta_dirty {
            self.encode_entry(block.as_mut_slice(), vo, *seq + 1, true);
        }
        let g = self.written.load(Ordering::SeqCst);
        let r = flush().and_then(|()| {
            self.synced.fetch_max(g, Ordering::SeqCst);
            if meta_dirty {
                self.meta_write(block.as_slice(), self.geo.slot_off(vo.slot, (*seq + 1) % 2))
            } else {
                Ok(())
            }
        });
        self.give_block(block);
        if let Err(e) = r {
            if meta_dirty {
                vo.meta_dirty.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        if meta_dirty {
            *seq += 1;
        }
        vo.committed_gen.fetch_max(lg, Ordering::SeqCst);
        Ok(Commit::Flushed)
    }

    /// Commit with a plain fdatasync (control program, tests).
    pub fn commit_plain(&self, vo: &VolObj) -> io::Result<Commit> {
        self.commit(vo, &mut || {
            bump(&self.stats.fdatasyncs, 1);
            self.flush()
        })
    }

    /// fdatasync of the volume.
    pub fn flush(&self) -> io::Result<()> {
        self.flush_file().sync_data()
    }

    /// Calls `f(at, len, place)` for each piece of `[off, off + len)` that
    /// lies in one extent, in order: `at` is the piece's position in the
    /// request, `place` its volume offset, or None for a hole (only when
    /// `allocate` is false; otherwise holes get an extent first, ENOSPC
    /// when none is free). EFBIG past the largest object. No allocation.
    pub fn map_range(
        &self,
        vo: &VolObj,
        off: u64,
        len: usize,
        allocate: bool,
        mut f: impl FnMut(usize, usize, Option<u64>) -> io::Result<()>,
    ) -> io::Result<()> {
        let eb = self.geo.extent_bytes;
        let mut at = 0usize;
        while at < len {
            let o = off + at as u64;
            let i = (o / eb) as usize;
            let within = o % eb;
            let n = ((eb - within) as usize).min(len - at);
            if i >= MAP_LEN {
                return Err(errno(libc::EFBIG));
            }
            let place = match vo.extent(i) {
                0 if allocate => Some(self.ensure_extent(vo, i)?),
                0 => None,
                e => Some(self.geo.extent_off(e - 1)),
            };
            f(at, n, place.map(|b| b + within))?;
            at += n;
        }
        Ok(())
    }

    /// EFBIG unless `[off, off + len)` fits in an object.
    pub fn check_range(&self, off: u64, len: usize) -> io::Result<u64> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.geo.max_object_bytes() => Ok(end),
            _ => Err(errno(libc::EFBIG)),
        }
    }

    /// Volume offset of extent `i` of `vo`, allocating (and zeroing) it
    /// when it is a hole.
    fn ensure_extent(&self, vo: &VolObj, i: usize) -> io::Result<u64> {
        let _m = lock(&vo.meta);
        let e = vo.extent(i);
        if e != 0 {
            return Ok(self.geo.extent_off(e - 1));
        }
        let e = {
            let mut a = lock(&self.alloc);
            let e = a.take(self.geo.extent_count).ok_or_else(|| errno(libc::ENOSPC))?;
            // Not waited for: the table is the truth (see the module doc).
            let blk = e as u64 / BITS_PER_BLOCK;
            let r = self.data_write(bitmap_block(&a, blk).as_slice(), self.geo.bitmap_off + blk * BLOCK);
            if let Err(x) = r {
                a.set(e, false);
                a.free += 1;
                return Err(x);
            }
            e
        };
        let off = self.geo.extent_off(e);
        if let Err(x) = self.zero_range(off, self.geo.extent_bytes) {
            self.free_extents(&[e]);
            return Err(x);
        }
        vo.set_extent(i, e + 1);
        vo.allocated.fetch_add(1, Ordering::SeqCst);
        vo.meta_dirty.store(true, Ordering::SeqCst);
        bump(&self.stats.volume_extents_allocated, 1);
        Ok(off)
    }

    /// A data write to `vo` ending at `end` completed (`ok`) or failed:
    /// takes a volume generation, grows the size on success.
    pub fn note_write(&self, vo: &VolObj, end: u64, ok: bool) {
        if ok {
            if vo.size.fetch_max(end, Ordering::SeqCst) < end {
                vo.meta_dirty.store(true, Ordering::SeqCst);
            }
            vo.mtime_ns.store(now_ns(), Ordering::Relaxed);
        }
        let g = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        vo.last_gen.fetch_max(g, Ordering::SeqCst);
    }

    /// Reads `buf.len()` bytes at object offset `off` with plain syscalls
    /// (control program): returns the bytes read (short at the object's end).
    pub fn read_plain(&self, vo: &VolObj, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let _g = vo.begin_io()?;
        let size = vo.size();
        if off >= size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - off) as usize;
        self.map_range(vo, off, n, false, |at, len, place| match place {
            None => {
                buf[at..at + len].fill(0);
                Ok(())
            }
            Some(p) => self.buffered_data_io(p, len, false, |f| f.read_exact_at(&mut buf[at..at + len], p)),
        })?;
        Ok(n)
    }

    /// Writes `data` at object offset `off` with plain syscalls through
    /// the buffered descriptor (control program).
    pub fn write_plain(&self, vo: &VolObj, off: u64, data: &[u8]) -> io::Result<()> {
        let end = self.check_range(off, data.len())?;
        let _g = vo.begin_io()?;
        let r = self.map_range(vo, off, data.len(), true, |at, len, place| {
            let p = place.expect("allocated");
            self.buffered_data_io(p, len, true, |f| f.write_all_at(&data[at..at + len], p))
        });
        self.note_write(vo, end, r.is_ok());
        r
    }

    /// Frees extents no entry names any more.
    fn free_extents(&self, extents: &[u32]) {
        if extents.is_empty() {
            return;
        }
        let mut a = lock(&self.alloc);
        let mut blocks: Vec<u64> = Vec::new();
        for e in extents {
            if a.is_set(*e) {
                a.set(*e, false);
                a.free += 1;
            }
            let b = *e as u64 / BITS_PER_BLOCK;
            if !blocks.contains(&b) {
                blocks.push(b);
            }
        }
        for b in blocks {
            // A lost clear is repaired at the next start.
            if let Err(x) = self.data_write(bitmap_block(&a, b).as_slice(), self.geo.bitmap_off + b * BLOCK) {
                log::warn!("volume {}: writing bitmap block {b}: {x}", self.path.display());
            }
        }
    }

    fn take_block(&self) -> Aligned {
        let mut b = lock(&self.meta_bufs).pop().unwrap_or_else(|| Aligned::new(IO_ALIGN));
        b.as_mut_slice().fill(0);
        b
    }

    fn give_block(&self, b: Aligned) {
        let mut v = lock(&self.meta_bufs);
        if v.len() < META_BUFS {
            v.push(b);
        }
    }

    fn encode_entry(&self, s: &mut [u8], vo: &VolObj, seq: u64, in_use: bool) {
        s.fill(0);
        s[0..8].copy_from_slice(ENTRY_MAGIC);
        put_u64(s, 8, seq);
        s[16..16 + FH_LEN].copy_from_slice(&vo.fh.to_bytes());
        put_u32(s, 32, if in_use { FLAG_IN_USE } else { 0 });
        if in_use {
            put_u64(s, 40, vo.size());
            put_u64(s, 48, vo.mtime_ns.load(Ordering::SeqCst));
            let mut n = 0;
            for (i, e) in vo.extents() {
                put_u32(s, ENTRY_HDR + 4 * i, e);
                n = i + 1;
            }
            put_u32(s, 36, n as u32);
        }
        let c = checksum(&[&s[..56], &s[64..]]);
        put_u64(s, 56, c);
    }

    /// Writes version `seq` of `vo`'s entry (durable on return).
    fn write_entry(&self, vo: &VolObj, seq: u64, in_use: bool) -> io::Result<()> {
        let mut b = self.take_block();
        self.encode_entry(b.as_mut_slice(), vo, seq, in_use);
        let r = self.meta_write(b.as_slice(), self.geo.slot_off(vo.slot, seq % 2));
        self.give_block(b);
        r
    }

    /// A durable aligned metadata write (O_DSYNC descriptor).
    fn meta_write(&self, b: &[u8], off: u64) -> io::Result<()> {
        bump(&self.stats.volume_meta_writes, 1);
        self.meta.write_all_at(b, off)
    }

    /// An aligned write that is not waited for (bitmap blocks).
    fn data_write(&self, b: &[u8], off: u64) -> io::Result<()> {
        bump(&self.stats.volume_meta_writes, 1);
        self.flush_file().write_all_at(b, off)
    }

    fn read_exact(&self, b: &mut [u8], off: u64) -> io::Result<()> {
        self.flush_file().read_exact_at(b, off)
    }

    /// Zeroes `[off, off + len)` of the volume (not flushed).
    fn zero_range(&self, off: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let fd = self.buffered.as_raw_fd();
        if self.blockdev {
            let (a, b) = (off.div_ceil(512) * 512, (off + len) / 512 * 512);
            if b > a {
                let range: [u64; 2] = [a, b - a];
                // SAFETY: BLKZEROOUT reads two u64 through the pointer.
                if unsafe { libc::ioctl(fd, BLKZEROOUT as _, range.as_ptr()) } == 0 {
                    self.write_zeros(off, a - off)?;
                    return self.write_zeros(b, off + len - b);
                }
            }
            return self.write_zeros(off, len);
        }
        for mode in [libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE] {
            // SAFETY: plain syscall on our descriptor.
            if unsafe { libc::fallocate(fd, mode, off as i64, len as i64) } == 0 {
                return Ok(());
            }
        }
        self.write_zeros(off, len)
    }

    fn write_zeros(&self, mut off: u64, mut len: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while len > 0 {
            let n = len.min(ZEROS.len() as u64) as usize;
            self.buffered_data_io(off, n, true, |f| f.write_all_at(&ZEROS[..n], off))?;
            off += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    /// Test hook: the next drop behaves like a crash (no entry is written).
    pub fn crash_on_drop(&self) {
        self.crash_on_drop.store(true, Ordering::SeqCst);
    }

    /// Persists every object whose size or map changed (clean shutdown).
    pub fn sync_all(&self) -> io::Result<()> {
        let objs: Vec<Arc<VolObj>> = lock(&self.index).by_fh.values().cloned().collect();
        self.flush()?;
        for vo in objs {
            let _r = sync::read(&vo.io);
            if vo.removed.load(Ordering::SeqCst) || !vo.meta_dirty.load(Ordering::SeqCst) {
                continue;
            }
            self.commit_plain(&vo)?;
        }
        Ok(())
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if self.crash_on_drop.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.sync_all() {
            log::warn!("volume {}: persisting object sizes at shutdown: {e}", self.path.display());
        }
    }
}

/// Bitmap block `blk` of `a` as it should be on disk.
fn bitmap_block(a: &Alloc, blk: u64) -> Aligned {
    let mut b = Aligned::new(IO_ALIGN);
    let words_per_block = (BITS_PER_BLOCK / 64) as usize;
    let first = blk as usize * words_per_block;
    for (k, w) in a.bits.iter().skip(first).take(words_per_block).enumerate() {
        put_u64(b.as_mut_slice(), k * 8, *w);
    }
    b
}

/// Ok(None): an empty (all-zero) copy; Err: a corrupt one.
fn decode_entry(b: &[u8]) -> Result<Option<Entry>, ()> {
    if b.iter().all(|x| *x == 0) {
        return Ok(None);
    }
    if &b[0..8] != ENTRY_MAGIC || get_u64(b, 56) != checksum(&[&b[..56], &b[64..]]) {
        return Err(());
    }
    let fh = DsFh::parse(&b[16..16 + FH_LEN]).map_err(|_| ())?;
    let n = get_u32(b, 36) as usize;
    if n > MAP_LEN {
        return Err(());
    }
    Ok(Some(Entry {
        seq: get_u64(b, 8),
        fh,
        in_use: get_u32(b, 32) & FLAG_IN_USE != 0,
        size: get_u64(b, 40),
        mtime_ns: get_u64(b, 48),
        map: (0..n).map(|i| get_u32(b, ENTRY_HDR + 4 * i)).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::io::io_status;
    use crate::storage::{BufPool, Engine, IoError, Object, ObjectStore};
    use pnfs_protocol::wire::nfsstat4;

    const EXT: u64 = 64 * 1024;
    const KIB: usize = 1024;

    fn opts(path: &Path, bytes: u64, max_objects: u32) -> VolumeOptions {
        VolumeOptions { path: path.into(), bytes: Some(bytes), extent_bytes: EXT, max_objects, ds_id: "ds-vol".into(), o_direct: true, passthrough: false }
    }

    fn fh(i: u64) -> DsFh {
        DsFh { stripe: 1, ino: i, generation: 7 }
    }

    struct T {
        store: ObjectStore,
        engine: Engine,
        stats: Arc<DsStats>,
    }

    fn open_with(o: &VolumeOptions, uring: bool) -> T {
        let stats = Arc::new(DsStats::default());
        let store = ObjectStore::open_volume(o, stats.clone()).unwrap();
        let mut engine = Engine::new(BufPool::new(4, 256 * KIB), stats.clone(), uring);
        if engine.enable_fixed_files(8) {
            assert!(engine.attach_volume(store.volume().unwrap()));
        }
        T { store, engine, stats }
    }

    fn vol(t: &T) -> &Arc<Volume> {
        t.store.volume().unwrap()
    }

    fn pattern(seed: u32, len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    fn read(t: &T, o: &Object, off: u64, n: usize) -> Vec<u8> {
        let (b, got) = t.engine.read(o, off, n).ok().unwrap();
        b.as_slice()[..got].to_vec()
    }

    /// Writes through a pool buffer (zero-copy path: O_DIRECT when aligned).
    fn write_pooled(t: &T, o: &Object, off: u64, data: &[u8]) -> Result<(), IoError> {
        let mut b = t.engine.pool.take().unwrap();
        b.as_mut_slice()[..data.len()].copy_from_slice(data);
        t.engine.write_pooled(o, off, &b, data.len())
    }

    fn status(r: Result<(), IoError>) -> nfsstat4 {
        match r {
            Ok(()) => nfsstat4::NFS4_OK,
            Err(IoError::Io(e)) => io_status(&e),
            Err(IoError::NoBuffer) => nfsstat4::NFS4ERR_DELAY,
        }
    }

    /// A volume file whose data area holds garbage: allocation must zero.
    fn dirty_file(dir: &Path, bytes: u64) -> PathBuf {
        let p = dir.join("vol");
        let mut junk = vec![0xa5u8; bytes as usize];
        junk[..IO_ALIGN].fill(0);
        std::fs::write(&p, &junk).unwrap();
        p
    }

    #[test]
    fn format_reopen_round_trip_and_io_across_extents() {
        for uring in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let o = opts(&dirty_file(dir.path(), 4 << 20), 4 << 20, 8);
            let t = open_with(&o, uring);
            let g = vol(&t).geometry();
            assert_eq!((g.extent_bytes, g.max_objects, g.data_off % EXT), (EXT, 8, 0));
            let total = g.extent_count as u64 * EXT;
            assert_eq!(vol(&t).capacity(), (total, total));
            let a = t.store.create(&fh(1)).unwrap();
            assert!(Arc::ptr_eq(&a, &t.store.create(&fh(1)).unwrap()), "idempotent");
            assert_eq!(t.store.open_object(&fh(2)).unwrap_err().kind(), io::ErrorKind::NotFound);
            // Aligned, across two extent boundaries, O_DIRECT from the pool buffer.
            let big = pattern(1, 160 * KIB);
            assert_eq!(status(write_pooled(&t, &a, EXT - 16 * KIB as u64, &big)), nfsstat4::NFS4_OK);
            // Unaligned, across a boundary, buffered; a copying aligned write.
            let odd = pattern(2, 10_001);
            t.engine.write(&a, 4 * EXT - 5000, &odd).ok().unwrap();
            let small = pattern(3, 8192);
            t.engine.write(&a, 4 * EXT + 8192, &small).ok().unwrap();
            let end = 4 * EXT + 16384;
            assert_eq!(a.size().unwrap(), end);
            assert_eq!(vol(&t).capacity().1, total - 5 * EXT);
            let check = |t: &T, a: &Object| {
                assert!(read(t, a, EXT - 16 * KIB as u64, big.len()) == big);
                assert!(read(t, a, 4 * EXT - 5000, odd.len()) == odd);
                assert!(read(t, a, 4 * EXT - 4096, 4096)[..] == odd[904..5000]);
                assert!(read(t, a, 4 * EXT + 8192, 100_000) == small, "short at the end");
                // Holes and never-written parts of allocated extents: zeros,
                // not the garbage that was on the volume.
                assert!(read(t, a, 0, (EXT - 16 * KIB as u64) as usize).iter().all(|b| *b == 0));
                assert!(read(t, a, 4 * EXT + 5001, 3191).iter().all(|b| *b == 0));
                assert!(read(t, a, 3 * EXT + 16 * KIB as u64 + 7, 3 * KIB).iter().all(|b| *b == 0));
                assert!(read(t, a, end, 4096).is_empty());
                assert!(read(t, a, 1 << 40, 4096).is_empty());
            };
            check(&t, &a);
            assert_eq!(t.engine.pool.available(), 4, "buffers leaked");
            let s = t.stats.snapshot();
            assert!(s.direct_ops > 0 && s.volume_extents_allocated == 5 && s.volume_meta_writes > 0);
            if uring {
                assert!(s.uring_ops > 0);
                if t.engine.fixed_files_in_use() == 1 {
                    assert!(s.fixed_file_ops > 0, "the volume's slot is named");
                }
            }
            // Clean shutdown persists the size; reopen finds everything.
            drop(a);
            drop(t);
            let t = open_with(&o, uring);
            let a = t.store.open_object(&fh(1)).unwrap();
            assert_eq!(a.size().unwrap(), end);
            assert_eq!(a.stat().unwrap().space_used, 5 * EXT);
            check(&t, &a);
            assert_eq!(t.store.count_objects().unwrap(), 1);
            drop(a);
            drop(t);
            // Geometry or identity the config does not match: refused, named.
            for (k, bad) in [
                ("extents of", VolumeOptions { extent_bytes: EXT * 2, ..o.clone() }),
                ("object slots", VolumeOptions { max_objects: 9, ..o.clone() }),
                ("belongs to", VolumeOptions { ds_id: "other".into(), ..o.clone() }),
            ] {
                let e = Volume::open(&bad, Arc::new(DsStats::default())).unwrap_err();
                assert!(e.starts_with(&format!("volume {}:", o.path.display())) && e.contains(k), "{e}");
            }
        }
    }

    #[test]
    fn truncate_and_remove_free_extents() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(&dirty_file(dir.path(), 4 << 20), 4 << 20, 4);
        let t = open_with(&o, true);
        let free0 = vol(&t).capacity().1;
        let a = t.store.create(&fh(1)).unwrap();
        let data = pattern(5, 3 * EXT as usize);
        for k in 0..3 {
            let chunk = &data[k * EXT as usize..(k + 1) * EXT as usize];
            write_pooled(&t, &a, k as u64 * EXT, chunk).ok().unwrap();
        }
        assert_eq!(vol(&t).capacity().1, free0 - 3 * EXT);
        // Shrink into the second extent: the third goes, the tail of the second reads zeros later.
        let cut = EXT + 1000;
        t.store.truncate(&fh(1), cut).unwrap();
        assert_eq!((a.size().unwrap(), vol(&t).capacity().1), (cut, free0 - 2 * EXT));
        assert!(read(&t, &a, 0, 2000)[..] == data[..2000]);
        t.store.truncate(&fh(1), 3 * EXT).unwrap(); // extend: sparse
        assert_eq!(vol(&t).capacity().1, free0 - 2 * EXT);
        let back = read(&t, &a, EXT, 8192);
        assert!(back[..1000] == data[EXT as usize..EXT as usize + 1000]);
        assert!(back[1000..].iter().all(|b| *b == 0), "truncated bytes come back as zeros");
        assert!(read(&t, &a, 2 * EXT, 4096).iter().all(|b| *b == 0));
        // Control-program I/O sees the same bytes.
        let (d, eof) = t.store.read_at(&fh(1), EXT, 1000).unwrap();
        assert!(!eof && d[..] == data[EXT as usize..EXT as usize + 1000]);
        t.store.write_at(&fh(1), 5, b"ctl", true).unwrap();
        assert_eq!(&read(&t, &a, 0, 8)[5..], b"ctl");
        assert_eq!(t.store.stat(&fh(1)).unwrap().size, 3 * EXT);
        // Remove: extents back, handle gone, stale references refused.
        assert!(t.store.remove(&fh(1)).unwrap());
        assert!(!t.store.remove(&fh(1)).unwrap());
        assert_eq!(vol(&t).capacity().1, free0);
        assert_eq!(t.store.open_object(&fh(1)).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(t.store.stat(&fh(1)).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(status(t.engine.write(&a, 0, &[1u8; 4096])), nfsstat4::NFS4ERR_STALE);
        assert!(matches!(t.engine.read(&a, 0, 10), Err(IoError::Io(e)) if io_status(&e) == nfsstat4::NFS4ERR_STALE));
        // The slot is reused; the new object is empty.
        let b = t.store.create(&fh(1)).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.size().unwrap(), 0);
        drop((a, b));
        drop(t);
        let t = open_with(&o, true);
        assert_eq!((t.store.count_objects().unwrap(), vol(&t).capacity().1), (1, free0));
    }

    #[test]
    fn bounds_nospc_and_fbig() {
        let dir = tempfile::tempdir().unwrap();
        // Superblock + 2 slots (16 KiB) + bitmap: data from 64 KiB, 3 extents.
        let o = opts(&dir.path().join("vol"), 4 * EXT, 2);
        let t = open_with(&o, true);
        assert_eq!(vol(&t).geometry().extent_count, 3);
        let a = t.store.create(&fh(1)).unwrap();
        t.store.create(&fh(2)).unwrap();
        assert_eq!(io_status(&t.store.create(&fh(3)).unwrap_err()), nfsstat4::NFS4ERR_NOSPC, "table full");
        for k in 0..3 {
            write_pooled(&t, &a, k * EXT, &[9u8; 4096]).ok().unwrap();
        }
        assert_eq!(status(write_pooled(&t, &a, 3 * EXT, &[9u8; 4096])), nfsstat4::NFS4ERR_NOSPC);
        assert_eq!(status(t.engine.write(&a, 7 * EXT + 1, b"x")), nfsstat4::NFS4ERR_NOSPC);
        assert_eq!(a.size().unwrap(), 2 * EXT + 4096, "a refused write does not grow the size");
        let max = vol(&t).geometry().max_object_bytes();
        assert_eq!(max, MAP_LEN as u64 * EXT);
        assert_eq!(status(t.engine.write(&a, max - 1, b"xy")), nfsstat4::NFS4ERR_FBIG);
        assert_eq!(status(t.engine.write(&a, u64::MAX - 1, b"xy")), nfsstat4::NFS4ERR_FBIG);
        assert_eq!(io_status(&t.store.truncate(&fh(1), max + 1).unwrap_err()), nfsstat4::NFS4ERR_FBIG);
        t.store.truncate(&fh(1), max).unwrap();
        assert!(read(&t, &a, max - 4096, 8192).iter().all(|b| *b == 0));
        // Freed space is usable again.
        t.store.truncate(&fh(1), 0).unwrap();
        write_pooled(&t, &a, 5 * EXT, &[1u8; 4096]).ok().unwrap();
        assert_eq!(t.engine.pool.available(), 4);
        // Too small to hold anything: a clear error.
        let e = Volume::open(&opts(&dir.path().join("tiny"), EXT, 2), Arc::new(DsStats::default())).unwrap_err();
        assert!(e.contains("hold no extent"), "{e}");
    }

    #[test]
    fn one_flush_covers_every_object() {
        let dir = tempfile::tempdir().unwrap();
        let t = open_with(&opts(&dir.path().join("vol"), 2 << 20, 4), true);
        let (a, b) = (t.store.create(&fh(1)).unwrap(), t.store.create(&fh(2)).unwrap());
        assert!(!t.engine.commit(&a).unwrap(), "nothing written yet");
        write_pooled(&t, &a, 0, &[1u8; 4096]).ok().unwrap();
        write_pooled(&t, &b, 0, &[2u8; 4096]).ok().unwrap();
        // New extents and sizes: each commit flushes and writes its entry.
        assert!(t.engine.commit(&a).unwrap());
        assert!(t.engine.commit(&b).unwrap());
        // Overwrites (no new extent, no growth): a's flush covers b.
        write_pooled(&t, &a, 0, &[4u8; 4096]).ok().unwrap();
        write_pooled(&t, &b, 0, &[5u8; 4096]).ok().unwrap();
        assert!(t.engine.commit(&a).unwrap());
        assert!(!t.engine.commit(&b).unwrap(), "covered by a's flush");
        assert!(!t.engine.commit(&b).unwrap(), "clean");
        // Overwrite inside an allocated extent, no growth: flush only.
        write_pooled(&t, &b, 0, &[3u8; 4096]).ok().unwrap();
        let before = t.stats.snapshot().volume_meta_writes;
        assert!(t.engine.commit(&b).unwrap());
        assert_eq!(t.stats.snapshot().volume_meta_writes, before, "no entry write without a change");
        let s = t.stats.snapshot();
        assert_eq!((s.fdatasyncs, s.commits_covered, s.commits_clean), (4, 1, 2));
        // The same object through another opener shares it all.
        assert!(Arc::ptr_eq(&a, &t.store.open_object(&fh(1)).unwrap()));
    }

    /// Where copy `copy` of object-table slot `slot` is.
    fn slot_copy_off(o: &VolumeOptions, slot: u32, copy: u64) -> u64 {
        let bytes = std::fs::metadata(&o.path).unwrap().len();
        Geometry::compute(bytes, o.extent_bytes, o.max_objects).unwrap().slot_off(slot, copy)
    }

    #[test]
    fn crash_keeps_acknowledged_data_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(&dirty_file(dir.path(), 4 << 20), 4 << 20, 8);
        let crash = |t: T| {
            vol(&t).crash_on_drop();
            drop(t);
        };
        let t = open_with(&o, true);
        let free0 = vol(&t).capacity().1;
        let (a, b, c) = (t.store.create(&fh(1)).unwrap(), t.store.create(&fh(2)).unwrap(), t.store.create(&fh(3)).unwrap());
        let da = pattern(1, 100_000);
        // a: written and COMMITted.
        t.engine.write(&a, 0, &da).ok().unwrap();
        assert!(t.engine.commit(&a).unwrap());
        // b: a stable control-program write, then an unstable one growing it
        // into a new extent, never committed.
        t.store.write_at(&fh(2), 0, b"stable", true).unwrap();
        write_pooled(&t, &b, 2 * EXT, &[7u8; 4096]).ok().unwrap();
        // c: created, written unstable into a new extent, never committed.
        write_pooled(&t, &c, 0, &[8u8; 8192]).ok().unwrap();
        drop((a, b, c));
        crash(t);

        let t = open_with(&o, true);
        assert_eq!(t.store.count_objects().unwrap(), 3, "creates are durable at once");
        let a = t.store.open_object(&fh(1)).unwrap();
        assert_eq!(a.size().unwrap(), da.len() as u64);
        assert!(read(&t, &a, 0, da.len()) == da);
        let b = t.store.open_object(&fh(2)).unwrap();
        assert_eq!(b.size().unwrap(), 6, "the committed size, not the unacknowledged growth");
        assert_eq!(read(&t, &b, 0, 100), b"stable");
        assert_eq!(t.store.open_object(&fh(3)).unwrap().size().unwrap(), 0);
        // The uncommitted extents of b and c went back to the free pool.
        assert_eq!(vol(&t).capacity().1, free0 - 2 * EXT - EXT);
        // Truncate and remove are durable when answered.
        t.store.truncate(&fh(1), 5000).unwrap();
        assert!(t.store.remove(&fh(3)).unwrap());
        drop((a, b));
        crash(t);

        let t = open_with(&o, true);
        assert_eq!(t.store.count_objects().unwrap(), 2);
        let a = t.store.open_object(&fh(1)).unwrap();
        assert_eq!(a.size().unwrap(), 5000);
        assert!(read(&t, &a, 0, 10_000)[..] == da[..5000]);
        assert_eq!(vol(&t).capacity().1, free0 - 2 * EXT);
        let slot_a = 0; // fh(1) was created first
        drop(a);
        drop(t);

        // A torn entry write: the newest copy of a's slot is garbage. The
        // older copy (the same object before the truncate) stands.
        let f = OpenOptions::new().read(true).write(true).open(&o.path).unwrap();
        let (c0, c1) = (slot_copy_off(&o, slot_a, 0), slot_copy_off(&o, slot_a, 1));
        let seq = |off| {
            let mut b = vec![0u8; 4096];
            f.read_exact_at(&mut b, off).unwrap();
            get_u64(&b, 8)
        };
        let newest = if seq(c0) > seq(c1) { c0 } else { c1 };
        let buf = vec![0x5au8; 1000];
        f.write_all_at(&buf[..1000], newest + 100).unwrap();
        drop(f);
        let t = open_with(&o, true);
        let a = t.store.open_object(&fh(1)).unwrap();
        assert_eq!(a.size().unwrap(), da.len() as u64, "the copy before the torn write");
        drop(a);
        drop(t);
        // Both copies damaged: refused, with the slot named; no panic.
        let f = OpenOptions::new().write(true).open(&o.path).unwrap();
        f.write_all_at(&buf[..1000], c0 + 100).unwrap();
        f.write_all_at(&buf[..1000], c1 + 100).unwrap();
        let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
        assert!(e.contains(&format!("slot {slot_a}")) && e.contains("corrupt"), "{e}");
    }

    /// A real block device (its size from BLKGETSIZE64, zeroing with
    /// BLKZEROOUT). DESTROYS its contents: runs only when
    /// PNFS_DS_TEST_BLOCKDEV names one (e.g. a loop device).
    #[test]
    fn block_device_when_one_is_given() {
        let Some(dev) = std::env::var_os("PNFS_DS_TEST_BLOCKDEV") else {
            eprintln!("PNFS_DS_TEST_BLOCKDEV unset; skipped");
            return;
        };
        let path = PathBuf::from(dev);
        OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&[0u8; 4096], 0).unwrap();
        let o = VolumeOptions { bytes: None, ..opts(&path, 0, 8) };
        let t = open_with(&o, true);
        let g = vol(&t).geometry();
        let dev_size = device_size(&File::open(&path).unwrap()).unwrap();
        assert_eq!(g.volume_bytes, dev_size);
        let a = t.store.create(&fh(1)).unwrap();
        let d = pattern(7, 3 * EXT as usize);
        t.engine.write(&a, 1000, &d).ok().unwrap();
        write_pooled(&t, &a, 4 * EXT, &d[..EXT as usize]).ok().unwrap();
        assert!(read(&t, &a, 1000, d.len()) == d);
        t.store.truncate(&fh(1), EXT + 777).unwrap();
        t.store.truncate(&fh(1), 2 * EXT).unwrap();
        let back = read(&t, &a, EXT, EXT as usize);
        assert!(back[..777] == d[EXT as usize - 1000..EXT as usize - 223]);
        assert!(back[777..].iter().all(|b| *b == 0));
        // The truncate's flush covered the writes before it.
        assert!(!t.engine.commit(&a).unwrap());
        drop(a);
        drop(t);
        let t = open_with(&o, true);
        let a = t.store.open_object(&fh(1)).unwrap();
        assert_eq!(a.size().unwrap(), 2 * EXT);
        assert!(read(&t, &a, 1000, 1000)[..] == d[..1000]);
        assert!(t.store.remove(&fh(1)).unwrap());
        let (cap, free) = vol(&t).capacity();
        assert_eq!(cap, free);
    }

    #[test]
    fn passthrough_needs_an_nvme_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let o = VolumeOptions { passthrough: true, ..opts(&dir.path().join("vol"), 2 << 20, 4) };
        let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
        assert!(e.contains("volume_passthrough") && e.contains("NVMe"), "{e}");
    }

    /// Destroys what is on the namespace: only when PNFS_DS_TEST_NVME
    /// names one, as its generic device (/dev/ng0n1) or its block device
    /// (/dev/nvme0n1). Its first 4 KiB are zeroed, so it is formatted.
    #[test]
    fn nvme_passthrough_when_one_is_given() {
        let Some(dev) = std::env::var_os("PNFS_DS_TEST_NVME") else {
            eprintln!("PNFS_DS_TEST_NVME unset (an NVMe namespace, /dev/ngXnY or /dev/nvmeXnY, to overwrite); skipped");
            return;
        };
        let mut path = PathBuf::from(dev);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(rest) = name.strip_prefix("ng") {
            path = path.with_file_name(format!("nvme{rest}"));
        }
        OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&[0u8; 4096], 0).unwrap();
        let o = VolumeOptions { bytes: None, passthrough: true, ..opts(&path, 0, 8) };
        let t = open_with(&o, true);
        assert!(t.engine.uses_passthrough(), "passthrough ring not set up (see the log)");
        let a = t.store.create(&fh(1)).unwrap();
        let d = pattern(11, 3 * EXT as usize);
        // Aligned, across extent boundaries: NVMe writes from the registered buffer.
        write_pooled(&t, &a, EXT / 2, &d[..2 * EXT as usize]).ok().unwrap();
        let pt_writes = t.stats.snapshot().passthrough_ops;
        assert!(pt_writes >= 3, "{pt_writes}");
        // Unaligned: the block device's buffered path, then read back by passthrough.
        t.engine.write(&a, 3 * EXT + 100, &d[..5000]).ok().unwrap();
        assert!(read(&t, &a, EXT / 2, 2 * EXT as usize) == d[..2 * EXT as usize]);
        assert!(read(&t, &a, 3 * EXT, 8192)[100..5100] == d[..5000]);
        // Coherence: an unaligned read (page cache), an aligned passthrough
        // overwrite of the same block, an unaligned read again sees it.
        assert!(read(&t, &a, EXT / 2 + 10, 100)[..] == d[10..110]);
        let e = pattern(99, 4096);
        write_pooled(&t, &a, EXT / 2, &e).ok().unwrap();
        assert!(read(&t, &a, EXT / 2 + 10, 100)[..] == e[10..110]);
        let mut plain = vec![0u8; 100];
        vol(&t).read_plain(&t.store.volume().unwrap().lookup(&fh(1)).unwrap(), EXT / 2 + 10, &mut plain).unwrap();
        assert!(plain[..] == e[10..110]);
        // An NVMe error status (LBA out of range past the namespace's end) is EIO.
        let mut b = t.engine.pool.take().unwrap();
        let end = vol(&t).geometry().volume_bytes;
        let err = t.engine.pt_rw_test(false, &mut b, 4096, end).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        drop(b);
        // COMMIT: an NVMe flush.
        let before = t.stats.snapshot().passthrough_ops;
        assert!(t.engine.commit(&a).unwrap());
        assert_eq!(t.stats.snapshot().passthrough_ops, before + 1);
        drop(a);
        drop(t);
        let t = open_with(&o, true);
        let a = t.store.open_object(&fh(1)).unwrap();
        assert!(read(&t, &a, EXT / 2, 4096)[..] == e[..]);
        assert!(read(&t, &a, EXT / 2 + 4096, 4096)[..] == d[4096..8192]);
        assert!(t.store.remove(&fh(1)).unwrap());
    }

    #[test]
    fn damaged_superblock_is_an_error_naming_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(&dir.path().join("vol"), 2 << 20, 4);
        drop(open_with(&o, true));
        let f = OpenOptions::new().read(true).write(true).open(&o.path).unwrap();
        // A flipped bit inside: checksum.
        let mut b = vec![0u8; 4096];
        f.read_exact_at(&mut b, 0).unwrap();
        b[30] ^= 1;
        f.write_all_at(&b, 0).unwrap();
        let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
        assert!(e.starts_with(&format!("volume {}:", o.path.display())) && e.contains("checksum"), "{e}");
        // Something else entirely (a file system, say): bad magic, not formatted over.
        f.write_all_at(b"\x53\xef some file system", 0).unwrap();
        let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
        assert!(e.contains("bad magic") && e.contains("zero its first 4 KiB"), "{e}");
        let mut after = vec![0u8; 20];
        f.read_exact_at(&mut after, 0).unwrap();
        assert_eq!(&after[..2], b"\x53\xef", "left alone");
        // An empty file without a size to create it with.
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        let e = Volume::open(&VolumeOptions { bytes: None, ..opts(&dir.path().join("empty"), 0, 4) }, Arc::new(DsStats::default()))
            .unwrap_err();
        assert!(e.contains("ds.volume_bytes"), "{e}");
        // A directory is neither.
        let e = Volume::open(&opts(dir.path(), 2 << 20, 4), Arc::new(DsStats::default())).unwrap_err();
        assert!(e.contains("neither a block device nor a regular file"), "{e}");
    }
}

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
//! a checksum, the extent map: [`MAP_LEN`] (1006) 32-bit entries, extent
//! index + 1 or 0 for a hole, and in its last 8 bytes the object's version
//! (set by the MDS, see `CTL_PROC_OBJ_VERSION_SET`; tables written before
//! versions existed read as version 0 there, unless an object used the map's
//! last two entries, which this format no longer has). An object is
//! therefore at most 1006 extents long (62.9 GiB with the default 64 MiB
//! extents): a WRITE or truncate past that is NFS4ERR_FBIG. Extents are allocated on the first write to their
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
//! 1006 extents (an indirect map), online growth of the volume, and a
//! per-object mtime more precise than "last write seen by this boot" are
//! not implemented.

//!
//! # Files
//!
//! `mod.rs` holds the [`Volume`] (open, object create/remove/truncate,
//! COMMIT, mapping object ranges to extents, plain I/O for the control
//! program); `format.rs` the on-disk format, `object.rs` the in-memory
//! object, `alloc.rs` extent allocation, `recover.rs` the start-up scan,
//! `tests.rs` the tests.

mod alloc;
pub mod format;
pub mod object;
mod recover;
#[cfg(test)]
mod tests;

pub use format::{Geometry, MAP_LEN};
pub use object::VolObj;

use crate::storage::IO_ALIGN;
use crate::fh::DsFh;
use crate::stats::{bump, DsStats};
use crate::storage::buffers::Aligned;
use alloc::Alloc;
use format::{BLOCK, ID_MAX};
use pnfs_protocol::sync::{self, lock};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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

struct Index {
    by_fh: HashMap<DsFh, Arc<VolObj>>,
    /// Free slots, lowest last.
    free_slots: Vec<u32>,
    /// Highest sequence number on disk in each slot (either copy).
    seqs: Vec<u64>,
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

    /// Sets the object's version (CTL_PROC_OBJ_VERSION_SET, a finished
    /// copy): the volume is flushed first, so the entry naming the version
    /// (and the size and map it carries along) covers only durable data;
    /// durable when it returns.
    pub fn set_version(&self, vo: &VolObj, version: u64) -> io::Result<()> {
        let _g = vo.begin_io()?;
        let mut seq = lock(&vo.meta);
        let old = vo.version.swap(version, Ordering::SeqCst);
        let meta_dirty = vo.meta_dirty.swap(false, Ordering::SeqCst);
        // As in commit: the entry is encoded before the flush, so it names
        // nothing that completes after it.
        let mut block = self.take_block();
        self.encode_entry(block.as_mut_slice(), vo, *seq + 1, true);
        let g = self.written.load(Ordering::SeqCst);
        let r = self.flush().and_then(|()| {
            self.synced.fetch_max(g, Ordering::SeqCst);
            self.meta_write(block.as_slice(), self.geo.slot_off(vo.slot, (*seq + 1) % 2))
        });
        self.give_block(block);
        if let Err(e) = r {
            vo.version.store(old, Ordering::SeqCst);
            if meta_dirty {
                vo.meta_dirty.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        *seq += 1;
        Ok(())
    }

    /// The allocated pieces of `[off, off + len)` (cut at the object's
    /// size), as object ranges, adjacent ones merged; the rest reads as
    /// zeros.
    pub fn data_ranges(&self, vo: &VolObj, off: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        let _g = vo.begin_io()?;
        let end = off.saturating_add(len).min(vo.size());
        let mut out: Vec<(u64, u64)> = Vec::new();
        if off >= end {
            return Ok(out);
        }
        let eb = self.geo.extent_bytes;
        let mut o = off;
        while o < end {
            let i = (o / eb) as usize;
            let next = ((o / eb + 1) * eb).min(end);
            if i < MAP_LEN && vo.extent(i) != 0 {
                match out.last_mut() {
                    Some(last) if last.1 == o => last.1 = next,
                    _ => out.push((o, next)),
                }
            }
            o = next;
        }
        Ok(out)
    }

    /// Zeroes `[off, off + len)` of the object where extents are allocated
    /// (holes read as zeros already); neither allocates nor grows the size.
    pub fn zero_plain(&self, vo: &VolObj, off: u64, len: u64) -> io::Result<()> {
        let len = len.min(vo.size().saturating_sub(off));
        let _g = vo.begin_io()?;
        let r = self.map_range(vo, off, len as usize, false, |_, n, place| match place {
            Some(p) => self.write_zeros(p, n as u64),
            None => Ok(()),
        });
        self.note_write(vo, 0, r.is_ok());
        r
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


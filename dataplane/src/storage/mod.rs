//! Object storage: one file per DS filehandle under `<data_dir>/objects`
//! (`ds.backing = "files"`) or every object on one volume, a block device
//! or big file (`ds.backing = "volume"`, [`crate::storage::volume`]); the
//! per-reactor aligned buffer pool, and the per-reactor I/O engine.
//!
//! READ/WRITE/COMMIT ([`Engine`]) and the control program
//! ([`ObjectStore`]'s create/remove/truncate/read_at/write_at/sync/stat)
//! see [`Object`] and the store only; which backend holds an object is an
//! enum inside them. Everything below about descriptors and files is the
//! files backend; the volume backend has one buffered and one O_DIRECT
//! descriptor for the whole volume (the latter registered once in each
//! reactor's file table by [`Engine::attach_volume`]) and maps object
//! ranges to extents ([`crate::storage::volume::Volume::map_range`]); with
//! `ds.volume_passthrough` each engine also has an NVMe passthrough ring
//! for the volume's aligned data I/O and flushes ([`crate::storage::nvme`]).
//!
//! [`ObjectStore`] is the object directory: it opens, creates and removes
//! objects, and knows (weakly) the live object of each handle, so every
//! reactor opening a handle gets the same [`Object`] and with it the same
//! dirty generation: a COMMIT on a clean object (no write completed since
//! its last fdatasync, on any reactor or by the control program) answers
//! without a syscall, and one on a dirty object issues a single fdatasync
//! covering every write acknowledged before it. Each reactor keeps its own cache of open
//! objects ([`crate::bus::Replica`]), which the control program keeps right
//! through the bus updates (a created object is handed to every
//! reactor, a removed one dropped by every reactor before OBJ_REMOVE is
//! answered); the control program's own proxy I/O opens the buffered
//! descriptor per call. An open object has a buffered descriptor and,
//! when O_DIRECT is enabled and the file system accepts it, a second one
//! opened with O_DIRECT. Aligned requests (offset and length multiples of
//! 4096, buffer from the pool) use the O_DIRECT descriptor; everything else
//! (tails, odd offsets, control-program proxy I/O) uses the buffered one.
//! Linux keeps the two coherent (direct I/O writes back and invalidates the
//! cached pages of its range first).
//!
//! [`Engine`] belongs to one reactor thread (it is not `Send`): an io_uring
//! with the reactor's pool buffers registered (fixed buffers), used with
//! submit-and-wait per request by WRITE, COMMIT and the synchronous READ
//! path, and by [`crate::storage::aio`] for READs kept in flight (completions that
//! a submit-and-wait reaps for those are kept for [`crate::storage::aio`] in
//! `foreign`), and a sparse registered-file table
//! (`ds.fixed_files_per_reactor` slots): the reactor's open-object cache
//! installs an object's descriptors when it takes the object in and removes
//! them when it evicts or drops it, and I/O names the slot (`Fixed`)
//! instead of the fd, sparing the kernel the per-request fd lookup. When
//! io_uring cannot be set up it falls back to pread/pwrite; when buffer
//! registration fails, to unregistered uring reads/writes; when file
//! registration is refused (Linux < 5.19) or the table is full, to plain
//! descriptors. Each fallback is logged once per process.

pub mod aio;
pub mod nvme;
pub mod volume;

use crate::config::IO_ALIGN;
use crate::fh::DsFh;
use crate::stats::{bump, DsStats};
use crate::storage::volume::{Commit, VolObj, Volume, VolumeOptions};
pub use crate::storage::volume::ObjStat;
use io_uring::{opcode, types, IoUring};
use pnfs_protocol::sync::lock;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::collections::HashMap;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};

/// Submission queue entries of a reactor ring without asynchronous reads
/// ([`Engine::with_ring_entries`] sizes it for the in-flight limit).
const RING_ENTRIES: u32 = 64;

/// `user_data` of the engine's own submit-and-wait entries; any other value
/// belongs to the asynchronous reads of [`crate::storage::aio`].
pub(crate) const SYNC_TAG: u64 = u64::MAX;

static LOGGED_NO_DIRECT: AtomicBool = AtomicBool::new(false);
static LOGGED_NO_URING: AtomicBool = AtomicBool::new(false);
static LOGGED_NO_REGISTER: AtomicBool = AtomicBool::new(false);
static LOGGED_NO_FIXED_FILES: AtomicBool = AtomicBool::new(false);
static LOGGED_NO_PASSTHROUGH: AtomicBool = AtomicBool::new(false);

/// A reactor's NVMe passthrough ring ([`crate::storage::nvme`]): 128-byte SQEs and
/// 32-byte CQEs, the pool buffers registered, the generic device in fixed
/// file slot 0 (or its descriptor when file registration is refused).
struct PtRing {
    ring: IoUring<io_uring::squeue::Entry128, io_uring::cqueue::Entry32>,
    registered: bool,
    fixed_file: bool,
    fd: RawFd,
    nsid: u32,
    lba_shift: u32,
    max_bytes: u32,
}

fn log_once(flag: &AtomicBool, msg: impl FnOnce() -> String) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::info!("{}", msg());
    }
}

#[derive(Debug)]
pub struct Object {
    pub fh: DsFh,
    backing: Backing,
    /// Dirty generation: writes completed through this object (any
    /// reactor, and control-program writes while it is live), counted
    /// after each write returned; starts at 1 because writes made before it
    /// was opened may not be durable yet.
    written: AtomicU64,
    /// The `written` value read just before the last successful fdatasync
    /// started: every write counted up to it is durable.
    synced: AtomicU64,
}

/// Where an object's bytes are.
#[derive(Debug)]
enum Backing {
    /// Its own file, and the same file opened with O_DIRECT when enabled
    /// and supported.
    File { file: File, direct: Option<File> },
    /// Extents of the volume.
    Volume { vol: Arc<Volume>, vo: Arc<VolObj> },
}

fn file_stat(m: &std::fs::Metadata) -> ObjStat {
    use std::os::unix::fs::MetadataExt;
    ObjStat {
        size: m.len(),
        // ctime moves on every data or size change of the object file.
        change: (m.ctime() as u64).wrapping_mul(1_000_000_000).wrapping_add(m.ctime_nsec() as u64),
        space_used: m.blocks() * 512,
        mtime: (m.mtime(), m.mtime_nsec() as u32),
    }
}

impl Object {
    fn new(fh: DsFh, backing: Backing) -> Object {
        Object { fh, backing, written: AtomicU64::new(1), synced: AtomicU64::new(0) }
    }

    pub fn size(&self) -> io::Result<u64> {
        match &self.backing {
            Backing::File { file, .. } => Ok(file.metadata()?.len()),
            Backing::Volume { vo, .. } => Ok(vo.size()),
        }
    }

    /// Size, change, space used, mtime (GETATTR).
    pub fn stat(&self) -> io::Result<ObjStat> {
        match &self.backing {
            Backing::File { file, .. } => Ok(file_stat(&file.metadata()?)),
            Backing::Volume { vol, vo } => Ok(vo.attrs(vol.geometry().extent_bytes)),
        }
    }

    /// The object's own descriptors (files backend; a volume object has
    /// none, the volume's are registered once per reactor).
    fn own_files(&self) -> impl Iterator<Item = &File> {
        let (a, b) = match &self.backing {
            Backing::File { file, direct } => (Some(file), direct.as_ref()),
            Backing::Volume { .. } => (None, None),
        };
        a.into_iter().chain(b)
    }

    /// Counts a completed write; call after it returned, before it is acknowledged.
    pub fn mark_written(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
    }

    /// The generation a sync starting now must reach, or None when every
    /// write completed so far is durable already.
    pub fn unsynced(&self) -> Option<u64> {
        let w = self.written.load(Ordering::SeqCst);
        (self.synced.load(Ordering::SeqCst) < w).then_some(w)
    }

    /// The files backend's descriptors (buffered, O_DIRECT when there is
    /// one), for [`crate::storage::aio`]; None for a volume object.
    pub(crate) fn files(&self) -> Option<(&File, Option<&File>)> {
        match &self.backing {
            Backing::File { file, direct } => Some((file, direct.as_ref())),
            Backing::Volume { .. } => None,
        }
    }

    /// Whether aligned I/O can go O_DIRECT.
    pub(crate) fn has_direct(&self) -> bool {
        match &self.backing {
            Backing::File { direct, .. } => direct.is_some(),
            Backing::Volume { vol, .. } => vol.uses_o_direct(),
        }
    }

    /// A sync that started after [`Object::unsynced`] returned `w` succeeded.
    pub fn mark_synced(&self, w: u64) {
        self.synced.fetch_max(w, Ordering::SeqCst);
    }
}

pub struct ObjectStore {
    kind: StoreKind,
    /// O_DIRECT wanted by the config and accepted by the file system.
    direct: bool,
    /// Serialises creation so the directory fsync covers each new entry.
    create_lock: Mutex<()>,
    /// The live object of each handle, so all reactors share one [`Object`]
    /// per file and with it its dirty generation (a COMMIT on one reactor
    /// must see writes made on another). Dead entries are pruned as it grows.
    live: Mutex<Live>,
}

enum StoreKind {
    /// `<data_dir>/objects`.
    Files { dir: PathBuf },
    Volume(Arc<Volume>),
}

struct Live {
    map: HashMap<DsFh, Weak<Object>>,
    /// Size after the last prune: the next comes at twice that.
    pruned_at: usize,
}

impl Live {
    fn get(&self, fh: &DsFh) -> Option<Arc<Object>> {
        self.map.get(fh).and_then(Weak::upgrade)
    }

    fn insert(&mut self, o: &Arc<Object>) {
        self.map.insert(o.fh, Arc::downgrade(o));
        if self.map.len() >= 2 * self.pruned_at.max(64) {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.pruned_at = self.map.len();
        }
    }
}

/// Opens a probe file with O_DIRECT to see whether the file system takes it.
pub fn probe_o_direct(dir: &Path) -> bool {
    let p = dir.join(".o_direct_probe");
    let r = OpenOptions::new().read(true).write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(&p);
    let _ = std::fs::remove_file(&p);
    r.is_ok()
}

impl ObjectStore {
    /// Creates `<data_dir>/objects` if needed and probes O_DIRECT.
    pub fn open(data_dir: &Path, o_direct: bool) -> io::Result<ObjectStore> {
        let dir = data_dir.join("objects");
        std::fs::create_dir_all(&dir)?;
        let direct = o_direct && probe_o_direct(&dir);
        if o_direct && !direct {
            log_once(&LOGGED_NO_DIRECT, || {
                format!("{}: the file system refuses O_DIRECT; object I/O is buffered", dir.display())
            });
        }
        Ok(ObjectStore::with_kind(StoreKind::Files { dir }, direct))
    }

    fn with_kind(kind: StoreKind, direct: bool) -> ObjectStore {
        ObjectStore { kind, direct, create_lock: Mutex::new(()), live: Mutex::new(Live { map: HashMap::new(), pruned_at: 0 }) }
    }

    /// The volume backend: opens (or formats) the volume; the error names
    /// the volume and what is wrong with it.
    pub fn open_volume(o: &VolumeOptions, stats: Arc<DsStats>) -> Result<ObjectStore, String> {
        let vol = Volume::open(o, stats)?;
        let direct = vol.uses_o_direct();
        Ok(ObjectStore::with_kind(StoreKind::Volume(vol), direct))
    }

    /// The volume, when that is the backend.
    pub fn volume(&self) -> Option<&Arc<Volume>> {
        match &self.kind {
            StoreKind::Volume(v) => Some(v),
            StoreKind::Files { .. } => None,
        }
    }

    /// (capacity, free) bytes for registration and heartbeats: the file
    /// system holding `data_dir`, or the volume's data area.
    pub fn capacity(&self, data_dir: &Path) -> (u64, u64) {
        match &self.kind {
            StoreKind::Volume(v) => v.capacity(),
            StoreKind::Files { .. } => crate::ds::statvfs(data_dir).unwrap_or((0, 0)),
        }
    }

    pub fn uses_o_direct(&self) -> bool {
        self.direct
    }

    fn dir(&self) -> &Path {
        match &self.kind {
            StoreKind::Files { dir } => dir,
            StoreKind::Volume(v) => v.path(),
        }
    }

    fn path(&self, fh: &DsFh) -> PathBuf {
        self.dir().join(fh.object_name())
    }

    fn open_file(&self, fh: &DsFh, create: bool) -> io::Result<Object> {
        if let StoreKind::Volume(vol) = &self.kind {
            let vo = if create { vol.create(fh)? } else { vol.lookup(fh).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))? };
            return Ok(Object::new(*fh, Backing::Volume { vol: vol.clone(), vo }));
        }
        let path = self.path(fh);
        let file = OpenOptions::new().read(true).write(true).create(create).open(&path)?;
        let direct = if self.direct {
            match OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    log_once(&LOGGED_NO_DIRECT, || format!("{}: O_DIRECT open failed ({e}); buffered I/O", path.display()));
                    None
                }
            }
        } else {
            None
        };
        Ok(Object::new(*fh, Backing::File { file, direct }))
    }

    /// The existing object: the live one when some reactor has it, else
    /// opened (both descriptors); NotFound when it does not exist (never
    /// created, or removed).
    pub fn open_object(&self, fh: &DsFh) -> io::Result<Arc<Object>> {
        if fh.is_root() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the root handle is no object"));
        }
        // Held while opening, so a concurrent remove either sees our entry
        // or makes our open fail.
        let mut live = lock(&self.live);
        if let Some(o) = live.get(fh) {
            return Ok(o);
        }
        let o = Arc::new(self.open_file(fh, false)?);
        live.insert(&o);
        Ok(o)
    }

    /// A write to the object's file made outside the engine (control
    /// program proxy I/O) completed: the live object, if any, is dirty.
    /// Objects opened later start dirty anyway.
    pub fn mark_written(&self, fh: &DsFh) {
        if let Some(o) = lock(&self.live).get(fh) {
            o.mark_written();
        }
    }

    /// Opens an existing object's buffered descriptor only (control-program
    /// proxy I/O); NotFound when it does not exist.
    pub fn open_buffered(&self, fh: &DsFh) -> io::Result<File> {
        if fh.is_root() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the root handle is no object"));
        }
        if self.volume().is_some() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "volume objects have no file"));
        }
        OpenOptions::new().read(true).write(true).open(self.path(fh))
    }

    /// CTL_PROC_OBJ_CREATE: idempotent; the new directory entry is made
    /// durable. Returns the object, open.
    pub fn create(&self, fh: &DsFh) -> io::Result<Arc<Object>> {
        if fh.is_root() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the root handle is no object"));
        }
        let _g = lock(&self.create_lock);
        if let StoreKind::Volume(vol) = &self.kind {
            let vo = vol.create(fh)?;
            let mut live = lock(&self.live);
            if let Some(o) = live.get(fh).filter(|o| matches!(&o.backing, Backing::Volume { vo: v, .. } if Arc::ptr_eq(v, &vo))) {
                return Ok(o);
            }
            let o = Arc::new(Object::new(*fh, Backing::Volume { vol: vol.clone(), vo }));
            live.insert(&o);
            return Ok(o);
        }
        let existed = self.path(fh).exists();
        let mut live = lock(&self.live);
        if let Some(o) = live.get(fh).filter(|_| existed) {
            return Ok(o);
        }
        let o = Arc::new(self.open_file(fh, true)?);
        live.insert(&o);
        drop(live);
        if !existed {
            File::open(self.dir())?.sync_all()?;
        }
        Ok(o)
    }

    /// CTL_PROC_OBJ_REMOVE: idempotent; true when it existed. Descriptors
    /// already open (reactor caches) stay usable until dropped: the caller
    /// has every reactor drop them.
    pub fn remove(&self, fh: &DsFh) -> io::Result<bool> {
        let mut live = lock(&self.live);
        live.map.remove(fh);
        if let StoreKind::Volume(vol) = &self.kind {
            return vol.remove(fh);
        }
        let r = match std::fs::remove_file(self.path(fh)) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        drop(live);
        if r {
            File::open(self.dir())?.sync_all()?;
        }
        Ok(r)
    }

    /// Number of objects on disk (a directory scan; for tests and tools).
    pub fn count_objects(&self) -> io::Result<usize> {
        if let StoreKind::Volume(vol) = &self.kind {
            return Ok(vol.object_count());
        }
        Ok(std::fs::read_dir(self.dir())?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().and_then(DsFh::from_object_name).is_some())
            .count())
    }

    fn vol_obj(vol: &Volume, fh: &DsFh) -> io::Result<Arc<VolObj>> {
        vol.lookup(fh).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// CTL_PROC_OBJ_TRUNCATE: the object's size becomes `size` (durable);
    /// the live object is marked written.
    pub fn truncate(&self, fh: &DsFh, size: u64) -> io::Result<()> {
        let r = match &self.kind {
            StoreKind::Volume(vol) => vol.truncate(&*Self::vol_obj(vol, fh)?, size),
            StoreKind::Files { .. } => self.open_buffered(fh)?.set_len(size),
        };
        self.mark_written(fh);
        r
    }

    /// CTL_PROC_OBJ_WRITE: plain (buffered) write of `data` at `offset`;
    /// `stable` makes it durable before returning.
    pub fn write_at(&self, fh: &DsFh, offset: u64, data: &[u8], stable: bool) -> io::Result<()> {
        match &self.kind {
            StoreKind::Volume(vol) => {
                let vo = Self::vol_obj(vol, fh)?;
                let r = vol.write_plain(&vo, offset, data);
                self.mark_written(fh);
                r?;
                if stable {
                    vol.commit_plain(&vo)?;
                }
            }
            StoreKind::Files { .. } => {
                let f = self.open_buffered(fh)?;
                let r = f.write_all_at(data, offset);
                // Reactors' COMMITs must not take the object for clean now.
                self.mark_written(fh);
                r?;
                if stable {
                    f.sync_data()?;
                }
            }
        }
        Ok(())
    }

    /// CTL_PROC_OBJ_READ: up to `count` bytes at `offset` and whether they
    /// reach the object's end.
    pub fn read_at(&self, fh: &DsFh, offset: u64, count: usize) -> io::Result<(Vec<u8>, bool)> {
        let size = self.stat(fh)?.size;
        if offset >= size {
            return Ok((Vec::new(), true));
        }
        let n = (count as u64).min(size - offset) as usize;
        let mut data = vec![0u8; n];
        let done = match &self.kind {
            StoreKind::Volume(vol) => vol.read_plain(&*Self::vol_obj(vol, fh)?, offset, &mut data)?,
            StoreKind::Files { .. } => {
                let f = self.open_buffered(fh)?;
                let mut done = 0;
                while done < n {
                    match f.read_at(&mut data[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(k) => done += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                done
            }
        };
        data.truncate(done);
        Ok((data, offset + done as u64 >= size))
    }

    /// CTL_PROC_OBJ_COMMIT: everything written to the object is durable.
    pub fn sync(&self, fh: &DsFh) -> io::Result<()> {
        match &self.kind {
            StoreKind::Volume(vol) => vol.commit_plain(&*Self::vol_obj(vol, fh)?).map(drop),
            StoreKind::Files { .. } => self.open_buffered(fh)?.sync_data(),
        }
    }

    /// CTL_PROC_OBJ_STAT: size, change, space used, mtime.
    pub fn stat(&self, fh: &DsFh) -> io::Result<ObjStat> {
        match &self.kind {
            StoreKind::Volume(vol) => Ok(Self::vol_obj(vol, fh)?.attrs(vol.geometry().extent_bytes)),
            StoreKind::Files { .. } => Ok(file_stat(&self.open_buffered(fh)?.metadata()?)),
        }
    }
}

// ---------------------------------------------------------------------------
// Aligned buffer pool (one per reactor).

struct PoolInner {
    bufs: Vec<*mut u8>,
    free: RefCell<Vec<u16>>,
    layout: Layout,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        for p in &self.bufs {
            // SAFETY: allocated in BufPool::new with this layout; every PoolBuf
            // holds an Rc to us, so none is alive any more.
            unsafe { dealloc(*p, self.layout) };
        }
    }
}

/// Fixed set of `IO_ALIGN`-aligned buffers; empty pool = NFS4ERR_DELAY.
#[derive(Clone)]
pub struct BufPool(Rc<PoolInner>);

/// A buffer on loan from the pool; goes back when dropped.
pub struct PoolBuf {
    pool: Rc<PoolInner>,
    idx: u16,
}

impl BufPool {
    pub fn new(count: usize, size: usize) -> BufPool {
        assert!(count > 0 && count <= u16::MAX as usize + 1, "buffer count out of range");
        assert!(size > 0 && size.is_multiple_of(IO_ALIGN), "buffer size must be a multiple of {IO_ALIGN}");
        let layout = Layout::from_size_align(size, IO_ALIGN).expect("valid layout");
        let bufs = (0..count)
            .map(|_| {
                // SAFETY: non-zero size.
                let p = unsafe { alloc_zeroed(layout) };
                if p.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                p
            })
            .collect();
        let free = RefCell::new((0..count as u32).rev().map(|i| i as u16).collect());
        BufPool(Rc::new(PoolInner { bufs, free, layout }))
    }

    pub fn take(&self) -> Option<PoolBuf> {
        let idx = self.0.free.borrow_mut().pop()?;
        Some(PoolBuf { pool: self.0.clone(), idx })
    }

    pub fn available(&self) -> usize {
        self.0.free.borrow().len()
    }

    pub fn buf_size(&self) -> usize {
        self.0.layout.size()
    }

    fn iovecs(&self) -> Vec<libc::iovec> {
        self.0.bufs.iter().map(|p| libc::iovec { iov_base: *p as *mut _, iov_len: self.0.layout.size() }).collect()
    }
}

impl PoolBuf {
    pub fn index(&self) -> u16 {
        self.idx
    }
    pub fn capacity(&self) -> usize {
        self.pool.layout.size()
    }
    fn ptr(&self) -> *mut u8 {
        self.pool.bufs[self.idx as usize]
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer is ours until drop; size from the layout.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.capacity()) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.capacity()) }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let mut free = self.pool.free.borrow_mut();
        debug_assert!(!free.contains(&self.idx), "buffer returned twice");
        free.push(self.idx);
    }
}

// ---------------------------------------------------------------------------
// Per-reactor I/O engine.

pub(crate) fn is_aligned(x: u64) -> bool {
    x.is_multiple_of(IO_ALIGN as u64)
}

pub enum IoError {
    /// The reactor's buffer pool is empty: NFS4ERR_DELAY.
    NoBuffer,
    Io(io::Error),
}

impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        IoError::Io(e)
    }
}

/// The ring's registered files: slot -> fd and back. A descriptor is in
/// it only while the reactor's open-object cache holds its object, which
/// keeps the descriptor open, so a fd number found here is that file.
struct FileTable {
    /// The fd registered in each slot, -1 for a free one.
    slots: Vec<RawFd>,
    free: Vec<u32>,
    by_fd: HashMap<RawFd, u32>,
}

pub struct Engine {
    ring: Option<RefCell<IoUring>>,
    registered: bool,
    /// Completions of asynchronous reads reaped by [`Engine::submit`]
    /// while it waited for its own: (user_data, result), for [`crate::storage::aio`].
    /// Bounded by the reads in flight (each has one entry at a time).
    foreign: RefCell<Vec<(u64, i32)>>,
    /// Sparse registered-file table, when enabled and supported.
    files: RefCell<Option<FileTable>>,
    /// NVMe passthrough of the attached volume, when it has it and the
    /// ring could be set up ([`Engine::attach_volume`]).
    pt: RefCell<Option<PtRing>>,
    pub pool: BufPool,
    stats: Arc<DsStats>,
}

impl Engine {
    /// `use_uring` false forces the pread/pwrite path (tests).
    pub fn new(pool: BufPool, stats: Arc<DsStats>, use_uring: bool) -> Engine {
        Engine::with_ring_entries(pool, stats, use_uring, RING_ENTRIES)
    }

    /// As [`Engine::new`] with a ring of `entries` submission entries
    /// (rounded up to a power of two by the kernel; the completion queue is
    /// twice that), for [`crate::storage::aio`]'s in-flight limit.
    pub fn with_ring_entries(pool: BufPool, stats: Arc<DsStats>, use_uring: bool, entries: u32) -> Engine {
        let entries = entries.clamp(RING_ENTRIES, 32768);
        let ring = if use_uring {
            match IoUring::new(entries) {
                Ok(r) => Some(r),
                Err(e) => {
                    log_once(&LOGGED_NO_URING, || format!("io_uring unavailable ({e}); object I/O uses pread/pwrite"));
                    None
                }
            }
        } else {
            None
        };
        let mut registered = false;
        if let Some(r) = &ring {
            let iov = pool.iovecs();
            // SAFETY: the buffers live as long as the pool, and the pool
            // outlives the ring (the Engine owns both; `ring` drops first).
            match unsafe { r.submitter().register_buffers(&iov) } {
                Ok(()) => registered = true,
                Err(e) => log_once(&LOGGED_NO_REGISTER, || {
                    format!("io_uring buffer registration failed ({e}); using unregistered buffers")
                }),
            }
        }
        Engine { ring: ring.map(RefCell::new), registered, foreign: RefCell::new(Vec::new()), files: RefCell::new(None), pt: RefCell::new(None), pool, stats }
    }

    pub fn uses_uring(&self) -> bool {
        self.ring.is_some()
    }

    /// Whether the attached volume's aligned data I/O goes as NVMe commands.
    pub fn uses_passthrough(&self) -> bool {
        self.pt.borrow().is_some()
    }

    /// Sets up the passthrough ring for `vol`'s namespace and probes it
    /// with a read of the first 4 KiB; None (logged once) when anything
    /// fails: the reactor then uses O_DIRECT.
    fn setup_passthrough(&self, vol: &Volume) -> Option<PtRing> {
        let p = vol.passthrough()?;
        self.ring.as_ref()?;
        let fail = |what: &str, e: io::Error| {
            log_once(&LOGGED_NO_PASSTHROUGH, || {
                format!("NVMe passthrough on {}: {what}: {e}; the volume's data I/O uses O_DIRECT", p.path.display())
            });
            None
        };
        let ring = match IoUring::<io_uring::squeue::Entry128, io_uring::cqueue::Entry32>::builder().build(RING_ENTRIES) {
            Ok(r) => r,
            Err(e) => return fail("io_uring with SQE128|CQE32", e),
        };
        // SAFETY: as in new(): the pool outlives the ring (Drop).
        let registered = unsafe { ring.submitter().register_buffers(&self.pool.iovecs()) }.is_ok();
        let fd = p.dev.as_raw_fd();
        let fixed_file = ring.submitter().register_files(&[fd]).is_ok();
        let pt = PtRing { ring, registered, fixed_file, fd, nsid: p.nsid, lba_shift: p.lba_shift, max_bytes: p.max_bytes };
        let Some(mut b) = self.pool.take() else { return fail("probe", io::Error::other("no free buffer")) };
        let idx = b.index();
        if let Err(e) = self.pt_rw(&pt, false, b.as_mut_slice()[..IO_ALIGN].as_mut_ptr(), IO_ALIGN, 0, Some(idx)) {
            return fail("probe read of LBA 0", e);
        }
        Some(pt)
    }

    /// Reads or writes `len` bytes at device offset `dev_off` to/from
    /// `ptr` (inside pool buffer `buf_idx`) as NVMe commands of at most
    /// `max_bytes` each, one at a time. The range must be whole LBAs.
    /// Test hook: one passthrough read or write of `buf[..len]` at `dev_off`.
    #[cfg(test)]
    pub(crate) fn pt_rw_test(&self, write: bool, buf: &mut PoolBuf, len: usize, dev_off: u64) -> io::Result<()> {
        let pt = self.pt.borrow();
        let pt = pt.as_ref().ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let idx = buf.index();
        self.pt_rw(pt, write, buf.as_mut_slice().as_mut_ptr(), len, dev_off, Some(idx))
    }

    fn pt_rw(&self, pt: &PtRing, write: bool, ptr: *mut u8, len: usize, dev_off: u64, buf_idx: Option<u16>) -> io::Result<()> {
        let (op, what) = if write { (crate::storage::nvme::OP_WRITE, "write") } else { (crate::storage::nvme::OP_READ, "read") };
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(pt.max_bytes as usize);
            let addr = ptr as u64 + done as u64;
            let cmd = crate::storage::nvme::encode_rw(op, pt.nsid, pt.lba_shift, dev_off + done as u64, addr, n as u32)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            self.pt_submit(pt, cmd, buf_idx, what)?;
            done += n;
        }
        Ok(())
    }

    /// Submits one NVMe command and waits for it.
    fn pt_submit(&self, pt: &PtRing, cmd: [u8; 80], buf_idx: Option<u16>, what: &str) -> io::Result<()> {
        let mut e = if pt.fixed_file {
            opcode::UringCmd80::new(types::Fixed(0), crate::storage::nvme::NVME_URING_CMD_IO)
        } else {
            opcode::UringCmd80::new(types::Fd(pt.fd), crate::storage::nvme::NVME_URING_CMD_IO)
        }
        .cmd(cmd);
        if let Some(i) = buf_idx.filter(|_| pt.registered) {
            e = e.buf_index(Some(i));
        }
        let e = e.build().user_data(2);
        // The ring is only used from this (the reactor's) thread, one
        // command at a time; a shared borrow of the PtRing suffices.
        let ring = &pt.ring;
        // SAFETY: the buffer named in the command stays valid until its
        // completion is reaped below.
        unsafe {
            let mut sq = ring.submission_shared();
            sq.push(&e).map_err(|_| io::Error::other("submission queue full"))?;
        }
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            // SAFETY: only this thread touches the completion queue.
            if let Some(cqe) = unsafe { ring.completion_shared() }.next() {
                bump(&self.stats.uring_ops, 1);
                bump(&self.stats.passthrough_ops, 1);
                return crate::storage::nvme::completion_result(cqe.result(), what);
            }
        }
    }

    /// Submits one entry and waits for its completion. Completions of
    /// asynchronous reads reaped meanwhile are kept in `foreign`.
    fn submit(&self, ring: &RefCell<IoUring>, e: io_uring::squeue::Entry) -> io::Result<usize> {
        let mut ring = ring.borrow_mut();
        if ring.submission().is_full() {
            // Asynchronous reads prepared but not submitted yet: send them first.
            ring.submit()?;
        }
        // SAFETY: the buffer named in `e` stays valid until the completion
        // is reaped below; we wait for it before returning.
        unsafe { ring.submission().push(&e.user_data(SYNC_TAG)).map_err(|_| io::Error::other("submission queue full"))? };
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            let mut mine = None;
            for cqe in ring.completion() {
                if cqe.user_data() == SYNC_TAG && mine.is_none() {
                    mine = Some(cqe.result());
                } else {
                    self.foreign.borrow_mut().push((cqe.user_data(), cqe.result()));
                }
            }
            if let Some(r) = mine {
                bump(&self.stats.uring_ops, 1);
                return if r < 0 { Err(io::Error::from_raw_os_error(-r)) } else { Ok(r as usize) };
            }
        }
    }

    /// The ring, for [`crate::storage::aio`].
    pub(crate) fn ring(&self) -> Option<&RefCell<IoUring>> {
        self.ring.as_ref()
    }

    /// Completions [`Engine::submit`] reaped for [`crate::storage::aio`], moved into `out`.
    pub(crate) fn take_foreign(&self, out: &mut Vec<(u64, i32)>) {
        out.append(&mut self.foreign.borrow_mut());
    }

    pub(crate) fn stats(&self) -> &DsStats {
        &self.stats
    }

    /// Sends entries prepared by [`crate::storage::aio`] to the kernel; must come
    /// before a registered-file slot changes, since a prepared entry names
    /// its slot by number and the kernel resolves it at submission.
    fn flush_prepared(&self) {
        if let Some(r) = &self.ring {
            let mut r = r.borrow_mut();
            if !r.submission().is_empty() {
                if let Err(e) = r.submit() {
                    log::warn!("io_uring submit: {e}");
                }
            }
        }
    }

    /// The io_uring entry for a read or write of `len` bytes at `ptr`:
    /// fixed buffer `buf_idx` when the pool is registered, and the file's
    /// registered slot when it has one (else its descriptor).
    pub(crate) fn rw_entry(&self, f: &File, ptr: *mut u8, len: u32, off: u64, buf_idx: Option<u16>, write: bool) -> io_uring::squeue::Entry {
        let buf_idx = buf_idx.filter(|_| self.registered);
        macro_rules! build {
            ($fd:expr) => {
                match (write, buf_idx) {
                    (false, Some(i)) => opcode::ReadFixed::new($fd, ptr, len, i).offset(off).build(),
                    (false, None) => opcode::Read::new($fd, ptr, len).offset(off).build(),
                    (true, Some(i)) => opcode::WriteFixed::new($fd, ptr, len, i).offset(off).build(),
                    (true, None) => opcode::Write::new($fd, ptr, len).offset(off).build(),
                }
            };
        }
        let fd = f.as_raw_fd();
        match self.fixed_slot(fd) {
            Some(slot) => {
                bump(&self.stats.fixed_file_ops, 1);
                build!(types::Fixed(slot))
            }
            None => build!(types::Fd(fd)),
        }
    }

    fn pread(&self, f: &File, buf: &mut [u8], off: u64, fixed: Option<u16>) -> io::Result<usize> {
        match &self.ring {
            Some(r) => {
                let e = self.rw_entry(f, buf.as_mut_ptr(), buf.len() as u32, off, fixed, false);
                self.submit(r, e)
            }
            None => {
                bump(&self.stats.syscall_ops, 1);
                f.read_at(buf, off)
            }
        }
    }

    fn pwrite(&self, f: &File, buf: &[u8], off: u64, fixed: Option<u16>) -> io::Result<usize> {
        match &self.ring {
            Some(r) => {
                // The kernel only reads the buffer of a write.
                let e = self.rw_entry(f, buf.as_ptr() as *mut u8, buf.len() as u32, off, fixed, true);
                self.submit(r, e)
            }
            None => {
                bump(&self.stats.syscall_ops, 1);
                f.write_at(buf, off)
            }
        }
    }

    // -- Durability ---------------------------------------------------------

    /// Makes every write completed through `obj` before this call durable
    /// (COMMIT, stable WRITE): nothing to do when it is clean, else one
    /// fdatasync (IORING_OP_FSYNC with DATASYNC on the ring). Ok(true) when
    /// it synced. On error the object stays dirty, so the next COMMIT syncs.
    pub fn commit(&self, obj: &Object) -> io::Result<bool> {
        let file = match &obj.backing {
            Backing::File { file, .. } => file,
            Backing::Volume { vol, vo } => {
                // The volume's own generations decide (one flush covers
                // every object); see crate::storage::volume.
                let out = vol.commit(vo, &mut || {
                    bump(&self.stats.fdatasyncs, 1);
                    // With passthrough, buffered data writes are written
                    // back before they return (Volume::buffered_data_io):
                    // an NVMe Flush of the device's cache covers them all.
                    match self.pt.borrow().as_ref() {
                        Some(pt) => self.pt_submit(pt, crate::storage::nvme::encode_flush(pt.nsid), None, "flush"),
                        None => self.fdatasync(vol.flush_file()),
                    }
                })?;
                match out {
                    Commit::Clean => bump(&self.stats.commits_clean, 1),
                    Commit::Covered => bump(&self.stats.commits_covered, 1),
                    Commit::Flushed => {}
                }
                return Ok(out == Commit::Flushed);
            }
        };
        let Some(w) = obj.unsynced() else {
            bump(&self.stats.commits_clean, 1);
            return Ok(false);
        };
        bump(&self.stats.fdatasyncs, 1);
        self.fdatasync(file)?;
        obj.mark_synced(w);
        Ok(true)
    }

    /// One fdatasync of `f`: IORING_OP_FSYNC(DATASYNC) on the ring (its
    /// fixed slot when registered), else the syscall.
    fn fdatasync(&self, f: &File) -> io::Result<()> {
        match &self.ring {
            Some(r) => {
                let fd = f.as_raw_fd();
                let e = match self.fixed_slot(fd) {
                    Some(slot) => opcode::Fsync::new(types::Fixed(slot)),
                    None => opcode::Fsync::new(types::Fd(fd)),
                };
                self.submit(r, e.flags(types::FsyncFlags::DATASYNC).build())?;
            }
            None => {
                bump(&self.stats.syscall_ops, 1);
                f.sync_data()?;
            }
        }
        Ok(())
    }

    /// Registers the volume's O_DIRECT descriptor (or its buffered one
    /// without O_DIRECT) in a slot of the file table for good: one slot
    /// serves every object of the volume. False when there is no table or
    /// it is full.
    pub fn attach_volume(&self, vol: &Volume) -> bool {
        if vol.passthrough().is_some() && self.pt.borrow().is_none() {
            let pt = self.setup_passthrough(vol);
            *self.pt.borrow_mut() = pt;
        }
        let f = vol.direct_file().unwrap_or(vol.buffered_file());
        let (Some(r), mut files) = (&self.ring, self.files.borrow_mut()) else { return false };
        let Some(t) = files.as_mut() else { return false };
        let fd = f.as_raw_fd();
        if t.by_fd.contains_key(&fd) {
            return true;
        }
        let Some(slot) = t.free.pop() else {
            bump(&self.stats.fixed_files_full, 1);
            return false;
        };
        match r.borrow().submitter().register_files_update(slot, &[fd]) {
            Ok(1) => {
                t.slots[slot as usize] = fd;
                t.by_fd.insert(fd, slot);
                true
            }
            r => {
                log::debug!("registering the volume fd {fd} in slot {slot}: {r:?}");
                t.free.push(slot);
                false
            }
        }
    }

    // -- Registered files ---------------------------------------------------

    /// Registers a sparse file table of `slots` entries on the ring, used by
    /// [`Engine::install_files`]. False (and no table) without io_uring,
    /// with `slots` 0, or when the kernel refuses it (before Linux 5.19).
    pub fn enable_fixed_files(&mut self, slots: u32) -> bool {
        let Some(r) = &self.ring else { return false };
        if slots == 0 {
            return false;
        }
        if let Err(e) = r.borrow().submitter().register_files_sparse(slots) {
            log_once(&LOGGED_NO_FIXED_FILES, || format!("io_uring file registration refused ({e}); using plain descriptors"));
            return false;
        }
        *self.files.borrow_mut() = Some(FileTable {
            slots: vec![-1; slots as usize],
            free: (0..slots).rev().collect(),
            by_fd: HashMap::with_capacity(slots as usize),
        });
        true
    }

    /// Installs the object's descriptors in free slots of the file table
    /// (the reactor's open-object cache calls this when it takes the
    /// object in). A full table, or a refused update, leaves a descriptor
    /// unregistered: its I/O uses the plain fd.
    pub fn install_files(&self, obj: &Object) {
        self.flush_prepared();
        let (Some(r), mut files) = (&self.ring, self.files.borrow_mut()) else { return };
        let Some(t) = files.as_mut() else { return };
        for f in obj.own_files() {
            let fd = f.as_raw_fd();
            if t.by_fd.contains_key(&fd) {
                continue;
            }
            let Some(slot) = t.free.pop() else {
                bump(&self.stats.fixed_files_full, 1);
                continue;
            };
            match r.borrow().submitter().register_files_update(slot, &[fd]) {
                Ok(1) => {
                    t.slots[slot as usize] = fd;
                    t.by_fd.insert(fd, slot);
                }
                r => {
                    log::debug!("registering fd {fd} in slot {slot}: {r:?}");
                    t.free.push(slot);
                }
            }
        }
    }

    /// Removes the object's descriptors from the file table (the cache
    /// evicted or dropped it). Must come before the descriptors can close:
    /// a slot keeps its file open, and fd numbers are looked up by value.
    pub fn remove_files(&self, obj: &Object) {
        self.flush_prepared();
        let (Some(r), mut files) = (&self.ring, self.files.borrow_mut()) else { return };
        let Some(t) = files.as_mut() else { return };
        for f in obj.own_files() {
            let fd = f.as_raw_fd();
            let Some(slot) = t.by_fd.remove(&fd) else { continue };
            debug_assert_eq!(t.slots[slot as usize], fd);
            if let Err(e) = r.borrow().submitter().register_files_update(slot, &[-1]) {
                // The slot stays taken (and its file open) rather than be reused wrongly.
                log::warn!("unregistering file slot {slot}: {e}");
                continue;
            }
            t.slots[slot as usize] = -1;
            t.free.push(slot);
        }
    }

    /// Registered descriptors (tests, metrics).
    pub fn fixed_files_in_use(&self) -> usize {
        self.files.borrow().as_ref().map_or(0, |t| t.by_fd.len())
    }

    fn fixed_slot(&self, fd: RawFd) -> Option<u32> {
        let files = self.files.borrow();
        let t = files.as_ref()?;
        let slot = *t.by_fd.get(&fd)?;
        debug_assert_eq!(t.slots[slot as usize], fd);
        Some(slot)
    }

    /// Reads up to `count` bytes at `offset` into a pool buffer; returns the
    /// buffer and the number of bytes read (short only at end of object).
    pub fn read(&self, obj: &Object, offset: u64, count: usize) -> Result<(PoolBuf, usize), IoError> {
        let (file, direct) = match &obj.backing {
            Backing::File { file, direct } => (file, direct),
            Backing::Volume { vol, vo } => return self.read_volume(vol, vo, offset, count),
        };
        let mut buf = self.pool.take().ok_or(IoError::NoBuffer)?;
        let count = count.min(buf.capacity() - IO_ALIGN);
        let idx = buf.index();
        let mut done = 0usize;
        match direct {
            Some(d) if is_aligned(offset) => {
                bump(&self.stats.direct_ops, 1);
                // Round the length up to the alignment; the slack is ours.
                let want = count.div_ceil(IO_ALIGN) * IO_ALIGN;
                while done < count {
                    let n = self.pread(d, &mut buf.as_mut_slice()[done..want], offset + done as u64, Some(idx))?;
                    done += n;
                    if n == 0 || !is_aligned(n as u64) {
                        break; // end of object (a partial last block)
                    }
                }
            }
            _ => {
                while done < count {
                    let n = self.pread(file, &mut buf.as_mut_slice()[done..count], offset + done as u64, Some(idx))?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
            }
        }
        Ok((buf, done.min(count)))
    }

    /// [`Engine::read`] of a volume object: the range is clamped to the
    /// object's size and cut at extent boundaries; holes are zero-filled,
    /// extents read O_DIRECT into the registered buffer when the offset is
    /// aligned (length rounded up), else buffered.
    fn read_volume(&self, vol: &Volume, vo: &VolObj, offset: u64, count: usize) -> Result<(PoolBuf, usize), IoError> {
        let mut buf = self.pool.take().ok_or(IoError::NoBuffer)?;
        let count = count.min(buf.capacity() - IO_ALIGN);
        let idx = buf.index();
        let _io = vo.begin_io()?;
        let size = vo.size();
        if offset >= size || count == 0 {
            return Ok((buf, 0));
        }
        let count = (count as u64).min(size - offset) as usize;
        let direct = vol.direct_file().filter(|_| is_aligned(offset));
        let want = if direct.is_some() {
            bump(&self.stats.direct_ops, 1);
            count.div_ceil(IO_ALIGN) * IO_ALIGN
        } else {
            count
        };
        let pt = self.pt.borrow();
        let pt = pt.as_ref().filter(|_| direct.is_some());
        let data = buf.as_mut_slice();
        vol.map_range(vo, offset, want, false, |at, len, place| {
            let dst = &mut data[at..at + len];
            let Some(place) = place else {
                dst.fill(0);
                return Ok(());
            };
            if let Some(pt) = pt.filter(|_| vol.passthrough().is_some_and(|p| p.fits(place, len))) {
                return self.pt_rw(pt, false, dst.as_mut_ptr(), len, place, Some(idx));
            }
            match direct {
                Some(f) => self.pread_full(f, dst, place, idx),
                None => vol.buffered_data_io(place, len, false, |f| self.pread_full(f, dst, place, idx)),
            }
        })?;
        Ok((buf, count))
    }

    /// Fills all of `dst` from `f` at `place` (a volume extent: ending
    /// early means the volume is shorter than its superblock says).
    fn pread_full(&self, f: &File, dst: &mut [u8], place: u64, idx: u16) -> io::Result<()> {
        let mut done = 0;
        while done < dst.len() {
            let n = self.pread(f, &mut dst[done..], place + done as u64, Some(idx))?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the volume"));
            }
            done += n;
        }
        Ok(())
    }

    /// Writes all of `data` at `offset`. Aligned writes go through O_DIRECT
    /// from a pool buffer (one counted copy); the rest, or any write when the
    /// pool is empty, are buffered writes straight from `data`. WRITEs
    /// received zero-copy use [`Engine::write_pooled`] instead.
    pub fn write(&self, obj: &Object, offset: u64, data: &[u8]) -> Result<(), IoError> {
        if obj.has_direct() && is_aligned(offset) && is_aligned(data.len() as u64) && !data.is_empty() && data.len() <= self.pool.buf_size() {
            if let Some(mut buf) = self.pool.take() {
                buf.as_mut_slice()[..data.len()].copy_from_slice(data);
                bump(&self.stats.payload_copies, 1);
                return self.write_pooled(obj, offset, &buf, data.len());
            }
        }
        let r = match &obj.backing {
            Backing::File { file, .. } => self.write_buffered(file, offset, data).map_err(IoError::Io),
            Backing::Volume { vol, vo } => self.write_volume(vol, vo, offset, data, None),
        };
        obj.mark_written();
        r
    }

    /// Writes `buf[..len]` at `offset` with no copy: O_DIRECT from the
    /// (registered) pool buffer when offset and length are aligned,
    /// otherwise a buffered write from it.
    pub fn write_pooled(&self, obj: &Object, offset: u64, buf: &PoolBuf, len: usize) -> Result<(), IoError> {
        let r = self.write_pooled_inner(obj, offset, buf, len);
        // Even a failed write may have changed some bytes: dirty either way.
        obj.mark_written();
        r
    }

    fn write_pooled_inner(&self, obj: &Object, offset: u64, buf: &PoolBuf, len: usize) -> Result<(), IoError> {
        assert!(len <= buf.capacity(), "write longer than its buffer");
        let data = &buf.as_slice()[..len];
        let (file, direct) = match &obj.backing {
            Backing::File { file, direct } => (file, direct),
            Backing::Volume { vol, vo } => return self.write_volume(vol, vo, offset, data, Some(buf.index())),
        };
        match direct {
            Some(d) if is_aligned(offset) && is_aligned(len as u64) && len > 0 => {
                bump(&self.stats.direct_ops, 1);
                let idx = buf.index();
                let mut done = 0;
                while done < len {
                    let n = self.pwrite(d, &data[done..], offset + done as u64, Some(idx))?;
                    if n == 0 {
                        return Err(IoError::Io(io::Error::new(io::ErrorKind::WriteZero, "short write")));
                    }
                    done += n;
                    if !is_aligned(done as u64) && done < len {
                        // Cannot continue with O_DIRECT; finish buffered.
                        self.write_buffered(file, offset + done as u64, &data[done..])?;
                        break;
                    }
                }
            }
            _ => self.write_buffered(file, offset, data)?,
        }
        Ok(())
    }

    /// Writes `data` to a volume object: EFBIG past the largest object,
    /// extents allocated (and zeroed) on first write, ENOSPC when the volume
    /// is full. O_DIRECT from the registered buffer `buf_idx` when `data`
    /// is a pool buffer and offset and length are aligned; else buffered.
    fn write_volume(&self, vol: &Volume, vo: &VolObj, offset: u64, data: &[u8], buf_idx: Option<u16>) -> Result<(), IoError> {
        let end = vol.check_range(offset, data.len())?;
        let _io = vo.begin_io()?;
        let direct = vol
            .direct_file()
            .filter(|_| buf_idx.is_some() && is_aligned(offset) && is_aligned(data.len() as u64) && !data.is_empty());
        if direct.is_some() {
            bump(&self.stats.direct_ops, 1);
        }
        let pt = self.pt.borrow();
        let pt = pt.as_ref().filter(|_| direct.is_some());
        let r = vol.map_range(vo, offset, data.len(), true, |at, len, place| {
            let place = place.expect("map_range allocates");
            if let Some(pt) = pt.filter(|_| vol.passthrough().is_some_and(|p| p.fits(place, len))) {
                // The kernel only reads the buffer of a write.
                return self.pt_rw(pt, true, data[at..].as_ptr() as *mut u8, len, place, buf_idx);
            }
            match direct {
                Some(d) => {
                    let mut done = 0;
                    while done < len {
                        let n = self.pwrite(d, &data[at + done..at + len], place + done as u64, buf_idx)?;
                        if n == 0 {
                            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
                        }
                        done += n;
                        if !is_aligned(done as u64) && done < len {
                            // Cannot go on O_DIRECT from here; finish buffered.
                            let p = place + done as u64;
                            return vol.buffered_data_io(p, len - done, true, |f| self.write_buffered(f, p, &data[at + done..at + len]));
                        }
                    }
                    Ok(())
                }
                None => vol.buffered_data_io(place, len, true, |f| self.write_buffered(f, place, &data[at..at + len])),
            }
        });
        vol.note_write(vo, end, r.is_ok());
        r.map_err(IoError::Io)
    }

    fn write_buffered(&self, f: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            let n = self.pwrite(f, &data[done..], offset + done as u64, None)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
            }
            done += n;
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The ring must go before the registered buffers it points at (its
        // registered files go with it).
        self.ring = None;
        *self.pt.get_mut() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(store: &ObjectStore, engine: &Engine) {
        let fh = DsFh { stripe: 0, ino: 42, generation: 3 };
        assert_eq!(store.open_object(&fh).unwrap_err().kind(), io::ErrorKind::NotFound);
        store.create(&fh).unwrap();
        store.create(&fh).unwrap(); // idempotent
        let obj = store.open_object(&fh).unwrap();
        let aligned: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        let odd: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        engine.write(&obj, 0, &aligned).ok().unwrap();
        engine.write(&obj, 8192 + 10, &odd).ok().unwrap();
        assert_eq!(obj.size().unwrap(), 8192 + 10 + 1000);
        let (b, n) = engine.read(&obj, 0, 8192).ok().unwrap();
        assert_eq!(n, 8192);
        assert_eq!(&b.as_slice()[..n], &aligned[..]);
        drop(b);
        // aligned offset, past-the-end length: short read
        let (b, n) = engine.read(&obj, 8192, 65536).ok().unwrap();
        assert_eq!(n, 1010);
        assert_eq!(&b.as_slice()[..10], &[0u8; 10]);
        assert_eq!(&b.as_slice()[10..n], &odd[..]);
        drop(b);
        // unaligned offset
        let (b, n) = engine.read(&obj, 100, 50).ok().unwrap();
        assert_eq!(&b.as_slice()[..n], &aligned[100..150]);
        drop(b);
        let (_, n) = engine.read(&obj, 1 << 30, 4096).ok().unwrap();
        assert_eq!(n, 0);
        assert!(store.remove(&fh).unwrap());
        assert!(!store.remove(&fh).unwrap());
        assert_eq!(store.open_object(&fh).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(store.open_buffered(&fh).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn io_on_disk_with_and_without_uring_and_direct() {
        for (direct, uring) in [(true, true), (true, false), (false, true), (false, false)] {
            let dir = tempfile::tempdir().unwrap();
            let store = ObjectStore::open(dir.path(), direct).unwrap();
            let stats = Arc::new(DsStats::default());
            let engine = Engine::new(BufPool::new(2, 64 * 1024), stats.clone(), uring);
            roundtrip(&store, &engine);
            assert_eq!(engine.pool.available(), 2, "buffers leaked");
            let s = stats.snapshot();
            assert_eq!(s.uring_ops > 0, engine.uses_uring());
            assert_eq!(s.syscall_ops > 0, !engine.uses_uring());
            assert_eq!(s.direct_ops > 0, store.uses_o_direct());
            // one aligned direct write copied into a pool buffer
            assert_eq!(s.payload_copies, if store.uses_o_direct() { 1 } else { 0 });
        }
    }

    /// tmpfs (/dev/shm) refused O_DIRECT before Linux 6.6; either way the
    /// store must work, with the fallback decided at open.
    #[test]
    fn o_direct_fallback_on_tmpfs_like_dir() {
        let base = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm") } else { Path::new("/tmp") };
        let dir = tempfile::tempdir_in(base).unwrap();
        let store = ObjectStore::open(dir.path(), true).unwrap();
        assert_eq!(store.uses_o_direct(), probe_o_direct(&dir.path().join("objects")));
        let engine = Engine::new(BufPool::new(2, 64 * 1024), Arc::new(DsStats::default()), true);
        roundtrip(&store, &engine);
        // Forced off: no O_DIRECT descriptor at all.
        let store = ObjectStore::open(dir.path(), false).unwrap();
        assert!(!store.uses_o_direct());
        roundtrip(&store, &engine);
    }

    #[test]
    fn registered_files_follow_install_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path(), true).unwrap();
        let stats = Arc::new(DsStats::default());
        let mut engine = Engine::new(BufPool::new(2, 64 * 1024), stats.clone(), true);
        assert!(!engine.enable_fixed_files(0));
        if !engine.uses_uring() || !engine.enable_fixed_files(1 + store.uses_o_direct() as u32) {
            eprintln!("no io_uring file registration here; skipped");
            return;
        }
        let fds = 1 + store.uses_o_direct() as usize; // room for one object
        let a = store.create(&DsFh { stripe: 0, ino: 1, generation: 1 }).unwrap();
        let b = store.create(&DsFh { stripe: 0, ino: 2, generation: 1 }).unwrap();
        let fixed_ops = || stats.fixed_file_ops.load(Ordering::Relaxed);
        let io = |o: &Object| {
            engine.write(o, 0, &[5u8; 4096]).ok().unwrap();
            engine.write(o, 4096 + 3, b"tail").ok().unwrap();
            let (buf, n) = engine.read(o, 0, 8192).ok().unwrap();
            assert_eq!(n, 4096 + 3 + 4);
            assert_eq!(&buf.as_slice()[4096 + 3..n], b"tail");
        };
        engine.install_files(&a);
        engine.install_files(&a); // already there: no second slot
        assert_eq!(engine.fixed_files_in_use(), fds);
        io(&a);
        assert_eq!(fixed_ops(), 3, "every I/O of a names its slot");
        // Full table: b keeps its plain descriptors and works all the same.
        engine.install_files(&b);
        assert_eq!(stats.fixed_files_full.load(Ordering::Relaxed), fds as u64);
        io(&b);
        assert_eq!(fixed_ops(), 3);
        engine.remove_files(&a);
        engine.remove_files(&a);
        assert_eq!(engine.fixed_files_in_use(), 0);
        engine.install_files(&b);
        assert_eq!(engine.fixed_files_in_use(), fds);
        io(&b);
        assert_eq!(fixed_ops(), 6);
        engine.remove_files(&b);

        // The reactor's open-object cache drives the table: opened objects
        // come in, removed ones go out.
        let engine = Rc::new(engine);
        let bus = crate::bus::Bus::with_bounds(1, 16, std::time::Duration::from_millis(10));
        let replica = bus.replica(0);
        replica.attach_engine(engine.clone());
        replica.object(&store, &a.fh).unwrap();
        assert_eq!(engine.fixed_files_in_use(), fds);
        let _ = bus.publish(crate::bus::Update::ObjRemoved(a.fh)); // applied by sync below
        replica.sync();
        assert_eq!(engine.fixed_files_in_use(), 0);
        replica.object(&store, &b.fh).unwrap();
        assert_eq!(engine.fixed_files_in_use(), fds);
        drop(replica);
        assert_eq!(engine.fixed_files_in_use(), 0, "a dropped cache leaves no slot behind");
    }

    #[test]
    fn commit_syncs_only_dirty_objects_shared_by_every_opener() {
        for uring in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = ObjectStore::open(dir.path(), true).unwrap();
            let stats = Arc::new(DsStats::default());
            let engine = Engine::new(BufPool::new(2, 64 * 1024), stats.clone(), uring);
            let fh = DsFh { stripe: 0, ino: 9, generation: 1 };
            let a = store.create(&fh).unwrap();
            let b = store.open_object(&fh).unwrap();
            assert!(Arc::ptr_eq(&a, &b), "one live object per handle");
            assert!(Arc::ptr_eq(&a, &store.create(&fh).unwrap()));
            assert!(engine.commit(&a).unwrap(), "a new object may hold unsynced writes");
            assert!(!engine.commit(&b).unwrap(), "clean: no syscall");
            // A write through one opener (reactor) dirties it for all.
            engine.write(&a, 0, &[1u8; 4096]).ok().unwrap();
            assert!(engine.commit(&b).unwrap());
            assert!(!engine.commit(&a).unwrap());
            engine.write(&b, 10, b"odd").ok().unwrap();
            assert!(engine.commit(&a).unwrap());
            // Control-program writes mark the live object.
            store.mark_written(&fh);
            assert!(engine.commit(&a).unwrap());
            // A write counted after a sync read its generation stays dirty.
            a.mark_written();
            let w = a.unsynced().unwrap();
            a.mark_written();
            a.mark_synced(w);
            assert!(a.unsynced().is_some());
            assert!(engine.commit(&a).unwrap());
            let s = stats.snapshot();
            assert_eq!((s.fdatasyncs, s.commits_clean), (5, 2));
            assert_eq!(s.uring_ops > 0, engine.uses_uring());
            // Once nobody holds it, the next open is a new object, dirty again.
            drop((a, b));
            let c = store.open_object(&fh).unwrap();
            assert!(c.unsynced().is_some());
            drop(c);
            // Removed and created again: a new object, not the removed one.
            let old = store.open_object(&fh).unwrap();
            assert!(store.remove(&fh).unwrap());
            assert_eq!(store.open_object(&fh).unwrap_err().kind(), io::ErrorKind::NotFound);
            let new = store.create(&fh).unwrap();
            assert!(!Arc::ptr_eq(&old, &new));
        }
    }

    #[test]
    fn empty_pool_is_delay() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path(), true).unwrap();
        let engine = Engine::new(BufPool::new(1, 64 * 1024), Arc::new(DsStats::default()), true);
        let fh = DsFh { stripe: 0, ino: 1, generation: 1 };
        let obj = store.create(&fh).unwrap();
        let held = engine.read(&obj, 0, 10).ok().unwrap();
        assert!(matches!(engine.read(&obj, 0, 10), Err(IoError::NoBuffer)));
        // writes fall back to buffered I/O instead
        engine.write(&obj, 0, &[1u8; 4096]).ok().unwrap();
        drop(held);
        assert_eq!(engine.pool.available(), 1);
    }
}

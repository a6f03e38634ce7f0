//! The object store ([`ObjectStore`]): the object directory of both
//! backends (one file per DS filehandle under `<data_dir>/objects`, or the
//! volume's), which opens, creates and removes objects and knows (weakly)
//! the live [`Object`] of each handle; and the control program's proxy I/O
//! on objects (plain buffered syscalls, never a reactor's ring).

use super::log_once;
use crate::fh::DsFh;
use crate::stats::DsStats;
use crate::storage::volume::{VolObj, Volume, VolumeOptions};
use pnfs_protocol::sync::lock;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

static LOGGED_NO_DIRECT: AtomicBool = AtomicBool::new(false);

/// Attributes of an object of either backend (GETATTR, control OBJ_STAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjStat {
    pub size: u64,
    pub change: u64,
    pub space_used: u64,
    pub mtime: (i64, u32),
}

#[derive(Debug)]
pub struct Object {
    pub fh: DsFh,
    pub(super) backing: Backing,
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
pub(super) enum Backing {
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
    pub(super) fn own_files(&self) -> impl Iterator<Item = &File> {
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

/// (capacity, free) bytes of the file system holding `p`.
pub fn statvfs(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let f = s.f_frsize as u64;
    Some((s.f_blocks as u64 * f, s.f_bavail as u64 * f))
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
            StoreKind::Files { .. } => statvfs(data_dir).unwrap_or((0, 0)),
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

    /// The object's version (CTL_PROC_OBJ_VERSION_GET): 0 when never set.
    /// Files backend: the `user.pnfs.version` xattr of the object file;
    /// volume: its object-table entry.
    pub fn version(&self, fh: &DsFh) -> io::Result<u64> {
        match &self.kind {
            StoreKind::Volume(vol) => Ok(Self::vol_obj(vol, fh)?.version()),
            StoreKind::Files { .. } => version_xattr::get(&self.open_buffered(fh)?),
        }
    }

    /// Sets the object's version, durable when it returns (with every
    /// write to the object completed before: a version names data that is
    /// on disk).
    pub fn set_version(&self, fh: &DsFh, version: u64) -> io::Result<()> {
        match &self.kind {
            StoreKind::Volume(vol) => vol.set_version(&*Self::vol_obj(vol, fh)?, version),
            StoreKind::Files { .. } => {
                let f = self.open_buffered(fh)?;
                f.sync_data()?;
                version_xattr::set(&f, version)?;
                // fsync, not fdatasync: the xattr is inode metadata.
                f.sync_all()
            }
        }
    }

    /// The ranges of `[off, off + len)` that may hold data (cut at the
    /// object's size), in order; everything else reads as zeros. Files:
    /// SEEK_DATA/SEEK_HOLE (a file system without them reports all data);
    /// volume: allocated extents.
    pub fn data_ranges(&self, fh: &DsFh, off: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        match &self.kind {
            StoreKind::Volume(vol) => vol.data_ranges(&*Self::vol_obj(vol, fh)?, off, len),
            StoreKind::Files { .. } => {
                let f = self.open_buffered(fh)?;
                let end = off.saturating_add(len).min(f.metadata()?.len());
                file_data_ranges(&f, off, end)
            }
        }
    }

    /// `[off, off + len)` of the object reads as zeros afterwards, without
    /// growing it: a hole punched (files), or allocated extents zeroed
    /// (volume). Not durable until a sync.
    pub fn zero_range(&self, fh: &DsFh, off: u64, len: u64) -> io::Result<()> {
        let r = match &self.kind {
            StoreKind::Volume(vol) => vol.zero_plain(&*Self::vol_obj(vol, fh)?, off, len),
            StoreKind::Files { .. } => {
                use std::os::unix::io::AsRawFd;
                let f = self.open_buffered(fh)?;
                let size = f.metadata()?.len();
                let len = len.min(size.saturating_sub(off));
                if len == 0 {
                    return Ok(());
                }
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                // SAFETY: plain syscall on our descriptor.
                if unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) } == 0 {
                    Ok(())
                } else {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                        return Err(e);
                    }
                    write_zeros(&f, off, len)
                }
            }
        };
        self.mark_written(fh);
        r
    }
}

/// Zeros written with plain writes (a file system that cannot punch holes).
fn write_zeros(f: &File, mut off: u64, mut len: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        f.write_all_at(&ZEROS[..n], off)?;
        off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// The data ranges of `[off, end)` of `f` by SEEK_DATA/SEEK_HOLE.
fn file_data_ranges(f: &File, off: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    use std::os::unix::io::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = off;
    while pos < end {
        // SAFETY: plain syscalls on our descriptor.
        let data = unsafe { libc::lseek(fd, pos as i64, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // No data at or after pos: the rest is a hole.
                Some(libc::ENXIO) => break,
                // No SEEK_DATA here: call it all data.
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    out.push((pos, end));
                    break;
                }
                _ => return Err(e),
            }
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as i64, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { (hole as u64).min(end) };
        out.push((data, hole));
        pos = hole;
    }
    Ok(out)
}

/// The files backend's object version: an 8-byte big-endian xattr.
mod version_xattr {
    use std::fs::File;
    use std::io;
    use std::os::unix::io::AsRawFd;

    const NAME: &[u8] = b"user.pnfs.version\0";

    fn unsupported(e: io::Error) -> io::Error {
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            io::Error::other("the object file system does not support user xattrs (needed for object versions): put ds.data_dir on ext4, xfs or btrfs")
        } else {
            e
        }
    }

    pub fn get(f: &File) -> io::Result<u64> {
        let mut b = [0u8; 8];
        // SAFETY: NUL-terminated name, buffer of the length given.
        let n = unsafe { libc::fgetxattr(f.as_raw_fd(), NAME.as_ptr().cast(), b.as_mut_ptr().cast(), b.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(0),
                _ => Err(unsupported(e)),
            };
        }
        if n != 8 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "object version xattr of the wrong size"));
        }
        Ok(u64::from_be_bytes(b))
    }

    pub fn set(f: &File, v: u64) -> io::Result<()> {
        let b = v.to_be_bytes();
        // SAFETY: NUL-terminated name, buffer of the length given.
        let r = unsafe { libc::fsetxattr(f.as_raw_fd(), NAME.as_ptr().cast(), b.as_ptr().cast(), b.len(), 0) };
        if r < 0 {
            return Err(unsupported(io::Error::last_os_error()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_sizes_the_file_system() {
        let d = tempfile::tempdir().unwrap();
        let (cap, free) = statvfs(d.path()).unwrap();
        assert!(cap > 0 && free <= cap);
        assert!(statvfs(&d.path().join("missing")).is_none());
    }

    #[test]
    fn versions_data_ranges_and_zeroing_on_files() {
        let d = tempfile::tempdir().unwrap();
        let s = ObjectStore::open(d.path(), false).unwrap();
        let fh = DsFh { stripe: 0, ino: 9, generation: 1 };
        s.create(&fh).unwrap();
        assert_eq!(s.version(&fh).unwrap(), 0, "never set");
        s.set_version(&fh, 7).unwrap();
        assert_eq!(s.version(&fh).unwrap(), 7);
        // Data at 0..64K and 1M..1M+64K, a hole between.
        let data = vec![5u8; 65536];
        s.write_at(&fh, 0, &data, false).unwrap();
        s.write_at(&fh, 1 << 20, &data, false).unwrap();
        let r = s.data_ranges(&fh, 0, 4 << 20).unwrap();
        assert_eq!(r.first().unwrap().0, 0);
        assert_eq!(r.last().unwrap().1, (1 << 20) + 65536, "cut at the size: {r:?}");
        assert!(r.iter().all(|(a, b)| *b <= 65536 || *a >= 1 << 20), "the hole is no data: {r:?}");
        s.zero_range(&fh, 4096, 8192).unwrap();
        let (back, _) = s.read_at(&fh, 0, 16384).unwrap();
        assert!(back[4096..12288].iter().all(|b| *b == 0) && back[..4096].iter().all(|b| *b == 5) && back[12288..].iter().all(|b| *b == 5));
        assert_eq!(s.stat(&fh).unwrap().size, (1 << 20) + 65536, "zeroing keeps the size");
        // Removed: no version.
        s.remove(&fh).unwrap();
        assert_eq!(s.version(&fh).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}

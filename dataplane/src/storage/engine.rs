//! The per-reactor I/O engine ([`Engine`], not `Send`): an io_uring with
//! the reactor's pool buffers registered (fixed buffers), used with
//! submit-and-wait per request by WRITE, COMMIT and the synchronous READ
//! path, and by [`crate::storage::aio`] for I/O kept in flight (completions
//! that a submit-and-wait reaps for those are kept for it in `foreign`).
//! Its registered-file table is in [`super::fixed_files`], its NVMe
//! passthrough ring in [`super::nvme`]. When io_uring cannot be set up it
//! falls back to pread/pwrite; when buffer registration fails, to
//! unregistered uring reads/writes. Each fallback is logged once per
//! process.

use super::buffers::{is_aligned, BufPool, PoolBuf};
use super::fixed_files::FileTable;
use super::log_once;
use super::nvme::PtRing;
use super::object::{Backing, Object};
use super::volume::{Commit, VolObj, Volume};
use crate::storage::IO_ALIGN;
use crate::stats::{bump, DsStats};
use io_uring::{opcode, types, IoUring};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Submission queue entries of a reactor ring without asynchronous reads
/// ([`Engine::with_ring_entries`] sizes it for the in-flight limit).
pub(super) const RING_ENTRIES: u32 = 64;

/// `user_data` of the engine's own submit-and-wait entries; any other value
/// belongs to the asynchronous reads of [`crate::storage::aio`].
pub(crate) const SYNC_TAG: u64 = u64::MAX;

static LOGGED_NO_URING: AtomicBool = AtomicBool::new(false);
static LOGGED_NO_REGISTER: AtomicBool = AtomicBool::new(false);

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

pub struct Engine {
    pub(super) ring: Option<RefCell<IoUring>>,
    pub(super) registered: bool,
    /// Completions of asynchronous reads reaped by [`Engine::submit`]
    /// while it waited for its own: (user_data, result), for [`crate::storage::aio`].
    /// Bounded by the reads in flight (each has one entry at a time).
    pub(super) foreign: RefCell<Vec<(u64, i32)>>,
    /// Sparse registered-file table, when enabled and supported.
    pub(super) files: RefCell<Option<FileTable>>,
    /// NVMe passthrough of the attached volume, when it has it and the
    /// ring could be set up ([`Engine::attach_volume`]).
    pub(super) pt: RefCell<Option<PtRing>>,
    pub pool: BufPool,
    pub(super) stats: Arc<DsStats>,
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
    pub(super) fn flush_prepared(&self) {
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
                        Some(pt) => self.pt_flush(pt),
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
    use crate::fh::DsFh;
    use crate::storage::{probe_o_direct, ObjectStore};
    use std::path::Path;

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

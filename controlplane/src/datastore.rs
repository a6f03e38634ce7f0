//! File data behind one interface. The single-node implementation keeps one
//! local file per NFS file under a data directory; the pNFS work puts data
//! servers behind the same trait.
//!
//! Sizes are owned by the namespace, not by the data files: a data file may be
//! shorter than the NFS file (sparse tail), and reads past it return zeros.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekWhat {
    Data,
    Hole,
}

pub trait DataStore: Send + Sync {
    /// Reads into `buf` at `offset`; returns bytes read from the object
    /// (0 past its end). The caller zero-fills up to the NFS file size.
    fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes; when `stable`, data is durable (fdatasync) before returning.
    /// Returns whether the bytes are durable now (a store may make them so
    /// even when not asked): the WRITE reply then says FILE_SYNC4, and an
    /// UNSTABLE4 answer is only given for bytes that this MDS holds, which
    /// its per-boot write verifier covers.
    fn write(&self, ino: u64, offset: u64, data: &[u8], stable: bool) -> io::Result<bool>;
    /// Makes all earlier writes to `ino` durable.
    fn commit(&self, ino: u64) -> io::Result<()>;
    fn truncate(&self, ino: u64, size: u64) -> io::Result<()>;
    fn remove(&self, ino: u64) -> io::Result<()>;
    /// Reserves space (fallocate without changing the visible size).
    fn allocate(&self, ino: u64, offset: u64, len: u64) -> io::Result<()>;
    /// Punches a hole: the range reads as zeros afterwards.
    fn deallocate(&self, ino: u64, offset: u64, len: u64) -> io::Result<()>;
    /// Next data or hole at or after `offset`, None past the end of data.
    fn seek(&self, ino: u64, offset: u64, what: SeekWhat) -> io::Result<Option<u64>>;
    /// Copies bytes between objects (server-side copy).
    fn copy(&self, src: u64, src_off: u64, dst: u64, dst_off: u64, len: u64) -> io::Result<u64>;
    /// Shares blocks where the backing file system can (FICLONERANGE), else copies.
    fn clone_range(&self, src: u64, src_off: u64, dst: u64, dst_off: u64, len: u64) -> io::Result<()>;
    /// Bytes allocated for the object (space_used).
    fn space_used(&self, ino: u64) -> u64;
    /// space_used of a file of `size` bytes; stores that cannot answer
    /// cheaply (remote objects) estimate it from the size.
    fn space_used_for(&self, ino: u64, size: u64) -> u64 {
        let _ = size;
        self.space_used(ino)
    }
    /// (total, free, available) bytes of the backing store.
    fn capacity(&self) -> (u64, u64, u64);
    /// Current length of the object (0 when absent).
    fn object_len(&self, ino: u64) -> u64;
    /// Every object held, to find orphans after a crash.
    fn list_objects(&self) -> io::Result<Vec<u64>>;
}

/// One file per inode: `<dir>/<ino as 16 hex digits>`, with a small cache of
/// open descriptors so hot files are not reopened per request.
pub struct LocalFileStore {
    dir: PathBuf,
    open_files: Mutex<HashMap<u64, Arc<File>>>,
    max_open: usize,
}

impl LocalFileStore {
    pub fn open(dir: impl Into<PathBuf>, max_open: usize) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(LocalFileStore { dir, open_files: Mutex::new(HashMap::new()), max_open: max_open.max(1) })
    }

    fn path(&self, ino: u64) -> PathBuf {
        self.dir.join(format!("{ino:016x}"))
    }

    fn file(&self, ino: u64, create: bool) -> io::Result<Option<Arc<File>>> {
        if let Some(f) = self.open_files.lock().unwrap_or_else(|p| p.into_inner()).get(&ino) {
            return Ok(Some(f.clone()));
        }
        let f = match OpenOptions::new().read(true).write(true).open(self.path(ino)) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let f = OpenOptions::new().read(true).write(true).create(true).open(self.path(ino))?;
                // The new name must survive a power cut before we acknowledge data in it.
                File::open(&self.dir)?.sync_all()?;
                Arc::new(f)
            }
            Err(e) => return Err(e),
        };
        let mut cache = self.open_files.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.max_open {
            // Evict an arbitrary entry; in-flight users keep their Arc.
            if let Some(k) = cache.keys().next().copied() {
                cache.remove(&k);
            }
        }
        cache.insert(ino, f.clone());
        Ok(Some(f))
    }

    fn fallocate(&self, ino: u64, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let f = self.file(ino, true)?.expect("created");
        // SAFETY: plain syscall on a valid descriptor.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl DataStore for LocalFileStore {
    fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(f) = self.file(ino, false)? else { return Ok(0) };
        let mut done = 0;
        while done < buf.len() {
            let n = f.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn write(&self, ino: u64, offset: u64, data: &[u8], stable: bool) -> io::Result<bool> {
        let f = self.file(ino, true)?.expect("created");
        f.write_all_at(data, offset)?;
        if stable {
            f.sync_data()?;
        }
        Ok(stable)
    }

    fn commit(&self, ino: u64) -> io::Result<()> {
        match self.file(ino, false)? {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    fn truncate(&self, ino: u64, size: u64) -> io::Result<()> {
        let f = self.file(ino, true)?.expect("created");
        f.set_len(size)?;
        f.sync_data()
    }

    fn remove(&self, ino: u64) -> io::Result<()> {
        self.open_files.lock().unwrap_or_else(|p| p.into_inner()).remove(&ino);
        match std::fs::remove_file(self.path(ino)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn allocate(&self, ino: u64, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(ino, libc::FALLOC_FL_KEEP_SIZE, offset, len)
    }

    fn deallocate(&self, ino: u64, offset: u64, len: u64) -> io::Result<()> {
        if self.file(ino, false)?.is_none() {
            return Ok(());
        }
        self.fallocate(ino, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len)
    }

    fn seek(&self, ino: u64, offset: u64, what: SeekWhat) -> io::Result<Option<u64>> {
        let Some(f) = self.file(ino, false)? else { return Ok(None) };
        let whence = match what {
            SeekWhat::Data => libc::SEEK_DATA,
            SeekWhat::Hole => libc::SEEK_HOLE,
        };
        // SAFETY: lseek on a valid descriptor; the shared offset is not used by pread/pwrite.
        let r = unsafe { libc::lseek(f.as_raw_fd(), offset as libc::off_t, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(r as u64))
    }

    fn copy(&self, src: u64, src_off: u64, dst: u64, dst_off: u64, len: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; (len as usize).min(1 << 20)];
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = self.read(src, src_off + done, &mut buf[..want])?;
            // Bytes past the object's end but inside the file read as zeros.
            buf[n..want].fill(0);
            self.write(dst, dst_off + done, &buf[..want], false)?;
            done += want as u64;
        }
        Ok(done)
    }

    fn clone_range(&self, src: u64, src_off: u64, dst: u64, dst_off: u64, len: u64) -> io::Result<()> {
        let s = self.file(src, true)?.expect("created");
        let d = self.file(dst, true)?.expect("created");
        let arg = libc::file_clone_range {
            src_fd: s.as_raw_fd() as i64,
            src_offset: src_off,
            src_length: len,
            dest_offset: dst_off,
        };
        // SAFETY: FICLONERANGE with a properly initialised argument.
        let r = unsafe { libc::ioctl(d.as_raw_fd(), libc::FICLONERANGE, &arg) };
        if r == 0 {
            return Ok(());
        }
        // No reflink support here (e.g. ext4): fall back to a copy so CLONE still works.
        self.copy(src, src_off, dst, dst_off, len).map(|_| ())
    }

    fn space_used(&self, ino: u64) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path(ino)).map(|m| m.blocks() * 512).unwrap_or(0)
    }

    fn object_len(&self, ino: u64) -> u64 {
        std::fs::metadata(self.path(ino)).map(|m| m.len()).unwrap_or(0)
    }

    fn list_objects(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            if let Some(ino) = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) {
                out.push(ino);
            }
        }
        Ok(out)
    }

    fn capacity(&self) -> (u64, u64, u64) {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: statvfs into a zeroed struct with a valid C string.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return (0, 0, 0);
        }
        let b = s.f_frsize;
        (s.f_blocks * b, s.f_bfree * b, s.f_bavail * b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_punch_seek() {
        let dir = tempfile::tempdir().unwrap();
        let ds = LocalFileStore::open(dir.path(), 4).unwrap();
        ds.write(7, 0, &[1u8; 8192], true).unwrap();
        let mut b = [0u8; 16];
        assert_eq!(ds.read(7, 8180, &mut b).unwrap(), 12);
        ds.deallocate(7, 0, 4096).unwrap();
        let mut b = [9u8; 4096];
        ds.read(7, 0, &mut b).unwrap();
        assert!(b.iter().all(|x| *x == 0));
        assert_eq!(ds.seek(7, 0, SeekWhat::Data).unwrap(), Some(4096));
        ds.copy(7, 4096, 8, 0, 4096).unwrap();
        let mut c = [0u8; 4096];
        ds.read(8, 0, &mut c).unwrap();
        assert!(c.iter().all(|x| *x == 1));
        ds.remove(7).unwrap();
        assert_eq!(ds.read(7, 0, &mut b).unwrap(), 0);
        for i in 100..110 {
            ds.write(i, 0, b"x", false).unwrap();
        }
    }
}

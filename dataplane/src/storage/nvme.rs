//! NVMe passthrough for the volume backend (`ds.volume_passthrough = true`,
//! `ds.volume` = an NVMe namespace block device `/dev/nvmeXnY`).
//!
//! Aligned data READ/WRITE and the COMMIT flush of the volume go as NVMe
//! commands (Read 0x02, Write 0x01, Flush 0x00) through io_uring
//! `IORING_OP_URING_CMD` on the namespace's generic character device
//! `/dev/ngXnY` (derived from the block device's name), bypassing the block
//! layer's request merging, the page cache and the file system code. Each
//! reactor's [`crate::storage::Engine`] sets up a second ring for it, with
//! `IORING_SETUP_SQE128 | IORING_SETUP_CQE32` (the 72-byte
//! `struct nvme_uring_cmd` lives in the big SQE), the same pool buffers
//! registered (the command's data pointer is the registered buffer,
//! `IORING_URING_CMD_FIXED`), and the character device as fixed file 0.
//!
//! - nsid: `NVME_IOCTL_ID` on the character device.
//! - LBA size: `/sys/block/nvmeXnY/queue/logical_block_size`; the largest
//!   command: `queue/max_hw_sectors_kb` (larger ranges are split).
//! - slba = device offset / LBA size in cdw10 (low) and cdw11 (high);
//!   nlb - 1 in cdw12 bits 0..16.
//! - A completion's `res` > 0 is an NVMe status: EIO, and the status is
//!   logged once per process; `res` < 0 is an errno.
//!
//! Only requests whose offset and length are multiples of 4096 and of the
//! LBA size, from a pool buffer, go through passthrough; everything else
//! (unaligned tails, control-program proxy I/O, metadata) keeps the block
//! device's paths. Passthrough I/O does not invalidate the block device's
//! page cache, so in this mode the buffered descriptor is opened with
//! readahead off (POSIX_FADV_RANDOM) and every buffered data I/O drops the
//! cached pages of its range before, and writes them back and drops them
//! after ([`crate::storage::volume::Volume::buffered_data_io`]): outside a buffered
//! op the page cache holds no data pages that could go stale. When the
//! passthrough ring cannot be set up, or a probe read of LBA 0 through it
//! fails at attach, the reactor logs why (once) and uses O_DIRECT.

use super::engine::{Engine, RING_ENTRIES};
use super::log_once;
use super::volume::Volume;
use crate::storage::IO_ALIGN;
use crate::stats::bump;
use io_uring::{opcode, types, IoUring};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// NVMe I/O command opcodes.
pub const OP_FLUSH: u8 = 0x00;
pub const OP_WRITE: u8 = 0x01;
pub const OP_READ: u8 = 0x02;

/// `NVME_URING_CMD_IO` = `_IOWR('N', 0x80, struct nvme_uring_cmd)` (72 bytes).
pub const NVME_URING_CMD_IO: u32 = (3 << 30) | (72 << 16) | ((b'N' as u32) << 8) | 0x80;
/// `NVME_IOCTL_ID` = `_IO('N', 0x40)`: the namespace id of the device.
pub const NVME_IOCTL_ID: libc::c_ulong = ((b'N' as libc::c_ulong) << 8) | 0x40;

/// Offsets in `struct nvme_uring_cmd` (linux/nvme_ioctl.h).
mod off {
    pub const OPCODE: usize = 0;
    pub const NSID: usize = 4;
    pub const ADDR: usize = 24;
    pub const DATA_LEN: usize = 36;
    pub const CDW10: usize = 40;
    pub const CDW11: usize = 44;
    pub const CDW12: usize = 48;
}

/// The 80-byte command area of a 128-byte SQE holding one
/// `struct nvme_uring_cmd` for a Read or Write of `len` bytes at device
/// offset `dev_off` from `addr`. None when the range is not whole LBAs
/// (`1 << lba_shift` bytes), is empty, or is longer than one command
/// (65536 LBAs) can carry.
pub fn encode_rw(opcode: u8, nsid: u32, lba_shift: u32, dev_off: u64, addr: u64, len: u32) -> Option<[u8; 80]> {
    let mask = (1u64 << lba_shift) - 1;
    if len == 0 || dev_off & mask != 0 || len as u64 & mask != 0 {
        return None;
    }
    let slba = dev_off >> lba_shift;
    let nlb = (len as u64) >> lba_shift;
    if nlb > 1 << 16 {
        return None;
    }
    let mut c = [0u8; 80];
    c[off::OPCODE] = opcode;
    c[off::NSID..off::NSID + 4].copy_from_slice(&nsid.to_le_bytes());
    c[off::ADDR..off::ADDR + 8].copy_from_slice(&addr.to_le_bytes());
    c[off::DATA_LEN..off::DATA_LEN + 4].copy_from_slice(&len.to_le_bytes());
    c[off::CDW10..off::CDW10 + 4].copy_from_slice(&(slba as u32).to_le_bytes());
    c[off::CDW11..off::CDW11 + 4].copy_from_slice(&((slba >> 32) as u32).to_le_bytes());
    c[off::CDW12..off::CDW12 + 4].copy_from_slice(&((nlb - 1) as u32).to_le_bytes());
    Some(c)
}

/// The command area of an NVMe Flush of namespace `nsid`.
pub fn encode_flush(nsid: u32) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[off::OPCODE] = OP_FLUSH;
    c[off::NSID..off::NSID + 4].copy_from_slice(&nsid.to_le_bytes());
    c
}

/// `/dev/nvme0n1` -> (`/dev/ng0n1`, `nvme0n1`): the generic character
/// device of a namespace block device, and its sysfs name. None for a
/// name that is not `nvme<ctrl>n<ns>` (a partition, another driver).
pub fn generic_device_of(block: &Path) -> Option<(PathBuf, String)> {
    let name = block.file_name()?.to_str()?;
    let rest = name.strip_prefix("nvme")?;
    let (ctrl, ns) = rest.split_once('n')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ctrl) || !digits(ns) {
        return None;
    }
    Some((block.with_file_name(format!("ng{ctrl}n{ns}")), name.to_string()))
}

/// The namespace opened for passthrough.
#[derive(Debug)]
pub struct Passthrough {
    /// The generic character device, read-write.
    pub dev: File,
    pub path: PathBuf,
    pub nsid: u32,
    /// log2 of the LBA size.
    pub lba_shift: u32,
    /// Most bytes one command carries (the queue's max_hw_sectors, at
    /// most 65536 LBAs), a multiple of 4096.
    pub max_bytes: u32,
}

fn sysfs_u64(p: &Path) -> Result<u64, String> {
    let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    s.trim().parse().map_err(|e| format!("{}: {e}", p.display()))
}

impl Passthrough {
    /// Opens the generic device of block device `block`, reads its nsid
    /// and LBA size. Errors say what is missing.
    pub fn open(block: &Path) -> Result<Passthrough, String> {
        let (path, name) = generic_device_of(block).ok_or_else(|| {
            format!("ds.volume_passthrough: {} is not an NVMe namespace block device (/dev/nvmeXnY)", block.display())
        })?;
        let q = Path::new("/sys/block").join(&name).join("queue");
        let lba = sysfs_u64(&q.join("logical_block_size"))?;
        if !lba.is_power_of_two() || !(512..=65536).contains(&lba) {
            return Err(format!("{name}: unusable logical block size {lba}"));
        }
        let lba_shift = lba.trailing_zeros();
        let max_kb = sysfs_u64(&q.join("max_hw_sectors_kb")).unwrap_or(128);
        let max_bytes = (max_kb * 1024).min(lba << 16).min(1 << 30) & !4095;
        if max_bytes < lba.max(4096) {
            return Err(format!("{name}: max_hw_sectors_kb {max_kb} too small"));
        }
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {} (the namespace's generic device): {e}", path.display()))?;
        // SAFETY: NVME_IOCTL_ID takes no argument and returns the nsid.
        let nsid = unsafe { libc::ioctl(dev.as_raw_fd(), NVME_IOCTL_ID as _) };
        if nsid <= 0 {
            return Err(format!("{}: NVME_IOCTL_ID: {}", path.display(), io::Error::last_os_error()));
        }
        Ok(Passthrough { dev, path, nsid: nsid as u32, lba_shift, max_bytes: max_bytes as u32 })
    }

    /// Whether a request at `dev_off` of `len` bytes can go as NVMe
    /// commands: whole LBAs.
    pub fn fits(&self, dev_off: u64, len: usize) -> bool {
        let mask = (1u64 << self.lba_shift) - 1;
        len > 0 && dev_off & mask == 0 && len as u64 & mask == 0
    }
}

/// Maps a passthrough completion's `res` to a result; an NVMe status
/// (`res` > 0) is EIO, logged once per process.
pub fn completion_result(res: i32, what: &str) -> io::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static LOGGED: AtomicBool = AtomicBool::new(false);
    match res {
        0 => Ok(()),
        r if r < 0 => Err(io::Error::from_raw_os_error(-r)),
        status => {
            if !LOGGED.swap(true, Ordering::Relaxed) {
                log::error!(
                    "NVMe {what} failed: status 0x{status:x} (sct {}, sc 0x{:x}); answering EIO (logged once)",
                    (status >> 8) & 7,
                    status & 0xff
                );
            }
            Err(io::Error::from_raw_os_error(libc::EIO))
        }
    }
}

// ---------------------------------------------------------------------------
// A reactor's passthrough ring, part of its I/O engine, part of its I/O engine.

/// A reactor's NVMe passthrough ring: 128-byte SQEs and
/// 32-byte CQEs, the pool buffers registered, the generic device in fixed
/// file slot 0 (or its descriptor when file registration is refused).
pub(super) struct PtRing {
    ring: IoUring<io_uring::squeue::Entry128, io_uring::cqueue::Entry32>,
    registered: bool,
    fixed_file: bool,
    fd: RawFd,
    nsid: u32,
    lba_shift: u32,
    max_bytes: u32,
}

static LOGGED_NO_PASSTHROUGH: AtomicBool = AtomicBool::new(false);

impl Engine {

    /// Sets up the passthrough ring for `vol`'s namespace and probes it
    /// with a read of the first 4 KiB; None (logged once) when anything
    /// fails: the reactor then uses O_DIRECT.
    pub(super) fn setup_passthrough(&self, vol: &Volume) -> Option<PtRing> {
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

    /// Test hook: one passthrough read or write of `buf[..len]` at `dev_off`.
    #[cfg(test)]
    pub(crate) fn pt_rw_test(&self, write: bool, buf: &mut super::PoolBuf, len: usize, dev_off: u64) -> io::Result<()> {
        let pt = self.pt.borrow();
        let pt = pt.as_ref().ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let idx = buf.index();
        self.pt_rw(pt, write, buf.as_mut_slice().as_mut_ptr(), len, dev_off, Some(idx))
    }

    /// Reads or writes `len` bytes at device offset `dev_off` to/from
    /// `ptr` (inside pool buffer `buf_idx`) as NVMe commands of at most
    /// `max_bytes` each, one at a time. The range must be whole LBAs.
    pub(super) fn pt_rw(&self, pt: &PtRing, write: bool, ptr: *mut u8, len: usize, dev_off: u64, buf_idx: Option<u16>) -> io::Result<()> {
        let (op, what) = if write { (OP_WRITE, "write") } else { (OP_READ, "read") };
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(pt.max_bytes as usize);
            let addr = ptr as u64 + done as u64;
            let cmd = encode_rw(op, pt.nsid, pt.lba_shift, dev_off + done as u64, addr, n as u32)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            self.pt_submit(pt, cmd, buf_idx, what)?;
            done += n;
        }
        Ok(())
    }

    /// An NVMe Flush of the device's volatile cache (the volume's COMMIT).
    pub(super) fn pt_flush(&self, pt: &PtRing) -> io::Result<()> {
        self.pt_submit(pt, encode_flush(pt.nsid), None, "flush")
    }

    /// Submits one NVMe command and waits for it.
    fn pt_submit(&self, pt: &PtRing, cmd: [u8; 80], buf_idx: Option<u16>, what: &str) -> io::Result<()> {
        let mut e = if pt.fixed_file {
            opcode::UringCmd80::new(types::Fixed(0), NVME_URING_CMD_IO)
        } else {
            opcode::UringCmd80::new(types::Fd(pt.fd), NVME_URING_CMD_IO)
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
                return completion_result(cqe.result(), what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(c: &[u8; 80], at: usize) -> u32 {
        u32::from_le_bytes(c[at..at + 4].try_into().unwrap())
    }
    fn u64_at(c: &[u8; 80], at: usize) -> u64 {
        u64::from_le_bytes(c[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn cmd_op_and_ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(NVME_URING_CMD_IO, 0xC048_4E80);
        assert_eq!(NVME_IOCTL_ID, 0x4E40);
    }

    #[test]
    fn read_write_encoding_512_and_4096_lbas() {
        // 512-byte LBAs: 1 MiB + 4096 -> slba 2056, 64 KiB -> nlb 128 (127 stored).
        let c = encode_rw(OP_READ, 1, 9, (1 << 20) + 4096, 0xdead_b000, 65536).unwrap();
        assert_eq!(c[0], OP_READ);
        assert_eq!(u32_at(&c, 4), 1);
        assert_eq!(u64_at(&c, 24), 0xdead_b000);
        assert_eq!(u32_at(&c, 36), 65536);
        assert_eq!((u32_at(&c, 40), u32_at(&c, 44), u32_at(&c, 48)), (2056, 0, 127));
        // Everything else zero: flags, cdw2/3, metadata, cdw13-15, timeout.
        for (i, b) in c.iter().enumerate() {
            if ![0, 4, 24, 25, 26, 27, 28, 29, 30, 31, 36, 37, 38, 39, 40, 41, 42, 43, 48].contains(&i) {
                assert_eq!(*b, 0, "byte {i}");
            }
        }
        // 4096-byte LBAs, an slba above 2^32 (offset 20 TiB): cdw11 holds the high half.
        let off = 20u64 << 40;
        let c = encode_rw(OP_WRITE, 7, 12, off, 0x1000, 4096).unwrap();
        assert_eq!(c[0], OP_WRITE);
        assert_eq!(u32_at(&c, 4), 7);
        let slba = off >> 12;
        assert_eq!((u32_at(&c, 40), u32_at(&c, 44), u32_at(&c, 48)), (slba as u32, (slba >> 32) as u32, 0));
        assert!(slba >> 32 != 0);
    }

    #[test]
    fn non_lba_ranges_and_oversized_commands_are_refused() {
        assert!(encode_rw(OP_READ, 1, 12, 512, 0, 4096).is_none());
        assert!(encode_rw(OP_READ, 1, 12, 4096, 0, 512).is_none());
        assert!(encode_rw(OP_READ, 1, 9, 0, 0, 0).is_none());
        assert!(encode_rw(OP_READ, 1, 9, 0, 0, 512 << 16).is_some());
        assert!(encode_rw(OP_READ, 1, 9, 0, 0, (512 << 16) + 512).is_none());
        let c = encode_flush(3);
        assert_eq!((c[0], u32_at(&c, 4)), (OP_FLUSH, 3));
        assert!(c[8..].iter().all(|b| *b == 0));
    }

    #[test]
    fn generic_device_names() {
        assert_eq!(generic_device_of(Path::new("/dev/nvme0n1")), Some((PathBuf::from("/dev/ng0n1"), "nvme0n1".into())));
        assert_eq!(generic_device_of(Path::new("/dev/nvme12n3")), Some((PathBuf::from("/dev/ng12n3"), "nvme12n3".into())));
        assert_eq!(generic_device_of(Path::new("/dev/nvme0n1p1")), None);
        assert_eq!(generic_device_of(Path::new("/dev/sda")), None);
        assert_eq!(generic_device_of(Path::new("/dev/nvme0")), None);
    }

    #[test]
    fn completion_status_is_eio() {
        assert!(completion_result(0, "read").is_ok());
        assert_eq!(completion_result(-libc::EINVAL, "read").unwrap_err().raw_os_error(), Some(libc::EINVAL));
        // 0x281: media error (sct 2), unrecovered read error.
        assert_eq!(completion_result(0x281, "read").unwrap_err().raw_os_error(), Some(libc::EIO));
    }
}

//! Aligned memory for O_DIRECT: the per-reactor buffer pool ([`BufPool`],
//! a fixed set of `IO_ALIGN`-aligned buffers registered with the reactor's
//! rings; an empty pool is NFS4ERR_DELAY), single aligned blocks
//! (`Aligned`, the volume's metadata I/O) and the alignment rule.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::rc::Rc;

/// Alignment of I/O buffers, offsets and lengths for O_DIRECT.
pub const IO_ALIGN: usize = 4096;

/// Whether an offset or length suits O_DIRECT.
pub(crate) fn is_aligned(x: u64) -> bool {
    x.is_multiple_of(IO_ALIGN as u64)
}

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

    /// The buffers, for registration with a ring.
    pub(super) fn iovecs(&self) -> Vec<libc::iovec> {
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

/// WRITE data the transport received into a pool buffer beside its
/// record ([`crate::transport::recv`]), for the WRITE op to write from.
pub struct Detached {
    /// None: the WRITE was not admitted ([`crate::transport::recv::read_call`]) and its data was
    /// received and dropped; a WRITE that gets this far anyway (its
    /// session or stateid appeared meanwhile) answers NFS4ERR_DELAY.
    pub buf: Option<PoolBuf>,
    /// Data bytes (the WRITE's real data length).
    pub len: usize,
}

impl Detached {
    /// Bytes it took on the wire (data and XDR pad).
    pub fn wire_len(&self) -> usize {
        self.len + (4 - self.len % 4) % 4
    }
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

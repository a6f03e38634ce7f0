//! Extent allocation: the in-memory bitmap allocator ([`Alloc`]), its
//! on-disk blocks (written without waiting: the object table is the truth,
//! see the crash-consistency rules in the module above), taking an extent
//! for a hole (zeroed before use) and giving extents back.

use super::format::{put_u64, BITS_PER_BLOCK, BLOCK};
use super::object::VolObj;
use super::{errno, Volume};
use crate::storage::IO_ALIGN;
use crate::stats::bump;
use crate::storage::buffers::Aligned;
use pnfs_protocol::sync::lock;
use std::io;
use std::sync::atomic::Ordering;

pub(super) struct Alloc {
    /// One bit per extent, set = allocated.
    pub(super) bits: Vec<u64>,
    pub(super) free: u64,
    /// Where the next search starts (word index).
    pub(super) hint: usize,
}

impl Alloc {
    pub(super) fn is_set(&self, e: u32) -> bool {
        self.bits[e as usize / 64] >> (e % 64) & 1 == 1
    }
    pub(super) fn set(&mut self, e: u32, v: bool) {
        let (w, b) = (e as usize / 64, e % 64);
        if v {
            self.bits[w] |= 1 << b;
        } else {
            self.bits[w] &= !(1 << b);
        }
    }
    pub(super) fn take(&mut self, count: u32) -> Option<u32> {
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

/// Bitmap block `blk` of `a` as it should be on disk.
pub(super) fn bitmap_block(a: &Alloc, blk: u64) -> Aligned {
    let mut b = Aligned::new(IO_ALIGN);
    let words_per_block = (BITS_PER_BLOCK / 64) as usize;
    let first = blk as usize * words_per_block;
    for (k, w) in a.bits.iter().skip(first).take(words_per_block).enumerate() {
        put_u64(b.as_mut_slice(), k * 8, *w);
    }
    b
}

impl Volume {

    /// Volume offset of extent `i` of `vo`, allocating (and zeroing) it
    /// when it is a hole.
    pub(super) fn ensure_extent(&self, vo: &VolObj, i: usize) -> io::Result<u64> {
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


    /// Frees extents no entry names any more.
    pub(super) fn free_extents(&self, extents: &[u32]) {
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

}

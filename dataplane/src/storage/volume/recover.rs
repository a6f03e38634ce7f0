//! Start-up recovery: the object table read whole, the allocator and the
//! index rebuilt from it, the on-disk bitmap repaired where a crash left it
//! behind (rules in the module above).

use super::alloc::{bitmap_block, Alloc};
use super::format::{decode_entry, Entry, BLOCK, BITS_PER_BLOCK};
use super::object::VolObj;
use super::{Index, Volume};
use crate::storage::IO_ALIGN;
use crate::fh::DsFh;
use crate::storage::buffers::Aligned;
use pnfs_protocol::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Object-table slots read per I/O at start.
const SCAN_SLOTS: u64 = 128;

impl Volume {

    /// Reads the object table and the bitmap; rebuilds the allocator and
    /// the index; repairs the on-disk bitmap.
    pub(super) fn recover(&mut self) -> Result<(), String> {
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
                vo.version.store(en.version, Ordering::Relaxed);
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

}

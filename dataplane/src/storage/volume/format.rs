//! The volume's on-disk format (see the layout table in the module above):
//! the geometry, the superblock (written at format, checked at open), the
//! object-table entries and their checksum, little-endian field access.

use super::object::VolObj;
use super::Volume;
use super::VolumeOptions;
use crate::storage::IO_ALIGN;
use crate::fh::{DsFh, FH_LEN};
use crate::storage::buffers::Aligned;
use std::io;
use std::sync::atomic::Ordering;

pub(super) const BLOCK: u64 = IO_ALIGN as u64;
const SB_MAGIC: &[u8; 8] = b"PNFSVOL\x01";
const VERSION: u32 = 1;
const ENTRY_MAGIC: &[u8; 8] = b"PNFSOBJ\x01";
/// Extent-map entries in one object-table copy (4096 - 64 header bytes -
/// 8 for the object version at the end).
pub const MAP_LEN: usize = (IO_ALIGN - ENTRY_HDR - 8) / 4;
/// Where an entry keeps the object's version (set by the MDS, u64): the
/// last 8 bytes, which entries written before versions existed left zero
/// (version 0, never set) unless their map used all 1008 old entries.
const VERSION_AT: usize = IO_ALIGN - 8;
pub(super) const ENTRY_HDR: usize = 64;
const FLAG_IN_USE: u32 = 1;
pub(super) const ID_MAX: usize = 64;
/// Bits in one bitmap block.
pub(super) const BITS_PER_BLOCK: u64 = BLOCK * 8;

/// FNV-1a 64 over `parts`.
pub(super) fn checksum(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

pub(super) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub(super) fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
pub(super) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(super) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
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

    pub(super) fn slot_off(&self, slot: u32, copy: u64) -> u64 {
        self.table_off + (slot as u64 * 2 + copy) * BLOCK
    }
}

/// A decoded object-table copy.
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) fh: DsFh,
    pub(super) in_use: bool,
    pub(super) size: u64,
    pub(super) mtime_ns: u64,
    pub(super) version: u64,
    pub(super) map: Vec<u32>,
}

/// Ok(None): an empty (all-zero) copy; Err: a corrupt one.
pub(super) fn decode_entry(b: &[u8]) -> Result<Option<Entry>, ()> {
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
        version: get_u64(b, VERSION_AT),
        map: (0..n).map(|i| get_u32(b, ENTRY_HDR + 4 * i)).collect(),
    }))
}

impl Volume {
    pub(super) fn check_superblock(&self, b: &[u8], size: u64, o: &VolumeOptions) -> Result<Geometry, String> {
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

    pub(super) fn format(&mut self, ds_id: &str) -> io::Result<()> {
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

    pub(super) fn encode_entry(&self, s: &mut [u8], vo: &VolObj, seq: u64, in_use: bool) {
        s.fill(0);
        s[0..8].copy_from_slice(ENTRY_MAGIC);
        put_u64(s, 8, seq);
        s[16..16 + FH_LEN].copy_from_slice(&vo.fh.to_bytes());
        put_u32(s, 32, if in_use { FLAG_IN_USE } else { 0 });
        if in_use {
            put_u64(s, 40, vo.size());
            put_u64(s, 48, vo.mtime_ns.load(Ordering::SeqCst));
            put_u64(s, VERSION_AT, vo.version.load(Ordering::SeqCst));
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
    pub(super) fn write_entry(&self, vo: &VolObj, seq: u64, in_use: bool) -> io::Result<()> {
        let mut b = self.take_block();
        self.encode_entry(b.as_mut_slice(), vo, seq, in_use);
        let r = self.meta_write(b.as_slice(), self.geo.slot_off(vo.slot, seq % 2));
        self.give_block(b);
        r
    }

}

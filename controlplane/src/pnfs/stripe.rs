//! Stripe sets: how one file's bytes map onto objects on data servers
//! (RFC 8881 13.4: dense packing, first stripe index), their persisted
//! form, and the placement policy of new files (its stripe unit is checked
//! by `config::check_stripe_unit`).

use pnfs_protocol::mds_ds::ds_handle::{Identity, IDENTITY_LEN};
use pnfs_protocol::mds_ds::{deviceid, MAX_DATA_SERVERS};
use pnfs_protocol::wire::deviceid4;
use pnfs_protocol::{Decoder, Encoder};

/// How a file is striped; never changes once persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSet {
    pub stripe_unit: u32,
    /// nfl_first_stripe_index: stripe unit 0 of the file is on stripe `first`.
    pub first: u32,
    /// Inode generation, part of the DS filehandles.
    pub generation: u32,
    /// DS indices in ascending order; stripe j lives on `ds[j]` (identity
    /// nflda_stripe_indices, so the device ID only depends on the set).
    pub ds: Vec<u32>,
}

/// One contiguous piece of a file range on one stripe object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub stripe: u32,
    pub obj_offset: u64,
    /// Offset of the piece inside the caller's buffer (file offset - start).
    pub buf_offset: usize,
    pub len: usize,
}

impl StripeSet {
    pub fn count(&self) -> u32 {
        self.ds.len() as u32
    }

    fn su(&self) -> u64 {
        self.stripe_unit as u64
    }

    /// Stripe index j holding file offset `off` (RFC 8881 13.4.2).
    pub fn stripe_of(&self, off: u64) -> u32 {
        ((off / self.su() + self.first as u64) % self.count() as u64) as u32
    }

    /// Dense packing (RFC 8881 13.4.4): object offset of file offset `off`.
    pub fn obj_offset(&self, off: u64) -> u64 {
        let su = self.su();
        (off / (su * self.count() as u64)) * su + off % su
    }

    /// File offset of byte `x` of stripe object `j` (inverse of the above).
    pub fn file_offset(&self, j: u32, x: u64) -> u64 {
        let (su, n) = (self.su(), self.count() as u64);
        let row = x / su;
        let pos = (j as u64 + n - self.first as u64 % n) % n;
        (row * n + pos) * su + x % su
    }

    /// Splits `[off, off+len)` into per-object pieces; pieces that are
    /// contiguous on the same object (one stripe) are merged.
    pub fn pieces(&self, off: u64, len: usize) -> Vec<Piece> {
        let su = self.su();
        let mut out: Vec<Piece> = Vec::new();
        let mut done = 0usize;
        while done < len {
            let o = off + done as u64;
            let n = ((su - o % su) as usize).min(len - done);
            let p = Piece { stripe: self.stripe_of(o), obj_offset: self.obj_offset(o), buf_offset: done, len: n };
            match out.last_mut() {
                Some(l) if l.stripe == p.stripe && l.obj_offset + l.len as u64 == p.obj_offset => l.len += n,
                _ => out.push(p),
            }
            done += n;
        }
        out
    }

    /// Length of stripe object `j` when the file is `size` bytes long.
    pub fn object_size(&self, j: u32, size: u64) -> u64 {
        let (su, n) = (self.su(), self.count() as u64);
        let full = size / (su * n);
        let rem = size % (su * n);
        let pos = (j as u64 + n - self.first as u64 % n) % n;
        full * su + rem.saturating_sub(pos * su).min(su)
    }

    pub fn deviceid(&self) -> deviceid4 {
        deviceid::encode(&self.ds).expect("stripe sets hold DS indices below MAX_DATA_SERVERS")
    }

    /// The identity of stripe object `j` (the bare DS filehandle).
    pub fn ds_fh(&self, j: u32, ino: u64) -> [u8; IDENTITY_LEN] {
        Identity { stripe: j as u8, ino, generation: self.generation }.to_bytes()
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.put_u32(self.stripe_unit);
        e.put_u32(self.first);
        e.put_u32(self.generation);
        e.put_u32(self.ds.len() as u32);
        self.ds.iter().for_each(|d| e.put_u32(*d));
        e.into_inner()
    }

    pub(super) fn decode(b: &[u8]) -> Option<StripeSet> {
        let mut d = Decoder::new(b);
        let stripe_unit = d.get_u32().ok()?;
        let first = d.get_u32().ok()?;
        let generation = d.get_u32().ok()?;
        let n = d.get_count(MAX_DATA_SERVERS as u32).ok()?;
        let ds = (0..n).map(|_| d.get_u32()).collect::<Result<Vec<_>, _>>().ok()?;
        let indices_ok = ds.iter().all(|d| (*d as usize) < MAX_DATA_SERVERS);
        (n > 0 && stripe_unit > 0 && first < n as u32 && indices_ok).then_some(StripeSet { stripe_unit, first, generation, ds })
    }
}

/// Stripe count (0 = all live DSes; for mirrored files the size of the
/// pool their segments spread over), stripe unit and layout of new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub stripe_count: u32,
    pub stripe_unit: u32,
    pub layout: super::mirror::LayoutPolicy,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u32, first: u32, su: u32) -> StripeSet {
        StripeSet { stripe_unit: su, first, generation: 1, ds: (0..n).map(|i| i * 3).collect() }
    }

    #[test]
    fn dense_offset_mapping_matches_rfc() {
        let s = set(3, 1, 64);
        // SUN 0 -> stripe 1, SUN 1 -> stripe 2, SUN 2 -> stripe 0, SUN 3 -> stripe 1 ...
        assert_eq!(s.stripe_of(0), 1);
        assert_eq!(s.stripe_of(64), 2);
        assert_eq!(s.stripe_of(128), 0);
        assert_eq!(s.stripe_of(192), 1);
        assert_eq!(s.obj_offset(0), 0);
        assert_eq!(s.obj_offset(70), 6);
        assert_eq!(s.obj_offset(192 + 5), 64 + 5);
        for off in (0..5000).step_by(7) {
            let j = s.stripe_of(off);
            assert_eq!(s.file_offset(j, s.obj_offset(off)), off, "offset {off}");
        }
        // Pieces cover the range exactly and never cross a stripe unit.
        let p = s.pieces(60, 200);
        assert_eq!(p.iter().map(|p| p.len).sum::<usize>(), 200);
        assert_eq!(p[0], Piece { stripe: 1, obj_offset: 60, buf_offset: 0, len: 4 });
        assert_eq!(p[1], Piece { stripe: 2, obj_offset: 0, buf_offset: 4, len: 64 });
        // One stripe: everything merges into one piece.
        assert_eq!(set(1, 0, 64).pieces(10, 1000).len(), 1);
    }

    #[test]
    fn object_sizes_add_up() {
        for (n, first) in [(1, 0), (3, 0), (3, 2), (4, 1)] {
            let s = set(n, first, 64);
            for size in [0u64, 1, 63, 64, 65, 191, 192, 193, 1000, 64 * 12] {
                let total: u64 = (0..n).map(|j| s.object_size(j, size)).sum();
                assert_eq!(total, size, "n {n} first {first} size {size}");
                if size > 0 {
                    // The last byte lands on the object whose size ends right after it.
                    let j = s.stripe_of(size - 1);
                    assert_eq!(s.object_size(j, size), s.obj_offset(size - 1) + 1);
                }
            }
        }
    }

    #[test]
    fn stripe_set_records_round_trip() {
        let s = set(4, 3, 1 << 20);
        assert_eq!(StripeSet::decode(&s.encode()), Some(s));
        assert_eq!(StripeSet::decode(&[0; 12]), None, "no data servers");
        let mut bad = set(1, 0, 64);
        bad.ds = vec![MAX_DATA_SERVERS as u32];
        assert_eq!(StripeSet::decode(&bad.encode()), None, "DS index out of range");
        let fh = set(4, 3, 64).ds_fh(2, 0x0102030405060708);
        assert_eq!(fh, [b'D', 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1]);
    }
}

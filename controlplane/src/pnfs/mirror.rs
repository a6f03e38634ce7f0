//! Mirrored files: Flexible File layouts (RFC 8435) with 2 or 3 mirrors,
//! striped by byte-range layout segments.
//!
//! # The model
//!
//! A mirrored file is cut into segments of `segment_bytes` (fixed at
//! placement, `mds.flex_segment_bytes` then). Segment `k` covers file bytes
//! `[k*S, (k+1)*S)` and lives on `mirrors` distinct data servers of the
//! file's pool `ds` (chosen at placement like a stripe set: `stripe_count`
//! live ones, 0 = all, at least `mirrors`):
//!
//! ```text
//! mirror m of segment k  ->  ds[(first + k + m * step) % P],  step = P / mirrors,  P = ds.len()
//! ```
//!
//! The `mirrors` offsets `0, step, .., (mirrors-1)*step` are below `P`, so
//! a segment's data servers are distinct. Mirror 0 (listed first, highest
//! `ffds_efficiency`) is the one Linux reads from, and it walks the pool one
//! DS per segment: a sequential reader spreads over all P data servers. A
//! sequential writer's consecutive segments start on consecutive data
//! servers, so `step` consecutive segments in flight keep every DS busy
//! (P = 4, mirrors = 2: segments {0,2}, {1,3}, {2,0}, {3,1}, ...).
//!
//! Each data server holds **one object per file** (identity stripe byte
//! [`MIRROR_OBJECT`], the same name on every DS) with the file's bytes at
//! their file offsets: flexfiles clients send the file offset unchanged to
//! the DS (no dense packing), and an object is sparse where segments of other
//! data servers fall. A copy of the object is thus a copy of the mirror,
//! whichever DS it lands on.
//!
//! # What the Linux client does (fs/nfs/pnfs.c, flexfilelayout/, nfs4xdr.c; 6.1)
//!
//! - **Which layout type.** `set_pnfs_layoutdriver` sorts the server's
//!   `fs_layout_types` by the client's own preference (`ld_prefs`: SCSI,
//!   BLOCK_VOLUME, OSD2_OBJECTS, FLEX_FILES, NFSV4_1_FILES), not by the
//!   server's order, and uses one driver per mount. A server listing both
//!   types gets flexfiles LAYOUTGETs for every file. So the MDS lists
//!   FLEX_FILES only when the export default (`mds.layout`) mirrors; a
//!   `stripe` MDS lists the files layout alone (see `attrs`).
//! - **Asking for a segment.** `ff_layout_pg_init_read/write` call
//!   `pnfs_update_layout(offset of the first page request, its length)`:
//!   the LAYOUTGET asks for the first uncovered page (minlength at most one
//!   page), and the server may answer with more. `pnfs_generic_pg_test` ends
//!   every RPC at the segment's end; the first page past it misses the
//!   layout cache and sends the next LAYOUTGET, synchronously in the
//!   writeback/readahead path while the RPCs already sent go on.
//! - **One layout per reply.** `decode_layoutget` keeps the first `layout4`
//!   of `logr_layout` and drops the tail, so each LAYOUTGET buys one
//!   segment; the MDS answers with the segment holding `loga_offset` (and
//!   more entries only for a client whose minlength crosses a segment end).
//! - **One DS per mirror** (`ff_layout_alloc_lseg` refuses `ds_count != 1`
//!   and more than one filehandle), `ffl_stripe_unit` 0; striping inside a
//!   mirror came with 6.18.
//! - **Stateid.** DS I/O carries `ffds_stateid` as given
//!   (`nfs4_ff_layout_select_ds_stateid`): the MDS puts the layout stateid
//!   there and pushes it to the segment's data servers (tight coupling).
//! - **Errors.** NFS4ERR_LAYOUTUNAVAILABLE is -ENODATA: I/O to that file
//!   goes through the MDS for a while (fail bit, retried after 120 s);
//!   NFS4ERR_UNKNOWN_LAYOUTTYPE is a fatal I/O error. A file of the other
//!   kind (a `stripe` file asked for flexfiles) is therefore
//!   LAYOUTUNAVAILABLE; only a type the MDS never hands out is
//!   UNKNOWN_LAYOUTTYPE.
//!
//! # Segment boundaries and the Linux client: why the default is 1 TiB
//!
//! Linux 6.1 (and every kernel whose `nfs_pageio_add_request` still adds
//! a request to mirror 1 before mirror 0) misdirects WRITEs at a segment
//! boundary when the mirrors' data servers change there: the first page
//! past the boundary fails mirror 1's `pg_test`, mirror 1 is flushed with
//! the old segment, and its `pg_init` swaps the descriptor's layout
//! segment for the next one; that page then fits the new segment on
//! mirror 0 (and mirror 2), so it is coalesced onto lists still holding
//! the old segment's last pages, which are sent with the NEW segment's
//! data servers. Measured with the kernel lab (scripts/mirror-lab, 4 MiB
//! segments over 4 data servers, 256 MiB written with dd): the last 1 MiB
//! (one wsize) of mirror 0 of every segment landed on the next segment's
//! mirror-0 data server, and the file read back wrong. Mirror 1's copy was
//! right, so nothing the server sees is wrong: the client simply writes a
//! byte range to a data server whose segment does not cover it.
//!
//! So `mds.flex_segment_bytes` defaults to 1 TiB, one segment per file in
//! practice: each mirrored file lives on `mirrors` data servers, the
//! placement rotates them per file, and many files spread over all data
//! servers, but one file's stream is bound by one data server's link.
//! Shorter segments are for clients without this behaviour (or reads
//! only), set by hand; the MDS logs a warning when they are configured.
//!
//! # Segment length and its LAYOUTGET cost
//!
//! A sequential pass over F bytes costs `ceil(F / S)` LAYOUTGETs per iomode
//! (segments stay cached until returned or recalled; a READ after WRITE in
//! the same open reuses the RW segments). With S = 4 MiB (not the default,
//! see above), Linux's NFS readahead of 15 x rsize (15 MiB with 1 MiB
//! rsize) has about 4 segments in flight, i.e. 4 data servers reading; and
//! a 256 MiB file costs 64 LAYOUTGETs per pass (one per 4 MiB, each a round
//! trip and a state-table update on the MDS, overlapping the WRITEs in
//! flight). Measured (debug build, single MDS on redb, 4 in-process data
//! servers, loopback, 2 loaded cores): 256 consecutive segment LAYOUTGETs
//! took 86-99 us each, files-layout LAYOUTGETs 117-240 us; a clustered MDS
//! writes each to etcd and costs milliseconds. Larger S: fewer LAYOUTGETs,
//! fewer data servers per single stream; smaller S: the reverse.

use pnfs_protocol::mds_ds::ds_handle::{self, Identity, IDENTITY_LEN};
use pnfs_protocol::mds_ds::{deviceid, MAX_DATA_SERVERS};
use pnfs_protocol::seal::TagKey;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, XdrEncode};
use serde::Deserialize;

/// Layout policy of new files (`mds.layout`, a directory's `pnfs.layout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutPolicy {
    /// Files layout, striped (RFC 8881 chapter 13).
    #[default]
    Stripe,
    /// Flexfiles with 2 mirrors on distinct data servers.
    Mirror2,
    /// Flexfiles with 3 mirrors on distinct data servers.
    Mirror3,
}

impl LayoutPolicy {
    /// Copies of each byte: 1 for `stripe`.
    pub fn mirrors(self) -> u32 {
        match self {
            LayoutPolicy::Stripe => 1,
            LayoutPolicy::Mirror2 => 2,
            LayoutPolicy::Mirror3 => 3,
        }
    }

    pub fn is_mirrored(self) -> bool {
        self != LayoutPolicy::Stripe
    }

    /// The value of a `pnfs.layout` xattr; None for anything else.
    pub fn parse(s: &str) -> Option<LayoutPolicy> {
        match s.trim() {
            "stripe" => Some(LayoutPolicy::Stripe),
            "mirror2" => Some(LayoutPolicy::Mirror2),
            "mirror3" => Some(LayoutPolicy::Mirror3),
            _ => None,
        }
    }

    pub(super) fn code(self) -> u32 {
        self.mirrors()
    }

    pub(super) fn from_code(c: u32) -> Option<LayoutPolicy> {
        match c {
            1 => Some(LayoutPolicy::Stripe),
            2 => Some(LayoutPolicy::Mirror2),
            3 => Some(LayoutPolicy::Mirror3),
            _ => None,
        }
    }
}

/// Most mirrors a file may have.
pub const MAX_MIRRORS: u32 = 3;
/// Identity stripe byte of a mirrored file's objects (stripe indices of
/// striped files stay below `MAX_DATA_SERVERS`, so names never collide).
pub const MIRROR_OBJECT: u8 = 0xff;
/// Segment length bounds: at least a few maximal RPCs per LAYOUTGET, and a
/// multiple of the largest page size Linux uses (64 KiB).
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;
pub const MAX_SEGMENT_BYTES: u64 = 1 << 40;
/// Layouts one LAYOUTGET reply carries at most (minlength across segments).
pub const MAX_SEGMENTS_PER_REPLY: usize = 16;

/// `mds.flex_segment_bytes`: 1 MiB to 1 TiB, a multiple of 64 KiB.
pub fn check_segment_bytes(s: u64) -> Result<(), String> {
    if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&s) || !s.is_multiple_of(64 << 10) {
        return Err(format!("{s} must be a multiple of 65536 between 1 MiB and 1 TiB"));
    }
    Ok(())
}

/// How a mirrored file's bytes map onto data servers; never changes once
/// persisted (`L` record, see `keyspace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSet {
    pub mirrors: u32,
    pub segment_bytes: u64,
    /// Inode generation, part of the DS filehandle.
    pub generation: u32,
    /// Segment 0's mirror 0 is `ds[first]`.
    pub first: u32,
    /// The file's data servers (DS indices, ascending), at least `mirrors`.
    pub ds: Vec<u32>,
}

/// One contiguous piece of a file range inside one segment; its bytes sit
/// at the same offsets (`file_offset`) in the objects of the segment's DSes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPiece {
    pub segment: u64,
    pub file_offset: u64,
    pub buf_offset: usize,
    pub len: usize,
}

/// Record tag: a stripe set's first word is its stripe unit, never 0.
const RECORD_MIRRORED: u32 = 0;
const RECORD_VERSION: u32 = 1;

impl MirrorSet {
    fn step(&self) -> u64 {
        (self.ds.len() as u64 / self.mirrors as u64).max(1)
    }

    pub fn segment_of(&self, off: u64) -> u64 {
        off / self.segment_bytes
    }

    /// (offset, length) of segment `k`.
    pub fn segment_range(&self, k: u64) -> (u64, u64) {
        (k.saturating_mul(self.segment_bytes), self.segment_bytes)
    }

    /// Data servers of segment `k`, mirror 0 (the one to read) first.
    pub fn segment_ds(&self, k: u64) -> Vec<u32> {
        let p = self.ds.len() as u64;
        let base = (self.first as u64 + k % p) % p;
        (0..self.mirrors as u64).map(|m| self.ds[((base + m * self.step()) % p) as usize]).collect()
    }

    /// Splits `[off, off+len)` at segment boundaries.
    pub fn pieces(&self, off: u64, len: usize) -> Vec<SegmentPiece> {
        let mut out = Vec::new();
        let mut done = 0usize;
        while done < len {
            let o = off + done as u64;
            let k = self.segment_of(o);
            let seg_end = (k + 1).saturating_mul(self.segment_bytes);
            let n = ((seg_end - o).min((len - done) as u64)) as usize;
            out.push(SegmentPiece { segment: k, file_offset: o, buf_offset: done, len: n });
            done += n;
        }
        out
    }

    /// The identity of the file's object on each of its data servers.
    pub fn object_fh(&self, ino: u64) -> [u8; IDENTITY_LEN] {
        Identity { stripe: MIRROR_OBJECT, ino, generation: self.generation }.to_bytes()
    }

    /// Length of the object on data server `d` when the file is `size`
    /// bytes long: the end of the last segment below `size` it holds.
    pub fn object_size(&self, d: u32, size: u64) -> u64 {
        if size == 0 {
            return 0;
        }
        let last = self.segment_of(size - 1);
        // Segment DS sets repeat every P segments.
        let back = (self.ds.len() as u64).min(last + 1);
        (0..back)
            .map(|i| last - i)
            .find(|k| self.segment_ds(*k).contains(&d))
            .map_or(0, |k| (k + 1).saturating_mul(self.segment_bytes).min(size))
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.put_u32(RECORD_MIRRORED);
        e.put_u32(RECORD_VERSION);
        e.put_u32(self.mirrors);
        e.put_u64(self.segment_bytes);
        e.put_u32(self.generation);
        e.put_u32(self.first);
        e.put_u32(self.ds.len() as u32);
        self.ds.iter().for_each(|d| e.put_u32(*d));
        e.into_inner()
    }

    /// A record written by `encode`; None for anything else (a stripe set's
    /// record included).
    pub(super) fn decode(b: &[u8]) -> Option<MirrorSet> {
        let mut d = Decoder::new(b);
        if d.get_u32().ok()? != RECORD_MIRRORED || d.get_u32().ok()? != RECORD_VERSION {
            return None;
        }
        let mirrors = d.get_u32().ok()?;
        let segment_bytes = d.get_u64().ok()?;
        let generation = d.get_u32().ok()?;
        let first = d.get_u32().ok()?;
        let n = d.get_count(MAX_DATA_SERVERS as u32).ok()? as u32;
        let ds = (0..n).map(|_| d.get_u32()).collect::<Result<Vec<_>, _>>().ok()?;
        let ok = (2..=MAX_MIRRORS).contains(&mirrors)
            && n >= mirrors
            && first < n
            && check_segment_bytes(segment_bytes).is_ok()
            && ds.iter().all(|d| (*d as usize) < MAX_DATA_SERVERS);
        ok.then_some(MirrorSet { mirrors, segment_bytes, generation, first, ds })
    }

    /// The ff_layout4 body of segment `k` of file `ino`: one mirror per DS
    /// of the segment, each with the sealed object handle and `stateid`
    /// (pushed to those data servers), owner strings `user`/`group`.
    pub fn layout_body(&self, k: u64, ino: u64, fh_key: &TagKey, stateid: &stateid4, user: &[u8], group: &[u8]) -> Vec<u8> {
        let fh = ds_handle::seal(fh_key, &self.object_fh(ino));
        let ds = self.segment_ds(k);
        let body = ff_layout4 {
            // One data server per mirror: no striping inside a mirror.
            ffl_stripe_unit: 0,
            ffl_mirrors: ds
                .iter()
                .enumerate()
                .map(|(m, d)| ff_mirror4 {
                    ffm_data_servers: vec![ff_data_server4 {
                        ffds_deviceid: ff_deviceid(*d),
                        // Larger is better; Linux reads the best mirror first.
                        ffds_efficiency: self.mirrors - m as u32,
                        ffds_stateid: stateid.clone(),
                        ffds_fh_vers: vec![nfs_fh4::borrowed(&fh[..])],
                        ffds_user: user.into(),
                        ffds_group: group.into(),
                    }],
                })
                .collect(),
            // LAYOUTCOMMIT stays on: the MDS owns the size and learns it there.
            ffl_flags: FF_FLAGS_NO_IO_THRU_MDS,
            // No LAYOUTSTATS interval hint: the client's own (60 s in Linux).
            ffl_stats_collect_hint: 0,
        };
        let mut e = Encoder::new();
        body.encode(&mut e).expect("ff layout body encodes");
        e.into_inner()
    }
}

/// A flexfiles device is one data server; its ID is the one-DS bitmap
/// (device IDs are per layout type, so the files layout's one-DS device of
/// the same bits is another device).
pub fn ff_deviceid(ds: u32) -> deviceid4 {
    deviceid::encode(&[ds]).expect("DS indices stay below MAX_DATA_SERVERS")
}

/// The data server of a flexfiles device ID; None if it is not one of ours
/// or names more than one.
pub fn ff_device_ds(id: &deviceid4) -> Option<u32> {
    match deviceid::decode(id)?.as_slice() {
        [d] => Some(*d),
        _ => None,
    }
}

/// The ff_device_addr4 body: the DS's multipath list, NFSv4.`minor`,
/// tightly coupled, `rsize`/`wsize` the largest READ/WRITE to send it.
///
/// `minor` is the minor version the client speaks to the MDS (1 or 2): a
/// Linux client opens its DS connections as a separate client of the
/// version the device names, with an owner string of that version
/// ("Linux NFSv4.1 ..." vs "Linux NFSv4.2 ..."); the DSes tie a stateid to
/// the owner that got it at the MDS, so a 4.2 mount handed "4.1" here has
/// every WRITE refused with BAD_STATEID.
pub fn ff_device_addr_body(addrs: &[(String, String)], minor: u32, rsize: u32, wsize: u32) -> Vec<u8> {
    let body = ff_device_addr4 {
        ffda_netaddrs: addrs
            .iter()
            .map(|(netid, addr)| netaddr4 { na_r_netid: netid.as_bytes().into(), na_r_addr: addr.as_bytes().into() })
            .collect(),
        ffda_versions: vec![ff_device_versions4 {
            ffdv_version: 4,
            ffdv_minorversion: minor.clamp(1, 2),
            ffdv_rsize: rsize,
            ffdv_wsize: wsize,
            ffdv_tightly_coupled: true,
        }],
    };
    let mut e = Encoder::new();
    body.encode(&mut e).expect("ff device body encodes");
    e.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pnfs::MAX_LAYOUT_BODY;
    use pnfs_protocol::XdrDecode;
    use std::collections::BTreeSet;

    fn set(p: u32, mirrors: u32, first: u32) -> MirrorSet {
        MirrorSet { mirrors, segment_bytes: 4 << 20, generation: 7, first, ds: (0..p).map(|i| i * 2 + 1).collect() }
    }

    #[test]
    fn segments_use_distinct_data_servers_and_spread() {
        for p in 2..=9u32 {
            for mirrors in 2..=MAX_MIRRORS.min(p) {
                for first in [0, p - 1] {
                    let s = set(p, mirrors, first);
                    let mut readers = BTreeSet::new();
                    let mut load = vec![0u32; 2 * p as usize + 1];
                    for k in 0..(p as u64 * 3) {
                        let ds = s.segment_ds(k);
                        assert_eq!(ds.len(), mirrors as usize);
                        assert_eq!(ds.iter().collect::<BTreeSet<_>>().len(), ds.len(), "p {p} m {mirrors} k {k}: {ds:?}");
                        readers.insert(ds[0]);
                        ds.iter().for_each(|d| load[*d as usize] += 1);
                        if k < p as u64 {
                            assert_eq!(ds, s.segment_ds(k + p as u64), "period P");
                        }
                    }
                    // Every DS is some segment's read mirror, and writes land evenly.
                    assert_eq!(readers.len(), p as usize, "p {p} m {mirrors}");
                    let loads: BTreeSet<u32> = s.ds.iter().map(|d| load[*d as usize]).collect();
                    assert_eq!(loads.len(), 1, "p {p} m {mirrors}: uneven {load:?}");
                }
            }
        }
        // The example in the module doc: 4 DSes, 2 mirrors.
        let s = MirrorSet { ds: vec![0, 1, 2, 3], ..set(4, 2, 0) };
        let segs: Vec<Vec<u32>> = (0..4).map(|k| s.segment_ds(k)).collect();
        assert_eq!(segs, [[0, 2], [1, 3], [2, 0], [3, 1]]);
    }

    #[test]
    fn pieces_split_at_segment_ends() {
        let s = set(4, 2, 0);
        let seg = s.segment_bytes;
        let p = s.pieces(seg - 10, 30);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0], SegmentPiece { segment: 0, file_offset: seg - 10, buf_offset: 0, len: 10 });
        assert_eq!(p[1], SegmentPiece { segment: 1, file_offset: seg, buf_offset: 10, len: 20 });
        let big = s.pieces(5, 3 * seg as usize);
        assert_eq!(big.iter().map(|p| p.len).sum::<usize>(), 3 * seg as usize);
        assert_eq!(big.iter().map(|p| p.segment).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(s.pieces(0, 0).is_empty());
        assert_eq!(s.segment_range(3), (3 * seg, seg));
    }

    #[test]
    fn object_sizes_cover_what_each_data_server_holds() {
        let s = set(3, 2, 1);
        let seg = s.segment_bytes;
        for size in [0, 1, seg - 1, seg, seg + 1, 2 * seg + 5, 7 * seg, 7 * seg + 3] {
            for &d in &s.ds {
                // The last byte below `size` this DS holds ends its object.
                let want = (0..size.div_ceil(seg))
                    .filter(|k| s.segment_ds(*k).contains(&d))
                    .map(|k| ((k + 1) * seg).min(size))
                    .max()
                    .unwrap_or(0);
                assert_eq!(s.object_size(d, size), want, "DS {d} size {size}");
            }
            // Every byte's segment is held by `mirrors` DSes whose objects reach it.
            if size > 0 {
                let holders = s.ds.iter().filter(|d| s.object_size(**d, size) == size).count();
                assert_eq!(holders, 2, "size {size}");
            }
        }
        assert_eq!(s.object_size(99, 10 * seg), 0, "not in the pool");
    }

    #[test]
    fn records_round_trip_and_refuse_stripe_sets() {
        let s = set(5, 3, 4);
        assert_eq!(MirrorSet::decode(&s.encode()), Some(s.clone()));
        let stripe = crate::pnfs::StripeSet { stripe_unit: 1 << 20, first: 0, generation: 1, ds: vec![1, 2] };
        assert_eq!(MirrorSet::decode(&stripe.encode()), None);
        assert_eq!(crate::pnfs::StripeSet::decode(&s.encode()), None, "a mirror record is no stripe set");
        for bad in [
            MirrorSet { mirrors: 4, ..set(5, 3, 0) },
            MirrorSet { mirrors: 1, ..set(5, 3, 0) },
            MirrorSet { ds: vec![1, 2], ..set(5, 3, 0) },
            MirrorSet { first: 5, ..set(5, 3, 0) },
            MirrorSet { segment_bytes: 4096, ..set(5, 3, 0) },
            MirrorSet { ds: vec![1, 2, MAX_DATA_SERVERS as u32], ..set(5, 3, 0) },
        ] {
            assert_eq!(MirrorSet::decode(&bad.encode()), None, "{bad:?}");
        }
        let enc = s.encode();
        assert_eq!(MirrorSet::decode(&enc[..enc.len() - 1]), None, "truncated");
        assert_eq!(s.object_fh(0x0102030405060708), [b'D', 1, 0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 7]);
    }

    #[test]
    fn layout_body_round_trips() {
        let s = set(4, 3, 2);
        let key = TagKey::ephemeral();
        let sid = stateid4 { seqid: 0, other: [9; 12] };
        let b = s.layout_body(5, 42, &key, &sid, b"1000", b"100");
        assert!(b.len() <= MAX_LAYOUT_BODY, "{} bytes", b.len());
        let l = ff_layout4::decode(&mut Decoder::new(&b)).unwrap();
        assert_eq!(l.ffl_stripe_unit, 0);
        assert_eq!(l.ffl_flags, FF_FLAGS_NO_IO_THRU_MDS);
        assert_eq!(l.ffl_mirrors.len(), 3);
        let want = s.segment_ds(5);
        for (m, mirror) in l.ffl_mirrors.iter().enumerate() {
            assert_eq!(mirror.ffm_data_servers.len(), 1, "one DS per mirror (Linux 6.1)");
            let d = &mirror.ffm_data_servers[0];
            assert_eq!(ff_device_ds(&d.ffds_deviceid), Some(want[m]));
            assert_eq!(d.ffds_efficiency, 3 - m as u32);
            assert_eq!(d.ffds_stateid, sid);
            assert_eq!(d.ffds_fh_vers.len(), 1);
            assert_eq!(ds_handle::open(&key, &d.ffds_fh_vers[0]), Some(s.object_fh(42)), "sealed object handle");
            assert_eq!(&d.ffds_user[..], b"1000");
            assert_eq!(&d.ffds_group[..], b"100");
        }
    }

    #[test]
    fn device_bodies_round_trip() {
        let addrs = vec![("tcp".to_string(), "10.0.0.1.8.2".to_string()), ("tcp6".to_string(), "::1.8.2".to_string())];
        let b = ff_device_addr_body(&addrs, 1, 1 << 20, 1 << 20);
        let a = ff_device_addr4::decode(&mut Decoder::new(&b)).unwrap();
        assert_eq!(a.ffda_netaddrs.len(), 2);
        assert_eq!(&a.ffda_netaddrs[1].na_r_netid[..], b"tcp6");
        assert_eq!(&a.ffda_netaddrs[0].na_r_addr[..], b"10.0.0.1.8.2");
        assert_eq!(a.ffda_versions, vec![ff_device_versions4 { ffdv_version: 4, ffdv_minorversion: 1, ffdv_rsize: 1 << 20, ffdv_wsize: 1 << 20, ffdv_tightly_coupled: true }]);
        let b2 = ff_device_addr_body(&addrs, 2, 1 << 20, 1 << 20);
        let v2 = ff_device_addr4::decode(&mut Decoder::new(&b2)).unwrap();
        assert_eq!(v2.ffda_versions[0].ffdv_minorversion, 2, "a 4.2 client is told its own minor version");
        let b9 = ff_device_addr_body(&addrs, 9, 1 << 20, 1 << 20);
        let v9 = ff_device_addr4::decode(&mut Decoder::new(&b9)).unwrap();
        assert_eq!(v9.ffda_versions[0].ffdv_minorversion, 2);
        assert_eq!(ff_device_ds(&ff_deviceid(17)), Some(17));
        assert_eq!(ff_device_ds(&deviceid::encode(&[1, 2]).unwrap()), None, "a files-layout device of two DSes");
        assert_eq!(ff_device_ds(&[0; 16]), None);
    }

    #[test]
    fn policies_and_segment_lengths() {
        assert_eq!(LayoutPolicy::parse(" mirror2\n"), Some(LayoutPolicy::Mirror2));
        assert_eq!(LayoutPolicy::parse("mirror4"), None);
        for p in [LayoutPolicy::Stripe, LayoutPolicy::Mirror2, LayoutPolicy::Mirror3] {
            assert_eq!(LayoutPolicy::from_code(p.code()), Some(p));
        }
        assert!(check_segment_bytes(4 << 20).is_ok());
        for bad in [0, 64 << 10, (4 << 20) + 4096, (1 << 40) + (64 << 10)] {
            assert!(check_segment_bytes(bad).is_err(), "{bad}");
        }
    }
}

//! pNFS files layout helpers (RFC 8881 section 13): decoding the
//! `nfsv4_1_file_layout4` and `nfsv4_1_file_layout_ds_addr4` bodies, parsing
//! universal addresses, and mapping a file offset to the data server,
//! filehandle and object offset that hold it.

use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::{Decoder, XdrDecode};
use pnfs_protocol::mds_ds::uaddr;
use std::net::SocketAddr;

/// A decoded files layout (one `layout4` of type LAYOUT4_NFSV4_1_FILES).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    pub device_id: [u8; 16],
    pub stripe_unit: u64,
    pub dense: bool,
    pub commit_through_mds: bool,
    pub first_stripe_index: u32,
    pub pattern_offset: u64,
    /// One filehandle per stripe index, or a single one for all.
    pub fhs: Vec<Vec<u8>>,
}

/// A decoded device: stripe index -> index into `ds_lists`; each list holds
/// multipath (netid, universal address) pairs of one data server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAddrs {
    pub stripe_indices: Vec<u32>,
    pub ds_lists: Vec<Vec<(String, String)>>,
}

/// Where one file offset lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeLoc {
    /// Index into `nflda_stripe_indices` (j in RFC 8881 13.4.1).
    pub stripe_index: usize,
    /// Index into [`DeviceAddrs::ds_lists`].
    pub ds: usize,
    /// Index into [`FileLayout::fhs`].
    pub fh: usize,
    /// Offset in the data server's object.
    pub object_offset: u64,
    /// Bytes from the offset to the end of its stripe unit.
    pub unit_left: u64,
}

impl FileLayout {
    /// Decodes a `loc_body` of type LAYOUT4_NFSV4_1_FILES.
    pub fn decode(body: &[u8]) -> Result<FileLayout, String> {
        let l = nfsv4_1_file_layout4::decode(&mut Decoder::new(body)).map_err(|e| format!("files layout: {e}"))?;
        let unit = (l.nfl_util & NFL4_UFLG_STRIPE_UNIT_SIZE_MASK) as u64;
        if unit == 0 {
            return Err("files layout with stripe unit 0".into());
        }
        if l.nfl_fh_list.is_empty() {
            return Err("files layout without filehandles".into());
        }
        Ok(FileLayout {
            device_id: l.nfl_deviceid,
            stripe_unit: unit,
            dense: l.nfl_util & NFL4_UFLG_DENSE != 0,
            commit_through_mds: l.nfl_util & NFL4_UFLG_COMMIT_THRU_MDS != 0,
            first_stripe_index: l.nfl_first_stripe_index,
            pattern_offset: l.nfl_pattern_offset,
            fhs: l.nfl_fh_list.iter().map(|f| f.to_vec()).collect(),
        })
    }

    /// Checks the layout against its device (filehandle count, index ranges).
    pub fn check(&self, dev: &DeviceAddrs) -> Result<(), String> {
        let n = dev.stripe_indices.len();
        if n == 0 {
            return Err("device without stripe indices".into());
        }
        if self.fhs.len() != 1 && self.fhs.len() != n {
            return Err(format!("{} filehandles for {n} stripe indices", self.fhs.len()));
        }
        if let Some(i) = dev.stripe_indices.iter().find(|i| **i as usize >= dev.ds_lists.len()) {
            return Err(format!("stripe index points at data server {i} of {}", dev.ds_lists.len()));
        }
        if self.first_stripe_index as usize >= n {
            return Err(format!("first stripe index {} of {n}", self.first_stripe_index));
        }
        Ok(())
    }

    /// Maps `offset` (>= pattern offset) for a device with `stripe_count`
    /// stripe indices; None for offsets before the pattern offset.
    pub fn locate(&self, offset: u64, stripe_count: usize, stripe_indices: &[u32]) -> Option<StripeLoc> {
        let rel = offset.checked_sub(self.pattern_offset)?;
        let count = stripe_count as u64;
        if count == 0 {
            return None;
        }
        let su = self.stripe_unit;
        let stripe_number = rel / su;
        let j = ((stripe_number + self.first_stripe_index as u64) % count) as usize;
        let object_offset = if self.dense { (stripe_number / count) * su + rel % su } else { offset };
        Some(StripeLoc {
            stripe_index: j,
            ds: *stripe_indices.get(j)? as usize,
            fh: if self.fhs.len() == 1 { 0 } else { j },
            object_offset,
            unit_left: su - rel % su,
        })
    }
}

impl DeviceAddrs {
    /// Decodes a `da_addr_body` of type LAYOUT4_NFSV4_1_FILES.
    pub fn decode(body: &[u8]) -> Result<DeviceAddrs, String> {
        let d = nfsv4_1_file_layout_ds_addr4::decode(&mut Decoder::new(body)).map_err(|e| format!("device address: {e}"))?;
        Ok(DeviceAddrs {
            stripe_indices: d.nflda_stripe_indices.clone(),
            ds_lists: d
                .nflda_multipath_ds_list
                .iter()
                .map(|l| l.iter().map(|a| (a.na_r_netid.to_str_lossy().into_owned(), a.na_r_addr.to_str_lossy().into_owned())).collect())
                .collect(),
        })
    }

    /// The first TCP address of data server `ds` (multipath lists are
    /// alternatives for one server; the first usable one is taken).
    pub fn tcp_addr(&self, ds: usize) -> Option<SocketAddr> {
        self.ds_lists.get(ds)?.iter().find_map(|(n, a)| uaddr::parse_netaddr(n, a).ok())
    }
}

/// LAYOUTGET of a whole file's files layout (offset 0, length all), as the
/// Linux files layout driver asks; `sid` is the open, delegation or layout
/// stateid (or the current stateid after an OPEN in the same COMPOUND).
pub fn whole_file_layoutget(sid: stateid4, iomode: layoutiomode4, minlength: u64, maxcount: u32) -> nfs_argop4<'static> {
    layoutget(layouttype4::LAYOUT4_NFSV4_1_FILES, sid, iomode, 0, u64::MAX, minlength, maxcount)
}

/// LAYOUTGET of `layout_type` for the byte range [`offset`, `offset` +
/// `length`) (`length` u64::MAX: to the end of the file); the server may
/// answer a shorter range, at least `minlength` long from `offset`.
pub fn layoutget(
    layout_type: layouttype4,
    sid: stateid4,
    iomode: layoutiomode4,
    offset: u64,
    length: u64,
    minlength: u64,
    maxcount: u32,
) -> nfs_argop4<'static> {
    nfs_argop4::OP_LAYOUTGET(LAYOUTGET4args {
        loga_signal_layout_avail: false,
        loga_layout_type: layout_type,
        loga_iomode: iomode,
        loga_offset: offset,
        loga_length: length,
        loga_minlength: minlength,
        loga_stateid: sid,
        loga_maxcount: maxcount,
    })
}

/// LAYOUTRETURN of a whole file's files layouts of `iomode`.
pub fn whole_file_layoutreturn(sid: stateid4, iomode: layoutiomode4) -> nfs_argop4<'static> {
    whole_file_layoutreturn_of(layouttype4::LAYOUT4_NFSV4_1_FILES, sid, iomode)
}

/// LAYOUTRETURN of a whole file's layouts of `layout_type` and `iomode`
/// (an empty layout-type body: no error or statistics report).
pub fn whole_file_layoutreturn_of(layout_type: layouttype4, sid: stateid4, iomode: layoutiomode4) -> nfs_argop4<'static> {
    nfs_argop4::OP_LAYOUTRETURN(LAYOUTRETURN4args {
        lora_reclaim: false,
        lora_layout_type: layout_type,
        lora_iomode: iomode,
        lora_layoutreturn: layoutreturn4::LAYOUTRETURN4_FILE(layoutreturn_file4 {
            lrf_offset: 0,
            lrf_length: u64::MAX,
            lrf_stateid: sid,
            lrf_body: Vec::new().into(),
        }),
    })
}

/// LAYOUTCOMMIT after writes through a files layout up to byte `end`
/// (exclusive, > 0): the range [0, end), last write offset `end` - 1, no
/// mtime, an empty layout update.
pub fn layoutcommit_to(sid: stateid4, end: u64) -> nfs_argop4<'static> {
    layoutcommit_of(layouttype4::LAYOUT4_NFSV4_1_FILES, sid, end)
}

/// [`layoutcommit_to`] for a layout of `layout_type` (the flexfiles
/// layout update body is empty too, RFC 8435 section 5.2).
pub fn layoutcommit_of(layout_type: layouttype4, sid: stateid4, end: u64) -> nfs_argop4<'static> {
    nfs_argop4::OP_LAYOUTCOMMIT(LAYOUTCOMMIT4args {
        loca_offset: 0,
        loca_length: end,
        loca_reclaim: false,
        loca_stateid: sid,
        loca_last_write_offset: newoffset4::TRUE(end - 1),
        loca_time_modify: newtime4::FALSE,
        loca_layoutupdate: layoutupdate4 { lou_type: layout_type, lou_body: Vec::new().into() },
    })
}

/// Parses a universal address "h1.h2.h3.h4.p1.p2" (IPv4) or
/// "x:y::z.p1.p2" (IPv6) into a socket address (the MDS-DS contract's
/// `pnfs_protocol::mds_ds::uaddr`).
pub fn parse_uaddr(s: &str) -> Option<SocketAddr> {
    uaddr::parse(s).ok()
}

/// The universal address of `a` (inverse of [`parse_uaddr`]).
pub fn format_uaddr(a: &SocketAddr) -> String {
    uaddr::format(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::xdr::encode_to_vec;

    fn layout(dense: bool, first: u32, nfh: usize) -> FileLayout {
        FileLayout {
            device_id: [7; 16],
            stripe_unit: 65536,
            dense,
            commit_through_mds: false,
            first_stripe_index: first,
            pattern_offset: 0,
            fhs: (0..nfh).map(|i| vec![i as u8]).collect(),
        }
    }

    #[test]
    fn dense_mapping_rotates_from_the_first_stripe_index() {
        let l = layout(true, 1, 3);
        let idx = [2, 0, 1];
        let su = 65536;
        // stripe 0 -> j = 1, stripe 1 -> j = 2, stripe 2 -> j = 0, stripe 3 -> j = 1 again.
        let at = |off| l.locate(off, 3, &idx).unwrap();
        assert_eq!(at(0), StripeLoc { stripe_index: 1, ds: 0, fh: 1, object_offset: 0, unit_left: su });
        assert_eq!(at(su + 10), StripeLoc { stripe_index: 2, ds: 1, fh: 2, object_offset: 10, unit_left: su - 10 });
        assert_eq!(at(2 * su).stripe_index, 0);
        assert_eq!(at(2 * su).ds, 2);
        // Fourth unit: second row of the dense object.
        assert_eq!(at(3 * su + 5), StripeLoc { stripe_index: 1, ds: 0, fh: 1, object_offset: su + 5, unit_left: su - 5 });
        assert_eq!(at(7 * su).object_offset, 2 * su);
    }

    #[test]
    fn sparse_mapping_keeps_the_file_offset_and_single_fh() {
        let l = layout(false, 0, 1);
        let loc = l.locate(5 * 65536 + 3, 2, &[0, 1]).unwrap();
        assert_eq!(loc, StripeLoc { stripe_index: 1, ds: 1, fh: 0, object_offset: 5 * 65536 + 3, unit_left: 65533 });
    }

    #[test]
    fn pattern_offset_shifts_units() {
        let mut l = layout(true, 0, 2);
        l.pattern_offset = 4096;
        assert_eq!(l.locate(4095, 2, &[0, 1]), None);
        let loc = l.locate(4096 + 65536, 2, &[0, 1]).unwrap();
        assert_eq!((loc.stripe_index, loc.object_offset), (1, 0));
    }

    #[test]
    fn decode_and_check() {
        let body = nfsv4_1_file_layout4 {
            nfl_deviceid: [1; 16],
            nfl_util: (1 << 20) | NFL4_UFLG_DENSE,
            nfl_first_stripe_index: 1,
            nfl_pattern_offset: 0,
            nfl_fh_list: vec![b"a".as_slice().into(), b"b".as_slice().into()],
        };
        let l = FileLayout::decode(&encode_to_vec(&body).unwrap()).unwrap();
        assert_eq!((l.stripe_unit, l.dense, l.commit_through_mds, l.fhs.len()), (1 << 20, true, false, 2));
        let dev = nfsv4_1_file_layout_ds_addr4 {
            nflda_stripe_indices: vec![0, 1],
            nflda_multipath_ds_list: vec![
                vec![netaddr4 { na_r_netid: "tcp".into(), na_r_addr: "127.0.0.1.89.216".into() }],
                vec![
                    netaddr4 { na_r_netid: "rdma".into(), na_r_addr: "10.0.0.1.0.1".into() },
                    netaddr4 { na_r_netid: "tcp".into(), na_r_addr: "127.0.0.1.89.217".into() },
                ],
            ],
        };
        let d = DeviceAddrs::decode(&encode_to_vec(&dev).unwrap()).unwrap();
        l.check(&d).unwrap();
        assert_eq!(d.tcp_addr(0), Some("127.0.0.1:23000".parse().unwrap()));
        assert_eq!(d.tcp_addr(1), Some("127.0.0.1:23001".parse().unwrap()));
        let bad = DeviceAddrs { stripe_indices: vec![0, 5], ds_lists: d.ds_lists.clone() };
        assert!(l.check(&bad).is_err());
        assert!(FileLayout::decode(&[0, 1]).is_err());
    }

    #[test]
    fn uaddr_parsing() {
        assert_eq!(parse_uaddr("127.0.0.1.8.1"), Some("127.0.0.1:2049".parse().unwrap()));
        assert_eq!(parse_uaddr("::1.89.216"), Some("[::1]:23000".parse().unwrap()));
        assert_eq!(parse_uaddr("fe80::1:2.0.80"), Some("[fe80::1:2]:80".parse().unwrap()));
        for bad in ["", "127.0.0.1", "127.0.0.1.8", "127.0.0.1.256.1", "127.0.0.1.1.x", "host.1.2"] {
            assert_eq!(parse_uaddr(bad), None, "{bad}");
        }
        let a: SocketAddr = "10.1.2.3:20490".parse().unwrap();
        assert_eq!(parse_uaddr(&format_uaddr(&a)), Some(a));
    }
}

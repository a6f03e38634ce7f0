//! Layout bodies: the files-layout XDR a client gets from LAYOUTGET
//! (nfsv4_1_file_layout4) and GETDEVICEINFO (nfsv4_1_file_layout_ds_addr4).

use super::StripeSet;
use pnfs_protocol::mds_ds::ds_handle;
use pnfs_protocol::seal::TagKey;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode};

/// The Linux client's max_layoutget_response.
pub const MAX_LAYOUT_BODY: usize = 4096;

impl StripeSet {
    /// The nfsv4_1_file_layout4 body for file `ino`; its DS filehandles are
    /// sealed with `fh_key` (the data servers accept no others).
    pub fn layout_body(&self, ino: u64, fh_key: &TagKey) -> Vec<u8> {
        let fhs: Vec<[u8; ds_handle::SEALED_LEN]> = (0..self.count()).map(|j| ds_handle::seal(fh_key, &self.ds_fh(j, ino))).collect();
        let body = nfsv4_1_file_layout4 {
            nfl_deviceid: self.deviceid(),
            nfl_util: self.stripe_unit | NFL4_UFLG_DENSE,
            nfl_first_stripe_index: self.first,
            nfl_pattern_offset: 0,
            nfl_fh_list: fhs.iter().map(|f| nfs_fh4::borrowed(&f[..])).collect(),
        };
        let mut e = Encoder::new();
        body.encode(&mut e).expect("layout body encodes");
        e.into_inner()
    }
}

/// The nfsv4_1_file_layout_ds_addr4 body for a device (one multipath list per DS).
pub fn device_addr_body(lists: &[Vec<(String, String)>]) -> Vec<u8> {
    let body = nfsv4_1_file_layout_ds_addr4 {
        nflda_stripe_indices: (0..lists.len() as u32).collect(),
        nflda_multipath_ds_list: lists
            .iter()
            .map(|l| {
                l.iter()
                    .map(|(netid, addr)| netaddr4 { na_r_netid: netid.as_bytes().into(), na_r_addr: addr.as_bytes().into() })
                    .collect()
            })
            .collect(),
    };
    let mut e = Encoder::new();
    body.encode(&mut e).expect("device body encodes");
    e.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::mds_ds::{deviceid, MAX_DATA_SERVERS};
    use pnfs_protocol::{Decoder, XdrDecode};

    #[test]
    fn layout_body_fits_with_every_data_server() {
        let s = StripeSet { stripe_unit: 1 << 20, first: 7, generation: 1, ds: (0..MAX_DATA_SERVERS as u32).collect() };
        let key = TagKey::ephemeral();
        let b = s.layout_body(42, &key);
        assert!(b.len() <= MAX_LAYOUT_BODY, "{} bytes", b.len());
        let l = nfsv4_1_file_layout4::decode(&mut Decoder::new(&b)).unwrap();
        assert_eq!(l.nfl_fh_list.len(), MAX_DATA_SERVERS);
        assert_eq!(l.nfl_util & NFL4_UFLG_STRIPE_UNIT_SIZE_MASK, 1 << 20);
        assert_eq!(l.nfl_util & NFL4_UFLG_DENSE, NFL4_UFLG_DENSE);
        assert_eq!(l.nfl_pattern_offset, 0);
        assert_eq!(ds_handle::open(&key, &l.nfl_fh_list[3]), Some(s.ds_fh(3, 42)), "sealed DS handles");
        assert_eq!(deviceid::decode(&l.nfl_deviceid).unwrap().len(), MAX_DATA_SERVERS);
    }
}

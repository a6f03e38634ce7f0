//! FlexFile against two real data servers (no MDS: a stand-in hands out
//! the layouts): with a mirror2 layout every WRITE reaches both mirrors'
//! objects, READs go to the more efficient mirror, and go on from the other
//! one when that data server is gone; with segments alternating between
//! the data servers, a read of the whole file crosses objects that end
//! before the file does.

#[path = "../../../dataplane/tests/common/mod.rs"]
mod common;

use common::{config_without_mds, create_and_allow, RW};
use pnfs_client::flexfiles::{FlexFile, LayoutSource};
use pnfs_client::layout::format_uaddr;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::xdr::encode_to_vec;
use pnfs_client::{Client, LayoutSegment, Result};
use pnfs_ds::DsFh;
use std::net::SocketAddr;
use std::time::Duration;

/// One mirror's data server: id, address, sealed object handle, efficiency.
struct Mirror {
    id: [u8; 16],
    addr: SocketAddr,
    fh: Vec<u8>,
    efficiency: u32,
}

/// Hands out one segment [0, EOF) with a mirror per data server, or
/// (`segment` set) segments of that length, segment k with one mirror on
/// data server k % count.
struct StandIn {
    mirrors: Vec<Mirror>,
    segment: Option<u64>,
    layoutgets: u32,
    commits: Vec<u64>,
}

impl LayoutSource for StandIn {
    fn layoutget(&mut self, _fh: &[u8], sid: &stateid4, iomode: layoutiomode4, off: u64, _len: u64) -> Result<(stateid4, Vec<LayoutSegment>)> {
        self.layoutgets += 1;
        let (offset, length, mirrors) = match self.segment {
            None => (0, u64::MAX, &self.mirrors[..]),
            Some(len) => {
                let k = off / len;
                let m = (k % self.mirrors.len() as u64) as usize;
                (k * len, len, &self.mirrors[m..m + 1])
            }
        };
        let l = ff_layout4 {
            ffl_stripe_unit: 0,
            ffl_mirrors: mirrors
                .iter()
                .map(|m| ff_mirror4 {
                    ffm_data_servers: vec![ff_data_server4 {
                        ffds_deviceid: m.id,
                        ffds_efficiency: m.efficiency,
                        ffds_stateid: stateid4 { seqid: 1, other: RW },
                        ffds_fh_vers: vec![m.fh.clone().into()],
                        ffds_user: b"0".as_slice().into(),
                        ffds_group: b"0".as_slice().into(),
                    }],
                })
                .collect(),
            ffl_flags: FF_FLAGS_NO_IO_THRU_MDS,
            ffl_stats_collect_hint: 0,
        };
        let seg = LayoutSegment {
            offset,
            length,
            iomode,
            layout_type: layouttype4::LAYOUT4_FLEX_FILES,
            body: encode_to_vec(&l).unwrap(),
        };
        Ok((stateid4 { seqid: sid.seqid + 1, other: [3; 12] }, vec![seg]))
    }

    fn getdeviceinfo(&mut self, id: [u8; 16]) -> Result<Vec<u8>> {
        let m = self.mirrors.iter().find(|m| m.id == id).expect("known device");
        let d = ff_device_addr4 {
            ffda_netaddrs: vec![netaddr4 { na_r_netid: "tcp".into(), na_r_addr: format_uaddr(&m.addr).into_bytes().into() }],
            ffda_versions: vec![ff_device_versions4 {
                ffdv_version: 4,
                ffdv_minorversion: 1,
                ffdv_rsize: 1 << 20,
                ffdv_wsize: 1 << 20,
                ffdv_tightly_coupled: true,
            }],
        };
        Ok(encode_to_vec(&d).unwrap())
    }

    fn connect_ds(&mut self, addr: SocketAddr) -> Result<Client> {
        let mut c = Client::connect(addr, 1)?;
        c.set_timeout(Duration::from_secs(5));
        c.set_retry_for(Duration::from_secs(2));
        Ok(c)
    }

    fn layoutcommit(&mut self, _fh: &[u8], _sid: &stateid4, end: u64) -> Result<()> {
        self.commits.push(end);
        Ok(())
    }

    fn layoutreturn(&mut self, _fh: &[u8], _sid: &stateid4) -> Result<()> {
        Ok(())
    }

    /// The size LAYOUTCOMMIT told (what an MDS learns from it).
    fn size(&mut self, _fh: &[u8]) -> Result<u64> {
        Ok(self.commits.iter().copied().max().unwrap_or(0))
    }
}

/// Two data servers with object `dfh` created and the stateid allowed.
fn two_data_servers(dirs: &[tempfile::TempDir; 2], dfh: &DsFh) -> (Vec<pnfs_ds::DsHandle>, Vec<Mirror>) {
    let handles: Vec<pnfs_ds::DsHandle> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| pnfs_ds::run(config_without_mds(&format!("m{i}"), d.path())).unwrap())
        .collect();
    let mut mirrors = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        let fh = dfh.seal(&h.ds().fh_key).to_vec();
        create_and_allow(h, &fh);
        // Mirror 1 is the more efficient one: reads go there first.
        mirrors.push(Mirror { id: [i as u8 + 1; 16], addr: h.nfs_addr(), fh, efficiency: i as u32 + 1 });
    }
    (handles, mirrors)
}

#[test]
fn mirrored_writes_reach_every_mirror_and_reads_fail_over() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let dfh = DsFh { stripe: 0, ino: 4242, generation: 1 };
    let (handles, mirrors) = two_data_servers(&dirs, &dfh);
    let mut mds = StandIn { mirrors, segment: None, layoutgets: 0, commits: vec![] };
    let data = common::pattern(7, 3 * common::MIB + 5);
    let open = stateid4 { seqid: 1, other: [8; 12] };
    let mut f = FlexFile::new(b"mds-fh", &open, layoutiomode4::LAYOUTIOMODE4_RW);
    f.write(&mut mds, 0, &data, stable_how4::UNSTABLE4).unwrap();
    f.commit(&mut mds).unwrap();
    assert_eq!(mds.layoutgets, 1, "one segment covers the file");
    assert_eq!(mds.commits, vec![data.len() as u64], "LAYOUTCOMMIT up to the end written");
    for (i, (h, d)) in handles.iter().zip(&dirs).enumerate() {
        assert_eq!(h.stats().bytes_written, data.len() as u64, "mirror {i} received the whole file");
        let obj = std::fs::read(d.path().join("objects").join(dfh.object_name())).unwrap();
        assert!(obj == data, "mirror {i}'s object holds the file's bytes at file offsets");
    }

    let back = f.read_all(&mut mds, 0, data.len()).unwrap();
    assert!(back == data);
    assert_eq!(handles[0].stats().bytes_read, 0, "the less efficient mirror was not read");
    assert_eq!(handles[1].stats().bytes_read, data.len() as u64);
    assert_eq!(f.read_failovers, 0);

    // The preferred mirror's data server goes away: reads go on from the other.
    let mut handles = handles;
    let gone = handles.pop().unwrap();
    gone.shutdown();
    gone.join();
    let back = f.read_all(&mut mds, common::MIB as u64, data.len()).unwrap();
    assert!(back == data[common::MIB..]);
    assert!(f.read_failovers > 0);
    assert_eq!(handles[0].stats().bytes_read, (data.len() - common::MIB) as u64);
    // A write needs every mirror: it fails while one is gone.
    assert!(f.write(&mut mds, 0, &data[..4096], stable_how4::FILE_SYNC4).is_err());
    f.return_layouts(&mut mds).unwrap();
    assert_eq!(f.segments().len(), 0);
}

#[test]
fn a_whole_file_read_crosses_objects_that_end_before_the_file() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let dfh = DsFh { stripe: 0, ino: 4243, generation: 1 };
    let (_handles, mirrors) = two_data_servers(&dirs, &dfh);
    let mib = common::MIB as u64;
    let mut mds = StandIn { mirrors, segment: Some(mib), layoutgets: 0, commits: vec![] };
    let mut f = FlexFile::new(b"mds-fh", &stateid4 { seqid: 1, other: [8; 12] }, layoutiomode4::LAYOUTIOMODE4_RW);
    // Segments 0 and 2 on the first data server, 1 and 3 on the second;
    // segment 4 never written (a hole), segment 5 half.
    let head = common::pattern(3, 3 * common::MIB + common::MIB / 2);
    let tail = common::pattern(4, common::MIB / 2);
    f.write(&mut mds, 0, &head, stable_how4::FILE_SYNC4).unwrap();
    f.write(&mut mds, 5 * mib, &tail, stable_how4::FILE_SYNC4).unwrap();
    f.commit(&mut mds).unwrap();
    assert_eq!(mds.commits, vec![5 * mib + mib / 2]);
    assert_eq!(f.layoutgets, 5, "one LAYOUTGET per segment written (0, 1, 2, 3, 5)");
    let mut want = head.clone();
    want.resize(5 * common::MIB, 0);
    want.extend_from_slice(&tail);
    // The first data server's object ends at 3 MiB (segment 2), the
    // second's at 5.5 MiB: each says EOF long before the file's end.
    let got = f.read_all(&mut mds, 0, 64 * common::MIB).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the file read back across both objects, the hole as zeros");
    assert_eq!(f.layoutgets, 6, "reading fetched the hole's segment too");
}

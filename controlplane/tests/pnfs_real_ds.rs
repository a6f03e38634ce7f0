//! The MDS with two real data servers (pnfs-ds, in-process): they register,
//! a client gets a layout and the device info, writes stripes straight to
//! the data servers with the DS filehandles and its open stateid (tight
//! coupling: the MDS pushed it), commits them there, LAYOUTCOMMITs, and
//! reads the file back through the MDS (which reads the DS objects).

use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::{Decoder, XdrDecode};
use pnfs_client::layout::layoutcommit_to;
use pnfs_client::Client;
use pnfs_client::pnfs_protocol::mds_ds::uaddr;
use std::net::SocketAddr;

mod common;

const SU: u64 = 64 * 1024;

fn start_mds(dir: &std::path::Path) -> (SocketAddr, SocketAddr) {
    common::start_pnfs_mds(dir, &format!("stripe_unit = {SU}"))
}

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() })
}

#[test]
fn client_writes_stripes_to_real_data_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let handles: Vec<_> = (0..2).map(|i| common::start_ds(dir.path(), &format!("ds{i}"), ctl_addr)).collect();
    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    let (fh, open_sid) = c.open(&root, "f", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let sid0 = stateid4 { seqid: 0, other: open_sid.other };
    // Wait until both data servers registered (a heartbeat is then known).
    (0..2).for_each(|i| common::wait_registered(dir.path(), ctl_addr, &format!("ds{i}")));
    let (lsid, body) = c.layoutget(&fh, &sid0, layoutiomode4::LAYOUTIOMODE4_RW).unwrap();
    let layout = nfsv4_1_file_layout4::decode(&mut Decoder::new(&body)).unwrap();
    assert_eq!(layout.nfl_fh_list.len(), 2, "striped over both data servers");
    let dev = c.getdeviceinfo(layout.nfl_deviceid).unwrap();
    let dev = nfsv4_1_file_layout_ds_addr4::decode(&mut Decoder::new(&dev)).unwrap();
    let ds_addrs: Vec<SocketAddr> = dev
        .nflda_multipath_ds_list
        .iter()
        .map(|l| uaddr::parse(&String::from_utf8(l[0].na_r_addr.to_vec()).unwrap()).unwrap())
        .collect();
    // The same client owner as with the MDS: the DS checks the stateid is ours.
    let mut ds_clients: Vec<Client> = ds_addrs.iter().map(|a| Client::connect_as(a, &c).unwrap()).collect();

    // Write 3 stripe units + a bit, as the Linux files layout driver would.
    let data: Vec<u8> = (0..(3 * SU as usize + 1000)).map(|i| (i % 253) as u8).collect();
    let first = layout.nfl_first_stripe_index as u64;
    let mut off = 0u64;
    while (off as usize) < data.len() {
        let n = (SU - off % SU).min(data.len() as u64 - off) as usize;
        let j = ((off / SU + first) % 2) as usize;
        let obj = (off / (SU * 2)) * SU + off % SU;
        let dsi = dev.nflda_stripe_indices[j] as usize;
        let ops = vec![
            putfh(&layout.nfl_fh_list[j]),
            nfs_argop4::OP_WRITE(WRITE4args {
                stateid: sid0.clone(),
                offset: obj,
                stable: stable_how4::UNSTABLE4,
                data: data[off as usize..off as usize + n].to_vec().into(),
            }),
        ];
        ds_clients[dsi].compound_ok(ops, |_| Ok(())).unwrap();
        off += n as u64;
    }
    for (j, fhj) in layout.nfl_fh_list.iter().enumerate() {
        let dsi = dev.nflda_stripe_indices[j] as usize;
        ds_clients[dsi]
            .compound_ok(vec![putfh(fhj), nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 })], |_| Ok(()))
            .unwrap();
    }
    // LAYOUTCOMMIT sets the size on the MDS.
    c.compound_ok(vec![putfh(&fh), layoutcommit_to(lsid.clone(), data.len() as u64)], |_| Ok(())).unwrap();
    assert_eq!(c.getattr_size(&fh).unwrap(), data.len() as u64);
    // The MDS reads the stripes back from the data servers.
    let back = c.read_upto(&fh, &sid0, data.len(), 100_000).unwrap();
    assert!(back == data, "data read through the MDS differs");
    // After CLOSE the data servers refuse the open stateid.
    c.close(&fh, &open_sid).unwrap();
    let ops = vec![
        putfh(&layout.nfl_fh_list[0]),
        nfs_argop4::OP_WRITE(WRITE4args { stateid: sid0.clone(), offset: 0, stable: stable_how4::UNSTABLE4, data: vec![1u8].into() }),
    ];
    let dsi = dev.nflda_stripe_indices[0] as usize;
    let st = ds_clients[dsi].compound(ops).unwrap().status().unwrap();
    assert_ne!(st, nfsstat4::NFS4_OK, "DS accepted a closed open stateid");
    for h in handles {
        h.shutdown();
    }
}

/// A data server bound only to the IPv6 loopback registers a `tcp6`
/// universal address; the device address a client gets names it, and the
/// client writes a stripe there that the MDS reads back (over the DS's
/// IPv6 control address).
#[test]
fn data_server_on_ipv6_loopback() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1]: {e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let mut cfg = common::ds_config(dir.path(), "ds6", ctl_addr);
    cfg.bind = "[::1]:0".parse().unwrap();
    cfg.control_bind = "[::1]:0".parse().unwrap();
    cfg.validate().unwrap();
    let handle = pnfs_ds::run(cfg).unwrap();
    common::wait_registered(dir.path(), ctl_addr, "ds6");

    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    let (fh, open_sid) = c.open(&root, "v6", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let sid0 = stateid4 { seqid: 0, other: open_sid.other };
    let (lsid, body) = c.layoutget(&fh, &sid0, layoutiomode4::LAYOUTIOMODE4_RW).unwrap();
    let layout = nfsv4_1_file_layout4::decode(&mut Decoder::new(&body)).unwrap();
    let dev = c.getdeviceinfo(layout.nfl_deviceid).unwrap();
    let dev = nfsv4_1_file_layout_ds_addr4::decode(&mut Decoder::new(&dev)).unwrap();
    let na = &dev.nflda_multipath_ds_list[0][0];
    let (netid, ua) = (std::str::from_utf8(&na.na_r_netid).unwrap(), std::str::from_utf8(&na.na_r_addr).unwrap());
    assert_eq!(netid, "tcp6", "device address {ua:?}");
    let ds_addr = uaddr::parse_netaddr(netid, ua).unwrap();
    assert_eq!(ds_addr.ip(), "::1".parse::<std::net::IpAddr>().unwrap());
    assert!(ua.starts_with("::1."), "{ua:?}");

    let mut ds = Client::connect_as(ds_addr, &c).unwrap();
    let data: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
    let write = vec![
        putfh(&layout.nfl_fh_list[0]),
        nfs_argop4::OP_WRITE(WRITE4args { stateid: sid0.clone(), offset: 0, stable: stable_how4::FILE_SYNC4, data: data.clone().into() }),
    ];
    ds.compound_ok(write, |_| Ok(())).unwrap();
    c.compound_ok(vec![putfh(&fh), layoutcommit_to(lsid, data.len() as u64)], |_| Ok(())).unwrap();
    // The MDS finds the bytes on the data server (control calls over IPv6).
    let (back, _) = c.read(&fh, &sid0, 0, data.len() as u32).unwrap();
    assert!(back == data, "data read through the MDS differs");
    c.close(&fh, &open_sid).unwrap();
    handle.shutdown();
}

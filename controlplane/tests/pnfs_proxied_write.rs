//! A WRITE through the MDS to a file striped on a real data server, then the
//! data server restarted before COMMIT. The client may only have been told
//! UNSTABLE4 if the COMMIT's verifier now differs from the WRITE's (so it
//! resends); otherwise the reply must have been FILE_SYNC4 and the bytes
//! must be there after the restart. The MDS used to answer UNSTABLE4 with
//! its own verifier while the bytes sat unsynced on the DS: a DS crash lost
//! them and the client, seeing the same verifier at COMMIT, never resent.

use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::Client;
use std::net::SocketAddr;
use std::time::Duration;

mod common;

fn start_mds(dir: &std::path::Path) -> (SocketAddr, SocketAddr) {
    common::start_pnfs_mds(dir, "stripe_unit = 65536")
}

fn ds_config(dir: &std::path::Path, ctl: SocketAddr, bind: SocketAddr, control_bind: SocketAddr) -> pnfs_ds::config::DsConfig {
    let mut cfg = common::ds_config(dir, "ds0", ctl);
    cfg.bind = bind;
    cfg.control_bind = control_bind;
    cfg
}

#[test]
fn proxied_unstable_write_survives_a_ds_restart_or_changes_the_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let ds = pnfs_ds::run(ds_config(dir.path(), ctl_addr, any, any)).unwrap();
    let (ds_nfs, ds_ctl) = (ds.nfs_addr(), ds.control_addr());
    common::wait_registered(dir.path(), ctl_addr, "ds0");

    let mut c = Client::connect(nfs_addr, 1).unwrap();
    c.set_timeout(Duration::from_secs(20));
    let root = c.lookup_path("/export").unwrap();
    let (fh, sid) = c.open(&root, "f", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let ops = vec![
        nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.as_slice().into() }),
        nfs_argop4::OP_WRITE(WRITE4args { stateid: sid.clone(), offset: 0, stable: stable_how4::UNSTABLE4, data: data.clone().into() }),
    ];
    let (committed, write_verf) = c
        .compound_ok(ops, |r| match &r[1] {
            nfs_resop4::OP_WRITE(WRITE4res::NFS4_OK(ok)) => {
                assert_eq!(ok.count as usize, data.len());
                Ok((ok.committed, ok.writeverf))
            }
            other => panic!("WRITE through the MDS: {other:?}"),
        })
        .unwrap();
    // The bytes went to the data server, not to the MDS's local store.
    assert!(ds.stats().control_bytes_written >= data.len() as u64, "the MDS kept the data itself");

    // The data server goes away before any COMMIT and comes back on the
    // same addresses, as after a crash and restart.
    ds.shutdown();
    ds.join();
    let ds = pnfs_ds::run(ds_config(dir.path(), ctl_addr, ds_nfs, ds_ctl)).unwrap();
    common::wait_registered(dir.path(), ctl_addr, "ds0");

    if committed == stable_how4::UNSTABLE4 {
        let ops = vec![
            nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.as_slice().into() }),
            nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 }),
        ];
        let commit_verf = c
            .compound_ok(ops, |r| match &r[1] {
                nfs_resop4::OP_COMMIT(COMMIT4res::NFS4_OK(ok)) => Ok(ok.writeverf),
                other => panic!("COMMIT: {other:?}"),
            })
            .unwrap();
        assert_ne!(
            commit_verf, write_verf,
            "WRITE answered UNSTABLE4 and the COMMIT after the data server restarted has the same verifier: \
             the client would never resend bytes the data server may have lost"
        );
    } else {
        assert_eq!(committed, stable_how4::FILE_SYNC4, "a WRITE that is not UNSTABLE4 must be FILE_SYNC4 here");
        let back = c.read_upto(&fh, &sid, data.len(), 100_000).unwrap();
        assert!(back == data, "FILE_SYNC4 data read back after the data server restarted differs");
    }
    ds.shutdown();
}

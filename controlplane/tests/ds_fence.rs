//! A data server serving an MDS cluster: two MDS nodes (node 1 and node 2,
//! `Pnfs` instances on one metadata store, each with its control listener)
//! and one real data server registered with both (`ds.mds_control` lists
//! both). Both push stateids; node 2 fences node 1 (`Pnfs::fence_node`):
//! node 1's open control connection is closed, its calls are refused (it
//! cannot fence back either), node 2's still work, the stateids node 1
//! pushed stay usable (cluster state outlives its node), and node 1
//! restarted with a newer boot count is accepted again. A fence does not
//! wait for a data server that is down, and that data server, restarted,
//! gets the fence again as it registers with node 2. A node switching to a
//! new epoch in place (`Pnfs::use_epoch`) is accepted and supersedes the
//! older one.

use pnfs_client::pnfs_protocol::control_auth::{CallSigner, ControlKeys};
use pnfs_client::pnfs_protocol::mds_ds::epoch::control_epoch;
use pnfs_client::pnfs_protocol::seal::ClusterKey;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::{Decoder, Encoder, XdrDecode, XdrEncode};
use pnfs_client::Client;
use pnfs_ds::DsFh;
use pnfs_kv::{KvStore, MemStore};
use pnfs_mds::pnfs::{client as ctl, registry, Pnfs, PnfsConfig};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE1_BOOT: u64 = 3;
const NODE2_BOOT: u64 = 4;

/// MDS node `node_id` at boot `boot` on `store`, its control listener
/// served on a thread of its own; returns it and that listener's address.
fn start_node(store: &Arc<dyn KvStore>, key: &Path, node_id: u32, boot: u64) -> (Arc<Pnfs>, SocketAddr) {
    let pcfg = PnfsConfig::striped(65536, 0, Duration::from_secs(10));
    let pnfs = Pnfs::new(pcfg, store.clone(), control_epoch(node_id, boot), ClusterKey::load(key).unwrap()).unwrap();
    let addr = registry::serve_control_on_thread(pnfs.clone()).unwrap();
    (pnfs, addr)
}

fn start_ds(dir: &Path, key: &Path, nodes: &[SocketAddr]) -> pnfs_ds::DsHandle {
    let mut cfg = pnfs_ds::config::DsConfig::new("ds0", dir.join("ds0"), &nodes[0].to_string());
    cfg.mds_control = nodes.iter().map(|a| a.to_string()).collect();
    cfg.cluster_key_file = Some(key.to_path_buf());
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.control_bind = "127.0.0.1:0".parse().unwrap();
    cfg.reactors = 1;
    cfg.o_direct = false;
    pnfs_ds::run(cfg).unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(body: io::Result<Vec<u8>>) -> io::Result<ctl_status> {
    Ok(ctl_res::decode(&mut Decoder::new(&body?)).unwrap().cr_status)
}

/// STATEID_ALLOW of `other` (any client) on `fh` from node `p`.
fn allow(p: &Pnfs, ds: &str, other: [u8; 12], fh: &[u8]) -> io::Result<ctl_status> {
    let a = ctl_stateid_args {
        csa_stateid: stateid4 { seqid: 1, other },
        csa_clientid: 0,
        csa_fh: fh.into(),
        csa_access: OPEN4_SHARE_ACCESS_BOTH,
    };
    status(p.ctl.call(ds, PNFSCTL_DS_PROGRAM, CTL_PROC_STATEID_ALLOW, &a))
}

fn encode<T: XdrEncode>(a: &T) -> Vec<u8> {
    let mut e = Encoder::new();
    a.encode(&mut e).unwrap();
    e.into_inner()
}

/// A client WRITE of 4 bytes at 0 on the DS through stateid `other`.
fn write(c: &mut Client, fh: &[u8], other: [u8; 12]) -> nfsstat4 {
    let ops = vec![
        nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() }),
        nfs_argop4::OP_WRITE(WRITE4args { stateid: stateid4 { seqid: 0, other }, offset: 0, stable: stable_how4::FILE_SYNC4, data: b"data".to_vec().into() }),
    ];
    c.compound(ops).unwrap().status().unwrap()
}

#[test]
fn a_node_fenced_by_another_is_refused_and_rejoins_with_a_new_boot() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
    let (n1, a1) = start_node(&store, &key, 1, NODE1_BOOT);
    let (n2, a2) = start_node(&store, &key, 2, NODE2_BOOT);
    let h = start_ds(dir.path(), &key, &[a1, a2]);
    // The DS registers with both nodes; they agree on its index (the store's).
    wait_for("the DS registered with both nodes", || n1.registry.live().len() == 1 && n2.registry.live().len() == 1);
    assert_eq!((n1.registry.live()[0].index, n2.registry.live()[0].id.as_slice()), (0, b"ds0".as_slice()));
    let ds = n2.registry.live()[0].control_addr.clone();
    assert_eq!(ds, h.control_addr().to_string());
    let ds_epochs = &h.ds().epochs;
    wait_for("both nodes' epochs seen", || ds_epochs.newest(1) == control_epoch(1, NODE1_BOOT) && ds_epochs.newest(2) == control_epoch(2, NODE2_BOOT));

    // Both nodes push: node 1 creates the object and allows stateid A,
    // node 2 allows stateid B; a client writes through either.
    let fh = DsFh { stripe: 0, ino: 9, generation: 1 }.seal(&h.ds().fh_key);
    let obj = ctl_obj_args { coa_fh: fh.as_slice().into() };
    assert_eq!(status(n1.ctl.call(&ds, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_CREATE, &obj)).unwrap(), ctl_status::CTL_OK);
    let (sid_a, sid_b, sid_c) = ([0xa; 12], [0xb; 12], [0xc; 12]);
    assert_eq!(allow(&n1, &ds, sid_a, &fh).unwrap(), ctl_status::CTL_OK);
    assert_eq!(allow(&n2, &ds, sid_b, &fh).unwrap(), ctl_status::CTL_OK);
    let mut c = Client::connect(h.nfs_addr(), 1).unwrap();
    assert_eq!(write(&mut c, &fh, sid_a), nfsstat4::NFS4_OK);
    assert_eq!(write(&mut c, &fh, sid_b), nfsstat4::NFS4_OK);

    // A control connection of node 1, open and idle when the fence comes.
    let mut idle = ctl::connect(&ds).unwrap();
    let mut signer = CallSigner::new(ControlKeys::new(&ClusterKey::load(&key).unwrap()), control_epoch(1, NODE1_BOOT));
    ctl::call_on(&mut idle, &mut signer, 1, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_STAT, &encode(&obj)).unwrap();

    // Node 2 fences node 1's start.
    let t = Instant::now();
    assert_eq!(n2.fence_node(1, control_epoch(1, NODE1_BOOT)), Ok(()));
    eprintln!("fence_node acknowledged by the data server in {:?}", t.elapsed());
    assert_eq!(h.stats().control_fences, 1);
    // Its open connection is closed without a call on it...
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(idle.read(&mut [0u8; 64]).unwrap(), 0, "the fenced node's idle connection is closed");
    // ...and its calls are refused: a push, and a fence of its fencer.
    let refused = allow(&n1, &ds, sid_c, &fh).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied, "{refused}");
    assert!(n1.fence_node(2, control_epoch(2, NODE2_BOOT)).is_err());
    let refused_before = h.stats().control_refused;
    assert!(refused_before >= 2, "{refused_before}");
    // Node 2 goes on; what node 1 pushed stays allowed (its clients'
    // state outlives it in a cluster: another node adopts them).
    assert_eq!(allow(&n2, &ds, sid_c, &fh).unwrap(), ctl_status::CTL_OK);
    assert_eq!(write(&mut c, &fh, sid_a), nfsstat4::NFS4_OK);
    assert_eq!(write(&mut c, &fh, sid_c), nfsstat4::NFS4_OK);
    // Fencing again is harmless; node 2 cannot fence itself.
    assert_eq!(n2.fence_node(1, control_epoch(1, NODE1_BOOT)), Ok(()));
    assert!(n2.fence_node(2, control_epoch(2, NODE2_BOOT)).is_err());

    // Node 1 restarted (the shared boot counter gave it 9): accepted again;
    // its old start stays refused.
    let (n1b, _) = start_node(&store, &key, 1, 9);
    assert_eq!(allow(&n1b, &ds, [0xd; 12], &fh).unwrap(), ctl_status::CTL_OK);
    assert_eq!(allow(&n1, &ds, [0xe; 12], &fh).unwrap_err().kind(), io::ErrorKind::PermissionDenied);

    // The DS restarts (a new process: empty tables) and registers again:
    // node 2 fences node 1's old start there before anything else.
    h.shutdown();
    h.join();
    // Meanwhile, with the DS gone (its port refuses connections) though it
    // heartbeated lately, a fence does not wait for it.
    let t = Instant::now();
    assert_eq!(n2.fence_node(1, control_epoch(1, NODE1_BOOT)), Ok(()));
    assert!(t.elapsed() < pnfs_mds::pnfs::fence::FENCE_TIMEOUT, "{:?}", t.elapsed());
    eprintln!("fence_node with the only data server down returned in {:?}", t.elapsed());
    let h = start_ds(dir.path(), &key, &[a1, a2]);
    wait_for("the restarted DS fenced again by node 2", || h.stats().control_fences == 1);
    let ds = h.control_addr().to_string();
    assert_eq!(allow(&n1, &ds, [0xf; 12], &fh).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(allow(&n1b, &ds, [0xf; 12], &fh).unwrap(), ctl_status::CTL_OK);
    // The fenced node rejoining in place with a new boot count (its lease
    // lost, then regained): from its next call on it speaks for that epoch.
    n1.use_epoch(control_epoch(1, 11));
    assert_eq!(allow(&n1, &ds, [0x11; 12], &fh).unwrap(), ctl_status::CTL_OK);
    assert_eq!(allow(&n1b, &ds, [0x12; 12], &fh).unwrap_err().kind(), io::ErrorKind::PermissionDenied, "boot 9 superseded by 11");
    h.shutdown();
    h.join();
}

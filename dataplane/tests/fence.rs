//! CTL_PROC_FENCE on the wire, from control callers speaking for MDS
//! cluster nodes 1 and 2 (signed with the cluster key like the MDS's
//! calls): invalid fences are answered CTL_INVAL and change nothing; a
//! valid one refuses the fenced node's calls from then on, not the others'.

mod common;

use pnfs_client::pnfs_protocol;
use pnfs_ds::mds_link::CtlClient;
use pnfs_ds::DsFh;
use pnfs_protocol::mds_ds::epoch::control_epoch;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Opaque, XdrDecode};
use std::io;
use std::time::Duration;

fn node(h: &pnfs_ds::DsHandle, epoch: u64) -> CtlClient {
    CtlClient::connect(&h.control_addr().to_string(), Duration::from_secs(2), h.ds().control_keys.clone(), epoch).unwrap()
}

fn fence(c: &mut CtlClient, node_id: u32, epoch: u64) -> io::Result<ctl_status> {
    let body = c.call(PNFSCTL_DS_PROGRAM, CTL_PROC_FENCE, &ctl_fence_args { cfa_node_id: node_id, cfa_epoch: epoch })?;
    Ok(ctl_res::decode(&mut Decoder::new(&body)).unwrap().cr_status)
}

#[test]
fn fence_rules_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let h = pnfs_ds::run(common::config_without_mds("fenced", dir.path())).unwrap();
    let (e1, e2) = (control_epoch(1, 3), control_epoch(2, 4));
    let (mut n1, mut n2, mut single) = (node(&h, e1), node(&h, e2), node(&h, 7));
    let fh = DsFh { stripe: 0, ino: 4, generation: 1 }.seal(&h.ds().fh_key);
    let obj = ctl_obj_args { coa_fh: Opaque::borrowed(&fh) };
    for c in [&mut n1, &mut n2, &mut single] {
        assert_eq!(common::ctl_call(c, CTL_PROC_OBJ_CREATE, &obj), ctl_status::CTL_OK);
    }
    // Invalid: one's own node, node 0, an epoch of another node, a node
    // beyond the limit, a caller that is no cluster node.
    for (caller, node_id, epoch) in [(1, 1, e1), (2, 0, 7), (2, 1, control_epoch(3, 1)), (2, 40, control_epoch(40, 1)), (0, 1, e1)] {
        let c = match caller {
            1 => &mut n1,
            2 => &mut n2,
            _ => &mut single,
        };
        assert_eq!(fence(c, node_id, epoch).unwrap(), ctl_status::CTL_INVAL, "node {node_id} epoch {epoch:#x}");
    }
    assert_eq!(h.stats().control_fences, 0);
    assert_eq!(common::ctl_call(&mut n1, CTL_PROC_OBJ_COMMIT, &obj), ctl_status::CTL_OK, "nothing fenced");
    // Node 2 fences node 1: node 1's next call is refused (AUTH_ERROR) and
    // its connection closed; node 2 and the single MDS go on.
    assert_eq!(fence(&mut n2, 1, e1).unwrap(), ctl_status::CTL_OK);
    assert_eq!(h.stats().control_fences, 1);
    let e = n1.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_COMMIT, &obj).unwrap_err();
    assert!(matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset), "{e}");
    let e = node(&h, e1).call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_COMMIT, &obj).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    assert_eq!(common::ctl_call(&mut n2, CTL_PROC_OBJ_COMMIT, &obj), ctl_status::CTL_OK);
    assert_eq!(common::ctl_call(&mut single, CTL_PROC_OBJ_COMMIT, &obj), ctl_status::CTL_OK);
    // Again: acknowledged, idempotent. Node 1's next start is accepted.
    assert_eq!(fence(&mut n2, 1, e1).unwrap(), ctl_status::CTL_OK);
    assert_eq!(common::ctl_call(&mut node(&h, control_epoch(1, 5)), CTL_PROC_OBJ_COMMIT, &obj), ctl_status::CTL_OK);
    h.shutdown();
    h.join();
}

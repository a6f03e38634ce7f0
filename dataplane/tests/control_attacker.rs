//! The DS control program against an attacker on the storage network (from
//! 127.0.0.2): calls without the cluster key's tag, with another cluster's
//! key, replayed from a recording, or from a fenced (older) MDS epoch are
//! all refused, and the object they aimed at is unchanged.

mod common;

use pnfs_client::net::{connect_from, read_record, send_record};
use pnfs_client::pnfs_protocol;
use pnfs_ds::DsFh;
use pnfs_protocol::control_auth::{now_ms, CallSigner, ControlKeys};
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::seal::ClusterKey;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn encode<T: XdrEncode>(a: &T) -> Vec<u8> {
    let mut e = Encoder::new();
    a.encode(&mut e).unwrap();
    e.into_inner()
}

/// A signed call message (no record mark).
fn signed(signer: &mut CallSigner, xid: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    signer.encode_call(&mut e, xid, PNFSCTL_DS_PROGRAM, PNFSCTL_VERSION, proc_, args, now_ms());
    e.into_inner()
}

/// True when `rec` is MSG_DENIED (an AUTH_ERROR).
fn denied(rec: Option<Vec<u8>>) -> bool {
    match rec {
        Some(r) => matches!(rpc::parse_message(&r), Ok(Message::Reply { accepted: None, .. })),
        None => true,
    }
}

#[test]
fn unauthenticated_forged_replayed_and_fenced_control_calls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = pnfs_ds::run(common::config_without_mds("target", dir.path())).unwrap();
    let ctl: SocketAddr = h.control_addr();
    let fh = DsFh { stripe: 0, ino: 42, generation: 9 }.seal(&h.ds().fh_key);
    let obj = ctl_obj_args { coa_fh: Opaque::borrowed(&fh) };

    // The MDS (epoch 5) creates the object and writes 100 bytes.
    let keys = h.ds().control_keys.clone();
    let mut mds = pnfs_ds::mds_link::CtlClient::connect(&ctl.to_string(), std::time::Duration::from_secs(2), keys.clone(), 5).unwrap();
    let status = |body: Vec<u8>| ctl_res::decode(&mut Decoder::new(&body)).unwrap().cr_status;
    assert_eq!(status(mds.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_CREATE, &obj).unwrap()), ctl_status::CTL_OK);
    let data = vec![0x5au8; 100];
    let write = ctl_write_args { cwa_fh: Opaque::borrowed(&fh), cwa_offset: 0, cwa_data: Opaque::borrowed(&data), cwa_stable: true };
    assert_eq!(status(mds.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_WRITE, &write).unwrap()), ctl_status::CTL_OK);
    let size = |mds: &mut pnfs_ds::mds_link::CtlClient| {
        let b = mds.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_STAT, &obj).unwrap();
        ctl_stat_res::decode(&mut Decoder::new(&b)).unwrap().csr_size
    };
    assert_eq!(size(&mut mds), 100);

    // 1. No credential (as before authentication existed): every procedure
    // that reads, writes or grants access is denied, and the connection closed.
    let sid = stateid4 { seqid: 1, other: [3; 12] };
    let attacks: Vec<(u32, Vec<u8>)> = vec![
        (CTL_PROC_OBJ_READ, encode(&ctl_read_args { cra_fh: Opaque::borrowed(&fh), cra_offset: 0, cra_count: 100 })),
        (
            CTL_PROC_STATEID_ALLOW,
            encode(&ctl_stateid_args { csa_stateid: sid.clone(), csa_clientid: 1, csa_fh: Opaque::borrowed(&fh), csa_access: 3 }),
        ),
        (CTL_PROC_OBJ_WRITE, encode(&write)),
        (CTL_PROC_OBJ_TRUNCATE, encode(&ctl_truncate_args { cta_fh: Opaque::borrowed(&fh), cta_size: 1 << 40 })),
        (CTL_PROC_OBJ_REMOVE, encode(&obj)),
    ];
    for (proc_, args) in &attacks {
        let mut s = connect_from(ATTACKER, ctl).unwrap();
        let mut e = Encoder::new();
        rpc::begin_call(&mut e, 1, PNFSCTL_DS_PROGRAM, PNFSCTL_VERSION, *proc_, true);
        e.buf.extend_from_slice(args);
        send_record(&mut s, &e.buf).unwrap();
        assert!(denied(read_record(&mut s)), "unauthenticated proc {proc_}");
        assert!(read_record(&mut s).is_none(), "connection closed after proc {proc_}");
    }

    // 2. Signed with another cluster's key: denied.
    let mut foreign = CallSigner::new(ControlKeys::new(&ClusterKey::generate().unwrap()), 5);
    for (proc_, args) in &attacks {
        let mut s = connect_from(ATTACKER, ctl).unwrap();
        send_record(&mut s, &signed(&mut foreign, 2, *proc_, args)).unwrap();
        assert!(denied(read_record(&mut s)), "foreign-key proc {proc_}");
    }

    // 3. A recorded genuine call (the MDS truncating to 10 bytes), replayed
    // later on a new connection: denied; so is a replay on its own connection.
    let mut genuine = CallSigner::new(keys.clone(), 5);
    let truncate = signed(&mut genuine, 3, CTL_PROC_OBJ_TRUNCATE, &encode(&ctl_truncate_args { cta_fh: Opaque::borrowed(&fh), cta_size: 10 }));
    let mut s = TcpStream::connect(ctl).unwrap();
    send_record(&mut s, &truncate).unwrap();
    assert!(!denied(read_record(&mut s)), "the genuine call works");
    assert_eq!(size(&mut mds), 10);
    assert_eq!(status(mds.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_WRITE, &write).unwrap()), ctl_status::CTL_OK);
    send_record(&mut s, &truncate).unwrap();
    assert!(denied(read_record(&mut s)), "replayed on its connection");
    let mut s = connect_from(ATTACKER, ctl).unwrap();
    send_record(&mut s, &truncate).unwrap();
    assert!(denied(read_record(&mut s)), "replayed on a new connection");
    assert_eq!(size(&mut mds), 100, "the replays changed nothing");

    // 4. A fenced MDS (epoch 4, same key) once epoch 5 spoke: denied.
    let mut old_mds = CallSigner::new(keys, 4);
    let mut s = TcpStream::connect(ctl).unwrap();
    send_record(&mut s, &signed(&mut old_mds, 4, CTL_PROC_OBJ_REMOVE, &encode(&obj))).unwrap();
    assert!(denied(read_record(&mut s)), "older MDS epoch");
    assert_eq!(size(&mut mds), 100);

    // Every refusal was counted (5 unsigned, 5 foreign-key, 2 replays, 1 fenced).
    assert_eq!(h.stats().control_refused, 13);
    // The object still holds the MDS's bytes.
    let b = mds.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_READ, &ctl_read_args { cra_fh: Opaque::borrowed(&fh), cra_offset: 0, cra_count: 100 }).unwrap();
    let r = ctl_read_res::decode(&mut Decoder::new(&b)).unwrap();
    assert_eq!(r.crs_data.to_vec(), data);
    h.shutdown();
    h.join();
}

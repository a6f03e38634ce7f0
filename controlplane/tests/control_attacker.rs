//! The MDS control listener against an attacker on the storage network
//! (from 127.0.0.2): REGISTER without the cluster key's tag, with another
//! cluster's key, or replayed, neither adds a data server nor moves a known
//! one's addresses.

use pnfs_client::net::{connect_from, read_record, send_record};
use pnfs_client::pnfs_protocol::control_auth::{now_ms, CallSigner, ControlKeys};
use pnfs_client::pnfs_protocol::rpc::{self, Message};
use pnfs_client::pnfs_protocol::seal::ClusterKey;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::{Decoder, Encoder, XdrDecode, XdrEncode};
use pnfs_mds::pnfs::client::CtlClient;
use std::net::{IpAddr, Ipv4Addr, TcpStream};

mod common;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn call(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
    send_record(s, msg).ok()?;
    read_record(s)
}

fn denied(rec: Option<Vec<u8>>) -> bool {
    rec.is_none_or(|r| matches!(rpc::parse_message(&r), Ok(Message::Reply { accepted: None, .. })))
}

fn register_args<'a>(id: &'a str, uaddr: &'a str, control: &'a str) -> ctl_register_args<'a> {
    ctl_register_args {
        cra_ds_id: id.as_bytes().into(),
        cra_client_addrs: vec![netaddr4 { na_r_netid: "tcp".into(), na_r_addr: uaddr.into() }],
        cra_control_addr: control.as_bytes().into(),
        cra_capacity_bytes: 1 << 40,
        cra_free_bytes: 1 << 39,
    }
}

fn encode<T: XdrEncode>(a: &T) -> Vec<u8> {
    let mut e = Encoder::new();
    a.encode(&mut e).unwrap();
    e.into_inner()
}

#[test]
fn unauthenticated_and_replayed_registrations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ctl) = common::start_pnfs_mds(dir.path(), "ds_dead_after_ms = 600000");
    let keys = ControlKeys::new(&ClusterKey::load(&dir.path().join("meta/cluster.key")).unwrap());
    let ds = CtlClient::new(keys.clone(), 0);
    let heartbeat = |id: &str| {
        let a = ctl_heartbeat_args { cha_ds_id: id.as_bytes().into(), cha_free_bytes: 1, cha_bytes_read: 0, cha_bytes_written: 0 };
        let b = ds.call(&ctl.to_string(), PNFSCTL_MDS_PROGRAM, CTL_PROC_HEARTBEAT, &a).unwrap();
        ctl_heartbeat_res::decode(&mut Decoder::new(&b)).unwrap().chr_status
    };
    // The genuine data server registers.
    let genuine = register_args("ds-a", "127.0.0.1.8.1", "127.0.0.1:9");
    let b = ds.call(&ctl.to_string(), PNFSCTL_MDS_PROGRAM, CTL_PROC_REGISTER, &genuine).unwrap();
    assert_eq!(ctl_register_res::decode(&mut Decoder::new(&b)).unwrap().crr_status, ctl_status::CTL_OK);
    assert_eq!(heartbeat("ds-a"), ctl_status::CTL_OK);

    // Unsigned: a new fake DS, and the genuine id moved to the attacker.
    for (id, addr) in [("evil", "127.0.0.2.8.1"), ("ds-a", "127.0.0.2.8.1")] {
        let mut s = connect_from(ATTACKER, ctl).unwrap();
        let mut e = Encoder::new();
        rpc::begin_call(&mut e, 1, PNFSCTL_MDS_PROGRAM, PNFSCTL_VERSION, CTL_PROC_REGISTER, false);
        e.buf.extend_from_slice(&encode(&register_args(id, addr, "127.0.0.2:9")));
        assert!(denied(call(&mut s, &e.buf)), "unsigned REGISTER {id}");
        assert!(read_record(&mut s).is_none(), "connection closed");
    }
    // Signed with another cluster's key.
    let mut foreign = CallSigner::new(ControlKeys::new(&ClusterKey::generate().unwrap()), 0);
    let mut s = connect_from(ATTACKER, ctl).unwrap();
    let mut e = Encoder::new();
    foreign.encode_call(&mut e, 2, PNFSCTL_MDS_PROGRAM, PNFSCTL_VERSION, CTL_PROC_REGISTER, &encode(&register_args("evil", "127.0.0.2.8.1", "127.0.0.2:9")), now_ms());
    assert!(denied(call(&mut s, &e.buf)), "foreign key");
    // A recorded genuine REGISTER, replayed from elsewhere.
    let mut signer = CallSigner::new(keys, 0);
    let mut e = Encoder::new();
    signer.encode_call(&mut e, 3, PNFSCTL_MDS_PROGRAM, PNFSCTL_VERSION, CTL_PROC_REGISTER, &encode(&genuine), now_ms());
    let mut s = TcpStream::connect(ctl).unwrap();
    assert!(!denied(call(&mut s, &e.buf)), "genuine");
    let mut s = connect_from(ATTACKER, ctl).unwrap();
    assert!(denied(call(&mut s, &e.buf)), "replayed");

    // Nothing was registered or moved.
    assert_eq!(heartbeat("evil"), ctl_status::CTL_UNKNOWN_DS);
    assert_eq!(heartbeat("ds-a"), ctl_status::CTL_OK);
}

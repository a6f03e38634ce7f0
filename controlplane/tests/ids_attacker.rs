//! Client IDs and sessions as an attacker on the storage network sees them
//! (issue 9, findings 5 and 10): raw ONC RPC from 127.0.0.2 against an MDS
//! on 127.0.0.1. Guessed or learned session and client IDs must not let
//! anyone but their owner destroy them or bind to them, and floods of
//! EXCHANGE_ID and CREATE_SESSION must cost the address sending them.

use pnfs_client::pnfs_protocol as proto;
use pnfs_client::Client;
use proto::record::RecordReader;
use proto::rpc::{self, Message};
use proto::wire::*;
use proto::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use proto::wire::nfsv4_1_file_layout4;

mod common;

/// One raw NFSv4.1 connection from `src` with AUTH_SYS `uid`.
struct Raw {
    s: TcpStream,
    xid: u32,
    uid: u32,
    records: RecordReader,
}

impl Raw {
    fn connect(src: &str, dst: SocketAddr, uid: u32) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = rt
            .block_on(async {
                let sock = tokio::net::TcpSocket::new_v4()?;
                sock.bind(format!("{src}:0").parse().unwrap())?;
                sock.connect(dst).await
            })
            .expect("connect from a second loopback address");
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw { s, xid: 1, uid, records: RecordReader::new(4 << 20) }
    }

    /// Sends a COMPOUND of `ops`; returns the encoded COMPOUND4res.
    fn call(&mut self, ops: Vec<nfs_argop4<'_>>) -> Vec<u8> {
        self.xid += 1;
        let mut e = Encoder::new();
        e.put_u32(0);
        for v in [self.xid, 0, 2, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND] {
            e.put_u32(v);
        }
        let cred = authsys_parms { stamp: 0, machinename: Opaque::borrowed(b"attacker"), uid: self.uid, gid: self.uid, gids: vec![] };
        e.put_u32(1); // AUTH_SYS
        e.put_opaque(&proto::xdr::encode_to_vec(&cred).unwrap(), 400).unwrap();
        e.put_u32(0);
        e.put_u32(0);
        COMPOUND4args { tag: Opaque::borrowed(b""), minorversion: 1, argarray: ops }.encode(&mut e).unwrap();
        let len = e.len() - 4;
        e.patch_u32(0, 0x8000_0000 | len as u32);
        self.s.write_all(&e.buf).unwrap();
        let mut buf = [0u8; 65536];
        loop {
            let n = self.s.read(&mut buf).expect("reply within 30 s");
            assert!(n > 0, "server closed the connection");
            if let Some(rec) = self.records.feed_all(&buf[..n]).unwrap().pop() {
                match rpc::parse_message(&rec) {
                    Ok(Message::Reply { xid, accepted: Some(0), body }) if xid == self.xid => return body.to_vec(),
                    other => panic!("unexpected reply {other:?}"),
                }
            }
        }
    }

    fn status(&mut self, ops: Vec<nfs_argop4<'_>>) -> nfsstat4 {
        let body = self.call(ops);
        COMPOUND4res::decode(&mut Decoder::new(&body)).unwrap().status
    }

    /// EXCHANGE_ID: Ok((clientid, sequence)) or the error.
    fn exchange_id(&mut self, owner: &[u8]) -> Result<(u64, u32), nfsstat4> {
        let body = self.call(vec![nfs_argop4::OP_EXCHANGE_ID(EXCHANGE_ID4args {
            eia_clientowner: client_owner4 { co_verifier: [7; 8], co_ownerid: Opaque::borrowed(owner) },
            eia_flags: 0,
            eia_state_protect: state_protect4_a::SP4_NONE,
            eia_client_impl_id: vec![],
        })]);
        let res = COMPOUND4res::decode(&mut Decoder::new(&body)).unwrap();
        match res.resarray.first() {
            Some(nfs_resop4::OP_EXCHANGE_ID(EXCHANGE_ID4res::NFS4_OK(ok))) => Ok((ok.eir_clientid, ok.eir_sequenceid)),
            _ => Err(res.status),
        }
    }

    fn create_session(&mut self, clientid: u64, seq: u32) -> Result<[u8; 16], nfsstat4> {
        let attrs = |n| channel_attrs4 {
            ca_headerpadsize: 0,
            ca_maxrequestsize: 1 << 20,
            ca_maxresponsesize: 1 << 20,
            ca_maxresponsesize_cached: 4096,
            ca_maxoperations: 16,
            ca_maxrequests: n,
            ca_rdma_ird: vec![],
        };
        let body = self.call(vec![nfs_argop4::OP_CREATE_SESSION(CREATE_SESSION4args {
            csa_clientid: clientid,
            csa_sequence: seq,
            csa_flags: 0,
            csa_fore_chan_attrs: attrs(4),
            csa_back_chan_attrs: attrs(1),
            csa_cb_program: 0x4000_0000,
            csa_sec_parms: vec![callback_sec_parms4::AUTH_NONE],
        })]);
        let res = COMPOUND4res::decode(&mut Decoder::new(&body)).unwrap();
        match res.resarray.first() {
            Some(nfs_resop4::OP_CREATE_SESSION(CREATE_SESSION4res::NFS4_OK(ok))) => Ok(ok.csr_sessionid),
            _ => Err(res.status),
        }
    }

    /// A client ID and a session of its own.
    fn session(&mut self, owner: &[u8]) -> (u64, [u8; 16]) {
        let (id, seq) = self.exchange_id(owner).unwrap();
        (id, self.create_session(id, seq).unwrap())
    }

    fn destroy_session(&mut self, sid: [u8; 16]) -> nfsstat4 {
        self.status(vec![nfs_argop4::OP_DESTROY_SESSION(DESTROY_SESSION4args { dsa_sessionid: sid })])
    }

    fn destroy_clientid(&mut self, id: u64) -> nfsstat4 {
        self.status(vec![nfs_argop4::OP_DESTROY_CLIENTID(DESTROY_CLIENTID4args { dca_clientid: id })])
    }

    fn bind_conn(&mut self, sid: [u8; 16]) -> nfsstat4 {
        self.status(vec![nfs_argop4::OP_BIND_CONN_TO_SESSION(BIND_CONN_TO_SESSION4args {
            bctsa_sessid: sid,
            bctsa_dir: channel_dir_from_client4::CDFC4_FORE_OR_BOTH,
            bctsa_use_conn_in_rdma_mode: false,
        })])
    }
}

/// An MDS whose one export allows `clients`; `extra` goes in [mds].
fn mds(dir: &tempfile::TempDir, clients: &str, extra: &str) -> SocketAddr {
    let text = format!(
        "bind = \"127.0.0.1:1\"\nmetadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\n{extra}\n\
         [[exports]]\npath = \"/export\"\nclients = [{clients}]\n",
        dir.path().display()
    );
    let cfg: pnfs_mds::MdsConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    pnfs_mds::server::spawn_on_loopback(cfg).unwrap().0
}

fn sequence(sid: [u8; 16], seq: u32) -> nfs_argop4<'static> {
    nfs_argop4::OP_SEQUENCE(SEQUENCE4args { sa_sessionid: sid, sa_sequenceid: seq, sa_slotid: 0, sa_highest_slotid: 0, sa_cachethis: false })
}

#[test]
fn guessed_session_ids_destroy_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let addr = mds(&dir, "\"127.0.0.1\"", "");
    let mut victim = Client::connect(addr, 1).unwrap();
    victim.lookup_path("/export").unwrap();
    // The attacker (an address no export allows) makes a session of its own
    // and tries the IDs near it: with sequential IDs the victim's is among them.
    let mut a = Raw::connect("127.0.0.2", addr, 0);
    let (id, sid) = a.session(b"attacker");
    let mut destroyed = 0;
    for dc in 0..4u64 {
        for ds in 0..8u64 {
            let mut guess = sid;
            guess[..8].copy_from_slice(&id.wrapping_sub(dc).to_be_bytes());
            let n = u64::from_be_bytes(sid[8..].try_into().unwrap()).wrapping_sub(ds);
            guess[8..].copy_from_slice(&n.to_be_bytes());
            if guess != sid && a.destroy_session(guess) == nfsstat4::NFS4_OK {
                destroyed += 1;
            }
        }
    }
    assert_eq!(destroyed, 0, "guessed session IDs destroyed sessions");
    // Even the victim's real session ID (sniffed) is not the attacker's to destroy.
    assert_eq!(a.destroy_session(victim.session().sessionid), nfsstat4::NFS4ERR_WRONG_CRED);
    assert_eq!(a.bind_conn(victim.session().sessionid), nfsstat4::NFS4ERR_WRONG_CRED);
    victim.lookup_path("/export").expect("the victim's session survives");
}

#[test]
fn another_principal_cannot_destroy_or_bind() {
    let dir = tempfile::tempdir().unwrap();
    // Both addresses allowed: only the principal tells owner from intruder.
    let addr = mds(&dir, "\"127.0.0.0/8\"", "");
    let mut victim = Raw::connect("127.0.0.1", addr, 0);
    let (vid, vsid) = victim.session(b"victim");
    let (pending, pseq) = victim.exchange_id(b"victim-2").unwrap();
    let mut intruder = Raw::connect("127.0.0.2", addr, 1000);
    intruder.session(b"intruder");
    assert_eq!(intruder.destroy_session(vsid), nfsstat4::NFS4ERR_WRONG_CRED);
    assert_eq!(intruder.bind_conn(vsid), nfsstat4::NFS4ERR_WRONG_CRED);
    assert_eq!(intruder.destroy_clientid(vid), nfsstat4::NFS4ERR_WRONG_CRED);
    // A client ID holding nothing yet (between EXCHANGE_ID and CREATE_SESSION).
    assert_eq!(intruder.destroy_clientid(pending), nfsstat4::NFS4ERR_WRONG_CRED);
    victim.create_session(pending, pseq).expect("the victim's pending client ID survives");
    assert_eq!(victim.status(vec![sequence(vsid, 1)]), nfsstat4::NFS4_OK, "the victim's session survives");
    // The owner itself may do all of it.
    assert_eq!(victim.bind_conn(vsid), nfsstat4::NFS4_OK);
    assert_eq!(victim.destroy_session(vsid), nfsstat4::NFS4_OK);
    assert_eq!(victim.destroy_clientid(vid), nfsstat4::NFS4_OK);
}

#[test]
fn exchange_id_flood_costs_only_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let addr = mds(&dir, "\"127.0.0.1\"", "max_clients = 64\nmax_clients_per_address = 16");
    let mut a = Raw::connect("127.0.0.2", addr, 0);
    let first = a.exchange_id(b"flood-0").unwrap();
    for i in 1..20_000 {
        a.exchange_id(format!("flood-{i}").as_bytes()).unwrap_or_else(|s| panic!("EXCHANGE_ID {i}: {s:?}"));
    }
    // The unconfirmed ones were dropped to make room, not kept.
    assert_eq!(a.create_session(first.0, first.1), Err(nfsstat4::NFS4ERR_STALE_CLIENTID));
    // Confirmed clients fill the address's share; then only it waits.
    for i in 0..16 {
        a.session(format!("held-{i}").as_bytes());
    }
    assert_eq!(a.exchange_id(b"one-more"), Err(nfsstat4::NFS4ERR_DELAY));
    let mut c = Client::connect(addr, 1).expect("a client on another address gets in");
    let export = c.lookup_path("/export").unwrap();
    c.write_file(&export, "f", b"still served").unwrap();
    assert_eq!(c.read_file(&export, "f").unwrap(), b"still served");
}

#[test]
fn one_client_holds_at_most_16_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let addr = mds(&dir, "\"127.0.0.0/8\"", "");
    let mut a = Raw::connect("127.0.0.2", addr, 0);
    let (id, mut seq) = a.exchange_id(b"greedy").unwrap();
    let mut sids = vec![];
    for _ in 0..16 {
        sids.push(a.create_session(id, seq).unwrap());
        seq += 1;
    }
    assert_eq!(a.create_session(id, seq), Err(nfsstat4::NFS4ERR_NOSPC));
    assert_eq!(a.destroy_session(sids[0]), nfsstat4::NFS4_OK);
    a.create_session(id, seq).expect("room again after DESTROY_SESSION");
}

/// The victim's stateid, valid on the data server for the victim, presented
/// there by another client (its own session, its own owner): refused.
#[test]
fn data_server_refuses_another_clients_stateid() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = common::start_pnfs_mds(dir.path(), "");
    let ds = common::start_ds(dir.path(), "ds0", ctl_addr);
    common::wait_registered(dir.path(), ctl_addr, "ds0");

    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    let (fh, open_sid) = c.open(&root, "secret", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    c.write(&fh, &open_sid, 0, b"the victim's data", stable_how4::FILE_SYNC4).unwrap();
    let sid0 = stateid4 { seqid: 0, other: open_sid.other };
    let (_, body) = c.layoutget(&fh, &sid0, layoutiomode4::LAYOUTIOMODE4_RW).unwrap();
    let layout = nfsv4_1_file_layout4::decode(&mut Decoder::new(&body)).unwrap();
    let ds_fh = layout.nfl_fh_list[0].to_vec();
    let ds_addr = SocketAddr::from(([127, 0, 0, 1], ds.nfs_addr().port()));
    let read = |fh: &[u8]| -> Vec<nfs_argop4<'static>> {
        vec![
            nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::owned(fh.to_vec()) }),
            nfs_argop4::OP_READ(READ4args { stateid: sid0.clone(), offset: 0, count: 4096 }),
        ]
    };
    // The victim, as the same client with the data server, reads.
    let mut mine = Client::connect_as(ds_addr, &c).unwrap();
    let got = mine
        .compound_ok(read(&ds_fh), |r| match &r[1] {
            nfs_resop4::OP_READ(READ4res::NFS4_OK(ok)) => Ok(ok.data.to_vec()),
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert_eq!(&got[..17], b"the victim's data");
    // Another client, from another address, with the stateid it sniffed or guessed.
    let mut a = Raw::connect("127.0.0.2", ds_addr, 0);
    let (_, sid) = a.session(b"attacker");
    let mut ops = vec![sequence(sid, 1)];
    ops.extend(read(&ds_fh));
    assert_eq!(a.status(ops), nfsstat4::NFS4ERR_BAD_STATEID, "a stateid of another client was accepted");
    ds.shutdown();
}

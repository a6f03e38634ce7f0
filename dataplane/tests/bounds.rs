//! The DS's bounds against a hostile peer on the storage network (issue 9,
//! findings 7-10): raw ONC RPC from 127.0.0.2 against a DS on 127.0.0.1,
//! while a client on 127.0.0.1 must still be served.

mod common;

use common::{call_body, frame, nfs, read_op, Replies, Setup, MIB, RW};
use pnfs_client::pnfs_protocol;
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection from the attacker's address (bound before connect).
fn attacker(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Whether the server closed `s`: EOF or reset within `within` (a reply or
/// silence until then: not closed).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true, // reset
        }
    }
}

/// A framed NULL call.
fn null_call(xid: u32) -> Vec<u8> {
    let mut e = Encoder::new();
    rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, 0, false);
    frame(&e.into_inner(), &[])
}

/// Sends a NULL call on `s`; whether it was answered.
fn null_answered(s: &mut TcpStream, xid: u32) -> bool {
    if s.write_all(&null_call(xid)).is_err() {
        return false;
    }
    matches!(Replies::new().next(s).as_deref().map(rpc::parse_message), Some(Ok(Message::Reply { xid: x, accepted: Some(0), .. })) if x == xid)
}

/// The COMPOUND status and the READ result of a reply record.
fn read_status(rec: &[u8]) -> (nfsstat4, Option<usize>) {
    let Ok(Message::Reply { accepted: Some(0), body, .. }) = rpc::parse_message(rec) else { panic!("not an accepted reply") };
    let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
    let n = res.resarray.iter().find_map(|r| match r {
        nfs_resop4::OP_READ(READ4res::NFS4_OK(ok)) => Some(ok.data.len()),
        _ => None,
    });
    (res.status, n)
}

/// A legitimate READ on the setup's session, from 127.0.0.1 on a new
/// connection: its COMPOUND status and how long the answer took.
fn legit_read(s: &Setup, slot: u32, seq: u32) -> (nfsstat4, Option<usize>, Duration) {
    let mut sock = nfs(s.h.nfs_addr());
    let t0 = Instant::now();
    sock.write_all(&frame(&call_body(s, 1000 + slot, slot, seq, &[read_op(0, 65536)]), &[])).unwrap();
    let rec = Replies::new().next(&mut sock).expect("the READ was not answered");
    let (st, n) = read_status(&rec);
    (st, n, t0.elapsed())
}

/// SEQUENCE (with `sessionid`), PUTFH `fh`, UNSTABLE WRITE of `len` bytes
/// with the read-write stateid: the record mark and the call up to (and
/// including) the data length, i.e. what precedes the data.
fn write_head(sessionid: sessionid4, fh: &[u8], xid: u32, len: usize) -> Vec<u8> {
    let mut e = Encoder::new();
    rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
    e.put_opaque(b"", 1024).unwrap();
    e.put_u32(1);
    e.put_u32(3);
    nfs_argop4::OP_SEQUENCE(SEQUENCE4args { sa_sessionid: sessionid, sa_sequenceid: 1, sa_slotid: 0, sa_highest_slotid: 0, sa_cachethis: false })
        .encode(&mut e)
        .unwrap();
    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) }).encode(&mut e).unwrap();
    nfs_argop4::OP_WRITE(WRITE4args { stateid: stateid4 { seqid: 1, other: RW }, offset: 0, stable: stable_how4::UNSTABLE4, data: Opaque::borrowed(&[]) })
        .encode(&mut e)
        .unwrap();
    let mut body = e.into_inner();
    // The data length (last word, 0 as encoded) becomes `len`.
    let at = body.len() - 4;
    body[at..].copy_from_slice(&(len as u32).to_be_bytes());
    let mut out = (0x8000_0000u32 | (body.len() + len + (4 - len % 4) % 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Finding 7: ~100 half-sent large WRITEs with bogus sessions used to take
/// every pool buffer (each waited for the rest of its data), and READs were
/// answered NFS4ERR_DELAY. Now their data is dropped as it arrives: no
/// buffer is taken for a WRITE whose session does not exist.
#[test]
fn half_sent_writes_with_bogus_sessions_do_not_pin_the_pool() {
    let s = common::setup(|c| {
        c.buffers_per_reactor = 4;
        c.max_connections_per_address = 1000;
    });
    std::fs::write(&s.path, common::pattern(3, 65536)).unwrap();
    let data = vec![0x5au8; 256 * 1024];
    let mut held = Vec::new();
    for i in 0..100u32 {
        let mut bogus = [0u8; 16];
        bogus[..4].copy_from_slice(&(i + 1).to_be_bytes());
        bogus[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let mut a = attacker(s.h.nfs_addr());
        a.write_all(&write_head(bogus, &s.fh, i, data.len())).unwrap();
        a.write_all(&data[..data.len() / 2]).unwrap();
        held.push(a);
    }
    // Let the reactor take in what they sent.
    let t0 = Instant::now();
    while s.h.stats().writes_not_admitted < 100 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, n, took) = legit_read(&s, 1, 1);
    assert_eq!(status, nfsstat4::NFS4_OK, "a READ while 100 half-sent WRITEs are open");
    assert_eq!(n, Some(65536));
    assert!(took < Duration::from_secs(5), "the READ took {took:?}");
    let st = s.h.stats();
    assert!(st.writes_not_admitted >= 100, "{} WRITEs not admitted", st.writes_not_admitted);
    assert_eq!(st.buffer_pool_exhausted, 0);
    // A real large WRITE is admitted: its data goes into a pool buffer.
    let mut sock = nfs(s.h.nfs_addr());
    sock.write_all(&frame(&common::write_record(&s, 2000, 2, 0, &data, &[]), &[])).unwrap();
    let (_, status, w) = common::write_result(&Replies::new().next(&mut sock).expect("the WRITE was not answered"));
    assert_eq!(status, nfsstat4::NFS4_OK, "a legitimate WRITE");
    assert!(matches!(w, Some(WRITE4res::NFS4_OK(ok)) if ok.count as usize == data.len()));
    let after = s.h.stats();
    assert_eq!((after.writes_not_admitted, after.zero_copy_writes), (st.writes_not_admitted, st.zero_copy_writes + 1));
    drop(held);
}

/// Finding 8: idle connections from one address beyond
/// `ds.max_connections_per_address` are closed at accept, and they never
/// fill the reactor's total: a client on another address is served.
#[test]
fn idle_connections_beyond_the_per_address_cap_are_refused() {
    let s = common::setup(|c| {
        c.max_connections_per_address = 8;
        c.max_connections_per_reactor = 16;
    });
    let addr = s.h.nfs_addr();
    let mut kept: Vec<TcpStream> = (0..8).map(|_| attacker(addr)).collect();
    // Over the per-address cap, and beyond the reactor's total.
    let mut refused = 0;
    let mut extra = Vec::new();
    for _ in 0..24 {
        let mut a = attacker(addr);
        if closed_within(&mut a, Duration::from_secs(3)) {
            refused += 1;
        }
        extra.push(a);
    }
    assert_eq!(refused, 24, "connections over ds.max_connections_per_address were kept");
    // Those within the cap are served.
    assert!(null_answered(&mut kept[0], 1));
    assert!(null_answered(&mut kept[7], 2));
    // The local client gets a connection and an answer.
    let mut local = nfs(addr);
    assert!(null_answered(&mut local, 3), "127.0.0.1 was not served");
    let (status, ..) = legit_read(&s, 1, 1);
    assert_eq!(status, nfsstat4::NFS4_OK);
    let st = s.h.stats();
    assert!(st.connections_refused_per_address >= 24, "{st:?}");
}

/// Finding 9: a record that claims 1 MiB, sends part of it and stalls is
/// closed once `ds.record_timeout_seconds` passed (it used to be held, with
/// a buffer of the claimed length, for ever); an idle connection is closed
/// after `ds.idle_timeout_seconds`.
#[test]
fn stalled_partial_records_and_idle_connections_are_closed() {
    let s = common::setup(|c| {
        c.record_timeout_seconds = 1;
        c.idle_timeout_seconds = 2;
    });
    let addr = s.h.nfs_addr();
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut a = attacker(addr);
            a.write_all(&(0x8000_0000u32 | MIB as u32).to_be_bytes()).unwrap();
            a.write_all(&[7u8; 1000]).unwrap();
            a
        })
        .collect();
    // Half a mark only: a record begun too.
    let mut half_mark = attacker(addr);
    half_mark.write_all(&[0x80, 0]).unwrap();
    let mut idle = attacker(addr);
    for a in &mut stalled {
        assert!(closed_within(a, Duration::from_secs(15)), "a stalled record was kept open");
    }
    assert!(closed_within(&mut half_mark, Duration::from_secs(15)), "a stalled record mark was kept open");
    assert!(closed_within(&mut idle, Duration::from_secs(15)), "an idle connection was kept open");
    let st = s.h.stats();
    assert!(st.records_timed_out >= 21 && st.connections_idle_closed >= 1, "{st:?}");
    // The local client, which kept sending, is unaffected.
    let (status, ..) = legit_read(&s, 1, 1);
    assert_eq!(status, nfsstat4::NFS4_OK);
}

/// A peer with a real session that sends READs and never takes the
/// replies: each reply holds a pool buffer until it is written, so a few
/// such connections pinned the pool (READs answered DELAY) until the idle
/// timeout. Now a peer that takes no reply bytes for
/// `ds.record_timeout_seconds` is cut off and the buffers go back.
#[test]
fn replies_never_taken_do_not_pin_the_pool() {
    let s = common::setup(|c| {
        c.buffers_per_reactor = 8;
        c.record_timeout_seconds = 1;
    });
    std::fs::write(&s.path, common::pattern(5, MIB)).unwrap();
    // A small receive window, so the DS's socket fills at once.
    let sock = {
        use socket2::{Domain, Socket, Type};
        let sk = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sk.set_recv_buffer_size(4096).unwrap();
        sk.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        sk.connect(&s.h.nfs_addr().into()).unwrap();
        TcpStream::from(sk)
    };
    let mut out = Vec::new();
    for slot in 2..10u32 {
        out.extend_from_slice(&frame(&call_body(&s, slot, slot, 1, &[read_op(0, MIB as u32)]), &[]));
    }
    (&sock).write_all(&out).unwrap();
    let t0 = Instant::now();
    while s.h.stats().replies_stalled == 0 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, n, _) = legit_read(&s, 1, 1);
    assert_eq!(status, nfsstat4::NFS4_OK, "a READ while a peer leaves its replies untaken");
    assert_eq!(n, Some(65536));
    assert!(s.h.stats().replies_stalled >= 1);
    drop(sock);
}

/// An EXCHANGE_ID call record with owner `owner`.
fn exchange_id(xid: u32, owner: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
    e.put_opaque(b"", 1024).unwrap();
    e.put_u32(1);
    e.put_u32(1);
    nfs_argop4::OP_EXCHANGE_ID(EXCHANGE_ID4args {
        eia_clientowner: client_owner4 { co_verifier: [1; 8], co_ownerid: Opaque::borrowed(owner) },
        eia_flags: 0,
        eia_state_protect: state_protect4_a::SP4_NONE,
        eia_client_impl_id: vec![],
    })
    .encode(&mut e)
    .unwrap();
    frame(&e.into_inner(), &[])
}

/// Finding 10 (DS half): a flood of EXCHANGE_IDs (never confirmed) used to
/// fill the DS client table, and every new client was answered
/// NFS4ERR_DELAY. Unconfirmed clients now make room; a confirmed client
/// with a session keeps its place.
#[test]
fn exchange_id_flood_does_not_lock_out_a_client() {
    let s = common::setup(|c| c.max_clients = 32);
    let mut a = attacker(s.h.nfs_addr());
    let mut replies = Replies::new();
    // Pipelined in batches (the reply queue holds 128 per connection).
    for batch in 0..10u32 {
        let mut out = Vec::new();
        for i in 0..50 {
            out.extend_from_slice(&exchange_id(batch * 50 + i, format!("flood-{batch}-{i}").as_bytes()));
        }
        a.write_all(&out).unwrap();
        for _ in 0..50 {
            replies.next(&mut a).expect("an EXCHANGE_ID was not answered");
        }
    }
    let _c = pnfs_client::Client::connect(s.h.nfs_addr(), 1).expect("a new client after the flood");
    let (status, ..) = legit_read(&s, 1, 1);
    assert_eq!(status, nfsstat4::NFS4_OK, "the existing client lost its session");
    let st = s.h.stats();
    assert!(st.clients_evicted >= 400 && st.clients_refused == 0, "{st:?}");
}

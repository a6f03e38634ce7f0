//! Asynchronous READs over a real TCP socket: pipelined READs on one
//! connection (more than the reactor's in-flight limit) all come back with
//! their data, matched by xid whatever the order; READ stays correct with
//! synchronous reads (limit 0); an empty pool still answers DELAY; a
//! connection that goes away with reads in flight leaves nothing behind.

mod common;

use common::{Replies, MIB, RW};
use pnfs_client::pnfs_protocol;
use pnfs_client::Client;
use pnfs_ds::DsConfig;
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, XdrDecode};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const FILE: usize = 4 * MIB;

/// The shared DS setup (one object, RW allowed, a session) with the object
/// holding `data` and the session's slot count at hand.
struct Setup {
    base: common::Setup,
    data: Vec<u8>,
    slots: u32,
}

impl std::ops::Deref for Setup {
    type Target = common::Setup;
    fn deref(&self) -> &common::Setup {
        &self.base
    }
}

fn setup(configure: impl FnOnce(&mut DsConfig)) -> Setup {
    let base = common::setup(|cfg| {
        cfg.buffers_per_reactor = 16;
        configure(cfg);
    });
    let data = common::pattern(0, FILE);
    std::fs::write(&base.path, &data).unwrap();
    let slots = base._client.session().slots;
    assert!(slots >= 64);
    Setup { base, data, slots }
}

/// A framed SEQUENCE, PUTFH, READ call.
fn read_call(s: &Setup, xid: u32, slot: u32, seq: u32, offset: u64, count: u32) -> Vec<u8> {
    common::frame(&common::call_body(s, xid, slot, seq, &[common::read_op(offset, count)]), &[])
}

/// (xid, COMPOUND status, READ data and eof when it succeeded).
fn read_result(rec: &[u8]) -> (u32, nfsstat4, Option<(Vec<u8>, bool)>) {
    let Ok(Message::Reply { xid, accepted: Some(0), body }) = rpc::parse_message(rec) else { panic!("not an accepted reply") };
    let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
    let r = res.resarray.iter().find_map(|r| match r {
        nfs_resop4::OP_READ(READ4res::NFS4_OK(ok)) => Some((ok.data.to_vec(), ok.eof)),
        _ => None,
    });
    (xid, res.status, r)
}

fn nfs(s: &Setup) -> TcpStream {
    let sock = common::nfs(s.h.nfs_addr());
    sock.set_nodelay(true).unwrap();
    sock
}

/// Sends `reqs` (offset, count) pipelined on one connection in one write,
/// `rounds` times over the session's slots (each round waits for the
/// previous one: a slot takes one request at a time); checks every reply.
/// Returns the xids in the order their replies came.
fn pipelined(s: &Setup, reqs: &[(u64, u32)], rounds: u32) -> Vec<u32> {
    // Slot 0 is the session's own client's.
    assert!(reqs.len() < s.slots as usize);
    let mut sock = nfs(s);
    let mut replies = Replies::new();
    let mut order = Vec::new();
    for round in 0..rounds {
        let mut stream = Vec::new();
        let mut want = HashMap::new();
        for (i, &(offset, count)) in reqs.iter().enumerate() {
            let xid = 1000 * (round + 1) + i as u32;
            stream.extend(read_call(s, xid, 1 + i as u32, round + 1, offset, count));
            want.insert(xid, (offset, count));
        }
        sock.write_all(&stream).unwrap();
        while !want.is_empty() {
            let (xid, status, r) = read_result(&replies.next(&mut sock).expect("reply"));
            let (offset, count) = want.remove(&xid).unwrap_or_else(|| panic!("unexpected xid {xid}"));
            assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
            let (got, eof) = r.unwrap_or_else(|| panic!("xid {xid}: no READ result in {:?}", (offset, count)));
            let start = (offset as usize).min(FILE);
            let end = (start + count as usize).min(FILE);
            assert_eq!(got.len(), end - start, "xid {xid}");
            assert!(got == s.data[start..end], "xid {xid}: wrong data");
            assert_eq!(eof, end == FILE, "xid {xid}");
            order.push(xid);
        }
    }
    order
}

fn mixed_requests(n: usize) -> Vec<(u64, u32)> {
    (0..n)
        .map(|i| match i % 5 {
            0 => (((i * 7919) % 1000) as u64 * 4096, 4096),
            1 => ((i * 12_345 + 3) as u64 % FILE as u64, 5000),
            2 => (MIB as u64 * (i % 4) as u64, MIB as u32),
            3 => (FILE as u64 - 6000, 65536), // short, at the end
            _ => (FILE as u64 + 4096, 4096),  // past the end: empty, eof
        })
        .collect()
}

#[test]
fn pipelined_reads_beyond_the_in_flight_limit_all_complete() {
    // 4 reads in flight at most, 64 pipelined per round.
    let s = setup(|c| {
        c.max_inflight_io_per_reactor = 4;
        c.buffers_per_reactor = 80;
    });
    let n = (s.slots as usize - 1).min(63);
    let order = pipelined(&s, &mixed_requests(n), 3);
    assert_eq!(order.len(), 3 * n);
    let st = s.h.stats();
    assert_eq!(st.buffer_pool_exhausted, 0);
    assert_eq!(st.op("read"), 3 * n as u64);
    assert_eq!(st.op_errors("read"), 0);
    if s.h.ds().store.uses_o_direct() {
        assert!(st.direct_ops > 0);
    }
    s.h.shutdown();
    s.base.h.join();
}

#[test]
fn small_reads_pipelined_with_the_default_limit() {
    let s = setup(|c| c.buffers_per_reactor = 80);
    let reqs: Vec<(u64, u32)> = (0..(s.slots - 1).min(63) as u64).map(|i| ((i * 37 % 1024) * 4096, 4096)).collect();
    let order = pipelined(&s, &reqs, 4);
    assert_eq!(order.len(), 4 * reqs.len());
    // The reply cache holds each finished reply: a small READ sent again
    // on its slot and seqid (while in flight: DELAY) is answered from it.
    let mut sock = nfs(&s);
    let mut replies = Replies::new();
    let call = read_call(&s, 9000, 50, 5, 12_288, 100);
    sock.write_all(&[call.clone(), call.clone()].concat()).unwrap();
    let first = replies.next(&mut sock).unwrap();
    let second = replies.next(&mut sock).unwrap();
    let (a, b) = (read_result(&first), read_result(&second));
    assert_eq!((a.0, b.0), (9000, 9000));
    let ok = |r: &(u32, nfsstat4, Option<(Vec<u8>, bool)>)| r.1 == nfsstat4::NFS4_OK && r.2.as_ref().unwrap().0 == s.data[12_288..12_388];
    assert!(ok(&a) || ok(&b), "{a:?} {b:?}");
    assert!((ok(&a) && ok(&b)) || a.1 == nfsstat4::NFS4ERR_DELAY || b.1 == nfsstat4::NFS4ERR_DELAY);
    sock.write_all(&call).unwrap();
    let replay = replies.next(&mut sock).unwrap();
    assert!(replay == first || replay == second, "replay differs from the reply");
    assert!(ok(&read_result(&replay)));
    assert!(s.h.stats().replays >= 1);
    // And the ordinary client.
    let mut c = Client::connect(s.h.nfs_addr(), 1).unwrap();
    let (got, _) = c.read(&s.fh, &stateid4 { seqid: 1, other: RW }, 8192, 100).unwrap();
    assert!(got == s.data[8192..8292]);
    s.h.shutdown();
    s.base.h.join();
}

#[test]
fn synchronous_reads_when_the_limit_is_zero() {
    let s = setup(|c| c.max_inflight_io_per_reactor = 0);
    let order = pipelined(&s, &mixed_requests(16), 2);
    // One at a time: replies in request order.
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    s.h.shutdown();
    s.base.h.join();
}

#[test]
fn empty_pool_is_still_delay() {
    // 2 buffers; a connection that never reads its replies keeps them.
    let s = setup(|c| c.buffers_per_reactor = 2);
    let mut hog = nfs(&s);
    let mut stream = Vec::new();
    // More than the socket buffers hold.
    for i in 0..24u32 {
        stream.extend(read_call(&s, 1 + i, 1 + i, 1, 0, MIB as u32));
    }
    hog.write_all(&stream).unwrap();
    let mut sock = nfs(&s);
    let mut replies = Replies::new();
    let mut delayed = false;
    for i in 0..200u32 {
        sock.write_all(&read_call(&s, 5000 + i, 31, 1 + i, 0, 4096)).unwrap();
        let (xid, status, _) = read_result(&replies.next(&mut sock).unwrap());
        assert_eq!(xid, 5000 + i);
        if status == nfsstat4::NFS4ERR_DELAY {
            delayed = true;
            break;
        }
        assert_eq!(status, nfsstat4::NFS4_OK);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(delayed, "the pool never ran dry");
    assert!(s.h.stats().buffer_pool_exhausted > 0);
    // The hog reads its replies: every buffer comes back.
    let mut hr = Replies::new();
    for _ in 0..24 {
        let (_, status, _) = read_result(&hr.next(&mut hog).unwrap());
        assert!(status == nfsstat4::NFS4_OK || status == nfsstat4::NFS4ERR_DELAY);
    }
    drop(hog);
    let mut sock = nfs(&s);
    let mut replies = Replies::new();
    sock.write_all(&[read_call(&s, 8000, 40, 1, 0, MIB as u32), read_call(&s, 8001, 41, 1, MIB as u64, MIB as u32)].concat()).unwrap();
    for _ in 0..2 {
        let (xid, status, r) = read_result(&replies.next(&mut sock).unwrap());
        assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
        let o = (xid - 8000) as usize * MIB;
        assert!(r.unwrap().0 == s.data[o..o + MIB]);
    }
    s.h.shutdown();
    s.base.h.join();
}

#[test]
fn closing_with_reads_in_flight_leaks_nothing() {
    let s = setup(|c| c.buffers_per_reactor = 8);
    for round in 0..5u32 {
        let mut sock = nfs(&s);
        let mut stream = Vec::new();
        for i in 0..8u32 {
            stream.extend(read_call(&s, 1 + i, 30 + i, 1 + round, (i as u64) * MIB as u64 / 2, MIB as u32));
        }
        sock.write_all(&stream).unwrap();
        // Gone before (most of) the replies.
        drop(sock);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every buffer is back: 8 reads of 1 MiB pipelined find the pool full
    // (once the closed connections' last replies were dropped: retried a
    // while on a loaded machine, a leak never recovers).
    let mut sock = nfs(&s);
    let mut replies = Replies::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut stream = Vec::new();
        for i in 0..8u32 {
            stream.extend(read_call(&s, 7000 + i, 40 + i, attempt, i as u64 * 4096, MIB as u32));
        }
        sock.write_all(&stream).unwrap();
        let mut all_ok = true;
        for _ in 0..8 {
            let (xid, status, r) = read_result(&replies.next(&mut sock).unwrap());
            if status == nfsstat4::NFS4ERR_DELAY {
                all_ok = false;
                continue;
            }
            assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
            let o = (xid - 7000) as usize * 4096;
            assert!(r.unwrap().0 == s.data[o..o + MIB]);
        }
        if all_ok {
            break;
        }
        assert!(attempt < 30, "buffers leaked: {:?}", s.h.stats());
        std::thread::sleep(Duration::from_millis(100));
    }
    s.h.shutdown();
    s.base.h.join();
}

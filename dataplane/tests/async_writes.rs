//! Asynchronous UNSTABLE4 WRITEs over a real TCP socket: pipelined 1 MiB
//! writes (more than the reactor's in-flight limit) are all answered and
//! land on disk with no userspace copy; a COMMIT pipelined right behind
//! writes answers only after them and leaves the object clean; a
//! retransmission while the write is in flight gets DELAY, then the cached
//! reply; a connection closed with writes in flight leaks no buffer.

mod common;

use common::*;
use pnfs_client::pnfs_protocol;
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Opaque, XdrDecode};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;

/// SEQUENCE (slot, seq), PUTFH, then `op`, framed as one record.
fn call(s: &Setup, xid: u32, slot: u32, seq: u32, op: nfs_argop4) -> Vec<u8> {
    frame(&call_body(s, xid, slot, seq, &[op]), &[])
}

fn write_call(s: &Setup, xid: u32, slot: u32, seq: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    call(s, xid, slot, seq, write_op(offset, data))
}

fn commit_call(s: &Setup, xid: u32, slot: u32, seq: u32) -> Vec<u8> {
    call(s, xid, slot, seq, nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 }))
}

fn read_call(s: &Setup, xid: u32, slot: u32, seq: u32, offset: u64, count: u32) -> Vec<u8> {
    call(s, xid, slot, seq, read_op(offset, count))
}

/// (xid, status, COMMIT verifier) of a COMMIT reply, None if it is not one.
fn commit_result(rec: &[u8]) -> Option<(u32, nfsstat4, Option<verifier4>)> {
    let Ok(Message::Reply { xid, accepted: Some(0), body }) = rpc::parse_message(rec) else { panic!("not an accepted reply") };
    let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
    res.resarray.iter().find_map(|r| match r {
        nfs_resop4::OP_COMMIT(COMMIT4res::NFS4_OK(ok)) => Some((xid, res.status, Some(ok.writeverf))),
        nfs_resop4::OP_COMMIT(_) => Some((xid, res.status, None)),
        _ => None,
    })
}

fn read_status(rec: &[u8]) -> (u32, nfsstat4, Option<Vec<u8>>) {
    let Ok(Message::Reply { xid, accepted: Some(0), body }) = rpc::parse_message(rec) else { panic!("not an accepted reply") };
    let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
    let d = res.resarray.iter().find_map(|r| match r {
        nfs_resop4::OP_READ(READ4res::NFS4_OK(ok)) => Some(ok.data.to_vec()),
        _ => None,
    });
    (xid, res.status, d)
}

/// Whether this kernel gives the DS an io_uring (else WRITEs stay synchronous).
fn io_uring() -> bool {
    io_uring::IoUring::new(2).is_ok()
}

fn sock(s: &Setup) -> TcpStream {
    let t = nfs(s.h.nfs_addr());
    t.set_nodelay(true).unwrap();
    t
}

/// Sends `stream` from another thread (the server answers while it reads).
fn send(t: &TcpStream, stream: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut w = t.try_clone().unwrap();
    std::thread::spawn(move || w.write_all(&stream).unwrap())
}

#[test]
fn pipelined_writes_beyond_the_in_flight_limit_all_complete() {
    let s = setup(|c| {
        c.max_inflight_io_per_reactor = 4;
        c.buffers_per_reactor = 8;
    });
    let n = 30u32;
    let rounds = 2u32;
    let mut t = sock(&s);
    let mut replies = Replies::new();
    let mut want = Vec::new();
    for round in 0..rounds {
        let mut stream = Vec::new();
        let mut pending = HashMap::new();
        for i in 0..n {
            let k = round * n + i;
            let data = pattern(k, MIB);
            stream.extend(write_call(&s, 1000 + k, 1 + i, 1 + round, k as u64 * MIB as u64, &data));
            pending.insert(1000 + k, ());
            want.push(data);
        }
        let w = send(&t, stream);
        while !pending.is_empty() {
            let (xid, status, r) = write_result(&replies.next(&mut t).expect("reply"));
            assert!(pending.remove(&xid).is_some(), "unexpected xid {xid}");
            assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
            let Some(WRITE4res::NFS4_OK(ok)) = r else { panic!("xid {xid}: {r:?}") };
            assert_eq!(ok.count as usize, MIB);
            assert_eq!(ok.committed, stable_how4::UNSTABLE4);
        }
        w.join().unwrap();
    }
    let disk = std::fs::read(&s.path).unwrap();
    assert_eq!(disk.len(), want.len() * MIB);
    for (k, d) in want.iter().enumerate() {
        assert!(disk[k * MIB..(k + 1) * MIB] == d[..], "write {k}");
    }
    let st = s.h.stats();
    eprintln!("{st:?} io_uring {} o_direct {}", io_uring(), s.h.ds().store.uses_o_direct());
    assert_eq!(st.payload_copies, 0, "{st:?}");
    assert_eq!(st.zero_copy_writes, (n * rounds) as u64);
    assert_eq!(st.zero_copy_no_buffer, 0);
    if io_uring() {
        assert_eq!(st.async_writes, (n * rounds) as u64);
    }
    assert_eq!(st.op("write"), (n * rounds) as u64);
    assert_eq!(st.op_errors("write"), 0);
    assert_eq!(st.bytes_written, (n * rounds) as u64 * MIB as u64);
    if s.h.ds().store.uses_o_direct() {
        assert!(st.direct_ops >= (n * rounds) as u64);
    }
    s.h.shutdown();
    s.h.join();
}

#[test]
fn commit_pipelined_behind_writes_answers_after_them() {
    let s = setup(|c| c.buffers_per_reactor = 16);
    let mut t = sock(&s);
    let mut replies = Replies::new();
    for round in 0..3u32 {
        let mut stream = Vec::new();
        let n = 12u32;
        for i in 0..n {
            stream.extend(write_call(&s, 100 * (round + 1) + i, 1 + i, 1 + round, (i as u64) * MIB as u64, &pattern(round * 100 + i, MIB)));
        }
        stream.extend(commit_call(&s, 100 * (round + 1) + 99, 20, 1 + round));
        let before = s.h.stats();
        let w = send(&t, stream);
        let mut verf = None;
        for k in 0..=n {
            let rec = replies.next(&mut t).expect("reply");
            if let Some((xid, status, v)) = commit_result(&rec) {
                assert_eq!(k, n, "COMMIT xid {xid} answered before the writes");
                assert_eq!(status, nfsstat4::NFS4_OK);
                assert_eq!(v, verf);
            } else {
                let (xid, status, r) = write_result(&rec);
                assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
                let Some(WRITE4res::NFS4_OK(ok)) = r else { panic!() };
                verf = Some(ok.writeverf);
            }
        }
        w.join().unwrap();
        let after = s.h.stats();
        if io_uring() {
            assert_eq!(after.async_writes, before.async_writes + n as u64);
        }
        assert_eq!(after.fdatasyncs, before.fdatasyncs + 1, "one sync for the whole batch");
        // Every write was counted before that sync: the object is clean.
        t.write_all(&commit_call(&s, 100 * (round + 1) + 98, 21, 1 + round)).unwrap();
        let (_, status, _) = commit_result(&replies.next(&mut t).unwrap()).expect("COMMIT reply");
        assert_eq!(status, nfsstat4::NFS4_OK);
        let clean = s.h.stats();
        assert_eq!(clean.fdatasyncs, after.fdatasyncs, "dirty after the COMMIT");
        assert_eq!(clean.commits_clean, after.commits_clean + 1);
        let disk = std::fs::read(&s.path).unwrap();
        for i in 0..n as usize {
            assert!(disk[i * MIB..(i + 1) * MIB] == pattern(round * 100 + i as u32, MIB)[..], "round {round} write {i}");
        }
    }
    s.h.shutdown();
    s.h.join();
}

#[test]
fn retransmission_while_in_flight_is_delay_then_the_cached_reply() {
    let s = setup(|c| c.buffers_per_reactor = 8);
    let mut t = sock(&s);
    let mut replies = Replies::new();
    let data = pattern(5, MIB);
    for seq in 1..=3u32 {
        let call = write_call(&s, 70 + seq, 9, seq, 0, &data);
        let w = send(&t, [call.clone(), call.clone()].concat());
        let a = write_result(&replies.next(&mut t).unwrap());
        let b = write_result(&replies.next(&mut t).unwrap());
        w.join().unwrap();
        assert_eq!((a.0, b.0), (70 + seq, 70 + seq));
        let ok = |r: &(u32, nfsstat4, Option<WRITE4res>)| r.1 == nfsstat4::NFS4_OK && matches!(&r.2, Some(WRITE4res::NFS4_OK(ok)) if ok.count as usize == MIB);
        assert!(ok(&a) || ok(&b), "{a:?} {b:?}");
        assert!((ok(&a) && ok(&b)) || a.1 == nfsstat4::NFS4ERR_DELAY || b.1 == nfsstat4::NFS4ERR_DELAY, "{a:?} {b:?}");
        // After it: the cached reply (a replay of the final one).
        let replays = s.h.stats().replays;
        t.write_all(&call).unwrap();
        let r = write_result(&replies.next(&mut t).unwrap());
        assert!(ok(&r), "{r:?}");
        assert_eq!(s.h.stats().replays, replays + 1);
    }
    assert!(std::fs::read(&s.path).unwrap() == data);
    s.h.shutdown();
    s.h.join();
}

#[test]
fn closing_with_writes_in_flight_leaks_nothing() {
    let s = setup(|c| c.buffers_per_reactor = 8);
    // The data first, answered (a connection reset may cut the later ones short).
    {
        let mut t = sock(&s);
        let mut stream = Vec::new();
        for i in 0..8u32 {
            stream.extend(write_call(&s, 1 + i, 30 + i, 1, i as u64 * MIB as u64, &pattern(i, MIB)));
        }
        let w = send(&t, stream);
        let mut replies = Replies::new();
        for _ in 0..8 {
            let (xid, status, _) = write_result(&replies.next(&mut t).unwrap());
            assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
        }
        w.join().unwrap();
    }
    for round in 1..6u32 {
        let mut t = sock(&s);
        let mut stream = Vec::new();
        for i in 0..8u32 {
            stream.extend(write_call(&s, 1 + i, 30 + i, 1 + round, i as u64 * MIB as u64, &pattern(i, MIB)));
        }
        t.write_all(&stream).unwrap();
        // Gone before (most of) the replies.
        drop(t);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Every buffer is back: 8 READs of 1 MiB pipelined find the pool full
    // (once the closed connections' last replies were dropped: retried a
    // while, a leak never recovers).
    let mut t = sock(&s);
    let mut replies = Replies::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut stream = Vec::new();
        for i in 0..8u32 {
            stream.extend(read_call(&s, 7000 + i, 40 + i, attempt, i as u64 * MIB as u64, MIB as u32));
        }
        t.write_all(&stream).unwrap();
        let mut all_ok = true;
        for _ in 0..8 {
            let (xid, status, d) = read_status(&replies.next(&mut t).unwrap());
            if status == nfsstat4::NFS4ERR_DELAY {
                all_ok = false;
                continue;
            }
            assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
            let i = xid - 7000;
            assert!(d.unwrap() == pattern(i, MIB), "xid {xid}");
        }
        if all_ok {
            break;
        }
        assert!(attempt < 30, "buffers leaked: {:?}", s.h.stats());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.h.shutdown();
    s.h.join();
}

#[test]
fn stable_write_pipelined_behind_writes_answers_after_them() {
    let s = setup(|c| c.buffers_per_reactor = 16);
    let mut t = sock(&s);
    let mut replies = Replies::new();
    let n = 10u32;
    let mut stream = Vec::new();
    for i in 0..n {
        stream.extend(write_call(&s, 1 + i, 1 + i, 1, (i as u64) * MIB as u64, &pattern(i, MIB)));
    }
    let small = pattern(77, 4096);
    let w = WRITE4args { stateid: stateid4 { seqid: 1, other: RW }, offset: n as u64 * MIB as u64, stable: stable_how4::FILE_SYNC4, data: Opaque::borrowed(&small) };
    stream.extend(call(&s, 500, 20, 1, nfs_argop4::OP_WRITE(w)));
    let before = s.h.stats();
    let sender = send(&t, stream);
    for k in 0..=n {
        let (xid, status, r) = write_result(&replies.next(&mut t).expect("reply"));
        assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
        let Some(WRITE4res::NFS4_OK(ok)) = r else { panic!() };
        if xid == 500 {
            assert_eq!(k, n, "the stable WRITE answered before the unstable ones");
            assert_eq!(ok.committed, stable_how4::DATA_SYNC4);
        } else {
            assert_eq!(ok.committed, stable_how4::UNSTABLE4);
        }
    }
    sender.join().unwrap();
    let after = s.h.stats();
    assert_eq!(after.fdatasyncs, before.fdatasyncs + 1);
    // Its sync covered every write before it: a COMMIT finds the object clean.
    t.write_all(&commit_call(&s, 600, 21, 1)).unwrap();
    let (_, status, _) = commit_result(&replies.next(&mut t).unwrap()).expect("COMMIT reply");
    assert_eq!(status, nfsstat4::NFS4_OK);
    let clean = s.h.stats();
    assert_eq!(clean.fdatasyncs, after.fdatasyncs);
    assert_eq!(clean.commits_clean, after.commits_clean + 1);
    let disk = std::fs::read(&s.path).unwrap();
    for i in 0..n as usize {
        assert!(disk[i * MIB..(i + 1) * MIB] == pattern(i as u32, MIB)[..], "write {i}");
    }
    assert!(disk[n as usize * MIB..] == small[..]);
    s.h.shutdown();
    s.h.join();
}

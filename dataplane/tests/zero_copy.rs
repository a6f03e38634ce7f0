//! Zero-copy WRITE receive over a real TCP socket: pipelined 1 MiB WRITE
//! records cut into odd fragments and sent in odd chunks land on disk with
//! no userspace copy of their data; broken fast-path records are answered
//! or closed, and the pool gets every buffer back.

mod common;

use common::*;
use pnfs_client::pnfs_protocol;
use pnfs_client::Client;
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn pipelined_large_writes_are_received_without_a_copy() {
    let s = setup(|_| {});
    let mut sock = TcpStream::connect(s.h.nfs_addr()).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // More records than the pool has buffers: each returns its buffer.
    let n = 9usize;
    let datas: Vec<Vec<u8>> = (0..n).map(|i| pattern(i as u32, MIB)).collect();
    let frag_sets: [&[usize]; 4] = [&[], &[1, 7, 150, 4093], &[200_001, 3], &[97, 97, 97, MIB / 2 + 5]];
    let mut stream = Vec::new();
    for (i, d) in datas.iter().enumerate() {
        // One record carries a trailing op after WRITE (read into the header buffer).
        let tail = if i == 4 { vec![nfs_argop4::OP_GETFH] } else { vec![] };
        let body = write_record(&s, 100 + i as u32, 1 + i as u32, (i * MIB) as u64, d, &tail);
        stream.extend(frame(&body, frag_sets[i % frag_sets.len()]));
    }
    // And an unaligned one: zero-copy receive, buffered write from the pool buffer.
    let odd = pattern(99, 100_003);
    let body = write_record(&s, 200, 20, (n * MIB + 3) as u64, &odd, &[]);
    stream.extend(frame(&body, &[13, 9000]));
    let writer = {
        let mut w = sock.try_clone().unwrap();
        std::thread::spawn(move || send_chunked(&mut w, &stream, &[1, 3, 4096 + 5, 65_537, 7, 333_333]))
    };
    let mut replies = Replies::new();
    // Asynchronous WRITEs: replies in any order.
    let mut want: Vec<u32> = (0..n as u32).map(|i| 100 + i).chain([200]).collect();
    for _ in 0..=n {
        let (xid, status, w) = write_result(&replies.next(&mut sock).expect("reply"));
        let at = want.iter().position(|&x| x == xid).unwrap_or_else(|| panic!("unexpected xid {xid}"));
        want.remove(at);
        assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
        let Some(WRITE4res::NFS4_OK(ok)) = w else { panic!("{w:?}") };
        assert_eq!(ok.count as usize, if xid < 200 { MIB } else { odd.len() });
    }
    writer.join().unwrap();

    // On disk, byte for byte.
    let disk = std::fs::read(&s.path).unwrap();
    assert_eq!(disk.len(), n * MIB + 3 + odd.len());
    for (i, d) in datas.iter().enumerate() {
        assert!(disk[i * MIB..(i + 1) * MIB] == d[..], "record {i}");
    }
    assert!(disk[n * MIB + 3..] == odd[..]);

    // READs of 1 MiB: no copy either.
    let mut c = Client::connect(s.h.nfs_addr(), 1).unwrap();
    let (got, _) = c.read(&s.fh, &stateid4 { seqid: 1, other: RW }, MIB as u64, MIB as u32).unwrap();
    assert!(got == datas[1]);

    let st = s.h.stats();
    eprintln!("{st:?} o_direct {}", s.h.ds().store.uses_o_direct());
    assert_eq!(st.payload_copies, 0);
    assert_eq!(st.zero_copy_writes, n as u64 + 1);
    assert_eq!(st.zero_copy_no_buffer, 0);
    assert_eq!(st.bytes_written, (n * MIB + odd.len()) as u64);
    if s.h.ds().store.uses_o_direct() {
        assert!(st.direct_ops >= n as u64);
    }
    s.h.shutdown();
    s.h.join();
}

#[test]
fn broken_fast_path_records_are_answered_or_closed() {
    let s = setup(|c| c.buffers_per_reactor = 2);
    let addr = s.h.nfs_addr();
    let data = pattern(1, 64 * 1024);

    // 1. The record ends inside the WRITE data (it claims 1 MiB, carries
    //    64 KiB): rebuilt and answered BADXDR on WRITE; the connection goes on.
    let mut sock = nfs(addr);
    let body = write_record(&s, 1, 1, 0, &data, &[]);
    let prefix = body.len() - data.len();
    let mut cut = body.clone();
    cut[prefix - 4..prefix].copy_from_slice(&(MIB as u32).to_be_bytes());
    sock.write_all(&frame(&cut, &[5000])).unwrap();
    let mut replies = Replies::new();
    let (xid, status, _) = write_result(&replies.next(&mut sock).unwrap());
    assert_eq!((xid, status), (1, nfsstat4::NFS4ERR_BADXDR));
    // 2. A data length beyond max I/O: the ordinary path answers it.
    let mut big = body.clone();
    big[prefix - 4..prefix].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    sock.write_all(&frame(&big, &[])).unwrap();
    let (xid, status, _) = write_result(&replies.next(&mut sock).unwrap());
    assert_eq!((xid, status), (1, nfsstat4::NFS4ERR_BADXDR));
    // 3. A good one on the same connection still works.
    let body = write_record(&s, 3, 3, 0, &data, &[]);
    sock.write_all(&frame(&body, &[100])).unwrap();
    let (xid, status, _) = write_result(&replies.next(&mut sock).unwrap());
    assert_eq!((xid, status), (3, nfsstat4::NFS4_OK));

    // 4. The peer goes away in the middle of the data: the connection is
    //    closed, its buffer goes back to the pool.
    for _ in 0..3 {
        let mut sock = nfs(addr);
        let body = write_record(&s, 4, 4, 0, &data, &[]);
        let framed = frame(&body, &[]);
        sock.write_all(&framed[..framed.len() / 2]).unwrap();
        sock.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(Replies::new().next(&mut sock).is_none());
    }
    // 5. A later fragment pushes the record over max_record_bytes while the
    //    data is being received: closed.
    let mut sock = nfs(addr);
    let body = write_record(&s, 5, 5, 0, &data, &[]);
    let mut framed = frame(&body[..prefix + 1000], &[prefix + 1000]);
    framed.truncate(framed.len() - 4); // drop the empty last fragment
    framed.extend_from_slice(&(0x8000_0000u32 | (4 * MIB as u32)).to_be_bytes());
    sock.write_all(&framed).unwrap();
    assert!(Replies::new().next(&mut sock).is_none());
    // 6. Garbage where the prefix is: not the fast path, answered as before.
    let mut sock = nfs(addr);
    let mut junk = vec![0u8; 20_000];
    junk[..4].copy_from_slice(&9u32.to_be_bytes());
    junk[7] = 0; // CALL
    junk[8..12].copy_from_slice(&2u32.to_be_bytes());
    junk[12..16].copy_from_slice(&rpc::NFS4_PROGRAM.to_be_bytes());
    junk[16..20].copy_from_slice(&4u32.to_be_bytes());
    junk[20..24].copy_from_slice(&1u32.to_be_bytes());
    junk[28..32].copy_from_slice(&0xffff_0000u32.to_be_bytes()); // cred length
    sock.write_all(&frame(&junk, &[])).unwrap();
    let rec = Replies::new().next(&mut sock).unwrap();
    assert!(matches!(rpc::parse_message(&rec), Ok(Message::Reply { xid: 9, accepted: Some(4), .. })), "GARBAGE_ARGS");

    // Every buffer came back: pipelined zero-copy writes on a new connection
    // (more than the pool holds) never find the pool empty.
    let mut sock = nfs(addr);
    let mut stream = Vec::new();
    for i in 0..5u32 {
        stream.extend(frame(&write_record(&s, 10 + i, 10 + i, 0, &data, &[]), &[]));
    }
    sock.write_all(&stream).unwrap();
    let mut replies = Replies::new();
    let mut seen = Vec::new();
    for _ in 0..5u32 {
        let (xid, status, _) = write_result(&replies.next(&mut sock).unwrap());
        assert_eq!(status, nfsstat4::NFS4_OK, "xid {xid}");
        seen.push(xid);
    }
    seen.sort();
    assert_eq!(seen, (10..15).collect::<Vec<u32>>());
    let st = s.h.stats();
    assert_eq!(st.zero_copy_no_buffer, 0);
    assert_eq!(st.payload_copies, 0);
    s.h.shutdown();
    s.h.join();
}

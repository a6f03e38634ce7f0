//! Zero-copy WRITE receive over a real TCP socket: pipelined 1 MiB WRITE
//! records cut into odd fragments and sent in odd chunks land on disk with
//! no userspace copy of their data; broken fast-path records are answered
//! or closed, and the pool gets every buffer back.

use pnfs_client::pnfs_protocol;
use pnfs_client::Client;
use pnfs_ds::control::CtlClient;
use pnfs_ds::{DsConfig, DsFh};
use pnfs_protocol::record::RecordReader;
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const MIB: usize = 1 << 20;

struct Setup {
    h: pnfs_ds::DsHandle,
    _dir: tempfile::TempDir,
    fh: [u8; 16],
    path: std::path::PathBuf,
    sessionid: sessionid4,
    /// Keeps the session's client alive.
    _client: Client,
}

const RW: [u8; 12] = [7; 12];

fn setup(configure: impl FnOnce(&mut DsConfig)) -> Setup {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DsConfig::new("zc", dir.path().to_path_buf(), &dead.to_string());
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.control_bind = "127.0.0.1:0".parse().unwrap();
    cfg.reactors = 1;
    cfg.buffers_per_reactor = 4;
    configure(&mut cfg);
    let h = pnfs_ds::run(cfg).unwrap();
    let mut ctl = CtlClient::connect(&h.control_addr().to_string(), Duration::from_secs(2)).unwrap();
    let dfh = DsFh { stripe: 0, ino: 77, generation: 1 };
    let fh = dfh.to_bytes();
    fn call(ctl: &mut CtlClient, p: u32, a: &impl XdrEncode) -> ctl_status {
        let body = ctl.call(PNFSCTL_DS_PROGRAM, p, a).unwrap();
        ctl_res::decode(&mut Decoder::new(&body)).unwrap().cr_status
    }
    assert_eq!(call(&mut ctl, CTL_PROC_OBJ_CREATE, &ctl_obj_args { coa_fh: Opaque::borrowed(&fh) }), ctl_status::CTL_OK);
    let allow = ctl_stateid_args {
        csa_stateid: stateid4 { seqid: 1, other: RW },
        csa_clientid: 1,
        csa_fh: Opaque::borrowed(&fh),
        csa_access: OPEN4_SHARE_ACCESS_BOTH,
    };
    assert_eq!(call(&mut ctl, CTL_PROC_STATEID_ALLOW, &allow), ctl_status::CTL_OK);
    let client = Client::connect(h.nfs_addr(), 1).unwrap();
    assert!(client.session().slots >= 32);
    let sessionid = client.session().sessionid;
    let path = dir.path().join("objects").join(dfh.object_name());
    Setup { h, _dir: dir, fh, path, sessionid, _client: client }
}

/// RPC call body: SEQUENCE (slot, seqid 1), PUTFH, WRITE, then `tail` ops.
fn write_record(s: &Setup, xid: u32, slot: u32, offset: u64, data: &[u8], tail: &[nfs_argop4]) -> Vec<u8> {
    let mut e = Encoder::new();
    rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
    e.put_opaque(b"zc", 1024).unwrap();
    e.put_u32(1);
    e.put_u32(3 + tail.len() as u32);
    nfs_argop4::OP_SEQUENCE(SEQUENCE4args {
        sa_sessionid: s.sessionid,
        sa_sequenceid: 1,
        sa_slotid: slot,
        sa_highest_slotid: 63,
        sa_cachethis: false,
    })
    .encode(&mut e)
    .unwrap();
    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&s.fh) }).encode(&mut e).unwrap();
    nfs_argop4::OP_WRITE(WRITE4args { stateid: stateid4 { seqid: 1, other: RW }, offset, stable: stable_how4::UNSTABLE4, data: Opaque::borrowed(data) })
        .encode(&mut e)
        .unwrap();
    for op in tail {
        op.encode(&mut e).unwrap();
    }
    e.into_inner()
}

/// Record marking with the given fragment sizes (the rest in the last one).
fn frame(body: &[u8], frags: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4 * (frags.len() + 1));
    let mut off = 0;
    for &f in frags {
        let f = f.min(body.len() - off);
        out.extend_from_slice(&(f as u32).to_be_bytes());
        out.extend_from_slice(&body[off..off + f]);
        off += f;
    }
    out.extend_from_slice(&(0x8000_0000u32 | (body.len() - off) as u32).to_be_bytes());
    out.extend_from_slice(&body[off..]);
    out
}

/// Writes `bytes` in chunks of the given sizes, cycling.
fn send_chunked(sock: &mut TcpStream, bytes: &[u8], chunks: &[usize]) {
    let mut off = 0;
    for &c in chunks.iter().cycle() {
        if off == bytes.len() {
            break;
        }
        let n = c.min(bytes.len() - off);
        sock.write_all(&bytes[off..off + n]).unwrap();
        off += n;
    }
}

struct Replies {
    rr: RecordReader,
    pending: std::collections::VecDeque<Vec<u8>>,
}

impl Replies {
    fn new() -> Replies {
        Replies { rr: RecordReader::new(4 * MIB), pending: Default::default() }
    }
    /// The next reply record; None when the server closed the connection.
    fn next(&mut self, s: &mut TcpStream) -> Option<Vec<u8>> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(r);
            }
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            self.pending.extend(self.rr.feed_all(&buf[..n]).unwrap());
        }
    }
}

/// (xid, the COMPOUND status, the WRITE result) of a reply record.
fn write_result(rec: &[u8]) -> (u32, nfsstat4, Option<WRITE4res>) {
    let Ok(Message::Reply { xid, accepted: Some(0), body }) = rpc::parse_message(rec) else { panic!("not an accepted reply") };
    let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
    let w = res.resarray.iter().find_map(|r| match r {
        nfs_resop4::OP_WRITE(w) => Some(w.clone()),
        _ => None,
    });
    (xid, res.status, w)
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8).collect()
}

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
    for i in 0..=n {
        let (xid, status, w) = write_result(&replies.next(&mut sock).expect("reply"));
        let want = if i < n { 100 + i as u32 } else { 200 };
        assert_eq!((xid, status), (want, nfsstat4::NFS4_OK));
        let Some(WRITE4res::NFS4_OK(ok)) = w else { panic!("{w:?}") };
        assert_eq!(ok.count as usize, if i < n { MIB } else { odd.len() });
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

fn nfs(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
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
    for i in 0..5u32 {
        let (xid, status, _) = write_result(&replies.next(&mut sock).unwrap());
        assert_eq!((xid, status), (10 + i, nfsstat4::NFS4_OK));
    }
    let st = s.h.stats();
    assert_eq!(st.zero_copy_no_buffer, 0);
    assert_eq!(st.payload_copies, 0);
    s.h.shutdown();
    s.h.join();
}

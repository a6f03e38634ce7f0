//! End to end on the volume backend (`ds.backing = "volume"`, a volume
//! file): pipelined 1 MiB WRITE records cut into odd fragments, received
//! zero-copy and written O_DIRECT into extents, then pipelined READs of
//! data, a hole and the end, COMMIT, the MDS's OBJ_STAT, and a restart of
//! the data server on the same volume.

mod common;

use common::*;
use pnfs_client::pnfs_protocol;
use pnfs_client::Client;
use pnfs_ds::{Backing, DsConfig};
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Opaque, XdrDecode};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const EXTENT: usize = 2 * MIB;

fn on_volume(c: &mut DsConfig) {
    c.backing = Backing::Volume;
    c.volume = Some(c.data_dir.join("volume"));
    c.volume_bytes = Some(48 << 20);
    c.volume_extent_bytes = EXTENT as u64;
    c.volume_max_objects = 16;
    // Pipelined READs hold a buffer each until their reply is sent.
    c.buffers_per_reactor = 16;
}


/// (xid, status, (eof, data)) of a READ reply record.
fn read_result(rec: &[u8]) -> (u32, nfsstat4, Option<(bool, Vec<u8>)>) {
    let Ok(Message::Reply { xid, accepted: Some(0), body }) = rpc::parse_message(rec) else { panic!("not an accepted reply") };
    let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
    let r = res.resarray.iter().find_map(|r| match r {
        nfs_resop4::OP_READ(READ4res::NFS4_OK(ok)) => Some((ok.eof, ok.data.to_vec())),
        _ => None,
    });
    (xid, res.status, r)
}

fn obj_size(h: &pnfs_ds::DsHandle, fh: &[u8]) -> u64 {
    let mut ctl = h.control_client().unwrap();
    let body = ctl.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_STAT, &ctl_obj_args { coa_fh: Opaque::borrowed(fh) }).unwrap();
    let r = ctl_stat_res::decode(&mut Decoder::new(&body)).unwrap();
    assert_eq!(r.csr_status, ctl_status::CTL_OK);
    r.csr_size
}

#[test]
fn pipelined_io_on_a_volume_file_survives_a_restart() {
    let s = setup(on_volume);
    let vol = s.h.ds().store.volume().expect("volume backend").clone();
    assert!(!s.path.exists() && !s.dir.path().join("objects").exists(), "no object files");
    let mut sock = TcpStream::connect(s.h.nfs_addr()).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();

    // Pipelined writes: 9 x 1 MiB (extents 0..4), one unaligned write across
    // the 10 MiB extent boundary, one past a hole (extent 10).
    let n = 9usize;
    let mut writes: Vec<(u64, Vec<u8>)> = (0..n).map(|i| ((i * MIB) as u64, pattern(i as u32, MIB))).collect();
    writes.push(((5 * EXTENT - 50_001) as u64, pattern(99, 100_003)));
    writes.push(((20 * MIB) as u64, pattern(100, MIB)));
    let frag_sets: [&[usize]; 3] = [&[], &[1, 7, 150, 4093], &[97, 97, MIB / 2 + 5]];
    let mut stream = Vec::new();
    for (i, (off, d)) in writes.iter().enumerate() {
        stream.extend(frame(&write_record(&s, 100 + i as u32, 1 + i as u32, *off, d, &[]), frag_sets[i % 3]));
    }
    let writer = {
        let mut w = sock.try_clone().unwrap();
        std::thread::spawn(move || send_chunked(&mut w, &stream, &[1, 3, 4096 + 5, 65_537, 7, 333_333]))
    };
    let mut replies = Replies::new();
    for (i, (_, d)) in writes.iter().enumerate() {
        let (xid, status, w) = write_result(&replies.next(&mut sock).expect("reply"));
        assert_eq!((xid, status), (100 + i as u32, nfsstat4::NFS4_OK));
        let Some(WRITE4res::NFS4_OK(ok)) = w else { panic!("{w:?}") };
        assert_eq!(ok.count as usize, d.len());
    }
    writer.join().unwrap();
    let size = (21 * MIB) as u64;
    assert_eq!(obj_size(&s.h, &s.fh), size, "the MDS sees the high-water mark");

    // Pipelined reads: every write back, a hole, a read across the end.
    let mut reads: Vec<(u64, u32, Vec<u8>)> = writes.iter().map(|(o, d)| (*o, d.len() as u32, d.clone())).collect();
    reads.push(((12 * MIB) as u64, MIB as u32, vec![0u8; MIB]));
    reads.push((size - 4096, MIB as u32, writes[n + 1].1[MIB - 4096..].to_vec()));
    let mut stream = Vec::new();
    for (i, (off, count, _)) in reads.iter().enumerate() {
        stream.extend(frame(&call_body(&s, 300 + i as u32, 20 + i as u32, 1, &[read_op(*off, *count)]), &[]));
    }
    sock.write_all(&stream).unwrap();
    for (i, (off, _, want)) in reads.iter().enumerate() {
        let (xid, status, r) = read_result(&replies.next(&mut sock).expect("reply"));
        assert_eq!((xid, status), (300 + i as u32, nfsstat4::NFS4_OK));
        let (eof, got) = r.unwrap();
        assert!(got == *want, "read {i}: {} bytes", got.len());
        assert_eq!(eof, off + got.len() as u64 == size, "read {i}");
    }

    let st = s.h.stats();
    eprintln!("{st:?} o_direct {}", vol.uses_o_direct());
    assert_eq!(st.payload_copies, 0, "zero-copy in both directions");
    assert_eq!(st.zero_copy_writes, writes.len() as u64);
    assert_eq!(st.volume_extents_allocated, 7);
    if vol.uses_o_direct() {
        assert!(st.direct_ops >= (n + reads.len()) as u64);
    }
    assert_eq!(vol.capacity().0 - vol.capacity().1, 7 * EXTENT as u64);

    // COMMIT: one flush, the entry with the new size and extents.
    let mut c = Client::connect(s.h.nfs_addr(), 1).unwrap();
    let commit = vec![
        nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&s.fh) }),
        nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 }),
    ];
    assert_eq!(c.compound(commit.clone()).unwrap().status().unwrap(), nfsstat4::NFS4_OK);
    assert_eq!(c.compound(commit).unwrap().status().unwrap(), nfsstat4::NFS4_OK);
    let st = s.h.stats();
    assert_eq!((st.fdatasyncs, st.commits_clean), (1, 1));
    drop((c, vol, sock));

    // Restart on the same volume: the object, its size and its bytes are there.
    let Setup { h, dir, cfg, fh, _client, .. } = s;
    drop(_client);
    h.shutdown();
    h.join();
    let h = pnfs_ds::run(cfg).unwrap();
    create_and_allow(&h, &fh); // OBJ_CREATE of an existing object: kept as it is
    assert_eq!(obj_size(&h, &fh), size);
    let mut c = Client::connect(h.nfs_addr(), 1).unwrap();
    let rw = stateid4 { seqid: 1, other: RW };
    for (off, d) in &writes {
        let (got, _) = c.read(&fh, &rw, *off, d.len() as u32).unwrap();
        assert!(got == *d, "after the restart, at {off}");
    }
    let (got, _) = c.read(&fh, &rw, (11 * MIB) as u64, 4096).unwrap();
    assert!(got.iter().all(|b| *b == 0));
    assert_eq!(h.stats().volume_extents_allocated, 0);
    h.shutdown();
    h.join();
    drop(dir);
}

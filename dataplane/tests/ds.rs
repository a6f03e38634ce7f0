//! End to end: a DS with a fake MDS control listener. The test drives the
//! DS's control program as the MDS would (create an object, allow stateids,
//! remove) and speaks NFSv4.1 to it as the Linux client does for pNFS I/O.

mod common;

use pnfs_client::pnfs_protocol;
use pnfs_client::net::read_record;
use pnfs_client::Client;
use pnfs_ds::mds_link::CtlClient;
use pnfs_ds::{DsConfig, DsFh};
use pnfs_protocol::control_auth::{now_ms, CallChecker, CallSigner, ControlKeys, RecentConnections};
use pnfs_protocol::record::{record_header, RecordReader};
use pnfs_protocol::rpc::{self, AcceptStat, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (ds id, client addresses, control address, capacity) of a REGISTER.
type Registered = (String, Vec<(String, String)>, String, u64);

/// What the fake MDS saw.
#[derive(Default)]
struct FakeMds {
    registers: AtomicUsize,
    heartbeats: AtomicUsize,
    last_register: Mutex<Option<Registered>>,
}

/// Answers REGISTER (epoch 7, heartbeat every 100 ms) and HEARTBEAT; the
/// first heartbeat gets CTL_UNKNOWN_DS, so the DS must register again.
fn fake_mds(keys: ControlKeys) -> (SocketAddr, Arc<FakeMds>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(FakeMds::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        for sock in l.incoming() {
            let Ok(mut sock) = sock else { return };
            let (s, keys) = (s.clone(), keys.clone());
            std::thread::spawn(move || {
                let mut checker = CallChecker::new(keys.clone());
                let recent = RecentConnections::default();
                let mut rr = RecordReader::new(1 << 20);
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    let mut off = 0;
                    while off < n {
                        let (used, rec) = rr.feed(&buf[off..n]).unwrap();
                        off += used;
                        let Some(rec) = rec else { continue };
                        let Ok(Message::Call { header, args }) = rpc::parse_message(&rec) else { panic!("bad call") };
                        assert_eq!((header.prog, header.vers), (PNFSCTL_MDS_PROGRAM, PNFSCTL_VERSION));
                        let v = checker.check(&rec, now_ms(), &recent).expect("the DS signs its control calls");
                        let mut e = Encoder::new();
                        v.begin_reply(&mut e);
                        let mut d = Decoder::new(args);
                        match header.proc_ {
                            CTL_PROC_REGISTER => {
                                let a = ctl_register_args::decode(&mut d).unwrap();
                                let addrs = a
                                    .cra_client_addrs
                                    .iter()
                                    .map(|n| (n.na_r_netid.to_str_lossy().into(), n.na_r_addr.to_str_lossy().into()))
                                    .collect();
                                *s.last_register.lock().unwrap() = Some((
                                    a.cra_ds_id.to_str_lossy().into(),
                                    addrs,
                                    a.cra_control_addr.to_str_lossy().into(),
                                    a.cra_capacity_bytes,
                                ));
                                s.registers.fetch_add(1, Ordering::SeqCst);
                                ctl_register_res { crr_status: ctl_status::CTL_OK, crr_mds_epoch: 7, crr_heartbeat_ms: 100 }
                                    .encode(&mut e)
                                    .unwrap();
                            }
                            CTL_PROC_HEARTBEAT => {
                                let a = ctl_heartbeat_args::decode(&mut d).unwrap();
                                assert_eq!(&a.cha_ds_id[..], b"ds-test");
                                let first = s.heartbeats.fetch_add(1, Ordering::SeqCst) == 0;
                                let st = if first { ctl_status::CTL_UNKNOWN_DS } else { ctl_status::CTL_OK };
                                ctl_heartbeat_res { chr_status: st }.encode(&mut e).unwrap();
                            }
                            p => panic!("unexpected MDS control proc {p}"),
                        }
                        let mut msg = e.into_inner();
                        v.seal_reply(&keys, &mut msg);
                        if sock.write_all(&record_header(msg.len())).is_err() || sock.write_all(&msg).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Ctl {
    c: CtlClient,
}

impl Ctl {
    fn call<R: for<'a> XdrDecode<'a>>(&mut self, proc_: u32, args: &impl XdrEncode) -> R {
        let body = self.c.call(PNFSCTL_DS_PROGRAM, proc_, args).unwrap();
        let mut d = Decoder::new(&body);
        let r = R::decode(&mut d).unwrap();
        assert_eq!(d.remaining(), 0);
        r
    }
    fn simple(&mut self, proc_: u32, args: &impl XdrEncode) -> ctl_status {
        self.call::<ctl_res>(proc_, args).cr_status
    }
    fn allow(&mut self, other: [u8; 12], fh: &[u8], access: u32) -> ctl_status {
        let a = ctl_stateid_args {
            csa_stateid: stateid4 { seqid: 3, other },
            csa_clientid: 0x55,
            csa_fh: Opaque::borrowed(fh),
            csa_access: access,
        };
        self.simple(CTL_PROC_STATEID_ALLOW, &a)
    }
}

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) })
}

fn sid(other: [u8; 12]) -> stateid4 {
    stateid4 { seqid: 0, other }
}

/// Status of the last op of a COMPOUND sent behind SEQUENCE.
fn status_of(c: &mut Client, ops: Vec<nfs_argop4>) -> nfsstat4 {
    c.compound(ops).unwrap().status().unwrap()
}

/// One raw EXCHANGE_ID on a fresh connection; returns (flags, server_owner, scope).
fn raw_exchange_id(addr: SocketAddr, flags: u32) -> (u32, Vec<u8>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut e = Encoder::new();
    e.put_u32(0);
    rpc::begin_call(&mut e, 77, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
    e.put_opaque(b"", 0).unwrap();
    e.put_u32(1);
    e.put_u32(1);
    nfs_argop4::OP_EXCHANGE_ID(EXCHANGE_ID4args {
        eia_clientowner: client_owner4 { co_verifier: [1; 8], co_ownerid: Opaque::borrowed(b"raw-client") },
        eia_flags: flags,
        eia_state_protect: state_protect4_a::SP4_NONE,
        eia_client_impl_id: vec![],
    })
    .encode(&mut e)
    .unwrap();
    let len = e.len() - 4;
    e.patch_u32(0, 0x8000_0000 | len as u32);
    s.write_all(&e.buf).unwrap();
    let mut rr = RecordReader::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        if let (_, Some(rec)) = rr.feed(&buf[..n]).unwrap() {
            let Ok(Message::Reply { accepted: Some(0), body, .. }) = rpc::parse_message(&rec) else { panic!() };
            let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
            let Some(nfs_resop4::OP_EXCHANGE_ID(EXCHANGE_ID4res::NFS4_OK(ok))) = res.resarray.first() else {
                panic!("{res:?}")
            };
            return (ok.eir_flags, ok.eir_server_owner.so_major_id.to_vec(), ok.eir_server_scope.to_vec());
        }
    }
}

const USE_PNFS_DS: u32 = 0x40000;

#[test]
fn ds_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = pnfs_protocol::seal::ClusterKey::test_file_in(dir.path());
    let key = pnfs_protocol::seal::ClusterKey::load(&key_file).unwrap();
    let (mds_addr, mds) = fake_mds(ControlKeys::new(&key));
    let mut cfg = DsConfig::new("ds-test", dir.path().to_path_buf(), &mds_addr.to_string());
    cfg.cluster_key_file = Some(key_file);
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.control_bind = "127.0.0.1:0".parse().unwrap();
    cfg.reactors = 2;
    cfg.buffers_per_reactor = 8;
    let h = pnfs_ds::run(cfg).unwrap();
    let nfs = h.nfs_addr();

    // Registration: the advertised address is the bound one, as a uaddr.
    wait_for("registration", || mds.registers.load(Ordering::SeqCst) >= 1);
    let (id, addrs, control, cap) = mds.last_register.lock().unwrap().clone().unwrap();
    assert_eq!(id, "ds-test");
    let p = nfs.port();
    assert_eq!(addrs, vec![("tcp".to_string(), format!("127.0.0.1.{}.{}", p >> 8, p & 255))]);
    assert_eq!(control, h.control_addr().to_string());
    assert!(cap > 0);
    // The first heartbeat answers UNKNOWN_DS: the DS registers again.
    wait_for("re-registration", || mds.registers.load(Ordering::SeqCst) >= 2);
    wait_for("heartbeats", || mds.heartbeats.load(Ordering::SeqCst) >= 3);

    // EXCHANGE_ID: USE_PNFS_DS whether asked or not, and our own identity.
    for asked in [0, USE_PNFS_DS] {
        let (flags, owner, scope) = raw_exchange_id(nfs, asked);
        assert_eq!(flags & 0x7_0000, USE_PNFS_DS, "flags {flags:#x}");
        assert!(owner.starts_with(b"pnfs-ds:ds-test:"), "{owner:?}");
        assert_eq!(owner, scope);
    }

    // The MDS creates an object and allows two stateids on it.
    let mut ctl = Ctl { c: h.control_client().unwrap() };
    let fh = DsFh { stripe: 1, ino: 1234, generation: 5 }.seal(&h.ds().fh_key);
    let obj = ctl_obj_args { coa_fh: Opaque::borrowed(&fh) };
    assert_eq!(ctl.simple(CTL_PROC_OBJ_CREATE, &obj), ctl_status::CTL_OK);
    assert_eq!(ctl.simple(CTL_PROC_OBJ_CREATE, &obj), ctl_status::CTL_OK, "create is idempotent");
    let (rw, ro, unknown) = ([7u8; 12], [8u8; 12], [9u8; 12]);
    assert_eq!(ctl.allow(rw, &fh, OPEN4_SHARE_ACCESS_BOTH), ctl_status::CTL_OK);
    assert_eq!(ctl.allow(ro, &fh, OPEN4_SHARE_ACCESS_READ), ctl_status::CTL_OK);
    assert_eq!(ctl.allow([0; 12], &fh, OPEN4_SHARE_ACCESS_READ), ctl_status::CTL_INVAL, "special stateid");
    assert_eq!(ctl.allow(rw, b"junk", OPEN4_SHARE_ACCESS_READ), ctl_status::CTL_INVAL, "bad fh");

    // NFSv4.1 session as the Linux client's DS connection would do it.
    let mut c = Client::connect(nfs, 1).unwrap();
    assert!(c.session().slots >= 1 && c.session().max_ops >= 8);
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let tail = b"unaligned tail bytes";

    // WRITE UNSTABLE (seqid 0) -> UNSTABLE4 with the boot verifier.
    let r = c
        .compound(vec![
            putfh(&fh),
            nfs_argop4::OP_WRITE(WRITE4args { stateid: sid(rw), offset: 0, stable: stable_how4::UNSTABLE4, data: Opaque::borrowed(&data) }),
        ])
        .unwrap();
    let res = r.res().unwrap();
    assert_eq!(res.status, nfsstat4::NFS4_OK);
    let Some(nfs_resop4::OP_WRITE(WRITE4res::NFS4_OK(w))) = res.resarray.get(2) else { panic!("{:?}", res.status) };
    assert_eq!(w.count, 1 << 20);
    assert_eq!(w.committed, stable_how4::UNSTABLE4);
    let verf = w.writeverf;
    // FILE_SYNC asked, DATA_SYNC answered (data durable; the size is the
    // MDS's, so the client must LAYOUTCOMMIT); odd offset and length.
    let r = c
        .compound(vec![
            putfh(&fh),
            nfs_argop4::OP_WRITE(WRITE4args {
                stateid: stateid4 { seqid: 1, other: rw },
                offset: (1 << 20) + 3,
                stable: stable_how4::FILE_SYNC4,
                data: Opaque::borrowed(tail),
            }),
        ])
        .unwrap();
    let res = r.res().unwrap();
    let Some(nfs_resop4::OP_WRITE(WRITE4res::NFS4_OK(w))) = res.resarray.get(2) else { panic!("{:?}", res.status) };
    assert_eq!((w.count, w.committed, w.writeverf), (tail.len() as u32, stable_how4::DATA_SYNC4, verf));
    // COMMIT: same verifier.
    let r = c.compound(vec![putfh(&fh), nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 })]).unwrap();
    let res = r.res().unwrap();
    let Some(nfs_resop4::OP_COMMIT(COMMIT4res::NFS4_OK(cm))) = res.resarray.get(2) else { panic!("{:?}", res.status) };
    assert_eq!(cm.writeverf, verf);

    // READ back, with the read-only stateid too; EOF at the object's end.
    let size = (1u64 << 20) + 3 + tail.len() as u64;
    let (got, eof) = c.read(&fh, &sid(rw), 0, 1 << 20).unwrap();
    assert!(got == data && !eof);
    let (got, eof) = c.read(&fh, &sid(ro), 1 << 20, 1 << 20).unwrap();
    assert!(eof);
    assert_eq!(&got[..3], &[0, 0, 0]);
    assert_eq!(&got[3..], tail);
    let (got, eof) = c.read(&fh, &sid(ro), 100, 10).unwrap();
    assert_eq!((&got[..], eof), (&data[100..110], false));
    assert_eq!(c.getattr_size(&fh).unwrap(), size);

    // Tight coupling errors.
    let read = |s: stateid4| nfs_argop4::OP_READ(READ4args { stateid: s, offset: 0, count: 10 });
    assert_eq!(status_of(&mut c, vec![putfh(&fh), read(sid(unknown))]), nfsstat4::NFS4ERR_BAD_STATEID);
    assert_eq!(status_of(&mut c, vec![putfh(&fh), read(sid([0; 12]))]), nfsstat4::NFS4ERR_BAD_STATEID, "anonymous");
    assert_eq!(status_of(&mut c, vec![putfh(&fh), read(stateid4 { seqid: u32::MAX, other: [0xff; 12] })]), nfsstat4::NFS4ERR_BAD_STATEID, "bypass");
    let write_ro = nfs_argop4::OP_WRITE(WRITE4args { stateid: sid(ro), offset: 0, stable: stable_how4::UNSTABLE4, data: Opaque::borrowed(b"x") });
    assert_eq!(status_of(&mut c, vec![putfh(&fh), write_ro]), nfsstat4::NFS4ERR_OPENMODE);
    // A stateid allowed on one object is no good on another.
    let fh2 = DsFh { stripe: 0, ino: 99, generation: 1 }.seal(&h.ds().fh_key);
    assert_eq!(ctl.simple(CTL_PROC_OBJ_CREATE, &ctl_obj_args { coa_fh: Opaque::borrowed(&fh2) }), ctl_status::CTL_OK);
    assert_eq!(status_of(&mut c, vec![putfh(&fh2), read(sid(rw))]), nfsstat4::NFS4ERR_BAD_STATEID);

    // What a DS does not do: NOTSUPP; unknown op numbers: OP_ILLEGAL.
    let open = nfs_argop4::OP_OPEN(OPEN4args {
        seqid: 0,
        share_access: OPEN4_SHARE_ACCESS_READ,
        share_deny: OPEN4_SHARE_DENY_NONE,
        owner: state_owner4 { clientid: c.session().clientid, owner: Opaque::borrowed(b"o") },
        openhow: openflag4::default(opentype4::OPEN4_NOCREATE),
        claim: open_claim4::CLAIM_NULL(Opaque::borrowed(b"f")),
    });
    assert_eq!(status_of(&mut c, vec![nfs_argop4::OP_PUTROOTFH, open]), nfsstat4::NFS4ERR_NOTSUPP);
    assert_eq!(status_of(&mut c, vec![putfh(&fh), nfs_argop4::OP_SAVEFH]), nfsstat4::NFS4ERR_NOTSUPP);
    // Handles: garbage -> BADHANDLE; the root is a directory.
    assert_eq!(status_of(&mut c, vec![putfh(b"not a ds handle")]), nfsstat4::NFS4ERR_BADHANDLE);
    // An attacker who knows the layout of handles: the bare identity, a
    // neighbour's identity under this handle's tag, another cluster's tag.
    assert_eq!(status_of(&mut c, vec![putfh(&fh[..16]), read(sid(rw))]), nfsstat4::NFS4ERR_BADHANDLE, "bare identity");
    let mut neighbour = fh;
    neighbour[11] ^= 1;
    assert_eq!(status_of(&mut c, vec![putfh(&neighbour), read(sid(rw))]), nfsstat4::NFS4ERR_BADHANDLE, "altered inode");
    let foreign = DsFh { stripe: 1, ino: 1234, generation: 5 }.seal(&pnfs_protocol::seal::TagKey::ephemeral());
    assert_eq!(status_of(&mut c, vec![putfh(&foreign), read(sid(rw))]), nfsstat4::NFS4ERR_BADHANDLE, "foreign key");
    assert_eq!(status_of(&mut c, vec![nfs_argop4::OP_PUTROOTFH, read(sid(rw))]), nfsstat4::NFS4ERR_ISDIR);
    let r = c.compound(vec![nfs_argop4::OP_PUTROOTFH, nfs_argop4::OP_GETFH]).unwrap();
    let res = r.res().unwrap();
    let Some(nfs_resop4::OP_GETFH(GETFH4res::NFS4_OK(g))) = res.resarray.get(2) else { panic!() };
    assert_eq!(&g.object[..], &DsFh::ROOT.seal(&h.ds().fh_key));

    // Control-program view of the same object.
    let st: ctl_stat_res = ctl.call(CTL_PROC_OBJ_STAT, &obj);
    assert_eq!((st.csr_status, st.csr_size), (ctl_status::CTL_OK, size));
    let body = ctl
        .c
        .call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_READ, &ctl_read_args { cra_fh: Opaque::borrowed(&fh), cra_offset: 1000, cra_count: 5000 })
        .unwrap();
    let rd = ctl_read_res::decode(&mut Decoder::new(&body)).unwrap();
    assert_eq!((rd.crs_status, rd.crs_eof, &rd.crs_data[..]), (ctl_status::CTL_OK, false, &data[1000..6000]));
    let wr = ctl_write_args { cwa_fh: Opaque::borrowed(&fh), cwa_offset: 10, cwa_stable: true, cwa_data: Opaque::borrowed(b"PROXY") };
    assert_eq!(ctl.simple(CTL_PROC_OBJ_WRITE, &wr), ctl_status::CTL_OK);
    assert_eq!(c.read(&fh, &sid(rw), 8, 9).unwrap().0, [&data[8..10], b"PROXY", &data[15..17]].concat());
    assert_eq!(ctl.simple(CTL_PROC_OBJ_COMMIT, &obj), ctl_status::CTL_OK);
    let tr = ctl_truncate_args { cta_fh: Opaque::borrowed(&fh), cta_size: 4096 };
    assert_eq!(ctl.simple(CTL_PROC_OBJ_TRUNCATE, &tr), ctl_status::CTL_OK);
    assert_eq!(c.getattr_size(&fh).unwrap(), 4096);

    // Revoke: the stateid stops working.
    let rv = ctl_revoke_args { cva_stateid: sid(ro) };
    assert_eq!(ctl.simple(CTL_PROC_STATEID_REVOKE, &rv), ctl_status::CTL_OK);
    assert_eq!(ctl.simple(CTL_PROC_STATEID_REVOKE, &rv), ctl_status::CTL_OK, "revoke is idempotent");
    assert_eq!(status_of(&mut c, vec![putfh(&fh), read(sid(ro))]), nfsstat4::NFS4ERR_BAD_STATEID);

    // Several connections, spread over the reactors, all see the same state.
    let mut others: Vec<Client> = (0..4).map(|_| Client::connect(nfs, 1).unwrap()).collect();
    for (i, o) in others.iter_mut().enumerate() {
        let (got, _) = o.read(&fh, &sid(rw), 0, 4096).unwrap();
        assert_eq!(got.len(), 4096, "client {i}");
    }

    // Remove: STALE afterwards (PUTFH), and removing again is fine.
    assert_eq!(ctl.simple(CTL_PROC_OBJ_REMOVE, &obj), ctl_status::CTL_OK);
    assert_eq!(ctl.simple(CTL_PROC_OBJ_REMOVE, &obj), ctl_status::CTL_OK);
    assert_eq!(status_of(&mut c, vec![putfh(&fh), read(sid(rw))]), nfsstat4::NFS4ERR_STALE);
    assert_eq!(status_of(&mut c, vec![putfh(&DsFh { stripe: 0, ino: 5, generation: 5 }.seal(&h.ds().fh_key))]), nfsstat4::NFS4ERR_STALE);
    // Every reactor had the object open (the reads above): each dropped it
    // before OBJ_REMOVE was answered.
    for (i, o) in others.iter_mut().enumerate() {
        assert_eq!(status_of(o, vec![putfh(&fh), read(sid(rw))]), nfsstat4::NFS4ERR_STALE, "client {i}");
    }
    let st: ctl_stat_res = ctl.call(CTL_PROC_OBJ_STAT, &obj);
    assert_eq!(st.csr_status, ctl_status::CTL_NOENT);

    // Counters.
    let s = h.stats();
    assert_eq!(s.bytes_written, (1 << 20) + tail.len() as u64);
    assert!(s.bytes_read >= (1 << 20) + 4096 * 4);
    assert!(s.op("write") >= 3 && s.op("read") >= 8 && s.op("commit") == 1 && s.op("notsupp") == 2);
    // The FILE_SYNC write synced everything written before; the COMMIT
    // after it found the object clean.
    assert_eq!((s.fdatasyncs, s.commits_clean), (1, 1));
    // Every failed op counts as an error of its kind (NOTSUPP always fails;
    // PUTFH of a removed object is STALE); each kind's latency histogram
    // counts its ops.
    assert_eq!(s.op_errors("notsupp"), 2);
    assert!(s.op_errors("putfh") >= 2 && s.op_errors("putfh") < s.op("putfh"));
    assert!(s.op_errors("sequence") < s.op("sequence"));
    for (name, h) in &s.latency {
        assert_eq!(h.count, s.op(name), "{name}");
        assert!(h.count == 0 || h.sum_ns > 0, "{name}");
    }
    assert!(s.connections_accepted >= 7);
    assert_eq!(s.control_bytes_written, 5);
    // Published to the reactors: 3 creates, 2 allows (not the invalid ones),
    // 2 revokes, 2 removes; none failed.
    assert_eq!((s.control_updates, s.control_update_failures), (9, 0));
    // One aligned O_DIRECT write copied once; READ payloads are never copied
    // (only tiny cached replies are flattened).
    eprintln!("{s:?}");

    h.shutdown();
    let t = Instant::now();
    h.join();
    assert!(t.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t.elapsed());
}

#[test]
fn starts_without_an_mds_and_bad_config_is_refused() {
    // Nothing listens on the MDS address: the DS still serves.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config_without_mds("lonely", dir.path());
    cfg.buffers_per_reactor = 2;
    let t = Instant::now();
    let h = pnfs_ds::run(cfg.clone()).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    let mut c = Client::connect(h.nfs_addr(), 2).unwrap();
    assert_eq!(c.compound(vec![nfs_argop4::OP_PUTROOTFH]).unwrap().status().unwrap(), nfsstat4::NFS4_OK);
    h.shutdown();
    h.join();

    let mut bad = cfg.clone();
    bad.id = String::new();
    assert!(pnfs_ds::run(bad).err().unwrap().starts_with("ds.id:"));
    // The NFS port is taken (not with SO_REUSEPORT): the error names ds.bind.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut bad = cfg;
    bad.bind = taken.local_addr().unwrap();
    assert!(pnfs_ds::run(bad).err().unwrap().starts_with("ds.bind"));
}

#[test]
fn malformed_input_is_answered_or_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config_without_mds("rough", dir.path());
    cfg.buffers_per_reactor = 2;
    let h = pnfs_ds::run(cfg).unwrap();
    let accept_stat = |rec: &[u8]| match rpc::parse_message(rec) {
        Ok(Message::Reply { accepted, .. }) => accepted,
        other => panic!("{other:?}"),
    };
    for addr in [h.nfs_addr(), h.control_addr()] {
        // A record claiming 2 GiB: the connection is closed, nothing allocated.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&0xffff_fff0u32.to_be_bytes()).unwrap();
        assert!(read_record(&mut s).is_none());
    }
    // A call header cut short: GARBAGE_ARGS on NFS; on the control program
    // an AUTH_ERROR (nothing unauthenticated is parsed further) and closed.
    let junk = [0, 0, 0, 9, 0, 0, 0, 0, 0, 0];
    let mut s = TcpStream::connect(h.nfs_addr()).unwrap();
    s.write_all(&record_header(junk.len())).unwrap();
    s.write_all(&junk).unwrap();
    assert_eq!(accept_stat(&read_record(&mut s).unwrap()), Some(AcceptStat::GarbageArgs as u32));
    // Wrong program: PROG_UNAVAIL.
    let mut e = Encoder::new();
    rpc::begin_call(&mut e, 5, 100005, 3, 0, false);
    s.write_all(&record_header(e.len())).unwrap();
    s.write_all(&e.buf).unwrap();
    assert_eq!(accept_stat(&read_record(&mut s).unwrap()), Some(AcceptStat::ProgUnavail as u32));
    let mut s = TcpStream::connect(h.control_addr()).unwrap();
    s.write_all(&record_header(junk.len())).unwrap();
    s.write_all(&junk).unwrap();
    assert_eq!(accept_stat(&read_record(&mut s).unwrap()), None, "denied");
    assert!(read_record(&mut s).is_none(), "and closed");
    // Signed, but for another program: PROG_UNAVAIL.
    let mut signer = CallSigner::new(h.ds().control_keys.clone(), 0);
    let mut s = TcpStream::connect(h.control_addr()).unwrap();
    let mut e = Encoder::new();
    signer.encode_call(&mut e, 5, 100005, 3, 0, &[], now_ms());
    s.write_all(&record_header(e.len())).unwrap();
    s.write_all(&e.buf).unwrap();
    assert_eq!(accept_stat(&read_record(&mut s).unwrap()), Some(AcceptStat::ProgUnavail as u32));
    // COMPOUND with undecodable arguments: GARBAGE_ARGS or an NFS error, never a hang.
    let mut s = TcpStream::connect(h.nfs_addr()).unwrap();
    for body in [&[0u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 22][..], &[0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff][..], &[0xff; 3][..]] {
        let mut e = Encoder::new();
        rpc::begin_call(&mut e, 6, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
        e.buf.extend_from_slice(body);
        s.write_all(&record_header(e.len())).unwrap();
        s.write_all(&e.buf).unwrap();
        let rec = read_record(&mut s).unwrap();
        assert!(accept_stat(&rec).is_some());
    }
    // Control call (signed) with trailing junk after its arguments: GARBAGE_ARGS.
    let mut s = TcpStream::connect(h.control_addr()).unwrap();
    let mut args = Encoder::new();
    ctl_obj_args { coa_fh: Opaque::borrowed(&DsFh { stripe: 0, ino: 3, generation: 1 }.to_bytes()) }.encode(&mut args).unwrap();
    args.put_u32(1);
    let mut e = Encoder::new();
    CallSigner::new(h.ds().control_keys.clone(), 0).encode_call(&mut e, 7, PNFSCTL_DS_PROGRAM, PNFSCTL_VERSION, CTL_PROC_OBJ_CREATE, &args.buf, now_ms());
    s.write_all(&record_header(e.len())).unwrap();
    s.write_all(&e.buf).unwrap();
    assert_eq!(accept_stat(&read_record(&mut s).unwrap()), Some(AcceptStat::GarbageArgs as u32));
    // Still serving.
    let mut c = Client::connect(h.nfs_addr(), 1).unwrap();
    assert_eq!(c.compound(vec![nfs_argop4::OP_PUTROOTFH]).unwrap().status().unwrap(), nfsstat4::NFS4_OK);
    h.shutdown();
    h.join();
}

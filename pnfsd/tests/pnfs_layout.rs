//! The MDS side of pNFS end to end, with two fake data servers: small
//! control-program servers (PNFSCTL_DS_PROGRAM) keeping objects in memory.
//!
//! They register with the MDS control listener; then an NFSv4.1 client
//! opens a file, gets a files layout and the device info (checked to decode
//! as nfsv4_1_file_layout4 / nfsv4_1_file_layout_ds_addr4 with the
//! registered addresses), writes through the MDS (the bytes must land in
//! the DS objects at the dense-striping object offsets), reads back,
//! LAYOUTCOMMITs a larger size, returns the layout, and closes and removes
//! the file (stateid revoked, objects removed on the data servers).

use pnfs_client::pnfs_protocol::control_auth::{now_ms, CallChecker, ControlKeys, RecentConnections, Verified};
use pnfs_client::pnfs_protocol::record::{record_header, RecordReader};
use pnfs_client::pnfs_protocol::rpc::{self, Message};
use pnfs_client::pnfs_protocol::seal::ClusterKey;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::{Decoder, Encoder, XdrDecode, XdrEncode};
use pnfs_client::layout::{layoutcommit_to, whole_file_layoutget, whole_file_layoutreturn};
use pnfs_client::Client;
use pnfs_mds::pnfs::client::CtlClient;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SU: u64 = 64 * 1024;

#[derive(Default)]
struct FakeDs {
    objects: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    allowed: Mutex<HashMap<[u8; 12], (u64, Vec<u8>, u32)>>,
    revoked: Mutex<Vec<[u8; 12]>>,
    removed: Mutex<Vec<Vec<u8>>>,
}

fn ok_reply<T: XdrEncode>(v: &Verified, res: &T) -> Vec<u8> {
    let mut e = Encoder::new();
    v.begin_reply(&mut e);
    res.encode(&mut e).unwrap();
    e.into_inner()
}

/// The cluster key the MDS made in `dir` (mds.metadata_dir = dir/meta).
fn control_keys(dir: &std::path::Path) -> ControlKeys {
    ControlKeys::new(&ClusterKey::load(&dir.join("meta/cluster.key")).unwrap())
}

impl FakeDs {
    fn allow(&self, a: &ctl_stateid_args) {
        self.allowed.lock().unwrap().insert(a.csa_stateid.other, (a.csa_clientid, a.csa_fh.to_vec(), a.csa_access));
    }

    fn revoke(&self, a: &ctl_revoke_args) {
        self.allowed.lock().unwrap().remove(&a.cva_stateid.other);
        self.revoked.lock().unwrap().push(a.cva_stateid.other);
    }

    fn handle(&self, rec: &[u8], v: &Verified) -> Vec<u8> {
        let Ok(Message::Call { header, args }) = rpc::parse_message(rec) else { panic!("not a call") };
        assert_eq!(header.prog, PNFSCTL_DS_PROGRAM);
        assert_eq!(header.vers, PNFSCTL_VERSION);
        let mut d = Decoder::new(args);
        let ok = ctl_res { cr_status: ctl_status::CTL_OK };
        let mut objs = self.objects.lock().unwrap();
        match header.proc_ {
            CTL_PROC_OBJ_CREATE => {
                let a = ctl_obj_args::decode(&mut d).unwrap();
                objs.entry(a.coa_fh.to_vec()).or_default();
                ok_reply(v, &ok)
            }
            CTL_PROC_OBJ_TRUNCATE => {
                let a = ctl_truncate_args::decode(&mut d).unwrap();
                objs.entry(a.cta_fh.to_vec()).or_default().resize(a.cta_size as usize, 0);
                ok_reply(v, &ok)
            }
            CTL_PROC_OBJ_REMOVE => {
                let a = ctl_obj_args::decode(&mut d).unwrap();
                objs.remove(&a.coa_fh[..]);
                self.removed.lock().unwrap().push(a.coa_fh.to_vec());
                ok_reply(v, &ok)
            }
            CTL_PROC_OBJ_WRITE => {
                let a = ctl_write_args::decode(&mut d).unwrap();
                let o = objs.get_mut(&a.cwa_fh[..]).expect("write to a created object");
                let end = a.cwa_offset as usize + a.cwa_data.len();
                if o.len() < end {
                    o.resize(end, 0);
                }
                o[a.cwa_offset as usize..end].copy_from_slice(&a.cwa_data);
                ok_reply(v, &ok)
            }
            CTL_PROC_OBJ_READ => {
                let a = ctl_read_args::decode(&mut d).unwrap();
                let o = objs.get(&a.cra_fh[..]).cloned().unwrap_or_default();
                let s = (a.cra_offset as usize).min(o.len());
                let e = (s + a.cra_count as usize).min(o.len());
                let res = ctl_read_res { crs_status: ctl_status::CTL_OK, crs_eof: e == o.len(), crs_data: o[s..e].to_vec().into() };
                ok_reply(v, &res)
            }
            CTL_PROC_OBJ_COMMIT => ok_reply(v, &ok),
            CTL_PROC_OBJ_STAT => {
                let a = ctl_obj_args::decode(&mut d).unwrap();
                let (status, len) = match objs.get(&a.coa_fh[..]) {
                    Some(o) => (ctl_status::CTL_OK, o.len() as u64),
                    None => (ctl_status::CTL_NOENT, 0),
                };
                let res = ctl_stat_res {
                    csr_status: status,
                    csr_size: len,
                    csr_space_used: len,
                    csr_mtime: nfstime4 { seconds: 0, nseconds: 0 },
                };
                ok_reply(v, &res)
            }
            CTL_PROC_STATEID_ALLOW => {
                self.allow(&ctl_stateid_args::decode(&mut d).unwrap());
                ok_reply(v, &ok)
            }
            CTL_PROC_STATEID_REVOKE => {
                self.revoke(&ctl_revoke_args::decode(&mut d).unwrap());
                ok_reply(v, &ok)
            }
            CTL_PROC_STATEID_BATCH => {
                let a = ctl_batch_args::decode(&mut d).unwrap();
                for c in &a.cba_changes {
                    match c {
                        ctl_stateid_change::CTL_CHANGE_ALLOW(a) => self.allow(a),
                        ctl_stateid_change::CTL_CHANGE_REVOKE(r) => self.revoke(r),
                    }
                }
                ok_reply(v, &ctl_batch_res { cbr_status: vec![ctl_status::CTL_OK; a.cba_changes.len()] })
            }
            p => panic!("unexpected control procedure {p}"),
        }
    }

    /// Serves the control program on a fresh port, checking the calls as a
    /// real DS does with the key the MDS in `dir` made; returns its address.
    fn start(self: &Arc<Self>, dir: &std::path::Path) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let me = self.clone();
        let keys = control_keys(dir);
        let recent = Arc::new(RecentConnections::default());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let (me, keys, recent) = (me.clone(), keys.clone(), recent.clone());
                std::thread::spawn(move || {
                    let mut checker = CallChecker::new(keys.clone());
                    let mut rr = RecordReader::new(8 << 20);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut off = 0;
                        while off < n {
                            let (used, rec) = rr.feed(&buf[off..n]).unwrap();
                            off += used;
                            if let Some(rec) = rec {
                                let v = checker.check(&rec, now_ms(), &recent).expect("the MDS signs its control calls");
                                let mut r = me.handle(&rec, &v);
                                v.seal_reply(&keys, &mut r);
                                s.write_all(&record_header(r.len())).unwrap();
                                s.write_all(&r).unwrap();
                            }
                        }
                    }
                });
            }
        });
        addr
    }
}

fn register(dir: &std::path::Path, mds_control: SocketAddr, id: &str, uaddr: &str, control: SocketAddr) -> ctl_register_res {
    let args = ctl_register_args {
        cra_ds_id: id.as_bytes().into(),
        cra_client_addrs: vec![netaddr4 { na_r_netid: "tcp".into(), na_r_addr: uaddr.into() }],
        cra_control_addr: control.to_string().into_bytes().into(),
        cra_capacity_bytes: 1 << 40,
        cra_free_bytes: 1 << 39,
    };
    let body = CtlClient::new(control_keys(dir), 0).call(&mds_control.to_string(), PNFSCTL_MDS_PROGRAM, CTL_PROC_REGISTER, &args).unwrap();
    ctl_register_res::decode(&mut Decoder::new(&body)).unwrap()
}

fn start_mds(dir: &std::path::Path) -> (SocketAddr, SocketAddr) {
    start_mds_with_lease(dir, 60)
}

fn start_mds_with_lease(dir: &std::path::Path, lease: u32) -> (SocketAddr, SocketAddr) {
    start_mds_cfg(dir, lease, "")
}

#[path = "../../controlplane/tests/common/mod.rs"]
mod common;

/// `extra` lines go into the [mds] table.
fn start_mds_cfg(dir: &std::path::Path, lease: u32, extra: &str) -> (SocketAddr, SocketAddr) {
    let extra = format!("stripe_unit = {SU}\nds_dead_after_ms = 600000\nlease_seconds = {lease}\ngrace_seconds = 5\n{extra}");
    common::start_pnfs_mds(dir, &extra)
}

/// `n` fake data servers, started and registered with the MDS as ds-0...
fn start_fake_dses(dir: &std::path::Path, ctl_addr: SocketAddr, n: usize) -> Vec<Arc<FakeDs>> {
    let ds: Vec<Arc<FakeDs>> = (0..n).map(|_| Arc::new(FakeDs::default())).collect();
    for (i, d) in ds.iter().enumerate() {
        let control = d.start(dir);
        assert_eq!(register(dir, ctl_addr, &format!("ds-{i}"), "127.0.0.1.78.81", control).crr_status, ctl_status::CTL_OK);
    }
    ds
}

/// A client that keeps a recalled layout (here: it has no back channel, so
/// the recall cannot even be delivered) is fenced after a lease: its open
/// stateid is revoked on the MDS and on the data servers, and SEQUENCE says
/// RECALLABLE_STATE_REVOKED until it frees the state.
#[test]
fn client_keeping_a_recalled_layout_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let lease = 5;
    let (nfs_addr, ctl_addr) = start_mds_with_lease(dir.path(), lease);
    let ds = start_fake_dses(dir.path(), ctl_addr, 2);
    let mut a = Client::connect(nfs_addr, 1).unwrap();
    let root = a.lookup_path("/export").unwrap();
    let (fh, open_sid) = a.open(&root, "held", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let lg = a
        .compound_ok(
            vec![
                putfh(&fh),
                whole_file_layoutget(stateid4 { seqid: 0, other: open_sid.other }, layoutiomode4::LAYOUTIOMODE4_RW, 4096, 4096),
            ],
            |r| match &r[1] {
                nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(_)) => Ok(()),
                other => panic!("{other:?}"),
            },
        );
    lg.unwrap();
    assert!(ds[0].allowed.lock().unwrap().contains_key(&open_sid.other));
    a.write(&fh, &open_sid, 0, b"some data to cut", stable_how4::FILE_SYNC4).unwrap();
    // Another client truncates the file: the MDS recalls A's layout.
    let mut b = Client::connect(nfs_addr, 1).unwrap();
    let broot = b.lookup_path("/export").unwrap();
    let (bfh, bsid) = b.open(&broot, "held", false, OPEN4_SHARE_ACCESS_WRITE).unwrap();
    b.setattr_size(&bfh, &bsid, 0).unwrap();
    assert_eq!(b.getattr_size(&bfh).unwrap(), 0);
    // A then writes to a data server directly and never sends LAYOUTCOMMIT.
    {
        let mut objs = ds[0].objects.lock().unwrap();
        let obj = objs.values_mut().next().expect("DS 0 holds an object of the file");
        obj.extend_from_slice(b"written behind the MDS's back");
    }
    // A keeps renewing its lease but never returns the layout.
    let deadline = Instant::now() + Duration::from_secs(lease as u64 * 3);
    let flags = loop {
        let reply = a.compound(vec![]).unwrap();
        let res = reply.res().unwrap();
        let flags = match &res.resarray[0] {
            nfs_resop4::OP_SEQUENCE(SEQUENCE4res::NFS4_OK(ok)) => ok.sr_status_flags,
            other => panic!("{other:?}"),
        };
        if flags & SEQ4_STATUS_RECALLABLE_STATE_REVOKED != 0 || Instant::now() > deadline {
            break flags;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_ne!(flags & SEQ4_STATUS_RECALLABLE_STATE_REVOKED, 0, "client was not fenced within 3 leases");
    // Its open stateid is refused by the MDS and was revoked on the DSes.
    let err = a.write(&fh, &open_sid, 0, b"late", stable_how4::FILE_SYNC4).unwrap_err();
    assert_eq!(err.status(), Some(nfsstat4::NFS4ERR_ADMIN_REVOKED), "{err:?}");
    // The revoke reaches the DSes right after the state is marked (poll briefly).
    let t = Instant::now();
    while ds.iter().any(|d| d.allowed.lock().unwrap().contains_key(&open_sid.other)) {
        assert!(t.elapsed() < Duration::from_secs(5), "DS still accepts the fenced stateid");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The fenced writer's data on the DSes stays visible: the size grew.
    assert!(b.getattr_size(&bfh).unwrap() > 0, "size not taken from the data servers after fencing");
    // FREE_STATEID clears the condition.
    a.compound_ok(vec![nfs_argop4::OP_FREE_STATEID(FREE_STATEID4args { fsa_stateid: open_sid.clone() })], |_| Ok(())).unwrap();
    let reply = a.compound(vec![]).unwrap();
    match &reply.res().unwrap().resarray[0] {
        nfs_resop4::OP_SEQUENCE(SEQUENCE4res::NFS4_OK(ok)) => assert_eq!(ok.sr_status_flags & SEQ4_STATUS_RECALLABLE_STATE_REVOKED, 0),
        other => panic!("{other:?}"),
    }
}

/// Placement policy: a directory's `pnfs.stripe_count` xattr (set over
/// NFSv4.2 SETXATTR, as `setfattr -n user.pnfs.stripe_count` would) applies
/// to files created below it; elsewhere all data servers are used.
#[test]
fn directory_xattr_sets_the_stripe_count() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let _ds = start_fake_dses(dir.path(), ctl_addr, 3);
    let mut c = Client::connect(nfs_addr, 2).unwrap();
    let root = c.lookup_path("/export").unwrap();
    let narrow = c.mkdir(&root, "narrow").unwrap();
    c.compound_ok(
        vec![
            putfh(&narrow),
            nfs_argop4::OP_SETXATTR(SETXATTR4args {
                sxa_option: setxattr_option4::SETXATTR4_EITHER,
                sxa_key: b"pnfs.stripe_count".as_slice().into(),
                sxa_value: b"1".as_slice().into(),
            }),
        ],
        |_| Ok(()),
    )
    .unwrap();
    let sub = c.mkdir(&narrow, "sub").unwrap();
    let stripes = |c: &mut Client, dir: &[u8], name: &str| {
        let (fh, sid) = c.open(dir, name, true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
        c.compound_ok(
            vec![
                putfh(&fh),
                whole_file_layoutget(stateid4 { seqid: 0, other: sid.other }, layoutiomode4::LAYOUTIOMODE4_RW, 4096, 4096),
            ],
            |r| match &r[1] {
                nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(ok)) => {
                    let body = nfsv4_1_file_layout4::decode(&mut Decoder::new(&ok.logr_layout[0].lo_content.loc_body)).unwrap();
                    Ok(body.nfl_fh_list.len())
                }
                other => panic!("{other:?}"),
            },
        )
        .unwrap()
    };
    assert_eq!(stripes(&mut c, &root, "wide"), 3, "default: every live DS");
    assert_eq!(stripes(&mut c, &narrow, "one"), 1, "directory xattr");
    assert_eq!(stripes(&mut c, &sub, "inherited"), 1, "inherited from the parent directory");
}

/// With mds.layout_return_on_close the layout says so, and the client's last
/// CLOSE of the file returns it: the layout stateid is gone afterwards.
#[test]
fn return_on_close_drops_the_layout_at_last_close() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds_cfg(dir.path(), 60, "layout_return_on_close = true");
    let d = Arc::new(FakeDs::default());
    let control = d.start(dir.path());
    assert_eq!(register(dir.path(), ctl_addr, "ds-0", "127.0.0.1.78.81", control).crr_status, ctl_status::CTL_OK);
    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    let (fh, sid) = c.open(&root, "roc", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let (roc, lsid) = c
        .compound_ok(
            vec![
                putfh(&fh),
                whole_file_layoutget(stateid4 { seqid: 0, other: sid.other }, layoutiomode4::LAYOUTIOMODE4_RW, 4096, 4096),
            ],
            |r| match &r[1] {
                nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(ok)) => Ok((ok.logr_return_on_close, ok.logr_stateid.clone())),
                other => panic!("{other:?}"),
            },
        )
        .unwrap();
    assert!(roc);
    let test = |c: &mut Client, s: &stateid4| {
        c.compound_ok(vec![nfs_argop4::OP_TEST_STATEID(TEST_STATEID4args { ts_stateids: vec![s.clone()] })], |r| match &r[0] {
            nfs_resop4::OP_TEST_STATEID(TEST_STATEID4res::NFS4_OK(ok)) => Ok(ok.tsr_status_codes[0]),
            other => panic!("{other:?}"),
        })
        .unwrap()
    };
    assert_eq!(test(&mut c, &lsid), nfsstat4::NFS4_OK);
    c.close(&fh, &sid).unwrap();
    assert_eq!(test(&mut c, &lsid), nfsstat4::NFS4ERR_BAD_STATEID);
}

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() })
}

#[test]
fn layouts_devices_and_io_through_the_mds() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let ds: Vec<Arc<FakeDs>> = (0..2).map(|_| Arc::new(FakeDs::default())).collect();
    let uaddrs = ["127.0.0.1.78.81", "127.0.0.2.78.82"];
    for (i, d) in ds.iter().enumerate() {
        let control = d.start(dir.path());
        let r = register(dir.path(), ctl_addr, &format!("ds-{i}"), uaddrs[i], control);
        assert_eq!(r.crr_status, ctl_status::CTL_OK);
        assert!(r.crr_heartbeat_ms > 0);
    }
    // Heartbeats: known DS ok, unknown DS told to register.
    let hb = |id: &str| {
        let a = ctl_heartbeat_args { cha_ds_id: id.as_bytes().into(), cha_free_bytes: 1 << 39, cha_bytes_read: 0, cha_bytes_written: 0 };
        let body = CtlClient::new(control_keys(dir.path()), 0).call(&ctl_addr.to_string(), PNFSCTL_MDS_PROGRAM, CTL_PROC_HEARTBEAT, &a).unwrap();
        ctl_heartbeat_res::decode(&mut Decoder::new(&body)).unwrap().chr_status
    };
    assert_eq!(hb("ds-0"), ctl_status::CTL_OK);
    assert_eq!(hb("nobody"), ctl_status::CTL_UNKNOWN_DS);

    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();

    // fs_layout_types = [LAYOUT4_NFSV4_1_FILES], layout_blksize = stripe unit.
    let vals = c
        .compound_ok(
            vec![putfh(&root), nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![0, 1 << (62 - 32), 1 << (65 - 64)] })],
            |r| match &r[1] {
                nfs_resop4::OP_GETATTR(GETATTR4res::NFS4_OK(ok)) => {
                    assert_eq!(ok.obj_attributes.attrmask, vec![0, 1 << 30, 1 << 1]);
                    Ok(ok.obj_attributes.attr_vals.to_vec())
                }
                other => panic!("{other:?}"),
            },
        )
        .unwrap();
    assert_eq!(vals, [0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0]);

    let (fh, open_sid) = c.open(&root, "f", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();

    // LAYOUTGET with the open stateid (seqid 0 = current).
    let layoutget = |c: &mut Client, sid: stateid4, iomode: layoutiomode4, maxcount: u32| {
        let ops = vec![
            putfh(&fh),
            whole_file_layoutget(sid, iomode, 4096, maxcount),
        ];
        let reply = c.compound(ops).unwrap();
        let res = reply.res().unwrap();
        match &res.resarray[2] {
            nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(ok)) => Ok(ok.clone().into_owned_layout()),
            nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::default(s)) => Err(*s),
            other => panic!("{other:?}"),
        }
    };
    let zero_seq = stateid4 { seqid: 0, other: open_sid.other };
    assert_eq!(layoutget(&mut c, zero_seq.clone(), layoutiomode4::LAYOUTIOMODE4_RW, 64).unwrap_err(), nfsstat4::NFS4ERR_TOOSMALL);
    let lg = layoutget(&mut c, zero_seq.clone(), layoutiomode4::LAYOUTIOMODE4_RW, 4096).unwrap();
    assert_eq!(lg.stateid.seqid, 1);
    assert_ne!(lg.stateid.other, open_sid.other);
    assert!(!lg.return_on_close);
    assert_eq!((lg.offset, lg.length, lg.iomode), (0, u64::MAX, layoutiomode4::LAYOUTIOMODE4_RW));
    let body = nfsv4_1_file_layout4::decode(&mut Decoder::new(&lg.body)).unwrap();
    assert_eq!(body.nfl_util, SU as u32 | NFL4_UFLG_DENSE);
    assert_eq!(body.nfl_pattern_offset, 0);
    assert_eq!(body.nfl_fh_list.len(), 2);
    assert!(body.nfl_first_stripe_index < 2);
    for (j, f) in body.nfl_fh_list.iter().enumerate() {
        // 16-byte identity plus the cluster key's 16-byte tag.
        assert_eq!(f.len(), 32);
        assert_eq!((f[0], f[1], f[2]), (b'D', 1, j as u8));
    }
    // A second LAYOUTGET with the layout stateid bumps the same stateid.
    let lg2 = layoutget(&mut c, lg.stateid.clone(), layoutiomode4::LAYOUTIOMODE4_RW, 4096).unwrap();
    assert_eq!((lg2.stateid.other, lg2.stateid.seqid), (lg.stateid.other, 2));
    // So does one presenting the open stateid again (one layout stateid per client and file).
    let lg3 = layoutget(&mut c, zero_seq.clone(), layoutiomode4::LAYOUTIOMODE4_READ, 4096).unwrap();
    assert_eq!((lg3.stateid.other, lg3.stateid.seqid), (lg.stateid.other, 3));
    // A seqid from the future is refused.
    let future = stateid4 { seqid: 9, other: lg.stateid.other };
    assert_eq!(layoutget(&mut c, future, layoutiomode4::LAYOUTIOMODE4_RW, 4096).unwrap_err(), nfsstat4::NFS4ERR_BAD_STATEID);

    // Tight coupling: each DS was told about the open stateid, on its own DS filehandle.
    for (i, d) in ds.iter().enumerate() {
        let allowed = d.allowed.lock().unwrap();
        let (clientid, dsfh, access) = allowed.get(&open_sid.other).unwrap_or_else(|| panic!("DS {i} not told"));
        assert_eq!(*clientid, c.session().clientid);
        assert_eq!(*access, OPEN4_SHARE_ACCESS_BOTH);
        // Stripe set is in DS index order: DS i holds stripe i.
        assert_eq!(&dsfh[..], &body.nfl_fh_list[i][..16], "control calls name the identity; clients get it sealed");
    }

    // GETDEVICEINFO: too small first, then the real thing.
    let getdeviceinfo = |c: &mut Client, maxcount: u32| {
        let ops = vec![nfs_argop4::OP_GETDEVICEINFO(GETDEVICEINFO4args {
            gdia_device_id: body.nfl_deviceid,
            gdia_layout_type: layouttype4::LAYOUT4_NFSV4_1_FILES,
            gdia_maxcount: maxcount,
            gdia_notify_types: vec![],
        })];
        let reply = c.compound(ops).unwrap();
        let res = reply.res().unwrap();
        match &res.resarray[1] {
            nfs_resop4::OP_GETDEVICEINFO(GETDEVICEINFO4res::NFS4_OK(ok)) => {
                assert_eq!(ok.gdir_device_addr.da_layout_type, layouttype4::LAYOUT4_NFSV4_1_FILES);
                assert!(ok.gdir_notification.iter().all(|w| *w == 0));
                Ok(ok.gdir_device_addr.da_addr_body.to_vec())
            }
            nfs_resop4::OP_GETDEVICEINFO(GETDEVICEINFO4res::NFS4ERR_TOOSMALL(n)) => Err(*n),
            other => panic!("{other:?}"),
        }
    };
    let needed = getdeviceinfo(&mut c, 16).unwrap_err();
    let dev = getdeviceinfo(&mut c, needed).unwrap();
    let addr = nfsv4_1_file_layout_ds_addr4::decode(&mut Decoder::new(&dev)).unwrap();
    assert_eq!(addr.nflda_stripe_indices, vec![0, 1]);
    assert_eq!(addr.nflda_multipath_ds_list.len(), 2);
    for (i, l) in addr.nflda_multipath_ds_list.iter().enumerate() {
        assert_eq!(l.len(), 1);
        assert_eq!(&l[0].na_r_netid[..], b"tcp");
        assert_eq!(&l[0].na_r_addr[..], uaddrs[i].as_bytes());
    }
    // GETDEVICELIST knows the device.
    let list = c
        .compound_ok(
            vec![
                putfh(&root),
                nfs_argop4::OP_GETDEVICELIST(GETDEVICELIST4args {
                    gdla_layout_type: layouttype4::LAYOUT4_NFSV4_1_FILES,
                    gdla_maxdevices: 16,
                    gdla_cookie: 0,
                    gdla_cookieverf: [0; 8],
                }),
            ],
            |r| match &r[1] {
                nfs_resop4::OP_GETDEVICELIST(GETDEVICELIST4res::NFS4_OK(ok)) => Ok((ok.gdlr_deviceid_list.clone(), ok.gdlr_eof)),
                other => panic!("{other:?}"),
            },
        )
        .unwrap();
    assert_eq!(list, (vec![body.nfl_deviceid], true));

    // WRITE through the MDS (the client's fallback path): 200 KiB + 123.
    let data: Vec<u8> = (0..(200 * 1024 + 123)).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(c.write(&fh, &zero_seq, 0, &data, stable_how4::FILE_SYNC4).unwrap() as usize, data.len());
    let first = body.nfl_first_stripe_index as u64;
    for (o, b) in data.iter().enumerate() {
        let o = o as u64;
        let j = ((o / SU + first) % 2) as usize;
        let obj = (o / (SU * 2)) * SU + o % SU;
        let objs = ds[j].objects.lock().unwrap();
        let object = objs.get(&body.nfl_fh_list[j][..16]).unwrap();
        assert_eq!(object.get(obj as usize), Some(b), "file offset {o} (stripe {j}, object offset {obj})");
    }
    let back = c.read_upto(&fh, &zero_seq, data.len(), 100_000).unwrap();
    assert!(back == data, "read back differs");
    assert_eq!(c.getattr_size(&fh).unwrap(), data.len() as u64);

    // LAYOUTCOMMIT as after DS writes: the size grows to last byte + 1.
    let commit = |c: &mut Client, last: u64| {
        let ops = vec![
            putfh(&fh),
            layoutcommit_to(lg3.stateid.clone(), last + 1),
        ];
        c.compound_ok(ops, |r| match &r[1] {
            nfs_resop4::OP_LAYOUTCOMMIT(LAYOUTCOMMIT4res::NFS4_OK(ok)) => Ok(ok.locr_newsize.clone()),
            other => panic!("{other:?}"),
        })
        .unwrap()
    };
    assert_eq!(commit(&mut c, 299_999), newsize4::TRUE(300_000));
    assert_eq!(c.getattr_size(&fh).unwrap(), 300_000);
    assert_eq!(commit(&mut c, 10), newsize4::FALSE);
    assert_eq!(c.getattr_size(&fh).unwrap(), 300_000);

    // TEST_STATEID knows the layout stateid; LAYOUTRETURN of READ keeps it
    // (RW still held, seqid bumped), of RW drops it.
    let test = |c: &mut Client, s: &stateid4| {
        c.compound_ok(vec![nfs_argop4::OP_TEST_STATEID(TEST_STATEID4args { ts_stateids: vec![s.clone()] })], |r| match &r[0] {
            nfs_resop4::OP_TEST_STATEID(TEST_STATEID4res::NFS4_OK(ok)) => Ok(ok.tsr_status_codes[0]),
            other => panic!("{other:?}"),
        })
        .unwrap()
    };
    assert_eq!(test(&mut c, &lg3.stateid), nfsstat4::NFS4_OK);
    let layoutreturn = |c: &mut Client, s: &stateid4, iomode| {
        let ops = vec![
            putfh(&fh),
            whole_file_layoutreturn(s.clone(), iomode),
        ];
        c.compound_ok(ops, |r| match &r[1] {
            nfs_resop4::OP_LAYOUTRETURN(LAYOUTRETURN4res::NFS4_OK(x)) => Ok(x.clone()),
            other => panic!("{other:?}"),
        })
        .unwrap()
    };
    let kept = layoutreturn(&mut c, &lg3.stateid, layoutiomode4::LAYOUTIOMODE4_READ);
    let layoutreturn_stateid::TRUE(kept) = kept else { panic!("{kept:?}") };
    assert_eq!((kept.other, kept.seqid), (lg.stateid.other, 4));
    assert_eq!(layoutreturn(&mut c, &kept, layoutiomode4::LAYOUTIOMODE4_RW), layoutreturn_stateid::FALSE);
    assert_eq!(test(&mut c, &kept), nfsstat4::NFS4ERR_BAD_STATEID);

    // A new layout after the return gets a new layout stateid (seqid 1);
    // FREE_STATEID recognises it.
    let lg4 = layoutget(&mut c, zero_seq.clone(), layoutiomode4::LAYOUTIOMODE4_READ, 4096).unwrap();
    assert_eq!(lg4.stateid.seqid, 1);
    c.compound_ok(vec![nfs_argop4::OP_FREE_STATEID(FREE_STATEID4args { fsa_stateid: lg4.stateid.clone() })], |_| Ok(()))
        .unwrap();
    assert_eq!(test(&mut c, &lg4.stateid), nfsstat4::NFS4ERR_BAD_STATEID);

    // SETATTR size (truncate) reaches the objects with per-object sizes.
    let size_attr = fattr4 { attrmask: vec![1 << 4], attr_vals: 100_000u64.to_be_bytes().to_vec().into() };
    c.compound_ok(vec![putfh(&fh), nfs_argop4::OP_SETATTR(SETATTR4args { stateid: open_sid.clone(), obj_attributes: size_attr })], |_| {
        Ok(())
    })
    .unwrap();
    let total: usize = (0..2).map(|j| ds[j].objects.lock().unwrap()[&body.nfl_fh_list[j][..16]].len()).sum();
    assert_eq!(total, 100_000);

    // CLOSE revokes the open stateid on the data servers; REMOVE removes the objects.
    c.close(&fh, &open_sid).unwrap();
    for d in &ds {
        assert!(d.revoked.lock().unwrap().contains(&open_sid.other));
        assert!(d.allowed.lock().unwrap().is_empty());
    }
    c.remove(&root, "f").unwrap();
    for (j, d) in ds.iter().enumerate() {
        // Freed once the unlink is durable, off the request path (unlinked.rs).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while d.removed.lock().unwrap().is_empty() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(d.removed.lock().unwrap().as_slice(), &[body.nfl_fh_list[j][..16].to_vec()]);
        assert!(d.objects.lock().unwrap().is_empty());
    }
}

/// What the test needs of a LAYOUTGET4resok, owned.
#[derive(Debug)]
struct Granted {
    return_on_close: bool,
    stateid: stateid4,
    offset: u64,
    length: u64,
    iomode: layoutiomode4,
    body: Vec<u8>,
}

trait IntoGranted {
    fn into_owned_layout(self) -> Granted;
}

impl IntoGranted for LAYOUTGET4resok<'_> {
    fn into_owned_layout(self) -> Granted {
        assert_eq!(self.logr_layout.len(), 1, "exactly one layout");
        let l = &self.logr_layout[0];
        assert_eq!(l.lo_content.loc_type, layouttype4::LAYOUT4_NFSV4_1_FILES);
        Granted {
            return_on_close: self.logr_return_on_close,
            stateid: self.logr_stateid.clone(),
            offset: l.lo_offset,
            length: l.lo_length,
            iomode: l.lo_iomode,
            body: l.lo_content.loc_body.to_vec(),
        }
    }
}

//! Delegations end to end over TCP (ops/deleg.rs), with pnfs-client:
//! - a client with a back channel gets a write delegation; another client's
//!   conflicting OPEN answers NFS4ERR_DELAY and makes the MDS send CB_RECALL
//!   naming the delegation; the OPEN keeps getting DELAY until DELEGRETURN,
//!   then succeeds; the file is not delegated again right after a recall;
//! - a holder that keeps renewing its lease but never returns a recalled
//!   delegation loses it after a lease: the conflicting OPEN goes ahead, the
//!   holder sees DELEG_REVOKED (I/O, TEST_STATEID) and
//!   SEQ4_STATUS_RECALLABLE_STATE_REVOKED until FREE_STATEID;
//! - `delegations = false` grants none, and WANT_NO_DELEG is honoured;
//!   WANT_DELEGATION grants one later, OPEN with CLAIM_DELEG_CUR_FH opens under it.

use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::{CallbackHandler, Client, Error};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

fn start_mds(dir: &Path, extra: &str) -> SocketAddr {
    common::start_mds(dir, &format!("lease_seconds = 5\n{extra}")).0
}

type Recalls = Arc<Mutex<Vec<stateid4>>>;

/// A client with a back channel that records the CB_RECALLs it gets and
/// answers them OK (returning is up to the test).
fn holder(addr: SocketAddr) -> (Client, Recalls) {
    let seen: Recalls = Arc::default();
    let handler: CallbackHandler = {
        let seen = seen.clone();
        Box::new(move |a: &CB_COMPOUND4args| {
            for op in &a.argarray {
                if let nfs_cb_argop4::OP_CB_RECALL(r) = op {
                    seen.lock().unwrap().push(r.stateid.clone());
                }
            }
            nfsstat4::NFS4_OK
        })
    };
    (Client::connect_with_callbacks(addr, 2, handler).unwrap(), seen)
}

/// OPEN (creating `name`) with `access` (WANT_* bits included); returns the
/// filehandle, the open stateid and the delegation answered.
fn open(c: &mut Client, dir: &[u8], name: &str, access: u32) -> Result<(Vec<u8>, stateid4, open_delegation4<'static>), Error> {
    let clientid = c.session().clientid;
    let ops = vec![
        nfs_argop4::OP_PUTFH(PUTFH4args { object: dir.into() }),
        nfs_argop4::OP_OPEN(OPEN4args {
            seqid: 0,
            share_access: access,
            share_deny: OPEN4_SHARE_DENY_NONE,
            owner: state_owner4 { clientid, owner: b"deleg-test".as_slice().into() },
            openhow: openflag4::OPEN4_CREATE(createhow4::UNCHECKED4(fattr4 { attrmask: vec![], attr_vals: vec![].into() })),
            claim: open_claim4::CLAIM_NULL(name.as_bytes().into()),
        }),
        nfs_argop4::OP_GETFH,
    ];
    c.compound_ok(ops, |r| {
        let (nfs_resop4::OP_OPEN(OPEN4res::NFS4_OK(o)), nfs_resop4::OP_GETFH(GETFH4res::NFS4_OK(g))) = (&r[1], &r[2]) else {
            panic!("{r:?}")
        };
        let deleg = match &o.delegation {
            open_delegation4::OPEN_DELEGATE_NONE => open_delegation4::OPEN_DELEGATE_NONE,
            open_delegation4::OPEN_DELEGATE_NONE_EXT(w) => open_delegation4::OPEN_DELEGATE_NONE_EXT(w.clone()),
            open_delegation4::OPEN_DELEGATE_READ(d) => open_delegation4::OPEN_DELEGATE_READ(open_read_delegation4 {
                stateid: d.stateid.clone(),
                recall: d.recall,
                permissions: nfsace4 { r#type: 0, flag: 0, access_mask: 0, who: b"".as_slice().into() },
            }),
            open_delegation4::OPEN_DELEGATE_WRITE(d) => open_delegation4::OPEN_DELEGATE_WRITE(open_write_delegation4 {
                stateid: d.stateid.clone(),
                recall: d.recall,
                space_limit: d.space_limit.clone(),
                permissions: nfsace4 { r#type: 0, flag: 0, access_mask: 0, who: b"".as_slice().into() },
            }),
        };
        Ok((g.object.to_vec(), o.stateid.clone(), deleg))
    })
}

fn deleg_stateid(d: &open_delegation4) -> stateid4 {
    match d {
        open_delegation4::OPEN_DELEGATE_READ(r) => r.stateid.clone(),
        open_delegation4::OPEN_DELEGATE_WRITE(w) => w.stateid.clone(),
        other => panic!("no delegation: {other:?}"),
    }
}

fn is_delay(r: &Result<(Vec<u8>, stateid4, open_delegation4<'static>), Error>) -> bool {
    matches!(r, Err(Error::Nfs { status: nfsstat4::NFS4ERR_DELAY, .. }))
}

fn delegreturn(c: &mut Client, fh: &[u8], sid: &stateid4) -> Result<(), Error> {
    let ops = vec![nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() }), nfs_argop4::OP_DELEGRETURN(DELEGRETURN4args { deleg_stateid: sid.clone() })];
    c.compound_ok(ops, |_| Ok(()))
}

/// SEQUENCE alone; its status flags.
fn sequence_flags(c: &mut Client) -> u32 {
    let reply = c.compound(vec![]).unwrap();
    let res = reply.res().unwrap();
    match &res.resarray[0] {
        nfs_resop4::OP_SEQUENCE(SEQUENCE4res::NFS4_OK(ok)) => ok.sr_status_flags,
        other => panic!("{other:?}"),
    }
}

#[test]
fn conflicting_open_recalls_and_waits_for_delegreturn() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_mds(dir.path(), "");
    let (mut a, recalls) = holder(addr);
    let root = a.lookup_path("/export").unwrap();
    let (fh, _open, d) = open(&mut a, &root, "f", OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_WRITE_DELEG).unwrap();
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_WRITE(_)), "{d:?}");
    let dsid = deleg_stateid(&d);
    // The holder writes under its delegation stateid.
    a.write(&fh, &dsid, 0, b"delegated", stable_how4::FILE_SYNC4).unwrap();

    // B has no back channel: it gets no delegation; its read open conflicts.
    let mut b = Client::connect(addr, 2).unwrap();
    b.set_retry_for(Duration::ZERO);
    let broot = b.lookup_path("/export").unwrap();
    assert!(is_delay(&open(&mut b, &broot, "f", OPEN4_SHARE_ACCESS_READ)));
    // The recall reaches the holder, naming the delegation.
    let until = Instant::now() + Duration::from_secs(10);
    while recalls.lock().unwrap().is_empty() && Instant::now() < until {
        a.poll_callbacks(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(recalls.lock().unwrap().iter().map(|s| s.other).collect::<Vec<_>>(), vec![dsid.other]);
    // Still DELAY while the delegation is out; recalled once only.
    assert!(is_delay(&open(&mut b, &broot, "f", OPEN4_SHARE_ACCESS_READ)));
    a.poll_callbacks(Duration::from_millis(200)).unwrap();
    assert_eq!(recalls.lock().unwrap().len(), 1);

    delegreturn(&mut a, &fh, &dsid).unwrap();
    let (_, _, bd) = open(&mut b, &broot, "f", OPEN4_SHARE_ACCESS_READ).unwrap();
    assert!(matches!(bd, open_delegation4::OPEN_DELEGATE_NONE), "no back channel, no delegation: {bd:?}");
    assert_eq!(b.read(&fh, &stateid4 { seqid: 0, other: [0; 12] }, 0, 100).unwrap().0, b"delegated");
    // Returned: the stateid is gone; the file was recalled lately, so no new
    // delegation (the client asked, so it is told why).
    assert!(delegreturn(&mut a, &fh, &dsid).is_err());
    let (_, _, again) = open(&mut a, &root, "f", OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WANT_READ_DELEG).unwrap();
    assert!(matches!(again, open_delegation4::OPEN_DELEGATE_NONE_EXT(open_none_delegation4::WND4_CONTENTION(_))), "{again:?}");
    // A read delegation lets other clients' read opens through.
    let (_, _, r1) = open(&mut a, &root, "r", OPEN4_SHARE_ACCESS_READ).unwrap();
    assert!(matches!(r1, open_delegation4::OPEN_DELEGATE_READ(_)), "{r1:?}");
    let (_, _, r2) = open(&mut b, &broot, "r", OPEN4_SHARE_ACCESS_READ).unwrap();
    assert!(matches!(r2, open_delegation4::OPEN_DELEGATE_NONE), "{r2:?}");
}

#[test]
fn unreturned_delegation_is_revoked_after_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_mds(dir.path(), "");
    let (mut a, recalls) = holder(addr);
    let root = a.lookup_path("/export").unwrap();
    let (fh, _open, d) = open(&mut a, &root, "g", OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WANT_READ_DELEG).unwrap();
    let dsid = deleg_stateid(&d);
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_READ(_)), "{d:?}");

    // The holder keeps its lease (and answers the recall) but never returns.
    let stop = Arc::new(Mutex::new(false));
    let renewer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !*stop.lock().unwrap() {
                a.poll_callbacks(Duration::from_millis(200)).unwrap();
                a.compound(vec![]).unwrap();
            }
            a
        })
    };
    let revoked_before = metric("delegations_revoked_total");
    let mut b = Client::connect(addr, 2).unwrap();
    b.set_retry_for(Duration::from_secs(30));
    let broot = b.lookup_path("/export").unwrap();
    let started = Instant::now();
    open(&mut b, &broot, "g", OPEN4_SHARE_ACCESS_WRITE).unwrap();
    let waited = started.elapsed();
    *stop.lock().unwrap() = true;
    let mut a = renewer.join().unwrap();
    assert!(waited >= Duration::from_secs(4), "the OPEN went ahead after {waited:?}, before the lease (5 s) passed");
    assert_eq!(recalls.lock().unwrap().len(), 1);

    let r = a.read(&fh, &dsid, 0, 10);
    assert!(matches!(r, Err(Error::Nfs { status: nfsstat4::NFS4ERR_DELEG_REVOKED, .. })), "{r:?}");
    assert!(metric("delegations_revoked_total") > revoked_before, "the revocation is counted");
    assert_ne!(sequence_flags(&mut a) & SEQ4_STATUS_RECALLABLE_STATE_REVOKED, 0);
    let test = vec![nfs_argop4::OP_TEST_STATEID(TEST_STATEID4args { ts_stateids: vec![dsid.clone()] })];
    let codes = a
        .compound_ok(test, |r| match &r[0] {
            nfs_resop4::OP_TEST_STATEID(TEST_STATEID4res::NFS4_OK(ok)) => Ok(ok.tsr_status_codes.clone()),
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert_eq!(codes, vec![nfsstat4::NFS4ERR_DELEG_REVOKED]);
    let free = vec![nfs_argop4::OP_FREE_STATEID(FREE_STATEID4args { fsa_stateid: dsid })];
    a.compound_ok(free, |_| Ok(())).unwrap();
    assert_eq!(sequence_flags(&mut a) & SEQ4_STATUS_RECALLABLE_STATE_REVOKED, 0);
}

#[test]
fn switch_off_and_no_deleg_grant_none() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_mds(dir.path(), "delegations = false");
    let (mut a, _) = holder(addr);
    let root = a.lookup_path("/export").unwrap();
    let (_, _, d) = open(&mut a, &root, "h", OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WANT_READ_DELEG).unwrap();
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_NONE_EXT(open_none_delegation4::WND4_RESOURCE(_))), "{d:?}");
    let (_, _, d) = open(&mut a, &root, "h", OPEN4_SHARE_ACCESS_BOTH).unwrap();
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_NONE), "{d:?}");

    let dir = tempfile::tempdir().unwrap();
    let addr = start_mds(dir.path(), "");
    let (mut a, _) = holder(addr);
    let root = a.lookup_path("/export").unwrap();
    let (_, _, d) = open(&mut a, &root, "h", OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_NONE_EXT(open_none_delegation4::default(why_no_delegation4::WND4_NOT_WANTED))), "{d:?}");
    let (_, _, d) = open(&mut a, &root, "h", OPEN4_SHARE_ACCESS_READ).unwrap();
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_READ(_)), "{d:?}");

    // WANT_DELEGATION on a file opened without one; then an OPEN under it.
    let (fh, open_sid, d) = open(&mut a, &root, "w", OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_NONE_EXT(_)), "{d:?}");
    let want = |a: &mut Client, want: u32| {
        let ops = vec![
            nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.as_slice().into() }),
            nfs_argop4::OP_WANT_DELEGATION(WANT_DELEGATION4args { wda_want: want, wda_claim: deleg_claim4::CLAIM_FH }),
        ];
        a.compound_ok(ops, |r| match &r[1] {
            nfs_resop4::OP_WANT_DELEGATION(WANT_DELEGATION4res::NFS4_OK(d)) => {
                let sid = match d {
                    open_delegation4::OPEN_DELEGATE_READ(r) => Some(r.stateid.clone()),
                    _ => None,
                };
                Ok((sid, format!("{d:?}")))
            }
            other => panic!("{other:?}"),
        })
        .unwrap()
    };
    assert!(want(&mut a, OPEN4_SHARE_ACCESS_WANT_CANCEL).1.contains("WND4_CANCELLED"));
    let (sid, got) = want(&mut a, OPEN4_SHARE_ACCESS_WANT_READ_DELEG);
    let sid = sid.unwrap_or_else(|| panic!("no read delegation: {got}"));
    let (_, again) = want(&mut a, OPEN4_SHARE_ACCESS_WANT_WRITE_DELEG);
    assert!(again.contains("WND4_NOT_SUPP_UPGRADE"), "{again}");
    // An open under the delegation (CLAIM_DELEG_CUR_FH), as the Linux client
    // sends when it returns one; a stateid that is no delegation is refused.
    let clientid = a.session().clientid;
    let open_cur = |a: &mut Client, s: &stateid4| {
        let ops = vec![
            nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.as_slice().into() }),
            nfs_argop4::OP_OPEN(OPEN4args {
                seqid: 0,
                share_access: OPEN4_SHARE_ACCESS_READ,
                share_deny: OPEN4_SHARE_DENY_NONE,
                owner: state_owner4 { clientid, owner: b"other-owner".as_slice().into() },
                openhow: openflag4::default(opentype4::OPEN4_NOCREATE),
                claim: open_claim4::CLAIM_DELEG_CUR_FH(s.clone()),
            }),
        ];
        a.compound_ok(ops, |_| Ok(()))
    };
    open_cur(&mut a, &sid).unwrap();
    let r = open_cur(&mut a, &open_sid);
    assert!(matches!(r, Err(Error::Nfs { status: nfsstat4::NFS4ERR_BAD_STATEID, .. })), "{r:?}");
}

/// Tight coupling (RFC 8881 13.9.2): the data server accepts I/O with the
/// delegation stateid once the holder has a layout, and refuses it after
/// DELEGRETURN.
#[test]
fn delegation_stateids_reach_the_data_servers() {
    use pnfs_client::pnfs_protocol::{Decoder, XdrDecode};
    let dir = tempfile::tempdir().unwrap();
    let (addr, ctl) = common::start_pnfs_mds(dir.path(), "stripe_unit = 65536");
    let _ds = common::start_dses(dir.path(), ctl, 1);

    let (mut a, _) = holder(addr);
    let root = a.lookup_path("/export").unwrap();
    let (fh, _open, d) = open(&mut a, &root, "p", OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_WRITE_DELEG).unwrap();
    let dsid = deleg_stateid(&d);
    let putfh = |fh: &[u8]| nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.to_vec().into() });
    // LAYOUTGET with the delegation stateid, as the Linux client does.
    let ops = vec![
        putfh(&fh),
        nfs_argop4::OP_LAYOUTGET(LAYOUTGET4args {
            loga_signal_layout_avail: false,
            loga_layout_type: layouttype4::LAYOUT4_NFSV4_1_FILES,
            loga_iomode: layoutiomode4::LAYOUTIOMODE4_RW,
            loga_offset: 0,
            loga_length: u64::MAX,
            loga_minlength: 4096,
            loga_stateid: dsid.clone(),
            loga_maxcount: 4096,
        }),
    ];
    let body = a
        .compound_ok(ops, |r| match &r[1] {
            nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(ok)) => Ok(ok.logr_layout[0].lo_content.loc_body.to_vec()),
            other => panic!("{other:?}"),
        })
        .unwrap();
    let layout = nfsv4_1_file_layout4::decode(&mut Decoder::new(&body)).unwrap();
    let devinfo = vec![nfs_argop4::OP_GETDEVICEINFO(GETDEVICEINFO4args {
        gdia_device_id: layout.nfl_deviceid,
        gdia_layout_type: layouttype4::LAYOUT4_NFSV4_1_FILES,
        gdia_maxcount: 4096,
        gdia_notify_types: vec![],
    })];
    let dev = a
        .compound_ok(devinfo, |r| match &r[0] {
            nfs_resop4::OP_GETDEVICEINFO(GETDEVICEINFO4res::NFS4_OK(ok)) => Ok(ok.gdir_device_addr.da_addr_body.to_vec()),
            other => panic!("{other:?}"),
        })
        .unwrap();
    let dev = nfsv4_1_file_layout_ds_addr4::decode(&mut Decoder::new(&dev)).unwrap();
    let ds_addr = pnfs_protocol::mds_ds::uaddr::parse(&String::from_utf8(dev.nflda_multipath_ds_list[0][0].na_r_addr.to_vec()).unwrap()).unwrap();
    let mut ds = Client::connect_as(ds_addr, &a).unwrap();
    ds.set_retry_for(Duration::ZERO);
    let write = |ds: &mut Client, sid: &stateid4| {
        let ops = vec![
            putfh(&layout.nfl_fh_list[0]),
            nfs_argop4::OP_WRITE(WRITE4args { stateid: sid.clone(), offset: 0, stable: stable_how4::FILE_SYNC4, data: b"via ds".to_vec().into() }),
        ];
        ds.compound_ok(ops, |_| Ok(()))
    };
    write(&mut ds, &dsid).unwrap();
    delegreturn(&mut a, &fh, &dsid).unwrap();
    // The revocation is pushed before DELEGRETURN is answered.
    let r = write(&mut ds, &dsid);
    assert!(matches!(r, Err(Error::Nfs { .. })), "a returned delegation still writes on the data server: {r:?}");
}

/// Waits (bounded) until `recalls` holds `n` entries, answering callbacks.
fn wait_recalls(c: &mut Client, recalls: &Recalls, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while recalls.lock().unwrap().len() < n && Instant::now() < until {
        c.poll_callbacks(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(recalls.lock().unwrap().len(), n, "CB_RECALL not received");
}

/// RFC 8881 10.4 / RFC 7862: the NFSv4.2 operations that change a file
/// (ALLOCATE, DEALLOCATE, COPY and CLONE into it) by another client recall
/// its delegation first, answering NFS4ERR_DELAY until it is returned, as
/// WRITE does; COPY out of a read-delegated file needs no recall.
#[test]
fn v42_changes_by_another_client_recall_delegations() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_mds(dir.path(), "delegation_recall_cooldown_seconds = 0");
    let (mut a, recalls) = holder(addr);
    let root = a.lookup_path("/export").unwrap();
    let mut b = Client::connect(addr, 2).unwrap();
    b.set_retry_for(Duration::ZERO);
    let broot = b.lookup_path("/export").unwrap();
    let anon = stateid4 { seqid: 0, other: [0; 12] };
    let src = b.write_file(&broot, "src", &[7u8; 8192]).unwrap();
    let putfh = |fh: &[u8]| nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.to_vec().into() });
    let change = |name: &str, fh: &[u8]| -> Vec<nfs_argop4<'static>> {
        let op = match name {
            "ALLOCATE" => nfs_argop4::OP_ALLOCATE(ALLOCATE4args { aa_stateid: anon.clone(), aa_offset: 0, aa_length: 4096 }),
            "DEALLOCATE" => nfs_argop4::OP_DEALLOCATE(DEALLOCATE4args { da_stateid: anon.clone(), da_offset: 0, da_length: 4096 }),
            "COPY" => nfs_argop4::OP_COPY(COPY4args {
                ca_src_stateid: anon.clone(),
                ca_dst_stateid: anon.clone(),
                ca_src_offset: 0,
                ca_dst_offset: 0,
                ca_count: 4096,
                ca_consecutive: true,
                ca_synchronous: true,
                ca_source_server: vec![],
            }),
            _ => nfs_argop4::OP_CLONE(CLONE4args {
                cl_src_stateid: anon.clone(),
                cl_dst_stateid: anon.clone(),
                cl_src_offset: 0,
                cl_dst_offset: 0,
                cl_count: 4096,
            }),
        };
        vec![putfh(&src), nfs_argop4::OP_SAVEFH, putfh(fh), op]
    };
    for (n, name) in ["ALLOCATE", "DEALLOCATE", "COPY", "CLONE"].into_iter().enumerate() {
        let file = format!("v{n}");
        let (fh, _, d) = open(&mut a, &root, &file, OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WANT_READ_DELEG).unwrap();
        let dsid = deleg_stateid(&d);
        let r = b.compound_ok(change(name, &fh), |_| Ok(()));
        assert!(matches!(r, Err(Error::Nfs { status: nfsstat4::NFS4ERR_DELAY, .. })), "{name} under another client's delegation: {r:?}");
        wait_recalls(&mut a, &recalls, n + 1);
        assert_eq!(recalls.lock().unwrap()[n].other, dsid.other, "{name} recalled another delegation");
        delegreturn(&mut a, &fh, &dsid).unwrap();
        b.compound_ok(change(name, &fh), |_| Ok(())).unwrap_or_else(|e| panic!("{name} after DELEGRETURN: {e:?}"));
    }
    // Reading the source under its holder's read delegation recalls nothing.
    let (sfh, _, d) = open(&mut a, &root, "src2", OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WANT_READ_DELEG).unwrap();
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_READ(_)), "{d:?}");
    let dst = b.create_file(&broot, "dst").unwrap();
    let mut ops = change("COPY", &dst);
    ops[0] = putfh(&sfh);
    b.compound_ok(ops, |_| Ok(())).unwrap();
    a.poll_callbacks(Duration::from_millis(200)).unwrap();
    assert_eq!(recalls.lock().unwrap().len(), 4);
}

/// A value of the MDS metrics (process-wide: tests running beside this
/// one add to them, so the tests compare with lower bounds).
fn metric(name: &str) -> u64 {
    let text = pnfs_mds::metrics::metrics().encode();
    let prefix = format!("pnfs_mds_{name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {name} in {text}")).parse().unwrap()
}

/// Another client's GETATTR of size on a write-delegated file asks the
/// holder (CB_GETATTR) from the pool; a holder that answers without the
/// attributes is recalled instead (DELAY until DELEGRETURN). The
/// delegation metrics count the grant, the recall and the return.
#[test]
fn getattr_of_a_write_delegated_file_asks_the_holder_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_mds(dir.path(), "delegation_recall_cooldown_seconds = 0");
    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let handler: CallbackHandler = {
        let seen = seen.clone();
        Box::new(move |a: &CB_COMPOUND4args| {
            for op in &a.argarray {
                match op {
                    nfs_cb_argop4::OP_CB_GETATTR(_) => seen.lock().unwrap().push("CB_GETATTR"),
                    nfs_cb_argop4::OP_CB_RECALL(_) => seen.lock().unwrap().push("CB_RECALL"),
                    _ => {}
                }
            }
            nfsstat4::NFS4_OK
        })
    };
    let mut a = Client::connect_with_callbacks(addr, 2, handler).unwrap();
    let root = a.lookup_path("/export").unwrap();
    let granted = pnfs_mds::metrics::metrics().encode();
    let writes_before: u64 =
        granted.lines().find_map(|l| l.strip_prefix("pnfs_mds_delegations_granted_total{kind=\"write\"} ")).unwrap().parse().unwrap();
    let (recalled, returned) = (metric("delegations_recalled_total"), metric("delegations_returned_total"));
    let (fh, _, d) = open(&mut a, &root, "m", OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_WRITE_DELEG).unwrap();
    let dsid = deleg_stateid(&d);
    assert!(matches!(d, open_delegation4::OPEN_DELEGATE_WRITE(_)), "{d:?}");
    let text = pnfs_mds::metrics::metrics().encode();
    let writes: u64 = text.lines().find_map(|l| l.strip_prefix("pnfs_mds_delegations_granted_total{kind=\"write\"} ")).unwrap().parse().unwrap();
    assert!(writes > writes_before, "the grant is counted: {text}");
    assert!(metric("delegations_held") >= 1);
    // The holder's own GETATTR asks nobody.
    a.getattr_size(&fh).unwrap();

    let stop = Arc::new(Mutex::new(false));
    let answering = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !*stop.lock().unwrap() {
                a.poll_callbacks(Duration::from_millis(50)).unwrap();
            }
            a
        })
    };
    let mut b = Client::connect(addr, 2).unwrap();
    b.set_retry_for(Duration::ZERO);
    let r = b.getattr_size(&fh);
    assert!(matches!(r, Err(Error::Nfs { status: nfsstat4::NFS4ERR_DELAY, .. })), "{r:?}");
    let until = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    *stop.lock().unwrap() = true;
    let mut a = answering.join().unwrap();
    assert_eq!(*seen.lock().unwrap(), ["CB_GETATTR", "CB_RECALL"]);
    assert!(metric("delegations_recalled_total") > recalled);
    delegreturn(&mut a, &fh, &dsid).unwrap();
    assert!(metric("delegations_returned_total") > returned);
    assert_eq!(b.getattr_size(&fh).unwrap(), 0);
}

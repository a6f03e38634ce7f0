//! Layout recalls and data-server outages with the MDS and real data servers
//! (pnfs-ds, in-process):
//! - CB_LAYOUTRECALL reaches a client that bound a back channel: on another
//!   client's OPEN for write (read-only layouts stay), and on REMOVE of the
//!   file (after the inode is gone), with the layout's filehandle, the next
//!   layout seqid and the session's minor version; a recall answered
//!   NFS4ERR_DELAY is sent again;
//! - a READ through the MDS while a data server is down answers
//!   NFS4ERR_DELAY (the client retries), and succeeds once it is back.

use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::layout::{layoutcommit_to, whole_file_layoutreturn};
use pnfs_client::{CallbackHandler, Client};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SU: u64 = 64 * 1024;

mod common;

fn start_mds(dir: &Path) -> (SocketAddr, SocketAddr) {
    common::start_pnfs_mds(dir, &format!("stripe_unit = {SU}"))
}

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() })
}

fn layoutget(c: &mut Client, fh: &[u8], sid: &stateid4, iomode: layoutiomode4) -> stateid4 {
    c.layoutget(fh, sid, iomode).unwrap().0
}

/// A recall as the holder saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    minor: u32,
    fh: Vec<u8>,
    stateid: stateid4,
    iomode: layoutiomode4,
}

/// Runs `f` while `holder` serves callbacks on another thread; returns the
/// holder and what `f` returned once `f` is done (and the holder had `grace`
/// more to answer late callbacks).
fn with_callbacks<R>(holder: Client, grace: Duration, f: impl FnOnce() -> R) -> (Client, R) {
    let stop = Arc::new(Mutex::new(false));
    let t = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut h = holder;
            loop {
                h.poll_callbacks(Duration::from_millis(50)).unwrap();
                if *stop.lock().unwrap() {
                    h.poll_callbacks(grace).unwrap();
                    return h;
                }
            }
        })
    };
    let r = f();
    *stop.lock().unwrap() = true;
    (t.join().unwrap(), r)
}

#[test]
fn layout_recalls_reach_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let handles = common::start_dses(dir.path(), ctl_addr, 2);

    // The holder: a 4.2 client with a back channel; it answers recalls with
    // whatever `answer` holds and records them.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let answer = Arc::new(Mutex::new(nfsstat4::NFS4_OK));
    // Recalls to answer NFS4ERR_DELAY before `answer`.
    let delays = Arc::new(Mutex::new(0u32));
    let handler: CallbackHandler = {
        let (seen, answer, delays) = (seen.clone(), answer.clone(), delays.clone());
        Box::new(move |a: &CB_COMPOUND4args| {
            for op in &a.argarray {
                if let nfs_cb_argop4::OP_CB_LAYOUTRECALL(r) = op {
                    let layoutrecall4::LAYOUTRECALL4_FILE(f) = &r.clora_recall else { panic!("{r:?}") };
                    seen.lock().unwrap().push(Seen {
                        minor: a.minorversion,
                        fh: f.lor_fh.to_vec(),
                        stateid: f.lor_stateid.clone(),
                        iomode: r.clora_iomode,
                    });
                }
            }
            let mut d = delays.lock().unwrap();
            if *d > 0 {
                *d -= 1;
                return nfsstat4::NFS4ERR_DELAY;
            }
            *answer.lock().unwrap()
        })
    };
    let mut a = Client::connect_with_callbacks(nfs_addr, 2, handler).unwrap();
    let root = a.lookup_path("/export").unwrap();
    // No delegation: this holder answers layout recalls only.
    let (fh, open_sid) = a.open(&root, "f", true, OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    a.write(&fh, &open_sid, 0, &[7u8; 1000], stable_how4::FILE_SYNC4).unwrap();
    let lsid = layoutget(&mut a, &fh, &stateid4 { seqid: 0, other: open_sid.other }, layoutiomode4::LAYOUTIOMODE4_RW);
    assert_eq!(lsid.seqid, 1);

    // Another client opening for reading recalls nothing.
    let mut b = Client::connect(nfs_addr, 2).unwrap();
    let broot = b.lookup_path("/export").unwrap();
    let (a, ()) = with_callbacks(a, Duration::from_millis(300), || {
        let (bfh, bsid) = b.open(&broot, "f", false, OPEN4_SHARE_ACCESS_READ).unwrap();
        b.close(&bfh, &bsid).unwrap();
    });
    assert!(seen.lock().unwrap().is_empty(), "a read open recalled: {:?}", seen.lock().unwrap());

    // Opening for write recalls the RW layout, with the next seqid; the
    // holder answers OK and returns it.
    let (mut a, bopen) = with_callbacks(a, Duration::from_millis(300), || b.open(&broot, "f", false, OPEN4_SHARE_ACCESS_BOTH).unwrap());
    let want = Seen { minor: 2, fh: fh.clone(), stateid: stateid4 { seqid: 2, other: lsid.other }, iomode: layoutiomode4::LAYOUTIOMODE4_ANY };
    assert_eq!(*seen.lock().unwrap(), vec![want]);
    b.close(&bopen.0, &bopen.1).unwrap();
    let layoutreturn = |a: &mut Client, s: stateid4| {
        let ret = vec![putfh(&fh), whole_file_layoutreturn(s, layoutiomode4::LAYOUTIOMODE4_ANY)];
        a.compound_ok(ret, |_| Ok(())).unwrap();
    };
    layoutreturn(&mut a, stateid4 { seqid: 2, other: lsid.other });
    seen.lock().unwrap().clear();

    // A holder answering NFS4ERR_DELAY is asked again (same stateid).
    let lsid = layoutget(&mut a, &fh, &stateid4 { seqid: 0, other: open_sid.other }, layoutiomode4::LAYOUTIOMODE4_RW);
    *delays.lock().unwrap() = 2;
    let (mut a, ()) = with_callbacks(a, Duration::from_millis(300), || {
        let (bfh, bsid) = b.open(&broot, "f", false, OPEN4_SHARE_ACCESS_WRITE).unwrap();
        b.close(&bfh, &bsid).unwrap();
    });
    let next = stateid4 { seqid: lsid.seqid + 1, other: lsid.other };
    let got: Vec<stateid4> = seen.lock().unwrap().iter().map(|r| r.stateid.clone()).collect();
    assert_eq!(got, vec![next.clone(), next.clone(), next.clone()], "DELAY, DELAY, OK");
    layoutreturn(&mut a, next);
    seen.lock().unwrap().clear();

    // A read-only layout stays when someone opens for write.
    let rsid = layoutget(&mut a, &fh, &stateid4 { seqid: 0, other: open_sid.other }, layoutiomode4::LAYOUTIOMODE4_READ);
    let (a, ()) = with_callbacks(a, Duration::from_millis(300), || {
        let (bfh, bsid) = b.open(&broot, "f", false, OPEN4_SHARE_ACCESS_WRITE).unwrap();
        b.close(&bfh, &bsid).unwrap();
    });
    assert!(seen.lock().unwrap().is_empty(), "a read-only layout was recalled: {:?}", seen.lock().unwrap());

    // REMOVE recalls too, after the inode is gone: the filehandle comes from
    // the layout state. The holder has forgotten the layout (NOMATCHING).
    *answer.lock().unwrap() = nfsstat4::NFS4ERR_NOMATCHING_LAYOUT;
    let (mut a, ()) = with_callbacks(a, Duration::from_millis(300), || b.remove(&broot, "f").unwrap());
    let want = Seen { minor: 2, fh: fh.clone(), stateid: stateid4 { seqid: rsid.seqid + 1, other: rsid.other }, iomode: layoutiomode4::LAYOUTIOMODE4_ANY };
    assert_eq!(*seen.lock().unwrap(), vec![want]);
    // NOMATCHING dropped the layout state on the MDS.
    let st = a
        .compound_ok(vec![nfs_argop4::OP_TEST_STATEID(TEST_STATEID4args { ts_stateids: vec![rsid.clone()] })], |r| match &r[0] {
            nfs_resop4::OP_TEST_STATEID(TEST_STATEID4res::NFS4_OK(ok)) => Ok(ok.tsr_status_codes[0]),
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert_eq!(st, nfsstat4::NFS4ERR_BAD_STATEID);
    // The holder's open of the removed file: I/O is STALE, CLOSE still works.
    let err = a.write(&fh, &open_sid, 0, b"x", stable_how4::FILE_SYNC4).unwrap_err();
    assert_eq!(err.status(), Some(nfsstat4::NFS4ERR_STALE), "{err}");
    a.close(&fh, &open_sid).unwrap();
    for h in handles {
        h.shutdown();
    }
}

/// The kernel-lab two-writers failure: Linux answers a CB_LAYOUTRECALL
/// with NOMATCHING_LAYOUT after sending a LAYOUTCOMMIT for the DS writes it
/// made through that layout (`initiate_file_draining`), and the MDS drops
/// the layout state on NOMATCHING. The LAYOUTCOMMIT that arrives after
/// that must not be BAD_STATEID: Linux maps it to EIO and the writer's
/// fsync fails. It is BADLAYOUT (RFC 8881 18.42.4; Linux takes it as done),
/// and the size still grows: the bytes are on the data servers. A client
/// that has no write open on the file gets BADLAYOUT and moves nothing.
#[test]
fn layoutcommit_after_a_forgotten_layout_is_badlayout_and_keeps_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let handles = common::start_dses(dir.path(), ctl_addr, 2);

    let recalls = Arc::new(Mutex::new(0u32));
    let handler: CallbackHandler = {
        let recalls = recalls.clone();
        Box::new(move |a: &CB_COMPOUND4args| {
            if a.argarray.iter().any(|op| matches!(op, nfs_cb_argop4::OP_CB_LAYOUTRECALL(_))) {
                *recalls.lock().unwrap() += 1;
                return nfsstat4::NFS4ERR_NOMATCHING_LAYOUT;
            }
            nfsstat4::NFS4_OK
        })
    };
    let mut a = Client::connect_with_callbacks(nfs_addr, 2, handler).unwrap();
    let root = a.lookup_path("/export").unwrap();
    let (fh, open_sid) = a.open(&root, "g", true, OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    a.write(&fh, &open_sid, 0, &[7u8; 1000], stable_how4::FILE_SYNC4).unwrap();
    let lsid = layoutget(&mut a, &fh, &stateid4 { seqid: 0, other: open_sid.other }, layoutiomode4::LAYOUTIOMODE4_RW);

    // Another client opens for write: the recall is answered NOMATCHING.
    let mut b = Client::connect(nfs_addr, 2).unwrap();
    let broot = b.lookup_path("/export").unwrap();
    let (mut a, bopen) = with_callbacks(a, Duration::from_millis(300), || b.open(&broot, "g", false, OPEN4_SHARE_ACCESS_BOTH).unwrap());
    assert_eq!(*recalls.lock().unwrap(), 1, "one recall");

    let layoutcommit = |c: &mut Client, fh: &[u8], last: u64| -> nfsstat4 {
        let ops = vec![
            putfh(fh),
            layoutcommit_to(lsid.clone(), last + 1),
        ];
        let reply = c.compound(ops).unwrap();
        let res = reply.res().unwrap();
        match &res.resarray[2] {
            nfs_resop4::OP_LAYOUTCOMMIT(LAYOUTCOMMIT4res::NFS4_OK(_)) => nfsstat4::NFS4_OK,
            nfs_resop4::OP_LAYOUTCOMMIT(LAYOUTCOMMIT4res::default(s)) => *s,
            other => panic!("{other:?}"),
        }
    };
    // The holder's LAYOUTCOMMIT for bytes it wrote up to 1 MiB.
    assert_eq!(layoutcommit(&mut a, &fh, (1 << 20) - 1), nfsstat4::NFS4ERR_BADLAYOUT);
    assert_eq!(a.getattr_size(&fh).unwrap(), 1 << 20, "the size moved");
    // Without a write open: BADLAYOUT, and the size stays.
    a.close(&fh, &open_sid).unwrap();
    assert_eq!(layoutcommit(&mut a, &fh, (2 << 20) - 1), nfsstat4::NFS4ERR_BADLAYOUT);
    assert_eq!(a.getattr_size(&fh).unwrap(), 1 << 20);
    b.close(&bopen.0, &bopen.1).unwrap();
    for h in handles {
        h.shutdown();
    }
}

#[test]
fn read_through_the_mds_waits_while_a_data_server_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mds(dir.path());
    let mut handles: Vec<_> = common::start_dses(dir.path(), ctl_addr, 2).into_iter().map(Some).collect();
    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    // 4 stripe units: both data servers hold some.
    let data: Vec<u8> = (0..4 * SU as usize).map(|i| (i % 251) as u8).collect();
    c.write_file(&root, "f", &data).unwrap();
    assert_eq!(c.read_file(&root, "f").unwrap(), data);

    // Data server 1 goes away: READ through the MDS says DELAY, not EIO.
    let h = handles[1].take().unwrap();
    h.shutdown();
    h.join();
    c.set_retry_for(Duration::from_millis(500));
    let err = c.read_file(&root, "f").unwrap_err();
    assert_eq!(err.status(), Some(nfsstat4::NFS4ERR_DELAY), "{err}");

    // It comes back (new ports, same identity and data): the read works.
    handles[1] = Some(common::start_ds(dir.path(), "ds1", ctl_addr));
    common::wait_registered(dir.path(), ctl_addr, "ds1");
    c.set_retry_for(Duration::from_secs(10));
    assert_eq!(c.read_file(&root, "f").unwrap(), data);
    for h in handles.into_iter().flatten() {
        h.shutdown();
    }
}

//! A data server lost for good, with the MDS and real data servers (pnfs-ds,
//! in-process), issue 11:
//! - I/O through the MDS and LAYOUTGET of a striped file with data on a
//!   stopped data server answer NFS4ERR_DELAY until mds.ds_lost_after_ms
//!   past its death, then NFS4ERR_IO (EIO at the client), with the lost
//!   data server and the file counted in the metrics; a file on the other
//!   data servers reads on; such a file can be removed; the data server
//!   coming back serves its files again;
//! - LAYOUTERROR naming a data server that is down (its heartbeats still
//!   fresh) gets it checked and counted dead at once: the layouts naming
//!   it are recalled and new files are placed on the others;
//! - LAYOUTSTATS becomes per-data-server metrics; bad reports are refused.

use pnfs_client::pnfs_protocol::mds_ds::deviceid;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::{Decoder, XdrDecode};
use pnfs_client::layout::whole_file_layoutreturn;
use pnfs_client::{CallbackHandler, Client};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

const SU: u64 = 64 * 1024;

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() })
}

/// The status of the last operation of `ops` (NFS4ERR_DELAY not retried).
fn last_status(c: &mut Client, ops: Vec<nfs_argop4<'_>>) -> nfsstat4 {
    c.set_retry_for(Duration::ZERO);
    // DELAY past the retry time comes back as an error.
    let s = match c.compound(ops) {
        Ok(reply) => reply.status().unwrap(),
        Err(e) => e.status().unwrap_or_else(|| panic!("{e}")),
    };
    c.set_retry_for(Duration::from_secs(30));
    s
}

fn read_status(c: &mut Client, fh: &[u8], sid: &stateid4) -> nfsstat4 {
    last_status(c, vec![putfh(fh), nfs_argop4::OP_READ(READ4args { stateid: sid.clone(), offset: 0, count: 4 * SU as u32 })])
}

fn layoutget_status(c: &mut Client, fh: &[u8], sid: &stateid4) -> nfsstat4 {
    let get = pnfs_client::layout::whole_file_layoutget(sid.clone(), layoutiomode4::LAYOUTIOMODE4_READ, 4096, 4096);
    last_status(c, vec![putfh(fh), get])
}

/// The data servers (registry indices) a files layout body names.
fn layout_data_servers(body: &[u8]) -> Vec<u32> {
    let l = nfsv4_1_file_layout4::decode(&mut Decoder::new(body)).unwrap();
    deviceid::decode(&l.nfl_deviceid).unwrap()
}

/// The index of the running data server whose NFS address `c` finds in
/// device `ds`'s address list.
fn handle_of(c: &mut Client, ds: u32, handles: &[pnfs_ds::DsHandle]) -> usize {
    let body = c.getdeviceinfo(deviceid::encode(&[ds]).unwrap()).unwrap();
    let dev = nfsv4_1_file_layout_ds_addr4::decode(&mut Decoder::new(&body)).unwrap();
    let addr = String::from_utf8(dev.nflda_multipath_ds_list[0][0].na_r_addr.to_vec()).unwrap();
    let addr: SocketAddr = pnfs_client::pnfs_protocol::mds_ds::uaddr::parse(&addr).unwrap();
    handles.iter().position(|h| h.nfs_addr() == addr).expect("a running data server")
}

/// The value of metric line `name` (with its labels), polled until `want`
/// holds or 10 s passed.
fn metric_until(name: &str, want: impl Fn(f64) -> bool) -> f64 {
    let t = Instant::now();
    loop {
        let text = pnfs_mds::metrics::metrics().encode();
        let v = text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(-1.0);
        if want(v) || t.elapsed() > Duration::from_secs(10) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn set_stripe_count(c: &mut Client, dir: &[u8], n: &str) {
    let set = nfs_argop4::OP_SETXATTR(SETXATTR4args {
        sxa_option: setxattr_option4::SETXATTR4_EITHER,
        sxa_key: b"pnfs.stripe_count".as_slice().into(),
        sxa_value: n.as_bytes().into(),
    });
    c.compound_ok(vec![putfh(dir), set], |_| Ok(())).unwrap();
}

#[test]
fn io_on_a_lost_data_server_fails_with_eio_after_the_configured_time() {
    let dir = tempfile::tempdir().unwrap();
    // Dead 2 s after the last heartbeat, lost 3 s after that.
    let extra = format!("stripe_unit = {SU}\nds_dead_after_ms = 2000\nds_lost_after_ms = 3000");
    let (nfs_addr, ctl_addr) = common::start_pnfs_mds(dir.path(), &extra);
    let mut handles = common::start_dses(dir.path(), ctl_addr, 3);
    let mut c = Client::connect(nfs_addr, 2).unwrap();
    let root = c.lookup_path("/export").unwrap();
    // "wide" is striped over all three; "narrow/n" over one.
    let data: Vec<u8> = (0..6 * SU as usize).map(|i| (i % 251) as u8).collect();
    let (wide, wsid) = c.open(&root, "wide", true, OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    c.write(&wide, &wsid, 0, &data, stable_how4::FILE_SYNC4).unwrap();
    c.write_file(&root, "wide2", &data).unwrap();
    let narrow = c.mkdir(&root, "narrow").unwrap();
    set_stripe_count(&mut c, &narrow, "1");
    let (nfh, nsid) = c.open(&narrow, "n", true, OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    c.write(&nfh, &nsid, 0, &data[..SU as usize], stable_how4::FILE_SYNC4).unwrap();
    // (Each layout is returned at once: this client has no back channel for
    // the recall a data server's death brings.)
    let layout_of = |c: &mut Client, fh: &[u8], sid: &stateid4| {
        let (lsid, body) = c.layoutget(fh, sid, layoutiomode4::LAYOUTIOMODE4_READ).unwrap();
        c.compound_ok(vec![putfh(fh), whole_file_layoutreturn(lsid, layoutiomode4::LAYOUTIOMODE4_ANY)], |_| Ok(())).unwrap();
        layout_data_servers(&body)
    };
    let on = layout_of(&mut c, &nfh, &nsid);
    assert_eq!(on.len(), 1);
    assert_eq!(layout_of(&mut c, &wide, &wsid).len(), 3);
    // Stop for good a data server that "narrow/n" is not on.
    let keep = handle_of(&mut c, on[0], &handles);
    let victim = (0..3).find(|&i| i != keep).unwrap();
    let h = handles.remove(victim);
    h.shutdown();
    h.join();
    let stopped = Instant::now();

    // Before mds.ds_lost_after_ms: DELAY, as for a data server restarting.
    let early = read_status(&mut c, &wide, &wsid);
    if stopped.elapsed() < Duration::from_secs(3) {
        assert_eq!(early, nfsstat4::NFS4ERR_DELAY);
    }
    // Then NFS4ERR_IO (not before the data server was dead 3 s).
    let status = loop {
        let s = read_status(&mut c, &wide, &wsid);
        if s != nfsstat4::NFS4ERR_DELAY || stopped.elapsed() > Duration::from_secs(30) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, nfsstat4::NFS4ERR_IO, "after {:?}", stopped.elapsed());
    assert!(stopped.elapsed() >= Duration::from_secs(3), "lost after {:?}", stopped.elapsed());
    assert_eq!(layoutget_status(&mut c, &wide, &wsid), nfsstat4::NFS4ERR_IO);
    // (Three stripe units: one on each data server.)
    let write = nfs_argop4::OP_WRITE(WRITE4args { stateid: wsid.clone(), offset: 0, stable: stable_how4::FILE_SYNC4, data: data[..3 * SU as usize].to_vec().into() });
    assert_eq!(last_status(&mut c, vec![putfh(&wide), write]), nfsstat4::NFS4ERR_IO);
    let commit = nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 });
    assert_eq!(last_status(&mut c, vec![putfh(&wide), commit]), nfsstat4::NFS4ERR_IO);
    // The file on the others reads on, with a layout.
    assert_eq!(c.read_upto(&nfh, &nsid, SU as usize, SU as u32).unwrap(), &data[..SU as usize]);
    assert_eq!(layoutget_status(&mut c, &nfh, &nsid), nfsstat4::NFS4_OK);
    // The metrics name one lost data server and (at least) the wide file.
    assert_eq!(metric_until("pnfs_mds_ds_lost ", |v| v == 1.0), 1.0);
    assert!(metric_until("pnfs_mds_files_unavailable ", |v| v >= 1.0) >= 1.0);
    assert!(metric_until("pnfs_mds_lost_data_errors_total ", |v| v >= 4.0) >= 4.0);
    // Removing such a file works all the same (its objects there are lost).
    c.remove(&root, "wide2").unwrap();
    // The data server comes back (same identity and data): served again.
    handles.push(common::start_ds(dir.path(), &format!("ds{victim}"), ctl_addr));
    common::wait_registered(dir.path(), ctl_addr, &format!("ds{victim}"));
    assert_eq!(c.read_upto(&wide, &wsid, data.len(), SU as u32).unwrap(), data);
    assert_eq!(metric_until("pnfs_mds_ds_lost ", |v| v == 0.0), 0.0);
    assert_eq!(metric_until("pnfs_mds_files_unavailable ", |v| v == 0.0), 0.0);
    c.close(&wide, &wsid).unwrap();
    for h in handles {
        h.shutdown();
    }
}

/// A client holding a layout, answering recalls with NFS4_OK and noting them.
fn holder(nfs_addr: SocketAddr) -> (Client, Arc<Mutex<Vec<Vec<u8>>>>) {
    let recalled: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let handler: CallbackHandler = {
        let recalled = recalled.clone();
        Box::new(move |a: &CB_COMPOUND4args| {
            for op in &a.argarray {
                if let nfs_cb_argop4::OP_CB_LAYOUTRECALL(r) = op {
                    if let layoutrecall4::LAYOUTRECALL4_FILE(f) = &r.clora_recall {
                        recalled.lock().unwrap().push(f.lor_fh.to_vec());
                    }
                }
            }
            nfsstat4::NFS4_OK
        })
    };
    (Client::connect_with_callbacks(nfs_addr, 2, handler).unwrap(), recalled)
}

fn layouterror<'a>(sid: &stateid4, errors: Vec<device_error4>) -> nfs_argop4<'a> {
    nfs_argop4::OP_LAYOUTERROR(LAYOUTERROR4args { lea_offset: 0, lea_length: u64::MAX, lea_stateid: sid.clone(), lea_errors: errors })
}

fn device_error(dev: deviceid4) -> device_error4 {
    device_error4 { de_deviceid: dev, de_status: nfsstat4::NFS4ERR_NXIO, de_opnum: nfs_opnum4::OP_WRITE }
}

fn layoutstats<'a>(sid: &stateid4, dev: deviceid4, read_bytes: u64) -> nfs_argop4<'a> {
    nfs_argop4::OP_LAYOUTSTATS(LAYOUTSTATS4args {
        lsa_offset: 0,
        lsa_length: u64::MAX,
        lsa_stateid: sid.clone(),
        lsa_read: io_info4 { ii_count: read_bytes / 100, ii_bytes: read_bytes },
        lsa_write: io_info4 { ii_count: 0, ii_bytes: 0 },
        lsa_deviceid: dev,
        lsa_layoutupdate: layoutupdate4 { lou_type: layouttype4::LAYOUT4_NFSV4_1_FILES, lou_body: vec![].into() },
    })
}

#[test]
fn layouterror_of_a_dead_data_server_marks_it_dead_and_recalls() {
    let dir = tempfile::tempdir().unwrap();
    // Heartbeats alone would take 10 minutes to notice.
    let (nfs_addr, ctl_addr) = common::start_pnfs_mds(dir.path(), &format!("stripe_unit = {SU}\nds_dead_after_ms = 600000"));
    let mut handles = common::start_dses(dir.path(), ctl_addr, 2);
    let (mut a, recalled) = holder(nfs_addr);
    let root = a.lookup_path("/export").unwrap();
    let (fh, sid) = a.open(&root, "f", true, OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    a.write(&fh, &sid, 0, &[5u8; 4 * SU as usize], stable_how4::FILE_SYNC4).unwrap();
    let (lsid, body) = a.layoutget(&fh, &sid, layoutiomode4::LAYOUTIOMODE4_RW).unwrap();
    let on = layout_data_servers(&body);
    assert_eq!(on.len(), 2);

    // LAYOUTSTATS: cumulative figures, counted once per data server.
    let one = deviceid::encode(&[on[0]]).unwrap();
    let stat = format!("pnfs_mds_layoutstats_read_bytes_total{{ds=\"{}\"}} ", on[0]);
    a.compound_ok(vec![putfh(&fh), layoutstats(&lsid, one, 1000)], |_| Ok(())).unwrap();
    a.compound_ok(vec![putfh(&fh), layoutstats(&lsid, one, 1500)], |_| Ok(())).unwrap();
    assert_eq!(metric_until(&stat, |v| v == 1500.0), 1500.0);

    // Bad reports: no layout stateid of this file, no file, a directory, a
    // range past 2^64.
    let (other, osid) = a.open(&root, "g", true, OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    let dev = deviceid::encode(&on).unwrap();
    assert_eq!(last_status(&mut a, vec![putfh(&other), layouterror(&lsid, vec![device_error(dev)])]), nfsstat4::NFS4ERR_BAD_STATEID);
    assert_eq!(last_status(&mut a, vec![putfh(&fh), layouterror(&osid, vec![device_error(dev)])]), nfsstat4::NFS4ERR_BAD_STATEID);
    assert_eq!(last_status(&mut a, vec![layouterror(&lsid, vec![])]), nfsstat4::NFS4ERR_NOFILEHANDLE);
    assert_eq!(last_status(&mut a, vec![putfh(&root), layoutstats(&lsid, one, 1)]), nfsstat4::NFS4ERR_ISDIR);
    let past = LAYOUTERROR4args { lea_offset: u64::MAX - 1, lea_length: 2, lea_stateid: lsid.clone(), lea_errors: vec![] };
    assert_eq!(last_status(&mut a, vec![putfh(&fh), nfs_argop4::OP_LAYOUTERROR(past)]), nfsstat4::NFS4ERR_INVAL);
    a.close(&other, &osid).unwrap();
    // A device not ours, and an error naming a live data server: answered,
    // the data server stays.
    let unknown = [9u8; 16];
    a.compound_ok(vec![putfh(&fh), layouterror(&lsid, vec![device_error(unknown), device_error(dev)])], |_| Ok(())).unwrap();

    // One data server stops; its heartbeats are still fresh for minutes.
    let victim = handle_of(&mut a, on[1], &handles);
    let h = handles.remove(victim);
    h.shutdown();
    h.join();
    // (Past the interval in which the check above keeps it from another.)
    std::thread::sleep(Duration::from_millis(1100));
    // Reported over a thousand times at once, then now and again as a client
    // would: checked, counted dead, and the layout naming it recalled.
    let checks_before = metric_until("pnfs_mds_ds_checks_total{outcome=\"alive\"} ", |v| v >= 1.0);
    let t = Instant::now();
    let reported = metric_until("pnfs_mds_layout_errors_total ", |_| true);
    for _ in 0..16 {
        let errors = (0..64).map(|_| device_error(dev)).collect();
        a.compound_ok(vec![putfh(&fh), layouterror(&lsid, errors)], |_| Ok(())).unwrap();
    }
    // One LAYOUTERROR is acted on for its first 64 device errors.
    let errors = (0..100).map(|_| device_error(dev)).collect();
    a.compound_ok(vec![putfh(&fh), layouterror(&lsid, errors)], |_| Ok(())).unwrap();
    assert_eq!(metric_until("pnfs_mds_layout_errors_total ", |_| true) - reported, 17.0 * 64.0);
    assert!(t.elapsed() < Duration::from_secs(5), "LAYOUTERROR waited for the checks: {:?}", t.elapsed());
    while recalled.lock().unwrap().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(20), "no CB_LAYOUTRECALL");
        a.compound_ok(vec![putfh(&fh), layouterror(&lsid, vec![device_error(dev)])], |_| Ok(())).unwrap();
        a.poll_callbacks(Duration::from_millis(200)).unwrap();
    }
    assert_eq!(recalled.lock().unwrap()[0], fh);
    // Few checks for all those reports: one per data server in flight, none
    // within a second of the last; and once dead, none.
    assert_eq!(metric_until("pnfs_mds_ds_checks_total{outcome=\"dead\"} ", |v| v >= 1.0), 1.0);
    let alive_checks = metric_until("pnfs_mds_ds_checks_total{outcome=\"alive\"} ", |_| true) - checks_before;
    assert!(alive_checks <= t.elapsed().as_secs_f64() + 2.0, "{alive_checks} checks of the live data server");
    assert!(metric_until("pnfs_mds_ds_checks_skipped_total ", |v| v >= 1000.0) >= 1000.0);
    // New files go to the data server left.
    let (nfh, nsid) = a.open(&root, "new", true, OPEN4_SHARE_ACCESS_BOTH | OPEN4_SHARE_ACCESS_WANT_NO_DELEG).unwrap();
    let (_, body) = a.layoutget(&nfh, &nsid, layoutiomode4::LAYOUTIOMODE4_RW).unwrap();
    assert_eq!(layout_data_servers(&body), vec![on[0]]);
    // The old file: no layout now (LAYOUTUNAVAILABLE: I/O through the MDS).
    assert_eq!(layoutget_status(&mut a, &fh, &sid), nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
    for h in handles {
        h.shutdown();
    }
}

#[test]
fn loss_keys_are_checked() {
    let bad = |extra: &str| {
        let text = format!("bind = \"127.0.0.1:1\"\nmetadata_dir = \"/x\"\ndata_dir = \"/y\"\n{extra}\n[[exports]]\npath = \"/export\"\n");
        let cfg: pnfs_mds::MdsConfig = toml::from_str(&text).unwrap();
        cfg.validate().err()
    };
    // 0: never lost (DELAY until the data server is back, as before).
    assert_eq!(bad("ds_lost_after_ms = 0"), None);
    assert!(bad("ds_lost_after_ms = 500").unwrap().contains("mds.ds_lost_after_ms"));
    assert!(bad("ds_check_timeout_ms = 5").unwrap().contains("mds.ds_check_timeout_ms"));
}

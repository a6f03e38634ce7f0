//! Mirrored files with real data servers (pnfs-ds, in-process): a mirror2
//! file written through the MDS lands on both mirrors of every segment; the
//! flexfiles layout names them (one DS per mirror, the layout stateid the
//! data servers accept); a client writing both mirrors itself is read back
//! through the MDS; truncate and remove reach every object; the
//! `pnfs.layout` directory xattr is inherited and the files layout of a
//! mirrored file is LAYOUTUNAVAILABLE.

use pnfs_client::pnfs_protocol::mds_ds::uaddr;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::{Decoder, XdrDecode};
use pnfs_client::Client;
use std::collections::BTreeSet;
use std::net::SocketAddr;

mod common;

const SEG: u64 = 1 << 20;

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() })
}

fn layoutget_at(sid: stateid4, kind: layouttype4, iomode: layoutiomode4, offset: u64) -> nfs_argop4<'static> {
    nfs_argop4::OP_LAYOUTGET(LAYOUTGET4args {
        loga_signal_layout_avail: false,
        loga_layout_type: kind,
        loga_iomode: iomode,
        // As Linux asks: the first page of the I/O, the server may give more.
        loga_offset: offset,
        loga_length: 4096,
        loga_minlength: 4096,
        loga_stateid: sid,
        loga_maxcount: 4096,
    })
}

/// LAYOUTGET for read/write: Ok((layout stateid, layouts)) or the status.
fn layoutget(c: &mut Client, fh: &[u8], sid: &stateid4, kind: layouttype4, offset: u64) -> Result<(stateid4, Vec<layout4<'static>>), nfsstat4> {
    layoutget_mode(c, fh, sid, kind, layoutiomode4::LAYOUTIOMODE4_RW, offset)
}

fn layoutget_mode(
    c: &mut Client,
    fh: &[u8],
    sid: &stateid4,
    kind: layouttype4,
    iomode: layoutiomode4,
    offset: u64,
) -> Result<(stateid4, Vec<layout4<'static>>), nfsstat4> {
    let reply = c.compound(vec![putfh(fh), layoutget_at(sid.clone(), kind, iomode, offset)]).unwrap();
    let res = reply.res().unwrap();
    match &res.resarray[2] {
        nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(ok)) => Ok((
            ok.logr_stateid.clone(),
            ok.logr_layout
                .iter()
                .map(|l| layout4 {
                    lo_offset: l.lo_offset,
                    lo_length: l.lo_length,
                    lo_iomode: l.lo_iomode,
                    lo_content: layout_content4 { loc_type: l.lo_content.loc_type, loc_body: l.lo_content.loc_body.to_vec().into() },
                })
                .collect(),
        )),
        nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::default(s)) => Err(*s),
        other => panic!("{other:?}"),
    }
}

/// A flexfiles device's DS address (GETDEVICEINFO of type FLEX_FILES).
fn ff_device(c: &mut Client, id: deviceid4) -> SocketAddr {
    let ops = vec![nfs_argop4::OP_GETDEVICEINFO(GETDEVICEINFO4args {
        gdia_device_id: id,
        gdia_layout_type: layouttype4::LAYOUT4_FLEX_FILES,
        gdia_maxcount: 4096,
        gdia_notify_types: vec![],
    })];
    c.compound_ok(ops, |r| match &r[0] {
        nfs_resop4::OP_GETDEVICEINFO(GETDEVICEINFO4res::NFS4_OK(ok)) => {
            assert_eq!(ok.gdir_device_addr.da_layout_type, layouttype4::LAYOUT4_FLEX_FILES);
            let a = ff_device_addr4::decode(&mut Decoder::new(&ok.gdir_device_addr.da_addr_body)).unwrap();
            assert_eq!(a.ffda_versions.len(), 1);
            let v = &a.ffda_versions[0];
            assert_eq!((v.ffdv_version, v.ffdv_minorversion, v.ffdv_tightly_coupled), (4, 1, true));
            assert!(v.ffdv_rsize >= 4096 && v.ffdv_wsize >= 4096);
            let na = &a.ffda_netaddrs[0];
            Ok(uaddr::parse_netaddr(std::str::from_utf8(&na.na_r_netid).unwrap(), std::str::from_utf8(&na.na_r_addr).unwrap()).unwrap())
        }
        other => panic!("{other:?}"),
    })
    .unwrap()
}

/// One mirror of a segment: its DS address, sealed object handle, stateid.
struct Mirror {
    addr: SocketAddr,
    fh: Vec<u8>,
    stateid: stateid4,
}

fn mirrors_of(c: &mut Client, l: &layout4) -> Vec<Mirror> {
    assert_eq!(l.lo_content.loc_type, layouttype4::LAYOUT4_FLEX_FILES);
    let body = ff_layout4::decode(&mut Decoder::new(&l.lo_content.loc_body)).unwrap();
    assert_eq!(body.ffl_stripe_unit, 0);
    assert_eq!(body.ffl_flags & FF_FLAGS_NO_IO_THRU_MDS, FF_FLAGS_NO_IO_THRU_MDS);
    assert_eq!(body.ffl_flags & FF_FLAGS_NO_LAYOUTCOMMIT, 0, "the MDS learns sizes from LAYOUTCOMMIT");
    body.ffl_mirrors
        .iter()
        .map(|m| {
            assert_eq!(m.ffm_data_servers.len(), 1, "one data server per mirror");
            let d = &m.ffm_data_servers[0];
            assert_eq!(d.ffds_fh_vers.len(), 1);
            Mirror { addr: ff_device(c, d.ffds_deviceid), fh: d.ffds_fh_vers[0].to_vec(), stateid: d.ffds_stateid.clone() }
        })
        .collect()
}

fn ds_read(ds: &mut Client, m: &Mirror, offset: u64, count: u32) -> Result<Vec<u8>, nfsstat4> {
    let ops = vec![putfh(&m.fh), nfs_argop4::OP_READ(READ4args { stateid: m.stateid.clone(), offset, count })];
    let reply = ds.compound(ops).unwrap();
    let res = reply.res().unwrap();
    match res.resarray.get(2) {
        Some(nfs_resop4::OP_READ(READ4res::NFS4_OK(ok))) => Ok(ok.data.to_vec()),
        Some(nfs_resop4::OP_READ(READ4res::default(s))) => Err(*s),
        _ => Err(res.status),
    }
}

fn fs_layout_types(c: &mut Client, fh: &[u8]) -> Vec<u8> {
    c.compound_ok(vec![putfh(fh), nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![0, 1 << (62 - 32)] })], |r| match &r[1] {
        nfs_resop4::OP_GETATTR(GETATTR4res::NFS4_OK(ok)) => Ok(ok.obj_attributes.attr_vals.to_vec()),
        other => panic!("{other:?}"),
    })
    .unwrap()
}

fn write_through_mds(c: &mut Client, fh: &[u8], sid: &stateid4, data: &[u8]) {
    for (i, chunk) in data.chunks(256 << 10).enumerate() {
        c.write(fh, sid, (i * (256 << 10)) as u64, chunk, stable_how4::UNSTABLE4).unwrap();
    }
}

/// An MDS whose default is mirror2 with 1 MiB segments.
fn start_mirror2_mds(dir: &std::path::Path) -> (SocketAddr, SocketAddr) {
    common::start_pnfs_mds(dir, &format!("layout = \"mirror2\"\nflex_segment_bytes = {SEG}\nds_dead_after_ms = 600000"))
}

#[test]
fn mirror2_file_lands_on_both_mirrors_of_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mirror2_mds(dir.path());
    let handles = common::start_dses(dir.path(), ctl_addr, 3);
    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    // A mirror default advertises flexfiles (first) and the files layout.
    assert_eq!(fs_layout_types(&mut c, &root), [0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1]);

    let (fh, open_sid) = c.open(&root, "m2", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let sid0 = stateid4 { seqid: 0, other: open_sid.other };
    // 2.5 segments through the MDS (a client without a layout does this).
    let data: Vec<u8> = (0..(5 * SEG as usize / 2)).map(|i| (i * 7 % 251) as u8).collect();
    write_through_mds(&mut c, &fh, &sid0, &data);
    c.compound_ok(vec![putfh(&fh), nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 })], |_| Ok(())).unwrap();
    assert_eq!(c.getattr_size(&fh).unwrap(), data.len() as u64);
    assert!(c.read_upto(&fh, &sid0, data.len(), 200_000).unwrap() == data, "read back through the MDS");

    // The files layout of a mirrored file: unavailable (Linux then uses the MDS).
    assert_eq!(layoutget(&mut c, &fh, &sid0, layouttype4::LAYOUT4_NFSV4_1_FILES, 0).unwrap_err(), nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
    assert_eq!(layoutget(&mut c, &fh, &sid0, layouttype4::LAYOUT4_BLOCK_VOLUME, 0).unwrap_err(), nfsstat4::NFS4ERR_UNKNOWN_LAYOUTTYPE);

    // One LAYOUTGET per segment; each mirror DS holds the segment's bytes.
    let mut lsid = sid0.clone();
    let mut seen = BTreeSet::new();
    let mut segment0 = Vec::new();
    for k in 0..3u64 {
        let (s, layouts) = layoutget(&mut c, &fh, &lsid, layouttype4::LAYOUT4_FLEX_FILES, k * SEG + 8192).unwrap();
        lsid = s;
        assert_eq!(layouts.len(), 1, "one segment per LAYOUTGET");
        assert_eq!((layouts[0].lo_offset, layouts[0].lo_length), (k * SEG, SEG), "the whole segment holding the offset");
        let mirrors = mirrors_of(&mut c, &layouts[0]);
        assert_eq!(mirrors.len(), 2);
        let addrs: BTreeSet<SocketAddr> = mirrors.iter().map(|m| m.addr).collect();
        assert_eq!(addrs.len(), 2, "segment {k}: mirrors on distinct data servers");
        seen.extend(addrs);
        let end = ((k + 1) * SEG).min(data.len() as u64);
        for m in &mirrors {
            assert_eq!(m.stateid.other, lsid.other, "the layout stateid goes to the data servers");
            let mut ds = Client::connect_as(m.addr, &c).unwrap();
            let mut got = Vec::new();
            while (k * SEG + got.len() as u64) < end {
                let want = ((end - k * SEG) as usize - got.len()).min(256 << 10) as u32;
                let b = ds_read(&mut ds, m, k * SEG + got.len() as u64, want).unwrap();
                assert!(!b.is_empty(), "segment {k} short on {}", m.addr);
                got.extend_from_slice(&b);
            }
            assert!(got[..] == data[(k * SEG) as usize..end as usize], "segment {k} on {} differs", m.addr);
        }
        if k == 0 {
            segment0 = mirrors;
        }
    }
    assert_eq!(seen.len(), 3, "the segments spread over every data server");

    // The client writes both mirrors itself (stateid accepted for writing),
    // LAYOUTCOMMITs, and the MDS reads its bytes back.
    let new = vec![0xabu8; 5000];
    for m in &segment0 {
        let mut ds = Client::connect_as(m.addr, &c).unwrap();
        let ops = vec![
            putfh(&m.fh),
            nfs_argop4::OP_WRITE(WRITE4args { stateid: m.stateid.clone(), offset: 100, stable: stable_how4::FILE_SYNC4, data: new.clone().into() }),
        ];
        ds.compound_ok(ops, |_| Ok(())).unwrap();
    }
    let commit = nfs_argop4::OP_LAYOUTCOMMIT(LAYOUTCOMMIT4args {
        loca_offset: 0,
        loca_length: SEG,
        loca_reclaim: false,
        loca_stateid: lsid.clone(),
        loca_last_write_offset: newoffset4::TRUE(5099),
        loca_time_modify: newtime4::FALSE,
        loca_layoutupdate: layoutupdate4 { lou_type: layouttype4::LAYOUT4_FLEX_FILES, lou_body: Vec::new().into() },
    });
    c.compound_ok(vec![putfh(&fh), commit], |_| Ok(())).unwrap();
    let (back, _) = c.read(&fh, &sid0, 100, 5000).unwrap();
    assert!(back == new, "the client's mirror writes read back through the MDS");

    // Truncate: every object loses the bytes past the new size.
    let cut = SEG + SEG / 2;
    c.setattr_size(&fh, &sid0, cut).unwrap();
    assert_eq!(c.getattr_size(&fh).unwrap(), cut);
    let (tail, eof) = c.read(&fh, &sid0, cut, 4096).unwrap();
    assert!(tail.is_empty() && eof);
    // The DSes' object files: segment 1's two holders end at the cut, none beyond.
    let lens: Vec<u64> = (0..handles.len())
        .flat_map(|i| std::fs::read_dir(dir.path().join(format!("ds{i}/objects"))).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(lens.len(), 3, "one object per data server: {lens:?}");
    assert_eq!(lens.iter().filter(|l| **l == cut).count(), 2, "objects after truncating to {cut}: {lens:?}");
    assert!(lens.iter().all(|l| *l <= cut), "objects after truncating to {cut}: {lens:?}");

    // REMOVE: the objects go from every data server (the DSes answer STALE).
    c.close(&fh, &open_sid).unwrap();
    c.remove(&root, "m2").unwrap();
    let t = std::time::Instant::now();
    for m in &segment0 {
        let mut ds = Client::connect_as(m.addr, &c).unwrap();
        loop {
            match ds_read(&mut ds, m, 0, 10) {
                Err(nfsstat4::NFS4ERR_STALE) => break,
                // Removal runs once the unlink is durable, on its own thread.
                r => assert!(t.elapsed() < std::time::Duration::from_secs(10), "object still there: {r:?}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    for h in handles {
        h.shutdown();
    }
}

#[test]
fn layout_xattr_is_inherited_and_fixed_at_placement() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = common::start_pnfs_mds(dir.path(), "stripe_unit = 65536\nds_dead_after_ms = 600000");
    let handles = common::start_dses(dir.path(), ctl_addr, 2);
    let mut c = Client::connect(nfs_addr, 2).unwrap();
    let root = c.lookup_path("/export").unwrap();
    // A stripe default lists the files layout alone (Linux would pick flexfiles otherwise).
    assert_eq!(fs_layout_types(&mut c, &root), [0, 0, 0, 1, 0, 0, 0, 1]);
    let mirrored = c.mkdir(&root, "mirrored").unwrap();
    let set = |c: &mut Client, dir: &[u8], v: &[u8]| {
        let op = nfs_argop4::OP_SETXATTR(SETXATTR4args {
            sxa_option: setxattr_option4::SETXATTR4_EITHER,
            sxa_key: b"pnfs.layout".as_slice().into(),
            sxa_value: v.into(),
        });
        c.compound_ok(vec![putfh(dir), op], |_| Ok(())).unwrap();
    };
    set(&mut c, &mirrored, b"mirror2");
    let sub = c.mkdir(&mirrored, "sub").unwrap();
    let kind_of = |c: &mut Client, dir: &[u8], name: &str| {
        let (fh, sid) = c.open(dir, name, true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
        let sid = stateid4 { seqid: 0, other: sid.other };
        match layoutget(c, &fh, &sid, layouttype4::LAYOUT4_FLEX_FILES, 0) {
            Ok((_, l)) => {
                assert_eq!(layoutget(c, &fh, &sid, layouttype4::LAYOUT4_NFSV4_1_FILES, 0).unwrap_err(), nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
                let body = ff_layout4::decode(&mut Decoder::new(&l[0].lo_content.loc_body)).unwrap();
                format!("mirror{}", body.ffl_mirrors.len())
            }
            Err(nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE) => {
                layoutget(c, &fh, &sid, layouttype4::LAYOUT4_NFSV4_1_FILES, 0).unwrap();
                "stripe".to_string()
            }
            Err(s) => panic!("{s:?}"),
        }
    };
    assert_eq!(kind_of(&mut c, &root, "plain"), "stripe");
    assert_eq!(kind_of(&mut c, &mirrored, "a"), "mirror2");
    assert_eq!(kind_of(&mut c, &sub, "b"), "mirror2", "inherited from the parent's parent");
    // A file's kind is fixed when it is placed: changing the xattr later
    // changes new files only.
    set(&mut c, &mirrored, b"stripe");
    assert_eq!(kind_of(&mut c, &mirrored, "a"), "mirror2");
    assert_eq!(kind_of(&mut c, &mirrored, "c"), "stripe");
    // mirror3 with two data servers cannot be placed: no layout, and the
    // data stays on the MDS (as with no live data server).
    set(&mut c, &sub, b"mirror3");
    let (fh, sid) = c.open(&sub, "three", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let sid = stateid4 { seqid: 0, other: sid.other };
    assert_eq!(layoutget(&mut c, &fh, &sid, layouttype4::LAYOUT4_FLEX_FILES, 0).unwrap_err(), nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
    for h in handles {
        h.shutdown();
    }
}

/// A read layout of one segment, then a read/write layout of another: the
/// layout stateid's wider access reaches the first segment's data servers
/// too, so writes there are accepted.
#[test]
fn write_access_reaches_every_segment_after_a_read_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mirror2_mds(dir.path());
    // 4 data servers, 2 mirrors: consecutive segments on disjoint pairs.
    let handles = common::start_dses(dir.path(), ctl_addr, 4);
    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    let (fh, open_sid) = c.open(&root, "rw", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let sid0 = stateid4 { seqid: 0, other: open_sid.other };
    let (lsid, read0) = layoutget_mode(&mut c, &fh, &sid0, layouttype4::LAYOUT4_FLEX_FILES, layoutiomode4::LAYOUTIOMODE4_READ, 0).unwrap();
    let seg0: BTreeSet<SocketAddr> = mirrors_of(&mut c, &read0[0]).iter().map(|m| m.addr).collect();
    let (lsid, rw1) = layoutget(&mut c, &fh, &lsid, layouttype4::LAYOUT4_FLEX_FILES, SEG).unwrap();
    let seg1: BTreeSet<SocketAddr> = mirrors_of(&mut c, &rw1[0]).iter().map(|m| m.addr).collect();
    assert!(seg0.is_disjoint(&seg1), "{seg0:?} {seg1:?}");
    let (_, rw0) = layoutget(&mut c, &fh, &lsid, layouttype4::LAYOUT4_FLEX_FILES, 0).unwrap();
    for m in mirrors_of(&mut c, &rw0[0]) {
        let mut ds = Client::connect_as(m.addr, &c).unwrap();
        let ops = vec![
            putfh(&m.fh),
            nfs_argop4::OP_WRITE(WRITE4args { stateid: m.stateid.clone(), offset: 0, stable: stable_how4::FILE_SYNC4, data: vec![7u8; 100].into() }),
        ];
        ds.compound_ok(ops, |_| Ok(())).unwrap_or_else(|e| panic!("write to {} refused: {e:?}", m.addr));
    }
    for h in handles {
        h.shutdown();
    }
}

/// A READ through the MDS goes on from the other mirror when the first one's
/// data server does not answer (it is still registered as alive).
#[test]
fn mds_read_falls_back_to_the_other_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let (nfs_addr, ctl_addr) = start_mirror2_mds(dir.path());
    let handles = common::start_dses(dir.path(), ctl_addr, 2);
    let mut c = Client::connect(nfs_addr, 1).unwrap();
    let root = c.lookup_path("/export").unwrap();
    let (fh, open_sid) = c.open(&root, "fallback", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let sid0 = stateid4 { seqid: 0, other: open_sid.other };
    let data: Vec<u8> = (0..(2 * SEG as usize + 4096)).map(|i| (i * 13 % 241) as u8).collect();
    write_through_mds(&mut c, &fh, &sid0, &data);
    // With two data servers every segment is on both: stop one.
    handles[0].shutdown();
    let t = std::time::Instant::now();
    let back = c.read_upto(&fh, &sid0, data.len(), 200_000).unwrap();
    assert!(back == data, "read through the MDS with one mirror down differs");
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "took {:?}", t.elapsed());
    handles[1].shutdown();
}

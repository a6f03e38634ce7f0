//! Full disks under the MDS, on real size-limited file systems (small
//! tmpfs mounts made for the test: they need root, and the tests are skipped
//! with the reason printed where mounting fails).
//!
//! - The metadata disk full: CREATE, SETATTR and WRITE answer NFS4ERR_NOSPC
//!   (they answered SERVERFAULT, and the metadata store stayed failed after
//!   its first I/O error until the server restarted); reads go on; once space
//!   is freed the server works again without a restart and every
//!   acknowledged change is there.
//! - The data directory full (plain NFS, no data servers): WRITE answers
//!   NFS4ERR_NOSPC, and writes work again once a file is removed.

use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::{Client, ANONYMOUS_STATEID};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../kv/tests/support/tmpfs.rs"]
mod tmpfs;
use tmpfs::{fill, Tmpfs};

fn start_mds(meta: &Path, data: &Path) -> SocketAddr {
    let text = format!(
        "bind = \"127.0.0.1:1\"\nmetadata_dir = \"{}\"\ndata_dir = \"{}\"\n\
         [[exports]]\npath = \"/export\"\nroot_squash = false\n",
        meta.display(),
        data.display()
    );
    let cfg: pnfs_mds::MdsConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    pnfs_mds::server::spawn_on_loopback(cfg).unwrap().0
}

fn client(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr, 1).unwrap();
    c.set_timeout(Duration::from_secs(30));
    c
}

/// The status of a failed call; an answer other than NOSPC fails the test.
fn nospc<T>(what: &str, r: Result<T, pnfs_client::Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.status() == Some(nfsstat4::NFS4ERR_NOSPC) => None,
        Err(e) => panic!("{what} on a full disk: {e} (wanted NFS4ERR_NOSPC)"),
    }
}

fn mode_attr(mode: u32) -> fattr4<'static> {
    fattr4 { attrmask: vec![0, 1 << (FATTR4_MODE - 32)], attr_vals: mode.to_be_bytes().to_vec().into() }
}

fn set_mode(c: &mut Client, fh: &[u8], mode: u32) -> Result<(), pnfs_client::Error> {
    let ops = vec![
        nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() }),
        nfs_argop4::OP_SETATTR(SETATTR4args { stateid: ANONYMOUS_STATEID, obj_attributes: mode_attr(mode) }),
    ];
    c.compound_ok(ops, |_| Ok(()))
}

fn get_mode(c: &mut Client, fh: &[u8]) -> u32 {
    let ops = vec![
        nfs_argop4::OP_PUTFH(PUTFH4args { object: fh.into() }),
        nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![0, 1 << (FATTR4_MODE - 32)] }),
    ];
    c.compound_ok(ops, |r| match &r[1] {
        nfs_resop4::OP_GETATTR(GETATTR4res::NFS4_OK(ok)) => {
            Ok(u32::from_be_bytes(ok.obj_attributes.attr_vals[..4].try_into().unwrap()) & 0o7777)
        }
        other => panic!("GETATTR mode: {other:?}"),
    })
    .unwrap()
}

fn read_all(c: &mut Client, fh: &[u8], sid: &stateid4, len: usize) -> Vec<u8> {
    c.read_upto(fh, sid, len, 65536).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn full_metadata_disk_answers_nospc_and_the_server_recovers() {
    let fs = match Tmpfs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => return println!("SKIPPED: needs root to mount a small tmpfs ({why})"),
    };
    let data = tempfile::tempdir().unwrap();
    let addr = start_mds(&fs.path().join("meta"), data.path());
    let mut c = client(addr);
    let export = c.lookup_path("/export").unwrap();

    // Acknowledged before the disk fills.
    let payload = pattern(200_000, 7);
    let acked = c.write_file(&export, "acked", &payload).unwrap();
    let (wfh, wsid) = c.open(&export, "w", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let mut names = vec!["acked".to_string(), "w".to_string()];
    let mut mode = 0o644;
    set_mode(&mut c, &acked, mode).unwrap();

    let ballast = fill(fs.path());
    // Free pages inside the metadata file may take a few more creates first
    // (acknowledged, so they must survive); then NOSPC.
    let mut n = 0;
    let mut create_until_nospc = |c: &mut Client, names: &mut Vec<String>| {
        for _ in 0..5000 {
            let name = format!("f{n}");
            n += 1;
            match nospc("CREATE", c.create_file(&export, &name)) {
                Some(_) => names.push(name),
                None => return println!("CREATE: NOSPC after {} files", names.len()),
            }
        }
        panic!("5000 creates on a full metadata disk all succeeded");
    };
    create_until_nospc(&mut c, &mut names);

    // Right after a refused transaction the store refuses writes; should a
    // stalled machine let a later one through, refill the store and retry.
    let mut refused = |c: &mut Client, names: &mut Vec<String>, what: &str, op: &mut dyn FnMut(&mut Client) -> Option<()>| {
        for i in 0..20 {
            if op(c).is_none() {
                return println!("{what}: NOSPC (after {i} successes)");
            }
            create_until_nospc(c, names);
        }
        panic!("{what} never answered NOSPC on a full metadata disk");
    };
    let mut dirs = Vec::new();
    refused(&mut c, &mut names, "CREATE (mkdir)", &mut |c| {
        let name = format!("d{}", dirs.len());
        let r = nospc("mkdir", c.mkdir(&export, &name)).map(|_| ());
        if r.is_some() {
            dirs.push(name);
        }
        r
    });
    names.extend(dirs);
    refused(&mut c, &mut names, "SETATTR", &mut |c| {
        let r = nospc("SETATTR", set_mode(c, &acked, mode ^ 0o070));
        if r.is_some() {
            mode ^= 0o070;
        }
        r
    });
    let wdata = pattern(50_000, 99);
    refused(&mut c, &mut names, "WRITE", &mut |c| {
        nospc("WRITE", c.write(&wfh, &wsid, 0, &wdata, stable_how4::FILE_SYNC4)).map(|_| ())
    });

    // Reads go on while the disk stays full (after the store's pause).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(read_all(&mut c, &acked, &ANONYMOUS_STATEID, payload.len()), payload, "read on a full disk");

    // Space comes back: no restart needed.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while nospc("CREATE after freeing space", c.mkdir(&export, "dir")).is_none() {
        assert!(Instant::now() < deadline, "still NOSPC 20 s after space was freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    names.push("dir".into());
    mode = 0o600;
    set_mode(&mut c, &acked, mode).unwrap();
    assert_eq!(c.write(&wfh, &wsid, 0, &wdata, stable_how4::FILE_SYNC4).unwrap() as usize, wdata.len());
    c.create_file(&export, "after").unwrap();
    names.push("after".into());

    // Every acknowledged change is there.
    assert_eq!(read_all(&mut c, &acked, &ANONYMOUS_STATEID, payload.len()), payload);
    assert_eq!(read_all(&mut c, &wfh, &wsid, wdata.len()), wdata);
    assert_eq!(get_mode(&mut c, &acked), mode);
    let mut listed = c.readdir(&export).unwrap();
    listed.sort();
    names.sort();
    assert_eq!(listed, names, "directory after recovery");
}

#[test]
fn full_data_dir_answers_nospc_on_write() {
    let fs = match Tmpfs::mount("4m") {
        Ok(fs) => fs,
        Err(why) => return println!("SKIPPED: needs root to mount a small tmpfs ({why})"),
    };
    let meta = tempfile::tempdir().unwrap();
    let addr = start_mds(meta.path(), &fs.path().join("data"));
    let mut c = client(addr);
    let export = c.lookup_path("/export").unwrap();
    let payload = pattern(100_000, 3);
    let acked = c.write_file(&export, "acked", &payload).unwrap();

    let (fh, sid) = c.open(&export, "big", true, OPEN4_SHARE_ACCESS_BOTH).unwrap();
    let chunk = pattern(256 * 1024, 5);
    let mut off = 0u64;
    let full = (0..64).any(|_| match nospc("WRITE", c.write(&fh, &sid, off, &chunk, stable_how4::UNSTABLE4)) {
        Some(n) => {
            off += n as u64;
            false
        }
        None => true,
    });
    assert!(full, "16 MiB written to a 4 MiB data directory");

    // Removing a file frees its data; writing works again.
    c.close(&fh, &sid).unwrap();
    c.remove(&export, "big").unwrap();
    let again = pattern(300_000, 11);
    c.write_file(&export, "again", &again).unwrap();
    assert_eq!(c.read_file(&export, "again").unwrap(), again);
    assert_eq!(read_all(&mut c, &acked, &ANONYMOUS_STATEID, payload.len()), payload);
}

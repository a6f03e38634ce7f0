//! Object copies between two data servers (CTL_PROC_OBJ_COPY, the
//! resilver's data mover) and object versions, on the wire: the bytes and
//! holes of a several-MiB object arrive, the destination takes the
//! source's version only when finished; a source that dies mid-copy leaves
//! the destination's version as it was; the throttle holds a copy back; a
//! data server with another cluster key is refused, and a data server's
//! key buys nothing but reads.

mod common;

use common::{pattern, MIB};
use pnfs_client::pnfs_protocol;
use pnfs_ds::mds_link::CtlClient;
use pnfs_ds::{Backing, DsConfig, DsFh, DsHandle};
use pnfs_protocol::control_auth::ControlKeys;
use pnfs_protocol::seal::ClusterKey;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Opaque, XdrDecode};
use std::path::Path;
use std::time::{Duration, Instant};

const OBJ: DsFh = DsFh { stripe: 0, ino: 42, generation: 3 };

/// A DS whose cluster key is `key_file` (shared between the DSes of one test).
fn start(id: &str, dir: &Path, key_file: &Path, configure: impl FnOnce(&mut DsConfig)) -> DsHandle {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = common::config_without_mds(id, dir);
    cfg.cluster_key_file = Some(key_file.to_path_buf());
    configure(&mut cfg);
    pnfs_ds::run(cfg).unwrap()
}

fn on_volume(c: &mut DsConfig) {
    c.backing = Backing::Volume;
    c.volume = Some(c.data_dir.join("volume"));
    c.volume_bytes = Some(64 << 20);
    c.volume_extent_bytes = MIB as u64;
    c.volume_max_objects = 16;
}

fn mds(h: &DsHandle) -> CtlClient {
    h.control_client().unwrap()
}

fn fh_arg(fh: &[u8]) -> ctl_obj_args<'_> {
    ctl_obj_args { coa_fh: Opaque::borrowed(fh) }
}

fn write(c: &mut CtlClient, fh: &[u8], off: u64, data: &[u8]) {
    for (i, piece) in data.chunks(512 << 10).enumerate() {
        let a = ctl_write_args { cwa_fh: Opaque::borrowed(fh), cwa_offset: off + (i * (512 << 10)) as u64, cwa_stable: false, cwa_data: Opaque::borrowed(piece) };
        assert_eq!(common::ctl_call(c, CTL_PROC_OBJ_WRITE, &a), ctl_status::CTL_OK);
    }
}

fn read_all(c: &mut CtlClient, fh: &[u8], size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let a = ctl_read_args { cra_fh: Opaque::borrowed(fh), cra_offset: out.len() as u64, cra_count: 512 << 10 };
        let body = c.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_READ, &a).unwrap();
        let r = ctl_read_res::decode(&mut Decoder::new(&body)).unwrap();
        assert_eq!(r.crs_status, ctl_status::CTL_OK);
        assert!(!r.crs_data.is_empty(), "short object");
        out.extend_from_slice(&r.crs_data);
    }
    out
}

/// (version, size) by CTL_PROC_OBJ_VERSION_GET.
fn version(c: &mut CtlClient, fh: &[u8]) -> (u64, u64) {
    let body = c.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_VERSION_GET, &fh_arg(fh)).unwrap();
    let r = ctl_version_res::decode(&mut Decoder::new(&body)).unwrap();
    assert_eq!(r.cvr_status, ctl_status::CTL_OK);
    (r.cvr_version, r.cvr_size)
}

fn set_version(c: &mut CtlClient, fh: &[u8], v: u64) {
    let body = c.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_VERSION_SET, &ctl_version_args { cvs_fh: Opaque::borrowed(fh), cvs_version: v }).unwrap();
    assert_eq!(ctl_version_res::decode(&mut Decoder::new(&body)).unwrap().cvr_version, v);
}

struct Copy<'a> {
    from: &'a DsHandle,
    off: u64,
    count: u64,
    version: u64,
    finish: bool,
    deadline_ms: u32,
}

fn copy_call(c: &mut CtlClient, fh: &[u8], k: &Copy) -> ctl_copy_res {
    let src = k.from.control_addr().to_string();
    let a = ctl_copy_args {
        cca_fh: Opaque::borrowed(fh),
        cca_source: Opaque::borrowed(src.as_bytes()),
        cca_source_fh: Opaque::borrowed(fh),
        cca_offset: k.off,
        cca_count: k.count,
        cca_version: k.version,
        cca_deadline_ms: k.deadline_ms,
        cca_finish: k.finish,
    };
    let body = c.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_COPY, &a).unwrap();
    ctl_copy_res::decode(&mut Decoder::new(&body)).unwrap()
}

/// Drives copy calls as the MDS does, each continuing where the last got
/// to, until the range is done or a call fails; the last answer and the
/// number of calls.
fn drive(c: &mut CtlClient, fh: &[u8], mut k: Copy) -> (ctl_copy_res, u32) {
    let end = k.off.saturating_add(k.count);
    for calls in 1..1000 {
        let r = copy_call(c, fh, &k);
        if r.ccr_status != ctl_copy_status::COPY_OK || r.ccr_done {
            return (r, calls);
        }
        assert!(r.ccr_next > k.off || k.deadline_ms < 200, "no progress: {r:?}");
        k.count = end - r.ccr_next;
        k.off = r.ccr_next;
    }
    panic!("copy never finished");
}

/// The source object: `size` bytes, data except a hole of `hole` at `at`.
fn source_object(h: &DsHandle, fh: &[u8], size: u64, at: u64, hole: u64) -> Vec<u8> {
    let mut ctl = mds(h);
    assert_eq!(common::ctl_call(&mut ctl, CTL_PROC_OBJ_CREATE, &fh_arg(fh)), ctl_status::CTL_OK);
    let mut want = pattern(9, size as usize);
    want[at as usize..(at + hole) as usize].fill(0);
    write(&mut ctl, fh, 0, &want[..at as usize]);
    write(&mut ctl, fh, at + hole, &want[(at + hole) as usize..]);
    want
}

fn copies_an_object_with_a_hole(backing_volume: bool) {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let conf = |c: &mut DsConfig| {
        if backing_volume {
            on_volume(c);
        }
    };
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let a = start("src", &da, &key, conf);
    let b = start("dst", &db, &key, conf);
    let fh = OBJ.to_bytes();
    // 6 MiB + 1234 bytes with a 2 MiB hole at 2 MiB, version 5.
    let size = 6 * MIB as u64 + 1234;
    let want = source_object(&a, &fh, size, 2 * MIB as u64, 2 * MIB as u64);
    let mut ca = mds(&a);
    set_version(&mut ca, &fh, 5);
    // The destination holds a stale copy: version 3, junk everywhere, and
    // longer than the source.
    let mut cb = mds(&b);
    assert_eq!(common::ctl_call(&mut cb, CTL_PROC_OBJ_CREATE, &fh_arg(&fh)), ctl_status::CTL_OK);
    write(&mut cb, &fh, 0, &vec![0xee; 8 * MIB]);
    set_version(&mut cb, &fh, 3);

    // A first range: copied, but not finished: the old version stays.
    let first = Copy { from: &a, off: 0, count: 3 * MIB as u64, version: 5, finish: false, deadline_ms: 2000 };
    let (r, _) = drive(&mut cb, &fh, first);
    assert_eq!((r.ccr_status, r.ccr_done, r.ccr_source_size), (ctl_copy_status::COPY_OK, true, size), "{r:?}");
    assert_eq!(version(&mut cb, &fh).0, 3, "a range copied without finish keeps the old version");
    // The rest, finished: size and version of the source.
    let rest = Copy { from: &a, off: 3 * MIB as u64, count: u64::MAX - (3 * MIB as u64), version: 5, finish: true, deadline_ms: 2000 };
    let (r, _) = drive(&mut cb, &fh, rest);
    assert_eq!((r.ccr_status, r.ccr_done, r.ccr_version), (ctl_copy_status::COPY_OK, true, 5), "{r:?}");
    assert_eq!(version(&mut cb, &fh), (5, size));
    assert!(read_all(&mut cb, &fh, size) == want, "the copy differs from the source");
    let s = b.stats();
    // Only data crossed the wire: the 2 MiB hole did not.
    assert_eq!(s.copy_bytes, size - 2 * MIB as u64);
    assert_eq!((s.copies_finished, s.copies_in_flight, s.copy_failures), (1, 0, 0));
    if !backing_volume {
        // The hole is a hole on the destination too.
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(db.join("objects").join(OBJ.object_name())).unwrap();
        assert!(m.blocks() * 512 < size - MIB as u64, "{} bytes allocated for {size}", m.blocks() * 512);
    }
    // Copying again at the same version is harmless; a newer destination is refused.
    let again = Copy { from: &a, off: 0, count: u64::MAX, version: 5, finish: true, deadline_ms: 2000 };
    assert_eq!(drive(&mut cb, &fh, again).0.ccr_status, ctl_copy_status::COPY_OK);
    set_version(&mut cb, &fh, 9);
    let r = copy_call(&mut cb, &fh, &Copy { from: &a, off: 0, count: u64::MAX, version: 5, finish: true, deadline_ms: 2000 });
    assert_eq!((r.ccr_status, r.ccr_version), (ctl_copy_status::COPY_DEST_NEWER, 9));
    // A source that does not carry the expected version: nothing written.
    set_version(&mut cb, &fh, 1);
    let r = copy_call(&mut cb, &fh, &Copy { from: &a, off: 0, count: u64::MAX, version: 6, finish: true, deadline_ms: 2000 });
    assert_eq!((r.ccr_status, r.ccr_bytes, r.ccr_version), (ctl_copy_status::COPY_SOURCE_VERSION, 0, 1));
    // A missing source object.
    let other = DsFh { ino: 43, ..OBJ }.to_bytes();
    let r = copy_call(&mut cb, &other, &Copy { from: &a, off: 0, count: u64::MAX, version: 0, finish: true, deadline_ms: 2000 });
    assert_eq!(r.ccr_status, ctl_copy_status::COPY_SOURCE_ERROR);
}

#[test]
fn copies_an_object_with_a_hole_and_takes_the_version_when_finished() {
    copies_an_object_with_a_hole(false);
}

#[test]
fn copies_onto_the_volume_backend_too() {
    copies_an_object_with_a_hole(true);
}

#[test]
fn a_source_dying_mid_copy_leaves_the_destination_version_and_the_throttle_holds() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let rate = MIB as u64;
    let a = start("src", &dir.path().join("a"), &key, |_| {});
    let b = start("dst", &dir.path().join("b"), &key, |c| c.copy_bytes_per_sec = rate);
    let fh = OBJ.to_bytes();
    let size = 24 * MIB as u64;
    source_object(&a, &fh, size, 0, 0);
    set_version(&mut mds(&a), &fh, 7);
    let mut cb = mds(&b);
    assert_eq!(common::ctl_call(&mut cb, CTL_PROC_OBJ_CREATE, &fh_arg(&fh)), ctl_status::CTL_OK);
    set_version(&mut cb, &fh, 2);

    // The throttle: 2 MiB at 1 MiB/s takes well over a second (a quarter
    // second's burst is free): a lower bound only.
    let t0 = Instant::now();
    let (r, _) = drive(&mut cb, &fh, Copy { from: &a, off: 0, count: 2 * MIB as u64, version: 7, finish: false, deadline_ms: 3000 });
    assert_eq!((r.ccr_status, r.ccr_done), (ctl_copy_status::COPY_OK, true), "{r:?}");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1500), "2 MiB at 1 MiB/s in {took:?}");

    // The rest, finishing, while the source dies.
    let worker = {
        let mut cb = mds(&b);
        let a_addr = a.control_addr();
        std::thread::spawn(move || {
            // As `drive`, by address (the handle moves to the main thread).
            let src = a_addr.to_string();
            let mut off = 2 * MIB as u64;
            loop {
                let args = ctl_copy_args {
                    cca_fh: Opaque::borrowed(&fh),
                    cca_source: Opaque::borrowed(src.as_bytes()),
                    cca_source_fh: Opaque::borrowed(&fh),
                    cca_offset: off,
                    cca_count: u64::MAX - off,
                    cca_version: 7,
                    cca_deadline_ms: 1000,
                    cca_finish: true,
                };
                let body = cb.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_COPY, &args).unwrap();
                let r = ctl_copy_res::decode(&mut Decoder::new(&body)).unwrap();
                if r.ccr_status != ctl_copy_status::COPY_OK || r.ccr_done {
                    return r;
                }
                off = r.ccr_next;
            }
        })
    };
    let started = b.stats().copy_bytes;
    let wait = Instant::now();
    while b.stats().copy_bytes < started + MIB as u64 {
        assert!(wait.elapsed() < Duration::from_secs(30), "the copy does not move");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.shutdown();
    a.join();
    let r = worker.join().unwrap();
    assert_eq!(r.ccr_status, ctl_copy_status::COPY_SOURCE_UNREACHABLE, "{r:?}");
    assert!(!r.ccr_done);
    assert!(b.stats().copy_bytes < size, "the source died before the end");
    assert_eq!(version(&mut cb, &fh).0, 2, "an interrupted copy keeps the destination's old version");
    assert_eq!(b.stats().copies_finished, 0);
    assert_eq!(b.stats().copies_in_flight, 0);
}

#[test]
fn another_cluster_key_is_refused_and_a_data_server_key_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let a = start("src", &dir.path().join("a"), &key, |_| {});
    let fh = OBJ.to_bytes();
    source_object(&a, &fh, MIB as u64, 0, 0);
    // A data server with its own key cannot pull from A.
    let other_dir = tempfile::tempdir().unwrap();
    let w = start("wrong", &other_dir.path().join("w"), &ClusterKey::test_file_in(other_dir.path()), |_| {});
    let refused = a.stats().control_refused;
    let r = copy_call(&mut mds(&w), &fh, &Copy { from: &a, off: 0, count: u64::MAX, version: 0, finish: true, deadline_ms: 2000 });
    assert_eq!((r.ccr_status, r.ccr_bytes, r.ccr_done), (ctl_copy_status::COPY_SOURCE_REFUSED, 0, false), "{r:?}");
    let t0 = Instant::now();
    while a.stats().control_refused != refused + 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the source did not count the refusal");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(w.stats().copy_failures, 1);
    // A caller with the DS-to-DS key of the right cluster may read...
    let cluster = ClusterKey::load(&key).unwrap();
    let peer = || CtlClient::connect(&a.control_addr().to_string(), Duration::from_secs(2), ControlKeys::for_ds_peers(&cluster), 0).unwrap();
    let mut p = peer();
    let body = p.call(PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_VERSION_GET, &fh_arg(&fh)).unwrap();
    assert_eq!(ctl_version_res::decode(&mut Decoder::new(&body)).unwrap().cvr_size, MIB as u64);
    // ...but nothing else: refused, connection closed, object still there.
    for (proc_, what) in [(CTL_PROC_OBJ_REMOVE, "remove"), (CTL_PROC_OBJ_VERSION_SET, "version set"), (CTL_PROC_OBJ_READ, "plain read")] {
        let mut p = peer();
        let e = p.call(PNFSCTL_DS_PROGRAM, proc_, &fh_arg(&fh)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{what}: {e}");
    }
    assert_eq!(version(&mut mds(&a), &fh), (0, MIB as u64));
}

/// The copy rate on loopback, unthrottled (a measurement, not a check):
/// `cargo test --release -p pnfs-ds --test copy -- --ignored --nocapture copy_rate`;
/// `PNFS_COPY_RATE_MIB` sets the object size (256 MiB by default).
#[test]
#[ignore]
fn copy_rate_on_loopback() {
    let mib: usize = std::env::var("PNFS_COPY_RATE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let a = start("src", &dir.path().join("a"), &key, |_| {});
    let b = start("dst", &dir.path().join("b"), &key, |_| {});
    let fh = OBJ.to_bytes();
    let size = (mib * MIB) as u64;
    let mut ca = mds(&a);
    assert_eq!(common::ctl_call(&mut ca, CTL_PROC_OBJ_CREATE, &fh_arg(&fh)), ctl_status::CTL_OK);
    let piece = pattern(5, MIB);
    for i in 0..mib {
        write(&mut ca, &fh, (i * MIB) as u64, &piece);
    }
    assert_eq!(common::ctl_call(&mut ca, CTL_PROC_OBJ_COMMIT, &fh_arg(&fh)), ctl_status::CTL_OK);
    set_version(&mut ca, &fh, 1);
    let mut cb = mds(&b);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let (r, calls) = drive(&mut cb, &fh, Copy { from: &a, off: 0, count: u64::MAX, version: 1, finish: false, deadline_ms: 4000 });
    let moved = t0.elapsed();
    assert!(r.ccr_done && r.ccr_status == ctl_copy_status::COPY_OK, "{r:?}");
    let t1 = Instant::now();
    let r = copy_call(&mut cb, &fh, &Copy { from: &a, off: size, count: 0, version: 1, finish: true, deadline_ms: 4000 });
    let synced = t1.elapsed();
    let cpu = cpu_seconds() - cpu0;
    assert_eq!((r.ccr_status, r.ccr_version), (ctl_copy_status::COPY_OK, 1));
    assert_eq!(b.stats().copy_bytes, size);
    let rate = |d: Duration| size as f64 / MIB as f64 / d.as_secs_f64();
    println!(
        "COPY_RATE {mib} MiB in {calls} call(s): {:.0} MiB/s moved ({moved:.2?}); finish (size, fdatasync, version) {synced:.2?}; \
         {:.0} MiB/s overall; both data servers used {cpu:.2} CPU s = {:.0} MiB per CPU second",
        rate(moved),
        rate(moved + synced),
        mib as f64 / cpu
    );
}

/// This process's user + system CPU seconds (/proc/self/stat, 100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

//! The resilver's job queue (pnfs_mds::pnfs::resilver) driving real data
//! servers: objects copied onto a destination DS from the sources a job
//! names, going on from the next source when one is dead or holds a stale
//! copy, the destination ending at the job's version with the source's
//! bytes; a job whose only source is dead fails; progress counts objects
//! and bytes; the queue is bounded and a job is not queued twice.

use pnfs_client::pnfs_protocol::control_auth::ControlKeys;
use pnfs_client::pnfs_protocol::seal::ClusterKey;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::{Decoder, XdrDecode};
use pnfs_ds::DsFh;
use pnfs_mds::pnfs::client::CtlClient;
use pnfs_mds::pnfs::resilver::{self, CopyJob, CopySource, JobEnd, Resilver, ResilverConfig, SubmitError};
use pnfs_kv::{KvStore, MemStore};
use pnfs_mds::pnfs::{registry, Pnfs, PnfsConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MIB: usize = 1 << 20;

fn start_ds(id: &str, dir: &Path, key: &Path) -> pnfs_ds::DsHandle {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cfg = pnfs_ds::DsConfig::new(id, dir.join(id), &dead.to_string());
    cfg.cluster_key_file = Some(key.to_path_buf());
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.control_bind = "127.0.0.1:0".parse().unwrap();
    cfg.reactors = 1;
    cfg.copy_chunk_bytes = 1 << 20;
    pnfs_ds::run(cfg).unwrap()
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8).collect()
}

fn fh(ino: u64) -> Vec<u8> {
    DsFh { stripe: 0, ino, generation: 1 }.to_bytes().to_vec()
}

/// Object `fh` on `addr`: `data` (zeros left as a hole from `hole.0` for
/// `hole.1` bytes), at `version`.
fn put(ctl: &CtlClient, addr: &str, fh: &[u8], data: &[u8], hole: (usize, usize), version: u64) {
    let body = ctl.call(addr, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_CREATE, &ctl_obj_args { coa_fh: fh.into() }).unwrap();
    assert_eq!(ctl_res::decode(&mut Decoder::new(&body)).unwrap().cr_status, ctl_status::CTL_OK);
    let mut off = 0;
    while off < data.len() {
        let n = (512 << 10).min(data.len() - off);
        if !(hole.0..hole.0 + hole.1).contains(&off) {
            let a = ctl_write_args { cwa_fh: fh.into(), cwa_offset: off as u64, cwa_stable: false, cwa_data: data[off..off + n].into() };
            let body = ctl.call(addr, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_WRITE, &a).unwrap();
            assert_eq!(ctl_res::decode(&mut Decoder::new(&body)).unwrap().cr_status, ctl_status::CTL_OK);
        }
        off += n;
    }
    resilver::set_object_version(ctl, addr, fh, version).unwrap();
}

fn read(ctl: &CtlClient, addr: &str, fh: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < size {
        let a = ctl_read_args { cra_fh: fh.into(), cra_offset: out.len() as u64, cra_count: MIB as u32 };
        let body = ctl.call(addr, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_READ, &a).unwrap();
        let r = ctl_read_res::decode(&mut Decoder::new(&body)).unwrap();
        assert!(r.crs_status == ctl_status::CTL_OK && !r.crs_data.is_empty());
        out.extend_from_slice(&r.crs_data);
    }
    out
}

#[test]
fn the_queue_copies_onto_a_data_server_from_the_sources_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let ctl = CtlClient::new(ControlKeys::new(&ClusterKey::load(&key).unwrap()), 1);
    let (s1, s2, dst) = (start_ds("s1", dir.path(), &key), start_ds("s2", dir.path(), &key), start_ds("dst", dir.path(), &key));
    // A data server that was there and died: its address refuses connections.
    let gone = start_ds("gone", dir.path(), &key);
    let gone_addr = gone.control_addr().to_string();
    gone.shutdown();
    gone.join();
    let addrs: HashMap<u32, String> =
        [(1, s1.control_addr().to_string()), (2, s2.control_addr().to_string()), (3, dst.control_addr().to_string()), (4, gone_addr)].into();
    let a = |i: u32| addrs[&i].clone();

    // Object 1 (3 MiB) on s1 and s2 at version 4; object 2 (5 MiB + 77, a
    // 2 MiB hole) on s2 only; object 3 stale on s1 (version 3) and good on
    // s2 (version 4); object 4 only on the dead one.
    let (d1, mut d2, d3) = (pattern(1, 3 * MIB), pattern(2, 5 * MIB + 77), pattern(3, 2 * MIB));
    d2[MIB..3 * MIB].fill(0);
    put(&ctl, &a(1), &fh(1), &d1, (0, 0), 4);
    put(&ctl, &a(2), &fh(1), &d1, (0, 0), 4);
    put(&ctl, &a(2), &fh(2), &d2, (MIB, 2 * MIB), 4);
    put(&ctl, &a(1), &fh(3), &pattern(9, 2 * MIB), (0, 0), 3);
    put(&ctl, &a(2), &fh(3), &d3, (0, 0), 4);

    let ended: Arc<Mutex<Vec<(u64, JobEnd)>>> = Arc::default();
    let log = ended.clone();
    let addrs2 = addrs.clone();
    let cfg = ResilverConfig { queue_max: 16, copies: 2, copies_per_ds: 2 };
    let r = Resilver::with_metrics(
        cfg,
        ctl.caller(),
        Box::new(move |ds| addrs2.get(&ds).cloned()),
        Box::new(move |job, end| log.lock().unwrap().push((job.file, end.clone()))),
        None,
    );
    let src = |ds: u32, ino: u64| CopySource { ds, fh: fh(ino) };
    let job = |ino: u64, sources: Vec<CopySource>, size: usize| CopyJob {
        file: ino,
        dest: 3,
        dest_fh: fh(ino),
        sources,
        range: None,
        version: 4,
        size_hint: size as u64,
    };
    assert_eq!(r.submit(job(1, vec![src(4, 1), src(1, 1)], d1.len())), Ok(true));
    assert_eq!(r.submit(job(1, vec![src(2, 1)], d1.len())), Ok(false), "the same destination object is not queued twice");
    assert_eq!(r.submit(job(2, vec![src(2, 2)], d2.len())), Ok(true));
    assert_eq!(r.submit(job(3, vec![src(1, 3), src(2, 3)], d3.len())), Ok(true));
    assert_eq!(r.submit(job(4, vec![src(4, 4)], MIB)), Ok(true));
    assert!(matches!(r.submit(job(5, vec![], 0)), Err(SubmitError::Invalid(_))));
    assert!(r.wait_idle(Duration::from_secs(120)), "jobs still pending: {:?}", r.progress());

    let mut ended = ended.lock().unwrap().clone();
    ended.sort_by_key(|(f, _)| *f);
    let data = |i: usize| d1.len() as u64 * (i == 1) as u64 + (d2.len() - 2 * MIB) as u64 * (i == 2) as u64 + d3.len() as u64 * (i == 3) as u64;
    assert_eq!(ended[0], (1, JobEnd::Done { bytes: data(1) }));
    assert_eq!(ended[1], (2, JobEnd::Done { bytes: data(2) }));
    assert_eq!(ended[2], (3, JobEnd::Done { bytes: data(3) }), "the stale source was passed over");
    assert!(matches!(&ended[3], (4, JobEnd::Failed(why)) if why.contains("every source failed")), "{:?}", ended[3]);
    for (ino, want) in [(1, &d1), (2, &d2), (3, &d3)] {
        assert_eq!(resilver::object_version(&ctl, &a(3), &fh(ino)).unwrap(), (4, want.len() as u64), "object {ino}");
        assert!(read(&ctl, &a(3), &fh(ino), want.len()) == *want, "object {ino}'s bytes");
    }
    // The failed job left no version behind on the destination (it is 0:
    // never set, below any file's version).
    assert_eq!(resilver::object_version(&ctl, &a(3), &fh(4)).unwrap().0, 0);
    let p = r.progress();
    assert_eq!((p.jobs_done, p.jobs_failed, p.jobs_pending, p.jobs_running), (3, 1, 0, 0), "{p:?}");
    assert_eq!(p.bytes_done, data(1) + data(2) + data(3));
    assert_eq!(p.bytes_pending, 0);
    assert!(p.last_failure.as_deref().is_some_and(|f| f.contains("file 4")), "{p:?}");
    // The data went DS to DS: the destination pulled every byte itself.
    assert_eq!(dst.stats().copy_bytes, p.bytes_done);
    assert_eq!(dst.stats().copies_finished, 3);
}

#[test]
fn the_queue_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let ctl = CtlClient::new(ControlKeys::new(&ClusterKey::load(&key).unwrap()), 1);
    // No data server resolves: jobs wait (and back off) in the queue.
    let cfg = ResilverConfig { queue_max: 2, copies: 1, copies_per_ds: 1 };
    let r = Resilver::with_metrics(cfg, ctl, Box::new(|_| None), Box::new(|_, _| {}), None);
    let job = |ino: u64| CopyJob { file: ino, dest: 1, dest_fh: fh(ino), sources: vec![CopySource { ds: 2, fh: fh(ino) }], range: None, version: 1, size_hint: 10 };
    assert_eq!(r.submit(job(1)), Ok(true));
    assert_eq!(r.submit(job(2)), Ok(true));
    assert_eq!(r.submit(job(3)), Err(SubmitError::Full));
    let p = r.progress();
    assert_eq!(p.jobs_pending + p.jobs_running, 2);
    assert_eq!(p.bytes_pending, 20);
    drop(r);
}

/// A single MDS's `Pnfs` with its control listener on a thread of its own.
fn start_mds(key: &Path) -> (Arc<Pnfs>, std::net::SocketAddr) {
    let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
    let pcfg = PnfsConfig::striped(65536, 0, Duration::from_secs(10));
    let pnfs = Pnfs::new(pcfg, store, 1, ClusterKey::load(key).unwrap()).unwrap();
    let addr = registry::serve_control_on_thread(pnfs.clone()).unwrap();
    (pnfs, addr)
}

#[test]
fn a_running_mds_resolves_data_servers_through_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::test_file_in(dir.path());
    let (pnfs, mds) = start_mds(&key);
    let registered = |id: &str| {
        let mut cfg = pnfs_ds::DsConfig::new(id, dir.path().join(id), &mds.to_string());
        cfg.cluster_key_file = Some(key.clone());
        cfg.bind = "127.0.0.1:0".parse().unwrap();
        cfg.control_bind = "127.0.0.1:0".parse().unwrap();
        cfg.reactors = 1;
        pnfs_ds::run(cfg).unwrap()
    };
    let (_a, _b) = (registered("ra"), registered("rb"));
    let t = std::time::Instant::now();
    while pnfs.registry.live().len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(20), "the data servers did not register");
        std::thread::sleep(Duration::from_millis(20));
    }
    let index = |id: &str| pnfs.registry.live().iter().find(|d| d.id == id.as_bytes()).unwrap().index;
    let (ia, ib) = (index("ra"), index("rb"));
    let data = pattern(7, 2 * MIB + 5);
    pnfs.obj_create(ia, &fh(8)).unwrap();
    for (i, piece) in data.chunks(MIB).enumerate() {
        pnfs.obj_write(ia, &fh(8), (i * MIB) as u64, piece, false).unwrap();
    }
    pnfs.obj_set_version(ia, &fh(8), 2).unwrap();
    assert_eq!(pnfs.obj_version(ia, &fh(8)).unwrap(), (2, data.len() as u64));
    assert_eq!(pnfs.obj_version(ib, &fh(8)).unwrap_err().kind(), std::io::ErrorKind::NotFound);

    let done: Arc<Mutex<Vec<JobEnd>>> = Arc::default();
    let log = done.clone();
    let cfg = ResilverConfig { queue_max: 4, copies: 1, copies_per_ds: 1 };
    let r = Resilver::for_pnfs(&pnfs, cfg, Box::new(move |_, end| log.lock().unwrap().push(end.clone())));
    let job = CopyJob { file: 8, dest: ib, dest_fh: fh(8), sources: vec![CopySource { ds: ia, fh: fh(8) }], range: None, version: 2, size_hint: 0 };
    assert_eq!(r.submit(job), Ok(true));
    assert!(r.wait_idle(Duration::from_secs(60)), "{:?}", r.progress());
    assert_eq!(*done.lock().unwrap(), vec![JobEnd::Done { bytes: data.len() as u64 }]);
    assert_eq!(pnfs.obj_version(ib, &fh(8)).unwrap(), (2, data.len() as u64));
    let mut back = vec![0u8; data.len()];
    assert_eq!(pnfs.obj_read(ib, &fh(8), 0, &mut back).unwrap(), data.len());
    assert!(back == data);
    let p = r.progress();
    assert_eq!((p.jobs_done, p.bytes_done), (1, data.len() as u64));
}

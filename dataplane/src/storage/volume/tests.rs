//! The volume backend's tests (format, I/O across extents, truncate,
//! bounds, commits, crash consistency, block devices, NVMe passthrough).

use super::*;
use super::format::get_u64;
use crate::ops::io::io_status;
use crate::storage::{BufPool, Engine, IoError, Object, ObjectStore};
use pnfs_protocol::wire::nfsstat4;

const EXT: u64 = 64 * 1024;
const KIB: usize = 1024;

fn opts(path: &Path, bytes: u64, max_objects: u32) -> VolumeOptions {
    VolumeOptions { path: path.into(), bytes: Some(bytes), extent_bytes: EXT, max_objects, ds_id: "ds-vol".into(), o_direct: true, passthrough: false }
}

fn fh(i: u64) -> DsFh {
    DsFh { stripe: 1, ino: i, generation: 7 }
}

struct T {
    store: ObjectStore,
    engine: Engine,
    stats: Arc<DsStats>,
}

fn open_with(o: &VolumeOptions, uring: bool) -> T {
    let stats = Arc::new(DsStats::default());
    let store = ObjectStore::open_volume(o, stats.clone()).unwrap();
    let mut engine = Engine::new(BufPool::new(4, 256 * KIB), stats.clone(), uring);
    if engine.enable_fixed_files(8) {
        assert!(engine.attach_volume(store.volume().unwrap()));
    }
    T { store, engine, stats }
}

fn vol(t: &T) -> &Arc<Volume> {
    t.store.volume().unwrap()
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn read(t: &T, o: &Object, off: u64, n: usize) -> Vec<u8> {
    let (b, got) = t.engine.read(o, off, n).ok().unwrap();
    b.as_slice()[..got].to_vec()
}

/// Writes through a pool buffer (zero-copy path: O_DIRECT when aligned).
fn write_pooled(t: &T, o: &Object, off: u64, data: &[u8]) -> Result<(), IoError> {
    let mut b = t.engine.pool.take().unwrap();
    b.as_mut_slice()[..data.len()].copy_from_slice(data);
    t.engine.write_pooled(o, off, &b, data.len())
}

fn status(r: Result<(), IoError>) -> nfsstat4 {
    match r {
        Ok(()) => nfsstat4::NFS4_OK,
        Err(IoError::Io(e)) => io_status(&e),
        Err(IoError::NoBuffer) => nfsstat4::NFS4ERR_DELAY,
    }
}

/// A volume file whose data area holds garbage: allocation must zero.
fn dirty_file(dir: &Path, bytes: u64) -> PathBuf {
    let p = dir.join("vol");
    let mut junk = vec![0xa5u8; bytes as usize];
    junk[..IO_ALIGN].fill(0);
    std::fs::write(&p, &junk).unwrap();
    p
}

#[test]
fn format_reopen_round_trip_and_io_across_extents() {
    for uring in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(&dirty_file(dir.path(), 4 << 20), 4 << 20, 8);
        let t = open_with(&o, uring);
        let g = vol(&t).geometry();
        assert_eq!((g.extent_bytes, g.max_objects, g.data_off % EXT), (EXT, 8, 0));
        let total = g.extent_count as u64 * EXT;
        assert_eq!(vol(&t).capacity(), (total, total));
        let a = t.store.create(&fh(1)).unwrap();
        assert!(Arc::ptr_eq(&a, &t.store.create(&fh(1)).unwrap()), "idempotent");
        assert_eq!(t.store.open_object(&fh(2)).unwrap_err().kind(), io::ErrorKind::NotFound);
        // Aligned, across two extent boundaries, O_DIRECT from the pool buffer.
        let big = pattern(1, 160 * KIB);
        assert_eq!(status(write_pooled(&t, &a, EXT - 16 * KIB as u64, &big)), nfsstat4::NFS4_OK);
        // Unaligned, across a boundary, buffered; a copying aligned write.
        let odd = pattern(2, 10_001);
        t.engine.write(&a, 4 * EXT - 5000, &odd).ok().unwrap();
        let small = pattern(3, 8192);
        t.engine.write(&a, 4 * EXT + 8192, &small).ok().unwrap();
        let end = 4 * EXT + 16384;
        assert_eq!(a.size().unwrap(), end);
        assert_eq!(vol(&t).capacity().1, total - 5 * EXT);
        let check = |t: &T, a: &Object| {
            assert!(read(t, a, EXT - 16 * KIB as u64, big.len()) == big);
            assert!(read(t, a, 4 * EXT - 5000, odd.len()) == odd);
            assert!(read(t, a, 4 * EXT - 4096, 4096)[..] == odd[904..5000]);
            assert!(read(t, a, 4 * EXT + 8192, 100_000) == small, "short at the end");
            // Holes and never-written parts of allocated extents: zeros,
            // not the garbage that was on the volume.
            assert!(read(t, a, 0, (EXT - 16 * KIB as u64) as usize).iter().all(|b| *b == 0));
            assert!(read(t, a, 4 * EXT + 5001, 3191).iter().all(|b| *b == 0));
            assert!(read(t, a, 3 * EXT + 16 * KIB as u64 + 7, 3 * KIB).iter().all(|b| *b == 0));
            assert!(read(t, a, end, 4096).is_empty());
            assert!(read(t, a, 1 << 40, 4096).is_empty());
        };
        check(&t, &a);
        assert_eq!(t.engine.pool.available(), 4, "buffers leaked");
        let s = t.stats.snapshot();
        assert!(s.direct_ops > 0 && s.volume_extents_allocated == 5 && s.volume_meta_writes > 0);
        if uring {
            assert!(s.uring_ops > 0);
            if t.engine.fixed_files_in_use() == 1 {
                assert!(s.fixed_file_ops > 0, "the volume's slot is named");
            }
        }
        // Clean shutdown persists the size; reopen finds everything.
        drop(a);
        drop(t);
        let t = open_with(&o, uring);
        let a = t.store.open_object(&fh(1)).unwrap();
        assert_eq!(a.size().unwrap(), end);
        assert_eq!(a.stat().unwrap().space_used, 5 * EXT);
        check(&t, &a);
        assert_eq!(t.store.count_objects().unwrap(), 1);
        drop(a);
        drop(t);
        // Geometry or identity the config does not match: refused, named.
        for (k, bad) in [
            ("extents of", VolumeOptions { extent_bytes: EXT * 2, ..o.clone() }),
            ("object slots", VolumeOptions { max_objects: 9, ..o.clone() }),
            ("belongs to", VolumeOptions { ds_id: "other".into(), ..o.clone() }),
        ] {
            let e = Volume::open(&bad, Arc::new(DsStats::default())).unwrap_err();
            assert!(e.starts_with(&format!("volume {}:", o.path.display())) && e.contains(k), "{e}");
        }
    }
}

#[test]
fn truncate_and_remove_free_extents() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dirty_file(dir.path(), 4 << 20), 4 << 20, 4);
    let t = open_with(&o, true);
    let free0 = vol(&t).capacity().1;
    let a = t.store.create(&fh(1)).unwrap();
    let data = pattern(5, 3 * EXT as usize);
    for k in 0..3 {
        let chunk = &data[k * EXT as usize..(k + 1) * EXT as usize];
        write_pooled(&t, &a, k as u64 * EXT, chunk).ok().unwrap();
    }
    assert_eq!(vol(&t).capacity().1, free0 - 3 * EXT);
    // Shrink into the second extent: the third goes, the tail of the second reads zeros later.
    let cut = EXT + 1000;
    t.store.truncate(&fh(1), cut).unwrap();
    assert_eq!((a.size().unwrap(), vol(&t).capacity().1), (cut, free0 - 2 * EXT));
    assert!(read(&t, &a, 0, 2000)[..] == data[..2000]);
    t.store.truncate(&fh(1), 3 * EXT).unwrap(); // extend: sparse
    assert_eq!(vol(&t).capacity().1, free0 - 2 * EXT);
    let back = read(&t, &a, EXT, 8192);
    assert!(back[..1000] == data[EXT as usize..EXT as usize + 1000]);
    assert!(back[1000..].iter().all(|b| *b == 0), "truncated bytes come back as zeros");
    assert!(read(&t, &a, 2 * EXT, 4096).iter().all(|b| *b == 0));
    // Control-program I/O sees the same bytes.
    let (d, eof) = t.store.read_at(&fh(1), EXT, 1000).unwrap();
    assert!(!eof && d[..] == data[EXT as usize..EXT as usize + 1000]);
    t.store.write_at(&fh(1), 5, b"ctl", true).unwrap();
    assert_eq!(&read(&t, &a, 0, 8)[5..], b"ctl");
    assert_eq!(t.store.stat(&fh(1)).unwrap().size, 3 * EXT);
    // Remove: extents back, handle gone, stale references refused.
    assert!(t.store.remove(&fh(1)).unwrap());
    assert!(!t.store.remove(&fh(1)).unwrap());
    assert_eq!(vol(&t).capacity().1, free0);
    assert_eq!(t.store.open_object(&fh(1)).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(t.store.stat(&fh(1)).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(status(t.engine.write(&a, 0, &[1u8; 4096])), nfsstat4::NFS4ERR_STALE);
    assert!(matches!(t.engine.read(&a, 0, 10), Err(IoError::Io(e)) if io_status(&e) == nfsstat4::NFS4ERR_STALE));
    // The slot is reused; the new object is empty.
    let b = t.store.create(&fh(1)).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(b.size().unwrap(), 0);
    drop((a, b));
    drop(t);
    let t = open_with(&o, true);
    assert_eq!((t.store.count_objects().unwrap(), vol(&t).capacity().1), (1, free0));
}

#[test]
fn bounds_nospc_and_fbig() {
    let dir = tempfile::tempdir().unwrap();
    // Superblock + 2 slots (16 KiB) + bitmap: data from 64 KiB, 3 extents.
    let o = opts(&dir.path().join("vol"), 4 * EXT, 2);
    let t = open_with(&o, true);
    assert_eq!(vol(&t).geometry().extent_count, 3);
    let a = t.store.create(&fh(1)).unwrap();
    t.store.create(&fh(2)).unwrap();
    assert_eq!(io_status(&t.store.create(&fh(3)).unwrap_err()), nfsstat4::NFS4ERR_NOSPC, "table full");
    for k in 0..3 {
        write_pooled(&t, &a, k * EXT, &[9u8; 4096]).ok().unwrap();
    }
    assert_eq!(status(write_pooled(&t, &a, 3 * EXT, &[9u8; 4096])), nfsstat4::NFS4ERR_NOSPC);
    assert_eq!(status(t.engine.write(&a, 7 * EXT + 1, b"x")), nfsstat4::NFS4ERR_NOSPC);
    assert_eq!(a.size().unwrap(), 2 * EXT + 4096, "a refused write does not grow the size");
    let max = vol(&t).geometry().max_object_bytes();
    assert_eq!(max, MAP_LEN as u64 * EXT);
    assert_eq!(status(t.engine.write(&a, max - 1, b"xy")), nfsstat4::NFS4ERR_FBIG);
    assert_eq!(status(t.engine.write(&a, u64::MAX - 1, b"xy")), nfsstat4::NFS4ERR_FBIG);
    assert_eq!(io_status(&t.store.truncate(&fh(1), max + 1).unwrap_err()), nfsstat4::NFS4ERR_FBIG);
    t.store.truncate(&fh(1), max).unwrap();
    assert!(read(&t, &a, max - 4096, 8192).iter().all(|b| *b == 0));
    // Freed space is usable again.
    t.store.truncate(&fh(1), 0).unwrap();
    write_pooled(&t, &a, 5 * EXT, &[1u8; 4096]).ok().unwrap();
    assert_eq!(t.engine.pool.available(), 4);
    // Too small to hold anything: a clear error.
    let e = Volume::open(&opts(&dir.path().join("tiny"), EXT, 2), Arc::new(DsStats::default())).unwrap_err();
    assert!(e.contains("hold no extent"), "{e}");
}

#[test]
fn one_flush_covers_every_object() {
    let dir = tempfile::tempdir().unwrap();
    let t = open_with(&opts(&dir.path().join("vol"), 2 << 20, 4), true);
    let (a, b) = (t.store.create(&fh(1)).unwrap(), t.store.create(&fh(2)).unwrap());
    assert!(!t.engine.commit(&a).unwrap(), "nothing written yet");
    write_pooled(&t, &a, 0, &[1u8; 4096]).ok().unwrap();
    write_pooled(&t, &b, 0, &[2u8; 4096]).ok().unwrap();
    // New extents and sizes: each commit flushes and writes its entry.
    assert!(t.engine.commit(&a).unwrap());
    assert!(t.engine.commit(&b).unwrap());
    // Overwrites (no new extent, no growth): a's flush covers b.
    write_pooled(&t, &a, 0, &[4u8; 4096]).ok().unwrap();
    write_pooled(&t, &b, 0, &[5u8; 4096]).ok().unwrap();
    assert!(t.engine.commit(&a).unwrap());
    assert!(!t.engine.commit(&b).unwrap(), "covered by a's flush");
    assert!(!t.engine.commit(&b).unwrap(), "clean");
    // Overwrite inside an allocated extent, no growth: flush only.
    write_pooled(&t, &b, 0, &[3u8; 4096]).ok().unwrap();
    let before = t.stats.snapshot().volume_meta_writes;
    assert!(t.engine.commit(&b).unwrap());
    assert_eq!(t.stats.snapshot().volume_meta_writes, before, "no entry write without a change");
    let s = t.stats.snapshot();
    assert_eq!((s.fdatasyncs, s.commits_covered, s.commits_clean), (4, 1, 2));
    // The same object through another opener shares it all.
    assert!(Arc::ptr_eq(&a, &t.store.open_object(&fh(1)).unwrap()));
}

/// Where copy `copy` of object-table slot `slot` is.
fn slot_copy_off(o: &VolumeOptions, slot: u32, copy: u64) -> u64 {
    let bytes = std::fs::metadata(&o.path).unwrap().len();
    Geometry::compute(bytes, o.extent_bytes, o.max_objects).unwrap().slot_off(slot, copy)
}

#[test]
fn crash_keeps_acknowledged_data_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dirty_file(dir.path(), 4 << 20), 4 << 20, 8);
    let crash = |t: T| {
        vol(&t).crash_on_drop();
        drop(t);
    };
    let t = open_with(&o, true);
    let free0 = vol(&t).capacity().1;
    let (a, b, c) = (t.store.create(&fh(1)).unwrap(), t.store.create(&fh(2)).unwrap(), t.store.create(&fh(3)).unwrap());
    let da = pattern(1, 100_000);
    // a: written and COMMITted.
    t.engine.write(&a, 0, &da).ok().unwrap();
    assert!(t.engine.commit(&a).unwrap());
    // b: a stable control-program write, then an unstable one growing it
    // into a new extent, never committed.
    t.store.write_at(&fh(2), 0, b"stable", true).unwrap();
    write_pooled(&t, &b, 2 * EXT, &[7u8; 4096]).ok().unwrap();
    // c: created, written unstable into a new extent, never committed.
    write_pooled(&t, &c, 0, &[8u8; 8192]).ok().unwrap();
    drop((a, b, c));
    crash(t);

    let t = open_with(&o, true);
    assert_eq!(t.store.count_objects().unwrap(), 3, "creates are durable at once");
    let a = t.store.open_object(&fh(1)).unwrap();
    assert_eq!(a.size().unwrap(), da.len() as u64);
    assert!(read(&t, &a, 0, da.len()) == da);
    let b = t.store.open_object(&fh(2)).unwrap();
    assert_eq!(b.size().unwrap(), 6, "the committed size, not the unacknowledged growth");
    assert_eq!(read(&t, &b, 0, 100), b"stable");
    assert_eq!(t.store.open_object(&fh(3)).unwrap().size().unwrap(), 0);
    // The uncommitted extents of b and c went back to the free pool.
    assert_eq!(vol(&t).capacity().1, free0 - 2 * EXT - EXT);
    // Truncate and remove are durable when answered.
    t.store.truncate(&fh(1), 5000).unwrap();
    assert!(t.store.remove(&fh(3)).unwrap());
    drop((a, b));
    crash(t);

    let t = open_with(&o, true);
    assert_eq!(t.store.count_objects().unwrap(), 2);
    let a = t.store.open_object(&fh(1)).unwrap();
    assert_eq!(a.size().unwrap(), 5000);
    assert!(read(&t, &a, 0, 10_000)[..] == da[..5000]);
    assert_eq!(vol(&t).capacity().1, free0 - 2 * EXT);
    let slot_a = 0; // fh(1) was created first
    drop(a);
    drop(t);

    // A torn entry write: the newest copy of a's slot is garbage. The
    // older copy (the same object before the truncate) stands.
    let f = OpenOptions::new().read(true).write(true).open(&o.path).unwrap();
    let (c0, c1) = (slot_copy_off(&o, slot_a, 0), slot_copy_off(&o, slot_a, 1));
    let seq = |off| {
        let mut b = vec![0u8; 4096];
        f.read_exact_at(&mut b, off).unwrap();
        get_u64(&b, 8)
    };
    let newest = if seq(c0) > seq(c1) { c0 } else { c1 };
    let buf = vec![0x5au8; 1000];
    f.write_all_at(&buf[..1000], newest + 100).unwrap();
    drop(f);
    let t = open_with(&o, true);
    let a = t.store.open_object(&fh(1)).unwrap();
    assert_eq!(a.size().unwrap(), da.len() as u64, "the copy before the torn write");
    drop(a);
    drop(t);
    // Both copies damaged: refused, with the slot named; no panic.
    let f = OpenOptions::new().write(true).open(&o.path).unwrap();
    f.write_all_at(&buf[..1000], c0 + 100).unwrap();
    f.write_all_at(&buf[..1000], c1 + 100).unwrap();
    let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
    assert!(e.contains(&format!("slot {slot_a}")) && e.contains("corrupt"), "{e}");
}

/// A real block device (its size from BLKGETSIZE64, zeroing with
/// BLKZEROOUT). DESTROYS its contents: runs only when
/// PNFS_DS_TEST_BLOCKDEV names one (e.g. a loop device).
#[test]
fn block_device_when_one_is_given() {
    let Some(dev) = std::env::var_os("PNFS_DS_TEST_BLOCKDEV") else {
        eprintln!("PNFS_DS_TEST_BLOCKDEV unset; skipped");
        return;
    };
    let path = PathBuf::from(dev);
    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&[0u8; 4096], 0).unwrap();
    let o = VolumeOptions { bytes: None, ..opts(&path, 0, 8) };
    let t = open_with(&o, true);
    let g = vol(&t).geometry();
    let dev_size = device_size(&File::open(&path).unwrap()).unwrap();
    assert_eq!(g.volume_bytes, dev_size);
    let a = t.store.create(&fh(1)).unwrap();
    let d = pattern(7, 3 * EXT as usize);
    t.engine.write(&a, 1000, &d).ok().unwrap();
    write_pooled(&t, &a, 4 * EXT, &d[..EXT as usize]).ok().unwrap();
    assert!(read(&t, &a, 1000, d.len()) == d);
    t.store.truncate(&fh(1), EXT + 777).unwrap();
    t.store.truncate(&fh(1), 2 * EXT).unwrap();
    let back = read(&t, &a, EXT, EXT as usize);
    assert!(back[..777] == d[EXT as usize - 1000..EXT as usize - 223]);
    assert!(back[777..].iter().all(|b| *b == 0));
    // The truncate's flush covered the writes before it.
    assert!(!t.engine.commit(&a).unwrap());
    drop(a);
    drop(t);
    let t = open_with(&o, true);
    let a = t.store.open_object(&fh(1)).unwrap();
    assert_eq!(a.size().unwrap(), 2 * EXT);
    assert!(read(&t, &a, 1000, 1000)[..] == d[..1000]);
    assert!(t.store.remove(&fh(1)).unwrap());
    let (cap, free) = vol(&t).capacity();
    assert_eq!(cap, free);
}

#[test]
fn passthrough_needs_an_nvme_block_device() {
    let dir = tempfile::tempdir().unwrap();
    let o = VolumeOptions { passthrough: true, ..opts(&dir.path().join("vol"), 2 << 20, 4) };
    let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
    assert!(e.contains("volume_passthrough") && e.contains("NVMe"), "{e}");
}

/// Destroys what is on the namespace: only when PNFS_DS_TEST_NVME
/// names one, as its generic device (/dev/ng0n1) or its block device
/// (/dev/nvme0n1). Its first 4 KiB are zeroed, so it is formatted.
#[test]
fn nvme_passthrough_when_one_is_given() {
    let Some(dev) = std::env::var_os("PNFS_DS_TEST_NVME") else {
        eprintln!("PNFS_DS_TEST_NVME unset (an NVMe namespace, /dev/ngXnY or /dev/nvmeXnY, to overwrite); skipped");
        return;
    };
    let mut path = PathBuf::from(dev);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    if let Some(rest) = name.strip_prefix("ng") {
        path = path.with_file_name(format!("nvme{rest}"));
    }
    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&[0u8; 4096], 0).unwrap();
    let o = VolumeOptions { bytes: None, passthrough: true, ..opts(&path, 0, 8) };
    let t = open_with(&o, true);
    assert!(t.engine.uses_passthrough(), "passthrough ring not set up (see the log)");
    let a = t.store.create(&fh(1)).unwrap();
    let d = pattern(11, 3 * EXT as usize);
    // Aligned, across extent boundaries: NVMe writes from the registered buffer.
    write_pooled(&t, &a, EXT / 2, &d[..2 * EXT as usize]).ok().unwrap();
    let pt_writes = t.stats.snapshot().passthrough_ops;
    assert!(pt_writes >= 3, "{pt_writes}");
    // Unaligned: the block device's buffered path, then read back by passthrough.
    t.engine.write(&a, 3 * EXT + 100, &d[..5000]).ok().unwrap();
    assert!(read(&t, &a, EXT / 2, 2 * EXT as usize) == d[..2 * EXT as usize]);
    assert!(read(&t, &a, 3 * EXT, 8192)[100..5100] == d[..5000]);
    // Coherence: an unaligned read (page cache), an aligned passthrough
    // overwrite of the same block, an unaligned read again sees it.
    assert!(read(&t, &a, EXT / 2 + 10, 100)[..] == d[10..110]);
    let e = pattern(99, 4096);
    write_pooled(&t, &a, EXT / 2, &e).ok().unwrap();
    assert!(read(&t, &a, EXT / 2 + 10, 100)[..] == e[10..110]);
    let mut plain = vec![0u8; 100];
    vol(&t).read_plain(&t.store.volume().unwrap().lookup(&fh(1)).unwrap(), EXT / 2 + 10, &mut plain).unwrap();
    assert!(plain[..] == e[10..110]);
    // An NVMe error status (LBA out of range past the namespace's end) is EIO.
    let mut b = t.engine.pool.take().unwrap();
    let end = vol(&t).geometry().volume_bytes;
    let err = t.engine.pt_rw_test(false, &mut b, 4096, end).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(b);
    // COMMIT: an NVMe flush.
    let before = t.stats.snapshot().passthrough_ops;
    assert!(t.engine.commit(&a).unwrap());
    assert_eq!(t.stats.snapshot().passthrough_ops, before + 1);
    drop(a);
    drop(t);
    let t = open_with(&o, true);
    let a = t.store.open_object(&fh(1)).unwrap();
    assert!(read(&t, &a, EXT / 2, 4096)[..] == e[..]);
    assert!(read(&t, &a, EXT / 2 + 4096, 4096)[..] == d[4096..8192]);
    assert!(t.store.remove(&fh(1)).unwrap());
}

#[test]
fn damaged_superblock_is_an_error_naming_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dir.path().join("vol"), 2 << 20, 4);
    drop(open_with(&o, true));
    let f = OpenOptions::new().read(true).write(true).open(&o.path).unwrap();
    // A flipped bit inside: checksum.
    let mut b = vec![0u8; 4096];
    f.read_exact_at(&mut b, 0).unwrap();
    b[30] ^= 1;
    f.write_all_at(&b, 0).unwrap();
    let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
    assert!(e.starts_with(&format!("volume {}:", o.path.display())) && e.contains("checksum"), "{e}");
    // Something else entirely (a file system, say): bad magic, not formatted over.
    f.write_all_at(b"\x53\xef some file system", 0).unwrap();
    let e = Volume::open(&o, Arc::new(DsStats::default())).unwrap_err();
    assert!(e.contains("bad magic") && e.contains("zero its first 4 KiB"), "{e}");
    let mut after = vec![0u8; 20];
    f.read_exact_at(&mut after, 0).unwrap();
    assert_eq!(&after[..2], b"\x53\xef", "left alone");
    // An empty file without a size to create it with.
    std::fs::write(dir.path().join("empty"), b"").unwrap();
    let e = Volume::open(&VolumeOptions { bytes: None, ..opts(&dir.path().join("empty"), 0, 4) }, Arc::new(DsStats::default()))
        .unwrap_err();
    assert!(e.contains("ds.volume_bytes"), "{e}");
    // A directory is neither.
    let e = Volume::open(&opts(dir.path(), 2 << 20, 4), Arc::new(DsStats::default())).unwrap_err();
    assert!(e.contains("neither a block device nor a regular file"), "{e}");
}

#[test]
fn versions_survive_a_crash_with_the_data_they_name_and_holes_are_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&dirty_file(dir.path(), 4 << 20), 4 << 20, 8);
    let t = open_with(&o, true);
    t.store.create(&fh(1)).unwrap();
    assert_eq!(t.store.version(&fh(1)).unwrap(), 0, "never set");
    // Data in extents 0 and 2 (extent 1 a hole), written unstable: setting
    // the version makes them durable first.
    let d = pattern(3, 4096);
    t.store.write_at(&fh(1), 100, &d, false).unwrap();
    t.store.write_at(&fh(1), 2 * EXT + 5, &d, false).unwrap();
    t.store.set_version(&fh(1), 42).unwrap();
    assert_eq!(t.store.version(&fh(1)).unwrap(), 42);
    assert_eq!(t.store.data_ranges(&fh(1), 0, 1 << 20).unwrap(), vec![(0, EXT), (2 * EXT, 2 * EXT + 5 + 4096)]);
    assert_eq!(t.store.data_ranges(&fh(1), EXT, EXT).unwrap(), vec![]);
    // Zeroing allocates nothing and keeps the size.
    let free = vol(&t).capacity().1;
    t.store.zero_range(&fh(1), 0, 2 * EXT).unwrap();
    assert_eq!(vol(&t).capacity().1, free);
    assert_eq!(t.store.read_at(&fh(1), 0, 200).unwrap().0, vec![0u8; 200]);
    t.store.write_at(&fh(1), 100, &d, false).unwrap();
    vol(&t).crash_on_drop();
    drop(t);
    let t = open_with(&o, true);
    assert_eq!(t.store.version(&fh(1)).unwrap(), 42, "the version is in the durable entry");
    assert_eq!(t.store.stat(&fh(1)).unwrap().size, 2 * EXT + 5 + 4096);
    assert!(t.store.read_at(&fh(1), 2 * EXT + 5, 4096).unwrap().0 == d, "the data the version named");
    t.store.set_version(&fh(1), 43).unwrap();
    drop(t);
    let t = open_with(&o, true);
    assert_eq!(t.store.version(&fh(1)).unwrap(), 43);
    assert!(t.store.remove(&fh(1)).unwrap());
    assert_eq!(t.store.version(&fh(1)).unwrap_err().kind(), io::ErrorKind::NotFound);
}

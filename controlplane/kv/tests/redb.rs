//! redb-specific behaviour: persistence across reopen and error handling.

use pnfs_kv::{KvError, KvStore, RedbStore};

#[test]
fn committed_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let mut t = store.begin().unwrap();
        t.put(b"k1", b"v1").unwrap();
        t.put(b"k2", b"v2").unwrap();
        t.commit().unwrap();
        let mut aborted = store.begin().unwrap();
        aborted.put(b"k3", b"never").unwrap();
        drop(aborted);
    }
    let store = RedbStore::open(&path).unwrap();
    let mut t = store.begin().unwrap();
    assert_eq!(t.get(b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(t.scan(b"", None, 10).unwrap().len(), 2);
}

#[test]
fn open_errors_are_returned_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no/such/dir/kv.redb");
    assert!(matches!(
        RedbStore::open(&missing_dir),
        Err(KvError::Backend(_))
    ));
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    assert!(matches!(
        RedbStore::open(&garbage),
        Err(KvError::Backend(_))
    ));
}

#[test]
fn second_open_of_same_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let _first = RedbStore::open(&path).unwrap();
    assert!(matches!(RedbStore::open(&path), Err(KvError::Backend(_))));
}

#[test]
fn read_only_txn_runs_while_writer_is_busy() {
    // A reader must neither block on nor be invalidated by concurrent commits.
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("kv.redb")).unwrap();
    let mut t = store.begin().unwrap();
    t.put(b"x", b"0").unwrap();
    t.commit().unwrap();
    let mut reader = store.begin().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..20u32 {
                let mut w = store.begin().unwrap();
                w.put(b"x", &i.to_be_bytes()).unwrap();
                w.commit().unwrap();
            }
        });
        for _ in 0..20 {
            assert_eq!(reader.get(b"x").unwrap(), Some(b"0".to_vec()));
        }
    });
    reader.commit().unwrap();
}

/// Commits made visible and then synced once survive a reopen, and the one
/// sync was the only fsync of the batch.
#[test]
fn group_committed_batch_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let before = store.syncs();
        let mut last = 0;
        for i in 0u32..20 {
            let mut t = store.begin().unwrap();
            t.put(&i.to_be_bytes(), b"v").unwrap();
            last = t.commit_visible().unwrap();
        }
        assert!(!store.check_durable(last).unwrap(), "commit_visible must not sync by itself");
        assert!(store.sync().unwrap() >= last);
        assert_eq!(store.syncs() - before, 1);
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.begin().unwrap().scan(b"", None, 100).unwrap().len(), 20);
}

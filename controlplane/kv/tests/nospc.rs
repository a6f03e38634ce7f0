//! A full disk under the redb backend, on a real size-limited file system
//! (a small tmpfs mounted for the test; it needs root and is skipped, with
//! the reason printed, where mounting fails). redb refuses every call on a
//! handle after one I/O error, so without a reopen a full disk would stop
//! the store for good: commits must answer NoSpace (not a backend error),
//! and once space is freed the store must work again, with every
//! acknowledged transaction intact and nothing of the refused ones.

#[path = "support/tmpfs.rs"]
mod tmpfs;

use std::time::{Duration, Instant};
use tmpfs::{fill, Tmpfs};

use pnfs_kv::key::u64_be;
use pnfs_kv::{KvError, KvStore, RedbStore, REOPEN_INTERVAL};

fn put(store: &RedbStore, key: &[u8], value: &[u8]) -> Result<(), KvError> {
    let mut t = store.begin()?;
    t.put(key, value)?;
    t.commit()
}

fn acked_key(n: u64) -> Vec<u8> {
    [b"acked/".as_slice(), &u64_be(n)].concat()
}

#[test]
fn full_disk_answers_nospace_and_the_store_recovers_when_space_is_freed() {
    let fs = match Tmpfs::mount("8m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED: needs root to mount a small tmpfs ({why})");
            return;
        }
    };
    let db = fs.path().join("kv.redb");
    let store = RedbStore::open(&db).unwrap();
    let value = vec![0x11u8; 1024];
    let mut acked = 0u64;
    for n in 0..200 {
        put(&store, &acked_key(n), &value).unwrap();
        acked += 1;
    }
    // A transaction begun before the failure keeps the old handle (and so
    // the file) open: the store cannot reopen until it is gone.
    let mut old = store.begin().unwrap();
    let ballast = fill(fs.path());

    // Transactions that need new pages now fail with NoSpace, never a
    // backend failure that the MDS would turn into SERVERFAULT.
    let big = vec![0x22u8; 64 * 1024];
    let mut slack = Vec::new();
    let mut refused = false;
    for n in 0..2000u64 {
        let key = [b"late/".as_slice(), &u64_be(n)].concat();
        match put(&store, &key, &big) {
            // Free pages inside the file: acknowledged, so kept.
            Ok(()) => slack.push(key),
            Err(KvError::NoSpace(m)) => {
                println!("commit {n}: NoSpace: {m}");
                refused = true;
                break;
            }
            Err(e) => panic!("commit {n} on a full disk answered {e:?}, not NoSpace"),
        }
    }
    assert!(refused, "the full tmpfs never refused a commit");
    // Until the file is reopened every call answers the cause (or, once a
    // reopen is due but `old` still holds the file, Unavailable).
    for _ in 0..3 {
        match put(&store, b"late/again", &big) {
            Err(KvError::NoSpace(_) | KvError::Unavailable(_)) => {}
            other => panic!("commit after the failure: {other:?}"),
        }
    }
    // Once the pause after the failure is over the file is reopened (and
    // repaired) on the still-full disk: reads of acknowledged data work,
    // and writes are refused up front for a while.
    std::thread::sleep(REOPEN_INTERVAL + REOPEN_INTERVAL / 5);
    assert!(matches!(store.begin().err(), Some(KvError::Unavailable(_))), "reopen while an old transaction holds the file");
    match old.get(&acked_key(1)) {
        Ok(v) => assert_eq!(v.as_deref(), Some(value.as_slice())), // from redb's cache
        Err(e) => assert!(matches!(e, KvError::NoSpace(_)), "old transaction after the failure: {e:?}"),
    }
    old.put(b"late/old", b"x").unwrap();
    // Its commit is refused; nothing of it is written.
    assert!(matches!(old.commit(), Err(KvError::NoSpace(_) | KvError::Conflict)));
    let mut t = store.begin().expect("begin on a full disk after the pause");
    assert_eq!(t.get(&acked_key(0)).unwrap().as_deref(), Some(value.as_slice()), "read on a full disk");
    drop(t);
    assert!(matches!(put(&store, b"late/x", &big), Err(KvError::NoSpace(_))), "write right after the reopen");

    // Space comes back: the store works again without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + REOPEN_INTERVAL * 10 + Duration::from_secs(10);
    loop {
        match put(&store, &acked_key(acked), &value) {
            Ok(()) => break,
            Err(e @ (KvError::NoSpace(_) | KvError::Unavailable(_))) if Instant::now() < deadline => {
                println!("after freeing space: {e}");
                std::thread::sleep(REOPEN_INTERVAL / 4);
            }
            Err(e) => panic!("store did not recover after space was freed: {e:?}"),
        }
    }
    acked += 1;

    let check = |store: &RedbStore| {
        let mut t = store.begin().unwrap();
        for n in 0..acked {
            assert_eq!(t.get(&acked_key(n)).unwrap().as_deref(), Some(value.as_slice()), "acknowledged key {n}");
        }
        // Exactly the late commits that were acknowledged, none refused.
        assert_eq!(t.scan_keys_prefix(b"late/", usize::MAX).unwrap(), slack);
    };
    check(&store);
    drop(store);
    check(&RedbStore::open(&db).unwrap());
}

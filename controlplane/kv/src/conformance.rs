//! Conformance suite every [`KvStore`] backend must pass (see the crate docs
//! for the contract). Each check takes a fresh, empty store and panics on
//! failure, so it can run inside `#[test]`s.
//!
//! Generate one `#[test]` per check for a backend with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```
//! mod mem {
//!     pnfs_kv::conformance_tests!(|| Box::new(pnfs_kv::MemStore::new()));
//! }
//! # fn main() {}
//! ```
//!
//! or call [`run_all`] with a store factory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Barrier;

use crate::key::{self, u64_be};
use crate::{defer_durability, transact, KvError, KvPair, KvStore};

/// One conformance check, run on a fresh empty store.
pub type Check = fn(&dyn KvStore);

/// All checks, by name. Keep in sync with [`conformance_tests!`](crate::conformance_tests)
/// (a generated test verifies this).
pub const CHECKS: &[(&str, Check)] = &[
    ("get_put_delete", get_put_delete),
    ("overwrite", overwrite),
    ("delete_missing_key", delete_missing_key),
    ("empty_value", empty_value),
    ("invalid_keys", invalid_keys),
    ("large_value", large_value),
    ("binary_keys_order", binary_keys_order),
    ("scan_bounds_and_limit", scan_bounds_and_limit),
    ("scan_prefix", scan_prefix),
    ("scan_keys", scan_keys),
    ("read_your_writes_get", read_your_writes_get),
    ("read_your_writes_scan", read_your_writes_scan),
    ("abort_on_drop", abort_on_drop),
    ("snapshot_reads", snapshot_reads),
    ("conflict_read_modify_write", conflict_read_modify_write),
    ("conflict_racing_threads", conflict_racing_threads),
    ("conflict_on_written_key", conflict_on_written_key),
    ("conflict_writes_nothing", conflict_writes_nothing),
    ("disjoint_txns_both_commit", disjoint_txns_both_commit),
    ("transact_app_error_aborts", transact_app_error_aborts),
    ("transact_retries_exhausted", transact_retries_exhausted),
    ("transact_concurrent_counter", transact_concurrent_counter),
    ("many_keys_paged", many_keys_paged),
    ("group_commit_one_sync_per_batch", group_commit_one_sync_per_batch),
    ("group_commit_concurrent_commits_durable", group_commit_concurrent_commits_durable),
    ("defer_durability_scope", defer_durability_scope),
];

/// Runs every check, each on a fresh store from `make_store`.
pub fn run_all(make_store: &dyn Fn() -> Box<dyn KvStore>) {
    for (name, check) in CHECKS {
        log::debug!("conformance: {name}");
        let store = make_store();
        check(&*store);
    }
}

/// Runs every check on a network backend, each on a fresh store `open(name)`
/// makes (dropped, and so emptied, after its check), reports each by name
/// on stderr as `<backend> conformance: <name> ok|FAILED (ms)` and returns
/// the names that failed: one run shows every failure, not the first.
pub fn run_reporting<S>(backend: &str, mut open: impl FnMut(&str) -> S, store: impl Fn(&S) -> &dyn KvStore) -> Vec<&'static str> {
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        let s = open(name);
        let t0 = std::time::Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(store(&s))));
        let ms = t0.elapsed().as_millis();
        match r {
            Ok(()) => eprintln!("{backend} conformance: {name} ok ({ms} ms)"),
            Err(_) => {
                eprintln!("{backend} conformance: {name} FAILED ({ms} ms)");
                failed.push(*name);
            }
        }
    }
    failed
}

/// Generates one `#[test]` per conformance check. The argument is a closure
/// returning a fresh store in any smart pointer (e.g. `Box<dyn KvStore>`);
/// wrap temporary directories into the returned value so they live as long.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@gen $make;
            get_put_delete, overwrite, delete_missing_key, empty_value, invalid_keys,
            large_value, binary_keys_order, scan_bounds_and_limit, scan_prefix, scan_keys,
            read_your_writes_get, read_your_writes_scan, abort_on_drop, snapshot_reads,
            conflict_read_modify_write, conflict_racing_threads, conflict_on_written_key,
            conflict_writes_nothing, disjoint_txns_both_commit, transact_app_error_aborts,
            transact_retries_exhausted, transact_concurrent_counter, many_keys_paged,
            group_commit_one_sync_per_batch, group_commit_concurrent_commits_durable,
            defer_durability_scope);
    };
    (@gen $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let store = ($make)();
                $crate::conformance::$name(&*store);
            }
        )*
        #[test]
        fn conformance_list_complete() {
            let generated: &[&str] = &[$(stringify!($name)),*];
            let all: Vec<&str> = $crate::conformance::CHECKS.iter().map(|c| c.0).collect();
            assert_eq!(generated, all.as_slice());
        }
    };
}

const RETRIES: u32 = 200;

fn put(store: &dyn KvStore, key: &[u8], value: &[u8]) {
    let mut t = store.begin().unwrap();
    t.put(key, value).unwrap();
    t.commit().unwrap();
}

fn get(store: &dyn KvStore, key: &[u8]) -> Option<Vec<u8>> {
    store.begin().unwrap().get(key).unwrap()
}

fn scan_all(store: &dyn KvStore) -> Vec<KvPair> {
    store.begin().unwrap().scan(b"", None, usize::MAX).unwrap()
}

fn keys(pairs: &[KvPair]) -> Vec<Vec<u8>> {
    pairs.iter().map(|p| p.0.clone()).collect()
}

fn counter(store: &dyn KvStore, key: &[u8]) -> u64 {
    get(store, key).map_or(0, |v| key::decode_u64_be(&v).expect("8-byte counter"))
}

fn fill(store: &dyn KvStore, keys: &[&[u8]]) {
    let mut t = store.begin().unwrap();
    for k in keys {
        t.put(k, k).unwrap();
    }
    t.commit().unwrap();
}

/// Basic put, get, delete across transactions.
pub fn get_put_delete(store: &dyn KvStore) {
    assert_eq!(get(store, b"k"), None);
    put(store, b"k", b"v");
    assert_eq!(get(store, b"k"), Some(b"v".to_vec()));
    let mut t = store.begin().unwrap();
    t.delete(b"k").unwrap();
    t.commit().unwrap();
    assert_eq!(get(store, b"k"), None);
    assert!(scan_all(store).is_empty());
}

/// A later put replaces the value.
pub fn overwrite(store: &dyn KvStore) {
    put(store, b"k", b"one");
    put(store, b"k", b"two");
    assert_eq!(get(store, b"k"), Some(b"two".to_vec()));
    assert_eq!(scan_all(store).len(), 1);
}

/// Deleting an absent key succeeds and changes nothing.
pub fn delete_missing_key(store: &dyn KvStore) {
    put(store, b"a", b"1");
    let mut t = store.begin().unwrap();
    t.delete(b"zzz").unwrap();
    t.commit().unwrap();
    assert_eq!(scan_all(store), vec![(b"a".to_vec(), b"1".to_vec())]);
}

/// An empty value is stored and distinct from "absent".
pub fn empty_value(store: &dyn KvStore) {
    put(store, b"e", b"");
    assert_eq!(get(store, b"e"), Some(Vec::new()));
    assert_eq!(scan_all(store), vec![(b"e".to_vec(), Vec::new())]);
}

/// Empty and over-long keys are rejected with `InvalidArgument`.
pub fn invalid_keys(store: &dyn KvStore) {
    let mut t = store.begin().unwrap();
    assert!(matches!(t.put(b"", b"v"), Err(KvError::InvalidArgument(_))));
    assert!(matches!(t.delete(b""), Err(KvError::InvalidArgument(_))));
    assert!(matches!(t.get(b""), Err(KvError::InvalidArgument(_))));
    let long = vec![b'k'; key::MAX_KEY_LEN + 1];
    assert!(matches!(
        t.put(&long, b"v"),
        Err(KvError::InvalidArgument(_))
    ));
    let max = vec![b'k'; key::MAX_KEY_LEN];
    t.put(&max, b"v").unwrap();
    t.commit().unwrap();
    assert_eq!(get(store, &max), Some(b"v".to_vec()));
}

/// 1 MiB values round-trip, also next to small ones and in scans.
pub fn large_value(store: &dyn KvStore) {
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut t = store.begin().unwrap();
    t.put(b"big", &big).unwrap();
    t.put(b"small", b"s").unwrap();
    t.commit().unwrap();
    assert_eq!(get(store, b"big").as_deref(), Some(big.as_slice()));
    let all = scan_all(store);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].1, big);
}

/// Keys with 0x00 / 0xff bytes sort as unsigned byte strings.
pub fn binary_keys_order(store: &dyn KvStore) {
    let ks: [&[u8]; 8] = [
        &[0xff, 0xff],
        &[0x00],
        &[0xff],
        &[0x00, 0x00],
        &[0x01],
        &[0x00, 0xff],
        b"a\x00b",
        b"a",
    ];
    fill(store, &ks);
    let mut expected: Vec<Vec<u8>> = ks.iter().map(|k| k.to_vec()).collect();
    expected.sort();
    let all = scan_all(store);
    assert_eq!(keys(&all), expected);
    for (k, v) in &all {
        assert_eq!(k, v);
    }
    assert_eq!(get(store, &[0x00]), Some(vec![0x00]));
    assert_eq!(get(store, &[0xff, 0xff]), Some(vec![0xff, 0xff]));
    // Prefix 0xff has no finite end; scanning it must still work.
    let mut t = store.begin().unwrap();
    assert_eq!(
        keys(&t.scan_prefix(&[0xff], 10).unwrap()),
        vec![vec![0xff], vec![0xff, 0xff]]
    );
    assert_eq!(keys(&t.scan_prefix(&[0x00], 10).unwrap()).len(), 3);
}

/// Half-open bounds, open end, empty/inverted ranges, and limits.
pub fn scan_bounds_and_limit(store: &dyn KvStore) {
    fill(store, &[b"a", b"b", b"c", b"d", b"e"]);
    let mut t = store.begin().unwrap();
    let k = |v: Vec<KvPair>| keys(&v);
    assert_eq!(
        k(t.scan(b"b", Some(b"d"), 100).unwrap()),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        k(t.scan(b"bb", Some(b"dd"), 100).unwrap()),
        vec![b"c".to_vec(), b"d".to_vec()]
    );
    assert_eq!(k(t.scan(b"c", None, 100).unwrap()).len(), 3);
    assert_eq!(
        k(t.scan(b"", None, 2).unwrap()),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert!(t.scan(b"", None, 0).unwrap().is_empty());
    assert!(t.scan(b"c", Some(b"c"), 10).unwrap().is_empty());
    assert!(t.scan(b"d", Some(b"b"), 10).unwrap().is_empty());
    assert!(t.scan(b"f", None, 10).unwrap().is_empty());
    assert_eq!(
        t.scan(b"a", Some(b"b"), 10).unwrap(),
        vec![(b"a".to_vec(), b"a".to_vec())]
    );
}

/// Prefix scans include exactly the keys with the prefix.
pub fn scan_prefix(store: &dyn KvStore) {
    fill(
        store,
        &[
            b"dir/",
            b"dir/a",
            b"dir/b",
            b"dir0",
            b"di",
            b"dis/x",
            b"dir/\xff\xff",
        ],
    );
    let mut t = store.begin().unwrap();
    assert_eq!(
        keys(&t.scan_prefix(b"dir/", 100).unwrap()),
        vec![
            b"dir/".to_vec(),
            b"dir/a".to_vec(),
            b"dir/b".to_vec(),
            b"dir/\xff\xff".to_vec()
        ]
    );
    assert_eq!(keys(&t.scan_prefix(b"dir/", 2).unwrap()).len(), 2);
    assert_eq!(t.scan_prefix(b"", 100).unwrap().len(), 7);
    assert!(t.scan_prefix(b"nope", 100).unwrap().is_empty());
}

/// Key-only scans return exactly the keys `scan` would, in the same order,
/// bounds and limits, with the transaction's own writes merged in.
pub fn scan_keys(store: &dyn KvStore) {
    fill(store, &[b"a", b"b", b"c", b"d", b"x/1", b"x/2", b"x/3", b"y"]);
    put(store, b"x/big", &vec![7u8; 1 << 20]);
    let mut t = store.begin().unwrap();
    t.put(b"x/0", b"new").unwrap();
    t.delete(b"x/2").unwrap();
    t.put(b"bb", b"").unwrap();
    for (start, end, limit) in [
        (&b""[..], None, usize::MAX),
        (b"b", Some(&b"d"[..]), 100),
        (b"bb", Some(b"dd"), 100),
        (b"", None, 3),
        (b"", None, 0),
        (b"c", Some(b"c"), 10),
        (b"d", Some(b"b"), 10),
        (b"z", None, 10),
    ] {
        let want = keys(&t.scan(start, end, limit).unwrap());
        assert_eq!(t.scan_keys(start, end, limit).unwrap(), want, "{start:?}..{end:?} limit {limit}");
    }
    assert_eq!(
        t.scan_keys_prefix(b"x/", 100).unwrap(),
        vec![b"x/0".to_vec(), b"x/1".to_vec(), b"x/3".to_vec(), b"x/big".to_vec()]
    );
    assert_eq!(t.scan_keys_prefix(b"x/", 2).unwrap().len(), 2);
    assert!(t.scan_keys_prefix(b"nope", 100).unwrap().is_empty());
    drop(t);
    // Others see only what was committed.
    assert_eq!(store.begin().unwrap().scan_keys_prefix(b"x/", 100).unwrap().len(), 4);
}

/// Point reads see the transaction's own puts and deletes.
pub fn read_your_writes_get(store: &dyn KvStore) {
    put(store, b"x", b"old");
    let mut t = store.begin().unwrap();
    assert_eq!(t.get(b"x").unwrap(), Some(b"old".to_vec()));
    t.put(b"x", b"new").unwrap();
    assert_eq!(t.get(b"x").unwrap(), Some(b"new".to_vec()));
    t.delete(b"x").unwrap();
    assert_eq!(t.get(b"x").unwrap(), None);
    t.put(b"y", b"fresh").unwrap();
    assert_eq!(t.get(b"y").unwrap(), Some(b"fresh".to_vec()));
    t.put(b"x", b"again").unwrap();
    t.commit().unwrap();
    assert_eq!(get(store, b"x"), Some(b"again".to_vec()));
    assert_eq!(get(store, b"y"), Some(b"fresh".to_vec()));
}

/// Scans merge own puts, overwrites and deletes with the snapshot.
pub fn read_your_writes_scan(store: &dyn KvStore) {
    fill(store, &[b"p/a", b"p/b", b"p/c", b"p/d", b"q"]);
    let mut t = store.begin().unwrap();
    t.delete(b"p/b").unwrap();
    t.put(b"p/bb", b"new").unwrap();
    t.put(b"p/c", b"changed").unwrap();
    t.put(b"p/e", b"new").unwrap();
    t.delete(b"p/zz").unwrap();
    t.put(b"p/0", b"first").unwrap();
    t.delete(b"p/0").unwrap();
    let want = |ks: &[&str]| ks.iter().map(|k| k.as_bytes().to_vec()).collect::<Vec<_>>();
    let got = t.scan_prefix(b"p/", 100).unwrap();
    assert_eq!(keys(&got), want(&["p/a", "p/bb", "p/c", "p/d", "p/e"]));
    assert_eq!(got[2].1, b"changed".to_vec());
    // Limits count merged results, not snapshot entries.
    assert_eq!(
        keys(&t.scan_prefix(b"p/", 2).unwrap()),
        want(&["p/a", "p/bb"])
    );
    assert_eq!(
        keys(&t.scan(b"p/b", Some(b"p/d"), 100).unwrap()),
        want(&["p/bb", "p/c"])
    );
    t.commit().unwrap();
    let after = store.begin().unwrap().scan_prefix(b"p/", 100).unwrap();
    assert_eq!(after, got);
}

/// Dropping a transaction, even after many writes, writes nothing.
pub fn abort_on_drop(store: &dyn KvStore) {
    put(store, b"keep", b"1");
    let mut t = store.begin().unwrap();
    t.put(b"gone", b"x").unwrap();
    t.put(b"keep", b"2").unwrap();
    t.delete(b"keep").unwrap();
    drop(t);
    assert_eq!(scan_all(store), vec![(b"keep".to_vec(), b"1".to_vec())]);
}

/// Reads stay on the begin snapshot; read-only transactions always commit.
pub fn snapshot_reads(store: &dyn KvStore) {
    fill(store, &[b"a", b"b"]);
    let mut r = store.begin().unwrap();
    assert_eq!(r.get(b"a").unwrap(), Some(b"a".to_vec()));
    let mut w = store.begin().unwrap();
    w.put(b"a", b"changed").unwrap();
    w.delete(b"b").unwrap();
    w.put(b"c", b"c").unwrap();
    w.commit().unwrap();
    assert_eq!(r.get(b"a").unwrap(), Some(b"a".to_vec()));
    assert_eq!(r.get(b"b").unwrap(), Some(b"b".to_vec()));
    assert_eq!(r.get(b"c").unwrap(), None);
    assert_eq!(
        keys(&r.scan(b"", None, 10).unwrap()),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    r.commit().unwrap();
    assert_eq!(get(store, b"a"), Some(b"changed".to_vec()));
}

fn incr(t: &mut dyn crate::KvTxn, key: &[u8]) -> crate::Result<u64> {
    let n = t
        .get(key)?
        .map_or(0, |v| key::decode_u64_be(&v).unwrap_or(0))
        + 1;
    t.put(key, &u64_be(n))?;
    Ok(n)
}

/// Two interleaved read-modify-writes of one key: the second commit conflicts.
pub fn conflict_read_modify_write(store: &dyn KvStore) {
    put(store, b"ctr", &u64_be(10));
    let mut t1 = store.begin().unwrap();
    let mut t2 = store.begin().unwrap();
    assert_eq!(incr(&mut *t1, b"ctr").unwrap(), 11);
    assert_eq!(incr(&mut *t2, b"ctr").unwrap(), 11);
    t1.commit().unwrap();
    assert_eq!(t2.commit(), Err(KvError::Conflict));
    assert_eq!(counter(store, b"ctr"), 11);
    // A retry on a fresh snapshot sees the first increment.
    let mut t3 = store.begin().unwrap();
    assert_eq!(incr(&mut *t3, b"ctr").unwrap(), 12);
    t3.commit().unwrap();
}

/// Two threads read the same key, then both write it: exactly one wins.
pub fn conflict_racing_threads(store: &dyn KvStore) {
    put(store, b"ctr", &u64_be(0));
    let barrier = Barrier::new(2);
    let results: Vec<crate::Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut t = store.begin().unwrap();
                    incr(&mut *t, b"ctr").unwrap();
                    barrier.wait(); // both have read before either commits
                    t.commit()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results.contains(&Err(KvError::Conflict)), "{results:?}");
    assert_eq!(counter(store, b"ctr"), 1);
}

/// A key written (not `get`) by this txn and changed by a concurrent commit
/// conflicts too (e.g. updating an entry found by a scan).
pub fn conflict_on_written_key(store: &dyn KvStore) {
    put(store, b"e/1", b"v0");
    let mut t1 = store.begin().unwrap();
    assert_eq!(t1.scan_prefix(b"e/", 10).unwrap().len(), 1);
    t1.put(b"e/1", b"from-t1").unwrap();
    put(store, b"e/1", b"from-other");
    assert_eq!(t1.commit(), Err(KvError::Conflict));
    assert_eq!(get(store, b"e/1"), Some(b"from-other".to_vec()));
    // Same for deletes.
    let mut t2 = store.begin().unwrap();
    t2.delete(b"e/1").unwrap();
    put(store, b"e/1", b"again");
    assert_eq!(t2.commit(), Err(KvError::Conflict));
    assert_eq!(get(store, b"e/1"), Some(b"again".to_vec()));
}

/// A conflicting commit writes none of its keys.
pub fn conflict_writes_nothing(store: &dyn KvStore) {
    put(store, b"guard", b"0");
    let mut t = store.begin().unwrap();
    t.get(b"guard").unwrap();
    t.put(b"side/1", b"x").unwrap();
    t.put(b"side/2", b"y").unwrap();
    put(store, b"guard", b"1");
    assert_eq!(t.commit(), Err(KvError::Conflict));
    let mut r = store.begin().unwrap();
    assert!(r.scan_prefix(b"side/", 10).unwrap().is_empty());
}

/// Concurrent transactions on disjoint keys both commit.
pub fn disjoint_txns_both_commit(store: &dyn KvStore) {
    fill(store, &[b"a", b"b"]);
    let mut t1 = store.begin().unwrap();
    let mut t2 = store.begin().unwrap();
    incr(&mut *t1, b"a").unwrap();
    incr(&mut *t2, b"b").unwrap();
    t1.put(b"only1", b"1").unwrap();
    t2.put(b"only2", b"2").unwrap();
    t1.commit().unwrap();
    t2.commit().unwrap();
    assert_eq!(scan_all(store).len(), 4);
}

#[derive(Debug, PartialEq)]
enum AppError {
    Kv(KvError),
    NotAllowed,
}

impl From<KvError> for AppError {
    fn from(e: KvError) -> Self {
        AppError::Kv(e)
    }
}

/// An application error from the closure aborts without retry or writes.
pub fn transact_app_error_aborts(store: &dyn KvStore) {
    let calls = AtomicU32::new(0);
    let r: Result<(), AppError> = transact(store, 5, |t| {
        calls.fetch_add(1, Ordering::SeqCst);
        t.put(b"half", b"done")?;
        Err(AppError::NotAllowed)
    });
    assert_eq!(r, Err(AppError::NotAllowed));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(get(store, b"half"), None);
    // And the happy path returns the closure's value.
    let v: Result<u64, AppError> = transact(store, 5, |t| Ok(incr(t, b"n")?));
    assert_eq!(v, Ok(1));
}

/// Endless conflicts end in `RetriesExhausted` after `max_retries + 1` tries.
pub fn transact_retries_exhausted(store: &dyn KvStore) {
    let calls = AtomicU32::new(0);
    let r: Result<(), KvError> = transact(store, 3, |t| {
        calls.fetch_add(1, Ordering::SeqCst);
        incr(t, b"hot")?;
        // A competing commit after our read guarantees a conflict.
        let mut other = store.begin()?;
        incr(&mut *other, b"hot")?;
        other.commit()?;
        Ok(())
    });
    assert_eq!(r, Err(KvError::RetriesExhausted { attempts: 4 }));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        counter(store, b"hot"),
        4,
        "only the competing increments landed"
    );
}

/// N threads x M `transact` increments of one counter all land.
pub fn transact_concurrent_counter(store: &dyn KvStore) {
    const THREADS: u64 = 4;
    const EACH: u64 = 25;
    std::thread::scope(|s| {
        for i in 0..THREADS {
            s.spawn(move || {
                for j in 0..EACH {
                    transact(store, RETRIES, |t| {
                        incr(t, b"counter")?;
                        t.put(&[b"log/".as_slice(), &u64_be(i * EACH + j)].concat(), b"")
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(counter(store, b"counter"), THREADS * EACH);
    let log = store
        .begin()
        .unwrap()
        .scan_prefix(b"log/", usize::MAX)
        .unwrap();
    assert_eq!(log.len() as u64, THREADS * EACH);
}

/// 10k keys written in batches, read back in pages via `key::successor`.
pub fn many_keys_paged(store: &dyn KvStore) {
    const N: u64 = 10_000;
    const PAGE: usize = 333;
    let k = |i: u64| [b"m/".as_slice(), &u64_be(i)].concat();
    for batch in 0..10 {
        let mut t = store.begin().unwrap();
        for i in (batch * N / 10)..((batch + 1) * N / 10) {
            t.put(&k(i), &i.to_le_bytes()).unwrap();
        }
        t.commit().unwrap();
    }
    put(store, b"n", b"after the prefix");
    let mut t = store.begin().unwrap();
    let end = key::prefix_end(b"m/").unwrap();
    let mut start = b"m/".to_vec();
    let mut seen = 0u64;
    let mut pages = 0;
    loop {
        let page = t.scan(&start, Some(&end), PAGE).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= PAGE);
        for (key, value) in &page {
            assert_eq!(key, &k(seen));
            assert_eq!(value.as_slice(), &seen.to_le_bytes());
            seen += 1;
        }
        start = key::successor(&page.last().unwrap().0);
        pages += 1;
    }
    assert_eq!(seen, N);
    assert_eq!(pages, N.div_ceil(PAGE as u64));
    assert_eq!(t.scan_prefix(b"m/", usize::MAX).unwrap().len() as u64, N);
}

/// Group commit: a batch of `commit_visible` calls (one of them conflicting)
/// plus one `sync` costs at most one backend sync, and afterwards every
/// commit of the batch is durable and visible; the conflicting one wrote
/// nothing.
pub fn group_commit_one_sync_per_batch(store: &dyn KvStore) {
    const N: u64 = 16;
    fill(store, &[b"guard"]);
    let syncs_before = store.syncs();
    let mut txns: Vec<_> = (0..N).map(|_| store.begin().unwrap()).collect();
    // The last two race on one key: the second to commit conflicts.
    for (i, t) in txns.iter_mut().enumerate() {
        t.put(&[b"batch/".as_slice(), &u64_be(i as u64)].concat(), b"v").unwrap();
        if i as u64 >= N - 2 {
            incr(&mut **t, b"guard").unwrap();
        }
    }
    let mut seqs = Vec::new();
    let mut results = Vec::new();
    for t in txns {
        match t.commit_visible() {
            Ok(seq) => seqs.push(seq),
            Err(e) => results.push(e),
        }
    }
    assert_eq!(results, vec![KvError::Conflict]);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) || seqs.iter().all(|&s| s == 0), "sequences {seqs:?}");
    // Visible before any sync.
    assert_eq!(store.begin().unwrap().scan_prefix(b"batch/", usize::MAX).unwrap().len() as u64, N - 1);
    let durable = store.sync().unwrap();
    let last = *seqs.last().unwrap();
    assert!(durable >= last, "sync returned {durable}, below commit {last}");
    for &seq in &seqs {
        assert!(store.check_durable(seq).unwrap(), "commit {seq} not durable after sync");
    }
    let syncs = store.syncs() - syncs_before;
    assert!(syncs <= 1, "{N} commits and one sync cost {syncs} backend syncs (group commit batches them into one)");
    // Nothing new to sync: no backend sync at all.
    store.sync().unwrap();
    assert_eq!(store.syncs() - syncs_before, syncs);
    assert_eq!(counter(store, b"guard"), 1);
}

/// Plain `commit` from many threads at once: every commit lands and is
/// durable when it returns, and they share syncs (never more than one each).
pub fn group_commit_concurrent_commits_durable(store: &dyn KvStore) {
    const THREADS: u64 = 8;
    const EACH: u64 = 10;
    let syncs_before = store.syncs();
    let barrier = Barrier::new(THREADS as usize);
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let barrier = &barrier;
            s.spawn(move || {
                for j in 0..EACH {
                    barrier.wait();
                    let mut t = store.begin().unwrap();
                    t.put(&[b"c/".as_slice(), &u64_be(i * EACH + j)].concat(), b"").unwrap();
                    t.commit().unwrap();
                }
            });
        }
    });
    assert_eq!(store.begin().unwrap().scan_prefix(b"c/", usize::MAX).unwrap().len() as u64, THREADS * EACH);
    assert!(store.check_durable(store.visible_seq()).unwrap(), "commits returned but are not durable");
    assert!(store.syncs() - syncs_before <= THREADS * EACH);
}

/// Inside [`defer_durability`], `transact` commits visibly and reports the
/// highest sequence; nested scopes report to the outer one; outside, commits
/// are durable again.
pub fn defer_durability_scope(store: &dyn KvStore) {
    let (((), inner), outer) = defer_durability(|| {
        transact(store, RETRIES, |t| t.put(b"d1", b"1")).unwrap();
        defer_durability(|| transact(store, RETRIES, |t| t.put(b"d2", b"2")).unwrap())
    });
    assert!(outer >= inner);
    assert_eq!(get(store, b"d1").as_deref(), Some(b"1".as_slice()));
    assert_eq!(get(store, b"d2").as_deref(), Some(b"2".as_slice()));
    assert!(outer <= store.visible_seq());
    store.sync().unwrap();
    assert!(store.check_durable(outer).unwrap());
    // Outside a scope: durable on return.
    transact(store, RETRIES, |t| t.put(b"d3", b"3")).unwrap();
    assert!(store.check_durable(store.visible_seq()).unwrap());
}

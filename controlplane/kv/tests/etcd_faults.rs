//! The etcd backend under faults, each test on a 3-member cluster of its own
//! (scripts/etcd-cluster; skipped, saying so, when etcd is not installed):
//! the leader killed with kill -9 during a stream of transactions, and a
//! snapshot compacted away under an open transaction. Needs the `etcd`
//! feature.

#[path = "support/etcd.rs"]
mod etcd;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd::{etcd_installed, unique_prefix, OwnCluster};
use pnfs_kv::key::{decode_u64_be, u64_be};
use pnfs_kv::{transact, EtcdConfig, EtcdStore, KvError, KvStore};

/// One test at a time: both start clusters and the kill test measures time.
static SERIAL: Mutex<()> = Mutex::new(());

fn own_cluster(test: &str) -> Option<(OwnCluster, EtcdStore)> {
    if !etcd_installed() {
        eprintln!("SKIP {test}: the etcd binary is missing (apt-get install etcd-server etcd-client)");
        return None;
    }
    let cluster = OwnCluster::up();
    let mut cfg = EtcdConfig::new(cluster.endpoints.clone());
    cfg.prefix = unique_prefix(test);
    cfg.request_timeout = Duration::from_secs(3);
    let store = EtcdStore::connect(&cfg).expect("connecting to our etcd cluster");
    Some((cluster, store))
}

const THREADS: u64 = 4;
/// Keys each transaction writes (besides its thread's counter).
const PARTS: [&str; 3] = ["a", "b", "c"];

fn part_key(thread: u64, n: u64, part: &str) -> Vec<u8> {
    [b"txn/".as_slice(), &u64_be(thread), &u64_be(n), b"/", part.as_bytes()].concat()
}

/// Transaction `n` of `thread`: reads the thread's counter, writes three
/// keys and the counter, in one commit.
fn one_txn(store: &EtcdStore, thread: u64, n: u64) -> Result<(), KvError> {
    let mut t = store.begin()?;
    let ctr = [b"ctr/".as_slice(), &u64_be(thread)].concat();
    let _ = t.get(&ctr)?;
    for part in PARTS {
        t.put(&part_key(thread, n, part), &u64_be(n))?;
    }
    t.put(&ctr, &u64_be(n))?;
    t.commit()
}

#[derive(Default)]
struct Outcomes {
    acked: BTreeSet<(u64, u64)>,
    failed: BTreeMap<(u64, u64), KvError>,
    /// Times of successful commits (all threads).
    ok_at: Vec<Instant>,
}

/// kill -9 of the etcd leader (and later of the new one) while four threads
/// commit: every acknowledged transaction is there afterwards, every
/// transaction is there whole or not at all, commits resume within
/// seconds after each kill.
#[test]
fn leader_killed_during_transactions() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((cluster, store)) = own_cluster("leader-kill") else { return };
    let stop = AtomicBool::new(false);
    let outcomes = Mutex::new(Outcomes::default());
    let mut kills = Vec::new();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (store, stop, outcomes) = (&store, &stop, &outcomes);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let r = one_txn(store, thread, n);
                    let mut o = outcomes.lock().unwrap();
                    match r {
                        Ok(()) => {
                            o.acked.insert((thread, n));
                            o.ok_at.push(Instant::now());
                        }
                        Err(e) => {
                            o.failed.insert((thread, n), e);
                            drop(o);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            });
        }
        let wait_acks = |at_least: usize, within: Duration| {
            let t0 = Instant::now();
            while outcomes.lock().unwrap().acked.len() < at_least {
                assert!(t0.elapsed() < within, "fewer than {at_least} commits within {within:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_acks(100, Duration::from_secs(30));
        for _round in 0..2 {
            let leader = cluster.leader();
            let acked_before = outcomes.lock().unwrap().acked.len();
            let killed_at = Instant::now();
            cluster.kill(leader);
            kills.push((leader, killed_at));
            // Commits must go on with two members: 50 more within 15 s.
            wait_acks(acked_before + 50, Duration::from_secs(15));
            cluster.start(leader);
            let acked = outcomes.lock().unwrap().acked.len();
            wait_acks(acked + 50, Duration::from_secs(15));
        }
        stop.store(true, Ordering::Relaxed);
    });

    let o = outcomes.into_inner().unwrap();
    let mut report = format!("{} commits acknowledged, {} failed", o.acked.len(), o.failed.len());
    let mut ok_at = o.ok_at.clone();
    ok_at.sort();
    let longest_gap = |from: Instant, to: Instant| {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for &t in ok_at.iter().filter(|&&t| t > from && t <= to) {
            gap = gap.max(t - last);
            last = t;
        }
        gap
    };
    for (leader, killed_at) in &kills {
        // Commits in flight at the kill may still succeed: what counts is
        // the longest stretch without any commit after it.
        let gap = longest_gap(*killed_at, *killed_at + Duration::from_secs(10));
        report += &format!("; member {leader} (leader) killed: longest stretch without a commit {} ms", gap.as_millis());
        assert!(gap < Duration::from_secs(10), "no commit for {gap:?} after the kill");
    }
    let overall = longest_gap(ok_at[0], *ok_at.last().unwrap());
    report += &format!("; longest over the whole run {} ms", overall.as_millis());

    // Read everything back (the cluster is whole again).
    let mut t = store.begin().unwrap();
    let all = t.scan_prefix(b"txn/", usize::MAX).unwrap();
    let mut parts: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for (k, v) in &all {
        let thread = decode_u64_be(&k[4..12]).unwrap();
        let n = decode_u64_be(&k[12..20]).unwrap();
        assert_eq!(decode_u64_be(v), Some(n));
        *parts.entry((thread, n)).or_default() += 1;
    }
    for (txn, count) in &parts {
        assert_eq!(*count, PARTS.len(), "transaction {txn:?} is half visible ({count} of {} keys)", PARTS.len());
    }
    for txn in &o.acked {
        assert!(parts.contains_key(txn), "acknowledged transaction {txn:?} is lost");
    }
    let applied_though_failed: Vec<_> = o.failed.keys().filter(|k| parts.contains_key(k)).collect();
    for thread in 0..THREADS {
        let ctr = t.get(&[b"ctr/".as_slice(), &u64_be(thread)].concat()).unwrap().and_then(|v| decode_u64_be(&v));
        let newest = parts.keys().filter(|k| k.0 == thread).map(|k| k.1).max();
        assert_eq!(ctr, newest, "thread {thread}'s counter is not its newest transaction");
    }
    let errors: BTreeSet<String> = o.failed.values().map(|e| e.to_string().chars().take(90).collect()).collect();
    report += &format!(
        "; {} failed commits were applied nonetheless (answer lost), all whole; errors seen: {errors:?}",
        applied_though_failed.len()
    );
    eprintln!("leader kill: {report}");
    assert!(o.failed.values().all(|e| matches!(e, KvError::Unavailable(_))), "{:?}", o.failed);
}

/// A transaction whose snapshot revision is compacted away conflicts (and
/// writes nothing); `transact` retries it on a fresh snapshot.
#[test]
fn compacted_snapshot_is_a_conflict() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_cluster, store)) = own_cluster("compaction") else { return };
    let put = |k: &[u8], v: &[u8]| {
        let mut t = store.begin().unwrap();
        t.put(k, v).unwrap();
        t.commit().unwrap();
    };
    put(b"a", b"1");
    put(b"b", b"1");
    let mut old = store.begin().unwrap();
    assert_eq!(old.get(b"a").unwrap(), Some(b"1".to_vec()));
    old.put(b"c", b"from-old").unwrap();
    put(b"b", b"2");
    store.compact_now().unwrap();
    assert_eq!(old.get(b"b"), Err(KvError::Conflict));
    assert_eq!(old.scan(b"", None, 10), Err(KvError::Conflict));
    assert_eq!(old.commit(), Err(KvError::Conflict));
    assert_eq!(store.begin().unwrap().get(b"c").unwrap(), None);

    let mut attempts = 0;
    transact(&store, 5, |t| {
        attempts += 1;
        let b = t.get(b"b")?;
        if attempts == 1 {
            put(b"b", b"3");
            store.compact_now()?;
        }
        t.put(b"c", &b.unwrap_or_default())
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(store.begin().unwrap().get(b"c").unwrap(), Some(b"3".to_vec()));
}

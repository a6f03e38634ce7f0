//! The etcd backend: the conformance suite, leases, prefixes and errors,
//! against `PNFS_KV_ETCD_ENDPOINTS` or a 3-member cluster of our own
//! (support/etcd.rs). Needs the `etcd` feature.

#[path = "support/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use etcd::{shared_endpoints, TestStore};
use pnfs_kv::{EtcdConfig, EtcdStore, KvError, KvStore};

/// Every conformance check, each on a fresh prefix; all are run and every
/// failure is reported by name.
#[test]
fn conformance_suite() {
    let Some(eps) = shared_endpoints() else { return };
    let failed = pnfs_kv::conformance::run_reporting("etcd", |name| TestStore::new(&eps, name), |s| &s.0);
    assert!(failed.is_empty(), "conformance checks failed on etcd: {failed:?}");
}

/// Round trips per transaction shape (what bounds an MDS on etcd): the
/// first `get` fixes the snapshot itself, so a one-get read-only
/// transaction is one request; later gets are one each; a commit is one,
/// plus one for the snapshot revisions of keys written without being read.
#[test]
fn round_trips_per_transaction() {
    let Some(eps) = shared_endpoints() else { return };
    let s = TestStore::new(&eps, "rtt");
    let mut t = s.0.begin().unwrap();
    t.put(b"dir", b"0").unwrap();
    t.commit().unwrap();
    let cost = |f: &dyn Fn()| {
        let before = s.0.requests();
        f();
        s.0.requests() - before
    };
    // GETATTR: one get.
    assert_eq!(cost(&|| assert_eq!(s.0.begin().unwrap().get(b"dir").unwrap(), Some(b"0".to_vec()))), 1);
    // LOOKUP: three gets, read-only.
    assert_eq!(
        cost(&|| {
            let mut t = s.0.begin().unwrap();
            for k in [&b"dir"[..], b"entry", b"ino"] {
                t.get(k).unwrap();
            }
            t.commit().unwrap();
        }),
        3
    );
    // A create: reads the directory and the absent entry, writes both and
    // one key it did not read: 2 gets + 1 snapshot-revision read + commit.
    assert_eq!(
        cost(&|| {
            let mut t = s.0.begin().unwrap();
            t.get(b"dir").unwrap();
            t.get(b"entry").unwrap();
            t.put(b"dir", b"1").unwrap();
            t.put(b"entry", b"ino").unwrap();
            t.put(b"ino", b"inode").unwrap();
            t.commit().unwrap();
        }),
        4
    );
    // Blind writes only: the revision, the snapshot revisions, the commit.
    assert_eq!(
        cost(&|| {
            let mut t = s.0.begin().unwrap();
            t.put(b"state", b"1").unwrap();
            t.put(b"slot", b"1").unwrap();
            t.commit().unwrap();
        }),
        3
    );
    // `begin` alone sends nothing.
    assert_eq!(cost(&|| drop(s.0.begin().unwrap())), 0);
}

/// Two stores on different prefixes of one etcd see nothing of each other.
#[test]
fn prefixes_isolate_stores() {
    let Some(eps) = shared_endpoints() else { return };
    let a = TestStore::new(&eps, "iso-a");
    let b = TestStore::new(&eps, "iso-b");
    let mut t = a.0.begin().unwrap();
    t.put(b"k", b"a").unwrap();
    t.commit().unwrap();
    assert_eq!(b.0.begin().unwrap().get(b"k").unwrap(), None);
    assert!(b.0.begin().unwrap().scan(b"", None, 10).unwrap().is_empty());
    assert_eq!(a.0.begin().unwrap().scan(b"", None, 10).unwrap().len(), 1);
}

/// A key attached to a lease stays while the lease is kept alive and
/// vanishes once it expires; revoking removes it at once.
#[test]
fn leased_key_vanishes_when_the_lease_expires() {
    let Some(eps) = shared_endpoints() else { return };
    let s = TestStore::new(&eps, "lease");
    let id = s.0.lease_grant(Duration::from_secs(2)).unwrap();
    s.0.put_with_lease(b"node/1", b"alive", id).unwrap();
    // Kept alive past its TTL, the key stays.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(800));
        assert!(s.0.lease_keep_alive(id).unwrap().is_some());
    }
    assert_eq!(s.0.begin().unwrap().get(b"node/1").unwrap(), Some(b"alive".to_vec()));
    // No keepalive: gone within the TTL (etcd may round small TTLs up, and
    // a loaded machine is slow: allow 15 s).
    let t0 = Instant::now();
    while s.0.begin().unwrap().get(b"node/1").unwrap().is_some() {
        assert!(t0.elapsed() < Duration::from_secs(15), "leased key still there after 15 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(t0.elapsed() >= Duration::from_millis(500), "key vanished before its TTL");
    assert_eq!(s.0.lease_keep_alive(id).unwrap(), None, "an expired lease cannot be renewed");

    let id = s.0.lease_grant(Duration::from_secs(60)).unwrap();
    s.0.put_with_lease(b"node/2", b"alive", id).unwrap();
    s.0.lease_revoke(id).unwrap();
    assert_eq!(s.0.begin().unwrap().get(b"node/2").unwrap(), None);
    s.0.lease_revoke(id).unwrap();
}

/// Leased-key calls of cluster membership: list with leases, put-if-absent
/// (the second claimant learns the holder's lease), delete only by the
/// holder's lease, and claims vanishing with a revoked lease.
#[test]
fn leased_claims_are_exclusive_and_listed_with_their_lease() {
    let Some(eps) = shared_endpoints() else { return };
    let s = TestStore::new(&eps, "claims");
    let (a, b) = (s.0.lease_grant(Duration::from_secs(30)).unwrap(), s.0.lease_grant(Duration::from_secs(30)).unwrap());
    assert_eq!(s.0.put_if_absent_with_lease(b"P1", b"a", a).unwrap(), None);
    assert_eq!(s.0.put_if_absent_with_lease(b"P1", b"b", b).unwrap(), Some(a), "taken: the holder's lease comes back");
    assert_eq!(s.0.put_if_absent_with_lease(b"P2", b"b", b).unwrap(), None);
    s.0.put_with_lease(b"N1", b"node", a).unwrap();
    let listed = s.0.list_leased(b"P", 10).unwrap();
    assert_eq!(listed, vec![(b"P1".to_vec(), b"a".to_vec(), a), (b"P2".to_vec(), b"b".to_vec(), b)]);
    assert!(!s.0.delete_if_lease(b"P1", b).unwrap(), "not b's to release");
    assert!(s.0.delete_if_lease(b"P2", b).unwrap());
    s.0.lease_revoke(a).unwrap();
    assert!(s.0.list_leased(b"", 10).unwrap().is_empty(), "a's keys went with its lease");
    s.0.lease_revoke(b).unwrap();
}

/// A value over etcd's request limit is refused with InvalidArgument naming
/// the flag; the store goes on working.
#[test]
fn oversized_transaction_is_invalid_argument() {
    let Some(eps) = shared_endpoints() else { return };
    if std::env::var(etcd::ENDPOINTS_ENV).is_ok() {
        eprintln!("SKIP oversized_transaction_is_invalid_argument: the request limit of a given cluster is unknown");
        return;
    }
    let s = TestStore::new(&eps, "big");
    // Our clusters allow 8 MiB requests.
    let mut t = s.0.begin().unwrap();
    t.put(b"huge", &vec![1u8; 9 << 20]).unwrap();
    match t.commit() {
        Err(KvError::InvalidArgument(m)) => assert!(m.contains("max-request-bytes"), "{m}"),
        other => panic!("9 MiB transaction: {other:?}"),
    }
    let mut t = s.0.begin().unwrap();
    t.put(b"a", &vec![2u8; 3 << 20]).unwrap();
    t.put(b"b", &vec![3u8; 3 << 20]).unwrap();
    t.commit().unwrap();
    assert_eq!(s.0.begin().unwrap().scan(b"", None, 10).unwrap().len(), 2);
}

/// No etcd at the address: connect answers Unavailable within its
/// timeouts, no panic.
#[test]
fn unreachable_cluster_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")]);
    cfg.request_timeout = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_millis(500);
    let t0 = Instant::now();
    match EtcdStore::connect(&cfg) {
        Err(KvError::Unavailable(m)) => assert!(m.contains(&port.to_string()), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
}

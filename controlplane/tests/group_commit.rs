//! Durable creates from many connections at once share fsyncs (group
//! commit) and every acknowledged one is in the namespace.

use pnfs_client::Client;
use pnfs_client::pnfs_protocol::wire::OPEN4_SHARE_ACCESS_BOTH;
use pnfs_kv::{CommitSeq, KvStore, KvTxn, RedbStore};
use std::sync::{Arc, Barrier};
use std::time::Duration;

mod common;

/// The redb store with a slow disk: each sync takes 5 ms longer, so
/// commits made meanwhile must share the next one. (On a fast disk and a
/// loaded 2-core machine the committer often caught every commit alone,
/// and whether fsyncs were shared was down to timing.)
struct SlowSync(RedbStore);

impl KvStore for SlowSync {
    fn begin(&self) -> pnfs_kv::Result<Box<dyn KvTxn + '_>> {
        self.0.begin()
    }
    fn visible_seq(&self) -> CommitSeq {
        self.0.visible_seq()
    }
    fn durable_seq(&self) -> CommitSeq {
        self.0.durable_seq()
    }
    fn check_durable(&self, seq: CommitSeq) -> pnfs_kv::Result<bool> {
        self.0.check_durable(seq)
    }
    fn sync(&self) -> pnfs_kv::Result<CommitSeq> {
        std::thread::sleep(Duration::from_millis(5));
        self.0.sync()
    }
    fn syncs(&self) -> u64 {
        self.0.syncs()
    }
}

#[test]
fn concurrent_creates_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::mds_config(dir.path(), "");
    std::fs::create_dir_all(&cfg.metadata_dir).unwrap();
    let store: Arc<dyn KvStore> = Arc::new(SlowSync(RedbStore::open(cfg.metadata_dir.join("metadata.redb")).unwrap()));
    let data = Arc::new(pnfs_mds::datastore::LocalFileStore::open(&cfg.data_dir, 64).unwrap());
    let mds = pnfs_mds::Mds::with_stores(cfg, store.clone(), data).unwrap();
    let (addr, _) = pnfs_mds::server::spawn_mds_on_loopback(mds).unwrap();
    const CLIENTS: usize = 24;
    const EACH: usize = 10;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let (syncs_before, commits_before) = (store.syncs(), store.visible_seq());
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, 1).unwrap();
                let export = c.lookup_path("/export").unwrap();
                barrier.wait();
                for j in 0..EACH {
                    let (fh, sid) = c.open(&export, &format!("c{i}-{j}"), true, OPEN4_SHARE_ACCESS_BOTH)?;
                    c.close(&fh, &sid)?;
                }
                Ok::<(), pnfs_client::Error>(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect("create");
    }
    let commits = store.visible_seq() - commits_before;
    let syncs = store.syncs() - syncs_before;
    assert!(commits >= (CLIENTS * EACH) as u64, "{commits} commits for {} creates", CLIENTS * EACH);
    assert!(store.check_durable(store.visible_seq()).unwrap(), "acknowledged creates are not durable");
    assert!(syncs < commits, "{commits} commits cost {syncs} fsyncs: nothing was group-committed");
    let mut c = Client::connect(addr, 1).unwrap();
    let export = c.lookup_path("/export").unwrap();
    for i in 0..CLIENTS {
        for j in 0..EACH {
            c.lookup(&export, &format!("c{i}-{j}")).expect("an acknowledged create is in the namespace");
        }
    }
    eprintln!("{} creates: {commits} commits, {syncs} fsyncs", CLIENTS * EACH);
}

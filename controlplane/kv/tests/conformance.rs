//! Runs the shared conformance suite against every built-in backend.

use pnfs_kv::{KvStore, KvTxn, MemStore, RedbStore};

mod mem {
    use super::*;
    pnfs_kv::conformance_tests!(|| Box::new(MemStore::new()) as Box<dyn KvStore>);

    #[test]
    fn run_all_entry_point() {
        pnfs_kv::conformance::run_all(&|| Box::new(MemStore::new()));
    }
}

/// A redb store in its own temporary directory, removed on drop.
struct TempRedb {
    store: RedbStore,
    _dir: tempfile::TempDir,
}

impl KvStore for TempRedb {
    fn begin(&self) -> pnfs_kv::Result<Box<dyn KvTxn + '_>> {
        self.store.begin()
    }
    fn visible_seq(&self) -> pnfs_kv::CommitSeq {
        self.store.visible_seq()
    }
    fn durable_seq(&self) -> pnfs_kv::CommitSeq {
        self.store.durable_seq()
    }
    fn check_durable(&self, seq: pnfs_kv::CommitSeq) -> pnfs_kv::Result<bool> {
        self.store.check_durable(seq)
    }
    fn sync(&self) -> pnfs_kv::Result<pnfs_kv::CommitSeq> {
        self.store.sync()
    }
    fn syncs(&self) -> u64 {
        self.store.syncs()
    }
}

fn temp_redb() -> Box<dyn KvStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("kv.redb")).unwrap();
    Box::new(TempRedb { store, _dir: dir })
}

mod redb {
    use super::*;
    pnfs_kv::conformance_tests!(temp_redb);
}

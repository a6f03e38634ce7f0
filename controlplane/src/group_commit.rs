//! Replies held until the metadata they depend on is durable.
//!
//! COMPOUNDs that run on their connection's task commit with durability
//! deferred (`pnfs_kv::defer_durability`): the change is visible at once, the
//! fsync is not done. Their replies wait here; one committer thread syncs
//! the store (one fsync for every commit made visible meanwhile, all
//! connections together) and then queues each reply whose commits it
//! covered. Per request that is no thread hand-off; per batch, one wake-up
//! of the committer and one of each connection's writer.

use crate::server::ReplyQueue;
use pnfs_kv::{CommitSeq, KvStore};
use pnfs_protocol::rpc::{self, AcceptStat};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// How long the committer sleeps before trying again after a failed sync
/// (the store may be reopening).
const RETRY_AFTER_FAILED_SYNC: Duration = Duration::from_millis(10);

/// One reply waiting for durability.
struct Held {
    /// Durable once the store reaches this commit.
    seq: CommitSeq,
    xid: u32,
    reply: Vec<u8>,
    queue: ReplyQueue,
    /// The connection's request permit, released when the reply goes.
    _permit: OwnedSemaphorePermit,
}

pub struct GroupCommitter {
    store: Arc<dyn KvStore>,
    held: Mutex<Vec<Held>>,
    wake: Condvar,
}

impl GroupCommitter {
    /// Starts the committer thread; it ends within a second of the last
    /// `Arc` going away.
    pub fn start(store: Arc<dyn KvStore>) -> std::io::Result<Arc<GroupCommitter>> {
        let me = Arc::new(GroupCommitter { store, held: Mutex::new(Vec::new()), wake: Condvar::new() });
        let weak = Arc::downgrade(&me);
        std::thread::Builder::new().name("group-commit".into()).spawn(move || run(weak))?;
        Ok(me)
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// The commit a reply produced now depends on: every commit visible now
    /// (its own, and others' it may have read). None when that is durable
    /// already, so the reply can go at once.
    pub fn pending(&self) -> Option<CommitSeq> {
        let seq = self.store.visible_seq();
        match self.store.check_durable(seq) {
            Ok(true) => None,
            _ => Some(seq),
        }
    }

    /// Queues `reply` on `queue` once commit `seq` is durable (an RPC
    /// SYSTEM_ERR instead if it was lost).
    pub fn hold(&self, seq: CommitSeq, reply: Vec<u8>, queue: ReplyQueue, permit: OwnedSemaphorePermit) {
        let xid = reply.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        self.held.lock().unwrap_or_else(|p| p.into_inner()).push(Held { seq, xid, reply, queue, _permit: permit });
        self.wake.notify_one();
    }

    /// One round: sync, then send what it made durable. False when nothing
    /// was held for a second.
    fn round(&self) -> bool {
        {
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.is_empty() {
                let (held, _) = self.wake.wait_timeout(held, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner());
                if held.is_empty() {
                    return false;
                }
            }
        }
        let synced = self.store.sync();
        if let Err(e) = &synced {
            log::error!("metadata sync failed: {e}; replies waiting for it are held or answered SYSTEM_ERR");
        }
        let batch = std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()));
        let mut keep = Vec::new();
        for h in batch {
            match self.store.check_durable(h.seq) {
                Ok(true) => {
                    let Held { reply, queue, _permit, .. } = h;
                    drop(_permit);
                    let _ = queue.send(reply);
                }
                // Came after this sync began: the next one.
                Ok(false) => keep.push(h),
                Err(e) => {
                    log::error!("a reply's metadata change was lost ({e}); answered SYSTEM_ERR");
                    let _ = h.queue.send(rpc::accepted_reply(h.xid, AcceptStat::SystemErr));
                }
            }
        }
        if !keep.is_empty() {
            self.held.lock().unwrap_or_else(|p| p.into_inner()).extend(keep);
        }
        if synced.is_err() {
            std::thread::sleep(RETRY_AFTER_FAILED_SYNC);
        }
        true
    }
}

fn run(me: Weak<GroupCommitter>) {
    loop {
        let Some(c) = me.upgrade() else { return };
        c.round();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_kv::{transact, RedbStore};

    /// Replies held for deferred commits go out only after a sync made
    /// them durable, many of them on one fsync.
    #[test]
    fn held_replies_wait_for_one_shared_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> = Arc::new(RedbStore::open(dir.path().join("kv.redb")).unwrap());
        let gc = GroupCommitter::start(store.clone()).unwrap();
        let permits = Arc::new(tokio::sync::Semaphore::new(64));
        let (queue, mut rx) = ReplyQueue::new();
        assert_eq!(gc.pending(), None);
        let syncs_before = store.syncs();
        // Hold the committer back while 20 requests commit.
        let guard = gc.held.lock().unwrap();
        let mut seqs = Vec::new();
        for i in 0u32..20 {
            let ((), _) = pnfs_kv::defer_durability(|| transact(&*store, 4, |t| t.put(&i.to_be_bytes(), b"v")).unwrap());
            let seq = gc.pending().expect("a deferred commit is not durable yet");
            seqs.push(seq);
        }
        drop(guard);
        for (i, seq) in seqs.into_iter().enumerate() {
            let mut reply = (i as u32).to_be_bytes().to_vec();
            reply.extend_from_slice(b"reply");
            gc.hold(seq, reply, queue.clone(), permits.clone().try_acquire_owned().unwrap());
        }
        for _ in 0..20 {
            let r = rx.blocking_recv().unwrap();
            assert_eq!(&r[4..], b"reply");
        }
        assert_eq!(gc.pending(), None, "everything sent is durable");
        let syncs = store.syncs() - syncs_before;
        assert!((1..=2).contains(&syncs), "20 held replies cost {syncs} fsyncs");
        // Permits come back with the replies.
        assert_eq!(permits.available_permits(), 64);
    }
}

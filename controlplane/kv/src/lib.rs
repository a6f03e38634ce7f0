//! Metadata store interface of the pNFS MDS: one ordered, transactional
//! key-value trait ([`KvStore`] / [`KvTxn`]) plus backends.
//!
//! Keys and values are byte strings, ordered lexicographically (unsigned
//! bytes). Everything the MDS persists goes through this interface so that the
//! embedded default ([`RedbStore`]) can be swapped for a shared store:
//! `EtcdStore` (cargo feature `etcd`) puts it on an etcd cluster,
//! `TikvStore` (cargo feature `tikv`) on a TiKV cluster.
//!
//! # Transaction contract (every backend, checked by [`conformance`])
//!
//! The contract is *optimistic* because that is what remote stores offer
//! (TiKV optimistic transactions, etcd `Txn` with `mod_revision` compares):
//!
//! * [`KvStore::begin`] never blocks on other open transactions.
//! * All reads of a transaction see one consistent snapshot, overlaid with
//!   the transaction's own uncommitted writes (read-your-writes, also for
//!   scans). The snapshot is taken no earlier than `begin` and no later than
//!   the transaction's first operation (`get`, `put`, `delete` or a scan):
//!   it holds every commit that returned before `begin`. The embedded
//!   backends take it at `begin`; a remote backend may take it with the
//!   first operation to spare a round trip (etcd: the first `get` is the
//!   read that fixes it). Nothing runs between `begin` and the first
//!   operation in [`transact`], so no caller there can tell the difference.
//! * Writes are buffered; nothing is visible to others before `commit`.
//!   Dropping a transaction (or an error in [`transact`]) discards them.
//! * `commit` is atomic and durable when it returns `Ok`.
//! * `commit` fails with [`KvError::Conflict`], writing nothing, if a key that
//!   the transaction read with [`KvTxn::get`] or wrote with `put`/`delete` was
//!   changed by another transaction that committed after this snapshot.
//!   Whether a rewrite back to the same value counts as a change is up to the
//!   backend (versions vs. value compare); transactions on disjoint key sets
//!   must not conflict.
//! * Scans are **not** conflict-checked (phantoms are possible). To protect a
//!   range, also `get` a guard key that every writer of the range writes
//!   (e.g. the parent directory's inode record).
//! * A transaction that wrote nothing always commits successfully.
//! * A full disk is [`KvError::NoSpace`], not a permanent failure: once space
//!   is freed, new transactions succeed again without a restart.
//! * Keys must be non-empty and at most [`key::MAX_KEY_LEN`] bytes (etcd and
//!   TiKV reject empty keys). Values may be empty; backends must accept values
//!   of at least 1 MiB.
//!
//! Use [`transact`] to run a closure in a transaction with conflict retries.
//!
//! # Group commit (extension of the contract)
//!
//! Durability is what costs (one fsync per commit on a local disk), so a
//! backend may share it among concurrent commits:
//!
//! * Every commit that writes gets a [`CommitSeq`], increasing in commit
//!   order. [`KvStore::durable_seq`] is the highest one known durable;
//!   [`KvStore::check_durable`] says whether one commit is durable yet (or
//!   was lost by a failed sync). Sequence 0 is always durable.
//! * [`KvTxn::commit_visible`] applies the writes atomically and makes them
//!   visible to later snapshots, but returns before they are durable; the
//!   caller must not report the change to anyone until it is (a server
//!   holds the reply). Conflict and error rules are those of `commit`.
//! * [`KvStore::sync`] makes every commit visible when it is called durable
//!   with one sync of the backend; callers that arrive while a sync runs
//!   wait for it and share the next one (leader/follower), so N concurrent
//!   callers cost about two syncs, not N. [`KvStore::syncs`] counts them.
//! * `commit` stays durable-on-return; backends with group commit implement
//!   it as `commit_visible` + `sync`, so concurrent `commit` callers share
//!   syncs too.
//! * If a sync fails, commits made visible since the last durable one may be
//!   lost (the redb backend reopens its file at the last durable commit):
//!   whoever held replies for them must not send them.
//!
//! Backends whose `commit` is durable by itself (the in-memory store, remote
//! stores that replicate before answering) keep the defaults: sequence 0
//! everywhere, `sync` a no-op.
//!
//! [`defer_durability`] lets a server run request code unchanged while every
//! [`transact`] inside commits with `commit_visible`.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd_store;
pub mod key;
mod mem;
mod merge;
mod redb_store;
#[cfg(feature = "tikv")]
mod tikv_store;

#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdConfig, EtcdStore, LeaseId, LeasedPair};
#[cfg(feature = "tikv")]
pub use tikv_store::{TikvConfig, TikvStore};
pub use key::prefix_end;
pub use mem::MemStore;
pub use redb_store::{RedbStore, REOPEN_INTERVAL};

/// Position of a commit in a store's commit order (see "Group commit" in the
/// crate docs). 0: before every commit, always durable.
pub type CommitSeq = u64;

/// A key-value pair as returned by scans.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// Result alias with [`KvError`] as the default error.
pub type Result<T, E = KvError> = std::result::Result<T, E>;

/// Errors of the store layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    /// Another transaction committed a conflicting change; nothing was
    /// written. Retrying the whole transaction may succeed.
    Conflict,
    /// [`transact`] gave up after this many attempts, all of which conflicted.
    RetriesExhausted { attempts: u32 },
    /// The caller passed something the store cannot accept (e.g. empty key).
    InvalidArgument(String),
    /// The store's disk (or quota) is full; nothing was written. Retrying
    /// after space is freed succeeds (the redb backend reopens its file).
    NoSpace(String),
    /// The store is reopening after an I/O error and cannot serve this call
    /// yet; nothing was written. Retrying shortly may succeed. (A remote
    /// store that cannot be reached says this too; there a failed `commit`
    /// may have been applied, whole, with its answer lost: see the etcd
    /// backend's docs.)
    Unavailable(String),
    /// I/O, corruption or other backend failure; the message is for humans.
    Backend(String),
}

impl KvError {
    /// True for [`KvError::Conflict`] (the only retryable error).
    pub fn is_conflict(&self) -> bool {
        matches!(self, KvError::Conflict)
    }

    pub(crate) fn backend(e: impl fmt::Display) -> Self {
        KvError::Backend(e.to_string())
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Conflict => write!(f, "transaction conflict"),
            KvError::RetriesExhausted { attempts } => {
                write!(f, "transaction still conflicting after {attempts} attempts")
            }
            KvError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            KvError::NoSpace(m) => write!(f, "no space left for the store: {m}"),
            KvError::Unavailable(m) => write!(f, "store unavailable, retry: {m}"),
            KvError::Backend(m) => write!(f, "storage backend error: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

/// A transactional, ordered key-value store. Shared by all MDS threads.
pub trait KvStore: Send + Sync {
    /// Starts a transaction on a fresh snapshot (taken here or by its first
    /// operation: see the crate docs). Must not block on other open
    /// transactions.
    fn begin(&self) -> Result<Box<dyn KvTxn + '_>>;

    /// The highest commit visible to new transactions (0 where commits are
    /// durable when they return).
    fn visible_seq(&self) -> CommitSeq {
        0
    }

    /// The highest commit known durable; everything at or below it survives
    /// a crash.
    fn durable_seq(&self) -> CommitSeq {
        0
    }

    /// Ok(true) once commit `seq` is durable, Ok(false) while it is not yet,
    /// an error when it never will be (a failed sync lost it).
    fn check_durable(&self, seq: CommitSeq) -> Result<bool> {
        Ok(self.durable_seq() >= seq)
    }

    /// Makes every commit visible at the time of the call durable, sharing
    /// one backend sync with concurrent callers, and returns the sequence now
    /// durable (>= [`visible_seq`](KvStore::visible_seq) at the call).
    fn sync(&self) -> Result<CommitSeq> {
        Ok(self.durable_seq())
    }

    /// Backend syncs (fsyncs) done so far by group commit; 0 for backends
    /// without it. For tests and metrics.
    fn syncs(&self) -> u64 {
        0
    }
}

/// One optimistic transaction; see the crate docs for the exact contract.
/// Dropping it without `commit` aborts it.
pub trait KvTxn: Send {
    /// Reads `key` (own writes first, then the snapshot). Keys read here are
    /// conflict-checked at commit.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Buffers a write of `key` = `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Buffers a delete of `key` (deleting a missing key is fine).
    fn delete(&mut self, key: &[u8]) -> Result<()>;

    /// Returns up to `limit` pairs with `start <= key < end` in ascending key
    /// order (`end == None`: to the end of the keyspace), merging own writes.
    /// An empty range or `limit == 0` returns nothing. To page, continue from
    /// [`key::successor`] of the last key returned.
    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>>;

    /// [`scan`](KvTxn::scan) of all keys starting with `prefix`.
    fn scan_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<KvPair>> {
        let end = key::prefix_end(prefix);
        self.scan(prefix, end.as_deref(), limit)
    }

    /// [`scan`](KvTxn::scan) returning keys only: backends do not copy or
    /// transfer the values (listing names whose values may be large).
    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>>;

    /// [`scan_keys`](KvTxn::scan_keys) of all keys starting with `prefix`.
    fn scan_keys_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        let end = key::prefix_end(prefix);
        self.scan_keys(prefix, end.as_deref(), limit)
    }

    /// Atomically and durably applies the buffered writes, or fails with
    /// [`KvError::Conflict`] having written nothing.
    fn commit(self: Box<Self>) -> Result<()>;

    /// Applies the buffered writes atomically and makes them visible, like
    /// `commit`, but may return before they are durable: they are once
    /// [`KvStore::durable_seq`] reaches the returned sequence (or after
    /// [`KvStore::sync`]). A transaction that wrote nothing returns 0.
    fn commit_visible(self: Box<Self>) -> Result<CommitSeq> {
        self.commit().map(|()| 0)
    }
}

thread_local! {
    /// Some(highest seq committed so far) while [`defer_durability`] runs on
    /// this thread.
    static DEFERRED: Cell<Option<CommitSeq>> = const { Cell::new(None) };
}

/// Runs `f` with durability deferred on this thread: every [`transact`]
/// inside commits with [`KvTxn::commit_visible`] instead of waiting for a
/// sync. Returns `f`'s value and the highest sequence it committed (0 if
/// none). The caller must hold back whatever `f` produced (a reply) until the
/// store's [`durable_seq`](KvStore::durable_seq) reaches the store's
/// [`visible_seq`](KvStore::visible_seq) as it was when `f` returned (which
/// also covers changes of others that `f` read before they were durable).
pub fn defer_durability<T>(f: impl FnOnce() -> T) -> (T, CommitSeq) {
    struct Restore(Option<CommitSeq>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let inner = DEFERRED.with(|d| d.get()).unwrap_or(0);
            // An enclosing scope learns the inner scope's commits too.
            DEFERRED.with(|d| d.set(self.0.map(|outer| outer.max(inner))));
        }
    }
    let outer = DEFERRED.with(|d| d.replace(Some(0)));
    let restore = Restore(outer);
    let value = f();
    let seq = DEFERRED.with(|d| d.get()).unwrap_or(0);
    drop(restore);
    (value, seq)
}

/// Commits `txn` durably, or only visibly inside [`defer_durability`].
fn commit_txn(txn: Box<dyn KvTxn + '_>) -> Result<()> {
    match DEFERRED.with(|d| d.get()) {
        None => txn.commit(),
        Some(highest) => {
            let seq = txn.commit_visible()?;
            DEFERRED.with(|d| d.set(Some(highest.max(seq))));
            Ok(())
        }
    }
}

/// Runs `f` in a transaction and commits it, retrying the whole closure on
/// [`KvError::Conflict`] up to `max_retries` times (so at most
/// `max_retries + 1` attempts) with a short jittered exponential backoff.
///
/// `f` may return its own error type; an `Err` aborts the transaction (nothing
/// written) and is returned unchanged, except when a store operation inside
/// `f` had reported a conflict, which counts as a conflict. Store errors are
/// converted with `E::from`; when retries run out the error is
/// `E::from(KvError::RetriesExhausted { .. })`. `f` must be safe to re-run:
/// keep side effects outside the store out of it.
pub fn transact<T, E, F>(store: &dyn KvStore, max_retries: u32, mut f: F) -> Result<T, E>
where
    E: From<KvError>,
    F: FnMut(&mut dyn KvTxn) -> Result<T, E>,
{
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let mut txn = ConflictTracker {
            inner: store.begin()?,
            conflicted: false,
        };
        match f(&mut txn) {
            Ok(value) => match commit_txn(txn.inner) {
                Ok(()) => return Ok(value),
                Err(KvError::Conflict) => {}
                Err(e) => return Err(e.into()),
            },
            Err(e) if !txn.conflicted => return Err(e),
            Err(_) => {}
        }
        if attempts > max_retries {
            log::debug!("transact: giving up after {attempts} conflicting attempts");
            return Err(KvError::RetriesExhausted { attempts }.into());
        }
        let delay = backoff(attempts);
        log::debug!("transact: conflict on attempt {attempts}, retrying in {delay:?}");
        std::thread::sleep(delay);
    }
}

/// Backoff before retry `attempt` (1-based): 1 ms doubling up to 32 ms,
/// uniformly jittered into [d/2, d] so racing callers spread out.
fn backoff(attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let max_us: u64 = 1000 << attempt.saturating_sub(1).min(5);
    let rnd = std::collections::hash_map::RandomState::new().hash_one(attempt);
    Duration::from_micros(max_us / 2 + rnd % (max_us / 2 + 1))
}

/// Wraps the transaction handed to a [`transact`] closure to notice conflicts
/// reported by individual operations (possible with remote backends).
struct ConflictTracker<'a> {
    inner: Box<dyn KvTxn + 'a>,
    conflicted: bool,
}

impl ConflictTracker<'_> {
    fn track<T>(&mut self, r: Result<T>) -> Result<T> {
        if matches!(r, Err(KvError::Conflict)) {
            self.conflicted = true;
        }
        r
    }
}

impl KvTxn for ConflictTracker<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let r = self.inner.get(key);
        self.track(r)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let r = self.inner.put(key, value);
        self.track(r)
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        let r = self.inner.delete(key);
        self.track(r)
    }
    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>> {
        let r = self.inner.scan(start, end, limit);
        self.track(r)
    }
    fn scan_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<KvPair>> {
        let r = self.inner.scan_prefix(prefix, limit);
        self.track(r)
    }
    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>> {
        let r = self.inner.scan_keys(start, end, limit);
        self.track(r)
    }
    fn scan_keys_prefix(&mut self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        let r = self.inner.scan_keys_prefix(prefix, limit);
        self.track(r)
    }
    fn commit(self: Box<Self>) -> Result<()> {
        self.inner.commit()
    }
    fn commit_visible(self: Box<Self>) -> Result<CommitSeq> {
        self.inner.commit_visible()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for attempt in 1..100 {
            let d = backoff(attempt);
            assert!(d >= Duration::from_micros(500), "{d:?}");
            assert!(d <= Duration::from_millis(32), "{d:?}");
        }
    }

    #[test]
    fn error_display() {
        assert_eq!(KvError::Conflict.to_string(), "transaction conflict");
        assert!(KvError::RetriesExhausted { attempts: 3 }
            .to_string()
            .contains('3'));
        assert!(KvError::Conflict.is_conflict());
        assert!(!KvError::Backend("x".into()).is_conflict());
    }
}

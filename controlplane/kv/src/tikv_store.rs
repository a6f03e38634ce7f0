//! TiKV backend (cargo feature `tikv`): the metadata store on a TiKV
//! cluster (found through its PD endpoints), so several MDS nodes share one
//! store. TiKV is the store the design card names; the cluster code uses
//! etcd (see "Leases" below).
//!
//! Mapping of the optimistic contract (see the crate docs):
//!
//! * `begin` starts a tikv-client *optimistic* transaction: its start
//!   timestamp comes from PD's timestamp oracle (one round trip), and every
//!   read of the transaction is a snapshot read at that timestamp (TiKV's
//!   MVCC), so all reads see one consistent snapshot.
//! * Writes are buffered here (as in every backend) and merged into reads;
//!   nothing reaches TiKV before `commit`.
//! * `commit` hands TiKV the puts and deletes, plus a *lock* mutation
//!   (`lock_keys`) for every key read with `get` and not written, and runs
//!   TiKV's two-phase commit (Percolator). TiKV's prewrite refuses a
//!   mutation, lock or write, of a key that another transaction committed
//!   after our start timestamp (WriteConflict): that is the contract's
//!   conflict rule for keys read with `get` or written; scans are not
//!   locked (phantoms possible, as the contract allows). A refused commit
//!   is [`KvError::Conflict`] and is rolled back here at once (its prewrite
//!   locks would otherwise stall readers until their TTL), writing nothing.
//!   Cost: a committed lock is a version of the key to TiKV's check, so of
//!   two transactions that `get` one key and both write (other keys), the
//!   second may conflict and retry; keys every writer reads (a parent
//!   directory as a guard) serialize writers more than on etcd.
//!   (tests/tikv.rs prints which happens; not yet seen against a server.)
//! * Durability: the commit of the primary key is replicated by Raft to a
//!   majority and synced before TiKV answers; the other keys are committed
//!   in the background, but a reader that meets one of their locks resolves
//!   it from the primary, so the whole transaction is visible at once. So
//!   `commit` is durable and visible on return; the group-commit calls keep
//!   the trait's defaults (sequence 0, `sync` a no-op), which is the truth.
//! * Every key is stored under [`TikvConfig::prefix`], so several clusters
//!   (or tests) can share one TiKV; scans never leave the prefix.
//!
//! Errors: write conflicts, retryable key errors (a lock of ours rolled
//! back by another reader, `TxnLockNotFound`) and locks that could not be
//! resolved in time are [`KvError::Conflict`] ([`crate::transact`]
//! retries). PD or TiKV unreachable, region errors left after the client's
//! own retries, and the request timeout are [`KvError::Unavailable`]
//! (the MDS answers NFS4ERR_DELAY). A full TiKV disk is
//! [`KvError::NoSpace`]; an entry over TiKV's `raft-entry-max-size` or
//! `txn-entry-size-limit` (defaults 8 MiB, 6 MiB) is
//! [`KvError::InvalidArgument`] naming the setting. Caution: when a
//! *commit* fails with Unavailable its outcome is unknown (the primary may
//! have committed, whole, with the answer lost), as with etcd.
//!
//! Leases: TiKV has no TTL keys or leases. Node liveness on TiKV would be a
//! heartbeat record per node holding a PD timestamp (TSO, monotonic
//! cluster-wide), rewritten every heartbeat in a transaction that also
//! checks the node's epoch; a peer declares the node dead when the current
//! TSO's physical part is more than the lease past the record's, and
//! fences it with a transaction that bumps its epoch (so a late heartbeat
//! conflicts). That is not built: the cluster's membership, VIP claims and
//! fencing stay on etcd leases (controlplane/src/cluster).
//!
//! Threads: tikv-client is async. The store owns a small tokio runtime
//! (two worker threads) that runs every request, the background commits of
//! secondary keys and PD's timestamp stream; the calling thread waits on a
//! channel, so this also works from a thread inside another runtime. Every
//! call is bounded by [`TikvConfig::request_timeout`].

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tikv_client::transaction::{HeartbeatOption, Mutation};
use tikv_client::{BoundRange, CheckLevel, Config, Key, Transaction, TransactionClient, TransactionOptions};
use tokio::sync::Mutex;

use crate::merge::{buffer_write, buffered_get, merge_scan, merge_scan_keys, scan_range, Overlay};
use crate::{key, KvError, KvPair, KvStore, KvTxn, Result};

/// Largest gRPC answer decoded; scans page well below it.
const MAX_DECODE_BYTES: usize = 64 << 20;
/// Keys fetched per scan page (halved while an answer is too large).
const SCAN_PAGE: usize = 256;

/// Where and how to reach TiKV.
#[derive(Debug, Clone)]
pub struct TikvConfig {
    /// PD endpoints, `host:port` (an `http://` in front is accepted).
    pub pd_endpoints: Vec<String>,
    /// Prepended to every key; one prefix per cluster (may be empty).
    pub prefix: Vec<u8>,
    /// Bound on one call of the store (a commit is several round trips).
    pub request_timeout: Duration,
}

impl TikvConfig {
    /// Defaults: prefix `pnfs/`, 5 s per call.
    pub fn new(pd_endpoints: Vec<String>) -> Self {
        TikvConfig {
            pd_endpoints,
            prefix: b"pnfs/".to_vec(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// [`KvStore`] on a TiKV cluster; see the module docs.
pub struct TikvStore {
    runtime: Option<tokio::runtime::Runtime>,
    client: TransactionClient,
    prefix: Vec<u8>,
    timeout: Duration,
}

impl TikvStore {
    /// Connects to PD and checks that it hands out timestamps (the first
    /// thing every transaction needs), within the request timeout.
    pub fn connect(cfg: &TikvConfig) -> Result<Self> {
        if cfg.pd_endpoints.is_empty() {
            return Err(KvError::InvalidArgument("no PD endpoints given".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tikv-client")
            .enable_all()
            .build()
            .map_err(|e| KvError::Backend(format!("starting the TiKV client runtime: {e}")))?;
        let config = Config::default()
            .with_timeout(cfg.request_timeout)
            .with_grpc_max_decoding_message_size(MAX_DECODE_BYTES);
        let endpoints = cfg.pd_endpoints.clone();
        let at = || format!("TiKV (PD at {})", cfg.pd_endpoints.join(","));
        let client = run_on(&runtime, cfg.request_timeout, "connecting", async move {
            let client = TransactionClient::new_with_config(endpoints, config).await?;
            client.current_timestamp().await?;
            Ok(client)
        })
        .map_err(|e| match e {
            KvError::Backend(m) | KvError::Unavailable(m) => {
                KvError::Unavailable(format!("{}: {m} (is PD running and reachable there?)", at()))
            }
            other => other,
        })?;
        Ok(TikvStore {
            runtime: Some(runtime),
            client,
            prefix: cfg.prefix.clone(),
            timeout: cfg.request_timeout,
        })
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Runs `fut` on the store's runtime and waits for it, bounded by the
    /// request timeout; `what` names the call in errors.
    fn call<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = tikv_client::Result<T>> + Send + 'static,
    {
        match &self.runtime {
            Some(rt) => run_on(rt, self.timeout, what, fut),
            None => Err(KvError::Unavailable("TiKV client stopped".into())),
        }
    }

    /// Deletes every key under this store's prefix, a page per transaction
    /// (tests; tools resetting a cluster's metadata).
    pub fn delete_all(&self) -> Result<()> {
        loop {
            let done = crate::transact(self, 10, |t| {
                let keys = t.scan_keys(b"", None, 1000)?;
                for k in &keys {
                    t.delete(k)?;
                }
                Ok::<_, KvError>(keys.is_empty())
            })?;
            if done {
                return Ok(());
            }
        }
    }
}

impl Drop for TikvStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on `rt`, waiting on a channel (see the module docs: threads).
fn run_on<T, F>(rt: &tokio::runtime::Runtime, timeout: Duration, what: &str, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = tikv_client::Result<T>> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(tokio::time::timeout(timeout, fut).await);
    });
    match rx.recv() {
        Ok(Ok(r)) => r.map_err(|e| map_err(what, e)),
        Ok(Err(_)) => Err(KvError::Unavailable(format!("TiKV {what}: no answer within {timeout:?}"))),
        Err(_) => Err(KvError::Unavailable("TiKV client stopped".into())),
    }
}

/// `key` under `prefix`: the key TiKV stores.
fn encode_key(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    [prefix, key].concat()
}

/// The TiKV range `[start, end)` for the store range given, under `prefix`:
/// `end == None` runs to the end of the prefix (unbounded for an empty one).
fn encode_range(prefix: &[u8], start: &[u8], end: Option<&[u8]>) -> (Vec<u8>, Option<Vec<u8>>) {
    let end = match end {
        Some(end) => Some(encode_key(prefix, end)),
        None => key::prefix_end(prefix),
    };
    (encode_key(prefix, start), end)
}

/// A key TiKV returned, without the prefix; `None` for one outside it
/// (never asked for; skipped rather than trusted).
fn decode_key(prefix: &[u8], stored: Vec<u8>) -> Option<Vec<u8>> {
    stored.strip_prefix(prefix).map(<[u8]>::to_vec)
}

/// The transaction's writes as TiKV mutations.
fn mutations(prefix: &[u8], writes: &Overlay) -> Vec<Mutation> {
    writes
        .iter()
        .map(|(k, v)| {
            let k = Key::from(encode_key(prefix, k));
            match v {
                Some(v) => Mutation::Put(k, v.clone()),
                None => Mutation::Delete(k),
            }
        })
        .collect()
}

/// Keys read with `get` and not written: committed as lock mutations, so a
/// change of them after the snapshot conflicts (written keys are checked
/// by their own mutations).
fn read_locks(prefix: &[u8], reads: &BTreeSet<Vec<u8>>, writes: &Overlay) -> Vec<Key> {
    reads
        .iter()
        .filter(|k| !writes.contains_key(*k))
        .map(|k| Key::from(encode_key(prefix, k)))
        .collect()
}

/// Maps a tikv-client error (see the module docs: errors).
fn map_err(what: &str, e: tikv_client::Error) -> KvError {
    use tikv_client::Error as E;
    let kind = classify(&e);
    let msg = format!("TiKV {what}: {e}");
    match kind {
        ErrorKind::Conflict => {
            log::debug!("{msg}: conflict");
            KvError::Conflict
        }
        ErrorKind::NoSpace => KvError::NoSpace(format!("{msg} (free space on the TiKV stores or add stores)")),
        ErrorKind::TooLarge => KvError::InvalidArgument(format!(
            "{msg} (raise TiKV's raft-store.raft-entry-max-size / txn-entry-size-limit, or write less per transaction)"
        )),
        ErrorKind::Unavailable if matches!(e, E::UndeterminedError(_)) => {
            KvError::Unavailable(format!("{msg} (the commit may have been applied, whole)"))
        }
        ErrorKind::Unavailable => KvError::Unavailable(msg),
        ErrorKind::Backend => KvError::Backend(msg),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ErrorKind {
    // Ordered: of several errors, the most telling one wins.
    Backend,
    Unavailable,
    Conflict,
    TooLarge,
    NoSpace,
}

fn classify(e: &tikv_client::Error) -> ErrorKind {
    use tikv_client::Error as E;
    match e {
        E::KeyError(k) => classify_key_error(k),
        E::RegionError(r) => classify_region_error(r),
        E::ExtractedErrors(es) | E::MultipleKeyErrors(es) => {
            es.iter().map(classify).max().unwrap_or(ErrorKind::Backend)
        }
        E::PessimisticLockError { inner, .. } => classify(inner),
        // A lock of another transaction still there after the client's
        // backoff: contention, retry on a fresh snapshot.
        E::ResolveLockError(_) | E::TxnNotFound(_) => ErrorKind::Conflict,
        E::UndeterminedError(_)
        | E::Grpc(_)
        | E::GrpcAPI(_)
        | E::Io(_)
        | E::Channel(_)
        | E::Canceled(_)
        | E::JoinError(_)
        | E::LeaderNotFound { .. }
        | E::RegionForKeyNotFound { .. }
        | E::RegionForRangeNotFound { .. }
        | E::RegionNotFoundInResponse { .. }
        | E::EntryNotFoundInRegionCache
        | E::NoCurrentRegions => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    }
}

fn classify_key_error(k: &tikv_client::ProtoKeyError) -> ErrorKind {
    let too_large = |s: &str| s.contains("TooLarge") || s.to_ascii_lowercase().contains("too large");
    if too_large(&k.abort) {
        ErrorKind::TooLarge
    } else if k.conflict.is_some()
        || !k.retryable.is_empty()
        || k.locked.is_some()
        || k.already_exist.is_some()
        || k.deadlock.is_some()
        || k.txn_not_found.is_some()
        || k.commit_ts_expired.is_some()
    {
        ErrorKind::Conflict
    } else {
        ErrorKind::Backend
    }
}

fn classify_region_error(r: &tikv_client::ProtoRegionError) -> ErrorKind {
    if r.disk_full.is_some() {
        ErrorKind::NoSpace
    } else if r.raft_entry_too_large.is_some() {
        ErrorKind::TooLarge
    } else {
        // Leader changes, splits, busy stores: left over after the
        // client's own retries, the cluster is not serving this range now.
        ErrorKind::Unavailable
    }
}

fn is_too_large_answer(e: &KvError) -> bool {
    matches!(e, KvError::Unavailable(m) if m.contains("message length too large"))
}

fn txn_options() -> TransactionOptions {
    TransactionOptions::new_optimistic()
        // Dropping a transaction without commit is how the trait aborts.
        .drop_check(CheckLevel::None)
        // Our commits are short; no background task per commit.
        .heartbeat_option(HeartbeatOption::NoHeartbeat)
}

impl KvStore for TikvStore {
    fn begin(&self) -> Result<Box<dyn KvTxn + '_>> {
        let client = self.client.clone();
        let txn = self.call("starting a transaction", async move { client.begin_with_options(txn_options()).await })?;
        Ok(Box::new(TikvTxn {
            store: self,
            txn: Arc::new(Mutex::new(txn)),
            writes: Overlay::new(),
            reads: BTreeSet::new(),
        }))
    }
}

struct TikvTxn<'a> {
    store: &'a TikvStore,
    /// The tikv-client transaction: reads at its start timestamp, and the
    /// commit. Shared with the future running a call (a call that timed out
    /// leaves it usable).
    txn: Arc<Mutex<Transaction>>,
    writes: Overlay,
    /// Keys read with `get` (conflict-checked at commit).
    reads: BTreeSet<Vec<u8>>,
}

impl TikvTxn<'_> {
    /// One page of `[start, end)` (encoded keys) at the snapshot.
    fn fetch_page(&self, start: Vec<u8>, end: Option<Vec<u8>>, page: usize, keys_only: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.txn.clone();
        let range: BoundRange = (Key::from(start), end.map(Key::from)).into();
        let limit = page as u32;
        self.store.call("scanning", async move {
            let mut txn = txn.lock().await;
            if keys_only {
                Ok(txn.scan_keys(range, limit).await?.map(|k| (k.into(), Vec::new())).collect())
            } else {
                Ok(txn.scan(range, limit).await?.map(|p| {
                    let (k, v): (Key, Vec<u8>) = p.into();
                    (k.into(), v)
                }).collect())
            }
        })
    }

    /// The pairs of `[start, end)` at the snapshot, keys unprefixed, fetched
    /// lazily a page at a time (see [`paged`]).
    fn pages(&self, start: &[u8], end: Option<&[u8]>, limit: usize, keys_only: bool) -> impl Iterator<Item = Result<KvPair>> + '_ {
        let (start, end) = encode_range(&self.store.prefix, start, end);
        paged(&self.store.prefix, start, limit, move |from, page| {
            self.fetch_page(from, end.clone(), page, keys_only)
        })
    }
}

/// Pages through a range from encoded key `start`: `fetch(from, n)` returns
/// up to `n` pairs from `from` on (encoded keys, ascending); a full page
/// continues after its last key. The first page is sized to `limit`, later
/// ones full-sized (own deletes may hide many keys); a page is halved while
/// its answer is too large. Keys come back without `prefix`; iteration ends
/// after an error.
fn paged<'p, F>(prefix: &'p [u8], start: Vec<u8>, limit: usize, mut fetch: F) -> impl Iterator<Item = Result<KvPair>> + 'p
where
    F: FnMut(Vec<u8>, usize) -> Result<Vec<KvPair>> + 'p,
{
    let mut next_start = Some(start);
    let mut page = limit.clamp(1, SCAN_PAGE);
    let mut buf = Vec::new().into_iter();
    std::iter::from_fn(move || loop {
        if let Some(pair) = buf.next() {
            return Some(Ok(pair));
        }
        let from = next_start.take()?;
        match fetch(from.clone(), page) {
            Err(e) if is_too_large_answer(&e) && page > 1 => {
                page /= 2;
                next_start = Some(from);
            }
            Err(e) => return Some(Err(e)),
            Ok(items) => {
                if items.len() >= page {
                    next_start = items.last().map(|(k, _)| key::successor(k));
                }
                let items: Vec<KvPair> = items.into_iter().filter_map(|(k, v)| Some((decode_key(prefix, k)?, v))).collect();
                buf = items.into_iter();
                page = SCAN_PAGE;
            }
        }
    })
}

/// Prewrite and commit: the writes (the first is the primary key), then
/// read keys as locks.
async fn commit_mutations(txn: &mut Transaction, locks: Vec<Key>, writes: Vec<Mutation>) -> tikv_client::Result<()> {
    txn.batch_mutate(writes).await?;
    if !locks.is_empty() {
        txn.lock_keys(locks).await?;
    }
    txn.commit().await?;
    Ok(())
}

impl KvTxn for TikvTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(own) = buffered_get(&self.writes, &mut self.reads, key)? {
            return Ok(own);
        }
        let txn = self.txn.clone();
        let k = encode_key(&self.store.prefix, key);
        self.store.call("reading", async move { txn.lock().await.get(k).await })
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        buffer_write(&mut self.writes, key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        buffer_write(&mut self.writes, key, None)
    }

    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>> {
        let Some(range) = scan_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        let pages = self.pages(start, end, limit, false);
        merge_scan(pages, &self.writes, range, limit)
    }

    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>> {
        let Some(range) = scan_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        let keys = self.pages(start, end, limit, true).map(|r| r.map(|(k, _)| k));
        merge_scan_keys(keys, &self.writes, range, limit)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let prefix = &self.store.prefix;
        let locks = read_locks(prefix, &self.reads, &self.writes);
        let writes = mutations(prefix, &self.writes);
        let txn = self.txn.clone();
        self.store.call("committing", async move {
            let mut txn = txn.lock().await;
            let r = commit_mutations(&mut txn, locks, writes).await;
            if let Err(e) = &r {
                // Refused (nothing committed): remove our prewrite locks now
                // rather than leave them to expire. Undetermined: leave it.
                if !matches!(e, tikv_client::Error::UndeterminedError(_)) {
                    if let Err(re) = txn.rollback().await {
                        log::debug!("TiKV: rolling back a refused commit: {re}");
                    }
                }
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_client::{Error, ProtoKeyError, ProtoRegionError};

    #[test]
    fn keys_and_ranges_are_prefixed() {
        assert_eq!(encode_key(b"p/", b"k"), b"p/k");
        // To the end of the prefix, not of the keyspace.
        assert_eq!(encode_range(b"p/", b"a", None), (b"p/a".to_vec(), Some(b"p0".to_vec())));
        assert_eq!(encode_range(b"p/", b"a", Some(b"c")), (b"p/a".to_vec(), Some(b"p/c".to_vec())));
        // No prefix: the whole keyspace; an all-0xff prefix has no end.
        assert_eq!(encode_range(b"", b"a", None), (b"a".to_vec(), None));
        assert_eq!(encode_range(b"\xff", b"a", None).1, None);
        assert_eq!(decode_key(b"p/", b"p/k".to_vec()), Some(b"k".to_vec()));
        assert_eq!(decode_key(b"p/", b"q/k".to_vec()), None);
        assert_eq!(decode_key(b"", b"k".to_vec()), Some(b"k".to_vec()));
    }

    #[test]
    fn bound_range_is_half_open() {
        let (start, end) = encode_range(b"p/", b"a", Some(b"c"));
        let r: BoundRange = (Key::from(start), end.map(Key::from)).into();
        let (from, to) = r.into_keys();
        assert_eq!((Vec::from(from), to.map(Vec::from)), (b"p/a".to_vec(), Some(b"p/c".to_vec())));
        let r: BoundRange = (Key::from(b"a".to_vec()), None).into();
        assert_eq!(r.into_keys().1, None);
    }

    #[test]
    fn commit_sends_writes_and_locks_reads_only_once() {
        let mut writes = Overlay::new();
        buffer_write(&mut writes, b"w", Some(b"v")).unwrap();
        buffer_write(&mut writes, b"d", None).unwrap();
        buffer_write(&mut writes, b"rw", Some(b"")).unwrap();
        let reads: BTreeSet<Vec<u8>> = [b"r".to_vec(), b"rw".to_vec()].into();
        let m = mutations(b"p/", &writes);
        assert_eq!(
            m,
            vec![
                Mutation::Delete(Key::from(b"p/d".to_vec())),
                Mutation::Put(Key::from(b"p/rw".to_vec()), Vec::new()),
                Mutation::Put(Key::from(b"p/w".to_vec()), b"v".to_vec()),
            ]
        );
        // A key both read and written is checked by its write; no lock.
        assert_eq!(read_locks(b"p/", &reads, &writes), vec![Key::from(b"p/r".to_vec())]);
    }

    fn key_error(f: impl FnOnce(&mut ProtoKeyError)) -> Error {
        let mut k = ProtoKeyError::default();
        f(&mut k);
        Error::KeyError(Box::new(k))
    }

    fn region_error(f: impl FnOnce(&mut ProtoRegionError)) -> Error {
        let mut r = ProtoRegionError::default();
        f(&mut r);
        Error::RegionError(Box::new(r))
    }

    #[test]
    fn write_conflicts_and_retryable_errors_are_conflicts() {
        let conflict = || key_error(|k| k.conflict = Some(Default::default()));
        assert_eq!(map_err("committing", conflict()), KvError::Conflict);
        // As a prewrite reports it: nested in the plan's error lists.
        let nested = Error::ExtractedErrors(vec![Error::MultipleKeyErrors(vec![conflict()])]);
        assert_eq!(map_err("committing", nested), KvError::Conflict);
        let lock_gone = key_error(|k| k.retryable = "TxnLockNotFound".into());
        assert_eq!(map_err("committing", lock_gone), KvError::Conflict);
        assert_eq!(map_err("reading", Error::ResolveLockError(Vec::new())), KvError::Conflict);
        let locked = key_error(|k| k.locked = Some(Default::default()));
        assert_eq!(map_err("committing", locked), KvError::Conflict);
    }

    #[test]
    fn space_size_and_reachability_errors() {
        let full = region_error(|r| r.disk_full = Some(Default::default()));
        assert!(matches!(map_err("committing", full), KvError::NoSpace(m) if m.contains("TiKV committing")));
        let big = region_error(|r| r.raft_entry_too_large = Some(Default::default()));
        assert!(matches!(map_err("committing", big), KvError::InvalidArgument(m) if m.contains("raft-entry-max-size")));
        let big = key_error(|k| k.abort = "KeyTooLarge".into());
        assert!(matches!(map_err("committing", big), KvError::InvalidArgument(m) if m.contains("txn-entry-size-limit")));
        let busy = region_error(|r| r.server_is_busy = Some(Default::default()));
        assert!(matches!(map_err("reading", busy), KvError::Unavailable(_)));
        let unknown = Error::UndeterminedError(Box::new(Error::StringError("connection reset".into())));
        assert!(matches!(map_err("committing", unknown), KvError::Unavailable(m) if m.contains("may have been applied")));
        let other = key_error(|k| k.abort = "something else".into());
        assert!(matches!(map_err("committing", other), KvError::Backend(_)));
        // Of several errors, the most telling wins.
        let mixed = Error::ExtractedErrors(vec![Error::StringError("x".into()), region_error(|r| r.disk_full = Some(Default::default()))]);
        assert!(matches!(map_err("committing", mixed), KvError::NoSpace(_)));
    }

    #[test]
    fn oversized_answers_are_recognised_for_paging() {
        let e = KvError::Unavailable("TiKV scanning: decoded message length too large: found 70000000 bytes".into());
        assert!(is_too_large_answer(&e));
        assert!(!is_too_large_answer(&KvError::Conflict));
    }

    /// Paging over a sorted map standing in for one snapshot: every key once,
    /// in order, prefix stripped; a too-large answer halves the page; an
    /// error ends the scan.
    #[test]
    fn paging_continues_after_each_full_page_and_halves_on_large_answers() {
        let stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            (0..600u32).map(|i| (encode_key(b"p/", &i.to_be_bytes()), i.to_le_bytes().to_vec())).collect();
        let mut asked = Vec::new();
        let fetch = |from: Vec<u8>, n: usize| -> Result<Vec<KvPair>> {
            asked.push(n);
            if n > 100 && asked.len() == 2 {
                return Err(KvError::Unavailable("decoded message length too large".into()));
            }
            Ok(stored.range(from..).take(n).map(|(k, v)| (k.clone(), v.clone())).collect())
        };
        let got: Vec<KvPair> = paged(b"p/", b"p/".to_vec(), 10, fetch).collect::<Result<_>>().unwrap();
        assert_eq!(got.len(), 600);
        for (i, (k, v)) in got.iter().enumerate() {
            assert_eq!((k.as_slice(), v.as_slice()), (&(i as u32).to_be_bytes()[..], &(i as u32).to_le_bytes()[..]));
        }
        // 10 first, then full pages; the second answer was too large.
        assert_eq!(&asked[..4], &[10, SCAN_PAGE, SCAN_PAGE / 2, SCAN_PAGE]);

        let mut calls = 0;
        let failing = |_: Vec<u8>, n: usize| -> Result<Vec<KvPair>> {
            calls += 1;
            if calls == 1 {
                Ok((0..n as u8).map(|i| (vec![b'p', b'/', i], Vec::new())).collect())
            } else {
                Err(KvError::Unavailable("TiKV scanning: store down".into()))
            }
        };
        let got: Vec<Result<KvPair>> = paged(b"p/", b"p/".to_vec(), 3, failing).collect();
        assert_eq!(got.len(), 4);
        assert!(matches!(got[3], Err(KvError::Unavailable(_))));
    }

    /// No PD at the address: connect answers Unavailable, naming it, within
    /// its timeout, without panicking.
    #[test]
    fn unreachable_pd_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cfg = TikvConfig::new(vec![format!("127.0.0.1:{port}")]);
        cfg.request_timeout = Duration::from_secs(2);
        let t0 = std::time::Instant::now();
        match TikvStore::connect(&cfg) {
            Err(KvError::Unavailable(m)) => assert!(m.contains(&port.to_string()) && !m.contains("backend error"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to nothing"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
        assert!(matches!(TikvStore::connect(&TikvConfig::new(Vec::new())), Err(KvError::InvalidArgument(_))));
    }
}

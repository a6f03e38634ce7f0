//! etcd backend (cargo feature `etcd`): the metadata store on an etcd v3
//! cluster, so several MDS nodes share one store.
//!
//! Mapping of the optimistic contract (see the crate docs):
//!
//! * The snapshot is the cluster's revision when the transaction's first
//!   operation runs (see the crate docs: no earlier than `begin`, no later
//!   than the first operation). A first `get` is itself the linearizable
//!   read that fixes it: one range request without a revision, whose answer
//!   carries the revision it was served at, so a read-only transaction of
//!   one get (GETATTR) costs one round trip, not two. A first scan, `put` or
//!   `delete` reads the revision alone first (a count-only linearizable
//!   range, as `begin` used to), so blind writes are checked against the
//!   state at the first operation. `begin` itself sends nothing.
//! * Later reads (`get`, scans) are range requests *at that revision*. They
//!   are served by whichever member answers (serializable: no consensus
//!   round); a member that has not applied the revision yet answers "future
//!   revision" and the read is repeated linearizably. History at a revision
//!   never changes, so these reads are exact.
//! * `commit` is one etcd `Txn`: compares that every key read with `get`
//!   and every key written still has the `mod_revision` it had at the
//!   snapshot (0 when absent), then the puts and deletes. A failed compare is
//!   [`KvError::Conflict`]; etcd applies a `Txn` whole or not at all. The
//!   snapshot `mod_revision` of a key written without being read comes from
//!   a scan that returned it, else from one extra read at commit (all such
//!   keys in one read-only `Txn`).
//! * A commit is replicated to a majority and fsynced before etcd answers,
//!   so `commit` is durable on return; the group-commit calls keep the
//!   trait's defaults (sequence 0, `sync` a no-op), which is the truth here.
//! * Compaction: a snapshot revision compacted away answers
//!   [`KvError::Conflict`], so [`crate::transact`] retries on a fresh one.
//! * Every key is stored under [`EtcdConfig::prefix`], so several clusters
//!   (or tests) can share one etcd; scans never leave the prefix.
//!
//! Limits: etcd refuses a request over its `--max-request-bytes` (default
//! 1.5 MiB) and a `Txn` with more than `--max-txn-ops` operations (default
//! 128). One 1 MiB value (the contract's minimum) fits the defaults; a
//! transaction writing more needs a larger limit, and MDS transactions write
//! many keys, so run etcd with `--max-txn-ops 10000 --max-request-bytes
//! 8388608` (scripts/etcd-cluster does). Refusals are
//! [`KvError::InvalidArgument`] naming the etcd flag. A full etcd (its
//! `--quota-backend-bytes`, alarm NOSPACE) is [`KvError::NoSpace`].
//!
//! Errors: a member or the network failing is [`KvError::Unavailable`]
//! (the MDS answers NFS4ERR_DELAY and the client retries); requests go to
//! the other members meanwhile. Every request is bounded by
//! [`EtcdConfig::request_timeout`]. Caution: when a *commit* fails that
//! way its outcome is unknown: the request may have been applied with the
//! answer lost (whole, never in part).
//!
//! Threads: etcd-client is async. The store owns a small tokio runtime (two
//! worker threads) that runs every request; the calling thread waits for
//! the answer on a channel. Unlike `block_on` this also works from a thread
//! that is itself inside a tokio runtime (the MDS calls the store from
//! `spawn_blocking` threads and at startup from async code), and the
//! store's connections stay driven between calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, GetResponse, KvClient, LeaseClient,
    PutOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::merge::{buffer_write, merge_scan, merge_scan_keys, scan_range, Overlay};
use crate::{key, KvError, KvPair, KvStore, KvTxn, Result};

/// Largest gRPC answer decoded; scans page well below it.
const MAX_DECODE_BYTES: usize = 64 << 20;
/// Keys fetched per scan page (halved while an answer is too large).
const SCAN_PAGE: usize = 256;

/// Where and how to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prepended to every key; one prefix per cluster (may be empty).
    pub prefix: Vec<u8>,
    /// Bound on one request, including waiting for a new etcd leader.
    pub request_timeout: Duration,
    /// Bound on opening a connection to one member.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    /// Defaults: prefix `pnfs/`, 5 s requests, 2 s connects.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: b"pnfs/".to_vec(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Id of an etcd lease (see [`EtcdStore::lease_grant`]).
pub type LeaseId = i64;

/// A key, its value and the lease it is attached to (0: none).
pub type LeasedPair = (Vec<u8>, Vec<u8>, LeaseId);

/// [`KvStore`] on an etcd cluster; see the module docs.
pub struct EtcdStore {
    runtime: Option<tokio::runtime::Runtime>,
    kv: KvClient,
    lease: LeaseClient,
    prefix: Vec<u8>,
    timeout: Duration,
    /// Requests sent so far ([`EtcdStore::requests`]).
    requests: std::sync::atomic::AtomicU64,
}

impl EtcdStore {
    /// Connects to the cluster and checks that it answers (a linearizable
    /// read, so a cluster without quorum fails here, within the timeouts).
    pub fn connect(cfg: &EtcdConfig) -> Result<Self> {
        if cfg.endpoints.is_empty() {
            return Err(KvError::InvalidArgument("no etcd endpoints given".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| KvError::Backend(format!("starting the etcd client runtime: {e}")))?;
        let options = ConnectOptions::new()
            .with_timeout(cfg.request_timeout)
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(Duration::from_secs(2), cfg.request_timeout)
            // A member cut off from the leader refuses at once instead of
            // waiting out the timeout; the next request tries another.
            .with_require_leader(true);
        let endpoints = cfg.endpoints.clone();
        let client = run_on(&runtime, cfg.request_timeout, async move {
            Client::connect(endpoints, Some(options)).await.map_err(|e| unavailable("connecting", e))
        })
        .map_err(|e| KvError::Unavailable(format!("etcd at {}: {e}", cfg.endpoints.join(","))))?;
        let store = EtcdStore {
            kv: client.kv_client().max_decoding_message_size(MAX_DECODE_BYTES),
            lease: client.lease_client(),
            runtime: Some(runtime),
            prefix: cfg.prefix.clone(),
            timeout: cfg.request_timeout,
            requests: Default::default(),
        };
        store
            .current_revision()
            .map_err(|e| KvError::Unavailable(format!("etcd at {} does not answer: {e}", cfg.endpoints.join(","))))?;
        Ok(store)
    }

    /// The key prefix of this store.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Requests (round trips) this store has sent to etcd so far, retries
    /// included: what a transaction costs (tests, metrics).
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `fut` (one request) on the store's runtime and waits for it,
    /// bounded by the request timeout.
    fn call<T, F>(&self, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.runtime {
            Some(rt) => run_on(rt, self.timeout, fut),
            None => Err(KvError::Unavailable("etcd client stopped".into())),
        }
    }

    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    /// The cluster's current revision, read linearizably.
    fn current_revision(&self) -> Result<i64> {
        let mut kv = self.kv.clone();
        let probe = if self.prefix.is_empty() { vec![0] } else { self.prefix.clone() };
        self.call(async move {
            let resp = kv
                .get(probe, Some(GetOptions::new().with_count_only()))
                .await
                .map_err(|e| map_err("reading the revision", e))?;
            Ok(revision_of(&resp))
        })
    }

    /// Grants a lease that expires `ttl` (whole seconds, at least 1) after
    /// its last keepalive; keys attached to it vanish then. For node
    /// liveness: grant, attach a key with [`put_with_lease`](Self::put_with_lease),
    /// keep alive well within the TTL.
    pub fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        let mut lease = self.lease.clone();
        self.call(async move {
            let resp = lease.grant(secs, None).await.map_err(|e| map_err("granting a lease", e))?;
            if !resp.error().is_empty() {
                return Err(KvError::Backend(format!("etcd lease grant: {}", resp.error())));
            }
            Ok(resp.id())
        })
    }

    /// Renews lease `id` once; returns the TTL granted anew, or `None` when
    /// the lease has already expired (or was revoked): its keys are gone.
    pub fn lease_keep_alive(&self, id: LeaseId) -> Result<Option<Duration>> {
        let mut lease = self.lease.clone();
        self.call(async move {
            let once = async {
                let (mut keeper, mut stream) = lease.keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            };
            match once.await {
                Ok(Some(resp)) => Ok((resp.ttl() > 0).then(|| Duration::from_secs(resp.ttl() as u64))),
                Ok(None) => Err(KvError::Unavailable("etcd closed the lease keepalive stream".into())),
                // etcd-client reports an expired lease (TTL 0) as this error.
                Err(e) if e.to_string().contains("lease not found") => Ok(None),
                Err(e) => Err(map_err("keeping a lease alive", e)),
            }
        })
    }

    /// Revokes lease `id` now, deleting its keys. Revoking an expired lease
    /// is fine.
    pub fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let mut lease = self.lease.clone();
        self.call(async move {
            match lease.revoke(id).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("requested lease not found") => Ok(()),
                Err(e) => Err(map_err("revoking a lease", e)),
            }
        })
    }

    /// Writes `key` = `value` attached to lease `id` (outside any
    /// transaction): the key is deleted when the lease expires or is revoked.
    pub fn put_with_lease(&self, key: &[u8], value: &[u8], id: LeaseId) -> Result<()> {
        key::validate(key)?;
        let mut kv = self.kv.clone();
        let (k, v) = (self.full_key(key), value.to_vec());
        self.call(async move {
            kv.put(k, v, Some(PutOptions::new().with_lease(id)))
                .await
                .map_err(|e| map_err("writing a leased key", e))?;
            Ok(())
        })
    }

    // Leased keys for cluster membership and VIP claims (controlplane/src/cluster/).

    /// Keys under `prefix` (unprefixed) with their values and the lease each
    /// is attached to (0: none), read linearizably, at most `limit`.
    pub fn list_leased(&self, prefix: &[u8], limit: usize) -> Result<Vec<LeasedPair>> {
        let mut kv = self.kv.clone();
        let start = self.full_key(prefix);
        let end = key::prefix_end(&start).unwrap_or_else(|| vec![0]);
        let strip = self.prefix.len();
        self.call(async move {
            let opts = GetOptions::new().with_range(end).with_limit(limit as i64);
            let resp = kv.get(start, Some(opts)).await.map_err(|e| map_err("listing leased keys", e))?;
            Ok(resp.kvs().iter().map(|kv| (kv.key()[strip..].to_vec(), kv.value().to_vec(), kv.lease())).collect())
        })
    }

    /// Writes `key` = `value` under lease `id` only if `key` does not exist
    /// (one etcd txn). Returns `None` when written, else the lease the key
    /// is held under: the caller's own claim answers `Some(id)`.
    pub fn put_if_absent_with_lease(&self, key: &[u8], value: &[u8], id: LeaseId) -> Result<Option<LeaseId>> {
        key::validate(key)?;
        let mut kv = self.kv.clone();
        let (k, v) = (self.full_key(key), value.to_vec());
        self.call(async move {
            let txn = Txn::new()
                .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(k.clone(), v, Some(PutOptions::new().with_lease(id)))])
                .or_else([TxnOp::get(k, None)]);
            let resp = kv.txn(txn).await.map_err(|e| map_err("claiming a leased key", e))?;
            if resp.succeeded() {
                return Ok(None);
            }
            let holder = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map_or(0, |kv| kv.lease())),
                _ => None,
            });
            Ok(Some(holder.unwrap_or(0)))
        })
    }

    /// Deletes `key` if it is attached to lease `id` (giving up a claim
    /// without touching another holder's); true when deleted.
    pub fn delete_if_lease(&self, key: &[u8], id: LeaseId) -> Result<bool> {
        key::validate(key)?;
        let mut kv = self.kv.clone();
        let k = self.full_key(key);
        self.call(async move {
            let txn = Txn::new()
                .when([Compare::lease(k.clone(), CompareOp::Equal, id)])
                .and_then([TxnOp::delete(k, None)]);
            let resp = kv.txn(txn).await.map_err(|e| map_err("releasing a leased key", e))?;
            Ok(resp.succeeded())
        })
    }

    /// Deletes every key under this store's prefix (tests; tools resetting a
    /// cluster's metadata).
    pub fn delete_all(&self) -> Result<()> {
        let mut kv = self.kv.clone();
        let (start, end) = self.range(b"", None);
        self.call(async move {
            let opts = etcd_client::DeleteOptions::new().with_range(end);
            kv.delete(start, Some(opts)).await.map_err(|e| map_err("deleting the prefix", e))?;
            Ok(())
        })
    }

    /// Compacts etcd's history up to the current revision (tests: snapshots
    /// taken before it then answer [`KvError::Conflict`]).
    pub fn compact_now(&self) -> Result<()> {
        let rev = self.current_revision()?;
        let mut kv = self.kv.clone();
        self.call(async move {
            kv.compact(rev, None).await.map_err(|e| map_err("compacting", e))?;
            Ok(())
        })
    }

    /// etcd range `[start, end)` (prefixed) for the store range given.
    /// `end == None` runs to the end of the prefix (or of the keyspace:
    /// etcd's `"\0"` range end).
    fn range(&self, start: &[u8], end: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
        let start = self.full_key(start);
        let end = match end {
            Some(end) => self.full_key(end),
            None => key::prefix_end(&self.prefix).unwrap_or_else(|| vec![0]),
        };
        (start, end)
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on `rt`, waiting on a channel (see the module docs: threads).
fn run_on<T, F>(rt: &tokio::runtime::Runtime, timeout: Duration, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        let r = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(KvError::Unavailable(format!("etcd did not answer within {timeout:?}"))),
        };
        let _ = tx.send(r);
    });
    rx.recv().unwrap_or_else(|_| Err(KvError::Unavailable("etcd client stopped".into())))
}

fn revision_of(resp: &GetResponse) -> i64 {
    resp.header().map_or(0, |h| h.revision())
}

fn unavailable(what: &str, e: etcd_client::Error) -> KvError {
    KvError::Unavailable(format!("etcd {what}: {e}"))
}

/// Maps an etcd error: compaction is a conflict (retry on a fresh
/// snapshot), refusals name the etcd flag to raise, the rest is the cluster
/// being unreachable.
fn map_err(what: &str, e: etcd_client::Error) -> KvError {
    let msg = e.to_string();
    if msg.contains("required revision has been compacted") {
        log::debug!("etcd {what}: snapshot compacted away, retrying as a conflict");
        KvError::Conflict
    } else if msg.contains("request is too large") || msg.contains("larger than max") {
        KvError::InvalidArgument(format!(
            "etcd {what}: {msg} (raise etcd's --max-request-bytes, or write less per transaction)"
        ))
    } else if msg.contains("too many operations in txn") {
        KvError::InvalidArgument(format!("etcd {what}: {msg} (raise etcd's --max-txn-ops)"))
    } else if msg.contains("database space exceeded") {
        KvError::NoSpace(format!(
            "etcd {what}: {msg} (compact and defragment etcd, raise --quota-backend-bytes, then etcdctl alarm disarm)"
        ))
    } else {
        unavailable(what, e)
    }
}

fn is_future_rev(e: &KvError) -> bool {
    matches!(e, KvError::Unavailable(m) if m.contains("future revision"))
}

fn is_too_large(e: &KvError) -> bool {
    matches!(e, KvError::Unavailable(m) if m.contains("message length too large"))
}

impl KvStore for EtcdStore {
    fn begin(&self) -> Result<Box<dyn KvTxn + '_>> {
        Ok(Box::new(EtcdTxn {
            store: self,
            rev: None,
            writes: Overlay::new(),
            reads: BTreeMap::new(),
            seen: BTreeMap::new(),
        }))
    }
}

struct EtcdTxn<'a> {
    store: &'a EtcdStore,
    /// Snapshot revision; fixed by the first operation (module docs).
    rev: Option<i64>,
    writes: Overlay,
    /// Keys read with `get`: their `mod_revision` at the snapshot (0: absent).
    reads: BTreeMap<Vec<u8>, i64>,
    /// `mod_revision` at the snapshot of keys seen by scans (not
    /// conflict-checked unless written).
    seen: BTreeMap<Vec<u8>, i64>,
}

impl EtcdTxn<'_> {
    /// The snapshot revision, reading the current one if no operation has
    /// fixed it yet.
    fn snapshot(&mut self) -> Result<i64> {
        match self.rev {
            Some(rev) => Ok(rev),
            None => {
                let rev = self.store.current_revision()?;
                self.rev = Some(rev);
                Ok(rev)
            }
        }
    }

    /// Range read at the snapshot; serializable first, linearizable when
    /// the answering member is behind the snapshot. Without a snapshot yet
    /// it is one linearizable read whose revision becomes the snapshot.
    fn read_fixing(&mut self, key: Vec<u8>, opts: GetOptions) -> Result<GetResponse> {
        if self.rev.is_some() {
            return self.read(key, opts);
        }
        let mut kv = self.store.kv.clone();
        let resp = self.store.call(async move { kv.get(key, Some(opts)).await.map_err(|e| map_err("reading", e)) })?;
        self.rev = Some(revision_of(&resp));
        Ok(resp)
    }

    /// Range read at the (already fixed) snapshot; see [`Self::read_fixing`].
    fn read(&self, key: Vec<u8>, opts: GetOptions) -> Result<GetResponse> {
        let Some(rev) = self.rev else {
            return Err(KvError::Backend("etcd: read at a snapshot not yet taken".into()));
        };
        let kv = self.store.kv.clone();
        let read = |opts: GetOptions| {
            let mut kv = kv.clone();
            let key = key.clone();
            async move { kv.get(key, Some(opts)).await.map_err(|e| map_err("reading", e)) }
        };
        let opts = opts.with_revision(rev);
        match self.store.call(read(opts.clone().with_serializable())) {
            Err(e) if is_future_rev(&e) => self.store.call(read(opts)),
            r => r,
        }
    }

    /// Snapshot `mod_revision`s of `keys`, in one read-only `Txn`.
    fn snapshot_revisions(&self, rev: i64, keys: &[Vec<u8>]) -> Result<Vec<i64>> {
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|k| {
                let opts = GetOptions::new().with_revision(rev).with_keys_only();
                TxnOp::get(self.store.full_key(k), Some(opts.with_serializable()))
            })
            .collect();
        let fetch = |ops: Vec<TxnOp>| {
            let mut kv = self.store.kv.clone();
            async move { kv.txn(Txn::new().and_then(ops)).await.map_err(|e| map_err("reading at commit", e)) }
        };
        let resp = match self.store.call(fetch(ops.clone())) {
            Err(e) if is_future_rev(&e) => {
                // Linearizable: the same ranges without `serializable`.
                let ops = keys
                    .iter()
                    .map(|k| {
                        let opts = GetOptions::new().with_revision(rev).with_keys_only();
                        TxnOp::get(self.store.full_key(k), Some(opts))
                    })
                    .collect();
                self.store.call(fetch(ops))?
            }
            r => r?,
        };
        let revs: Vec<i64> = resp
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(g) => Ok(g.kvs().first().map_or(0, |kv| kv.mod_revision())),
                _ => Err(KvError::Backend("etcd answered a read with something else".into())),
            })
            .collect::<Result<_>>()?;
        if revs.len() != keys.len() {
            return Err(KvError::Backend("etcd answered fewer reads than asked".into()));
        }
        Ok(revs)
    }
}

/// Lazily fetched pages of a range at the snapshot, keys unprefixed.
struct Pages<'t, 'a> {
    txn: &'t EtcdTxn<'a>,
    next_start: Option<Vec<u8>>,
    end: Vec<u8>,
    keys_only: bool,
    page: usize,
    buf: std::vec::IntoIter<(Vec<u8>, Vec<u8>, i64)>,
    /// Snapshot `mod_revision` of each key returned.
    seen: Vec<(Vec<u8>, i64)>,
    failed: bool,
}

impl Pages<'_, '_> {
    fn fetch(&mut self) -> Result<()> {
        let Some(start) = self.next_start.take() else {
            return Ok(());
        };
        loop {
            let mut opts = GetOptions::new().with_range(self.end.clone()).with_limit(self.page as i64);
            if self.keys_only {
                opts = opts.with_keys_only();
            }
            match self.txn.read(start.clone(), opts) {
                Err(e) if is_too_large(&e) && self.page > 1 => self.page /= 2,
                Err(e) => return Err(e),
                Ok(mut resp) => {
                    let more = resp.more();
                    let kvs = resp.take_kvs();
                    let prefix = self.txn.store.prefix.len();
                    if more {
                        self.next_start = kvs.last().map(|kv| key::successor(kv.key()));
                    }
                    let items: Vec<_> = kvs
                        .into_iter()
                        .map(|kv| {
                            let rev = kv.mod_revision();
                            let (k, v) = kv.into_key_value();
                            (k[prefix..].to_vec(), v, rev)
                        })
                        .collect();
                    self.buf = items.into_iter();
                    return Ok(());
                }
            }
        }
    }
}

impl Iterator for Pages<'_, '_> {
    type Item = Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some((k, v, rev)) = self.buf.next() {
                self.seen.push((k.clone(), rev));
                return Some(Ok((k, v)));
            }
            self.next_start.as_ref()?;
            // Later pages are full-sized: own deletes may hide many keys.
            if let Err(e) = self.fetch() {
                self.failed = true;
                return Some(Err(e));
            }
            self.page = SCAN_PAGE;
        }
    }
}

impl EtcdTxn<'_> {
    fn pages(&self, start: &[u8], end: Option<&[u8]>, limit: usize, keys_only: bool) -> Pages<'_, '_> {
        let (start, end) = self.store.range(start, end);
        Pages {
            txn: self,
            next_start: Some(start),
            end,
            keys_only,
            page: limit.clamp(1, SCAN_PAGE),
            buf: Vec::new().into_iter(),
            seen: Vec::new(),
            failed: false,
        }
    }
}

impl KvTxn for EtcdTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        key::validate(key)?;
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        let mut resp = self.read_fixing(self.store.full_key(key), GetOptions::new())?;
        let kv = resp.take_kvs().into_iter().next();
        self.reads.insert(key.to_vec(), kv.as_ref().map_or(0, |kv| kv.mod_revision()));
        Ok(kv.map(|kv| kv.into_key_value().1))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        buffer_write(&mut self.writes, key, Some(value))?;
        self.snapshot().map(drop)
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        buffer_write(&mut self.writes, key, None)?;
        self.snapshot().map(drop)
    }

    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>> {
        let Some(range) = scan_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        self.snapshot()?;
        let mut pages = self.pages(start, end, limit, false);
        let out = merge_scan(&mut pages, &self.writes, range, limit)?;
        let seen = std::mem::take(&mut pages.seen);
        self.seen.extend(seen);
        Ok(out)
    }

    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>> {
        let Some(range) = scan_range(start, end, limit) else {
            return Ok(Vec::new());
        };
        self.snapshot()?;
        let mut pages = self.pages(start, end, limit, true);
        let keys = (&mut pages).map(|r| r.map(|(k, _)| k));
        let out = merge_scan_keys(keys, &self.writes, range, limit)?;
        let seen = std::mem::take(&mut pages.seen);
        self.seen.extend(seen);
        Ok(out)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        // Every write fixed the snapshot (`put`, `delete`).
        let rev = self.rev.ok_or_else(|| KvError::Backend("etcd: writes without a snapshot".into()))?;
        let blind: Vec<Vec<u8>> = self
            .writes
            .keys()
            .filter(|k| !self.reads.contains_key(*k) && !self.seen.contains_key(*k))
            .cloned()
            .collect();
        let mut expected = self.reads.clone();
        for k in self.writes.keys() {
            if let Some(&rev) = self.seen.get(k) {
                expected.entry(k.clone()).or_insert(rev);
            }
        }
        if !blind.is_empty() {
            let revs = self.snapshot_revisions(rev, &blind)?;
            expected.extend(blind.into_iter().zip(revs));
        }
        let store = self.store;
        let compares: Vec<Compare> = expected
            .iter()
            .map(|(k, &rev)| Compare::mod_revision(store.full_key(k), CompareOp::Equal, rev))
            .collect();
        let ops: Vec<TxnOp> = self
            .writes
            .iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(store.full_key(k), v.clone(), None),
                None => TxnOp::delete(store.full_key(k), None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let mut kv = store.kv.clone();
        let resp = store.call(async move { kv.txn(txn).await.map_err(|e| map_err("committing", e)) })?;
        if resp.succeeded() {
            Ok(())
        } else {
            log::debug!("etcd: conflict for txn at revision {rev}");
            Err(KvError::Conflict)
        }
    }
}

//! Embedded default backend on redb.
//!
//! Design: redb allows one write transaction at a time, and holding it for the
//! whole life of an MDS transaction would serialize every caller (and
//! deadlock a thread that opens two). So a [`KvTxn`] here is optimistic, like
//! the remote backends:
//!
//! * `begin` opens a redb *read* transaction (an MVCC snapshot that never
//!   blocks or is blocked by the writer);
//! * `put`/`delete` go to an in-memory ordered overlay, merged into reads;
//! * `commit` of a transaction that wrote nothing just drops the snapshot
//!   (read-only transactions never touch the writer lock);
//! * otherwise `commit` takes the redb write transaction, validates that every
//!   key read with `get` or written has the same value now as in the snapshot
//!   (else [`KvError::Conflict`]), applies the overlay and commits it, durable
//!   before returning (group commit, below). Validation and apply
//!   happen under the single writer, so they are atomic with respect to other
//!   commits. Comparing values instead of versions means an A→B→A change is not
//!   a conflict, which is still serializable for point reads.
//!
//! Group commit: a commit applies with `Durability::None` (visible to later
//! snapshots, pages written, no fsync) and gets the next [`CommitSeq`];
//! durability comes from [`KvStore::sync`], an empty `Durability::Immediate`
//! commit, which makes every earlier non-durable commit durable with one
//! fsync. One caller syncs at a time (the leader); callers arriving
//! meanwhile wait for it and, if their commit came too late for it, one of
//! them leads the next sync for all of them. `commit` is `commit_visible` +
//! `sync`, so blocking callers share fsyncs; a server that holds replies
//! calls `commit_visible` and syncs once per batch (see pnfs-mds's server).
//! A failed sync drops the handle like any I/O error: the reopened file is
//! at the last durable commit, and the commits made visible since then are
//! reported lost by [`KvStore::check_durable`] and `sync`.
//!
//! I/O errors (a full disk above all): after one, redb refuses every later
//! call on that handle (`PreviousIo`) until the file is closed and opened
//! again, which also repairs it back to the last durable commit (reading
//! the whole file). So the failing call answers [`KvError::NoSpace`]
//! (ENOSPC, EDQUOT) or [`KvError::Backend`], the handle is dropped, and a
//! later `begin` reopens the file (once the old handle's snapshots are
//! gone). Reopens are at most one per [`REOPEN_INTERVAL`], and after one
//! caused by a full disk, commits that write are refused with `NoSpace` for
//! that long without touching the file: reads go on while the disk stays
//! full, and writers retrying cannot make the store repair itself in a loop.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadOnlyTable, ReadableTable, TableDefinition};

use crate::merge::{buffer_write, merge_scan, merge_scan_keys, scan_bounds, Overlay};
use crate::{key, CommitSeq, KvError, KvPair, KvStore, KvTxn, Result};

/// The single table holding all keys.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// Least time between two reopens of the file after I/O errors, and how
/// long writes are refused after a reopen caused by a full disk.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// [`KvStore`] backed by one redb file. One process may open a file at a
/// time (redb locks it).
pub struct RedbStore {
    path: PathBuf,
    state: RwLock<State>,
    /// Held by the one thread reopening the file; others answer at once.
    reopening: Mutex<()>,
    /// Sequence of the last commit made visible.
    visible: AtomicU64,
    /// Sequence up to which commits are durable.
    durable: AtomicU64,
    /// True while a sync (the leader's) runs; waiters sleep on `synced`.
    syncing: Mutex<bool>,
    synced: Condvar,
    /// fsyncs of the file (all handles), counted by [`CountingFile`].
    syncs: Arc<AtomicU64>,
    /// Commits lost when the last handle failed (visible, never durable):
    /// inclusive range, empty when start > end.
    lost: Mutex<(CommitSeq, CommitSeq)>,
}

enum State {
    /// `opened`: when this handle was opened (paces reopens). Until
    /// `refuse_writes`' instant, commits that write answer its error.
    Open { db: Arc<Database>, opened: Instant, refuse_writes: Option<(Instant, KvError)> },
    /// The handle hit an I/O error and was dropped. `error` is what calls
    /// answer until a reopen succeeds; none is tried before `next_try`.
    Failed { error: KvError, next_try: Instant },
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if missing. After an
    /// unclean shutdown redb repairs the file here, which may take a while.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let syncs = Arc::new(AtomicU64::new(0));
        let db = Arc::new(open_db(path, &syncs).map_err(|e| match e {
            // Only the reopen path waits for the file to be let go.
            KvError::Unavailable(_) => {
                KvError::Backend(format!("open {}: already open (is another server using it?)", path.display()))
            }
            e => e,
        })?);
        log::debug!("redb: opened {}", path.display());
        let state = State::Open { db, opened: Instant::now(), refuse_writes: None };
        Ok(Self {
            path: path.to_path_buf(),
            state: RwLock::new(state),
            reopening: Mutex::new(()),
            visible: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncing: Mutex::new(false),
            synced: Condvar::new(),
            syncs,
            lost: Mutex::new((1, 0)),
        })
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The open handle, reopening the file if an I/O error closed it.
    fn handle(&self) -> Result<Arc<Database>> {
        if let State::Open { db, .. } = &*self.state() {
            return Ok(db.clone());
        }
        let Ok(_one) = self.reopening.try_lock() else {
            return Err(KvError::Unavailable(format!("{} is being reopened after an I/O error", self.path.display())));
        };
        let cause = match &*self.state() {
            State::Open { db, .. } => return Ok(db.clone()),
            State::Failed { error, next_try } if Instant::now() < *next_try => return Err(error.clone()),
            State::Failed { error, .. } => error.clone(),
        };
        let now = Instant::now();
        match open_db(&self.path, &self.syncs) {
            Ok(db) => {
                log::warn!("redb: {} reopened after an I/O error ({cause})", self.path.display());
                let db = Arc::new(db);
                let refuse_writes = matches!(cause, KvError::NoSpace(_)).then(|| (now + REOPEN_INTERVAL, cause));
                *self.state.write().unwrap_or_else(|p| p.into_inner()) =
                    State::Open { db: db.clone(), opened: now, refuse_writes };
                Ok(db)
            }
            // Transactions begun on the old handle still hold the file; no
            // waiting on them here (and no repair cost spent): retry soon.
            Err(e @ KvError::Unavailable(_)) => Err(e),
            Err(e) => {
                log::warn!("redb: reopening {} failed: {e}; next attempt in {REOPEN_INTERVAL:?}", self.path.display());
                *self.state.write().unwrap_or_else(|p| p.into_inner()) =
                    State::Failed { error: e.clone(), next_try: now + REOPEN_INTERVAL };
                Err(e)
            }
        }
    }

    /// The error a commit that writes on `db` answers without trying, in the
    /// pause after a reopen caused by a full disk.
    fn writes_refused(&self, db: &Arc<Database>) -> Option<KvError> {
        match &*self.state() {
            State::Open { db: cur, refuse_writes: Some((until, e)), .. } if Arc::ptr_eq(cur, db) && Instant::now() < *until => {
                Some(e.clone())
            }
            _ => None,
        }
    }

    /// Maps a redb error met on `db`. An I/O error drops the handle so a
    /// later `begin` reopens the file (redb answers PreviousIo forever after
    /// one); the error that caused that is what calls answer meanwhile.
    fn failed(&self, db: &Arc<Database>, e: impl Into<redb::Error>) -> KvError {
        let (err, cause) = match e.into() {
            redb::Error::Io(io) => (io_error(io), true),
            // Another call on this handle met the error itself.
            redb::Error::PreviousIo => (KvError::Backend("earlier I/O error on this file".into()), false),
            other => return KvError::backend(other),
        };
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        match &mut *st {
            State::Open { db: cur, opened, .. } if Arc::ptr_eq(cur, db) => {
                log::error!("redb: {}: {err}; reopening it", self.path.display());
                // The reopened file is at the last durable commit.
                let lost = (self.durable.load(Ordering::Acquire) + 1, self.visible.load(Ordering::Acquire));
                *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = lost;
                *st = State::Failed { error: err.clone(), next_try: *opened + REOPEN_INTERVAL };
                err
            }
            // A transaction on a handle already replaced: nothing of it was
            // written, and a retry runs on the reopened file.
            State::Open { .. } => KvError::Conflict,
            // The error itself, arriving after a PreviousIo seen elsewhere.
            State::Failed { error, .. } if cause && !matches!(error, KvError::NoSpace(_)) => {
                *error = err.clone();
                err
            }
            State::Failed { error, .. } => error.clone(),
        }
    }
}

/// ENOSPC and EDQUOT are [`KvError::NoSpace`]; other I/O errors are backend
/// failures.
fn io_error(e: io::Error) -> KvError {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => KvError::NoSpace(e.to_string()),
        _ => KvError::Backend(format!("I/O error: {e}")),
    }
}

/// redb's file backend, counting fsyncs (what group commit saves).
#[derive(Debug)]
struct CountingFile {
    file: redb::backends::FileBackend,
    syncs: Arc<AtomicU64>,
}

impl redb::StorageBackend for CountingFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.file.read(offset, len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write(offset, data)
    }
}

/// Opens (creating or repairing) the file and its table; `syncs` counts
/// the handle's fsyncs.
fn open_db(path: &Path, syncs: &Arc<AtomicU64>) -> Result<Database> {
    let fail = |e: redb::Error| match e {
        redb::Error::DatabaseAlreadyOpen => {
            KvError::Unavailable(format!("{} is still held by an earlier handle", path.display()))
        }
        redb::Error::Io(io) => match io_error(io) {
            KvError::NoSpace(m) => KvError::NoSpace(format!("open {}: {m}", path.display())),
            other => KvError::Backend(format!("open {}: {other}", path.display())),
        },
        other => KvError::Backend(format!("open {}: {other}", path.display())),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| fail(e.into()))?;
    let file = redb::backends::FileBackend::new(file).map_err(|e| fail(e.into()))?;
    let db = Database::builder()
        .create_with_backend(CountingFile { file, syncs: syncs.clone() })
        .map_err(|e| fail(e.into()))?;
    // Create the table up front so read transactions can always open it.
    let mut w = db.begin_write().map_err(|e| fail(e.into()))?;
    w.set_durability(Durability::Immediate);
    w.open_table(TABLE).map_err(|e| fail(e.into()))?;
    w.commit().map_err(|e| fail(e.into()))?;
    Ok(db)
}

impl RedbStore {
    /// One empty `Durability::Immediate` commit: makes every non-durable
    /// commit before it durable (one fsync).
    fn sync_once(&self) -> Result<()> {
        let db = self.handle()?;
        let mut w = db.begin_write().map_err(|e| self.failed(&db, e))?;
        w.set_durability(Durability::Immediate);
        w.commit().map_err(|e| self.failed(&db, e))
    }
}

impl KvStore for RedbStore {
    fn visible_seq(&self) -> CommitSeq {
        self.visible.load(Ordering::Acquire)
    }

    fn durable_seq(&self) -> CommitSeq {
        self.durable.load(Ordering::Acquire)
    }

    fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn check_durable(&self, seq: CommitSeq) -> Result<bool> {
        let (from, to) = *self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if (from..=to).contains(&seq) {
            return Err(KvError::Backend(format!(
                "commit {seq} was lost: {} failed before it was durable",
                self.path.display()
            )));
        }
        Ok(self.durable.load(Ordering::Acquire) >= seq)
    }

    fn sync(&self) -> Result<CommitSeq> {
        let target = self.visible.load(Ordering::Acquire);
        let mut syncing = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.check_durable(target)? {
                return Ok(self.durable.load(Ordering::Acquire));
            }
            if !*syncing {
                break;
            }
            // A sync runs; it may cover `target` (else lead the next one).
            syncing = self.synced.wait(syncing).unwrap_or_else(|p| p.into_inner());
        }
        *syncing = true;
        drop(syncing);
        // Everything visible now is covered: its redb commit came before this
        // sync's write transaction.
        let upto = self.visible.load(Ordering::Acquire);
        let result = self.sync_once();
        if result.is_ok() {
            self.durable.fetch_max(upto, Ordering::AcqRel);
        }
        *self.syncing.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.synced.notify_all();
        result.map(|()| upto)
    }

    fn begin(&self) -> Result<Box<dyn KvTxn + '_>> {
        let db = self.handle()?;
        let snap = db
            .begin_read()
            .map_err(|e| self.failed(&db, e))?
            .open_table(TABLE)
            .map_err(|e| self.failed(&db, e))?;
        Ok(Box::new(RedbTxn { store: self, db, snap, writes: Overlay::new(), reads: BTreeSet::new() }))
    }
}

struct RedbTxn<'a> {
    store: &'a RedbStore,
    /// Handle the snapshot was taken on (I/O errors are reported against it).
    db: Arc<Database>,
    /// Snapshot table; keeps its read transaction alive.
    snap: ReadOnlyTable<&'static [u8], &'static [u8]>,
    writes: Overlay,
    /// Keys read from the snapshot with `get`; validated at commit.
    reads: BTreeSet<Vec<u8>>,
}

impl RedbTxn<'_> {
    fn fail(&self, e: impl Into<redb::Error>) -> KvError {
        self.store.failed(&self.db, e)
    }

    fn snap_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.snap.get(key).map_err(|e| self.fail(e))?;
        Ok(v.map(|g| g.value().to_vec()))
    }
}

impl KvTxn for RedbTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        key::validate(key)?;
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        self.reads.insert(key.to_vec());
        self.snap_get(key)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        buffer_write(&mut self.writes, key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        buffer_write(&mut self.writes, key, None)
    }

    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>> {
        let Some(range) = scan_bounds(start, end, limit) else {
            return Ok(Vec::new());
        };
        let (store, db) = (self.store, &self.db);
        let base = self
            .snap
            .range::<&[u8]>(range)
            .map_err(|e| store.failed(db, e))?
            .map(|item| {
                let (k, v) = item.map_err(|e| store.failed(db, e))?;
                Ok((k.value().to_vec(), v.value().to_vec()))
            });
        merge_scan(base, &self.writes, range, limit)
    }

    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>> {
        let Some(range) = scan_bounds(start, end, limit) else {
            return Ok(Vec::new());
        };
        // The value guards are dropped unread: nothing of a value is copied.
        let (store, db) = (self.store, &self.db);
        let base = self
            .snap
            .range::<&[u8]>(range)
            .map_err(|e| store.failed(db, e))?
            .map(|item| {
                let (k, _) = item.map_err(|e| store.failed(db, e))?;
                Ok(k.value().to_vec())
            });
        merge_scan_keys(base, &self.writes, range, limit)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let store = self.store;
        let seq = self.commit_visible()?;
        if !store.check_durable(seq)? {
            store.sync()?;
        }
        Ok(())
    }

    fn commit_visible(self: Box<Self>) -> Result<CommitSeq> {
        if self.writes.is_empty() {
            return Ok(0);
        }
        if let Some(e) = self.store.writes_refused(&self.db) {
            return Err(e);
        }
        let mut w = self.db.begin_write().map_err(|e| self.fail(e))?;
        // Durable with the next sync (group commit, see the module docs).
        w.set_durability(Durability::None);
        {
            let mut table = w.open_table(TABLE).map_err(|e| self.fail(e))?;
            let checked = self
                .reads
                .iter()
                .chain(self.writes.keys().filter(|k| !self.reads.contains(*k)));
            for k in checked {
                let before = self.snap.get(k.as_slice()).map_err(|e| self.fail(e))?;
                let now = table.get(k.as_slice()).map_err(|e| self.fail(e))?;
                if before.as_ref().map(|g| g.value()) != now.as_ref().map(|g| g.value()) {
                    log::debug!("redb: conflict on key {:02x?}", &k[..k.len().min(32)]);
                    drop(now);
                    drop(table);
                    w.abort().map_err(|e| self.fail(e))?;
                    return Err(KvError::Conflict);
                }
            }
            for (k, v) in &self.writes {
                match v {
                    Some(v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(|e| self.fail(e))?;
                    }
                    None => {
                        table.remove(k.as_slice()).map_err(|e| self.fail(e))?;
                    }
                }
            }
        }
        w.commit().map_err(|e| self.fail(e))?;
        // After the redb commit: a sync that reads this sequence begins its
        // write transaction after this commit and so covers it.
        Ok(self.store.visible.fetch_add(1, Ordering::AcqRel) + 1)
    }
}

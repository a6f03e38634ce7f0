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
//!   (else [`KvError::Conflict`]), applies the overlay and commits with
//!   `Durability::Immediate` (fsync before returning). Validation and apply
//!   happen under the single writer, so they are atomic with respect to other
//!   commits. Comparing values instead of versions means an A→B→A change is not
//!   a conflict, which is still serializable for point reads.
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
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadOnlyTable, ReadableTable, TableDefinition};

use crate::merge::{bounds, merge_scan, merge_scan_keys, Overlay};
use crate::{key, KvError, KvPair, KvStore, KvTxn, Result};

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
        let db = Arc::new(open_db(path).map_err(|e| match e {
            // Only the reopen path waits for the file to be let go.
            KvError::Unavailable(_) => {
                KvError::Backend(format!("open {}: already open (is another server using it?)", path.display()))
            }
            e => e,
        })?);
        log::debug!("redb: opened {}", path.display());
        let state = State::Open { db, opened: Instant::now(), refuse_writes: None };
        Ok(Self { path: path.to_path_buf(), state: RwLock::new(state), reopening: Mutex::new(()) })
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
        match open_db(&self.path) {
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

/// Opens (creating or repairing) the file and its table.
fn open_db(path: &Path) -> Result<Database> {
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
    let db = Database::create(path).map_err(|e| fail(e.into()))?;
    // Create the table up front so read transactions can always open it.
    let mut w = db.begin_write().map_err(|e| fail(e.into()))?;
    w.set_durability(Durability::Immediate);
    w.open_table(TABLE).map_err(|e| fail(e.into()))?;
    w.commit().map_err(|e| fail(e.into()))?;
    Ok(db)
}

impl KvStore for RedbStore {
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
        key::validate(key)?;
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        key::validate(key)?;
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }

    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>> {
        let Some(range) = bounds(start, end) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
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
        let Some(range) = bounds(start, end) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
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
        if self.writes.is_empty() {
            return Ok(());
        }
        if let Some(e) = self.store.writes_refused(&self.db) {
            return Err(e);
        }
        let mut w = self.db.begin_write().map_err(|e| self.fail(e))?;
        w.set_durability(Durability::Immediate);
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
        w.commit().map_err(|e| self.fail(e))
    }
}

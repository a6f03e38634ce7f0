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

use std::collections::BTreeSet;
use std::path::Path;

use redb::{Database, Durability, ReadOnlyTable, ReadableTable, TableDefinition};

use crate::merge::{bounds, merge_scan, merge_scan_keys, Overlay};
use crate::{key, KvError, KvPair, KvStore, KvTxn, Result};

/// The single table holding all keys.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// [`KvStore`] backed by one redb file. One process may open a file at a
/// time (redb locks it).
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if missing. After an
    /// unclean shutdown redb repairs the file here, which may take a while.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let db = Database::create(path)
            .map_err(|e| KvError::Backend(format!("open {}: {e}", path.display())))?;
        // Create the table up front so read transactions can always open it.
        let mut w = db.begin_write().map_err(KvError::backend)?;
        w.set_durability(Durability::Immediate);
        w.open_table(TABLE).map_err(KvError::backend)?;
        w.commit().map_err(KvError::backend)?;
        log::debug!("redb: opened {}", path.display());
        Ok(Self { db })
    }
}

impl KvStore for RedbStore {
    fn begin(&self) -> Result<Box<dyn KvTxn + '_>> {
        let snap = self
            .db
            .begin_read()
            .map_err(KvError::backend)?
            .open_table(TABLE)
            .map_err(KvError::backend)?;
        Ok(Box::new(RedbTxn {
            db: &self.db,
            snap,
            writes: Overlay::new(),
            reads: BTreeSet::new(),
        }))
    }
}

struct RedbTxn<'a> {
    db: &'a Database,
    /// Snapshot table; keeps its read transaction alive.
    snap: ReadOnlyTable<&'static [u8], &'static [u8]>,
    writes: Overlay,
    /// Keys read from the snapshot with `get`; validated at commit.
    reads: BTreeSet<Vec<u8>>,
}

impl RedbTxn<'_> {
    fn snap_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.snap.get(key).map_err(KvError::backend)?;
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
        let base = self
            .snap
            .range::<&[u8]>(range)
            .map_err(KvError::backend)?
            .map(|item| {
                let (k, v) = item.map_err(KvError::backend)?;
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
        let base = self
            .snap
            .range::<&[u8]>(range)
            .map_err(KvError::backend)?
            .map(|item| {
                let (k, _) = item.map_err(KvError::backend)?;
                Ok(k.value().to_vec())
            });
        merge_scan_keys(base, &self.writes, range, limit)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let mut w = self.db.begin_write().map_err(KvError::backend)?;
        w.set_durability(Durability::Immediate);
        {
            let mut table = w.open_table(TABLE).map_err(KvError::backend)?;
            let checked = self
                .reads
                .iter()
                .chain(self.writes.keys().filter(|k| !self.reads.contains(*k)));
            for k in checked {
                let before = self.snap.get(k.as_slice()).map_err(KvError::backend)?;
                let now = table.get(k.as_slice()).map_err(KvError::backend)?;
                if before.as_ref().map(|g| g.value()) != now.as_ref().map(|g| g.value()) {
                    log::debug!("redb: conflict on key {:02x?}", &k[..k.len().min(32)]);
                    drop(now);
                    drop(table);
                    w.abort().map_err(KvError::backend)?;
                    return Err(KvError::Conflict);
                }
            }
            for (k, v) in &self.writes {
                match v {
                    Some(v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(KvError::backend)?;
                    }
                    None => {
                        table.remove(k.as_slice()).map_err(KvError::backend)?;
                    }
                }
            }
        }
        w.commit().map_err(KvError::backend)
    }
}

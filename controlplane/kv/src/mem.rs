//! In-memory multi-version backend for tests. It behaves like TiKV's
//! optimistic transactions (snapshot reads at a start timestamp, version
//! checks at commit), so it really produces conflicts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use crate::merge::{buffer_write, merge_scan, merge_scan_keys, scan_bounds, Overlay};
use crate::{key, KvError, KvPair, KvStore, KvTxn, Result};

/// In-memory [`KvStore`]; nothing survives the process.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Versions per key, ascending by commit timestamp; `None` = deleted.
    data: BTreeMap<Vec<u8>, Vec<Version>>,
    /// Timestamp of the last commit; new snapshots read at this timestamp.
    last_ts: u64,
    /// Snapshot timestamps of open transactions (with counts), so old
    /// versions are kept exactly as long as someone can read them.
    active: BTreeMap<u64, usize>,
}

struct Version {
    ts: u64,
    value: Option<Vec<u8>>,
}

impl Inner {
    fn read_at(&self, key: &[u8], ts: u64) -> Option<&[u8]> {
        self.data.get(key).and_then(|vs| visible(vs, ts))
    }

    fn release(&mut self, ts: u64) {
        if let Some(n) = self.active.get_mut(&ts) {
            *n -= 1;
            if *n == 0 {
                self.active.remove(&ts);
            }
        }
    }

    /// Drops versions of `key` that no open or future snapshot can see.
    fn prune(&mut self, key: &[u8]) {
        let horizon = self.active.keys().next().copied().unwrap_or(self.last_ts);
        let Some(vs) = self.data.get_mut(key) else {
            return;
        };
        if let Some(keep_from) = vs.iter().rposition(|v| v.ts <= horizon) {
            vs.drain(..keep_from);
        }
        if vs.len() == 1 && vs[0].value.is_none() && vs[0].ts <= horizon {
            self.data.remove(key);
        }
    }
}

fn visible(versions: &[Version], ts: u64) -> Option<&[u8]> {
    versions
        .iter()
        .rev()
        .find(|v| v.ts <= ts)
        .and_then(|v| v.value.as_deref())
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state is updated without panicking paths, so a poisoned lock
        // (a panic elsewhere while holding it) still guards consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn version_count(&self) -> usize {
        self.lock().data.values().map(Vec::len).sum()
    }
}

impl KvStore for MemStore {
    fn begin(&self) -> Result<Box<dyn KvTxn + '_>> {
        let mut inner = self.lock();
        let start_ts = inner.last_ts;
        *inner.active.entry(start_ts).or_insert(0) += 1;
        Ok(Box::new(MemTxn {
            store: self,
            start_ts,
            writes: Overlay::new(),
            reads: BTreeSet::new(),
            released: false,
        }))
    }
}

struct MemTxn<'a> {
    store: &'a MemStore,
    start_ts: u64,
    writes: Overlay,
    reads: BTreeSet<Vec<u8>>,
    released: bool,
}

impl KvTxn for MemTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        key::validate(key)?;
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        self.reads.insert(key.to_vec());
        Ok(self
            .store
            .lock()
            .read_at(key, self.start_ts)
            .map(<[u8]>::to_vec))
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
        let inner = self.store.lock();
        let ts = self.start_ts;
        let base = inner
            .data
            .range::<[u8], _>(range)
            .filter_map(|(k, vs)| visible(vs, ts).map(|v| Ok((k.clone(), v.to_vec()))));
        merge_scan(base, &self.writes, range, limit)
    }

    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>> {
        let Some(range) = scan_bounds(start, end, limit) else {
            return Ok(Vec::new());
        };
        let inner = self.store.lock();
        let ts = self.start_ts;
        let base = inner
            .data
            .range::<[u8], _>(range)
            .filter(|(_, vs)| visible(vs, ts).is_some())
            .map(|(k, _)| Ok(k.clone()));
        merge_scan_keys(base, &self.writes, range, limit)
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let mut inner = self.store.lock();
        inner.release(self.start_ts);
        self.released = true;
        if self.writes.is_empty() {
            return Ok(());
        }
        let start_ts = self.start_ts;
        let changed = |k: &Vec<u8>| {
            inner
                .data
                .get(k)
                .and_then(|vs| vs.last())
                .is_some_and(|v| v.ts > start_ts)
        };
        if self.reads.iter().chain(self.writes.keys()).any(changed) {
            log::debug!("mem: conflict for txn at ts {start_ts}");
            return Err(KvError::Conflict);
        }
        inner.last_ts += 1;
        let ts = inner.last_ts;
        for (k, value) in std::mem::take(&mut self.writes) {
            inner
                .data
                .entry(k.clone())
                .or_default()
                .push(Version { ts, value });
            inner.prune(&k);
        }
        Ok(())
    }
}

impl Drop for MemTxn<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.store.lock().release(self.start_ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &MemStore, k: &[u8], v: Option<&[u8]>) {
        let mut t = s.begin().unwrap();
        match v {
            Some(v) => t.put(k, v).unwrap(),
            None => t.delete(k).unwrap(),
        }
        t.commit().unwrap();
    }

    #[test]
    fn old_versions_are_pruned() {
        let s = MemStore::new();
        for i in 0..100u32 {
            put(&s, b"k", Some(&i.to_be_bytes()));
        }
        assert_eq!(s.version_count(), 1);
        put(&s, b"k", None);
        assert_eq!(s.version_count(), 0, "tombstone without readers is dropped");
    }

    #[test]
    fn versions_kept_for_open_snapshot() {
        let s = MemStore::new();
        put(&s, b"k", Some(b"old"));
        let mut reader = s.begin().unwrap();
        put(&s, b"k", Some(b"new"));
        put(&s, b"k", None);
        assert_eq!(reader.get(b"k").unwrap(), Some(b"old".to_vec()));
        drop(reader);
        assert!(s.inner.lock().unwrap().active.is_empty());
        put(&s, b"other", Some(b"x"));
        put(&s, b"k", None);
        assert_eq!(s.version_count(), 1);
    }
}

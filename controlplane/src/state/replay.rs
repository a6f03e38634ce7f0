//! Replay: a fresh [`StateStore`] built from the state layer's records, so
//! another MDS node can take the state over. The records are first folded
//! into the rows a KV holds ([`fold`]: last write wins, deletes remove),
//! or read from a KV's state rows ([`StateStore::restore_from_kv`]); the
//! store is then built from the rows in dependency order: clients, their
//! sessions, states (with their stateids and seqids as recorded, in the
//! shard each stateid names), byte-range locks, delegation records. Every
//! index (by stateid, inode, client, owner; share counts; the counters
//! behind the caps and SEQUENCE's revoked flag) is rebuilt by the same
//! code that keeps it for new states (`StateStore::index_state`).

use super::records::{self, Record};
use super::*;
use crate::keyspace::{STATE, STATE_BYTE_LOCKS, STATE_CLIENT, STATE_SESSION};
use pnfs_kv::KvStore;
use std::collections::BTreeMap;

/// The state layer's KV rows, key to value.
pub type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

/// Applies `changes`, in order, to `rows` as a KV would.
pub fn fold<'c>(rows: &mut Rows, changes: impl IntoIterator<Item = &'c StateChange>) {
    for r in changes.into_iter().flat_map(records::writes) {
        match r {
            Record::Put { key, value } => {
                rows.insert(key, value);
            }
            Record::Delete { key } => {
                // A session's slot rows go with it (`records::write_all`).
                if let Ok(StateChange::SessionDestroyed { id }) = records::decode(&Record::Delete { key: key.clone() }) {
                    let slots = records::slots_prefix(&id);
                    rows.retain(|k, _| !k.starts_with(&slots));
                }
                rows.remove(&key);
            }
        }
    }
}

/// Rows read per KV scan while restoring (a few in tests, so they page).
const SCAN_PAGE: usize = if cfg!(test) { 7 } else { 4096 };

/// Every row under `prefix`, a page at a time, to `each`.
pub(super) fn scan_all(txn: &mut dyn pnfs_kv::KvTxn, prefix: &[u8], mut each: impl FnMut(Vec<u8>, Vec<u8>)) -> pnfs_kv::Result<()> {
    let end = pnfs_kv::prefix_end(prefix);
    let mut start = prefix.to_vec();
    loop {
        let page = txn.scan(&start, end.as_deref(), SCAN_PAGE)?;
        let full = page.len() == SCAN_PAGE;
        if let Some((last, _)) = page.last() {
            start = pnfs_kv::key::successor(last);
        }
        page.into_iter().for_each(|(k, v)| each(k, v));
        if !full {
            return Ok(());
        }
    }
}

pub(super) fn inconsistent(why: String) -> RecordError {
    RecordError::Inconsistent(why)
}

impl StateStore {
    /// A store holding the state `changes` (a journal, oldest first) leave.
    pub fn replay<'c>(epoch: u32, caps: StateCaps, changes: impl IntoIterator<Item = &'c StateChange>) -> Result<StateStore, RecordError> {
        let mut rows = Rows::new();
        fold(&mut rows, changes);
        Self::restore(epoch, caps, rows.iter().map(|(k, v)| (&k[..], &v[..])))
    }

    /// A store holding the state a KV's state rows say (a node taking over).
    pub fn restore_from_kv(epoch: u32, caps: StateCaps, kv: &dyn KvStore) -> Result<StateStore, Box<dyn std::error::Error + Send + Sync>> {
        let mut txn = kv.begin()?;
        let mut rows = Rows::new();
        for prefix in [STATE_CLIENT, STATE_SESSION, STATE, STATE_BYTE_LOCKS] {
            scan_all(&mut *txn, &[prefix], |k, v| {
                rows.insert(k, v);
            })?;
        }
        Ok(Self::restore(epoch, caps, rows.iter().map(|(k, v)| (&k[..], &v[..])))?)
    }

    /// A store holding what the state `rows` say, journal off (the caller
    /// turns it on). `epoch` is the one the stateids were minted under (a
    /// cluster's, shared by its nodes); grace is not entered again. Rows
    /// that do not decode, or do not fit together, are an error: the store
    /// is not half built.
    pub fn restore<'r>(epoch: u32, caps: StateCaps, rows: impl IntoIterator<Item = (&'r [u8], &'r [u8])>) -> Result<StateStore, RecordError> {
        let st = StateStore::new(epoch, vec![], Duration::ZERO, caps);
        st.load(rows)?;
        Ok(st)
    }

    /// Adds what the state `rows` say to this store (all of a fresh
    /// store's, or one client's taken over from another node: `cluster.rs`),
    /// in dependency order: clients, sessions (their slot tables adopted:
    /// each recorded seqid a lower bound), slots, states, byte-range locks
    /// (added to the file's), delegation records. A client already here is
    /// an error.
    pub(super) fn load<'r>(&self, rows: impl IntoIterator<Item = (&'r [u8], &'r [u8])>) -> Result<(), RecordError> {
        let (mut clients, mut sessions, mut slots, mut states, mut delegs, mut locks) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (key, value) in rows {
            match records::decode_row(key, value)? {
                StateChange::ClientPut { rec } => clients.push(rec),
                StateChange::SessionCreated { rec } => sessions.push(rec),
                StateChange::SlotKept { session, slot, seqid, reply } => slots.push((session, slot, seqid, reply)),
                StateChange::StatePut { other, rec } => states.push((other, rec)),
                StateChange::DelegPut { other, rec } => delegs.push((other, rec)),
                StateChange::ByteLocks { ino, locks: l, .. } => locks.push((ino, l)),
                // Reclaim after a restart: the MDS reads these at boot.
                StateChange::ClientConfirmed { .. } => {}
                // An index derived from the states (`xnode.rs`), rebuilt with them.
                StateChange::FileShare { .. } => {}
                other => return Err(inconsistent(format!("a row that is a delete: {other:?}"))),
            }
        }
        let st = self;
        let mut fx = Effects::default();
        {
            let mut reg = lock(&st.registry);
            for c in clients {
                if st.client(c.clientid).is_ok() {
                    return Err(inconsistent(format!("client {:x} twice", c.clientid)));
                }
                let entry = reg.table.insert(c.to_client());
                st.index_client(&mut reg.per_addr, &entry);
            }
        }
        for s in sessions {
            st.restore_session(&s)?;
        }
        for (id, slot, seqid, reply) in slots {
            let s = st.session(&id).ok_or_else(|| inconsistent(format!("slot {slot} of unknown session {id:02x?}")))?;
            if !lock(&s.slots).restore(slot, seqid, reply.map(Arc::new)) {
                return Err(inconsistent(format!("slot {slot} past session {id:02x?}'s slots")));
            }
        }
        for (other, rec) in states {
            let client = st.client(rec.clientid).map_err(|_| inconsistent(format!("state {other:02x?} of unknown client {:x}", rec.clientid)))?;
            if other[11] as usize % FILE_SHARDS != mix(rec.ino) % FILE_SHARDS {
                return Err(inconsistent(format!("state {other:02x?} names another shard than its file {}", rec.ino)));
            }
            let mut guard = st.file_shard(rec.ino);
            st.index_state(&mut guard, &client, other, rec, &mut fx).map_err(|e| inconsistent(format!("state {other:02x?} refused: {e:?}")))?;
        }
        for (ino, l) in locks {
            st.file_shard(ino).files.entry(ino).or_default().locks.extend(l);
        }
        for (other, d) in delegs {
            match st.get(&other) {
                Some(StateRec { kind: StateKind::Deleg { write }, clientid, ino, .. }) if write == d.write && clientid == d.clientid && ino == d.ino => {
                    st.delegs().insert(other, d)
                }
                _ => return Err(inconsistent(format!("delegation record {other:02x?} without its state"))),
            }
        }
        Ok(())
    }

    /// A session as recorded: a slot table of the recorded size, adopted
    /// (a slot's recorded seqid is a lower bound: see `SlotTable::adopted`),
    /// no connection bound yet.
    fn restore_session(&self, s: &SessionRecord) -> Result<(), RecordError> {
        let entry = self.client(s.clientid).map_err(|_| inconsistent(format!("session {:02x?} of unknown client {:x}", s.id, s.clientid)))?;
        if s.fore.max_requests == 0 || self.session(&s.id).is_some() {
            return Err(inconsistent(format!("session {:02x?}: no slot, or twice", s.id)));
        }
        let session = Arc::new(Session {
            id: s.id,
            clientid: s.clientid,
            fore: s.fore,
            back: s.back,
            cb_program: s.cb_program,
            minor: s.minor,
            slots: Mutex::new(SlotTable::adopted(s.fore.max_requests)),
            back_conns: Mutex::new(vec![]),
            ext: (),
        });
        entry.lock().sessions.push(s.id);
        self.sessions.at(s.id[0] as usize).insert(s.id, session);
        Ok(())
    }
}

//! A cluster's client state in the shared KV (`[mds.cluster]`): every
//! change written through before the reply that depends on it, and a
//! client taken over ("adopted") by whichever node it talks to next.
//!
//! - Write-through ([`StateStore::write_through`]): a COMPOUND's records
//!   (the `Effects` of all its state calls, gathered: [`Gather`]) and the
//!   row of the slot it ran on go in one KV transaction, with the owner
//!   row (`w` clientid -> node id) of every client they touch: absent, it
//!   is written (a client new here); another node's id there means the
//!   client was adopted elsewhere: nothing is written, this node drops its
//!   copy ([`StateStore::drop_local`]) and the COMPOUND is answered
//!   NFS4ERR_DELAY (if the client is still here, its retry adopts it back).
//!   A failed write does the same: the local copy may be ahead of the KV,
//!   so it goes, and the client's retry reloads what the KV holds.
//! - Adoption ([`StateStore::adopt`]): a SEQUENCE, BIND_CONN_TO_SESSION or
//!   DESTROY_SESSION of a session this node does not hold, a
//!   CREATE_SESSION of a client ID it does not hold, or an EXCHANGE_ID of
//!   an owner it does not know loads that one client (record, sessions with
//!   their slots, states, byte-range locks) from the KV, writing the owner
//!   row in the same transaction; its lease clock starts then.
//!
//! Cost: the KV's state rows are keyed by session, stateid and file, not
//! by client, so adopting one client scans every `e`, `s` and `b` row (and
//! an EXCHANGE_ID of an unknown owner every `c` row) once: O(the cluster's
//! state) per adoption, which happens once per client and move (an
//! EXCHANGE_ID scans only for an owner confirmed somewhere: one with an `O`
//! row). An index by client would make it O(the client's).

use super::records;
use super::replay::scan_all;
use super::*;
use crate::keyspace::{self, STATE, STATE_BYTE_LOCKS, STATE_CLIENT, STATE_OWNER, STATE_SESSION};
use pnfs_kv::{KvError, KvStore, KvTxn};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};

/// Conflicting transactions are retried this many times.
const WRITE_RETRIES: u32 = 8;

/// Why a cluster write did not happen.
#[derive(Debug)]
pub enum WriteError {
    Kv(KvError),
    /// The client is held by node `node` now.
    Moved { clientid: u64, node: u32 },
}

impl From<KvError> for WriteError {
    fn from(e: KvError) -> Self {
        WriteError::Kv(e)
    }
}

/// What an adoption looks for.
#[derive(Debug, Clone, Copy)]
pub enum Adopt<'a> {
    Session(&'a SessionId),
    Client(u64),
    Owner(&'a [u8]),
}

fn owner_key(clientid: u64) -> Vec<u8> {
    keyspace::with_u64(STATE_OWNER, clientid)
}

/// The clients `changes` touch (their owner rows are checked), with
/// `also` (the COMPOUND's session's client).
pub fn clients_of(changes: &[StateChange], also: Option<u64>) -> Vec<u64> {
    let mut ids: Vec<u64> = also.into_iter().collect();
    for c in changes {
        let id = match c {
            StateChange::ClientPut { rec } => rec.clientid,
            StateChange::ClientPurged { clientid } => *clientid,
            StateChange::StatePut { rec, .. } => rec.clientid,
            StateChange::SessionCreated { rec } => rec.clientid,
            StateChange::DelegPut { rec, .. } => rec.clientid,
            StateChange::FileShare { clientid, .. } => *clientid,
            _ => continue,
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

thread_local! {
    /// The COMPOUND running on this thread gathers its Effects here
    /// (keyed by its MDS), to write them in one transaction after its last
    /// operation: see [`Gather`].
    static GATHERED: RefCell<Option<(usize, Effects)>> = const { RefCell::new(None) };
}

/// The Effects of one COMPOUND's state calls, gathered while it runs on
/// this thread (a COMPOUND never leaves its thread: the dispatcher runs it
/// to the end synchronously), so its records are written once, before its
/// reply, and its data-server effects follow the write.
pub struct Gather(());

impl Gather {
    /// Starts gathering for the MDS known by `key` (its address).
    pub fn begin(key: usize) -> Gather {
        GATHERED.with(|g| *g.borrow_mut() = Some((key, Effects::default())));
        Gather(())
    }

    /// Adds `fx` to the gathering of MDS `key` on this thread; gives it back
    /// when there is none (a call outside a COMPOUND: the lease reaper, a
    /// recall's thread).
    pub fn offer(key: usize, fx: Effects) -> Option<Effects> {
        GATHERED.with(|g| match &mut *g.borrow_mut() {
            Some((k, all)) if *k == key => {
                all.merge(fx);
                None
            }
            _ => Some(fx),
        })
    }

    /// What was gathered.
    pub fn end(self) -> Effects {
        GATHERED.with(|g| g.borrow_mut().take()).map(|(_, fx)| fx).unwrap_or_default()
    }
}

impl Drop for Gather {
    fn drop(&mut self) {
        GATHERED.with(|g| g.borrow_mut().take());
    }
}

impl Effects {
    /// Appends `other`'s effects to these.
    pub fn merge(&mut self, other: Effects) {
        let Effects { ds_allow, ds_revoke, recalls, size_from_ds, records, sessions_gone } = other;
        self.ds_allow.extend(ds_allow);
        self.ds_revoke.extend(ds_revoke);
        self.recalls.extend(recalls);
        self.size_from_ds.extend(size_from_ds);
        self.records.extend(records);
        self.sessions_gone.extend(sessions_gone);
    }
}

impl StateStore {
    /// Writes `changes` in one transaction, checking (and claiming when
    /// absent) the owner row of each of `clients` for `node`; a purged
    /// client's owner row goes. Returns the rows written. On any error
    /// nothing is written and the local copies of `clients` are dropped
    /// (see the module docs): the caller answers NFS4ERR_DELAY.
    pub fn write_through(&self, kv: &dyn KvStore, node: u32, changes: &[StateChange], clients: &[u64]) -> Result<usize, WriteError> {
        let purged: HashSet<u64> = changes.iter().filter_map(|c| if let StateChange::ClientPurged { clientid } = c { Some(*clientid) } else { None }).collect();
        let r = pnfs_kv::transact(kv, WRITE_RETRIES, |txn: &mut dyn KvTxn| {
            for &id in clients {
                let key = owner_key(id);
                match txn.get(&key)? {
                    Some(v) if v[..] != node.to_be_bytes()[..] => {
                        let other = v.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
                        return Err(WriteError::Moved { clientid: id, node: other });
                    }
                    Some(_) if !purged.contains(&id) => {}
                    _ if purged.contains(&id) => txn.delete(&key)?,
                    _ => txn.put(&key, &node.to_be_bytes())?,
                }
            }
            Ok(records::write_all(txn, changes)?)
        });
        if let Err(e) = &r {
            match e {
                WriteError::Moved { clientid, node } => log::info!("client {clientid:x} is held by node {node} now: dropping this node's copy"),
                WriteError::Kv(e) => log::warn!("writing client state to the KV: {e}: answering NFS4ERR_DELAY, the clients' copies here are dropped"),
            }
            for &id in clients {
                self.drop_local(id);
            }
        }
        r
    }

    /// Forgets a client here, writing nothing and revoking nothing on the
    /// data servers (its state lives on in the KV, for whichever node
    /// adopts it). Returns its sessions (their callback bookkeeping goes).
    pub fn drop_local(&self, clientid: u64) -> Vec<SessionId> {
        let mut fx = Effects::default();
        let mut reg = lock(&self.registry);
        let (table, mut hooks) = reg.engine(self, None, &mut fx);
        table.purge_with(&mut clients::MdsSessions(&self.sessions), &mut hooks, clientid);
        fx.sessions_gone
    }

    /// Whether this node holds a client of `owner`.
    pub fn knows_owner(&self, owner: &[u8]) -> bool {
        !lock(&self.registry).table.of_owner(owner).is_empty()
    }

    /// Loads the client `what` names from the KV, claiming it for `node`
    /// (its owner row, in the same transaction). Ok(None): the KV does not
    /// know it either (the caller answers as it would have). A client this
    /// node holds already is not loaded again. Its I/O stateids on files
    /// it holds a layout of are to be allowed on the data servers again
    /// (`fx.ds_allow`), from this node.
    pub fn adopt(&self, kv: &dyn KvStore, node: u32, what: Adopt<'_>, fx: &mut Effects) -> Result<Option<u64>, Box<dyn std::error::Error + Send + Sync>> {
        // One adoption at a time: two COMPOUNDs of one client arriving
        // together load it once.
        let _one = lock(&self.adopting);
        let rows = pnfs_kv::transact(kv, WRITE_RETRIES, |txn: &mut dyn KvTxn| -> Result<_, KvError> {
            let Some(clientid) = find_client(txn, what)? else { return Ok(None) };
            let mut rows = BTreeMap::new();
            if self.client(clientid).is_ok() {
                // Held here, but not this session (made on another node):
                // the session and its slots only.
                if let Adopt::Session(id) = what {
                    if self.session(id).is_none() {
                        scan_all(txn, &keyspace::with_bytes(STATE_SESSION, id), |k, v| {
                            rows.insert(k, v);
                        })?;
                    }
                }
                return Ok(Some((clientid, rows)));
            }
            let Some(client) = txn.get(&keyspace::with_u64(STATE_CLIENT, clientid))? else { return Ok(None) };
            rows.insert(keyspace::with_u64(STATE_CLIENT, clientid), client);
            // Its sessions, then the slot rows under them (they sort after
            // their session's row).
            let mut sessions: Vec<Vec<u8>> = vec![];
            scan_all(txn, &[STATE_SESSION], |k, v| {
                let mine = match records::decode_row(&k, &v) {
                    Ok(StateChange::SessionCreated { rec }) => rec.clientid == clientid,
                    Ok(StateChange::SlotKept { .. }) => sessions.iter().any(|s| k.starts_with(s)),
                    _ => false,
                };
                if mine {
                    if k.len() == 17 {
                        sessions.push(k.clone());
                    }
                    rows.insert(k, v);
                }
            })?;
            scan_all(txn, &[STATE], |k, v| match records::decode_row(&k, &v) {
                Ok(StateChange::StatePut { rec, .. }) if rec.clientid == clientid => {
                    rows.insert(k, v);
                }
                Ok(StateChange::DelegPut { rec, .. }) if rec.clientid == clientid => {
                    rows.insert(k, v);
                }
                _ => {}
            })?;
            scan_all(txn, &[STATE_BYTE_LOCKS], |k, v| {
                if matches!(records::decode_row(&k, &v), Ok(StateChange::ByteLocks { clientid: of, .. }) if of == clientid) {
                    rows.insert(k, v);
                }
            })?;
            txn.put(&owner_key(clientid), &node.to_be_bytes())?;
            Ok(Some((clientid, rows)))
        })?;
        let Some((clientid, rows)) = rows else { return Ok(None) };
        if rows.is_empty() {
            return Ok(Some(clientid));
        }
        if let Err(e) = self.load(rows.iter().map(|(k, v)| (&k[..], &v[..]))) {
            // Not half loaded: the client goes whole (the KV still has it).
            self.drop_local(clientid);
            return Err(Box::new(e));
        }
        for key in rows.keys().filter(|k| k[0] == STATE && k.len() == 13) {
            let Ok(other) = <StateOther>::try_from(&key[1..]) else { continue };
            let sh = self.shard_of(&other);
            if let Some(rec) = sh.states.get(&other) {
                let sid = stateid(&other, rec.seqid);
                self.allow_if_layout(&sh, clientid, rec.ino, &sid, fx);
            }
        }
        log::info!("client {clientid:x} adopted from the KV ({} rows)", rows.len());
        Ok(Some(clientid))
    }
}

/// The client ID `what` names, from the KV.
fn find_client(txn: &mut dyn KvTxn, what: Adopt<'_>) -> Result<Option<u64>, KvError> {
    Ok(match what {
        Adopt::Client(id) => Some(id),
        Adopt::Session(id) => match txn.get(&keyspace::with_bytes(STATE_SESSION, id))? {
            Some(v) => match records::decode_row(&keyspace::with_bytes(STATE_SESSION, id), &v) {
                Ok(StateChange::SessionCreated { rec }) => Some(rec.clientid),
                _ => None,
            },
            None => None,
        },
        // An owner never confirmed anywhere (no `O` row: a new client) is
        // not looked for: most EXCHANGE_IDs scan nothing.
        Adopt::Owner(owner) if txn.get(&keyspace::with_bytes(keyspace::CLIENT_RECORD, owner))?.is_none() => None,
        Adopt::Owner(owner) => {
            // The confirmed record of the owner, else any.
            let mut found: Option<(bool, u64)> = None;
            scan_all(txn, &[STATE_CLIENT], |k, v| {
                if let Ok(StateChange::ClientPut { rec }) = records::decode_row(&k, &v) {
                    if rec.owner == owner && found.is_none_or(|(confirmed, _)| !confirmed) {
                        found = Some((rec.confirmed, rec.clientid));
                    }
                }
            })?;
            found.map(|(_, id)| id)
        }
    })
}

//! Conflicts between clients held by different cluster nodes: share
//! reservations, delegations and byte-range locks (`[mds.cluster]` only;
//! a single MDS never calls any of this).
//!
//! Each node's state tables hold only its own clients, so a conflict with a
//! client held by another node is decided on the KV, in ONE serializable
//! transaction at the moment the operation decides:
//!
//! - `f` ino clientid rows ([`Share`]): each client's share access and deny
//!   unions and delegation on a file. An OPEN reads the file's rows of
//!   clients held elsewhere, refuses (SHARE_DENIED, or DELAY while their
//!   delegations are recalled through their nodes) or writes its own row
//!   grown by what it asks, all in one transaction ([`StateStore::claim_open`]),
//!   before the local tables decide among this node's clients. A delegation
//!   the OPEN may get is claimed in the same transaction (one per OPEN, not
//!   two); the row is rewritten from the local tables with the COMPOUND's
//!   other records (`FileShare`), so a claim the local step did not use
//!   goes again before the reply.
//! - `b` ino clientid rows (already written with each client's records):
//!   a LOCK checks other nodes' clients' locks on the file and writes its
//!   own row with the new lock in one transaction ([`StateStore::claim_lock`]).
//! - `f` ino (9 bytes): the file's conflict version, read and bumped by
//!   every claim. KV scans are not conflict-checked (etcd compares only keys
//!   read with get or written), so two nodes adding rows for different
//!   clients would both commit; bumping one key makes one of them retry and
//!   see the other's row. Racing nodes so either both see the conflict or
//!   exactly one wins.
//!
//! Why rows in the KV and not per-inode ownership with leases: clients
//! already own their state per node and write it through; a file's share
//! is one small row per client, read in the same transaction that claims,
//! so no node has to be asked (and none may be dead when asked) and the KV's
//! serializability is the whole argument. Rows hold no node id: a client
//! moved by adoption keeps its rows, and its `w` row says where it is.
//!
//! Stale rows: a client whose node died and who never came back (no node
//! holds it: its `w` row names a node without a live `N` record, or this
//! node, which does not hold it) keeps its rows in the KV. A node that
//! finds such a client in a conflict notes the time; once the conflict is
//! still there an NFS lease later, the client has had a lease to come back
//! through any node and did not, so its lease ran out: its rows (client,
//! sessions, states, locks, shares, owner) are deleted from the KV
//! ([`StateStore::expire_stale`]) and the operation is tried again.
//!
//! Known gaps: a node still holding a copy of a client that moved to
//! another node (it drops the copy at its next write for that client, at
//! the latest when the client's lease runs out there) decides that client's
//! conflicts from its copy, not from the KV; and GETATTR does not ask a
//! write delegation held through another node (CB_GETATTR).

use super::records;
use super::replay::scan_all;
use super::*;
use crate::keyspace::{self, STATE, STATE_BYTE_LOCKS, STATE_CLIENT, STATE_FILE, STATE_OWNER, STATE_SESSION};
use pnfs_kv::{KvError, KvStore, KvTxn};
use pnfs_protocol::wire::OPEN4_SHARE_ACCESS_WRITE;
use pnfs_protocol::xdr::{Decoder, Encoder, XdrError};

/// Conflicting claims are retried this many times.
const CLAIM_RETRIES: u32 = 8;

pub const DELEG_NONE: u32 = 0;
pub const DELEG_READ: u32 = 1;
pub const DELEG_WRITE: u32 = 2;

/// One client's share of one file (an `f` row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// OPEN4_SHARE_ACCESS_* bits of its opens, together.
    pub access: u32,
    /// OPEN4_SHARE_DENY_* bits of its opens, together.
    pub deny: u32,
    /// [`DELEG_NONE`], [`DELEG_READ`] or [`DELEG_WRITE`].
    pub deleg: u32,
}

impl Share {
    pub fn is_empty(&self) -> bool {
        *self == Share::default()
    }

    pub(super) fn encode(&self, e: &mut Encoder) {
        e.put_u32(self.access);
        e.put_u32(self.deny);
        e.put_u32(self.deleg);
    }

    pub(super) fn decode(d: &mut Decoder<'_>) -> Result<Share, XdrError> {
        let (access, deny, deleg) = (d.get_u32()?, d.get_u32()?, d.get_u32()?);
        for (v, max) in [(access, 3), (deny, 3), (deleg, DELEG_WRITE)] {
            if v > max {
                return Err(XdrError::BadDiscriminant(v as i64));
            }
        }
        Ok(Share { access, deny, deleg })
    }

    /// Whether an open of another client for `access`/`deny` is refused by
    /// this one's share reservations (or refuses it).
    fn denies(&self, access: u32, deny: u32) -> bool {
        access & self.deny != 0 || deny & self.access != 0
    }

    /// Whether this delegation must be recalled before an open (or a change:
    /// `write`) by another client.
    fn deleg_blocks(&self, write: bool) -> bool {
        self.deleg == DELEG_WRITE || (self.deleg == DELEG_READ && write)
    }

    /// Whether this forbids another client a delegation (`write`: a write one).
    fn forbids_deleg(&self, write: bool) -> bool {
        self.deleg == DELEG_WRITE || self.access & OPEN4_SHARE_ACCESS_WRITE != 0 || (write && (self.access != 0 || self.deleg != DELEG_NONE))
    }
}

/// Key of a client's share row of a file.
pub fn share_key(ino: u64, clientid: u64) -> Vec<u8> {
    let mut k = keyspace::with_u64(STATE_FILE, ino);
    k.extend_from_slice(&clientid.to_be_bytes());
    k
}

/// Key of a file's conflict version.
fn version_key(ino: u64) -> Vec<u8> {
    keyspace::with_u64(STATE_FILE, ino)
}

fn locks_prefix(ino: u64) -> Vec<u8> {
    keyspace::with_u64(STATE_BYTE_LOCKS, ino)
}

fn bump_version(txn: &mut dyn KvTxn, ino: u64, seen: Option<Vec<u8>>) -> pnfs_kv::Result<()> {
    let n = seen.and_then(|v| pnfs_kv::key::decode_u64_be(&v)).unwrap_or(0);
    txn.put(&version_key(ino), &pnfs_kv::key::u64_be(n.wrapping_add(1)))
}

/// Why a claim was refused.
#[derive(Debug)]
pub enum Conflict {
    /// Share reservations of these clients, held elsewhere: NFS4ERR_SHARE_DENIED.
    Share { holders: Vec<u64> },
    /// Delegations of these clients, held elsewhere, to recall through
    /// their nodes (NFS4ERR_DELAY meanwhile).
    Deleg { holders: Vec<u64> },
    /// A byte-range lock of a client held elsewhere: NFS4ERR_DENIED.
    Lock(ByteLock),
    /// The KV failed: NFS4ERR_DELAY.
    Kv(KvError),
}

impl From<KvError> for Conflict {
    fn from(e: KvError) -> Self {
        Conflict::Kv(e)
    }
}

impl Conflict {
    /// Clients in the way (for [`StateStore::expire_stale`]).
    pub fn holders(&self) -> Vec<u64> {
        match self {
            Conflict::Share { holders } | Conflict::Deleg { holders } => holders.clone(),
            Conflict::Lock(l) => vec![l.clientid],
            Conflict::Kv(_) => vec![],
        }
    }
}

/// The `f` rows of `ino` of clients `others` accepts, and `mine`'s row.
fn share_rows(txn: &mut dyn KvTxn, ino: u64, mine: u64, mut others: impl FnMut(u64, Share)) -> pnfs_kv::Result<(Option<Vec<u8>>, Share)> {
    let (mut version, mut own) = (None, Share::default());
    scan_all(txn, &version_key(ino), |k, v| {
        if k.len() == 9 {
            version = Some(v);
            return;
        }
        match records::decode_row(&k, &v) {
            Ok(StateChange::FileShare { clientid, share, .. }) if clientid == mine => own = share,
            Ok(StateChange::FileShare { clientid, share, .. }) => others(clientid, share),
            _ => log::warn!("KV row {k:02x?} is not a file share; ignored"),
        }
    })?;
    Ok((version, own))
}

impl StateStore {
    /// Whether `clientid` is held by this node (its conflicts are decided
    /// by the local tables, under the file's shard lock).
    fn holds(&self, clientid: u64) -> bool {
        self.client(clientid).is_ok()
    }

    /// `clientid`'s share of `ino` in the tables of the locked shard.
    fn share_in(sh: &FileShard, ino: u64, clientid: u64) -> Share {
        let mut s = Share::default();
        let Some(cof) = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)) else { return s };
        visit(cof.opens.len() + cof.delegs.len());
        for o in cof.opens.iter().map(|(_, o)| o).chain(cof.delegs.iter()) {
            match sh.states.get(o) {
                Some(StateRec { kind: StateKind::Open { access, deny, .. }, revoked: false, .. }) => {
                    s.access |= access;
                    s.deny |= deny;
                }
                Some(StateRec { kind: StateKind::Deleg { write }, revoked: false, .. }) => {
                    s.deleg = s.deleg.max(if *write { DELEG_WRITE } else { DELEG_READ });
                }
                _ => {}
            }
        }
        s
    }

    /// Journals `clientid`'s share of `ino` after a change of its opens or
    /// delegations there.
    pub(super) fn share_changed(&self, sh: &FileShard, ino: u64, clientid: u64, fx: &mut Effects) {
        if self.journal {
            fx.records.push(StateChange::FileShare { ino, clientid, share: Self::share_in(sh, ino, clientid) });
        }
    }

    /// `clientid`'s share row of `ino` as the tables say now: written after
    /// a claim, it takes back what the local step did not use.
    pub fn share_record(&self, ino: u64, clientid: u64) -> StateChange {
        StateChange::FileShare { ino, clientid, share: Self::share_in(&self.file_shard(ino), ino, clientid) }
    }

    /// `clientid`'s byte-range locks on `ino`.
    fn locks_of(&self, ino: u64, clientid: u64) -> Vec<ByteLock> {
        let sh = self.file_shard(ino);
        sh.files.get(&ino).map_or(vec![], |f| f.locks.iter().filter(|l| l.clientid == clientid).cloned().collect())
    }

    /// `clientid`'s byte-range locks row of `ino` as the tables say now.
    pub fn locks_record(&self, ino: u64, clientid: u64) -> StateChange {
        StateChange::ByteLocks { ino, clientid, locks: self.locks_of(ino, clientid) }
    }

    /// `clientid`'s locks on `ino` once `owner` locked [start, end)
    /// (`write`): the row a cluster's LOCK claims ([`Self::claim_lock`]).
    pub fn locks_after(&self, ino: u64, clientid: u64, owner: &[u8], (start, end, write): (u64, u64, bool)) -> Vec<ByteLock> {
        let mut locks = self.locks_of(ino, clientid);
        super::locks::set_lock(&mut locks, clientid, owner, start, end, Some(write));
        locks
    }

    /// OPEN of `ino` by `clientid` for `access`/`deny` against the clients
    /// other nodes hold (see the module docs), with a delegation claimed
    /// when `deleg` (Some(write)) is wanted and nobody elsewhere forbids it.
    /// Ok(whether the delegation was claimed); its row is written grown by
    /// what was asked. On etcd three requests: the own row's get (which
    /// fixes the snapshot, and makes the row's write no blind one), the
    /// file's rows, the commit.
    pub fn claim_open(&self, kv: &dyn KvStore, ino: u64, clientid: u64, access: u32, deny: u32, deleg: Option<bool>) -> Result<bool, Conflict> {
        pnfs_kv::transact(kv, CLAIM_RETRIES, |txn: &mut dyn KvTxn| {
            txn.get(&share_key(ino, clientid))?;
            let (mut share_holders, mut deleg_holders, mut deleg_ok) = (vec![], vec![], deleg.is_some());
            let write = access & OPEN4_SHARE_ACCESS_WRITE != 0;
            let (version, mine) = share_rows(txn, ino, clientid, |id, s| {
                if self.holds(id) {
                    return;
                }
                if s.deleg_blocks(write) {
                    deleg_holders.push(id);
                }
                if s.denies(access, deny) {
                    share_holders.push(id);
                }
                if deleg.is_some_and(|w| s.forbids_deleg(w)) {
                    deleg_ok = false;
                }
            })?;
            // As on one node: a delegation is recalled before shares are checked.
            if !deleg_holders.is_empty() {
                return Err(Conflict::Deleg { holders: deleg_holders });
            }
            if !share_holders.is_empty() {
                return Err(Conflict::Share { holders: share_holders });
            }
            let claimed = match deleg {
                Some(w) if deleg_ok => mine.deleg.max(if w { DELEG_WRITE } else { DELEG_READ }),
                _ => mine.deleg,
            };
            let grown = Share { access: mine.access | access, deny: mine.deny | deny, deleg: claimed };
            if grown != mine {
                let rec = records::encode(&StateChange::FileShare { ino, clientid, share: grown });
                if let records::Record::Put { key, value } = rec {
                    txn.put(&key, &value)?;
                }
                bump_version(txn, ino, version)?;
            }
            Ok(deleg_ok)
        })
    }

    /// LOCK of [start, end) on `ino` by `clientid` against the locks of
    /// clients other nodes hold: refused with the first lock in the way,
    /// else `clientid`'s `b` row becomes `after` (its locks on the file
    /// with the new one), in the same transaction.
    pub fn claim_lock(&self, kv: &dyn KvStore, ino: u64, clientid: u64, after: &[ByteLock], (start, end, write): (u64, u64, bool)) -> Result<(), Conflict> {
        pnfs_kv::transact(kv, CLAIM_RETRIES, |txn: &mut dyn KvTxn| {
            let version = txn.get(&version_key(ino))?;
            if let Some(l) = self.remote_lock_conflict(txn, ino, clientid, start, end, write)? {
                return Err(Conflict::Lock(l));
            }
            let rec = records::encode(&StateChange::ByteLocks { ino, clientid, locks: after.to_vec() });
            match rec {
                records::Record::Put { key, value } => txn.put(&key, &value)?,
                records::Record::Delete { key } => txn.delete(&key)?,
            }
            bump_version(txn, ino, version)?;
            Ok(())
        })
    }

    /// The first lock of a client held elsewhere in the way of a lock of
    /// [start, end) by `clientid` (LOCKT; read only).
    pub fn remote_lockt(&self, kv: &dyn KvStore, ino: u64, clientid: u64, (start, end, write): (u64, u64, bool)) -> Result<Option<ByteLock>, KvError> {
        let mut txn = kv.begin()?;
        self.remote_lock_conflict(&mut *txn, ino, clientid, start, end, write)
    }

    fn remote_lock_conflict(&self, txn: &mut dyn KvTxn, ino: u64, clientid: u64, start: u64, end: u64, write: bool) -> pnfs_kv::Result<Option<ByteLock>> {
        let mut found = None;
        scan_all(txn, &locks_prefix(ino), |k, v| {
            if found.is_some() {
                return;
            }
            match records::decode_row(&k, &v) {
                Ok(StateChange::ByteLocks { clientid: id, locks, .. }) if id != clientid && !self.holds(id) => {
                    // Another client: any overlap with a write on either side.
                    found = locks.into_iter().find(|l| l.overlaps(start, end) && (l.write || write));
                }
                Ok(_) => {}
                Err(e) => log::warn!("KV row {k:02x?}: {e}; ignored"),
            }
        })?;
        Ok(found)
    }

    /// Clients held elsewhere whose delegations on `ino` a change
    /// (`write`) or a read by a client other than `caller` conflicts with
    /// (read only).
    pub fn remote_delegations(&self, kv: &dyn KvStore, ino: u64, caller: Option<u64>, write: bool) -> Result<Vec<u64>, KvError> {
        let mut txn = kv.begin()?;
        let mut holders = vec![];
        share_rows(&mut *txn, ino, caller.unwrap_or(0), |id, s| {
            if Some(id) != caller && !self.holds(id) && s.deleg_blocks(write) {
                holders.push(id);
            }
        })?;
        Ok(holders)
    }

    /// Rule for stale rows (module docs): of `holders`, the clients no
    /// live node holds, found so for at least `lease` by this node, lose
    /// their rows in the KV. True if any did (the caller tries again).
    /// `node` is this node's id. Clients found held again are forgotten.
    pub fn expire_stale(&self, kv: &dyn KvStore, node: u32, holders: &[u64], lease: Duration) -> bool {
        let mut any = false;
        for &id in holders {
            let r = pnfs_kv::transact(kv, CLAIM_RETRIES, |txn: &mut dyn KvTxn| -> Result<bool, KvError> {
                let held_by = txn.get(&keyspace::with_u64(STATE_OWNER, id))?.and_then(|v| v.get(..4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes"))));
                let unheld = match held_by {
                    // Rows of a client with no owner row: nobody holds it.
                    None => true,
                    Some(n) if n == node => !self.holds(id),
                    Some(n) => txn.get(&crate::cluster::membership::node_key(n))?.is_none(),
                };
                let mut since = lock(&self.stale_holders);
                if !unheld {
                    since.remove(&id);
                    return Ok(false);
                }
                let first = *since.entry(id).or_insert_with(Instant::now);
                if held_by.is_some() && first.elapsed() < lease {
                    return Ok(false);
                }
                drop(since);
                delete_client_rows(txn, id)?;
                Ok(true)
            });
            match r {
                Ok(true) => {
                    lock(&self.stale_holders).remove(&id);
                    log::warn!("client {id:x}: no node has held it for a lease; its state in the KV (opens, locks, delegations) is expired");
                    any = true;
                }
                Ok(false) => {}
                Err(e) => log::warn!("expiring the state of client {id:x} in the KV: {e}"),
            }
        }
        any
    }
}

/// Deletes every row of client `id` (an expired lease): client, sessions
/// and their slots, states and delegation records, locks, shares, owner.
/// Walks the state prefixes once (rare: a client lost with its node).
fn delete_client_rows(txn: &mut dyn KvTxn, id: u64) -> pnfs_kv::Result<()> {
    let mut gone: Vec<Vec<u8>> = vec![keyspace::with_u64(STATE_CLIENT, id), keyspace::with_u64(STATE_OWNER, id)];
    let mut sessions = vec![];
    scan_all(txn, &[STATE_SESSION], |k, v| match records::decode_row(&k, &v) {
        Ok(StateChange::SessionCreated { rec }) if rec.clientid == id => {
            sessions.push(k.clone());
            gone.push(k);
        }
        Ok(StateChange::SlotKept { .. }) if sessions.iter().any(|s| k.starts_with(s)) => gone.push(k),
        _ => {}
    })?;
    scan_all(txn, &[STATE], |k, v| match records::decode_row(&k, &v) {
        Ok(StateChange::StatePut { rec, .. }) if rec.clientid == id => gone.push(k),
        Ok(StateChange::DelegPut { rec, .. }) if rec.clientid == id => gone.push(k),
        _ => {}
    })?;
    for prefix in [STATE_BYTE_LOCKS, STATE_FILE] {
        scan_all(txn, &[prefix], |k, _| {
            if k.len() == 17 && k[9..] == id.to_be_bytes() {
                gone.push(k);
            }
        })?;
    }
    for k in gone {
        txn.delete(&k)?;
    }
    Ok(())
}

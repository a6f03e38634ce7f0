//! The state layer (RFC 8881 chapters 2.10, 8, 9, 12; the nfs-ganesha SAL
//! split): clients, sessions, opens and share reservations, byte-range
//! locks, layouts and (from `deleg.rs`) delegations, behind one API that the
//! operation handlers call. No handler touches the tables.
//!
//! Every call decides (a status, a stateid) and appends what must happen
//! because of it to an [`Effects`]: stateids to allow or revoke on the data
//! servers, layout recalls to send, files whose size the data servers know,
//! and KV records to write. The caller applies them (`Mds::apply`) after
//! the call returned, so no lock of this module is held across an RPC, a
//! callback or a KV commit.
//!
//! # Records: what is proven
//!
//! Every change is a [`StateChange`] record. The client records needed for
//! reclaim after a restart (`O` rows) are always emitted (the MDS persists
//! them); with [`StateStore::set_journal`] on, every change of a client, a
//! session, an open, a lock, a layout or a delegation is emitted too, with
//! no record at all when it is off (a single MDS pays nothing).
//! `records.rs` encodes each record as a KV row of the key space
//! (`crate::keyspace`: `c`, `e`, `s`, `b`; a version byte, then XDR) and
//! decodes it back; bad bytes are an error, never a panic. `replay.rs`
//! builds a fresh store from a journal ([`StateStore::replay`]) or from a
//! KV's rows ([`StateStore::restore_from_kv`]), with the stateids and seqids
//! as recorded and every index rebuilt by the code that keeps it. The tests
//! (`replay_tests.rs`) drive a store with a seeded random mix of the calls
//! the operation handlers make, replay its journal into a second store, and
//! check that both answer every query alike (each stateid's validity at
//! each seqid, share reservations, lock conflicts, layouts, delegations,
//! clients, sessions, SEQUENCE's revoked flag); leaving out any one kind of
//! record makes them differ. Not records, on purpose (`records.rs` says
//! why): timers (leases, recall deadlines), back-channel connections, and
//! the slot seqids of read-only COMPOUNDs. A cluster (`cluster.rs`) writes
//! a slot's seqid and cached reply with each COMPOUND that changed state
//! (`SlotKept`); a session restored on another node takes each recorded
//! seqid as a lower bound (`SlotTable::adopted`).
//!
//! Calls stay synchronous: they decide in memory, and a store that keeps
//! its state in a KV writes the records when the caller applies the
//! [`Effects`] (outside every lock here, before the reply, group-committed
//! with concurrent requests), so no call awaits I/O under a lock.
//!
//! Batched calls need no API of their own: every call appends to an
//! `&mut Effects` it is handed, so the calls of one COMPOUND (OPEN then
//! LAYOUTGET) can share one, and [`records::write_all`] writes all its
//! records in one KV transaction, the last write of each key only (OPEN +
//! LAYOUTGET: two rows, though the layout state was created, then granted;
//! tested). Today each operation
//! handler applies its own `Effects` (one transaction per operation);
//! keeping one `Effects` per COMPOUND and applying it after the last
//! operation, before the reply, makes it one transaction per COMPOUND: a
//! change of the COMPOUND loop, not of this API.
//!
//! Cost: every operation costs O(1) or O(log n) in the number of states
//! held (SEQUENCE, PUTFH, OPEN, CLOSE, LOCK, LAYOUTGET, LAYOUTRETURN of a
//! file, revocation checks): states are indexed by stateid, by inode (and,
//! within an inode, by client, then by owner), and each client keeps the
//! set of its own stateids, so expiring one client costs its own states.
//! Only the periodic lease reaper walks the clients (never the states).
//!
//! # Locks and their order
//!
//! Independent clients do not contend on one mutex: the states live in
//! [`FILE_SHARDS`] shards chosen by inode (all states of one file in one
//! shard, so an OPEN's share check and its new stateid are one atomic step);
//! a stateid names its shard in its last byte. Clients and sessions are
//! looked up in sharded maps; each client's own record sits behind its own
//! mutex. Locks are always taken in this order, never the other way:
//!
//! 1. `registry` (the engine's client table, by ID and owner; by address;
//!    grace): EXCHANGE_ID, CREATE_SESSION, DESTROY_*, RECLAIM_COMPLETE,
//!    expiry only; never on SEQUENCE or OPEN;
//! 2. a `clients` or `sessions` map shard: held only to look up, insert or
//!    remove one entry; nothing else is taken while it is held;
//! 3. one `files` shard (at most one at a time);
//! 4. one client entry ([`ClientEntry`]): a leaf; nothing is taken under it;
//! 5. `pending_recalls` and `delegs` (the delegation table, `deleg.rs`):
//!    leaves, each taken last; nothing of the above is taken while one of
//!    them is held, and never both at once.
//!
//! Outside this module, `Pnfs`'s table of pushed stateids may look a state
//! up (a file shard) while held; nothing here takes it.

mod clients;
pub mod cluster;
pub mod deleg;
mod layouts;
mod locks;
mod opens;
pub mod records;
mod replay;
mod sessions;
pub mod xnode;

pub use clients::{Client, ClientEntry, MdsClient};
pub use layouts::{LayoutRecall, PendingRecall, LAYOUT_READ, LAYOUT_RW};
pub use locks::{lock_range, ByteLock, LockOutcome, Locker};
pub use opens::{IoMode, OpenRefused};
pub use records::{ClientRow, Record, RecordError, SessionRecord};
pub use sessions::Session;
pub use pnfs_protocol::session::{ChannelLimits, SlotTable};

use pnfs_protocol::session::IdMinter;
use pnfs_protocol::wire::{nfsstat4, stateid4};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub type SessionId = [u8; 16];
pub type StateOther = [u8; 12];
type NfsResult<T> = Result<T, nfsstat4>;

/// Shards of the per-inode state (a power of two up to 256: the last byte
/// of a stateid names its shard).
pub const FILE_SHARDS: usize = 64;
const CLIENT_SHARDS: usize = 16;
const SESSION_SHARDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKind {
    Open { owner: Vec<u8>, access: u32, deny: u32 },
    Lock { owner: Vec<u8>, open: StateOther },
    /// A read or write delegation (granted by `deleg.rs`).
    Deleg { write: bool },
    /// Layout stateid (one per client and file): the layout iomodes held,
    /// as a bit set of LAYOUT_READ / LAYOUT_RW.
    /// `fh_export` and `fh_generation` complete the filehandle the client
    /// got the layout with: a recall must name the same filehandle bytes,
    /// also after a REMOVE deleted the inode.
    /// `granted_by` is the (session, slot, seqid) of the last LAYOUTGET: a
    /// recall names it as a referring call, so a client that has not yet
    /// processed that reply waits for it instead of answering NOMATCHING.
    Layout { iomodes: u32, fh_export: u16, fh_generation: u32, granted_by: Option<(SessionId, u32, u32)> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRec {
    pub clientid: u64,
    pub ino: u64,
    pub seqid: u32,
    pub kind: StateKind,
    /// Fenced (a recalled layout kept too long): refused with
    /// ADMIN_REVOKED until FREE_STATEID.
    pub revoked: bool,
}

/// Bounds on the state one MDS keeps (mds.max_* in the config). Each is
/// refused to the offender only: EXCHANGE_ID from a full address or table
/// (NFS4ERR_DELAY), CREATE_SESSION past the client's sessions (NOSPC), a
/// new state past the client's cap (NOSPC) or the server's (DELAY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCaps {
    pub max_clients: usize,
    pub max_clients_per_address: usize,
    pub max_sessions_per_client: usize,
    pub max_states_per_client: usize,
    pub max_states: usize,
}

impl Default for StateCaps {
    fn default() -> Self {
        StateCaps { max_clients: 4096, max_clients_per_address: 1024, max_sessions_per_client: 16, max_states_per_client: 65536, max_states: 1_000_000 }
    }
}

/// A state change as a record: what a KV-backed store would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange {
    /// A client confirmed its first session: it may reclaim after a restart
    /// (always emitted; the MDS persists it).
    ClientConfirmed { owner: Vec<u8> },
    /// Its reclaim record goes (expiry, DESTROY_CLIENTID, eviction, grace
    /// over without it coming back). Always emitted.
    ClientForgotten { owner: Vec<u8> },
    /// Journal only: a client record as it is now (EXCHANGE_ID created it,
    /// CREATE_SESSION confirmed it, RECLAIM_COMPLETE).
    ClientPut { rec: ClientRow },
    /// Journal only: a client gone (its sessions, states and locks go with
    /// their own records, emitted with this one).
    ClientPurged { clientid: u64 },
    /// Journal only: a state created or changed (seqid, share, iomodes).
    StatePut { other: StateOther, rec: StateRec },
    /// Journal only: a state gone.
    StateRemoved { other: StateOther },
    /// Journal only: the byte-range locks of one client on a file after a
    /// change (a row per client and file: nodes holding different clients
    /// of one file never overwrite each other's).
    ByteLocks { ino: u64, clientid: u64, locks: Vec<ByteLock> },
    /// Journal only: a session created (with what its slot table and
    /// callbacks need) or destroyed.
    SessionCreated { rec: SessionRecord },
    SessionDestroyed { id: SessionId },
    /// Journal only: a delegation's own record, as granted, less its recall
    /// deadline (a timer). Its state is a `StatePut`; it goes with its
    /// `StateRemoved`.
    DelegPut { other: StateOther, rec: deleg::Deleg },
    /// A cluster's only: a session's slot after a COMPOUND that changed
    /// state (its seqid, and its reply when the client asked to cache it).
    /// Written by the COMPOUND loop with that COMPOUND's records
    /// (`state::cluster`), never emitted by a state call; it goes with its
    /// session's `SessionDestroyed`.
    SlotKept { session: SessionId, slot: u32, seqid: u32, reply: Option<Vec<u8>> },
    /// Journal only: one client's share of a file after a change of its
    /// opens or delegations there (an index other nodes check conflicts
    /// against: `xnode.rs`; empty: the row goes). Derived, never loaded.
    FileShare { ino: u64, clientid: u64, share: xnode::Share },
}

/// A stateid to allow on the data servers of its file (tight coupling).
#[derive(Debug, Clone, PartialEq)]
pub struct DsAllow {
    pub clientid: u64,
    pub ino: u64,
    pub stateid: stateid4,
    pub access: u32,
}

/// What the caller does after a state call, outside any lock of this module.
#[derive(Debug, Default)]
pub struct Effects {
    /// Stateids the data servers of the file must accept.
    pub ds_allow: Vec<DsAllow>,
    /// Stateids no longer valid (closed, freed, fenced, expired): revoked on
    /// the data servers that were told of them.
    pub ds_revoke: Vec<StateOther>,
    /// CB_LAYOUTRECALLs to send (their seqids were bumped already).
    pub recalls: Vec<LayoutRecall>,
    /// Files written through a layout whose holder went away without
    /// LAYOUTCOMMIT: the data servers know their size.
    pub size_from_ds: Vec<u64>,
    /// Records to write ([`StateChange`]).
    pub records: Vec<StateChange>,
    /// Sessions that went with their client (purged, expired, replaced):
    /// their callback bookkeeping goes too, or client churn would grow it
    /// without bound.
    pub sessions_gone: Vec<SessionId>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.ds_allow.is_empty() && self.ds_revoke.is_empty() && self.recalls.is_empty() && self.size_from_ds.is_empty() && self.records.is_empty() && self.sessions_gone.is_empty()
    }
}

// Mutexes are taken whatever a panicking holder left behind (the
// workspace's policy, `pnfs_protocol::sync`; the tables stay consistent
// per call: each call finishes its changes before unlocking).
use pnfs_protocol::sync::lock;

/// A fixed set of mutexes chosen by key.
pub(crate) struct Shards<T> {
    slots: Box<[Mutex<T>]>,
}

impl<T> Shards<T> {
    fn new(n: usize, mut make: impl FnMut() -> T) -> Self {
        Shards { slots: (0..n).map(|_| Mutex::new(make())).collect() }
    }

    fn at(&self, i: usize) -> MutexGuard<'_, T> {
        lock(&self.slots[i % self.slots.len()])
    }

    fn all(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.slots.iter().map(lock)
    }
}

/// Spreads sequential keys (inode numbers) over the shards.
fn mix(k: u64) -> usize {
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
}

/// States of the files of one shard.
pub(crate) struct FileShard {
    /// Every state of these files, by stateid.
    states: HashMap<StateOther, StateRec>,
    /// The same states by inode, then client.
    files: HashMap<u64, FileState>,
    ids: IdMinter,
}

/// One file's state: share reservations (as counts), byte-range locks, and
/// each client's stateids on it.
#[derive(Default)]
pub(crate) struct FileState {
    by_client: HashMap<u64, ClientOnFile>,
    share: opens::ShareCounts,
    locks: Vec<ByteLock>,
}

impl FileState {
    fn is_empty(&self) -> bool {
        self.by_client.is_empty() && self.locks.is_empty()
    }
}

/// One client's stateids on one file.
pub(crate) struct ClientOnFile {
    client: Arc<ClientEntry>,
    /// Open stateids by open owner.
    opens: Vec<(Vec<u8>, StateOther)>,
    /// Lock stateids by lock owner.
    lockers: Vec<(Vec<u8>, StateOther)>,
    layout: Option<StateOther>,
    /// Delegations.
    delegs: Vec<StateOther>,
}

impl ClientOnFile {
    fn is_empty(&self) -> bool {
        self.opens.is_empty() && self.lockers.is_empty() && self.layout.is_none() && self.delegs.is_empty()
    }

    /// Every stateid of the client on the file.
    fn others(&self) -> impl Iterator<Item = &StateOther> {
        self.opens.iter().map(|(_, o)| o).chain(self.lockers.iter().map(|(_, o)| o)).chain(self.layout.iter()).chain(self.delegs.iter())
    }
}

/// The state layer: see the module documentation.
pub struct StateStore {
    pub epoch: u32,
    pub caps: StateCaps,
    registry: Mutex<clients::Registry>,
    clients: Shards<HashMap<u64, Arc<ClientEntry>>>,
    sessions: Shards<HashMap<SessionId, Arc<Session>>>,
    files: Shards<FileShard>,
    /// States held, all clients together (mds.max_states).
    total_states: AtomicUsize,
    /// Layout stateids held (a metric).
    layouts_held: AtomicUsize,
    /// Set once grace is over: it never comes back in this instance.
    grace_over: AtomicBool,
    journal: bool,
    pending_recalls: Mutex<Vec<PendingRecall>>,
    /// What only delegations need (recalls, CB_GETATTR); their stateids
    /// are states like any other.
    delegs: Mutex<deleg::DelegTable>,
    /// Held while a client is adopted from the KV (`cluster.rs`).
    adopting: Mutex<()>,
    /// Clients of other nodes' rows found held by no live node in a
    /// conflict, since when (`xnode.rs`: expired in the KV after a lease).
    stale_holders: Mutex<HashMap<u64, Instant>>,
}

#[cfg(test)]
thread_local! {
    /// Table entries (states, per-file or per-client entries) this thread
    /// looked at: the tests show an operation's cost does not grow with
    /// the states held elsewhere.
    pub(crate) static VISITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts `n` table entries looked at (tests only).
#[inline(always)]
pub(crate) fn visit(n: usize) {
    #[cfg(test)]
    VISITS.with(|v| v.set(v.get() + n as u64));
    #[cfg(not(test))]
    let _ = n;
}

impl StateStore {
    pub fn new(epoch: u32, reclaimable: Vec<Vec<u8>>, grace: Duration, caps: StateCaps) -> Self {
        let grace_until = if reclaimable.is_empty() { None } else { Some(Instant::now() + grace) };
        StateStore {
            epoch,
            caps,
            grace_over: AtomicBool::new(grace_until.is_none()),
            registry: Mutex::new(clients::Registry::new(reclaimable, grace_until)),
            clients: Shards::new(CLIENT_SHARDS, HashMap::new),
            sessions: Shards::new(SESSION_SHARDS, HashMap::new),
            files: Shards::new(FILE_SHARDS, || FileShard { states: HashMap::new(), files: HashMap::new(), ids: IdMinter::new() }),
            total_states: AtomicUsize::new(0),
            layouts_held: AtomicUsize::new(0),
            journal: false,
            pending_recalls: Mutex::new(Vec::new()),
            delegs: Mutex::new(deleg::DelegTable::default()),
            adopting: Mutex::new(()),
            stale_holders: Mutex::new(HashMap::new()),
        }
    }

    /// Emits every change as a [`StateChange`] record (for a replicated
    /// store; off on a single MDS, where only client records are durable).
    pub fn set_journal(&mut self, on: bool) {
        self.journal = on;
    }

    /// Whether every change is emitted as a record (a cluster's store).
    pub fn journaling(&self) -> bool {
        self.journal
    }

    /// States held, all clients together.
    pub fn states_held(&self) -> usize {
        self.total_states.load(Ordering::Relaxed)
    }

    /// Layout stateids held, all clients together.
    pub fn layouts_held(&self) -> usize {
        self.layouts_held.load(Ordering::Relaxed)
    }

    fn file_shard(&self, ino: u64) -> MutexGuard<'_, FileShard> {
        self.files.at(mix(ino) % FILE_SHARDS)
    }

    /// The shard a stateid names (its last byte); None for a stateid this
    /// instance cannot have minted.
    fn shard_of(&self, other: &StateOther) -> MutexGuard<'_, FileShard> {
        self.files.at(other[11] as usize % FILE_SHARDS)
    }

    /// Whether any client holds state on `ino` (PUTFH of a removed file
    /// still works for CLOSE, LOCKU, LAYOUTRETURN).
    pub fn has_state_on(&self, ino: u64) -> bool {
        visit(1);
        self.file_shard(ino).files.contains_key(&ino)
    }

    /// The error for an `other` not in the table: STALE when minted by
    /// another boot, BAD otherwise. In a cluster (journal on) always BAD:
    /// state minted by another node or boot is adopted from the KV with
    /// its client, never lost to a restart, so an unknown one was never
    /// valid (and STALE would send the client into a reclaim that a
    /// cluster, with no grace, refuses).
    pub fn unknown(&self, other: &StateOther) -> nfsstat4 {
        if other[..4] != self.epoch.to_be_bytes() && !self.journal {
            nfsstat4::NFS4ERR_STALE_STATEID
        } else {
            nfsstat4::NFS4ERR_BAD_STATEID
        }
    }

    /// Records a new state of `client` under a fresh `other`: the boot
    /// epoch (stateids of an earlier instance never match one of ours, here
    /// or on a data server), 7 random bytes, then the shard. Checks the caps:
    /// NFS4ERR_NOSPC past the client's own (its application sees ENOSPC),
    /// NFS4ERR_DELAY past the server-wide one (others may release some soon).
    fn insert(&self, sh: &mut FileShard, client: &Arc<ClientEntry>, rec: StateRec, fx: &mut Effects) -> NfsResult<StateOther> {
        let shard = mix(rec.ino) % FILE_SHARDS;
        let mut other = [0u8; 12];
        other[..4].copy_from_slice(&self.epoch.to_be_bytes());
        loop {
            other[4..].copy_from_slice(&sh.ids.next_u64().to_be_bytes());
            other[11] = shard as u8;
            // Not a special stateid's `other` (all zeros or all ones).
            if other != [0; 12] && other != [0xff; 12] && !sh.states.contains_key(&other) {
                break;
            }
        }
        self.index_state(sh, client, other, rec, fx)?;
        Ok(other)
    }

    /// Records `rec` under `other` (new, or restored from its record) in
    /// every index, checking the caps as [`Self::insert`] says.
    fn index_state(&self, sh: &mut FileShard, client: &Arc<ClientEntry>, other: StateOther, rec: StateRec, fx: &mut Effects) -> NfsResult<()> {
        let is_layout = matches!(rec.kind, StateKind::Layout { .. });
        {
            let mut ci = client.lock();
            if ci.gone {
                return Err(nfsstat4::NFS4ERR_STALE_CLIENTID);
            }
            if ci.states.len() >= self.caps.max_states_per_client {
                return Err(nfsstat4::NFS4ERR_NOSPC);
            }
            if self.total_states.fetch_add(1, Ordering::AcqRel) >= self.caps.max_states {
                self.total_states.fetch_sub(1, Ordering::AcqRel);
                return Err(nfsstat4::NFS4ERR_DELAY);
            }
            ci.states.insert(other);
            if is_layout {
                ci.layouts.insert(other);
            }
            if rec.revoked {
                ci.revoked += 1;
            }
        }
        if is_layout {
            self.layouts_held.fetch_add(1, Ordering::Relaxed);
        }
        let file = sh.files.entry(rec.ino).or_default();
        let cof = file.by_client.entry(rec.clientid).or_insert_with(|| ClientOnFile {
            client: client.clone(),
            opens: Vec::new(),
            lockers: Vec::new(),
            layout: None,
            delegs: Vec::new(),
        });
        match &rec.kind {
            StateKind::Open { owner, access, deny } => {
                cof.opens.push((owner.clone(), other));
                file.share.add(*access, *deny);
            }
            StateKind::Lock { owner, .. } => cof.lockers.push((owner.clone(), other)),
            StateKind::Layout { .. } => cof.layout = Some(other),
            StateKind::Deleg { .. } => cof.delegs.push(other),
        }
        let share_changed = matches!(rec.kind, StateKind::Open { .. } | StateKind::Deleg { .. });
        let (ino, clientid) = (rec.ino, rec.clientid);
        if self.journal {
            fx.records.push(StateChange::StatePut { other, rec: rec.clone() });
        }
        sh.states.insert(other, rec);
        if share_changed {
            self.share_changed(sh, ino, clientid, fx);
        }
        Ok(())
    }

    /// Removes a state from every index; it is revoked on the data servers.
    fn remove(&self, sh: &mut FileShard, other: &StateOther, fx: &mut Effects) -> Option<StateRec> {
        let rec = sh.states.remove(other)?;
        visit(1);
        if let Some(file) = sh.files.get_mut(&rec.ino) {
            if let Some(cof) = file.by_client.get_mut(&rec.clientid) {
                match &rec.kind {
                    StateKind::Open { access, deny, .. } => {
                        cof.opens.retain(|(_, o)| o != other);
                        file.share.sub(*access, *deny);
                    }
                    StateKind::Lock { .. } => cof.lockers.retain(|(_, o)| o != other),
                    StateKind::Layout { .. } => cof.layout = None,
                    StateKind::Deleg { .. } => cof.delegs.retain(|o| o != other),
                }
                {
                    let mut ci = cof.client.lock();
                    ci.states.remove(other);
                    ci.layouts.remove(other);
                    if rec.revoked {
                        ci.revoked -= 1;
                    }
                }
                if cof.is_empty() {
                    file.by_client.remove(&rec.clientid);
                }
            }
            if file.is_empty() {
                sh.files.remove(&rec.ino);
            }
        }
        self.total_states.fetch_sub(1, Ordering::AcqRel);
        if matches!(rec.kind, StateKind::Layout { .. }) {
            self.layouts_held.fetch_sub(1, Ordering::Relaxed);
        }
        fx.ds_revoke.push(*other);
        if self.journal {
            fx.records.push(StateChange::StateRemoved { other: *other });
            if matches!(rec.kind, StateKind::Open { .. } | StateKind::Deleg { .. }) {
                self.share_changed(sh, rec.ino, rec.clientid, fx);
            }
        }
        Some(rec)
    }

    /// Journals a changed state (seqid, share, iomodes).
    fn changed(&self, sh: &FileShard, other: &StateOther, fx: &mut Effects) {
        if self.journal {
            if let Some(rec) = sh.states.get(other) {
                fx.records.push(StateChange::StatePut { other: *other, rec: rec.clone() });
                if matches!(rec.kind, StateKind::Open { .. } | StateKind::Deleg { .. }) {
                    self.share_changed(sh, rec.ino, rec.clientid, fx);
                }
            }
        }
    }

    /// A state of `clientid` by stateid, checking the seqid (0 = current
    /// version). A stateid of an earlier server instance (another boot
    /// epoch in its first 4 bytes) is NFS4ERR_STALE_STATEID, so the client
    /// recovers its lease.
    fn checked<'s>(&self, sh: &'s FileShard, clientid: u64, s: &stateid4) -> NfsResult<&'s StateRec> {
        visit(1);
        let rec = sh.states.get(&s.other).ok_or_else(|| self.unknown(&s.other))?;
        if rec.clientid != clientid {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        if rec.revoked {
            // RFC 8881 10.2.1: DELEG_REVOKED for a delegation.
            return Err(match rec.kind {
                StateKind::Deleg { .. } => nfsstat4::NFS4ERR_DELEG_REVOKED,
                _ => nfsstat4::NFS4ERR_ADMIN_REVOKED,
            });
        }
        check_seqid(rec.seqid, s.seqid)?;
        Ok(rec)
    }

    /// [`checked`](Self::checked), and the state must be of file `ino`
    /// (a stateid used with another file's handle is BAD_STATEID).
    fn checked_on<'s>(&self, sh: &'s FileShard, clientid: u64, ino: u64, s: &stateid4) -> NfsResult<&'s StateRec> {
        let rec = self.checked(sh, clientid, s)?;
        if rec.ino != ino {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        Ok(rec)
    }

    /// A copy of the state `s` names, checked as for any operation (client,
    /// revocation, seqid).
    pub fn find(&self, clientid: u64, s: &stateid4) -> NfsResult<StateRec> {
        self.checked(&self.shard_of(&s.other), clientid, s).cloned()
    }

    /// Marks a state revoked (a delegation not returned a lease after its
    /// recall): refused from now on, told by SEQUENCE until FREE_STATEID,
    /// and revoked on the data servers. False if it is gone.
    pub fn revoke(&self, other: &StateOther, fx: &mut Effects) -> bool {
        let mut guard = self.shard_of(other);
        let sh = &mut *guard;
        let Some(rec) = sh.states.get_mut(other) else { return false };
        if !rec.revoked {
            rec.revoked = true;
            let (ino, clientid) = (rec.ino, rec.clientid);
            if let Some(cof) = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)) {
                cof.client.lock().revoked += 1;
            }
            fx.ds_revoke.push(*other);
            self.changed(sh, other, fx);
        }
        true
    }

    /// Removes a state whatever its kind (DELEGRETURN, DELEGPURGE).
    pub fn remove_state(&self, other: &StateOther, fx: &mut Effects) -> Option<StateRec> {
        let mut guard = self.shard_of(other);
        self.remove(&mut guard, other, fx)
    }

    /// A copy of the state a stateid names, if any (tests, diagnostics).
    pub fn get(&self, other: &StateOther) -> Option<StateRec> {
        self.shard_of(other).states.get(other).cloned()
    }

    /// The delegation table (lock order: a leaf, see the module docs).
    pub fn delegs(&self) -> MutexGuard<'_, deleg::DelegTable> {
        lock(&self.delegs)
    }

    /// The share access of `clientid`'s live opens of `ino`, together
    /// (WANT_DELEGATION). O(the client's opens of the file).
    pub fn open_access_of(&self, clientid: u64, ino: u64) -> u32 {
        let sh = self.file_shard(ino);
        let Some(cof) = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)) else { return 0 };
        visit(cof.opens.len());
        cof.opens.iter().fold(0, |acc, (_, o)| match sh.states.get(o) {
            Some(StateRec { kind: StateKind::Open { access, .. }, revoked: false, .. }) => acc | access,
            _ => acc,
        })
    }

    /// States `clientid` holds.
    pub fn held_by(&self, clientid: u64) -> usize {
        self.client(clientid).map_or(0, |c| c.lock().states.len())
    }
}

pub fn check_seqid(current: u32, given: u32) -> NfsResult<()> {
    if given == 0 || given == current {
        Ok(())
    } else if given < current {
        Err(nfsstat4::NFS4ERR_OLD_STATEID)
    } else {
        Err(nfsstat4::NFS4ERR_BAD_STATEID)
    }
}

pub fn stateid(other: &StateOther, seqid: u32) -> stateid4 {
    stateid4 { seqid, other: *other }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod xnode_tests;

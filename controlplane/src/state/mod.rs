//! Client, session and open/lock state (RFC 8881 chapters 2.10, 8, 9).
//!
//! All of it lives in memory behind one mutex, except the client records
//! needed for reclaim after a restart, which the caller persists. Sessions
//! keep their slot tables behind their own mutex so SEQUENCE does not hold
//! the global lock while a compound runs.

pub mod deleg;

use pnfs_protocol::session::IdMinter;
use pnfs_protocol::wire::nfsstat4;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type SessionId = [u8; 16];
pub type StateOther = [u8; 12];

pub use pnfs_protocol::session::{ChannelLimits, SlotTable};

/// A session: the engine's record ([`pnfs_protocol::nfs41::Session`]);
/// its `minor` is that of the CREATE_SESSION, which CB_COMPOUNDs must carry
/// (the Linux client finds the session only among clients of that minor
/// version and answers NFS4ERR_BADSESSION otherwise).
pub type Session = pnfs_protocol::nfs41::Session<()>;

#[derive(Debug, Clone)]
pub struct Client {
    pub clientid: u64,
    pub owner: Vec<u8>,
    pub verifier: [u8; 8],
    pub confirmed: bool,
    /// Next expected csa_sequence for CREATE_SESSION.
    pub cs_sequence: u32,
    /// Last CREATE_SESSION reply (resok bytes) for replay detection.
    pub cs_reply: Option<Vec<u8>>,
    pub last_renewed: Instant,
    pub sessions: Vec<SessionId>,
    pub reclaim_complete: bool,
    /// Known from the previous server instance: may reclaim during grace.
    pub may_reclaim: bool,
    /// Who created the client ID (AUTH_SYS uid/gid); None for AUTH_NONE.
    pub principal: Option<(u32, u32)>,
    /// Address its EXCHANGE_ID came from (mds.max_clients_per_address).
    pub addr: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKind {
    Open { owner: Vec<u8>, access: u32, deny: u32 },
    Lock { owner: Vec<u8>, open: StateOther },
    /// A read or write delegation; the rest is in `delegs` (state/deleg.rs).
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

pub const LAYOUT_READ: u32 = 1;
pub const LAYOUT_RW: u32 = 2;

#[derive(Debug, Clone)]
pub struct StateRec {
    pub clientid: u64,
    pub ino: u64,
    pub seqid: u32,
    pub kind: StateKind,
    /// Lock stateids stay until FREE_STATEID/CLOSE; closed opens are gone.
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteLock {
    pub clientid: u64,
    pub owner: Vec<u8>,
    pub start: u64,
    /// Exclusive end; u64::MAX means "to end of file".
    pub end: u64,
    pub write: bool,
}

impl ByteLock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

pub fn lock_range(offset: u64, length: u64) -> Result<(u64, u64), nfsstat4> {
    if length == 0 {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    if length == u64::MAX {
        return Ok((offset, u64::MAX));
    }
    match offset.checked_add(length) {
        Some(end) => Ok((offset, end)),
        None => Err(nfsstat4::NFS4ERR_INVAL),
    }
}

/// The states by `other`, with how many each client holds, so the caps and
/// "does this client hold anything" cost O(1). Reads go through `Deref`;
/// every change goes through the methods below, which keep the counts. A
/// state's `clientid` never changes once minted.
#[derive(Debug, Default)]
pub struct StateMap {
    map: HashMap<StateOther, StateRec>,
    per_client: HashMap<u64, usize>,
}

impl Deref for StateMap {
    type Target = HashMap<StateOther, StateRec>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

fn uncount(per_client: &mut HashMap<u64, usize>, clientid: u64) {
    if let Some(n) = per_client.get_mut(&clientid) {
        *n -= 1;
        if *n == 0 {
            per_client.remove(&clientid);
        }
    }
}

impl StateMap {
    /// States `clientid` holds.
    pub fn held_by(&self, clientid: u64) -> usize {
        self.per_client.get(&clientid).copied().unwrap_or(0)
    }

    fn insert(&mut self, other: StateOther, rec: StateRec) {
        *self.per_client.entry(rec.clientid).or_default() += 1;
        if let Some(old) = self.map.insert(other, rec) {
            uncount(&mut self.per_client, old.clientid);
        }
    }

    pub fn get_mut(&mut self, other: &StateOther) -> Option<&mut StateRec> {
        self.map.get_mut(other)
    }

    pub fn iter_mut(&mut self) -> std::collections::hash_map::IterMut<'_, StateOther, StateRec> {
        self.map.iter_mut()
    }

    pub fn values_mut(&mut self) -> std::collections::hash_map::ValuesMut<'_, StateOther, StateRec> {
        self.map.values_mut()
    }

    pub fn remove(&mut self, other: &StateOther) -> Option<StateRec> {
        let r = self.map.remove(other)?;
        uncount(&mut self.per_client, r.clientid);
        Some(r)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&StateOther, &mut StateRec) -> bool) {
        let per_client = &mut self.per_client;
        self.map.retain(|k, r| {
            let kept = keep(k, r);
            if !kept {
                uncount(per_client, r.clientid);
            }
            kept
        });
    }
}

/// Bounds on the state one MDS keeps (mds.max_* in the config).
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

pub struct StateTable {
    pub epoch: u32,
    pub clients: HashMap<u64, Client>,
    pub sessions: HashMap<SessionId, Arc<Session>>,
    pub states: StateMap,
    pub locks: HashMap<u64, Vec<ByteLock>>,
    pub delegs: deleg::DelegTable,
    pub caps: StateCaps,
    /// Client IDs, session IDs and stateids: unguessable (RFC 8881 2.10.3).
    ids: IdMinter,
    /// Owners allowed to reclaim (persisted client records of the last boot).
    pub reclaimable: HashMap<Vec<u8>, bool>,
    pub grace_until: Option<Instant>,
}

impl StateTable {
    pub fn new(epoch: u32, reclaimable: Vec<Vec<u8>>, grace: Duration) -> Self {
        let grace_until = if reclaimable.is_empty() { None } else { Some(Instant::now() + grace) };
        StateTable {
            epoch,
            clients: HashMap::new(),
            sessions: HashMap::new(),
            states: StateMap::default(),
            locks: HashMap::new(),
            delegs: deleg::DelegTable::default(),
            caps: StateCaps::default(),
            ids: IdMinter::new(),
            reclaimable: reclaimable.into_iter().map(|o| (o, false)).collect(),
            grace_until,
        }
    }

    pub fn in_grace(&mut self) -> bool {
        match self.grace_until {
            Some(t) if Instant::now() < t && self.reclaimable.values().any(|done| !done) => true,
            Some(_) => {
                log::info!("grace period over");
                self.grace_until = None;
                false
            }
            None => false,
        }
    }

    /// A client ID not in use: the tag of `owner` (high half, so a data
    /// server can tell whether a DS client is the owner of a stateid:
    /// [`pnfs_protocol::session::owner_tag`]), then 32 random bits, not 0.
    /// Knowing a client ID gains nobody anything without its principal.
    pub fn new_clientid(&mut self, owner: &[u8]) -> u64 {
        let tag = (pnfs_protocol::session::owner_tag(owner) as u64) << 32;
        loop {
            let id = tag | (self.ids.next_u64() & 0xffff_ffff);
            if id as u32 != 0 && !self.clients.contains_key(&id) {
                return id;
            }
        }
    }

    /// A random session ID not in use.
    pub fn new_sessionid(&mut self) -> SessionId {
        loop {
            let id = self.ids.next_16();
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Whether `clientid` may hold one more state (OPEN, LOCK, LAYOUTGET):
    /// NFS4ERR_NOSPC past its own cap (the client holds too much: its
    /// application sees ENOSPC), NFS4ERR_DELAY past the server-wide one
    /// (others may release some soon).
    pub fn admit_state(&self, clientid: u64) -> Result<(), nfsstat4> {
        if self.states.held_by(clientid) >= self.caps.max_states_per_client {
            return Err(nfsstat4::NFS4ERR_NOSPC);
        }
        if self.states.len() >= self.caps.max_states {
            return Err(nfsstat4::NFS4ERR_DELAY);
        }
        Ok(())
    }

    /// Records a new state under a fresh `other`: the boot epoch (stateids
    /// of an earlier instance never match one of ours, here or on a data
    /// server) then 8 random bytes. Checks the caps ([`Self::admit_state`]).
    pub fn new_state(&mut self, rec: StateRec) -> Result<StateOther, nfsstat4> {
        self.admit_state(rec.clientid)?;
        let mut other = [0u8; 12];
        other[..4].copy_from_slice(&self.epoch.to_be_bytes());
        loop {
            other[4..].copy_from_slice(&self.ids.next_u64().to_be_bytes());
            // Not a special stateid's `other` (all zeros or all ones).
            if other != [0; 12] && other != [0xff; 12] && !self.states.contains_key(&other) {
                break;
            }
        }
        self.states.insert(other, rec);
        Ok(other)
    }

    /// Removes a client and everything it holds. Costs O(its sessions +
    /// locked files) when it holds no state (unconfirmed or idle clients).
    pub fn purge_client(&mut self, clientid: u64) -> Option<Client> {
        let c = self.clients.remove(&clientid);
        if let Some(c) = &c {
            for sid in &c.sessions {
                self.sessions.remove(sid);
            }
        }
        // Sessions are listed in their client; this catches any that is not.
        if c.is_none() {
            self.sessions.retain(|_, s| s.clientid != clientid);
        }
        if self.states.held_by(clientid) > 0 {
            self.states.retain(|_, st| st.clientid != clientid);
        }
        self.delegs.forget_client(clientid);
        // Locked files only (unconfirmed clients hold none: cheap for them).
        if !self.locks.is_empty() {
            for locks in self.locks.values_mut() {
                locks.retain(|l| l.clientid != clientid);
            }
            self.locks.retain(|_, v| !v.is_empty());
        }
        c
    }

    /// Makes room for one more client from `addr`, the offender paying:
    /// when `addr` holds `caps.max_clients_per_address` clients, its own
    /// unconfirmed ones and those whose lease ran out holding no open, lock
    /// or layout go (a real client among them gets STALE_CLIENTID at
    /// CREATE_SESSION and starts over); when the whole table is full
    /// (`caps.max_clients`), such clients of any address go. Err when there
    /// is still no room: the newcomer is answered NFS4ERR_DELAY and those
    /// already in keep working. Ok and Err carry the clients dropped (the
    /// caller deletes their records).
    pub fn make_room_for_client(&mut self, addr: IpAddr, lease: Duration) -> Result<Vec<Client>, Vec<Client>> {
        let mut gone = vec![];
        let from_addr = self.clients.values().filter(|c| c.addr == addr).count();
        if from_addr >= self.caps.max_clients_per_address {
            gone = self.drop_idle_clients(lease, Some(addr));
            if from_addr - gone.len() >= self.caps.max_clients_per_address {
                return Err(gone);
            }
        }
        if self.clients.len() >= self.caps.max_clients {
            gone.extend(self.drop_idle_clients(lease, None));
            if self.clients.len() >= self.caps.max_clients {
                return Err(gone);
            }
        }
        Ok(gone)
    }

    /// Drops the unconfirmed clients and the expired ones holding no state
    /// (of `addr` only, if given).
    fn drop_idle_clients(&mut self, lease: Duration, addr: Option<IpAddr>) -> Vec<Client> {
        let now = Instant::now();
        let idle: Vec<u64> = self
            .clients
            .values()
            .filter(|c| addr.is_none_or(|a| c.addr == a))
            .filter(|c| !c.confirmed || (now.duration_since(c.last_renewed) > lease && self.states.held_by(c.clientid) == 0))
            .map(|c| c.clientid)
            .collect();
        if !idle.is_empty() {
            let whose = addr.map_or("any address".to_string(), |a| a.to_string());
            log::warn!("client table full: dropping {} unconfirmed or expired clients of {whose}", idle.len());
        }
        idle.into_iter().filter_map(|id| self.purge_client(id)).collect()
    }

    pub fn find_client_by_owner(&self, owner: &[u8]) -> Vec<u64> {
        self.clients.values().filter(|c| c.owner == owner).map(|c| c.clientid).collect()
    }

    /// First lock of someone else that conflicts with the request.
    pub fn lock_conflict(&self, ino: u64, clientid: u64, owner: &[u8], start: u64, end: u64, write: bool) -> Option<&ByteLock> {
        self.locks.get(&ino)?.iter().find(|l| {
            l.overlaps(start, end) && (l.write || write) && !(l.clientid == clientid && l.owner == owner)
        })
    }

    /// POSIX semantics: the new range replaces this owner's overlapping ranges
    /// (splitting them); `write == None` unlocks.
    pub fn set_lock(&mut self, ino: u64, clientid: u64, owner: &[u8], start: u64, end: u64, write: Option<bool>) {
        let locks = self.locks.entry(ino).or_default();
        let mut keep = Vec::with_capacity(locks.len() + 2);
        for l in locks.drain(..) {
            if l.clientid != clientid || l.owner != owner || !l.overlaps(start, end) {
                keep.push(l);
                continue;
            }
            if l.start < start {
                keep.push(ByteLock { end: start, ..l.clone() });
            }
            if l.end > end {
                keep.push(ByteLock { start: end, ..l.clone() });
            }
        }
        if let Some(w) = write {
            keep.push(ByteLock { clientid, owner: owner.to_vec(), start, end, write: w });
        }
        *locks = keep;
        if locks.is_empty() {
            self.locks.remove(&ino);
        }
    }

    pub fn owner_holds_locks(&self, ino: u64, clientid: u64, owner: &[u8]) -> bool {
        self.locks.get(&ino).is_some_and(|v| v.iter().any(|l| l.clientid == clientid && l.owner == owner))
    }

    /// Clients whose lease ran out (RFC 8881 8.3): their state is dropped.
    pub fn expire(&mut self, lease: Duration) -> Vec<Client> {
        let now = Instant::now();
        let dead: Vec<u64> = self
            .clients
            .values()
            .filter(|c| now.duration_since(c.last_renewed) > lease)
            .map(|c| c.clientid)
            .collect();
        dead.into_iter().filter_map(|id| self.purge_client(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_rec(clientid: u64, ino: u64) -> StateRec {
        StateRec { clientid, ino, seqid: 1, kind: StateKind::Open { owner: b"o".to_vec(), access: 1, deny: 0 }, revoked: false }
    }

    fn client(t: &mut StateTable, owner: &str, addr: &str, confirmed: bool) -> u64 {
        let id = t.new_clientid(owner.as_bytes());
        t.clients.insert(
            id,
            Client {
                clientid: id,
                owner: owner.as_bytes().to_vec(),
                verifier: [0; 8],
                confirmed,
                cs_sequence: 1,
                cs_reply: None,
                last_renewed: Instant::now(),
                sessions: vec![],
                reclaim_complete: false,
                may_reclaim: false,
                principal: None,
                addr: addr.parse().unwrap(),
            },
        );
        id
    }

    #[test]
    fn state_caps_and_counts() {
        use pnfs_protocol::wire::stateid4;
        let mut t = StateTable::new(5, vec![], Duration::from_secs(1));
        t.caps = StateCaps { max_clients: 8, max_clients_per_address: 4, max_sessions_per_client: 1, max_states_per_client: 3, max_states: 5 };
        let mut mine = vec![];
        for i in 0..3 {
            let other = t.new_state(open_rec(1, i)).unwrap();
            assert_eq!(other[..4], 5u32.to_be_bytes(), "the boot epoch heads every stateid");
            mine.push(other);
        }
        assert_eq!(t.new_state(open_rec(1, 9)), Err(nfsstat4::NFS4ERR_NOSPC), "the client's own cap");
        // Unknown stateids: of an earlier boot STALE, of this one BAD.
        use crate::ops::stateid::find;
        let mut gone = stateid4 { seqid: 1, other: mine[0] };
        gone.other[11] ^= 1;
        assert_eq!(find(&t, 1, &gone).err(), Some(nfsstat4::NFS4ERR_BAD_STATEID));
        gone.other[..4].copy_from_slice(&4u32.to_be_bytes());
        assert_eq!(find(&t, 1, &gone).err(), Some(nfsstat4::NFS4ERR_STALE_STATEID));
        assert!(find(&t, 1, &stateid4 { seqid: 1, other: mine[0] }).is_ok());
        t.new_state(open_rec(2, 1)).unwrap();
        t.new_state(open_rec(3, 1)).unwrap();
        assert_eq!(t.new_state(open_rec(4, 1)), Err(nfsstat4::NFS4ERR_DELAY), "the server's cap");
        assert_eq!((t.states.held_by(1), t.states.held_by(2), t.states.len()), (3, 1, 5));
        t.states.remove(&mine[0]);
        t.states.retain(|_, r| r.clientid != 2);
        assert_eq!((t.states.held_by(1), t.states.held_by(2), t.states.len()), (2, 0, 3));
        t.purge_client(1);
        assert_eq!((t.states.held_by(1), t.states.len()), (0, 1));
    }

    #[test]
    fn full_client_table_costs_the_offender() {
        let lease = Duration::from_secs(60);
        let mut t = StateTable::new(1, vec![], lease);
        t.caps = StateCaps { max_clients: 8, max_clients_per_address: 4, ..StateCaps::default() };
        let victim = client(&mut t, "victim", "127.0.0.1", true);
        let pending = client(&mut t, "victim-pending", "127.0.0.1", false);
        let mut theirs: Vec<u64> = (0..3).map(|i| client(&mut t, &format!("u{i}"), "127.0.0.2", false)).collect();
        theirs.push(client(&mut t, "c0", "127.0.0.2", true));
        // The attacker's address is at its cap: its own unconfirmed ones go.
        let gone = t.make_room_for_client("127.0.0.2".parse().unwrap(), lease).unwrap();
        assert_eq!(gone.len(), 3);
        assert!(t.clients.contains_key(&victim) && t.clients.contains_key(&pending) && t.clients.contains_key(&theirs[3]));
        // Confirmed and renewed ones stay: DELAY, for that address only.
        for i in 1..4 {
            client(&mut t, &format!("c{i}"), "127.0.0.2", true);
        }
        assert!(t.make_room_for_client("127.0.0.2".parse().unwrap(), lease).is_err());
        assert!(t.make_room_for_client("127.0.0.1".parse().unwrap(), lease).unwrap().is_empty());
        // A full table: unconfirmed clients of any address make room.
        client(&mut t, "d0", "127.0.0.3", true);
        client(&mut t, "d1", "127.0.0.3", true);
        assert_eq!(t.clients.len(), 8);
        let gone = t.make_room_for_client("127.0.0.4".parse().unwrap(), lease).unwrap();
        assert_eq!(gone.iter().map(|c| c.clientid).collect::<Vec<_>>(), vec![pending]);
        // Client IDs carry the owner's tag and are not sequential.
        assert_eq!(victim >> 32, pnfs_protocol::session::owner_tag(b"victim") as u64);
        let (a, b) = (t.new_clientid(b"x"), t.new_clientid(b"x"));
        assert!((a as u32).abs_diff(b as u32) > 1 << 8, "{a:#x} {b:#x}");
    }

    #[test]
    fn posix_lock_split_and_conflict() {
        let mut t = StateTable::new(1, vec![], Duration::from_secs(1));
        t.set_lock(9, 1, b"a", 0, 100, Some(true));
        assert!(t.lock_conflict(9, 2, b"b", 50, 60, false).is_some());
        assert!(t.lock_conflict(9, 1, b"a", 50, 60, true).is_none());
        // unlock the middle: two pieces remain
        t.set_lock(9, 1, b"a", 40, 60, None);
        assert!(t.lock_conflict(9, 2, b"b", 45, 55, true).is_none());
        assert!(t.lock_conflict(9, 2, b"b", 30, 45, true).is_some());
        assert_eq!(t.locks[&9].len(), 2);
        // downgrade part to read: readers may share it
        t.set_lock(9, 1, b"a", 0, 40, Some(false));
        assert!(t.lock_conflict(9, 2, b"b", 0, 10, false).is_none());
        assert!(t.lock_conflict(9, 2, b"b", 0, 10, true).is_some());
        t.purge_client(1);
        assert!(t.locks.is_empty());
        assert_eq!(lock_range(5, u64::MAX).unwrap(), (5, u64::MAX));
        assert_eq!(lock_range(5, 0).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
        assert_eq!(lock_range(u64::MAX - 1, 5).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
    }
}

//! Client, session and open/lock state (RFC 8881 chapters 2.10, 8, 9).
//!
//! All of it lives in memory behind one mutex, except the client records
//! needed for reclaim after a restart, which the caller persists. Sessions
//! keep their slot tables behind their own mutex so SEQUENCE does not hold
//! the global lock while a compound runs.

use pnfs_protocol::wire::nfsstat4;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type SessionId = [u8; 16];
pub type StateOther = [u8; 12];

pub use pnfs_protocol::session::{ChannelLimits, SlotTable};

pub struct Session {
    pub id: SessionId,
    pub clientid: u64,
    pub fore: ChannelLimits,
    pub back: ChannelLimits,
    pub cb_program: u32,
    /// Minor version of the CREATE_SESSION; CB_COMPOUNDs must carry it
    /// (the Linux client finds the session only among clients of that
    /// minor version and answers NFS4ERR_BADSESSION otherwise).
    pub minor: u32,
    pub slots: Mutex<SlotTable>,
    /// Connection ids bound for the back channel.
    pub back_conns: Mutex<Vec<u64>>,
}

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKind {
    Open { owner: Vec<u8>, access: u32, deny: u32 },
    Lock { owner: Vec<u8>, open: StateOther },
    Deleg,
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

pub struct StateTable {
    pub epoch: u32,
    pub clients: HashMap<u64, Client>,
    pub sessions: HashMap<SessionId, Arc<Session>>,
    pub states: HashMap<StateOther, StateRec>,
    pub locks: HashMap<u64, Vec<ByteLock>>,
    next_client: u32,
    next_state: u64,
    next_session: u64,
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
            states: HashMap::new(),
            locks: HashMap::new(),
            next_client: 1,
            next_state: 1,
            next_session: 1,
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

    pub fn new_clientid(&mut self) -> u64 {
        let id = ((self.epoch as u64) << 32) | self.next_client as u64;
        self.next_client += 1;
        id
    }

    pub fn new_sessionid(&mut self, clientid: u64) -> SessionId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&clientid.to_be_bytes());
        id[8..].copy_from_slice(&self.next_session.to_be_bytes());
        self.next_session += 1;
        id
    }

    pub fn new_state(&mut self, rec: StateRec) -> StateOther {
        let mut other = [0u8; 12];
        other[..4].copy_from_slice(&self.epoch.to_be_bytes());
        other[4..].copy_from_slice(&self.next_state.to_be_bytes());
        self.next_state += 1;
        self.states.insert(other, rec);
        other
    }

    /// Removes a client and everything it holds.
    pub fn purge_client(&mut self, clientid: u64) -> Option<Client> {
        let c = self.clients.remove(&clientid);
        self.sessions.retain(|_, s| s.clientid != clientid);
        self.states.retain(|_, st| st.clientid != clientid);
        for locks in self.locks.values_mut() {
            locks.retain(|l| l.clientid != clientid);
        }
        self.locks.retain(|_, v| !v.is_empty());
        c
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

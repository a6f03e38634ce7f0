//! DS clients, sessions with their slot tables, and the table of stateids
//! the MDS allowed (tight coupling, RFC 8881 13.9.2).
//!
//! Clients and sessions are NFS-session state created by the clients
//! themselves (EXCHANGE_ID, CREATE_SESSION) on whichever reactor their
//! connection landed on, and used from every reactor their connections
//! reach, so they are shared. Locking: client records (EXCHANGE_ID,
//! CREATE_SESSION, DESTROY_*, lease expiry: rare) sit behind one mutex.
//! Sessions, looked up on every COMPOUND, sit in [`Shards`]: a fixed number
//! of mutex-protected hash maps picked by key hash, so reactors rarely meet
//! on a lock and never hold one across I/O. A session's slot table has its
//! own mutex (as on the MDS); a lease renewal is one atomic store. Lock
//! order: clients -> a shard -> a session's slots; never the reverse.
//!
//! The allowed stateids are control-plane state: an [`AllowedTable`] is a
//! plain map with no lock. The control plane keeps the authoritative one and
//! every reactor its own copy, kept identical by applying the same updates
//! in the same order (see [`crate::bus`]).

use crate::fh::DsFh;
use pnfs_protocol::nfs41::clients::ClientTable as EngineClientTable;
use pnfs_protocol::session::clientid_owner_tag;
use pnfs_protocol::wire::{nfsstat4, stateid4, OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use pnfs_protocol::nfs41::{SessionId, Shards};
pub use pnfs_protocol::session::{ChannelLimits, SlotTable};
pub type StateOther = [u8; 12];

/// Allowed stateids kept at most (the MDS revokes them on CLOSE/expiry);
/// each reactor holds a copy of the table.
pub const MAX_ALLOWED_STATEIDS: usize = 1 << 20;
/// Objects one stateid may be allowed on at one DS (one per stripe placed here).
pub const MAX_OBJECTS_PER_STATEID: usize = 256;
/// DS client records kept at most (each has at least one session when used).
pub const MAX_CLIENTS: usize = 16 * 1024;
/// Sessions per client.
pub const MAX_SESSIONS_PER_CLIENT: usize = 16;

pub use pnfs_protocol::sync::lock;

/// Milliseconds since this process started (lease bookkeeping in atomics).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A client's lease: renewed by every successful SEQUENCE (RFC 8881 8.3).
#[derive(Debug)]
pub struct Lease {
    last_renewed_ms: AtomicU64,
}

impl Lease {
    pub fn new() -> Arc<Lease> {
        Arc::new(Lease { last_renewed_ms: AtomicU64::new(now_ms()) })
    }
    pub fn renew(&self) {
        self.last_renewed_ms.store(now_ms(), Ordering::Relaxed);
    }
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_renewed_ms.load(Ordering::Relaxed)))
    }
}

/// What the DS keeps with a session, beside the engine's session record.
#[derive(Debug)]
pub struct DsSession {
    /// Tag of the client's owner ([`pnfs_protocol::session::owner_tag`]):
    /// the stateids it may use are those the MDS allowed to a client ID
    /// carrying the same tag.
    pub owner_tag: u32,
    /// The client's lease (shared by its sessions).
    pub lease: Arc<Lease>,
}

/// What the DS keeps with a client record: its lease. No persisted
/// records, no grace period, no open state (a DS client's only "state" is
/// its sessions).
#[derive(Debug, Clone)]
pub struct DsClient {
    pub lease: Arc<Lease>,
}

/// A DS session: the engine's record ([`pnfs_protocol::nfs41::Session`]),
/// `owner_tag` and `lease` reached through it.
pub type Session = pnfs_protocol::nfs41::Session<DsSession>;
pub type Client = pnfs_protocol::nfs41::ClientRecord<DsClient>;
pub type ClientEntry = pnfs_protocol::nfs41::clients::ClientEntry<DsClient>;
pub type ClientTable = EngineClientTable<DsClient>;

/// What the MDS allowed for one stateid (CTL_PROC_STATEID_ALLOW).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub fh: DsFh,
    /// OPEN4_SHARE_ACCESS_* bits.
    pub access: u32,
    /// The MDS client ID holding it. Its high half is the tag of that
    /// client's owner ([`pnfs_protocol::session::owner_tag`]): only a DS
    /// client with the same owner may use the stateid (0: any client, for
    /// control callers that name none).
    pub mds_clientid: u64,
    /// Order of allowance: the sequence number of the control update that
    /// carried it (set by [`crate::bus::Bus::publish`]).
    pub gen: u64,
}

/// NFS-session state shared by every reactor (clients and sessions).
pub struct DsState {
    /// Random per boot: the high half of client IDs (the low half is
    /// random), so no client ID of an earlier boot is mistaken for a
    /// current one. Session IDs are all random.
    pub boot: u32,
    pub clients: Mutex<ClientTable>,
    pub sessions: Shards<SessionId, Arc<Session>>,
}

impl DsState {
    pub fn new(boot: u32) -> DsState {
        DsState { boot, clients: Mutex::new(ClientTable::new()), sessions: Shards::new() }
    }

    pub fn clients(&self) -> MutexGuard<'_, ClientTable> {
        lock(&self.clients)
    }

    /// Removes a client and its sessions (caller holds the client table).
    pub fn purge_client(&self, t: &mut ClientTable, clientid: u64) -> Option<Arc<ClientEntry>> {
        t.purge(&mut &self.sessions, clientid)
    }

    /// Drops clients silent for longer than `lease` (plus half a lease of
    /// slack for the client's renewal timer); returns how many went.
    pub fn expire(&self, lease: Duration) -> usize {
        let limit = lease + lease / 2;
        let mut t = self.clients();
        let dead = t.expire(&mut &self.sessions, |c| c.ext.lease.idle_for() > limit);
        for c in &dead {
            log::info!("DS client {:#x} expired after {:?} of silence", c.clientid, c.lock().lease.idle_for());
        }
        dead.len()
    }
}

/// The stateids the MDS allowed (CTL_PROC_STATEID_ALLOW): per stateid
/// `other`, the objects (usually one per DS) it may do I/O on. No lock:
/// each owner (the control plane's authoritative copy, each reactor's
/// replica) has its own. Lookups hash a 12-byte key and allocate nothing.
#[derive(Debug, Default)]
pub struct AllowedTable {
    map: HashMap<StateOther, Vec<Allowed>>,
}

impl AllowedTable {
    pub fn new() -> AllowedTable {
        AllowedTable::default()
    }

    /// Stateids allowed.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether [`AllowedTable::allow`] of `other` on `fh` fits in the bounds
    /// ([`MAX_ALLOWED_STATEIDS`], [`MAX_OBJECTS_PER_STATEID`]).
    pub fn admits(&self, other: &StateOther, fh: &DsFh) -> bool {
        match self.map.get(other) {
            Some(objs) => objs.len() < MAX_OBJECTS_PER_STATEID || objs.iter().any(|x| x.fh == *fh),
            None => self.map.len() < MAX_ALLOWED_STATEIDS,
        }
    }

    /// Allows (or re-allows with new access bits and generation) `other` on
    /// `a.fh`. False, and nothing changed, when the table is full
    /// ([`AllowedTable::admits`]).
    pub fn allow(&mut self, other: StateOther, a: Allowed) -> bool {
        if !self.admits(&other, &a.fh) {
            return false;
        }
        let objs = self.map.entry(other).or_default();
        match objs.iter_mut().find(|x| x.fh == a.fh) {
            Some(x) => *x = a,
            None => objs.push(a),
        }
        true
    }

    /// CTL_PROC_STATEID_REVOKE. True when it was known.
    pub fn revoke(&mut self, other: &StateOther) -> bool {
        self.map.remove(other).is_some()
    }

    /// After the MDS restarted (new epoch) the stateids of its previous
    /// instance mean nothing: drops those allowed before generation `gen`
    /// (taken before sending REGISTER, so whatever the new MDS pushes in
    /// answer to it stays).
    pub fn forget_before(&mut self, gen: u64) {
        self.map.retain(|_, v| {
            v.retain(|a| a.gen >= gen);
            !v.is_empty()
        });
    }

    /// Tight coupling check for READ/WRITE: the stateid's `other` must be one
    /// the MDS allowed for this very object; its seqid is ignored (Linux sends
    /// 0). Special stateids (anonymous, READ bypass, current, invalid) are
    /// refused: no operation on a DS produces a current stateid and RFC 8881
    /// 13.9.1 forbids special stateids for DS I/O.
    ///
    /// `client_tag` is the owner tag of the DS client presenting it (its
    /// session's [`Session::owner_tag`]); a stateid the MDS allowed to a
    /// client of another owner is refused as if unknown.
    ///
    /// Errors: unknown, revoked, special, another client's or another
    /// object's stateid -> NFS4ERR_BAD_STATEID; WRITE through a stateid without WRITE access ->
    /// NFS4ERR_OPENMODE (RFC 8881 8.2.2/18.38.3, as the MDS would answer; the
    /// Linux client then redoes the I/O through the MDS). READ is allowed
    /// with any access the open has (knfsd does the same for write-only opens).
    pub fn check_io(&self, sid: &stateid4, fh: &DsFh, write: bool, client_tag: u32) -> Result<(), nfsstat4> {
        if sid.other == [0u8; 12] || sid.other == [0xffu8; 12] {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        let objs = self.map.get(&sid.other).ok_or(nfsstat4::NFS4ERR_BAD_STATEID)?;
        let a = objs.iter().find(|x| x.fh == *fh).ok_or(nfsstat4::NFS4ERR_BAD_STATEID)?;
        let owner = clientid_owner_tag(a.mds_clientid);
        if owner != 0 && owner != client_tag {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        if write && a.access & OPEN4_SHARE_ACCESS_WRITE == 0 {
            return Err(nfsstat4::NFS4ERR_OPENMODE);
        }
        if a.access & (OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WRITE) == 0 {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::session::owner_tag;
    use pnfs_protocol::wire::OPEN4_SHARE_ACCESS_BOTH;

    fn sid(seqid: u32, o: u8) -> stateid4 {
        stateid4 { seqid, other: [o; 12] }
    }

    fn allowed(fh: DsFh, access: u32, gen: u64) -> Allowed {
        Allowed { fh, access, mds_clientid: 9, gen }
    }

    #[test]
    fn stateid_checks() {
        let mut st = AllowedTable::new();
        let fh = DsFh { stripe: 0, ino: 5, generation: 1 };
        let other_fh = DsFh { stripe: 1, ino: 5, generation: 1 };
        assert!(st.allow([1; 12], allowed(fh, OPEN4_SHARE_ACCESS_READ, 1)));
        assert!(st.allow([2; 12], allowed(fh, OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WRITE, 2)));
        // any seqid, 0 included
        for seq in [0, 1, 77, u32::MAX] {
            assert_eq!(st.check_io(&sid(seq, 1), &fh, false, 0), Ok(()));
            assert_eq!(st.check_io(&sid(seq, 2), &fh, true, 0), Ok(()));
        }
        assert_eq!(st.check_io(&sid(0, 1), &fh, true, 0), Err(nfsstat4::NFS4ERR_OPENMODE));
        assert_eq!(st.check_io(&sid(0, 2), &other_fh, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        // a second object for the same stateid, and widening its access
        assert!(st.allow([1; 12], allowed(other_fh, OPEN4_SHARE_ACCESS_READ, 3)));
        assert_eq!(st.check_io(&sid(0, 1), &other_fh, false, 0), Ok(()));
        assert!(st.allow([1; 12], allowed(other_fh, OPEN4_SHARE_ACCESS_BOTH, 4)));
        assert_eq!(st.check_io(&sid(0, 1), &other_fh, true, 0), Ok(()));
        assert_eq!(st.check_io(&sid(0, 1), &fh, true, 0), Err(nfsstat4::NFS4ERR_OPENMODE));
        assert_eq!(st.check_io(&sid(0, 3), &fh, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        // special stateids
        assert_eq!(st.check_io(&sid(0, 0), &fh, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        assert_eq!(st.check_io(&sid(1, 0), &fh, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        assert_eq!(st.check_io(&sid(u32::MAX, 0xff), &fh, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        // revoke
        assert!(st.revoke(&[2; 12]));
        assert!(!st.revoke(&[2; 12]));
        assert_eq!(st.check_io(&sid(0, 2), &fh, true, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        // forgetting by generation: [1;12] on fh has gen 1, on other_fh 4
        assert!(st.allow([4; 12], allowed(fh, OPEN4_SHARE_ACCESS_READ, 5)));
        st.forget_before(4);
        assert_eq!(st.check_io(&sid(0, 1), &fh, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        assert_eq!(st.check_io(&sid(0, 1), &other_fh, false, 0), Ok(()));
        assert_eq!(st.check_io(&sid(0, 4), &fh, false, 0), Ok(()));
        st.forget_before(u64::MAX);
        assert!(st.is_empty());
    }

    #[test]
    fn stateids_bound_to_their_client() {
        let mut st = AllowedTable::new();
        let fh = DsFh { stripe: 0, ino: 5, generation: 1 };
        let (a, b) = (owner_tag(b"client A"), owner_tag(b"client B"));
        let access = OPEN4_SHARE_ACCESS_READ;
        assert!(st.allow([1; 12], Allowed { fh, access, mds_clientid: (a as u64) << 32 | 77, gen: 1 }));
        assert_eq!(st.check_io(&sid(0, 1), &fh, false, a), Ok(()));
        assert_eq!(st.check_io(&sid(0, 1), &fh, false, b), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        // Allowed naming no client: any client (control callers' own stateids).
        assert!(st.allow([2; 12], Allowed { fh, access, mds_clientid: 77, gen: 2 }));
        assert_eq!(st.check_io(&sid(0, 2), &fh, false, b), Ok(()));
    }

    #[test]
    fn ids_are_not_sequential() {
        let st = DsState::new(3);
        let mut t = st.clients();
        let (c1, c2) = (t.new_clientid(st.boot), t.new_clientid(st.boot));
        assert_eq!((c1 >> 32, c2 >> 32), (3, 3));
        assert!((c1 as u32).abs_diff(c2 as u32) > 1 << 8, "{c1:#x} {c2:#x}");
        let (s1, s2) = (t.new_sessionid(&mut &st.sessions), t.new_sessionid(&mut &st.sessions));
        assert_ne!(s1[..8], s2[..8]);
        assert_ne!(s1[8..], s2[8..]);
    }

    #[test]
    fn allowed_table_bounds() {
        let mut st = AllowedTable::new();
        let fh = |i: u64| DsFh { stripe: 0, ino: i, generation: 1 };
        for i in 0..MAX_OBJECTS_PER_STATEID as u64 {
            assert!(st.allow([1; 12], allowed(fh(i), OPEN4_SHARE_ACCESS_READ, 1)));
        }
        let last = fh(MAX_OBJECTS_PER_STATEID as u64);
        assert!(!st.admits(&[1; 12], &last));
        assert!(!st.allow([1; 12], allowed(last, OPEN4_SHARE_ACCESS_READ, 2)));
        assert_eq!(st.check_io(&sid(0, 1), &last, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        // re-allowing a known object always fits
        assert!(st.admits(&[1; 12], &fh(0)));
        assert!(st.allow([1; 12], allowed(fh(0), OPEN4_SHARE_ACCESS_BOTH, 3)));
        assert_eq!(st.len(), 1);
    }

    #[test]
    fn expiry_purges_sessions() {
        let st = DsState::new(1);
        let mut t = st.clients();
        let id = t.new_clientid(st.boot);
        assert_eq!(id >> 32, 1);
        let lease = Lease::new();
        let sid = t.new_sessionid(&mut &st.sessions);
        let limits = ChannelLimits { max_request: 1, max_response: 1, max_response_cached: 1, max_ops: 1, max_requests: 1 };
        st.sessions.insert(
            sid,
            Arc::new(Session {
                id: sid,
                clientid: id,
                fore: limits,
                back: limits,
                cb_program: 0,
                minor: 1,
                slots: Mutex::new(SlotTable::new(1)),
                back_conns: Mutex::new(vec![]),
                ext: DsSession { owner_tag: 0, lease: lease.clone() },
            }),
        );
        t.insert(Client {
            clientid: id,
            owner: b"o".to_vec(),
            verifier: [0; 8],
            confirmed: true,
            principal: None,
            cs_sequence: 2,
            cs_reply: None,
            sessions: vec![sid],
            reclaim_complete: false,
            ext: DsClient { lease },
        });
        drop(t);
        assert_eq!(st.expire(Duration::from_secs(60)), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(st.expire(Duration::from_millis(5)), 1);
        assert!(st.sessions.get(&sid).is_none());
        assert!(st.clients().is_empty());
    }
}

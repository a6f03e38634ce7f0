//! Client records (RFC 8881 2.4, 18.35-18.37, 18.51): EXCHANGE_ID with its
//! confirm/replace rules, the confirmation by CREATE_SESSION (see
//! [`super::sessions::create_session`]), DESTROY_CLIENTID and
//! RECLAIM_COMPLETE, over a table indexed by client ID and by owner.
//!
//! A plane keeps what only it needs in the record's `ext` (a lease, the
//! caller's address, the states it holds) and decides through
//! [`ClientHooks`] who is busy, how to make room in a full table and what
//! to drop with a purged client.
//!
//! Locking: the table (its maps by ID and by owner) is the caller's to
//! lock, and every call that changes who is a client takes it `&mut`. Each
//! record sits behind its own mutex ([`ClientEntry`]), a leaf: a plane may
//! keep the entries in indexes of its own and reach one client (SEQUENCE,
//! OPEN) without the table's lock, so independent clients do not contend.
//! The engine never calls a [`SessionStore`] or a hook while it holds a
//! record's lock (except [`ClientHooks::busy`], given the locked record).

use super::sessions::{SessionId, SessionStore};
use crate::session::{plan_exchange_id, ExchangeIdPlan, IdMinter, KnownClient, Principal};
use crate::sync::lock;
use crate::wire::{nfsstat4, EXCHANGE_ID4args};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One client ID.
#[derive(Debug, Clone)]
pub struct ClientRecord<X> {
    pub clientid: u64,
    /// `co_ownerid`: the same for every instance of one client.
    pub owner: Vec<u8>,
    /// `co_verifier`: changes when the client reboots.
    pub verifier: [u8; 8],
    /// Confirmed by a CREATE_SESSION.
    pub confirmed: bool,
    /// Who created the client ID (AUTH_SYS uid/gid); None for AUTH_NONE.
    pub principal: Principal,
    /// Next expected csa_sequence for CREATE_SESSION.
    pub cs_sequence: u32,
    /// The last CREATE_SESSION4resok, encoded, answered again to a
    /// retransmission of that CREATE_SESSION.
    pub cs_reply: Option<Vec<u8>>,
    pub sessions: Vec<SessionId>,
    pub reclaim_complete: bool,
    /// What the plane keeps per client (reachable through `Deref`:
    /// `record.lease` for `record.ext.lease`).
    pub ext: X,
}

impl<X> std::ops::Deref for ClientRecord<X> {
    type Target = X;
    fn deref(&self) -> &X {
        &self.ext
    }
}

impl<X> std::ops::DerefMut for ClientRecord<X> {
    fn deref_mut(&mut self) -> &mut X {
        &mut self.ext
    }
}

/// One client: its record behind its own mutex (a leaf in any lock order).
#[derive(Debug)]
pub struct ClientEntry<X> {
    pub clientid: u64,
    record: Mutex<ClientRecord<X>>,
}

impl<X> ClientEntry<X> {
    pub fn new(record: ClientRecord<X>) -> ClientEntry<X> {
        ClientEntry { clientid: record.clientid, record: Mutex::new(record) }
    }

    pub fn lock(&self) -> MutexGuard<'_, ClientRecord<X>> {
        lock(&self.record)
    }
}

impl<X: Clone> ClientEntry<X> {
    /// A copy of the record.
    pub fn record(&self) -> ClientRecord<X> {
        self.lock().clone()
    }
}

/// What a full client table does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Clients to purge first.
    pub purge: Vec<u64>,
    /// After that purge, whether one more client fits (else NFS4ERR_DELAY).
    pub fits: bool,
}

/// A plane's policies over its client records.
pub trait ClientHooks<X> {
    /// Whether the client holds sessions or state: another principal may
    /// not take its owner over, and DESTROY_CLIENTID is refused.
    fn busy(&self, c: &ClientRecord<X>) -> bool {
        !c.sessions.is_empty()
    }
    /// The high 32 bits of a new client ID for `owner` (its low 32 bits
    /// are random).
    fn clientid_high(&self, owner: &[u8]) -> u32;
    /// The plane's part of a new record.
    fn new_client(&mut self, owner: &[u8]) -> X;
    /// A new record is in the table (the plane indexes or persists it).
    fn added(&mut self, _c: &Arc<ClientEntry<X>>) {}
    /// Asked before a new record is added: whom to evict, and whether it
    /// then fits.
    fn make_room(&mut self, _t: &ClientTable<X>) -> Room {
        Room { purge: vec![], fits: true }
    }
    /// A client went (out of the table, its sessions already out of the
    /// session store; the list stays in its record): drop what the plane
    /// holds for it.
    fn purged(&mut self, _c: &Arc<ClientEntry<X>>) {}
}

/// What EXCHANGE_ID answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeIdOk {
    pub clientid: u64,
    /// An existing confirmed record (EXCHGID4_FLAG_CONFIRMED_R).
    pub confirmed: bool,
    /// eir_sequenceid: the csa_sequence CREATE_SESSION must carry.
    pub sequenceid: u32,
}

/// The client records of one server, by client ID and by owner.
#[derive(Debug)]
pub struct ClientTable<X> {
    clients: HashMap<u64, Arc<ClientEntry<X>>>,
    by_owner: HashMap<Vec<u8>, Vec<u64>>,
    /// Client and session IDs: unguessable (RFC 8881 2.10.3).
    ids: IdMinter,
}

impl<X> Default for ClientTable<X> {
    fn default() -> Self {
        ClientTable::new()
    }
}

impl<X> ClientTable<X> {
    pub fn new() -> ClientTable<X> {
        ClientTable::with_minter(IdMinter::new())
    }

    pub fn with_minter(ids: IdMinter) -> ClientTable<X> {
        ClientTable { clients: HashMap::new(), by_owner: HashMap::new(), ids }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub fn get(&self, clientid: u64) -> Option<&Arc<ClientEntry<X>>> {
        self.clients.get(&clientid)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<ClientEntry<X>>> {
        self.clients.values()
    }

    /// The client IDs of one owner (usually one; two while a rebooted
    /// client's new ID awaits confirmation).
    pub fn of_owner(&self, owner: &[u8]) -> &[u64] {
        self.by_owner.get(owner).map_or(&[], |v| v.as_slice())
    }

    /// Adds (or replaces) a record.
    pub fn insert(&mut self, c: ClientRecord<X>) -> Arc<ClientEntry<X>> {
        let id = c.clientid;
        let ids = self.by_owner.entry(c.owner.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
        let owner = c.owner.clone();
        let entry = Arc::new(ClientEntry::new(c));
        if let Some(old) = self.clients.insert(id, entry.clone()) {
            let old_owner = old.lock().owner.clone();
            if old_owner != owner {
                self.unindex(&old_owner, id);
            }
        }
        entry
    }

    fn unindex(&mut self, owner: &[u8], id: u64) {
        if let Some(ids) = self.by_owner.get_mut(owner) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    /// Removes a record alone (its sessions stay: see [`ClientTable::purge`]).
    pub fn remove(&mut self, clientid: u64) -> Option<Arc<ClientEntry<X>>> {
        let c = self.clients.remove(&clientid)?;
        let owner = c.lock().owner.clone();
        self.unindex(&owner, clientid);
        Some(c)
    }

    /// Removes a client and its sessions.
    pub fn purge<S>(&mut self, sessions: &mut impl SessionStore<S>, clientid: u64) -> Option<Arc<ClientEntry<X>>> {
        let c = self.remove(clientid)?;
        // Not under the record's lock: the store may take locks of its own.
        let sids = c.lock().sessions.clone();
        for sid in &sids {
            sessions.remove(sid);
        }
        Some(c)
    }

    /// Purges `clientid` and hands the record to the plane.
    pub fn purge_with<S>(
        &mut self,
        sessions: &mut impl SessionStore<S>,
        hooks: &mut impl ClientHooks<X>,
        clientid: u64,
    ) -> Option<Arc<ClientEntry<X>>> {
        let c = self.purge(sessions, clientid)?;
        hooks.purged(&c);
        Some(c)
    }

    /// A client ID not in use: `high` in the high half, 32 random bits
    /// (never 0) in the low half.
    pub fn new_clientid(&mut self, high: u32) -> u64 {
        loop {
            let id = ((high as u64) << 32) | (self.ids.next_u64() & 0xffff_ffff);
            if id as u32 != 0 && !self.clients.contains_key(&id) {
                return id;
            }
        }
    }

    /// 16 random bytes not in use as a session ID.
    pub fn new_sessionid<S>(&mut self, sessions: &mut impl SessionStore<S>) -> SessionId {
        loop {
            let id = self.ids.next_16();
            if !sessions.contains(&id) {
                return id;
            }
        }
    }

    /// EXCHANGE_ID (RFC 8881 18.35.4): reuses this owner's confirmed record
    /// of the same instance, or purges what the rules say and creates an
    /// unconfirmed one (making room through the plane's hook first). The
    /// caller renews the lease and builds the reply.
    pub fn exchange_id<S>(
        &mut self,
        sessions: &mut impl SessionStore<S>,
        hooks: &mut impl ClientHooks<X>,
        a: &EXCHANGE_ID4args,
        principal: Principal,
    ) -> Result<ExchangeIdOk, nfsstat4> {
        let owner = a.eia_clientowner.co_ownerid.as_bytes();
        let known: Vec<KnownClient> = self
            .of_owner(owner)
            .iter()
            .filter_map(|id| self.clients.get(id))
            .map(|e| {
                let cl = e.lock();
                KnownClient {
                    clientid: cl.clientid,
                    confirmed: cl.confirmed,
                    verifier: cl.verifier,
                    principal: cl.principal,
                    busy: hooks.busy(&cl),
                }
            })
            .collect();
        let (clientid, confirmed) = match plan_exchange_id(a, principal, &known)? {
            ExchangeIdPlan::Reuse { clientid, confirmed } => (clientid, confirmed),
            ExchangeIdPlan::Create { purge } => {
                for id in purge {
                    self.purge_with(sessions, hooks, id);
                }
                let room = hooks.make_room(self);
                for id in room.purge {
                    self.purge_with(sessions, hooks, id);
                }
                if !room.fits {
                    return Err(nfsstat4::NFS4ERR_DELAY);
                }
                let id = self.new_clientid(hooks.clientid_high(owner));
                let ext = hooks.new_client(owner);
                let entry = self.insert(ClientRecord {
                    clientid: id,
                    owner: owner.to_vec(),
                    verifier: a.eia_clientowner.co_verifier,
                    confirmed: false,
                    principal,
                    cs_sequence: 1,
                    cs_reply: None,
                    sessions: vec![],
                    reclaim_complete: false,
                    ext,
                });
                hooks.added(&entry);
                (id, false)
            }
        };
        Ok(ExchangeIdOk { clientid, confirmed, sequenceid: self.clients[&clientid].lock().cs_sequence })
    }

    /// DESTROY_CLIENTID (RFC 8881 18.50): only its creator, only when it
    /// holds nothing. Purges it through the plane's hook and returns it
    /// (the plane forgets what it persisted of it).
    pub fn destroy_clientid<S>(
        &mut self,
        sessions: &mut impl SessionStore<S>,
        hooks: &mut impl ClientHooks<X>,
        clientid: u64,
        principal: Principal,
    ) -> Result<Arc<ClientEntry<X>>, nfsstat4> {
        {
            let cl = self.clients.get(&clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?.lock();
            check_principal(Some(&cl), principal)?;
            if hooks.busy(&cl) {
                return Err(nfsstat4::NFS4ERR_CLIENTID_BUSY);
            }
        }
        self.purge_with(sessions, hooks, clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)
    }

    /// RECLAIM_COMPLETE for the whole server (RFC 8881 18.51): once per
    /// client. Returns the client.
    pub fn reclaim_complete(&self, clientid: u64) -> Result<&Arc<ClientEntry<X>>, nfsstat4> {
        let e = self.clients.get(&clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?;
        let mut cl = e.lock();
        if cl.reclaim_complete {
            return Err(nfsstat4::NFS4ERR_COMPLETE_ALREADY);
        }
        cl.reclaim_complete = true;
        Ok(e)
    }

    /// Purges every client `expired` says is gone; returns them.
    pub fn expire<S>(
        &mut self,
        sessions: &mut impl SessionStore<S>,
        expired: impl Fn(&ClientRecord<X>) -> bool,
    ) -> Vec<Arc<ClientEntry<X>>> {
        let dead: Vec<u64> = self.clients.values().filter(|e| expired(&e.lock())).map(|e| e.clientid).collect();
        dead.into_iter().filter_map(|id| self.purge(sessions, id)).collect()
    }
}

/// RFC 8881 2.10.8.3 with SP4_NONE: only the principal that created a
/// client ID (AUTH_SYS uid/gid at EXCHANGE_ID) may destroy it or its
/// sessions or bind connections to them: NFS4ERR_WRONG_CRED for others.
/// A plane adds its own checks (the MDS: the caller's address) before.
pub fn check_principal<X>(owner: Option<&ClientRecord<X>>, principal: Principal) -> Result<(), nfsstat4> {
    match owner {
        Some(cl) if cl.principal != principal => Err(nfsstat4::NFS4ERR_WRONG_CRED),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::nfs41::sessions::Session;
    use crate::session::{EXCHGID4_FLAG_UPD_CONFIRMED_REC_A, IdMinter};
    use crate::wire::{client_owner4, state_protect4_a};

    pub type Sessions = HashMap<SessionId, Arc<Session<()>>>;

    /// Policies of a test plane: busy when it has sessions or `held`
    /// says so; the purged records are kept to be looked at.
    #[derive(Default)]
    pub struct Hooks {
        pub held: Vec<u64>,
        pub room: Option<Room>,
        pub purged: Vec<u64>,
    }

    impl ClientHooks<()> for Hooks {
        fn busy(&self, c: &ClientRecord<()>) -> bool {
            !c.sessions.is_empty() || self.held.contains(&c.clientid)
        }
        fn clientid_high(&self, owner: &[u8]) -> u32 {
            owner.len() as u32
        }
        fn new_client(&mut self, _owner: &[u8]) {}
        fn make_room(&mut self, _t: &ClientTable<()>) -> Room {
            self.room.take().unwrap_or(Room { purge: vec![], fits: true })
        }
        fn purged(&mut self, c: &Arc<ClientEntry<()>>) {
            self.purged.push(c.clientid);
        }
    }

    pub fn args(owner: &[u8], verf: u8, flags: u32) -> EXCHANGE_ID4args<'_> {
        EXCHANGE_ID4args {
            eia_clientowner: client_owner4 { co_verifier: [verf; 8], co_ownerid: owner.into() },
            eia_flags: flags,
            eia_state_protect: state_protect4_a::SP4_NONE,
            eia_client_impl_id: vec![],
        }
    }

    pub fn table() -> ClientTable<()> {
        ClientTable::with_minter(IdMinter::with_key([7; 16]))
    }

    const ME: Principal = Some((1000, 1000));
    const OTHER: Principal = Some((2000, 2000));

    fn confirm(t: &mut ClientTable<()>, id: u64) {
        t.get(id).unwrap().lock().confirmed = true;
    }

    /// RFC 8881 18.35.4's cases, through the table.
    #[test]
    fn exchange_id_cases() {
        let (mut t, mut s, mut h) = (table(), Sessions::new(), Hooks::default());
        // Case 1, a new owner: a new unconfirmed record; its high half is
        // the plane's, sequenceid 1.
        let a = t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), ME).unwrap();
        assert_eq!((a.clientid >> 32, a.confirmed, a.sequenceid), (4, false, 1));
        assert_eq!(t.of_owner(b"host"), &[a.clientid]);
        // Case 4-like, an unconfirmed record retried: replaced by a new one.
        let b = t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), ME).unwrap();
        assert_ne!(b.clientid, a.clientid);
        assert!(t.get(a.clientid).is_none());
        assert_eq!(h.purged, vec![a.clientid]);
        // Case 2, the same confirmed instance again: the same client ID.
        confirm(&mut t, b.clientid);
        let again = t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), ME).unwrap();
        assert_eq!((again.clientid, again.confirmed), (b.clientid, true));
        // Case 5, the client rebooted (new verifier): a new unconfirmed ID
        // while the confirmed one stays until CREATE_SESSION confirms it.
        let reboot = t.exchange_id(&mut s, &mut h, &args(b"host", 2, 0), ME).unwrap();
        assert!(!reboot.confirmed && reboot.clientid != b.clientid);
        assert!(t.get(b.clientid).is_some());
        assert_eq!(t.of_owner(b"host").len(), 2);
        // Case 3, another principal with a confirmed owner: refused while
        // that client holds state, replaced when it holds none.
        h.held.push(b.clientid);
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), OTHER), Err(nfsstat4::NFS4ERR_CLID_INUSE));
        h.held.clear();
        let taken = t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), OTHER).unwrap();
        assert!(t.get(b.clientid).is_none() && t.get(reboot.clientid).is_none());
        assert_eq!(t.of_owner(b"host"), &[taken.clientid]);
        // Update of a confirmed record (6, 7, 8): only the same principal
        // and verifier; none confirmed: NOENT.
        let upd = EXCHGID4_FLAG_UPD_CONFIRMED_REC_A;
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"host", 1, upd), OTHER), Err(nfsstat4::NFS4ERR_NOENT));
        confirm(&mut t, taken.clientid);
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"host", 1, upd), ME), Err(nfsstat4::NFS4ERR_PERM));
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"host", 9, upd), OTHER), Err(nfsstat4::NFS4ERR_NOT_SAME));
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"host", 1, upd), OTHER).map(|o| o.clientid), Ok(taken.clientid));
        // Flags a client may not send.
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"x", 1, 0x4), ME), Err(nfsstat4::NFS4ERR_INVAL));
    }

    #[test]
    fn a_full_table_makes_room_or_answers_delay() {
        let (mut t, mut s, mut h) = (table(), Sessions::new(), Hooks::default());
        let a = t.exchange_id(&mut s, &mut h, &args(b"a", 1, 0), ME).unwrap();
        h.room = Some(Room { purge: vec![a.clientid], fits: true });
        let b = t.exchange_id(&mut s, &mut h, &args(b"b", 1, 0), ME).unwrap();
        assert!(t.get(a.clientid).is_none() && t.of_owner(b"a").is_empty());
        assert_eq!(h.purged, vec![a.clientid]);
        h.room = Some(Room { purge: vec![], fits: false });
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"c", 1, 0), ME), Err(nfsstat4::NFS4ERR_DELAY));
        assert_eq!(t.len(), 1);
        // Reusing a confirmed record needs no room.
        confirm(&mut t, b.clientid);
        h.room = Some(Room { purge: vec![], fits: false });
        assert_eq!(t.exchange_id(&mut s, &mut h, &args(b"b", 1, 0), ME).map(|o| o.clientid), Ok(b.clientid));
    }

    #[test]
    fn destroy_clientid_and_reclaim_complete() {
        let (mut t, mut s, mut h) = (table(), Sessions::new(), Hooks::default());
        let a = t.exchange_id(&mut s, &mut h, &args(b"a", 1, 0), ME).unwrap().clientid;
        assert_eq!(t.destroy_clientid(&mut s, &mut h, a + 1, ME).unwrap_err(), nfsstat4::NFS4ERR_STALE_CLIENTID);
        assert_eq!(t.destroy_clientid(&mut s, &mut h, a, OTHER).unwrap_err(), nfsstat4::NFS4ERR_WRONG_CRED);
        h.held.push(a);
        assert_eq!(t.destroy_clientid(&mut s, &mut h, a, ME).unwrap_err(), nfsstat4::NFS4ERR_CLIENTID_BUSY);
        assert!(t.reclaim_complete(a).is_ok());
        assert_eq!(t.reclaim_complete(a).unwrap_err(), nfsstat4::NFS4ERR_COMPLETE_ALREADY);
        h.held.clear();
        assert_eq!(t.destroy_clientid(&mut s, &mut h, a, ME).unwrap().clientid, a);
        assert!(t.is_empty() && t.of_owner(b"a").is_empty());
        assert_eq!(h.purged, vec![a], "the plane is told");
        assert_eq!(t.reclaim_complete(a).unwrap_err(), nfsstat4::NFS4ERR_STALE_CLIENTID);
    }
}

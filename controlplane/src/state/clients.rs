//! Client records (RFC 8881 2.4, 18.35): EXCHANGE_ID, DESTROY_CLIENTID and
//! RECLAIM_COMPLETE run on the shared engine's [`ClientTable`] (the owner
//! and verifier rules, confirmed and unconfirmed records, the principal
//! checks: [`pnfs_protocol::nfs41::clients`]). What only the MDS does comes
//! in through [`MdsHooks`]: the caps on clients (per address and in all),
//! the index by client ID that SEQUENCE and OPEN use without the registry,
//! the records emitted for reclaim after a restart, and the purge of a
//! client's states and sessions with its effects. Grace and lease expiry
//! are here too.

use super::*;
use pnfs_protocol::nfs41::clients::{ClientHooks, ClientRecord, ClientTable, ExchangeIdOk, Room};
use pnfs_protocol::nfs41::SessionStore;
use pnfs_protocol::session::Principal;
use pnfs_protocol::wire::EXCHANGE_ID4args;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

/// What the MDS keeps with a client record, beside the engine's fields
/// (owner, verifier, confirmation, principal, sessions, csa_sequence),
/// reachable through the record (`record.addr`).
#[derive(Debug, Clone)]
pub struct MdsClient {
    pub last_renewed: Instant,
    /// Known from the previous server instance: may reclaim during grace.
    pub may_reclaim: bool,
    /// Address its EXCHANGE_ID came from (mds.max_clients_per_address).
    pub addr: IpAddr,
    /// Every stateid the client holds (its count is the per-client cap).
    pub(super) states: HashSet<StateOther>,
    /// Its layout stateids (LAYOUTRETURN of all layouts).
    pub(super) layouts: HashSet<StateOther>,
    /// How many of its states are revoked (SEQUENCE's status flag).
    pub(super) revoked: usize,
    /// Purged: no state may be added any more.
    pub(super) gone: bool,
}

impl MdsClient {
    /// A client's part holding nothing yet, its lease renewed now.
    pub(super) fn new(addr: IpAddr, may_reclaim: bool) -> MdsClient {
        MdsClient { last_renewed: Instant::now(), may_reclaim, addr, states: HashSet::new(), layouts: HashSet::new(), revoked: 0, gone: false }
    }
}

/// A client record: the engine's, with the MDS's part.
pub type Client = ClientRecord<MdsClient>;

/// One client: its record, with the set of its stateids, behind its own
/// mutex (a leaf in the lock order).
pub type ClientEntry = pnfs_protocol::nfs41::clients::ClientEntry<MdsClient>;

/// Client records by ID and owner (the engine's table), by address; grace.
/// Taken on EXCHANGE_ID, CREATE_SESSION, DESTROY_CLIENTID,
/// RECLAIM_COMPLETE and expiry only.
pub(super) struct Registry {
    /// Client and session IDs are minted here: unguessable (RFC 8881 2.10.3).
    pub(super) table: ClientTable<MdsClient>,
    pub(super) per_addr: HashMap<IpAddr, usize>,
    /// Owners allowed to reclaim (persisted client records of the last
    /// boot), and whether each completed its reclaim.
    reclaimable: HashMap<Vec<u8>, bool>,
    reclaims_pending: usize,
    grace_until: Option<Instant>,
}

impl Registry {
    pub(super) fn new(reclaimable: Vec<Vec<u8>>, grace_until: Option<Instant>) -> Self {
        let reclaimable: HashMap<Vec<u8>, bool> = reclaimable.into_iter().map(|o| (o, false)).collect();
        Registry { table: ClientTable::new(), per_addr: HashMap::new(), reclaims_pending: reclaimable.len(), reclaimable, grace_until }
    }

    /// The table and the MDS's hooks over the rest, for one engine call;
    /// `caller` is the address and lease of an EXCHANGE_ID (new records,
    /// making room), None for calls that only purge.
    pub(super) fn engine<'a>(
        &'a mut self,
        st: &'a StateStore,
        caller: Option<(IpAddr, Duration)>,
        fx: &'a mut Effects,
    ) -> (&'a mut ClientTable<MdsClient>, MdsHooks<'a>) {
        let (addr, lease) = caller.unwrap_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), Duration::ZERO));
        let hooks = MdsHooks { st, per_addr: &mut self.per_addr, reclaimable: &self.reclaimable, addr, lease, fx };
        (&mut self.table, hooks)
    }
}

/// The MDS's policies over the engine's client table.
pub(super) struct MdsHooks<'a> {
    st: &'a StateStore,
    per_addr: &'a mut HashMap<IpAddr, usize>,
    reclaimable: &'a HashMap<Vec<u8>, bool>,
    /// The EXCHANGE_ID's caller and the lease.
    addr: IpAddr,
    lease: Duration,
    fx: &'a mut Effects,
}

impl ClientHooks<MdsClient> for MdsHooks<'_> {
    /// Sessions or any state (opens, locks, layouts, delegations).
    fn busy(&self, c: &Client) -> bool {
        !c.sessions.is_empty() || !c.states.is_empty()
    }

    /// The tag of `owner`, so a data server can tell whether a DS client is
    /// the owner of a stateid ([`pnfs_protocol::session::owner_tag`]).
    /// Knowing a client ID gains nobody anything without its principal.
    fn clientid_high(&self, owner: &[u8]) -> u32 {
        pnfs_protocol::session::owner_tag(owner)
    }

    fn new_client(&mut self, owner: &[u8]) -> MdsClient {
        MdsClient::new(self.addr, self.reclaimable.contains_key(owner))
    }

    fn added(&mut self, e: &Arc<ClientEntry>) {
        self.st.journal_client(&e.lock(), self.fx);
        self.st.index_client(self.per_addr, e);
    }

    /// Makes room for one more client from the caller's address, the
    /// offender paying: when the address holds `caps.max_clients_per_address`
    /// clients, its own unconfirmed ones and those whose lease ran out
    /// holding no open, lock or layout go (a real client among them gets
    /// STALE_CLIENTID at CREATE_SESSION and starts over); when the whole
    /// table is full (`caps.max_clients`), such clients of any address go.
    /// No fit (NFS4ERR_DELAY) when there is still no room: the newcomer
    /// waits and those already in keep working. The reclaim records of
    /// confirmed clients dropped are forgotten.
    fn make_room(&mut self, t: &ClientTable<MdsClient>) -> Room {
        let caps = self.st.caps;
        let addr = self.addr;
        let mut purge = vec![];
        let from_addr = self.per_addr.get(&addr).copied().unwrap_or(0);
        if from_addr >= caps.max_clients_per_address {
            purge = self.idle_clients(t, Some(addr), &[]);
            if from_addr - purge.len() >= caps.max_clients_per_address {
                log::warn!("client table full for {addr}: EXCHANGE_ID answered NFS4ERR_DELAY");
                return Room { purge, fits: false };
            }
        }
        if t.len() - purge.len() >= caps.max_clients {
            let more = self.idle_clients(t, None, &purge);
            purge.extend(more);
            if t.len() - purge.len() >= caps.max_clients {
                log::warn!("client table full: EXCHANGE_ID from {addr} answered NFS4ERR_DELAY");
                return Room { purge, fits: false };
            }
        }
        Room { purge, fits: true }
    }

    /// Drops the client's states (and their byte-range locks), its
    /// sessions' bookkeeping and its delegations' records. Costs what the
    /// client holds, not what others do.
    fn purged(&mut self, e: &Arc<ClientEntry>) {
        let clientid = e.clientid;
        self.st.clients.at(StateStore::client_shard(clientid)).remove(&clientid);
        let (addr, sessions, states) = {
            let mut ci = e.lock();
            ci.gone = true;
            (ci.addr, ci.sessions.clone(), std::mem::take(&mut ci.states))
        };
        if let Some(n) = self.per_addr.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&addr);
            }
        }
        self.st.purge_states(clientid, sessions, states, self.fx);
    }
}

impl MdsHooks<'_> {
    /// The unconfirmed clients and the expired ones holding no state (of
    /// `addr` only, if given), but those in `except`; the reclaim records
    /// of the confirmed ones are to be forgotten.
    fn idle_clients(&mut self, t: &ClientTable<MdsClient>, addr: Option<IpAddr>, except: &[u64]) -> Vec<u64> {
        let now = Instant::now();
        let mut idle = vec![];
        for e in t.values() {
            visit(1);
            let c = e.lock();
            if addr.is_none_or(|a| c.addr == a)
                && !except.contains(&c.clientid)
                && (!c.confirmed || (now.duration_since(c.last_renewed) > self.lease && c.states.is_empty()))
            {
                if c.confirmed {
                    self.fx.records.push(StateChange::ClientForgotten { owner: c.owner.clone() });
                }
                idle.push(c.clientid);
            }
        }
        if !idle.is_empty() {
            let whose = addr.map_or("any address".to_string(), |a| a.to_string());
            log::warn!("client table full: dropping {} unconfirmed or expired clients of {whose}", idle.len());
        }
        idle
    }
}

/// The MDS's sessions as the engine's [`SessionStore`].
pub(super) struct MdsSessions<'a>(pub(super) &'a Shards<HashMap<SessionId, Arc<Session>>>);

impl SessionStore<()> for MdsSessions<'_> {
    fn get(&self, id: &SessionId) -> Option<Arc<Session>> {
        self.0.at(sessions::session_shard(id)).get(id).cloned()
    }
    fn insert(&mut self, s: Arc<Session>) {
        self.0.at(sessions::session_shard(&s.id)).insert(s.id, s);
    }
    fn remove(&mut self, id: &SessionId) -> Option<Arc<Session>> {
        self.0.at(sessions::session_shard(id)).remove(id)
    }
}

impl StateStore {
    /// Counts a client added to the table against its address and makes
    /// it reachable by ID (EXCHANGE_ID, or a replay restoring it).
    pub(super) fn index_client(&self, per_addr: &mut HashMap<IpAddr, usize>, e: &Arc<ClientEntry>) {
        *per_addr.entry(e.lock().addr).or_default() += 1;
        self.clients.at(Self::client_shard(e.clientid)).insert(e.clientid, e.clone());
    }

    fn client_shard(clientid: u64) -> usize {
        // The low half is random (the engine's `new_clientid`).
        (clientid as u32 as usize) % CLIENT_SHARDS
    }

    /// The client `clientid`; NFS4ERR_STALE_CLIENTID when unknown.
    pub fn client(&self, clientid: u64) -> NfsResult<Arc<ClientEntry>> {
        visit(1);
        self.clients.at(Self::client_shard(clientid)).get(&clientid).cloned().ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)
    }

    /// Clients known, all addresses together.
    pub fn client_count(&self) -> usize {
        lock(&self.registry).table.len()
    }

    /// Every client entry (the lease reaper; costs the number of clients).
    fn all_clients(&self) -> Vec<Arc<ClientEntry>> {
        let mut all = Vec::new();
        for shard in self.clients.all() {
            visit(shard.len());
            all.extend(shard.values().cloned());
        }
        all
    }

    pub fn in_grace(&self) -> bool {
        if self.grace_over.load(Ordering::Acquire) {
            return false;
        }
        let mut reg = lock(&self.registry);
        match reg.grace_until {
            Some(t) if Instant::now() < t && reg.reclaims_pending > 0 => true,
            _ => {
                if reg.grace_until.take().is_some() {
                    log::info!("grace period over");
                }
                self.grace_over.store(true, Ordering::Release);
                false
            }
        }
    }

    /// EXCHANGE_ID (RFC 8881 18.35.4) on the engine's table: reuses this
    /// owner's confirmed record of the same instance, or purges what the
    /// rules say and creates an unconfirmed one, after making room for it
    /// (NFS4ERR_DELAY to a full address or table: see [`MdsHooks`]).
    pub fn exchange_id(
        &self,
        a: &EXCHANGE_ID4args,
        principal: Principal,
        addr: IpAddr,
        lease: Duration,
        fx: &mut Effects,
    ) -> NfsResult<ExchangeIdOk> {
        let mut reg = lock(&self.registry);
        let (table, mut hooks) = reg.engine(self, Some((addr, lease)), fx);
        table.exchange_id(&mut MdsSessions(&self.sessions), &mut hooks, a, principal)
    }

    /// Removes what a purged client held: its sessions' bookkeeping (they
    /// are out of the table already), its states and byte-range locks, its
    /// delegations' records. Costs what the client holds.
    fn purge_states(&self, clientid: u64, sessions: Vec<SessionId>, states: HashSet<StateOther>, fx: &mut Effects) {
        if self.journal {
            fx.records.push(StateChange::ClientPurged { clientid });
        }
        for sid in sessions {
            fx.sessions_gone.push(sid);
            if self.journal {
                fx.records.push(StateChange::SessionDestroyed { id: sid });
            }
        }
        for other in states {
            let mut sh = self.shard_of(&other);
            let Some(ino) = sh.states.get(&other).map(|r| r.ino) else { continue };
            if let Some(file) = sh.files.get_mut(&ino) {
                let before = file.locks.len();
                file.locks.retain(|l| l.clientid != clientid);
                if file.locks.len() != before && self.journal {
                    fx.records.push(StateChange::ByteLocks { ino, clientid, locks: vec![] });
                }
            }
            if let Some(r) = self.remove(&mut sh, &other, fx) {
                if matches!(r.kind, StateKind::Layout { iomodes, .. } if iomodes & LAYOUT_RW != 0) {
                    fx.size_from_ds.push(r.ino);
                }
            }
        }
        // Its delegations' own records (their states went above).
        self.delegs().forget_client(clientid);
    }

    /// Clients whose lease ran out `idle` ago (RFC 8881 8.3): their state is
    /// dropped and their reclaim records forgotten. Walks the clients (the
    /// periodic reaper), never the states.
    pub fn expire(&self, idle: Duration, fx: &mut Effects) -> Vec<Arc<ClientEntry>> {
        let now = Instant::now();
        let dead: Vec<u64> = self
            .all_clients()
            .into_iter()
            .filter(|e| now.duration_since(e.lock().last_renewed) > idle)
            .map(|e| e.clientid)
            .collect();
        if dead.is_empty() {
            return vec![];
        }
        self.release_if_expired(&dead, idle, fx)
    }

    /// Of `clientids`, those whose lease ran out `lease` ago lose their
    /// state now (a courteous server: an idle client keeps its state until
    /// another client conflicts with it). Returns the clients released.
    pub fn release_if_expired(&self, clientids: &[u64], lease: Duration, fx: &mut Effects) -> Vec<Arc<ClientEntry>> {
        let mut reg = lock(&self.registry);
        let now = Instant::now();
        let mut gone = vec![];
        for &id in clientids {
            let expired = self.client(id).is_ok_and(|e| now.duration_since(e.lock().last_renewed) > lease);
            if !expired {
                continue;
            }
            let (table, mut hooks) = reg.engine(self, None, fx);
            if let Some(c) = table.purge_with(&mut MdsSessions(&self.sessions), &mut hooks, id) {
                fx.records.push(StateChange::ClientForgotten { owner: c.lock().owner.clone() });
                gone.push(c);
            }
        }
        gone
    }

    /// Once grace is over, the records of clients that never came back go.
    pub fn forget_unreclaimed(&self, fx: &mut Effects) {
        if self.in_grace() {
            return;
        }
        let mut reg = lock(&self.registry);
        if reg.reclaimable.is_empty() {
            return;
        }
        let owners: Vec<Vec<u8>> = reg.reclaimable.drain().filter(|(_, done)| !done).map(|(o, _)| o).collect();
        reg.reclaims_pending = 0;
        for owner in owners {
            if reg.table.of_owner(&owner).is_empty() {
                fx.records.push(StateChange::ClientForgotten { owner });
            }
        }
    }

    /// DESTROY_CLIENTID (RFC 8881 18.50) on the engine's table: `admit`
    /// checks the MDS's own rules first (the caller's address), then only
    /// the client's principal may, and only while it holds no session or
    /// state (NFS4ERR_CLIENTID_BUSY). Its reclaim record goes.
    pub fn destroy_clientid(
        &self,
        clientid: u64,
        principal: Principal,
        admit: impl FnOnce() -> NfsResult<()>,
        fx: &mut Effects,
    ) -> NfsResult<()> {
        let mut reg = lock(&self.registry);
        if reg.table.get(clientid).is_none() {
            return Err(nfsstat4::NFS4ERR_STALE_CLIENTID);
        }
        admit()?;
        let (table, mut hooks) = reg.engine(self, None, fx);
        let c = table.destroy_clientid(&mut MdsSessions(&self.sessions), &mut hooks, clientid, principal)?;
        fx.records.push(StateChange::ClientForgotten { owner: c.lock().owner.clone() });
        Ok(())
    }

    /// RECLAIM_COMPLETE for the whole client.
    pub fn reclaim_complete(&self, clientid: u64, fx: &mut Effects) -> NfsResult<()> {
        let mut reg = lock(&self.registry);
        let owner = {
            let c = reg.table.reclaim_complete(clientid)?.lock();
            // Journaled, or a replayed client is refused every OPEN with GRACE.
            self.journal_client(&c, fx);
            c.owner.clone()
        };
        if let Some(done) = reg.reclaimable.get_mut(&owner) {
            if !*done {
                *done = true;
                reg.reclaims_pending -= 1;
            }
        }
        Ok(())
    }

    /// Whether `clientid` may get new state now (RFC 8881 18.51.3: none
    /// before RECLAIM_COMPLETE, none during grace) or reclaim (`reclaim`:
    /// only during grace, only a client known from the last boot).
    pub fn state_gate(&self, clientid: u64, reclaim: bool) -> NfsResult<Arc<ClientEntry>> {
        let in_grace = self.in_grace();
        let entry = self.client(clientid)?;
        {
            let ci = entry.lock();
            if reclaim {
                if !in_grace || !ci.may_reclaim || ci.reclaim_complete {
                    return Err(nfsstat4::NFS4ERR_NO_GRACE);
                }
            } else if in_grace || !ci.reclaim_complete {
                return Err(nfsstat4::NFS4ERR_GRACE);
            }
        }
        Ok(entry)
    }

    /// Whether `client` may hold one more state (see `insert`), checked
    /// before work the state would be for (a file OPEN would create).
    pub fn admit_state(&self, client: &ClientEntry) -> NfsResult<()> {
        if client.lock().states.len() >= self.caps.max_states_per_client {
            return Err(nfsstat4::NFS4ERR_NOSPC);
        }
        if self.total_states.load(Ordering::Acquire) >= self.caps.max_states {
            return Err(nfsstat4::NFS4ERR_DELAY);
        }
        Ok(())
    }

    /// Makes a client look silent for `by` (tests of expiry).
    #[cfg(test)]
    pub(super) fn age_client(&self, clientid: u64, by: Duration) {
        let e = self.client(clientid).expect("known client");
        let mut ci = e.lock();
        ci.last_renewed = Instant::now().checked_sub(by).expect("the clock is past `by`");
    }
}

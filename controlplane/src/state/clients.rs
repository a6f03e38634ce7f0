//! Client records (RFC 8881 2.4, 18.35): the registry by owner and address,
//! the caps on clients, reclaim and grace, lease expiry.

use super::*;
use pnfs_protocol::session::{ExchangeIdPlan, KnownClient};
use std::collections::HashSet;
use std::net::IpAddr;

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

/// One client: its record and the set of its stateids, behind its own
/// mutex (a leaf in the lock order).
pub struct ClientEntry {
    pub clientid: u64,
    inner: Mutex<ClientInner>,
}

pub(super) struct ClientInner {
    pub(super) rec: Client,
    /// Every stateid the client holds (its count is the per-client cap).
    pub(super) states: HashSet<StateOther>,
    /// Its layout stateids (LAYOUTRETURN of all layouts).
    pub(super) layouts: HashSet<StateOther>,
    /// How many of its states are revoked (SEQUENCE's status flag).
    pub(super) revoked: usize,
    /// Purged: no state may be added any more.
    pub(super) gone: bool,
}

impl ClientEntry {
    pub(super) fn lock(&self) -> MutexGuard<'_, ClientInner> {
        lock(&self.inner)
    }

    /// A copy of the record.
    pub fn record(&self) -> Client {
        self.lock().rec.clone()
    }
}

/// Client records by owner and by address; grace. Taken on EXCHANGE_ID,
/// CREATE_SESSION, DESTROY_CLIENTID and expiry only.
pub(super) struct Registry {
    by_owner: HashMap<Vec<u8>, Vec<u64>>,
    per_addr: HashMap<IpAddr, usize>,
    count: usize,
    /// Owners allowed to reclaim (persisted client records of the last
    /// boot), and whether each completed its reclaim.
    reclaimable: HashMap<Vec<u8>, bool>,
    reclaims_pending: usize,
    grace_until: Option<Instant>,
    /// Client IDs and session IDs: unguessable (RFC 8881 2.10.3).
    pub(super) ids: IdMinter,
}

impl Registry {
    pub(super) fn owner_ids(&self, owner: &[u8]) -> Vec<u64> {
        self.by_owner.get(owner).cloned().unwrap_or_default()
    }

    pub(super) fn new(reclaimable: Vec<Vec<u8>>, grace_until: Option<Instant>) -> Self {
        let reclaimable: HashMap<Vec<u8>, bool> = reclaimable.into_iter().map(|o| (o, false)).collect();
        Registry {
            by_owner: HashMap::new(),
            per_addr: HashMap::new(),
            count: 0,
            reclaims_pending: reclaimable.len(),
            reclaimable,
            grace_until,
            ids: IdMinter::new(),
        }
    }
}

impl StateStore {
    fn client_shard(clientid: u64) -> usize {
        // The low half is random (`new_clientid`).
        (clientid as u32 as usize) % CLIENT_SHARDS
    }

    /// The client `clientid`; NFS4ERR_STALE_CLIENTID when unknown.
    pub fn client(&self, clientid: u64) -> NfsResult<Arc<ClientEntry>> {
        visit(1);
        self.clients.at(Self::client_shard(clientid)).get(&clientid).cloned().ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)
    }

    /// Clients known, all addresses together.
    pub fn client_count(&self) -> usize {
        lock(&self.registry).count
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

    /// A client ID not in use: the tag of `owner` (high half, so a data
    /// server can tell whether a DS client is the owner of a stateid:
    /// [`pnfs_protocol::session::owner_tag`]), then 32 random bits, not 0.
    /// Knowing a client ID gains nobody anything without its principal.
    fn new_clientid(&self, reg: &mut Registry, owner: &[u8]) -> u64 {
        let tag = (pnfs_protocol::session::owner_tag(owner) as u64) << 32;
        loop {
            let id = tag | (reg.ids.next_u64() & 0xffff_ffff);
            if id as u32 != 0 && self.client(id).is_err() {
                return id;
            }
        }
    }

    pub(super) fn add_client(&self, reg: &mut Registry, rec: Client, fx: &mut Effects) {
        let id = rec.clientid;
        self.journal_client(&rec, fx);
        reg.by_owner.entry(rec.owner.clone()).or_default().push(id);
        *reg.per_addr.entry(rec.addr).or_default() += 1;
        reg.count += 1;
        let entry = Arc::new(ClientEntry {
            clientid: id,
            inner: Mutex::new(ClientInner { rec, states: HashSet::new(), layouts: HashSet::new(), revoked: 0, gone: false }),
        });
        self.clients.at(Self::client_shard(id)).insert(id, entry);
    }

    /// EXCHANGE_ID: `plan` decides over the records of `owner` (RFC 8881
    /// 18.35.4); a new client is created if it says so, after making room
    /// ([`Self::make_room`]). Returns the client ID, whether it is
    /// confirmed, and the csa_sequence its CREATE_SESSION must carry.
    #[allow(clippy::too_many_arguments)]
    pub fn exchange_id(
        &self,
        owner: &[u8],
        verifier: [u8; 8],
        principal: Option<(u32, u32)>,
        addr: IpAddr,
        lease: Duration,
        plan: impl FnOnce(&[KnownClient]) -> NfsResult<ExchangeIdPlan>,
        fx: &mut Effects,
    ) -> NfsResult<(u64, bool, u32)> {
        let mut reg = lock(&self.registry);
        let ids = reg.by_owner.get(owner).cloned().unwrap_or_default();
        let known: Vec<KnownClient> = ids
            .iter()
            .filter_map(|id| self.client(*id).ok())
            .map(|e| {
                let ci = e.lock();
                let busy = !ci.rec.sessions.is_empty() || !ci.states.is_empty();
                KnownClient { clientid: e.clientid, confirmed: ci.rec.confirmed, verifier: ci.rec.verifier, principal: ci.rec.principal, busy }
            })
            .collect();
        match plan(&known)? {
            ExchangeIdPlan::Reuse { clientid, confirmed } => {
                let cs = self.client(clientid)?.lock().rec.cs_sequence;
                Ok((clientid, confirmed, cs))
            }
            ExchangeIdPlan::Create { purge } => {
                for id in purge {
                    self.purge(&mut reg, id, fx);
                }
                self.make_room(&mut reg, addr, lease, fx)?;
                let id = self.new_clientid(&mut reg, owner);
                let may_reclaim = reg.reclaimable.contains_key(owner);
                self.add_client(
                    &mut reg,
                    Client {
                        clientid: id,
                        owner: owner.to_vec(),
                        verifier,
                        confirmed: false,
                        cs_sequence: 1,
                        cs_reply: None,
                        last_renewed: Instant::now(),
                        sessions: vec![],
                        reclaim_complete: false,
                        may_reclaim,
                        principal,
                        addr,
                    },
                    fx,
                );
                Ok((id, false, 1))
            }
        }
    }

    /// Makes room for one more client from `addr`, the offender paying:
    /// when `addr` holds `caps.max_clients_per_address` clients, its own
    /// unconfirmed ones and those whose lease ran out holding no open, lock
    /// or layout go (a real client among them gets STALE_CLIENTID at
    /// CREATE_SESSION and starts over); when the whole table is full
    /// (`caps.max_clients`), such clients of any address go. NFS4ERR_DELAY
    /// when there is still no room: the newcomer waits and those already in
    /// keep working. The records of confirmed clients dropped are forgotten.
    fn make_room(&self, reg: &mut Registry, addr: IpAddr, lease: Duration, fx: &mut Effects) -> NfsResult<()> {
        let from_addr = |reg: &Registry| reg.per_addr.get(&addr).copied().unwrap_or(0);
        if from_addr(reg) >= self.caps.max_clients_per_address {
            self.drop_idle_clients(reg, lease, Some(addr), fx);
            if from_addr(reg) >= self.caps.max_clients_per_address {
                log::warn!("client table full for {addr}: EXCHANGE_ID answered NFS4ERR_DELAY");
                return Err(nfsstat4::NFS4ERR_DELAY);
            }
        }
        if reg.count >= self.caps.max_clients {
            self.drop_idle_clients(reg, lease, None, fx);
            if reg.count >= self.caps.max_clients {
                log::warn!("client table full: EXCHANGE_ID from {addr} answered NFS4ERR_DELAY");
                return Err(nfsstat4::NFS4ERR_DELAY);
            }
        }
        Ok(())
    }

    /// Drops the unconfirmed clients and the expired ones holding no state
    /// (of `addr` only, if given).
    fn drop_idle_clients(&self, reg: &mut Registry, lease: Duration, addr: Option<IpAddr>, fx: &mut Effects) {
        let now = Instant::now();
        let idle: Vec<u64> = self
            .all_clients()
            .into_iter()
            .filter(|e| {
                let ci = e.lock();
                addr.is_none_or(|a| ci.rec.addr == a)
                    && (!ci.rec.confirmed || (now.duration_since(ci.rec.last_renewed) > lease && ci.states.is_empty()))
            })
            .map(|e| e.clientid)
            .collect();
        if !idle.is_empty() {
            let whose = addr.map_or("any address".to_string(), |a| a.to_string());
            log::warn!("client table full: dropping {} unconfirmed or expired clients of {whose}", idle.len());
        }
        for id in idle {
            if let Some(c) = self.purge(reg, id, fx) {
                if c.confirmed {
                    fx.records.push(StateChange::ClientForgotten { owner: c.owner });
                }
            }
        }
    }

    /// Removes a client and everything it holds: its sessions, states and
    /// byte-range locks. Costs what the client holds, not what others do.
    pub(super) fn purge(&self, reg: &mut Registry, clientid: u64, fx: &mut Effects) -> Option<Client> {
        let entry = self.clients.at(Self::client_shard(clientid)).remove(&clientid)?;
        let (rec, states) = {
            let mut ci = entry.lock();
            ci.gone = true;
            (ci.rec.clone(), std::mem::take(&mut ci.states))
        };
        if let Some(ids) = reg.by_owner.get_mut(&rec.owner) {
            ids.retain(|id| *id != clientid);
            if ids.is_empty() {
                reg.by_owner.remove(&rec.owner);
            }
        }
        if let Some(n) = reg.per_addr.get_mut(&rec.addr) {
            *n -= 1;
            if *n == 0 {
                reg.per_addr.remove(&rec.addr);
            }
        }
        reg.count -= 1;
        if self.journal {
            fx.records.push(StateChange::ClientPurged { clientid });
        }
        for sid in &rec.sessions {
            self.sessions.at(sid[0] as usize).remove(sid);
            fx.sessions_gone.push(*sid);
            if self.journal {
                fx.records.push(StateChange::SessionDestroyed { id: *sid });
            }
        }
        for other in states {
            let mut sh = self.shard_of(&other);
            let Some(ino) = sh.states.get(&other).map(|r| r.ino) else { continue };
            if let Some(file) = sh.files.get_mut(&ino) {
                let before = file.locks.len();
                file.locks.retain(|l| l.clientid != clientid);
                if file.locks.len() != before && self.journal {
                    fx.records.push(StateChange::ByteLocks { ino, locks: file.locks.clone() });
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
        Some(rec)
    }

    /// Clients whose lease ran out `idle` ago (RFC 8881 8.3): their state is
    /// dropped and their reclaim records forgotten. Walks the clients (the
    /// periodic reaper), never the states.
    pub fn expire(&self, idle: Duration, fx: &mut Effects) -> Vec<Client> {
        let now = Instant::now();
        let dead: Vec<u64> = self
            .all_clients()
            .into_iter()
            .filter(|e| now.duration_since(e.lock().rec.last_renewed) > idle)
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
    pub fn release_if_expired(&self, clientids: &[u64], lease: Duration, fx: &mut Effects) -> Vec<Client> {
        let mut reg = lock(&self.registry);
        let now = Instant::now();
        let mut gone = vec![];
        for &id in clientids {
            let expired = self.client(id).is_ok_and(|e| now.duration_since(e.lock().rec.last_renewed) > lease);
            if expired {
                if let Some(c) = self.purge(&mut reg, id, fx) {
                    fx.records.push(StateChange::ClientForgotten { owner: c.owner.clone() });
                    gone.push(c);
                }
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
            if !reg.by_owner.contains_key(&owner) {
                fx.records.push(StateChange::ClientForgotten { owner });
            }
        }
    }

    /// DESTROY_CLIENTID: `check` decides whether the caller may; a client
    /// still holding sessions or state is NFS4ERR_CLIENTID_BUSY.
    pub fn destroy_clientid(&self, clientid: u64, check: impl FnOnce(&Client) -> NfsResult<()>, fx: &mut Effects) -> NfsResult<()> {
        let mut reg = lock(&self.registry);
        let entry = self.client(clientid)?;
        {
            let ci = entry.lock();
            check(&ci.rec)?;
            if !ci.rec.sessions.is_empty() || !ci.states.is_empty() {
                return Err(nfsstat4::NFS4ERR_CLIENTID_BUSY);
            }
        }
        if let Some(c) = self.purge(&mut reg, clientid, fx) {
            fx.records.push(StateChange::ClientForgotten { owner: c.owner });
        }
        Ok(())
    }

    /// RECLAIM_COMPLETE for the whole client.
    pub fn reclaim_complete(&self, clientid: u64, fx: &mut Effects) -> NfsResult<()> {
        let owner = {
            let entry = self.client(clientid)?;
            let mut ci = entry.lock();
            if ci.rec.reclaim_complete {
                return Err(nfsstat4::NFS4ERR_COMPLETE_ALREADY);
            }
            ci.rec.reclaim_complete = true;
            self.journal_client(&ci.rec, fx);
            ci.rec.owner.clone()
        };
        let mut reg = lock(&self.registry);
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
                if !in_grace || !ci.rec.may_reclaim || ci.rec.reclaim_complete {
                    return Err(nfsstat4::NFS4ERR_NO_GRACE);
                }
            } else if in_grace || !ci.rec.reclaim_complete {
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
        ci.rec.last_renewed = Instant::now().checked_sub(by).expect("the clock is past `by`");
    }
}

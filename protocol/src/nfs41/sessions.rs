//! Sessions (RFC 8881 2.10, 18.36, 18.37, 18.34, 18.46): CREATE_SESSION
//! with its csa_sequence replay cache, DESTROY_SESSION,
//! BIND_CONN_TO_SESSION, and SEQUENCE over the slot table and its reply
//! cache ([`crate::session::SlotTable`]).
//!
//! Locking is the caller's: the functions here take the client table
//! (`&mut ClientTable`, under whatever lock the plane keeps it) and a
//! [`SessionStore`]. A session's slot table has its own mutex, so SEQUENCE
//! needs only the store's lookup.

use super::clients::{check_principal, ClientHooks, ClientTable};
use super::compound::ReplyBuffer;
use crate::session::{
    keep_reply, negotiate, ChannelLimits, Principal, ServerLimits, SlotTable, SlotUse, CREATE_SESSION4_FLAG_CONN_BACK_CHAN, CREATE_SESSION4_FLAG_PERSIST,
};
use crate::wire::*;
use crate::{Encoder, XdrEncode};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};

pub type SessionId = [u8; 16];

use crate::sync::lock;

/// One session; `ext` is what the plane keeps with it (reachable through
/// `Deref`: `session.lease` for `session.ext.lease`).
#[derive(Debug)]
pub struct Session<S> {
    pub id: SessionId,
    pub clientid: u64,
    pub fore: ChannelLimits,
    pub back: ChannelLimits,
    pub cb_program: u32,
    /// The minor version of the COMPOUND that created it.
    pub minor: u32,
    pub slots: Mutex<SlotTable>,
    /// Connection ids bound for the back channel.
    pub back_conns: Mutex<Vec<u64>>,
    pub ext: S,
}

impl<S> std::ops::Deref for Session<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.ext
    }
}

impl<S> Session<S> {
    /// The highest slot ID (sr_highest_slotid).
    pub fn highest_slot(&self) -> u32 {
        lock(&self.slots).len() - 1
    }

    /// Ends the request on `slot`, keeping its reply for retransmissions
    /// when the client asked (within the cached size) or when it is small.
    /// True when a copy was kept.
    pub fn finish_request<R: ReplyBuffer + ?Sized>(&self, slot: u32, rb: &R, cache_this: bool) -> bool {
        let kept = keep_reply(rb.body_len(), cache_this, self.fore.max_response_cached).then(|| Arc::new(rb.cached_copy()));
        let was_kept = kept.is_some();
        lock(&self.slots).finish_with(slot, kept);
        was_kept
    }

    /// Whether connection `conn` is bound to the back channel.
    pub fn has_back_conn(&self, conn: u64) -> bool {
        lock(&self.back_conns).contains(&conn)
    }
}

/// Where a plane keeps its sessions.
pub trait SessionStore<S> {
    fn get(&self, id: &SessionId) -> Option<Arc<Session<S>>>;
    fn contains(&self, id: &SessionId) -> bool {
        self.get(id).is_some()
    }
    fn insert(&mut self, s: Arc<Session<S>>);
    fn remove(&mut self, id: &SessionId) -> Option<Arc<Session<S>>>;
}

impl<S> SessionStore<S> for HashMap<SessionId, Arc<Session<S>>> {
    fn get(&self, id: &SessionId) -> Option<Arc<Session<S>>> {
        HashMap::get(self, id).cloned()
    }
    fn contains(&self, id: &SessionId) -> bool {
        self.contains_key(id)
    }
    fn insert(&mut self, s: Arc<Session<S>>) {
        HashMap::insert(self, s.id, s);
    }
    fn remove(&mut self, id: &SessionId) -> Option<Arc<Session<S>>> {
        HashMap::remove(self, id)
    }
}

const SHARDS: usize = 16;

/// A hash map split into independently locked shards: sessions looked up
/// on every COMPOUND from several threads rarely meet on a lock.
pub struct Shards<K, V> {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<K, V>>>,
}

impl<K: Hash + Eq, V: Clone> Default for Shards<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V: Clone> Shards<K, V> {
    pub fn new() -> Self {
        Shards { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    pub fn shard(&self, k: &K) -> MutexGuard<'_, HashMap<K, V>> {
        let i = self.hasher.hash_one(k) as usize % SHARDS;
        lock(&self.shards[i])
    }

    pub fn get(&self, k: &K) -> Option<V> {
        self.shard(k).get(k).cloned()
    }

    pub fn insert(&self, k: K, v: V) -> Option<V> {
        self.shard(&k).insert(k, v)
    }

    pub fn remove(&self, k: &K) -> Option<V> {
        self.shard(k).remove(k)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S> SessionStore<S> for &Shards<SessionId, Arc<Session<S>>> {
    fn get(&self, id: &SessionId) -> Option<Arc<Session<S>>> {
        Shards::get(self, id)
    }
    fn insert(&mut self, s: Arc<Session<S>>) {
        Shards::insert(self, s.id, s);
    }
    fn remove(&mut self, id: &SessionId) -> Option<Arc<Session<S>>> {
        Shards::remove(self, id)
    }
}

/// What CREATE_SESSION needs besides its arguments.
#[derive(Debug, Clone, Copy)]
pub struct CreateSessionCtx {
    pub principal: Principal,
    /// The connection it came on (bound to the back channel when asked).
    pub conn: u64,
    pub minor: u32,
    pub limits: ServerLimits,
    pub max_sessions_per_client: usize,
    /// Grant CREATE_SESSION4_FLAG_PERSIST (a cluster keeps sessions and
    /// their slots' replies where another server can take them over).
    pub persist: bool,
}

/// What CREATE_SESSION did.
#[derive(Debug)]
pub struct CreateSessionOk<S> {
    /// The encoded CREATE_SESSION4resok (also kept for a replay).
    pub resok: Vec<u8>,
    /// None for a replay of the last CREATE_SESSION.
    pub session: Option<Arc<Session<S>>>,
    /// The client was confirmed by this call (the MDS persists it).
    pub newly_confirmed: bool,
}

/// What CREATE_SESSION reads of its client's record.
#[derive(Debug, Clone, Copy)]
pub struct CreateSessionRecord<'a> {
    pub confirmed: bool,
    pub principal: Principal,
    /// The csa_sequence expected next.
    pub cs_sequence: u32,
    /// The reply to the last CREATE_SESSION.
    pub cs_reply: Option<&'a [u8]>,
    /// Sessions the client holds.
    pub sessions: usize,
}

impl<'a, X> From<&'a super::ClientRecord<X>> for CreateSessionRecord<'a> {
    fn from(c: &'a super::ClientRecord<X>) -> Self {
        CreateSessionRecord {
            confirmed: c.confirmed,
            principal: c.principal,
            cs_sequence: c.cs_sequence,
            cs_reply: c.cs_reply.as_deref(),
            sessions: c.sessions.len(),
        }
    }
}

/// What CREATE_SESSION does, its client's record seen.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// A retransmission of the last CREATE_SESSION: answer its resok again.
    Replay(Vec<u8>),
    /// A new session: [`new_session`], then record it in the client.
    New,
}

/// CREATE_SESSION's rules on the client record (RFC 8881 18.36.4): until
/// confirmed only the principal of the EXCHANGE_ID may confirm; the
/// csa_sequence replay cache; the sessions cap.
pub fn admit_create_session(r: CreateSessionRecord, a: &CREATE_SESSION4args, ctx: &CreateSessionCtx) -> Result<Admission, nfsstat4> {
    if !r.confirmed && r.principal != ctx.principal {
        return Err(nfsstat4::NFS4ERR_CLID_INUSE);
    }
    if a.csa_sequence == r.cs_sequence.wrapping_sub(1) {
        return r.cs_reply.map(|b| Admission::Replay(b.to_vec())).ok_or(nfsstat4::NFS4ERR_SEQ_MISORDERED);
    }
    if a.csa_sequence != r.cs_sequence {
        return Err(nfsstat4::NFS4ERR_SEQ_MISORDERED);
    }
    if r.sessions >= ctx.max_sessions_per_client {
        return Err(nfsstat4::NFS4ERR_NOSPC);
    }
    Ok(Admission::New)
}

/// The session `sid` that CREATE_SESSION `a` asks for, its channels
/// negotiated, and its encoded CREATE_SESSION4resok (the client's
/// replay cache keeps it).
pub fn new_session<S>(sid: SessionId, a: &CREATE_SESSION4args, ctx: &CreateSessionCtx, ext: S) -> Result<(Arc<Session<S>>, Vec<u8>), nfsstat4> {
    let (fore, back) = negotiate(a, ctx.limits)?;
    let flags = a.csa_flags & CREATE_SESSION4_FLAG_CONN_BACK_CHAN;
    let persist = if ctx.persist { CREATE_SESSION4_FLAG_PERSIST } else { 0 };
    let res = CREATE_SESSION4resok {
        csr_sessionid: sid,
        csr_sequence: a.csa_sequence,
        csr_flags: flags | persist,
        csr_fore_chan_attrs: fore.to_attrs(),
        csr_back_chan_attrs: back.to_attrs(),
    };
    let mut enc = Encoder::new();
    res.encode(&mut enc).map_err(|_| nfsstat4::NFS4ERR_SERVERFAULT)?;
    let session = Arc::new(Session {
        id: sid,
        clientid: a.csa_clientid,
        fore,
        back,
        cb_program: a.csa_cb_program,
        minor: ctx.minor,
        slots: Mutex::new(SlotTable::new(fore.max_requests)),
        back_conns: Mutex::new(if flags != 0 { vec![ctx.conn] } else { vec![] }),
        ext,
    });
    Ok((session, enc.into_inner()))
}

/// CREATE_SESSION (RFC 8881 18.36) on the engine's client table: the
/// rules ([`admit_create_session`]), the session ([`new_session`]), the
/// confirmation of the client ID (purging a confirmed record of an
/// earlier instance of the same owner). `ext` makes the plane's part of
/// the session from the client's record.
pub fn create_session<X, S>(
    t: &mut ClientTable<X>,
    sessions: &mut impl SessionStore<S>,
    hooks: &mut impl ClientHooks<X>,
    a: &CREATE_SESSION4args,
    ctx: CreateSessionCtx,
    ext: impl FnOnce(&super::ClientRecord<X>) -> S,
) -> Result<CreateSessionOk<S>, nfsstat4> {
    let clientid = a.csa_clientid;
    let entry = t.get(clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?.clone();
    let ext = {
        let client = entry.lock();
        if let Admission::Replay(resok) = admit_create_session((&*client).into(), a, &ctx)? {
            return Ok(CreateSessionOk { resok, session: None, newly_confirmed: false });
        }
        ext(&client)
    };
    // The record's lock is not held while the store is: the table is
    // (`&mut`), so nothing changes the record in between.
    let sid = t.new_sessionid(sessions);
    let (session, resok) = new_session(sid, a, &ctx, ext)?;
    sessions.insert(session.clone());
    let (newly_confirmed, owner) = {
        let mut client = entry.lock();
        let newly_confirmed = !client.confirmed;
        client.confirmed = true;
        client.sessions.push(sid);
        client.cs_sequence = client.cs_sequence.wrapping_add(1);
        client.cs_reply = Some(resok.clone());
        (newly_confirmed, client.owner.clone())
    };
    if newly_confirmed {
        // A confirmed record of an earlier instance of this client goes away.
        let old: Vec<u64> = t
            .of_owner(&owner)
            .iter()
            .copied()
            .filter(|id| *id != clientid && t.get(*id).is_some_and(|c| c.lock().confirmed))
            .collect();
        for id in old {
            t.purge_with(sessions, hooks, id);
        }
    }
    Ok(CreateSessionOk { resok, session: Some(session), newly_confirmed })
}

/// DESTROY_SESSION (RFC 8881 18.37): only the client's creator.
pub fn destroy_session<X, S>(
    t: &mut ClientTable<X>,
    sessions: &mut impl SessionStore<S>,
    id: &SessionId,
    principal: Principal,
) -> Result<Arc<Session<S>>, nfsstat4> {
    let s = sessions.get(id).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
    let client = t.get(s.clientid).cloned();
    check_principal(client.as_ref().map(|c| c.lock()).as_deref(), principal)?;
    sessions.remove(id);
    if let Some(cl) = client {
        cl.lock().sessions.retain(|x| x != id);
    }
    Ok(s)
}

/// BIND_CONN_TO_SESSION (RFC 8881 18.34) once the caller checked the
/// principal: records a back-channel binding and answers the direction.
pub fn bind_conn_to_session<S>(
    s: &Session<S>,
    a: &BIND_CONN_TO_SESSION4args,
    conn: u64,
) -> Result<BIND_CONN_TO_SESSION4resok, nfsstat4> {
    let (back, dir) = match a.bctsa_dir {
        channel_dir_from_client4::CDFC4_FORE => (false, channel_dir_from_server4::CDFS4_FORE),
        channel_dir_from_client4::CDFC4_BACK => (true, channel_dir_from_server4::CDFS4_BACK),
        channel_dir_from_client4::CDFC4_FORE_OR_BOTH | channel_dir_from_client4::CDFC4_BACK_OR_BOTH => {
            (true, channel_dir_from_server4::CDFS4_BOTH)
        }
    };
    if a.bctsa_use_conn_in_rdma_mode {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    if back {
        let mut bc = lock(&s.back_conns);
        if !bc.contains(&conn) {
            bc.push(conn);
        }
    }
    Ok(BIND_CONN_TO_SESSION4resok { bctsr_sessid: s.id, bctsr_dir: dir, bctsr_use_conn_in_rdma_mode: false })
}

/// Outcome of SEQUENCE.
pub enum SequenceOutcome {
    /// A new request on the slot: run the rest of the COMPOUND.
    New(SEQUENCE4resok),
    /// A retransmission: send this cached COMPOUND4res as it was.
    Replay(Arc<Vec<u8>>),
}

/// SEQUENCE's checks on a found session (RFC 8881 2.10.6.1, 18.46): the
/// COMPOUND's op count and request size against the session's limits,
/// then the slot. An error leaves the slot untouched.
pub fn sequence<S>(
    session: &Session<S>,
    a: &SEQUENCE4args,
    op_count: usize,
    request_len: usize,
    status_flags: u32,
) -> Result<SequenceOutcome, nfsstat4> {
    if op_count > session.fore.max_ops as usize {
        return Err(nfsstat4::NFS4ERR_TOO_MANY_OPS);
    }
    if request_len > session.fore.max_request as usize {
        return Err(nfsstat4::NFS4ERR_REQ_TOO_BIG);
    }
    // Even a lone SEQUENCE reply (about 80 bytes) could not be cached.
    if a.sa_cachethis && session.fore.max_response_cached < 128 {
        return Err(nfsstat4::NFS4ERR_REP_TOO_BIG_TO_CACHE);
    }
    let mut slots = lock(&session.slots);
    let highest = slots.len() - 1;
    if let SlotUse::Replay(r) = slots.begin(a.sa_slotid, a.sa_sequenceid)? {
        return Ok(SequenceOutcome::Replay(r));
    }
    Ok(SequenceOutcome::New(SEQUENCE4resok {
        sr_sessionid: a.sa_sessionid,
        sr_sequenceid: a.sa_sequenceid,
        sr_slotid: a.sa_slotid,
        sr_highest_slotid: highest,
        sr_target_highest_slotid: highest,
        sr_status_flags: status_flags,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs41::clients::tests::{args, table, Hooks, Sessions};
    use crate::XdrDecode;

    const ME: Principal = Some((1000, 1000));
    const OTHER: Principal = Some((2000, 2000));

    fn attrs(size: u32) -> channel_attrs4 {
        channel_attrs4 {
            ca_headerpadsize: 0,
            ca_maxrequestsize: size,
            ca_maxresponsesize: size,
            ca_maxresponsesize_cached: 4096,
            ca_maxoperations: 8,
            ca_maxrequests: 4,
            ca_rdma_ird: vec![],
        }
    }

    fn cs(clientid: u64, sequence: u32) -> CREATE_SESSION4args<'static> {
        CREATE_SESSION4args {
            csa_clientid: clientid,
            csa_sequence: sequence,
            csa_flags: CREATE_SESSION4_FLAG_CONN_BACK_CHAN,
            csa_fore_chan_attrs: attrs(1 << 20),
            csa_back_chan_attrs: attrs(4096),
            csa_cb_program: 0x4000_0000,
            csa_sec_parms: vec![],
        }
    }

    fn ctx(principal: Principal) -> CreateSessionCtx {
        CreateSessionCtx {
            principal,
            conn: 7,
            minor: 1,
            limits: ServerLimits { max_record: 1 << 20, max_ops: 16, slots: 2 },
            max_sessions_per_client: 2,
            persist: false,
        }
    }

    #[test]
    fn create_session_confirms_and_replays() {
        let (mut t, mut s, mut h) = (table(), Sessions::new(), Hooks::default());
        let id = t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), ME).unwrap().clientid;
        assert_eq!(create_session(&mut t, &mut s, &mut h, &cs(id + 1, 1), ctx(ME), |_| ()).unwrap_err(), nfsstat4::NFS4ERR_STALE_CLIENTID);
        // Only the principal of the EXCHANGE_ID confirms.
        assert_eq!(create_session(&mut t, &mut s, &mut h, &cs(id, 1), ctx(OTHER), |_| ()).unwrap_err(), nfsstat4::NFS4ERR_CLID_INUSE);
        assert_eq!(create_session(&mut t, &mut s, &mut h, &cs(id, 2), ctx(ME), |_| ()).unwrap_err(), nfsstat4::NFS4ERR_SEQ_MISORDERED);
        // No reply to replay yet.
        assert_eq!(create_session(&mut t, &mut s, &mut h, &cs(id, 0), ctx(ME), |_| ()).unwrap_err(), nfsstat4::NFS4ERR_SEQ_MISORDERED);
        let first = create_session(&mut t, &mut s, &mut h, &cs(id, 1), ctx(ME), |_| ()).unwrap();
        assert!(first.newly_confirmed);
        let session = first.session.clone().unwrap();
        let res = CREATE_SESSION4resok::decode(&mut crate::Decoder::new(&first.resok)).unwrap();
        assert_eq!((res.csr_sessionid, res.csr_sequence), (session.id, 1));
        assert_eq!(res.csr_fore_chan_attrs.ca_maxrequests, 2, "slots bounded by the server");
        assert!(session.has_back_conn(7));
        assert!(t.get(id).unwrap().lock().confirmed);
        assert_eq!(t.get(id).unwrap().lock().sessions, vec![session.id]);
        // A retransmission: the same bytes, no new session.
        let replay = create_session(&mut t, &mut s, &mut h, &cs(id, 1), ctx(ME), |_| ()).unwrap();
        assert_eq!((replay.resok, replay.session.is_none(), replay.newly_confirmed), (first.resok, true, false));
        assert_eq!(s.len(), 1);
        // An unknown flag: INVAL, the sequence not moved.
        let mut bad = cs(id, 2);
        bad.csa_flags = 0x80;
        assert_eq!(create_session(&mut t, &mut s, &mut h, &bad, ctx(ME), |_| ()).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
        assert_eq!(t.get(id).unwrap().lock().cs_sequence, 2);
        // Once confirmed, the csa_sequence goes on; the sessions cap holds.
        let second = create_session(&mut t, &mut s, &mut h, &cs(id, 2), ctx(ME), |_| ()).unwrap();
        assert!(!second.newly_confirmed);
        assert_eq!(create_session(&mut t, &mut s, &mut h, &cs(id, 3), ctx(ME), |_| ()).unwrap_err(), nfsstat4::NFS4ERR_NOSPC);
        assert_eq!(t.get(id).unwrap().lock().cs_sequence, 3);
    }

    #[test]
    fn confirming_a_rebooted_client_purges_its_old_record() {
        let (mut t, mut s, mut h) = (table(), Sessions::new(), Hooks::default());
        let old = t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), ME).unwrap().clientid;
        let old_session = create_session(&mut t, &mut s, &mut h, &cs(old, 1), ctx(ME), |_| ()).unwrap().session.unwrap();
        let new = t.exchange_id(&mut s, &mut h, &args(b"host", 2, 0), ME).unwrap().clientid;
        assert!(t.get(old).is_some(), "kept until the new instance is confirmed");
        create_session(&mut t, &mut s, &mut h, &cs(new, 1), ctx(ME), |_| ()).unwrap();
        assert!(t.get(old).is_none());
        assert!(!s.contains_key(&old_session.id), "the old instance's sessions go with it");
        assert_eq!(h.purged, vec![old]);
        assert_eq!(t.of_owner(b"host"), &[new]);
    }

    #[test]
    fn destroy_session_and_bind_conn() {
        let (mut t, mut s, mut h) = (table(), Sessions::new(), Hooks::default());
        let id = t.exchange_id(&mut s, &mut h, &args(b"host", 1, 0), ME).unwrap().clientid;
        let mut a = cs(id, 1);
        a.csa_flags = 0;
        let session = create_session(&mut t, &mut s, &mut h, &a, ctx(ME), |_| ()).unwrap().session.unwrap();
        assert!(!session.has_back_conn(7));
        let bind = |dir, rdma| BIND_CONN_TO_SESSION4args { bctsa_sessid: session.id, bctsa_dir: dir, bctsa_use_conn_in_rdma_mode: rdma };
        let r = bind_conn_to_session(&session, &bind(channel_dir_from_client4::CDFC4_FORE, false), 8).unwrap();
        assert_eq!(r.bctsr_dir, channel_dir_from_server4::CDFS4_FORE);
        assert!(!session.has_back_conn(8));
        assert_eq!(bind_conn_to_session(&session, &bind(channel_dir_from_client4::CDFC4_BACK, true), 8).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
        let r = bind_conn_to_session(&session, &bind(channel_dir_from_client4::CDFC4_FORE_OR_BOTH, false), 8).unwrap();
        assert_eq!(r.bctsr_dir, channel_dir_from_server4::CDFS4_BOTH);
        assert!(session.has_back_conn(8));
        assert_eq!(destroy_session(&mut t, &mut s, &session.id, OTHER).unwrap_err(), nfsstat4::NFS4ERR_WRONG_CRED);
        assert!(destroy_session(&mut t, &mut s, &session.id, ME).is_ok());
        assert!(t.get(id).unwrap().lock().sessions.is_empty() && s.is_empty());
        assert_eq!(destroy_session(&mut t, &mut s, &session.id, ME).unwrap_err(), nfsstat4::NFS4ERR_BADSESSION);
    }
}

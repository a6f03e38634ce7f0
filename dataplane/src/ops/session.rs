//! Client IDs and sessions on the DS: EXCHANGE_ID, CREATE_SESSION,
//! DESTROY_SESSION, DESTROY_CLIENTID, BIND_CONN_TO_SESSION, SEQUENCE,
//! RECLAIM_COMPLETE (RFC 8881 18.35-18.37, 18.46, 18.49-18.51).
//!
//! Same rules as the MDS (controlplane/src/ops/session.rs), minus what a DS
//! does not have: no persisted client records, no grace period, no open
//! state (a client's only "state" here is its sessions).

use crate::compound::{reply, Compound, NfsResult, ReplyBuf, DS_MAX_OPS};
use crate::ds::Ds;
use crate::state::{Client, ClientTable, DsState, Lease, Session, MAX_SESSIONS_PER_CLIENT};
use pnfs_protocol::session::{
    plan_exchange_id, principal_of, ExchangeIdPlan, KnownClient, EXCHGID4_FLAG_CONFIRMED_R, EXCHGID4_FLAG_USE_PNFS_DS,
    keep_reply, negotiate, ServerLimits, SlotTable, SlotUse, CREATE_SESSION4_FLAG_CONN_BACK_CHAN};
use crate::stats::bump;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode};
use std::sync::{Arc, Mutex};
use std::cmp::Reverse;
use std::time::Duration;

pub fn exchange_id(ds: &Ds, c: &mut Compound, a: &EXCHANGE_ID4args, rb: &mut ReplyBuf) -> nfsstat4 {
    reply(rb, exchange_id_inner(ds, c, a))
}

fn exchange_id_inner(ds: &Ds, c: &mut Compound, a: &EXCHANGE_ID4args) -> NfsResult<EXCHANGE_ID4resok<'static>> {
    let principal = principal_of(&c.cred);
    let owner = a.eia_clientowner.co_ownerid.to_vec();
    // No expire() here: the lease reaper (control runtime, every quarter
    // lease) does it, and a full table makes room below; a scan of every
    // client per call made a flood of EXCHANGE_IDs hold the table's lock.
    let st = &ds.state;
    let mut t = st.clients();
    let known: Vec<KnownClient> = t
        .clients
        .values()
        .filter(|cl| cl.owner == owner)
        .map(|cl| KnownClient {
            clientid: cl.clientid,
            confirmed: cl.confirmed,
            verifier: cl.verifier,
            principal: cl.principal,
            busy: !cl.sessions.is_empty(),
        })
        .collect();
    let (clientid, confirmed_r) = match plan_exchange_id(a, principal, &known)? {
        ExchangeIdPlan::Reuse { clientid, confirmed } => (clientid, confirmed),
        ExchangeIdPlan::Create { purge } => {
            for id in purge {
                st.purge_client(&mut t, id);
            }
            if !make_room(ds, st, &mut t) {
                bump(&ds.stats.clients_refused, 1);
                log::warn!("DS client table full (ds.max_clients {}, every client live); EXCHANGE_ID answered DELAY", ds.cfg.max_clients);
                return Err(nfsstat4::NFS4ERR_DELAY);
            }
            let id = st.new_clientid(&mut t);
            t.clients.insert(
                id,
                Client {
                    clientid: id,
                    owner,
                    verifier: a.eia_clientowner.co_verifier,
                    confirmed: false,
                    cs_sequence: 1,
                    cs_reply: None,
                    sessions: vec![],
                    reclaim_complete: false,
                    principal,
                    lease: Lease::new(),
                },
            );
            (id, false)
        }
    };
    let client = &t.clients[&clientid];
    client.lease.renew();
    // A data server answers USE_PNFS_DS whatever the client asked for: the
    // Linux client refuses a DS without it (nfs4_init_ds_session -> ENODEV).
    let mut rflags = EXCHGID4_FLAG_USE_PNFS_DS;
    if confirmed_r {
        rflags |= EXCHGID4_FLAG_CONFIRMED_R;
    }
    Ok(EXCHANGE_ID4resok {
        eir_clientid: clientid,
        eir_sequenceid: client.cs_sequence,
        eir_flags: rflags,
        eir_state_protect: state_protect4_r::SP4_NONE,
        // Our own identity, never the MDS's (trunking would merge us).
        eir_server_owner: server_owner4 { so_minor_id: 0, so_major_id: ds.server_owner.clone().into() },
        eir_server_scope: ds.server_owner.clone().into(),
        eir_server_impl_id: vec![],
    })
}

/// Makes room for one more client when the table holds `ds.max_clients`;
/// false when every client is live. An EXCHANGE_ID alone costs its sender
/// nothing, so unconfirmed clients go first, longest silent first (a real
/// client confirms within a round trip); then confirmed ones silent for
/// over a lease (the reaper keeps those half a lease longer while there
/// is room: a client whose renewal is late). Scans the table only when
/// full, and then frees a sixteenth of it, so that a flood pays one scan
/// per many calls.
fn make_room(ds: &Ds, st: &DsState, t: &mut ClientTable) -> bool {
    let max = ds.cfg.max_clients;
    if t.clients.len() < max {
        return true;
    }
    let lease = ds.lease();
    let mut victims: Vec<(bool, Reverse<Duration>, u64)> = t
        .clients
        .values()
        .map(|cl| (cl.confirmed, Reverse(cl.lease.idle_for()), cl.clientid))
        .filter(|(confirmed, Reverse(idle), _)| !confirmed || *idle > lease)
        .collect();
    if victims.is_empty() {
        return false;
    }
    let batch = (max / 16).max(1);
    if victims.len() > batch {
        victims.select_nth_unstable(batch - 1);
        victims.truncate(batch);
    }
    for (_, _, id) in &victims {
        st.purge_client(t, *id);
    }
    bump(&ds.stats.clients_evicted, victims.len() as u64);
    log::debug!("DS client table full (ds.max_clients {max}): evicted {} unconfirmed or silent clients", victims.len());
    true
}

pub fn create_session(ds: &Ds, c: &mut Compound, a: &CREATE_SESSION4args, rb: &mut ReplyBuf) -> nfsstat4 {
    match create_session_inner(ds, c, a) {
        Ok(bytes) => {
            rb.e.put_i32(nfsstat4::NFS4_OK as i32);
            rb.e.buf.extend_from_slice(&bytes);
            nfsstat4::NFS4_OK
        }
        Err(s) => reply::<()>(rb, Err(s)),
    }
}

/// Returns the encoded CREATE_SESSION4resok (kept for replays).
fn create_session_inner(ds: &Ds, c: &mut Compound, a: &CREATE_SESSION4args) -> NfsResult<Vec<u8>> {
    let st = &ds.state;
    let mut t = st.clients();
    let client = t.clients.get(&a.csa_clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?;
    if !client.confirmed && client.principal != principal_of(&c.cred) {
        return Err(nfsstat4::NFS4ERR_CLID_INUSE);
    }
    if a.csa_sequence == client.cs_sequence.wrapping_sub(1) {
        // Retransmission of the last CREATE_SESSION.
        return client.cs_reply.clone().ok_or(nfsstat4::NFS4ERR_SEQ_MISORDERED);
    }
    if a.csa_sequence != client.cs_sequence {
        return Err(nfsstat4::NFS4ERR_SEQ_MISORDERED);
    }
    if client.sessions.len() >= MAX_SESSIONS_PER_CLIENT {
        return Err(nfsstat4::NFS4ERR_NOSPC);
    }
    let (fore, back) = negotiate(
        a,
        ServerLimits { max_record: ds.cfg.max_record_bytes, max_ops: DS_MAX_OPS, slots: ds.cfg.session_slots },
    )?;
    let clientid = a.csa_clientid;
    let lease = client.lease.clone();
    let owner_tag = pnfs_protocol::session::owner_tag(&client.owner);
    let sid = st.new_sessionid(&mut t);
    let flags = a.csa_flags & CREATE_SESSION4_FLAG_CONN_BACK_CHAN;
    let session = Arc::new(Session {
        id: sid,
        clientid,
        owner_tag,
        fore,
        back,
        cb_program: a.csa_cb_program,
        slots: Mutex::new(SlotTable::new(fore.max_requests)),
        back_conns: Mutex::new(if flags != 0 { vec![c.conn.id] } else { vec![] }),
        lease: lease.clone(),
    });
    st.sessions.insert(sid, session);
    let res = CREATE_SESSION4resok {
        csr_sessionid: sid,
        csr_sequence: a.csa_sequence,
        csr_flags: flags,
        csr_fore_chan_attrs: fore.to_attrs(),
        csr_back_chan_attrs: back.to_attrs(),
    };
    let mut enc = Encoder::new();
    res.encode(&mut enc).map_err(|_| nfsstat4::NFS4ERR_SERVERFAULT)?;
    let bytes = enc.into_inner();
    let client = t.clients.get_mut(&clientid).expect("checked above");
    let was_confirmed = client.confirmed;
    client.confirmed = true;
    client.sessions.push(sid);
    client.cs_sequence = client.cs_sequence.wrapping_add(1);
    client.cs_reply = Some(bytes.clone());
    let owner = client.owner.clone();
    lease.renew();
    if !was_confirmed {
        // A confirmed record of an earlier instance of this client goes away.
        let old: Vec<u64> = t
            .clients
            .values()
            .filter(|cl| cl.owner == owner && cl.clientid != clientid && cl.confirmed)
            .map(|cl| cl.clientid)
            .collect();
        for id in old {
            st.purge_client(&mut t, id);
        }
    }
    Ok(bytes)
}

pub fn destroy_session(ds: &Ds, c: &mut Compound, a: &DESTROY_SESSION4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = (|| {
        let mut t = ds.state.clients();
        let s = ds.state.sessions.get(&a.dsa_sessionid).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        check_owner(c, t.clients.get(&s.clientid))?;
        ds.state.sessions.remove(&a.dsa_sessionid);
        if let Some(cl) = t.clients.get_mut(&s.clientid) {
            cl.sessions.retain(|x| *x != a.dsa_sessionid);
        }
        if c.session.as_ref().is_some_and(|cs| cs.id == a.dsa_sessionid) && c.slot.is_some() {
            // The slot belongs to a session that is gone; nothing to cache.
            c.slot = None;
        }
        Ok(())
    })();
    reply(rb, r)
}

pub fn destroy_clientid(ds: &Ds, c: &mut Compound, a: &DESTROY_CLIENTID4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = (|| {
        let mut t = ds.state.clients();
        let cl = t.clients.get(&a.dca_clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?;
        check_owner(c, Some(cl))?;
        if !cl.sessions.is_empty() {
            return Err(nfsstat4::NFS4ERR_CLIENTID_BUSY);
        }
        ds.state.purge_client(&mut t, a.dca_clientid);
        Ok(())
    })();
    reply(rb, r)
}

/// RFC 8881 2.10.8.3 with SP4_NONE: only the principal that created a
/// client ID (AUTH_SYS uid/gid at EXCHANGE_ID) may destroy it or its
/// sessions or bind connections to them: NFS4ERR_WRONG_CRED for others.
fn check_owner(c: &Compound, owner: Option<&Client>) -> NfsResult<()> {
    match owner {
        Some(cl) if cl.principal != principal_of(&c.cred) => Err(nfsstat4::NFS4ERR_WRONG_CRED),
        _ => Ok(()),
    }
}

pub fn bind_conn_to_session(ds: &Ds, c: &mut Compound, a: &BIND_CONN_TO_SESSION4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = (|| {
        let s = ds.state.sessions.get(&a.bctsa_sessid).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        check_owner(c, ds.state.clients().clients.get(&s.clientid))?;
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
        s.lease.renew();
        if back {
            let mut bc = crate::state::lock(&s.back_conns);
            if !bc.contains(&c.conn.id) {
                bc.push(c.conn.id);
            }
        }
        Ok(BIND_CONN_TO_SESSION4resok { bctsr_sessid: s.id, bctsr_dir: dir, bctsr_use_conn_in_rdma_mode: false })
    })();
    reply(rb, r)
}

pub enum SequenceOutcome {
    New(SEQUENCE4resok),
    /// A retransmission: send this cached COMPOUND4res as it was.
    Replay(Arc<Vec<u8>>),
}

/// SEQUENCE (RFC 8881 2.10.6.1, 18.46). An error here leaves the slot untouched.
pub fn sequence(ds: &Ds, c: &mut Compound, a: &SEQUENCE4args) -> NfsResult<SequenceOutcome> {
    let session = ds.state.sessions.get(&a.sa_sessionid).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
    session.lease.renew();
    if c.op_count > session.fore.max_ops as usize {
        return Err(nfsstat4::NFS4ERR_TOO_MANY_OPS);
    }
    if c.request_len > session.fore.max_request as usize {
        return Err(nfsstat4::NFS4ERR_REQ_TOO_BIG);
    }
    if a.sa_cachethis && session.fore.max_response_cached < 128 {
        return Err(nfsstat4::NFS4ERR_REP_TOO_BIG_TO_CACHE);
    }
    let mut slots = crate::state::lock(&session.slots);
    let nslots = slots.len();
    if let SlotUse::Replay(r) = slots.begin(a.sa_slotid, a.sa_sequenceid)? {
        return Ok(SequenceOutcome::Replay(r));
    }
    drop(slots);
    c.max_response = session.fore.max_response as usize;
    c.session = Some(session.clone());
    c.slot = Some(a.sa_slotid);
    Ok(SequenceOutcome::New(SEQUENCE4resok {
        sr_sessionid: a.sa_sessionid,
        sr_sequenceid: a.sa_sequenceid,
        sr_slotid: a.sa_slotid,
        sr_highest_slotid: nslots - 1,
        sr_target_highest_slotid: nslots - 1,
        sr_status_flags: 0,
    }))
}

/// Ends a request on its slot, keeping the reply for retransmissions.
/// READ replies are not cached unless small (Linux never sets sa_cachethis
/// for I/O), so the cache never holds bulk data.
pub fn finish_slot(ds: &Ds, session: &Session, slot: u32, rb: &ReplyBuf, cache_this: bool) {
    let keep = keep_reply(rb.body_len(), cache_this, session.fore.max_response_cached);
    let bytes = keep.then(|| {
        if rb.payload.is_some() {
            bump(&ds.stats.payload_copies, 1);
        }
        Arc::new(rb.flat_body())
    });
    crate::state::lock(&session.slots).finish_with(slot, bytes);
}

pub fn reclaim_complete(ds: &Ds, c: &mut Compound, a: &RECLAIM_COMPLETE4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = (|| {
        let clientid = c.clientid()?;
        if a.rca_one_fs {
            c.fh()?;
            return Ok(());
        }
        let mut t = ds.state.clients();
        let cl = t.clients.get_mut(&clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?;
        if cl.reclaim_complete {
            return Err(nfsstat4::NFS4ERR_COMPLETE_ALREADY);
        }
        cl.reclaim_complete = true;
        Ok(())
    })();
    reply(rb, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compound::ConnInfo;
    use crate::config::DsConfig;
    use crate::stats::DsStats;
    use crate::storage::{BufPool, Engine};
    use pnfs_protocol::rpc::Credential;
    use crate::state::ChannelLimits;

    fn ds() -> (tempfile::TempDir, Arc<Ds>) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DsConfig::new("t", dir.path().to_path_buf(), "127.0.0.1:1");
        cfg.cluster_key_file = Some(pnfs_protocol::seal::ClusterKey::test_file_in(dir.path()));
        cfg.bind = "127.0.0.1:2049".parse().unwrap();
        (dir, Ds::open(cfg).unwrap())
    }

    fn limits(slots: u32) -> ChannelLimits {
        ChannelLimits { max_request: 1 << 20, max_response: 1 << 20, max_response_cached: 8192, max_ops: 8, max_requests: slots }
    }

    fn new_session(ds: &Ds, slots: u32) -> Arc<Session> {
        let lease = Lease::new();
        let s = Arc::new(Session {
            id: [9; 16],
            clientid: 1,
            owner_tag: 0,
            fore: limits(slots),
            back: limits(1),
            cb_program: 0,
            slots: Mutex::new(SlotTable::new(slots)),
            back_conns: Mutex::new(vec![]),
            lease,
        });
        ds.state.sessions.insert(s.id, s.clone());
        s
    }

    fn seq(slot: u32, seqid: u32, cachethis: bool) -> SEQUENCE4args {
        SEQUENCE4args { sa_sessionid: [9; 16], sa_sequenceid: seqid, sa_slotid: slot, sa_highest_slotid: 0, sa_cachethis: cachethis }
    }

    #[test]
    fn slot_and_reply_cache_rules() {
        let (_d, ds) = ds();
        let session = new_session(&ds, 2);
        let engine = Engine::new(BufPool::new(1, 64 * 1024), Arc::new(DsStats::default()), false);
        let conn = ConnInfo { id: 1, peer: "127.0.0.1".parse().unwrap() };
        let replica = ds.bus.replica(0);
        let mk = || Compound {
            minor: 1,
            cred: Credential::None,
            conn: &conn,
            engine: &engine,
            replica: &replica,
            session: None,
            slot: None,
            current_fh: None,
            current_obj: None,
            request_len: 100,
            detached: None,
            op_count: 2,
            max_response: 1 << 20,
            can_defer: false,
            deferred: None,
            drain: None,
        };
        let run = |a: &SEQUENCE4args, body: &[u8]| -> Result<Option<Vec<u8>>, nfsstat4> {
            let mut c = mk();
            match sequence(&ds, &mut c, a)? {
                SequenceOutcome::Replay(r) => Ok(Some(r.to_vec())),
                SequenceOutcome::New(_) => {
                    let mut rb = ReplyBuf::new(Encoder::new());
                    rb.e.buf.extend_from_slice(body);
                    finish_slot(&ds, &session, a.sa_slotid, &rb, a.sa_cachethis);
                    Ok(None)
                }
            }
        };
        // first request must be seqid 1
        assert_eq!(run(&seq(0, 2, false), b"x"), Err(nfsstat4::NFS4ERR_SEQ_MISORDERED));
        assert_eq!(run(&seq(0, 1, true), b"first"), Ok(None));
        // replay returns the cached bytes
        assert_eq!(run(&seq(0, 1, true), b"ignored"), Ok(Some(b"first".to_vec())));
        // an error does not advance the slot
        assert_eq!(run(&seq(0, 5, false), b"x"), Err(nfsstat4::NFS4ERR_SEQ_MISORDERED));
        assert_eq!(run(&seq(2, 1, false), b"x"), Err(nfsstat4::NFS4ERR_BADSLOT));
        // large uncached reply -> RETRY_UNCACHED_REP on replay
        let big = vec![0u8; pnfs_protocol::session::ALWAYS_CACHE_BYTES + 1];
        assert_eq!(run(&seq(0, 2, false), &big), Ok(None));
        assert_eq!(run(&seq(0, 2, false), b"x"), Err(nfsstat4::NFS4ERR_RETRY_UNCACHED_REP));
        // in progress -> DELAY for both the replay and the next seqid
        let mut c = mk();
        assert!(matches!(sequence(&ds, &mut c, &seq(1, 1, false)), Ok(SequenceOutcome::New(_))));
        assert_eq!(run(&seq(1, 1, false), b"x"), Err(nfsstat4::NFS4ERR_DELAY));
        assert_eq!(run(&seq(1, 2, false), b"x"), Err(nfsstat4::NFS4ERR_DELAY));
        // (seqid wrap-around is covered by pnfs_protocol::session's tests)
        // unknown session
        let mut a = seq(0, 3, false);
        a.sa_sessionid = [1; 16];
        assert_eq!(run(&a, b"x"), Err(nfsstat4::NFS4ERR_BADSESSION));
    }

    #[test]
    fn a_full_client_table_evicts_unconfirmed_clients_not_live_ones() {
        let (_d, ds) = ds();
        let max = ds.cfg.max_clients as u64;
        let client = |id: u64, confirmed: bool| Client {
            clientid: id,
            owner: id.to_be_bytes().to_vec(),
            verifier: [0; 8],
            confirmed,
            cs_sequence: 1,
            cs_reply: None,
            sessions: vec![],
            reclaim_complete: false,
            principal: None,
            lease: Lease::new(),
        };
        let mut t = ds.state.clients();
        // 100 live confirmed clients, the rest of the table unconfirmed.
        for id in 1..=max {
            t.clients.insert(id, client(id, id <= 100));
        }
        assert!(make_room(&ds, &ds.state, &mut t));
        assert_eq!(t.clients.len() as u64, max - max / 16);
        assert!((1..=100).all(|id| t.clients.contains_key(&id)), "a live client was evicted");
        assert!(make_room(&ds, &ds.state, &mut t), "room left: nothing to evict");
        // Every client confirmed and live: no room.
        for id in 1..=max {
            t.clients.insert(id, client(id, true));
        }
        assert!(!make_room(&ds, &ds.state, &mut t));
        assert_eq!(t.clients.len() as u64, max);
        assert_eq!(ds.stats.clients_evicted.load(std::sync::atomic::Ordering::Relaxed), max / 16);
    }
}

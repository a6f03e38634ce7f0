//! Client IDs and sessions: EXCHANGE_ID, CREATE_SESSION, DESTROY_SESSION,
//! DESTROY_CLIENTID, BIND_CONN_TO_SESSION, RECLAIM_COMPLETE (RFC 8881
//! 18.35-18.37, 18.49-18.51). SEQUENCE, the slots and the rules of
//! CREATE_SESSION and BIND_CONN_TO_SESSION are the shared engine's
//! ([`pnfs_protocol::nfs41`]); the client records are still the MDS's own
//! table (crate::state), with persistence, grace and per-address caps.

use crate::compound::{reply, Compound};
use crate::mds::{Mds, CLIENT_RECORD_PREFIX};
use crate::namespace::NfsResult;
use crate::state::Client;
use pnfs_protocol::nfs41::sessions::{self, Admission, CreateSessionCtx, CreateSessionRecord};
use pnfs_protocol::session::{
    plan_exchange_id, principal_of, ExchangeIdPlan, KnownClient, EXCHGID4_FLAG_CONFIRMED_R, EXCHGID4_FLAG_USE_NON_PNFS, EXCHGID4_FLAG_USE_PNFS_MDS,
    ServerLimits};
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;
use std::time::Instant;

fn client_record_key(owner: &[u8]) -> Vec<u8> {
    let mut k = CLIENT_RECORD_PREFIX.to_vec();
    k.extend_from_slice(owner);
    k
}

pub fn exchange_id(m: &Mds, c: &mut Compound, a: &EXCHANGE_ID4args, e: &mut Encoder) -> nfsstat4 {
    reply(e, exchange_id_inner(m, c, a))
}

fn exchange_id_inner(m: &Mds, c: &mut Compound, a: &EXCHANGE_ID4args) -> NfsResult<EXCHANGE_ID4resok<'static>> {
    let principal = principal_of(&c.cred);
    let owner = a.eia_clientowner.co_ownerid.to_vec();
    m.release_conflicting_expired();
    let mut st = m.state();
    let known: Vec<KnownClient> = st
        .find_client_by_owner(&owner)
        .into_iter()
        .map(|id| {
            let cl = &st.clients[&id];
            let busy = !cl.sessions.is_empty() || st.states.held_by(id) > 0;
            KnownClient { clientid: id, confirmed: cl.confirmed, verifier: cl.verifier, principal: cl.principal, busy }
        })
        .collect();
    let mut evicted = vec![];
    let (clientid, confirmed_r) = match plan_exchange_id(a, principal, &known)? {
        ExchangeIdPlan::Reuse { clientid, confirmed } => (clientid, confirmed),
        ExchangeIdPlan::Create { purge } => {
            for id in purge {
                st.purge_client(id);
            }
            match st.make_room_for_client(c.conn.peer, m.lease()) {
                Ok(gone) => evicted = gone,
                Err(gone) => {
                    drop(st);
                    forget_records(m, &gone);
                    log::warn!("client table full for {}: EXCHANGE_ID answered NFS4ERR_DELAY", c.conn.peer);
                    return Err(nfsstat4::NFS4ERR_DELAY);
                }
            }
            let id = st.new_clientid(&owner);
            let may_reclaim = st.reclaimable.contains_key(&owner);
            st.clients.insert(
                id,
                Client {
                    clientid: id,
                    owner,
                    verifier: a.eia_clientowner.co_verifier,
                    confirmed: false,
                    cs_sequence: 1,
                    cs_reply: None,
                    last_renewed: Instant::now(),
                    sessions: vec![],
                    reclaim_complete: false,
                    may_reclaim,
                    principal,
                    addr: c.conn.peer,
                },
            );
            (id, false)
        }
    };
    let cs_sequence = st.clients[&clientid].cs_sequence;
    drop(st);
    forget_records(m, &evicted);
    // Never both: the Linux client refuses MDS together with NON_PNFS.
    let mut rflags = if m.pnfs.is_some() { EXCHGID4_FLAG_USE_PNFS_MDS } else { EXCHGID4_FLAG_USE_NON_PNFS };
    if confirmed_r {
        rflags |= EXCHGID4_FLAG_CONFIRMED_R;
    }
    Ok(EXCHANGE_ID4resok {
        eir_clientid: clientid,
        eir_sequenceid: cs_sequence,
        eir_flags: rflags,
        eir_state_protect: state_protect4_r::SP4_NONE,
        eir_server_owner: server_owner4 { so_minor_id: 0, so_major_id: m.server_owner.clone().into() },
        eir_server_scope: m.server_owner.clone().into(),
        eir_server_impl_id: vec![],
    })
}

/// Persisted records of confirmed clients dropped to make room go too.
fn forget_records(m: &Mds, gone: &[Client]) {
    for cl in gone.iter().filter(|cl| cl.confirmed) {
        let _ = m.ns.delete_record(&client_record_key(&cl.owner));
    }
}

/// RFC 8881 2.10.8.3 with SP4_NONE: only the principal that created a
/// client ID (its AUTH_SYS uid/gid at EXCHANGE_ID), calling from an address
/// some export allows, may destroy it or its sessions or bind connections
/// to them; knowing the ID is not enough. Anyone else: NFS4ERR_WRONG_CRED.
fn check_owner(m: &Mds, c: &Compound, owner: Option<&Client>) -> NfsResult<()> {
    if !m.exports.iter().any(|e| e.allows(&c.conn.peer)) {
        return Err(nfsstat4::NFS4ERR_WRONG_CRED);
    }
    match owner {
        Some(cl) if cl.principal != principal_of(&c.cred) => Err(nfsstat4::NFS4ERR_WRONG_CRED),
        _ => Ok(()),
    }
}

pub fn create_session(m: &Mds, c: &mut Compound, a: &CREATE_SESSION4args, e: &mut Encoder) -> nfsstat4 {
    match create_session_inner(m, c, a) {
        Ok(bytes) => {
            e.put_i32(nfsstat4::NFS4_OK as i32);
            e.buf.extend_from_slice(&bytes);
            nfsstat4::NFS4_OK
        }
        Err(s) => reply::<()>(e, Err(s)),
    }
}

/// Returns the encoded CREATE_SESSION4resok (kept for replays).
fn create_session_inner(m: &Mds, c: &mut Compound, a: &CREATE_SESSION4args) -> NfsResult<Vec<u8>> {
    m.release_conflicting_expired();
    let mut st = m.state();
    let ctx = CreateSessionCtx {
        principal: principal_of(&c.cred),
        conn: c.conn.id,
        minor: c.minor,
        limits: ServerLimits { max_record: m.cfg.max_record_bytes, max_ops: m.cfg.max_ops, slots: m.cfg.session_slots },
        max_sessions_per_client: st.caps.max_sessions_per_client,
    };
    let client = st.clients.get(&a.csa_clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?;
    let record = CreateSessionRecord {
        confirmed: client.confirmed,
        principal: client.principal,
        cs_sequence: client.cs_sequence,
        cs_reply: client.cs_reply.as_deref(),
        sessions: client.sessions.len(),
    };
    if let Admission::Replay(bytes) = sessions::admit_create_session(record, a, &ctx)? {
        return Ok(bytes);
    }
    let clientid = a.csa_clientid;
    let sid = st.new_sessionid();
    let (session, bytes) = sessions::new_session(sid, a, &ctx, ())?;
    st.sessions.insert(sid, session);
    m.callbacks.set_security(&sid, &a.csa_sec_parms);
    let client = st.clients.get_mut(&clientid).expect("checked above");
    let was_confirmed = client.confirmed;
    client.confirmed = true;
    client.sessions.push(sid);
    client.last_renewed = Instant::now();
    client.cs_sequence = client.cs_sequence.wrapping_add(1);
    client.cs_reply = Some(bytes.clone());
    if !was_confirmed {
        // A confirmed record of an earlier instance of this client goes away.
        let owner = client.owner.clone();
        let old: Vec<u64> = st
            .find_client_by_owner(&owner)
            .into_iter()
            .filter(|id| *id != clientid && st.clients[id].confirmed)
            .collect();
        for id in old {
            st.purge_client(id);
        }
        drop(st);
        // Persist the client so it may reclaim after our restart.
        m.ns.put_record(&client_record_key(&owner), b"1")?;
    }
    Ok(bytes)
}

pub fn destroy_session(m: &Mds, c: &mut Compound, a: &DESTROY_SESSION4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let mut st = m.state();
        let s = st.sessions.get(&a.dsa_sessionid).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        check_owner(m, c, st.clients.get(&s.clientid))?;
        let s = st.sessions.remove(&a.dsa_sessionid).expect("found above");
        m.callbacks.forget_session(&a.dsa_sessionid);
        if let Some(cl) = st.clients.get_mut(&s.clientid) {
            cl.sessions.retain(|x| *x != a.dsa_sessionid);
        }
        c.session_destroyed(&a.dsa_sessionid);
        Ok(())
    })();
    reply(e, r)
}

pub fn destroy_clientid(m: &Mds, c: &mut Compound, a: &DESTROY_CLIENTID4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let mut st = m.state();
        let cl = st.clients.get(&a.dca_clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?;
        check_owner(m, c, Some(cl))?;
        if !cl.sessions.is_empty() || st.states.held_by(a.dca_clientid) > 0 {
            return Err(nfsstat4::NFS4ERR_CLIENTID_BUSY);
        }
        let cl = st.purge_client(a.dca_clientid).expect("exists");
        drop(st);
        m.ns.delete_record(&client_record_key(&cl.owner))?;
        Ok(())
    })();
    reply(e, r)
}

pub fn bind_conn_to_session(m: &Mds, c: &mut Compound, a: &BIND_CONN_TO_SESSION4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let st = m.state();
        let s = st.sessions.get(&a.bctsa_sessid).ok_or(nfsstat4::NFS4ERR_BADSESSION)?.clone();
        check_owner(m, c, st.clients.get(&s.clientid))?;
        drop(st);
        sessions::bind_conn_to_session(&s, a, c.conn.id)
    })();
    reply(e, r)
}

pub fn reclaim_complete(m: &Mds, c: &mut Compound, a: &RECLAIM_COMPLETE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        // Per-file-system reclaim completion: we have one fs; accept.
        let Some(clientid) = c.reclaim_complete_scope(a)? else { return Ok(()) };
        let mut st = m.state();
        let cl = st.clients.get_mut(&clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?;
        if cl.reclaim_complete {
            return Err(nfsstat4::NFS4ERR_COMPLETE_ALREADY);
        }
        cl.reclaim_complete = true;
        let owner = cl.owner.clone();
        if let Some(done) = st.reclaimable.get_mut(&owner) {
            *done = true;
        }
        Ok(())
    })();
    reply(e, r)
}

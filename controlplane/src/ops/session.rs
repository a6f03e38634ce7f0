//! Client IDs and sessions: EXCHANGE_ID, CREATE_SESSION, DESTROY_SESSION,
//! DESTROY_CLIENTID, BIND_CONN_TO_SESSION, RECLAIM_COMPLETE (RFC 8881
//! 18.35-18.37, 18.49-18.51). The rules (client records, their owner and
//! verifier cases, confirmation, principals, the slots, SEQUENCE) are the
//! shared engine's ([`pnfs_protocol::nfs41`]), run by the MDS's state layer
//! (crate::state) with what only the MDS adds: persistence, grace,
//! per-address caps, the caller's address check.

use crate::compound::{reply, Compound};
use crate::mds::Mds;
use crate::namespace::NfsResult;
use crate::state::Effects;
use pnfs_protocol::nfs41::sessions::{self, CreateSessionCtx};
use pnfs_protocol::session::{
    principal_of, EXCHGID4_FLAG_CONFIRMED_R, EXCHGID4_FLAG_USE_NON_PNFS, EXCHGID4_FLAG_USE_PNFS_MDS, ServerLimits};
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

pub fn exchange_id(m: &Mds, c: &mut Compound, a: &EXCHANGE_ID4args, e: &mut Encoder) -> nfsstat4 {
    reply(e, exchange_id_inner(m, c, a))
}

fn exchange_id_inner(m: &Mds, c: &mut Compound, a: &EXCHANGE_ID4args) -> NfsResult<EXCHANGE_ID4resok<'static>> {
    let principal = principal_of(&c.cred);
    m.release_conflicting_expired();
    let mut fx = Effects::default();
    // A full client table costs the newcomer's address (NFS4ERR_DELAY);
    // the records of clients dropped to make room go.
    let r = m.state().exchange_id(a, principal, c.conn.peer, m.lease(), &mut fx);
    let _ = m.apply(fx);
    let ok = r?;
    // Never both: the Linux client refuses MDS together with NON_PNFS.
    let mut rflags = if m.pnfs.is_some() { EXCHGID4_FLAG_USE_PNFS_MDS } else { EXCHGID4_FLAG_USE_NON_PNFS };
    if ok.confirmed {
        rflags |= EXCHGID4_FLAG_CONFIRMED_R;
    }
    Ok(EXCHANGE_ID4resok {
        eir_clientid: ok.clientid,
        eir_sequenceid: ok.sequenceid,
        eir_flags: rflags,
        eir_state_protect: state_protect4_r::SP4_NONE,
        eir_server_owner: server_owner4 { so_minor_id: 0, so_major_id: m.server_owner.clone().into() },
        eir_server_scope: m.server_owner.clone().into(),
        eir_server_impl_id: vec![],
    })
}

/// RFC 8881 2.10.8.3 with SP4_NONE: only the principal that created a
/// client ID (its AUTH_SYS uid/gid at EXCHANGE_ID; the engine checks it)
/// may destroy it or its sessions or bind connections to them, and on the
/// MDS only from an address some export allows; knowing the ID is not
/// enough. Anyone else: NFS4ERR_WRONG_CRED.
fn check_address(m: &Mds, c: &Compound) -> NfsResult<()> {
    if !m.exports.iter().any(|e| e.allows(&c.conn.peer)) {
        return Err(nfsstat4::NFS4ERR_WRONG_CRED);
    }
    Ok(())
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
    let ctx = CreateSessionCtx {
        principal: principal_of(&c.cred),
        conn: c.conn.id,
        minor: c.minor,
        limits: ServerLimits { max_record: m.cfg.max_record_bytes, max_ops: m.cfg.max_ops, slots: m.cfg.session_slots },
        max_sessions_per_client: m.state().caps.max_sessions_per_client,
        // A cluster keeps sessions and slots in the KV (any node takes them over).
        persist: m.cfg.cluster.is_some(),
    };
    let mut fx = Effects::default();
    let r = m.state().create_session(a, &ctx, &mut fx);
    // The first session confirms the client: its record is persisted so it
    // may reclaim after our restart.
    let persisted = m.apply(fx);
    let (bytes, created) = r?;
    if created {
        // The reply starts with the new session's ID (csr_sessionid).
        if let Ok(sid) = <[u8; 16]>::try_from(&bytes[..16]) {
            m.callbacks.set_security(&sid, &a.csa_sec_parms);
        }
    }
    persisted?;
    Ok(bytes)
}

pub fn destroy_session(m: &Mds, c: &mut Compound, a: &DESTROY_SESSION4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = (|| {
        m.state().destroy_session(&a.dsa_sessionid, principal_of(&c.cred), || check_address(m, c), &mut fx)?;
        m.callbacks.forget_session(&a.dsa_sessionid);
        c.session_destroyed(&a.dsa_sessionid);
        Ok(())
    })();
    let _ = m.apply(fx);
    reply(e, r)
}

pub fn destroy_clientid(m: &Mds, c: &mut Compound, a: &DESTROY_CLIENTID4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = m.state().destroy_clientid(a.dca_clientid, principal_of(&c.cred), || check_address(m, c), &mut fx);
    // Its reclaim record goes.
    let r = r.and(m.apply(fx));
    reply(e, r)
}

pub fn bind_conn_to_session(m: &Mds, c: &mut Compound, a: &BIND_CONN_TO_SESSION4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let s = m.state().session_checked(&a.bctsa_sessid, principal_of(&c.cred), || check_address(m, c))?;
        sessions::bind_conn_to_session(&s, a, c.conn.id)
    })();
    reply(e, r)
}

pub fn reclaim_complete(m: &Mds, c: &mut Compound, a: &RECLAIM_COMPLETE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        // Per-file-system reclaim completion: we have one fs; accept.
        let Some(clientid) = c.reclaim_complete_scope(a)? else { return Ok(()) };
        let mut fx = Effects::default();
        let r = m.state().reclaim_complete(clientid, &mut fx);
        r.and(m.apply(fx))
    })();
    reply(e, r)
}

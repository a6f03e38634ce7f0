//! Client IDs and sessions: EXCHANGE_ID, CREATE_SESSION, DESTROY_SESSION,
//! DESTROY_CLIENTID, BIND_CONN_TO_SESSION, SEQUENCE, RECLAIM_COMPLETE
//! (RFC 8881 18.35-18.37, 18.46, 18.49-18.51).

use crate::compound::{reply, Compound};
use crate::mds::Mds;
use crate::namespace::NfsResult;
use crate::state::{Client, Effects, Session};
use pnfs_protocol::session::{
    plan_exchange_id, principal_of, EXCHGID4_FLAG_CONFIRMED_R, EXCHGID4_FLAG_USE_NON_PNFS, EXCHGID4_FLAG_USE_PNFS_MDS,
    negotiate, ServerLimits, SlotTable, SlotUse, CREATE_SESSION4_FLAG_CONN_BACK_CHAN};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode};
use std::sync::{Arc, Mutex};

pub fn exchange_id(m: &Mds, c: &mut Compound, a: &EXCHANGE_ID4args, e: &mut Encoder) -> nfsstat4 {
    reply(e, exchange_id_inner(m, c, a))
}

fn exchange_id_inner(m: &Mds, c: &mut Compound, a: &EXCHANGE_ID4args) -> NfsResult<EXCHANGE_ID4resok<'static>> {
    let principal = principal_of(&c.cred);
    let owner = &a.eia_clientowner.co_ownerid;
    m.release_conflicting_expired();
    let mut fx = Effects::default();
    // A full client table costs the newcomer's address (NFS4ERR_DELAY);
    // the records of clients dropped to make room go.
    let r = m.state().exchange_id(
        owner,
        a.eia_clientowner.co_verifier,
        principal,
        c.conn.peer,
        m.lease(),
        |known| plan_exchange_id(a, principal, known),
        &mut fx,
    );
    let _ = m.apply(fx);
    let (clientid, confirmed_r, cs_sequence) = r?;
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
    let clientid = a.csa_clientid;
    let flags = a.csa_flags & CREATE_SESSION4_FLAG_CONN_BACK_CHAN;
    let (minor, conn) = (c.minor, c.conn.id);
    let make = |sid| {
        let (fore, back) = negotiate(
            a,
            ServerLimits { max_record: m.cfg.max_record_bytes, max_ops: m.cfg.max_ops, slots: m.cfg.session_slots },
        )?;
        let session = Session {
            id: sid,
            clientid,
            fore,
            back,
            cb_program: a.csa_cb_program,
            minor,
            slots: Mutex::new(SlotTable::new(fore.max_requests)),
            back_conns: Mutex::new(if flags != 0 { vec![conn] } else { vec![] }),
        };
        let res = CREATE_SESSION4resok {
            csr_sessionid: sid,
            csr_sequence: a.csa_sequence,
            csr_flags: flags,
            csr_fore_chan_attrs: fore.to_attrs(),
            csr_back_chan_attrs: back.to_attrs(),
        };
        let mut enc = Encoder::new();
        res.encode(&mut enc).map_err(|_| nfsstat4::NFS4ERR_SERVERFAULT)?;
        Ok((session, enc.into_inner()))
    };
    let mut fx = Effects::default();
    let r = m.state().create_session(clientid, principal_of(&c.cred), a.csa_sequence, make, &mut fx);
    // The first session confirms the client: its record is persisted so it
    // may reclaim after our restart.
    let persisted = m.apply(fx);
    let bytes = r?;
    persisted?;
    Ok(bytes)
}

pub fn destroy_session(m: &Mds, c: &mut Compound, a: &DESTROY_SESSION4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = (|| {
        m.state().destroy_session(&a.dsa_sessionid, |owner| check_owner(m, c, owner), &mut fx)?;
        if c.session.as_ref().is_some_and(|cs| cs.id == a.dsa_sessionid) && c.slot.is_some() {
            // The slot belongs to a session that is gone; nothing to cache.
            c.slot = None;
        }
        Ok(())
    })();
    let _ = m.apply(fx);
    reply(e, r)
}

pub fn destroy_clientid(m: &Mds, c: &mut Compound, a: &DESTROY_CLIENTID4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = m.state().destroy_clientid(a.dca_clientid, |cl| check_owner(m, c, Some(cl)), &mut fx);
    // Its reclaim record goes.
    let r = r.and(m.apply(fx));
    reply(e, r)
}

pub fn bind_conn_to_session(m: &Mds, c: &mut Compound, a: &BIND_CONN_TO_SESSION4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let s = m.state().session_checked(&a.bctsa_sessid, |owner| check_owner(m, c, owner))?;
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
            let mut bc = s.back_conns.lock().unwrap_or_else(|p| p.into_inner());
            if !bc.contains(&c.conn.id) {
                bc.push(c.conn.id);
            }
        }
        Ok(BIND_CONN_TO_SESSION4resok { bctsr_sessid: s.id, bctsr_dir: dir, bctsr_use_conn_in_rdma_mode: false })
    })();
    reply(e, r)
}

pub enum SequenceOutcome {
    New(SEQUENCE4resok),
    /// A retransmission: send this cached COMPOUND4res as it was.
    Replay(Arc<Vec<u8>>),
}

/// SEQUENCE (RFC 8881 2.10.6.1, 18.46). An error here leaves the slot untouched.
pub fn sequence(m: &Mds, c: &mut Compound, a: &SEQUENCE4args) -> NfsResult<SequenceOutcome> {
    // The lease is renewed. Fenced state (a recalled layout kept too long)
    // is announced until freed.
    let (session, revoked) = m.state().sequence(&a.sa_sessionid)?;
    let status_flags = if revoked { SEQ4_STATUS_RECALLABLE_STATE_REVOKED } else { 0 };
    if c.op_count > session.fore.max_ops as usize {
        return Err(nfsstat4::NFS4ERR_TOO_MANY_OPS);
    }
    if c.request_len > session.fore.max_request as usize {
        return Err(nfsstat4::NFS4ERR_REQ_TOO_BIG);
    }
    // Even a lone SEQUENCE reply (about 80 bytes) could not be cached.
    if a.sa_cachethis && session.fore.max_response_cached < 128 {
        return Err(nfsstat4::NFS4ERR_REP_TOO_BIG_TO_CACHE);
    }
    let mut slots = session.slots.lock().unwrap_or_else(|p| p.into_inner());
    let nslots = slots.len();
    if let SlotUse::Replay(r) = slots.begin(a.sa_slotid, a.sa_sequenceid)? {
        return Ok(SequenceOutcome::Replay(r));
    }
    drop(slots);
    c.max_response = session.fore.max_response as usize;
    c.session = Some(session.clone());
    c.slot = Some(a.sa_slotid);
    c.sequenceid = a.sa_sequenceid;
    Ok(SequenceOutcome::New(SEQUENCE4resok {
        sr_sessionid: a.sa_sessionid,
        sr_sequenceid: a.sa_sequenceid,
        sr_slotid: a.sa_slotid,
        sr_highest_slotid: nslots - 1,
        sr_target_highest_slotid: nslots - 1,
        sr_status_flags: status_flags,
    }))
}

/// Ends a request on its slot, keeping the reply for retransmissions.
pub fn finish_slot(session: &Session, slot: u32, reply: &[u8], cache_this: bool) {
    let mut slots = session.slots.lock().unwrap_or_else(|p| p.into_inner());
    slots.finish(slot, reply, cache_this, session.fore.max_response_cached);
}

pub fn reclaim_complete(m: &Mds, c: &mut Compound, a: &RECLAIM_COMPLETE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let clientid = c.clientid()?;
        if a.rca_one_fs {
            // Per-file-system reclaim completion: we have one fs; accept.
            c.fh()?;
            return Ok(());
        }
        m.state().reclaim_complete(clientid)
    })();
    reply(e, r)
}

//! Client IDs and sessions on the DS: EXCHANGE_ID, CREATE_SESSION,
//! DESTROY_SESSION, DESTROY_CLIENTID, BIND_CONN_TO_SESSION,
//! RECLAIM_COMPLETE (RFC 8881 18.35-18.37, 18.49-18.51), over the shared
//! engine ([`pnfs_protocol::nfs41`]; SEQUENCE runs in its COMPOUND loop).
//! What is the DS's own: its reply flags and identity, its client-table
//! bound, leases. No persisted client records, no grace period, no open
//! state (a client's only "state" here is its sessions).

use crate::compound::{reply, Compound, NfsResult, ReplyBuf, DS_MAX_OPS};
use crate::ds::Ds;
use crate::state::{Client, ClientTable, DsClient, DsSession, Lease, MAX_SESSIONS_PER_CLIENT};
use crate::stats::bump;
use pnfs_protocol::nfs41::clients::{check_principal, ClientHooks, Room};
use pnfs_protocol::nfs41::sessions::{self, CreateSessionCtx};
use pnfs_protocol::session::{principal_of, ServerLimits, EXCHGID4_FLAG_CONFIRMED_R, EXCHGID4_FLAG_USE_PNFS_DS};
use pnfs_protocol::wire::*;
use std::cmp::Reverse;
use std::time::Duration;

/// The DS's client policies for the engine.
struct DsHooks<'a> {
    ds: &'a Ds,
}

impl ClientHooks<DsClient> for DsHooks<'_> {
    fn clientid_high(&self, _owner: &[u8]) -> u32 {
        self.ds.state.boot
    }

    fn new_client(&mut self, _owner: &[u8]) -> DsClient {
        DsClient { lease: Lease::new() }
    }

    fn make_room(&mut self, t: &ClientTable) -> Room {
        make_room(self.ds, t)
    }
}

pub fn exchange_id(ds: &Ds, c: &mut Compound, a: &EXCHANGE_ID4args, rb: &mut ReplyBuf) -> nfsstat4 {
    reply(rb, exchange_id_inner(ds, c, a))
}

fn exchange_id_inner(ds: &Ds, c: &mut Compound, a: &EXCHANGE_ID4args) -> NfsResult<EXCHANGE_ID4resok<'static>> {
    // No expire() here: the lease reaper (control runtime, every quarter
    // lease) does it, and a full table makes room (make_room); a scan of
    // every client per call made a flood of EXCHANGE_IDs hold the table's lock.
    let mut t = ds.state.clients();
    let ok = t.exchange_id(&mut &ds.state.sessions, &mut DsHooks { ds }, a, principal_of(&c.cred)).inspect_err(|e| {
        if *e == nfsstat4::NFS4ERR_DELAY {
            bump(&ds.stats.clients_refused, 1);
            log::warn!("DS client table full (ds.max_clients {}, every client live); EXCHANGE_ID answered DELAY", ds.cfg.max_clients);
        }
    })?;
    if let Some(cl) = t.get(ok.clientid) {
        cl.lock().lease.renew();
    }
    // A data server answers USE_PNFS_DS whatever the client asked for: the
    // Linux client refuses a DS without it (nfs4_init_ds_session -> ENODEV).
    let mut rflags = EXCHGID4_FLAG_USE_PNFS_DS;
    if ok.confirmed {
        rflags |= EXCHGID4_FLAG_CONFIRMED_R;
    }
    Ok(EXCHANGE_ID4resok {
        eir_clientid: ok.clientid,
        eir_sequenceid: ok.sequenceid,
        eir_flags: rflags,
        eir_state_protect: state_protect4_r::SP4_NONE,
        // Our own identity, never the MDS's (trunking would merge us).
        eir_server_owner: server_owner4 { so_minor_id: 0, so_major_id: ds.server_owner.clone().into() },
        eir_server_scope: ds.server_owner.clone().into(),
        eir_server_impl_id: vec![],
    })
}

/// Makes room for one more client when the table holds `ds.max_clients`;
/// no fit when every client is live. An EXCHANGE_ID alone costs its sender
/// nothing, so unconfirmed clients go first, longest silent first (a real
/// client confirms within a round trip); then confirmed ones silent for
/// over a lease (the reaper keeps those half a lease longer while there
/// is room: a client whose renewal is late). Scans the table only when
/// full, and then frees a sixteenth of it, so that a flood pays one scan
/// per many calls.
fn make_room(ds: &Ds, t: &ClientTable) -> Room {
    let max = ds.cfg.max_clients;
    if t.len() < max {
        return Room { purge: vec![], fits: true };
    }
    let lease = ds.lease();
    let mut victims: Vec<(bool, Reverse<Duration>, u64)> = t
        .values()
        .map(|e| {
            let cl = e.lock();
            (cl.confirmed, Reverse(cl.lease.idle_for()), cl.clientid)
        })
        .filter(|(confirmed, Reverse(idle), _)| !confirmed || *idle > lease)
        .collect();
    if victims.is_empty() {
        return Room { purge: vec![], fits: false };
    }
    let batch = (max / 16).max(1);
    if victims.len() > batch {
        victims.select_nth_unstable(batch - 1);
        victims.truncate(batch);
    }
    bump(&ds.stats.clients_evicted, victims.len() as u64);
    log::debug!("DS client table full (ds.max_clients {max}): evicting {} unconfirmed or silent clients", victims.len());
    Room { purge: victims.into_iter().map(|(_, _, id)| id).collect(), fits: true }
}

pub fn create_session(ds: &Ds, c: &mut Compound, a: &CREATE_SESSION4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let ctx = CreateSessionCtx {
        principal: principal_of(&c.cred),
        conn: c.conn.id,
        minor: c.minor,
        limits: ServerLimits { max_record: ds.cfg.max_record_bytes, max_ops: DS_MAX_OPS, slots: ds.cfg.session_slots },
        max_sessions_per_client: MAX_SESSIONS_PER_CLIENT,
        persist: false,
    };
    let mut t = ds.state.clients();
    let r = sessions::create_session(&mut t, &mut &ds.state.sessions, &mut DsHooks { ds }, a, ctx, |cl: &Client| DsSession {
        owner_tag: pnfs_protocol::session::owner_tag(&cl.owner),
        lease: cl.ext.lease.clone(),
    });
    match r {
        Ok(ok) => {
            if let Some(s) = &ok.session {
                s.lease.renew();
            }
            rb.e.put_i32(nfsstat4::NFS4_OK as i32);
            rb.e.buf.extend_from_slice(&ok.resok);
            nfsstat4::NFS4_OK
        }
        Err(s) => reply::<()>(rb, Err(s)),
    }
}

pub fn destroy_session(ds: &Ds, c: &mut Compound, a: &DESTROY_SESSION4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let mut t = ds.state.clients();
    let r = sessions::destroy_session(&mut t, &mut &ds.state.sessions, &a.dsa_sessionid, principal_of(&c.cred));
    if r.is_ok() {
        c.session_destroyed(&a.dsa_sessionid);
    }
    reply(rb, r.map(|_| ()))
}

pub fn destroy_clientid(ds: &Ds, c: &mut Compound, a: &DESTROY_CLIENTID4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let mut t = ds.state.clients();
    let r = t.destroy_clientid(&mut &ds.state.sessions, &mut DsHooks { ds }, a.dca_clientid, principal_of(&c.cred));
    reply(rb, r.map(|_| ()))
}

pub fn bind_conn_to_session(ds: &Ds, c: &mut Compound, a: &BIND_CONN_TO_SESSION4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = (|| {
        let s = ds.state.sessions.get(&a.bctsa_sessid).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        let client = ds.state.clients().get(s.clientid).cloned();
        check_principal(client.as_ref().map(|c| c.lock()).as_deref(), principal_of(&c.cred))?;
        let res = sessions::bind_conn_to_session(&s, a, c.conn.id)?;
        s.lease.renew();
        Ok(res)
    })();
    reply(rb, r)
}

pub fn reclaim_complete(ds: &Ds, c: &mut Compound, a: &RECLAIM_COMPLETE4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = match c.reclaim_complete_scope(a) {
        Ok(Some(clientid)) => ds.state.clients().reclaim_complete(clientid).map(|_| ()),
        other => other.map(|_| ()),
    };
    reply(rb, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compound::{CompoundOutcome, ConnInfo, Dispatcher};
    use crate::config::DsConfig;
    use crate::state::{ChannelLimits, Session, SlotTable};
    use crate::stats::DsStats;
    use crate::storage::{BufPool, Engine};
    use pnfs_protocol::rpc::Credential;
    use pnfs_protocol::{Encoder, XdrDecode, XdrEncode};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    fn ds() -> (tempfile::TempDir, Arc<Ds>) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DsConfig::new("t", dir.path().to_path_buf(), "127.0.0.1:1");
        cfg.cluster_key_file = Some(pnfs_protocol::seal::ClusterKey::test_file_in(dir.path()));
        cfg.bind = "127.0.0.1:2049".parse().unwrap();
        (dir, Ds::open(cfg).unwrap())
    }

    fn new_session(ds: &Ds, slots: u32) -> Arc<Session> {
        let limits = |n| ChannelLimits { max_request: 1 << 20, max_response: 1 << 20, max_response_cached: 8192, max_ops: 8, max_requests: n };
        let s = Arc::new(Session {
            id: [9; 16],
            clientid: 1,
            fore: limits(slots),
            back: limits(1),
            cb_program: 0,
            minor: 1,
            slots: Mutex::new(SlotTable::new(slots)),
            back_conns: Mutex::new(vec![]),
            ext: DsSession { owner_tag: 0, lease: Lease::new() },
        });
        ds.state.sessions.insert(s.id, s.clone());
        s
    }

    fn compound(slot: u32, seqid: u32, cachethis: bool) -> Vec<u8> {
        let seq = SEQUENCE4args { sa_sessionid: [9; 16], sa_sequenceid: seqid, sa_slotid: slot, sa_highest_slotid: 0, sa_cachethis: cachethis };
        let args = COMPOUND4args {
            tag: b"t".as_slice().into(),
            minorversion: 1,
            argarray: vec![nfs_argop4::OP_SEQUENCE(seq), nfs_argop4::OP_PUTROOTFH, nfs_argop4::OP_GETFH],
        };
        let mut e = Encoder::new();
        args.encode(&mut e).unwrap();
        e.into_inner()
    }

    /// The DS plane over the engine's COMPOUND loop: a retransmission is
    /// answered from the slot's cache, byte for byte, and counted; a
    /// misordered seqid is refused without moving the slot.
    #[test]
    fn sequence_replays_through_the_dispatcher() {
        let (_d, ds) = ds();
        new_session(&ds, 2);
        let engine = Engine::new(BufPool::new(1, 64 * 1024), Arc::new(DsStats::default()), false);
        let conn = ConnInfo { id: 1, peer: "127.0.0.1".parse().unwrap() };
        let replica = ds.bus.replica(0);
        let dispatcher = Dispatcher::new();
        let run = |args: &[u8]| {
            let mut rb = ReplyBuf::new(Encoder::new());
            match dispatcher.run(&ds, &conn, &engine, &replica, Credential::None, args, None, &mut rb, false, None) {
                CompoundOutcome::Done => Ok(rb.flat_body()),
                CompoundOutcome::Replay(bytes) => Err(bytes.to_vec()),
                _ => panic!("neither a reply nor a replay"),
            }
        };
        let first = run(&compound(0, 1, true)).expect("a new request");
        let res = COMPOUND4res::decode(&mut pnfs_protocol::Decoder::new(&first)).unwrap();
        assert_eq!((res.status, res.resarray.len()), (nfsstat4::NFS4_OK, 3));
        assert_eq!(run(&compound(0, 1, true)), Err(first.clone()));
        assert_eq!(ds.stats.replays.load(Ordering::Relaxed), 1);
        let bad = run(&compound(0, 5, false)).expect("an error reply");
        let res = COMPOUND4res::decode(&mut pnfs_protocol::Decoder::new(&bad)).unwrap();
        assert_eq!((res.status, res.resarray.len()), (nfsstat4::NFS4ERR_SEQ_MISORDERED, 1));
        let next = run(&compound(0, 2, false)).expect("the next seqid still works");
        assert_eq!(COMPOUND4res::decode(&mut pnfs_protocol::Decoder::new(&next)).unwrap().status, nfsstat4::NFS4_OK);
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
            principal: None,
            cs_sequence: 1,
            cs_reply: None,
            sessions: vec![],
            reclaim_complete: false,
            ext: DsClient { lease: Lease::new() },
        };
        let mut t = ds.state.clients();
        // 100 live confirmed clients, the rest of the table unconfirmed.
        for id in 1..=max {
            t.insert(client(id, id <= 100));
        }
        let room = make_room(&ds, &t);
        assert!(room.fits);
        assert_eq!(room.purge.len() as u64, max / 16);
        assert!(room.purge.iter().all(|id| *id > 100), "a live client was evicted");
        for id in room.purge {
            ds.state.purge_client(&mut t, id);
        }
        assert_eq!(make_room(&ds, &t), Room { purge: vec![], fits: true }, "room left: nothing to evict");
        // Every client confirmed and live: no room.
        for id in 1..=max {
            t.insert(client(id, true));
        }
        assert_eq!(make_room(&ds, &t), Room { purge: vec![], fits: false });
        assert_eq!(t.len() as u64, max);
        assert_eq!(ds.stats.clients_evicted.load(Ordering::Relaxed), max / 16);
    }
}

//! The NFSv4.1 backchannel (RFC 8881 2.10.3.1, 20): CB_COMPOUND calls sent
//! on a connection the client bound for callbacks, to program csa_cb_program
//! version 1, first op CB_SEQUENCE. Replies arrive on the same connection,
//! mixed with the client's calls; the connection reader hands them here by
//! xid.
//!
//! Calls are made from blocking threads (the COMPOUND executors) and wait
//! with a timeout; the client's back-channel slot table is honoured by using
//! one slot per session (calls on a session are serialised).

use crate::state::{Session, SessionId};
use pnfs_protocol::rpc;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// RFC 8881 says 4, but the Linux client (and knfsd) use version 1.
const CB_VERSION: u32 = 1;
const CB_PROC_COMPOUND: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CbError {
    /// No connection of the session is bound for callbacks.
    NoBackChannel,
    /// The client did not answer in time (or the connection went away).
    Timeout,
    /// The client answered with an RPC-level error.
    Rpc(String),
    /// The CB_COMPOUND failed with this status.
    Status(nfsstat4),
}

type ReplyTx = mpsc::Sender<Vec<u8>>;

/// The credential callbacks on a session carry: the first usable entry of
/// csa_sec_parms (CREATE_SESSION) or bca_sec_parms (BACKCHANNEL_CTL). The
/// Linux client accepts anything; pynfs checks it is what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CbCred {
    None,
    Sys { machinename: Vec<u8>, uid: u32, gid: u32, gids: Vec<u32> },
}

impl CbCred {
    /// The first flavor we can send (RPCSEC_GSS is skipped); None when the
    /// client offered none of ours.
    pub fn choose(parms: &[callback_sec_parms4<'_>]) -> Option<CbCred> {
        parms.iter().find_map(|p| match p {
            callback_sec_parms4::AUTH_NONE => Some(CbCred::None),
            callback_sec_parms4::AUTH_SYS(a) => Some(CbCred::Sys {
                machinename: a.machinename.to_vec(),
                uid: a.uid,
                gid: a.gid,
                gids: a.gids.iter().copied().take(16).collect(),
            }),
            callback_sec_parms4::RPCSEC_GSS(_) => None,
        })
    }

    fn encode(&self, e: &mut Encoder) {
        match self {
            CbCred::None => {
                e.put_u32(rpc::AUTH_NONE);
                e.put_u32(0);
            }
            CbCred::Sys { machinename, uid, gid, gids } => {
                e.put_u32(rpc::AUTH_SYS);
                let mut body = Encoder::new();
                body.put_u32(0); // stamp
                let name = &machinename[..machinename.len().min(255)];
                body.put_opaque(name, 255).expect("bounded above");
                body.put_u32(*uid);
                body.put_u32(*gid);
                body.put_u32(gids.len() as u32);
                gids.iter().for_each(|g| body.put_u32(*g));
                e.put_opaque(&body.into_inner(), rpc::MAX_AUTH_BYTES).expect("bounded above");
            }
        }
        e.put_u32(rpc::AUTH_NONE); // verifier
        e.put_u32(0);
    }
}

/// Per-connection senders and calls waiting for replies.
pub struct Callbacks {
    conns: Mutex<HashMap<u64, crate::server::ReplyQueue>>,
    pending: Mutex<HashMap<u32, ReplyTx>>,
    /// Back-channel slot 0 sequence per session; the mutex also serialises
    /// calls on a session, so the client's slot is never double-booked.
    slots: Mutex<HashMap<SessionId, Arc<Mutex<u32>>>>,
    /// Credential per session (absent: AUTH_SYS root, as before).
    creds: Mutex<HashMap<SessionId, CbCred>>,
    /// Callback program per session, when BACKCHANNEL_CTL changed it.
    programs: Mutex<HashMap<SessionId, u32>>,
    next_xid: AtomicU32,
    timeout: Duration,
}

impl Callbacks {
    pub fn new(timeout: Duration) -> Callbacks {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Callbacks {
            conns: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
            programs: Mutex::new(HashMap::new()),
            next_xid: AtomicU32::new(seed | 0x8000_0000),
            timeout,
        }
    }

    /// A connection's outgoing record queue (messages without record marks).
    pub fn register_conn(&self, conn_id: u64, tx: crate::server::ReplyQueue) {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(conn_id, tx);
    }

    pub fn unregister_conn(&self, conn_id: u64) {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&conn_id);
    }

    /// Hands an RPC reply received on some connection to the waiting call.
    /// Returns false when nobody waits for `xid`.
    pub fn deliver_reply(&self, xid: u32, record: Vec<u8>) -> bool {
        match self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&xid) {
            Some(tx) => tx.send(record).is_ok(),
            None => false,
        }
    }

    pub fn forget_session(&self, id: &SessionId) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.creds.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.programs.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// BACKCHANNEL_CTL's new callback program for the session.
    pub fn set_program(&self, id: &SessionId, program: u32) {
        self.programs.lock().unwrap_or_else(|p| p.into_inner()).insert(*id, program);
    }

    /// Sets the credential of the session's callbacks from the client's
    /// sec_parms; keeps the old one when none is usable.
    pub fn set_security(&self, id: &SessionId, parms: &[callback_sec_parms4<'_>]) {
        if let Some(cred) = CbCred::choose(parms) {
            self.creds.lock().unwrap_or_else(|p| p.into_inner()).insert(*id, cred);
        }
    }

    /// Whether a connection bound for the session's back channel is still up.
    pub fn has_back_channel(&self, session: &Session) -> bool {
        let conns = session.back_conns.lock().unwrap_or_else(|p| p.into_inner());
        let map = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.iter().any(|id| map.contains_key(id))
    }

    /// Sends CB_SEQUENCE + `ops` on the session's back channel and waits for
    /// the answer. Must not be called with the state mutex held.
    pub fn call(&self, session: &Session, ops: Vec<nfs_cb_argop4<'_>>) -> Result<(), CbError> {
        self.call_referring(session, ops, vec![])
    }

    /// `call` naming fore-channel requests the callback may race with
    /// (RFC 8881 2.10.6.3).
    pub fn call_referring(
        &self,
        session: &Session,
        ops: Vec<nfs_cb_argop4<'_>>,
        referring: Vec<referring_call_list4>,
    ) -> Result<(), CbError> {
        self.call_for_results(session, ops, referring).map(|_| ())
    }

    /// `call_referring` that returns the CB_COMPOUND4res bytes (status,
    /// tag, results) of a successful call, for callbacks that carry data
    /// back (CB_GETATTR).
    pub fn call_for_results(
        &self,
        session: &Session,
        ops: Vec<nfs_cb_argop4<'_>>,
        referring: Vec<referring_call_list4>,
    ) -> Result<Vec<u8>, CbError> {
        let conns: Vec<u64> = session.back_conns.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tx = {
            let map = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.iter().rev().find_map(|id| map.get(id).cloned())
        };
        let Some(tx) = tx else { return Err(CbError::NoBackChannel) };
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(session.id)
            .or_insert_with(|| Arc::new(Mutex::new(0)))
            .clone();
        let mut seq = slot.lock().unwrap_or_else(|p| p.into_inner());
        let seqid = seq.wrapping_add(1);
        let mut argarray = vec![nfs_cb_argop4::OP_CB_SEQUENCE(CB_SEQUENCE4args {
            csa_sessionid: session.id,
            csa_sequenceid: seqid,
            csa_slotid: 0,
            csa_highest_slotid: 0,
            csa_cachethis: false,
            csa_referring_call_lists: referring,
        })];
        argarray.extend(ops);
        let args = CB_COMPOUND4args { tag: b"".as_slice().into(), minorversion: session.minor, callback_ident: 0, argarray };
        let xid = self.next_xid.fetch_add(1, Ordering::Relaxed);
        let mut e = Encoder::new();
        let cred = self.creds.lock().unwrap_or_else(|p| p.into_inner()).get(&session.id).cloned();
        let program = self.programs.lock().unwrap_or_else(|p| p.into_inner()).get(&session.id).copied();
        let program = program.unwrap_or(session.cb_program);
        match cred {
            Some(cred) => {
                rpc::put_call_head(&mut e, xid, program, CB_VERSION, CB_PROC_COMPOUND);
                cred.encode(&mut e);
            }
            None => rpc::begin_call(&mut e, xid, program, CB_VERSION, CB_PROC_COMPOUND, true),
        }
        args.encode(&mut e).map_err(|err| CbError::Rpc(err.to_string()))?;
        let (rtx, rrx) = mpsc::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(xid, rtx);
        // Queued without waiting (the connection's reply budget applies to
        // its reader, never to this thread).
        if tx.send(e.into_inner()).is_err() {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&xid);
            return Err(CbError::NoBackChannel);
        }
        let reply = rrx.recv_timeout(self.timeout);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&xid);
        let reply = reply.map_err(|_| CbError::Timeout)?;
        // The slot is used once the client processed CB_SEQUENCE, whatever
        // the later ops answered.
        *seq = seqid;
        match rpc::parse_message(&reply) {
            Ok(rpc::Message::Reply { accepted: Some(0), body, .. }) => {
                let mut d = pnfs_protocol::Decoder::new(body);
                let status = d.get_i32().map_err(|e| CbError::Rpc(e.to_string()))?;
                match nfsstat4::from_i32(status) {
                    Some(nfsstat4::NFS4_OK) => Ok(body.to_vec()),
                    Some(s) => Err(CbError::Status(s)),
                    None => Err(CbError::Rpc(format!("unknown CB_COMPOUND status {status}"))),
                }
            }
            Ok(rpc::Message::Reply { accepted, .. }) => Err(CbError::Rpc(format!("callback not accepted: {accepted:?}"))),
            _ => Err(CbError::Rpc("unparseable callback reply".into())),
        }
    }
}

/// CB_LAYOUTRECALL of a whole file's layouts (RFC 8881 20.3).
/// The referring call list of a recall sent on session `on`: the call that
/// granted what is recalled, when it came on that session, so a client that
/// has not processed that reply yet waits for it (RFC 8881 2.10.6.3).
pub fn referring_to(granted_by: Option<(SessionId, u32, u32)>, on: &SessionId) -> Vec<referring_call_list4> {
    granted_by
        .filter(|(sess, _, _)| sess == on)
        .map(|(sess, slot, seq)| referring_call_list4 {
            rcl_sessionid: sess,
            rcl_referring_calls: vec![referring_call4 { rc_sequenceid: seq, rc_slotid: slot }],
        })
        .into_iter()
        .collect()
}

pub fn layout_recall_file<'a>(fh: &'a [u8], stateid: stateid4, iomode: layoutiomode4, kind: layouttype4) -> nfs_cb_argop4<'a> {
    nfs_cb_argop4::OP_CB_LAYOUTRECALL(CB_LAYOUTRECALL4args {
        clora_type: kind,
        clora_iomode: iomode,
        clora_changed: true,
        clora_recall: layoutrecall4::LAYOUTRECALL4_FILE(layoutrecall_file4 {
            lor_fh: fh.into(),
            lor_offset: 0,
            lor_length: u64::MAX,
            lor_stateid: stateid,
        }),
    })
}

/// CB_RECALL of a delegation (RFC 8881 20.2).
pub fn deleg_recall<'a>(fh: &'a [u8], stateid: stateid4) -> nfs_cb_argop4<'a> {
    nfs_cb_argop4::OP_CB_RECALL(CB_RECALL4args { stateid, truncate: false, fh: fh.into() })
}

/// CB_GETATTR of size and change (RFC 8881 20.1).
pub fn deleg_getattr(fh: &[u8]) -> nfs_cb_argop4<'_> {
    let bits = crate::attrs::bitmap_from(&[crate::attrs::FATTR4_CHANGE, crate::attrs::FATTR4_SIZE]);
    nfs_cb_argop4::OP_CB_GETATTR(CB_GETATTR4args { fh: fh.into(), attr_request: bits })
}

/// (change, size) out of a CB_COMPOUND4res whose second result is a
/// CB_GETATTR; None when it does not hold both.
pub fn getattr_results(res: &[u8]) -> Option<(u64, u64)> {
    use pnfs_protocol::XdrDecode;
    let r = CB_COMPOUND4res::decode(&mut pnfs_protocol::Decoder::new(res)).ok()?;
    let attrs = r.resarray.iter().find_map(|op| match op {
        nfs_cb_resop4::OP_CB_GETATTR(CB_GETATTR4res::NFS4_OK(ok)) => Some(&ok.obj_attributes),
        _ => None,
    })?;
    let mut d = pnfs_protocol::Decoder::new(&attrs.attr_vals);
    let (mut change, mut size) = (None, None);
    // Values come in bit order; past size nothing of ours follows.
    for (w, word) in attrs.attrmask.iter().enumerate().take(2) {
        for b in 0..32 {
            if word & (1 << b) == 0 {
                continue;
            }
            match w as u32 * 32 + b {
                crate::attrs::FATTR4_CHANGE => change = Some(d.get_u64().ok()?),
                crate::attrs::FATTR4_SIZE => size = Some(d.get_u64().ok()?),
                bit if bit < crate::attrs::FATTR4_SIZE => return None, // unasked and of unknown length
                _ => break,
            }
        }
    }
    Some((change?, size?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ChannelLimits, SlotTable};

    fn session(conns: Vec<u64>) -> Session {
        let lim = ChannelLimits { max_request: 4096, max_response: 4096, max_response_cached: 0, max_ops: 2, max_requests: 1 };
        Session {
            id: [3; 16],
            clientid: 1,
            fore: lim,
            back: lim,
            cb_program: 0x4000_0000,
            minor: 2,
            slots: Mutex::new(SlotTable::new(1)),
            back_conns: Mutex::new(conns),
            ext: (),
        }
    }

    #[test]
    fn call_round_trip_over_a_fake_back_channel() {
        let cbs = Arc::new(Callbacks::new(Duration::from_secs(5)));
        let (tx, mut rx) = crate::server::ReplyQueue::new();
        cbs.register_conn(9, tx);
        let client = {
            let cbs = cbs.clone();
            std::thread::spawn(move || {
                let call = rx.blocking_recv().unwrap();
                let (xid, prog, vers, args) = match rpc::parse_message(&call).unwrap() {
                    rpc::Message::Call { header, args } => (header.xid, header.prog, header.vers, args),
                    m => panic!("{m:?}"),
                };
                assert_eq!((prog, vers), (0x4000_0000, 1));
                // The CB_COMPOUND carries the session's minor version (a 4.2
                // Linux client answers BADSESSION to minorversion 1).
                use pnfs_protocol::XdrDecode;
                let a = CB_COMPOUND4args::decode(&mut pnfs_protocol::Decoder::new(args)).unwrap();
                assert_eq!(a.minorversion, 2);
                match &a.argarray[0] {
                    nfs_cb_argop4::OP_CB_SEQUENCE(s) => assert_eq!((s.csa_sessionid, s.csa_sequenceid), ([3; 16], 1)),
                    other => panic!("{other:?}"),
                }
                assert!(matches!(&a.argarray[1], nfs_cb_argop4::OP_CB_LAYOUTRECALL(_)));
                let mut e = Encoder::new();
                rpc::begin_accepted_reply(&mut e, xid, rpc::AcceptStat::Success);
                e.put_u32(nfsstat4::NFS4ERR_NOMATCHING_LAYOUT as u32);
                assert!(cbs.deliver_reply(xid, e.into_inner()));
            })
        };
        let s = session(vec![9]);
        let fh = [1u8; 16];
        let r = cbs.call(&s, vec![layout_recall_file(&fh, stateid4 { seqid: 2, other: [5; 12] }, layoutiomode4::LAYOUTIOMODE4_ANY, layouttype4::LAYOUT4_NFSV4_1_FILES)]);
        client.join().unwrap();
        assert_eq!(r, Err(CbError::Status(nfsstat4::NFS4ERR_NOMATCHING_LAYOUT)));
    }

    #[test]
    fn getattr_results_and_callback_credentials() {
        // A CB_GETATTR answer: change 7, size 100 (in bit order).
        let mut vals = Encoder::new();
        vals.put_u64(7);
        vals.put_u64(100);
        let vals = vals.into_inner();
        let res = |attrmask: Vec<u32>| {
            let r = CB_COMPOUND4res {
                status: nfsstat4::NFS4_OK,
                tag: b"".as_slice().into(),
                resarray: vec![nfs_cb_resop4::OP_CB_GETATTR(CB_GETATTR4res::NFS4_OK(CB_GETATTR4resok {
                    obj_attributes: fattr4 { attrmask, attr_vals: vals.as_slice().into() },
                }))],
            };
            pnfs_protocol::xdr::encode_to_vec(&r).unwrap()
        };
        assert_eq!(getattr_results(&res(vec![(1 << 3) | (1 << 4)])), Some((7, 100)));
        assert_eq!(getattr_results(&res(vec![1 << 4])), None, "no change attribute");
        assert_eq!(getattr_results(&res(vec![1 << 1 | 1 << 3 | 1 << 4])), None, "an attribute of unknown length first");

        // The credential the client asked for in its sec_parms is sent.
        let cbs = Arc::new(Callbacks::new(Duration::from_secs(5)));
        let (tx, mut rx) = crate::server::ReplyQueue::new();
        cbs.register_conn(9, tx);
        let s = session(vec![9]);
        assert!(cbs.has_back_channel(&s));
        let sys = authsys_parms { stamp: 1, machinename: b"m".as_slice().into(), uid: 17, gid: 19, gids: vec![] };
        cbs.set_security(&s.id, &[callback_sec_parms4::AUTH_SYS(sys)]);
        cbs.set_program(&s.id, 0x4000_0001);
        let client = {
            let cbs = cbs.clone();
            std::thread::spawn(move || {
                let call = rx.blocking_recv().unwrap();
                let rpc::Message::Call { header, .. } = rpc::parse_message(&call).unwrap() else { panic!() };
                assert_eq!(header.prog, 0x4000_0001);
                let rpc::Credential::Sys { uid, gid, .. } = header.cred else { panic!("{:?}", header.cred) };
                let mut e = Encoder::new();
                rpc::begin_accepted_reply(&mut e, header.xid, rpc::AcceptStat::Success);
                e.put_u32(0);
                e.put_opaque(b"", 16).unwrap();
                e.put_u32(0);
                assert!(cbs.deliver_reply(header.xid, e.into_inner()));
                (uid, gid)
            })
        };
        cbs.call(&s, vec![]).unwrap();
        assert_eq!(client.join().unwrap(), (17, 19));
        cbs.unregister_conn(9);
        assert!(!cbs.has_back_channel(&s));
    }

    #[test]
    fn no_back_channel_and_timeout() {
        let cbs = Callbacks::new(Duration::from_millis(50));
        assert_eq!(cbs.call(&session(vec![]), vec![]), Err(CbError::NoBackChannel));
        let (tx, _rx) = crate::server::ReplyQueue::new();
        cbs.register_conn(1, tx);
        assert_eq!(cbs.call(&session(vec![1]), vec![]), Err(CbError::Timeout));
    }
}

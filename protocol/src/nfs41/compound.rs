//! The COMPOUND loop (RFC 8881 16.2.3, 2.10.6): decodes the op array one
//! op at a time, applies the session gate, runs SEQUENCE against the
//! plane's sessions, hands every other op to the plane, holds each result
//! to the session's reply size and cache limits, patches the COMPOUND
//! status and op count and keeps the reply in the slot's cache.
//!
//! A plane may stop at the COMPOUND's last op while its I/O runs
//! ([`OpStep::Suspend`]): [`run`] then returns [`Outcome::Pending`] with a
//! [`Suspended`] (plain values, no allocation) holding what is needed to
//! finish the reply later in the same reply buffer: the plane encodes the
//! op's result and calls [`Suspended::finish`]. The slot stays in progress
//! meanwhile (a retransmission gets NFS4ERR_DELAY).

use super::sessions::{self, Session, SequenceOutcome, SessionId};
use crate::rpc::Credential;
use crate::session::session_gate;
use crate::wire::*;
use crate::{Decoder, Encoder, XdrDecode, XdrEncode};
use std::sync::Arc;

/// Where a reply is built: an [`Encoder`] (and, on the DS, a payload
/// spliced in at write time).
pub trait ReplyBuffer {
    fn encoder(&mut self) -> &mut Encoder;
    /// Absolute position in the encoder.
    fn len(&self) -> usize;
    /// Length of the COMPOUND4res so far, anything attached included.
    fn body_len(&self) -> usize;
    /// Cuts the reply back to absolute position `pos`.
    fn truncate(&mut self, pos: usize);
    /// The COMPOUND4res as one byte string, for the reply cache.
    fn cached_copy(&self) -> Vec<u8>;
}

/// A plain encoder holding only the COMPOUND4res.
impl ReplyBuffer for Encoder {
    fn encoder(&mut self) -> &mut Encoder {
        self
    }
    fn len(&self) -> usize {
        Encoder::len(self)
    }
    fn body_len(&self) -> usize {
        Encoder::len(self)
    }
    fn truncate(&mut self, pos: usize) {
        self.buf.truncate(pos);
    }
    fn cached_copy(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

/// Writes `status` and, on success, the result body; an encoding failure
/// (a bug) answers NFS4ERR_SERVERFAULT.
pub fn reply<T: XdrEncode>(e: &mut Encoder, r: Result<T, nfsstat4>) -> nfsstat4 {
    let start = e.len();
    match r {
        Ok(v) => {
            e.put_i32(nfsstat4::NFS4_OK as i32);
            if let Err(err) = v.encode(e) {
                log::error!("encoding a reply failed: {err}");
                e.buf.truncate(start);
                e.put_i32(nfsstat4::NFS4ERR_SERVERFAULT as i32);
                return nfsstat4::NFS4ERR_SERVERFAULT;
            }
            nfsstat4::NFS4_OK
        }
        Err(s) => {
            e.put_i32(s as i32);
            s
        }
    }
}

/// What the engine keeps per COMPOUND, and the plane's operations see.
#[derive(Debug)]
pub struct CompoundState<F, S> {
    pub minor: u32,
    pub cred: Credential,
    /// Set by SEQUENCE.
    pub session: Option<Arc<Session<S>>>,
    /// The slot SEQUENCE took; None once the reply is not to be cached
    /// (its session destroyed by this very COMPOUND).
    pub slot: Option<u32>,
    /// The SEQUENCE's sequenceid (referring calls of callbacks).
    pub sequenceid: u32,
    /// sa_cachethis of the SEQUENCE.
    pub cache_this: bool,
    pub current_fh: Option<F>,
    pub saved_fh: Option<F>,
    /// Size of the request, for the session's max request size.
    pub request_len: usize,
    /// Operations the COMPOUND claims.
    pub op_count: usize,
    /// Position of the running op in the COMPOUND.
    pub op_index: usize,
    /// Byte budget for this reply (the session's max response size once
    /// SEQUENCE ran).
    pub max_response: usize,
}

impl<F: Copy, S> CompoundState<F, S> {
    /// Before the header is read: `max_response` is the server's record size.
    pub fn new(cred: Credential, request_len: usize, max_response: usize) -> Self {
        CompoundState {
            minor: 0,
            cred,
            session: None,
            slot: None,
            sequenceid: 0,
            cache_this: false,
            current_fh: None,
            saved_fh: None,
            request_len,
            op_count: 0,
            op_index: 0,
            max_response,
        }
    }

    pub fn fh(&self) -> Result<F, nfsstat4> {
        self.current_fh.ok_or(nfsstat4::NFS4ERR_NOFILEHANDLE)
    }

    pub fn clientid(&self) -> Result<u64, nfsstat4> {
        self.session.as_ref().map(|s| s.clientid).ok_or(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION)
    }

    /// Whether the running op is the COMPOUND's last.
    pub fn is_last_op(&self) -> bool {
        self.op_index + 1 == self.op_count
    }

    /// SAVEFH (RFC 8881 18.27).
    pub fn save_fh(&mut self) -> Result<(), nfsstat4> {
        self.saved_fh = Some(self.fh()?);
        Ok(())
    }

    /// RESTOREFH (RFC 8881 18.31).
    pub fn restore_fh(&mut self) -> Result<(), nfsstat4> {
        self.current_fh = Some(self.saved_fh.ok_or(nfsstat4::NFS4ERR_NOFILEHANDLE)?);
        Ok(())
    }

    /// RECLAIM_COMPLETE's scope (RFC 8881 18.51.3): the client ID whose
    /// reclaims are complete, or None for one file system (the current
    /// filehandle's; a server with one file system just accepts it).
    pub fn reclaim_complete_scope(&self, a: &RECLAIM_COMPLETE4args) -> Result<Option<u64>, nfsstat4> {
        let clientid = self.clientid()?;
        if a.rca_one_fs {
            self.fh()?;
            return Ok(None);
        }
        Ok(Some(clientid))
    }

    /// A DESTROY_SESSION in this COMPOUND destroyed `id`: if it is the
    /// COMPOUND's own session, its slot is gone and nothing is cached.
    pub fn session_destroyed(&mut self, id: &SessionId) {
        if self.session.as_ref().is_some_and(|s| s.id == *id) {
            self.slot = None;
        }
    }
}

/// What an operation did.
pub enum OpStep<J> {
    /// Its result (status first) is encoded.
    Done(nfsstat4),
    /// The last op waits for I/O; nothing of its result is encoded yet
    /// (only its opnum). Finish with [`Suspended::finish`].
    Suspend(J),
}

/// What a plane brings to the COMPOUND loop.
pub trait Plane {
    type Fh: Copy;
    /// The plane's part of a session.
    type SessionExt;
    type Reply: ReplyBuffer;
    /// A suspended op's pending work.
    type Job;

    fn state(&mut self) -> &mut CompoundState<Self::Fh, Self::SessionExt>;
    fn find_session(&mut self, id: &SessionId) -> Option<Arc<Session<Self::SessionExt>>>;
    /// SEQUENCE found its session: renew the client's lease; the status
    /// flags to answer (an error: answered, the slot untouched).
    fn on_sequence(&mut self, s: &Session<Self::SessionExt>) -> Result<u32, nfsstat4>;
    /// Runs one operation other than SEQUENCE (after the gate), writing
    /// its result after the opnum already in `rb`.
    fn dispatch(&mut self, op: nfs_opnum4, arg: &nfs_argop4<'_>, rb: &mut Self::Reply) -> OpStep<Self::Job>;
    /// One op's result is final (`op` None: an illegal or missing op).
    fn op_done(&mut self, _op: Option<nfs_opnum4>, _status: nfsstat4) {}
    /// A copy of the finished reply went into the slot's cache.
    fn reply_cached(&mut self, _rb: &Self::Reply) {}
}

/// How a COMPOUND ended.
pub enum Outcome<S, J> {
    /// The COMPOUND4res is in the reply buffer (and cached when due).
    Done,
    /// A retransmission: send this cached COMPOUND4res as it was.
    Replay(Arc<Vec<u8>>),
    /// The arguments could not be decoded at all: RPC GARBAGE_ARGS.
    Garbage,
    /// The last op waits for `J`; see [`Suspended`].
    Pending(Suspended<S>, J),
}

/// A COMPOUND stopped at its last op: what finishing its reply needs.
pub struct Suspended<S> {
    status_at: usize,
    count_at: usize,
    done: u32,
    op_start: usize,
    opnum: i32,
    session: Option<Arc<Session<S>>>,
    slot: Option<u32>,
    cache_this: bool,
    max_response: usize,
}

/// How a COMPOUND's reply was finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The last op's status after the size checks.
    pub status: nfsstat4,
    /// A copy of the reply went into the slot's cache.
    pub cached: bool,
}

impl<S> Suspended<S> {
    /// Where the suspended op's result goes: `rb` must end there.
    pub fn result_at(&self) -> usize {
        self.op_start + 4
    }

    /// Finishes the reply once the plane encoded the op's result (`st`):
    /// size checks, COMPOUND status and count, the slot's reply cache.
    pub fn finish<R: ReplyBuffer + ?Sized>(self, rb: &mut R, st: nfsstat4) -> Finished {
        let cached_limit = self.session.as_ref().map_or(usize::MAX, |s| s.fore.max_response_cached as usize);
        let st = size_checks(rb, st, self.op_start, self.opnum, self.max_response, self.cache_this, cached_limit);
        let cached = close(rb, self.status_at, self.count_at, st, self.done, self.session.as_deref(), self.slot, self.cache_this);
        Finished { status: st, cached }
    }
}

/// The reply-size rules every op result passes: above the session's max
/// response size, REP_TOO_BIG; a cached reply above the cache's limit,
/// REP_TOO_BIG_TO_CACHE (the result is replaced by the error).
fn size_checks<R: ReplyBuffer + ?Sized>(
    rb: &mut R,
    mut st: nfsstat4,
    op_start: usize,
    opnum: i32,
    max_response: usize,
    cache_this: bool,
    cached_limit: usize,
) -> nfsstat4 {
    if rb.body_len() > max_response {
        rb.truncate(op_start);
        rb.encoder().put_i32(opnum);
        st = reply::<()>(rb.encoder(), Err(nfsstat4::NFS4ERR_REP_TOO_BIG));
    }
    if cache_this && st == nfsstat4::NFS4_OK && rb.body_len() > cached_limit {
        rb.truncate(op_start);
        rb.encoder().put_i32(opnum);
        st = reply::<()>(rb.encoder(), Err(nfsstat4::NFS4ERR_REP_TOO_BIG_TO_CACHE));
    }
    st
}

/// Patches the COMPOUND status and op count, then ends the slot's request.
#[allow(clippy::too_many_arguments)]
fn close<R: ReplyBuffer + ?Sized, S>(
    rb: &mut R,
    status_at: usize,
    count_at: usize,
    status: nfsstat4,
    done: u32,
    session: Option<&Session<S>>,
    slot: Option<u32>,
    cache_this: bool,
) -> bool {
    let e = rb.encoder();
    e.patch_u32(status_at, status as u32);
    e.patch_u32(count_at, done);
    match (session, slot) {
        (Some(s), Some(slot)) => s.finish_request(slot, rb, cache_this),
        _ => false,
    }
}

/// Runs one COMPOUND (`args`: the COMPOUND4args), appending the
/// COMPOUND4res to `rb`. The plane's state is reset from the header.
pub fn run<P: Plane>(p: &mut P, args: &[u8], rb: &mut P::Reply) -> Outcome<P::SessionExt, P::Job> {
    let mut d = Decoder::new(args);
    let Ok(tag) = d.get_opaque(NFS4_OPAQUE_LIMIT) else { return Outcome::Garbage };
    let Ok(minor) = d.get_u32() else { return Outcome::Garbage };
    let status_at = rb.len();
    let e = rb.encoder();
    e.put_u32(0); // status, patched below
    let _ = e.put_opaque(&tag, NFS4_OPAQUE_LIMIT);
    let count_at = e.len();
    e.put_u32(0);
    if !(1..=2).contains(&minor) {
        e.patch_u32(status_at, nfsstat4::NFS4ERR_MINOR_VERS_MISMATCH as u32);
        return Outcome::Done;
    }
    let Ok(count) = d.get_count(u32::MAX) else { return Outcome::Garbage };
    {
        let c = p.state();
        c.minor = minor;
        c.op_count = count;
    }
    let mut status = nfsstat4::NFS4_OK;
    let mut done = 0u32;
    for i in 0..count {
        p.state().op_index = i;
        let op_start = rb.len();
        let (op, op_status) = 'op: {
            let opnum = match d.rest().get(..4) {
                Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                None => {
                    // Claimed more ops than were sent.
                    rb.encoder().put_i32(nfs_opnum4::OP_ILLEGAL as i32);
                    done += 1;
                    break 'op (None, reply::<()>(rb.encoder(), Err(nfsstat4::NFS4ERR_BADXDR)));
                }
            };
            let op = match nfs_opnum4::from_i32(opnum) {
                Some(op) if op != nfs_opnum4::OP_ILLEGAL && opnum >= 3 => op,
                _ => {
                    rb.encoder().put_i32(nfs_opnum4::OP_ILLEGAL as i32);
                    done += 1;
                    break 'op (None, reply::<()>(rb.encoder(), Err(nfsstat4::NFS4ERR_OP_ILLEGAL)));
                }
            };
            rb.encoder().put_i32(opnum);
            done += 1;
            let arg = match nfs_argop4::decode(&mut d) {
                Ok(a) => a,
                Err(err) => {
                    log::debug!("op {op:?}: undecodable arguments: {err}");
                    break 'op (Some(op), reply::<()>(rb.encoder(), Err(nfsstat4::NFS4ERR_BADXDR)));
                }
            };
            if let Some(s) = session_gate(op, i, count, p.state().session.is_some()) {
                break 'op (Some(op), reply::<()>(rb.encoder(), Err(s)));
            }
            if let nfs_argop4::OP_SEQUENCE(sa) = &arg {
                match sequence(p, sa) {
                    Ok(SequenceOutcome::New(res)) => break 'op (Some(op), reply(rb.encoder(), Ok(res))),
                    Ok(SequenceOutcome::Replay(bytes)) => {
                        p.op_done(Some(op), nfsstat4::NFS4_OK);
                        return Outcome::Replay(bytes);
                    }
                    Err(s) => break 'op (Some(op), reply::<()>(rb.encoder(), Err(s))),
                }
            }
            let st = match p.dispatch(op, &arg, rb) {
                OpStep::Done(st) => st,
                OpStep::Suspend(job) => {
                    let c = p.state();
                    assert!(c.is_last_op() && rb.len() == op_start + 4, "a suspended op must be the last, unencoded");
                    let s = Suspended {
                        status_at,
                        count_at,
                        done,
                        op_start,
                        opnum,
                        session: c.session.take(),
                        slot: c.slot,
                        cache_this: c.cache_this,
                        max_response: c.max_response,
                    };
                    return Outcome::Pending(s, job);
                }
            };
            let c = p.state();
            let cached_limit = c.session.as_ref().map_or(usize::MAX, |s| s.fore.max_response_cached as usize);
            (Some(op), size_checks(rb, st, op_start, opnum, c.max_response, c.cache_this, cached_limit))
        };
        p.op_done(op, op_status);
        status = op_status;
        if status != nfsstat4::NFS4_OK {
            break;
        }
    }
    let c = p.state();
    if close(rb, status_at, count_at, status, done, c.session.as_deref(), c.slot, c.cache_this) {
        p.reply_cached(rb);
    }
    Outcome::Done
}

/// SEQUENCE: the session, the plane's renewal, the slot; on a new request
/// the COMPOUND takes the session's limits.
fn sequence<P: Plane>(p: &mut P, a: &SEQUENCE4args) -> Result<SequenceOutcome, nfsstat4> {
    let session = p.find_session(&a.sa_sessionid).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
    let flags = p.on_sequence(&session)?;
    let c = p.state();
    let out = sessions::sequence(&session, a, c.op_count, c.request_len, flags)?;
    if let SequenceOutcome::New(_) = out {
        c.max_response = session.fore.max_response as usize;
        c.cache_this = a.sa_cachethis;
        c.slot = Some(a.sa_slotid);
        c.sequenceid = a.sa_sequenceid;
        c.session = Some(session);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs41::clients::tests::Sessions;
    use crate::session::{ChannelLimits, SlotTable};
    use crate::Opaque;
    use std::sync::Mutex;

    /// A plane with a handful of ops: PUTROOTFH, SAVEFH/RESTOREFH, GETFH,
    /// GETATTR (a result of `getattr_len` bytes), READ (suspends),
    /// DESTROY_SESSION (of the COMPOUND's own session).
    struct TestPlane {
        core: CompoundState<u64, ()>,
        sessions: Sessions,
        getattr_len: usize,
        done: Vec<(Option<nfs_opnum4>, nfsstat4)>,
        cached: usize,
    }

    impl Plane for TestPlane {
        type Fh = u64;
        type SessionExt = ();
        type Reply = Encoder;
        type Job = u32;

        fn state(&mut self) -> &mut CompoundState<u64, ()> {
            &mut self.core
        }
        fn find_session(&mut self, id: &SessionId) -> Option<Arc<Session<()>>> {
            self.sessions.get(id).cloned()
        }
        fn on_sequence(&mut self, _s: &Session<()>) -> Result<u32, nfsstat4> {
            Ok(0)
        }
        fn dispatch(&mut self, op: nfs_opnum4, _arg: &nfs_argop4<'_>, rb: &mut Encoder) -> OpStep<u32> {
            let c = &mut self.core;
            OpStep::Done(match op {
                nfs_opnum4::OP_PUTROOTFH => {
                    c.current_fh = Some(1);
                    reply(rb, Ok(()))
                }
                nfs_opnum4::OP_SAVEFH => reply(rb, c.save_fh()),
                nfs_opnum4::OP_RESTOREFH => reply(rb, c.restore_fh()),
                nfs_opnum4::OP_GETFH => reply(rb, c.fh()),
                nfs_opnum4::OP_GETATTR => reply(rb, Ok(Opaque::owned(vec![0; self.getattr_len]))),
                nfs_opnum4::OP_READ => return OpStep::Suspend(42),
                nfs_opnum4::OP_DESTROY_SESSION => {
                    let id = c.session.as_ref().unwrap().id;
                    self.sessions.remove(&id);
                    c.session_destroyed(&id);
                    reply(rb, Ok(()))
                }
                _ => reply::<()>(rb, Err(nfsstat4::NFS4ERR_NOTSUPP)),
            })
        }
        fn op_done(&mut self, op: Option<nfs_opnum4>, status: nfsstat4) {
            self.done.push((op, status));
        }
        fn reply_cached(&mut self, _rb: &Encoder) {
            self.cached += 1;
        }
    }

    const SID: SessionId = [5; 16];

    fn plane(limits: ChannelLimits) -> TestPlane {
        let mut sessions = Sessions::new();
        sessions.insert(
            SID,
            Arc::new(Session {
                id: SID,
                clientid: 1,
                fore: limits,
                back: limits,
                cb_program: 0,
                minor: 1,
                slots: Mutex::new(SlotTable::new(limits.max_requests)),
                back_conns: Mutex::new(vec![]),
                ext: (),
            }),
        );
        TestPlane { core: CompoundState::new(Credential::None, 0, 1 << 20), sessions, getattr_len: 8, done: vec![], cached: 0 }
    }

    fn limits() -> ChannelLimits {
        ChannelLimits { max_request: 1 << 16, max_response: 1 << 16, max_response_cached: 1024, max_ops: 8, max_requests: 2 }
    }

    fn seq(slot: u32, seqid: u32, cachethis: bool) -> nfs_argop4<'static> {
        nfs_argop4::OP_SEQUENCE(SEQUENCE4args {
            sa_sessionid: SID,
            sa_sequenceid: seqid,
            sa_slotid: slot,
            sa_highest_slotid: 1,
            sa_cachethis: cachethis,
        })
    }

    fn encode(minor: u32, ops: Vec<nfs_argop4<'_>>) -> Vec<u8> {
        let mut e = Encoder::new();
        COMPOUND4args { tag: b"tag".as_slice().into(), minorversion: minor, argarray: ops }.encode(&mut e).unwrap();
        e.into_inner()
    }

    /// Runs a COMPOUND on a fresh per-COMPOUND state of `p`.
    fn run_on(p: &mut TestPlane, args: &[u8]) -> (Outcome<(), u32>, Encoder) {
        p.core = CompoundState::new(Credential::None, args.len(), 1 << 20);
        p.done.clear();
        let mut rb = Encoder::new();
        let out = run(p, args, &mut rb);
        (out, rb)
    }

    /// (COMPOUND status, results, the last result's status).
    fn head(rb: &Encoder) -> (nfsstat4, u32, nfsstat4) {
        let mut d = Decoder::new(&rb.buf);
        let status = d.get_u32().unwrap();
        d.get_opaque(NFS4_OPAQUE_LIMIT).unwrap();
        let count = d.get_u32().unwrap();
        let mut last = nfsstat4::NFS4_OK;
        // Results here are only a status when not OK; walk them by op.
        for _ in 0..count {
            let op = nfs_opnum4::from_i32(d.get_i32().unwrap()).unwrap();
            last = nfsstat4::from_i32(d.get_i32().unwrap()).unwrap();
            if last == nfsstat4::NFS4_OK {
                match op {
                    nfs_opnum4::OP_SEQUENCE => {
                        d.take(16 + 4 * 5).unwrap();
                    }
                    nfs_opnum4::OP_GETFH => {
                        d.get_u64().unwrap();
                    }
                    nfs_opnum4::OP_GETATTR => {
                        d.get_opaque(u32::MAX).unwrap();
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(d.remaining(), 0, "trailing bytes in the reply");
        (nfsstat4::from_i32(status as i32).unwrap(), count, last)
    }

    fn done(out: Outcome<(), u32>) {
        assert!(matches!(out, Outcome::Done), "not Done");
    }

    #[test]
    fn the_session_gate() {
        let mut p = plane(limits());
        let (out, rb) = run_on(&mut p, &encode(1, vec![nfs_argop4::OP_PUTROOTFH, nfs_argop4::OP_GETFH]));
        done(out);
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_OP_NOT_IN_SESSION, 1, nfsstat4::NFS4ERR_OP_NOT_IN_SESSION));
        let ds = nfs_argop4::OP_DESTROY_SESSION(DESTROY_SESSION4args { dsa_sessionid: SID });
        let (_, rb) = run_on(&mut p, &encode(1, vec![ds.clone(), nfs_argop4::OP_PUTROOTFH]));
        assert_eq!(head(&rb).0, nfsstat4::NFS4ERR_NOT_ONLY_OP);
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 1, false), seq(1, 1, false)]));
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_SEQUENCE_POS, 2, nfsstat4::NFS4ERR_SEQUENCE_POS));
        // Minor versions 1 and 2 only; no op runs.
        let (out, rb) = run_on(&mut p, &encode(0, vec![nfs_argop4::OP_PUTROOTFH]));
        done(out);
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_MINOR_VERS_MISMATCH, 0, nfsstat4::NFS4_OK));
        assert!(p.done.is_empty());
        // Unknown and missing ops.
        // A SEQUENCE op: its number, the session ID, 3 numbers, a bool.
        const SEQ_OP: usize = 4 + 16 + 3 * 4 + 4;
        let mut args = encode(1, vec![seq(0, 2, false)]);
        args.truncate(args.len() - SEQ_OP);
        args.extend_from_slice(&99_999u32.to_be_bytes());
        let (_, rb) = run_on(&mut p, &args);
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_OP_ILLEGAL, 1, nfsstat4::NFS4ERR_OP_ILLEGAL));
        assert_eq!(p.done, vec![(None, nfsstat4::NFS4ERR_OP_ILLEGAL)]);
        let mut args = encode(1, vec![seq(1, 1, false)]);
        let at = args.len() - SEQ_OP - 4;
        args[at..at + 4].copy_from_slice(&3u32.to_be_bytes()); // claims 3 ops, sends 1
        let (_, rb) = run_on(&mut p, &args);
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_BADXDR, 2, nfsstat4::NFS4ERR_BADXDR));
        let (out, _) = run_on(&mut p, &[0, 0, 0]);
        assert!(matches!(out, Outcome::Garbage));
    }

    #[test]
    fn slot_replay_and_misordered_seqid() {
        let mut p = plane(limits());
        let args = encode(1, vec![seq(0, 1, true), nfs_argop4::OP_PUTROOTFH, nfs_argop4::OP_SAVEFH, nfs_argop4::OP_GETFH]);
        let (out, first) = run_on(&mut p, &args);
        done(out);
        assert_eq!(head(&first), (nfsstat4::NFS4_OK, 4, nfsstat4::NFS4_OK));
        assert_eq!(p.cached, 1);
        assert_eq!(p.done.len(), 4);
        // The retransmission: the cached reply, byte for byte.
        match run_on(&mut p, &args).0 {
            Outcome::Replay(bytes) => assert_eq!(&bytes[..], &first.buf[..]),
            _ => panic!("not a replay"),
        }
        // Misordered: refused on SEQUENCE, the slot not moved.
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 3, false), nfs_argop4::OP_PUTROOTFH]));
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_SEQ_MISORDERED, 1, nfsstat4::NFS4ERR_SEQ_MISORDERED));
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(2, 1, false)]));
        assert_eq!(head(&rb).0, nfsstat4::NFS4ERR_BADSLOT);
        // An op error ends the COMPOUND; the reply is still cached (small).
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 2, false), nfs_argop4::OP_RESTOREFH, nfs_argop4::OP_PUTROOTFH]));
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_NOFILEHANDLE, 2, nfsstat4::NFS4ERR_NOFILEHANDLE));
        assert_eq!(p.cached, 2);
        // An unknown session.
        let mut other = SEQUENCE4args { sa_sessionid: [6; 16], sa_sequenceid: 1, sa_slotid: 0, sa_highest_slotid: 0, sa_cachethis: false };
        let (_, rb) = run_on(&mut p, &encode(1, vec![nfs_argop4::OP_SEQUENCE(other.clone())]));
        assert_eq!(head(&rb).0, nfsstat4::NFS4ERR_BADSESSION);
        // A COMPOUND that destroys its own session caches nothing.
        other.sa_sessionid = SID;
        other.sa_sequenceid = 3;
        let ds = nfs_argop4::OP_DESTROY_SESSION(DESTROY_SESSION4args { dsa_sessionid: SID });
        let (_, rb) = run_on(&mut p, &encode(1, vec![nfs_argop4::OP_SEQUENCE(other), ds]));
        assert_eq!(head(&rb), (nfsstat4::NFS4_OK, 2, nfsstat4::NFS4_OK));
        assert_eq!(p.cached, 2);
    }

    #[test]
    fn op_count_and_request_size_limits() {
        let mut p = plane(ChannelLimits { max_ops: 3, max_request: 200, ..limits() });
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 1, false), nfs_argop4::OP_PUTROOTFH, nfs_argop4::OP_GETFH, nfs_argop4::OP_GETFH]));
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_TOO_MANY_OPS, 1, nfsstat4::NFS4ERR_TOO_MANY_OPS));
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 1, false), nfs_argop4::OP_PUTROOTFH, nfs_argop4::OP_GETFH]));
        assert_eq!(head(&rb).0, nfsstat4::NFS4_OK, "the refusals did not take the slot");
        let name = vec![b'n'; 200];
        let lookup = nfs_argop4::OP_LOOKUP(LOOKUP4args { objname: name.as_slice().into() });
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 2, false), lookup]));
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_REQ_TOO_BIG, 1, nfsstat4::NFS4ERR_REQ_TOO_BIG));
    }

    #[test]
    fn reply_size_limits() {
        let mut p = plane(ChannelLimits { max_response: 400, max_response_cached: 300, ..limits() });
        // Too big for the session: the op's result becomes REP_TOO_BIG.
        p.getattr_len = 500;
        let getattr = || nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![] });
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 1, false), nfs_argop4::OP_PUTROOTFH, getattr()]));
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_REP_TOO_BIG, 3, nfsstat4::NFS4ERR_REP_TOO_BIG));
        assert!(rb.len() < 400);
        // Fits the session (380 bytes) but not the cache the client asked for.
        p.getattr_len = 300;
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 2, true), nfs_argop4::OP_PUTROOTFH, getattr()]));
        assert_eq!(head(&rb), (nfsstat4::NFS4ERR_REP_TOO_BIG_TO_CACHE, 3, nfsstat4::NFS4ERR_REP_TOO_BIG_TO_CACHE));
        // Without sa_cachethis it is answered (and kept: small).
        let (_, rb) = run_on(&mut p, &encode(1, vec![seq(0, 3, false), nfs_argop4::OP_PUTROOTFH, getattr()]));
        assert_eq!(head(&rb), (nfsstat4::NFS4_OK, 3, nfsstat4::NFS4_OK));
        assert_eq!(p.done.last(), Some(&(Some(nfs_opnum4::OP_GETATTR), nfsstat4::NFS4_OK)));
    }

    #[test]
    fn a_suspended_last_op_resumes() {
        let mut p = plane(limits());
        let read = || nfs_argop4::OP_READ(READ4args { stateid: stateid4 { seqid: 0, other: [0; 12] }, offset: 0, count: 8 });
        let args = encode(1, vec![seq(0, 1, true), nfs_argop4::OP_PUTROOTFH, read()]);
        let (out, mut rb) = run_on(&mut p, &args);
        let Outcome::Pending(susp, job) = out else { panic!("not suspended") };
        assert_eq!(job, 42);
        assert_eq!(susp.result_at(), rb.len());
        assert_eq!(p.done.len(), 2, "the suspended op is not done yet");
        // Meanwhile the slot is busy: a retransmission waits.
        let (_, busy) = run_on(&mut p, &args);
        assert_eq!(head(&busy).0, nfsstat4::NFS4ERR_DELAY);
        // The plane encodes the result; the engine closes the COMPOUND.
        let st = reply(&mut rb, Ok(Opaque::owned(vec![1; 8])));
        let f = susp.finish(&mut rb, st);
        assert_eq!(f, Finished { status: nfsstat4::NFS4_OK, cached: true });
        let mut d = Decoder::new(&rb.buf);
        assert_eq!((d.get_u32().unwrap(), d.get_opaque(64).unwrap().to_vec(), d.get_u32().unwrap()), (0, b"tag".to_vec(), 3));
        match run_on(&mut p, &args).0 {
            Outcome::Replay(bytes) => assert_eq!(&bytes[..], &rb.buf[..]),
            _ => panic!("not a replay"),
        }
        // A suspended op's result is held to the limits too.
        let mut p = plane(ChannelLimits { max_response: 300, ..limits() });
        let (out, mut rb) = run_on(&mut p, &encode(1, vec![seq(0, 1, false), read()]));
        let Outcome::Pending(susp, _) = out else { panic!("not suspended") };
        let st = reply(&mut rb, Ok(Opaque::owned(vec![1; 400])));
        assert_eq!(susp.finish(&mut rb, st).status, nfsstat4::NFS4ERR_REP_TOO_BIG);
    }

    #[test]
    fn reclaim_complete_scope() {
        let mut p = plane(limits());
        let all = RECLAIM_COMPLETE4args { rca_one_fs: false };
        let one = RECLAIM_COMPLETE4args { rca_one_fs: true };
        assert_eq!(p.core.reclaim_complete_scope(&all), Err(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION));
        p.core.session = p.sessions.get(&SID).cloned();
        assert_eq!(p.core.reclaim_complete_scope(&all), Ok(Some(1)));
        assert_eq!(p.core.reclaim_complete_scope(&one), Err(nfsstat4::NFS4ERR_NOFILEHANDLE));
        p.core.current_fh = Some(1);
        assert_eq!(p.core.reclaim_complete_scope(&one), Ok(None));
    }
}

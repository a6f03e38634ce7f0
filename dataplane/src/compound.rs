//! COMPOUND processing on the DS (RFC 8881 section 16.2), mirroring the MDS:
//! session gate, the operation dispatch table, the current filehandle, reply
//! encoding and the session reply cache.
//!
//! Replies are built in a [`ReplyBuf`]: the encoded bytes plus at most one
//! attached pool buffer holding READ data, which the connection writes as
//! its own iovec (no copy of the payload into the reply).
//!
//! A READ that is the last op of its COMPOUND may be deferred when the
//! reactor runs reads asynchronously ([`Dispatcher::run`] with
//! `defer_read`): the READ prepares its [`ReadJob`] (pool buffer taken, so
//! an empty pool is still NFS4ERR_DELAY), and the COMPOUND stops there
//! with [`CompoundOutcome::Pending`]: every earlier op's result is encoded,
//! the session slot stays in progress (a retransmission meanwhile gets
//! NFS4ERR_DELAY). When the read completes, [`Suspended::resume`] encodes
//! the READ result, applies the reply-size checks every op gets, patches
//! the COMPOUND status and op count and only then records the final reply
//! in the slot's reply cache. An UNSTABLE4 WRITE that is the last op is
//! deferred the same way (its data in a pool buffer, see
//! [`crate::ops::io::write`]) and finished by [`Suspended::resume_write`].

use crate::aio::ReadJob;
use crate::bus::Replica;
use crate::ds::Ds;
use crate::fh::DsFh;
use crate::ops;
use crate::recv::Detached;
use crate::state::Session;
use crate::stats::{bump, OpKind};
use crate::storage::{Engine, Object, PoolBuf};
use pnfs_protocol::session::session_gate;
use pnfs_protocol::rpc::Credential;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, XdrDecode, XdrEncode};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub type NfsResult<T> = Result<T, nfsstat4>;

/// Operations per COMPOUND granted on DS sessions (the Linux client asks
/// for 8 and sends 3: SEQUENCE, PUTFH, READ/WRITE/COMMIT).
pub const DS_MAX_OPS: u32 = 16;

/// What a connection knows about itself.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: IpAddr,
}

/// READ data attached to a reply instead of copied into it.
pub struct Payload {
    /// Position in `e` where the data goes (its XDR length precedes it).
    pub at: usize,
    pub buf: PoolBuf,
    pub len: usize,
}

/// An RPC reply under construction: `e` holds the record mark, the RPC
/// header and, from `base` on, the COMPOUND4res; `payload` is spliced in
/// at `payload.at` when the reply is written.
pub struct ReplyBuf {
    pub e: Encoder,
    pub base: usize,
    pub payload: Option<Payload>,
}

impl ReplyBuf {
    pub fn new(e: Encoder) -> ReplyBuf {
        let base = e.len();
        ReplyBuf { e, base, payload: None }
    }

    /// Length of the COMPOUND4res so far, payload included.
    pub fn body_len(&self) -> usize {
        self.e.len() - self.base + self.payload.as_ref().map_or(0, |p| p.len)
    }

    /// Cuts the reply back to absolute position `pos` of `e`.
    pub fn truncate(&mut self, pos: usize) {
        assert!(pos >= self.base, "truncating into the RPC header");
        if self.payload.as_ref().is_some_and(|p| p.at >= pos) {
            self.payload = None;
        }
        self.e.buf.truncate(pos);
    }

    /// Attaches READ data at the current position; false (and nothing
    /// attached) when the reply already carries a payload.
    pub fn attach(&mut self, buf: PoolBuf, len: usize) -> Result<(), PoolBuf> {
        assert!(len <= buf.capacity(), "payload longer than its buffer");
        if self.payload.is_some() {
            return Err(buf);
        }
        self.payload = Some(Payload { at: self.e.len(), buf, len });
        Ok(())
    }

    /// The COMPOUND4res as one byte string (copies an attached payload).
    pub fn flat_body(&self) -> Vec<u8> {
        let body = &self.e.buf[self.base..];
        match &self.payload {
            None => body.to_vec(),
            Some(p) => {
                let at = p.at - self.base;
                let mut v = Vec::with_capacity(self.body_len());
                v.extend_from_slice(&body[..at]);
                v.extend_from_slice(&p.buf.as_slice()[..p.len]);
                v.extend_from_slice(&body[at..]);
                v
            }
        }
    }
}

/// Per-COMPOUND state carried between operations.
pub struct Compound<'c> {
    pub minor: u32,
    pub cred: Credential,
    pub conn: &'c ConnInfo,
    /// The reactor's I/O engine.
    pub engine: &'c Engine,
    /// The reactor's own allowed stateids and open objects.
    pub replica: &'c Replica,
    pub session: Option<Arc<Session>>,
    pub slot: Option<u32>,
    pub current_fh: Option<DsFh>,
    /// The object of `current_fh`, opened by PUTFH.
    pub current_obj: Option<Arc<Object>>,
    /// Size of the request record, for the session's max request size.
    pub request_len: usize,
    /// WRITE data received beside the record (zero-copy receive): belongs
    /// to the third op, a WRITE whose decoded data is empty; see
    /// [`crate::recv`]. Taken by that WRITE.
    pub detached: Option<Detached>,
    pub op_count: usize,
    /// Byte budget for this reply (session max response size).
    pub max_response: usize,
    /// The current op may hand its read over as [`Compound::deferred`]
    /// (a READ that is the COMPOUND's last op, asynchronous reads on).
    pub can_defer: bool,
    /// The I/O of a deferred READ or WRITE: the COMPOUND ends with
    /// [`CompoundOutcome::Pending`].
    pub deferred: Option<ReadJob>,
    /// Waits for the reactor's writes in flight (asynchronous WRITEs), so
    /// that COMMIT and stable WRITE see them in the dirty generations.
    pub drain: Option<&'c dyn Fn()>,
}

impl Compound<'_> {
    pub fn fh(&self) -> NfsResult<DsFh> {
        self.current_fh.ok_or(nfsstat4::NFS4ERR_NOFILEHANDLE)
    }

    /// The current object; ISDIR on the root handle.
    pub fn object(&self) -> NfsResult<(DsFh, Arc<Object>)> {
        let fh = self.fh()?;
        match &self.current_obj {
            Some(o) => Ok((fh, o.clone())),
            None if fh.is_root() => Err(nfsstat4::NFS4ERR_ISDIR),
            None => Err(nfsstat4::NFS4ERR_STALE),
        }
    }

    /// Completes every write in flight on this reactor (see [`Compound::drain`]).
    pub fn drain_writes(&self) {
        if let Some(d) = self.drain {
            d();
        }
    }

    pub fn clientid(&self) -> NfsResult<u64> {
        self.session.as_ref().map(|s| s.clientid).ok_or(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION)
    }

    /// The owner tag of the session's client (stateids are bound to it).
    pub fn owner_tag(&self) -> NfsResult<u32> {
        self.session.as_ref().map(|s| s.owner_tag).ok_or(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION)
    }
}

pub type OpFn = for<'a, 'c> fn(&Ds, &mut Compound<'c>, &nfs_argop4<'a>, &mut ReplyBuf) -> nfsstat4;

/// Writes `status` and, on success, the result body.
pub fn reply<T: XdrEncode>(rb: &mut ReplyBuf, r: NfsResult<T>) -> nfsstat4 {
    let e = &mut rb.e;
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

macro_rules! op {
    ($variant:ident, $kind:ident, $handler:path) => {
        (nfs_opnum4::$variant, OpKind::$kind, {
            fn call<'a, 'c>(d: &Ds, c: &mut Compound<'c>, a: &nfs_argop4<'a>, rb: &mut ReplyBuf) -> nfsstat4 {
                match a {
                    nfs_argop4::$variant(args) => $handler(d, c, args, rb),
                    _ => reply::<()>(rb, Err(nfsstat4::NFS4ERR_SERVERFAULT)),
                }
            }
            call as OpFn
        })
    };
    ($variant:ident, $kind:ident, $handler:path, noargs) => {
        (nfs_opnum4::$variant, OpKind::$kind, {
            fn call<'a, 'c>(d: &Ds, c: &mut Compound<'c>, _a: &nfs_argop4<'a>, rb: &mut ReplyBuf) -> nfsstat4 {
                $handler(d, c, rb)
            }
            call as OpFn
        })
    };
}

/// The dispatch table: one line per operation a DS serves (RFC 8881 13.6;
/// notes 2.5). Operations not listed answer NFS4ERR_NOTSUPP; numbers
/// outside nfs_opnum4 answer OP_ILLEGAL.
fn dispatch_table() -> Vec<(nfs_opnum4, OpKind, OpFn)> {
    use ops::*;
    vec![
        // sessions and clients
        op!(OP_EXCHANGE_ID, ExchangeId, session::exchange_id),
        op!(OP_CREATE_SESSION, CreateSession, session::create_session),
        op!(OP_DESTROY_SESSION, DestroySession, session::destroy_session),
        op!(OP_DESTROY_CLIENTID, DestroyClientid, session::destroy_clientid),
        op!(OP_BIND_CONN_TO_SESSION, BindConn, session::bind_conn_to_session),
        op!(OP_RECLAIM_COMPLETE, ReclaimComplete, session::reclaim_complete),
        // filehandles
        op!(OP_PUTFH, Putfh, filehandle::putfh),
        op!(OP_PUTROOTFH, Putrootfh, filehandle::putrootfh, noargs),
        op!(OP_GETFH, Getfh, filehandle::getfh, noargs),
        // attributes
        op!(OP_GETATTR, Getattr, attr::getattr),
        // data
        op!(OP_READ, Read, io::read),
        op!(OP_WRITE, Write, io::write),
        op!(OP_COMMIT, Commit, io::commit),
    ]
}

pub struct Dispatcher {
    table: Vec<Option<(OpKind, OpFn)>>,
}

pub enum CompoundOutcome {
    /// The COMPOUND4res is in the ReplyBuf.
    Done,
    /// A retransmission: send this cached COMPOUND4res as it was.
    Replay(Arc<Vec<u8>>),
    /// Arguments could not be decoded at all: RPC GARBAGE_ARGS.
    Garbage,
    /// The last op, a READ or an UNSTABLE4 WRITE, waits for its I/O: run
    /// the job, then [`Suspended::resume`] (or [`Suspended::resume_write`])
    /// finishes the reply in the same ReplyBuf.
    Pending(Suspended, ReadJob),
}

/// A COMPOUND stopped at its last op, a READ whose read is in flight:
/// what is needed to finish its reply (see the module documentation).
pub struct Suspended {
    status_at: usize,
    count_at: usize,
    done: u32,
    op_start: usize,
    opnum: i32,
    session: Option<Arc<Session>>,
    slot: Option<u32>,
    cache_this: bool,
    max_response: usize,
    /// The op's latency starts here (end of the previous op).
    mark: Instant,
    kind: OpKind,
}

impl Suspended {
    /// Finishes the reply with the READ's result (`r`: data buffer, bytes,
    /// eof) and records it in the session slot.
    pub fn resume(self, ds: &Ds, rb: &mut ReplyBuf, r: NfsResult<(PoolBuf, usize, bool)>) {
        assert!(rb.e.len() == self.op_start + 4, "resumed on another reply");
        debug_assert!(self.kind == OpKind::Read);
        let st = ops::io::encode_read(ds, rb, r);
        self.finish(ds, rb, st);
    }

    /// Finishes the reply with the WRITE's result and records it in the
    /// session slot.
    pub fn resume_write(self, ds: &Ds, rb: &mut ReplyBuf, r: NfsResult<WRITE4resok>) {
        assert!(rb.e.len() == self.op_start + 4, "resumed on another reply");
        debug_assert!(self.kind == OpKind::Write);
        let st = reply(rb, r);
        self.finish(ds, rb, st);
    }

    fn finish(self, ds: &Ds, rb: &mut ReplyBuf, st: nfsstat4) {
        let cached_limit = self.session.as_ref().map(|s| s.fore.max_response_cached as usize).unwrap_or(usize::MAX);
        let st = size_checks(rb, st, self.op_start, self.opnum, self.max_response, self.cache_this, cached_limit);
        ds.stats.op(self.kind, st == nfsstat4::NFS4_OK, self.mark.elapsed());
        rb.e.patch_u32(self.status_at, st as u32);
        rb.e.patch_u32(self.count_at, self.done);
        if let (Some(session), Some(slot)) = (&self.session, self.slot) {
            ops::session::finish_slot(ds, session, slot, rb, self.cache_this);
        }
    }
}

/// The reply-size rules every op result passes: above the session's max
/// response size, REP_TOO_BIG; a cached reply above the cache's limit,
/// REP_TOO_BIG_TO_CACHE (the result is replaced by the error).
fn size_checks(rb: &mut ReplyBuf, mut st: nfsstat4, op_start: usize, opnum: i32, max_response: usize, cache_this: bool, cached_limit: usize) -> nfsstat4 {
    if rb.body_len() > max_response {
        rb.truncate(op_start);
        rb.e.put_i32(opnum);
        st = reply::<()>(rb, Err(nfsstat4::NFS4ERR_REP_TOO_BIG));
    }
    if cache_this && st == nfsstat4::NFS4_OK && rb.body_len() > cached_limit {
        rb.truncate(op_start);
        rb.e.put_i32(opnum);
        st = reply::<()>(rb, Err(nfsstat4::NFS4ERR_REP_TOO_BIG_TO_CACHE));
    }
    st
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Dispatcher {
    pub fn new() -> Self {
        let mut table: Vec<Option<(OpKind, OpFn)>> = vec![None; 80];
        for (op, kind, f) in dispatch_table() {
            let i = op as usize;
            assert!(i < table.len(), "opnum {i} outside the dispatch table");
            assert!(table[i].is_none(), "opnum {i} listed twice");
            table[i] = Some((kind, f));
        }
        Dispatcher { table }
    }

    /// Runs one COMPOUND, appending the COMPOUND4res to `rb`. Control
    /// updates queued for this reactor are applied first, so the COMPOUND
    /// sees every one published before it started. `defer_read`: a READ
    /// that is the last op may end the COMPOUND as
    /// [`CompoundOutcome::Pending`] instead of reading synchronously.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        ds: &Ds,
        conn: &ConnInfo,
        engine: &Engine,
        replica: &Replica,
        cred: Credential,
        args: &[u8],
        detached: Option<Detached>,
        rb: &mut ReplyBuf,
        defer_read: bool,
        drain: Option<&dyn Fn()>,
    ) -> CompoundOutcome {
        replica.sync();
        bump(&ds.stats.compounds, 1);
        let mut d = Decoder::new(args);
        let Ok(tag) = d.get_opaque(NFS4_OPAQUE_LIMIT) else { return CompoundOutcome::Garbage };
        let Ok(minor) = d.get_u32() else { return CompoundOutcome::Garbage };
        let status_at = rb.e.len();
        rb.e.put_u32(0); // status, patched below
        let _ = rb.e.put_opaque(&tag, NFS4_OPAQUE_LIMIT);
        let count_at = rb.e.len();
        rb.e.put_u32(0);
        if !(1..=2).contains(&minor) {
            rb.e.patch_u32(status_at, nfsstat4::NFS4ERR_MINOR_VERS_MISMATCH as u32);
            return CompoundOutcome::Done;
        }
        let Ok(count) = d.get_count(u32::MAX) else { return CompoundOutcome::Garbage };
        let mut c = Compound {
            minor,
            cred,
            conn,
            engine,
            replica,
            session: None,
            slot: None,
            current_fh: None,
            current_obj: None,
            // The detached WRITE data is part of the request all the same.
            request_len: args.len() + detached.as_ref().map_or(0, Detached::wire_len),
            detached,
            op_count: count,
            max_response: ds.cfg.max_record_bytes as usize,
            can_defer: false,
            deferred: None,
            drain,
        };
        let mut status = nfsstat4::NFS4_OK;
        let mut done = 0u32;
        let mut cache_this = false;
        // Each op's latency runs from the end of the previous one (or the
        // COMPOUND's header) to the end of its result: one clock read per op.
        let mut mark = Instant::now();
        for i in 0..count {
            let op_start = rb.e.len();
            // Every result appended to the reply is recorded under its kind.
            let (kind, op_status) = 'op: {
                let opnum = match d.rest().get(..4) {
                    Some(b) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    None => {
                        // Claimed more ops than were sent.
                        rb.e.put_i32(nfs_opnum4::OP_ILLEGAL as i32);
                        done += 1;
                        break 'op (OpKind::Illegal, reply::<()>(rb, Err(nfsstat4::NFS4ERR_BADXDR)));
                    }
                };
                let op = match nfs_opnum4::from_i32(opnum) {
                    Some(op) if op != nfs_opnum4::OP_ILLEGAL && opnum >= 3 => op,
                    _ => {
                        rb.e.put_i32(nfs_opnum4::OP_ILLEGAL as i32);
                        done += 1;
                        break 'op (OpKind::Illegal, reply::<()>(rb, Err(nfsstat4::NFS4ERR_OP_ILLEGAL)));
                    }
                };
                let handler = self.table.get(op as usize).copied().flatten();
                let kind = match handler {
                    _ if op == nfs_opnum4::OP_SEQUENCE => OpKind::Sequence,
                    Some((kind, _)) => kind,
                    None => OpKind::NotSupp,
                };
                rb.e.put_i32(opnum);
                done += 1;
                let arg = match nfs_argop4::decode(&mut d) {
                    Ok(a) => a,
                    Err(err) => {
                        log::debug!("op {op:?}: undecodable arguments: {err}");
                        break 'op (kind, reply::<()>(rb, Err(nfsstat4::NFS4ERR_BADXDR)));
                    }
                };
                // Session gate (RFC 8881 2.10.6 and 18.46).
                let gate = session_gate(op, i, count, c.session.is_some());
                if let Some(s) = gate {
                    break 'op (kind, reply::<()>(rb, Err(s)));
                }
                if op == nfs_opnum4::OP_SEQUENCE {
                    let nfs_argop4::OP_SEQUENCE(sa) = &arg else { unreachable!("decoded by opnum") };
                    match ops::session::sequence(ds, &mut c, sa) {
                        Ok(ops::session::SequenceOutcome::New(res)) => {
                            cache_this = sa.sa_cachethis;
                            break 'op (kind, reply(rb, Ok(res)));
                        }
                        Ok(ops::session::SequenceOutcome::Replay(bytes)) => {
                            ds.stats.op(kind, true, mark.elapsed());
                            bump(&ds.stats.replays, 1);
                            return CompoundOutcome::Replay(bytes);
                        }
                        Err(s) => break 'op (kind, reply::<()>(rb, Err(s))),
                    }
                }
                c.can_defer = defer_read
                    && i + 1 == count
                    && ((op == nfs_opnum4::OP_READ && rb.payload.is_none()) || op == nfs_opnum4::OP_WRITE);
                let st = match handler {
                    Some((_, f)) => f(ds, &mut c, &arg, rb),
                    None => reply::<()>(rb, Err(nfsstat4::NFS4ERR_NOTSUPP)),
                };
                if let Some(job) = c.deferred.take() {
                    // Nothing of the READ's result is encoded yet.
                    assert!(c.can_defer && rb.e.len() == op_start + 4, "a deferred read must be the last op, unencoded");
                    let s = Suspended {
                        status_at,
                        count_at,
                        done,
                        op_start,
                        opnum,
                        session: c.session.take(),
                        slot: c.slot,
                        cache_this,
                        max_response: c.max_response,
                        mark,
                        kind,
                    };
                    return CompoundOutcome::Pending(s, job);
                }
                let cached_limit = c.session.as_ref().map(|s| s.fore.max_response_cached as usize).unwrap_or(usize::MAX);
                let st = size_checks(rb, st, op_start, opnum, c.max_response, cache_this, cached_limit);
                (kind, st)
            };
            let now = Instant::now();
            ds.stats.op(kind, op_status == nfsstat4::NFS4_OK, now.saturating_duration_since(mark));
            mark = now;
            status = op_status;
            if status != nfsstat4::NFS4_OK {
                break;
            }
        }
        rb.e.patch_u32(status_at, status as u32);
        rb.e.patch_u32(count_at, done);
        if let (Some(session), Some(slot)) = (&c.session, c.slot) {
            ops::session::finish_slot(ds, session, slot, rb, cache_this);
        }
        CompoundOutcome::Done
    }
}

//! COMPOUND processing on the DS (RFC 8881 section 16.2): the DS's side of
//! the engine both planes share ([`pnfs_protocol::nfs41::compound`], which
//! runs the loop: session gate, SEQUENCE and its slot, size limits, status
//! patching, the session reply cache): the operation dispatch table, the
//! current object, per-op stats, and replies with an attached payload.
//!
//! Replies are built in a [`ReplyBuf`]: the encoded bytes plus at most one
//! attached pool buffer holding READ data, which the connection writes as
//! its own iovec (no copy of the payload into the reply).
//!
//! A READ that is the last op of its COMPOUND may be deferred when the
//! reactor runs reads asynchronously ([`Dispatcher::run`] with
//! `defer_io`): the READ prepares its [`IoJob`] (pool buffer taken, so
//! an empty pool is still NFS4ERR_DELAY), and the COMPOUND stops there
//! with [`CompoundOutcome::Pending`] (the engine's [`OpStep::Suspend`]):
//! every earlier op's result is encoded, the session slot stays in
//! progress (a retransmission meanwhile gets NFS4ERR_DELAY). When the read
//! completes, [`Suspended::resume`] encodes the READ result and the engine
//! ([`nfs41::Suspended::finish`]) applies the reply-size checks every op
//! gets, patches the COMPOUND status and op count and only then records
//! the final reply in the slot's reply cache. An UNSTABLE4 WRITE that is the last op is
//! deferred the same way (its data in a pool buffer, see
//! [`crate::ops::io::write`]) and finished by [`Suspended::resume_write`].

use crate::storage::aio::IoJob;
use crate::bus::Replica;
use crate::ds::Ds;
use crate::fh::DsFh;
use crate::ops;
use crate::storage::Detached;
use crate::state::DsSession;
use crate::stats::{bump, OpKind};
use crate::storage::{Engine, Object, PoolBuf};
use pnfs_protocol::nfs41::{self, CompoundState, OpStep, Outcome, Plane, ReplyBuffer, Session, SessionId};
use pnfs_protocol::rpc::Credential;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode};
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

impl ReplyBuffer for ReplyBuf {
    fn encoder(&mut self) -> &mut Encoder {
        &mut self.e
    }
    fn len(&self) -> usize {
        self.e.len()
    }
    fn body_len(&self) -> usize {
        ReplyBuf::body_len(self)
    }
    fn truncate(&mut self, pos: usize) {
        ReplyBuf::truncate(self, pos)
    }
    fn cached_copy(&self) -> Vec<u8> {
        self.flat_body()
    }
}

/// Per-COMPOUND state carried between operations: the engine's
/// ([`CompoundState`]: session, slot, current filehandle, limits; reached
/// through `Deref`) and the DS's own.
pub struct Compound<'c> {
    pub core: CompoundState<DsFh, DsSession>,
    pub conn: &'c ConnInfo,
    /// The reactor's I/O engine.
    pub engine: &'c Engine,
    /// The reactor's own allowed stateids and open objects.
    pub replica: &'c Replica,
    /// The object of `current_fh`, opened by PUTFH.
    pub current_obj: Option<Arc<Object>>,
    /// WRITE data received beside the record (zero-copy receive): belongs
    /// to the third op, a WRITE whose decoded data is empty; see
    /// [`crate::transport::recv`]. Taken by that WRITE.
    pub detached: Option<Detached>,
    /// The current op may hand its read over as [`Compound::deferred`]
    /// (a READ that is the COMPOUND's last op, asynchronous reads on).
    pub can_defer: bool,
    /// The I/O of a deferred READ or WRITE: the COMPOUND ends with
    /// [`CompoundOutcome::Pending`].
    pub deferred: Option<IoJob>,
    /// Waits for the reactor's writes in flight (asynchronous WRITEs), so
    /// that COMMIT and stable WRITE see them in the dirty generations.
    pub drain: Option<&'c dyn Fn()>,
    ds: &'c Ds,
    table: &'c Dispatcher,
    /// Asynchronous reads and writes: the last op may be deferred.
    defer_io: bool,
    /// End of the previous op: each op's latency runs from there to the
    /// end of its result (one clock read per op).
    mark: Instant,
    /// Kind of the op that deferred its I/O.
    deferred_kind: OpKind,
}

impl std::ops::Deref for Compound<'_> {
    type Target = CompoundState<DsFh, DsSession>;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl std::ops::DerefMut for Compound<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.core
    }
}

impl<'c> Compound<'c> {
    /// A COMPOUND of `request_len` bytes, before its header is read.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ds: &'c Ds,
        table: &'c Dispatcher,
        conn: &'c ConnInfo,
        engine: &'c Engine,
        replica: &'c Replica,
        cred: Credential,
        request_len: usize,
        detached: Option<Detached>,
        defer_io: bool,
        drain: Option<&'c dyn Fn()>,
    ) -> Compound<'c> {
        Compound {
            core: CompoundState::new(cred, request_len, ds.cfg.max_record_bytes as usize),
            conn,
            engine,
            replica,
            current_obj: None,
            detached,
            can_defer: false,
            deferred: None,
            drain,
            ds,
            table,
            defer_io,
            mark: Instant::now(),
            deferred_kind: OpKind::NotSupp,
        }
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

    /// The owner tag of the session's client (stateids are bound to it).
    pub fn owner_tag(&self) -> NfsResult<u32> {
        self.session.as_ref().map(|s| s.owner_tag).ok_or(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION)
    }
}

impl Plane for Compound<'_> {
    type Fh = DsFh;
    type SessionExt = DsSession;
    type Reply = ReplyBuf;
    type Job = IoJob;

    fn state(&mut self) -> &mut CompoundState<DsFh, DsSession> {
        &mut self.core
    }

    fn find_session(&mut self, id: &SessionId) -> Option<Arc<Session<DsSession>>> {
        self.ds.state.sessions.get(id)
    }

    fn on_sequence(&mut self, s: &Session<DsSession>) -> NfsResult<u32> {
        s.lease.renew();
        Ok(0)
    }

    fn dispatch(&mut self, op: nfs_opnum4, arg: &nfs_argop4<'_>, rb: &mut ReplyBuf) -> OpStep<IoJob> {
        let (ds, table) = (self.ds, self.table);
        self.can_defer = self.defer_io
            && self.core.is_last_op()
            && ((op == nfs_opnum4::OP_READ && rb.payload.is_none()) || op == nfs_opnum4::OP_WRITE);
        let st = match table.handler(op) {
            Some((_, f)) => f(ds, self, arg, rb),
            None => reply::<()>(rb, Err(nfsstat4::NFS4ERR_NOTSUPP)),
        };
        if let Some(job) = self.deferred.take() {
            assert!(self.can_defer, "only the last op may defer its I/O");
            self.deferred_kind = table.kind(Some(op));
            return OpStep::Suspend(job);
        }
        OpStep::Done(st)
    }

    fn op_done(&mut self, op: Option<nfs_opnum4>, status: nfsstat4) {
        let now = Instant::now();
        self.ds.stats.op(self.table.kind(op), status == nfsstat4::NFS4_OK, now.saturating_duration_since(self.mark));
        self.mark = now;
    }

    fn reply_cached(&mut self, rb: &ReplyBuf) {
        if rb.payload.is_some() {
            bump(&self.ds.stats.payload_copies, 1);
        }
    }
}

pub type OpFn = for<'a, 'c> fn(&Ds, &mut Compound<'c>, &nfs_argop4<'a>, &mut ReplyBuf) -> nfsstat4;

/// Writes `status` and, on success, the result body.
pub fn reply<T: XdrEncode>(rb: &mut ReplyBuf, r: NfsResult<T>) -> nfsstat4 {
    nfs41::reply(&mut rb.e, r)
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
    Pending(Suspended, IoJob),
}

/// A COMPOUND stopped at its last op, a READ or WRITE whose I/O is in
/// flight: the engine's part ([`nfs41::Suspended`]) and the op's stats.
pub struct Suspended {
    core: nfs41::Suspended<DsSession>,
    /// The op's latency starts here (end of the previous op).
    mark: Instant,
    kind: OpKind,
}

impl Suspended {
    /// Finishes the reply with the READ's result (`r`: data buffer, bytes,
    /// eof) and records it in the session slot.
    pub fn resume(self, ds: &Ds, rb: &mut ReplyBuf, r: NfsResult<(PoolBuf, usize, bool)>) {
        assert!(rb.e.len() == self.core.result_at(), "resumed on another reply");
        debug_assert!(self.kind == OpKind::Read);
        let st = ops::io::encode_read(ds, rb, r);
        self.finish(ds, rb, st);
    }

    /// Finishes the reply with the WRITE's result and records it in the
    /// session slot.
    pub fn resume_write(self, ds: &Ds, rb: &mut ReplyBuf, r: NfsResult<WRITE4resok>) {
        assert!(rb.e.len() == self.core.result_at(), "resumed on another reply");
        debug_assert!(self.kind == OpKind::Write);
        let st = reply(rb, r);
        self.finish(ds, rb, st);
    }

    fn finish(self, ds: &Ds, rb: &mut ReplyBuf, st: nfsstat4) {
        let f = self.core.finish(rb, st);
        ds.stats.op(self.kind, f.status == nfsstat4::NFS4_OK, self.mark.elapsed());
        if f.cached && rb.payload.is_some() {
            bump(&ds.stats.payload_copies, 1);
        }
    }
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

    fn handler(&self, op: nfs_opnum4) -> Option<(OpKind, OpFn)> {
        self.table.get(op as usize).copied().flatten()
    }

    /// The stats kind of an op (None: illegal or missing).
    fn kind(&self, op: Option<nfs_opnum4>) -> OpKind {
        match op {
            None => OpKind::Illegal,
            Some(nfs_opnum4::OP_SEQUENCE) => OpKind::Sequence,
            Some(op) => self.handler(op).map_or(OpKind::NotSupp, |(kind, _)| kind),
        }
    }

    /// Runs one COMPOUND, appending the COMPOUND4res to `rb`. Control
    /// updates queued for this reactor are applied first, so the COMPOUND
    /// sees every one published before it started. `defer_io`: a READ
    /// or WRITE that is the last op may end the COMPOUND as
    /// [`CompoundOutcome::Pending`] instead of doing its I/O synchronously.
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
        defer_io: bool,
        drain: Option<&dyn Fn()>,
    ) -> CompoundOutcome {
        replica.sync();
        bump(&ds.stats.compounds, 1);
        // The detached WRITE data is part of the request all the same.
        let request_len = args.len() + detached.as_ref().map_or(0, Detached::wire_len);
        let mut c = Compound::new(ds, self, conn, engine, replica, cred, request_len, detached, defer_io, drain);
        match nfs41::compound::run(&mut c, args, rb) {
            Outcome::Done => CompoundOutcome::Done,
            Outcome::Replay(bytes) => {
                bump(&ds.stats.replays, 1);
                CompoundOutcome::Replay(bytes)
            }
            Outcome::Garbage => CompoundOutcome::Garbage,
            Outcome::Pending(core, job) => {
                CompoundOutcome::Pending(Suspended { core, mark: c.mark, kind: c.deferred_kind }, job)
            }
        }
    }
}

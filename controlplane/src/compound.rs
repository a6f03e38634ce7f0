//! COMPOUND processing (RFC 8881 section 16.2): the MDS's side of the shared
//! engine ([`pnfs_protocol::nfs41::compound`], which runs the loop: session
//! gate, SEQUENCE and its slot, size limits, status patching, the session
//! reply cache): the operation dispatch table, the current/saved stateid,
//! lease renewal and the state flags SEQUENCE answers.
//!
//! Each operation handler gets its decoded arguments and writes its own
//! result (status first) into the reply encoder, returning the status.

use crate::fh::FileHandle;
use crate::mds::Mds;
use crate::namespace::{Inode, NfsResult};
use crate::ops;
use crate::state::cluster::Gather;
use crate::state::{Session, StateChange};
use pnfs_protocol::sync::lock;
use pnfs_protocol::nfs41::{self, CompoundState, OpStep, Outcome, Plane, SessionId};
use pnfs_protocol::rpc::Credential;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, XdrDecode};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

pub use pnfs_protocol::nfs41::reply;

/// What a connection knows about itself.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: IpAddr,
}

/// Per-COMPOUND state carried between operations: the engine's
/// ([`CompoundState`]: session, slot, sequenceid, current and saved
/// filehandles, limits; reached through `Deref`) and the MDS's own.
pub struct Compound<'c> {
    pub core: CompoundState<FileHandle, ()>,
    pub conn: &'c ConnInfo,
    pub current_stateid: Option<stateid4>,
    pub saved_stateid: Option<stateid4>,
    mds: &'c Mds,
    table: &'c Dispatcher,
    /// SEQUENCE's status flags, found with its session under one lock.
    seq_flags: u32,
}

impl std::ops::Deref for Compound<'_> {
    type Target = CompoundState<FileHandle, ()>;
    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl std::ops::DerefMut for Compound<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.core
    }
}

impl Compound<'_> {
    /// Sets the current filehandle; the current stateid no longer applies.
    pub fn set_fh(&mut self, fh: FileHandle) {
        self.core.current_fh = Some(fh);
        self.current_stateid = None;
    }
}

impl Plane for Compound<'_> {
    type Fh = FileHandle;
    type SessionExt = ();
    type Reply = Encoder;
    type Job = Infallible;

    fn state(&mut self) -> &mut CompoundState<FileHandle, ()> {
        &mut self.core
    }

    /// The session, with its client's lease renewed and the flags to
    /// answer: O(1) in the state layer (one session, one client lookup).
    fn find_session(&mut self, id: &SessionId) -> Option<Arc<Session>> {
        // Fenced state (a recalled layout kept too long) is announced until freed.
        let (s, revoked) = self.mds.state().sequence(id).ok()?;
        self.seq_flags = if revoked { SEQ4_STATUS_RECALLABLE_STATE_REVOKED } else { 0 };
        // A cluster's session with no back channel here (adopted from
        // another node): the client binds its new connection
        // (BIND_CONN_TO_SESSION), so callbacks reach it on this node.
        if self.mds.state().journaling() && lock(&s.back_conns).is_empty() {
            self.seq_flags |= SEQ4_STATUS_CB_PATH_DOWN;
        }
        Some(s)
    }

    fn on_sequence(&mut self, _s: &Session) -> NfsResult<u32> {
        Ok(self.seq_flags)
    }

    fn dispatch(&mut self, op: nfs_opnum4, arg: &nfs_argop4<'_>, e: &mut Encoder) -> OpStep<Infallible> {
        let (m, table) = (self.mds, self.table);
        if !crate::cluster::may_run(op) { return OpStep::Done(reply::<()>(e, Err(nfsstat4::NFS4ERR_DELAY))); } // cluster node without quorum
        let handler = if self.core.minor < 2 && is_v42_op(op) { None } else { table.table.get(op as usize).copied().flatten() };
        let started = std::time::Instant::now();
        let status = match handler {
            Some(f) => f(m, self, arg, e),
            None => reply::<()>(e, Err(nfsstat4::NFS4ERR_NOTSUPP)),
        };
        crate::metrics::metrics().observe_op(op as i32, status == nfsstat4::NFS4_OK, started.elapsed());
        if log::log_enabled!(target: "pnfs_mds::ops", log::Level::Trace) {
            trace_op(self, op, arg, status);
        }
        OpStep::Done(status)
    }
}

pub type OpFn = for<'a, 'c> fn(&Mds, &mut Compound<'c>, &nfs_argop4<'a>, &mut Encoder) -> nfsstat4;

/// The current inode of the compound.
pub fn current_inode(m: &Mds, c: &Compound) -> NfsResult<(FileHandle, Inode)> {
    let fh = c.fh()?;
    if !m.visible(fh.export_id, fh.ino) {
        return Err(nfsstat4::NFS4ERR_STALE);
    }
    let i = m.ns.get(fh.ino)?;
    if i.generation != fh.generation {
        return Err(nfsstat4::NFS4ERR_STALE);
    }
    Ok((fh, i))
}

macro_rules! op {
    ($variant:ident, $handler:path) => {
        (nfs_opnum4::$variant, {
            fn call<'a, 'c>(m: &Mds, c: &mut Compound<'c>, a: &nfs_argop4<'a>, e: &mut Encoder) -> nfsstat4 {
                match a {
                    nfs_argop4::$variant(args) => $handler(m, c, args, e),
                    _ => reply::<()>(e, Err(nfsstat4::NFS4ERR_SERVERFAULT)),
                }
            }
            call as OpFn
        })
    };
    ($variant:ident, $handler:path, noargs) => {
        (nfs_opnum4::$variant, {
            fn call<'a, 'c>(m: &Mds, c: &mut Compound<'c>, _a: &nfs_argop4<'a>, e: &mut Encoder) -> nfsstat4 {
                $handler(m, c, e)
            }
            call as OpFn
        })
    };
}

/// Operations that never wait for another client or for file data I/O. A
/// COMPOUND made only of these runs on its connection's task instead of a
/// blocking-pool thread: two thread hand-offs fewer per request, which were
/// most of the MDS's CPU. Metadata commits do not wait there either: the
/// server runs them with durability deferred and holds the reply until a
/// group commit made them durable (server.rs). What may still wait on the
/// task: a data server's answer when a file is first placed (LAYOUTGET),
/// truncated or removed (no MDS thread is needed for that answer);
/// callbacks (recalls) go out from threads of their own.
const INLINE_OPS: &[nfs_opnum4] = &[
    nfs_opnum4::OP_OPEN,
    nfs_opnum4::OP_OPEN_DOWNGRADE,
    nfs_opnum4::OP_CLOSE,
    nfs_opnum4::OP_LAYOUTGET,
    nfs_opnum4::OP_LAYOUTRETURN,
    nfs_opnum4::OP_LAYOUTCOMMIT,
    nfs_opnum4::OP_LOCK,
    nfs_opnum4::OP_LOCKT,
    nfs_opnum4::OP_LOCKU,
    nfs_opnum4::OP_SETATTR,
    nfs_opnum4::OP_CREATE,
    nfs_opnum4::OP_REMOVE,
    nfs_opnum4::OP_RENAME,
    nfs_opnum4::OP_LINK,
    nfs_opnum4::OP_FREE_STATEID,
    nfs_opnum4::OP_SEQUENCE,
    nfs_opnum4::OP_PUTFH,
    nfs_opnum4::OP_PUTROOTFH,
    nfs_opnum4::OP_PUTPUBFH,
    nfs_opnum4::OP_GETFH,
    nfs_opnum4::OP_SAVEFH,
    nfs_opnum4::OP_RESTOREFH,
    nfs_opnum4::OP_LOOKUP,
    nfs_opnum4::OP_LOOKUPP,
    nfs_opnum4::OP_GETATTR,
    nfs_opnum4::OP_ACCESS,
    nfs_opnum4::OP_VERIFY,
    nfs_opnum4::OP_NVERIFY,
    nfs_opnum4::OP_READLINK,
    nfs_opnum4::OP_READDIR,
    nfs_opnum4::OP_SECINFO,
    nfs_opnum4::OP_SECINFO_NO_NAME,
    nfs_opnum4::OP_TEST_STATEID,
    nfs_opnum4::OP_GETDEVICEINFO,
    nfs_opnum4::OP_GETDEVICELIST,
];
/// Longer COMPOUNDs go to the pool whatever their operations.
const INLINE_MAX_OPS: u32 = 16;

/// The current filehandle as far as [`runs_inline`] can tell from the
/// arguments alone.
#[derive(Clone, Copy)]
enum CurrentFile {
    /// None, or one that no other client holds a write delegation on: a
    /// directory, an object just created, a file just opened (an OPEN
    /// recalls other clients' write delegations first).
    NotDelegated,
    /// The inode a PUTFH names.
    Ino(u64),
    /// Found by name (LOOKUP, LOOKUPP).
    Unknown,
}

/// True when the COMPOUND arguments `args` hold only [`INLINE_OPS`] (and
/// decode): safe to run without leaving the connection's task. Anything
/// odd answers false and takes the ordinary path, which reports it. A
/// GETATTR of a file under another client's write delegation may wait for
/// a CB_GETATTR (ops/deleg.rs), whose answer may need this task: it goes to
/// the pool, as does one of a file found by name while any write
/// delegation is out.
pub fn runs_inline(args: &[u8]) -> bool {
    let mut d = Decoder::new(args);
    if d.get_opaque(NFS4_OPAQUE_LIMIT).is_err() || d.get_u32().is_err() {
        return false;
    }
    let count = match d.get_u32() {
        Ok(n) if (1..=INLINE_MAX_OPS).contains(&n) => n,
        _ => return false,
    };
    use crate::state::deleg::{getattr_may_call_back, write_delegations_outstanding};
    let (mut current, mut saved, mut session) = (CurrentFile::NotDelegated, CurrentFile::NotDelegated, None);
    for _ in 0..count {
        let op = match d.rest().get(..4) {
            Some(b) => nfs_opnum4::from_i32(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            None => return false,
        };
        match op {
            Some(op) if INLINE_OPS.contains(&op) => {}
            _ => return false,
        }
        let Ok(arg) = nfs_argop4::decode(&mut d) else { return false };
        match arg {
            nfs_argop4::OP_SEQUENCE(s) => session = Some(s.sa_sessionid),
            nfs_argop4::OP_PUTFH(a) => current = FileHandle::ino_unchecked(&a.object).map_or(CurrentFile::NotDelegated, CurrentFile::Ino),
            nfs_argop4::OP_PUTROOTFH | nfs_argop4::OP_PUTPUBFH | nfs_argop4::OP_OPEN(_) | nfs_argop4::OP_CREATE(_) => {
                current = CurrentFile::NotDelegated
            }
            nfs_argop4::OP_LOOKUP(_) | nfs_argop4::OP_LOOKUPP => current = CurrentFile::Unknown,
            nfs_argop4::OP_SAVEFH => saved = current,
            nfs_argop4::OP_RESTOREFH => current = saved,
            nfs_argop4::OP_GETATTR(_) => {
                let may_wait = match current {
                    CurrentFile::NotDelegated => false,
                    CurrentFile::Ino(ino) => getattr_may_call_back(ino, session.as_ref()),
                    CurrentFile::Unknown => write_delegations_outstanding(),
                };
                if may_wait {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// The dispatch table: one line per operation. Operations not listed answer
/// NFS4ERR_NOTSUPP; numbers outside nfs_opnum4 answer OP_ILLEGAL.
fn dispatch_table() -> Vec<(nfs_opnum4, OpFn)> {
    use ops::*;
    vec![
        // sessions and clients
        op!(OP_EXCHANGE_ID, session::exchange_id),
        op!(OP_CREATE_SESSION, session::create_session),
        op!(OP_DESTROY_SESSION, session::destroy_session),
        op!(OP_DESTROY_CLIENTID, session::destroy_clientid),
        op!(OP_BIND_CONN_TO_SESSION, session::bind_conn_to_session),
        op!(OP_RECLAIM_COMPLETE, session::reclaim_complete),
        // filehandles and names
        op!(OP_PUTFH, filehandle::putfh),
        op!(OP_PUTROOTFH, filehandle::putrootfh, noargs),
        op!(OP_PUTPUBFH, filehandle::putrootfh, noargs),
        op!(OP_GETFH, filehandle::getfh, noargs),
        op!(OP_SAVEFH, filehandle::savefh, noargs),
        op!(OP_RESTOREFH, filehandle::restorefh, noargs),
        op!(OP_LOOKUP, filehandle::lookup),
        op!(OP_LOOKUPP, filehandle::lookupp, noargs),
        op!(OP_SECINFO, filehandle::secinfo),
        op!(OP_SECINFO_NO_NAME, filehandle::secinfo_no_name),
        // attributes
        op!(OP_GETATTR, attr::getattr),
        op!(OP_SETATTR, attr::setattr),
        op!(OP_ACCESS, attr::access),
        op!(OP_VERIFY, attr::verify),
        op!(OP_NVERIFY, attr::nverify),
        // open state
        op!(OP_OPEN, open::open),
        op!(OP_OPEN_DOWNGRADE, open::open_downgrade),
        op!(OP_CLOSE, open::close),
        op!(OP_TEST_STATEID, open::test_stateid),
        op!(OP_FREE_STATEID, open::free_stateid),
        // delegations
        op!(OP_DELEGRETURN, deleg::delegreturn),
        op!(OP_DELEGPURGE, deleg::delegpurge),
        op!(OP_WANT_DELEGATION, deleg::want_delegation),
        op!(OP_BACKCHANNEL_CTL, deleg::backchannel_ctl),
        // data
        op!(OP_READ, io::read),
        op!(OP_WRITE, io::write),
        op!(OP_COMMIT, io::commit),
        // directories
        op!(OP_CREATE, dir::create),
        op!(OP_REMOVE, dir::remove),
        op!(OP_RENAME, dir::rename),
        op!(OP_LINK, dir::link),
        op!(OP_READDIR, dir::readdir),
        op!(OP_READLINK, dir::readlink, noargs),
        // pNFS layouts (NOTSUPP unless mds.control_bind is set)
        op!(OP_LAYOUTGET, layout::layoutget),
        op!(OP_LAYOUTCOMMIT, layout::layoutcommit),
        op!(OP_LAYOUTRETURN, layout::layoutreturn),
        op!(OP_GETDEVICEINFO, layout::getdeviceinfo),
        op!(OP_GETDEVICELIST, layout::getdevicelist),
        // byte-range locks
        op!(OP_LOCK, lock::lock),
        op!(OP_LOCKT, lock::lockt),
        op!(OP_LOCKU, lock::locku),
        // NFSv4.2
        op!(OP_ALLOCATE, v42::allocate),
        op!(OP_DEALLOCATE, v42::deallocate),
        op!(OP_SEEK, v42::seek),
        op!(OP_COPY, v42::copy),
        op!(OP_CLONE, v42::clone),
        op!(OP_READ_PLUS, v42::read_plus),
        op!(OP_LAYOUTERROR, v42::layouterror),
        op!(OP_LAYOUTSTATS, v42::layoutstats),
        op!(OP_GETXATTR, xattr::getxattr),
        op!(OP_SETXATTR, xattr::setxattr),
        op!(OP_LISTXATTRS, xattr::listxattrs),
        op!(OP_REMOVEXATTR, xattr::removexattr),
    ]
}

pub struct Dispatcher {
    table: Vec<Option<OpFn>>,
}

/// Ops that NFSv4.2 added; a 4.1 compound using them gets NOTSUPP.
fn is_v42_op(op: nfs_opnum4) -> bool {
    (op as i32) >= nfs_opnum4::OP_ALLOCATE as i32 && op != nfs_opnum4::OP_ILLEGAL
}

pub enum CompoundOutcome {
    Reply(Vec<u8>),
    /// Arguments could not be decoded at all: RPC GARBAGE_ARGS.
    Garbage,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Dispatcher {
    pub fn new() -> Self {
        let mut table: Vec<Option<OpFn>> = vec![None; 80];
        for (op, f) in dispatch_table() {
            let i = op as usize;
            assert!(i < table.len(), "opnum {i} outside the dispatch table");
            assert!(table[i].is_none(), "opnum {i} listed twice");
            table[i] = Some(f);
        }
        Dispatcher { table }
    }

    /// Runs one COMPOUND and returns the encoded COMPOUND4res.
    pub fn run(&self, m: &Mds, conn: &ConnInfo, cred: Credential, args: &[u8]) -> CompoundOutcome {
        if !m.state().journaling() {
            return self.run_noting_slot(m, conn, cred, args).0;
        }
        // A cluster (`state::cluster`): a client held by another node is
        // adopted first; the COMPOUND's state changes are gathered and
        // written in one transaction with its slot before the reply leaves.
        if let Err(e) = adopt_for(m, args) {
            log::warn!("adopting a client from the KV: {e}: answering NFS4ERR_DELAY");
            return CompoundOutcome::Reply(delay_reply(args));
        }
        let gather = Gather::begin(m.gather_key());
        let (out, slot) = self.run_noting_slot(m, conn, cred, args);
        let mut fx = gather.end();
        if let (CompoundOutcome::Reply(reply), false) = (&out, fx.records.is_empty()) {
            // Only COMPOUNDs that changed state write their slot. On a node
            // that adopts the session later, the seqid written is a lower
            // bound (`SlotTable::adopted`): that seqid again is a
            // retransmission (this reply when the client asked to cache it,
            // else NFS4ERR_RETRY_UNCACHED_REP); any later one is new, as a
            // lost reply to a read-only request is harmless to redo.
            let session_client = slot.as_ref().map(|s| s.clientid);
            if let Some(s) = slot {
                fx.records.push(StateChange::SlotKept { session: s.session, slot: s.slot, seqid: s.seqid, reply: s.cache_this.then(|| reply.clone()) });
            }
            if m.write_records(&fx.records, session_client).is_err() {
                return CompoundOutcome::Reply(delay_reply(args));
            }
        }
        let _ = m.apply_after_write(fx);
        out
    }

    /// Runs one COMPOUND; also returns the slot a new request ran on.
    fn run_noting_slot(&self, m: &Mds, conn: &ConnInfo, cred: Credential, args: &[u8]) -> (CompoundOutcome, Option<SlotRan>) {
        let mut c = Compound {
            core: CompoundState::new(cred, args.len(), m.cfg.max_record_bytes as usize),
            conn,
            current_stateid: None,
            saved_stateid: None,
            mds: m,
            table: self,
            seq_flags: 0,
        };
        let mut e = Encoder::with_buffer(Vec::with_capacity(512));
        let out = match crate::namespace::with_compound_cache(|| nfs41::compound::run(&mut c, args, &mut e)) {
            Outcome::Done => CompoundOutcome::Reply(e.into_inner()),
            Outcome::Replay(bytes) => return (CompoundOutcome::Reply(bytes.to_vec()), None),
            Outcome::Garbage => CompoundOutcome::Garbage,
            Outcome::Pending(_, never) => match never {},
        };
        let slot = match (&c.core.session, c.core.slot) {
            (Some(s), Some(slot)) => Some(SlotRan { session: s.id, clientid: s.clientid, slot, seqid: c.core.sequenceid, cache_this: c.core.cache_this }),
            _ => None,
        };
        (out, slot)
    }
}

/// The slot a COMPOUND ran on (a cluster writes it: see [`Dispatcher::run`]).
struct SlotRan {
    session: SessionId,
    clientid: u64,
    slot: u32,
    seqid: u32,
    cache_this: bool,
}

/// A cluster's adoption before a COMPOUND runs (`state::cluster`): the
/// client its first operation names (SEQUENCE, BIND_CONN_TO_SESSION or
/// DESTROY_SESSION: a session; CREATE_SESSION: a client ID; EXCHANGE_ID:
/// an owner), when this node does not hold it, is loaded from the KV.
fn adopt_for(m: &Mds, args: &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use crate::state::cluster::Adopt;
    let mut d = Decoder::new(args);
    if d.get_opaque(NFS4_OPAQUE_LIMIT).is_err() || d.get_u32().is_err() || d.get_u32().is_err() {
        return Ok(());
    }
    let Ok(first) = nfs_argop4::decode(&mut d) else { return Ok(()) };
    let st = m.state();
    let what = match &first {
        nfs_argop4::OP_SEQUENCE(a) => Adopt::Session(&a.sa_sessionid),
        nfs_argop4::OP_BIND_CONN_TO_SESSION(a) => Adopt::Session(&a.bctsa_sessid),
        nfs_argop4::OP_DESTROY_SESSION(a) => Adopt::Session(&a.dsa_sessionid),
        nfs_argop4::OP_CREATE_SESSION(a) => Adopt::Client(a.csa_clientid),
        nfs_argop4::OP_EXCHANGE_ID(a) => Adopt::Owner(&a.eia_clientowner.co_ownerid),
        _ => return Ok(()),
    };
    let held = match what {
        Adopt::Session(id) => st.session(id).is_some(),
        Adopt::Client(id) => st.client(id).is_ok(),
        Adopt::Owner(owner) => st.knows_owner(owner),
    };
    if !held {
        let mut fx = crate::state::Effects::default();
        st.adopt(m.ns.store().as_ref(), m.cfg.cluster_node_id(), what, &mut fx)?;
        let _ = m.apply_after_write(fx);
    }
    Ok(())
}

/// NFS4ERR_DELAY for the first operation of `args` (the client retries
/// the whole COMPOUND, on the same slot and seqid).
fn delay_reply(args: &[u8]) -> Vec<u8> {
    let mut d = Decoder::new(args);
    let tag = d.get_opaque(NFS4_OPAQUE_LIMIT).map(|t| t.to_vec()).unwrap_or_default();
    let opnum = (|| {
        d.get_u32().ok()?;
        d.get_u32().ok()?;
        d.get_u32().ok()
    })()
    .unwrap_or(nfs_opnum4::OP_ILLEGAL as u32);
    let mut e = Encoder::new();
    e.put_u32(nfsstat4::NFS4ERR_DELAY as u32);
    let _ = e.put_opaque(&tag, NFS4_OPAQUE_LIMIT);
    e.put_u32(1);
    e.put_u32(opnum);
    e.put_u32(nfsstat4::NFS4ERR_DELAY as u32);
    e.into_inner()
}

/// One line per operation at trace level (PNFSD_LOG=pnfs_mds::ops=trace):
/// client, filehandle inode, status and the arguments (payloads left out).
fn trace_op(c: &Compound, op: nfs_opnum4, arg: &nfs_argop4, status: nfsstat4) {
    let args = match arg {
        nfs_argop4::OP_WRITE(w) => format!("stateid {:?} offset {} len {} {:?}", w.stateid, w.offset, w.data.len(), w.stable),
        other => {
            let mut s = format!("{other:?}");
            if s.len() > 400 {
                let mut end = 400;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push_str("...");
            }
            s
        }
    };
    let client = c.clientid().map(|id| format!("{id:x}")).unwrap_or_else(|_| "-".into());
    let ino = c.current_fh.map(|f| f.ino.to_string()).unwrap_or_else(|| "-".into());
    log::trace!(target: "pnfs_mds::ops", "client {client} ino {ino} {op:?} -> {status:?}: {args}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::deleg::{Deleg, DelegTable};

    fn fh(ino: u64) -> Vec<u8> {
        let mut b = vec![0u8; crate::fh::FH_LEN];
        b[..2].copy_from_slice(b"P\x02");
        b[4..12].copy_from_slice(&ino.to_be_bytes());
        b
    }

    fn args(session: [u8; 16], ops: Vec<nfs_argop4<'_>>) -> Vec<u8> {
        let seq = SEQUENCE4args { sa_sessionid: session, sa_sequenceid: 1, sa_slotid: 0, sa_highest_slotid: 0, sa_cachethis: false };
        let mut argarray = vec![nfs_argop4::OP_SEQUENCE(seq)];
        argarray.extend(ops);
        pnfs_protocol::xdr::encode_to_vec(&COMPOUND4args { tag: b"".as_slice().into(), minorversion: 2, argarray }).unwrap()
    }

    /// A GETATTR leaves the connection's task only when its file may be
    /// under another client's write delegation (a CB_GETATTR may follow).
    #[test]
    fn getattr_runs_inline_unless_its_file_is_write_delegated_to_another() {
        // Inode numbers no other test uses (the hint is process-wide).
        let (delegated, plain) = (0xde1e_0000_0001, 0xde1e_0000_0002);
        let (holder, other) = ([1u8; 16], [2u8; 16]);
        let getattr = || nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![1 << 4] });
        let putfh = |ino| nfs_argop4::OP_PUTFH(PUTFH4args { object: fh(ino).into() });
        let stat = |session, ino| runs_inline(&args(session, vec![putfh(ino), getattr()]));
        assert!(stat(other, delegated) && stat(other, plain));
        let mut t = DelegTable::default();
        let d = Deleg {
            clientid: 7,
            ino: delegated,
            write: true,
            fh_export: 1,
            fh_generation: 0,
            granted_by: Some((holder, 0, 1)),
            recall_deadline: None,
            seen_change: None,
            change_bumps: 0,
        };
        t.insert([9; 12], d);
        assert!(!stat(other, delegated), "another client's GETATTR of a write-delegated file may wait for CB_GETATTR");
        assert!(stat(holder, delegated), "the holder's own GETATTR needs no callback");
        assert!(stat(other, plain), "a file under no delegation stays inline");
        // SAVEFH/RESTOREFH follow the file; a file found by name may be delegated.
        let saved = vec![putfh(delegated), nfs_argop4::OP_SAVEFH, putfh(plain), getattr(), nfs_argop4::OP_RESTOREFH, getattr()];
        assert!(!runs_inline(&args(other, saved)));
        let by_name = vec![putfh(plain), nfs_argop4::OP_LOOKUP(LOOKUP4args { objname: b"f".as_slice().into() }), getattr()];
        assert!(!runs_inline(&args(other, by_name)));
        t.remove(&[9; 12]);
        assert!(stat(other, delegated));
    }
}

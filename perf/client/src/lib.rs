//! A small synchronous NFSv4.1/4.2 client over one `std::net::TcpStream`.
//!
//! [`Client::connect`] sets up a session (EXCHANGE_ID, CREATE_SESSION,
//! RECLAIM_COMPLETE); [`Client::compound`] sends any operations behind a
//! SEQUENCE on slot 0 and retries NFS4ERR_DELAY / NFS4ERR_GRACE for a bounded
//! time; the helpers ([`Client::lookup_path`], [`Client::mkdir`],
//! [`Client::write_file`], [`Client::readdir`], ...) cover the namespace and
//! I/O operations tests and benchmarks need.
//!
//! [`Client::connect_with_callbacks`] also binds the connection for the
//! back channel: CB_COMPOUNDs that arrive while the client waits for a reply
//! (or in [`Client::poll_callbacks`]) go to a handler and are answered.
//!
//! One request is outstanding at a time. A transport failure (the server
//! went away, a timeout) or an undecodable COMPOUND reply leaves the client
//! disconnected: every call answers [`Error::Disconnected`] until
//! [`Client::reconnect`], which opens a new connection, client ID and session
//! (after a server restart the old session is gone anyway). Malformed or
//! unexpected replies are errors, never panics.

/// The wire types [`Client::compound`] takes and returns.
pub use pnfs_protocol;

pub mod flexfiles;
pub mod layout;
pub mod net;

use pnfs_protocol::record::{RecordReader, LAST_FRAGMENT};
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode, XdrError};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A filehandle as the server sent it.
pub type Fh = Vec<u8>;

/// Largest reply record accepted (a 1 MiB READ plus headers fits easily).
const MAX_REPLY_RECORD: usize = 4 << 20;
/// Nesting limit when decoding replies (READDIR entry lists decode
/// recursively): well above one READDIR page, well below the stack's limit.
const MAX_DECODE_DEPTH: u32 = 1024;
/// READDIR reply budget per call; keeps an entry list under the depth limit.
const READDIR_MAXCOUNT: u32 = 16 * 1024;
/// Replies to earlier, abandoned xids skipped before giving up.
const MAX_STALE_REPLIES: usize = 16;
const OPEN_OWNER: &[u8] = b"pnfs-client";
const CB_PROGRAM: u32 = 0x4000_0000;
/// Operations per COMPOUND asked for (SEQUENCE included).
const FORE_MAX_OPS: u32 = 16;

#[derive(Debug)]
pub enum Error {
    /// Connecting, sending or receiving failed; the client is now disconnected.
    Io(io::Error),
    /// An earlier transport failure broke the connection; call [`Client::reconnect`].
    Disconnected,
    /// A reply did not decode.
    Xdr(XdrError),
    /// The RPC layer refused the call or the reply made no sense at RPC level.
    Rpc(String),
    /// The COMPOUND failed: `op` is the operation that failed (None when the
    /// server refused the COMPOUND before any operation).
    Nfs { op: Option<nfs_opnum4>, status: nfsstat4 },
    /// The reply decoded but is not what the request calls for.
    Protocol(String),
}

impl Error {
    /// The NFS status, for [`Error::Nfs`].
    pub fn status(&self) -> Option<nfsstat4> {
        match self {
            Error::Nfs { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the request's fate is unknown because the connection broke
    /// (or was already broken) rather than because the server answered.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Disconnected)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "transport: {e}"),
            Error::Disconnected => write!(f, "disconnected (an earlier transport error broke the connection)"),
            Error::Xdr(e) => write!(f, "undecodable reply: {e}"),
            Error::Rpc(m) => write!(f, "RPC: {m}"),
            Error::Nfs { op: Some(op), status } => write!(f, "{op:?} failed: {status:?}"),
            Error::Nfs { op: None, status } => write!(f, "COMPOUND failed: {status:?}"),
            Error::Protocol(m) => write!(f, "unexpected reply: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<XdrError> for Error {
    fn from(e: XdrError) -> Self {
        Error::Xdr(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The raw COMPOUND4res of [`Client::compound`]; [`Reply::res`] decodes it.
#[derive(Debug, Clone)]
pub struct Reply {
    body: Vec<u8>,
}

impl Reply {
    /// The decoded COMPOUND4res; `resarray[0]` is the SEQUENCE result.
    pub fn res(&self) -> Result<COMPOUND4res<'_>> {
        decode_compound(&self.body)
    }

    /// The COMPOUND status (first word of the reply).
    pub fn status(&self) -> Result<nfsstat4> {
        let mut d = Decoder::new(&self.body);
        Ok(nfsstat4::decode(&mut d)?)
    }
}

/// One layout of a LAYOUTGET reply ([`Client::layoutget_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSegment {
    pub offset: u64,
    /// u64::MAX: to the end of the file.
    pub length: u64,
    pub iomode: layoutiomode4,
    pub layout_type: layouttype4,
    pub body: Vec<u8>,
}

impl LayoutSegment {
    /// One `layout4` of a LAYOUTGET reply.
    pub fn from_wire(l: &layout4) -> LayoutSegment {
        LayoutSegment {
            offset: l.lo_offset,
            length: l.lo_length,
            iomode: l.lo_iomode,
            layout_type: l.lo_content.loc_type,
            body: l.lo_content.loc_body.to_vec(),
        }
    }
}

/// Session parameters the server granted.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub clientid: u64,
    pub sessionid: sessionid4,
    pub max_request: u32,
    pub max_response: u32,
    pub max_ops: u32,
    pub slots: u32,
}

struct Conn {
    stream: TcpStream,
    records: RecordReader,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

/// Answers the operations after CB_SEQUENCE of a CB_COMPOUND the server
/// sent: the status is the result of the first of them (and, when OK, of all
/// of them; fine for status-only results such as CB_LAYOUTRECALL and
/// CB_RECALL).
pub type CallbackHandler = Box<dyn FnMut(&CB_COMPOUND4args) -> nfsstat4 + Send>;

pub struct Client {
    addr: SocketAddr,
    callbacks: Option<CallbackHandler>,
    minor: u32,
    owner: Vec<u8>,
    verifier: [u8; 8],
    timeout: Duration,
    retry_for: Duration,
    conn: Option<Conn>,
    xid: u32,
    session: SessionInfo,
    /// Last sequenceid used on slot 0.
    seq: u32,
}

fn unique_owner() -> (Vec<u8>, [u8; 8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let owner = format!("pnfs-client/{}/{}/{t:x}", std::process::id(), n).into_bytes();
    (owner, (t ^ n.rotate_left(48)).to_be_bytes())
}

fn invalid_stream(msg: String) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, msg))
}

fn decode_compound(body: &[u8]) -> Result<COMPOUND4res<'_>> {
    let mut d = Decoder::new(body).with_max_depth(MAX_DECODE_DEPTH);
    let res = COMPOUND4res::decode(&mut d)?;
    if d.remaining() != 0 {
        return Err(Error::Protocol(format!("{} trailing bytes after COMPOUND4res", d.remaining())));
    }
    Ok(res)
}

/// Operation number of a result (every nfs_resop4 encodes it first).
fn opnum_of(r: &nfs_resop4) -> Option<nfs_opnum4> {
    let b = pnfs_protocol::xdr::encode_to_vec(r).ok()?;
    let n = i32::from_be_bytes(<[u8; 4]>::try_from(b.get(..4)?).ok()?);
    nfs_opnum4::from_i32(n)
}

/// Error for a failed COMPOUND: the failing op is the last result.
fn compound_error(res: &COMPOUND4res) -> Error {
    Error::Nfs { op: res.resarray.last().and_then(opnum_of), status: res.status }
}

/// The OK body of result `$i`, which must be `$variant($res::NFS4_OK(..))`.
macro_rules! result {
    ($ops:expr, $i:expr, $variant:ident, $res:ident) => {
        match $ops.get($i) {
            Some(nfs_resop4::$variant($res::NFS4_OK(v))) => Ok(v),
            other => Err(Error::Protocol(format!(
                "expected a successful {} at position {}, got {:?}",
                stringify!($variant),
                $i,
                other.and_then(opnum_of)
            ))),
        }
    };
}

fn empty_attrs() -> fattr4<'static> {
    fattr4 { attrmask: vec![], attr_vals: Opaque::owned(vec![]) }
}

fn size_attr(size: u64) -> fattr4<'static> {
    fattr4 { attrmask: vec![1 << FATTR4_SIZE], attr_vals: Opaque::owned(size.to_be_bytes().to_vec()) }
}

/// The "current stateid" of RFC 8881 16.2.3.1.2.
pub const CURRENT_STATEID: stateid4 = stateid4 { seqid: 1, other: [0; 12] };
/// The anonymous stateid: I/O without an open.
pub const ANONYMOUS_STATEID: stateid4 = stateid4 { seqid: 0, other: [0; 12] };

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) })
}

impl Client {
    /// Connects to `addr` and sets up a session for NFSv4.`minor` (1 or 2).
    pub fn connect(addr: impl ToSocketAddrs, minor: u32) -> Result<Client> {
        Self::connect_with(addr, minor, None)
    }

    /// Like [`Client::connect`], as the same client (owner and verifier) as
    /// `other`: what a pNFS client does with the data servers of a layout,
    /// which accept a stateid only from the client the MDS gave it to.
    pub fn connect_as(addr: impl ToSocketAddrs, other: &Client) -> Result<Client> {
        Self::connect_owned(addr, other.minor, None, (other.owner.clone(), other.verifier))
    }

    /// The client owner (`co_ownerid`) this client uses.
    pub fn owner(&self) -> &[u8] {
        &self.owner
    }

    fn connect_with(addr: impl ToSocketAddrs, minor: u32, callbacks: Option<CallbackHandler>) -> Result<Client> {
        Self::connect_owned(addr, minor, callbacks, unique_owner())
    }

    fn connect_owned(
        addr: impl ToSocketAddrs,
        minor: u32,
        callbacks: Option<CallbackHandler>,
        (owner, verifier): (Vec<u8>, [u8; 8]),
    ) -> Result<Client> {
        if !(1..=2).contains(&minor) {
            return Err(Error::Protocol(format!("minor version {minor} is not 1 or 2")));
        }
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::Io(io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")))?;
        let mut c = Client {
            addr,
            callbacks,
            minor,
            owner,
            verifier,
            timeout: Duration::from_secs(30),
            retry_for: Duration::from_secs(30),
            conn: None,
            xid: (verifier[7] as u32) << 24 | 1,
            session: SessionInfo { clientid: 0, sessionid: [0; 16], max_request: 0, max_response: 0, max_ops: 0, slots: 0 },
            seq: 0,
        };
        c.reconnect()?;
        Ok(c)
    }

    /// Like [`Client::connect`], with the connection bound for the back
    /// channel (CREATE_SESSION4_FLAG_CONN_BACK_CHAN): `handler` answers the
    /// server's CB_COMPOUNDs.
    pub fn connect_with_callbacks(addr: impl ToSocketAddrs, minor: u32, handler: CallbackHandler) -> Result<Client> {
        Self::connect_with(addr, minor, Some(handler))
    }

    /// Serves callbacks for `wait` (the client sends nothing meanwhile);
    /// returns how many CB_COMPOUNDs were answered.
    pub fn poll_callbacks(&mut self, wait: Duration) -> Result<usize> {
        let until = Instant::now() + wait;
        let mut n = 0;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(n);
            }
            let conn = self.conn.as_mut().ok_or(Error::Disconnected)?;
            conn.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let rec = conn.read_record();
            let _ = conn.stream.set_read_timeout(Some(self.timeout));
            let rec = match rec {
                Ok(r) => r,
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut => return Ok(n),
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            };
            if let Ok(Message::Call { header, args }) = rpc::parse_message(&rec) {
                self.answer_callback(header.xid, args)?;
                n += 1;
            }
        }
    }

    /// Answers one CB_COMPOUND (xid `xid`, arguments `args`) through the handler.
    fn answer_callback(&mut self, xid: u32, args: &[u8]) -> Result<()> {
        let mut e = Encoder::new();
        e.put_u32(0); // record mark
        let decoded = CB_COMPOUND4args::decode(&mut Decoder::new(args));
        match (&mut self.callbacks, decoded) {
            (Some(handler), Ok(a)) => {
                rpc::begin_accepted_reply(&mut e, xid, rpc::AcceptStat::Success);
                let seq = match a.argarray.first() {
                    Some(nfs_cb_argop4::OP_CB_SEQUENCE(s)) => Some(CB_SEQUENCE4resok {
                        csr_sessionid: s.csa_sessionid,
                        csr_sequenceid: s.csa_sequenceid,
                        csr_slotid: s.csa_slotid,
                        csr_highest_slotid: s.csa_highest_slotid,
                        csr_target_highest_slotid: s.csa_highest_slotid,
                    }),
                    _ => None,
                };
                let Some(seq) = seq else {
                    // Not behind CB_SEQUENCE: refuse the whole compound.
                    e.put_i32(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION as i32);
                    e.put_opaque(&[], NFS4_OPAQUE_LIMIT)?;
                    e.put_u32(0);
                    return self.send_record(e);
                };
                let status = if a.argarray.len() > 1 { handler(&a) } else { nfsstat4::NFS4_OK };
                let done = if status == nfsstat4::NFS4_OK { a.argarray.len() - 1 } else { 1 };
                e.put_i32(status as i32);
                e.put_opaque(&a.tag, NFS4_OPAQUE_LIMIT)?;
                e.put_u32(1 + done as u32);
                nfs_cb_resop4::OP_CB_SEQUENCE(CB_SEQUENCE4res::NFS4_OK(seq)).encode(&mut e)?;
                for op in &a.argarray[1..=done] {
                    // Every nfs_cb_argop4 starts with its opnum; the result
                    // is that opnum and the status.
                    let opnum = pnfs_protocol::xdr::encode_to_vec(op)?;
                    e.buf.extend_from_slice(&opnum[..4]);
                    e.put_i32(status as i32);
                }
            }
            _ => {
                let r = rpc::accepted_reply(xid, rpc::AcceptStat::GarbageArgs);
                e.buf.extend_from_slice(&r);
            }
        }
        self.send_record(e)
    }

    /// Patches the record mark of `e` (4 bytes reserved first) and sends it.
    fn send_record(&mut self, mut e: Encoder) -> Result<()> {
        let len = e.len() - 4;
        e.patch_u32(0, LAST_FRAGMENT | len as u32);
        let conn = self.conn.as_mut().ok_or(Error::Disconnected)?;
        conn.stream.write_all(&e.buf)?;
        Ok(())
    }

    /// Opens a new connection and sets up a new client ID and session with
    /// the same client owner (so the server lets it reclaim after a restart).
    pub fn reconnect(&mut self) -> Result<()> {
        self.conn = None;
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        self.conn = Some(Conn { stream, records: RecordReader::new(MAX_REPLY_RECORD), buf: vec![0; 64 * 1024], pos: 0, len: 0 });
        self.setup_session()
    }

    /// How long one reply may take before the connection is given up (default 30 s).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
        if let Some(c) = &self.conn {
            let _ = c.stream.set_read_timeout(Some(t));
            let _ = c.stream.set_write_timeout(Some(t));
        }
    }

    /// How long [`Client::compound`] keeps retrying NFS4ERR_DELAY and
    /// NFS4ERR_GRACE before returning them (default 30 s).
    pub fn set_retry_for(&mut self, t: Duration) {
        self.retry_for = t;
    }

    pub fn session(&self) -> &SessionInfo {
        &self.session
    }

    pub fn minor(&self) -> u32 {
        self.minor
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Largest READ/WRITE payload that fits the session's limits.
    pub fn max_io(&self) -> usize {
        let m = self.session.max_request.min(self.session.max_response).saturating_sub(4096) as usize;
        (m & !4095).clamp(4096, 1 << 20)
    }

    fn setup_session(&mut self) -> Result<()> {
        let owner = self.owner.clone();
        let eid = EXCHANGE_ID4args {
            eia_clientowner: client_owner4 { co_verifier: self.verifier, co_ownerid: Opaque::borrowed(&owner) },
            eia_flags: 0,
            eia_state_protect: state_protect4_a::SP4_NONE,
            eia_client_impl_id: vec![],
        };
        let body = self.call_sessionless(nfs_argop4::OP_EXCHANGE_ID(eid))?;
        let res = decode_compound(&body)?;
        if res.status != nfsstat4::NFS4_OK {
            return Err(compound_error(&res));
        }
        let ok = result!(res.resarray, 0, OP_EXCHANGE_ID, EXCHANGE_ID4res)?;
        let (clientid, csseq) = (ok.eir_clientid, ok.eir_sequenceid);

        let fore = channel_attrs4 {
            ca_headerpadsize: 0,
            ca_maxrequestsize: (1 << 20) + 64 * 1024,
            ca_maxresponsesize: (1 << 20) + 64 * 1024,
            ca_maxresponsesize_cached: 8 * 1024,
            ca_maxoperations: FORE_MAX_OPS,
            ca_maxrequests: 64,
            ca_rdma_ird: vec![],
        };
        let back = channel_attrs4 {
            ca_headerpadsize: 0,
            ca_maxrequestsize: 4096,
            ca_maxresponsesize: 4096,
            ca_maxresponsesize_cached: 0,
            ca_maxoperations: 2,
            ca_maxrequests: 1,
            ca_rdma_ird: vec![],
        };
        let sec = callback_sec_parms4::AUTH_SYS(authsys_parms {
            stamp: 0,
            machinename: Opaque::borrowed(b"pnfs-client"),
            uid: 0,
            gid: 0,
            gids: vec![],
        });
        let cs = CREATE_SESSION4args {
            csa_clientid: clientid,
            csa_sequence: csseq,
            csa_flags: if self.callbacks.is_some() { CREATE_SESSION4_FLAG_CONN_BACK_CHAN } else { 0 },
            csa_fore_chan_attrs: fore,
            csa_back_chan_attrs: back,
            csa_cb_program: CB_PROGRAM,
            csa_sec_parms: vec![sec],
        };
        let body = self.call_sessionless(nfs_argop4::OP_CREATE_SESSION(cs))?;
        let res = decode_compound(&body)?;
        if res.status != nfsstat4::NFS4_OK {
            return Err(compound_error(&res));
        }
        let ok = result!(res.resarray, 0, OP_CREATE_SESSION, CREATE_SESSION4res)?;
        let f = &ok.csr_fore_chan_attrs;
        if f.ca_maxrequests == 0 || f.ca_maxoperations < 2 || f.ca_maxrequestsize < 256 || f.ca_maxresponsesize < 256 {
            return Err(Error::Protocol(format!("unusable fore channel attributes {f:?}")));
        }
        self.session = SessionInfo {
            clientid,
            sessionid: ok.csr_sessionid,
            max_request: f.ca_maxrequestsize,
            max_response: f.ca_maxresponsesize,
            // Never more than we asked for, even if the server offers more.
            max_ops: f.ca_maxoperations.min(FORE_MAX_OPS),
            slots: f.ca_maxrequests,
        };
        self.seq = 0;
        // Tell the server we hold nothing to reclaim, so its grace period
        // need not wait for us; "already complete" is fine on a reconnect.
        let reply = self.compound(vec![nfs_argop4::OP_RECLAIM_COMPLETE(RECLAIM_COMPLETE4args { rca_one_fs: false })])?;
        match reply.status()? {
            nfsstat4::NFS4_OK | nfsstat4::NFS4ERR_COMPLETE_ALREADY => Ok(()),
            status => Err(Error::Nfs { op: Some(nfs_opnum4::OP_RECLAIM_COMPLETE), status }),
        }
    }

    fn next_xid(&mut self) -> u32 {
        self.xid = self.xid.wrapping_add(1);
        self.xid
    }

    /// Sends one COMPOUND whose argument bytes follow the RPC header as
    /// `args`, returns the COMPOUND4res bytes. Transport errors disconnect.
    fn rpc(&mut self, args: &[u8]) -> Result<Vec<u8>> {
        let xid = self.next_xid();
        let r = self.rpc_inner(xid, args);
        if matches!(r, Err(Error::Io(_))) {
            self.conn = None;
        }
        r
    }

    fn rpc_inner(&mut self, xid: u32, args: &[u8]) -> Result<Vec<u8>> {
        let conn = self.conn.as_mut().ok_or(Error::Disconnected)?;
        let mut e = Encoder::with_buffer(Vec::with_capacity(args.len() + 128));
        e.put_u32(0); // record mark, patched below
        rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
        e.buf.extend_from_slice(args);
        let len = e.len() - 4;
        if len >= LAST_FRAGMENT as usize {
            return Err(Error::Protocol(format!("request of {len} bytes is too large")));
        }
        e.patch_u32(0, LAST_FRAGMENT | len as u32);
        conn.stream.write_all(&e.buf)?;
        let mut stale = 0;
        while stale <= MAX_STALE_REPLIES {
            let rec = self.conn.as_mut().ok_or(Error::Disconnected)?.read_record()?;
            match rpc::parse_message(&rec) {
                Ok(Message::Reply { xid: rx, .. }) if rx != xid => stale += 1,
                Ok(Message::Reply { accepted: None, .. }) => return Err(Error::Rpc("call denied (MSG_DENIED)".into())),
                Ok(Message::Reply { accepted: Some(0), body, .. }) => return Ok(body.to_vec()),
                Ok(Message::Reply { accepted: Some(s), .. }) => {
                    return Err(Error::Rpc(format!("call not accepted: accept_stat {s}")))
                }
                // A callback: answered when we bound a back channel, else skipped.
                Ok(Message::Call { header, args }) => {
                    if self.callbacks.is_some() {
                        let args = args.to_vec();
                        self.answer_callback(header.xid, &args)?;
                    } else {
                        stale += 1;
                    }
                }
                // The stream cannot be trusted any more: a transport error.
                Err(e) => return Err(invalid_stream(format!("unparseable RPC reply: {e:?}"))),
            }
        }
        Err(invalid_stream(format!("no reply to xid {xid:#x} among {MAX_STALE_REPLIES} records")))
    }

    fn compound_header(&self, e: &mut Encoder, nops: usize) -> Result<()> {
        e.put_opaque(b"", NFS4_OPAQUE_LIMIT)?; // tag
        e.put_u32(self.minor);
        e.put_u32(nops as u32);
        Ok(())
    }

    fn call_sessionless(&mut self, op: nfs_argop4) -> Result<Vec<u8>> {
        let mut e = Encoder::new();
        self.compound_header(&mut e, 1)?;
        op.encode(&mut e)?;
        self.rpc(&e.buf)
    }

    /// Sends `ops` behind a SEQUENCE on slot 0 and returns the reply whatever
    /// the operations' status, except that NFS4ERR_DELAY and NFS4ERR_GRACE
    /// are retried (after a short sleep, with a new sequenceid) for up to
    /// the retry time. A failed SEQUENCE is an [`Error::Nfs`] for OP_SEQUENCE.
    pub fn compound(&mut self, ops: Vec<nfs_argop4<'_>>) -> Result<Reply> {
        let mut tail = Encoder::new();
        for op in &ops {
            op.encode(&mut tail)?;
        }
        let nops = ops.len() + 1;
        if nops > self.session.max_ops as usize {
            return Err(Error::Protocol(format!("{nops} operations exceed the session's {}", self.session.max_ops)));
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let seq = self.seq.wrapping_add(1);
            let mut e = Encoder::with_buffer(Vec::with_capacity(tail.len() + 64));
            self.compound_header(&mut e, nops)?;
            nfs_argop4::OP_SEQUENCE(SEQUENCE4args {
                sa_sessionid: self.session.sessionid,
                sa_sequenceid: seq,
                sa_slotid: 0,
                sa_highest_slotid: 0,
                sa_cachethis: false,
            })
            .encode(&mut e)?;
            e.buf.extend_from_slice(&tail.buf);
            let body = self.rpc(&e.buf)?;
            let res = match decode_compound(&body) {
                Ok(r) => r,
                Err(err) => {
                    // Whether SEQUENCE advanced the slot is unknown now.
                    self.conn = None;
                    return Err(err);
                }
            };
            let retry = match res.resarray.first() {
                Some(nfs_resop4::OP_SEQUENCE(SEQUENCE4res::NFS4_OK(ok))) => {
                    if ok.sr_sessionid != self.session.sessionid || ok.sr_sequenceid != seq || ok.sr_slotid != 0 {
                        return Err(Error::Protocol(format!("SEQUENCE reply {ok:?} does not match the request (seq {seq})")));
                    }
                    self.seq = seq;
                    matches!(res.status, nfsstat4::NFS4ERR_DELAY | nfsstat4::NFS4ERR_GRACE)
                }
                // The slot is busy (a retransmission still running): same seqid again.
                Some(nfs_resop4::OP_SEQUENCE(SEQUENCE4res::default(nfsstat4::NFS4ERR_DELAY))) => true,
                Some(nfs_resop4::OP_SEQUENCE(SEQUENCE4res::default(status))) => {
                    return Err(Error::Nfs { op: Some(nfs_opnum4::OP_SEQUENCE), status: *status })
                }
                Some(other) => return Err(Error::Protocol(format!("first result is {:?}, not SEQUENCE", opnum_of(other)))),
                None => return Err(Error::Nfs { op: None, status: res.status }),
            };
            if !retry {
                drop(res);
                return Ok(Reply { body });
            }
            if started.elapsed() >= self.retry_for {
                return Err(compound_error(&res));
            }
            let grace = res.status == nfsstat4::NFS4ERR_GRACE;
            std::thread::sleep(if grace { pause.max(Duration::from_millis(100)) } else { pause });
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Like [`Client::compound`], but any failed operation is an error; `f`
    /// gets the results after SEQUENCE.
    pub fn compound_ok<R>(&mut self, ops: Vec<nfs_argop4<'_>>, f: impl FnOnce(&[nfs_resop4<'_>]) -> Result<R>) -> Result<R> {
        let n = ops.len();
        let reply = self.compound(ops)?;
        let res = reply.res()?;
        if res.status != nfsstat4::NFS4_OK {
            return Err(compound_error(&res));
        }
        if res.resarray.len() != n + 1 {
            return Err(Error::Protocol(format!("{} results for {} operations", res.resarray.len(), n + 1)));
        }
        f(&res.resarray[1..])
    }

    /// Filehandle of an absolute path, e.g. "/export/a/b".
    pub fn lookup_path(&mut self, path: &str) -> Result<Fh> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let per_call = (self.session.max_ops as usize).saturating_sub(3).max(1);
        let mut fh: Option<Fh> = None;
        let mut chunks: Vec<&[&str]> = comps.chunks(per_call).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let mut ops = vec![match &fh {
                Some(fh) => putfh(fh),
                None => nfs_argop4::OP_PUTROOTFH,
            }];
            ops.extend(chunk.iter().map(|c| nfs_argop4::OP_LOOKUP(LOOKUP4args { objname: Opaque::borrowed(c.as_bytes()) })));
            ops.push(nfs_argop4::OP_GETFH);
            let i = ops.len() - 1;
            let next = self.compound_ok(ops, |r| Ok(result!(r, i, OP_GETFH, GETFH4res)?.object.to_vec()))?;
            fh = Some(next);
        }
        fh.ok_or_else(|| Error::Protocol("no filehandle".into()))
    }

    /// Filehandle of `name` in `dir`.
    pub fn lookup(&mut self, dir: &[u8], name: &str) -> Result<Fh> {
        let ops = vec![putfh(dir), nfs_argop4::OP_LOOKUP(LOOKUP4args { objname: name.as_bytes().into() }), nfs_argop4::OP_GETFH];
        self.compound_ok(ops, |r| Ok(result!(r, 2, OP_GETFH, GETFH4res)?.object.to_vec()))
    }

    /// Creates directory `name` in `dir`; returns its filehandle.
    pub fn mkdir(&mut self, dir: &[u8], name: &str) -> Result<Fh> {
        let ops = vec![
            putfh(dir),
            nfs_argop4::OP_CREATE(CREATE4args {
                objtype: createtype4::NF4DIR,
                objname: name.as_bytes().into(),
                createattrs: empty_attrs(),
            }),
            nfs_argop4::OP_GETFH,
        ];
        self.compound_ok(ops, |r| Ok(result!(r, 2, OP_GETFH, GETFH4res)?.object.to_vec()))
    }

    fn open_args<'n>(&self, name: &'n str, access: u32, how: openflag4<'n>) -> nfs_argop4<'n> {
        nfs_argop4::OP_OPEN(OPEN4args {
            seqid: 0,
            share_access: access,
            share_deny: OPEN4_SHARE_DENY_NONE,
            owner: state_owner4 { clientid: self.session.clientid, owner: Opaque::borrowed(OPEN_OWNER) },
            openhow: how,
            claim: open_claim4::CLAIM_NULL(name.as_bytes().into()),
        })
    }

    /// Opens `name` in `dir` (creating it, UNCHECKED, when `create`); returns
    /// the filehandle and open stateid. Close it with [`Client::close`].
    pub fn open(&mut self, dir: &[u8], name: &str, create: bool, access: u32) -> Result<(Fh, stateid4)> {
        let how = if create {
            openflag4::OPEN4_CREATE(createhow4::UNCHECKED4(empty_attrs()))
        } else {
            openflag4::default(opentype4::OPEN4_NOCREATE)
        };
        let ops = vec![putfh(dir), self.open_args(name, access, how), nfs_argop4::OP_GETFH];
        self.compound_ok(ops, |r| {
            let sid = result!(r, 1, OP_OPEN, OPEN4res)?.stateid.clone();
            Ok((result!(r, 2, OP_GETFH, GETFH4res)?.object.to_vec(), sid))
        })
    }

    pub fn close(&mut self, fh: &[u8], stateid: &stateid4) -> Result<()> {
        let ops = vec![putfh(fh), nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: stateid.clone() })];
        self.compound_ok(ops, |_| Ok(()))
    }

    /// Creates (or opens, if it exists) regular file `name` in `dir` with
    /// OPEN CREATE UNCHECKED + CLOSE; returns its filehandle.
    pub fn create_file(&mut self, dir: &[u8], name: &str) -> Result<Fh> {
        let how = openflag4::OPEN4_CREATE(createhow4::UNCHECKED4(empty_attrs()));
        let ops = vec![
            putfh(dir),
            self.open_args(name, OPEN4_SHARE_ACCESS_BOTH, how),
            nfs_argop4::OP_GETFH,
            nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: CURRENT_STATEID }),
        ];
        self.compound_ok(ops, |r| Ok(result!(r, 2, OP_GETFH, GETFH4res)?.object.to_vec()))
    }

    /// One WRITE; returns the bytes the server took.
    pub fn write(&mut self, fh: &[u8], stateid: &stateid4, offset: u64, data: &[u8], stable: stable_how4) -> Result<u32> {
        let ops = vec![
            putfh(fh),
            nfs_argop4::OP_WRITE(WRITE4args { stateid: stateid.clone(), offset, stable, data: Opaque::borrowed(data) }),
        ];
        self.compound_ok(ops, |r| Ok(result!(r, 1, OP_WRITE, WRITE4res)?.count))
    }

    /// One READ; returns (data, eof).
    pub fn read(&mut self, fh: &[u8], stateid: &stateid4, offset: u64, count: u32) -> Result<(Vec<u8>, bool)> {
        let ops = vec![putfh(fh), nfs_argop4::OP_READ(READ4args { stateid: stateid.clone(), offset, count })];
        self.compound_ok(ops, |r| {
            let ok = result!(r, 1, OP_READ, READ4res)?;
            Ok((ok.data.to_vec(), ok.eof))
        })
    }

    /// Creates `name` in `dir` if needed, truncates it and writes `data`
    /// FILE_SYNC. Small files take one COMPOUND: OPEN (CREATE UNCHECKED,
    /// size 0), GETFH, WRITE, CLOSE. Returns the filehandle.
    pub fn write_file(&mut self, dir: &[u8], name: &str, data: &[u8]) -> Result<Fh> {
        let first = data.len().min(self.max_io());
        let more = first < data.len();
        let how = openflag4::OPEN4_CREATE(createhow4::UNCHECKED4(size_attr(0)));
        let mut ops = vec![putfh(dir), self.open_args(name, OPEN4_SHARE_ACCESS_BOTH, how), nfs_argop4::OP_GETFH];
        if first > 0 {
            ops.push(nfs_argop4::OP_WRITE(WRITE4args {
                stateid: CURRENT_STATEID,
                offset: 0,
                stable: stable_how4::FILE_SYNC4,
                data: Opaque::borrowed(&data[..first]),
            }));
        }
        if !more {
            ops.push(nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: CURRENT_STATEID }));
        }
        let (fh, sid, written) = self.compound_ok(ops, |r| {
            let sid = result!(r, 1, OP_OPEN, OPEN4res)?.stateid.clone();
            let fh = result!(r, 2, OP_GETFH, GETFH4res)?.object.to_vec();
            let written = if first > 0 { result!(r, 3, OP_WRITE, WRITE4res)?.count as usize } else { 0 };
            Ok((fh, sid, written))
        })?;
        if written > first {
            return Err(Error::Protocol(format!("WRITE of {first} bytes answered count {written}")));
        }
        // Short first write or a large file: continue with the open stateid
        // (or the anonymous one once the open is closed).
        let open = more;
        let sid = if open { sid } else { ANONYMOUS_STATEID };
        let mut off = written;
        while off < data.len() {
            let end = (off + self.max_io()).min(data.len());
            let n = self.write(&fh, &sid, off as u64, &data[off..end], stable_how4::FILE_SYNC4)? as usize;
            if n == 0 || n > end - off {
                return Err(Error::Protocol(format!("WRITE of {} bytes at {off} answered count {n}", end - off)));
            }
            off += n;
        }
        if open {
            self.close(&fh, &sid)?;
        }
        Ok(fh)
    }

    /// Reads [0, `len`) of `fh` with `stateid` in READs of up to `chunk`
    /// bytes; stops early at EOF or an empty reply and returns what it read.
    pub fn read_upto(&mut self, fh: &[u8], stateid: &stateid4, len: usize, chunk: u32) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        while data.len() < len {
            let (more, eof) = self.read(fh, stateid, data.len() as u64, chunk)?;
            data.extend_from_slice(&more);
            if eof || more.is_empty() {
                break;
            }
        }
        Ok(data)
    }

    /// Reads all of `name` in `dir`: OPEN (read), GETFH, READ, CLOSE in one
    /// COMPOUND; files larger than one READ continue with anonymous-stateid
    /// READs until EOF.
    pub fn read_file(&mut self, dir: &[u8], name: &str) -> Result<Vec<u8>> {
        let count = self.max_io() as u32;
        let ops = vec![
            putfh(dir),
            self.open_args(name, OPEN4_SHARE_ACCESS_READ, openflag4::default(opentype4::OPEN4_NOCREATE)),
            nfs_argop4::OP_GETFH,
            nfs_argop4::OP_READ(READ4args { stateid: CURRENT_STATEID, offset: 0, count }),
            nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: CURRENT_STATEID }),
        ];
        let (fh, mut data, mut eof) = self.compound_ok(ops, |r| {
            let fh = result!(r, 2, OP_GETFH, GETFH4res)?.object.to_vec();
            let ok = result!(r, 3, OP_READ, READ4res)?;
            Ok((fh, ok.data.to_vec(), ok.eof))
        })?;
        while !eof {
            let (more, e) = self.read(&fh, &ANONYMOUS_STATEID, data.len() as u64, count)?;
            if more.is_empty() && !e {
                return Err(Error::Protocol(format!("READ at {} returned nothing without EOF", data.len())));
            }
            data.extend_from_slice(&more);
            eof = e;
        }
        Ok(data)
    }

    /// RENAME `src_dir/old` to `dst_dir/new` (PUTFH src, SAVEFH, PUTFH dst, RENAME).
    pub fn rename(&mut self, src_dir: &[u8], old: &str, dst_dir: &[u8], new: &str) -> Result<()> {
        let ops = vec![
            putfh(src_dir),
            nfs_argop4::OP_SAVEFH,
            putfh(dst_dir),
            nfs_argop4::OP_RENAME(RENAME4args { oldname: old.as_bytes().into(), newname: new.as_bytes().into() }),
        ];
        self.compound_ok(ops, |_| Ok(()))
    }

    /// REMOVE `dir/name` (file or empty directory).
    pub fn remove(&mut self, dir: &[u8], name: &str) -> Result<()> {
        let ops = vec![putfh(dir), nfs_argop4::OP_REMOVE(REMOVE4args { target: name.as_bytes().into() })];
        self.compound_ok(ops, |_| Ok(()))
    }

    /// Names in `dir`, READDIR after READDIR until EOF (server order).
    pub fn readdir(&mut self, dir: &[u8]) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut cookie = 0u64;
        let mut verf = [0u8; 8];
        loop {
            let ops = vec![
                putfh(dir),
                nfs_argop4::OP_READDIR(READDIR4args {
                    cookie,
                    cookieverf: verf,
                    dircount: READDIR_MAXCOUNT,
                    maxcount: READDIR_MAXCOUNT,
                    attr_request: vec![],
                }),
            ];
            let before = names.len();
            let eof = self.compound_ok(ops, |r| {
                let ok = result!(r, 1, OP_READDIR, READDIR4res)?;
                verf = ok.cookieverf;
                let mut e = ok.reply.entries.as_deref();
                while let Some(ent) = e {
                    names.push(String::from_utf8_lossy(&ent.name).into_owned());
                    cookie = ent.cookie;
                    e = ent.nextentry.as_deref();
                }
                Ok(ok.reply.eof)
            })?;
            if eof {
                return Ok(names);
            }
            if names.len() == before {
                return Err(Error::Protocol("READDIR returned no entries and no EOF".into()));
            }
        }
    }

    /// LAYOUTGET of the whole file (files layout, minlength and maxcount
    /// 4096); returns the layout stateid and the first layout's body (decode
    /// it with [`layout::FileLayout::decode`] or as `nfsv4_1_file_layout4`).
    pub fn layoutget(&mut self, fh: &[u8], stateid: &stateid4, iomode: layoutiomode4) -> Result<(stateid4, Vec<u8>)> {
        let ops = vec![putfh(fh), layout::whole_file_layoutget(stateid.clone(), iomode, 4096, 4096)];
        self.compound_ok(ops, |r| {
            let ok = result!(r, 1, OP_LAYOUTGET, LAYOUTGET4res)?;
            match ok.logr_layout.first() {
                Some(l) => Ok((ok.logr_stateid.clone(), l.lo_content.loc_body.to_vec())),
                None => Err(Error::Protocol("LAYOUTGET answered no layout".into())),
            }
        })
    }

    /// GETDEVICEINFO of a files layout device; returns its `da_addr_body`
    /// (decode it with [`layout::DeviceAddrs::decode`] or as
    /// `nfsv4_1_file_layout_ds_addr4`).
    pub fn getdeviceinfo(&mut self, device_id: [u8; 16]) -> Result<Vec<u8>> {
        let ops = vec![nfs_argop4::OP_GETDEVICEINFO(GETDEVICEINFO4args {
            gdia_device_id: device_id,
            gdia_layout_type: layouttype4::LAYOUT4_NFSV4_1_FILES,
            gdia_maxcount: 4096,
            gdia_notify_types: vec![],
        })];
        self.compound_ok(ops, |r| Ok(result!(r, 0, OP_GETDEVICEINFO, GETDEVICEINFO4res)?.gdir_device_addr.da_addr_body.to_vec()))
    }

    /// LAYOUTGET of `layout_type` for [`offset`, `offset` + `length`) (at
    /// least `minlength` bytes from `offset`); returns the layout stateid and
    /// every layout of the reply (a server may answer several segments).
    #[allow(clippy::too_many_arguments)]
    pub fn layoutget_range(
        &mut self,
        fh: &[u8],
        stateid: &stateid4,
        layout_type: layouttype4,
        iomode: layoutiomode4,
        offset: u64,
        length: u64,
        minlength: u64,
    ) -> Result<(stateid4, Vec<LayoutSegment>)> {
        let ops = vec![putfh(fh), layout::layoutget(layout_type, stateid.clone(), iomode, offset, length, minlength, 64 * 1024)];
        self.compound_ok(ops, |r| {
            let ok = result!(r, 1, OP_LAYOUTGET, LAYOUTGET4res)?;
            Ok((ok.logr_stateid.clone(), ok.logr_layout.iter().map(LayoutSegment::from_wire).collect()))
        })
    }

    /// GETDEVICEINFO of a device of `layout_type`; returns its
    /// `da_addr_body` (for flexfiles decode it with
    /// [`flexfiles::FlexDevice::decode`]).
    pub fn getdeviceinfo_of(&mut self, layout_type: layouttype4, device_id: [u8; 16]) -> Result<Vec<u8>> {
        let ops = vec![nfs_argop4::OP_GETDEVICEINFO(GETDEVICEINFO4args {
            gdia_device_id: device_id,
            gdia_layout_type: layout_type,
            gdia_maxcount: 64 * 1024,
            gdia_notify_types: vec![],
        })];
        self.compound_ok(ops, |r| Ok(result!(r, 0, OP_GETDEVICEINFO, GETDEVICEINFO4res)?.gdir_device_addr.da_addr_body.to_vec()))
    }

    /// SETATTR size with `stateid` (an open stateid with write access, or
    /// the anonymous stateid).
    pub fn setattr_size(&mut self, fh: &[u8], stateid: &stateid4, size: u64) -> Result<()> {
        let ops = vec![putfh(fh), nfs_argop4::OP_SETATTR(SETATTR4args { stateid: stateid.clone(), obj_attributes: size_attr(size) })];
        self.compound_ok(ops, |_| Ok(()))
    }

    /// The size attribute of `fh`.
    pub fn getattr_size(&mut self, fh: &[u8]) -> Result<u64> {
        let ops = vec![putfh(fh), nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![1 << FATTR4_SIZE] })];
        self.compound_ok(ops, |r| {
            let a = &result!(r, 1, OP_GETATTR, GETATTR4res)?.obj_attributes;
            let only_size = a.attrmask.first() == Some(&(1 << FATTR4_SIZE)) && a.attrmask.iter().skip(1).all(|w| *w == 0);
            match (only_size, <[u8; 8]>::try_from(&a.attr_vals[..])) {
                (true, Ok(b)) => Ok(u64::from_be_bytes(b)),
                _ => {
                    Err(Error::Protocol(format!("GETATTR(size) answered mask {:?} with {} bytes", a.attrmask, a.attr_vals.len())))
                }
            }
        })
    }
}

impl Conn {
    fn read_record(&mut self) -> Result<Vec<u8>> {
        loop {
            if self.pos < self.len {
                let (used, rec) = self
                    .records
                    .feed(&self.buf[self.pos..self.len])
                    .map_err(|e| Error::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                self.pos += used;
                if let Some(r) = rec {
                    return Ok(r);
                }
                continue;
            }
            let n = match self.stream.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let t = self.stream.read_timeout().ok().flatten().unwrap_or_default();
                    return Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, format!("no reply within {t:?}"))));
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")));
            }
            self.pos = 0;
            self.len = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot fake server: answers the first call with `reply(xid)`
    /// (raw bytes after the record mark is added, unless `raw`).
    fn fake_server(reply: impl FnOnce(u32) -> (Vec<u8>, bool) + Send + 'static) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut hdr = [0u8; 4];
            s.read_exact(&mut hdr).unwrap();
            let mut body = vec![0u8; (u32::from_be_bytes(hdr) & !LAST_FRAGMENT) as usize];
            s.read_exact(&mut body).unwrap();
            let xid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            let (bytes, raw) = reply(xid);
            if !raw {
                s.write_all(&pnfs_protocol::record::record_header(bytes.len())).unwrap();
            }
            let _ = s.write_all(&bytes);
            if raw && bytes.is_empty() {
                return; // close
            }
            // Hold the connection until the client gives up on it.
            let _ = s.read(&mut [0u8; 1]);
        });
        addr
    }

    fn accepted(xid: u32, body: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new();
        rpc::begin_accepted_reply(&mut e, xid, rpc::AcceptStat::Success);
        e.buf.extend_from_slice(body);
        e.into_inner()
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        let cases: Vec<(&str, Box<dyn FnOnce(u32) -> (Vec<u8>, bool) + Send>)> = vec![
            ("garbage record", Box::new(|_| (vec![0xff; 7], false))),
            ("truncated COMPOUND4res", Box::new(|xid| (accepted(xid, &[0, 0, 0, 0, 0, 0]), false))),
            ("unknown status", Box::new(|xid| (accepted(xid, &[0x7f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), false))),
            ("denied", Box::new(|xid| (rpc::auth_error_reply(xid, rpc::AuthStat::BadCred), false))),
            ("GARBAGE_ARGS", Box::new(|xid| (rpc::accepted_reply(xid, rpc::AcceptStat::GarbageArgs), false))),
            ("oversized record", Box::new(|_| ((LAST_FRAGMENT | 0x7fff_0000).to_be_bytes().to_vec(), true))),
            (
                "EXCHANGE_ID answered with a PUTFH result",
                Box::new(|xid| (accepted(xid, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 22, 0, 0, 0, 0]), false)),
            ),
            ("connection closed", Box::new(|_| (vec![], true))),
            ("silence", Box::new(|_| (vec![0, 0, 0], true))),
        ];
        for (what, reply) in cases {
            let addr = fake_server(reply);
            let mut c = Client {
                addr,
                callbacks: None,
                minor: 1,
                owner: b"t".to_vec(),
                verifier: [0; 8],
                timeout: Duration::from_millis(300),
                retry_for: Duration::from_secs(1),
                conn: None,
                xid: 1,
                session: SessionInfo { clientid: 0, sessionid: [0; 16], max_request: 0, max_response: 0, max_ops: 0, slots: 0 },
                seq: 0,
            };
            match c.reconnect() {
                Ok(()) => panic!("{what}: connected"),
                Err(e) => eprintln!("{what}: {e}"),
            }
        }
    }
}

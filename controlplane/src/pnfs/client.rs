//! Synchronous ONC RPC calls over TCP to the data servers' control program
//! (and, from tests and data servers, to the MDS's). Connections are pooled
//! per address: a caller takes one out, uses it, and puts it back, so
//! concurrent calls to one DS use separate connections and no lock is held
//! during a call. Every call is signed with the cluster key and every
//! reply's tag checked (pnfs_protocol::control_auth); each pooled
//! connection keeps its own signer (connection id and sequence numbers).

use pnfs_protocol::control_auth::{now_ms, CallSigner, ControlKeys, ReplyError};
use pnfs_protocol::record::{RecordReader, LAST_FRAGMENT};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode, XdrError};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest control reply accepted (READ data up to the MDS's max I/O).
const MAX_REPLY: usize = 32 << 20;
const IDLE_PER_ADDR: usize = 8;

pub fn bad_reply(e: XdrError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("undecodable control reply: {e}"))
}

/// Maps a control status to a result; errors carry errno-like kinds so the
/// MDS's io_err turns them into NFS errors.
pub fn status_result(s: ctl_status) -> io::Result<()> {
    match s {
        ctl_status::CTL_OK => Ok(()),
        ctl_status::CTL_NOENT => Err(io::Error::new(io::ErrorKind::NotFound, "data server: no such object")),
        ctl_status::CTL_NOSPC => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        ctl_status::CTL_STALE => Err(io::Error::from_raw_os_error(libc::ESTALE)),
        other => Err(io::Error::other(format!("data server answered {other:?}"))),
    }
}

/// One signed call on an open stream: sends the record, returns the result
/// bytes of an authentic accepted SUCCESS reply with the matching xid.
pub fn call_on(stream: &mut TcpStream, signer: &mut CallSigner, xid: u32, prog: u32, proc_: u32, args: &[u8]) -> io::Result<Vec<u8>> {
    let mut e = Encoder::with_buffer(Vec::with_capacity(args.len() + 128));
    e.put_u32(0);
    let sent = signer.encode_call(&mut e, xid, prog, PNFSCTL_VERSION, proc_, args, now_ms());
    let len = e.len() - 4;
    if len >= LAST_FRAGMENT as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "control call too large"));
    }
    e.patch_u32(0, LAST_FRAGMENT | len as u32);
    stream.write_all(&e.buf)?;
    let mut rr = RecordReader::new(MAX_REPLY);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "control peer closed the connection"));
        }
        let (used, rec) = rr.feed(&buf[..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let Some(rec) = rec else { continue };
        if used != n {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected bytes after a control reply"));
        }
        return match signer.open_reply(sent, &rec) {
            Ok(body) => Ok(body.to_vec()),
            Err(e @ ReplyError::Refused(_)) => Err(io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        };
    }
}

pub fn connect(addr: &str) -> io::Result<TcpStream> {
    connect_within(addr, CONNECT_TIMEOUT, IO_TIMEOUT)
}

/// [`connect`] with other bounds on the connect and on each read or write.
fn connect_within(addr: &str, connect: Duration, io: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, connect) {
            Ok(s) => {
                s.set_read_timeout(Some(io))?;
                s.set_write_timeout(Some(io))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

pub struct CtlClient {
    /// Pooled connections with the epoch their signer speaks for.
    idle: Mutex<HashMap<String, Vec<(TcpStream, CallSigner, u64)>>>,
    xid: AtomicU32,
    keys: ControlKeys,
    /// The MDS epoch calls speak for (data servers refuse older ones);
    /// changed by [`CtlClient::set_epoch`].
    epoch: AtomicU64,
}

impl CtlClient {
    pub fn new(keys: ControlKeys, epoch: u64) -> Self {
        let seed = u32::from_ne_bytes(pnfs_protocol::seal::random_bytes());
        CtlClient { idle: Mutex::new(HashMap::new()), xid: AtomicU32::new(seed), keys, epoch: AtomicU64::new(epoch) }
    }

    /// Calls `proc_` of `prog` at `addr`. A pooled connection that fails is
    /// dropped and the call is tried once more on a fresh one (control
    /// procedures are idempotent).
    pub fn call<A: XdrEncode>(&self, addr: &str, prog: u32, proc_: u32, args: &A) -> io::Result<Vec<u8>> {
        let mut e = Encoder::new();
        args.encode(&mut e).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let args = e.into_inner();
        let epoch = self.epoch();
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(addr).and_then(|v| v.pop());
        if let Some((mut s, mut signer, _)) = pooled.filter(|p| p.2 == epoch) {
            let xid = self.xid.fetch_add(1, Ordering::Relaxed);
            if let Ok(r) = call_on(&mut s, &mut signer, xid, prog, proc_, &args) {
                self.put_back(addr, (s, signer, epoch));
                return Ok(r);
            }
        }
        let mut s = connect(addr)?;
        let mut signer = CallSigner::new(self.keys.clone(), epoch);
        let xid = self.xid.fetch_add(1, Ordering::Relaxed);
        let r = call_on(&mut s, &mut signer, xid, prog, proc_, &args)?;
        self.put_back(addr, (s, signer, epoch));
        Ok(r)
    }

    /// A client with this one's key and epoch and an empty pool, for a
    /// thread of its own.
    pub fn caller(&self) -> CtlClient {
        CtlClient::new(self.keys.clone(), self.epoch())
    }

    /// The epoch calls speak for now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Speaks for `epoch` from now on (a cluster node that rejoined with a
    /// new boot count); pooled connections of the old one are dropped.
    pub fn set_epoch(&self, epoch: u64) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.store(epoch, Ordering::Release);
        idle.clear();
    }

    /// One call on a fresh connection (not pooled) that gives up at
    /// `deadline`, however slow the peer: for calls that must not wait on
    /// a hung data server longer than their caller can (CTL_FENCE).
    pub fn call_until<A: XdrEncode>(&self, addr: &str, prog: u32, proc_: u32, args: &A, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut e = Encoder::new();
        args.encode(&mut e).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut s = connect_within(addr, left, left)?;
        let mut signer = CallSigner::new(self.keys.clone(), self.epoch());
        let xid = self.xid.fetch_add(1, Ordering::Relaxed);
        call_on(&mut s, &mut signer, xid, prog, proc_, &e.into_inner())
    }

    fn put_back(&self, addr: &str, s: (TcpStream, CallSigner, u64)) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if s.2 != self.epoch() {
            return;
        }
        let v = idle.entry(addr.to_string()).or_default();
        if v.len() < IDLE_PER_ADDR {
            v.push(s);
        }
    }

    /// Drops pooled connections to `addr` (its DS re-registered).
    pub fn forget(&self, addr: &str) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }
}

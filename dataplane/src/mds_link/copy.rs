//! Object copies between data servers (the resilver's data mover):
//! CTL_PROC_OBJ_COPY asks this DS to pull a range of an object from another
//! DS's control listener and write it into its own object; the data never
//! passes through the MDS.
//!
//! - The pull: CTL_PROC_OBJ_VERSION_GET once (the source must carry the
//!   version the MDS expects, before anything is written here), then
//!   CTL_PROC_OBJ_READ_SPARSE per chunk (`ds.copy_chunk_bytes`): data
//!   segments only, so holes cost nothing on the wire and stay holes here
//!   (ranges the source has as holes are zeroed here, punched on files).
//!   Every reply names the source's version; a change aborts the copy
//!   (COPY_SOURCE_VERSION). Calls are signed with the DS-to-DS keys
//!   ([`ControlKeys::for_ds_peers`]), which the source accepts for those two
//!   reads only.
//! - One OBJ_COPY call copies until its range is done or its deadline
//!   passed, and answers where it got to (`ccr_next`): the MDS drives the
//!   ranges, so no call holds a control thread for long and a lost reply
//!   costs one range. With `cca_finish`, once the range is done the object
//!   gets the source's size, its data is made durable, and only then does
//!   it take the expected version (the stale-copy rule: a copy interrupted
//!   anywhere before keeps its old version, and the MDS never serves a copy
//!   whose version is below the file's).
//! - Pipelined: the request for the next chunk goes out before this one is
//!   written, so the source reads while this DS writes.
//! - Bounds: `ds.copy_max_concurrent` copies at once (more: COPY_BUSY), each
//!   holding two receive buffers of a chunk from one pool; one token bucket
//!   for all of them (`ds.copy_bytes_per_sec`). Copies run on the control
//!   listener's blocking pool, never on a reactor; their writes are the
//!   control program's plain buffered writes.

use super::calls::obj_create;
use crate::ds::Ds;
use crate::fh::DsFh;
use crate::stats::bump;
use pnfs_protocol::control_auth::{now_ms, CallSigner, ControlKeys, ReplyError, SentCall};
use pnfs_protocol::record::{decode_fragment_header, LAST_FRAGMENT};
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::encode_to_vec;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A copy call answers after at most this long, whatever deadline it names:
/// below the 10 s a CTL_FENCE waits for the fenced node's running calls.
pub const MAX_COPY_CALL: Duration = Duration::from_secs(8);
const MIN_COPY_CALL: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A source that sends nothing for this long is taken for dead.
const SOURCE_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Reply bytes beyond the data: RPC header, tag, the result's fields and
/// every segment's header.
const REPLY_OVERHEAD: usize = 64 * 1024;
/// The smallest request under a low rate limit.
const MIN_REQUEST: u64 = 64 * 1024;

/// A token bucket over the bytes all copies of this DS receive.
pub struct Throttle {
    rate: u64,
    burst: f64,
    /// (tokens, last refill); tokens go negative by what a caller must wait for.
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `rate` bytes per second, 0 = unlimited; bursts of a quarter second.
    pub fn new(rate: u64) -> Throttle {
        let burst = rate as f64 / 4.0;
        Throttle { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes `n` bytes' worth; how long the caller must sleep to stay
    /// within the rate.
    pub fn take(&self, n: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate as f64;
        s.0 = (s.0 + refill).min(self.burst) - n as f64;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate as f64)
        }
    }
}

/// The copies running on this DS: admission, buffers, the throttle.
pub struct Copier {
    max: usize,
    chunk: usize,
    running: AtomicUsize,
    /// Receive buffer pairs of finished copies.
    buffers: Mutex<Vec<[Vec<u8>; 2]>>,
    throttle: Throttle,
    /// Bytes per request: the chunk, smaller under a low rate so a request
    /// never waits seconds for its tokens.
    request: u64,
}

/// One admitted copy: its buffers go back to the pool on drop.
struct Running<'a> {
    copier: &'a Copier,
    bufs: [Vec<u8>; 2],
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.bufs);
        self.copier.buffers.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
        self.copier.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Copier {
    pub fn new(cfg: &crate::DsConfig) -> Copier {
        let chunk = cfg.copy_chunk_bytes as u64;
        let request = match cfg.copy_bytes_per_sec {
            0 => chunk,
            r => (r / 4 / 4096 * 4096).clamp(MIN_REQUEST, chunk),
        };
        Copier {
            max: cfg.copy_max_concurrent,
            chunk: cfg.copy_chunk_bytes as usize,
            running: AtomicUsize::new(0),
            buffers: Mutex::new(Vec::new()),
            throttle: Throttle::new(cfg.copy_bytes_per_sec),
            request,
        }
    }

    /// Copies running now.
    pub fn in_flight(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    fn admit(&self) -> Option<Running<'_>> {
        let mut n = self.running.load(Ordering::Acquire);
        loop {
            if n >= self.max {
                return None;
            }
            match self.running.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let bufs = self.buffers.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
        Some(Running { copier: self, bufs })
    }

    /// The largest reply a source may send us.
    fn max_reply(&self) -> usize {
        self.chunk + REPLY_OVERHEAD
    }
}

/// Why a call to the source failed.
#[derive(Debug)]
enum PeerError {
    /// No connection, a timeout, or the connection broke.
    Unreachable(io::Error),
    /// The source refused the call (AUTH_ERROR: a wrong key) or its reply
    /// did not check.
    Refused(String),
    /// A reply we cannot use.
    Garbage(String),
}

impl PeerError {
    fn status(&self) -> ctl_copy_status {
        match self {
            PeerError::Unreachable(_) => ctl_copy_status::COPY_SOURCE_UNREACHABLE,
            PeerError::Refused(_) => ctl_copy_status::COPY_SOURCE_REFUSED,
            PeerError::Garbage(_) => ctl_copy_status::COPY_SOURCE_ERROR,
        }
    }
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Unreachable(e) => write!(f, "unreachable: {e}"),
            PeerError::Refused(why) => write!(f, "refused: {why}"),
            PeerError::Garbage(why) => write!(f, "bad reply: {why}"),
        }
    }
}

/// A connection to the source's control listener, signed with the peer keys.
/// Replies are read into buffers the caller gives, so it can hold one
/// reply's data while the next arrives.
struct PeerConn {
    stream: TcpStream,
    signer: CallSigner,
    xid: u32,
    max_reply: usize,
}

impl PeerConn {
    fn connect(addr: &str, keys: ControlKeys, max_reply: usize) -> Result<PeerConn, PeerError> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to nothing"));
        for a in addr.to_socket_addrs().map_err(PeerError::Unreachable)? {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let setup = || -> io::Result<()> {
                        stream.set_nodelay(true)?;
                        stream.set_read_timeout(Some(SOURCE_IO_TIMEOUT))?;
                        stream.set_write_timeout(Some(SOURCE_IO_TIMEOUT))
                    };
                    setup().map_err(PeerError::Unreachable)?;
                    let xid = u32::from_be_bytes(crate::ds::random_bytes::<4>());
                    return Ok(PeerConn { stream, signer: CallSigner::new(keys, 0), xid, max_reply });
                }
                Err(e) => last = e,
            }
        }
        Err(PeerError::Unreachable(last))
    }

    /// Sends one call; [`PeerConn::receive`] takes its reply.
    fn send(&mut self, proc_: u32, args: &impl XdrEncode) -> Result<SentCall, PeerError> {
        self.xid = self.xid.wrapping_add(1);
        let args = encode_to_vec(args).map_err(|e| PeerError::Garbage(e.to_string()))?;
        let mut e = Encoder::new();
        e.put_u32(0);
        let sent = self.signer.encode_call(&mut e, self.xid, PNFSCTL_DS_PROGRAM, PNFSCTL_VERSION, proc_, &args, now_ms());
        let len = e.len() - 4;
        e.patch_u32(0, LAST_FRAGMENT | len as u32);
        self.stream.write_all(&e.buf).map_err(PeerError::Unreachable)?;
        Ok(sent)
    }

    /// The result bytes of the authentic reply to `sent`, read into `buf`.
    fn receive<'a>(&mut self, sent: SentCall, buf: &'a mut Vec<u8>) -> Result<&'a [u8], PeerError> {
        loop {
            let n = self.read_record(buf)?;
            match self.signer.open_reply(sent, &buf[..n]) {
                Err(ReplyError::OtherXid) => continue,
                Err(ReplyError::Refused(why)) => return Err(PeerError::Refused(why)),
                Err(ReplyError::Forged) => return Err(PeerError::Refused("reply tag does not check (another cluster key?)".into())),
                Err(ReplyError::Garbage) => return Err(PeerError::Garbage("not an RPC reply".into())),
                Ok(body) => {
                    // The body is the record's tail.
                    let at = n - body.len();
                    return Ok(&buf[at..n]);
                }
            }
        }
    }

    fn call<'a>(&mut self, proc_: u32, args: &impl XdrEncode, buf: &'a mut Vec<u8>) -> Result<&'a [u8], PeerError> {
        let sent = self.send(proc_, args)?;
        self.receive(sent, buf)
    }

    /// Reads one record into `buf` (fragments joined, bounded by
    /// `max_reply` before any of it is read); its length.
    fn read_record(&mut self, buf: &mut Vec<u8>) -> Result<usize, PeerError> {
        let mut len = 0usize;
        loop {
            let mut h = [0u8; 4];
            self.stream.read_exact(&mut h).map_err(PeerError::Unreachable)?;
            let f = decode_fragment_header(h);
            let total = len.checked_add(f.len).filter(|t| *t <= self.max_reply).ok_or_else(|| {
                PeerError::Garbage(format!("reply of more than {} bytes", self.max_reply))
            })?;
            if buf.len() < total {
                // Grows once per pooled buffer: later copies reuse it.
                buf.resize(total, 0);
            }
            self.stream.read_exact(&mut buf[len..total]).map_err(PeerError::Unreachable)?;
            len = total;
            if f.last {
                return Ok(len);
            }
        }
    }
}

fn decode<'a, T: XdrDecode<'a>>(body: &'a [u8]) -> Result<T, PeerError> {
    let mut d = Decoder::new(body);
    T::decode(&mut d).map_err(|e| PeerError::Garbage(e.to_string()))
}

fn dest_status(e: &io::Error) -> ctl_copy_status {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ctl_copy_status::COPY_DEST_NOSPC,
        Some(libc::EFBIG) | Some(libc::EINVAL) => ctl_copy_status::COPY_INVAL,
        _ => {
            log::warn!("object copy: writing the destination: {e}");
            ctl_copy_status::COPY_DEST_IO
        }
    }
}

/// What one copy call got to.
struct Progress {
    next: u64,
    done: bool,
    source_size: u64,
    bytes: u64,
}

/// CTL_PROC_OBJ_COPY (runs on the control listener's blocking pool).
pub(super) fn obj_copy(ds: &Ds, a: &ctl_copy_args) -> ctl_copy_res {
    let mut res = ctl_copy_res {
        ccr_status: ctl_copy_status::COPY_OK,
        ccr_next: a.cca_offset,
        ccr_done: false,
        ccr_source_size: 0,
        ccr_bytes: 0,
        ccr_version: 0,
    };
    let dst = match super::calls::object_fh(ds, &a.cca_fh) {
        Ok(fh) if a.cca_offset <= i64::MAX as u64 && !a.cca_source.is_empty() && std::str::from_utf8(&a.cca_source).is_ok() => fh,
        _ => {
            res.ccr_status = ctl_copy_status::COPY_INVAL;
            return res;
        }
    };
    let Some(mut running) = ds.copier.admit() else {
        bump(&ds.stats.copy_failures, 1);
        res.ccr_status = ctl_copy_status::COPY_BUSY;
        return res;
    };
    bump(&ds.stats.copies_in_flight, 1);
    let res = copy_call(ds, a, &dst, &mut running.bufs, res);
    ds.stats.copies_in_flight.fetch_sub(1, Ordering::Relaxed);
    if res.ccr_status != ctl_copy_status::COPY_OK {
        bump(&ds.stats.copy_failures, 1);
    }
    res
}

/// [`obj_copy`] once admitted.
fn copy_call(ds: &Ds, a: &ctl_copy_args, dst: &DsFh, bufs: &mut [Vec<u8>; 2], mut res: ctl_copy_res) -> ctl_copy_res {
    let dst = *dst;
    let deadline = Instant::now() + Duration::from_millis(a.cca_deadline_ms as u64).clamp(MIN_COPY_CALL, MAX_COPY_CALL);
    match copy_range(ds, a, &dst, bufs, deadline) {
        Ok(p) => {
            res.ccr_next = p.next;
            res.ccr_source_size = p.source_size;
            res.ccr_bytes = p.bytes;
            res.ccr_done = p.done;
            if p.done && a.cca_finish {
                // The source's size, every byte durable, then the version.
                let fin = ds.store.truncate(&dst, p.source_size).and_then(|()| ds.store.set_version(&dst, a.cca_version));
                if let Err(e) = fin {
                    res.ccr_status = dest_status(&e);
                    res.ccr_done = false;
                } else {
                    bump(&ds.stats.copies_finished, 1);
                }
            }
        }
        Err((status, p)) => {
            res.ccr_status = status;
            res.ccr_next = p.next;
            res.ccr_source_size = p.source_size;
            res.ccr_bytes = p.bytes;
        }
    }
    res.ccr_version = ds.store.version(&dst).unwrap_or(0);
    res
}

/// Copies `[cca_offset, cca_offset + cca_count)` (cut at the source's end)
/// until done or `deadline`.
fn copy_range(ds: &Ds, a: &ctl_copy_args, dst: &DsFh, bufs: &mut [Vec<u8>; 2], deadline: Instant) -> Result<Progress, (ctl_copy_status, Progress)> {
    let mut p = Progress { next: a.cca_offset, done: false, source_size: 0, bytes: 0 };
    let source = std::str::from_utf8(&a.cca_source).unwrap_or("?");
    let peer = |e: PeerError, p: Progress| {
        log::warn!("object copy of {} from {source}: the source is {e}", dst.object_name());
        (e.status(), p)
    };
    // The destination: created when missing, never one newer than the copy.
    let have = match ds.store.version(dst) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match obj_create(ds, &a.cca_fh) {
            ctl_status::CTL_OK => 0,
            ctl_status::CTL_NOSPC => return Err((ctl_copy_status::COPY_DEST_NOSPC, p)),
            _ => return Err((ctl_copy_status::COPY_DEST_IO, p)),
        },
        Err(e) => return Err((dest_status(&e), p)),
    };
    if have > a.cca_version {
        log::warn!("object copy of {}: refused, this copy's version {have} is above the expected {}", dst.object_name(), a.cca_version);
        return Err((ctl_copy_status::COPY_DEST_NEWER, p));
    }
    let mut conn = match PeerConn::connect(source, ds.peer_keys.clone(), ds.copier.max_reply()) {
        Ok(c) => c,
        Err(e) => return Err(peer(e, p)),
    };
    let src_fh = ctl_obj_args { coa_fh: Opaque::borrowed(&a.cca_source_fh) };
    let v = match conn.call(CTL_PROC_OBJ_VERSION_GET, &src_fh, &mut bufs[0]).and_then(decode::<ctl_version_res>) {
        Ok(v) => v,
        Err(e) => return Err(peer(e, p)),
    };
    // The source answered; its status and version must do.
    let usable = |status: ctl_status, version: u64| match status {
        ctl_status::CTL_OK if version == a.cca_version => Ok(()),
        ctl_status::CTL_OK => Err(ctl_copy_status::COPY_SOURCE_VERSION),
        s => {
            log::warn!("object copy of {} from {source}: the source answered {s:?}", dst.object_name());
            Err(ctl_copy_status::COPY_SOURCE_ERROR)
        }
    };
    if let Err(s) = usable(v.cvr_status, v.cvr_version) {
        return Err((s, p));
    }
    p.source_size = v.cvr_size;
    let end = a.cca_offset.saturating_add(a.cca_count);
    let read = |conn: &mut PeerConn, at: u64| {
        let want = ds.copier.request.min(end - at) as u32;
        let args = ctl_read_args { cra_fh: Opaque::borrowed(&a.cca_source_fh), cra_offset: at, cra_count: want };
        conn.send(CTL_PROC_OBJ_READ_SPARSE, &args).map(|sent| (sent, want))
    };
    // The request in flight: (call, its offset, bytes asked).
    let mut ahead: Option<(SentCall, u64, u32)> = None;
    let mut turn = 0usize;
    loop {
        if p.next >= end.min(p.source_size) {
            p.done = true;
            return Ok(p);
        }
        if Instant::now() >= deadline {
            // A request still in flight is dropped with the connection.
            return Ok(p);
        }
        let (sent, at, want) = match ahead.take() {
            Some(x) => x,
            None => match read(&mut conn, p.next) {
                Ok((sent, want)) => (sent, p.next, want),
                Err(e) => return Err(peer(e, p)),
            },
        };
        debug_assert_eq!(at, p.next);
        let buf = &mut bufs[turn];
        turn ^= 1;
        let r = match conn.receive(sent, buf).and_then(decode::<ctl_read_sparse_res>) {
            Ok(r) => r,
            Err(e) => return Err(peer(e, p)),
        };
        if let Err(s) = usable(r.csp_status, r.csp_version) {
            return Err((s, p));
        }
        p.source_size = r.csp_size;
        if p.next >= r.csp_size {
            continue;
        }
        // The covered range must move forward and stay inside what we
        // asked for, its segments in order inside it.
        let covered = r.csp_end;
        let mut pos = p.next;
        let sane = covered > p.next
            && covered <= p.next + want as u64
            && r.csp_segs.iter().all(|s| {
                let ok = s.cds_offset >= pos && s.cds_offset.saturating_add(s.cds_data.len() as u64) <= covered;
                pos = s.cds_offset + s.cds_data.len() as u64;
                ok
            });
        if !sane {
            return Err(peer(PeerError::Garbage("segments outside the range asked for".into()), p));
        }
        // Ask for the next piece before writing this one: the source reads
        // it meanwhile.
        if covered < end.min(r.csp_size) && Instant::now() < deadline {
            match read(&mut conn, covered) {
                Ok((sent, want)) => ahead = Some((sent, covered, want)),
                Err(e) => return Err(peer(e, p)),
            }
        }
        let mut pos = p.next;
        let mut moved = 0u64;
        let mut write = || -> io::Result<()> {
            for s in r.csp_segs.iter() {
                if s.cds_offset > pos {
                    ds.store.zero_range(dst, pos, s.cds_offset - pos)?;
                }
                // Straight from the received record.
                ds.store.write_at(dst, s.cds_offset, &s.cds_data, false)?;
                pos = s.cds_offset + s.cds_data.len() as u64;
                moved += s.cds_data.len() as u64;
            }
            if pos < covered {
                ds.store.zero_range(dst, pos, covered - pos)?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            return Err((dest_status(&e), p));
        }
        bump(&ds.stats.copy_bytes, moved);
        p.bytes += moved;
        p.next = covered;
        let wait = ds.copier.throttle.take(moved);
        if !wait.is_zero() {
            std::thread::sleep(wait.min(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_makes_callers_wait_for_what_they_took_past_the_burst() {
        let t = Throttle::new(1 << 20);
        // A quarter second's burst is free; what goes beyond waits.
        assert_eq!(t.take(256 << 10), Duration::ZERO);
        let w = t.take(512 << 10);
        assert!(w >= Duration::from_millis(450) && w <= Duration::from_millis(520), "{w:?}");
        assert_eq!(Throttle::new(0).take(u64::MAX), Duration::ZERO, "0 is unlimited");
    }

    #[test]
    fn a_low_rate_asks_for_smaller_pieces() {
        let mut cfg = crate::DsConfig::new("c", "/tmp".into(), "127.0.0.1:1");
        assert_eq!(Copier::new(&cfg).request, 4 << 20);
        cfg.copy_bytes_per_sec = 1 << 20;
        assert_eq!(Copier::new(&cfg).request, 256 << 10);
        cfg.copy_bytes_per_sec = 65536;
        assert_eq!(Copier::new(&cfg).request, MIN_REQUEST);
    }

    #[test]
    fn admission_is_bounded_and_buffers_come_back() {
        let mut cfg = crate::DsConfig::new("c", "/tmp".into(), "127.0.0.1:1");
        cfg.copy_max_concurrent = 2;
        let c = Copier::new(&cfg);
        let mut a = c.admit().unwrap();
        a.bufs[1].resize(100, 0);
        let b = c.admit().unwrap();
        assert!(c.admit().is_none(), "a third copy is refused");
        assert_eq!(c.in_flight(), 2);
        drop((a, b));
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.buffers.lock().unwrap().iter().map(|b| b[1].len()).max(), Some(100), "buffers are pooled");
    }
}

//! One TCP connection with its own client ID and session whose slots carry
//! pipelined COMPOUNDs: up to `slots` requests outstanding, each behind a
//! SEQUENCE on its own slot with that slot's seqid; replies are matched to
//! slots by xid (the slot number is the xid's low bits).
//!
//! Hot path without allocation: each slot has its own request buffer, the
//! RPC call header after the xid is a template, a WRITE payload is sent from
//! the caller's buffer with writev, and replies land in one receive buffer
//! that is reused (a reply is valid until the next `recv`).

use pnfs_client::pnfs_protocol::rpc::{self, Message};
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::xdr::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SLOT_BITS: u32 = 12;
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// SEQUENCE result: opnum, status, sessionid, seqid, slotid, highest,
/// target highest, status flags.
const SEQ_RES_LEN: usize = 4 + 4 + 16 + 4 * 5;

pub type PResult<T> = Result<T, String>;

/// A reply taken by [`Pipe::recv`]: the slot it freed, the COMPOUND status,
/// and where the results after SEQUENCE start in the receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub slot: u16,
    /// COMPOUND status (raw nfsstat4).
    pub status: u32,
    /// SEQUENCE succeeded (otherwise `status` is its error).
    pub seq_ok: bool,
    start: usize,
    end: usize,
}

pub struct Pipe {
    pub addr: SocketAddr,
    stream: TcpStream,
    minor: u32,
    pub clientid: u64,
    sessionid: [u8; 16],
    /// Slots the server granted (at most what was asked for).
    pub slots: usize,
    pub max_request: u32,
    pub max_response: u32,
    seq: Vec<u32>,
    /// xid outstanding on each slot (0: free).
    xids: Vec<u32>,
    free: Vec<u16>,
    gen: u32,
    rpc_tmpl: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    pub outstanding: usize,
    /// COMPOUNDs sent (session setup not included).
    pub sent: u64,
    /// Client owner and verifier of its EXCHANGE_ID.
    owner: (Vec<u8>, [u8; 8]),
}

fn owner() -> (Vec<u8>, [u8; 8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    (format!("pnfs-bench/{}/{n}/{t:x}", std::process::id()).into_bytes(), (t ^ n.rotate_left(40)).to_be_bytes())
}

fn io_err(what: &str, addr: &SocketAddr, e: io::Error) -> String {
    format!("{addr}: {what}: {e}")
}

/// OPEN (seqid 0, deny none) of `name` in the current filehandle by open
/// owner `owner` of `clientid`.
pub fn open_args<'a>(clientid: u64, owner: &'a [u8], access: u32, how: openflag4<'a>, name: &'a [u8]) -> nfs_argop4<'a> {
    nfs_argop4::OP_OPEN(OPEN4args {
        seqid: 0,
        share_access: access,
        share_deny: OPEN4_SHARE_DENY_NONE,
        owner: state_owner4 { clientid, owner: Opaque::borrowed(owner) },
        openhow: how,
        claim: open_claim4::CLAIM_NULL(Opaque::borrowed(name)),
    })
}

/// OPEN4_CREATE UNCHECKED4 with mode 0644, so that other clients (and
/// people) can read the files the benchmark makes.
pub fn create_0644() -> openflag4<'static> {
    const MODE: [u8; 4] = 0o644u32.to_be_bytes();
    openflag4::OPEN4_CREATE(createhow4::UNCHECKED4(fattr4 { attrmask: vec![0, 1 << (FATTR4_MODE - 32)], attr_vals: Opaque::borrowed(&MODE) }))
}

/// The open stateid and the filehandle in the results of a COMPOUND with
/// OPEN and GETFH (each None when that op failed or did not run).
pub fn open_results(results: &[u8]) -> (Option<stateid4>, Option<Vec<u8>>) {
    let (mut sid, mut fh) = (None, None);
    let mut d = Decoder::new(results);
    while d.remaining() > 0 {
        match nfs_resop4::decode(&mut d) {
            Ok(nfs_resop4::OP_OPEN(OPEN4res::NFS4_OK(o))) => sid = Some(o.stateid.clone()),
            Ok(nfs_resop4::OP_GETFH(GETFH4res::NFS4_OK(g))) => fh = Some(g.object.to_vec()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (sid, fh)
}

pub fn status_name(s: u32) -> String {
    match nfsstat4::from_i32(s as i32) {
        Some(st) => format!("{st:?}"),
        None => format!("status {s}"),
    }
}

impl Pipe {
    /// Connects and sets up a session asking for `want_slots` slots and
    /// room for `io` bytes of READ/WRITE payload. `reclaim_complete` for a
    /// metadata server (its grace period need not wait for us).
    pub fn connect(addr: SocketAddr, minor: u32, want_slots: usize, io: u64, reclaim_complete: bool) -> PResult<Pipe> {
        Self::connect_owned(addr, minor, want_slots, io, reclaim_complete, owner())
    }

    /// Like [`Pipe::connect`] (to a data server), as the same client as
    /// `mds`: data servers accept a stateid only from the client the MDS
    /// gave it to (the same client owner).
    pub fn connect_as(addr: SocketAddr, mds: &Pipe, want_slots: usize, io: u64) -> PResult<Pipe> {
        Self::connect_owned(addr, mds.minor, want_slots, io, false, mds.owner.clone())
    }

    fn connect_owned(
        addr: SocketAddr,
        minor: u32,
        want_slots: usize,
        io: u64,
        reclaim_complete: bool,
        owner: (Vec<u8>, [u8; 8]),
    ) -> PResult<Pipe> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| io_err("connect", &addr, e))?;
        stream.set_nodelay(true).map_err(|e| io_err("TCP_NODELAY", &addr, e))?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| io_err("timeout", &addr, e))?;
        let mut tmpl = Encoder::new();
        rpc::begin_call(&mut tmpl, 0, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
        let rpc_tmpl = tmpl.into_inner()[4..].to_vec();
        let room = (io.max(64 * 1024) + 16 * 1024) as u32;
        let want_slots = want_slots.clamp(1, MAX_SLOTS);
        let mut p = Pipe {
            addr,
            stream,
            minor,
            clientid: 0,
            sessionid: [0; 16],
            slots: 1,
            max_request: room,
            max_response: room,
            seq: vec![0],
            xids: vec![0],
            free: vec![0],
            gen: 1,
            rpc_tmpl,
            bufs: vec![],
            rbuf: vec![0; room as usize + 64 * 1024],
            rstart: 0,
            rend: 0,
            outstanding: 0,
            sent: 0,
            owner,
        };
        let (own, verf) = p.owner.clone();
        let eid = nfs_argop4::OP_EXCHANGE_ID(EXCHANGE_ID4args {
            eia_clientowner: client_owner4 { co_verifier: verf, co_ownerid: Opaque::borrowed(&own) },
            eia_flags: 0,
            eia_state_protect: state_protect4_a::SP4_NONE,
            eia_client_impl_id: vec![],
        });
        let body = p.call_sessionless(&eid)?;
        let res = decode_compound(&body)?;
        let (clientid, csseq) = match res.resarray.first() {
            Some(nfs_resop4::OP_EXCHANGE_ID(EXCHANGE_ID4res::NFS4_OK(ok))) => (ok.eir_clientid, ok.eir_sequenceid),
            _ => return Err(format!("{addr}: EXCHANGE_ID failed: {}", status_name(res.status as u32))),
        };
        let chan = |slots: u32, size: u32| channel_attrs4 {
            ca_headerpadsize: 0,
            ca_maxrequestsize: size,
            ca_maxresponsesize: size,
            ca_maxresponsesize_cached: if slots > 1 { 8 * 1024 } else { 0 },
            ca_maxoperations: 16,
            ca_maxrequests: slots,
            ca_rdma_ird: vec![],
        };
        let cs = nfs_argop4::OP_CREATE_SESSION(CREATE_SESSION4args {
            csa_clientid: clientid,
            csa_sequence: csseq,
            csa_flags: 0,
            csa_fore_chan_attrs: chan(want_slots as u32, room),
            csa_back_chan_attrs: chan(1, 4096),
            csa_cb_program: 0x4000_0000,
            csa_sec_parms: vec![callback_sec_parms4::AUTH_NONE],
        });
        let body = p.call_sessionless(&cs)?;
        let res = decode_compound(&body)?;
        let ok = match res.resarray.first() {
            Some(nfs_resop4::OP_CREATE_SESSION(CREATE_SESSION4res::NFS4_OK(ok))) => ok,
            _ => return Err(format!("{addr}: CREATE_SESSION failed: {}", status_name(res.status as u32))),
        };
        let f = &ok.csr_fore_chan_attrs;
        if f.ca_maxrequests == 0 || f.ca_maxoperations < 4 {
            return Err(format!("{addr}: unusable session: {} slots, {} operations", f.ca_maxrequests, f.ca_maxoperations));
        }
        p.clientid = clientid;
        p.sessionid = ok.csr_sessionid;
        p.slots = (f.ca_maxrequests as usize).min(want_slots);
        p.max_request = f.ca_maxrequestsize;
        p.max_response = f.ca_maxresponsesize;
        p.seq = vec![0; p.slots];
        p.xids = vec![0; p.slots];
        p.free = (0..p.slots as u16).rev().collect();
        p.bufs = (0..p.slots).map(|_| Vec::with_capacity(512)).collect();
        if reclaim_complete {
            let r = p.call(&[nfs_argop4::OP_RECLAIM_COMPLETE(RECLAIM_COMPLETE4args { rca_one_fs: false })])?;
            let st = decode_compound(&r)?.status;
            if !matches!(st, nfsstat4::NFS4_OK | nfsstat4::NFS4ERR_COMPLETE_ALREADY) {
                return Err(format!("{addr}: RECLAIM_COMPLETE failed: {st:?}"));
            }
        }
        Ok(p)
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn has_free_slot(&self) -> bool {
        !self.free.is_empty()
    }

    /// Largest READ/WRITE payload the session's limits allow (a WRITE's
    /// headers with a 128-byte filehandle take about 350 bytes).
    pub fn max_io(&self) -> u64 {
        (self.max_request.min(self.max_response) as u64).saturating_sub(512)
    }

    fn next_xid(&mut self, slot: u16) -> u32 {
        self.gen = self.gen.wrapping_add(1).max(1);
        (self.gen << SLOT_BITS) | slot as u32
    }

    /// Takes a free slot and writes the record mark placeholder, RPC call
    /// header, COMPOUND header for `nops` operations after SEQUENCE and the
    /// SEQUENCE into its buffer; append the operations with [`Pipe::buf`].
    pub fn start(&mut self, nops: u32) -> Option<u16> {
        let slot = self.free.pop()?;
        let i = slot as usize;
        self.seq[i] = self.seq[i].wrapping_add(1);
        let xid = self.next_xid(slot);
        self.xids[i] = xid;
        let highest = (self.slots - 1) as u32;
        let b = &mut self.bufs[i];
        b.clear();
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&xid.to_be_bytes());
        b.extend_from_slice(&self.rpc_tmpl);
        for w in [0, self.minor, nops + 1, nfs_opnum4::OP_SEQUENCE as u32] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend_from_slice(&self.sessionid);
        for w in [self.seq[i], slot as u32, highest, 0] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        Some(slot)
    }

    pub fn buf(&mut self, slot: u16) -> &mut Vec<u8> {
        &mut self.bufs[slot as usize]
    }

    /// Appends generated operations (setup paths; the hot path appends raw words).
    pub fn push_ops(&mut self, slot: u16, ops: &[nfs_argop4]) -> PResult<()> {
        let mut e = Encoder::with_buffer(std::mem::take(&mut self.bufs[slot as usize]));
        let r = ops.iter().try_for_each(|op| op.encode(&mut e));
        self.bufs[slot as usize] = e.into_inner();
        r.map_err(|e| format!("encoding: {e}"))
    }

    /// Sends the request built in `slot`'s buffer followed by `payload`
    /// (an opaque's bytes, padded here to 4).
    pub fn send(&mut self, slot: u16, payload: &[u8]) -> PResult<()> {
        let pad = [0u8; 4];
        let padn = (4 - payload.len() % 4) % 4;
        let b = &mut self.bufs[slot as usize];
        let len = b.len() - 4 + payload.len() + padn;
        b[..4].copy_from_slice(&(0x8000_0000u32 | len as u32).to_be_bytes());
        let parts = [&b[..], payload, &pad[..padn]];
        write_all_vectored(&mut self.stream, &parts).map_err(|e| io_err("send", &self.addr, e))?;
        self.outstanding += 1;
        self.sent += 1;
        Ok(())
    }

    /// Returns the reply bytes after the SEQUENCE result.
    pub fn results(&self, r: &Reply) -> &[u8] {
        &self.rbuf[r.start..r.end]
    }

    /// Reads replies until one for an outstanding slot arrives; frees that
    /// slot (its seqid stays consumed only when SEQUENCE succeeded).
    pub fn recv(&mut self) -> PResult<Reply> {
        loop {
            let (start, len) = self.next_record().map_err(|e| io_err("receive", &self.addr, e))?;
            let rec = &self.rbuf[start..start + len];
            let (xid, body) = match rpc::parse_message(rec) {
                Ok(Message::Reply { xid, accepted: Some(0), body }) => (xid, body),
                Ok(Message::Reply { xid, accepted, .. }) => {
                    return Err(format!("{}: RPC call {xid:#x} not accepted ({accepted:?})", self.addr))
                }
                Ok(Message::Call { .. }) => continue, // no back channel was asked for
                Err(e) => return Err(format!("{}: unparseable RPC reply: {e:?}", self.addr)),
            };
            let slot = (xid & (MAX_SLOTS as u32 - 1)) as usize;
            if slot >= self.slots || self.xids[slot] != xid {
                continue; // not ours (a late reply): skip
            }
            let body_at = start + (body.as_ptr() as usize - rec.as_ptr() as usize);
            let mut d = Decoder::new(body);
            let parsed = (|| {
                let status = d.get_u32()?;
                let tag = d.get_u32()? as usize;
                d.take(tag.div_ceil(4) * 4)?;
                let n = d.get_u32()?;
                if n == 0 {
                    return Ok((status, false));
                }
                let _op = d.get_u32()?;
                let seq_status = d.get_u32()?;
                if seq_status != 0 {
                    return Ok((seq_status, false));
                }
                d.take(SEQ_RES_LEN - 8)?;
                Ok::<_, pnfs_client::pnfs_protocol::XdrError>((status, true))
            })();
            let (status, seq_ok) = parsed.map_err(|e| format!("{}: undecodable COMPOUND reply: {e}", self.addr))?;
            let start = body_at + d.position();
            let end = body_at + body.len();
            self.xids[slot] = 0;
            if !seq_ok {
                self.seq[slot] = self.seq[slot].wrapping_sub(1);
            }
            self.free.push(slot as u16);
            self.outstanding -= 1;
            return Ok(Reply { slot: slot as u16, status, seq_ok, start, end });
        }
    }

    /// True when a whole record (every fragment) is buffered, so `recv`
    /// returns without waiting for the network.
    pub fn buffered(&self) -> bool {
        let mut at = self.rstart;
        loop {
            if self.rend - at < 4 {
                return false;
            }
            let mark = u32::from_be_bytes(self.rbuf[at..at + 4].try_into().unwrap());
            let end = at + 4 + (mark & 0x7fff_ffff) as usize;
            if end > self.rend {
                return false;
            }
            if mark & 0x8000_0000 != 0 {
                return true;
            }
            at = end;
        }
    }

    /// Reads what the socket has, without waiting: a job with several
    /// connections must drain each as its data arrives, or one connection
    /// (a slow link, a big reply) holds the others' data in their socket
    /// buffers until their windows close. Ok(false) when nothing was there.
    pub fn pump(&mut self) -> io::Result<bool> {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rend == self.rbuf.len() {
            return Ok(false); // a whole record's worth is buffered
        }
        let room = &mut self.rbuf[self.rend..];
        // SAFETY: a valid socket and a writable buffer of `room.len()` bytes.
        let n = unsafe { libc::recv(self.stream.as_raw_fd(), room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        self.rend += n as usize;
        Ok(true)
    }

    /// Assembles the next record in the receive buffer: (start, length).
    fn next_record(&mut self) -> io::Result<(usize, usize)> {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        let mut have = 0usize; // record bytes assembled after the first header
        loop {
            self.fill(4 + have + 4)?;
            let h = self.rstart + 4 + have - 4;
            let mark = u32::from_be_bytes(self.rbuf[h..h + 4].try_into().unwrap());
            let (last, flen) = (mark & 0x8000_0000 != 0, (mark & 0x7fff_ffff) as usize);
            if have > 0 {
                // Drop a continuation fragment's header to keep the record contiguous.
                self.rbuf.copy_within(h + 4..self.rend, h);
                self.rend -= 4;
                have -= 4;
            }
            self.fill(4 + have + flen)?;
            have += flen;
            if last {
                let start = self.rstart + 4;
                self.rstart = start + have;
                return Ok((start, have));
            }
            have += 4;
        }
    }

    /// Reads until `n` bytes from rstart are buffered.
    fn fill(&mut self, n: usize) -> io::Result<()> {
        if n > self.rbuf.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("record of {n} bytes exceeds the buffer")));
        }
        if self.rstart + n > self.rbuf.len() {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        while self.rend - self.rstart < n {
            let got = self.stream.read(&mut self.rbuf[self.rend..])?;
            if got == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            self.rend += got;
        }
        Ok(())
    }

    fn call_sessionless(&mut self, op: &nfs_argop4) -> PResult<Vec<u8>> {
        let xid = self.next_xid(0);
        let mut e = Encoder::new();
        e.put_u32(0);
        e.put_u32(xid);
        e.buf.extend_from_slice(&self.rpc_tmpl);
        e.put_u32(0);
        e.put_u32(self.minor);
        e.put_u32(1);
        op.encode(&mut e).map_err(|e| e.to_string())?;
        let len = e.len() - 4;
        e.patch_u32(0, 0x8000_0000 | len as u32);
        self.stream.write_all(&e.buf).map_err(|e| io_err("send", &self.addr, e))?;
        loop {
            let (start, len) = self.next_record().map_err(|e| io_err("receive", &self.addr, e))?;
            match rpc::parse_message(&self.rbuf[start..start + len]) {
                Ok(Message::Reply { xid: x, accepted: Some(0), body }) if x == xid => return Ok(body.to_vec()),
                Ok(Message::Reply { xid: x, accepted, .. }) if x == xid => {
                    return Err(format!("{}: RPC call not accepted ({accepted:?})", self.addr))
                }
                Ok(_) => continue,
                Err(e) => return Err(format!("{}: unparseable RPC reply: {e:?}", self.addr)),
            }
        }
    }

    /// Ends this client on the server (DESTROY_SESSION, DESTROY_CLIENTID),
    /// so that its record does not linger until its lease expires (the
    /// server's reaping would land in a later measurement). Call with
    /// nothing outstanding and no state held (CLOSE first).
    pub fn destroy_client(&mut self) -> PResult<()> {
        if self.outstanding != 0 {
            return Err("internal: destroy_client with requests outstanding".into());
        }
        let ds = nfs_argop4::OP_DESTROY_SESSION(DESTROY_SESSION4args { dsa_sessionid: self.sessionid });
        let st = decode_compound(&self.call_sessionless(&ds)?)?.status;
        if st != nfsstat4::NFS4_OK {
            return Err(format!("{}: DESTROY_SESSION: {st:?}", self.addr));
        }
        let dc = nfs_argop4::OP_DESTROY_CLIENTID(DESTROY_CLIENTID4args { dca_clientid: self.clientid });
        let st = decode_compound(&self.call_sessionless(&dc)?)?.status;
        if st != nfsstat4::NFS4_OK {
            return Err(format!("{}: DESTROY_CLIENTID: {st:?}", self.addr));
        }
        Ok(())
    }

    /// One COMPOUND (`ops` after SEQUENCE) with nothing else outstanding;
    /// NFS4ERR_DELAY/GRACE are retried for up to 60 s. Returns the whole
    /// COMPOUND4res (decode with [`decode_compound`]).
    pub fn call(&mut self, ops: &[nfs_argop4]) -> PResult<Vec<u8>> {
        if self.outstanding != 0 {
            return Err("internal: synchronous call with requests outstanding".into());
        }
        let t = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let slot = self.start(ops.len() as u32).ok_or("no free slot")?;
            self.push_ops(slot, ops)?;
            self.send(slot, &[])?;
            let r = self.recv()?;
            let retry = r.status == nfsstat4::NFS4ERR_DELAY as u32 || r.status == nfsstat4::NFS4ERR_GRACE as u32;
            if !retry || t.elapsed() > Duration::from_secs(60) {
                if !r.seq_ok {
                    return Err(format!("{}: SEQUENCE failed: {}", self.addr, status_name(r.status)));
                }
                // Re-wrap as a COMPOUND4res: status, empty tag, results.
                let res = self.results(&r);
                let n = ops.len() as u32 + 1;
                let mut out = Vec::with_capacity(res.len() + 64);
                out.extend_from_slice(&r.status.to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes());
                // The result count is unknown after a failure: count what decodes.
                out.extend_from_slice(&0u32.to_be_bytes());
                out.extend_from_slice(res);
                return Ok(fix_count(out, n));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// Patches the result count of a re-wrapped COMPOUND4res: the number of
/// results (after SEQUENCE) that decode, at most `max - 1`.
fn fix_count(mut out: Vec<u8>, max: u32) -> Vec<u8> {
    let mut n = 0u32;
    {
        let mut d = Decoder::new(&out[12..]);
        while n + 1 < max && d.remaining() > 0 && nfs_resop4::decode(&mut d).is_ok() {
            n += 1;
        }
    }
    out[8..12].copy_from_slice(&n.to_be_bytes());
    out
}

/// Decodes a COMPOUND4res (setup paths).
pub fn decode_compound(body: &[u8]) -> PResult<COMPOUND4res<'_>> {
    COMPOUND4res::decode(&mut Decoder::new(body).with_max_depth(1024)).map_err(|e| format!("undecodable COMPOUND reply: {e}"))
}

fn write_all_vectored(s: &mut TcpStream, parts: &[&[u8]]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        // Rebuild the slice list past `done` (at most 3 parts: no allocation).
        let mut skip = done;
        let mut v: [IoSlice; 3] = [IoSlice::new(&[]), IoSlice::new(&[]), IoSlice::new(&[])];
        let mut k = 0;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            v[k] = IoSlice::new(&p[skip..]);
            skip = 0;
            k += 1;
        }
        match s.write_vectored(&v[..k]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits until one of `fds` is readable; returns its index (searching
/// from `rot`, so that no connection starves the others).
pub fn poll_readable(fds: &[RawFd], pfds: &mut Vec<libc::pollfd>, rot: usize) -> io::Result<usize> {
    pfds.clear();
    pfds.extend(fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
    loop {
        // SAFETY: pfds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 60_000) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply within 60 s"));
        }
        let n = pfds.len();
        if let Some(i) = (0..n).map(|k| (k + rot) % n).find(|&i| pfds[i].revents != 0) {
            return Ok(i);
        }
    }
}

//! Receiving RPC records, with zero-copy WRITE payloads.
//!
//! A record is read fragment by fragment ([`RecordIn`]) into the
//! connection's ordinary buffer, except that a large `SEQUENCE, PUTFH,
//! WRITE, ...` call has its WRITE data received by recv() straight into an
//! aligned buffer from the reactor's pool ([`read_call`]):
//!
//! 1. the call header and COMPOUND prefix are read with exact-size reads
//!    that never go past the start of the WRITE data, parsed again after
//!    each read ([`parse_write_prefix`] says how many bytes it needs at
//!    least, so there are 2 or 3 reads for a Linux client's header);
//! 2. the data goes into the pool buffer, its XDR pad is dropped;
//! 3. the data length in the header buffer is set to 0 and the rest of the
//!    record (later ops) follows it there, so the ordinary COMPOUND decoder
//!    sees a WRITE with no data; the data travels beside the record as a
//!    [`Detached`] payload, which the WRITE op uses instead.
//!
//! Before a pool buffer is taken, the reactor checks the WRITE's session,
//! handle and stateid as sent ([`WriteHead`]); refused, the data is read in
//! [`GROW_STEP`] pieces and dropped, and the WRITE goes on with no data
//! (its COMPOUND answers BADSESSION, BAD_STATEID... or DELAY), so a sender
//! that never finishes its data holds no pool buffer.
//!
//! Any other shape, a prefix that does not parse, a data length outside
//! (0, max I/O], or an empty pool: the rest of the record goes into the
//! ordinary buffer and the ordinary path answers it. A record that ends
//! inside the WRITE data is rebuilt in the ordinary buffer (a rare, broken
//! request), so the decoder answers it as before (BADXDR). Limits are the
//! ordinary path's: `max_record_bytes` per record, checked at every
//! fragment header before its bytes are read, a buffer that grows at most
//! [`GROW_STEP`] ahead of the bytes received (never by the length a
//! fragment header claims), and bounded lengths (RFC 5531
//! auth bodies, NFS4_OPAQUE_LIMIT tag, NFS4_FHSIZE handle) before any
//! buffer grows.
//!
//! Under both sits the connection's [`ConnReader`]: a small read takes as
//! many bytes as the socket has (one recv() for many pipelined records,
//! which are then parsed from memory), a large one (a WRITE's data) goes
//! straight from the socket into its destination. After a large record
//! (at least [`FAST_PATH_MIN_RECORD`]) the reader switches to exact reads,
//! so a stream of large WRITEs never has data land in the connection
//! buffer; the first small record switches it back. Data of a large WRITE
//! that follows a small record in the same recv() is copied from the
//! buffer ([`Path::ZeroCopyPartly`], counted as a payload copy).

use crate::storage::BufPool;
/// Defined with the pool buffers so the WRITE op takes it from storage,
/// not from the transport above it.
pub use crate::storage::Detached;
use pnfs_protocol::record::{add_fragment, decode_fragment_header, Fragment};
use pnfs_protocol::rpc;
use pnfs_protocol::wire::stateid4;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Bytes one greedy recv() may take into a connection's buffer.
pub const RECV_BUFFER: usize = 64 * 1024;

/// Reads asking at least this much, with nothing buffered, go straight to
/// the socket (WRITE data, large records) instead of through the buffer.
pub const DIRECT_READ_MIN: usize = 16 * 1024;

/// Bytes a reader holds that were received but not consumed yet.
pub trait Buffered {
    fn buffered(&self) -> usize;
}

impl Buffered for &[u8] {
    fn buffered(&self) -> usize {
        0
    }
}

/// A connection's read side with a receive buffer (module documentation).
pub struct ConnReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Reads take only the bytes asked for, straight from the socket.
    pub exact: bool,
    /// Called before each read from the socket, i.e. once every buffered
    /// record was taken: the reactor submits the I/O those records prepared.
    before_recv: Option<Rc<dyn Fn()>>,
}

impl<R> ConnReader<R> {
    /// Starts in exact mode (a connection's first record may be a large WRITE).
    pub fn new(inner: R, capacity: usize, before_recv: Option<Rc<dyn Fn()>>) -> ConnReader<R> {
        assert!(capacity > 0, "receive buffer of 0 bytes");
        ConnReader { inner, buf: vec![0u8; capacity].into_boxed_slice(), pos: 0, end: 0, exact: true, before_recv }
    }
}

impl<R> Buffered for ConnReader<R> {
    fn buffered(&self) -> usize {
        self.end - self.pos
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ConnReader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, dst: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.pos == me.end {
            if let Some(f) = &me.before_recv {
                f();
            }
            if me.exact || dst.remaining() >= DIRECT_READ_MIN.min(me.buf.len()) {
                return Pin::new(&mut me.inner).poll_read(cx, dst);
            }
            let mut rb = ReadBuf::new(&mut me.buf);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            me.pos = 0;
            me.end = rb.filled().len();
            if me.end == 0 {
                return Poll::Ready(Ok(())); // EOF
            }
        }
        debug_assert!(me.pos < me.end && me.end <= me.buf.len());
        let n = dst.remaining().min(me.end - me.pos);
        dst.put_slice(&me.buf[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// How far a record buffer grows ahead of the bytes received (see
/// [`RecordIn::read_rest`]); also the most a WRITE's dropped data takes.
pub const GROW_STEP: usize = 64 * 1024;

/// Records at least this long (first fragment, or any record of several
/// fragments) are tried for the zero-copy WRITE path; smaller ones are read
/// whole with one read, which is cheaper than the exact-size header reads.
pub const FAST_PATH_MIN_RECORD: usize = 8 * 1024;

const OP_SEQUENCE: u32 = 53;
const OP_PUTFH: u32 = 22;
const OP_WRITE: u32 = 38;
const NFS4_OPAQUE_LIMIT: u32 = 1024;
const NFS4_FHSIZE: u32 = 128;

/// Bytes from the record start to the end of WRITE's data length when every
/// variable-length field (cred, verf, tag, filehandle) is empty: RPC call
/// header 24 + cred 8 + verf 8 + tag 4 + minorversion and numops 8 +
/// SEQUENCE 4+32 + PUTFH 4+4 + WRITE 4+16+8+4+4.
pub const FIXED_PREFIX: usize = 24 + 8 + 8 + 4 + 8 + 36 + 8 + 36;

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

#[derive(Debug, PartialEq, Eq)]
pub enum Prefix {
    /// At least this many bytes (from the record start) are needed to go on.
    Need(usize),
    /// Not a `SEQUENCE, PUTFH, WRITE` call this path takes.
    NotFast,
    /// The prefix is complete: `prefix_len` bytes, the last 4 of which (at
    /// `len_at`) are WRITE's data length `data_len`; `head` says where the
    /// fields admission looks at are.
    Write { len_at: usize, data_len: usize, prefix_len: usize, head: HeadAt },
}

/// Offsets in a parsed prefix of what [`WriteHead`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadAt {
    session_at: usize,
    fh_at: usize,
    fh_len: usize,
    stateid_at: usize,
}

/// What decides whether a large WRITE may take a pool buffer before its
/// data arrives: SEQUENCE's session id, PUTFH's handle and WRITE's stateid,
/// as sent (nothing checked yet).
pub struct WriteHead<'a> {
    pub sessionid: &'a [u8; 16],
    pub fh: &'a [u8],
    pub stateid: stateid4,
}

impl HeadAt {
    /// The fields in `prefix` (the bytes [`parse_write_prefix`] parsed).
    pub fn view<'a>(&self, prefix: &'a [u8]) -> WriteHead<'a> {
        let s = self.stateid_at;
        WriteHead {
            sessionid: prefix[self.session_at..self.session_at + 16].try_into().expect("16 bytes"),
            fh: &prefix[self.fh_at..self.fh_at + self.fh_len],
            stateid: stateid4 {
                seqid: u32::from_be_bytes(prefix[s..s + 4].try_into().expect("4 bytes")),
                other: prefix[s + 4..s + 16].try_into().expect("12 bytes"),
            },
        }
    }
}

/// Parses as much of a `SEQUENCE, PUTFH, WRITE` call prefix as `b` holds.
/// Never reads past the data length; `Need(n)` is always more than
/// `b.len()` and at most the full prefix length, so reading up to it never
/// consumes WRITE data.
pub fn parse_write_prefix(b: &[u8]) -> Prefix {
    // Known padded lengths of the variable fields so far; the unknown ones
    // count as empty, which makes FIXED_PREFIX + extra a lower bound of the
    // prefix length that grows as the fields become known.
    let mut extra = 0usize;
    let mut pos = 0usize;
    macro_rules! need {
        () => {{
            debug_assert!(FIXED_PREFIX + extra > b.len());
            return Prefix::Need(FIXED_PREFIX + extra);
        }};
    }
    macro_rules! u32_ {
        () => {{
            let Some(w) = b.get(pos..pos + 4) else { need!() };
            pos += 4;
            u32::from_be_bytes([w[0], w[1], w[2], w[3]])
        }};
    }
    macro_rules! expect {
        ($v:expr) => {{
            if u32_!() != $v {
                return Prefix::NotFast;
            }
        }};
    }
    macro_rules! skip {
        ($n:expr) => {{
            if b.len() < pos + $n {
                need!()
            }
            pos += $n;
        }};
    }
    macro_rules! opaque {
        ($max:expr) => {{
            let n = u32_!();
            if n > $max {
                return Prefix::NotFast;
            }
            let n = n as usize + pad4(n as usize);
            extra += n;
            skip!(n);
        }};
    }
    let _xid = u32_!();
    expect!(rpc::MSG_CALL);
    expect!(rpc::RPC_VERSION);
    expect!(rpc::NFS4_PROGRAM);
    expect!(rpc::NFS_V4);
    expect!(rpc::PROC_COMPOUND);
    let flavor = u32_!();
    if flavor != rpc::AUTH_NONE && flavor != rpc::AUTH_SYS {
        return Prefix::NotFast;
    }
    opaque!(rpc::MAX_AUTH_BYTES); // cred body
    let _verf_flavor = u32_!();
    opaque!(rpc::MAX_AUTH_BYTES); // verf body
    opaque!(NFS4_OPAQUE_LIMIT); // tag
    let minor = u32_!();
    if !(1..=2).contains(&minor) {
        return Prefix::NotFast;
    }
    if u32_!() < 3 {
        return Prefix::NotFast;
    }
    expect!(OP_SEQUENCE);
    let session_at = pos;
    skip!(32);
    expect!(OP_PUTFH);
    let fh_len = u32_!();
    if fh_len > NFS4_FHSIZE {
        return Prefix::NotFast;
    }
    let fh_at = pos;
    let fh_len = fh_len as usize;
    extra += fh_len + pad4(fh_len);
    skip!(fh_len + pad4(fh_len));
    expect!(OP_WRITE);
    let stateid_at = pos;
    skip!(16 + 8); // stateid, offset
    if u32_!() > 2 {
        return Prefix::NotFast; // not a stable_how4: the decoder says BADXDR
    }
    let len_at = pos;
    let data_len = u32_!() as usize;
    debug_assert_eq!(pos, FIXED_PREFIX + extra);
    Prefix::Write { len_at, data_len, prefix_len: pos, head: HeadAt { session_at, fh_at, fh_len, stateid_at } }
}

/// One record being read from a stream, fragment by fragment.
pub struct RecordIn {
    /// Bytes of the current fragment not read yet.
    frag_left: usize,
    last: bool,
    /// Sum of the fragment lengths seen so far (bounded by `max`).
    declared: usize,
    max: usize,
}

impl RecordIn {
    /// Waits for the first bytes of a record (up to its 4-byte mark) into
    /// `hdr`; how many, 0 at EOF. Split from [`RecordIn::start`] so that
    /// the wait for a request (idle) and the time a record takes once it
    /// began can have different limits.
    pub async fn first_bytes<R: AsyncRead + Unpin>(rd: &mut R, hdr: &mut [u8; 4]) -> io::Result<usize> {
        rd.read(hdr).await
    }

    /// Reads the rest of the first fragment header (`have` bytes of it in
    /// `hdr` already); Ok(None) at an EOF inside it (a peer that sent a
    /// partial mark and left).
    pub async fn start<R: AsyncRead + Unpin>(rd: &mut R, mut hdr: [u8; 4], have: usize, max: usize) -> io::Result<Option<RecordIn>> {
        let mut r = RecordIn { frag_left: 0, last: false, declared: 0, max };
        match rd.read_exact(&mut hdr[have..]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.header(hdr)?;
        Ok(Some(r))
    }

    /// The framing rules are the protocol crate's (one definition for the
    /// tokio transport and this zero-copy reader).
    fn header(&mut self, hdr: [u8; 4]) -> io::Result<()> {
        let Fragment { len, last } = decode_fragment_header(hdr);
        self.declared = add_fragment(self.declared, len, self.max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e} (ds.max_record_bytes)")))?;
        self.frag_left = len;
        self.last = last;
        Ok(())
    }

    /// Whether the first fragment is large, or more follow: worth the
    /// zero-copy attempt.
    pub fn worth_fast_path(&self) -> bool {
        self.frag_left >= FAST_PATH_MIN_RECORD || !self.last
    }

    /// True once every byte of the record was read.
    pub fn done(&self) -> bool {
        self.frag_left == 0 && self.last
    }

    /// Moves to the next fragment when the current one is used up; false at
    /// the end of the record.
    async fn next<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> io::Result<bool> {
        while self.frag_left == 0 {
            if self.last {
                return Ok(false);
            }
            let mut hdr = [0u8; 4];
            rd.read_exact(&mut hdr).await?;
            self.header(hdr)?;
        }
        Ok(true)
    }

    /// Fills `dst` with record bytes, or fewer when the record ends first;
    /// returns how many. Never reads past the record or past `dst`.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, rd: &mut R, dst: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < dst.len() && self.next(rd).await? {
            let n = self.frag_left.min(dst.len() - done);
            rd.read_exact(&mut dst[done..done + n]).await?;
            self.frag_left -= n;
            done += n;
        }
        Ok(done)
    }

    /// Reads the rest of the record into `buf[at..]`, growing `buf` only
    /// when needed (no zero-fill per request), and then by at most
    /// [`GROW_STEP`] ahead of the bytes received: a peer that claims a
    /// large fragment and sends little costs little; returns the record's end.
    pub async fn read_rest<R: AsyncRead + Unpin>(&mut self, rd: &mut R, buf: &mut Vec<u8>, mut at: usize) -> io::Result<usize> {
        while self.next(rd).await? {
            let n = self.frag_left.min(GROW_STEP.max(buf.len().saturating_sub(at)));
            if buf.len() < at + n {
                buf.resize(at + n, 0);
            }
            rd.read_exact(&mut buf[at..at + n]).await?;
            self.frag_left -= n;
            at += n;
        }
        Ok(at)
    }

    /// Reads and drops up to `n` record bytes through `scratch` (never
    /// grown past [`GROW_STEP`]); returns how many, fewer when the record
    /// ended.
    async fn skip<R: AsyncRead + Unpin>(&mut self, rd: &mut R, scratch: &mut Vec<u8>, at: usize, n: usize) -> io::Result<usize> {
        let mut done = 0;
        while done < n {
            let step = (n - done).min(GROW_STEP);
            if scratch.len() < at + step {
                scratch.resize(at + step, 0);
            }
            let got = self.read(rd, &mut scratch[at..at + step]).await?;
            done += got;
            if got < step {
                break;
            }
        }
        Ok(done)
    }
}

/// What [`read_call`] did, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Ordinary,
    /// WRITE data went straight into a pool buffer.
    ZeroCopy,
    /// As ZeroCopy, but part of the data had been received into the
    /// connection buffer already and was copied from there.
    ZeroCopyPartly,
    /// The shape fit but the pool was empty.
    NoBuffer,
    /// The shape fit but admission refused it: the data was dropped.
    NotAdmitted,
}

/// Reads the rest of the record `rin` started into `buf[..len]`, with the
/// WRITE data of a large `SEQUENCE, PUTFH, WRITE` call detached into a pool
/// buffer (module documentation). `max_data` bounds the data taken this way.
/// `admit` is asked before a pool buffer is taken for the data (which the
/// sender may never finish sending): refused, the data is received in
/// small steps and dropped, and the record goes on with a zero data
/// length and an empty [`Detached`], for the COMPOUND to answer.
pub async fn read_call<R: AsyncRead + Unpin + Buffered>(
    rd: &mut R,
    rin: &mut RecordIn,
    buf: &mut Vec<u8>,
    pool: &BufPool,
    max_data: usize,
    admit: &dyn Fn(&WriteHead) -> bool,
) -> io::Result<(usize, Option<Detached>, Path)> {
    let mut have = 0usize;
    let mut path = Path::Ordinary;
    if rin.worth_fast_path() {
        loop {
            match parse_write_prefix(&buf[..have]) {
                Prefix::Need(n) => {
                    debug_assert!(n > have);
                    if buf.len() < n {
                        buf.resize(n, 0);
                    }
                    have += rin.read(rd, &mut buf[have..n]).await?;
                    if have < n {
                        // The record ended: it is all in `buf`.
                        debug_assert!(rin.done());
                        return Ok((have, None, path));
                    }
                }
                Prefix::NotFast => break,
                Prefix::Write { len_at, data_len, prefix_len, head } => {
                    debug_assert_eq!(prefix_len, have);
                    if data_len == 0 {
                        break;
                    }
                    if !admit(&head.view(&buf[..have])) {
                        let got = rin.skip(rd, buf, have, data_len).await?;
                        let want_pad = pad4(data_len);
                        let got_pad = if got == data_len { rin.skip(rd, buf, have, want_pad).await? } else { 0 };
                        if got < data_len || got_pad < want_pad {
                            // Ended inside the data: the prefix alone, for
                            // the decoder to refuse.
                            debug_assert!(rin.done());
                            return Ok((have, None, Path::NotAdmitted));
                        }
                        buf[len_at..len_at + 4].copy_from_slice(&0u32.to_be_bytes());
                        let end = rin.read_rest(rd, buf, have).await?;
                        return Ok((end, Some(Detached { buf: None, len: data_len }), Path::NotAdmitted));
                    }
                    if data_len > max_data || data_len > pool.buf_size() {
                        break;
                    }
                    let Some(mut pb) = pool.take() else {
                        path = Path::NoBuffer;
                        break;
                    };
                    let copied = rd.buffered() > 0;
                    let got = rin.read(rd, &mut pb.as_mut_slice()[..data_len]).await?;
                    let mut pad = [0u8; 3];
                    let want_pad = pad4(data_len);
                    let got_pad = if got == data_len { rin.read(rd, &mut pad[..want_pad]).await? } else { 0 };
                    if got < data_len || got_pad < want_pad {
                        // Truncated inside the data: rebuild the record as
                        // sent, for the ordinary decoder to refuse.
                        debug_assert!(rin.done());
                        let end = have + got + got_pad;
                        if buf.len() < end {
                            buf.resize(end, 0);
                        }
                        buf[have..have + got].copy_from_slice(&pb.as_slice()[..got]);
                        buf[have + got..end].copy_from_slice(&pad[..got_pad]);
                        return Ok((end, None, path));
                    }
                    buf[len_at..len_at + 4].copy_from_slice(&0u32.to_be_bytes());
                    let end = rin.read_rest(rd, buf, have).await?;
                    let path = if copied { Path::ZeroCopyPartly } else { Path::ZeroCopy };
                    return Ok((end, Some(Detached { buf: Some(pb), len: data_len }), path));
                }
            }
        }
    }
    let end = rin.read_rest(rd, buf, have).await?;
    Ok((end, None, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::record::LAST_FRAGMENT;
    use pnfs_protocol::wire::*;
    use pnfs_protocol::{Encoder, Opaque, XdrEncode};

    /// A COMPOUND call record body: SEQUENCE, PUTFH, WRITE(data), then `more` GETFHs.
    fn write_call(xid: u32, tag: &[u8], fh: &[u8], data: &[u8], more: usize) -> Vec<u8> {
        let mut e = Encoder::new();
        rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
        e.put_opaque(tag, 1024).unwrap();
        e.put_u32(1);
        e.put_u32(3 + more as u32);
        let ops = [
            nfs_argop4::OP_SEQUENCE(SEQUENCE4args {
                sa_sessionid: [1; 16],
                sa_sequenceid: 1,
                sa_slotid: 0,
                sa_highest_slotid: 0,
                sa_cachethis: false,
            }),
            nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) }),
            nfs_argop4::OP_WRITE(WRITE4args {
                stateid: stateid4 { seqid: 1, other: [2; 12] },
                offset: 4096,
                stable: stable_how4::UNSTABLE4,
                data: Opaque::borrowed(data),
            }),
        ];
        for op in &ops {
            op.encode(&mut e).unwrap();
        }
        for _ in 0..more {
            nfs_argop4::OP_GETFH.encode(&mut e).unwrap();
        }
        e.into_inner()
    }

    #[test]
    fn prefix_needs_grow_and_stop_at_the_data() {
        let data = vec![7u8; 10_001];
        for (tag, fh) in [(&b""[..], &[9u8; 16][..]), (&b"tag!x"[..], &[1u8; 128][..])] {
            let rec = write_call(5, tag, fh, &data, 1);
            let mut have = 0;
            let mut steps = 0;
            let (len_at, prefix_len) = loop {
                match parse_write_prefix(&rec[..have]) {
                    Prefix::Need(n) => {
                        assert!(n > have && n <= rec.len() - data.len(), "need {n} with {have}");
                        have = n;
                        steps += 1;
                    }
                    Prefix::Write { len_at, data_len, prefix_len, head } => {
                        assert_eq!(data_len, data.len());
                        let h = head.view(&rec[..prefix_len]);
                        assert_eq!((h.sessionid, h.fh), (&[1u8; 16], fh));
                        assert_eq!((h.stateid.seqid, h.stateid.other), (1, [2u8; 12]));
                        break (len_at, prefix_len);
                    }
                    Prefix::NotFast => panic!("not fast"),
                }
            };
            assert!(steps <= 5, "{steps} reads");
            assert_eq!(prefix_len, have);
            assert_eq!(&rec[prefix_len..prefix_len + 100], &data[..100]);
            assert_eq!(u32::from_be_bytes(rec[len_at..len_at + 4].try_into().unwrap()) as usize, data.len());
        }
    }

    /// A reader that has some bytes, then never more (a stalled peer).
    struct Stalls<'a>(&'a [u8]);

    impl AsyncRead for Stalls<'_> {
        fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, dst: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            if self.0.is_empty() {
                return Poll::Pending;
            }
            let n = dst.remaining().min(self.0.len());
            dst.put_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Poll::Ready(Ok(()))
        }
    }

    impl Buffered for Stalls<'_> {
        fn buffered(&self) -> usize {
            0
        }
    }

    /// Polls `f` once: whatever it left behind is what a stalled record costs.
    fn poll_once<F: std::future::Future>(f: F) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx)
    }

    #[test]
    fn record_buffer_grows_with_the_bytes_not_the_claim() {
        // A 2 MiB fragment claimed, 1000 bytes of it sent, then nothing.
        let mut stream = (LAST_FRAGMENT | (2 << 20)).to_be_bytes().to_vec();
        stream.extend_from_slice(&[5u8; 1000]);
        let mut rd = Stalls(&stream);
        let mut hdr = [0u8; 4];
        assert!(matches!(poll_once(RecordIn::first_bytes(&mut rd, &mut hdr)), Poll::Ready(Ok(4))));
        let Poll::Ready(Ok(Some(mut rin))) = poll_once(RecordIn::start(&mut rd, hdr, 4, 4 << 20)) else { panic!("no record") };
        let mut buf = Vec::new();
        let pool = BufPool::new(1, 64 * 1024);
        assert!(poll_once(read_call(&mut rd, &mut rin, &mut buf, &pool, 60 * 1024, &|_| true)).is_pending());
        // At most one step past what arrived (the prefix parse read some of it).
        assert!(buf.len() <= 1000 + GROW_STEP, "{} bytes for 1000 received", buf.len());
        assert!(buf.capacity() <= 2 * GROW_STEP, "{} bytes reserved for 1000 received", buf.capacity());
    }

    #[test]
    fn unadmitted_write_data_is_dropped_without_a_pool_buffer() {
        let data = pattern(100_000);
        let body = write_call(9, b"", &[9; 16], &data, 1);
        let mut stream = (LAST_FRAGMENT | body.len() as u32).to_be_bytes().to_vec();
        stream.extend_from_slice(&body);
        let mut rd = &stream[4..];
        let pool = BufPool::new(1, 128 * 1024);
        let Poll::Ready(Ok(Some(mut rin))) = poll_once(RecordIn::start(&mut rd, stream[..4].try_into().unwrap(), 4, 4 << 20)) else {
            panic!("no record")
        };
        let mut buf = Vec::new();
        let seen = std::cell::Cell::new(0);
        let admit = |h: &WriteHead| {
            assert_eq!((h.sessionid, h.fh), (&[1u8; 16], &[9u8; 16][..]));
            seen.set(seen.get() + 1);
            false
        };
        let Poll::Ready(Ok((len, Some(d), path))) = poll_once(read_call(&mut rd, &mut rin, &mut buf, &pool, 120 * 1024, &admit)) else {
            panic!("not read")
        };
        assert_eq!((path, d.len, d.buf.is_none(), seen.get()), (Path::NotAdmitted, data.len(), true, 1));
        assert!(rin.done() && rd.is_empty());
        assert_eq!(pool.available(), 1);
        assert!(buf.len() <= len + GROW_STEP, "dropped data took {} bytes", buf.len());
        // The record as the decoder sees it: the WRITE with no data, then GETFH.
        let prefix = body.len() - data.len() - 4;
        assert_eq!(len, prefix + 4);
        assert_eq!(&buf[..prefix - 4], &body[..prefix - 4]);
        assert_eq!(&buf[prefix - 4..len], &[0, 0, 0, 0, 0, 0, 0, 10]);
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn other_shapes_are_not_fast() {
        let rec = write_call(5, b"", &[9; 16], &[1; 100], 0);
        // READ instead of WRITE.
        let mut r = rec.clone();
        let at = rec.len() - 100 - 36;
        r[at..at + 4].copy_from_slice(&25u32.to_be_bytes());
        assert_eq!(parse_write_prefix(&r), Prefix::NotFast);
        // Wrong program, minor version 0, a handle longer than NFS4_FHSIZE.
        let mut r = rec.clone();
        r[12..16].copy_from_slice(&100005u32.to_be_bytes());
        assert_eq!(parse_write_prefix(&r), Prefix::NotFast);
        let mut e = Encoder::new();
        rpc::begin_call(&mut e, 1, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, false);
        e.put_u32(0);
        e.put_u32(0); // minor 0
        e.put_u32(3);
        assert_eq!(parse_write_prefix(&e.buf), Prefix::NotFast);
        let mut e = Encoder::new();
        rpc::begin_call(&mut e, 1, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, false);
        e.put_u32(0);
        e.put_u32(1);
        e.put_u32(3);
        e.put_u32(OP_SEQUENCE);
        e.buf.extend_from_slice(&[0; 32]);
        e.put_u32(OP_PUTFH);
        e.put_u32(129);
        assert_eq!(parse_write_prefix(&e.buf), Prefix::NotFast);
        // A huge claimed cred length is refused before anything is needed.
        let mut r = rec.clone();
        r[28..32].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert_eq!(parse_write_prefix(&r[..32]), Prefix::NotFast);
        // Cut anywhere: Need, never a panic.
        for cut in 0..rec.len() - 100 {
            assert!(matches!(parse_write_prefix(&rec[..cut]), Prefix::Need(n) if n > cut));
        }
    }
}

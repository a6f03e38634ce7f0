//! ONC RPC record marking over TCP (RFC 5531 section 11).
//!
//! Sans-I/O: the connection feeds received bytes in, whole records come out.
//! A record whose fragments add up to more than `max_record` bytes is refused
//! as soon as a fragment header claims it, before its bytes are buffered, so
//! the caller can close the connection. The buffer grows as bytes arrive,
//! never by the length a header claims: a peer that claims 2 MiB and sends
//! 1 KiB costs about 1 KiB.
//!
//! The framing rules themselves ([`decode_fragment_header`],
//! [`add_fragment`], [`record_mark`]) are the one definition every reader
//! and writer of record marks uses: [`RecordReader`] (the tokio transport
//! in [`crate::transport`] and the clients) and the DS io_uring reactor,
//! which parses marks in place to stay zero-copy.

use std::fmt;

/// The fragment header's top bit: this fragment ends the record.
pub const LAST_FRAGMENT: u32 = 0x8000_0000;

/// The longest one fragment can be (the header's low 31 bits).
pub const MAX_FRAGMENT: usize = (LAST_FRAGMENT - 1) as usize;

/// One fragment header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Bytes of record data that follow the header in this fragment.
    pub len: usize,
    /// This fragment ends the record.
    pub last: bool,
}

/// Decodes a 4-byte fragment header (RFC 5531 section 11).
pub fn decode_fragment_header(h: [u8; 4]) -> Fragment {
    let h = u32::from_be_bytes(h);
    Fragment { len: (h & !LAST_FRAGMENT) as usize, last: h & LAST_FRAGMENT != 0 }
}

/// The record's length once a fragment of `frag_len` bytes is added to the
/// `so_far` bytes its earlier fragments declared; refused when that passes
/// `max`, so a reader can close before buffering any of it.
pub fn add_fragment(so_far: usize, frag_len: usize, max: usize) -> Result<usize, RecordError> {
    let claimed = (so_far as u64).saturating_add(frag_len as u64);
    if claimed > max as u64 {
        return Err(RecordError::TooLarge { claimed, max });
    }
    Ok(claimed as usize)
}

/// The mark (header as a number) of a single-fragment record of `len`
/// bytes, for writers that patch it in front of an encoded message.
/// Panics past [`MAX_FRAGMENT`]: no reply this server builds comes near.
pub fn record_mark(len: usize) -> u32 {
    assert!(len <= MAX_FRAGMENT, "record too large for one fragment");
    LAST_FRAGMENT | len as u32
}

/// The most the record buffer grows ahead of the bytes that arrived.
const GROW_AHEAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    TooLarge { claimed: u64, max: usize },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooLarge { claimed, max } => {
                write!(f, "RPC record of at least {claimed} bytes exceeds the limit of {max} bytes")
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// Header for a single-fragment record of `len` bytes.
pub fn record_header(len: usize) -> [u8; 4] {
    record_mark(len).to_be_bytes()
}

enum State {
    Header { have: usize, bytes: [u8; 4] },
    Body { left: usize, last: bool },
}

pub struct RecordReader {
    max_record: usize,
    record: Vec<u8>,
    state: State,
}

impl RecordReader {
    pub fn new(max_record: usize) -> Self {
        RecordReader { max_record, record: Vec::new(), state: State::Header { have: 0, bytes: [0; 4] } }
    }

    /// Consumes bytes from `data` up to the end of the next complete record.
    /// Returns how many bytes were used and the record if one completed; call
    /// again with the rest of `data`.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Vec<u8>>), RecordError> {
        let mut used = 0;
        while used < data.len() {
            match &mut self.state {
                State::Header { have, bytes } => {
                    let n = (4 - *have).min(data.len() - used);
                    bytes[*have..*have + n].copy_from_slice(&data[used..used + n]);
                    *have += n;
                    used += n;
                    if *have == 4 {
                        let Fragment { len, last } = decode_fragment_header(*bytes);
                        add_fragment(self.record.len(), len, self.max_record)?;
                        self.state = State::Body { left: len, last };
                        if let Some(r) = self.finish_if_done() {
                            return Ok((used, Some(r)));
                        }
                    }
                }
                State::Body { left, .. } => {
                    let n = (*left).min(data.len() - used);
                    let spare = self.record.capacity() - self.record.len();
                    if spare < n {
                        // Double (at least GROW_AHEAD), never past this
                        // fragment's end: amortised growth, bounded by what
                        // the peer really sent.
                        let ahead = self.record.len().max(GROW_AHEAD).min(*left);
                        self.record.reserve_exact(ahead.max(n));
                    }
                    self.record.extend_from_slice(&data[used..used + n]);
                    *left -= n;
                    used += n;
                    if let Some(r) = self.finish_if_done() {
                        return Ok((used, Some(r)));
                    }
                }
            }
        }
        Ok((used, None))
    }

    fn finish_if_done(&mut self) -> Option<Vec<u8>> {
        if let State::Body { left: 0, last } = self.state {
            self.state = State::Header { have: 0, bytes: [0; 4] };
            if last {
                return Some(std::mem::take(&mut self.record));
            }
        }
        None
    }

    /// Feeds a whole received chunk; returns every record it completed, in
    /// order (a partial one stays buffered for the next chunk).
    pub fn feed_all(&mut self, mut data: &[u8]) -> Result<Vec<Vec<u8>>, RecordError> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let (used, rec) = self.feed(data)?;
            data = &data[used..];
            out.extend(rec);
        }
        Ok(out)
    }

    /// True when no partial record is buffered.
    pub fn is_idle(&self) -> bool {
        self.record.is_empty() && matches!(self.state, State::Header { have: 0, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(payload: &[u8], frag_sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut off = 0;
        let mut i = 0;
        loop {
            let n = frag_sizes.get(i).copied().unwrap_or(usize::MAX).min(payload.len() - off);
            let last = off + n == payload.len();
            let h = (n as u32) | if last { LAST_FRAGMENT } else { 0 };
            out.extend_from_slice(&h.to_be_bytes());
            out.extend_from_slice(&payload[off..off + n]);
            off += n;
            i += 1;
            if last {
                return out;
            }
        }
    }

    proptest! {
        #[test]
        fn reassembles_any_fragmentation_and_chunking(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
            frag in proptest::collection::vec(1usize..50, 0..10),
            chunk in 1usize..64,
        ) {
            let mut wire = Vec::new();
            for r in &records {
                wire.extend(frame(r, &frag));
            }
            let mut rr = RecordReader::new(1024);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                let mut off = 0;
                while off < c.len() {
                    let (n, rec) = rr.feed(&c[off..]).unwrap();
                    off += n;
                    if let Some(r) = rec { got.push(r); }
                }
            }
            prop_assert_eq!(&got, &records);
            prop_assert!(rr.is_idle());
            // feed_all over the same chunks gives the same records.
            let mut rr = RecordReader::new(1024);
            let mut all = Vec::new();
            for c in wire.chunks(chunk) {
                all.extend(rr.feed_all(c).unwrap());
            }
            prop_assert_eq!(all, records);
        }
    }

    #[test]
    fn buffer_grows_with_arrived_bytes_not_the_claimed_length() {
        let mut rr = RecordReader::new(4 << 20);
        let mut wire = record_header(2 << 20).to_vec();
        wire.extend_from_slice(&[7u8; 1024]);
        assert_eq!(rr.feed(&wire).unwrap(), (wire.len(), None));
        assert!(rr.record.capacity() <= 1024 + GROW_AHEAD, "capacity {}", rr.record.capacity());
        // Fed in small pieces up to the end, it still completes, and the
        // buffer never exceeds the record.
        let mut left = (2 << 20) - 1024;
        let chunk = [7u8; 1000];
        let mut done = None;
        while left > 0 {
            let n = left.min(chunk.len());
            let (used, rec) = rr.feed(&chunk[..n]).unwrap();
            assert_eq!(used, n);
            assert!(rr.record.capacity() <= 2 << 20);
            left -= n;
            done = rec.or(done);
        }
        assert_eq!(done.map(|r| r.len()), Some(2 << 20));
        assert!(rr.is_idle());
    }

    #[test]
    fn framing_rules() {
        assert_eq!(decode_fragment_header(record_header(5)), Fragment { len: 5, last: true });
        assert_eq!(decode_fragment_header(7u32.to_be_bytes()), Fragment { len: 7, last: false });
        assert_eq!(decode_fragment_header(record_mark(MAX_FRAGMENT).to_be_bytes()), Fragment { len: MAX_FRAGMENT, last: true });
        assert_eq!(add_fragment(60, 40, 100), Ok(100));
        assert_eq!(add_fragment(60, 41, 100), Err(RecordError::TooLarge { claimed: 101, max: 100 }));
        assert!(add_fragment(usize::MAX - 1, MAX_FRAGMENT, usize::MAX - 1).is_err());
    }

    #[test]
    fn oversized_record_refused_at_header() {
        let mut rr = RecordReader::new(100);
        let wire = (LAST_FRAGMENT | 0x7fff_ffff).to_be_bytes();
        assert!(matches!(rr.feed(&wire), Err(RecordError::TooLarge { .. })));
        // Fragments adding up beyond the limit are refused too.
        let mut rr = RecordReader::new(100);
        let mut wire = frame(&[0u8; 60], &[60]);
        wire[0] &= 0x7f; // not last
        wire.extend(frame(&[0u8; 60], &[60]));
        assert!(matches!(rr.feed(&wire), Err(RecordError::TooLarge { claimed: 120, .. })));
    }
}

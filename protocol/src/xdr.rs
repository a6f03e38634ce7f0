//! XDR runtime (RFC 4506) used by the generated protocol types.
//!
//! Decoding is strict and bounded: every length read off the wire is checked
//! against the declared maximum and against the bytes left in the record
//! before anything is allocated; padding must be zero and bools 0 or 1, so a
//! successful decode re-encodes to the same bytes. Variable-length opaques
//! borrow from the receive buffer.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdrError {
    /// The record ended before the value did.
    Short { needed: usize, left: usize },
    /// A length exceeds the type's bound or what is left in the record.
    TooLong { len: u64, max: u64 },
    /// Unknown enum value or union case.
    BadDiscriminant(i64),
    BadBool(u32),
    NonZeroPadding,
    /// Optional-data chains nested beyond the decoder's depth limit.
    TooDeep,
}

impl fmt::Display for XdrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdrError::Short { needed, left } => write!(f, "truncated XDR: needed {needed} bytes, {left} left"),
            XdrError::TooLong { len, max } => write!(f, "XDR length {len} exceeds limit {max}"),
            XdrError::BadDiscriminant(v) => write!(f, "invalid XDR enum/union discriminant {v}"),
            XdrError::BadBool(v) => write!(f, "invalid XDR bool {v}"),
            XdrError::NonZeroPadding => write!(f, "non-zero XDR padding"),
            XdrError::TooDeep => write!(f, "XDR optional-data nesting too deep"),
        }
    }
}

impl std::error::Error for XdrError {}

/// Variable-length opaque or string: borrowed when decoded, owned when built.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Opaque<'a>(pub Cow<'a, [u8]>);

impl<'a> Opaque<'a> {
    pub fn borrowed(b: &'a [u8]) -> Self {
        Opaque(Cow::Borrowed(b))
    }
    pub fn owned(v: Vec<u8>) -> Opaque<'static> {
        Opaque(Cow::Owned(v))
    }
    pub fn into_owned(self) -> Opaque<'static> {
        Opaque(Cow::Owned(self.0.into_owned()))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    /// Lossy UTF-8 view for logging and names.
    pub fn to_str_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl std::ops::Deref for Opaque<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Opaque<'static> {
    fn from(v: Vec<u8>) -> Self {
        Opaque(Cow::Owned(v))
    }
}

impl From<String> for Opaque<'static> {
    fn from(v: String) -> Self {
        Opaque(Cow::Owned(v.into_bytes()))
    }
}

impl<'a> From<&'a [u8]> for Opaque<'a> {
    fn from(v: &'a [u8]) -> Self {
        Opaque(Cow::Borrowed(v))
    }
}

impl<'a> From<&'a str> for Opaque<'a> {
    fn from(v: &'a str) -> Self {
        Opaque(Cow::Borrowed(v.as_bytes()))
    }
}

impl fmt::Debug for Opaque<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            write!(f, "{:?}", String::from_utf8_lossy(b))
        } else {
            write!(f, "0x")?;
            for c in b.iter().take(32) {
                write!(f, "{c:02x}")?;
            }
            if b.len() > 32 {
                write!(f, "..({} bytes)", b.len())?;
            }
            Ok(())
        }
    }
}

#[cfg(any(test, feature = "arbitrary"))]
impl<'a> arbitrary::Arbitrary<'a> for Opaque<'a> {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.arbitrary_len::<u8>()?.min(64);
        Ok(Opaque(Cow::Borrowed(u.bytes(len)?)))
    }
}

/// Default limit for nested optional data (e.g. READDIR entry lists), which
/// decode recursively.
pub const DEFAULT_MAX_DEPTH: u32 = 8192;

pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: u32,
    max_depth: u32,
}

#[inline]
fn pad(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0, depth: 0, max_depth: DEFAULT_MAX_DEPTH }
    }

    pub fn with_max_depth(mut self, max_depth: u32) -> Self {
        self.max_depth = max_depth;
        self
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not yet decoded.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if n > self.remaining() {
            return Err(XdrError::Short { needed: n, left: self.remaining() });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn skip_padding(&mut self, len: usize) -> Result<(), XdrError> {
        let p = self.take(pad(len))?;
        if p.iter().any(|b| *b != 0) {
            return Err(XdrError::NonZeroPadding);
        }
        Ok(())
    }

    #[inline]
    pub fn get_u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub fn get_i32(&mut self) -> Result<i32, XdrError> {
        Ok(self.get_u32()? as i32)
    }

    #[inline]
    pub fn get_u64(&mut self) -> Result<u64, XdrError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    #[inline]
    pub fn get_i64(&mut self) -> Result<i64, XdrError> {
        Ok(self.get_u64()? as i64)
    }

    pub fn get_bool(&mut self) -> Result<bool, XdrError> {
        match self.get_u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadBool(v)),
        }
    }

    pub fn get_fixed_opaque<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        self.skip_padding(N)?;
        Ok(a)
    }

    /// Variable-length opaque, borrowed from the buffer.
    pub fn get_opaque(&mut self, max: u32) -> Result<Opaque<'a>, XdrError> {
        let len = self.get_u32()?;
        if len > max || len as usize > self.remaining() {
            return Err(XdrError::TooLong { len: len as u64, max: (max as u64).min(self.remaining() as u64) });
        }
        let b = self.take(len as usize)?;
        self.skip_padding(len as usize)?;
        Ok(Opaque(Cow::Borrowed(b)))
    }

    /// Reads an array count and bounds it by `max` and by the bytes left
    /// (every XDR element takes at least 4 bytes).
    pub fn get_count(&mut self, max: u32) -> Result<usize, XdrError> {
        let n = self.get_u32()?;
        let fit = (self.remaining() / 4) as u64;
        if n > max || n as u64 > fit {
            return Err(XdrError::TooLong { len: n as u64, max: (max as u64).min(fit) });
        }
        Ok(n as usize)
    }

    fn enter(&mut self) -> Result<(), XdrError> {
        if self.depth >= self.max_depth {
            return Err(XdrError::TooDeep);
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder { buf: Vec::new() }
    }

    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Encoder { buf }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn put_i32(&mut self, v: i32) {
        self.put_u32(v as u32)
    }
    #[inline]
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn put_i64(&mut self, v: i64) {
        self.put_u64(v as u64)
    }
    pub fn put_bool(&mut self, v: bool) {
        self.put_u32(v as u32)
    }
    fn put_padding(&mut self, len: usize) {
        self.buf.extend_from_slice(&[0u8; 3][..pad(len)]);
    }
    pub fn put_fixed_opaque(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.put_padding(b.len());
    }
    pub fn put_opaque(&mut self, b: &[u8], max: u32) -> Result<(), XdrError> {
        if b.len() as u64 > max as u64 {
            return Err(XdrError::TooLong { len: b.len() as u64, max: max as u64 });
        }
        self.put_u32(b.len() as u32);
        self.put_fixed_opaque(b);
        Ok(())
    }
    /// Overwrites a u32 written earlier at `at` (used to patch counts and lengths).
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
}

pub trait XdrDecode<'a>: Sized {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, XdrError>;
}

pub trait XdrEncode {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError>;
}

impl XdrEncode for () {
    fn encode(&self, _e: &mut Encoder) -> Result<(), XdrError> {
        Ok(())
    }
}

impl XdrEncode for u32 {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        e.put_u32(*self);
        Ok(())
    }
}

impl XdrEncode for u64 {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        e.put_u64(*self);
        Ok(())
    }
}

impl XdrEncode for bool {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        e.put_bool(*self);
        Ok(())
    }
}

impl<const N: usize> XdrEncode for [u8; N] {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        e.put_fixed_opaque(self);
        Ok(())
    }
}

/// An unbounded variable-length opaque (typedefs like `opaque x<>`).
impl XdrEncode for Opaque<'_> {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        e.put_opaque(self, u32::MAX)
    }
}

/// An unbounded variable-length array (typedefs like `T x<>`).
impl<T: XdrEncode> XdrEncode for Vec<T> {
    fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
        encode_var_array(e, self, u32::MAX, |e, x| x.encode(e))
    }
}

/// Decodes one value from `buf` and returns it with the number of bytes used.
pub fn decode_prefix<'a, T: XdrDecode<'a>>(buf: &'a [u8]) -> Result<(T, usize), XdrError> {
    let mut d = Decoder::new(buf);
    let v = T::decode(&mut d)?;
    Ok((v, d.position()))
}

pub fn encode_to_vec<T: XdrEncode + ?Sized>(v: &T) -> Result<Vec<u8>, XdrError> {
    let mut e = Encoder::new();
    v.encode(&mut e)?;
    Ok(e.into_inner())
}

pub fn decode_var_array<'a, T>(
    d: &mut Decoder<'a>,
    max: u32,
    mut f: impl FnMut(&mut Decoder<'a>) -> Result<T, XdrError>,
) -> Result<Vec<T>, XdrError> {
    let n = d.get_count(max)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f(d)?);
    }
    Ok(v)
}

pub fn decode_fixed_array<'a, T>(
    d: &mut Decoder<'a>,
    n: usize,
    mut f: impl FnMut(&mut Decoder<'a>) -> Result<T, XdrError>,
) -> Result<Vec<T>, XdrError> {
    if n > d.remaining() / 4 {
        return Err(XdrError::Short { needed: n * 4, left: d.remaining() });
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f(d)?);
    }
    Ok(v)
}

pub fn decode_optional<'a, T>(
    d: &mut Decoder<'a>,
    f: impl FnOnce(&mut Decoder<'a>) -> Result<T, XdrError>,
) -> Result<Option<Box<T>>, XdrError> {
    if !d.get_bool()? {
        return Ok(None);
    }
    d.enter()?;
    let v = f(d);
    d.leave();
    Ok(Some(Box::new(v?)))
}

pub fn encode_var_array<T>(
    e: &mut Encoder,
    items: &[T],
    max: u32,
    mut f: impl FnMut(&mut Encoder, &T) -> Result<(), XdrError>,
) -> Result<(), XdrError> {
    if items.len() as u64 > max as u64 {
        return Err(XdrError::TooLong { len: items.len() as u64, max: max as u64 });
    }
    e.put_u32(items.len() as u32);
    for x in items {
        f(e, x)?;
    }
    Ok(())
}

pub fn encode_fixed_array<T>(
    e: &mut Encoder,
    items: &[T],
    n: usize,
    mut f: impl FnMut(&mut Encoder, &T) -> Result<(), XdrError>,
) -> Result<(), XdrError> {
    if items.len() != n {
        return Err(XdrError::TooLong { len: items.len() as u64, max: n as u64 });
    }
    for x in items {
        f(e, x)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_length_beyond_record_is_refused_without_allocation() {
        let mut e = Encoder::new();
        e.put_u32(0xffff_fff0);
        e.put_u32(7);
        let bytes = e.into_inner();
        let mut d = Decoder::new(&bytes);
        assert!(matches!(d.get_opaque(u32::MAX), Err(XdrError::TooLong { .. })));
        let mut d = Decoder::new(&bytes);
        assert!(matches!(d.get_count(u32::MAX), Err(XdrError::TooLong { .. })));
    }

    #[test]
    fn padding_must_be_zero() {
        let bytes = [0, 0, 0, 1, b'x', 0, 1, 0];
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.get_opaque(10), Err(XdrError::NonZeroPadding));
        let bytes = [0, 0, 0, 1, b'x', 0, 0, 0];
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.get_opaque(10).unwrap().as_bytes(), b"x");
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn opaque_bound_enforced() {
        let mut e = Encoder::new();
        e.put_opaque(b"hello", 5).unwrap();
        assert!(e.put_opaque(b"hello!", 5).is_err());
        let bytes = encode_to_vec(&Wrapper(b"hello".to_vec())).unwrap();
        let mut d = Decoder::new(&bytes);
        assert!(d.get_opaque(4).is_err());
    }

    struct Wrapper(Vec<u8>);
    impl XdrEncode for Wrapper {
        fn encode(&self, e: &mut Encoder) -> Result<(), XdrError> {
            e.put_opaque(&self.0, u32::MAX)
        }
    }

    #[test]
    fn optional_depth_is_limited() {
        let mut e = Encoder::new();
        for _ in 0..100 {
            e.put_bool(true);
        }
        e.put_bool(false);
        let bytes = e.into_inner();
        fn chain<'a>(d: &mut Decoder<'a>) -> Result<u32, XdrError> {
            Ok(match decode_optional(d, chain)? {
                Some(n) => *n + 1,
                None => 0,
            })
        }
        let mut d = Decoder::new(&bytes).with_max_depth(10);
        assert_eq!(chain(&mut d), Err(XdrError::TooDeep));
        let mut d = Decoder::new(&bytes);
        assert_eq!(chain(&mut d), Ok(100));
    }
}

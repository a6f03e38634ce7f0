//! Helpers for building ordered keys: big-endian integers sort numerically
//! under lexicographic byte order, and prefix ranges need an exclusive end.

use crate::{KvError, Result};

/// Longest key accepted by every backend (kept well below TiKV's limits so
/// key layouts stay portable).
pub const MAX_KEY_LEN: usize = 4096;

/// Big-endian encoding of `n`, so numeric order equals byte order.
pub fn u64_be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes an 8-byte big-endian integer; `None` if `bytes` is not 8 bytes.
pub fn decode_u64_be(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// Smallest key greater than every key starting with `prefix`, i.e. the
/// exclusive end of the prefix range. `None` when no such key exists (empty
/// prefix or all `0xff` bytes): the range then runs to the end of the keyspace.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Smallest key strictly greater than `key` (`key` + `0x00`); use it as the
/// next `start` when paging through a scan.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Rejects keys that some backend cannot store.
pub(crate) fn validate(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(KvError::InvalidArgument("empty key".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KvError::InvalidArgument(format!(
            "key of {} bytes exceeds {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_roundtrip_and_order() {
        assert_eq!(
            decode_u64_be(&u64_be(0x0102_0304_0506_0708)),
            Some(0x0102_0304_0506_0708)
        );
        assert_eq!(decode_u64_be(&[1, 2, 3]), None);
        assert!(u64_be(255) < u64_be(256));
        assert!(u64_be(u64::MAX - 1) < u64_be(u64::MAX));
    }

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[0x01, 0xff]), Some(vec![0x02]));
        assert_eq!(prefix_end(&[0x01, 0xfe]), Some(vec![0x01, 0xff]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[0x00]), Some(vec![0x01]));
    }

    #[test]
    fn successor_is_next_key() {
        assert_eq!(successor(b"ab"), b"ab\0".to_vec());
        assert!(successor(b"ab").as_slice() > b"ab".as_slice());
        assert!(successor(b"ab").as_slice() < b"ab\0\0".as_slice());
    }

    #[test]
    fn validate_limits() {
        assert!(validate(b"").is_err());
        assert!(validate(&[0u8; MAX_KEY_LEN]).is_ok());
        assert!(validate(&vec![0u8; MAX_KEY_LEN + 1]).is_err());
    }
}

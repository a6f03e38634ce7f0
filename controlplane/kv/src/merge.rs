//! Shared write-buffer handling: backends keep uncommitted writes in an
//! ordered overlay and merge it into snapshot scans (read-your-writes).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::{KvPair, Result};

/// Uncommitted writes of a transaction: `Some(value)` = put, `None` = delete.
pub(crate) type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key range as `BTreeMap::range` and redb take it.
pub(crate) type KeyRange<'k> = (Bound<&'k [u8]>, Bound<&'k [u8]>);

/// Range bounds for `[start, end)`, or `None` if the range is empty (callers
/// must not hand such ranges to `BTreeMap::range`, which panics on them).
pub(crate) fn bounds<'k>(start: &'k [u8], end: Option<&'k [u8]>) -> Option<KeyRange<'k>> {
    match end {
        Some(end) if start >= end => None,
        Some(end) => Some((Bound::Included(start), Bound::Excluded(end))),
        None => Some((Bound::Included(start), Bound::Unbounded)),
    }
}

/// The range a scan reads, or `None` when it returns nothing (an empty
/// range or `limit == 0`).
pub(crate) fn scan_bounds<'k>(start: &'k [u8], end: Option<&'k [u8]>, limit: usize) -> Option<KeyRange<'k>> {
    if limit == 0 {
        return None;
    }
    bounds(start, end)
}

/// Buffers a put (`Some(value)`) or delete (`None`) of `key` after checking
/// the key.
pub(crate) fn buffer_write(overlay: &mut Overlay, key: &[u8], value: Option<&[u8]>) -> Result<()> {
    crate::key::validate(key)?;
    overlay.insert(key.to_vec(), value.map(<[u8]>::to_vec));
    Ok(())
}

/// Merges the snapshot's pairs in `range` (ascending, lazily pulled from
/// `base`) with the overlay: overlay entries win, overlay deletes hide keys.
pub(crate) fn merge_scan<I>(
    base: I,
    overlay: &Overlay,
    range: KeyRange<'_>,
    limit: usize,
) -> Result<Vec<KvPair>>
where
    I: Iterator<Item = Result<KvPair>>,
{
    merge(base, overlay, range, limit, |v| v.to_vec())
}

/// [`merge_scan`] of keys only: neither the snapshot's values nor the
/// overlay's are copied.
pub(crate) fn merge_scan_keys<I>(
    base: I,
    overlay: &Overlay,
    range: KeyRange<'_>,
    limit: usize,
) -> Result<Vec<Vec<u8>>>
where
    I: Iterator<Item = Result<Vec<u8>>>,
{
    let base = base.map(|r| r.map(|k| (k, ())));
    Ok(merge(base, overlay, range, limit, |_| ())?.into_iter().map(|(k, ())| k).collect())
}

fn merge<I, V>(
    base: I,
    overlay: &Overlay,
    range: KeyRange<'_>,
    limit: usize,
    value: impl Fn(&[u8]) -> V,
) -> Result<Vec<(Vec<u8>, V)>>
where
    I: Iterator<Item = Result<(Vec<u8>, V)>>,
{
    enum Pick {
        Base,
        Overlay,
        Both,
    }
    let mut out = Vec::new();
    let mut base = base.peekable();
    let mut over = overlay.range::<[u8], _>(range).peekable();
    while out.len() < limit {
        let base_key = match base.peek() {
            None => None,
            Some(Ok((k, _))) => Some(k.as_slice()),
            Some(Err(e)) => return Err(e.clone()),
        };
        let pick = match (base_key, over.peek()) {
            (None, None) => break,
            (Some(_), None) => Pick::Base,
            (None, Some(_)) => Pick::Overlay,
            (Some(b), Some((o, _))) => match b.cmp(o.as_slice()) {
                Ordering::Less => Pick::Base,
                Ordering::Greater => Pick::Overlay,
                Ordering::Equal => Pick::Both,
            },
        };
        if matches!(pick, Pick::Base | Pick::Both) {
            if let Some(item) = base.next() {
                let pair = item?;
                if matches!(pick, Pick::Base) {
                    out.push(pair);
                }
            }
        }
        if matches!(pick, Pick::Overlay | Pick::Both) {
            if let Some((k, Some(v))) = over.next() {
                out.push((k.clone(), value(v)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KvPair {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn overlay_wins_and_hides() {
        let base = vec![kv("a", "1"), kv("b", "1"), kv("c", "1"), kv("e", "1")];
        let mut ov = Overlay::new();
        ov.insert(b"b".to_vec(), None);
        ov.insert(b"c".to_vec(), Some(b"2".to_vec()));
        ov.insert(b"d".to_vec(), Some(b"2".to_vec()));
        ov.insert(b"f".to_vec(), None);
        let r = bounds(b"", None).unwrap();
        let got = merge_scan(base.clone().into_iter().map(Ok), &ov, r, usize::MAX).unwrap();
        assert_eq!(
            got,
            vec![kv("a", "1"), kv("c", "2"), kv("d", "2"), kv("e", "1")]
        );
        let got = merge_scan(base.into_iter().map(Ok), &ov, r, 2).unwrap();
        assert_eq!(got, vec![kv("a", "1"), kv("c", "2")]);
    }

    #[test]
    fn empty_ranges() {
        assert!(bounds(b"b", Some(b"a")).is_none());
        assert!(bounds(b"a", Some(b"a")).is_none());
        assert!(bounds(b"a", Some(b"b")).is_some());
    }
}

//! Device IDs of the files layout (RFC 8881 13.2.1): a device is the set of
//! data servers a file is striped over, so its ID is a bitmap of their
//! registry indices and needs no table to be read back.
//!
//! Format (16 bytes, `deviceid4`):
//!
//! | byte   | field                                         |
//! |--------|-----------------------------------------------|
//! | 0      | `b'P'` (magic)                                |
//! | 1      | version, 1                                    |
//! | 2..16  | bitmap: bit `i % 8` of byte `2 + i / 8` set when data server `i` is in the set |
//!
//! The data servers of a device are in ascending index order, which is
//! also the stripe index order of the stripe sets using it.

use crate::wire::deviceid4;

/// Device IDs are a bitmap of DS indices (14 bytes), so at most 112 DSes.
pub const MAX_DATA_SERVERS: usize = 112;
const DEVICEID_MAGIC: u8 = b'P';
const DEVICEID_VERSION: u8 = 1;

/// Device ID of a set of data servers; None if an index is out of range
/// (at least [`MAX_DATA_SERVERS`]).
pub fn encode(ds: &[u32]) -> Option<deviceid4> {
    let mut id = [0u8; 16];
    id[0] = DEVICEID_MAGIC;
    id[1] = DEVICEID_VERSION;
    for &d in ds {
        let d = d as usize;
        if d >= MAX_DATA_SERVERS {
            return None;
        }
        id[2 + d / 8] |= 1 << (d % 8);
    }
    Some(id)
}

/// The DS indices of a device ID, ascending; None if it is not one of ours
/// or names no data server.
pub fn decode(id: &deviceid4) -> Option<Vec<u32>> {
    if id[0] != DEVICEID_MAGIC || id[1] != DEVICEID_VERSION {
        return None;
    }
    let ds: Vec<u32> = (0..MAX_DATA_SERVERS).filter(|d| id[2 + d / 8] & (1 << (d % 8)) != 0).map(|d| d as u32).collect();
    (!ds.is_empty()).then_some(ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_ids() {
        let id = encode(&[0, 5, 111]).unwrap();
        assert_eq!(id[..3], [b'P', 1, 0b0010_0001]);
        assert_eq!(id[15], 0b1000_0000);
        assert_eq!(decode(&id), Some(vec![0, 5, 111]));
        assert_eq!(decode(&[0u8; 16]), None, "not ours");
        assert_eq!(decode(&encode(&[]).unwrap()), None, "no data server");
        assert_eq!(encode(&[MAX_DATA_SERVERS as u32]), None);
        let mut v2 = id;
        v2[1] = 2;
        assert_eq!(decode(&v2), None, "another version");
    }

    proptest! {
        #[test]
        fn round_trip(set in proptest::collection::btree_set(0u32..MAX_DATA_SERVERS as u32, 1..20)) {
            let ds: Vec<u32> = set.into_iter().collect();
            prop_assert_eq!(decode(&encode(&ds).unwrap()), Some(ds));
        }

        #[test]
        fn any_bytes_decode_without_panic(id in proptest::array::uniform16(any::<u8>())) {
            if let Some(ds) = decode(&id) {
                prop_assert_eq!(encode(&ds), Some(id));
            }
        }
    }
}

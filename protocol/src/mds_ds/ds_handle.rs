//! DS filehandles: part of the MDS-DS contract.
//!
//! The MDS mints a 16-byte identity per object ([`Identity`]) and hands
//! clients the identity followed by a 16-byte tag keyed by the cluster key
//! ([`Purpose::DsFileHandle`]). A data server accepts a handle from an NFS
//! client only with a valid tag, so a handle cannot be guessed from an inode
//! number or altered to reach another object (BADHANDLE). Control calls,
//! which are authenticated themselves, carry the bare identity.
//!
//! [`Purpose::DsFileHandle`]: crate::seal::Purpose::DsFileHandle

use crate::seal::TagKey;

/// Bytes of the object identity (the data server's object name).
pub const IDENTITY_LEN: usize = 16;
const MAGIC: u8 = b'D';
const VERSION: u8 = 1;

/// The identity of one stripe object, 16 bytes on the wire:
///
/// | byte  | field                                    |
/// |-------|------------------------------------------|
/// | 0     | `b'D'` (magic)                           |
/// | 1     | version, 1                               |
/// | 2     | stripe index (u8)                        |
/// | 3     | reserved, 0                              |
/// | 4..12 | inode of the MDS file, u64 big-endian    |
/// | 12..16| generation of that inode, u32 big-endian |
///
/// Inode 0 is never a file: the data server uses the all-zero identity
/// fields as its root handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub stripe: u8,
    pub ino: u64,
    pub generation: u32,
}

impl Identity {
    pub fn to_bytes(&self) -> [u8; IDENTITY_LEN] {
        let mut b = [0u8; IDENTITY_LEN];
        b[0] = MAGIC;
        b[1] = VERSION;
        b[2] = self.stripe;
        b[4..12].copy_from_slice(&self.ino.to_be_bytes());
        b[12..16].copy_from_slice(&self.generation.to_be_bytes());
        b
    }

    /// None for anything not in the format above (wrong length, magic,
    /// version or reserved byte).
    pub fn parse(b: &[u8]) -> Option<Identity> {
        let b: &[u8; IDENTITY_LEN] = b.try_into().ok()?;
        if b[0] != MAGIC || b[1] != VERSION || b[3] != 0 {
            return None;
        }
        let ino = u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
        Some(Identity { stripe: b[2], ino, generation: u32::from_be_bytes([b[12], b[13], b[14], b[15]]) })
    }
}
/// Bytes of the handle a client holds: identity and tag.
pub const SEALED_LEN: usize = IDENTITY_LEN + 16;

/// The handle a client gets in a layout or from GETFH.
pub fn seal(key: &TagKey, identity: &[u8; IDENTITY_LEN]) -> [u8; SEALED_LEN] {
    let mut out = [0u8; SEALED_LEN];
    out[..IDENTITY_LEN].copy_from_slice(identity);
    out[IDENTITY_LEN..].copy_from_slice(&key.tag::<16>(&[identity]));
    out
}

/// The identity inside a client's handle; None when the length or the tag
/// is wrong (NFS4ERR_BADHANDLE).
pub fn open(key: &TagKey, handle: &[u8]) -> Option<[u8; IDENTITY_LEN]> {
    if handle.len() != SEALED_LEN {
        return None;
    }
    let identity: [u8; IDENTITY_LEN] = handle[..IDENTITY_LEN].try_into().ok()?;
    key.verify::<16>(&[&identity], &handle[IDENTITY_LEN..]).then_some(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::{ClusterKey, Purpose};
    use proptest::prelude::*;

    #[test]
    fn identity_layout() {
        let id = Identity { stripe: 2, ino: 0x0102030405060708, generation: 9 };
        assert_eq!(id.to_bytes(), [b'D', 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9]);
        assert_eq!(Identity::parse(&id.to_bytes()), Some(id));
        let good = id.to_bytes();
        assert_eq!(Identity::parse(&good[..15]), None);
        assert_eq!(Identity::parse(&[good.as_slice(), &[0]].concat()), None);
        for (i, v) in [(0, b'P'), (1, 2), (3, 1)] {
            let mut b = good;
            b[i] = v;
            assert_eq!(Identity::parse(&b), None, "byte {i}");
        }
    }

    proptest! {
        #[test]
        fn identities_round_trip(stripe in any::<u8>(), ino in any::<u64>(), generation in any::<u32>()) {
            let id = Identity { stripe, ino, generation };
            prop_assert_eq!(Identity::parse(&id.to_bytes()), Some(id));
        }

        #[test]
        fn any_bytes_parse_without_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(id) = Identity::parse(&b) {
                prop_assert_eq!(&id.to_bytes()[..], &b[..]);
            }
        }
    }

    #[test]
    fn sealed_handles_open_only_unaltered_and_with_the_key() {
        let key = ClusterKey::from_bytes([1; 32]).derive(Purpose::DsFileHandle);
        let id = *b"D\x01\x02\x00\x00\x00\x00\x00\x00\x00\x00\x2a\x00\x00\x00\x07";
        let h = seal(&key, &id);
        assert_eq!(open(&key, &h), Some(id));
        for i in 0..SEALED_LEN {
            let mut bad = h;
            bad[i] ^= 1;
            assert_eq!(open(&key, &bad), None, "byte {i} altered");
        }
        assert_eq!(open(&key, &h[..IDENTITY_LEN]), None, "bare identity");
        let other = ClusterKey::from_bytes([2; 32]).derive(Purpose::DsFileHandle);
        assert_eq!(open(&other, &h), None);
        let wrong_purpose = ClusterKey::from_bytes([1; 32]).derive(Purpose::MdsFileHandle);
        assert_eq!(open(&wrong_purpose, &h), None);
    }
}

//! DS filehandles as clients see them: part of the MDS-DS contract.
//!
//! The MDS mints a 16-byte identity per object (layout in the data server's
//! `fh.rs`: magic, version, stripe, inode, generation) and hands clients the
//! identity followed by a 16-byte tag keyed by the cluster key
//! ([`Purpose::DsFileHandle`]). A data server accepts a handle from an NFS
//! client only with a valid tag, so a handle cannot be guessed from an inode
//! number or altered to reach another object (BADHANDLE). Control calls,
//! which are authenticated themselves, carry the bare identity.
//!
//! [`Purpose::DsFileHandle`]: crate::seal::Purpose::DsFileHandle

use crate::seal::TagKey;

/// Bytes of the object identity (the data server's object name).
pub const IDENTITY_LEN: usize = 16;
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

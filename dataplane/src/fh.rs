//! DS filehandles, minted by the MDS and opaque to clients.
//!
//! Format (16 bytes, `pnfs_protocol::mds_ds::ds_handle::Identity`):
//!
//! | byte  | field                                  |
//! |-------|----------------------------------------|
//! | 0     | `b'D'` (magic)                         |
//! | 1     | version, 1                             |
//! | 2     | stripe index (u8)                      |
//! | 3     | reserved, 0                            |
//! | 4..12 | inode of the MDS file, u64 big-endian  |
//! | 12..16| generation of that inode, u32 big-endian |
//!
//! Clients never see this form alone: they get it sealed with a tag keyed by
//! the cluster key (`pnfs_protocol::ds_handle`, 32 bytes), and PUTFH takes
//! nothing else ([`DsFh::open`]). Control calls carry the bare 16 bytes.
//!
//! Inode 0 is never an object: `D 1 0 0 | 0 | 0` is the DS's root handle
//! (PUTROOTFH), a directory with no entries. An object is stored as the file
//! `<data_dir>/objects/<32 hex digits of the handle>`; a handle with no such
//! file (never created, or removed) is NFS4ERR_STALE, a handle of any other
//! shape is NFS4ERR_BADHANDLE.

use pnfs_protocol::mds_ds::ds_handle::{self, Identity};
use pnfs_protocol::seal::TagKey;
use pnfs_protocol::wire::nfsstat4;

pub const FH_LEN: usize = ds_handle::IDENTITY_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DsFh {
    pub stripe: u8,
    pub ino: u64,
    pub generation: u32,
}

impl DsFh {
    pub const ROOT: DsFh = DsFh { stripe: 0, ino: 0, generation: 0 };

    pub fn to_bytes(&self) -> [u8; FH_LEN] {
        Identity { stripe: self.stripe, ino: self.ino, generation: self.generation }.to_bytes()
    }

    /// BADHANDLE for anything not in the format above.
    pub fn parse(b: &[u8]) -> Result<DsFh, nfsstat4> {
        let Identity { stripe, ino, generation } = Identity::parse(b).ok_or(nfsstat4::NFS4ERR_BADHANDLE)?;
        let fh = DsFh { stripe, ino, generation };
        if fh.ino == 0 && fh != DsFh::ROOT {
            return Err(nfsstat4::NFS4ERR_BADHANDLE);
        }
        Ok(fh)
    }

    /// The handle a client gets (GETFH, FATTR4_FILEHANDLE).
    pub fn seal(&self, key: &TagKey) -> [u8; ds_handle::SEALED_LEN] {
        ds_handle::seal(key, &self.to_bytes())
    }

    /// A client's handle: BADHANDLE unless its tag is ours and unaltered.
    pub fn open(b: &[u8], key: &TagKey) -> Result<DsFh, nfsstat4> {
        let identity = ds_handle::open(key, b).ok_or(nfsstat4::NFS4ERR_BADHANDLE)?;
        DsFh::parse(&identity)
    }

    pub fn is_root(&self) -> bool {
        *self == DsFh::ROOT
    }

    /// File name of the object: the handle's bytes in lowercase hex.
    pub fn object_name(&self) -> String {
        self.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Inverse of [`DsFh::object_name`] (for scans of the object directory).
    pub fn from_object_name(name: &str) -> Option<DsFh> {
        if name.len() != FH_LEN * 2 || !name.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut b = [0u8; FH_LEN];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&name[2 * i..2 * i + 2], 16).ok()?;
        }
        DsFh::parse(&b).ok().filter(|f| !f.is_root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_layout() {
        let fh = DsFh { stripe: 3, ino: 0x0102_0304_0506_0708, generation: 0x0a0b_0c0d };
        let b = fh.to_bytes();
        assert_eq!(b, [b'D', 1, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(DsFh::parse(&b).unwrap(), fh);
        assert_eq!(fh.object_name(), "4401030001020304050607080a0b0c0d");
        assert_eq!(DsFh::from_object_name(&fh.object_name()), Some(fh));
        assert!(DsFh::parse(&DsFh::ROOT.to_bytes()).unwrap().is_root());
    }

    #[test]
    fn foreign_handles_are_badhandle() {
        let good = DsFh { stripe: 0, ino: 9, generation: 1 }.to_bytes();
        assert_eq!(DsFh::parse(&good[..15]).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        assert_eq!(DsFh::parse(&[0u8; 17]).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        assert_eq!(DsFh::parse(b"").unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        for (i, v) in [(0, b'P'), (1, 2), (3, 1)] {
            let mut b = good;
            b[i] = v;
            assert_eq!(DsFh::parse(&b).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE, "byte {i}");
        }
        // inode 0 with anything else set is not the root
        let mut b = DsFh::ROOT.to_bytes();
        b[15] = 1;
        assert_eq!(DsFh::parse(&b).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        assert_eq!(DsFh::from_object_name("zz"), None);
        assert_eq!(DsFh::from_object_name(&DsFh::ROOT.object_name()), None);
    }

    #[test]
    fn clients_need_the_sealed_form() {
        let key = TagKey::ephemeral();
        let fh = DsFh { stripe: 1, ino: 42, generation: 0x5eed };
        assert_eq!(DsFh::open(&fh.seal(&key), &key).unwrap(), fh);
        assert_eq!(DsFh::open(&fh.to_bytes(), &key).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        // A neighbour's identity with this handle's tag: refused.
        let mut forged = fh.seal(&key);
        forged[11] = 43;
        assert_eq!(DsFh::open(&forged, &key).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        assert_eq!(DsFh::open(&fh.seal(&TagKey::ephemeral()), &key).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
    }
}

//! MDS filehandles: 32 bytes, `P` 2 export_id(u16) ino(u64) generation(u32)
//! and a 16-byte tag keyed by the cluster key.
//!
//! Stable across restarts (no boot epoch inside), so clients keep using
//! them after a server restart. The tag binds the export to the inode: a
//! client cannot move a handle into another export (whose allow-list or
//! root squash differs) or guess one from an inode number; generations are
//! random, so a handle of a removed file never names the inode's next use.

use pnfs_protocol::seal::TagKey;
use pnfs_protocol::wire::nfsstat4;

const BODY_LEN: usize = 16;
pub const FH_LEN: usize = BODY_LEN + 16;
const MAGIC: u8 = b'P';
const VERSION: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle {
    /// 0 = the pseudo root; otherwise an export's id.
    pub export_id: u16,
    pub ino: u64,
    pub generation: u32,
}

impl FileHandle {
    fn body(&self) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        b[0] = MAGIC;
        b[1] = VERSION;
        b[2..4].copy_from_slice(&self.export_id.to_be_bytes());
        b[4..12].copy_from_slice(&self.ino.to_be_bytes());
        b[12..16].copy_from_slice(&self.generation.to_be_bytes());
        b
    }

    pub fn to_bytes(&self, key: &TagKey) -> [u8; FH_LEN] {
        let body = self.body();
        let mut b = [0u8; FH_LEN];
        b[..BODY_LEN].copy_from_slice(&body);
        b[BODY_LEN..].copy_from_slice(&key.tag::<16>(&[&body]));
        b
    }

    /// The inode a handle names, unchecked (no tag check): a scheduling
    /// hint only (`compound::runs_inline`), never an access decision.
    pub fn ino_unchecked(b: &[u8]) -> Option<u64> {
        if b.len() != FH_LEN || b[0] != MAGIC || b[1] != VERSION {
            return None;
        }
        Some(u64::from_be_bytes(b[4..12].try_into().ok()?))
    }

    /// BADHANDLE for anything we did not mint: wrong size, magic or
    /// version, or a tag that does not match (forged or altered).
    pub fn parse(b: &[u8], key: &TagKey) -> Result<FileHandle, nfsstat4> {
        if b.len() != FH_LEN || b[0] != MAGIC || b[1] != VERSION || !key.verify::<16>(&[&b[..BODY_LEN]], &b[BODY_LEN..]) {
            return Err(nfsstat4::NFS4ERR_BADHANDLE);
        }
        Ok(FileHandle {
            export_id: u16::from_be_bytes([b[2], b[3]]),
            ino: u64::from_be_bytes(b[4..12].try_into().expect("8 bytes")),
            generation: u32::from_be_bytes(b[12..16].try_into().expect("4 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects_foreign_handles() {
        let key = TagKey::ephemeral();
        let fh = FileHandle { export_id: 3, ino: 0x1234_5678_9abc, generation: 7 };
        assert_eq!(FileHandle::parse(&fh.to_bytes(&key), &key).unwrap(), fh);
        assert_eq!(FileHandle::parse(b"short", &key).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        let mut b = fh.to_bytes(&key);
        b[0] = 0;
        assert_eq!(FileHandle::parse(&b, &key).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        // Moved to another export, or to the pseudo root, or another inode:
        // the tag no longer matches.
        for (i, v) in [(3, 0u8), (3, 1), (11, 0xbd), (15, 8)] {
            let mut b = fh.to_bytes(&key);
            b[i] = v;
            assert_eq!(FileHandle::parse(&b, &key).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE, "byte {i} = {v}");
        }
        assert_eq!(FileHandle::parse(&fh.to_bytes(&TagKey::ephemeral()), &key).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
    }
}

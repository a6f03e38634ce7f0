//! MDS filehandles: 16 bytes, `P` 1 export_id(u16) ino(u64) generation(u32).
//! Stable across restarts (no boot epoch inside), so clients keep using
//! them after a server restart.

use pnfs_protocol::wire::nfsstat4;

pub const FH_LEN: usize = 16;
const MAGIC: u8 = b'P';
const VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle {
    /// 0 = the pseudo root; otherwise an export's id.
    pub export_id: u16,
    pub ino: u64,
    pub generation: u32,
}

impl FileHandle {
    pub fn to_bytes(&self) -> [u8; FH_LEN] {
        let mut b = [0u8; FH_LEN];
        b[0] = MAGIC;
        b[1] = VERSION;
        b[2..4].copy_from_slice(&self.export_id.to_be_bytes());
        b[4..12].copy_from_slice(&self.ino.to_be_bytes());
        b[12..16].copy_from_slice(&self.generation.to_be_bytes());
        b
    }

    /// BADHANDLE for anything we did not mint (wrong size, magic or version).
    pub fn parse(b: &[u8]) -> Result<FileHandle, nfsstat4> {
        if b.len() != FH_LEN || b[0] != MAGIC || b[1] != VERSION {
            return Err(nfsstat4::NFS4ERR_BADHANDLE);
        }
        Ok(FileHandle {
            export_id: u16::from_be_bytes([b[2], b[3]]),
            ino: u64::from_be_bytes(b[4..12].try_into().unwrap()),
            generation: u32::from_be_bytes(b[12..16].try_into().unwrap()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects_foreign_handles() {
        let fh = FileHandle { export_id: 3, ino: 0x1234_5678_9abc, generation: 7 };
        assert_eq!(FileHandle::parse(&fh.to_bytes()).unwrap(), fh);
        assert_eq!(FileHandle::parse(b"short").unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
        let mut b = fh.to_bytes();
        b[0] = 0;
        assert_eq!(FileHandle::parse(&b).unwrap_err(), nfsstat4::NFS4ERR_BADHANDLE);
    }
}

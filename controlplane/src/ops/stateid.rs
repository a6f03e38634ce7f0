//! Stateid rules shared by the operations (RFC 8881 8.2): special stateids,
//! the current stateid, and seqid 0 meaning "the current version".

use crate::compound::Compound;
use crate::mds::Mds;
use crate::namespace::NfsResult;
pub use crate::state::{check_seqid, stateid, IoMode};
use pnfs_protocol::wire::*;

pub fn is_anonymous(s: &stateid4) -> bool {
    s.seqid == 0 && s.other == [0; 12]
}

pub fn is_bypass(s: &stateid4) -> bool {
    s.seqid == u32::MAX && s.other == [0xff; 12]
}

/// Replaces the "current stateid" (seqid 1, other 0) with the one an
/// earlier op of this COMPOUND produced.
pub fn resolve(c: &Compound, s: &stateid4) -> NfsResult<stateid4> {
    if s.seqid == 1 && s.other == [0; 12] {
        return c.current_stateid.clone().ok_or(nfsstat4::NFS4ERR_BAD_STATEID);
    }
    Ok(s.clone())
}

/// Checks a stateid used for I/O on `ino`. Returns true for the special
/// (anonymous or bypass) stateids, where the caller checks permissions.
pub fn check_io_stateid(m: &Mds, c: &Compound, s: &stateid4, ino: u64, mode: IoMode) -> NfsResult<bool> {
    let s = resolve(c, s)?;
    if is_anonymous(&s) || is_bypass(&s) {
        return Ok(true);
    }
    if s.other == [0; 12] || s.other == [0xff; 12] {
        return Err(nfsstat4::NFS4ERR_BAD_STATEID);
    }
    let clientid = c.clientid()?;
    m.state().check_io(clientid, &s, ino, mode)?;
    Ok(false)
}

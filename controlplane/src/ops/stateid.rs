//! Stateid rules shared by the operations (RFC 8881 8.2): special stateids,
//! the current stateid, and seqid 0 meaning "the current version".

use crate::compound::Compound;
use crate::mds::Mds;
use crate::namespace::NfsResult;
use crate::state::{StateKind, StateOther, StateRec, StateTable};
use pnfs_protocol::wire::*;


#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    Read,
    Write,
}

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

/// Finds a state of `clientid`, checking the seqid (0 = current version).
/// A stateid of an earlier server instance (another boot epoch in its
/// first 4 bytes) is NFS4ERR_STALE_STATEID, so the client recovers its lease.
pub fn find<'t>(st: &'t StateTable, clientid: u64, s: &stateid4) -> NfsResult<&'t StateRec> {
    let rec = st.states.get(&s.other).ok_or_else(|| unknown(st, &s.other))?;
    if rec.clientid != clientid {
        return Err(nfsstat4::NFS4ERR_BAD_STATEID);
    }
    if rec.revoked {
        return Err(crate::ops::deleg::revoked_status(rec));
    }
    check_seqid(rec.seqid, s.seqid)?;
    Ok(rec)
}

/// The error for an `other` not in the table: STALE when minted by another
/// boot, BAD otherwise.
pub fn unknown(st: &StateTable, other: &StateOther) -> nfsstat4 {
    if other[..4] != st.epoch.to_be_bytes() {
        nfsstat4::NFS4ERR_STALE_STATEID
    } else {
        nfsstat4::NFS4ERR_BAD_STATEID
    }
}

pub fn check_seqid(current: u32, given: u32) -> NfsResult<()> {
    if given == 0 || given == current {
        Ok(())
    } else if given < current {
        Err(nfsstat4::NFS4ERR_OLD_STATEID)
    } else {
        Err(nfsstat4::NFS4ERR_BAD_STATEID)
    }
}

/// Share access a stateid grants for I/O (what data servers are told);
/// None for layout stateids.
pub fn io_access(st: &StateTable, rec: &StateRec) -> Option<u32> {
    match &rec.kind {
        StateKind::Open { access, .. } => Some(*access),
        StateKind::Lock { open, .. } => match st.states.get(open) {
            Some(StateRec { kind: StateKind::Open { access, .. }, .. }) => Some(*access),
            _ => None,
        },
        StateKind::Deleg { write } => Some(crate::ops::deleg::share_access(*write)),
        StateKind::Layout { .. } => None,
    }
}

pub fn stateid(other: &StateOther, seqid: u32) -> stateid4 {
    stateid4 { seqid, other: *other }
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
    let st = m.state();
    let rec = find(&st, clientid, &s)?;
    if rec.ino != ino {
        return Err(nfsstat4::NFS4ERR_BAD_STATEID);
    }
    let access = match &rec.kind {
        StateKind::Open { access, .. } => *access,
        StateKind::Lock { open, .. } => match st.states.get(open) {
            Some(StateRec { kind: StateKind::Open { access, .. }, .. }) => *access,
            _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
        },
        StateKind::Deleg { write } => crate::ops::deleg::share_access(*write),
        // Layout stateids are never valid for I/O (RFC 8881 13.9.1).
        StateKind::Layout { .. } => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
    };
    // Reads through a write-only open are allowed (the client fills pages).
    if mode == IoMode::Write && access & OPEN4_SHARE_ACCESS_WRITE == 0 {
        return Err(nfsstat4::NFS4ERR_OPENMODE);
    }
    Ok(false)
}

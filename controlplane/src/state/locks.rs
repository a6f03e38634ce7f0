//! Lock stateids and byte-range locks (RFC 8881 9.4, 18.10-18.12): POSIX
//! semantics per lock owner. A file's locks live with its other state, in
//! its shard: a LOCK costs the locks on that file only.

use super::*;
use pnfs_protocol::wire::{OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByteLock {
    pub clientid: u64,
    pub owner: Vec<u8>,
    pub start: u64,
    /// Exclusive end; u64::MAX means "to end of file".
    pub end: u64,
    pub write: bool,
}

impl ByteLock {
    pub(super) fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// The (start, exclusive end) of a LOCK's offset and length.
pub fn lock_range(offset: u64, length: u64) -> Result<(u64, u64), nfsstat4> {
    if length == 0 {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    if length == u64::MAX {
        return Ok((offset, u64::MAX));
    }
    match offset.checked_add(length) {
        Some(end) => Ok((offset, end)),
        None => Err(nfsstat4::NFS4ERR_INVAL),
    }
}

/// Who asks for a lock (LOCK's locker4).
pub enum Locker<'a> {
    /// A lock owner new to this file: its open stateid and owner.
    New { open: &'a stateid4, owner: &'a [u8] },
    /// A lock stateid of an owner that locked before.
    Existing { lock: &'a stateid4 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum LockOutcome {
    Granted(stateid4),
    /// Someone else's lock is in the way.
    Denied(ByteLock),
}

/// First lock of someone else that conflicts with the request.
pub(super) fn conflict<'l>(locks: &'l [ByteLock], clientid: u64, owner: &[u8], start: u64, end: u64, write: bool) -> Option<&'l ByteLock> {
    visit(locks.len());
    locks.iter().find(|l| l.overlaps(start, end) && (l.write || write) && !(l.clientid == clientid && l.owner == owner))
}

/// POSIX semantics: the new range replaces this owner's overlapping ranges
/// (splitting them); `write == None` unlocks.
pub(super) fn set_lock(locks: &mut Vec<ByteLock>, clientid: u64, owner: &[u8], start: u64, end: u64, write: Option<bool>) {
    let mut keep = Vec::with_capacity(locks.len() + 2);
    for l in locks.drain(..) {
        if l.clientid != clientid || l.owner != owner || !l.overlaps(start, end) {
            keep.push(l);
            continue;
        }
        if l.start < start {
            keep.push(ByteLock { end: start, ..l.clone() });
        }
        if l.end > end {
            keep.push(ByteLock { start: end, ..l.clone() });
        }
    }
    if let Some(w) = write {
        keep.push(ByteLock { clientid, owner: owner.to_vec(), start, end, write: w });
    }
    *locks = keep;
}

pub(super) fn owner_holds(locks: &[ByteLock], clientid: u64, owner: &[u8]) -> bool {
    visit(locks.len());
    locks.iter().any(|l| l.clientid == clientid && l.owner == owner)
}

impl StateStore {
    /// LOCK of [start, end) on `ino` (grace already checked by the caller).
    /// A lock owner new to the file gets a lock stateid (seqid 1 once
    /// granted), allowed on the data servers when the client holds a layout.
    #[allow(clippy::too_many_arguments)]
    pub fn lock(
        &self,
        client: &Arc<ClientEntry>,
        ino: u64,
        locker: Locker<'_>,
        start: u64,
        end: u64,
        write: bool,
        fx: &mut Effects,
    ) -> NfsResult<LockOutcome> {
        let clientid = client.clientid;
        let given = match &locker {
            Locker::New { open, .. } => *open,
            Locker::Existing { lock } => *lock,
        };
        if given.other[11] as usize % FILE_SHARDS != mix(ino) % FILE_SHARDS {
            // Not a stateid of this file (it lives in another shard): the
            // error it gets on its own, else BAD_STATEID. One shard at a time.
            let err = self.checked(&self.shard_of(&given.other), clientid, given).err();
            return Err(err.unwrap_or(nfsstat4::NFS4ERR_BAD_STATEID));
        }
        let mut guard = self.file_shard(ino);
        let sh = &mut *guard;
        // The lock stateid (None: to create) and owner, and the open's access.
        let (existing, owner, open_other, open_access) = match locker {
            Locker::New { open, owner } => {
                let rec = self.checked_on(sh, clientid, ino, open)?;
                let access = match &rec.kind {
                    StateKind::Open { access, .. } => *access,
                    _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
                };
                let existing = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)).and_then(|cof| {
                    visit(cof.lockers.len());
                    cof.lockers.iter().find(|(o, _)| o[..] == owner[..]).map(|(_, other)| *other)
                });
                (existing, owner.to_vec(), open.other, access)
            }
            Locker::Existing { lock } => {
                let rec = self.checked_on(sh, clientid, ino, lock)?;
                let (owner, open) = match &rec.kind {
                    StateKind::Lock { owner, open } => (owner.clone(), *open),
                    _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
                };
                let access = match sh.states.get(&open).map(|r| &r.kind) {
                    Some(StateKind::Open { access, .. }) => *access,
                    _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
                };
                (Some(lock.other), owner, open, access)
            }
        };
        let needed = if write { OPEN4_SHARE_ACCESS_WRITE } else { OPEN4_SHARE_ACCESS_READ };
        if open_access & needed == 0 {
            return Err(nfsstat4::NFS4ERR_OPENMODE);
        }
        if let Some(l) = sh.files.get(&ino).and_then(|f| conflict(&f.locks, clientid, &owner, start, end, write)) {
            return Ok(LockOutcome::Denied(l.clone()));
        }
        let other = match existing {
            Some(o) => o,
            None => {
                let rec = StateRec { clientid, ino, seqid: 0, kind: StateKind::Lock { owner: owner.clone(), open: open_other }, revoked: false };
                self.insert(sh, client, rec, fx)?
            }
        };
        let file = sh.files.get_mut(&ino).expect("the lock state indexes the file");
        set_lock(&mut file.locks, clientid, &owner, start, end, Some(write));
        if self.journal {
            fx.records.push(StateChange::ByteLocks { ino, clientid, locks: locks_of(&file.locks, clientid) });
        }
        let rec = sh.states.get_mut(&other).expect("found or created");
        rec.seqid += 1;
        let sid = stateid(&other, rec.seqid);
        self.changed(sh, &other, fx);
        self.allow_if_layout(sh, clientid, ino, &sid, fx);
        Ok(LockOutcome::Granted(sid))
    }

    /// The byte-range locks on `ino`, sorted (tests compare stores).
    #[cfg(test)]
    pub(crate) fn locks_on(&self, ino: u64) -> Vec<ByteLock> {
        let sh = self.file_shard(ino);
        let mut locks = sh.files.get(&ino).map_or(vec![], |f| f.locks.clone());
        locks.sort_by(|x, y| (x.clientid, &x.owner, x.start, x.end, x.write).cmp(&(y.clientid, &y.owner, y.start, y.end, y.write)));
        locks
    }

    /// LOCKT: the first lock of someone else in the way, if any.
    pub fn lockt(&self, clientid: u64, ino: u64, owner: &[u8], start: u64, end: u64, write: bool) -> Option<ByteLock> {
        let sh = self.file_shard(ino);
        sh.files.get(&ino).and_then(|f| conflict(&f.locks, clientid, owner, start, end, write)).cloned()
    }

    /// LOCKU of [start, end) with a lock stateid of `clientid` on `ino`.
    pub fn locku(&self, clientid: u64, ino: u64, s: &stateid4, start: u64, end: u64, fx: &mut Effects) -> NfsResult<stateid4> {
        let mut guard = self.shard_of(&s.other);
        let sh = &mut *guard;
        let rec = self.checked_on(sh, clientid, ino, s)?;
        let owner = match &rec.kind {
            StateKind::Lock { owner, .. } => owner.clone(),
            _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
        };
        if let Some(file) = sh.files.get_mut(&ino) {
            set_lock(&mut file.locks, clientid, &owner, start, end, None);
            if self.journal {
                fx.records.push(StateChange::ByteLocks { ino, clientid, locks: locks_of(&file.locks, clientid) });
            }
        }
        let rec = sh.states.get_mut(&s.other).expect("checked");
        rec.seqid += 1;
        let sid = stateid(&s.other, rec.seqid);
        self.changed(sh, &s.other, fx);
        Ok(sid)
    }
}

/// The locks of `clientid` among a file's (its `ByteLocks` record).
fn locks_of(locks: &[ByteLock], clientid: u64) -> Vec<ByteLock> {
    locks.iter().filter(|l| l.clientid == clientid).cloned().collect()
}

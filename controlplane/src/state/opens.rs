//! Open stateids and share reservations (RFC 8881 9.7, 18.16-18.20):
//! OPEN (and its upgrade), OPEN_DOWNGRADE, CLOSE, TEST_STATEID,
//! FREE_STATEID, and the stateid check of READ/WRITE/SETATTR.

use super::*;
use pnfs_protocol::wire::{OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    Read,
    Write,
}

/// Share reservations of a file as counts: how many opens hold each access
/// and each deny bit (READ = 1, WRITE = 2), so an OPEN's check costs O(1)
/// whatever the number of opens on the file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ShareCounts {
    access: [u32; 2],
    deny: [u32; 2],
    /// Open stateids on the file.
    opens: u32,
}

impl ShareCounts {
    pub(super) fn add(&mut self, access: u32, deny: u32) {
        self.opens += 1;
        for b in 0..2 {
            self.access[b] += (access >> b) & 1;
            self.deny[b] += (deny >> b) & 1;
        }
    }

    pub(super) fn sub(&mut self, access: u32, deny: u32) {
        self.opens -= 1;
        for b in 0..2 {
            self.access[b] -= (access >> b) & 1;
            self.deny[b] -= (deny >> b) & 1;
        }
    }

    /// Whether `access`/`deny` conflicts with the opens counted, less the
    /// opener's own (`mine`: its current access and deny on the file).
    fn conflicts(&self, access: u32, deny: u32, mine: (u32, u32)) -> bool {
        (0..2).any(|b| {
            let others_deny = self.deny[b] - ((mine.1 >> b) & 1);
            let others_access = self.access[b] - ((mine.0 >> b) & 1);
            ((access >> b) & 1 == 1 && others_deny > 0) || ((deny >> b) & 1 == 1 && others_access > 0)
        })
    }
}

/// Why an OPEN was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRefused {
    pub status: nfsstat4,
    /// For NFS4ERR_SHARE_DENIED: the other clients whose opens conflict
    /// (one whose lease ran out may be released and the OPEN retried).
    pub holders: Vec<u64>,
}

impl From<nfsstat4> for OpenRefused {
    fn from(status: nfsstat4) -> Self {
        OpenRefused { status, holders: vec![] }
    }
}

/// Share access a state grants for I/O (what data servers are told); None
/// for layout stateids.
pub(super) fn io_access(states: &HashMap<StateOther, StateRec>, rec: &StateRec) -> Option<u32> {
    match &rec.kind {
        StateKind::Open { access, .. } => Some(*access),
        StateKind::Lock { open, .. } => match states.get(open) {
            Some(StateRec { kind: StateKind::Open { access, .. }, .. }) => Some(*access),
            _ => None,
        },
        // A read delegation allows reads only.
        StateKind::Deleg { write } => Some(if *write { OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WRITE } else { OPEN4_SHARE_ACCESS_READ }),
        StateKind::Layout { .. } => None,
    }
}

impl StateStore {
    /// OPEN of `ino` by `owner` of `client` (gated by [`Self::state_gate`]):
    /// checks the share reservations of other owners, then upgrades the
    /// owner's open stateid on the file or creates one. When the client
    /// holds a layout on the file, the stateid is to be allowed on the data
    /// servers; with `recall_rw` (an OPEN for write), the read/write layouts
    /// other clients hold on the file are to be recalled.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &self,
        client: &Arc<ClientEntry>,
        ino: u64,
        owner: &[u8],
        access: u32,
        deny: u32,
        recall_rw: bool,
        fx: &mut Effects,
    ) -> Result<stateid4, OpenRefused> {
        let clientid = client.clientid;
        let mut guard = self.file_shard(ino);
        let sh = &mut *guard;
        let mine: Option<StateOther> = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)).and_then(|cof| {
            visit(cof.opens.len());
            cof.opens.iter().find(|(o, _)| o[..] == owner[..]).map(|(_, other)| *other)
        });
        let mine_share = match mine.and_then(|o| sh.states.get(&o)).map(|r| &r.kind) {
            Some(StateKind::Open { access, deny, .. }) => (*access, *deny),
            _ => (0, 0),
        };
        if let Some(file) = sh.files.get(&ino) {
            if file.share.conflicts(access, deny, mine_share) {
                visit(file.by_client.len());
                let holders = file
                    .by_client
                    .iter()
                    .filter(|(id, _)| **id != clientid)
                    .filter(|(_, cof)| {
                        cof.opens.iter().any(|(_, o)| {
                            matches!(sh.states.get(o).map(|r| &r.kind),
                                Some(StateKind::Open { access: oa, deny: od, .. }) if od & access != 0 || deny & oa != 0)
                        })
                    })
                    .map(|(id, _)| *id)
                    .collect();
                return Err(OpenRefused { status: nfsstat4::NFS4ERR_SHARE_DENIED, holders });
            }
        }
        // Another client's conflicting delegation, granted since the
        // caller's recall check (`ops/deleg.rs`): DELAY, and the caller
        // recalls it. Checked in the lock grants take (`deleg.rs`).
        if self.deleg_blocks_open(sh, ino, clientid, access) {
            return Err(nfsstat4::NFS4ERR_DELAY.into());
        }
        let sid = match mine {
            Some(other) => {
                let rec = sh.states.get_mut(&other).expect("indexed");
                let (old_access, old_deny) = mine_share;
                if let StateKind::Open { access: oa, deny: od, .. } = &mut rec.kind {
                    *oa |= access;
                    *od |= deny;
                }
                rec.seqid += 1;
                let sid = stateid(&other, rec.seqid);
                let file = sh.files.get_mut(&ino).expect("indexed");
                file.share.sub(old_access, old_deny);
                file.share.add(old_access | access, old_deny | deny);
                self.changed(sh, &other, fx);
                sid
            }
            None => {
                let rec = StateRec { clientid, ino, seqid: 1, kind: StateKind::Open { owner: owner.to_vec(), access, deny }, revoked: false };
                stateid(&self.insert(sh, client, rec, fx)?, 1)
            }
        };
        self.allow_if_layout(sh, clientid, ino, &sid, fx);
        if recall_rw {
            self.recall_locked(sh, ino, Some(clientid), true, "conflicting open for write", fx);
        }
        Ok(sid)
    }

    /// A new or widened I/O stateid of a client that holds a layout on the
    /// file is allowed on the file's data servers too.
    pub(super) fn allow_if_layout(&self, sh: &FileShard, clientid: u64, ino: u64, sid: &stateid4, fx: &mut Effects) {
        let holds_layout = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)).is_some_and(|cof| cof.layout.is_some());
        if !holds_layout {
            return;
        }
        if let Some(access) = sh.states.get(&sid.other).and_then(|r| io_access(&sh.states, r)) {
            fx.ds_allow.push(DsAllow { clientid, ino, stateid: sid.clone(), access });
        }
    }

    /// OPEN_DOWNGRADE to `access`/`deny`, a subset of what the open holds.
    pub fn open_downgrade(&self, clientid: u64, ino: u64, s: &stateid4, access: u32, deny: u32, fx: &mut Effects) -> NfsResult<stateid4> {
        let mut guard = self.shard_of(&s.other);
        let sh = &mut *guard;
        let rec = self.checked_on(sh, clientid, ino, s)?;
        let (oa, od) = match &rec.kind {
            StateKind::Open { access, deny, .. } => (*access, *deny),
            _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
        };
        if access & !oa != 0 || deny & !od != 0 {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        let rec = sh.states.get_mut(&s.other).expect("checked");
        if let StateKind::Open { access: a, deny: d, .. } = &mut rec.kind {
            *a = access;
            *d = deny;
        }
        rec.seqid += 1;
        let sid = stateid(&s.other, rec.seqid);
        if let Some(file) = sh.files.get_mut(&ino) {
            file.share.sub(oa, od);
            file.share.add(access, deny);
        }
        self.changed(sh, &s.other, fx);
        Ok(sid)
    }

    /// CLOSE: the open and its lock stateids go (NFS4ERR_LOCKS_HELD while
    /// one of its lock owners holds a byte range). With `return_on_close`
    /// (RFC 8881 18.43.3), the client's last CLOSE of the file returns its
    /// layout too.
    pub fn close(&self, clientid: u64, ino: u64, s: &stateid4, return_on_close: bool, fx: &mut Effects) -> NfsResult<()> {
        let mut guard = self.shard_of(&s.other);
        let sh = &mut *guard;
        let rec = self.checked_on(sh, clientid, ino, s)?;
        if !matches!(rec.kind, StateKind::Open { .. }) {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        let Some(file) = sh.files.get(&ino) else { return Err(nfsstat4::NFS4ERR_SERVERFAULT) };
        let Some(cof) = file.by_client.get(&clientid) else { return Err(nfsstat4::NFS4ERR_SERVERFAULT) };
        // Lock states of this open go with it; held locks forbid the close.
        visit(cof.lockers.len());
        let lockers: Vec<StateOther> = cof
            .lockers
            .iter()
            .filter(|(_, o)| matches!(sh.states.get(o).map(|r| &r.kind), Some(StateKind::Lock { open, .. }) if *open == s.other))
            .map(|(_, o)| *o)
            .collect();
        for o in &lockers {
            if let Some(StateKind::Lock { owner, .. }) = sh.states.get(o).map(|r| &r.kind) {
                if locks::owner_holds(&file.locks, clientid, owner) {
                    return Err(nfsstat4::NFS4ERR_LOCKS_HELD);
                }
            }
        }
        for o in lockers {
            self.remove(sh, &o, fx);
        }
        self.remove(sh, &s.other, fx);
        if return_on_close {
            let cof = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid));
            if let Some(layout) = cof.filter(|c| c.opens.is_empty()).and_then(|c| c.layout) {
                self.remove(sh, &layout, fx);
            }
        }
        Ok(())
    }

    /// TEST_STATEID of one stateid (RFC 8881 18.48.3).
    pub fn test_stateid(&self, clientid: u64, s: &stateid4) -> nfsstat4 {
        if s.other == [0; 12] || s.other == [0xff; 12] {
            return nfsstat4::NFS4ERR_BAD_STATEID;
        }
        match self.checked(&self.shard_of(&s.other), clientid, s) {
            Ok(_) => nfsstat4::NFS4_OK,
            // Not among TEST_STATEID's codes.
            Err(nfsstat4::NFS4ERR_STALE_STATEID) => nfsstat4::NFS4ERR_BAD_STATEID,
            Err(e) => e,
        }
    }

    /// FREE_STATEID: a revoked state of any kind, a lock stateid whose owner
    /// holds no byte range, or a layout stateid (as if all its layouts were
    /// returned). An open stateid, or a delegation still in force, is
    /// NFS4ERR_LOCKS_HELD.
    pub fn free_stateid(&self, clientid: u64, s: &stateid4, fx: &mut Effects) -> NfsResult<()> {
        let mut guard = self.shard_of(&s.other);
        let sh = &mut *guard;
        if sh.states.get(&s.other).is_some_and(|r| r.clientid == clientid && r.revoked) {
            // A revoked delegation's record goes with its state, whoever revoked it.
            if self.remove(sh, &s.other, fx).is_some_and(|r| matches!(r.kind, StateKind::Deleg { .. })) {
                self.delegs().remove(&s.other);
            }
            return Ok(());
        }
        let rec = self.checked(sh, clientid, s)?;
        match &rec.kind {
            StateKind::Open { .. } => return Err(nfsstat4::NFS4ERR_LOCKS_HELD),
            StateKind::Lock { owner, .. } => {
                if sh.files.get(&rec.ino).is_some_and(|f| locks::owner_holds(&f.locks, clientid, owner)) {
                    return Err(nfsstat4::NFS4ERR_LOCKS_HELD);
                }
            }
            // A delegation in force is returned (DELEGRETURN), not freed.
            StateKind::Deleg { .. } => return Err(nfsstat4::NFS4ERR_LOCKS_HELD),
            StateKind::Layout { .. } => {}
        }
        self.remove(sh, &s.other, fx);
        Ok(())
    }

    /// Checks a (non-special) stateid used for I/O on `ino`.
    pub fn check_io(&self, clientid: u64, s: &stateid4, ino: u64, mode: IoMode) -> NfsResult<()> {
        let sh = self.shard_of(&s.other);
        let rec = self.checked_on(&sh, clientid, ino, s)?;
        // Layout stateids are never valid for I/O (RFC 8881 13.9.1).
        let access = io_access(&sh.states, rec).ok_or(nfsstat4::NFS4ERR_BAD_STATEID)?;
        // Reads through a write-only open are allowed (the client fills pages).
        if mode == IoMode::Write && access & OPEN4_SHARE_ACCESS_WRITE == 0 {
            return Err(nfsstat4::NFS4ERR_OPENMODE);
        }
        Ok(())
    }

    /// Whether other clients' opens of `ino` forbid a delegation to
    /// `clientid`: any open of theirs for a write delegation, an open for
    /// writing for a read one. O(the client's own opens of the file).
    pub fn others_open(&self, clientid: u64, ino: u64, write: bool) -> bool {
        others_open_locked(&self.file_shard(ino), clientid, ino, write)
    }

    /// Whether `other` is a state still valid for I/O here (not revoked):
    /// what the data servers may keep accepting.
    pub fn is_live(&self, other: &StateOther) -> bool {
        self.shard_of(other).states.get(other).is_some_and(|r| !r.revoked)
    }
}

/// [`StateStore::others_open`] in a locked shard (a delegation is granted
/// under the same lock: `deleg.rs`).
pub(super) fn others_open_locked(sh: &FileShard, clientid: u64, ino: u64, write: bool) -> bool {
    let Some(file) = sh.files.get(&ino) else { return false };
    let (mut mine, mut mine_writing) = (0, 0);
    if let Some(cof) = file.by_client.get(&clientid) {
        visit(cof.opens.len());
        for (_, o) in &cof.opens {
            mine += 1;
            if matches!(sh.states.get(o).map(|r| &r.kind), Some(StateKind::Open { access, .. }) if access & OPEN4_SHARE_ACCESS_WRITE != 0) {
                mine_writing += 1;
            }
        }
    }
    if write {
        file.share.opens > mine
    } else {
        file.share.access[1] > mine_writing
    }
}

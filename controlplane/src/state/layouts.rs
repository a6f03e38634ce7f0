//! Layout stateids (RFC 8881 12.5.2-12.5.5, 18.43-18.44) and recall
//! bookkeeping: one layout stateid per client and file, the recalls sent
//! and the deadline by which each must be answered (else the holder is
//! fenced).

use super::opens::io_access;
use super::*;

pub const LAYOUT_READ: u32 = 1;
pub const LAYOUT_RW: u32 = 2;

/// A CB_LAYOUTRECALL to send: the layout stateid with its seqid already
/// bumped (the client expects the recall to carry the next one), and the
/// filehandle the client got the layout with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRecall {
    pub other: StateOther,
    pub seqid: u32,
    pub clientid: u64,
    pub ino: u64,
    pub fh_export: u16,
    pub fh_generation: u32,
    /// The LAYOUTGET that granted it (a referring call of the recall).
    pub granted_by: Option<(SessionId, u32, u32)>,
    pub why: &'static str,
}

/// A recalled layout not yet returned: a client that keeps it past the
/// deadline (a lease) is fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecall {
    pub other: StateOther,
    pub clientid: u64,
    pub ino: u64,
    pub deadline: Instant,
}

fn is_special(s: &stateid4) -> bool {
    s.other == [0; 12] || s.other == [0xff; 12]
}

impl StateStore {
    /// Checks a layout stateid of `clientid` on `ino`: any seqid up to the
    /// current one is accepted (as knfsd does), a newer one is BAD_STATEID.
    fn layout_checked<'s>(sh: &'s FileShard, clientid: u64, ino: u64, s: &stateid4) -> NfsResult<&'s StateRec> {
        visit(1);
        let rec = sh.states.get(&s.other).ok_or(nfsstat4::NFS4ERR_BAD_STATEID)?;
        if rec.clientid != clientid || rec.ino != ino || !matches!(rec.kind, StateKind::Layout { .. }) {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        if s.seqid > rec.seqid {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        Ok(rec)
    }

    /// The stateid LAYOUTGET presents: a layout stateid of this client and
    /// file, or an open/lock/delegation stateid of it (seqid 0 = current).
    fn layoutget_checked(sh: &FileShard, clientid: u64, ino: u64, s: &stateid4) -> NfsResult<()> {
        if is_special(s) {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        visit(1);
        let rec = sh.states.get(&s.other).ok_or(nfsstat4::NFS4ERR_BAD_STATEID)?;
        if rec.clientid != clientid || rec.ino != ino {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        if rec.revoked {
            return Err(nfsstat4::NFS4ERR_ADMIN_REVOKED);
        }
        match rec.kind {
            StateKind::Layout { .. } => Self::layout_checked(sh, clientid, ino, s).map(|_| ()),
            _ => check_seqid(rec.seqid, s.seqid),
        }
    }

    /// LAYOUTGET's stateid check before placement (which makes control
    /// calls, so is done with no lock held).
    pub fn layoutget_check(&self, clientid: u64, ino: u64, s: &stateid4) -> NfsResult<()> {
        if is_special(s) {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        Self::layoutget_checked(&self.shard_of(&s.other), clientid, ino, s)
    }

    /// LAYOUTGET granted: the client's layout stateid on the file (created
    /// with the first one) gets `want`'s iomode and a new seqid. Returns it
    /// with every I/O stateid of the client on the file, for the data
    /// servers (tight coupling). A state cap reached: LAYOUTTRYLATER (the
    /// client does I/O through the MDS meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub fn layout_grant(
        &self,
        clientid: u64,
        ino: u64,
        s: &stateid4,
        want: u32,
        fh_export: u16,
        fh_generation: u32,
        granted_by: Option<(SessionId, u32, u32)>,
        fx: &mut Effects,
    ) -> NfsResult<(stateid4, Vec<(stateid4, u32)>)> {
        if is_special(s) || s.other[11] as usize % FILE_SHARDS != mix(ino) % FILE_SHARDS {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        let client = self.client(clientid)?;
        let mut guard = self.file_shard(ino);
        let sh = &mut *guard;
        Self::layoutget_checked(sh, clientid, ino, s)?;
        let held = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)).and_then(|c| c.layout);
        let other = match held {
            Some(o) => o,
            None => {
                let rec = StateRec {
                    clientid,
                    ino,
                    seqid: 0,
                    kind: StateKind::Layout { iomodes: 0, fh_export, fh_generation, granted_by: None },
                    revoked: false,
                };
                self.insert(sh, &client, rec, fx).map_err(|_| nfsstat4::NFS4ERR_LAYOUTTRYLATER)?
            }
        };
        let rec = sh.states.get_mut(&other).expect("found or created");
        if let StateKind::Layout { iomodes, granted_by: by, .. } = &mut rec.kind {
            *iomodes |= want;
            *by = granted_by;
        }
        rec.seqid += 1;
        let lsid = stateid(&other, rec.seqid);
        self.changed(sh, &other, fx);
        let cof = sh.files.get(&ino).and_then(|f| f.by_client.get(&clientid)).expect("the layout indexes the file");
        let push: Vec<(stateid4, u32)> = cof
            .others()
            .filter_map(|o| {
                visit(1);
                let r = sh.states.get(o)?;
                if r.revoked {
                    return None;
                }
                io_access(&sh.states, r).map(|acc| (stateid(o, r.seqid), acc))
            })
            .collect();
        Ok((lsid, push))
    }

    /// LAYOUTCOMMIT's check of a layout stateid of `clientid` on `ino`.
    pub fn layout_check(&self, clientid: u64, ino: u64, s: &stateid4) -> NfsResult<()> {
        Self::layout_checked(&self.shard_of(&s.other), clientid, ino, s).map(|_| ())
    }

    /// LAYOUTCOMMIT's check of its layout stateid: true when the stateid
    /// is gone altogether (returned, or dropped by a recall answered
    /// NOMATCHING_LAYOUT while the LAYOUTCOMMIT was on its way); an error
    /// when it names another client's, another file's or a newer layout.
    pub fn layout_commit_check(&self, clientid: u64, ino: u64, s: &stateid4) -> NfsResult<bool> {
        let sh = self.shard_of(&s.other);
        if !sh.states.contains_key(&s.other) {
            return Ok(true);
        }
        Self::layout_checked(&sh, clientid, ino, s).map(|_| false)
    }

    /// LAYOUTRETURN of one file: `bits` returned when the whole file is
    /// (`whole`). Returns the layout stateid with its new seqid while some
    /// iomode is still held; None once the layout state is gone.
    pub fn layout_return_file(&self, clientid: u64, ino: u64, s: &stateid4, bits: u32, whole: bool, fx: &mut Effects) -> NfsResult<Option<stateid4>> {
        let mut guard = self.shard_of(&s.other);
        let sh = &mut *guard;
        Self::layout_checked(sh, clientid, ino, s)?;
        let rec = sh.states.get_mut(&s.other).expect("checked");
        let left = match &mut rec.kind {
            StateKind::Layout { iomodes, .. } => {
                if whole {
                    *iomodes &= !bits;
                }
                *iomodes
            }
            _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
        };
        if left == 0 {
            self.remove(sh, &s.other, fx);
            return Ok(None);
        }
        rec.seqid += 1;
        let sid = stateid(&s.other, rec.seqid);
        self.changed(sh, &s.other, fx);
        Ok(Some(sid))
    }

    /// LAYOUTRETURN of all the client's layouts (ALL, or FSID: all our
    /// exports share one fsid). Costs the client's layouts.
    pub fn layout_return_all(&self, clientid: u64, bits: u32, fx: &mut Effects) -> NfsResult<()> {
        let layouts: Vec<StateOther> = match self.client(clientid) {
            Ok(e) => e.lock().layouts.iter().copied().collect(),
            Err(_) => return Ok(()),
        };
        for other in layouts {
            let mut guard = self.shard_of(&other);
            let sh = &mut *guard;
            visit(1);
            let Some(rec) = sh.states.get_mut(&other) else { continue };
            let StateKind::Layout { iomodes, .. } = &mut rec.kind else { continue };
            *iomodes &= !bits;
            if *iomodes == 0 {
                self.remove(sh, &other, fx);
            } else {
                rec.seqid += 1;
                self.changed(sh, &other, fx);
            }
        }
        Ok(())
    }

    /// The layouts of `ino` held by clients other than `caller` (read/write
    /// ones only if `rw_only`) are to be recalled because of `why`; their
    /// seqids are bumped now.
    pub fn recall_layouts(&self, ino: u64, caller: Option<u64>, rw_only: bool, why: &'static str, fx: &mut Effects) {
        let mut guard = self.file_shard(ino);
        self.recall_locked(&mut guard, ino, caller, rw_only, why, fx);
    }

    pub(super) fn recall_locked(&self, sh: &mut FileShard, ino: u64, caller: Option<u64>, rw_only: bool, why: &'static str, fx: &mut Effects) {
        let Some(file) = sh.files.get(&ino) else { return };
        visit(file.by_client.len());
        let targets: Vec<StateOther> =
            file.by_client.iter().filter(|(id, _)| Some(**id) != caller).filter_map(|(_, cof)| cof.layout).collect();
        for other in targets {
            let Some(rec) = sh.states.get_mut(&other) else { continue };
            let StateKind::Layout { iomodes, fh_export, fh_generation, granted_by } = rec.kind else { continue };
            if rw_only && iomodes & LAYOUT_RW == 0 {
                continue;
            }
            rec.seqid += 1;
            fx.recalls.push(LayoutRecall { other, seqid: rec.seqid, clientid: rec.clientid, ino, fh_export, fh_generation, granted_by, why });
            self.changed(sh, &other, fx);
        }
    }

    /// Inodes some client holds a layout of (a data server died: those
    /// naming it are recalled, pnfs/health.rs).
    pub fn layout_inodes(&self) -> Vec<u64> {
        let mut inos = Vec::new();
        for sh in self.files.all() {
            visit(sh.files.len());
            inos.extend(sh.files.iter().filter(|(_, f)| f.by_client.values().any(|c| c.layout.is_some())).map(|(ino, _)| *ino));
        }
        inos
    }

    /// A layout the client no longer has (it answered a recall with
    /// NOMATCHING_LAYOUT) goes.
    pub fn layout_forget(&self, other: &StateOther, fx: &mut Effects) {
        let mut guard = self.shard_of(other);
        if guard.states.get(other).is_some_and(|r| matches!(r.kind, StateKind::Layout { .. })) {
            self.remove(&mut guard, other, fx);
        }
    }

    /// A recall was sent: the layout must be returned by `deadline`.
    pub fn note_recall(&self, r: PendingRecall) {
        lock(&self.pending_recalls).push(r);
    }

    /// Fences clients that kept a recalled layout past its deadline: the
    /// layout goes and their open and lock stateids on the file are revoked
    /// (ADMIN_REVOKED here, refused by the data servers), so they can no
    /// longer write behind the MDS's back; SEQUENCE then tells them
    /// (RECALLABLE_STATE_REVOKED). Returns the (client, inode) fenced.
    pub fn fence_overdue(&self, now: Instant, fx: &mut Effects) -> Vec<(u64, u64)> {
        let due: Vec<PendingRecall> = {
            let mut pending = lock(&self.pending_recalls);
            let (due, keep): (Vec<_>, Vec<_>) = pending.drain(..).partition(|r| r.deadline <= now);
            *pending = keep;
            due
        };
        let mut fenced = vec![];
        for r in due {
            let mut guard = self.shard_of(&r.other);
            let sh = &mut *guard;
            let Some(layout) = self.remove(sh, &r.other, fx) else {
                continue; // returned in time
            };
            if matches!(layout.kind, StateKind::Layout { iomodes, .. } if iomodes & LAYOUT_RW != 0) {
                fx.size_from_ds.push(r.ino);
            }
            if let Some(cof) = sh.files.get(&r.ino).and_then(|f| f.by_client.get(&r.clientid)) {
                let io: Vec<StateOther> = cof.opens.iter().chain(cof.lockers.iter()).map(|(_, o)| *o).collect();
                let mut newly = 0;
                for o in io {
                    if let Some(rec) = sh.states.get_mut(&o) {
                        if !rec.revoked {
                            rec.revoked = true;
                            newly += 1;
                            fx.ds_revoke.push(o);
                            self.changed(sh, &o, fx);
                        }
                    }
                }
                if let Some(cof) = sh.files.get(&r.ino).and_then(|f| f.by_client.get(&r.clientid)) {
                    cof.client.lock().revoked += newly;
                }
            }
            fenced.push((r.clientid, r.ino));
        }
        fenced
    }
}

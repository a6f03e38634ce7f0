//! Byte-range locks: LOCK, LOCKT, LOCKU (RFC 8881 18.10-18.12), POSIX
//! semantics per lock owner.

use crate::compound::{current_inode, Compound};
use crate::mds::Mds;
use crate::namespace::NfsResult;
use crate::ops::io::regular_file;
use crate::ops::stateid::*;
use crate::state::{lock_range, ByteLock, StateKind, StateRec};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode};

fn is_write(t: nfs_lock_type4) -> bool {
    matches!(t, nfs_lock_type4::WRITE_LT | nfs_lock_type4::WRITEW_LT)
}

fn denied(l: &ByteLock) -> LOCK4denied<'static> {
    LOCK4denied {
        offset: l.start,
        length: if l.end == u64::MAX { u64::MAX } else { l.end - l.start },
        locktype: if l.write { nfs_lock_type4::WRITE_LT } else { nfs_lock_type4::READ_LT },
        owner: lock_owner4 { clientid: l.clientid, owner: l.owner.clone().into() },
    }
}

enum LockResult {
    Ok(stateid4),
    Denied(LOCK4denied<'static>),
}

fn write_denied(e: &mut Encoder, d: LOCK4denied) -> nfsstat4 {
    e.put_i32(nfsstat4::NFS4ERR_DENIED as i32);
    let _ = d.encode(e);
    nfsstat4::NFS4ERR_DENIED
}

pub fn lock(m: &Mds, c: &mut Compound, a: &LOCK4args, e: &mut Encoder) -> nfsstat4 {
    match lock_inner(m, c, a) {
        Ok(LockResult::Ok(sid)) => {
            if let (Ok(clientid), Some(fh)) = (c.clientid(), c.current_fh) {
                crate::ops::layout::allow_new_stateid(m, clientid, fh.ino, &sid);
            }
            e.put_i32(nfsstat4::NFS4_OK as i32);
            let _ = sid.encode(e);
            nfsstat4::NFS4_OK
        }
        Ok(LockResult::Denied(d)) => write_denied(e, d),
        Err(s) => {
            e.put_i32(s as i32);
            s
        }
    }
}

fn lock_inner(m: &Mds, c: &mut Compound, a: &LOCK4args) -> NfsResult<LockResult> {
    let (_, i) = current_inode(m, c)?;
    regular_file(&i)?;
    let clientid = c.clientid()?;
    let (start, end) = lock_range(a.offset, a.length)?;
    let write = is_write(a.locktype);
    // Clients whose lease ran out lose their conflicting locks (courtesy).
    m.release_conflicting_expired();
    let mut st = m.state();
    let in_grace = st.in_grace();
    if a.reclaim && !in_grace {
        return Err(nfsstat4::NFS4ERR_NO_GRACE);
    }
    if !a.reclaim && in_grace {
        return Err(nfsstat4::NFS4ERR_GRACE);
    }
    // Find or create the lock stateid for this lock owner and open.
    let (lock_other, owner, open_access) = match &a.locker {
        locker4::TRUE(ol) => {
            let os = resolve(c, &ol.open_stateid)?;
            let open = find(&st, clientid, &os)?;
            let access = match &open.kind {
                StateKind::Open { access, .. } => *access,
                _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
            };
            if open.ino != i.ino {
                return Err(nfsstat4::NFS4ERR_BAD_STATEID);
            }
            let owner = ol.lock_owner.owner.to_vec();
            let existing = st
                .states
                .iter()
                .find(|(_, r)| r.ino == i.ino && matches!(&r.kind, StateKind::Lock { owner: o, .. } if *o == owner) && r.clientid == clientid)
                .map(|(k, _)| *k);
            let other = match existing {
                Some(k) => k,
                None => st.new_state(StateRec {
                    clientid,
                    ino: i.ino,
                    seqid: 0,
                    kind: StateKind::Lock { owner: owner.clone(), open: os.other },
                    revoked: false,
                })?,
            };
            (other, owner, access)
        }
        locker4::FALSE(el) => {
            let ls = resolve(c, &el.lock_stateid)?;
            let rec = find(&st, clientid, &ls)?;
            if rec.ino != i.ino {
                return Err(nfsstat4::NFS4ERR_BAD_STATEID);
            }
            let (owner, open) = match &rec.kind {
                StateKind::Lock { owner, open } => (owner.clone(), *open),
                _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
            };
            let access = match st.states.get(&open).map(|r| &r.kind) {
                Some(StateKind::Open { access, .. }) => *access,
                _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
            };
            (ls.other, owner, access)
        }
    };
    if write && open_access & OPEN4_SHARE_ACCESS_WRITE == 0 {
        return Err(nfsstat4::NFS4ERR_OPENMODE);
    }
    if !write && open_access & OPEN4_SHARE_ACCESS_READ == 0 {
        return Err(nfsstat4::NFS4ERR_OPENMODE);
    }
    if let Some(l) = st.lock_conflict(i.ino, clientid, &owner, start, end, write) {
        return Ok(LockResult::Denied(denied(l)));
    }
    st.set_lock(i.ino, clientid, &owner, start, end, Some(write));
    let rec = st.states.get_mut(&lock_other).expect("created or found");
    rec.seqid += 1;
    let sid = stateid(&lock_other, rec.seqid);
    c.current_stateid = Some(sid.clone());
    Ok(LockResult::Ok(sid))
}

pub fn lockt(m: &Mds, c: &mut Compound, a: &LOCKT4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, i) = current_inode(m, c)?;
        regular_file(&i)?;
        let clientid = c.clientid()?;
        let (start, end) = lock_range(a.offset, a.length)?;
        let mut st = m.state();
        if st.in_grace() {
            return Err(nfsstat4::NFS4ERR_GRACE);
        }
        Ok(st.lock_conflict(i.ino, clientid, &a.owner.owner, start, end, is_write(a.locktype)).map(denied))
    })();
    match r {
        Ok(None) => {
            e.put_i32(nfsstat4::NFS4_OK as i32);
            nfsstat4::NFS4_OK
        }
        Ok(Some(d)) => write_denied(e, d),
        Err(s) => {
            e.put_i32(s as i32);
            s
        }
    }
}

pub fn locku(m: &Mds, c: &mut Compound, a: &LOCKU4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, i) = current_inode(m, c)?;
        regular_file(&i)?;
        let clientid = c.clientid()?;
        let (start, end) = lock_range(a.offset, a.length)?;
        let ls = resolve(c, &a.lock_stateid)?;
        let mut st = m.state();
        let rec = find(&st, clientid, &ls)?;
        if rec.ino != i.ino {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        let owner = match &rec.kind {
            StateKind::Lock { owner, .. } => owner.clone(),
            _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
        };
        st.set_lock(i.ino, clientid, &owner, start, end, None);
        let rec = st.states.get_mut(&ls.other).expect("found");
        rec.seqid += 1;
        let sid = stateid(&ls.other, rec.seqid);
        c.current_stateid = Some(sid.clone());
        Ok(sid)
    })();
    crate::compound::reply(e, r)
}

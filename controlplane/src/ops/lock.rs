//! Byte-range locks: LOCK, LOCKT, LOCKU (RFC 8881 18.10-18.12), POSIX
//! semantics per lock owner.

use crate::compound::{current_inode, Compound};
use crate::mds::Mds;
use crate::namespace::NfsResult;
use crate::ops::io::regular_file;
use crate::ops::stateid::*;
use crate::state::xnode::Conflict;
use crate::state::{lock_range, ByteLock, Effects, LockOutcome, Locker, StateKind};
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
    let mut fx = Effects::default();
    let r = lock_inner(m, c, a, &mut fx);
    // A new lock stateid of a layout holder goes to the data servers.
    let _ = m.apply(fx);
    match r {
        Ok(LockResult::Ok(sid)) => {
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

fn lock_inner(m: &Mds, c: &mut Compound, a: &LOCK4args, fx: &mut Effects) -> NfsResult<LockResult> {
    let (_, i) = current_inode(m, c)?;
    regular_file(&i)?;
    let clientid = c.clientid()?;
    let (start, end) = lock_range(a.offset, a.length)?;
    let write = is_write(a.locktype);
    let st = m.state();
    let in_grace = st.in_grace();
    if a.reclaim && !in_grace {
        return Err(nfsstat4::NFS4ERR_NO_GRACE);
    }
    if !a.reclaim && in_grace {
        return Err(nfsstat4::NFS4ERR_GRACE);
    }
    let client = st.client(clientid)?;
    // The lock stateid of this lock owner (found, or created from its open).
    let given = match &a.locker {
        locker4::TRUE(ol) => resolve(c, &ol.open_stateid)?,
        locker4::FALSE(el) => resolve(c, &el.lock_stateid)?,
    };
    let locker = || match &a.locker {
        locker4::TRUE(ol) => Locker::New { open: &given, owner: &ol.lock_owner.owner },
        locker4::FALSE(_) => Locker::Existing { lock: &given },
    };
    // A cluster: the locks of clients other nodes hold, checked and this
    // lock claimed on the KV in one transaction (`state/xnode.rs`).
    let claimed = st.journaling();
    if claimed {
        // The stateid first: a bad LOCK claims nothing, even for a moment.
        let rec = st.find(clientid, &given)?;
        let owner = match (&a.locker, rec.kind) {
            _ if rec.ino != i.ino => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
            (locker4::TRUE(ol), StateKind::Open { .. }) => ol.lock_owner.owner.to_vec(),
            (locker4::FALSE(_), StateKind::Lock { owner, .. }) => owner,
            _ => return Err(nfsstat4::NFS4ERR_BAD_STATEID),
        };
        if let Some(l) = claim_lock(m, clientid, i.ino, &owner, (start, end, write))? {
            return Ok(LockResult::Denied(denied(&l)));
        }
    }
    let outcome = st.lock(&client, i.ino, locker(), start, end, write, fx);
    if claimed {
        // The client's locks row as the tables say now (a claim not used goes).
        fx.records.push(st.locks_record(i.ino, clientid));
    }
    let mut outcome = outcome?;
    // A conflicting client whose lease ran out loses its locks (courtesy).
    if let LockOutcome::Denied(l) = &outcome {
        if m.release_expired_holders(&[l.clientid]) {
            outcome = st.lock(&client, i.ino, locker(), start, end, write, fx)?;
        }
    }
    match outcome {
        LockOutcome::Granted(sid) => {
            c.current_stateid = Some(sid.clone());
            Ok(LockResult::Ok(sid))
        }
        LockOutcome::Denied(l) => Ok(LockResult::Denied(denied(&l))),
    }
}

/// A cluster's LOCK: other nodes' clients' locks in the way (Some: the
/// first, NFS4ERR_DENIED), else the lock claimed in the client's `b` row.
/// Holders no live node held for a lease are expired first.
fn claim_lock(m: &Mds, clientid: u64, ino: u64, owner: &[u8], range: (u64, u64, bool)) -> NfsResult<Option<ByteLock>> {
    let st = m.state();
    let kv = m.ns.store().as_ref();
    let after = st.locks_after(ino, clientid, owner, range);
    for first in [true, false] {
        match st.claim_lock(kv, ino, clientid, &after, range) {
            Ok(()) => return Ok(None),
            Err(Conflict::Lock(l)) => {
                if first && st.expire_stale(kv, m.cfg.cluster_node_id(), &[l.clientid], m.lease()) {
                    continue;
                }
                return Ok(Some(l));
            }
            Err(e) => {
                log::warn!("LOCK of inode {ino}: checking other nodes' locks in the KV: {e:?}; NFS4ERR_DELAY");
                return Err(nfsstat4::NFS4ERR_DELAY);
            }
        }
    }
    Err(nfsstat4::NFS4ERR_DELAY)
}

pub fn lockt(m: &Mds, c: &mut Compound, a: &LOCKT4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, i) = current_inode(m, c)?;
        regular_file(&i)?;
        let clientid = c.clientid()?;
        let (start, end) = lock_range(a.offset, a.length)?;
        let st = m.state();
        if st.in_grace() {
            return Err(nfsstat4::NFS4ERR_GRACE);
        }
        let range = (start, end, is_write(a.locktype));
        if let Some(l) = st.lockt(clientid, i.ino, &a.owner.owner, start, end, range.2) {
            return Ok(Some(denied(&l)));
        }
        // A cluster: other nodes' clients' locks too.
        if st.journaling() {
            let remote = st.remote_lockt(m.ns.store().as_ref(), i.ino, clientid, range).map_err(|_| nfsstat4::NFS4ERR_DELAY)?;
            return Ok(remote.map(|l| denied(&l)));
        }
        Ok(None)
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
    let mut fx = Effects::default();
    let r = (|| {
        let (_, i) = current_inode(m, c)?;
        regular_file(&i)?;
        let clientid = c.clientid()?;
        let (start, end) = lock_range(a.offset, a.length)?;
        let ls = resolve(c, &a.lock_stateid)?;
        let sid = m.state().locku(clientid, i.ino, &ls, start, end, &mut fx)?;
        c.current_stateid = Some(sid.clone());
        Ok(sid)
    })();
    let _ = m.apply(fx);
    crate::compound::reply(e, r)
}

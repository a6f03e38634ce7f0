//! Open state: OPEN, OPEN_DOWNGRADE, CLOSE, TEST_STATEID, FREE_STATEID
//! (RFC 8881 18.16-18.20, 18.48, 18.38). Delegations: ops/deleg.rs.

use crate::attrs::{decode_settable, SetContext};
use crate::compound::{current_inode, reply, Compound};
use crate::fh::FileHandle;
use crate::mds::*;
use crate::namespace::{Inode, NewObject, NfsResult, SetAttrs};
use crate::ops::filehandle::need_dir;
use crate::ops::stateid::*;
use crate::state::Effects;
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

const OPEN4_RESULT_LOCKTYPE_POSIX: u32 = 0x4;
const OPEN4_SHARE_ACCESS_MASK: u32 = 0x3;
const OPEN4_SHARE_WANT_MASK: u32 = 0xff00;

/// OPEN. Layout policy: an OPEN asking for write access (not a reclaim)
/// recalls the read/write layouts other clients hold on the file, once the
/// open state exists and without the state mutex held. A layout holder
/// writes to the data servers behind the MDS's back and reports the size
/// only at LAYOUTCOMMIT; the recall makes it flush, commit and return its
/// layout, so the MDS's size and change attribute are current before the
/// new writer starts, and the holder has to come back through LAYOUTGET
/// (and so past the MDS) for further direct I/O. Read-only layouts stay.
/// Writers are not serialised: each WRITE lands as sent, as with any NFS
/// server without delegations.
pub fn open(m: &Mds, c: &mut Compound, a: &OPEN4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let mut claimed = None;
    let r = open_inner(m, c, a, &mut fx, &mut claimed);
    // A cluster's claim on the KV: the client's share row as the tables
    // say now (what the OPEN did not use of its claim goes).
    if let (Some(ino), Ok(clientid)) = (claimed, c.clientid()) {
        fx.records.push(m.state().share_record(ino, clientid));
    }
    // The new stateid on the data servers, then the recalls.
    let _ = m.apply(fx);
    reply(e, r)
}

fn validate_share(access: u32, deny: u32) -> NfsResult<(u32, u32)> {
    let acc = access & OPEN4_SHARE_ACCESS_MASK;
    // 0x30000: SIGNAL/PUSH_DELEG_WHEN_*; 0x300000: RFC 9754's WANT_DELEG_TIMESTAMPS
    // and WANT_OPEN_XOR_DELEGATION, not offered (open_arguments) and ignored.
    if acc == 0 || access & !(OPEN4_SHARE_ACCESS_MASK | OPEN4_SHARE_WANT_MASK | 0x30000 | 0x30_0000) != 0 || deny > 3 {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    Ok((acc, deny))
}

/// What OPEN resolved before creating state.
struct Target {
    fh: FileHandle,
    inode: Inode,
    cinfo: change_info4,
    attrset: Vec<u32>,
    created: bool,
}

/// `claimed`: set to the file when a cluster's OPEN claimed its share on the KV.
fn open_inner(m: &Mds, c: &mut Compound, a: &OPEN4args, fx: &mut Effects, claimed: &mut Option<u64>) -> NfsResult<OPEN4resok<'static>> {
    let clientid = c.clientid()?;
    let (access, deny) = validate_share(a.share_access, a.share_deny)?;
    // NFSv4.1 ignores the client ID inside the owner: the session's counts.
    let reclaim = matches!(a.claim, open_claim4::CLAIM_PREVIOUS(_));
    // Reclaims only in grace; no new state before RECLAIM_COMPLETE.
    let client = m.state().state_gate(clientid, reclaim)?;
    // Over a state cap: refused before a file is created for nothing.
    if matches!(a.openhow, openflag4::OPEN4_CREATE(_)) {
        m.state().admit_state(&client)?;
    }
    let (fh0, cur) = current_inode(m, c)?;
    let ex = m.export(fh0.export_id)?;
    let who = ex.caller(&c.cred);
    let target = match &a.claim {
        open_claim4::CLAIM_NULL(name) => {
            need_dir(cur.kind)?;
            open_by_name(m, c, a, &cur, fh0, name)?
        }
        open_claim4::CLAIM_FH | open_claim4::CLAIM_PREVIOUS(_) => {
            if matches!(a.openhow, openflag4::OPEN4_CREATE(_)) {
                return Err(nfsstat4::NFS4ERR_INVAL);
            }
            let cinfo = change_info4 { atomic: true, before: cur.change, after: cur.change };
            Target { fh: fh0, inode: cur, cinfo, attrset: vec![], created: false }
        }
        // Opens under a delegation the client holds (ops/deleg.rs).
        open_claim4::CLAIM_DELEG_CUR_FH(sid) if !matches!(a.openhow, openflag4::OPEN4_CREATE(_)) => {
            crate::ops::deleg::check_claim_cur(m, clientid, fh0.ino, &resolve(c, sid)?)?;
            let cinfo = change_info4 { atomic: true, before: cur.change, after: cur.change };
            Target { fh: fh0, inode: cur, cinfo, attrset: vec![], created: false }
        }
        open_claim4::CLAIM_DELEGATE_CUR(d) if !matches!(a.openhow, openflag4::OPEN4_CREATE(_)) => {
            need_dir(cur.kind)?;
            let t = open_by_name(m, c, a, &cur, fh0, &d.file)?;
            crate::ops::deleg::check_claim_cur(m, clientid, t.inode.ino, &d.delegate_stateid)?;
            t
        }
        open_claim4::CLAIM_DELEG_CUR_FH(_) | open_claim4::CLAIM_DELEGATE_CUR(_) => return Err(nfsstat4::NFS4ERR_INVAL),
        // Delegations do not survive a restart: nothing to claim.
        _ => return Err(nfsstat4::NFS4ERR_NOTSUPP),
    };
    let i = &target.inode;
    match i.ftype() {
        nfs_ftype4::NF4REG => {}
        nfs_ftype4::NF4DIR => return Err(nfsstat4::NFS4ERR_ISDIR),
        nfs_ftype4::NF4LNK => return Err(nfsstat4::NFS4ERR_SYMLINK),
        _ => return Err(nfsstat4::NFS4ERR_WRONG_TYPE),
    }
    if access & OPEN4_SHARE_ACCESS_WRITE != 0 && ex.read_only {
        return Err(nfsstat4::NFS4ERR_ROFS);
    }
    if !target.created && !reclaim {
        let mut need = 0;
        if access & OPEN4_SHARE_ACCESS_READ != 0 {
            need |= ACCESS4_READ;
        }
        if access & OPEN4_SHARE_ACCESS_WRITE != 0 {
            need |= ACCESS4_MODIFY;
        }
        // The owner may open its own file whatever the mode says (as the
        // Linux client expects after creating a read-only file).
        if who.uid != i.uid {
            m.check_access(i, &who, need)?;
        }
    }
    crate::ops::deleg::break_for_open(m, clientid, i.ino, access)?;
    // A cluster: the clients other nodes hold, checked and the share
    // claimed on the KV in one transaction (`state/xnode.rs`), with the
    // delegation this OPEN may get.
    let remote_deleg_ok = if m.state().journaling() {
        let want = crate::ops::deleg::kind_wanted(m, clientid, a.share_access, &a.claim);
        let ok = crate::ops::deleg::claim_open(m, clientid, i.ino, access, deny, want)?;
        *claimed = Some(i.ino);
        ok
    } else {
        true
    };
    // Share reservations against other owners' opens, and the open stateid
    // (new, or this owner's upgraded), in one step of the state layer. An
    // OPEN for write (not a reclaim) recalls others' read/write layouts.
    // A conflicting client whose lease ran out loses its state (courtesy)
    // and the OPEN is tried again, once.
    let recall_rw = access & OPEN4_SHARE_ACCESS_WRITE != 0 && !reclaim;
    let st = m.state();
    let sid = match st.open(&client, i.ino, &a.owner.owner, access, deny, recall_rw, fx) {
        Ok(sid) => sid,
        Err(r) if m.release_expired_holders(&r.holders) => {
            st.open(&client, i.ino, &a.owner.owner, access, deny, recall_rw, fx).map_err(|r| r.status)?
        }
        // Another client got a conflicting delegation since the check
        // above: it is recalled (DELAY meanwhile), or already gone.
        Err(r) if r.status == nfsstat4::NFS4ERR_DELAY => {
            crate::ops::deleg::break_for_open(m, clientid, i.ino, access)?;
            st.open(&client, i.ino, &a.owner.owner, access, deny, recall_rw, fx).map_err(|r| r.status)?
        }
        Err(r) => return Err(r.status),
    };
    c.set_fh(target.fh);
    c.current_stateid = Some(sid.clone());
    Ok(OPEN4resok {
        stateid: sid,
        cinfo: target.cinfo,
        rflags: OPEN4_RESULT_LOCKTYPE_POSIX,
        attrset: target.attrset,
        delegation: crate::ops::deleg::at_open(m, c, clientid, (target.fh, &target.inode), a.share_access, &a.claim, remote_deleg_ok),
    })
}

fn open_by_name(m: &Mds, c: &Compound, a: &OPEN4args, dir: &Inode, dirfh: FileHandle, name: &[u8]) -> NfsResult<Target> {
    open_by_name_once(m, c, a, dir, dirfh, name, true)
}

fn open_by_name_once(
    m: &Mds,
    c: &Compound,
    a: &OPEN4args,
    dir: &Inode,
    dirfh: FileHandle,
    name: &[u8],
    may_retry: bool,
) -> NfsResult<Target> {
    crate::namespace::valid_name(name)?;
    let ex = m.export(dirfh.export_id)?;
    let who = ex.caller(&c.cred);
    let existing = match m.ns.lookup(dir.ino, name) {
        Ok(i) if !m.visible(dirfh.export_id, i.ino) => return Err(nfsstat4::NFS4ERR_NOENT),
        Ok(i) => Some(i),
        Err(nfsstat4::NFS4ERR_NOENT) => None,
        Err(e) => return Err(e),
    };
    let unchanged = change_info4 { atomic: true, before: dir.change, after: dir.change };
    let found = |i: Inode| Target { fh: m.fh_for(dirfh.export_id, &i), inode: i, cinfo: unchanged.clone(), attrset: vec![], created: false };
    let how = match &a.openhow {
        openflag4::OPEN4_CREATE(how) => how,
        _ => {
            return existing.map(found).ok_or(nfsstat4::NFS4ERR_NOENT);
        }
    };
    let (attrs, attrset, verifier, ctx) = match how {
        createhow4::UNCHECKED4(f) | createhow4::GUARDED4(f) => {
            let (s, set) = decode_settable(f, c.minor, SetContext::Create)?;
            (s, set, None, SetContext::Create)
        }
        createhow4::EXCLUSIVE4(v) => (SetAttrs::default(), vec![], Some(*v), SetContext::ExclusiveCreate),
        createhow4::EXCLUSIVE4_1(cva) => {
            let (s, set) = decode_settable(&cva.cva_attrs, c.minor, SetContext::ExclusiveCreate)?;
            (s, set, Some(cva.cva_verf), SetContext::ExclusiveCreate)
        }
    };
    if let Some(i) = existing {
        match how {
            createhow4::GUARDED4(_) => return Err(nfsstat4::NFS4ERR_EXIST),
            createhow4::EXCLUSIVE4(_) | createhow4::EXCLUSIVE4_1(_) => {
                // A retried exclusive create finds its own verifier.
                if i.create_verifier.is_some() && i.create_verifier == verifier {
                    let mut t = found(i);
                    t.attrset = attrset;
                    return Ok(t);
                }
                return Err(nfsstat4::NFS4ERR_EXIST);
            }
            createhow4::UNCHECKED4(_) => {
                // O_TRUNC arrives as size 0 in the create attributes.
                if let (Some(size), true) = (attrs.size, i.kind == nfs_ftype4::NF4REG as u32) {
                    if ex.read_only {
                        return Err(nfsstat4::NFS4ERR_ROFS);
                    }
                    if who.uid != i.uid {
                        m.check_access(&i, &who, ACCESS4_MODIFY)?;
                    }
                    crate::ops::deleg::break_conflicts(m, c.clientid().ok(), i.ino, true)?;
                    if size < i.size {
                        m.recall_layouts_for(i.ino, c.clientid().ok(), "truncate");
                    }
                    m.data.truncate(i.ino, size).map_err(io_err)?;
                    let i = m.ns.setattr(i.ino, &SetAttrs { size: Some(size), ..Default::default() }, None)?;
                    let mut t = found(i);
                    t.attrset = crate::attrs::bitmap_from(&[crate::attrs::FATTR4_SIZE]);
                    return Ok(t);
                }
                return Ok(found(i));
            }
        }
    }
    if ex.read_only {
        return Err(nfsstat4::NFS4ERR_ROFS);
    }
    m.check_access(dir, &who, ACCESS4_MODIFY)?;
    let _ = ctx;
    let obj = NewObject { kind: nfs_ftype4::NF4REG, symlink: vec![], rdev: (0, 0) };
    let (before, after, inode) = match m.create_object(dir.ino, name, &obj, &attrs, &who, verifier) {
        // A concurrent OPEN created the name after our lookup: answer as if
        // it had existed then (UNCHECKED opens it, GUARDED and EXCLUSIVE
        // decide on the existing file), once.
        Err(nfsstat4::NFS4ERR_EXIST) if may_retry => return open_by_name_once(m, c, a, dir, dirfh, name, false),
        r => r?,
    };
    Ok(Target {
        fh: m.fh_for(dirfh.export_id, &inode),
        inode,
        cinfo: change_info4 { atomic: true, before, after },
        attrset,
        created: true,
    })
}

pub fn open_downgrade(m: &Mds, c: &mut Compound, a: &OPEN_DOWNGRADE4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = (|| {
        let (fh, _) = current_inode(m, c)?;
        let clientid = c.clientid()?;
        let s = resolve(c, &a.open_stateid)?;
        let (access, deny) = validate_share(a.share_access, a.share_deny)?;
        let sid = m.state().open_downgrade(clientid, fh.ino, &s, access, deny, &mut fx)?;
        c.current_stateid = Some(sid.clone());
        Ok(OPEN_DOWNGRADE4resok { open_stateid: sid })
    })();
    let _ = m.apply(fx);
    reply(e, r)
}

pub fn close(m: &Mds, c: &mut Compound, a: &CLOSE4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = (|| {
        // The file may have been removed meanwhile; CLOSE still works.
        let fh = c.fh()?;
        let clientid = c.clientid()?;
        let s = resolve(c, &a.open_stateid)?;
        // Its lock stateids go with it; with return_on_close (RFC 8881
        // 18.43.3) the client's last CLOSE of the file returns its layout.
        m.state().close(clientid, fh.ino, &s, m.cfg.layout_return_on_close, &mut fx)?;
        // RFC 8881 18.2.4: a closed stateid is answered with the invalid special stateid.
        let done = stateid4 { seqid: u32::MAX, other: [0; 12] };
        c.current_stateid = Some(done.clone());
        Ok(done)
    })();
    // Ended stateids are revoked on the data servers.
    let _ = m.apply(fx);
    reply(e, r)
}

pub fn test_stateid(m: &Mds, c: &mut Compound, a: &TEST_STATEID4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let clientid = c.clientid()?;
        let codes = a
            .ts_stateids
            .iter()
            .map(|s| if is_anonymous(s) || is_bypass(s) { nfsstat4::NFS4ERR_BAD_STATEID } else { m.state().test_stateid(clientid, s) })
            .collect();
        Ok(TEST_STATEID4resok { tsr_status_codes: codes })
    })();
    reply(e, r)
}

pub fn free_stateid(m: &Mds, c: &mut Compound, a: &FREE_STATEID4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = (|| {
        let clientid = c.clientid()?;
        let s = resolve(c, &a.fsa_stateid)?;
        // Revoked (fenced) state is freed whatever its kind.
        m.state().free_stateid(clientid, &s, &mut fx)
    })();
    let _ = m.apply(fx);
    reply(e, r)
}

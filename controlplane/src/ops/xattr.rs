//! User extended attributes (RFC 8276): GETXATTR, SETXATTR, LISTXATTRS,
//! REMOVEXATTR. Names arrive without the "user." prefix; the client adds it.

use crate::compound::{current_inode, reply, Compound};
use crate::mds::*;
use crate::namespace::{Inode, NfsResult};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, Opaque};

fn check(m: &Mds, c: &Compound, need: u32, write: bool) -> NfsResult<Inode> {
    let (fh, i) = current_inode(m, c)?;
    let ex = m.export(fh.export_id)?;
    if write && ex.read_only {
        return Err(nfsstat4::NFS4ERR_ROFS);
    }
    let who = ex.caller(&c.cred);
    if !(write && who.uid == i.uid) {
        m.check_access(&i, &who, need)?;
    }
    Ok(i)
}

fn valid_key(k: &[u8]) -> NfsResult<()> {
    if k.is_empty() {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    if k.len() > crate::namespace::MAX_NAME {
        return Err(nfsstat4::NFS4ERR_NAMETOOLONG);
    }
    Ok(())
}

pub fn getxattr(m: &Mds, c: &mut Compound, a: &GETXATTR4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        valid_key(&a.gxa_name)?;
        let i = check(m, c, ACCESS4_XAREAD, false)?;
        let v = m.ns.getxattr(i.ino, &a.gxa_name)?;
        Ok(Opaque::owned(v))
    })();
    reply(e, r)
}

pub fn setxattr(m: &Mds, c: &mut Compound, a: &SETXATTR4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        valid_key(&a.sxa_key)?;
        let i = check(m, c, ACCESS4_XAWRITE, true)?;
        let (before, after) = m.ns.setxattr(i.ino, &a.sxa_key, &a.sxa_value, a.sxa_option)?;
        Ok(change_info4 { atomic: true, before, after })
    })();
    reply(e, r)
}

pub fn removexattr(m: &Mds, c: &mut Compound, a: &REMOVEXATTR4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        valid_key(&a.rxa_name)?;
        let i = check(m, c, ACCESS4_XAWRITE, true)?;
        let (before, after) = m.ns.removexattr(i.ino, &a.rxa_name)?;
        Ok(change_info4 { atomic: true, before, after })
    })();
    reply(e, r)
}

/// The cookie is the index of the next name, so it survives between calls.
pub fn listxattrs(m: &Mds, c: &mut Compound, a: &LISTXATTRS4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let i = check(m, c, ACCESS4_XALIST, false)?;
        let names = m.ns.listxattrs(i.ino)?;
        let start = a.lxa_cookie as usize;
        if start > names.len() {
            return Err(nfsstat4::NFS4ERR_BAD_COOKIE);
        }
        // cookie + count + eof
        let mut used = 8 + 4 + 4;
        let mut out = Vec::new();
        for n in &names[start..] {
            let sz = 4 + n.len().div_ceil(4) * 4;
            if used + sz > a.lxa_maxcount as usize {
                break;
            }
            used += sz;
            out.push(Opaque::owned(n.clone()));
        }
        if out.is_empty() && start < names.len() {
            return Err(nfsstat4::NFS4ERR_TOOSMALL);
        }
        let next = start + out.len();
        Ok(LISTXATTRS4resok { lxr_cookie: next as u64, lxr_names: out, lxr_eof: next == names.len() })
    })();
    reply(e, r)
}

//! Attribute operations: GETATTR, SETATTR, ACCESS, VERIFY, NVERIFY.

use crate::attrs::{attrs_match, decode_settable, encode_fattr, SetContext};
use crate::compound::{current_inode, reply, Compound};
use crate::mds::*;
use crate::namespace::{NfsResult, SetTime};
use crate::ops::stateid::{check_io_stateid, IoMode};
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

pub fn getattr(m: &Mds, c: &mut Compound, a: &GETATTR4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, i) = current_inode(m, c)?;
        let i = crate::ops::deleg::attrs_for_reader(m, c, i, &a.attr_request)?;
        let fhb = fh.to_bytes(&m.fh_key);
        let cx = m.attr_context(c.minor, &fhb, &i);
        Ok(GETATTR4resok { obj_attributes: encode_fattr(&i, &a.attr_request, &cx) })
    })();
    reply(e, r)
}

pub fn setattr(m: &Mds, c: &mut Compound, a: &SETATTR4args, e: &mut Encoder) -> nfsstat4 {
    match setattr_inner(m, c, a) {
        Ok(set) => {
            e.put_i32(nfsstat4::NFS4_OK as i32);
            e.put_u32(set.len() as u32);
            set.iter().for_each(|w| e.put_u32(*w));
            nfsstat4::NFS4_OK
        }
        Err(s) => {
            // SETATTR4res carries the (empty) attrsset bitmap even on error.
            e.put_i32(s as i32);
            e.put_u32(0);
            s
        }
    }
}

fn setattr_inner(m: &Mds, c: &mut Compound, a: &SETATTR4args) -> NfsResult<Vec<u32>> {
    let (fh, i) = current_inode(m, c)?;
    let ex = m.export(fh.export_id)?;
    let (attrs, set) = decode_settable(&a.obj_attributes, c.minor, SetContext::Setattr)?;
    if ex.read_only {
        return Err(nfsstat4::NFS4ERR_ROFS);
    }
    let who = ex.caller(&c.cred);
    let owner_or_root = who.is_root() || who.uid == i.uid;
    if attrs.mode.is_some() && !owner_or_root {
        return Err(nfsstat4::NFS4ERR_PERM);
    }
    if let Some(uid) = attrs.uid {
        if uid != i.uid && !who.is_root() {
            return Err(nfsstat4::NFS4ERR_PERM);
        }
    }
    if let Some(gid) = attrs.gid {
        if gid != i.gid && !(who.is_root() || (who.uid == i.uid && who.in_group(gid))) {
            return Err(nfsstat4::NFS4ERR_PERM);
        }
    }
    for t in [&attrs.atime, &attrs.mtime].into_iter().flatten() {
        match t {
            SetTime::Client(_) if !owner_or_root => return Err(nfsstat4::NFS4ERR_PERM),
            SetTime::ServerNow if !owner_or_root => m.check_access(&i, &who, ACCESS4_MODIFY)?,
            _ => {}
        }
    }
    crate::ops::deleg::break_conflicts(m, c.clientid().ok(), i.ino, true)?;
    if let Some(size) = attrs.size {
        if i.is_dir() {
            return Err(nfsstat4::NFS4ERR_ISDIR);
        }
        if i.kind != nfs_ftype4::NF4REG as u32 {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        // A size change needs write access through the stateid given.
        let special = check_io_stateid(m, c, &a.stateid, fh.ino, IoMode::Write)?;
        if special && !owner_or_root {
            m.check_access(&i, &who, ACCESS4_MODIFY)?;
        }
        if size < i.size {
            m.recall_layouts_for(i.ino, c.clientid().ok(), "truncate");
        }
        m.data.truncate(i.ino, size).map_err(io_err)?;
    }
    m.ns.setattr(i.ino, &attrs, None)?;
    Ok(set)
}

pub fn access(m: &Mds, c: &mut Compound, a: &ACCESS4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, i) = current_inode(m, c)?;
        let ex = m.export(fh.export_id)?;
        let known = ACCESS4_READ
            | ACCESS4_LOOKUP
            | ACCESS4_MODIFY
            | ACCESS4_EXTEND
            | ACCESS4_DELETE
            | ACCESS4_EXECUTE
            | if c.minor >= 2 { ACCESS4_XAREAD | ACCESS4_XAWRITE | ACCESS4_XALIST } else { 0 };
        let supported = a.access & known;
        let mut allowed = m.access_bits(&i, &ex.caller(&c.cred));
        if ex.read_only {
            allowed &= !(ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_DELETE | ACCESS4_XAWRITE);
        }
        Ok(ACCESS4resok { supported, access: supported & allowed })
    })();
    reply(e, r)
}

fn verify_common(m: &Mds, c: &mut Compound, given: &fattr4) -> NfsResult<bool> {
    let (fh, i) = current_inode(m, c)?;
    let fhb = fh.to_bytes(&m.fh_key);
    let cx = m.attr_context(c.minor, &fhb, &i);
    attrs_match(&i, given, &cx)
}

pub fn verify(m: &Mds, c: &mut Compound, a: &VERIFY4args, e: &mut Encoder) -> nfsstat4 {
    let r = verify_common(m, c, &a.obj_attributes).and_then(|same| if same { Ok(()) } else { Err(nfsstat4::NFS4ERR_NOT_SAME) });
    reply(e, r)
}

pub fn nverify(m: &Mds, c: &mut Compound, a: &NVERIFY4args, e: &mut Encoder) -> nfsstat4 {
    let r = verify_common(m, c, &a.obj_attributes).and_then(|same| if same { Err(nfsstat4::NFS4ERR_SAME) } else { Ok(()) });
    reply(e, r)
}

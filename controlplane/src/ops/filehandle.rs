//! Filehandle and name operations: PUTFH, PUTROOTFH, PUTPUBFH, GETFH,
//! SAVEFH, RESTOREFH, LOOKUP, LOOKUPP, SECINFO, SECINFO_NO_NAME.

use crate::compound::{current_inode, reply, Compound};
use crate::fh::FileHandle;
use crate::mds::Mds;
use crate::namespace::{valid_name, NfsResult, ROOT_INO};
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

/// Refuses a client outside the export's allow-list.
pub fn check_export(m: &Mds, c: &Compound, export_id: u16) -> NfsResult<()> {
    let ex = m.export(export_id)?;
    if ex.allows(&c.conn.peer) {
        Ok(())
    } else {
        Err(nfsstat4::NFS4ERR_WRONGSEC)
    }
}

pub fn putfh(m: &Mds, c: &mut Compound, a: &PUTFH4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let fh = FileHandle::parse(&a.object, &m.fh_key)?;
        check_export(m, c, fh.export_id)?;
        c.set_fh(fh);
        // Fail early for a handle whose object is gone, unless a client still
        // holds state on it (CLOSE after the file was removed must work).
        match current_inode(m, c) {
            Err(nfsstat4::NFS4ERR_STALE) if m.state().has_state_on(fh.ino) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    })();
    if r.is_err() {
        c.current_fh = None;
    }
    reply(e, r)
}

pub fn putrootfh(m: &Mds, c: &mut Compound, e: &mut Encoder) -> nfsstat4 {
    let ex = m.root_export();
    let r = m.ns.get(ex.root_ino).map(|root| {
        c.set_fh(m.fh_for(ex.id, &root));
    });
    reply(e, r)
}

pub fn getfh(m: &Mds, c: &mut Compound, e: &mut Encoder) -> nfsstat4 {
    let r = c.fh().map(|fh| GETFH4resok { object: fh.to_bytes(&m.fh_key).to_vec().into() });
    reply(e, r)
}

pub fn savefh(_m: &Mds, c: &mut Compound, e: &mut Encoder) -> nfsstat4 {
    let r = c.fh().map(|fh| {
        c.saved_fh = Some(fh);
        c.saved_stateid = c.current_stateid.clone();
    });
    reply(e, r)
}

pub fn restorefh(_m: &Mds, c: &mut Compound, e: &mut Encoder) -> nfsstat4 {
    let r = match c.saved_fh {
        Some(fh) => {
            c.current_fh = Some(fh);
            c.current_stateid = c.saved_stateid.clone();
            Ok(())
        }
        None => Err(nfsstat4::NFS4ERR_RESTOREFH),
    };
    reply(e, r)
}

/// NOTDIR, or SYMLINK for a symlink where a directory was needed.
pub fn need_dir(kind: u32) -> NfsResult<()> {
    if kind == nfs_ftype4::NF4DIR as u32 {
        Ok(())
    } else if kind == nfs_ftype4::NF4LNK as u32 {
        Err(nfsstat4::NFS4ERR_SYMLINK)
    } else {
        Err(nfsstat4::NFS4ERR_NOTDIR)
    }
}

pub fn lookup(m: &Mds, c: &mut Compound, a: &LOOKUP4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, dir) = current_inode(m, c)?;
        need_dir(dir.kind)?;
        valid_name(&a.objname)?;
        let ex = m.export(fh.export_id)?;
        m.check_access(&dir, &ex.caller(&c.cred), ACCESS4_LOOKUP)?;
        let child = m.ns.lookup(dir.ino, &a.objname)?;
        if !m.visible(fh.export_id, child.ino) {
            return Err(nfsstat4::NFS4ERR_NOENT);
        }
        // Entering an export's root moves the handle into that export.
        let export_id = match m.export_rooted_at(child.ino) {
            Some(x) => {
                check_export(m, c, x.id)?;
                x.id
            }
            None => fh.export_id,
        };
        c.set_fh(m.fh_for(export_id, &child));
        Ok(())
    })();
    reply(e, r)
}

pub fn lookupp(m: &Mds, c: &mut Compound, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, dir) = current_inode(m, c)?;
        need_dir(dir.kind)?;
        if dir.ino == ROOT_INO {
            return Err(nfsstat4::NFS4ERR_NOENT);
        }
        let parent = m.ns.get(dir.parent)?;
        // Leaving an export's root goes back to the pseudo root's export.
        let export_id = match m.export(fh.export_id) {
            Ok(x) if x.root_ino == dir.ino => m.export_rooted_at(parent.ino).map(|x| x.id).unwrap_or(m.root_export().id),
            _ => fh.export_id,
        };
        c.set_fh(m.fh_for(export_id, &parent));
        Ok(())
    })();
    reply(e, r)
}

/// AUTH_SYS and AUTH_NONE, in order of preference.
fn flavors() -> SECINFO4resok<'static> {
    vec![secinfo4::default(pnfs_protocol::rpc::AUTH_SYS), secinfo4::default(pnfs_protocol::rpc::AUTH_NONE)]
}

pub fn secinfo(m: &Mds, c: &mut Compound, a: &SECINFO4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, dir) = current_inode(m, c)?;
        need_dir(dir.kind)?;
        valid_name(&a.name)?;
        m.ns.lookup(dir.ino, &a.name)?;
        // RFC 8881 2.6.3.1.1.8: SECINFO consumes the current filehandle.
        c.current_fh = None;
        Ok(flavors())
    })();
    reply(e, r)
}

pub fn secinfo_no_name(m: &Mds, c: &mut Compound, a: &SECINFO_NO_NAME4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, i) = current_inode(m, c)?;
        if *a == secinfo_style4::SECINFO_STYLE4_PARENT {
            need_dir(i.kind)?;
            if i.ino == ROOT_INO {
                return Err(nfsstat4::NFS4ERR_NOENT);
            }
        }
        c.current_fh = None;
        Ok(flavors())
    })();
    reply(e, r)
}

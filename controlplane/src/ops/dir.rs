//! Directory operations: CREATE, REMOVE, RENAME, LINK, READDIR, READLINK.

use crate::attrs::{decode_settable, encode_fattr, SetContext, FATTR4_RDATTR_ERROR};
use crate::compound::{current_inode, reply, Compound};
use crate::fh::FileHandle;
use crate::mds::*;
use crate::namespace::{valid_name, Inode, NewObject, NfsResult};
use crate::ops::filehandle::need_dir;
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

fn writable_dir(m: &Mds, c: &Compound, fh: FileHandle, dir: &Inode) -> NfsResult<()> {
    need_dir(dir.kind)?;
    let ex = m.export(fh.export_id)?;
    if ex.read_only {
        return Err(nfsstat4::NFS4ERR_ROFS);
    }
    m.check_access(dir, &ex.caller(&c.cred), ACCESS4_MODIFY | ACCESS4_LOOKUP)
}

/// Sticky directories: only the owner of the entry or the directory may remove it.
fn sticky_ok(m: &Mds, c: &Compound, fh: FileHandle, dir: &Inode, name: &[u8]) -> NfsResult<()> {
    if dir.mode & 0o1000 == 0 {
        return Ok(());
    }
    let who = m.export(fh.export_id)?.caller(&c.cred);
    let victim = m.ns.lookup(dir.ino, name)?;
    if who.is_root() || who.uid == dir.uid || who.uid == victim.uid {
        Ok(())
    } else {
        Err(nfsstat4::NFS4ERR_ACCESS)
    }
}

pub fn create(m: &Mds, c: &mut Compound, a: &CREATE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, dir) = current_inode(m, c)?;
        let obj = match &a.objtype {
            createtype4::NF4LNK(target) => {
                if target.is_empty() {
                    return Err(nfsstat4::NFS4ERR_INVAL);
                }
                NewObject { kind: nfs_ftype4::NF4LNK, symlink: target.to_vec(), rdev: (0, 0) }
            }
            createtype4::NF4BLK(d) => NewObject { kind: nfs_ftype4::NF4BLK, symlink: vec![], rdev: (d.specdata1, d.specdata2) },
            createtype4::NF4CHR(d) => NewObject { kind: nfs_ftype4::NF4CHR, symlink: vec![], rdev: (d.specdata1, d.specdata2) },
            createtype4::NF4SOCK => NewObject { kind: nfs_ftype4::NF4SOCK, symlink: vec![], rdev: (0, 0) },
            createtype4::NF4FIFO => NewObject { kind: nfs_ftype4::NF4FIFO, symlink: vec![], rdev: (0, 0) },
            createtype4::NF4DIR => NewObject { kind: nfs_ftype4::NF4DIR, symlink: vec![], rdev: (0, 0) },
            createtype4::default(_) => return Err(nfsstat4::NFS4ERR_BADTYPE),
        };
        need_dir(dir.kind)?;
        valid_name(&a.objname)?;
        let (attrs, attrset) = decode_settable(&a.createattrs, c.minor, SetContext::Create)?;
        if attrs.size.is_some() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        writable_dir(m, c, fh, &dir)?;
        let who = m.export(fh.export_id)?.caller(&c.cred);
        let (before, after, inode) = m.create_object(dir.ino, &a.objname, &obj, &attrs, &who, None)?;
        c.set_fh(m.fh_for(fh.export_id, &inode));
        Ok(CREATE4resok { cinfo: change_info4 { atomic: true, before, after }, attrset })
    })();
    reply(e, r)
}

/// REMOVE. Removing the last name of a file ends it at once, even while
/// other clients hold it open (RFC 8881 leaves this to the server): their
/// layouts are recalled, the data objects deleted, and their further I/O
/// through the old filehandle gets NFS4ERR_STALE (ESTALE on Linux); CLOSE
/// still works. Keeping such files until their last CLOSE (POSIX unlink
/// semantics across clients) would need orphan inodes that survive
/// restarts; a Linux client already keeps its own open files alive with a
/// silly rename instead of REMOVE.
pub fn remove(m: &Mds, c: &mut Compound, a: &REMOVE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, dir) = current_inode(m, c)?;
        need_dir(dir.kind)?;
        valid_name(&a.target)?;
        writable_dir(m, c, fh, &dir)?;
        sticky_ok(m, c, fh, &dir, &a.target)?;
        crate::ops::deleg::break_for_name(m, c, dir.ino, &a.target)?;
        let (before, after, unlinked) = m.ns.remove(dir.ino, &a.target)?;
        if let Some(ino) = unlinked.freed_ino {
            m.recall_layouts_for(ino, c.clientid().ok(), "remove");
        }
        m.free_data(unlinked.freed_ino);
        Ok(REMOVE4resok { cinfo: change_info4 { atomic: true, before, after } })
    })();
    reply(e, r)
}

pub fn rename(m: &Mds, c: &mut Compound, a: &RENAME4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let src_fh = c.saved_fh.ok_or(nfsstat4::NFS4ERR_NOFILEHANDLE)?;
        let (dst_fh, dst) = current_inode(m, c)?;
        let src = m.ns.get(src_fh.ino)?;
        need_dir(src.kind)?;
        need_dir(dst.kind)?;
        if src_fh.export_id != dst_fh.export_id {
            return Err(nfsstat4::NFS4ERR_XDEV);
        }
        valid_name(&a.oldname)?;
        valid_name(&a.newname)?;
        writable_dir(m, c, src_fh, &src)?;
        writable_dir(m, c, dst_fh, &dst)?;
        sticky_ok(m, c, src_fh, &src, &a.oldname)?;
        crate::ops::deleg::break_for_name(m, c, src.ino, &a.oldname).and(crate::ops::deleg::break_for_name(m, c, dst.ino, &a.newname))?;
        let ((sb, sa), (db, da), unlinked) = m.ns.rename(src.ino, &a.oldname, dst.ino, &a.newname)?;
        if let Some(ino) = unlinked.freed_ino {
            m.recall_layouts_for(ino, c.clientid().ok(), "rename over");
        }
        m.free_data(unlinked.freed_ino);
        Ok(RENAME4resok {
            source_cinfo: change_info4 { atomic: true, before: sb, after: sa },
            target_cinfo: change_info4 { atomic: true, before: db, after: da },
        })
    })();
    reply(e, r)
}

pub fn link(m: &Mds, c: &mut Compound, a: &LINK4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let src_fh = c.saved_fh.ok_or(nfsstat4::NFS4ERR_NOFILEHANDLE)?;
        let (dir_fh, dir) = current_inode(m, c)?;
        need_dir(dir.kind)?;
        let src = m.ns.get(src_fh.ino)?;
        if src.is_dir() {
            return Err(nfsstat4::NFS4ERR_ISDIR);
        }
        if src_fh.export_id != dir_fh.export_id {
            return Err(nfsstat4::NFS4ERR_XDEV);
        }
        valid_name(&a.newname)?;
        writable_dir(m, c, dir_fh, &dir)?;
        crate::ops::deleg::break_conflicts(m, c.clientid().ok(), src.ino, true)?;
        let (before, after) = m.ns.link(src.ino, dir.ino, &a.newname)?;
        Ok(LINK4resok { cinfo: change_info4 { atomic: true, before, after } })
    })();
    reply(e, r)
}

pub fn readlink(m: &Mds, c: &mut Compound, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, i) = current_inode(m, c)?;
        match i.ftype() {
            nfs_ftype4::NF4LNK => Ok(READLINK4resok { link: i.symlink.into() }),
            nfs_ftype4::NF4DIR => Err(nfsstat4::NFS4ERR_ISDIR),
            _ => Err(nfsstat4::NFS4ERR_INVAL),
        }
    })();
    reply(e, r)
}

/// READDIR writes its reply by hand: the entry list is a linked list in XDR,
/// and building it as nested boxes would recurse once per entry.
pub fn readdir(m: &Mds, c: &mut Compound, a: &READDIR4args, e: &mut Encoder) -> nfsstat4 {
    match readdir_inner(m, c, a, e) {
        Ok(()) => nfsstat4::NFS4_OK,
        Err(s) => reply::<()>(e, Err(s)),
    }
}

fn readdir_inner(m: &Mds, c: &mut Compound, a: &READDIR4args, e: &mut Encoder) -> NfsResult<()> {
    let (fh, dir) = current_inode(m, c)?;
    need_dir(dir.kind)?;
    if a.cookie == 1 || a.cookie == 2 {
        return Err(nfsstat4::NFS4ERR_BAD_COOKIE);
    }
    let ex = m.export(fh.export_id)?;
    m.check_access(&dir, &ex.caller(&c.cred), ACCESS4_READ)?;
    // Reply budget: the client's maxcount, within the session's limit.
    let maxcount = (a.maxcount as usize).min(c.max_response.saturating_sub(512));
    // status + verifier + (no more entries) + eof
    const FIXED: usize = 4 + 8 + 4 + 4;
    if maxcount < FIXED + 32 {
        return Err(nfsstat4::NFS4ERR_TOOSMALL);
    }
    let start = e.len();
    e.put_i32(nfsstat4::NFS4_OK as i32);
    e.put_fixed_opaque(&[0u8; 8]); // cookieverf: cookies never expire here
    let mut used = FIXED;
    let mut after = a.cookie;
    let mut eof = false;
    let mut entries = 0usize;
    'pages: loop {
        let (page, last) = m.ns.readdir(dir.ino, after, 128)?;
        for ent in page {
            if !m.visible(fh.export_id, ent.inode.ino) {
                after = ent.cookie;
                continue;
            }
            let efh = m.fh_for(fh.export_id, &ent.inode);
            let efhb = efh.to_bytes(&m.fh_key);
            let cx = m.attr_context(c.minor, &efhb, &ent.inode);
            let attrs = encode_fattr(&ent.inode, &a.attr_request, &cx);
            let mut item = Encoder::new();
            item.put_bool(true);
            item.put_u64(ent.cookie);
            let _ = item.put_opaque(&ent.name, u32::MAX);
            item.put_u32(attrs.attrmask.len() as u32);
            attrs.attrmask.iter().for_each(|w| item.put_u32(*w));
            let _ = item.put_opaque(&attrs.attr_vals, u32::MAX);
            if used + item.len() > maxcount {
                if entries == 0 {
                    e.buf.truncate(start);
                    return Err(nfsstat4::NFS4ERR_TOOSMALL);
                }
                break 'pages;
            }
            used += item.len();
            e.buf.extend_from_slice(&item.buf);
            entries += 1;
            after = ent.cookie;
        }
        if last {
            eof = true;
            break;
        }
    }
    let _ = FATTR4_RDATTR_ERROR;
    e.put_bool(false);
    e.put_bool(eof);
    Ok(())
}

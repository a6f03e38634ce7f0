//! File data through the MDS: READ, WRITE, COMMIT.

use crate::compound::{current_inode, reply, Compound};
use crate::mds::*;
use crate::namespace::{Inode, NfsResult};
use crate::ops::stateid::{check_io_stateid, IoMode};
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

/// Headroom kept in a reply for the COMPOUND and RPC headers around data.
const REPLY_OVERHEAD: usize = 1024;

pub fn regular_file(i: &Inode) -> NfsResult<()> {
    match i.ftype() {
        nfs_ftype4::NF4REG => Ok(()),
        nfs_ftype4::NF4DIR => Err(nfsstat4::NFS4ERR_ISDIR),
        nfs_ftype4::NF4LNK => Err(nfsstat4::NFS4ERR_SYMLINK),
        _ => Err(nfsstat4::NFS4ERR_INVAL),
    }
}

/// Reads `count` bytes at `offset` of a file of the namespace's size,
/// zero-filling what the data object lacks. Returns (data, eof).
pub fn read_data(m: &Mds, c: &Compound, i: &Inode, offset: u64, count: u32) -> NfsResult<(Vec<u8>, bool)> {
    let budget = c.max_response.saturating_sub(REPLY_OVERHEAD) as u64;
    let count = (count as u64).min(m.cfg.max_io_bytes as u64).min(budget);
    if offset >= i.size {
        return Ok((Vec::new(), true));
    }
    let n = count.min(i.size - offset) as usize;
    let mut buf = vec![0u8; n];
    let got = m.data.read(i.ino, offset, &mut buf).map_err(io_err)?;
    buf[got..].fill(0);
    Ok((buf, offset + n as u64 >= i.size))
}

/// Checks I/O access: stateid, then for special stateids the file mode.
pub fn check_io(m: &Mds, c: &Compound, stateid: &stateid4, i: &Inode, export_id: u16, mode: IoMode) -> NfsResult<()> {
    let ex = m.export(export_id)?;
    if mode == IoMode::Write && ex.read_only {
        return Err(nfsstat4::NFS4ERR_ROFS);
    }
    let special = check_io_stateid(m, c, stateid, i.ino, mode)?;
    crate::ops::deleg::break_conflicts_for_io(m, c.clientid().ok(), i.ino, mode == IoMode::Write, special)?;
    if special {
        let who = ex.caller(&c.cred);
        if who.uid != i.uid {
            m.check_access(i, &who, if mode == IoMode::Write { ACCESS4_MODIFY } else { ACCESS4_READ })?;
        }
    }
    Ok(())
}

pub fn read(m: &Mds, c: &mut Compound, a: &READ4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, i) = current_inode(m, c)?;
        regular_file(&i)?;
        check_io(m, c, &a.stateid, &i, fh.export_id, IoMode::Read)?;
        let (data, eof) = read_data(m, c, &i, a.offset, a.count)?;
        crate::metrics::metrics().read_bytes.inc_by(data.len() as u64);
        Ok(READ4resok { eof, data: data.into() })
    })();
    reply(e, r)
}

pub fn write(m: &Mds, c: &mut Compound, a: &WRITE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, i) = current_inode(m, c)?;
        regular_file(&i)?;
        check_io(m, c, &a.stateid, &i, fh.export_id, IoMode::Write)?;
        if a.data.len() > m.cfg.max_io_bytes as usize {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        let end = a.offset.checked_add(a.data.len() as u64).ok_or(nfsstat4::NFS4ERR_FBIG)?;
        if end > i64::MAX as u64 {
            return Err(nfsstat4::NFS4ERR_FBIG);
        }
        let stable = a.stable != stable_how4::UNSTABLE4;
        // Data on the DSes is always written stable (see StripedStore::write).
        let durable = m.data.write(i.ino, a.offset, &a.data, stable).map_err(io_err)?;
        crate::metrics::metrics().write_bytes.inc_by(a.data.len() as u64);
        // Size and mtime go to the metadata store in their own transaction;
        // the data store's fdatasync above made the bytes durable first.
        if !a.data.is_empty() {
            m.ns.note_write(i.ino, end)?;
        }
        Ok(WRITE4resok {
            count: a.data.len() as u32,
            committed: if durable { stable_how4::FILE_SYNC4 } else { stable_how4::UNSTABLE4 },
            writeverf: m.write_verifier,
        })
    })();
    reply(e, r)
}

pub fn commit(m: &Mds, c: &mut Compound, a: &COMMIT4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, i) = current_inode(m, c)?;
        regular_file(&i)?;
        if a.offset.checked_add(a.count as u64).is_none() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        m.data.commit(i.ino).map_err(io_err)?;
        Ok(COMMIT4resok { writeverf: m.write_verifier })
    })();
    reply(e, r)
}

//! NFSv4.2 data operations (RFC 7862): ALLOCATE, DEALLOCATE, SEEK, COPY
//! (synchronous, intra-server), CLONE, READ_PLUS.

use crate::compound::{current_inode, reply, Compound};
use crate::datastore::SeekWhat;
use crate::mds::*;
use crate::namespace::{Inode, NfsResult, SetAttrs};
use crate::ops::io::{check_io, read_data, regular_file};
use crate::ops::stateid::IoMode;
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

const CLONE_BLKSIZE: u64 = 4096;

fn range_end(offset: u64, len: u64) -> NfsResult<u64> {
    let end = offset.checked_add(len).ok_or(nfsstat4::NFS4ERR_INVAL)?;
    if end > i64::MAX as u64 {
        return Err(nfsstat4::NFS4ERR_FBIG);
    }
    Ok(end)
}

fn file_for_write(m: &Mds, c: &Compound, stateid: &stateid4) -> NfsResult<Inode> {
    let (fh, i) = current_inode(m, c)?;
    regular_file(&i)?;
    check_io(m, c, stateid, &i, fh.export_id, IoMode::Write)?;
    Ok(i)
}

pub fn allocate(m: &Mds, c: &mut Compound, a: &ALLOCATE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let i = file_for_write(m, c, &a.aa_stateid)?;
        if a.aa_length == 0 {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        let end = range_end(a.aa_offset, a.aa_length)?;
        m.data.allocate(i.ino, a.aa_offset, a.aa_length).map_err(io_err)?;
        // ALLOCATE past EOF extends the file (like fallocate without KEEP_SIZE).
        if end > i.size {
            m.data.truncate(i.ino, end).map_err(io_err)?;
            m.ns.setattr(i.ino, &SetAttrs { size: Some(end), ..Default::default() }, None)?;
        }
        Ok(())
    })();
    reply(e, r)
}

pub fn deallocate(m: &Mds, c: &mut Compound, a: &DEALLOCATE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let i = file_for_write(m, c, &a.da_stateid)?;
        if a.da_length == 0 {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        range_end(a.da_offset, a.da_length)?;
        if a.da_offset < i.size {
            let len = a.da_length.min(i.size - a.da_offset);
            m.data.deallocate(i.ino, a.da_offset, len).map_err(io_err)?;
            m.ns.note_write(i.ino, 0)?;
        }
        Ok(())
    })();
    reply(e, r)
}

pub fn seek(m: &Mds, c: &mut Compound, a: &SEEK4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, i) = current_inode(m, c)?;
        regular_file(&i)?;
        check_io(m, c, &a.sa_stateid, &i, fh.export_id, IoMode::Read)?;
        if a.sa_offset >= i.size {
            return Err(nfsstat4::NFS4ERR_NXIO);
        }
        let what = match a.sa_what {
            data_content4::NFS4_CONTENT_DATA => SeekWhat::Data,
            data_content4::NFS4_CONTENT_HOLE => SeekWhat::Hole,
        };
        let found = m.data.seek(i.ino, a.sa_offset, what).map_err(io_err)?;
        // The data object may be shorter than the file: its tail is a hole.
        let res = match (what, found) {
            (SeekWhat::Data, Some(o)) if o < i.size => seek_res4 { sr_eof: false, sr_offset: o },
            (SeekWhat::Data, _) => return Err(nfsstat4::NFS4ERR_NXIO),
            (SeekWhat::Hole, Some(o)) if o < i.size => seek_res4 { sr_eof: false, sr_offset: o },
            (SeekWhat::Hole, _) => seek_res4 { sr_eof: true, sr_offset: i.size },
        };
        Ok(res)
    })();
    reply(e, r)
}

/// Source and destination of COPY/CLONE: SAVED_FH and CURRENT_FH.
fn src_dst(m: &Mds, c: &Compound, src_sid: &stateid4, dst_sid: &stateid4) -> NfsResult<(Inode, Inode)> {
    let sfh = c.saved_fh.ok_or(nfsstat4::NFS4ERR_NOFILEHANDLE)?;
    let (dfh, dst) = current_inode(m, c)?;
    let src = m.ns.get(sfh.ino)?;
    regular_file(&src)?;
    regular_file(&dst)?;
    if sfh.export_id != dfh.export_id {
        return Err(nfsstat4::NFS4ERR_XDEV);
    }
    check_io(m, c, src_sid, &src, sfh.export_id, IoMode::Read)?;
    check_io(m, c, dst_sid, &dst, dfh.export_id, IoMode::Write)?;
    Ok((src, dst))
}

pub fn copy(m: &Mds, c: &mut Compound, a: &COPY4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        if !a.ca_source_server.is_empty() {
            // Inter-server copy is not offered.
            return Err(nfsstat4::NFS4ERR_NOTSUPP);
        }
        let (src, dst) = src_dst(m, c, &a.ca_src_stateid, &a.ca_dst_stateid)?;
        if a.ca_src_offset > src.size {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        // count 0 means "to the end of the source" (RFC 7862 15.2.3).
        let avail = src.size - a.ca_src_offset;
        let count = if a.ca_count == 0 { avail } else { a.ca_count.min(avail) };
        range_end(a.ca_src_offset, count)?;
        let end = range_end(a.ca_dst_offset, count)?;
        if src.ino == dst.ino && a.ca_src_offset < end && a.ca_dst_offset < a.ca_src_offset + count {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        let n = m.data.copy(src.ino, a.ca_src_offset, dst.ino, a.ca_dst_offset, count).map_err(io_err)?;
        m.data.commit(dst.ino).map_err(io_err)?;
        if n > 0 {
            m.ns.note_write(dst.ino, a.ca_dst_offset + n)?;
        }
        Ok(COPY4resok {
            cr_response: write_response4 {
                wr_callback_id: vec![],
                wr_count: n,
                wr_committed: stable_how4::FILE_SYNC4,
                wr_writeverf: m.write_verifier,
            },
            cr_requirements: copy_requirements4 { cr_consecutive: true, cr_synchronous: true },
        })
    })();
    reply(e, r)
}

pub fn clone(m: &Mds, c: &mut Compound, a: &CLONE4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (src, dst) = src_dst(m, c, &a.cl_src_stateid, &a.cl_dst_stateid)?;
        let count = if a.cl_count == 0 { src.size.saturating_sub(a.cl_src_offset) } else { a.cl_count };
        let src_end = range_end(a.cl_src_offset, count)?;
        let dst_end = range_end(a.cl_dst_offset, count)?;
        if src_end > src.size {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        // Offsets must be block aligned; the length too unless it reaches EOF.
        let aligned = |x: u64| x % CLONE_BLKSIZE == 0;
        if !aligned(a.cl_src_offset) || !aligned(a.cl_dst_offset) || (!aligned(count) && src_end != src.size) {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        if src.ino == dst.ino && a.cl_src_offset < dst_end && a.cl_dst_offset < src_end {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        if count > 0 {
            m.data.clone_range(src.ino, a.cl_src_offset, dst.ino, a.cl_dst_offset, count).map_err(io_err)?;
            m.ns.note_write(dst.ino, dst_end)?;
        }
        Ok(())
    })();
    reply(e, r)
}

pub fn read_plus(m: &Mds, c: &mut Compound, a: &READ_PLUS4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (fh, i) = current_inode(m, c)?;
        regular_file(&i)?;
        check_io(m, c, &a.rpa_stateid, &i, fh.export_id, IoMode::Read)?;
        let (data, eof) = read_data(m, c, &i, a.rpa_offset, a.rpa_count)?;
        let contents = if data.is_empty() {
            vec![]
        } else {
            vec![read_plus_content::NFS4_CONTENT_DATA(data4 { d_offset: a.rpa_offset, d_data: data.into() })]
        };
        Ok(read_plus_res4 { rpr_eof: eof, rpr_contents: contents })
    })();
    reply(e, r)
}

/// The file and layout a LAYOUTERROR or LAYOUTSTATS is about: the current
/// filehandle (a regular file) and a layout stateid of this client on it,
/// so only a client holding a layout of the file reports on its devices.
fn layout_report(m: &Mds, c: &Compound, offset: u64, length: u64, stateid: &stateid4) -> NfsResult<(u64, u64)> {
    m.pnfs.as_ref().ok_or(nfsstat4::NFS4ERR_NOTSUPP)?;
    let (_, i) = current_inode(m, c)?;
    regular_file(&i)?;
    let clientid = c.clientid()?;
    if length != u64::MAX {
        range_end(offset, length)?;
    }
    let sid = crate::ops::stateid::resolve(c, stateid)?;
    m.state().layout_check(clientid, i.ino, &sid)?;
    Ok((clientid, i.ino))
}

/// LAYOUTERROR (RFC 7862 15.6): a client's I/O to data servers failed. The
/// data servers of each device named are checked off the request's path
/// (`Pnfs::layout_error`); the answer does not wait for it.
pub fn layouterror(m: &Mds, c: &mut Compound, a: &LAYOUTERROR4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (_, ino) = layout_report(m, c, a.lea_offset, a.lea_length, &a.lea_stateid)?;
        let p = m.pnfs.as_ref().ok_or(nfsstat4::NFS4ERR_NOTSUPP)?;
        for err in a.lea_errors.iter().take(crate::pnfs::health::MAX_ERRORS_PER_REPORT) {
            p.layout_error(ino, &err.de_deviceid, err.de_status, err.de_opnum);
        }
        Ok(())
    })();
    reply(e, r)
}

/// LAYOUTSTATS (RFC 7862 15.7): what a client did on a device of its
/// layout; kept as per-data-server metrics (`Pnfs::layout_stats`).
pub fn layoutstats(m: &Mds, c: &mut Compound, a: &LAYOUTSTATS4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let (clientid, ino) = layout_report(m, c, a.lsa_offset, a.lsa_length, &a.lsa_stateid)?;
        let p = m.pnfs.as_ref().ok_or(nfsstat4::NFS4ERR_NOTSUPP)?;
        p.layout_stats(clientid, ino, &a.lsa_deviceid, &a.lsa_read, &a.lsa_write, &a.lsa_layoutupdate);
        Ok(())
    })();
    reply(e, r)
}

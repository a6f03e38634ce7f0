//! Object data: READ, WRITE, COMMIT. Offsets are object offsets (dense
//! striping: the client maps file offsets to object offsets).
//!
//! WRITE answers UNSTABLE4 for UNSTABLE4 requests (data in the page cache or
//! written O_DIRECT without a cache flush) with the per-boot write verifier,
//! so the client COMMITs and then LAYOUTCOMMITs to the MDS; DATA_SYNC4 and
//! FILE_SYNC4 requests are fdatasync'ed (unless nothing is unsynced: an
//! object's dirty generation tells, see [`crate::storage::Engine::commit`])
//! and answered DATA_SYNC4, never
//! FILE_SYNC4: the file's size and mtime live on the MDS, which learns them
//! only from LAYOUTCOMMIT, and a files-layout client (Linux) skips
//! LAYOUTCOMMIT after a FILE_SYNC4 reply from a data server, so a small
//! fsync'ed write past EOF would otherwise never reach the file's size.

use crate::compound::{reply, Compound, NfsResult, ReplyBuf};
use crate::ds::Ds;
use crate::stats::bump;
use crate::storage::aio::IoJob;
use crate::storage::{is_aligned, Detached, IoError, Object, PoolBuf};
use pnfs_protocol::wire::*;

/// Headroom kept in a reply for the COMPOUND and RPC headers around data.
const REPLY_OVERHEAD: usize = 1024;

pub fn io_status(e: &std::io::Error) -> nfsstat4 {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => nfsstat4::NFS4ERR_NOSPC,
        Some(libc::EDQUOT) => nfsstat4::NFS4ERR_DQUOT,
        Some(libc::EFBIG) => nfsstat4::NFS4ERR_FBIG,
        Some(libc::ENOENT) | Some(libc::ESTALE) => nfsstat4::NFS4ERR_STALE,
        _ => {
            log::warn!("object I/O failed: {e}");
            nfsstat4::NFS4ERR_IO
        }
    }
}

fn engine_status(ds: &Ds, e: IoError) -> nfsstat4 {
    match e {
        IoError::NoBuffer => {
            bump(&ds.stats.buffer_pool_exhausted, 1);
            nfsstat4::NFS4ERR_DELAY
        }
        IoError::Io(e) => io_status(&e),
    }
}

pub fn read(ds: &Ds, c: &mut Compound, a: &READ4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = (|| -> NfsResult<Option<(Option<PoolBuf>, usize, bool)>> {
        let (fh, obj) = c.object()?;
        c.replica.check_io(&a.stateid, &fh, false, c.owner_tag()?)?;
        let budget = c.max_response.saturating_sub(REPLY_OVERHEAD);
        let count = (a.count as usize).min(ds.cfg.max_io()).min(budget);
        if a.offset > i64::MAX as u64 || count == 0 {
            let size = obj.size().map_err(|e| io_status(&e))?;
            return Ok(Some((None, 0, a.offset >= size)));
        }
        if c.can_defer && IoJob::supported(&obj) {
            // Asynchronous: the reactor runs the read, then encodes the
            // result with `finish_read` and `encode_read`.
            let buf = c.engine.pool.take().ok_or_else(|| engine_status(ds, IoError::NoBuffer))?;
            c.deferred = Some(IoJob { obj, offset: a.offset, count, buf, write: false });
            return Ok(None);
        }
        let (buf, n) = c.engine.read(&obj, a.offset, count).map_err(|e| engine_status(ds, e))?;
        let size = obj.size().map_err(|e| io_status(&e))?;
        bump(&ds.stats.bytes_read, n as u64);
        Ok(Some((Some(buf), n, a.offset + n as u64 >= size)))
    })();
    match r {
        Ok(None) => nfsstat4::NFS4_OK, // deferred: nothing encoded yet
        Ok(Some((Some(buf), n, eof))) => encode_read(ds, rb, Ok((buf, n, eof))),
        Ok(Some((None, _, eof))) => encode_empty_read(rb, eof),
        Err(s) => encode_read(ds, rb, Err(s)),
    }
}

/// The READ result of a deferred read that completed: (buffer, bytes,
/// eof), eof from the object's size now.
pub fn finish_read(ds: &Ds, obj: &Object, offset: u64, done: std::io::Result<(PoolBuf, usize)>) -> NfsResult<(PoolBuf, usize, bool)> {
    let (buf, n) = done.map_err(|e| io_status(&e))?;
    let size = obj.size().map_err(|e| io_status(&e))?;
    bump(&ds.stats.bytes_read, n as u64);
    Ok((buf, n, offset + n as u64 >= size))
}

fn encode_empty_read(rb: &mut ReplyBuf, eof: bool) -> nfsstat4 {
    rb.e.put_i32(nfsstat4::NFS4_OK as i32);
    rb.e.put_bool(eof);
    rb.e.put_u32(0);
    nfsstat4::NFS4_OK
}

/// Encodes a READ result; the data buffer is attached to the reply (or
/// copied into it when the reply carries one already).
pub fn encode_read(ds: &Ds, rb: &mut ReplyBuf, r: NfsResult<(PoolBuf, usize, bool)>) -> nfsstat4 {
    match r {
        Err(s) => reply::<()>(rb, Err(s)),
        Ok((buf, n, eof)) => {
            rb.e.put_i32(nfsstat4::NFS4_OK as i32);
            rb.e.put_bool(eof);
            rb.e.put_u32(n as u32);
            if let Err(buf) = rb.attach(buf, n) {
                // A second READ in one COMPOUND: copy it into the reply.
                rb.e.buf.extend_from_slice(&buf.as_slice()[..n]);
                bump(&ds.stats.payload_copies, 1);
            }
            rb.e.buf.extend_from_slice(&[0u8; 3][..(4 - n % 4) % 4]);
            nfsstat4::NFS4_OK
        }
    }
}

pub fn write(ds: &Ds, c: &mut Compound, a: &WRITE4args, rb: &mut ReplyBuf) -> nfsstat4 {
    // Zero-copy receive left the data in a pool buffer and 0 as its length
    // in the record; taken first, so it never outlives this op.
    let mut detached = c.detached.take().filter(|_| a.data.is_empty());
    let len = detached.as_ref().map_or(a.data.len(), |d| d.len);
    let r = (|| -> NfsResult<WRITE4resok> {
        let (fh, obj) = c.object()?;
        c.replica.check_io(&a.stateid, &fh, true, c.owner_tag()?)?;
        if detached.as_ref().is_some_and(|d| d.buf.is_none()) {
            // Dropped at receive (not admitted then, see crate::transport::recv): the
            // client sends it again.
            return Err(nfsstat4::NFS4ERR_DELAY);
        }
        if len > ds.cfg.max_io() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        let end = a.offset.checked_add(len as u64).ok_or(nfsstat4::NFS4ERR_FBIG)?;
        if end > i64::MAX as u64 {
            return Err(nfsstat4::NFS4ERR_FBIG);
        }
        let stable = a.stable != stable_how4::UNSTABLE4;
        if c.can_defer && !stable && len > 0 && IoJob::supported(&obj) {
            // Asynchronous: data in a pool buffer (received there, or an
            // aligned write that would be copied into one anyway); the
            // reactor runs the write, then encodes with `finish_write`.
            let buf = match detached.take() {
                Some(d) => d.buf,
                None if obj.has_direct() && is_aligned(a.offset) && is_aligned(len as u64) && len <= c.engine.pool.buf_size() => {
                    c.engine.pool.take().map(|mut b| {
                        b.as_mut_slice()[..len].copy_from_slice(&a.data);
                        bump(&ds.stats.payload_copies, 1);
                        b
                    })
                }
                None => None,
            };
            if let Some(buf) = buf {
                c.deferred = Some(IoJob { obj, offset: a.offset, count: len, buf, write: true });
                return Err(DEFERRED);
            }
        }
        if stable {
            // Writes of this reactor still in flight are counted in their
            // objects' dirty generations before the sync looks at it.
            c.drain_writes();
        }
        match &detached {
            Some(Detached { buf: Some(b), len }) => c.engine.write_pooled(&obj, a.offset, b, *len).map_err(|e| engine_status(ds, e))?,
            Some(Detached { buf: None, .. }) => return Err(nfsstat4::NFS4ERR_DELAY), // (answered above)
            None if !a.data.is_empty() => c.engine.write(&obj, a.offset, &a.data).map_err(|e| engine_status(ds, e))?,
            None => {}
        }
        if stable {
            c.engine.commit(&obj).map_err(|e| io_status(&e))?;
        }
        bump(&ds.stats.bytes_written, len as u64);
        Ok(WRITE4resok {
            count: len as u32,
            // Data durable, file metadata (size) not: see the module comment.
            committed: if stable { stable_how4::DATA_SYNC4 } else { stable_how4::UNSTABLE4 },
            writeverf: ds.write_verifier,
        })
    })();
    match r {
        Err(DEFERRED) if c.deferred.is_some() => nfsstat4::NFS4_OK, // nothing encoded yet
        r => reply(rb, r),
    }
}

/// Stands for "deferred" inside `write` (never encoded).
const DEFERRED: nfsstat4 = nfsstat4::NFS4ERR_DELAY;

/// The WRITE result of a deferred write that completed (`done`: bytes
/// written or the error; its object's dirty generation counted it).
pub fn finish_write(ds: &Ds, done: std::io::Result<usize>) -> NfsResult<WRITE4resok> {
    let n = done.map_err(|e| io_status(&e))?;
    bump(&ds.stats.bytes_written, n as u64);
    Ok(WRITE4resok { count: n as u32, committed: stable_how4::UNSTABLE4, writeverf: ds.write_verifier })
}

/// COMMIT: of the whole object (the client sends offset 0, count 0). An
/// object with no write since its last fdatasync answers at once; else one
/// fdatasync, which covers every write acknowledged before this COMMIT
/// arrived, on any reactor (see [`crate::storage::Object`]).
pub fn commit(ds: &Ds, c: &mut Compound, a: &COMMIT4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = (|| {
        let (_, obj) = c.object()?;
        if a.offset.checked_add(a.count as u64).is_none() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        // Writes of this reactor still in flight complete (and are counted
        // in their objects' dirty generations) before the COMMIT looks.
        c.drain_writes();
        c.engine.commit(&obj).map_err(|e| io_status(&e))?;
        Ok(COMMIT4resok { writeverf: ds.write_verifier })
    })();
    reply(rb, r)
}

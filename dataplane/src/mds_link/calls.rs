//! The control-call handlers: OBJ_CREATE/TRUNCATE/REMOVE/READ/WRITE/
//! COMMIT/STAT on the object store, STATEID_ALLOW/REVOKE and STATEID_BATCH
//! on the update bus (STATEID_BATCH on the control runtime itself, the rest
//! on its blocking pool).

use crate::bus::{PublishError, Update};
use crate::ds::Ds;
use crate::fh::DsFh;
use crate::stats::bump;
use pnfs_protocol::control_auth::Verified;
use pnfs_protocol::rpc::{self, AcceptStat, Checked};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use super::epochs::FenceError;

/// Largest OBJ_READ answered in full (the MDS's largest max_io_bytes).
pub(super) const CTL_MAX_READ: u64 = 16 << 20;

/// The DS control program's call header (the sealed credential was
/// verified by `CallChecker` before).
const CONTROL_CALLS: rpc::CallPolicy = rpc::CallPolicy {
    prog: PNFSCTL_DS_PROGRAM,
    vers: PNFSCTL_VERSION,
    procs: &[
        rpc::PROC_NULL,
        CTL_PROC_OBJ_CREATE,
        CTL_PROC_OBJ_TRUNCATE,
        CTL_PROC_OBJ_REMOVE,
        CTL_PROC_OBJ_READ,
        CTL_PROC_OBJ_WRITE,
        CTL_PROC_OBJ_COMMIT,
        CTL_PROC_OBJ_STAT,
        CTL_PROC_STATEID_ALLOW,
        CTL_PROC_STATEID_REVOKE,
        CTL_PROC_STATEID_BATCH,
        CTL_PROC_FENCE,
        CTL_PROC_OBJ_COPY,
        CTL_PROC_OBJ_VERSION_SET,
        CTL_PROC_OBJ_VERSION_GET,
        CTL_PROC_OBJ_READ_SPARSE,
    ],
    flavors: &[pnfs_protocol::control_auth::AUTH_PNFS_CTL],
};

/// Runs one authenticated control call. STATEID_BATCH and FENCE run on the
/// control runtime itself: they only update in-memory tables and await
/// the reactors' acknowledgements or the fenced node's running calls, so
/// the blocking-pool hop (two thread switches per call) is saved. Every
/// other call may do file I/O and runs on the blocking pool.
pub(super) async fn run_call(ds: Arc<Ds>, rec: Vec<u8>, verified: Verified) -> Option<Vec<u8>> {
    if let Checked::Call { header, args } = CONTROL_CALLS.check(&rec) {
        let garbage = || Some(rpc::accepted_reply(header.xid, AcceptStat::GarbageArgs));
        if header.proc_ == CTL_PROC_FENCE {
            bump(&ds.stats.control_calls, 1);
            let Some(a) = decode_whole::<ctl_fence_args>(args) else { return garbage() };
            let res = ctl_res { cr_status: fence(&ds, &a, &verified).await };
            return sealed_reply(&ds, &verified, &res);
        }
        if header.proc_ == CTL_PROC_STATEID_BATCH {
            bump(&ds.stats.control_calls, 1);
            let Some(a) = decode_whole::<ctl_batch_args>(args) else { return garbage() };
            let res = stateid_batch_async(&ds, &a).await;
            return sealed_reply(&ds, &verified, &res);
        }
    }
    tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle_call(&ds, &rec, &verified))).unwrap_or_else(|_| {
            log::error!("internal error in a control call; answered SYSTEM_ERR");
            rpc::system_err_reply(&rec)
        })
    })
    .await
    .unwrap_or(None)
}

/// All of `args` as an `A`, nothing left over.
fn decode_whole<'a, A: XdrDecode<'a>>(args: &'a [u8]) -> Option<A> {
    let mut d = Decoder::new(args);
    A::decode(&mut d).ok().filter(|_| d.remaining() == 0)
}

/// The sealed SUCCESS reply carrying `res` (GARBAGE_ARGS should it not encode).
fn sealed_reply(ds: &Ds, verified: &Verified, res: &impl XdrEncode) -> Option<Vec<u8>> {
    let mut e = Encoder::new();
    verified.begin_reply(&mut e);
    if let Err(err) = res.encode(&mut e) {
        log::error!("encoding a control reply: {err}");
        return Some(rpc::accepted_reply(verified.xid, AcceptStat::GarbageArgs));
    }
    let mut reply = e.into_inner();
    verified.seal_reply(reply_keys(ds, verified), &mut reply);
    Some(reply)
}

/// The keys that seal the reply to `v`: another data server's calls (object
/// copies) are answered under the DS-to-DS keys they were signed with.
fn reply_keys<'a>(ds: &'a Ds, v: &Verified) -> &'a pnfs_protocol::control_auth::ControlKeys {
    if v.by_peer {
        &ds.peer_keys
    } else {
        &ds.control_keys
    }
}

/// One authenticated control RPC record in, at most one reply out (FENCE,
/// which waits on other calls, only through `run_call`).
pub(super) fn handle_call(ds: &Ds, rec: &[u8], verified: &Verified) -> Option<Vec<u8>> {
    let (header, args) = match CONTROL_CALLS.check(rec) {
        Checked::Call { header, args } => (header, args),
        Checked::Reply { .. } | Checked::Unreadable => return None,
        Checked::Refused(reply) => return Some(reply),
    };
    let xid = header.xid;
    bump(&ds.stats.control_calls, 1);
    let mut e = Encoder::new();
    verified.begin_reply(&mut e);
    let r = match header.proc_ {
        0 => Ok(()),
        CTL_PROC_OBJ_CREATE => call(args, &mut e, |a: ctl_obj_args| ctl_res { cr_status: obj_create(ds, &a.coa_fh) }),
        CTL_PROC_OBJ_TRUNCATE => call(args, &mut e, |a: ctl_truncate_args| ctl_res { cr_status: obj_truncate(ds, &a) }),
        CTL_PROC_OBJ_REMOVE => call(args, &mut e, |a: ctl_obj_args| ctl_res { cr_status: obj_remove(ds, &a.coa_fh) }),
        CTL_PROC_OBJ_READ => call(args, &mut e, |a: ctl_read_args| obj_read(ds, &a)),
        CTL_PROC_OBJ_WRITE => call(args, &mut e, |a: ctl_write_args| ctl_res { cr_status: obj_write(ds, &a) }),
        CTL_PROC_OBJ_COMMIT => call(args, &mut e, |a: ctl_obj_args| ctl_res { cr_status: obj_commit(ds, &a.coa_fh) }),
        CTL_PROC_OBJ_STAT => call(args, &mut e, |a: ctl_obj_args| obj_stat(ds, &a.coa_fh)),
        CTL_PROC_STATEID_ALLOW => call(args, &mut e, |a: ctl_stateid_args| ctl_res { cr_status: stateid_allow(ds, &a) }),
        CTL_PROC_STATEID_REVOKE => call(args, &mut e, |a: ctl_revoke_args| ctl_res {
            cr_status: flatten(publish(ds, "STATEID_REVOKE", Update::Revoke { other: a.cva_stateid.other })),
        }),
        CTL_PROC_STATEID_BATCH => call(args, &mut e, |a: ctl_batch_args| stateid_batch(ds, &a)),
        CTL_PROC_OBJ_COPY => call(args, &mut e, |a: ctl_copy_args| super::copy::obj_copy(ds, &a)),
        CTL_PROC_OBJ_VERSION_SET => call(args, &mut e, |a: ctl_version_args| obj_version(ds, &a.cvs_fh, Some(a.cvs_version))),
        CTL_PROC_OBJ_VERSION_GET => call(args, &mut e, |a: ctl_obj_args| obj_version(ds, &a.coa_fh, None)),
        CTL_PROC_OBJ_READ_SPARSE => call(args, &mut e, |a: ctl_read_args| obj_read_sparse(ds, &a)),
        _ => return Some(rpc::accepted_reply(xid, AcceptStat::ProcUnavail)),
    };
    match r {
        Ok(()) => {
            let mut reply = e.into_inner();
            verified.seal_reply(reply_keys(ds, verified), &mut reply);
            Some(reply)
        }
        Err(()) => Some(rpc::accepted_reply(xid, AcceptStat::GarbageArgs)),
    }
}

/// Decodes `A` (all of `args`, nothing left over), runs `f`, encodes its result.
fn call<'a, A: XdrDecode<'a>, R: XdrEncode>(args: &'a [u8], e: &mut Encoder, f: impl FnOnce(A) -> R) -> Result<(), ()> {
    let a = decode_whole::<A>(args).ok_or(())?;
    f(a).encode(e).map_err(|err| log::error!("encoding a control reply: {err}"))
}

/// The object a control call names: its bare identity, or the sealed form
/// clients hold (checked like theirs).
pub(super) fn object_fh(ds: &Ds, b: &[u8]) -> Result<DsFh, ctl_status> {
    let fh = if b.len() == pnfs_protocol::ds_handle::SEALED_LEN { DsFh::open(b, &ds.fh_key) } else { DsFh::parse(b) };
    match fh {
        Ok(fh) if !fh.is_root() => Ok(fh),
        _ => Err(ctl_status::CTL_INVAL),
    }
}

fn io_ctl(e: &io::Error) -> ctl_status {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ctl_status::CTL_NOSPC,
        Some(libc::EFBIG) | Some(libc::EINVAL) => ctl_status::CTL_INVAL,
        _ if e.kind() == io::ErrorKind::NotFound => ctl_status::CTL_NOENT,
        _ => {
            log::warn!("control object I/O: {e}");
            ctl_status::CTL_IO
        }
    }
}

fn flatten(r: Result<(), ctl_status>) -> ctl_status {
    r.err().unwrap_or(ctl_status::CTL_OK)
}

/// Publishes `u` on the update bus; Ok once every reactor applied it.
fn publish(ds: &Ds, what: &str, u: Update) -> Result<(), ctl_status> {
    bump(&ds.stats.control_updates, 1);
    ds.bus.publish(u).map(|_| ()).map_err(|e| {
        bump(&ds.stats.control_update_failures, 1);
        log::warn!("{what} failed: {e}");
        publish_status(e)
    })
}

fn publish_status(e: PublishError) -> ctl_status {
    match e {
        PublishError::Refused => ctl_status::CTL_NOSPC,
        PublishError::QueueFull | PublishError::NotApplied => ctl_status::CTL_IO,
    }
}

pub(super) fn obj_create(ds: &Ds, fh: &[u8]) -> ctl_status {
    flatten((|| {
        let o = ds.store.create(&object_fh(ds, fh)?).map_err(|e| io_ctl(&e))?;
        publish(ds, "OBJ_CREATE", Update::ObjCreated(o))
    })())
}

/// The file goes first, then every reactor drops its descriptor: a reactor
/// opening the object meanwhile either opened it before the unlink (and
/// drops it with the update) or finds it gone (STALE).
fn obj_remove(ds: &Ds, fh: &[u8]) -> ctl_status {
    flatten((|| {
        let fh = object_fh(ds, fh)?;
        ds.store.remove(&fh).map_err(|e| io_ctl(&e))?;
        publish(ds, "OBJ_REMOVE", Update::ObjRemoved(fh))
    })())
}

fn obj_truncate(ds: &Ds, a: &ctl_truncate_args) -> ctl_status {
    flatten((|| {
        let fh = object_fh(ds, &a.cta_fh)?;
        if a.cta_size > i64::MAX as u64 {
            return Err(ctl_status::CTL_INVAL);
        }
        ds.store.truncate(&fh, a.cta_size).map_err(|e| io_ctl(&e))
    })())
}

fn obj_commit(ds: &Ds, fh: &[u8]) -> ctl_status {
    flatten((|| {
        ds.store.sync(&object_fh(ds, fh)?).map_err(|e| io_ctl(&e))
    })())
}

fn obj_write(ds: &Ds, a: &ctl_write_args) -> ctl_status {
    flatten((|| {
        // The record limit (ds.max_record_bytes) bounds the data.
        let fh = object_fh(ds, &a.cwa_fh)?;
        let end = a.cwa_offset.checked_add(a.cwa_data.len() as u64).ok_or(ctl_status::CTL_INVAL)?;
        if end > i64::MAX as u64 {
            return Err(ctl_status::CTL_INVAL);
        }
        // Straight from the received record: no userspace copy.
        ds.store.write_at(&fh, a.cwa_offset, &a.cwa_data, a.cwa_stable).map_err(|e| io_ctl(&e))?;
        bump(&ds.stats.control_bytes_written, a.cwa_data.len() as u64);
        Ok(())
    })())
}

fn obj_read(ds: &Ds, a: &ctl_read_args) -> ctl_read_res<'static> {
    let r = (|| {
        let fh = object_fh(ds, &a.cra_fh)?;
        // The MDS proxies whole stripe pieces and treats a short read as the
        // object's end, so honour the count up to a generous bound.
        let n = (a.cra_count as u64).min(CTL_MAX_READ) as usize;
        let (data, eof) = ds.store.read_at(&fh, a.cra_offset, n).map_err(|e| io_ctl(&e))?;
        if data.is_empty() {
            return Ok((data, eof));
        }
        // Encoding the reply copies the data once more.
        bump(&ds.stats.payload_copies, 1);
        bump(&ds.stats.control_bytes_read, data.len() as u64);
        Ok((data, eof))
    })();
    match r {
        Ok((data, eof)) => ctl_read_res { crs_status: ctl_status::CTL_OK, crs_eof: eof, crs_data: Opaque::owned(data) },
        Err(s) => ctl_read_res { crs_status: s, crs_eof: false, crs_data: Opaque::owned(vec![]) },
    }
}

/// CTL_PROC_OBJ_VERSION_GET (`set` None) and _SET: the object's version
/// (after the change) and size. A version set is durable when answered,
/// with every write completed before it.
fn obj_version(ds: &Ds, fh: &[u8], set: Option<u64>) -> ctl_version_res {
    let r = (|| {
        let fh = object_fh(ds, fh)?;
        if let Some(v) = set {
            ds.store.set_version(&fh, v).map_err(|e| io_ctl(&e))?;
        }
        let version = ds.store.version(&fh).map_err(|e| io_ctl(&e))?;
        Ok((version, ds.store.stat(&fh).map_err(|e| io_ctl(&e))?.size))
    })();
    match r {
        Ok((v, size)) => ctl_version_res { cvr_status: ctl_status::CTL_OK, cvr_version: v, cvr_size: size },
        Err(s) => ctl_version_res { cvr_status: s, cvr_version: 0, cvr_size: 0 },
    }
}

/// CTL_PROC_OBJ_READ_SPARSE: the data segments of `[offset, offset +
/// count)` (count bounded like OBJ_READ), holes left out, with the
/// object's size and version (read first: a version change during the
/// read shows in the next reply). At most CTL_MAX_SEGS segments: a reply
/// with more ranges covers less (`csp_end`).
fn obj_read_sparse(ds: &Ds, a: &ctl_read_args) -> ctl_read_sparse_res<'static> {
    let r = (|| {
        let fh = object_fh(ds, &a.cra_fh)?;
        let version = ds.store.version(&fh).map_err(|e| io_ctl(&e))?;
        let size = ds.store.stat(&fh).map_err(|e| io_ctl(&e))?.size;
        let n = (a.cra_count as u64).min(CTL_MAX_READ);
        let mut end = a.cra_offset.saturating_add(n).min(size).max(a.cra_offset);
        let ranges = ds.store.data_ranges(&fh, a.cra_offset, end - a.cra_offset).map_err(|e| io_ctl(&e))?;
        if let Some(first_left_out) = ranges.get(CTL_MAX_SEGS as usize) {
            end = first_left_out.0;
        }
        let mut segs = Vec::with_capacity(ranges.len().min(CTL_MAX_SEGS as usize));
        for (from, to) in ranges.into_iter().take(CTL_MAX_SEGS as usize) {
            let (data, _) = ds.store.read_at(&fh, from, (to - from) as usize).map_err(|e| io_ctl(&e))?;
            bump(&ds.stats.control_bytes_read, data.len() as u64);
            // Encoding the reply copies the data once more.
            bump(&ds.stats.payload_copies, 1);
            segs.push(ctl_data_seg { cds_offset: from, cds_data: Opaque::owned(data) });
        }
        Ok((version, size, end, segs))
    })();
    match r {
        Ok((version, size, end, segs)) => {
            ctl_read_sparse_res { csp_status: ctl_status::CTL_OK, csp_size: size, csp_version: version, csp_end: end, csp_segs: segs }
        }
        Err(s) => ctl_read_sparse_res { csp_status: s, csp_size: 0, csp_version: 0, csp_end: a.cra_offset, csp_segs: vec![] },
    }
}

fn obj_stat(ds: &Ds, fh: &[u8]) -> ctl_stat_res {
    let r = (|| {
        ds.store.stat(&object_fh(ds, fh)?).map_err(|e| io_ctl(&e))
    })();
    match r {
        Ok(m) => ctl_stat_res {
            csr_status: ctl_status::CTL_OK,
            csr_size: m.size,
            csr_space_used: m.space_used,
            csr_mtime: nfstime4 { seconds: m.mtime.0, nseconds: m.mtime.1 },
        },
        Err(s) => ctl_stat_res { csr_status: s, csr_size: 0, csr_space_used: 0, csr_mtime: nfstime4 { seconds: 0, nseconds: 0 } },
    }
}

/// How long a fence waits for the fenced node's running calls (a 16 MiB
/// OBJ_WRITE or READ on a slow disk, a stateid batch past the bus timeout).
const FENCE_DRAIN: Duration = Duration::from_secs(10);

/// CTL_PROC_FENCE: see [`super::epochs`]. The fenced node's stateids stay
/// allowed (see `Registration::forgets_on_restart`).
async fn fence(ds: &Ds, a: &ctl_fence_args, v: &Verified) -> ctl_status {
    match ds.epochs.fence(v.epoch, a.cfa_node_id, a.cfa_epoch, FENCE_DRAIN).await {
        Ok(new) => {
            bump(&ds.stats.control_fences, 1);
            if new {
                log::warn!(
                    "MDS node {} fenced at epoch {:#x} by the node speaking for epoch {:#x}: its calls are refused from now on",
                    a.cfa_node_id,
                    a.cfa_epoch,
                    v.epoch
                );
            }
            ctl_status::CTL_OK
        }
        Err(FenceError::Invalid) => {
            log::warn!("refusing CTL_FENCE of node {} at epoch {:#x} from epoch {:#x}: not another cluster node's epoch", a.cfa_node_id, a.cfa_epoch, v.epoch);
            ctl_status::CTL_INVAL
        }
        Err(FenceError::NotDrained) => {
            log::warn!("CTL_FENCE of node {}: its calls still run after {FENCE_DRAIN:?}; in effect, not yet acknowledged", a.cfa_node_id);
            ctl_status::CTL_IO
        }
    }
}

fn stateid_allow(ds: &Ds, a: &ctl_stateid_args) -> ctl_status {
    flatten(allow_update(ds, a).and_then(|u| publish(ds, "STATEID_ALLOW", u)))
}

/// The bus update for a STATEID_ALLOW, or why it is refused.
fn allow_update(ds: &Ds, a: &ctl_stateid_args) -> Result<Update, ctl_status> {
    let fh = object_fh(ds, &a.csa_fh)?;
    let other = a.csa_stateid.other;
    if other == [0; 12] || other == [0xff; 12] {
        return Err(ctl_status::CTL_INVAL);
    }
    let known = OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WRITE;
    if a.csa_access & known == 0 || a.csa_access & !known != 0 {
        return Err(ctl_status::CTL_INVAL);
    }
    // gen is set to the update's sequence number when published.
    let allowed = crate::state::Allowed { fh, access: a.csa_access, mds_clientid: a.csa_clientid, gen: 0 };
    Ok(Update::Allow { other, allowed })
}

/// CTL_PROC_STATEID_BATCH: the valid changes go to the reactors as one
/// batch (one wait for all); one status per change, in order.
fn stateid_batch(ds: &Ds, a: &ctl_batch_args) -> ctl_batch_res {
    let (status, updates, index) = batch_updates(ds, a);
    let results = ds.bus.publish_batch(updates);
    batch_res(ds, status, index, results)
}

/// [`stateid_batch`] without blocking the control runtime's thread; a batch
/// that finds no room in some reactor's queue waits on the blocking pool.
async fn stateid_batch_async(ds: &Arc<Ds>, a: &ctl_batch_args<'_>) -> ctl_batch_res {
    let (status, updates, index) = batch_updates(ds, a);
    let n = updates.len();
    let results = match ds.bus.publish_batch_async(updates).await {
        Ok(r) => r,
        Err(updates) => {
            let d = ds.clone();
            tokio::task::spawn_blocking(move || d.bus.publish_batch(updates))
                .await
                .unwrap_or_else(|_| vec![Err(PublishError::NotApplied); n])
        }
    };
    batch_res(ds, status, index, results)
}

/// The bus updates of a STATEID_BATCH's valid changes, with their indexes,
/// and a status per change (the invalid ones already set).
fn batch_updates(ds: &Ds, a: &ctl_batch_args) -> (Vec<ctl_status>, Vec<Update>, Vec<usize>) {
    let mut status = vec![ctl_status::CTL_OK; a.cba_changes.len()];
    let mut updates = Vec::with_capacity(a.cba_changes.len());
    let mut index = Vec::with_capacity(a.cba_changes.len());
    for (i, c) in a.cba_changes.iter().enumerate() {
        let u = match c {
            ctl_stateid_change::CTL_CHANGE_ALLOW(a) => allow_update(ds, a),
            ctl_stateid_change::CTL_CHANGE_REVOKE(r) => Ok(Update::Revoke { other: r.cva_stateid.other }),
        };
        match u {
            Ok(u) => {
                updates.push(u);
                index.push(i);
            }
            Err(s) => status[i] = s,
        }
    }
    bump(&ds.stats.control_updates, updates.len() as u64);
    (status, updates, index)
}

/// The STATEID_BATCH reply: `results` of the published updates at `index`.
fn batch_res(ds: &Ds, mut status: Vec<ctl_status>, index: Vec<usize>, results: Vec<Result<u64, PublishError>>) -> ctl_batch_res {
    for (i, r) in index.into_iter().zip(results) {
        if let Err(e) = r {
            bump(&ds.stats.control_update_failures, 1);
            log::warn!("STATEID_BATCH change {i} failed: {e}");
            status[i] = publish_status(e);
        }
    }
    ctl_batch_res { cbr_status: status }
}

//! The MDS link: the DS's end of the MDS <-> DS control protocol
//! (protocol/xdr/control.x). Named so because "control" already names the
//! MDS crate (`controlplane`) and the protocol itself; the DS-internal
//! queues this module publishes on are the update bus ([`crate::bus`]).
//!
//!
//! - Server: PNFSCTL_DS_PROGRAM version PNFSCTL_VERSION on `ds.control_bind`,
//!   ONC RPC over TCP with record marking, answered like the MDS answers
//!   NFS (accepted replies, GARBAGE_ARGS for undecodable arguments). It runs
//!   on its own thread with its own current-thread runtime; each call runs
//!   on that runtime's blocking pool (plain pread/pwrite/fdatasync on the
//!   buffered descriptor, opened per call), so proxy I/O never touches a
//!   reactor. The same runtime runs the lease reaper for idle DS clients.
//! - Calls that change what reactors check on every request (OBJ_CREATE,
//!   OBJ_REMOVE, STATEID_ALLOW, STATEID_REVOKE) are published on the update
//!   bus ([`crate::bus`]) and answered only once every reactor has applied
//!   them; one that cannot be (a reactor stalled past the bus timeout) is
//!   answered CTL_IO. OBJ_REMOVE unlinks the file before publishing, so no
//!   reactor can reopen the removed object afterwards.
//! - Client: a thread that registers with the MDS control listener
//!   (PNFSCTL_MDS_PROGRAM, CTL_PROC_REGISTER) and then heartbeats; it
//!   registers again whenever a heartbeat answers CTL_UNKNOWN_DS or the
//!   connection breaks, retries forever with backoff while the MDS is down,
//!   and logs at info once per change of state. When the MDS epoch changes
//!   (MDS restarted) the stateids allowed before the REGISTER that revealed
//!   it are forgotten (the MDS re-pushes the valid ones on REGISTER), by a
//!   bus update too.
//!
//! Every call, both ways, carries the cluster key's tag and every reply a
//! tag bound to its call (pnfs_protocol::control_auth): a call without one,
//! a replayed one, or one from an MDS epoch older than the newest this DS
//! has seen is answered AUTH_ERROR and its connection closed.

use crate::bus::{PublishError, Update};
use crate::config::universal_address;
use crate::ds::Ds;
use crate::fh::DsFh;
use crate::stats::bump;
use crate::Stop;
use pnfs_protocol::control_auth::{now_ms, CallSigner, ControlKeys, ReplyError, Verified};
use pnfs_protocol::record::RecordReader;
use pnfs_protocol::rpc::{self, AcceptStat, AuthStat, Checked};
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::encode_to_vec;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use pnfs_transport::tcp::{self, TcpLimits};
use pnfs_transport::control::{self, AuthenticatedCalls};
use pnfs_transport::{CallSource, Connection, Ended, ReplySink};
use tokio::sync::Semaphore;

/// Control connections served at once (the MDS needs a few).
const MAX_CONTROL_CONNECTIONS: usize = 64;
/// A control connection must send an authentic call this soon after it
/// opens, and is closed after this long without one.
const FIRST_CALL_DEADLINE: Duration = Duration::from_secs(10);
const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// A control record begun must be complete within this (a 16 MiB
/// OBJ_WRITE at well under LAN speed).
const CONTROL_RECORD_DEADLINE: Duration = Duration::from_secs(60);
/// Calls one control connection may have executing at once.
const MAX_INFLIGHT_PER_CONNECTION: usize = 32;
/// Largest OBJ_READ answered in full (the MDS's largest max_io_bytes).
const CTL_MAX_READ: u64 = 16 << 20;
/// Threads running control calls.
const CONTROL_BLOCKING_THREADS: usize = 8;

// ---------------------------------------------------------------------------
// Server

pub fn start_server(ds: Arc<Ds>, listener: std::net::TcpListener, stop: Arc<Stop>) -> Result<JoinHandle<()>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(CONTROL_BLOCKING_THREADS)
        .build()
        .map_err(|e| format!("control runtime: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("ds.control_bind: {e}"))?;
    std::thread::Builder::new()
        .name("ds-control".into())
        .spawn(move || {
            let mut stopped = stop.subscribe();
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("ds control listener: {e}");
                        return;
                    }
                };
                let reaper = ds.clone();
                tokio::spawn(async move {
                    let period = (reaper.lease() / 4).max(Duration::from_secs(1));
                    let mut tick = tokio::time::interval(period);
                    loop {
                        tick.tick().await;
                        reaper.state.expire(reaper.lease());
                    }
                });
                let conns = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
                loop {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => break,
                        r = listener.accept() => match r {
                            Ok((sock, peer)) => {
                                let Ok(permit) = conns.clone().try_acquire_owned() else {
                                    log::warn!("refusing control connection from {peer}: too many");
                                    continue;
                                };
                                let c = tcp::accept(sock, &control_limits(&ds));
                                let ds = ds.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = control_connection(ds, c, peer).await {
                                        log::debug!("control connection {peer}: {e}");
                                    }
                                    drop(permit);
                                });
                            }
                            Err(e) => {
                                log::warn!("control accept: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        },
                    }
                }
            });
        })
        .map_err(|e| format!("starting the control thread: {e}"))
}

/// The shared transport's limits for a control connection: an
/// unauthenticated peer gets [`FIRST_CALL_DEADLINE`] (raised to
/// [`CONTROL_IDLE_TIMEOUT`] by its first authentic call).
fn control_limits(ds: &Ds) -> TcpLimits {
    TcpLimits {
        max_record: ds.cfg.max_record_bytes as usize,
        idle: FIRST_CALL_DEADLINE,
        record_timeout: CONTROL_RECORD_DEADLINE,
        reply_budget_bytes: 4 * CTL_MAX_READ as usize,
        reply_budget_count: MAX_INFLIGHT_PER_CONNECTION,
        write_stall: CONTROL_IDLE_TIMEOUT,
    }
}

/// One MDS control connection, on any transport: calls are checked in
/// arrival order, then run (`run_call`: STATEID_BATCH on this runtime, the
/// rest on the blocking pool); replies go through the connection's writer.
async fn control_connection<C: CallSource, S: ReplySink>(ds: Arc<Ds>, c: Connection<C, S>, peer: SocketAddr) -> io::Result<()> {
    let Connection { calls, replies, writer } = c;
    let mut calls = AuthenticatedCalls::new(calls, ds.control_keys.clone(), CONTROL_IDLE_TIMEOUT);
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_PER_CONNECTION));
    let ended = loop {
        let (rec, verified) = match calls.next(&ds.control_recent, &replies).await {
            Ok(c) => c,
            Err(e) => break e,
        };
        let newest = ds.mds_epoch.load(Ordering::Acquire);
        if verified.epoch < newest {
            bump(&ds.stats.control_refused, 1);
            log::warn!("refusing a control call from {peer}: MDS epoch {} is older than {newest} (a fenced MDS)", verified.epoch);
            let _ = replies.send(rpc::auth_error_reply(verified.xid, AuthStat::RejectedCred));
            break Ended::Closed;
        }
        ds.mds_epoch.fetch_max(verified.epoch, Ordering::AcqRel);
        let Ok(permit) = inflight.clone().acquire_owned().await else { break Ended::WriterGone };
        let (ds, replies) = (ds.clone(), replies.clone());
        tokio::spawn(async move {
            if let Some(r) = run_call(ds, rec, verified).await {
                let _ = replies.send(r);
            }
            drop(permit);
        });
    };
    if let Some(why) = control::finish(calls, replies, writer, ended, peer, "ds.max_record_bytes").await? {
        bump(&ds.stats.control_refused, 1);
        // The caller pays: told why, and the connection is closed.
        log::warn!("refusing a control call from {peer}: {why}");
    }
    Ok(())
}

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
    ],
    flavors: &[pnfs_protocol::control_auth::AUTH_PNFS_CTL],
};

/// Runs one authenticated control call. STATEID_BATCH runs on the control
/// runtime itself: it only updates in-memory tables and awaits the
/// reactors' acknowledgements, so the blocking-pool hop (two thread
/// switches per call) is saved. Every other call may do file I/O and runs
/// on the blocking pool.
async fn run_call(ds: Arc<Ds>, rec: Vec<u8>, verified: Verified) -> Option<Vec<u8>> {
    if let Checked::Call { header, args } = CONTROL_CALLS.check(&rec) {
        if header.proc_ == CTL_PROC_STATEID_BATCH {
            bump(&ds.stats.control_calls, 1);
            let mut e = Encoder::new();
            verified.begin_reply(&mut e);
            let mut d = Decoder::new(args);
            let decoded = ctl_batch_args::decode(&mut d).ok().filter(|_| d.remaining() == 0);
            let Some(a) = decoded else { return Some(rpc::accepted_reply(header.xid, AcceptStat::GarbageArgs)) };
            let res = stateid_batch_async(&ds, &a).await;
            if let Err(err) = res.encode(&mut e) {
                log::error!("encoding a control reply: {err}");
                return Some(rpc::accepted_reply(header.xid, AcceptStat::GarbageArgs));
            }
            let mut reply = e.into_inner();
            verified.seal_reply(&ds.control_keys, &mut reply);
            return Some(reply);
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

/// One authenticated control RPC record in, at most one reply out.
pub fn handle_call(ds: &Ds, rec: &[u8], verified: &Verified) -> Option<Vec<u8>> {
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
        _ => return Some(rpc::accepted_reply(xid, AcceptStat::ProcUnavail)),
    };
    match r {
        Ok(()) => {
            let mut reply = e.into_inner();
            verified.seal_reply(&ds.control_keys, &mut reply);
            Some(reply)
        }
        Err(()) => Some(rpc::accepted_reply(xid, AcceptStat::GarbageArgs)),
    }
}

/// Decodes `A` (all of `args`, nothing left over), runs `f`, encodes its result.
fn call<'a, A: XdrDecode<'a>, R: XdrEncode>(args: &'a [u8], e: &mut Encoder, f: impl FnOnce(A) -> R) -> Result<(), ()> {
    let mut d = Decoder::new(args);
    let a = A::decode(&mut d).map_err(|_| ())?;
    if d.remaining() != 0 {
        return Err(());
    }
    f(a).encode(e).map_err(|err| log::error!("encoding a control reply: {err}"))
}

/// The object a control call names: its bare identity, or the sealed form
/// clients hold (checked like theirs).
fn object_fh(ds: &Ds, b: &[u8]) -> Result<DsFh, ctl_status> {
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

fn obj_create(ds: &Ds, fh: &[u8]) -> ctl_status {
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

// ---------------------------------------------------------------------------
// Registration client

/// How long one control call to the MDS may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A synchronous ONC RPC client for the MDS control program.
/// Every call is signed (cluster key) and every reply's tag checked.
pub struct CtlClient {
    stream: TcpStream,
    records: RecordReader,
    xid: u32,
    signer: CallSigner,
}

impl CtlClient {
    /// `epoch`: the MDS epoch calls speak for (0 from a data server; tests
    /// playing the MDS name one).
    pub fn connect(addr: &str, timeout: Duration, keys: ControlKeys, epoch: u64) -> io::Result<CtlClient> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to nothing"));
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
                    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
                    let xid = u32::from_be_bytes(crate::ds::random_bytes::<4>());
                    let signer = CallSigner::new(keys, epoch);
                    return Ok(CtlClient { stream, records: RecordReader::new(1 << 20), xid, signer });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One call to (`prog`, PNFSCTL_VERSION, `proc_`); returns the result bytes.
    pub fn call(&mut self, prog: u32, proc_: u32, args: &impl XdrEncode) -> io::Result<Vec<u8>> {
        self.xid = self.xid.wrapping_add(1);
        let xid = self.xid;
        let args = encode_to_vec(args).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let mut e = Encoder::new();
        e.put_u32(0);
        let sent = self.signer.encode_call(&mut e, xid, prog, PNFSCTL_VERSION, proc_, &args, now_ms());
        let len = e.len() - 4;
        e.patch_u32(0, pnfs_protocol::record::LAST_FRAGMENT | len as u32);
        self.stream.write_all(&e.buf)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut off = 0;
            while off < n {
                let (used, rec) =
                    self.records.feed(&buf[off..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                off += used;
                let Some(rec) = rec else { continue };
                match self.signer.open_reply(sent, &rec) {
                    Err(ReplyError::OtherXid) => continue,
                    Ok(body) => return Ok(body.to_vec()),
                    Err(e @ ReplyError::Refused(_)) => return Err(io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())),
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                }
            }
        }
    }
}

fn decode_all<'a, T: XdrDecode<'a>>(b: &'a [u8]) -> io::Result<T> {
    let mut d = Decoder::new(b);
    T::decode(&mut d).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The address the MDS should use for our control program: control_bind,
/// with a wildcard IP replaced by the advertised data address's IP.
pub fn control_addr_string(bound: SocketAddr, advertised: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        SocketAddr::new(advertised.ip(), bound.port()).to_string()
    } else {
        bound.to_string()
    }
}

pub struct Registration {
    pub ds: Arc<Ds>,
    /// Data address clients use (advertise, else the bound NFS address).
    pub advertised: SocketAddr,
    /// Bound control address.
    pub control: SocketAddr,
}

impl Registration {
    pub fn register_args(&self) -> Result<ctl_register_args<'static>, String> {
        let (cap, free) = self.ds.capacity();
        Ok(ctl_register_args {
            cra_ds_id: Opaque::owned(self.ds.cfg.id.clone().into_bytes()),
            cra_client_addrs: vec![{
                let (netid, addr) = universal_address(&self.advertised)?;
                netaddr4 { na_r_netid: Opaque::owned(netid.as_bytes().to_vec()), na_r_addr: Opaque::owned(addr.into_bytes()) }
            }],
            cra_control_addr: Opaque::owned(control_addr_string(self.control, self.advertised).into_bytes()),
            cra_capacity_bytes: cap,
            cra_free_bytes: free,
        })
    }

    fn heartbeat_args(&self) -> ctl_heartbeat_args<'static> {
        let s = self.ds.stats.snapshot();
        ctl_heartbeat_args {
            cha_ds_id: Opaque::owned(self.ds.cfg.id.clone().into_bytes()),
            cha_free_bytes: self.ds.capacity().1,
            cha_bytes_read: s.bytes_read + s.control_bytes_read,
            cha_bytes_written: s.bytes_written + s.control_bytes_written,
        }
    }

    /// Has every reactor forget the stateids allowed before sequence number
    /// `seq`. An update that found no room is tried again (it must not be
    /// lost); one not yet applied everywhere will be, in order. False when
    /// stopped meanwhile.
    fn forget_allowed_before(&self, seq: u64, stop: &Stop) -> bool {
        loop {
            match self.ds.bus.publish(Update::ForgetBefore { seq }) {
                Ok(_) => return true,
                Err(PublishError::NotApplied) => {
                    log::warn!("forgetting the old MDS's stateids: {}; it stays queued", PublishError::NotApplied);
                    return true;
                }
                Err(e) => {
                    log::warn!("forgetting the old MDS's stateids: {e}; trying again");
                    if stop.sleep(BACKOFF_MIN) {
                        return false;
                    }
                }
            }
        }
    }

    pub fn start(self, stop: Arc<Stop>) -> Result<JoinHandle<()>, String> {
        let args = self.register_args()?;
        let _ = encode_to_vec(&args).map_err(|e| format!("ds: registration arguments do not encode: {e}"))?;
        std::thread::Builder::new()
            .name("ds-register".into())
            .spawn(move || self.run(&stop))
            .map_err(|e| format!("starting the registration thread: {e}"))
    }

    fn run(&self, stop: &Stop) {
        let mds = self.ds.cfg.mds_control.clone();
        let mut epoch: Option<u64> = None;
        let mut backoff = BACKOFF_MIN;
        let mut last_state = String::new();
        let mut note = |state: String| {
            if state != last_state {
                log::info!("{state}");
                last_state = state;
            }
        };
        'outer: while !stop.is_stopped() {
            let mut client = match CtlClient::connect(&mds, CALL_TIMEOUT, self.ds.control_keys.clone(), 0) {
                Ok(c) => c,
                Err(e) => {
                    note(format!("MDS control {mds} unreachable ({e}); retrying with backoff"));
                    if stop.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            // Register, then heartbeat until something goes wrong.
            loop {
                let args = match self.register_args() {
                    Ok(a) => a,
                    Err(e) => {
                        log::error!("ds registration: {e}");
                        return;
                    }
                };
                // The MDS re-pushes our stateids when it handles REGISTER;
                // only what was allowed before sending it may be stale.
                let before_register = self.ds.bus.next_seq();
                let res = client
                    .call(PNFSCTL_MDS_PROGRAM, CTL_PROC_REGISTER, &args)
                    .and_then(|b| decode_all::<ctl_register_res>(&b));
                let res = match res {
                    Ok(r) => r,
                    Err(e) => {
                        note(format!("registering with MDS {mds} failed ({e}); retrying with backoff"));
                        if stop.sleep(backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue 'outer;
                    }
                };
                if res.crr_status != ctl_status::CTL_OK {
                    note(format!("MDS {mds} refused registration: {:?}; retrying with backoff", res.crr_status));
                    if stop.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                if epoch.is_some_and(|e| e != res.crr_mds_epoch) {
                    log::info!("MDS epoch changed ({:?} -> {}): forgetting its old stateids", epoch, res.crr_mds_epoch);
                    if !self.forget_allowed_before(before_register, stop) {
                        return;
                    }
                }
                epoch = Some(res.crr_mds_epoch);
                // The MDS we registered with fences older ones.
                self.ds.mds_epoch.fetch_max(res.crr_mds_epoch, Ordering::AcqRel);
                backoff = BACKOFF_MIN;
                note(format!("registered with MDS {mds} as {:?} (MDS epoch {})", self.ds.cfg.id, res.crr_mds_epoch));
                let period = Duration::from_millis(if res.crr_heartbeat_ms > 0 {
                    (res.crr_heartbeat_ms as u64).clamp(100, 600_000)
                } else {
                    self.ds.cfg.heartbeat_ms
                });
                loop {
                    if stop.sleep(period) {
                        return;
                    }
                    let r = client
                        .call(PNFSCTL_MDS_PROGRAM, CTL_PROC_HEARTBEAT, &self.heartbeat_args())
                        .and_then(|b| decode_all::<ctl_heartbeat_res>(&b));
                    match r {
                        Ok(h) if h.chr_status == ctl_status::CTL_OK => {}
                        Ok(h) if h.chr_status == ctl_status::CTL_UNKNOWN_DS => {
                            note(format!("MDS {mds} no longer knows this DS; registering again"));
                            break;
                        }
                        Ok(h) => log::warn!("heartbeat answered {:?}", h.chr_status),
                        Err(e) => {
                            note(format!("lost the MDS control connection to {mds} ({e}); reconnecting"));
                            continue 'outer;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_addr_replaces_wildcard() {
        let adv: SocketAddr = "10.0.0.7:2049".parse().unwrap();
        assert_eq!(control_addr_string("0.0.0.0:20490".parse().unwrap(), adv), "10.0.0.7:20490");
        assert_eq!(control_addr_string("10.0.0.8:20490".parse().unwrap(), adv), "10.0.0.8:20490");
    }
}

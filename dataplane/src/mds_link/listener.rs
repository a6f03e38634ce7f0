//! The DS's control listener: accepts MDS control connections on
//! `ds.control_bind` over the shared transport crate, authenticates every
//! call and refuses calls from an MDS epoch its node superseded or a fence
//! refused ([`super::epochs`]), closing such connections, open ones
//! included, once a fence refuses their epoch; the calls themselves run in
//! [`super::calls`].

use super::calls::{run_call, CTL_MAX_READ};
use crate::ds::Ds;
use crate::stats::bump;
use crate::Stop;
use pnfs_protocol::rpc::{self, AuthStat};
use pnfs_protocol::wire::{CTL_PROC_FENCE, CTL_PROC_OBJ_READ_SPARSE, CTL_PROC_OBJ_VERSION_GET};
use std::io;
use std::net::SocketAddr;
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
/// Threads running control calls.
const CONTROL_BLOCKING_THREADS: usize = 8;
/// What another data server (a call signed with the DS-to-DS keys) may
/// call: the reads an object copy needs, nothing that changes anything.
const PEER_PROCS: [u32; 3] = [rpc::PROC_NULL, CTL_PROC_OBJ_VERSION_GET, CTL_PROC_OBJ_READ_SPARSE];

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
    let mut calls = AuthenticatedCalls::new(calls, ds.control_keys.clone(), CONTROL_IDLE_TIMEOUT).accept_peers(ds.peer_keys.clone());
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_PER_CONNECTION));
    // The epoch this connection's calls speak for (one signer per
    // connection): it is closed once a fence refuses that epoch.
    let mut conn_epoch: Option<u64> = None;
    let mut fences = ds.epochs.fence_changes();
    let ended = loop {
        let next = tokio::select! {
            c = calls.next(&ds.control_recent, &replies) => c,
            Ok(()) = fences.changed(), if conn_epoch.is_some() => {
                match conn_epoch.map(|e| ds.epochs.check(e)) {
                    Some(Err(why)) => {
                        log::info!("closing the control connection from {peer}: its MDS epoch is {why}");
                        break Ended::Closed;
                    }
                    _ => continue,
                }
            }
        };
        let (rec, verified) = match next {
            Ok(c) => c,
            Err(e) => break e,
        };
        if verified.by_peer {
            // Another data server copying an object: no MDS epoch to check
            // (it speaks for none), and only the reads a copy needs.
            if !PEER_PROCS.contains(&verified.proc_) {
                bump(&ds.stats.control_refused, 1);
                log::warn!("refusing control procedure {} from data server {peer}: a data server may only read objects", verified.proc_);
                let _ = replies.send(rpc::auth_error_reply(verified.xid, AuthStat::TooWeak));
                break Ended::Closed;
            }
            let Ok(permit) = inflight.clone().acquire_owned().await else { break Ended::WriterGone };
            let (ds, replies) = (ds.clone(), replies.clone());
            tokio::spawn(async move {
                if let Some(r) = run_call(ds, rec, verified).await {
                    let _ = replies.send(r);
                }
                drop(permit);
            });
            continue;
        }
        let admitted = match ds.epochs.admit(verified.epoch).await {
            Ok(a) => a,
            Err(why) => {
                bump(&ds.stats.control_refused, 1);
                log::warn!("refusing a control call from {peer}: MDS epoch {:#x} {why}", verified.epoch);
                let _ = replies.send(rpc::auth_error_reply(verified.xid, AuthStat::RejectedCred));
                break Ended::Closed;
            }
        };
        conn_epoch = Some(verified.epoch);
        // A fence waits for the fenced node's calls, never for its caller's
        // own: two nodes fencing each other must not wait on each other.
        let admitted = (verified.proc_ != CTL_PROC_FENCE).then_some(admitted);
        let Ok(permit) = inflight.clone().acquire_owned().await else { break Ended::WriterGone };
        let (ds, replies) = (ds.clone(), replies.clone());
        tokio::spawn(async move {
            if let Some(r) = run_call(ds, rec, verified).await {
                let _ = replies.send(r);
            }
            drop((permit, admitted));
        });
    };
    if let Some(why) = control::finish(calls, replies, writer, ended, peer, "ds.max_record_bytes").await? {
        bump(&ds.stats.control_refused, 1);
        // The caller pays: told why, and the connection is closed.
        log::warn!("refusing a control call from {peer}: {why}");
    }
    Ok(())
}

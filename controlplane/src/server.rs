//! The NFS listener: TCP connections, RPC record marking, ONC RPC call
//! checks, and COMPOUND execution.
//!
//! Request path (issue 8: no thread hand-off per request). A connection is
//! one tokio task that reads records, runs them and writes the replies:
//!
//! * COMPOUNDs of operations that never wait for another client or for file
//!   data I/O (`compound::runs_inline`: the metadata operations, OPEN,
//!   LAYOUTGET, CLOSE, LOCK, SETATTR, CREATE, REMOVE, RENAME among them) run
//!   on the connection's task. Their metadata commits are made with
//!   durability deferred (`pnfs_kv::defer_durability`): visible at once, not
//!   yet fsynced. A reply that depends on nothing undurable (the store's
//!   visible commits are all durable) is written to the socket by the
//!   connection's task itself, all replies of one read in one write. Any
//!   other reply is held by the [`GroupCommitter`]: one thread syncs the
//!   store once for every commit made visible meanwhile (all connections
//!   together) and then queues the replies it made durable; still durable
//!   before the reply, with one fsync and one hand-off per batch.
//! * Other COMPOUNDs (READ, WRITE, COMMIT, and anything long or odd) run on
//!   the blocking pool as before; their commits are durable when they
//!   return (concurrent ones share fsyncs through the store's group commit).
//!   The shared semaphore bounds the blocking threads all connections
//!   together may hold (mds.max_requests_in_flight); the per-connection
//!   semaphore bounds what one connection has executing or held for
//!   durability (mds.max_requests_per_connection), so one connection queues
//!   on its own permits.
//! * Replies from the pool, held replies and callbacks go through the
//!   connection's [`ReplyQueue`] to its writer task; the connection's task
//!   writes its own with [`ReplySink::write_now`]; records never
//!   interleave. The record loop, the reply writer, the reply budget
//!   (mds.reply_budget_bytes and [`REPLY_BUDGET_COUNT`]: a peer that
//!   leaves replies unread stops being read) and the timeouts are the
//!   shared transport's (`pnfs_transport`); the connection function below
//!   is written against its traits, not TCP.
//! * A panic while running a request answers SYSTEM_ERR (catch_unwind).

use crate::compound::{CompoundOutcome, ConnInfo, Dispatcher};
use crate::group_commit::GroupCommitter;
use crate::mds::Mds;
use crate::metrics::metrics;
use pnfs_protocol::conn_limits::{ConnLimits, LogLimiter};
use pnfs_protocol::rpc::{self, AcceptStat, Checked, Message};
use pnfs_transport::tcp::{self, TcpLimits};
use pnfs_transport::{CallSource, Connection, Ended, ReplyBatch, ReplySink, REPLY_BUDGET_COUNT};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A connection's outgoing messages (replies, and callbacks when it is a
/// back channel); the callback and group-commit code queue on it.
pub use pnfs_transport::{Closed, ReplyQueue, ReplyReceiver};

/// Requests a connection's task runs before it sends their pushes and
/// lets their replies go (the rest of a read's records wait their turn).
const MAX_RAN_UNRELEASED: usize = 64;

/// Requests run on a connection's task whose replies wait for their
/// deferred stateid pushes.
#[derive(Default)]
struct Ran {
    replies: Vec<(Vec<u8>, tokio::sync::OwnedSemaphorePermit)>,
    /// Changes queued by `push::defer_pushes`, not yet flushed.
    pushes: usize,
}

/// Replies a connection's task wrote itself are sent once they reach this
/// many bytes, or before the task waits for anything.
const DIRECT_FLUSH_BYTES: usize = 64 * 1024;

pub struct Server {
    mds: Arc<Mds>,
    dispatcher: Arc<Dispatcher>,
    next_conn: AtomicU64,
    limits: Arc<ConnLimits>,
    refusal_log: LogLimiter,
    /// Closures for timeouts (a slowloris flood must not fill the log).
    closure_log: LogLimiter,
    /// COMPOUNDs executing on blocking threads, all connections together.
    blocking: Arc<Semaphore>,
    /// Syncs the metadata store for replies of COMPOUNDs run inline.
    committer: Arc<GroupCommitter>,
}

impl Server {
    pub fn new(mds: Arc<Mds>) -> Arc<Server> {
        let limits = ConnLimits::new(mds.cfg.max_connections_per_address, mds.cfg.max_connections);
        let blocking = Arc::new(Semaphore::new(mds.cfg.max_requests_in_flight as usize));
        // Without its thread nothing held would ever be sent: not a server.
        let committer = GroupCommitter::start(mds.ns.store().clone()).expect("starting the group-commit thread");
        Arc::new(Server {
            committer,
            mds,
            dispatcher: Arc::new(Dispatcher::new()),
            next_conn: AtomicU64::new(1),
            limits,
            refusal_log: LogLimiter::new(Duration::from_secs(10)),
            closure_log: LogLimiter::new(Duration::from_secs(10)),
            blocking,
        })
    }

    /// Accepts connections until the listener fails. With pNFS on, the
    /// control listener for data servers (mds.control_bind) runs too.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let control = match self.mds.cfg.control_bind {
            Some(addr) if self.mds.pnfs.is_some() => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("mds.control_bind {addr}: {e}"))
            })?),
            _ => None,
        };
        self.serve_with_control(listener, control).await
    }

    /// Like `serve`, with an already bound control listener (tests bind port 0).
    pub async fn serve_with_control(
        self: Arc<Self>,
        listener: TcpListener,
        control: Option<TcpListener>,
    ) -> std::io::Result<()> {
        if let (Some(l), Some(p)) = (control, self.mds.pnfs.clone()) {
            log::info!(
                "pNFS on: data servers register at {} (stripe unit {}, stripe count {})",
                l.local_addr()?,
                p.cfg.stripe_unit,
                if p.cfg.stripe_count == 0 { "all".to_string() } else { p.cfg.stripe_count.to_string() }
            );
            // pnfsctl's admin program is served on the same listener.
            let admin = crate::admin::AdminService::new(self.mds.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::pnfs::registry::serve_control_with_admin(p, l, admin).await {
                    log::error!("control listener failed: {e}");
                }
            });
        }
        let reaper = self.clone();
        // The reaper's blocking thread is always free: client COMPOUNDs hold
        // at most mds.max_requests_in_flight of the pool.
        tokio::spawn(async move {
            let period = reaper.mds.lease() / 4;
            let mut tick = tokio::time::interval(period.max(std::time::Duration::from_secs(1)));
            loop {
                tick.tick().await;
                let m = reaper.mds.clone();
                let _ = tokio::task::spawn_blocking(move || m.expire_leases()).await;
            }
        });
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(a) => a,
                // Out of descriptors or the like: a flood must not stop the
                // listener; wait a little for connections to close.
                Err(e) if is_transient_accept_error(&e) => {
                    log::warn!("accept: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let slot = match self.limits.admit(peer.ip()) {
                Ok(s) => s,
                Err(why) => {
                    metrics().connection_refused(why.as_str());
                    if let Some(held_back) = self.refusal_log.allow(Instant::now()) {
                        let (from_addr, total) = self.limits.held(peer.ip());
                        log::warn!(
                            "refusing connection from {peer}: {} reached ({from_addr} from its address, {total} in all; \
                             {held_back} more refused since the last such line); raise it if this is a legitimate client",
                            match why {
                                pnfs_protocol::conn_limits::Refusal::PerAddress => "mds.max_connections_per_address",
                                pnfs_protocol::conn_limits::Refusal::Total => "mds.max_connections",
                            }
                        );
                    }
                    drop(sock);
                    continue;
                }
            };
            let me = self.clone();
            let c = tcp::accept(sock, &self.tcp_limits());
            tokio::spawn(async move {
                if let Err(e) = me.connection(c, peer).await {
                    log::debug!("connection {peer}: {e}");
                }
                drop(slot);
            });
        }
    }

    /// The shared TCP transport's limits for one NFS connection.
    fn tcp_limits(&self) -> TcpLimits {
        let cfg = &self.mds.cfg;
        let idle = Duration::from_secs(cfg.idle_timeout_seconds as u64);
        TcpLimits {
            max_record: cfg.max_record_bytes as usize,
            idle,
            record_timeout: Duration::from_secs(cfg.record_timeout_seconds as u64),
            reply_budget_bytes: cfg.reply_budget_bytes as usize,
            reply_budget_count: REPLY_BUDGET_COUNT,
            write_stall: idle,
        }
    }

    /// One client connection, on any transport: reads calls, runs them
    /// (inline or on the blocking pool), lets their replies go.
    async fn connection<C: CallSource, S: ReplySink>(self: Arc<Self>, c: Connection<C, S>, peer: SocketAddr) -> std::io::Result<()> {
        let Connection { mut calls, replies, writer } = c;
        let cfg = &self.mds.cfg;
        let conn = Arc::new(ConnInfo { id: self.next_conn.fetch_add(1, Ordering::Relaxed), peer: peer.ip() });
        log::debug!("connection {} from {peer}", conn.id);
        let queue = replies.queue().clone();
        // Callbacks to this client go out on this connection when it is bound
        // to a session's back channel.
        self.mds.callbacks.register_conn(conn.id, queue.clone());
        let per_conn = Arc::new(Semaphore::new(cfg.max_requests_per_connection as usize));
        // Replies this task made itself, sent in one write before it waits.
        let mut direct = ReplyBatch::default();
        // Replies of requests run here whose pushes are not flushed yet.
        let mut ran = Ran::default();
        let ended = 'read: loop {
            self.release(&mut ran, &mut direct, &queue);
            if let Err(e) = replies.write_now(&mut direct).await {
                break e;
            }
            // The transport waits for reply room (the read budget) first.
            let recs = match calls.next_batch().await {
                Ok(r) => r,
                Err(e) => break e,
            };
            for rec in recs {
                // Checked per record too: one read can hold hundreds of
                // small requests, each of which may earn a large reply.
                // Released only before a wait, so the pushes of one read's
                // requests go in one STATEID_BATCH (not one per request).
                if queue.is_over_budget() {
                    self.release(&mut ran, &mut direct, &queue);
                }
                if !replies.wait_for_room().await {
                    break 'read Ended::WriterGone;
                }
                // Per connection first, so one connection queues on its own
                // permits, not on everyone's.
                let mine = match per_conn.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // Waiting on this connection's own requests: send
                        // what this task has written so far first.
                        self.release(&mut ran, &mut direct, &queue);
                        if let Err(e) = replies.write_now(&mut direct).await {
                            break 'read e;
                        }
                        let Ok(p) = per_conn.clone().acquire_owned().await else { break 'read Ended::WriterGone };
                        p
                    }
                };
                if runs_inline(&rec) {
                    let ((reply, _), pushes) = crate::pnfs::push::defer_pushes(|| {
                        pnfs_kv::defer_durability(|| {
                            std::panic::catch_unwind(AssertUnwindSafe(|| self.handle_record(&conn, &rec))).unwrap_or_else(|_| {
                                log::error!("internal error while handling a request from {}; answered SYSTEM_ERR", conn.peer);
                                rpc::system_err_reply(&rec)
                            })
                        })
                    });
                    ran.pushes += pushes;
                    if let Some(r) = reply {
                        ran.replies.push((r, mine));
                    }
                    if ran.replies.len() >= MAX_RAN_UNRELEASED || direct.bytes() >= DIRECT_FLUSH_BYTES {
                        self.release(&mut ran, &mut direct, &queue);
                        if let Err(e) = replies.write_now(&mut direct).await {
                            break 'read e;
                        }
                    }
                    continue;
                }
                self.release(&mut ran, &mut direct, &queue);
                if let Err(e) = replies.write_now(&mut direct).await {
                    break 'read e;
                }
                let Ok(shared) = self.blocking.clone().acquire_owned().await else { break 'read Ended::WriterGone };
                let me = self.clone();
                let conn = conn.clone();
                let queue = queue.clone();
                tokio::task::spawn_blocking(move || {
                    let reply = std::panic::catch_unwind(AssertUnwindSafe(|| me.handle_record(&conn, &rec)))
                        .unwrap_or_else(|_| {
                            log::error!("internal error while handling a request from {}; answered SYSTEM_ERR", conn.peer);
                            rpc::system_err_reply(&rec)
                        });
                    if let Some(r) = reply {
                        let _ = queue.send(r);
                    }
                    drop((mine, shared));
                });
            }
        };
        self.mds.callbacks.unregister_conn(conn.id);
        drop((calls, replies, queue));
        // Replies still executing hold queue clones; the writer ends when
        // they are done and sent, or when the peer stops reading.
        let wrote = writer.finish().await;
        // Why the writer stopped says more than the reader's WriterGone.
        let why = match (ended, wrote) {
            (Ended::WriterGone, Err(e)) => e,
            (e, _) => e,
        };
        self.ended(peer, why)
    }

    /// Counts and logs why a connection ended.
    fn ended(&self, peer: SocketAddr, why: Ended) -> std::io::Result<()> {
        let cfg = &self.mds.cfg;
        match why {
            Ended::Closed | Ended::Truncated | Ended::WriterGone | Ended::Refused(_) => Ok(()),
            Ended::Io(e) => Err(e),
            Ended::Idle(idle) => {
                // Routine (clients leave connections open): no log line.
                metrics().connection_closed("idle");
                log::debug!("closing connection from {peer}: no request for {idle:?} (mds.idle_timeout_seconds)");
                Ok(())
            }
            Ended::Incomplete(t) => {
                let why = format!("a record was not complete within {t:?} (mds.record_timeout_seconds)");
                self.closed(peer, "record_timeout", &why);
                Ok(())
            }
            Ended::TooLarge(e) => {
                metrics().connection_closed("record_too_large");
                log::warn!("closing connection from {peer}: {e} (mds.max_record_bytes = {})", cfg.max_record_bytes);
                Ok(())
            }
            Ended::RepliesUnread(idle) => {
                self.closed(peer, "replies_unread", &format!("it read none of its replies for {idle:?} (mds.idle_timeout_seconds)"));
                Ok(())
            }
        }
    }

    /// Lets the replies of requests run on the connection's task go: sends
    /// their deferred stateid pushes first (one call per data server for
    /// all of them), then adds each reply to `direct`, or has the
    /// committer hold it while a commit it may depend on is not durable.
    fn release(&self, ran: &mut Ran, direct: &mut ReplyBatch, queue: &ReplyQueue) {
        if ran.pushes > 0 {
            if let Some(p) = &self.mds.pnfs {
                p.flush_pushes();
            }
            ran.pushes = 0;
        }
        if ran.replies.is_empty() {
            return;
        }
        let pending = self.committer.pending();
        for (r, permit) in ran.replies.drain(..) {
            match pending {
                Some(seq) => self.committer.hold(seq, r, queue.clone(), permit),
                None => direct.push(r),
            }
        }
    }

    /// Counts a connection the server closed and logs it, at most one line
    /// per 10 s.
    fn closed(&self, peer: SocketAddr, reason: &str, why: &str) {
        metrics().connection_closed(reason);
        if let Some(held_back) = self.closure_log.allow(Instant::now()) {
            log::info!("closing connection from {peer}: {why} ({held_back} more closed for a timeout since the last such line)");
        }
    }

    /// One RPC record in, at most one RPC reply out.
    fn handle_record(&self, conn: &ConnInfo, rec: &[u8]) -> Option<Vec<u8>> {
        let (header, args) = match rpc::NFS4_CALLS.check(rec) {
            Checked::Call { header, args } => (header, args),
            Checked::Reply { xid, .. } => {
                // A reply to one of our callbacks.
                if !self.mds.callbacks.deliver_reply(xid, rec.to_vec()) {
                    log::debug!("RPC reply xid {xid:#x} on connection {} matches no callback", conn.id);
                }
                return None;
            }
            Checked::Refused(reply) => return Some(reply),
            Checked::Unreadable => return None,
        };
        let xid = header.xid;
        match header.proc_ {
            rpc::PROC_NULL => Some(rpc::accepted_reply(xid, AcceptStat::Success)),
            rpc::PROC_COMPOUND => {
                let mut e = pnfs_protocol::Encoder::new();
                match self.dispatcher.run(&self.mds, conn, header.cred, args) {
                    CompoundOutcome::Reply(body) => {
                        rpc::begin_accepted_reply(&mut e, xid, AcceptStat::Success);
                        e.buf.extend_from_slice(&body);
                    }
                    CompoundOutcome::Garbage => rpc::begin_accepted_reply(&mut e, xid, AcceptStat::GarbageArgs),
                }
                Some(e.into_inner())
            }
            _ => Some(rpc::accepted_reply(xid, AcceptStat::ProcUnavail)),
        }
    }
}

/// accept() failures that say "try again later" rather than "the listener
/// is broken" (descriptor or memory exhaustion, a peer that reset first).
fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory)
        || matches!(e.raw_os_error(), Some(23) | Some(24) | Some(105)) // ENFILE, EMFILE, ENOBUFS
}

/// A NULL call, or a COMPOUND of operations that never wait (see
/// `compound::runs_inline`): answered on the connection's task.
fn runs_inline(rec: &[u8]) -> bool {
    match rpc::parse_message(rec) {
        Ok(Message::Call { header, args }) => match header.proc_ {
            rpc::PROC_NULL => true,
            rpc::PROC_COMPOUND => crate::compound::runs_inline(args),
            _ => false,
        },
        _ => false,
    }
}

/// Runs an MDS (pNFS control listener included) on ephemeral loopback ports
/// in a background thread with its own runtime, for tests and embedding.
/// `cfg.bind` / `cfg.control_bind` are ignored. Returns (NFS address,
/// control address) once the NFS port answers.
pub fn spawn_on_loopback(cfg: crate::MdsConfig) -> std::io::Result<(SocketAddr, SocketAddr)> {
    spawn_mds_on_loopback(Mds::open(cfg).map_err(std::io::Error::other)?)
}

/// [`spawn_on_loopback`] for an MDS already opened (tests that look at its
/// stores).
pub fn spawn_mds_on_loopback(mds: Arc<Mds>) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let nfs = std::net::TcpListener::bind("127.0.0.1:0")?;
    let ctl = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addrs = (nfs.local_addr()?, ctl.local_addr()?);
    nfs.set_nonblocking(true)?;
    ctl.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return log::error!("MDS runtime: {e}"),
        };
        rt.block_on(async move {
            let (Ok(nfs), Ok(ctl)) = (TcpListener::from_std(nfs), TcpListener::from_std(ctl)) else {
                return log::error!("MDS listeners could not join the runtime");
            };
            if let Err(e) = Server::new(mds).serve_with_control(nfs, Some(ctl)).await {
                log::error!("MDS stopped: {e}");
            }
        });
    });
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(addrs.0).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            return Err(std::io::Error::other("MDS did not answer within 10 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(addrs)
}

/// Waits until the MDS whose control listener is `ctl` knows data server
/// `ds_id` (a heartbeat in its name is accepted), for tests and scripts
/// that start data servers next to [`spawn_on_loopback`]. `key_file`: the
/// cluster key (the MDS's mds.cluster_key_file).
pub fn wait_ds_registered(
    ctl: SocketAddr,
    key_file: &std::path::Path,
    ds_id: &str,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let key = pnfs_protocol::seal::ClusterKey::load(key_file)?;
    use pnfs_protocol::wire::*;
    use pnfs_protocol::{Decoder, XdrDecode};
    let t = std::time::Instant::now();
    loop {
        let a = ctl_heartbeat_args {
            cha_ds_id: ds_id.as_bytes().into(),
            cha_free_bytes: 1 << 30,
            cha_bytes_read: 0,
            cha_bytes_written: 0,
        };
        let known = crate::pnfs::client::CtlClient::new(pnfs_protocol::control_auth::ControlKeys::new(&key), 0)
            .call(&ctl.to_string(), PNFSCTL_MDS_PROGRAM, CTL_PROC_HEARTBEAT, &a)
            .ok()
            .and_then(|body| ctl_heartbeat_res::decode(&mut Decoder::new(&body)).ok())
            .is_some_and(|r| r.chr_status == ctl_status::CTL_OK);
        if known {
            return Ok(());
        }
        if t.elapsed() >= timeout {
            return Err(format!("data server {ds_id} did not register with {ctl} within {timeout:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

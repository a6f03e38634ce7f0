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
//!   and the writer share the socket's write half under a lock, so records
//!   never interleave. The reply budget (mds.reply_budget_bytes and
//!   [`REPLY_BUDGET_COUNT`]) stops reading from a peer that leaves replies
//!   unread, and the idle timeout closes it.
//! * A panic while running a request answers SYSTEM_ERR (catch_unwind).

use crate::compound::{CompoundOutcome, ConnInfo, Dispatcher};
use crate::group_commit::GroupCommitter;
use crate::mds::Mds;
use crate::metrics::metrics;
use pnfs_protocol::conn_limits::{ConnLimits, LogLimiter};
use pnfs_protocol::record::{record_header, RecordReader};
use pnfs_protocol::rpc::{self, AcceptStat, Checked, Message};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};

/// Replies one connection may have queued unread, whatever their size
/// (mds.reply_budget_bytes bounds their bytes).
const REPLY_BUDGET_COUNT: usize = 1024;

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

/// A connection's outgoing messages (RPC replies, and callbacks when it is a
/// back channel), without record marks. Queuing never waits, so no server
/// thread ever blocks on a slow reader; the connection's reader checks
/// [`ReplyQueue::wait_for_room`] before taking more requests instead.
#[derive(Clone)]
pub struct ReplyQueue {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<Queued>,
}

struct Queued {
    bytes: AtomicUsize,
    count: AtomicUsize,
    closed: AtomicBool,
    /// Signalled when the writer takes a message or goes away.
    drained: Notify,
}

/// The writer's end of a [`ReplyQueue`].
pub struct ReplyReceiver {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<Queued>,
}

/// The connection is gone.
#[derive(Debug)]
pub struct Closed;

impl ReplyQueue {
    pub fn new() -> (ReplyQueue, ReplyReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Queued {
            bytes: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            drained: Notify::new(),
        });
        (ReplyQueue { tx, queued: queued.clone() }, ReplyReceiver { rx, queued })
    }

    /// Queues `msg` for the writer without waiting.
    pub fn send(&self, msg: Vec<u8>) -> Result<(), Closed> {
        let len = msg.len();
        self.queued.bytes.fetch_add(len, Ordering::Relaxed);
        self.queued.count.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).map_err(|_| {
            self.queued.bytes.fetch_sub(len, Ordering::Relaxed);
            self.queued.count.fetch_sub(1, Ordering::Relaxed);
            Closed
        })
    }

    fn over(&self, budget_bytes: usize) -> bool {
        self.queued.bytes.load(Ordering::Relaxed) >= budget_bytes
            || self.queued.count.load(Ordering::Relaxed) >= REPLY_BUDGET_COUNT
    }

    /// Waits until the queued replies are under budget; false when the
    /// writer went away (the peer stopped reading for the idle timeout).
    async fn wait_for_room(&self, budget_bytes: usize) -> bool {
        loop {
            if self.queued.closed.load(Ordering::Acquire) {
                return false;
            }
            if !self.over(budget_bytes) {
                return true;
            }
            self.queued.drained.notified().await;
        }
    }
}

impl ReplyReceiver {
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let msg = self.rx.recv().await?;
        self.taken(msg.len());
        Some(msg)
    }

    /// For threads outside the runtime (tests).
    pub fn blocking_recv(&mut self) -> Option<Vec<u8>> {
        let msg = self.rx.blocking_recv()?;
        self.taken(msg.len());
        Some(msg)
    }

    fn taken(&self, len: usize) {
        self.queued.bytes.fetch_sub(len, Ordering::Relaxed);
        self.queued.count.fetch_sub(1, Ordering::Relaxed);
        // One waiter at most (the connection's reader); a stored permit
        // covers a wake-up that comes before it waits.
        self.queued.drained.notify_one();
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        self.queued.closed.store(true, Ordering::Release);
        self.queued.drained.notify_one();
    }
}

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
            tokio::spawn(async move {
                if let Err(e) = crate::pnfs::registry::serve_control(p, l).await {
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
            let _ = sock.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.connection(sock, peer).await {
                    log::debug!("connection {peer}: {e}");
                }
                drop(slot);
            });
        }
    }

    async fn connection(self: Arc<Self>, sock: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let cfg = &self.mds.cfg;
        let idle = Duration::from_secs(cfg.idle_timeout_seconds as u64);
        let record_timeout = Duration::from_secs(cfg.record_timeout_seconds as u64);
        let budget = cfg.reply_budget_bytes as usize;
        let conn = Arc::new(ConnInfo { id: self.next_conn.fetch_add(1, Ordering::Relaxed), peer: peer.ip() });
        log::debug!("connection {} from {peer}", conn.id);
        let (mut rd, wr) = sock.into_split();
        // Shared by this task (replies it runs itself) and the writer task
        // (everything else); whole records under the lock.
        let wr = Arc::new(tokio::sync::Mutex::new(wr));
        let (queue, mut out) = ReplyQueue::new();
        // Callbacks to this client go out on this connection when it is bound
        // to a session's back channel.
        self.mds.callbacks.register_conn(conn.id, queue.clone());
        let me = self.clone();
        let writer_half = wr.clone();
        let writer = tokio::spawn(async move {
            while let Some(msg) = out.recv().await {
                let hdr = record_header(msg.len());
                let write = async {
                    let mut wr = writer_half.lock().await;
                    wr.write_all(&hdr).await?;
                    wr.write_all(&msg).await
                };
                match tokio::time::timeout(idle, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        me.closed(peer, "replies_unread", &format!("it read none of its replies for {idle:?} (mds.idle_timeout_seconds)"));
                        break;
                    }
                }
            }
            // Dropping `out` wakes a reader waiting for reply room.
        });
        let per_conn = Arc::new(Semaphore::new(cfg.max_requests_per_connection as usize));
        let mut records = RecordReader::new(cfg.max_record_bytes as usize);
        let mut buf = vec![0u8; 64 * 1024];
        // When the first byte of the record now buffered arrived, moved on by
        // the time the server itself spent (so its own backpressure never
        // counts against the peer).
        let mut partial_since: Option<Instant> = None;
        let mut busy_since: Option<Instant> = None;
        // Replies this task wrote itself, record-marked, sent before it waits.
        let mut direct: Vec<u8> = Vec::new();
        // Replies of requests run here whose pushes are not flushed yet.
        let mut ran = Ran::default();
        let result = 'read: loop {
            self.release(&mut ran, &mut direct, &queue);
            if !self.flush_direct(&wr, &mut direct, peer, idle).await {
                break Ok(());
            }
            // Backpressure: a peer that leaves its replies unread gets no
            // more requests read; only this connection waits.
            if !queue.wait_for_room(budget).await {
                break Ok(());
            }
            if let (Some(p), Some(b)) = (partial_since.as_mut(), busy_since) {
                *p += b.elapsed();
            }
            let (wait, reason) = match partial_since {
                Some(t) => ((t + record_timeout).saturating_duration_since(Instant::now()), "record_timeout"),
                None => (idle, "idle"),
            };
            let n = match tokio::time::timeout(wait, rd.read(&mut buf)).await {
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => break Err(e),
                Err(_) => {
                    if reason == "idle" {
                        // Routine (clients leave connections open): no log line.
                        metrics().connection_closed(reason);
                        log::debug!("closing connection from {peer}: no request for {idle:?} (mds.idle_timeout_seconds)");
                    } else {
                        let why = format!("a record was not complete within {record_timeout:?} (mds.record_timeout_seconds)");
                        self.closed(peer, reason, &why);
                    }
                    break Ok(());
                }
            };
            let now = Instant::now();
            busy_since = Some(now);
            let recs = match records.feed_all(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    metrics().connection_closed("record_too_large");
                    log::warn!("closing connection from {peer}: {e}");
                    break 'read Ok(());
                }
            };
            if records.is_idle() {
                partial_since = None;
            } else if partial_since.is_none() || !recs.is_empty() {
                partial_since = Some(now);
            }
            for rec in recs {
                // Checked per record too: one read can hold hundreds of
                // small requests, each of which may earn a large reply.
                // Released only before a wait, so the pushes of one read's
                // requests go in one STATEID_BATCH (not one per request).
                if queue.over(budget) {
                    self.release(&mut ran, &mut direct, &queue);
                }
                if !queue.wait_for_room(budget).await {
                    break 'read Ok(());
                }
                // Per connection first, so one connection queues on its own
                // permits, not on everyone's.
                let mine = match per_conn.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        // Waiting on this connection's own requests: send
                        // what this task has written so far first.
                        self.release(&mut ran, &mut direct, &queue);
                        if !self.flush_direct(&wr, &mut direct, peer, idle).await {
                            break 'read Ok(());
                        }
                        let Ok(p) = per_conn.clone().acquire_owned().await else { break 'read Ok(()) };
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
                    if ran.replies.len() >= MAX_RAN_UNRELEASED || direct.len() >= DIRECT_FLUSH_BYTES {
                        self.release(&mut ran, &mut direct, &queue);
                        if !self.flush_direct(&wr, &mut direct, peer, idle).await {
                            break 'read Ok(());
                        }
                    }
                    continue;
                }
                self.release(&mut ran, &mut direct, &queue);
                if !self.flush_direct(&wr, &mut direct, peer, idle).await {
                    break 'read Ok(());
                }
                let Ok(shared) = self.blocking.clone().acquire_owned().await else { break 'read Ok(()) };
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
        drop(queue);
        // Replies still executing hold queue clones; the writer ends when
        // they are done and sent, or when the peer stops reading.
        let _ = writer.await;
        result
    }

    /// Lets the replies of requests run on the connection's task go: sends
    /// their deferred stateid pushes first (one call per data server for
    /// all of them), then appends each reply to `direct`, or has the
    /// committer hold it while a commit it may depend on is not durable.
    fn release(&self, ran: &mut Ran, direct: &mut Vec<u8>, queue: &ReplyQueue) {
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
                None => {
                    direct.extend_from_slice(&record_header(r.len()));
                    direct.extend_from_slice(&r);
                }
            }
        }
    }

    /// Writes the replies this task produced itself; false when the
    /// connection is to close (write error, or the peer read none of them
    /// for the idle timeout).
    async fn flush_direct(
        &self,
        wr: &tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
        direct: &mut Vec<u8>,
        peer: SocketAddr,
        idle: Duration,
    ) -> bool {
        if direct.is_empty() {
            return true;
        }
        let write = async {
            let mut w = wr.lock().await;
            w.write_all(direct).await
        };
        let ok = match tokio::time::timeout(idle, write).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.closed(peer, "replies_unread", &format!("it read none of its replies for {idle:?} (mds.idle_timeout_seconds)"));
                false
            }
        };
        direct.clear();
        if direct.capacity() > 4 * DIRECT_FLUSH_BYTES {
            direct.shrink_to(DIRECT_FLUSH_BYTES);
        }
        ok
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reply_queue_holds_its_reader_back_not_its_senders() {
        let (q, mut rx) = ReplyQueue::new();
        // Senders never wait, even far past the budget.
        for _ in 0..10 {
            q.send(vec![0; 1000]).unwrap();
        }
        assert!(q.over(5000));
        // The reader waits until the writer takes enough.
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move { q.wait_for_room(5000).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        for _ in 0..5 {
            rx.recv().await.unwrap();
        }
        // 5000 queued is still at the budget.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        rx.recv().await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap());
        // Many small replies count too.
        let (q2, _rx2) = ReplyQueue::new();
        for _ in 0..REPLY_BUDGET_COUNT {
            q2.send(vec![]).unwrap();
        }
        assert!(q2.over(usize::MAX));
        // A writer that went away (peer gone or timed out) ends the wait.
        drop(rx);
        assert!(!q.wait_for_room(1).await);
        assert!(q.send(vec![1]).is_err());
    }
}

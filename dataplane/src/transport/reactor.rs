//! Reactors: `ds.reactors` threads, each (optionally) pinned to a core,
//! each with its own SO_REUSEPORT listening socket on the NFS address, a
//! tokio current-thread runtime, its own connections, buffer pool and
//! io_uring ([`Engine`]), and its own copy of the MDS-decided state
//! ([`Replica`]: allowed stateids, open objects), kept current from its
//! update-bus queue (see [`crate::bus`]). The kernel spreads new connections
//! over the listening sockets; a connection never leaves the reactor that
//! accepted it.
//!
//! Records are read by [`crate::transport::recv`]: one recv() takes every pipelined
//! record the socket has into the connection's receive buffer, a large
//! WRITE's data goes by recv() straight into a pool buffer. A request is
//! executed on the reactor thread as soon as its record is complete.
//!
//! READs (the last op of their COMPOUND, i.e. every SEQUENCE, PUTFH, READ)
//! are asynchronous ([`crate::storage::aio`], up to `ds.max_inflight_io_per_reactor`
//! per reactor): the COMPOUND stops at the READ with its read prepared on
//! the ring, and the connection goes on with its next buffered record;
//! once the receive buffer holds no more records (the reader is about to
//! recv()), every prepared read goes to the kernel with one
//! io_uring_enter. The reactor's reaper task wakes on the ring's eventfd,
//! reaps completions in batches, finishes each COMPOUND
//! ([`crate::compound::Suspended::resume`]: reply encoded, session slot
//! and reply cache updated) and queues its reply. Replies can therefore
//! leave out of order (clients match them by xid). UNSTABLE4 WRITEs that
//! are the last op of their COMPOUND, with their data in a pool buffer
//! (received there, or aligned and copied into one), go the same way on
//! files-backend objects; the object's dirty generation counts a write
//! when it completed, before its reply is encoded. COMMIT and stable
//! WRITEs first complete every write in flight on the reactor (blocking
//! reap, finishing those COMPOUNDs), then check the dirty generation, so
//! "every acknowledged write is durable" holds. Those, other WRITEs and
//! the volume backend stay synchronous (submit-and-wait on the same
//! ring), as does everything when io_uring is unavailable or the key is 0.
//! While writes in flight hold every pool buffer, a connection waits for
//! one before receiving its next record.
//!
//! Replies go to a per-connection writer task that takes every queued
//! reply at once and writes them with one writev (so socket writes overlap
//! the next requests). Nothing here ever waits for the MDS link: bus updates
//! are popped from the reactor's queue before each COMPOUND and when the
//! MDS link wakes the reactor's update task.
//!
//! Waiting (`ds.poll_mode`): park sleeps in epoll whenever there is
//! nothing to run; busy never sleeps (a poller task keeps the runtime
//! polling its sockets with a zero timeout); adaptive polls like busy for
//! `ds.poll_spin_us` after the last request, then parks (see `poller`).
//!
//! Bounds: connections per reactor (`max_connections_per_reactor`) and
//! per client address on a reactor (`max_connections_per_address`, checked
//! first, so one address's flood leaves room for others); excess
//! connections are closed at once. A connection that starts no request for
//! `idle_timeout_seconds`, whose record does not arrive whole within
//! `record_timeout_seconds` of its first byte, or that takes no bytes of
//! its waiting replies that long (READ replies hold pool buffers), is
//! closed. Record buffers grow with the bytes received, and a large one is
//! freed while its connection waits. A large WRITE takes a pool buffer
//! only once its session, handle and stateid check (`admit_write`): bogus
//! ones cannot pin the pool. Requests in progress or with replies queued
//! per connection ([`MAX_QUEUED_REPLIES`]: a reply slot is reserved before
//! each record is read, so the connection stops reading when they are all
//! taken and a completion never waits for room), reads in flight per
//! reactor (`inflight_io`: a connection finding none free waits before
//! executing its next record), record size (`max_record_bytes`, larger
//! closes the connection) and READ/WRITE buffers (the pool; empty =
//! NFS4ERR_DELAY for READ, the ordinary receive path for WRITE).

use crate::storage::aio::{Aio, IoDone, IoJob};
use crate::bus::Replica;
use crate::compound::{CompoundOutcome, ConnInfo, Dispatcher, ReplyBuf, Suspended};
use crate::ds::Ds;
use crate::fh::DsFh;
use crate::transport::recv::{self, ConnReader, Detached, RecordIn};
use crate::config::PollMode;
use crate::stats::{bump, DsStats};
use crate::storage::{BufPool, Engine};
use crate::Stop;
use pnfs_protocol::record::record_mark;
use pnfs_protocol::rpc::{self, AcceptStat, Checked};
use pnfs_protocol::Encoder;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError, OwnedPermit};

/// Requests per connection in progress (reads in flight) or with their
/// reply waiting for the socket: at least a client's session slots
/// (default 64), so a pipelining client is never throttled here.
pub const MAX_QUEUED_REPLIES: usize = 128;

/// Record buffer bytes a connection keeps while it waits for its next
/// request; a larger one (grown for a big record) is freed.
const KEEP_IDLE_BUFFER: usize = 2 * recv::GROW_STEP;

/// Replies the writer takes from its queue for one writev.
const WRITE_BATCH: usize = 64;

/// A READ or WRITE whose I/O is in flight: its suspended COMPOUND, the
/// reply started for it and the reserved place in its connection's reply
/// queue.
struct PendingIo {
    susp: Suspended,
    rb: ReplyBuf,
    permit: OwnedPermit<Outgoing>,
}

type ReactorAio = Aio<PendingIo>;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Binds `n` listening sockets to `bind` with SO_REUSEPORT. With port 0 the
/// first picks a port and the others join it.
pub fn bind_listeners(bind: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut addr = bind;
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Starts one reactor thread per listener; returns once every reactor is
/// set up (or the first setup error).
pub fn start(ds: Arc<Ds>, listeners: Vec<std::net::TcpListener>, stop: Arc<Stop>) -> Result<Vec<JoinHandle<()>>, String> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::new();
    let n = listeners.len();
    for (i, l) in listeners.into_iter().enumerate() {
        let ds = ds.clone();
        let stop = stop.clone();
        let ready = ready_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("ds-reactor-{i}"))
            .spawn(move || reactor_thread(i, ds, l, stop, ready))
            .map_err(|e| format!("starting reactor {i}: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.stop();
                return Err(e);
            }
            Err(_) => {
                stop.stop();
                return Err("a reactor thread died during setup".into());
            }
        }
    }
    Ok(threads)
}

fn reactor_thread(i: usize, ds: Arc<Ds>, l: std::net::TcpListener, stop: Arc<Stop>, ready: std_mpsc::Sender<Result<(), String>>) {
    if !ds.cfg.cores.is_empty() {
        let core = ds.cfg.cores[i % ds.cfg.cores.len()];
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            log::warn!("reactor {i}: could not pin to core {core}");
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("reactor {i}: runtime: {e}")));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let listener = match rt.block_on(async { TcpListener::from_std(l) }) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("reactor {i}: listener: {e}")));
            return;
        }
    };
    let pool = BufPool::new(ds.cfg.buffers_per_reactor, ds.cfg.buffer_size);
    let inflight = ds.cfg.inflight_io();
    let mut engine = Engine::with_ring_entries(pool, ds.stats.clone(), true, inflight as u32);
    let fixed_files = engine.enable_fixed_files(ds.cfg.fixed_files_per_reactor);
    if let Some(vol) = ds.store.volume() {
        // One slot for the whole volume, for as long as the reactor runs.
        engine.attach_volume(vol);
    }
    let engine = Rc::new(engine);
    // Attached before `ready`: the control program starts after every reactor.
    let replica = Rc::new(ds.bus.replica(i));
    replica.attach_engine(engine.clone());
    log::debug!(
        "reactor {i}: io_uring {} (registered files {}), O_DIRECT {}, {} buffers of {} bytes",
        if engine.uses_uring() { "on" } else { "off" },
        if fixed_files { "on" } else { "off" },
        if ds.store.uses_o_direct() { "on" } else { "off" },
        ds.cfg.buffers_per_reactor,
        ds.cfg.buffer_size
    );
    let _ = ready.send(Ok(()));
    let mut stopped = stop.subscribe();
    let activity = Rc::new(Activity::new(ds.cfg.poll_mode));
    local.block_on(&rt, async move {
        let aio = if inflight > 0 { Aio::new(engine.clone(), inflight).map(Rc::new) } else { None };
        log::debug!("reactor {i}: READs {}", match &aio {
            Some(a) => format!("asynchronous, up to {} in flight", a.limit()),
            None => "synchronous".into(),
        });
        if let Some(a) = &aio {
            tokio::task::spawn_local(reaper(ds.clone(), a.clone(), activity.clone()));
        }
        let dispatcher = Rc::new(Dispatcher::new());
        let conns = Rc::new(Conns::new(ds.cfg.max_connections_per_reactor));
        // A full reactor is logged at most every 10 s (a flood would fill the log).
        let mut warned: Option<Instant> = None;
        tokio::task::spawn_local(replica.clone().serve());
        if ds.cfg.poll_mode != PollMode::Park {
            let spin = Duration::from_micros(ds.cfg.poll_spin_us as u64);
            tokio::task::spawn_local(poller(ds.cfg.poll_mode, spin, activity.clone(), ds.stats.clone()));
        }
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                r = listener.accept() => match r {
                    Ok((sock, peer)) => {
                        activity.touch();
                        // Dropping the socket closes it at once.
                        let guard = match conns.admit(peer.ip(), ds.cfg.max_connections_per_address, ds.cfg.max_connections_per_reactor) {
                            Ok(g) => g,
                            Err(Refused::PerAddress) => {
                                bump(&ds.stats.connections_refused, 1);
                                bump(&ds.stats.connections_refused_per_address, 1);
                                log::debug!("reactor {i}: refusing connection from {peer}: ds.max_connections_per_address reached");
                                continue;
                            }
                            Err(Refused::Total) => {
                                bump(&ds.stats.connections_refused, 1);
                                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                                    warned = Some(Instant::now());
                                    log::warn!("reactor {i}: refusing connections (this one from {peer}): ds.max_connections_per_reactor reached; see the connections_refused counter");
                                }
                                continue;
                            }
                        };
                        bump(&ds.stats.connections_accepted, 1);
                        if ds.cfg.poll_mode == PollMode::Busy {
                            set_busy_poll(&sock, ds.cfg.poll_spin_us);
                        }
                        let (ds, engine, aio, replica, dispatcher, activity) =
                            (ds.clone(), engine.clone(), aio.clone(), replica.clone(), dispatcher.clone(), activity.clone());
                        tokio::task::spawn_local(async move {
                            let _guard = guard;
                            if let Err(e) = connection(ds, engine, aio, replica, dispatcher, activity, sock, peer).await {
                                log::debug!("connection {peer}: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        log::warn!("reactor {i}: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
    });
    log::debug!("reactor {i} stopped");
}

/// When the reactor last had work, for the poller (adaptive mode).
struct Activity {
    /// None in park mode: nothing to keep up to date.
    last: Option<Cell<Instant>>,
    /// The poller sleeps and waits for `wake`.
    parked: Cell<bool>,
    wake: tokio::sync::Notify,
}

impl Activity {
    fn new(mode: PollMode) -> Activity {
        let last = (mode != PollMode::Park).then(|| Cell::new(Instant::now()));
        Activity { last, parked: Cell::new(false), wake: tokio::sync::Notify::new() }
    }

    /// A request (or connection) arrived: keep polling for a while.
    #[inline]
    fn touch(&self) {
        if let Some(l) = &self.last {
            l.set(Instant::now());
            if self.parked.replace(false) {
                self.wake.notify_one();
            }
        }
    }
}

/// Spins counted locally and added to the shared counter in batches, so a
/// spinning reactor does not keep a shared cache line busy.
const SPIN_FLUSH: u64 = 4096;

/// Keeps the reactor's runtime polling its sockets instead of sleeping in
/// epoll: a task that only yields leaves the current-thread scheduler with
/// deferred work, so it polls the I/O driver with a zero timeout and comes
/// back at once. Busy: forever. Adaptive: until `spin` passed since the
/// last activity, then it parks until a connection touches `activity`
/// (until then the reactor sleeps in epoll like in park mode).
async fn poller(mode: PollMode, spin: Duration, activity: Rc<Activity>, stats: Arc<DsStats>) {
    debug_assert!(mode != PollMode::Park);
    let mut spins = 0u64;
    loop {
        let spinning = mode == PollMode::Busy || activity.last.as_ref().is_some_and(|l| l.get().elapsed() < spin);
        if spinning {
            spins += 1;
            if spins == SPIN_FLUSH {
                bump(&stats.poll_spins, spins);
                spins = 0;
            }
            tokio::task::yield_now().await;
        } else {
            bump(&stats.poll_spins, spins);
            spins = 0;
            bump(&stats.reactor_parks, 1);
            activity.parked.set(true);
            // Wakes on touch(); a permit left by an earlier touch just means
            // one extra round.
            activity.wake.notified().await;
        }
    }
}

/// SO_BUSY_POLL (busy mode): the kernel may poll the device queue for this
/// socket instead of waiting for an interrupt. Needs CAP_NET_ADMIN above
/// net.core.busy_read; refused is fine.
fn set_busy_poll(sock: &TcpStream, us: u32) {
    use std::os::unix::io::AsRawFd;
    let v: libc::c_int = us.max(1).min(i32::MAX as u32) as libc::c_int;
    // SAFETY: a valid socket and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        log::trace!("SO_BUSY_POLL: {}", io::Error::last_os_error());
    }
}

/// A reactor's connections: the total and how many each client address
/// holds. Reactor-local (each reactor accepts and serves its own), so no
/// lock; touched only at accept and close.
struct Conns {
    total: Cell<usize>,
    per_address: RefCell<HashMap<IpAddr, u32>>,
}

enum Refused {
    PerAddress,
    Total,
}

impl Conns {
    fn new(max_total: usize) -> Conns {
        // Distinct addresses never outnumber the connections: sized for
        // the usual load, the map rarely grows.
        Conns { total: Cell::new(0), per_address: RefCell::new(HashMap::with_capacity(max_total.min(4096))) }
    }

    /// Counts a new connection from `ip`, or says which cap it hits. The
    /// per-address cap is checked first, so an address that floods the
    /// reactor is refused before it fills the total.
    fn admit(self: &Rc<Self>, ip: IpAddr, per_address: usize, total: usize) -> Result<ConnGuard, Refused> {
        let ip = ip.to_canonical();
        let mut map = self.per_address.borrow_mut();
        let n = map.get(&ip).copied().unwrap_or(0);
        if n as usize >= per_address {
            return Err(Refused::PerAddress);
        }
        if self.total.get() >= total {
            return Err(Refused::Total);
        }
        map.insert(ip, n + 1);
        self.total.set(self.total.get() + 1);
        Ok(ConnGuard { conns: self.clone(), ip })
    }
}

/// One counted connection; uncounted when dropped.
struct ConnGuard {
    conns: Rc<Conns>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let c = &self.conns;
        c.total.set(c.total.get() - 1);
        let mut map = c.per_address.borrow_mut();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A reply ready for the socket.
enum Outgoing {
    /// Record mark included.
    Flat(Vec<u8>),
    /// Record mark placeholder at 0, patched by the writer.
    Reply(ReplyBuf),
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    ds: Arc<Ds>,
    engine: Rc<Engine>,
    aio: Option<Rc<ReactorAio>>,
    replica: Rc<Replica>,
    dispatcher: Rc<Dispatcher>,
    activity: Rc<Activity>,
    sock: TcpStream,
    peer: SocketAddr,
) -> io::Result<()> {
    let _ = sock.set_nodelay(true);
    let conn = ConnInfo { id: NEXT_CONN.fetch_add(1, Ordering::Relaxed), peer: peer.ip() };
    log::debug!("connection {} from {peer}", conn.id);
    let (rd, wr) = sock.into_split();
    let (tx, rx) = mpsc::channel::<Outgoing>(MAX_QUEUED_REPLIES);
    let mut writer = tokio::task::spawn_local(writer(wr, rx, ds.cfg.record_timeout(), ds.stats.clone()));
    // Before the reader waits for the socket: every read the buffered
    // records prepared goes to the kernel in one submit.
    let before_recv = aio.clone().map(|a| Rc::new(move || a.submit()) as Rc<dyn Fn()>);
    let mut rd = ConnReader::new(rd, recv::RECV_BUFFER, before_recv);
    let max = ds.cfg.max_record_bytes as usize;
    let max_io = ds.cfg.max_io();
    let (idle, record_time) = (ds.cfg.idle_timeout(), ds.cfg.record_timeout());
    let admit = |h: &recv::WriteHead| admit_write(&ds, &replica, h);
    let mut buf = Vec::new();
    // The connection's two deadlines, each one timer for the connection's
    // life, moved on per record: moving a registered timer later is one
    // atomic update, where a timer per record would take the timer
    // driver's lock to register and to drop it.
    let mut last_start = tokio::time::Instant::now();
    let mut idle_timer = std::pin::pin!(tokio::time::sleep_until(last_start + idle));
    let mut record_timer = std::pin::pin!(tokio::time::sleep_until(last_start + record_time));
    // Closed for a timeout: replies still queued are not waited for.
    let mut timed_out = false;
    let result = loop {
        // Waiting for the next request, i.e. for a place in the reply queue
        // (reserved before the record is read) and then its first bytes:
        // until `idle` after the last request began. A peer that stops
        // reading its replies stops here too.
        let mut hdr = [0u8; 4];
        idle_timer.as_mut().reset(last_start + idle);
        let waited = before(idle_timer.as_mut(), async {
            let permit = match tx.clone().try_reserve_owned() {
                Ok(p) => p,
                Err(TrySendError::Full(t)) => {
                    if let Some(a) = &aio {
                        a.submit();
                    }
                    match t.reserve_owned().await {
                        Ok(p) => p,
                        Err(_) => return Ok(None),
                    }
                }
                Err(TrySendError::Closed(_)) => return Ok(None),
            };
            // A record buffer grown large (a big record on the ordinary
            // path) is not kept while the connection waits: idle
            // connections hold at most KEEP_IDLE_BUFFER each.
            let mut first = std::pin::pin!(RecordIn::first_bytes(&mut rd, &mut hdr));
            let n = std::future::poll_fn(|cx| {
                let p = std::future::Future::poll(first.as_mut(), cx);
                if p.is_pending() && buf.capacity() > KEEP_IDLE_BUFFER {
                    buf = Vec::new();
                }
                p
            })
            .await?;
            Ok::<_, io::Error>((n > 0).then_some((permit, n)))
        })
        .await;
        let (permit, have) = match waited {
            Some(Ok(Some(w))) => w,
            Some(Ok(None)) => break Ok(()),
            Some(Err(e)) => break Err(e),
            None => {
                bump(&ds.stats.connections_idle_closed, 1);
                timed_out = true;
                break Err(io::Error::new(io::ErrorKind::TimedOut, "no request for ds.idle_timeout_seconds"));
            }
        };
        // From its first byte, the record has `record_time` to arrive
        // whole; a stalled one closes the connection and whatever pool
        // buffer its data was going into goes back. (Only the peer's bytes
        // count: not the wait for a pool buffer below.)
        last_start = tokio::time::Instant::now();
        record_timer.as_mut().reset(last_start + record_time);
        let record_late = || {
            bump(&ds.stats.records_timed_out, 1);
            io::Error::new(io::ErrorKind::TimedOut, "record not complete within ds.record_timeout_seconds")
        };
        let mut rin = match before(record_timer.as_mut(), RecordIn::start(&mut rd, hdr, have, max)).await {
            Some(Ok(Some(r))) => r,
            Some(Ok(None)) => break Ok(()),
            Some(Err(e)) => break Err(e),
            None => {
                timed_out = true;
                break Err(record_late());
            }
        };
        activity.touch();
        // After a large record (a WRITE's data, most likely) the next one
        // is read exactly, so that a stream of large WRITEs never has data
        // in the receive buffer; small ones switch back to greedy reads.
        rd.exact = rin.worth_fast_path();
        // Writes in flight hold pool buffers: when they hold them all, wait
        // for one back (so this record's WRITE data still lands in one).
        if let Some(a) = &aio {
            a.buffer(&engine.pool).await;
        }
        let got = before(record_timer.as_mut(), recv::read_call(&mut rd, &mut rin, &mut buf, &engine.pool, max_io, &admit)).await;
        let (len, detached) = match got {
            Some(Ok((len, detached, path))) => {
                debug_assert!(rin.done());
                match path {
                    recv::Path::ZeroCopy => bump(&ds.stats.zero_copy_writes, 1),
                    recv::Path::ZeroCopyPartly => {
                        bump(&ds.stats.zero_copy_writes, 1);
                        bump(&ds.stats.payload_copies, 1);
                    }
                    recv::Path::NoBuffer => bump(&ds.stats.zero_copy_no_buffer, 1),
                    // Counted by `admit_write`, when it said no.
                    recv::Path::NotAdmitted | recv::Path::Ordinary => {}
                }
                (len, detached)
            }
            Some(Err(e)) => break Err(e),
            None => {
                timed_out = true;
                break Err(record_late());
            }
        };
        // Room for a read in flight, should this be a READ.
        if let Some(a) = &aio {
            a.room().await;
        }
        let defer = aio.as_ref().is_some_and(|a| a.has_room());
        let rec = &buf[..len];
        // COMMIT and stable WRITE first complete the writes in flight.
        let drain_fn = aio.as_ref().map(|a| {
            let ds = &ds;
            move || a.drain_writes(|p, job, r| complete_io(ds, p, job, r))
        });
        let drain = drain_fn.as_ref().map(|f| f as &dyn Fn());
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| handle_record(&ds, &conn, &engine, &replica, &dispatcher, rec, detached, defer, drain)))
            .unwrap_or_else(|_| {
                log::error!("internal error while handling a request from {}; answered SYSTEM_ERR", conn.peer);
                match rpc::parse_message(rec) {
                    Ok(rpc::Message::Call { header, .. }) => Handled::Reply(flat(rpc::accepted_reply(header.xid, AcceptStat::SystemErr))),
                    _ => Handled::Nothing,
                }
            });
        match out {
            Handled::Nothing => {}
            Handled::Reply(out) => {
                permit.send(out);
            }
            Handled::Pending(susp, rb, job) => {
                let aio = aio.as_ref().expect("reads are deferred only with asynchronous I/O");
                if let Err((job, PendingIo { susp, mut rb, permit })) = aio.start(job, PendingIo { susp, rb, permit }) {
                    if job.write {
                        // Not queued (the ring refused it): write it here.
                        let r = engine.write_pooled(&job.obj, job.offset, &job.buf, job.count);
                        let count = job.count;
                        drop(job);
                        let r = match r {
                            Ok(()) => crate::ops::io::finish_write(&ds, Ok(count)),
                            Err(crate::storage::IoError::NoBuffer) => Err(pnfs_protocol::wire::nfsstat4::NFS4ERR_DELAY),
                            Err(crate::storage::IoError::Io(e)) => crate::ops::io::finish_write(&ds, Err(e)),
                        };
                        susp.resume_write(&ds, &mut rb, r);
                        permit.send(Outgoing::Reply(rb));
                        continue;
                    }
                    // Not queued (the ring refused it): read it here.
                    let (obj, offset, count) = (job.obj.clone(), job.offset, job.count);
                    drop(job);
                    let r = match engine.read(&obj, offset, count) {
                        Ok((b, n)) => crate::ops::io::finish_read(&ds, &obj, offset, Ok((b, n))),
                        Err(crate::storage::IoError::NoBuffer) => Err(pnfs_protocol::wire::nfsstat4::NFS4ERR_DELAY),
                        Err(crate::storage::IoError::Io(e)) => crate::ops::io::finish_read(&ds, &obj, offset, Err(e)),
                    };
                    susp.resume(&ds, &mut rb, r);
                    permit.send(Outgoing::Reply(rb));
                }
            }
        }
    };
    if let Some(a) = &aio {
        a.submit();
    }
    drop(tx);
    // Reads still in flight hold senders: the writer ends after their
    // replies, unless the peer does not take them (then it is cut off).
    if timed_out || tokio::time::timeout(idle, &mut writer).await.is_err() {
        writer.abort();
    }
    result
}

/// `f`'s output, or None once `timer` fired first (`f` is dropped).
async fn before<F: std::future::Future>(mut timer: std::pin::Pin<&mut tokio::time::Sleep>, f: F) -> Option<F::Output> {
    use std::future::Future as _;
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Whether a large WRITE may take a pool buffer before its data arrives
/// ([`recv::read_call`]): its session exists, its handle parses and its
/// stateid allows writing that object, as SEQUENCE and WRITE will check
/// (with the bus updates applied first, as before a COMPOUND). A
/// refusal only means its data is not kept: the COMPOUND still answers.
/// The handle is read as PUTFH reads it (`ops::filehandle::putfh`): keep
/// the two in step, or every real WRITE is refused here and answered DELAY
/// (tests/bounds.rs checks that a real one is admitted).
fn admit_write(ds: &Ds, replica: &Replica, h: &recv::WriteHead) -> bool {
    // The session's owner tag: the stateid must be its client's (finding 4).
    let tag = ds.state.sessions.shard(h.sessionid).get(h.sessionid).map(|s| s.owner_tag);
    let ok = tag.is_some_and(|tag| {
        DsFh::open(h.fh, &ds.fh_key).is_ok_and(|fh| {
            replica.sync();
            replica.check_io(&h.stateid, &fh, true, tag).is_ok()
        })
    });
    if !ok {
        bump(&ds.stats.writes_not_admitted, 1);
    }
    ok
}

/// The reactor's completion task: wakes on the ring's eventfd, finishes
/// every READ whose read completed and queues its reply.
async fn reaper(ds: Arc<Ds>, aio: Rc<ReactorAio>, activity: Rc<Activity>) {
    loop {
        if let Err(e) = aio.wait().await {
            log::error!("io_uring completion wait: {e}; READs of this reactor stall");
            return;
        }
        let n = aio.reap(|p, job, r| complete_io(&ds, p, job, r));
        if n > 0 {
            activity.touch();
        }
        // Rests of short reads.
        aio.submit();
    }
}

fn complete_io(ds: &Ds, p: PendingIo, job: IoJob, r: IoDone) {
    let PendingIo { susp, mut rb, permit } = p;
    let xid = rb.e.buf.get(4..8).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| {
        if job.write {
            // The buffer goes back to the pool now; the object counted the write.
            drop(job);
            susp.resume_write(ds, &mut rb, crate::ops::io::finish_write(ds, r));
            return Outgoing::Reply(rb);
        }
        let IoJob { obj, offset, buf, .. } = job;
        let r = crate::ops::io::finish_read(ds, &obj, offset, r.map(|n| (buf, n)));
        susp.resume(ds, &mut rb, r);
        Outgoing::Reply(rb)
    }))
    .unwrap_or_else(|_| {
        log::error!("internal error while finishing a READ or WRITE; answered SYSTEM_ERR");
        flat(rpc::accepted_reply(xid, AcceptStat::SystemErr))
    });
    permit.send(out);
}

fn flat(msg: Vec<u8>) -> Outgoing {
    let mut v = Vec::with_capacity(msg.len() + 4);
    v.extend_from_slice(&pnfs_protocol::record::record_header(msg.len()));
    v.extend_from_slice(&msg);
    Outgoing::Flat(v)
}

/// Writes replies as they are queued: every reply waiting (up to
/// [`WRITE_BATCH`]) goes out in one writev.
/// `stall`: a peer that takes no reply bytes this long while replies wait
/// is cut off (the queued replies, and the pool buffers of READ replies,
/// go back at once instead of after the idle timeout).
async fn writer(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, stall: Duration, stats: Arc<DsStats>) {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(WRITE_BATCH);
    // Armed only when a write would block.
    let mut timer = std::pin::pin!(tokio::time::sleep(stall));
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for out in batch.iter_mut() {
            if let Outgoing::Reply(rb) = out {
                let total = rb.e.len() - 4 + rb.payload.as_ref().map_or(0, |p| p.len);
                rb.e.patch_u32(0, record_mark(total));
            }
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(3 * batch.len());
        for out in &batch {
            match out {
                Outgoing::Flat(v) => parts.push(v),
                Outgoing::Reply(rb) => match &rb.payload {
                    None => parts.push(&rb.e.buf),
                    Some(p) => parts.extend([&rb.e.buf[..p.at], &p.buf.as_slice()[..p.len], &rb.e.buf[p.at..]]),
                },
            }
        }
        let r = write_all_vectored(&mut wr, &parts, stall, timer.as_mut()).await;
        drop(parts);
        batch.clear();
        if let Err(e) = r {
            if e.kind() == io::ErrorKind::TimedOut {
                bump(&stats.replies_stalled, 1);
            }
            break;
        }
    }
}

/// Writes every byte of `parts` with as few writev calls as the socket
/// allows; TimedOut when one writev waits `stall` for room.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, parts: &[&[u8]], stall: Duration, mut timer: std::pin::Pin<&mut tokio::time::Sleep>) -> io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        if off == parts[idx].len() {
            idx += 1;
            off = 0;
            continue;
        }
        let mut slices = Vec::with_capacity(parts.len() - idx);
        slices.push(IoSlice::new(&parts[idx][off..]));
        slices.extend(parts[idx + 1..].iter().map(|p| IoSlice::new(p)));
        let mut write = std::pin::pin!(wr.write_vectored(&slices));
        let mut armed = false;
        let mut n = std::future::poll_fn(|cx| {
            use std::future::Future as _;
            if let std::task::Poll::Ready(r) = write.as_mut().poll(cx) {
                return std::task::Poll::Ready(r);
            }
            if !armed {
                // The socket is full: from now the peer has `stall` to take some.
                timer.as_mut().reset(tokio::time::Instant::now() + stall);
                armed = true;
            }
            timer.as_mut().poll(cx).map(|()| Err(io::Error::new(io::ErrorKind::TimedOut, "peer took no reply bytes for ds.record_timeout_seconds")))
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 && idx < parts.len() {
            let left = parts[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// What a record came to.
enum Handled {
    /// Nothing to answer (an unreadable record, an RPC reply).
    Nothing,
    Reply(Outgoing),
    /// A COMPOUND waiting for its READ's or WRITE's I/O: start the job, then resume.
    Pending(Suspended, ReplyBuf, IoJob),
}

/// One RPC record in, at most one RPC reply out (now, or once its I/O is
/// done: `defer_io`, see [`Dispatcher::run`]).
/// `detached`: the WRITE data of a zero-copy record (see [`crate::transport::recv`]);
/// dropped (back to the pool) whenever the COMPOUND does not use it.
#[allow(clippy::too_many_arguments)]
fn handle_record(
    ds: &Ds,
    conn: &ConnInfo,
    engine: &Engine,
    replica: &Replica,
    dispatcher: &Dispatcher,
    rec: &[u8],
    detached: Option<Detached>,
    defer_io: bool,
    drain: Option<&dyn Fn()>,
) -> Handled {
    let (header, args) = match rpc::NFS4_CALLS.check(rec) {
        Checked::Call { header, args } => (header, args),
        Checked::Reply { xid, .. } => {
            log::debug!("ignoring RPC reply xid {xid:#x} on connection {}", conn.id);
            return Handled::Nothing;
        }
        Checked::Refused(reply) => return Handled::Reply(flat(reply)),
        Checked::Unreadable => return Handled::Nothing,
    };
    let xid = header.xid;
    match header.proc_ {
        rpc::PROC_NULL => Handled::Reply(flat(rpc::accepted_reply(xid, AcceptStat::Success))),
        rpc::PROC_COMPOUND => {
            let mut e = Encoder::with_buffer(Vec::with_capacity(512));
            e.put_u32(0); // record mark, patched by the writer
            rpc::begin_accepted_reply(&mut e, xid, AcceptStat::Success);
            let mut rb = ReplyBuf::new(e);
            match dispatcher.run(ds, conn, engine, replica, header.cred, args, detached, &mut rb, defer_io, drain) {
                CompoundOutcome::Done => Handled::Reply(Outgoing::Reply(rb)),
                CompoundOutcome::Pending(susp, job) => Handled::Pending(susp, rb, job),
                CompoundOutcome::Replay(bytes) => {
                    rb.truncate(rb.base);
                    rb.e.buf.extend_from_slice(&bytes);
                    Handled::Reply(Outgoing::Reply(rb))
                }
                CompoundOutcome::Garbage => Handled::Reply(flat(rpc::accepted_reply(xid, AcceptStat::GarbageArgs))),
            }
        }
        _ => Handled::Reply(flat(rpc::accepted_reply(xid, AcceptStat::ProcUnavail))),
    }
}

//! pnfs-ds: the data server (DS) of the pNFS appliance.
//!
//! A DS stores the stripes ("objects") of files whose layout the MDS hands
//! out, and serves them to NFSv4.1 clients doing pNFS I/O (files layout,
//! tightly coupled: RFC 8881 chapter 13).
//!
//! # Layers, one folder (or file) each
//!
//! | path | layer |
//! |---|---|
//! | `transport/` | [`transport::reactor`] (threads, sockets, reply writers) and [`transport::recv`] (RPC records in, zero-copy WRITE data) |
//! | `compound.rs`, `ops/` | the NFSv4.1 DS subset: [`compound`] (session gate and dispatch table), [`ops`] (one file per operation group) |
//! | `state.rs` | NFS session state: clients, sessions, the allowed-stateid table |
//! | `mds_link/` | the DS's end of the MDS <-> DS control protocol: the control program the MDS calls, registration and heartbeats |
//! | `bus.rs` | the update bus: how what the MDS link is told reaches every reactor's own copy ([`bus::Replica`]) |
//! | `storage/` | objects and the engines that move their bytes: the object store, buffer pools, the per-reactor io_uring engine, asynchronous I/O ([`storage::aio`]), the volume backend ([`storage::volume`]), NVMe passthrough |
//! | `ds.rs`, `config.rs`, `stats.rs`, `fh.rs` | the shared server object, the `[ds]` table, the counters, the DS filehandle |
//!
//! A layer uses the ones below it in this order (transport -> NFS ops ->
//! state, bus -> storage), never one above; `ds.rs` ties them together.
//!
//! Three things were all called "control"; here they have a name each.
//! `controlplane` is the MDS crate. The *control protocol* is the MDS <-> DS
//! RPC program (`protocol/xdr/control.x`, `CTL_*` calls); the DS's end of it
//! is the *MDS link* ([`mds_link`]). The *update bus* ([`bus`]) is internal
//! to the DS: the MDS link publishes [`bus::Update`]s on it and the
//! reactors apply them.
//!
//! # Threads and sharing
//!
//! - `ds.reactors` reactor threads (`ds-reactor-N`), each optionally pinned
//!   to a core from `ds.cores`, each with its own SO_REUSEPORT listener on
//!   `ds.bind`, a tokio current-thread runtime, its own connections, its own
//!   aligned buffer pool, its own io_uring and its own copy of the
//!   MDS-decided state ([`bus::Replica`]). A COMPOUND runs on the
//!   reactor that read it. READs are completion-driven ([`storage::aio`]): up to
//!   `ds.max_inflight_io_per_reactor` in flight per ring, the reads of all
//!   pipelined records a recv() brought in submitted with one
//!   io_uring_enter, completions reaped in batches on the ring's eventfd
//!   and their COMPOUNDs finished then (replies may leave out of order).
//!   WRITE and COMMIT are still submitted and waited for right there.
//! - One MDS-link thread (`ds-control`): the control program server, its
//!   calls on a small blocking pool, and the lease reaper.
//! - One registration thread (`ds-register`): registers with the MDS and
//!   heartbeats, blocking only itself.
//!
//! # MDS link -> reactors: the update bus, queues only
//!
//! What the MDS decides and every READ/WRITE/PUTFH checks - the stateids
//! it allowed (STATEID_ALLOW, STATEID_REVOKE, forgetting an old MDS epoch's)
//! and which objects exist (OBJ_CREATE, OBJ_REMOVE -> STALE) - is owned by
//! each reactor: plain maps, no lock, no allocation to look up. The MDS
//! link reaches it only through one bounded lock-free queue per reactor
//! (`crossbeam_queue::ArrayQueue`): it pushes every update to every
//! reactor, wakes them, and answers the MDS only once each reactor has
//! applied it (its applied-sequence counter reached the update's), so a
//! layout the MDS hands out right after STATEID_ALLOW works on whichever
//! reactor the client's I/O lands, and after STATEID_REVOKE or OBJ_REMOVE
//! no reactor has I/O of the old state in flight. Reactors also drain their
//! queue before every COMPOUND. A reactor never waits for the MDS link;
//! the MDS link waits for reactors only boundedly (full queue:
//! it waits for room, never drops; past the bound the control call fails
//! with CTL_IO). Details and invariants in [`bus`].
//!
//! # Shared state
//!
//! Clients and sessions are NFS-session state, not MDS-decided state:
//! clients create them on whatever reactor their connection reached and use
//! them from every reactor their connections reach, so they stay shared,
//! behind sharded mutexes ([`state::Shards`], 16 shards picked by key
//! hash); no lock is held across I/O or an await. Client records, touched
//! only by EXCHANGE_ID / CREATE_SESSION / DESTROY / expiry, sit behind one
//! mutex. Buffers, rings and the replicas are per reactor and never shared,
//! so they need no locks at all.
//!
//! # Storage
//!
//! Each object is one file, `<data_dir>/objects/<hex of the 16-byte DS
//! filehandle>` (format in [`fh`]), or with `ds.backing = "volume"` a set
//! of extents of one block device or big file ([`storage::volume`]); offsets are
//! object offsets (dense striping). Aligned I/O uses an O_DIRECT descriptor and registered pool
//! buffers; unaligned I/O, or a file system refusing O_DIRECT (checked once
//! at start, logged once), uses buffered I/O; a kernel without io_uring
//! gets pread/pwrite (logged once). COMMIT and stable writes are fdatasync
//! (through the ring), skipped when the object has no write since its last.
//! See [`stats`] for where payload bytes are copied.
//!
//! # Tight coupling
//!
//! READ and WRITE need a stateid the MDS pushed with CTL_PROC_STATEID_ALLOW
//! for that very object (matched on `other`, any seqid), presented by the
//! client it was given to: the DS session's client owner must carry the tag
//! in the high half of the MDS client ID pushed with it
//! ([`pnfs_protocol::session::owner_tag`]; clients use one owner string with
//! the MDS and its data servers). See [`state::AllowedTable::check_io`] for
//! the exact errors.
//!
//! # Simplified for now
//!
//! WRITE and COMMIT I/O blocks its reactor for one request (READs do
//! not, see [`storage::aio`]); only large
//! `SEQUENCE, PUTFH, WRITE` calls get their data received straight into an
//! aligned pool buffer ([`transport::recv`]), other WRITEs are copied from the record
//! into one for O_DIRECT (1 copy).

pub mod bus;
pub mod compound;
pub mod config;
pub mod ds;
pub mod fh;
pub mod mds_link;
pub mod ops;
pub mod state;
pub mod stats;
pub mod storage;
pub mod transport;

pub use config::{Backing, DsConfig, PollMode};
pub use ds::Ds;
pub use fh::DsFh;
pub use stats::{DsStats, DsStatsSnapshot};

use pnfs_protocol::sync::lock;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The stop signal shared by every DS thread: a flag with a condvar for the
/// blocking threads and a watch channel for the async ones.
pub struct Stop {
    flag: Mutex<bool>,
    cv: Condvar,
    tx: tokio::sync::watch::Sender<bool>,
}

impl Stop {
    pub fn new() -> Arc<Stop> {
        let (tx, _) = tokio::sync::watch::channel(false);
        Arc::new(Stop { flag: Mutex::new(false), cv: Condvar::new(), tx })
    }

    pub fn stop(&self) {
        *lock(&self.flag) = true;
        self.cv.notify_all();
        self.tx.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *lock(&self.flag)
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Sleeps up to `d`; true when stopped meanwhile.
    pub fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = lock(&self.flag);
        while !*g {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

/// A running data server.
pub struct DsHandle {
    ds: Arc<Ds>,
    nfs_addr: SocketAddr,
    control_addr: SocketAddr,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl DsHandle {
    /// The bound NFS address (useful with port 0).
    pub fn nfs_addr(&self) -> SocketAddr {
        self.nfs_addr
    }

    /// The bound control-program address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    pub fn ds(&self) -> &Arc<Ds> {
        &self.ds
    }

    /// A control connection to this DS as its MDS makes them (the cluster
    /// key, the newest epoch of a single MDS, node 0, it knows): for tests
    /// and tools.
    pub fn control_client(&self) -> std::io::Result<mds_link::CtlClient> {
        let epoch = self.ds.epochs.newest(0);
        mds_link::CtlClient::connect(&self.control_addr.to_string(), std::time::Duration::from_secs(2), self.ds.control_keys.clone(), epoch)
    }

    pub fn stats(&self) -> DsStatsSnapshot {
        self.ds.stats.snapshot()
    }

    /// A snapshot function that outlives the handle (metrics endpoint).
    pub fn stats_source(&self) -> impl Fn() -> DsStatsSnapshot + Send + Sync + 'static {
        let ds = self.ds.clone();
        move || ds.stats.snapshot()
    }

    /// The data server's id (metrics labels).
    pub fn id(&self) -> String {
        self.ds.cfg.id.clone()
    }

    /// Asks every thread to stop; returns at once.
    pub fn shutdown(&self) {
        self.stop.stop();
    }

    /// Waits for every thread to finish (after [`DsHandle::shutdown`], or forever).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts the data server in background threads: reactors on `cfg.bind`,
/// the control program on `cfg.control_bind`, registration with
/// `cfg.mds_control`. Errors name the config key at fault.
pub fn run(cfg: DsConfig) -> Result<DsHandle, String> {
    let ds = Ds::open(cfg)?;
    let cfg = &ds.cfg;
    let listeners = transport::reactor::bind_listeners(cfg.bind, cfg.reactors).map_err(|e| format!("ds.bind {}: {e}", cfg.bind))?;
    let nfs_addr = listeners[0].local_addr().map_err(|e| format!("ds.bind: {e}"))?;
    let control = std::net::TcpListener::bind(cfg.control_bind).map_err(|e| format!("ds.control_bind {}: {e}", cfg.control_bind))?;
    let control_addr = control.local_addr().map_err(|e| format!("ds.control_bind: {e}"))?;
    let advertised = match &cfg.advertise {
        Some(_) => cfg.advertised()?,
        None => nfs_addr,
    };
    let stop = Stop::new();
    let mut threads = transport::reactor::start(ds.clone(), listeners, stop.clone())?;
    let started = (|| {
        threads.push(mds_link::start_server(ds.clone(), control, stop.clone())?);
        let reg = mds_link::Registration { ds: ds.clone(), advertised, control: control_addr };
        threads.extend(reg.start(stop.clone())?);
        Ok::<(), String>(())
    })();
    if let Err(e) = started {
        stop.stop();
        threads.into_iter().for_each(|t| drop(t.join()));
        return Err(e);
    }
    log::info!(
        "ds {:?} serving NFS on {nfs_addr} (clients use {advertised}) with {} reactor(s), control on {control_addr}, \
         registering with {}; objects {}, O_DIRECT {}",
        cfg.id,
        cfg.reactors,
        cfg.mds_control.join(", "),
        match ds.store.volume() {
            Some(v) => format!("on volume {}", v.path().display()),
            None => format!("in {}", cfg.data_dir.join("objects").display()),
        },
        if ds.store.uses_o_direct() { "on" } else { "off" }
    );
    Ok(DsHandle { ds, nfs_addr, control_addr, stop, threads })
}

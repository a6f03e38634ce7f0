//! Data server registry and the MDS control listener (PNFSCTL_MDS_PROGRAM).
//!
//! REGISTER stores ds_id -> client addresses, control address and capacity,
//! and gives the DS a stable small index (its bit in device IDs). The list
//! is persisted (`S` ds_index records) so device IDs and layouts keep
//! meaning the same servers across MDS restarts. A DS counts as alive only
//! once it registered with this MDS instance and while its heartbeats keep
//! coming (mds.ds_dead_after_ms); HEARTBEAT from a DS not registered since
//! this MDS started answers CTL_UNKNOWN_DS so it registers again (and gets
//! its allowed stateids pushed again).
//!
//! Every call must carry the cluster key's tag (pnfs_protocol::control_auth);
//! anything else is answered AUTH_ERROR and the connection closed, so no
//! one without the key registers a DS or moves a known DS's addresses.
//!
//! Admin states (`AdminState`, set by pnfsctl through the admin program
//! this listener also serves, `crate::admin`): active, draining, removed,
//! lost. Persisted in the `S` record after the fields above (a record
//! without it is active), kept across REGISTER, and read back from the
//! store every heartbeat interval (`Registry::refresh_admin_states`), so
//! every node of an MDS cluster follows a change made on any of them.
//! Only active data servers get new files (`Registry::placeable`).

use super::{Pnfs, MAX_DATA_SERVERS};
use crate::keyspace::{self, DATA_SERVER};
use pnfs_kv::{transact, KvError, KvStore};
use pnfs_protocol::control_auth::Verified;
use pnfs_protocol::mds_ds::uaddr;
use pnfs_protocol::rpc::{self, AcceptStat, Checked};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, XdrDecode, XdrEncode};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use pnfs_transport::tcp::{self, TcpLimits};
use pnfs_transport::control::{self, AuthenticatedCalls};
use pnfs_transport::{CallSource, Connection, Ended, ReplyBatch, ReplySink};
use std::net::SocketAddr;
use tokio::net::TcpListener;

const MAX_CONTROL_RECORD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct DsInfo {
    pub index: u32,
    pub id: Vec<u8>,
    /// (netid, universal address) in the DS's preference order.
    pub addrs: Vec<(String, String)>,
    pub control_addr: String,
    pub capacity: u64,
    pub free: u64,
    /// Last REGISTER/HEARTBEAT in this MDS instance; None = not registered yet.
    pub last_seen: Option<Instant>,
    /// Set by an admin (pnfsctl); persisted.
    pub admin: AdminState,
}

/// What an admin decided about a data server (`pnfsctl ds ...`). Only
/// [`AdminState::Active`] ones get new files; the others keep serving the
/// objects they hold while they are alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminState {
    /// In service (the state of every data server that registers).
    #[default]
    Active,
    /// Gets no new files; its objects are to be moved away, then it can be removed.
    Draining,
    /// Out of service for good; refused while it held objects. Keeps its
    /// index: device IDs clients cached may name it.
    Removed,
    /// Declared lost: its copies count as gone (resilver, EIO for files
    /// with no other copy) whether or not it answers.
    Lost,
}

impl AdminState {
    pub const ALL: [AdminState; 4] = [AdminState::Active, AdminState::Draining, AdminState::Removed, AdminState::Lost];

    fn code(self) -> u32 {
        match self {
            AdminState::Active => 0,
            AdminState::Draining => 1,
            AdminState::Removed => 2,
            AdminState::Lost => 3,
        }
    }

    fn from_code(c: u32) -> Option<AdminState> {
        AdminState::ALL.into_iter().find(|s| s.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Draining => "draining",
            AdminState::Removed => "removed",
            AdminState::Lost => "lost",
        }
    }
}

impl DsInfo {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.put_u32(self.index);
        let _ = e.put_opaque(&self.id, DS_ID_MAX);
        e.put_u32(self.addrs.len() as u32);
        for (n, a) in &self.addrs {
            let _ = e.put_opaque(n.as_bytes(), u32::MAX);
            let _ = e.put_opaque(a.as_bytes(), u32::MAX);
        }
        let _ = e.put_opaque(self.control_addr.as_bytes(), CTL_ADDR_MAX);
        e.put_u64(self.capacity);
        e.put_u64(self.free);
        e.put_u32(self.admin.code());
        e.into_inner()
    }

    fn decode(b: &[u8]) -> Option<DsInfo> {
        let mut d = Decoder::new(b);
        let index = d.get_u32().ok()?;
        let id = d.get_opaque(DS_ID_MAX).ok()?.to_vec();
        let n = d.get_count(DS_MAX_ADDRS).ok()?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let netid = String::from_utf8(d.get_opaque(u32::MAX).ok()?.to_vec()).ok()?;
            let addr = String::from_utf8(d.get_opaque(u32::MAX).ok()?.to_vec()).ok()?;
            addrs.push((netid, addr));
        }
        let control_addr = String::from_utf8(d.get_opaque(CTL_ADDR_MAX).ok()?.to_vec()).ok()?;
        let capacity = d.get_u64().ok()?;
        let free = d.get_u64().ok()?;
        // Records written before admin states existed end here: active.
        let admin = if d.remaining() == 0 { AdminState::Active } else { AdminState::from_code(d.get_u32().ok()?)? };
        Some(DsInfo { index, id, addrs, control_addr, capacity, free, last_seen: None, admin })
    }
}

fn ds_key(index: u32) -> Vec<u8> {
    keyspace::with_u64(DATA_SERVER, index as u64)
}

pub struct Registry {
    store: Arc<dyn KvStore>,
    ds: Mutex<BTreeMap<u32, DsInfo>>,
    dead_after: Duration,
    /// This MDS's control epoch (REGISTER replies name it).
    epoch: std::sync::atomic::AtomicU64,
    /// Bumped by every admin state change made here, so a refresh that
    /// read the store before it does not undo it.
    admin_changes: std::sync::atomic::AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    Invalid(String),
    Full,
    Store(String),
}

impl From<KvError> for RegisterError {
    fn from(e: KvError) -> Self {
        RegisterError::Store(e.to_string())
    }
}

impl Registry {
    pub fn load(store: Arc<dyn KvStore>, dead_after: Duration, epoch: u64) -> Result<Registry, KvError> {
        let rows = transact(&*store, 16, |t| t.scan_prefix(&[DATA_SERVER], usize::MAX))?;
        let mut ds = BTreeMap::new();
        for (_, v) in rows {
            match DsInfo::decode(&v) {
                Some(i) => {
                    ds.insert(i.index, i);
                }
                None => log::warn!("ignoring a corrupt data server record"),
            }
        }
        if !ds.is_empty() {
            log::info!("{} data server(s) known from before; waiting for them to register", ds.len());
        }
        Ok(Registry { store, ds: Mutex::new(ds), dead_after, epoch: epoch.into(), admin_changes: 0.into() })
    }

    /// Registers (or re-registers) a DS; returns its index and whether it
    /// had registered with this MDS instance before.
    pub fn register(&self, a: &ctl_register_args) -> Result<(u32, bool), RegisterError> {
        if a.cra_ds_id.is_empty() {
            return Err(RegisterError::Invalid("empty ds_id".into()));
        }
        let control_addr = String::from_utf8(a.cra_control_addr.to_vec())
            .map_err(|_| RegisterError::Invalid("control address is not UTF-8".into()))?;
        if control_addr.is_empty() {
            return Err(RegisterError::Invalid("empty control address".into()));
        }
        let mut addrs = Vec::new();
        for na in &a.cra_client_addrs {
            let (Ok(netid), Ok(addr)) = (String::from_utf8(na.na_r_netid.to_vec()), String::from_utf8(na.na_r_addr.to_vec()))
            else {
                return Err(RegisterError::Invalid("client address is not UTF-8".into()));
            };
            if netid.starts_with("tcp") {
                uaddr::parse_netaddr(&netid, &addr).map_err(|e| RegisterError::Invalid(format!("{netid} address {addr:?}: {e}")))?;
            }
            addrs.push((netid, addr));
        }
        if addrs.is_empty() {
            return Err(RegisterError::Invalid("no client addresses".into()));
        }
        // The index comes from the store, in one transaction: in an MDS
        // cluster every node registers every DS, so two nodes meeting two
        // new data servers at once must not give both the same index.
        let mut info = DsInfo {
            index: 0,
            id: a.cra_ds_id.to_vec(),
            addrs,
            control_addr,
            capacity: a.cra_capacity_bytes,
            free: a.cra_free_bytes,
            last_seen: Some(Instant::now()),
            admin: AdminState::Active,
        };
        let stored = transact(&*self.store, 16, |t| {
            let known: Vec<DsInfo> = t.scan_prefix(&[DATA_SERVER], usize::MAX)?.iter().filter_map(|(_, v)| DsInfo::decode(v)).collect();
            let stored = known.iter().find(|d| d.id == info.id).cloned();
            // Registering never undoes an admin's decision.
            info.admin = stored.as_ref().map_or(AdminState::Active, |d| d.admin);
            info.index = match &stored {
                Some(d) => d.index,
                None => (0..MAX_DATA_SERVERS as u32).find(|i| !known.iter().any(|d| d.index == *i)).ok_or(RegisterError::Full)?,
            };
            if stored.as_ref().map(|o| (&o.addrs, &o.control_addr)) != Some((&info.addrs, &info.control_addr)) {
                t.put(&ds_key(info.index), &info.encode())?;
            }
            Ok::<_, RegisterError>(stored)
        })?;
        let index = info.index;
        if let Some(o) = stored.filter(|o| o.addrs != info.addrs || o.control_addr != info.control_addr) {
            // Device IDs name this DS; clients may have cached the old addresses.
            log::warn!("data server {index} registered with new addresses {:?} (was {:?})", info.addrs, o.addrs);
        }
        let mut ds = self.ds.lock().unwrap_or_else(|p| p.into_inner());
        let again = ds.get(&index).is_some_and(|o| o.id == info.id && o.last_seen.is_some());
        ds.insert(index, info);
        Ok((index, again))
    }

    /// Records a heartbeat; false when the DS has not registered with this instance.
    pub fn heartbeat(&self, id: &[u8], free: u64) -> bool {
        let mut ds = self.ds.lock().unwrap_or_else(|p| p.into_inner());
        match ds.values_mut().find(|d| d.id == id && d.last_seen.is_some()) {
            Some(d) => {
                d.last_seen = Some(Instant::now());
                d.free = free;
                true
            }
            None => false,
        }
    }

    fn is_alive(&self, d: &DsInfo) -> bool {
        d.last_seen.is_some_and(|t| t.elapsed() < self.dead_after)
    }

    pub fn alive(&self, index: u32) -> bool {
        self.ds.lock().unwrap_or_else(|p| p.into_inner()).get(&index).is_some_and(|d| self.is_alive(d))
    }

    /// Counts data server `index` dead from now on, without waiting for
    /// heartbeats to stop (a client reported it failing and it did not
    /// answer a check: `health`); its next heartbeat makes it alive again.
    /// False when it was not alive.
    pub fn mark_dead(&self, index: u32) -> bool {
        let mut ds = self.ds.lock().unwrap_or_else(|p| p.into_inner());
        match ds.get_mut(&index) {
            Some(d) if self.is_alive(d) => {
                // Seen last one dead_after ago: dead since now. (No such
                // instant this early after boot: unregistered, so its next
                // heartbeat makes it register again.)
                d.last_seen = Instant::now().checked_sub(self.dead_after);
                true
            }
            _ => false,
        }
    }

    /// Live data servers, by index.
    pub fn live(&self) -> Vec<DsInfo> {
        self.ds.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|d| self.is_alive(d)).cloned().collect()
    }

    /// Every data server known (registered with this instance or before).
    pub fn known(&self) -> Vec<DsInfo> {
        self.ds.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn get(&self, index: u32) -> Option<DsInfo> {
        self.ds.lock().unwrap_or_else(|p| p.into_inner()).get(&index).cloned()
    }

    /// Live data servers that take new files (admin state active), by index.
    pub fn placeable(&self) -> Vec<DsInfo> {
        let ds = self.ds.lock().unwrap_or_else(|p| p.into_inner());
        ds.values().filter(|d| d.admin == AdminState::Active && self.is_alive(d)).cloned().collect()
    }

    /// The admin state of data server `index`; None when unknown.
    pub fn admin_state(&self, index: u32) -> Option<AdminState> {
        self.ds.lock().unwrap_or_else(|p| p.into_inner()).get(&index).map(|d| d.admin)
    }

    /// True when an admin declared data server `index` lost.
    pub fn declared_lost(&self, index: u32) -> bool {
        self.admin_state(index) == Some(AdminState::Lost)
    }

    /// Persists `state` for data server `index` (its `S` record), then
    /// applies it here; other nodes of a cluster follow within a refresh.
    /// Returns the state it had. The caller checks that the change makes
    /// sense (`crate::admin`).
    pub fn set_admin_state(&self, index: u32, state: AdminState) -> Result<AdminState, RegisterError> {
        let before = transact(&*self.store, 16, |t| {
            let raw = t.get(&ds_key(index))?.ok_or_else(|| RegisterError::Invalid(format!("no data server {index}")))?;
            let mut d = DsInfo::decode(&raw).ok_or_else(|| RegisterError::Store(format!("corrupt record of data server {index}")))?;
            let before = d.admin;
            if before != state {
                d.admin = state;
                t.put(&ds_key(index), &d.encode())?;
            }
            Ok::<_, RegisterError>(before)
        })?;
        let mut ds = self.ds.lock().unwrap_or_else(|p| p.into_inner());
        self.admin_changes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(d) = ds.get_mut(&index) {
            d.admin = state;
        }
        if before != state {
            log::info!("data server {index}: admin state {} -> {}", before.name(), state.name());
        }
        Ok(before)
    }

    /// Reads every data server's admin state back from the store (another
    /// node of a cluster may have changed it) and learns the data servers
    /// registered with other nodes only. Skips the update when an admin
    /// change was made here meanwhile (the next refresh has it).
    pub fn refresh_admin_states(&self) -> Result<(), KvError> {
        let seen = self.admin_changes.load(std::sync::atomic::Ordering::Acquire);
        let rows = transact(&*self.store, 16, |t| t.scan_prefix(&[DATA_SERVER], usize::MAX))?;
        let mut ds = self.ds.lock().unwrap_or_else(|p| p.into_inner());
        if self.admin_changes.load(std::sync::atomic::Ordering::Acquire) != seen {
            return Ok(());
        }
        for stored in rows.iter().filter_map(|(_, v)| DsInfo::decode(v)) {
            match ds.get_mut(&stored.index) {
                Some(d) if d.id == stored.id => {
                    if d.admin != stored.admin {
                        log::info!("data server {}: admin state {} (set on another node)", d.index, stored.admin.name());
                        d.admin = stored.admin;
                    }
                }
                Some(_) => {}
                None => {
                    ds.insert(stored.index, stored);
                }
            }
        }
        Ok(())
    }

    /// (total, free) bytes over the live data servers.
    pub fn capacity(&self) -> (u64, u64) {
        self.live().iter().fold((0, 0), |(t, f), d| (t + d.capacity, f + d.free))
    }

    /// This MDS's control epoch now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// See `Pnfs::use_epoch`.
    pub(super) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, std::sync::atomic::Ordering::Release)
    }

    pub fn heartbeat_ms(&self) -> u32 {
        (self.dead_after.as_millis() as u32 / 3).max(200)
    }
}

/// Control connections served at once, and from one address.
const MAX_CONTROL_CONNECTIONS: usize = 64;
const MAX_CONTROL_CONNECTIONS_PER_ADDRESS: usize = 16;
/// A control connection must send an authentic call this soon after it
/// opens, and is closed after this long without one.
const FIRST_CALL_DEADLINE: Duration = Duration::from_secs(10);
const CONTROL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Admin calls (PNFSCTL_ADMIN_PROGRAM) running at once on one listener:
/// they may scan the placement records or wait on data servers.
const MAX_ADMIN_CALLS_IN_FLIGHT: usize = 4;

/// The admin program served beside the control program (`crate::admin`):
/// one authenticated call record (`Verified::admin`) in, at most one reply
/// out (sealed with the admin keys). Runs on a blocking thread.
pub trait AdminProgram: Send + Sync {
    fn handle(&self, rec: &[u8], v: &Verified) -> Option<Vec<u8>>;
}

/// What one control listener serves: the control program, and the admin
/// program when the MDS gave one.
#[derive(Clone)]
struct Served {
    pnfs: Arc<Pnfs>,
    admin: Option<(Arc<dyn AdminProgram>, pnfs_protocol::control_auth::ControlKeys)>,
    admin_calls: Arc<tokio::sync::Semaphore>,
}

/// Serves the control program on a loopback listener of its own, on a
/// thread with its own runtime, for as long as the process lives; returns
/// the listener's address. For tests and tools that build a bare `Pnfs`
/// (no `Mds`, no runtime of their own).
pub fn serve_control_on_thread(pnfs: Arc<Pnfs>) -> std::io::Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    l.set_nonblocking(true)?;
    std::thread::Builder::new().name("control-listener".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        rt.block_on(async move {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    if let Err(e) = serve_control(pnfs, l).await {
                        log::error!("control listener {addr}: {e}");
                    }
                }
                Err(e) => log::error!("control listener {addr}: {e}"),
            }
        });
    })?;
    Ok(addr)
}

/// Accepts data server control connections until the listener fails. They
/// are served on a thread of their own with its own runtime, so no NFS
/// client load (busy workers, a full blocking pool) delays a REGISTER or a
/// heartbeat into a data server being declared dead.
pub async fn serve_control(pnfs: Arc<Pnfs>, listener: TcpListener) -> std::io::Result<()> {
    serve_control_with_admin(pnfs, listener, None).await
}

/// [`serve_control`], also serving `admin` (pnfsctl's calls, checked with
/// the admin keys derived from the cluster key).
pub async fn serve_control_with_admin(pnfs: Arc<Pnfs>, listener: TcpListener, admin: Option<Arc<dyn AdminProgram>>) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let admin = admin.map(|a| (a, pnfs_protocol::control_auth::ControlKeys::admin(&pnfs.cluster_key)));
    let served = Served { pnfs, admin, admin_calls: Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CALLS_IN_FLIGHT)) };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("mds-control".into()).spawn(move || {
        let r = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| rt.block_on(accept_control(served, listener)));
        let _ = done_tx.send(r);
    })?;
    done_rx.await.unwrap_or_else(|_| Err(std::io::Error::other("control thread ended")))
}

/// Reads the admin states back from the store every heartbeat interval
/// (a change made on another node of a cluster), off the control thread.
async fn follow_admin_states(pnfs: Arc<Pnfs>) {
    let every = Duration::from_millis(pnfs.registry.heartbeat_ms() as u64);
    loop {
        tokio::time::sleep(every).await;
        let p = pnfs.clone();
        match tokio::task::spawn_blocking(move || p.registry.refresh_admin_states()).await {
            Ok(Err(e)) => log::warn!("reading data server admin states: {e}"),
            Ok(Ok(())) => {}
            Err(_) => return,
        }
    }
}

async fn accept_control(served: Served, listener: std::net::TcpListener) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let pnfs = served.pnfs.clone();
    tokio::spawn(follow_admin_states(pnfs.clone()));
    let conns = Arc::new(tokio::sync::Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let per_addr: Arc<Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::default();
    loop {
        let (sock, peer) = listener.accept().await?;
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            log::warn!("refusing control connection from {peer}: {MAX_CONTROL_CONNECTIONS} open");
            continue;
        };
        {
            let mut n = per_addr.lock().unwrap_or_else(|p| p.into_inner());
            let c = n.entry(peer.ip()).or_insert(0);
            if *c >= MAX_CONTROL_CONNECTIONS_PER_ADDRESS {
                log::warn!("refusing control connection from {peer}: {MAX_CONTROL_CONNECTIONS_PER_ADDRESS} open from that address");
                continue;
            }
            *c += 1;
        }
        let (p, per_addr) = (served.clone(), per_addr.clone());
        let c = tcp::accept(sock, &control_limits());
        tokio::spawn(async move {
            if let Err(e) = control_connection(p, c, peer).await {
                log::debug!("control connection {peer}: {e}");
            }
            let mut n = per_addr.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = n.get_mut(&peer.ip()) {
                *c -= 1;
                if *c == 0 {
                    n.remove(&peer.ip());
                }
            }
            drop(permit);
        });
    }
}

/// The shared transport's limits for a control connection: an
/// unauthenticated peer gets [`FIRST_CALL_DEADLINE`] (raised to
/// [`CONTROL_IDLE_TIMEOUT`] by its first authentic call).
fn control_limits() -> TcpLimits {
    TcpLimits {
        max_record: MAX_CONTROL_RECORD,
        idle: FIRST_CALL_DEADLINE,
        record_timeout: FIRST_CALL_DEADLINE,
        reply_budget_bytes: 16 * MAX_CONTROL_RECORD,
        reply_budget_count: 64,
        write_stall: CONTROL_IDLE_TIMEOUT,
    }
}

/// One data server's control connection, on any transport. Calls are
/// quick (a heartbeat is a map update; REGISTER writes one record when a
/// DS is new or moved): they run right here and the replies of calls that
/// arrived together go out in one write.
async fn control_connection<C: CallSource, S: ReplySink>(served: Served, c: Connection<C, S>, peer: SocketAddr) -> std::io::Result<()> {
    let Connection { calls, replies, writer } = c;
    let pnfs = &served.pnfs;
    let mut calls = AuthenticatedCalls::new(calls, pnfs.control_keys.clone(), CONTROL_IDLE_TIMEOUT);
    if let Some((_, keys)) = &served.admin {
        calls = calls.with_admin(keys.clone());
    }
    let mut out = ReplyBatch::default();
    let ended = loop {
        let (rec, verified) = match calls.next(&pnfs.control_recent, &replies).await {
            Ok(c) => c,
            Err(e) => {
                // Answers to the authentic calls before it still go out.
                let _ = replies.write_now(&mut out).await;
                break e;
            }
        };
        let reply = match &served.admin {
            Some((admin, _)) if verified.admin => {
                // Off this thread: heartbeats on other connections go on.
                let Ok(_permit) = served.admin_calls.clone().acquire_owned().await else { break Ended::Closed };
                let admin = admin.clone();
                // A handler that panicked answers nothing: close rather than leave the caller waiting.
                let Ok(reply) = tokio::task::spawn_blocking(move || admin.handle(&rec, &verified)).await else { break Ended::Closed };
                reply
            }
            _ => handle_control(pnfs, &rec, &verified),
        };
        if let Some(r) = reply {
            out.push(r);
        }
        if !calls.has_pending() {
            if let Err(e) = replies.write_now(&mut out).await {
                break e;
            }
        }
    };
    if let Some(why) = control::finish(calls, replies, writer, ended, peer, "64 KiB for control calls").await? {
        crate::metrics::metrics().control_refused.inc();
        // The caller pays: it was told why, and loses the connection.
        log::warn!("refusing control call from {peer}: {why}");
    }
    Ok(())
}

fn encode_reply<T: XdrEncode>(pnfs: &Pnfs, v: &Verified, res: &T) -> Vec<u8> {
    let mut e = Encoder::new();
    v.begin_reply(&mut e);
    let _ = res.encode(&mut e);
    let mut r = e.into_inner();
    v.seal_reply(&pnfs.control_keys, &mut r);
    r
}

/// The MDS control program's call header (the sealed credential was
/// verified by `CallChecker` before).
const CONTROL_CALLS: rpc::CallPolicy = rpc::CallPolicy {
    prog: PNFSCTL_MDS_PROGRAM,
    vers: PNFSCTL_VERSION,
    procs: &[rpc::PROC_NULL, CTL_PROC_REGISTER, CTL_PROC_HEARTBEAT],
    flavors: &[pnfs_protocol::control_auth::AUTH_PNFS_CTL],
};

/// One authenticated control RPC record in, at most one reply out.
pub fn handle_control(pnfs: &Arc<Pnfs>, rec: &[u8], v: &Verified) -> Option<Vec<u8>> {
    let (header, args) = match CONTROL_CALLS.check(rec) {
        Checked::Call { header, args } => (header, args),
        Checked::Reply { .. } | Checked::Unreadable => return None,
        Checked::Refused(reply) => return Some(reply),
    };
    let xid = header.xid;
    let garbage = || Some(rpc::accepted_reply(xid, AcceptStat::GarbageArgs));
    match header.proc_ {
        rpc::PROC_NULL => Some(encode_reply(pnfs, v, &())),
        CTL_PROC_REGISTER => {
            let Ok(a) = ctl_register_args::decode(&mut Decoder::new(args)) else { return garbage() };
            let reg = &pnfs.registry;
            let status = match reg.register(&a) {
                Ok((index, again)) => {
                    log::info!(
                        "data server {index} ({}) registered: clients use {:?}, control at {}",
                        String::from_utf8_lossy(&a.cra_ds_id),
                        reg.get(index).map(|d| d.addrs).unwrap_or_default(),
                        String::from_utf8_lossy(&a.cra_control_addr)
                    );
                    if let Some(d) = reg.get(index) {
                        pnfs.ctl.forget(&d.control_addr);
                    }
                    // Re-push its allowed stateids once the reply is out.
                    let _ = again;
                    pnfs.request_repush(index);
                    ctl_status::CTL_OK
                }
                Err(RegisterError::Invalid(why)) => {
                    log::warn!("refusing data server registration: {why}");
                    ctl_status::CTL_INVAL
                }
                Err(RegisterError::Full) => {
                    log::warn!("refusing data server registration: {MAX_DATA_SERVERS} data servers already known");
                    ctl_status::CTL_NOSPC
                }
                Err(RegisterError::Store(e)) => {
                    log::error!("persisting a data server registration: {e}");
                    ctl_status::CTL_IO
                }
            };
            let res = ctl_register_res { crr_status: status, crr_mds_epoch: reg.epoch(), crr_heartbeat_ms: reg.heartbeat_ms() };
            Some(encode_reply(pnfs, v, &res))
        }
        CTL_PROC_HEARTBEAT => {
            let Ok(a) = ctl_heartbeat_args::decode(&mut Decoder::new(args)) else { return garbage() };
            let status = if pnfs.registry.heartbeat(&a.cha_ds_id, a.cha_free_bytes) {
                ctl_status::CTL_OK
            } else {
                ctl_status::CTL_UNKNOWN_DS
            };
            Some(encode_reply(pnfs, v, &ctl_heartbeat_res { chr_status: status }))
        }
        _ => Some(rpc::accepted_reply(xid, AcceptStat::ProcUnavail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_kv::MemStore;

    fn args<'a>(id: &'a str, addr: &'a str) -> ctl_register_args<'a> {
        ctl_register_args {
            cra_ds_id: id.as_bytes().into(),
            cra_client_addrs: vec![netaddr4 { na_r_netid: "tcp".into(), na_r_addr: addr.into() }],
            cra_control_addr: "127.0.0.1:1".into(),
            cra_capacity_bytes: 100,
            cra_free_bytes: 50,
        }
    }

    #[test]
    fn indices_are_stable_and_persisted() {
        let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
        let r = Registry::load(store.clone(), Duration::from_secs(10), 1).unwrap();
        assert_eq!(r.register(&args("a", "10.0.0.1.8.1")).unwrap(), (0, false));
        assert_eq!(r.register(&args("b", "10.0.0.2.8.1")).unwrap(), (1, false));
        assert_eq!(r.register(&args("a", "10.0.0.1.8.1")).unwrap(), (0, true));
        assert!(r.register(&args("c", "10.0.0.3")).is_err());
        assert!(r.heartbeat(b"b", 7));
        assert!(!r.heartbeat(b"zz", 7));
        assert_eq!(r.live().len(), 2);
        // A restarted MDS knows them but waits for them to register again.
        let r2 = Registry::load(store, Duration::from_secs(10), 2).unwrap();
        assert_eq!(r2.get(1).unwrap().addrs, vec![("tcp".to_string(), "10.0.0.2.8.1".to_string())]);
        assert!(r2.live().is_empty());
        assert!(!r2.heartbeat(b"b", 7));
        assert_eq!(r2.register(&args("b", "10.0.0.2.8.1")).unwrap(), (1, false));
        assert!(r2.alive(1));
    }

    #[test]
    fn cluster_nodes_agree_on_indices() {
        // Two MDS nodes on one store, each meeting a different new DS first:
        // the indices come from the store, so they never collide.
        let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
        let n1 = Registry::load(store.clone(), Duration::from_secs(10), 1 << 32 | 1).unwrap();
        let n2 = Registry::load(store.clone(), Duration::from_secs(10), 2 << 32 | 2).unwrap();
        assert_eq!(n1.register(&args("a", "10.0.0.1.8.1")).unwrap(), (0, false));
        assert_eq!(n2.register(&args("b", "10.0.0.2.8.1")).unwrap(), (1, false));
        assert_eq!(n2.register(&args("a", "10.0.0.1.8.1")).unwrap(), (0, false));
        assert_eq!(n1.register(&args("b", "10.0.0.2.8.1")).unwrap(), (1, false));
        assert_eq!(n1.register(&args("b", "10.0.0.2.8.1")).unwrap(), (1, true));
        assert_eq!(n2.get(0).unwrap().id, b"a");
        assert_eq!(n1.get(1).unwrap().id, b"b");
        assert_eq!(Registry::load(store, Duration::from_secs(10), 3).unwrap().known().len(), 2);
    }

    #[test]
    fn admin_states_persist_survive_register_and_reach_other_nodes() {
        let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
        let n1 = Registry::load(store.clone(), Duration::from_secs(10), 1 << 32 | 1).unwrap();
        let n2 = Registry::load(store.clone(), Duration::from_secs(10), 2 << 32 | 1).unwrap();
        for r in [&n1, &n2] {
            r.register(&args("a", "10.0.0.1.8.1")).unwrap();
            r.register(&args("b", "10.0.0.2.8.1")).unwrap();
        }
        assert_eq!(n1.admin_state(0), Some(AdminState::Active));
        assert_eq!(n1.admin_state(7), None);
        assert_eq!(n1.set_admin_state(1, AdminState::Draining).unwrap(), AdminState::Active);
        assert_eq!(n1.placeable().iter().map(|d| d.index).collect::<Vec<_>>(), [0]);
        assert_eq!(n1.live().len(), 2, "a draining data server is still alive");
        // A REGISTER (restart, new address) keeps the admin's decision.
        n1.register(&args("b", "10.0.0.9.8.1")).unwrap();
        assert_eq!(n1.admin_state(1), Some(AdminState::Draining));
        // The other node follows at its next refresh; a restarted one at load.
        assert_eq!(n2.admin_state(1), Some(AdminState::Active));
        n2.refresh_admin_states().unwrap();
        assert_eq!(n2.admin_state(1), Some(AdminState::Draining));
        assert_eq!(n2.placeable().len(), 1);
        n2.set_admin_state(0, AdminState::Lost).unwrap();
        assert!(n2.declared_lost(0));
        let n3 = Registry::load(store.clone(), Duration::from_secs(10), 3).unwrap();
        assert_eq!((n3.admin_state(0), n3.admin_state(1)), (Some(AdminState::Lost), Some(AdminState::Draining)));
        assert!(n1.set_admin_state(9, AdminState::Removed).is_err());
    }

    #[test]
    fn records_written_before_admin_states_decode_as_active() {
        let mut d = DsInfo {
            index: 3,
            id: b"x".to_vec(),
            addrs: vec![("tcp".into(), "10.0.0.1.8.1".into())],
            control_addr: "10.0.0.1:20491".into(),
            capacity: 9,
            free: 4,
            last_seen: None,
            admin: AdminState::Removed,
        };
        let new = d.encode();
        assert_eq!(DsInfo::decode(&new).unwrap(), d);
        // The old format: the same fields without the trailing state.
        let old = &new[..new.len() - 4];
        d.admin = AdminState::Active;
        assert_eq!(DsInfo::decode(old).unwrap(), d);
        // An unknown state is a corrupt record, not a silent "active".
        let mut bad = new.clone();
        let n = bad.len();
        bad[n - 1] = 9;
        assert!(DsInfo::decode(&bad).is_none());
    }
}

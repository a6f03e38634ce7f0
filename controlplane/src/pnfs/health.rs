//! Data server health beyond heartbeats (issue 11):
//!
//! - lost data servers: one dead (no heartbeat for mds.ds_dead_after_ms, or
//!   marked dead after a failed check) for mds.ds_lost_after_ms more is
//!   lost ([`Pnfs::ds_lost`], [`Pnfs::lost_data_servers`]). I/O through the
//!   MDS and LAYOUTGET of a file with data on it and no other copy (every
//!   striped file) then answer NFS4ERR_IO, which clients turn into EIO,
//!   instead of NFS4ERR_DELAY, which they retry forever (a hung `cat`);
//!   before that, DELAY as ever, so a restarting DS comes back unnoticed. A
//!   DS that comes back after being lost serves its files again.
//! - checks: a client's LAYOUTERROR naming a device starts a control call
//!   (PROC_NULL, mds.ds_check_timeout_ms) to each of its data servers, on a
//!   thread of its own (never the COMPOUND's); one that does not answer is
//!   marked dead at once. One check per DS in flight and none again within
//!   [`CHECK_INTERVAL`] of the last, so a flood of LAYOUTERRORs costs a few
//!   control calls, not one each.
//! - the monitor thread: a DS turning dead gets the layouts that name it
//!   recalled (CB_LAYOUTRECALL through the MDS, [`LayoutHolders`]); new
//!   files are placed on live ones only (placement uses `Registry::live`).
//!   A DS turning lost (or back) recounts the files with data on a lost DS
//!   (pnfs_mds_files_unavailable) and logs them by inode number. Files have
//!   no parent link in the namespace, so paths are not logged: naming one
//!   would take a scan of every directory.
//! - LAYOUTSTATS: per data server totals of what clients report having
//!   done there (`pnfs_mds_layoutstats_*{ds}`).
//!
//! Mirrors: a mirror-aware caller asks [`Pnfs::lost_data_servers`] or
//! [`Pnfs::ds_lost`] and skips those copies; [`Pnfs::lost_io`] is the error
//! for data with no copy left. Admin states (declared lost, draining) are
//! the registry's; this file is the time- and check-based part.

use super::placement::Placement;
use super::{Pnfs, StripeSet, MAX_DATA_SERVERS, MAX_TXN_RETRIES};
use crate::keyspace::STRIPE_SET;
use pnfs_kv::transact;
use pnfs_protocol::mds_ds::deviceid;
use pnfs_protocol::rpc;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, XdrDecode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// A data server checked lately is not checked again sooner than this
/// (whatever clients report meanwhile).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the monitor looks at the registry when nothing wakes it.
const MONITOR_PERIOD: Duration = Duration::from_millis(500);
/// Inode numbers a "lost" log line names (the metric counts them all).
const LOGGED_INODES: usize = 32;
/// Lines per second about I/O refused for lost data (the metric counts all).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// LAYOUTSTATS report streams (client, file, data server) whose last
/// figures are kept, to turn the cumulative figures clients send into
/// increments. Past it, an arbitrary stream is forgotten (its next report
/// then counts from zero).
pub const MAX_STATS_STREAMS: usize = 4096;
/// Device errors of one LAYOUTERROR acted on (the rest are ignored; the
/// decoder already bounded the list by the request's size).
pub const MAX_ERRORS_PER_REPORT: usize = 64;

/// The MDS as seen from here: which files have layouts out, and a way to
/// recall them (implemented by `Mds`; `pnfs` knows nothing more of it).
pub trait LayoutHolders: Send + Sync {
    /// Inodes some client holds a layout of.
    fn files_with_layouts(&self) -> Vec<u64>;
    /// Recalls every client's layout of `ino`.
    fn recall_layouts(&self, ino: u64, why: &'static str);
}

impl LayoutHolders for crate::mds::Mds {
    fn files_with_layouts(&self) -> Vec<u64> {
        self.state().layout_inodes()
    }

    fn recall_layouts(&self, ino: u64, why: &'static str) {
        self.recall_layouts_for(ino, None, why)
    }
}

/// The I/O error for data whose only copy is on a lost data server:
/// `mds::io_err` answers NFS4ERR_IO for it without logging (it was logged,
/// rate-limited, where it was raised).
#[derive(Debug)]
pub struct LostData {
    pub ino: u64,
    pub ds: u32,
}

impl std::fmt::Display for LostData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inode {}: its data on data server {} is lost", self.ino, self.ds)
    }
}

impl std::error::Error for LostData {}

/// True for an error made by [`Pnfs::lost_io`].
pub fn is_lost_data(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<LostData>())
}

#[derive(Clone, Copy, Default)]
struct CheckSlot {
    in_flight: bool,
    last_done: Option<Instant>,
}

/// Last cumulative figures of one LAYOUTSTATS stream.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
struct StatsFigures {
    read_ops: u64,
    read_bytes: u64,
    write_ops: u64,
    write_bytes: u64,
    not_delivered: u64,
}

impl StatsFigures {
    /// What `self` adds to `last`: the growth of each figure, or all of it
    /// when it went down (a new layout, a client that restarted its counts).
    fn since(&self, last: &StatsFigures) -> StatsFigures {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        StatsFigures {
            read_ops: d(self.read_ops, last.read_ops),
            read_bytes: d(self.read_bytes, last.read_bytes),
            write_ops: d(self.write_ops, last.write_ops),
            write_bytes: d(self.write_bytes, last.write_bytes),
            not_delivered: d(self.not_delivered, last.not_delivered),
        }
    }
}

/// Per-Pnfs health state (see the module doc).
pub struct Health {
    started: Instant,
    checks: Mutex<[CheckSlot; MAX_DATA_SERVERS]>,
    holders: OnceLock<Weak<dyn LayoutHolders>>,
    /// Set to wake the monitor early (a DS was marked dead).
    wake: (Mutex<bool>, Condvar),
    /// (last line logged, errors not logged since).
    error_log: Mutex<(Option<Instant>, u64)>,
    /// (client, inode, DS) -> last figures reported.
    streams: Mutex<HashMap<(u64, u64, u32), StatsFigures>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            started: Instant::now(),
            checks: Mutex::new([CheckSlot::default(); MAX_DATA_SERVERS]),
            holders: OnceLock::new(),
            wake: (Mutex::new(false), Condvar::new()),
            error_log: Mutex::new((None, 0)),
            streams: Mutex::new(HashMap::new()),
        }
    }

    fn wake_monitor(&self) {
        *self.wake.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.1.notify_one();
    }

    fn wait(&self, d: Duration) {
        let mut woken = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = self.wake.1.wait_timeout(woken, d).unwrap_or_else(|p| p.into_inner()).0;
        }
        *woken = false;
    }
}

/// Starts the monitor thread of `p` (it ends when `p` is dropped).
pub(super) fn start_monitor(p: &Arc<Pnfs>) {
    let weak = Arc::downgrade(p);
    if let Err(e) = std::thread::Builder::new().name("ds-health".into()).spawn(move || monitor(weak)) {
        log::error!("starting the data server health monitor: {e}; layouts naming a dead data server are not recalled");
    }
}

/// A data server as the monitor last saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Condition {
    Alive,
    Dead,
    Lost,
}

fn monitor(weak: Weak<Pnfs>) {
    let mut seen: HashMap<u32, Condition> = HashMap::new();
    loop {
        let Some(p) = weak.upgrade() else { return };
        p.health_tick(&mut seen);
        p.health.wait(MONITOR_PERIOD);
    }
}

impl Pnfs {
    /// Lets the monitor recall layouts through the MDS (set once, at start).
    pub fn watch_layouts(&self, holders: Weak<dyn LayoutHolders>) {
        let _ = self.health.holders.set(holders);
    }

    /// How long data server `index` has been dead; None while alive. One
    /// not registered since this MDS started counts as dead since then.
    pub fn ds_dead_for(&self, index: u32) -> Option<Duration> {
        if self.registry.alive(index) {
            return None;
        }
        let last_seen = self.registry.get(index).and_then(|d| d.last_seen);
        Some(match last_seen {
            Some(t) => t.elapsed().saturating_sub(self.cfg.dead_after),
            None => self.health.started.elapsed(),
        })
    }

    /// True when data server `index` has been dead longer than
    /// mds.ds_lost_after_ms: data with no other copy there is unavailable.
    /// Or when an admin declared it lost (`pnfsctl ds declare-lost`).
    pub fn ds_lost(&self, index: u32) -> bool {
        self.registry.declared_lost(index) || self.cfg.lost_after.is_some_and(|lost| self.ds_dead_for(index).is_some_and(|d| d >= lost))
    }

    /// The known data servers that are lost ([`Self::ds_lost`]), ascending.
    pub fn lost_data_servers(&self) -> Vec<u32> {
        self.registry.known().iter().map(|d| d.index).filter(|&i| self.ds_lost(i)).collect()
    }

    /// Ok when data server `ds` can serve `ino`'s data now; else the error
    /// the MDS answers: NFS4ERR_IO ([`Self::lost_io`]) when it is lost,
    /// else one that `mds::io_err` answers NFS4ERR_DELAY (it may come back).
    pub fn ds_usable(&self, ino: u64, ds: u32) -> io::Result<()> {
        if self.ds_lost(ds) {
            Err(self.lost_io(ino, ds))
        } else if self.registry.alive(ds) {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::NotConnected, format!("data server {ds} is not available")))
        }
    }

    /// The error for I/O on `ino` whose only copy is on lost data server
    /// `ds`: counted, and logged at most once a second.
    pub fn lost_io(&self, ino: u64, ds: u32) -> io::Error {
        health_metrics().lost_data_errors.inc();
        let mut log = self.health.error_log.lock().unwrap_or_else(|p| p.into_inner());
        if log.0.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
            let dead = self.ds_dead_for(ds).unwrap_or_default().as_secs();
            let more = match log.1 {
                0 => String::new(),
                n => format!(" ({n} more such error(s) since the last line)"),
            };
            log::warn!(
                "inode {ino}: its data on data server {ds} is unavailable (dead for {dead} s, lost after mds.ds_lost_after_ms) \
                 and has no other copy: answering NFS4ERR_IO{more}. Bring the data server back with its data to serve it again"
            );
            *log = (Some(Instant::now()), 0);
        } else {
            log.1 += 1;
        }
        io::Error::other(LostData { ino, ds })
    }

    /// LAYOUTGET's answer for a file `set` of which has a data server that
    /// is not alive: NFS4ERR_IO when one is lost, else LAYOUTUNAVAILABLE
    /// (the client goes through the MDS, which answers DELAY meanwhile).
    pub fn layout_unavailable(&self, ino: u64, set: &StripeSet) -> nfsstat4 {
        match set.ds.iter().find(|&&d| self.ds_lost(d)) {
            Some(&d) => {
                self.lost_io(ino, d);
                nfsstat4::NFS4ERR_IO
            }
            None => nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE,
        }
    }

    /// The data servers a device ID names (files layout: the stripe set's).
    pub fn device_data_servers(&self, id: &deviceid4) -> Option<Vec<u32>> {
        deviceid::decode(id)
    }

    /// A client reported `status` from `op` on device `id` while doing I/O
    /// on `ino` (LAYOUTERROR): its data servers are checked soon.
    pub fn layout_error(self: &Arc<Self>, ino: u64, id: &deviceid4, status: nfsstat4, op: nfs_opnum4) {
        let m = health_metrics();
        m.layout_errors.inc();
        let Some(dses) = self.device_data_servers(id) else {
            log::debug!("LAYOUTERROR for inode {ino} names device {id:02x?}, not one of ours");
            return;
        };
        log::info!("a client reported {status:?} from {op:?} on data server(s) {dses:?} (inode {ino}): checking them");
        for ds in dses {
            self.check_soon(ds, status, op);
        }
    }

    /// Starts a check of `ds` unless one is in flight, one finished within
    /// [`CHECK_INTERVAL`], or it is dead already.
    fn check_soon(self: &Arc<Self>, ds: u32, status: nfsstat4, op: nfs_opnum4) {
        let m = health_metrics();
        if (ds as usize) >= MAX_DATA_SERVERS || !self.registry.alive(ds) {
            return;
        }
        {
            let mut slots = self.health.checks.lock().unwrap_or_else(|p| p.into_inner());
            let slot = &mut slots[ds as usize];
            if slot.in_flight || slot.last_done.is_some_and(|t| t.elapsed() < CHECK_INTERVAL) {
                m.checks_skipped.inc();
                return;
            }
            slot.in_flight = true;
        }
        let p = self.clone();
        let spawned = std::thread::Builder::new().name(format!("ds-check-{ds}")).spawn(move || {
            let answered = p.check_ds(ds);
            let mut slots = p.health.checks.lock().unwrap_or_else(|p| p.into_inner());
            slots[ds as usize] = CheckSlot { in_flight: false, last_done: Some(Instant::now()) };
            drop(slots);
            match answered {
                Ok(()) => {
                    m.checks.get_or_create(&OutcomeLabel { outcome: "alive".into() }).inc();
                    log::info!("data server {ds} answers its check: a client's {status:?} from {op:?} there was not the data server's death");
                }
                Err(e) => {
                    m.checks.get_or_create(&OutcomeLabel { outcome: "dead".into() }).inc();
                    if p.registry.mark_dead(ds) {
                        log::warn!(
                            "data server {ds} did not answer its check within mds.ds_check_timeout_ms ({e}) after a client reported \
                             {status:?} from {op:?} there: counted dead now; layouts naming it are recalled and new files go to the others"
                        );
                        p.health.wake_monitor();
                    }
                }
            }
        });
        if let Err(e) = spawned {
            log::warn!("checking data server {ds}: no thread ({e})");
            self.health.checks.lock().unwrap_or_else(|p| p.into_inner())[ds as usize].in_flight = false;
        }
    }

    /// A control NULL call to data server `ds` within mds.ds_check_timeout_ms.
    fn check_ds(&self, ds: u32) -> io::Result<()> {
        let info = self.registry.get(ds).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown data server"))?;
        let deadline = Instant::now() + self.cfg.check_timeout;
        self.ctl.call_until(&info.control_addr, PNFSCTL_DS_PROGRAM, rpc::PROC_NULL, &(), deadline).map(|_| ())
    }

    /// One look at every known data server: recalls the layouts naming one
    /// that turned dead; recounts the unavailable files when the set of
    /// lost ones changed.
    fn health_tick(&self, seen: &mut HashMap<u32, Condition>) {
        let mut newly_dead = Vec::new();
        let mut lost_changed = false;
        for d in self.registry.known() {
            let now = if self.registry.alive(d.index) {
                Condition::Alive
            } else if self.ds_lost(d.index) {
                Condition::Lost
            } else {
                Condition::Dead
            };
            let before = seen.insert(d.index, now);
            // (Never seen before and dead: an MDS start, or it died between
            // two looks; either way layouts naming it are of no use.)
            if matches!(before, None | Some(Condition::Alive)) && now != Condition::Alive {
                newly_dead.push(d.index);
            }
            if (before == Some(Condition::Lost)) != (now == Condition::Lost) {
                lost_changed = true;
                match now {
                    Condition::Lost => {
                        let dead = self.ds_dead_for(d.index).unwrap_or_default().as_secs();
                        log::warn!("data server {} ({}) is lost: dead for {dead} s (mds.ds_lost_after_ms)", d.index, d.control_addr)
                    }
                    _ if before.is_some() => log::info!("data server {} is back: its files are served again", d.index),
                    _ => {}
                }
            }
        }
        if !newly_dead.is_empty() {
            self.recall_naming(&newly_dead);
        }
        if lost_changed {
            self.count_unavailable(seen);
        }
    }

    /// Recalls every layout of a file with data on one of `dead`.
    fn recall_naming(&self, dead: &[u32]) {
        let Some(holders) = self.health.holders.get().and_then(Weak::upgrade) else { return };
        let mut recalled = 0;
        for ino in holders.files_with_layouts() {
            if let Ok(Some(p)) = self.placement(ino) {
                if p.data_servers().iter().any(|d| dead.contains(d)) {
                    holders.recall_layouts(ino, "data server dead");
                    recalled += 1;
                }
            }
        }
        health_metrics().layouts_recalled.inc_by(recalled);
        if recalled > 0 {
            log::warn!("data server(s) {dead:?} dead: recalled the layouts of {recalled} file(s) that name them");
        }
    }

    /// Counts (and logs, by inode) the files with data on a lost data server.
    fn count_unavailable(&self, seen: &HashMap<u32, Condition>) {
        let lost: BTreeSet<u32> = seen.iter().filter(|(_, c)| **c == Condition::Lost).map(|(i, _)| *i).collect();
        let m = health_metrics();
        m.ds_lost.set(lost.len() as i64);
        if lost.is_empty() {
            m.files_unavailable.set(0);
            return;
        }
        let rows = match transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.scan_prefix(&[STRIPE_SET], usize::MAX)) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("counting the files on lost data servers {lost:?}: metadata store: {e}");
                return;
            }
        };
        let mut inodes = Vec::new();
        let mut count = 0usize;
        for (k, v) in rows {
            let (Some(ino), Some(p)) = (pnfs_kv::key::decode_u64_be(&k[1..]), Placement::decode(&v)) else { continue };
            if p.data_lost(|d| lost.contains(&d)) {
                count += 1;
                if inodes.len() < LOGGED_INODES {
                    inodes.push(ino);
                }
            }
        }
        m.files_unavailable.set(count as i64);
        if count > 0 {
            let more = if count > inodes.len() { format!(" and {} more", count - inodes.len()) } else { String::new() };
            log::warn!(
                "{count} file(s) have data on lost data server(s) {lost:?} and no other copy: their I/O fails with EIO \
                 (NFS4ERR_IO) until the data server comes back. Inodes {inodes:?}{more}"
            );
        }
    }

    /// A client's LAYOUTSTATS for device `id`: what it did on `ino` there,
    /// cumulative per (client, file, device) as clients report it. Counted
    /// per data server when the device names one (flexfiles); reports for
    /// a device of several (files layout) only count as reports.
    pub fn layout_stats(&self, clientid: u64, ino: u64, id: &deviceid4, read: &io_info4, write: &io_info4, update: &layoutupdate4) {
        let m = health_metrics();
        m.layoutstats_reports.inc();
        let ds = match self.device_data_servers(id).as_deref() {
            Some([ds]) => *ds,
            _ => return,
        };
        let mut now = StatsFigures { read_ops: read.ii_count, read_bytes: read.ii_bytes, write_ops: write.ii_count, write_bytes: write.ii_bytes, not_delivered: 0 };
        if update.lou_type == layouttype4::LAYOUT4_FLEX_FILES {
            // A body that does not decode only loses this figure.
            if let Ok(ff) = ff_layoutupdate4::decode(&mut Decoder::new(&update.lou_body)) {
                now.not_delivered = ff.ffl_read.ffil_bytes_not_delivered.saturating_add(ff.ffl_write.ffil_bytes_not_delivered);
            }
        }
        let added = {
            let mut streams = self.health.streams.lock().unwrap_or_else(|p| p.into_inner());
            let key = (clientid, ino, ds);
            if !streams.contains_key(&key) && streams.len() >= MAX_STATS_STREAMS {
                if let Some(k) = streams.keys().next().copied() {
                    streams.remove(&k);
                }
            }
            let last = streams.insert(key, now).unwrap_or_default();
            now.since(&last)
        };
        let label = DsLabel { ds: ds.to_string() };
        m.stats_read_ops.get_or_create(&label).inc_by(added.read_ops);
        m.stats_read_bytes.get_or_create(&label).inc_by(added.read_bytes);
        m.stats_write_ops.get_or_create(&label).inc_by(added.write_ops);
        m.stats_write_bytes.get_or_create(&label).inc_by(added.write_bytes);
        m.stats_not_delivered.get_or_create(&label).inc_by(added.not_delivered);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// One data server by registry index (at most MAX_DATA_SERVERS label values).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DsLabel {
    ds: String,
}

/// Data server loss and layout report metrics, `pnfs_mds_*`.
pub struct HealthMetrics {
    pub ds_lost: Gauge,
    pub files_unavailable: Gauge,
    pub lost_data_errors: Counter,
    pub layout_errors: Counter,
    checks: Family<OutcomeLabel, Counter>,
    pub checks_skipped: Counter,
    pub layouts_recalled: Counter,
    pub layoutstats_reports: Counter,
    stats_read_ops: Family<DsLabel, Counter>,
    stats_read_bytes: Family<DsLabel, Counter>,
    stats_write_ops: Family<DsLabel, Counter>,
    stats_write_bytes: Family<DsLabel, Counter>,
    stats_not_delivered: Family<DsLabel, Counter>,
}

impl HealthMetrics {
    pub fn register(r: &mut prometheus_client::registry::Registry) -> HealthMetrics {
        let m = HealthMetrics {
            ds_lost: Gauge::default(),
            files_unavailable: Gauge::default(),
            lost_data_errors: Counter::default(),
            layout_errors: Counter::default(),
            checks: Family::default(),
            checks_skipped: Counter::default(),
            layouts_recalled: Counter::default(),
            layoutstats_reports: Counter::default(),
            stats_read_ops: Family::default(),
            stats_read_bytes: Family::default(),
            stats_write_ops: Family::default(),
            stats_write_bytes: Family::default(),
            stats_not_delivered: Family::default(),
        };
        r.register("ds_lost", "Data servers dead longer than mds.ds_lost_after_ms", m.ds_lost.clone());
        r.register("files_unavailable", "Files with data on a lost data server and no other copy (their I/O fails with EIO)", m.files_unavailable.clone());
        r.register("lost_data_errors", "Requests answered NFS4ERR_IO because their data is on a lost data server", m.lost_data_errors.clone());
        r.register("layout_errors", "Device errors clients reported (LAYOUTERROR)", m.layout_errors.clone());
        r.register("ds_checks", "Checks of data servers clients reported failing, by outcome (alive, dead)", m.checks.clone());
        r.register("ds_checks_skipped", "Reported failures that started no check (one in flight or just done)", m.checks_skipped.clone());
        r.register("dead_ds_layouts_recalled", "Files whose layouts were recalled because a data server they name died", m.layouts_recalled.clone());
        r.register("layoutstats_reports", "LAYOUTSTATS received", m.layoutstats_reports.clone());
        r.register("layoutstats_read_ops", "Reads clients report done on each data server (LAYOUTSTATS)", m.stats_read_ops.clone());
        r.register("layoutstats_read_bytes", "Bytes clients report read from each data server (LAYOUTSTATS)", m.stats_read_bytes.clone());
        r.register("layoutstats_write_ops", "Writes clients report done on each data server (LAYOUTSTATS)", m.stats_write_ops.clone());
        r.register("layoutstats_write_bytes", "Bytes clients report written to each data server (LAYOUTSTATS)", m.stats_write_bytes.clone());
        r.register(
            "layoutstats_bytes_not_delivered",
            "Bytes clients report requested from each data server but not delivered (flexfiles LAYOUTSTATS)",
            m.stats_not_delivered.clone(),
        );
        m
    }
}

fn health_metrics() -> &'static HealthMetrics {
    &crate::metrics::metrics().health
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pnfs::PnfsConfig;
    use pnfs_kv::MemStore;
    use pnfs_protocol::seal::ClusterKey;

    fn pnfs(lost_after: Option<Duration>) -> Arc<Pnfs> {
        let pcfg = PnfsConfig { lost_after, check_timeout: Duration::from_millis(500), ..PnfsConfig::striped(65536, 0, Duration::from_secs(10)) };
        Pnfs::new(pcfg, Arc::new(MemStore::new()), 1, ClusterKey::from_bytes([4; 32])).unwrap()
    }

    fn register(p: &Pnfs, id: &str, control: &str) -> u32 {
        let a = ctl_register_args {
            cra_ds_id: id.as_bytes().into(),
            cra_client_addrs: vec![netaddr4 { na_r_netid: "tcp".into(), na_r_addr: "127.0.0.1.8.1".into() }],
            cra_control_addr: control.as_bytes().into(),
            cra_capacity_bytes: 100,
            cra_free_bytes: 50,
        };
        p.registry.register(&a).unwrap().0
    }

    #[test]
    fn stats_count_growth_and_restarts() {
        let a = StatsFigures { read_ops: 10, read_bytes: 1000, write_ops: 0, write_bytes: 0, not_delivered: 0 };
        let b = StatsFigures { read_ops: 15, read_bytes: 1500, write_ops: 2, write_bytes: 20, not_delivered: 0 };
        assert_eq!(b.since(&a), StatsFigures { read_ops: 5, read_bytes: 500, write_ops: 2, write_bytes: 20, not_delivered: 0 });
        // A new layout starts its counts again: all of it is new.
        let c = StatsFigures { read_ops: 1, read_bytes: 100, ..b };
        assert_eq!(c.since(&b).read_bytes, 100);
        assert_eq!(c.since(&b).write_bytes, 0);
        assert_eq!(a.since(&StatsFigures::default()), a);
    }

    #[test]
    fn reports_decode_with_bounds() {
        use pnfs_protocol::{Encoder, XdrEncode};
        // LAYOUTERROR with `count` device errors claimed and one there.
        let layouterror = |count: u32| {
            let mut e = Encoder::new();
            e.put_u64(0);
            e.put_u64(u64::MAX);
            stateid4 { seqid: 1, other: [1; 12] }.encode(&mut e).unwrap();
            e.put_u32(count);
            device_error4 { de_deviceid: [2; 16], de_status: nfsstat4::NFS4ERR_NXIO, de_opnum: nfs_opnum4::OP_READ }.encode(&mut e).unwrap();
            e.into_inner()
        };
        assert_eq!(LAYOUTERROR4args::decode(&mut Decoder::new(&layouterror(1))).unwrap().lea_errors.len(), 1);
        // 2^32-1 claimed in a few bytes: refused before anything is allocated.
        assert!(LAYOUTERROR4args::decode(&mut Decoder::new(&layouterror(u32::MAX))).is_err());
        // LAYOUTSTATS whose layoutupdate body claims `len` bytes (4 there).
        let layoutstats = |len: u32| {
            let mut e = Encoder::new();
            for _ in 0..6 {
                e.put_u64(0);
            }
            stateid4 { seqid: 1, other: [1; 12] }.encode(&mut e).unwrap();
            e.put_fixed_opaque(&[0u8; 16]);
            e.put_u32(layouttype4::LAYOUT4_FLEX_FILES as u32);
            e.put_u32(len);
            e.put_u32(7);
            e.into_inner()
        };
        assert!(LAYOUTSTATS4args::decode(&mut Decoder::new(&layoutstats(4))).is_ok());
        assert!(LAYOUTSTATS4args::decode(&mut Decoder::new(&layoutstats(1 << 30))).is_err());
    }

    #[test]
    fn layoutstats_add_up_per_data_server() {
        use pnfs_protocol::{Encoder, XdrEncode};
        let p = pnfs(None);
        let ds = 100; // a label no other test uses
        let dev = deviceid::encode(&[ds]).unwrap();
        let label = DsLabel { ds: ds.to_string() };
        let m = health_metrics();
        let latency = |not_delivered| ff_io_latency4 {
            ffil_ops_requested: 0,
            ffil_bytes_requested: 0,
            ffil_ops_completed: 0,
            ffil_bytes_completed: 0,
            ffil_bytes_not_delivered: not_delivered,
            ffil_total_busy_time: nfstime4 { seconds: 0, nseconds: 0 },
            ffil_aggregate_completion_time: nfstime4 { seconds: 0, nseconds: 0 },
        };
        let ff = |not_delivered| {
            let u = ff_layoutupdate4 {
                ffl_addr: netaddr4 { na_r_netid: "tcp".into(), na_r_addr: "127.0.0.1.8.1".into() },
                ffl_fhandle: vec![1u8; 8].into(),
                ffl_read: latency(not_delivered),
                ffl_write: latency(0),
                ffl_duration: nfstime4 { seconds: 1, nseconds: 0 },
                ffl_local: false,
            };
            let mut e = Encoder::new();
            u.encode(&mut e).unwrap();
            e.into_inner()
        };
        let io = |n: u64| io_info4 { ii_count: n, ii_bytes: n * 10 };
        let body = ff(7);
        let update = layoutupdate4 { lou_type: layouttype4::LAYOUT4_FLEX_FILES, lou_body: body.as_slice().into() };
        p.layout_stats(1, 5, &dev, &io(3), &io(0), &update);
        let body = ff(9);
        let update = layoutupdate4 { lou_type: layouttype4::LAYOUT4_FLEX_FILES, lou_body: body.as_slice().into() };
        p.layout_stats(1, 5, &dev, &io(4), &io(1), &update);
        // Another client's stream adds its own; a body that does not decode
        // loses only its own figure.
        let junk = layoutupdate4 { lou_type: layouttype4::LAYOUT4_FLEX_FILES, lou_body: [1u8, 2, 3].as_slice().into() };
        p.layout_stats(2, 5, &dev, &io(2), &io(0), &junk);
        assert_eq!(m.stats_read_ops.get_or_create(&label).get(), 6);
        assert_eq!(m.stats_read_bytes.get_or_create(&label).get(), 60);
        assert_eq!(m.stats_write_ops.get_or_create(&label).get(), 1);
        assert_eq!(m.stats_not_delivered.get_or_create(&label).get(), 9);
        // The streams kept are bounded.
        for c in 0..(MAX_STATS_STREAMS as u64 + 10) {
            p.layout_stats(c, 6, &dev, &io(1), &io(0), &junk);
        }
        assert_eq!(p.health.streams.lock().unwrap().len(), MAX_STATS_STREAMS);
    }

    #[test]
    fn lost_data_is_an_io_error() {
        let p = pnfs(None);
        let e = p.lost_io(5, 3);
        assert!(is_lost_data(&e));
        assert!(!is_lost_data(&io::Error::other("x")));
        assert_eq!(crate::mds::io_err(e), nfsstat4::NFS4ERR_IO);
        let delay = io::Error::new(io::ErrorKind::NotConnected, "down");
        assert_eq!(crate::mds::io_err(delay), nfsstat4::NFS4ERR_DELAY);
    }

    #[test]
    fn a_dead_data_server_is_lost_after_the_configured_time() {
        let lost_after = Duration::from_secs(1);
        let p = pnfs(Some(lost_after));
        let ds = register(&p, "a", "127.0.0.1:1");
        assert!(p.ds_usable(9, ds).is_ok());
        assert_eq!(p.ds_dead_for(ds), None);
        assert!(p.registry.mark_dead(ds));
        assert!(!p.registry.mark_dead(ds), "dead already");
        let t = Instant::now();
        let e = p.ds_usable(9, ds).unwrap_err();
        // Dead but not yet lost: DELAY (unless this machine stalled a second).
        if t.elapsed() < lost_after / 2 {
            assert_eq!(crate::mds::io_err(e), nfsstat4::NFS4ERR_DELAY);
            assert!(!p.ds_lost(ds));
        }
        std::thread::sleep(lost_after + Duration::from_millis(100));
        assert!(p.ds_lost(ds));
        assert_eq!(p.lost_data_servers(), vec![ds]);
        let e = p.ds_usable(9, ds).unwrap_err();
        assert!(is_lost_data(&e), "{e}");
        // A heartbeat brings it back.
        assert!(p.registry.heartbeat(b"a", 1));
        assert!(!p.ds_lost(ds));
        assert!(p.ds_usable(9, ds).is_ok());
        // Never lost with mds.ds_lost_after_ms = 0.
        let never = pnfs(None);
        let ds = register(&never, "b", "127.0.0.1:1");
        never.registry.mark_dead(ds);
        assert!(never.ds_dead_for(ds).is_some());
        assert!(!never.ds_lost(ds));
    }

    #[test]
    fn data_servers_not_registered_since_start_count_from_the_start() {
        let p = pnfs(Some(Duration::from_millis(200)));
        // Index 5 names no known data server (say, from a stripe set).
        assert!(p.ds_dead_for(5).is_some());
        std::thread::sleep(Duration::from_millis(300));
        assert!(p.ds_lost(5));
    }

    #[test]
    fn reported_failures_check_once_and_mark_the_dead() {
        // A control address nothing listens on: the check fails at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let p = pnfs(Some(Duration::from_secs(60)));
        let ds = register(&p, "a", &closed.to_string());
        let dev = deviceid::encode(&[ds]).unwrap();
        for _ in 0..100 {
            p.layout_error(7, &dev, nfsstat4::NFS4ERR_NXIO, nfs_opnum4::OP_READ);
        }
        let t = Instant::now();
        while p.registry.alive(ds) {
            assert!(t.elapsed() < Duration::from_secs(10), "not marked dead");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dead now: later reports start no check (nothing to learn).
        p.layout_error(7, &dev, nfsstat4::NFS4ERR_NXIO, nfs_opnum4::OP_READ);
        // Not ours: ignored.
        p.layout_error(7, &[0u8; 16], nfsstat4::NFS4ERR_NXIO, nfs_opnum4::OP_READ);
        assert!(!p.ds_lost(ds), "dead, not lost");
    }

    #[test]
    fn a_flood_of_reports_is_one_check_at_a_time() {
        // A data server that accepts control connections and never answers:
        // the check waits for its deadline, and reports meanwhile join it.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = pnfs(Some(Duration::from_secs(60)));
        let ds = register(&p, "a", &hung.local_addr().unwrap().to_string());
        let dev = deviceid::encode(&[ds]).unwrap();
        let skipped = health_metrics().checks_skipped.get();
        for _ in 0..1000 {
            p.layout_error(7, &dev, nfsstat4::NFS4ERR_NXIO, nfs_opnum4::OP_WRITE);
        }
        // Every report but the first found the check in flight (other tests
        // running at once only add to the counter).
        assert!(health_metrics().checks_skipped.get() - skipped >= 999);
        // One connection was made: the listener's backlog holds exactly it
        // (waited for, then 300 ms more for any other).
        hung.set_nonblocking(true).unwrap();
        let t = Instant::now();
        let (mut accepted, mut held) = (Vec::new(), Vec::new());
        while t.elapsed() < Duration::from_secs(10) && accepted.first().is_none_or(|f: &Instant| f.elapsed() < Duration::from_millis(300)) {
            if let Ok(c) = hung.accept() {
                accepted.push(Instant::now());
                held.push(c); // left open: the check must time out
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(accepted.len(), 1);
        let t = Instant::now();
        while p.registry.alive(ds) {
            assert!(t.elapsed() < Duration::from_secs(10), "a hung data server was not marked dead");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

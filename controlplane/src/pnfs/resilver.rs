//! The resilver's job queue on the MDS: copies of objects from data
//! servers holding a good copy onto others, driven through the data
//! servers' CTL_PROC_OBJ_COPY (the destination pulls the bytes from the
//! source itself; the data never passes through the MDS).
//!
//! It knows nothing of layouts or mirrors: whoever decides which copies a
//! file needs (the mirror model) submits [`CopyJob`]s naming the file, the
//! destination DS and object, one or more sources (DS and object) and the
//! version the copy must carry, and learns of each job's end through the
//! completion hook given to [`Resilver::new`].
//!
//! - The queue is bounded (`mds.resilver_queue_max`); a job whose
//!   destination object is queued or running already is not queued twice.
//! - `mds.resilver_copies` workers run jobs, at most
//!   `mds.resilver_copies_per_ds` with the same destination (a DS runs
//!   `ds.copy_max_concurrent` copies; more are answered COPY_BUSY and the
//!   job waits and is tried again).
//! - A job is driven range by range: each OBJ_COPY call copies until its
//!   deadline ([`COPY_CALL_MS`]) and answers where it got to; the last one
//!   finishes the object (its size, made durable, then the version). When a
//!   source fails (unreachable, refused, an error, or no longer at the
//!   expected version) the copy goes on from where it was with the next
//!   source the job names: every source at the expected version holds the
//!   same bytes. An unreachable destination is retried with backoff
//!   ([`MAX_ATTEMPTS`] times), then the job fails.
//! - Stale copies: a destination's version changes only when the copy
//!   finished; an interrupted copy keeps its old version, which is below
//!   the file's, so it is never served (the rule the mirror model applies
//!   to every copy: version below the file's current mirror version =
//!   stale). The data servers refuse to copy over a newer destination.
//! - Writes to the file while it is copied are not this module's concern:
//!   the submitter copies files with no write layout outstanding (recalled
//!   first) or submits the job again after them.
//!
//! Progress: [`Resilver::progress`] (objects and bytes done and pending,
//! for `pnfsctl`) and the `pnfs_mds_resilver_*` metrics.

use super::client::{self, CtlClient};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, XdrDecode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Each OBJ_COPY call answers after about this long (well inside the
/// control client's 15 s I/O timeout): a long copy is many calls.
pub const COPY_CALL_MS: u32 = 5000;
/// Tries of a job whose destination cannot be reached (or was busy).
pub const MAX_ATTEMPTS: u32 = 6;
/// Copy calls in a row answered without progress before a job is put back.
const MAX_STALLS: u32 = 3;
/// First wait before trying a job again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The object-copy limits (`mds.resilver_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilverConfig {
    /// Jobs queued or running at most (`mds.resilver_queue_max`).
    pub queue_max: usize,
    /// Copies running at once (`mds.resilver_copies`): the worker threads.
    pub copies: usize,
    /// Copies running at once onto one destination DS (`mds.resilver_copies_per_ds`).
    pub copies_per_ds: usize,
}

impl ResilverConfig {
    pub fn from_mds(c: &crate::config::MdsConfig) -> ResilverConfig {
        ResilverConfig { queue_max: c.resilver_queue_max, copies: c.resilver_copies, copies_per_ds: c.resilver_copies_per_ds }
    }
}

/// Where a copy can come from: a data server and its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    pub ds: u32,
    /// The object's bare DS identity on that data server.
    pub fh: Vec<u8>,
}

/// One object to copy onto one data server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    /// The file (inode) the object belongs to: progress and logs.
    pub file: u64,
    /// The destination data server (registry index) and its object.
    pub dest: u32,
    pub dest_fh: Vec<u8>,
    /// Tried in order; the copy moves on to the next when one fails.
    pub sources: Vec<CopySource>,
    /// (offset, length) of the object to copy; None: all of it. Either
    /// way the destination ends with the source's size.
    pub range: Option<(u64, u64)>,
    /// The version every source must carry, and the destination takes
    /// once the copy is finished.
    pub version: u64,
    /// The object's expected size (bytes pending in the progress until the
    /// first call learns the real one); 0 when unknown.
    pub size_hint: u64,
}

/// How a job ended, told to the completion hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// The destination holds the object at the job's version.
    Done { bytes: u64 },
    /// Given up: why (no source worked, the destination failed, or it is
    /// newer than the job's version).
    Failed(String),
}

/// What `pnfsctl` shows of the resilver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResilverProgress {
    /// Jobs waiting (queued or backing off) and running.
    pub jobs_pending: u64,
    pub jobs_running: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    /// Data bytes copied (holes are not sent, so not counted).
    pub bytes_done: u64,
    /// Bytes of the pending and running jobs still to copy (from their
    /// size hints until a copy call learned the real size).
    pub bytes_pending: u64,
    /// The last failure, for the operator.
    pub last_failure: Option<String>,
}

/// `pnfs_mds_resilver_*`.
pub struct ResilverMetrics {
    pub jobs_pending: Gauge,
    pub jobs_running: Gauge,
    pub jobs_done: Counter,
    pub jobs_failed: Counter,
    pub bytes_done: Counter,
    pub bytes_pending: Gauge,
    pub source_switches: Counter,
    pub jobs_refused: Counter,
}

impl ResilverMetrics {
    /// Registers the family under `resilver_` in the MDS registry.
    pub fn register(registry: &mut Registry) -> ResilverMetrics {
        let m = ResilverMetrics {
            jobs_pending: Gauge::default(),
            jobs_running: Gauge::default(),
            jobs_done: Counter::default(),
            jobs_failed: Counter::default(),
            bytes_done: Counter::default(),
            bytes_pending: Gauge::default(),
            source_switches: Counter::default(),
            jobs_refused: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("resilver");
        r.register("jobs_pending", "Object copies waiting or running", m.jobs_pending.clone());
        r.register("jobs_running", "Object copies running", m.jobs_running.clone());
        r.register("jobs_done", "Object copies finished: the destination holds the object at the file's version", m.jobs_done.clone());
        r.register("jobs_failed", "Object copies given up (no source worked, or the destination failed)", m.jobs_failed.clone());
        r.register("bytes_done", "Data bytes copied between data servers for the resilver", m.bytes_done.clone());
        r.register("bytes_pending", "Bytes of waiting and running object copies still to copy", m.bytes_pending.clone());
        r.register("source_switches", "Copies that went on from another source after one failed", m.source_switches.clone());
        r.register("jobs_refused", "Copy jobs refused because mds.resilver_queue_max were queued", m.jobs_refused.clone());
        m
    }
}

/// Why [`Resilver::submit`] did not queue a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// `mds.resilver_queue_max` jobs are queued or running: submit later.
    Full,
    /// A job without sources, or with an object handle of a wrong size.
    Invalid(&'static str),
}

/// Resolves a data server index to its control address, None when it is
/// not registered (or not usable now).
pub type Resolve = Box<dyn Fn(u32) -> Option<String> + Send + Sync>;
/// Told how every job ended.
pub type OnEnd = Box<dyn Fn(&CopyJob, &JobEnd) + Send + Sync>;

struct Waiting {
    job: CopyJob,
    /// Where the copy got to (a retried job goes on from there).
    next: u64,
    attempts: u32,
    not_before: Instant,
    /// Bytes counted as pending for it.
    pending: u64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Waiting>,
    /// (destination, object) of every job queued or running.
    keys: HashSet<(u32, Vec<u8>)>,
    running_per_ds: HashMap<u32, usize>,
    running: u64,
    stopped: bool,
    progress: ResilverProgress,
}

struct Inner {
    cfg: ResilverConfig,
    state: Mutex<State>,
    wake: Condvar,
    resolve: Resolve,
    on_end: OnEnd,
    ctl: CtlClient,
    metrics: Option<&'static ResilverMetrics>,
}

/// The queue and its workers; dropping it stops them (running copies
/// finish their current call).
pub struct Resilver {
    inner: Arc<Inner>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Resilver {
    /// `ctl`: a control client of its own (`pnfs.ctl.caller()`), so copy
    /// calls never hold the MDS's pooled connections; `resolve`: DS index
    /// to control address (`Registry::get`); `on_end`: told how each job
    /// ended (the mirror model records the new copy, or picks another
    /// destination). Workers start at once.
    pub fn new(cfg: ResilverConfig, ctl: CtlClient, resolve: Resolve, on_end: OnEnd) -> Arc<Resilver> {
        Self::with_metrics(cfg, ctl, resolve, on_end, Some(&crate::metrics::metrics().resilver))
    }

    /// [`Resilver::new`] with the metrics to feed (None: none, for tests
    /// that run several).
    pub fn with_metrics(cfg: ResilverConfig, ctl: CtlClient, resolve: Resolve, on_end: OnEnd, metrics: Option<&'static ResilverMetrics>) -> Arc<Resilver> {
        let inner = Arc::new(Inner { cfg, state: Mutex::new(State::default()), wake: Condvar::new(), resolve, on_end, ctl, metrics });
        let workers = (0..cfg.copies.max(1))
            .filter_map(|i| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(format!("resilver-{i}"))
                    .spawn(move || worker(&inner))
                    .map_err(|e| log::error!("starting a resilver worker: {e}"))
                    .ok()
            })
            .collect();
        Arc::new(Resilver { inner, workers: Mutex::new(workers) })
    }

    /// Queues `job`. Ok(false): a job for the same destination object is
    /// queued or running already (nothing changed).
    pub fn submit(&self, job: CopyJob) -> Result<bool, SubmitError> {
        if job.sources.is_empty() {
            return Err(SubmitError::Invalid("a copy job needs at least one source"));
        }
        let fh_ok = |fh: &[u8]| !fh.is_empty() && fh.len() <= DS_FH_MAX as usize;
        if !fh_ok(&job.dest_fh) || !job.sources.iter().all(|s| fh_ok(&s.fh)) {
            return Err(SubmitError::Invalid("object handles are 1 to DS_FH_MAX bytes"));
        }
        let mut st = self.inner.lock();
        if st.keys.contains(&(job.dest, job.dest_fh.clone())) {
            return Ok(false);
        }
        if st.keys.len() >= self.inner.cfg.queue_max {
            if let Some(m) = self.inner.metrics {
                m.jobs_refused.inc();
            }
            return Err(SubmitError::Full);
        }
        st.keys.insert((job.dest, job.dest_fh.clone()));
        let (next, pending) = match job.range {
            Some((off, len)) => (off, len.min(job.size_hint.saturating_sub(off))),
            None => (0, job.size_hint),
        };
        st.progress.bytes_pending += pending;
        st.queue.push_back(Waiting { job, next, attempts: 0, not_before: Instant::now(), pending });
        self.inner.publish(&mut st);
        drop(st);
        self.inner.wake.notify_one();
        Ok(true)
    }

    pub fn progress(&self) -> ResilverProgress {
        self.inner.lock().progress.clone()
    }

    /// Waits until no job is queued or running, at most `limit`; whether
    /// it got there (tests, and a drain before shutdown).
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut st = self.inner.lock();
        while !st.keys.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.inner.wake.wait_timeout(st, left.min(Duration::from_millis(100))).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

impl Drop for Resilver {
    fn drop(&mut self) {
        self.inner.lock().stopped = true;
        self.inner.wake.notify_all();
        for w in self.workers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = w.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gauges from the state.
    fn publish(&self, st: &mut State) {
        st.progress.jobs_pending = st.keys.len() as u64 - st.running;
        st.progress.jobs_running = st.running;
        if let Some(m) = self.metrics {
            m.jobs_pending.set(st.keys.len() as i64);
            m.jobs_running.set(st.running as i64);
            m.bytes_pending.set(st.progress.bytes_pending as i64);
        }
    }

    /// The first job that may run now (its destination below its share),
    /// or how long until one might.
    fn take(&self, st: &mut State) -> Result<Waiting, Option<Duration>> {
        let now = Instant::now();
        let mut soonest: Option<Duration> = None;
        let per_ds = self.cfg.copies_per_ds;
        let pos = st.queue.iter().position(|w| {
            if st.running_per_ds.get(&w.job.dest).copied().unwrap_or(0) >= per_ds {
                return false;
            }
            if w.not_before > now {
                let d = w.not_before - now;
                soonest = Some(soonest.map_or(d, |s| s.min(d)));
                return false;
            }
            true
        });
        match pos.and_then(|i| st.queue.remove(i)) {
            Some(w) => {
                *st.running_per_ds.entry(w.job.dest).or_default() += 1;
                st.running += 1;
                self.publish(st);
                Ok(w)
            }
            None => Err(soonest),
        }
    }
}

fn worker(inner: &Inner) {
    let ctl = inner.ctl.caller();
    let mut st = inner.lock();
    loop {
        if st.stopped {
            return;
        }
        let mut w = match inner.take(&mut st) {
            Ok(w) => w,
            Err(soonest) => {
                let wait = soonest.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
                st = inner.wake.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
        };
        drop(st);
        let outcome = run(inner, &ctl, &mut w);
        st = inner.lock();
        if let Outcome::Stopped = outcome {
            return;
        }
        let n = st.running_per_ds.get_mut(&w.job.dest).expect("counted when taken");
        *n -= 1;
        st.running -= 1;
        match outcome {
            Outcome::Retry(why) if w.attempts + 1 < MAX_ATTEMPTS && !st.stopped => {
                w.attempts += 1;
                let backoff = (FIRST_BACKOFF * 2u32.saturating_pow(w.attempts - 1)).min(MAX_BACKOFF);
                log::info!("resilver: copy of file {} onto data server {}: {why}; again in {backoff:?}", w.job.file, w.job.dest);
                w.not_before = Instant::now() + backoff;
                st.queue.push_back(w);
                inner.publish(&mut st);
            }
            Outcome::Retry(why) | Outcome::Failed(why) => {
                let why = format!("file {} onto data server {}: {why}", w.job.file, w.job.dest);
                log::warn!("resilver: copy of {why}; given up");
                st.progress.jobs_failed += 1;
                st.progress.bytes_pending = st.progress.bytes_pending.saturating_sub(w.pending);
                st.progress.last_failure = Some(why.clone());
                st.keys.remove(&(w.job.dest, w.job.dest_fh.clone()));
                if let Some(m) = inner.metrics {
                    m.jobs_failed.inc();
                }
                inner.publish(&mut st);
                drop(st);
                (inner.on_end)(&w.job, &JobEnd::Failed(why));
                st = inner.lock();
            }
            Outcome::Stopped => unreachable!("returned above"),
            Outcome::Done(bytes) => {
                st.progress.jobs_done += 1;
                st.progress.bytes_pending = st.progress.bytes_pending.saturating_sub(w.pending);
                st.keys.remove(&(w.job.dest, w.job.dest_fh.clone()));
                if let Some(m) = inner.metrics {
                    m.jobs_done.inc();
                }
                inner.publish(&mut st);
                drop(st);
                (inner.on_end)(&w.job, &JobEnd::Done { bytes });
                st = inner.lock();
            }
        }
        inner.wake.notify_all();
    }
}

enum Outcome {
    Done(u64),
    /// The resilver is being dropped: the job is left as it is.
    Stopped,
    /// Worth another try later (destination unreachable or busy).
    Retry(String),
    Failed(String),
}

/// Drives one job's copy calls, source after source; updates the progress
/// as bytes move.
fn run(inner: &Inner, ctl: &CtlClient, w: &mut Waiting) -> Outcome {
    let Some(dest_addr) = (inner.resolve)(w.job.dest) else {
        return Outcome::Retry("the destination data server is not registered".into());
    };
    let end = match w.job.range {
        Some((off, len)) => off.saturating_add(len),
        None => u64::MAX,
    };
    let mut bytes = 0u64;
    let mut last = String::from("no source");
    // Calls answered OK that did not move on, in a row: a data server that
    // keeps doing so is retried later rather than called forever.
    let mut stalls = 0u32;
    for (i, src) in w.job.sources.iter().enumerate() {
        let Some(src_addr) = (inner.resolve)(src.ds) else {
            last = format!("source data server {} is not registered", src.ds);
            continue;
        };
        if i > 0 {
            if let Some(m) = inner.metrics {
                m.source_switches.inc();
            }
        }
        loop {
            if inner.lock().stopped {
                return Outcome::Stopped;
            }
            let a = ctl_copy_args {
                cca_fh: w.job.dest_fh.as_slice().into(),
                cca_source: src_addr.as_bytes().into(),
                cca_source_fh: src.fh.as_slice().into(),
                cca_offset: w.next,
                cca_count: end - w.next,
                cca_version: w.job.version,
                cca_deadline_ms: COPY_CALL_MS,
                cca_finish: true,
            };
            let r = match ctl.call(&dest_addr, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_COPY, &a).and_then(|b| {
                ctl_copy_res::decode(&mut Decoder::new(&b)).map_err(client::bad_reply)
            }) {
                Ok(r) => r,
                Err(e) => return Outcome::Retry(format!("destination {dest_addr}: {e}")),
            };
            // Progress: bytes moved, and what is left now that the size is known.
            let left = r.ccr_source_size.min(end).saturating_sub(r.ccr_next.max(w.next));
            {
                let mut st = inner.lock();
                st.progress.bytes_done += r.ccr_bytes;
                st.progress.bytes_pending = st.progress.bytes_pending.saturating_sub(w.pending) + left;
                w.pending = left;
                if let Some(m) = inner.metrics {
                    m.bytes_done.inc_by(r.ccr_bytes);
                }
                inner.publish(&mut st);
            }
            bytes += r.ccr_bytes;
            if r.ccr_next > w.next {
                w.next = r.ccr_next;
                stalls = 0;
            } else {
                stalls += 1;
            }
            match r.ccr_status {
                ctl_copy_status::COPY_OK if r.ccr_done => return Outcome::Done(bytes),
                ctl_copy_status::COPY_OK if stalls >= MAX_STALLS => {
                    return Outcome::Retry(format!("the destination made no progress in {MAX_STALLS} calls"))
                }
                ctl_copy_status::COPY_OK => continue,
                ctl_copy_status::COPY_BUSY => return Outcome::Retry("the destination runs ds.copy_max_concurrent copies".into()),
                ctl_copy_status::COPY_SOURCE_UNREACHABLE
                | ctl_copy_status::COPY_SOURCE_REFUSED
                | ctl_copy_status::COPY_SOURCE_ERROR
                | ctl_copy_status::COPY_SOURCE_VERSION => {
                    last = format!("source data server {} ({src_addr}): {:?}", src.ds, r.ccr_status);
                    log::info!("resilver: copy of file {} onto data server {}: {last}; trying the next source", w.job.file, w.job.dest);
                    break;
                }
                ctl_copy_status::COPY_DEST_NEWER => {
                    return Outcome::Failed(format!("the destination's copy is at version {}, newer than {}", r.ccr_version, w.job.version))
                }
                s => return Outcome::Failed(format!("the destination answered {s:?}")),
            }
        }
    }
    Outcome::Failed(format!("every source failed (last: {last})"))
}

impl Resilver {
    /// The queue of a running MDS: its own control client (same key and
    /// epoch as `pnfs.ctl`), data servers resolved through the registry
    /// (live ones only), limits from `mds.resilver_*`.
    pub fn for_pnfs(pnfs: &Arc<super::Pnfs>, cfg: ResilverConfig, on_end: OnEnd) -> Arc<Resilver> {
        Resilver::new(cfg, pnfs.ctl.caller(), registry_resolver(Arc::downgrade(pnfs)), on_end)
    }
}

impl super::Pnfs {
    /// (version, size) of the object `fh` on data server `ds`
    /// (CTL_PROC_OBJ_VERSION_GET): a version below the file's mirror
    /// version is a stale copy. A missing object is NotFound.
    pub fn obj_version(&self, ds: u32, fh: &[u8]) -> io::Result<(u64, u64)> {
        let body = self.call(ds, CTL_PROC_OBJ_VERSION_GET, &ctl_obj_args { coa_fh: fh.into() })?;
        let r = ctl_version_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
        client::status_result(r.cvr_status).map(|()| (r.cvr_version, r.cvr_size))
    }

    /// Sets the version of `fh` on `ds` (CTL_PROC_OBJ_VERSION_SET): durable
    /// there, with the object's data written before, when it returns.
    pub fn obj_set_version(&self, ds: u32, fh: &[u8], version: u64) -> io::Result<()> {
        let body = self.call(ds, CTL_PROC_OBJ_VERSION_SET, &ctl_version_args { cvs_fh: fh.into(), cvs_version: version })?;
        let r = ctl_version_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
        client::status_result(r.cvr_status)
    }
}

/// The resolver a running MDS uses: a registered, live data server's
/// control address.
pub fn registry_resolver(pnfs: std::sync::Weak<super::Pnfs>) -> Resolve {
    Box::new(move |ds| {
        let p = pnfs.upgrade()?;
        p.registry.alive(ds).then(|| p.registry.get(ds).map(|d| d.control_addr)).flatten()
    })
}

/// CTL_PROC_OBJ_VERSION_GET on `ds` at `addr`: (version, size); a missing
/// object is NotFound.
pub fn object_version(ctl: &CtlClient, addr: &str, fh: &[u8]) -> io::Result<(u64, u64)> {
    let body = ctl.call(addr, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_VERSION_GET, &ctl_obj_args { coa_fh: fh.into() })?;
    let r = ctl_version_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
    client::status_result(r.cvr_status).map(|()| (r.cvr_version, r.cvr_size))
}

/// CTL_PROC_OBJ_VERSION_SET: durable on the DS when it returns (with the
/// object's data written before it).
pub fn set_object_version(ctl: &CtlClient, addr: &str, fh: &[u8], version: u64) -> io::Result<()> {
    let body = ctl.call(addr, PNFSCTL_DS_PROGRAM, CTL_PROC_OBJ_VERSION_SET, &ctl_version_args { cvs_fh: fh.into(), cvs_version: version })?;
    let r = ctl_version_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
    client::status_result(r.cvr_status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MdsConfig;

    fn config(extra: &str) -> MdsConfig {
        let text = format!("bind = \"127.0.0.1:1\"\nmetadata_dir = \"/tmp/m\"\ndata_dir = \"/tmp/d\"\n{extra}\n[[exports]]\npath = \"/export\"\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn config_keys_default_and_name_themselves_when_wrong() {
        let c = config("");
        c.validate().unwrap();
        assert_eq!(ResilverConfig::from_mds(&c), ResilverConfig { queue_max: 1 << 20, copies: 4, copies_per_ds: 2 });
        for (extra, key) in [
            ("resilver_queue_max = 0", "mds.resilver_queue_max:"),
            ("resilver_copies = 0", "mds.resilver_copies:"),
            ("resilver_copies = 65", "mds.resilver_copies:"),
            ("resilver_copies_per_ds = 0", "mds.resilver_copies_per_ds:"),
            ("resilver_copies = 2\nresilver_copies_per_ds = 3", "mds.resilver_copies_per_ds:"),
        ] {
            let e = config(extra).validate().unwrap_err();
            assert!(e.starts_with(key), "{extra}: {e}");
        }
    }

    #[test]
    fn metrics_are_in_the_mds_text() {
        let text = crate::metrics::metrics().encode();
        for name in ["jobs_pending", "jobs_running", "bytes_pending"] {
            assert!(text.contains(&format!("\npnfs_mds_resilver_{name} ")), "{name}: {text}");
        }
        for name in ["jobs_done", "jobs_failed", "bytes_done", "source_switches", "jobs_refused"] {
            assert!(text.contains(&format!("\npnfs_mds_resilver_{name}_total ")), "{name}: {text}");
        }
    }
}

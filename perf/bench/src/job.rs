//! One job: its own connection and session to the server (the MDS), with
//! pNFS one more per data server, and a single-threaded loop that keeps up
//! to `qd` COMPOUNDs in flight over all of them (fio-like: qd per job
//! overall, spread over the data servers the offsets map to): it sends
//! while fewer than qd are outstanding, then waits (poll) for one reply.

use crate::hist::Histogram;
use crate::opts::Workload;
use crate::pattern;
use crate::pipe::{create_0644, decode_compound, open_args, poll_readable, status_name, PResult, Pipe};
use pnfs_client::flexfiles::{FlexDevice, Segment};
use pnfs_client::layout::{layoutcommit_of, layoutget, whole_file_layoutget, whole_file_layoutreturn_of, DeviceAddrs, FileLayout};
use pnfs_client::{LayoutSegment, CURRENT_STATEID};
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::xdr::{Decoder, Opaque, XdrDecode};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The GETATTR bitmap the Linux client sends to revalidate a file: type,
/// change, size, fsid, fileid | mode, numlinks, owner, owner_group, rawdev,
/// space_used, time_access, time_metadata, time_modify, mounted_on_fileid.
pub const LINUX_GETATTR: [u32; 2] = [
    (1 << FATTR4_TYPE) | (1 << FATTR4_CHANGE) | (1 << FATTR4_SIZE) | (1 << FATTR4_FSID) | (1 << FATTR4_FILEID),
    (1 << (FATTR4_MODE - 32))
        | (1 << (FATTR4_NUMLINKS - 32))
        | (1 << (FATTR4_OWNER - 32))
        | (1 << (FATTR4_OWNER_GROUP - 32))
        | (1 << (FATTR4_RAWDEV - 32))
        | (1 << (FATTR4_SPACE_USED - 32))
        | (1 << (FATTR4_TIME_ACCESS - 32))
        | (1 << (FATTR4_TIME_METADATA - 32))
        | (1 << (FATTR4_TIME_MODIFY - 32))
        | (1 << (FATTR4_MOUNTED_ON_FILEID - 32)),
];

/// A part of one file a job works on.
#[derive(Debug, Clone)]
pub struct Region {
    pub file: u32,
    pub start: u64,
    pub len: u64,
}

pub enum Stop {
    /// Bytes moved after the ramp.
    Bytes(u64),
    /// Seconds measured after the ramp.
    Runtime(f64),
}

pub struct Plan {
    pub id: usize,
    pub server: SocketAddr,
    pub minor: u32,
    pub workload: Workload,
    /// The untimed fill phase (seqwrite, stamped blocks).
    pub fill: bool,
    pub bs: u64,
    pub qd: usize,
    pub regions: Vec<Region>,
    pub dir_fh: Vec<u8>,
    /// Filehandles of the job's files (getattr), by region.
    pub fhs: Vec<Vec<u8>>,
    pub pnfs: bool,
    /// The layout types this tool speaks that the server lists in
    /// fs_layout_types, in the server's order.
    pub layout_types: Vec<layouttype4>,
    pub stable_file: bool,
    pub stamp: bool,
    pub verify: bool,
    pub ramp: Duration,
    pub stop: Stop,
    /// All jobs meet here after setup (the measured interval starts) and
    /// after the workload (before the untimed teardown).
    pub start: Arc<Barrier>,
    pub done: Arc<Barrier>,
}

#[derive(Default)]
pub struct JobResult {
    pub hist: Histogram,
    pub bytes: u64,
    pub requests: u64,
    pub cycles: u64,
    pub errors: u64,
    pub verify_errors: u64,
    pub first_error: Option<String>,
    pub mds_ops: u64,
    pub ds_requests: u64,
    pub mds_io_requests: u64,
    pub measure_start: Option<Instant>,
    pub end: Option<Instant>,
    pub layouts: usize,
    pub no_layout_reason: Option<String>,
    pub straddle_warned: bool,
    pub effective_bs: u64,
}

/// Mirrors one flexfiles segment may have here (a write goes to each).
const MAX_MIRRORS: usize = 4;
/// Flexfiles segments fetched for one file at most.
const MAX_SEGMENTS: usize = 65536;

/// LAYOUTGET of `ty` for a job's part [lo, hi) of a file: a files layout
/// of the whole file (as before), flexfiles segments from `lo`.
fn layoutget_of(ty: layouttype4, sid: stateid4, iomode: layoutiomode4, lo: u64, hi: u64) -> nfs_argop4<'static> {
    match ty {
        layouttype4::LAYOUT4_FLEX_FILES => layoutget(ty, sid, iomode, lo, if hi > lo { hi - lo } else { u64::MAX }, 1, 64 * 1024),
        _ => whole_file_layoutget(sid, iomode, 0, 64 * 1024),
    }
}

fn getdeviceinfo_of(ty: layouttype4, id: [u8; 16]) -> nfs_argop4<'static> {
    nfs_argop4::OP_GETDEVICEINFO(GETDEVICEINFO4args { gdia_device_id: id, gdia_layout_type: ty, gdia_maxcount: 64 * 1024, gdia_notify_types: vec![] })
}

enum LayoutMap {
    Files {
        fl: FileLayout,
        stripe_indices: Vec<u32>,
        /// Data server index (in the device) -> pipe index.
        pipe_of_ds: Vec<usize>,
    },
    /// Flexfiles segments by offset, prefetched at open for the job's
    /// regions.
    Flex(Vec<FlexSeg>),
}

/// One flexfiles layout segment: [start, end), per mirror the targets of
/// its stripes (indices into `LayoutCtx::targets`).
struct FlexSeg {
    start: u64,
    end: u64,
    stripe_unit: u64,
    mirrors: Vec<Vec<usize>>,
    /// Mirror indices, best efficiency first (the order reads try them).
    read_order: Vec<usize>,
    /// How many mirrors share the best efficiency: reads rotate over them
    /// block by block. (The Linux 6.1 client reads the first one; spreading
    /// lets a sequential reader draw on every data server holding the
    /// segment, which is what the benchmark measures.)
    read_ties: usize,
}

/// A flexfiles data server object: the pipe, its filehandle and the
/// stateid I/O to it carries.
struct FlexTarget {
    pipe: usize,
    fh: Vec<u8>,
    sid: stateid4,
}

struct LayoutCtx {
    map: LayoutMap,
    targets: Vec<FlexTarget>,
    layout_type: layouttype4,
    sid: stateid4,
    commit_through_mds: bool,
    no_layoutcommit: bool,
}

impl LayoutCtx {
    /// The data server filehandle `dirty` entries name by index.
    fn fh(&self, i: usize) -> &[u8] {
        match &self.map {
            LayoutMap::Files { fl, .. } => &fl.fhs[i],
            LayoutMap::Flex(_) => &self.targets[i].fh,
        }
    }
}

struct FileCtx {
    file: u32,
    fh: Vec<u8>,
    open_sid: stateid4,
    layout: Option<LayoutCtx>,
    /// End of the furthest write through the data servers (LAYOUTCOMMIT).
    ds_written_end: u64,
    /// (pipe, fh index or usize::MAX for the MDS fh) written UNSTABLE since the last COMMIT.
    dirty: Vec<(usize, usize)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Commit,
    Getattr,
    Open,
    Close,
}

#[derive(Clone, Copy)]
struct Req {
    region: u32,
    off: u64,
    /// Mirrors of a flexfiles segment a READ skips (they failed it).
    skip_mirrors: u8,
}

#[derive(Clone, Copy)]
struct InFlight {
    t: Instant,
    kind: Kind,
    req: Req,
    measured: bool,
    via_ds: bool,
    /// A second or third mirror's copy of a WRITE: only its status counts.
    mirror_copy: bool,
    /// Mirrors in the segment a flexfiles READ went to (0 otherwise).
    mirrors: u8,
    buf: u16,
    chain: u32,
}

/// The measured interval of a run (see `Job::begin_window`).
struct Window {
    start: Instant,
    open: bool,
    mds_sent0: u64,
}

const NO_BUF: u16 = u16::MAX;
/// How long I/O may be answered only NFS4ERR_DELAY before the requests
/// count as errors (the pipe layer retries other calls for as long).
const MAX_DELAYED: Duration = Duration::from_secs(60);

fn err(e: impl Into<String>) -> String {
    e.into()
}

pub fn file_name(i: u32) -> String {
    format!("f{i}")
}

fn putfh_words(b: &mut Vec<u8>, fh: &[u8]) {
    b.extend_from_slice(&(nfs_opnum4::OP_PUTFH as u32).to_be_bytes());
    b.extend_from_slice(&(fh.len() as u32).to_be_bytes());
    b.extend_from_slice(fh);
    b.extend_from_slice(&[0u8; 3][..(4 - fh.len() % 4) % 4]);
}

fn stateid_words(b: &mut Vec<u8>, s: &stateid4) {
    b.extend_from_slice(&s.seqid.to_be_bytes());
    b.extend_from_slice(&s.other);
}

fn layout_unavailable(st: nfsstat4) -> bool {
    matches!(
        st,
        nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE
            | nfsstat4::NFS4ERR_NOTSUPP
            | nfsstat4::NFS4ERR_UNKNOWN_LAYOUTTYPE
            | nfsstat4::NFS4ERR_LAYOUTTRYLATER
            | nfsstat4::NFS4ERR_OP_ILLEGAL
    )
}

struct Job {
    p: Plan,
    pipes: Vec<Pipe>,
    files: Vec<FileCtx>,
    res: JobResult,
    inflight: Vec<Vec<InFlight>>,
    bufs: Vec<Vec<u8>>,
    free_bufs: Vec<u16>,
    /// Since when I/O has been answered only NFS4ERR_DELAY (a data server
    /// down and never back must not keep the tool retrying forever).
    delayed_since: Option<Instant>,
    shared_payload: Vec<u8>,
    rng: u64,
    pfds: Vec<libc::pollfd>,
    fds: Vec<std::os::fd::RawFd>,
    fd_pipe: Vec<usize>,
    rot: usize,
    outstanding: usize,
    owner: Vec<u8>,
    clientid: u64,
    /// Data server requests one WRITE makes (the most mirrors of a
    /// flexfiles segment; 1 otherwise): qd counts logical requests.
    copies: usize,
    failover_warned: bool,
}

/// Runs a job: setup (untimed), then waits at the start barrier, runs the
/// workload, tears down (untimed).
pub fn run(p: Plan) -> PResult<JobResult> {
    let (start, done) = (p.start.clone(), p.done.clone());
    let r = setup(p);
    // Always meet the barriers, so that nobody waits forever.
    start.wait();
    let mut job = match r {
        Ok(j) => j,
        Err(e) => {
            done.wait();
            return Err(e);
        }
    };
    let w = job.run_workload();
    done.wait();
    w?;
    job.teardown()?;
    // Best effort: a server without DESTROY_CLIENTID lets the lease expire.
    let _ = job.pipes[0].destroy_client();
    Ok(job.res)
}

fn setup(p: Plan) -> PResult<Job> {
    let slots = p.qd;
    let mds = Pipe::connect(p.server, p.minor, slots, p.bs, true)?;
    if p.bs > mds.max_io() && p.workload.is_data() {
        return Err(format!("--bs {} exceeds what the server's session allows ({} bytes)", p.bs, mds.max_io()));
    }
    let clientid = mds.clientid;
    let mut job = Job {
        owner: format!("pnfs-bench-job{}", p.id).into_bytes(),
        res: JobResult { effective_bs: p.bs, ..Default::default() },
        inflight: vec![],
        bufs: vec![],
        free_bufs: vec![],
        delayed_since: None,
        shared_payload: vec![],
        rng: 0x9E37_79B9_7F4A_7C15 ^ (p.id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        pfds: Vec::with_capacity(16),
        fds: Vec::with_capacity(16),
        fd_pipe: Vec::with_capacity(16),
        rot: 0,
        outstanding: 0,
        clientid,
        copies: 1,
        failover_warned: false,
        pipes: vec![mds],
        files: vec![],
        p,
    };
    if job.p.workload.is_data() {
        job.open_files()?;
    }
    // Buffers: stamped writes need one payload per request in flight.
    let bs = job.res.effective_bs as usize;
    if job.p.workload.is_write() || job.p.fill {
        if job.p.stamp {
            job.bufs = (0..job.p.qd)
                .map(|_| {
                    let mut b = vec![0u8; bs];
                    pattern::init(&mut b);
                    b
                })
                .collect();
            job.free_bufs = (0..job.p.qd as u16).collect();
        } else {
            job.shared_payload = vec![0u8; bs];
            pattern::init(&mut job.shared_payload);
            pattern::stamp(&mut job.shared_payload, 0, 0);
        }
    }
    if let Some(pp) = job.pipes.iter().find(|pp| pp.slots < job.p.qd) {
        eprintln!("pnfs-bench: job {}: {} granted {} session slots; at most that many requests are in flight there", job.p.id, pp.addr, pp.slots);
    }
    job.inflight = job
        .pipes
        .iter()
        .map(|pp| {
            vec![
                InFlight {
                    t: Instant::now(),
                    kind: Kind::Read,
                    req: Req { region: 0, off: 0, skip_mirrors: 0 },
                    measured: false,
                    via_ds: false,
                    mirror_copy: false,
                    mirrors: 0,
                    buf: NO_BUF,
                    chain: 0
                };
                pp.slots
            ]
        })
        .collect();
    Ok(job)
}

impl Job {
    /// OPEN (+ LAYOUTGET in the same COMPOUND) every file, GETDEVICEINFO
    /// for new devices, one connection per data server. The LAYOUTGET asks
    /// for the layout type that worked last (at first the one the server
    /// lists first); a file that has none of that type (a mirrored file has
    /// a flexfiles layout, a striped one a files layout) gets a LAYOUTGET of
    /// the other type. Flexfiles
    /// segments are fetched here until they cover the job's part of the
    /// file (untimed), as many LAYOUTGETs as segments.
    fn open_files(&mut self) -> PResult<()> {
        let write = self.p.workload.is_write() || self.p.fill;
        let iomode = if write { layoutiomode4::LAYOUTIOMODE4_RW } else { layoutiomode4::LAYOUTIOMODE4_READ };
        let mut devices: HashMap<[u8; 16], DeviceAddrs> = HashMap::new();
        let mut flex_devices: HashMap<[u8; 16], usize> = HashMap::new();
        let mut ds_pipe: HashMap<SocketAddr, usize> = HashMap::new();
        let mut prefer = self.p.layout_types.first().copied().unwrap_or(layouttype4::LAYOUT4_NFSV4_1_FILES);
        let mut seen = Vec::new();
        for r in self.p.regions.clone() {
            if seen.contains(&r.file) {
                continue;
            }
            seen.push(r.file);
            // The part of the file this job works on.
            let lo = self.p.regions.iter().filter(|x| x.file == r.file).map(|x| x.start).min().unwrap_or(0);
            let hi = self.p.regions.iter().filter(|x| x.file == r.file).map(|x| x.start + x.len).max().unwrap_or(0);
            let name = file_name(r.file);
            let how = if write { create_0644() } else { openflag4::default(opentype4::OPEN4_NOCREATE) };
            let access = if write { OPEN4_SHARE_ACCESS_BOTH } else { OPEN4_SHARE_ACCESS_READ };
            let mut ops = vec![
                nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&self.p.dir_fh) }),
                open_args(self.clientid, &self.owner, access, how, name.as_bytes()),
                nfs_argop4::OP_GETFH,
            ];
            if self.p.pnfs {
                ops.push(layoutget_of(prefer, CURRENT_STATEID, iomode, lo, hi)); // OPEN's stateid
            }
            let reason_before = self.res.no_layout_reason.clone();
            let body = self.pipes[0].call(&ops)?;
            let res = decode_compound(&body)?;
            let (open_sid, fh) = match (res.resarray.get(1), res.resarray.get(2)) {
                (Some(nfs_resop4::OP_OPEN(OPEN4res::NFS4_OK(o))), Some(nfs_resop4::OP_GETFH(GETFH4res::NFS4_OK(g)))) => {
                    (o.stateid.clone(), g.object.to_vec())
                }
                _ => return Err(format!("OPEN {name}: {}", status_name(res.status as u32))),
            };
            let mut got = self.layoutget_result(&name, res.resarray.get(3))?;
            if res.resarray.len() < 4 && self.p.pnfs && res.status != nfsstat4::NFS4_OK {
                return Err(format!("OPEN {name}: {}", status_name(res.status as u32)));
            }
            drop(res);
            let other = self.p.layout_types.iter().copied().find(|t| *t != prefer);
            if let (true, true, Some(t)) = (self.p.pnfs, got.is_none(), other) {
                let body = self.pipes[0].call(&[
                    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&fh) }),
                    layoutget_of(t, open_sid.clone(), iomode, lo, hi),
                ])?;
                let res = decode_compound(&body)?;
                got = self.layoutget_result(&name, res.resarray.get(1))?;
                if got.is_some() {
                    // The file has layouts after all: the first type's refusal is no reason.
                    prefer = t;
                    self.res.no_layout_reason = reason_before;
                }
            }
            let layout = match got {
                None => None,
                Some((sid, layouts)) if prefer == layouttype4::LAYOUT4_FLEX_FILES => {
                    self.flex_layout(&name, &fh, sid, layouts, iomode, lo, hi, &mut flex_devices, &mut ds_pipe)?
                }
                Some((sid, layouts)) => {
                    let l = layouts
                        .iter()
                        .find(|l| l.layout_type == layouttype4::LAYOUT4_NFSV4_1_FILES && l.offset == 0)
                        .ok_or_else(|| format!("LAYOUTGET {name}: no files layout from offset 0"))?;
                    let fl = FileLayout::decode(&l.body).map_err(|e| format!("LAYOUTGET {name}: {e}"))?;
                    let covers = l.length == u64::MAX || l.length >= hi;
                    if !covers {
                        self.res.no_layout_reason = Some(format!("layout of {name} covers only {} bytes", l.length));
                        None
                    } else {
                        Some(self.files_layout(&name, fl, sid, &mut devices, &mut ds_pipe)?)
                    }
                }
            };
            self.files.push(FileCtx { file: r.file, fh, open_sid, layout, ds_written_end: 0, dirty: Vec::new() });
        }
        self.copies = self
            .files
            .iter()
            .filter_map(|f| match f.layout.as_ref().map(|l| &l.map) {
                Some(LayoutMap::Flex(segs)) if write => segs.iter().map(|s| s.mirrors.len()).max(),
                _ => None,
            })
            .max()
            .unwrap_or(1);
        Ok(())
    }

    /// The layouts of a LAYOUTGET result (None, with the reason noted,
    /// when the server has none for us).
    fn layoutget_result(&mut self, name: &str, r: Option<&nfs_resop4>) -> PResult<Option<(stateid4, Vec<LayoutSegment>)>> {
        match r {
            Some(nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(ok))) => {
                Ok(Some((ok.logr_stateid.clone(), ok.logr_layout.iter().map(LayoutSegment::from_wire).collect())))
            }
            Some(nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4ERR_LAYOUTTRYLATER(_))) => {
                self.res.no_layout_reason = Some("LAYOUTGET: NFS4ERR_LAYOUTTRYLATER".into());
                Ok(None)
            }
            Some(nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::default(st))) if layout_unavailable(*st) => {
                self.res.no_layout_reason = Some(format!("LAYOUTGET: {st:?}"));
                Ok(None)
            }
            Some(nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::default(st))) => Err(format!("LAYOUTGET {name}: {st:?}")),
            _ => Ok(None),
        }
    }

    /// The pipe of data server `addr` (connected the first time).
    fn ds_pipe(&mut self, addr: SocketAddr, ds_pipe: &mut HashMap<SocketAddr, usize>) -> PResult<usize> {
        if let Some(i) = ds_pipe.get(&addr) {
            return Ok(*i);
        }
        let pipe = Pipe::connect_as(addr, &self.pipes[0], self.p.qd, self.p.bs)?;
        if self.p.bs > pipe.max_io() {
            return Err(format!("--bs {} exceeds data server {addr}'s session limit", self.p.bs));
        }
        self.pipes.push(pipe);
        ds_pipe.insert(addr, self.pipes.len() - 1);
        Ok(self.pipes.len() - 1)
    }

    fn files_layout(
        &mut self,
        name: &str,
        fl: FileLayout,
        sid: stateid4,
        devices: &mut HashMap<[u8; 16], DeviceAddrs>,
        ds_pipe: &mut HashMap<SocketAddr, usize>,
    ) -> PResult<LayoutCtx> {
        if let std::collections::hash_map::Entry::Vacant(slot) = devices.entry(fl.device_id) {
            let body = self.pipes[0].call(&[getdeviceinfo_of(layouttype4::LAYOUT4_NFSV4_1_FILES, fl.device_id)])?;
            let res = decode_compound(&body)?;
            let dev = match res.resarray.first() {
                Some(nfs_resop4::OP_GETDEVICEINFO(GETDEVICEINFO4res::NFS4_OK(ok))) => DeviceAddrs::decode(&ok.gdir_device_addr.da_addr_body)?,
                _ => return Err(format!("GETDEVICEINFO: {}", status_name(res.status as u32))),
            };
            slot.insert(dev);
        }
        let dev = devices[&fl.device_id].clone();
        fl.check(&dev).map_err(|e| format!("layout of {name}: {e}"))?;
        let mut pipe_of_ds = Vec::with_capacity(dev.ds_lists.len());
        for ds in 0..dev.ds_lists.len() {
            let addr = dev.tcp_addr(ds).ok_or_else(|| format!("data server {ds}: no TCP universal address"))?;
            pipe_of_ds.push(self.ds_pipe(addr, ds_pipe)?);
        }
        // The fill phase writes whole stripe units when they are smaller than bs.
        if self.p.fill && fl.stripe_unit < self.res.effective_bs && fl.stripe_unit % 512 == 0 {
            self.res.effective_bs = fl.stripe_unit;
        }
        self.res.layouts += 1;
        let commit_through_mds = fl.commit_through_mds;
        Ok(LayoutCtx {
            map: LayoutMap::Files { stripe_indices: dev.stripe_indices.clone(), pipe_of_ds, fl },
            targets: Vec::new(),
            layout_type: layouttype4::LAYOUT4_NFSV4_1_FILES,
            sid,
            commit_through_mds,
            no_layoutcommit: false,
        })
    }

    /// The flexfiles segments of [lo, hi): those of the first reply, then
    /// a LAYOUTGET from the end of the covered range until it reaches `hi`.
    #[allow(clippy::too_many_arguments)]
    fn flex_layout(
        &mut self,
        name: &str,
        fh: &[u8],
        mut sid: stateid4,
        mut layouts: Vec<LayoutSegment>,
        iomode: layoutiomode4,
        lo: u64,
        hi: u64,
        flex_devices: &mut HashMap<[u8; 16], usize>,
        ds_pipe: &mut HashMap<SocketAddr, usize>,
    ) -> PResult<Option<LayoutCtx>> {
        let mut ctx = LayoutCtx {
            map: LayoutMap::Flex(Vec::new()),
            targets: Vec::new(),
            layout_type: layouttype4::LAYOUT4_FLEX_FILES,
            sid: sid.clone(),
            commit_through_mds: false,
            no_layoutcommit: false,
        };
        let mut segs: Vec<FlexSeg> = Vec::new();
        let mut covered = lo;
        for _ in 0..MAX_SEGMENTS {
            for l in &layouts {
                let seg = Segment::from_layout(l).map_err(|e| format!("LAYOUTGET {name}: {e}"))?;
                if seg.layout.mirrors.len() > MAX_MIRRORS {
                    return Err(format!("layout of {name}: {} mirrors (this tool writes at most {MAX_MIRRORS})", seg.layout.mirrors.len()));
                }
                ctx.no_layoutcommit = seg.layout.no_layoutcommit();
                let fs = self.flex_seg(&seg, &mut ctx.targets, flex_devices, ds_pipe)?;
                segs.retain(|s| s.end <= fs.start || s.start >= fs.end);
                segs.push(fs);
                self.res.layouts += 1;
            }
            segs.sort_by_key(|s| s.start);
            while let Some(s) = segs.iter().find(|s| s.start <= covered && covered < s.end) {
                covered = s.end;
            }
            if covered >= hi.max(lo + 1) {
                ctx.sid = sid;
                ctx.map = LayoutMap::Flex(segs);
                return Ok(Some(ctx));
            }
            let body = self.pipes[0].call(&[
                nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) }),
                layoutget_of(layouttype4::LAYOUT4_FLEX_FILES, sid.clone(), iomode, covered, hi),
            ])?;
            let res = decode_compound(&body)?;
            match self.layoutget_result(name, res.resarray.get(1))? {
                Some((s, l)) if !l.is_empty() => {
                    sid = s;
                    layouts = l;
                }
                _ => {
                    let why = self.res.no_layout_reason.clone().unwrap_or_else(|| "no layout".into());
                    return Err(format!("LAYOUTGET {name} at {covered}: {why}"));
                }
            }
        }
        Err(format!("layout of {name}: [{lo}, {hi}) needs more than {MAX_SEGMENTS} segments"))
    }

    /// A segment's targets: GETDEVICEINFO and a connection for new devices.
    fn flex_seg(
        &mut self,
        seg: &Segment,
        targets: &mut Vec<FlexTarget>,
        flex_devices: &mut HashMap<[u8; 16], usize>,
        ds_pipe: &mut HashMap<SocketAddr, usize>,
    ) -> PResult<FlexSeg> {
        let mut mirrors = Vec::with_capacity(seg.layout.mirrors.len());
        for m in &seg.layout.mirrors {
            let mut stripes = Vec::with_capacity(m.data_servers.len());
            for d in &m.data_servers {
                let pipe = match flex_devices.get(&d.device_id) {
                    Some(p) => *p,
                    None => {
                        let body = self.pipes[0].call(&[getdeviceinfo_of(layouttype4::LAYOUT4_FLEX_FILES, d.device_id)])?;
                        let res = decode_compound(&body)?;
                        let dev = match res.resarray.first() {
                            Some(nfs_resop4::OP_GETDEVICEINFO(GETDEVICEINFO4res::NFS4_OK(ok))) => FlexDevice::decode(&ok.gdir_device_addr.da_addr_body)?,
                            _ => return Err(format!("GETDEVICEINFO (flexfiles): {}", status_name(res.status as u32))),
                        };
                        drop(res);
                        let addr = dev.tcp_addr().ok_or_else(|| format!("flexfiles device: no TCP address in {:?}", dev.netaddrs))?;
                        let p = self.ds_pipe(addr, ds_pipe)?;
                        flex_devices.insert(d.device_id, p);
                        p
                    }
                };
                let t = match targets.iter().position(|t| t.pipe == pipe && t.fh == d.fh && t.sid == d.stateid) {
                    Some(t) => t,
                    None => {
                        targets.push(FlexTarget { pipe, fh: d.fh.clone(), sid: d.stateid.clone() });
                        targets.len() - 1
                    }
                };
                stripes.push(t);
            }
            mirrors.push(stripes);
        }
        let su = seg.layout.stripe_unit;
        if self.p.fill && su > 0 && su < self.res.effective_bs && su % 512 == 0 {
            self.res.effective_bs = su;
        }
        let read_order = seg.layout.read_order();
        let best = seg.layout.efficiency(read_order[0]);
        let read_ties = read_order.iter().take_while(|&&m| seg.layout.efficiency(m) == best).count();
        Ok(FlexSeg { start: seg.offset, end: seg.end(), stripe_unit: su, mirrors, read_order, read_ties })
    }

    fn file_ix(&self, file: u32) -> usize {
        self.files.iter().position(|f| f.file == file).unwrap_or(0)
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn note_error(&mut self, what: String) {
        self.res.errors += 1;
        if self.res.first_error.is_none() {
            self.res.first_error = Some(what);
        }
    }

    fn run_workload(&mut self) -> PResult<()> {
        match self.p.workload {
            _ if self.p.fill && self.p.regions.iter().all(|r| r.len == 0) => Ok(()), // create only
            _ if self.p.fill => self.run_data(),
            w if w.is_data() => self.run_data(),
            _ => self.run_meta(),
        }
    }

    /// Waits for one reply on any connection with requests outstanding.
    /// Every readable connection is drained as data arrives (`Pipe::pump`);
    /// a reply is taken only once it is whole, so no connection waits for
    /// another's data.
    fn wait_reply(&mut self) -> PResult<(usize, crate::pipe::Reply)> {
        loop {
            let n = self.pipes.len();
            self.rot = self.rot.wrapping_add(1);
            if let Some(pi) = (0..n).map(|k| (k + self.rot) % n).find(|&i| self.pipes[i].outstanding > 0 && self.pipes[i].buffered()) {
                let r = self.pipes[pi].recv()?;
                self.outstanding -= 1;
                return Ok((pi, r));
            }
            self.fds.clear();
            self.fd_pipe.clear();
            for (i, pp) in self.pipes.iter().enumerate() {
                if pp.outstanding > 0 {
                    self.fds.push(pp.fd());
                    self.fd_pipe.push(i);
                }
            }
            if self.fds.is_empty() {
                return Err("internal: waiting with nothing outstanding".into());
            }
            let k = poll_readable(&self.fds, &mut self.pfds, self.rot).map_err(|e| format!("poll: {e}"))?;
            // Drain every connection poll found readable, not just one.
            for j in 0..self.fds.len() {
                if j == k || self.pfds[j].revents != 0 {
                    let pi = self.fd_pipe[j];
                    let addr = self.pipes[pi].addr;
                    self.pipes[pi].pump().map_err(|e| format!("{addr}: receive: {e}"))?;
                }
            }
        }
    }

    fn stamp_mode(&self) -> bool {
        self.p.stamp && !self.bufs.is_empty()
    }

    /// Where one request goes: up to MAX_MIRRORS (pipe, data server fh
    /// index or usize::MAX for the MDS fh, object offset); a flexfiles WRITE
    /// goes to every mirror, a READ to the best mirror not skipped. Also the
    /// mirror count of a flexfiles READ (0 otherwise). None of it when the
    /// request crosses a stripe unit or segment: it goes through the MDS.
    fn targets(&mut self, fi: usize, req: Req, write: bool) -> ([(usize, usize, u64); MAX_MIRRORS], usize, u8) {
        let bs = self.res.effective_bs;
        let mut out = [(0usize, usize::MAX, req.off); MAX_MIRRORS];
        let Some(l) = &self.files[fi].layout else { return (out, 1, 0) };
        let crossing = match &l.map {
            LayoutMap::Files { fl, stripe_indices, pipe_of_ds } => match fl.locate(req.off, stripe_indices.len(), stripe_indices) {
                Some(loc) if loc.unit_left >= bs => {
                    out[0] = (pipe_of_ds[loc.ds], loc.fh, loc.object_offset);
                    return (out, 1, 0);
                }
                _ => format!("crosses a {}-byte stripe unit", fl.stripe_unit),
            },
            LayoutMap::Flex(segs) => match segs.iter().find(|s| s.start <= req.off && req.off < s.end) {
                Some(s) if s.end - req.off >= bs && (s.stripe_unit == 0 || s.stripe_unit - req.off % s.stripe_unit >= bs) => {
                    let stripe = |m: &Vec<usize>| m[(req.off.checked_div(s.stripe_unit).unwrap_or(0) % m.len() as u64) as usize];
                    if write {
                        for (k, m) in s.mirrors.iter().enumerate() {
                            let t = stripe(m);
                            out[k] = (l.targets[t].pipe, t, req.off);
                        }
                        return (out, s.mirrors.len(), 0);
                    }
                    let first = if s.read_ties > 1 { ((req.off / bs) % s.read_ties as u64) as usize } else { 0 };
                    let m = s.read_order[(first + req.skip_mirrors as usize) % s.read_order.len()];
                    let t = stripe(&s.mirrors[m]);
                    out[0] = (l.targets[t].pipe, t, req.off);
                    return (out, 1, s.mirrors.len() as u8);
                }
                Some(s) => format!("crosses the end of a flexfiles segment or stripe unit ([{}, {}), unit {})", s.start, s.end, s.stripe_unit),
                None => "lies in no flexfiles segment held".to_string(),
            },
        };
        if !self.res.straddle_warned {
            self.res.straddle_warned = true;
            eprintln!("pnfs-bench: job {}: a {bs}-byte request at {} {crossing}: sent through the MDS (use --bs <= stripe unit)", self.p.id, req.off);
        }
        (out, 1, 0)
    }

    /// Sends one READ or WRITE (a flexfiles WRITE once per mirror); false
    /// when a target connection has no free slot (try again after a reply).
    fn issue_io(&mut self, req: Req, measured: bool) -> PResult<bool> {
        let write = self.p.workload.is_write() || self.p.fill;
        let bs = self.res.effective_bs;
        let file_no = self.p.regions[req.region as usize].file;
        let fi = self.file_ix(file_no);
        let (targets, n, mirrors) = self.targets(fi, req, write);
        if targets[..n].iter().any(|t| !self.pipes[t.0].has_free_slot()) {
            return Ok(false);
        }
        let buf_ix = if write && self.stamp_mode() {
            match self.free_bufs.pop() {
                Some(b) => b,
                None => return Ok(false),
            }
        } else {
            NO_BUF
        };
        if buf_ix != NO_BUF {
            pattern::stamp(&mut self.bufs[buf_ix as usize], file_no, req.off);
        }
        for (k, &(pi, fh_ix, obj_off)) in targets[..n].iter().enumerate() {
            let via_ds = fh_ix != usize::MAX;
            let f = &self.files[fi];
            let (fh, sid) = match (&f.layout, via_ds) {
                (Some(l), true) => match &l.map {
                    LayoutMap::Files { fl, .. } => (&fl.fhs[fh_ix], stateid4 { seqid: 0, other: f.open_sid.other }),
                    LayoutMap::Flex(_) => (&l.targets[fh_ix].fh, l.targets[fh_ix].sid.clone()),
                },
                _ => (&f.fh, f.open_sid.clone()),
            };
            let pipe = &mut self.pipes[pi];
            let slot = pipe.start(2).ok_or("internal: no slot")?;
            let b = pipe.buf(slot);
            putfh_words(b, fh);
            if write {
                b.extend_from_slice(&(nfs_opnum4::OP_WRITE as u32).to_be_bytes());
                stateid_words(b, &sid);
                b.extend_from_slice(&obj_off.to_be_bytes());
                let stable = if self.p.stable_file { stable_how4::FILE_SYNC4 } else { stable_how4::UNSTABLE4 };
                b.extend_from_slice(&(stable as u32).to_be_bytes());
                b.extend_from_slice(&(bs as u32).to_be_bytes());
                let payload: &[u8] = if buf_ix != NO_BUF { &self.bufs[buf_ix as usize] } else { &self.shared_payload };
                pipe.send(slot, payload)?;
                let f = &mut self.files[fi];
                let key = (pi, fh_ix);
                if !self.p.stable_file && !f.dirty.contains(&key) {
                    f.dirty.push(key);
                }
                if via_ds {
                    f.ds_written_end = f.ds_written_end.max(req.off + bs);
                }
            } else {
                b.extend_from_slice(&(nfs_opnum4::OP_READ as u32).to_be_bytes());
                stateid_words(b, &sid);
                b.extend_from_slice(&obj_off.to_be_bytes());
                b.extend_from_slice(&(bs as u32).to_be_bytes());
                pipe.send(slot, &[])?;
            }
            self.inflight[pi][slot as usize] = InFlight {
                t: Instant::now(),
                kind: if write { Kind::Write } else { Kind::Read },
                req,
                measured,
                via_ds,
                mirror_copy: k > 0,
                mirrors,
                // The payload buffer is free again when the first copy is answered:
                // every copy was sent from it already.
                buf: if k == 0 { buf_ix } else { NO_BUF },
                chain: 0,
            };
            self.outstanding += 1;
        }
        Ok(true)
    }

    /// Handles one I/O reply; returns a request to resend (NFS4ERR_DELAY).
    fn complete_io(&mut self, pi: usize, r: crate::pipe::Reply) -> Option<Req> {
        let inf = self.inflight[pi][r.slot as usize];
        if inf.buf != NO_BUF {
            self.free_bufs.push(inf.buf);
        }
        let lat = inf.t.elapsed();
        if r.status == nfsstat4::NFS4ERR_DELAY as u32 {
            let since = *self.delayed_since.get_or_insert_with(Instant::now);
            if since.elapsed() < MAX_DELAYED {
                std::thread::sleep(Duration::from_millis(1));
                // A mirrored WRITE is sent again to every mirror (rewriting
                // the same bytes is harmless; rare enough to leave the count).
                return Some(inf.req);
            }
        } else {
            self.delayed_since = None;
        }
        if r.status != 0 && inf.kind == Kind::Read && (inf.req.skip_mirrors as usize + 1) < inf.mirrors as usize {
            // A flexfiles READ that failed on one mirror: the next one.
            if !self.failover_warned {
                self.failover_warned = true;
                eprintln!("pnfs-bench: job {}: READ at {} failed on {} ({}): trying the next mirror", self.p.id, inf.req.off, self.pipes[pi].addr, status_name(r.status));
            }
            return Some(Req { skip_mirrors: inf.req.skip_mirrors + 1, ..inf.req });
        }
        if r.status != 0 {
            let what = format!("{:?} at offset {} on {}: {}", kind_name(inf.kind), inf.req.off, self.pipes[pi].addr, status_name(r.status));
            self.note_error(what);
            return None;
        }
        if inf.mirror_copy {
            // The other mirrors' copies: the first copy's reply counts the bytes.
            return None;
        }
        let data = self.pipes[pi].results(&r);
        let mut d = Decoder::new(data);
        let parsed: Result<u64, String> = (|| {
            let _ = (d.get_u32(), d.get_u32()); // PUTFH result
            let _op = d.get_u32().map_err(err_s)?;
            let _st = d.get_u32().map_err(err_s)?;
            match inf.kind {
                Kind::Write => Ok(d.get_u32().map_err(err_s)? as u64),
                _ => {
                    let _eof = d.get_u32().map_err(err_s)?;
                    let n = d.get_u32().map_err(err_s)? as usize;
                    let bytes = d.take(n).map_err(err_s)?;
                    if self.p.verify {
                        let region = &self.p.regions[inf.req.region as usize];
                        if let Err(e) = pattern::check(bytes, region.file, inf.req.off) {
                            return Err(format!("verify: {e}"));
                        }
                    }
                    Ok(n as u64)
                }
            }
        })();
        match parsed {
            Ok(n) => {
                if inf.measured {
                    self.res.bytes += n;
                    self.res.requests += 1;
                    self.res.hist.record(lat.as_nanos() as u64);
                    if inf.via_ds {
                        self.res.ds_requests += 1;
                    } else {
                        self.res.mds_io_requests += 1;
                    }
                }
                if n < self.res.effective_bs && inf.measured {
                    self.note_error(format!("short {} of {n} bytes at {}", kind_name(inf.kind), inf.req.off));
                }
            }
            Err(e) => {
                if e.starts_with("verify") {
                    self.res.verify_errors += 1;
                }
                self.note_error(e);
            }
        }
        None
    }

    /// Starts a run's clock: the measured window opens after the ramp.
    fn begin_window(&mut self) -> Window {
        let now = Instant::now();
        let mut w = Window { start: now + self.p.ramp, open: false, mds_sent0: 0 };
        self.tick_window(&mut w, now);
        w
    }

    /// Opens the window once the ramp is over: results and MDS COMPOUNDs
    /// count from then.
    fn tick_window(&mut self, w: &mut Window, now: Instant) {
        if !w.open && now >= w.start {
            w.open = true;
            self.res.measure_start = Some(now);
            w.mds_sent0 = self.pipes[0].sent;
        }
    }

    fn end_window(&mut self, w: Window) {
        self.res.end = Some(Instant::now());
        if self.res.measure_start.is_none() {
            self.res.measure_start = self.res.end;
        }
        self.res.mds_ops = self.pipes[0].sent - w.mds_sent0;
    }

    fn run_data(&mut self) -> PResult<()> {
        let write = self.p.workload.is_write() || self.p.fill;
        let bs = self.res.effective_bs;
        let random = self.p.workload.is_random() && !self.p.fill;
        let mut w = self.begin_window();
        let deadline = match self.p.stop {
            Stop::Runtime(s) => Some(w.start + Duration::from_secs_f64(s)),
            Stop::Bytes(_) => None,
        };
        let budget = match self.p.stop {
            Stop::Bytes(b) => b,
            Stop::Runtime(_) => u64::MAX,
        };
        let mut issued: u64 = 0; // measured bytes issued
        let (mut ri, mut off) = (0usize, 0u64); // sequential cursor
        let mut pending: Option<Req> = None;
        let mut retry: VecDeque<Req> = VecDeque::with_capacity(self.p.qd);
        let mut commit_file: Option<u32> = None;
        let mut stopping = false;
        let mut since_check = 0u32;
        loop {
            self.tick_window(&mut w, Instant::now());
            while !stopping && commit_file.is_none() && self.outstanding < self.p.qd * self.copies {
                let req = match pending.take().or_else(|| retry.pop_front()) {
                    Some(r) => r,
                    None => {
                        if w.open && issued >= budget {
                            stopping = true;
                            break;
                        }
                        since_check += 1;
                        if let Some(d) = deadline {
                            if since_check >= 8 || self.outstanding == 0 {
                                since_check = 0;
                                if Instant::now() >= d {
                                    stopping = true;
                                    break;
                                }
                            }
                        }
                        let req = if random {
                            let n = self.p.regions.len() as u64;
                            let r = (self.next_rand() % n) as usize;
                            let blocks = self.p.regions[r].len / bs;
                            let blk = self.next_rand() % blocks.max(1);
                            Req { region: r as u32, off: self.p.regions[r].start + blk * bs, skip_mirrors: 0 }
                        } else {
                            let reg = &self.p.regions[ri];
                            let req = Req { region: ri as u32, off: reg.start + off, skip_mirrors: 0 };
                            off += bs;
                            if off + bs > reg.len {
                                // End of this region's pass.
                                if write && !self.p.stable_file {
                                    commit_file = Some(reg.file);
                                }
                                off = 0;
                                ri = (ri + 1) % self.p.regions.len();
                            }
                            req
                        };
                        if w.open {
                            issued += bs;
                        }
                        req
                    }
                };
                if !self.issue_io(req, w.open)? {
                    pending = Some(req);
                    break;
                }
            }
            if self.outstanding == 0 {
                if let Some(f) = commit_file.take() {
                    self.commit_file(f)?;
                    continue;
                }
                if stopping {
                    break;
                }
                if pending.is_some() || !retry.is_empty() {
                    return Err("internal: a request cannot be sent with nothing outstanding".into());
                }
                continue;
            }
            let (pi, r) = self.wait_reply()?;
            if let Some(again) = self.complete_io(pi, r) {
                retry.push_back(again);
            }
            if self.res.errors > 1000 && self.res.requests == 0 {
                return Err(format!("job {}: only errors: {}", self.p.id, self.res.first_error.clone().unwrap_or_default()));
            }
        }
        // Unstable writes end with COMMITs and LAYOUTCOMMIT: counted in time.
        if write {
            for f in self.files.iter().map(|f| f.file).collect::<Vec<_>>() {
                self.commit_file(f)?;
            }
            self.layoutcommit()?;
        }
        self.end_window(w);
        Ok(())
    }

    /// COMMITs everything written UNSTABLE to `file` since the last COMMIT
    /// (each data server object, or the MDS file), in parallel.
    fn commit_file(&mut self, file: u32) -> PResult<()> {
        let fi = self.file_ix(file);
        let dirty = std::mem::take(&mut self.files[fi].dirty);
        let via_mds = self.files[fi].layout.as_ref().is_some_and(|l| l.commit_through_mds);
        let mut sent_mds = false;
        for (pi, fh_ix) in dirty {
            let f = &self.files[fi];
            let (pi, fh) = match (&f.layout, fh_ix) {
                (Some(l), i) if i != usize::MAX && !via_mds => (pi, l.fh(i).to_vec()),
                _ => {
                    if sent_mds {
                        continue;
                    }
                    sent_mds = true;
                    (0, f.fh.clone())
                }
            };
            while !self.pipes[pi].has_free_slot() {
                let r = self.pipes[pi].recv()?;
                self.outstanding -= 1;
                self.commit_reply(pi, r);
            }
            let pipe = &mut self.pipes[pi];
            let slot = pipe.start(2).ok_or("internal: no slot")?;
            let b = pipe.buf(slot);
            putfh_words(b, &fh);
            b.extend_from_slice(&(nfs_opnum4::OP_COMMIT as u32).to_be_bytes());
            b.extend_from_slice(&0u64.to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes());
            pipe.send(slot, &[])?;
            self.inflight[pi][slot as usize].kind = Kind::Commit;
            self.inflight[pi][slot as usize].buf = NO_BUF;
            self.outstanding += 1;
        }
        while self.outstanding > 0 {
            let (pi, r) = self.wait_reply()?;
            self.commit_reply(pi, r);
        }
        Ok(())
    }

    fn commit_reply(&mut self, pi: usize, r: crate::pipe::Reply) {
        if r.status != 0 {
            self.note_error(format!("COMMIT on {}: {}", self.pipes[pi].addr, status_name(r.status)));
        }
    }

    /// LAYOUTCOMMIT the new size of files written through the data servers.
    fn layoutcommit(&mut self) -> PResult<()> {
        for fi in 0..self.files.len() {
            let f = &self.files[fi];
            let (Some(l), end) = (&f.layout, f.ds_written_end) else { continue };
            if end == 0 || l.no_layoutcommit {
                continue;
            }
            let ops = [
                nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&f.fh) }),
                layoutcommit_of(l.layout_type, l.sid.clone(), end),
            ];
            let body = self.pipes[0].call(&ops)?;
            let st = decode_compound(&body)?.status;
            if st != nfsstat4::NFS4_OK {
                self.note_error(format!("LAYOUTCOMMIT f{}: {st:?}", f.file));
            }
            self.files[fi].ds_written_end = 0;
        }
        Ok(())
    }

    /// LAYOUTRETURN and CLOSE every file (untimed).
    fn teardown(&mut self) -> PResult<()> {
        for f in &self.files {
            if let Some(l) = &f.layout {
                let ops = [
                    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&f.fh) }),
                    whole_file_layoutreturn_of(l.layout_type, l.sid.clone(), layoutiomode4::LAYOUTIOMODE4_ANY),
                ];
                // A failed return only leaves state on the server until the lease ends.
                let _ = self.pipes[0].call(&ops);
            }
            let ops = [
                nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&f.fh) }),
                nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: f.open_sid.clone() }),
            ];
            let _ = self.pipes[0].call(&ops);
        }
        Ok(())
    }

    /// Metadata workloads: every chain (one per qd) keeps one COMPOUND in
    /// flight on the MDS connection.
    fn run_meta(&mut self) -> PResult<()> {
        let olc = self.p.workload == Workload::OpenLayoutClose;
        let qd = self.p.qd.min(self.pipes[0].slots);
        let nfiles = self.p.regions.len();
        let owners: Vec<Vec<u8>> = (0..qd).map(|c| format!("pnfs-bench-job{}-chain{c}", self.p.id).into_bytes()).collect();
        let names: Vec<Vec<u8>> = self.p.regions.iter().map(|r| file_name(r.file).into_bytes()).collect();
        // Per chain: file index, filehandle and stateid of its open.
        let mut chain_file: Vec<usize> = (0..qd).map(|c| c % nfiles).collect();
        let mut chain_fh: Vec<Vec<u8>> = vec![Vec::with_capacity(128); qd];
        let mut chain_sid: Vec<stateid4> = vec![stateid4 { seqid: 0, other: [0; 12] }; qd];
        let mut next_file = qd % nfiles;
        let mut w = self.begin_window();
        let runtime = match self.p.stop {
            Stop::Runtime(s) => s,
            Stop::Bytes(_) => 10.0,
        };
        let deadline = w.start + Duration::from_secs_f64(runtime);
        let mut stopping = false;
        let mut layoutget = self.p.pnfs;
        let mut gfile = 0usize;
        // Start every chain.
        let mut to_start: Vec<(u32, Kind)> = (0..qd as u32).map(|c| (c, if olc { Kind::Open } else { Kind::Getattr })).collect();
        loop {
            let now = Instant::now();
            self.tick_window(&mut w, now);
            if !stopping && now >= deadline {
                stopping = true;
            }
            while let Some((c, kind)) = to_start.pop() {
                let cu = c as usize;
                if stopping && kind != Kind::Close {
                    continue;
                }
                let pipe = &mut self.pipes[0];
                let Some(slot) = pipe.start(match kind {
                    Kind::Open => {
                        if layoutget {
                            4
                        } else {
                            3
                        }
                    }
                    _ => 2,
                }) else {
                    to_start.push((c, kind));
                    break;
                };
                match kind {
                    Kind::Open => {
                        let name = &names[chain_file[cu]];
                        let how = openflag4::default(opentype4::OPEN4_NOCREATE);
                        let open = open_args(self.clientid, &owners[cu], OPEN4_SHARE_ACCESS_READ, how, name);
                        let putfh = nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&self.p.dir_fh) });
                        if layoutget {
                            let lg = whole_file_layoutget(CURRENT_STATEID, layoutiomode4::LAYOUTIOMODE4_READ, 0, 64 * 1024);
                            pipe.push_ops(slot, &[putfh, open, nfs_argop4::OP_GETFH, lg])?;
                        } else {
                            pipe.push_ops(slot, &[putfh, open, nfs_argop4::OP_GETFH])?;
                        }
                    }
                    Kind::Close => {
                        let b = pipe.buf(slot);
                        putfh_words(b, &chain_fh[cu]);
                        b.extend_from_slice(&(nfs_opnum4::OP_CLOSE as u32).to_be_bytes());
                        b.extend_from_slice(&0u32.to_be_bytes());
                        stateid_words(b, &chain_sid[cu]);
                    }
                    _ => {
                        let fh = &self.p.fhs[gfile];
                        gfile = (gfile + 1) % self.p.fhs.len();
                        let b = pipe.buf(slot);
                        putfh_words(b, fh);
                        b.extend_from_slice(&(nfs_opnum4::OP_GETATTR as u32).to_be_bytes());
                        b.extend_from_slice(&2u32.to_be_bytes());
                        b.extend_from_slice(&LINUX_GETATTR[0].to_be_bytes());
                        b.extend_from_slice(&LINUX_GETATTR[1].to_be_bytes());
                    }
                }
                pipe.send(slot, &[])?;
                self.inflight[0][slot as usize] =
                    InFlight {
                    t: Instant::now(),
                    kind,
                    req: Req { region: 0, off: 0, skip_mirrors: 0 },
                    measured: w.open,
                    via_ds: false,
                    mirror_copy: false,
                    mirrors: 0,
                    buf: NO_BUF,
                    chain: c,
                };
                self.outstanding += 1;
            }
            if self.outstanding == 0 {
                break;
            }
            let (_, r) = self.wait_reply()?;
            let inf = self.inflight[0][r.slot as usize];
            let lat = inf.t.elapsed().as_nanos() as u64;
            let c = inf.chain as usize;
            if r.status == nfsstat4::NFS4ERR_DELAY as u32 && !r.seq_ok {
                std::thread::sleep(Duration::from_millis(1));
                to_start.push((inf.chain, inf.kind));
                continue;
            }
            if inf.measured {
                self.res.hist.record(lat);
                self.res.requests += 1;
            }
            match inf.kind {
                Kind::Getattr => {
                    if r.status != 0 {
                        self.note_error(format!("GETATTR: {}", status_name(r.status)));
                    } else if inf.measured {
                        self.res.cycles += 1;
                    }
                    to_start.push((inf.chain, Kind::Getattr));
                }
                Kind::Open => {
                    // Results after SEQUENCE: PUTFH, OPEN, GETFH[, LAYOUTGET].
                    let data = self.pipes[0].results(&r);
                    let mut d = Decoder::new(data);
                    let mut opened = false;
                    let mut failed: Option<String> = None;
                    let mut lg_unavailable: Option<String> = None;
                    while d.remaining() > 0 {
                        let Ok(res) = nfs_resop4::decode(&mut d) else {
                            failed = Some("undecodable OPEN reply".into());
                            break;
                        };
                        match res {
                            nfs_resop4::OP_OPEN(OPEN4res::NFS4_OK(o)) => {
                                chain_sid[c] = o.stateid.clone();
                                opened = true;
                            }
                            nfs_resop4::OP_GETFH(GETFH4res::NFS4_OK(g)) => {
                                chain_fh[c].clear();
                                chain_fh[c].extend_from_slice(&g.object);
                            }
                            nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4_OK(_)) => self.res.layouts += 1,
                            nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::default(st)) if layout_unavailable(st) => {
                                lg_unavailable = Some(format!("LAYOUTGET: {st:?}"));
                            }
                            nfs_resop4::OP_LAYOUTGET(LAYOUTGET4res::NFS4ERR_LAYOUTTRYLATER(_)) => {
                                lg_unavailable = Some("LAYOUTGET: NFS4ERR_LAYOUTTRYLATER".into());
                            }
                            _ => {}
                        }
                    }
                    if let Some(why) = lg_unavailable {
                        // The server has no layouts for us: go on without LAYOUTGET.
                        layoutget = false;
                        self.res.no_layout_reason = Some(why);
                    } else if r.status != 0 && failed.is_none() {
                        failed = Some(format!("OPEN+LAYOUTGET f{}: {}", chain_file[c], status_name(r.status)));
                    }
                    if let Some(e) = failed {
                        self.note_error(e);
                    }
                    if opened && !chain_fh[c].is_empty() {
                        to_start.push((inf.chain, Kind::Close));
                    } else {
                        chain_file[c] = next_file;
                        next_file = (next_file + 1) % nfiles;
                        to_start.push((inf.chain, Kind::Open));
                    }
                }
                Kind::Close => {
                    if r.status != 0 {
                        self.note_error(format!("CLOSE: {}", status_name(r.status)));
                    } else if inf.measured {
                        self.res.cycles += 1;
                    }
                    chain_file[c] = next_file;
                    next_file = (next_file + 1) % nfiles;
                    to_start.push((inf.chain, Kind::Open));
                }
                _ => {}
            }
            if self.res.errors > 1000 && self.res.cycles == 0 {
                return Err(format!("job {}: only errors: {}", self.p.id, self.res.first_error.clone().unwrap_or_default()));
            }
        }
        self.end_window(w);
        Ok(())
    }
}

fn err_s(e: impl std::fmt::Display) -> String {
    err(e.to_string())
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Read => "READ",
        Kind::Write => "WRITE",
        Kind::Commit => "COMMIT",
        Kind::Getattr => "GETATTR",
        Kind::Open => "OPEN",
        Kind::Close => "CLOSE",
    }
}

//! The mdtest-like workload: every job (creator) works in a directory of
//! its own (`mdtest-j<id>` under `--dir`) on `--files` files, in three
//! phases that all jobs start together and that are timed apart:
//!
//! - **create**: OPEN(CREATE UNCHECKED, mode 0644, share WRITE) + GETFH,
//!   then CLOSE: what open(O_CREAT|O_WRONLY) + close() sends; a create is
//!   counted (and its latency taken) when its CLOSE is answered;
//! - **stat**: LOOKUP + GETATTR (the Linux client's bitmap): stat(path);
//! - **remove**: REMOVE: unlink(path).
//!
//! `--qd` files of a job are in flight at once (default 1, as an mdtest
//! task); concurrent creators = jobs x qd. Server CPU is sampled around
//! each phase (`--server-pid`), so each phase has its own ops per server
//! CPU second. Setup (session, directories) and the final rmdir are untimed.

use crate::hist::Histogram;
use crate::job::LINUX_GETATTR;
use crate::opts::Opts;
use crate::pipe::{create_0644, open_args, open_results, status_name, PResult, Pipe};
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::xdr::Opaque;
use pnfs_client::Client;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    Create,
    Stat,
    Remove,
}

pub const PHASES: [Phase; 3] = [Phase::Create, Phase::Stat, Phase::Remove];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Stat => "stat",
            Phase::Remove => "remove",
        }
    }
}

/// One job's counts for one phase.
#[derive(Default)]
struct PhaseResult {
    hist: Histogram,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

impl PhaseResult {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Directory name of job `id`.
pub fn job_dir(id: usize) -> String {
    format!("mdtest-j{id}")
}

/// How often (at most) an operation answered NFS4ERR_DELAY is sent again.
const MAX_DELAY_RETRIES: u32 = 10_000;

/// Runs one phase on `pipe`: `qd` files in flight, each file's chain
/// (create: OPEN then CLOSE) one COMPOUND at a time.
fn run_phase(pipe: &mut Pipe, phase: Phase, dir: &[u8], names: &[Vec<u8>], qd: usize, clientid: u64, owner: &[u8]) -> PResult<PhaseResult> {
    let mut r = PhaseResult::default();
    let qd = qd.min(pipe.slots).max(1);
    // What each slot carries: (file, step: 0 = first COMPOUND, 1 = CLOSE,
    // chain started at, NFS4ERR_DELAY retries).
    let mut by_slot: Vec<(usize, u8, Instant, u32)> = vec![(0, 0, Instant::now(), 0); pipe.slots];
    // Between OPEN and CLOSE: the file's filehandle and open stateid.
    let mut opened: Vec<Option<(Vec<u8>, stateid4)>> = vec![None; if phase == Phase::Create { names.len() } else { 0 }];
    let mut todo: Vec<(usize, u8, Instant, u32)> = Vec::with_capacity(qd);
    let mut next = 0usize;
    loop {
        while todo.len() + pipe.outstanding < qd && next < names.len() {
            todo.push((next, 0, Instant::now(), 0));
            next += 1;
        }
        while let Some((f, step, t0, tries)) = todo.pop() {
            let nops = match (phase, step) {
                (Phase::Create, 0) | (Phase::Stat, _) => 3,
                _ => 2,
            };
            let slot = pipe.start(nops).ok_or("internal: no free slot")?;
            let name = Opaque::borrowed(&names[f]);
            let putdir = nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(dir) });
            match (phase, step) {
                (Phase::Create, 0) => {
                    let open = open_args(clientid, owner, OPEN4_SHARE_ACCESS_WRITE, create_0644(), &names[f]);
                    pipe.push_ops(slot, &[putdir, open, nfs_argop4::OP_GETFH])?;
                }
                (Phase::Create, _) => {
                    let (fh, sid) = opened[f].as_ref().ok_or("internal: CLOSE without OPEN")?;
                    let close = nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: sid.clone() });
                    pipe.push_ops(slot, &[nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) }), close])?;
                }
                (Phase::Stat, _) => pipe.push_ops(
                    slot,
                    &[
                        putdir,
                        nfs_argop4::OP_LOOKUP(LOOKUP4args { objname: name }),
                        nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: LINUX_GETATTR.to_vec() }),
                    ],
                )?,
                (Phase::Remove, _) => pipe.push_ops(slot, &[putdir, nfs_argop4::OP_REMOVE(REMOVE4args { target: name })])?,
            }
            pipe.send(slot, &[])?;
            by_slot[slot as usize] = (f, step, t0, tries);
        }
        if pipe.outstanding == 0 {
            break;
        }
        let rep = pipe.recv()?;
        let (f, step, t0, tries) = by_slot[rep.slot as usize];
        if rep.status == nfsstat4::NFS4ERR_DELAY as u32 && tries < MAX_DELAY_RETRIES {
            std::thread::sleep(Duration::from_millis(1));
            todo.push((f, step, t0, tries + 1));
            continue;
        }
        let name = || String::from_utf8_lossy(&names[f]).into_owned();
        match (phase, step) {
            (Phase::Create, 0) => {
                match open_results(pipe.results(&rep)) {
                    (Some(sid), Some(fh)) if rep.status == 0 => {
                        opened[f] = Some((fh, sid));
                        todo.push((f, 1, t0, 0));
                    }
                    _ => r.error(format!("create {}: OPEN: {}", name(), status_name(rep.status))),
                }
            }
            _ => {
                if phase == Phase::Create {
                    opened[f] = None;
                }
                if rep.status != 0 {
                    let what = match phase {
                        Phase::Create => "create: CLOSE",
                        Phase::Stat => "stat: LOOKUP+GETATTR",
                        Phase::Remove => "remove: REMOVE",
                    };
                    r.error(format!("{what} {}: {}", name(), status_name(rep.status)));
                } else {
                    r.ops += 1;
                    r.hist.record(t0.elapsed().as_nanos() as u64);
                }
            }
        }
        if r.errors > 1000 && r.ops == 0 {
            return Err(format!("{}: only errors: {}", phase.name(), r.first_error.clone().unwrap_or_default()));
        }
    }
    Ok(r)
}

/// One job: its session, then each phase between the barriers. A job that
/// fails still meets every barrier, so that the others do not wait forever.
fn job(server: SocketAddr, minor: u32, id: usize, qd: usize, dir: Vec<u8>, nfiles: u32, barriers: Arc<Vec<Barrier>>) -> PResult<Vec<PhaseResult>> {
    let mut out = Vec::new();
    let mut failed: Option<String> = None;
    let mut pipe = match Pipe::connect(server, minor, qd, 0, true) {
        Ok(p) => Some(p),
        Err(e) => {
            failed = Some(e);
            None
        }
    };
    let names: Vec<Vec<u8>> = (0..nfiles).map(|i| format!("f{i}").into_bytes()).collect();
    let owner = format!("pnfs-bench-mdtest-j{id}").into_bytes();
    for (k, phase) in PHASES.iter().enumerate() {
        barriers[2 * k].wait();
        if let (None, Some(p)) = (&failed, pipe.as_mut()) {
            let clientid = p.clientid;
            match run_phase(p, *phase, &dir, &names, qd, clientid, &owner) {
                Ok(r) => out.push(r),
                Err(e) => failed = Some(format!("job {id} {}: {e}", phase.name())),
            }
        }
        barriers[2 * k + 1].wait();
    }
    match failed {
        Some(e) => Err(e),
        None => {
            // Best effort: a server without DESTROY_CLIENTID lets the lease expire.
            if let Some(p) = pipe.as_mut() {
                let _ = p.destroy_client();
            }
            Ok(out)
        }
    }
}

/// The workload: per-job directories made (untimed), then the three
/// phases, each timed from the moment all jobs start it to the moment the
/// last one is done; the directories are removed at the end (untimed).
pub fn run(o: &Opts, server: SocketAddr, c: &mut Client, parent: &[u8]) -> Result<(), String> {
    let jobs = o.jobs as usize;
    let mut dirs = Vec::with_capacity(jobs);
    for id in 0..jobs {
        let name = job_dir(id);
        let fh = match c.mkdir(parent, &name) {
            Ok(fh) => fh,
            Err(e) if e.status() == Some(nfsstat4::NFS4ERR_EXIST) => c.lookup(parent, &name).map_err(|e| format!("LOOKUP {name}: {e}"))?,
            Err(e) => return Err(format!("mkdir {name}: {e}")),
        };
        dirs.push(fh);
    }
    let barriers: Arc<Vec<Barrier>> = Arc::new((0..2 * PHASES.len()).map(|_| Barrier::new(jobs + 1)).collect());
    let handles: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(id, d)| {
            let (d, b, qd, files, minor) = (d.clone(), barriers.clone(), o.qd as usize, o.files, o.minor);
            std::thread::spawn(move || job(server, minor, id, qd, d, files, b))
        })
        .collect();
    // Per phase: seconds and server CPU seconds.
    let mut timing = Vec::new();
    for k in 0..PHASES.len() {
        barriers[2 * k].wait();
        let t0 = Instant::now();
        let cpu0 = crate::server_cpu(&o.server_pids)?;
        barriers[2 * k + 1].wait();
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let cpu1 = crate::server_cpu(&o.server_pids)?;
        timing.push((secs, cpu0.zip(cpu1).map(|(a, b)| b - a)));
    }
    let per_job = crate::join_jobs(handles)?;
    // Untimed: the job directories go (a failed remove phase leaves them).
    for id in 0..jobs {
        let _ = c.remove(parent, &job_dir(id));
    }
    report(o, &per_job, &timing);
    Ok(())
}

fn report(o: &Opts, per_job: &[Vec<PhaseResult>], timing: &[(f64, Option<f64>)]) {
    let creators = o.jobs as u64 * o.qd as u64;
    let mut phases_json = Vec::new();
    let mut total_errors = 0;
    let mut first_error: Option<String> = None;
    if !o.json {
        println!("mdtest jobs={} qd={} ({creators} concurrent creators), {} files per job directory", o.jobs, o.qd, o.files);
    }
    for (k, phase) in PHASES.iter().enumerate() {
        let mut hist = Histogram::default();
        let (mut ops, mut errors) = (0u64, 0u64);
        for j in per_job {
            let r = &j[k];
            hist.merge(&r.hist);
            ops += r.ops;
            errors += r.errors;
            if first_error.is_none() {
                first_error = r.first_error.clone();
            }
        }
        total_errors += errors;
        let (secs, cpu) = timing[k];
        let lat = |q: f64| hist.quantile(q) as f64 / 1000.0;
        let per_cpu = cpu.filter(|c| *c > 0.0).map(|c| ops as f64 / c);
        let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.4}"));
        phases_json.push(format!(
            "\"{}\":{{\"ops\":{ops},\"seconds\":{secs:.6},\"ops_per_s\":{:.1},\"lat_us\":{{\"p50\":{:.1},\"p95\":{:.1},\"p99\":{:.1},\"p999\":{:.1}}},\"server_cpu_s\":{},\"ops_per_server_cpu_s\":{},\"errors\":{errors}}}",
            phase.name(),
            ops as f64 / secs,
            lat(0.5),
            lat(0.95),
            lat(0.99),
            lat(0.999),
            opt(cpu),
            opt(per_cpu)
        ));
        if !o.json {
            print!("  {:<6} {ops} in {secs:.2} s: {:.0}/s; latency (us) p50 {:.1} p95 {:.1} p99 {:.1} p99.9 {:.1}", phase.name(), ops as f64 / secs, lat(0.5), lat(0.95), lat(0.99), lat(0.999));
            if let (Some(c), Some(p)) = (cpu, per_cpu) {
                print!("; server CPU {c:.2} s, {p:.0} per CPU s");
            }
            println!("; errors {errors}");
        }
    }
    if o.json {
        println!(
            "{{\"workload\":\"mdtest\",\"jobs\":{},\"qd\":{},\"creators\":{creators},\"files\":{},\"phases\":{{{}}},\"errors\":{total_errors}}}",
            o.jobs,
            o.qd,
            o.files,
            phases_json.join(",")
        );
    }
    if let Some(e) = first_error {
        eprintln!("pnfs-bench: first error: {e}");
    }
}

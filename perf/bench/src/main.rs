//! pnfs-bench: a fio-like NFSv4.1/pNFS load generator. See `--help` and
//! perf/bench/README.md.

// is_multiple_of needs Rust 1.87; the workspace supports 1.80.
#![allow(clippy::manual_is_multiple_of)]

mod hist;
mod hold;
mod job;
mod mdtest;
mod nofile;
mod opts;
mod pattern;
mod pipe;

use hist::Histogram;
use job::{file_name, JobResult, Plan, Region, Stop};
use opts::{Opts, Workload};
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::xdr::Opaque;
use pnfs_client::Client;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match opts::parse(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{}", opts::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pnfs-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pnfs-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `files` over `jobs`: with at least as many files as jobs every
/// job gets whole files round-robin; otherwise the jobs sharing a file get
/// disjoint regions of it (multiples of `bs`).
fn regions(files: u32, jobs: u32, size: u64, bs: u64) -> Vec<Vec<Region>> {
    let round = |v: u64| v.checked_div(bs).map_or(v, |q| q * bs);
    let mut out: Vec<Vec<Region>> = vec![vec![]; jobs as usize];
    if files >= jobs {
        for f in 0..files {
            out[(f % jobs) as usize].push(Region { file: f, start: 0, len: round(size) });
        }
    } else {
        for f in 0..files {
            let sharers: Vec<u32> = (0..jobs).filter(|j| j % files == f).collect();
            let share = round(size / sharers.len() as u64);
            for (k, j) in sharers.iter().enumerate() {
                out[*j as usize].push(Region { file: f, start: share * k as u64, len: share });
            }
        }
    }
    out
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("--server-pid {pid}: {e}"))?;
    let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| format!("/proc/{pid}/stat: unexpected format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (u, st) = match (f.get(11).and_then(|v| v.parse::<u64>().ok()), f.get(12).and_then(|v| v.parse::<u64>().ok())) {
        (Some(u), Some(s)) => (u, s),
        _ => return Err(format!("/proc/{pid}/stat: no utime/stime")),
    };
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((u + st) as f64 / tck)
}

pub(crate) fn cpu_total(pids: &[u32]) -> Result<f64, String> {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// [`cpu_total`] of the server processes, or None when none were named.
pub(crate) fn server_cpu(pids: &[u32]) -> Result<Option<f64>, String> {
    if pids.is_empty() {
        Ok(None)
    } else {
        cpu_total(pids).map(Some)
    }
}

/// Joins every job thread, then returns their results in order, or the
/// first error (a panic counts as one).
pub(crate) fn join_jobs<T>(handles: Vec<std::thread::JoinHandle<Result<T, String>>>) -> Result<Vec<T>, String> {
    let mut results = Vec::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert("a job panicked".to_string());
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// The layout types the server offers on `dir`'s file system (fs_layout_types).
fn layout_types(c: &mut Client, dir: &[u8]) -> Result<Vec<u32>, String> {
    let ops = vec![
        nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(dir) }),
        nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![0, 1 << (FATTR4_FS_LAYOUT_TYPES - 32)] }),
    ];
    let r = c
        .compound_ok(ops, |r| match &r[1] {
            nfs_resop4::OP_GETATTR(GETATTR4res::NFS4_OK(ok)) => {
                let a = &ok.obj_attributes;
                if a.attrmask.get(1).is_none_or(|w| w & (1 << (FATTR4_FS_LAYOUT_TYPES - 32)) == 0) {
                    return Ok(vec![]);
                }
                let v = &a.attr_vals[..];
                let n = v.get(..4).map(|b| u32::from_be_bytes(b.try_into().unwrap())).unwrap_or(0) as usize;
                Ok((0..n).filter_map(|i| v.get(4 + 4 * i..8 + 4 * i).map(|b| u32::from_be_bytes(b.try_into().unwrap()))).collect())
            }
            _ => Ok(vec![]),
        })
        .map_err(|e| format!("GETATTR fs_layout_types: {e}"))?;
    Ok(r)
}

struct Run {
    results: Vec<JobResult>,
    cpu: Option<f64>,
}

/// Runs one job per plan on its own thread; the measured interval starts
/// when all are set up (+ ramp) and ends when the last one finishes.
fn run_jobs(plans: Vec<Plan>, start: Arc<Barrier>, done: Arc<Barrier>, ramp: Duration, pids: &[u32]) -> Result<Run, String> {
    let handles: Vec<_> = plans.into_iter().map(|p| std::thread::spawn(move || job::run(p))).collect();
    start.wait();
    std::thread::sleep(ramp);
    let cpu0 = server_cpu(pids)?;
    done.wait();
    let cpu1 = server_cpu(pids)?;
    let results = join_jobs(handles)?;
    Ok(Run { results, cpu: cpu0.zip(cpu1).map(|(a, b)| b - a) })
}

fn run(o: &Opts) -> Result<(), String> {
    let server: SocketAddr = o
        .server
        .to_socket_addrs()
        .map_err(|e| format!("--server {}: {e}", o.server))?
        .next()
        .ok_or_else(|| format!("--server {}: resolves to nothing", o.server))?;
    let mut c = Client::connect(server, o.minor).map_err(|e| format!("{server}: session setup: {e}"))?;
    let export = c.lookup_path(&o.path).map_err(|e| format!("LOOKUP {}: {e}", o.path))?;
    let dir = match c.lookup(&export, &o.dir) {
        Ok(fh) => fh,
        Err(e) if e.status() == Some(nfsstat4::NFS4ERR_NOENT) => match c.mkdir(&export, &o.dir) {
            Ok(fh) => fh,
            Err(e) if e.status() == Some(nfsstat4::NFS4ERR_EXIST) => c.lookup(&export, &o.dir).map_err(|e| format!("LOOKUP {}: {e}", o.dir))?,
            Err(e) => return Err(format!("mkdir {}/{}: {e}", o.path, o.dir)),
        },
        Err(e) => return Err(format!("LOOKUP {}/{}: {e}", o.path, o.dir)),
    };
    match o.workload {
        Workload::Mdtest => return mdtest::run(o, server, &mut c, &dir),
        Workload::Hold => return hold::run(o, server, &mut c, &dir),
        _ => {}
    }
    let types = layout_types(&mut c, &dir)?;
    let known = [layouttype4::LAYOUT4_NFSV4_1_FILES, layouttype4::LAYOUT4_FLEX_FILES];
    let layout_types: Vec<layouttype4> = types.iter().filter_map(|t| known.iter().copied().find(|k| *k as u32 == *t)).collect();
    let pnfs = !o.no_pnfs && !layout_types.is_empty();
    let no_pnfs_reason = if o.no_pnfs {
        Some("--no-pnfs".to_string())
    } else if !pnfs {
        Some(format!("server's fs_layout_types {types:?} has neither LAYOUT4_NFSV4_1_FILES nor LAYOUT4_FLEX_FILES"))
    } else {
        None
    };
    let say = |m: String| {
        if o.json {
            eprintln!("{m}");
        } else {
            println!("{m}");
        }
    };

    // Prepare: read and metadata workloads need the files (of --size).
    let mut fhs: Vec<Option<Vec<u8>>> = vec![None; o.files as usize];
    if !o.workload.is_write() {
        let mut fill = Vec::new();
        for f in 0..o.files {
            match c.lookup(&dir, &file_name(f)) {
                Ok(fh) => {
                    let size = c.getattr_size(&fh).map_err(|e| format!("GETATTR f{f}: {e}"))?;
                    if size < o.size {
                        fill.push(f);
                    }
                    fhs[f as usize] = Some(fh);
                }
                Err(e) if e.status() == Some(nfsstat4::NFS4ERR_NOENT) => fill.push(f),
                Err(e) => return Err(format!("LOOKUP f{f}: {e}")),
            }
        }
        if !fill.is_empty() {
            let t = Instant::now();
            let mut fill_bs = 1u64 << 20;
            while fill_bs > 512 && o.size % fill_bs != 0 {
                fill_bs /= 2;
            }
            let njobs = (o.jobs as usize).min(fill.len());
            let start = Arc::new(Barrier::new(njobs + 1));
            let done = Arc::new(Barrier::new(njobs + 1));
            let mut per_job: Vec<Vec<Region>> = vec![vec![]; njobs];
            for (k, f) in fill.iter().enumerate() {
                per_job[k % njobs].push(Region { file: *f, start: 0, len: o.size / fill_bs * fill_bs });
            }
            let plans = per_job
                .into_iter()
                .enumerate()
                .map(|(id, regions)| Plan {
                    id,
                    server,
                    minor: o.minor,
                    workload: Workload::SeqWrite,
                    fill: true,
                    bs: fill_bs,
                    qd: 16,
                    stop: Stop::Bytes(regions.iter().map(|r| r.len).sum::<u64>().max(1)),
                    regions,
                    dir_fh: dir.clone(),
                    fhs: vec![],
                    pnfs,
                    layout_types: layout_types.clone(),
                    stable_file: false,
                    stamp: true,
                    verify: false,
                    ramp: Duration::ZERO,
                    start: start.clone(),
                    done: done.clone(),
                })
                .collect();
            let r = run_jobs(plans, start, done, Duration::ZERO, &[]).map_err(|e| format!("prepare: {e}"))?;
            let errors: u64 = r.results.iter().map(|j| j.errors).sum();
            if errors > 0 {
                let first = r.results.iter().find_map(|j| j.first_error.clone()).unwrap_or_default();
                return Err(format!("prepare: {errors} errors filling files (first: {first})"));
            }
            say(format!(
                "prepare: {} file(s) of {} bytes created/filled in {:.1} s",
                fill.len(),
                o.size,
                t.elapsed().as_secs_f64()
            ));
            for f in fill {
                fhs[f as usize] = Some(c.lookup(&dir, &file_name(f)).map_err(|e| format!("LOOKUP f{f}: {e}"))?);
            }
        }
    }
    drop(c);

    // The measured run.
    let bs_for_regions = if o.workload.is_data() { o.bs } else { 0 };
    let per_job = regions(o.files, o.jobs, o.size, bs_for_regions);
    let start = Arc::new(Barrier::new(o.jobs as usize + 1));
    let done = Arc::new(Barrier::new(o.jobs as usize + 1));
    let bytes_share = o.bytes.map(|b| (b.div_ceil(o.jobs as u64)).div_ceil(o.bs).max(1) * o.bs);
    let plans = per_job
        .into_iter()
        .enumerate()
        .map(|(id, regions)| {
            let stop = match (o.runtime, bytes_share) {
                (Some(r), _) => Stop::Runtime(r),
                (None, Some(b)) => Stop::Bytes(b),
                (None, None) if o.workload.is_data() => Stop::Bytes(regions.iter().map(|r| r.len).sum::<u64>().max(o.bs)),
                (None, None) => Stop::Runtime(10.0),
            };
            Plan {
                id,
                server,
                minor: o.minor,
                workload: o.workload,
                fill: false,
                bs: o.bs,
                qd: o.qd as usize,
                stop,
                fhs: regions.iter().map(|r| fhs[r.file as usize].clone().unwrap_or_default()).collect(),
                regions,
                dir_fh: dir.clone(),
                pnfs,
                layout_types: layout_types.clone(),
                stable_file: o.stable_file,
                stamp: o.verify && o.workload.is_write(),
                verify: o.verify && !o.workload.is_write(),
                ramp: Duration::from_secs_f64(o.ramp),
                start: start.clone(),
                done: done.clone(),
            }
        })
        .collect();
    let r = run_jobs(plans, start, done, Duration::from_secs_f64(o.ramp), &o.server_pids)?;
    report(o, &r, pnfs, no_pnfs_reason);
    Ok(())
}

fn report(o: &Opts, r: &Run, pnfs_asked: bool, no_pnfs_reason: Option<String>) {
    let mut hist = Histogram::default();
    let (mut bytes, mut requests, mut cycles, mut errors, mut verify_errors) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut mds_ops, mut ds_requests, mut mds_io, mut layouts) = (0u64, 0u64, 0u64, 0usize);
    let mut t0: Option<Instant> = None;
    let mut t1: Option<Instant> = None;
    let mut first_error = None;
    let mut no_layout = no_pnfs_reason;
    for j in &r.results {
        hist.merge(&j.hist);
        bytes += j.bytes;
        requests += j.requests;
        cycles += j.cycles;
        errors += j.errors;
        verify_errors += j.verify_errors;
        mds_ops += j.mds_ops;
        ds_requests += j.ds_requests;
        mds_io += j.mds_io_requests;
        layouts += j.layouts;
        if first_error.is_none() {
            first_error = j.first_error.clone();
        }
        if no_layout.is_none() {
            no_layout = j.no_layout_reason.clone();
        }
        if let Some(s) = j.measure_start {
            t0 = Some(t0.map_or(s, |t| t.min(s)));
        }
        if let Some(e) = j.end {
            t1 = Some(t1.map_or(e, |t| t.max(e)));
        }
    }
    let secs = match (t0, t1) {
        (Some(a), Some(b)) => (b - a).as_secs_f64().max(1e-9),
        _ => 1e-9,
    };
    let data = o.workload.is_data();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let lat = |q: f64| hist.quantile(q) as f64 / 1000.0;
    let cpu_per_gib = r.cpu.filter(|_| data && gib > 0.0).map(|c| c / gib);
    let ops_per_cpu = r.cpu.filter(|c| !data && *c > 0.0).map(|c| cycles as f64 / c);
    let pnfs_used = pnfs_asked && layouts > 0;
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.4}"));
    if o.json {
        let mut s = String::from("{");
        s += &format!("\"workload\":\"{}\",\"bs\":{},\"qd\":{},\"jobs\":{},\"files\":{},\"size\":{}", o.workload.name(), o.bs, o.qd, o.jobs, o.files, o.size);
        s += &format!(",\"pnfs\":{pnfs_used},\"layouts\":{layouts}");
        s += &format!(
            ",\"no_layout_reason\":{}",
            no_layout.as_ref().map_or("null".into(), |r| format!("\"{}\"", r.replace('\\', "\\\\").replace('"', "\\\"")))
        );
        s += &format!(",\"bytes\":{bytes},\"seconds\":{secs:.6},\"gbps\":{:.4},\"mibps\":{:.2}", bytes as f64 / secs / 1e9, bytes as f64 / secs / (1 << 20) as f64);
        s += &format!(",\"requests\":{requests},\"iops\":{:.1}", requests as f64 / secs);
        s += &format!(",\"lat_us\":{{\"p50\":{:.1},\"p95\":{:.1},\"p99\":{:.1},\"p999\":{:.1}}}", lat(0.5), lat(0.95), lat(0.99), lat(0.999));
        if !data {
            s += &format!(",\"ops\":{cycles},\"ops_per_s\":{:.1}", cycles as f64 / secs);
            if o.workload == Workload::OpenLayoutClose {
                s += &format!(",\"cycles\":{cycles},\"cycles_per_s\":{:.1}", cycles as f64 / secs);
            }
        }
        s += &format!(",\"mds_ops\":{mds_ops},\"mds_ops_per_s\":{:.1},\"ds_requests\":{ds_requests},\"mds_io_requests\":{mds_io}", mds_ops as f64 / secs);
        s += &format!(",\"server_cpu_s\":{},\"cpu_s_per_gib\":{},\"ops_per_server_cpu_s\":{}", opt(r.cpu), opt(cpu_per_gib), opt(ops_per_cpu));
        s += &format!(",\"errors\":{errors},\"verify_errors\":{verify_errors}}}");
        println!("{s}");
    } else {
        println!(
            "{} bs={} qd={} jobs={} files={} size={}: {}",
            o.workload.name(),
            o.bs,
            o.qd,
            o.jobs,
            o.files,
            o.size,
            match (pnfs_used, o.workload) {
                (_, Workload::Getattr) => "GETATTR on the MDS".to_string(),
                (true, Workload::OpenLayoutClose) => format!("pNFS ({layouts} LAYOUTGETs granted)"),
                (true, _) => format!("pNFS ({layouts} layouts)"),
                (false, _) => format!("no pNFS ({})", no_layout.clone().unwrap_or_default()),
            }
        );
        if data {
            println!(
                "  {bytes} bytes in {secs:.2} s: {:.3} GB/s ({:.1} MiB/s), {:.0} IOPS",
                bytes as f64 / secs / 1e9,
                bytes as f64 / secs / (1 << 20) as f64,
                requests as f64 / secs
            );
            println!("  requests: {ds_requests} to data servers, {mds_io} through the MDS");
        } else {
            let what = if o.workload == Workload::OpenLayoutClose { "cycles (OPEN+LAYOUTGET, CLOSE)" } else { "GETATTRs" };
            println!("  {cycles} {what} in {secs:.2} s: {:.0}/s; {:.0} COMPOUNDs/s", cycles as f64 / secs, requests as f64 / secs);
        }
        println!("  latency per COMPOUND (us): p50 {:.1}  p95 {:.1}  p99 {:.1}  p99.9 {:.1}", lat(0.5), lat(0.95), lat(0.99), lat(0.999));
        println!("  MDS: {mds_ops} COMPOUNDs, {:.0}/s", mds_ops as f64 / secs);
        if let Some(c) = r.cpu {
            print!("  server CPU: {c:.2} s");
            if let Some(g) = cpu_per_gib {
                print!(", {g:.3} CPU s/GiB");
            }
            if let Some(p) = ops_per_cpu {
                print!(", {p:.0} ops per CPU s");
            }
            println!();
        }
        println!("  errors: {errors}{}", if verify_errors > 0 { format!(" ({verify_errors} verify)") } else { String::new() });
    }
    if let Some(e) = first_error {
        eprintln!("pnfs-bench: first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_split_files_or_share_them() {
        let r = regions(4, 2, 1 << 20, 4096);
        assert_eq!(r[0].iter().map(|x| x.file).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(r[1].iter().map(|x| x.file).collect::<Vec<_>>(), vec![1, 3]);
        let r = regions(1, 3, 1 << 20, 4096);
        let share = (1u64 << 20) / 3 / 4096 * 4096;
        assert_eq!(r.iter().map(|j| (j[0].start, j[0].len)).collect::<Vec<_>>(), vec![(0, share), (share, share), (2 * share, share)]);
    }
}

//! pnfs-kv-bench: the metadata store's own transaction rate, through the
//! MDS's `KvStore` trait (so the etcd backend's client costs count), with
//! the transaction shapes the MDS issues. It is the ceiling an MDS on that
//! store is held to (perf/cluster-scale runs it next to the MDS rows).
//!
//!   pnfs-kv-bench --kv etcd --endpoints http://127.0.0.1:2379,... [--prefix kvbench/]
//!   pnfs-kv-bench --kv redb --dir DIR
//!       [--shape read,create,state] [--threads 16] [--seconds 5] [--keys 1000]
//!       [--server-pid PID]... [--json]
//!
//! Shapes (each runs --seconds with --threads threads, one after another):
//! - `read`: a read-only transaction of 1 to 3 gets of existing keys
//!   (GETATTR: 1; LOOKUP: the directory, the entry, the inode);
//! - `create`: 3 gets (the thread's directory, the absent entry, the absent
//!   new inode) and 4 puts (inode, entry, READDIR cookie, directory): a
//!   file create, each thread in its own directory as mdtest does;
//! - `state`: 2 puts of keys not read first (a state record and a session
//!   slot record written by OPEN, CLOSE or LAYOUTGET).
//!
//! Conflicts are retried (`pnfs_kv::transact`) and counted; a transaction's
//! latency includes its retries. --server-pid (repeatable) names the store's
//! processes (the etcd members): their CPU seconds (utime + stime) during
//! each shape are reported, and transactions per server CPU second.
//! Prints one line per shape, or one JSON object per line with --json.
//! Every key lives under --prefix (etcd) and is deleted at the end.

#[allow(dead_code)]
#[path = "../hist.rs"]
mod hist;

use hist::Histogram;
use pnfs_kv::{key::u64_be, transact, KvError, KvStore};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: pnfs-kv-bench --kv etcd --endpoints URL[,URL...] [--prefix kvbench/]
       pnfs-kv-bench --kv redb --dir DIR
       [--shape read,create,state] [--threads 16] [--seconds 5] [--keys 1000]
       [--server-pid PID]... [--json]
";
const RETRIES: u32 = 64;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    Read,
    Create,
    State,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Read => "read",
            Shape::Create => "create",
            Shape::State => "state",
        }
    }
}

#[derive(Debug)]
struct Opts {
    kv: String,
    endpoints: Vec<String>,
    prefix: String,
    dir: Option<String>,
    shapes: Vec<Shape>,
    threads: usize,
    seconds: f64,
    keys: u64,
    server_pids: Vec<u32>,
    json: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        kv: String::new(),
        endpoints: Vec::new(),
        prefix: "kvbench/".into(),
        dir: None,
        shapes: vec![Shape::Read, Shape::Create, Shape::State],
        threads: 16,
        seconds: 5.0,
        keys: 1000,
        server_pids: Vec::new(),
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--json" {
            o.json = true;
            continue;
        }
        if a == "--help" || a == "-h" {
            return Err(String::new());
        }
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let num = |what: &str| v.parse::<f64>().map_err(|_| format!("{what}: '{v}' is not a number"));
        match a.as_str() {
            "--kv" => o.kv = v.clone(),
            "--endpoints" => o.endpoints = v.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
            "--prefix" => o.prefix = v.clone(),
            "--dir" => o.dir = Some(v.clone()),
            "--shape" => {
                o.shapes = v
                    .split(',')
                    .map(|s| match s {
                        "read" => Ok(Shape::Read),
                        "create" => Ok(Shape::Create),
                        "state" => Ok(Shape::State),
                        _ => Err(format!("--shape: '{s}' is not one of read, create, state")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--threads" => o.threads = num("--threads")? as usize,
            "--seconds" => o.seconds = num("--seconds")?,
            "--keys" => o.keys = num("--keys")? as u64,
            "--server-pid" => o.server_pids.push(num("--server-pid")? as u32),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if !(1..=1024).contains(&o.threads) {
        return Err("--threads must be 1..=1024".into());
    }
    if !(o.seconds > 0.0 && o.seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    if !(1..=1_000_000).contains(&o.keys) {
        return Err("--keys must be 1..=1000000".into());
    }
    match o.kv.as_str() {
        "etcd" if o.endpoints.is_empty() => Err("--kv etcd needs --endpoints".into()),
        "redb" if o.dir.is_none() => Err("--kv redb needs --dir".into()),
        "etcd" | "redb" => Ok(o),
        "" => Err("--kv is required (etcd or redb)".into()),
        k => Err(format!("--kv: '{k}' is not etcd or redb")),
    }
}

/// The store, and the same store as etcd (to clear its prefix at the end).
type Opened = (Arc<dyn KvStore>, Option<Arc<pnfs_kv::EtcdStore>>);

fn open(o: &Opts) -> Result<Opened, String> {
    if o.kv == "etcd" {
        let mut cfg = pnfs_kv::EtcdConfig::new(o.endpoints.clone());
        cfg.prefix = o.prefix.clone().into_bytes();
        let store = Arc::new(pnfs_kv::EtcdStore::connect(&cfg).map_err(|e| e.to_string())?);
        store.delete_all().map_err(|e| e.to_string())?;
        Ok((store.clone(), Some(store)))
    } else {
        let dir = o.dir.as_deref().unwrap_or(".");
        std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
        let path = std::path::Path::new(dir).join("kvbench.redb");
        let _ = std::fs::remove_file(&path);
        let store = pnfs_kv::RedbStore::open(&path).map_err(|e| e.to_string())?;
        Ok((Arc::new(store), None))
    }
}

/// Key of record `n` of kind `kind` (one byte), thread `t`.
fn key(kind: u8, t: u64, n: u64) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(&u64_be(t));
    k.extend_from_slice(&u64_be(n));
    k
}

/// Writes the keys the `read` shape reads (thread 0's space), 100 a txn.
fn preload(store: &dyn KvStore, keys: u64) -> Result<(), KvError> {
    let value = vec![0x5a; 200]; // about an encoded inode
    let mut n = 0;
    while n < keys {
        let end = (n + 100).min(keys);
        transact(store, RETRIES, |t| {
            for i in n..end {
                t.put(&key(b'I', 0, i), &value)?;
            }
            Ok::<(), KvError>(())
        })?;
        n = end;
    }
    Ok(())
}

#[derive(Default)]
struct ThreadResult {
    txns: u64,
    conflicts: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram,
}

/// A small xorshift; no allocation, no shared state.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn one_txn(store: &dyn KvStore, shape: Shape, thread: u64, seq: u64, o: &Opts, rng: &mut Rng, attempts: &mut u64) -> Result<(), KvError> {
    let inode = [0x5a; 200];
    match shape {
        Shape::Read => {
            let gets = 1 + rng.next() % 3;
            let picks: Vec<u64> = (0..gets).map(|_| rng.next() % o.keys).collect();
            transact(store, RETRIES, |t| {
                *attempts += 1;
                for &p in &picks {
                    if t.get(&key(b'I', 0, p))?.is_none() {
                        return Err(KvError::Backend(format!("preloaded key {p} missing")));
                    }
                }
                Ok(())
            })
        }
        Shape::Create => {
            // Thread `thread` + 1 owns directory `thread` + 1 (0 holds the
            // preloaded keys); entries and inodes are numbered by `seq`.
            let dir = thread + 1;
            transact(store, RETRIES, |t| {
                *attempts += 1;
                let d = t.get(&key(b'I', dir, 0))?;
                let _ = t.get(&key(b'D', dir, seq))?;
                let _ = t.get(&key(b'I', dir, seq + 1))?;
                let change = d.as_deref().and_then(pnfs_kv::key::decode_u64_be).unwrap_or(0) + 1;
                t.put(&key(b'I', dir, seq + 1), &inode)?;
                t.put(&key(b'D', dir, seq), &u64_be(seq + 1))?;
                t.put(&key(b'C', dir, seq), &u64_be(seq))?;
                t.put(&key(b'I', dir, 0), &u64_be(change))?;
                Ok(())
            })
        }
        Shape::State => transact(store, RETRIES, |t| {
            *attempts += 1;
            t.put(&key(b's', thread, seq % 64), &inode[..120])?;
            t.put(&key(b'e', thread, 0), &u64_be(seq))?;
            Ok(())
        }),
    }
}

/// Runs one shape; returns its report line and its error count.
fn run_shape(store: &Arc<dyn KvStore>, o: &Arc<Opts>, shape: Shape) -> Result<(String, u64), String> {
    let cpu0 = cpu_total(&o.server_pids)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let handles: Vec<_> = (0..o.threads as u64)
        .map(|thread| {
            let (store, o) = (store.clone(), o.clone());
            std::thread::spawn(move || {
                let mut r = ThreadResult::default();
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let mut seq = 0;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let mut attempts = 0;
                    match one_txn(&*store, shape, thread, seq, &o, &mut rng, &mut attempts) {
                        Ok(()) => {
                            r.txns += 1;
                            r.hist.record(t0.elapsed().as_micros() as u64);
                        }
                        Err(e) => {
                            r.errors += 1;
                            r.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    r.conflicts += attempts.saturating_sub(1);
                    seq += 1;
                }
                r
            })
        })
        .collect();
    let mut total = ThreadResult::default();
    for h in handles {
        let r = h.join().map_err(|_| "a bench thread panicked".to_string())?;
        total.txns += r.txns;
        total.conflicts += r.conflicts;
        total.errors += r.errors;
        total.hist.merge(&r.hist);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_total(&o.server_pids)? - cpu0;
    let rate = total.txns as f64 / secs;
    let (p50, p99) = (total.hist.quantile(0.5), total.hist.quantile(0.99));
    let per_cpu = if o.server_pids.is_empty() || cpu <= 0.0 { String::from("null") } else { format!("{:.0}", total.txns as f64 / cpu) };
    let err = total.first_error.as_deref().unwrap_or("").replace('\\', "\\\\").replace('"', "'");
    let line = if o.json {
        format!(
            "{{\"workload\":\"kv\",\"kv\":\"{}\",\"shape\":\"{}\",\"threads\":{},\"seconds\":{secs:.3},\"txns\":{},\"txns_per_s\":{rate:.1},\"p50_us\":{p50},\"p99_us\":{p99},\"conflicts\":{},\"errors\":{},\"server_cpu_s\":{cpu:.3},\"txns_per_server_cpu_s\":{per_cpu},\"first_error\":\"{err}\"}}",
            o.kv,
            shape.name(),
            o.threads,
            total.txns,
            total.conflicts,
            total.errors
        )
    } else {
        format!(
            "kv {} {:<6} threads {:>3}: {:>9.0} txns/s  p50 {:>6} us  p99 {:>7} us  conflicts {}  errors {}{}",
            o.kv,
            shape.name(),
            o.threads,
            rate,
            p50,
            p99,
            total.conflicts,
            total.errors,
            if o.server_pids.is_empty() { String::new() } else { format!("  server cpu {cpu:.2} s ({per_cpu} txns per cpu s)") }
        )
    };
    if let Some(e) = &total.first_error {
        eprintln!("pnfs-kv-bench: {}: {} failed transactions, the first: {e}", shape.name(), total.errors);
    }
    Ok((line, total.errors))
}

/// utime + stime of the processes, in seconds (0 when none named).
fn cpu_total(pids: &[u32]) -> Result<f64, String> {
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut sum = 0.0;
    for pid in pids {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("--server-pid {pid}: {e}"))?;
        let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| format!("/proc/{pid}/stat: unexpected format"))?;
        let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
        if f.len() != 2 {
            return Err(format!("/proc/{pid}/stat: no utime/stime"));
        }
        sum += (f[0] + f[1]) as f64 / tck;
    }
    Ok(sum)
}

fn run(o: Opts) -> Result<bool, String> {
    let (store, etcd) = open(&o)?;
    preload(&*store, o.keys).map_err(|e| format!("writing the keys to read: {e}"))?;
    let o = Arc::new(o);
    let mut clean = true;
    for &shape in &o.shapes {
        let (line, errors) = run_shape(&store, &o, shape)?;
        clean &= errors == 0;
        println!("{line}");
    }
    if let Some(etcd) = etcd {
        // Leave nothing behind under the prefix (best effort).
        let _ = etcd.delete_all();
    }
    Ok(clean)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pnfs-kv-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(o) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pnfs-kv-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_are_checked() {
        assert!(parse(&args("--kv etcd")).unwrap_err().contains("--endpoints"));
        assert!(parse(&args("--kv redb")).unwrap_err().contains("--dir"));
        assert!(parse(&args("--kv tikv --dir x")).unwrap_err().contains("tikv"));
        assert!(parse(&args("--kv redb --dir x --shape read,write")).unwrap_err().contains("write"));
        assert!(parse(&args("--kv redb --dir x --threads 0")).is_err());
        let o = parse(&args("--kv etcd --endpoints http://a:1,http://b:2 --shape state --threads 2 --json")).unwrap();
        assert_eq!(o.endpoints.len(), 2);
        assert_eq!(o.shapes, [Shape::State]);
        assert!(o.json);
    }

    /// Every shape runs on redb without errors and commits what it says.
    #[test]
    fn shapes_run_on_redb() {
        let dir = tempfile::tempdir().unwrap();
        let o = parse(&args(&format!("--kv redb --dir {} --threads 2 --seconds 0.3 --keys 20 --json", dir.path().display()))).unwrap();
        let (store, _) = open(&o).unwrap();
        preload(&*store, o.keys).unwrap();
        let o = Arc::new(o);
        for shape in [Shape::Read, Shape::Create, Shape::State] {
            let (line, errors) = run_shape(&store, &o, shape).unwrap();
            assert_eq!(errors, 0, "{line}");
            assert!(line.contains(&format!("\"shape\":\"{}\"", shape.name())), "{line}");
            assert!(!line.contains("\"txns\":0,"), "{line}");
        }
        // Thread 0's creates are there: directory 1, entries 0.. .
        assert!(store.begin().unwrap().get(&key(b'D', 1, 0)).unwrap().is_some());
    }
}

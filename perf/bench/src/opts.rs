//! Command line: `--name value` options, each checked with a one-line error.

pub const USAGE: &str = "\
pnfs-bench: fio-like NFSv4.1/pNFS load generator

usage: pnfs-bench --server HOST:PORT --workload W [options]

  --server HOST:PORT   NFSv4.1 server (our MDS, or any NFSv4.1 server)
  --path /export       NFSv4 path of the export (default /export; LOOKUPs
                       from the root filehandle, so pseudo-fs paths work)
  --dir NAME           directory under the export holding the files
                       (default pnfs-bench; created if missing)
  --workload W         seqread | seqwrite | randread | randwrite |
                       open-layout-close | getattr | mdtest | hold
  --bs SIZE            block size per READ/WRITE (default 1m; 4k, 1m, ...;
                       a multiple of 512). Offsets are multiples of bs.
  --qd N               requests in flight per job (default 16): COMPOUNDs
                       pipelined on distinct session slots; for pNFS the qd
                       is per job overall, spread over the data servers
  --jobs N             threads; each its own connections and sessions
                       (default 1)
  --files N            files f0..f(N-1) in the directory (default 1); jobs
                       take files round-robin; jobs sharing a file split it
                       into disjoint regions
  --size SIZE          file size (default 256m for data workloads, 0 for
                       metadata workloads)
  --runtime SECS       measured time (after --ramp); or
  --bytes SIZE         bytes to move in total (default: one pass over all
                       files for data workloads; 10 s for metadata ones)
  --ramp SECS          warm-up, not counted (default 0)
  --stable MODE        writes: unstable (UNSTABLE4, COMMIT after each file
                       pass and at the end, timed; default) | file (FILE_SYNC4)
  --verify             writes stamp every 512-byte block with (file, offset);
                       reads check the stamps (files filled by the prepare
                       phase are always stamped)
  --no-pnfs            ignore layouts: all I/O through the server connection
  --server-pid PID     sample utime+stime of PID (repeatable) around the
                       measured interval: server CPU s, CPU s/GiB, ops/CPU s
  --hold-clients N     hold: clients (each its own connection and session;
                       default 1000)
  --hold-opens M       hold: files each client opens and holds (default 100)
  --renew SECS         hold: lease renewal period (default 15)
  --minor 1|2          NFSv4 minor version (default 1)
  --json               one JSON object on stdout instead of a summary
  --help               this text

mdtest: each job (creator) its own directory mdtest-j<id> under --dir with
--files files: create (OPEN CREATE + CLOSE), stat (LOOKUP + GETATTR),
remove (REMOVE), each phase timed (and its server CPU sampled) apart; --qd
files in flight per job (default 1 for mdtest). hold: background state for
the other workloads: --hold-clients clients each open --hold-opens files
(in hold/c<i> under --dir) and hold them, renewing their leases, until
SIGTERM/SIGINT or --runtime; then CLOSE all. --jobs threads share the
clients. Prints \"pnfs-bench: hold: ready: ...\" on stderr once all are held.

Read and metadata workloads first create missing files and fill files
shorter than --size (untimed, seqwrite 1m qd 16). Latency is per COMPOUND
in microseconds. GB/s is decimal (10^9 bytes/s); MiB/s binary.
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    SeqRead,
    SeqWrite,
    RandRead,
    RandWrite,
    OpenLayoutClose,
    Getattr,
    Mdtest,
    Hold,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::SeqRead => "seqread",
            Workload::SeqWrite => "seqwrite",
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::OpenLayoutClose => "open-layout-close",
            Workload::Getattr => "getattr",
            Workload::Mdtest => "mdtest",
            Workload::Hold => "hold",
        }
    }
    pub fn is_write(self) -> bool {
        matches!(self, Workload::SeqWrite | Workload::RandWrite)
    }
    pub fn is_data(self) -> bool {
        !matches!(self, Workload::OpenLayoutClose | Workload::Getattr | Workload::Mdtest | Workload::Hold)
    }
    pub fn is_random(self) -> bool {
        matches!(self, Workload::RandRead | Workload::RandWrite)
    }
}

#[derive(Debug, Clone)]
pub struct Opts {
    pub server: String,
    pub path: String,
    pub dir: String,
    pub workload: Workload,
    pub bs: u64,
    pub qd: u32,
    pub jobs: u32,
    pub files: u32,
    pub size: u64,
    pub runtime: Option<f64>,
    pub bytes: Option<u64>,
    pub ramp: f64,
    pub json: bool,
    pub server_pids: Vec<u32>,
    pub no_pnfs: bool,
    pub stable_file: bool,
    pub verify: bool,
    pub minor: u32,
    pub hold_clients: u32,
    pub hold_opens: u32,
    /// Seconds between lease renewals (hold).
    pub renew: f64,
}

/// Parses "4096", "4k", "1m", "2g", "1t" (binary units; "kib"/"kb"/"k" alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("ib").or_else(|| t.strip_suffix('b')).unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size (e.g. 4096, 4k, 1m, 2g)"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("size '{s}' is too large"))
}

/// Parses seconds: "30", "2.5", "30s", "2m".
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mul) = if let Some(m) = t.strip_suffix('m') {
        (m, 60.0)
    } else {
        (t.strip_suffix('s').unwrap_or(t), 1.0)
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * mul),
        _ => Err(format!("'{s}' is not a duration in seconds (e.g. 30, 2.5, 2m)")),
    }
}

fn parse_count(name: &str, s: &str, max: u32) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name}: '{s}' must be a whole number from 1 to {max}")),
    }
}

/// Parses the arguments after the program name. Err("") means --help.
pub fn parse(args: &[String]) -> Result<Opts, String> {
    let mut server = None;
    let mut workload = None;
    let mut o = Opts {
        server: String::new(),
        path: "/export".into(),
        dir: "pnfs-bench".into(),
        workload: Workload::SeqRead,
        bs: 1 << 20,
        qd: 16,
        jobs: 1,
        files: 1,
        size: 0,
        runtime: None,
        bytes: None,
        ramp: 0.0,
        json: false,
        server_pids: vec![],
        no_pnfs: false,
        stable_file: false,
        verify: false,
        minor: 1,
        hold_clients: 1000,
        hold_opens: 100,
        renew: 15.0,
    };
    let mut size = None;
    let mut qd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let flag = |inline: &Option<String>| match inline {
            Some(_) => Err(format!("{name} takes no value")),
            None => Ok(true),
        };
        match name {
            "--help" | "-h" => return Err(String::new()),
            "--json" => o.json = flag(&inline)?,
            "--no-pnfs" => o.no_pnfs = flag(&inline)?,
            "--verify" => o.verify = flag(&inline)?,
            _ => {
                let v = match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or_else(|| format!("{name} needs a value (see --help)"))?,
                };
                match name {
                    "--server" => {
                        if v.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then(|| p.parse::<u16>().ok()).flatten()).is_none() {
                            return Err(format!("--server: '{v}' is not HOST:PORT"));
                        }
                        server = Some(v)
                    }
                    "--path" => {
                        if !v.starts_with('/') {
                            return Err(format!("--path: '{v}' must be absolute (e.g. /export)"));
                        }
                        o.path = v
                    }
                    "--dir" => {
                        if v.is_empty() || v.contains('/') || v == "." || v == ".." {
                            return Err(format!("--dir: '{v}' must be one directory name"));
                        }
                        o.dir = v
                    }
                    "--workload" => {
                        workload = Some(match v.as_str() {
                            "seqread" => Workload::SeqRead,
                            "seqwrite" => Workload::SeqWrite,
                            "randread" => Workload::RandRead,
                            "randwrite" => Workload::RandWrite,
                            "open-layout-close" => Workload::OpenLayoutClose,
                            "getattr" => Workload::Getattr,
                            "mdtest" => Workload::Mdtest,
                            "hold" => Workload::Hold,
                            _ => {
                                return Err(format!(
                                "--workload: '{v}' is not one of seqread, seqwrite, randread, randwrite, open-layout-close, getattr, mdtest, hold"
                            ))
                            }
                        })
                    }
                    "--bs" => {
                        let bs = parse_size(&v).map_err(|e| format!("--bs: {e}"))?;
                        if bs == 0 || bs % 512 != 0 || bs > 16 << 20 {
                            return Err(format!("--bs: {v} must be a multiple of 512 bytes, at most 16m"));
                        }
                        o.bs = bs
                    }
                    "--qd" => qd = Some(parse_count("--qd", &v, 1024)?),
                    "--hold-clients" => o.hold_clients = parse_count("--hold-clients", &v, 100_000)?,
                    "--hold-opens" => o.hold_opens = parse_count("--hold-opens", &v, 1_000_000)?,
                    "--renew" => {
                        let r = parse_secs(&v).map_err(|e| format!("--renew: {e}"))?;
                        if r < 0.1 {
                            return Err("--renew: must be at least 0.1 seconds".into());
                        }
                        o.renew = r
                    }
                    "--jobs" => o.jobs = parse_count("--jobs", &v, 1024)?,
                    "--files" => o.files = parse_count("--files", &v, 1_000_000)?,
                    "--size" => size = Some(parse_size(&v).map_err(|e| format!("--size: {e}"))?),
                    "--runtime" => {
                        let r = parse_secs(&v).map_err(|e| format!("--runtime: {e}"))?;
                        if r <= 0.0 {
                            return Err("--runtime: must be more than 0 seconds".into());
                        }
                        o.runtime = Some(r)
                    }
                    "--bytes" => {
                        let b = parse_size(&v).map_err(|e| format!("--bytes: {e}"))?;
                        if b == 0 {
                            return Err("--bytes: must be more than 0".into());
                        }
                        o.bytes = Some(b)
                    }
                    "--ramp" => o.ramp = parse_secs(&v).map_err(|e| format!("--ramp: {e}"))?,
                    "--server-pid" => match v.parse::<u32>() {
                        Ok(p) if p > 0 => o.server_pids.push(p),
                        _ => return Err(format!("--server-pid: '{v}' is not a process id")),
                    },
                    "--stable" => {
                        o.stable_file = match v.as_str() {
                            "unstable" => false,
                            "file" => true,
                            _ => return Err(format!("--stable: '{v}' is not unstable or file")),
                        }
                    }
                    "--minor" => {
                        o.minor = match v.as_str() {
                            "1" => 1,
                            "2" => 2,
                            _ => return Err(format!("--minor: '{v}' is not 1 or 2")),
                        }
                    }
                    _ => return Err(format!("unknown option '{a}' (see --help)")),
                }
            }
        }
    }
    o.server = server.ok_or("--server HOST:PORT is required (see --help)")?;
    o.workload = workload.ok_or("--workload is required (see --help)")?;
    o.qd = qd.unwrap_or(if o.workload == Workload::Mdtest { 1 } else { 16 });
    o.size = size.unwrap_or(if o.workload.is_data() { 256 << 20 } else { 0 });
    if o.runtime.is_some() && o.bytes.is_some() {
        return Err("--runtime and --bytes exclude each other".into());
    }
    if o.workload.is_data() {
        if o.size < o.bs {
            return Err(format!("--size {} is smaller than --bs {}", o.size, o.bs));
        }
        // Jobs sharing a file split it; every region must hold a block.
        let sharers = o.jobs.div_ceil(o.files) as u64;
        if o.size / sharers < o.bs {
            return Err(format!("--size {} split among {sharers} jobs per file leaves less than --bs per job", o.size));
        }
    } else if o.bytes.is_some() {
        return Err("--bytes applies to data workloads; use --runtime".into());
    }
    if o.verify && o.workload.is_data() && o.bs % 512 != 0 {
        return Err("--verify needs --bs a multiple of 512".into());
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "k", "1x", "-1", "1.5m", "99999999999999t"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_secs("2m"), Ok(120.0));
        assert_eq!(parse_secs("2.5s"), Ok(2.5));
        assert!(parse_secs("-1").is_err() && parse_secs("x").is_err());
    }

    #[test]
    fn parses_and_defaults() {
        let o = parse(&args("--server 127.0.0.1:23000 --workload randread --bs 4k --qd 64 --server-pid 5 --server-pid=6 --json")).unwrap();
        assert_eq!((o.bs, o.qd, o.jobs, o.files, o.size), (4096, 64, 1, 1, 256 << 20));
        assert_eq!(o.server_pids, vec![5, 6]);
        assert!(o.json && !o.stable_file && o.workload.is_random());
        let o = parse(&args("--server h:1 --workload getattr")).unwrap();
        assert_eq!(o.size, 0);
        let o = parse(&args("--server h:1 --workload mdtest --jobs 64 --files 100")).unwrap();
        assert_eq!((o.workload, o.qd, o.jobs, o.files), (Workload::Mdtest, 1, 64, 100));
        let o = parse(&args("--server h:1 --workload hold --hold-clients 10 --hold-opens 5 --renew 2")).unwrap();
        assert_eq!((o.hold_clients, o.hold_opens, o.renew, o.qd), (10, 5, 2.0, 16));
    }

    #[test]
    fn rejects_bad_values_in_one_line() {
        for bad in [
            "--workload seqread",
            "--server 127.0.0.1 --workload seqread",
            "--server h:1 --workload foo",
            "--server h:1 --workload seqread --bs 1000",
            "--server h:1 --workload seqread --qd 0",
            "--server h:1 --workload seqread --jobs x",
            "--server h:1 --workload seqread --size 1k",
            "--server h:1 --workload seqread --runtime 1 --bytes 1g",
            "--server h:1 --workload seqread --stable maybe",
            "--server h:1 --workload seqread --path export",
            "--server h:1 --workload seqread --dir a/b",
            "--server h:1 --workload seqread --bogus 1",
            "--server h:1 --workload seqread --qd",
            "--server h:1 --workload getattr --bytes 1g",
            "--server h:1 --workload hold --hold-clients 0",
            "--server h:1 --workload hold --renew 0",
        ] {
            let e = parse(&args(bad)).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad}: {e}");
        }
        assert_eq!(parse(&args("--help")).unwrap_err(), "");
    }
}

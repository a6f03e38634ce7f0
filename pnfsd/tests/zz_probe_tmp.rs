// Temporary probe (deleted after use).
use pnfs_client::{Client, ANONYMOUS_STATEID};
use pnfs_client::pnfs_protocol::wire::stable_how4;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start(cfg: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::options().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_pnfsd")).arg("--config").arg(cfg).stdout(log.try_clone().unwrap()).stderr(log).stdin(Stdio::null()).spawn().unwrap()
}

fn connect(addr: &str) -> Client {
    let t = Instant::now();
    loop {
        match Client::connect(addr, 2) { Ok(c) => return c, Err(e) if t.elapsed() < Duration::from_secs(10) => { let _ = e; std::thread::sleep(Duration::from_millis(50)) } Err(e) => panic!("{e}") }
    }
}

#[test]
fn probe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[node]\nroles=[\"mds\"]\n[mds]\nbind=\"{addr}\"\nmetadata_dir=\"{d}/meta\"\ndata_dir=\"{d}/data\"\nlease_seconds=10\ngrace_seconds=3\n[[mds.exports]]\npath=\"/export\"\nroot_squash=false\n")).unwrap();
    let log = dir.path().join("log");
    // --- stale data after a partly applied create ---
    let mut found = 0;
    for round in 0..6 {
        let mut child = start(&cfg, &log);
        let mut c = connect(&addr);
        let ex = c.lookup_path("/export").unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| { let mut i = 0; loop { if c.write_file(&ex, &format!("r{round}_{i}"), b"STALEDATA").is_err() { break } i += 1; } });
            std::thread::sleep(Duration::from_millis(100 + 37 * round));
            child.kill().unwrap(); child.wait().unwrap();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            h.join().unwrap();
        });
        let mut child = start(&cfg, &log);
        let mut c = connect(&addr);
        let ex = c.lookup_path("/export").unwrap();
        for name in c.readdir(&ex).unwrap() {
            let data = c.read_file(&ex, &name).unwrap();
            if data.is_empty() {
                let fh = c.lookup(&ex, &name).unwrap();
                c.write(&fh, &ANONYMOUS_STATEID, 12, b"x", stable_how4::FILE_SYNC4).unwrap();
                let after = c.read_file(&ex, &name).unwrap();
                eprintln!("round {round}: {name} was empty; after WRITE 'x' at offset 12 it reads {:?}", String::from_utf8_lossy(&after));
                found += 1;
            }
        }
        child.kill().unwrap(); child.wait().unwrap();
    }
    eprintln!("empty files found: {found}");
    // --- grace: a vanished client's record ---
    let owners_before = { let mut child = start(&cfg, &log); let _a = connect(&addr); child.kill().unwrap(); child.wait().unwrap(); };
    let _ = owners_before;
    for restart in 0..3 {
        let mut child = start(&cfg, &log);
        let mut b = connect(&addr); // a brand-new owner each time
        let ex = b.lookup_path("/export").unwrap();
        let t = Instant::now();
        b.create_file(&ex, &format!("g{restart}")).unwrap();
        eprintln!("restart {restart}: first OPEN of a new client took {:.2} s", t.elapsed().as_secs_f64());
        child.kill().unwrap(); child.wait().unwrap();
    }
    let mut child = start(&cfg, &log);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    for l in text.lines().filter(|l| l.contains("may reclaim")) { eprintln!("{l}"); }
}

//! pnfs-bench against a real MDS with two real data servers (in-process,
//! loopback ports): seqwrite then seqread with --verify go straight to the
//! data servers (no READ/WRITE through the MDS) and read back what was
//! written; --no-pnfs moves the same data through the MDS; the metadata
//! workloads run without errors.

use std::net::SocketAddr;
use std::process::Command;

#[path = "../../../controlplane/tests/common/mod.rs"]
mod common;

/// An MDS and two data servers, both registered.
fn start_cluster(dir: &std::path::Path) -> (SocketAddr, Vec<pnfs_ds::DsHandle>) {
    let (nfs, ctl) = common::start_pnfs_mds(dir, "stripe_unit = 65536");
    (nfs, common::start_dses(dir, ctl, 2))
}

/// Runs pnfs-bench with --json; returns the JSON line.
fn bench(server: SocketAddr, args: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pnfs-bench"))
        .args(["--server", &server.to_string(), "--path", "/export", "--json"])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pnfs-bench {args}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().last().unwrap_or_default().to_string()
}

/// The number after `"key":` in a flat JSON object.
fn num(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{key} missing in {json}")) + pat.len();
    let end = json[at..].find([',', '}']).unwrap() + at;
    json[at..end].parse().unwrap_or_else(|_| panic!("{key} in {json}"))
}

#[test]
fn pnfs_write_then_verified_read_go_to_the_data_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (server, handles) = start_cluster(dir.path());

    let w = bench(server, "--workload seqwrite --bs 64k --qd 8 --jobs 2 --files 2 --size 1m --verify");
    assert_eq!(num(&w, "errors"), 0.0, "{w}");
    assert_eq!(num(&w, "bytes"), (2 << 20) as f64, "{w}");
    assert!(num(&w, "ds_requests") == 32.0 && num(&w, "mds_io_requests") == 0.0, "{w}");
    assert!(w.contains("\"pnfs\":true"), "{w}");

    let r = bench(server, "--workload seqread --bs 64k --qd 8 --jobs 2 --files 2 --size 1m --verify");
    assert!(num(&r, "errors") == 0.0 && num(&r, "verify_errors") == 0.0, "{r}");
    assert_eq!(num(&r, "bytes"), (2 << 20) as f64, "{r}");
    assert!(num(&r, "ds_requests") == 32.0 && num(&r, "mds_io_requests") == 0.0, "{r}");

    // Random reads at queue depth over the stamped data, and the MDS path.
    let r = bench(server, "--workload randread --bs 4k --qd 32 --files 2 --size 1m --bytes 1m --verify");
    assert!(num(&r, "errors") == 0.0 && num(&r, "ds_requests") == 256.0, "{r}");
    let r = bench(server, "--workload seqread --bs 64k --qd 4 --files 2 --size 1m --no-pnfs --verify");
    assert!(num(&r, "errors") == 0.0 && num(&r, "ds_requests") == 0.0 && num(&r, "mds_io_requests") == 32.0, "{r}");
    assert!(r.contains("\"pnfs\":false"), "{r}");

    // A request crossing a stripe unit goes through the MDS (and still verifies).
    let r = bench(server, "--workload seqread --bs 128k --qd 4 --files 1 --size 1m --verify");
    assert!(num(&r, "errors") == 0.0 && num(&r, "mds_io_requests") == 8.0, "{r}");

    // Metadata workloads: the prepare phase creates the files.
    let m = bench(server, "--workload open-layout-close --files 8 --qd 4 --runtime 0.5");
    assert!(num(&m, "errors") == 0.0 && num(&m, "cycles") > 0.0, "{m}");
    assert!(num(&m, "mds_ops") >= 2.0 * num(&m, "cycles"), "{m}");
    let g = bench(server, "--workload getattr --files 8 --qd 4 --runtime 0.5");
    assert!(num(&g, "errors") == 0.0 && num(&g, "ops") > 0.0, "{g}");
    for h in handles {
        h.shutdown();
    }
}

/// mdtest: every job creates, stats and removes its files in its own
/// directory; all three phases count every file, while another process
/// holds opens (the hold workload: clients each holding files open,
/// renewing their leases, closing everything at the end).
#[test]
fn mdtest_phases_count_every_file_while_opens_are_held() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (server, handles) = start_cluster(dir.path());

    let mut hold = Command::new(env!("CARGO_BIN_EXE_pnfs-bench"))
        .args(["--server", &server.to_string(), "--path", "/export", "--json", "--workload", "hold"])
        .args("--jobs 2 --hold-clients 3 --hold-opens 4 --renew 0.2 --runtime 30".split_whitespace())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(hold.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("hold:") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "hold exited before it was ready");
    }
    assert!(line.contains("hold: ready: 12 opens held by 3 clients"), "{line}");

    let m = bench(server, "--workload mdtest --jobs 3 --qd 2 --files 5");
    assert_eq!(num(&m, "errors"), 0.0, "{m}");
    for phase in ["create", "stat", "remove"] {
        assert!(m.contains(&format!("\"{phase}\":{{\"ops\":15,")), "{phase}: {m}");
    }
    assert!(m.contains("\"creators\":6"), "{m}");
    // The job directories are gone, the held files are still there.
    let mut c = pnfs_client::Client::connect(server, 1).unwrap();
    let top = c.lookup_path("/export/pnfs-bench").unwrap();
    let names = c.readdir(&top).unwrap();
    assert!(names.iter().all(|n| !n.starts_with("mdtest-j")), "{names:?}");
    let held_dir = c.lookup(&top, "hold").unwrap();
    assert_eq!(c.readdir(&held_dir).unwrap().len(), 3);

    // SIGTERM: every held open is closed, and nothing failed.
    // SAFETY: kill(2) on the child's pid.
    unsafe { libc::kill(hold.id() as i32, libc::SIGTERM) };
    let out = hold.wait_with_output().unwrap();
    let j = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{j}");
    assert!(num(&j, "held") == 12.0 && num(&j, "closed") == 12.0 && num(&j, "errors") == 0.0, "{j}");
    for h in handles {
        h.shutdown();
    }
}

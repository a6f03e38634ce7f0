//! pnfsctl against an in-process MDS with three real data servers: every
//! subcommand, as text and JSON; placement skipping a draining, removed or
//! lost data server; remove refused while objects remain; a wrong key
//! refused; the binary's exit codes.

use pnfs_client::pnfs_protocol::control_auth::ControlKeys;
use pnfs_client::pnfs_protocol::seal::ClusterKey;
use pnfs_client::pnfs_protocol::wire::*;
use pnfs_mds::pnfs::client::CtlClient;
use pnfs_client::Client;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../../controlplane/tests/common/mod.rs"]
mod common;

const SU: usize = 64 * 1024;

struct Cluster {
    dir: tempfile::TempDir,
    nfs: SocketAddr,
    ctl: SocketAddr,
    _ds: Vec<pnfs_ds::DsHandle>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (nfs, ctl) = common::start_pnfs_mds(dir.path(), &format!("stripe_unit = {SU}"));
        let ds = (0..3).map(|i| common::start_ds(dir.path(), &format!("ds{i}"), ctl)).collect();
        (0..3).for_each(|i| common::wait_registered(dir.path(), ctl, &format!("ds{i}")));
        Cluster { dir, nfs, ctl, _ds: ds }
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("meta/cluster.key")
    }

    /// pnfsctl with `args`: (stdout, result).
    fn run_with_key(&self, key: &Path, args: &[&str]) -> (String, Result<(), pnfsctl::Error>) {
        let mut a: Vec<String> = vec!["--mds".into(), self.ctl.to_string(), "--key".into(), key.display().to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let mut out = Vec::new();
        let r = pnfsctl::run(&a, &mut out);
        (String::from_utf8(out).unwrap(), r)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (out, r) = self.run_with_key(&self.key(), args);
        r.unwrap_or_else(|e| panic!("pnfsctl {args:?}: {e}\n{out}"));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// The message of a refused command.
    fn fails(&self, args: &[&str]) -> String {
        match self.run_with_key(&self.key(), args) {
            (_, Err(pnfsctl::Error::Failed(m))) => m,
            (out, r) => panic!("pnfsctl {args:?} should fail: {r:?}\n{out}"),
        }
    }

    /// index -> (state, objects) from `ds list --json`.
    fn states(&self) -> Vec<(String, u64)> {
        let v = self.json(&["ds", "list"]);
        let ds = v["data_servers"].as_array().unwrap();
        ds.iter()
            .enumerate()
            .map(|(i, d)| {
                assert_eq!(d["index"].as_u64(), Some(i as u64));
                (d["state"].as_str().unwrap().to_string(), d["objects"].as_u64().expect("objects counted"))
            })
            .collect()
    }

    /// The data servers holding /export/NAME's stripes, per `layout --json`.
    fn servers_of(&self, name: &str) -> Vec<u64> {
        let v = self.json(&["layout", &format!("/export/{name}")]);
        v["segments"][0]["mirrors"][0].as_array().unwrap().iter().map(|o| o["ds_index"].as_u64().unwrap()).collect()
    }

    fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn write(c: &mut Client, name: &str, len: usize) {
    let root = c.lookup_path("/export").unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    c.write_file(&root, name, &data).unwrap();
}

#[test]
fn every_subcommand_against_an_mds_with_three_data_servers() {
    let cl = Cluster::start();
    let mut c = Client::connect(cl.nfs, 1).unwrap();

    // status and ds list, text and JSON.
    let text = cl.ok(&["status"]);
    assert!(text.contains("single node"), "{text}");
    assert!(text.contains("3 known: 3 up, 0 down; 3 active"), "{text}");
    assert!(text.contains("resilver:     none") && text.contains("rebalance:    none"), "{text}");
    let s = cl.json(&["status"]);
    assert_eq!((s["data_servers"]["up"].as_u64(), s["placed_files"].as_u64()), (Some(3), Some(0)));
    assert!(s["resilver"].is_null() && s["rebalance"].is_null());
    let list = cl.ok(&["ds", "list"]);
    assert!(list.starts_with("INDEX") && list.lines().count() == 4, "{list}");
    assert!(list.lines().nth(2).unwrap().contains("ds1") && list.contains("active"), "{list}");
    assert_eq!(cl.states(), vec![("active".to_string(), 0); 3]);
    let v = cl.json(&["ds", "list", "--no-count"]);
    assert!(v["data_servers"][0]["objects"].is_null() && v["data_servers"][0]["alive"] == true);

    // A file striped over all three; its layout with the objects' sizes
    // as the data servers report them.
    let len = 3 * SU + 1000;
    write(&mut c, "f1", len);
    assert_eq!(cl.states(), vec![("active".to_string(), 1); 3]);
    let l = cl.json(&["layout", "/export/f1"]);
    assert_eq!((l["kind"].as_str(), l["policy"].as_str(), l["size"].as_u64()), (Some("files"), Some("stripe"), Some(len as u64)));
    let objects = l["segments"][0]["mirrors"][0].as_array().unwrap();
    assert_eq!(objects.len(), 3);
    let sizes: Vec<u64> = objects.iter().map(|o| o["size"].as_u64().expect("stat'ed")).collect();
    assert_eq!(sizes.iter().sum::<u64>(), len as u64, "{l}");
    assert!(sizes.contains(&(SU as u64 + 1000)), "{sizes:?}");
    let text = cl.ok(&["layout", "/export/f1"]);
    assert!(text.contains("layout: files (policy stripe)") && text.contains("data server 2 (ds2)"), "{text}");
    let e = cl.fails(&["layout", "/export/nothing"]);
    assert!(e.contains("no \"nothing\" there") && e.contains("/export"), "{e}");
    assert!(cl.fails(&["layout", "export/f1"]).contains("namespace root"));

    // Drain: no new files there, and the objects left are reported.
    let out = cl.ok(&["ds", "drain", "2"]);
    assert!(out.contains("draining") && out.contains("1 object(s) remain"), "{out}");
    write(&mut c, "f2", SU);
    assert_eq!(cl.servers_of("f2"), [0, 1], "placement skips the draining data server");
    // Remove refused while it holds an object, saying to drain; nothing changed.
    let e = cl.fails(&["ds", "remove", "ds2"]);
    assert!(e.contains("still holds 1 object(s)") && e.contains("pnfsctl ds drain 2"), "{e}");
    assert_eq!(cl.states()[2], ("draining".to_string(), 1));
    write(&mut c, "f2b", SU);
    assert_eq!(cl.servers_of("f2b"), [0, 1]);
    // Once its last file is gone it can be removed; it gets nothing then.
    let root = c.lookup_path("/export").unwrap();
    c.remove(&root, "f1").unwrap();
    cl.wait_for("f1's objects gone from the placement records", || cl.states()[2].1 == 0);
    assert!(cl.ok(&["ds", "remove", "id:ds2"]).contains("removed"));
    assert_eq!(cl.states()[2], ("removed".to_string(), 0));
    write(&mut c, "f3", SU);
    assert_eq!(cl.servers_of("f3"), [0, 1]);
    assert!(cl.fails(&["ds", "drain", "2"]).contains("pnfsctl ds add 2"));
    // Add takes it back: new files use it again at once.
    assert!(cl.ok(&["ds", "add", "2"]).contains("is active again"));
    write(&mut c, "f4", SU);
    assert_eq!(cl.servers_of("f4"), [0, 1, 2]);
    assert!(cl.ok(&["ds", "add", "2"]).contains("already active"));

    // Declare-lost: counted in status, skipped by placement.
    let out = cl.ok(&["ds", "declare-lost", "1"]);
    assert!(out.contains("declared lost") && out.contains("object(s) count as gone"), "{out}");
    let s = cl.json(&["status"]);
    assert_eq!((s["data_servers"]["lost"].as_u64(), s["data_servers"]["active"].as_u64()), (Some(1), Some(2)));
    write(&mut c, "f5", SU);
    assert_eq!(cl.servers_of("f5"), [0, 2]);
    let v = cl.json(&["ds", "add", "1"]);
    assert_eq!(v["data_server"]["state"], "active");

    // Unknown data servers: what to do instead.
    assert!(cl.fails(&["ds", "drain", "nosuch"]).contains("pnfsctl ds list"));
    assert!(cl.fails(&["ds", "add", "ds9"]).contains("needs no add"));

    // Draining the last active data server says what that means.
    assert!(!cl.ok(&["ds", "drain", "0"]).contains("No live active"));
    assert!(!cl.ok(&["ds", "drain", "1"]).contains("No live active"));
    assert!(cl.ok(&["ds", "drain", "2"]).contains("No live active data server is left"));
    (0..3).for_each(|i| assert!(cl.ok(&["ds", "add", &i.to_string()]).contains("active again")));

    // Every file counted, five of them placed on data servers.
    let s = cl.json(&["status"]);
    assert!(s["files"].as_u64().unwrap() >= 6 && s["placed_files"].as_u64() == Some(5), "{s}");
}

#[test]
fn a_wrong_key_is_refused_and_the_binary_exits_accordingly() {
    let cl = Cluster::start();
    let other = tempfile::tempdir().unwrap();
    let wrong = ClusterKey::test_file_in(other.path());
    match cl.run_with_key(&wrong, &["ds", "drain", "0"]) {
        (_, Err(pnfsctl::Error::Failed(m))) => assert!(m.contains("refused") && m.contains("cluster's key"), "{m}"),
        other => panic!("a call with another cluster's key: {other:?}"),
    }
    // The right cluster key with the data servers' control keys (what a DS
    // signs with) is no admin call; the admin keys make no DS call.
    let key = ClusterKey::load(&cl.key()).unwrap();
    let drain = adm_ds_state_args { ada_target: "0".into(), ada_op: adm_ds_op::ADM_DS_DRAIN };
    let as_ds = CtlClient::new(ControlKeys::new(&key), 0).call(&cl.ctl.to_string(), PNFSCTL_ADMIN_PROGRAM, ADM_PROC_DS_SET_STATE, &drain);
    assert_eq!(as_ds.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
    let heartbeat = ctl_heartbeat_args { cha_ds_id: "ds0".into(), cha_free_bytes: 0, cha_bytes_read: 0, cha_bytes_written: 0 };
    let as_admin =
        CtlClient::new(ControlKeys::admin(&key), 0).call(&cl.ctl.to_string(), PNFSCTL_MDS_PROGRAM, CTL_PROC_HEARTBEAT, &heartbeat);
    assert_eq!(as_admin.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(cl.states()[0].0, "active", "nothing changed");

    let bin = env!("CARGO_BIN_EXE_pnfsctl");
    let run = |key: &Path, args: &[&str]| {
        std::process::Command::new(bin)
            .args(["--mds", &cl.ctl.to_string(), "--key", &key.display().to_string()])
            .args(args)
            .output()
            .unwrap()
    };
    let ok = run(&cl.key(), &["ds", "list"]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ds0"));
    let refused = run(&wrong, &["status"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).starts_with("pnfsctl: "));
    assert_eq!(run(&cl.key(), &["ds", "explode", "1"]).status.code(), Some(2));
}


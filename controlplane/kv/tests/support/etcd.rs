//! etcd clusters for the etcd backend's tests: the one named by
//! `PNFS_KV_ETCD_ENDPOINTS` (comma-separated client URLs), or a 3-member
//! cluster of our own started with scripts/etcd-cluster. Tests skip (saying
//! why) only when no endpoints are given and the etcd binary is missing.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pnfs_kv::{EtcdConfig, EtcdStore};

pub const ENDPOINTS_ENV: &str = "PNFS_KV_ETCD_ENDPOINTS";

fn script() -> PathBuf {
    // The workspace's scripts/, found upwards (pnfs-mds's tests use this file too).
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let s = dir.join("scripts/etcd-cluster");
        if s.exists() || !dir.pop() {
            return s;
        }
    }
}

/// True when the etcd binary is installed (else tests skip).
pub fn etcd_installed() -> bool {
    Command::new("etcd").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A base port P such that P..P+3 and P+10..P+13 are free on loopback.
fn free_base_port() -> u16 {
    let seed = std::process::id() as u64 ^ SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    for attempt in 0..200u64 {
        let base = 24000 + ((seed.wrapping_add(attempt * 7919)) % 1500) as u16 * 20;
        let free = (0..3).chain(10..13).all(|off| TcpListener::bind(("127.0.0.1", base + off)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free ports for an etcd cluster in 24000..54000");
}

/// A 3-member cluster run by scripts/etcd-cluster; `down --purge` on drop,
/// and also once this process exits (the script's --watch-pid), for
/// clusters kept in statics.
pub struct OwnCluster {
    pub dir: PathBuf,
    pub endpoints: Vec<String>,
}

impl OwnCluster {
    pub fn up() -> OwnCluster {
        Self::up_with(&[])
    }

    /// Each member in its own network namespace (`up --netns`, root only),
    /// so that [`OwnCluster::partition`] works.
    pub fn up_netns() -> OwnCluster {
        Self::up_with(&["--netns"])
    }

    fn up_with(extra: &[&str]) -> OwnCluster {
        let port = free_base_port();
        let dir = std::env::temp_dir().join(format!("pnfs-etcd-test-{}-{port}", std::process::id()));
        let out = Command::new(script())
            .args(["up", "--dir"])
            .arg(&dir)
            .args(["--base-port", &port.to_string(), "--watch-pid", &std::process::id().to_string()])
            .args(extra)
            .output()
            .expect("running scripts/etcd-cluster");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/etcd-cluster up failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout.lines().find_map(|l| l.strip_prefix("ETCD_ENDPOINTS=")).expect("ETCD_ENDPOINTS line");
        OwnCluster { dir, endpoints: line.split(',').map(str::to_string).collect() }
    }

    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(script())
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .expect("running scripts/etcd-cluster");
        assert!(
            out.status.success(),
            "scripts/etcd-cluster {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Number (1..3) of the leading member, waiting out an election.
    pub fn leader(&self) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let out = Command::new(script()).arg("leader").arg("--dir").arg(&self.dir).output().unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            }
            assert!(std::time::Instant::now() < deadline, "no etcd leader within 20 s");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn kill(&self, member: usize) {
        self.script(&["kill", &member.to_string()]);
    }

    pub fn start(&self, member: usize) {
        self.script(&["start", &member.to_string()]);
    }

    /// Cuts `member` off from the other members (it keeps running and the
    /// host still reaches it); needs [`OwnCluster::up_netns`].
    pub fn partition(&self, member: usize) {
        self.script(&["partition", &member.to_string()]);
    }

    pub fn heal(&self, member: usize) {
        self.script(&["heal", &member.to_string()]);
    }

    /// Runs etcdctl against `member` alone (2 s limits): Ok(stdout) or
    /// Err(stderr).
    pub fn etcdctl(&self, member: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .arg(format!("--endpoints={}", self.endpoints[member - 1]))
            .args(["--dial-timeout=1s", "--command-timeout=2s"])
            .args(args)
            .output()
            .expect("running etcdctl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg("--dir").arg(&self.dir).arg("--purge").status();
    }
}

/// Why network namespaces cannot be made here (not root, no `ip netns`),
/// or None when they can.
pub fn netns_unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.ok().as_deref() != Some("0") {
        return Some("not root (network namespaces need root)".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("ip netns fails: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Some(format!("no ip command (apt-get install iproute2): {e}")),
    }
}

/// Endpoints to test against: the environment's, else a cluster of our own
/// started once per test process; `None` (print why) when etcd is missing.
pub fn shared_endpoints() -> Option<Vec<String>> {
    static OWN: std::sync::OnceLock<Option<OwnCluster>> = std::sync::OnceLock::new();
    if let Ok(eps) = std::env::var(ENDPOINTS_ENV) {
        return Some(eps.split(',').map(str::to_string).collect());
    }
    OWN.get_or_init(|| {
        if !etcd_installed() {
            eprintln!(
                "SKIP etcd backend tests: no {ENDPOINTS_ENV} and no etcd binary (apt-get install etcd-server etcd-client)"
            );
            return None;
        }
        Some(OwnCluster::up())
    })
    .as_ref()
    .map(|c| c.endpoints.clone())
}

/// A key prefix no other store of any test process uses.
pub fn unique_prefix(tag: &str) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("pnfs-test/{tag}/{}-{nanos}-{}/", std::process::id(), N.fetch_add(1, Ordering::Relaxed)).into_bytes()
}

/// A store on a fresh, unique prefix, emptied on drop.
pub struct TestStore(pub EtcdStore);

impl TestStore {
    pub fn new(endpoints: &[String], tag: &str) -> TestStore {
        let mut cfg = EtcdConfig::new(endpoints.to_vec());
        cfg.prefix = unique_prefix(tag);
        TestStore(EtcdStore::connect(&cfg).expect("connecting to etcd"))
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = self.0.delete_all();
    }
}

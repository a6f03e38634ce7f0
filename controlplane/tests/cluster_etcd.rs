//! Three `ClusterNode`s in one process on a real 3-member etcd (support/etcd.rs
//! of pnfs-kv: `PNFS_KV_ETCD_ENDPOINTS` or scripts/etcd-cluster; skipped when
//! etcd is missing), peer links on loopback, VIPs recorded instead of added.
//! Needs the `etcd` feature: `cargo test -p pnfs-mds --features etcd --test cluster_etcd`.

#![cfg(feature = "etcd")]

#[path = "../kv/tests/support/etcd.rs"]
mod etcd;

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pnfs_kv::{EtcdConfig, EtcdStore};
use pnfs_mds::cluster::vip::RecordingActuator;
use pnfs_mds::cluster::{ClusterNode, ClusterSetup};
use pnfs_mds::config::ClusterConfig;
use pnfs_protocol::seal::ClusterKey;

const HEARTBEAT_MS: u64 = 250;
const LEASE_MS: u64 = 1500;

struct Cluster {
    nodes: Vec<Arc<ClusterNode>>,
    /// Fence calls and VIP actions of every node, in order.
    log: Arc<Mutex<Vec<String>>>,
    vips: Vec<IpAddr>,
}

fn free_ports(n: usize) -> Vec<String> {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    ls.iter().map(|l| l.local_addr().unwrap().to_string()).collect()
}

fn start(eps: &[String], tag: &str) -> Cluster {
    let prefix = etcd::unique_prefix(tag);
    let nodes_addrs = free_ports(3);
    let vips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([10, 99, 0, 100 + i])).collect();
    let log = Arc::new(Mutex::new(Vec::new()));
    let boots = Arc::new(AtomicU64::new(10));
    let key = ClusterKey::from_bytes([7; 32]);
    let nodes = (1..=3u32)
        .map(|id| {
            let mut cfg = EtcdConfig::new(eps.to_vec());
            cfg.prefix = prefix.clone();
            cfg.request_timeout = Duration::from_millis(1000);
            let store = Arc::new(EtcdStore::connect(&cfg).expect("connecting to etcd"));
            let cluster = ClusterConfig {
                node_id: id,
                nodes: nodes_addrs.clone(),
                vips: vips.clone(),
                vip_interface: "test0".into(),
                vip_prefix_len: 24,
                heartbeat_ms: HEARTBEAT_MS,
                lease_ms: LEASE_MS,
            };
            let b = boots.clone();
            let setup = ClusterSetup {
                cluster,
                store,
                key: key.clone(),
                epoch: (id as u64) << 32 | boots.fetch_add(1, Ordering::Relaxed),
                actuator: Some(Box::new(RecordingActuator { log: log.clone(), tag: format!("node{id}") })),
                recall: Box::new(|_| {}),
                rejoin: Box::new(move || Ok((id as u64) << 32 | b.fetch_add(1, Ordering::Relaxed))),
            };
            let l = log.clone();
            let fence = Box::new(move |n: u32, epoch: u64| {
                l.lock().unwrap().push(format!("node{id} fence {n} {epoch:#x}"));
                Ok(())
            });
            ClusterNode::start(setup, fence).expect("starting a cluster node")
        })
        .collect();
    Cluster { nodes, log, vips }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

impl Cluster {
    fn holders(&self, vip: IpAddr) -> Vec<u32> {
        self.nodes.iter().filter(|n| n.vips_held().contains(&vip)).map(|n| n.node_id()).collect()
    }

    fn settled(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, n)| {
            n.writable() && n.peer_links_up() == 2 && n.vips_held() == BTreeSet::from([self.vips[i]]) && n.live_nodes().len() == 3
        })
    }

    fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn endpoints() -> Option<Vec<String>> {
    etcd::shared_endpoints()
}

/// kill -9 of node 3 (links and listener close, nothing released): a
/// survivor revokes its lease (EOF + refused reconnect), fences it, then
/// claims its VIP, well within 500 ms; exactly one survivor does.
#[test]
fn a_killed_nodes_vip_moves_within_500_ms_after_fencing() {
    let Some(eps) = endpoints() else { return };
    let c = start(&eps, "cluster-kill");
    wait_for("three nodes up, each on its own VIP", Duration::from_secs(20), || c.settled());
    let epoch3 = c.nodes[2].epoch();
    let vip3 = c.vips[2];
    // From the kill on (kill() itself waits for the node's threads).
    let t0 = Instant::now();
    c.nodes[2].kill();
    wait_for("VIP 3 taken over", Duration::from_secs(10), || !c.holders(vip3).is_empty() && c.holders(vip3) != [3]);
    let took = t0.elapsed();
    eprintln!("cluster: VIP of the killed node taken over after {} ms", took.as_millis());
    std::thread::sleep(Duration::from_millis(3 * HEARTBEAT_MS));
    let holders: Vec<u32> = c.holders(vip3).into_iter().filter(|&n| n != 3).collect();
    assert_eq!(holders.len(), 1, "exactly one survivor holds VIP 3: {holders:?}");
    let taker = holders[0];
    // Equal loads: the lowest id takes it.
    assert_eq!(taker, 1);
    let log = c.log_lines();
    let fence = log.iter().position(|l| *l == format!("node{taker} fence 3 {epoch3:#x}")).unwrap_or_else(|| panic!("no fence of node 3: {log:?}"));
    let add = log.iter().position(|l| *l == format!("node{taker} add {vip3}")).expect("VIP added");
    assert!(fence < add, "fence before the VIP is added: {log:?}");
    assert!(took < Duration::from_millis(500), "takeover took {took:?} (over 500 ms)");
    assert!(t0.elapsed() < Duration::from_secs(10));
    // The survivors' own VIPs did not move.
    assert_eq!(c.holders(c.vips[0]), [1]);
    assert_eq!(c.holders(c.vips[1]), [2]);
    assert_eq!(c.nodes[0].live_nodes().len(), 2);
}

/// Node 2 stops renewing (cut off from etcd): it turns read-only within
/// lease_ms and drops its VIP; only after its lease expires does another
/// node take the VIP (never two holders at once); once it renews again it
/// rejoins with a new epoch, writable, and the VIP stays where it went.
#[test]
fn a_partitioned_node_turns_read_only_and_its_vip_moves_after_its_lease() {
    let Some(eps) = endpoints() else { return };
    let c = start(&eps, "cluster-partition");
    wait_for("three nodes up, each on its own VIP", Duration::from_secs(20), || c.settled());
    let (two, vip2) = (&c.nodes[1], c.vips[1]);
    let epoch2 = two.epoch();
    two.pause_renewal(true);
    let t0 = Instant::now();
    let ro = wait_for("node 2 read-only", Duration::from_millis(LEASE_MS + 1000), || !two.writable());
    assert!(ro < Duration::from_millis(LEASE_MS), "read-only after {ro:?}, lease_ms is {LEASE_MS}");
    eprintln!("cluster: partitioned node read-only after {} ms", ro.as_millis());
    // Watch VIP 2 until another node has it: never two holders.
    let moved = wait_for("VIP 2 moved", Duration::from_secs(15), || {
        let h = c.holders(vip2);
        assert!(h.len() <= 1, "two holders of VIP 2: {h:?}");
        if h.iter().any(|&n| n != 2) {
            assert!(!two.writable(), "VIP 2 taken while node 2 was still writable");
        }
        h.len() == 1 && h[0] != 2
    });
    let moved_at = t0.elapsed();
    eprintln!("cluster: VIP of the partitioned node moved {} ms after renewals stopped", moved_at.as_millis());
    assert!(moved_at >= Duration::from_secs(2) - Duration::from_millis(HEARTBEAT_MS), "moved before the lease (TTL 2 s) could expire: {moved_at:?}");
    let _ = moved;
    let log = c.log_lines();
    assert!(log.iter().any(|l| l.ends_with(&format!("fence 2 {epoch2:#x}"))), "node 2 fenced: {log:?}");
    // Heal: node 2 finds its lease gone, rejoins with a new epoch.
    two.pause_renewal(false);
    wait_for("node 2 writable again", Duration::from_secs(10), || two.writable());
    assert_ne!(two.epoch(), epoch2, "a node whose lease was lost rejoins with a new epoch");
    wait_for("node 2 live again for the others", Duration::from_secs(5), || c.nodes[0].live_nodes().len() == 3);
    std::thread::sleep(Duration::from_millis(3 * HEARTBEAT_MS));
    assert_eq!(c.holders(vip2).len(), 1, "VIP 2 has one holder after the heal");
    assert!(two.vips_held().is_empty(), "no failback: VIP 2 stays with the node that took it");
}

/// A clean shutdown revokes the lease: the VIP moves without waiting for
/// it to expire and without the peer-link fast path.
#[test]
fn a_clean_shutdown_hands_its_vip_over_at_once() {
    let Some(eps) = endpoints() else { return };
    let c = start(&eps, "cluster-shutdown");
    wait_for("three nodes up, each on its own VIP", Duration::from_secs(20), || c.settled());
    c.nodes[0].shutdown();
    assert!(c.nodes[0].vips_held().is_empty() && !c.nodes[0].writable());
    let took = wait_for("VIP 1 taken over", Duration::from_secs(5), || c.holders(c.vips[0]).len() == 1);
    eprintln!("cluster: VIP of the node shut down taken over after {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

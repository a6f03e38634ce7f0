//! [`ClusterNode`]: the membership loop that ties lease, peer links, VIP
//! claims and the write gate together (see the module docs of `cluster`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pnfs_kv::{EtcdStore, KvStore, LeaseId};
use pnfs_protocol::seal::{ClusterKey, Purpose};

use super::membership::{lease_ttl, node_key, NodeRecord, Quorum, NODE_RECORD_PREFIX};
use super::peers::{PeerConfig, PeerEvent, PeerLinks};
use super::vip::{claim_holder, claim_value, vip_key, vip_of_key, vips_to_claim, VipActuator, VIP_CLAIM_PREFIX};
use super::WriteGate;
use crate::config::{ClusterConfig, MAX_CLUSTER_NODES};

/// Time after start before this node takes over VIPs of a node it has
/// never seen live (a cluster starting node by node should not hand every
/// VIP to the first node up): this many leases.
const UNSEEN_TAKEOVER_LEASES: u32 = 5;

/// Fences `(node_id, epoch)` on every data server: afterwards no DS
/// accepts a control call from that node with an epoch <= `epoch`.
/// `Pnfs::fence_node` in production.
pub type FenceFn = Box<dyn Fn(u32, u64) -> Result<(), String> + Send + Sync>;

/// What a node needs besides the fence callback.
pub struct ClusterSetup {
    pub cluster: ClusterConfig,
    /// A connection of the node's own (keepalives must not queue behind
    /// MDS traffic); its request timeout should be about one heartbeat.
    pub store: Arc<EtcdStore>,
    pub key: ClusterKey,
    /// This node's control epoch now (`node_id << 32 | boot count`).
    pub epoch: u64,
    /// Puts VIPs on the interface; `None` runs the node without VIPs.
    pub actuator: Option<Box<dyn VipActuator>>,
    /// Recalls this node's clients' layouts or delegations on a file (a peer asked).
    pub recall: Box<dyn Fn(super::peers::PeerRecall) + Send + Sync>,
    /// After the lease was lost: takes a new boot count from the KV, makes
    /// the MDS use the epoch built from it, and returns that epoch.
    pub rejoin: Box<dyn Fn() -> Result<u64, String> + Send + Sync>,
}

struct Inner {
    cfg: ClusterConfig,
    store: Arc<EtcdStore>,
    epoch: Arc<AtomicU64>,
    gate: Arc<WriteGate>,
    stop: AtomicBool,
    /// Tests: behave as if cut off from etcd (no renewals).
    paused: AtomicBool,
    /// Leave without revoking the lease or dropping VIPs (tests: kill -9).
    abandon: AtomicBool,
    held: Mutex<BTreeSet<IpAddr>>,
    live: Mutex<Vec<NodeRecord>>,
    lease: Mutex<Option<LeaseId>>,
    actuator: Option<Box<dyn VipActuator>>,
    fence: FenceFn,
    rejoin: Box<dyn Fn() -> Result<u64, String> + Send + Sync>,
}

/// A running cluster node; see the module docs.
pub struct ClusterNode {
    inner: Arc<Inner>,
    peers: Arc<PeerLinks>,
    main: Mutex<Option<JoinHandle<()>>>,
}

impl ClusterNode {
    /// Starts the node: its peer listener and links, then the membership
    /// loop (which grants the lease and publishes `N<node_id>` at once).
    /// VIP actuation is set up first; if that fails the error is logged
    /// and the node runs without VIPs.
    pub fn start(setup: ClusterSetup, fence: FenceFn) -> Result<Arc<ClusterNode>, String> {
        let cfg = setup.cluster;
        let addrs: Vec<SocketAddr> = cfg
            .nodes
            .iter()
            .map(|n| n.parse().map_err(|_| format!("mds.cluster.nodes: {n:?} is not an ip:port")))
            .collect::<Result<_, _>>()?;
        if cfg.node_id == 0 || cfg.node_id as usize > addrs.len() || addrs.len() > MAX_CLUSTER_NODES as usize {
            return Err("mds.cluster.node_id: not in 1..=len(nodes)".into());
        }
        let actuator = setup.actuator.and_then(|a| match a.setup(&cfg.vips) {
            Ok(()) => Some(a),
            Err(e) => {
                log::error!("cluster: VIP management is off: {e}. This node serves its own address only (run pnfsd as root with iproute2 installed to manage VIPs)");
                None
            }
        });
        let epoch = Arc::new(AtomicU64::new(setup.epoch));
        let (tx, events) = mpsc::channel();
        let peer_cfg = PeerConfig { me: cfg.node_id, addrs, key: setup.key.derive(Purpose::PeerLink), heartbeat: Duration::from_millis(cfg.heartbeat_ms) };
        let peers = Arc::new(PeerLinks::start(peer_cfg, epoch.clone(), tx, Arc::from(setup.recall))?);
        let inner = Arc::new(Inner {
            cfg,
            store: setup.store,
            epoch,
            gate: Arc::new(WriteGate::default()),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            held: Mutex::default(),
            live: Mutex::default(),
            lease: Mutex::default(),
            actuator,
            fence,
            rejoin: setup.rejoin,
        });
        let (i, p) = (inner.clone(), peers.clone());
        let main = std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || Membership::new(i, p).run(events))
            .map_err(|e| format!("starting the cluster thread: {e}"))?;
        Ok(Arc::new(ClusterNode { inner, peers, main: Mutex::new(Some(main)) }))
    }

    /// Makes this node the process's: the MDS's write gate and its
    /// cross-node recalls go through it (pnfsd; once per process).
    pub fn install_gates(self: &Arc<Self>) -> bool {
        let peers = self.peers.clone();
        super::install_gates(self.inner.gate.clone(), Box::new(move |r| peers.send(r)))
    }

    pub fn node_id(&self) -> u32 {
        self.inner.cfg.node_id
    }

    /// May this node change anything now (its lease is fresh)?
    pub fn writable(&self) -> bool {
        self.inner.gate.is_open()
    }

    /// The control epoch in use (changes when the node rejoins).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Relaxed)
    }

    /// VIPs this node has on its interface now.
    pub fn vips_held(&self) -> BTreeSet<IpAddr> {
        lock(&self.inner.held).clone()
    }

    /// Live nodes as of the last heartbeat.
    pub fn live_nodes(&self) -> Vec<NodeRecord> {
        lock(&self.inner.live).clone()
    }

    /// Asks every peer to recall its clients' layouts on `ino`.
    pub fn recall_file(&self, ino: u64, rw_only: bool) {
        self.peers.recall_file(ino, rw_only);
    }

    pub fn peer_links_up(&self) -> usize {
        self.peers.links_up()
    }

    /// Tests: stop renewing the lease, as a node cut off from etcd would
    /// (`false`: resume).
    #[doc(hidden)]
    pub fn pause_renewal(&self, paused: bool) {
        self.inner.paused.store(paused, Ordering::Relaxed);
    }

    /// Leaves the cluster cleanly: VIPs dropped, lease revoked (its keys
    /// go at once, so the others take the VIPs without waiting).
    pub fn shutdown(&self) {
        self.stop(false);
    }

    /// Tests: disappear like a killed process: links and listener close,
    /// nothing is released (the lease lingers until a peer revokes it or
    /// it expires).
    #[doc(hidden)]
    pub fn kill(&self) {
        self.stop(true);
    }

    fn stop(&self, abandon: bool) {
        self.inner.abandon.store(abandon, Ordering::Relaxed);
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = lock(&self.main).take() {
            let _ = t.join();
        }
        self.peers.shutdown();
        self.inner.gate.open_until(None);
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if !self.inner.stop.load(Ordering::Relaxed) {
            self.shutdown();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State of the membership loop (one thread).
struct Membership {
    n: Arc<Inner>,
    peers: Arc<PeerLinks>,
    heartbeat: Duration,
    quorum: Quorum,
    /// Last control epoch seen for each node while it was live.
    seen: BTreeMap<u32, u64>,
    /// Live nodes' records, from the last view.
    live: BTreeMap<u32, NodeRecord>,
    /// Dead nodes fenced since they vanished (forgotten when they return).
    fenced: BTreeSet<u32>,
    /// VIPs on our interface.
    actuated: BTreeSet<IpAddr>,
    started: Instant,
    recalls_dropped: u64,
}

impl Membership {
    fn new(n: Arc<Inner>, peers: Arc<PeerLinks>) -> Membership {
        let heartbeat = Duration::from_millis(n.cfg.heartbeat_ms);
        let quorum = Quorum::new(heartbeat, Duration::from_millis(n.cfg.lease_ms));
        Membership {
            n,
            peers,
            heartbeat,
            quorum,
            seen: BTreeMap::new(),
            live: BTreeMap::new(),
            fenced: BTreeSet::new(),
            actuated: BTreeSet::new(),
            started: Instant::now(),
            recalls_dropped: 0,
        }
    }

    fn me(&self) -> u32 {
        self.n.cfg.node_id
    }

    fn lease(&self) -> Option<LeaseId> {
        *lock(&self.n.lease)
    }

    fn run(mut self, events: Receiver<PeerEvent>) {
        self.revoke_previous_instance();
        let mut next = Instant::now();
        while !self.n.stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + self.heartbeat;
                self.tick();
            }
            match events.recv_timeout(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(50))) {
                Ok(PeerEvent::Dead(peer)) => {
                    self.peer_dead(peer);
                    self.tick();
                }
                Err(_) => {}
            }
        }
        self.leave();
    }

    /// A record `N<me>` left by our previous (killed) instance: its lease
    /// still holds our VIP claims. We are that node: revoke it now.
    fn revoke_previous_instance(&mut self) {
        let key = node_key(self.me());
        if let Ok(list) = self.n.store.list_leased(&key, 1) {
            if let Some((_, v, lease)) = list.into_iter().find(|(k, _, _)| *k == key) {
                let old = NodeRecord::decode(&v);
                log::info!("cluster: revoking the lease of this node's previous instance ({old:?})");
                if let Some(old) = old {
                    if let Err(e) = (self.n.fence)(self.me(), old.epoch) {
                        log::warn!("cluster: fencing this node's previous epoch {}: {e}", old.epoch);
                    }
                }
                if let Err(e) = self.n.store.lease_revoke(lease) {
                    log::warn!("cluster: revoking the previous instance's lease: {e}");
                }
            }
        }
    }

    fn peer_dead(&mut self, peer: u32) {
        let Some(rec) = self.live.get(&peer).cloned() else { return };
        if !self.n.gate.is_open() {
            return;
        }
        log::warn!("cluster: node {peer} is dead (link closed, reconnect refused); revoking its lease");
        if let Err(e) = self.n.store.lease_revoke(rec.lease) {
            log::warn!("cluster: revoking node {peer}'s lease: {e}; its VIPs move when it expires");
        }
    }

    fn tick(&mut self) {
        let metrics = &crate::metrics::metrics().cluster;
        self.renew();
        self.n.gate.open_until(self.quorum.read_only_at());
        let writable = self.quorum.writable(Instant::now());
        metrics.node_live.set(writable as i64);
        metrics.peer_links_up.set(self.peers.links_up() as i64);
        let dropped = self.peers.recalls_dropped();
        metrics.recalls_dropped.inc_by(dropped - self.recalls_dropped);
        self.recalls_dropped = dropped;
        if !writable {
            if !self.actuated.is_empty() {
                log::warn!("cluster: lease not renewed for {} ms: read-only, dropping VIPs {:?}", self.n.cfg.lease_ms - self.n.cfg.heartbeat_ms, self.actuated);
            }
            self.set_actuated(&BTreeSet::new());
            return;
        }
        if let Err(e) = self.view_and_claim() {
            log::warn!("cluster: {e}");
        }
        metrics.vips_held.set(self.actuated.len() as i64);
    }

    /// Renews the lease, or (without one) takes a new one and publishes
    /// this node's record under it.
    fn renew(&mut self) {
        if self.n.paused.load(Ordering::Relaxed) {
            return;
        }
        let metrics = &crate::metrics::metrics().cluster;
        let sent = Instant::now();
        match self.lease() {
            Some(id) => match self.n.store.lease_keep_alive(id) {
                Ok(Some(_)) => self.quorum.renewed(sent),
                Ok(None) => {
                    // Expired, or revoked by a peer that thought us dead:
                    // we may have been fenced. Rejoin with a new epoch.
                    metrics.fenced.inc();
                    self.quorum.lost();
                    *lock(&self.n.lease) = None;
                    log::warn!("cluster: this node's lease is gone (expired or revoked): read-only; rejoining with a new epoch");
                    match (self.n.rejoin)() {
                        Ok(epoch) => {
                            self.n.epoch.store(epoch, Ordering::Relaxed);
                            log::info!("cluster: new control epoch {epoch:#x}");
                            self.grant();
                        }
                        Err(e) => log::error!("cluster: taking a new epoch: {e}; retrying next heartbeat"),
                    }
                }
                Err(e) => {
                    metrics.lease_renew_failures.inc();
                    log::debug!("cluster: renewing the lease: {e}");
                }
            },
            None => self.grant(),
        }
    }

    fn grant(&mut self) {
        let sent = Instant::now();
        let record = |lease| NodeRecord {
            node_id: self.me(),
            epoch: self.n.epoch.load(Ordering::Relaxed),
            peer: self.n.cfg.nodes[self.me() as usize - 1].clone(),
            lease,
        };
        let granted = self.n.store.lease_grant(lease_ttl(self.n.cfg.lease_ms)).and_then(|id| {
            match self.n.store.put_with_lease(&node_key(self.me()), &record(id).encode(), id) {
                Ok(()) => Ok(id),
                Err(e) => {
                    let _ = self.n.store.lease_revoke(id);
                    Err(e)
                }
            }
        });
        match granted {
            Ok(id) => {
                *lock(&self.n.lease) = Some(id);
                self.quorum.renewed(sent);
                log::info!("cluster: node {} joined (lease {id:x}, epoch {:#x})", self.me(), self.n.epoch.load(Ordering::Relaxed));
            }
            Err(e) => {
                crate::metrics::metrics().cluster.lease_renew_failures.inc();
                log::warn!("cluster: joining (lease grant): {e}");
            }
        }
    }

    /// Reads who is live and who holds what, reconciles our interface with
    /// our claims, and claims what falls to us.
    fn view_and_claim(&mut self) -> Result<(), String> {
        let Some(lease) = self.lease() else { return Ok(()) };
        let max = MAX_CLUSTER_NODES as usize + 1;
        let nodes = self.n.store.list_leased(NODE_RECORD_PREFIX, max).map_err(|e| format!("reading live nodes: {e}"))?;
        self.live = nodes
            .iter()
            .filter_map(|(_, v, _)| NodeRecord::decode(v))
            .filter(|r| r.node_id >= 1 && r.node_id as usize <= self.n.cfg.nodes.len())
            .map(|r| (r.node_id, r))
            .collect();
        for (id, r) in &self.live {
            self.seen.insert(*id, r.epoch);
        }
        self.fenced.retain(|n| !self.live.contains_key(n));
        *lock(&self.n.live) = self.live.values().cloned().collect();
        let n = self.n.clone();
        let vips = &n.cfg.vips;
        if vips.is_empty() {
            return Ok(());
        }
        let raw = self.n.store.list_leased(VIP_CLAIM_PREFIX, vips.len() * 2 + 8).map_err(|e| format!("reading VIP claims: {e}"))?;
        let mut claims = BTreeMap::new();
        let mut mine = BTreeSet::new();
        for (k, v, l) in raw {
            let (Some(vip), Some(holder)) = (vip_of_key(&k), claim_holder(&v)) else { continue };
            claims.insert(vip, holder);
            if l == lease {
                mine.insert(vip);
            }
        }
        if self.n.actuator.is_none() {
            return Ok(());
        }
        let live_ids: BTreeSet<u32> = self.live.keys().copied().chain([self.me()]).collect();
        let unseen_ok = self.started.elapsed() >= Duration::from_millis(self.n.cfg.lease_ms) * UNSEEN_TAKEOVER_LEASES;
        let want = vips_to_claim(self.me(), vips, &live_ids, &claims, |n| self.seen.contains_key(&n) || unseen_ok);
        // Fence first: every dead node that may have held a VIP we take
        // (any node seen live, whose claims went with its lease, and the
        // preferred nodes of the orphans taken). Nothing is claimed until
        // all are fenced.
        let preferred_of = |vip: IpAddr| vips.iter().position(|v| *v == vip).map_or(0, |i| i as u32 + 1);
        let mut to_fence: BTreeSet<u32> = self.seen.keys().copied().collect();
        to_fence.extend(want.iter().map(|&v| preferred_of(v)));
        to_fence.retain(|n| *n != self.me() && !self.live.contains_key(n));
        if !want.is_empty() && !to_fence.into_iter().all(|n| self.fence_dead(n)) {
            self.set_actuated(&mine);
            return Ok(());
        }
        for vip in want {
            let preferred = preferred_of(vip);
            let value = claim_value(self.me(), self.n.epoch.load(Ordering::Relaxed));
            match self.n.store.put_if_absent_with_lease(&vip_key(vip), &value, lease) {
                Ok(None) => {
                    if preferred != self.me() {
                        crate::metrics::metrics().cluster.takeovers.inc();
                        log::warn!("cluster: took over VIP {vip} of node {preferred}");
                    }
                    mine.insert(vip);
                }
                Ok(Some(l)) if l == lease => {
                    mine.insert(vip);
                }
                Ok(Some(_)) => log::debug!("cluster: VIP {vip} claimed by another node first"),
                Err(e) => log::warn!("cluster: claiming VIP {vip}: {e}"),
            }
        }
        // Still ours only while the gate is open (a slow pass may cross it).
        if !self.n.gate.is_open() {
            mine.clear();
        }
        self.set_actuated(&mine);
        Ok(())
    }

    /// Fences dead node `n` on every DS before its VIP is taken; true when
    /// done (now or earlier since it vanished).
    fn fence_dead(&mut self, n: u32) -> bool {
        if self.fenced.contains(&n) {
            return true;
        }
        // The epoch we saw it live with, else every epoch it can have had:
        // any boot it took is at most the shared boot counter now.
        let epoch = match self.seen.get(&n) {
            Some(&e) => e,
            None => (n as u64) << 32 | (self.boot_counter() & 0xffff_ffff),
        };
        match (self.n.fence)(n, epoch) {
            Ok(()) => {
                log::info!("cluster: node {n} fenced on the data servers (epochs <= {epoch:#x})");
                self.fenced.insert(n);
                true
            }
            Err(e) => {
                log::warn!("cluster: fencing node {n}: {e}; its VIP waits");
                false
            }
        }
    }

    fn boot_counter(&self) -> u64 {
        let read = || -> Option<u64> {
            let mut t = self.n.store.begin().ok()?;
            pnfs_kv::key::decode_u64_be(&t.get(crate::keyspace::BOOT_COUNT_KEY).ok()??)
        };
        read().unwrap_or(0)
    }

    /// Makes the interface carry exactly `want`.
    fn set_actuated(&mut self, want: &BTreeSet<IpAddr>) {
        let Some(act) = &self.n.actuator else { return };
        for &vip in self.actuated.difference(want).copied().collect::<Vec<_>>().iter() {
            match act.remove(vip) {
                Ok(()) => {
                    self.actuated.remove(&vip);
                    log::info!("cluster: VIP {vip} removed");
                }
                Err(e) => log::error!("cluster: removing VIP {vip}: {e}"),
            }
        }
        for &vip in want.difference(&self.actuated).copied().collect::<Vec<_>>().iter() {
            match act.add(vip) {
                Ok(()) => {
                    self.actuated.insert(vip);
                    log::info!("cluster: VIP {vip} up on this node");
                }
                Err(e) => log::error!("cluster: adding VIP {vip}: {e}"),
            }
        }
        *lock(&self.n.held) = self.actuated.clone();
    }

    fn leave(&mut self) {
        self.n.gate.open_until(None);
        if self.n.abandon.load(Ordering::Relaxed) {
            return;
        }
        self.set_actuated(&BTreeSet::new());
        if let Some(id) = lock(&self.n.lease).take() {
            if let Err(e) = self.n.store.lease_revoke(id) {
                log::warn!("cluster: revoking our lease on the way out: {e}");
            }
        }
    }
}

/// Starts the cluster node of `mds` (its `[mds.cluster]`): a connection
/// of its own to the MDS's etcd (request timeout about one heartbeat, so a
/// renewal that cannot be made fails in time), `ip` for the VIPs when any
/// are configured, peer recalls into `mds`'s own layout recalls, and a new
/// boot count from the KV on rejoin, handed to `use_epoch` (which must
/// make the MDS use it towards the data servers). `fence` fences a node on
/// every DS (`Pnfs::fence_node`).
pub fn start_for(
    mds: &Arc<crate::Mds>,
    fence: FenceFn,
    use_epoch: Box<dyn Fn(u64) + Send + Sync>,
) -> Result<Arc<ClusterNode>, String> {
    let cfg = &mds.cfg;
    let cluster = cfg.cluster.clone().ok_or("mds.cluster: not set")?;
    let mut etcd = pnfs_kv::EtcdConfig::new(cfg.etcd_endpoints.clone());
    etcd.prefix = cfg.etcd_prefix.clone().into_bytes();
    etcd.request_timeout = Duration::from_millis(cluster.heartbeat_ms.max(250));
    let store = Arc::new(EtcdStore::connect(&etcd).map_err(|e| format!("mds.etcd_endpoints (cluster membership): {e}"))?);
    let key = ClusterKey::load(&cfg.cluster_key_path()).map_err(|e| format!("mds.cluster_key_file: {e}"))?;
    let actuator: Option<Box<dyn VipActuator>> = if cluster.vips.is_empty() {
        None
    } else {
        Some(Box::new(super::vip::IpActuator {
            interface: cluster.vip_interface.clone(),
            prefix_len: cluster.vip_prefix_len,
            nfs_port: cfg.bind.port(),
        }))
    };
    let node_id = cluster.node_id as u64;
    let me = Arc::downgrade(mds);
    let recall = Box::new(move |r: super::peers::PeerRecall| {
        let Some(m) = me.upgrade() else { return };
        // This node's clients only: never sent on to the peers again.
        match r {
            super::peers::PeerRecall::Layouts { ino, rw_only } => {
                if m.pnfs.is_none() {
                    return;
                }
                let mut fx = crate::state::Effects::default();
                m.state().recall_layouts(ino, None, rw_only, "recall from a peer node", &mut fx);
                let _ = m.apply(fx);
            }
            super::peers::PeerRecall::Delegations { ino, write } => crate::ops::deleg::recall_for_peer(&m, ino, write),
        }
    });
    let kv = mds.ns.store().clone();
    let rejoin = Box::new(move || {
        let boots = pnfs_kv::transact(kv.as_ref(), 16, |t| -> Result<u64, pnfs_kv::KvError> {
            let key = crate::keyspace::BOOT_COUNT_KEY;
            let n = t.get(key)?.and_then(|v| pnfs_kv::key::decode_u64_be(&v)).unwrap_or(0) + 1;
            t.put(key, &pnfs_kv::key::u64_be(n))?;
            Ok(n)
        })
        .map_err(|e: pnfs_kv::KvError| format!("taking a new boot count: {e:?}"))?;
        let epoch = node_id << 32 | (boots & 0xffff_ffff);
        use_epoch(epoch);
        Ok(epoch)
    });
    let setup = ClusterSetup {
        epoch: node_id << 32 | mds.boot_epoch as u64,
        cluster,
        store,
        key,
        actuator,
        recall,
        rejoin,
    };
    ClusterNode::start(setup, fence)
}

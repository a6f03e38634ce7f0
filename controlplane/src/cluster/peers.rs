//! Peer links: a TCP connection from each node to every other (at its
//! `mds.cluster.nodes` address), authenticated with the cluster key, that
//! carries a ping every heartbeat and cross-node recalls: of layouts, and
//! of delegations a client of another node's operation conflicts with.
//!
//! Fast death detection: the link from us to a peer ends with EOF (or a
//! reset) and the reconnect that follows is *refused*: nothing listens on
//! the peer's port, its process is dead (a kill -9 leaves the host up, so
//! its kernel refuses at once). That is reported as [`PeerEvent::Dead`];
//! the node revokes the peer's lease instead of waiting for it to expire.
//! A timeout proves nothing (a partition): the lease decides then.
//!
//! Wire (all fixed sizes, nothing length-prefixed to trust):
//! the dialer sends `HELLO` (magic, version, from, to, its nonce); the
//! listener answers its nonce and a tag proving it holds the key; the
//! dialer answers its own tag. Then the dialer sends frames (kind, flag,
//! value, tag over both nonces and a sequence number, so frames cannot be
//! forged, replayed or reordered); the listener only reads. Each node dials
//! every other, so both directions exist. A connection failing any check
//! is closed; unauthenticated ones are capped and must finish the
//! handshake within a second.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pnfs_protocol::seal::{random_bytes, TagKey};

const MAGIC: &[u8; 8] = b"PNFSPEER";
const VERSION: u8 = 1;
const HELLO_LEN: usize = 8 + 1 + 4 + 4 + 16;
const FRAME_LEN: usize = 1 + 1 + 8 + 16;
const KIND_PING: u8 = 1;
const KIND_RECALL: u8 = 2;
const KIND_DELEG_RECALL: u8 = 3;
/// Recalls queued per peer (outgoing) and in all (incoming) before new
/// ones are dropped (counted in [`PeerLinks::recalls_dropped`]).
pub const RECALL_QUEUE: usize = 1024;
/// How long a connection may take to authenticate.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often blocked reads and accepts look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// What the links tell the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The peer's process is gone: its link hit EOF and the reconnect was refused.
    Dead(u32),
}

/// Where the links run.
#[derive(Clone)]
pub struct PeerConfig {
    pub me: u32,
    /// Peer listener of every node, in node id order (this one included).
    pub addrs: Vec<SocketAddr>,
    /// Derived from the cluster key for peer links.
    pub key: TagKey,
    pub heartbeat: Duration,
}

/// A recall one node asks its peers to make, of what their own clients
/// hold on file `ino`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRecall {
    /// Layouts (`rw_only`: read/write ones only).
    Layouts { ino: u64, rw_only: bool },
    /// Delegations an open or change (`write`) by a client of the asking
    /// node conflicts with (CB_RECALL through each holder's back channel).
    Delegations { ino: u64, write: bool },
}

impl PeerRecall {
    fn frame_fields(self) -> (u8, u8, u64) {
        match self {
            PeerRecall::Layouts { ino, rw_only } => (KIND_RECALL, rw_only as u8, ino),
            PeerRecall::Delegations { ino, write } => (KIND_DELEG_RECALL, write as u8, ino),
        }
    }
}

type RecallFn = Arc<dyn Fn(PeerRecall) + Send + Sync>;

struct Shared {
    cfg: PeerConfig,
    stop: AtomicBool,
    /// Link to node i + 1 is authenticated and up.
    up: Vec<AtomicBool>,
    inbound: AtomicUsize,
    recalls_dropped: AtomicU64,
    epoch: Arc<AtomicU64>,
}

/// The running links of one node.
pub struct PeerLinks {
    shared: Arc<Shared>,
    outboxes: Vec<(u32, SyncSender<PeerRecall>)>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl PeerLinks {
    /// Binds this node's peer listener and starts dialing every other node.
    /// `epoch` is this node's current control epoch (sent in pings).
    pub fn start(cfg: PeerConfig, epoch: Arc<AtomicU64>, events: Sender<PeerEvent>, on_recall: RecallFn) -> Result<PeerLinks, String> {
        let me_addr = cfg.addrs[cfg.me as usize - 1];
        let listener = TcpListener::bind(me_addr).map_err(|e| format!("mds.cluster.nodes[{}] {me_addr}: binding the peer listener: {e}", cfg.me - 1))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            up: cfg.addrs.iter().map(|_| AtomicBool::new(false)).collect(),
            cfg,
            stop: AtomicBool::new(false),
            inbound: AtomicUsize::new(0),
            recalls_dropped: AtomicU64::new(0),
            epoch,
        });
        let mut threads = Vec::new();
        let (recall_tx, recall_rx) = mpsc::sync_channel::<PeerRecall>(RECALL_QUEUE);
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| std::thread::Builder::new().name(name).spawn(f).map_err(|e| format!("starting a peer-link thread: {e}"));
        let s = shared.clone();
        threads.push(spawn("peer-listen".into(), Box::new(move || listen(s, listener, recall_tx)))?);
        let s = shared.clone();
        threads.push(spawn("peer-recalls".into(), Box::new(move || run_recalls(s, recall_rx, on_recall)))?);
        let mut outboxes = Vec::new();
        for peer in 1..=shared.cfg.addrs.len() as u32 {
            if peer == shared.cfg.me {
                continue;
            }
            let (tx, rx) = mpsc::sync_channel(RECALL_QUEUE);
            outboxes.push((peer, tx));
            let (s, ev) = (shared.clone(), events.clone());
            threads.push(spawn(format!("peer-dial-{peer}"), Box::new(move || dial(s, peer, rx, ev)))?);
        }
        Ok(PeerLinks { shared, outboxes, threads: Mutex::new(threads) })
    }

    /// Asks every peer to recall its clients' layouts on `ino`. Never
    /// blocks: a full queue drops the recall and counts it.
    pub fn recall_file(&self, ino: u64, rw_only: bool) {
        self.send(PeerRecall::Layouts { ino, rw_only });
    }

    /// Asks every peer to recall its clients' delegations on `ino` that an
    /// open or change (`write`) conflicts with. Never blocks, as above.
    pub fn recall_delegations(&self, ino: u64, write: bool) {
        self.send(PeerRecall::Delegations { ino, write });
    }

    pub fn send(&self, r: PeerRecall) {
        for (peer, tx) in &self.outboxes {
            if let Err(TrySendError::Full(_)) = tx.try_send(r) {
                self.dropped(*peer);
            }
        }
    }

    fn dropped(&self, peer: u32) {
        let n = self.shared.recalls_dropped.fetch_add(1, Ordering::Relaxed);
        if n.is_power_of_two() {
            log::warn!("cluster: recall queue to node {peer} full; recall dropped ({} so far)", n + 1);
        }
    }

    /// Links to peers that are up now.
    pub fn links_up(&self) -> usize {
        self.shared.up.iter().filter(|u| u.load(Ordering::Relaxed)).count()
    }

    pub fn is_up(&self, peer: u32) -> bool {
        self.shared.up.get(peer as usize - 1).is_some_and(|u| u.load(Ordering::Relaxed))
    }

    /// Recalls dropped because a queue was full (sending or receiving).
    pub fn recalls_dropped(&self) -> u64 {
        self.shared.recalls_dropped.load(Ordering::Relaxed)
    }

    /// Closes every link and the listener, and waits for the threads.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for PeerLinks {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn hello(me: u32, peer: u32, nonce: &[u8; 16]) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8] = VERSION;
    b[9..13].copy_from_slice(&me.to_be_bytes());
    b[13..17].copy_from_slice(&peer.to_be_bytes());
    b[17..].copy_from_slice(nonce);
    b
}

fn proof(key: &TagKey, side: &[u8], nc: &[u8], ns: &[u8], from: u32, to: u32) -> [u8; 16] {
    key.tag(&[side, nc, ns, &from.to_be_bytes(), &to.to_be_bytes()])
}

fn frame(key: &TagKey, nc: &[u8], ns: &[u8], seq: u64, kind: u8, flag: u8, value: u64) -> [u8; FRAME_LEN] {
    let mut b = [0u8; FRAME_LEN];
    b[0] = kind;
    b[1] = flag;
    b[2..10].copy_from_slice(&value.to_be_bytes());
    let t: [u8; 16] = key.tag(&[b"frame", nc, ns, &seq.to_be_bytes(), &b[..10]]);
    b[10..].copy_from_slice(&t);
    b
}

/// Fills `buf` from `s` (whose read timeout is [`POLL`]), giving up at
/// `deadline` or when stopping. `Ok(false)`: EOF before a full buffer.
fn read_full(s: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool, deadline: Instant) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Err(ErrorKind::TimedOut.into());
        }
        match s.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn listen(s: Arc<Shared>, listener: TcpListener, recalls: SyncSender<PeerRecall>) {
    let cap = 2 * s.cfg.addrs.len() + 4;
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !s.stop.load(Ordering::Relaxed) {
        conns.retain(|c| !c.is_finished());
        match listener.accept() {
            Ok((stream, from)) => {
                if s.inbound.load(Ordering::Relaxed) >= cap {
                    log::debug!("cluster: peer connection from {from} refused: {cap} open already");
                    continue;
                }
                s.inbound.fetch_add(1, Ordering::Relaxed);
                let (s2, r) = (s.clone(), recalls.clone());
                let spawned = std::thread::Builder::new().name("peer-in".into()).spawn(move || {
                    if let Err(e) = serve_inbound(&s2, stream, &r) {
                        log::debug!("cluster: peer connection from {from} closed: {e}");
                    }
                    s2.inbound.fetch_sub(1, Ordering::Relaxed);
                });
                match spawned {
                    Ok(h) => conns.push(h),
                    Err(_) => {
                        s.inbound.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                log::warn!("cluster: peer listener accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
    // Closing the listener (dropped here) and every accepted link.
    drop(listener);
    for c in conns {
        let _ = c.join();
    }
}

/// One inbound link: authenticate the dialer, then read its frames.
fn serve_inbound(s: &Shared, mut stream: TcpStream, recalls: &SyncSender<PeerRecall>) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(POLL)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut h = [0u8; HELLO_LEN];
    if !read_full(&mut stream, &mut h, &s.stop, deadline).map_err(|e| e.to_string())? {
        return Err("closed during the handshake".into());
    }
    let from = u32::from_be_bytes(h[9..13].try_into().expect("4 bytes"));
    let to = u32::from_be_bytes(h[13..17].try_into().expect("4 bytes"));
    if &h[..8] != MAGIC || h[8] != VERSION || to != s.cfg.me || from == 0 || from as usize > s.cfg.addrs.len() || from == to {
        return Err("not a peer hello for this node".into());
    }
    let nc = h[17..].to_vec();
    let ns: [u8; 16] = random_bytes();
    let mut reply = [0u8; 32];
    reply[..16].copy_from_slice(&ns);
    reply[16..].copy_from_slice(&proof(&s.cfg.key, b"listener", &nc, &ns, from, to));
    stream.write_all(&reply).map_err(|e| e.to_string())?;
    let mut theirs = [0u8; 16];
    if !read_full(&mut stream, &mut theirs, &s.stop, deadline).map_err(|e| e.to_string())? {
        return Err("closed during the handshake".into());
    }
    if !pnfs_protocol::seal::constant_time_eq(&theirs, &proof(&s.cfg.key, b"dialer", &nc, &ns, from, to)) {
        return Err(format!("node {from} failed authentication (a different cluster key?)"));
    }
    // Idle for more than a few heartbeats: the dialer is gone or cut off.
    let idle_limit = (s.cfg.heartbeat * 4).max(Duration::from_secs(2));
    let mut seq = 0u64;
    loop {
        let mut f = [0u8; FRAME_LEN];
        match read_full(&mut stream, &mut f, &s.stop, Instant::now() + idle_limit) {
            Ok(true) => {}
            Ok(false) => return Err("closed".into()),
            Err(e) => return Err(e.to_string()),
        }
        if !s.cfg.key.verify::<16>(&[b"frame", &nc, &ns, &seq.to_be_bytes(), &f[..10]], &f[10..]) {
            return Err(format!("bad frame tag from node {from}"));
        }
        seq += 1;
        let value = u64::from_be_bytes(f[2..10].try_into().expect("8 bytes"));
        match f[0] {
            KIND_PING => {}
            KIND_RECALL | KIND_DELEG_RECALL => {
                let r = match f[0] {
                    KIND_RECALL => PeerRecall::Layouts { ino: value, rw_only: f[1] != 0 },
                    _ => PeerRecall::Delegations { ino: value, write: f[1] != 0 },
                };
                if recalls.try_send(r).is_err() {
                    let n = s.recalls_dropped.fetch_add(1, Ordering::Relaxed);
                    if n.is_power_of_two() {
                        log::warn!("cluster: incoming recall queue full; recall from node {from} dropped ({} so far)", n + 1);
                    }
                }
            }
            k => return Err(format!("unknown frame kind {k} from node {from}")),
        }
    }
}

fn run_recalls(s: Arc<Shared>, rx: Receiver<PeerRecall>, on_recall: RecallFn) {
    while !s.stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => on_recall(r),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// How a link ended.
enum LinkEnd {
    /// EOF or reset: the peer closed it (or its process died).
    Closed,
    /// Anything else (a timeout, a failed handshake).
    Broken,
    Stopping,
}

/// Keeps the link to `peer` up; reports its death (EOF, then a refused reconnect).
fn dial(s: Arc<Shared>, peer: u32, outbox: Receiver<PeerRecall>, events: Sender<PeerEvent>) {
    let addr = s.cfg.addrs[peer as usize - 1];
    let connect_timeout = s.cfg.heartbeat.max(Duration::from_millis(200));
    // The link was up and ended with EOF: a refused reconnect now means dead.
    let mut just_closed = false;
    while !s.stop.load(Ordering::Relaxed) {
        match TcpStream::connect_timeout(&addr, connect_timeout) {
            Ok(stream) => {
                let end = run_link(&s, peer, stream, &outbox);
                s.up[peer as usize - 1].store(false, Ordering::Relaxed);
                match end {
                    LinkEnd::Stopping => return,
                    LinkEnd::Closed => {
                        just_closed = true;
                        continue; // reconnect at once: refused tells
                    }
                    LinkEnd::Broken => just_closed = false,
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && just_closed => {
                log::warn!("cluster: node {peer} closed its link and refuses connections: its process is dead");
                let _ = events.send(PeerEvent::Dead(peer));
                just_closed = false;
            }
            Err(_) => just_closed = false,
        }
        sleep_unless_stopped(&s.stop, s.cfg.heartbeat);
    }
}

fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(POLL.min(end.saturating_duration_since(Instant::now())));
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof)
}

fn run_link(s: &Shared, peer: u32, mut stream: TcpStream, outbox: &Receiver<PeerRecall>) -> LinkEnd {
    let me = s.cfg.me;
    let setup = stream
        .set_read_timeout(Some(POLL))
        .and_then(|_| stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
        .and_then(|_| stream.set_nodelay(true));
    if setup.is_err() {
        return LinkEnd::Broken;
    }
    let nc: [u8; 16] = random_bytes();
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    if let Err(e) = stream.write_all(&hello(me, peer, &nc)) {
        return if is_closed(&e) { LinkEnd::Closed } else { LinkEnd::Broken };
    }
    let mut reply = [0u8; 32];
    match read_full(&mut stream, &mut reply, &s.stop, deadline) {
        Ok(true) => {}
        Ok(false) => return LinkEnd::Closed,
        Err(_) if s.stop.load(Ordering::Relaxed) => return LinkEnd::Stopping,
        Err(e) if is_closed(&e) => return LinkEnd::Closed,
        Err(_) => return LinkEnd::Broken,
    }
    let ns = &reply[..16];
    if !pnfs_protocol::seal::constant_time_eq(&reply[16..], &proof(&s.cfg.key, b"listener", &nc, ns, me, peer)) {
        log::error!("cluster: node {peer} at {} failed authentication (a different cluster key?)", s.cfg.addrs[peer as usize - 1]);
        return LinkEnd::Broken;
    }
    if stream.write_all(&proof(&s.cfg.key, b"dialer", &nc, ns, me, peer)).is_err() {
        return LinkEnd::Broken;
    }
    s.up[peer as usize - 1].store(true, Ordering::Relaxed);
    log::info!("cluster: link to node {peer} up");
    let mut seq = 0u64;
    let mut last_ping: Option<Instant> = None;
    let mut probe = [0u8; 64];
    loop {
        if s.stop.load(Ordering::Relaxed) {
            return LinkEnd::Stopping;
        }
        // The listener never writes after the handshake: a read returning
        // means EOF or a reset, i.e. the peer closed the link.
        match stream.read(&mut probe) {
            Ok(0) => return LinkEnd::Closed,
            Ok(_) => return LinkEnd::Broken,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) if is_closed(&e) => return LinkEnd::Closed,
            Err(_) => return LinkEnd::Broken,
        }
        let mut out: Vec<[u8; FRAME_LEN]> = Vec::new();
        while let Ok(r) = outbox.try_recv() {
            let (kind, flag, ino) = r.frame_fields();
            out.push(frame(&s.cfg.key, &nc, ns, seq, kind, flag, ino));
            seq += 1;
        }
        if last_ping.is_none_or(|t| t.elapsed() >= s.cfg.heartbeat) {
            out.push(frame(&s.cfg.key, &nc, ns, seq, KIND_PING, 0, s.epoch.load(Ordering::Relaxed)));
            seq += 1;
            last_ping = Some(Instant::now());
        }
        for f in &out {
            if let Err(e) = stream.write_all(f) {
                return if is_closed(&e) { LinkEnd::Closed } else { LinkEnd::Broken };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::seal::{ClusterKey, Purpose};

    fn free_addrs(n: usize) -> Vec<SocketAddr> {
        let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        ls.iter().map(|l| l.local_addr().unwrap()).collect()
    }

    fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    struct Node {
        links: PeerLinks,
        events: Receiver<PeerEvent>,
        recalled: Arc<Mutex<Vec<PeerRecall>>>,
    }

    fn node(me: u32, addrs: &[SocketAddr], key: &ClusterKey) -> Node {
        let cfg = PeerConfig { me, addrs: addrs.to_vec(), key: key.derive(Purpose::PeerLink), heartbeat: Duration::from_millis(100) };
        let (tx, rx) = mpsc::channel();
        let recalled = Arc::new(Mutex::new(Vec::new()));
        let r = recalled.clone();
        let links = PeerLinks::start(cfg, Arc::new(AtomicU64::new(me as u64)), tx, Arc::new(move |rc| r.lock().unwrap().push(rc))).unwrap();
        Node { links, events: rx, recalled }
    }

    #[test]
    fn links_come_up_carry_recalls_and_report_a_killed_peer_dead() {
        let addrs = free_addrs(3);
        let key = ClusterKey::from_bytes([3; 32]);
        let nodes: Vec<Node> = (1..=3).map(|i| node(i, &addrs, &key)).collect();
        wait_for("all links up", Duration::from_secs(10), || nodes.iter().all(|n| n.links.links_up() == 2));
        nodes[0].links.recall_file(42, true);
        nodes[0].links.recall_delegations(43, false);
        let sent = [PeerRecall::Layouts { ino: 42, rw_only: true }, PeerRecall::Delegations { ino: 43, write: false }];
        wait_for("recalls delivered", Duration::from_secs(5), || nodes[1..].iter().all(|n| n.recalled.lock().unwrap().as_slice() == sent));
        assert!(nodes[0].recalled.lock().unwrap().is_empty(), "a node does not recall to itself");
        // "kill -9" node 3: its sockets close, its port refuses.
        let mut nodes = nodes;
        let three = nodes.pop().unwrap();
        drop(three);
        for n in &nodes {
            let ev = n.events.recv_timeout(Duration::from_secs(5)).expect("death reported");
            assert_eq!(ev, PeerEvent::Dead(3));
        }
        assert!(!nodes[0].links.is_up(3));
    }

    #[test]
    fn a_node_with_another_key_is_not_let_in() {
        let addrs = free_addrs(2);
        let one = node(1, &addrs, &ClusterKey::from_bytes([1; 32]));
        let two = node(2, &addrs, &ClusterKey::from_bytes([2; 32]));
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!((one.links.links_up(), two.links.links_up()), (0, 0));
        // A failed handshake is no death.
        assert!(one.events.try_recv().is_err());
    }

    #[test]
    fn a_forged_frame_closes_the_link() {
        let addrs = free_addrs(2);
        let key = ClusterKey::from_bytes([5; 32]);
        let one = node(1, &addrs, &key);
        // Authenticate properly as node 2, then send a frame with a bad tag.
        let tk = key.derive(Purpose::PeerLink);
        let mut s = TcpStream::connect(addrs[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let nc = [9u8; 16];
        s.write_all(&hello(2, 1, &nc)).unwrap();
        let mut reply = [0u8; 32];
        s.read_exact(&mut reply).unwrap();
        s.write_all(&proof(&tk, b"dialer", &nc, &reply[..16], 2, 1)).unwrap();
        let mut f = frame(&tk, &nc, &reply[..16], 0, KIND_RECALL, 0, 7);
        f[3] ^= 1;
        s.write_all(&f).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "the listener closes the link");
        std::thread::sleep(Duration::from_millis(100));
        assert!(one.recalled.lock().unwrap().is_empty());
    }
}

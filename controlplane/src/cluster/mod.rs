//! One node of an active-active MDS cluster (`[mds.cluster]`):
//! membership under an etcd lease ([`membership`]), authenticated links to
//! the other nodes ([`peers`]), the VIPs this node serves ([`vip`]), and
//! the quorum gate the MDS checks before changing anything.
//!
//! Every heartbeat the node renews its lease, reads who is live and who
//! holds which VIP, and claims the VIPs [`vip::vips_to_claim`] gives it:
//! fence the node that held it on every DS (the fence callback), claim it
//! in etcd (put-if-absent under our lease: the txn decides races), then
//! `ip addr add` and a gratuitous ARP. A peer whose link hits EOF and then
//! refuses a reconnect is dead: its lease is revoked at once, so its VIPs
//! move within a heartbeat instead of a lease.
//!
//! Quorum: a node that has not renewed its lease for `lease_ms -
//! heartbeat_ms` answers state-changing operations NFS4ERR_DELAY
//! ([`may_run`], checked in one place in `compound.rs`) and drops its
//! VIPs. When its lease is found expired (or revoked by a peer) it was
//! possibly fenced: it takes a new control epoch (the rejoin callback: a
//! new boot count from the KV) and joins again with a new lease; a lease
//! that was only renewed late keeps its epoch (nobody may fence a node
//! whose lease is alive).
//!
//! The etcd-backed [`ClusterNode`] needs the `etcd` feature; the gate and
//! the pure decisions do not.

pub mod membership;
pub mod peers;
pub mod vip;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pnfs_protocol::wire::nfs_opnum4;

/// Nanoseconds since a process-wide base instant (for deadlines kept in atomics).
fn now_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Open while the node's lease is fresh: state may change until `deadline`.
#[derive(Debug, Default)]
pub struct WriteGate {
    /// [`now_nanos`] after which the node is read-only (0: read-only).
    deadline: AtomicU64,
}

impl WriteGate {
    pub fn is_open(&self) -> bool {
        now_nanos() < self.deadline.load(Ordering::Relaxed)
    }

    /// Open until `until` (a time in the past closes it).
    pub fn open_until(&self, until: Option<Instant>) {
        let nanos = until.map_or(0, |t| {
            let now = Instant::now();
            let left = t.saturating_duration_since(now).as_nanos() as u64;
            if left == 0 { 0 } else { now_nanos() + left }
        });
        self.deadline.store(nanos, Ordering::Relaxed);
    }
}

/// A process's cluster node, for the MDS's hooks (set once by pnfsd).
struct Gates {
    write: Arc<WriteGate>,
    recall: Box<dyn Fn(peers::PeerRecall) + Send + Sync>,
}

static GATES: OnceLock<Gates> = OnceLock::new();

/// Installs this process's cluster hooks: the write gate [`may_run`]
/// checks and where [`peer_recall`] sends. Once per process; false if
/// already set.
pub fn install_gates(write: Arc<WriteGate>, recall: Box<dyn Fn(peers::PeerRecall) + Send + Sync>) -> bool {
    GATES.set(Gates { write, recall }).is_ok()
}

/// Whether `op` may run now: always for a single MDS and for read-only
/// operations; a cluster node that lost quorum answers the rest
/// NFS4ERR_DELAY (the client retries, by then through another node).
pub fn may_run(op: nfs_opnum4) -> bool {
    match GATES.get() {
        None => true,
        Some(g) => is_read_only(op) || g.write.is_open(),
    }
}

/// Operations that change nothing on the server (state, namespace, data).
pub fn is_read_only(op: nfs_opnum4) -> bool {
    use nfs_opnum4::*;
    matches!(
        op,
        OP_PUTFH | OP_PUTROOTFH | OP_PUTPUBFH | OP_GETFH | OP_SAVEFH | OP_RESTOREFH | OP_LOOKUP | OP_LOOKUPP
            | OP_SECINFO | OP_SECINFO_NO_NAME | OP_GETATTR | OP_ACCESS | OP_VERIFY | OP_NVERIFY | OP_READDIR
            | OP_READLINK | OP_READ | OP_READ_PLUS | OP_SEEK | OP_GETXATTR | OP_LISTXATTRS | OP_GETDEVICEINFO
            | OP_GETDEVICELIST | OP_LOCKT | OP_TEST_STATEID
    )
}

/// Tells the other nodes to recall their clients' layouts on `ino` (this
/// node recalls its own): called where the MDS recalls layouts for a
/// truncate, remove or conflicting open. Nothing for a single MDS.
pub fn peer_recall(ino: u64, rw_only: bool) {
    if let Some(g) = GATES.get() {
        (g.recall)(peers::PeerRecall::Layouts { ino, rw_only });
    }
}

/// Tells the other nodes to recall their clients' delegations on `ino`
/// that an open or change (`write`) by a client of this node conflicts
/// with (`ops::deleg`). Nothing for a single MDS.
pub fn peer_recall_delegations(ino: u64, write: bool) {
    if let Some(g) = GATES.get() {
        (g.recall)(peers::PeerRecall::Delegations { ino, write });
    }
}

/// Sets SO_MARK [`vip::NFS_SOCKET_MARK`] on the NFS listener `fd` (needs
/// CAP_NET_ADMIN): accepted sockets inherit it, so their packets pass the
/// VIPs' RST-suppression rules while the kernel's own RSTs do not.
pub fn mark_listener(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let mark: libc::c_uint = vip::NFS_SOCKET_MARK;
    // SAFETY: setsockopt with a pointer to a live c_uint and its size.
    let r = unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_MARK, (&mark as *const libc::c_uint).cast(), std::mem::size_of::<libc::c_uint>() as libc::socklen_t)
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// SO_MARK of socket `fd`.
pub fn socket_mark(fd: std::os::fd::RawFd) -> std::io::Result<u32> {
    let mut mark: libc::c_uint = 0;
    let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_uint whose size is passed.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_MARK, (&mut mark as *mut libc::c_uint).cast(), &mut len) };
    if r == 0 { Ok(mark) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(feature = "etcd")]
mod node;
#[cfg(feature = "etcd")]
pub use node::{start_for, ClusterNode, ClusterSetup, FenceFn};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn gate_opens_until_its_deadline() {
        let g = WriteGate::default();
        assert!(!g.is_open());
        g.open_until(Some(Instant::now() + Duration::from_secs(60)));
        assert!(g.is_open());
        g.open_until(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!g.is_open());
        g.open_until(Some(Instant::now() + Duration::from_millis(30)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!g.is_open(), "the gate closes by itself when renewals stop");
    }

    #[test]
    fn read_only_ops_are_the_ones_that_change_nothing() {
        assert!(is_read_only(nfs_opnum4::OP_GETATTR) && is_read_only(nfs_opnum4::OP_READ));
        for op in [nfs_opnum4::OP_WRITE, nfs_opnum4::OP_OPEN, nfs_opnum4::OP_SETATTR, nfs_opnum4::OP_LAYOUTGET, nfs_opnum4::OP_CREATE_SESSION] {
            assert!(!is_read_only(op), "{op:?}");
        }
        // No cluster installed in this test process: everything runs.
        assert!(may_run(nfs_opnum4::OP_WRITE));
    }

    #[test]
    fn accepted_sockets_inherit_the_listener_mark() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        if let Err(e) = mark_listener(l.as_raw_fd()) {
            eprintln!("skipped: setting SO_MARK needs CAP_NET_ADMIN ({e})");
            return;
        }
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        assert_eq!(socket_mark(a.as_raw_fd()).unwrap(), vip::NFS_SOCKET_MARK);
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_mark(plain.as_raw_fd()).unwrap(), 0);
    }
}

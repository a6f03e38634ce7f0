//! The MDS epochs this DS accepts control calls from, per MDS node
//! (encoding: `pnfs_protocol::mds_ds::epoch`): a fixed table with one slot
//! for node 0 (a single MDS) and one per cluster node, nothing allocated
//! per call.
//!
//! Rules, per node:
//! - A call whose epoch is older than the newest seen from its node (in an
//!   authentic call or a REGISTER reply) is refused: that node restarted,
//!   and its earlier process is superseded.
//! - CTL_PROC_FENCE(node, epoch), from a current epoch of another node,
//!   refuses that node's epochs <= epoch from then on (a newer start of the
//!   node is accepted again: it rejoins by itself). Before the fence is
//!   answered, every call of that node already admitted has finished (a
//!   per-node gate: calls hold it shared, a fence takes it exclusively once),
//!   so no call of the fenced epoch takes effect after the acknowledgement.
//! - A node id beyond MAX_CLUSTER_NODES is refused.
//!
//! Everything here is in memory: a DS restart forgets it (and every
//! allowed stateid with it), see `Pnfs::fence_node` on the MDS for why that
//! is safe.

use pnfs_protocol::mds_ds::epoch::{epoch_node, node_slot, EPOCH_NODES};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

/// Why a call's epoch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Older than the newest epoch seen from its node (the node restarted).
    Superseded { newest: u64 },
    /// At or below the epoch its node was fenced at.
    Fenced { below: u64 },
    /// A node id no cluster has.
    UnknownNode,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Superseded { newest } => write!(f, "older than {newest:#x}, its node's newest (a restarted MDS)"),
            Refusal::Fenced { below } => write!(f, "fenced: its node's epochs below {below:#x} are refused (CTL_FENCE)"),
            Refusal::UnknownNode => write!(f, "names an MDS node id beyond the cluster limit"),
        }
    }
}

/// Why a CTL_FENCE is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceError {
    /// Node 0, a node id out of range, an epoch of another node, or the
    /// caller's own node (CTL_INVAL).
    Invalid,
    /// Calls of the node still running after the bound (CTL_IO: the caller
    /// tries again; the fence itself is in effect already).
    NotDrained,
}

pub struct MdsEpochs {
    /// Per node id: the newest epoch seen from it.
    newest: [AtomicU64; EPOCH_NODES],
    /// Per node id: epochs below this are refused (0: none).
    fenced_below: [AtomicU64; EPOCH_NODES],
    /// Per node id: held shared by every running call of that node, taken
    /// exclusively by a fence to wait for them.
    gates: [Arc<RwLock<()>>; EPOCH_NODES],
    /// Bumped by every fence that changed something: open control
    /// connections check whether their node is now refused.
    fences: tokio::sync::watch::Sender<u64>,
}

/// An admitted call: keeps its node's gate shared until dropped (after its
/// reply is sent).
pub struct Admitted {
    _gate: OwnedRwLockReadGuard<()>,
}

impl Default for MdsEpochs {
    fn default() -> Self {
        MdsEpochs {
            newest: std::array::from_fn(|_| AtomicU64::new(0)),
            fenced_below: std::array::from_fn(|_| AtomicU64::new(0)),
            gates: std::array::from_fn(|_| Arc::new(RwLock::new(()))),
            fences: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl MdsEpochs {
    /// Whether a call speaking for `epoch` is accepted now (nothing changes).
    pub fn check(&self, epoch: u64) -> Result<usize, Refusal> {
        let slot = node_slot(epoch).ok_or(Refusal::UnknownNode)?;
        let below = self.fenced_below[slot].load(Ordering::SeqCst);
        if epoch < below {
            return Err(Refusal::Fenced { below });
        }
        let newest = self.newest[slot].load(Ordering::Acquire);
        if epoch < newest {
            return Err(Refusal::Superseded { newest });
        }
        Ok(slot)
    }

    /// Records `epoch` as seen (REGISTER replies, authentic calls); older
    /// epochs of its node are refused from now on. False (nothing changed)
    /// when refused itself.
    pub fn observe(&self, epoch: u64) -> bool {
        match self.check(epoch) {
            Ok(slot) => {
                self.newest[slot].fetch_max(epoch, Ordering::AcqRel);
                true
            }
            Err(_) => false,
        }
    }

    /// Admits a call speaking for `epoch`: checks it under its node's gate
    /// (shared) and records it as seen. The gate is held until the
    /// [`Admitted`] is dropped; a fence waiting on it delays the call until
    /// the fence is in effect, and the call is then checked against it.
    pub async fn admit(&self, epoch: u64) -> Result<Admitted, Refusal> {
        let slot = node_slot(epoch).ok_or(Refusal::UnknownNode)?;
        let gate = self.gates[slot].clone().read_owned().await;
        self.check(epoch)?;
        let prev = self.newest[slot].fetch_max(epoch, Ordering::AcqRel);
        if epoch < prev {
            return Err(Refusal::Superseded { newest: prev });
        }
        Ok(Admitted { _gate: gate })
    }

    /// CTL_PROC_FENCE from a caller speaking for `caller`: refuses node
    /// `node`'s epochs <= `epoch` from now on, then waits (at most `drain`)
    /// for that node's calls already running. Idempotent: fencing at or
    /// below an earlier fence changes nothing (and still waits). Returns
    /// whether the fence was new.
    pub async fn fence(&self, caller: u64, node: u32, epoch: u64, drain: Duration) -> Result<bool, FenceError> {
        let slot = node_slot(epoch).ok_or(FenceError::Invalid)?;
        if node == 0 || epoch_node(epoch) != node || epoch_node(caller) == node || epoch_node(caller) == 0 {
            return Err(FenceError::Invalid);
        }
        let below = epoch.saturating_add(1);
        let new = self.fenced_below[slot].fetch_max(below, Ordering::SeqCst) < below;
        if new {
            self.fences.send_modify(|n| *n += 1);
        }
        match tokio::time::timeout(drain, self.gates[slot].write()).await {
            Ok(_exclusive) => Ok(new),
            Err(_) => Err(FenceError::NotDrained),
        }
    }

    /// The newest epoch seen from node `node` (0 when none, or out of range).
    pub fn newest(&self, node: u32) -> u64 {
        self.newest.get(node as usize).map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Epochs of `node` below this are refused (0: not fenced).
    pub fn fenced_below(&self, node: u32) -> u64 {
        self.fenced_below.get(node as usize).map_or(0, |n| n.load(Ordering::SeqCst))
    }

    /// Wakes when a fence changed something (see [`MdsEpochs::check`]).
    pub fn fence_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.fences.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::mds_ds::epoch::{control_epoch, MAX_CLUSTER_NODES};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    const DRAIN: Duration = Duration::from_secs(5);

    #[test]
    fn newest_epoch_per_node() {
        let t = MdsEpochs::default();
        rt().block_on(async {
            // A single MDS (node 0): older boots refused once a newer spoke.
            assert!(t.admit(5).await.is_ok());
            assert!(matches!(t.admit(4).await, Err(Refusal::Superseded { newest: 5 })));
            // Cluster nodes each have their own newest: node 1's boot 3
            // does not supersede node 2's boot 2, nor node 0's 5.
            let (n1, n2) = (control_epoch(1, 3), control_epoch(2, 2));
            assert!(t.admit(n1).await.is_ok());
            assert!(t.admit(n2).await.is_ok());
            assert!(t.admit(5).await.is_ok());
            assert!(t.admit(control_epoch(1, 2)).await.is_err());
            // A REGISTER reply naming node 2's restart supersedes its old start.
            assert!(t.observe(control_epoch(2, 9)));
            assert!(t.admit(n2).await.is_err());
            assert_eq!((t.newest(1), t.newest(2), t.newest(0)), (n1, control_epoch(2, 9), 5));
            // Node ids beyond the limit.
            assert_eq!(t.admit(control_epoch(MAX_CLUSTER_NODES + 1, 1)).await.err(), Some(Refusal::UnknownNode));
            assert!(!t.observe(u64::MAX));
            assert_eq!(t.newest(MAX_CLUSTER_NODES + 5), 0);
        });
    }

    #[test]
    fn fence_rules() {
        let t = MdsEpochs::default();
        let (n1, n2) = (control_epoch(1, 3), control_epoch(2, 4));
        rt().block_on(async {
            let mut changes = t.fence_changes();
            assert!(t.admit(n1).await.is_ok());
            assert!(t.admit(n2).await.is_ok());
            // Invalid: node 0, an epoch of another node, one's own node, a
            // caller that is no cluster node, a node out of range.
            assert_eq!(t.fence(n2, 0, 3, DRAIN).await, Err(FenceError::Invalid));
            assert_eq!(t.fence(n2, 1, control_epoch(3, 3), DRAIN).await, Err(FenceError::Invalid));
            assert_eq!(t.fence(n1, 1, n1, DRAIN).await, Err(FenceError::Invalid));
            assert_eq!(t.fence(7, 1, n1, DRAIN).await, Err(FenceError::Invalid));
            assert_eq!(t.fence(n2, 40, control_epoch(40, 1), DRAIN).await, Err(FenceError::Invalid));
            assert!(!changes.has_changed().unwrap());
            // Node 2 fences node 1's start 3: refused from now on, node 2 not.
            assert_eq!(t.fence(n2, 1, n1, DRAIN).await, Ok(true));
            assert!(changes.has_changed().unwrap());
            changes.mark_unchanged();
            assert!(matches!(t.admit(n1).await, Err(Refusal::Fenced { below }) if below == n1 + 1));
            assert!(matches!(t.check(control_epoch(1, 1)), Err(Refusal::Fenced { .. })));
            assert!(!t.observe(n1));
            assert!(t.admit(n2).await.is_ok());
            // Idempotent: again, or at a lower epoch, changes nothing.
            assert_eq!(t.fence(n2, 1, n1, DRAIN).await, Ok(false));
            assert_eq!(t.fence(n2, 1, control_epoch(1, 2), DRAIN).await, Ok(false));
            assert!(!changes.has_changed().unwrap());
            assert_eq!(t.fenced_below(1), n1 + 1);
            // Node 1 restarted (boot 8): accepted again, and its old start
            // stays refused.
            assert!(t.admit(control_epoch(1, 8)).await.is_ok());
            assert!(t.admit(n1).await.is_err());
            // A fenced node may not fence its fencer.
            assert!(t.check(n1).is_err());
        });
    }

    #[test]
    fn fence_waits_for_running_calls_of_the_node() {
        let t = Arc::new(MdsEpochs::default());
        let (n1, n2) = (control_epoch(1, 3), control_epoch(2, 4));
        rt().block_on(async {
            let running = t.admit(n1).await.unwrap();
            // A call of node 1 still runs: the fence is in effect at once
            // (new calls refused) but not acknowledged within the bound.
            assert_eq!(t.fence(n2, 1, n1, Duration::from_millis(50)).await, Err(FenceError::NotDrained));
            assert!(t.check(n1).is_err());
            // Once it finished, the fence is acknowledged.
            let t2 = t.clone();
            let fence = tokio::spawn(async move { t2.fence(n2, 1, n1, DRAIN).await });
            tokio::task::yield_now().await;
            assert!(!fence.is_finished());
            drop(running);
            assert_eq!(fence.await.unwrap(), Ok(false));
            // Other nodes' calls never wait on it.
            let _other = t.admit(n2).await.unwrap();
            assert_eq!(t.fence(n2, 1, n1, Duration::from_millis(50)).await, Ok(false));
        });
    }
}

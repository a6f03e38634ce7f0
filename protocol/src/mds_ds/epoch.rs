//! Control epochs: which MDS node, and which start of it, a control call
//! speaks for. Both planes use this encoding: the MDS to name its epoch in
//! every call it signs and in REGISTER replies, the DS to keep the newest
//! epoch per node and to fence a node's old ones (CTL_PROC_FENCE).
//!
//! `epoch = (node_id as u64) << 32 | boot_count`
//!
//! - `node_id`: 0 for a single MDS, 1..=[`MAX_CLUSTER_NODES`] for a node of
//!   a cluster (`mds.cluster.node_id`).
//! - `boot_count`: the MDS's start counter from its metadata store (in a
//!   cluster a shared counter in the KV, so no two starts share one). Only
//!   its low 32 bits are kept: four billion restarts.
//!
//! A single MDS therefore speaks with epoch = boot count, as before this
//! encoding existed, and an epoch compares above every earlier one of the
//! same node.

/// Nodes of an MDS cluster at most (`mds.cluster.node_id` is 1..=this).
pub const MAX_CLUSTER_NODES: u32 = 32;

/// Node ids a data server keeps epochs for: 0 (a single MDS) and
/// 1..=[`MAX_CLUSTER_NODES`].
pub const EPOCH_NODES: usize = MAX_CLUSTER_NODES as usize + 1;

/// The control epoch of start `boot_count` of node `node_id`.
pub fn control_epoch(node_id: u32, boot_count: u64) -> u64 {
    (node_id as u64) << 32 | (boot_count & 0xffff_ffff)
}

/// The node an epoch speaks for (may be out of range: check with
/// [`node_slot`] before indexing).
pub fn epoch_node(epoch: u64) -> u32 {
    (epoch >> 32) as u32
}

/// The boot count part of an epoch.
pub fn epoch_boot(epoch: u64) -> u32 {
    epoch as u32
}

/// The table slot of the node `epoch` speaks for; None when its node id is
/// beyond [`MAX_CLUSTER_NODES`] (no MDS sends one: refuse the call).
pub fn node_slot(epoch: u64) -> Option<usize> {
    let n = epoch_node(epoch);
    (n <= MAX_CLUSTER_NODES).then_some(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_orders_per_node() {
        // A single MDS: the epoch is its boot count, as before.
        assert_eq!(control_epoch(0, 7), 7);
        let e = control_epoch(3, 9);
        assert_eq!((epoch_node(e), epoch_boot(e), node_slot(e)), (3, 9, Some(3)));
        assert!(control_epoch(3, 10) > e, "a restart outranks the earlier start");
        assert_eq!(control_epoch(1, (1 << 32) | 5), control_epoch(1, 5), "only 32 bits of boot count");
        assert_eq!(node_slot(control_epoch(MAX_CLUSTER_NODES, 1)), Some(32));
        assert_eq!(node_slot(control_epoch(MAX_CLUSTER_NODES + 1, 1)), None);
        assert_eq!(node_slot(u64::MAX), None);
    }
}

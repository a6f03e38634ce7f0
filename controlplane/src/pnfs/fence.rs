//! Fencing a dead or partitioned MDS node on every data server
//! (CTL_PROC_FENCE), the first step of a takeover: once it returns Ok, no
//! data server still alive accepts a control call from that node's fenced
//! epochs (no object change, no stateid pushed or revoked), and none of its
//! calls is still running there.
//!
//! Data servers that are down are not waited for. That is safe: a DS keeps
//! its epoch table and its allowed stateids in memory only, so when it
//! comes back it holds none of the fenced node's stateids, and it is fenced
//! again as it registers with this node (the fences this node issued are
//! sent before its stateids are pushed again, `Pnfs::repush`). Between its
//! restart and that registration a partitioned node could still reach it;
//! such a node has stopped changing anything on its own by then (a node
//! that did not renew its KV lease for lease_ms - heartbeat_ms stops, and a
//! survivor fences only after that lease expired or the process is gone),
//! so the DS fence is the second line, not the only one.

use super::client::{bad_reply, status_result, CtlClient};
use super::Pnfs;
use pnfs_protocol::mds_ds::epoch::{control_epoch, epoch_node, MAX_CLUSTER_NODES};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, XdrDecode};
use std::io;
use std::time::{Duration, Instant};

/// How long [`Pnfs::fence_node`] waits for the live data servers'
/// acknowledgements: a takeover is to finish within 2 s.
pub const FENCE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Pause between tries at one data server (unreachable, or its fenced
/// node's calls still running).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl Pnfs {
    /// Fences MDS node `node_id` at `epoch` on every known data server, in
    /// parallel, within [`FENCE_TIMEOUT`]: see [`Pnfs::fence_node_within`].
    pub fn fence_node(&self, node_id: u32, epoch: u64) -> Result<(), String> {
        self.fence_node_within(node_id, epoch, FENCE_TIMEOUT)
    }

    /// Sends CTL_FENCE(node_id, epoch) to every known data server at once
    /// and returns when every live one (heartbeating this node) has
    /// acknowledged it, or after `bound`. `epoch` is the fenced node's
    /// control epoch (`control_epoch(node_id, boot_count)`; a bare boot
    /// count is taken as that node's); every earlier epoch of the node is
    /// fenced with it, a later start of the node is not. Err names the live
    /// data servers that did not acknowledge (the fence is in effect on the
    /// others; calling again is harmless), or why the fence is invalid.
    /// Data servers that are down (not heartbeating, or refusing the
    /// connection: no process) are tried but not waited for (see the
    /// module documentation).
    pub fn fence_node_within(&self, node_id: u32, epoch: u64, bound: Duration) -> Result<(), String> {
        let epoch = match epoch_node(epoch) {
            0 => control_epoch(node_id, epoch),
            n if n == node_id => epoch,
            n => return Err(format!("fencing node {node_id}: epoch {epoch:#x} is node {n}'s")),
        };
        let own = epoch_node(self.registry.epoch());
        if node_id == 0 || node_id > MAX_CLUSTER_NODES || node_id == own || own == 0 {
            return Err(format!("fencing node {node_id}: not another node of this cluster (this is node {own})"));
        }
        // Kept before sending, so a DS registering meanwhile gets it too.
        let earlier = {
            let mut fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
            let f = &mut fences[node_id as usize];
            std::mem::replace(f, (*f).max(epoch))
        };
        // One thread per data server, each bounded by the deadline; only the
        // live ones are waited for (a dead one's thread ends by itself).
        let deadline = Instant::now() + bound;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut waiting = std::collections::BTreeSet::new();
        let mut results = Vec::new();
        for d in self.registry.known() {
            let alive = self.registry.alive(d.index);
            let (tx, caller, index) = (tx.clone(), self.ctl.caller(), d.index);
            let spawned = std::thread::Builder::new()
                .name("mds-fence".into())
                .spawn(move || drop(tx.send((d.index, alive, fence_one(&caller, &d.control_addr, node_id, epoch, deadline)))));
            match spawned {
                Ok(_) if alive => drop(waiting.insert(index)),
                Ok(_) => {}
                Err(e) => results.push((index, alive, Err(format!("starting a thread: {e}")))),
            }
        }
        drop(tx);
        while !waiting.is_empty() {
            let Ok(r) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else { break };
            waiting.remove(&r.0);
            results.push(r);
        }
        results.extend(waiting.iter().map(|i| (*i, true, Err("no answer".to_string()))));
        let mut missing = Vec::new();
        let mut refused_us = false;
        for (index, alive, r) in results {
            match r {
                Ok(Fenced::Acknowledged) => {}
                Ok(Fenced::RefusedUs(e)) => {
                    refused_us = true;
                    missing.push(format!("data server {index} refuses this node's own epoch ({e})"));
                }
                Ok(Fenced::Down(e)) => log::info!("fencing node {node_id}: data server {index} is down ({e}); it is fenced when it registers again"),
                Err(e) if alive => missing.push(format!("data server {index}: {e}")),
                Err(e) => log::info!("fencing node {node_id}: data server {index}, not heartbeating, did not answer ({e}); it is fenced when it registers again"),
            }
        }
        if refused_us {
            // This node is fenced or superseded itself: its fences must not
            // reach data servers registering later.
            self.fences.lock().unwrap_or_else(|p| p.into_inner())[node_id as usize] = earlier;
        }
        if missing.is_empty() {
            log::warn!("MDS node {node_id} fenced at epoch {epoch:#x} on every live data server");
            Ok(())
        } else {
            Err(format!("fencing MDS node {node_id} at epoch {epoch:#x}: not acknowledged within {bound:?} by {}", missing.join("; ")))
        }
    }

    /// Speaks for control epoch `epoch` from now on, towards every data
    /// server (calls, REGISTER replies): a cluster node that rejoined with
    /// a new boot count after losing its lease (the data servers refuse its
    /// earlier epochs once they see this one, and a fence of the old one
    /// does not touch it). A single MDS keeps its epoch for its lifetime.
    pub fn use_epoch(&self, epoch: u64) {
        self.registry.set_epoch(epoch);
        self.ctl.set_epoch(epoch);
        log::info!("control epoch towards the data servers now {epoch:#x}");
    }

    /// Sends data server `ds` (registering again) the fences this node
    /// issued, before its stateids are pushed again: a DS that was down
    /// during a fence forgot nothing it needs, but learns the fence here.
    pub(super) fn resend_fences(&self, ds: u32) {
        let fences: Vec<(u32, u64)> = {
            let f = self.fences.lock().unwrap_or_else(|p| p.into_inner());
            f.iter().enumerate().filter(|(_, e)| **e != 0).map(|(n, e)| (n as u32, *e)).collect()
        };
        let Some(d) = self.registry.get(ds) else { return };
        for (node, epoch) in fences {
            match fence_one(&self.ctl.caller(), &d.control_addr, node, epoch, Instant::now() + FENCE_TIMEOUT) {
                Ok(Fenced::Acknowledged) => log::info!("MDS node {node} fenced at epoch {epoch:#x} on data server {ds} as it registered"),
                Ok(other) => log::warn!("fencing MDS node {node} on data server {ds} as it registered: {other:?}"),
                Err(e) => log::warn!("fencing MDS node {node} on data server {ds} as it registered: {e}"),
            }
        }
    }
}

/// How one data server took a fence.
#[derive(Debug)]
enum Fenced {
    Acknowledged,
    /// Nothing listens on its control port (its process is gone): it holds
    /// nothing to fence until it starts again, and then it registers.
    Down(String),
    /// It refuses this node's own epoch: this node is fenced or superseded.
    RefusedUs(String),
}

/// CTL_FENCE at one data server, tried again until `deadline` while it
/// cannot be reached (but is not down) or its fenced node's calls still run.
fn fence_one(caller: &CtlClient, addr: &str, node_id: u32, epoch: u64, deadline: Instant) -> Result<Fenced, String> {
    let args = ctl_fence_args { cfa_node_id: node_id, cfa_epoch: epoch };
    loop {
        let r = caller.call_until(addr, PNFSCTL_DS_PROGRAM, CTL_PROC_FENCE, &args, deadline).and_then(|body| {
            let res = ctl_res::decode(&mut Decoder::new(&body)).map_err(bad_reply)?;
            if res.cr_status == ctl_status::CTL_INVAL {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "the data server refuses this fence (CTL_INVAL)"));
            }
            status_result(res.cr_status)
        });
        match r {
            Ok(()) => return Ok(Fenced::Acknowledged),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(Fenced::Down(e.to_string())),
            // Trying again changes nothing.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(Fenced::RefusedUs(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Err(e.to_string()),
            Err(e) if Instant::now() + RETRY_PAUSE >= deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(RETRY_PAUSE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pnfs::PnfsConfig;
    use pnfs_kv::MemStore;
    use pnfs_protocol::mds_ds::epoch::EPOCH_NODES;
    use pnfs_protocol::seal::ClusterKey;
    use std::sync::Arc;

    fn pnfs(epoch: u64) -> Arc<Pnfs> {
        let pcfg = PnfsConfig::striped(65536, 0, Duration::from_secs(10));
        Pnfs::new(pcfg, Arc::new(MemStore::new()), epoch, ClusterKey::from_bytes([3; 32])).unwrap()
    }

    fn fenced(p: &Pnfs, node: usize) -> u64 {
        p.fences.lock().unwrap()[node]
    }

    #[test]
    fn fence_arguments_and_memory() {
        // A single MDS has no other node to fence.
        assert!(pnfs(7).fence_node(1, 5).is_err());
        let n2 = pnfs(control_epoch(2, 4));
        for (node, epoch) in [(2, control_epoch(2, 1)), (0, 3), (33, control_epoch(33, 1)), (1, control_epoch(3, 1))] {
            assert!(n2.fence_node(node, epoch).is_err(), "node {node} epoch {epoch:#x}");
        }
        assert!((0..EPOCH_NODES).all(|n| fenced(&n2, n) == 0));
        // No data server known: nothing to wait for, and the fence is kept
        // for those registering later (a bare boot count is node 1's).
        let t = Instant::now();
        assert_eq!(n2.fence_node(1, 5), Ok(()));
        assert!(t.elapsed() < FENCE_TIMEOUT);
        assert_eq!(fenced(&n2, 1), control_epoch(1, 5));
        n2.fence_node(1, control_epoch(1, 3)).unwrap();
        assert_eq!(fenced(&n2, 1), control_epoch(1, 5), "the newest fence is kept");
    }
}

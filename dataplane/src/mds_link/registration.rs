//! Registration and heartbeats: one thread per MDS control address
//! (`ds.mds_control`, one per MDS node) that registers this DS with it,
//! heartbeats, registers again when needed, and has the reactors forget a
//! restarted single MDS's stateids (not a cluster node's: see
//! `Registration::forgets_on_restart`); plus the control address it
//! advertises ([`control_addr_string`]).

use super::client::{CtlClient, CALL_TIMEOUT};
use crate::bus::{PublishError, Update};
use crate::config::universal_address;
use crate::ds::Ds;
use crate::Stop;
use pnfs_protocol::mds_ds::epoch::epoch_node;
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::encode_to_vec;
use pnfs_protocol::{Decoder, Opaque, XdrDecode};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn decode_all<'a, T: XdrDecode<'a>>(b: &'a [u8]) -> io::Result<T> {
    let mut d = Decoder::new(b);
    T::decode(&mut d).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The address the MDS should use for our control program: control_bind,
/// with a wildcard IP replaced by the advertised data address's IP.
pub fn control_addr_string(bound: SocketAddr, advertised: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        SocketAddr::new(advertised.ip(), bound.port()).to_string()
    } else {
        bound.to_string()
    }
}

pub struct Registration {
    pub ds: Arc<Ds>,
    /// Data address clients use (advertise, else the bound NFS address).
    pub advertised: SocketAddr,
    /// Bound control address.
    pub control: SocketAddr,
}

impl Registration {
    pub fn register_args(&self) -> Result<ctl_register_args<'static>, String> {
        let (cap, free) = self.ds.capacity();
        Ok(ctl_register_args {
            cra_ds_id: Opaque::owned(self.ds.cfg.id.clone().into_bytes()),
            cra_client_addrs: vec![{
                let (netid, addr) = universal_address(&self.advertised)?;
                netaddr4 { na_r_netid: Opaque::owned(netid.as_bytes().to_vec()), na_r_addr: Opaque::owned(addr.into_bytes()) }
            }],
            cra_control_addr: Opaque::owned(control_addr_string(self.control, self.advertised).into_bytes()),
            cra_capacity_bytes: cap,
            cra_free_bytes: free,
        })
    }

    fn heartbeat_args(&self) -> ctl_heartbeat_args<'static> {
        let s = self.ds.stats.snapshot();
        ctl_heartbeat_args {
            cha_ds_id: Opaque::owned(self.ds.cfg.id.clone().into_bytes()),
            cha_free_bytes: self.ds.capacity().1,
            cha_bytes_read: s.bytes_read + s.control_bytes_read,
            cha_bytes_written: s.bytes_written + s.control_bytes_written,
        }
    }

    /// Has every reactor forget the stateids allowed before sequence number
    /// `seq`. An update that found no room is tried again (it must not be
    /// lost); one not yet applied everywhere will be, in order. False when
    /// stopped meanwhile.
    fn forget_allowed_before(&self, seq: u64, stop: &Stop) -> bool {
        loop {
            match self.ds.bus.publish(Update::ForgetBefore { seq }) {
                Ok(_) => return true,
                Err(PublishError::NotApplied) => {
                    log::warn!("forgetting the old MDS's stateids: {}; it stays queued", PublishError::NotApplied);
                    return true;
                }
                Err(e) => {
                    log::warn!("forgetting the old MDS's stateids: {e}; trying again");
                    if stop.sleep(BACKOFF_MIN) {
                        return false;
                    }
                }
            }
        }
    }

    /// Starts one registration thread per MDS control address
    /// (`ds.mds_control`): each registers, heartbeats and backs off on its
    /// own, so one MDS node down costs nothing to the others.
    pub fn start(self, stop: Arc<Stop>) -> Result<Vec<JoinHandle<()>>, String> {
        let args = self.register_args()?;
        let _ = encode_to_vec(&args).map_err(|e| format!("ds: registration arguments do not encode: {e}"))?;
        let me = Arc::new(self);
        let mut threads = Vec::with_capacity(me.ds.cfg.mds_control.len());
        for (i, mds) in me.ds.cfg.mds_control.iter().enumerate() {
            let (me2, stop2, mds2) = (me.clone(), stop.clone(), mds.clone());
            let t = std::thread::Builder::new()
                .name(format!("ds-register-{i}"))
                .spawn(move || me2.run(&mds2, &stop2))
                .map_err(|e| format!("starting the registration thread for {mds}: {e}"));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Those started stop with the rest of the DS.
                    stop.stop();
                    threads.into_iter().for_each(|t: JoinHandle<()>| drop(t.join()));
                    return Err(e);
                }
            }
        }
        Ok(threads)
    }

    /// What a REGISTER reply with a new epoch means for the stateids the
    /// DS holds (the rule, per node):
    /// - A single MDS (node 0) that restarted lost its state with its
    ///   process (it reclaims in a grace period): the stateids allowed
    ///   before this REGISTER are forgotten; the MDS re-pushes the valid
    ///   ones while handling it.
    /// - A cluster node (1..=32) keeps its clients' state in the shared KV,
    ///   and other nodes adopt those clients with their stateids (which keep
    ///   the minting node's prefix): a node's restart or its fence takes
    ///   nothing away. A stateid stays allowed until a current node revokes
    ///   it (CLOSE, expiry, fencing of the client, on whichever node holds
    ///   the client now) or until this DS restarts; the adopting node
    ///   re-pushes what it needs. Dropping them instead would fail the I/O
    ///   of clients whose node just failed over, the moment failover is to
    ///   go unnoticed. The cost: a revocation the dead node never sent
    ///   (it died between its KV commit and its push) leaves a stateid
    ///   allowed, bound to its client and object, until a node revokes it
    ///   or the DS restarts.
    fn forgets_on_restart(epoch: u64) -> bool {
        epoch_node(epoch) == 0
    }

    fn run(&self, mds: &str, stop: &Stop) {
        let mut epoch: Option<u64> = None;
        let mut backoff = BACKOFF_MIN;
        let mut last_state = String::new();
        let mut note = |state: String| {
            if state != last_state {
                log::info!("{state}");
                last_state = state;
            }
        };
        'outer: while !stop.is_stopped() {
            let mut client = match CtlClient::connect(mds, CALL_TIMEOUT, self.ds.control_keys.clone(), 0) {
                Ok(c) => c,
                Err(e) => {
                    note(format!("MDS control {mds} unreachable ({e}); retrying with backoff"));
                    if stop.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            // Register, then heartbeat until something goes wrong.
            loop {
                let args = match self.register_args() {
                    Ok(a) => a,
                    Err(e) => {
                        log::error!("ds registration: {e}");
                        return;
                    }
                };
                // The MDS re-pushes our stateids when it handles REGISTER;
                // only what was allowed before sending it may be stale.
                let before_register = self.ds.bus.next_seq();
                let res = client
                    .call(PNFSCTL_MDS_PROGRAM, CTL_PROC_REGISTER, &args)
                    .and_then(|b| decode_all::<ctl_register_res>(&b));
                let res = match res {
                    Ok(r) => r,
                    Err(e) => {
                        note(format!("registering with MDS {mds} failed ({e}); retrying with backoff"));
                        if stop.sleep(backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue 'outer;
                    }
                };
                if res.crr_status != ctl_status::CTL_OK {
                    note(format!("MDS {mds} refused registration: {:?}; retrying with backoff", res.crr_status));
                    if stop.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                let new_epoch = res.crr_mds_epoch;
                if epoch.is_some_and(|e| e != new_epoch) {
                    if Self::forgets_on_restart(new_epoch) {
                        log::info!("MDS {mds} epoch changed ({epoch:#x?} -> {new_epoch:#x}): forgetting its old stateids");
                        if !self.forget_allowed_before(before_register, stop) {
                            return;
                        }
                    } else {
                        log::info!("MDS node {mds} epoch changed ({epoch:#x?} -> {new_epoch:#x}): its clients' stateids stay (cluster state)");
                    }
                }
                epoch = Some(new_epoch);
                // The node we registered with supersedes its older epochs.
                if !self.ds.epochs.observe(new_epoch) {
                    log::warn!("MDS {mds} answered with epoch {new_epoch:#x}, which this DS refuses (fenced, or an unknown node id)");
                }
                backoff = BACKOFF_MIN;
                note(format!("registered with MDS {mds} as {:?} (MDS epoch {})", self.ds.cfg.id, res.crr_mds_epoch));
                let period = Duration::from_millis(if res.crr_heartbeat_ms > 0 {
                    (res.crr_heartbeat_ms as u64).clamp(100, 600_000)
                } else {
                    self.ds.cfg.heartbeat_ms
                });
                loop {
                    if stop.sleep(period) {
                        return;
                    }
                    let r = client
                        .call(PNFSCTL_MDS_PROGRAM, CTL_PROC_HEARTBEAT, &self.heartbeat_args())
                        .and_then(|b| decode_all::<ctl_heartbeat_res>(&b));
                    match r {
                        Ok(h) if h.chr_status == ctl_status::CTL_OK => {}
                        Ok(h) if h.chr_status == ctl_status::CTL_UNKNOWN_DS => {
                            note(format!("MDS {mds} no longer knows this DS; registering again"));
                            break;
                        }
                        Ok(h) => log::warn!("heartbeat answered {:?}", h.chr_status),
                        Err(e) => {
                            note(format!("lost the MDS control connection to {mds} ({e}); reconnecting"));
                            continue 'outer;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_mds_restart_forgets_stateids() {
        use pnfs_protocol::mds_ds::epoch::control_epoch;
        assert!(Registration::forgets_on_restart(7));
        assert!(Registration::forgets_on_restart(control_epoch(0, 8)));
        assert!(!Registration::forgets_on_restart(control_epoch(1, 7)));
        assert!(!Registration::forgets_on_restart(control_epoch(32, 1)));
    }

    #[test]
    fn control_addr_replaces_wildcard() {
        let adv: SocketAddr = "10.0.0.7:2049".parse().unwrap();
        assert_eq!(control_addr_string("0.0.0.0:20490".parse().unwrap(), adv), "10.0.0.7:20490");
        assert_eq!(control_addr_string("10.0.0.8:20490".parse().unwrap(), adv), "10.0.0.8:20490");
    }
}

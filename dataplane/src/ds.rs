//! The data server object shared by every reactor and the control program:
//! configuration, identity, client/session state, object store, the update
//! bus (the MDS link's only way to the reactors' own state), counters.

use crate::bus::Bus;
use crate::config::{Backing, DsConfig};
use pnfs_protocol::control_auth::{ControlKeys, RecentConnections};
use pnfs_protocol::seal::{ClusterKey, Purpose, TagKey};
use crate::state::DsState;
use crate::stats::DsStats;
use crate::storage::ObjectStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// File in data_dir holding this installation's random id.
pub const IDENTITY_FILE: &str = "ds-identity";

pub struct Ds {
    pub cfg: DsConfig,
    pub state: DsState,
    pub store: ObjectStore,
    /// The update bus to the reactors (allowed stateids, objects).
    pub bus: Bus,
    pub stats: Arc<DsStats>,
    /// `pnfs-ds:<id>:<install id>`: server_owner major id and server scope.
    /// Never the MDS's (RFC 8881 2.10.5; see docs/client-interop.md 1.2).
    pub server_owner: Vec<u8>,
    /// Changes every boot, so clients resend UNSTABLE writes after a restart.
    pub write_verifier: [u8; 8],
    /// The cluster's secret (ds.cluster_key_file); control traffic keys
    /// derive from it.
    pub cluster_key: ClusterKey,
    /// Checks the tag of every filehandle a client presents (PUTFH).
    pub fh_key: TagKey,
    /// Signs our control calls to the MDS, checks the MDS's calls to us.
    pub control_keys: ControlKeys,
    /// Signs our calls to other data servers (object copies) and checks
    /// theirs: such calls may only read ([`crate::mds_link::copy`]).
    pub peer_keys: ControlKeys,
    /// Object copies this DS runs for the MDS: bounds, buffers, throttle.
    pub copier: crate::mds_link::copy::Copier,
    /// Control connection ids seen lately (replay protection).
    pub control_recent: RecentConnections,
    /// The MDS epochs accepted, per MDS node: calls from an older epoch of
    /// a node (superseded by its restart) or a fenced one are refused.
    pub epochs: crate::mds_link::MdsEpochs,
}

/// Random bytes from the kernel (one source for every id and key).
pub use pnfs_protocol::seal::random_bytes;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The per-install random id, created on first start and kept in data_dir.
pub fn install_id(data_dir: &Path) -> Result<String, String> {
    let p = data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() && s.trim().len() <= 64 => return Ok(s.trim().to_string()),
        Ok(_) => return Err(format!("ds.data_dir: {} is malformed; remove it to get a new identity", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("ds.data_dir: reading {}: {e}", p.display())),
    }
    let id = hex(&random_bytes::<8>());
    let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, format!("{id}\n"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("ds.data_dir: writing {}: {e}", p.display()))?;
    Ok(id)
}

impl Ds {
    pub fn open(cfg: DsConfig) -> Result<Arc<Ds>, String> {
        cfg.validate()?;
        let key_path = cfg.cluster_key_file.as_deref().ok_or("ds.cluster_key_file: required")?;
        let cluster_key = ClusterKey::load(key_path).map_err(|e| format!("ds.cluster_key_file: {e}"))?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| format!("ds.data_dir {}: {e}", cfg.data_dir.display()))?;
        let install = install_id(&cfg.data_dir)?;
        let stats = Arc::new(DsStats::default());
        let store = match cfg.backing {
            Backing::Files => ObjectStore::open(&cfg.data_dir, cfg.o_direct)
                .map_err(|e| format!("ds.data_dir {}: {e}", cfg.data_dir.display()))?,
            Backing::Volume => ObjectStore::open_volume(&cfg.volume_options()?, stats.clone()).map_err(|e| format!("ds.volume: {e}"))?,
        };
        let boot = u32::from_be_bytes(random_bytes::<4>()) | 1;
        let mut write_verifier = random_bytes::<8>();
        write_verifier[..4].copy_from_slice(&boot.to_be_bytes());
        Ok(Arc::new(Ds {
            server_owner: format!("pnfs-ds:{}:{install}", cfg.id).into_bytes(),
            state: DsState::new(boot),
            store,
            bus: Bus::new(cfg.reactors),
            stats,
            write_verifier,
            fh_key: cluster_key.derive(Purpose::DsFileHandle),
            control_keys: ControlKeys::new(&cluster_key),
            peer_keys: ControlKeys::for_ds_peers(&cluster_key),
            copier: crate::mds_link::copy::Copier::new(&cfg),
            control_recent: RecentConnections::default(),
            epochs: Default::default(),
            cluster_key,
            cfg,
        }))
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.lease_seconds as u64)
    }

    /// (capacity, free) bytes: of the file system holding data_dir, or of
    /// the volume's data area.
    pub fn capacity(&self) -> (u64, u64) {
        self.store.capacity(&self.cfg.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_differs_per_install() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ia = install_id(a.path()).unwrap();
        assert_eq!(install_id(a.path()).unwrap(), ia);
        assert_ne!(install_id(b.path()).unwrap(), ia);
    }
}

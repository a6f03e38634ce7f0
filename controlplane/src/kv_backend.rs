//! Opens the metadata store the config names (`mds.kv`): the embedded redb
//! file in `mds.metadata_dir` (default), an etcd cluster shared by MDS
//! nodes (feature `etcd`), or a TiKV cluster (feature `tikv`).

use std::sync::Arc;

use pnfs_kv::{KvStore, RedbStore};

use crate::config::{KvBackend, MdsConfig};

/// File name of the redb store inside `mds.metadata_dir`.
const REDB_FILE: &str = "metadata.redb";

/// Opens (creating if needed) the store for a starting MDS.
pub fn open_store(cfg: &MdsConfig) -> Result<Arc<dyn KvStore>, String> {
    match cfg.kv {
        KvBackend::Redb => {
            let db = cfg.metadata_dir.join(REDB_FILE);
            let store = RedbStore::open(&db).map_err(|e| format!("mds.metadata_dir: opening {}: {e}", db.display()))?;
            Ok(Arc::new(store))
        }
        KvBackend::Etcd => open_etcd(cfg),
        KvBackend::Tikv => open_tikv(cfg),
    }
}

/// Opens the store of an existing metadata set (offline tools: fsck).
pub fn open_existing_store(cfg: &MdsConfig) -> Result<Arc<dyn KvStore>, String> {
    if cfg.kv == KvBackend::Redb && !cfg.metadata_dir.join(REDB_FILE).exists() {
        return Err(format!("no metadata store at {}", cfg.metadata_dir.join(REDB_FILE).display()));
    }
    open_store(cfg)
}

#[cfg(feature = "etcd")]
fn open_etcd(cfg: &MdsConfig) -> Result<Arc<dyn KvStore>, String> {
    let mut etcd = pnfs_kv::EtcdConfig::new(cfg.etcd_endpoints.clone());
    etcd.prefix = cfg.etcd_prefix.clone().into_bytes();
    etcd.request_timeout = std::time::Duration::from_millis(cfg.etcd_request_timeout_ms);
    let store = pnfs_kv::EtcdStore::connect(&etcd).map_err(|e| format!("mds.etcd_endpoints: {e}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(_cfg: &MdsConfig) -> Result<Arc<dyn KvStore>, String> {
    Err("mds.kv: \"etcd\" needs a pnfsd built with the etcd feature (cargo build --features etcd)".into())
}

#[cfg(feature = "tikv")]
fn open_tikv(cfg: &MdsConfig) -> Result<Arc<dyn KvStore>, String> {
    let mut tikv = pnfs_kv::TikvConfig::new(cfg.tikv_pd_endpoints.clone());
    tikv.prefix = cfg.tikv_prefix.clone().into_bytes();
    tikv.request_timeout = std::time::Duration::from_millis(cfg.tikv_request_timeout_ms);
    let store = pnfs_kv::TikvStore::connect(&tikv).map_err(|e| format!("mds.tikv_pd_endpoints: {e}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "tikv"))]
fn open_tikv(_cfg: &MdsConfig) -> Result<Arc<dyn KvStore>, String> {
    Err("mds.kv: \"tikv\" needs a pnfsd built with the tikv feature (cargo build --features tikv)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<MdsConfig, String> {
        let toml = format!("metadata_dir = \"/m\"\ndata_dir = \"/d\"\n{extra}\n[[exports]]\npath = \"/export\"\n");
        let cfg: MdsConfig = toml::from_str(&toml).map_err(|e| e.to_string())?;
        cfg.validate().map(|()| cfg)
    }

    #[test]
    fn redb_is_the_default_and_etcd_keys_are_validated() {
        let d = parse("").unwrap();
        assert_eq!((d.kv, d.etcd_prefix.as_str(), d.etcd_request_timeout_ms), (KvBackend::Redb, "pnfs/", 5000));
        assert!(parse("kv = \"zookeeper\"").unwrap_err().contains("unknown variant"));
        let eps = "etcd_endpoints = [\"http://127.0.0.1:2379\"]";
        if !cfg!(feature = "etcd") {
            assert!(parse(&format!("kv = \"etcd\"\n{eps}")).unwrap_err().contains("--features etcd"));
            return;
        }
        assert_eq!(parse(&format!("kv = \"etcd\"\n{eps}")).unwrap().kv, KvBackend::Etcd);
        for (extra, key) in [
            ("kv = \"etcd\"", "mds.etcd_endpoints"),
            ("kv = \"etcd\"\netcd_endpoints = [\"127.0.0.1:2379\"]", "mds.etcd_endpoints"),
            (&format!("kv = \"etcd\"\n{eps}\netcd_prefix = \"\""), "mds.etcd_prefix"),
            (&format!("kv = \"etcd\"\n{eps}\netcd_request_timeout_ms = 10"), "mds.etcd_request_timeout_ms"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.starts_with(key), "{extra}: {e}");
        }
    }

    #[test]
    fn tikv_keys_are_validated() {
        let pd = "kv = \"tikv\"\ntikv_pd_endpoints = [\"10.0.0.1:2379\", \"http://pd2:2379\"]";
        if !cfg!(feature = "tikv") {
            assert!(parse(pd).unwrap_err().contains("--features tikv"));
            return;
        }
        let c = parse(pd).unwrap();
        assert_eq!((c.kv, c.tikv_prefix.as_str(), c.tikv_request_timeout_ms), (KvBackend::Tikv, "pnfs/", 5000));
        for (extra, key) in [
            ("kv = \"tikv\"".to_string(), "mds.tikv_pd_endpoints"),
            ("kv = \"tikv\"\ntikv_pd_endpoints = [\"pd1\"]".to_string(), "mds.tikv_pd_endpoints"),
            ("kv = \"tikv\"\ntikv_pd_endpoints = [\":2379\"]".to_string(), "mds.tikv_pd_endpoints"),
            ("kv = \"tikv\"\ntikv_pd_endpoints = [\"https://pd1:2379\"]".to_string(), "mds.tikv_pd_endpoints"),
            (format!("{pd}\ntikv_prefix = \"\""), "mds.tikv_prefix"),
            (format!("{pd}\ntikv_request_timeout_ms = 10"), "mds.tikv_request_timeout_ms"),
            // The cluster's membership and VIPs need etcd's leases.
            (format!("{pd}\n[cluster]\nnode_id = 1\nnodes = [\"10.0.0.21:2050\"]"), "mds.cluster:"),
        ] {
            let e = parse(&extra).unwrap_err();
            assert!(e.starts_with(key), "{extra}: {e}");
        }
    }

    #[test]
    fn cluster_table_is_validated() {
        let eps = "kv = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]";
        let nodes = "nodes = [\"10.0.0.21:2050\", \"10.0.0.22:2050\"]";
        let ok = format!("{eps}\n[cluster]\nnode_id = 2\n{nodes}\nvips = [\"10.0.0.101\", \"10.0.0.102\"]");
        if !cfg!(feature = "etcd") {
            assert!(parse(&ok).is_err());
            return;
        }
        let c = parse(&ok).unwrap();
        assert_eq!((c.cluster_node_id(), c.cluster.as_ref().unwrap().peer_addr().port()), (2, 2050));
        assert_eq!(parse("").unwrap().cluster_node_id(), 0);
        for (extra, key) in [
            (format!("[cluster]\nnode_id = 1\n{nodes}"), "mds.cluster:"),
            (format!("{eps}\n[cluster]\nnode_id = 3\n{nodes}"), "mds.cluster.node_id"),
            (format!("{eps}\n[cluster]\nnode_id = 1\nnodes = [\"x\"]"), "mds.cluster.nodes"),
            (format!("{eps}\n[cluster]\nnode_id = 1\n{nodes}\nvips = [\"10.0.0.101\"]"), "mds.cluster.vips"),
            (format!("{eps}\n[cluster]\nnode_id = 1\n{nodes}\nheartbeat_ms = 10"), "mds.cluster.heartbeat_ms"),
            (format!("{eps}\n[cluster]\nnode_id = 1\n{nodes}\nlease_ms = 600"), "mds.cluster.lease_ms"),
        ] {
            let e = parse(&extra).unwrap_err();
            assert!(e.starts_with(key), "{extra}: {e}");
        }
    }
}

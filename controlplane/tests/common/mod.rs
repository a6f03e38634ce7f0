//! Setup shared by the integration tests (`mod common;`; the tests of
//! perf/bench and pnfsd include it by path): an MDS on loopback from a few
//! config lines, and real data servers (pnfs-ds, in-process) that register
//! with it.
#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The config of an MDS with its metadata in `dir`/meta and data in
/// `dir`/data and one export, /export, without root squashing; `extra` adds
/// top-level lines (e.g. "lease_seconds = 5").
pub fn mds_config(dir: &Path, extra: &str) -> pnfs_mds::MdsConfig {
    let text = format!(
        "bind = \"127.0.0.1:1\"\nmetadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\n{extra}\n\
         [[exports]]\npath = \"/export\"\nroot_squash = false\n",
        dir.display()
    );
    let cfg: pnfs_mds::MdsConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// An MDS ([`mds_config`]) on loopback; returns (NFS address, control
/// address). Without control_bind in `extra` it has no pNFS role.
pub fn start_mds(dir: &Path, extra: &str) -> (SocketAddr, SocketAddr) {
    pnfs_mds::server::spawn_on_loopback(mds_config(dir, extra)).unwrap()
}

/// An MDS in the pNFS role (mds.control_bind set): data servers register
/// at its control address. Returns (NFS address, control address).
pub fn start_pnfs_mds(dir: &Path, extra: &str) -> (SocketAddr, SocketAddr) {
    start_mds(dir, &format!("control_bind = \"127.0.0.1:2\"\n{extra}"))
}

/// The config of data server `id`, its objects in `dir`/`id`, registering
/// with the MDS control listener `ctl` under the cluster key the MDS made in
/// `dir`/meta: loopback ports, one reactor, no O_DIRECT (tmpfs has none).
pub fn ds_config(dir: &Path, id: &str, ctl: SocketAddr) -> pnfs_ds::config::DsConfig {
    let mut cfg = pnfs_ds::config::DsConfig::new(id, dir.join(id), &ctl.to_string());
    cfg.cluster_key_file = Some(dir.join("meta/cluster.key"));
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.control_bind = "127.0.0.1:0".parse().unwrap();
    cfg.reactors = 1;
    cfg.o_direct = false;
    cfg
}

/// Data server `id` ([`ds_config`]), running; see [`wait_registered`].
pub fn start_ds(dir: &Path, id: &str, ctl: SocketAddr) -> pnfs_ds::DsHandle {
    pnfs_ds::run(ds_config(dir, id, ctl)).unwrap()
}

/// Waits until data server `id` has (re-)registered with the MDS whose
/// metadata is in `dir`/meta: its heartbeat is known.
pub fn wait_registered(dir: &Path, ctl: SocketAddr, id: &str) {
    pnfs_mds::server::wait_ds_registered(ctl, &dir.join("meta/cluster.key"), id, Duration::from_secs(10)).unwrap();
}

/// Data servers ds0..ds`n`, started together, once all have registered.
pub fn start_dses(dir: &Path, ctl: SocketAddr, n: usize) -> Vec<pnfs_ds::DsHandle> {
    let handles: Vec<_> = (0..n).map(|i| start_ds(dir, &format!("ds{i}"), ctl)).collect();
    (0..n).for_each(|i| wait_registered(dir, ctl, &format!("ds{i}")));
    handles
}

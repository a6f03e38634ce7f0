//! MDS configuration (the `[mds]` table of pnfsd's TOML file). Every limit
//! the server enforces is here, with its default.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdsConfig {
    /// Address the NFS listener binds.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Address clients use to reach this server when it differs from `bind`
    /// (NAT, VIP, QEMU user networking). Informational until pNFS device
    /// addresses use it.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory holding the metadata store (redb file).
    pub metadata_dir: PathBuf,
    // Metadata store backend (controlplane/src/kv_backend.rs).
    /// "redb": embedded, in metadata_dir (default); "etcd": shared by MDS
    /// nodes, on the etcd cluster at etcd_endpoints (pnfsd built with
    /// `--features etcd`).
    #[serde(default)]
    pub kv: KvBackend,
    /// etcd client URLs (`http://host:port`), needed with kv = "etcd".
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every key this cluster keeps in etcd (clusters sharing one
    /// etcd need different prefixes).
    #[serde(default = "default_etcd_prefix")]
    pub etcd_prefix: String,
    /// Bound on one etcd request, including an etcd leader election.
    #[serde(default = "default_etcd_request_timeout")]
    pub etcd_request_timeout_ms: u64,
    /// TiKV's PD endpoints (`host:port`), needed with kv = "tikv" (pnfsd
    /// built with `--features tikv`; single MDS only: the cluster's
    /// membership needs etcd's leases).
    #[serde(default)]
    pub tikv_pd_endpoints: Vec<String>,
    /// Prefix of every key this MDS keeps in TiKV.
    #[serde(default = "default_etcd_prefix")]
    pub tikv_prefix: String,
    /// Bound on one TiKV call (a commit is several round trips).
    #[serde(default = "default_etcd_request_timeout")]
    pub tikv_request_timeout_ms: u64,
    /// `[mds.cluster]`: this MDS is one node of an active-active cluster on
    /// a shared etcd (absent: a single MDS, as before).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Directory holding file data (one file per NFS file).
    pub data_dir: PathBuf,
    /// The cluster key (`pnfsd --make-cluster-key FILE`): tags filehandles
    /// and authenticates control traffic with the data servers, which need a
    /// copy (their ds.cluster_key_file). Default `<metadata_dir>/cluster.key`,
    /// made at first start when missing. Must be mode 0600.
    #[serde(default)]
    pub cluster_key_file: Option<PathBuf>,
    #[serde(default = "default_lease")]
    pub lease_seconds: u32,
    /// Grace period after a restart for reclaims; defaults to the lease.
    #[serde(default)]
    pub grace_seconds: Option<u32>,
    /// Largest RPC record accepted; larger ones close the connection.
    #[serde(default = "default_max_record")]
    pub max_record_bytes: u32,
    /// maxread/maxwrite advertised and enforced.
    #[serde(default = "default_max_io")]
    pub max_io_bytes: u32,
    /// Fore channel slots granted per session (the client's ask caps it).
    #[serde(default = "default_slots")]
    pub session_slots: u32,
    /// Operations per COMPOUND.
    #[serde(default = "default_max_ops")]
    pub max_ops: u32,
    /// Client IDs kept at most. When full, unconfirmed clients and expired
    /// ones holding nothing make room; otherwise a new client's EXCHANGE_ID
    /// is answered NFS4ERR_DELAY (those already in are not affected).
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Client IDs whose EXCHANGE_ID came from one address; past it that
    /// address's own unconfirmed and expired clients make room, otherwise
    /// its EXCHANGE_ID is answered NFS4ERR_DELAY.
    #[serde(default = "default_max_clients_per_address")]
    pub max_clients_per_address: usize,
    /// Sessions one client may hold; CREATE_SESSION past it: NFS4ERR_NOSPC.
    #[serde(default = "default_max_sessions_per_client")]
    pub max_sessions_per_client: usize,
    /// Opens, locks and layouts one client may hold; past it OPEN and LOCK
    /// answer NFS4ERR_NOSPC, LAYOUTGET NFS4ERR_LAYOUTTRYLATER.
    #[serde(default = "default_max_states_per_client")]
    pub max_states_per_client: usize,
    /// Opens, locks and layouts of all clients together; past it OPEN and
    /// LOCK answer NFS4ERR_DELAY, LAYOUTGET NFS4ERR_LAYOUTTRYLATER.
    #[serde(default = "default_max_states")]
    pub max_states: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    // Connection bounds: what one address or one connection may hold.
    /// Connections one client address may hold (IPv6: one /64); checked
    /// before max_connections, so a flood from one address costs only it.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// A connection with no request (no byte received) for this long is closed,
    /// and so is one whose peer reads none of its replies for this long.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u32,
    /// A record whose first byte arrived must be complete within this, else
    /// the connection is closed (slow or stalled senders).
    #[serde(default = "default_record_timeout")]
    pub record_timeout_seconds: u32,
    /// Reply bytes one connection may have queued unread; while they are,
    /// that connection's requests are not read (the slow reader waits, no
    /// server thread does).
    #[serde(default = "default_reply_budget")]
    pub reply_budget_bytes: u32,
    /// COMPOUNDs one connection may have executing on blocking threads.
    #[serde(default = "default_max_requests_per_connection")]
    pub max_requests_per_connection: u32,
    /// COMPOUNDs all connections together may have executing on blocking
    /// threads; the rest of the runtime's 512 are kept for the lease reaper,
    /// the control listener and heartbeats.
    #[serde(default = "default_max_requests_in_flight")]
    pub max_requests_in_flight: u32,
    /// Open data-file descriptors kept cached.
    #[serde(default = "default_open_files")]
    pub open_file_cache: usize,
    #[serde(default)]
    pub exports: Vec<ExportConfig>,
    /// Address of the MDS control listener that data servers register with
    /// (PNFSCTL_MDS_PROGRAM). pNFS (files layout) is on when set.
    #[serde(default)]
    pub control_bind: Option<SocketAddr>,
    /// Stripe unit of new files' layouts, bytes (multiple of 64).
    #[serde(default = "default_stripe_unit")]
    pub stripe_unit: u32,
    /// Data servers a new file is striped over; 0 = all live ones.
    #[serde(default)]
    pub stripe_count: u32,
    /// A data server silent this long is dead (no new layouts use it).
    #[serde(default = "default_ds_dead_after")]
    pub ds_dead_after_ms: u64,
    // Data server loss (controlplane/src/pnfs/health.rs).
    /// A data server dead this long (counted from when it was counted dead:
    /// ds_dead_after_ms without a heartbeat, or a failed check) is lost: I/O
    /// on files with data on it and no other copy fails with NFS4ERR_IO
    /// (EIO) instead of NFS4ERR_DELAY. 0 = never (DELAY until it is back).
    #[serde(default = "default_ds_lost_after")]
    pub ds_lost_after_ms: u64,
    /// How long the check of a data server a client reported failing
    /// (LAYOUTERROR) waits for its answer before counting it dead.
    #[serde(default = "default_ds_check_timeout")]
    pub ds_check_timeout_ms: u64,
    // Mirrored files (controlplane/src/pnfs/mirror.rs).
    /// Layout of new files: "stripe" (files layout), "mirror2" or
    /// "mirror3" (flexfiles, 2 or 3 copies on distinct data servers); a
    /// directory's `pnfs.layout` user xattr overrides it below it.
    #[serde(default)]
    pub layout: crate::pnfs::mirror::LayoutPolicy,
    /// Byte-range segment of mirrored files: each segment has its own data
    /// servers, and the Linux client sends one LAYOUTGET per segment.
    #[serde(default = "default_flex_segment_bytes")]
    pub flex_segment_bytes: u64,
    /// Layouts come with return_on_close: the client's last CLOSE of a file
    /// returns its layout (the server drops it then). Off by default, so
    /// clients keep layouts across open/close cycles.
    #[serde(default)]
    pub layout_return_on_close: bool,
    // Delegations (controlplane/src/state/deleg.rs, ops/deleg.rs).
    /// Read and write delegations granted at OPEN by the policy in ops/deleg.rs.
    #[serde(default = "default_true")]
    pub delegations: bool,
    /// Delegations outstanding in all (past it OPEN grants none: WND4_RESOURCE).
    #[serde(default = "default_max_delegations")]
    pub max_delegations: usize,
    /// After a recall, no new delegation on that file for this long.
    #[serde(default = "default_delegation_recall_cooldown")]
    pub delegation_recall_cooldown_seconds: u32,
    // Resilver object copies (controlplane/src/pnfs/resilver.rs).
    /// Object copies queued or running at most; more are refused until
    /// some finish.
    #[serde(default = "default_resilver_queue_max")]
    pub resilver_queue_max: usize,
    /// Object copies running at once (data server to data server).
    #[serde(default = "default_resilver_copies")]
    pub resilver_copies: usize,
    /// Object copies running at once onto one data server (each DS runs
    /// ds.copy_max_concurrent at most).
    #[serde(default = "default_resilver_copies_per_ds")]
    pub resilver_copies_per_ds: usize,
}

fn default_resilver_queue_max() -> usize {
    1 << 20
}
fn default_resilver_copies() -> usize {
    4
}
fn default_resilver_copies_per_ds() -> usize {
    2
}

/// Which store keeps the metadata (`mds.kv`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    #[default]
    Redb,
    Etcd,
    Tikv,
}

/// `[mds.cluster]`: one node of an active-active MDS cluster. Every node
/// lists the same `nodes` and `vips`; they differ only in `node_id`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node, 1..=MAX_CLUSTER_NODES: its peer address is `nodes[node_id - 1]`
    /// and its preferred virtual IP `vips[node_id - 1]`.
    pub node_id: u32,
    /// Peer listener (`host:port`) of every node, this one included, in
    /// node id order: nodes watch each other's liveness and pass recalls
    /// over these links.
    pub nodes: Vec<String>,
    /// Virtual IPs clients mount, VIP i preferred on node i; a failed
    /// node's VIPs move to live nodes. Empty: no VIP management (clients
    /// mount node addresses).
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    /// Interface the VIPs are added to (`ip addr add VIP/prefix dev IF`).
    #[serde(default = "default_vip_interface")]
    pub vip_interface: String,
    /// Prefix length the VIPs are added with.
    #[serde(default = "default_vip_prefix_len")]
    pub vip_prefix_len: u8,
    /// How often the node renews its KV lease and pings its peers.
    #[serde(default = "default_cluster_heartbeat")]
    pub heartbeat_ms: u64,
    /// The node's KV lease: a node that cannot renew it for this long has
    /// lost quorum; it stops changing anything before the lease runs out,
    /// and the others take its VIPs and fence it once it has.
    #[serde(default = "default_cluster_lease")]
    pub lease_ms: u64,
}

/// Largest cluster (node ids 1..=this).
pub const MAX_CLUSTER_NODES: u32 = pnfs_protocol::mds_ds::epoch::MAX_CLUSTER_NODES;

fn default_vip_interface() -> String {
    "eth0".into()
}

fn default_vip_prefix_len() -> u8 {
    24
}

fn default_cluster_heartbeat() -> u64 {
    500
}

fn default_cluster_lease() -> u64 {
    1500
}

impl ClusterConfig {
    fn validate(&self, kv: KvBackend) -> Result<(), String> {
        if kv != KvBackend::Etcd {
            return Err("mds.cluster: a cluster keeps its state in a shared KV: set mds.kv = \"etcd\"".into());
        }
        if self.nodes.is_empty() || self.nodes.len() > MAX_CLUSTER_NODES as usize {
            return Err(format!("mds.cluster.nodes: list 1 to {MAX_CLUSTER_NODES} peer addresses (host:port), one per node"));
        }
        if let Some(n) = self.nodes.iter().find(|n| n.parse::<SocketAddr>().is_err()) {
            return Err(format!("mds.cluster.nodes: {n:?} is not an ip:port"));
        }
        if self.node_id == 0 || self.node_id as usize > self.nodes.len() {
            return Err(format!("mds.cluster.node_id: must be between 1 and {} (the length of mds.cluster.nodes)", self.nodes.len()));
        }
        if !self.vips.is_empty() && self.vips.len() != self.nodes.len() {
            return Err("mds.cluster.vips: give one VIP per node (VIP i is preferred on node i), or none".into());
        }
        if self.vip_interface.is_empty() || self.vip_prefix_len == 0 || self.vip_prefix_len > 128 {
            return Err("mds.cluster.vip_interface / vip_prefix_len: an interface name and a prefix length 1..=128".into());
        }
        if !(50..=10_000).contains(&self.heartbeat_ms) {
            return Err("mds.cluster.heartbeat_ms: must be between 50 and 10000".into());
        }
        if self.lease_ms < 2 * self.heartbeat_ms || self.lease_ms > 60_000 {
            return Err("mds.cluster.lease_ms: must be at least twice mds.cluster.heartbeat_ms and at most 60000".into());
        }
        Ok(())
    }

    /// This node's peer listener address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.nodes[self.node_id as usize - 1].parse().expect("validated")
    }
}

fn default_etcd_prefix() -> String {
    "pnfs/".into()
}
fn default_etcd_request_timeout() -> u64 {
    5000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Path clients mount, e.g. "/export"; created if missing; "/" exports everything.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
    /// Client addresses or CIDR blocks allowed; empty allows everyone.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Map uid 0 to anon_uid/anon_gid.
    #[serde(default = "default_true")]
    pub root_squash: bool,
    #[serde(default = "default_anon")]
    pub anon_uid: u32,
    #[serde(default = "default_anon")]
    pub anon_gid: u32,
    /// pNFS placement for files created in this export (overrides
    /// mds.stripe_count / mds.stripe_unit; a directory's `pnfs.stripe_count`
    /// / `pnfs.stripe_unit` user xattrs override both for files created in it
    /// and below).
    #[serde(default)]
    pub stripe_count: Option<u32>,
    #[serde(default)]
    pub stripe_unit: Option<u32>,
}

fn default_bind() -> SocketAddr {
    "0.0.0.0:2049".parse().unwrap()
}
fn default_lease() -> u32 {
    90
}
fn default_max_record() -> u32 {
    2 * 1024 * 1024
}
fn default_max_io() -> u32 {
    1024 * 1024
}
fn default_slots() -> u32 {
    128
}
fn default_max_ops() -> u32 {
    64
}
fn default_max_clients() -> usize {
    4096
}
fn default_max_clients_per_address() -> usize {
    1024
}
fn default_max_sessions_per_client() -> usize {
    16
}
fn default_max_states_per_client() -> usize {
    65536
}
fn default_max_states() -> usize {
    1_000_000
}
fn default_max_delegations() -> usize {
    100_000
}
fn default_delegation_recall_cooldown() -> u32 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_address() -> usize {
    64
}
fn default_idle_timeout() -> u32 {
    300
}
fn default_record_timeout() -> u32 {
    30
}
fn default_reply_budget() -> u32 {
    4 * 1024 * 1024
}
fn default_max_requests_per_connection() -> u32 {
    128
}
fn default_max_requests_in_flight() -> u32 {
    384
}
/// Blocking threads the MDS may fill with COMPOUNDs (tokio's pool is 512;
/// 64 stay free for the reaper, control listener and heartbeats).
pub const MAX_REQUESTS_IN_FLIGHT_LIMIT: u32 = 448;
fn default_open_files() -> usize {
    256
}
fn default_stripe_unit() -> u32 {
    1024 * 1024
}
/// 4 MiB: Linux's 15 MiB readahead spans about 4 segments (4 DSes for
/// one reader) at one LAYOUTGET per 4 MiB; see pnfs/mirror.rs.
/// 1 TiB: in effect one segment per file (see `pnfs::mirror`, "Segment
/// boundaries and the Linux client": shorter segments lose data with it).
fn default_flex_segment_bytes() -> u64 {
    1 << 40
}
fn default_ds_dead_after() -> u64 {
    10_000
}
fn default_ds_lost_after() -> u64 {
    60_000
}
fn default_ds_check_timeout() -> u64 {
    2_000
}
fn default_true() -> bool {
    true
}
fn default_anon() -> u32 {
    65534
}

impl MdsConfig {
    /// Checks cross-field rules; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_seconds < 5 || self.lease_seconds > 3600 {
            return Err("mds.lease_seconds: must be between 5 and 3600".into());
        }
        if self.max_io_bytes < 4096 || self.max_io_bytes > 16 << 20 {
            return Err("mds.max_io_bytes: must be between 4096 and 16 MiB".into());
        }
        if self.max_record_bytes < self.max_io_bytes + 4096 {
            return Err("mds.max_record_bytes: must exceed max_io_bytes by at least 4096 (RPC and COMPOUND headers)".into());
        }
        if self.session_slots == 0 || self.session_slots > 1024 {
            return Err("mds.session_slots: must be between 1 and 1024".into());
        }
        if self.max_ops < 8 || self.max_ops > 1024 {
            return Err("mds.max_ops: must be between 8 and 1024 (the Linux client needs at least 8)".into());
        }
        if self.max_connections == 0 {
            return Err("mds.max_connections: must be at least 1".into());
        }
        if self.max_connections_per_address == 0 {
            return Err("mds.max_connections_per_address: must be at least 1".into());
        }
        if self.idle_timeout_seconds == 0 || self.idle_timeout_seconds > 86_400 {
            return Err("mds.idle_timeout_seconds: must be between 1 and 86400".into());
        }
        // A client renews its lease at least once a lease period; closing
        // its connection sooner would cut its back channel for nothing.
        if self.idle_timeout_seconds < self.lease_seconds {
            return Err("mds.idle_timeout_seconds: must be at least mds.lease_seconds (raise it or lower the lease)".into());
        }
        if self.record_timeout_seconds == 0 || self.record_timeout_seconds > self.idle_timeout_seconds {
            return Err("mds.record_timeout_seconds: must be at least 1 and at most mds.idle_timeout_seconds".into());
        }
        if self.reply_budget_bytes < 64 * 1024 {
            return Err("mds.reply_budget_bytes: must be at least 65536".into());
        }
        if self.max_requests_per_connection == 0 || self.max_requests_per_connection > self.max_requests_in_flight {
            return Err("mds.max_requests_per_connection: must be at least 1 and at most mds.max_requests_in_flight".into());
        }
        if self.max_requests_in_flight > MAX_REQUESTS_IN_FLIGHT_LIMIT {
            return Err(format!(
                "mds.max_requests_in_flight: at most {MAX_REQUESTS_IN_FLIGHT_LIMIT} (the rest of the 512 blocking threads serve leases and data servers)"
            ));
        }
        if self.max_clients == 0 {
            return Err("mds.max_clients: must be at least 1".into());
        }
        if self.max_clients_per_address == 0 || self.max_clients_per_address > self.max_clients {
            return Err("mds.max_clients_per_address: must be at least 1 and at most mds.max_clients".into());
        }
        if self.max_sessions_per_client == 0 {
            return Err("mds.max_sessions_per_client: must be at least 1".into());
        }
        if self.max_states_per_client == 0 || self.max_states < self.max_states_per_client {
            return Err("mds.max_states_per_client: must be at least 1 and at most mds.max_states".into());
        }
        if self.max_delegations > self.max_states {
            return Err("mds.max_delegations: must be at most mds.max_states (0 grants none)".into());
        }
        if self.delegation_recall_cooldown_seconds > 3600 {
            return Err("mds.delegation_recall_cooldown_seconds: at most 3600".into());
        }
        if self.stripe_unit == 0 || !self.stripe_unit.is_multiple_of(64) {
            return Err("mds.stripe_unit: must be a nonzero multiple of 64 bytes".into());
        }
        if self.stripe_count > pnfs_protocol::mds_ds::MAX_DATA_SERVERS as u32 {
            return Err(format!("mds.stripe_count: at most {} (0 = all live data servers)", pnfs_protocol::mds_ds::MAX_DATA_SERVERS));
        }
        crate::pnfs::mirror::check_segment_bytes(self.flex_segment_bytes).map_err(|why| format!("mds.flex_segment_bytes: {why}"))?;
        if !(1..=1 << 24).contains(&self.resilver_queue_max) {
            return Err("mds.resilver_queue_max: 1 to 16777216".into());
        }
        if !(1..=64).contains(&self.resilver_copies) {
            return Err("mds.resilver_copies: 1 to 64".into());
        }
        if self.resilver_copies_per_ds == 0 || self.resilver_copies_per_ds > self.resilver_copies {
            return Err("mds.resilver_copies_per_ds: 1 to mds.resilver_copies".into());
        }
        if self.ds_dead_after_ms < 1000 {
            return Err("mds.ds_dead_after_ms: must be at least 1000".into());
        }
        if self.ds_lost_after_ms != 0 && !(1000..=7 * 24 * 3600 * 1000).contains(&self.ds_lost_after_ms) {
            return Err("mds.ds_lost_after_ms: 0 (never) or from 1000 to 604800000 (a week)".into());
        }
        if !(100..=30_000).contains(&self.ds_check_timeout_ms) {
            return Err("mds.ds_check_timeout_ms: from 100 to 30000".into());
        }
        if self.control_bind.is_some_and(|c| c == self.bind) {
            return Err("mds.control_bind: must differ from mds.bind".into());
        }
        self.validate_kv()?;
        if self.exports.is_empty() {
            return Err("mds.exports: at least one [[mds.exports]] table is needed".into());
        }
        for (i, e) in self.exports.iter().enumerate() {
            if !e.path.starts_with('/') || e.path.split('/').any(|c| c == ".." || c == ".") {
                return Err(format!("mds.exports[{i}].path: must be an absolute path without . or .. ({:?})", e.path));
            }
            for c in &e.clients {
                parse_client_pattern(c)
                    .map_err(|why| format!("mds.exports[{i}].clients: {why}"))?;
            }
            if let Some(su) = e.stripe_unit {
                check_stripe_unit(su).map_err(|why| format!("mds.exports[{i}].stripe_unit: {why}"))?;
            }
        }
        Ok(())
    }

    fn validate_kv(&self) -> Result<(), String> {
        if let Some(c) = &self.cluster {
            c.validate(self.kv)?;
        }
        if self.kv == KvBackend::Tikv {
            return self.validate_tikv();
        }
        if self.kv != KvBackend::Etcd {
            return Ok(());
        }
        if !cfg!(feature = "etcd") {
            return Err("mds.kv: \"etcd\" needs a pnfsd built with the etcd feature (cargo build --features etcd)".into());
        }
        if self.etcd_endpoints.is_empty() {
            return Err("mds.etcd_endpoints: at least one etcd client URL is needed with mds.kv = \"etcd\"".into());
        }
        if let Some(e) = self.etcd_endpoints.iter().find(|e| !e.starts_with("http://")) {
            return Err(format!("mds.etcd_endpoints: {e:?} is not an http:// URL (TLS is not supported yet)"));
        }
        if self.etcd_prefix.is_empty() {
            return Err("mds.etcd_prefix: must not be empty (it keeps clusters sharing one etcd apart)".into());
        }
        if !(100..=60_000).contains(&self.etcd_request_timeout_ms) {
            return Err("mds.etcd_request_timeout_ms: must be between 100 and 60000".into());
        }
        Ok(())
    }

    fn validate_tikv(&self) -> Result<(), String> {
        if !cfg!(feature = "tikv") {
            return Err("mds.kv: \"tikv\" needs a pnfsd built with the tikv feature (cargo build --features tikv)".into());
        }
        if self.tikv_pd_endpoints.is_empty() {
            return Err("mds.tikv_pd_endpoints: at least one PD endpoint (host:port) is needed with mds.kv = \"tikv\"".into());
        }
        for e in &self.tikv_pd_endpoints {
            let hostport = e.strip_prefix("http://").unwrap_or(e);
            let ok = hostport
                .rsplit_once(':')
                .is_some_and(|(host, port)| {
                    !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
                });
            if !ok {
                return Err(format!("mds.tikv_pd_endpoints: {e:?} is not host:port (TLS is not supported yet)"));
            }
        }
        if self.tikv_prefix.is_empty() {
            return Err("mds.tikv_prefix: must not be empty (it keeps users of one TiKV apart)".into());
        }
        if !(100..=60_000).contains(&self.tikv_request_timeout_ms) {
            return Err("mds.tikv_request_timeout_ms: must be between 100 and 60000".into());
        }
        Ok(())
    }

    /// This node's id in the cluster; 0 for a single MDS.
    pub fn cluster_node_id(&self) -> u32 {
        self.cluster.as_ref().map_or(0, |c| c.node_id)
    }

    /// Where the cluster key lives (see `cluster_key_file`).
    pub fn cluster_key_path(&self) -> PathBuf {
        self.cluster_key_file.clone().unwrap_or_else(|| self.metadata_dir.join("cluster.key"))
    }

    /// True when the pNFS MDS role (files layouts over data servers) is on.
    pub fn pnfs_enabled(&self) -> bool {
        self.control_bind.is_some()
    }

    pub fn grace(&self) -> u32 {
        self.grace_seconds.unwrap_or(self.lease_seconds)
    }
}

/// A stripe unit the Linux files layout driver accepts (multiple of 64,
/// not zero) and that our 1 MiB-oriented buffers handle.
pub fn check_stripe_unit(su: u32) -> Result<(), String> {
    if su == 0 || !su.is_multiple_of(64) || su > 64 << 20 {
        return Err(format!("{su} must be a non-zero multiple of 64 up to 64 MiB"));
    }
    Ok(())
}

/// An export's client pattern: an IP address or a CIDR block (`10.0.2.0/24`).
pub fn parse_client_pattern(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or(format!("{s:?} has a bad prefix length"))?,
        None => max,
    };
    Ok((ip, bits))
}

#[cfg(test)]
mod value_checks {
    use super::*;

    #[test]
    fn stripe_units_and_client_patterns() {
        assert!(check_stripe_unit(64).is_ok());
        assert!(check_stripe_unit(1 << 20).is_ok());
        for bad in [0, 63, 100, (64 << 20) + 64] {
            assert!(check_stripe_unit(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_client_pattern("10.0.2.0/24"), Ok(("10.0.2.0".parse().unwrap(), 24)));
        assert_eq!(parse_client_pattern("::1"), Ok(("::1".parse().unwrap(), 128)));
        for bad in ["10.0.0.0/33", "::/129", "host", "10.0.0.0/x", ""] {
            assert!(parse_client_pattern(bad).is_err(), "{bad}");
        }
    }
}

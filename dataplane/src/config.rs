//! DS configuration (the `[ds]` table of pnfsd's TOML file). Every limit the
//! data server enforces is here, with its default.

use crate::storage::IO_ALIGN;
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsConfig {
    /// Name of this data server, unique in the cluster (at most 64 bytes) -
    /// required. Part of its NFS server_owner and what it registers as.
    pub id: String,
    /// Address the NFS (data) listener binds. Default 0.0.0.0:2049.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// "host:port" clients use to reach `bind` (given to them through the
    /// MDS in GETDEVICEINFO). Default: `bind`, which then must not be a
    /// wildcard. IPv4 or IPv6 (registered as netid "tcp" or "tcp6"); a name
    /// resolving to both gives its IPv4 address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Where the MDS reaches this DS's control program. Default 0.0.0.0:20490.
    #[serde(default = "default_control_bind")]
    pub control_bind: SocketAddr,
    /// "host:port" of the MDS control listener this DS registers with, or a
    /// list of them, one per node of an MDS cluster (each `mds.control_bind`)
    /// - required. The DS registers with and heartbeats every one on its own.
    #[serde(deserialize_with = "one_or_many")]
    pub mds_control: Vec<String>,
    /// Directory holding the objects (one file per DS filehandle) and the
    /// DS identity file - required.
    pub data_dir: PathBuf,
    /// The cluster key, a copy of the MDS's (its mds.cluster_key_file,
    /// default `<metadata_dir>/cluster.key`) - required: it checks client
    /// filehandles and authenticates control traffic. Must be mode 0600.
    #[serde(default)]
    pub cluster_key_file: Option<PathBuf>,
    /// Reactor threads serving NFS connections. Default 2.
    #[serde(default = "default_reactors")]
    pub reactors: usize,
    /// Optional CPU list: reactor i is pinned to cores[i % len]. Default: no pinning.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// Aligned I/O buffers per reactor; when all are in use, requests get
    /// NFS4ERR_DELAY. Default 64.
    #[serde(default = "default_buffers")]
    pub buffers_per_reactor: usize,
    /// Size of each I/O buffer; bounds one READ/WRITE. Default 1 MiB + 4 KiB.
    #[serde(default = "default_buffer_size")]
    pub buffer_size: usize,
    /// Largest RPC record accepted; larger ones close the connection. Default 2 MiB.
    #[serde(default = "default_max_record")]
    pub max_record_bytes: u32,
    /// Fore channel slots granted per session (the client's ask caps it). Default 64.
    #[serde(default = "default_slots")]
    pub session_slots: u32,
    /// Lease of DS clients: one silent this long loses its sessions. Default 90.
    #[serde(default = "default_lease")]
    pub lease_seconds: u32,
    /// Heartbeat period towards the MDS when it does not ask for another. Default 2000.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Use O_DIRECT for aligned object I/O (falls back to buffered I/O, logged
    /// once, where the file system refuses it). Default true.
    #[serde(default = "default_true")]
    pub o_direct: bool,
    /// NFS connections one reactor serves at once; more are refused. Default 1024.
    #[serde(default = "default_conns")]
    pub max_connections_per_reactor: usize,
    /// Connections one client address may hold on one reactor; more from
    /// that address are closed at once (checked before the reactor's
    /// total, so a flood from one address does not lock out the others).
    /// Default 64.
    #[serde(default = "default_conns_per_address")]
    pub max_connections_per_address: usize,
    /// A connection with no request for this long is closed (also one
    /// that stops reading its replies this long). Default 300.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u32,
    /// Once a record's first byte arrived, the whole record must arrive
    /// within this; otherwise the connection is closed (and a pool buffer
    /// it was receiving WRITE data into goes back). Likewise a peer that
    /// takes no bytes of its waiting replies this long (READ replies hold
    /// pool buffers). Default 30.
    #[serde(default = "default_record_timeout")]
    pub record_timeout_seconds: u32,
    /// DS client IDs kept at most. When full, EXCHANGE_ID evicts up to a
    /// sixteenth of them: unconfirmed ones (longest silent first), then
    /// ones silent for over a lease; it answers NFS4ERR_DELAY only when
    /// every client is live. Default 16384.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Slots of each reactor's io_uring registered-file table; each cached
    /// open object takes one or two (buffered and O_DIRECT descriptor). A
    /// full table, or 0, means plain descriptors. Default 1024.
    #[serde(default = "default_fixed_files")]
    pub fixed_files_per_reactor: u32,
    /// How an idle reactor waits for work: see [`PollMode`]. Default adaptive.
    #[serde(default)]
    pub poll_mode: PollMode,
    /// Adaptive mode: how long a reactor keeps polling after its last
    /// request before it sleeps in epoll, in microseconds. Default 50.
    #[serde(default = "default_poll_spin_us")]
    pub poll_spin_us: u32,
    /// READs one reactor keeps in flight on its io_uring at once (each
    /// holds a pool buffer, so the pool bounds it too: the effective limit
    /// is the smaller of this and `buffers_per_reactor`); a connection with
    /// more waits for one to finish. 0 makes READs synchronous (one I/O at
    /// a time per reactor). Default 256.
    #[serde(default = "default_max_inflight_io")]
    pub max_inflight_io_per_reactor: usize,
    /// Where objects live: one file each under data_dir ("files", the
    /// default) or extents of one volume ("volume", see `volume`).
    #[serde(default)]
    pub backing: Backing,
    /// backing = "volume": a block device (/dev/nvme0n1) or a regular file
    /// (created, and extended to `volume_bytes`). Formatted when its first
    /// 4 KiB are zeros; anything else not a pnfsd volume is refused.
    #[serde(default)]
    pub volume: Option<PathBuf>,
    /// Size of a volume file; ignored for a block device. Required to
    /// create the file.
    #[serde(default)]
    pub volume_bytes: Option<u64>,
    /// Extent size: a power of two, at least 4096. An object is at most
    /// 1006 extents long. Fixed at format. Default 64 MiB.
    #[serde(default = "default_extent_bytes")]
    pub volume_extent_bytes: u64,
    /// Objects the volume holds at most (8 KiB of table each). Fixed at
    /// format. Default 65536.
    #[serde(default = "default_volume_max_objects")]
    pub volume_max_objects: u32,
    /// backing = "volume" on an NVMe namespace (`volume = "/dev/nvmeXnY"`):
    /// aligned data READ/WRITE and COMMIT flushes go as NVMe commands
    /// through io_uring passthrough on the namespace's generic device
    /// `/dev/ngXnY` (derived from the name); metadata and unaligned I/O
    /// keep the block device. Needs o_direct. See [`crate::storage::nvme`]. Default false.
    #[serde(default)]
    pub volume_passthrough: bool,
    /// Object copies this DS pulls from other data servers for the MDS
    /// (resilver, CTL_PROC_OBJ_COPY): bytes per second over all of them,
    /// 0 = unlimited. Default 0.
    #[serde(default)]
    pub copy_bytes_per_sec: u64,
    /// Bytes one copy asks the source for at a time (and the receive buffer
    /// each running copy holds): 64 KiB to 16 MiB, a multiple of 4096.
    /// Default 4 MiB.
    #[serde(default = "default_copy_chunk_bytes")]
    pub copy_chunk_bytes: u32,
    /// Copies running at once on this DS (each holds a control thread and a
    /// chunk buffer); more are answered COPY_BUSY. 1 to 4. Default 2.
    #[serde(default = "default_copy_max_concurrent")]
    pub copy_max_concurrent: usize,
}

/// Where a data server keeps its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backing {
    /// One file per object under `data_dir/objects`.
    #[default]
    Files,
    /// Extents of one block device or big file ([`crate::storage::volume`]).
    Volume,
}

/// How a reactor waits for sockets when it has nothing to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Sleeps in epoll at once: no CPU when idle, a wake-up per request
    /// that arrives on an idle reactor.
    Park,
    /// Never sleeps: polls its sockets (epoll with zero timeout) in a
    /// loop, one core at 100 % per reactor, for dedicated appliance cores
    /// (pin them with `cores`). Sets SO_BUSY_POLL on accepted sockets
    /// where allowed.
    Busy,
    /// Polls for `poll_spin_us` after each request, then sleeps: the next
    /// request of a busy client finds the reactor awake, an idle reactor
    /// costs nothing.
    #[default]
    Adaptive,
}

fn default_bind() -> SocketAddr {
    "0.0.0.0:2049".parse().expect("literal")
}
fn default_control_bind() -> SocketAddr {
    "0.0.0.0:20490".parse().expect("literal")
}
fn default_reactors() -> usize {
    2
}
fn default_buffers() -> usize {
    64
}
fn default_buffer_size() -> usize {
    (1 << 20) + 4096
}
fn default_max_record() -> u32 {
    2 << 20
}
fn default_slots() -> u32 {
    64
}
fn default_lease() -> u32 {
    90
}
fn default_heartbeat() -> u64 {
    2000
}
fn default_true() -> bool {
    true
}
fn default_conns() -> usize {
    1024
}
fn default_conns_per_address() -> usize {
    64
}
fn default_idle_timeout() -> u32 {
    300
}
fn default_record_timeout() -> u32 {
    30
}
fn default_max_clients() -> usize {
    crate::state::MAX_CLIENTS
}
fn default_fixed_files() -> u32 {
    1024
}
fn default_poll_spin_us() -> u32 {
    50
}
fn default_extent_bytes() -> u64 {
    64 << 20
}
fn default_volume_max_objects() -> u32 {
    65536
}
fn default_max_inflight_io() -> usize {
    256
}
fn default_copy_chunk_bytes() -> u32 {
    4 << 20
}
fn default_copy_max_concurrent() -> usize {
    2
}
/// The most copies `ds.copy_max_concurrent` allows: half the control
/// listener's threads, so copies never starve the MDS's other calls.
pub const MAX_CONCURRENT_COPIES: usize = 4;

/// MDS control addresses a DS registers with at most: one per node of the
/// largest MDS cluster.
pub const MAX_MDS_CONTROL: usize = pnfs_protocol::mds_ds::epoch::MAX_CLUSTER_NODES as usize;

/// `ds.mds_control`: one "host:port" string (a single MDS), or a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl DsConfig {
    /// A config with every default and the required keys given (tests, embedding).
    pub fn new(id: &str, data_dir: PathBuf, mds_control: &str) -> DsConfig {
        DsConfig {
            id: id.into(),
            bind: default_bind(),
            advertise: None,
            control_bind: default_control_bind(),
            mds_control: vec![mds_control.into()],
            data_dir,
            cluster_key_file: None,
            reactors: default_reactors(),
            cores: vec![],
            buffers_per_reactor: default_buffers(),
            buffer_size: default_buffer_size(),
            max_record_bytes: default_max_record(),
            session_slots: default_slots(),
            lease_seconds: default_lease(),
            heartbeat_ms: default_heartbeat(),
            o_direct: true,
            max_connections_per_reactor: default_conns(),
            max_connections_per_address: default_conns_per_address(),
            idle_timeout_seconds: default_idle_timeout(),
            record_timeout_seconds: default_record_timeout(),
            max_clients: default_max_clients(),
            fixed_files_per_reactor: default_fixed_files(),
            poll_mode: PollMode::default(),
            poll_spin_us: default_poll_spin_us(),
            backing: Backing::Files,
            volume: None,
            volume_bytes: None,
            volume_extent_bytes: default_extent_bytes(),
            volume_max_objects: default_volume_max_objects(),
            max_inflight_io_per_reactor: default_max_inflight_io(),
            volume_passthrough: false,
            copy_bytes_per_sec: 0,
            copy_chunk_bytes: default_copy_chunk_bytes(),
            copy_max_concurrent: default_copy_max_concurrent(),
        }
    }

    /// Checks cross-field rules; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_key_file.is_none() {
            return Err("ds.cluster_key_file: required: a copy of the MDS's cluster key (mds.cluster_key_file, default <metadata_dir>/cluster.key); `pnfsd --make-cluster-key FILE` makes a new one".into());
        }
        if self.id.is_empty() || self.id.len() > 64 {
            return Err("ds.id: must be 1 to 64 bytes".into());
        }
        if self.id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("ds.id: no spaces or control characters".into());
        }
        if let Some(a) = &self.advertise {
            universal_address(&parse_advertise(a).map_err(|e| format!("ds.advertise: {e}"))?)
                .map_err(|e| format!("ds.advertise: {e}"))?;
        } else {
            // Port 0 (tests) is fine: the bound port is advertised.
            let mut b = self.bind;
            if b.port() == 0 {
                b.set_port(1);
            }
            universal_address(&b).map_err(|e| format!("ds.bind: {e} (or set ds.advertise)"))?;
        }
        if self.mds_control.is_empty() || self.mds_control.len() > MAX_MDS_CONTROL {
            return Err(format!("ds.mds_control: list 1 to {MAX_MDS_CONTROL} MDS control addresses (host:port), one per MDS node"));
        }
        for (i, m) in self.mds_control.iter().enumerate() {
            if m.to_socket_addrs().is_err() && !m.contains(':') {
                return Err(format!("ds.mds_control: expected host:port, got {m:?}"));
            }
            if self.mds_control[..i].contains(m) {
                return Err(format!("ds.mds_control: {m:?} is listed twice"));
            }
        }
        if self.reactors == 0 || self.reactors > 256 {
            return Err("ds.reactors: must be between 1 and 256".into());
        }
        if let Some(ids) = core_affinity::get_core_ids() {
            if let Some(c) = self.cores.iter().find(|c| !ids.iter().any(|i| i.id == **c)) {
                return Err(format!("ds.cores: core {c} does not exist on this machine"));
            }
        }
        if self.buffers_per_reactor == 0 || self.buffers_per_reactor > 65536 {
            return Err("ds.buffers_per_reactor: must be between 1 and 65536".into());
        }
        if self.buffer_size < 64 * 1024 || self.buffer_size > 64 << 20 || !self.buffer_size.is_multiple_of(IO_ALIGN) {
            return Err("ds.buffer_size: must be a multiple of 4096 between 64 KiB and 64 MiB".into());
        }
        if (self.max_record_bytes as usize) < self.max_io() + 4096 || self.max_record_bytes > 256 << 20 {
            return Err("ds.max_record_bytes: must exceed the largest I/O (buffer_size - 4096) by at least 4096 and be at most 256 MiB".into());
        }
        if self.session_slots == 0 || self.session_slots > 1024 {
            return Err("ds.session_slots: must be between 1 and 1024".into());
        }
        if self.lease_seconds < 5 || self.lease_seconds > 3600 {
            return Err("ds.lease_seconds: must be between 5 and 3600".into());
        }
        if self.heartbeat_ms < 100 || self.heartbeat_ms > 600_000 {
            return Err("ds.heartbeat_ms: must be between 100 and 600000".into());
        }
        if self.max_connections_per_reactor == 0 {
            return Err("ds.max_connections_per_reactor: must be at least 1".into());
        }
        if self.max_connections_per_address == 0 {
            return Err("ds.max_connections_per_address: must be at least 1".into());
        }
        if self.idle_timeout_seconds == 0 || self.idle_timeout_seconds > 86_400 {
            return Err("ds.idle_timeout_seconds: must be between 1 and 86400".into());
        }
        if self.record_timeout_seconds == 0 || self.record_timeout_seconds > 3600 {
            return Err("ds.record_timeout_seconds: must be between 1 and 3600".into());
        }
        if self.max_clients == 0 || self.max_clients > 1 << 20 {
            return Err("ds.max_clients: must be between 1 and 1048576".into());
        }
        if self.fixed_files_per_reactor > 65536 {
            return Err("ds.fixed_files_per_reactor: must be at most 65536".into());
        }
        if self.poll_spin_us > 1_000_000 {
            return Err("ds.poll_spin_us: must be at most 1000000 (1 s)".into());
        }
        match (self.backing, &self.volume) {
            (Backing::Volume, None) => return Err("ds.volume: required with backing = \"volume\"".into()),
            (Backing::Files, Some(_)) => return Err("ds.volume: set, but ds.backing is \"files\" (set backing = \"volume\")".into()),
            _ => {}
        }
        let e = self.volume_extent_bytes;
        if !e.is_power_of_two() || e < IO_ALIGN as u64 || e > 1 << 30 {
            return Err("ds.volume_extent_bytes: must be a power of two between 4096 and 1 GiB".into());
        }
        if self.volume_max_objects == 0 || self.volume_max_objects > 1 << 22 {
            return Err("ds.volume_max_objects: must be between 1 and 4194304".into());
        }
        if self.volume_bytes.is_some_and(|b| b % IO_ALIGN as u64 != 0) {
            return Err("ds.volume_bytes: must be a multiple of 4096".into());
        }
        if self.max_inflight_io_per_reactor > 32768 {
            return Err("ds.max_inflight_io_per_reactor: must be at most 32768".into());
        }
        if self.volume_passthrough {
            if self.backing != Backing::Volume {
                return Err("ds.volume_passthrough: needs backing = \"volume\"".into());
            }
            if !self.o_direct {
                return Err("ds.volume_passthrough: needs o_direct = true".into());
            }
            if let Some(v) = &self.volume {
                if crate::storage::nvme::generic_device_of(v).is_none() {
                    return Err(format!(
                        "ds.volume_passthrough: ds.volume {} is not an NVMe namespace block device (/dev/nvmeXnY)",
                        v.display()
                    ));
                }
            }
        }
        if self.copy_bytes_per_sec != 0 && self.copy_bytes_per_sec < 64 << 10 {
            return Err("ds.copy_bytes_per_sec: 0 (unlimited) or at least 65536".into());
        }
        if !(64 << 10..=16 << 20).contains(&self.copy_chunk_bytes) || self.copy_chunk_bytes % 4096 != 0 {
            return Err("ds.copy_chunk_bytes: 65536 to 16777216, a multiple of 4096".into());
        }
        if !(1..=MAX_CONCURRENT_COPIES).contains(&self.copy_max_concurrent) {
            return Err(format!("ds.copy_max_concurrent: 1 to {MAX_CONCURRENT_COPIES}"));
        }
        Ok(())
    }

    /// The volume backend's options (backing = "volume").
    pub fn volume_options(&self) -> Result<crate::storage::volume::VolumeOptions, String> {
        let path = self.volume.clone().ok_or("ds.volume: required with backing = \"volume\"")?;
        Ok(crate::storage::volume::VolumeOptions {
            path,
            bytes: self.volume_bytes,
            extent_bytes: self.volume_extent_bytes,
            max_objects: self.volume_max_objects,
            ds_id: self.id.clone(),
            o_direct: self.o_direct,
            passthrough: self.volume_passthrough,
        })
    }

    /// READs a reactor keeps in flight: the key, bounded by the pool.
    pub fn inflight_io(&self) -> usize {
        self.max_inflight_io_per_reactor.min(self.buffers_per_reactor)
    }

    /// Largest READ/WRITE payload: a buffer less the alignment slack used to
    /// round O_DIRECT reads up.
    pub fn max_io(&self) -> usize {
        self.buffer_size - IO_ALIGN
    }

    /// See `idle_timeout_seconds`.
    pub fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idle_timeout_seconds as u64)
    }

    /// See `record_timeout_seconds`.
    pub fn record_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.record_timeout_seconds as u64)
    }

    /// The address clients are told to use.
    pub fn advertised(&self) -> Result<SocketAddr, String> {
        match &self.advertise {
            Some(a) => parse_advertise(a),
            None => Ok(self.bind),
        }
    }
}

fn parse_advertise(a: &str) -> Result<SocketAddr, String> {
    // IPv4 first when a name resolves to both (what clients most often reach).
    a.to_socket_addrs()
        .map_err(|e| format!("{a:?}: {e}"))?
        .min_by_key(|s| s.is_ipv6())
        .ok_or_else(|| format!("{a:?} resolves to no address"))
}

/// RFC 5665 universal address of the address clients use, with its netid
/// ("tcp" for IPv4, "tcp6" for IPv6): `pnfs_protocol::mds_ds::uaddr`.
pub fn universal_address(a: &SocketAddr) -> Result<(&'static str, String), String> {
    if a.ip().is_unspecified() {
        return Err(format!("{a} is a wildcard address clients cannot use"));
    }
    if a.port() == 0 {
        return Err(format!("{a} has no port"));
    }
    Ok(pnfs_protocol::mds_ds::uaddr::netaddr(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uaddr_format() {
        let ua = |s: &str| universal_address(&s.parse().unwrap());
        assert_eq!(ua("10.0.0.5:2049").unwrap(), ("tcp", "10.0.0.5.8.1".into()));
        assert_eq!(ua("192.168.1.2:20049").unwrap(), ("tcp", "192.168.1.2.78.81".into()));
        assert_eq!(ua("1.2.3.4:65535").unwrap(), ("tcp", "1.2.3.4.255.255".into()));
        assert_eq!(ua("[::1]:2049").unwrap(), ("tcp6", "::1.8.1".into()));
        assert_eq!(ua("[2001:db8::7]:20049").unwrap(), ("tcp6", "2001:db8::7.78.81".into()));
        assert!(ua("0.0.0.0:2049").is_err());
        assert!(ua("[::]:2049").is_err());
        assert!(ua("10.0.0.5:0").is_err());
        assert_eq!(parse_advertise("[::1]:2049").unwrap(), "[::1]:2049".parse().unwrap());
    }

    #[test]
    fn defaults_and_validation_name_the_key() {
        let toml = r#"
id = "ds1"
bind = "127.0.0.1:2049"
mds_control = "127.0.0.1:20491"
data_dir = "/tmp/ds1"
cluster_key_file = "/etc/pnfsd/cluster.key"
"#;
        let c: DsConfig = toml::from_str(toml).unwrap();
        c.validate().unwrap();
        let keyless: DsConfig = toml::from_str(&toml.replace("cluster_key_file", "#")).unwrap();
        let e = keyless.validate().unwrap_err();
        assert!(e.starts_with("ds.cluster_key_file: required") && e.contains("--make-cluster-key"), "{e}");
        assert_eq!(c.reactors, 2);
        assert_eq!(c.buffer_size, (1 << 20) + 4096);
        assert_eq!(c.max_io(), 1 << 20);
        assert_eq!(c.session_slots, 64);
        assert!(c.o_direct);
        assert_eq!(c.fixed_files_per_reactor, 1024);
        assert_eq!((c.poll_mode, c.poll_spin_us), (PollMode::Adaptive, 50));
        for (m, want) in [("park", PollMode::Park), ("busy", PollMode::Busy), ("adaptive", PollMode::Adaptive)] {
            let c: DsConfig = toml::from_str(&format!("{toml}\npoll_mode = \"{m}\"")).unwrap();
            assert_eq!(c.poll_mode, want);
        }
        assert!(toml::from_str::<DsConfig>(&format!("{toml}\npoll_mode = \"spin\"")).is_err());
        let mut bad = c.clone();
        bad.poll_spin_us = 2_000_000;
        assert!(bad.validate().unwrap_err().starts_with("ds.poll_spin_us:"));
        // In-flight READs: 256 by default, bounded by the pool (64 buffers).
        assert_eq!((c.max_inflight_io_per_reactor, c.inflight_io()), (256, 64));
        let mut bad = c.clone();
        bad.max_inflight_io_per_reactor = 40_000;
        assert!(bad.validate().unwrap_err().starts_with("ds.max_inflight_io_per_reactor:"));
        assert_eq!(c.advertised().unwrap(), "127.0.0.1:2049".parse().unwrap());
        // Connection bounds.
        assert_eq!((c.max_connections_per_address, c.idle_timeout_seconds, c.record_timeout_seconds), (64, 300, 30));
        assert_eq!(c.max_clients, 16384);
        assert_eq!((c.copy_bytes_per_sec, c.copy_chunk_bytes, c.copy_max_concurrent), (0, 4 << 20, 2));
        let cases: [(fn(&mut DsConfig), &str); 10] = [
            (|b: &mut DsConfig| b.copy_bytes_per_sec = 1000, "ds.copy_bytes_per_sec:"),
            (|b: &mut DsConfig| b.copy_chunk_bytes = 4096, "ds.copy_chunk_bytes:"),
            (|b: &mut DsConfig| b.copy_chunk_bytes = (1 << 20) + 1, "ds.copy_chunk_bytes:"),
            (|b: &mut DsConfig| b.copy_max_concurrent = 0, "ds.copy_max_concurrent:"),
            (|b: &mut DsConfig| b.copy_max_concurrent = 5, "ds.copy_max_concurrent:"),
            (|b: &mut DsConfig| b.max_connections_per_address = 0, "ds.max_connections_per_address:"),
            (|b: &mut DsConfig| b.idle_timeout_seconds = 0, "ds.idle_timeout_seconds:"),
            (|b: &mut DsConfig| b.record_timeout_seconds = 0, "ds.record_timeout_seconds:"),
            (|b: &mut DsConfig| b.record_timeout_seconds = 4000, "ds.record_timeout_seconds:"),
            (|b: &mut DsConfig| b.max_clients = 0, "ds.max_clients:"),
        ];
        for (f, key) in cases {
            let mut bad = c.clone();
            f(&mut bad);
            assert!(bad.validate().unwrap_err().starts_with(key), "{key}");
        }

        let mut bad = c.clone();
        bad.bind = "0.0.0.0:2049".parse().unwrap();
        assert!(bad.validate().unwrap_err().starts_with("ds.bind:"));
        bad.advertise = Some("10.1.1.1:2049".into());
        bad.validate().unwrap();
        let mut bad = c.clone();
        bad.id = "x".repeat(65);
        assert!(bad.validate().unwrap_err().starts_with("ds.id:"));
        let mut bad = c.clone();
        bad.buffer_size = 5000;
        assert!(bad.validate().unwrap_err().starts_with("ds.buffer_size:"));
        let mut bad = c.clone();
        bad.fixed_files_per_reactor = 1 << 20;
        assert!(bad.validate().unwrap_err().starts_with("ds.fixed_files_per_reactor:"));
        let mut bad = c.clone();
        bad.reactors = 0;
        assert!(bad.validate().unwrap_err().starts_with("ds.reactors:"));
        let mut bad = c.clone();
        bad.cores = vec![100_000];
        assert!(bad.validate().unwrap_err().starts_with("ds.cores:"));
        assert!(toml::from_str::<DsConfig>(&format!("{toml}\nbogus = 1")).is_err());
        // mds_control: one address, or one per MDS node.
        assert_eq!(c.mds_control, vec!["127.0.0.1:20491".to_string()]);
        let list = toml.replace("mds_control = \"127.0.0.1:20491\"", "mds_control = [\"10.0.0.21:20491\", \"10.0.0.22:20491\"]");
        let m: DsConfig = toml::from_str(&list).unwrap();
        m.validate().unwrap();
        assert_eq!(m.mds_control, vec!["10.0.0.21:20491".to_string(), "10.0.0.22:20491".to_string()]);
        for bad in ["mds_control = []", "mds_control = [\"10.0.0.21:20491\", \"10.0.0.21:20491\"]", "mds_control = [\"nohost\"]"] {
            let b: DsConfig = toml::from_str(&toml.replace("mds_control = \"127.0.0.1:20491\"", bad)).unwrap();
            assert!(b.validate().unwrap_err().starts_with("ds.mds_control:"), "{bad}");
        }
        let many = (0..=MAX_MDS_CONTROL).map(|i| format!("\"10.0.1.{i}:20491\"")).collect::<Vec<_>>().join(", ");
        let b: DsConfig = toml::from_str(&toml.replace("mds_control = \"127.0.0.1:20491\"", &format!("mds_control = [{many}]"))).unwrap();
        assert!(b.validate().unwrap_err().starts_with("ds.mds_control:"));
        assert!(toml::from_str::<DsConfig>(&toml.replace("mds_control = \"127.0.0.1:20491\"", "mds_control = 5")).is_err());

        // Backing.
        assert_eq!((c.backing, c.volume_extent_bytes, c.volume_max_objects), (Backing::Files, 64 << 20, 65536));
        let v: DsConfig = toml::from_str(&format!("{toml}\nbacking = \"volume\"\nvolume = \"/dev/nvme0n1\"")).unwrap();
        v.validate().unwrap();
        assert_eq!(v.volume_options().unwrap().path, PathBuf::from("/dev/nvme0n1"));
        let mut bad = v.clone();
        bad.volume = None;
        assert!(bad.validate().unwrap_err().starts_with("ds.volume:"));
        let mut bad = c.clone();
        bad.volume = Some("/x".into());
        assert!(bad.validate().unwrap_err().starts_with("ds.volume:"));
        for x in [3 << 20, 2048, 2 << 30] {
            let mut bad = v.clone();
            bad.volume_extent_bytes = x;
            assert!(bad.validate().unwrap_err().starts_with("ds.volume_extent_bytes:"));
        }
        let mut bad = v.clone();
        bad.volume_max_objects = 0;
        assert!(bad.validate().unwrap_err().starts_with("ds.volume_max_objects:"));
        // NVMe passthrough.
        assert!(!v.volume_options().unwrap().passthrough);
        let p: DsConfig = toml::from_str(&format!("{toml}\nbacking = \"volume\"\nvolume = \"/dev/nvme0n1\"\nvolume_passthrough = true")).unwrap();
        p.validate().unwrap();
        assert!(p.volume_options().unwrap().passthrough);
        for f in [
            |b: &mut DsConfig| b.o_direct = false,
            |b: &mut DsConfig| b.volume = Some("/dev/sda".into()),
            |b: &mut DsConfig| b.volume = Some("/srv/vol.img".into()),
        ] {
            let mut bad = p.clone();
            f(&mut bad);
            assert!(bad.validate().unwrap_err().starts_with("ds.volume_passthrough:"));
        }
        let mut bad = c.clone();
        bad.volume_passthrough = true;
        assert!(bad.validate().unwrap_err().starts_with("ds.volume_passthrough:"));
        let mut bad = v.clone();
        bad.volume_bytes = Some(5000);
        assert!(bad.validate().unwrap_err().starts_with("ds.volume_bytes:"));
        assert!(toml::from_str::<DsConfig>(&format!("{toml}\nbacking = \"raw\"")).is_err());
    }
}

//! The MDS side of pNFS with the files layout (RFC 8881 chapters 12-13).
//!
//! - `registry`: data servers register with the MDS control listener
//!   (PNFSCTL_MDS_PROGRAM) and send heartbeats; each gets a stable small
//!   device index, persisted with its addresses (`S` records).
//! - `client`: synchronous calls to a data server's control program
//!   (PNFSCTL_DS_PROGRAM), with a connection pool per DS.
//! - `striped`: the `DataStore` over data servers, so READ/WRITE/COMMIT
//!   through the MDS (client fallback), SETATTR size and REMOVE reach them.
//! - `stripe`: stripe sets (the dense offset mapping) and placement policies.
//! - `placement`: choosing data servers for a new file, persisting its
//!   stripe set (`L` records) and caching it.
//! - `device`: the device IDs handed out and their data servers' addresses.
//! - `layout`: the files-layout bodies of LAYOUTGET and GETDEVICEINFO.
//! - `mirror`: mirrored files (`mirror2`/`mirror3`): flexfiles layouts over
//!   byte-range segments, each on its own set of data servers; the layout
//!   policy; what the Linux client does with them.
//! - `objects`: control calls on one data server's objects.
//! - `stateids`: the stateids pushed to data servers (tight coupling,
//!   RFC 8881 13.9.2), sent in batches by `push`.
//! - `inventory`: what the data servers hold (objects per DS, one file's
//!   layout with object sizes) for pnfsctl; removing an empty data server.
//! - `resilver`: the queue of object copies between data servers (the
//!   resilver's data mover, CTL_PROC_OBJ_COPY) and object versions.
//! - `fence`: fencing a dead MDS node of the cluster on every data server
//!   (`Pnfs::fence_node`, CTL_PROC_FENCE).
//! - `health`: data servers lost (dead past mds.ds_lost_after_ms), checks
//!   of those clients report failing (LAYOUTERROR), recalls of layouts
//!   naming a dead one, LAYOUTSTATS figures.
//! - this file: the `Pnfs` facade the rest of the MDS holds.
//!
//! Lock order: `pushed` may be held while a state file shard is looked up (`take_gone`), never the other way; no
//! control RPC is ever made while holding either.
//!
//! Poisoned locks: as in the rest of the MDS, a lock whose holder panicked
//! is taken anyway (`unwrap_or_else(|p| p.into_inner())`): one panicked
//! request must not take the pNFS layer down with it, and the critical
//! sections here are single map, set or cache updates. (`push.rs` keeps its
//! own; it is edited elsewhere meanwhile.)
//!
//! Records in the namespace's KV store: `L` placements (stripe or mirror sets), `H` placement
//! hints, `S` data servers, `V` device IDs (see `keyspace`).

pub mod client;
pub mod device;
pub mod fence;
pub mod health;
pub mod inventory;
pub mod layout;
pub mod mirror;
pub mod objects;
pub mod placement;
pub mod push;
pub mod registry;
pub mod resilver;
pub mod stateids;
pub mod stripe;
pub mod striped;

pub use pnfs_protocol::mds_ds::MAX_DATA_SERVERS;
pub use device::parse_uaddr;
pub use layout::{device_addr_body, MAX_LAYOUT_BODY};
pub use mirror::{LayoutPolicy, MirrorSet};
pub use placement::{PlaceError, Placement};
pub use crate::config::check_stripe_unit;
pub use stripe::{Piece, Policy, StripeSet};

use crate::namespace::Namespace;
use crate::state::StateOther;
use client::CtlClient;
use pnfs_kv::{transact, KvError, KvStore};
use pnfs_protocol::control_auth::{ControlKeys, RecentConnections};
use pnfs_protocol::mds_ds::epoch::EPOCH_NODES;
use pnfs_protocol::seal::{ClusterKey, Purpose, TagKey};
use pnfs_protocol::wire::*;
use registry::Registry;
use stateids::Pushed;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAX_TXN_RETRIES: u32 = 16;

/// The MDS configuration's pNFS keys (`mds.stripe_unit`, `mds.stripe_count`,
/// `mds.ds_dead_after_ms`, `mds.ds_lost_after_ms`, `mds.ds_check_timeout_ms`,
/// `mds.layout`, `mds.flex_segment_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct PnfsConfig {
    pub stripe_unit: u32,
    pub stripe_count: u32,
    pub dead_after: Duration,
    /// None: a dead data server is never counted lost.
    pub lost_after: Option<Duration>,
    pub check_timeout: Duration,
    pub layout: LayoutPolicy,
    pub flex_segment_bytes: u64,
}

impl PnfsConfig {
    /// `stripe_unit`, `stripe_count` and `dead_after` with the other keys at
    /// their defaults (never lost, 2 s checks, stripe, 4 MiB segments): for
    /// tests and tools that build a `Pnfs` without an `MdsConfig`.
    pub fn striped(stripe_unit: u32, stripe_count: u32, dead_after: Duration) -> PnfsConfig {
        PnfsConfig {
            stripe_unit,
            stripe_count,
            dead_after,
            lost_after: None,
            check_timeout: Duration::from_secs(2),
            layout: LayoutPolicy::Stripe,
            flex_segment_bytes: 4 << 20,
        }
    }
}

pub struct Pnfs {
    pub cfg: PnfsConfig,
    pub registry: Registry,
    pub ctl: CtlClient,
    ns: Namespace,
    sets: Mutex<HashMap<u64, Option<Placement>>>,
    place_lock: Mutex<()>,
    rotor: AtomicU32,
    pushed: Mutex<HashMap<StateOther, Pushed>>,
    /// Per data server: its stateid pushes, batched (see `push`).
    batchers: Mutex<HashMap<u32, Arc<push::PushBatcher>>>,
    devices: Mutex<BTreeSet<deviceid4>>,
    /// The cluster's secret: DS filehandle tags and control traffic keys.
    pub cluster_key: ClusterKey,
    /// Seals the DS filehandles clients get in layouts.
    ds_fh_key: TagKey,
    /// Checks the data servers' control calls.
    pub control_keys: ControlKeys,
    /// Control connection ids seen lately (replay protection).
    pub control_recent: RecentConnections,
    /// Data servers whose allowed stateids are to be pushed again (they
    /// registered); one worker thread drains it.
    repush_pending: Mutex<BTreeSet<u32>>,
    repush_wake: std::sync::Condvar,
    repush_started: std::sync::atomic::AtomicBool,
    /// Per MDS node id: the newest epoch this node fenced it at (0: none),
    /// sent again to every data server that registers (`fence`).
    fences: Mutex<[u64; EPOCH_NODES]>,
    /// Lost data servers, checks, layout statistics (`health`).
    health: health::Health,
}

/// A store error as the I/O error `mds::io_err` maps to the right NFS
/// status: a full metadata disk is NOSPC, a store reopening is DELAY.
fn kv_io(e: KvError) -> io::Error {
    match e {
        KvError::NoSpace(_) => io::Error::from_raw_os_error(libc::ENOSPC),
        KvError::Unavailable(m) => io::Error::new(io::ErrorKind::NotConnected, format!("metadata store: {m}")),
        e => io::Error::other(format!("metadata store: {e}")),
    }
}

impl Pnfs {
    /// The key that seals DS filehandles in layouts.
    pub fn ds_fh_key(&self) -> &TagKey {
        &self.ds_fh_key
    }

    /// `epoch`: this MDS's control epoch,
    /// `pnfs_protocol::mds_ds::epoch::control_epoch(node_id, boot_count)`
    /// (node 0: a single MDS); every control call and REGISTER reply names it.
    pub fn new(pcfg: PnfsConfig, store: Arc<dyn KvStore>, epoch: u64, cluster_key: ClusterKey) -> Result<Arc<Pnfs>, String> {
        let registry = Registry::load(store.clone(), pcfg.dead_after, epoch).map_err(|e| format!("metadata store: {e}"))?;
        let devices = transact(&*store, MAX_TXN_RETRIES, |t| t.scan_prefix(&[crate::keyspace::DEVICE_ID], usize::MAX))
            .map_err(|e: KvError| format!("metadata store: {e}"))?
            .into_iter()
            .filter_map(|(k, _)| <deviceid4>::try_from(&k[1..]).ok())
            .collect();
        let ns = Namespace::open(store).map_err(|e| format!("metadata store: {e}"))?;
        let pnfs = Arc::new(Pnfs {
            cfg: pcfg,
            registry,
            ctl: CtlClient::new(ControlKeys::new(&cluster_key), epoch),
            ns,
            sets: Mutex::new(HashMap::new()),
            place_lock: Mutex::new(()),
            rotor: AtomicU32::new(epoch as u32),
            pushed: Mutex::new(HashMap::new()),
            batchers: Mutex::new(HashMap::new()),
            devices: Mutex::new(devices),
            ds_fh_key: cluster_key.derive(Purpose::DsFileHandle),
            control_keys: ControlKeys::new(&cluster_key),
            control_recent: RecentConnections::default(),
            repush_pending: Mutex::new(BTreeSet::new()),
            repush_wake: std::sync::Condvar::new(),
            repush_started: std::sync::atomic::AtomicBool::new(false),
            fences: Mutex::new([0; EPOCH_NODES]),
            health: health::Health::new(),
            cluster_key,
        });
        health::start_monitor(&pnfs);
        Ok(pnfs)
    }

    /// Hook before CB_LAYOUTRECALL (sent by `Mds::recall_layouts_for`):
    /// the layouts `holders` hold on `ino` are recalled because of `why`
    /// (truncate, remove, a conflicting open for write). Only logs.
    pub fn recall_file_layouts(&self, ino: u64, holders: &[u64], why: &str) {
        log::debug!("recalling layouts of inode {ino} ({why}) from client(s) {holders:x?}");
    }
}

//! The MDS side of pNFS with the files layout (RFC 8881 chapters 12-13).
//!
//! - `registry`: data servers register with the MDS control listener
//!   (PNFSCTL_MDS_PROGRAM) and send heartbeats; each gets a stable small
//!   device index, persisted with its addresses (`S` records).
//! - `client`: synchronous calls to a data server's control program
//!   (PNFSCTL_DS_PROGRAM), with a connection pool per DS.
//! - `striped`: the `DataStore` over data servers, so READ/WRITE/COMMIT
//!   through the MDS (client fallback), SETATTR size and REMOVE reach them.
//! - this file: stripe sets (placement, persisted per file as `L` records),
//!   device IDs, DS filehandles, the dense offset mapping, layout bodies, and
//!   the stateids pushed to data servers (tight coupling, RFC 8881 13.9.2).
//!
//! Key layout added to the namespace's KV store (integers big-endian):
//! - `L` ino        -> stripe set of the file (XDR: su, first, generation, ds<>)
//! - `S` ds_index   -> registered data server (XDR, see registry)
//! - `V` deviceid   -> empty: device IDs handed out (GETDEVICELIST)
//!
//! Lock order: the MDS state mutex may be held when taking `pushed`; no
//! control RPC is ever made while holding either.

pub mod client;
pub mod push;
pub mod registry;
pub mod striped;

use crate::config::MdsConfig;
use crate::namespace::Namespace;
use crate::state::StateOther;
use client::CtlClient;
use pnfs_protocol::control_auth::{ControlKeys, RecentConnections};
use pnfs_kv::{key::u64_be, transact, KvError, KvStore};
use pnfs_protocol::ds_handle;
use pnfs_protocol::seal::{ClusterKey, Purpose, TagKey};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, XdrDecode, XdrEncode};
use registry::Registry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Device IDs are a bitmap of DS indices (14 bytes), so at most 112 DSes.
pub const MAX_DATA_SERVERS: usize = 112;
const DEVICEID_MAGIC: u8 = b'P';
const DEVICEID_VERSION: u8 = 1;
/// The Linux client's max_layoutget_response.
pub const MAX_LAYOUT_BODY: usize = 4096;
pub const DS_FH_LEN: usize = 16;
const STRIPE_SET_CACHE_MAX: usize = 100_000;
const MAX_TXN_RETRIES: u32 = 16;

/// How a file is striped; never changes once persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSet {
    pub stripe_unit: u32,
    /// nfl_first_stripe_index: stripe unit 0 of the file is on stripe `first`.
    pub first: u32,
    /// Inode generation, part of the DS filehandles.
    pub generation: u32,
    /// DS indices in ascending order; stripe j lives on `ds[j]` (identity
    /// nflda_stripe_indices, so the device ID only depends on the set).
    pub ds: Vec<u32>,
}

/// One contiguous piece of a file range on one stripe object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub stripe: u32,
    pub obj_offset: u64,
    /// Offset of the piece inside the caller's buffer (file offset - start).
    pub buf_offset: usize,
    pub len: usize,
}

impl StripeSet {
    pub fn count(&self) -> u32 {
        self.ds.len() as u32
    }

    fn su(&self) -> u64 {
        self.stripe_unit as u64
    }

    /// Stripe index j holding file offset `off` (RFC 8881 13.4.2).
    pub fn stripe_of(&self, off: u64) -> u32 {
        ((off / self.su() + self.first as u64) % self.count() as u64) as u32
    }

    /// Dense packing (RFC 8881 13.4.4): object offset of file offset `off`.
    pub fn obj_offset(&self, off: u64) -> u64 {
        let su = self.su();
        (off / (su * self.count() as u64)) * su + off % su
    }

    /// File offset of byte `x` of stripe object `j` (inverse of the above).
    pub fn file_offset(&self, j: u32, x: u64) -> u64 {
        let (su, n) = (self.su(), self.count() as u64);
        let row = x / su;
        let pos = (j as u64 + n - self.first as u64 % n) % n;
        (row * n + pos) * su + x % su
    }

    /// Splits `[off, off+len)` into per-object pieces; pieces that are
    /// contiguous on the same object (one stripe) are merged.
    pub fn pieces(&self, off: u64, len: usize) -> Vec<Piece> {
        let su = self.su();
        let mut out: Vec<Piece> = Vec::new();
        let mut done = 0usize;
        while done < len {
            let o = off + done as u64;
            let n = ((su - o % su) as usize).min(len - done);
            let p = Piece { stripe: self.stripe_of(o), obj_offset: self.obj_offset(o), buf_offset: done, len: n };
            match out.last_mut() {
                Some(l) if l.stripe == p.stripe && l.obj_offset + l.len as u64 == p.obj_offset => l.len += n,
                _ => out.push(p),
            }
            done += n;
        }
        out
    }

    /// Length of stripe object `j` when the file is `size` bytes long.
    pub fn object_size(&self, j: u32, size: u64) -> u64 {
        let (su, n) = (self.su(), self.count() as u64);
        let full = size / (su * n);
        let rem = size % (su * n);
        let pos = (j as u64 + n - self.first as u64 % n) % n;
        full * su + rem.saturating_sub(pos * su).min(su)
    }

    pub fn deviceid(&self) -> deviceid4 {
        deviceid_of(&self.ds)
    }

    pub fn ds_fh(&self, j: u32, ino: u64) -> [u8; DS_FH_LEN] {
        ds_fh(j as u8, ino, self.generation)
    }

    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.put_u32(self.stripe_unit);
        e.put_u32(self.first);
        e.put_u32(self.generation);
        e.put_u32(self.ds.len() as u32);
        self.ds.iter().for_each(|d| e.put_u32(*d));
        e.into_inner()
    }

    fn decode(b: &[u8]) -> Option<StripeSet> {
        let mut d = Decoder::new(b);
        let stripe_unit = d.get_u32().ok()?;
        let first = d.get_u32().ok()?;
        let generation = d.get_u32().ok()?;
        let n = d.get_count(MAX_DATA_SERVERS as u32).ok()?;
        let ds = (0..n).map(|_| d.get_u32()).collect::<Result<Vec<_>, _>>().ok()?;
        (n > 0 && stripe_unit > 0 && first < n as u32).then_some(StripeSet { stripe_unit, first, generation, ds })
    }

    /// The nfsv4_1_file_layout4 body for file `ino`; its DS filehandles are
    /// sealed with `fh_key` (the data servers accept no others).
    pub fn layout_body(&self, ino: u64, fh_key: &TagKey) -> Vec<u8> {
        let fhs: Vec<[u8; ds_handle::SEALED_LEN]> = (0..self.count()).map(|j| ds_handle::seal(fh_key, &self.ds_fh(j, ino))).collect();
        let body = nfsv4_1_file_layout4 {
            nfl_deviceid: self.deviceid(),
            nfl_util: self.stripe_unit | NFL4_UFLG_DENSE,
            nfl_first_stripe_index: self.first,
            nfl_pattern_offset: 0,
            nfl_fh_list: fhs.iter().map(|f| nfs_fh4::borrowed(&f[..])).collect(),
        };
        let mut e = Encoder::new();
        body.encode(&mut e).expect("layout body encodes");
        e.into_inner()
    }
}

/// Device ID of a stripe set: magic, version, then a bitmap of DS indices.
pub fn deviceid_of(ds: &[u32]) -> deviceid4 {
    let mut id = [0u8; 16];
    id[0] = DEVICEID_MAGIC;
    id[1] = DEVICEID_VERSION;
    for &d in ds {
        let d = d as usize;
        assert!(d < MAX_DATA_SERVERS, "DS index {d} out of range");
        id[2 + d / 8] |= 1 << (d % 8);
    }
    id
}

/// The DS indices of a device ID, ascending; None if it is not one of ours.
pub fn ds_of_deviceid(id: &deviceid4) -> Option<Vec<u32>> {
    if id[0] != DEVICEID_MAGIC || id[1] != DEVICEID_VERSION {
        return None;
    }
    let ds: Vec<u32> = (0..MAX_DATA_SERVERS).filter(|d| id[2 + d / 8] & (1 << (d % 8)) != 0).map(|d| d as u32).collect();
    (!ds.is_empty()).then_some(ds)
}

/// DS filehandle: b'D', version 1, stripe index, 0, inode (BE), generation (BE).
pub fn ds_fh(stripe: u8, ino: u64, generation: u32) -> [u8; DS_FH_LEN] {
    let mut fh = [0u8; DS_FH_LEN];
    fh[0] = b'D';
    fh[1] = 1;
    fh[2] = stripe;
    fh[4..12].copy_from_slice(&ino.to_be_bytes());
    fh[12..16].copy_from_slice(&generation.to_be_bytes());
    fh
}

/// RFC 5665 universal address of a socket address: "a.b.c.d.p1.p2".
pub fn uaddr(a: &SocketAddr) -> (String, String) {
    let (p1, p2) = (a.port() >> 8, a.port() & 0xff);
    match a.ip() {
        IpAddr::V4(ip) => ("tcp".into(), format!("{ip}.{p1}.{p2}")),
        IpAddr::V6(ip) => ("tcp6".into(), format!("{ip}.{p1}.{p2}")),
    }
}

/// Parses a universal address (IPv4 or IPv6 with the two port octets).
pub fn parse_uaddr(s: &str) -> Option<SocketAddr> {
    let mut parts = s.rsplitn(3, '.');
    let p2: u16 = parts.next()?.parse().ok().filter(|p| *p < 256)?;
    let p1: u16 = parts.next()?.parse().ok().filter(|p| *p < 256)?;
    let ip: IpAddr = parts.next()?.parse().ok()?;
    Some(SocketAddr::new(ip, p1 * 256 + p2))
}

/// The nfsv4_1_file_layout_ds_addr4 body for a device (one multipath list per DS).
pub fn device_addr_body(lists: &[Vec<(String, String)>]) -> Vec<u8> {
    let body = nfsv4_1_file_layout_ds_addr4 {
        nflda_stripe_indices: (0..lists.len() as u32).collect(),
        nflda_multipath_ds_list: lists
            .iter()
            .map(|l| {
                l.iter()
                    .map(|(netid, addr)| netaddr4 { na_r_netid: netid.as_bytes().into(), na_r_addr: addr.as_bytes().into() })
                    .collect()
            })
            .collect(),
    };
    let mut e = Encoder::new();
    body.encode(&mut e).expect("device body encodes");
    e.into_inner()
}

#[derive(Debug, Clone, Copy)]
pub struct PnfsConfig {
    pub stripe_unit: u32,
    pub stripe_count: u32,
    pub dead_after: Duration,
}

/// A stateid allowed on data servers.
#[derive(Debug, Clone)]
struct Pushed {
    stateid: stateid4,
    clientid: u64,
    access: u32,
    /// DS index -> the DS filehandle it was allowed on.
    ds: BTreeMap<u32, Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// No live data server (or the file has data on the MDS's local store).
    Unavailable,
    Io(String),
}

pub struct Pnfs {
    pub cfg: PnfsConfig,
    pub registry: Registry,
    pub ctl: CtlClient,
    ns: Namespace,
    sets: Mutex<HashMap<u64, Option<Arc<StripeSet>>>>,
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
}

fn set_key(ino: u64) -> Vec<u8> {
    let mut k = vec![b'L'];
    k.extend_from_slice(&u64_be(ino));
    k
}

/// Placement policy recorded for a file at creation when it differs from
/// the MDS-wide one (export or directory setting): `H` ino.
fn hint_key(ino: u64) -> Vec<u8> {
    let mut k = vec![b'H'];
    k.extend_from_slice(&u64_be(ino));
    k
}

/// Stripe count (0 = all live DSes) and stripe unit of new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub stripe_count: u32,
    pub stripe_unit: u32,
}

/// A stripe unit the Linux files layout driver accepts (multiple of 64,
/// not zero) and that our 1 MiB-oriented buffers handle.
pub fn check_stripe_unit(su: u32) -> Result<(), String> {
    if su == 0 || su % 64 != 0 || su > 64 << 20 {
        return Err(format!("{su} must be a non-zero multiple of 64 up to 64 MiB"));
    }
    Ok(())
}

fn device_key(id: &deviceid4) -> Vec<u8> {
    let mut k = vec![b'V'];
    k.extend_from_slice(id);
    k
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

    pub fn new(cfg: &MdsConfig, store: Arc<dyn KvStore>, epoch: u64, cluster_key: ClusterKey) -> Result<Arc<Pnfs>, String> {
        let pcfg = PnfsConfig {
            stripe_unit: cfg.stripe_unit,
            stripe_count: cfg.stripe_count,
            dead_after: Duration::from_millis(cfg.ds_dead_after_ms),
        };
        let registry = Registry::load(store.clone(), pcfg.dead_after, epoch).map_err(|e| format!("metadata store: {e}"))?;
        let devices = transact(&*store, MAX_TXN_RETRIES, |t| t.scan_prefix(b"V", usize::MAX))
            .map_err(|e: KvError| format!("metadata store: {e}"))?
            .into_iter()
            .filter_map(|(k, _)| <deviceid4>::try_from(&k[1..]).ok())
            .collect();
        let ns = Namespace::open(store).map_err(|e| format!("metadata store: {e}"))?;
        Ok(Arc::new(Pnfs {
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
            cluster_key,
        }))
    }

    /// The persisted stripe set of `ino`, if it has one.
    pub fn stripe_set(&self, ino: u64) -> io::Result<Option<Arc<StripeSet>>> {
        if let Some(s) = self.sets.lock().unwrap().get(&ino) {
            return Ok(s.clone());
        }
        let raw = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.get(&set_key(ino))).map_err(kv_io)?;
        let set = match raw {
            Some(b) => Some(Arc::new(
                StripeSet::decode(&b).ok_or_else(|| io::Error::other(format!("corrupt stripe set of inode {ino}")))?,
            )),
            None => None,
        };
        self.cache_set(ino, set.clone());
        Ok(set)
    }

    fn cache_set(&self, ino: u64, set: Option<Arc<StripeSet>>) {
        let mut c = self.sets.lock().unwrap();
        if c.len() >= STRIPE_SET_CACHE_MAX {
            c.clear();
        }
        c.insert(ino, set);
    }

    /// Chooses the data servers of a new stripe set: `stripe_count` live
    /// ones (all when 0), preferring more free space (GiB buckets), ties
    /// rotated so files spread; the first stripe index rotates too.
    pub fn policy(&self) -> Policy {
        Policy { stripe_count: self.cfg.stripe_count, stripe_unit: self.cfg.stripe_unit }
    }

    /// Records a non-default placement policy for a new file.
    pub fn set_hint(&self, ino: u64, p: Policy) -> io::Result<()> {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(&p.stripe_count.to_be_bytes());
        v.extend_from_slice(&p.stripe_unit.to_be_bytes());
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.put(&hint_key(ino), &v)).map_err(kv_io)
    }

    fn hint(&self, ino: u64) -> Policy {
        let rec = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.get(&hint_key(ino))).ok().flatten();
        match rec {
            Some(v) if v.len() == 8 => Policy {
                stripe_count: u32::from_be_bytes(v[..4].try_into().unwrap()),
                stripe_unit: u32::from_be_bytes(v[4..].try_into().unwrap()),
            },
            _ => self.policy(),
        }
    }

    pub fn choose(&self, generation: u32) -> Option<StripeSet> {
        self.choose_with(generation, self.policy())
    }

    pub fn choose_with(&self, generation: u32, policy: Policy) -> Option<StripeSet> {
        let live = self.registry.live();
        if live.is_empty() {
            return None;
        }
        let rot = self.rotor.fetch_add(1, Ordering::Relaxed) as usize;
        let total = live.len();
        let mut cands: Vec<(u64, usize, u32)> =
            live.iter().enumerate().map(|(i, d)| (d.free >> 30, (i + total - rot % total) % total, d.index)).collect();
        cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let want = match policy.stripe_count {
            0 => total,
            n => (n as usize).min(total),
        };
        let mut ds: Vec<u32> = cands.into_iter().take(want).map(|c| c.2).collect();
        ds.sort_unstable();
        let first = (rot % ds.len()) as u32;
        Some(StripeSet { stripe_unit: policy.stripe_unit, first, generation, ds })
    }

    /// The stripe set of `ino`, placing the file on data servers first if
    /// it has none yet: objects are created on every DS, then the set is
    /// persisted (so it never changes for this file).
    pub fn place(&self, ino: u64) -> Result<Arc<StripeSet>, PlaceError> {
        let io = |e: io::Error| PlaceError::Io(e.to_string());
        if let Some(s) = self.stripe_set(ino).map_err(io)? {
            return Ok(s);
        }
        let _g = self.place_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sets.lock().unwrap().remove(&ino);
        if let Some(s) = self.stripe_set(ino).map_err(io)? {
            return Ok(s);
        }
        let inode = self.ns.get(ino).map_err(|s| PlaceError::Io(format!("inode {ino}: {s:?}")))?;
        let set = self.choose_with(inode.generation, self.hint(ino)).ok_or(PlaceError::Unavailable)?;
        for (j, &d) in set.ds.iter().enumerate() {
            let fh = set.ds_fh(j as u32, ino);
            if let Err(e) = self.obj_create(d, &fh) {
                log::warn!("placing inode {ino}: OBJ_CREATE on data server {d} failed: {e}");
                return Err(PlaceError::Unavailable);
            }
        }
        let devid = set.deviceid();
        let new_device = !self.devices.lock().unwrap().contains(&devid);
        let bytes = set.encode();
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| {
            t.put(&set_key(ino), &bytes)?;
            if new_device {
                t.put(&device_key(&devid), &[])?;
            }
            Ok::<_, KvError>(())
        })
        .map_err(|e| PlaceError::Io(e.to_string()))?;
        if new_device {
            self.devices.lock().unwrap().insert(devid);
        }
        log::debug!("inode {ino} striped over data servers {:?} (first stripe {})", set.ds, set.first);
        let set = Arc::new(set);
        self.cache_set(ino, Some(set.clone()));
        Ok(set)
    }

    /// Forgets the stripe set of a removed file (its objects are removed by the caller).
    pub fn forget(&self, ino: u64) -> io::Result<()> {
        transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| {
            t.delete(&hint_key(ino))?;
            t.delete(&set_key(ino))
        })
        .map_err(kv_io)?;
        self.cache_set(ino, None);
        Ok(())
    }

    /// Inodes with a stripe set (to find orphans after a crash).
    pub fn placed_inodes(&self) -> io::Result<Vec<u64>> {
        let rows = transact(&*self.ns.store().clone(), MAX_TXN_RETRIES, |t| t.scan_prefix(b"L", usize::MAX)).map_err(kv_io)?;
        Ok(rows.into_iter().filter_map(|(k, _)| pnfs_kv::key::decode_u64_be(&k[1..])).collect())
    }

    /// Device IDs handed out so far, ascending.
    pub fn device_ids(&self) -> Vec<deviceid4> {
        self.devices.lock().unwrap().iter().copied().collect()
    }

    /// Multipath address lists of a device, in stripe-index order; None if
    /// the device is not ours or one of its data servers is unknown.
    pub fn device_lists(&self, id: &deviceid4) -> Option<Vec<Vec<(String, String)>>> {
        let ds = ds_of_deviceid(id)?;
        ds.iter().map(|d| self.registry.get(*d).map(|i| i.addrs)).collect()
    }

    /// True when every data server of `set` is alive.
    pub fn all_alive(&self, set: &StripeSet) -> bool {
        set.ds.iter().all(|d| self.registry.alive(*d))
    }

    // ---- control calls to one data server ----

    fn control_addr(&self, ds: u32) -> io::Result<String> {
        self.registry
            .get(ds)
            .map(|d| d.control_addr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("data server {ds} is not registered")))
    }

    fn call<A: XdrEncode>(&self, ds: u32, proc_: u32, args: &A) -> io::Result<Vec<u8>> {
        let addr = self.control_addr(ds)?;
        self.ctl.call(&addr, PNFSCTL_DS_PROGRAM, proc_, args)
    }

    fn simple(&self, ds: u32, proc_: u32, args: &impl XdrEncode) -> io::Result<()> {
        let body = self.call(ds, proc_, args)?;
        let r = ctl_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
        client::status_result(r.cr_status)
    }

    pub fn obj_create(&self, ds: u32, fh: &[u8]) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_CREATE, &ctl_obj_args { coa_fh: fh.into() })
    }

    pub fn obj_remove(&self, ds: u32, fh: &[u8]) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_REMOVE, &ctl_obj_args { coa_fh: fh.into() })
    }

    pub fn obj_truncate(&self, ds: u32, fh: &[u8], size: u64) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_TRUNCATE, &ctl_truncate_args { cta_fh: fh.into(), cta_size: size })
    }

    pub fn obj_commit(&self, ds: u32, fh: &[u8]) -> io::Result<()> {
        self.simple(ds, CTL_PROC_OBJ_COMMIT, &ctl_obj_args { coa_fh: fh.into() })
    }

    pub fn obj_write(&self, ds: u32, fh: &[u8], offset: u64, data: &[u8], stable: bool) -> io::Result<()> {
        let a = ctl_write_args { cwa_fh: fh.into(), cwa_offset: offset, cwa_stable: stable, cwa_data: data.into() };
        self.simple(ds, CTL_PROC_OBJ_WRITE, &a)
    }

    /// Reads into `buf`; returns the bytes the object had (short at its
    /// end). A DS may answer less than asked before its end: read on.
    pub fn obj_read(&self, ds: u32, fh: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let a = ctl_read_args { cra_fh: fh.into(), cra_offset: offset + done as u64, cra_count: (buf.len() - done) as u32 };
            let body = self.call(ds, CTL_PROC_OBJ_READ, &a)?;
            let r = ctl_read_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
            match r.crs_status {
                ctl_status::CTL_NOENT => break,
                s => client::status_result(s)?,
            }
            let n = r.crs_data.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&r.crs_data[..n]);
            done += n;
            if r.crs_eof || n == 0 {
                break;
            }
        }
        Ok(done)
    }

    /// (object size, space used); a missing object is (0, 0).
    pub fn obj_stat(&self, ds: u32, fh: &[u8]) -> io::Result<(u64, u64)> {
        let body = self.call(ds, CTL_PROC_OBJ_STAT, &ctl_obj_args { coa_fh: fh.into() })?;
        let r = ctl_stat_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
        match r.csr_status {
            ctl_status::CTL_NOENT => Ok((0, 0)),
            s => client::status_result(s).map(|_| (r.csr_size, r.csr_space_used)),
        }
    }

    fn allow_change(p: &Pushed, fh: &[u8]) -> ctl_stateid_change<'static> {
        ctl_stateid_change::CTL_CHANGE_ALLOW(ctl_stateid_args {
            csa_stateid: stateid4 { seqid: 0, other: p.stateid.other },
            csa_clientid: p.clientid,
            csa_fh: pnfs_protocol::Opaque::owned(fh.to_vec()),
            csa_access: p.access,
        })
    }

    /// Sends `changes` to data server `ds` through its batcher: together
    /// with concurrent callers' changes, one CTL_PROC_STATEID_BATCH call.
    fn push_changes(&self, ds: u32, changes: Vec<ctl_stateid_change<'static>>) -> Vec<Result<(), String>> {
        let batcher = self.batchers.lock().unwrap().entry(ds).or_default().clone();
        batcher.push(changes, |c| {
            let body = self.call(ds, CTL_PROC_STATEID_BATCH, &ctl_batch_args { cba_changes: c.to_vec() })?;
            let r = ctl_batch_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
            Ok(r.cbr_status)
        })
    }

    // ---- tight coupling: stateids the data servers accept ----

    /// Allows each `(stateid, access)` of `clientid` on every DS of the
    /// file's stripe set; stateids already pushed there are skipped.
    pub fn allow(&self, clientid: u64, ino: u64, set: &StripeSet, stateids: &[(stateid4, u32)]) {
        let mut work: Vec<(u32, Pushed, Vec<u8>)> = Vec::new();
        {
            let mut pushed = self.pushed.lock().unwrap();
            for (sid, access) in stateids {
                let p = pushed.entry(sid.other).or_insert_with(|| Pushed {
                    stateid: sid.clone(),
                    clientid,
                    access: *access,
                    ds: BTreeMap::new(),
                });
                let widened = p.access | access != p.access;
                p.access |= access;
                for (j, &d) in set.ds.iter().enumerate() {
                    if widened || !p.ds.contains_key(&d) {
                        let fh = set.ds_fh(j as u32, ino).to_vec();
                        p.ds.insert(d, fh.clone());
                        work.push((d, p.clone(), fh));
                    }
                }
            }
        }
        let mut by_ds: BTreeMap<u32, Vec<(StateOther, ctl_stateid_change<'static>)>> = BTreeMap::new();
        for (d, p, fh) in work {
            by_ds.entry(d).or_default().push((p.stateid.other, Self::allow_change(&p, &fh)));
        }
        for (d, items) in by_ds {
            let (others, changes): (Vec<StateOther>, Vec<_>) = items.into_iter().unzip();
            for (other, r) in others.iter().zip(self.push_changes(d, changes)) {
                if let Err(e) = r {
                    log::warn!("STATEID_ALLOW to data server {d} failed: {e}");
                    if let Some(q) = self.pushed.lock().unwrap().get_mut(other) {
                        q.ds.remove(&d);
                    }
                }
            }
        }
    }

    pub fn has_pushed(&self) -> bool {
        !self.pushed.lock().unwrap().is_empty()
    }

    /// Removes pushed stateids for which `still_valid` is false; returns
    /// them with their data servers, for `revoke`.
    pub fn take_gone(&self, still_valid: impl Fn(&StateOther) -> bool) -> Vec<(StateOther, Vec<u32>)> {
        let mut pushed = self.pushed.lock().unwrap();
        let gone: Vec<StateOther> = pushed.keys().filter(|o| !still_valid(o)).copied().collect();
        gone.into_iter().filter_map(|o| pushed.remove(&o).map(|p| (o, p.ds.keys().copied().collect()))).collect()
    }

    /// Removes the pushed stateids among `others` (ended here); returns
    /// them with their data servers, for `revoke`. Costs `others` only.
    pub fn take_pushed(&self, others: &[StateOther]) -> Vec<(StateOther, Vec<u32>)> {
        let mut pushed = self.pushed.lock().unwrap();
        others.iter().filter_map(|o| pushed.remove(o).map(|p| (*o, p.ds.keys().copied().collect()))).collect()
    }

    /// Sends STATEID_REVOKE for stateids taken with `take_gone` or `take_pushed`.
    pub fn revoke(&self, gone: Vec<(StateOther, Vec<u32>)>) {
        let mut by_ds: BTreeMap<u32, Vec<ctl_stateid_change<'static>>> = BTreeMap::new();
        for (other, ds) in gone {
            for d in ds {
                by_ds.entry(d).or_default().push(ctl_stateid_change::CTL_CHANGE_REVOKE(ctl_revoke_args {
                    cva_stateid: stateid4 { seqid: 0, other },
                }));
            }
        }
        for (d, changes) in by_ds {
            for r in self.push_changes(d, changes) {
                if let Err(e) = r {
                    log::warn!("STATEID_REVOKE to data server {d} failed: {e}");
                }
            }
        }
    }

    /// Has data server `ds`'s allowed stateids pushed again, after the
    /// REGISTER reply is out, by the one repush worker (no thread per
    /// REGISTER; repeated requests for one DS coalesce).
    pub fn request_repush(self: &Arc<Self>, ds: u32) {
        let mut pending = self.repush_pending.lock().unwrap();
        if !self.repush_started.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new().name("mds-repush".into()).spawn(move || Self::repush_worker(weak));
            if let Err(e) = spawned {
                log::error!("starting the stateid repush thread: {e}");
                self.repush_started.store(false, Ordering::Release);
            }
        }
        pending.insert(ds);
        self.repush_wake.notify_one();
    }

    fn repush_worker(weak: std::sync::Weak<Pnfs>) {
        loop {
            let Some(p) = weak.upgrade() else { return };
            let next = {
                let mut pending = p.repush_pending.lock().unwrap();
                if pending.is_empty() {
                    pending = p.repush_wake.wait_timeout(pending, Duration::from_secs(1)).unwrap().0;
                }
                pending.pop_first()
            };
            if let Some(ds) = next {
                p.repush(ds);
            }
        }
    }

    /// Pushes again every stateid allowed on data server `ds` (it
    /// re-registered, e.g. after a restart that lost its table).
    pub fn repush(&self, ds: u32) {
        let work: Vec<(Pushed, Vec<u8>)> = self
            .pushed
            .lock()
            .unwrap()
            .values()
            .filter_map(|p| p.ds.get(&ds).map(|fh| (p.clone(), fh.clone())))
            .collect();
        if !work.is_empty() {
            log::info!("data server {ds} registered again; pushing {} stateid(s)", work.len());
        }
        for chunk in work.chunks(CTL_MAX_BATCH as usize) {
            let changes = chunk.iter().map(|(p, fh)| Self::allow_change(p, fh)).collect();
            for r in self.push_changes(ds, changes) {
                if let Err(e) = r {
                    log::warn!("re-pushing a stateid to data server {ds} failed: {e}");
                }
            }
        }
    }

    /// Hook before CB_LAYOUTRECALL (sent by `Mds::recall_layouts_for`):
    /// the layouts `holders` hold on `ino` are recalled because of `why`
    /// (truncate, remove, a conflicting open for write). Only logs.
    pub fn recall_file_layouts(&self, ino: u64, holders: &[u64], why: &str) {
        log::debug!("recalling layouts of inode {ino} ({why}) from client(s) {holders:x?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u32, first: u32, su: u32) -> StripeSet {
        StripeSet { stripe_unit: su, first, generation: 1, ds: (0..n).map(|i| i * 3).collect() }
    }

    #[test]
    fn dense_offset_mapping_matches_rfc() {
        let s = set(3, 1, 64);
        // SUN 0 -> stripe 1, SUN 1 -> stripe 2, SUN 2 -> stripe 0, SUN 3 -> stripe 1 ...
        assert_eq!(s.stripe_of(0), 1);
        assert_eq!(s.stripe_of(64), 2);
        assert_eq!(s.stripe_of(128), 0);
        assert_eq!(s.stripe_of(192), 1);
        assert_eq!(s.obj_offset(0), 0);
        assert_eq!(s.obj_offset(70), 6);
        assert_eq!(s.obj_offset(192 + 5), 64 + 5);
        for off in (0..5000).step_by(7) {
            let j = s.stripe_of(off);
            assert_eq!(s.file_offset(j, s.obj_offset(off)), off, "offset {off}");
        }
        // Pieces cover the range exactly and never cross a stripe unit.
        let p = s.pieces(60, 200);
        assert_eq!(p.iter().map(|p| p.len).sum::<usize>(), 200);
        assert_eq!(p[0], Piece { stripe: 1, obj_offset: 60, buf_offset: 0, len: 4 });
        assert_eq!(p[1], Piece { stripe: 2, obj_offset: 0, buf_offset: 4, len: 64 });
        // One stripe: everything merges into one piece.
        assert_eq!(set(1, 0, 64).pieces(10, 1000).len(), 1);
    }

    #[test]
    fn object_sizes_add_up() {
        for (n, first) in [(1, 0), (3, 0), (3, 2), (4, 1)] {
            let s = set(n, first, 64);
            for size in [0u64, 1, 63, 64, 65, 191, 192, 193, 1000, 64 * 12] {
                let total: u64 = (0..n).map(|j| s.object_size(j, size)).sum();
                assert_eq!(total, size, "n {n} first {first} size {size}");
                if size > 0 {
                    // The last byte lands on the object whose size ends right after it.
                    let j = s.stripe_of(size - 1);
                    assert_eq!(s.object_size(j, size), s.obj_offset(size - 1) + 1);
                }
            }
        }
    }

    #[test]
    fn deviceid_and_fh_and_uaddr() {
        let id = deviceid_of(&[0, 5, 111]);
        assert_eq!(ds_of_deviceid(&id), Some(vec![0, 5, 111]));
        assert_eq!(ds_of_deviceid(&[0u8; 16]), None);
        let fh = ds_fh(2, 0x0102030405060708, 9);
        assert_eq!(fh, [b'D', 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9]);
        let a: SocketAddr = "10.0.2.2:2049".parse().unwrap();
        assert_eq!(uaddr(&a), ("tcp".to_string(), "10.0.2.2.8.1".to_string()));
        assert_eq!(parse_uaddr("10.0.2.2.78.81"), Some("10.0.2.2:20049".parse().unwrap()));
        let v6: SocketAddr = "[fe80::1]:2049".parse().unwrap();
        assert_eq!(uaddr(&v6), ("tcp6".to_string(), "fe80::1.8.1".to_string()));
        assert_eq!(parse_uaddr("fe80::1.8.1"), Some(v6));
        assert_eq!(parse_uaddr("10.0.2.2"), None);
        let s = set(4, 3, 1 << 20);
        assert_eq!(StripeSet::decode(&s.encode()), Some(s));
    }

    #[test]
    fn layout_body_fits_with_every_data_server() {
        let s = StripeSet { stripe_unit: 1 << 20, first: 7, generation: 1, ds: (0..MAX_DATA_SERVERS as u32).collect() };
        let key = TagKey::ephemeral();
        let b = s.layout_body(42, &key);
        assert!(b.len() <= MAX_LAYOUT_BODY, "{} bytes", b.len());
        let l = nfsv4_1_file_layout4::decode(&mut Decoder::new(&b)).unwrap();
        assert_eq!(l.nfl_fh_list.len(), MAX_DATA_SERVERS);
        assert_eq!(l.nfl_util & NFL4_UFLG_STRIPE_UNIT_SIZE_MASK, 1 << 20);
        assert_eq!(l.nfl_util & NFL4_UFLG_DENSE, NFL4_UFLG_DENSE);
        assert_eq!(l.nfl_pattern_offset, 0);
        assert_eq!(ds_handle::open(&key, &l.nfl_fh_list[3]), Some(ds_fh(3, 42, 1)), "sealed DS handles");
        assert_eq!(ds_of_deviceid(&l.nfl_deviceid).unwrap().len(), MAX_DATA_SERVERS);
    }
}

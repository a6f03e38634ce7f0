//! The MDS admin program (PNFSCTL_ADMIN_PROGRAM), what `pnfsctl` talks to.
//!
//! Served on the control listener (`pnfs::registry::serve_control_with_admin`)
//! beside the data servers' program, with keys of its own derived from the
//! cluster key (`ControlKeys::admin`): only a holder of the cluster key file
//! manages the cluster. Chosen over HTTP on the metrics listener: the
//! control listener already has per-call authentication with replay
//! protection, bounded records and per-address connection limits, and the
//! metrics listener is meant to be scraped without a secret.
//!
//! Calls run on a blocking thread (at most a few at once): `status` and
//! `ds list` scan the placement records to count objects (O(files), in
//! pages), `layout` asks each data server of the file for its object's size.
//!
//! `ds` operations (admin states in `pnfs::registry`):
//! - `add`: puts a known data server back into service for new files
//!   (draining, removed or declared lost). A new data server needs no add:
//!   it joins by registering (it holds the cluster key) and gets new files
//!   at once; `add` of an unknown one says so.
//! - `drain`: no new files go there; reports the objects left. Moving them
//!   away is the mover's (rebalance/restripe), not built yet.
//! - `remove`: only while it holds no objects; else the answer says to drain.
//! - `declare-lost`: its copies count as gone (`Registry::declared_lost`).

use crate::cluster::membership::{NodeRecord, NODE_RECORD_PREFIX};
use crate::keyspace::INODE;
use crate::namespace::ROOT_INO;
use crate::pnfs::inventory::{self, FileLayout, LayoutKind, ObjectCounts};
use crate::pnfs::registry::{AdminProgram, AdminState, DsInfo, RegisterError};
use crate::Mds;
use pnfs_protocol::control_auth::{ControlKeys, Verified};
use pnfs_protocol::rpc::{self, AcceptStat, Checked};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::sync::Arc;
use std::time::Duration;

const ADMIN_CALLS: rpc::CallPolicy = rpc::CallPolicy {
    prog: PNFSCTL_ADMIN_PROGRAM,
    vers: PNFSCTL_VERSION,
    procs: &[rpc::PROC_NULL, ADM_PROC_STATUS, ADM_PROC_DS_LIST, ADM_PROC_DS_SET_STATE, ADM_PROC_LAYOUT],
    flavors: &[pnfs_protocol::control_auth::AUTH_PNFS_CTL],
};

/// An admin failure: its status and the message pnfsctl prints.
type Failure = (adm_status, String);

pub struct AdminService {
    mds: Arc<Mds>,
    keys: ControlKeys,
}

impl AdminService {
    /// None when the MDS has no pNFS role (no control listener to serve it on).
    pub fn new(mds: Arc<Mds>) -> Option<Arc<dyn AdminProgram>> {
        let keys = ControlKeys::admin(&mds.pnfs.as_ref()?.cluster_key);
        Some(Arc::new(AdminService { mds, keys }))
    }

    fn pnfs(&self) -> &crate::pnfs::Pnfs {
        self.mds.pnfs.as_ref().expect("AdminService::new needs the pNFS role")
    }

    fn reply<T: XdrEncode>(&self, v: &Verified, res: &T) -> Vec<u8> {
        let mut e = Encoder::new();
        v.begin_reply(&mut e);
        let _ = res.encode(&mut e);
        let mut r = e.into_inner();
        v.seal_reply(&self.keys, &mut r);
        r
    }

    /// Objects per data server, or why they are not counted (logged).
    fn counts(&self) -> Option<ObjectCounts> {
        self.pnfs().object_counts().map_err(|e| log::warn!("pnfsctl: counting objects: {e}")).ok()
    }

    fn ds_info(&self, d: &DsInfo, counts: Option<&ObjectCounts>) -> adm_ds_info<'static> {
        let reg = &self.pnfs().registry;
        adm_ds_info {
            adi_index: d.index,
            adi_id: d.id.clone().into(),
            adi_client_addrs: d
                .addrs
                .iter()
                .map(|(n, a)| netaddr4 { na_r_netid: n.clone().into(), na_r_addr: a.clone().into() })
                .collect(),
            adi_control_addr: d.control_addr.clone().into(),
            adi_state: state_to_wire(d.admin),
            adi_registered: d.last_seen.is_some(),
            adi_alive: reg.alive(d.index),
            adi_heartbeat_age_ms: d.last_seen.map_or(0, |t| t.elapsed().as_millis() as u64),
            adi_capacity_bytes: d.capacity,
            adi_free_bytes: d.free,
            // Unreadable placement records would make any count short.
            adi_objects_counted: counts.is_some_and(|c| c.unreadable == 0),
            adi_objects: counts.and_then(|c| c.per_ds.get(&d.index).copied()).unwrap_or(0),
        }
    }

    fn status(&self) -> adm_status_res<'static> {
        let pnfs = self.pnfs();
        let store = self.mds.ns.store();
        let known = pnfs.registry.known();
        let alive = |d: &DsInfo| pnfs.registry.alive(d.index);
        let count = |f: &dyn Fn(&DsInfo) -> bool| known.iter().filter(|d| f(d)).count() as u32;
        let (capacity, free) = pnfs.registry.capacity();
        let mut msg = String::new();
        let mut files = 0u64;
        if let Err(e) = inventory::scan_pages(&**store, INODE, true, |_, _| files += 1) {
            msg = format!("counting files: {e}");
        }
        let placed = self.counts().map_or(0, |c| c.files);
        let mut nodes = Vec::new();
        if let Some(c) = &self.mds.cfg.cluster {
            let mut live = std::collections::BTreeMap::new();
            let scan = inventory::scan_pages(&**store, NODE_RECORD_PREFIX[0], false, |_, v| {
                if let Some(r) = NodeRecord::decode(v) {
                    live.insert(r.node_id, r.epoch);
                }
            });
            if let Err(e) = scan {
                msg = format!("reading cluster membership: {e}");
            }
            for (i, peer) in c.nodes.iter().enumerate() {
                let id = i as u32 + 1;
                nodes.push(adm_node_info {
                    ani_node_id: id,
                    ani_peer: peer.clone().into(),
                    ani_live: live.contains_key(&id),
                    ani_epoch: live.get(&id).copied().unwrap_or(0),
                    ani_answering: id == c.node_id,
                });
            }
        }
        adm_status_res {
            asr_status: if msg.is_empty() { adm_status::ADM_OK } else { adm_status::ADM_IO },
            asr_message: msg.into(),
            asr_node_id: self.mds.cfg.cluster_node_id(),
            asr_nodes: nodes,
            asr_ds_known: known.len() as u32,
            asr_ds_up: count(&|d| alive(d)),
            asr_ds_down: count(&|d| !alive(d) && d.admin != AdminState::Removed),
            asr_ds_active: count(&|d| alive(d) && d.admin == AdminState::Active),
            asr_ds_draining: count(&|d| d.admin == AdminState::Draining),
            asr_ds_lost: count(&|d| d.admin == AdminState::Lost),
            asr_ds_removed: count(&|d| d.admin == AdminState::Removed),
            asr_capacity_bytes: capacity,
            asr_free_bytes: free,
            asr_files: files,
            asr_placed_files: placed,
            // No resilver or rebalance exists yet: none, never a made-up figure.
            asr_resilver: Vec::new(),
            asr_rebalance: Vec::new(),
        }
    }

    fn ds_list(&self, a: &adm_ds_list_args) -> adm_ds_list_res<'static> {
        let counts = if a.adl_count_objects { self.counts() } else { None };
        let mut msg = String::new();
        if a.adl_count_objects {
            match &counts {
                None => msg = "objects not counted: the placement records could not be read (see the MDS log)".into(),
                Some(c) if c.unreadable > 0 => {
                    msg = format!("objects not counted: {} placement record(s) of a kind this MDS does not read", c.unreadable)
                }
                Some(_) => {}
            }
        }
        let ds = self.pnfs().registry.known().iter().map(|d| self.ds_info(d, counts.as_ref())).collect();
        adm_ds_list_res { adr_status: adm_status::ADM_OK, adr_message: msg.into(), adr_ds: ds }
    }

    /// The data server `target` names: an index, else an id; `id:NAME`
    /// is always an id.
    fn resolve(&self, target: &str) -> Result<DsInfo, Failure> {
        let known = self.pnfs().registry.known();
        let by_id = |id: &str| known.iter().find(|d| d.id == id.as_bytes()).cloned();
        let found = match target.strip_prefix("id:") {
            Some(id) => by_id(id),
            None => target.parse::<u32>().ok().and_then(|i| known.iter().find(|d| d.index == i).cloned()).or_else(|| by_id(target)),
        };
        found.ok_or_else(|| {
            (adm_status::ADM_NOENT, format!("no data server {target:?} is known: `pnfsctl ds list` shows each one's index and id"))
        })
    }

    fn set_state(&self, a: &adm_ds_state_args) -> adm_ds_state_res<'static> {
        let target = String::from_utf8_lossy(&a.ada_target).into_owned();
        let done = self.apply(&target, a.ada_op);
        let (status, msg, d) = match done {
            Ok((msg, d)) => (adm_status::ADM_OK, msg, Some(d)),
            Err((s, msg)) => (s, msg, self.resolve(&target).ok()),
        };
        let counts = d.as_ref().and_then(|_| self.counts());
        let ds = d.map(|d| self.ds_info(&self.pnfs().registry.get(d.index).unwrap_or(d), counts.as_ref()));
        adm_ds_state_res { ads_status: status, ads_message: msg.into(), ads_ds: ds.into_iter().collect() }
    }

    fn apply(&self, target: &str, op: adm_ds_op) -> Result<(String, DsInfo), Failure> {
        let d = match (self.resolve(target), op) {
            (Err((s, _)), adm_ds_op::ADM_DS_ADD) => {
                return Err((
                    s,
                    format!(
                        "no data server {target:?} is known. A new data server needs no add: start it with ds.id = {target:?}, \
                         ds.mds_control naming this MDS's control listener and a copy of the cluster key; \
                         it gets new files as soon as it registers"
                    ),
                ))
            }
            (r, _) => r?,
        };
        let pnfs = self.pnfs();
        let (i, from) = (d.index, d.admin);
        let store_err = |e: RegisterError| (adm_status::ADM_IO, format!("data server {i}: {e:?}"));
        let objects_on = |i: u32| -> Result<u64, Failure> {
            let c = pnfs.object_counts().map_err(|e| (adm_status::ADM_IO, format!("counting objects: {e}")))?;
            Ok(c.per_ds.get(&i).copied().unwrap_or(0))
        };
        let msg = match (op, from) {
            (adm_ds_op::ADM_DS_ADD, AdminState::Active) => format!("data server {i} is already active"),
            (adm_ds_op::ADM_DS_ADD, _) => {
                pnfs.registry.set_admin_state(i, AdminState::Active).map_err(store_err)?;
                let alive = if pnfs.registry.alive(i) { "" } else { " once it registers (it is not alive now)" };
                format!("data server {i} was {}, is active again: new files go there{alive}", from.name())
            }
            (adm_ds_op::ADM_DS_DRAIN, AdminState::Removed | AdminState::Lost) => {
                return Err((
                    adm_status::ADM_REFUSED,
                    format!("data server {i} is {}: nothing to drain; `pnfsctl ds add {i}` takes it back first", from.name()),
                ))
            }
            (adm_ds_op::ADM_DS_DRAIN, _) => {
                pnfs.registry.set_admin_state(i, AdminState::Draining).map_err(store_err)?;
                format!(
                    "data server {i} is draining: no new files go there; {} object(s) remain on it. Moving them away is \
                     not built yet (rebalance/restripe is the next work); `pnfsctl ds list` shows the count",
                    objects_on(i)?
                )
            }
            (adm_ds_op::ADM_DS_REMOVE, AdminState::Removed) => format!("data server {i} is already removed"),
            (adm_ds_op::ADM_DS_REMOVE, _) => {
                let settle = self.mds.cfg.cluster.as_ref().map_or(Duration::ZERO, |c| Duration::from_millis(2 * c.heartbeat_ms));
                match pnfs.remove_data_server(i, settle) {
                    Ok(()) => format!("data server {i} removed: it gets no files; its index stays taken (device IDs name it)"),
                    Err(inventory::RemoveError::HoldsObjects(n)) => {
                        return Err((
                            adm_status::ADM_REFUSED,
                            format!(
                                "data server {i} still holds {n} object(s): run `pnfsctl ds drain {i}`, wait until \
                                 `pnfsctl ds list` shows 0 objects on it, then remove it"
                            ),
                        ))
                    }
                    Err(inventory::RemoveError::Unreadable(n)) => {
                        return Err((
                            adm_status::ADM_REFUSED,
                            format!("{n} placement record(s) of a kind this MDS does not read: cannot tell that data server {i} holds no objects"),
                        ))
                    }
                    Err(inventory::RemoveError::Io(e)) => return Err((adm_status::ADM_IO, format!("data server {i}: {e}"))),
                }
            }
            (adm_ds_op::ADM_DS_DECLARE_LOST, AdminState::Lost) => format!("data server {i} is already declared lost"),
            (adm_ds_op::ADM_DS_DECLARE_LOST, AdminState::Removed) => {
                return Err((adm_status::ADM_REFUSED, format!("data server {i} is removed: it holds nothing to lose")))
            }
            (adm_ds_op::ADM_DS_DECLARE_LOST, _) => {
                pnfs.registry.set_admin_state(i, AdminState::Lost).map_err(store_err)?;
                format!(
                    "data server {i} declared lost: its {} object(s) count as gone, whether or not it answers; \
                     `pnfsctl ds add {i}` takes it back",
                    objects_on(i)?
                )
            }
        };
        if op != adm_ds_op::ADM_DS_ADD && pnfs.registry.placeable().is_empty() {
            let warning = ". No live active data server is left: new files get no layout and keep their data on the MDS \
                           until one is (`pnfsctl ds add`, or start one)";
            return Ok((msg + warning, d));
        }
        Ok((msg, d))
    }

    /// The inode at `path` (absolute, from the namespace root; no `..`).
    fn lookup_path(&self, path: &str) -> Result<crate::namespace::Inode, Failure> {
        let exports = || self.mds.exports.iter().map(|e| e.path.as_str()).collect::<Vec<_>>().join(", ");
        if !path.starts_with('/') {
            return Err((
                adm_status::ADM_INVAL,
                format!("{path:?}: give the path from the namespace root, export included (exports: {})", exports()),
            ));
        }
        let mut inode = self.mds.ns.get(ROOT_INO).map_err(|s| (adm_status::ADM_IO, format!("root directory: {s:?}")))?;
        for name in path.split('/').filter(|n| !n.is_empty() && *n != ".") {
            if name == ".." {
                return Err((adm_status::ADM_INVAL, format!("{path:?}: `..` is not followed; give the plain path")));
            }
            inode = self.mds.ns.lookup(inode.ino, name.as_bytes()).map_err(|s| match s {
                nfsstat4::NFS4ERR_NOENT => {
                    (adm_status::ADM_NOENT, format!("{path}: no {name:?} there (paths start with an export: {})", exports()))
                }
                nfsstat4::NFS4ERR_NOTDIR => (adm_status::ADM_NOENT, format!("{path}: a component before {name:?} is not a directory")),
                s => (adm_status::ADM_IO, format!("{path}: looking up {name:?}: {s:?}")),
            })?;
        }
        Ok(inode)
    }

    fn layout(&self, a: &adm_layout_args) -> adm_layout_res<'static> {
        let mut res = adm_layout_res {
            alr_status: adm_status::ADM_OK,
            alr_message: Opaque::default(),
            alr_ino: 0,
            alr_size: 0,
            alr_kind: adm_layout_kind::ADM_LAYOUT_NONE,
            alr_policy: Opaque::default(),
            alr_segments: Vec::new(),
            alr_more_segments: false,
        };
        let path = String::from_utf8_lossy(&a.ala_path).into_owned();
        let fail = |mut r: adm_layout_res<'static>, (s, m): Failure| {
            r.alr_status = s;
            r.alr_message = m.into();
            r
        };
        let inode = match self.lookup_path(&path) {
            Ok(i) => i,
            Err(f) => return fail(res, f),
        };
        (res.alr_ino, res.alr_size) = (inode.ino, inode.size);
        if inode.is_dir() {
            return fail(res, (adm_status::ADM_INVAL, format!("{path} is a directory: give a file")));
        }
        let layout = match self.pnfs().file_layout(inode.ino) {
            Ok(Some(l)) => l,
            Ok(None) => {
                res.alr_message = "no objects on data servers yet (nothing written through a layout)".into();
                return res;
            }
            Err(e) => return fail(res, (adm_status::ADM_IO, format!("{path}: {e}"))),
        };
        layout_to_wire(&layout, &mut res);
        res
    }
}

fn layout_to_wire(l: &FileLayout, res: &mut adm_layout_res<'static>) {
    res.alr_kind = match l.kind {
        LayoutKind::Files => adm_layout_kind::ADM_LAYOUT_FILES,
        LayoutKind::Flex => adm_layout_kind::ADM_LAYOUT_FLEX,
    };
    res.alr_policy = l.policy.clone().into();
    res.alr_more_segments = l.segments.len() > ADM_MAX_SEGMENTS as usize;
    res.alr_segments = l
        .segments
        .iter()
        .take(ADM_MAX_SEGMENTS as usize)
        .map(|s| adm_segment {
            asg_offset: s.offset,
            asg_length: s.length,
            asg_stripe_unit: s.stripe_unit,
            asg_first_stripe: s.first_stripe,
            asg_mirrors: s
                .mirrors
                .iter()
                .take(ADM_MAX_MIRRORS as usize)
                .map(|m| adm_mirror {
                    am_stripes: m
                        .iter()
                        .take(ADM_MAX_STRIPES as usize)
                        .map(|o| {
                            let (found, (size, used), error) = match &o.stat {
                                Ok(s) => (true, *s, String::new()),
                                Err(e) => (false, (0, 0), e.chars().take(ADM_MSG_MAX as usize / 2).collect()),
                            };
                            adm_object {
                                ao_stripe: o.stripe,
                                ao_ds_index: o.ds,
                                ao_ds_id: o.ds_id.clone().into(),
                                ao_found: found,
                                ao_size: size,
                                ao_space_used: used,
                                ao_error: error.into(),
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
}

pub fn state_to_wire(s: AdminState) -> adm_ds_state {
    match s {
        AdminState::Active => adm_ds_state::ADM_DS_ACTIVE,
        AdminState::Draining => adm_ds_state::ADM_DS_DRAINING,
        AdminState::Removed => adm_ds_state::ADM_DS_REMOVED,
        AdminState::Lost => adm_ds_state::ADM_DS_LOST,
    }
}

impl AdminProgram for AdminService {
    fn handle(&self, rec: &[u8], v: &Verified) -> Option<Vec<u8>> {
        if !v.admin {
            return None;
        }
        let (header, args) = match ADMIN_CALLS.check(rec) {
            Checked::Call { header, args } => (header, args),
            Checked::Reply { .. } | Checked::Unreadable => return None,
            Checked::Refused(reply) => return Some(reply),
        };
        let garbage = || Some(rpc::accepted_reply(header.xid, AcceptStat::GarbageArgs));
        let mut d = Decoder::new(args);
        match header.proc_ {
            rpc::PROC_NULL => Some(self.reply(v, &())),
            ADM_PROC_STATUS => Some(self.reply(v, &self.status())),
            ADM_PROC_DS_LIST => {
                let Ok(a) = adm_ds_list_args::decode(&mut d) else { return garbage() };
                Some(self.reply(v, &self.ds_list(&a)))
            }
            ADM_PROC_DS_SET_STATE => {
                let Ok(a) = adm_ds_state_args::decode(&mut d) else { return garbage() };
                log::info!("pnfsctl: ds {:?} {}", a.ada_op, String::from_utf8_lossy(&a.ada_target));
                Some(self.reply(v, &self.set_state(&a)))
            }
            ADM_PROC_LAYOUT => {
                let Ok(a) = adm_layout_args::decode(&mut d) else { return garbage() };
                Some(self.reply(v, &self.layout(&a)))
            }
            _ => Some(rpc::accepted_reply(header.xid, AcceptStat::ProcUnavail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::node_key;
    use crate::config::ClusterConfig;
    use crate::datastore::LocalFileStore;
    use pnfs_kv::{transact, KvStore, MemStore};

    /// Node 2 of a three-node cluster with the pNFS role, on `store`.
    fn service(dir: &std::path::Path, store: Arc<dyn KvStore>) -> AdminService {
        let text = format!(
            "bind = \"127.0.0.1:1\"\ncontrol_bind = \"127.0.0.1:2\"\nmetadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\n\
             [[exports]]\npath = \"/export\"\n",
            dir.display()
        );
        let mut cfg: crate::MdsConfig = toml::from_str(&text).unwrap();
        cfg.cluster = Some(ClusterConfig {
            node_id: 2,
            nodes: vec!["10.0.0.21:20495".into(), "10.0.0.22:20495".into(), "10.0.0.23:20495".into()],
            vips: vec![],
            vip_interface: "lo".into(),
            vip_prefix_len: 24,
            heartbeat_ms: 500,
            lease_ms: 1500,
        });
        let data = LocalFileStore::open(&cfg.data_dir, cfg.open_file_cache).unwrap();
        let mds = Mds::with_stores(cfg, store, Arc::new(data)).unwrap();
        let keys = ControlKeys::admin(&mds.pnfs.as_ref().unwrap().cluster_key);
        AdminService { mds, keys }
    }

    fn register(svc: &AdminService, id: &str) {
        let a = ctl_register_args {
            cra_ds_id: id.as_bytes().into(),
            cra_client_addrs: vec![netaddr4 { na_r_netid: "tcp".into(), na_r_addr: "10.0.0.1.8.1".into() }],
            cra_control_addr: "127.0.0.1:1".into(),
            cra_capacity_bytes: 100,
            cra_free_bytes: 60,
        };
        svc.pnfs().registry.register(&a).unwrap();
    }

    #[test]
    fn status_names_every_cluster_node_and_which_are_live() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
        let svc = service(dir.path(), store.clone());
        // Nodes 1 and 2 hold membership records; node 3 is down.
        transact(&*store, 1, |t| {
            for id in [1u32, 2] {
                let r = NodeRecord { node_id: id, epoch: (id as u64) << 32 | 7, peer: "x".into(), lease: 1 };
                t.put(&node_key(id), &r.encode())?;
            }
            Ok::<_, pnfs_kv::KvError>(())
        })
        .unwrap();
        register(&svc, "a");
        register(&svc, "b");
        svc.pnfs().registry.set_admin_state(1, AdminState::Draining).unwrap();
        let s = svc.status();
        assert_eq!((s.asr_status, s.asr_node_id), (adm_status::ADM_OK, 2));
        let nodes: Vec<(u32, bool, u64, bool)> =
            s.asr_nodes.iter().map(|n| (n.ani_node_id, n.ani_live, n.ani_epoch, n.ani_answering)).collect();
        assert_eq!(nodes, [(1, true, 1 << 32 | 7, false), (2, true, 2 << 32 | 7, true), (3, false, 0, false)]);
        assert_eq!(&s.asr_nodes[2].ani_peer[..], b"10.0.0.23:20495");
        assert_eq!((s.asr_ds_known, s.asr_ds_up, s.asr_ds_active, s.asr_ds_draining), (2, 2, 1, 1));
        assert_eq!((s.asr_capacity_bytes, s.asr_free_bytes), (200, 120));
        // The root and the export's directory.
        assert_eq!((s.asr_files, s.asr_placed_files), (2, 0));
        assert!(s.asr_resilver.is_empty() && s.asr_rebalance.is_empty());
    }

    #[test]
    fn targets_are_an_index_else_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Arc::new(MemStore::new()));
        for id in ["ds0", "2", "7"] {
            register(&svc, id);
        }
        // Indices 0, 1, 2 for ds0, "2", "7".
        let index = |t: &str| svc.resolve(t).map(|d| d.index).map_err(|(s, _)| s);
        assert_eq!(index("ds0"), Ok(0));
        assert_eq!(index("2"), Ok(2), "an index before an id");
        assert_eq!(index("id:2"), Ok(1));
        assert_eq!(index("7"), Ok(2), "no index 7: the id");
        assert_eq!(index("9"), Err(adm_status::ADM_NOENT));
        assert_eq!(index("id:9"), Err(adm_status::ADM_NOENT));
    }
}

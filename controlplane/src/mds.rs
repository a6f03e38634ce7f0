//! The metadata server object shared by every connection: namespace, data
//! store, client/session/open state, exports.

use crate::attrs::AttrContext;
use crate::config::MdsConfig;
use crate::datastore::{DataStore, LocalFileStore};
use crate::export::{Caller, Export};
use crate::fh::FileHandle;
use crate::keyspace::{self, BOOT_COUNT_KEY, SERVER_ID_KEY};
use crate::namespace::{Inode, Namespace, NewObject, NfsResult, SetAttrs, ROOT_INO};
use crate::pnfs::{striped::StripedStore, Pnfs, PnfsConfig};
use crate::state::{Effects, LayoutRecall, PendingRecall, StateCaps, StateChange, StateStore};
use pnfs_kv::KvStore;
use pnfs_protocol::seal::{ClusterKey, Purpose, TagKey};
use pnfs_protocol::wire::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Key prefix of persisted client records (see `keyspace`).
pub const CLIENT_RECORD_PREFIX: &[u8] = &[keyspace::CLIENT_RECORD];

/// Leases an idle client keeps its state when nobody conflicts with it.
const COURTESY_LEASES: u32 = 3;

/// How long a callback waits for the client's answer.
const CALLBACK_TIMEOUT_SECS: u64 = 5;
/// CB_LAYOUTRECALLs answered NFS4ERR_DELAY are sent again this many times
/// (after 50, 100, 200, 400 ms).
const RECALL_DELAY_RETRIES: u32 = 4;

pub struct Mds {
    pub cfg: MdsConfig,
    pub ns: Namespace,
    pub data: Arc<dyn DataStore>,
    /// The pNFS MDS role (mds.control_bind set): DS registry, stripe sets.
    pub pnfs: Option<Arc<Pnfs>>,
    state: StateStore,
    pub exports: Vec<Export>,
    pub pseudo: Export,
    /// The pseudo filesystem: the root and the directories on the way to
    /// each export root. Through the pseudo export (id 0, when "/" is not
    /// exported) only these are visible; anything else under them is not
    /// exported and is NOENT.
    pseudo_inos: std::collections::HashSet<u64>,
    /// Stable across restarts: clients recognise us after a reboot.
    pub server_owner: Vec<u8>,
    /// Changes every boot: clients resend UNSTABLE writes when it changes.
    pub write_verifier: [u8; 8],
    pub boot_epoch: u32,
    /// Seals and checks the filehandles this MDS hands out: a handle built
    /// off the wire without the cluster key is NFS4ERR_BADHANDLE.
    pub fh_key: TagKey,
    /// Backchannel calls (CB_LAYOUTRECALL) and their pending replies.
    pub callbacks: Arc<crate::callback::Callbacks>,
    /// This MDS, for work that outlives a request (recalls wait for client
    /// answers on a thread of their own, never on a request's thread).
    me: std::sync::Weak<Mds>,
    /// Unlinked inodes whose data is freed once the unlink is durable.
    unlinked: Arc<crate::unlinked::Unlinked>,
}


impl Mds {
    /// Opens the stores named in the config and resolves exports.
    pub fn open(cfg: MdsConfig) -> Result<Arc<Mds>, String> {
        std::fs::create_dir_all(&cfg.metadata_dir)
            .map_err(|e| format!("mds.metadata_dir {}: {e}", cfg.metadata_dir.display()))?;
        let store = crate::kv_backend::open_store(&cfg)?;
        let data = LocalFileStore::open(&cfg.data_dir, cfg.open_file_cache)
            .map_err(|e| format!("mds.data_dir {}: {e}", cfg.data_dir.display()))?;
        Self::with_stores(cfg, store, Arc::new(data))
    }

    pub fn with_stores(cfg: MdsConfig, store: Arc<dyn KvStore>, data: Arc<dyn DataStore>) -> Result<Arc<Mds>, String> {
        let key_path = cfg.cluster_key_path();
        if let Some(dir) = key_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("mds.cluster_key_file {}: {e}", key_path.display()))?;
        }
        let cluster_key =
            ClusterKey::load_or_create(&key_path).map_err(|e| format!("mds.cluster_key_file: {e}"))?;
        let ns = Namespace::open(store).map_err(|e| format!("metadata store: {e}"))?;
        let server_id = shared_server_id(&ns)?;
        let boots = ns
            .list_records(BOOT_COUNT_KEY)
            .map_err(|e| format!("metadata store: {e:?}"))?
            .pop()
            .and_then(|(_, v)| pnfs_kv::key::decode_u64_be(&v))
            .unwrap_or(0)
            + 1;
        ns.put_record(BOOT_COUNT_KEY, &pnfs_kv::key::u64_be(boots)).map_err(|e| format!("metadata store: {e:?}"))?;
        let boot_epoch = boots as u32;
        let mut write_verifier = [0u8; 8];
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        write_verifier[..4].copy_from_slice(&boot_epoch.to_be_bytes());
        write_verifier[4..].copy_from_slice(&(t as u32).to_be_bytes());

        let mut exports = Vec::new();
        let mut pseudo_inos = std::collections::HashSet::new();
        for (i, e) in cfg.exports.iter().enumerate() {
            let root_ino = mkdir_p(&ns, &e.path, &mut pseudo_inos).map_err(|s| format!("mds.exports[{i}].path {}: {s:?}", e.path))?;
            exports.push(Export::new(i as u16 + 1, e, root_ino));
        }
        let reclaimable: Vec<Vec<u8>> = ns
            .list_records(CLIENT_RECORD_PREFIX)
            .map_err(|e| format!("metadata store: {e:?}"))?
            .into_iter()
            .map(|(k, _)| k[CLIENT_RECORD_PREFIX.len()..].to_vec())
            .collect();
        // A cluster has no grace: its clients are adopted, not reclaimed.
        let reclaimable = if cfg.cluster.is_some() { vec![] } else { reclaimable };
        if !reclaimable.is_empty() {
            log::info!("{} client(s) may reclaim state; grace period {} s", reclaimable.len(), cfg.grace());
        }
        if cfg.layout.is_mirrored() && cfg.flex_segment_bytes < (1 << 40) {
            log::warn!(
                "mds.flex_segment_bytes = {}: Linux 6.1 clients send the last WRITE before a segment boundary to the next \
                 segment's data servers for all but one mirror (data lost; see controlplane/src/pnfs/mirror.rs); use the \
                 default (1 TiB, one segment per file) unless every client is known not to",
                cfg.flex_segment_bytes
            );
        }
        let pcfg = PnfsConfig {
            stripe_unit: cfg.stripe_unit,
            stripe_count: cfg.stripe_count,
            dead_after: Duration::from_millis(cfg.ds_dead_after_ms),
            lost_after: (cfg.ds_lost_after_ms != 0).then(|| Duration::from_millis(cfg.ds_lost_after_ms)),
            check_timeout: Duration::from_millis(cfg.ds_check_timeout_ms),
            layout: cfg.layout,
            flex_segment_bytes: cfg.flex_segment_bytes,
        };
        let pnfs = if cfg.pnfs_enabled() { Some(Pnfs::new(pcfg, ns.store().clone(), pnfs_protocol::mds_ds::epoch::control_epoch(cfg.cluster_node_id(), boots), cluster_key.clone())?) } else { None };
        let data: Arc<dyn DataStore> = match &pnfs {
            Some(p) => Arc::new(StripedStore::new(data, p.clone())),
            None => data,
        };
        let caps = StateCaps {
            max_clients: cfg.max_clients,
            max_clients_per_address: cfg.max_clients_per_address,
            max_sessions_per_client: cfg.max_sessions_per_client,
            max_states_per_client: cfg.max_states_per_client,
            max_states: cfg.max_states,
        };
        let mut state = StateStore::new(boot_epoch, reclaimable, Duration::from_secs(cfg.grace() as u64), caps);
        // A cluster writes every change through to the KV (`state::cluster`).
        state.set_journal(cfg.cluster.is_some());
        let mds = Arc::new_cyclic(|me| Mds {
            me: me.clone(),
            unlinked: Arc::default(),
            pseudo: Export::pseudo(ROOT_INO),
            pseudo_inos,
            ns,
            data,
            pnfs,
            state,
            exports,
            server_owner: server_id,
            write_verifier,
            boot_epoch,
            fh_key: cluster_key.derive(Purpose::MdsFileHandle),
            callbacks: Arc::new(crate::callback::Callbacks::new(Duration::from_secs(CALLBACK_TIMEOUT_SECS))),
            cfg,
        });
        if let Some(p) = &mds.pnfs {
            // Layouts naming a data server that died are recalled through it.
            p.watch_layouts(Arc::downgrade(&mds) as std::sync::Weak<dyn crate::pnfs::health::LayoutHolders>);
        }
        Ok(mds)
    }

    /// The state layer: every handler's way to clients, sessions, opens,
    /// locks and layouts. What its calls return in `Effects` is applied
    /// with [`Self::apply`].
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// Applies what a state call decided, with no state lock held: stateids
    /// allowed on or revoked from the data servers, layout recalls, sizes
    /// from the data servers, client records. An error writing a client
    /// record (CREATE_SESSION's, needed for reclaim) is returned. A
    /// cluster writes every record first (`cluster_write`).
    pub fn apply(&self, mut fx: Effects) -> NfsResult<()> {
        if fx.is_empty() {
            return Ok(());
        }
        if self.state.journaling() {
            // A cluster: the records first, then the rest (see `cluster_write`).
            let Some(fx) = self.cluster_write(fx)? else { return Ok(()) };
            return self.apply_after_write(fx);
        }
        let records = std::mem::take(&mut fx.records);
        self.apply_after_write(fx)?;
        let mut result = Ok(());
        for r in records {
            match r {
                StateChange::ClientConfirmed { owner } => {
                    if let Err(e) = self.ns.put_record(&client_record_key(&owner), b"1") {
                        result = Err(e);
                    }
                }
                StateChange::ClientForgotten { owner } => {
                    let _ = self.ns.delete_record(&client_record_key(&owner));
                }
                // The rest is volatile on a single MDS (journal only).
                _ => {}
            }
        }
        result
    }

    /// A cluster's write-through: inside a COMPOUND, `fx` joins the
    /// COMPOUND's gathering (written after its last operation, with its
    /// slot: `compound.rs`) and None is returned; outside one (the lease
    /// reaper, a recall's thread) its records are written now. A failed
    /// write is NFS4ERR_DELAY, with nothing of `fx` applied.
    fn cluster_write(&self, fx: Effects) -> NfsResult<Option<Effects>> {
        let Some(fx) = crate::state::cluster::Gather::offer(self.gather_key(), fx) else { return Ok(None) };
        self.write_records(&fx.records, None)?;
        Ok(Some(fx))
    }

    /// Writes `records` through to the KV (a cluster's; one transaction),
    /// with the owner rows of the clients they touch and of `session_client`.
    /// NFS4ERR_DELAY when it failed (the clients' copies here are dropped).
    pub fn write_records(&self, records: &[StateChange], session_client: Option<u64>) -> NfsResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let clients = crate::state::cluster::clients_of(records, session_client);
        match self.state.write_through(self.ns.store().as_ref(), self.cfg.cluster_node_id(), records, &clients) {
            Ok(_) => Ok(()),
            Err(_) => Err(nfsstat4::NFS4ERR_DELAY),
        }
    }

    /// What tells this MDS's gathering apart from another's on a thread.
    pub fn gather_key(&self) -> usize {
        self as *const Mds as usize
    }

    /// Applies everything of `fx` but its records (a cluster's are written
    /// already; a single MDS's are `apply`'s).
    pub fn apply_after_write(&self, mut fx: Effects) -> NfsResult<()> {
        fx.records.clear();
        if let Some(p) = &self.pnfs {
            for a in &fx.ds_allow {
                if let Ok(Some(set)) = p.stripe_set(a.ino) {
                    p.allow(a.clientid, a.ino, &set, &[(a.stateid.clone(), a.access)]);
                }
            }
            if !fx.ds_revoke.is_empty() && p.has_pushed() {
                let gone = p.take_pushed(&fx.ds_revoke);
                if !gone.is_empty() {
                    p.revoke(gone);
                }
            }
        }
        for ino in fx.size_from_ds {
            self.size_from_data_servers(ino);
        }
        for id in &fx.sessions_gone {
            self.callbacks.forget_session(id);
        }
        if !fx.recalls.is_empty() {
            self.send_layout_recalls(fx.recalls);
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.cfg.lease_seconds as u64)
    }

    /// The export a filehandle belongs to; STALE if it no longer exists.
    pub fn export(&self, id: u16) -> NfsResult<&Export> {
        if id == 0 {
            return Ok(self.root_export());
        }
        self.exports.get(id as usize - 1).ok_or(nfsstat4::NFS4ERR_STALE)
    }

    /// PUTROOTFH lands in an export of "/" when there is one, else the pseudo root.
    pub fn root_export(&self) -> &Export {
        self.exports.iter().find(|e| e.root_ino == ROOT_INO).unwrap_or(&self.pseudo)
    }

    /// False for an object reached through the pseudo export that is not a
    /// pseudo directory: not exported, so not to be seen.
    pub fn visible(&self, export_id: u16, ino: u64) -> bool {
        export_id != 0 || self.root_export().id != 0 || self.pseudo_inos.contains(&ino)
    }

    /// The export whose root is `ino`, if any (entering it by LOOKUP).
    pub fn export_rooted_at(&self, ino: u64) -> Option<&Export> {
        self.exports.iter().find(|e| e.root_ino == ino)
    }

    pub fn fh_for(&self, export_id: u16, inode: &Inode) -> FileHandle {
        FileHandle { export_id, ino: inode.ino, generation: inode.generation }
    }

    pub fn attr_context<'c>(&self, minor: u32, fh: &'c [u8], inode: &Inode) -> AttrContext<'c> {
        AttrContext {
            minor,
            fsid: (1, 0),
            lease_time: self.cfg.lease_seconds,
            fh,
            max_io: self.cfg.max_io_bytes,
            capacity: self.data.capacity(),
            space_used: if inode.kind == nfs_ftype4::NF4REG as u32 {
                self.data.space_used_for(inode.ino, inode.size)
            } else {
                4096
            },
            mounted_on_fileid: inode.ino,
            layout_blksize: self.pnfs.as_ref().map(|p| p.cfg.stripe_unit),
            flex_files: self.pnfs.as_ref().is_some_and(|p| p.cfg.layout.is_mirrored()),
        }
    }

    /// ACCESS4 bits `who` has on `inode` (RFC 8881 18.1), before read-only exports.
    pub fn access_bits(&self, inode: &Inode, who: &Caller) -> u32 {
        let perm = if who.is_root() {
            // Root may do anything, except execute a file nobody may execute.
            let x = if inode.is_dir() || inode.mode & 0o111 != 0 { 1 } else { 0 };
            6 | x
        } else if who.uid == inode.uid {
            (inode.mode >> 6) & 7
        } else if who.in_group(inode.gid) {
            (inode.mode >> 3) & 7
        } else {
            inode.mode & 7
        };
        let mut bits = 0;
        if perm & 4 != 0 {
            bits |= ACCESS4_READ | ACCESS4_XAREAD | ACCESS4_XALIST;
        }
        if perm & 2 != 0 {
            bits |= ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_XAWRITE;
            if inode.is_dir() {
                bits |= ACCESS4_DELETE;
            }
        }
        if perm & 1 != 0 {
            bits |= if inode.is_dir() { ACCESS4_LOOKUP } else { ACCESS4_EXECUTE };
        }
        bits
    }

    /// Fails with ACCESS unless `who` has every bit of `need` on `inode`.
    pub fn check_access(&self, inode: &Inode, who: &Caller, need: u32) -> NfsResult<()> {
        if self.access_bits(inode, who) & need == need {
            Ok(())
        } else {
            Err(nfsstat4::NFS4ERR_ACCESS)
        }
    }

    /// Creates a regular or special object and returns it.
    pub fn create_object(
        &self,
        dir: u64,
        name: &[u8],
        obj: &NewObject,
        attrs: &SetAttrs,
        who: &Caller,
        verifier: Option<[u8; 8]>,
    ) -> NfsResult<(u64, u64, Inode)> {
        let mut attrs = attrs.clone();
        // A non-root caller may not give the new object away.
        if !who.is_root() {
            if attrs.uid.is_some_and(|u| u != who.uid) {
                return Err(nfsstat4::NFS4ERR_PERM);
            }
            if attrs.gid.is_some_and(|g| !who.in_group(g)) {
                return Err(nfsstat4::NFS4ERR_PERM);
            }
        }
        let size = attrs.size.take();
        let (b, a, inode) = self.ns.create(dir, name, obj, &attrs, (who.uid, who.gid), verifier)?;
        if obj.kind == nfs_ftype4::NF4REG {
            self.record_placement_policy(dir, inode.ino);
        }
        if let Some(s) = size.filter(|s| *s > 0) {
            self.data.truncate(inode.ino, s).map_err(io_err)?;
            let set = SetAttrs { size: Some(s), ..Default::default() };
            return Ok((b, a, self.ns.setattr(inode.ino, &set, None)?));
        }
        Ok((b, a, inode))
    }

    /// pNFS placement of a new file: the nearest directory (walking up to
    /// the export root) with `pnfs.stripe_count` / `pnfs.stripe_unit` /
    /// `pnfs.layout` user xattrs (each on its own), else the export's
    /// setting, else the MDS-wide one. Only a policy differing from the
    /// MDS-wide one is recorded.
    fn record_placement_policy(&self, dir: u64, ino: u64) {
        let Some(p) = &self.pnfs else { return };
        let global = p.policy();
        let (mut count, mut unit, mut layout) = (None, None, None);
        let mut d = dir;
        for _ in 0..256 {
            let text = |name: &[u8]| self.ns.getxattr(d, name).ok().and_then(|v| String::from_utf8(v).ok());
            let read = |name: &[u8]| text(name).and_then(|s| s.trim().parse::<u32>().ok());
            count = count.or_else(|| read(b"pnfs.stripe_count"));
            unit = unit.or_else(|| read(b"pnfs.stripe_unit").filter(|u| crate::pnfs::check_stripe_unit(*u).is_ok()));
            layout = layout.or_else(|| text(b"pnfs.layout").and_then(|s| crate::pnfs::LayoutPolicy::parse(&s)));
            if let Some(x) = self.exports.iter().find(|x| x.root_ino == d) {
                let cfg = &self.cfg.exports[x.id as usize - 1];
                count = count.or(cfg.stripe_count);
                unit = unit.or(cfg.stripe_unit);
                break;
            }
            match self.ns.get(d) {
                Ok(i) if i.ino != ROOT_INO && i.parent != i.ino => d = i.parent,
                _ => break,
            }
        }
        let policy = crate::pnfs::Policy {
            stripe_count: count.unwrap_or(global.stripe_count),
            stripe_unit: unit.unwrap_or(global.stripe_unit),
            layout: layout.unwrap_or(global.layout),
        };
        if policy != global {
            if let Err(e) = p.set_hint(ino, policy) {
                log::warn!("recording the placement policy of inode {ino}: {e}");
            }
        }
    }

    /// Removes data objects whose inode no longer exists (a crash between a
    /// REMOVE's metadata commit and the data removal). Run at start.
    ///
    /// Also trims object bytes beyond the committed file size: a crash
    /// between a WRITE's data and its size commit leaves such bytes, and a
    /// later extending write would expose them inside the file. This must run
    /// before clients are served: while writes are in flight, bytes beyond
    /// the committed size are legitimate (parallel WRITEs land in any order).
    pub fn recover_data(&self) {
        let objs = match self.data.list_objects() {
            Ok(o) => o,
            Err(e) => return log::warn!("listing data objects: {e}"),
        };
        let (mut orphans, mut trimmed) = (0, 0);
        for ino in objs {
            match self.ns.get(ino) {
                Err(nfsstat4::NFS4ERR_STALE) => {
                    self.free_data_now(ino);
                    orphans += 1;
                }
                // Striped files are left alone: bytes on the data servers past
                // the MDS size may be acknowledged writes whose LAYOUTCOMMIT
                // the client will reclaim (they grow the size, never shrink it).
                Ok(_) if self.pnfs.as_ref().is_some_and(|p| matches!(p.placement(ino), Ok(Some(_)))) => {}
                Ok(i) if i.kind == nfs_ftype4::NF4REG as u32 && self.data.object_len(ino) > i.size => {
                    match self.data.truncate(ino, i.size) {
                        Ok(()) => trimmed += 1,
                        Err(e) => log::warn!("trimming data of inode {ino} to {}: {e}", i.size),
                    }
                }
                _ => {}
            }
        }
        if orphans + trimmed > 0 {
            log::info!("recovery: removed {orphans} orphaned data object(s), trimmed {trimmed} past their committed size");
        }
    }

    /// Deletes data of an inode whose last link went away, once the unlink
    /// is durable (it may be committed with durability deferred, server.rs),
    /// on a thread of its own: see `unlinked`.
    pub fn free_data(&self, ino: Option<u64>) {
        if let Some(ino) = ino {
            self.unlinked.free_later(self.me.clone(), ino);
        }
    }

    /// Deletes data of an inode whose unlink is durable.
    pub fn free_data_now(&self, ino: u64) {
        if let Err(e) = self.data.remove(ino) {
            log::warn!("removing data of inode {ino}: {e}");
        }
    }

    /// Drops clients whose lease expired, with their persisted records.
    /// Periodic lease reaping. A courteous server: a client silent for a
    /// lease keeps its state until another client needs it
    /// (`release_conflicting_expired`) or until COURTESY_LEASES leases passed.
    pub fn expire_leases(&self) {
        self.expire_idle(self.lease() * COURTESY_LEASES);
        self.revoke_ds_stateids();
    }

    /// Before granting something that may conflict: clients whose lease ran
    /// out lose their state now. Walks the clients (not the states); OPEN
    /// and LOCK use [`Self::release_expired_holders`] instead.
    pub fn release_conflicting_expired(&self) {
        self.expire_idle(self.lease());
    }

    /// Courtesy for an OPEN or LOCK refused because of `holders`: those
    /// whose lease ran out lose their state now. True if any did (the
    /// caller tries again, once).
    pub fn release_expired_holders(&self, holders: &[u64]) -> bool {
        if holders.is_empty() {
            return false;
        }
        let mut fx = Effects::default();
        let gone = self.state.release_if_expired(holders, self.lease(), &mut fx);
        for c in &gone {
            log::info!("client {:x} lease expired; its conflicting state was released", c.clientid);
        }
        let _ = self.apply(fx);
        !gone.is_empty()
    }

    fn expire_idle(&self, idle: Duration) {
        let st = self.state();
        let mut fx = Effects::default();
        for (clientid, ino) in st.fence_overdue(std::time::Instant::now(), &mut fx) {
            crate::metrics::metrics().recall("fenced");
            log::warn!("client {clientid:x} kept a recalled layout of inode {ino} for a lease; its stateids on the file are revoked");
        }
        crate::ops::deleg::revoke_overdue(self, &mut fx);
        // Once grace is over, records of clients that never came back go.
        st.forget_unreclaimed(&mut fx);
        for c in st.expire(idle, &mut fx) {
            log::info!("client {:x} lease expired; its state was released", c.clientid);
        }
        crate::metrics::metrics().layouts_outstanding.set(st.layouts_held() as i64);
        let _ = self.apply(fx);
    }

    /// A client that wrote to data servers went away (lease expiry, fencing)
    /// without LAYOUTCOMMIT: the data servers tell how far the file's data
    /// reaches, and the MDS keeps that data visible by growing the size.
    pub fn size_from_data_servers(&self, ino: u64) {
        let Some(p) = &self.pnfs else { return };
        if !matches!(p.placement(ino), Ok(Some(_))) {
            return;
        }
        let end = self.data.object_len(ino);
        match self.ns.get(ino) {
            Ok(i) if end > i.size => {
                log::info!("inode {ino}: size {} -> {end} from the data servers (writer gone without LAYOUTCOMMIT)", i.size);
                if let Err(e) = self.ns.note_write(ino, end) {
                    log::warn!("inode {ino}: updating size from the data servers: {e:?}");
                }
            }
            _ => {}
        }
    }

    /// Tight coupling: stateids allowed on data servers that no longer
    /// exist here are revoked there. Each state call returns the stateids it
    /// ended (`Effects::ds_revoke`); this walks every pushed stateid, as a
    /// periodic reconciliation (an allow that raced a CLOSE). Never holds a
    /// lock across the RPCs.
    pub fn revoke_ds_stateids(&self) {
        let Some(p) = &self.pnfs else { return };
        if !p.has_pushed() {
            return;
        }
        let gone = p.take_gone(|o| self.state.is_live(o));
        if !gone.is_empty() {
            p.revoke(gone);
        }
    }

    /// Layouts of clients other than `caller` on `ino` must be recalled
    /// before `why` (truncate, remove); see `Pnfs::recall_file_layouts`.
    pub fn recall_layouts_for(&self, ino: u64, caller: Option<u64>, why: &'static str) {
        self.recall_layouts(ino, caller, false, why);
    }

    /// Like `recall_layouts_for`, but only clients holding a read/write
    /// layout are asked (for their whole layout): a conflicting OPEN for
    /// write leaves read-only layout holders alone.
    pub fn recall_rw_layouts_for(&self, ino: u64, caller: Option<u64>, why: &'static str) {
        self.recall_layouts(ino, caller, true, why);
    }

    fn recall_layouts(&self, ino: u64, caller: Option<u64>, rw_only: bool, why: &'static str) {
        if self.pnfs.is_none() {
            return;
        }
        let mut fx = Effects::default();
        self.state.recall_layouts(ino, caller, rw_only, why, &mut fx);
        let _ = self.apply(fx);
        crate::cluster::peer_recall(ino, rw_only); // other nodes' clients
    }

    /// CB_LAYOUTRECALL to each client of `recalls` (RFC 8881 12.5.5); their
    /// seqids were bumped by the state layer. The data servers are told
    /// here; the callbacks wait for clients (which may need this MDS to
    /// answer them first), so they go from a thread of their own, never the
    /// request's.
    fn send_layout_recalls(&self, recalls: Vec<LayoutRecall>) {
        let Some(p) = &self.pnfs else { return };
        // (file, holder, why), one entry per holder of each file.
        let mut by_file: Vec<(u64, u64, &'static str)> = recalls.iter().map(|r| (r.ino, r.clientid, r.why)).collect();
        by_file.sort_unstable_by_key(|f| (f.0, f.1));
        by_file.dedup_by_key(|f| (f.0, f.1));
        for file in by_file.chunk_by(|a, b| a.0 == b.0) {
            let holders: Vec<u64> = file.iter().map(|f| f.1).collect();
            p.recall_file_layouts(file[0].0, &holders, file[0].2);
        }
        let Some(mds) = self.me.upgrade() else { return };
        let spawned = std::thread::Builder::new().name("layout-recall".into()).spawn(move || mds.deliver_layout_recalls(recalls));
        if let Err(e) = spawned {
            log::warn!("CB_LAYOUTRECALL: no thread for it ({e}); the layouts stay recalled on the DSes");
        }
    }

    /// The CB_LAYOUTRECALLs themselves. A client answering NOMATCHING_LAYOUT
    /// no longer holds it; the layout state goes. The others have a lease to
    /// return it ([`StateStore::fence_overdue`]).
    fn deliver_layout_recalls(&self, recalls: Vec<LayoutRecall>) {
        use crate::callback::{layout_recall_file, CbError};
        let metrics = crate::metrics::metrics();
        for r in recalls {
            let (ino, clientid, why) = (r.ino, r.clientid, r.why);
            // The inode may be gone already (REMOVE): the state names the filehandle.
            let fhb = FileHandle { export_id: r.fh_export, ino, generation: r.fh_generation }.to_bytes(&self.fh_key);
            let sid = stateid4 { seqid: r.seqid, other: r.other };
            // The type of the file's layouts (files, when its placement is gone with it).
            let kind = self.pnfs.as_ref().and_then(|p| p.placement(ino).ok().flatten()).map_or(layouttype4::LAYOUT4_NFSV4_1_FILES, |p| p.layout_type());
            let sessions = self.state.sessions_of(clientid);
            let mut outcome = Err(CbError::NoBackChannel);
            for s in &sessions {
                // NFS4ERR_DELAY: the client is busy with this layout (a
                // LAYOUTGET reply in flight, a return under way); ask again.
                for retry in 0..=RECALL_DELAY_RETRIES {
                    // The LAYOUTGET that granted this layout, when it came on this session.
                    let referring = crate::callback::referring_to(r.granted_by, &s.id);
                    outcome = self.callbacks.call_referring(
                        s,
                        vec![layout_recall_file(&fhb, sid.clone(), layoutiomode4::LAYOUTIOMODE4_ANY, kind)],
                        referring,
                    );
                    if outcome != Err(CbError::Status(nfsstat4::NFS4ERR_DELAY)) || retry == RECALL_DELAY_RETRIES {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50 << retry));
                }
                if !matches!(outcome, Err(CbError::NoBackChannel)) {
                    break;
                }
            }
            match outcome {
                Ok(()) => {
                    metrics.recall("ok");
                    log::debug!("layout of inode {ino} recalled from client {clientid:x} ({why})");
                }
                Err(CbError::Status(nfsstat4::NFS4ERR_NOMATCHING_LAYOUT)) => {
                    metrics.recall("nomatching");
                    let mut fx = Effects::default();
                    self.state.layout_forget(&r.other, &mut fx);
                    let _ = self.apply(fx);
                    continue;
                }
                Err(e) => {
                    metrics.recall("failed");
                    log::warn!("CB_LAYOUTRECALL of inode {ino} to client {clientid:x} ({why}) failed: {e:?}");
                }
            }
            // The client has a lease's time to return the layout.
            let deadline = std::time::Instant::now() + self.lease();
            self.state.note_recall(PendingRecall { other: r.other, clientid, ino, deadline });
        }
    }
}

/// The server id (EXCHANGE_ID's server owner major id and scope), made by
/// the first start of the first node: every node of a cluster answers with
/// the same (one transaction: two nodes starting together agree).
fn shared_server_id(ns: &Namespace) -> Result<Vec<u8>, String> {
    pnfs_kv::transact(ns.store().as_ref(), 8, |txn: &mut dyn pnfs_kv::KvTxn| {
        if let Some(id) = txn.get(SERVER_ID_KEY)? {
            return Ok(id);
        }
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let id = format!("pnfsd-{:x}-{:x}", t, std::process::id()).into_bytes();
        txn.put(SERVER_ID_KEY, &id)?;
        Ok(id)
    })
    .map_err(|e: pnfs_kv::KvError| format!("metadata store: {e}"))
}

/// Key of a client's persisted record (reclaim after a restart).
pub fn client_record_key(owner: &[u8]) -> Vec<u8> {
    let mut k = CLIENT_RECORD_PREFIX.to_vec();
    k.extend_from_slice(owner);
    k
}

/// Offline namespace check of the store named by `cfg` (server stopped).
pub fn fsck(cfg: &MdsConfig) -> Result<Vec<String>, String> {
    let store = crate::kv_backend::open_existing_store(cfg)?;
    let ns = Namespace::open(store).map_err(|e| format!("metadata store: {e}"))?;
    ns.check_consistency().map_err(|e| format!("metadata store: {e:?}"))
}

/// Maps a data store error to an NFS status. A data server that cannot be
/// reached (down, restarting, not answering) is NFS4ERR_DELAY: file data
/// has one copy, on its DSes, so the client waits and retries (as a hard
/// mount does) instead of handing EIO to the application.
pub fn io_err(e: std::io::Error) -> nfsstat4 {
    use std::io::ErrorKind::*;
    if crate::pnfs::health::is_lost_data(&e) {
        return nfsstat4::NFS4ERR_IO; // logged (rate-limited) where raised
    }
    if matches!(e.kind(), ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | TimedOut | BrokenPipe | UnexpectedEof) {
        log::warn!("data store: {e}: answering NFS4ERR_DELAY");
        return nfsstat4::NFS4ERR_DELAY;
    }
    log::error!("data store: {e}");
    match e.raw_os_error() {
        Some(libc::ENOSPC) => nfsstat4::NFS4ERR_NOSPC,
        Some(libc::EDQUOT) => nfsstat4::NFS4ERR_DQUOT,
        Some(libc::EFBIG) => nfsstat4::NFS4ERR_FBIG,
        Some(libc::EOPNOTSUPP) => nfsstat4::NFS4ERR_NOTSUPP,
        _ => nfsstat4::NFS4ERR_IO,
    }
}

/// Creates `path` as needed; every directory on the way (root and the
/// export root included) goes into `on_path`.
fn mkdir_p(ns: &Namespace, path: &str, on_path: &mut std::collections::HashSet<u64>) -> NfsResult<u64> {
    let mut ino = ROOT_INO;
    on_path.insert(ino);
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        ino = match ns.lookup(ino, comp.as_bytes()) {
            Ok(i) => i.ino,
            Err(nfsstat4::NFS4ERR_NOENT) => {
                let obj = NewObject { kind: nfs_ftype4::NF4DIR, symlink: vec![], rdev: (0, 0) };
                let attrs = SetAttrs { mode: Some(0o777), ..Default::default() };
                ns.create(ino, comp.as_bytes(), &obj, &attrs, (0, 0), None)?.2.ino
            }
            Err(e) => return Err(e),
        };
        on_path.insert(ino);
    }
    Ok(ino)
}

//! Two MDS nodes on one shared in-memory KV (`cluster.rs`): a client's
//! session moves from node 1 to node 2 and carries on there; node 1 finds
//! out at its next write for that client and drops its copy. And a single
//! MDS writes no state row.

use crate::compound::{CompoundOutcome, ConnInfo, Dispatcher};
use crate::config::{ClusterConfig, MdsConfig};
use crate::datastore::LocalFileStore;
use crate::keyspace;
use crate::mds::Mds;
use pnfs_kv::MemStore;
use pnfs_kv::{KvError, KvStore, KvTxn};
use pnfs_protocol::rpc::Credential;
use pnfs_protocol::session::{CREATE_SESSION4_FLAG_CONN_BACK_CHAN, CREATE_SESSION4_FLAG_PERSIST};
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::{encode_to_vec, Decoder, Opaque, XdrDecode};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn config(dir: &Path, node: Option<u32>) -> MdsConfig {
    let text = format!(
        "bind = \"127.0.0.1:1\"\nmetadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data{1}\"\n\
         [[exports]]\npath = \"/export\"\nroot_squash = false\n",
        dir.display(),
        node.unwrap_or(0)
    );
    let mut cfg: MdsConfig = toml::from_str(&text).unwrap();
    cfg.cluster = node.map(|node_id| ClusterConfig {
        node_id,
        nodes: vec!["127.0.0.1:20495".into(), "127.0.0.2:20495".into()],
        vips: vec![],
        vip_interface: "lo".into(),
        vip_prefix_len: 24,
        heartbeat_ms: 500,
        lease_ms: 1500,
    });
    cfg
}

/// An MDS on `kv`, its metadata key and data under `dir`.
pub(super) fn node(dir: &Path, kv: &Arc<MemStore>, id: Option<u32>) -> (Arc<Mds>, Dispatcher) {
    node_on(dir, kv.clone(), id)
}

pub(super) fn node_on(dir: &Path, store: Arc<dyn KvStore>, id: Option<u32>) -> (Arc<Mds>, Dispatcher) {
    node_with(dir, store, id, |_| {})
}

/// [`node_on`] with its configuration changed by `tune`.
pub(super) fn node_with(dir: &Path, store: Arc<dyn KvStore>, id: Option<u32>, tune: impl FnOnce(&mut MdsConfig)) -> (Arc<Mds>, Dispatcher) {
    let mut cfg = config(dir, id);
    tune(&mut cfg);
    let data = LocalFileStore::open(&cfg.data_dir, cfg.open_file_cache).unwrap();
    (Mds::with_stores(cfg, store, Arc::new(data)).unwrap(), Dispatcher::new())
}

pub(super) fn flaky_store(mem: &Arc<MemStore>) -> Arc<FlakyStore> {
    Arc::new(FlakyStore { inner: mem.clone(), down: AtomicBool::new(false), writes: AtomicUsize::new(0) })
}

fn root() -> Credential {
    Credential::Sys { uid: 0, gid: 0, gids: vec![], machine: b"test".to_vec() }
}

/// Runs `ops` on a node, on connection `conn`; the COMPOUND4res bytes.
pub(super) fn call(n: &(Arc<Mds>, Dispatcher), conn: u64, ops: Vec<nfs_argop4<'_>>) -> Vec<u8> {
    let args = encode_to_vec(&COMPOUND4args { tag: Opaque::borrowed(b"t"), minorversion: 1, argarray: ops }).unwrap();
    let info = ConnInfo { id: conn, peer: "127.0.0.1".parse().unwrap() };
    match n.1.run(&n.0, &info, root(), &args) {
        CompoundOutcome::Reply(r) => r,
        CompoundOutcome::Garbage => panic!("garbage"),
    }
}

pub(super) fn res(bytes: &[u8]) -> COMPOUND4res<'_> {
    COMPOUND4res::decode(&mut Decoder::new(bytes)).unwrap()
}

pub(super) fn seq(sid: [u8; 16], slot: u32, seqid: u32, cache: bool) -> nfs_argop4<'static> {
    nfs_argop4::OP_SEQUENCE(SEQUENCE4args { sa_sessionid: sid, sa_sequenceid: seqid, sa_slotid: slot, sa_highest_slotid: 3, sa_cachethis: cache })
}

fn attrs(n: u32) -> channel_attrs4 {
    channel_attrs4 {
        ca_headerpadsize: 0,
        ca_maxrequestsize: 1 << 20,
        ca_maxresponsesize: 1 << 20,
        ca_maxresponsesize_cached: 8192,
        ca_maxoperations: 16,
        ca_maxrequests: n,
        ca_rdma_ird: vec![],
    }
}

const OWNER: &[u8] = b"cluster test client";

fn exchange_id(n: &(Arc<Mds>, Dispatcher)) -> EXCHANGE_ID4resok<'static> {
    exchange_id_as(n, OWNER)
}

/// EXCHANGE_ID on `n` for the client `owner`.
pub(super) fn exchange_id_as(n: &(Arc<Mds>, Dispatcher), owner: &[u8]) -> EXCHANGE_ID4resok<'static> {
    let eid = EXCHANGE_ID4args {
        eia_clientowner: client_owner4 { co_verifier: [1; 8], co_ownerid: Opaque::borrowed(owner) },
        eia_flags: 0,
        eia_state_protect: state_protect4_a::SP4_NONE,
        eia_client_impl_id: vec![],
    };
    let r = call(n, 1, vec![nfs_argop4::OP_EXCHANGE_ID(eid)]);
    match &res(&r).resarray[0] {
        nfs_resop4::OP_EXCHANGE_ID(EXCHANGE_ID4res::NFS4_OK(ok)) => EXCHANGE_ID4resok {
            eir_clientid: ok.eir_clientid,
            eir_sequenceid: ok.eir_sequenceid,
            eir_flags: ok.eir_flags,
            eir_state_protect: state_protect4_r::SP4_NONE,
            eir_server_owner: server_owner4 { so_minor_id: ok.eir_server_owner.so_minor_id, so_major_id: ok.eir_server_owner.so_major_id.to_vec().into() },
            eir_server_scope: ok.eir_server_scope.to_vec().into(),
            eir_server_impl_id: vec![],
        },
        other => panic!("EXCHANGE_ID: {other:?}"),
    }
}

/// CREATE_SESSION on `n` for `eid`'s client (with a back channel when
/// `back`), then RECLAIM_COMPLETE: the session ID and the CREATE_SESSION flags.
pub(super) fn create_session(n: &(Arc<Mds>, Dispatcher), eid: &EXCHANGE_ID4resok, back: bool) -> ([u8; 16], u32) {
    let cs = CREATE_SESSION4args {
        csa_clientid: eid.eir_clientid,
        csa_sequence: eid.eir_sequenceid,
        csa_flags: if back { CREATE_SESSION4_FLAG_CONN_BACK_CHAN } else { 0 },
        csa_fore_chan_attrs: attrs(4),
        csa_back_chan_attrs: attrs(1),
        csa_cb_program: 0x4000_0000,
        csa_sec_parms: vec![callback_sec_parms4::AUTH_NONE],
    };
    let r = call(n, 1, vec![nfs_argop4::OP_CREATE_SESSION(cs)]);
    let (sid, flags) = match &res(&r).resarray[0] {
        nfs_resop4::OP_CREATE_SESSION(CREATE_SESSION4res::NFS4_OK(ok)) => (ok.csr_sessionid, ok.csr_flags),
        other => panic!("CREATE_SESSION: {other:?}"),
    };
    let r = call(n, 1, vec![seq(sid, 0, 1, false), nfs_argop4::OP_RECLAIM_COMPLETE(RECLAIM_COMPLETE4args { rca_one_fs: false })]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
    (sid, flags)
}

/// OPEN (create) of /export/f on slot 0 at `seqid` (cached): its
/// stateid and filehandle.
pub(super) fn open_file(n: &(Arc<Mds>, Dispatcher), clientid: u64, sid: [u8; 16], seqid: u32) -> (stateid4, Vec<u8>) {
    let open = nfs_argop4::OP_OPEN(OPEN4args {
        seqid: 0,
        share_access: OPEN4_SHARE_ACCESS_BOTH,
        share_deny: OPEN4_SHARE_DENY_NONE,
        owner: state_owner4 { clientid, owner: Opaque::borrowed(b"open owner") },
        openhow: openflag4::OPEN4_CREATE(createhow4::UNCHECKED4(fattr4 { attrmask: vec![], attr_vals: Opaque::owned(vec![]) })),
        claim: open_claim4::CLAIM_NULL(Opaque::borrowed(b"f")),
    });
    let lookup = nfs_argop4::OP_LOOKUP(LOOKUP4args { objname: Opaque::borrowed(b"export") });
    let r = call(n, 1, vec![seq(sid, 0, seqid, true), nfs_argop4::OP_PUTROOTFH, lookup, open, nfs_argop4::OP_GETFH]);
    let (st, ops) = status_of(&r);
    assert_eq!(st, nfsstat4::NFS4_OK, "{ops:?}");
    let open_sid = match &ops[3] {
        nfs_resop4::OP_OPEN(OPEN4res::NFS4_OK(ok)) => ok.stateid.clone(),
        other => panic!("OPEN: {other:?}"),
    };
    match &ops[4] {
        nfs_resop4::OP_GETFH(GETFH4res::NFS4_OK(ok)) => (open_sid, ok.object.to_vec()),
        other => panic!("GETFH: {other:?}"),
    }
}

/// LOCK (new lock owner) of bytes 0..10 for write with `open_sid`.
fn lock_args(clientid: u64, open_sid: &stateid4) -> nfs_argop4<'static> {
    nfs_argop4::OP_LOCK(LOCK4args {
        locktype: nfs_lock_type4::WRITE_LT,
        reclaim: false,
        offset: 0,
        length: 10,
        locker: locker4::TRUE(open_to_lock_owner4 {
            open_seqid: 0,
            open_stateid: open_sid.clone(),
            lock_seqid: 0,
            lock_owner: lock_owner4 { clientid, owner: Opaque::borrowed(b"lock owner") },
        }),
    })
}

/// The status of result `i` (its first word after the opnum).
pub(super) fn status_of(bytes: &[u8]) -> (nfsstat4, Vec<nfs_resop4<'_>>) {
    let r = res(bytes);
    (r.status, r.resarray)
}

pub(super) fn state_rows(kv: &MemStore) -> usize {
    let mut t = kv.begin().unwrap();
    [keyspace::STATE_CLIENT, keyspace::STATE_SESSION, keyspace::STATE, keyspace::STATE_BYTE_LOCKS, keyspace::STATE_OWNER, keyspace::STATE_FILE]
        .iter()
        .map(|p| t.scan_prefix(&[*p], usize::MAX).unwrap().len())
        .sum()
}

#[test]
fn a_session_moves_to_another_node_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(MemStore::new());
    let n1 = node(dir.path(), &kv, Some(1));
    let n2 = node(dir.path(), &kv, Some(2));

    // Node 1: EXCHANGE_ID, CREATE_SESSION (PERSIST granted), RECLAIM_COMPLETE.
    let eid1 = exchange_id(&n1);
    let (sid, cs_flags) = create_session(&n1, &eid1, true);
    assert_ne!(cs_flags & CREATE_SESSION4_FLAG_PERSIST, 0, "a cluster grants PERSIST");
    let flags = |r: &[u8]| match &res(r).resarray[0] {
        nfs_resop4::OP_SEQUENCE(SEQUENCE4res::NFS4_OK(ok)) => ok.sr_status_flags,
        other => panic!("SEQUENCE: {other:?}"),
    };
    let r = call(&n1, 1, vec![seq(sid, 1, 1, false)]);
    assert_eq!(flags(&r) & SEQ4_STATUS_CB_PATH_DOWN, 0, "node 1 has the back channel");

    // OPEN (create), WRITE, LOCK on node 1.
    let (open_sid, fh) = open_file(&n1, eid1.eir_clientid, sid, 2);
    let putfh = || nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::owned(fh.clone()) });
    let write = nfs_argop4::OP_WRITE(WRITE4args { stateid: open_sid.clone(), offset: 0, stable: stable_how4::FILE_SYNC4, data: Opaque::borrowed(b"data") });
    let r = call(&n1, 1, vec![seq(sid, 1, 2, false), putfh(), write]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
    let r = call(&n1, 1, vec![seq(sid, 0, 3, true), putfh(), lock_args(eid1.eir_clientid, &open_sid)]);
    let (st, ops) = status_of(&r);
    assert_eq!(st, nfsstat4::NFS4_OK);
    let lock_sid = match &ops[2] {
        nfs_resop4::OP_LOCK(LOCK4res::NFS4_OK(ok)) => ok.lock_stateid.clone(),
        other => panic!("LOCK: {other:?}"),
    };
    // A read-only COMPOUND after it on slot 0 is not written.
    let r = call(&n1, 1, vec![seq(sid, 0, 4, false), putfh(), nfs_argop4::OP_GETFH]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);

    // The client's address moves to node 2 (a new connection), same session.
    let r = call(&n2, 7, vec![seq(sid, 0, 5, false)]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK, "no BADSESSION after the move");
    assert_ne!(flags(&r) & SEQ4_STATUS_CB_PATH_DOWN, 0, "no back channel on node 2 yet: the client binds one");
    let bind = nfs_argop4::OP_BIND_CONN_TO_SESSION(BIND_CONN_TO_SESSION4args {
        bctsa_sessid: sid,
        bctsa_dir: channel_dir_from_client4::CDFC4_FORE_OR_BOTH,
        bctsa_use_conn_in_rdma_mode: false,
    });
    let r = call(&n2, 7, vec![bind]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
    let r = call(&n2, 7, vec![seq(sid, 0, 6, false)]);
    assert_eq!(flags(&r) & SEQ4_STATUS_CB_PATH_DOWN, 0, "bound");
    // Node 1's lock and open stateids work on node 2.
    let unlock = nfs_argop4::OP_LOCKU(LOCKU4args { locktype: nfs_lock_type4::WRITE_LT, seqid: 0, lock_stateid: lock_sid.clone(), offset: 0, length: 10 });
    let locku_args = vec![seq(sid, 2, 1, true), putfh(), unlock];
    let locku_reply = call(&n2, 7, locku_args.clone());
    let (st, ops) = status_of(&locku_reply);
    assert_eq!(st, nfsstat4::NFS4_OK, "LOCKU with node 1's lock stateid: {ops:?}");
    let close = nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: open_sid.clone() });
    let r = call(&n2, 7, vec![seq(sid, 3, 1, false), putfh(), close]);
    let (st, ops) = status_of(&r);
    assert_eq!(st, nfsstat4::NFS4_OK, "CLOSE with node 1's open stateid: {ops:?}");

    // EXCHANGE_ID on node 2: the same server owner and scope, the same client.
    let eid2 = exchange_id(&n2);
    assert_eq!(eid2.eir_server_owner.so_major_id.to_vec(), eid1.eir_server_owner.so_major_id.to_vec());
    assert_eq!(eid2.eir_server_owner.so_minor_id, eid1.eir_server_owner.so_minor_id);
    assert_eq!(eid2.eir_server_scope.to_vec(), eid1.eir_server_scope.to_vec());
    assert_eq!(eid2.eir_clientid, eid1.eir_clientid, "node 2 knows the client: no new client ID");

    // Node 3 (a third node on the same KV) adopts the session at once with
    // a retransmission of the LOCKU: the cached reply, byte for byte.
    let n3 = node(dir.path(), &kv, Some(3));
    assert_eq!(call(&n3, 9, locku_args), locku_reply, "the retransmission gets the reply written with the slot");
    // And a retransmission of a request whose reply was not cached.
    let r = call(&n3, 9, vec![seq(sid, 3, 1, false)]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4ERR_RETRY_UNCACHED_REP);
    // Node 1 still has its copy; its next write for the client (a lease
    // expiry here) finds node 3 holds it and drops the copy, writing nothing.
    assert!(n1.0.state().client(eid1.eir_clientid).is_ok());
    let rows = state_rows(&kv);
    n1.0.state().age_client(eid1.eir_clientid, std::time::Duration::from_secs(3600));
    n1.0.expire_leases();
    assert!(n1.0.state().client(eid1.eir_clientid).is_err(), "node 1 dropped its copy");
    assert_eq!(state_rows(&kv), rows, "node 1 wrote nothing for a client held elsewhere");
    // Node 3 carries on.
    let r = call(&n3, 9, vec![seq(sid, 0, 7, false), putfh(), nfs_argop4::OP_GETFH]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
    // A second session, made on node 3, is found by node 2, which holds
    // the client already (from before) but not that session.
    let cs = CREATE_SESSION4args {
        csa_clientid: eid1.eir_clientid,
        csa_sequence: eid1.eir_sequenceid.wrapping_add(1),
        csa_flags: 0,
        csa_fore_chan_attrs: attrs(2),
        csa_back_chan_attrs: attrs(1),
        csa_cb_program: 0x4000_0000,
        csa_sec_parms: vec![callback_sec_parms4::AUTH_NONE],
    };
    let r = call(&n3, 9, vec![nfs_argop4::OP_CREATE_SESSION(cs)]);
    let sid2 = match &res(&r).resarray[0] {
        nfs_resop4::OP_CREATE_SESSION(CREATE_SESSION4res::NFS4_OK(ok)) => ok.csr_sessionid,
        other => panic!("CREATE_SESSION on node 3: {other:?}"),
    };
    assert!(n2.0.state().client(eid1.eir_clientid).is_ok() && n2.0.state().session(&sid2).is_none());
    let r = call(&n2, 7, vec![seq(sid2, 0, 1, false), putfh(), nfs_argop4::OP_GETFH]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK, "node 2 loads the session it lacked");
}

/// A single MDS (no [mds.cluster]) writes no state row, whatever its
/// clients do: the journal is off.
#[test]
fn a_single_mds_writes_no_state_rows() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(MemStore::new());
    let n = node(dir.path(), &kv, None);
    assert!(!n.0.state().journaling());
    let eid = exchange_id(&n);
    let (sid, cs_flags) = create_session(&n, &eid, false);
    assert_eq!(cs_flags & CREATE_SESSION4_FLAG_PERSIST, 0, "a single MDS does not persist sessions");
    let (open_sid, fh) = open_file(&n, eid.eir_clientid, sid, 2);
    let r = call(&n, 1, vec![seq(sid, 0, 3, true), nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::owned(fh) }), lock_args(eid.eir_clientid, &open_sid)]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
    assert_eq!(state_rows(&kv), 0, "no client, session, slot, state or owner row");
    // Only the reclaim record of the confirmed client (as before).
    let mut t = kv.begin().unwrap();
    assert_eq!(t.scan_prefix(&[keyspace::CLIENT_RECORD], usize::MAX).unwrap().len(), 1);
}

/// A store whose commits that write fail while `down` is set (a KV that
/// refuses writes: reads of the namespace still work), counting the
/// commits that wrote.
pub(super) struct FlakyStore {
    inner: Arc<MemStore>,
    pub(super) down: AtomicBool,
    writes: AtomicUsize,
}

struct FlakyTxn<'a> {
    inner: Box<dyn KvTxn + 'a>,
    down: &'a AtomicBool,
    writes: &'a AtomicUsize,
    wrote: bool,
}

impl KvStore for FlakyStore {
    fn begin(&self) -> pnfs_kv::Result<Box<dyn KvTxn + '_>> {
        Ok(Box::new(FlakyTxn { inner: self.inner.begin()?, down: &self.down, writes: &self.writes, wrote: false }))
    }
}

impl KvTxn for FlakyTxn<'_> {
    fn get(&mut self, key: &[u8]) -> pnfs_kv::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> pnfs_kv::Result<()> {
        self.wrote = true;
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> pnfs_kv::Result<()> {
        self.wrote = true;
        self.inner.delete(key)
    }
    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> pnfs_kv::Result<Vec<pnfs_kv::KvPair>> {
        self.inner.scan(start, end, limit)
    }
    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> pnfs_kv::Result<Vec<Vec<u8>>> {
        self.inner.scan_keys(start, end, limit)
    }
    fn commit(self: Box<Self>) -> pnfs_kv::Result<()> {
        if self.wrote && self.down.load(Ordering::SeqCst) {
            return Err(KvError::Unavailable("test: the KV is down".into()));
        }
        self.writes.fetch_add(self.wrote as usize, Ordering::SeqCst);
        self.inner.commit()
    }
}

/// A state change the KV did not take is NFS4ERR_DELAY, not success: the
/// node drops its copy of the client (it may be ahead of the KV), and the
/// client's retry (same slot and seqid) reloads the client from the KV and
/// runs as a new request. A node that cannot reach the KV to adopt a
/// session answers DELAY too, never BADSESSION.
#[test]
fn a_write_the_kv_refused_fails_the_compound_and_the_retry_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemStore::new());
    let flaky = flaky_store(&mem);
    let n1 = node_on(dir.path(), flaky.clone(), Some(1));
    let eid = exchange_id(&n1);
    let (sid, _) = create_session(&n1, &eid, true);
    let (open_sid, fh) = open_file(&n1, eid.eir_clientid, sid, 2);
    let putfh = || nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::owned(fh.clone()) });
    let rows = state_rows(&mem);

    flaky.down.store(true, Ordering::SeqCst);
    // (A LOCK's claim would fail first, before anything changed: `xnode_tests`.)
    let close = || vec![seq(sid, 0, 3, true), putfh(), nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: open_sid.clone() })];
    let r = call(&n1, 1, close());
    let (st, ops) = status_of(&r);
    assert_eq!(st, nfsstat4::NFS4ERR_DELAY, "{ops:?}");
    assert!(matches!(ops[..], [nfs_resop4::OP_SEQUENCE(SEQUENCE4res::default(nfsstat4::NFS4ERR_DELAY))]), "{ops:?}");
    assert!(n1.0.state().client(eid.eir_clientid).is_err(), "the copy ahead of the KV is gone");
    assert_eq!(state_rows(&mem), rows, "nothing written");
    // Still down: adopting the session back needs the KV: DELAY again.
    let (st, _) = status_of(&call(&n1, 1, close()));
    assert_eq!(st, nfsstat4::NFS4ERR_DELAY, "no BADSESSION while the KV is away");

    flaky.down.store(false, Ordering::SeqCst);
    let r = call(&n1, 1, close());
    let (st, ops) = status_of(&r);
    assert_eq!(st, nfsstat4::NFS4_OK, "the retry reloads the client and runs: {ops:?}");
    assert!(matches!(&ops[2], nfs_resop4::OP_CLOSE(CLOSE4res::NFS4_OK(_))), "{ops:?}");
    assert!(state_rows(&mem) < rows, "the close is written");
}

/// A COMPOUND that changes state costs a cluster one writing KV
/// transaction (its records, its slot, the owner row together), and an
/// OPEN one more (its claim, checked against other nodes' clients:
/// `xnode.rs`); one that changes nothing costs none; a single MDS writes
/// nothing for either.
/// Prints the rate of OPEN+CLOSE pairs both ways (in-memory KV).
#[test]
fn one_kv_transaction_per_state_changing_compound() {
    for cluster in [None, Some(1)] {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemStore::new());
        let counted = flaky_store(&mem);
        let n = node_on(dir.path(), counted.clone(), cluster);
        let eid = exchange_id(&n);
        let (sid, _) = create_session(&n, &eid, false);
        let (open_sid, fh) = open_file(&n, eid.eir_clientid, sid, 2);
        let putfh = || nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::owned(fh.clone()) });
        let close = |s: &stateid4| nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: s.clone() });
        let r = call(&n, 1, vec![seq(sid, 1, 1, false), putfh(), close(&open_sid)]);
        assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
        let pairs = 300u32;
        let writes_before = counted.writes.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        for i in 0..pairs {
            let open = nfs_argop4::OP_OPEN(OPEN4args {
                seqid: 0,
                share_access: OPEN4_SHARE_ACCESS_READ,
                share_deny: OPEN4_SHARE_DENY_NONE,
                owner: state_owner4 { clientid: eid.eir_clientid, owner: Opaque::borrowed(b"o") },
                openhow: openflag4::default(opentype4::OPEN4_NOCREATE),
                claim: open_claim4::CLAIM_FH,
            });
            let r = call(&n, 1, vec![seq(sid, 0, 3 + 2 * i, false), putfh(), open]);
            let (st, ops) = status_of(&r);
            assert_eq!(st, nfsstat4::NFS4_OK, "{ops:?}");
            let s = match &ops[2] {
                nfs_resop4::OP_OPEN(OPEN4res::NFS4_OK(ok)) => ok.stateid.clone(),
                other => panic!("OPEN: {other:?}"),
            };
            let r = call(&n, 1, vec![seq(sid, 0, 4 + 2 * i, false), putfh(), close(&s)]);
            assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
            // Read-only: no write.
            let r = call(&n, 1, vec![seq(sid, 2, 1 + i, false), putfh(), nfs_argop4::OP_GETFH]);
            assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
        }
        let took = started.elapsed();
        let writes = counted.writes.load(Ordering::SeqCst) - writes_before;
        let expected = if cluster.is_some() { 3 * pairs as usize } else { 0 };
        assert_eq!(writes, expected, "writing KV transactions for {pairs} OPEN + CLOSE pairs (cluster: {cluster:?})");
        println!(
            "{}: {pairs} OPEN+CLOSE pairs and GETFHs in {took:?} ({:.0} pairs/s, dev profile, in-memory KV), {writes} writing KV transactions",
            if cluster.is_some() { "cluster node" } else { "single MDS" },
            pairs as f64 / took.as_secs_f64()
        );
    }
}

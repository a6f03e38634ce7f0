//! Conflicts between clients held by different nodes (`xnode.rs`): two MDS
//! nodes on one shared in-memory KV, a client on each, and the share
//! reservations, byte-range locks and delegations of one seen by the
//! other; racing claims of two nodes; stale rows of a client nobody holds.

use super::cluster_tests::{call, create_session, exchange_id_as, flaky_store, node, node_on, node_with, open_file, res, seq, status_of};
use super::xnode::{Conflict, Share, DELEG_NONE, DELEG_READ, DELEG_WRITE};
use super::ByteLock;
use crate::compound::Dispatcher;
use crate::keyspace;
use crate::mds::Mds;
use pnfs_kv::{KvStore, KvTxn, MemStore};
use pnfs_protocol::xdr::Opaque;
use pnfs_protocol::wire::*;
use std::sync::{Arc, Barrier};
use std::time::Duration;

type Node = (Arc<Mds>, Dispatcher);

/// A client on node `n`: its clientid and session (with a back channel
/// when `back`: it may get delegations).
struct Client {
    id: u64,
    sid: [u8; 16],
    /// Next seqid of slot 0.
    seq: u32,
}

fn client(n: &Node, owner: &[u8], back: bool) -> Client {
    let eid = exchange_id_as(n, owner);
    let (sid, _) = create_session(n, &eid, back);
    Client { id: eid.eir_clientid, sid, seq: 2 }
}

/// A directory for the nodes' files and a KV where nodes 1 and 2 are live.
fn live_kv() -> (tempfile::TempDir, Arc<MemStore>) {
    let kv = Arc::new(MemStore::new());
    nodes_live(&kv);
    (tempfile::tempdir().unwrap(), kv)
}

/// Marks nodes 1 and 2 live (their `N` records), as the cluster runtime does.
fn nodes_live(kv: &MemStore) {
    let mut t = kv.begin().unwrap();
    for id in [1, 2] {
        t.put(&crate::cluster::membership::node_key(id), b"live").unwrap();
    }
    t.commit().unwrap();
}

/// Two nodes of a cluster on one KV; client A on node 1 has created
/// /export/f (open for read and write, deny none): A, B (on node 2), the
/// file's handle and A's open stateid.
fn two_nodes() -> (tempfile::TempDir, Arc<MemStore>, Node, Node, Client, Client, Vec<u8>, stateid4) {
    let (dir, kv) = live_kv();
    let n1 = node(dir.path(), &kv, Some(1));
    let n2 = node(dir.path(), &kv, Some(2));
    let mut a = client(&n1, b"client A", false);
    let b = client(&n2, b"client B", false);
    let (open_sid, fh) = open_file(&n1, a.id, a.sid, a.seq);
    a.seq += 1;
    (dir, kv, n1, n2, a, b, fh, open_sid)
}

fn putfh(fh: &[u8]) -> nfs_argop4<'static> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::owned(fh.to_vec()) })
}

/// Runs `ops` after SEQUENCE on `c`'s slot 0: the COMPOUND's results.
fn run(n: &Node, c: &mut Client, ops: Vec<nfs_argop4<'static>>) -> Vec<u8> {
    let mut all = vec![seq(c.sid, 0, c.seq, false)];
    all.extend(ops);
    c.seq += 1;
    call(n, 1, all)
}

fn open_args(c: &Client, owner: &'static [u8], access: u32, deny: u32) -> nfs_argop4<'static> {
    nfs_argop4::OP_OPEN(OPEN4args {
        seqid: 0,
        share_access: access,
        share_deny: deny,
        owner: state_owner4 { clientid: c.id, owner: Opaque::borrowed(owner) },
        openhow: openflag4::default(opentype4::OPEN4_NOCREATE),
        claim: open_claim4::CLAIM_FH,
    })
}

/// OPEN of `fh` by `c` on `n`: its stateid and the kind of delegation
/// granted, or the error.
fn open(n: &Node, c: &mut Client, fh: &[u8], access: u32, deny: u32) -> Result<(stateid4, u32), nfsstat4> {
    let args = open_args(c, b"owner", access, deny);
    let r = run(n, c, vec![putfh(fh), args]);
    match &res(&r).resarray[2] {
        nfs_resop4::OP_OPEN(OPEN4res::NFS4_OK(ok)) => Ok((ok.stateid.clone(), deleg_kind(&ok.delegation))),
        nfs_resop4::OP_OPEN(OPEN4res::default(e)) => Err(*e),
        other => panic!("OPEN: {other:?}"),
    }
}

/// The kind of delegation an OPEN granted (`xnode::DELEG_*`).
fn deleg_kind(d: &open_delegation4<'_>) -> u32 {
    match d {
        open_delegation4::OPEN_DELEGATE_READ(_) => DELEG_READ,
        open_delegation4::OPEN_DELEGATE_WRITE(_) => DELEG_WRITE,
        _ => DELEG_NONE,
    }
}

fn close(n: &Node, c: &mut Client, fh: &[u8], s: &stateid4) {
    let r = run(n, c, vec![putfh(fh), nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: s.clone() })]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
}

/// The `f` row of `clientid` on the file of `ino`.
fn share_row(kv: &MemStore, ino: u64, clientid: u64) -> Option<Share> {
    let mut t = kv.begin().unwrap();
    let v = t.get(&super::xnode::share_key(ino, clientid)).unwrap()?;
    match super::records::decode_row(&super::xnode::share_key(ino, clientid), &v).unwrap() {
        super::StateChange::FileShare { share, .. } => Some(share),
        other => panic!("{other:?}"),
    }
}

fn ino_of(n: &Node, fh: &[u8]) -> u64 {
    crate::fh::FileHandle::parse(fh, &n.0.fh_key).expect("our handle").ino
}

const R: u32 = OPEN4_SHARE_ACCESS_READ;
const W: u32 = OPEN4_SHARE_ACCESS_WRITE;

#[test]
fn share_reservations_of_another_nodes_client_deny() {
    let (_d, kv, n1, n2, mut a, mut b, fh, a_open) = two_nodes();
    let ino = ino_of(&n1, &fh);
    assert_eq!(share_row(&kv, ino, a.id), Some(Share { access: R | W, deny: 0, deleg: 0 }), "A's share is in the KV");
    // A (node 1) reads and denies writers now (its other open owner, which
    // writes, closes first: share reservations bind a client's owners too).
    close(&n1, &mut a, &fh, &a_open);
    let (a_open, _) = open(&n1, &mut a, &fh, R, OPEN4_SHARE_DENY_WRITE).expect("A denies writers");
    assert_eq!(share_row(&kv, ino, a.id).map(|s| s.deny), Some(OPEN4_SHARE_DENY_WRITE));
    // B (node 2): writing is denied, reading is not; denying reads is
    // denied too (A reads).
    assert_eq!(open(&n2, &mut b, &fh, W, 0).err(), Some(nfsstat4::NFS4ERR_SHARE_DENIED));
    assert_eq!(open(&n2, &mut b, &fh, R, OPEN4_SHARE_DENY_READ).err(), Some(nfsstat4::NFS4ERR_SHARE_DENIED));
    let (b_read, _) = open(&n2, &mut b, &fh, R, 0).expect("a read open is not denied");
    assert_eq!(share_row(&kv, ino, b.id), Some(Share { access: R, deny: 0, deleg: 0 }), "B's refused claims left nothing");
    // And the other way round: A on node 1 may not deny reads (B reads).
    assert_eq!(open(&n1, &mut a, &fh, R, OPEN4_SHARE_DENY_READ).err(), Some(nfsstat4::NFS4ERR_SHARE_DENIED));
    // A closes: B may write.
    close(&n1, &mut a, &fh, &a_open);
    assert_eq!(share_row(&kv, ino, a.id), None, "A's row went with its last open");
    let (b_both, _) = open(&n2, &mut b, &fh, W, 0).expect("nobody denies writers now");
    assert_eq!(b_both.other, b_read.other, "B's open upgraded");
    close(&n2, &mut b, &fh, &b_both);
}

/// LOCK (new lock owner `owner`) of [offset, offset + len) for write.
fn lock_args(clientid: u64, open_sid: &stateid4, owner: &'static [u8], offset: u64, len: u64) -> nfs_argop4<'static> {
    nfs_argop4::OP_LOCK(LOCK4args {
        locktype: nfs_lock_type4::WRITE_LT,
        reclaim: false,
        offset,
        length: len,
        locker: locker4::TRUE(open_to_lock_owner4 {
            open_seqid: 0,
            open_stateid: open_sid.clone(),
            lock_seqid: 0,
            lock_owner: lock_owner4 { clientid, owner: Opaque::borrowed(owner) },
        }),
    })
}

/// LOCK's result: the lock stateid, or the lock in the way (clientid,
/// owner, offset, length), or another error.
fn lock(n: &Node, c: &mut Client, fh: &[u8], args: nfs_argop4<'static>) -> Result<stateid4, Result<(u64, Vec<u8>, u64, u64), nfsstat4>> {
    let r = run(n, c, vec![putfh(fh), args]);
    match &res(&r).resarray[2] {
        nfs_resop4::OP_LOCK(LOCK4res::NFS4_OK(ok)) => Ok(ok.lock_stateid.clone()),
        nfs_resop4::OP_LOCK(LOCK4res::NFS4ERR_DENIED(d)) => Err(Ok((d.owner.clientid, d.owner.owner.to_vec(), d.offset, d.length))),
        nfs_resop4::OP_LOCK(LOCK4res::default(e)) => Err(Err(*e)),
        other => panic!("LOCK: {other:?}"),
    }
}

fn lockt(n: &Node, c: &mut Client, fh: &[u8], offset: u64, len: u64) -> nfsstat4 {
    let args = nfs_argop4::OP_LOCKT(LOCKT4args {
        locktype: nfs_lock_type4::WRITE_LT,
        offset,
        length: len,
        owner: lock_owner4 { clientid: c.id, owner: Opaque::borrowed(b"tester") },
    });
    let r = run(n, c, vec![putfh(fh), args]);
    match &res(&r).resarray[2] {
        nfs_resop4::OP_LOCKT(LOCKT4res::NFS4_OK) => nfsstat4::NFS4_OK,
        nfs_resop4::OP_LOCKT(LOCKT4res::NFS4ERR_DENIED(_)) => nfsstat4::NFS4ERR_DENIED,
        nfs_resop4::OP_LOCKT(LOCKT4res::default(e)) => *e,
        other => panic!("LOCKT: {other:?}"),
    }
}

#[test]
fn byte_range_locks_of_another_nodes_client_conflict() {
    let (_d, kv, n1, n2, mut a, mut b, fh, a_open) = two_nodes();
    let (aid, bid) = (a.id, b.id);
    let (b_open, _) = open(&n2, &mut b, &fh, R | W, 0).unwrap();
    // LOCKs with bad stateids (another client's open; an open stateid as a
    // lock stateid) leave no lock in the KV.
    let bad = nfs_argop4::OP_LOCK(LOCK4args {
        locktype: nfs_lock_type4::WRITE_LT,
        reclaim: false,
        offset: 0,
        length: 10,
        locker: locker4::FALSE(exist_lock_owner4 { lock_stateid: b_open.clone(), lock_seqid: 0 }),
    });
    assert_eq!(lock(&n2, &mut b, &fh, bad).err(), Some(Err(nfsstat4::NFS4ERR_BAD_STATEID)));
    assert_eq!(lock(&n2, &mut b, &fh, lock_args(bid, &a_open, b"B locker", 0, 10)).err(), Some(Err(nfsstat4::NFS4ERR_BAD_STATEID)));
    let mut t = kv.begin().unwrap();
    assert!(t.scan_prefix(&[keyspace::STATE_BYTE_LOCKS], usize::MAX).unwrap().is_empty(), "no lock row");
    drop(t);
    let a_lock = lock(&n1, &mut a, &fh, lock_args(aid, &a_open, b"A locker", 0, 10)).expect("A locks 0..10");
    // B (node 2) overlapping: denied, naming A's lock.
    let denied = lock(&n2, &mut b, &fh, lock_args(bid, &b_open, b"B locker", 5, 10)).err();
    assert_eq!(denied, Some(Ok((a.id, b"A locker".to_vec(), 0, 10))));
    assert_eq!(lockt(&n2, &mut b, &fh, 9, 1), nfsstat4::NFS4ERR_DENIED);
    assert_eq!(lockt(&n2, &mut b, &fh, 10, 5), nfsstat4::NFS4_OK);
    // Not overlapping: granted; and now A is denied B's range.
    let b_lock = lock(&n2, &mut b, &fh, lock_args(bid, &b_open, b"B locker", 10, 10)).expect("B locks 10..20");
    let denied = lock(&n1, &mut a, &fh, nfs_argop4::OP_LOCK(LOCK4args {
        locktype: nfs_lock_type4::WRITE_LT,
        reclaim: false,
        offset: 15,
        length: 1,
        locker: locker4::FALSE(exist_lock_owner4 { lock_stateid: a_lock.clone(), lock_seqid: 0 }),
    }))
    .err();
    assert_eq!(denied, Some(Ok((b.id, b"B locker".to_vec(), 10, 10))));
    assert_eq!(lockt(&n1, &mut a, &fh, 0, u64::MAX), nfsstat4::NFS4ERR_DENIED, "B's lock, seen from node 1");
    // A unlocks: B may take 0..10.
    let r = run(&n1, &mut a, vec![
        putfh(&fh),
        nfs_argop4::OP_LOCKU(LOCKU4args { locktype: nfs_lock_type4::WRITE_LT, seqid: 0, lock_stateid: a_lock, offset: 0, length: 10 }),
    ]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
    let relock = nfs_argop4::OP_LOCK(LOCK4args {
        locktype: nfs_lock_type4::WRITE_LT,
        reclaim: false,
        offset: 0,
        length: 10,
        locker: locker4::FALSE(exist_lock_owner4 { lock_stateid: b_lock, lock_seqid: 0 }),
    });
    assert!(lock(&n2, &mut b, &fh, relock).is_ok(), "A's lock is gone from the KV");
}

/// DELEGRETURN of `c`'s delegation on `ino` (node `n` holds it).
fn delegreturn(n: &Node, c: &mut Client, fh: &[u8], ino: u64) {
    let other = n.0.state().delegs().held(c.id, ino).expect("a delegation held");
    let sid = stateid4 { seqid: 0, other };
    let r = run(n, c, vec![putfh(fh), nfs_argop4::OP_DELEGRETURN(DELEGRETURN4args { deleg_stateid: sid })]);
    assert_eq!(status_of(&r).0, nfsstat4::NFS4_OK);
}

fn recalled(n: &Node, c: &Client, ino: u64) -> bool {
    let st = n.0.state();
    let delegs = st.delegs();
    delegs.held(c.id, ino).and_then(|o| delegs.get(&o).map(|d| d.recall_deadline.is_some())).unwrap_or(false)
}

#[test]
fn a_delegation_of_another_nodes_client_is_recalled_not_overrun() {
    let (dir, kv) = live_kv();
    // No cooldown after a recall: A gets delegations again at once.
    let n1 = node_with(dir.path(), kv.clone(), Some(1), |c| c.delegation_recall_cooldown_seconds = 0);
    let n2 = node(dir.path(), &kv, Some(2));
    // A's connection (1) to node 1 carries its back channel (CB_RECALLs
    // go nowhere); its create gets a write delegation.
    let (queue, _replies) = crate::server::ReplyQueue::new();
    n1.0.callbacks.register_conn(1, queue);
    let mut a = client(&n1, b"client A", true);
    let (created, fh) = open_file(&n1, a.id, a.sid, a.seq);
    a.seq += 1;
    let ino = ino_of(&n1, &fh);
    assert_eq!(share_row(&kv, ino, a.id).map(|s| s.deleg), Some(DELEG_WRITE), "A's write delegation is in the KV");
    // B (node 2, no back channel: no delegations): even a read open waits
    // for the recall of a write delegation, and so does a SETATTR.
    let mut b = client(&n2, b"client B", false);
    assert_eq!(open(&n2, &mut b, &fh, R, 0).err(), Some(nfsstat4::NFS4ERR_DELAY));
    let setattr = || {
        nfs_argop4::OP_SETATTR(SETATTR4args {
            stateid: stateid4 { seqid: 0, other: [0; 12] },
            obj_attributes: fattr4 { attrmask: vec![], attr_vals: Opaque::owned(vec![]) },
        })
    };
    assert_eq!(status_of(&run(&n2, &mut b, vec![putfh(&fh), setattr()])).0, nfsstat4::NFS4ERR_DELAY);
    // What node 1 does when node 2's recall arrives.
    assert!(!recalled(&n1, &a, ino));
    crate::ops::deleg::recall_for_peer(&n1.0, ino, false);
    assert!(recalled(&n1, &a, ino), "recalled on node 1");
    delegreturn(&n1, &mut a, &fh, ino);
    assert_eq!(share_row(&kv, ino, a.id).map(|s| s.deleg), Some(0));
    let (b_read, _) = open(&n2, &mut b, &fh, R, 0).expect("no delegation in the way");
    assert_eq!(status_of(&run(&n2, &mut b, vec![putfh(&fh), setattr()])).0, nfsstat4::NFS4_OK);
    // A opens for reading again: a read delegation (B only reads, on node 2).
    close(&n1, &mut a, &fh, &created);
    let (a_read, deleg) = open(&n1, &mut a, &fh, R, 0).unwrap();
    assert_eq!(deleg, DELEG_READ);
    assert_eq!(share_row(&kv, ino, a.id), Some(Share { access: R, deny: 0, deleg: DELEG_READ }));
    // B writing waits for its recall; reading does not.
    assert_eq!(open(&n2, &mut b, &fh, W, 0).err(), Some(nfsstat4::NFS4ERR_DELAY));
    crate::ops::deleg::recall_for_peer(&n1.0, ino, false);
    assert!(!recalled(&n1, &a, ino), "a read open by a peer's client recalls no read delegation");
    crate::ops::deleg::recall_for_peer(&n1.0, ino, true);
    assert!(recalled(&n1, &a, ino));
    delegreturn(&n1, &mut a, &fh, ino);
    let (b_write, _) = open(&n2, &mut b, &fh, W, 0).expect("no delegation in the way");
    assert_eq!(b_write.other, b_read.other, "B's open upgraded");
    // Beside B's write open (node 2), A gets no delegation, and its claim
    // does not stay in the KV.
    close(&n1, &mut a, &fh, &a_read);
    let (_, deleg) = open(&n1, &mut a, &fh, R, 0).unwrap();
    assert_eq!(deleg, DELEG_NONE, "B writes through node 2");
    assert_eq!(share_row(&kv, ino, a.id), Some(Share { access: R, deny: 0, deleg: 0 }));
    close(&n2, &mut b, &fh, &b_write);
}

/// What a racer claims.
#[derive(Clone, Copy, Debug)]
enum Race {
    /// A share denying everything to others.
    Share,
    /// A write lock of bytes 0..10.
    Lock,
    /// A read open with a write delegation (node 1) against a plain read
    /// and write open (node 2).
    Deleg,
}

/// A KV whose commits wait a little: transactions started together all
/// read before any commits (the race a loaded machine may or may not make).
struct SlowCommits(Arc<MemStore>);

struct SlowTxn<'a>(Box<dyn KvTxn + 'a>);

impl KvStore for SlowCommits {
    fn begin(&self) -> pnfs_kv::Result<Box<dyn KvTxn + '_>> {
        Ok(Box::new(SlowTxn(self.0.begin()?)))
    }
}

impl KvTxn for SlowTxn<'_> {
    fn get(&mut self, key: &[u8]) -> pnfs_kv::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> pnfs_kv::Result<()> {
        self.0.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> pnfs_kv::Result<()> {
        self.0.delete(key)
    }
    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> pnfs_kv::Result<Vec<pnfs_kv::KvPair>> {
        self.0.scan(start, end, limit)
    }
    fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> pnfs_kv::Result<Vec<Vec<u8>>> {
        self.0.scan_keys(start, end, limit)
    }
    fn commit(self: Box<Self>) -> pnfs_kv::Result<()> {
        std::thread::sleep(Duration::from_millis(3));
        self.0.commit()
    }
}

/// Two nodes claim conflicting shares, locks, or a delegation and an open,
/// of the same files at the same moment (both read before either commits),
/// many times: exactly one of each pair wins, never both.
#[test]
fn racing_claims_of_two_nodes_never_both_win() {
    let (dir, kv) = live_kv();
    let n1 = node(dir.path(), &kv, Some(1));
    let n2 = node(dir.path(), &kv, Some(2));
    // Clients neither node holds (as if each were held by the other).
    let (x, y) = (0x1111, 0x2222);
    let rounds = 40u64;
    let barrier = Arc::new(Barrier::new(2));
    // Ok(whether it won) or the conflict.
    let slow = Arc::new(SlowCommits(kv.clone()));
    let racer = |m: Arc<Mds>, me: u64, race: Race| {
        let (kv, barrier) = (slow.clone(), barrier.clone());
        std::thread::spawn(move || {
            let st = m.state();
            (0..rounds)
                .map(|ino| {
                    barrier.wait();
                    let ino = 1000 * (race as u64 + 1) + ino;
                    match race {
                        Race::Lock => {
                            let l = ByteLock { clientid: me, owner: b"o".to_vec(), start: 0, end: 10, write: true };
                            st.claim_lock(kv.as_ref(), ino, me, &[l], (0, 10, true)).map(|_| true)
                        }
                        Race::Share => st.claim_open(kv.as_ref(), ino, me, R | W, OPEN4_SHARE_DENY_BOTH, None).map(|_| true),
                        // Node 1 wins with the delegation (an open alone is no win).
                        Race::Deleg if me == x => st.claim_open(kv.as_ref(), ino, me, R, 0, Some(true)),
                        Race::Deleg => st.claim_open(kv.as_ref(), ino, me, R | W, 0, None).map(|_| true),
                    }
                })
                .collect::<Vec<Result<bool, Conflict>>>()
        })
    };
    for race in [Race::Share, Race::Lock, Race::Deleg] {
        let (one, two) = (racer(n1.0.clone(), x, race), racer(n2.0.clone(), y, race));
        let (one, two) = (one.join().unwrap(), two.join().unwrap());
        for (i, (p, q)) in one.iter().zip(&two).enumerate() {
            let won = |r: &Result<bool, Conflict>| matches!(r, Ok(true));
            assert!(won(p) != won(q), "file {i} ({race:?}): exactly one wins: {p:?} / {q:?}");
            for r in [p, q] {
                if let Err(e) = r {
                    assert!(matches!(e, Conflict::Share { .. } | Conflict::Lock(_) | Conflict::Deleg { .. }), "{e:?}");
                }
            }
        }
    }
}

/// Rows of a client no live node holds: kept while its node lives or for
/// a lease after it was first found so, then expired (all its rows);
/// rows with no owner row at all go at once.
#[test]
fn stale_rows_of_a_client_nobody_holds_expire_after_a_lease() {
    let (dir, kv) = live_kv();
    let n2 = node(dir.path(), &kv, Some(2));
    let st = n2.0.state();
    let (ghost, of_node3, of_node1) = (0x5151, 0x5252, 0x5353);
    let mut t = kv.begin().unwrap();
    for id in [ghost, of_node3, of_node1] {
        let rec = super::records::encode(&super::StateChange::FileShare { ino: 7, clientid: id, share: Share { access: R, deny: W, deleg: DELEG_WRITE } });
        let super::Record::Put { key, value } = rec else { unreachable!() };
        t.put(&key, &value).unwrap();
        let locks = super::records::encode(&super::StateChange::ByteLocks {
            ino: 7,
            clientid: id,
            locks: vec![ByteLock { clientid: id, owner: b"o".to_vec(), start: 0, end: 1, write: true }],
        });
        let super::Record::Put { key, value } = locks else { unreachable!() };
        t.put(&key, &value).unwrap();
    }
    // Node 3 has no `N` record (dead); node 1 is live.
    t.put(&keyspace::with_u64(keyspace::STATE_OWNER, of_node3), &3u32.to_be_bytes()).unwrap();
    t.put(&keyspace::with_u64(keyspace::STATE_OWNER, of_node1), &1u32.to_be_bytes()).unwrap();
    t.commit().unwrap();
    let lease = Duration::from_secs(3600);
    match st.claim_open(kv.as_ref(), 7, 0x9, W, 0, None) {
        Err(Conflict::Deleg { mut holders }) => {
            holders.sort();
            assert_eq!(holders, vec![ghost, of_node3, of_node1]);
        }
        other => panic!("{other:?}"),
    }
    // The ghost (no owner row) goes at once; node 3's client waits a lease;
    // node 1's stays.
    assert!(st.expire_stale(kv.as_ref(), 2, &[ghost, of_node3, of_node1], lease));
    assert!(!st.expire_stale(kv.as_ref(), 2, &[of_node3, of_node1], lease), "within the lease");
    assert!(st.expire_stale(kv.as_ref(), 2, &[of_node3, of_node1], Duration::ZERO), "a lease after it was first found");
    let mut t = kv.begin().unwrap();
    let left: Vec<Vec<u8>> = [keyspace::STATE_FILE, keyspace::STATE_BYTE_LOCKS, keyspace::STATE_OWNER]
        .iter()
        .flat_map(|p| t.scan_keys_prefix(&[*p], usize::MAX).unwrap())
        .collect();
    let of = |id: u64| left.iter().filter(|k| k.ends_with(&id.to_be_bytes())).count();
    assert_eq!((of(ghost), of(of_node3), of(of_node1)), (0, 0, 3), "{left:02x?}");
    // Node 1's client still holds a write delegation: DELAY (recall) still.
    assert!(matches!(st.claim_open(kv.as_ref(), 7, 0x9, R, 0, None), Err(Conflict::Deleg { holders }) if holders == vec![of_node1]));
    // Once it is gone too, the open is claimed.
    let mut t = kv.begin().unwrap();
    t.delete(&super::xnode::share_key(7, of_node1)).unwrap();
    t.commit().unwrap();
    assert!(st.claim_open(kv.as_ref(), 7, 0x9, R, 0, Some(true)).unwrap(), "a write delegation may be claimed");
    assert_eq!(share_row(&kv, 7, 0x9), Some(Share { access: R, deny: 0, deleg: DELEG_WRITE }));
}

/// A LOCK or OPEN whose claim the KV refuses is NFS4ERR_DELAY, and
/// nothing changed here: the client keeps its copy (unlike a failed
/// write-through, which drops it) and holds no new lock or share.
#[test]
fn a_claim_the_kv_refuses_is_delay_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemStore::new());
    nodes_live(&mem);
    let flaky = flaky_store(&mem);
    let n1 = node_on(dir.path(), flaky.clone(), Some(1));
    let mut a = client(&n1, b"client A", false);
    let (a_open, fh) = open_file(&n1, a.id, a.sid, a.seq);
    a.seq += 1;
    let (ino, aid) = (ino_of(&n1, &fh), a.id);
    flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = lock(&n1, &mut a, &fh, lock_args(aid, &a_open, b"A locker", 0, 10));
    assert_eq!(r.err(), Some(Err(nfsstat4::NFS4ERR_DELAY)));
    assert_eq!(open(&n1, &mut a, &fh, R, OPEN4_SHARE_DENY_WRITE).err(), Some(nfsstat4::NFS4ERR_DELAY));
    let st = n1.0.state();
    assert!(st.client(a.id).is_ok(), "the client stays");
    assert!(st.locks_on(ino).is_empty(), "no lock taken");
    assert_eq!(st.open_access_of(a.id, ino), R | W, "the open is as it was");
    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(lock(&n1, &mut a, &fh, lock_args(aid, &a_open, b"A locker", 0, 10)).is_ok());
    assert_eq!(st.locks_on(ino).len(), 1);
}

//! Tests of the state layer: conflicts, upgrades and downgrades, lock
//! ranges, expiry, caps, indexes after removal, and that an operation's
//! cost does not grow with the states held (table entries visited).

use super::*;
use pnfs_protocol::wire::{client_owner4, state_protect4_a, EXCHANGE_ID4args};
use pnfs_protocol::wire::{OPEN4_SHARE_ACCESS_READ as R, OPEN4_SHARE_ACCESS_WRITE as W};

const LEASE: Duration = Duration::from_secs(60);

fn store(caps: StateCaps) -> StateStore {
    StateStore::new(5, vec![], LEASE, caps)
}

fn limits() -> ChannelLimits {
    ChannelLimits { max_request: 4096, max_response: 4096, max_response_cached: 0, max_ops: 8, max_requests: 1 }
}

pub(super) fn exchange_args(owner: &[u8], verifier: u8) -> EXCHANGE_ID4args<'_> {
    EXCHANGE_ID4args {
        eia_clientowner: client_owner4 { co_verifier: [verifier; 8], co_ownerid: owner.into() },
        eia_flags: 0,
        eia_state_protect: state_protect4_a::SP4_NONE,
        eia_client_impl_id: vec![],
    }
}

/// A client (of `addr`) through EXCHANGE_ID, unconfirmed.
fn exchange(st: &StateStore, owner: &str, addr: &str) -> NfsResult<u64> {
    let mut fx = Effects::default();
    st.exchange_id(&exchange_args(owner.as_bytes(), 0), None, addr.parse().unwrap(), LEASE, &mut fx).map(|ok| ok.clientid)
}

/// A confirmed client with one session, done reclaiming: ready for state.
fn client(st: &StateStore, owner: &str) -> (u64, SessionId) {
    let id = exchange(st, owner, "127.0.0.1").unwrap();
    let sid = session(st, id, 1).unwrap();
    st.reclaim_complete(id, &mut Effects::default()).unwrap();
    (id, sid)
}

fn session(st: &StateStore, clientid: u64, seq: u32) -> NfsResult<SessionId> {
    use pnfs_protocol::nfs41::sessions::CreateSessionCtx;
    use pnfs_protocol::session::ServerLimits;
    use pnfs_protocol::wire::CREATE_SESSION4args;
    let mut fx = Effects::default();
    let a = CREATE_SESSION4args {
        csa_clientid: clientid,
        csa_sequence: seq,
        csa_flags: 0,
        csa_fore_chan_attrs: limits().to_attrs(),
        csa_back_chan_attrs: limits().to_attrs(),
        csa_cb_program: 0,
        csa_sec_parms: vec![],
    };
    let ctx = CreateSessionCtx {
        principal: None,
        conn: 1,
        minor: 1,
        limits: ServerLimits { max_record: 4096, max_ops: 8, slots: 1 },
        max_sessions_per_client: st.caps.max_sessions_per_client,
        persist: false,
    };
    // The reply starts with the new session ID.
    let (bytes, _) = st.create_session(&a, &ctx, &mut fx)?;
    let got: SessionId = bytes[..16].try_into().unwrap();
    assert!(fx.records.contains(&StateChange::ClientConfirmed { owner: st.client(clientid).unwrap().record().owner }) || seq > 1);
    Ok(got)
}

fn open(st: &StateStore, clientid: u64, ino: u64, owner: &str, access: u32, deny: u32) -> Result<stateid4, OpenRefused> {
    let c = st.client(clientid).unwrap();
    st.open(&c, ino, owner.as_bytes(), access, deny, false, &mut Effects::default())
}

fn layout(st: &StateStore, clientid: u64, ino: u64, via: &stateid4, want: u32) -> NfsResult<(stateid4, Vec<(stateid4, u32)>)> {
    st.layout_grant(clientid, ino, via, want, 1, 1, None, &mut Effects::default())
}

fn visits<T>(f: impl FnOnce() -> T) -> (T, u64) {
    VISITS.with(|v| v.set(0));
    let r = f();
    (r, VISITS.with(|v| v.get()))
}

/// Every index agrees with the stateid table (run after removals).
pub(crate) fn assert_consistent(st: &StateStore) {
    let mut total = 0;
    let mut per_client: HashMap<u64, usize> = HashMap::new();
    for sh in st.files.all() {
        total += sh.states.len();
        for (other, rec) in &sh.states {
            *per_client.entry(rec.clientid).or_default() += 1;
            let cof = &sh.files[&rec.ino].by_client[&rec.clientid];
            assert!(cof.others().any(|o| o == other), "state {other:?} missing from its file index");
        }
        for (ino, file) in &sh.files {
            assert!(!file.is_empty(), "empty file entry {ino} left behind");
            for cof in file.by_client.values() {
                assert!(!cof.is_empty());
                for o in cof.others() {
                    assert_eq!(sh.states[o].ino, *ino);
                }
            }
            let mut share = opens::ShareCounts::default();
            for cof in file.by_client.values() {
                for (_, o) in &cof.opens {
                    if let StateKind::Open { access, deny, .. } = sh.states[o].kind {
                        share.add(access, deny);
                    }
                }
            }
            assert_eq!(share, file.share, "share counts of inode {ino}");
        }
    }
    assert_eq!(st.states_held(), total);
    for (id, n) in per_client {
        assert_eq!(st.held_by(id), n, "client {id:x}");
    }
}

#[test]
fn share_reservations_upgrades_and_downgrades() {
    let st = store(StateCaps::default());
    let (a, _) = client(&st, "a");
    let (b, _) = client(&st, "b");
    // a reads, denying writers.
    let s1 = open(&st, a, 7, "oa", R, W).unwrap();
    assert_eq!(s1.seqid, 1);
    let denied = open(&st, b, 7, "ob", W, 0).unwrap_err();
    assert_eq!(denied, OpenRefused { status: nfsstat4::NFS4ERR_SHARE_DENIED, holders: vec![a] });
    // b may read, but not deny reading to a.
    let sb = open(&st, b, 7, "ob", R, 0).unwrap();
    assert_eq!(open(&st, b, 7, "ob", R, R).unwrap_err().status, nfsstat4::NFS4ERR_SHARE_DENIED);
    // The same owner upgrades its own open: one stateid, next seqid; its own
    // deny does not stop it.
    let s2 = open(&st, a, 7, "oa", R | W, W).unwrap();
    assert_eq!((s2.other, s2.seqid), (s1.other, 2));
    // Another owner of the same client is an "other" for share checks.
    assert_eq!(open(&st, a, 7, "oa2", W, 0).unwrap_err().status, nfsstat4::NFS4ERR_SHARE_DENIED);
    // Downgrade: to a subset only.
    let mut fx = Effects::default();
    assert_eq!(st.open_downgrade(a, 7, &s2, R | W, R, &mut fx), Err(nfsstat4::NFS4ERR_INVAL));
    assert_eq!(st.open_downgrade(a, 7, &s1, R, 0, &mut fx), Err(nfsstat4::NFS4ERR_OLD_STATEID));
    let s3 = st.open_downgrade(a, 7, &s2, R, 0, &mut fx).unwrap();
    assert_eq!(s3.seqid, 3);
    assert_eq!(st.open_downgrade(a, 8, &s3, R, 0, &mut fx), Err(nfsstat4::NFS4ERR_BAD_STATEID), "wrong file");
    // With the deny gone, b may write.
    open(&st, b, 7, "ob", W, 0).unwrap();
    assert_consistent(&st);
    // CLOSE: the stateid goes from every index, and to the data servers.
    let mut fx = Effects::default();
    st.close(a, 7, &s3, false, &mut fx).unwrap();
    assert_eq!(fx.ds_revoke, vec![s1.other]);
    assert_eq!(st.close(a, 7, &s3, false, &mut fx), Err(nfsstat4::NFS4ERR_BAD_STATEID));
    assert_eq!(st.test_stateid(a, &s3), nfsstat4::NFS4ERR_BAD_STATEID);
    assert_eq!(st.test_stateid(a, &sb), nfsstat4::NFS4ERR_BAD_STATEID, "another client's stateid");
    assert_eq!(st.test_stateid(b, &stateid(&sb.other, 0)), nfsstat4::NFS4_OK);
    assert!(st.has_state_on(7));
    st.close(b, 7, &stateid(&sb.other, 0), false, &mut fx).unwrap();
    assert!(!st.has_state_on(7), "no state left on the file");
    assert_consistent(&st);
    assert_eq!(st.states_held(), 0);
}

#[test]
fn caps_refuse_the_offender_only() {
    let st = store(StateCaps { max_clients: 8, max_clients_per_address: 4, max_sessions_per_client: 1, max_states_per_client: 3, max_states: 5 });
    let (a, _) = client(&st, "a");
    let (b, _) = client(&st, "b");
    let (c, _) = client(&st, "c");
    let mut mine = vec![];
    for ino in 0..3 {
        let s = open(&st, a, ino, "o", R, 0).unwrap();
        assert_eq!(s.other[..4], 5u32.to_be_bytes(), "the boot epoch heads every stateid");
        mine.push(s);
    }
    assert_eq!(open(&st, a, 9, "o", R, 0).unwrap_err().status, nfsstat4::NFS4ERR_NOSPC, "the client's own cap");
    assert_eq!(st.admit_state(&st.client(a).unwrap()), Err(nfsstat4::NFS4ERR_NOSPC));
    open(&st, b, 1, "o", R, 0).unwrap();
    open(&st, c, 1, "o", R, 0).unwrap();
    assert_eq!(open(&st, b, 2, "o", R, 0).unwrap_err().status, nfsstat4::NFS4ERR_DELAY, "the server's cap");
    // A second session: over mds.max_sessions_per_client.
    assert_eq!(session(&st, a, 2), Err(nfsstat4::NFS4ERR_NOSPC));
    // Unknown stateids: of an earlier boot STALE, of this one BAD.
    let mut gone = mine[0].clone();
    gone.other[5] ^= 1;
    assert_eq!(st.test_stateid(a, &gone), nfsstat4::NFS4ERR_BAD_STATEID);
    assert_eq!(st.check_io(a, &gone, 0, IoMode::Read), Err(nfsstat4::NFS4ERR_BAD_STATEID));
    gone.other[..4].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(st.check_io(a, &gone, 0, IoMode::Read), Err(nfsstat4::NFS4ERR_STALE_STATEID));
    assert_eq!(st.check_io(a, &mine[0], 0, IoMode::Write), Err(nfsstat4::NFS4ERR_OPENMODE));
    assert!(st.check_io(a, &mine[0], 0, IoMode::Read).is_ok());
    // Freeing one makes room again.
    st.close(a, 0, &mine[0], false, &mut Effects::default()).unwrap();
    open(&st, b, 2, "o", R, 0).unwrap();
    assert_consistent(&st);
}

#[test]
fn full_client_table_costs_the_offender() {
    let st = store(StateCaps { max_clients: 8, max_clients_per_address: 4, ..StateCaps::default() });
    let victim = exchange(&st, "victim", "127.0.0.1").unwrap();
    session(&st, victim, 1).unwrap();
    let pending = exchange(&st, "victim-pending", "127.0.0.1").unwrap();
    for i in 0..3 {
        exchange(&st, &format!("u{i}"), "127.0.0.2").unwrap();
    }
    let c0 = exchange(&st, "c0", "127.0.0.2").unwrap();
    session(&st, c0, 1).unwrap();
    // The attacker's address is at its cap: its own unconfirmed ones go.
    let c1 = exchange(&st, "c1", "127.0.0.2").unwrap();
    assert_eq!(st.client_count(), 4);
    assert!(st.client(victim).is_ok() && st.client(pending).is_ok() && st.client(c0).is_ok());
    for i in 2..4 {
        let id = exchange(&st, &format!("c{i}"), "127.0.0.2").unwrap();
        session(&st, id, 1).unwrap();
    }
    session(&st, c1, 1).unwrap();
    // Confirmed and renewed ones stay: DELAY, for that address only.
    assert_eq!(exchange(&st, "c4", "127.0.0.2"), Err(nfsstat4::NFS4ERR_DELAY));
    let d0 = exchange(&st, "d0", "127.0.0.3").unwrap();
    session(&st, d0, 1).unwrap();
    assert_eq!(st.client_count(), 7);
    exchange(&st, "d1", "127.0.0.3").map(|id| session(&st, id, 1)).unwrap().unwrap();
    assert_eq!(st.client_count(), 8);
    // A full table: unconfirmed clients of any address make room.
    exchange(&st, "e0", "127.0.0.4").unwrap();
    assert!(st.client(pending).is_err());
    assert_eq!(st.client_count(), 8);
    // Client IDs carry the owner's tag and are not sequential.
    assert_eq!(victim >> 32, pnfs_protocol::session::owner_tag(b"victim") as u64);
}

/// The engine's client rules (RFC 8881 18.35.4, 18.36, 18.50) through the
/// MDS's store: what the MDS adds is the purge of a replaced client's
/// states and sessions, and the records.
#[test]
fn rebooted_client_replaces_its_old_instance_with_its_state() {
    let st = store(StateCaps::default());
    let (old, old_session) = client(&st, "host");
    let o = open(&st, old, 7, "o", R, 0).unwrap();
    let mut fx = Effects::default();
    let me = Some((1000, 1000));
    // The same instance again: the same client ID, confirmed.
    let again = st.exchange_id(&exchange_args(b"host", 0), None, "127.0.0.1".parse().unwrap(), LEASE, &mut fx).unwrap();
    assert_eq!((again.clientid, again.confirmed, again.sequenceid), (old, true, 2));
    // Another principal may not take over an owner that holds state.
    let taken = st.exchange_id(&exchange_args(b"host", 0), me, "127.0.0.1".parse().unwrap(), LEASE, &mut fx);
    assert_eq!(taken.err(), Some(nfsstat4::NFS4ERR_CLID_INUSE));
    // Rebooted (new verifier): a new unconfirmed ID; the old one keeps its
    // state until the new one is confirmed.
    let new = st.exchange_id(&exchange_args(b"host", 1), None, "127.0.0.1".parse().unwrap(), LEASE, &mut fx).unwrap();
    assert!(!new.confirmed && new.clientid != old);
    assert_eq!(st.held_by(old), 1);
    assert_eq!(st.client_count(), 2);
    let mut fx = Effects::default();
    let ctx = pnfs_protocol::nfs41::sessions::CreateSessionCtx {
        principal: None,
        conn: 1,
        minor: 1,
        limits: pnfs_protocol::session::ServerLimits { max_record: 4096, max_ops: 8, slots: 1 },
        max_sessions_per_client: 4,
        persist: false,
    };
    let a = pnfs_protocol::wire::CREATE_SESSION4args {
        csa_clientid: new.clientid,
        csa_sequence: 1,
        csa_flags: 0,
        csa_fore_chan_attrs: limits().to_attrs(),
        csa_back_chan_attrs: limits().to_attrs(),
        csa_cb_program: 0,
        csa_sec_parms: vec![],
    };
    st.create_session(&a, &ctx, &mut fx).unwrap();
    assert_eq!(st.client(old).err(), Some(nfsstat4::NFS4ERR_STALE_CLIENTID));
    assert_eq!(fx.ds_revoke, vec![o.other], "the old instance's open went with it");
    assert_eq!(fx.sessions_gone, vec![old_session]);
    assert!(fx.records.contains(&StateChange::ClientConfirmed { owner: b"host".to_vec() }));
    assert_eq!((st.client_count(), st.states_held()), (1, 0));
    assert_eq!(st.sequence(&old_session).err(), Some(nfsstat4::NFS4ERR_BADSESSION));
    // DESTROY_CLIENTID: only its principal, only when it holds nothing; its
    // reclaim record goes.
    let mut fx = Effects::default();
    assert_eq!(st.destroy_clientid(new.clientid, me, || Ok(()), &mut fx), Err(nfsstat4::NFS4ERR_WRONG_CRED));
    assert_eq!(st.destroy_clientid(new.clientid, None, || Ok(()), &mut fx), Err(nfsstat4::NFS4ERR_CLIENTID_BUSY));
    let sid = st.sessions_of(new.clientid)[0].id;
    st.destroy_session(&sid, None, || Ok(()), &mut fx).unwrap();
    assert_eq!(st.destroy_clientid(new.clientid, None, || Err(nfsstat4::NFS4ERR_WRONG_CRED), &mut fx), Err(nfsstat4::NFS4ERR_WRONG_CRED));
    st.destroy_clientid(new.clientid, None, || Ok(()), &mut fx).unwrap();
    assert!(fx.records.contains(&StateChange::ClientForgotten { owner: b"host".to_vec() }));
    assert_eq!(st.client_count(), 0);
    assert_eq!(st.destroy_clientid(new.clientid, None, || Ok(()), &mut fx), Err(nfsstat4::NFS4ERR_STALE_CLIENTID));
    assert_consistent(&st);
}

#[test]
fn posix_lock_split_conflict_and_close() {
    let st = store(StateCaps::default());
    let (a, _) = client(&st, "a");
    let (b, _) = client(&st, "b");
    let ca = st.client(a).unwrap();
    let cb = st.client(b).unwrap();
    let oa = open(&st, a, 9, "oa", R | W, 0).unwrap();
    let ob = open(&st, b, 9, "ob", R, 0).unwrap();
    let mut fx = Effects::default();
    let la = match st.lock(&ca, 9, Locker::New { open: &oa, owner: b"la" }, 0, 100, true, &mut fx).unwrap() {
        LockOutcome::Granted(s) => s,
        d => panic!("{d:?}"),
    };
    assert_eq!(la.seqid, 1);
    // b's read conflicts; a write lock through a read-only open is OPENMODE.
    let lb = Locker::New { open: &ob, owner: b"lb" };
    assert!(matches!(st.lock(&cb, 9, lb, 50, 60, false, &mut fx), Ok(LockOutcome::Denied(ByteLock { start: 0, end: 100, .. }))));
    assert_eq!(st.lock(&cb, 9, Locker::New { open: &ob, owner: b"lb" }, 200, 300, true, &mut fx), Err(nfsstat4::NFS4ERR_OPENMODE));
    assert!(st.lockt(a, 9, b"la", 50, 60, true).is_none(), "one's own lock is no conflict");
    // Unlock the middle: two pieces remain.
    let la = st.locku(a, 9, &la, 40, 60, &mut fx).unwrap();
    assert!(st.lockt(b, 9, b"lb", 45, 55, true).is_none());
    assert!(st.lockt(b, 9, b"lb", 30, 45, true).is_some());
    // Downgrade a part to read: readers may share it.
    let la = match st.lock(&ca, 9, Locker::Existing { lock: &la }, 0, 40, false, &mut fx).unwrap() {
        LockOutcome::Granted(s) => s,
        d => panic!("{d:?}"),
    };
    assert_eq!(la.seqid, 3);
    assert!(st.lockt(b, 9, b"lb", 0, 10, false).is_none());
    assert!(st.lockt(b, 9, b"lb", 0, 10, true).is_some());
    // Held locks forbid CLOSE and FREE_STATEID of the lock stateid.
    assert_eq!(st.close(a, 9, &oa, false, &mut fx), Err(nfsstat4::NFS4ERR_LOCKS_HELD));
    assert_eq!(st.free_stateid(a, &la, &mut fx), Err(nfsstat4::NFS4ERR_LOCKS_HELD));
    assert_eq!(st.free_stateid(a, &oa, &mut fx), Err(nfsstat4::NFS4ERR_LOCKS_HELD), "an open stateid");
    let la = st.locku(a, 9, &la, 0, u64::MAX, &mut fx).unwrap();
    assert!(st.lockt(b, 9, b"lb", 0, u64::MAX, true).is_none());
    // CLOSE takes the lock stateid with it.
    let mut fx = Effects::default();
    st.close(a, 9, &oa, false, &mut fx).unwrap();
    assert_eq!(fx.ds_revoke.len(), 2);
    assert_eq!(st.test_stateid(a, &la), nfsstat4::NFS4ERR_BAD_STATEID);
    assert_consistent(&st);
    assert_eq!(lock_range(5, u64::MAX).unwrap(), (5, u64::MAX));
    assert_eq!(lock_range(5, 0).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
    assert_eq!(lock_range(u64::MAX - 1, 5).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
}

#[test]
fn layout_stateids_return_and_return_on_close() {
    let st = store(StateCaps::default());
    let (a, _) = client(&st, "a");
    let o = open(&st, a, 9, "o", R | W, 0).unwrap();
    // LAYOUTGET presents the open: seqid 0 or current; older is OLD, newer BAD.
    assert!(st.layoutget_check(a, 9, &stateid(&o.other, 0)).is_ok());
    assert_eq!(st.layoutget_check(a, 9, &stateid(&o.other, 2)), Err(nfsstat4::NFS4ERR_BAD_STATEID));
    assert_eq!(st.layoutget_check(a, 10, &o), Err(nfsstat4::NFS4ERR_BAD_STATEID), "another file");
    assert_eq!(st.layoutget_check(a, 9, &stateid4 { seqid: 0, other: [0; 12] }), Err(nfsstat4::NFS4ERR_BAD_STATEID));
    let (l1, push) = layout(&st, a, 9, &o, LAYOUT_READ).unwrap();
    assert_eq!(l1.seqid, 1);
    assert_eq!(push, vec![(o.clone(), R | W)], "the open goes to the data servers; the layout stateid does not");
    let (l2, _) = layout(&st, a, 9, &l1, LAYOUT_RW).unwrap();
    assert_eq!((l2.other, l2.seqid), (l1.other, 2), "one layout stateid per client and file");
    assert_eq!(st.layouts_held(), 1);
    // A layout stateid: anything up to current, not beyond; never for I/O.
    assert!(st.layout_check(a, 9, &l1).is_ok());
    assert_eq!(st.layout_check(a, 9, &stateid(&l1.other, 3)), Err(nfsstat4::NFS4ERR_BAD_STATEID));
    assert_eq!(st.check_io(a, &l2, 9, IoMode::Read), Err(nfsstat4::NFS4ERR_BAD_STATEID));
    // A new open of a layout holder is allowed on the data servers.
    let c = st.client(a).unwrap();
    let mut fx = Effects::default();
    let o2 = st.open(&c, 9, b"o2", R, 0, false, &mut fx).unwrap();
    assert_eq!(fx.ds_allow, vec![DsAllow { clientid: a, ino: 9, stateid: o2.clone(), access: R }]);
    // Returning READ keeps RW; returning RW ends it.
    let mut fx = Effects::default();
    let l3 = st.layout_return_file(a, 9, &l2, LAYOUT_READ, true, &mut fx).unwrap().unwrap();
    assert_eq!(l3.seqid, 3);
    assert_eq!(st.layout_return_file(a, 9, &l3, LAYOUT_RW, true, &mut fx), Ok(None));
    assert_eq!(st.layouts_held(), 0);
    // return_on_close: the last CLOSE of the client on the file returns it.
    layout(&st, a, 9, &o, LAYOUT_RW).unwrap();
    st.close(a, 9, &o, true, &mut fx).unwrap();
    assert_eq!(st.layouts_held(), 1, "another open of the client remains");
    st.close(a, 9, &o2, true, &mut fx).unwrap();
    assert_eq!(st.layouts_held(), 0);
    assert!(!st.has_state_on(9));
    // LAYOUTRETURN of all: every layout of the client.
    let o = open(&st, a, 1, "o", R, 0).unwrap();
    let p = open(&st, a, 2, "o", R, 0).unwrap();
    layout(&st, a, 1, &o, LAYOUT_READ).unwrap();
    layout(&st, a, 2, &p, LAYOUT_READ).unwrap();
    st.layout_return_all(a, LAYOUT_READ | LAYOUT_RW, &mut fx).unwrap();
    assert_eq!(st.layouts_held(), 0);
    assert_consistent(&st);
}

#[test]
fn recalls_fencing_and_revoked_flag() {
    let st = store(StateCaps::default());
    let (a, sa) = client(&st, "a");
    let (b, _) = client(&st, "b");
    let oa = open(&st, a, 9, "o", R | W, 0).unwrap();
    let (la, _) = layout(&st, a, 9, &oa, LAYOUT_RW).unwrap();
    let ob = open(&st, b, 9, "o", R, 0).unwrap();
    layout(&st, b, 9, &ob, LAYOUT_READ).unwrap();
    // b opens for write: a's read/write layout is recalled, b's own is not.
    let cb = st.client(b).unwrap();
    let mut fx = Effects::default();
    st.open(&cb, 9, b"o", R | W, 0, true, &mut fx).unwrap();
    assert_eq!(fx.recalls.len(), 1);
    let r = &fx.recalls[0];
    assert_eq!((r.clientid, r.other, r.seqid, r.ino), (a, la.other, la.seqid + 1, 9));
    // A recall of any layout (REMOVE): both.
    let mut fx = Effects::default();
    st.recall_layouts(9, None, false, "remove", &mut fx);
    assert_eq!(fx.recalls.len(), 2);
    // a keeps it past the deadline: fenced.
    st.note_recall(PendingRecall { other: la.other, clientid: a, ino: 9, deadline: Instant::now() });
    let mut fx = Effects::default();
    assert_eq!(st.fence_overdue(Instant::now(), &mut fx), vec![(a, 9)]);
    assert_eq!(fx.size_from_ds, vec![9], "a read/write layout holder went away");
    assert!(fx.ds_revoke.contains(&oa.other) && fx.ds_revoke.contains(&la.other));
    assert_eq!(st.check_io(a, &oa, 9, IoMode::Read), Err(nfsstat4::NFS4ERR_ADMIN_REVOKED));
    assert!(st.sequence(&sa).unwrap().1, "SEQUENCE tells of revoked state");
    // Freed, the flag goes.
    st.free_stateid(a, &oa, &mut fx).unwrap();
    assert!(!st.sequence(&sa).unwrap().1);
    assert_eq!(st.fence_overdue(Instant::now(), &mut fx), vec![], "nothing pending any more");
    assert_consistent(&st);
}

#[test]
fn expiry_releases_one_client_and_keeps_indexes() {
    let st = store(StateCaps::default());
    let (a, sa) = client(&st, "a");
    let (b, _) = client(&st, "b");
    let ca = st.client(a).unwrap();
    let oa = open(&st, a, 9, "o", R | W, W).unwrap();
    match st.lock(&ca, 9, Locker::New { open: &oa, owner: b"l" }, 0, 10, true, &mut Effects::default()).unwrap() {
        LockOutcome::Granted(_) => {}
        d => panic!("{d:?}"),
    }
    layout(&st, a, 9, &oa, LAYOUT_RW).unwrap();
    open(&st, a, 10, "o", R, 0).unwrap();
    let ob = open(&st, b, 10, "o", R, 0).unwrap();
    // b is refused by a's deny; a is not expired yet: nothing released.
    let refused = open(&st, b, 9, "o", W, 0).unwrap_err();
    assert_eq!(refused.holders, vec![a]);
    assert!(st.release_if_expired(&refused.holders, LEASE, &mut Effects::default()).is_empty());
    // a goes silent for a lease: released, with all it holds.
    st.age_client(a, LEASE * 2);
    let mut fx = Effects::default();
    let gone = st.expire(LEASE, &mut fx);
    assert_eq!(gone.iter().map(|c| c.clientid).collect::<Vec<_>>(), vec![a]);
    assert_eq!(fx.ds_revoke.len(), 4);
    assert_eq!(fx.size_from_ds, vec![9]);
    assert!(fx.records.contains(&StateChange::ClientForgotten { owner: b"a".to_vec() }));
    // Its session's callback bookkeeping is dropped by whoever applies fx.
    assert_eq!(fx.sessions_gone, vec![sa]);
    assert_eq!(st.sequence(&sa).err(), Some(nfsstat4::NFS4ERR_BADSESSION));
    assert_eq!(st.held_by(a), 0);
    assert_eq!(st.layouts_held(), 0);
    assert!(st.lockt(b, 9, b"x", 0, 10, true).is_none(), "its byte-range locks went");
    assert!(!st.has_state_on(9));
    assert_eq!(st.states_held(), 1);
    open(&st, b, 9, "o", W, 0).unwrap();
    assert_eq!(st.test_stateid(b, &ob), nfsstat4::NFS4_OK);
    assert_consistent(&st);
    // A state added by an operation racing the purge is refused.
    assert_eq!(st.open(&ca, 11, b"o", R, 0, false, &mut Effects::default()).unwrap_err().status, nfsstat4::NFS4ERR_STALE_CLIENTID);
    assert_consistent(&st);
}

#[test]
fn journal_records_every_change() {
    let mut st = store(StateCaps::default());
    st.set_journal(true);
    let mut fx = Effects::default();
    let x = st.exchange_id(&exchange_args(b"x", 0), None, "127.0.0.1".parse().unwrap(), LEASE, &mut fx).unwrap().clientid;
    assert!(matches!(&fx.records[..], [StateChange::ClientPut { rec }] if rec.clientid == x));
    let mut fx = Effects::default();
    st.release_if_expired(&[x], Duration::ZERO, &mut fx);
    assert_eq!(fx.records, vec![StateChange::ClientPurged { clientid: x }, StateChange::ClientForgotten { owner: b"x".to_vec() }]);
    let (a, _) = client(&st, "a");
    let c = st.client(a).unwrap();
    let mut fx = Effects::default();
    let o = st.open(&c, 9, b"o", R, 0, false, &mut fx).unwrap();
    let share = xnode::Share { access: R, deny: 0, deleg: xnode::DELEG_NONE };
    assert!(matches!(&fx.records[..], [StateChange::StatePut { other, rec }, StateChange::FileShare { ino: 9, clientid, share: s }]
        if *other == o.other && rec.seqid == 1 && *clientid == a && *s == share));
    let mut fx = Effects::default();
    st.close(a, 9, &o, false, &mut fx).unwrap();
    assert_eq!(fx.records, vec![StateChange::StateRemoved { other: o.other }, StateChange::FileShare { ino: 9, clientid: a, share: Default::default() }]);
    // Off (a single MDS): no volatile records.
    let st = store(StateCaps::default());
    let (a, _) = client(&st, "a");
    let mut fx = Effects::default();
    st.open(&st.client(a).unwrap(), 9, b"o", R, 0, false, &mut fx).unwrap();
    assert!(fx.records.is_empty());
}

/// SEQUENCE, PUTFH's check, OPEN, CLOSE, LOCK, LAYOUTGET, LAYOUTRETURN and
/// one client's expiry look at the same number of table entries whether
/// 0 or 20,000 other states are held (by the same client and by others):
/// their cost does not grow with the states held.
#[test]
fn operation_cost_does_not_grow_with_states_held() {
    let st = store(StateCaps { max_states_per_client: 100_000, ..StateCaps::default() });
    let (a, sa) = client(&st, "a");
    let (b, _) = client(&st, "b");
    let (e, _) = client(&st, "e");
    let ca = st.client(a).unwrap();
    let empty = round_with(&st, a, sa, &ca, e, &st.client(e).unwrap());
    // 10,000 opens of a on other files, 10,000 of b (and layouts on some).
    for i in 0..10_000 {
        let o = open(&st, a, i, "many", R, 0).unwrap();
        open(&st, b, i, "many", R, 0).unwrap();
        if i % 10 == 0 {
            layout(&st, a, i, &o, LAYOUT_READ).unwrap();
        }
    }
    assert!(st.states_held() > 20_000);
    // e expired in the round; another client of the same size takes its part.
    let (e2, _) = client(&st, "e2");
    let full = round_with(&st, a, sa, &ca, e2, &st.client(e2).unwrap());
    assert_eq!(empty, full, "entries visited per operation: 0 vs 21,000 states held");
    assert!(empty.iter().all(|n| *n <= 8), "{empty:?}");
    assert_consistent(&st);
}

/// One round of `operation_cost_does_not_grow_with_states_held` for client
/// `e` as the one expiring.
fn round_with(st: &StateStore, a: u64, sa: SessionId, ca: &Arc<ClientEntry>, e: u64, ce: &Arc<ClientEntry>) -> Vec<u64> {
    static NEXT: AtomicUsize = AtomicUsize::new(2_000_000);
    let ino = NEXT.fetch_add(2, Ordering::Relaxed) as u64;
    let mut v = vec![];
    v.push(visits(|| st.sequence(&sa).unwrap()).1);
    v.push(visits(|| st.has_state_on(ino)).1);
    let (o, n) = visits(|| st.open(ca, ino, b"owner", R | W, 0, true, &mut Effects::default()).unwrap());
    v.push(n);
    v.push(visits(|| st.open(ca, ino, b"owner", R | W, 0, true, &mut Effects::default()).unwrap()).1);
    v.push(visits(|| st.check_io(a, &stateid(&o.other, 0), ino, IoMode::Write).unwrap()).1);
    let (l, n) = visits(|| layout(st, a, ino, &stateid(&o.other, 0), LAYOUT_RW).unwrap().0);
    v.push(n);
    let lock = Locker::New { open: &stateid(&o.other, 0), owner: b"l" };
    let (lk, n) = visits(|| st.lock(ca, ino, lock, 0, 1, true, &mut Effects::default()).unwrap());
    v.push(n);
    let LockOutcome::Granted(lk) = lk else { panic!("denied") };
    v.push(visits(|| st.locku(a, ino, &lk, 0, 1, &mut Effects::default()).unwrap()).1);
    v.push(visits(|| st.layout_return_file(a, ino, &l, LAYOUT_RW, true, &mut Effects::default()).unwrap()).1);
    v.push(visits(|| st.close(a, ino, &stateid(&o.other, 0), true, &mut Effects::default()).unwrap()).1);
    let oe = st.open(ce, ino, b"e", R, 0, false, &mut Effects::default()).unwrap();
    layout(st, e, ino, &oe, LAYOUT_READ).unwrap();
    st.open(ce, ino + 1, b"e", R, 0, false, &mut Effects::default()).unwrap();
    v.push(visits(|| st.release_if_expired(&[e], Duration::ZERO, &mut Effects::default()).len()).1);
    v
}

/// Clients working at once on shared and separate files, one of them
/// expiring meanwhile: no deadlock (the test ends), and every index agrees
/// with the stateid table afterwards.
#[test]
fn concurrent_clients_keep_indexes_consistent() {
    // A deadlock fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let body = std::thread::spawn(move || {
        concurrent_body();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => body.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => body.join().unwrap(),
        Err(e) => panic!("the clients did not finish in 120 s (a lock-order deadlock?): {e}"),
    }
}

fn concurrent_body() {
    let st = Arc::new(store(StateCaps::default()));
    let ids: Vec<u64> = (0..4).map(|i| client(&st, &format!("w{i}")).0).collect();
    let (doomed, _) = client(&st, "doomed");
    let workers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, &id)| {
            let st = st.clone();
            std::thread::spawn(move || {
                let c = st.client(id).unwrap();
                for k in 0..1500u64 {
                    // Files 0..8 are shared by every worker; the rest are its own.
                    let ino = if k % 3 == 0 { k % 8 } else { 100 + n as u64 * 1000 + k % 50 };
                    let mut fx = Effects::default();
                    let Ok(o) = st.open(&c, ino, b"o", R | W, 0, k % 5 == 0, &mut fx) else { continue };
                    if k % 2 == 0 {
                        let _ = st.layout_grant(id, ino, &stateid(&o.other, 0), LAYOUT_RW, 1, 1, None, &mut fx);
                    }
                    if let Ok(LockOutcome::Granted(l)) =
                        st.lock(&c, ino, Locker::New { open: &stateid(&o.other, 0), owner: b"l" }, k, k + 1, true, &mut fx)
                    {
                        if k % 4 != 0 {
                            st.locku(id, ino, &stateid(&l.other, 0), 0, u64::MAX, &mut fx).unwrap();
                        }
                    }
                    if k % 4 != 0 {
                        let _ = st.close(id, ino, &stateid(&o.other, 0), k % 8 == 1, &mut fx);
                    }
                    st.sequence(&st.client(id).unwrap().record().sessions[0]).unwrap();
                }
            })
        })
        .collect();
    let cd = st.client(doomed).unwrap();
    for k in 0..200u64 {
        let _ = st.open(&cd, k % 8, b"d", R, 0, false, &mut Effects::default());
    }
    st.release_if_expired(&[doomed], Duration::ZERO, &mut Effects::default());
    for w in workers {
        w.join().unwrap();
    }
    assert!(st.client(doomed).is_err());
    assert_eq!(st.held_by(doomed), 0);
    assert_consistent(&st);
    // Each worker's closes leave some states; all of them go with their clients.
    for id in ids {
        st.release_if_expired(&[id], Duration::ZERO, &mut Effects::default());
    }
    assert_eq!(st.states_held(), 0);
    assert_eq!(st.layouts_held(), 0);
    assert_consistent(&st);
}

#[test]
fn delegation_hooks() {
    let st = store(StateCaps::default());
    let (a, sa) = client(&st, "a");
    let (b, _) = client(&st, "b");
    assert!(!st.others_open(a, 9, true));
    open(&st, a, 9, "o", R | W, 0).unwrap();
    assert!(!st.others_open(a, 9, true), "its own opens do not count");
    let ob = open(&st, b, 9, "o", R, 0).unwrap();
    assert!(st.others_open(a, 9, true) && !st.others_open(a, 9, false), "a reader forbids a write delegation only");
    assert!(st.others_open(b, 9, false), "a writer forbids a read delegation");
    let mut fx = Effects::default();
    let d = grant(&st, a, 9, false).unwrap();
    assert_eq!(st.check_io(a, &d, 9, IoMode::Write), Err(nfsstat4::NFS4ERR_OPENMODE), "a read delegation reads only");
    assert!(st.check_io(a, &d, 9, IoMode::Read).is_ok());
    st.delegs().remove(&d.other); // as ops/deleg.rs revokes
    assert!(st.revoke(&d.other, &mut fx));
    assert_eq!(st.find(a, &d).err(), Some(nfsstat4::NFS4ERR_DELEG_REVOKED));
    assert!(st.sequence(&sa).unwrap().1);
    st.free_stateid(a, &d, &mut fx).unwrap();
    assert!(!st.sequence(&sa).unwrap().1);
    let d = grant(&st, a, 9, false).unwrap();
    st.delegs().remove(&d.other);
    assert_eq!(st.remove_state(&d.other, &mut fx).map(|r| r.kind), Some(StateKind::Deleg { write: false }));
    st.close(b, 9, &ob, false, &mut fx).unwrap();
    assert!(!st.others_open(a, 9, true));
    assert_consistent(&st);
}

/// FREE_STATEID of a revoked delegation takes its delegation record too,
/// even when the revoker (here the state layer's `revoke` alone) left it.
#[test]
fn freeing_a_revoked_delegation_forgets_its_record() {
    let st = store(StateCaps::default());
    let (a, _) = client(&st, "a");
    let mut fx = Effects::default();
    let d = grant(&st, a, 9, true).unwrap();
    assert!(st.revoke(&d.other, &mut fx));
    assert!(st.delegs().get(&d.other).is_some());
    st.free_stateid(a, &d, &mut fx).unwrap();
    assert!(st.delegs().get(&d.other).is_none(), "the delegation's record went with its state");
    assert!(st.delegs().held(a, 9).is_none());
    assert!(grant(&st, a, 9, true).is_ok(), "a new delegation of the file may be granted");
    assert_consistent(&st);
}

fn grant(st: &StateStore, clientid: u64, ino: u64, write: bool) -> Result<stateid4, deleg::NoGrant> {
    let d = deleg::tests::deleg(clientid, ino, write);
    st.grant_deleg(&st.client(clientid).unwrap(), d, 1 << 20, Instant::now(), &mut Effects::default())
}

/// RFC 8881 10.4: never a write delegation beside another client's open or
/// delegation, never a read delegation beside another client's open for
/// writing (revoked delegations aside). Checked under the file's shard
/// lock, the lock grants and opens take.
fn assert_deleg_invariant(st: &StateStore, ino: u64) {
    let sh = st.file_shard(ino);
    let Some(file) = sh.files.get(&ino) else { return };
    let (mut opens, mut delegs) = (vec![], vec![]);
    for (id, cof) in &file.by_client {
        for (_, o) in &cof.opens {
            if let Some(StateRec { kind: StateKind::Open { access, .. }, .. }) = sh.states.get(o) {
                opens.push((*id, *access));
            }
        }
        for o in &cof.delegs {
            if let Some(StateRec { kind: StateKind::Deleg { write }, revoked: false, .. }) = sh.states.get(o) {
                delegs.push((*id, *write));
            }
        }
    }
    for &(holder, write) in &delegs {
        for &(id, access) in opens.iter().filter(|(id, _)| *id != holder) {
            assert!(!write && access & W == 0, "inode {ino}: client {holder:x}'s {} delegation beside client {id:x}'s open for {access}", if write { "write" } else { "read" });
        }
        for &(id, other_write) in delegs.iter().filter(|(id, _)| *id != holder) {
            assert!(!write && !other_write, "inode {ino}: conflicting delegations of clients {holder:x} and {id:x}");
        }
    }
}

/// Many clients race OPENs, grants, CLOSEs and returns on a few files
/// (seeded); the invariant holds after every step and at the end. The
/// callers' recall check (`ops/deleg.rs`) runs outside the state lock, as
/// in the MDS: the state layer alone must keep the invariant.
#[test]
fn delegations_and_racing_opens_never_conflict() {
    const THREADS: u64 = 8;
    const STEPS: usize = 200_000;
    const FILES: u64 = 3;
    const SEED: u64 = 0x5eed_de1e;
    let st = Arc::new(store(StateCaps::default()));
    let clients: Vec<u64> = (0..THREADS).map(|t| client(&st, &format!("c{t}")).0).collect();
    let granted = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(t, &cid)| {
            let (st, granted) = (st.clone(), granted.clone());
            std::thread::spawn(move || {
                let mut x = SEED ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let c = st.client(cid).unwrap();
                let (mut opens, mut delegs): (HashMap<u64, StateOther>, HashMap<u64, StateOther>) = Default::default();
                for _ in 0..STEPS {
                    let ino = 100 + next() % FILES;
                    let mut fx = Effects::default();
                    match next() % 6 {
                        op @ (0 | 1) => {
                            let access = if op == 0 { R } else { R | W };
                            // The ops layer's recall check: another client's
                            // conflicting delegation answers DELAY.
                            let blocked = {
                                let d = st.delegs();
                                d.on_ino(ino).iter().filter_map(|o| d.get(o)).any(|d| d.clientid != cid && (d.write || access & W != 0))
                            };
                            if !blocked {
                                if let Ok(sid) = st.open(&c, ino, b"o", access, 0, false, &mut fx) {
                                    opens.insert(ino, sid.other);
                                }
                            }
                        }
                        op @ (2 | 3) => {
                            if let Ok(sid) = grant(&st, cid, ino, op == 3) {
                                delegs.insert(ino, sid.other);
                                granted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        4 => {
                            if let Some(other) = opens.remove(&ino) {
                                st.close(cid, ino, &stateid(&other, 0), false, &mut fx).unwrap();
                            }
                        }
                        _ => {
                            if let Some(other) = delegs.remove(&ino) {
                                st.remove_state(&other, &mut fx).unwrap();
                                st.delegs().remove(&other);
                            }
                        }
                    }
                    assert_deleg_invariant(&st, ino);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for ino in 100..100 + FILES {
        assert_deleg_invariant(&st, ino);
    }
    assert!(granted.load(Ordering::Relaxed) > 0, "no delegation was ever granted: the race was never run");
}

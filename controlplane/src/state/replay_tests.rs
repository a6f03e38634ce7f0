//! Tests of the state records: each kind round-trips, bad bytes are errors,
//! a store replayed from a journal (or restored from a KV) answers every
//! query as the store that wrote it, leaving any kind of record out is
//! caught, and a store with the journal off emits none.

use super::records::{self, Record, RECORD_VERSION};
use super::replay::{fold, Rows};
use super::tests::{assert_consistent, exchange_args};
use super::*;
use pnfs_kv::{KvStore, MemStore};
use pnfs_protocol::nfs41::sessions::CreateSessionCtx;
use pnfs_protocol::session::ServerLimits;
use pnfs_protocol::wire::{CREATE_SESSION4args, OPEN4_SHARE_ACCESS_READ as R, OPEN4_SHARE_ACCESS_WRITE as W};
use std::collections::BTreeSet;

const LEASE: Duration = Duration::from_secs(60);
const EPOCH: u32 = 5;

/// A seeded generator: the same seed, the same run.
struct Rng(fastrand::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.u64(..)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.usize(..n)
    }

    fn pick<T: Clone>(&mut self, v: &[T]) -> Option<T> {
        (!v.is_empty()).then(|| v[self.below(v.len())].clone())
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.0.u64(..100) < percent
    }
}

/// The name of a change's kind; a new kind does not compile until it is
/// named here, and then the tests below ask for a sample of it.
fn kind(c: &StateChange) -> &'static str {
    match c {
        StateChange::ClientConfirmed { .. } => "ClientConfirmed",
        StateChange::ClientForgotten { .. } => "ClientForgotten",
        StateChange::ClientPut { .. } => "ClientPut",
        StateChange::ClientPurged { .. } => "ClientPurged",
        StateChange::StatePut { .. } => "StatePut",
        StateChange::StateRemoved { .. } => "StateRemoved",
        StateChange::ByteLocks { .. } => "ByteLocks",
        StateChange::SessionCreated { .. } => "SessionCreated",
        StateChange::SessionDestroyed { .. } => "SessionDestroyed",
        StateChange::DelegPut { .. } => "DelegPut",
        StateChange::SlotKept { .. } => "SlotKept",
        StateChange::FileShare { .. } => "FileShare",
    }
}

const KINDS: usize = 12;

fn limits(n: u32) -> ChannelLimits {
    ChannelLimits { max_request: 4096, max_response: 8192, max_response_cached: 512, max_ops: 8, max_requests: n }
}

/// One or more samples of every kind, with every optional field both ways.
fn samples() -> Vec<StateChange> {
    let client = |principal, addr: &str, reply: Option<Vec<u8>>| StateChange::ClientPut {
        rec: ClientRow {
            clientid: 0x1234_5678_9abc_def0,
            owner: b"linux client owner".to_vec(),
            verifier: [7; 8],
            principal,
            addr: addr.parse().unwrap(),
            confirmed: true,
            cs_sequence: 3,
            cs_reply: reply,
            reclaim_complete: true,
            may_reclaim: false,
        },
    };
    let other = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let state = |kind| StateChange::StatePut { other, rec: StateRec { clientid: 9, ino: 77, seqid: 4, kind, revoked: true } };
    vec![
        StateChange::ClientConfirmed { owner: b"o".to_vec() },
        StateChange::ClientForgotten { owner: b"o".to_vec() },
        client(Some((1000, 100)), "192.0.2.7", Some(vec![1, 2, 3, 4, 5])),
        client(None, "2001:db8::1", None),
        StateChange::ClientPurged { clientid: 42 },
        state(StateKind::Open { owner: b"open owner".to_vec(), access: R | W, deny: R }),
        state(StateKind::Lock { owner: b"lock".to_vec(), open: [9; 12] }),
        state(StateKind::Deleg { write: true }),
        state(StateKind::Layout { iomodes: LAYOUT_RW, fh_export: 3, fh_generation: 11, granted_by: Some(([5; 16], 2, 99)) }),
        state(StateKind::Layout { iomodes: LAYOUT_READ, fh_export: u16::MAX, fh_generation: 0, granted_by: None }),
        StateChange::StateRemoved { other },
        StateChange::ByteLocks {
            ino: 77,
            clientid: 9,
            locks: vec![
                ByteLock { clientid: 9, owner: b"l1".to_vec(), start: 0, end: 10, write: true },
                ByteLock { clientid: 9, owner: b"l2".to_vec(), start: 10, end: u64::MAX, write: false },
            ],
        },
        StateChange::ByteLocks { ino: 78, clientid: 8, locks: vec![] },
        StateChange::SessionCreated { rec: SessionRecord { id: [3; 16], clientid: 9, fore: limits(4), back: limits(1), cb_program: 0x4000_0000, minor: 2 } },
        StateChange::SessionDestroyed { id: [3; 16] },
        StateChange::SlotKept { session: [3; 16], slot: 2, seqid: 17, reply: Some(vec![0, 0, 0, 0, 9]) },
        StateChange::SlotKept { session: [3; 16], slot: u32::MAX, seqid: 0, reply: None },
        StateChange::DelegPut {
            other,
            rec: deleg::Deleg {
                clientid: 9,
                ino: 77,
                write: false,
                fh_export: 1,
                fh_generation: 2,
                granted_by: Some(([6; 16], 0, 1)),
                recall_deadline: None,
                seen_change: Some(5),
                change_bumps: 2,
            },
        },
        StateChange::DelegPut {
            other,
            rec: deleg::Deleg {
                clientid: 9,
                ino: 77,
                write: true,
                fh_export: 1,
                fh_generation: 2,
                granted_by: None,
                recall_deadline: None,
                seen_change: None,
                change_bumps: 0,
            },
        },
        StateChange::FileShare { ino: 77, clientid: 9, share: xnode::Share { access: R | W, deny: W, deleg: xnode::DELEG_WRITE } },
        StateChange::FileShare { ino: 78, clientid: 9, share: xnode::Share::default() },
    ]
}

#[test]
fn every_kind_round_trips() {
    let samples = samples();
    let kinds: BTreeSet<&str> = samples.iter().map(kind).collect();
    assert_eq!(kinds.len(), KINDS, "a sample of every kind");
    for c in &samples {
        let r = records::encode(c);
        assert_eq!(records::decode(&r).as_ref(), Ok(c), "{r:02x?}");
        match &r {
            Record::Put { key, value } if key[0] != crate::keyspace::CLIENT_RECORD => assert_eq!(value[0], RECORD_VERSION),
            _ => {}
        }
        // Every key is in the key space's table.
        assert!(crate::keyspace::ALL.iter().any(|(p, _)| *p == r.key()[0]), "{:?}", r.key());
    }
    // The `O` row is the one the MDS writes for reclaim.
    let confirmed = records::encode(&StateChange::ClientConfirmed { owner: b"o".to_vec() });
    assert_eq!(confirmed, Record::Put { key: crate::mds::client_record_key(b"o"), value: b"1".to_vec() });
    // A delegation's row sorts under its state's and goes with it.
    let other = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let writes: Vec<Record> = records::writes(&StateChange::StateRemoved { other }).collect();
    assert_eq!(writes.len(), 2);
    let deleg_row = records::encode(&samples[17]);
    assert_eq!(writes[0], Record::Delete { key: deleg_row.key().to_vec() });
    assert!(deleg_row.key().starts_with(writes[1].key()));
}

#[test]
fn bad_bytes_are_errors_not_panics() {
    let mut rng = Rng(fastrand::Rng::with_seed(0x5eed));
    for c in samples() {
        let Record::Put { key, value } = records::encode(&c) else { continue };
        // Every truncation, and a byte too many.
        for n in 0..value.len() {
            assert!(records::decode_row(&key, &value[..n]).is_err(), "{} cut to {n}", kind(&c));
        }
        let mut longer = value.clone();
        longer.push(0);
        assert!(records::decode_row(&key, &longer).is_err(), "{} with a byte after it", kind(&c));
        if key[0] != crate::keyspace::CLIENT_RECORD {
            let mut v = value.clone();
            v[0] = RECORD_VERSION + 1;
            assert_eq!(records::decode_row(&key, &v), Err(RecordError::Version(RECORD_VERSION + 1)));
        }
        // Flipped bytes and garbage decode or fail, never panic.
        for i in 0..value.len() {
            let mut v = value.clone();
            v[i] ^= 0xff;
            let _ = records::decode_row(&key, &v);
        }
        for _ in 0..200 {
            let len = rng.below(64);
            let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = records::decode_row(&key, &junk);
            let mut v = vec![RECORD_VERSION];
            v.extend_from_slice(&junk);
            let _ = records::decode_row(&key, &v);
        }
        // A key one byte short or long.
        assert!(records::decode_row(&key[..key.len() - 1], &value).is_err() || key[0] == crate::keyspace::CLIENT_RECORD);
    }
    // A length that claims more than is there is refused before allocating.
    let mut huge = vec![RECORD_VERSION];
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(records::decode_row(&[crate::keyspace::with_u64(crate::keyspace::STATE_BYTE_LOCKS, 1), 9u64.to_be_bytes().to_vec()].concat(), &huge).is_err());
    for key in [&b""[..], b"z123", b"s12345678901", b"s123456789012x", b"c1234567", b"e123"] {
        assert!(matches!(records::decode_row(key, &[RECORD_VERSION]), Err(RecordError::Key(_))), "{key:?}");
        assert!(records::decode(&Record::Delete { key: key.to_vec() }).is_err(), "{key:?}");
    }
    // Rows that decode but do not fit together.
    let mut rows = Rows::new();
    fold(&mut rows, &samples()[5..6]);
    let refused = StateStore::restore(EPOCH, StateCaps::default(), rows.iter().map(|(k, v)| (&k[..], &v[..])));
    assert!(matches!(refused, Err(RecordError::Inconsistent(_))), "a state of an unknown client");
}

/// What the random run knows of what it created (for the queries).
#[derive(Default)]
struct Known {
    clients: Vec<u64>,
    sessions: Vec<SessionId>,
    /// Every stateid handed out, with its client.
    stateids: Vec<(u64, StateOther)>,
    inos: Vec<u64>,
}

impl Known {
    fn of_kind(&self, st: &StateStore, want: fn(&StateKind) -> bool) -> Vec<(u64, stateid4)> {
        self.stateids.iter().filter_map(|(c, o)| st.get(o).filter(|r| want(&r.kind)).map(|r| (*c, stateid(o, r.seqid)))).collect()
    }

    fn note(&mut self, clientid: u64, s: &stateid4) {
        if !self.stateids.iter().any(|(_, o)| *o == s.other) {
            self.stateids.push((clientid, s.other));
        }
    }
}

fn new_session(st: &StateStore, rng: &mut Rng, clientid: u64, fx: &mut Effects) -> Option<SessionId> {
    let seq = st.client(clientid).ok()?.record().cs_sequence;
    let slots = 1 + rng.below(4) as u32;
    let a = CREATE_SESSION4args {
        csa_clientid: clientid,
        csa_sequence: seq,
        csa_flags: 0,
        csa_fore_chan_attrs: limits(slots).to_attrs(),
        csa_back_chan_attrs: limits(1).to_attrs(),
        csa_cb_program: rng.next() as u32,
        csa_sec_parms: vec![],
    };
    let ctx = CreateSessionCtx {
        principal: None,
        conn: 1,
        minor: 1 + rng.below(2) as u32,
        limits: ServerLimits { max_record: 8192, max_ops: 8, slots: 4 },
        max_sessions_per_client: st.caps.max_sessions_per_client,
        persist: false,
    };
    let (bytes, _) = st.create_session(&a, &ctx, fx).ok()?;
    bytes.get(..16)?.try_into().ok()
}

/// Drives `st` with `steps` operations chosen by `seed` through the public
/// API, as the operation handlers call it; each call's (or COMPOUND's)
/// effects go to `sink`.
fn drive(st: &StateStore, seed: u64, steps: usize, sink: &mut dyn FnMut(Effects)) -> Known {
    let mut rng = Rng(fastrand::Rng::with_seed(seed));
    let mut k = Known::default();
    let owners = [b"o1".as_slice(), b"o2"];
    let lockers = [b"l1".as_slice(), b"l2"];
    let shares = [R, W, R | W];
    for _ in 0..steps {
        let mut fx = Effects::default();
        // Mostly a live client; now and then one that is gone.
        let live: Vec<u64> = k.clients.iter().copied().filter(|c| st.client(*c).is_ok()).collect();
        let client = if rng.chance(95) { rng.pick(&live) } else { rng.pick(&k.clients) };
        let ino = 1 + rng.below(6) as u64;
        match rng.below(20) {
            // A client (EXCHANGE_ID, CREATE_SESSION, RECLAIM_COMPLETE); an
            // owner seen before comes back as a new instance.
            0 | 1 => {
                if st.client_count() > 5 && rng.chance(85) {
                    continue;
                }
                let n = rng.below(8);
                let owner = format!("client{n}");
                let addr = if rng.chance(50) { "192.0.2.1" } else { "2001:db8::2" };
                // One principal per owner (another one is refused its records).
                let principal = n.is_multiple_of(2).then_some((1000, 1000));
                // Mostly the instance seen before (its record reused), at
                // times a rebooted one (a new record; the old one and its
                // states go once the new one is confirmed).
                let args = exchange_args(owner.as_bytes(), if rng.chance(10) { rng.next() as u8 } else { 0 });
                if let Ok(ok) = st.exchange_id(&args, principal, addr.parse().unwrap(), LEASE, &mut fx) {
                    let id = ok.clientid;
                    if !k.clients.contains(&id) {
                        k.clients.push(id);
                    }
                    if rng.chance(90) {
                        if let Some(sid) = new_session(st, &mut rng, id, &mut fx) {
                            k.sessions.push(sid);
                            if rng.chance(90) {
                                let _ = st.reclaim_complete(id, &mut fx);
                            }
                        }
                    }
                }
            }
            2 => {
                if let Some(sid) = client.and_then(|c| new_session(st, &mut rng, c, &mut fx)) {
                    k.sessions.push(sid);
                }
            }
            3 => {
                if let Some(sid) = rng.pick(&k.sessions) {
                    let _ = st.destroy_session(&sid, None, || Ok(()), &mut fx);
                }
            }
            // OPEN, and OPEN + LAYOUTGET in one COMPOUND (one Effects).
            4..=6 => {
                let Some(c) = client.and_then(|c| st.client(c).ok()) else { continue };
                k.inos.push(ino);
                let deny = if rng.chance(20) { rng.pick(&shares).unwrap() } else { 0 };
                let owner = rng.pick(&owners).unwrap();
                if let Ok(s) = st.open(&c, ino, owner, rng.pick(&shares).unwrap(), deny, rng.chance(30), &mut fx) {
                    k.note(c.clientid, &s);
                    if rng.chance(50) {
                        let granted_by = rng.pick(&k.sessions).map(|sid| (sid, 0, rng.next() as u32));
                        let want = if rng.chance(50) { LAYOUT_READ } else { LAYOUT_RW };
                        if let Ok((l, _)) = st.layout_grant(c.clientid, ino, &s, want, 1, 7, granted_by, &mut fx) {
                            k.note(c.clientid, &l);
                        }
                    }
                }
            }
            7 => {
                if let Some((c, s)) = rng.pick(&k.of_kind(st, |k| matches!(k, StateKind::Open { .. }))) {
                    let rec = st.get(&s.other).unwrap();
                    let StateKind::Open { access, deny, .. } = rec.kind else { unreachable!() };
                    let _ = st.open_downgrade(c, rec.ino, &s, if access == R | W { R } else { access }, deny & R, &mut fx);
                }
            }
            8 | 9 => {
                if let Some((c, s)) = rng.pick(&k.of_kind(st, |k| matches!(k, StateKind::Open { .. }))) {
                    let ino = st.get(&s.other).unwrap().ino;
                    let _ = st.close(c, ino, &s, rng.chance(20), &mut fx);
                }
            }
            // LOCK by a new or a known lock owner, LOCKU.
            10 | 11 => {
                let (start, len) = (rng.below(40) as u64, 1 + rng.below(20) as u64);
                let (start, end) = lock_range(start, if rng.chance(10) { u64::MAX } else { len }).unwrap();
                let write = rng.chance(50);
                let opens = k.of_kind(st, |k| matches!(k, StateKind::Open { .. }));
                let locks = k.of_kind(st, |k| matches!(k, StateKind::Lock { .. }));
                let (c, s, new_owner) = if rng.chance(50) || locks.is_empty() {
                    let Some((c, s)) = rng.pick(&opens) else { continue };
                    (c, s, Some(rng.pick(&lockers).unwrap()))
                } else {
                    let (c, s) = rng.pick(&locks).unwrap();
                    (c, s, None)
                };
                let Ok(entry) = st.client(c) else { continue };
                let ino = st.get(&s.other).unwrap().ino;
                let locker = match new_owner {
                    Some(owner) => Locker::New { open: &s, owner },
                    None => Locker::Existing { lock: &s },
                };
                if let Ok(LockOutcome::Granted(l)) = st.lock(&entry, ino, locker, start, end, write, &mut fx) {
                    k.note(c, &l);
                }
            }
            12 => {
                if let Some((c, s)) = rng.pick(&k.of_kind(st, |k| matches!(k, StateKind::Lock { .. }))) {
                    let ino = st.get(&s.other).unwrap().ino;
                    let start = rng.below(40) as u64;
                    let _ = st.locku(c, ino, &s, start, start + 1 + rng.below(30) as u64, &mut fx);
                }
            }
            // LAYOUTRETURN of a file or of all; a recall; a layout fenced.
            13 => {
                if let Some((c, s)) = rng.pick(&k.of_kind(st, |k| matches!(k, StateKind::Layout { .. }))) {
                    let ino = st.get(&s.other).unwrap().ino;
                    let bits = if rng.chance(50) { LAYOUT_READ } else { LAYOUT_READ | LAYOUT_RW };
                    if rng.chance(70) {
                        let _ = st.layout_return_file(c, ino, &s, bits, rng.chance(80), &mut fx);
                    } else {
                        let _ = st.layout_return_all(c, bits, &mut fx);
                    }
                }
            }
            14 => {
                if rng.chance(50) {
                    st.recall_layouts(ino, client, rng.chance(50), "test", &mut fx);
                } else if let Some((c, s)) = rng.pick(&k.of_kind(st, |k| matches!(k, StateKind::Layout { .. }))) {
                    let ino = st.get(&s.other).unwrap().ino;
                    st.note_recall(PendingRecall { other: s.other, clientid: c, ino, deadline: Instant::now() });
                    st.fence_overdue(Instant::now(), &mut fx);
                }
            }
            // A delegation granted as ops::deleg does (the state and its
            // record in one step of the state layer).
            15 => {
                let Some(c) = client.and_then(|c| st.client(c).ok()) else { continue };
                let write = rng.chance(50);
                let granted_by = rng.pick(&k.sessions).map(|sid| (sid, 1, 2));
                let deleg = deleg::Deleg {
                    clientid: c.clientid,
                    ino,
                    write,
                    fh_export: 1,
                    fh_generation: 3,
                    granted_by,
                    recall_deadline: None,
                    seen_change: rng.chance(50).then_some(rng.next()),
                    change_bumps: rng.below(3) as u64,
                };
                if let Ok(d) = st.grant_deleg(&c, deleg, 1 << 20, Instant::now(), &mut fx) {
                    k.inos.push(ino);
                    k.note(c.clientid, &d);
                }
            }
            // DELEGRETURN, or a delegation revoked (and then freed).
            16 => {
                if let Some((c, s)) = rng.pick(&k.of_kind(st, |k| matches!(k, StateKind::Deleg { .. }))) {
                    match rng.below(3) {
                        0 => {
                            st.remove_state(&s.other, &mut fx);
                            st.delegs().remove(&s.other);
                        }
                        1 => {
                            st.revoke(&s.other, &mut fx);
                        }
                        _ => {
                            let _ = st.free_stateid(c, &s, &mut fx);
                        }
                    }
                }
            }
            17 => {
                if let Some((c, s)) = rng.pick(&k.of_kind(st, |k| matches!(k, StateKind::Lock { .. } | StateKind::Layout { .. }))) {
                    let _ = st.free_stateid(c, &s, &mut fx);
                }
            }
            // A client's lease runs out; DESTROY_CLIENTID.
            18 => {
                if let Some(c) = client.filter(|c| st.client(*c).is_ok() && rng.chance(40)) {
                    st.age_client(c, LEASE * 2);
                    st.release_if_expired(&[c], LEASE, &mut fx);
                }
            }
            _ => {
                if let Some(c) = client {
                    let _ = st.destroy_clientid(c, None, || Ok(()), &mut fx);
                }
            }
        }
        sink(fx);
    }
    k.inos.sort_unstable();
    k.inos.dedup();
    k
}

/// Whether `b` answers every query about what `k` names as `a` does; the
/// first difference otherwise.
fn same_answers(a: &StateStore, b: &StateStore, k: &Known) -> Result<(), String> {
    fn eq<T: PartialEq + std::fmt::Debug>(what: impl std::fmt::Display, x: T, y: T) -> Result<(), String> {
        if x == y {
            Ok(())
        } else {
            Err(format!("{what}: {x:?} != {y:?}"))
        }
    }
    eq("states held", a.states_held(), b.states_held())?;
    eq("layouts held", a.layouts_held(), b.layouts_held())?;
    eq("clients", a.client_count(), b.client_count())?;
    for &c in &k.clients {
        let (ca, cb) = (a.client(c), b.client(c));
        eq(format_args!("client {c:x} known"), ca.is_ok(), cb.is_ok())?;
        if let (Ok(ca), Ok(cb)) = (ca, cb) {
            eq(format_args!("client {c:x}"), ClientRow::of(&ca.record()), ClientRow::of(&cb.record()))?;
            let sessions = |e: &ClientEntry| e.record().sessions.into_iter().collect::<BTreeSet<_>>();
            eq(format_args!("client {c:x} sessions"), sessions(&ca), sessions(&cb))?;
            eq(format_args!("client {c:x} held"), a.held_by(c), b.held_by(c))?;
            eq(format_args!("client {c:x} may open"), a.state_gate(c, false).err(), b.state_gate(c, false).err())?;
            eq(format_args!("client {c:x} may reclaim"), a.state_gate(c, true).err(), b.state_gate(c, true).err())?;
        }
    }
    for s in &k.sessions {
        let info = |st: &StateStore| st.session(s).map(|x| (SessionRecord::of(&x), x.highest_slot()));
        eq(format_args!("session {s:02x?}"), info(a), info(b))?;
        eq(format_args!("SEQUENCE on {s:02x?}"), a.sequence(s).map(|x| x.1), b.sequence(s).map(|x| x.1))?;
    }
    for (c, o) in &k.stateids {
        let (ra, rb) = (a.get(o), b.get(o));
        eq(format_args!("state {o:02x?}"), &ra, &rb)?;
        let seqid = ra.as_ref().map_or(1, |r| r.seqid);
        for given in [0, seqid.wrapping_sub(1), seqid, seqid + 1] {
            let s = stateid(o, given);
            eq(format_args!("TEST_STATEID {o:02x?} seqid {given}"), a.test_stateid(*c, &s), b.test_stateid(*c, &s))?;
            eq(format_args!("find {o:02x?} seqid {given}"), a.find(*c, &s), b.find(*c, &s))?;
        }
        eq(format_args!("live {o:02x?}"), a.is_live(o), b.is_live(o))?;
        // A delegation held: its own record, where its state still is.
        let deleg = |st: &StateStore| st.get(o).and(st.delegs().get(o).map(|d| deleg::Deleg { recall_deadline: None, ..d.clone() }));
        eq(format_args!("delegation {o:02x?}"), deleg(a), deleg(b))?;
    }
    for &ino in &k.inos {
        eq(format_args!("state on {ino}"), a.has_state_on(ino), b.has_state_on(ino))?;
        let share = |st: &StateStore| st.file_shard(ino).files.get(&ino).map(|f| f.share.clone());
        eq(format_args!("share reservations of {ino}"), share(a), share(b))?;
        for start in [0, 5, 20, 39] {
            for write in [false, true] {
                let probe = |st: &StateStore| st.lockt(0, ino, b"probe", start, start + 3, write).is_some();
                eq(format_args!("LOCKT {ino} at {start} write {write}"), probe(a), probe(b))?;
            }
        }
        let live_delegs = |st: &StateStore| st.delegs().on_ino(ino).into_iter().filter(|o| st.get(o).is_some()).collect::<BTreeSet<_>>();
        eq(format_args!("delegations on {ino}"), live_delegs(a), live_delegs(b))?;
        eq(format_args!("byte-range locks on {ino}"), a.locks_on(ino), b.locks_on(ino))?;
        for &c in &k.clients {
            eq(format_args!("access of {c:x} on {ino}"), a.open_access_of(c, ino), b.open_access_of(c, ino))?;
            for write in [false, true] {
                eq(format_args!("others' opens for {c:x} on {ino}"), a.others_open(c, ino, write), b.others_open(c, ino, write))?;
            }
            for owner in [&b"l1"[..], b"l2"] {
                // Any conflicting lock may answer LOCKT (a replay keeps each
                // client's locks in a row of its own: another order).
                let probe = |st: &StateStore| st.lockt(c, ino, owner, 0, u64::MAX, true).is_some();
                eq(format_args!("LOCKT of {c:x} {owner:?} on {ino}"), probe(a), probe(b))?;
            }
        }
    }
    Ok(())
}

/// A journaled store after a random run, its journal, and what it made.
fn journaled_run(seed: u64, steps: usize) -> (StateStore, Vec<StateChange>, Known, MemStore) {
    let mut st = StateStore::new(EPOCH, vec![], LEASE, StateCaps::default());
    st.set_journal(true);
    let kv = MemStore::new();
    let mut journal = vec![];
    let known = drive(&st, seed, steps, &mut |fx| {
        // One KV transaction per call (or COMPOUND).
        let mut txn = kv.begin().unwrap();
        records::write_all(&mut *txn, &fx.records).unwrap();
        txn.commit().unwrap();
        journal.extend(fx.records);
    });
    (st, journal, known, kv)
}

#[test]
fn replayed_store_answers_as_the_original() {
    let mut kinds_seen = BTreeSet::new();
    for (seed, steps) in (1..=12).flat_map(|seed| [(seed, 60), (seed, 150), (seed, 400)]) {
        let (st, journal, known, kv) = journaled_run(seed, steps);
        kinds_seen.extend(journal.iter().map(kind));
        let replayed = StateStore::replay(EPOCH, st.caps, &journal).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_consistent(&replayed);
        if let Err(diff) = same_answers(&st, &replayed, &known) {
            panic!("seed {seed}, {steps} steps: the replayed store differs: {diff}");
        }
        let restored = StateStore::restore_from_kv(EPOCH, st.caps, &kv).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if let Err(diff) = same_answers(&st, &restored, &known) {
            panic!("seed {seed}, {steps} steps: the store restored from the KV differs: {diff}");
        }
        // The run was not trivial.
        assert!(steps < 400 || (known.stateids.len() > 20 && known.clients.len() > 3), "seed {seed}");
    }
    // SlotKept is the COMPOUND loop's, never a state call's (`cluster_tests` has it).
    assert_eq!(kinds_seen.len(), KINDS - 1, "every kind of record was written: {kinds_seen:?}");
    assert!(!kinds_seen.contains("SlotKept"));
}

/// Leaving out the records of any one kind (but those only a restart
/// reads) makes some query answer differently, or the replay refuse.
#[test]
fn a_missing_kind_is_caught() {
    let mut caught: BTreeSet<&str> = BTreeSet::new();
    for seed in 1..=12 {
        let (st, journal, known, _) = journaled_run(seed, 400);
        let whole = StateStore::replay(EPOCH, st.caps, &journal).unwrap();
        assert_eq!(same_answers(&st, &whole, &known), Ok(()), "seed {seed}: the whole journal replays");
        for left_out in journal.iter().map(kind).collect::<BTreeSet<_>>() {
            let partial: Vec<&StateChange> = journal.iter().filter(|c| kind(c) != left_out).collect();
            let differs = match StateStore::replay(EPOCH, st.caps, partial) {
                Ok(replayed) => same_answers(&st, &replayed, &known).is_err(),
                Err(_) => true,
            };
            if differs {
                caught.insert(left_out);
            }
        }
    }
    // `O` rows (ClientConfirmed, ClientForgotten) serve reclaim after a
    // restart, not a running store; SlotKept is not a state call's;
    // FileShare is an index other nodes read, derived from the states.
    let expected: BTreeSet<&str> = samples()
        .iter()
        .map(kind)
        .filter(|k| !k.starts_with("ClientConfirmed") && !k.starts_with("ClientForgotten") && *k != "SlotKept" && *k != "FileShare")
        .collect();
    assert_eq!(caught, expected);
}

#[test]
fn journal_off_emits_no_records() {
    let st = StateStore::new(EPOCH, vec![], LEASE, StateCaps::default());
    let mut emitted = vec![];
    let known = drive(&st, 7, 400, &mut |fx| emitted.extend(fx.records));
    assert!(known.stateids.len() > 20);
    // Only the client records a restart needs (always written).
    let journal_only: Vec<&StateChange> =
        emitted.iter().filter(|c| !matches!(c, StateChange::ClientConfirmed { .. } | StateChange::ClientForgotten { .. })).collect();
    assert!(journal_only.is_empty(), "{journal_only:?}");
}

/// The same records through a KV and through a plain fold leave the same
/// rows: a state's delete takes its delegation row along in both.
#[test]
fn kv_rows_match_the_fold() {
    let (_, journal, _, kv) = journaled_run(3, 400);
    let mut rows = Rows::new();
    fold(&mut rows, &journal);
    let mut txn = kv.begin().unwrap();
    let mut in_kv = Rows::new();
    for prefix in [b'c', b'e', b's', b'b', b'f', b'O'] {
        in_kv.extend(txn.scan_prefix(&[prefix], usize::MAX).unwrap());
    }
    assert_eq!(in_kv, rows);
    let orphans: Vec<_> = rows.keys().filter(|k| k.len() == 14 && k[0] == b's' && !rows.contains_key(&k[..13])).collect();
    assert!(orphans.is_empty(), "delegation rows without their state: {orphans:?}");
}

/// A node that took the state over carries on as the first would have:
/// the same calls on both stores get the same answers (new stateids
/// aside, which each node mints), and a restored session's slots start
/// fresh.
#[test]
fn a_restored_store_carries_on() {
    let mut all_calls = 0;
    for seed in 1..=6 {
        let (st, journal, known, _) = journaled_run(seed, 300);
        let next = StateStore::replay(EPOCH, st.caps, &journal).unwrap();
        let (mut fa, mut fb) = (Effects::default(), Effects::default());
        let (mut calls, mut granted) = (0, 0);
        for &c in &known.clients {
            let (Ok(ca), Ok(cb)) = (st.client(c), next.client(c)) else { continue };
            for &ino in &known.inos {
                for (owner, access) in [(&b"o1"[..], R), (b"o2", R | W), (b"o9", W)] {
                    let a = st.open(&ca, ino, owner, access, 0, false, &mut fa).map(|s| s.seqid).map_err(|e| e.status);
                    let b = next.open(&cb, ino, owner, access, 0, false, &mut fb).map(|s| s.seqid).map_err(|e| e.status);
                    assert_eq!(a, b, "seed {seed}: OPEN of {ino} by {c:x} {owner:?}");
                    granted += a.is_ok() as usize;
                }
            }
        }
        for (c, o) in &known.stateids {
            let Some(rec) = st.get(o) else { continue };
            let s = stateid(o, 0);
            let (a, b) = match rec.kind {
                StateKind::Open { .. } => (st.close(*c, rec.ino, &s, true, &mut fa), next.close(*c, rec.ino, &s, true, &mut fb)),
                StateKind::Lock { .. } => {
                    let (a, b) = (st.locku(*c, rec.ino, &s, 0, u64::MAX, &mut fa), next.locku(*c, rec.ino, &s, 0, u64::MAX, &mut fb));
                    (a.map(|_| ()), b.map(|_| ()))
                }
                StateKind::Layout { .. } => {
                    let (a, b) = (
                        st.layout_return_file(*c, rec.ino, &s, LAYOUT_READ | LAYOUT_RW, true, &mut fa),
                        next.layout_return_file(*c, rec.ino, &s, LAYOUT_READ | LAYOUT_RW, true, &mut fb),
                    );
                    (a.map(|_| ()), b.map(|_| ()))
                }
                StateKind::Deleg { .. } => (st.free_stateid(*c, &s, &mut fa), next.free_stateid(*c, &s, &mut fb)),
            };
            assert_eq!(a, b, "seed {seed}: giving back {o:02x?} ({:?})", rec.kind);
            calls += a.is_ok() as usize;
        }
        // (Few states outlive a run: the engine's EXCHANGE_ID rules purge
        // a rebooted owner's old record with its states; see `drive`.)
        assert!(granted > 10 && calls > 2, "seed {seed}: {granted} opens granted, {calls} states given back");
        all_calls += calls;
        assert_eq!((st.states_held(), st.layouts_held()), (next.states_held(), next.layouts_held()), "seed {seed}");
        assert_consistent(&next);
        for sid in &known.sessions {
            if let Some(s) = next.session(sid) {
                assert!(matches!(lock(&s.slots).begin(0, 1), Ok(pnfs_protocol::session::SlotUse::New)), "a fresh slot takes seqid 1");
            }
        }
    }
    assert!(all_calls > 20, "{all_calls} states given back in all");
}

/// OPEN and LAYOUTGET of one COMPOUND, sharing one `Effects`, are one KV
/// transaction of two rows: the layout state created and granted in one
/// call is written once.
#[test]
fn one_compound_one_transaction() {
    let mut st = StateStore::new(EPOCH, vec![], LEASE, StateCaps::default());
    st.set_journal(true);
    let mut fx = Effects::default();
    let id = st.exchange_id(&exchange_args(b"c", 0), None, "192.0.2.1".parse().unwrap(), LEASE, &mut fx).unwrap().clientid;
    new_session(&st, &mut Rng(fastrand::Rng::with_seed(1)), id, &mut fx).unwrap();
    st.reclaim_complete(id, &mut fx).unwrap();
    let mut compound = Effects::default();
    let open = st.open(&st.client(id).unwrap(), 5, b"o", R | W, 0, false, &mut compound).unwrap();
    let (layout, _) = st.layout_grant(id, 5, &open, LAYOUT_RW, 1, 1, None, &mut compound).unwrap();
    assert_eq!(compound.records.iter().map(kind).collect::<Vec<_>>(), ["StatePut", "FileShare", "StatePut", "StatePut"]);
    let kv = MemStore::new();
    let mut txn = kv.begin().unwrap();
    assert_eq!(records::write_all(&mut *txn, &fx.records).unwrap(), 3, "client, session, confirmed owner");
    assert_eq!(records::write_all(&mut *txn, &compound.records).unwrap(), 3, "open, layout, the client's share of the file");
    txn.commit().unwrap();
    let next = StateStore::restore_from_kv(EPOCH, st.caps, &kv).unwrap();
    assert_eq!(next.get(&layout.other).map(|r| r.seqid), Some(layout.seqid));
    assert_eq!(next.find(id, &open), st.find(id, &open));
}

/// The engine's journal order replays: on CREATE_SESSION of a rebooted
/// client the old instance's purge comes before the new one's records; when
/// a full table makes room, a dropped confirmed client's ClientForgotten
/// comes before its ClientPurged.
#[test]
fn engine_journal_order_replays() {
    let caps = StateCaps { max_clients: 2, ..StateCaps::default() };
    let mut st = StateStore::new(EPOCH, vec![], LEASE, caps);
    st.set_journal(true);
    let mut rng = Rng(fastrand::Rng::with_seed(3));
    let mut journal = vec![];
    let mut fx = Effects::default();
    let addr = "192.0.2.1".parse().unwrap();
    let old = st.exchange_id(&exchange_args(b"a", 1), None, addr, LEASE, &mut fx).unwrap().clientid;
    new_session(&st, &mut rng, old, &mut fx).unwrap();
    // a reboots: its new instance's CREATE_SESSION purges the old one.
    let new = st.exchange_id(&exchange_args(b"a", 2), None, addr, LEASE, &mut fx).unwrap().clientid;
    journal.append(&mut fx.records);
    new_session(&st, &mut rng, new, &mut fx).unwrap();
    let at = |recs: &[StateChange], f: &dyn Fn(&StateChange) -> bool| recs.iter().position(f).unwrap();
    let purged = at(&fx.records, &|r| matches!(r, StateChange::ClientPurged { clientid } if *clientid == old));
    assert!(purged < at(&fx.records, &|r| matches!(r, StateChange::SessionCreated { .. })));
    journal.append(&mut fx.records);
    // b confirmed, then silent; the table full: c's EXCHANGE_ID drops b.
    let b = st.exchange_id(&exchange_args(b"b", 1), None, addr, LEASE, &mut fx).unwrap().clientid;
    new_session(&st, &mut rng, b, &mut fx).unwrap();
    journal.append(&mut fx.records);
    st.age_client(b, LEASE * 2);
    let c = st.exchange_id(&exchange_args(b"c", 1), None, addr, LEASE, &mut fx).unwrap().clientid;
    let forgotten = at(&fx.records, &|r| matches!(r, StateChange::ClientForgotten { owner } if owner == b"b"));
    assert!(forgotten < at(&fx.records, &|r| matches!(r, StateChange::ClientPurged { clientid } if *clientid == b)));
    journal.append(&mut fx.records);
    let next = StateStore::replay(EPOCH, caps, &journal).unwrap();
    assert!(next.client(old).is_err() && next.client(b).is_err());
    assert!(next.client(new).is_ok_and(|e| e.lock().confirmed) && next.client(c).is_ok());
    let mut rows = Rows::new();
    fold(&mut rows, &journal);
    let reclaimable: Vec<&[u8]> = rows.keys().filter(|k| k[0] == crate::keyspace::CLIENT_RECORD).map(|k| &k[1..]).collect();
    assert_eq!(reclaimable, [b"a".as_slice()], "b's reclaim record is forgotten, a's kept");
    assert_consistent(&next);
}

//! The state layer's changes as KV records ([`StateChange`] <-> [`Record`]):
//! what a KV-backed store writes, and what [`StateStore::restore`]
//! (`replay.rs`) reads back on another MDS node.
//!
//! Keys follow `crate::keyspace` (the `c`, `e`, `s`, `b` and `O` rows).
//! Values are one version byte ([`RECORD_VERSION`]) then the fields in XDR
//! (RFC 4506: big-endian, 4-byte aligned, strict), as listed per kind below;
//! the `O` rows keep the MDS's existing value `1`. Decoding is bounded and
//! strict: bad bytes (an unknown version, a short or overlong value, bad
//! padding, an unknown kind, trailing bytes) are a [`RecordError`], never a
//! panic.
//!
//! | change | record | value after the version byte |
//! |---|---|---|
//! | `ClientPut` | put `c` clientid | owner<1024>, verifier (8 bytes), principal (bool, uid, gid), address (4 or 6, then 4 or 16 bytes), confirmed, cs_sequence, cs_reply (bool, opaque<1 MiB>), reclaim_complete, may_reclaim |
//! | `ClientPurged` | delete `c` clientid | |
//! | `ClientConfirmed` | put `O` owner = `1` | (no version byte: the existing row) |
//! | `ClientForgotten` | delete `O` owner | |
//! | `SessionCreated` | put `e` sessionid | clientid, fore and back channel (5 u32 each), cb_program, minor |
//! | `SessionDestroyed` | delete `e` sessionid | |
//! | `StatePut` | put `s` other | clientid, ino, seqid, revoked, kind (0 open: owner, access, deny; 1 lock: owner, open `other` (12 bytes); 2 delegation: write; 3 layout: iomodes, fh_export, fh_generation, granted_by (bool, session (16 bytes), slot, seqid)) |
//! | `StateRemoved` | delete `s` other (and the `s` other `d` row under it) | |
//! | `DelegPut` | put `s` other `d` | clientid, ino, write, fh_export, fh_generation, granted_by, seen_change (bool, u64), change_bumps |
//! | `ByteLocks` | put `b` ino clientid (delete when the client has no lock left on the file) | count, then per lock: clientid, owner, start, end, write |
//! | `SlotKept` | put `e` sessionid `t` slot (deleted with its session) | seqid, reply (bool, opaque<16 MiB>) |
//! | `FileShare` | put `f` ino clientid (delete when the client has no open or delegation left on the file) | access, deny, delegation (0 none, 1 read, 2 write) |
//!
//! Not records, on purpose: timers (lease clocks, layout recall and
//! delegation recall deadlines: a node that takes over starts them anew,
//! as after a restart), connections bound to a session's back channel (they
//! do not move), the slot seqids of read-only COMPOUNDs (a cluster writes
//! a slot's row only with a COMPOUND's state records: `SlotKept`), and a
//! delegation's CB_GETATTR counters after its grant.

use super::deleg::Deleg;
use super::*;
use crate::keyspace::{self, STATE, STATE_BYTE_LOCKS, STATE_CLIENT, STATE_DELEG_SUFFIX, STATE_SESSION, STATE_SLOT_SUFFIX};
use pnfs_kv::KvTxn;
use pnfs_protocol::xdr::{Decoder, Encoder, XdrError};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The format of every record value written by this version.
pub const RECORD_VERSION: u8 = 1;

/// Longest owner (client, open or lock owner) a record may carry
/// (NFS4_OPAQUE_LIMIT: what the wire allows).
const MAX_OWNER: u32 = 1024;
/// Longest cached CREATE_SESSION reply a client record may carry.
const MAX_CS_REPLY: u32 = 1 << 20;
/// Longest cached COMPOUND reply a slot record may carry.
const MAX_SLOT_REPLY: u32 = 16 << 20;

/// A client record: what a replayed store needs to answer EXCHANGE_ID,
/// CREATE_SESSION (its replay cache) and the state gate as the first one
/// did. Its sessions come from their own records; its lease clock restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub clientid: u64,
    pub owner: Vec<u8>,
    pub verifier: [u8; 8],
    pub principal: Option<(u32, u32)>,
    pub addr: IpAddr,
    pub confirmed: bool,
    pub cs_sequence: u32,
    pub cs_reply: Option<Vec<u8>>,
    pub reclaim_complete: bool,
    pub may_reclaim: bool,
}

impl ClientRow {
    pub fn of(c: &Client) -> Self {
        ClientRow {
            clientid: c.clientid,
            owner: c.owner.clone(),
            verifier: c.verifier,
            principal: c.principal,
            addr: c.ext.addr,
            confirmed: c.confirmed,
            cs_sequence: c.cs_sequence,
            cs_reply: c.cs_reply.clone(),
            reclaim_complete: c.reclaim_complete,
            may_reclaim: c.ext.may_reclaim,
        }
    }

    /// The client as a fresh record of a store (no sessions nor states
    /// yet, lease renewed now).
    pub(super) fn to_client(&self) -> Client {
        Client {
            clientid: self.clientid,
            owner: self.owner.clone(),
            verifier: self.verifier,
            confirmed: self.confirmed,
            principal: self.principal,
            cs_sequence: self.cs_sequence,
            cs_reply: self.cs_reply.clone(),
            sessions: vec![],
            reclaim_complete: self.reclaim_complete,
            ext: MdsClient::new(self.addr, self.may_reclaim),
        }
    }
}

/// A session record: what its slot table and callbacks need (the channels
/// negotiated: the fore channel's `max_requests` is the slot count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub clientid: u64,
    pub fore: ChannelLimits,
    pub back: ChannelLimits,
    pub cb_program: u32,
    pub minor: u32,
}

impl SessionRecord {
    pub fn of(s: &Session) -> Self {
        SessionRecord { id: s.id, clientid: s.clientid, fore: s.fore, back: s.back, cb_program: s.cb_program, minor: s.minor }
    }
}

/// One KV write: a put, or a delete of a key (a state's delete also takes
/// the delegation row under it: see the module table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl Record {
    pub fn key(&self) -> &[u8] {
        match self {
            Record::Put { key, .. } | Record::Delete { key } => key,
        }
    }
}

/// Why bytes are not a state record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// A key outside the state layer's rows, or of the wrong length.
    Key(Vec<u8>),
    /// A value written by a format this version does not know.
    Version(u8),
    /// A value whose fields do not decode.
    Value { key: Vec<u8>, why: String },
    /// Records that decode but do not fit together (a session of an unknown
    /// client, a state in the wrong shard, a state over the caps).
    Inconsistent(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Key(k) => write!(f, "not a state record key: {k:02x?}"),
            RecordError::Version(v) => write!(f, "state record of format {v}, this MDS reads format {RECORD_VERSION}: upgrade the MDS"),
            RecordError::Value { key, why } => write!(f, "state record {key:02x?} does not decode: {why}"),
            RecordError::Inconsistent(why) => write!(f, "state records do not fit together: {why}"),
        }
    }
}

impl std::error::Error for RecordError {}

fn put_var(e: &mut Encoder, b: &[u8]) {
    e.put_u32(b.len() as u32);
    e.put_fixed_opaque(b);
}

fn put_limits(e: &mut Encoder, l: &ChannelLimits) {
    for v in [l.max_request, l.max_response, l.max_response_cached, l.max_ops, l.max_requests] {
        e.put_u32(v);
    }
}

fn get_limits(d: &mut Decoder<'_>) -> Result<ChannelLimits, XdrError> {
    Ok(ChannelLimits {
        max_request: d.get_u32()?,
        max_response: d.get_u32()?,
        max_response_cached: d.get_u32()?,
        max_ops: d.get_u32()?,
        max_requests: d.get_u32()?,
    })
}

fn put_granted_by(e: &mut Encoder, g: &Option<(SessionId, u32, u32)>) {
    e.put_bool(g.is_some());
    if let Some((sid, slot, seq)) = g {
        e.put_fixed_opaque(sid);
        e.put_u32(*slot);
        e.put_u32(*seq);
    }
}

fn get_granted_by(d: &mut Decoder<'_>) -> Result<Option<(SessionId, u32, u32)>, XdrError> {
    Ok(if d.get_bool()? { Some((d.get_fixed_opaque::<16>()?, d.get_u32()?, d.get_u32()?)) } else { None })
}

fn get_u16(d: &mut Decoder<'_>) -> Result<u16, XdrError> {
    let v = d.get_u32()?;
    u16::try_from(v).map_err(|_| XdrError::TooLong { len: v as u64, max: u16::MAX as u64 })
}

fn value(body: impl FnOnce(&mut Encoder)) -> Vec<u8> {
    let mut e = Encoder::with_buffer(vec![RECORD_VERSION]);
    body(&mut e);
    e.into_inner()
}

fn state_key(other: &StateOther) -> Vec<u8> {
    keyspace::with_bytes(STATE, other)
}

/// The key of a session's slot row; [`slots_prefix`] then the slot.
pub fn slot_key(session: &SessionId, slot: u32) -> Vec<u8> {
    let mut k = slots_prefix(session);
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

/// The prefix of every slot row of `session`.
pub fn slots_prefix(session: &SessionId) -> Vec<u8> {
    let mut k = keyspace::with_bytes(STATE_SESSION, session);
    k.push(STATE_SLOT_SUFFIX);
    k
}

fn locks_key(ino: u64, clientid: u64) -> Vec<u8> {
    let mut k = keyspace::with_u64(STATE_BYTE_LOCKS, ino);
    k.extend_from_slice(&clientid.to_be_bytes());
    k
}

fn deleg_key(other: &StateOther) -> Vec<u8> {
    let mut k = state_key(other);
    k.push(STATE_DELEG_SUFFIX);
    k
}

/// The record of a change.
pub fn encode(c: &StateChange) -> Record {
    match c {
        StateChange::ClientConfirmed { owner } => Record::Put { key: keyspace::with_bytes(keyspace::CLIENT_RECORD, owner), value: b"1".to_vec() },
        StateChange::ClientForgotten { owner } => Record::Delete { key: keyspace::with_bytes(keyspace::CLIENT_RECORD, owner) },
        StateChange::ClientPut { rec: r } => Record::Put {
            key: keyspace::with_u64(STATE_CLIENT, r.clientid),
            value: value(|e| {
                put_var(e, &r.owner);
                e.put_fixed_opaque(&r.verifier);
                e.put_bool(r.principal.is_some());
                if let Some((uid, gid)) = r.principal {
                    e.put_u32(uid);
                    e.put_u32(gid);
                }
                match r.addr {
                    IpAddr::V4(a) => {
                        e.put_u32(4);
                        e.put_fixed_opaque(&a.octets());
                    }
                    IpAddr::V6(a) => {
                        e.put_u32(6);
                        e.put_fixed_opaque(&a.octets());
                    }
                }
                e.put_bool(r.confirmed);
                e.put_u32(r.cs_sequence);
                e.put_bool(r.cs_reply.is_some());
                if let Some(b) = &r.cs_reply {
                    put_var(e, b);
                }
                e.put_bool(r.reclaim_complete);
                e.put_bool(r.may_reclaim);
            }),
        },
        StateChange::ClientPurged { clientid } => Record::Delete { key: keyspace::with_u64(STATE_CLIENT, *clientid) },
        StateChange::SessionCreated { rec: s } => Record::Put {
            key: keyspace::with_bytes(STATE_SESSION, &s.id),
            value: value(|e| {
                e.put_u64(s.clientid);
                put_limits(e, &s.fore);
                put_limits(e, &s.back);
                e.put_u32(s.cb_program);
                e.put_u32(s.minor);
            }),
        },
        StateChange::SessionDestroyed { id } => Record::Delete { key: keyspace::with_bytes(STATE_SESSION, id) },
        StateChange::StatePut { other, rec } => Record::Put {
            key: state_key(other),
            value: value(|e| {
                e.put_u64(rec.clientid);
                e.put_u64(rec.ino);
                e.put_u32(rec.seqid);
                e.put_bool(rec.revoked);
                match &rec.kind {
                    StateKind::Open { owner, access, deny } => {
                        e.put_u32(0);
                        put_var(e, owner);
                        e.put_u32(*access);
                        e.put_u32(*deny);
                    }
                    StateKind::Lock { owner, open } => {
                        e.put_u32(1);
                        put_var(e, owner);
                        e.put_fixed_opaque(open);
                    }
                    StateKind::Deleg { write } => {
                        e.put_u32(2);
                        e.put_bool(*write);
                    }
                    StateKind::Layout { iomodes, fh_export, fh_generation, granted_by } => {
                        e.put_u32(3);
                        e.put_u32(*iomodes);
                        e.put_u32(*fh_export as u32);
                        e.put_u32(*fh_generation);
                        put_granted_by(e, granted_by);
                    }
                }
            }),
        },
        StateChange::StateRemoved { other } => Record::Delete { key: state_key(other) },
        // `recall_deadline` is a timer, not recorded.
        StateChange::DelegPut { other, rec: d } => Record::Put {
            key: deleg_key(other),
            value: value(|e| {
                e.put_u64(d.clientid);
                e.put_u64(d.ino);
                e.put_bool(d.write);
                e.put_u32(d.fh_export as u32);
                e.put_u32(d.fh_generation);
                put_granted_by(e, &d.granted_by);
                e.put_bool(d.seen_change.is_some());
                e.put_u64(d.seen_change.unwrap_or(0));
                e.put_u64(d.change_bumps);
            }),
        },
        StateChange::SlotKept { session, slot, seqid, reply } => Record::Put {
            key: slot_key(session, *slot),
            value: value(|e| {
                e.put_u32(*seqid);
                e.put_bool(reply.is_some());
                if let Some(r) = reply {
                    put_var(e, r);
                }
            }),
        },
        StateChange::FileShare { ino, clientid, share } if share.is_empty() => Record::Delete { key: super::xnode::share_key(*ino, *clientid) },
        StateChange::FileShare { ino, clientid, share } => Record::Put { key: super::xnode::share_key(*ino, *clientid), value: value(|e| share.encode(e)) },
        StateChange::ByteLocks { ino, clientid, locks } if locks.is_empty() => Record::Delete { key: locks_key(*ino, *clientid) },
        StateChange::ByteLocks { ino, clientid, locks } => Record::Put {
            key: locks_key(*ino, *clientid),
            value: value(|e| {
                e.put_u32(locks.len() as u32);
                for l in locks {
                    e.put_u64(l.clientid);
                    put_var(e, &l.owner);
                    e.put_u64(l.start);
                    e.put_u64(l.end);
                    e.put_bool(l.write);
                }
            }),
        },
    }
}

/// What a key names.
enum Row {
    Owner(Vec<u8>),
    Client(u64),
    Session(SessionId),
    Slot(SessionId, u32),
    State(StateOther),
    Deleg(StateOther),
    Locks(u64, u64),
    File(u64, u64),
}

fn row(key: &[u8]) -> Result<Row, RecordError> {
    let bad = || RecordError::Key(key.to_vec());
    let (&prefix, rest) = key.split_first().ok_or_else(bad)?;
    let u64_of = |b: &[u8]| b.try_into().map(u64::from_be_bytes).map_err(|_| bad());
    Ok(match prefix {
        keyspace::CLIENT_RECORD => Row::Owner(rest.to_vec()),
        STATE_CLIENT => Row::Client(u64_of(rest)?),
        STATE_SESSION => match rest.len() {
            16 => Row::Session(rest.try_into().map_err(|_| bad())?),
            21 if rest[16] == STATE_SLOT_SUFFIX => Row::Slot(rest[..16].try_into().map_err(|_| bad())?, u32::from_be_bytes(rest[17..].try_into().map_err(|_| bad())?)),
            _ => return Err(bad()),
        },
        STATE_BYTE_LOCKS if rest.len() == 16 => Row::Locks(u64_of(&rest[..8])?, u64_of(&rest[8..])?),
        STATE_BYTE_LOCKS => return Err(bad()),
        keyspace::STATE_FILE if rest.len() == 16 => Row::File(u64_of(&rest[..8])?, u64_of(&rest[8..])?),
        STATE => match rest.len() {
            12 => Row::State(rest.try_into().map_err(|_| bad())?),
            13 if rest[12] == STATE_DELEG_SUFFIX => Row::Deleg(rest[..12].try_into().map_err(|_| bad())?),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    })
}

/// The change a record says; an error for bytes that are not one.
pub fn decode(r: &Record) -> Result<StateChange, RecordError> {
    match r {
        Record::Delete { key } => Ok(match row(key)? {
            Row::Owner(owner) => StateChange::ClientForgotten { owner },
            Row::Client(clientid) => StateChange::ClientPurged { clientid },
            Row::Session(id) => StateChange::SessionDestroyed { id },
            Row::State(other) => StateChange::StateRemoved { other },
            Row::Locks(ino, clientid) => StateChange::ByteLocks { ino, clientid, locks: vec![] },
            Row::File(ino, clientid) => StateChange::FileShare { ino, clientid, share: Default::default() },
            // A delegation's row goes with its state, a slot's with its session.
            Row::Deleg(_) | Row::Slot(..) => return Err(RecordError::Key(key.clone())),
        }),
        Record::Put { key, value } => decode_row(key, value),
    }
}

/// The change a KV row (a put) says: what [`StateStore::restore`] reads.
pub fn decode_row(key: &[u8], value: &[u8]) -> Result<StateChange, RecordError> {
    let what = row(key)?;
    if let Row::Owner(owner) = what {
        return match value {
            b"1" => Ok(StateChange::ClientConfirmed { owner }),
            _ => Err(RecordError::Value { key: key.to_vec(), why: "a client record's value is 1".into() }),
        };
    }
    let (&version, body) = value.split_first().ok_or_else(|| RecordError::Value { key: key.to_vec(), why: "empty".into() })?;
    if version != RECORD_VERSION {
        return Err(RecordError::Version(version));
    }
    let mut d = Decoder::new(body);
    let change = decode_body(what, &mut d).map_err(|e| RecordError::Value { key: key.to_vec(), why: e.to_string() })?;
    if d.remaining() != 0 {
        return Err(RecordError::Value { key: key.to_vec(), why: format!("{} bytes after the record", d.remaining()) });
    }
    Ok(change)
}

fn decode_body(what: Row, d: &mut Decoder<'_>) -> Result<StateChange, XdrError> {
    Ok(match what {
        // Not versioned XDR: `decode_row` reads these itself.
        Row::Owner(_) => return Err(XdrError::BadDiscriminant(keyspace::CLIENT_RECORD as i64)),
        Row::Client(clientid) => {
            let owner = d.get_opaque(MAX_OWNER)?.to_vec();
            let verifier = d.get_fixed_opaque::<8>()?;
            let principal = if d.get_bool()? { Some((d.get_u32()?, d.get_u32()?)) } else { None };
            let addr = match d.get_u32()? {
                4 => IpAddr::V4(Ipv4Addr::from(d.get_fixed_opaque::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(d.get_fixed_opaque::<16>()?)),
                f => return Err(XdrError::BadDiscriminant(f as i64)),
            };
            let confirmed = d.get_bool()?;
            let cs_sequence = d.get_u32()?;
            let cs_reply = if d.get_bool()? { Some(d.get_opaque(MAX_CS_REPLY)?.to_vec()) } else { None };
            let reclaim_complete = d.get_bool()?;
            let may_reclaim = d.get_bool()?;
            StateChange::ClientPut {
                rec: ClientRow { clientid, owner, verifier, principal, addr, confirmed, cs_sequence, cs_reply, reclaim_complete, may_reclaim },
            }
        }
        Row::Session(id) => StateChange::SessionCreated {
            rec: SessionRecord { id, clientid: d.get_u64()?, fore: get_limits(d)?, back: get_limits(d)?, cb_program: d.get_u32()?, minor: d.get_u32()? },
        },
        Row::Slot(session, slot) => {
            let seqid = d.get_u32()?;
            let reply = if d.get_bool()? { Some(d.get_opaque(MAX_SLOT_REPLY)?.to_vec()) } else { None };
            StateChange::SlotKept { session, slot, seqid, reply }
        }
        Row::State(other) => {
            let (clientid, ino, seqid, revoked) = (d.get_u64()?, d.get_u64()?, d.get_u32()?, d.get_bool()?);
            let kind = match d.get_u32()? {
                0 => StateKind::Open { owner: d.get_opaque(MAX_OWNER)?.to_vec(), access: d.get_u32()?, deny: d.get_u32()? },
                1 => StateKind::Lock { owner: d.get_opaque(MAX_OWNER)?.to_vec(), open: d.get_fixed_opaque::<12>()? },
                2 => StateKind::Deleg { write: d.get_bool()? },
                3 => StateKind::Layout { iomodes: d.get_u32()?, fh_export: get_u16(d)?, fh_generation: d.get_u32()?, granted_by: get_granted_by(d)? },
                k => return Err(XdrError::BadDiscriminant(k as i64)),
            };
            StateChange::StatePut { other, rec: StateRec { clientid, ino, seqid, kind, revoked } }
        }
        Row::Deleg(other) => {
            let (clientid, ino, write, fh_export, fh_generation) = (d.get_u64()?, d.get_u64()?, d.get_bool()?, get_u16(d)?, d.get_u32()?);
            let granted_by = get_granted_by(d)?;
            let has_seen = d.get_bool()?;
            let seen = d.get_u64()?;
            let change_bumps = d.get_u64()?;
            let seen_change = has_seen.then_some(seen);
            let rec = Deleg { clientid, ino, write, fh_export, fh_generation, granted_by, recall_deadline: None, seen_change, change_bumps };
            StateChange::DelegPut { other, rec }
        }
        Row::Locks(ino, clientid) => {
            let n = d.get_count(u32::MAX)?;
            let mut locks = Vec::with_capacity(n);
            for _ in 0..n {
                // Each lock is of the client the key names.
                let of = d.get_u64()?;
                if of != clientid {
                    return Err(XdrError::BadDiscriminant(of as i64));
                }
                locks.push(ByteLock {
                    clientid,
                    owner: d.get_opaque(MAX_OWNER)?.to_vec(),
                    start: d.get_u64()?,
                    end: d.get_u64()?,
                    write: d.get_bool()?,
                });
            }
            StateChange::ByteLocks { ino, clientid, locks }
        }
        Row::File(ino, clientid) => StateChange::FileShare { ino, clientid, share: super::xnode::Share::decode(d)? },
    })
}

/// The KV writes of a change: its record, after the delete of a state's
/// delegation row when the state goes.
pub fn writes(c: &StateChange) -> impl Iterator<Item = Record> {
    let row_below = match c {
        StateChange::StateRemoved { other } => Some(Record::Delete { key: deleg_key(other) }),
        _ => None,
    };
    row_below.into_iter().chain(std::iter::once(encode(c)))
}

/// Writes `changes` into one KV transaction: a handler that passed one
/// [`Effects`] through all its state calls (they append) commits a
/// COMPOUND's records together. Only the last write of each key is made (a
/// state created then granted in one call, an OPEN's state then its
/// LAYOUTGET's): the rows come out as if all were written in order.
/// Returns the rows written.
pub fn write_all(txn: &mut dyn KvTxn, changes: &[StateChange]) -> pnfs_kv::Result<usize> {
    let all: Vec<Record> = changes.iter().flat_map(writes).collect();
    let last: HashMap<&[u8], usize> = all.iter().enumerate().map(|(i, r)| (r.key(), i)).collect();
    let mut written = 0;
    for (i, r) in all.iter().enumerate() {
        if last.get(r.key()) != Some(&i) {
            continue;
        }
        match r {
            Record::Put { key, value } => txn.put(key, value)?,
            Record::Delete { key } => txn.delete(key)?,
        }
        written += 1;
    }
    // A session's slot rows go with it.
    for c in changes {
        if let StateChange::SessionDestroyed { id } = c {
            for key in txn.scan_keys_prefix(&slots_prefix(id), usize::MAX)? {
                txn.delete(&key)?;
                written += 1;
            }
        }
    }
    Ok(written)
}

impl StateStore {
    /// Journals a client's record as it is now (creation, CREATE_SESSION,
    /// RECLAIM_COMPLETE). Costs nothing with the journal off.
    pub(super) fn journal_client(&self, c: &Client, fx: &mut Effects) {
        if self.journal {
            fx.records.push(StateChange::ClientPut { rec: ClientRow::of(c) });
        }
    }

    /// Journals a delegation's own record (`ops::deleg` after granting).
    pub fn journal_deleg(&self, other: &StateOther, table: &deleg::DelegTable, fx: &mut Effects) {
        if self.journal {
            if let Some(d) = table.get(other) {
                fx.records.push(StateChange::DelegPut { other: *other, rec: d.clone() });
            }
        }
    }
}

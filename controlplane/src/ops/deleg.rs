//! Delegations (RFC 8881 10.2-10.4): the grant decision at OPEN and
//! WANT_DELEGATION, recalls on conflict, CB_GETATTR for write delegations,
//! revocation of recalls not honoured within a lease, DELEGRETURN,
//! DELEGPURGE and BACKCHANNEL_CTL. Bookkeeping is in `state/deleg.rs`.
//!
//! Policy: a read delegation when no other client has the file open for
//! writing, a write delegation (for opens with write access) when no other
//! client has it open at all; never while another client holds a
//! conflicting delegation, when the client has no working back channel,
//! within `mds.delegation_recall_cooldown_seconds` of a recall of the file,
//! past `mds.max_delegations`, or with `mds.delegations = false`. An
//! operation of another client that conflicts (OPEN, SETATTR, REMOVE,
//! RENAME, LINK, and through `ops::io::check_io` READ, WRITE and the
//! NFSv4.2 changes ALLOCATE, DEALLOCATE, COPY and CLONE) starts a CB_RECALL and answers NFS4ERR_DELAY until the
//! holder returned the delegation (DELEGRETURN) or lost it (revoked a
//! lease after the recall), as knfsd does; the Linux client retries.
//!
//! A delegation's stateid is a state of the state layer
//! (`StateStore::grant_deleg`, `revoke`, `remove_state`); the table of
//! `state/deleg.rs` (`StateStore::delegs`, a leaf lock) keeps the rest. No
//! state-layer call is made while that table is locked. A grant is decided
//! and recorded atomically with other clients' OPENs of the file
//! (`grant_deleg`); the recall check here runs before the OPEN's state
//! step, and a delegation granted in between makes that step answer DELAY
//! (`ops/open.rs` then recalls it).
//!
//! In a cluster (`state/xnode.rs`) the clients other nodes hold are checked
//! on the KV: an OPEN claims its share (and the delegation it may get) in
//! one transaction with the check ([`claim_open`]); other conflicting
//! operations read the file's rows ([`break_conflicts`]). A delegation of a
//! client held elsewhere is recalled by its node (a peer message,
//! [`recall_for_peer`] there) and the operation answers NFS4ERR_DELAY
//! meanwhile, as for a recall of our own.

use crate::callback::{deleg_getattr, deleg_recall, getattr_results, CbError, Callbacks};
use crate::compound::{current_inode, reply, Compound};
use crate::fh::FileHandle;
use crate::mds::Mds;
use crate::namespace::{Inode, NfsResult};
use crate::ops::stateid::{resolve, stateid};
use crate::state::deleg::{delegations_outstanding, write_delegations_outstanding, Deleg, NoGrant};
use crate::state::xnode::Conflict;
use crate::state::{Effects, Session, SessionId, StateKind, StateOther, StateStore};
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// CB_RECALLs answered NFS4ERR_DELAY or BAD_STATEID (the client has not yet
/// seen the OPEN reply that granted it) are sent again this many times.
const RECALL_RETRIES: u32 = 4;

fn none_because(why: why_no_delegation4) -> open_delegation4<'static> {
    open_delegation4::OPEN_DELEGATE_NONE_EXT(match why {
        why_no_delegation4::WND4_CONTENTION => open_none_delegation4::WND4_CONTENTION(false),
        why_no_delegation4::WND4_RESOURCE => open_none_delegation4::WND4_RESOURCE(false),
        other => open_none_delegation4::default(other),
    })
}

/// The delegation OPEN answers (after the open state exists). `share_access`
/// carries the client's OPEN4_SHARE_ACCESS_WANT_* bits.
/// `remote_ok`: the clients of other nodes leave room for one (always true
/// on a single MDS; a cluster's OPEN claimed it: [`claim_open`]).
pub fn at_open(
    m: &Mds,
    c: &Compound,
    clientid: u64,
    target: (FileHandle, &Inode),
    share_access: u32,
    claim: &open_claim4,
    remote_ok: bool,
) -> open_delegation4<'static> {
    // Reclaims and opens under a delegation get no new one.
    if !matches!(claim, open_claim4::CLAIM_NULL(_) | open_claim4::CLAIM_FH) {
        return open_delegation4::OPEN_DELEGATE_NONE;
    }
    decide(m, c, clientid, target, share_access & OPEN4_SHARE_ACCESS_MASK, share_access & OPEN4_SHARE_ACCESS_WANT_DELEG_MASK, Some(remote_ok))
}

/// The delegation an OPEN by `clientid` for `share_access` may get
/// (Some(write)), as far as it can tell before the open exists: what the
/// client wants, delegations on, a back channel up. What a cluster's
/// OPEN claims on the KV with its share ([`claim_open`]).
pub fn kind_wanted(m: &Mds, clientid: u64, share_access: u32, claim: &open_claim4) -> Option<bool> {
    if !matches!(claim, open_claim4::CLAIM_NULL(_) | open_claim4::CLAIM_FH) || !m.cfg.delegations || m.cfg.max_delegations == 0 {
        return None;
    }
    let write = want_write(share_access & OPEN4_SHARE_ACCESS_WANT_DELEG_MASK, share_access & OPEN4_SHARE_ACCESS_MASK)?;
    back_channel_up(&m.callbacks, &m.state().sessions_of(clientid)).then_some(write)
}

/// Whether `want` (a WANT_* value) for `access` asks for a write
/// delegation; None when it asks for none.
fn want_write(want: u32, access: u32) -> Option<bool> {
    match want {
        OPEN4_SHARE_ACCESS_WANT_READ_DELEG => Some(false),
        OPEN4_SHARE_ACCESS_WANT_NO_PREFERENCE | OPEN4_SHARE_ACCESS_WANT_WRITE_DELEG | OPEN4_SHARE_ACCESS_WANT_ANY_DELEG => {
            Some(access & OPEN4_SHARE_ACCESS_WRITE != 0)
        }
        _ => None,
    }
}

/// A cluster's OPEN of `ino` by `clientid`: its share (and the delegation
/// `deleg` it may get) checked against the clients other nodes hold and
/// claimed, in one KV transaction (`StateStore::claim_open`). A delegation
/// held elsewhere in the way is recalled through its node (NFS4ERR_DELAY);
/// a share reservation held elsewhere is NFS4ERR_SHARE_DENIED. Holders no
/// live node held for a lease are expired first (`StateStore::expire_stale`).
/// Ok(whether the delegation may be granted).
pub fn claim_open(m: &Mds, clientid: u64, ino: u64, access: u32, deny: u32, deleg: Option<bool>) -> NfsResult<bool> {
    let st = m.state();
    let kv = m.ns.store().as_ref();
    for first in [true, false] {
        let conflict = match st.claim_open(kv, ino, clientid, access, deny, deleg) {
            Ok(ok) => return Ok(ok),
            Err(Conflict::Kv(e)) => {
                log::warn!("OPEN of inode {ino}: checking other nodes' clients in the KV: {e}; NFS4ERR_DELAY");
                return Err(nfsstat4::NFS4ERR_DELAY);
            }
            Err(c) => c,
        };
        if first && st.expire_stale(kv, m.cfg.cluster_node_id(), &conflict.holders(), m.lease()) {
            continue;
        }
        return Err(match conflict {
            Conflict::Deleg { .. } => {
                crate::cluster::peer_recall_delegations(ino, access & OPEN4_SHARE_ACCESS_WRITE != 0);
                nfsstat4::NFS4ERR_DELAY
            }
            Conflict::Share { .. } => nfsstat4::NFS4ERR_SHARE_DENIED,
            _ => nfsstat4::NFS4ERR_DELAY,
        });
    }
    Err(nfsstat4::NFS4ERR_DELAY)
}

const OPEN4_SHARE_ACCESS_MASK: u32 = 0x3;

/// The grant decision for `access` (READ/WRITE bits) and `want` (the
/// WANT_* value). A client that said what it wants is told why it got
/// none (od_whynone); one that did not gets OPEN_DELEGATE_NONE.
/// `remote_ok`: what a cluster's OPEN found for other nodes' clients; None:
/// not looked at yet (WANT_DELEGATION claims it here).
fn decide(m: &Mds, c: &Compound, clientid: u64, (fh, inode): (FileHandle, &Inode), access: u32, want: u32, remote_ok: Option<bool>) -> open_delegation4<'static> {
    let write = match want {
        OPEN4_SHARE_ACCESS_WANT_NO_DELEG => return none_because(why_no_delegation4::WND4_NOT_WANTED),
        OPEN4_SHARE_ACCESS_WANT_CANCEL => return none_because(why_no_delegation4::WND4_CANCELLED),
        _ => match want_write(want, access) {
            Some(write) => write,
            None => return none_because(why_no_delegation4::WND4_NOT_WANTED),
        },
    };
    let none = |why| if want == OPEN4_SHARE_ACCESS_WANT_NO_PREFERENCE { open_delegation4::OPEN_DELEGATE_NONE } else { none_because(why) };
    if !m.cfg.delegations || m.cfg.max_delegations == 0 {
        return none(why_no_delegation4::WND4_RESOURCE);
    }
    if inode.ftype() != nfs_ftype4::NF4REG {
        return none(why_no_delegation4::WND4_NOT_SUPP_FTYPE);
    }
    let ino = inode.ino;
    let st = m.state();
    let Ok(client) = st.client(clientid) else { return none(why_no_delegation4::WND4_RESOURCE) };
    // Cheap first: clients without a back channel (benchmarks) stop here.
    if !back_channel_up(&m.callbacks, &st.sessions_of(clientid)) {
        return none(why_no_delegation4::WND4_RESOURCE);
    }
    let granted_by = c.session.as_ref().zip(c.slot).map(|(s, slot)| (s.id, slot, c.sequenceid));
    let d = Deleg {
        clientid,
        ino,
        write,
        fh_export: fh.export_id,
        fh_generation: fh.generation,
        granted_by,
        recall_deadline: None,
        seen_change: Some(inode.change),
        change_bumps: 0,
    };
    // A cluster: other nodes' clients leave room for it (claimed on the KV).
    let remote_ok = match remote_ok {
        Some(ok) => ok,
        None if st.journaling() => st.claim_open(m.ns.store().as_ref(), ino, clientid, 0, 0, Some(write)).unwrap_or(false),
        None => true,
    };
    if !remote_ok {
        return none(why_no_delegation4::WND4_CONTENTION);
    }
    // Decided and recorded in one step of the state layer, atomic with
    // other clients' OPENs of the file (the state, allowed on the data
    // servers when the client holds a layout of the file: tight coupling,
    // RFC 8881 13.9.2, and its record).
    let mut fx = Effects::default();
    let granted = st.grant_deleg(&client, d, m.cfg.max_delegations, Instant::now(), &mut fx);
    if st.journaling() {
        // The client's share row as granted (a claim not used goes).
        fx.records.push(st.share_record(ino, clientid));
    }
    let _ = m.apply(fx);
    let granted = match granted {
        Ok(sid) => sid,
        // One delegation per client and file; no upgrades or downgrades.
        Err(NoGrant::Held { write: held_write }) => {
            return match (held_write, want) {
                (false, OPEN4_SHARE_ACCESS_WANT_WRITE_DELEG) => none_because(why_no_delegation4::WND4_NOT_SUPP_UPGRADE),
                (true, OPEN4_SHARE_ACCESS_WANT_READ_DELEG) => none_because(why_no_delegation4::WND4_NOT_SUPP_DOWNGRADE),
                _ => open_delegation4::OPEN_DELEGATE_NONE,
            }
        }
        Err(NoGrant::Contention) => return none(why_no_delegation4::WND4_CONTENTION),
        Err(NoGrant::Resource) => return none(why_no_delegation4::WND4_RESOURCE),
    };
    crate::metrics::metrics().delegation_granted(write);
    log::debug!("{} delegation of inode {ino} to client {clientid:x}", if write { "write" } else { "read" });
    let permissions = nfsace4 { r#type: ACE4_ACCESS_ALLOWED_ACE_TYPE, flag: 0, access_mask: 0, who: b"".as_slice().into() };
    if write {
        open_delegation4::OPEN_DELEGATE_WRITE(open_write_delegation4 {
            stateid: granted,
            recall: false,
            space_limit: nfs_space_limit4::NFS_LIMIT_SIZE(u64::MAX),
            permissions,
        })
    } else {
        open_delegation4::OPEN_DELEGATE_READ(open_read_delegation4 { stateid: granted, recall: false, permissions })
    }
}

fn back_channel_up(cbs: &Callbacks, sessions: &[Arc<Session>]) -> bool {
    sessions.iter().any(|s| cbs.has_back_channel(s))
}

/// An OPEN of `ino` by `clientid` for `access`: other clients' delegations
/// it conflicts with are recalled (NFS4ERR_DELAY meanwhile).
/// (This node's: a cluster's OPEN checks other nodes' in its claim.)
pub fn break_for_open(m: &Mds, clientid: u64, ino: u64, access: u32) -> NfsResult<()> {
    break_local(m, Some(clientid), ino, access & OPEN4_SHARE_ACCESS_WRITE != 0)
}

/// REMOVE or RENAME of `name` in `dir`: the file's delegations held by
/// other clients are recalled first.
pub fn break_for_name(m: &Mds, c: &Compound, dir: u64, name: &[u8]) -> NfsResult<()> {
    // A cluster's other nodes may hold some.
    if !delegations_outstanding() && !(m.state().journaling() && m.cfg.delegations) {
        return Ok(());
    }
    match m.ns.lookup(dir, name) {
        Ok(i) => break_conflicts(m, c.clientid().ok(), i.ino, true),
        Err(_) => Ok(()), // the operation itself reports it
    }
}

/// Recalls the delegations of clients other than `caller` on `ino` that a
/// change (`write`: writes, SETATTR, names) or a read open conflicts with,
/// this node's and (a cluster) other nodes'. Ok when none is left;
/// NFS4ERR_DELAY while one is being recalled.
pub fn break_conflicts(m: &Mds, caller: Option<u64>, ino: u64, write: bool) -> NfsResult<()> {
    break_local(m, caller, ino, write)?;
    break_remote(m, caller, ino, write)
}

/// READ and WRITE through the MDS: with an open, lock or delegation
/// stateid, other nodes' clients were checked when the open was claimed
/// (no node grants a delegation beside it), so only this node's are;
/// with a special stateid (`special`) every node's.
pub fn break_conflicts_for_io(m: &Mds, caller: Option<u64>, ino: u64, write: bool, special: bool) -> NfsResult<()> {
    break_local(m, caller, ino, write)?;
    if special {
        break_remote(m, caller, ino, write)?;
    }
    Ok(())
}

/// A peer node asks: its client's open or change (`write`) conflicts with
/// delegations on `ino` that clients of this node may hold. They are
/// recalled (the peer answers NFS4ERR_DELAY and its client retries).
pub fn recall_for_peer(m: &Mds, ino: u64, write: bool) {
    let _ = break_local(m, None, ino, write);
}

/// Delegations of clients held by other nodes in the way (a cluster's;
/// one KV read): recalled through their nodes, NFS4ERR_DELAY meanwhile.
fn break_remote(m: &Mds, caller: Option<u64>, ino: u64, write: bool) -> NfsResult<()> {
    let st = m.state();
    if !st.journaling() || !m.cfg.delegations {
        return Ok(());
    }
    let kv = m.ns.store().as_ref();
    for first in [true, false] {
        let holders = st.remote_delegations(kv, ino, caller, write).map_err(|e| {
            log::warn!("inode {ino}: reading other nodes' delegations in the KV: {e}; NFS4ERR_DELAY");
            nfsstat4::NFS4ERR_DELAY
        })?;
        if holders.is_empty() {
            return Ok(());
        }
        if first && st.expire_stale(kv, m.cfg.cluster_node_id(), &holders, m.lease()) {
            continue;
        }
        crate::cluster::peer_recall_delegations(ino, write);
        return Err(nfsstat4::NFS4ERR_DELAY);
    }
    Err(nfsstat4::NFS4ERR_DELAY)
}

/// This node's part of [`break_conflicts`]. A recall not honoured within a
/// lease is revoked here (and periodically, [`revoke_overdue`]), and the
/// operation goes ahead.
fn break_local(m: &Mds, caller: Option<u64>, ino: u64, write: bool) -> NfsResult<()> {
    if !delegations_outstanding() {
        return Ok(());
    }
    for first in [true, false] {
        let now = Instant::now();
        let st = m.state();
        let mut fx = Effects::default();
        let candidates: Vec<(StateOther, u64, Option<Instant>)> = {
            let delegs = st.delegs();
            delegs
                .on_ino(ino)
                .into_iter()
                .filter_map(|o| delegs.get(&o).map(|d| (o, d.clientid, d.recall_deadline, d.write)))
                .filter(|(_, holder, _, dw)| Some(*holder) != caller && (write || *dw))
                .map(|(o, holder, deadline, _)| (o, holder, deadline))
                .collect()
        };
        let mut conflicting = vec![];
        for (other, holder, deadline) in candidates {
            if !st.is_live(&other) {
                st.delegs().remove(&other); // its state went with the client
                continue;
            }
            if deadline.is_some_and(|t| t <= now) {
                revoke(st, &other, &mut fx);
                continue;
            }
            conflicting.push((other, holder));
        }
        let _ = m.apply(fx);
        // A holder whose lease ran out loses it first (courtesy ends).
        if first {
            let holders: Vec<u64> = conflicting.iter().map(|(_, h)| *h).collect();
            if m.release_expired_holders(&holders) {
                continue;
            }
        }
        if conflicting.is_empty() {
            return Ok(());
        }
        let others: Vec<StateOther> = conflicting.iter().map(|(o, _)| *o).collect();
        let work = start_recalls(m, st, &others, now);
        send_recalls(m, work);
        return Err(nfsstat4::NFS4ERR_DELAY);
    }
    Err(nfsstat4::NFS4ERR_DELAY)
}

/// What one CB_RECALL needs, gathered under the state lock.
struct Recall {
    sid: stateid4,
    clientid: u64,
    fh: FileHandle,
    granted_by: Option<(SessionId, u32, u32)>,
    sessions: Vec<Arc<Session>>,
}

/// Marks the delegations recalled (deadline: a lease from now) and gathers
/// the calls for those not recalled before.
fn start_recalls(m: &Mds, st: &StateStore, others: &[StateOther], now: Instant) -> Vec<Recall> {
    let cooldown = Duration::from_secs(m.cfg.delegation_recall_cooldown_seconds as u64);
    let mut work = vec![];
    for other in others {
        let d = {
            let mut delegs = st.delegs();
            if !delegs.start_recall(other, now, now + m.lease(), cooldown) {
                continue;
            }
            crate::metrics::metrics().delegations_recalled.inc();
            let Some(d) = delegs.get(other) else { continue };
            d.clone()
        };
        let Some(r) = st.get(other) else { continue };
        let fh = FileHandle { export_id: d.fh_export, ino: d.ino, generation: d.fh_generation };
        work.push(Recall {
            sid: stateid(other, r.seqid),
            clientid: d.clientid,
            fh,
            granted_by: d.granted_by,
            sessions: st.sessions_of(d.clientid),
        });
    }
    work
}

/// CB_RECALLs waiting for a sender, and the sender threads running. Each
/// delegation is recalled once, so the queue holds at most the delegations
/// outstanding; the threads are bounded so a flood of conflicts (or holders
/// that never answer, each costing a callback timeout) cannot take the
/// process's threads.
static RECALL_QUEUE: Mutex<VecDeque<RecallJob>> = Mutex::new(VecDeque::new());
static RECALL_SENDERS: AtomicUsize = AtomicUsize::new(0);
const MAX_RECALL_SENDERS: usize = 16;

struct RecallJob {
    cbs: Arc<Callbacks>,
    fh: [u8; 32],
    recall: Recall,
}

fn next_recall() -> Option<RecallJob> {
    RECALL_QUEUE.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
}

/// Sends the CB_RECALLs from sender threads: the conflicting operation
/// answers NFS4ERR_DELAY at once, and the holder's answer may come in on
/// the caller's own connection.
fn send_recalls(m: &Mds, work: Vec<Recall>) {
    if work.is_empty() {
        return;
    }
    let n = work.len();
    {
        let mut q = RECALL_QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        q.extend(work.into_iter().map(|r| RecallJob { cbs: m.callbacks.clone(), fh: r.fh.to_bytes(&m.fh_key), recall: r }));
    }
    for _ in 0..n {
        if RECALL_SENDERS.fetch_add(1, Ordering::SeqCst) >= MAX_RECALL_SENDERS {
            RECALL_SENDERS.fetch_sub(1, Ordering::SeqCst);
            return; // the running senders take it
        }
        if let Err(e) = std::thread::Builder::new().name("cb-recall".into()).spawn(recall_sender) {
            RECALL_SENDERS.fetch_sub(1, Ordering::SeqCst);
            // A running sender takes the job, or the holder loses the
            // delegation when the recall falls due.
            log::warn!("cannot start a thread for CB_RECALL: {e}");
            return;
        }
    }
}

fn recall_sender() {
    loop {
        while let Some(job) = next_recall() {
            recall_one(&job.cbs, &job.fh, &job.recall);
        }
        RECALL_SENDERS.fetch_sub(1, Ordering::SeqCst);
        // A job queued after the last look, while every sender was leaving.
        if RECALL_QUEUE.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return;
        }
        RECALL_SENDERS.fetch_add(1, Ordering::SeqCst);
    }
}

fn recall_one(cbs: &Callbacks, fhb: &[u8], r: &Recall) {
    let mut outcome = Err(CbError::NoBackChannel);
    for s in r.sessions.iter().filter(|s| cbs.has_back_channel(s)) {
        for retry in 0..=RECALL_RETRIES {
            let referring = crate::callback::referring_to(r.granted_by, &s.id);
            outcome = cbs.call_referring(s, vec![deleg_recall(fhb, r.sid.clone())], referring);
            let again = matches!(outcome, Err(CbError::Status(nfsstat4::NFS4ERR_DELAY | nfsstat4::NFS4ERR_BAD_STATEID)));
            if !again || retry == RECALL_RETRIES {
                break;
            }
            std::thread::sleep(Duration::from_millis(50 << retry));
        }
        if !matches!(outcome, Err(CbError::NoBackChannel)) {
            break;
        }
    }
    match outcome {
        Ok(()) => log::debug!("delegation of inode {} recalled from client {:x}", r.fh.ino, r.clientid),
        // It is revoked when the recall falls due.
        Err(e) => log::warn!("CB_RECALL of inode {} to client {:x} failed: {e:?}", r.fh.ino, r.clientid),
    }
}

/// Takes a delegation away: the conflicting operation may go ahead, the
/// holder sees NFS4ERR_DELEG_REVOKED and RECALLABLE_STATE_REVOKED until it
/// frees the stateid. It is revoked on the data servers when the caller
/// applies `fx`.
fn revoke(st: &StateStore, other: &StateOther, fx: &mut Effects) {
    let gone = st.delegs().remove(other);
    if let Some(d) = gone {
        crate::metrics::metrics().delegations_revoked.inc();
        log::warn!("client {:x} did not return a recalled delegation of inode {} within a lease; revoked", d.clientid, d.ino);
    }
    st.revoke(other, fx);
}

/// Revokes the recalled delegations whose holders let a lease pass
/// (called with lease expiry). Costs O(recalls due).
pub fn revoke_overdue(m: &Mds, fx: &mut Effects) {
    let st = m.state();
    let due = st.delegs().take_overdue(Instant::now());
    for other in &due {
        revoke(st, other, fx);
    }
}

/// GETATTR of size or change by a client other than the holder of a write
/// delegation on the file: the holder knows better (it may have cached
/// writes), so it is asked with CB_GETATTR (RFC 8881 10.4.3) and its size
/// and change are answered. A holder that does not answer is recalled
/// instead (NFS4ERR_DELAY meanwhile).
pub fn attrs_for_reader(m: &Mds, c: &Compound, mut i: Inode, request: &[u32]) -> NfsResult<Inode> {
    use crate::attrs::{bitmap_has, FATTR4_CHANGE, FATTR4_SIZE};
    if !write_delegations_outstanding() || !(bitmap_has(request, FATTR4_SIZE) || bitmap_has(request, FATTR4_CHANGE)) {
        return Ok(i);
    }
    let caller = c.clientid().ok();
    let st = m.state();
    let holder = {
        let delegs = st.delegs();
        delegs.on_ino(i.ino).into_iter().find_map(|o| delegs.get(&o).filter(|d| d.write && Some(d.clientid) != caller).map(|d| (o, d.clone())))
    };
    let Some((other, d)) = holder else { return Ok(i) };
    if d.recall_deadline.is_some() {
        // Being returned: the holder is flushing; ask again soon.
        return break_conflicts(m, caller, i.ino, true).map(|_| i);
    }
    let fh = FileHandle { export_id: d.fh_export, ino: d.ino, generation: d.fh_generation };
    let sessions = st.sessions_of(d.clientid);
    let fhb = fh.to_bytes(&m.fh_key);
    let mut answer = None;
    for s in sessions.iter().filter(|s| m.callbacks.has_back_channel(s)) {
        match m.callbacks.call_for_results(s, vec![deleg_getattr(&fhb)], vec![]) {
            Ok(res) => {
                answer = getattr_results(&res);
                break;
            }
            Err(CbError::NoBackChannel) => continue,
            Err(e) => {
                log::debug!("CB_GETATTR of inode {} failed: {e:?}", i.ino);
                break;
            }
        }
    }
    let Some((change, size)) = answer else {
        return break_conflicts(m, caller, i.ino, true).map(|_| i);
    };
    let mut delegs = st.delegs();
    let Some(d) = delegs.get_mut(&other) else { return Ok(i) }; // returned meanwhile: ours is current
    if d.seen_change != Some(change) {
        d.seen_change = Some(change);
        d.change_bumps += 1;
    }
    i.change += d.change_bumps;
    i.size = size;
    Ok(i)
}

/// OPEN with CLAIM_DELEGATE_CUR or CLAIM_DELEG_CUR_FH: `sid` must be a
/// delegation of the client on `ino`.
pub fn check_claim_cur(m: &Mds, clientid: u64, ino: u64, sid: &stateid4) -> NfsResult<()> {
    let rec = m.state().find(clientid, sid)?;
    if !matches!(rec.kind, StateKind::Deleg { .. }) || rec.ino != ino {
        return Err(nfsstat4::NFS4ERR_BAD_STATEID);
    }
    Ok(())
}

pub fn delegreturn(m: &Mds, c: &mut Compound, a: &DELEGRETURN4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = (|| {
        // The file may have been removed meanwhile (by the holder itself).
        let fh = c.fh()?;
        let clientid = c.clientid()?;
        let s = resolve(c, &a.deleg_stateid)?;
        let st = m.state();
        let rec = st.find(clientid, &s)?;
        if !matches!(rec.kind, StateKind::Deleg { .. }) || rec.ino != fh.ino {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID);
        }
        st.remove_state(&s.other, &mut fx);
        if st.delegs().remove(&s.other).is_some() {
            crate::metrics::metrics().delegations_returned.inc();
        }
        Ok(())
    })();
    let _ = m.apply(fx);
    reply(e, r)
}

/// DELEGPURGE (RFC 8881 18.5): only for servers that keep delegations
/// across restarts for CLAIM_DELEGATE_PREV; ours do not.
pub fn delegpurge(_m: &Mds, _c: &mut Compound, _a: &DELEGPURGE4args, e: &mut Encoder) -> nfsstat4 {
    reply::<()>(e, Err(nfsstat4::NFS4ERR_NOTSUPP))
}

/// WANT_DELEGATION (RFC 8881 18.49) on the current file, same policy as OPEN.
pub fn want_delegation(m: &Mds, c: &mut Compound, a: &WANT_DELEGATION4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let clientid = c.clientid()?;
        match a.wda_claim {
            deleg_claim4::CLAIM_FH => {}
            // Delegations do not survive a restart: nothing to reclaim.
            deleg_claim4::CLAIM_PREVIOUS(_) => return Err(nfsstat4::NFS4ERR_NO_GRACE),
            deleg_claim4::CLAIM_DELEG_PREV_FH => return Err(nfsstat4::NFS4ERR_NOTSUPP),
        }
        let (fh, i) = current_inode(m, c)?;
        if i.is_dir() {
            return Ok(none_because(why_no_delegation4::WND4_IS_DIR));
        }
        let want = a.wda_want & OPEN4_SHARE_ACCESS_WANT_DELEG_MASK;
        if a.wda_want & !(OPEN4_SHARE_ACCESS_WANT_DELEG_MASK | 0x30000 | 0x30_0000) != 0 {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        // The access of the client's opens decides the kind, as at OPEN.
        let access = m.state().open_access_of(clientid, i.ino);
        if access == 0 && want != OPEN4_SHARE_ACCESS_WANT_CANCEL && want != OPEN4_SHARE_ACCESS_WANT_NO_DELEG {
            return Err(nfsstat4::NFS4ERR_BAD_STATEID); // no open to delegate
        }
        // NO_PREFERENCE here means "any" (the client asked by calling).
        let want = if want == OPEN4_SHARE_ACCESS_WANT_NO_PREFERENCE { OPEN4_SHARE_ACCESS_WANT_ANY_DELEG } else { want };
        Ok(decide(m, c, clientid, (fh, &i), access, want, None))
    })();
    // WANT_DELEGATION4resok is the open_delegation4 itself.
    reply(e, r)
}

/// BACKCHANNEL_CTL (RFC 8881 18.33): the program and credential of the
/// session's callbacks.
pub fn backchannel_ctl(m: &Mds, c: &mut Compound, a: &BACKCHANNEL_CTL4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let s = c.session.clone().ok_or(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION)?;
        if crate::callback::CbCred::choose(&a.bca_sec_parms).is_none() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        m.callbacks.set_program(&s.id, a.bca_cb_program);
        m.callbacks.set_security(&s.id, &a.bca_sec_parms);
        Ok(())
    })();
    reply(e, r)
}

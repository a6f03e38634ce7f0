//! Delegation bookkeeping (RFC 8881 10.2): which client holds which
//! delegation on which file, recalls under way and files recalled lately.
//!
//! Every delegation also has a `StateRec` (kind `StateKind::Deleg`) in the
//! state layer (`StateStore::grant_deleg`), so stateid lookups, TEST_STATEID,
//! SEQUENCE's revoked flag and the data-server pushes treat it like any
//! stateid; this table (behind `StateStore::delegs`, a leaf lock) adds what
//! only delegations need,
//! indexed by `other`, by inode and by client, so a conflict check costs
//! O(delegations on that file) and never scans the table. The policy (when
//! to grant, recall, revoke) lives in `ops/deleg.rs`.
//!
//! Grants and opens exclude each other on one file: a grant is decided and
//! inserted under the file's shard lock ([`StateStore::grant_deleg`]), the
//! lock every OPEN holds for its share check, and an OPEN refuses to land
//! beside another client's conflicting delegation ([`StateStore::open`]
//! asks [`StateStore::deleg_blocks_open`]). Two racing OPENs of different
//! clients so never end up with conflicting delegations.

use super::{lock, stateid, ClientEntry, Effects, FileShard, SessionId, StateKind, StateOther, StateRec, StateStore};
use pnfs_protocol::wire::{stateid4, OPEN4_SHARE_ACCESS_WRITE};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Write delegations outstanding in this process (all MDS instances). A
/// GETATTR may then have to ask a holder (CB_GETATTR) and wait, which must
/// not happen on a connection's own task (the answer may come in on that
/// connection): while this is non-zero, `compound::runs_inline` asks
/// [`getattr_may_call_back`] for the GETATTR's file. Only a scheduling
/// hint, never a correctness input.
static WRITE_DELEGATIONS: AtomicUsize = AtomicUsize::new(0);
/// Delegations outstanding in this process: REMOVE/RENAME skip their extra
/// name lookup while there are none.
static DELEGATIONS: AtomicUsize = AtomicUsize::new(0);

pub fn write_delegations_outstanding() -> bool {
    WRITE_DELEGATIONS.load(Ordering::Relaxed) > 0
}

pub fn delegations_outstanding() -> bool {
    DELEGATIONS.load(Ordering::Relaxed) > 0
}

/// Delegations held in this process (the `delegations_held` metric).
pub fn delegations_held() -> usize {
    DELEGATIONS.load(Ordering::Relaxed)
}

const WRITE_DELEGATED_SHARDS: usize = 16;

/// Files under a write delegation in this process (all MDS instances), with
/// the session each was granted on: lets `compound::runs_inline` keep a
/// GETATTR on the connection's task unless its file is delegated for
/// writing to another client. Only a scheduling hint: a file of another
/// instance with the same number, or a holder asking on another of its
/// sessions, sends the GETATTR to the pool for nothing; it never keeps one
/// inline that may wait for a CB_GETATTR. Its locks are leaves, taken under
/// the table's.
static WRITE_DELEGATED: LazyLock<[Mutex<WriteDelegated>; WRITE_DELEGATED_SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Mutex::new(HashMap::new())));

/// Write-delegated inodes, each with the sessions its delegations were
/// granted on (None: not granted in a session).
type WriteDelegated = HashMap<u64, Vec<Option<SessionId>>>;

fn write_delegated_shard(ino: u64) -> std::sync::MutexGuard<'static, WriteDelegated> {
    lock(&WRITE_DELEGATED[super::mix(ino) % WRITE_DELEGATED_SHARDS])
}

/// Whether a GETATTR of `ino` sent on session `caller` may have to ask a
/// write delegation's holder (CB_GETATTR): the file is under a write
/// delegation not granted on that session. O(1) with no write delegation
/// out.
pub fn getattr_may_call_back(ino: u64, caller: Option<&SessionId>) -> bool {
    if !write_delegations_outstanding() {
        return false;
    }
    write_delegated_shard(ino).get(&ino).is_some_and(|on| on.iter().any(|s| s.is_none() || s.as_ref() != caller))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleg {
    pub clientid: u64,
    pub ino: u64,
    pub write: bool,
    /// Completes the filehandle a recall names (export, generation).
    pub fh_export: u16,
    pub fh_generation: u32,
    /// The OPEN that granted it (session, slot, seqid): a recall names it as
    /// a referring call, so a client still processing that reply waits.
    pub granted_by: Option<(SessionId, u32, u32)>,
    /// Set once recalled: the holder must return it by then or lose it.
    pub recall_deadline: Option<Instant>,
    /// CB_GETATTR bookkeeping: the change attribute the holder last
    /// reported, and how often it changed (added to the MDS's change so
    /// other clients see a new value each time).
    pub seen_change: Option<u64>,
    pub change_bumps: u64,
}

#[derive(Debug, Default)]
pub struct DelegTable {
    by_other: HashMap<StateOther, Deleg>,
    by_ino: HashMap<u64, Vec<StateOther>>,
    by_client: HashMap<u64, HashSet<StateOther>>,
    /// Recalls waiting for DELEGRETURN, by deadline (entries whose
    /// delegation came back are skipped when due).
    recalls: VecDeque<(Instant, StateOther)>,
    /// Files recalled lately (no new delegation until the instant), in
    /// order of recall so old entries go first.
    recalled: HashMap<u64, Instant>,
    recalled_order: VecDeque<(Instant, u64)>,
}

impl DelegTable {
    pub fn len(&self) -> usize {
        self.by_other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_other.is_empty()
    }

    pub fn get(&self, other: &StateOther) -> Option<&Deleg> {
        self.by_other.get(other)
    }

    pub fn get_mut(&mut self, other: &StateOther) -> Option<&mut Deleg> {
        self.by_other.get_mut(other)
    }

    pub fn insert(&mut self, other: StateOther, d: Deleg) {
        self.remove(&other);
        self.by_ino.entry(d.ino).or_default().push(other);
        self.by_client.entry(d.clientid).or_default().insert(other);
        DELEGATIONS.fetch_add(1, Ordering::Relaxed);
        if d.write {
            write_delegated_shard(d.ino).entry(d.ino).or_default().push(d.granted_by.map(|g| g.0));
            WRITE_DELEGATIONS.fetch_add(1, Ordering::Relaxed);
        }
        self.by_other.insert(other, d);
    }

    pub fn remove(&mut self, other: &StateOther) -> Option<Deleg> {
        let d = self.by_other.remove(other)?;
        if let Some(v) = self.by_ino.get_mut(&d.ino) {
            v.retain(|o| o != other);
            if v.is_empty() {
                self.by_ino.remove(&d.ino);
            }
        }
        if let Some(s) = self.by_client.get_mut(&d.clientid) {
            s.remove(other);
            if s.is_empty() {
                self.by_client.remove(&d.clientid);
            }
        }
        DELEGATIONS.fetch_sub(1, Ordering::Relaxed);
        if d.write {
            WRITE_DELEGATIONS.fetch_sub(1, Ordering::Relaxed);
            let mut hint = write_delegated_shard(d.ino);
            if let Some(on) = hint.get_mut(&d.ino) {
                let session = d.granted_by.map(|g| g.0);
                if let Some(i) = on.iter().position(|s| *s == session) {
                    on.swap_remove(i);
                }
                if on.is_empty() {
                    hint.remove(&d.ino);
                }
            }
        }
        Some(d)
    }

    /// The delegations on `ino` (`other`s), any client.
    pub fn on_ino(&self, ino: u64) -> Vec<StateOther> {
        self.by_ino.get(&ino).cloned().unwrap_or_default()
    }

    /// The delegation `clientid` holds on `ino`, if any (one per client and file).
    pub fn held(&self, clientid: u64, ino: u64) -> Option<StateOther> {
        self.by_ino.get(&ino)?.iter().find(|o| self.by_other.get(*o).is_some_and(|d| d.clientid == clientid)).copied()
    }

    /// The delegations `clientid` holds.
    pub fn of_client(&self, clientid: u64) -> Vec<StateOther> {
        self.by_client.get(&clientid).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// Drops everything `clientid` holds (client purged).
    pub fn forget_client(&mut self, clientid: u64) {
        for other in self.of_client(clientid) {
            self.remove(&other);
        }
    }

    /// Marks `other` recalled with `deadline` and `ino` recently recalled
    /// until `now + cooldown`. False when it was recalled already.
    pub fn start_recall(&mut self, other: &StateOther, now: Instant, deadline: Instant, cooldown: Duration) -> bool {
        let Some(d) = self.by_other.get_mut(other) else { return false };
        if d.recall_deadline.is_some() {
            return false;
        }
        d.recall_deadline = Some(deadline);
        let ino = d.ino;
        self.recalls.push_back((deadline, *other));
        self.note_recalled(ino, now, cooldown);
        true
    }

    fn note_recalled(&mut self, ino: u64, now: Instant, cooldown: Duration) {
        while let Some(&(until, old)) = self.recalled_order.front() {
            if until > now {
                break;
            }
            self.recalled_order.pop_front();
            if self.recalled.get(&old) == Some(&until) {
                self.recalled.remove(&old);
            }
        }
        let until = now + cooldown;
        self.recalled.insert(ino, until);
        self.recalled_order.push_back((until, ino));
    }

    /// Whether other clients' delegations on `ino` (or a recent recall of
    /// it) forbid `clientid` a new one (`write`: a write delegation).
    pub fn contended(&self, clientid: u64, ino: u64, write: bool, now: Instant) -> bool {
        self.recently_recalled(ino, now)
            || self
                .by_ino
                .get(&ino)
                .into_iter()
                .flatten()
                .filter_map(|o| self.by_other.get(o))
                .any(|d| d.clientid != clientid && (write || d.write || d.recall_deadline.is_some()))
    }

    /// Whether `ino` was recalled within the cooldown.
    pub fn recently_recalled(&self, ino: u64, now: Instant) -> bool {
        self.recalled.get(&ino).is_some_and(|until| *until > now)
    }

    /// Recalled delegations still held past their deadline (taken off the
    /// recall queue; the caller revokes them). Costs O(due).
    pub fn take_overdue(&mut self, now: Instant) -> Vec<StateOther> {
        let mut due = vec![];
        while let Some(&(deadline, other)) = self.recalls.front() {
            if deadline > now {
                break;
            }
            self.recalls.pop_front();
            if self.by_other.get(&other).is_some_and(|d| d.recall_deadline == Some(deadline)) {
                due.push(other);
            }
        }
        due
    }
}

/// Why [`StateStore::grant_deleg`] granted nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoGrant {
    /// The client holds a delegation on the file already (`write`: a
    /// write delegation): one per client and file, no upgrades.
    Held { write: bool },
    /// Another client's open or delegation, or a recent recall.
    Contention,
    /// `max` delegations out, or a state cap reached.
    Resource,
}

impl StateStore {
    /// Grants `d` (a delegation of `client` on `d.ino`) unless another
    /// client's open conflicts (any open for a write delegation, an open
    /// for writing for a read one), another client's delegation does, the
    /// file was recalled lately, or `max` delegations are out. Decided and
    /// recorded under the file's shard lock, which OPEN's share check holds
    /// too: an OPEN racing with the grant either landed before (and is seen
    /// here) or sees the delegation ([`Self::deleg_blocks_open`]). The
    /// stateid is allowed on the data servers when the client holds a
    /// layout of the file.
    pub fn grant_deleg(&self, client: &Arc<ClientEntry>, d: Deleg, max: usize, now: Instant, fx: &mut Effects) -> Result<stateid4, NoGrant> {
        let (clientid, ino, write) = (client.clientid, d.ino, d.write);
        let mut guard = self.file_shard(ino);
        let sh = &mut *guard;
        if super::opens::others_open_locked(sh, clientid, ino, write) {
            return Err(NoGrant::Contention);
        }
        let check = |delegs: &DelegTable| match delegs.held(clientid, ino) {
            Some(mine) => Err(NoGrant::Held { write: delegs.get(&mine).is_some_and(|d| d.write) }),
            None if delegs.len() >= max => Err(NoGrant::Resource),
            None if delegs.contended(clientid, ino, write, now) => Err(NoGrant::Contention),
            None => Ok(()),
        };
        check(&self.delegs())?;
        // The state (the client's entry is locked inside: not under the
        // table's lock), then its record, checked again in the same hold
        // of the table (a recall may have started meanwhile).
        let rec = StateRec { clientid, ino, seqid: 1, kind: StateKind::Deleg { write }, revoked: false };
        let other = self.insert(sh, client, rec, fx).map_err(|_| NoGrant::Resource)?;
        let recorded = {
            let mut delegs = self.delegs();
            check(&delegs).map(|()| {
                delegs.insert(other, d);
                self.journal_deleg(&other, &delegs, fx);
            })
        };
        if let Err(why) = recorded {
            self.remove(sh, &other, fx);
            return Err(why);
        }
        let sid = stateid(&other, 1);
        self.allow_if_layout(sh, clientid, ino, &sid, fx);
        Ok(sid)
    }

    /// Whether another client's delegation on `ino` (in the locked shard
    /// `sh`) conflicts with an OPEN by `clientid` for `access`: a write
    /// delegation with any open, a read one with an open for writing.
    /// Revoked delegations do not count. The OPEN then answers
    /// NFS4ERR_DELAY and recalls it (`ops/deleg.rs`). Costs nothing while
    /// no delegation is out, else O(clients on the file).
    pub(super) fn deleg_blocks_open(&self, sh: &FileShard, ino: u64, clientid: u64, access: u32) -> bool {
        if !delegations_outstanding() {
            return false;
        }
        let Some(file) = sh.files.get(&ino) else { return false };
        super::visit(file.by_client.len());
        file.by_client.iter().filter(|(id, _)| **id != clientid).any(|(_, cof)| {
            cof.delegs.iter().any(|o| {
                matches!(sh.states.get(o), Some(StateRec { kind: StateKind::Deleg { write }, revoked: false, .. })
                    if *write || access & OPEN4_SHARE_ACCESS_WRITE != 0)
            })
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A delegation record as granted (state/tests.rs uses it too).
    pub(in crate::state) fn deleg(clientid: u64, ino: u64, write: bool) -> Deleg {
        Deleg {
            clientid,
            ino,
            write,
            fh_export: 1,
            fh_generation: 1,
            granted_by: None,
            recall_deadline: None,
            seen_change: None,
            change_bumps: 0,
        }
    }

    #[test]
    fn indexes_follow_inserts_and_removes() {
        let mut t = DelegTable::default();
        t.insert([1; 12], deleg(7, 100, false));
        t.insert([2; 12], deleg(8, 100, false));
        t.insert([3; 12], deleg(7, 101, true));
        assert_eq!(t.len(), 3);
        assert_eq!(t.on_ino(100).len(), 2);
        assert_eq!(t.held(7, 101), Some([3; 12]));
        assert_eq!(t.held(8, 101), None);
        let mut mine = t.of_client(7);
        mine.sort();
        assert_eq!(mine, vec![[1; 12], [3; 12]]);
        t.forget_client(7);
        assert_eq!((t.len(), t.on_ino(100), t.on_ino(101)), (1, vec![[2; 12]], vec![]));
        assert!(t.remove(&[2; 12]).is_some());
        assert!(t.is_empty() && t.by_ino.is_empty() && t.by_client.is_empty());
    }

    #[test]
    fn recalls_fall_due_once_and_files_cool_down() {
        let mut t = DelegTable::default();
        let now = Instant::now();
        let cool = Duration::from_secs(30);
        t.insert([1; 12], deleg(7, 100, true));
        t.insert([2; 12], deleg(8, 200, false));
        assert!(t.start_recall(&[1; 12], now, now + Duration::from_secs(5), cool));
        assert!(!t.start_recall(&[1; 12], now, now + Duration::from_secs(5), cool), "recalled once");
        assert!(t.start_recall(&[2; 12], now, now + Duration::from_secs(9), cool));
        assert!(t.recently_recalled(100, now) && !t.recently_recalled(300, now));
        assert!(!t.recently_recalled(100, now + cool));
        assert!(t.take_overdue(now + Duration::from_secs(4)).is_empty());
        // [2] came back in time: not due.
        t.remove(&[2; 12]);
        assert_eq!(t.take_overdue(now + Duration::from_secs(10)), vec![[1; 12]]);
        assert!(t.take_overdue(now + Duration::from_secs(20)).is_empty());
        // The cooldown list is pruned as new recalls come.
        t.insert([3; 12], deleg(7, 300, false));
        t.start_recall(&[3; 12], now + cool * 2, now + cool * 3, cool);
        assert_eq!(t.recalled.len(), 1);
    }
}

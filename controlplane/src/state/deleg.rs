//! Delegation bookkeeping (RFC 8881 10.2): which client holds which
//! delegation on which file, recalls under way and files recalled lately.
//!
//! Every delegation also has a `StateRec` (kind `StateKind::Deleg`) in the
//! state layer (`StateStore::add_deleg`), so stateid lookups, TEST_STATEID,
//! SEQUENCE's revoked flag and the data-server pushes treat it like any
//! stateid; this table (behind `StateStore::delegs`, a leaf lock) adds what
//! only delegations need,
//! indexed by `other`, by inode and by client, so a conflict check costs
//! O(delegations on that file) and never scans the table. The policy (when
//! to grant, recall, revoke) lives in `ops/deleg.rs`.

use super::{SessionId, StateOther};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Write delegations outstanding in this process (all MDS instances). A
/// GETATTR may then have to ask a holder (CB_GETATTR) and wait, which must
/// not happen on a connection's own task (the answer may come in on that
/// connection): `compound::runs_inline` sends GETATTR to the pool while
/// this is non-zero. Only a scheduling hint, never a correctness input.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn deleg(clientid: u64, ino: u64, write: bool) -> Deleg {
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

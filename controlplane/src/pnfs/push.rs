//! Group commit of stateid pushes to one data server.
//!
//! Every OPEN+LAYOUTGET allows a stateid on the file's data servers and
//! every CLOSE revokes one (tight coupling). Sent one by one, each costs a
//! round trip and a wake-up of every DS reactor, which dominated the MDS's
//! CPU per OPEN+LAYOUTGET+CLOSE. Here, per data server, at most one caller
//! (the leader) has a CTL_PROC_STATEID_BATCH call in flight; changes queued
//! meanwhile by other callers go together in the next call, sent by the
//! first of them to find no leader. A caller returns once its own changes
//! are answered, so the semantics of a single synchronous call are kept:
//! nothing is granted before the data server accepts it.

//!
//! Deferred pushes (the MDS request path without hand-offs, server.rs): a
//! request run on its connection's task must not wait a round trip per
//! request. Inside [`defer_pushes`], `push` only queues its changes and
//! answers Ok; the connection's task calls [`PushBatcher::flush`] (through
//! `Pnfs::flush_pushes`) once for all the requests of one read, before any
//! of their replies goes out: still nothing granted before the data server
//! accepted it, with one round trip per batch. A deferred change the data
//! server refuses is logged; the stateid stays recorded as pushed (a DS that
//! registers again gets every allowed stateid again).

use pnfs_protocol::wire::*;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex};

thread_local! {
    /// Set while [`defer_pushes`] runs on this thread; counts the deferred
    /// changes queued.
    static DEFERRED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `f` with pushes deferred on this thread (see the module docs).
/// Returns `f`'s value and how many changes it queued without sending: when
/// not 0, flush before answering.
pub fn defer_pushes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEFERRED.with(|d| d.set(self.0));
        }
    }
    let restore = Restore(DEFERRED.with(|d| d.replace(Some(0))));
    let value = f();
    let queued = DEFERRED.with(|d| d.get()).unwrap_or(0);
    drop(restore);
    (value, queued)
}

/// One queued change and its ticket.
struct Queued {
    ticket: u64,
    change: ctl_stateid_change<'static>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Queued>,
    next_ticket: u64,
    leader: bool,
    /// Answers not yet collected by their callers.
    done: HashMap<u64, Result<(), String>>,
    /// Tickets of deferred changes: nobody collects their answers.
    unclaimed: HashSet<u64>,
    /// Every ticket below this one is answered.
    answered_below: u64,
}

/// The batcher of one data server.
#[derive(Default)]
pub struct PushBatcher {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl PushBatcher {
    /// Queues `changes`, sends them (and whatever else is queued) with
    /// `send` when no call is in flight, and returns one result per change,
    /// in order. `send` gets at most [`CTL_MAX_BATCH`] changes and answers
    /// one status per change or a transport error for all of them. Inside
    /// [`defer_pushes`]: only queues, answers Ok (see the module docs).
    pub fn push(
        &self,
        changes: Vec<ctl_stateid_change<'static>>,
        send: impl Fn(&[ctl_stateid_change<'static>]) -> std::io::Result<Vec<ctl_status>>,
    ) -> Vec<Result<(), String>> {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        let deferred = DEFERRED.with(|d| d.get());
        let mut tickets = Vec::with_capacity(changes.len());
        for change in changes {
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            q.pending.push(Queued { ticket, change });
            tickets.push(ticket);
        }
        if let Some(n) = deferred {
            DEFERRED.with(|d| d.set(Some(n + tickets.len())));
            let answers = vec![Ok(()); tickets.len()];
            q.unclaimed.extend(tickets);
            return answers;
        }
        loop {
            if tickets.iter().all(|t| q.done.contains_key(t)) {
                return tickets.iter().map(|t| q.done.remove(t).expect("answered")).collect();
            }
            q = self.lead_or_wait(q, &send);
        }
    }

    /// Returns once every change queued before the call is answered,
    /// sending them (with `send`) when no call is in flight.
    pub fn flush(&self, send: impl Fn(&[ctl_stateid_change<'static>]) -> std::io::Result<Vec<ctl_status>>) {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        let upto = q.next_ticket;
        while q.answered_below < upto {
            q = self.lead_or_wait(q, &send);
        }
    }

    /// Sends the next batch if no call is in flight, else waits for the one
    /// in flight; returns with the lock held again.
    fn lead_or_wait<'a>(
        &'a self,
        mut q: std::sync::MutexGuard<'a, Queue>,
        send: &impl Fn(&[ctl_stateid_change<'static>]) -> std::io::Result<Vec<ctl_status>>,
    ) -> std::sync::MutexGuard<'a, Queue> {
        if q.leader {
            return self.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.leader = true;
        let n = q.pending.len().min(CTL_MAX_BATCH as usize);
        let batch: Vec<Queued> = q.pending.drain(..n).collect();
        drop(q);
        let changes: Vec<ctl_stateid_change<'static>> = batch.iter().map(|b| b.change.clone()).collect();
        let answer = if changes.is_empty() { Ok(Vec::new()) } else { send(&changes) };
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in batch.iter().enumerate() {
            let r = match &answer {
                Err(e) => Err(e.to_string()),
                Ok(st) => match st.get(i) {
                    Some(ctl_status::CTL_OK) => Ok(()),
                    Some(s) => Err(format!("data server answered {s:?}")),
                    None => Err("data server answered fewer statuses than changes".into()),
                },
            };
            if q.unclaimed.remove(&b.ticket) {
                if let Err(e) = r {
                    log::warn!("deferred stateid change refused by the data server: {e}");
                }
            } else {
                q.done.insert(b.ticket, r);
            }
        }
        // Tickets are queued and sent in order.
        q.answered_below = match q.pending.first() {
            Some(next) => next.ticket,
            None => q.next_ticket,
        };
        q.leader = false;
        self.cv.notify_all();
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn revoke(n: u8) -> ctl_stateid_change<'static> {
        ctl_stateid_change::CTL_CHANGE_REVOKE(ctl_revoke_args { cva_stateid: stateid4 { seqid: 0, other: [n; 12] } })
    }

    #[test]
    fn alone_is_one_call_and_statuses_map_in_order() {
        let b = PushBatcher::default();
        let calls = AtomicUsize::new(0);
        let r = b.push(vec![revoke(1), revoke(2)], |c| {
            calls.fetch_add(1, Ordering::SeqCst);
            assert_eq!(c.len(), 2);
            Ok(vec![ctl_status::CTL_OK, ctl_status::CTL_NOSPC])
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(r[0].is_ok());
        assert!(r[1].as_ref().unwrap_err().contains("CTL_NOSPC"));
        // Short answers and transport errors are errors, not panics.
        let r = b.push(vec![revoke(3), revoke(4)], |_| Ok(vec![ctl_status::CTL_OK]));
        assert!(r[0].is_ok() && r[1].is_err());
        let r = b.push(vec![revoke(5)], |_| Err(std::io::Error::other("down")));
        assert!(r[0].as_ref().unwrap_err().contains("down"));
    }

    #[test]
    fn concurrent_callers_share_calls_and_get_their_own_answers() {
        let b = Arc::new(PushBatcher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u8)
            .map(|i| {
                let (b, calls) = (b.clone(), calls.clone());
                std::thread::spawn(move || {
                    b.push(vec![revoke(i)], |c| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        // Odd stateids are refused: each caller must see its own.
                        Ok(c
                            .iter()
                            .map(|ch| match ch {
                                ctl_stateid_change::CTL_CHANGE_REVOKE(r) if r.cva_stateid.other[0] % 2 == 1 => {
                                    ctl_status::CTL_INVAL
                                }
                                _ => ctl_status::CTL_OK,
                            })
                            .collect())
                    })
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            let r = t.join().unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].is_ok(), i % 2 == 0, "caller {i}");
        }
        let n = calls.load(Ordering::SeqCst);
        assert!(n < 16, "16 concurrent callers made {n} calls: nothing was batched");
        assert!(b.q.lock().unwrap_or_else(|p| p.into_inner()).done.is_empty(), "every answer collected");
    }

    /// Deferred pushes send nothing until the flush, which sends them all
    /// in one call and returns only once they are answered.
    #[test]
    fn deferred_pushes_go_in_one_call_at_the_flush() {
        let b = PushBatcher::default();
        let sent = Mutex::new(Vec::new());
        let send = |c: &[ctl_stateid_change<'static>]| {
            sent.lock().unwrap_or_else(|p| p.into_inner()).push(c.len());
            Ok(vec![ctl_status::CTL_OK; c.len()])
        };
        let ((), queued) = defer_pushes(|| {
            for i in 0..10 {
                assert!(b.push(vec![revoke(i)], send)[0].is_ok());
            }
        });
        assert_eq!(queued, 10);
        assert!(sent.lock().unwrap_or_else(|p| p.into_inner()).is_empty(), "deferred pushes were sent before the flush");
        b.flush(send);
        assert_eq!(*sent.lock().unwrap_or_else(|p| p.into_inner()), vec![10]);
        let q = b.q.lock().unwrap_or_else(|p| p.into_inner());
        assert!(q.pending.is_empty() && q.unclaimed.is_empty() && q.done.is_empty());
        assert_eq!(q.answered_below, 10);
        drop(q);
        // Nothing queued: a flush sends nothing.
        b.flush(send);
        assert_eq!(sent.lock().unwrap_or_else(|p| p.into_inner()).len(), 1);
    }
}

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

use pnfs_protocol::wire::*;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

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
    /// one status per change or a transport error for all of them.
    pub fn push(
        &self,
        changes: Vec<ctl_stateid_change<'static>>,
        send: impl Fn(&[ctl_stateid_change<'static>]) -> std::io::Result<Vec<ctl_status>>,
    ) -> Vec<Result<(), String>> {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        let mut tickets = Vec::with_capacity(changes.len());
        for change in changes {
            let ticket = q.next_ticket;
            q.next_ticket += 1;
            q.pending.push(Queued { ticket, change });
            tickets.push(ticket);
        }
        loop {
            if tickets.iter().all(|t| q.done.contains_key(t)) {
                return tickets.iter().map(|t| q.done.remove(t).expect("answered")).collect();
            }
            if q.leader {
                q = self.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.leader = true;
            let n = q.pending.len().min(CTL_MAX_BATCH as usize);
            let batch: Vec<Queued> = q.pending.drain(..n).collect();
            drop(q);
            let changes: Vec<ctl_stateid_change<'static>> = batch.iter().map(|b| b.change.clone()).collect();
            let answer = send(&changes);
            q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            for (i, b) in batch.iter().enumerate() {
                let r = match &answer {
                    Err(e) => Err(e.to_string()),
                    Ok(st) => match st.get(i) {
                        Some(ctl_status::CTL_OK) => Ok(()),
                        Some(s) => Err(format!("data server answered {s:?}")),
                        None => Err("data server answered fewer statuses than changes".into()),
                    },
                };
                q.done.insert(b.ticket, r);
            }
            q.leader = false;
            self.cv.notify_all();
        }
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
        assert!(b.q.lock().unwrap().done.is_empty(), "every answer collected");
    }
}

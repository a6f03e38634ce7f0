//! Tight coupling (RFC 8881 13.9.2): the stateids the data servers accept,
//! pushed to them (allowed, revoked, pushed again after a DS restarts),
//! batched per data server by `push`.
//!
//! Lock order: `pushed` may be held while a state file shard is looked up (`take_gone`), never the other way; no
//! control RPC is ever made while holding either.

use super::{client, push, Pnfs, StripeSet};
use std::io;
use crate::state::StateOther;
use pnfs_protocol::mds_ds::ds_handle::IDENTITY_LEN;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, XdrDecode};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A stateid allowed on data servers.
#[derive(Debug, Clone)]
pub(super) struct Pushed {
    stateid: stateid4,
    clientid: u64,
    access: u32,
    /// DS index -> the DS filehandle it was allowed on.
    ds: BTreeMap<u32, Vec<u8>>,
}

impl Pnfs {
    fn allow_change(p: &Pushed, fh: &[u8]) -> ctl_stateid_change<'static> {
        ctl_stateid_change::CTL_CHANGE_ALLOW(ctl_stateid_args {
            csa_stateid: stateid4 { seqid: 0, other: p.stateid.other },
            csa_clientid: p.clientid,
            csa_fh: pnfs_protocol::Opaque::owned(fh.to_vec()),
            csa_access: p.access,
        })
    }

    /// Sends `changes` to data server `ds` through its batcher: together
    /// with concurrent callers' changes, one CTL_PROC_STATEID_BATCH call.
    fn push_changes(&self, ds: u32, changes: Vec<ctl_stateid_change<'static>>) -> Vec<Result<(), String>> {
        let batcher = self.batchers.lock().unwrap_or_else(|p| p.into_inner()).entry(ds).or_default().clone();
        batcher.push(changes, |c| self.send_batch(ds, c))
    }

    fn send_batch(&self, ds: u32, c: &[ctl_stateid_change<'static>]) -> io::Result<Vec<ctl_status>> {
        let body = self.call(ds, CTL_PROC_STATEID_BATCH, &ctl_batch_args { cba_changes: c.to_vec() })?;
        let r = ctl_batch_res::decode(&mut Decoder::new(&body)).map_err(client::bad_reply)?;
        Ok(r.cbr_status)
    }

    /// Sends the changes queued inside `push::defer_pushes` (every data
    /// server, one call each) and returns once they are answered.
    pub fn flush_pushes(&self) {
        let batchers: Vec<(u32, Arc<push::PushBatcher>)> =
            self.batchers.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(d, b)| (*d, b.clone())).collect();
        for (ds, b) in batchers {
            b.flush(|c| self.send_batch(ds, c));
        }
    }

    // ---- tight coupling: stateids the data servers accept ----

    /// Allows each `(stateid, access)` of `clientid` on every DS of the
    /// file's stripe set; stateids already pushed there are skipped.
    pub fn allow(&self, clientid: u64, ino: u64, set: &StripeSet, stateids: &[(stateid4, u32)]) {
        let objects: Vec<(u32, [u8; IDENTITY_LEN])> = set.ds.iter().enumerate().map(|(j, d)| (*d, set.ds_fh(j as u32, ino))).collect();
        self.allow_on(clientid, &objects, stateids)
    }

    /// Allows each `(stateid, access)` of `clientid` on the given objects
    /// (data server, object identity); those already pushed are skipped.
    pub fn allow_on(&self, clientid: u64, objects: &[(u32, [u8; IDENTITY_LEN])], stateids: &[(stateid4, u32)]) {
        let mut work: Vec<(u32, Pushed, Vec<u8>)> = Vec::new();
        {
            let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
            for (sid, access) in stateids {
                let p = pushed.entry(sid.other).or_insert_with(|| Pushed {
                    stateid: sid.clone(),
                    clientid,
                    access: *access,
                    ds: BTreeMap::new(),
                });
                let widened = p.access | access != p.access;
                p.access |= access;
                if widened {
                    // Data servers it was allowed on before (a mirrored file's
                    // earlier segments) take the wider access too.
                    for (d, fh) in p.ds.iter().filter(|(d, _)| !objects.iter().any(|(o, _)| o == *d)) {
                        work.push((*d, p.clone(), fh.clone()));
                    }
                }
                for &(d, fh) in objects {
                    if widened || !p.ds.contains_key(&d) {
                        let fh = fh.to_vec();
                        p.ds.insert(d, fh.clone());
                        work.push((d, p.clone(), fh));
                    }
                }
            }
        }
        let mut by_ds: BTreeMap<u32, Vec<(StateOther, ctl_stateid_change<'static>)>> = BTreeMap::new();
        for (d, p, fh) in work {
            by_ds.entry(d).or_default().push((p.stateid.other, Self::allow_change(&p, &fh)));
        }
        for (d, items) in by_ds {
            let (others, changes): (Vec<StateOther>, Vec<_>) = items.into_iter().unzip();
            for (other, r) in others.iter().zip(self.push_changes(d, changes)) {
                if let Err(e) = r {
                    log::warn!("STATEID_ALLOW to data server {d} failed: {e}");
                    if let Some(q) = self.pushed.lock().unwrap_or_else(|p| p.into_inner()).get_mut(other) {
                        q.ds.remove(&d);
                    }
                }
            }
        }
    }

    pub fn has_pushed(&self) -> bool {
        !self.pushed.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Removes pushed stateids for which `still_valid` is false; returns
    /// them with their data servers, for `revoke`.
    pub fn take_gone(&self, still_valid: impl Fn(&StateOther) -> bool) -> Vec<(StateOther, Vec<u32>)> {
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<StateOther> = pushed.keys().filter(|o| !still_valid(o)).copied().collect();
        gone.into_iter().filter_map(|o| pushed.remove(&o).map(|p| (o, p.ds.keys().copied().collect()))).collect()
    }

    /// Removes the pushed stateids among `others` (ended here); returns
    /// them with their data servers, for `revoke`. Costs `others` only.
    pub fn take_pushed(&self, others: &[StateOther]) -> Vec<(StateOther, Vec<u32>)> {
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        others.iter().filter_map(|o| pushed.remove(o).map(|p| (*o, p.ds.keys().copied().collect()))).collect()
    }

    /// Sends STATEID_REVOKE for stateids taken with `take_gone` or `take_pushed`.
    pub fn revoke(&self, gone: Vec<(StateOther, Vec<u32>)>) {
        let mut by_ds: BTreeMap<u32, Vec<ctl_stateid_change<'static>>> = BTreeMap::new();
        for (other, ds) in gone {
            for d in ds {
                by_ds.entry(d).or_default().push(ctl_stateid_change::CTL_CHANGE_REVOKE(ctl_revoke_args {
                    cva_stateid: stateid4 { seqid: 0, other },
                }));
            }
        }
        for (d, changes) in by_ds {
            for r in self.push_changes(d, changes) {
                if let Err(e) = r {
                    log::warn!("STATEID_REVOKE to data server {d} failed: {e}");
                }
            }
        }
    }

    /// Has data server `ds`'s allowed stateids pushed again, after the
    /// REGISTER reply is out, by the one repush worker (no thread per
    /// REGISTER; repeated requests for one DS coalesce).
    pub fn request_repush(self: &Arc<Self>, ds: u32) {
        let mut pending = self.repush_pending.lock().unwrap_or_else(|p| p.into_inner());
        if !self.repush_started.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new().name("mds-repush".into()).spawn(move || Self::repush_worker(weak));
            if let Err(e) = spawned {
                log::error!("starting the stateid repush thread: {e}");
                self.repush_started.store(false, Ordering::Release);
            }
        }
        pending.insert(ds);
        self.repush_wake.notify_one();
    }

    fn repush_worker(weak: std::sync::Weak<Pnfs>) {
        loop {
            let Some(p) = weak.upgrade() else { return };
            let next = {
                let mut pending = p.repush_pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.is_empty() {
                    pending = p.repush_wake.wait_timeout(pending, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner()).0;
                }
                pending.pop_first()
            };
            if let Some(ds) = next {
                p.repush(ds);
            }
        }
    }

    /// Pushes again every stateid allowed on data server `ds` (it
    /// re-registered, e.g. after a restart that lost its table).
    pub fn repush(&self, ds: u32) {
        self.resend_fences(ds);
        let work: Vec<(Pushed, Vec<u8>)> = self
            .pushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|p| p.ds.get(&ds).map(|fh| (p.clone(), fh.clone())))
            .collect();
        if !work.is_empty() {
            log::info!("data server {ds} registered again; pushing {} stateid(s)", work.len());
        }
        for chunk in work.chunks(CTL_MAX_BATCH as usize) {
            let changes = chunk.iter().map(|(p, fh)| Self::allow_change(p, fh)).collect();
            for r in self.push_changes(ds, changes) {
                if let Err(e) = r {
                    log::warn!("re-pushing a stateid to data server {ds} failed: {e}");
                }
            }
        }
    }
}

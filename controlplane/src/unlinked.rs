//! Data of unlinked inodes, freed off the request path.
//!
//! The last unlink of a file frees its data (the local file, the objects on
//! the data servers) only once the unlink is durable: a crash must not bring
//! back a name whose data is gone. A REMOVE run on its connection's task
//! commits with durability deferred (server.rs), so freeing it there meant an
//! fsync and a data-server round trip per REMOVE on that task, stalling every
//! connection the runtime thread serves (measured: 180 REMOVEs/s with 64
//! removers, the MDS mostly idle). Here the inode is queued instead; one
//! thread syncs the store once for everything queued, then frees each
//! inode's data. Inode numbers are never reused, so freeing late is safe.
//! A failed sync keeps the data; the start-up sweep (`Mds::recover_data`)
//! frees it once the unlink is durable.

use crate::mds::Mds;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// How long the freeing thread waits for work before it ends (a later
/// unlink starts another).
const IDLE_EXIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Unlinked {
    q: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    inos: Vec<u64>,
    /// A freeing thread runs (it clears this under the lock as it ends).
    running: bool,
}

impl Unlinked {
    /// Frees `ino`'s data once its unlink is durable, on the freeing
    /// thread; never waits.
    pub fn free_later(self: &Arc<Self>, mds: Weak<Mds>, ino: u64) {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        q.inos.push(ino);
        if q.running {
            self.wake.notify_one();
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("free-unlinked".into()).spawn(move || me.run(mds));
        match spawned {
            Ok(_) => q.running = true,
            // Tried again at the next unlink; the start-up sweep frees
            // whatever is left at exit.
            Err(e) => log::warn!("starting the thread that frees unlinked data: {e}; retried at the next unlink"),
        }
    }

    /// The freeing thread: holds the MDS only while it has work, so an MDS
    /// dropped by its owner closes its store within [`IDLE_EXIT`].
    fn run(&self, mds: Weak<Mds>) {
        loop {
            let inos = {
                let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
                if q.inos.is_empty() {
                    q = self.wake.wait_timeout(q, IDLE_EXIT).unwrap_or_else(|p| p.into_inner()).0;
                }
                if q.inos.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.inos)
            };
            let Some(m) = mds.upgrade() else {
                self.q.lock().unwrap_or_else(|p| p.into_inner()).running = false;
                return;
            };
            // One sync for the whole batch: every unlink queued was visible
            // before it.
            if let Err(e) = m.ns.store().sync() {
                log::warn!("keeping the data of {} unlinked inode(s): their unlinks are not durable ({e})", inos.len());
                continue;
            }
            for ino in inos {
                m.free_data_now(ino);
            }
        }
    }
}

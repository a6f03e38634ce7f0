//! The engine's registered files: a sparse io_uring file table
//! (`ds.fixed_files_per_reactor` slots) that the reactor's open-object
//! cache fills with an object's descriptors when it takes the object in
//! and empties when it evicts or drops it, plus the volume's one descriptor
//! for good ([`Engine::attach_volume`]); I/O then names the slot (`Fixed`)
//! instead of the fd, sparing the kernel the per-request fd lookup. A full
//! table, or a kernel refusing registration (Linux < 5.19), leaves plain
//! descriptors.

use super::engine::Engine;
use super::log_once;
use super::object::Object;
use super::volume::Volume;
use crate::stats::bump;
use std::collections::HashMap;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::AtomicBool;

static LOGGED_NO_FIXED_FILES: AtomicBool = AtomicBool::new(false);

/// The ring's registered files: slot -> fd and back. A descriptor is in
/// it only while the reactor's open-object cache holds its object, which
/// keeps the descriptor open, so a fd number found here is that file.
pub(super) struct FileTable {
    /// The fd registered in each slot, -1 for a free one.
    slots: Vec<RawFd>,
    free: Vec<u32>,
    by_fd: HashMap<RawFd, u32>,
}

impl Engine {
    /// Registers the volume's O_DIRECT descriptor (or its buffered one
    /// without O_DIRECT) in a slot of the file table for good: one slot
    /// serves every object of the volume. False when there is no table or
    /// it is full.
    pub fn attach_volume(&self, vol: &Volume) -> bool {
        if vol.passthrough().is_some() && self.pt.borrow().is_none() {
            let pt = self.setup_passthrough(vol);
            *self.pt.borrow_mut() = pt;
        }
        let f = vol.direct_file().unwrap_or(vol.buffered_file());
        let (Some(r), mut files) = (&self.ring, self.files.borrow_mut()) else { return false };
        let Some(t) = files.as_mut() else { return false };
        let fd = f.as_raw_fd();
        if t.by_fd.contains_key(&fd) {
            return true;
        }
        let Some(slot) = t.free.pop() else {
            bump(&self.stats.fixed_files_full, 1);
            return false;
        };
        match r.borrow().submitter().register_files_update(slot, &[fd]) {
            Ok(1) => {
                t.slots[slot as usize] = fd;
                t.by_fd.insert(fd, slot);
                true
            }
            r => {
                log::debug!("registering the volume fd {fd} in slot {slot}: {r:?}");
                t.free.push(slot);
                false
            }
        }
    }

    // -- Registered files ---------------------------------------------------

    /// Registers a sparse file table of `slots` entries on the ring, used by
    /// [`Engine::install_files`]. False (and no table) without io_uring,
    /// with `slots` 0, or when the kernel refuses it (before Linux 5.19).
    pub fn enable_fixed_files(&mut self, slots: u32) -> bool {
        let Some(r) = &self.ring else { return false };
        if slots == 0 {
            return false;
        }
        if let Err(e) = r.borrow().submitter().register_files_sparse(slots) {
            log_once(&LOGGED_NO_FIXED_FILES, || format!("io_uring file registration refused ({e}); using plain descriptors"));
            return false;
        }
        *self.files.borrow_mut() = Some(FileTable {
            slots: vec![-1; slots as usize],
            free: (0..slots).rev().collect(),
            by_fd: HashMap::with_capacity(slots as usize),
        });
        true
    }

    /// Installs the object's descriptors in free slots of the file table
    /// (the reactor's open-object cache calls this when it takes the
    /// object in). A full table, or a refused update, leaves a descriptor
    /// unregistered: its I/O uses the plain fd.
    pub fn install_files(&self, obj: &Object) {
        self.flush_prepared();
        let (Some(r), mut files) = (&self.ring, self.files.borrow_mut()) else { return };
        let Some(t) = files.as_mut() else { return };
        for f in obj.own_files() {
            let fd = f.as_raw_fd();
            if t.by_fd.contains_key(&fd) {
                continue;
            }
            let Some(slot) = t.free.pop() else {
                bump(&self.stats.fixed_files_full, 1);
                continue;
            };
            match r.borrow().submitter().register_files_update(slot, &[fd]) {
                Ok(1) => {
                    t.slots[slot as usize] = fd;
                    t.by_fd.insert(fd, slot);
                }
                r => {
                    log::debug!("registering fd {fd} in slot {slot}: {r:?}");
                    t.free.push(slot);
                }
            }
        }
    }

    /// Removes the object's descriptors from the file table (the cache
    /// evicted or dropped it). Must come before the descriptors can close:
    /// a slot keeps its file open, and fd numbers are looked up by value.
    pub fn remove_files(&self, obj: &Object) {
        self.flush_prepared();
        let (Some(r), mut files) = (&self.ring, self.files.borrow_mut()) else { return };
        let Some(t) = files.as_mut() else { return };
        for f in obj.own_files() {
            let fd = f.as_raw_fd();
            let Some(slot) = t.by_fd.remove(&fd) else { continue };
            debug_assert_eq!(t.slots[slot as usize], fd);
            if let Err(e) = r.borrow().submitter().register_files_update(slot, &[-1]) {
                // The slot stays taken (and its file open) rather than be reused wrongly.
                log::warn!("unregistering file slot {slot}: {e}");
                continue;
            }
            t.slots[slot as usize] = -1;
            t.free.push(slot);
        }
    }

    /// Registered descriptors (tests, metrics).
    pub fn fixed_files_in_use(&self) -> usize {
        self.files.borrow().as_ref().map_or(0, |t| t.by_fd.len())
    }

    pub(super) fn fixed_slot(&self, fd: RawFd) -> Option<u32> {
        let files = self.files.borrow();
        let t = files.as_ref()?;
        let slot = *t.by_fd.get(&fd)?;
        debug_assert_eq!(t.slots[slot as usize], fd);
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fh::DsFh;
    use crate::stats::DsStats;
    use crate::storage::{BufPool, ObjectStore};
    use std::rc::Rc;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn registered_files_follow_install_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path(), true).unwrap();
        let stats = Arc::new(DsStats::default());
        let mut engine = Engine::new(BufPool::new(2, 64 * 1024), stats.clone(), true);
        assert!(!engine.enable_fixed_files(0));
        if !engine.uses_uring() || !engine.enable_fixed_files(1 + store.uses_o_direct() as u32) {
            eprintln!("no io_uring file registration here; skipped");
            return;
        }
        let fds = 1 + store.uses_o_direct() as usize; // room for one object
        let a = store.create(&DsFh { stripe: 0, ino: 1, generation: 1 }).unwrap();
        let b = store.create(&DsFh { stripe: 0, ino: 2, generation: 1 }).unwrap();
        let fixed_ops = || stats.fixed_file_ops.load(Ordering::Relaxed);
        let io = |o: &Object| {
            engine.write(o, 0, &[5u8; 4096]).ok().unwrap();
            engine.write(o, 4096 + 3, b"tail").ok().unwrap();
            let (buf, n) = engine.read(o, 0, 8192).ok().unwrap();
            assert_eq!(n, 4096 + 3 + 4);
            assert_eq!(&buf.as_slice()[4096 + 3..n], b"tail");
        };
        engine.install_files(&a);
        engine.install_files(&a); // already there: no second slot
        assert_eq!(engine.fixed_files_in_use(), fds);
        io(&a);
        assert_eq!(fixed_ops(), 3, "every I/O of a names its slot");
        // Full table: b keeps its plain descriptors and works all the same.
        engine.install_files(&b);
        assert_eq!(stats.fixed_files_full.load(Ordering::Relaxed), fds as u64);
        io(&b);
        assert_eq!(fixed_ops(), 3);
        engine.remove_files(&a);
        engine.remove_files(&a);
        assert_eq!(engine.fixed_files_in_use(), 0);
        engine.install_files(&b);
        assert_eq!(engine.fixed_files_in_use(), fds);
        io(&b);
        assert_eq!(fixed_ops(), 6);
        engine.remove_files(&b);

        // The reactor's open-object cache drives the table: opened objects
        // come in, removed ones go out.
        let engine = Rc::new(engine);
        let bus = crate::bus::Bus::with_bounds(1, 16, std::time::Duration::from_millis(10));
        let replica = bus.replica(0);
        replica.attach_engine(engine.clone());
        replica.object(&store, &a.fh).unwrap();
        assert_eq!(engine.fixed_files_in_use(), fds);
        let _ = bus.publish(crate::bus::Update::ObjRemoved(a.fh)); // applied by sync below
        replica.sync();
        assert_eq!(engine.fixed_files_in_use(), 0);
        replica.object(&store, &b.fh).unwrap();
        assert_eq!(engine.fixed_files_in_use(), fds);
        drop(replica);
        assert_eq!(engine.fixed_files_in_use(), 0, "a dropped cache leaves no slot behind");
    }

}

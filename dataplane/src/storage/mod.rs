//! The storage layer: objects and the engines that move their bytes.
//! Nothing here knows NFS or RPC; the NFS ops and the MDS link call it.
//!
//! | file | job |
//! |---|---|
//! | [`object`] | the object store: the object directory of both backends, live objects and their dirty generations, the control program's proxy I/O |
//! | [`buffers`] | aligned memory: the per-reactor buffer pool |
//! | [`engine`] | the per-reactor io_uring engine: READ, WRITE, COMMIT, submit-and-wait |
//! | [`fixed_files`] | the engine's registered-file table |
//! | [`aio`] | I/O kept in flight on the engine's ring (READs, unstable WRITEs) |
//! | [`volume`] | the volume backend: every object on one block device or big file |
//! | [`nvme`] | NVMe passthrough for the volume (commands, the device, the engine's passthrough ring) |
//!
//! Objects: one file per DS filehandle under `<data_dir>/objects`
//! (`ds.backing = "files"`) or every object on one volume, a block device
//! or big file (`ds.backing = "volume"`, [`crate::storage::volume`]); the
//! per-reactor aligned buffer pool, and the per-reactor I/O engine.
//!
//! READ/WRITE/COMMIT ([`Engine`]) and the control program
//! ([`ObjectStore`]'s create/remove/truncate/read_at/write_at/sync/stat)
//! see [`Object`] and the store only; which backend holds an object is an
//! enum inside them. Everything below about descriptors and files is the
//! files backend; the volume backend has one buffered and one O_DIRECT
//! descriptor for the whole volume (the latter registered once in each
//! reactor's file table by [`Engine::attach_volume`]) and maps object
//! ranges to extents ([`crate::storage::volume::Volume::map_range`]); with
//! `ds.volume_passthrough` each engine also has an NVMe passthrough ring
//! for the volume's aligned data I/O and flushes ([`crate::storage::nvme`]).
//!
//! [`ObjectStore`] is the object directory: it opens, creates and removes
//! objects, and knows (weakly) the live object of each handle, so every
//! reactor opening a handle gets the same [`Object`] and with it the same
//! dirty generation: a COMMIT on a clean object (no write completed since
//! its last fdatasync, on any reactor or by the control program) answers
//! without a syscall, and one on a dirty object issues a single fdatasync
//! covering every write acknowledged before it. Each reactor keeps its own cache of open
//! objects ([`crate::bus::Replica`]), which the control program keeps right
//! through the bus updates (a created object is handed to every
//! reactor, a removed one dropped by every reactor before OBJ_REMOVE is
//! answered); the control program's own proxy I/O opens the buffered
//! descriptor per call. An open object has a buffered descriptor and,
//! when O_DIRECT is enabled and the file system accepts it, a second one
//! opened with O_DIRECT. Aligned requests (offset and length multiples of
//! 4096, buffer from the pool) use the O_DIRECT descriptor; everything else
//! (tails, odd offsets, control-program proxy I/O) uses the buffered one.
//! Linux keeps the two coherent (direct I/O writes back and invalidates the
//! cached pages of its range first).
//!
//! [`Engine`] belongs to one reactor thread (it is not `Send`): an io_uring
//! with the reactor's pool buffers registered (fixed buffers), used with
//! submit-and-wait per request by WRITE, COMMIT and the synchronous READ
//! path, and by [`crate::storage::aio`] for READs kept in flight (completions that
//! a submit-and-wait reaps for those are kept for [`crate::storage::aio`] in
//! `foreign`), and a sparse registered-file table
//! (`ds.fixed_files_per_reactor` slots): the reactor's open-object cache
//! installs an object's descriptors when it takes the object in and removes
//! them when it evicts or drops it, and I/O names the slot (`Fixed`)
//! instead of the fd, sparing the kernel the per-request fd lookup. When
//! io_uring cannot be set up it falls back to pread/pwrite; when buffer
//! registration fails, to unregistered uring reads/writes; when file
//! registration is refused (Linux < 5.19) or the table is full, to plain
//! descriptors. Each fallback is logged once per process.


pub mod aio;
pub mod buffers;
pub mod engine;
pub mod fixed_files;
pub mod nvme;
pub mod object;
pub mod volume;

pub(crate) use buffers::is_aligned;
pub use buffers::{BufPool, Detached, PoolBuf, IO_ALIGN};
pub(crate) use engine::SYNC_TAG;
pub use engine::{Engine, IoError};
pub use object::{probe_o_direct, ObjStat, Object, ObjectStore};

use std::sync::atomic::{AtomicBool, Ordering};

/// Logs `msg` at info level the first time `flag` is raised (each fallback
/// to a slower path is told once per process).
pub(crate) fn log_once(flag: &AtomicBool, msg: impl FnOnce() -> String) {
    if !flag.swap(true, Ordering::Relaxed) {
        log::info!("{}", msg());
    }
}

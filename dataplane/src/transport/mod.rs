//! The transport layer: how requests come in and replies go out. Nothing
//! here knows an NFS operation; a complete RPC record goes to
//! [`crate::compound`], its reply comes back encoded.
//!
//! - [`reactor`]: the per-core reactor threads (SO_REUSEPORT listeners,
//!   connections, poll modes, the io_uring completion reaper, the
//!   per-connection reply writer) and their bounds.
//! - [`recv`]: receiving RPC records, with WRITE payloads received
//!   straight into aligned pool buffers (zero copy).
//!
//! The asynchronous I/O a reactor keeps in flight is storage's
//! ([`crate::storage::aio`]); the MDS's own TCP service is not here but in
//! [`crate::mds_link`].

pub mod reactor;
pub mod recv;

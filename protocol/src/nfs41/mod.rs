//! The NFSv4.1 session and COMPOUND engine shared by the MDS and the data
//! servers (RFC 8881 2.10, 16.2, 18.35-18.37, 18.46): sans-I/O, generic
//! over what each plane brings.
//!
//! - [`clients`]: EXCHANGE_ID client records and their confirm/replace
//!   rules, the CREATE_SESSION replay cache (csa_sequence), DESTROY_CLIENTID,
//!   RECLAIM_COMPLETE. Each record has its own lock, so a plane may reach
//!   one client (SEQUENCE, OPEN) without the table's.
//! - [`sessions`]: sessions with their slot tables, CREATE_SESSION,
//!   DESTROY_SESSION, BIND_CONN_TO_SESSION, SEQUENCE and the reply cache.
//! - [`compound`]: the COMPOUND loop: the op array, the session gate, the
//!   current/saved filehandles, reply size and op-count limits, status
//!   patching, reply caching, and a last op that may suspend on I/O and
//!   resume later.
//!
//! A plane brings its client and session extensions (`X`, `S`: leases,
//! owner tags, addresses), its filehandle type and its operations through
//! [`compound::Plane`], and its policies (who is busy, how to make room,
//! what to drop when a client goes) through [`clients::ClientHooks`].
//! The engine does no I/O, reads no clock and knows nothing of storage:
//! effects (purged clients, a newly confirmed client to persist) come back
//! to the caller as values.

pub mod clients;
pub mod compound;
pub mod sessions;

pub use clients::{ClientHooks, ClientRecord, ClientTable};
pub use compound::{reply, CompoundState, OpStep, Outcome, Plane, ReplyBuffer, Suspended};
pub use sessions::{Session, SessionId, SessionStore, Shards};

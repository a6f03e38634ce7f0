//! The MDS link: the DS's end of the MDS <-> DS control protocol
//! (protocol/xdr/control.x). Named so because "control" already names the
//! MDS crate (`controlplane`) and the protocol itself; the DS-internal
//! queues this module publishes on are the update bus ([`crate::bus`]).
//!
//!
//! - Server: PNFSCTL_DS_PROGRAM version PNFSCTL_VERSION on `ds.control_bind`,
//!   ONC RPC over TCP with record marking, answered like the MDS answers
//!   NFS (accepted replies, GARBAGE_ARGS for undecodable arguments). It runs
//!   on its own thread with its own current-thread runtime; each call runs
//!   on that runtime's blocking pool (plain pread/pwrite/fdatasync on the
//!   buffered descriptor, opened per call), so proxy I/O never touches a
//!   reactor. The same runtime runs the lease reaper for idle DS clients.
//! - Calls that change what reactors check on every request (OBJ_CREATE,
//!   OBJ_REMOVE, STATEID_ALLOW, STATEID_REVOKE) are published on the update
//!   bus ([`crate::bus`]) and answered only once every reactor has applied
//!   them; one that cannot be (a reactor stalled past the bus timeout) is
//!   answered CTL_IO. OBJ_REMOVE unlinks the file before publishing, so no
//!   reactor can reopen the removed object afterwards.
//! - Client: a thread that registers with the MDS control listener
//!   (PNFSCTL_MDS_PROGRAM, CTL_PROC_REGISTER) and then heartbeats; it
//!   registers again whenever a heartbeat answers CTL_UNKNOWN_DS or the
//!   connection breaks, retries forever with backoff while the MDS is down,
//!   and logs at info once per change of state. When the MDS epoch changes
//!   (MDS restarted) the stateids allowed before the REGISTER that revealed
//!   it are forgotten (the MDS re-pushes the valid ones on REGISTER), by a
//!   bus update too.
//!
//! Every call, both ways, carries the cluster key's tag and every reply a
//! tag bound to its call (pnfs_protocol::control_auth): a call without one,
//! a replayed one, or one from an MDS epoch older than the newest this DS
//! has seen is answered AUTH_ERROR and its connection closed.
//!
//! Files, by job:
//! - `listener.rs`: the control listener ([`start_server`]): accepting MDS
//!   control connections over the shared transport crate, authentication,
//!   epoch fencing.
//! - `calls.rs`: the control-call handlers ([`handle_call`], and the async
//!   path for STATEID_BATCH).
//! - `client.rs`: the outgoing client to the MDS ([`CtlClient`]).
//! - `registration.rs`: registration and heartbeats ([`Registration`]) and
//!   the advertised control address ([`control_addr_string`]).

mod calls;
mod client;
mod listener;
mod registration;

pub use calls::handle_call;
pub use client::CtlClient;
pub use listener::start_server;
pub use registration::{control_addr_string, Registration};

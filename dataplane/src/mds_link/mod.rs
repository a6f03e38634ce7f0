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
//! - Client: a thread per MDS control address (`ds.mds_control`: one, or
//!   one per node of an MDS cluster) that registers with that MDS's
//!   control listener (PNFSCTL_MDS_PROGRAM, CTL_PROC_REGISTER) and then
//!   heartbeats; it registers again whenever a heartbeat answers
//!   CTL_UNKNOWN_DS or the connection breaks, retries forever with backoff
//!   while the MDS is down, and logs at info once per change of state. When
//!   a single MDS's epoch changes (it restarted) the stateids allowed
//!   before the REGISTER that revealed it are forgotten (the MDS re-pushes
//!   the valid ones on REGISTER), by a bus update too; a cluster node's
//!   are not (`Registration::forgets_on_restart` says why).
//!
//! Every call, both ways, carries the cluster key's tag and every reply a
//! tag bound to its call (pnfs_protocol::control_auth): a call without one,
//! a replayed one, or one from an MDS epoch its node superseded or another
//! node fenced (CTL_PROC_FENCE, [`MdsEpochs`]) is answered AUTH_ERROR and
//! its connection closed.
//!
//! Files, by job:
//! - `listener.rs`: the control listener ([`start_server`]): accepting MDS
//!   control connections over the shared transport crate, authentication,
//!   epoch fencing.
//! - `calls.rs`: the control-call handlers (`handle_call`, and the async
//!   path for STATEID_BATCH and FENCE).
//! - `epochs.rs`: the MDS epochs accepted per MDS node, and fencing
//!   ([`MdsEpochs`]).
//! - `client.rs`: the outgoing client to the MDS ([`CtlClient`]).
//! - `copy.rs`: object copies from other data servers (CTL_PROC_OBJ_COPY,
//!   the resilver's data mover; [`copy::Copier`]).
//! - `registration.rs`: registration and heartbeats ([`Registration`]) and
//!   the advertised control address ([`control_addr_string`]).

mod calls;
mod client;
pub mod copy;
mod epochs;
mod listener;
mod registration;

pub use client::CtlClient;
pub use epochs::{MdsEpochs, Refusal};
pub use listener::start_server;
pub use registration::{control_addr_string, Registration};

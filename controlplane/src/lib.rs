//! pnfs-mds: the metadata server of the pNFS appliance.
//!
//! Layers, top down: `server` (TCP, RPC) -> `compound` (session gate and
//! dispatch table) -> `ops::*` (one file per operation group) -> `mds`
//! (shared server object) -> `namespace` (KV-backed inodes and directories),
//! `state` (clients, sessions, stateids, locks), `datastore` (file data),
//! `pnfs` (data server registry, stripe sets, layouts' support code).

pub mod admin;
pub mod attrs;
pub mod callback;
pub mod cluster;
pub mod compound;
pub mod config;
pub mod datastore;
pub mod export;
pub mod fh;
pub mod group_commit;
pub mod keyspace;
pub mod kv_backend;
pub mod mds;
pub mod metrics;
pub mod namespace;
pub mod ops;
pub mod pnfs;
pub mod server;
pub mod state;
pub mod unlinked;

pub use config::{ExportConfig, MdsConfig};
pub use mds::Mds;
pub use server::Server;

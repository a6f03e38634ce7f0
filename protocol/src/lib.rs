//! Wire formats shared by the MDS and the data servers: the XDR runtime, ONC
//! RPC record marking, and the ONC RPC / AUTH_SYS / NFSv4.2 / pNFS (files and
//! flexible files layout) types generated from `xdr/*.x` by `xdrgen`.
//!
//! This crate knows nothing of storage or sockets.

pub mod conn_limits;
pub mod control_auth;
pub mod mds_ds;
pub mod nfs41;
pub mod record;
pub mod rpc;
pub mod seal;
pub mod session;
pub mod sync;
pub mod xdr;

#[cfg(test)]
mod roundtrip_tests;

/// Every type from `xdr/*.x`, named exactly as in the RFCs.
#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, unused_parens, clippy::all)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/wire.rs"));
}

/// The DS handle format, also reachable by its old path.
pub use mds_ds::ds_handle;
pub use xdr::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode, XdrError};

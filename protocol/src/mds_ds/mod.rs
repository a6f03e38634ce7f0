//! The MDS-DS contract: everything both planes must agree on, in one place.
//!
//! | what | where | who writes / reads it |
//! |---|---|---|
//! | control programs, procedures, argument and result types | `xdr/control.x`, generated into [`crate::wire`] (`PNFSCTL_MDS_PROGRAM`, `PNFSCTL_DS_PROGRAM`, `CTL_PROC_*`, `ctl_*`) | MDS control listener and client; DS control listener and registration |
//! | control call and reply authentication (cluster key, replay and epoch rules) | [`control_auth`] | both control listeners and clients |
//! | control epochs: `(node_id << 32) \| boot_count`, per MDS node | [`epoch`] | minted by each MDS node, checked and fenced per node by the DS |
//! | DS filehandles: the 16-byte object identity and its sealed form | [`ds_handle`] | minted by the MDS (layouts, control calls), checked by the DS (PUTFH) |
//! | device IDs: which data servers a layout's device names | [`deviceid`] | minted by the MDS (LAYOUTGET, GETDEVICELIST), read back by the MDS (GETDEVICEINFO) |
//! | universal addresses (RFC 5665, `tcp` and `tcp6`) | [`uaddr`] | sent by the DS at REGISTER, handed by the MDS to clients in device addresses |
//!
//! Numbers that bound the contract: at most [`MAX_DATA_SERVERS`] data
//! servers (one bit each in a device ID), `DS_MAX_ADDRS` client addresses
//! per DS, `CTL_MAX_BATCH` stateid changes per batch.

pub mod deviceid;
pub mod ds_handle;
pub mod epoch;
pub mod uaddr;

pub use crate::control_auth;
pub use deviceid::MAX_DATA_SERVERS;

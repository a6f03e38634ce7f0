//! NFS operations, one file per group (as nfs-ganesha and Chimera do). The
//! dispatch table in `compound.rs` maps each opnum to its handler here.

pub mod attr;
pub mod deleg;
pub mod dir;
pub mod filehandle;
pub mod io;
pub mod layout;
pub mod lock;
pub mod open;
pub mod session;
pub mod stateid;
pub mod v42;
pub mod xattr;

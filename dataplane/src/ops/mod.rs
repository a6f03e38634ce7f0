//! DS operations, one file per group (as on the MDS). The dispatch table in
//! `compound.rs` maps each opnum to its handler here.

pub mod attr;
pub mod filehandle;
pub mod io;
pub mod session;

//! Filehandle operations: PUTFH, PUTROOTFH, GETFH.

use crate::compound::{reply, Compound, ReplyBuf};
use crate::ds::Ds;
use crate::fh::DsFh;
use pnfs_protocol::wire::*;

/// BADHANDLE for a handle not in the DS format or whose tag is not ours
/// (forged, altered, or of another cluster), STALE for an object that
/// was never created or was removed (the reactor's open-object cache drops
/// an object before its OBJ_REMOVE is answered).
pub fn putfh(ds: &Ds, c: &mut Compound, a: &PUTFH4args, rb: &mut ReplyBuf) -> nfsstat4 {
    c.current_fh = None;
    c.current_obj = None;
    let r = (|| {
        let fh = DsFh::open(&a.object, &ds.fh_key)?;
        if !fh.is_root() {
            let obj = c.replica.object(&ds.store, &fh).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => nfsstat4::NFS4ERR_STALE,
                _ => {
                    log::warn!("opening object {}: {e}", fh.object_name());
                    nfsstat4::NFS4ERR_IO
                }
            })?;
            c.current_obj = Some(obj);
        }
        c.current_fh = Some(fh);
        Ok(())
    })();
    reply(rb, r)
}

pub fn putrootfh(_ds: &Ds, c: &mut Compound, rb: &mut ReplyBuf) -> nfsstat4 {
    c.current_fh = Some(DsFh::ROOT);
    c.current_obj = None;
    reply(rb, Ok(()))
}

pub fn getfh(ds: &Ds, c: &mut Compound, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = c.fh().map(|fh| GETFH4resok { object: fh.seal(&ds.fh_key).to_vec().into() });
    reply(rb, r)
}

//! GETATTR on the DS: enough for the client to check an object and a
//! session (type, size, change, fileid, fsid, lease_time, ...). An object's
//! attributes come from its file; the root handle is an empty directory.

use crate::compound::{reply, Compound, NfsResult, ReplyBuf};
use crate::ds::Ds;
use crate::fh::DsFh;
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;

pub const FATTR4_SUPPORTED_ATTRS: u32 = 0;
pub const FATTR4_TYPE: u32 = 1;
pub const FATTR4_FH_EXPIRE_TYPE: u32 = 2;
pub const FATTR4_CHANGE: u32 = 3;
pub const FATTR4_SIZE: u32 = 4;
pub const FATTR4_FSID: u32 = 8;
pub const FATTR4_LEASE_TIME: u32 = 10;
pub const FATTR4_FILEHANDLE: u32 = 19;
pub const FATTR4_FILEID: u32 = 20;
pub const FATTR4_MAXREAD: u32 = 30;
pub const FATTR4_MAXWRITE: u32 = 31;
pub const FATTR4_SPACE_USED: u32 = 45;
pub const FATTR4_TIME_MODIFY: u32 = 53;

/// In ascending order, as they are encoded.
pub const SUPPORTED: &[u32] = &[
    FATTR4_SUPPORTED_ATTRS,
    FATTR4_TYPE,
    FATTR4_FH_EXPIRE_TYPE,
    FATTR4_CHANGE,
    FATTR4_SIZE,
    FATTR4_FSID,
    FATTR4_LEASE_TIME,
    FATTR4_FILEHANDLE,
    FATTR4_FILEID,
    FATTR4_MAXREAD,
    FATTR4_MAXWRITE,
    FATTR4_SPACE_USED,
    FATTR4_TIME_MODIFY,
];

/// fsid of every DS object: "PNFSDS" in the major, 0 minor (clients never
/// mount a DS; the value only has to be stable).
const FSID: (u64, u64) = (0x504e_4653_4453, 0);
const FH4_PERSISTENT: u32 = 0;

fn bitmap_has(bm: &[u32], bit: u32) -> bool {
    bm.get((bit / 32) as usize).is_some_and(|w| w & (1 << (bit % 32)) != 0)
}

fn bitmap_from(bits: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut bm = Vec::new();
    for b in bits {
        let w = (b / 32) as usize;
        if bm.len() <= w {
            bm.resize(w + 1, 0);
        }
        bm[w] |= 1 << (b % 32);
    }
    bm
}

struct ObjAttrs {
    ftype: nfs_ftype4,
    size: u64,
    change: u64,
    fileid: u64,
    space_used: u64,
    mtime: (i64, u32),
}

/// Encodes the requested attributes we support, in ascending bit order.
fn encode(ds: &Ds, fh: &DsFh, a: &ObjAttrs, request: &[u32]) -> fattr4<'static> {
    let mut e = Encoder::new();
    let mut returned = Vec::new();
    for &bit in SUPPORTED.iter().filter(|b| bitmap_has(request, **b)) {
        returned.push(bit);
        match bit {
            FATTR4_SUPPORTED_ATTRS => {
                let bm = bitmap_from(SUPPORTED.iter().copied());
                e.put_u32(bm.len() as u32);
                bm.iter().for_each(|w| e.put_u32(*w));
            }
            FATTR4_TYPE => e.put_i32(a.ftype as i32),
            FATTR4_FH_EXPIRE_TYPE => e.put_u32(FH4_PERSISTENT),
            FATTR4_CHANGE => e.put_u64(a.change),
            FATTR4_SIZE => e.put_u64(a.size),
            FATTR4_FSID => {
                e.put_u64(FSID.0);
                e.put_u64(FSID.1);
            }
            FATTR4_LEASE_TIME => e.put_u32(ds.cfg.lease_seconds),
            FATTR4_FILEHANDLE => {
                let _ = e.put_opaque(&fh.seal(&ds.fh_key), NFS4_FHSIZE);
            }
            FATTR4_FILEID => e.put_u64(a.fileid),
            FATTR4_MAXREAD | FATTR4_MAXWRITE => e.put_u64(ds.cfg.max_io() as u64),
            FATTR4_SPACE_USED => e.put_u64(a.space_used),
            FATTR4_TIME_MODIFY => {
                e.put_i64(a.mtime.0);
                e.put_u32(a.mtime.1);
            }
            _ => unreachable!("attribute {bit} listed as supported but not encoded"),
        }
    }
    fattr4 { attrmask: bitmap_from(returned), attr_vals: e.into_inner().into() }
}

fn attrs_of(c: &Compound) -> NfsResult<(DsFh, ObjAttrs)> {
    let fh = c.fh()?;
    if fh.is_root() {
        let a = ObjAttrs { ftype: nfs_ftype4::NF4DIR, size: 0, change: 1, fileid: 1, space_used: 0, mtime: (0, 0) };
        return Ok((fh, a));
    }
    let (_, obj) = c.object()?;
    let m = obj.stat().map_err(|e| crate::ops::io::io_status(&e))?;
    Ok((
        fh,
        ObjAttrs { ftype: nfs_ftype4::NF4REG, size: m.size, change: m.change, fileid: fh.ino, space_used: m.space_used, mtime: m.mtime },
    ))
}

pub fn getattr(ds: &Ds, c: &mut Compound, a: &GETATTR4args, rb: &mut ReplyBuf) -> nfsstat4 {
    let r = attrs_of(c).map(|(fh, attrs)| GETATTR4resok { obj_attributes: encode(ds, &fh, &attrs, &a.attr_request) });
    reply(rb, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_is_ascending_and_bitmap_words() {
        assert!(SUPPORTED.windows(2).all(|w| w[0] < w[1]));
        let bm = bitmap_from(SUPPORTED.iter().copied());
        assert_eq!(bm.len(), 2);
        assert!(bitmap_has(&bm, FATTR4_TIME_MODIFY) && !bitmap_has(&bm, 33));
    }
}

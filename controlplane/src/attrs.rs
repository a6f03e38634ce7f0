//! fattr4: encoding our attributes for GETATTR/READDIR and decoding the
//! settable ones for SETATTR/CREATE/OPEN (RFC 8881 section 5).

use crate::namespace::{Inode, NfsResult, SetAttrs, SetTime, Time};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder};

pub const FATTR4_SUPPORTED_ATTRS: u32 = 0;
pub const FATTR4_TYPE: u32 = 1;
pub const FATTR4_FH_EXPIRE_TYPE: u32 = 2;
pub const FATTR4_CHANGE: u32 = 3;
pub const FATTR4_SIZE: u32 = 4;
pub const FATTR4_LINK_SUPPORT: u32 = 5;
pub const FATTR4_SYMLINK_SUPPORT: u32 = 6;
pub const FATTR4_NAMED_ATTR: u32 = 7;
pub const FATTR4_FSID: u32 = 8;
pub const FATTR4_UNIQUE_HANDLES: u32 = 9;
pub const FATTR4_LEASE_TIME: u32 = 10;
pub const FATTR4_RDATTR_ERROR: u32 = 11;
pub const FATTR4_ACLSUPPORT: u32 = 13;
pub const FATTR4_CANSETTIME: u32 = 15;
pub const FATTR4_CASE_INSENSITIVE: u32 = 16;
pub const FATTR4_CASE_PRESERVING: u32 = 17;
pub const FATTR4_CHOWN_RESTRICTED: u32 = 18;
pub const FATTR4_FILEHANDLE: u32 = 19;
pub const FATTR4_FILEID: u32 = 20;
pub const FATTR4_FILES_AVAIL: u32 = 21;
pub const FATTR4_FILES_FREE: u32 = 22;
pub const FATTR4_FILES_TOTAL: u32 = 23;
pub const FATTR4_HOMOGENEOUS: u32 = 26;
pub const FATTR4_MAXFILESIZE: u32 = 27;
pub const FATTR4_MAXLINK: u32 = 28;
pub const FATTR4_MAXNAME: u32 = 29;
pub const FATTR4_MAXREAD: u32 = 30;
pub const FATTR4_MAXWRITE: u32 = 31;
pub const FATTR4_MODE: u32 = 33;
pub const FATTR4_NO_TRUNC: u32 = 34;
pub const FATTR4_NUMLINKS: u32 = 35;
pub const FATTR4_OWNER: u32 = 36;
pub const FATTR4_OWNER_GROUP: u32 = 37;
pub const FATTR4_RAWDEV: u32 = 41;
pub const FATTR4_SPACE_AVAIL: u32 = 42;
pub const FATTR4_SPACE_FREE: u32 = 43;
pub const FATTR4_SPACE_TOTAL: u32 = 44;
pub const FATTR4_SPACE_USED: u32 = 45;
pub const FATTR4_TIME_ACCESS: u32 = 47;
pub const FATTR4_TIME_ACCESS_SET: u32 = 48;
pub const FATTR4_TIME_CREATE: u32 = 50;
pub const FATTR4_TIME_DELTA: u32 = 51;
pub const FATTR4_TIME_METADATA: u32 = 52;
pub const FATTR4_TIME_MODIFY: u32 = 53;
pub const FATTR4_TIME_MODIFY_SET: u32 = 54;
pub const FATTR4_MOUNTED_ON_FILEID: u32 = 55;
pub const FATTR4_FS_LAYOUT_TYPES: u32 = 62;
pub const FATTR4_LAYOUT_BLKSIZE: u32 = 65;
pub const FATTR4_SUPPATTR_EXCLCREAT: u32 = 75;
pub const FATTR4_CLONE_BLKSIZE: u32 = 77;
pub const FATTR4_CHANGE_ATTR_TYPE: u32 = 79;
pub const FATTR4_MODE_UMASK: u32 = 81;
pub const FATTR4_XATTR_SUPPORT: u32 = 82;
/// What OPEN supports (RFC 9754): clients learn delegations are wanted.
pub const FATTR4_OPEN_ARGUMENTS: u32 = 86;

/// Attributes we answer in NFSv4.1.
const SUPPORTED_V41: &[u32] = &[
    FATTR4_SUPPORTED_ATTRS, FATTR4_TYPE, FATTR4_FH_EXPIRE_TYPE, FATTR4_CHANGE, FATTR4_SIZE, FATTR4_LINK_SUPPORT,
    FATTR4_SYMLINK_SUPPORT, FATTR4_NAMED_ATTR, FATTR4_FSID, FATTR4_UNIQUE_HANDLES, FATTR4_LEASE_TIME,
    FATTR4_RDATTR_ERROR, FATTR4_ACLSUPPORT, FATTR4_CANSETTIME, FATTR4_CASE_INSENSITIVE, FATTR4_CASE_PRESERVING,
    FATTR4_CHOWN_RESTRICTED, FATTR4_FILEHANDLE, FATTR4_FILEID, FATTR4_FILES_AVAIL, FATTR4_FILES_FREE,
    FATTR4_FILES_TOTAL, FATTR4_HOMOGENEOUS, FATTR4_MAXFILESIZE, FATTR4_MAXLINK, FATTR4_MAXNAME, FATTR4_MAXREAD,
    FATTR4_MAXWRITE, FATTR4_MODE, FATTR4_NO_TRUNC, FATTR4_NUMLINKS, FATTR4_OWNER, FATTR4_OWNER_GROUP,
    FATTR4_RAWDEV, FATTR4_SPACE_AVAIL, FATTR4_SPACE_FREE, FATTR4_SPACE_TOTAL, FATTR4_SPACE_USED,
    FATTR4_TIME_ACCESS, FATTR4_TIME_ACCESS_SET, FATTR4_TIME_CREATE, FATTR4_TIME_DELTA, FATTR4_TIME_METADATA,
    FATTR4_TIME_MODIFY, FATTR4_TIME_MODIFY_SET, FATTR4_MOUNTED_ON_FILEID, FATTR4_FS_LAYOUT_TYPES,
    FATTR4_LAYOUT_BLKSIZE, FATTR4_SUPPATTR_EXCLCREAT,
];
/// Added in NFSv4.2.
const SUPPORTED_V42_EXTRA: &[u32] =
    &[FATTR4_CLONE_BLKSIZE, FATTR4_CHANGE_ATTR_TYPE, FATTR4_MODE_UMASK, FATTR4_XATTR_SUPPORT, FATTR4_OPEN_ARGUMENTS];
/// Attributes a client may set.
const WRITABLE: &[u32] = &[
    FATTR4_SIZE, FATTR4_MODE, FATTR4_OWNER, FATTR4_OWNER_GROUP, FATTR4_TIME_ACCESS_SET, FATTR4_TIME_MODIFY_SET,
    FATTR4_MODE_UMASK,
];
/// Settable at EXCLUSIVE4_1 create time (suppattr_exclcreat).
const EXCLCREAT: &[u32] = &[FATTR4_SIZE, FATTR4_MODE, FATTR4_OWNER, FATTR4_OWNER_GROUP, FATTR4_MODE_UMASK];

pub fn bitmap_has(bm: &[u32], bit: u32) -> bool {
    bm.get((bit / 32) as usize).is_some_and(|w| w & (1 << (bit % 32)) != 0)
}

pub fn bitmap_from(bits: &[u32]) -> Vec<u32> {
    let mut bm = Vec::new();
    for &b in bits {
        let w = (b / 32) as usize;
        if bm.len() <= w {
            bm.resize(w + 1, 0);
        }
        bm[w] |= 1 << (b % 32);
    }
    bm
}

fn bits_of(bm: &[u32]) -> impl Iterator<Item = u32> + '_ {
    bm.iter().enumerate().flat_map(|(w, word)| (0..32).filter(move |b| word & (1 << b) != 0).map(move |b| w as u32 * 32 + b))
}

pub fn supported(minor: u32, bit: u32) -> bool {
    SUPPORTED_V41.contains(&bit) || (minor >= 2 && SUPPORTED_V42_EXTRA.contains(&bit))
}

pub fn supported_bitmap(minor: u32) -> Vec<u32> {
    let mut all: Vec<u32> = SUPPORTED_V41.to_vec();
    if minor >= 2 {
        all.extend_from_slice(SUPPORTED_V42_EXTRA);
    }
    bitmap_from(&all)
}

/// What encoding needs besides the inode.
pub struct AttrContext<'c> {
    pub minor: u32,
    pub fsid: (u64, u64),
    pub lease_time: u32,
    pub fh: &'c [u8],
    pub max_io: u32,
    /// (total, free, available) bytes.
    pub capacity: (u64, u64, u64),
    pub space_used: u64,
    /// For mounted_on_fileid on an export root; usually the ino.
    pub mounted_on_fileid: u64,
    /// Some(stripe unit) when pNFS (files layout) is on.
    pub layout_blksize: Option<u32>,
    /// With pNFS on: the MDS default (`mds.layout`) mirrors, so flexfiles
    /// is advertised too (see FATTR4_FS_LAYOUT_TYPES).
    pub flex_files: bool,
}

pub fn owner_string(id: u32) -> Vec<u8> {
    id.to_string().into_bytes()
}

/// Numeric owner strings (what Linux sends with AUTH_SYS), optionally with an
/// @domain, plus `root` and `nobody`.
pub fn parse_owner(s: &[u8]) -> NfsResult<u32> {
    let s = std::str::from_utf8(s).map_err(|_| nfsstat4::NFS4ERR_BADOWNER)?;
    let name = s.split('@').next().unwrap_or("");
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match name {
        "root" => Ok(0),
        "nobody" => Ok(65534),
        _ => Err(nfsstat4::NFS4ERR_BADOWNER),
    }
}

fn put_time(e: &mut Encoder, t: &Time) {
    e.put_i64(t.sec);
    e.put_u32(t.nsec);
}

/// Encodes the requested attributes that we support; returns the fattr4
/// (result bitmap lists exactly what was encoded, in ascending order).
pub fn encode_fattr(i: &Inode, req: &[u32], cx: &AttrContext) -> fattr4<'static> {
    let mut done = Vec::new();
    let mut e = Encoder::new();
    for bit in bits_of(req) {
        if !supported(cx.minor, bit) {
            continue;
        }
        match bit {
            FATTR4_SUPPORTED_ATTRS => {
                let bm = supported_bitmap(cx.minor);
                e.put_u32(bm.len() as u32);
                bm.iter().for_each(|w| e.put_u32(*w));
            }
            FATTR4_TYPE => e.put_u32(i.kind),
            FATTR4_FH_EXPIRE_TYPE => e.put_u32(0), // FH4_PERSISTENT
            FATTR4_CHANGE => e.put_u64(i.change),
            FATTR4_SIZE => e.put_u64(i.size),
            FATTR4_LINK_SUPPORT | FATTR4_SYMLINK_SUPPORT | FATTR4_UNIQUE_HANDLES | FATTR4_CANSETTIME
            | FATTR4_CASE_PRESERVING | FATTR4_CHOWN_RESTRICTED | FATTR4_HOMOGENEOUS | FATTR4_NO_TRUNC => {
                e.put_bool(true)
            }
            FATTR4_NAMED_ATTR | FATTR4_CASE_INSENSITIVE => e.put_bool(false),
            FATTR4_FSID => {
                e.put_u64(cx.fsid.0);
                e.put_u64(cx.fsid.1);
            }
            FATTR4_LEASE_TIME => e.put_u32(cx.lease_time),
            FATTR4_RDATTR_ERROR => e.put_u32(0),
            FATTR4_ACLSUPPORT => e.put_u32(0),
            FATTR4_FILEHANDLE => {
                let _ = e.put_opaque(cx.fh, NFS4_FHSIZE);
            }
            FATTR4_FILEID => e.put_u64(i.ino),
            FATTR4_FILES_AVAIL | FATTR4_FILES_FREE => e.put_u64(1 << 40),
            FATTR4_FILES_TOTAL => e.put_u64(1 << 41),
            FATTR4_MAXFILESIZE => e.put_u64(i64::MAX as u64),
            FATTR4_MAXLINK => e.put_u32(65000),
            FATTR4_MAXNAME => e.put_u32(crate::namespace::MAX_NAME as u32),
            FATTR4_MAXREAD | FATTR4_MAXWRITE => e.put_u64(cx.max_io as u64),
            FATTR4_MODE => e.put_u32(i.mode & 0o7777),
            FATTR4_NUMLINKS => e.put_u32(i.nlink),
            FATTR4_OWNER => {
                let _ = e.put_opaque(&owner_string(i.uid), u32::MAX);
            }
            FATTR4_OWNER_GROUP => {
                let _ = e.put_opaque(&owner_string(i.gid), u32::MAX);
            }
            FATTR4_RAWDEV => {
                e.put_u32(i.rdev.0);
                e.put_u32(i.rdev.1);
            }
            FATTR4_SPACE_AVAIL => e.put_u64(cx.capacity.2),
            FATTR4_SPACE_FREE => e.put_u64(cx.capacity.1),
            FATTR4_SPACE_TOTAL => e.put_u64(cx.capacity.0),
            FATTR4_SPACE_USED => e.put_u64(cx.space_used),
            FATTR4_TIME_ACCESS => put_time(&mut e, &i.atime),
            FATTR4_TIME_CREATE => put_time(&mut e, &i.btime),
            FATTR4_TIME_DELTA => put_time(&mut e, &Time { sec: 0, nsec: 1 }),
            FATTR4_TIME_METADATA => put_time(&mut e, &i.ctime),
            FATTR4_TIME_MODIFY => put_time(&mut e, &i.mtime),
            FATTR4_MOUNTED_ON_FILEID => e.put_u64(cx.mounted_on_fileid),
            // On every fsid: the Linux client loads its layout driver per
            // mount, the first of these in ITS order (flexfiles before
            // files, whatever ours): so flexfiles is listed only when the
            // MDS default mirrors (pnfs/mirror.rs). Files of the other kind
            // get LAYOUTUNAVAILABLE and go through the MDS.
            FATTR4_FS_LAYOUT_TYPES => match cx.layout_blksize {
                Some(_) if cx.flex_files => {
                    e.put_u32(2);
                    e.put_i32(layouttype4::LAYOUT4_FLEX_FILES as i32);
                    e.put_i32(layouttype4::LAYOUT4_NFSV4_1_FILES as i32);
                }
                Some(_) => {
                    e.put_u32(1);
                    e.put_i32(layouttype4::LAYOUT4_NFSV4_1_FILES as i32);
                }
                None => e.put_u32(0),
            },
            FATTR4_LAYOUT_BLKSIZE => e.put_u32(cx.layout_blksize.unwrap_or(cx.max_io)),
            FATTR4_SUPPATTR_EXCLCREAT => {
                let mut bits: Vec<u32> = EXCLCREAT.iter().copied().filter(|b| supported(cx.minor, *b)).collect();
                bits.sort();
                let bm = bitmap_from(&bits);
                e.put_u32(bm.len() as u32);
                bm.iter().for_each(|w| e.put_u32(*w));
            }
            FATTR4_CLONE_BLKSIZE => e.put_u32(4096),
            FATTR4_CHANGE_ATTR_TYPE => e.put_u32(0), // NFS4_CHANGE_TYPE_IS_MONOTONIC_INCR
            FATTR4_XATTR_SUPPORT => e.put_bool(true),
            FATTR4_OPEN_ARGUMENTS => {
                // One-word bitmaps of the values OPEN accepts: share access
                // READ/WRITE/BOTH, every deny, WANT_* up to CANCEL (no
                // timestamps), claims but DELEGATE_PREV/DELEG_PREV_FH, every createmode.
                for word in [0b1110u32, 0b1111, 0b11_1111, 0b11_0111, 0b1111] {
                    e.put_u32(1);
                    e.put_u32(word);
                }
            }
            // Write-only attributes are never returned.
            FATTR4_TIME_ACCESS_SET | FATTR4_TIME_MODIFY_SET | FATTR4_MODE_UMASK => continue,
            _ => continue,
        }
        done.push(bit);
    }
    fattr4 { attrmask: bitmap_from(&done), attr_vals: e.into_inner().into() }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum SetContext {
    Setattr,
    Create,
    ExclusiveCreate,
}

/// Decodes settable attributes. Unsupported -> ATTRNOTSUPP, read-only -> INVAL,
/// malformed -> BADXDR. Returns the values and the bitmap of what was set.
pub fn decode_settable(f: &fattr4, minor: u32, ctx: SetContext) -> NfsResult<(SetAttrs, Vec<u32>)> {
    let mut out = SetAttrs::default();
    let mut set = Vec::new();
    let mut d = Decoder::new(&f.attr_vals);
    let bad = |_| nfsstat4::NFS4ERR_BADXDR;
    let mut umask: Option<(u32, u32)> = None;
    for bit in bits_of(&f.attrmask) {
        if !supported(minor, bit) {
            return Err(nfsstat4::NFS4ERR_ATTRNOTSUPP);
        }
        if !WRITABLE.contains(&bit) {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        if ctx == SetContext::ExclusiveCreate && !EXCLCREAT.contains(&bit) {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        match bit {
            FATTR4_SIZE => out.size = Some(d.get_u64().map_err(bad)?),
            FATTR4_MODE => out.mode = Some(d.get_u32().map_err(bad)? & 0o7777),
            FATTR4_OWNER => out.uid = Some(parse_owner(&d.get_opaque(1024).map_err(bad)?)?),
            FATTR4_OWNER_GROUP => out.gid = Some(parse_owner(&d.get_opaque(1024).map_err(bad)?)?),
            FATTR4_TIME_ACCESS_SET | FATTR4_TIME_MODIFY_SET => {
                let how = d.get_u32().map_err(bad)?;
                let t = match how {
                    0 => SetTime::ServerNow, // SET_TO_SERVER_TIME4
                    1 => {
                        let sec = d.get_i64().map_err(bad)?;
                        let nsec = d.get_u32().map_err(bad)?;
                        if nsec >= 1_000_000_000 {
                            return Err(nfsstat4::NFS4ERR_INVAL);
                        }
                        SetTime::Client(Time { sec, nsec })
                    }
                    _ => return Err(nfsstat4::NFS4ERR_BADXDR),
                };
                if bit == FATTR4_TIME_ACCESS_SET {
                    out.atime = Some(t);
                } else {
                    out.mtime = Some(t);
                }
            }
            FATTR4_MODE_UMASK => {
                let mode = d.get_u32().map_err(bad)?;
                let mask = d.get_u32().map_err(bad)?;
                umask = Some((mode, mask));
            }
            _ => return Err(nfsstat4::NFS4ERR_ATTRNOTSUPP),
        }
        set.push(bit);
    }
    if d.remaining() != 0 {
        return Err(nfsstat4::NFS4ERR_BADXDR);
    }
    if let Some((mode, mask)) = umask {
        if out.mode.is_some() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        // Umask applies only when creating.
        out.mode = Some(if ctx == SetContext::Setattr { mode } else { mode & !mask } & 0o7777);
    }
    Ok((out, bitmap_from(&set)))
}

/// VERIFY/NVERIFY: are the given attribute values equal to ours?
pub fn attrs_match(i: &Inode, given: &fattr4, cx: &AttrContext) -> NfsResult<bool> {
    for bit in bits_of(&given.attrmask) {
        if !supported(cx.minor, bit) {
            return Err(nfsstat4::NFS4ERR_ATTRNOTSUPP);
        }
        if bit == FATTR4_RDATTR_ERROR || bit == FATTR4_TIME_ACCESS_SET || bit == FATTR4_TIME_MODIFY_SET {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
    }
    let ours = encode_fattr(i, &given.attrmask, cx);
    Ok(ours.attr_vals.as_bytes() == given.attr_vals.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(parse_owner(b"1000").unwrap(), 1000);
        assert_eq!(parse_owner(b"1000@example.com").unwrap(), 1000);
        assert_eq!(parse_owner(b"root").unwrap(), 0);
        assert_eq!(parse_owner(b"alice").unwrap_err(), nfsstat4::NFS4ERR_BADOWNER);
    }

    #[test]
    fn bitmaps() {
        let bm = bitmap_from(&[1, 33, 82]);
        assert_eq!(bm.len(), 3);
        assert!(bitmap_has(&bm, 33));
        assert_eq!(bits_of(&bm).collect::<Vec<_>>(), vec![1, 33, 82]);
        assert!(!bitmap_has(&supported_bitmap(1), FATTR4_XATTR_SUPPORT));
        assert!(bitmap_has(&supported_bitmap(2), FATTR4_XATTR_SUPPORT));
    }

    #[test]
    fn settable_decode() {
        let mut e = Encoder::new();
        e.put_u64(5); // size
        e.put_u32(0o644); // mode
        e.put_opaque(b"12", 100).unwrap();
        let f = fattr4 { attrmask: bitmap_from(&[FATTR4_SIZE, FATTR4_MODE, FATTR4_OWNER]), attr_vals: e.into_inner().into() };
        let (s, set) = decode_settable(&f, 1, SetContext::Setattr).unwrap();
        assert_eq!((s.size, s.mode, s.uid), (Some(5), Some(0o644), Some(12)));
        assert_eq!(set, f.attrmask);
        let ro = fattr4 { attrmask: bitmap_from(&[FATTR4_TYPE]), attr_vals: vec![0, 0, 0, 1].into() };
        assert_eq!(decode_settable(&ro, 1, SetContext::Setattr).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
        let short = fattr4 { attrmask: bitmap_from(&[FATTR4_SIZE]), attr_vals: vec![0, 0].into() };
        assert_eq!(decode_settable(&short, 1, SetContext::Setattr).unwrap_err(), nfsstat4::NFS4ERR_BADXDR);
    }
}

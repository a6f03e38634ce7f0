//! pNFS layouts: LAYOUTGET, LAYOUTCOMMIT, LAYOUTRETURN, GETDEVICEINFO,
//! GETDEVICELIST (RFC 8881 18.40-18.44, chapters 12-13; RFC 8435).
//!
//! A file's placement decides its layout type: striped files get files
//! layouts (whole-file, dense, pattern offset 0, one DS filehandle per
//! stripe), mirrored files flexfiles layouts, one byte-range segment per
//! LAYOUTGET (`pnfs::mirror`). A LAYOUTGET of the other type is
//! LAYOUTUNAVAILABLE (the client does that file's I/O through the MDS);
//! a type the MDS never hands out is UNKNOWN_LAYOUTTYPE.
//!
//! The layout stateid is one per (client, file) (`StateKind::Layout`
//! in the state table): the first LAYOUTGET presents an open, lock or
//! delegation stateid (or the current stateid) and gets a new layout stateid
//! with seqid 1; LAYOUTGET and LAYOUTRETURN bump its seqid; it goes away when
//! every iomode was returned, with FREE_STATEID, or with its client.
//! Without pNFS (no mds.control_bind) these operations answer NOTSUPP.

use crate::compound::{current_inode, reply, Compound};
use crate::mds::Mds;
use crate::namespace::NfsResult;
use crate::ops::stateid::resolve;
use crate::pnfs::mirror::{ff_device_addr_body, ff_device_ds, ff_deviceid, MAX_SEGMENTS_PER_REPLY};
use crate::pnfs::{device_addr_body, MirrorSet, PlaceError, Placement, Pnfs, MAX_LAYOUT_BODY};
use crate::state::{Effects, LAYOUT_READ, LAYOUT_RW};
use pnfs_protocol::wire::*;
use pnfs_protocol::Encoder;
use std::sync::Arc;

fn pnfs(m: &Mds) -> NfsResult<&Arc<Pnfs>> {
    m.pnfs.as_ref().ok_or(nfsstat4::NFS4ERR_NOTSUPP)
}

/// The layout types this MDS hands out: files and flexfiles.
fn known_type(t: layouttype4) -> NfsResult<()> {
    match t {
        layouttype4::LAYOUT4_NFSV4_1_FILES | layouttype4::LAYOUT4_FLEX_FILES => Ok(()),
        _ => Err(nfsstat4::NFS4ERR_UNKNOWN_LAYOUTTYPE),
    }
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Encoded size of a LAYOUTGET4resok with one layout of `body` bytes.
pub fn layoutget_resok_size(body: usize) -> usize {
    // return_on_close, stateid, layout count, offset, length, iomode, type, body
    4 + 16 + 4 + 8 + 8 + 4 + 4 + 4 + pad4(body)
}

/// Segments `[first, last]` of a mirrored file a LAYOUTGET needs: the one
/// holding `loga_offset`, and those `loga_minlength` reaches into.
fn segments_wanted(m: &MirrorSet, a: &LAYOUTGET4args) -> NfsResult<(u64, u64)> {
    let first = m.segment_of(a.loga_offset);
    let end = a.loga_offset.saturating_add(a.loga_minlength.max(1)) - 1;
    let last = m.segment_of(end);
    if last - first >= MAX_SEGMENTS_PER_REPLY as u64 {
        // RFC 8881 18.43.3: no layout of loga_minlength can be returned.
        return Err(nfsstat4::NFS4ERR_BADLAYOUT);
    }
    Ok((first, last))
}

pub fn layoutget(m: &Mds, c: &mut Compound, a: &LAYOUTGET4args, e: &mut Encoder) -> nfsstat4 {
    reply(e, layoutget_inner(m, c, a))
}

fn layoutget_inner(m: &Mds, c: &mut Compound, a: &LAYOUTGET4args) -> NfsResult<LAYOUTGET4resok<'static>> {
    let p = pnfs(m)?;
    let (fh, i) = current_inode(m, c)?;
    let clientid = c.clientid()?;
    known_type(a.loga_layout_type)?;
    let want = match a.loga_iomode {
        layoutiomode4::LAYOUTIOMODE4_READ => LAYOUT_READ,
        layoutiomode4::LAYOUTIOMODE4_RW => LAYOUT_RW,
        layoutiomode4::LAYOUTIOMODE4_ANY => return Err(nfsstat4::NFS4ERR_BADIOMODE),
    };
    if a.loga_length == 0 || a.loga_minlength > a.loga_length {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    if a.loga_length != u64::MAX && a.loga_offset.checked_add(a.loga_length).is_none() {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    if i.ftype() != nfs_ftype4::NF4REG {
        return Err(nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
    }
    if want == LAYOUT_RW && m.export(fh.export_id)?.read_only {
        return Err(nfsstat4::NFS4ERR_ROFS);
    }
    let sid = resolve(c, &a.loga_stateid)?;
    if m.state().in_grace() {
        return Err(nfsstat4::NFS4ERR_GRACE);
    }
    m.state().layoutget_check(clientid, i.ino, &sid)?;
    // Placement makes control calls: never under the state mutex.
    let placement = match p.placement(i.ino).map_err(crate::mds::io_err)? {
        Some(s) => s,
        // Data written before pNFS was on (or while no DS lived) stays local.
        None if m.data.object_len(i.ino) > 0 => return Err(nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE),
        None => match p.place(i.ino) {
            Ok(s) => s,
            Err(PlaceError::Unavailable) => return Err(nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE),
            Err(PlaceError::Io(e)) => {
                log::error!("placing inode {}: {e}", i.ino);
                return Err(nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
            }
        },
    };
    // The file's kind decides its type; Linux takes LAYOUTUNAVAILABLE as
    // "through the MDS" (UNKNOWN_LAYOUTTYPE would fail its I/O).
    if placement.layout_type() != a.loga_layout_type {
        return Err(nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
    }
    let set = match placement {
        Placement::Striped(s) => s,
        Placement::Mirrored(mset) => return flex_layoutget(m, c, a, p, (&fh, &i), clientid, &sid, want, &mset),
    };
    if !p.all_alive(&set) {
        // LAYOUTUNAVAILABLE (I/O through the MDS) or, past mds.ds_lost_after_ms, IO.
        return Err(p.layout_unavailable(i.ino, &set));
    }
    let body = set.layout_body(i.ino, p.ds_fh_key());
    if layoutget_resok_size(body.len()) > a.loga_maxcount as usize {
        return Err(nfsstat4::NFS4ERR_TOOSMALL);
    }
    let by = c.session.as_ref().zip(c.slot).map(|(s, slot)| (s.id, slot, c.sequenceid));
    let mut fx = Effects::default();
    // Tight coupling: the layout stateid with every I/O stateid of this
    // client on this file.
    let granted = m.state().layout_grant(clientid, i.ino, &sid, want, fh.export_id, i.generation, by, &mut fx);
    let _ = m.apply(fx);
    let (lsid, push) = granted?;
    p.allow(clientid, i.ino, &set, &push);
    c.current_stateid = Some(lsid.clone());
    Ok(LAYOUTGET4resok {
        logr_return_on_close: m.cfg.layout_return_on_close,
        logr_stateid: lsid,
        logr_layout: vec![layout4 {
            lo_offset: 0,
            lo_length: u64::MAX,
            lo_iomode: a.loga_iomode,
            lo_content: layout_content4 { loc_type: layouttype4::LAYOUT4_NFSV4_1_FILES, loc_body: body.into() },
        }],
    })
}

/// LAYOUTGET of a mirrored file: the segment(s) asked for, each an
/// ff_layout4 whose data servers accept the layout stateid (pushed to them
/// before the reply, as the files layout's I/O stateids are).
#[allow(clippy::too_many_arguments)]
fn flex_layoutget(
    m: &Mds,
    c: &mut Compound,
    a: &LAYOUTGET4args,
    p: &Pnfs,
    (fh, i): (&crate::fh::FileHandle, &crate::namespace::Inode),
    clientid: u64,
    sid: &stateid4,
    want: u32,
    mset: &MirrorSet,
) -> NfsResult<LAYOUTGET4resok<'static>> {
    let (first, last) = segments_wanted(mset, a)?;
    let mut ds: Vec<u32> = (first..=last).flat_map(|k| mset.segment_ds(k)).collect();
    ds.sort_unstable();
    ds.dedup();
    if !ds.iter().all(|d| p.registry.alive(*d)) {
        return Err(nfsstat4::NFS4ERR_LAYOUTUNAVAILABLE);
    }
    let (user, group) = (crate::attrs::owner_string(i.uid), crate::attrs::owner_string(i.gid));
    let bodies = |ds_sid: &stateid4| -> Vec<Vec<u8>> {
        (first..=last).map(|k| mset.layout_body(k, i.ino, p.ds_fh_key(), ds_sid, &user, &group)).collect()
    };
    // Sizes do not depend on the stateid: check them before granting.
    let sized = bodies(&stateid4 { seqid: 0, other: [0; 12] });
    if sized.iter().any(|b| b.len() > MAX_LAYOUT_BODY) {
        return Err(nfsstat4::NFS4ERR_TOOSMALL);
    }
    let total: usize = 4 + 16 + 4 + sized.iter().map(|b| layoutget_resok_size(b.len()) - 4 - 16 - 4).sum::<usize>();
    if total > a.loga_maxcount as usize {
        return Err(nfsstat4::NFS4ERR_TOOSMALL);
    }
    let by = c.session.as_ref().zip(c.slot).map(|(s, slot)| (s.id, slot, c.sequenceid));
    let mut fx = Effects::default();
    let granted = m.state().layout_grant(clientid, i.ino, sid, want, fh.export_id, i.generation, by, &mut fx);
    let _ = m.apply(fx);
    let (lsid, _io_stateids) = granted?;
    // Tight coupling: flexfiles clients send ffds_stateid to the data
    // servers, so the layout stateid itself is what they must accept; it
    // is revoked there when the layout ends (returned, recalled, expired).
    let ds_sid = stateid4 { seqid: 0, other: lsid.other };
    let access = if want == LAYOUT_RW { OPEN4_SHARE_ACCESS_READ | OPEN4_SHARE_ACCESS_WRITE } else { OPEN4_SHARE_ACCESS_READ };
    let fhid = mset.object_fh(i.ino);
    let objects: Vec<(u32, [u8; pnfs_protocol::mds_ds::ds_handle::IDENTITY_LEN])> = ds.iter().map(|d| (*d, fhid)).collect();
    p.allow_on(clientid, &objects, &[(ds_sid.clone(), access)]);
    c.current_stateid = Some(lsid.clone());
    let layouts = (first..=last)
        .zip(bodies(&ds_sid))
        .map(|(k, body)| {
            let (offset, length) = mset.segment_range(k);
            layout4 {
                lo_offset: offset,
                lo_length: if offset.checked_add(length).is_some() { length } else { u64::MAX },
                lo_iomode: a.loga_iomode,
                lo_content: layout_content4 { loc_type: layouttype4::LAYOUT4_FLEX_FILES, loc_body: body.into() },
            }
        })
        .collect();
    Ok(LAYOUTGET4resok { logr_return_on_close: m.cfg.layout_return_on_close, logr_stateid: lsid, logr_layout: layouts })
}

pub fn layoutcommit(m: &Mds, c: &mut Compound, a: &LAYOUTCOMMIT4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        pnfs(m)?;
        let (_, i) = current_inode(m, c)?;
        crate::ops::io::regular_file(&i)?;
        let clientid = c.clientid()?;
        known_type(a.loca_layoutupdate.lou_type)?;
        if a.loca_length != u64::MAX && a.loca_offset.checked_add(a.loca_length).is_none() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        let sid = resolve(c, &a.loca_stateid)?;
        if a.loca_reclaim && !m.state().in_grace() {
            return Err(nfsstat4::NFS4ERR_NO_GRACE);
        }
        let end = match a.loca_last_write_offset {
            newoffset4::TRUE(last) => Some(last.checked_add(1).ok_or(nfsstat4::NFS4ERR_INVAL)?),
            newoffset4::FALSE => None,
        };
        let layout_gone = m.state().layout_commit_check(clientid, i.ino, &sid)?;
        if layout_gone && m.state().open_access_of(clientid, i.ino) & OPEN4_SHARE_ACCESS_WRITE == 0 {
            return Err(nfsstat4::NFS4ERR_BADLAYOUT);
        }
        // Size (when it grows), mtime, ctime and change in one transaction.
        let after = m.ns.note_write(i.ino, end.unwrap_or(0))?;
        if layout_gone {
            // The layout went (returned, or forgotten: a recall answered
            // NOMATCHING_LAYOUT drops it) while this LAYOUTCOMMIT was on its
            // way; Linux sends one just before answering a recall. The bytes
            // it covers are on the data servers and the client still has the
            // file open for writing, so the size moves all the same; the
            // answer is BADLAYOUT (RFC 8881 18.42.4), which Linux takes as
            // done. BAD_STATEID here failed the client's fsync with EIO.
            return Err(nfsstat4::NFS4ERR_BADLAYOUT);
        }
        let newsize = if after.size != i.size { newsize4::TRUE(after.size) } else { newsize4::FALSE };
        Ok(LAYOUTCOMMIT4resok { locr_newsize: newsize })
    })();
    reply(e, r)
}

pub fn layoutreturn(m: &Mds, c: &mut Compound, a: &LAYOUTRETURN4args, e: &mut Encoder) -> nfsstat4 {
    let mut fx = Effects::default();
    let r = (|| {
        pnfs(m)?;
        let clientid = c.clientid()?;
        // A flexfiles return's body (I/O errors, stats) is not read here.
        known_type(a.lora_layout_type)?;
        let bits = match a.lora_iomode {
            layoutiomode4::LAYOUTIOMODE4_READ => LAYOUT_READ,
            layoutiomode4::LAYOUTIOMODE4_RW => LAYOUT_RW,
            layoutiomode4::LAYOUTIOMODE4_ANY => LAYOUT_READ | LAYOUT_RW,
        };
        if a.lora_reclaim && !m.state().in_grace() {
            return Err(nfsstat4::NFS4ERR_NO_GRACE);
        }
        match &a.lora_layoutreturn {
            layoutreturn4::LAYOUTRETURN4_FILE(f) => {
                // The file may be gone already: only its filehandle matters.
                let fh = c.fh()?;
                if f.lrf_length == 0 || (f.lrf_length != u64::MAX && f.lrf_offset.checked_add(f.lrf_length).is_none()) {
                    return Err(nfsstat4::NFS4ERR_INVAL);
                }
                let sid = resolve(c, &f.lrf_stateid)?;
                let whole = f.lrf_offset == 0 && f.lrf_length == u64::MAX;
                match m.state().layout_return_file(clientid, fh.ino, &sid, bits, whole, &mut fx)? {
                    None => {
                        c.current_stateid = None;
                        Ok(layoutreturn_stateid::FALSE)
                    }
                    Some(s) => {
                        c.current_stateid = Some(s.clone());
                        Ok(layoutreturn_stateid::TRUE(s))
                    }
                }
            }
            // All our exports share one fsid, so FSID returns like ALL.
            layoutreturn4::default(_) => {
                m.state().layout_return_all(clientid, bits, &mut fx)?;
                Ok(layoutreturn_stateid::FALSE)
            }
        }
    })();
    let _ = m.apply(fx);
    reply(e, r)
}

pub fn getdeviceinfo(m: &Mds, c: &mut Compound, a: &GETDEVICEINFO4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let p = pnfs(m)?;
        known_type(a.gdia_layout_type)?;
        if a.gdia_layout_type == layouttype4::LAYOUT4_FLEX_FILES {
            // A flexfiles device is one data server.
            let ds = ff_device_ds(&a.gdia_device_id).ok_or(nfsstat4::NFS4ERR_NOENT)?;
            let info = p.registry.get(ds).ok_or(nfsstat4::NFS4ERR_NOENT)?;
            return Ok(ff_device_addr_body(&info.addrs, c.core.minor, m.cfg.max_io_bytes, m.cfg.max_io_bytes));
        }
        let lists = p.device_lists(&a.gdia_device_id).ok_or(nfsstat4::NFS4ERR_NOENT)?;
        Ok(device_addr_body(&lists))
    })();
    let body = match r {
        Ok(b) => b,
        Err(s) => return reply::<()>(e, Err(s)),
    };
    // device_addr4: layout type + opaque body.
    let needed = 4 + 4 + pad4(body.len());
    if a.gdia_maxcount != 0 && (a.gdia_maxcount as usize) < needed {
        e.put_i32(nfsstat4::NFS4ERR_TOOSMALL as i32);
        e.put_u32(needed as u32);
        return nfsstat4::NFS4ERR_TOOSMALL;
    }
    reply(
        e,
        Ok(GETDEVICEINFO4resok {
            gdir_device_addr: device_addr4 { da_layout_type: a.gdia_layout_type, da_addr_body: body.into() },
            // No device notifications are granted.
            gdir_notification: vec![],
        }),
    )
}

pub fn getdevicelist(m: &Mds, c: &mut Compound, a: &GETDEVICELIST4args, e: &mut Encoder) -> nfsstat4 {
    let r = (|| {
        let p = pnfs(m)?;
        c.fh()?;
        known_type(a.gdla_layout_type)?;
        let verf: verifier4 = m.write_verifier;
        if a.gdla_cookie != 0 && a.gdla_cookieverf != verf {
            return Err(nfsstat4::NFS4ERR_NOT_SAME);
        }
        if a.gdla_maxdevices == 0 {
            return Err(nfsstat4::NFS4ERR_TOOSMALL);
        }
        let ids = match a.gdla_layout_type {
            layouttype4::LAYOUT4_FLEX_FILES => p.registry.known().iter().map(|d| ff_deviceid(d.index)).collect(),
            _ => p.device_ids(),
        };
        let start = (a.gdla_cookie as usize).min(ids.len());
        let end = start.saturating_add(a.gdla_maxdevices as usize).min(ids.len());
        Ok(GETDEVICELIST4resok {
            gdlr_cookie: end as u64,
            gdlr_cookieverf: verf,
            gdlr_deviceid_list: ids[start..end].to_vec(),
            gdlr_eof: end == ids.len(),
        })
    })();
    reply(e, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::XdrEncode;

    #[test]
    fn layoutget_size_matches_encoding() {
        for n in [0usize, 1, 3, 4, 101] {
            let ok = LAYOUTGET4resok {
                logr_return_on_close: false,
                logr_stateid: stateid4 { seqid: 1, other: [1; 12] },
                logr_layout: vec![layout4 {
                    lo_offset: 0,
                    lo_length: u64::MAX,
                    lo_iomode: layoutiomode4::LAYOUTIOMODE4_RW,
                    lo_content: layout_content4 { loc_type: layouttype4::LAYOUT4_NFSV4_1_FILES, loc_body: vec![7u8; n].into() },
                }],
            };
            let mut e = Encoder::new();
            ok.encode(&mut e).unwrap();
            assert_eq!(e.len(), layoutget_resok_size(n));
        }
    }
}

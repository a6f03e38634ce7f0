//! pNFS flexible file layout helpers (RFC 8435): decoding `ff_layout4` and
//! `ff_device_addr4`, mapping a file offset to the data server of each
//! mirror, byte-range layout segments, and [`FlexFile`], the I/O of one
//! file through its flexfiles layouts as the Linux client does it: every
//! WRITE goes to every mirror of the segment (in parallel), a READ goes to
//! one mirror (best `ffds_efficiency` first, the next one if it fails), and
//! an I/O past the end of the segments held first fetches the segment
//! covering it (LAYOUTGET with the I/O's range).
//!
//! Data servers are tightly coupled NFSv4.1/4.2 servers: I/O to them carries
//! the layout's `ffds_stateid`, and each mirror's object holds the file's
//! bytes at file offsets. Striping inside a mirror (several data servers in
//! one `ff_mirror4`, `ffl_stripe_unit` > 0) is sparse (RFC 8435 section
//! 5.1): stripe `offset / unit` goes to data server `stripe % count` at the
//! same offset.

use crate::{Client, Error, LayoutSegment, Result};
use pnfs_protocol::mds_ds::uaddr;
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::{Decoder, Opaque, XdrDecode};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Mirrors accepted in one layout (Linux takes up to 4096; the servers this
/// client talks to hand out 2 or 3).
pub const MAX_MIRRORS: usize = 64;
/// Data servers accepted in one mirror (striping inside a mirror).
pub const MAX_STRIPES: usize = 256;
/// Largest chunk of one READ or WRITE to a data server.
const MAX_DS_IO: u64 = 1 << 20;

/// One data server of a mirror (`ff_data_server4`).
#[derive(Debug, Clone, PartialEq)]
pub struct FlexDs {
    pub device_id: [u8; 16],
    pub efficiency: u32,
    /// The stateid I/O to this data server carries (tight coupling).
    pub stateid: stateid4,
    /// `ffds_fh_vers[0]`: the filehandle for the device's first version.
    pub fh: Vec<u8>,
}

/// One mirror: a full copy of the segment's bytes, striped over its data
/// servers when it has more than one.
#[derive(Debug, Clone, PartialEq)]
pub struct FlexMirror {
    pub data_servers: Vec<FlexDs>,
}

/// A decoded `ff_layout4` (the `loc_body` of a LAYOUT4_FLEX_FILES layout).
#[derive(Debug, Clone, PartialEq)]
pub struct FlexLayout {
    pub stripe_unit: u64,
    pub mirrors: Vec<FlexMirror>,
    /// FF_FLAGS_* bits.
    pub flags: u32,
    pub stats_collect_hint: u32,
}

/// Where one file offset lives in one mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorLoc {
    /// Index into the mirror's data servers.
    pub ds: usize,
    /// Offset in the data server's object (the file offset: sparse).
    pub object_offset: u64,
    /// Bytes from the offset to the end of its stripe unit (u64::MAX
    /// without striping).
    pub unit_left: u64,
}

impl FlexLayout {
    /// Decodes and checks a `loc_body` of type LAYOUT4_FLEX_FILES.
    pub fn decode(body: &[u8]) -> Result<FlexLayout, String> {
        let l = ff_layout4::decode(&mut Decoder::new(body)).map_err(|e| format!("flexfiles layout: {e}"))?;
        if l.ffl_mirrors.is_empty() || l.ffl_mirrors.len() > MAX_MIRRORS {
            return Err(format!("flexfiles layout with {} mirrors (want 1..={MAX_MIRRORS})", l.ffl_mirrors.len()));
        }
        let mut mirrors = Vec::with_capacity(l.ffl_mirrors.len());
        for (m, mirror) in l.ffl_mirrors.iter().enumerate() {
            let n = mirror.ffm_data_servers.len();
            if n == 0 || n > MAX_STRIPES {
                return Err(format!("mirror {m} has {n} data servers (want 1..={MAX_STRIPES})"));
            }
            if n > 1 && l.ffl_stripe_unit == 0 {
                return Err(format!("mirror {m} stripes over {n} data servers with stripe unit 0"));
            }
            let mut dss = Vec::with_capacity(n);
            for (i, ds) in mirror.ffm_data_servers.iter().enumerate() {
                let fh = ds.ffds_fh_vers.first().ok_or_else(|| format!("mirror {m} data server {i} has no filehandle"))?;
                dss.push(FlexDs {
                    device_id: ds.ffds_deviceid,
                    efficiency: ds.ffds_efficiency,
                    stateid: ds.ffds_stateid.clone(),
                    fh: fh.to_vec(),
                });
            }
            mirrors.push(FlexMirror { data_servers: dss });
        }
        Ok(FlexLayout { stripe_unit: l.ffl_stripe_unit, mirrors, flags: l.ffl_flags, stats_collect_hint: l.ffl_stats_collect_hint })
    }

    /// True when the client must not send LAYOUTCOMMIT (FF_FLAGS_NO_LAYOUTCOMMIT).
    pub fn no_layoutcommit(&self) -> bool {
        self.flags & FF_FLAGS_NO_LAYOUTCOMMIT != 0
    }

    /// Maps `offset` in mirror `mirror`; None for a mirror the layout lacks.
    pub fn locate(&self, mirror: usize, offset: u64) -> Option<MirrorLoc> {
        let dss = &self.mirrors.get(mirror)?.data_servers;
        if dss.len() == 1 || self.stripe_unit == 0 {
            return Some(MirrorLoc { ds: 0, object_offset: offset, unit_left: u64::MAX });
        }
        let su = self.stripe_unit;
        Some(MirrorLoc { ds: ((offset / su) % dss.len() as u64) as usize, object_offset: offset, unit_left: su - offset % su })
    }

    /// A mirror's efficiency: that of its best data server (0 for a mirror
    /// the layout lacks).
    pub fn efficiency(&self, mirror: usize) -> u32 {
        self.mirrors.get(mirror).and_then(|m| m.data_servers.iter().map(|d| d.efficiency).max()).unwrap_or(0)
    }

    /// Mirror indices in the order reads try them: highest efficiency
    /// first, layout order among equals.
    pub fn read_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.mirrors.len()).collect();
        order.sort_by_key(|&m| std::cmp::Reverse(self.efficiency(m)));
        order
    }

    /// Every data server's device id, each once.
    pub fn device_ids(&self) -> Vec<[u8; 16]> {
        let mut ids: Vec<[u8; 16]> = Vec::new();
        for d in self.mirrors.iter().flat_map(|m| &m.data_servers) {
            if !ids.contains(&d.device_id) {
                ids.push(d.device_id);
            }
        }
        ids
    }
}

/// One protocol version a flexfiles device speaks (`ff_device_versions4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlexVersion {
    pub version: u32,
    pub minor: u32,
    pub rsize: u32,
    pub wsize: u32,
    pub tightly_coupled: bool,
}

/// A decoded `ff_device_addr4` (GETDEVICEINFO of a flexfiles device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlexDevice {
    /// Multipath (netid, universal address) alternatives of one data server.
    pub netaddrs: Vec<(String, String)>,
    pub versions: Vec<FlexVersion>,
}

impl FlexDevice {
    /// Decodes a `da_addr_body` of type LAYOUT4_FLEX_FILES; like Linux, only
    /// `versions[0]` counts, and it must be NFSv4.1 or 4.2.
    pub fn decode(body: &[u8]) -> Result<FlexDevice, String> {
        let d = ff_device_addr4::decode(&mut Decoder::new(body)).map_err(|e| format!("flexfiles device address: {e}"))?;
        let versions: Vec<FlexVersion> = d
            .ffda_versions
            .iter()
            .map(|v| FlexVersion {
                version: v.ffdv_version,
                minor: v.ffdv_minorversion,
                rsize: v.ffdv_rsize,
                wsize: v.ffdv_wsize,
                tightly_coupled: v.ffdv_tightly_coupled,
            })
            .collect();
        match versions.first() {
            None => return Err("flexfiles device without versions".into()),
            Some(v) if v.version != 4 || !(1..=2).contains(&v.minor) => {
                return Err(format!("flexfiles device speaks NFSv{}.{} (this client: 4.1 and 4.2)", v.version, v.minor))
            }
            _ => {}
        }
        Ok(FlexDevice {
            netaddrs: d.ffda_netaddrs.iter().map(|a| (a.na_r_netid.to_str_lossy().into_owned(), a.na_r_addr.to_str_lossy().into_owned())).collect(),
            versions,
        })
    }

    /// The first TCP address of the data server.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.netaddrs.iter().find_map(|(n, a)| uaddr::parse_netaddr(n, a).ok())
    }
}

/// A flexfiles layout segment: the layout of [`offset`, `offset` + `length`).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub offset: u64,
    /// u64::MAX: to the end of the file.
    pub length: u64,
    pub iomode: layoutiomode4,
    pub layout: FlexLayout,
}

impl Segment {
    /// A segment from one layout of a LAYOUTGET reply.
    pub fn from_layout(l: &LayoutSegment) -> Result<Segment, String> {
        if l.layout_type != layouttype4::LAYOUT4_FLEX_FILES {
            return Err(format!("a {:?} layout where a flexfiles one was asked for", l.layout_type));
        }
        if l.length == 0 {
            return Err(format!("empty layout segment at {}", l.offset));
        }
        Ok(Segment { offset: l.offset, length: l.length, iomode: l.iomode, layout: FlexLayout::decode(&l.body)? })
    }

    /// First byte after the segment (u64::MAX: none).
    pub fn end(&self) -> u64 {
        if self.length == u64::MAX {
            u64::MAX
        } else {
            self.offset.saturating_add(self.length)
        }
    }

    pub fn covers(&self, offset: u64) -> bool {
        offset >= self.offset && offset < self.end()
    }

    /// Bytes of [`offset`, `offset` + `len`) one I/O may carry: up to the
    /// segment's end and the stripe unit's end (0 when `offset` is outside).
    pub fn span(&self, offset: u64, len: u64) -> u64 {
        if !self.covers(offset) {
            return 0;
        }
        let unit_left = self.layout.locate(0, offset).map_or(u64::MAX, |l| l.unit_left);
        len.min(self.end() - offset).min(unit_left)
    }
}

/// The segments of one file a client holds, by offset, without overlaps
/// (a newer segment replaces the parts of older ones it covers).
#[derive(Debug, Clone, Default)]
pub struct Segments {
    segs: Vec<Segment>,
}

impl Segments {
    pub fn find(&self, offset: u64) -> Option<&Segment> {
        self.segs.iter().find(|s| s.covers(offset))
    }

    /// Adds `seg`, dropping held segments that overlap it.
    pub fn insert(&mut self, seg: Segment) {
        self.segs.retain(|s| s.end() <= seg.offset || s.offset >= seg.end());
        let at = self.segs.partition_point(|s| s.offset < seg.offset);
        self.segs.insert(at, seg);
    }

    pub fn len(&self) -> usize {
        self.segs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    pub fn clear(&mut self) {
        self.segs.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.segs.iter()
    }
}

/// What [`FlexFile`] needs from the metadata server; [`Client`] (the MDS
/// session) implements it, tests substitute their own.
pub trait LayoutSource {
    /// LAYOUTGET (LAYOUT4_FLEX_FILES) of [`offset`, `offset` + `length`).
    fn layoutget(&mut self, fh: &[u8], sid: &stateid4, iomode: layoutiomode4, offset: u64, length: u64) -> Result<(stateid4, Vec<LayoutSegment>)>;
    /// GETDEVICEINFO (LAYOUT4_FLEX_FILES): the `da_addr_body`.
    fn getdeviceinfo(&mut self, device_id: [u8; 16]) -> Result<Vec<u8>>;
    /// A session with a data server, as the client the layouts were given to.
    fn connect_ds(&mut self, addr: SocketAddr) -> Result<Client>;
    /// LAYOUTCOMMIT of [0, `end`).
    fn layoutcommit(&mut self, fh: &[u8], sid: &stateid4, end: u64) -> Result<()>;
    /// LAYOUTRETURN of every flexfiles layout of the file.
    fn layoutreturn(&mut self, fh: &[u8], sid: &stateid4) -> Result<()>;
    /// The file's size (GETATTR): a data server's object ends where its
    /// last segment's data does, not where the file does.
    fn size(&mut self, fh: &[u8]) -> Result<u64>;
}

fn putfh(fh: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(fh) })
}

impl LayoutSource for Client {
    fn layoutget(&mut self, fh: &[u8], sid: &stateid4, iomode: layoutiomode4, offset: u64, length: u64) -> Result<(stateid4, Vec<LayoutSegment>)> {
        // minlength 1: the reply must at least cover `offset`.
        self.layoutget_range(fh, sid, layouttype4::LAYOUT4_FLEX_FILES, iomode, offset, length, 1)
    }

    fn getdeviceinfo(&mut self, device_id: [u8; 16]) -> Result<Vec<u8>> {
        self.getdeviceinfo_of(layouttype4::LAYOUT4_FLEX_FILES, device_id)
    }

    fn connect_ds(&mut self, addr: SocketAddr) -> Result<Client> {
        Client::connect_as(addr, self)
    }

    fn layoutcommit(&mut self, fh: &[u8], sid: &stateid4, end: u64) -> Result<()> {
        let ops = vec![putfh(fh), crate::layout::layoutcommit_of(layouttype4::LAYOUT4_FLEX_FILES, sid.clone(), end)];
        self.compound_ok(ops, |_| Ok(()))
    }

    fn layoutreturn(&mut self, fh: &[u8], sid: &stateid4) -> Result<()> {
        let ret = crate::layout::whole_file_layoutreturn_of(layouttype4::LAYOUT4_FLEX_FILES, sid.clone(), layoutiomode4::LAYOUTIOMODE4_ANY);
        self.compound_ok(vec![putfh(fh), ret], |_| Ok(()))
    }

    fn size(&mut self, fh: &[u8]) -> Result<u64> {
        self.getattr_size(fh)
    }
}

/// One WRITE of a mirrored write: data server session index, filehandle,
/// stateid, object offset.
struct DsWrite<'a> {
    ds: usize,
    fh: &'a [u8],
    sid: &'a stateid4,
    object_offset: u64,
}

/// I/O of one open file through its flexfiles layouts.
pub struct FlexFile {
    fh: Vec<u8>,
    /// The open stateid until the first LAYOUTGET, then the layout stateid.
    sid: stateid4,
    iomode: layoutiomode4,
    segments: Segments,
    /// Device id -> index into `ds`.
    devices: HashMap<[u8; 16], usize>,
    /// Data server sessions, one per address.
    ds: Vec<(SocketAddr, Client)>,
    /// (data server, filehandle) written UNSTABLE since the last commit.
    dirty: Vec<(usize, Vec<u8>)>,
    /// End of the furthest write (LAYOUTCOMMIT).
    written_end: u64,
    no_layoutcommit: bool,
    /// LAYOUTGETs sent.
    pub layoutgets: u64,
    /// Reads that failed on one mirror and went on to the next.
    pub read_failovers: u64,
}

impl FlexFile {
    /// The file `fh` opened with `open_sid`; layouts of `iomode` are fetched
    /// as I/O needs them.
    pub fn new(fh: &[u8], open_sid: &stateid4, iomode: layoutiomode4) -> FlexFile {
        FlexFile {
            fh: fh.to_vec(),
            sid: open_sid.clone(),
            iomode,
            segments: Segments::default(),
            devices: HashMap::new(),
            ds: Vec::new(),
            dirty: Vec::new(),
            written_end: 0,
            no_layoutcommit: false,
            layoutgets: 0,
            read_failovers: 0,
        }
    }

    /// The segments held now.
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    /// The addresses of the data servers this file's I/O went to.
    pub fn data_servers(&self) -> Vec<SocketAddr> {
        self.ds.iter().map(|(a, _)| *a).collect()
    }

    /// The segment covering `offset`, fetched with a LAYOUTGET of
    /// [`offset`, `offset` + `len`) when none held covers it.
    fn segment_for(&mut self, src: &mut dyn LayoutSource, offset: u64, len: u64) -> Result<Segment> {
        if let Some(s) = self.segments.find(offset) {
            return Ok(s.clone());
        }
        let (sid, layouts) = src.layoutget(&self.fh, &self.sid, self.iomode, offset, len.max(1))?;
        self.layoutgets += 1;
        self.sid = sid;
        for l in &layouts {
            let seg = Segment::from_layout(l).map_err(|e| Error::Protocol(format!("LAYOUTGET at {offset}: {e}")))?;
            self.no_layoutcommit = seg.layout.no_layoutcommit();
            self.segments.insert(seg);
        }
        self.segments
            .find(offset)
            .cloned()
            .ok_or_else(|| Error::Protocol(format!("LAYOUTGET at {offset} answered no flexfiles segment covering it ({} layouts)", layouts.len())))
    }

    /// The session index of device `id` (GETDEVICEINFO and a connection the
    /// first time).
    fn ds_for(&mut self, src: &mut dyn LayoutSource, id: [u8; 16]) -> Result<usize> {
        if let Some(i) = self.devices.get(&id) {
            return Ok(*i);
        }
        let body = src.getdeviceinfo(id)?;
        let dev = FlexDevice::decode(&body).map_err(Error::Protocol)?;
        let addr = dev.tcp_addr().ok_or_else(|| Error::Protocol(format!("device {id:02x?}: no TCP address in {:?}", dev.netaddrs)))?;
        let i = match self.ds.iter().position(|(a, _)| *a == addr) {
            Some(i) => i,
            None => {
                let c = src.connect_ds(addr)?;
                self.ds.push((addr, c));
                self.ds.len() - 1
            }
        };
        self.devices.insert(id, i);
        Ok(i)
    }

    /// Writes `data` at `offset` to every mirror of the segments it falls
    /// in, the mirrors in parallel; fails when any mirror's WRITE fails.
    pub fn write(&mut self, src: &mut dyn LayoutSource, offset: u64, data: &[u8], stable: stable_how4) -> Result<()> {
        let mut pos = 0usize;
        while pos < data.len() {
            let off = offset + pos as u64;
            let left = (data.len() - pos) as u64;
            let seg = self.segment_for(src, off, left)?;
            let n = seg.span(off, left).min(MAX_DS_IO) as usize;
            let mut targets = Vec::with_capacity(seg.layout.mirrors.len());
            for m in 0..seg.layout.mirrors.len() {
                let loc = seg.layout.locate(m, off).ok_or_else(|| Error::Protocol(format!("mirror {m} vanished")))?;
                let d = &seg.layout.mirrors[m].data_servers[loc.ds];
                targets.push((self.ds_for(src, d.device_id)?, m, loc));
            }
            let chunk = &data[pos..pos + n];
            let writes: Vec<DsWrite> = targets
                .iter()
                .map(|&(ds, m, loc)| {
                    let d = &seg.layout.mirrors[m].data_servers[loc.ds];
                    DsWrite { ds, fh: &d.fh, sid: &d.stateid, object_offset: loc.object_offset }
                })
                .collect();
            write_all_mirrors(&mut self.ds, &writes, chunk, stable)?;
            if stable != stable_how4::FILE_SYNC4 {
                for w in &writes {
                    if !self.dirty.iter().any(|(ds, fh)| *ds == w.ds && fh.as_slice() == w.fh) {
                        self.dirty.push((w.ds, w.fh.to_vec()));
                    }
                }
            }
            pos += n;
            self.written_end = self.written_end.max(off + n as u64);
        }
        Ok(())
    }

    /// Reads up to `count` bytes at `offset` (no further than the end of
    /// the segment and stripe unit it starts in) from the best mirror,
    /// going on to the next mirror when one fails. Returns (data, eof) as
    /// the data server said: eof means its object ends there, which is the
    /// file's end only when no later segment holds data (see
    /// [`FlexFile::read_all`]).
    pub fn read(&mut self, src: &mut dyn LayoutSource, offset: u64, count: u32) -> Result<(Vec<u8>, bool)> {
        self.read_span(src, offset, count).map(|(data, eof, _)| (data, eof))
    }

    /// [`FlexFile::read`], also returning how many bytes the READ asked for.
    fn read_span(&mut self, src: &mut dyn LayoutSource, offset: u64, count: u32) -> Result<(Vec<u8>, bool, u32)> {
        let seg = self.segment_for(src, offset, count as u64)?;
        let n = seg.span(offset, count as u64).min(MAX_DS_IO) as u32;
        let mut failed = Vec::new();
        for m in seg.layout.read_order() {
            let Some(loc) = seg.layout.locate(m, offset) else { continue };
            let d = &seg.layout.mirrors[m].data_servers[loc.ds];
            let ds = match self.ds_for(src, d.device_id) {
                Ok(ds) => ds,
                Err(e) => {
                    failed.push(format!("mirror {m}: {e}"));
                    self.read_failovers += 1;
                    continue;
                }
            };
            let (addr, c) = &mut self.ds[ds];
            match c.read(&d.fh, &d.stateid, loc.object_offset, n) {
                Ok((data, eof)) => return Ok((data, eof, n)),
                Err(e) => {
                    failed.push(format!("mirror {m} on {addr}: {e}"));
                    self.read_failovers += 1;
                }
            }
        }
        Err(Error::Protocol(format!("READ of {n} bytes at {offset} failed on every mirror: {}", failed.join("; "))))
    }

    /// Reads [`offset`, `offset` + `len`), cut at the file's size (asked of
    /// the MDS). Bytes a mirror's object lacks below that size (never
    /// written: a hole) read as zeros, as the Linux client fills pages.
    pub fn read_all(&mut self, src: &mut dyn LayoutSource, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len as u64).min(src.size(&self.fh)?);
        let mut out = Vec::with_capacity(end.saturating_sub(offset).min(64 << 20) as usize);
        while offset + (out.len() as u64) < end {
            let at = offset + out.len() as u64;
            let (data, eof, asked) = self.read_span(src, at, (end - at).min(MAX_DS_IO) as u32)?;
            out.extend_from_slice(&data);
            if data.len() < asked as usize {
                if eof {
                    // The object ends inside this READ's range, which lies
                    // in one segment: the rest of the range is a hole.
                    out.resize(out.len() + asked as usize - data.len(), 0);
                } else if data.is_empty() {
                    return Err(Error::Protocol(format!("READ at {at} returned nothing without EOF")));
                }
            }
        }
        Ok(out)
    }

    /// COMMITs every data server object written UNSTABLE, then LAYOUTCOMMIT
    /// (unless the layout says FF_FLAGS_NO_LAYOUTCOMMIT).
    pub fn commit(&mut self, src: &mut dyn LayoutSource) -> Result<()> {
        for (ds, fh) in std::mem::take(&mut self.dirty) {
            let (addr, c) = &mut self.ds[ds];
            let ops = vec![putfh(&fh), nfs_argop4::OP_COMMIT(COMMIT4args { offset: 0, count: 0 })];
            c.compound_ok(ops, |_| Ok(())).map_err(|e| Error::Protocol(format!("COMMIT on {addr}: {e}")))?;
        }
        if self.written_end > 0 && !self.no_layoutcommit {
            src.layoutcommit(&self.fh, &self.sid, self.written_end)?;
        }
        self.written_end = 0;
        Ok(())
    }

    /// Returns every layout (after [`FlexFile::commit`]); the segments are
    /// forgotten.
    pub fn return_layouts(&mut self, src: &mut dyn LayoutSource) -> Result<()> {
        if self.layoutgets == 0 {
            return Ok(());
        }
        self.segments.clear();
        src.layoutreturn(&self.fh, &self.sid)
    }
}

/// Sends one chunk to every target, a thread per data server when there
/// are several (the mirrors are written in parallel, as the Linux client
/// does); every WRITE must take the whole chunk.
fn write_all_mirrors(ds: &mut [(SocketAddr, Client)], writes: &[DsWrite], chunk: &[u8], stable: stable_how4) -> Result<()> {
    let one = |addr: SocketAddr, c: &mut Client, w: &DsWrite| -> Result<()> {
        let n = c.write(w.fh, w.sid, w.object_offset, chunk, stable).map_err(|e| Error::Protocol(format!("WRITE at {} on {addr}: {e}", w.object_offset)))?;
        if n as usize != chunk.len() {
            return Err(Error::Protocol(format!("WRITE of {} bytes at {} on {addr} took {n}", chunk.len(), w.object_offset)));
        }
        Ok(())
    };
    if let [w] = writes {
        let (addr, c) = &mut ds[w.ds];
        return one(*addr, c, w);
    }
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = ds
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| writes.iter().any(|w| w.ds == *i))
            .map(|(i, (addr, c))| {
                let addr = *addr;
                s.spawn(move || writes.iter().filter(|w| w.ds == i).try_for_each(|w| one(addr, c, w)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Protocol("a mirror writer panicked".into())))).collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::xdr::encode_to_vec;

    fn ds(id: u8, eff: u32) -> ff_data_server4<'static> {
        ff_data_server4 {
            ffds_deviceid: [id; 16],
            ffds_efficiency: eff,
            ffds_stateid: stateid4 { seqid: 1, other: [id; 12] },
            ffds_fh_vers: vec![vec![id, id, id].into()],
            ffds_user: b"0".as_slice().into(),
            ffds_group: b"0".as_slice().into(),
        }
    }

    fn body(su: u64, mirrors: Vec<Vec<ff_data_server4<'static>>>, flags: u32) -> Vec<u8> {
        let l = ff_layout4 {
            ffl_stripe_unit: su,
            ffl_mirrors: mirrors.into_iter().map(|d| ff_mirror4 { ffm_data_servers: d }).collect(),
            ffl_flags: flags,
            ffl_stats_collect_hint: 60,
        };
        encode_to_vec(&l).unwrap()
    }

    fn seg(offset: u64, length: u64, b: Vec<u8>) -> LayoutSegment {
        LayoutSegment { offset, length, iomode: layoutiomode4::LAYOUTIOMODE4_RW, layout_type: layouttype4::LAYOUT4_FLEX_FILES, body: b }
    }

    #[test]
    fn mirror2_decodes_and_maps_to_file_offsets() {
        let b = body(0, vec![vec![ds(1, 1)], vec![ds(2, 5)]], FF_FLAGS_NO_IO_THRU_MDS | FF_FLAGS_NO_LAYOUTCOMMIT);
        let l = FlexLayout::decode(&b).unwrap();
        assert_eq!(l.mirrors.len(), 2);
        assert_eq!(l.mirrors[1].data_servers[0].fh, vec![2, 2, 2]);
        assert_eq!(l.mirrors[0].data_servers[0].stateid, stateid4 { seqid: 1, other: [1; 12] });
        assert!(l.no_layoutcommit());
        // Mirror 1 is more efficient: read first.
        assert_eq!(l.read_order(), vec![1, 0]);
        assert_eq!((l.efficiency(0), l.efficiency(1), l.efficiency(2)), (1, 5, 0));
        for m in 0..2 {
            assert_eq!(l.locate(m, 7 << 20), Some(MirrorLoc { ds: 0, object_offset: 7 << 20, unit_left: u64::MAX }));
        }
        assert_eq!(l.locate(2, 0), None);
        assert_eq!(l.device_ids(), vec![[1; 16], [2; 16]]);
        // Equal efficiencies keep the layout's order.
        let l = FlexLayout::decode(&body(0, vec![vec![ds(1, 3)], vec![ds(2, 3)], vec![ds(3, 3)]], 0)).unwrap();
        assert_eq!(l.read_order(), vec![0, 1, 2]);
        assert!(!l.no_layoutcommit());
    }

    #[test]
    fn striping_inside_a_mirror_is_sparse() {
        let su = 1 << 20;
        let l = FlexLayout::decode(&body(su, vec![vec![ds(1, 0), ds(2, 0)], vec![ds(3, 0), ds(4, 0)]], 0)).unwrap();
        assert_eq!(l.locate(0, 0), Some(MirrorLoc { ds: 0, object_offset: 0, unit_left: su }));
        assert_eq!(l.locate(1, su + 5), Some(MirrorLoc { ds: 1, object_offset: su + 5, unit_left: su - 5 }));
        assert_eq!(l.locate(0, 2 * su).unwrap().ds, 0);
        assert_eq!(l.locate(0, 3 * su + 1).unwrap(), MirrorLoc { ds: 1, object_offset: 3 * su + 1, unit_left: su - 1 });
        // A request stops at the stripe unit's end.
        let s = Segment::from_layout(&seg(0, u64::MAX, body(su, vec![vec![ds(1, 0), ds(2, 0)]], 0))).unwrap();
        assert_eq!(s.span(su - 10, 4096), 10);
        assert_eq!(s.span(su, 4096), 4096);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(FlexLayout::decode(&body(0, vec![], 0)).unwrap_err().contains("0 mirrors"));
        assert!(FlexLayout::decode(&body(0, vec![vec![]], 0)).unwrap_err().contains("0 data servers"));
        assert!(FlexLayout::decode(&body(0, vec![vec![ds(1, 0), ds(2, 0)]], 0)).unwrap_err().contains("stripe unit 0"));
        let mut no_fh = ds(1, 0);
        no_fh.ffds_fh_vers.clear();
        assert!(FlexLayout::decode(&body(0, vec![vec![no_fh]], 0)).unwrap_err().contains("no filehandle"));
        assert!(FlexLayout::decode(&[0, 0, 0]).is_err());
        let too_many = (0..MAX_MIRRORS + 1).map(|i| vec![ds(i as u8, 0)]).collect();
        assert!(FlexLayout::decode(&body(0, too_many, 0)).is_err());
        let mut files = seg(0, 10, body(0, vec![vec![ds(1, 0)]], 0));
        files.layout_type = layouttype4::LAYOUT4_NFSV4_1_FILES;
        assert!(Segment::from_layout(&files).is_err());
        assert!(Segment::from_layout(&seg(0, 0, body(0, vec![vec![ds(1, 0)]], 0))).is_err());
    }

    #[test]
    fn device_address_decodes() {
        let v = |version, minor| ff_device_versions4 {
            ffdv_version: version,
            ffdv_minorversion: minor,
            ffdv_rsize: 1 << 20,
            ffdv_wsize: 1 << 20,
            ffdv_tightly_coupled: true,
        };
        let dev = |versions| ff_device_addr4 {
            ffda_netaddrs: vec![
                netaddr4 { na_r_netid: "rdma".into(), na_r_addr: "10.0.0.1.0.1".into() },
                netaddr4 { na_r_netid: "tcp".into(), na_r_addr: "127.0.0.1.89.216".into() },
            ],
            ffda_versions: versions,
        };
        let d = FlexDevice::decode(&encode_to_vec(&dev(vec![v(4, 1)])).unwrap()).unwrap();
        assert_eq!(d.tcp_addr(), Some("127.0.0.1:23000".parse().unwrap()));
        assert_eq!(d.versions[0], FlexVersion { version: 4, minor: 1, rsize: 1 << 20, wsize: 1 << 20, tightly_coupled: true });
        assert!(FlexDevice::decode(&encode_to_vec(&dev(vec![v(4, 2), v(3, 0)])).unwrap()).is_ok());
        assert!(FlexDevice::decode(&encode_to_vec(&dev(vec![v(3, 0)])).unwrap()).unwrap_err().contains("NFSv3.0"));
        assert!(FlexDevice::decode(&encode_to_vec(&dev(vec![])).unwrap()).unwrap_err().contains("without versions"));
    }

    #[test]
    fn segments_replace_overlaps_and_bound_spans() {
        let b = body(0, vec![vec![ds(1, 0)], vec![ds(2, 0)]], 0);
        let mut s = Segments::default();
        s.insert(Segment::from_layout(&seg(64, 64, b.clone())).unwrap());
        s.insert(Segment::from_layout(&seg(0, 64, b.clone())).unwrap());
        assert_eq!(s.iter().map(|x| x.offset).collect::<Vec<_>>(), vec![0, 64]);
        assert_eq!(s.find(63).unwrap().offset, 0);
        assert_eq!(s.find(64).unwrap().offset, 64);
        assert!(s.find(128).is_none());
        // A segment to EOF replaces the one it overlaps.
        s.insert(Segment::from_layout(&seg(100, u64::MAX, b)).unwrap());
        assert_eq!(s.len(), 2);
        let last = s.find(u64::MAX - 1).unwrap();
        assert_eq!((last.offset, last.end()), (100, u64::MAX));
        assert_eq!(s.find(0).unwrap().span(60, 100), 4);
        assert_eq!(last.span(99, 10), 0);
    }

    /// An MDS that hands out 1 MiB segments, alternating between two
    /// device pairs, and counts LAYOUTGETs.
    struct FakeMds {
        seg_len: u64,
        gets: Vec<(u64, u64)>,
    }

    impl LayoutSource for FakeMds {
        fn layoutget(&mut self, _fh: &[u8], sid: &stateid4, _io: layoutiomode4, offset: u64, length: u64) -> Result<(stateid4, Vec<LayoutSegment>)> {
            self.gets.push((offset, length));
            let start = offset / self.seg_len * self.seg_len;
            let k = (start / self.seg_len) as u8;
            let b = body(0, vec![vec![ds(2 * (k % 2) + 1, 0)], vec![ds(2 * (k % 2) + 2, 0)]], 0);
            Ok((stateid4 { seqid: sid.seqid + 1, other: [9; 12] }, vec![seg(start, self.seg_len, b)]))
        }
        fn getdeviceinfo(&mut self, _id: [u8; 16]) -> Result<Vec<u8>> {
            Err(Error::Protocol("no devices here".into()))
        }
        fn connect_ds(&mut self, _addr: SocketAddr) -> Result<Client> {
            Err(Error::Protocol("no data servers here".into()))
        }
        fn layoutcommit(&mut self, _fh: &[u8], _sid: &stateid4, _end: u64) -> Result<()> {
            Ok(())
        }
        fn layoutreturn(&mut self, _fh: &[u8], _sid: &stateid4) -> Result<()> {
            Ok(())
        }
        fn size(&mut self, _fh: &[u8]) -> Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn the_next_segment_is_fetched_when_io_crosses_the_end() {
        let mut mds = FakeMds { seg_len: 1 << 20, gets: vec![] };
        let mut f = FlexFile::new(b"fh", &stateid4 { seqid: 1, other: [5; 12] }, layoutiomode4::LAYOUTIOMODE4_RW);
        let s0 = f.segment_for(&mut mds, 4096, 8192).unwrap();
        assert_eq!((s0.offset, s0.end()), (0, 1 << 20));
        // Held: no second LAYOUTGET for the same segment.
        f.segment_for(&mut mds, (1 << 20) - 1, 1).unwrap();
        assert_eq!(mds.gets, vec![(4096, 8192)]);
        // Past the end: LAYOUTGET with the I/O's range, under the layout stateid.
        let s1 = f.segment_for(&mut mds, 1 << 20, 65536).unwrap();
        assert_eq!((s1.offset, s1.layout.mirrors[0].data_servers[0].device_id), (1 << 20, [3; 16]));
        assert_eq!(mds.gets, vec![(4096, 8192), (1 << 20, 65536)]);
        assert_eq!((f.layoutgets, f.sid.seqid, f.segments().len()), (2, 3, 2));
        // A write crossing into an unheld segment fetches it before its
        // data servers are needed (this fake has none: the error says so).
        let e = f.write(&mut mds, (2 << 20) - 10, &[0u8; 20], stable_how4::FILE_SYNC4).unwrap_err();
        assert!(e.to_string().contains("no devices here"), "{e}");
        assert_eq!(mds.gets.len(), 2, "the first part lies in a held segment");
    }
}

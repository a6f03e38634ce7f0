//! Helpers shared by the DS integration tests that speak raw RPC records
//! over TCP (zero_copy.rs, volume.rs, async_reads.rs, async_writes.rs): a DS
//! with one object and a session, WRITE records with odd fragmentation,
//! reply readers; and the config of a DS without an MDS (ds.rs,
//! poll_modes.rs, control_attacker.rs, fence.rs).
#![allow(dead_code)]

use pnfs_client::pnfs_protocol;
use pnfs_client::Client;
use pnfs_ds::mds_link::CtlClient;
use pnfs_ds::{DsConfig, DsFh};
use pnfs_protocol::record::RecordReader;
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::*;
use pnfs_protocol::{Decoder, Encoder, Opaque, XdrDecode, XdrEncode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

pub const MIB: usize = 1 << 20;

pub struct Setup {
    pub h: pnfs_ds::DsHandle,
    pub dir: tempfile::TempDir,
    /// The config the DS runs with (to start it again on the same data).
    pub cfg: DsConfig,
    /// The object's handle as clients hold it (sealed with the cluster key).
    pub fh: [u8; 32],
    /// The object's file (files backend).
    pub path: std::path::PathBuf,
    pub sessionid: sessionid4,
    /// Keeps the session's client alive.
    pub _client: Client,
}

pub const RW: [u8; 12] = [7; 12];

/// The config of data server `id` with its objects and a test cluster key
/// in `dir`: loopback ports, one reactor, and an MDS address that nothing
/// listens on (a DS serves without its MDS).
pub fn config_without_mds(id: &str, dir: &std::path::Path) -> DsConfig {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cfg = DsConfig::new(id, dir.to_path_buf(), &dead.to_string());
    cfg.cluster_key_file = Some(pnfs_protocol::seal::ClusterKey::test_file_in(dir));
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.control_bind = "127.0.0.1:0".parse().unwrap();
    cfg.reactors = 1;
    cfg
}

pub fn setup(configure: impl FnOnce(&mut DsConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_without_mds("zc", dir.path());
    cfg.buffers_per_reactor = 4;
    configure(&mut cfg);
    let h = pnfs_ds::run(cfg.clone()).unwrap();
    let dfh = DsFh { stripe: 0, ino: 77, generation: 1 };
    let fh = dfh.seal(&h.ds().fh_key);
    create_and_allow(&h, &fh);
    let client = Client::connect(h.nfs_addr(), 1).unwrap();
    assert!(client.session().slots >= 32);
    let sessionid = client.session().sessionid;
    let path = dir.path().join("objects").join(dfh.object_name());
    Setup { h, dir, cfg, fh, path, sessionid, _client: client }
}

/// One control call answered with a plain `ctl_res`; its status.
pub fn ctl_call(ctl: &mut CtlClient, p: u32, a: &impl XdrEncode) -> ctl_status {
    let body = ctl.call(PNFSCTL_DS_PROGRAM, p, a).unwrap();
    ctl_res::decode(&mut Decoder::new(&body)).unwrap().cr_status
}

/// As the MDS does: OBJ_CREATE `fh` (idempotent) and STATEID_ALLOW the
/// read-write stateid [`RW`] for it.
pub fn create_and_allow(h: &pnfs_ds::DsHandle, fh: &[u8]) {
    let mut ctl = h.control_client().unwrap();
    assert_eq!(ctl_call(&mut ctl, CTL_PROC_OBJ_CREATE, &ctl_obj_args { coa_fh: Opaque::borrowed(fh) }), ctl_status::CTL_OK);
    let allow = ctl_stateid_args {
        csa_stateid: stateid4 { seqid: 1, other: RW },
        csa_clientid: 1,
        csa_fh: Opaque::borrowed(fh),
        csa_access: OPEN4_SHARE_ACCESS_BOTH,
    };
    assert_eq!(ctl_call(&mut ctl, CTL_PROC_STATEID_ALLOW, &allow), ctl_status::CTL_OK);
}

/// RPC call body: SEQUENCE (slot, seq), PUTFH of the object, then `ops`.
pub fn call_body(s: &Setup, xid: u32, slot: u32, seq: u32, ops: &[nfs_argop4]) -> Vec<u8> {
    let mut e = Encoder::new();
    rpc::begin_call(&mut e, xid, rpc::NFS4_PROGRAM, rpc::NFS_V4, rpc::PROC_COMPOUND, true);
    e.put_opaque(b"ds-test", 1024).unwrap();
    e.put_u32(1);
    e.put_u32(2 + ops.len() as u32);
    nfs_argop4::OP_SEQUENCE(SEQUENCE4args {
        sa_sessionid: s.sessionid,
        sa_sequenceid: seq,
        sa_slotid: slot,
        sa_highest_slotid: 63,
        sa_cachethis: false,
    })
    .encode(&mut e)
    .unwrap();
    nfs_argop4::OP_PUTFH(PUTFH4args { object: Opaque::borrowed(&s.fh) }).encode(&mut e).unwrap();
    for op in ops {
        op.encode(&mut e).unwrap();
    }
    e.into_inner()
}

/// UNSTABLE WRITE of `data` at `offset` with the read-write stateid [`RW`].
pub fn write_op(offset: u64, data: &[u8]) -> nfs_argop4<'_> {
    nfs_argop4::OP_WRITE(WRITE4args { stateid: stateid4 { seqid: 1, other: RW }, offset, stable: stable_how4::UNSTABLE4, data: Opaque::borrowed(data) })
}

/// READ with the read-write stateid [`RW`].
pub fn read_op(offset: u64, count: u32) -> nfs_argop4<'static> {
    nfs_argop4::OP_READ(READ4args { stateid: stateid4 { seqid: 1, other: RW }, offset, count })
}

/// RPC call body: SEQUENCE (slot, seqid 1), PUTFH, WRITE, then `tail` ops.
pub fn write_record(s: &Setup, xid: u32, slot: u32, offset: u64, data: &[u8], tail: &[nfs_argop4]) -> Vec<u8> {
    call_body(s, xid, slot, 1, &[&[write_op(offset, data)], tail].concat())
}

/// Record marking with the given fragment sizes (the rest in the last one).
pub fn frame(body: &[u8], frags: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4 * (frags.len() + 1));
    let mut off = 0;
    for &f in frags {
        let f = f.min(body.len() - off);
        out.extend_from_slice(&(f as u32).to_be_bytes());
        out.extend_from_slice(&body[off..off + f]);
        off += f;
    }
    out.extend_from_slice(&(0x8000_0000u32 | (body.len() - off) as u32).to_be_bytes());
    out.extend_from_slice(&body[off..]);
    out
}

/// Writes `bytes` in chunks of the given sizes, cycling.
pub fn send_chunked(sock: &mut TcpStream, bytes: &[u8], chunks: &[usize]) {
    let mut off = 0;
    for &c in chunks.iter().cycle() {
        if off == bytes.len() {
            break;
        }
        let n = c.min(bytes.len() - off);
        sock.write_all(&bytes[off..off + n]).unwrap();
        off += n;
    }
}

pub struct Replies {
    rr: RecordReader,
    pending: std::collections::VecDeque<Vec<u8>>,
}

impl Replies {
    pub fn new() -> Replies {
        Replies { rr: RecordReader::new(4 * MIB), pending: Default::default() }
    }
    /// The next reply record; None when the server closed the connection.
    pub fn next(&mut self, s: &mut TcpStream) -> Option<Vec<u8>> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(r);
            }
            let n = match s.read(&mut buf) {
                Ok(n) => n,
                // A signal to this thread (a read() is not retried by std).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            if n == 0 {
                return None;
            }
            self.pending.extend(self.rr.feed_all(&buf[..n]).unwrap());
        }
    }
}

/// (xid, the COMPOUND status, the WRITE result) of a reply record.
pub fn write_result(rec: &[u8]) -> (u32, nfsstat4, Option<WRITE4res>) {
    let Ok(Message::Reply { xid, accepted: Some(0), body }) = rpc::parse_message(rec) else { panic!("not an accepted reply") };
    let res = COMPOUND4res::decode(&mut Decoder::new(body)).unwrap();
    let w = res.resarray.iter().find_map(|r| match r {
        nfs_resop4::OP_WRITE(w) => Some(w.clone()),
        _ => None,
    });
    (xid, res.status, w)
}

pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8).collect()
}

pub fn nfs(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

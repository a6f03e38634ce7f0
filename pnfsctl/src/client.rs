//! The admin program's client: one TCP connection to the MDS control
//! listener, every call signed with the admin keys derived from the cluster
//! key and every reply's tag checked (`pnfs_protocol::control_auth`).

use pnfs_mds::pnfs::client::{call_on, connect};
use pnfs_protocol::control_auth::{CallSigner, ControlKeys};
use pnfs_protocol::seal::ClusterKey;
use pnfs_protocol::wire::*;
use pnfs_protocol::{Encoder, XdrEncode};
use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// How long one admin call may take: `ds list` and `status` scan the
/// placement records (O(files)); `layout` asks each of the file's data servers.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub struct AdminClient {
    stream: TcpStream,
    signer: CallSigner,
    xid: u32,
    addr: String,
}

impl AdminClient {
    /// Connects to the MDS control listener `addr` with the cluster key in `key_file`.
    pub fn connect(addr: &str, key_file: &Path) -> Result<AdminClient, String> {
        let key = ClusterKey::load(key_file).map_err(|e| format!("{e} (--key: the cluster key file, mds.cluster_key_file)"))?;
        let stream = connect(addr).map_err(|e| {
            format!("cannot reach the MDS control listener at {addr}: {e} (is pnfsd running with mds.control_bind = {addr:?}?)")
        })?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
        let xid = u32::from_ne_bytes(pnfs_protocol::seal::random_bytes());
        Ok(AdminClient { stream, signer: CallSigner::new(ControlKeys::admin(&key), 0), xid, addr: addr.to_string() })
    }

    /// One call; the result bytes of an authentic reply.
    pub fn call<A: XdrEncode>(&mut self, proc_: u32, args: &A) -> Result<Vec<u8>, String> {
        let mut e = Encoder::new();
        args.encode(&mut e).map_err(|e| format!("encoding the call: {e}"))?;
        self.xid = self.xid.wrapping_add(1);
        call_on(&mut self.stream, &mut self.signer, self.xid, PNFSCTL_ADMIN_PROGRAM, proc_, &e.into_inner()).map_err(|e| {
            let addr = &self.addr;
            match e.kind() {
                io::ErrorKind::PermissionDenied => format!(
                    "the MDS at {addr} refused the call: {e}. --key must be this cluster's key file (mds.cluster_key_file), \
                     and the MDS a pnfsd that serves pnfsctl"
                ),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    format!("the MDS at {addr} did not answer within {} s", CALL_TIMEOUT.as_secs())
                }
                _ => format!("admin call to {addr}: {e}"),
            }
        })
    }
}

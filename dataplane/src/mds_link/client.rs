//! The outgoing client to the MDS control program ([`CtlClient`]): connect,
//! then signed calls with checked replies.

use pnfs_protocol::control_auth::{now_ms, CallSigner, ControlKeys, ReplyError};
use pnfs_protocol::record::RecordReader;
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::encode_to_vec;
use pnfs_protocol::{Encoder, XdrEncode};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Registration client

/// How long one control call to the MDS may take.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A synchronous ONC RPC client for the MDS control program.
/// Every call is signed (cluster key) and every reply's tag checked.
pub struct CtlClient {
    stream: TcpStream,
    records: RecordReader,
    xid: u32,
    signer: CallSigner,
}

impl CtlClient {
    /// `epoch`: the MDS epoch calls speak for (0 from a data server; tests
    /// playing the MDS name one).
    pub fn connect(addr: &str, timeout: Duration, keys: ControlKeys, epoch: u64) -> io::Result<CtlClient> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to nothing"));
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
                    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
                    let xid = u32::from_be_bytes(crate::ds::random_bytes::<4>());
                    let signer = CallSigner::new(keys, epoch);
                    return Ok(CtlClient { stream, records: RecordReader::new(1 << 20), xid, signer });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One call to (`prog`, PNFSCTL_VERSION, `proc_`); returns the result bytes.
    pub fn call(&mut self, prog: u32, proc_: u32, args: &impl XdrEncode) -> io::Result<Vec<u8>> {
        self.xid = self.xid.wrapping_add(1);
        let xid = self.xid;
        let args = encode_to_vec(args).map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let mut e = Encoder::new();
        e.put_u32(0);
        let sent = self.signer.encode_call(&mut e, xid, prog, PNFSCTL_VERSION, proc_, &args, now_ms());
        let len = e.len() - 4;
        e.patch_u32(0, pnfs_protocol::record::LAST_FRAGMENT | len as u32);
        self.stream.write_all(&e.buf)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut off = 0;
            while off < n {
                let (used, rec) =
                    self.records.feed(&buf[off..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                off += used;
                let Some(rec) = rec else { continue };
                match self.signer.open_reply(sent, &rec) {
                    Err(ReplyError::OtherXid) => continue,
                    Ok(body) => return Ok(body.to_vec()),
                    Err(e @ ReplyError::Refused(_)) => return Err(io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())),
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
                }
            }
        }
    }
}

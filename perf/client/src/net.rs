//! Sockets for tests that play an attacker on the storage network.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// A TCP connection to `remote` from local address `local` (e.g. 127.0.0.2,
/// a second host on loopback), with 10 s read/write timeouts so a test that
/// expects an answer never hangs.
pub fn connect_from(local: IpAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(remote), socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(local, 0).into())?;
    sock.connect_timeout(&remote.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Sends `msg` as one RPC record.
pub fn send_record(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    s.write_all(&pnfs_protocol::record::record_header(msg.len()))?;
    s.write_all(msg)
}

/// Reads one record (up to 1 MiB); None when the peer closed the
/// connection, timed out or sent something that is not a record.
pub fn read_record(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut rr = pnfs_protocol::record::RecordReader::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        if let (_, Some(rec)) = rr.feed(&buf[..n]).ok()? {
            return Some(rec);
        }
    }
}

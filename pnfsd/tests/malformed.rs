//! Bad input from a client gets an RPC or NFS error or a closed connection:
//! never a panic, never a hang. Runs the real daemon.

use pnfs_protocol::record::{record_header, RecordReader, LAST_FRAGMENT};
use pnfs_protocol::rpc::{self, begin_call};
use pnfs_protocol::Encoder;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[node]\nroles = [\"mds\"]\nlog = \"warn\"\n[mds]\nbind = \"127.0.0.1:{port}\"\nmetadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\nmax_record_bytes = 1114112\n[[mds.exports]]\npath = \"/export\"\nroot_squash = false\n",
        dir.path().display()
    );
    let path = dir.path().join("pnfsd.toml");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pnfsd")).arg("--config").arg(&path).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pnfsd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon { child, port, _dir: dir }
}

fn connect(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn send(s: &mut TcpStream, body: &[u8]) {
    s.write_all(&record_header(body.len())).unwrap();
    s.write_all(body).unwrap();
}

/// Next reply record, or None when the server closed the connection.
fn recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut rr = RecordReader::new(4 << 20);
    let mut buf = [0u8; 65536];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("server did not answer within 10 s (hang)")
            }
            Err(_) => return None,
        };
        if let (_, Some(r)) = rr.feed(&buf[..n]).unwrap() {
            return Some(r);
        }
    }
}

fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    begin_call(&mut e, xid, prog, vers, proc_, true);
    e.buf.extend_from_slice(args);
    e.into_inner()
}

fn accept_stat(reply: &[u8]) -> u32 {
    match rpc::parse_message(reply).unwrap() {
        rpc::Message::Reply { accepted: Some(s), .. } => s,
        m => panic!("not an accepted reply: {m:?}"),
    }
}

fn compound_body(reply: &[u8]) -> Vec<u8> {
    match rpc::parse_message(reply).unwrap() {
        rpc::Message::Reply { accepted: Some(0), body, .. } => body.to_vec(),
        m => panic!("not a successful reply: {m:?}"),
    }
}

fn be(x: u32) -> [u8; 4] {
    x.to_be_bytes()
}

/// The server still answers a NULL call on a new connection.
fn alive(d: &Daemon) {
    let mut s = connect(d);
    send(&mut s, &call(1, rpc::NFS4_PROGRAM, 4, 0, &[]));
    let r = recv(&mut s).expect("NULL call answered");
    assert_eq!(accept_stat(&r), 0);
}

#[test]
fn bad_rpc_and_compound_input_is_answered_or_closed() {
    let d = start();
    alive(&d);
    let mut s = connect(&d);

    // Wrong program, version, procedure.
    send(&mut s, &call(2, 100005, 3, 0, &[]));
    assert_eq!(accept_stat(&recv(&mut s).unwrap()), 1, "PROG_UNAVAIL");
    send(&mut s, &call(3, rpc::NFS4_PROGRAM, 3, 0, &[]));
    assert_eq!(accept_stat(&recv(&mut s).unwrap()), 2, "PROG_MISMATCH");
    send(&mut s, &call(4, rpc::NFS4_PROGRAM, 4, 7, &[]));
    assert_eq!(accept_stat(&recv(&mut s).unwrap()), 3, "PROC_UNAVAIL");

    // COMPOUND whose tag claims 4 GiB: GARBAGE_ARGS, nothing allocated.
    let mut args = Vec::new();
    args.extend(be(0xffff_fff0));
    send(&mut s, &call(5, rpc::NFS4_PROGRAM, 4, 1, &args));
    assert_eq!(accept_stat(&recv(&mut s).unwrap()), 4, "GARBAGE_ARGS");

    // Minor version 0 and 99: MINOR_VERS_MISMATCH.
    for minor in [0u32, 99] {
        let mut args = Vec::new();
        args.extend(be(0));
        args.extend(be(minor));
        args.extend(be(0));
        send(&mut s, &call(6, rpc::NFS4_PROGRAM, 4, 1, &args));
        let body = compound_body(&recv(&mut s).unwrap());
        assert_eq!(&body[..4], &be(10021), "NFS4ERR_MINOR_VERS_MISMATCH");
    }

    // An op count of 2^32-1 with no ops behind it.
    let mut args = Vec::new();
    args.extend(be(0));
    args.extend(be(1));
    args.extend(be(u32::MAX));
    send(&mut s, &call(7, rpc::NFS4_PROGRAM, 4, 1, &args));
    assert_eq!(accept_stat(&recv(&mut s).unwrap()), 4, "GARBAGE_ARGS for an impossible op count");

    // Unknown opnum: OP_ILLEGAL; known op without a session: OP_NOT_IN_SESSION.
    for (op, want_op, want_status) in [(9999u32, 10044u32, 10044u32), (10, 10, 10071)] {
        let mut args = Vec::new();
        args.extend(be(0));
        args.extend(be(1));
        args.extend(be(1));
        args.extend(be(op));
        args.extend(be(0));
        send(&mut s, &call(8, rpc::NFS4_PROGRAM, 4, 1, &args));
        let body = compound_body(&recv(&mut s).unwrap());
        assert_eq!(&body[..4], &be(want_status));
        // status, tag len 0, count 1, opnum, op status
        assert_eq!(&body[8..12], &be(1));
        assert_eq!(&body[12..16], &be(want_op));
    }

    // EXCHANGE_ID with its owner truncated: BADXDR on that op.
    let mut args = Vec::new();
    args.extend(be(0));
    args.extend(be(1));
    args.extend(be(1));
    args.extend(be(42));
    args.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    args.extend(be(1000));
    send(&mut s, &call(9, rpc::NFS4_PROGRAM, 4, 1, &args));
    let body = compound_body(&recv(&mut s).unwrap());
    assert_eq!(&body[..4], &be(10036), "NFS4ERR_BADXDR");

    // RPCSEC_GSS credentials: AUTH_ERROR.
    let mut gss = Vec::new();
    gss.extend(be(10));
    gss.extend(be(0));
    gss.extend(be(2));
    gss.extend(be(rpc::NFS4_PROGRAM));
    gss.extend(be(4));
    gss.extend(be(0));
    gss.extend(be(6));
    gss.extend(be(0));
    gss.extend(be(0));
    gss.extend(be(0));
    send(&mut s, &gss);
    match rpc::parse_message(&recv(&mut s).unwrap()).unwrap() {
        rpc::Message::Reply { accepted: None, .. } => {}
        m => panic!("expected MSG_DENIED, got {m:?}"),
    }
    drop(s);
    alive(&d);

    // Random records on one connection: every one answered or the
    // connection closed; the server keeps serving others.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut s = connect(&d);
    for i in 0..300 {
        let len = (rnd() % 200) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if i % 2 == 0 && body.len() >= 24 {
            // Keep a valid call header now and then so the COMPOUND decoder sees garbage too.
            body.splice(0..24, call(i, rpc::NFS4_PROGRAM, 4, 1, &[])[..24].iter().copied());
        }
        send(&mut s, &body);
        // Calls (even broken ones with an xid) are answered; replies and
        // shorter records are not.
        let answered = match rpc::parse_message(&body) {
            Ok(rpc::Message::Call { .. }) | Err(rpc::RpcError::Garbage { .. }) => true,
            Ok(rpc::Message::Reply { .. }) | Err(rpc::RpcError::Unreadable) => false,
        };
        if answered && recv(&mut s).is_none() {
            s = connect(&d);
        }
    }
    drop(s);
    alive(&d);

    // A record header claiming more than max_record_bytes: connection closed.
    let mut s = connect(&d);
    s.write_all(&(LAST_FRAGMENT | 0x7fff_0000).to_be_bytes()).unwrap();
    assert!(recv(&mut s).is_none(), "oversized record must close the connection");
    alive(&d);
}

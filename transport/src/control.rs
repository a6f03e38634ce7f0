//! The MDS <-> DS control listeners' calls, authenticated: both control
//! listeners (the MDS's for data servers, the DS's for the MDS) read
//! through this, so the cluster-key check and what a refusal costs are the
//! same on both sides.
//!
//! Every call is checked in arrival order (its sequence number) before any
//! work. A refused one is answered AUTH_ERROR and ends the connection: the
//! caller pays. An unauthenticated connection gets the listener's short
//! first-call deadline as its idle timeout; the first authentic call
//! raises it.

use crate::{CallSource, Ended, ReplySink, WriterTask};
use std::net::SocketAddr;
use pnfs_protocol::control_auth::{now_ms, CallChecker, ControlKeys, RecentConnections, Verified};
use pnfs_protocol::rpc;
use std::collections::VecDeque;
use std::time::Duration;

pub struct AuthenticatedCalls<C: CallSource> {
    calls: C,
    checker: CallChecker,
    /// Calls received together, not handed out yet.
    pending: VecDeque<Vec<u8>>,
    /// The idle timeout once a call was authentic.
    idle: Duration,
    authenticated: bool,
}

impl<C: CallSource> AuthenticatedCalls<C> {
    /// `calls` should start with the first-call deadline as its idle
    /// timeout; `idle` applies after the first authentic call.
    pub fn new(calls: C, keys: ControlKeys, idle: Duration) -> Self {
        AuthenticatedCalls { calls, checker: CallChecker::new(keys), pending: VecDeque::new(), idle, authenticated: false }
    }

    /// Also serves the admin program, its calls checked with `admin` keys
    /// (`CallChecker::with_admin`; the MDS control listener).
    pub fn with_admin(mut self, admin: ControlKeys) -> Self {
        self.checker = self.checker.with_admin(admin);
        self
    }

    /// Also accepts calls signed with `peer` (data server to data server),
    /// marked `Verified::by_peer`: the listener decides what they may do.
    pub fn accept_peers(mut self, peer: ControlKeys) -> Self {
        self.checker = self.checker.with_peer_keys(peer);
        self
    }

    /// The next authentic call and its verified credential. A call that
    /// fails the check is answered AUTH_ERROR through `replies` and ends
    /// the connection ([`Ended::Refused`]); an unreadable one just ends it.
    pub async fn next<S: ReplySink>(&mut self, recent: &RecentConnections, replies: &S) -> Result<(Vec<u8>, Verified), Ended> {
        let rec = match self.pending.pop_front() {
            Some(r) => r,
            None => {
                self.pending.extend(self.calls.next_batch().await?);
                self.pending.pop_front().ok_or(Ended::Closed)?
            }
        };
        match self.checker.check(&rec, now_ms(), recent) {
            Ok(v) => {
                if !self.authenticated {
                    self.authenticated = true;
                    self.calls.set_idle_timeout(self.idle);
                }
                Ok((rec, v))
            }
            Err(None) => Err(Ended::Closed),
            Err(Some(d)) => {
                let _ = replies.send(rpc::auth_error_reply(d.xid, d.stat));
                Err(Ended::Refused(d.why))
            }
        }
    }

    /// True while calls that arrived with the last one wait to be handed
    /// out (a listener answers them all before it writes).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Ends a control connection once its loop stopped with `ended`: waits
/// until the writer sent what was queued (a refusal included), then says
/// why. Ok(Some(why)): a call was refused (the listener counts and logs
/// it); Ok(None): an ordinary end; Err: a failure or a limit reached (a
/// too large record is logged here, naming `max_record_key`).
pub async fn finish<C: CallSource, S: ReplySink>(
    calls: AuthenticatedCalls<C>,
    replies: S,
    writer: WriterTask,
    ended: Ended,
    peer: SocketAddr,
    max_record_key: &str,
) -> std::io::Result<Option<&'static str>> {
    drop((calls, replies));
    let _ = writer.finish().await;
    match ended {
        Ended::Closed | Ended::Truncated | Ended::WriterGone => Ok(None),
        Ended::Refused(why) => Ok(Some(why)),
        Ended::Io(e) => Err(e),
        Ended::TooLarge(e) => {
            log::warn!("closing control connection from {peer}: {e} ({max_record_key})");
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }
        e => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::{accept, TcpLimits};
    use pnfs_protocol::control_auth::CallSigner;
    use pnfs_protocol::record::{record_header, RecordReader};
    use pnfs_protocol::rpc::{parse_message, Message};
    use pnfs_protocol::seal::ClusterKey;
    use pnfs_protocol::Encoder;
    use std::io::{Read, Write};

    const LIMIT: Duration = Duration::from_secs(20);

    fn signed_call(signer: &mut CallSigner, xid: u32) -> Vec<u8> {
        let mut e = Encoder::new();
        signer.encode_call(&mut e, xid, 400_100, 1, 0, &[], now_ms());
        let mut out = record_header(e.buf.len()).to_vec();
        out.extend_from_slice(&e.buf);
        out
    }

    #[tokio::test]
    async fn authentic_calls_pass_and_a_forged_one_is_refused_and_answered() {
        let key = ClusterKey::from_bytes([7; 32]);
        let keys = ControlKeys::new(&key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::task::spawn_blocking(move || std::net::TcpStream::connect(addr).unwrap());
        let (sock, _) = listener.accept().await.unwrap();
        let mut client = client.await.unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let l = TcpLimits {
            max_record: 4096,
            idle: LIMIT,
            record_timeout: LIMIT,
            reply_budget_bytes: 1 << 20,
            reply_budget_count: 64,
            write_stall: LIMIT,
        };
        let c = accept(sock, &l);
        let (replies, writer) = (c.replies, c.writer);
        let mut calls = AuthenticatedCalls::new(c.calls, keys.clone(), LIMIT);
        let recent = RecentConnections::new(16);
        // Two authentic calls in one write come out one by one, in order.
        let mut signer = CallSigner::new(keys, 1);
        let mut wire = signed_call(&mut signer, 1);
        wire.extend(signed_call(&mut signer, 2));
        // Then one signed with another key.
        let mut forger = CallSigner::new(ControlKeys::new(&ClusterKey::from_bytes([8; 32])), 1);
        let forged = signed_call(&mut forger, 3);
        let mut w = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || w.write_all(&wire).unwrap()).await.unwrap();
        let (_, v) = tokio::time::timeout(LIMIT, calls.next(&recent, &replies)).await.unwrap().unwrap();
        assert_eq!(v.xid, 1);
        assert!(calls.has_pending());
        let (_, v) = tokio::time::timeout(LIMIT, calls.next(&recent, &replies)).await.unwrap().unwrap();
        assert_eq!(v.xid, 2);
        let mut w = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || w.write_all(&forged).unwrap()).await.unwrap();
        let r = tokio::time::timeout(LIMIT, calls.next(&recent, &replies)).await.unwrap();
        assert!(matches!(r, Err(Ended::Refused(_))), "{r:?}");
        // The refusal reaches the peer (AUTH_ERROR for xid 3), then the close.
        let ended = finish(calls, replies, writer, r.unwrap_err(), addr, "test").await.unwrap();
        assert!(ended.is_some());
        let got = tokio::task::spawn_blocking(move || {
            let mut rr = RecordReader::new(4096);
            let mut buf = [0u8; 512];
            loop {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0, "closed without the refusal");
                if let Some(rec) = rr.feed_all(&buf[..n]).unwrap().pop() {
                    return rec;
                }
            }
        })
        .await
        .unwrap();
        match parse_message(&got) {
            Ok(Message::Reply { xid, .. }) => assert_eq!(xid, 3),
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

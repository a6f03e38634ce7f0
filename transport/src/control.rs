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

//! Authentication of the MDS <-> DS control protocol, without I/O.
//!
//! Every control call carries an `AUTH_PNFS_CTL` credential: a connection
//! id (random, chosen by the caller per TCP connection), a sequence number,
//! the caller's clock, the MDS epoch it speaks for, and a 16-byte tag keyed
//! by the cluster key over all of that plus the call's xid, program,
//! version, procedure and arguments. Every successful reply carries a tag
//! over its result bytes bound to the call's connection id, sequence number
//! and xid, under a second key, so neither calls nor replies can be made or
//! altered without the key.
//!
//! Replays: on one connection the sequence numbers must rise; a connection
//! id is accepted once (the checker remembers the ids it saw within twice
//! the allowed clock skew), and only when the first call's clock is within
//! [`MAX_CLOCK_SKEW_MS`] of the receiver's. A recorded connection therefore
//! cannot be played again, neither on its own connection nor on a new one.
//!
//! Epochs: calls from the MDS name its epoch (its boot); the DS refuses
//! calls from an epoch older than the newest it knows (a fenced MDS).

use crate::rpc::{AuthStat, AUTH_NONE, MAX_AUTH_BYTES, MSG_CALL, MSG_REPLY};
use crate::seal::{random_bytes, ClusterKey, Purpose, TagKey};
use crate::xdr::{Decoder, Encoder};
use std::collections::HashMap;
use std::sync::Mutex;

/// Our credential flavor (a private number: RFC 5531 leaves flavors to
/// their users; this one spells "pfc1").
pub const AUTH_PNFS_CTL: u32 = 0x7066_6331;
const CONN_ID_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// conn id, seq (u64), clock ms (u64), epoch (u64), tag.
const CRED_LEN: usize = CONN_ID_LEN + 8 + 8 + 8 + TAG_LEN;
/// How far a caller's clock may be from ours on the first call of a connection.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// Connection ids remembered at once; authenticated callers only (tags are
/// checked first), so only a key holder could fill it.
pub const MAX_RECENT_CONNECTIONS: usize = 65_536;

/// The two keys the control protocol uses, derived from the cluster key.
#[derive(Clone)]
pub struct ControlKeys {
    call: TagKey,
    reply: TagKey,
}

impl ControlKeys {
    pub fn new(cluster: &ClusterKey) -> ControlKeys {
        ControlKeys { call: cluster.derive(Purpose::ControlCall), reply: cluster.derive(Purpose::ControlReply) }
    }

    /// The admin program's keys (pnfsctl -> MDS, PNFSCTL_ADMIN_PROGRAM):
    /// same credential, own purposes, so no data server call is ever an
    /// admin call and the other way round.
    pub fn admin(cluster: &ClusterKey) -> ControlKeys {
        ControlKeys { call: cluster.derive(Purpose::Admin), reply: cluster.derive(Purpose::AdminReply) }
    }

    /// The keys data servers sign their calls to each other with (object
    /// copies): a DS listener that accepts them grants such calls only the
    /// reads a copy needs ([`Verified::by_peer`]).
    pub fn for_ds_peers(cluster: &ClusterKey) -> ControlKeys {
        ControlKeys { call: cluster.derive(Purpose::DsPeerCall), reply: cluster.derive(Purpose::DsPeerReply) }
    }
}

/// Milliseconds since the Unix epoch (the clock calls carry).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn call_tag(keys: &ControlKeys, head: &[u8; 16], cred: &[u8], args: &[u8]) -> [u8; TAG_LEN] {
    keys.call.tag(&[head, cred, args])
}

fn reply_tag(keys: &ControlKeys, conn: &[u8; CONN_ID_LEN], seq: u64, xid: u32, result: &[u8]) -> [u8; TAG_LEN] {
    keys.reply.tag(&[conn, &seq.to_be_bytes(), &xid.to_be_bytes(), result])
}

/// xid, prog, vers, proc: the call header words the call tag covers.
fn head(xid: u32, prog: u32, vers: u32, proc_: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    for (i, w) in [xid, prog, vers, proc_].iter().enumerate() {
        h[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    h
}

/// What a caller needs to check the reply to one call.
#[derive(Debug, Clone, Copy)]
pub struct SentCall {
    pub xid: u32,
    seq: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// A reply to another xid (an earlier call that timed out): skip it.
    OtherXid,
    /// Refused: denied (e.g. bad credential) or not accepted with SUCCESS.
    Refused(String),
    /// Accepted, but its tag is missing or wrong: not from a key holder.
    Forged,
    /// Not an RPC reply.
    Garbage,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::OtherXid => write!(f, "reply to another call"),
            ReplyError::Refused(why) => write!(f, "control call refused: {why}"),
            ReplyError::Forged => write!(f, "control reply without a valid tag (wrong cluster key, or forged)"),
            ReplyError::Garbage => write!(f, "unparseable control reply"),
        }
    }
}

/// The calling side of one connection: signs calls, checks their replies.
/// Use a new signer for every new TCP connection.
pub struct CallSigner {
    keys: ControlKeys,
    conn: [u8; CONN_ID_LEN],
    seq: u64,
    epoch: u64,
}

impl CallSigner {
    /// `epoch`: the MDS epoch the calls speak for (0 for a DS's calls).
    pub fn new(keys: ControlKeys, epoch: u64) -> CallSigner {
        CallSigner { keys, conn: random_bytes(), seq: 0, epoch }
    }

    /// Appends one call message (no record mark) to `e`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_call(&mut self, e: &mut Encoder, xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8], now_ms: u64) -> SentCall {
        self.seq += 1;
        let mut cred = [0u8; CRED_LEN];
        cred[..16].copy_from_slice(&self.conn);
        cred[16..24].copy_from_slice(&self.seq.to_be_bytes());
        cred[24..32].copy_from_slice(&now_ms.to_be_bytes());
        cred[32..40].copy_from_slice(&self.epoch.to_be_bytes());
        let tag = call_tag(&self.keys, &head(xid, prog, vers, proc_), &cred[..40], args);
        cred[40..].copy_from_slice(&tag);
        crate::rpc::put_call_head(e, xid, prog, vers, proc_);
        e.put_u32(AUTH_PNFS_CTL);
        e.put_opaque(&cred, MAX_AUTH_BYTES).expect("credential fits");
        e.put_u32(AUTH_NONE);
        e.put_u32(0);
        e.buf.extend_from_slice(args);
        SentCall { xid, seq: self.seq }
    }

    /// The result bytes of a successful, authentic reply to `sent`.
    pub fn open_reply<'a>(&self, sent: SentCall, record: &'a [u8]) -> Result<&'a [u8], ReplyError> {
        let mut d = Decoder::new(record);
        let xid = d.get_u32().map_err(|_| ReplyError::Garbage)?;
        if d.get_u32().map_err(|_| ReplyError::Garbage)? != MSG_REPLY {
            return Err(ReplyError::Garbage);
        }
        if xid != sent.xid {
            return Err(ReplyError::OtherXid);
        }
        match d.get_u32().map_err(|_| ReplyError::Garbage)? {
            0 => {}
            _ => {
                let why = match (d.get_u32(), d.get_u32()) {
                    (Ok(1), Ok(s)) => format!("authentication error {s} (is the cluster key the same on both sides?)"),
                    _ => "RPC version mismatch".to_string(),
                };
                return Err(ReplyError::Refused(why));
            }
        }
        let flavor = d.get_u32().map_err(|_| ReplyError::Garbage)?;
        let verf = d.get_opaque(MAX_AUTH_BYTES).map_err(|_| ReplyError::Garbage)?;
        let result = d.rest();
        let stat = Decoder::new(result).get_u32().map_err(|_| ReplyError::Garbage)?;
        if stat != 0 {
            return Err(ReplyError::Refused(format!("accept_stat {stat}")));
        }
        if flavor != AUTH_PNFS_CTL || verf.len() != TAG_LEN {
            return Err(ReplyError::Forged);
        }
        let want = reply_tag(&self.keys, &self.conn, sent.seq, xid, result);
        if !crate::seal::constant_time_eq(&want, &verf) {
            return Err(ReplyError::Forged);
        }
        Ok(&result[4..])
    }
}

/// Connection ids seen recently, shared by all connections of a listener.
pub struct RecentConnections {
    seen: Mutex<HashMap<[u8; CONN_ID_LEN], u64>>,
    max: usize,
}

impl Default for RecentConnections {
    fn default() -> Self {
        Self::new(MAX_RECENT_CONNECTIONS)
    }
}

impl RecentConnections {
    pub fn new(max: usize) -> RecentConnections {
        RecentConnections { seen: Mutex::new(HashMap::new()), max }
    }

    /// False when `conn` was seen (a replay) or the table is full of ids
    /// still inside the replay window.
    fn first_use(&self, conn: [u8; CONN_ID_LEN], now_ms: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains_key(&conn) {
            return false;
        }
        if seen.len() >= self.max {
            seen.retain(|_, until| *until > now_ms);
            if seen.len() >= self.max {
                return false;
            }
        }
        // A call older than 2 skews is refused by its clock anyway.
        seen.insert(conn, now_ms + 2 * MAX_CLOCK_SKEW_MS);
        true
    }
}

/// A call whose tag checked out: answer it with [`Verified::seal_reply`].
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    pub xid: u32,
    pub proc_: u32,
    /// Checked with the admin keys (a PNFSCTL_ADMIN_PROGRAM call on a
    /// checker made [`CallChecker::with_admin`]): seal its reply with them.
    pub admin: bool,
    /// The MDS epoch the caller speaks for.
    pub epoch: u64,
    /// Signed with the data servers' peer keys ([`ControlKeys::for_ds_peers`]),
    /// not the MDS's: another data server, allowed only what a copy needs.
    pub by_peer: bool,
    conn: [u8; CONN_ID_LEN],
    seq: u64,
}

/// The receiving side of one connection.
pub struct CallChecker {
    keys: ControlKeys,
    /// Keys of PNFSCTL_ADMIN_PROGRAM calls, where this listener serves it.
    admin: Option<ControlKeys>,
    /// Also accepted: data servers' calls to each other.
    peer_keys: Option<ControlKeys>,
    conn: Option<[u8; CONN_ID_LEN]>,
    last_seq: u64,
    /// The connection's calls are a peer's (set by its first call).
    peer_conn: bool,
}

/// Why a call was refused; the reply is MSG_DENIED/AUTH_ERROR with `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub xid: u32,
    pub stat: AuthStat,
    pub why: &'static str,
}

impl CallChecker {
    pub fn new(keys: ControlKeys) -> CallChecker {
        CallChecker { keys, admin: None, peer_keys: None, conn: None, last_seq: 0, peer_conn: false }
    }

    /// Also accepts PNFSCTL_ADMIN_PROGRAM calls, checked with `admin` keys
    /// only (`Verified::admin`); calls to other programs keep the control keys.
    pub fn with_admin(mut self, admin: ControlKeys) -> CallChecker {
        self.admin = Some(admin);
        self
    }

    /// Also accepts calls signed with `peer` (data server to data server),
    /// marked [`Verified::by_peer`]; a connection keeps the kind of its
    /// first call.
    pub fn with_peer_keys(mut self, peer: ControlKeys) -> CallChecker {
        self.peer_keys = Some(peer);
        self
    }

    pub fn keys(&self) -> &ControlKeys {
        &self.keys
    }

    /// The keys that seal the reply to `v`.
    pub fn reply_keys(&self, v: &Verified) -> &ControlKeys {
        match (&self.peer_keys, v.by_peer) {
            (Some(p), true) => p,
            _ => &self.keys,
        }
    }

    /// Checks one call record's credential (the rest of the header is the
    /// caller's to check). Err(None): not even an xid (close the connection).
    pub fn check(&mut self, record: &[u8], now_ms: u64, recent: &RecentConnections) -> Result<Verified, Option<Denied>> {
        let mut d = Decoder::new(record);
        let xid = d.get_u32().map_err(|_| None)?;
        let deny = |stat, why| Some(Denied { xid, stat, why });
        let garbage = |_| deny(AuthStat::BadCred, "malformed call header");
        let words: Vec<u32> = (0..5).map(|_| d.get_u32()).collect::<Result<_, _>>().map_err(garbage)?;
        let (mtype, prog, vers, proc_) = (words[0], words[2], words[3], words[4]);
        if mtype != MSG_CALL {
            return Err(deny(AuthStat::BadCred, "not a call"));
        }
        let flavor = d.get_u32().map_err(garbage)?;
        let cred = d.get_opaque(MAX_AUTH_BYTES).map_err(garbage)?;
        let verf_flavor = d.get_u32().map_err(garbage)?;
        let verf = d.get_opaque(MAX_AUTH_BYTES).map_err(garbage)?;
        if verf_flavor != AUTH_NONE || !verf.is_empty() {
            return Err(deny(AuthStat::BadVerf, "control calls carry an empty AUTH_NONE verifier"));
        }
        let args = d.rest();
        if flavor != AUTH_PNFS_CTL {
            return Err(deny(AuthStat::TooWeak, "call without the control credential"));
        }
        if cred.len() != CRED_LEN {
            return Err(deny(AuthStat::BadCred, "control credential of the wrong size"));
        }
        // The program is covered by the tag, so a call cannot pick its keys.
        let (keys, admin) = match &self.admin {
            Some(k) if prog == crate::wire::PNFSCTL_ADMIN_PROGRAM => (k, true),
            _ => (&self.keys, false),
        };
        let h = head(xid, prog, vers, proc_);
        let tag = call_tag(keys, &h, &cred[..40], args);
        // Peer keys never open the admin program.
        let by_peer = if crate::seal::constant_time_eq(&tag, &cred[40..]) {
            false
        } else {
            match &self.peer_keys {
                Some(p) if !admin && crate::seal::constant_time_eq(&call_tag(p, &h, &cred[..40], args), &cred[40..]) => true,
                _ => return Err(deny(AuthStat::BadCred, "control call tag does not check (wrong cluster key, or forged)")),
            }
        };
        let conn: [u8; CONN_ID_LEN] = cred[..16].try_into().expect("16 bytes");
        let seq = u64::from_be_bytes(cred[16..24].try_into().expect("8 bytes"));
        let sent_ms = u64::from_be_bytes(cred[24..32].try_into().expect("8 bytes"));
        let epoch = u64::from_be_bytes(cred[32..40].try_into().expect("8 bytes"));
        match self.conn {
            None => {
                if sent_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
                    return Err(deny(AuthStat::RejectedCred, "control call clock too far from ours (sync the clocks)"));
                }
                if !recent.first_use(conn, now_ms) {
                    return Err(deny(AuthStat::RejectedCred, "control connection id seen before (a replay)"));
                }
                self.conn = Some(conn);
            }
            Some(c) if c == conn && seq > self.last_seq && by_peer == self.peer_conn => {}
            Some(_) => return Err(deny(AuthStat::RejectedCred, "control call out of sequence (a replay)")),
        }
        self.last_seq = seq;
        self.peer_conn = by_peer;
        Ok(Verified { xid, proc_, admin, epoch, by_peer, conn, seq })
    }
}

/// Bytes before the result in an accepted reply with our verifier.
const SEALED_REPLY_HEAD: usize = 4 * 5 + TAG_LEN;

impl Verified {
    /// Starts an accepted SUCCESS reply whose verifier [`Verified::seal_reply`]
    /// fills in once the results are appended.
    pub fn begin_reply(&self, e: &mut Encoder) {
        e.put_u32(self.xid);
        e.put_u32(MSG_REPLY);
        e.put_u32(0); // MSG_ACCEPTED
        e.put_u32(AUTH_PNFS_CTL);
        e.put_u32(TAG_LEN as u32);
        e.buf.extend_from_slice(&[0u8; TAG_LEN]);
        e.put_u32(0); // SUCCESS
    }

    /// Writes the reply tag into a reply started by [`Verified::begin_reply`].
    pub fn seal_reply(&self, keys: &ControlKeys, reply: &mut [u8]) {
        assert!(reply.len() >= SEALED_REPLY_HEAD + 4, "a reply started by begin_reply");
        let tag = reply_tag(keys, &self.conn, self.seq, self.xid, &reply[SEALED_REPLY_HEAD..]);
        reply[SEALED_REPLY_HEAD - TAG_LEN..SEALED_REPLY_HEAD].copy_from_slice(&tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ControlKeys {
        ControlKeys::new(&ClusterKey::from_bytes([7; 32]))
    }

    fn call(s: &mut CallSigner, xid: u32, args: &[u8], now: u64) -> (Vec<u8>, SentCall) {
        let mut e = Encoder::new();
        let sent = s.encode_call(&mut e, xid, 0x2000_5047, 1, 3, args, now);
        (e.into_inner(), sent)
    }

    fn answer(c: &mut CallChecker, rec: &[u8], now: u64, recent: &RecentConnections) -> Result<Vec<u8>, Option<Denied>> {
        let v = c.check(rec, now, recent)?;
        let mut e = Encoder::new();
        v.begin_reply(&mut e);
        e.put_u32(42);
        let mut r = e.into_inner();
        v.seal_reply(c.keys(), &mut r);
        Ok(r)
    }

    #[test]
    fn calls_and_replies_round_trip() {
        let now = 1_000_000_000;
        let recent = RecentConnections::default();
        let mut s = CallSigner::new(keys(), 9);
        let mut c = CallChecker::new(keys());
        let (first, first_sent) = call(&mut s, 1, b"args", now);
        assert_eq!(c.check(&first, now, &recent).unwrap().epoch, 9);
        let (rec, sent) = call(&mut s, 2, b"a", now);
        let r = answer(&mut c, &rec, now, &recent).unwrap();
        assert_eq!(s.open_reply(sent, &r).unwrap(), &42u32.to_be_bytes());
        // A reply goes with its own call, not an earlier one.
        assert_eq!(s.open_reply(first_sent, &r).unwrap_err(), ReplyError::OtherXid);
    }

    #[test]
    fn forged_altered_replayed_and_stale_calls_are_refused() {
        let now = 1_000_000_000;
        let recent = RecentConnections::default();
        let mut s = CallSigner::new(keys(), 1);
        let (rec, sent) = call(&mut s, 1, b"args", now);
        // Any altered byte (header, credential, arguments) breaks the tag.
        for i in (0..rec.len()).filter(|i| !(8..12).contains(i)) {
            // (bytes 8..12, the RPC version, are the caller's to check)
            let mut bad = rec.clone();
            bad[i] ^= 1;
            assert!(CallChecker::new(keys()).check(&bad, now, &recent).is_err(), "byte {i}");
        }
        // Another cluster's key.
        let other = ControlKeys::new(&ClusterKey::from_bytes([8; 32]));
        let e = CallChecker::new(other).check(&rec, now, &recent).unwrap_err().unwrap();
        assert_eq!(e.stat, AuthStat::BadCred);
        // AUTH_NONE / AUTH_SYS calls: too weak.
        let mut plain = Encoder::new();
        crate::rpc::begin_call(&mut plain, 3, 1, 1, 1, true);
        let e = CallChecker::new(keys()).check(&plain.into_inner(), now, &recent).unwrap_err().unwrap();
        assert_eq!(e.stat, AuthStat::TooWeak);
        // A clock far off on the first call.
        let (far, _) = call(&mut CallSigner::new(keys(), 1), 1, b"a", now - MAX_CLOCK_SKEW_MS - 1);
        assert_eq!(CallChecker::new(keys()).check(&far, now, &recent).unwrap_err().unwrap().stat, AuthStat::RejectedCred);

        let mut c = CallChecker::new(keys());
        let r = answer(&mut c, &rec, now, &recent).unwrap();
        assert!(s.open_reply(sent, &r).is_ok());
        // The same call again on this connection, or a whole new connection
        // replaying it: refused.
        assert!(c.check(&rec, now, &recent).is_err());
        assert!(CallChecker::new(keys()).check(&rec, now, &recent).is_err());
        // Later calls on the connection still work; out of order they don't.
        let (r2, _) = call(&mut s, 2, b"b", now);
        let (r3, _) = call(&mut s, 3, b"c", now);
        c.check(&r3, now, &recent).unwrap();
        assert!(c.check(&r2, now, &recent).is_err());
        // A reply altered in any byte, or sealed for another call, is forged.
        let (r4, sent4) = call(&mut s, 4, b"d", now);
        let good = answer(&mut c, &r4, now, &recent).unwrap();
        for i in 8..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert!(s.open_reply(sent4, &bad).is_err(), "reply byte {i}");
        }
        let mut unsealed = good.clone();
        unsealed[12..16].copy_from_slice(&AUTH_NONE.to_be_bytes());
        assert_eq!(s.open_reply(sent4, &unsealed).unwrap_err(), ReplyError::Forged);
    }

    #[test]
    fn admin_calls_need_the_admin_keys_and_control_calls_the_control_keys() {
        let now = 1_000_000_000;
        let recent = RecentConnections::default();
        let cluster = ClusterKey::from_bytes([7; 32]);
        let listener = || CallChecker::new(keys()).with_admin(ControlKeys::admin(&cluster));
        let admin_call = |k: ControlKeys, prog: u32| {
            let mut e = Encoder::new();
            let sent = CallSigner::new(k, 0).encode_call(&mut e, 5, prog, 1, 1, b"x", now);
            (e.into_inner(), sent)
        };
        let admin_prog = crate::wire::PNFSCTL_ADMIN_PROGRAM;
        // pnfsctl with the cluster key file: accepted, marked admin, and the
        // reply sealed with the admin keys checks out.
        let mut pnfsctl = CallSigner::new(ControlKeys::admin(&cluster), 0);
        let mut e = Encoder::new();
        let sent = pnfsctl.encode_call(&mut e, 5, admin_prog, 1, 1, b"x", now);
        let v = listener().check(&e.into_inner(), now, &recent).unwrap();
        assert!(v.admin);
        let mut e = Encoder::new();
        v.begin_reply(&mut e);
        let mut r = e.into_inner();
        v.seal_reply(&ControlKeys::admin(&cluster), &mut r);
        assert!(pnfsctl.open_reply(sent, &r).is_ok());
        // An admin call tagged with the data servers' control keys, or with
        // another cluster's admin keys: refused.
        let (rec, _) = admin_call(keys(), admin_prog);
        assert_eq!(listener().check(&rec, now, &recent).unwrap_err().unwrap().stat, AuthStat::BadCred);
        let (rec, _) = admin_call(ControlKeys::admin(&ClusterKey::from_bytes([8; 32])), admin_prog);
        assert_eq!(listener().check(&rec, now, &recent).unwrap_err().unwrap().stat, AuthStat::BadCred);
        // Admin keys do not make a control-program call, nor work where the
        // admin program is not served.
        let (rec, _) = admin_call(ControlKeys::admin(&cluster), crate::wire::PNFSCTL_MDS_PROGRAM);
        assert!(listener().check(&rec, now, &recent).is_err());
        let (rec, _) = admin_call(ControlKeys::admin(&cluster), admin_prog);
        assert!(CallChecker::new(keys()).check(&rec, now, &recent).is_err());
        // Control calls on the same listener are still control calls.
        let (rec, _) = admin_call(keys(), crate::wire::PNFSCTL_MDS_PROGRAM);
        assert!(!listener().check(&rec, now, &recent).unwrap().admin);
    }

    #[test]
    fn recent_connection_table_is_bounded() {
        let recent = RecentConnections::new(2);
        assert!(recent.first_use([1; 16], 0));
        assert!(recent.first_use([2; 16], 0));
        assert!(!recent.first_use([3; 16], 1));
        // Once the first ones left the window, room again.
        assert!(recent.first_use([3; 16], 2 * MAX_CLOCK_SKEW_MS + 1));
        assert!(!recent.first_use([3; 16], 2 * MAX_CLOCK_SKEW_MS + 1));
    }

    #[test]
    fn peer_keys_are_accepted_only_where_offered_and_marked() {
        let now = 1_000_000_000;
        let recent = RecentConnections::default();
        let cluster = ClusterKey::from_bytes([7; 32]);
        let peer = ControlKeys::for_ds_peers(&cluster);
        // A peer-signed call: refused by a plain checker, marked by_peer by one that offers peer keys.
        let mut ps = CallSigner::new(peer.clone(), 0);
        let (rec, sent) = call(&mut ps, 1, b"x", now);
        assert_eq!(CallChecker::new(keys()).check(&rec, now, &recent).unwrap_err().unwrap().stat, AuthStat::BadCred);
        let mut c = CallChecker::new(keys()).with_peer_keys(peer.clone());
        let v = c.check(&rec, now, &recent).unwrap();
        assert!(v.by_peer);
        // Its reply is sealed with the peer reply key.
        let mut e = Encoder::new();
        v.begin_reply(&mut e);
        e.put_u32(5);
        let mut r = e.into_inner();
        v.seal_reply(c.reply_keys(&v), &mut r);
        assert!(ps.open_reply(sent, &r).is_ok());
        // The MDS's calls on such a checker are not by_peer.
        let mut ms = CallSigner::new(keys(), 3);
        let (m, _) = call(&mut ms, 1, b"y", now);
        let mut c2 = CallChecker::new(keys()).with_peer_keys(peer.clone());
        assert!(!c2.check(&m, now, &recent).unwrap().by_peer);
        // A connection does not change kind: a peer call cannot follow on
        // an MDS connection's id (the peer key cannot sign the MDS's).
        let mut forged = CallSigner::new(peer, 0);
        forged.conn = ms.conn;
        forged.seq = 5;
        let (f, _) = call(&mut forged, 2, b"z", now);
        assert_eq!(c2.check(&f, now, &recent).unwrap_err().unwrap().stat, AuthStat::RejectedCred);
    }
}

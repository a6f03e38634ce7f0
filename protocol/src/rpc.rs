//! ONC RPC v2 message framing helpers (RFC 5531): parse a call header, build
//! reply headers, parse replies to our own calls (NFSv4.1 backchannel).

use crate::wire::authsys_parms;
use crate::xdr::{Decoder, Encoder, Opaque, XdrDecode, XdrError};

pub const RPC_VERSION: u32 = 2;
pub const MSG_CALL: u32 = 0;
pub const MSG_REPLY: u32 = 1;
pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;
/// RFC 5531: opaque_auth bodies are at most 400 bytes.
pub const MAX_AUTH_BYTES: u32 = 400;

pub const NFS4_PROGRAM: u32 = 100003;
pub const NFS_V4: u32 = 4;
pub const PROC_NULL: u32 = 0;
pub const PROC_COMPOUND: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AcceptStat {
    Success = 0,
    ProgUnavail = 1,
    ProgMismatch = 2,
    ProcUnavail = 3,
    GarbageArgs = 4,
    SystemErr = 5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AuthStat {
    Ok = 0,
    BadCred = 1,
    RejectedCred = 2,
    BadVerf = 3,
    RejectedVerf = 4,
    TooWeak = 5,
}

/// Caller identity from the RPC credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    Sys { uid: u32, gid: u32, gids: Vec<u32>, machine: Vec<u8> },
    /// A flavor we do not implement (e.g. RPCSEC_GSS): answered with AUTH_ERROR.
    Unsupported(u32),
}

#[derive(Debug)]
pub struct CallHeader {
    pub xid: u32,
    pub rpcvers: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub cred: Credential,
}

#[derive(Debug)]
pub enum Message<'a> {
    /// A call; `args` are the procedure arguments that follow the header.
    Call { header: CallHeader, args: &'a [u8] },
    /// A reply to a call we made (backchannel); `body` is what follows the
    /// accept status, present only when the call was accepted with SUCCESS.
    Reply { xid: u32, accepted: Option<u32>, body: &'a [u8] },
}

#[derive(Debug, PartialEq, Eq)]
pub enum RpcError {
    /// Not even an xid: nothing can be answered; drop the connection.
    Unreadable,
    /// The header is broken after the xid: reply GARBAGE_ARGS to `xid`.
    Garbage { xid: u32 },
}

fn opaque_auth<'a>(d: &mut Decoder<'a>) -> Result<(u32, Opaque<'a>), XdrError> {
    let flavor = d.get_u32()?;
    let body = d.get_opaque(MAX_AUTH_BYTES)?;
    Ok((flavor, body))
}

/// Parses one RPC record.
pub fn parse_message(record: &[u8]) -> Result<Message<'_>, RpcError> {
    let mut d = Decoder::new(record);
    let xid = d.get_u32().map_err(|_| RpcError::Unreadable)?;
    let garbage = |_| RpcError::Garbage { xid };
    let mtype = d.get_u32().map_err(garbage)?;
    match mtype {
        MSG_CALL => {
            let rpcvers = d.get_u32().map_err(garbage)?;
            let prog = d.get_u32().map_err(garbage)?;
            let vers = d.get_u32().map_err(garbage)?;
            let proc_ = d.get_u32().map_err(garbage)?;
            let (flavor, body) = opaque_auth(&mut d).map_err(garbage)?;
            let _verf = opaque_auth(&mut d).map_err(garbage)?;
            let cred = match flavor {
                AUTH_NONE => Credential::None,
                AUTH_SYS => {
                    let mut cd = Decoder::new(&body);
                    let p = authsys_parms::decode(&mut cd).map_err(garbage)?;
                    Credential::Sys { uid: p.uid, gid: p.gid, gids: p.gids.clone(), machine: p.machinename.to_vec() }
                }
                other => Credential::Unsupported(other),
            };
            Ok(Message::Call { header: CallHeader { xid, rpcvers, prog, vers, proc_, cred }, args: d.rest() })
        }
        MSG_REPLY => {
            let reply_stat = d.get_u32().map_err(garbage)?;
            if reply_stat != 0 {
                return Ok(Message::Reply { xid, accepted: None, body: &[] });
            }
            let _verf = opaque_auth(&mut d).map_err(garbage)?;
            let stat = d.get_u32().map_err(garbage)?;
            Ok(Message::Reply { xid, accepted: Some(stat), body: d.rest() })
        }
        _ => Err(RpcError::Garbage { xid }),
    }
}

impl Credential {
    /// The flavor the call carried.
    pub fn flavor(&self) -> u32 {
        match self {
            Credential::None => AUTH_NONE,
            Credential::Sys { .. } => AUTH_SYS,
            Credential::Unsupported(f) => *f,
        }
    }
}

/// What one listener serves: the call-header check every listener runs
/// (NFS on MDS and DS, the control programs on both), with one credential
/// policy: a flavor outside `flavors` is AUTH_ERROR / AUTH_BADCRED. Checks
/// run in RFC 5531 order: RPC version, program, version, credential,
/// procedure. (The control listeners verify their sealed credential before
/// this, in `control_auth`.)
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy {
    pub prog: u32,
    pub vers: u32,
    /// Procedures served; any other is PROC_UNAVAIL.
    pub procs: &'static [u32],
    /// Credential flavors accepted.
    pub flavors: &'static [u32],
}

/// The NFSv4 program: NULL and COMPOUND, AUTH_NONE or AUTH_SYS.
pub const NFS4_CALLS: CallPolicy =
    CallPolicy { prog: NFS4_PROGRAM, vers: NFS_V4, procs: &[PROC_NULL, PROC_COMPOUND], flavors: &[AUTH_NONE, AUTH_SYS] };

/// One record checked against a [`CallPolicy`].
#[derive(Debug)]
pub enum Checked<'a> {
    /// A call the listener serves (program, version, procedure, flavor all
    /// accepted).
    Call { header: CallHeader, args: &'a [u8] },
    /// A reply to one of our own calls (a back channel).
    Reply { xid: u32, accepted: Option<u32>, body: &'a [u8] },
    /// Refused: send this reply (RPC_MISMATCH, PROG_UNAVAIL, PROG_MISMATCH,
    /// AUTH_ERROR, PROC_UNAVAIL or GARBAGE_ARGS).
    Refused(Vec<u8>),
    /// Not even an xid: nothing to answer.
    Unreadable,
}

impl CallPolicy {
    /// Parses `record` and checks its call header against this policy.
    pub fn check<'a>(&self, record: &'a [u8]) -> Checked<'a> {
        let (header, args) = match parse_message(record) {
            Ok(Message::Call { header, args }) => (header, args),
            Ok(Message::Reply { xid, accepted, body }) => return Checked::Reply { xid, accepted, body },
            Err(RpcError::Unreadable) => return Checked::Unreadable,
            Err(RpcError::Garbage { xid }) => return Checked::Refused(accepted_reply(xid, AcceptStat::GarbageArgs)),
        };
        let xid = header.xid;
        if header.rpcvers != RPC_VERSION {
            return Checked::Refused(rpc_mismatch_reply(xid));
        }
        if header.prog != self.prog {
            return Checked::Refused(accepted_reply(xid, AcceptStat::ProgUnavail));
        }
        if header.vers != self.vers {
            return Checked::Refused(prog_mismatch_reply(xid, self.vers, self.vers));
        }
        if !self.flavors.contains(&header.cred.flavor()) {
            return Checked::Refused(auth_error_reply(xid, AuthStat::BadCred));
        }
        if !self.procs.contains(&header.proc_) {
            return Checked::Refused(accepted_reply(xid, AcceptStat::ProcUnavail));
        }
        Checked::Call { header, args }
    }
}

/// Starts an accepted reply (AUTH_NONE verifier); results are appended by the caller.
pub fn begin_accepted_reply(e: &mut Encoder, xid: u32, stat: AcceptStat) {
    e.put_u32(xid);
    e.put_u32(MSG_REPLY);
    e.put_u32(0); // MSG_ACCEPTED
    e.put_u32(AUTH_NONE);
    e.put_u32(0);
    e.put_u32(stat as u32);
}

/// PROG_MISMATCH reply with the supported version range.
pub fn prog_mismatch_reply(xid: u32, low: u32, high: u32) -> Vec<u8> {
    let mut e = Encoder::new();
    begin_accepted_reply(&mut e, xid, AcceptStat::ProgMismatch);
    e.put_u32(low);
    e.put_u32(high);
    e.into_inner()
}

/// SYSTEM_ERR for a call whose handling failed internally (a caught panic);
/// None when `record` is not a call.
pub fn system_err_reply(record: &[u8]) -> Option<Vec<u8>> {
    match parse_message(record) {
        Ok(Message::Call { header, .. }) => Some(accepted_reply(header.xid, AcceptStat::SystemErr)),
        _ => None,
    }
}

pub fn accepted_reply(xid: u32, stat: AcceptStat) -> Vec<u8> {
    let mut e = Encoder::new();
    begin_accepted_reply(&mut e, xid, stat);
    e.into_inner()
}

/// MSG_DENIED / AUTH_ERROR reply.
pub fn auth_error_reply(xid: u32, why: AuthStat) -> Vec<u8> {
    let mut e = Encoder::new();
    e.put_u32(xid);
    e.put_u32(MSG_REPLY);
    e.put_u32(1); // MSG_DENIED
    e.put_u32(1); // AUTH_ERROR
    e.put_u32(why as u32);
    e.into_inner()
}

/// MSG_DENIED / RPC_MISMATCH reply.
pub fn rpc_mismatch_reply(xid: u32) -> Vec<u8> {
    let mut e = Encoder::new();
    e.put_u32(xid);
    e.put_u32(MSG_REPLY);
    e.put_u32(1); // MSG_DENIED
    e.put_u32(0); // RPC_MISMATCH
    e.put_u32(RPC_VERSION);
    e.put_u32(RPC_VERSION);
    e.into_inner()
}

/// The words of a call before its credential: xid, CALL, RPC version,
/// program, version, procedure.
pub fn put_call_head(e: &mut Encoder, xid: u32, prog: u32, vers: u32, proc_: u32) {
    for w in [xid, MSG_CALL, RPC_VERSION, prog, vers, proc_] {
        e.put_u32(w);
    }
}

/// Starts a call (used for backchannel CB_COMPOUND) with AUTH_NONE or AUTH_SYS root credentials.
pub fn begin_call(e: &mut Encoder, xid: u32, prog: u32, vers: u32, proc_: u32, auth_sys_root: bool) {
    put_call_head(e, xid, prog, vers, proc_);
    if auth_sys_root {
        e.put_u32(AUTH_SYS);
        let mut body = Encoder::new();
        body.put_u32(0); // stamp
        body.put_opaque(b"pnfsd", 255).expect("short");
        body.put_u32(0);
        body.put_u32(0);
        body.put_u32(0);
        e.put_opaque(&body.into_inner(), MAX_AUTH_BYTES).expect("short");
    } else {
        e.put_u32(AUTH_NONE);
        e.put_u32(0);
    }
    e.put_u32(AUTH_NONE);
    e.put_u32(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_roundtrip_with_auth_sys() {
        let mut e = Encoder::new();
        begin_call(&mut e, 7, NFS4_PROGRAM, NFS_V4, PROC_COMPOUND, true);
        e.put_u32(0xabcd);
        let bytes = e.into_inner();
        match parse_message(&bytes).unwrap() {
            Message::Call { header, args } => {
                assert_eq!(header.xid, 7);
                assert_eq!(header.prog, NFS4_PROGRAM);
                assert_eq!(header.proc_, PROC_COMPOUND);
                assert!(matches!(header.cred, Credential::Sys { uid: 0, gid: 0, .. }));
                assert_eq!(args, &[0, 0, 0xab, 0xcd]);
            }
            m => panic!("{m:?}"),
        }
    }

    /// Each refusal of the one call-header check, in RFC 5531 order.
    #[test]
    fn call_policy_refuses_what_the_listener_does_not_serve() {
        let call = |rpcvers: u32, prog: u32, vers: u32, proc_: u32, flavor: u32| {
            let mut e = Encoder::new();
            for w in [5, MSG_CALL, rpcvers, prog, vers, proc_, flavor, 0, AUTH_NONE, 0] {
                e.put_u32(w);
            }
            e.into_inner()
        };
        let refused = |rec: &[u8]| match NFS4_CALLS.check(rec) {
            Checked::Refused(r) => r,
            other => panic!("not refused: {other:?}"),
        };
        let ok = call(RPC_VERSION, NFS4_PROGRAM, NFS_V4, PROC_COMPOUND, AUTH_NONE);
        assert!(matches!(NFS4_CALLS.check(&ok), Checked::Call { .. }));
        assert_eq!(refused(&call(3, NFS4_PROGRAM, NFS_V4, PROC_COMPOUND, AUTH_NONE)), rpc_mismatch_reply(5));
        assert_eq!(refused(&call(RPC_VERSION, 100005, NFS_V4, PROC_COMPOUND, AUTH_NONE)), accepted_reply(5, AcceptStat::ProgUnavail));
        assert_eq!(refused(&call(RPC_VERSION, NFS4_PROGRAM, 3, PROC_COMPOUND, AUTH_NONE)), prog_mismatch_reply(5, NFS_V4, NFS_V4));
        // RPCSEC_GSS (6) is not a flavor this listener accepts.
        assert_eq!(refused(&call(RPC_VERSION, NFS4_PROGRAM, NFS_V4, PROC_COMPOUND, 6)), auth_error_reply(5, AuthStat::BadCred));
        assert_eq!(refused(&call(RPC_VERSION, NFS4_PROGRAM, NFS_V4, 2, AUTH_NONE)), accepted_reply(5, AcceptStat::ProcUnavail));
        assert_eq!(refused(&ok[..10]), accepted_reply(5, AcceptStat::GarbageArgs));
        assert!(matches!(NFS4_CALLS.check(&ok[..3]), Checked::Unreadable));
        // The control programs' own flavor passes only where a policy names it.
        let ctl = CallPolicy { prog: 7, vers: 1, procs: &[0, 1], flavors: &[0x7066_6331] };
        assert!(matches!(ctl.check(&call(RPC_VERSION, 7, 1, 1, 0x7066_6331)), Checked::Call { .. }));
        assert!(matches!(ctl.check(&call(RPC_VERSION, 7, 1, 1, AUTH_SYS)), Checked::Refused(_)));
    }

    #[test]
    fn truncated_header_is_garbage_not_panic() {
        let mut e = Encoder::new();
        begin_call(&mut e, 9, NFS4_PROGRAM, NFS_V4, PROC_COMPOUND, true);
        let bytes = e.into_inner();
        for cut in 0..bytes.len() {
            let r = parse_message(&bytes[..cut]);
            if cut < 4 {
                assert_eq!(r.unwrap_err(), RpcError::Unreadable);
            } else {
                assert_eq!(r.unwrap_err(), RpcError::Garbage { xid: 9 });
            }
        }
    }
}

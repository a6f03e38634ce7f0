//! NFSv4.1 session machinery shared by the MDS and the data servers
//! (RFC 8881 2.10.6, 18.36, 18.46): channel attribute negotiation, the
//! CREATE_SESSION argument rules, and the fore-channel slot table with its
//! reply cache. Pure protocol state: no I/O, no storage.

use crate::wire::{channel_attrs4, nfs_opnum4, nfsstat4, CREATE_SESSION4args};
use std::sync::Arc;

pub const CREATE_SESSION4_FLAG_PERSIST: u32 = 0x1;
pub const CREATE_SESSION4_FLAG_CONN_BACK_CHAN: u32 = 0x2;
pub const CREATE_SESSION4_FLAG_CONN_RDMA: u32 = 0x4;

/// Replies up to this size are kept even without sa_cachethis: cheap, and a
/// retransmission is then answered exactly.
pub const ALWAYS_CACHE_BYTES: usize = 4096;

// EXCHANGE_ID flags (RFC 8881 18.35, RFC 7862 15.1).
pub const EXCHGID4_FLAG_SUPP_MOVED_REFER: u32 = 0x1;
pub const EXCHGID4_FLAG_SUPP_MOVED_MIGR: u32 = 0x2;
pub const EXCHGID4_FLAG_SUPP_FENCE_OPS: u32 = 0x4;
pub const EXCHGID4_FLAG_BIND_PRINC_STATEID: u32 = 0x100;
pub const EXCHGID4_FLAG_USE_NON_PNFS: u32 = 0x10000;
pub const EXCHGID4_FLAG_USE_PNFS_MDS: u32 = 0x20000;
pub const EXCHGID4_FLAG_USE_PNFS_DS: u32 = 0x40000;
pub const EXCHGID4_FLAG_UPD_CONFIRMED_REC_A: u32 = 0x4000_0000;
pub const EXCHGID4_FLAG_CONFIRMED_R: u32 = 0x8000_0000;
/// Flags a client may send. SUPP_FENCE_OPS is the server's to set.
const CLIENT_FLAGS: u32 = EXCHGID4_FLAG_SUPP_MOVED_REFER
    | EXCHGID4_FLAG_SUPP_MOVED_MIGR
    | EXCHGID4_FLAG_BIND_PRINC_STATEID
    | EXCHGID4_FLAG_USE_NON_PNFS
    | EXCHGID4_FLAG_USE_PNFS_MDS
    | EXCHGID4_FLAG_USE_PNFS_DS
    | EXCHGID4_FLAG_UPD_CONFIRMED_REC_A;

/// AUTH_SYS uid/gid that created a client ID; None for AUTH_NONE.
pub type Principal = Option<(u32, u32)>;

pub fn principal_of(cred: &crate::rpc::Credential) -> Principal {
    match cred {
        crate::rpc::Credential::Sys { uid, gid, .. } => Some((*uid, *gid)),
        _ => None,
    }
}

/// A client record of the same owner, as EXCHANGE_ID needs to see it.
#[derive(Debug, Clone)]
pub struct KnownClient {
    pub clientid: u64,
    pub confirmed: bool,
    pub verifier: [u8; 8],
    pub principal: Principal,
    /// Holds sessions or state: another principal may not take it over.
    pub busy: bool,
}

/// What EXCHANGE_ID does with the client table.
#[derive(Debug, PartialEq, Eq)]
pub enum ExchangeIdPlan {
    /// Answer with this existing client ID (CONFIRMED_R when confirmed).
    Reuse { clientid: u64, confirmed: bool },
    /// Purge these records, then create a new unconfirmed client ID. (A
    /// confirmed record of a rebooted client stays until the new one is
    /// confirmed by CREATE_SESSION.)
    Create { purge: Vec<u64> },
}

/// EXCHANGE_ID's rules (RFC 8881 18.35.4-5) over the records of one owner.
pub fn plan_exchange_id(
    a: &crate::wire::EXCHANGE_ID4args,
    principal: Principal,
    known: &[KnownClient],
) -> Result<ExchangeIdPlan, nfsstat4> {
    use crate::wire::state_protect4_a;
    if a.eia_flags & !CLIENT_FLAGS != 0 {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    match a.eia_state_protect {
        state_protect4_a::SP4_NONE => {}
        // Machine credentials need RPCSEC_GSS, which we do not offer.
        state_protect4_a::SP4_MACH_CRED(_) => return Err(nfsstat4::NFS4ERR_INVAL),
        state_protect4_a::SP4_SSV(_) => return Err(nfsstat4::NFS4ERR_ENCR_ALG_UNSUPP),
    }
    let verifier = a.eia_clientowner.co_verifier;
    let confirmed = known.iter().find(|k| k.confirmed);
    if a.eia_flags & EXCHGID4_FLAG_UPD_CONFIRMED_REC_A != 0 {
        return match confirmed {
            Some(k) if k.principal != principal => Err(nfsstat4::NFS4ERR_PERM),
            Some(k) if k.verifier == verifier => Ok(ExchangeIdPlan::Reuse { clientid: k.clientid, confirmed: true }),
            Some(_) => Err(nfsstat4::NFS4ERR_NOT_SAME),
            None => Err(nfsstat4::NFS4ERR_NOENT),
        };
    }
    let mut purge: Vec<u64> = known.iter().filter(|k| !k.confirmed).map(|k| k.clientid).collect();
    match confirmed {
        // Another principal claiming a confirmed owner: only when that
        // client holds nothing (case 3); its record goes.
        Some(k) if k.principal != principal => {
            if k.busy {
                return Err(nfsstat4::NFS4ERR_CLID_INUSE);
            }
            purge.push(k.clientid);
        }
        // The same client instance: same client ID.
        Some(k) if k.verifier == verifier => return Ok(ExchangeIdPlan::Reuse { clientid: k.clientid, confirmed: true }),
        _ => {}
    }
    Ok(ExchangeIdPlan::Create { purge })
}

/// The tag of a client owner (`co_ownerid`) that an MDS client ID carries
/// in its high 32 bits, so that a data server, told by the MDS which client
/// ID holds a stateid, can check that the DS client presenting it is that
/// client: the Linux client (like `pnfs-client`) uses one owner string with
/// the MDS and its data servers. A public function, not a secret: it binds
/// a stateid to an owner; it does not authenticate. Never 0 (a DS reads 0
/// as "allowed without naming a client").
pub fn owner_tag(owner: &[u8]) -> u32 {
    (siphash24(0x706e_6673_2d6f_776e, 0x6572_2d74_6167_2d31, owner) as u32).max(1)
}

/// The owner tag an MDS client ID carries ([`owner_tag`]); 0 for none.
pub fn clientid_owner_tag(clientid: u64) -> u32 {
    (clientid >> 32) as u32
}

/// Mints unpredictable identifiers (client IDs, session IDs, stateid
/// `other`s): SipHash-2-4, under a key drawn from the kernel at start, of a
/// counter. Someone who saw any number of them cannot tell the next one nor
/// a neighbour (RFC 8881 2.10.3 wants client IDs, session IDs and stateids
/// hard to guess); a counter per minter keeps the cost to one hash.
/// Outputs may collide like random numbers would: callers that need
/// uniqueness skip values their tables already hold.
#[derive(Debug)]
pub struct IdMinter {
    k0: u64,
    k1: u64,
    next: u64,
}

impl IdMinter {
    /// A minter keyed by the kernel's random source.
    pub fn new() -> IdMinter {
        let mut k = [0u8; 16];
        // getrandom(2) only fails before the kernel's pool is seeded on very
        // old kernels or with a broken seccomp policy: ids would be guessable,
        // which is worse than not starting.
        getrandom::fill(&mut k).expect("the kernel's random source (getrandom) is needed for unguessable ids");
        IdMinter::with_key(k)
    }

    /// A minter with a given key (tests).
    pub fn with_key(k: [u8; 16]) -> IdMinter {
        IdMinter {
            k0: u64::from_le_bytes(k[..8].try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(k[8..].try_into().expect("8 bytes")),
            next: 0,
        }
    }

    /// The next 64 unpredictable bits.
    pub fn next_u64(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        siphash24(self.k0, self.k1, &self.next.to_le_bytes())
    }

    /// The next 16 unpredictable bytes (a session ID).
    pub fn next_16(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        id
    }
}

impl Default for IdMinter {
    fn default() -> Self {
        IdMinter::new()
    }
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed pseudo-random
/// function with a 128-bit key and a 64-bit output.
pub fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut v = [k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d, k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |v: &mut [u64; 4], m: u64| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        compress(&mut v, u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    last[7] = msg.len() as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    pub max_request: u32,
    pub max_response: u32,
    pub max_response_cached: u32,
    pub max_ops: u32,
    pub max_requests: u32,
}

impl ChannelLimits {
    pub fn to_attrs(&self) -> channel_attrs4 {
        channel_attrs4 {
            ca_headerpadsize: 0,
            ca_maxrequestsize: self.max_request,
            ca_maxresponsesize: self.max_response,
            ca_maxresponsesize_cached: self.max_response_cached,
            ca_maxoperations: self.max_ops,
            ca_maxrequests: self.max_requests,
            ca_rdma_ird: vec![],
        }
    }
}

/// What a server offers on the fore channel.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_record: u32,
    pub max_ops: u32,
    pub slots: u32,
}

/// Checks CREATE_SESSION's flags and channel attributes and returns the
/// negotiated (fore, back) limits. The back channel echoes what the client
/// offered (Linux checks every value); the fore channel never offers fewer
/// operations than asked (Linux refuses that) nor more slots than `slots`.
pub fn negotiate(a: &CREATE_SESSION4args, ours: ServerLimits) -> Result<(ChannelLimits, ChannelLimits), nfsstat4> {
    let known = CREATE_SESSION4_FLAG_PERSIST | CREATE_SESSION4_FLAG_CONN_BACK_CHAN | CREATE_SESSION4_FLAG_CONN_RDMA;
    if a.csa_flags & !known != 0 {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    let fa = &a.csa_fore_chan_attrs;
    if fa.ca_maxrequests == 0 || fa.ca_maxoperations == 0 {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    // A session must at least carry a small COMPOUND with SEQUENCE.
    if fa.ca_maxrequestsize < 256 || fa.ca_maxresponsesize < 256 {
        return Err(nfsstat4::NFS4ERR_TOOSMALL);
    }
    let ba = &a.csa_back_chan_attrs;
    // The back channel must fit a CB_SEQUENCE + CB_RECALL-sized call.
    if ba.ca_maxrequestsize < 128 || ba.ca_maxresponsesize < 64 || ba.ca_maxoperations < 2 {
        return Err(nfsstat4::NFS4ERR_TOOSMALL);
    }
    let fore = ChannelLimits {
        max_request: fa.ca_maxrequestsize.min(ours.max_record),
        max_response: fa.ca_maxresponsesize.min(ours.max_record),
        max_response_cached: fa.ca_maxresponsesize_cached.min(64 * 1024),
        max_ops: ours.max_ops.max(fa.ca_maxoperations.min(ours.max_ops)),
        max_requests: fa.ca_maxrequests.clamp(1, ours.slots),
    };
    let back = ChannelLimits {
        max_request: ba.ca_maxrequestsize,
        max_response: ba.ca_maxresponsesize,
        max_response_cached: ba.ca_maxresponsesize_cached,
        max_ops: ba.ca_maxoperations,
        max_requests: ba.ca_maxrequests.max(1),
    };
    Ok((fore, back))
}

#[derive(Debug, Default)]
pub struct Slot {
    pub seqid: u32,
    pub in_progress: bool,
    /// Encoded COMPOUND4res of the last request, when it was kept.
    pub reply: Option<Arc<Vec<u8>>>,
    /// `seqid` is only a lower bound (a slot of a session taken over from
    /// another server, which kept the seqids of state-changing requests
    /// only): `seqid` itself is a retransmission, any later one is new.
    pub lower_bound: bool,
}

/// Outcome of SEQUENCE on a slot.
#[derive(Debug)]
pub enum SlotUse {
    /// A new request: execute it, then `finish`.
    New,
    /// A retransmission: send this cached COMPOUND4res as it was.
    Replay(Arc<Vec<u8>>),
}

/// The fore-channel slot table of one session. An error leaves the slot
/// untouched (an erroring SEQUENCE must not advance it).
#[derive(Debug)]
pub struct SlotTable {
    slots: Vec<Slot>,
}

impl SlotTable {
    pub fn new(n: u32) -> SlotTable {
        assert!(n > 0, "a session has at least one slot");
        SlotTable { slots: (0..n).map(|_| Slot::default()).collect() }
    }

    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A table of `n` slots taken over from another server: every slot's
    /// seqid is a lower bound (0 until [`Self::restore`] says more).
    pub fn adopted(n: u32) -> SlotTable {
        let mut t = SlotTable::new(n);
        t.slots.iter_mut().for_each(|s| s.lower_bound = true);
        t
    }

    /// Sets a slot of an [`adopted`](Self::adopted) table as recorded: its
    /// last recorded seqid and cached reply. False for a slot it lacks.
    pub fn restore(&mut self, slotid: u32, seqid: u32, reply: Option<Arc<Vec<u8>>>) -> bool {
        let Some(s) = self.slots.get_mut(slotid as usize) else { return false };
        *s = Slot { seqid, in_progress: false, reply, lower_bound: true };
        true
    }

    pub fn begin(&mut self, slotid: u32, seqid: u32) -> Result<SlotUse, nfsstat4> {
        let slot = self.slots.get_mut(slotid as usize).ok_or(nfsstat4::NFS4ERR_BADSLOT)?;
        // A lower bound: any seqid after it (modulo 2^32) is a new request.
        let later = seqid.wrapping_sub(slot.seqid).wrapping_sub(1) < 1 << 31;
        if slot.lower_bound && seqid != slot.seqid && later && !slot.in_progress {
            slot.seqid = seqid;
            slot.in_progress = true;
            slot.reply = None;
            slot.lower_bound = false;
            return Ok(SlotUse::New);
        }
        if seqid == slot.seqid && slot.seqid != 0 {
            if slot.in_progress {
                return Err(nfsstat4::NFS4ERR_DELAY);
            }
            return match &slot.reply {
                Some(r) => Ok(SlotUse::Replay(r.clone())),
                None => Err(nfsstat4::NFS4ERR_RETRY_UNCACHED_REP),
            };
        }
        if seqid != slot.seqid.wrapping_add(1) {
            return Err(nfsstat4::NFS4ERR_SEQ_MISORDERED);
        }
        if slot.in_progress {
            return Err(nfsstat4::NFS4ERR_DELAY);
        }
        slot.seqid = seqid;
        slot.in_progress = true;
        slot.reply = None;
        Ok(SlotUse::New)
    }

    /// Ends the request on `slotid`, keeping its reply when the client asked
    /// (within `max_cached`) or when it is small.
    pub fn finish(&mut self, slotid: u32, reply: &[u8], cache_this: bool, max_cached: u32) {
        let kept = keep_reply(reply.len(), cache_this, max_cached).then(|| Arc::new(reply.to_vec()));
        self.finish_with(slotid, kept);
    }

    /// Ends the request on `slotid` with the reply to keep (None: not kept),
    /// for callers that build the cached copy only when `keep_reply` says so.
    pub fn finish_with(&mut self, slotid: u32, kept: Option<Arc<Vec<u8>>>) {
        if let Some(s) = self.slots.get_mut(slotid as usize) {
            s.in_progress = false;
            s.reply = kept;
        }
    }
}

/// Whether a reply of `len` bytes is kept in the slot.
pub fn keep_reply(len: usize, cache_this: bool, max_cached: u32) -> bool {
    (cache_this && len <= max_cached as usize) || len <= ALWAYS_CACHE_BYTES
}

impl SlotTable {
    #[cfg(test)]
    fn force_seqid(&mut self, slotid: usize, seqid: u32) {
        self.slots[slotid].seqid = seqid;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot taken over from another server: its recorded seqid is a
    /// retransmission (the recorded reply, or RETRY_UNCACHED_REP without
    /// one), an earlier one is misordered, any later one is new; after
    /// that the ordinary rules hold again.
    #[test]
    fn adopted_slots_take_their_seqid_as_a_lower_bound() {
        let mut t = SlotTable::adopted(3);
        assert!(t.restore(0, 7, Some(Arc::new(b"cached".to_vec()))));
        assert!(t.restore(1, 4, None));
        assert!(!t.restore(3, 1, None), "no such slot");
        assert!(matches!(t.begin(0, 7), Ok(SlotUse::Replay(r)) if r.as_slice() == b"cached"));
        assert_eq!(t.begin(1, 4).unwrap_err(), nfsstat4::NFS4ERR_RETRY_UNCACHED_REP);
        assert_eq!(t.begin(0, 6).unwrap_err(), nfsstat4::NFS4ERR_SEQ_MISORDERED);
        // Read-only requests after the recorded one were not recorded.
        assert!(matches!(t.begin(0, 10), Ok(SlotUse::New)));
        t.finish(0, b"r10", true, 64);
        assert_eq!(t.begin(0, 12).unwrap_err(), nfsstat4::NFS4ERR_SEQ_MISORDERED, "ordinary rules again");
        assert!(matches!(t.begin(0, 11), Ok(SlotUse::New)));
        // A slot with no record: any seqid starts it.
        assert!(matches!(t.begin(2, 5), Ok(SlotUse::New)));
        let mut w = SlotTable::adopted(1);
        assert!(w.restore(0, u32::MAX, None));
        assert!(matches!(w.begin(0, 1), Ok(SlotUse::New)), "wraps");
    }

    #[test]
    fn slot_rules() {
        let mut t = SlotTable::new(2);
        assert_eq!(t.begin(2, 1).unwrap_err(), nfsstat4::NFS4ERR_BADSLOT);
        assert_eq!(t.begin(0, 2).unwrap_err(), nfsstat4::NFS4ERR_SEQ_MISORDERED);
        assert!(matches!(t.begin(0, 1), Ok(SlotUse::New)));
        // Retransmission while executing.
        assert_eq!(t.begin(0, 1).unwrap_err(), nfsstat4::NFS4ERR_DELAY);
        t.finish(0, b"reply", false, 0);
        match t.begin(0, 1) {
            Ok(SlotUse::Replay(r)) => assert_eq!(&r[..], b"reply"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.begin(0, 2), Ok(SlotUse::New)));
        t.finish(0, &vec![0u8; ALWAYS_CACHE_BYTES + 1], false, 1 << 20);
        assert_eq!(t.begin(0, 2).unwrap_err(), nfsstat4::NFS4ERR_RETRY_UNCACHED_REP);
        // Errors did not move the slot: the next seqid still works.
        assert!(matches!(t.begin(0, 3), Ok(SlotUse::New)));
        // Seqids wrap.
        let mut w = SlotTable::new(1);
        w.force_seqid(0, u32::MAX);
        assert!(matches!(w.begin(0, 0), Ok(SlotUse::New)));
    }

    #[test]
    fn exchange_id_plans() {
        use crate::wire::*;
        let args = |verf: u8, flags: u32| EXCHANGE_ID4args {
            eia_clientowner: client_owner4 { co_verifier: [verf; 8], co_ownerid: b"o".as_slice().into() },
            eia_flags: flags,
            eia_state_protect: state_protect4_a::SP4_NONE,
            eia_client_impl_id: vec![],
        };
        let me = Some((0, 0));
        let k = |id, confirmed, verf, principal, busy| KnownClient { clientid: id, confirmed, verifier: [verf; 8], principal, busy };
        assert_eq!(plan_exchange_id(&args(1, 0), me, &[]), Ok(ExchangeIdPlan::Create { purge: vec![] }));
        assert_eq!(plan_exchange_id(&args(1, EXCHGID4_FLAG_SUPP_FENCE_OPS), me, &[]), Err(nfsstat4::NFS4ERR_INVAL));
        // same instance
        assert_eq!(plan_exchange_id(&args(1, 0), me, &[k(7, true, 1, me, true)]), Ok(ExchangeIdPlan::Reuse { clientid: 7, confirmed: true }));
        // rebooted client: new ID, confirmed record kept; unconfirmed ones go
        assert_eq!(
            plan_exchange_id(&args(2, 0), me, &[k(7, true, 1, me, true), k(8, false, 3, me, false)]),
            Ok(ExchangeIdPlan::Create { purge: vec![8] })
        );
        // another principal: only when the old client holds nothing
        let other = Some((5, 5));
        assert_eq!(plan_exchange_id(&args(1, 0), other, &[k(7, true, 1, me, true)]), Err(nfsstat4::NFS4ERR_CLID_INUSE));
        assert_eq!(plan_exchange_id(&args(1, 0), other, &[k(7, true, 1, me, false)]), Ok(ExchangeIdPlan::Create { purge: vec![7] }));
        // update of a confirmed record
        let upd = EXCHGID4_FLAG_UPD_CONFIRMED_REC_A;
        assert_eq!(plan_exchange_id(&args(1, upd), me, &[]), Err(nfsstat4::NFS4ERR_NOENT));
        assert_eq!(plan_exchange_id(&args(2, upd), me, &[k(7, true, 1, me, true)]), Err(nfsstat4::NFS4ERR_NOT_SAME));
        assert_eq!(plan_exchange_id(&args(1, upd), other, &[k(7, true, 1, me, true)]), Err(nfsstat4::NFS4ERR_PERM));
    }

    #[test]
    fn owner_tags() {
        assert_eq!(owner_tag(b"Linux NFSv4.2 host1"), owner_tag(b"Linux NFSv4.2 host1"));
        assert_ne!(owner_tag(b"Linux NFSv4.2 host1"), owner_tag(b"Linux NFSv4.2 host2"));
        assert_ne!(owner_tag(b""), 0);
        assert_eq!(clientid_owner_tag((owner_tag(b"x") as u64) << 32 | 5), owner_tag(b"x"));
    }

    #[test]
    fn siphash_reference_vectors() {
        // From the SipHash paper (appendix A) and its reference vectors.h.
        let (k0, k1) = (0x0706050403020100, 0x0f0e0d0c0b0a0908);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(k0, k1, &msg), 0xa129ca6149be45e5);
        assert_eq!(siphash24(k0, k1, &[]), 0x726fdb47dd0e0e31);
        assert_eq!(siphash24(k0, k1, &msg[..8]), 0x93f5f5799a932462);
    }

    #[test]
    fn minted_ids_are_not_neighbours() {
        // As an attacker who saw a run of ids: no two of them are close, and
        // two servers (two keys) never mint the same sequence.
        let mut m = IdMinter::new();
        let mut ids: Vec<u64> = (0..1000).map(|_| m.next_u64()).collect();
        let mut other = IdMinter::new();
        assert_ne!(ids[..4], (0..4).map(|_| other.next_u64()).collect::<Vec<_>>()[..]);
        ids.sort_unstable();
        let min_gap = ids.windows(2).map(|w| w[1] - w[0]).min().unwrap();
        // 1000 uniform 64-bit values: the smallest gap is below 2^32 with
        // probability about 1000^2 / 2^33, i.e. 1e-4.
        assert!(min_gap > 1 << 32, "ids too close: {min_gap:#x}");
        // Each output bit is set about half the time.
        for bit in 0..64 {
            let ones = ids.iter().filter(|x| *x >> bit & 1 == 1).count();
            assert!((350..650).contains(&ones), "bit {bit} set {ones} times of 1000");
        }
        let s = m.next_16();
        assert_ne!(s[..8], s[8..]);
    }

    fn attrs(req: u32, ops: u32, reqs: u32) -> channel_attrs4 {
        channel_attrs4 {
            ca_headerpadsize: 0,
            ca_maxrequestsize: req,
            ca_maxresponsesize: req,
            ca_maxresponsesize_cached: 4096,
            ca_maxoperations: ops,
            ca_maxrequests: reqs,
            ca_rdma_ird: vec![],
        }
    }

    #[test]
    fn negotiation() {
        let ours = ServerLimits { max_record: 1 << 20, max_ops: 64, slots: 128 };
        let mut a = CREATE_SESSION4args {
            csa_clientid: 1,
            csa_sequence: 1,
            csa_flags: CREATE_SESSION4_FLAG_CONN_BACK_CHAN,
            csa_fore_chan_attrs: attrs(2 << 20, 8, 1024),
            csa_back_chan_attrs: attrs(4096, 2, 16),
            csa_cb_program: 0x4000_0000,
            csa_sec_parms: vec![],
        };
        let (fore, back) = negotiate(&a, ours).unwrap();
        assert_eq!((fore.max_request, fore.max_ops, fore.max_requests), (1 << 20, 64, 128));
        assert_eq!(back.to_attrs(), attrs(4096, 2, 16));
        a.csa_flags = 0x10;
        assert_eq!(negotiate(&a, ours).unwrap_err(), nfsstat4::NFS4ERR_INVAL);
        a.csa_flags = 0;
        a.csa_back_chan_attrs = attrs(10, 2, 16);
        assert_eq!(negotiate(&a, ours).unwrap_err(), nfsstat4::NFS4ERR_TOOSMALL);
    }
}

/// Operations that may come without a SEQUENCE first (RFC 8881 18.46.3).
pub fn sessionless(op: nfs_opnum4) -> bool {
    matches!(
        op,
        nfs_opnum4::OP_EXCHANGE_ID
            | nfs_opnum4::OP_CREATE_SESSION
            | nfs_opnum4::OP_DESTROY_SESSION
            | nfs_opnum4::OP_DESTROY_CLIENTID
            | nfs_opnum4::OP_BIND_CONN_TO_SESSION
    )
}

/// The session gate (RFC 8881 2.10.6 and 18.46): the error for operation
/// `op` at position `index` of a COMPOUND of `count` operations, given
/// whether a SEQUENCE already established a session; None = may run.
pub fn session_gate(op: nfs_opnum4, index: usize, count: usize, in_session: bool) -> Option<nfsstat4> {
    if index == 0 {
        if op == nfs_opnum4::OP_SEQUENCE {
            None
        } else if sessionless(op) {
            (count > 1).then_some(nfsstat4::NFS4ERR_NOT_ONLY_OP)
        } else {
            Some(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION)
        }
    } else if op == nfs_opnum4::OP_SEQUENCE {
        Some(nfsstat4::NFS4ERR_SEQUENCE_POS)
    } else if sessionless(op) && !in_session {
        Some(nfsstat4::NFS4ERR_NOT_ONLY_OP)
    } else {
        None
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    #[test]
    fn session_gate_follows_rfc8881() {
        use nfs_opnum4::*;
        assert_eq!(session_gate(OP_SEQUENCE, 0, 3, false), None);
        assert_eq!(session_gate(OP_EXCHANGE_ID, 0, 1, false), None);
        assert_eq!(session_gate(OP_EXCHANGE_ID, 0, 2, false), Some(nfsstat4::NFS4ERR_NOT_ONLY_OP));
        assert_eq!(session_gate(OP_PUTFH, 0, 2, false), Some(nfsstat4::NFS4ERR_OP_NOT_IN_SESSION));
        assert_eq!(session_gate(OP_SEQUENCE, 1, 2, true), Some(nfsstat4::NFS4ERR_SEQUENCE_POS));
        assert_eq!(session_gate(OP_DESTROY_SESSION, 1, 2, true), None);
        assert_eq!(session_gate(OP_DESTROY_SESSION, 1, 2, false), Some(nfsstat4::NFS4ERR_NOT_ONLY_OP));
        assert_eq!(session_gate(OP_GETATTR, 2, 3, true), None);
    }
}

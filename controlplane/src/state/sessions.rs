//! The session table (RFC 8881 2.10): CREATE_SESSION, DESTROY_SESSION,
//! SEQUENCE's lookup and lease renewal. A session keeps its slot table
//! behind its own mutex, so a COMPOUND holds no table lock while it runs.

use super::clients::MdsSessions;
use super::*;
use pnfs_protocol::nfs41::clients::check_principal;
use pnfs_protocol::nfs41::sessions::{self as nfs41_sessions, CreateSessionCtx};
use pnfs_protocol::session::Principal;
use pnfs_protocol::wire::CREATE_SESSION4args;

/// A session: the engine's record ([`pnfs_protocol::nfs41::Session`]);
/// its `minor` is that of the CREATE_SESSION, which CB_COMPOUNDs must carry
/// (the Linux client finds the session only among clients of that minor
/// version and answers NFS4ERR_BADSESSION otherwise).
pub type Session = pnfs_protocol::nfs41::Session<()>;

pub(super) fn session_shard(id: &SessionId) -> usize {
    // Session IDs are random.
    id[0] as usize
}

impl StateStore {
    pub fn session(&self, id: &SessionId) -> Option<Arc<Session>> {
        visit(1);
        self.sessions.at(session_shard(id)).get(id).cloned()
    }

    /// SEQUENCE: the session, with its client's lease renewed, and whether
    /// the client has revoked state to be told of
    /// (SEQ4_STATUS_RECALLABLE_STATE_REVOKED). O(1): one session lookup,
    /// one client lookup, one counter.
    pub fn sequence(&self, id: &SessionId) -> NfsResult<(Arc<Session>, bool)> {
        let s = self.session(id).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        let entry = self.client(s.clientid).map_err(|_| nfsstat4::NFS4ERR_BADSESSION)?;
        let mut ci = entry.lock();
        ci.last_renewed = Instant::now();
        let revoked = ci.revoked > 0;
        drop(ci);
        Ok((s, revoked))
    }

    /// CREATE_SESSION (RFC 8881 18.36) on the shared engine: its rules
    /// (principal, csa_sequence replay cache, sessions cap), its session
    /// record (channels negotiated; no I/O) and the confirmation of the
    /// client (a confirmed record of an earlier instance of it goes).
    /// Returns the reply bytes, which a retransmission (csa_sequence one
    /// behind) gets again, and whether a session was created (false for a
    /// replay). A newly confirmed client's reclaim record is to be written.
    pub fn create_session(&self, a: &CREATE_SESSION4args, ctx: &CreateSessionCtx, fx: &mut Effects) -> NfsResult<(Vec<u8>, bool)> {
        let clientid = a.csa_clientid;
        let mut reg = lock(&self.registry);
        let (table, mut hooks) = reg.engine(self, None, fx);
        let ok = nfs41_sessions::create_session(table, &mut MdsSessions(&self.sessions), &mut hooks, a, *ctx, |_| ())?;
        let Some(session) = ok.session else { return Ok((ok.resok, false)) };
        let owner = {
            // (A handle of its own: `fx` is free once the table is let go.)
            let entry = table.get(clientid).ok_or(nfsstat4::NFS4ERR_STALE_CLIENTID)?.clone();
            let mut ci = entry.lock();
            ci.last_renewed = Instant::now();
            // The record as confirmed (csa_sequence, cached reply), then its session.
            self.journal_client(&ci, fx);
            ci.owner.clone()
        };
        if self.journal {
            fx.records.push(StateChange::SessionCreated { rec: SessionRecord::of(&session) });
        }
        if ok.newly_confirmed {
            // Persisted so the client may reclaim after our restart.
            fx.records.push(StateChange::ClientConfirmed { owner });
        }
        Ok((ok.resok, true))
    }

    /// DESTROY_SESSION (RFC 8881 18.37): `admit` checks the MDS's own rules
    /// first (the caller's address), then only the client's principal may.
    pub fn destroy_session(&self, id: &SessionId, principal: Principal, admit: impl FnOnce() -> NfsResult<()>, fx: &mut Effects) -> NfsResult<()> {
        self.session(id).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        admit()?;
        let mut reg = lock(&self.registry);
        nfs41_sessions::destroy_session(&mut reg.table, &mut MdsSessions(&self.sessions), id, principal)?;
        if self.journal {
            fx.records.push(StateChange::SessionDestroyed { id: *id });
        }
        Ok(())
    }

    /// The session for BIND_CONN_TO_SESSION, if the caller may: `admit`
    /// checks the MDS's own rules first, then the client's principal.
    pub fn session_checked(&self, id: &SessionId, principal: Principal, admit: impl FnOnce() -> NfsResult<()>) -> NfsResult<Arc<Session>> {
        let s = self.session(id).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        admit()?;
        let entry = self.client(s.clientid).ok();
        check_principal(entry.as_ref().map(|e| e.lock()).as_deref(), principal)?;
        Ok(s)
    }

    /// The sessions of `clientid` (callbacks go over one of them).
    pub fn sessions_of(&self, clientid: u64) -> Vec<Arc<Session>> {
        let ids = match self.client(clientid) {
            Ok(e) => e.lock().sessions.clone(),
            Err(_) => return vec![],
        };
        ids.iter().filter_map(|id| self.session(id)).collect()
    }
}

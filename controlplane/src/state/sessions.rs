//! The session table (RFC 8881 2.10): CREATE_SESSION, DESTROY_SESSION,
//! SEQUENCE's lookup and lease renewal. A session keeps its slot table
//! behind its own mutex, so a COMPOUND holds no table lock while it runs.

use super::*;
use pnfs_protocol::nfs41::sessions::{self as nfs41_sessions, Admission, CreateSessionCtx, CreateSessionRecord};
use pnfs_protocol::wire::CREATE_SESSION4args;

/// A session: the engine's record ([`pnfs_protocol::nfs41::Session`]);
/// its `minor` is that of the CREATE_SESSION, which CB_COMPOUNDs must carry
/// (the Linux client finds the session only among clients of that minor
/// version and answers NFS4ERR_BADSESSION otherwise).
pub type Session = pnfs_protocol::nfs41::Session<()>;

fn session_shard(id: &SessionId) -> usize {
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
        ci.rec.last_renewed = Instant::now();
        let revoked = ci.revoked > 0;
        drop(ci);
        Ok((s, revoked))
    }

    /// CREATE_SESSION (RFC 8881 18.36.4) with the shared engine's rules
    /// (principal, csa_sequence replay cache, sessions cap) and session
    /// record (channels negotiated; no I/O). Returns the reply bytes, which a
    /// retransmission (csa_sequence one behind) gets again. The first
    /// session confirms the client: a confirmed record of an earlier
    /// instance of it goes, and its reclaim record is to be written.
    /// The bool says whether a session was created (false for a replay).
    pub fn create_session(&self, a: &CREATE_SESSION4args, ctx: &CreateSessionCtx, fx: &mut Effects) -> NfsResult<(Vec<u8>, bool)> {
        let clientid = a.csa_clientid;
        let mut reg = lock(&self.registry);
        let entry = self.client(clientid)?;
        let sid = loop {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&reg.ids.next_u64().to_be_bytes());
            id[8..].copy_from_slice(&reg.ids.next_u64().to_be_bytes());
            if self.session(&id).is_none() {
                break id;
            }
        };
        let (session, bytes, owner, was_confirmed) = {
            let mut ci = entry.lock();
            let client = &mut ci.rec;
            let record = CreateSessionRecord {
                confirmed: client.confirmed,
                principal: client.principal,
                cs_sequence: client.cs_sequence,
                cs_reply: client.cs_reply.as_deref(),
                sessions: client.sessions.len(),
            };
            if let Admission::Replay(bytes) = nfs41_sessions::admit_create_session(record, a, ctx)? {
                return Ok((bytes, false));
            }
            let (session, bytes) = nfs41_sessions::new_session(sid, a, ctx, ())?;
            let was_confirmed = client.confirmed;
            client.confirmed = true;
            client.sessions.push(sid);
            client.last_renewed = Instant::now();
            client.cs_sequence = client.cs_sequence.wrapping_add(1);
            client.cs_reply = Some(bytes.clone());
            self.journal_client(client, fx);
            (session, bytes, client.owner.clone(), was_confirmed)
        };
        if self.journal {
            fx.records.push(StateChange::SessionCreated { rec: SessionRecord::of(&session) });
        }
        self.sessions.at(session_shard(&sid)).insert(sid, session);
        if !was_confirmed {
            // A confirmed record of an earlier instance of this client goes away.
            let old: Vec<u64> = reg.owner_ids(&owner).into_iter().filter(|id| *id != clientid).collect();
            for id in old {
                if self.client(id).is_ok_and(|e| e.lock().rec.confirmed) {
                    self.purge(&mut reg, id, fx);
                }
            }
            // Persisted so the client may reclaim after our restart.
            fx.records.push(StateChange::ClientConfirmed { owner });
        }
        Ok((bytes, true))
    }

    /// DESTROY_SESSION; `check` decides whether the caller may (given the
    /// session's client when it still exists).
    pub fn destroy_session(&self, id: &SessionId, check: impl FnOnce(Option<&Client>) -> NfsResult<()>, fx: &mut Effects) -> NfsResult<()> {
        let s = self.session(id).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        let entry = self.client(s.clientid).ok();
        match &entry {
            Some(e) => check(Some(&e.lock().rec))?,
            None => check(None)?,
        }
        self.sessions.at(session_shard(id)).remove(id);
        if let Some(e) = entry {
            e.lock().rec.sessions.retain(|x| x != id);
        }
        if self.journal {
            fx.records.push(StateChange::SessionDestroyed { id: *id });
        }
        Ok(())
    }

    /// The session for BIND_CONN_TO_SESSION, if `check` allows the caller.
    pub fn session_checked(&self, id: &SessionId, check: impl FnOnce(Option<&Client>) -> NfsResult<()>) -> NfsResult<Arc<Session>> {
        let s = self.session(id).ok_or(nfsstat4::NFS4ERR_BADSESSION)?;
        match self.client(s.clientid) {
            Ok(e) => check(Some(&e.lock().rec))?,
            Err(_) => check(None)?,
        }
        Ok(s)
    }

    /// The sessions of `clientid` (callbacks go over one of them).
    pub fn sessions_of(&self, clientid: u64) -> Vec<Arc<Session>> {
        let ids = match self.client(clientid) {
            Ok(e) => e.lock().rec.sessions.clone(),
            Err(_) => return vec![],
        };
        ids.iter().filter_map(|id| self.session(id)).collect()
    }
}

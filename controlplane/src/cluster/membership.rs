//! Membership: each node's record `N<node_id>` lives under the node's etcd
//! lease; the set of records is the set of live nodes. And quorum: a node
//! whose last successful renewal is older than `lease_ms - heartbeat_ms`
//! may already have lost its lease (etcd counts from when it processed the
//! keepalive, never earlier than when we sent it), so it stops changing
//! anything before anyone else can act on its expiry.

use std::time::{Duration, Instant};

/// KV key prefix of node records.
pub const NODE_RECORD_PREFIX: &[u8] = &[crate::keyspace::CLUSTER_NODE];

/// Key of node `id`'s record: `N` then the id (u32, big-endian).
pub fn node_key(id: u32) -> Vec<u8> {
    let mut k = NODE_RECORD_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// What a live node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: u32,
    /// Its MDS -> DS control epoch (`node_id << 32 | boot count`).
    pub epoch: u64,
    /// Its peer listener.
    pub peer: String,
    /// The etcd lease the record (and the node's VIP claims) live under.
    pub lease: i64,
}

impl NodeRecord {
    /// Text, readable with etcdctl: `node_id epoch peer lease`.
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {} {}", self.node_id, self.epoch, self.peer, self.lease).into_bytes()
    }

    pub fn decode(value: &[u8]) -> Option<NodeRecord> {
        let text = std::str::from_utf8(value).ok()?;
        let mut f = text.split(' ');
        let r = NodeRecord {
            node_id: f.next()?.parse().ok()?,
            epoch: f.next()?.parse().ok()?,
            peer: f.next()?.to_string(),
            lease: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some(r)
    }
}

/// The etcd lease TTL for `lease_ms`: whole seconds, at least 2 (etcd
/// refuses shorter ones or rounds them up).
pub fn lease_ttl(lease_ms: u64) -> Duration {
    Duration::from_secs(lease_ms.div_ceil(1000).max(2))
}

/// Whether this node may change anything: it renewed its lease recently
/// enough. Times are passed in (a fake clock in tests).
#[derive(Debug, Clone)]
pub struct Quorum {
    /// When the last keepalive that succeeded was sent.
    last_renewed: Option<Instant>,
    /// `lease_ms - heartbeat_ms`.
    budget: Duration,
}

impl Quorum {
    pub fn new(heartbeat: Duration, lease: Duration) -> Quorum {
        Quorum { last_renewed: None, budget: lease.saturating_sub(heartbeat) }
    }

    /// A renewal (or grant) sent at `sent` succeeded.
    pub fn renewed(&mut self, sent: Instant) {
        if self.last_renewed.is_none_or(|t| sent > t) {
            self.last_renewed = Some(sent);
        }
    }

    /// The lease is gone (expired, revoked): read-only until a new one.
    pub fn lost(&mut self) {
        self.last_renewed = None;
    }

    pub fn writable(&self, now: Instant) -> bool {
        self.last_renewed.is_some_and(|t| now.saturating_duration_since(t) < self.budget)
    }

    /// When, if nothing is renewed, the node turns read-only.
    pub fn read_only_at(&self) -> Option<Instant> {
        self.last_renewed.map(|t| t + self.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_junk_is_refused() {
        let r = NodeRecord { node_id: 3, epoch: 3 << 32 | 17, peer: "10.0.0.23:20495".into(), lease: 7_587_000_123 };
        assert_eq!(NodeRecord::decode(&r.encode()), Some(r));
        for junk in [&b""[..], b"1 2 x", b"1 2 x 3 4", b"a 2 x 3", b"\xff"] {
            assert_eq!(NodeRecord::decode(junk), None);
        }
        assert_eq!(node_key(1), b"N\0\0\0\x01");
    }

    #[test]
    fn lease_ttl_is_whole_seconds_at_least_two() {
        assert_eq!(lease_ttl(1500), Duration::from_secs(2));
        assert_eq!(lease_ttl(2500), Duration::from_secs(3));
        assert_eq!(lease_ttl(100), Duration::from_secs(2));
    }

    #[test]
    fn quorum_is_lost_one_heartbeat_before_the_lease_and_regained_on_renewal() {
        let (hb, lease) = (Duration::from_millis(500), Duration::from_millis(1500));
        let t0 = Instant::now();
        let mut q = Quorum::new(hb, lease);
        assert!(!q.writable(t0), "no lease yet: read-only");
        q.renewed(t0);
        assert!(q.writable(t0 + Duration::from_millis(999)));
        assert!(!q.writable(t0 + Duration::from_millis(1000)), "lease_ms - heartbeat_ms without renewal");
        assert_eq!(q.read_only_at(), Some(t0 + Duration::from_millis(1000)));
        // A late answer to an older keepalive does not move the clock back.
        q.renewed(t0 + Duration::from_millis(800));
        q.renewed(t0 + Duration::from_millis(300));
        assert!(q.writable(t0 + Duration::from_millis(1700)));
        assert!(!q.writable(t0 + Duration::from_millis(1800)));
        q.lost();
        assert!(!q.writable(t0 + Duration::from_millis(900)));
    }
}

//! MDS metrics in Prometheus/OpenMetrics text: per-operation counts, errors
//! and latency histograms, bytes through the MDS data path, layouts and
//! recalls, delegations. Handles are created once at start-up, so recording an operation
//! allocates nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use pnfs_protocol::wire::nfs_opnum4;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

pub struct MdsMetrics {
    registry: Registry,
    /// Indexed by opnum: (count, errors, latency).
    per_op: Vec<Option<(Counter, Counter, Histogram)>>,
    pub read_bytes: Counter,
    pub write_bytes: Counter,
    pub layouts_outstanding: Gauge,
    recalls: Family<OutcomeLabel, Counter>,
    conns_refused: Family<ReasonLabel, Counter>,
    conns_closed: Family<ReasonLabel, Counter>,
    /// Control calls refused (no or a wrong cluster-key tag, a replay).
    pub control_refused: Counter,
    /// Delegations granted, read and write.
    delegations_granted: [Counter; 2],
    pub delegations_recalled: Counter,
    pub delegations_returned: Counter,
    pub delegations_revoked: Counter,
    /// Set from the state layer's count when encoded.
    delegations_held: Gauge,
    /// Cluster node state (`[mds.cluster]`; zero for a single MDS).
    pub cluster: ClusterMetrics,
    /// Lost data servers, LAYOUTERROR checks, LAYOUTSTATS (pnfs/health.rs).
    pub health: crate::pnfs::health::HealthMetrics,
    /// Resilver object copies (`pnfs_mds_resilver_*`).
    pub resilver: crate::pnfs::resilver::ResilverMetrics,
}

const MAX_OPNUM: usize = 80;

fn op_name(n: usize) -> Option<String> {
    let op = nfs_opnum4::from_i32(n as i32)?;
    Some(format!("{op:?}").trim_start_matches("OP_").to_string())
}

impl MdsMetrics {
    fn new() -> MdsMetrics {
        let mut registry = Registry::with_prefix("pnfs_mds");
        let ops = Family::<OpLabel, Counter>::default();
        let errors = Family::<OpLabel, Counter>::default();
        let latency = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            // 10 us .. ~2.6 s
            Histogram::new(exponential_buckets(1e-5, 4.0, 10))
        });
        registry.register("ops", "NFS operations executed", ops.clone());
        registry.register("op_errors", "NFS operations that failed", errors.clone());
        registry.register("op_latency_seconds", "NFS operation latency", latency.clone());
        let per_op = (0..MAX_OPNUM)
            .map(|n| {
                op_name(n).map(|name| {
                    let l = OpLabel { op: name };
                    (ops.get_or_create(&l).clone(), errors.get_or_create(&l).clone(), latency.get_or_create(&l).clone())
                })
            })
            .collect();
        let read_bytes = Counter::default();
        let write_bytes = Counter::default();
        let layouts_outstanding = Gauge::default();
        let recalls = Family::<OutcomeLabel, Counter>::default();
        registry.register("read_bytes", "READ payload bytes served by the MDS itself", read_bytes.clone());
        registry.register("write_bytes", "WRITE payload bytes received by the MDS itself", write_bytes.clone());
        registry.register("layouts_outstanding", "Layouts held by clients", layouts_outstanding.clone());
        registry.register("layout_recalls", "CB_LAYOUTRECALL calls by outcome", recalls.clone());
        let conns_refused = Family::<ReasonLabel, Counter>::default();
        let conns_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "NFS connections closed at accept, by the cap reached (per_address, total)",
            conns_refused.clone(),
        );
        registry.register(
            "connections_closed",
            "NFS connections the server closed, by reason (idle, record_timeout, replies_unread, record_too_large)",
            conns_closed.clone(),
        );
        let control_refused = Counter::default();
        registry.register(
            "control_refused",
            "Data-server control calls refused: no or a wrong cluster-key tag, or a replay",
            control_refused.clone(),
        );
        let granted = Family::<KindLabel, Counter>::default();
        registry.register("delegations_granted", "Delegations granted, by kind (read, write)", granted.clone());
        let delegations_granted = ["read", "write"].map(|k| granted.get_or_create(&KindLabel { kind: k.to_string() }).clone());
        let (delegations_recalled, delegations_returned, delegations_revoked) = (Counter::default(), Counter::default(), Counter::default());
        registry.register("delegations_recalled", "Delegations recalled (CB_RECALL started)", delegations_recalled.clone());
        registry.register("delegations_returned", "Delegations returned (DELEGRETURN)", delegations_returned.clone());
        registry.register("delegations_revoked", "Recalled delegations revoked, not returned within a lease", delegations_revoked.clone());
        let delegations_held = Gauge::default();
        registry.register("delegations_held", "Delegations held by clients", delegations_held.clone());
        let cluster = ClusterMetrics::register(&mut registry);
        let health = crate::pnfs::health::HealthMetrics::register(&mut registry);
        let resilver = crate::pnfs::resilver::ResilverMetrics::register(&mut registry);
        MdsMetrics {
            registry,
            per_op,
            read_bytes,
            write_bytes,
            layouts_outstanding,
            recalls,
            conns_refused,
            conns_closed,
            control_refused,
            delegations_granted,
            delegations_recalled,
            delegations_returned,
            delegations_revoked,
            delegations_held,
            cluster,
            health,
            resilver,
        }
    }

    pub fn delegation_granted(&self, write: bool) {
        self.delegations_granted[write as usize].inc();
    }

    pub fn observe_op(&self, opnum: i32, ok: bool, took: Duration) {
        if let Some(Some((count, errors, latency))) = self.per_op.get(opnum as usize) {
            count.inc();
            if !ok {
                errors.inc();
            }
            latency.observe(took.as_secs_f64());
        }
    }

    pub fn recall(&self, outcome: &str) {
        self.recalls.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.conns_refused.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    pub fn connection_closed(&self, reason: &str) {
        self.conns_closed.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    /// OpenMetrics text without the trailing `# EOF` (the HTTP endpoint
    /// joins several roles' texts and ends them once).
    pub fn encode(&self) -> String {
        self.delegations_held.set(crate::state::deleg::delegations_held() as i64);
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s.trim_end().trim_end_matches("# EOF").to_string()
    }
}

/// Cluster node metrics (controlplane/src/cluster/), prefixed `pnfs_mds_cluster_`.
pub struct ClusterMetrics {
    /// 1 while this node's lease is fresh (it may change state), else 0.
    pub node_live: Gauge,
    pub vips_held: Gauge,
    /// VIPs of other (dead) nodes this node claimed.
    pub takeovers: Counter,
    pub lease_renew_failures: Counter,
    pub peer_links_up: Gauge,
    /// Times this node found its lease gone (expired or revoked by a peer)
    /// and rejoined with a new epoch.
    pub fenced: Counter,
    /// Cross-node layout recalls dropped on a full queue.
    pub recalls_dropped: Counter,
}

impl ClusterMetrics {
    fn register(registry: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics {
            node_live: Gauge::default(),
            vips_held: Gauge::default(),
            takeovers: Counter::default(),
            lease_renew_failures: Counter::default(),
            peer_links_up: Gauge::default(),
            fenced: Counter::default(),
            recalls_dropped: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("cluster");
        r.register("node_live", "1 while this cluster node holds a fresh lease and may change state", m.node_live.clone());
        r.register("vips_held", "Virtual IPs on this node's interface", m.vips_held.clone());
        r.register("takeovers", "VIPs of dead nodes this node took over", m.takeovers.clone());
        r.register("lease_renew_failures", "Lease renewals (or grants) that failed", m.lease_renew_failures.clone());
        r.register("peer_links_up", "Authenticated links to other cluster nodes that are up", m.peer_links_up.clone());
        r.register("fenced", "Times this node lost its lease and rejoined with a new epoch", m.fenced.clone());
        r.register("recalls_dropped", "Cross-node layout recalls dropped on a full queue", m.recalls_dropped.clone());
        m
    }
}

/// The process-wide MDS metrics.
pub fn metrics() -> &'static MdsMetrics {
    static M: OnceLock<MdsMetrics> = OnceLock::new();
    M.get_or_init(MdsMetrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_counted_by_name() {
        let m = metrics();
        m.observe_op(nfs_opnum4::OP_GETATTR as i32, true, Duration::from_micros(30));
        m.observe_op(nfs_opnum4::OP_GETATTR as i32, false, Duration::from_micros(30));
        m.observe_op(999, true, Duration::from_micros(1));
        let text = m.encode();
        assert!(text.contains("pnfs_mds_ops_total{op=\"GETATTR\"} 2"), "{text}");
        assert!(text.contains("pnfs_mds_op_errors_total{op=\"GETATTR\"} 1"), "{text}");
        assert!(text.contains("pnfs_mds_op_latency_seconds_bucket"), "{text}");
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn cluster_metrics_are_exported() {
        let m = metrics();
        m.cluster.takeovers.inc();
        let text = m.encode();
        for name in ["node_live", "vips_held", "takeovers_total", "lease_renew_failures_total", "peer_links_up", "fenced_total", "recalls_dropped_total"] {
            assert!(text.contains(&format!("\npnfs_mds_cluster_{name} ")), "{name}: {text}");
        }
    }

    #[test]
    fn delegations_are_counted() {
        let m = metrics();
        m.delegation_granted(true);
        m.delegations_revoked.inc();
        let text = m.encode();
        assert!(text.contains("pnfs_mds_delegations_granted_total{kind=\"read\"} "), "{text}");
        let write: u64 = text.lines().find_map(|l| l.strip_prefix("pnfs_mds_delegations_granted_total{kind=\"write\"} ")).unwrap().parse().unwrap();
        assert!(write >= 1, "{text}");
        for name in ["delegations_recalled_total", "delegations_returned_total", "delegations_revoked_total", "delegations_held"] {
            assert!(text.contains(&format!("\npnfs_mds_{name} ")), "{name}: {text}");
        }
    }
}

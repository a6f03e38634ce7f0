//! Counters for the metrics exporter: relaxed atomics, read with `snapshot()`.
//!
//! `payload_copies` counts every userspace memcpy of READ/WRITE payload bytes
//! (NFS and control-program I/O alike), one per copy of one request's
//! payload, whatever its size. Kernel copies (socket buffers, page cache) are
//! not counted. Where copies happen today:
//! - NFS WRITE received zero-copy (a large SEQUENCE, PUTFH, WRITE call; see
//!   [`crate::transport::recv`]): recv() into an aligned pool buffer, written from it
//!   with O_DIRECT or buffered (0).
//! - Other NFS WRITEs with O_DIRECT (small records, or the pool was empty at
//!   receive): record buffer -> aligned pool buffer (1). With buffered I/O
//!   the payload is written straight from the record (0).
//! - NFS READ: read into a pool buffer that is written to the socket as its
//!   own iovec (0); only a small reply kept in the session reply cache is
//!   flattened (1).
//! - Control OBJ_READ: read into a Vec, then encoded into the reply (1).
//!   OBJ_WRITE writes from the received record (0).
//!
//! Per-operation latency is a fixed histogram per [`OpKind`]: one atomic
//! counter per bucket (the MDS's bounds, 10 us * 4^k for k = 0..9, then
//! +Inf) and the sum in nanoseconds, so recording an operation takes a few
//! relaxed atomic adds and no allocation or lock. Every operation result
//! in a COMPOUND reply is recorded exactly once, under its kind; one that
//! is not NFS4_OK also counts as an error of that kind. The operation count
//! is the histogram's count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// NFS operations counted individually; everything else is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum OpKind {
    ExchangeId,
    CreateSession,
    DestroySession,
    DestroyClientid,
    BindConn,
    Sequence,
    ReclaimComplete,
    Putfh,
    Putrootfh,
    Getfh,
    Getattr,
    Read,
    Write,
    Commit,
    NotSupp,
    Illegal,
}

pub const OP_KINDS: usize = OpKind::Illegal as usize + 1;

pub const OP_NAMES: [&str; OP_KINDS] = [
    "exchange_id",
    "create_session",
    "destroy_session",
    "destroy_clientid",
    "bind_conn_to_session",
    "sequence",
    "reclaim_complete",
    "putfh",
    "putrootfh",
    "getfh",
    "getattr",
    "read",
    "write",
    "commit",
    "notsupp",
    "illegal",
];

/// Finite latency bucket bounds, nanoseconds: 10 us * 4^k, k = 0..9
/// (~2.6 s), as the MDS's `exponential_buckets(1e-5, 4.0, 10)`.
pub const LATENCY_BOUNDS_NS: [u64; 10] = {
    let mut b = [0u64; 10];
    let mut k = 0;
    while k < 10 {
        b[k] = 10_000 * 4u64.pow(k as u32);
        k += 1;
    }
    b
};

/// `le` label values of the buckets: the bounds in seconds as the MDS's
/// prometheus-client writes them, then +Inf.
pub const LATENCY_LE: [&str; LATENCY_BUCKETS] =
    ["0.00001", "0.00004", "0.00016", "0.00064", "0.00256", "0.01024", "0.04096", "0.16384", "0.65536", "2.62144", "+Inf"];

/// Buckets per histogram: the finite bounds and +Inf.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// The bucket of a latency: the first bound it does not exceed (`le`),
/// or the last (+Inf) bucket.
#[inline]
pub fn latency_bucket(ns: u64) -> usize {
    LATENCY_BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(LATENCY_BOUNDS_NS.len())
}

/// One operation kind's latency histogram: per-bucket (not cumulative)
/// counts and the sum of the latencies in nanoseconds.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    #[inline]
    pub fn observe_ns(&self, ns: u64) {
        bump(&self.buckets[latency_bucket(ns)], 1);
        bump(&self.sum_ns, ns);
    }

    /// Cumulative bucket counts; `count` is the +Inf bucket, so the two
    /// agree even when operations are recorded while this reads.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = [0u64; LATENCY_BUCKETS];
        let mut total = 0u64;
        for (c, b) in cumulative.iter_mut().zip(self.buckets.iter()) {
            total += b.load(Ordering::Relaxed);
            *c = total;
        }
        LatencySnapshot { cumulative, sum_ns: self.sum_ns.load(Ordering::Relaxed), count: total }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySnapshot {
    /// Operations at or under each bound of [`LATENCY_BOUNDS_NS`], then all
    /// of them (+Inf).
    pub cumulative: [u64; LATENCY_BUCKETS],
    pub sum_ns: u64,
    pub count: u64,
}

#[derive(Default)]
pub struct DsStats {
    /// Latency per operation kind (its count is the operation count).
    pub latency: [LatencyHistogram; OP_KINDS],
    /// Operations per kind whose status was not NFS4_OK.
    pub errors: [AtomicU64; OP_KINDS],
    /// NFS COMPOUNDs executed (replays included).
    pub compounds: AtomicU64,
    /// COMPOUNDs answered from the reply cache.
    pub replays: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub payload_copies: AtomicU64,
    /// WRITEs whose data was received straight into a pool buffer.
    pub zero_copy_writes: AtomicU64,
    /// Large WRITEs received the ordinary way because the pool was empty.
    pub zero_copy_no_buffer: AtomicU64,
    /// UNSTABLE4 WRITEs run asynchronously (completion-driven) on the ring.
    pub async_writes: AtomicU64,
    /// Requests refused with NFS4ERR_DELAY because a reactor's buffer pool was empty.
    pub buffer_pool_exhausted: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Connections closed at accept: a reactor's total or one address's
    /// share (`ds.max_connections_per_address`) was reached.
    pub connections_refused: AtomicU64,
    /// Of those, refused for the per-address cap.
    pub connections_refused_per_address: AtomicU64,
    /// Connections closed because they sent nothing for
    /// `ds.idle_timeout_seconds` (or did not read their replies).
    pub connections_idle_closed: AtomicU64,
    /// Connections closed because a record did not complete within
    /// `ds.record_timeout_seconds` of its first byte.
    pub records_timed_out: AtomicU64,
    /// Large WRITEs whose SEQUENCE named no session, or whose handle or
    /// stateid did not check: no pool buffer was taken, the data was
    /// received and dropped.
    pub writes_not_admitted: AtomicU64,
    /// Connections cut off because the peer took no reply bytes for
    /// `ds.record_timeout_seconds` while replies waited.
    pub replies_stalled: AtomicU64,
    /// Clients dropped to make room in a full table (`ds.max_clients`):
    /// unconfirmed ones, or silent for over a lease.
    pub clients_evicted: AtomicU64,
    /// EXCHANGE_IDs answered NFS4ERR_DELAY: the table full of live clients.
    pub clients_refused: AtomicU64,
    /// Control program calls served.
    pub control_calls: AtomicU64,
    /// Control calls refused (no or a wrong cluster-key tag, a replay, an
    /// older MDS epoch): a wrong key on some node, or an attacker.
    pub control_refused: AtomicU64,
    /// CTL_FENCE calls applied (repeats included): an MDS node fenced.
    pub control_fences: AtomicU64,
    /// Control calls published to the reactors (allow, revoke, create, remove).
    pub control_updates: AtomicU64,
    /// Of those, refused or not applied by every reactor in time.
    pub control_update_failures: AtomicU64,
    pub control_bytes_read: AtomicU64,
    pub control_bytes_written: AtomicU64,
    /// Data bytes written into this DS's objects by object copies pulled
    /// from other data servers (resilver; holes not counted).
    pub copy_bytes: AtomicU64,
    /// Object copies running now (a gauge).
    pub copies_in_flight: AtomicU64,
    /// Object copies finished: the destination took the source's version.
    pub copies_finished: AtomicU64,
    /// Object copy calls that failed (source gone or refused, version
    /// changed, destination error, busy).
    pub copy_failures: AtomicU64,
    /// I/O submitted through io_uring vs plain syscalls.
    pub uring_ops: AtomicU64,
    pub syscall_ops: AtomicU64,
    pub direct_ops: AtomicU64,
    /// Volume backend: NVMe commands sent through io_uring passthrough.
    pub passthrough_ops: AtomicU64,
    /// io_uring I/O naming a registered file slot instead of a descriptor.
    pub fixed_file_ops: AtomicU64,
    /// Descriptors left unregistered because a reactor's file table was full.
    pub fixed_files_full: AtomicU64,
    /// fdatasyncs issued for COMMIT and stable WRITE (NFS; compare with
    /// the commit op count: a COMMIT on a clean object issues none).
    pub fdatasyncs: AtomicU64,
    /// COMMITs and stable WRITEs answered without a sync: nothing written
    /// since the object's last one.
    pub commits_clean: AtomicU64,
    /// Volume backend: COMMITs and stable WRITEs answered without a flush
    /// because a volume flush made for other objects already covered
    /// every write of this one (one flush covers the whole volume).
    pub commits_covered: AtomicU64,
    /// Volume backend: object-table entries and bitmap blocks written.
    pub volume_meta_writes: AtomicU64,
    /// Volume backend: extents allocated (each zeroed first).
    pub volume_extents_allocated: AtomicU64,
    /// Poller rounds (busy and adaptive poll modes): zero-timeout polls of
    /// a reactor's sockets instead of sleeping.
    pub poll_spins: AtomicU64,
    /// Times an adaptive reactor stopped polling and went to sleep in epoll.
    pub reactor_parks: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DsStatsSnapshot {
    /// Operations per kind (each latency histogram's count).
    pub ops: Vec<(&'static str, u64)>,
    pub errors: Vec<(&'static str, u64)>,
    pub latency: Vec<(&'static str, LatencySnapshot)>,
    pub compounds: u64,
    pub replays: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub payload_copies: u64,
    pub zero_copy_writes: u64,
    pub zero_copy_no_buffer: u64,
    pub async_writes: u64,
    pub buffer_pool_exhausted: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_refused_per_address: u64,
    pub connections_idle_closed: u64,
    pub records_timed_out: u64,
    pub writes_not_admitted: u64,
    pub replies_stalled: u64,
    pub clients_evicted: u64,
    pub clients_refused: u64,
    pub control_calls: u64,
    pub control_refused: u64,
    pub control_fences: u64,
    pub control_updates: u64,
    pub control_update_failures: u64,
    pub control_bytes_read: u64,
    pub control_bytes_written: u64,
    pub copy_bytes: u64,
    pub copies_in_flight: u64,
    pub copies_finished: u64,
    pub copy_failures: u64,
    pub uring_ops: u64,
    pub syscall_ops: u64,
    pub direct_ops: u64,
    pub passthrough_ops: u64,
    pub fixed_file_ops: u64,
    pub fixed_files_full: u64,
    pub fdatasyncs: u64,
    pub commits_clean: u64,
    pub commits_covered: u64,
    pub volume_meta_writes: u64,
    pub volume_extents_allocated: u64,
    pub poll_spins: u64,
    pub reactor_parks: u64,
}

impl DsStatsSnapshot {
    pub fn op(&self, name: &str) -> u64 {
        self.ops.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or(0)
    }

    pub fn op_errors(&self, name: &str) -> u64 {
        self.errors.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or(0)
    }
}

#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl DsStats {
    /// Records one operation result: its latency and, unless `ok`, an error.
    #[inline]
    pub fn op(&self, k: OpKind, ok: bool, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency[k as usize].observe_ns(ns);
        if !ok {
            bump(&self.errors[k as usize], 1);
        }
    }

    pub fn snapshot(&self) -> DsStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latency: Vec<(&'static str, LatencySnapshot)> =
            OP_NAMES.iter().zip(self.latency.iter()).map(|(n, h)| (*n, h.snapshot())).collect();
        DsStatsSnapshot {
            ops: latency.iter().map(|(n, h)| (*n, h.count)).collect(),
            errors: OP_NAMES.iter().zip(self.errors.iter()).map(|(n, c)| (*n, g(c))).collect(),
            latency,
            compounds: g(&self.compounds),
            replays: g(&self.replays),
            bytes_read: g(&self.bytes_read),
            bytes_written: g(&self.bytes_written),
            payload_copies: g(&self.payload_copies),
            zero_copy_writes: g(&self.zero_copy_writes),
            zero_copy_no_buffer: g(&self.zero_copy_no_buffer),
            async_writes: g(&self.async_writes),
            buffer_pool_exhausted: g(&self.buffer_pool_exhausted),
            connections_accepted: g(&self.connections_accepted),
            connections_refused: g(&self.connections_refused),
            connections_refused_per_address: g(&self.connections_refused_per_address),
            connections_idle_closed: g(&self.connections_idle_closed),
            records_timed_out: g(&self.records_timed_out),
            writes_not_admitted: g(&self.writes_not_admitted),
            replies_stalled: g(&self.replies_stalled),
            clients_evicted: g(&self.clients_evicted),
            clients_refused: g(&self.clients_refused),
            control_calls: g(&self.control_calls),
            control_refused: g(&self.control_refused),
            control_fences: g(&self.control_fences),
            control_updates: g(&self.control_updates),
            control_update_failures: g(&self.control_update_failures),
            control_bytes_read: g(&self.control_bytes_read),
            control_bytes_written: g(&self.control_bytes_written),
            copy_bytes: g(&self.copy_bytes),
            copies_in_flight: g(&self.copies_in_flight),
            copies_finished: g(&self.copies_finished),
            copy_failures: g(&self.copy_failures),
            uring_ops: g(&self.uring_ops),
            syscall_ops: g(&self.syscall_ops),
            direct_ops: g(&self.direct_ops),
            passthrough_ops: g(&self.passthrough_ops),
            fixed_file_ops: g(&self.fixed_file_ops),
            fixed_files_full: g(&self.fixed_files_full),
            fdatasyncs: g(&self.fdatasyncs),
            commits_clean: g(&self.commits_clean),
            commits_covered: g(&self.commits_covered),
            volume_meta_writes: g(&self.volume_meta_writes),
            volume_extents_allocated: g(&self.volume_extents_allocated),
            poll_spins: g(&self.poll_spins),
            reactor_parks: g(&self.reactor_parks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_mds_buckets() {
        assert_eq!(LATENCY_BOUNDS_NS[0], 10_000);
        assert_eq!(LATENCY_BOUNDS_NS[9], 2_621_440_000);
        for w in LATENCY_BOUNDS_NS.windows(2) {
            assert_eq!(w[1], w[0] * 4);
        }
        for (le, ns) in LATENCY_LE.iter().zip(LATENCY_BOUNDS_NS) {
            assert_eq!(le.parse::<f64>().unwrap(), ns as f64 / 1e9, "{le}");
        }
        assert_eq!(LATENCY_LE[LATENCY_BUCKETS - 1], "+Inf");
    }

    #[test]
    fn buckets_are_le_bounds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(10_000), 0);
        assert_eq!(latency_bucket(10_001), 1);
        assert_eq!(latency_bucket(40_000), 1);
        assert_eq!(latency_bucket(2_621_440_000), 9);
        assert_eq!(latency_bucket(2_621_440_001), 10);
        assert_eq!(latency_bucket(u64::MAX), 10);
    }

    #[test]
    fn histogram_is_cumulative_with_sum_and_count() {
        let s = DsStats::default();
        let us = Duration::from_micros;
        s.op(OpKind::Read, true, us(5)); // le 10us
        s.op(OpKind::Read, true, us(10)); // le 10us (inclusive)
        s.op(OpKind::Read, false, us(100)); // le 160us
        s.op(OpKind::Read, true, Duration::from_secs(3)); // +Inf only
        s.op(OpKind::Write, false, us(50)); // le 160us
        let snap = s.snapshot();
        let (_, h) = snap.latency.iter().find(|(n, _)| *n == "read").unwrap();
        assert_eq!(h.cumulative, [2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4]);
        assert_eq!(h.count, 4);
        assert_eq!(h.sum_ns, 5_000 + 10_000 + 100_000 + 3_000_000_000);
        assert_eq!(snap.op("read"), 4);
        assert_eq!(snap.op_errors("read"), 1);
        assert_eq!(snap.op("write"), 1);
        assert_eq!(snap.op_errors("write"), 1);
        let (_, w) = snap.latency.iter().find(|(n, _)| *n == "write").unwrap();
        assert_eq!(w.cumulative, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(w.sum_ns, 50_000);
        // Untouched kinds are all zero.
        let (_, c) = snap.latency.iter().find(|(n, _)| *n == "commit").unwrap();
        assert_eq!(*c, LatencySnapshot::default());
        assert_eq!(snap.ops.len(), OP_KINDS);
        assert_eq!(snap.errors.len(), OP_KINDS);
    }
}

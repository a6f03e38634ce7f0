//! Counters for the metrics exporter: relaxed atomics, read with `snapshot()`.
//!
//! `payload_copies` counts every userspace memcpy of READ/WRITE payload bytes
//! (NFS and control-program I/O alike), one per copy of one request's
//! payload, whatever its size. Kernel copies (socket buffers, page cache) are
//! not counted. Where copies happen today:
//! - NFS WRITE with O_DIRECT: record buffer -> aligned pool buffer (1). With
//!   buffered I/O the payload is written straight from the record (0).
//! - NFS READ: read into a pool buffer that is written to the socket as its
//!   own iovec (0); only a small reply kept in the session reply cache is
//!   flattened (1).
//! - Control OBJ_READ: read into a Vec, then encoded into the reply (1).
//!   OBJ_WRITE writes from the received record (0).

use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Default)]
pub struct DsStats {
    pub ops: [AtomicU64; OP_KINDS],
    /// NFS COMPOUNDs executed (replays included).
    pub compounds: AtomicU64,
    /// COMPOUNDs answered from the reply cache.
    pub replays: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub payload_copies: AtomicU64,
    /// Requests refused with NFS4ERR_DELAY because a reactor's buffer pool was empty.
    pub buffer_pool_exhausted: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Control program calls served.
    pub control_calls: AtomicU64,
    pub control_bytes_read: AtomicU64,
    pub control_bytes_written: AtomicU64,
    /// I/O submitted through io_uring vs plain syscalls.
    pub uring_ops: AtomicU64,
    pub syscall_ops: AtomicU64,
    pub direct_ops: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DsStatsSnapshot {
    pub ops: Vec<(&'static str, u64)>,
    pub compounds: u64,
    pub replays: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub payload_copies: u64,
    pub buffer_pool_exhausted: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub control_calls: u64,
    pub control_bytes_read: u64,
    pub control_bytes_written: u64,
    pub uring_ops: u64,
    pub syscall_ops: u64,
    pub direct_ops: u64,
}

impl DsStatsSnapshot {
    pub fn op(&self, name: &str) -> u64 {
        self.ops.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or(0)
    }
}

#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl DsStats {
    pub fn op(&self, k: OpKind) {
        bump(&self.ops[k as usize], 1);
    }

    pub fn snapshot(&self) -> DsStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DsStatsSnapshot {
            ops: OP_NAMES.iter().zip(self.ops.iter()).map(|(n, c)| (*n, g(c))).collect(),
            compounds: g(&self.compounds),
            replays: g(&self.replays),
            bytes_read: g(&self.bytes_read),
            bytes_written: g(&self.bytes_written),
            payload_copies: g(&self.payload_copies),
            buffer_pool_exhausted: g(&self.buffer_pool_exhausted),
            connections_accepted: g(&self.connections_accepted),
            connections_refused: g(&self.connections_refused),
            control_calls: g(&self.control_calls),
            control_bytes_read: g(&self.control_bytes_read),
            control_bytes_written: g(&self.control_bytes_written),
            uring_ops: g(&self.uring_ops),
            syscall_ops: g(&self.syscall_ops),
            direct_ops: g(&self.direct_ops),
        }
    }
}

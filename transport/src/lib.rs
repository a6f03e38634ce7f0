//! The ONC RPC connection loop every listener shares: whole RPC messages
//! in, whole RPC messages out, whatever carries them.
//!
//! Used by the MDS NFS listener (`pnfs_mds::server`), the MDS control
//! listener (`pnfs_mds::pnfs::registry`) and the DS control listener
//! (`pnfs_ds::mds_link`). The DS's io_uring NFS reactor keeps its own
//! zero-copy reader but decodes record marks with the same rules
//! (`pnfs_protocol::record`: [`decode_fragment_header`],
//! [`add_fragment`], [`record_mark`]), so framing is defined once.
//!
//! Why a crate of its own: `pnfs-protocol` is sans-I/O ("knows nothing of
//! storage or sockets") and is used without a runtime by the fuzzers, the
//! sync test client and pnfs-bench; a cargo feature there would have made
//! its default build and tests skip this code. This crate is the one place
//! that knows both the RPC framing and tokio.
//!
//! # The unit is one RPC message
//!
//! A connection is a [`CallSource`] (yields the RPC messages the peer sent,
//! in order: calls, or replies to callbacks on a back channel) and a
//! [`ReplySink`] (takes reply and callback messages). Neither exposes bytes
//! or record marks, so a listener written against them runs unchanged on
//! another transport. The listener keeps its own policy: admission per
//! address, the call-header check (`pnfs_protocol::rpc::CallPolicy`), the
//! credential check, where a call runs, and when its reply may go.
//!
//! Limits the transport enforces for every listener, each named by the
//! listener's config ([`tcp::TcpLimits`]):
//! - a message larger than the limit is refused when its header claims it,
//!   before any of its bytes are buffered ([`Ended::TooLarge`]);
//! - no message for the idle timeout closes ([`Ended::Idle`]); a message
//!   begun must complete within the record timeout, counting only the time
//!   the server waited for the peer ([`Ended::Incomplete`]);
//! - read budget: while the replies queued unwritten are over the reply
//!   budget (bytes or count), no more calls are read, so a peer that does
//!   not read its replies stops being read and costs only its own budget;
//!   one that reads none for the write-stall time is closed
//!   ([`Ended::RepliesUnread`]).
//!
//! Replies go out two ways: [`ReplySink::send`] queues one for the
//! connection's writer task (from any thread, never waiting), and
//! [`ReplySink::write_now`] writes a [`ReplyBatch`] from the caller's own
//! task, several replies in one write, with no hand-off (the MDS's inline
//! request path). Both paths write whole messages under one lock, so
//! messages never interleave.
//!
//! # RPC-over-RDMA next (RFC 8166, not implemented here)
//!
//! RPC-over-RDMA version 1 puts a transport header (xid, credits, and three
//! chunk lists: read list, write list, reply chunk) in front of each RPC
//! message, sent as one RDMA Send; there are no record marks. It maps onto
//! these traits as follows:
//! - Calls: the RDMA [`CallSource`] takes a received Send, checks its
//!   transport header, bounds the inline part plus the lengths every read
//!   chunk claims by the same max message size *before* posting any RDMA
//!   Read (the [`Ended::TooLarge`] rule), pulls each read chunk with RDMA
//!   Read, and splices it in at its XDR position. A read chunk thus becomes
//!   bytes of the one contiguous message the listener sees (a WRITE's data,
//!   or the whole call for a position-zero chunk in an RDMA_NOMSG "long
//!   call"); the listeners decode the same XDR as over TCP.
//! - Replies: the RDMA [`ReplySink`] keeps each call's write list and reply
//!   chunk by xid. A reply that fits the inline threshold goes as one
//!   RDMA_MSG Send; a larger one is RDMA-Written into the call's reply
//!   chunk and announced by an RDMA_NOMSG Send; with neither, an RDMA_ERROR.
//!   A write-list chunk (bulk READ data placed directly) needs the payload
//!   apart from the reply's XDR, as the DS reactor's replies already carry
//!   it; that is a richer message type added with RDMA, for the DS NFS path
//!   only (MDS and control replies carry no bulk data).
//! - Budgets: credits granted in each reply are RDMA's flow control; the
//!   read budget becomes "post no more receives than credits granted", and
//!   a batch of [`ReplySink::write_now`] is one chained post of Sends.
//! - Back channel: RFC 8167 (bidirectional RPC-over-RDMA) carries NFSv4.1
//!   callbacks on the same connection, through the same [`ReplyQueue`].
//! - What stays TCP-only: record marks, the record timeout, and partial
//!   headers ([`Ended::Truncated`]); an RDMA message arrives whole.

pub mod control;
mod queue;
pub mod tcp;

pub use queue::{Closed, ReplyQueue, ReplyReceiver, REPLY_BUDGET_COUNT};

use pnfs_protocol::record::RecordError;
use std::future::Future;
use std::time::Duration;

#[cfg(doc)]
use pnfs_protocol::record::{add_fragment, decode_fragment_header, record_mark};

/// Why a connection ended, as its transport saw it.
#[derive(Debug)]
pub enum Ended {
    /// The peer closed between messages.
    Closed,
    /// The peer closed in the middle of a message (part of a header or body).
    Truncated,
    /// No message for this long (the idle timeout).
    Idle(Duration),
    /// A message begun was not complete within this long.
    Incomplete(Duration),
    /// A message claimed more than the limit; refused before its bytes
    /// were buffered.
    TooLarge(RecordError),
    /// The peer read none of its replies for this long.
    RepliesUnread(Duration),
    /// The reply writer is gone: the peer stopped reading, or the
    /// connection broke while writing.
    WriterGone,
    /// A call failed the listener's check (why); its refusal was queued.
    Refused(&'static str),
    Io(std::io::Error),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Closed => write!(f, "the peer closed the connection"),
            Ended::Truncated => write!(f, "the peer closed the connection in the middle of a message"),
            Ended::Idle(d) => write!(f, "no request for {d:?}"),
            Ended::Incomplete(d) => write!(f, "a message was not complete within {d:?}"),
            Ended::TooLarge(e) => write!(f, "{e}"),
            Ended::RepliesUnread(d) => write!(f, "it read none of its replies for {d:?}"),
            Ended::WriterGone => write!(f, "the reply writer stopped"),
            Ended::Refused(why) => write!(f, "a call was refused: {why}"),
            Ended::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The receiving half of a connection: the peer's RPC messages, in order.
pub trait CallSource: Send {
    /// Waits for room under the reply budget, then for the next messages:
    /// at least one, every one that arrived together (so the caller can
    /// answer them in one write). Err says why the connection is over.
    fn next_batch(&mut self) -> impl Future<Output = Result<Vec<Vec<u8>>, Ended>> + Send;

    /// Changes the idle timeout from the next wait on (control listeners
    /// give an unauthenticated peer less).
    fn set_idle_timeout(&mut self, idle: Duration);
}

/// The sending half of a connection: whole reply (and callback) messages.
pub trait ReplySink: Clone + Send + Sync + 'static {
    /// The queue to the connection's writer task; callbacks and replies
    /// made on other threads go there.
    fn queue(&self) -> &ReplyQueue;

    /// Queues one message for the writer task, never waiting.
    fn send(&self, msg: Vec<u8>) -> Result<(), Closed> {
        self.queue().send(msg)
    }

    /// Waits until the queued replies are under budget; false when the
    /// writer is gone.
    fn wait_for_room(&self) -> impl Future<Output = bool> + Send {
        self.queue().wait_for_room()
    }

    /// Writes `batch` now from the caller's task, in one write where the
    /// transport allows; empties it. Err: the connection is to close.
    fn write_now(&self, batch: &mut ReplyBatch) -> impl Future<Output = Result<(), Ended>> + Send;
}

/// Replies a connection's own task made, written together by
/// [`ReplySink::write_now`].
#[derive(Default)]
pub struct ReplyBatch {
    msgs: Vec<Vec<u8>>,
    bytes: usize,
}

impl ReplyBatch {
    pub fn push(&mut self, msg: Vec<u8>) {
        self.bytes += msg.len();
        self.msgs.push(msg);
    }

    /// Bytes of the messages held (framing not counted).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    pub fn messages(&self) -> &[Vec<u8>] {
        &self.msgs
    }

    pub fn clear(&mut self) {
        self.msgs.clear();
        self.bytes = 0;
    }
}

/// A connection's writer task; awaited once the connection's other
/// holders of its queue are gone.
pub struct WriterTask(tokio::task::JoinHandle<Result<(), Ended>>);

impl WriterTask {
    /// Waits until every queued message is written (or the writer failed);
    /// why it stopped early, if it did.
    pub async fn finish(self) -> Result<(), Ended> {
        self.0.await.unwrap_or_else(|e| Err(Ended::Io(std::io::Error::other(e))))
    }
}

/// An accepted connection, split.
pub struct Connection<C: CallSource, S: ReplySink> {
    pub calls: C,
    pub replies: S,
    pub writer: WriterTask,
}

//! A connection's queue of outgoing messages and its budget.
//!
//! Transport-neutral: the TCP writer drains it into record-marked writes,
//! an RPC-over-RDMA writer would drain it into Sends. Queuing never waits,
//! so no server thread ever blocks on a slow reader; the connection's
//! reader checks [`ReplyQueue::wait_for_room`] before it takes more calls
//! instead (the read budget).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Replies one connection may have queued unread by default, whatever
/// their size (a byte budget bounds their bytes).
pub const REPLY_BUDGET_COUNT: usize = 1024;

/// A connection's outgoing messages (RPC replies, and callbacks when it is a
/// back channel), whole, without any transport framing.
#[derive(Clone)]
pub struct ReplyQueue {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<Queued>,
}

struct Queued {
    /// Bytes and messages queued and not yet written.
    bytes: AtomicUsize,
    count: AtomicUsize,
    budget_bytes: usize,
    budget_count: usize,
    closed: AtomicBool,
    /// Signalled when the writer is done with messages or goes away.
    drained: Notify,
}

/// The writer's end of a [`ReplyQueue`].
pub struct ReplyReceiver {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<Queued>,
}

/// The connection is gone.
#[derive(Debug)]
pub struct Closed;

impl ReplyQueue {
    /// A queue with no byte budget and [`REPLY_BUDGET_COUNT`] messages.
    pub fn new() -> (ReplyQueue, ReplyReceiver) {
        ReplyQueue::with_budget(usize::MAX, REPLY_BUDGET_COUNT)
    }

    /// A queue whose reader waits while `bytes` or `count` messages are
    /// queued unwritten.
    pub fn with_budget(bytes: usize, count: usize) -> (ReplyQueue, ReplyReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Queued {
            bytes: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            budget_bytes: bytes,
            budget_count: count,
            closed: AtomicBool::new(false),
            drained: Notify::new(),
        });
        (ReplyQueue { tx, queued: queued.clone() }, ReplyReceiver { rx, queued })
    }

    /// Queues `msg` for the writer without waiting.
    pub fn send(&self, msg: Vec<u8>) -> Result<(), Closed> {
        let len = msg.len();
        self.queued.bytes.fetch_add(len, Ordering::Relaxed);
        self.queued.count.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).map_err(|_| {
            self.queued.bytes.fetch_sub(len, Ordering::Relaxed);
            self.queued.count.fetch_sub(1, Ordering::Relaxed);
            Closed
        })
    }

    /// True while the queued messages are at or over the budget.
    pub fn is_over_budget(&self) -> bool {
        self.queued.bytes.load(Ordering::Relaxed) >= self.queued.budget_bytes
            || self.queued.count.load(Ordering::Relaxed) >= self.queued.budget_count
    }

    /// Waits until the queued replies are under budget; false when the
    /// writer went away (the peer stopped reading, or the connection broke).
    pub async fn wait_for_room(&self) -> bool {
        loop {
            if self.queued.closed.load(Ordering::Acquire) {
                return false;
            }
            if !self.is_over_budget() {
                return true;
            }
            self.queued.drained.notified().await;
        }
    }
}

impl ReplyReceiver {
    /// The next message, counted off the budget as it is taken.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let msg = self.rx.recv().await?;
        self.written_one(msg.len());
        Some(msg)
    }

    /// For threads outside the runtime (tests).
    pub fn blocking_recv(&mut self) -> Option<Vec<u8>> {
        let msg = self.rx.blocking_recv()?;
        self.written_one(msg.len());
        Some(msg)
    }

    /// Takes every queued message (up to `max`, at least one; 0 when the
    /// queue ended). They stay counted against the budget until
    /// [`ReplyReceiver::written`]: a batch being written to a peer that
    /// does not read is still unread.
    pub async fn recv_many(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> usize {
        self.rx.recv_many(out, max).await
    }

    /// Counts messages taken by [`ReplyReceiver::recv_many`] off the budget.
    pub fn written(&self, msgs: &[Vec<u8>]) {
        let bytes: usize = msgs.iter().map(Vec::len).sum();
        self.queued.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.queued.count.fetch_sub(msgs.len(), Ordering::Relaxed);
        self.queued.drained.notify_one();
    }

    fn written_one(&self, len: usize) {
        self.queued.bytes.fetch_sub(len, Ordering::Relaxed);
        self.queued.count.fetch_sub(1, Ordering::Relaxed);
        // One waiter at most (the connection's reader); a stored permit
        // covers a wake-up that comes before it waits.
        self.queued.drained.notify_one();
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        self.queued.closed.store(true, Ordering::Release);
        self.queued.drained.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reply_queue_holds_its_reader_back_not_its_senders() {
        let (q, mut rx) = ReplyQueue::with_budget(5000, REPLY_BUDGET_COUNT);
        // Senders never wait, even far past the budget.
        for _ in 0..10 {
            q.send(vec![0; 1000]).unwrap();
        }
        assert!(q.is_over_budget());
        // The reader waits until the writer takes enough.
        let waiting = {
            let q = q.clone();
            tokio::spawn(async move { q.wait_for_room().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        for _ in 0..5 {
            rx.recv().await.unwrap();
        }
        // 5000 queued is still at the budget.
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        rx.recv().await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap());
        // Many small replies count too.
        let (q2, _rx2) = ReplyQueue::new();
        for _ in 0..REPLY_BUDGET_COUNT {
            q2.send(vec![]).unwrap();
        }
        assert!(q2.is_over_budget());
        // A writer that went away (peer gone or timed out) ends the wait.
        drop(rx);
        assert!(!q.wait_for_room().await);
        assert!(q.send(vec![1]).is_err());
    }

    #[tokio::test]
    async fn a_batch_counts_until_it_is_written() {
        let (q, mut rx) = ReplyQueue::with_budget(usize::MAX, 3);
        for i in 0..3u8 {
            q.send(vec![i]).unwrap();
        }
        let mut batch = Vec::new();
        assert_eq!(rx.recv_many(&mut batch, 64).await, 3);
        assert!(q.is_over_budget(), "taken but unwritten replies still count");
        rx.written(&batch);
        assert!(!q.is_over_budget());
        assert!(tokio::time::timeout(Duration::from_secs(5), q.wait_for_room()).await.unwrap());
    }
}

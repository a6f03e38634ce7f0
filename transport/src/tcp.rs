//! ONC RPC over TCP (RFC 5531 section 11): record marking, one read loop,
//! one reply writer.

use crate::{CallSource, Connection, Ended, ReplyBatch, ReplyQueue, ReplyReceiver, ReplySink, WriterTask};
use pnfs_protocol::record::{record_header, RecordReader};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Bytes asked of the socket per read: one read can carry many small calls.
const READ_CHUNK: usize = 64 * 1024;
/// Queued replies the writer task gathers into one write.
const WRITE_BATCH: usize = 64;
/// Replies gathered into one write up to about this many bytes.
const GATHER_BYTES: usize = 256 * 1024;
/// A reply larger than this is written from its own buffer.
const GATHER_INLINE: usize = 64 * 1024;

/// One listener's limits for each of its connections.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Largest record accepted; a larger claim closes the connection.
    pub max_record: usize,
    /// No request for this long closes the connection.
    pub idle: Duration,
    /// A record begun must be complete within this long (time the server
    /// spent on earlier calls not counted), nor take longer than `idle`.
    pub record_timeout: Duration,
    /// While this many reply bytes, or `reply_budget_count` replies, are
    /// queued unwritten, no more calls are read.
    pub reply_budget_bytes: usize,
    pub reply_budget_count: usize,
    /// A write of replies not complete within this long (the peer reads
    /// nothing) closes the connection.
    pub write_stall: Duration,
}

/// Splits an accepted socket into the transport's halves and starts its
/// writer task (on the current runtime).
pub fn accept(sock: TcpStream, limits: &TcpLimits) -> Connection<TcpCalls, TcpReplies> {
    let _ = sock.set_nodelay(true);
    let (rd, wr) = sock.into_split();
    let (queue, rx) = ReplyQueue::with_budget(limits.reply_budget_bytes, limits.reply_budget_count);
    let out = Arc::new(Mutex::new(Out { wr, gather: Vec::new() }));
    let writer = WriterTask(tokio::spawn(write_queued(rx, out.clone(), limits.write_stall)));
    let calls = TcpCalls {
        rd,
        records: RecordReader::new(limits.max_record),
        buf: vec![0; READ_CHUNK],
        idle: limits.idle,
        record_timeout: limits.record_timeout,
        partial_since: None,
        busy_since: None,
        budget: queue.clone(),
    };
    Connection { calls, replies: TcpReplies { queue, out, stall: limits.write_stall }, writer }
}

/// The read loop: record-marked calls off the socket.
pub struct TcpCalls {
    rd: OwnedReadHalf,
    records: RecordReader,
    buf: Vec<u8>,
    idle: Duration,
    record_timeout: Duration,
    /// When the first byte of the record now buffered arrived, moved on by
    /// the time the server itself spent (so its own backpressure never
    /// counts against the peer).
    partial_since: Option<Instant>,
    /// When the last read returned.
    busy_since: Option<Instant>,
    /// The reply queue, for the read budget.
    budget: ReplyQueue,
}

impl CallSource for TcpCalls {
    async fn next_batch(&mut self) -> Result<Vec<Vec<u8>>, Ended> {
        loop {
            // Read budget: a peer that leaves its replies unread gets no
            // more calls read; only this connection waits.
            if !self.budget.wait_for_room().await {
                return Err(Ended::WriterGone);
            }
            if let (Some(p), Some(b)) = (self.partial_since.as_mut(), self.busy_since) {
                *p += b.elapsed();
            }
            let wait = match self.partial_since {
                Some(t) => (t + self.record_timeout).saturating_duration_since(Instant::now()).min(self.idle),
                None => self.idle,
            };
            let n = match tokio::time::timeout(wait, self.rd.read(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(if self.records.is_idle() { Ended::Closed } else { Ended::Truncated }),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(Ended::Io(e)),
                Err(_) if self.partial_since.is_some() => return Err(Ended::Incomplete(self.record_timeout.min(self.idle))),
                Err(_) => return Err(Ended::Idle(self.idle)),
            };
            let now = Instant::now();
            self.busy_since = Some(now);
            let recs = self.records.feed_all(&self.buf[..n]).map_err(Ended::TooLarge)?;
            if self.records.is_idle() {
                self.partial_since = None;
            } else if self.partial_since.is_none() || !recs.is_empty() {
                self.partial_since = Some(now);
            }
            if !recs.is_empty() {
                return Ok(recs);
            }
        }
    }

    fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle = idle;
    }
}

/// The reply writer: record marking, gathered writes, a stall limit.
#[derive(Clone)]
pub struct TcpReplies {
    queue: ReplyQueue,
    out: Arc<Mutex<Out>>,
    stall: Duration,
}

/// The write half and its gather buffer, shared by the writer task and
/// direct writers; whole batches under the lock, so records never
/// interleave.
struct Out {
    wr: OwnedWriteHalf,
    gather: Vec<u8>,
}

impl Out {
    /// Record-marks `msgs` and writes them: small ones gathered into
    /// writes of up to [`GATHER_BYTES`], a large one written from its own
    /// buffer (no copy, and no gather buffer the size of a batch of
    /// 16 MiB reads).
    async fn write_marked(&mut self, msgs: &[Vec<u8>]) -> std::io::Result<()> {
        self.gather.clear();
        for m in msgs {
            self.gather.extend_from_slice(&record_header(m.len()));
            if m.len() > GATHER_INLINE {
                self.wr.write_all(&self.gather).await?;
                self.gather.clear();
                self.wr.write_all(m).await?;
                continue;
            }
            self.gather.extend_from_slice(m);
            if self.gather.len() >= GATHER_BYTES {
                self.wr.write_all(&self.gather).await?;
                self.gather.clear();
            }
        }
        if !self.gather.is_empty() {
            self.wr.write_all(&self.gather).await?;
        }
        Ok(())
    }
}

/// Writes `msgs` under the lock, within `stall`.
async fn write_locked(out: &Mutex<Out>, msgs: &[Vec<u8>], stall: Duration) -> Result<(), Ended> {
    let write = async { out.lock().await.write_marked(msgs).await };
    match tokio::time::timeout(stall, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ended::Io(e)),
        Err(_) => Err(Ended::RepliesUnread(stall)),
    }
}

/// The writer task: every queued message waiting goes out in one write.
/// Dropping `rx` when it stops wakes a reader waiting for reply room.
async fn write_queued(mut rx: ReplyReceiver, out: Arc<Mutex<Out>>, stall: Duration) -> Result<(), Ended> {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let r = write_locked(&out, &batch, stall).await;
        rx.written(&batch);
        batch.clear();
        r?;
    }
    Ok(())
}

impl ReplySink for TcpReplies {
    fn queue(&self) -> &ReplyQueue {
        &self.queue
    }

    async fn write_now(&self, batch: &mut ReplyBatch) -> Result<(), Ended> {
        if batch.is_empty() {
            return Ok(());
        }
        let r = write_locked(&self.out, batch.messages(), self.stall).await;
        batch.clear();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::record::LAST_FRAGMENT;
    use std::io::{Read, Write};

    const LIMIT: Duration = Duration::from_secs(20);

    fn limits() -> TcpLimits {
        TcpLimits {
            max_record: 4096,
            idle: LIMIT,
            record_timeout: LIMIT,
            reply_budget_bytes: 1 << 20,
            reply_budget_count: 1024,
            write_stall: LIMIT,
        }
    }

    /// A listener and a blocking client socket connected to it; the
    /// server side comes back as the transport's halves.
    async fn pair(l: TcpLimits) -> (Connection<TcpCalls, TcpReplies>, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::task::spawn_blocking(move || std::net::TcpStream::connect(addr).unwrap());
        let (sock, _) = listener.accept().await.unwrap();
        let client = client.await.unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        (accept(sock, &l), client)
    }

    fn fragment(data: &[u8], last: bool) -> Vec<u8> {
        let mut v = ((data.len() as u32) | if last { LAST_FRAGMENT } else { 0 }).to_be_bytes().to_vec();
        v.extend_from_slice(data);
        v
    }

    /// The first `n` records the client receives (blocking reads, each
    /// bounded by the socket's read timeout).
    async fn read_records(client: &std::net::TcpStream, n: usize) -> Vec<Vec<u8>> {
        let mut r = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || {
            let mut rr = RecordReader::new(1 << 20);
            let mut recs = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while recs.len() < n {
                let got = r.read(&mut buf).unwrap();
                assert!(got > 0, "closed early");
                recs.extend(rr.feed_all(&buf[..got]).unwrap());
            }
            recs
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn fragments_reassemble_and_records_of_one_read_come_together() {
        let (mut c, client) = pair(limits()).await;
        let mut wire = fragment(b"hel", false);
        wire.extend(fragment(b"lo", false));
        wire.extend(fragment(b"", true));
        wire.extend(fragment(b"second", true));
        let mut w = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || w.write_all(&wire).unwrap()).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap().unwrap());
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"second".to_vec()]);
        // Replies: one queued, two written directly; all record-marked, in order.
        c.replies.send(b"q".to_vec()).unwrap();
        let mut direct = ReplyBatch::default();
        direct.push(b"d1".to_vec());
        direct.push(b"d22".to_vec());
        assert_eq!(direct.bytes(), 5);
        c.replies.write_now(&mut direct).await.unwrap();
        assert!(direct.is_empty());
        let bytes = read_records(&client, 3).await;
        assert_eq!(bytes.len(), 3);
        assert!(bytes.contains(&b"q".to_vec()));
        let d1 = bytes.iter().position(|m| m == b"d1").unwrap();
        assert_eq!(bytes[d1 + 1], b"d22".to_vec(), "a direct batch stays together and in order");
    }

    #[tokio::test]
    async fn large_replies_are_written_whole_and_in_order_between_small_ones() {
        let (c, client) = pair(limits()).await;
        let sizes = [10, GATHER_INLINE + 1, 3, GATHER_BYTES + 5, 0, 7];
        let mut batch = ReplyBatch::default();
        for (i, n) in sizes.iter().enumerate() {
            batch.push(vec![i as u8; *n]);
        }
        c.replies.write_now(&mut batch).await.unwrap();
        let got = read_records(&client, 6).await;
        for (i, (rec, n)) in got.iter().zip(sizes).enumerate() {
            assert_eq!(rec.len(), n, "reply {i}");
            assert!(rec.iter().all(|b| *b == i as u8), "reply {i}");
        }
    }

    #[tokio::test]
    async fn oversized_record_is_refused_at_its_header() {
        let (mut c, client) = pair(limits()).await;
        let mut w = client.try_clone().unwrap();
        // Claims 1 GiB, sends 4 bytes of it.
        tokio::task::spawn_blocking(move || w.write_all(&(LAST_FRAGMENT | (1 << 30)).to_be_bytes()).unwrap()).await.unwrap();
        match tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap() {
            Err(Ended::TooLarge(e)) => assert!(e.to_string().contains("4096"), "{e}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Fragments that add up past the limit are refused too.
        let (mut c, client) = pair(limits()).await;
        let mut w = client.try_clone().unwrap();
        let mut wire = fragment(&[0; 3000], false);
        wire.extend_from_slice(&(LAST_FRAGMENT | 3000).to_be_bytes());
        tokio::task::spawn_blocking(move || w.write_all(&wire).unwrap()).await.unwrap();
        assert!(matches!(tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap(), Err(Ended::TooLarge(_))));
    }

    #[tokio::test]
    async fn partial_header_then_close_is_truncated_and_clean_close_is_closed() {
        let (mut c, client) = pair(limits()).await;
        let mut w = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || w.write_all(&[0x80, 0]).unwrap()).await.unwrap();
        drop(client);
        assert!(matches!(tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap(), Err(Ended::Truncated)));
        let (mut c, client) = pair(limits()).await;
        drop(client);
        assert!(matches!(tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap(), Err(Ended::Closed)));
    }

    #[tokio::test]
    async fn idle_and_incomplete_records_close() {
        let l = TcpLimits { idle: Duration::from_millis(300), record_timeout: Duration::from_millis(300), ..limits() };
        let (mut c, _client) = pair(l.clone()).await;
        let t = Instant::now();
        assert!(matches!(tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap(), Err(Ended::Idle(_))));
        assert!(t.elapsed() >= Duration::from_millis(300));
        // A record begun and never finished.
        let (mut c, client) = pair(l).await;
        let mut w = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || w.write_all(&fragment(b"ab", true)[..5]).unwrap()).await.unwrap();
        assert!(matches!(tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap(), Err(Ended::Incomplete(_))));
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_stops_being_read_then_is_closed() {
        let l = TcpLimits { reply_budget_bytes: 64 * 1024, write_stall: Duration::from_millis(500), ..limits() };
        let (mut c, client) = pair(l).await;
        // The peer sends a call, and never reads: replies fill the socket
        // buffers, then the queue, and the reader stops taking calls.
        let mut w = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || w.write_all(&fragment(b"call", true)).unwrap()).await.unwrap();
        assert_eq!(c.calls.next_batch().await.unwrap(), vec![b"call".to_vec()]);
        let reply = vec![7u8; 32 * 1024];
        let mut sent = 0usize;
        while !c.replies.queue().is_over_budget() && sent < 4096 {
            c.replies.send(reply.clone()).unwrap();
            sent += 1;
            tokio::task::yield_now().await;
        }
        assert!(sent < 4096, "the budget never filled: the socket took {sent} replies");
        // More calls are waiting, but the reader does not take them: it
        // waits for reply room until the writer gives up on the peer.
        let mut w = client.try_clone().unwrap();
        tokio::task::spawn_blocking(move || w.write_all(&fragment(b"more", true)).unwrap()).await.unwrap();
        let r = tokio::time::timeout(LIMIT, c.calls.next_batch()).await.unwrap();
        assert!(matches!(r, Err(Ended::WriterGone)), "{r:?}");
        drop(c.calls);
        drop(c.replies);
        assert!(matches!(c.writer.finish().await, Err(Ended::RepliesUnread(_))));
        drop(client);
    }
}

//! Asynchronous I/O on a reactor's io_uring (READs, and UNSTABLE WRITEs
//! from pool buffers): up to `ds.max_inflight_io_per_reactor` jobs
//! ([`IoJob`]) in flight per reactor, prepared one by one ([`Aio::start`]: an SQE naming the registered pool buffer and
//! the file's registered slot) and sent to the kernel together
//! ([`Aio::submit`]: one io_uring_enter for every read prepared since the
//! last one), completed in batches ([`Aio::reap`]).
//!
//! Bookkeeping is a pre-allocated table of in-flight reads; an entry's
//! index is the `user_data` of its SQE (`SYNC_TAG` in engine.rs is the
//! engine's own submit-and-wait). An entry owns everything the kernel or
//! the reply needs until its completion: the pool buffer, the object (so
//! the descriptor stays open) and the caller's context `T` (for the
//! reactor: the suspended COMPOUND and its reply-queue permit). A read that
//! comes back short but not at the end of the object is resubmitted for the
//! rest, as the synchronous [`crate::storage::Engine::read`] loops.
//!
//! Wake-ups: an eventfd registered with the ring ([`Aio::wait`], an
//! `AsyncFd`) becomes readable on every completion, so the reactor's
//! runtime wakes in epoll (park) or sees it on its next zero-timeout poll
//! (busy, adaptive). The counter is never read: tokio registers it
//! edge-triggered, and each completion signals a new edge; after draining
//! the CQ the readiness is cleared and the CQ checked once more, so a
//! completion between the drain and the clear is not lost.
//!
//! Dropping an [`Aio`] waits for its reads in flight (the kernel may still
//! write into their buffers).

use crate::storage::IO_ALIGN;
use crate::storage::{is_aligned, Engine, Object, PoolBuf, SYNC_TAG};
use crate::stats::bump;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;

/// One READ or WRITE for the engine. A read: `count` bytes at `offset` of
/// `obj` into `buf` (taken from the pool by the caller, so an empty pool is
/// its DELAY). A write (`write`): `buf[..count]` to `offset`; the object's
/// dirty generation counts it when it completed (failed or not), before
/// the caller sees the outcome, as [`Engine::write_pooled`] does.
/// Files backend only: a volume object's I/O maps extents and stays
/// synchronous ([`IoJob::supported`]).
pub struct IoJob {
    pub obj: Arc<Object>,
    pub offset: u64,
    pub count: usize,
    pub buf: PoolBuf,
    pub write: bool,
}

impl IoJob {
    /// Whether I/O on `obj` can go asynchronous (it is a file of its own).
    pub fn supported(obj: &Object) -> bool {
        obj.files().is_some()
    }
}

/// The outcome of a job, with the job given back: for a read the bytes
/// read into `job.buf` (short only at the end of the object, at most
/// `job.count`), for a write the bytes written; or the error.
pub type IoDone = io::Result<usize>;

struct Inflight<T> {
    job: IoJob,
    /// Bytes read or written so far.
    done: usize,
    /// Through the O_DIRECT descriptor (length rounded up to the alignment).
    direct: bool,
    ctx: T,
}

pub struct Aio<T> {
    engine: Rc<Engine>,
    table: RefCell<Vec<Option<Inflight<T>>>>,
    free: RefCell<Vec<u32>>,
    /// Entries pushed to the submission queue and not submitted yet.
    prepared: Cell<u32>,
    /// Completions copied out of the ring, reused by every reap.
    scratch: RefCell<Vec<(u64, i32)>>,
    /// Writes in flight (counted in the table too).
    writes: Cell<u32>,
    /// Woken when an entry frees up.
    room: tokio::sync::Notify,
    efd: AsyncFd<OwnedFd>,
}

impl<T> Aio<T> {
    /// Asynchronous reads on `engine`'s ring with at most `limit` in flight;
    /// None when the engine has no ring (pread fallback: reads stay
    /// synchronous) or the eventfd cannot be set up. Call inside a tokio
    /// runtime with I/O enabled.
    pub fn new(engine: Rc<Engine>, limit: usize) -> Option<Aio<T>> {
        let ring = engine.ring()?;
        assert!(limit > 0 && limit < SYNC_TAG as usize, "in-flight limit out of range");
        let sq = ring.borrow_mut().submission().capacity();
        // Every read in flight has at most one entry in the rings: the
        // completion queue (twice the submission queue) never overflows.
        let limit = limit.min(sq);
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            log::warn!("eventfd: {}; READs and WRITEs stay synchronous", io::Error::last_os_error());
            return None;
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if let Err(e) = ring.borrow().submitter().register_eventfd(fd.as_raw_fd()) {
            log::warn!("io_uring eventfd registration: {e}; READs and WRITEs stay synchronous");
            return None;
        }
        // SAFETY: the AsyncFd owns the descriptor, which stays open as long
        // as it is registered.
        let efd = match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
            Ok(a) => a,
            Err(e) => {
                let e = e.into_parts().1;
                log::warn!("eventfd registration with the runtime: {e}; READs and WRITEs stay synchronous");
                let _ = ring.borrow().submitter().unregister_eventfd();
                return None;
            }
        };
        Some(Aio {
            engine,
            table: RefCell::new((0..limit).map(|_| None).collect()),
            free: RefCell::new((0..limit as u32).rev().collect()),
            prepared: Cell::new(0),
            writes: Cell::new(0),
            scratch: RefCell::new(Vec::with_capacity(2 * sq)),
            room: tokio::sync::Notify::new(),
            efd,
        })
    }

    pub fn limit(&self) -> usize {
        self.table.borrow().len()
    }

    pub fn in_flight(&self) -> usize {
        self.limit() - self.free.borrow().len()
    }

    /// Writes in flight (prepared or submitted, not reaped).
    pub fn writes_in_flight(&self) -> usize {
        self.writes.get() as usize
    }

    pub fn has_room(&self) -> bool {
        !self.free.borrow().is_empty()
    }

    /// Waits until an entry is free (submits what is prepared first, so
    /// the reads that will free one are on their way).
    pub async fn room(&self) {
        while !self.has_room() {
            self.submit();
            let n = self.room.notified();
            if self.has_room() {
                break;
            }
            n.await;
        }
    }

    /// Prepares the read (SQE pushed, not submitted): Err gives everything
    /// back when the table is full (callers wait for [`Aio::room`] first).
    pub fn start(&self, job: IoJob, ctx: T) -> Result<(), (IoJob, T)> {
        let Some((_, direct_file)) = job.obj.files() else { return Err((job, ctx)) };
        if job.write && (job.count == 0 || job.count > job.buf.capacity()) {
            return Err((job, ctx));
        }
        let direct = direct_file.is_some() && is_aligned(job.offset) && (!job.write || is_aligned(job.count as u64));
        let Some(idx) = self.free.borrow_mut().pop() else { return Err((job, ctx)) };
        let count = if job.write { job.count } else { job.count.min(job.buf.capacity() - IO_ALIGN) };
        let mut e = Inflight { job: IoJob { count, ..job }, done: 0, direct, ctx };
        if direct {
            bump(&self.engine.stats().direct_ops, 1);
        }
        if let Err(()) = self.push(idx, &mut e) {
            self.free.borrow_mut().push(idx);
            return Err((e.job, e.ctx));
        }
        if e.job.write {
            self.writes.set(self.writes.get() + 1);
            bump(&self.engine.stats().async_writes, 1);
        }
        let mut t = self.table.borrow_mut();
        debug_assert!(t[idx as usize].is_none(), "in-flight entry {idx} reused");
        t[idx as usize] = Some(e);
        Ok(())
    }

    /// Pushes the SQE for the rest of entry `idx`'s read.
    fn push(&self, idx: u32, e: &mut Inflight<T>) -> Result<(), ()> {
        let Some(ring) = self.engine.ring() else { return Err(()) };
        let Some((file, direct)) = e.job.obj.files() else { return Err(()) };
        let (file, end) = match (direct, e.direct) {
            // Round the length up to the alignment; the slack is ours.
            (Some(d), true) => (d, e.job.count.div_ceil(IO_ALIGN) * IO_ALIGN),
            _ => (file, e.job.count),
        };
        debug_assert!(e.done < end && end <= e.job.buf.capacity());
        let buf = &mut e.job.buf.as_mut_slice()[e.done..end];
        let sqe = self
            .engine
            .rw_entry(file, buf.as_mut_ptr(), buf.len() as u32, e.job.offset + e.done as u64, Some(e.job.buf.index()), e.job.write)
            .user_data(idx as u64);
        let mut r = ring.borrow_mut();
        if r.submission().is_full() {
            if let Err(err) = r.submit() {
                log::warn!("io_uring submit: {err}");
                return Err(());
            }
            self.prepared.set(0);
        }
        // SAFETY: the buffer (and the descriptor, through the object) is
        // owned by the table entry until its completion is reaped, and an
        // Aio is not dropped before every entry completed.
        unsafe { r.submission().push(&sqe).map_err(|_| ())? };
        self.prepared.set(self.prepared.get() + 1);
        Ok(())
    }

    /// Sends every prepared read to the kernel: one io_uring_enter.
    pub fn submit(&self) {
        if self.prepared.get() == 0 {
            return;
        }
        let Some(ring) = self.engine.ring() else { return };
        let mut r = ring.borrow_mut();
        loop {
            match r.submit() {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // Left in the queue: the next submit (or a submit-and-wait) sends them.
                Err(e) => {
                    log::warn!("io_uring submit: {e}");
                    return;
                }
            }
        }
        // Entries the kernel did not take (a kernel without
        // IORING_SETUP_SUBMIT_ALL stops at one it cannot start) stay
        // queued for the next submit.
        self.prepared.set(r.submission().len() as u32);
    }

    /// Processes every completion available now, calling `f` for each
    /// finished read; returns how many finished. Short reads are
    /// resubmitted (call [`Aio::submit`] afterwards).
    pub fn reap(&self, mut f: impl FnMut(T, IoJob, IoDone)) -> usize {
        let Some(ring) = self.engine.ring() else { return 0 };
        let mut cqes = std::mem::take(&mut *self.scratch.borrow_mut());
        debug_assert!(cqes.is_empty());
        self.engine.take_foreign(&mut cqes);
        cqes.extend(ring.borrow_mut().completion().map(|c| (c.user_data(), c.result())));
        let mut finished = 0;
        for &(ud, res) in &cqes {
            if ud == SYNC_TAG {
                // A submit-and-wait that gave up (its error was reported).
                continue;
            }
            bump(&self.engine.stats().uring_ops, 1);
            let idx = ud as usize;
            let Some(mut e) = self.table.borrow_mut().get_mut(idx).and_then(Option::take) else {
                debug_assert!(false, "completion for free in-flight entry {idx}");
                log::error!("io_uring completion for unknown entry {idx}; ignored");
                continue;
            };
            let failed = if res < 0 {
                Some(io::Error::from_raw_os_error(-res))
            } else if e.job.write {
                let n = res as usize;
                e.done += n;
                if n == 0 {
                    Some(io::Error::new(io::ErrorKind::WriteZero, "short write"))
                } else if e.done >= e.job.count {
                    None
                } else {
                    // A short write: the rest, buffered once it cannot go
                    // on O_DIRECT (as the synchronous path does).
                    if e.direct && !is_aligned(e.done as u64) {
                        e.direct = false;
                    }
                    if self.push(idx as u32, &mut e).is_ok() {
                        self.table.borrow_mut()[idx] = Some(e);
                        continue;
                    }
                    Some(io::Error::other("io_uring submission queue full"))
                }
            } else {
                let n = res as usize;
                e.done += n;
                let at_end = n == 0 || (e.direct && !is_aligned(n as u64));
                if at_end || e.done >= e.job.count {
                    None
                } else if self.push(idx as u32, &mut e).is_ok() {
                    // The rest of a short read is on its way.
                    self.table.borrow_mut()[idx] = Some(e);
                    continue;
                } else {
                    Some(io::Error::other("io_uring submission queue full"))
                }
            };
            self.free.borrow_mut().push(idx as u32);
            finished += 1;
            if e.job.write {
                self.writes.set(self.writes.get() - 1);
                // Even a failed write may have changed some bytes: dirty
                // either way, and counted before anyone acknowledges it.
                e.job.obj.mark_written();
            }
            let out = match failed {
                Some(err) => Err(err),
                None => Ok(e.done.min(e.job.count)),
            };
            f(e.ctx, e.job, out);
        }
        cqes.clear();
        *self.scratch.borrow_mut() = cqes;
        if finished > 0 {
            self.room.notify_waiters();
        }
        finished
    }

    /// Waits for completions: returns once some may be there (spurious
    /// returns are fine; call [`Aio::reap`]). Submits what is prepared
    /// first (the rests of short reads a reap queued), so nothing waits
    /// for an entry still in the submission queue.
    pub async fn wait(&self) -> io::Result<()> {
        self.submit();
        let mut g = self.efd.readable().await?;
        g.clear_ready();
        Ok(())
    }

    /// Blocks until no write is in flight, handing every read or write
    /// that completes meanwhile to `f` (COMMIT and stable WRITE: every
    /// write acknowledged or about to be is counted in its object's dirty
    /// generation before they look at it).
    pub fn drain_writes(&self, mut f: impl FnMut(T, IoJob, IoDone)) {
        while self.writes.get() > 0 {
            self.submit();
            let Some(ring) = self.engine.ring() else { return };
            if self.reap(&mut f) == 0 {
                match ring.borrow().submitter().submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => {
                        log::error!("io_uring wait for writes: {e}");
                        return;
                    }
                }
            }
        }
    }

    /// Waits while the pool is empty and writes in flight will give
    /// buffers back (so a WRITE's data is received into a pool buffer
    /// rather than copied, and a READ finds one).
    pub async fn buffer(&self, pool: &crate::storage::BufPool) {
        while pool.available() == 0 && self.writes.get() > 0 {
            self.submit();
            let n = self.room.notified();
            if pool.available() > 0 || self.writes.get() == 0 {
                break;
            }
            n.await;
        }
    }

    /// Blocks until every read in flight completed, handing each to `f`
    /// (reactor shutdown, tests).
    pub fn drain(&self, mut f: impl FnMut(T, IoJob, IoDone)) {
        while self.in_flight() > 0 {
            self.submit();
            if let Some(ring) = self.engine.ring() {
                if self.reap(&mut f) == 0 {
                    match ring.borrow().submitter().submit_and_wait(1) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                        Err(e) => {
                            log::error!("io_uring wait at shutdown: {e}");
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl<T> Drop for Aio<T> {
    fn drop(&mut self) {
        // The kernel must be done with the buffers before they can be reused.
        self.drain(|_, _, _| {});
        if let Some(r) = self.engine.ring() {
            let _ = r.borrow().submitter().unregister_eventfd();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fh::DsFh;
    use crate::stats::DsStats;
    use crate::storage::{BufPool, ObjectStore};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    /// Many reads in flight, more than the limit, finishing in any order,
    /// each with the right bytes; short reads at the end; every buffer back.
    #[test]
    fn pipelined_reads_complete_with_their_data() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = ObjectStore::open(dir.path(), direct).unwrap();
            let data = pattern(1 << 20);
            let fh = DsFh { stripe: 0, ino: 5, generation: 1 };
            let obj = store.create(&fh).unwrap();
            std::fs::write(dir.path().join("objects").join(fh.object_name()), &data).unwrap();
            let stats = Arc::new(DsStats::default());
            let mut engine = Engine::with_ring_entries(BufPool::new(16, 64 * 1024), stats.clone(), true, 8);
            engine.enable_fixed_files(4);
            let engine = Rc::new(engine);
            engine.install_files(&obj);
            rt().block_on(async {
                let Some(aio) = Aio::<usize>::new(engine.clone(), 8) else {
                    eprintln!("no io_uring here; skipped");
                    return;
                };
                assert_eq!(aio.limit(), 8);
                // (offset, count): aligned, odd, crossing and past the end.
                let reqs: Vec<(u64, usize)> = (0..40)
                    .map(|i| match i % 4 {
                        0 => ((i * 4096) as u64, 4096),
                        1 => ((i * 1000 + 7) as u64, 3000),
                        2 => ((1 << 20) - 4096, 16384),
                        _ => ((2 << 20) as u64, 4096),
                    })
                    .collect();
                let mut got: Vec<Option<(Vec<u8>, usize)>> = vec![None; reqs.len()];
                let mut next = 0;
                let mut order = Vec::new();
                while got.iter().any(Option::is_none) {
                    while next < reqs.len() && aio.has_room() {
                        let (offset, count) = reqs[next];
                        let buf = engine.pool.take().unwrap();
                        assert!(aio.start(IoJob { obj: obj.clone(), offset, count, buf, write: false }, next).is_ok());
                        next += 1;
                    }
                    assert!(aio.in_flight() <= 8);
                    aio.submit();
                    if aio.reap(|i, job, r| {
                        let n = r.unwrap();
                        got[i] = Some((job.buf.as_slice()[..n].to_vec(), n));
                        order.push(i);
                    }) == 0
                    {
                        aio.wait().await.unwrap();
                    }
                }
                for (i, (offset, count)) in reqs.iter().enumerate() {
                    let (bytes, n) = got[i].take().unwrap();
                    let start = (*offset as usize).min(data.len());
                    let end = (start + count).min(data.len());
                    assert_eq!(n, end - start, "request {i}");
                    assert!(bytes == data[start..end], "request {i}");
                }
                assert_eq!(order.len(), reqs.len());
                assert_eq!(aio.in_flight(), 0);
            });
            assert_eq!(engine.pool.available(), 16, "buffers leaked");
            assert!(stats.snapshot().fixed_file_ops > 0);
        }
    }

    /// Dropped with reads in flight: waits for them, the buffers and
    /// contexts are released.
    #[test]
    fn drop_with_reads_in_flight_releases_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path(), true).unwrap();
        let fh = DsFh { stripe: 0, ino: 6, generation: 1 };
        let obj = store.create(&fh).unwrap();
        std::fs::write(dir.path().join("objects").join(fh.object_name()), pattern(256 * 1024)).unwrap();
        let engine = Rc::new(Engine::with_ring_entries(BufPool::new(4, 64 * 1024), Arc::new(DsStats::default()), true, 4));
        let marker = Rc::new(());
        rt().block_on(async {
            let Some(aio) = Aio::<Rc<()>>::new(engine.clone(), 16) else { return };
            assert_eq!(aio.limit(), 16);
            for i in 0..4u64 {
                let buf = engine.pool.take().unwrap();
                aio.start(IoJob { obj: obj.clone(), offset: i * 65536, count: 60000, buf, write: false }, marker.clone()).ok().unwrap();
            }
            assert!(engine.pool.take().is_none());
            // A synchronous read on the same ring meanwhile keeps the others' completions.
            drop(aio);
        });
        assert_eq!(Rc::strong_count(&marker), 1, "contexts dropped");
        assert_eq!(engine.pool.available(), 4, "buffers back");
    }

    /// A submit-and-wait of the engine (WRITE) while reads are in flight
    /// reaps their completions for the async side, which still gets them.
    #[test]
    fn sync_io_on_the_same_ring_hands_read_completions_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path(), true).unwrap();
        let fh = DsFh { stripe: 0, ino: 7, generation: 1 };
        let obj = store.create(&fh).unwrap();
        let data = pattern(64 * 1024);
        std::fs::write(dir.path().join("objects").join(fh.object_name()), &data).unwrap();
        let engine = Rc::new(Engine::with_ring_entries(BufPool::new(8, 64 * 1024), Arc::new(DsStats::default()), true, 8));
        rt().block_on(async {
            let Some(aio) = Aio::<u32>::new(engine.clone(), 8) else { return };
            for i in 0..4u32 {
                let buf = engine.pool.take().unwrap();
                aio.start(IoJob { obj: obj.clone(), offset: i as u64 * 4096, count: 4096, buf, write: false }, i).ok().unwrap();
            }
            aio.submit();
            // Synchronous I/O: it waits for its own completion only.
            for _ in 0..4 {
                engine.write(&obj, 1 << 20, &[9u8; 4096]).ok().unwrap();
                let (b, n) = engine.read(&obj, 8192, 100).ok().unwrap();
                assert_eq!(&b.as_slice()[..n], &data[8192..8292]);
            }
            let mut seen = Vec::new();
            while seen.len() < 4 {
                if aio.reap(|i, job, r| {
                    let n = r.unwrap();
                    assert_eq!(n, 4096);
                    assert!(job.buf.as_slice()[..n] == data[i as usize * 4096..(i as usize + 1) * 4096]);
                    seen.push(i);
                }) == 0
                {
                    aio.wait().await.unwrap();
                }
            }
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2, 3]);
        });
        assert_eq!(engine.pool.available(), 8);
    }
}

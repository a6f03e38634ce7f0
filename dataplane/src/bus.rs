//! The update bus: how what the MDS link ([`crate::mds_link`]) is told
//! reaches the reactors. (Internal to the DS: not the MDS <-> DS control
//! protocol, not the MDS crate.)
//!
//! The per-I/O state a reactor consults on every READ/WRITE/PUTFH - the
//! stateids the MDS allowed and the open objects - is owned by each reactor
//! as a [`Replica`]: plain maps behind a `RefCell`, touched by that reactor
//! thread only, no lock. The MDS link (the control program's calls,
//! the registration thread) changes it only by [`Bus::publish`]ing an
//! [`Update`]; the bus gives it a sequence number and pushes it onto every
//! reactor's bounded lock-free queue (`crossbeam_queue::ArrayQueue`, one
//! per reactor, [`QUEUE_CAPACITY`] entries). The MDS link also keeps
//! the authoritative [`AllowedTable`] (it decides CTL_NOSPC); since every
//! replica applies the same updates in the same order from the same empty
//! start, they stay identical to it, which [`Replica::sync`] asserts
//! (sequence numbers arrive contiguous, and every Allow is admitted).
//!
//! # Ordering
//!
//! A control call that changes this state is answered only once every
//! reactor has applied the update: [`Bus::publish`] waits until each
//! reactor's applied sequence number reaches the update's. So when the MDS
//! hands a layout to a client right after STATEID_ALLOW is answered, the
//! client's first READ/WRITE finds the stateid whichever reactor serves it;
//! and once STATEID_REVOKE or OBJ_REMOVE is answered no reactor starts
//! another request with the old state, and none has one of it in flight
//! (a reactor runs a request to completion before it drains its queue).
//!
//! A reactor applies its queue ([`Replica::sync`]) before executing every
//! COMPOUND and whenever the MDS link wakes it (a `tokio::sync::Notify`
//! per reactor, served by [`Replica::serve`] on the reactor's runtime), so
//! an idle reactor acknowledges within a wake-up. Publishers wait by parking
//! their own thread; a reactor that applied something unparks the threads
//! registered in a small lock-free queue of waiters (register, then re-check,
//! with a SeqCst fence on both sides, so no wake-up is lost; a short park
//! timeout is the safety net). A reactor never waits for the MDS link:
//! it only pops queues and unparks threads.
//!
//! # Bounds
//!
//! A full queue (a reactor stalled, e.g. on a disk) makes the publisher
//! wait for room, never drop the update; the wait for room and then for the
//! acknowledgements is bounded by the bus timeout ([`APPLY_TIMEOUT`]):
//! - no room in time: nothing was pushed anywhere, nothing changed
//!   ([`PublishError::QueueFull`]);
//! - pushed but not applied everywhere in time: the update stays queued and
//!   will be applied in order ([`PublishError::NotApplied`]); the control
//!   call fails all the same, so the MDS never takes it as done.
//!
//! Publishers are serialised by a mutex on the control side only (sequence
//! numbers, pushes in sequence order, the authoritative table); reactors
//! never touch it. A reactor that has ended (shutdown) is skipped.

use crate::fh::DsFh;
use crate::state::{Allowed, AllowedTable, StateOther};
use crate::storage::{Engine, Object, ObjectStore};
use crossbeam_queue::ArrayQueue;
use pnfs_protocol::sync::lock;
use pnfs_protocol::wire::{nfsstat4, stateid4};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Updates queued per reactor at most. Publishers wait for their update to
/// be applied, so a queue holds about one update per concurrent control
/// call unless its reactor is stalled.
pub const QUEUE_CAPACITY: usize = 1024;
/// How long a publisher waits for room and then for every reactor to apply
/// its update (the MDS's control call timeout is longer).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Open objects each reactor keeps at most (4096 in all, at least 256 each).
pub const OPEN_OBJECTS_TOTAL: usize = 4096;
const OPEN_OBJECTS_MIN: usize = 256;
/// Threads registered to be woken at most; more poll (see [`MAX_PARK`]).
const MAX_WAITERS: usize = 64;
/// Longest single park of a publisher: the safety net should a wake-up be
/// missed, and the poll period of one that could not register.
const MAX_PARK: Duration = Duration::from_millis(5);

/// A change to reactor-owned state, made by the MDS link.
#[derive(Debug, Clone)]
pub enum Update {
    /// CTL_PROC_STATEID_ALLOW (its `gen` is set to the sequence number).
    Allow { other: StateOther, allowed: Allowed },
    /// CTL_PROC_STATEID_REVOKE.
    Revoke { other: StateOther },
    /// The MDS restarted: forget stateids allowed before this sequence number.
    ForgetBefore { seq: u64 },
    /// CTL_PROC_OBJ_CREATE: the new object, open (cached where there is room).
    ObjCreated(Arc<Object>),
    /// CTL_PROC_OBJ_REMOVE, after the file is gone: drop the open object, so
    /// the handle is STALE from the next PUTFH on.
    ObjRemoved(DsFh),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The authoritative table refuses it (full); nothing was published.
    Refused,
    /// A reactor's queue stayed full for the whole timeout; nothing was
    /// published.
    QueueFull,
    /// Published, but not every reactor applied it within the timeout; it
    /// stays queued and will be applied in order.
    NotApplied,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublishError::Refused => "allowed-stateid table full",
            PublishError::QueueFull => "a reactor's update queue stayed full",
            PublishError::NotApplied => "a reactor did not apply the update in time",
        })
    }
}

/// One reactor's end of the bus. Aligned so two reactors' counters never
/// share a cache line.
#[repr(align(128))]
struct Mailbox {
    queue: ArrayQueue<(u64, Update)>,
    /// Highest sequence number this reactor has applied (its updates are
    /// contiguous, so also every one before).
    applied: AtomicU64,
    /// A [`Replica`] is attached (its reactor runs).
    attached: AtomicBool,
    wake: tokio::sync::Notify,
}

struct Shared {
    mailboxes: Box<[Mailbox]>,
    /// Publisher threads to unpark when a reactor applied something.
    waiters: ArrayQueue<Thread>,
    /// Publisher tasks ([`Bus::wait_applied`]) to wake when a reactor
    /// applied something.
    applied: tokio::sync::Notify,
}

impl Shared {
    fn attached(&self) -> impl Iterator<Item = &Mailbox> {
        self.mailboxes.iter().filter(|m| m.attached.load(Ordering::Acquire))
    }

    fn all_applied(&self, seq: u64) -> bool {
        self.attached().all(|m| m.applied.load(Ordering::Acquire) >= seq)
    }

    fn all_have_room(&self) -> bool {
        self.attached().all(|m| m.queue.len() < m.queue.capacity())
    }

    /// Unparks every registered publisher (reactor side; never blocks).
    fn wake_waiters(&self) {
        fence(Ordering::SeqCst);
        while let Some(t) = self.waiters.pop() {
            t.unpark();
        }
        self.applied.notify_waiters();
    }

    /// Parks the calling (MDS-link) thread until `done()` or `deadline`.
    fn wait_until(&self, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
        let me = thread::current();
        loop {
            if done() {
                return true;
            }
            // Register, then check again: a reactor stores its progress and
            // then pops the waiters, each side with a SeqCst fence between,
            // so either we see its progress or it sees us and unparks us.
            let registered = self.waiters.push(me.clone()).is_ok();
            fence(Ordering::SeqCst);
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Unregistered (too many waiters) it polls at MAX_PARK.
            let _ = registered;
            thread::park_timeout((deadline - now).min(MAX_PARK));
        }
    }
}

struct Publisher {
    next_seq: u64,
    /// The authoritative allowed-stateid table.
    master: AllowedTable,
}

/// The MDS link's end: see the module documentation.
pub struct Bus {
    shared: Arc<Shared>,
    publisher: Mutex<Publisher>,
    /// `Publisher::next_seq`, readable without waiting for a publisher.
    next_seq: AtomicU64,
    timeout: Duration,
}

/// Sequence number of the first update.
const FIRST_SEQ: u64 = 1;

impl Bus {
    /// A bus for `reactors` reactors with the default bounds.
    pub fn new(reactors: usize) -> Bus {
        Bus::with_bounds(reactors, QUEUE_CAPACITY, APPLY_TIMEOUT)
    }

    pub fn with_bounds(reactors: usize, capacity: usize, timeout: Duration) -> Bus {
        assert!(reactors > 0 && capacity > 0, "a bus needs reactors and room");
        let mailboxes = (0..reactors)
            .map(|_| Mailbox {
                queue: ArrayQueue::new(capacity),
                applied: AtomicU64::new(FIRST_SEQ - 1),
                attached: AtomicBool::new(false),
                wake: tokio::sync::Notify::new(),
            })
            .collect();
        Bus {
            shared: Arc::new(Shared { mailboxes, waiters: ArrayQueue::new(MAX_WAITERS), applied: tokio::sync::Notify::new() }),
            publisher: Mutex::new(Publisher { next_seq: FIRST_SEQ, master: AllowedTable::new() }),
            next_seq: AtomicU64::new(FIRST_SEQ),
            timeout,
        }
    }

    pub fn reactors(&self) -> usize {
        self.shared.mailboxes.len()
    }

    /// Attaches reactor `i`'s replica: empty, so it must come before any
    /// update is published (reactors start before the control program).
    pub fn replica(&self, i: usize) -> Replica {
        let p = lock(&self.publisher);
        assert_eq!(p.next_seq, FIRST_SEQ, "reactor {i} attached after bus updates were published");
        let mb = &self.shared.mailboxes[i];
        assert!(!mb.attached.swap(true, Ordering::AcqRel), "reactor {i} attached twice");
        let per_reactor = (OPEN_OBJECTS_TOTAL / self.reactors()).max(OPEN_OBJECTS_MIN);
        Replica {
            shared: self.shared.clone(),
            index: i,
            applied: Cell::new(FIRST_SEQ - 1),
            allowed: RefCell::new(AllowedTable::new()),
            objects: RefCell::new(HashMap::with_capacity(per_reactor)),
            max_objects: per_reactor,
            engine: RefCell::new(None),
        }
    }

    /// The sequence number the next update will get (never waits).
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    /// Stateids in the authoritative table.
    pub fn allowed_len(&self) -> usize {
        lock(&self.publisher).master.len()
    }

    /// Publishes `u` to every reactor and waits until each has applied it;
    /// returns its sequence number. See the module documentation for the
    /// errors and what each leaves behind.
    pub fn publish(&self, u: Update) -> Result<u64, PublishError> {
        let mut r = self.publish_batch(vec![u]);
        r.pop().expect("one result per update")
    }

    /// Publishes `updates` in order and waits once, until every reactor
    /// applied the last one queued: one wait, and usually one wake-up of
    /// each reactor, for the whole batch. One result per update, in order; a refused update (table full)
    /// does not stop the others.
    pub fn publish_batch(&self, updates: Vec<Update>) -> Vec<Result<u64, PublishError>> {
        let deadline = Instant::now() + self.timeout;
        let mut out = Vec::with_capacity(updates.len());
        let mut last = None;
        {
            let mut p = lock(&self.publisher);
            for u in updates {
                if let Update::Allow { other, allowed } = &u {
                    if !p.master.admits(other, &allowed.fh) {
                        out.push(Err(PublishError::Refused));
                        continue;
                    }
                }
                // Only publishers push, one at a time under this lock, and the
                // reactors only pop: room seen here is still there below.
                if !self.shared.wait_until(deadline, || self.shared.all_have_room()) {
                    out.push(Err(PublishError::QueueFull));
                    continue;
                }
                let seq = self.enqueue(&mut p, u);
                self.wake_reactors();
                out.push(Ok(seq));
                last = Some(seq);
            }
        }
        if let Some(last) = last {
            if !self.shared.wait_until(deadline, || self.shared.all_applied(last)) {
                not_applied(&mut out);
            }
        }
        out
    }

    /// [`Bus::publish_batch`] for a caller that must not block a thread
    /// (the DS control runtime): queues every update at once, wakes each
    /// reactor once, and awaits their acknowledgements. When some reactor's
    /// queue lacks room for the whole batch nothing is queued and the
    /// updates come back: publish them with [`Bus::publish_batch`] on a
    /// thread that may wait. So do they when another publisher holds the
    /// bus.
    pub async fn publish_batch_async(&self, updates: Vec<Update>) -> Result<Vec<Result<u64, PublishError>>, Vec<Update>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut out = Vec::with_capacity(updates.len());
        let mut last = None;
        {
            // Never waits for the lock: a publisher that holds it may be
            // waiting for room (a stalled reactor).
            let mut p = match self.publisher.try_lock() {
                Ok(p) => p,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Err(updates),
            };
            if !self.shared.attached().all(|m| m.queue.capacity() - m.queue.len() >= updates.len()) {
                return Err(updates);
            }
            for u in updates {
                if let Update::Allow { other, allowed } = &u {
                    if !p.master.admits(other, &allowed.fh) {
                        out.push(Err(PublishError::Refused));
                        continue;
                    }
                }
                let seq = self.enqueue(&mut p, u);
                out.push(Ok(seq));
                last = Some(seq);
            }
        }
        if let Some(last) = last {
            self.wake_reactors();
            if !self.wait_applied(last, deadline).await {
                not_applied(&mut out);
            }
        }
        Ok(out)
    }

    /// Gives `u` the next sequence number, pushes it onto every reactor's
    /// queue (the caller saw room, under the publisher lock) and records it
    /// in the authoritative table. Does not wake the reactors.
    fn enqueue(&self, p: &mut Publisher, mut u: Update) -> u64 {
        let seq = p.next_seq;
        p.next_seq += 1;
        self.next_seq.store(p.next_seq, Ordering::Release);
        if let Update::Allow { allowed, .. } = &mut u {
            allowed.gen = seq;
        }
        for mb in self.shared.attached() {
            let pushed = mb.queue.push((seq, u.clone()));
            assert!(pushed.is_ok(), "update queue full after room was seen");
        }
        match &u {
            Update::Allow { other, allowed } => assert!(p.master.allow(*other, *allowed), "admitted allow refused"),
            Update::Revoke { other } => drop(p.master.revoke(other)),
            Update::ForgetBefore { seq } => p.master.forget_before(*seq),
            Update::ObjCreated(_) | Update::ObjRemoved(_) => {}
        }
        seq
    }

    /// Wakes every reactor; one that is already woken and has not run yet
    /// only keeps its permit (so a batch costs one wake-up each).
    fn wake_reactors(&self) {
        for mb in self.shared.attached() {
            mb.wake.notify_one();
        }
    }

    /// Awaits every attached reactor's acknowledgement of `seq`; false at
    /// `deadline`.
    async fn wait_applied(&self, seq: u64, deadline: tokio::time::Instant) -> bool {
        loop {
            // Registered before the check: a reactor that applies in
            // between wakes this waiter (notify_waiters).
            let notified = self.shared.applied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.all_applied(seq) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.shared.all_applied(seq);
            }
        }
    }
}

/// The updates published but not acknowledged in time.
fn not_applied(out: &mut [Result<u64, PublishError>]) {
    for r in out.iter_mut() {
        if r.is_ok() {
            *r = Err(PublishError::NotApplied);
        }
    }
}

/// One reactor's own copy of the MDS-decided state (see the module
/// documentation). Not `Send`: it lives on its reactor thread.
pub struct Replica {
    shared: Arc<Shared>,
    index: usize,
    applied: Cell<u64>,
    allowed: RefCell<AllowedTable>,
    objects: RefCell<HashMap<DsFh, Arc<Object>>>,
    max_objects: usize,
    /// The reactor's engine, whose registered-file table follows the cache.
    engine: RefCell<Option<Rc<Engine>>>,
}

impl Replica {
    /// From now on objects entering this cache get their descriptors
    /// installed in `engine`'s registered-file table, and leaving it removed.
    pub fn attach_engine(&self, engine: Rc<Engine>) {
        assert!(self.objects.borrow().is_empty(), "engine attached after objects were cached");
        *self.engine.borrow_mut() = Some(engine);
    }

    /// Puts `o` in the cache (replacing the entry of its handle), keeping
    /// the engine's file table in step.
    fn cache_insert(&self, objects: &mut HashMap<DsFh, Arc<Object>>, o: Arc<Object>) {
        let engine = self.engine.borrow();
        if let Some(e) = engine.as_ref() {
            if let Some(old) = objects.get(&o.fh).filter(|old| !Arc::ptr_eq(old, &o)) {
                e.remove_files(old);
            }
            e.install_files(&o);
        }
        objects.insert(o.fh, o);
    }

    fn cache_remove(&self, objects: &mut HashMap<DsFh, Arc<Object>>, fh: &DsFh) {
        if let Some(old) = objects.remove(fh) {
            if let Some(e) = self.engine.borrow().as_ref() {
                e.remove_files(&old);
            }
        }
    }

    fn mailbox(&self) -> &Mailbox {
        &self.shared.mailboxes[self.index]
    }

    /// Applies every queued update, in order, then acknowledges; returns
    /// how many. Called before every COMPOUND and on every wake-up.
    pub fn sync(&self) -> usize {
        let mb = self.mailbox();
        let mut n = 0;
        while let Some((seq, u)) = mb.queue.pop() {
            let expected = self.applied.get() + 1;
            assert_eq!(seq, expected, "reactor {}: bus update out of order", self.index);
            self.apply(u);
            self.applied.set(seq);
            n += 1;
        }
        if n > 0 {
            mb.applied.store(self.applied.get(), Ordering::Release);
            self.shared.wake_waiters();
        }
        n
    }

    fn apply(&self, u: Update) {
        match u {
            Update::Allow { other, allowed } => {
                let ok = self.allowed.borrow_mut().allow(other, allowed);
                assert!(ok, "reactor {}: an allow the MDS link admitted does not fit", self.index);
            }
            Update::Revoke { other } => drop(self.allowed.borrow_mut().revoke(&other)),
            Update::ForgetBefore { seq } => self.allowed.borrow_mut().forget_before(seq),
            Update::ObjCreated(o) => {
                let mut objects = self.objects.borrow_mut();
                if objects.len() < self.max_objects || objects.contains_key(&o.fh) {
                    self.cache_insert(&mut objects, o);
                }
            }
            Update::ObjRemoved(fh) => self.cache_remove(&mut self.objects.borrow_mut(), &fh),
        }
    }

    /// Applies updates whenever the MDS link wakes this reactor; runs
    /// until its runtime drops it.
    pub async fn serve(self: Rc<Self>) {
        loop {
            self.mailbox().wake.notified().await;
            self.sync();
        }
    }

    /// Sequence number of the last update applied here.
    pub fn applied(&self) -> u64 {
        self.applied.get()
    }

    /// The tight coupling check of READ/WRITE against this reactor's copy
    /// ([`AllowedTable::check_io`]). No lock, no allocation.
    pub fn check_io(&self, sid: &stateid4, fh: &DsFh, write: bool, client_tag: u32) -> Result<(), nfsstat4> {
        self.allowed.borrow().check_io(sid, fh, write, client_tag)
    }

    /// Stateids this reactor knows.
    pub fn allowed_len(&self) -> usize {
        self.allowed.borrow().len()
    }

    /// The object of `fh`, from this reactor's cache or opened from `store`
    /// (then cached, evicting another when full; its users keep their Arc).
    /// NotFound when it does not exist: NFS4ERR_STALE.
    pub fn object(&self, store: &ObjectStore, fh: &DsFh) -> io::Result<Arc<Object>> {
        if let Some(o) = self.objects.borrow().get(fh) {
            return Ok(o.clone());
        }
        let o = store.open_object(fh)?;
        let mut objects = self.objects.borrow_mut();
        if objects.len() >= self.max_objects {
            if let Some(k) = objects.keys().next().copied() {
                self.cache_remove(&mut objects, &k);
            }
        }
        self.cache_insert(&mut objects, o.clone());
        Ok(o)
    }

    /// Whether `fh` is in this reactor's open-object cache.
    pub fn has_open(&self, fh: &DsFh) -> bool {
        self.objects.borrow().contains_key(fh)
    }
}

impl Drop for Replica {
    /// A reactor that ends is no longer waited for.
    fn drop(&mut self) {
        // The engine may outlive us: no slot may keep naming a descriptor
        // that closes with its object.
        if let Some(e) = self.engine.borrow().as_ref() {
            self.objects.borrow().values().for_each(|o| e.remove_files(o));
        }
        self.mailbox().attached.store(false, Ordering::Release);
        self.shared.wake_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_protocol::wire::{OPEN4_SHARE_ACCESS_BOTH, OPEN4_SHARE_ACCESS_READ};
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::{mpsc, oneshot};

    fn allow(o: u8, fh: DsFh, access: u32) -> Update {
        Update::Allow { other: [o; 12], allowed: Allowed { fh, access, mds_clientid: 1, gen: 0 } }
    }

    fn sid(o: u8) -> stateid4 {
        stateid4 { seqid: 0, other: [o; 12] }
    }

    /// What a reactor answers about its own copy, read as a request would
    /// (after `sync` when `sync_first`, else as it stands).
    #[derive(Debug)]
    struct Seen {
        applied: u64,
        read: Result<(), nfsstat4>,
        write: Result<(), nfsstat4>,
        open: bool,
        putfh: io::ErrorKind,
    }

    struct Probe {
        other: u8,
        fh: DsFh,
        sync_first: bool,
        /// A request whose I/O blocks the reactor this long after its
        /// stateid check (submit-and-wait), with `running` raised meanwhile.
        io: Option<(Duration, Arc<AtomicBool>)>,
        reply: oneshot::Sender<Seen>,
    }

    /// A reactor as in `transport/reactor.rs`: a current-thread runtime serving its
    /// replica's wake-ups, a busy task that keeps the thread occupied in
    /// short blocking stretches (requests doing I/O), and "requests" that
    /// read the replica.
    fn reactor(bus: Arc<Bus>, i: usize, store: Arc<ObjectStore>, attached: Arc<AtomicUsize>) -> mpsc::UnboundedSender<Probe> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Probe>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let local = tokio::task::LocalSet::new();
            let replica = Rc::new(bus.replica(i));
            attached.fetch_add(1, Ordering::SeqCst);
            local.block_on(&rt, async move {
                tokio::task::spawn_local(replica.clone().serve());
                tokio::task::spawn_local(async {
                    loop {
                        std::thread::sleep(Duration::from_micros(300));
                        tokio::task::yield_now().await;
                    }
                });
                while let Some(p) = rx.recv().await {
                    if p.sync_first {
                        replica.sync();
                    }
                    if let Some((d, running)) = &p.io {
                        assert_eq!(replica.check_io(&sid(p.other), &p.fh, true, 0), Ok(()));
                        running.store(true, Ordering::SeqCst);
                        std::thread::sleep(*d);
                        running.store(false, Ordering::SeqCst);
                    }
                    let putfh = match replica.object(&store, &p.fh) {
                        Ok(_) => io::ErrorKind::Other,
                        Err(e) => e.kind(),
                    };
                    let _ = p.reply.send(Seen {
                        applied: replica.applied(),
                        read: replica.check_io(&sid(p.other), &p.fh, false, 0),
                        write: replica.check_io(&sid(p.other), &p.fh, true, 0),
                        open: replica.has_open(&p.fh),
                        putfh,
                    });
                }
            });
        });
        tx
    }

    fn ask(r: &mpsc::UnboundedSender<Probe>, other: u8, fh: DsFh, sync_first: bool) -> Seen {
        let (tx, rx) = oneshot::channel();
        r.send(Probe { other, fh, sync_first, io: None, reply: tx }).unwrap();
        rx.blocking_recv().unwrap()
    }

    /// An update acknowledged to the control caller is in every reactor's
    /// own copy by the time the caller hears of it: a request that reads the
    /// copy without draining first already sees it.
    #[test]
    fn acknowledged_update_is_visible_to_every_reactors_next_request() {
        const N: usize = 3;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ObjectStore::open(dir.path(), false).unwrap());
        let bus = Arc::new(Bus::new(N));
        let attached = Arc::new(AtomicUsize::new(0));
        let reactors: Vec<_> = (0..N).map(|i| reactor(bus.clone(), i, store.clone(), attached.clone())).collect();
        while attached.load(Ordering::SeqCst) < N {
            std::thread::yield_now();
        }
        for round in 0..60u64 {
            let o = (round % 200) as u8 + 1;
            let fh = DsFh { stripe: 0, ino: 1000 + round, generation: 1 };
            // OBJ_CREATE: every reactor holds it open.
            let created = store.create(&fh).unwrap();
            let seq = bus.publish(Update::ObjCreated(created)).unwrap();
            // STATEID_ALLOW read-only, then widened to read-write.
            let seq2 = bus.publish(allow(o, fh, OPEN4_SHARE_ACCESS_READ)).unwrap();
            assert!(seq2 > seq);
            for (i, r) in reactors.iter().enumerate() {
                let s = ask(r, o, fh, false);
                assert!(s.applied >= seq2, "reactor {i}: {s:?}");
                assert_eq!((s.read, s.write, s.open), (Ok(()), Err(nfsstat4::NFS4ERR_OPENMODE), true), "reactor {i}");
            }
            bus.publish(allow(o, fh, OPEN4_SHARE_ACCESS_BOTH)).unwrap();
            for r in &reactors {
                assert_eq!(ask(r, o, fh, false).write, Ok(()));
            }
            // STATEID_REVOKE: refused everywhere from the next request on,
            // and acknowledged only after a request already doing I/O
            // under the stateid has finished.
            if round < 4 {
                let r = &reactors[round as usize % N];
                let running = Arc::new(AtomicBool::new(false));
                let (tx, rx) = oneshot::channel();
                let io = Some((Duration::from_millis(30), running.clone()));
                r.send(Probe { other: o, fh, sync_first: true, io, reply: tx }).unwrap();
                while !running.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                bus.publish(Update::Revoke { other: [o; 12] }).unwrap();
                assert!(!running.load(Ordering::SeqCst), "REVOKE acknowledged with I/O under it in flight");
                rx.blocking_recv().unwrap();
            } else {
                bus.publish(Update::Revoke { other: [o; 12] }).unwrap();
            }
            for r in &reactors {
                let s = ask(r, o, fh, false);
                assert_eq!((s.read, s.write), (Err(nfsstat4::NFS4ERR_BAD_STATEID), Err(nfsstat4::NFS4ERR_BAD_STATEID)));
            }
            // OBJ_REMOVE (file first): no reactor holds it, PUTFH is STALE.
            store.remove(&fh).unwrap();
            bus.publish(Update::ObjRemoved(fh)).unwrap();
            for r in &reactors {
                let s = ask(r, o, fh, round % 2 == 0);
                assert!(!s.open);
                assert_eq!(s.putfh, io::ErrorKind::NotFound);
            }
        }
        // The MDS restarted: stateids allowed before the REGISTER go.
        let fh = DsFh { stripe: 0, ino: 7, generation: 1 };
        bus.publish(allow(250, fh, OPEN4_SHARE_ACCESS_READ)).unwrap();
        let before = bus.next_seq();
        bus.publish(allow(251, fh, OPEN4_SHARE_ACCESS_READ)).unwrap();
        bus.publish(Update::ForgetBefore { seq: before }).unwrap();
        assert_eq!(bus.allowed_len(), 1);
        for r in &reactors {
            assert_eq!(ask(r, 250, fh, false).read, Err(nfsstat4::NFS4ERR_BAD_STATEID));
            assert_eq!(ask(r, 251, fh, false).read, Ok(()));
        }
    }

    /// A full queue makes the publisher wait (bounded), never drop: in time
    /// it goes in once the reactor drains; past the timeout nothing at all
    /// is published.
    #[test]
    fn full_queue_makes_the_publisher_wait() {
        let fh = DsFh { stripe: 0, ino: 1, generation: 1 };
        // A reactor that does not drain: two updates fill its queue.
        let bus = Bus::with_bounds(1, 2, Duration::from_millis(200));
        let replica = bus.replica(0);
        assert_eq!(bus.publish(allow(1, fh, OPEN4_SHARE_ACCESS_READ)), Err(PublishError::NotApplied));
        assert_eq!(bus.publish(allow(2, fh, OPEN4_SHARE_ACCESS_READ)), Err(PublishError::NotApplied));
        let t = Instant::now();
        assert_eq!(bus.publish(allow(3, fh, OPEN4_SHARE_ACCESS_READ)), Err(PublishError::QueueFull));
        assert!(t.elapsed() >= Duration::from_millis(200), "gave up after {:?}", t.elapsed());
        // Nothing of the refused one anywhere: not numbered, not in the
        // authoritative table, not queued.
        assert_eq!((bus.next_seq(), bus.allowed_len()), (3, 2));
        assert_eq!(replica.sync(), 2);
        assert_eq!(replica.check_io(&sid(3), &fh, false, 0), Err(nfsstat4::NFS4ERR_BAD_STATEID));
        assert_eq!((replica.applied(), replica.allowed_len()), (2, 2));

        // Full again; a publisher waits for room, then for the apply, while
        // the reactor is busy for 150 ms before it drains.
        let bus = Arc::new(Bus::with_bounds(1, 2, Duration::from_secs(10)));
        let replica = bus.replica(0);
        for o in 1..=2 {
            // Not applied yet: publish from threads and let them wait.
            let b = bus.clone();
            std::thread::spawn(move || b.publish(allow(o, fh, OPEN4_SHARE_ACCESS_READ)));
        }
        while bus.next_seq() < 3 {
            std::thread::yield_now();
        }
        let done = Arc::new(AtomicBool::new(false));
        let (b, d) = (bus.clone(), done.clone());
        let t = Instant::now();
        let publisher = std::thread::spawn(move || {
            let r = b.publish(allow(3, fh, OPEN4_SHARE_ACCESS_BOTH));
            d.store(true, Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(150));
        assert!(!done.load(Ordering::SeqCst), "publisher did not wait for room");
        assert_eq!(bus.next_seq(), 3, "published into a full queue");
        while !done.load(Ordering::SeqCst) {
            replica.sync();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(publisher.join().unwrap(), Ok(3));
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(replica.applied(), 3);
        for o in 1..=3 {
            assert_eq!(replica.check_io(&sid(o), &fh, false, 0), Ok(()), "stateid {o}");
        }
        assert_eq!(replica.check_io(&sid(3), &fh, true, 0), Ok(()));

        // A reactor that has ended is not waited for.
        drop(replica);
        let t = Instant::now();
        assert_eq!(bus.publish(Update::Revoke { other: [1; 12] }), Ok(4));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// The control runtime's publish: acknowledged by every reactor (each
    /// woken, none polled) before it returns, without parking the calling
    /// thread; a batch with no room anywhere comes back untouched.
    #[test]
    fn async_batch_is_applied_everywhere_before_it_returns() {
        const N: usize = 2;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ObjectStore::open(dir.path(), false).unwrap());
        let bus = Arc::new(Bus::with_bounds(N, 4, Duration::from_secs(10)));
        let attached = Arc::new(AtomicUsize::new(0));
        let reactors: Vec<_> = (0..N).map(|i| reactor(bus.clone(), i, store.clone(), attached.clone())).collect();
        while attached.load(Ordering::SeqCst) < N {
            std::thread::yield_now();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fh = DsFh { stripe: 0, ino: 9, generation: 1 };
        for round in 0..20u8 {
            let o = round + 1;
            let r = rt
                .block_on(bus.publish_batch_async(vec![allow(o, fh, OPEN4_SHARE_ACCESS_READ), Update::Revoke { other: [o + 100; 12] }]))
                .unwrap_or_else(|_| panic!("round {round}: no room in queues of 4"));
            assert!(r.iter().all(|r| r.is_ok()), "round {round}: {r:?}");
            for (i, reactor) in reactors.iter().enumerate() {
                let s = ask(reactor, o, fh, false);
                assert!(s.applied >= *r[1].as_ref().unwrap(), "reactor {i} answered before applying: {s:?}");
                assert_eq!(s.read, Ok(()), "reactor {i}, round {round}");
            }
        }
        // Room for 4 per queue: 5 updates are not queued at all.
        let five: Vec<Update> = (0..5).map(|i| Update::Revoke { other: [200 + i; 12] }).collect();
        let seq = bus.next_seq();
        let back = rt.block_on(bus.publish_batch_async(five)).expect_err("queued without room");
        assert_eq!((back.len(), bus.next_seq()), (5, seq));
    }

    #[test]
    fn table_full_is_refused_before_publishing() {
        let bus = Bus::with_bounds(1, 4, Duration::from_secs(5));
        let replica = bus.replica(0);
        let fh = |i: u64| DsFh { stripe: 0, ino: i, generation: 1 };
        for i in 0..crate::state::MAX_OBJECTS_PER_STATEID as u64 {
            std::thread::scope(|s| {
                let p = s.spawn(|| bus.publish(allow(1, fh(i), OPEN4_SHARE_ACCESS_READ)));
                while !p.is_finished() {
                    replica.sync();
                }
                assert!(p.join().unwrap().is_ok());
            });
        }
        let seq = bus.next_seq();
        assert_eq!(bus.publish(allow(1, fh(100_000), OPEN4_SHARE_ACCESS_READ)), Err(PublishError::Refused));
        assert_eq!(bus.next_seq(), seq);
        assert_eq!(replica.sync(), 0);
    }

    #[test]
    #[should_panic(expected = "attached after bus updates were published")]
    fn late_replica_is_refused() {
        let bus = Bus::with_bounds(2, 4, Duration::from_millis(10));
        let _r = bus.replica(0);
        let _ = bus.publish(Update::Revoke { other: [1; 12] });
        let _late = bus.replica(1);
    }
}

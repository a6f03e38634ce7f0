//! The namespace (inodes, directory entries, symlinks, xattrs, counters) kept
//! in the ordered KV store. Every mutation is one transaction.
//!
//! Key layout: `I` inodes, `D` directory entries, `C` directory cookies,
//! `X` xattrs, `Mnext_ino` (see `keyspace`, which lists every key of the
//! store).

use crate::keyspace::{self, DIRENT, DIR_COOKIE, INODE, NEXT_INO_KEY, XATTR};
use pnfs_kv::{key::u64_be, transact, KvError, KvStore, KvTxn};
use pnfs_protocol::wire::*;
use rkyv::{Archive, Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub const ROOT_INO: u64 = 1;
/// READDIR cookies 0..=2 are reserved by RFC 8881 (0 = start, 1 and 2 were "." and "..").
const FIRST_COOKIE: u64 = 3;
const MAX_TXN_RETRIES: u32 = 16;
pub const MAX_NAME: usize = 255;
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
pub const MAX_XATTRS_PER_FILE: usize = 1024;

pub type NfsResult<T> = Result<T, nfsstat4>;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

impl Time {
    pub fn now() -> Time {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Time { sec: d.as_secs() as i64, nsec: d.subsec_nanos() }
    }
    pub fn to_nfs(&self) -> nfstime4 {
        nfstime4 { seconds: self.sec, nseconds: self.nsec }
    }
    pub fn from_nfs(t: &nfstime4) -> Time {
        Time { sec: t.seconds, nsec: t.nseconds }
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Inode {
    pub ino: u64,
    /// Bumped when an inode number is reused; part of the filehandle.
    pub generation: u32,
    /// nfs_ftype4 value.
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub rdev: (u32, u32),
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub btime: Time,
    pub change: u64,
    /// Directories: parent directory (LOOKUPP); root points at itself.
    pub parent: u64,
    /// Directories: next READDIR cookie to hand out.
    pub next_cookie: u64,
    pub symlink: Vec<u8>,
    /// EXCLUSIVE4/4_1 create verifier, kept to recognise a retried create.
    pub create_verifier: Option<[u8; 8]>,
}

impl Inode {
    pub fn ftype(&self) -> nfs_ftype4 {
        nfs_ftype4::from_i32(self.kind as i32).unwrap_or(nfs_ftype4::NF4REG)
    }
    pub fn is_dir(&self) -> bool {
        self.kind == nfs_ftype4::NF4DIR as u32
    }
    /// Bumps change and ctime: every data or metadata change moves `change`.
    pub fn touch_ctime(&mut self, now: &Time) {
        self.change += 1;
        self.ctime = now.clone();
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DirEntry {
    pub ino: u64,
    pub cookie: u64,
}

/// Attributes that creation and SETATTR may set.
#[derive(Debug, Default, Clone)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

#[derive(Debug, Clone)]
pub enum SetTime {
    ServerNow,
    Client(Time),
}

pub struct NewObject {
    pub kind: nfs_ftype4,
    pub symlink: Vec<u8>,
    pub rdev: (u32, u32),
}

/// Result of removing or renaming over a name: the caller deletes file data
/// for inodes whose last link went away.
#[derive(Debug, Default)]
pub struct Unlinked {
    pub freed_ino: Option<u64>,
}

#[derive(Debug)]
enum TxErr {
    Nfs(nfsstat4),
    Kv(KvError),
}

impl From<KvError> for TxErr {
    fn from(e: KvError) -> Self {
        TxErr::Kv(e)
    }
}

impl From<nfsstat4> for TxErr {
    fn from(e: nfsstat4) -> Self {
        TxErr::Nfs(e)
    }
}

fn map_err(e: TxErr) -> nfsstat4 {
    match e {
        TxErr::Nfs(s) => s,
        // A full disk or a store reopening is logged once by the store, not
        // per request.
        TxErr::Kv(KvError::NoSpace(m)) => {
            log::debug!("metadata store: no space: {m}");
            nfsstat4::NFS4ERR_NOSPC
        }
        TxErr::Kv(KvError::Unavailable(m)) => {
            log::debug!("metadata store: {m}");
            nfsstat4::NFS4ERR_DELAY
        }
        TxErr::Kv(e) => {
            log::error!("metadata store: {e}");
            match e {
                KvError::RetriesExhausted { .. } => nfsstat4::NFS4ERR_DELAY,
                _ => nfsstat4::NFS4ERR_SERVERFAULT,
            }
        }
    }
}

fn enc<T>(v: &T) -> Vec<u8>
where
    T: for<'a> Serialize<rkyv::api::high::HighSerializer<rkyv::util::AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, rkyv::rancor::Error>>,
{
    rkyv::to_bytes::<rkyv::rancor::Error>(v).expect("rkyv serialization of plain data").to_vec()
}

fn dec<T>(bytes: &[u8]) -> Result<T, KvError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned).map_err(|e| KvError::Backend(format!("corrupt record: {e}")))
}

fn inode_key(ino: u64) -> Vec<u8> {
    keyspace::with_u64(INODE, ino)
}

fn dirent_key(dir: u64, name: &[u8]) -> Vec<u8> {
    let mut k = keyspace::with_u64(DIRENT, dir);
    k.extend_from_slice(name);
    k
}

fn cookie_key(dir: u64, cookie: u64) -> Vec<u8> {
    let mut k = keyspace::with_u64(DIR_COOKIE, dir);
    k.extend_from_slice(&u64_be(cookie));
    k
}

fn xattr_prefix(ino: u64) -> Vec<u8> {
    keyspace::with_u64(XATTR, ino)
}

fn xattr_key(ino: u64, name: &[u8]) -> Vec<u8> {
    let mut k = xattr_prefix(ino);
    k.extend_from_slice(name);
    k
}


pub fn valid_name(name: &[u8]) -> NfsResult<()> {
    if name.is_empty() {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    if name.len() > MAX_NAME {
        return Err(nfsstat4::NFS4ERR_NAMETOOLONG);
    }
    if name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(nfsstat4::NFS4ERR_BADNAME);
    }
    if std::str::from_utf8(name).is_err() {
        return Err(nfsstat4::NFS4ERR_INVAL);
    }
    Ok(())
}

fn get_inode(t: &mut dyn KvTxn, ino: u64) -> Result<Inode, TxErr> {
    match t.get(&inode_key(ino))? {
        Some(b) => Ok(dec(&b)?),
        None => Err(TxErr::Nfs(nfsstat4::NFS4ERR_STALE)),
    }
}

fn put_inode(t: &mut dyn KvTxn, inode: &Inode) -> Result<(), TxErr> {
    t.put(&inode_key(inode.ino), &enc(inode))?;
    Ok(())
}

fn get_dirent(t: &mut dyn KvTxn, dir: u64, name: &[u8]) -> Result<Option<DirEntry>, TxErr> {
    match t.get(&dirent_key(dir, name))? {
        Some(b) => Ok(Some(dec(&b)?)),
        None => Ok(None),
    }
}

fn add_dirent(t: &mut dyn KvTxn, dir: &mut Inode, name: &[u8], ino: u64) -> Result<(), TxErr> {
    let cookie = dir.next_cookie;
    dir.next_cookie += 1;
    t.put(&dirent_key(dir.ino, name), &enc(&DirEntry { ino, cookie }))?;
    t.put(&cookie_key(dir.ino, cookie), name)?;
    Ok(())
}

fn del_dirent(t: &mut dyn KvTxn, dir: u64, name: &[u8], e: &DirEntry) -> Result<(), TxErr> {
    t.delete(&dirent_key(dir, name))?;
    t.delete(&cookie_key(dir, e.cookie))?;
    Ok(())
}

fn dir_is_empty(t: &mut dyn KvTxn, dir: u64) -> Result<bool, TxErr> {
    Ok(t.scan_prefix(&keyspace::with_u64(DIR_COOKIE, dir), 1)?.is_empty())
}

/// Drops one link of `target`; returns Some(ino) when the inode is gone.
fn unlink_inode(t: &mut dyn KvTxn, target: &mut Inode, now: &Time) -> Result<Option<u64>, TxErr> {
    let last = if target.is_dir() { true } else { target.nlink <= 1 };
    if last {
        t.delete(&inode_key(target.ino))?;
        for k in t.scan_keys_prefix(&xattr_prefix(target.ino), usize::MAX)? {
            t.delete(&k)?;
        }
        Ok(Some(target.ino))
    } else {
        target.nlink -= 1;
        target.touch_ctime(now);
        put_inode(t, target)?;
        Ok(None)
    }
}

/// Inode numbers a node takes from `Mnext_ino` at once. Every create on
/// every node used to read and write that one key, so concurrent creates
/// (and, on a shared store, every node's creates) conflicted on it; now a
/// block costs one small transaction per `INO_BLOCK` creates and the rest
/// come from memory. A block unused at exit is skipped (numbers are never
/// reused, so gaps are harmless; 2^64 outlasts any restart rate).
const INO_BLOCK: u64 = 1024;

/// The part of the current inode-number block not handed out yet.
#[derive(Default)]
struct InoBlock {
    next: u64,
    end: u64,
}

/// Runs `f`, one COMPOUND, with a cache of the inodes it reads: `get` and
/// `lookup` remember the inodes they read, later `get`s of the same inode
/// (and `lookup`'s look at its directory) take them from there, and every
/// other namespace call empties the cache first, since it may change what
/// was read. On a remote store this spares round trips: PUTFH and GETATTR
/// both read the inode, PUTFH reads the directory OPEN looks in, OPEN the
/// file LAYOUTGET lays out. It keeps each operation linearizable: a later
/// operation sees the namespace as an earlier one of the same request read
/// it, a moment inside the request's own lifetime, and this request changed
/// nothing in between. Outside `f` nothing is cached.
pub fn with_compound_cache<T>(f: impl FnOnce() -> T) -> T {
    compound_cache::scope(f)
}

/// The per-thread cache of [`with_compound_cache`].
mod compound_cache {
    use super::Inode;
    use std::cell::RefCell;

    /// Inodes a COMPOUND keeps (its ops name a few files at most).
    const MAX: usize = 4;

    thread_local! {
        /// Some while a COMPOUND runs on this thread.
        static CACHE: RefCell<Option<Vec<Inode>>> = const { RefCell::new(None) };
    }

    pub(super) fn scope<T>(f: impl FnOnce() -> T) -> T {
        struct Restore(Option<Vec<Inode>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let outer = self.0.take();
                CACHE.with(|c| *c.borrow_mut() = outer);
            }
        }
        let _restore = Restore(CACHE.with(|c| c.borrow_mut().replace(Vec::new())));
        f()
    }

    pub(super) fn get(ino: u64) -> Option<Inode> {
        CACHE.with(|c| c.borrow().as_ref().and_then(|v| v.iter().find(|i| i.ino == ino).cloned()))
    }

    pub(super) fn put(inode: &Inode) {
        CACHE.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.retain(|i| i.ino != inode.ino);
                if v.len() == MAX {
                    v.remove(0);
                }
                v.push(inode.clone());
            }
        })
    }

    pub(super) fn clear() {
        CACHE.with(|c| {
            if let Some(v) = c.borrow_mut().as_mut() {
                v.clear();
            }
        })
    }
}

/// The namespace over a KV store.
pub struct Namespace {
    store: Arc<dyn KvStore>,
    inos: std::sync::Mutex<InoBlock>,
}

pub struct ReaddirEntry {
    pub cookie: u64,
    pub name: Vec<u8>,
    pub inode: Inode,
}

impl Namespace {
    /// Opens the namespace, creating the root directory on first use.
    pub fn open(store: Arc<dyn KvStore>) -> Result<Namespace, KvError> {
        let ns = Namespace { store, inos: Default::default() };
        transact(&*ns.store, MAX_TXN_RETRIES, |t| -> Result<(), KvError> {
            if t.get(&inode_key(ROOT_INO))?.is_none() {
                let now = Time::now();
                let root = Inode {
                    ino: ROOT_INO,
                    generation: pnfs_protocol::seal::random_nonzero_u32(),
                    kind: nfs_ftype4::NF4DIR as u32,
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    nlink: 2,
                    size: 4096,
                    rdev: (0, 0),
                    atime: now.clone(),
                    mtime: now.clone(),
                    ctime: now.clone(),
                    btime: now,
                    change: 1,
                    parent: ROOT_INO,
                    next_cookie: FIRST_COOKIE,
                    symlink: Vec::new(),
                    create_verifier: None,
                };
                t.put(&inode_key(ROOT_INO), &enc(&root))?;
                t.put(NEXT_INO_KEY, &u64_be(ROOT_INO + 1))?;
            }
            Ok(())
        })?;
        Ok(ns)
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Runs a transaction that may change the namespace: forgets what the
    /// COMPOUND read so far (see [`with_compound_cache`]).
    fn run<T>(&self, f: impl FnMut(&mut dyn KvTxn) -> Result<T, TxErr>) -> NfsResult<T> {
        compound_cache::clear();
        self.read(f)
    }

    /// Runs a read-only transaction (keeps the COMPOUND's cache).
    fn read<T>(&self, f: impl FnMut(&mut dyn KvTxn) -> Result<T, TxErr>) -> NfsResult<T> {
        transact(&*self.store, MAX_TXN_RETRIES, f).map_err(map_err)
    }

    pub fn get(&self, ino: u64) -> NfsResult<Inode> {
        if let Some(i) = compound_cache::get(ino) {
            return Ok(i);
        }
        let i = self.read(|t| get_inode(t, ino))?;
        compound_cache::put(&i);
        Ok(i)
    }

    /// A fresh inode number from this node's block, taking the next block
    /// of [`INO_BLOCK`] from `Mnext_ino` when it is used up (the lock is
    /// held over that transaction, so one thread takes it for everyone).
    fn alloc_ino(&self) -> NfsResult<u64> {
        let mut block = self.inos.lock().unwrap_or_else(|e| e.into_inner());
        if block.next == block.end {
            let start = self.run(|t| {
                let next = t.get(NEXT_INO_KEY)?.and_then(|b| pnfs_kv::key::decode_u64_be(&b)).unwrap_or(ROOT_INO + 1);
                let end = next.checked_add(INO_BLOCK).ok_or(nfsstat4::NFS4ERR_NOSPC)?;
                t.put(NEXT_INO_KEY, &u64_be(end))?;
                Ok(next)
            })?;
            *block = InoBlock { next: start, end: start + INO_BLOCK };
        }
        let ino = block.next;
        block.next += 1;
        Ok(ino)
    }

    pub fn lookup(&self, dir: u64, name: &[u8]) -> NfsResult<Inode> {
        // The directory as this COMPOUND read it (PUTFH did): only its kind
        // is used, which never changes for an inode number.
        let cached_dir = compound_cache::get(dir);
        let i = self.read(|t| {
            let d = match &cached_dir {
                Some(d) => d.clone(),
                None => get_inode(t, dir)?,
            };
            if !d.is_dir() {
                return Err(if d.kind == nfs_ftype4::NF4LNK as u32 {
                    nfsstat4::NFS4ERR_SYMLINK
                } else {
                    nfsstat4::NFS4ERR_NOTDIR
                }
                .into());
            }
            match get_dirent(t, dir, name)? {
                Some(e) => get_inode(t, e.ino),
                None => Err(nfsstat4::NFS4ERR_NOENT.into()),
            }
        })?;
        compound_cache::put(&i);
        Ok(i)
    }

    /// Creates `name` in `dir`. Returns (dir before change, dir after, new inode).
    pub fn create(
        &self,
        dir: u64,
        name: &[u8],
        obj: &NewObject,
        attrs: &SetAttrs,
        owner: (u32, u32),
        verifier: Option<[u8; 8]>,
    ) -> NfsResult<(u64, u64, Inode)> {
        valid_name(name)?;
        // Taken outside the transaction: a retry keeps the number, a failed
        // create (EXIST) leaves one gap.
        let next = self.alloc_ino()?;
        self.run(|t| {
            let mut d = get_inode(t, dir)?;
            if !d.is_dir() {
                return Err(nfsstat4::NFS4ERR_NOTDIR.into());
            }
            if get_dirent(t, dir, name)?.is_some() {
                return Err(nfsstat4::NFS4ERR_EXIST.into());
            }
            let now = Time::now();
            let is_dir = obj.kind == nfs_ftype4::NF4DIR;
            let default_mode = if is_dir { 0o755 } else { 0o644 };
            let mut inode = Inode {
                ino: next,
                // Random, so a handle for a reused or guessed inode number
                // is STALE even before its tag is checked.
                generation: pnfs_protocol::seal::random_nonzero_u32(),
                kind: obj.kind as u32,
                mode: attrs.mode.unwrap_or(default_mode) & 0o7777,
                uid: attrs.uid.unwrap_or(owner.0),
                gid: attrs.gid.unwrap_or(owner.1),
                nlink: if is_dir { 2 } else { 1 },
                size: if is_dir { 4096 } else if obj.kind == nfs_ftype4::NF4LNK { obj.symlink.len() as u64 } else { 0 },
                rdev: obj.rdev,
                atime: now.clone(),
                mtime: now.clone(),
                ctime: now.clone(),
                btime: now.clone(),
                change: 1,
                parent: dir,
                next_cookie: FIRST_COOKIE,
                symlink: obj.symlink.clone(),
                create_verifier: verifier,
            };
            apply_times(&mut inode, attrs, &now);
            put_inode(t, &inode)?;
            let before = d.change;
            add_dirent(t, &mut d, name, inode.ino)?;
            if is_dir {
                d.nlink += 1;
            }
            d.mtime = now.clone();
            d.touch_ctime(&now);
            put_inode(t, &d)?;
            Ok((before, d.change, inode))
        })
    }

    /// Removes `name` from `dir`. Returns (before, after, unlinked).
    pub fn remove(&self, dir: u64, name: &[u8]) -> NfsResult<(u64, u64, Unlinked)> {
        if name.is_empty() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        self.run(|t| {
            let mut d = get_inode(t, dir)?;
            if !d.is_dir() {
                return Err(nfsstat4::NFS4ERR_NOTDIR.into());
            }
            let e = get_dirent(t, dir, name)?.ok_or(nfsstat4::NFS4ERR_NOENT)?;
            let mut target = get_inode(t, e.ino)?;
            if target.is_dir() && !dir_is_empty(t, target.ino)? {
                return Err(nfsstat4::NFS4ERR_NOTEMPTY.into());
            }
            let now = Time::now();
            del_dirent(t, dir, name, &e)?;
            let before = d.change;
            if target.is_dir() {
                d.nlink = d.nlink.saturating_sub(1);
            }
            d.mtime = now.clone();
            d.touch_ctime(&now);
            put_inode(t, &d)?;
            let freed = unlink_inode(t, &mut target, &now)?;
            Ok((before, d.change, Unlinked { freed_ino: freed.filter(|_| target.kind == nfs_ftype4::NF4REG as u32) }))
        })
    }

    /// Renames; returns (src before, src after, dst before, dst after, unlinked target).
    pub fn rename(
        &self,
        src_dir: u64,
        old: &[u8],
        dst_dir: u64,
        new: &[u8],
    ) -> NfsResult<((u64, u64), (u64, u64), Unlinked)> {
        if old.is_empty() {
            return Err(nfsstat4::NFS4ERR_INVAL);
        }
        valid_name(new)?;
        self.run(|t| {
            let mut sd = get_inode(t, src_dir)?;
            let mut dd = if dst_dir == src_dir { sd.clone() } else { get_inode(t, dst_dir)? };
            if !sd.is_dir() || !dd.is_dir() {
                return Err(nfsstat4::NFS4ERR_NOTDIR.into());
            }
            let se = get_dirent(t, src_dir, old)?.ok_or(nfsstat4::NFS4ERR_NOENT)?;
            let moving = get_inode(t, se.ino)?;
            let (sb, db) = (sd.change, dd.change);
            let now = Time::now();
            let mut unlinked = Unlinked::default();
            if let Some(de) = get_dirent(t, dst_dir, new)? {
                if de.ino == se.ino {
                    // Same file: POSIX says do nothing.
                    return Ok(((sb, sb), (db, db), unlinked));
                }
                let mut target = get_inode(t, de.ino)?;
                match (moving.is_dir(), target.is_dir()) {
                    (true, false) => return Err(nfsstat4::NFS4ERR_EXIST.into()),
                    (false, true) => return Err(nfsstat4::NFS4ERR_EXIST.into()),
                    (true, true) if !dir_is_empty(t, target.ino)? => return Err(nfsstat4::NFS4ERR_EXIST.into()),
                    _ => {}
                }
                del_dirent(t, dst_dir, new, &de)?;
                if target.is_dir() {
                    dd.nlink = dd.nlink.saturating_sub(1);
                }
                let freed = unlink_inode(t, &mut target, &now)?;
                unlinked.freed_ino = freed.filter(|_| target.kind == nfs_ftype4::NF4REG as u32);
            }
            if moving.is_dir() {
                // Refuse moving a directory under itself.
                let mut p = dst_dir;
                loop {
                    if p == moving.ino {
                        return Err(nfsstat4::NFS4ERR_INVAL.into());
                    }
                    if p == ROOT_INO {
                        break;
                    }
                    p = get_inode(t, p)?.parent;
                }
            }
            del_dirent(t, src_dir, old, &se)?;
            if src_dir == dst_dir {
                // sd and dd are copies of one inode: dd has the link count
                // change, sd the cookie counter; write one merged copy.
                add_dirent(t, &mut sd, new, se.ino)?;
                sd.mtime = now.clone();
                sd.touch_ctime(&now);
                sd.nlink = dd.nlink;
                put_inode(t, &sd)?;
                dd = sd.clone();
            } else {
                add_dirent(t, &mut dd, new, se.ino)?;
                if moving.is_dir() {
                    sd.nlink = sd.nlink.saturating_sub(1);
                    dd.nlink += 1;
                }
                sd.mtime = now.clone();
                sd.touch_ctime(&now);
                dd.mtime = now.clone();
                dd.touch_ctime(&now);
                put_inode(t, &sd)?;
                put_inode(t, &dd)?;
            }
            let mut m = get_inode(t, se.ino)?;
            if m.is_dir() {
                m.parent = dst_dir;
            }
            m.touch_ctime(&now);
            put_inode(t, &m)?;
            Ok(((sb, sd.change), (db, dd.change), unlinked))
        })
    }

    /// Hard link `ino` as `dir/name`; returns (dir before, dir after).
    pub fn link(&self, ino: u64, dir: u64, name: &[u8]) -> NfsResult<(u64, u64)> {
        valid_name(name)?;
        self.run(|t| {
            let mut d = get_inode(t, dir)?;
            if !d.is_dir() {
                return Err(nfsstat4::NFS4ERR_NOTDIR.into());
            }
            let mut f = get_inode(t, ino)?;
            if f.is_dir() {
                return Err(nfsstat4::NFS4ERR_ISDIR.into());
            }
            if get_dirent(t, dir, name)?.is_some() {
                return Err(nfsstat4::NFS4ERR_EXIST.into());
            }
            let now = Time::now();
            f.nlink += 1;
            f.touch_ctime(&now);
            put_inode(t, &f)?;
            let before = d.change;
            add_dirent(t, &mut d, name, ino)?;
            d.mtime = now.clone();
            d.touch_ctime(&now);
            put_inode(t, &d)?;
            Ok((before, d.change))
        })
    }

    /// Entries with cookie > `after`, at most `limit`.
    pub fn readdir(&self, dir: u64, after: u64, limit: usize) -> NfsResult<(Vec<ReaddirEntry>, bool)> {
        self.run(|t| {
            let d = get_inode(t, dir)?;
            if !d.is_dir() {
                return Err(nfsstat4::NFS4ERR_NOTDIR.into());
            }
            let start = cookie_key(dir, after.saturating_add(1).max(FIRST_COOKIE));
            let end = keyspace::with_u64(DIR_COOKIE, dir + 1);
            let rows = t.scan(&start, Some(&end), limit + 1)?;
            let eof = rows.len() <= limit;
            let mut out = Vec::with_capacity(rows.len().min(limit));
            for (k, name) in rows.into_iter().take(limit) {
                let cookie = pnfs_kv::key::decode_u64_be(&k[9..]).unwrap_or(0);
                let e = match get_dirent(t, dir, &name)? {
                    Some(e) => e,
                    None => continue,
                };
                let inode = get_inode(t, e.ino)?;
                out.push(ReaddirEntry { cookie, name, inode });
            }
            Ok((out, eof))
        })
    }

    /// Applies attribute changes; `size_change` callback is not needed: data
    /// truncation happens in the data store before this is called.
    pub fn setattr(&self, ino: u64, attrs: &SetAttrs, guard_ctime: Option<&Time>) -> NfsResult<Inode> {
        self.run(|t| {
            let mut i = get_inode(t, ino)?;
            if let Some(g) = guard_ctime {
                if &i.ctime != g {
                    return Err(nfsstat4::NFS4ERR_NOT_SAME.into());
                }
            }
            let now = Time::now();
            if let Some(m) = attrs.mode {
                i.mode = m & 0o7777;
            }
            if let Some(u) = attrs.uid {
                i.uid = u;
            }
            if let Some(g) = attrs.gid {
                i.gid = g;
            }
            if let Some(s) = attrs.size {
                if i.is_dir() {
                    return Err(nfsstat4::NFS4ERR_ISDIR.into());
                }
                if i.kind != nfs_ftype4::NF4REG as u32 {
                    return Err(nfsstat4::NFS4ERR_INVAL.into());
                }
                if s != i.size {
                    i.mtime = now.clone();
                }
                i.size = s;
            }
            apply_times(&mut i, attrs, &now);
            i.touch_ctime(&now);
            put_inode(t, &i)?;
            Ok(i)
        })
    }

    /// Records a data write: grows size if needed, moves mtime/change.
    pub fn note_write(&self, ino: u64, end: u64) -> NfsResult<Inode> {
        self.run(|t| {
            let mut i = get_inode(t, ino)?;
            let now = Time::now();
            if end > i.size {
                i.size = end;
            }
            i.mtime = now.clone();
            i.touch_ctime(&now);
            put_inode(t, &i)?;
            Ok(i)
        })
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> NfsResult<Vec<u8>> {
        self.run(|t| {
            get_inode(t, ino)?;
            t.get(&xattr_key(ino, name))?.ok_or(TxErr::Nfs(nfsstat4::NFS4ERR_NOXATTR))
        })
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], option: setxattr_option4) -> NfsResult<(u64, u64)> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(nfsstat4::NFS4ERR_NAMETOOLONG);
        }
        if value.len() > MAX_XATTR_VALUE {
            return Err(nfsstat4::NFS4ERR_XATTR2BIG);
        }
        self.run(|t| {
            let mut i = get_inode(t, ino)?;
            let key = xattr_key(ino, name);
            let exists = t.get(&key)?.is_some();
            match option {
                setxattr_option4::SETXATTR4_CREATE if exists => return Err(nfsstat4::NFS4ERR_EXIST.into()),
                setxattr_option4::SETXATTR4_REPLACE if !exists => return Err(nfsstat4::NFS4ERR_NOXATTR.into()),
                _ => {}
            }
            // Counted by key: loading every value (up to 64 KiB each) to count names cost up to 64 MiB.
            if !exists && t.scan_keys_prefix(&xattr_prefix(ino), MAX_XATTRS_PER_FILE)?.len() >= MAX_XATTRS_PER_FILE {
                return Err(nfsstat4::NFS4ERR_NOSPC.into());
            }
            t.put(&key, value)?;
            let before = i.change;
            i.touch_ctime(&Time::now());
            put_inode(t, &i)?;
            Ok((before, i.change))
        })
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> NfsResult<(u64, u64)> {
        self.run(|t| {
            let mut i = get_inode(t, ino)?;
            let key = xattr_key(ino, name);
            if t.get(&key)?.is_none() {
                return Err(nfsstat4::NFS4ERR_NOXATTR.into());
            }
            t.delete(&key)?;
            let before = i.change;
            i.touch_ctime(&Time::now());
            put_inode(t, &i)?;
            Ok((before, i.change))
        })
    }

    /// All xattr names of `ino`, in order (keys only: values are not read).
    pub fn listxattrs(&self, ino: u64) -> NfsResult<Vec<Vec<u8>>> {
        self.run(|t| {
            get_inode(t, ino)?;
            let p = xattr_prefix(ino);
            Ok(t.scan_keys_prefix(&p, MAX_XATTRS_PER_FILE)?.into_iter().map(|k| k[p.len()..].to_vec()).collect())
        })
    }

    /// Persisted small records (client records for grace): put/delete/list by prefix.
    pub fn put_record(&self, key: &[u8], value: &[u8]) -> NfsResult<()> {
        self.run(|t| Ok(t.put(key, value)?))
    }

    pub fn delete_record(&self, key: &[u8]) -> NfsResult<()> {
        self.run(|t| Ok(t.delete(key)?))
    }

    pub fn list_records(&self, prefix: &[u8]) -> NfsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.run(|t| Ok(t.scan_prefix(prefix, usize::MAX)?))
    }

    /// Checks the namespace invariants (used by tests and `pnfsd --fsck`):
    /// every entry points at an existing inode, cookie index matches entries,
    /// link counts match entries. Returns a list of problems.
    pub fn check_consistency(&self) -> NfsResult<Vec<String>> {
        self.run(|t| {
            let mut problems = Vec::new();
            let mut links: std::collections::HashMap<u64, u32> = Default::default();
            let mut subdirs: std::collections::HashMap<u64, u32> = Default::default();
            for (k, v) in t.scan_prefix(&[DIRENT], usize::MAX)? {
                let dir = pnfs_kv::key::decode_u64_be(&k[1..9]).unwrap_or(0);
                let name = &k[9..];
                let e: DirEntry = dec(&v)?;
                match t.get(&inode_key(e.ino))? {
                    None => problems.push(format!("entry {dir}/{} -> missing inode {}", String::from_utf8_lossy(name), e.ino)),
                    Some(b) => {
                        let i: Inode = dec(&b)?;
                        *links.entry(e.ino).or_default() += 1;
                        if i.is_dir() {
                            *subdirs.entry(dir).or_default() += 1;
                        }
                    }
                }
                match t.get(&cookie_key(dir, e.cookie))? {
                    Some(n) if n == name => {}
                    _ => problems.push(format!("entry {dir}/{} has no cookie index", String::from_utf8_lossy(name))),
                }
            }
            for (_, v) in t.scan_prefix(&[INODE], usize::MAX)? {
                let i: Inode = dec(&v)?;
                if i.ino == ROOT_INO {
                    continue;
                }
                let n = links.get(&i.ino).copied().unwrap_or(0);
                if n == 0 {
                    problems.push(format!("inode {} is not linked anywhere", i.ino));
                } else if !i.is_dir() && n != i.nlink {
                    problems.push(format!("inode {} nlink {} but {} entries", i.ino, i.nlink, n));
                }
                if i.is_dir() && i.nlink != 2 + subdirs.get(&i.ino).copied().unwrap_or(0) {
                    problems.push(format!("dir {} nlink {} but {} subdirs", i.ino, i.nlink, subdirs.get(&i.ino).copied().unwrap_or(0)));
                }
            }
            let c_count = t.scan_prefix(&[DIR_COOKIE], usize::MAX)?.len();
            let d_count = links.values().map(|v| *v as usize).sum::<usize>();
            if c_count != d_count && problems.is_empty() {
                problems.push(format!("{c_count} cookie index rows for {d_count} entries"));
            }
            Ok(problems)
        })
    }
}

fn apply_times(i: &mut Inode, attrs: &SetAttrs, now: &Time) {
    match &attrs.atime {
        Some(SetTime::ServerNow) => i.atime = now.clone(),
        Some(SetTime::Client(t)) => i.atime = t.clone(),
        None => {}
    }
    match &attrs.mtime {
        Some(SetTime::ServerNow) => i.mtime = now.clone(),
        Some(SetTime::Client(t)) => i.mtime = t.clone(),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnfs_kv::MemStore;

    fn ns() -> Namespace {
        Namespace::open(Arc::new(MemStore::new())).unwrap()
    }

    fn file() -> NewObject {
        NewObject { kind: nfs_ftype4::NF4REG, symlink: vec![], rdev: (0, 0) }
    }

    fn dir() -> NewObject {
        NewObject { kind: nfs_ftype4::NF4DIR, symlink: vec![], rdev: (0, 0) }
    }

    #[test]
    fn create_lookup_remove() {
        let ns = ns();
        let (_, _, f) = ns.create(ROOT_INO, b"a", &file(), &SetAttrs::default(), (5, 6), None).unwrap();
        assert_eq!(ns.lookup(ROOT_INO, b"a").unwrap().ino, f.ino);
        assert_eq!(f.uid, 5);
        assert_eq!(
            ns.create(ROOT_INO, b"a", &file(), &SetAttrs::default(), (0, 0), None).unwrap_err(),
            nfsstat4::NFS4ERR_EXIST
        );
        let (_, _, u) = ns.remove(ROOT_INO, b"a").unwrap();
        assert_eq!(u.freed_ino, Some(f.ino));
        assert_eq!(ns.lookup(ROOT_INO, b"a").unwrap_err(), nfsstat4::NFS4ERR_NOENT);
        assert!(ns.check_consistency().unwrap().is_empty());
    }

    #[test]
    fn nodes_sharing_a_store_take_disjoint_inode_blocks() {
        let a = ns();
        // A second node (or a restart) on the same store.
        let b = Namespace::open(a.store().clone()).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..(INO_BLOCK + 10) {
            for (n, node) in [&a, &b].iter().enumerate() {
                let name = format!("n{n}-{i}");
                let (_, _, f) = node.create(ROOT_INO, name.as_bytes(), &file(), &SetAttrs::default(), (0, 0), None).unwrap();
                assert!(seen.insert(f.ino), "inode {} handed out twice", f.ino);
                assert!(f.ino > ROOT_INO);
            }
        }
        // Each node took two blocks, one transaction each.
        let next = a.run(|t| Ok(t.get(NEXT_INO_KEY)?)).unwrap().and_then(|v| pnfs_kv::key::decode_u64_be(&v));
        assert_eq!(next, Some(ROOT_INO + 1 + 4 * INO_BLOCK));
        assert!(a.check_consistency().unwrap().is_empty());
    }

    #[test]
    fn compound_cache_spares_rereads_and_forgets_on_changes() {
        let store = Arc::new(CountingStore::default());
        let ns = Namespace::open(store.clone()).unwrap();
        let (_, _, f) = ns.create(ROOT_INO, b"f", &file(), &SetAttrs::default(), (0, 0), None).unwrap();
        let begun = || store.begun.load(std::sync::atomic::Ordering::Relaxed);
        with_compound_cache(|| {
            let n = begun();
            ns.get(ROOT_INO).unwrap(); // PUTFH
            assert_eq!(ns.lookup(ROOT_INO, b"f").unwrap().ino, f.ino); // OPEN
            assert_eq!(ns.get(f.ino).unwrap().size, 0); // LAYOUTGET, GETATTR
            ns.get(ROOT_INO).unwrap();
            assert_eq!(begun() - n, 2, "one read for the directory, one for the lookup");
            // A change in the same COMPOUND is seen by the next read.
            let attrs = SetAttrs { size: Some(10), ..Default::default() };
            ns.setattr(f.ino, &attrs, None).unwrap();
            assert_eq!(ns.get(f.ino).unwrap().size, 10);
        });
        // Outside a COMPOUND every get reads the store.
        let n = begun();
        ns.get(f.ino).unwrap();
        ns.get(f.ino).unwrap();
        assert_eq!(begun() - n, 2);
        // A change by another node (another Namespace on the store) is seen
        // by the next COMPOUND.
        let other = Namespace::open(store.clone()).unwrap();
        with_compound_cache(|| assert_eq!(ns.get(f.ino).unwrap().size, 10));
        other.setattr(f.ino, &SetAttrs { size: Some(20), ..Default::default() }, None).unwrap();
        with_compound_cache(|| assert_eq!(ns.get(f.ino).unwrap().size, 20));
    }

    #[test]
    fn readdir_cookies_survive_changes() {
        let ns = ns();
        for i in 0..10 {
            ns.create(ROOT_INO, format!("f{i}").as_bytes(), &file(), &SetAttrs::default(), (0, 0), None).unwrap();
        }
        let (first, eof) = ns.readdir(ROOT_INO, 0, 4).unwrap();
        assert!(!eof);
        let last = first.last().unwrap().cookie;
        // Remove an entry already returned and the next one; add a new one.
        ns.remove(ROOT_INO, &first[3].name).unwrap();
        ns.remove(ROOT_INO, b"f4").unwrap();
        ns.create(ROOT_INO, b"new", &file(), &SetAttrs::default(), (0, 0), None).unwrap();
        let (rest, eof) = ns.readdir(ROOT_INO, last, 100).unwrap();
        assert!(eof);
        let names: Vec<_> = rest.iter().map(|e| String::from_utf8(e.name.clone()).unwrap()).collect();
        assert_eq!(names, ["f5", "f6", "f7", "f8", "f9", "new"]);
    }

    #[test]
    fn rename_and_link_keep_counts() {
        let ns = ns();
        let (_, _, d1) = ns.create(ROOT_INO, b"d1", &dir(), &SetAttrs::default(), (0, 0), None).unwrap();
        let (_, _, d2) = ns.create(ROOT_INO, b"d2", &dir(), &SetAttrs::default(), (0, 0), None).unwrap();
        let (_, _, f) = ns.create(d1.ino, b"f", &file(), &SetAttrs::default(), (0, 0), None).unwrap();
        ns.rename(d1.ino, b"f", d2.ino, b"g").unwrap();
        assert_eq!(ns.lookup(d2.ino, b"g").unwrap().ino, f.ino);
        ns.link(f.ino, ROOT_INO, b"hard").unwrap();
        assert_eq!(ns.get(f.ino).unwrap().nlink, 2);
        ns.rename(ROOT_INO, b"d2", d1.ino, b"d2moved").unwrap();
        assert_eq!(ns.get(ROOT_INO).unwrap().nlink, 3);
        assert_eq!(ns.get(d1.ino).unwrap().nlink, 3);
        assert_eq!(
            ns.rename(ROOT_INO, b"d1", d2.ino, b"loop").unwrap_err(),
            nfsstat4::NFS4ERR_INVAL
        );
        // rename over an existing file unlinks it
        let (_, _, h) = ns.create(ROOT_INO, b"h", &file(), &SetAttrs::default(), (0, 0), None).unwrap();
        let (_, _, u) = ns.rename(ROOT_INO, b"hard", ROOT_INO, b"h").unwrap();
        assert_eq!(u.freed_ino, Some(h.ino));
        // f is now linked as d2/g and h.
        assert_eq!(ns.get(f.ino).unwrap().nlink, 2);
        assert_eq!(ns.remove(ROOT_INO, b"d1").unwrap_err(), nfsstat4::NFS4ERR_NOTEMPTY);
        let problems = ns.check_consistency().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn xattrs() {
        let ns = ns();
        let (_, _, f) = ns.create(ROOT_INO, b"x", &file(), &SetAttrs::default(), (0, 0), None).unwrap();
        ns.setxattr(f.ino, b"user.a", b"1", setxattr_option4::SETXATTR4_CREATE).unwrap();
        assert_eq!(
            ns.setxattr(f.ino, b"user.a", b"1", setxattr_option4::SETXATTR4_CREATE).unwrap_err(),
            nfsstat4::NFS4ERR_EXIST
        );
        assert_eq!(ns.getxattr(f.ino, b"user.a").unwrap(), b"1");
        assert_eq!(ns.listxattrs(f.ino).unwrap(), vec![b"user.a".to_vec()]);
        ns.removexattr(f.ino, b"user.a").unwrap();
        assert_eq!(ns.getxattr(f.ino, b"user.a").unwrap_err(), nfsstat4::NFS4ERR_NOXATTR);
    }

    /// A store that counts the transactions begun and the value bytes its
    /// scans hand out.
    #[derive(Default)]
    struct CountingStore {
        inner: MemStore,
        scanned_value_bytes: std::sync::atomic::AtomicUsize,
        begun: std::sync::atomic::AtomicU64,
    }

    struct CountingTxn<'a> {
        inner: Box<dyn KvTxn + 'a>,
        counter: &'a std::sync::atomic::AtomicUsize,
    }

    impl KvStore for CountingStore {
        fn begin(&self) -> pnfs_kv::Result<Box<dyn KvTxn + '_>> {
            self.begun.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Box::new(CountingTxn { inner: self.inner.begin()?, counter: &self.scanned_value_bytes }))
        }
    }

    impl KvTxn for CountingTxn<'_> {
        fn get(&mut self, key: &[u8]) -> pnfs_kv::Result<Option<Vec<u8>>> {
            self.inner.get(key)
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> pnfs_kv::Result<()> {
            self.inner.put(key, value)
        }
        fn delete(&mut self, key: &[u8]) -> pnfs_kv::Result<()> {
            self.inner.delete(key)
        }
        fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> pnfs_kv::Result<Vec<pnfs_kv::KvPair>> {
            let r = self.inner.scan(start, end, limit)?;
            let n: usize = r.iter().map(|(_, v)| v.len()).sum();
            self.counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Ok(r)
        }
        fn scan_keys(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> pnfs_kv::Result<Vec<Vec<u8>>> {
            self.inner.scan_keys(start, end, limit)
        }
        fn commit(self: Box<Self>) -> pnfs_kv::Result<()> {
            self.inner.commit()
        }
    }

    /// Listing and counting names must not read the (up to 64 KiB) values.
    #[test]
    fn xattr_names_without_values() {
        let store = Arc::new(CountingStore::default());
        let ns = Namespace::open(store.clone()).unwrap();
        let (_, _, f) = ns.create(ROOT_INO, b"x", &file(), &SetAttrs::default(), (0, 0), None).unwrap();
        let big = vec![0xabu8; MAX_XATTR_VALUE];
        for n in 0..8 {
            ns.setxattr(f.ino, format!("user.{n}").as_bytes(), &big, setxattr_option4::SETXATTR4_EITHER).unwrap();
        }
        assert_eq!(ns.listxattrs(f.ino).unwrap().len(), 8);
        ns.remove(ROOT_INO, b"x").unwrap();
        let read = store.scanned_value_bytes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(read < MAX_XATTR_VALUE, "scans returned {read} value bytes to set, list and drop 8 names");
    }
}

//! The MDS's KV key space, all of it: every record the MDS keeps in its
//! ordered KV store (`pnfs_kv::KvStore`) has a key starting with one of the
//! single-byte prefixes below. A new kind of record gets its prefix here
//! (the test checks that they stay distinct), never a literal elsewhere.
//!
//! Integers in keys are big-endian (`pnfs_kv::key::u64_be`), so a scan of
//! a prefix walks them in numeric order.
//!
//! | prefix | key after the prefix | value | written by |
//! |---|---|---|---|
//! | `I` [`INODE`] | ino (u64) | `Inode` (rkyv) | `namespace` |
//! | `D` [`DIRENT`] | dir ino (u64), name | `DirEntry` {ino, cookie} (rkyv) | `namespace` |
//! | `C` [`DIR_COOKIE`] | dir ino (u64), cookie (u64) | entry name; READDIR walks these, so cookies stay valid while a directory changes | `namespace` |
//! | `X` [`XATTR`] | ino (u64), xattr name | xattr value | `namespace` |
//! | `M` [`META`] | a name: [`NEXT_INO_KEY`], [`SERVER_ID_KEY`], [`BOOT_COUNT_KEY`] | first inode number not yet taken by any node (u64; taken in blocks); server id (bytes); boot count (u64, the MDS epoch) | `namespace`, `mds` |
//! | `O` [`CLIENT_RECORD`] | client owner (`co_ownerid` bytes) | `1`: a client that may reclaim state after a restart | `mds`, `ops::session` |
//! | `L` [`STRIPE_SET`] | ino (u64) | the file's placement, its kind fixed once written. Striped (files layout): XDR stripe unit (never 0), first stripe index, generation, DS indices<>. Mirrored (flexfiles, `pnfs::mirror`): XDR 0 (the tag), version 1, mirrors (2 or 3), segment bytes (u64), generation, first (pool index of segment 0's mirror 0), DS indices<> (the pool, ascending) | `pnfs::placement` |
//! | `H` [`PLACEMENT_HINT`] | ino (u64) | placement policy of a file created under a non-default one: stripe count (u32), stripe unit (u32), layout (u32: 1 stripe, 2 mirror2, 3 mirror3; absent = stripe) | `pnfs::placement` |
//! | `S` [`DATA_SERVER`] | DS index (u64) | registered data server (XDR: index, id, addresses, control address, capacity, free, admin state: u32, absent in older records = active) | `pnfs::registry` |
//! | `V` [`DEVICE_ID`] | device ID (16 bytes) | empty: a device ID handed out (GETDEVICELIST) | `pnfs::placement` |
//! | `N` [`CLUSTER_NODE`] | node id (u32) | live cluster node, under its etcd lease: `node_id epoch peer lease` (text) | `cluster::membership` |
//! | `P` [`VIP_CLAIM`] | VIP octets (4 or 16) | the VIP's holder, under its lease: `node_id epoch` (text) | `cluster::vip` |
//!
//! The state layer's rows (lower case): written only by a store whose
//! journal is on (a clustered MDS, `StateStore::set_journal`), read back by
//! `StateStore::restore`. Each value starts with a format byte
//! (`state::records::RECORD_VERSION`), then XDR; `state/records.rs` lists
//! the fields of each.
//!
//! | prefix | key after the prefix | value | written by |
//! |---|---|---|---|
//! | `c` [`STATE_CLIENT`] | clientid (u64) | client record: owner, verifier, principal, address, confirmed, CREATE_SESSION sequence and reply, reclaim done | `state::records` |
//! | `e` [`STATE_SESSION`] | session ID (16 bytes) | session: clientid, fore and back channel limits (the slot count), callback program, minor version | `state::records` |
//! | `s` [`STATE`] | stateid `other` (12 bytes) | state: clientid, ino, seqid, revoked, kind (open, lock, delegation, layout) and its fields | `state::records` |
//! | `s` [`STATE`] | `other`, then `d` [`STATE_DELEG_SUFFIX`] | a delegation's own record (filehandle, granting call, change attribute); deleted with its state | `state::records` |
//! | `b` [`STATE_BYTE_LOCKS`] | ino (u64), clientid (u64) | the byte-range locks of one client on the file (clientid, owner, range, write each) | `state::records` |
//!
//! A cluster's rows beside them (`state::cluster`; only with `[mds.cluster]`):
//!
//! | prefix | key after the prefix | value | written by |
//! |---|---|---|---|
//! | `e` [`STATE_SESSION`] | session ID, `t` [`STATE_SLOT_SUFFIX`], slot (u32) | the slot after the last COMPOUND on it that changed state: format byte, seqid, cached reply (bool, opaque) when the client asked (sa_cachethis); read-only COMPOUNDs are not written, so on a node taking the session over the seqid is a lower bound; deleted with the session | `state::cluster` |
//! | `w` [`STATE_OWNER`] | clientid (u64) | node id (u32) holding the client: written with the client's first records and by the node adopting it; a node finding another id there at its next write drops its copy | `state::cluster` |
//! | `f` [`STATE_FILE`] | ino (u64), clientid (u64) | one client's share on the file, what other nodes check an OPEN or a delegation against: format byte, access union, deny union, delegation (0 none, 1 read, 2 write), u32 each; deleted when the client holds no open or delegation there. Written by the deciding OPEN (or grant) in one transaction with its check, and after every change with the client's records | `state::xnode`, `state::records` |
//! | `f` [`STATE_FILE`] | ino (u64) | the file's conflict version (u64): every transaction that checks other clients' `f` or `b` rows of the file and then adds to its own bumps it, so two nodes deciding at once conflict and one retries seeing the other's row (a scan alone is not conflict-checked) | `state::xnode` |

/// `I` ino -> Inode.
pub const INODE: u8 = b'I';
/// `D` dir_ino name -> DirEntry.
pub const DIRENT: u8 = b'D';
/// `C` dir_ino cookie -> name.
pub const DIR_COOKIE: u8 = b'C';
/// `X` ino name -> xattr value.
pub const XATTR: u8 = b'X';
/// `M` name -> a server-wide value (the keys below).
pub const META: u8 = b'M';
/// `O` owner -> `1`: a persisted client record.
pub const CLIENT_RECORD: u8 = b'O';
/// `L` ino -> placement (stripe set or mirror set).
pub const STRIPE_SET: u8 = b'L';
/// `H` ino -> placement hint.
pub const PLACEMENT_HINT: u8 = b'H';
/// `S` ds_index -> data server record.
pub const DATA_SERVER: u8 = b'S';
/// `V` deviceid -> empty.
pub const DEVICE_ID: u8 = b'V';
/// `N` node id -> live cluster node (etcd-leased).
pub const CLUSTER_NODE: u8 = b'N';
/// `P` vip -> the VIP's holder (etcd-leased).
pub const VIP_CLAIM: u8 = b'P';

/// `c` clientid -> client record (state layer).
pub const STATE_CLIENT: u8 = b'c';
/// `e` sessionid -> session record (state layer).
pub const STATE_SESSION: u8 = b'e';
/// `s` other -> state record; `s` other `d` -> delegation record.
pub const STATE: u8 = b's';
/// Follows a delegation's `other` in the key of its own record.
pub const STATE_DELEG_SUFFIX: u8 = b'd';
/// `b` ino clientid -> that client's byte-range locks on the file (state layer).
pub const STATE_BYTE_LOCKS: u8 = b'b';
/// Follows a session ID in the key of one of its slots (`e` sid `t` slot).
pub const STATE_SLOT_SUFFIX: u8 = b't';
/// `w` clientid -> node id holding the client (a cluster's).
pub const STATE_OWNER: u8 = b'w';
/// `f` ino clientid -> one client's share of a file; `f` ino -> the file's conflict version (a cluster's).
pub const STATE_FILE: u8 = b'f';

/// Every prefix with its name.
pub const ALL: [(u8, &str); 18] = [
    (INODE, "inode"),
    (DIRENT, "directory entry"),
    (DIR_COOKIE, "directory cookie"),
    (XATTR, "xattr"),
    (META, "server-wide value"),
    (CLIENT_RECORD, "client record"),
    (STRIPE_SET, "stripe set"),
    (PLACEMENT_HINT, "placement hint"),
    (DATA_SERVER, "data server"),
    (DEVICE_ID, "device ID"),
    (CLUSTER_NODE, "cluster node"),
    (VIP_CLAIM, "VIP claim"),
    (STATE_CLIENT, "state: client"),
    (STATE_SESSION, "state: session"),
    (STATE, "state: stateid"),
    (STATE_BYTE_LOCKS, "state: byte-range locks"),
    (STATE_OWNER, "state: node holding a client"),
    (STATE_FILE, "state: a client's share of a file"),
];

/// First inode number no node has taken yet (u64). Nodes take blocks of
/// numbers (`namespace::INO_BLOCK`, 1024) from it, one transaction a block,
/// and hand them out from memory, so creates on different nodes (or
/// threads) do not all conflict on this key; a block is never handed out
/// twice, and numbers left in a block at exit are skipped.
pub const NEXT_INO_KEY: &[u8] = b"Mnext_ino";
/// This server's id, made at the first start (bytes; EXCHANGE_ID's server owner).
pub const SERVER_ID_KEY: &[u8] = b"Mserver_id";
/// Starts so far (u64): the MDS epoch.
pub const BOOT_COUNT_KEY: &[u8] = b"Mboot_count";

/// `prefix` followed by `n` big-endian: the key of an inode-, index- or
/// directory-numbered record, or the scan prefix of one directory's rows.
pub fn with_u64(prefix: u8, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(prefix);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// `prefix` followed by `bytes`.
pub fn with_bytes(prefix: u8, bytes: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + bytes.len());
    k.push(prefix);
    k.extend_from_slice(bytes);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn prefixes_are_distinct() {
        let set: BTreeSet<u8> = ALL.iter().map(|(p, _)| *p).collect();
        assert_eq!(set.len(), ALL.len(), "two record kinds share a prefix: {ALL:?}");
    }

    #[test]
    fn meta_keys_are_distinct_and_not_prefixes_of_each_other() {
        let keys = [NEXT_INO_KEY, SERVER_ID_KEY, BOOT_COUNT_KEY];
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(a[0], META, "{:?}", String::from_utf8_lossy(a));
            for b in &keys[i + 1..] {
                // They are read with a prefix scan (Namespace::list_records).
                assert!(!a.starts_with(b) && !b.starts_with(a), "{a:?} / {b:?}");
            }
        }
    }

    #[test]
    fn numbered_keys_sort_numerically() {
        assert_eq!(with_u64(INODE, 0x0102), [b'I', 0, 0, 0, 0, 0, 0, 1, 2]);
        assert!(with_u64(INODE, 255) < with_u64(INODE, 256));
        assert!(with_u64(DIR_COOKIE, u64::MAX) < with_u64(DIRENT, 0), "prefixes keep record kinds apart");
        assert_eq!(with_bytes(CLIENT_RECORD, b"own"), b"Oown");
    }
}

//! The cluster key and the tags (MACs) made with it.
//!
//! Every node of a cluster (MDS and data servers) holds one 32-byte secret,
//! the cluster key, in a file readable only by pnfsd (`pnfsd
//! --make-cluster-key FILE`). Nothing uses it directly: each purpose (MDS
//! filehandles, DS filehandles, control calls, control replies) derives its
//! own key from it, so a tag made for one purpose is never valid for another.
//!
//! Tags are keyed BLAKE3 truncated to the length the caller needs: fast
//! enough for a check per PUTFH on the data path (one compression of 64
//! bytes), and compared in constant time.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const KEY_LEN: usize = 32;

/// What a derived key is for; the string is BLAKE3's derive_key context, so
/// changing one invalidates every tag of that purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    MdsFileHandle,
    DsFileHandle,
    ControlCall,
    ControlReply,
    /// MDS node <-> MDS node links (controlplane/src/cluster/peers.rs).
    PeerLink,
    /// pnfsctl's calls to the MDS admin program (PNFSCTL_ADMIN_PROGRAM).
    Admin,
    /// The MDS's replies to them.
    AdminReply,
    /// Data server -> data server control calls and their replies (the
    /// resilver's object copies): a DS holding these keys can only read
    /// another DS's objects, never act as the MDS.
    DsPeerCall,
    DsPeerReply,
}

impl Purpose {
    fn context(self) -> &'static str {
        match self {
            Purpose::MdsFileHandle => "pnfsd 2026-12 MDS filehandle tag",
            Purpose::DsFileHandle => "pnfsd 2026-12 DS filehandle tag",
            Purpose::ControlCall => "pnfsd 2026-12 control call credential",
            Purpose::ControlReply => "pnfsd 2026-12 control reply verifier",
            Purpose::PeerLink => "pnfsd 2026-12 MDS peer link",
            Purpose::Admin => "pnfsd 2026-12 admin call credential",
            Purpose::AdminReply => "pnfsd 2026-12 admin reply verifier",
            Purpose::DsPeerCall => "pnfsd 2026-12 DS to DS control call credential",
            Purpose::DsPeerReply => "pnfsd 2026-12 DS to DS control reply verifier",
        }
    }
}

/// The cluster-wide secret. Debug never prints it.
#[derive(Clone)]
pub struct ClusterKey([u8; KEY_LEN]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> ClusterKey {
        ClusterKey(b)
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<ClusterKey, String> {
        let mut b = [0u8; KEY_LEN];
        getrandom::fill(&mut b).map_err(|e| format!("reading random bytes for a cluster key: {e}"))?;
        Ok(ClusterKey(b))
    }

    /// Reads a key file: 64 hex digits, optionally followed by a newline.
    /// Refuses a file that other users can read or write (the key would
    /// let them forge handles and control calls).
    pub fn load(path: &Path) -> Result<ClusterKey, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| {
            format!("cluster key {shown}: {e}; make one with `pnfsd --make-cluster-key {shown}` and copy it to every node")
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!("cluster key {shown}: readable or writable by others (mode {:o}); run chmod 600 {shown}",
                meta.permissions().mode() & 0o777));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cluster key {shown}: {e}"))?;
        Self::parse_hex(text.trim_end_matches(['\n', '\r'])).map_err(|why| format!("cluster key {shown}: {why}"))
    }

    /// Writes a new random key to `path` (mode 0600); refuses to overwrite an
    /// existing file, which would cut this node off from its cluster.
    pub fn create(path: &Path) -> Result<ClusterKey, String> {
        let key = ClusterKey::generate()?;
        let shown = path.display();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("creating cluster key {shown}: {e} (an existing key is never overwritten)"))?;
        writeln!(f, "{}", key.to_hex()).and_then(|_| f.sync_all()).map_err(|e| format!("writing cluster key {shown}: {e}"))?;
        Ok(key)
    }

    /// Loads `path`, creating it first when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<ClusterKey, String> {
        match Self::create(path) {
            Ok(k) => Ok(k),
            Err(_) if path.exists() => Self::load(path),
            Err(e) => Err(e),
        }
    }

    /// `<dir>/cluster.key`, made when missing: for tests and single-node
    /// tools that start every node themselves.
    pub fn test_file_in(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("cluster.key");
        Self::load_or_create(&p).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    fn parse_hex(s: &str) -> Result<ClusterKey, String> {
        if s.len() != KEY_LEN * 2 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("expected {} hex digits", KEY_LEN * 2));
        }
        let mut b = [0u8; KEY_LEN];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(ClusterKey(b))
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key for one purpose.
    pub fn derive(&self, purpose: Purpose) -> TagKey {
        TagKey(blake3::derive_key(purpose.context(), &self.0))
    }
}

/// Unpredictable ids: client ids, stateid `other`s, session ids, inode
/// generations. An id an attacker can guess is an id he can use.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS generator failing means no id is safe to hand out; there is
    // no sane fallback, and Linux's getrandom(2) does not fail once seeded.
    getrandom::fill(&mut b).expect("the OS random generator is available");
    b
}

/// A random u32 that is never 0 (0 often means "none" on the wire).
pub fn random_nonzero_u32() -> u32 {
    loop {
        let v = u32::from_ne_bytes(random_bytes::<4>());
        if v != 0 {
            return v;
        }
    }
}

/// A derived key that makes and checks tags.
#[derive(Clone)]
pub struct TagKey([u8; KEY_LEN]);

impl fmt::Debug for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TagKey(..)")
    }
}

impl TagKey {
    /// A key made for tests and for single-process tools that never talk to
    /// another node (random, never written anywhere).
    pub fn ephemeral() -> TagKey {
        let mut b = [0u8; KEY_LEN];
        getrandom::fill(&mut b).expect("the OS random generator is available");
        TagKey(b)
    }

    /// Tag of the concatenation of `parts`, each prefixed by its length (so
    /// moving bytes between parts changes the tag), truncated to `N` bytes.
    pub fn tag<const N: usize>(&self, parts: &[&[u8]]) -> [u8; N] {
        const { assert!(N >= 8 && N <= 32, "tags are 8 to 32 bytes") };
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for p in parts {
            h.update(&(p.len() as u32).to_be_bytes());
            h.update(p);
        }
        let full = h.finalize();
        let mut out = [0u8; N];
        out.copy_from_slice(&full.as_bytes()[..N]);
        out
    }

    /// Constant-time check of a tag made by [`TagKey::tag`].
    pub fn verify<const N: usize>(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        if tag.len() != N {
            return false;
        }
        let want: [u8; N] = self.tag(parts);
        constant_time_eq(&want, tag)
    }
}

/// Equality whose time does not depend on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_parts_separate_tags() {
        let k = ClusterKey::from_bytes([7; KEY_LEN]);
        let a = k.derive(Purpose::MdsFileHandle);
        let b = k.derive(Purpose::DsFileHandle);
        let t: [u8; 16] = a.tag(&[b"abc", b"def"]);
        assert!(a.verify::<16>(&[b"abc", b"def"], &t));
        assert!(!b.verify::<16>(&[b"abc", b"def"], &t), "another purpose's key accepts the tag");
        assert!(!a.verify::<16>(&[b"abcd", b"ef"], &t), "moving bytes between parts keeps the tag");
        assert!(!a.verify::<16>(&[b"abc", b"deg"], &t));
        assert!(!a.verify::<16>(&[b"abc", b"def"], &t[..15]));
        let other = ClusterKey::from_bytes([8; KEY_LEN]).derive(Purpose::MdsFileHandle);
        assert!(!other.verify::<16>(&[b"abc", b"def"], &t), "another cluster's key accepts the tag");
    }

    #[test]
    fn key_file_create_load_and_refusals() {
        let dir = std::env::temp_dir().join(format!("pnfs-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("cluster.key");
        let _ = std::fs::remove_file(&p);
        let k = ClusterKey::create(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let l = ClusterKey::load(&p).unwrap();
        assert_eq!(k.0, l.0);
        assert!(ClusterKey::create(&p).unwrap_err().contains("never overwritten"));
        assert_eq!(ClusterKey::load_or_create(&p).unwrap().0, k.0);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ClusterKey::load(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, "abcd\n").unwrap();
        assert!(ClusterKey::load(&p).unwrap_err().contains("64 hex digits"));
        let missing = ClusterKey::load(&dir.join("none")).unwrap_err();
        assert!(missing.contains("--make-cluster-key"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

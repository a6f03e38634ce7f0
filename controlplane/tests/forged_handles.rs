//! Filehandles an attacker on the storage network builds himself: the MDS
//! must refuse every one it did not hand out (BADHANDLE), and the pseudo
//! filesystem must not lead into directories no export covers.

use pnfs_client::pnfs_protocol::wire::nfsstat4;
use pnfs_client::Client;
use pnfs_mds::namespace::{NewObject, SetAttrs};
use pnfs_mds::MdsConfig;

fn config(dir: &std::path::Path, exports: &str) -> MdsConfig {
    let text = format!(
        "bind = \"127.0.0.1:1\"\nmetadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\n{exports}",
        dir.display()
    );
    let cfg: MdsConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

#[test]
fn handles_not_handed_out_are_badhandle() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) =
        pnfs_mds::server::spawn_on_loopback(config(dir.path(), "[[exports]]\npath = \"/export\"\nroot_squash = false\n"))
            .unwrap();
    let mut c = Client::connect(addr, 1).unwrap();
    let export = c.lookup_path("/export").unwrap();
    assert_eq!(export.len(), 32);
    let (file, sid) = c.open(&export, "f", true, pnfs_client::pnfs_protocol::wire::OPEN4_SHARE_ACCESS_BOTH).unwrap();
    c.close(&file, &sid).unwrap();
    c.getattr_size(&file).unwrap();

    // Every single-bit change anywhere in a real handle is refused.
    for i in 0..file.len() {
        let mut forged = file.clone();
        forged[i] ^= 0x10;
        let e = c.getattr_size(&forged).unwrap_err();
        assert_eq!(e.status(), Some(nfsstat4::NFS4ERR_BADHANDLE), "byte {i}: {e:?}");
    }
    // The old layout (export, inode, generation 1, no tag) is refused too,
    // as are short and empty handles.
    let mut old = vec![b'P', 1, 0, 1];
    old.extend_from_slice(&2u64.to_be_bytes());
    old.extend_from_slice(&1u32.to_be_bytes());
    for forged in [old.clone(), [old.clone(), vec![0; 16]].concat(), vec![], vec![0; 128]] {
        let e = c.getattr_size(&forged).unwrap_err();
        assert_eq!(e.status(), Some(nfsstat4::NFS4ERR_BADHANDLE), "{forged:?}: {e:?}");
    }
}

#[test]
fn pseudo_filesystem_shows_only_the_way_to_exports() {
    let dir = tempfile::tempdir().unwrap();
    // An earlier configuration exported all of /a; files were made there.
    {
        let mds = pnfs_mds::Mds::open(config(dir.path(), "[[exports]]\npath = \"/a\"\n[[exports]]\npath = \"/a/pub\"\n"))
            .unwrap();
        let a = mds.export_rooted_at(mds.exports[0].root_ino).unwrap().root_ino;
        let dir_obj = NewObject { kind: pnfs_client::pnfs_protocol::wire::nfs_ftype4::NF4DIR, symlink: vec![], rdev: (0, 0) };
        let attrs = SetAttrs { mode: Some(0o777), ..Default::default() };
        mds.ns.create(a, b"secret", &dir_obj, &attrs, (0, 0), None).unwrap();
    }
    // Now only /a/pub is exported: /a is a pseudo directory, /a/secret is not
    // exported and must be neither listed nor reachable.
    let (addr, _) = pnfs_mds::server::spawn_on_loopback(config(
        dir.path(),
        "[[exports]]\npath = \"/a/pub\"\nroot_squash = false\n",
    ))
    .unwrap();
    let mut c = Client::connect(addr, 1).unwrap();
    let a = c.lookup_path("/a").unwrap();
    assert_eq!(c.readdir(&a).unwrap(), vec!["pub".to_string()]);
    assert_eq!(c.lookup(&a, "secret").unwrap_err().status(), Some(nfsstat4::NFS4ERR_NOENT));
    let e = c.open(&a, "secret", false, pnfs_client::pnfs_protocol::wire::OPEN4_SHARE_ACCESS_READ).unwrap_err();
    assert!(e.status().is_some(), "{e:?}");
    c.lookup_path("/a/pub").unwrap();
}

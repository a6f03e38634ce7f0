//! Arbitrary bytes through the control protocol's receive path: the
//! authentication check (pnfs_protocol::control_auth, with and without the
//! admin program's keys) and every control and admin argument and result
//! type (protocol/xdr/control.x).
//!
//! Properties checked:
//! - nothing panics (bad input is refused with an error);
//! - no input passes the authentication check without the key's tag (the
//!   fuzzer cannot forge a keyed BLAKE3 tag; a pass means the checker skips
//!   the tag somewhere);
//! - whatever decodes re-encodes to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pnfs_protocol::control_auth::{CallChecker, ControlKeys, RecentConnections};
use pnfs_protocol::seal::ClusterKey;
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::{decode_prefix, encode_to_vec, XdrDecode, XdrEncode};

fn roundtrip<'a, T: XdrDecode<'a> + XdrEncode + std::fmt::Debug>(bytes: &'a [u8]) {
    if let Ok((v, used)) = decode_prefix::<T>(bytes) {
        let again = encode_to_vec(&v).expect("a decoded value must re-encode");
        assert!(again == bytes[..used], "re-encoding differs from the {used} bytes consumed: {v:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = ControlKeys::new(&ClusterKey::from_bytes([0x42; 32]));
    let recent = RecentConnections::new(16);
    let mut checker = CallChecker::new(keys);
    assert!(checker.check(data, 1_000_000, &recent).is_err(), "an unsigned input passed the control check");
    let mut admin = CallChecker::new(ControlKeys::new(&ClusterKey::from_bytes([0x42; 32])))
        .with_admin(ControlKeys::admin(&ClusterKey::from_bytes([0x42; 32])));
    assert!(admin.check(data, 1_000_000, &recent).is_err(), "an unsigned input passed the admin check");

    roundtrip::<ctl_register_args>(data);
    roundtrip::<ctl_register_res>(data);
    roundtrip::<ctl_heartbeat_args>(data);
    roundtrip::<ctl_obj_args>(data);
    roundtrip::<ctl_truncate_args>(data);
    roundtrip::<ctl_read_args>(data);
    roundtrip::<ctl_read_res>(data);
    roundtrip::<ctl_write_args>(data);
    roundtrip::<ctl_stat_res>(data);
    roundtrip::<ctl_stateid_args>(data);
    roundtrip::<ctl_revoke_args>(data);
    roundtrip::<ctl_batch_args>(data);
    roundtrip::<ctl_batch_res>(data);
    roundtrip::<ctl_res>(data);
    roundtrip::<adm_ds_list_args>(data);
    roundtrip::<adm_ds_state_args>(data);
    roundtrip::<adm_layout_args>(data);
    roundtrip::<adm_status_res>(data);
    roundtrip::<adm_ds_list_res>(data);
    roundtrip::<adm_ds_state_res>(data);
    roundtrip::<adm_layout_res>(data);
    roundtrip::<ctl_copy_args>(data);
    roundtrip::<ctl_copy_res>(data);
    roundtrip::<ctl_version_args>(data);
    roundtrip::<ctl_version_res>(data);
    roundtrip::<ctl_read_sparse_res>(data);
});

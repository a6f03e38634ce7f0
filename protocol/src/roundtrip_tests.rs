//! Property tests over the generated types: any value that encodes decodes
//! back to itself, and any bytes that decode re-encode to the same bytes
//! (XDR here is canonical: strict padding and bools).

use crate::wire::*;
use crate::xdr::{decode_prefix, encode_to_vec};
use arbitrary::{Arbitrary, Unstructured};
use proptest::prelude::*;

macro_rules! roundtrips {
    ($($name:ident: $ty:ty),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $name(seed in proptest::collection::vec(any::<u8>(), 0..4096)) {
                    // Value -> bytes -> value. Values breaking a declared bound
                    // are refused by the encoder (its contract), so skipped.
                    let mut u = Unstructured::new(&seed);
                    if let Ok(v) = <$ty>::arbitrary(&mut u) {
                        if let Ok(bytes) = encode_to_vec(&v) {
                            let (back, used) = decode_prefix::<$ty>(&bytes)
                                .map_err(|e| TestCaseError::fail(format!("{e}: {v:?}")))?;
                            prop_assert_eq!(used, bytes.len());
                            prop_assert_eq!(&back, &v);
                        }
                    }
                    // Bytes -> value -> the same bytes.
                    if let Ok((v, used)) = decode_prefix::<$ty>(&seed) {
                        let again = encode_to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(&again[..], &seed[..used]);
                    }
                }
            )*
        }
    };
}

roundtrips! {
    compound_args: COMPOUND4args,
    compound_res: COMPOUND4res,
    cb_compound_args: CB_COMPOUND4args,
    cb_compound_res: CB_COMPOUND4res,
    rpc_message: rpc_msg,
    fattr: fattr4,
    files_layout: nfsv4_1_file_layout4,
    files_ds_addr: nfsv4_1_file_layout_ds_addr4,
    flex_layout: ff_layout4,
    flex_ds_addr: ff_device_addr4,
    readdir_res: READDIR4res,
    exchange_id_args: EXCHANGE_ID4args,
    create_session_res: CREATE_SESSION4res,
    admin_status_res: adm_status_res,
    admin_ds_list_res: adm_ds_list_res,
    admin_ds_state_args: adm_ds_state_args,
    admin_ds_state_res: adm_ds_state_res,
    admin_layout_res: adm_layout_res,
}

#[test]
fn compound_with_every_op_roundtrips() {
    // A structured sample rather than random bytes: SEQUENCE + PUTFH + OPEN + LOCK.
    let args = COMPOUND4args {
        tag: b"t".as_slice().into(),
        minorversion: 2,
        argarray: vec![
            nfs_argop4::OP_SEQUENCE(SEQUENCE4args {
                sa_sessionid: [7; 16],
                sa_sequenceid: 1,
                sa_slotid: 0,
                sa_highest_slotid: 0,
                sa_cachethis: true,
            }),
            nfs_argop4::OP_PUTFH(PUTFH4args { object: b"0123456789abcdef".as_slice().into() }),
            nfs_argop4::OP_GETFH,
            nfs_argop4::OP_LOCK(LOCK4args {
                locktype: nfs_lock_type4::WRITE_LT,
                reclaim: false,
                offset: 0,
                length: u64::MAX,
                locker: locker4::TRUE(open_to_lock_owner4 {
                    open_seqid: 0,
                    open_stateid: stateid4 { seqid: 1, other: [1; 12] },
                    lock_seqid: 0,
                    lock_owner: lock_owner4 { clientid: 9, owner: b"me".as_slice().into() },
                }),
            }),
        ],
    };
    let bytes = encode_to_vec(&args).unwrap();
    let (back, used) = decode_prefix::<COMPOUND4args>(&bytes).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(back, args);
    // Truncations never panic and never succeed.
    for cut in 0..bytes.len() {
        assert!(decode_prefix::<COMPOUND4args>(&bytes[..cut]).is_err());
    }
}

#[test]
fn huge_claimed_counts_fail_fast() {
    // tag len 0, minor 1, argarray count 0xffffffff and nothing after.
    let bytes = [0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
    assert!(decode_prefix::<COMPOUND4args>(&bytes).is_err());
}

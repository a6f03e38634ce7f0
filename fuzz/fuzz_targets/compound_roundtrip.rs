//! Structured values: any COMPOUND4args that encodes decodes back to itself,
//! consuming exactly the encoded bytes, and encodes again to the same bytes.
//! Values that break a declared bound are refused by the encoder (its
//! contract), so those are skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pnfs_protocol::wire::COMPOUND4args;
use pnfs_protocol::xdr::{decode_prefix, encode_to_vec};

fuzz_target!(|args: COMPOUND4args<'_>| {
    let Ok(bytes) = encode_to_vec(&args) else { return };
    let (back, used) = match decode_prefix::<COMPOUND4args>(&bytes) {
        Ok(v) => v,
        Err(e) => panic!("encoded COMPOUND4args does not decode: {e}: {args:?}"),
    };
    assert_eq!(used, bytes.len());
    assert_eq!(back, args);
    assert_eq!(encode_to_vec(&back).unwrap(), bytes);
});

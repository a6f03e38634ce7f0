//! Arbitrary bytes through the receive path: record marking, the RPC call
//! header, and the NFSv4 COMPOUND arguments.
//!
//! Properties checked:
//! - nothing panics (the decoders must refuse bad input with an error);
//! - a successful COMPOUND4args decode re-encodes to exactly the bytes it
//!   consumed (the XDR runtime is strict: zero padding, 0/1 bools, bounded
//!   lengths, so every accepted encoding is the canonical one);
//! - RecordReader yields the same records and the same error however the
//!   stream is split into reads.
//!
//! The same input is tried three ways so that the seeds for each framing reach
//! the COMPOUND decoder: as bare COMPOUND4args, as an RPC message whose call
//! arguments are COMPOUND4args, and as a record-marked stream of such messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pnfs_protocol::record::{RecordError, RecordReader};
use pnfs_protocol::rpc::{self, Message};
use pnfs_protocol::wire::COMPOUND4args;
use pnfs_protocol::xdr::{decode_prefix, encode_to_vec};

const MAX_RECORD: usize = 64 * 1024;

fn check_compound(bytes: &[u8]) {
    if let Ok((args, used)) = decode_prefix::<COMPOUND4args>(bytes) {
        assert!(used <= bytes.len());
        let again = encode_to_vec(&args).expect("a decoded COMPOUND4args must re-encode");
        assert!(again == bytes[..used], "re-encoding differs from the {used} bytes consumed: {args:?}");
    }
}

fn check_message(record: &[u8]) {
    match rpc::parse_message(record) {
        Ok(Message::Call { args, .. }) => check_compound(args),
        Ok(Message::Reply { body, .. }) => assert!(body.len() <= record.len()),
        Err(_) => {}
    }
}

/// Feeds `data` to a fresh reader in reads of at most `chunk` bytes; returns
/// the completed records and the error that stopped it, if any.
fn reassemble(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<RecordError>) {
    let mut rr = RecordReader::new(MAX_RECORD);
    let mut records = Vec::new();
    for piece in data.chunks(chunk) {
        let mut off = 0;
        while off < piece.len() {
            match rr.feed(&piece[off..]) {
                Ok((n, rec)) => {
                    assert!(n > 0 && off + n <= piece.len(), "feed made no progress or overran");
                    off += n;
                    if let Some(r) = rec {
                        assert!(r.len() <= MAX_RECORD);
                        records.push(r);
                    }
                }
                Err(e) => return (records, Some(e)),
            }
        }
    }
    (records, None)
}

fuzz_target!(|data: &[u8]| {
    check_compound(data);
    check_message(data);

    let (records, err) = reassemble(data, data.len().max(1));
    let (records_split, err_split) = reassemble(data, 7);
    assert_eq!(records, records_split);
    assert_eq!(err, err_split);
    for r in &records {
        check_message(r);
    }
});

//! Writes the seed inputs in `fuzz/seeds/` from typed values, so they stay
//! valid as the wire types evolve. Run from `fuzz/`:
//!
//!     cargo run --example gen_seeds            # (re)write the seeds
//!     cargo run --example gen_seeds -- --check # fail if they are stale
//!
//! Each COMPOUND is written three ways, one per framing the `compound_decode`
//! target tries: bare COMPOUND4args (`*.xdr`), an RPC call message carrying it
//! (`*.rpc`), and that message record-marked in two fragments (`*.rec`).

use pnfs_protocol::record::{record_header, LAST_FRAGMENT};
use pnfs_protocol::rpc::{begin_call, NFS4_PROGRAM, NFS_V4, PROC_COMPOUND};
use pnfs_protocol::wire::*;
use pnfs_protocol::xdr::{decode_prefix, encode_to_vec, Encoder};
use std::path::Path;

fn compound<'a>(tag: &'a str, argarray: Vec<nfs_argop4<'a>>) -> COMPOUND4args<'a> {
    COMPOUND4args { tag: tag.into(), minorversion: 2, argarray }
}

fn sequence(slot: u32) -> nfs_argop4<'static> {
    nfs_argop4::OP_SEQUENCE(SEQUENCE4args {
        sa_sessionid: *b"pnfs-session-id!",
        sa_sequenceid: 1,
        sa_slotid: slot,
        sa_highest_slotid: 0,
        sa_cachethis: false,
    })
}

fn seeds() -> Vec<(&'static str, COMPOUND4args<'static>)> {
    let stateid = stateid4 { seqid: 1, other: *b"stateid-12by" };
    vec![
        (
            "sequence_putrootfh_getattr",
            compound(
                "",
                vec![
                    sequence(0),
                    nfs_argop4::OP_PUTROOTFH,
                    // type, fh_expire_type, change, size, fsid, fileid | mode, owner, time_modify
                    nfs_argop4::OP_GETATTR(GETATTR4args { attr_request: vec![0x0010_011a, 0x0030_a23a] }),
                ],
            ),
        ),
        (
            "exchange_id",
            compound(
                "mount",
                vec![nfs_argop4::OP_EXCHANGE_ID(EXCHANGE_ID4args {
                    eia_clientowner: client_owner4 { co_verifier: [1; 8], co_ownerid: "Linux NFSv4.2 client".into() },
                    eia_flags: 0x0000_0101,
                    eia_state_protect: state_protect4_a::SP4_NONE,
                    eia_client_impl_id: vec![nfs_impl_id4 {
                        nii_domain: "kernel.org".into(),
                        nii_name: "Linux 6.8".into(),
                        nii_date: nfstime4 { seconds: 0, nseconds: 0 },
                    }],
                })],
            ),
        ),
        (
            "open_write_close",
            compound(
                "write",
                vec![
                    sequence(1),
                    nfs_argop4::OP_PUTFH(PUTFH4args { object: b"\x01\x00\x00\x00fh-of-dir".as_slice().into() }),
                    nfs_argop4::OP_OPEN(OPEN4args {
                        seqid: 0,
                        share_access: 2,
                        share_deny: 0,
                        owner: state_owner4 { clientid: 42, owner: "open id:1".into() },
                        openhow: openflag4::OPEN4_CREATE(createhow4::GUARDED4(fattr4 {
                            attrmask: vec![0, 0x2], // mode
                            attr_vals: b"\x00\x00\x01\xa4".as_slice().into(),
                        })),
                        claim: open_claim4::CLAIM_NULL("file.txt".into()),
                    }),
                    nfs_argop4::OP_WRITE(WRITE4args {
                        stateid: stateid.clone(),
                        offset: 0,
                        stable: stable_how4::FILE_SYNC4,
                        data: "hello, pNFS\n".into(), // 12 bytes: no padding
                    }),
                    nfs_argop4::OP_CLOSE(CLOSE4args { seqid: 0, open_stateid: stateid.clone() }),
                ],
            ),
        ),
        (
            "layoutget_getdeviceinfo",
            compound(
                "layout",
                vec![
                    sequence(2),
                    nfs_argop4::OP_PUTFH(PUTFH4args { object: b"file-fh".as_slice().into() }), // 7 bytes: padded
                    nfs_argop4::OP_LAYOUTGET(LAYOUTGET4args {
                        loga_signal_layout_avail: false,
                        loga_layout_type: layouttype4::LAYOUT4_FLEX_FILES,
                        loga_iomode: layoutiomode4::LAYOUTIOMODE4_RW,
                        loga_offset: 0,
                        loga_length: u64::MAX,
                        loga_minlength: 4096,
                        loga_stateid: stateid,
                        loga_maxcount: 65536,
                    }),
                    nfs_argop4::OP_GETDEVICEINFO(GETDEVICEINFO4args {
                        gdia_device_id: [9; 16],
                        gdia_layout_type: layouttype4::LAYOUT4_FLEX_FILES,
                        gdia_maxcount: 65536,
                        gdia_notify_types: vec![],
                    }),
                ],
            ),
        ),
    ]
}

fn files() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, (name, args)) in seeds().into_iter().enumerate() {
        let xdr = encode_to_vec(&args).expect("seed encodes");
        let (back, used) = decode_prefix::<COMPOUND4args>(&xdr).expect("seed decodes");
        assert_eq!((back, used), (args, xdr.len()));

        let mut e = Encoder::new();
        begin_call(&mut e, 0x1000 + i as u32, NFS4_PROGRAM, NFS_V4, PROC_COMPOUND, i % 2 == 0);
        e.buf.extend_from_slice(&xdr);
        let rpc = e.into_inner();

        // Two fragments: the RPC header, then the COMPOUND (last fragment).
        let split = rpc.len() - xdr.len();
        let mut rec = Vec::new();
        rec.extend_from_slice(&(split as u32 & !LAST_FRAGMENT).to_be_bytes());
        rec.extend_from_slice(&rpc[..split]);
        rec.extend_from_slice(&record_header(xdr.len()));
        rec.extend_from_slice(&xdr);

        out.push((format!("{name}.xdr"), xdr));
        out.push((format!("{name}.rpc"), rpc));
        out.push((format!("{name}.rec"), rec));
    }
    out
}

fn main() {
    let check = std::env::args().any(|a| a == "--check");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    std::fs::create_dir_all(&dir).unwrap();
    let mut stale = 0;
    for (name, bytes) in files() {
        let path = dir.join(&name);
        if check {
            if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                eprintln!("stale: {}", path.display());
                stale += 1;
            }
        } else {
            std::fs::write(&path, &bytes).unwrap();
            println!("{} ({} bytes)", path.display(), bytes.len());
        }
    }
    if stale > 0 {
        eprintln!("{stale} seed(s) stale; rerun `cargo run --example gen_seeds`");
        std::process::exit(1);
    }
}

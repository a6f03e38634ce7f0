//! Generates the wire types from the XDR definitions in `xdr/`.
use std::path::PathBuf;

/// Order matters only for readability of the output; names resolve globally.
const SOURCES: &[&str] = &["xdr/rpc_prot.x", "xdr/nfs4_prot.x", "xdr/flexfiles.x", "xdr/control.x"];

fn main() {
    let mut src = String::new();
    for f in SOURCES {
        println!("cargo:rerun-if-changed={f}");
        src.push_str(&std::fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {f}: {e}")));
        src.push('\n');
    }
    let code = xdrgen::generate(&src, "crate::xdr").unwrap_or_else(|e| panic!("xdrgen: {e}"));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("wire.rs");
    std::fs::write(&out, code).unwrap();
}

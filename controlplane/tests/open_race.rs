//! Concurrent OPEN CREATE UNCHECKED of one name from several clients: every
//! one opens the file (the losers of the create race open the winner's), as
//! RFC 8881 says of UNCHECKED4; none gets NFS4ERR_EXIST.

use pnfs_client::Client;
use std::sync::{Arc, Barrier};

mod common;

#[test]
fn concurrent_unchecked_creates_of_one_name_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _) = common::start_mds(dir.path(), "");
    const CLIENTS: usize = 8;
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let name = format!("f{round}");
        let threads: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (barrier, name) = (barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr, 1).unwrap();
                    let export = c.lookup_path("/export").unwrap();
                    barrier.wait();
                    let (fh, sid) = c.open(&export, &name, true, pnfs_client::pnfs_protocol::wire::OPEN4_SHARE_ACCESS_BOTH)?;
                    c.close(&fh, &sid)?;
                    Ok::<Vec<u8>, pnfs_client::Error>(fh.to_vec())
                })
            })
            .collect();
        let fhs: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap().expect("OPEN CREATE UNCHECKED")).collect();
        assert!(fhs.windows(2).all(|w| w[0] == w[1]), "round {round}: every client opened the same file");
    }
}

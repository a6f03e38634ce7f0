//! Durable creates from many connections at once share fsyncs (group
//! commit) and every acknowledged one is in the namespace.

use pnfs_client::Client;
use pnfs_client::pnfs_protocol::wire::OPEN4_SHARE_ACCESS_BOTH;
use std::sync::{Arc, Barrier};

mod common;

#[test]
fn concurrent_creates_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let mds = pnfs_mds::Mds::open(common::mds_config(dir.path(), "")).unwrap();
    let store = mds.ns.store().clone();
    let (addr, _) = pnfs_mds::server::spawn_mds_on_loopback(mds).unwrap();
    const CLIENTS: usize = 24;
    const EACH: usize = 10;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let (syncs_before, commits_before) = (store.syncs(), store.visible_seq());
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, 1).unwrap();
                let export = c.lookup_path("/export").unwrap();
                barrier.wait();
                for j in 0..EACH {
                    let (fh, sid) = c.open(&export, &format!("c{i}-{j}"), true, OPEN4_SHARE_ACCESS_BOTH)?;
                    c.close(&fh, &sid)?;
                }
                Ok::<(), pnfs_client::Error>(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect("create");
    }
    let commits = store.visible_seq() - commits_before;
    let syncs = store.syncs() - syncs_before;
    assert!(commits >= (CLIENTS * EACH) as u64, "{commits} commits for {} creates", CLIENTS * EACH);
    assert!(store.check_durable(store.visible_seq()).unwrap(), "acknowledged creates are not durable");
    assert!(syncs < commits, "{commits} commits cost {syncs} fsyncs: nothing was group-committed");
    let mut c = Client::connect(addr, 1).unwrap();
    let export = c.lookup_path("/export").unwrap();
    for i in 0..CLIENTS {
        for j in 0..EACH {
            c.lookup(&export, &format!("c{i}-{j}")).expect("an acknowledged create is in the namespace");
        }
    }
    eprintln!("{} creates: {commits} commits, {syncs} fsyncs", CLIENTS * EACH);
}

//! Each `ds.poll_mode` serves requests; busy polls while idle, adaptive
//! polls after activity and then sleeps, park never polls.

mod common;

use pnfs_client::pnfs_protocol::wire::*;
use pnfs_client::Client;
use pnfs_ds::PollMode;
use std::time::{Duration, Instant};

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_poll_mode_serves() {
    for mode in [PollMode::Park, PollMode::Busy, PollMode::Adaptive] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = common::config_without_mds("poll", dir.path());
        cfg.buffers_per_reactor = 2;
        cfg.poll_mode = mode;
        cfg.poll_spin_us = 200;
        let h = pnfs_ds::run(cfg).unwrap();
        let mut c = Client::connect(h.nfs_addr(), 1).unwrap();
        for _ in 0..3 {
            assert_eq!(c.compound(vec![nfs_argop4::OP_PUTROOTFH]).unwrap().status().unwrap(), nfsstat4::NFS4_OK, "{mode:?}");
        }
        match mode {
            PollMode::Park => {
                std::thread::sleep(Duration::from_millis(50));
                let s = h.stats();
                assert_eq!((s.poll_spins, s.reactor_parks), (0, 0));
            }
            PollMode::Busy => {
                // Idle, and still polling.
                wait_for("busy polling", || h.stats().poll_spins > 0);
                let before = h.stats().poll_spins;
                wait_for("more busy polling", || h.stats().poll_spins > before);
                assert_eq!(h.stats().reactor_parks, 0);
            }
            PollMode::Adaptive => {
                // Goes to sleep once idle, and wakes for the next request.
                // The reactor may park once before the requests and again
                // after them (late, on a loaded machine): wait until it stays
                // parked - no polling rounds for 20 ms - which a reactor that
                // kept polling would never do.
                let mut parks = 0;
                wait_for("the reactor to stay parked", || {
                    let before = h.stats().reactor_parks;
                    std::thread::sleep(Duration::from_millis(20));
                    parks = h.stats().reactor_parks;
                    before >= 1 && parks == before
                });
                assert_eq!(c.compound(vec![nfs_argop4::OP_PUTROOTFH]).unwrap().status().unwrap(), nfsstat4::NFS4_OK);
                wait_for("a park after the request", || h.stats().reactor_parks > parks);
                assert!(h.stats().poll_spins > 0);
            }
        }
        h.shutdown();
        let t = Instant::now();
        h.join();
        assert!(t.elapsed() < Duration::from_secs(5), "{mode:?}: shutdown took {:?}", t.elapsed());
    }
}

//! Crash safety of the redb backend: a child process commits numbered
//! transactions and acknowledges each on stdout after `commit` returns; the
//! parent SIGKILLs it mid-stream, reopens the file and checks that every
//! acknowledged transaction is there and that no transaction is torn.
//!
//! The child is this test binary re-executed with `CHILD_ENV` set, running
//! only `crash_child_writer` (which is a no-op in normal test runs).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pnfs_kv::key::{decode_u64_be, u64_be};
use pnfs_kv::{transact, KvError, KvStore, RedbStore};

const CHILD_ENV: &str = "PNFS_KV_CRASH_CHILD_DB";
const COUNTER: &[u8] = b"counter";

fn key(prefix: &[u8], n: u64) -> Vec<u8> {
    [prefix, &u64_be(n)].concat()
}

/// Child side: each transaction N writes a/N, b/N and counter = N + 1.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = RedbStore::open(&path).expect("child: open");
    let deadline = Instant::now() + Duration::from_secs(30); // never outlive a lost parent
    let stdout = std::io::stdout();
    while Instant::now() < deadline {
        let n = transact(&store, 10, |t| {
            let n = t.get(COUNTER)?.and_then(|v| decode_u64_be(&v)).unwrap_or(0);
            t.put(&key(b"a/", n), &[0xa5; 100])?;
            t.put(&key(b"b/", n), &[0x5a; 3000])?;
            t.put(COUNTER, &u64_be(n + 1))?;
            Ok::<_, KvError>(n)
        })
        .expect("child: commit");
        let mut out = stdout.lock();
        if writeln!(out, "ACK {n}").and_then(|()| out.flush()).is_err() {
            return; // parent went away
        }
    }
}

/// Checks the invariants; returns the committed transaction count.
fn verify(path: &std::path::Path, acked: Option<u64>) -> u64 {
    let store = RedbStore::open(path).expect("reopen after kill");
    let mut t = store.begin().unwrap();
    let count = t
        .get(COUNTER)
        .unwrap()
        .and_then(|v| decode_u64_be(&v))
        .unwrap_or(0);
    for prefix in [b"a/", b"b/"] {
        let pairs = t.scan_prefix(prefix, usize::MAX).unwrap();
        let expected: Vec<Vec<u8>> = (0..count).map(|n| key(prefix, n)).collect();
        let got: Vec<Vec<u8>> = pairs.into_iter().map(|p| p.0).collect();
        assert_eq!(got, expected, "torn or missing txns under {prefix:?}");
    }
    if let Some(last) = acked {
        assert!(
            count > last,
            "acknowledged txn {last} lost (counter {count})"
        );
    }
    count
}

#[test]
fn kill9_loses_no_acknowledged_commit() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut last_acked: Option<u64> = None;
    let mut committed = 0;
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 10 + round * 15;
        let mut acks_this_round = 0;
        let mut killed = false;
        for line in lines {
            // libtest may print "test crash_child_writer ... " on the same line.
            let line = line.unwrap();
            let Some(pos) = line.find("ACK ") else {
                continue;
            };
            let n: u64 = line[pos + 4..].trim().parse().unwrap();
            if let Some(prev) = last_acked {
                assert_eq!(n, prev + 1, "acks must continue where the last run stopped");
            }
            last_acked = Some(n);
            acks_this_round += 1;
            if acks_this_round == kill_after && !killed {
                child.kill().unwrap(); // SIGKILL; keep reading acks already in the pipe
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "child exited early: {status:?}");
        let count = verify(&path, last_acked);
        assert!(count >= committed);
        committed = count;
        // The killed child may have committed one txn it could not ack.
        last_acked = Some(count - 1);
    }
    assert!(committed >= (0..8).map(|r| 10 + r * 15).sum::<u64>());
}

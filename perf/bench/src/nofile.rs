//! The descriptor limit, shared by pnfs-bench's hold workload and
//! pnfs-attack (bin/pnfs-attack.rs includes this file by path): both hold
//! many connections open at once.

/// Raises RLIMIT_NOFILE's soft limit towards `want`; returns (soft, hard).
pub fn raise_nofile(want: u64) -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit only read/write the struct passed.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        if r.rlim_cur < want && r.rlim_cur < r.rlim_max {
            let n = libc::rlimit { rlim_cur: want.min(r.rlim_max), rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &n) == 0 {
                r.rlim_cur = n.rlim_cur;
            }
        }
        (r.rlim_cur, r.rlim_max)
    }
}

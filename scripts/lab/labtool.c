/*
 * labtool - small static helper for the kernel-client lab guest.
 *
 * Built by `scripts/lab/lab.sh prepare` with `gcc -static -O2` and put into
 * the guest initramfs as /bin/labtool.  It provides the syscalls that the
 * busybox applets do not expose.  Every subcommand exits 0 on success, 1 on
 * an unexpected error (message on stderr) and uses the extra exit codes
 * documented per subcommand.
 *
 *   labtool lock FILE START LEN [HOLD_SECONDS [READY_FILE]]
 *       open O_RDWR, fcntl(F_SETLK, F_WRLCK) on [START, START+LEN).
 *       prints "LOCKED" and exits 0, or prints "EAGAIN" and exits 2 when
 *       the range is held by someone else.  With HOLD_SECONDS the lock is
 *       held that long (or until SIGTERM/SIGKILL) before exiting; READY_FILE
 *       is created once the lock is held.
 *   labtool flock [-n] [-s] FILE [HOLD_SECONDS [READY_FILE]]
 *       open O_RDWR (NFS refuses an exclusive flock on a read-only fd) and
 *       flock(LOCK_EX, or LOCK_SH with -s; LOCK_NB with -n).  Prints
 *       "LOCKED" (exit 0) or "EWOULDBLOCK" (exit 2).  HOLD/READY as for lock.
 *   labtool testlock FILE START LEN
 *       fcntl(F_GETLK, F_WRLCK): prints "FREE" (exit 0) or
 *       "HELD pid=P start=S len=L type=T" (exit 2).
 *   labtool fallocate FILE OFFSET LEN          mode 0 (allocate, may grow)
 *   labtool punch FILE OFFSET LEN              PUNCH_HOLE|KEEP_SIZE
 *   labtool zero-check FILE OFFSET LEN         exit 0 if all bytes are 0,
 *                                              2 (prints first non-zero offset)
 *   labtool copy SRC DST                       copy_file_range loop, DST
 *                                              created/truncated; prints bytes
 *   labtool clone SRC DST                      ioctl(FICLONE); DST created/
 *                                              truncated; exit 3 on
 *                                              EOPNOTSUPP/ENOTSUP/EXDEV/EINVAL
 *   labtool setxattr FILE NAME VALUE
 *   labtool getxattr FILE NAME                 prints the value
 *   labtool listxattr FILE                     prints one name per line
 *   labtool removexattr FILE NAME
 *   labtool stat FILE                          prints
 *       "size=S blocks=B mode=OOOO uid=U gid=G nlink=N ino=I mtime=SEC.NSEC"
 *   labtool seek FILE OFFSET data|hole         prints lseek(SEEK_DATA/HOLE)
 *
 * Descriptor subcommands work on an fd the shell holds open (e.g. after
 * `exec 3<>FILE`), so a scenario can keep one open file across steps.  They
 * print "OK ..." and exit 0, or print the errno name and exit 2:
 *   labtool pwrite FD OFFSET LEN BYTE          pwrite LEN bytes of BYTE
 *                                              (a character or a number)
 *   labtool pread [-d] FD OFFSET LEN [BYTE]    pread (-d: O_DIRECT via
 *       fcntl, so the server is asked, not the page cache); prints
 *       "OK n=N"; with BYTE every byte read must be BYTE, else it prints
 *       "MISMATCH n=N bad=B first=OFF" and exits 3
 *   labtool fsync FD
 *   labtool fstat FD                           prints "OK size=S"
 *
 * Failover drill (scenarios/failover.sh):
 *   labtool recwrite FILE INTERVAL_MS STOP_FILE PROGRESS_FILE
 *       every INTERVAL_MS writes record i (4 KiB at offset i*4096: a line
 *       "PNFSREC <i> <unix time>" then a fill byte derived from i) with
 *       pwrite and fsyncs it; a record counts as acknowledged once its
 *       fsync returned 0 (a failed write or fsync is counted and the same
 *       record written again).  Stops once STOP_FILE exists.  After every
 *       record PROGRESS_FILE holds "acked=N errors=E max_gap_ms=G
 *       max_gap_end_ms=T elapsed_ms=X": G is the largest time between two
 *       successful fsyncs, T when (ms since the start) the fsync that ended
 *       it returned.  Gaps over 300 ms and errors are logged on stderr.
 *   labtool recverify FILE N
 *       records 0..N-1 must all be there and intact; prints "OK records=N
 *       extra=M" (M intact records after them) or "BAD record=i why" and
 *       exits 3.
 *
 * Errors that matter to the scenarios are printed as the errno name
 * (e.g. "EOPNOTSUPP") so FAIL reasons are readable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif

static const char *errname(int e)
{
    switch (e) {
    case EAGAIN: return "EAGAIN";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case ENOENT: return "ENOENT";
    case ENOLCK: return "ENOLCK";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case ENOTTY: return "ENOTTY";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EPERM: return "EPERM";
    case EXDEV: return "EXDEV";
    case ENODATA: return "ENODATA";
    case ERANGE: return "ERANGE";
    case E2BIG: return "E2BIG";
    case EFBIG: return "EFBIG";
    case ESTALE: return "ESTALE";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EDEADLK: return "EDEADLK";
    case EBADFD: return "EBADFD";
    case EREMOTEIO: return "EREMOTEIO";
    case ENXIO: return "ENXIO";
    case EINTR: return "EINTR";
    default: return "E?";
    }
}

static int die(const char *what, const char *arg)
{
    int e = errno;
    fprintf(stderr, "labtool: %s %s: %s (%s)\n", what, arg ? arg : "",
            errname(e), strerror(e));
    return 1;
}

static long long num(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 0);
    if (*s == '\0' || *end != '\0') {
        fprintf(stderr, "labtool: bad number '%s'\n", s);
        exit(1);
    }
    return v;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void hold_then_exit(int argc, char **argv, int hold_idx)
{
    if (argc <= hold_idx) return;
    long long hold = num(argv[hold_idx]);
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    if (argc > hold_idx + 1) {
        int r = open(argv[hold_idx + 1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (r >= 0) close(r);
    }
    for (long long i = 0; i < hold * 10 && !stop; i++)
        usleep(100000);
}

static int cmd_lock(int argc, char **argv)
{
    if (argc < 5) return 64;
    int fd = open(argv[2], O_RDWR | O_CREAT, 0644);
    if (fd < 0) return die("open", argv[2]);
    struct flock fl = {0};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = num(argv[3]);
    fl.l_len = num(argv[4]);
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        if (errno == EAGAIN || errno == EACCES) {
            printf("EAGAIN\n");
            fflush(stdout);
            return 2;
        }
        return die("fcntl(F_SETLK)", argv[2]);
    }
    printf("LOCKED\n");
    fflush(stdout);
    if (argc >= 6) {
        hold_then_exit(argc, argv, 5);
        fl.l_type = F_UNLCK;
        fcntl(fd, F_SETLK, &fl);
    }
    close(fd);
    return 0;
}

static int cmd_flock(int argc, char **argv)
{
    int op = LOCK_EX, i = 2;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-n")) op |= LOCK_NB;
        else if (!strcmp(argv[i], "-s")) op = (op & LOCK_NB) | LOCK_SH;
        else if (!strcmp(argv[i], "-x")) op = (op & LOCK_NB) | LOCK_EX;
        else return 64;
    }
    if (i >= argc) return 64;
    int fd = open(argv[i], O_RDWR | O_CREAT, 0644);
    if (fd < 0) return die("open", argv[i]);
    if (flock(fd, op) < 0) {
        if (errno == EWOULDBLOCK) {
            printf("EWOULDBLOCK\n");
            fflush(stdout);
            return 2;
        }
        return die("flock", argv[i]);
    }
    printf("LOCKED\n");
    fflush(stdout);
    hold_then_exit(argc, argv, i + 1);
    flock(fd, LOCK_UN);
    close(fd);
    return 0;
}

static int cmd_testlock(int argc, char **argv)
{
    if (argc < 5) return 64;
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) return die("open", argv[2]);
    struct flock fl = {0};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = num(argv[3]);
    fl.l_len = num(argv[4]);
    if (fcntl(fd, F_GETLK, &fl) < 0) return die("fcntl(F_GETLK)", argv[2]);
    if (fl.l_type == F_UNLCK) {
        printf("FREE\n");
        return 0;
    }
    printf("HELD pid=%ld start=%lld len=%lld type=%s\n", (long)fl.l_pid,
           (long long)fl.l_start, (long long)fl.l_len,
           fl.l_type == F_WRLCK ? "write" : "read");
    return 2;
}

static int cmd_fallocate(int argc, char **argv, int mode)
{
    if (argc < 5) return 64;
    int fd = open(argv[2], O_RDWR | O_CREAT, 0644);
    if (fd < 0) return die("open", argv[2]);
    if (fallocate(fd, mode, num(argv[3]), num(argv[4])) < 0) {
        int e = errno;
        fprintf(stderr, "labtool: fallocate(mode=%#x) %s: %s (%s)\n", mode,
                argv[2], errname(e), strerror(e));
        printf("%s\n", errname(e));
        return (e == EOPNOTSUPP || e == ENOSYS) ? 3 : 1;
    }
    if (fsync(fd) < 0) return die("fsync", argv[2]);
    close(fd);
    return 0;
}

static int cmd_zero_check(int argc, char **argv)
{
    if (argc < 5) return 64;
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return die("open", argv[2]);
    long long off = num(argv[3]), len = num(argv[4]);
    static char buf[1 << 16];
    while (len > 0) {
        ssize_t want = len < (long long)sizeof buf ? (ssize_t)len : (ssize_t)sizeof buf;
        ssize_t n = pread(fd, buf, want, off);
        if (n < 0) return die("pread", argv[2]);
        if (n == 0) {
            printf("short read at %lld\n", off);
            return 2;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i]) {
                printf("nonzero at %lld\n", off + i);
                return 2;
            }
        off += n;
        len -= n;
    }
    return 0;
}

static int open_dst(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
}

static int cmd_copy(int argc, char **argv)
{
    if (argc < 4) return 64;
    int in = open(argv[2], O_RDONLY);
    if (in < 0) return die("open", argv[2]);
    int out = open_dst(argv[3]);
    if (out < 0) return die("open", argv[3]);
    struct stat st;
    if (fstat(in, &st) < 0) return die("fstat", argv[2]);
    long long left = st.st_size, total = 0;
    while (left > 0) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
        if (n < 0) {
            int e = errno;
            fprintf(stderr, "labtool: copy_file_range: %s (%s)\n", errname(e),
                    strerror(e));
            printf("%s\n", errname(e));
            return (e == EOPNOTSUPP || e == ENOSYS || e == EXDEV) ? 3 : 1;
        }
        if (n == 0) break;
        left -= n;
        total += n;
    }
    if (fsync(out) < 0) return die("fsync", argv[3]);
    printf("%lld\n", total);
    return 0;
}

static int cmd_clone(int argc, char **argv)
{
    if (argc < 4) return 64;
    int in = open(argv[2], O_RDONLY);
    if (in < 0) return die("open", argv[2]);
    int out = open_dst(argv[3]);
    if (out < 0) return die("open", argv[3]);
    if (ioctl(out, FICLONE, in) < 0) {
        int e = errno;
        fprintf(stderr, "labtool: ioctl(FICLONE): %s (%s)\n", errname(e), strerror(e));
        printf("%s\n", errname(e));
        return (e == EOPNOTSUPP || e == ENOTTY || e == EXDEV || e == EINVAL) ? 3 : 1;
    }
    if (fsync(out) < 0) return die("fsync", argv[3]);
    return 0;
}

static int xattr_err(const char *what, const char *file)
{
    int e = errno;
    fprintf(stderr, "labtool: %s %s: %s (%s)\n", what, file, errname(e), strerror(e));
    printf("%s\n", errname(e));
    return (e == EOPNOTSUPP) ? 3 : 1;
}

static int cmd_setxattr(int argc, char **argv)
{
    if (argc < 5) return 64;
    if (setxattr(argv[2], argv[3], argv[4], strlen(argv[4]), 0) < 0)
        return xattr_err("setxattr", argv[2]);
    return 0;
}

static int cmd_getxattr(int argc, char **argv)
{
    if (argc < 4) return 64;
    static char buf[65536];
    ssize_t n = getxattr(argv[2], argv[3], buf, sizeof buf - 1);
    if (n < 0) return xattr_err("getxattr", argv[2]);
    buf[n] = '\0';
    printf("%s\n", buf);
    return 0;
}

static int cmd_listxattr(int argc, char **argv)
{
    if (argc < 3) return 64;
    static char buf[65536];
    ssize_t n = listxattr(argv[2], buf, sizeof buf);
    if (n < 0) return xattr_err("listxattr", argv[2]);
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
        printf("%s\n", buf + i);
    return 0;
}

static int cmd_removexattr(int argc, char **argv)
{
    if (argc < 4) return 64;
    if (removexattr(argv[2], argv[3]) < 0) return xattr_err("removexattr", argv[2]);
    return 0;
}

static int cmd_stat(int argc, char **argv)
{
    if (argc < 3) return 64;
    struct stat st;
    if (lstat(argv[2], &st) < 0) return die("lstat", argv[2]);
    printf("size=%lld blocks=%lld mode=%04o uid=%u gid=%u nlink=%lu ino=%llu "
           "mtime=%lld.%09ld\n",
           (long long)st.st_size, (long long)st.st_blocks,
           (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid,
           (unsigned long)st.st_nlink, (unsigned long long)st.st_ino,
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    return 0;
}

static int cmd_seek(int argc, char **argv)
{
    if (argc < 5) return 64;
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return die("open", argv[2]);
    int whence = strcmp(argv[4], "hole") == 0 ? SEEK_HOLE : SEEK_DATA;
    off_t r = lseek(fd, num(argv[3]), whence);
    if (r < 0) {
        printf("%s\n", errname(errno));
        return 2;
    }
    printf("%lld\n", (long long)r);
    return 0;
}

static int fd_err(void)
{
    int e = errno;
    printf("%s\n", errname(e));
    fprintf(stderr, "labtool: %s\n", strerror(e));
    fflush(stdout);
    return 2;
}

static int pattern_byte(const char *s)
{
    if (s[0] && !s[1] && (s[0] < '0' || s[0] > '9')) return (unsigned char)s[0];
    return (int)(num(s) & 0xff);
}

static int cmd_pwrite(int argc, char **argv)
{
    if (argc < 6) return 64;
    int fd = (int)num(argv[2]);
    long long off = num(argv[3]), len = num(argv[4]);
    int b = pattern_byte(argv[5]);
    char *buf = malloc(1 << 20);
    if (!buf) return die("malloc", NULL);
    memset(buf, b, 1 << 20);
    long long done = 0;
    while (done < len) {
        size_t n = len - done > (1 << 20) ? (1 << 20) : (size_t)(len - done);
        ssize_t w = pwrite(fd, buf, n, off + done);
        if (w < 0) return fd_err();
        if (w == 0) break;
        done += w;
    }
    printf("OK n=%lld\n", done);
    return 0;
}

static int cmd_pread(int argc, char **argv)
{
    int i = 2, direct = 0;
    if (argc > i && !strcmp(argv[i], "-d")) { direct = 1; i++; }
    if (argc < i + 3) return 64;
    int fd = (int)num(argv[i]);
    long long off = num(argv[i + 1]), len = num(argv[i + 2]);
    int want = argc > i + 3 ? pattern_byte(argv[i + 3]) : -1;
    if (direct) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) < 0) return fd_err();
    }
    char *buf;
    if (posix_memalign((void **)&buf, 4096, 1 << 20)) return die("posix_memalign", NULL);
    long long done = 0, bad = 0, first = -1;
    int rc = 0;
    while (done < len) {
        size_t n = len - done > (1 << 20) ? (1 << 20) : (size_t)(len - done);
        ssize_t r = pread(fd, buf, n, off + done);
        if (r < 0) { rc = fd_err(); break; }
        if (r == 0) break;
        for (ssize_t k = 0; want >= 0 && k < r; k++) {
            if ((unsigned char)buf[k] != want) {
                if (first < 0) first = off + done + k;
                bad++;
            }
        }
        done += r;
    }
    if (direct) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_DIRECT);
    }
    if (rc) return rc;
    if (bad) {
        printf("MISMATCH n=%lld bad=%lld first=%lld\n", done, bad, first);
        return 3;
    }
    printf("OK n=%lld\n", done);
    return 0;
}

static int cmd_fsync(int argc, char **argv)
{
    if (argc < 3) return 64;
    if (fsync((int)num(argv[2])) < 0) return fd_err();
    printf("OK\n");
    return 0;
}

static int cmd_fstat(int argc, char **argv)
{
    if (argc < 3) return 64;
    struct stat st;
    if (fstat((int)num(argv[2]), &st) < 0) return fd_err();
    printf("OK size=%lld\n", (long long)st.st_size);
    return 0;
}

#define REC_SIZE 4096

static long long mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void rec_fill(char *rec, unsigned long long seq)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    int n = snprintf(rec, REC_SIZE, "PNFSREC %010llu %lld.%06ld\n", seq, (long long)t.tv_sec, t.tv_nsec / 1000);
    memset(rec + n, 'a' + (int)(seq % 26), REC_SIZE - n - 1);
    rec[REC_SIZE - 1] = '\n';
}

/* rec_check REC SEQ: NULL when record SEQ is intact, else why not */
static const char *rec_check(const char *rec, unsigned long long seq)
{
    char head[32];
    int n = snprintf(head, sizeof head, "PNFSREC %010llu ", seq);
    if (memcmp(rec, head, n)) return "header";
    const char *nl = memchr(rec, '\n', 64);
    if (!nl) return "timestamp";
    for (const char *p = nl + 1; p < rec + REC_SIZE - 1; p++)
        if (*p != 'a' + (int)(seq % 26)) return "fill";
    if (rec[REC_SIZE - 1] != '\n') return "end";
    return NULL;
}

static int cmd_recwrite(int argc, char **argv)
{
    if (argc < 6) return 64;
    long long interval = num(argv[3]);
    int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return die("open", argv[2]);
    int pfd = open(argv[5], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (pfd < 0) return die("open", argv[5]);
    char rec[REC_SIZE];
    unsigned long long seq = 0, errors = 0;
    long long t0 = mono_ms(), last_ok = -1, max_gap = 0, max_gap_end = 0, next = t0;
    while (access(argv[4], F_OK) != 0) {
        rec_fill(rec, seq);
        const char *what = NULL;
        if (pwrite(fd, rec, REC_SIZE, (off_t)(seq * REC_SIZE)) != REC_SIZE) what = "pwrite";
        else if (fsync(fd) != 0) what = "fsync";
        long long now = mono_ms();
        if (what) {
            errors++;
            fprintf(stderr, "labtool: record %llu: %s failed at %lld ms: %s\n", seq, what, now - t0, errname(errno));
        } else {
            if (last_ok >= 0 && now - last_ok > max_gap) {
                max_gap = now - last_ok;
                max_gap_end = now - t0;
            }
            if (last_ok >= 0 && now - last_ok > 300)
                fprintf(stderr, "labtool: record %llu: %lld ms since the last fsync, at %lld ms\n", seq, now - last_ok, now - t0);
            last_ok = now;
            seq++;
        }
        /* One fixed-width line rewritten in place: a reader never sees it
         * empty (no truncate) or with a longer old tail. */
        char line[160], padded[160];
        snprintf(line, sizeof line, "acked=%llu errors=%llu max_gap_ms=%lld max_gap_end_ms=%lld elapsed_ms=%lld",
                 seq, errors, max_gap, max_gap_end, now - t0);
        int n = snprintf(padded, sizeof padded, "%-150s\n", line);
        if (pwrite(pfd, padded, n, 0) != n) return die("write", argv[5]);
        next += interval;
        if (next > now) usleep((useconds_t)((next - now) * 1000));
        else next = now;
    }
    close(fd);
    close(pfd);
    return 0;
}

static int cmd_recverify(int argc, char **argv)
{
    if (argc < 4) return 64;
    unsigned long long want = (unsigned long long)num(argv[3]), i;
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) return die("open", argv[2]);
    char rec[REC_SIZE];
    for (i = 0;; i++) {
        ssize_t r = pread(fd, rec, REC_SIZE, (off_t)(i * REC_SIZE));
        if (r < 0) return fd_err();
        const char *why = r < REC_SIZE ? "short" : rec_check(rec, i);
        if (why) {
            if (i < want) {
                printf("BAD record=%llu %s (want %llu records)\n", i, r == 0 ? "missing" : why, want);
                return 3;
            }
            break;
        }
    }
    printf("OK records=%llu extra=%llu\n", want, i - want);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 64;
    if (argc >= 2) {
        const char *c = argv[1];
        if (!strcmp(c, "lock")) rc = cmd_lock(argc, argv);
        else if (!strcmp(c, "flock")) rc = cmd_flock(argc, argv);
        else if (!strcmp(c, "testlock")) rc = cmd_testlock(argc, argv);
        else if (!strcmp(c, "fallocate")) rc = cmd_fallocate(argc, argv, 0);
        else if (!strcmp(c, "punch"))
            rc = cmd_fallocate(argc, argv, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
        else if (!strcmp(c, "zero-check")) rc = cmd_zero_check(argc, argv);
        else if (!strcmp(c, "copy")) rc = cmd_copy(argc, argv);
        else if (!strcmp(c, "clone")) rc = cmd_clone(argc, argv);
        else if (!strcmp(c, "setxattr")) rc = cmd_setxattr(argc, argv);
        else if (!strcmp(c, "getxattr")) rc = cmd_getxattr(argc, argv);
        else if (!strcmp(c, "listxattr")) rc = cmd_listxattr(argc, argv);
        else if (!strcmp(c, "removexattr")) rc = cmd_removexattr(argc, argv);
        else if (!strcmp(c, "stat")) rc = cmd_stat(argc, argv);
        else if (!strcmp(c, "seek")) rc = cmd_seek(argc, argv);
        else if (!strcmp(c, "pwrite")) rc = cmd_pwrite(argc, argv);
        else if (!strcmp(c, "pread")) rc = cmd_pread(argc, argv);
        else if (!strcmp(c, "fsync")) rc = cmd_fsync(argc, argv);
        else if (!strcmp(c, "fstat")) rc = cmd_fstat(argc, argv);
        else if (!strcmp(c, "recwrite")) rc = cmd_recwrite(argc, argv);
        else if (!strcmp(c, "recverify")) rc = cmd_recverify(argc, argv);
    }
    if (rc == 64)
        fprintf(stderr, "usage: labtool lock|flock|testlock|fallocate|punch|zero-check|copy|"
                        "clone|setxattr|getxattr|listxattr|removexattr|stat|seek|pwrite|pread|fsync|fstat|"
                        "recwrite|recverify ...\n"
                        "(see the comment at the top of scripts/lab/labtool.c)\n");
    return rc;
}

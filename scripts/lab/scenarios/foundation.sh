#!/bin/sh
# Foundation scenario for the kernel-client lab (runs inside the guest under
# busybox ash; see scripts/lab/lab.sh).  Every step prints exactly one
# "PASS <name>", "FAIL <name>: <why>" or "SKIP <name>: <why>" line on the
# console, plus optional "INFO <name>: ..." lines.  A failing step's own
# output follows its FAIL line, indented with "  | ".
#
# Each step runs as `timeout -s KILL <secs> sh $0 __call <function>` with its
# output captured, so a hung NFS call cannot stall the whole scenario.  Steps
# share state through files under $ST.  Inside a step: `fail MSG` ends it with
# FAIL, `skip MSG` with SKIP, `info MSG` adds an INFO line.
#
# Environment (from /lab/env, written by lab.sh run): LAB_SERVER, LAB_PORT,
# LAB_EXPORT, LAB_VERS (e.g. "4.1,4.2": each is mount-tested, the last stays
# mounted), LAB_RUN_ID, LAB_HOST_RESTART (1 when the host runner can restart
# the server on "@@LAB-HOST restart").

. "$(dirname "$0")/lib.sh"
ST=/tmp/lab-state
KEEP_VERS=$V
# retry=0: fail a mount at once instead of mount.nfs's 2-minute retry loop
OPTS="hard,sec=sys,port=$PORT,retry=0"
W=$M/lab-${LAB_RUN_ID:-0}

# ------------------------------------------------------------- helpers ---

first_line() { head -n1 | tr -d '\r'; }

mounted_vers() { mount_line | sed -n 's/.*[ ,]vers=\([0-9.]*\).*/\1/p'; }

do_mount() { # vers
    out=$(mount.nfs4 "$SERVER:$EXPORT" "$M" -o "vers=$1,$OPTS" 2>&1) ||
        fail "mount.nfs4 $SERVER:$EXPORT -o vers=$1,$OPTS: $(echo "$out" | tail -n1)"
    [ -n "$(mount_line)" ] || fail "mount.nfs4 succeeded but $M is not in /proc/mounts"
}
do_umount() {
    sync
    out=$(umount "$M" 2>&1) || fail "umount $M: $(echo "$out" | tail -n1)"
}
remount() { do_umount; do_mount "$KEEP_VERS"; }

# stricter than lib.sh's need_mount: the work directory must be there too
need_mount() {
    case "$(mount_line)" in
    *" nfs4 "*) ;;
    *) fail "no NFS mount on $M (an earlier mount step failed)" ;;
    esac
    [ -d "$W" ] || fail "work directory $W missing"
}
need_42() {
    need_mount
    v=$(mounted_vers)
    [ "$v" = 4.2 ] || skip "needs vers=4.2 (mounted vers=$v)"
}

# make_random FILE MIB: random content in local tmpfs
make_random() {
    dd if=/dev/urandom of="$1" bs=1M count="$2" 2>/dev/null || fail "dd from /dev/urandom failed"
}

# retry TRIES CMD...: runs CMD until it succeeds, up to TRIES times 0.5 s
# apart; its last output (stdout and stderr) is left in $out
retry() {
    n=$1
    shift
    i=0
    while [ $i -lt "$n" ]; do
        out=$("$@" 2>&1) && return 0
        sleep 0.5
        i=$((i + 1))
    done
    return 1
}

# wait_file FILE SECS: wait until FILE exists
wait_file() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

# ---------------------------------------------------------------- steps ---

step_mount_check() { # mount VERS, check /proc/mounts, umount
    v=$1
    [ -n "$(mount_line)" ] && do_umount
    do_mount "$v"
    got=$(mounted_vers)
    [ "$got" = "$v" ] || { l=$(mount_line); do_umount; fail "/proc/mounts shows vers=$got, wanted $v ($l)"; }
    info "$(mount_line | cut -d' ' -f1-4 | cut -c1-160)"
    do_umount
}

step_mount_keep() {
    v=$1
    [ -n "$(mount_line)" ] && do_umount
    do_mount "$v"
    got=$(mounted_vers)
    [ "$got" = "$v" ] || fail "/proc/mounts shows vers=$got, wanted $v"
    mkdir -p "$W" || fail "mkdir $W on the export failed"
    info "$(mount_line | cut -d' ' -f1-4 | cut -c1-160)"
}

step_write_64m() {
    need_mount
    make_random /tmp/big 64
    want=$(sha /tmp/big)
    t0=$(up)
    dd if=/tmp/big of="$W/big" bs=1M conv=fsync 2>/tmp/dd.err ||
        fail "dd to NFS failed: $(tail -n1 /tmp/dd.err)"
    t1=$(up)
    rm -f /tmp/big
    s=$(fsize "$W/big")
    [ "$s" = $((64 * MiB)) ] || fail "size after write is $s, expected $((64 * MiB))"
    remount
    got=$(sha "$W/big")
    t2=$(up)
    [ "$got" = "$want" ] || fail "sha256 after remount $got != written $want"
    info "write $(secs "$t0" "$t1")s, remount+read $(secs "$t1" "$t2")s"
    rm -f "$W/big" || fail "rm of the 64 MiB file failed"
}

step_tree() {
    need_mount
    d="$W/tree"
    p="$d"
    i=1
    while [ $i -le 20 ]; do p="$p/l$i"; i=$((i + 1)); done
    mkdir -p "$p" || fail "mkdir -p of a 20-level tree failed"
    [ -d "$p" ] || fail "deepest directory missing after mkdir -p"
    echo deep >"$p/leaf" || fail "cannot create a file 20 levels deep"
    f="$d/files"
    mkdir "$f" || fail "mkdir $f failed"
    i=0
    while [ $i -lt 1000 ]; do
        touch "$f/file$i" || fail "touch file$i failed"
        i=$((i + 1))
    done
    n=$(ls "$f" | wc -l)
    [ "$n" -eq 1000 ] || fail "ls counts $n files, expected 1000"
    remount
    n=$(ls "$f" | wc -l)
    [ "$n" -eq 1000 ] || fail "after remount ls counts $n files, expected 1000"
    [ "$(cat "$p/leaf")" = deep ] || fail "deep leaf file content wrong after remount"
}

step_rename() {
    need_mount
    mkdir -p "$W/ren/a" "$W/ren/b" || fail "mkdir failed"
    echo "rename-me $$" >"$W/ren/a/f" || fail "create failed"
    mv "$W/ren/a/f" "$W/ren/b/g" || fail "mv across directories failed"
    [ ! -e "$W/ren/a/f" ] || fail "source still exists after rename"
    [ "$(cat "$W/ren/b/g")" = "rename-me $$" ] || fail "content changed by rename"
    remount
    [ ! -e "$W/ren/a/f" ] || fail "source exists again after remount"
    [ "$(cat "$W/ren/b/g")" = "rename-me $$" ] || fail "content wrong after remount"
}

step_hardlink() {
    need_mount
    mkdir -p "$W/hl" && echo "link-me" >"$W/hl/f" || fail "create failed"
    ln "$W/hl/f" "$W/hl/g" || fail "ln failed"
    l=$(stat -c %h "$W/hl/f")
    [ "$l" = 2 ] || fail "link count is $l, expected 2"
    i1=$(stat -c %i "$W/hl/f")
    i2=$(stat -c %i "$W/hl/g")
    [ "$i1" = "$i2" ] || fail "inode numbers differ: $i1 vs $i2"
    [ "$(cat "$W/hl/g")" = link-me ] || fail "content through the link differs"
    rm "$W/hl/f" || fail "rm of the first name failed"
    l=$(stat -c %h "$W/hl/g")
    [ "$l" = 1 ] || fail "link count after unlink is $l, expected 1"
}

step_symlink() {
    need_mount
    mkdir -p "$W/sl" && echo "target" >"$W/sl/t" || fail "create failed"
    ln -s t "$W/sl/s" || fail "ln -s failed"
    ln -s "/no/such/$$/target" "$W/sl/dangling" || fail "ln -s (dangling) failed"
    r=$(readlink "$W/sl/s")
    [ "$r" = t ] || fail "readlink gives '$r', expected 't'"
    [ "$(cat "$W/sl/s")" = target ] || fail "reading through the symlink failed"
    remount
    r=$(readlink "$W/sl/dangling")
    [ "$r" = "/no/such/$$/target" ] || fail "readlink after remount gives '$r'"
    [ -L "$W/sl/s" ] || fail "symlink is not a symlink after remount"
}

step_chmod() {
    need_mount
    mkdir -p "$W/attr" && echo x >"$W/attr/mode" || fail "create failed"
    chmod 0640 "$W/attr/mode" || fail "chmod failed"
    m=$(stat -c %a "$W/attr/mode")
    [ "$m" = 640 ] || fail "mode is $m after chmod 0640"
    chmod 4755 "$W/attr/mode" 2>/dev/null
    m=$(stat -c %a "$W/attr/mode")
    chmod 0640 "$W/attr/mode"
    info "chmod 4755 gives mode $m"
}

step_chown() {
    need_mount
    mkdir -p "$W/attr" && echo x >"$W/attr/owner" || fail "create failed"
    chown 1234:5678 "$W/attr/owner" 2>/tmp/chown.err || fail "chown 1234:5678: $(tail -n1 /tmp/chown.err)"
    o=$(stat -c %u:%g "$W/attr/owner")
    [ "$o" = 1234:5678 ] || fail "owner is $o after chown 1234:5678 (server must send numeric owner strings, or the client maps names to nobody)"
}

step_truncate() {
    need_mount
    mkdir -p "$W/attr" || fail "mkdir failed"
    f="$W/attr/trunc"
    i=0
    while [ $i -lt 20 ]; do printf 0123456789; i=$((i + 1)); done >"$f" || fail "write failed"
    want100=$(head -c 100 "$f" | sha256sum | cut -d' ' -f1)
    truncate -s $MiB "$f" || fail "truncate -s 1MiB (grow) failed"
    s=$(fsize "$f")
    [ "$s" = $MiB ] || fail "size after grow is $s, expected $MiB"
    labtool zero-check "$f" 200 $((MiB - 200)) >/tmp/zc 2>&1 || fail "grown region not zero: $(cat /tmp/zc)"
    truncate -s 100 "$f" || fail "truncate -s 100 (shrink) failed"
    s=$(fsize "$f")
    [ "$s" = 100 ] || fail "size after shrink is $s, expected 100"
    [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$want100" ] || fail "first 100 bytes changed"
    echo "$want100" >"$ST/trunc.sha"
}

step_touch() {
    need_mount
    mkdir -p "$W/attr" && : >"$W/attr/time" || fail "create failed"
    TZ=UTC touch -d '2001-02-03 04:05:06' "$W/attr/time" || fail "touch -d failed"
    t=$(stat -c %Y "$W/attr/time")
    [ "$t" = 981173106 ] || fail "mtime is $t, expected 981173106 (2001-02-03 04:05:06 UTC)"
}

step_attrs_remount() {
    need_mount
    remount
    a="$W/attr"
    m=$(stat -c %a "$a/mode" 2>/dev/null)
    o=$(stat -c %u:%g "$a/owner" 2>/dev/null)
    s=$(fsize "$a/trunc")
    t=$(stat -c %Y "$a/time" 2>/dev/null)
    bad=""
    [ "$m" = 640 ] || bad="$bad mode=$m(want 640)"
    [ "$o" = 1234:5678 ] || bad="$bad owner=$o(want 1234:5678)"
    [ "$s" = 100 ] || bad="$bad size=$s(want 100)"
    [ "$t" = 981173106 ] || bad="$bad mtime=$t(want 981173106)"
    if [ -f "$ST/trunc.sha" ]; then
        [ "$(sha "$a/trunc")" = "$(cat "$ST/trunc.sha")" ] || bad="$bad truncated-content"
    fi
    [ -z "$bad" ] || fail "after remount:$bad"
}

step_rm_rf() {
    need_mount
    [ -d "$W/tree" ] || mkdir -p "$W/tree/a/b/c"
    rm -rf "$W/tree" "$W/ren" "$W/hl" "$W/sl" "$W/attr" 2>/tmp/rm.err || fail "rm -rf: $(tail -n1 /tmp/rm.err)"
    [ ! -e "$W/tree" ] || fail "tree still exists after rm -rf"
    n=$(ls -A "$W" | wc -l)
    [ "$n" = 0 ] || fail "work directory not empty after rm -rf: $(ls -A "$W" | head -n5 | tr '\n' ' ')"
    remount
    n=$(ls -A "$W" | wc -l)
    [ "$n" = 0 ] || fail "work directory not empty after remount: $(ls -A "$W" | head -n5 | tr '\n' ' ')"
}

step_flock() {
    need_mount
    f="$W/flock.f"
    : >"$f" || fail "create failed"
    rm -f /tmp/flock.ready
    # busybox has no flock applet; labtool flock opens the file read-write
    # (NFS refuses an exclusive flock on a read-only fd with EBADF).
    labtool flock -x "$f" 60 /tmp/flock.ready >/tmp/holder.out 2>&1 &
    hp=$!
    wait_file /tmp/flock.ready 20 || { kill $hp 2>/dev/null; fail "holder could not take flock -x within 20s: $(cat /tmp/holder.out)"; }
    out=$(labtool flock -n -x "$f" 2>&1)
    rc=$?
    [ $rc = 2 ] || { kill $hp; fail "second flock -n -x gave '$out' (rc $rc) while another process holds flock -x, expected EWOULDBLOCK"; }
    kill $hp
    wait $hp 2>/dev/null
    retry 20 labtool flock -n -x "$f" || fail "flock -n -x still fails 10s after the holder exited: $out"
    rm -f "$f"
}

step_fcntl() {
    need_mount
    f="$W/fcntl.f"
    dd if=/dev/zero of="$f" bs=1k count=1 2>/dev/null || fail "create failed"
    rm -f /tmp/fcntl.ready
    labtool lock "$f" 0 100 60 /tmp/fcntl.ready >/tmp/holder.out 2>&1 &
    hp=$!
    wait_file /tmp/fcntl.ready 20 || { kill $hp 2>/dev/null; fail "holder could not lock [0,100): $(cat /tmp/holder.out)"; }
    out=$(labtool lock "$f" 50 100 2>&1)
    rc=$?
    [ $rc = 2 ] || { kill $hp; fail "conflicting lock [50,150) gave '$out' (rc $rc), expected EAGAIN"; }
    out=$(labtool testlock "$f" 50 100 2>&1)
    info "F_GETLK on [50,150): $out"
    out=$(labtool lock "$f" 200 100 2>&1) || { kill $hp; fail "non-overlapping lock [200,300) failed: $out"; }
    kill $hp
    wait $hp 2>/dev/null
    retry 20 labtool lock "$f" 50 100 || fail "lock [50,150) still fails after the holder released: $out"
    rm -f "$f"
}

step_fallocate() {
    need_42
    f="$W/falloc.f"
    make_random /tmp/fa.src 2
    cp /tmp/fa.src "$f" || fail "copy to NFS failed"
    out=$(labtool fallocate "$f" $((2 * MiB)) $((2 * MiB)) 2>/tmp/fa.err)
    rc=$?
    [ $rc = 0 ] || fail "fallocate (ALLOCATE) returned $out$([ $rc = 3 ] && echo ': server does not support ALLOCATE') $(head -n1 /tmp/fa.err)"
    s=$(fsize "$f")
    [ "$s" = $((4 * MiB)) ] || fail "size after fallocate 2MiB+2MiB is $s, expected $((4 * MiB))"
    labtool zero-check "$f" $((2 * MiB)) $((2 * MiB)) >/tmp/zc 2>&1 || fail "allocated range not zero: $(cat /tmp/zc)"
    [ "$(head -c $((2 * MiB)) "$f" | sha256sum | cut -d' ' -f1)" = "$(sha /tmp/fa.src)" ] ||
        fail "original data changed by fallocate"
}

step_punch() {
    need_42
    f="$W/punch.f"
    make_random /tmp/pu.src 4
    cp /tmp/pu.src "$f" || fail "copy to NFS failed"
    out=$(labtool punch "$f" $MiB $((MiB / 2)) 2>/tmp/pu.err)
    rc=$?
    [ $rc = 0 ] || fail "punch hole (DEALLOCATE) returned $out$([ $rc = 3 ] && echo ': server does not support DEALLOCATE') $(head -n1 /tmp/pu.err)"
    echo 3 >/proc/sys/vm/drop_caches
    s=$(fsize "$f")
    [ "$s" = $((4 * MiB)) ] || fail "size changed by punch hole: $s, expected $((4 * MiB))"
    labtool zero-check "$f" $MiB $((MiB / 2)) >/tmp/zc 2>&1 || fail "punched range [1MiB,1.5MiB) not zero: $(cat /tmp/zc)"
    # compare everything outside the hole with the source
    dd if=/tmp/pu.src of=/tmp/pu.want bs=512k count=2 2>/dev/null
    dd if=/dev/zero of=/tmp/pu.want bs=512k seek=2 count=1 conv=notrunc 2>/dev/null
    dd if=/tmp/pu.src of=/tmp/pu.want bs=512k skip=3 seek=3 conv=notrunc 2>/dev/null
    [ "$(sha "$f")" = "$(sha /tmp/pu.want)" ] || fail "data outside the punched range changed"
    b=$(stat -c %b "$f")
    h=$(labtool seek "$f" 0 hole 2>&1)
    info "after punch: st_blocks=$b, SEEK_HOLE from 0 = $h"
    rm -f /tmp/pu.src /tmp/pu.want
}

step_copy_range() {
    need_42
    make_random /tmp/cp.src 8
    cp /tmp/cp.src "$W/copy.src" || fail "copy to NFS failed"
    sync
    before=$(op_count COPY)
    out=$(labtool copy "$W/copy.src" "$W/copy.dst" 2>&1) || fail "copy_file_range failed: $(echo "$out" | head -n1)"
    after=$(op_count COPY)
    echo 3 >/proc/sys/vm/drop_caches
    [ "$(sha "$W/copy.dst")" = "$(sha /tmp/cp.src)" ] || fail "copy_file_range result differs from the source"
    if [ "$after" -gt "$before" ]; then
        info "server-side COPY used ($((after - before)) COPY ops)"
    else
        info "no COPY op sent: the client fell back to read+write (server lacks COPY)"
    fi
    rm -f /tmp/cp.src
}

step_clone() {
    need_42
    [ -f "$W/copy.src" ] || { make_random /tmp/cl.src 8; cp /tmp/cl.src "$W/copy.src"; }
    before=$(op_count CLONE)
    out=$(labtool clone "$W/copy.src" "$W/clone.dst" 2>/tmp/clone.err)
    rc=$?
    after=$(op_count CLONE)
    if [ $rc = 3 ]; then
        fail "FICLONE returned $out: server does not support CLONE ($((after - before)) CLONE op(s) sent; copy_file_range is the supported path)"
    fi
    [ $rc = 0 ] || fail "FICLONE failed: $out $(head -n1 /tmp/clone.err)"
    echo 3 >/proc/sys/vm/drop_caches
    [ "$(sha "$W/clone.dst")" = "$(sha "$W/copy.src")" ] || fail "clone differs from the source"
    info "FICLONE supported ($((after - before)) CLONE ops)"
}

step_xattr() {
    need_42
    f="$W/xattr.f"
    echo data >"$f" || fail "create failed"
    out=$(labtool setxattr "$f" user.lab "hello-$$" 2>/tmp/xattr.err)
    rc=$?
    if [ $rc != 0 ]; then
        why="$out $(head -n1 /tmp/xattr.err)"
        [ $rc = 3 ] && why="$out: the server does not advertise xattr_support (RFC 8276), so the client refuses user.* xattrs ($(op_count SETXATTR) SETXATTR ops sent)"
        fail "setxattr user.lab: $why"
    fi
    labtool setxattr "$f" user.second "2" >/dev/null 2>&1 || fail "second setxattr failed"
    v=$(labtool getxattr "$f" user.lab 2>&1) || fail "getxattr failed: $v"
    [ "$v" = "hello-$$" ] || fail "getxattr gives '$v', expected 'hello-$$'"
    l=$(labtool listxattr "$f" 2>&1) || fail "listxattr failed: $l"
    echo "$l" | grep -qx user.lab || fail "listxattr lacks user.lab: $(echo $l)"
    echo "$l" | grep -qx user.second || fail "listxattr lacks user.second: $(echo $l)"
    labtool setxattr "$f" user.lab "replaced" >/dev/null 2>&1 || fail "overwriting setxattr failed"
    remount
    v=$(labtool getxattr "$f" user.lab 2>&1) || fail "getxattr after remount failed: $v"
    [ "$v" = replaced ] || fail "getxattr after remount gives '$v', expected 'replaced'"
    labtool removexattr "$f" user.second >/dev/null 2>&1 || fail "removexattr failed"
    labtool listxattr "$f" | grep -qx user.second && fail "user.second still listed after removexattr"
    return 0
}

step_restart() {
    need_mount
    [ "${LAB_HOST_RESTART:-0}" = 1 ] || skip "no --on-restart command given to lab.sh run"
    make_random /tmp/rs.a 8
    cp /tmp/rs.a "$W/restart.a" || fail "write of the 8 MiB file failed"
    want=$(sha /tmp/rs.a)
    make_random /tmp/rs.b 1
    exec 8>"$W/restart.b" || fail "open restart.b failed"
    cat /tmp/rs.b >&8 || fail "write to restart.b failed"
    sync
    t0=$(up)
    echo "@@LAB-HOST restart" >/dev/console
    sleep 3
    # I/O through the file that stayed open across the restart (needs state
    # recovery), then new work.  These block until the server is back.
    cat /tmp/rs.b >&8 || fail "append through the fd opened before the restart failed"
    exec 8>&-
    t1=$(up)
    info "first I/O after the restart marker completed after $(secs "$t0" "$t1")s"
    cat /tmp/rs.b /tmp/rs.b >/tmp/rs.bb
    s=$(fsize "$W/restart.b")
    [ "$s" = $((2 * MiB)) ] || fail "restart.b has size $s after append, expected $((2 * MiB))"
    echo 3 >/proc/sys/vm/drop_caches
    [ "$(sha "$W/restart.b")" = "$(sha /tmp/rs.bb)" ] || fail "restart.b content wrong after the restart"
    got=$(sha "$W/restart.a")
    [ "$got" = "$want" ] || fail "sha256 of the file written before the restart changed: $got != $want"
    echo "after-restart" >"$W/restart.c" || fail "cannot create a new file after the restart"
    [ "$(cat "$W/restart.c")" = after-restart ] || fail "new file content wrong"
    rm -f /tmp/rs.a /tmp/rs.b /tmp/rs.bb
}

step_cleanup() {
    need_mount
    rm -rf "$W" 2>/tmp/rm.err || fail "rm -rf of the work directory: $(tail -n1 /tmp/rm.err)"
    [ ! -e "$W" ] || fail "work directory still exists"
    do_umount
    [ -z "$(mount_line)" ] || fail "$M still mounted after umount"
}

# ------------------------------------------------------------- runner ---

scenario_begin "$@"
echo "LAB-SCENARIO foundation: server $SERVER:$PORT export $EXPORT vers $VERS (keep $KEEP_VERS) at $(up)s"

for v in $(echo "$VERS" | tr ',' ' '); do
    if [ "$v" = "$KEEP_VERS" ]; then
        run_step "mount-$v" 120 step_mount_keep "$v"
    else
        run_step "mount-$v" 120 step_mount_check "$v"
    fi
done
run_step write-64m-remount 240 step_write_64m
run_step tree-1000-files 240 step_tree
run_step rename-across-dirs 60 step_rename
run_step hardlink 60 step_hardlink
run_step symlink 60 step_symlink
run_step chmod 60 step_chmod
run_step chown 60 step_chown
run_step truncate 60 step_truncate
run_step touch-mtime 60 step_touch
run_step attrs-after-remount 60 step_attrs_remount
run_step rm-rf-tree 120 step_rm_rf
run_step flock 90 step_flock
run_step fcntl-locks 90 step_fcntl
run_step fallocate 60 step_fallocate
run_step punch-hole 60 step_punch
run_step copy-file-range 120 step_copy_range
run_step clone-ficlone 60 step_clone
run_step user-xattr 60 step_xattr
run_step restart 240 step_restart
run_step cleanup 120 step_cleanup
echo "LAB-END"

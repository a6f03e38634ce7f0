#!/bin/sh
# Delegation scenario (guest side, busybox ash), run by scripts/pnfs-lab
# (part 3) against the MDS + 4 data servers. The second client is pnfs-cli
# on the host (perf/client, no back channel: it never holds a delegation),
# driven through host actions:
#   @@LAB-HOST cli ARGS...           pnfs-cli --mds ... ARGS (write)
#   @@LAB-HOST size-is PATH BYTES    the host's GETATTR of PATH says BYTES?
# The runner answers each action with "@@LAB-HOST-DONE NAME STATUS" on the
# serial console, which host() reads.
#
# Steps (PASS/FAIL each; a step's sub-checks print their own PASS/FAIL):
#   read-deleg   the host writes a 1 MiB file; the guest reads it twice: the
#                second open() sends no OPEN (the guest holds a read
#                delegation and opens locally). The host then overwrites the
#                first 64 KiB through the MDS: its OPEN for write recalls the
#                delegation (the guest answers with DELEGRETURN) and goes
#                ahead; the guest's next read sees the host's bytes.
#   write-deleg  the guest opens a new file O_APPEND and appends 1 MiB, then
#                1 MiB more, without fsync or close (the data may sit in its
#                page cache, the MDS's size is stale); after each append the
#                host's stat (GETATTR size) shows the guest's new size: the
#                MDS asks the write delegation's holder with CB_GETATTR (or,
#                if that fails, recalls the delegation, which flushes it).
. "$(dirname "$0")/lib.sh"
ST=/tmp/deleg-state
D=deleg-${LAB_RUN_ID:-0}
W=$M/$D
H=${EXPORT%/}/$D

pattern() { dd if=/dev/zero bs=64k count="$2" 2>/dev/null | tr '\0' "$1"; }

# ---------------------------------------------------------------- steps ---

step_mount() {
    mnt || fail "mount.nfs4 $SERVER:$EXPORT -o $OPTS failed"
    mkdir -p "$W" || fail "mkdir $W failed"
}

step_read_deleg() {
    need_mount
    f=$W/rd
    host cli write "$H/rd" 0 $MiB A || fail "host write of the 1 MiB file failed ($?)"
    want=$(pattern A 16 | sha256sum | cut -d' ' -f1)
    [ "$(sha "$f")" = "$want" ] || fail "the guest's first read of the host's file differs"
    o0=$(op_count OPEN)
    cat "$f" >/dev/null || fail "second read failed"
    o1=$(op_count OPEN)
    [ "$o1" = "$o0" ] && check read-deleg-granted OK ||
        check read-deleg-granted FAIL "the second open() sent $((o1 - o0)) OPEN(s): no read delegation held"
    d0=$(op_count DELEGRETURN)
    t0=$(up)
    host cli write "$H/rd" 0 65536 B || fail "host overwrite through the MDS failed ($?)"
    t1=$(up)
    d1=$(op_count DELEGRETURN)
    info "host overwrite done in $(secs "$t0" "$t1") s; guest DELEGRETURN +$((d1 - d0))"
    [ $((d1 - d0)) -gt 0 ] && check read-deleg-recalled OK ||
        check read-deleg-recalled FAIL "the guest sent no DELEGRETURN: the host's OPEN for write recalled nothing"
    b=$(bytes_not "$f" 0 65536 B)
    a=$(bytes_not "$f" 65536 $((MiB - 65536)) A)
    [ "$b$a" = 00 ] || fail "after the host's write the guest reads $b bytes other than 'B' in [0,64K) and $a other than 'A' after it"
}

step_write_deleg() {
    need_mount
    f=$W/wr
    exec 3>>"$f" || fail "open $f O_APPEND failed"
    d0=$(op_count DELEGRETURN)
    for n in 1 2; do
        pattern W 16 >&3 || fail "append $n of 1 MiB failed"
        t0=$(up)
        if host size-is "$H/wr" $((n * MiB)); then
            check "append-$n-size-seen" OK
        else
            check "append-$n-size-seen" FAIL "the host's stat did not show $((n * MiB)) bytes after the guest's append $n (see the host-actions log)"
        fi
        info "host stat after append $n took $(secs "$t0" "$(up)") s"
    done
    d1=$(op_count DELEGRETURN)
    info "DELEGRETURN during the appends: +$((d1 - d0)) (0: the host's stats were answered by CB_GETATTR)"
    exec 3>&-
    s=$(stat -c %s "$f")
    [ "$s" = $((2 * MiB)) ] || fail "size after close is $s, want $((2 * MiB))"
    host size-is "$H/wr" $((2 * MiB)) || fail "the host's stat after close does not show $((2 * MiB)) bytes"
}

step_cleanup() {
    need_mount
    rm -rf "$W" || fail "rm -rf $W"
    umount "$M" || fail "umount"
}

# ------------------------------------------------------------- runner ---

scenario_begin "$@"
echo "LAB-SCENARIO deleg: vers $V, server $SERVER:$PORT$EXPORT, dir $D, host actions: ${LAB_HOST_ACTIONS:-none}"
run_step mount 60 step_mount
run_step read-deleg 180 step_read_deleg
run_step write-deleg 180 step_write_deleg
run_step cleanup 60 step_cleanup
echo "LAB-END"

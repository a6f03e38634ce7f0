#!/bin/sh
# pNFS recall scenario (guest side, busybox ash), run by scripts/pnfs-lab
# after pnfs.sh against the same MDS + 4 data servers. The second client is
# pnfs-cli on the host (perf/client), driven through host actions:
#   @@LAB-HOST cli ARGS...        pnfs-cli --mds ... ARGS (write/truncate/remove)
#   @@LAB-HOST sha-is PATH SHA    the host reads PATH through the MDS: SHA?
#   @@LAB-HOST ds-kill I / ds-start I   kill -9 / start data server I
#   @@LAB-HOST snap LABEL         the host saves the MDS metrics as LABEL
# and the host checks the recall counters between snapshots afterwards.
# The runner answers each action with "@@LAB-HOST-DONE NAME STATUS" on the
# serial console, which host() reads.
#
# Steps (PASS/FAIL each; a step's sub-checks print their own PASS/FAIL):
#   two-writers    the guest rewrites [0,4M) of an 8 MiB file in a loop
#                  through its layout while the host writes [2M,6M) through
#                  the MDS (its OPEN for write recalls the guest's layout);
#                  afterwards every region holds only bytes one of the
#                  writers wrote there, the size is 8 MiB, and the host reads
#                  the same sha256 through the MDS as the guest does.
#   ds-kill-read   a 128 MiB read through the layout; the host kills data
#                  server 2 mid-read and starts it again 3 s later; the read
#                  completes with the right sha256. (The MDS answers DELAY to
#                  READs it cannot serve while the DS is away; the host
#                  reports whether the client fell back to reading through
#                  the MDS or waited for the DS.)
#   held-truncate  with the file open (fd 3), the host truncates it to 1 MiB:
#                  the guest sees the new size, keeps the first MiB, reads
#                  EOF beyond it, and writes through the same descriptor.
#   held-remove    the host removes the still-open file. Chosen semantics: a
#                  REMOVE of the last name by another client ends the file at
#                  once (its layouts are recalled, its DS objects deleted), so
#                  the holder's next I/O through the old descriptor fails
#                  cleanly with ESTALE instead of hanging or succeeding, and
#                  the descriptor can still be closed.
. "$(dirname "$0")/lib.sh"
ST=/tmp/recall-state
D=recall-${LAB_RUN_ID:-0}
W=$M/$D
H=${EXPORT%/}/$D
KILL_MIB=${RECALL_KILL_MIB:-128}

remount() { sync; umount "$M" && mnt || fail "remount failed"; }
pnfs_reads() { stats | awk '$1 == "events:" { print $(NF-1); exit }'; }
pnfs_writes() { stats | awk '$1 == "events:" { print $NF; exit }'; }
# bytes_of FILE OFFSET LEN CHAR: how many bytes of the range are CHAR
bytes_of() { dd if="$1" bs=64k skip=$(($2 / 65536)) count=$(($3 / 65536)) 2>/dev/null | tr -cd "$4" | wc -c; }
pattern() { dd if=/dev/zero bs=1M count="$2" 2>/dev/null | tr '\0' "$1"; }

# ---------------------------------------------------------------- steps ---

step_mount() {
    mnt || fail "mount.nfs4 $SERVER:$EXPORT -o $OPTS failed"
    mkdir -p "$W" || fail "mkdir $W failed"
    drv=$(stats | sed -n 's/.*pnfs=\([A-Za-z0-9_]*\).*/\1/p' | head -n1)
    [ "$drv" = LAYOUT_NFSV4_1_FILES ] || fail "mountstats shows pnfs=$drv"
}

step_writers() {
    need_mount
    f=$W/shared
    pattern G 8 >/tmp/G8
    pattern g 4 >/tmp/g4
    dd if=/tmp/G8 of="$f" bs=1M conv=fsync 2>/tmp/dd.err || fail "initial 8 MiB write: $(tail -n1 /tmp/dd.err)"
    rm -f /tmp/G8 /tmp/wl.stop /tmp/wl.n /tmp/wl.fail
    pw0=$(pnfs_writes)
    lr0=$(op_count LAYOUTRETURN)
    # The guest writer: [0,4M) with 'g', again and again, each pass
    # open + write + fsync + close.
    (
        i=0
        while [ ! -e /tmp/wl.stop ]; do
            dd if=/tmp/g4 of="$f" bs=1M count=4 conv=notrunc,fsync 2>>/tmp/wl.err || echo "pass $i" >>/tmp/wl.fail
            i=$((i + 1))
            echo $i >/tmp/wl.n
        done
    ) &
    wp=$!
    i=0
    while [ "$(cat /tmp/wl.n 2>/dev/null || echo 0)" -lt 1 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    host_ok snap writers-0
    t0=$(up)
    host cli write "$H/shared" $((2 * MiB)) $((4 * MiB)) H
    rc=$?
    t1=$(up)
    n0=$(cat /tmp/wl.n 2>/dev/null || echo 0)
    [ $rc = 0 ] && check writers-host-write OK || check writers-host-write FAIL "pnfs-cli write through the MDS exited $rc (see the host-actions log)"
    info "host wrote [2M,6M) in $(secs "$t0" "$t1") s while the guest loop was at pass $n0"
    # Two more passes: the last one started after the host's write ended.
    i=0
    while [ "$(cat /tmp/wl.n 2>/dev/null || echo 0)" -lt $((n0 + 2)) ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
    touch /tmp/wl.stop
    wait $wp
    host_ok snap writers-1
    n=$(cat /tmp/wl.n)
    pw1=$(pnfs_writes)
    lr1=$(op_count LAYOUTRETURN)
    info "guest passes: $n; pnfs_write events +$((pw1 - pw0)); LAYOUTRETURN +$((lr1 - lr0))"
    # dd's own error lines ("dd: ..."), not its record counts, say why.
    [ -s /tmp/wl.fail ] && fail "guest write passes failed: $(cat /tmp/wl.fail | tr '\n' ' ') $(grep '^dd:' /tmp/wl.err | tail -n2 | tr '\n' ' ')"
    [ "$n" -ge $((n0 + 2)) ] || fail "the guest writer did not finish two passes after the host write (at $n, host done at $n0)"
    [ $((pw1 - pw0)) -gt 0 ] || fail "the guest's writes did not go through the layout (pnfs_write +0)"
    remount
    s=$(fsize "$f")
    [ "$s" = $((8 * MiB)) ] || fail "size is $s, expected $((8 * MiB))"
    # Each region holds only bytes a writer wrote there, in the order they
    # ran: [0,2M) guest 'g'; [2M,4M) both wrote ('g' or 'H'; the guest wrote
    # last); [4M,6M) host 'H'; [6M,8M) the initial 'G'.
    b1=$(bytes_not "$f" 0 $((2 * MiB)) g)
    b2=$(bytes_not "$f" $((2 * MiB)) $((2 * MiB)) gH)
    b3=$(bytes_not "$f" $((4 * MiB)) $((2 * MiB)) H)
    b4=$(bytes_not "$f" $((6 * MiB)) $((2 * MiB)) G)
    h2=$(bytes_of "$f" $((2 * MiB)) $((2 * MiB)) H)
    info "regions: [0,2M) $b1 foreign bytes, [2M,4M) $b2 foreign ($h2 host bytes), [4M,6M) $b3 foreign, [6M,8M) $b4 foreign"
    [ "$b1$b2$b3$b4" = 0000 ] || fail "bytes that neither writer wrote there: $b1 in [0,2M), $b2 in [2M,4M), $b3 in [4M,6M), $b4 in [6M,8M)"
    [ "$h2" = 0 ] || info "overlap [2M,4M) keeps $h2 host bytes although the guest wrote it last"
    want=$(sha "$f")
    host sha-is "$H/shared" "$want" || fail "the host reads a different sha256 through the MDS than the guest through the layout ($want)"
    rm -f "$f" /tmp/g4
}

step_ds_kill() {
    need_mount
    f=$W/big
    dd if=/dev/urandom of=/tmp/big bs=1M count="$KILL_MIB" 2>/dev/null
    want=$(sha /tmp/big)
    dd if=/tmp/big of="$f" bs=1M conv=fsync 2>/tmp/dd.err || fail "write of $KILL_MIB MiB: $(tail -n1 /tmp/dd.err)"
    rm -f /tmp/big
    remount
    rd0=$(op_count READ)
    pr0=$(pnfs_reads)
    host_ok snap dskill-0
    rm -f /tmp/kill.sum
    t0=$(up)
    (sha256sum "$f" >/tmp/kill.sum 2>&1) &
    rp=$!
    sleep 0.3
    host ds-kill 2
    rc=$?
    t1=$(up)
    if kill -0 $rp 2>/dev/null; then mid=1; else mid=0; fi
    [ $rc = 0 ] || fail "host action ds-kill 2 failed ($rc)"
    [ $mid = 1 ] && check dskill-mid-read OK ||
        check dskill-mid-read FAIL "the read had finished before data server 2 died ($(secs "$t0" "$t1") s)"
    info "data server 2 killed $(secs "$t0" "$t1") s into the read; starting it again in 3 s"
    sleep 3
    host_ok ds-start 2
    t2=$(up)
    wait $rp
    t3=$(up)
    got=$(cut -d' ' -f1 /tmp/kill.sum)
    rd1=$(op_count READ)
    pr1=$(pnfs_reads)
    host_ok snap dskill-1
    # mountstats counts READ RPCs to the MDS and the DSes together; the host
    # reports how many bytes the MDS served itself (pnfs-lab: ds-kill).
    info "read done $(secs "$t0" "$t3") s after it began, $(secs "$t2" "$t3") s after the restart; READ RPCs +$((rd1 - rd0)), pnfs_read events +$((pr1 - pr0))"
    [ "$got" = "$want" ] || fail "sha256 after the DS restart: '$got' (want $want)"
    rm -f "$f"
}

step_held() {
    need_mount
    f=$W/held
    exec 3<>"$f" || fail "open $f read-write failed"
    out=$(labtool pwrite 3 0 $((4 * MiB)) T) || fail "pwrite 4 MiB through fd 3: $out"
    out=$(labtool fsync 3) || fail "fsync fd 3: $out"
    pw0=$(pnfs_writes)
    [ "$pw0" -gt 0 ] || info "pnfs_write events are $pw0"
    host_ok snap held-0
    host cli truncate "$H/held" $MiB || fail "host truncate to 1 MiB failed ($?)"
    t0=$(up)
    s=
    i=0
    while [ $i -lt 130 ]; do
        s=$(labtool fstat 3 | sed -n 's/^OK size=//p')
        [ "$s" = $MiB ] && break
        sleep 0.5
        i=$((i + 1))
    done
    t1=$(up)
    # The MDS sends CB_LAYOUTRECALL from a thread of its own (the truncate
    # does not wait for the client's answer), so the snapshot that closes
    # the recall window is taken once this client has seen the truncate.
    host_ok snap held-1
    if [ "$s" = $MiB ]; then
        check held-truncate-size OK
        info "the held descriptor saw size 1 MiB $(secs "$t0" "$t1") s after the truncate"
    else
        check held-truncate-size FAIL "fstat on the held descriptor says $s after $(secs "$t0" "$t1") s, want $MiB"
    fi
    out=$(labtool pread -d 3 0 $MiB T)
    [ "$out" = "OK n=$MiB" ] && check held-truncate-keeps OK || check held-truncate-keeps FAIL "O_DIRECT read of [0,1M): $out"
    # Buffered: Linux computes EOF of an O_DIRECT read through a dense files
    # layout from the DS object offset, so past EOF it returns zeros, not 0.
    out=$(labtool pread 3 $MiB 4096)
    [ "$out" = "OK n=0" ] && check held-truncate-eof OK || check held-truncate-eof FAIL "read at 1 MiB: $out (want EOF)"
    out=$(labtool pwrite 3 $((2 * MiB)) 4096 U) && out=$(labtool fsync 3)
    [ "$out" = OK ] || fail "write + fsync at 2 MiB through the held descriptor after the truncate: $out"
    out=$(labtool pread -d 3 $MiB $MiB 0) || fail "the hole [1M,2M) after the truncate and write: $out"
    out=$(labtool pread -d 3 $((2 * MiB)) 4096 U) || fail "the block written at 2 MiB: $out"
    { pattern T 1; dd if=/dev/zero bs=1M count=1 2>/dev/null; dd if=/dev/zero bs=4096 count=1 2>/dev/null | tr '\0' U; } >/tmp/held.want
    host sha-is "$H/held" "$(sha /tmp/held.want)" || fail "the host reads other content through the MDS than T*1M + 0*1M + U*4K"
    rm -f /tmp/held.want
    exec 3>&-
}

step_held_remove() {
    need_mount
    f=$W/held2
    exec 3<>"$f" || fail "open $f read-write failed"
    out=$(labtool pwrite 3 0 $((2 * MiB)) R) || fail "pwrite 2 MiB: $out"
    out=$(labtool fsync 3) || fail "fsync: $out"
    host_ok snap held-2
    host cli remove "$H/held2" || fail "host remove failed ($?)"
    host_ok snap held-3
    w=$(labtool pwrite 3 0 4096 V 2>/dev/null)
    info "write(2) of 4 KiB after the remove: $w (buffered in the page cache)"
    t0=$(up)
    out=$(labtool fsync 3 2>/dev/null)
    t1=$(up)
    info "fsync after the remove: $out in $(secs "$t0" "$t1") s"
    case "$out" in
    ESTALE) check held-remove-fsync OK ;;
    *) check held-remove-fsync FAIL "fsync through the descriptor of a removed file gave '$out', want ESTALE" ;;
    esac
    out=$(labtool pread -d 3 0 4096 2>/dev/null)
    case "$out" in
    ESTALE) check held-remove-read OK ;;
    *) check held-remove-read FAIL "O_DIRECT read through the descriptor of a removed file gave '$out', want ESTALE" ;;
    esac
    exec 3>&-
    i=0
    while [ -e "$f" ] && [ $i -lt 70 ]; do sleep 0.5; i=$((i + 1)); done
    [ ! -e "$f" ] || fail "$f still visible 35 s after the remove"
}

step_cleanup() {
    need_mount
    rm -rf "$W" || fail "rm -rf $W"
    umount "$M" || fail "umount"
}

# ------------------------------------------------------------- runner ---

scenario_begin "$@"
echo "LAB-SCENARIO pnfs-recall: vers $V, server $SERVER:$PORT$EXPORT, dir $D, host actions: ${LAB_HOST_ACTIONS:-none}"
run_step mount 60 step_mount
run_step two-writers 240 step_writers
run_step ds-kill-read 240 step_ds_kill
run_step held-truncate 180 step_held
run_step held-remove 180 step_held_remove
run_step cleanup 60 step_cleanup
echo "LAB-END"

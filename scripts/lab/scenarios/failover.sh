#!/bin/sh
# Kernel-client failover drill (guest side, busybox ash), run by
# scripts/failover-lab against `local-cluster up --mds 3 --ds 4 --kv etcd
# --netns`: the guest mounts VIP 1 (the MDS= address) and the host kills or
# cuts off the node holding it, through host actions:
#   @@LAB-HOST kill           kill -9 the MDS node holding VIP 1
#   @@LAB-HOST start          start the killed node again
#   @@LAB-HOST partition      cut the node holding VIP 1 off (other nodes, etcd)
#   @@LAB-HOST vip-moved      waits until one live node other than the cut-off
#                             one holds VIP 1 (status 0) or 30 s passed (1)
#   @@LAB-HOST read-only      the cut-off node's log says it stopped changing
#                             anything (lost its lease / read-only / fenced)
#   @@LAB-HOST heal           reconnect it
#   @@LAB-HOST rejoined       waits until it is live again (status 0)
#   @@LAB-HOST snap LABEL     the host saves every node's metrics and log sizes
#   @@LAB-HOST grace LABEL    status = server log lines about grace since snap
#                             LABEL (NFS4ERR_GRACE, a grace period started)
#   @@LAB-HOST reclaim LABEL  status = reclaim signs since snap LABEL: log
#                             lines about reclaim, and EXCHANGE_ID,
#                             CREATE_SESSION and RECLAIM_COMPLETE served by
#                             nodes that ran throughout (a client that keeps
#                             its session sends none of them)
#
# Steps:
#   mount       mount VIP 1 (vers 4.2 unless LAB_VERS says otherwise)
#   striped     write a 32 MiB file striped over the data servers, sha256
#   kill        a writer appends a 4 KiB record (sequence number, timestamp)
#               and fsyncs it every 20 ms (labtool recwrite) and a reader
#               loops over the striped file (drop_caches + sha256); the host
#               kills -9 the node holding VIP 1. PASS: the largest gap
#               between two successful fsyncs < 2 s, no write/fsync error,
#               no GRACE, no reclaim, every acknowledged record in the file,
#               the striped file's sha256 unchanged on every read.
#   restart     the killed node starts again
#   partition   the same writer and reader; the host cuts the node holding
#               VIP 1 off: VIP 1 moves to another node, writes go on through
#               it, the cut-off node's log shows it stopped changing
#               anything, the record file holds every acknowledged record
#               and nothing else (no write landed from the cut-off side);
#               heal; the node rejoins.
#   cleanup     remove the files, unmount
. "$(dirname "$0")/lib.sh"
ST=/tmp/failover-state
D=failover-${LAB_RUN_ID:-0}
W=$M/$D
INTERVAL_MS=${FAILOVER_INTERVAL_MS:-20}
GAP_LIMIT_MS=${FAILOVER_GAP_LIMIT_MS:-2000}
STRIPED_MIB=${FAILOVER_STRIPED_MIB:-32}
# Records before the fault, and after it (or after VIP 1 moved).
WARM=${FAILOVER_WARM_RECORDS:-50}
AFTER=${FAILOVER_AFTER_RECORDS:-100}

# progress FIELD: a field of the writer's progress line (0 before it wrote one)
progress() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" /tmp/wr.prog 2>/dev/null | grep . || echo 0; }
# wait_acked N SECONDS: until the writer has N records acknowledged
wait_acked() {
    i=0
    while [ "$(progress acked)" -lt "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    [ "$(progress acked)" -ge "$1" ]
}

# start_io FILE: the record writer on FILE and the striped-file reader
start_io() {
    rm -f /tmp/wr.stop /tmp/wr.prog /tmp/wr.err /tmp/rd.stop /tmp/rd.pass /tmp/rd.bad /tmp/rd.err
    labtool recwrite "$1" "$INTERVAL_MS" /tmp/wr.stop /tmp/wr.prog 2>/tmp/wr.err &
    WP=$!
    want=$(cat /tmp/striped.sha)
    (
        p=0 b=0
        while [ ! -e /tmp/rd.stop ]; do
            echo 3 >/proc/sys/vm/drop_caches
            got=$(sha "$W/striped")
            p=$((p + 1))
            [ "$got" = "$want" ] || { b=$((b + 1)); echo "pass $p: '$got'" >>/tmp/rd.err; }
            echo $p >/tmp/rd.pass
            echo $b >/tmp/rd.bad
        done
    ) &
    RP=$!
}

# alive PID: running (not a zombie waiting for us)
alive() { s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
# stop_io [SECONDS]: tell both to stop and wait for them, at most SECONDS
# (default 60); fails when the writer is still stuck in a write or fsync
stop_io() {
    touch /tmp/wr.stop /tmp/rd.stop
    i=0
    while alive "$WP" || alive "$RP"; do
        [ $i -lt $((${1:-60} * 10)) ] || return 1
        sleep 0.1
        i=$((i + 1))
    done
    wait "$WP" "$RP"
    return 0
}

# io_report PHASE FILE: check the writer's and reader's results; sets ACKED,
# GAP_MS, ERRORS, PASSES, BAD, VERIFY
io_report() {
    ACKED=$(progress acked)
    ERRORS=$(progress errors)
    GAP_MS=$(progress max_gap_ms)
    GAP_END=$(progress max_gap_end_ms)
    ELAPSED=$(progress elapsed_ms)
    PASSES=$(cat /tmp/rd.pass 2>/dev/null || echo 0)
    BAD=$(cat /tmp/rd.bad 2>/dev/null || echo 0)
    VERIFY=$(labtool recverify "$2" "$ACKED")
    info "$1: acked=$ACKED errors=$ERRORS gap_ms=$GAP_MS gap_end_ms=$GAP_END elapsed_ms=$ELAPSED fault_at_ms=$FAULT_MS reader_passes=$PASSES reader_bad=$BAD verify='$VERIFY'"
    # The longest stalls (writer ms since its start; fault at FAULT_MS) and
    # the first errors.
    info "$1 writer: $(grep -c 'since the last fsync' /tmp/wr.err) gaps over 300 ms; longest:"
    grep 'since the last fsync' /tmp/wr.err | sort -t: -k3 -n -r | sed 's/^labtool: //' | head -n 3 |
        while read -r l; do info "$1 writer:   $l"; done
    grep failed /tmp/wr.err | head -n 3 | while read -r l; do info "$1 writer: $l"; done
    [ ! -s /tmp/rd.err ] || info "$1 reader: $(tail -n 2 /tmp/rd.err | tr '\n' ' ')"
}

# io_begin SNAP FILE FAULT: snapshot SNAP on the host, start the writer on
# FILE and the reader, wait for WARM records; sets A0 (records before FAULT)
io_begin() {
    need_mount
    [ -s /tmp/striped.sha ] || fail "no striped file (the striped step failed)"
    host_ok snap "$1"
    start_io "$2"
    wait_acked "$WARM" 60 || { stop_io; fail "the writer acknowledged only $(progress acked) records in 60 s before the $3"; }
    A0=$(progress acked)
}

# io_checks STUCK WHEN: what both faults must keep: the writer done, no
# error, every acknowledged record intact, the striped file unchanged
io_checks() {
    [ "$1" = 0 ] || fail "the writer is still blocked in a write or fsync 60 s after $2 (record $(progress acked))"
    [ "$ERRORS" = 0 ] || fail "$ERRORS write/fsync errors: $(grep failed /tmp/wr.err | head -n 2 | tr '\n' ' ')"
    case "$VERIFY" in OK*) ;; *) fail "record file: $VERIFY" ;; esac
    [ "$BAD" = 0 ] && [ "$PASSES" -gt 0 ] || fail "striped file: $BAD of $PASSES reads had another sha256"
}

# gap_s MS: "1.23"
gap_s() { awk -v m="$1" 'BEGIN { printf "%.2f", m / 1000 }'; }

# ---------------------------------------------------------------- steps ---

step_mount() {
    mnt || fail "mount.nfs4 $SERVER:$EXPORT -o $OPTS failed"
    mkdir -p "$W" || fail "mkdir $W failed"
    drv=$(stats | sed -n 's/.*pnfs=\([A-Za-z0-9_]*\).*/\1/p' | head -n1)
    info "mounted $SERVER:$EXPORT vers $V; pnfs=$drv"
}

step_striped() {
    need_mount
    dd if=/dev/urandom of=/tmp/striped bs=1M count="$STRIPED_MIB" 2>/dev/null
    sha /tmp/striped >/tmp/striped.sha
    dd if=/tmp/striped of="$W/striped" bs=1M conv=fsync 2>/tmp/dd.err || fail "writing $STRIPED_MIB MiB: $(tail -n1 /tmp/dd.err)"
    rm -f /tmp/striped
    echo 3 >/proc/sys/vm/drop_caches
    got=$(sha "$W/striped")
    [ "$got" = "$(cat /tmp/striped.sha)" ] || fail "read back sha256 $got, wrote $(cat /tmp/striped.sha)"
    info "$STRIPED_MIB MiB striped file written and read back; pnfs_write events $(stats | awk '$1 == "events:" { print $NF; exit }')"
}

step_kill() {
    f=$W/records
    io_begin kill-0 "$f" kill
    a0=$A0
    FAULT_MS=$(progress elapsed_ms)
    t0=$(up)
    host kill
    rc=$?
    t1=$(up)
    [ $rc = 0 ] || { stop_io; fail "host action kill failed ($rc): no node holds VIP 1? (host-actions log)"; }
    info "node holding VIP 1 killed at record $a0 ($(secs "$t0" "$t1") s for the host action)"
    # Writes must go on: AFTER more records (bounded: a failover that never
    # comes shows as the gap and the missing records).
    wait_acked $((a0 + AFTER)) 90 || info "only $(($(progress acked) - a0)) records acknowledged in 90 s after the kill"
    sleep 1
    stuck=0
    stop_io || stuck=1
    host_ok snap kill-1
    io_report kill "$f"
    host grace kill-0
    grace=$?
    host reclaim kill-0
    reclaim=$?
    after=$((ACKED - a0))
    summary "kill -9 of the VIP1 MDS: largest fsync gap $(gap_s "$GAP_MS") s (writer $INTERVAL_MS ms), $ERRORS errors, $grace GRACE, $reclaim reclaim, $ACKED records all present ($after after the kill), striped file read $PASSES times, $BAD mismatches"
    io_checks $stuck "it was told to stop (no failover?)"
    [ "$after" -ge "$AFTER" ] || fail "only $after records acknowledged after the kill"
    [ "$GAP_MS" -lt "$GAP_LIMIT_MS" ] || fail "largest gap between fsyncs $GAP_MS ms (limit $GAP_LIMIT_MS)"
    [ "$grace" = 0 ] || fail "$grace server log lines about grace (host-actions log)"
    [ "$reclaim" = 0 ] || fail "$reclaim signs of state recovery: reclaim, a new client ID or session (host-actions log)"
}

step_restart() {
    host start || fail "host action start failed ($?)"
}

step_partition() {
    f=$W/records2
    io_begin part-0 "$f" partition
    a0=$A0
    FAULT_MS=$(progress elapsed_ms)
    host partition
    rc=$?
    [ $rc = 0 ] || { stop_io; fail "host action partition failed ($rc)"; }
    t0=$(up)
    host vip-moved
    moved=$?
    t1=$(up)
    a1=$(progress acked)
    if [ $moved = 0 ]; then
        check partition-vip-moved OK
        info "VIP 1 moved $(secs "$t0" "$t1") s after the partition (records $a0 at the partition, $a1 then)"
    else
        check partition-vip-moved FAIL "VIP 1 did not move to another live node within 30 s (host-actions log)"
    fi
    wait_acked $((a1 + AFTER)) 90 || info "only $(($(progress acked) - a1)) records acknowledged in 90 s after VIP 1 moved"
    host read-only
    ro=$?
    [ $ro = 0 ] && check partition-isolated-read-only OK ||
        check partition-isolated-read-only FAIL "the cut-off node's log does not say it stopped changing anything (host-actions log)"
    host_ok snap part-1
    # Heal while the writer stops: one blocked on the cut-off node (no
    # failover) needs it to finish.
    touch /tmp/wr.stop /tmp/rd.stop
    host heal || info "host action heal failed ($?)"
    stuck=0
    stop_io || stuck=1
    io_report partition "$f"
    host grace part-0
    grace=$?
    host rejoined
    rejoined=$?
    [ $rejoined = 0 ] && check partition-rejoined OK || check partition-rejoined FAIL "the healed node is not live 30 s after heal (host-actions log)"
    after=$((ACKED - a1))
    summary "partition of the VIP1 MDS: VIP moved=$([ $moved = 0 ] && echo yes || echo no), largest fsync gap $(gap_s "$GAP_MS") s, $ERRORS errors, $grace GRACE, $ACKED records all present ($after after the move), isolated node read-only=$([ $ro = 0 ] && echo yes || echo no), rejoined=$([ $rejoined = 0 ] && echo yes || echo no)"
    io_checks $stuck "the heal"
    [ $moved = 0 ] || fail "VIP 1 did not move"
    [ "$after" -ge "$AFTER" ] || fail "only $after records acknowledged after VIP 1 moved"
    [ $ro = 0 ] || fail "the cut-off node did not turn read-only"
    [ "$grace" = 0 ] || fail "$grace server log lines about grace"
    [ $rejoined = 0 ] || fail "the healed node did not rejoin"
}

step_cleanup() {
    need_mount
    rm -rf "$W" || fail "rm -rf $W"
    umount "$M" || fail "umount"
}

# ------------------------------------------------------------- runner ---

scenario_begin "$@"
echo "LAB-SCENARIO failover: vers $V, server $SERVER:$PORT$EXPORT, dir $D, writer every $INTERVAL_MS ms, host actions: ${LAB_HOST_ACTIONS:-none}"
run_step mount 60 step_mount
run_step striped 180 step_striped
run_step failover-kill 300 step_kill
run_step restart 60 step_restart
run_step failover-partition 400 step_partition
run_step cleanup 120 step_cleanup
echo "LAB-END"

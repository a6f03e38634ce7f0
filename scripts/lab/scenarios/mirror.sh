#!/bin/sh
# Flexfiles mirror scenario (guest side, busybox ash), run by scripts/mirror-lab
# against an MDS whose export defaults to a mirrored layout
# (local-cluster --layout mirror2): proves the Linux client wrote every
# mirror itself through the flexfiles layout driver.
#   - the mount reports pnfs=LAYOUT_FLEX_FILES in /proc/self/mountstats
#   - 256 MiB written with dd (fsync), sync, caches dropped, remounted, read
#     back: sha256 equal
#   - pnfs_write / pnfs_read event counters (the last two of "events:") are
#     non-zero
# The host checks the data servers' byte counters afterwards (each byte on
# two data servers, none through the MDS). Every step prints PASS/FAIL;
# INFO lines carry the numbers.

# Mount, mountstats and timing helpers ($M, $OPTS, mnt, stats, op_count,
# up, secs); this scenario prints its own PASS/FAIL lines, not steps.
. "$(dirname "$0")/lib.sh"
MIB=256 # scripts/mirror-lab expects this size
W=$M/mirror-${LAB_RUN_ID:-0}
# A hard mount retries a data server's errors forever: each I/O step gets a
# bound (the mirrored write takes about 60 s under TCG).
IO_LIMIT=300

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

echo "LAB-SCENARIO mirror: vers $V, $MIB MiB, server $SERVER:$PORT$EXPORT"
lsmod 2>/dev/null | grep -q nfs_layout_flexfiles && echo "INFO nfs_layout_flexfiles loaded" ||
    echo "INFO nfs_layout_flexfiles not in lsmod (built in, or loaded on demand)"
mkdir -p "$M"
mnt || { fail mount "mount.nfs4 -o $OPTS failed"; echo LAB-END; exit 1; }
pass mount
mkdir -p "$W"
drv=$(pnfs_driver)
echo "INFO layout-driver: pnfs=$drv"
[ "$drv" = LAYOUT_FLEX_FILES ] && pass layout-driver ||
    fail layout-driver "mountstats shows pnfs=$drv, want LAYOUT_FLEX_FILES (does the MDS list LAYOUT4_FLEX_FILES in fs_layout_types?)"

dd if=/dev/urandom of=/tmp/src bs=1M count="$MIB" 2>/dev/null
want=$(sha256sum /tmp/src | cut -d' ' -f1)
t0=$(up)
if timeout -s KILL $IO_LIMIT dd if=/tmp/src of="$W/big" bs=1M conv=fsync 2>/tmp/dd.err; then
    t1=$(up)
    echo "INFO write: $MIB MiB in $(secs "$t0" "$t1") s"
    pass write
else
    fail write "dd did not finish within $IO_LIMIT s: $(tail -n1 /tmp/dd.err) (the host's INFO lines show each data server's WRITE errors)"
    echo "INFO mountstats after the failed write:"
    stats | grep -E "events:|WRITE:|LAYOUTGET:|LAYOUTERROR:" | sed 's/^/INFO   /'
    echo LAB-END
    exit 1
fi
rm -f /tmp/src
sync
ew=$(pnfs_events)
lc_w=$(op_count LAYOUTCOMMIT)
lg_w=$(op_count LAYOUTGET)
echo 3 >/proc/sys/vm/drop_caches
umount "$M" && mnt || { fail remount "remount failed"; echo LAB-END; exit 1; }
size=$(stat -c %s "$W/big" 2>/dev/null)
echo "INFO size after remount: ${size:-none} bytes"
[ "${size:-0}" = $((MIB * 1048576)) ] && pass size || fail size "the file has ${size:-no} bytes, want $((MIB * 1048576))"
t0=$(up)
got=$(timeout -s KILL $IO_LIMIT sha256sum "$W/big" | cut -d' ' -f1)
t1=$(up)
echo "INFO read: $MIB MiB in $(secs "$t0" "$t1") s"
[ "$got" = "$want" ] && pass read-verify || fail read-verify "sha256 $got != written $want"
er=$(pnfs_events)
pw=${ew#* }
pr=${er% *}
echo "INFO counters: pnfs_write=$pw (write mount), pnfs_read=$pr (read mount), standalone LAYOUTGET=$lg_w+$(op_count LAYOUTGET), GETDEVICEINFO=$(op_count GETDEVICEINFO), LAYOUTCOMMIT=$lc_w (write mount), LAYOUTERROR=$(op_count LAYOUTERROR)"
[ "${pw:-0}" -gt 0 ] 2>/dev/null && pass pnfs-write || fail pnfs-write "pnfs_write counter is ${pw:-empty}: writes went through the MDS"
[ "${pr:-0}" -gt 0 ] 2>/dev/null && pass pnfs-read || fail pnfs-read "pnfs_read counter is ${pr:-empty}: reads went through the MDS"
# The host compares the data servers' counters with the file size: keep the
# file until it has (it is removed with the cluster's data).
umount "$M"
echo "LAB-END"

#!/bin/sh
# pNFS files-layout scenario (guest side, busybox ash): proves the Linux
# client moved data through the layout driver to the data servers.
#   - the mount reports pnfs=LAYOUT_NFSV4_1_FILES in /proc/self/mountstats
#   - 256 MiB written with dd, remounted, read back, sha256 equal
#   - pnfs_read / pnfs_write event counters (the last two of "events:") are
#     non-zero and LAYOUTGET was sent
# Every step prints PASS/FAIL; INFO lines carry the numbers.

SERVER=${LAB_SERVER:-10.0.2.2}
PORT=${LAB_PORT:-2049}
EXPORT=${LAB_EXPORT:-/}
VERS=${LAB_VERS:-4.1,4.2}
V=${VERS##*,}
MIB=${PNFS_MIB:-256}
M=/mnt
W=$M/pnfs-${LAB_RUN_ID:-0}
OPTS="vers=$V,hard,sec=sys,port=$PORT,retry=0"

up() { cut -d' ' -f1 /proc/uptime; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
mnt() { mount.nfs4 "$SERVER:$EXPORT" "$M" -o "$OPTS"; }
# mountstats block of $M
stats() { awk -v m="$M" '$1 == "device" { inmnt = ($5 == m) } inmnt' /proc/self/mountstats; }
op_count() { stats | awk -v op="$1:" '$1 == op { print $2; exit }'; }
events() { stats | awk '$1 == "events:" { print; exit }'; }

echo "LAB-SCENARIO pnfs: vers $V, $MIB MiB, server $SERVER:$PORT$EXPORT"
mkdir -p "$M"
if mnt; then pass mount; else fail mount "mount.nfs4 -o $OPTS failed"; echo LAB-END; exit 1; fi
mkdir -p "$W"
drv=$(stats | sed -n 's/.*pnfs=\([A-Za-z0-9_]*\).*/\1/p' | head -n1)
echo "INFO layout-driver: pnfs=$drv"
[ "$drv" = LAYOUT_NFSV4_1_FILES ] && pass layout-driver || fail layout-driver "mountstats shows pnfs=$drv (fs_layout_types or EXCHANGE_ID flags?)"

dd if=/dev/urandom of=/tmp/src bs=1M count="$MIB" 2>/dev/null
want=$(sha256sum /tmp/src | cut -d' ' -f1)
t0=$(up)
if dd if=/tmp/src of="$W/big" bs=1M conv=fsync 2>/tmp/dd.err; then
    t1=$(up)
    echo "INFO write: $MIB MiB in $(secs "$t0" "$t1") s"
    pass write
else
    fail write "dd: $(tail -n1 /tmp/dd.err)"
fi
rm -f /tmp/src
ew=$(events)
lg_w=$(op_count LAYOUTGET)
lc_w=$(op_count LAYOUTCOMMIT)
umount "$M" && mnt || { fail remount "remount failed"; echo LAB-END; exit 1; }
t0=$(up)
got=$(sha256sum "$W/big" | cut -d' ' -f1)
t1=$(up)
echo "INFO read: $MIB MiB in $(secs "$t0" "$t1") s"
[ "$got" = "$want" ] && pass read-verify || fail read-verify "sha256 $got != written $want"
er=$(events)
pw=$(echo "$ew" | awk '{ print $NF }')
pr=$(echo "$er" | awk '{ print $(NF-1) }')
lg_r=$(op_count LAYOUTGET)
echo "INFO counters: pnfs_write=$pw (write mount), pnfs_read=$pr (read mount), standalone LAYOUTGET=$lg_w+$lg_r, GETDEVICEINFO=$(op_count GETDEVICEINFO), LAYOUTCOMMIT=$lc_w (write mount)"
[ "${pw:-0}" -gt 0 ] 2>/dev/null && pass pnfs-write || fail pnfs-write "pnfs_write counter is ${pw:-empty}: writes went through the MDS"
[ "${pr:-0}" -gt 0 ] 2>/dev/null && pass pnfs-read || fail pnfs-read "pnfs_read counter is ${pr:-empty}: reads went through the MDS"
# Linux >= 4.18 sends LAYOUTGET inside the OPEN compound, where mountstats
# counts it as OPEN; the host side checks the MDS's LAYOUTGET counter.
echo "INFO layoutget: mountstats counts only standalone LAYOUTGETs; the MDS metrics prove the rest"
rm -f "$W/big"; rmdir "$W"
umount "$M"
echo "LAB-END"

#!/bin/sh
# Client workload for the main job (scripts/main-job): the stock Linux NFS
# client in the lab guest mounts the local cluster with vers=4.2 and runs
# streaming and small-file work, printing what it did and how fast.
# Runs under busybox ash; see scripts/lab/lab.sh for the PASS/FAIL protocol.

SERVER=${LAB_SERVER:-10.0.2.2}
PORT=${LAB_PORT:-2049}
EXPORT=${LAB_EXPORT:-/}
M=/mnt
W=$M/workload-${LAB_RUN_ID:-0}
FILES=${WORKLOAD_FILES:-4}
MIB=${WORKLOAD_MIB:-32}
SMALL=${WORKLOAD_SMALL:-500}

up() { cut -d' ' -f1 /proc/uptime; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { d = b - a; if (d < 0.001) d = 0.001; printf "%.2f", d }'; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { d = b - a; if (d < 0.001) d = 0.001; printf "%.1f", n / d }'; }
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }
FAILED=0

echo "LAB-SCENARIO workload: $FILES x $MIB MiB streaming, $SMALL small files, server $SERVER:$PORT$EXPORT"
mkdir -p "$M"
if mount.nfs4 "$SERVER:$EXPORT" "$M" -o "vers=4.2,hard,sec=sys,port=$PORT,retry=0"; then
    pass mount-4.2
else
    fail mount-4.2 "mount.nfs4 failed"; echo LAB-END; exit 1
fi
mkdir -p "$W"

# Streaming write then read back through a fresh mount (no client cache).
dd if=/dev/urandom of=/tmp/src bs=1M count="$MIB" 2>/dev/null
want=$(sha256sum /tmp/src | cut -d' ' -f1)
t0=$(up)
i=1
while [ $i -le "$FILES" ]; do
    dd if=/tmp/src of="$W/stream$i" bs=1M conv=fsync 2>/dev/null || fail stream-write "dd to stream$i failed"
    i=$((i + 1))
done
t1=$(up)
echo "INFO stream-write: $((FILES * MIB)) MiB in $(secs "$t0" "$t1") s = $(rate $((FILES * MIB)) "$t0" "$t1") MiB/s"
[ $FAILED = 0 ] && pass stream-write
umount "$M" && mount.nfs4 "$SERVER:$EXPORT" "$M" -o "vers=4.2,hard,sec=sys,port=$PORT,retry=0"
t0=$(up)
bad=0
i=1
while [ $i -le "$FILES" ]; do
    got=$(sha256sum "$W/stream$i" | cut -d' ' -f1)
    [ "$got" = "$want" ] || bad=$((bad + 1))
    i=$((i + 1))
done
t1=$(up)
echo "INFO stream-read: $((FILES * MIB)) MiB in $(secs "$t0" "$t1") s = $(rate $((FILES * MIB)) "$t0" "$t1") MiB/s (sha256 checked)"
[ $bad = 0 ] && pass stream-read-verify || fail stream-read-verify "$bad file(s) differ from what was written"

# Small files: create, stat, remove.
mkdir -p "$W/small"
t0=$(up)
i=1
while [ $i -le "$SMALL" ]; do echo "$i" >"$W/small/f$i" || break; i=$((i + 1)); done
t1=$(up)
n=$(ls "$W/small" | wc -l)
echo "INFO small-create: $SMALL files in $(secs "$t0" "$t1") s = $(rate "$SMALL" "$t0" "$t1") creates/s"
[ "$n" = "$SMALL" ] && pass small-create || fail small-create "listed $n files, created $SMALL"
t0=$(up)
ls -l "$W/small" >/dev/null
t1=$(up)
echo "INFO small-stat: ls -l of $SMALL files in $(secs "$t0" "$t1") s"
t0=$(up)
rm -rf "$W/small" "$W"/stream*
t1=$(up)
echo "INFO small-remove: removed in $(secs "$t0" "$t1") s"
[ ! -e "$W/small" ] && pass remove || fail remove "directory still there"
awk -v m="$M" '$1 == "device" { inmnt = ($5 == m) } inmnt && /^ +(OPEN|WRITE|READ|COMMIT|GETATTR|LOOKUP|CLOSE|REMOVE|READDIR|SEQUENCE):/ { printf "INFO ops: %s %s\n", $1, $2 }' /proc/self/mountstats
rmdir "$W"
umount "$M"
echo "LAB-END"

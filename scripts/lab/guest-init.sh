#!/bin/sh
# /init of the kernel-client lab guest (busybox ash, PID 1).
# Built into the base initramfs by `scripts/lab/lab.sh prepare`; the per-run
# overlay archive adds /lab/env and /lab/scenario.sh.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TERM=dumb TZ=UTC

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm /run /var/run /var/lib/nfs /tmp
mount -t tmpfs -o mode=1777,size=600m tmpfs /tmp
mount -t tmpfs tmpfs /run
ln -sf /proc/self/fd /dev/fd 2>/dev/null
# keep kernel chatter (NFS "server not responding" etc.) off the console:
# it would tear PASS/FAIL lines; the runner dumps dmesg at the end instead.
echo 3 >/proc/sys/kernel/printk
hostname lab-guest

up() { cut -d' ' -f1 /proc/uptime; }
echo "LAB-INIT: kernel $(uname -r) userspace up at $(up)s"

KVER=$(uname -r)
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/$KVER/$m" || echo "LAB-INIT: insmod $m failed"
done </lab/modules.order

i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "LAB-INIT: modules loaded, eth0 10.0.2.15/24 via 10.0.2.2 at $(up)s"

[ -f /lab/env ] && . /lab/env
cd /tmp || true
if [ -f /lab/scenario.sh ]; then
    sh /lab/scenario.sh </dev/null
    rc=$?
    echo "LAB-INIT: scenario exited with status $rc at $(up)s"
else
    echo "LAB-INIT: no /lab/scenario.sh in the initramfs"
fi
echo "LAB-INIT: ---- guest kernel log (last 60 lines) ----"
dmesg | tail -n 60 | sed 's/^/  dmesg: /'
echo "LAB-INIT: powering off"
sync
poweroff -f

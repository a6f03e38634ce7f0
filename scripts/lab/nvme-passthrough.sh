#!/usr/bin/env bash
# NVMe passthrough check of the DS volume backend in a QEMU guest with an
# emulated NVMe namespace (no NVMe on the host needed): builds the pnfs-ds
# unit tests statically, boots the lab's Debian cloud kernel (lab.sh
# prepare first) with `-device nvme` and runs the passthrough tests against
# /dev/ng0n1 and /dev/nvme0n1 (PNFS_DS_TEST_NVME). NVME_LBS=4096 for
# 4 KiB LBAs (default 512). Exits 0 when both pass.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${LAB_CACHE:-$root/.lab-cache}
[ -s "$cache/vmlinuz" ] && [ -s "$cache/initrd-base.img" ] || { echo "no lab in $cache: run scripts/lab/lab.sh prepare" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$root/target}-static
bin=$(cd "$root" && CARGO_TARGET_DIR=$target RUSTFLAGS="-C target-feature=+crt-static" \
    cargo test -p pnfs-ds --lib --no-run --target x86_64-unknown-linux-gnu --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$bin" ] || { echo "no test binary" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/overlay/lab"
cp "$bin" "$work/overlay/lab/pnfs_ds_test"
cat >"$work/overlay/lab/scenario.sh" <<'SCEN'
echo "NVME: $(ls /dev/ng0n1 /dev/nvme0n1 2>&1 | tr '\n' ' ') lbs $(cat /sys/block/nvme0n1/queue/logical_block_size)"
cd /tmp
for d in /dev/ng0n1 /dev/nvme0n1; do
    PNFS_DS_TEST_NVME=$d /lab/pnfs_ds_test --test-threads 1 nvme passthrough 2>&1 | sed "s#^#NVME $d: #"
done
SCEN
(cd "$work/overlay" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1 -n) >"$work/overlay.img"
cat "$cache/initrd-base.img" "$work/overlay.img" >"$work/initrd.img"
truncate -s 64M "$work/nvme.img"
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$work/initrd.img" -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -drive "file=$work/nvme.img,if=none,id=nv,format=raw" -device "nvme,serial=pnfs,drive=nv,logical_block_size=${NVME_LBS:-512},physical_block_size=${NVME_LBS:-512}" \
    </dev/null >"$work/console.log" 2>&1 || true
grep '^NVME' "$work/console.log" || tail -n 40 "$work/console.log"
[ "$(grep -c '^NVME .*test result: ok. [1-9]' "$work/console.log")" -eq 2 ]

#!/usr/bin/env bash
# Kernel-client test lab: boots a Debian cloud kernel under QEMU (TCG, no KVM
# needed) with a busybox initramfs and runs a scenario against an NFSv4.1/4.2
# server listening on this host.
#
# Usage:
#   scripts/lab/lab.sh prepare
#       Install host tools if missing, fetch the kernel / busybox / nfs-common
#       packages, build labtool and the base initramfs.  Idempotent; cached
#       under $LAB_CACHE (default <repo>/.lab-cache).
#   scripts/lab/lab.sh run [--server ADDR[:PORT]] [--port N] [--export PATH]
#                          [--scenario FILE] [--timeout SECONDS]
#                          [--host-action NAME=CMD]... [--on-restart CMD]
#                          [--vers LIST]
#       Boot the guest and run the scenario (default scenarios/foundation.sh).
#       --server  server address as seen from this host (default 127.0.0.1).
#                 127.0.0.1/localhost is reached by the guest as 10.0.2.2 (QEMU
#                 user networking maps it to the host's 127.0.0.1, so the
#                 server must listen on 127.0.0.1 or 0.0.0.0); other addresses
#                 are used as-is through QEMU's NAT.
#       --port    server TCP port (default 2049, or the :PORT of --server)
#       --export  path to mount (default /)
#       --timeout whole-run limit in seconds (default 600); QEMU is killed and
#                 the run FAILs when it is reached
#       --host-action NAME=CMD  (repeatable) host command run with bash -c
#                 when the guest prints "@@LAB-HOST NAME [ARG...]"; the ARGs
#                 (letters, digits and ._/=:,+- only) are its $1, $2 ...  and
#                 LAB_RUN_ID, LAB_ACTION are in its environment.  It runs while
#                 the console waits (limit 120 s); its output and exit status
#                 go to the host-actions log, and the guest gets the line
#                 "@@LAB-HOST-DONE NAME STATUS" on its serial console input
#                 (an unknown NAME answers status 127).  The guest's env has
#                 LAB_HOST_ACTIONS (the names given).
#       --on-restart CMD  the same as --host-action restart=CMD: it must kill -9
#                 the server and start it again, in the background, and
#                 return.  Without it the foundation restart step is SKIPped.
#       --vers    comma list of minor versions to mount-test (default 4.1,4.2);
#                 the last one stays mounted for the remaining steps
#   The runner prints the guest's PASS/FAIL/SKIP/INFO lines, the console log
#   path and a closing "lab: N passed, N failed, N skipped" line.  Exit status
#   is 0 only with at least one PASS, no FAIL and the scenario's LAB-END marker.
#
# Environment: LAB_CACHE (cache dir), LAB_SMP (guest CPUs, default 1),
#   LAB_MEM (guest MiB, default 1024), LAB_KERNEL_PKG (e.g.
#   linux-image-6.1.0-56-cloud-amd64; default: what linux-image-cloud-amd64
#   depends on).
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$LAB_DIR/../.." && pwd)
LAB_CACHE=${LAB_CACHE:-$REPO/.lab-cache}
mkdir -p "$LAB_CACHE"
LAB_CACHE=$(cd "$LAB_CACHE" && pwd)
# bump when the initramfs layout changes, to invalidate cached builds
LAB_FORMAT=3
GUEST_MODULES="virtio_pci virtio_net nfsv4 nfs_layout_nfsv41_files nfs_layout_flexfiles"

say() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: ERROR: %s\n' "$*" >&2; exit 2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- prepare ---

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

# host_need CMD PACKAGE: install PACKAGE when CMD is not on PATH
host_need() {
    local missing=() cmd pkg
    while [ $# -gt 0 ]; do
        cmd=$1 pkg=$2
        shift 2
        if [ "${cmd#/}" != "$cmd" ]; then
            [ -e "$cmd" ] || missing+=("$pkg")
        else
            command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing host packages: ${missing[*]}"
    apt_update_once
    mkdir -p "$LAB_CACHE"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >"$LAB_CACHE/apt-install.log" 2>&1 ||
        die "apt-get install ${missing[*]} failed (see $LAB_CACHE/apt-install.log)"
}

# candidate version of a package, running apt-get update when lists are empty
pkg_version() {
    local v
    v=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then
        apt_update_once
        v=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    fi
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "no candidate for package $1"
    printf '%s\n' "$v"
}

# fetch_deb PACKAGE -> prints path of the cached .deb (apt-get download)
fetch_deb() {
    local pkg=$1 ver file
    ver=$(pkg_version "$pkg")
    mkdir -p "$LAB_CACHE/debs"
    file="$LAB_CACHE/debs/${pkg}_${ver//:/%3a}_amd64.deb"
    if [ ! -s "$file" ]; then
        say "downloading $pkg $ver"
        # apt's _apt sandbox user may not be able to write into the cache
        (cd "$LAB_CACHE/debs" && apt-get download -qq "$pkg=$ver" >/dev/null 2>&1) ||
            { apt_update_once; (cd "$LAB_CACHE/debs" && apt-get download -qq "$pkg=$ver" >/dev/null 2>&1); } ||
            die "apt-get download $pkg=$ver failed"
        [ -s "$file" ] || file=$(ls -1 "$LAB_CACHE/debs/${pkg}_"*_amd64.deb | tail -n1)
    fi
    printf '%s\n' "$file"
}

# extract_deb DEB DIR: dpkg -x once into DIR
extract_deb() {
    if [ ! -f "$2/.extracted" ]; then
        rm -rf "$2"
        mkdir -p "$2"
        dpkg -x "$1" "$2"
        touch "$2/.extracted"
    fi
}

cmd_prepare() {
    local t0 t1
    t0=$(now)
    mkdir -p "$LAB_CACHE"
    say "prepare: cache $LAB_CACHE"

    say "checking host tools"
    host_need qemu-system-x86_64 qemu-system-x86 cpio cpio gzip gzip \
        depmod kmod modprobe kmod gcc gcc ldd libc-bin \
        /usr/lib/x86_64-linux-gnu/libc.a libc6-dev \
        /usr/lib/x86_64-linux-gnu/libtirpc.so.3 libtirpc3 \
        /usr/lib/x86_64-linux-gnu/libmount.so.1 libmount1 \
        /usr/lib/x86_64-linux-gnu/libgssapi_krb5.so.2 libgssapi-krb5-2 \
        /etc/netconfig libtirpc-common
    # depmod/modprobe live in /sbin, which may not be on a non-root PATH
    export PATH="$PATH:/usr/sbin:/sbin"

    local kpkg
    if [ -n "${LAB_KERNEL_PKG:-}" ]; then
        kpkg=$LAB_KERNEL_PKG
    else
        kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
            awk '/Depends: linux-image-/ { print $2; exit }')
        if [ -z "$kpkg" ]; then
            apt_update_once
            kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
                awk '/Depends: linux-image-/ { print $2; exit }')
        fi
        [ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-amd64"
    fi
    local kdeb bbdeb ncdeb
    kdeb=$(fetch_deb "$kpkg")
    bbdeb=$(fetch_deb busybox-static)
    ncdeb=$(fetch_deb nfs-common)
    say "kernel package $(basename "$kdeb")"

    local stamp
    stamp=$( {
        echo "format=$LAB_FORMAT modules=$GUEST_MODULES"
        basename "$kdeb"; basename "$bbdeb"; basename "$ncdeb"
        sha256sum "$LAB_DIR/labtool.c" "$LAB_DIR/guest-init.sh" | cut -d' ' -f1
        sha256sum /sbin/ldconfig 2>/dev/null | cut -d' ' -f1 # host libc changes
    } | sha256sum | cut -d' ' -f1)
    if [ -f "$LAB_CACHE/stamp" ] && [ "$(cat "$LAB_CACHE/stamp")" = "$stamp" ] &&
        [ -s "$LAB_CACHE/vmlinuz" ] && [ -s "$LAB_CACHE/initrd-base.img" ]; then
        t1=$(now)
        say "prepare: up to date ($(elapsed "$t0" "$t1") s)"
        return 0
    fi

    local kx="$LAB_CACHE/x/kernel" bbx="$LAB_CACHE/x/busybox" ncx="$LAB_CACHE/x/nfs-common"
    rm -rf "$LAB_CACHE/x"
    say "extracting packages"
    extract_deb "$kdeb" "$kx"
    extract_deb "$bbdeb" "$bbx"
    extract_deb "$ncdeb" "$ncx"
    local kver
    kver=$(ls -1 "$kx/lib/modules" | head -n1)
    [ -n "$kver" ] && [ -f "$kx/boot/vmlinuz-$kver" ] || die "no kernel in $kdeb"
    say "depmod -b for $kver"
    depmod -b "$kx" "$kver"

    local root="$LAB_CACHE/build/root"
    rm -rf "$LAB_CACHE/build"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,run,root,lab,var/lib/nfs,lib64}
    mkdir -p "$root/lib/modules/$kver"

    say "busybox applets"
    install -m 0755 "$bbx/bin/busybox" "$root/bin/busybox"
    local a n=0
    for a in $("$root/bin/busybox" --list-full); do
        [ -e "$root/$a" ] || [ -L "$root/$a" ] || { ln -s /bin/busybox "$root/$a"; n=$((n + 1)); }
    done
    say "  $n applet links"

    say "kernel modules: $GUEST_MODULES (+ dependencies)"
    local m ko order="$root/lab/modules.order"
    : >"$order"
    for m in $GUEST_MODULES; do
        modprobe -d "$kx" -S "$kver" --show-depends "$m" |
            awk '$1 == "insmod" { print $2 }' |
            while read -r ko; do
                ko=${ko#"$kx/lib/modules/$kver/"}
                grep -qxF "$ko" "$order" || echo "$ko" >>"$order"
            done
    done
    while read -r ko; do
        mkdir -p "$root/lib/modules/$kver/$(dirname "$ko")"
        cp "$kx/lib/modules/$kver/$ko" "$root/lib/modules/$kver/$ko"
    done <"$order"
    # busybox insmod/modprobe may lack xz/zstd support: ship plain .ko files
    if grep -qE '\.ko\.(xz|zst|gz)$' "$order"; then
        while read -r ko; do
            case "$ko" in
            *.ko.xz) xz -d "$root/lib/modules/$kver/$ko" ;;
            *.ko.zst) zstd -q -d --rm "$root/lib/modules/$kver/$ko" ;;
            *.ko.gz) gzip -d "$root/lib/modules/$kver/$ko" ;;
            esac
        done <"$order"
        sed -i -E 's/\.ko\.(xz|zst|gz)$/.ko/' "$order"
    fi
    cp "$kx/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/" 2>/dev/null || true
    depmod -b "$root" "$kver"
    say "  $(wc -l <"$order") modules: $(sed 's#.*/##; s#\.ko$##' "$order" | tr '\n' ' ')"

    say "mount.nfs from $(basename "$ncdeb") + shared libraries"
    install -m 0755 "$ncx/sbin/mount.nfs" "$root/sbin/mount.nfs"
    for a in mount.nfs4 umount.nfs umount.nfs4; do ln -sf mount.nfs "$root/sbin/$a"; done
    local lib libs
    libs=$(ldd "$ncx/sbin/mount.nfs") || die "ldd mount.nfs failed"
    if grep -q 'not found' <<<"$libs"; then
        die "mount.nfs needs libraries missing on this host: $(grep 'not found' <<<"$libs" | tr -s ' \t' ' ')"
    fi
    for lib in $(awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' <<<"$libs"); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    # merged-/usr hosts resolve /lib/x86_64-linux-gnu; make both paths work
    if [ -d "$root/lib/x86_64-linux-gnu" ] && [ ! -e "$root/usr/lib/x86_64-linux-gnu" ]; then
        mkdir -p "$root/usr/lib"
        ln -s ../../lib/x86_64-linux-gnu "$root/usr/lib/x86_64-linux-gnu"
    fi
    say "  $(awk '/=> \// { print $1 }' <<<"$libs" | tr '\n' ' ')"

    say "guest /etc"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
    printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\nprotocols: files\nrpc: files\n' \
        >"$root/etc/nsswitch.conf"
    printf '127.0.0.1 localhost\n10.0.2.15 lab-guest\n10.0.2.2 labhost\n' >"$root/etc/hosts"
    for a in netconfig services protocols rpc; do
        [ -f "/etc/$a" ] && cp "/etc/$a" "$root/etc/$a"
    done
    [ -f "$root/etc/netconfig" ] || die "/etc/netconfig missing on host (libtirpc-common)"
    ln -sf /proc/mounts "$root/etc/mtab"
    : >"$root/etc/nfs.conf"
    : >"$root/etc/fstab"

    say "compiling labtool (gcc -static)"
    gcc -static -O2 -Wall -o "$LAB_CACHE/build/labtool" "$LAB_DIR/labtool.c" ||
        die "labtool build failed"
    install -m 0755 "$LAB_CACHE/build/labtool" "$root/bin/labtool"

    install -m 0755 "$LAB_DIR/guest-init.sh" "$root/init"
    mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true

    say "writing initramfs"
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
        cpio -o -H newc -R 0:0 --quiet | gzip -1 -n) >"$LAB_CACHE/initrd-base.img.tmp"
    mv "$LAB_CACHE/initrd-base.img.tmp" "$LAB_CACHE/initrd-base.img"
    cp "$kx/boot/vmlinuz-$kver" "$LAB_CACHE/vmlinuz"
    echo "$kver" >"$LAB_CACHE/kernel-version"
    echo "$stamp" >"$LAB_CACHE/stamp"
    rm -rf "$LAB_CACHE/x" # extracted packages (~150 MiB); the .debs stay cached
    t1=$(now)
    say "prepare: done in $(elapsed "$t0" "$t1") s: kernel $kver, initramfs $(du -h "$LAB_CACHE/initrd-base.img" | cut -f1)"
}

# -------------------------------------------------------------------- run ---

cmd_run() {
    local server=127.0.0.1 port="" export_path=/ scenario="$LAB_DIR/scenarios/foundation.sh"
    local timeout=600 vers=4.1,4.2
    local -A actions=()
    while [ $# -gt 0 ]; do
        case "$1" in
        --server) server=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --export) export_path=$2; shift 2 ;;
        --scenario) scenario=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --on-restart) actions[restart]=$2; shift 2 ;;
        --host-action)
            [[ "$2" =~ ^[A-Za-z0-9_-]+= ]] || die "--host-action wants NAME=CMD, got: $2"
            actions[${2%%=*}]=${2#*=}
            shift 2
            ;;
        --vers) vers=$2; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown run option: $1 (see --help)" ;;
        esac
    done
    case "$server" in
    *:*) [ -n "$port" ] || port=${server##*:}; server=${server%:*} ;;
    esac
    port=${port:-2049}
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port: $port"
    [[ "$timeout" =~ ^[0-9]+$ ]] || die "bad timeout: $timeout"
    [ -f "$scenario" ] || die "no scenario file: $scenario"
    local guest_server=$server
    case "$server" in 127.* | localhost | ::1) guest_server=10.0.2.2 ;; esac

    if [ ! -s "$LAB_CACHE/initrd-base.img" ] || [ ! -s "$LAB_CACHE/vmlinuz" ]; then
        say "no prepared lab in $LAB_CACHE; running prepare first"
        cmd_prepare
    fi
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run lab.sh prepare"

    if ! timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${server/localhost/127.0.0.1}" "$port" 2>/dev/null; then
        say "warning: nothing accepts TCP connections on $server:$port (is the server running?)"
    fi

    local run_id rundir
    run_id="$(date +%Y%m%d-%H%M%S)-$$"
    rundir="$LAB_CACHE/runs/$run_id"
    # keep the 20 most recent run directories
    mkdir -p "$LAB_CACHE/runs"
    find "$LAB_CACHE/runs" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | LC_ALL=C sort -r |
        tail -n +20 | while read -r old; do rm -rf "$old"; done
    mkdir -p "$rundir/overlay/lab"
    install -m 0755 "$scenario" "$rundir/overlay/lab/scenario.sh"
    # the step plumbing the scenarios source from next to themselves
    install -m 0644 "$LAB_DIR/scenarios/lib.sh" "$rundir/overlay/lab/lib.sh"
    {
        printf 'LAB_SERVER=%q\nLAB_PORT=%q\nLAB_EXPORT=%q\nLAB_VERS=%q\n' \
            "$guest_server" "$port" "$export_path" "$vers"
        printf 'LAB_RUN_ID=%q\nLAB_HOST_RESTART=%q\nLAB_HOST_ACTIONS=%q\n' "${run_id//-/}" \
            "$([ -n "${actions[restart]:-}" ] && echo 1 || echo 0)" "${!actions[*]}"
        echo 'SERVER=$LAB_SERVER PORT=$LAB_PORT EXPORT=$LAB_EXPORT VERS=$LAB_VERS'
        echo 'export LAB_SERVER LAB_PORT LAB_EXPORT LAB_VERS LAB_RUN_ID LAB_HOST_RESTART LAB_HOST_ACTIONS SERVER PORT EXPORT VERS'
    } >"$rundir/overlay/lab/env"
    (cd "$rundir/overlay" && find . -mindepth 1 | LC_ALL=C sort |
        cpio -o -H newc -R 0:0 --quiet | gzip -1 -n) >"$rundir/overlay.img"
    cat "$LAB_CACHE/initrd-base.img" "$rundir/overlay.img" >"$rundir/initrd.img"

    local log="$rundir/console.log" hostlog="$rundir/host-actions.log"
    : >"$log"
    : >"$hostlog"
    # a per-run NFSv4 client identity, so parallel runs do not share state
    local uniq
    uniq=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
    local append="console=ttyS0 quiet panic=-1 rdinit=/init nfs.nfs4_unique_id=lab-$uniq"
    local qemu=(qemu-system-x86_64 -accel tcg -cpu max -m "${LAB_MEM:-1024}" -smp "${LAB_SMP:-1}"
        -nographic -no-reboot
        -kernel "$LAB_CACHE/vmlinuz" -initrd "$rundir/initrd.img" -append "$append"
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0)
    say "run $run_id: server $server:$port (guest sees $guest_server:$port), export $export_path, vers $vers, scenario $(basename "$scenario"), timeout ${timeout}s"
    say "console log: $log"
    printf '%q ' "${qemu[@]}" >"$rundir/qemu-cmdline"

    local fifo="$rundir/console.fifo" infifo="$rundir/console-in.fifo" infd
    mkfifo "$fifo" "$infifo"
    # The guest's serial input: host-action answers are written here. Opened
    # read-write so that neither side blocks and QEMU never sees EOF.
    exec {infd}<>"$infifo"
    local t_start t_first="" t_end
    t_start=$(now)
    "${qemu[@]}" <&"$infd" >"$fifo" 2>&1 &
    local qpid=$!
    (
        exec </dev/null >/dev/null 2>&1
        s=0
        while [ "$s" -lt "$timeout" ] && kill -0 "$qpid"; do sleep 1; s=$((s + 1)); done
        if kill -0 "$qpid"; then
            touch "$rundir/timed-out"
            kill "$qpid"; sleep 2; kill -9 "$qpid"
        fi
    ) &
    local wpid=$!
    trap 'kill "$qpid" "$wpid" 2>/dev/null || true' EXIT INT TERM

    local line pass=0 fail=0 skip=0 ended=0 nactions=0 current="" words name cmd rc a
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        # firmware/terminal escape sequences (the first console line has some)
        [[ "$line" != *$'\e'* ]] || line=$(printf '%s' "$line" | sed 's/\x1b\[[?0-9;]*[a-zA-Z]//g; s/\x1b[a-zA-Z]//g')
        printf '%s\n' "$line" >>"$log"
        case "$line" in
        PASS\ * | FAIL\ * | SKIP\ *)
            [ -n "$t_first" ] || t_first=$(now)
            case "$line" in PASS*) pass=$((pass + 1)) ;; FAIL*) fail=$((fail + 1)) ;; SKIP*) skip=$((skip + 1)) ;; esac
            printf '%s\n' "$line"
            ;;
        INFO\ *) printf '%s\n' "$line" ;;
        STEP-START\ *) current=${line#STEP-START } ;;
        "@@LAB-HOST "*)
            read -r -a words <<<"${line#@@LAB-HOST }"
            name=${words[0]:-}
            nactions=$((nactions + 1))
            rc=0
            for a in "${words[@]:1}"; do
                [[ "$a" =~ ^[A-Za-z0-9._/=:,+-]+$ ]] || rc=126
            done
            cmd=${actions[$name]:-}
            if [ -z "$name" ] || [ -z "$cmd" ]; then
                say "host action: '$name' requested but no --host-action $name=... given; answering 127"
                echo "=== #$nactions $name: no such host action" >>"$hostlog"
                rc=127
            elif [ "$rc" = 126 ]; then
                say "host action: $name: refusing arguments with odd characters: ${words[*]:1}"
                echo "=== #$nactions $name: refused arguments: ${words[*]:1}" >>"$hostlog"
            else
                say "host action #$nactions: $name ${words[*]:1}"
                echo "=== #$nactions $name at $(date +%T.%N): $cmd -- ${words[*]:1}" >>"$hostlog"
                LAB_RUN_ID=${run_id//-/} LAB_ACTION=$name timeout 120 bash -c "$cmd" "lab-host-$name" "${words[@]:1}" \
                    </dev/null >>"$hostlog" 2>&1 || rc=$?
                echo "=== #$nactions $name exit status $rc at $(date +%T.%N)" >>"$hostlog"
                [ "$rc" = 0 ] || say "host action: $name failed with status $rc (see $hostlog)"
            fi
            echo "@@LAB-HOST $name done (status $rc)" >>"$log"
            printf '@@LAB-HOST-DONE %s %s\n' "$name" "$rc" >&"$infd" || true
            ;;
        LAB-END*) ended=1 ;;
        esac
    done <"$fifo"
    local qrc=0
    wait "$qpid" || qrc=$?
    exec {infd}>&-
    kill "$wpid" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true
    trap - EXIT INT TERM
    t_end=$(now)

    local verdict=0
    if [ -f "$rundir/timed-out" ]; then
        echo "FAIL lab-timeout: the whole run exceeded ${timeout}s${current:+ during step $current}; QEMU killed"
        fail=$((fail + 1))
    fi
    [ "$ended" = 1 ] || { say "the scenario did not reach its LAB-END marker (qemu exit status $qrc)"; verdict=1; }
    [ "$fail" = 0 ] || verdict=1
    [ "$pass" -gt 0 ] || { say "no step passed"; verdict=1; }
    local first=never
    [ -z "$t_first" ] || first="$(elapsed "$t_start" "$t_first") s"
    say "boot to first step: $first; whole run: $(elapsed "$t_start" "$t_end") s"
    say "console log: $log"
    [ "$nactions" = 0 ] || say "host actions log: $hostlog"
    echo "lab: $pass passed, $fail failed, $skip skipped"
    return "$verdict"
}

case "${1:-}" in
prepare) shift; cmd_prepare "$@" ;;
run) shift; cmd_run "$@" ;;
-h | --help | help | "") sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
*) die "unknown command: $1 (prepare | run)" ;;
esac

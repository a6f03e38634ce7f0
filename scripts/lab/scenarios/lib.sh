# Shared plumbing of the step scenarios (foundation.sh, pnfs-recall.sh,
# deleg.sh), sourced by them under busybox ash. `lab.sh run` installs it as
# /lab/lib.sh next to /lab/scenario.sh; a scenario sources it with
#   . "$(dirname "$0")/lib.sh"
# before its own settings, so it may override anything set here.
#
# A scenario defines step_* functions, then calls `scenario_begin "$@"` and
# `run_step NAME TIMEOUT FUNCTION [ARGS...]` once per step. Each step runs as
# `timeout -s KILL TIMEOUT sh $SELF __call FUNCTION ARGS` with its output
# captured in $ST/log.NAME, so a hung NFS call cannot stall the scenario.
# Inside a step: `fail MSG` ends it with FAIL, `skip MSG` with SKIP, `info
# MSG` adds an INFO line, `check NAME OK|FAIL [WHY]` a sub-result, `summary
# TEXT` what the step's PASS (or FAIL) line says after its name.

SELF=$0
M=/mnt
SERVER=${LAB_SERVER:-10.0.2.2}
PORT=${LAB_PORT:-2049}
EXPORT=${LAB_EXPORT:-/}
VERS=${LAB_VERS:-4.1,4.2}
# the version that stays mounted (the last of $VERS)
V=${VERS##*,}
OPTS="vers=$V,hard,sec=sys,port=$PORT,retry=0"
MiB=1048576

fail() { echo "@@WHY $*"; exit 1; }
skip() { echo "@@WHY $*"; exit 77; }
info() { echo "@@INFO $*"; }
summary() { echo "@@SUMMARY $*"; }
# check NAME OK|FAIL [WHY]: a sub-result of the running step
check() { if [ "$2" = OK ]; then echo "@@CHECK PASS $1"; else echo "@@CHECK FAIL $1: $3"; fi; }
up() { cut -d' ' -f1 /proc/uptime; }
# secs T0 T1: seconds from uptime T0 to T1, one decimal
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
fsize() { stat -c %s "$1" 2>/dev/null; }

# mount line fields for $M, or empty
mount_line() { awk -v m="$M" '$2 == m { l = $0 } END { print l }' /proc/mounts; }
mnt() { mount.nfs4 "$SERVER:$EXPORT" "$M" -o "$OPTS"; }
need_mount() { case "$(mount_line)" in *" nfs4 "*) ;; *) fail "no NFS mount on $M" ;; esac; }
# mountstats block of $M
stats() { awk -v m="$M" '$1 == "device" { inmnt = ($5 == m) } inmnt' /proc/self/mountstats; }
# the layout driver of $M (mountstats' pnfs=..., e.g. LAYOUT_FLEX_FILES)
pnfs_driver() { stats | sed -n 's/.*pnfs=\([A-Za-z0-9_]*\).*/\1/p' | head -n1; }
# "READS WRITES": the pnfs_read and pnfs_write counters of $M (the last two
# of mountstats' events: line; batches the layout driver took)
pnfs_events() { stats | awk '$1 == "events:" { print $(NF-1), $NF; exit }'; }
# op count of an NFS operation (e.g. COPY) in the mountstats of $M
op_count() { stats | awk -v op="$1:" '$1 == op { n = $2 } END { print n + 0 }'; }
# bytes_not FILE OFFSET LEN CHARS: how many bytes of the range are not in CHARS
bytes_not() { dd if="$1" bs=64k skip=$(($2 / 65536)) count=$(($3 / 65536)) 2>/dev/null | tr -d "$4" | wc -c; }

# host NAME [ARGS]: asks the host runner to run action NAME and waits for
# its answer; returns the action's exit status (124 when no answer came).
host() {
    name=$1
    echo "@@LAB-HOST $*" >/dev/console
    end=$(($(date +%s) + ${HOST_WAIT:-150}))
    while [ "$(date +%s)" -lt "$end" ]; do
        line=
        read -r -t 5 line </dev/console || continue
        set -- $line
        [ "${1:-}" = "@@LAB-HOST-DONE" ] && [ "${2:-}" = "$name" ] && return "${3:-1}"
    done
    return 124
}
host_ok() { host "$@" || fail "host action '$*' failed with status $?"; }

# scenario_begin "$@": called once the step functions are defined. In a
# step's own process (__call FUNCTION ARGS) it runs that function and exits
# with its status; in the scenario's, it makes $ST and $M and turns the
# console echo off (the runner answers host actions on the console:
# "@@LAB-HOST-DONE ..." must not tear our output lines).
scenario_begin() {
    if [ "${1:-}" = __call ]; then
        shift
        "$@"
        exit $?
    fi
    mkdir -p "$ST" "$M"
    stty -F /dev/console -echo 2>/dev/null
}

# run_step NAME TIMEOUT FUNCTION [ARGS...]: one PASS/FAIL/SKIP line for NAME,
# after the step's INFO and sub-check lines; a failing step's own output
# follows its FAIL line, indented with "  | ".
run_step() {
    name=$1 tmo=$2
    shift 2
    log="$ST/log.$name"
    echo "STEP-START $name"
    t0=$(up)
    timeout -s KILL "$tmo" sh "$SELF" __call "$@" >"$log" 2>&1 </dev/null
    rc=$?
    t1=$(up)
    why=$(sed -n 's/^@@WHY //p' "$log" | tail -n1)
    sum=$(sed -n 's/^@@SUMMARY //p' "$log" | tail -n1)
    sed -n "s/^@@INFO /INFO $name: /p; s/^@@CHECK //p" "$log"
    case $rc in
    0) echo "PASS $name${sum:+: $sum}" ;;
    77) echo "SKIP $name: ${why:-skipped}" ;;
    *)
        [ $rc = 137 ] && why="timed out after ${tmo}s (killed)"
        echo "FAIL $name: ${why:-exit status $rc}${sum:+ ($sum)}"
        grep -v '^@@' "$log" | tail -n 20 | sed 's/^/  | /'
        ;;
    esac
    echo "STEP-TIME $name $(secs "$t0" "$t1")s"
}

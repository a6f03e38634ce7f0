#!/usr/bin/env bash
# Runs the compound_decode fuzz target for SECONDS (default 60) and prints
# libFuzzer's final stats line. Extra arguments go to libFuzzer, e.g.
#
#     fuzz/run.sh 720 -jobs=1
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, -Cpasses=sancov);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Install the tool
# once with `cargo install cargo-fuzz`. FUZZ_TARGET=compound_roundtrip or
# FUZZ_TARGET=control_decode picks another target.
#
# New inputs go to fuzz/corpus/<target> (kept between runs, gitignored); the
# committed seeds in fuzz/seeds are read as extra corpus; crashes land in
# fuzz/artifacts/<target> (cargo-fuzz's default artifact prefix). The full
# log is fuzz/artifacts/<target>/last-run.log.
set -uo pipefail

secs=${1:-60}
shift || true
target=${FUZZ_TARGET:-compound_decode}
fuzz_dir=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz_dir"

corpus=corpus/$target
artifacts=artifacts/$target
mkdir -p "$corpus" "$artifacts"
log=$artifacts/last-run.log
# With -jobs/-workers libFuzzer writes each worker's output to fuzz-<n>.log in
# the current directory; run from the artifacts folder so they land there.
rm -f "$artifacts"/fuzz-*.log

(
    cd "$artifacts" &&
        RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir "$fuzz_dir" "$target" \
            "$fuzz_dir/$corpus" "$fuzz_dir/seeds" -- \
            -max_total_time="$secs" -max_len=65536 "$@"
) 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Stats come from the worker logs when -jobs/-workers was given.
shopt -s nullglob
stats_from=("$artifacts"/fuzz-*.log)
[ ${#stats_from[@]} -eq 0 ] && stats_from=("$log")
echo "---- final stats ($target, exit $rc) ----"
for f in "${stats_from[@]}"; do
    grep -E '^#[0-9]+[[:space:]]+(DONE|INITED|NEW|REDUCE|pulse)' "$f" | tail -n 1
    grep -E '^Done [0-9]+ runs in' "$f" | tail -n 1
done
exit "$rc"

#!/usr/bin/env bash
# Runs the fuzz targets under libFuzzer with AddressSanitizer, SECONDS each (default 60), and prints one line per
# target: seconds, executions, executions per second, new inputs, and OK or the crash input's path.
#   bash Tests/Fuzz/run.sh [SECONDS] [TARGET...]
# Builds into .build-fuzz (git ignores it). The kept corpus, Tests/Fuzz/corpus/TARGET, is read; what the fuzzer
# finds goes to a temporary folder. A crash input belongs in the kept corpus once its cause is fixed.
# Leak detection is off: the Swift runtime's caches of type metadata and lazily made globals live for the
# process and read as leaks; memory errors (overflows, use after free) are what AddressSanitizer checks here.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(http-parser verify json stringify delivery config encoding)

swift build -c release --scratch-path .build-fuzz --product turnstile-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING 2>&1 | grep -Ev "Cannot export local symbol|^\[" || true
binary=.build-fuzz/release/turnstile-fuzz
[ -x "$binary" ] || { echo "fuzz: the fuzzing build failed" >&2; exit 1; }

work=$(mktemp -d)
status=0
for target in "${targets[@]}"; do
    mkdir -p "$work/$target"
    set +e
    ASAN_OPTIONS=detect_leaks=0 SWIFT_BACKTRACE=enable=no TURNSTILE_FUZZ_TARGET=$target "$binary" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -detect_leaks=0 \
        -print_final_stats=1 -artifact_prefix="$work/$target-" "$work/$target" "Tests/Fuzz/corpus/$target" \
        >"$work/$target.log" 2>&1
    code=$?
    set -e
    runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$work/$target.log" | grep -oE "[0-9]+$" | tail -1 || echo 0)
    found=$(ls "$work/$target" | wc -l)
    crash=$(ls "$work/$target"-* 2>/dev/null | head -1 || true)
    verdict="ok"
    if [ $code -ne 0 ] || [ -n "$crash" ]; then
        verdict="CRASH ${crash:-see log} (exit $code)"
        status=1
        tail -40 "$work/$target.log" >&2
    fi
    printf "fuzz: %-12s %5s s %10s runs %9s/s %5s new inputs  %s\n" "$target" "$seconds" "$runs" "$((runs / seconds))" "$found" "$verdict"
done
echo "fuzz: logs and new inputs in $work"
exit $status

#!/usr/bin/env bash
# run.sh DIR: runs each fuzz harness DIR/fuzz_<target> for FUZZ_SECONDS
# (default 60), one after the other, starting from the seeds kept in
# tests/fuzz/corpus/<target>/ (read only: what the run finds goes to a
# scratch folder). Prints one PASS or FAIL line per target with its
# executions, and closes with "N passed, N failed". A crash, sanitizer
# report, leak or timeout is a finding: its input is kept as
# build-fuzz/findings/<target>-crash-..., reproducible with
# DIR/fuzz_<target> FILE. FUZZ_TARGETS limits the run to some targets.
set -u
cd "$(dirname "$0")/../.."
DIR=${1:-build-fuzz/fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-60}
FINDINGS=build-fuzz/findings
mkdir -p "$FINDINGS"
passed=0; failed=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for bin in "$DIR"/fuzz_*; do
    [ -x "$bin" ] || continue
    t=${bin##*/fuzz_}
    if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $t "* ]]; then continue; fi
    mkdir -p "$work/$t"
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    TMPDIR="$work" "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$FINDINGS/$t-" "$work/$t" "tests/fuzz/corpus/$t" \
        >"$work/$t.log" 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$work/$t.log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "PASS: fuzz $t: ${runs:-?} executions in ${SECONDS_EACH} s, ${cov:-cov: ?}, no finding"
        passed=$((passed + 1))
    else
        echo "FAIL: fuzz $t: finding after ${runs:-?} executions (exit $rc):"
        grep -E 'ERROR:|runtime error|SUMMARY|Test unit written|==[0-9]+==' "$work/$t.log" | head -12 | sed 's/^/    /'
        cp "$work/$t.log" "$FINDINGS/$t.log"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Runs every test program (build/tests/test_*) and end-to-end script
# (tests/e2e_*.sh), each printing PASS:/FAIL:/SKIP: lines, and closes with
# "N passed, N failed". A program that crashes or exits non-zero without a
# FAIL line counts as one failure.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=${BIN:-bin}
export BUILD BIN
export MDI_SHARED=${MDI_SHARED:-$(cd .. && pwd)/shared}
passed=0; failed=0; skipped=0
log=$(mktemp -d)
only=${TESTS:-}
for t in "$BUILD"/tests/test_* tests/e2e_*.sh; do
    [ -e "$t" ] || continue
    name=$(basename "$t")
    if [ -n "$only" ]; then # TESTS=a|b: names containing a or b
        keep=0
        IFS='|' read -ra pats <<<"$only"
        for p in "${pats[@]}"; do [[ "$name" == *$p* ]] && keep=1; done
        [ $keep -eq 1 ] || continue
    fi
    echo "== $name"
    start=$(date +%s)
    "$t" >"$log/$name.out" 2>"$log/$name.err"
    rc=$?
    p=$(grep -c '^PASS:' "$log/$name.out")
    f=$(grep -c '^FAIL:' "$log/$name.out")
    s=$(grep -c '^SKIP:' "$log/$name.out")
    grep -E '^(FAIL|SKIP|INFO):' "$log/$name.out" | sed 's/^/   /'
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "   FAIL: $name exited with status $rc"; tail -n 20 "$log/$name.err" | sed 's/^/     /'
        f=1
    elif [ "$f" -ne 0 ]; then
        tail -n 20 "$log/$name.err" | sed 's/^/     /'
    fi
    echo "   $p passed, $f failed, $s skipped ($(( $(date +%s) - start ))s)"
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
rm -rf "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# e2e_fuzz_replay: every fuzz harness (tests/fuzz/fuzz_<target>.c), built
# without libFuzzer as $BUILD/fuzz-replay/replay_<target>, run over its seed
# corpus and the inputs of past findings (tests/fuzz/regressions/<target>/).
# Under make asan / make check this is the sanitizers' replay of every
# finding; make fuzz explores further.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
for bin in "$BUILD"/fuzz-replay/replay_*; do
    [ -x "$bin" ] || { echo "FAIL: fuzz replay: no replay programs in $BUILD/fuzz-replay"; exit 1; }
    t=${bin##*/replay_}
    out=$(TMPDIR=${TMPDIR:-/tmp} "$bin" "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t" 2>&1)
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "PASS: fuzz replay $t: $(echo "$out" | tail -1)"
    else
        echo "FAIL: fuzz replay $t: exit $rc"
        echo "$out" | tail -20 >&2
    fi
done

#!/usr/bin/env bash
# e2e_engine: the scheduler on a 3-node ring (stories260K): test_engine's
# scenarios with MDI_ENGINE_NODES set: requests from several threads at
# different times on 3 slots, each with the tokens it gets alone and
# standalone (greedy and sampled, prompts of several prefill chunks); a
# full queue; a cancelled request's slot (RELEASE round the ring) going to
# the queued one; stop; closing with requests running.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh
BUILD=${BUILD:-build}

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_engine: $STORIES missing"; exit 0; fi
CK="$TMP/ck/stories260K"
if ! prepare "$STORIES" "$CK" 3; then
    fail "e2e_engine prepare stories260K" "$(tail -3 "$TMP/prepare.log")"; exit 1
fi
cfg="$TMP/cfg3.json"
mkcfg "$cfg" 2
ok=0
for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
check "e2e_engine 3 nodes: secondaries start" $ok "$(cat "$TMP"/sec*.log)"
MDI_ENGINE_NODES="$cfg" MDI_ENGINE_CKPT="$CK" run_with_timeout 120 "$BUILD/tests/test_engine" \
    >"$TMP/engine.out" 2>"$TMP/engine.log"
rc=$?
cat "$TMP/engine.out"
if [ $rc -ne 0 ] && ! grep -q '^FAIL:' "$TMP/engine.out"; then
    fail "e2e_engine: test_engine on the ring exit $rc" "$(tail -5 "$TMP/engine.log")"
fi
stop_secondaries
check "e2e_engine 3 nodes: secondaries exit on SIGTERM" $? "a secondary outlived SIGTERM"

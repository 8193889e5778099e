#!/usr/bin/env bash
# e2e_startup: nodes started in any order. The starter started first waits
# for secondaries that come up 3 s later, and its run equals the standalone
# one; with no secondary at all and a short --connect-timeout it ends in
# bounded time with one line naming the silent node.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_startup: $STORIES missing"; exit 0; fi
CK="$TMP/ck/stories260K"
prepare "$STORIES" "$CK" 1 3 || { fail "e2e_startup prepare" "$(tail -3 "$TMP/prepare.log")"; exit 1; }
COMMON=(--ckpt "$CK" --prompt "Once upon a time" --n-tokens 24 --temperature 0 --quiet --n-threads 1 --timeout 5)

run_with_timeout 30 "$BIN/starter" "${COMMON[@]}" --output "$TMP/solo.json" 2>>"$TMP/starter.log"
check "e2e_startup standalone run" $? "$(tail -2 "$TMP/starter.log")"

# ---- starter first, secondaries 3 s later ----
cfg="$TMP/cfg3.json"
mkcfg "$cfg" 2
t0=$(date +%s.%N)
run_with_timeout 60 "$BIN/starter" "${COMMON[@]}" --nodes-config "$cfg" --connect-timeout 30 -v \
    --output "$TMP/ring.json" >/dev/null 2>"$TMP/late.log" &
starter=$!
sleep 3
start_secondary "$cfg" 1 && start_secondary "$cfg" 0
wait $starter
rc=$?
dt=$($PY -c "print('%.1f' % ($(date +%s.%N) - $t0))")
check "e2e_startup secondaries started 3 s after the starter: the run succeeds (in $dt s)" $rc \
    "exit $rc: $(tail -3 "$TMP/late.log")"
grep -q "waiting up to 30 s for secondary 0 (127.0.0.1:${HTTP_PORT[0]}), secondary 1 (127.0.0.1:${HTTP_PORT[1]})" \
    "$TMP/late.log"
check "e2e_startup the starter says once which nodes it waits for" $? "$(grep -c waiting "$TMP/late.log") lines: $(head -3 "$TMP/late.log")"
[ "$(grep -c 'waiting up to' "$TMP/late.log")" = 1 ] && grep -q "secondary 1 (127.0.0.1:${HTTP_PORT[1]}) answers" "$TMP/late.log"
check "e2e_startup -v: each node's answer reported" $? "$(grep -E 'waiting|answers' "$TMP/late.log" | head -4)"
[ $rc -eq 0 ] && out=$(same_ids "$TMP/solo.json" "$TMP/ring.json")
check "e2e_startup late start: greedy tokens equal standalone" $? "${out:-run failed}"
stop_secondaries

# ---- no secondary at all: a clean error in bounded time ----
t0=$(date +%s.%N)
run_with_timeout 15 "$BIN/starter" "${COMMON[@]}" --nodes-config "$cfg" --connect-timeout 2 \
    >/dev/null 2>"$TMP/none.log"
rc=$?
dt=$($PY -c "print('%.1f' % ($(date +%s.%N) - $t0))")
if [ $rc -eq 0 ]; then fail "e2e_startup no secondary" "the starter succeeded"
elif [ $rc -ge 124 ]; then fail "e2e_startup no secondary" "no end within 15 s (hang)"
elif ! grep -qE "secondary 0 \(127.0.0.1:${HTTP_PORT[0]}\), secondary 1 \(127.0.0.1:${HTTP_PORT[1]}\): unreachable: no answer within 2 s" "$TMP/none.log"; then
    fail "e2e_startup no secondary" "message: $(tail -2 "$TMP/none.log")"
else pass "e2e_startup no secondary, --connect-timeout 2: clean error naming both nodes after $dt s"; fi
$PY -c "import sys; sys.exit(0 if $dt < 8 else 1)"
check "e2e_startup the error comes within the timeout's bounds ($dt s)" $? "took $dt s"

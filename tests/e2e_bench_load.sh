#!/usr/bin/env bash
# e2e_bench_load: bin/bench_load against a fake server (tests/fake_openai.py)
# whose streams are right or wrong on purpose: right ones (ours' shape and
# llama-server's, one chunk carrying two tokens) count every token and no
# error; a stream one token short, cut off, with more chunks than its usage
# says, with an error event, or a 500 is an error every time, so that the
# figures can not count what was not delivered; a warm-up that fails stops
# the run (status 2).
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

[ -x "$BIN/bench_load" ] || { fail "e2e_bench_load" "$BIN/bench_load not built"; exit 1; }
$PY tests/fake_openai.py "$TMP/port" >"$TMP/fake.log" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
URL=http://127.0.0.1:$(cat "$TMP/port")

# run MODE EXPECTED_STATUS EXPECTED_ERRORS EXPECTED_TOKENS [extra args]
run() {
    local mode=$1 want_rc=$2 want_err=$3 want_tok=$4; shift 4
    rm -f "$TMP/$mode.csv"
    "$BIN/bench_load" --url "$URL" --concurrency 1,2 --requests 2 --max-tokens 4 --prompt "$mode" \
        --engine fake --model-label "$mode" --csv "$TMP/$mode.csv" "$@" >"$TMP/$mode.out" 2>"$TMP/$mode.err"
    local rc=$?
    if [ "$rc" != "$want_rc" ]; then
        fail "e2e_bench_load $mode" "status $rc, expected $want_rc: $(tail -n 3 "$TMP/$mode.err")"; return
    fi
    [ "$want_rc" = 2 ] && { pass "e2e_bench_load $mode: the warm-up failure stops the run"; return; }
    # concurrency 1 and 2, 2 requests per client: 2 + 4 requests
    local got
    got=$(awk -F, 'NR > 1 {r += $7; e += $8; t += $9} END {print r, e, t}' "$TMP/$mode.csv")
    if [ "$got" = "6 $want_err $want_tok" ]; then
        pass "e2e_bench_load $mode: 6 requests, $want_err errors, $want_tok tokens"
    else
        fail "e2e_bench_load $mode" "requests errors tokens: $got, expected 6 $want_err $want_tok; $(head -c 300 "$TMP/$mode.err")"
    fi
}
run ok 0 0 24
run llama 0 0 24
run short 1 6 0 --no-warmup
run cut 1 6 0 --no-warmup
run lie 1 6 0 --no-warmup
run errevent 1 6 0 --no-warmup
run http500 1 6 0 --no-warmup
run http500 2 0 0

# the CSV: a header, one row per concurrency, the model id from /v1/models when no label
"$BIN/bench_load" --url "$URL/" --concurrency 3 --requests 1 --max-tokens 2 --prompt ok --csv "$TMP/h.csv" \
    >"$TMP/h.out" 2>&1
check "e2e_bench_load CSV" "$( [ "$(head -n 1 "$TMP/h.csv" | cut -d, -f1-4)" = "engine,nodes,model,concurrency" ] &&
    [ "$(tail -n 1 "$TMP/h.csv" | cut -d, -f1-9)" = "server,1,fake,3,3,2,3,0,6" ]; echo $?)" \
    "$(cat "$TMP/h.csv")"

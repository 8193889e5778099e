#!/usr/bin/env bash
# e2e_serve: bin/starter --serve driven by OpenAI's official client
# (tests/serve_client.mjs), standalone and on a 3-node ring, stories260K:
#  - chat and completions, streamed and not: the parsed text equals the
#    model's greedy output from bin/starter --prompt (for chat: the
#    conversation rendered with the ChatML fallback stories260K gets);
#  - 8 concurrent streaming clients with --slots 4: each gets exactly what it
#    gets alone; queued requests start as slots free up;
#  - a client that disconnects mid-stream frees its slot (the queued one
#    starts); a full queue gives 429;
#  - each kind of bad request gets its error, and serving goes on;
#  - SIGTERM stops the service (and the ring) cleanly, exit 0;
#  - a secondary that dies: 503 naming it, /health 503, SIGTERM still stops.
# The service runs with MDI_API_PACE_US (1 ms after each token by default,
# PACE_US=N to change): stories260K is so fast that requests would otherwise
# leave their slots before queueing and disconnects can be watched.
# Needs node and tests/node_modules/openai (.ci/run): a SKIP line without.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_serve: $STORIES missing"; exit 0; fi
if ! command -v node >/dev/null || [ ! -d tests/node_modules/openai ]; then
    echo "SKIP: e2e_serve: node or tests/node_modules/openai missing (see .ci/run)"; exit 0
fi
CK="$TMP/ck/stories260K"
if ! prepare "$STORIES" "$CK" 1 3; then
    fail "e2e_serve prepare stories260K" "$(tail -3 "$TMP/prepare.log")"; exit 1
fi
N=24
SLOTS=4
QUEUE=8    # 8 clients at once fit in the queue before the engine admits them
LONG=400   # tokens of a request that holds its slot (EOS ignored)
COMMON=(--temperature 0 --quiet --n-threads 1)

# ---- references: bin/starter's greedy output ----
printf 'Once upon a time\n\nThe little dog ran to the\n\nLily saw a big red ball. She\n\nTom was sad because\n\nOne day, a bird\n\nThe sun was\n\nSam and his mom went\n\nA girl named Sue\n' >"$TMP/prompts.txt"
"$BIN/starter" --ckpt "$CK" --prompt "FILE:$TMP/prompts.txt" --n-tokens $N --n-samples 8 "${COMMON[@]}" \
    --output "$TMP/ref.json" 2>>"$TMP/starter.log" || { fail "e2e_serve reference" "$(tail -3 "$TMP/starter.log")"; exit 1; }
# The chat fallback (ChatML as text: stories260K has no template).
CHAT_PROMPT=$'<|im_start|>system\nYou tell stories.<|im_end|>\n<|im_start|>user\nTell me about a cat.<|im_end|>\n<|im_start|>assistant\n'
"$BIN/starter" --ckpt "$CK" --prompt "$CHAT_PROMPT" --n-tokens $N "${COMMON[@]}" \
    --output "$TMP/ref_chat.json" 2>>"$TMP/starter.log" || { fail "e2e_serve chat reference" "$(tail -3 "$TMP/starter.log")"; exit 1; }
$PY - "$TMP/ref.json" "$TMP/ref_chat.json" "$N" "$SLOTS" "$QUEUE" "$LONG" >"$TMP/refs.json" <<'PYEOF'
import json, sys
ref = json.load(open(sys.argv[1]))["samples"]
chat = json.load(open(sys.argv[2]))["samples"][0]
print(json.dumps({
    "n_tokens": int(sys.argv[3]), "slots": int(sys.argv[4]), "queue": int(sys.argv[5]), "long_tokens": int(sys.argv[6]),
    "prompts": [s["prompt"] for s in ref], "texts": [s["text"] for s in ref],
    "n_generated": [len(s["generated_ids"]) for s in ref],
    "chat": {"messages": [{"role": "system", "content": "You tell stories."},
                          {"role": "user", "content": "Tell me about a cat."}],
             "text": chat["text"], "n_generated": len(chat["generated_ids"])}}))
PYEOF

# start_service LOG ARGS...: bin/starter --serve on a free port, in the
# background; sets SERVE_PID and BASE once it printed its address.
start_service() {
    local log=$1; shift
    local port
    port=$(free_ports 1)
    MDI_API_PACE_US=${PACE_US:-1000} "$BIN/starter" --serve --ckpt "$CK" --port "$port" --slots $SLOTS --queue $QUEUE \
        --n-threads 1 "$@" \
        >"$log.out" 2>"$log" &
    SERVE_PID=$!
    PIDS="$PIDS $SERVE_PID"
    BASE="http://127.0.0.1:$port"
    for _ in $(seq 600); do
        grep -q "^serving .* on http://127.0.0.1:$port" "$log.out" 2>/dev/null && return 0
        kill -0 "$SERVE_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# The same, on new ports when the one picked free got taken meanwhile.
start_service_retry() {
    local attempt
    for attempt in 1 2 3; do
        start_service "$@" && return 0
        grep -q "already in use" "$1" || return 1
    done
    return 1
}

# stop_service LABEL: SIGTERM; it must exit 0 within 20 s.
stop_service() {
    kill -TERM "$SERVE_PID"
    local rc=124
    for _ in $(seq 200); do
        if ! kill -0 "$SERVE_PID" 2>/dev/null; then wait "$SERVE_PID"; rc=$?; break; fi
        sleep 0.1
    done
    check "e2e_serve $1 SIGTERM stops the service cleanly, exit 0" $rc "exit $rc: $(tail -3 "$2")"
}

client() { # LABEL SECTIONS
    run_with_timeout 240 node tests/serve_client.mjs "$BASE" "$TMP/refs.json" "$1" "$2"
}

# ---- standalone ----
if start_service_retry "$TMP/serve1.log"; then
    pass "e2e_serve standalone: the service starts and prints its address"
    client standalone basic,concurrent,disconnect,overflow,errors
    stop_service standalone "$TMP/serve1.log"
else
    fail "e2e_serve standalone: the service starts" "$(tail -5 "$TMP/serve1.log")"
fi

# ---- 3-node ring ----
if [ -n "${E2E_SERVE_NO_RING:-}" ]; then
    echo "SKIP: e2e_serve 3-node ring: E2E_SERVE_NO_RING set"
    exit 0
fi
cfg="$TMP/cfg3.json"
# (a port picked free may be taken by someone else before a node binds it:
# new ports, up to 3 times)
for attempt in 1 2 3; do
    mkcfg "$cfg" 2
    ok=0
    for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
    [ $ok -eq 0 ] && break
    stop_secondaries
done
check "e2e_serve 3 nodes: secondaries start" $ok "$(cat "$TMP"/sec*.log)"
if start_service_retry "$TMP/serve3.log" --nodes-config "$cfg"; then
    pass "e2e_serve 3 nodes: the service starts on the ring"
    client ring3 basic,concurrent,disconnect,overflow,errors
    stop_service ring3 "$TMP/serve3.log"
    for i in 0 1; do
        st=$(status_field $i state)
        [ "$st" = idle ]
        check "e2e_serve 3 nodes: secondary $i back to idle after the service stopped" $? "state $st"
    done
else
    fail "e2e_serve 3 nodes: the service starts on the ring" "$(tail -5 "$TMP/serve3.log")"
fi

# A node that dies, without failover (--failover-timeout 0; tests/e2e_serve_failover.sh
# covers failover): requests get 503 naming it, /health says so, and the
# service still stops on SIGTERM.
if start_service_retry "$TMP/serve3f.log" --nodes-config "$cfg" --failover-timeout 0; then
    kill -9 "$(sec_pid 1)"
    code=""
    for _ in $(seq 40); do
        code=$(curl -s -o "$TMP/fail.json" -w '%{http_code}' --max-time 30 "$BASE/v1/completions" \
            -H 'Content-Type: application/json' -d '{"prompt": "Once upon a time", "max_tokens": 8}')
        [ "$code" = 503 ] && break
        sleep 0.25
    done
    $PY -c "import json,sys; e=json.load(open(sys.argv[1]))['error']; sys.exit(0 if e['message'] and e['type'] else 1)" \
        "$TMP/fail.json" 2>/dev/null
    check "e2e_serve 3 nodes: after a secondary died, requests get 503 in OpenAI's error shape" \
        $(( $? | ($code != 503) )) "HTTP $code: $(cat "$TMP/fail.json")"
    h=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/health")
    [ "$h" = 503 ]
    check "e2e_serve 3 nodes: /health 503 once a node failed" $? "HTTP $h"
    grep -q "secondary 1" "$TMP/serve3f.log"
    check "e2e_serve 3 nodes: the failure names the node" $? "$(tail -3 "$TMP/serve3f.log")"
    kill -TERM "$SERVE_PID"
    gone=1
    for _ in $(seq 200); do kill -0 "$SERVE_PID" 2>/dev/null || { gone=0; break; }; sleep 0.1; done
    check "e2e_serve 3 nodes: after a node failure SIGTERM still stops the service" $gone "still running"
else
    fail "e2e_serve 3 nodes: the service starts again on the same secondaries" "$(tail -5 "$TMP/serve3f.log")"
fi
stop_secondaries
check "e2e_serve 3 nodes: secondaries exit on SIGTERM" $? "a secondary outlived SIGTERM"
exit 0

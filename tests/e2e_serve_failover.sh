#!/usr/bin/env bash
# e2e_serve_failover: bin/starter --serve on a 3-node ring (stories260K)
# losing its last secondary (kill -9), driven by OpenAI's official client
# (tests/serve_client.mjs, section failover):
#   1. two spares listed and started, the secondary killed while 4 clients
#      stream: all 4 complete with exactly the text they get without the
#      failure; /metrics counts one failover, /api/cluster shows it, with
#      spare 0's address in the failed node's place (its layers, running),
#      the failed node in no place, and spare 1 listed left, idle;
#   2. no spare, the killed node restarted: the same;
#   3. no spare and the node not back within --failover-timeout: the
#      service stays up answering 503 naming the node (/health too); once
#      the node is restarted the ring closes again and a request gets the
#      greedy text;
#   4. no node lost: the ring connection from secondary 0 to secondary 1
#      destroyed (ss -K; root and a kernel that allows it, else SKIP) while
#      4 clients stream: the diagnosis names no node, the ring closes again
#      with the same nodes, every client gets its text, /metrics and
#      /api/cluster count one failover, "the ring re-closed, no node
#      failed", and every place keeps its configured node.
# The service runs with MDI_API_PACE_US (20 ms after each token, PACE_US=N
# to change) so that the kill lands mid-stream.
# Needs node and tests/node_modules/openai (.ci/run): a SKIP line without.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_serve_failover: $STORIES missing"; exit 0; fi
if ! command -v node >/dev/null || [ ! -d tests/node_modules/openai ]; then
    echo "SKIP: e2e_serve_failover: node or tests/node_modules/openai missing (see .ci/run)"; exit 0
fi
CK="$TMP/ck/stories260K"
if ! prepare "$STORIES" "$CK" 1 3; then
    fail "e2e_serve_failover prepare stories260K" "$(tail -3 "$TMP/prepare.log")"; exit 1
fi
N=40
COMMON=(--temperature 0 --quiet --n-threads 1)

# ---- references: bin/starter's greedy output, alone ----
printf 'Once upon a time\n\nThe little dog ran to the\n\nLily saw a big red ball. She\n\nTom was sad because\n\nOne day, a bird\n\nThe sun was\n' >"$TMP/prompts.txt"
"$BIN/starter" --ckpt "$CK" --prompt "FILE:$TMP/prompts.txt" --n-tokens $N --n-samples 6 "${COMMON[@]}" \
    --output "$TMP/ref.json" 2>>"$TMP/starter.log" || { fail "e2e_serve_failover reference" "$(tail -3 "$TMP/starter.log")"; exit 1; }
$PY - "$TMP/ref.json" "$N" >"$TMP/refs.json" <<'PYEOF'
import json, sys
ref = json.load(open(sys.argv[1]))["samples"]
print(json.dumps({"n_tokens": int(sys.argv[2]), "slots": 4, "queue": 8, "long_tokens": 0,
                  "prompts": [s["prompt"] for s in ref], "texts": [s["text"] for s in ref],
                  "n_generated": [len(s["generated_ids"]) for s in ref]}))
PYEOF

# start_service LOG ARGS...: bin/starter --serve on a free port in the
# background; SERVE_PID and BASE once it printed its address.
start_service() {
    local log=$1; shift
    local port
    port=$(free_ports 1)
    MDI_API_PACE_US=${PACE_US:-20000} "$BIN/starter" --serve --ckpt "$CK" --port "$port" --slots 4 --queue 8 \
        --n-threads 1 --timeout 5 "$@" >"$log.out" 2>"$log" &
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

# stop_service LABEL LOG: SIGTERM; it must exit 0 within 20 s.
stop_service() {
    kill -TERM "$SERVE_PID"
    local rc=124
    for _ in $(seq 200); do
        if ! kill -0 "$SERVE_PID" 2>/dev/null; then wait "$SERVE_PID"; rc=$?; break; fi
        sleep 0.1
    done
    check "e2e_serve_failover $1: SIGTERM stops the service cleanly, exit 0" $rc "exit $rc: $(tail -3 "$2")"
}

# mkcfg_spare FILE N: 2 secondaries and N spares on free ports
# (SPARE_HTTP[j]).
mkcfg_spare() {
    mkcfg "$1" 2
    local p=($(free_ports $((2 * $2))))
    SPARE_HTTP=()
    for ((j = 0; j < $2; j++)); do SPARE_HTTP[$j]=${p[$((2 * j))]}; done
    $PY - "$1" "${p[@]}" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
p = [int(x) for x in sys.argv[2:]]
c["nodes"]["spare"] = [{"addr": "127.0.0.1", "communication": {"starter_addr": "127.0.0.1", "port": p[2 * j]},
                        "inference": {"port_in": p[2 * j + 1], "port_out": 1}} for j in range(len(p) // 2)]
json.dump(c, open(sys.argv[1], "w"))
PYEOF
}

# start_spare CFG J
start_spare() {
    "$BIN/secondary" "$1" --spare "$2" --cache-dir "$TMP/cache_spare$2" --n-threads 1 >>"$TMP/spare.log" 2>&1 &
    local pid=$!
    PIDS="$PIDS $pid"
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${SPARE_HTTP[$2]}/" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# restart_secondary CFG I: once the killed process is gone, the node again.
restart_secondary() {
    local old
    old=$(sec_pid "$2")
    for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.05; done
    start_secondary "$1" "$2"
}

client() { # LABEL SECTIONS [VAR=VALUE...]
    local label=$1 sections=$2; shift 2
    env "$@" timeout -k 2 240 node tests/serve_client.mjs "$BASE" "$TMP/refs.json" "$label" "$sections" |
        sed 's/^\(PASS\|FAIL\): e2e_serve /\1: e2e_serve_failover /'
}

# 1. a spare takes the place
cfg="$TMP/cfg_spare.json"
mkcfg_spare "$cfg" 2
ok=0
for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
for j in 0 1; do start_spare "$cfg" $j || ok=1; done
check "e2e_serve_failover spare: nodes start" $ok "$(cat "$TMP"/sec*.log "$TMP"/spare.log)"
if start_service "$TMP/serve_spare.log" --nodes-config "$cfg" --failover-timeout 20; then
    client spare: failover MDI_KILL_PID="$(sec_pid 1)"
    grep -q 'failover: secondary 1 .* replaced by spare 0' "$TMP/serve_spare.log"
    check "e2e_serve_failover spare: the failover logged (node, time lost)" $? "$(grep -i fail "$TMP/serve_spare.log" | head -3)"
    # The cluster view: the place's current node is spare 0, the dead
    # secondary in no place, spare 1 left to fail over to.
    curl -s --max-time 10 "$BASE/api/cluster" >"$TMP/cluster_spare.json"
    $PY - "$TMP/cluster_spare.json" "$(find "$CK" -path '*3nodes/manifest.json' | head -1)" "${HTTP_PORT[1]}" \
        "${SPARE_HTTP[0]}" "${SPARE_HTTP[1]}" >"$TMP/cluster_spare.out" 2>&1 <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
last = json.load(open(sys.argv[2]))["chunks"][-1]
dead, sp0, sp1 = ("127.0.0.1:" + p for p in sys.argv[3:6])
places = c["nodes"][1:]
p1 = places[1]
bad = []
if p1["addr"] != sp0 or p1["spare"] != 0 or p1["in_place_of"] != dead or p1["index"] != 1 \
        or p1["name"] != "spare 0 (in place of secondary 1)":
    bad.append("place 1 is not spare 0 in place of secondary 1")
if p1["state"] != "running" or p1["layers"] != [last["layer_begin"], last["layer_end"]] or not p1["rss_bytes"]:
    bad.append("spare 0 not running the last chunk's layers with its memory")
if any(n["addr"] == dead for n in places):
    bad.append("the failed node still in a place")
if [(s["index"], s["addr"], s["state"], s["used"]) for s in c["spares"]] != [(1, sp1, "idle", False)]:
    bad.append("spares left: not spare 1 idle")
if bad:
    print("; ".join(bad), json.dumps(c))
    sys.exit(1)
PYEOF
    check "e2e_serve_failover spare: /api/cluster shows spare 0 in secondary 1's place (layers, running), the failed node in no place, spare 1 left idle" \
        $? "$(cat "$TMP/cluster_spare.out")"
    grep -h 'failover: ' "$TMP/serve_spare.log" | sed 's/^.*failover: /INFO: e2e_serve_failover spare: /' | head -1
    stop_service spare "$TMP/serve_spare.log"
else
    fail "e2e_serve_failover spare: the service starts" "$(tail -5 "$TMP/serve_spare.log")"
fi
stop_secondaries
rm -f "$TMP"/sec*.log "$TMP"/spare.log

# ring_up CFG NAME: a configuration of 2 secondaries written to CFG, both
# started (checked as NAME).
ring_up() {
    mkcfg "$1" 2
    local ok=0 i
    for i in 0 1; do start_secondary "$1" $i || ok=1; done
    check "e2e_serve_failover $2: secondaries start" $ok "$(cat "$TMP"/sec*.log)"
}

# 2. no spare: the killed node restarted
cfg="$TMP/cfg_restart.json"
ring_up "$cfg" "restart"
if start_service "$TMP/serve_restart.log" --nodes-config "$cfg" --failover-timeout 20; then
    killed="$TMP/killed"
    rm -f "$killed"
    client restart: failover MDI_KILL_PID="$(sec_pid 1)" MDI_KILLED_FILE="$killed" >"$TMP/client_restart.out" &
    cl=$!
    for _ in $(seq 600); do [ -e "$killed" ] && break; kill -0 $cl 2>/dev/null || break; sleep 0.05; done
    ok=1
    [ -e "$killed" ] && { restart_secondary "$cfg" 1; ok=$?; }
    check "e2e_serve_failover restart: the killed node restarted" $ok "$(tail -3 "$TMP/sec1.log")"
    wait $cl
    cat "$TMP/client_restart.out"
    grep -q 'failover: secondary 1 .* replaced by the same node back' "$TMP/serve_restart.log"
    check "e2e_serve_failover restart: the failover logged" $? "$(grep -i fail "$TMP/serve_restart.log" | head -3)"
    stop_service restart "$TMP/serve_restart.log"
else
    fail "e2e_serve_failover restart: the service starts" "$(tail -5 "$TMP/serve_restart.log")"
fi
stop_secondaries
rm -f "$TMP"/sec*.log

# 3. no spare, the node not back in time: 503 naming it, then back
cfg="$TMP/cfg_back.json"
ring_up "$cfg" "back later"
if start_service "$TMP/serve_back.log" --nodes-config "$cfg" --failover-timeout 1; then
    kill -9 "$(sec_pid 1)"
    code=""
    for _ in $(seq 40); do
        code=$(curl -s -o "$TMP/fail.json" -w '%{http_code}' --max-time 30 "$BASE/v1/completions" \
            -H 'Content-Type: application/json' -d '{"prompt": "Once upon a time", "max_tokens": 8}')
        [ "$code" = 503 ] && break
        sleep 0.25
    done
    $PY -c "import json,sys; e=json.load(open(sys.argv[1]))['error']; sys.exit(0 if 'secondary 1 (' in e['message'] else 1)" \
        "$TMP/fail.json" 2>/dev/null
    check "e2e_serve_failover back later: the node not back in time, requests get 503 naming it" \
        $(( $? | ($code != 503) )) "HTTP $code: $(cat "$TMP/fail.json")"
    h=$(curl -s -o "$TMP/health.json" -w '%{http_code}' --max-time 5 "$BASE/health")
    [ "$h" = 503 ] && grep -q 'secondary 1 (' "$TMP/health.json"
    check "e2e_serve_failover back later: /health 503 naming the node" $? "HTTP $h: $(cat "$TMP/health.json")"
    sleep 2 # the service still up a while later, still answering
    code=$(curl -s -o "$TMP/fail2.json" -w '%{http_code}' --max-time 10 "$BASE/v1/completions" \
        -H 'Content-Type: application/json' -d '{"prompt": "Once upon a time", "max_tokens": 8}')
    [ "$code" = 503 ]
    check "e2e_serve_failover back later: still 503 while the node is away" $? "HTTP $code: $(cat "$TMP/fail2.json")"
    restart_secondary "$cfg" 1
    check "e2e_serve_failover back later: the node restarted" $? "$(tail -3 "$TMP/sec1.log")"
    prompt=$($PY -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))['prompts'][0]))" "$TMP/refs.json")
    for _ in $(seq 60); do
        code=$(curl -s -o "$TMP/back.json" -w '%{http_code}' --max-time 30 "$BASE/v1/completions" \
            -H 'Content-Type: application/json' -d "{\"prompt\": $prompt, \"max_tokens\": $N, \"temperature\": 0}")
        [ "$code" = 200 ] && break
        sleep 0.5
    done
    $PY - "$TMP/back.json" "$TMP/refs.json" <<'PYEOF'
import json, sys
got = json.load(open(sys.argv[1]))["choices"][0]["text"]
want = json.load(open(sys.argv[2]))["texts"][0]
if got != want:
    print(json.dumps([got, want])); sys.exit(1)
PYEOF
    check "e2e_serve_failover back later: once the node is back the service resumes, greedy text as without the failure" \
        $(( $? | ($code != 200) )) "HTTP $code: $(head -c 600 "$TMP/back.json")"
    h=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/health")
    [ "$h" = 200 ]
    check "e2e_serve_failover back later: /health 200 again" $? "HTTP $h"
    f=$(curl -s --max-time 5 "$BASE/metrics" | sed -n 's/^mdi_failovers_total //p')
    [ "$f" = 1 ]
    check "e2e_serve_failover back later: /metrics counts it as one failover" $? "mdi_failovers_total '$f'"
    grep -h 'failover: ' "$TMP/serve_back.log" | sed 's/^.*failover: /INFO: e2e_serve_failover back later: /' | tail -1
    stop_service "back later" "$TMP/serve_back.log"
else
    fail "e2e_serve_failover back later: the service starts" "$(tail -5 "$TMP/serve_back.log")"
fi
stop_secondaries
check "e2e_serve_failover back later: secondaries exit on SIGTERM" $? "a secondary outlived SIGTERM"
rm -f "$TMP"/sec*.log

# 4. a ring link cut, no node lost
if ! tcp_cut_works; then
    echo "SKIP: e2e_serve_failover ring cut: ss -K cannot destroy a TCP connection here (needs root)"
    exit 0
fi
cfg="$TMP/cfg_cut.json"
ring_up "$cfg" "ring cut"
if start_service "$TMP/serve_cut.log" --nodes-config "$cfg" --failover-timeout 20; then
    client "ring cut:" failover MDI_CUT_CMD="$(tcp_cut_cmd "${RING_PORT[1]}")" \
        MDI_FAILOVER_LAST=' the ring re-closed, no node failed: [0-9.]+ s lost$'
    grep -q 'failover: the ring re-closed, no node failed' "$TMP/serve_cut.log" &&
        ! grep -q 'replaced by' "$TMP/serve_cut.log"
    check "e2e_serve_failover ring cut: logged as a failover with no node replaced" $? \
        "$(grep -iE 'fail|ring' "$TMP/serve_cut.log" | head -4)"
    curl -s --max-time 10 "$BASE/api/cluster" | $PY -c '
import json, sys
c = json.load(sys.stdin)
want = ["127.0.0.1:" + p for p in sys.argv[1:]]
ok = [n["addr"] for n in c["nodes"][1:]] == want and all(n["spare"] is None and n["state"] == "running" for n in c["nodes"][1:])
sys.exit(0 if ok else print(json.dumps(c)) or 1)' "${HTTP_PORT[0]}" "${HTTP_PORT[1]}" >"$TMP/cluster_cut.out" 2>&1
    check "e2e_serve_failover ring cut: /api/cluster: each place keeps its configured node, running" $? \
        "$(cat "$TMP/cluster_cut.out")"
    grep -h 'failover: ' "$TMP/serve_cut.log" | sed 's/^.*failover: /INFO: e2e_serve_failover ring cut: /' | head -1
    stop_service "ring cut" "$TMP/serve_cut.log"
else
    fail "e2e_serve_failover ring cut: the service starts" "$(tail -5 "$TMP/serve_cut.log")"
fi
stop_secondaries
check "e2e_serve_failover: secondaries exit on SIGTERM" $? "a secondary outlived SIGTERM"
exit 0

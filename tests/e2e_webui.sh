#!/usr/bin/env bash
# e2e_webui: the web UI in a real browser. A 3-node ring of stories260K
# served by bin/starter --serve; tests/webui_check.mjs drives Debian's
# headless Chromium with playwright-core: the page loads with no console
# error, a chat message gets a streamed answer (several pieces), the
# cluster view shows every node with the layer range of its chunk (from the
# manifest) and its figures, and the spare listed (never started:
# unreachable); a screenshot goes to plots/webui.png.
# Also without a browser: GET / and the assets with their types, and
# GET /api/cluster.
#
# Optional: prints one SKIP line when chromium or playwright-core
# (tests/node_modules, .ci/run installs it) is missing.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_webui: $STORIES missing"; exit 0; fi
if ! "$BIN/starter" --help 2>&1 | grep -q -- "--serve"; then
    echo "SKIP: e2e_webui: bin/starter has no --serve"; exit 0
fi
CK="$TMP/stories260K"
if ! prepare "$STORIES" "$CK" 3; then
    fail "e2e_webui prepare stories260K" "$(tail -3 "$TMP/prepare.log")"; exit 1
fi
MANIFEST=$(find "$CK" -path '*3nodes/manifest.json' | head -1)

cfg="$TMP/cfg.json"
mkcfg "$cfg" 2
# one spare listed, never started: the view lists it, unreachable
$PY - "$cfg" $(free_ports 2) <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["nodes"]["spare"] = [{"addr": "127.0.0.1", "communication": {"starter_addr": "127.0.0.1", "port": int(sys.argv[2])},
                        "inference": {"port_in": int(sys.argv[3]), "port_out": 1}}]
json.dump(c, open(sys.argv[1], "w"))
PYEOF
ok=0
for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
check "e2e_webui: secondaries start" $ok "$(cat "$TMP"/sec*.log)"

PORT=$(free_ports 1)
URL="http://127.0.0.1:$PORT"
"$BIN/starter" --serve --host 127.0.0.1 --port "$PORT" --nodes-config "$cfg" --ckpt "$CK" --n-threads 1 \
    >"$TMP/serve.log" 2>&1 &
SERVE_PID=$!
PIDS="$PIDS $SERVE_PID"
up=1
for _ in $(seq 300); do
    curl -s -o /dev/null --max-time 1 "$URL/health" 2>/dev/null && { up=0; break; }
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.1
done
check "e2e_webui: the service answers /health" $up "$(tail -5 "$TMP/serve.log")"
[ $up -eq 0 ] || exit 0

# Without a browser: the page, its assets and the cluster's JSON.
for a in "/ text/html" "/index.html text/html" "/app.js text/javascript" "/style.css text/css"; do
    set -- $a
    ct=$(curl -s -o "$TMP/asset" -w '%{http_code} %{content_type}' "$URL$1")
    cmp -s "$TMP/asset" "src/webui/$( [ "$1" = / ] && echo index.html || echo "${1#/}")"; same=$?
    [[ "$ct" == "200 $2"* ]] && [ $same -eq 0 ]
    check "e2e_webui: GET $1 is the embedded file, $2" $? "$ct, same bytes: $same"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/nope.js")
[ "$code" = 404 ]; check "e2e_webui: an unknown page is 404" $? "$code"
curl -s "$URL/api/cluster" >"$TMP/cluster.json"
EXPECTED=$($PY - "$MANIFEST" "$TMP/cluster.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
want = [{"role": "starter" if c["role"] == "starter" else "secondary",
         "index": 0 if c["role"] == "starter" else c["node_index"] - 1,
         "layers": [c["layer_begin"], c["layer_end"]]} for c in m["chunks"]]
got = json.load(open(sys.argv[2]))
got_nodes = [{"role": n["role"], "index": n["index"], "layers": n["layers"]} for n in got["nodes"]]
if got_nodes != want or any(n["state"] != "running" or not n["rss_bytes"] for n in got["nodes"]):
    print("MISMATCH", json.dumps(got), file=sys.stderr)
if any(n.get("spare") is not None or n.get("in_place_of") is not None for n in got["nodes"][1:]):
    print("MISMATCH: a spare in a place before any failover", json.dumps(got), file=sys.stderr)
sp = got.get("spares")
if not sp or len(sp) != 1 or sp[0]["role"] != "spare" or sp[0]["index"] != 0 or sp[0]["state"] != "unreachable" \
        or sp[0]["used"]:
    print("MISMATCH: spares", json.dumps(sp), file=sys.stderr)
print(json.dumps(want))
PYEOF
) 2>"$TMP/cluster.err"
[ ! -s "$TMP/cluster.err" ]
check "e2e_webui: GET /api/cluster: every node running with its chunk's layers, the spare listed unreachable" $? "$(cat "$TMP/cluster.err")"

# The browser.
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
    echo "SKIP: e2e_webui: the browser test: $CHROMIUM missing (apt-get install chromium)"
elif [ ! -d tests/node_modules/playwright-core ]; then
    echo "SKIP: e2e_webui: the browser test: playwright-core missing (cd tests && npm install playwright-core@1.65.1)"
else
    mkdir -p plots
    (cd tests && CHROMIUM="$CHROMIUM" run_with_timeout 150 node webui_check.mjs "$URL/" "$EXPECTED" \
        ../plots/webui.png 1) >"$TMP/browser.out" 2>"$TMP/browser.err"
    rc=$?
    cat "$TMP/browser.out"
    grep -q '^FAIL:' "$TMP/browser.out" || [ $rc -eq 0 ] ||
        fail "e2e_webui: the browser test" "exit $rc: $(tail -5 "$TMP/browser.err")"
fi

# SIGTERM: the service stops every secondary and exits.
kill -TERM "$SERVE_PID"
for _ in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$SERVE_PID" 2>/dev/null
check "e2e_webui: the service exits on SIGTERM" $? "$(tail -3 "$TMP/serve.log")"

# Standalone: the cluster view is the one node with every layer.
PORT=$(free_ports 1)
"$BIN/starter" --serve --host 127.0.0.1 --port "$PORT" --ckpt "$STORIES" --n-threads 1 >"$TMP/serve1.log" 2>&1 &
SERVE_PID=$!
PIDS="$PIDS $SERVE_PID"
for _ in $(seq 300); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health" 2>/dev/null && break
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.1
done
curl -s "http://127.0.0.1:$PORT/api/cluster" | $PY -c '
import json, sys
n = json.load(sys.stdin)["nodes"]
ok = len(n) == 1 and n[0]["role"] == "starter" and n[0]["layers"] == [0, 5] and n[0]["state"] == "running" and n[0]["addr"].endswith(":'"$PORT"'")
sys.exit(0 if ok else print(json.dumps(n)) or 1)' >"$TMP/standalone.out" 2>&1
check "e2e_webui: standalone, GET /api/cluster is the one node with every layer" $? "$(cat "$TMP/standalone.out") $(tail -2 "$TMP/serve1.log")"
kill -TERM "$SERVE_PID"
exit 0

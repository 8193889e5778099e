#!/usr/bin/env bash
# e2e_split: the layer split planned from the nodes' capabilities. A 3-node
# ring of stories260K with a slow secondary 0 (capabilities given in the
# nodes configuration, so the plan is fixed) gets an uneven split, from
# prepare_model --plan-from and from starter --auto-split, and both give
# the same greedy tokens as the even split and as standalone. Capabilities
# asked of live secondaries (GET /) plan too; a node without memory enough
# is refused by name.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_split: $STORIES missing"; exit 0; fi
CK="$TMP/ck/even"
prepare "$STORIES" "$CK" 1 3 || { fail "e2e_split prepare" "$(tail -3 "$TMP/prepare.log")"; exit 1; }
COMMON=(--prompt "Once upon a time" --n-tokens 40 --temperature 0 --quiet --n-threads 1 --timeout 5 --n-samples 3)

cfg="$TMP/cfg.json"
mkcfg "$cfg" 2
# the same nodes, with capabilities: secondary 0 ten times slower
caps() { echo "\"capabilities\": {\"matvec_gflops\": {\"f32\": $1, \"bf16\": $1}, \"mem_available_bytes\": $2}"; }
$PY - "$cfg" "$TMP/cfg_caps.json" "$(caps 10 1e9)" "$(caps 1 1e9)" "$(caps 10 1e9)" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
nodes = [c["nodes"]["starter"]] + c["nodes"]["secondary"]
for n, extra in zip(nodes, sys.argv[3:]):
    n.update(json.loads("{" + extra + "}"))
json.dump(c, open(sys.argv[2], "w"))
PYEOF

# ---- prepare_model --plan-from with capabilities in the configuration ----
PLAN="$TMP/ck/plan"
"$BIN/prepare_model" "$STORIES" --plan-from "$TMP/cfg_caps.json" --out "$PLAN" --no-progress >"$TMP/plan.log" 2>&1
check "e2e_split prepare_model --plan-from" $? "$(tail -3 "$TMP/plan.log")"
lpn() { $PY -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['layers_per_node'])))" "$1/chunks/3nodes/manifest.json"; }
even=$(lpn "$CK"); planned=$(lpn "$PLAN")
[ "$planned" = "0,1,4" ] && [ "$even" != "$planned" ]
check "e2e_split the slow node gets fewer layers: $planned (even $even)" $? "planned $planned, even $even"
grep -qE "secondary 0 \(127.0.0.1:${HTTP_PORT[0]}\) +layers \[0, 1\) +1: +[0-9.]+ ms per token" "$TMP/plan.log"
check "e2e_split the plan is printed with each node's predicted time" $? "$(grep -A3 'by capability' "$TMP/plan.log")"

start_secondary "$cfg" 0 && start_secondary "$cfg" 1 || { fail "e2e_split start secondaries" "$(tail -3 "$TMP"/sec*.log)"; exit 1; }
run_with_timeout 30 "$BIN/starter" --ckpt "$CK" "${COMMON[@]}" --output "$TMP/solo.json" 2>>"$TMP/starter.log"
check "e2e_split standalone" $? "$(tail -2 "$TMP/starter.log")"
run_with_timeout 60 "$BIN/starter" --ckpt "$CK" --nodes-config "$cfg" "${COMMON[@]}" --output "$TMP/even.json" \
    2>>"$TMP/starter.log"
check "e2e_split even ring" $? "$(tail -2 "$TMP/starter.log")"
run_with_timeout 60 "$BIN/starter" --ckpt "$PLAN" --nodes-config "$cfg" "${COMMON[@]}" --output "$TMP/plan.json" \
    2>>"$TMP/starter.log"
check "e2e_split planned ring ($planned)" $? "$(tail -2 "$TMP/starter.log")"
out=$(same_ids "$TMP/solo.json" "$TMP/even.json") && out=$(same_ids "$TMP/solo.json" "$TMP/plan.json")
check "e2e_split planned split: greedy tokens equal the even split's and standalone" $? "$out"

# ---- starter --auto-split: re-splits the prepared folder, then runs ----
AUTO="$TMP/ck/auto"
cp -r "$CK" "$AUTO"
run_with_timeout 60 "$BIN/starter" --ckpt "$AUTO" --nodes-config "$TMP/cfg_caps.json" --auto-split "${COMMON[@]}" \
    --output "$TMP/auto.json" 2>"$TMP/auto.log"
check "e2e_split starter --auto-split" $? "$(tail -3 "$TMP/auto.log")"
[ "$(lpn "$AUTO")" = "0,1,4" ] && grep -q "split by capability" "$TMP/auto.log"
check "e2e_split --auto-split used the plan ($(lpn "$AUTO"))" $? "$(grep -E 'layers|capab' "$TMP/auto.log" | head -5)"
out=$(same_ids "$TMP/solo.json" "$TMP/auto.json")
check "e2e_split --auto-split: greedy tokens equal standalone" $? "$out"
run_with_timeout 60 "$BIN/starter" --ckpt "$AUTO" --nodes-config "$TMP/cfg_caps.json" --auto-split "${COMMON[@]}" \
    --output "$TMP/auto2.json" 2>"$TMP/auto2.log" && grep -q "reused model_secondary1" "$TMP/auto2.log"
check "e2e_split --auto-split again reuses the planned chunks" $? "$(grep -E 'reused|written' "$TMP/auto2.log" | head -3)"

# ---- capabilities asked of the live secondaries ----
"$BIN/prepare_model" "$STORIES" --plan-from "$cfg" --out "$TMP/ck/live" --no-progress >"$TMP/live.log" 2>&1 &&
    grep -q "split by capability" "$TMP/live.log"
check "e2e_split --plan-from asks the secondaries' GET / ($(lpn "$TMP/ck/live" 2>/dev/null))" $? "$(tail -3 "$TMP/live.log")"
[ "$(status_field 0 capabilities | $PY -c "import sys, ast; c = ast.literal_eval(sys.stdin.read()); print(c['matvec_gflops']['q8_0'] > 0 and c['mem_available_bytes'] > 0)")" = True ]
check "e2e_split GET / reports matvec throughput and free memory" $? "$(status_field 0 capabilities)"

# ---- a node without memory enough ----
$PY - "$TMP/cfg_caps.json" "$TMP/cfg_small.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["nodes"]["secondary"][1]["capabilities"]["mem_available_bytes"] = 1000
json.dump(c, open(sys.argv[2], "w"))
PYEOF
"$BIN/prepare_model" "$STORIES" --plan-from "$TMP/cfg_small.json" --out "$TMP/ck/small" --no-progress >"$TMP/small.log" 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "secondary 1 (127.0.0.1:${HTTP_PORT[1]}): not enough memory" "$TMP/small.log"
check "e2e_split a node short of memory is named" $? "exit $rc: $(tail -2 "$TMP/small.log")"
stop_secondaries

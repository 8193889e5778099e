#!/usr/bin/env bash
# bench_failover: how long a failover takes, and where the time goes, on a
# 3-node ring of this machine (the starter and 2 secondaries, one thread
# each) with one spare listed.
#
#   tools/bench_failover.sh
#   BENCH_FAILOVER_MODELS=stories260K tools/bench_failover.sh      (one model)
#
# Models (BENCH_FAILOVER_MODELS, default both):
#   stories260K   the real tiny Llama of ../shared/models (F32);
#   tinyllama     synthetic TinyLlama 1.1B (random weights, real shapes,
#                 BF16), checkpoints/synthetic-tinyllama-1.1b-bf16
#                 (generated when missing).
# Each model is split for 3 nodes under checkpoints/bench-failover/. Every
# run is the CLI's batch mode: 3 greedy samples from the same prompt of
# BENCH_FAILOVER_PROMPT (16) tokens, BENCH_FAILOVER_N_TOKENS new tokens
# each (stories260K 400, tinyllama 48), --timeout BENCH_FAILOVER_TIMEOUT
# (5 s: how long a silent node is given). First an undisturbed run (the
# reference tokens and the time it takes), then, each from a fresh
# starter, secondary 1 failed a third of the way into the generation:
#   spare-upload  kill -9; the spare takes its place, the chunk uploaded
#                 to it (its cache empty);
#   spare-cached  kill -9; the spare takes it from its cache (the chunk
#                 uploaded in the run before);
#   restart       kill -9 and the node started again at once (no spare
#                 listed): the time includes its start;
#   hang-spare    SIGSTOP (a node hung, its sockets open): detected when
#                 it stays silent past --timeout; the spare (cached) takes
#                 its place.
# The killed node is started again before the next run.
#
# The starter logs each failover's parts (engine.c): detection (the failure
# to its diagnosis), waiting (for a spare or the node to answer), /init
# (chunk upload included when there was one), ring (closing the ring
# again), replay (every sample's prompt and tokens so far through the new
# ring), and the time lost in all. Writes plots/bench_failover.csv:
#   model,weights,scenario,detect_s,wait_s,init_s,uploaded,ring_s,replay_s,
#   lost_s,run_s,ref_run_s,tokens_equal
# (run_s: the disturbed run's generation time, ref_run_s the undisturbed
# one's; tokens_equal: every sample's greedy tokens equal the reference's).
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=${BIN:-bin}
PY=/usr/bin/python3
. tools/bench_lib.sh
bench_setup failover
SHARED=${MDI_SHARED:-$(cd .. && pwd)/shared}
MODELS=${BENCH_FAILOVER_MODELS:-stories260K tinyllama}
PROMPT_LEN=${BENCH_FAILOVER_PROMPT:-16}
TIMEOUT=${BENCH_FAILOVER_TIMEOUT:-5}
OUT=checkpoints/bench-failover
CSV=plots/bench_failover.csv
mkdir -p plots "$OUT"
[ -x "$BIN/starter" ] && [ -x "$BIN/secondary" ] && [ -x "$BIN/prepare_model" ] || { echo "build first: make"; exit 1; }

ports=($(free_ports 7))
# cfg FILE WITH_SPARE
cfg() {
    $PY - "$1" "$2" "${ports[@]}" <<'PYEOF'
import json, sys
f, spare, p = sys.argv[1], sys.argv[2] == "1", [int(x) for x in sys.argv[3:]]
sec = lambda http, ring: {"addr": "127.0.0.1", "communication": {"starter_addr": "127.0.0.1", "port": http},
                          "inference": {"port_in": ring, "port_out": 1}, "n_threads": 1}
c = {"nodes": {"starter": {"addr": "127.0.0.1", "inference": {"port_in": p[0]}, "n_threads": 1},
               "secondary": [sec(p[1], p[2]), sec(p[3], p[4])]}}
if spare:
    c["nodes"]["spare"] = [sec(p[5], p[6])]
json.dump(c, open(f, "w"), indent=1)
PYEOF
}
CFG_SPARE=$TMP/cfg_spare.json
CFG_PLAIN=$TMP/cfg_plain.json
cfg "$CFG_SPARE" 1
cfg "$CFG_PLAIN" 0
HTTP=(${ports[1]} ${ports[3]} ${ports[5]})

declare -A PID
# up NAME ARGS...: starts bin/secondary ARGS as NAME (sec0, sec1, spare),
# waits until its GET / answers.
up() {
    local name=$1; shift
    "$BIN/secondary" "$@" >>"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS="$PIDS $!"
    local port
    case $name in sec0) port=${HTTP[0]} ;; sec1) port=${HTTP[1]} ;; *) port=${HTTP[2]} ;; esac
    for _ in $(seq 400); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null && return 0
        kill -0 "${PID[$name]}" 2>/dev/null || { echo "$name exited: $(tail -2 "$TMP/$name.log")"; return 1; }
        sleep 0.05
    done
    echo "$name: no answer"; return 1
}
down() { # down NAME: kill -9 and reap
    local p=${PID[$1]:-}
    [ -n "$p" ] || return 0
    kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    PID[$1]=""
}
state_of() { curl -s --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null | $PY -c "import json,sys; print(json.load(sys.stdin).get('state'))" 2>/dev/null; }

echo "model,weights,scenario,detect_s,wait_s,init_s,uploaded,ring_s,replay_s,lost_s,run_s,ref_run_s,tokens_equal" >"$CSV"

for model in $MODELS; do
    case $model in
        stories260K) SRC=$SHARED/models/stories260K; WEIGHTS=F32; NT=${BENCH_FAILOVER_N_TOKENS:-400} ;;
        tinyllama) SRC=checkpoints/synthetic-tinyllama-1.1b-bf16; WEIGHTS="BF16 (synthetic)"; NT=${BENCH_FAILOVER_N_TOKENS:-48}
                   if [ ! -f "$SRC/config.json" ]; then
                       echo "generating $SRC (synthetic weights)"
                       $PY tools/gen_synthetic.py --shape tinyllama-1.1b --dtype bf16 --out "$SRC" || exit 1
                   fi ;;
        *) echo "BENCH_FAILOVER_MODELS: stories260K or tinyllama, not $model"; exit 1 ;;
    esac
    [ -d "$SRC" ] || { echo "$SRC missing"; exit 1; }
    CK=$OUT/$model
    "$BIN/prepare_model" "$SRC" --n-nodes 3 --out "$CK" --no-progress >"$TMP/prep.log" 2>&1 ||
        { echo "prepare $model: $(tail -2 "$TMP/prep.log")"; exit 1; }
    ids=$($PY -c "print(','.join(str(3 + 37 * i % 200) for i in range($PROMPT_LEN)))")
    args=(--ckpt "$CK" --prompt-ids "$ids" --n-tokens "$NT" --n-samples 3 --temperature 0 --quiet --n-threads 1
          --timeout "$TIMEOUT" --failover-timeout 60)
    rm -rf "$TMP/cache0" "$TMP/cache1" "$TMP/cache_spare"
    up sec0 "$CFG_SPARE" 0 --cache-dir "$TMP/cache0" --n-threads 1 || exit 1
    up sec1 "$CFG_SPARE" 1 --cache-dir "$TMP/cache1" --n-threads 1 || exit 1
    up spare "$CFG_SPARE" --spare 0 --cache-dir "$TMP/cache_spare" --n-threads 1 || exit 1

    # twice: the second, with every chunk loaded once, is the reference
    for _ in 1 2; do
        if ! timeout 900 "$BIN/starter" "${args[@]}" --nodes-config "$CFG_SPARE" --output "$TMP/ref.json" \
            >/dev/null 2>"$TMP/ref.log"; then
            echo "$model: the undisturbed run failed: $(tail -2 "$TMP/ref.log")"; exit 1
        fi
    done
    ref_s=$($PY -c "import json,sys; print('%.3f' % json.load(open(sys.argv[1]))['stats']['total_s'])" "$TMP/ref.json")
    echo "$model: undisturbed run $ref_s s ($NT tokens x 3 samples)"

    for scen in spare-upload spare-cached restart hang-spare; do
        cfgf=$CFG_SPARE
        [ $scen = restart ] && cfgf=$CFG_PLAIN
        rm -f "$TMP/run.json"
        timeout 900 "$BIN/starter" "${args[@]}" --nodes-config "$cfgf" --output "$TMP/run.json" \
            >/dev/null 2>"$TMP/run.log" &
        starter=$!
        # early in the generation: the ring running, then a third of the
        # reference run's time
        for _ in $(seq 1200); do [ "$(state_of "${HTTP[1]}")" = running ] && break; sleep 0.05; done
        sleep "$($PY -c "print($ref_s / 3)")"
        case $scen in
            hang-spare) kill -STOP "${PID[sec1]}" ;;
            restart) down sec1; up sec1 "$CFG_SPARE" 1 --cache-dir "$TMP/cache1" --n-threads 1 ;;
            *) down sec1 ;;
        esac
        wait $starter
        rc=$?
        line=$(grep -h 'failover: ' "$TMP/run.log" | grep 'lost' | head -1)
        eq=no
        if [ $rc -eq 0 ] && $PY - "$TMP/ref.json" "$TMP/run.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(f))["samples"] for f in sys.argv[1:3])
sys.exit(0 if [s["generated_ids"] for s in a] == [s["generated_ids"] for s in b] and a[0]["generated_ids"] else 1)
PYEOF
        then eq=yes; fi
        run_s=""
        [ $rc -eq 0 ] && run_s=$($PY -c "import json,sys; print('%.3f' % json.load(open(sys.argv[1]))['stats']['total_s'])" "$TMP/run.json")
        if [ -z "$line" ]; then
            echo "$model $scen: no failover logged (exit $rc): $(tail -2 "$TMP/run.log")"
            echo "$model,$WEIGHTS,$scen,,,,,,,,$run_s,$ref_s,$eq" >>"$CSV"
        else
            echo "$model $scen: ${line#*failover: }; tokens equal: $eq"
            $PY - "$line" "$model" "$WEIGHTS" "$scen" "$run_s" "$ref_s" "$eq" >>"$CSV" <<'PYEOF'
import re, sys
line, rest = sys.argv[1], sys.argv[2:]
f = lambda pat: (re.search(pat, line) or [None, ""])[1]
print(",".join([rest[0], rest[1], rest[2], f(r"detection ([0-9.]+) s"), f(r"waiting ([0-9.]+) s"),
                f(r"/init[a-z ]* ([0-9.]+) s"), "yes" if "chunk upload" in line else "no", f(r"ring ([0-9.]+) s"),
                f(r"replay ([0-9.]+) s"), f(r"([0-9.]+) s lost"), rest[3], rest[4], rest[5]]))
PYEOF
        fi
        # the ring back as it was: secondary 1 up again, the spare a spare
        if [ $scen != restart ]; then
            down sec1
            down spare
            up sec1 "$CFG_SPARE" 1 --cache-dir "$TMP/cache1" --n-threads 1 || exit 1
            up spare "$CFG_SPARE" --spare 0 --cache-dir "$TMP/cache_spare" --n-threads 1 || exit 1
        fi
    done
    down sec0; down sec1; down spare
done
echo "== $CSV"
column -s, -t <"$CSV"

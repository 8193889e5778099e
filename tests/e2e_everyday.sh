#!/usr/bin/env bash
# e2e_everyday: what a user coming from MDI-LLM types, on 127.0.0.1.
#  - MDI-LLM's README quick start with its own configuration files
#    (settings_distr/configuration.json, config_2gpus.json and the per-node
#    secondary/node0.json, node1.json, "device" keys and all; free ports in
#    place of 8088-5093): the starter splits the missing chunks itself, the
#    text equals standalone's, each unused key is warned about once;
#  - each alias maps to its meaning (-v, -d, -p, --block-size,
#    --sequence-length, --context-length, --device; the secondary's -v, -d,
#    --dtype, --device); --max-seq-len above the context is refused;
#  - outputs: --time-run into a new folder, header kept, a foreign CSV
#    refused; --output, --time-run and --plots that cannot be written never
#    lose the text; standalone --plots; tools/plot_runs draws 1, 2, 3 nodes.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_everyday: $STORIES missing"; exit 0; fi
BIN_ABS=$(cd "$BIN" && pwd)
W="$TMP/work"                       # the user's working folder
mkdir -p "$W/src/checkpoints" "$W/settings_distr/secondary"
cp -r "$STORIES" "$W/src/checkpoints/stories260K"   # a Hugging Face folder, no chunks
CK="$W/src/checkpoints/stories260K"
COMMON=(--temperature 0 --n-threads 1)
printable() { tr -cd '[:print:]\n' | tail -c "${2:-300}"; }

# ---- MDI-LLM's configuration files, addresses 127.0.0.1, free ports ----
read -r P_ST P_ST_OUT H0 R0 R0_OUT H1 R1 R1_OUT <<<"$(free_ports 9)"
node_json() { # addr http port_in port_out
    printf '{"addr": "127.0.0.1", "communication": {"starter_addr": "127.0.0.1", "port": %s}, "inference": {"port_in": %s, "port_out": %s}, "device": "cuda"}' "$1" "$2" "$3"
}
cat >"$W/settings_distr/configuration.json" <<JSON
{"nodes": {"starter": {"addr": "127.0.0.1", "communication": {"port": 8088},
                       "inference": {"port_in": $P_ST, "port_out": $P_ST_OUT}, "device": "cuda:0"},
           "secondary": [$(node_json $H0 $R0 $R0_OUT), $(node_json $H1 $R1 $R1_OUT)]}}
JSON
node_json $H0 $R0 $R0_OUT >"$W/settings_distr/secondary/node0.json"
node_json $H1 $R1 $R1_OUT >"$W/settings_distr/secondary/node1.json"
cat >"$W/settings_distr/config_2gpus.json" <<JSON
{"nodes": {"starter": {"addr": "127.0.0.1", "communication": {"port": 8088},
                       "inference": {"port_in": $P_ST, "port_out": $P_ST_OUT}, "device": "cuda:0"},
           "secondary": [$(node_json $H0 $R0 $R0_OUT | sed 's/"cuda"/"cuda:1"/')]}}
JSON
HTTP_PORT=($H0 $H1)

# Standalone references (greedy), at the context the quick start asks for.
"$BIN/starter" --ckpt "$STORIES" --prompt "Who are you?" --n-tokens 60 --n-samples 3 --max-seq-len 500 --quiet \
    "${COMMON[@]}" --output "$TMP/ref3.json" 2>>"$TMP/starter.log"
"$BIN/starter" --ckpt "$STORIES" --prompt "What is the recipe for pizza?" --n-tokens 500 --n-samples 2 \
    --max-seq-len 500 --quiet "${COMMON[@]}" --output "$TMP/ref2.json" 2>>"$TMP/starter.log"

# Quick start, 3 devices: secondary 0 with its per-node file, secondary 1
# with the shared configuration; the starter as in MDI-LLM's README.
start_secondary_mdi() { # idx args...
    local idx=$1; shift
    (cd "$W" && exec "$BIN_ABS/secondary" "$@" --n-threads 1 --cache-dir "$TMP/cache$idx") >>"$TMP/sec$idx.log" 2>&1 &
    PIDS="$PIDS $!"
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${HTTP_PORT[$idx]}/" && return 0
        sleep 0.05
    done
    return 1
}
ok=0
start_secondary_mdi 0 -v --nodes-config ./settings_distr/secondary/node0.json 0 || ok=1
start_secondary_mdi 1 -v --nodes-config ./settings_distr/configuration.json 1 || ok=1
check "MDI-LLM quick start: secondaries start (-v, per-node node0.json, configuration.json)" $ok \
    "$(cat "$TMP"/sec*.log | printable)"
n0=$(grep -c 'key "device"' "$TMP/sec0.log"); n1=$(grep -c 'key "device"' "$TMP/sec1.log")
[ "$n0" = 1 ] && [ "$n1" = 1 ]
check "unused key \"device\" warned about once by each secondary" $? "node0: $n0 lines, node1: $n1 lines"
(cd "$W" && run_with_timeout 60 "$BIN_ABS/starter" --ckpt ./src/checkpoints/stories260K -v \
    --nodes-config ./settings_distr/configuration.json --n-samples 3 --n-tokens 60 --prompt "Who are you?" \
    --block-size 500 "${COMMON[@]}" --output "$TMP/q3.json" >"$TMP/q3.out" 2>"$TMP/q3.err")
rc=$?
msg=$(same_ids "$TMP/ref3.json" "$TMP/q3.json" 2>&1); same=$?
[ $rc -ne 0 ] && msg="exit $rc: $(printable <"$TMP/q3.err")"
check "MDI-LLM quick start, 3 nodes: runs and equals standalone" $((rc | same)) "$msg"
grep -q "splitting it into checkpoints/stories260K" "$TMP/q3.err" && [ -f "$W/checkpoints/stories260K/chunks/3nodes/manifest.json" ]
check "missing chunks: the starter splits them itself, saying so" $? "$(grep -i split "$TMP/q3.err" | head -2)"
[ "$(grep -c 'key "device"' "$TMP/q3.err")" = 1 ] && grep -q 'and 2 more places' "$TMP/q3.err"
check "starter: unused key \"device\" warned about once" $? "$(grep device "$TMP/q3.err")"
grep -q "node 2 (secondary" "$TMP/q3.err" && grep -q "sample 2:" "$TMP/q3.err"
check "-v: per-sample and per-node figures on stderr" $? "$(tail -n 4 "$TMP/q3.err" | printable)"
grep -q -- "--- sample 2 ---" "$TMP/q3.out"
check "3 samples: each sample's text on stdout" $? "$(head -c 200 "$TMP/q3.out")"
grep -q "run figures: layers" "$TMP/sec0.log"
check "secondary -v: the run's figures on stderr" $? "$(tail -n 2 "$TMP/sec0.log" | printable)"
stop_secondaries
check "secondaries stop on SIGTERM (as the README shows)" $? "a secondary outlived SIGTERM"

# The 2-GPU example: prepare_model first, the worker given its chunk;
# --n-tokens 500 does not fit --block-size 500, which is said.
"$BIN/prepare_model" "$CK" --n-nodes 2 --out "$W/checkpoints/stories260K" --no-progress >>"$TMP/prepare.log" 2>&1
HTTP_PORT=($H0)
start_secondary_mdi 0 -v -d --dtype float32 --device cpu \
    --chunk ./checkpoints/stories260K/chunks/2nodes/model_secondary0.safetensors \
    --nodes-config settings_distr/config_2gpus.json 0
check "MDI-LLM 2-GPU example: secondary with --chunk, -v, -d, --dtype, --device cpu starts" $? \
    "$(printable <"$TMP/sec0.log")"
(cd "$W" && run_with_timeout 60 "$BIN_ABS/starter" --ckpt ./checkpoints/stories260K -v \
    --nodes-config ./settings_distr/config_2gpus.json --n-samples 2 --n-tokens 500 \
    --prompt "What is the recipe for pizza?" --block-size 500 "${COMMON[@]}" --output "$TMP/q2.json" \
    >"$TMP/q2.out" 2>"$TMP/q2.err")
rc=$?
msg=$(same_ids "$TMP/ref2.json" "$TMP/q2.json" 2>&1); same=$?
[ $rc -ne 0 ] && msg="exit $rc: $(printable <"$TMP/q2.err")"
check "MDI-LLM 2-GPU example: runs and equals standalone" $((rc | same)) "$msg"
grep -q "at most [0-9]* tokens will be generated" "$TMP/q2.err"
check "--n-tokens beyond --block-size: says how many tokens will be generated" $? "$(grep -i warn "$TMP/q2.err")"
grep -q "already holds chunk" "$TMP/q2.err"
check "a secondary given --chunk receives no upload" $? "$(grep -i chunk "$TMP/q2.err" | head -2)"
grep -q "debug:" "$TMP/sec0.log"
check "secondary -d: debug log" $? "$(tail -n 2 "$TMP/sec0.log" | printable)"
# One sample streams on the ring; an --output that cannot be written keeps the text.
(cd "$W" && run_with_timeout 60 "$BIN_ABS/starter" --ckpt ./checkpoints/stories260K \
    --nodes-config ./settings_distr/config_2gpus.json --n-samples 1 --n-tokens 40 --prompt "The dog" \
    "${COMMON[@]}" --output /nonexistent/dir/out.json >"$TMP/s1.out" 2>"$TMP/s1.err")
rc=$?
grep -q "^The dog was a big, red ball" "$TMP/s1.out" && [ $rc -eq 1 ] && grep -q "/nonexistent/dir/out.json" "$TMP/s1.err"
check "distributed, 1 sample: streamed text kept when --output cannot be written (exit 1, path named)" $? \
    "exit $rc, stdout $(head -c 80 "$TMP/s1.out"), stderr $(tail -n 1 "$TMP/s1.err")"
stop_secondaries >/dev/null

# MDI-LLM's standalone.json (no secondaries): the starter runs alone.
printf '{"nodes": {"starter": {"addr": "127.0.0.1", "communication": {"port": 8088}, "inference": {"port_in": %s, "port_out": %s}}, "secondary": []}}\n' \
    $P_ST $P_ST_OUT >"$W/settings_distr/standalone.json"
"$BIN/starter" --ckpt "$STORIES" --nodes-config "$W/settings_distr/standalone.json" --prompt "Who are you?" \
    --n-tokens 60 --n-samples 3 --max-seq-len 500 --quiet "${COMMON[@]}" --output "$TMP/sa.json" 2>>"$TMP/starter.log"
rc=$?
msg=$(same_ids "$TMP/ref3.json" "$TMP/sa.json" 2>&1); same=$?
check "MDI-LLM standalone.json: the starter runs alone" $((rc | same)) "exit $rc: $msg"

# ---- aliases ----
"$BIN/starter" --ckpt "$STORIES" --n-tokens 20 --quiet "${COMMON[@]}" --max-seq-len 64 --output "$TMP/a_ref.json" \
    2>/dev/null
for flag in --block-size --sequence-length --context-length; do
    "$BIN/starter" --ckpt "$STORIES" --n-tokens 20 --quiet "${COMMON[@]}" $flag 64 --output "$TMP/a.json" 2>/dev/null
    cmp -s <($PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['samples'])" "$TMP/a_ref.json" | sed 's/_s.: [0-9.e-]*//g') \
           <($PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['samples'])" "$TMP/a.json" | sed 's/_s.: [0-9.e-]*//g')
    check "alias $flag = --max-seq-len" $? "samples differ"
done
"$BIN/starter" --ckpt "$STORIES" --n-tokens 600 --quiet "${COMMON[@]}" --context-length 64 2>"$TMP/fit.err"
grep -q "at most 64 tokens will be generated" "$TMP/fit.err"
check "--n-tokens that do not fit say how many will be generated" $? "$(tail -n 2 "$TMP/fit.err")"
"$BIN/starter" --ckpt "$STORIES" --n-tokens 5 --quiet --max-seq-len 100000 2>"$TMP/big.err"; rc=$?
[ $rc -ne 0 ] && grep -q "above the model's context of 512" "$TMP/big.err"
check "--max-seq-len above the model's context is an error" $? "exit $rc: $(tail -n 1 "$TMP/big.err")"
"$BIN/starter" --ckpt "$STORIES" --n-tokens 5 --quiet --device cuda 2>"$TMP/dev.err"; rc=$?
[ $rc -eq 2 ] && [ "$(grep -c . "$TMP/dev.err")" -le 2 ] && grep -q "computes on the CPU" "$TMP/dev.err"
check "--device cuda: one clear line (this build computes on the CPU)" $? "exit $rc: $(cat "$TMP/dev.err")"
"$BIN/starter" --ckpt "$STORIES" --n-tokens 5 --quiet --device cpu 2>/dev/null
check "--device cpu accepted" $? "refused"
"$BIN/secondary" "$TMP/cfg_unused.json" 0 --device cuda:0 2>"$TMP/sdev.err"; rc=$?
[ $rc -eq 2 ] && grep -q "computes on the CPU" "$TMP/sdev.err"
check "secondary --device cuda: refused clearly" $? "exit $rc: $(cat "$TMP/sdev.err")"
"$BIN/starter" --ckpt "$STORIES" --n-tokens 5 --quiet -d "${COMMON[@]}" 2>"$TMP/d.err"
grep -q "debug:" "$TMP/d.err"
check "-d: debug log" $? "$(tail -n 2 "$TMP/d.err")"

# ---- outputs, standalone: --time-run, -p, plot_runs ----
mkdir -p "$W/runs1" && cd "$W/runs1"
"$BIN_ABS/starter" --ckpt "$STORIES" --n-tokens 30 --quiet "${COMMON[@]}" --time-run "$TMP/new/folder/times.csv" -p \
    2>>"$TMP/starter.log"
rc=$?
[ $rc -eq 0 ] && [ "$(wc -l <"$TMP/new/folder/times.csv")" = 2 ] && head -n 1 "$TMP/new/folder/times.csv" | grep -q "^timestamp,model,mode" \
    && grep -q ",standalone,1,1,30," "$TMP/new/folder/times.csv"
check "--time-run standalone into a new folder: header and one row" $? "exit $rc: $(cat "$TMP/new/folder/times.csv" 2>&1)"
"$BIN_ABS/starter" --ckpt "$STORIES" --n-tokens 30 --quiet "${COMMON[@]}" --time-run "$TMP/new/folder/times.csv" \
    2>>"$TMP/starter.log"
[ "$(wc -l <"$TMP/new/folder/times.csv")" = 3 ]
check "--time-run appends under the same header" $? "$(cat "$TMP/new/folder/times.csv")"
[ -f logs/tokens_time_stories260K_1nodes_1samples.csv ] && [ "$(wc -l <logs/tokens_time_stories260K_1nodes_1samples.csv)" -ge 31 ]
check "-p (= --plots) standalone: the 1-node curve under logs/" $? "$(ls logs plots 2>&1)"
printf 'timestamp,n_samples,n_layers,context_size,gen_time\n1,2,3,4,5\n' >"$TMP/other.csv"
"$BIN_ABS/starter" --ckpt "$STORIES" --prompt "The dog" --n-tokens 20 "${COMMON[@]}" --time-run "$TMP/other.csv" \
    >"$TMP/o.out" 2>"$TMP/o.err"
rc=$?
[ $rc -eq 1 ] && grep -q "^The dog was" "$TMP/o.out" && grep -q "other.csv" "$TMP/o.err" && [ "$(wc -l <"$TMP/other.csv")" = 2 ]
check "--time-run refuses a CSV with other columns, after the text" $? "exit $rc: $(cat "$TMP/o.err" | tail -n 1)"
"$BIN_ABS/starter" --ckpt "$STORIES" --prompt "The dog" --n-tokens 20 --quiet "${COMMON[@]}" \
    --output "$TMP/no/such/dir/x.json" >"$TMP/o.out" 2>"$TMP/o.err"
rc=$?
[ $rc -eq 1 ] && grep -q "The dog was" "$TMP/o.out" && grep -q "no/such/dir/x.json" "$TMP/o.err"
check "--output that cannot be written: the text is printed anyway (even with --quiet), the path named" $? \
    "exit $rc: $(cat "$TMP/o.out") / $(tail -n 1 "$TMP/o.err")"
mkdir -p "$W/badcwd" && touch "$W/badcwd/logs"
(cd "$W/badcwd" && "$BIN_ABS/starter" --ckpt "$STORIES" --prompt "The dog" --n-tokens 20 "${COMMON[@]}" --plots \
    >"$TMP/p.out" 2>"$TMP/p.err")
rc=$?
[ $rc -eq 1 ] && grep -q "^The dog was" "$TMP/p.out" && grep -q "plots.*logs" "$TMP/p.err"
check "--plots that cannot be written: text first, then the error naming the path" $? \
    "exit $rc: $(tail -n 1 "$TMP/p.err")"
cd - >/dev/null

# tools/plot_runs: the 1-node baseline beside 2 and 3 nodes (curves from a
# real ring run and a scaled copy: the tool is under test, not the speed).
if command -v gnuplot >/dev/null; then
    L="$W/runs1/logs"
    awk -F, 'NR == 1 || NF != 2 { print; next } { printf "%.6f,%s\n", $1 * 0.6, $2 }' \
        "$L/tokens_time_stories260K_1nodes_1samples.csv" >"$L/tokens_time_stories260K_2nodes_1samples.csv"
    awk -F, 'NR == 1 || NF != 2 { print; next } { printf "%.6f,%s\n", $1 * 0.5, $2 }' \
        "$L/tokens_time_stories260K_1nodes_1samples.csv" >"$L/tokens_time_stories260K_3nodes_1samples.csv"
    (cd "$W/runs1" && "$OLDPWD/tools/plot_runs" stories260K >"$TMP/pr.out" 2>&1)
    rc=$?
    [ $rc -eq 0 ] && [ -s "$W/runs1/plots/time_vs_tokens_stories260K.png" ] && grep -q "3 nodes" "$TMP/pr.out" \
        && grep -q "1 node," "$TMP/pr.out"
    check "tools/plot_runs: 1, 2 and 3 nodes on one PNG" $? "exit $rc: $(cat "$TMP/pr.out")"
    tools/plot_runs --out "$TMP/x.png" "$TMP/missing.csv" >/dev/null 2>"$TMP/pr.err"; rc=$?
    [ $rc -ne 0 ] && grep -q "missing.csv" "$TMP/pr.err"
    check "tools/plot_runs: a missing CSV is named" $? "exit $rc: $(cat "$TMP/pr.err")"
else
    echo "SKIP: tools/plot_runs: no gnuplot"
fi
exit 0

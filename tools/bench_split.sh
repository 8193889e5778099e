#!/usr/bin/env bash
# bench_split: ring tokens/s with the layer split by bytes (prepare_model's
# default, "even") against the split planned from the nodes' measured
# capabilities (prepare_model --plan-from), on 3 nodes of this machine with
# secondary 0 made slower.
#
#   tools/bench_split.sh
#   BENCH_SPLIT_N_TOKENS=8 BENCH_SPLIT_REPS=1 tools/bench_split.sh     (a short check)
#   KEEP_TMP=1 tools/bench_split.sh       (the nodes' logs kept in /tmp)
#
# The slow node runs BENCH_SPLIT_SLOW_SHARE (default 0.25) of the time,
# by one of (BENCH_SPLIT_SLOW):
#   duty     (default) the script stops and continues it (SIGSTOP/SIGCONT)
#            in 100 ms periods: works wherever signals do;
#   quota    a CPU quota from a cgroup made for it (v2 cpu.max, or v1
#            cpu.cfs_quota_us; root, cgroups writable). On the virtual
#            machine this was written on the v1 quota was barely enforced
#            (a busy loop at 25 % was throttled a third of the time), hence
#            duty by default;
#   threads  it gets 1 thread and the others BENCH_SPLIT_THREADS (2): weak
#            on a 2-core machine;
#   none     no slow node.
# The slow secondary is slowed from its start, with an empty cache folder,
# so that the throughput it measures and reports in GET / (caps.h, 256 MiB
# test matrix) is the slowed one: the planner sees what the ring will get.
#
# Model: synthetic TinyLlama 1.1B (random weights, BF16; BENCH_SPLIT_SRC),
# checkpoints/synthetic-tinyllama-1.1b-bf16 (generated when missing).
# Both splits are prepared under checkpoints/bench-split/{even,plan}; the
# plan is made with the secondaries up (their GET / capabilities) and
# printed. Each run: --n-samples 3, every sample from BOS alone
# (--prompt-ids 1), BENCH_SPLIT_N_TOKENS (64) greedy tokens; tok_s =
# tokens_generated / total_s from the starter's --output JSON (loading
# and ring set-up left out). BENCH_SPLIT_REPS (3) repetitions, even and
# planned alternating; medians kept. Chunks are uploaded once and then
# come from each secondary's cache.
#
# Writes plots/bench_split.csv:
#   weights,slow_mode,slow_share,threads_per_node,split,layers_per_node,
#   predicted_ms_per_token,tok_s,total_s,tokens_generated,reps,status
# (predicted_ms_per_token: the planner's slowest node for that split, from
# the figures the nodes reported). Processes and cgroups are removed on exit.
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=${BIN:-bin}
PY=/usr/bin/python3
. tools/bench_lib.sh
SRC=${BENCH_SPLIT_SRC:-checkpoints/synthetic-tinyllama-1.1b-bf16}
OUT=checkpoints/bench-split
N_TOKENS=${BENCH_SPLIT_N_TOKENS:-64}
REPS=${BENCH_SPLIT_REPS:-3}
SHARE=${BENCH_SPLIT_SLOW_SHARE:-0.25}
THREADS=${BENCH_SPLIT_THREADS:-1}
CSV=plots/bench_split.csv
TMP=$(mktemp -d /tmp/mdi_bench_split_XXXXXX)
PIDS=""
CG=""
cleanup() {
    [ -n "${DUTY_PID:-}" ] && kill "$DUTY_PID" 2>/dev/null
    for p in $PIDS; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; done
    for p in $PIDS; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    [ -n "$CG" ] && rmdir "$CG" 2>/dev/null
    [ -n "${KEEP_TMP:-}" ] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
trap "exit 143" TERM INT
mkdir -p plots

[ -x "$BIN/starter" ] && [ -x "$BIN/secondary" ] && [ -x "$BIN/prepare_model" ] || { echo "build first: make"; exit 1; }
if [ ! -f "$SRC/config.json" ]; then
    echo "generating $SRC (synthetic weights)"
    $PY tools/gen_synthetic.py --shape tinyllama-1.1b --dtype bf16 --out "$SRC" || exit 1
fi

# ---- the slow node's means ----
MODE=${BENCH_SPLIT_SLOW:-duty}
quota_us=$($PY -c "print(int(100000 * $SHARE))")
if [ "$MODE" = quota ]; then
    if [ -f /sys/fs/cgroup/cgroup.controllers ] && mkdir "/sys/fs/cgroup/mdi_bench_split_$$" 2>/dev/null; then
        CG=/sys/fs/cgroup/mdi_bench_split_$$
        echo "$quota_us 100000" >"$CG/cpu.max" 2>/dev/null || { rmdir "$CG"; CG=""; }
    elif [ -d /sys/fs/cgroup/cpu ] && mkdir "/sys/fs/cgroup/cpu/mdi_bench_split_$$" 2>/dev/null; then
        CG=/sys/fs/cgroup/cpu/mdi_bench_split_$$
        { echo 100000 >"$CG/cpu.cfs_period_us" && echo "$quota_us" >"$CG/cpu.cfs_quota_us"; } || { rmdir "$CG"; CG=""; }
    fi
    [ -n "$CG" ] || { echo "no writable cgroup for a CPU quota"; exit 1; }
fi
case $MODE in
    duty) echo "slow node: secondary 0 runs $SHARE of each 100 ms (SIGSTOP/SIGCONT)"; FAST_THREADS=$THREADS; SLOW_THREADS=$THREADS ;;
    quota) echo "slow node: secondary 0 under a CPU quota of $SHARE core ($CG)"; FAST_THREADS=$THREADS; SLOW_THREADS=$THREADS ;;
    threads) FAST_THREADS=${BENCH_SPLIT_THREADS:-2}; SLOW_THREADS=1
             echo "slow node: secondary 0 with 1 thread, the others $FAST_THREADS" ;;
    none) FAST_THREADS=$THREADS; SLOW_THREADS=$THREADS; echo "no slow node" ;;
    *) echo "BENCH_SPLIT_SLOW: duty, quota, threads or none"; exit 1 ;;
esac
ON_S=$($PY -c "print('%.3f' % (0.1 * $SHARE))")
OFF_S=$($PY -c "print('%.3f' % (0.1 * (1 - $SHARE)))")

# ---- nodes ----
ports=($(free_ports 5))
CFG=$TMP/cfg.json
cat >"$CFG" <<JSON
{"nodes": {"starter": {"addr": "127.0.0.1", "inference": {"port_in": ${ports[0]}}, "n_threads": $FAST_THREADS},
 "secondary": [
  {"addr": "127.0.0.1", "communication": {"port": ${ports[1]}}, "inference": {"port_in": ${ports[2]}}, "n_threads": $SLOW_THREADS},
  {"addr": "127.0.0.1", "communication": {"port": ${ports[3]}}, "inference": {"port_in": ${ports[4]}}, "n_threads": $FAST_THREADS}]}}
JSON
export OPENBLAS_NUM_THREADS=1
start_node() { # start_node INDEX [cgroup procs file]
    local i=$1 procs=${2:-}
    if [ -n "$procs" ]; then
        sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$procs" "$BIN/secondary" "$CFG" "$i" --cache-dir "$TMP/cache$i" \
            >"$TMP/sec$i.log" 2>&1 &
    else
        "$BIN/secondary" "$CFG" "$i" --cache-dir "$TMP/cache$i" >"$TMP/sec$i.log" 2>&1 &
    fi
    PIDS="$PIDS $!"
}
start_node 0 "${CG:+$CG/cgroup.procs}"
SLOW_PID=${PIDS##* }
if [ "$MODE" = duty ]; then
    ( while kill -0 "$SLOW_PID" 2>/dev/null; do
          kill -STOP "$SLOW_PID" 2>/dev/null; sleep "$OFF_S"; kill -CONT "$SLOW_PID" 2>/dev/null; sleep "$ON_S"
      done ) &
    DUTY_PID=$!
fi
start_node 1
# the plan needs their measured figures: wait until both report them
for i in 0 1; do
    port=${ports[$((1 + 2 * i))]}
    for _ in $(seq 600); do
        curl -s --max-time 2 "http://127.0.0.1:$port/" 2>/dev/null | grep -q '"capabilities"' && break
        sleep 0.2
    done
done

# ---- the two splits ----
mkdir -p "$OUT"
"$BIN/prepare_model" "$SRC" --n-nodes 3 --out "$OUT/even" --no-progress >"$TMP/even_prep.log" 2>&1 ||
    { echo "prepare even: $(tail -2 "$TMP/even_prep.log")"; exit 1; }
"$BIN/prepare_model" "$SRC" --plan-from "$CFG" --out "$OUT/plan" --no-progress >"$TMP/plan_prep.log" 2>&1 ||
    { echo "prepare plan: $(tail -2 "$TMP/plan_prep.log")"; exit 1; }
grep -E "split by|layers \[" "$TMP/plan_prep.log" | sed 's/^\[prepare_model\] //'
lpn() { $PY -c "import json,sys; print(';'.join(map(str, json.load(open(sys.argv[1]))['layers_per_node'])))" "$1/chunks/3nodes/manifest.json"; }
PRED_EVEN=$(sed -n 's/.*split by bytes alone: slowest node \([0-9.]*\) ms.*/\1/p' "$TMP/plan_prep.log")
PRED_PLAN=$(sed -n 's/.*split by capability: slowest node \([0-9.]*\) ms.*/\1/p' "$TMP/plan_prep.log")

# ---- runs ----
tok_s_of() { $PY -c "import json,sys; s=json.load(open(sys.argv[1]))['stats']; print('%.6f %.6f %d' % (s['tokens_generated'] / s['total_s'], s['total_s'], s['tokens_generated']))" "$1"; }
declare -A TOKS TOTALS GENS STATUS
for split in even plan; do TOKS[$split]=""; TOTALS[$split]=""; STATUS[$split]=ok; done
for ((r = 0; r < REPS; r++)); do
    for split in even plan; do
        if timeout 900 "$BIN/starter" --ckpt "$OUT/$split" --nodes-config "$CFG" --prompt-ids 1 --n-tokens "$N_TOKENS" \
            --n-samples 3 --temperature 0 --quiet --timeout 60 --n-threads "$FAST_THREADS" \
            --output "$TMP/$split.json" 2>"$TMP/$split.log"; then
            read -r t total gen <<<"$(tok_s_of "$TMP/$split.json")"
            TOKS[$split]="${TOKS[$split]} $t"; TOTALS[$split]="${TOTALS[$split]} $total"; GENS[$split]=$gen
            echo "rep $r $split ($(lpn "$OUT/$split")): $t tokens/s"
        else
            STATUS[$split]="failed: $(tail -1 "$TMP/$split.log" | tr ',' ';')"
            echo "rep $r $split: ${STATUS[$split]}"
        fi
    done
done

echo "weights,slow_mode,slow_share,threads_per_node,split,layers_per_node,predicted_ms_per_token,tok_s,total_s,tokens_generated,reps,status" >"$CSV"
for split in even plan; do
    pred=$PRED_EVEN; [ $split = plan ] && pred=$PRED_PLAN
    tok=""; total=""
    [ -n "${TOKS[$split]}" ] && tok=$(median ${TOKS[$split]}) && total=$(median ${TOTALS[$split]})
    share=$SHARE; [ "$MODE" = quota ] || [ "$MODE" = duty ] || share=""
    echo "synthetic-tinyllama-1.1b-bf16,$MODE,$share,$FAST_THREADS/$SLOW_THREADS/$FAST_THREADS,$split,$(lpn "$OUT/$split"),$pred,$tok,$total,${GENS[$split]:-0},$REPS,${STATUS[$split]}" >>"$CSV"
done
echo "== $CSV"
column -s, -t <"$CSV"

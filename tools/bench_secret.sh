#!/usr/bin/env bash
# bench_secret: what the shared secret costs the ring: tokens/s of a 2- and
# a 3-node ring on loopback with and without a secret (with one, every frame
# is sealed with ChaCha20-Poly1305 and every control request signed), on
# stories260K and on a synthetic checkpoint with TinyLlama 1.1B's shapes
# (random weights, BF16).
#
#   tools/bench_secret.sh
#   BENCH_SECRET_REPS=5 BENCH_SECRET_MODELS=tinyllama BENCH_SECRET_NODES=3 tools/bench_secret.sh
#
# For each model and node count two rings stand side by side, one set of
# secondaries without a secret and one with (chunks given locally with
# --chunk, 1 thread per node, OPENBLAS_NUM_THREADS=1), and the starter runs
# them alternately BENCH_SECRET_REPS (5) times each (the one to go first
# swaps every repetition), n-samples = n-nodes so that every node is busy,
# every sample decoding from BOS (--prompt-ids 1) greedy, f32 on the wire:
# tok_s = tokens_generated / total_s of the starter's --output JSON (set-up
# left out). The medians are compared: overhead_pct = 100 * (1 - secret /
# open); the target is under 3. Both rings must generate the same tokens.
# Beside the rate, the CPU time the secondaries spent per generated token
# (utime + stime from /proc, summed over them; median of the runs), which
# other load on the machine disturbs far less than the rate.
#
# First, apart from any model, bin/bench_seal: microseconds per frame written
# and read back plain and sealed (thread CPU time, so that other load counts
# little), for dim 64 (stories260K) and 2048 (TinyLlama), 1 to 128 rows:
# plots/bench_secret_frames.csv.
#
# Writes plots/bench_secret.csv:
#   weights,n_nodes,n_samples,n_tokens,secret,reps,tok_s_median,tok_s_runs,
#   bytes_per_token,sec_cpu_ms_per_token,overhead_pct,status,note
# (tok_s_runs ';'-separated in run order; bytes_per_token summed over the
# nodes' bytes_sent; overhead_pct on the secret rows).
#
# Chunks: checkpoints/bench-secret-stories260K/chunks/{2,3}nodes and, as
# tools/bench_ring.sh, checkpoints/bench-tinyllama/chunks/{2,3}nodes from
# checkpoints/synthetic-tinyllama-1.1b-bf16 (generated when missing).
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=${BIN:-bin}
PY=/usr/bin/python3
. tools/bench_lib.sh
MDI_SHARED=${MDI_SHARED:-$(cd .. && pwd)/shared}
REPS=${BENCH_SECRET_REPS:-5}
MODELS=${BENCH_SECRET_MODELS:-"stories260K tinyllama"}
NODES=${BENCH_SECRET_NODES:-"2 3"}
NTOK_SMALL=${BENCH_SECRET_N_TOKENS_SMALL:-200}
NTOK_TL=${BENCH_SECRET_N_TOKENS:-16}
TIMEOUT=${BENCH_SECRET_TIMEOUT:-300}
SECRET=${BENCH_SECRET_SECRET:-bench-secret-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')}
CSV=plots/bench_secret.csv
STARTER=$BIN/starter
SECONDARY=$BIN/secondary

for b in "$STARTER" "$SECONDARY" "$BIN/prepare_model" "$BIN/bench_seal"; do
    [ -x "$b" ] || { echo "bench_secret: $b not built (make first)" >&2; exit 1; }
done
mkdir -p plots checkpoints
bench_setup secret
T0=$(date +%s)

# ---- checkpoints and chunks
# chunks SRC CK: 2- and 3-node chunks of SRC under CK (made once).
chunks() {
    local src=$1 ck=$2 n m
    for n in 2 3; do
        m=$ck/chunks/${n}nodes/manifest.json
        if [ ! -f "$m" ] || [ "$m" -ot "$src" ]; then
            echo "bench_secret: preparing $n-node chunks of $src under $ck"
            "$BIN/prepare_model" "$src" --n-nodes "$n" --out "$ck" --no-progress >>"$TMP/prepare.log" 2>&1 || {
                echo "bench_secret: prepare_model failed: $(tail -n 3 "$TMP/prepare.log")" >&2; return 1; }
        fi
    done
    cat "$ck"/chunks/*/model_*.safetensors >/dev/null
}

echo "weights,n_nodes,n_samples,n_tokens,secret,reps,tok_s_median,tok_s_runs,bytes_per_token,sec_cpu_ms_per_token,overhead_pct,status,note" >"$CSV"
skip_row() { echo "$1,$2,$2,,,,,,,,,$3,$4" >>"$CSV"; }

# write_cfg FILE SECRET N: an N-node configuration on 127.0.0.1 with free
# ports (SECRET may be empty); sets HTTP[] to the secondaries' HTTP ports.
write_cfg() {
    local file=$1 secret=$2 n=$3 i sec=""
    local ports
    read -r -a ports <<<"$(free_ports $(( 2 * n - 1 )))"
    HTTP=()
    for ((i = 0; i < n - 1; i++)); do
        HTTP[$i]=${ports[$((1 + 2 * i))]}
        [ -n "$sec" ] && sec="$sec,"
        sec="$sec{\"addr\": \"127.0.0.1\", \"communication\": {\"starter_addr\": \"127.0.0.1\", \"port\": ${HTTP[$i]}}, \"inference\": {\"port_in\": ${ports[$((2 + 2 * i))]}, \"port_out\": 1}}"
    done
    echo "{${secret:+\"secret\": \"$secret\", }\"nodes\": {\"starter\": {\"addr\": \"127.0.0.1\", \"communication\": {\"port\": 1}, \"inference\": {\"port_in\": ${ports[0]}, \"port_out\": 1}}, \"secondary\": [$sec]}}" >"$file"
}

# start_ring CFG CK N TAG: its secondaries, each given its chunk locally.
start_ring() {
    local cfg=$1 ck=$2 n=$3 tag=$4 i pid
    for ((i = 0; i < n - 1; i++)); do
        "$SECONDARY" "$cfg" "$i" --chunk "$ck/chunks/${n}nodes/model_secondary$i.safetensors" \
            --cache-dir "$TMP/cache_${tag}_$i" --n-threads 1 >>"$TMP/sec_${tag}_$i.log" 2>&1 &
        pid=$!
        PIDS="$PIDS $pid"
        eval "RING_PIDS_$tag=\"\${RING_PIDS_$tag:-} $pid\""
        local up=1
        for _ in $(seq 600); do
            curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${HTTP[$i]}/" 2>/dev/null && { up=0; break; }
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        [ $up = 0 ] || { echo "bench_secret: secondary $i ($tag) did not come up: $(tail -n 3 "$TMP/sec_${tag}_$i.log")" >&2; return 1; }
    done
}

stop_rings() {
    local p
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
    for p in $PIDS; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    PIDS=""
    RING_PIDS_open=""
    RING_PIDS_secret=""
}

# cpu_s PIDS...: user + system CPU seconds of those processes so far.
cpu_s() {
    local p t=0
    for p in "$@"; do t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{print t + ($14 + $15) / hz}' "/proc/$p/stat"); done
    echo "$t"
}

# run_starter OUT CK CFG SAMPLES NTOK: one run; 0 when it wrote OUT.
run_starter() {
    local out=$1 ck=$2 cfg=$3 s=$4 ntok=$5
    rm -f "$out"
    if ! timeout -k 5 "$TIMEOUT" "$STARTER" --ckpt "$ck" --nodes-config "$cfg" --prompt-ids 1 --n-tokens "$ntok" \
            --n-samples "$s" --temperature 0 --n-threads 1 --wire-dtype f32 --timeout 60 --quiet \
            --output "$out" >"$TMP/starter.out" 2>"$TMP/starter.err" || [ ! -f "$out" ]; then
        echo "bench_secret: starter failed: $(tail -n 2 "$TMP/starter.err" | tr '\n' ' ')" >&2
        return 1
    fi
}
tok_s_of() { $PY -c "import json,sys; s=json.load(open(sys.argv[1]))['stats']; print('%.4f' % (s['tokens_generated'] / s['total_s']))" "$1"; }
bpt_of() { $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print('%.1f' % (sum(int(n.get('bytes_sent') or 0) for n in d.get('nodes') or []) / d['stats']['tokens_generated']))" "$1"; }
same_tokens() {
    $PY - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p))["samples"] for p in sys.argv[1:3])
sys.exit(0 if [s["generated_ids"] for s in a] == [s["generated_ids"] for s in b] else 1)
EOF
}

# ---- one frame, plain and sealed
echo "bench_secret: one frame written and read back, plain and sealed (us per frame and hop, thread CPU time):"
"$BIN/bench_seal" >plots/bench_secret_frames.csv
column -s, -t plots/bench_secret_frames.csv 2>/dev/null || cat plots/bench_secret_frames.csv
echo "wrote plots/bench_secret_frames.csv"
echo

# ---- the pairs
for model in $MODELS; do
    case $model in
    stories260K)
        SRC=$MDI_SHARED/models/stories260K; CK=checkpoints/bench-secret-stories260K; NTOK=$NTOK_SMALL; W=stories260K ;;
    tinyllama)
        SRC=checkpoints/synthetic-tinyllama-1.1b-bf16; CK=checkpoints/bench-tinyllama; NTOK=$NTOK_TL; W=synthetic-tinyllama-1.1b-bf16
        if [ ! -f "$SRC/model.safetensors" ]; then
            echo "bench_secret: generating $SRC (synthetic)"
            $PY tools/gen_synthetic.py --shape tinyllama-1.1b --dtype bf16 --out "$SRC" || exit 1
        fi ;;
    *) echo "bench_secret: unknown model $model (stories260K, tinyllama)" >&2; continue ;;
    esac
    if [ ! -e "$SRC" ] || ! chunks "$SRC" "$CK"; then
        for n in $NODES; do skip_row "$W" "$n" SKIP "no checkpoint or chunks"; done
        continue
    fi
    for n in $NODES; do
        write_cfg "$TMP/open.json" "" "$n"
        start_ring "$TMP/open.json" "$CK" "$n" open || { stop_rings; skip_row "$W" "$n" FAIL "secondaries did not start"; continue; }
        write_cfg "$TMP/secret.json" "$SECRET" "$n"
        start_ring "$TMP/secret.json" "$CK" "$n" secret || { stop_rings; skip_row "$W" "$n" FAIL "secondaries did not start"; continue; }
        # One run each first (not counted): chunks into the page cache, the
        # secret's key stretched on every node.
        run_starter "$TMP/warm_open.json" "$CK" "$TMP/open.json" "$n" 4 && run_starter "$TMP/warm_secret.json" "$CK" "$TMP/secret.json" "$n" 4
        open=(); sealed=(); cpu_open=(); cpu_secret=(); ok=1
        for r in $(seq 1 "$REPS"); do
            # The one to go first swaps every repetition.
            order="open secret"; [ $((r % 2)) -eq 0 ] && order="secret open"
            for kind in $order; do
                eval "pids=\$RING_PIDS_$kind"
                # shellcheck disable=SC2086,SC2154 # pids: a list of numbers
                c0=$(cpu_s $pids)
                if run_starter "$TMP/${kind}_$r.json" "$CK" "$TMP/$kind.json" "$n" "$NTOK"; then
                    t=$(tok_s_of "$TMP/${kind}_$r.json")
                    # shellcheck disable=SC2086
                    c=$(awk -v a="$c0" -v b="$(cpu_s $pids)" -v n="$(( n * NTOK ))" 'BEGIN {printf "%.3f", 1000 * (b - a) / n}')
                    if [ "$kind" = open ]; then open+=("$t"); cpu_open+=("$c"); else sealed+=("$t"); cpu_secret+=("$c"); fi
                else ok=0; fi
            done
            echo "  $W $n nodes rep $r: open ${open[-1]:-?} tok/s, secret ${sealed[-1]:-?} tok/s"
        done
        stop_rings
        if [ "${#open[@]}" = 0 ] || [ "${#sealed[@]}" = 0 ]; then skip_row "$W" "$n" FAIL "starter failed"; continue; fi
        mo=$(median "${open[@]}"); ms=$(median "${sealed[@]}")
        ov=$(awk -v o="$mo" -v s="$ms" 'BEGIN {printf "%.2f", 100 * (1 - s / o)}')
        note=""
        same_tokens "$TMP/open_1.json" "$TMP/secret_1.json" || note="tokens differ"
        [ $ok = 1 ] || note="${note:+$note; }some runs failed"
        co=$(median "${cpu_open[@]}"); cs=$(median "${cpu_secret[@]}")
        echo "$W,$n,$n,$NTOK,no,${#open[@]},$mo,$(IFS=';'; echo "${open[*]}"),$(bpt_of "$TMP/open_1.json"),$co,,ok,$note" >>"$CSV"
        echo "$W,$n,$n,$NTOK,yes,${#sealed[@]},$ms,$(IFS=';'; echo "${sealed[*]}"),$(bpt_of "$TMP/secret_1.json"),$cs,$ov,ok,$note" >>"$CSV"
        echo "$W, $n nodes, $n samples: open $mo tok/s, secret $ms tok/s: $ov % lower (medians of ${#open[@]});" \
            "secondaries' CPU per token $co ms open, $cs ms secret${note:+ ($note)}"
    done
done

echo
echo "The secret's cost ($(( $(date +%s) - T0 ))s in all; tok_s = generated tokens / generation time, medians):"
cut -d, -f1-7,9-13 "$CSV" | column -s, -t 2>/dev/null || cut -d, -f1-7,9-13 "$CSV"
echo "wrote $CSV"
exit 0

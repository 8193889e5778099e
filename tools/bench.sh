#!/usr/bin/env bash
# bench: single-node throughput of the engine on synthetic (random-weight)
# checkpoints with the real shapes of TinyLlama 1.1B, Llama 3.2 1B and
# Qwen2.5 0.5B, against the memory-bandwidth bound of decoding.
#
#   make bench                   (sets BUILD and BIN)
#   BENCH_SHAPES="qwen2.5-0.5b" BENCH_THREADS=2 tools/bench.sh
#
# Checkpoints are generated once and cached in checkpoints/synthetic-<shape>-<dtype>/
# (ignored by git). For each shape, storage dtype and thread count it runs
#
#   bin/starter --ckpt DIR --prompt-ids <128 ids> --n-tokens 32 --temperature 0
#               --n-threads T --dtype D --quiet --output out.json
#
# and reads out.json "stats". Decoding reads every weight once per token, so
# its bound is bandwidth / weight_bytes_per_token, with the read bandwidth of
# bin/bench_kernels --bandwidth-only (or a numpy measurement when that tool
# is missing). Prints a table, writes plots/bench_engine.csv and, when
# gnuplot is there, plots/bench_engine.png. Every row is synthetic weights:
# the figures measure the engine, not a model's quality.
#
# Runs (storage -> compute): f32 -> f32, bf16 -> bf16, and f32 -> q8_0 and
# f32 -> q4_0 (quantized at load into the bytes prepare_model --dtype would
# write); when the disk is too short for the F32 checkpoints, bf16 stands in
# for f32 storage (weights converted at load). BENCH_COMBOS overrides, e.g.
# "bf16:f32 bf16:bf16". Weights are held in anonymous memory (the starter's
# default, --no-mmap).
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
PY=/usr/bin/python3
SHAPES=${BENCH_SHAPES:-"tinyllama-1.1b llama3.2-1b qwen2.5-0.5b"}
THREADS=${BENCH_THREADS:-"1 2"}
NTOK=${BENCH_N_TOKENS:-32}
NPROMPT=${BENCH_PROMPT_TOKENS:-128}
CSV=plots/bench_engine.csv
PNG=plots/bench_engine.png
STARTER=$BIN/starter

if [ ! -x "$STARTER" ]; then
    echo "bench: $STARTER not built (make first)" >&2
    exit 1
fi
mkdir -p plots checkpoints
tmp=$(mktemp -d /tmp/mdi-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

ckpt_dir() { echo "checkpoints/synthetic-$1-$2"; }
have_ckpt() { [ -f "$(ckpt_dir "$1" "$2")/config.json" ] && [ -f "$(ckpt_dir "$1" "$2")/model.safetensors" ]; }

# ---- checkpoints: bf16 always; f32 when the disk has room for all of them
# with 4 GB to spare.
need_f32=0
for s in $SHAPES; do
    have_ckpt "$s" f32 || need_f32=$(( need_f32 + $($PY tools/gen_synthetic.py --shape "$s" --dtype f32 --out x --print-bytes) ))
done
need_bf16=0
for s in $SHAPES; do
    have_ckpt "$s" bf16 || need_bf16=$(( need_bf16 + $($PY tools/gen_synthetic.py --shape "$s" --dtype bf16 --out x --print-bytes) ))
done
avail=$(( $(df -Pk checkpoints | awk 'NR==2 {print $4}') * 1024 ))
margin=$(( 4 << 30 ))
use_f32=1
if [ $(( need_bf16 + need_f32 + margin )) -gt "$avail" ]; then
    use_f32=0
    echo "bench: $(( avail >> 20 )) MiB free, F32 checkpoints need $(( need_f32 >> 20 )) MiB more: F32 storage skipped, bf16 -> f32 compute instead"
fi
if [ $(( need_bf16 + margin )) -gt "$avail" ]; then
    echo "bench: not enough disk for the BF16 checkpoints ($(( need_bf16 >> 20 )) MiB needed, $(( avail >> 20 )) MiB free)" >&2
    exit 1
fi
COMBOS=${BENCH_COMBOS:-$([ $use_f32 = 1 ] && echo "f32:f32 bf16:bf16 f32:q8_0 f32:q4_0" ||
    echo "bf16:f32 bf16:bf16 bf16:q8_0 bf16:q4_0")}

for s in $SHAPES; do
    for d in $(for c in $COMBOS; do echo "${c%%:*}"; done | sort -u); do
        if ! have_ckpt "$s" "$d"; then
            echo "bench: generating $(ckpt_dir "$s" "$d") (synthetic)"
            $PY tools/gen_synthetic.py --shape "$s" --dtype "$d" --out "$(ckpt_dir "$s" "$d")" || exit 1
        fi
    done
done

# ---- memory read bandwidth per thread count
bw_file=$tmp/bandwidth.txt
bw_source="bench_kernels"
kb=$(cd "$BIN" 2>/dev/null && pwd)/bench_kernels
if [ -x "$kb" ] && (cd "$tmp" && timeout 300 "$kb" --bandwidth-only >"$tmp/bk.out" 2>/dev/null); then
    # Lines "bandwidth_bytes_per_s_<T>t <bytes/s>", or the human-readable
    # "threads T: read bandwidth X GB/s".
    awk '/^bandwidth_bytes_per_s/ {print $1, $2}
         /^threads [0-9]+: read bandwidth/ {t = $2; sub(":", "", t); printf "bandwidth_bytes_per_s_%dt %.6g\n", t, $5 * 1e9}' \
        "$tmp/bk.out" >"$bw_file"
fi
if ! grep -q '^bandwidth_bytes_per_s' "$bw_file" 2>/dev/null; then
    # Fallback: numpy sums over a 1 GiB array, the array split between T
    # threads (numpy releases the GIL inside the reduction); best of 5.
    bw_source="numpy"
    $PY - "$THREADS" >"$bw_file" <<'EOF'
import sys, time, threading
import numpy as np
a = np.ones(1 << 27)      # 1 GiB of float64
for t in (int(x) for x in sys.argv[1].split()):
    parts = np.array_split(a, t)
    best = 0.0
    for _ in range(5):
        th = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for x in th: x.start()
        for x in th: x.join()
        best = max(best, a.nbytes / (time.perf_counter() - t0))
    print("bandwidth_bytes_per_s_%dt %.6g" % (t, best))
EOF
fi
bandwidth_for() { # threads -> bytes/s
    local v
    v=$(awk -v k="bandwidth_bytes_per_s_$1t" '$1 == k {print $2; exit}' "$bw_file")
    [ -n "$v" ] || v=$(awk '$1 == "bandwidth_bytes_per_s" {print $2; exit}' "$bw_file")
    [ -n "$v" ] || v=$(awk '$1 ~ /^bandwidth_bytes_per_s/ {print $2; exit}' "$bw_file")
    echo "${v:-0}"
}

# ---- runs
ids=$($PY -c "import random; r=random.Random(128); print(','.join(str(r.randrange(100, 30000)) for _ in range($NPROMPT)))")
echo "shape,storage_dtype,compute_dtype,threads,prefill_tok_s,decode_tok_s,bound_tok_s,pct_of_bound,ttft_s,peak_rss_mb,blas_core" >"$CSV"
start=$(date +%s)
for s in $SHAPES; do
    for c in $COMBOS; do
        storage=${c%%:*}; compute=${c##*:}
        dir=$(ckpt_dir "$s" "$storage")
        have_ckpt "$s" "$storage" || continue
        for t in $THREADS; do
            out=$tmp/$s-$storage-$compute-$t.json
            if ! timeout 600 "$STARTER" --ckpt "$dir" --prompt-ids "$ids" --n-tokens "$NTOK" \
                    --temperature 0 --n-threads "$t" --dtype "$compute" --quiet --output "$out" \
                    >"$tmp/run.out" 2>"$tmp/run.err"; then
                echo "bench: $s $storage->$compute ${t}t failed: $(tail -n 2 "$tmp/run.err" | tr '\n' ' ')" >&2
                continue
            fi
            $PY - "$out" "synthetic-$s" "$storage" "$compute" "$t" "$(bandwidth_for "$t")" >>"$CSV" <<'EOF'
import json, sys
out, shape, sd, cd, t, bw = sys.argv[1:7]
st = json.load(open(out))["stats"]
wb = float(st.get("weight_bytes_per_token") or 0)
bound = float(bw) / wb if wb > 0 and float(bw) > 0 else 0.0
dec = float(st.get("decode_tok_s") or 0)
pct = 100.0 * dec / bound if bound > 0 else 0.0
print("%s,%s,%s,%s,%.3f,%.3f,%.3f,%.1f,%.4f,%.1f,%s" % (
    shape, sd, cd, t, float(st.get("prefill_tok_s") or 0), dec, bound, pct,
    float(st.get("ttft_s") or 0), float(st.get("peak_rss_bytes") or 0) / 2**20,
    str(st.get("blas_core") or "").replace(",", ";")))
EOF
        done
    done
done

echo
echo "Engine throughput on synthetic weights ($NPROMPT-token prompt, $NTOK new tokens, bandwidth from $bw_source; $(( $(date +%s) - start ))s):"
for t in $THREADS; do
    echo "  read bandwidth ${t}t: $(awk -v b="$(bandwidth_for "$t")" 'BEGIN {printf "%.2f GB/s", b / 1e9}')"
done
column -s, -t <"$CSV" 2>/dev/null || cat "$CSV"
echo "wrote $CSV"

if command -v gnuplot >/dev/null 2>&1 && [ "$(wc -l <"$CSV")" -gt 1 ]; then
    awk -F, 'NR > 1 {printf "\"%s %s>%s %st\" %s %s\n", substr($1, 11), $2, $3, $4, $6, $7}' "$CSV" >"$tmp/plot.dat"
    gnuplot <<EOF
set terminal pngcairo size 1200,600 font ",10"
set output "$PNG"
set title "Decode throughput vs memory-bandwidth bound (synthetic weights, one node)"
set ylabel "tokens/s"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -35 scale 0
set key top left
set bmargin 9
set rmargin 10
set grid ytics
set yrange [0:*]
plot "$tmp/plot.dat" using 2:xtic(1) title "decode tok/s", "" using 3 title "bound (bandwidth / weight bytes per token)"
EOF
    [ -f "$PNG" ] && echo "wrote $PNG"
fi

#!/usr/bin/env bash
# bench_batch: aggregate decode throughput of standalone mode with 1, 2, 4,
# 8 samples at once. The samples' decode steps run as one batch (each
# weight matrix read once per step for all of them), so while decoding is
# bound by memory bandwidth the aggregate tokens/s grows with the samples;
# issue 9's target is 8 samples at least 4 times 1 sample.
#
#   tools/bench_batch.sh                         (checkpoints/synthetic-tinyllama-1.1b-bf16)
#   BENCH_BATCH_CKPT=DIR BENCH_BATCH_SAMPLES="1 8" BENCH_THREADS=4 tools/bench_batch.sh
#   BENCH_STARTER=/other/bin/starter tools/bench_batch.sh   (another build, e.g. before batching)
#
# Each run:
#
#   bin/starter --ckpt DIR --prompt-ids <16 ids> --n-tokens 32 --n-samples N
#               --temperature 0 --n-threads T --quiet --output out.json
#
# decode_tok_s in out.json is every sample's decode tokens over the time
# spent decoding; prefill (each sample's prompt, run alone when it takes
# its slot) is timed apart and not in it. Prints a table and writes
# plots/bench_batch.csv (label, samples, threads, decode_tok_s,
# prefill_tok_s, total_s, x_vs_1: decode_tok_s over the 1-sample row's).
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
PY=/usr/bin/python3
STARTER=${BENCH_STARTER:-$BIN/starter}
CKPT=${BENCH_BATCH_CKPT:-checkpoints/synthetic-tinyllama-1.1b-bf16}
SAMPLES=${BENCH_BATCH_SAMPLES:-"1 2 4 8"}
THREADS=${BENCH_THREADS:-$(nproc)}
NTOK=${BENCH_N_TOKENS:-32}
LABEL=${BENCH_LABEL:-batched}
CSV=${BENCH_BATCH_CSV:-plots/bench_batch.csv}

if [ ! -x "$STARTER" ]; then echo "bench_batch: $STARTER not built (make first)" >&2; exit 1; fi
if [ ! -f "$CKPT/config.json" ]; then
    echo "bench_batch: no checkpoint in $CKPT (tools/gen_synthetic.py --shape tinyllama-1.1b --dtype bf16 --out $CKPT)" >&2
    exit 1
fi
mkdir -p plots
tmp=$(mktemp -d /tmp/mdi-bench-batch.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
IDS=1,450,4996,931,263,931,297,263,2217,29892,727,471,263,2319,4796,29889

[ -f "$CSV" ] || echo "label,samples,threads,decode_tok_s,prefill_tok_s,total_s,x_vs_1" >"$CSV"
printf '%-10s %8s %8s %14s %14s %9s %7s\n' label samples threads decode_tok/s prefill_tok/s total_s x_vs_1
base=""
for n in $SAMPLES; do
    out="$tmp/out_$n.json"
    if ! "$STARTER" --ckpt "$CKPT" --prompt-ids "$IDS" --n-tokens "$NTOK" --n-samples "$n" --temperature 0 \
        --n-threads "$THREADS" --quiet --output "$out" 2>"$tmp/err_$n.log"; then
        echo "bench_batch: $n samples failed: $(tail -2 "$tmp/err_$n.log")" >&2
        continue
    fi
    read -r dec pre tot < <($PY -c "import json,sys; s=json.load(open(sys.argv[1]))['stats']; \
print(s['decode_tok_s'], s['prefill_tok_s'], s['total_s'])" "$out")
    [ -z "$base" ] && base=$dec
    x=$($PY -c "print('%.2f' % ($dec / $base if $base else 0))")
    printf '%-10s %8d %8d %14.2f %14.2f %9.2f %7s\n' "$LABEL" "$n" "$THREADS" "$dec" "$pre" "$tot" "$x"
    echo "$LABEL,$n,$THREADS,$dec,$pre,$tot,$x" >>"$CSV"
done

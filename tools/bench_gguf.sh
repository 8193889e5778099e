#!/usr/bin/env bash
# bench_gguf: GGUF files as people download them, our starter beside
# llama.cpp's llama-bench on the same file, in the same run: prefill and
# decode tok/s with 1 and 2 threads, and the memory each node of a 3-node
# split needs.
#
#   LLAMACPP_BENCH=/path/to/llama-bench BENCH_GGUF_DIR=/path/to/gguf tools/bench_gguf.sh
#   BENCH_GGUF_FILES="tl-q4_k_m l32-q8_0" BENCH_GGUF_REPS=5 LLAMACPP_BENCH=... tools/bench_gguf.sh
#
# The files (BENCH_GGUF_FILES, names under BENCH_GGUF_DIR, default
# checkpoints/gguf; default "tl-q4_k_m tl-q8_0 l32-q4_k_m l32-q8_0"):
#   tl-*   synthetic (random) weights with TinyLlama 1.1B's shapes;
#          tl-f32.gguf from tools/gen_synthetic.py --shape tinyllama-1.1b
#          --dtype f32 and bin/gguf_tool from-hf (or llama.cpp's converter)
#   l32-*  the same with Llama 3.2 1B's shapes (--shape llama3.2-1b: tied
#          embeddings, vocabulary 128256, rope_freqs.weight)
#   *-q4_k_m, *-q8_0: the F32 file quantized by llama.cpp's llama-quantize
#          (Q4_K_M: Q4_K with some Q6_K and Q5_K, as downloaded files are)
#   llama-quantize F32.gguf OUT.gguf Q4_K_M    (and Q8_0)
# llama.cpp is not part of this project: build it wherever you keep it and
# name llama-bench in LLAMACPP_BENCH; without it the script runs our side only
# (peer columns 0) and says so.
#
# For each file and thread count (BENCH_GGUF_THREADS, default "1 2"), the two
# programs alternate REPS times (BENCH_GGUF_REPS, default 3; the one to go
# first swaps every repetition), the median of each is reported:
#
#   llama-bench -m F.gguf -p 128 -n 32 -t T -r 1 -mmp 0 -o csv   avg_ts of pp128, tg32
#   bin/starter --ckpt F.gguf --prompt-ids <128 ids> --n-tokens 32 --temperature 0
#               --n-threads T --no-mmap --quiet --output out.json
#                                          stats.prefill_tok_s, stats.decode_tok_s
#
# Weights in anonymous memory for both (our --no-mmap, llama-bench -mmp 0):
# on a machine that reclaims clean file pages, weights read from a mapping
# are read from disk again and again. Both count the 128-token prefill as
# one batch and each decode step as one forward pass of one token
# (llama-bench decodes from an empty cache, ours after the 128 prompt
# tokens); llama.cpp keeps its KV cache in F16, ours in F32. The load
# average is printed with every repetition: on a shared machine other work
# skews the figures, the 2-thread ones most.
#
# Memory per node: bin/prepare_model F.gguf --n-nodes 3 splits the file
# (chunks keep each tensor's type and bytes); for each node the chunk's
# bytes (its weights, which --no-mmap reads into anonymous memory) plus its
# KV cache for BENCH_GGUF_CTX positions (default 2048; F32, 2 x layers x
# kv_heads x head_dim x 4 bytes per position). These are computed, not
# measured RSS (a node's RSS adds its run buffers, a few MB, and the
# starter's the tokenizer).
#
# Writes plots/bench_gguf.csv:
#   model,file,threads,phase,ours_tok_s,peer_tok_s,ratio,target
# (ratio = ours / llama.cpp; target: decode 1.2, prefill 1.0, issue 8's), and
# plots/bench_gguf_mem.csv:
#   model,file,n_nodes,node,layers,chunk_bytes,kv_bytes,ctx,total_bytes
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=${BIN:-bin}
PY=/usr/bin/python3
. tools/bench_lib.sh
DIR=${BENCH_GGUF_DIR:-checkpoints/gguf}
FILES=${BENCH_GGUF_FILES:-"tl-q4_k_m tl-q8_0 l32-q4_k_m l32-q8_0"}
THREADS=${BENCH_GGUF_THREADS:-"1 2"}
REPS=${BENCH_GGUF_REPS:-3}
CTX=${BENCH_GGUF_CTX:-2048}
LLAMACPP=${LLAMACPP_BENCH:-}
CSV=plots/bench_gguf.csv
MEM_CSV=plots/bench_gguf_mem.csv
tmp=$(mktemp -d /tmp/bench_gguf_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0

if [ -z "$LLAMACPP" ] || [ ! -x "$LLAMACPP" ]; then
    echo "SKIP: bench_gguf: LLAMACPP_BENCH is not set to a built llama-bench: our side only"
    LLAMACPP=
fi
if [ ! -x "$BIN/starter" ] || [ ! -x "$BIN/prepare_model" ]; then
    echo "bench_gguf: build first (make)" >&2; exit 1
fi


# 128 prompt ids: BOS and then ids spread over the vocabulary (llama-bench
# draws them at random: the work does not depend on them).
prompt_ids() { # gguf -> ids
    "$BIN/gguf_tool" show "$1" | $PY -c '
import re, sys
t = sys.stdin.read()
v = int(re.search(r"^  token_embd\.weight +\S+ +ne \[\d+, (\d+)\]", t, re.M).group(1))
b = re.search(r"^  tokenizer\.ggml\.bos_token_id +\S+ +(\d+)", t, re.M)
print(",".join([b.group(1) if b else "1"] + [str(3 + i * 7919 % (v - 3)) for i in range(1, 128)]))'
}
run_ours() { # gguf threads -> "prefill decode rss_mib"
    timeout 900 "$BIN/starter" --ckpt "$1" --prompt-ids "$IDS" --n-tokens 32 --temperature 0 --n-threads "$2" \
        --no-mmap --quiet --output "$tmp/ours.json" >"$tmp/ours.out" 2>"$tmp/ours.err" || {
        echo "bench_gguf: starter failed: $(tail -n 2 "$tmp/ours.err" | tr '\n' ' ')" >&2; return 1; }
    $PY -c "import json, sys; s = json.load(open(sys.argv[1]))['stats']
print('%.3f %.3f %d' % (s['prefill_tok_s'], s['decode_tok_s'], s.get('peak_rss_bytes', 0) >> 20))" "$tmp/ours.json"
}
run_peer() { # gguf threads -> "prefill decode"
    [ -n "$LLAMACPP" ] || { echo "0 0"; return 0; }
    timeout 900 "$LLAMACPP" -m "$1" -p 128 -n 32 -t "$2" -r 1 -mmp 0 -o csv >"$tmp/lcpp.csv" 2>"$tmp/lcpp.err" || {
        echo "bench_gguf: llama-bench failed: $(tail -n 2 "$tmp/lcpp.err" | tr '\n' ' ')" >&2; return 1; }
    $PY - "$tmp/lcpp.csv" <<'EOF'
import csv, sys
pp = tg = 0.0
for r in csv.DictReader(open(sys.argv[1])):
    if int(r["n_prompt"]) > 0 and int(r["n_gen"]) == 0:
        pp = float(r["avg_ts"])
    elif int(r["n_gen"]) > 0 and int(r["n_prompt"]) == 0:
        tg = float(r["avg_ts"])
print("%.3f %.3f" % (pp, tg))
EOF
}

echo "model,file,threads,phase,ours_tok_s,peer_tok_s,ratio,target" >"$CSV"
echo "model,file,n_nodes,node,layers,chunk_bytes,kv_bytes,ctx,total_bytes" >"$MEM_CSV"
echo "bench_gguf: ours $BIN/starter --no-mmap, peer ${LLAMACPP:-none} -mmp 0; $REPS repetitions, alternating"
for name in $FILES; do
    f=$DIR/$name.gguf
    if [ ! -f "$f" ]; then
        echo "SKIP: bench_gguf: $f missing (see the header for how to make it)"; continue
    fi
    model=${name%%-*}
    IDS=$(prompt_ids "$f") || { echo "bench_gguf: $f: no token_embd.weight" >&2; failures=$((failures + 1)); continue; }
    cat "$f" >/dev/null # into the page cache, so that neither pays the disk on its first load
    for t in $THREADS; do
        op=(); od=(); pp=(); pd=()
        for r in $(seq 1 "$REPS"); do
            if [ $((r % 2)) = 1 ]; then
                o=$(run_ours "$f" "$t") && p=$(run_peer "$f" "$t") || { failures=$((failures + 1)); break; }
            else
                p=$(run_peer "$f" "$t") && o=$(run_ours "$f" "$t") || { failures=$((failures + 1)); break; }
            fi
            read -r a b rss <<<"$o"; read -r c d <<<"$p"
            op+=("$a"); od+=("$b"); pp+=("$c"); pd+=("$d")
            echo "  $name ${t}t rep $r: ours prefill $a decode $b tok/s (peak RSS $rss MiB); llama.cpp prefill $c" \
                 "decode $d tok/s (load average $(cut -d' ' -f1 /proc/loadavg))"
        done
        [ "${#op[@]}" -gt 0 ] || continue
        for phase in prefill decode; do
            if [ $phase = prefill ]; then mo=$(median "${op[@]}"); mp=$(median "${pp[@]}"); tg=1.0
            else mo=$(median "${od[@]}"); mp=$(median "${pd[@]}"); tg=1.2; fi
            ratio=$(awk -v a="$mo" -v b="$mp" 'BEGIN {printf "%.3f", (b > 0) ? a / b : 0}')
            echo "$model,$name,$t,$phase,$mo,$mp,$ratio,$tg" >>"$CSV"
            echo "  $name ${t}t $phase: ours $mo, llama.cpp $mp tok/s, ratio $ratio (target $tg)"
        done
    done

    # Memory per node of a 3-node split.
    out=$tmp/split-$name
    if ! "$BIN/prepare_model" "$f" --n-nodes 3 --out "$out" --no-progress >"$tmp/prep.log" 2>&1; then
        echo "bench_gguf: prepare_model $f: $(tail -n 2 "$tmp/prep.log" | tr '\n' ' ')" >&2
        failures=$((failures + 1)); continue
    fi
    $PY - "$out/chunks/3nodes" "$model" "$name" "$CTX" >>"$MEM_CSV" <<'EOF'
import json, os, sys
d, model, name, ctx = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = json.load(open(os.path.join(d, "..", "..", "config.json")))
hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
kvh = cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
man = json.load(open(os.path.join(d, "manifest.json")))
for i, c in enumerate(man["chunks"]):
    size = os.path.getsize(os.path.join(d, c["file"]))
    layers = c["layer_end"] - c["layer_begin"]
    kv = 2 * layers * kvh * hd * 4 * ctx
    print("%s,%s,3,%d,%d,%d,%d,%d,%d" % (model, name, i, layers, size, kv, ctx, size + kv))
    print("  %s node %d: %d layers, chunk %.1f MiB + KV %.1f MiB (%d positions) = %.1f MiB"
          % (name, i, layers, size / 2**20, kv / 2**20, ctx, (size + kv) / 2**20), file=sys.stderr)
EOF
    rm -rf "$out"
done
echo "bench_gguf: wrote $CSV and $MEM_CSV"
[ "$failures" -eq 0 ]

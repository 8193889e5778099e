#!/usr/bin/env bash
# e2e_quant: Q8_0 and Q4_0 weights end to end. prepare_model quantizes a
# synthetic tiny-llama (every row length a multiple of 32) into chunks;
# --inspect shows the types, --verify the hashes; a re-run reuses the
# chunks and another --dtype does not. The engine's logits, standalone and
# on a 3-node ring, are checked against tests/ref_forward.py, which decodes
# the same chunk bytes itself (from the format definition) and runs the
# forward pass in float64.
#
# Bound: normalised max error max|c - ref| / max|ref| <= 1e-3 per logits
# row. The reference models what the engine computes: block-typed weights
# times activations quantized to Q8_0 for each token run alone (decode, and
# the output head), F32 activations for a prompt run at once. What is left
# is F32 summation order (measured about 1e-7) and, rarely, an activation
# value on a rounding boundary of its Q8_0 quantization landing one step
# away (one value off by d = amax/127 in one block). Not modelling the
# activation quantization moves these logits by 5e-3 to 1e-1, so the bound
# tells a wrong activation path from a right one.
#
# Also: the ring with Q8_0 weights gives standalone's tokens (and logits)
# exactly; starter --dtype q4_0 quantizes a float checkpoint at load into the
# same bytes prepare_model writes (identical logits), on the starter and on
# the secondaries through the run configuration, from F32, BF16 and F16
# sources; stories260K, whose down projection has rows of 172 values, keeps
# those matrices as F16 with a note, and its llama2.c .bin quantizes to the
# same logits; bad input gives one clear line each.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh
PM=$BIN/prepare_model
ST=$BIN/starter
if [ ! -x "$PM" ] || [ ! -x "$ST" ]; then echo "SKIP: e2e_quant: binaries not built"; exit 0; fi

SRC="$TMP/tl"
if ! $PY tools/gen_synthetic.py --shape tiny-llama --dtype f32 --out "$SRC" >"$TMP/gen.log" 2>&1; then
    fail "e2e_quant synthetic checkpoint" "$(tail -3 "$TMP/gen.log")"; exit 1
fi
IDS=1,15,27,300,9
NTOK=8
ONE=(--temperature 0 --quiet --n-threads 1)

# ref NAME CHUNKS_DIR LOGITS OUT.json BOUND [extra]: the reference's check lines.
ref() {
    local name=$1 dir=$2 logits=$3 out=$4 bound=$5; shift 5
    $PY tests/ref_forward.py --ckpt "$dir" --check "$logits" --samples "$out" --prompt-ids "$IDS" \
        --n-tokens $NTOK --bound "$bound" --name "$name" "$@" 2>>"$TMP/ref.log" || true
}

# one_line NAME STATUS FILE PATTERN: failed (non-zero status), the file holds
# exactly one line, and it matches PATTERN.
one_line() {
    local name=$1 st=$2 file=$3 pat=$4 n
    n=$(grep -c . "$file")
    [ "$st" -ne 0 ] && [ "$n" = 1 ] && grep -qE "$pat" "$file"
    check "$name" $? "exit $st, $n lines: $(head -3 "$file")"
}

for q in q8_0 q4_0; do
    CK="$TMP/ck/tl-$q"
    ok=0
    for n in 1 3; do
        "$PM" "$SRC" --n-nodes $n --dtype $q --out "$CK" --no-progress >>"$TMP/prepare.log" 2>&1 || ok=1
    done
    check "e2e_quant prepare --dtype $q (1 and 3 nodes)" $ok "$(tail -3 "$TMP/prepare.log")"

    # --inspect: every matrix stored as the block type, norms F32; sizes as the format says.
    "$PM" --inspect "$CK/chunks/1nodes/model_starter.safetensors" >"$TMP/inspect_$q" 2>&1
    $PY - "$TMP/inspect_$q" $q <<'EOF' >"$TMP/inspect_chk" 2>&1
import re, sys
q = sys.argv[2]
rows = [l.split() for l in open(sys.argv[1]) if re.match(r"\s+(model|lm_head)\.", l)]
assert len(rows) == 1 + 3 * 9 + 2, len(rows)  # embedding, 3 layers, final norm, head
per_block = {"q8_0": 34, "q4_0": 18}[q]
for r in rows:
    name, dt = r[0], r[1]
    shape = [int(x) for x in re.findall(r"\d+", " ".join(r[2:-2]))]
    nbytes = int(r[-2])
    if len(shape) == 2:
        assert dt == q, (name, dt)
        assert nbytes == shape[0] * shape[1] // 32 * per_block, (name, shape, nbytes)
    else:
        assert dt == "f32" and nbytes == shape[0] * 4, (name, dt)
EOF
    check "e2e_quant --inspect shows $q matrices, f32 norms, and their sizes" $? "$(tail -2 "$TMP/inspect_chk")"
    "$PM" --inspect "$CK" --verify >"$TMP/verify_$q" 2>&1
    st=$?
    [ $st -eq 0 ] && [ "$(grep -c 'ok (hash checked)' "$TMP/verify_$q")" = 4 ] && grep -q "dtype $q" "$TMP/verify_$q"
    check "e2e_quant --inspect --verify checks every $q chunk's hash" $? "exit $st: $(tail -3 "$TMP/verify_$q")"

    # Standalone: logits against the reference.
    "$ST" --ckpt "$CK" --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/sa_$q.logits" \
        --output "$TMP/sa_$q.json" 2>>"$TMP/starter.log"
    check "e2e_quant standalone $q chunk runs" $? "$(tail -3 "$TMP/starter.log")"
    ref "tiny-llama-$q-standalone" "$CK/chunks/1nodes" "$TMP/sa_$q.logits" "$TMP/sa_$q.json" 1e-3
    dt=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['stats']['dtype'])" "$TMP/sa_$q.json" 2>/dev/null)
    check "e2e_quant standalone $q: stats dtype is $q" $([ "$dt" = $q ]; echo $?) "dtype '$dt'"

    # A prompt of 200 tokens runs as dequantized panels and sgemm (F32
    # activations), a short one as integer tiles: both against the reference
    # (which follows the engine's stats.int8_prefill_below). On AVX-512 VNNI
    # every prompt runs as integer tiles (the GEMM kernel, whose rows
    # test_kernels checks bit for bit against matvec), so the long prompt runs
    # with MDI_SIMD=avx512bw to keep the sgemm path checked: a long prompt
    # with Q8_0 activations meets the rounding discontinuity described below
    # (measured 8e-3 to 2e-2 with the row tiles as with the GEMM).
    # Only the prompt's row is compared: the decode rows' Q8_0 activations
    # may round an element one step apart from the float64 reference's
    # (the discontinuity the BF16 cases of e2e_reference.sh describe), and
    # over a long context that happens often enough to mask the point here.
    short_ids=$IDS short_ntok=$NTOK
    IDS=1$(seq -s, 2 7 1394 | sed 's/^/,/') NTOK=1
    MDI_SIMD=avx512bw "$ST" --ckpt "$CK" --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" --max-seq-len 256 \
        --logits-out "$TMP/long_$q.logits" --output "$TMP/long_$q.json" 2>>"$TMP/starter.log"
    check "e2e_quant standalone $q chunk runs a 200-token prompt" $? "$(tail -3 "$TMP/starter.log")"
    ref "tiny-llama-$q-long-prompt" "$CK/chunks/1nodes" "$TMP/long_$q.logits" "$TMP/long_$q.json" 1e-3
    IDS=$short_ids NTOK=$short_ntok

    # Quantizing at load gives the bytes prepare_model writes: identical logits.
    "$ST" --ckpt "$SRC" --dtype $q --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" \
        --logits-out "$TMP/load_$q.logits" --output "$TMP/load_$q.json" 2>>"$TMP/starter.log"
    st=$?
    cmp -s "$TMP/load_$q.logits" "$TMP/sa_$q.logits"
    check "e2e_quant starter --dtype $q on a float checkpoint equals the $q chunk, logits bit for bit" \
        $((st | $?)) "exit $st"

    # A 3-node ring over the 3-node chunks: standalone's tokens and logits.
    cfg="$TMP/cfg_$q.json"
    mkcfg "$cfg" 2
    ok=0
    start_secondary "$cfg" 0 || ok=1
    start_secondary "$cfg" 1 || ok=1
    check "e2e_quant $q ring: secondaries start" $ok "$(cat "$TMP"/sec*.log | tail -3)"
    run_with_timeout 60 "$ST" --ckpt "$CK" --nodes-config "$cfg" --n-samples 1 --prompt-ids "$IDS" \
        --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/ring_$q.logits" --output "$TMP/ring_$q.json" \
        2>>"$TMP/starter.log"
    st=$?
    msg=$(same_ids "$TMP/sa_$q.json" "$TMP/ring_$q.json" 2>&1); same=$?
    [ $st -ne 0 ] && msg="starter exit $st: $(tail -3 "$TMP/starter.log")"
    check "e2e_quant $q 3-node ring equals standalone token for token" $((st | same)) "$msg"
    cmp -s "$TMP/ring_$q.logits" "$TMP/sa_$q.logits"
    check "e2e_quant $q 3-node ring logits equal standalone's bit for bit" $? "logits differ"
    ref "tiny-llama-$q-ring3" "$CK/chunks/3nodes" "$TMP/ring_$q.logits" "$TMP/ring_$q.json" 1e-3
    # Several samples at once, a text prompt.
    "$ST" --ckpt "$CK" --prompt "Hello world" --n-tokens 24 --n-samples 3 "${ONE[@]}" \
        --output "$TMP/sa3_$q.json" 2>>"$TMP/starter.log"
    run_with_timeout 60 "$ST" --ckpt "$CK" --nodes-config "$cfg" --prompt "Hello world" --n-tokens 24 \
        --n-samples 3 "${ONE[@]}" --output "$TMP/ring3_$q.json" 2>>"$TMP/starter.log"
    st=$?
    msg=$(same_ids "$TMP/sa3_$q.json" "$TMP/ring3_$q.json" 2>&1); same=$?
    check "e2e_quant $q 3-node ring, 3 samples, equals standalone" $((st | same)) "exit $st: $msg"
    stop_secondaries
done

# Other sources: BF16-stored (quantized through F32 a step at a time) and an
# F16-stored Qwen2 (q/k/v biases, tied embedding): the chunk against the
# reference, and quantizing at load equal to the chunk.
for case in "tiny-llama bf16 q8_0 3" "tiny-qwen2 f16 q4_0 11"; do
    set -- $case
    shape=$1 sdt=$2 q=$3 seed=$4
    S2="$TMP/src-$shape-$sdt"
    C2="$TMP/ck/$shape-$sdt-$q"
    $PY tools/gen_synthetic.py --shape $shape --dtype $sdt --seed $seed --out "$S2" >>"$TMP/gen.log" 2>&1 &&
        "$PM" "$S2" --n-nodes 1 --dtype $q --out "$C2" --no-progress >>"$TMP/prepare.log" 2>&1
    check "e2e_quant prepare a $sdt $shape --dtype $q" $? "$(tail -3 "$TMP/prepare.log")"
    "$ST" --ckpt "$C2" --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/o_$shape.logits" \
        --output "$TMP/o_$shape.json" 2>>"$TMP/starter.log"
    ref "$shape-$sdt-$q" "$C2/chunks/1nodes" "$TMP/o_$shape.logits" "$TMP/o_$shape.json" 1e-3
    "$ST" --ckpt "$S2" --dtype $q --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" \
        --logits-out "$TMP/ol_$shape.logits" --output "$TMP/ol_$shape.json" 2>>"$TMP/starter.log"
    st=$?
    cmp -s "$TMP/ol_$shape.logits" "$TMP/o_$shape.logits"
    check "e2e_quant starter --dtype $q on the $sdt $shape equals its $q chunk, bit for bit" $((st | $?)) "exit $st"
done

# Re-running with the same arguments reuses every chunk; another --dtype does not.
R="$TMP/ck/reuse"
"$PM" "$SRC" --n-nodes 3 --dtype q8_0 --out "$R" --no-progress >"$TMP/r1.log" 2>&1
"$PM" "$SRC" --n-nodes 3 --dtype q8_0 --out "$R" --no-progress >"$TMP/r2.log" 2>&1
[ "$(grep -c ': reused ' "$TMP/r2.log")" = 3 ]
check "e2e_quant re-run with the same --dtype reuses the 3 chunks" $? "$(grep -E 'reused|written' "$TMP/r2.log")"
"$PM" "$SRC" --n-nodes 3 --dtype q4_0 --out "$R" --no-progress >"$TMP/r3.log" 2>&1
[ "$(grep -c ': written ' "$TMP/r3.log")" = 3 ] && [ "$(grep -c ': reused ' "$TMP/r3.log")" = 0 ]
check "e2e_quant re-run with another --dtype rewrites every chunk" $? "$(grep -E 'reused|written' "$TMP/r3.log")"
"$PM" "$SRC" --n-nodes 3 --dtype q4_0 --embed-dtype f32 --out "$R" --no-progress >"$TMP/r4.log" 2>&1
"$PM" --inspect "$R/chunks/3nodes/model_starter.safetensors" >"$TMP/r4.inspect" 2>&1
[ "$(grep -c ': written ' "$TMP/r4.log")" -ge 1 ] &&
    grep -qE '^ +model\.embed_tokens\.weight +f32 ' "$TMP/r4.inspect" &&
    grep -qE '^ +lm_head\.weight +f32 ' "$TMP/r4.inspect" &&
    grep -qE '^ +model\.layers\.0\.mlp\.up_proj\.weight +q4_0 ' "$TMP/r4.inspect"
check "e2e_quant --embed-dtype f32 keeps the embedding and head in f32, rewrites the starter" $? \
    "$(grep -E 'reused|written' "$TMP/r4.log"; grep -E 'embed|lm_head' "$TMP/r4.inspect")"
"$PM" "$SRC" --n-nodes 1 --dtype q4_0 --embed-dtype f32 --out "$R" --no-progress >>"$TMP/r4.log" 2>&1
"$ST" --ckpt "$R" --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/mixed.logits" \
    --output "$TMP/mixed.json" 2>>"$TMP/starter.log"
ref "tiny-llama-q4_0-f32-head" "$R/chunks/1nodes" "$TMP/mixed.logits" "$TMP/mixed.json" 1e-3

# A block-typed chunk loaded with --dtype f32 is dequantized (one note);
# the reference then runs without activation quantization.
"$ST" --ckpt "$TMP/ck/tl-q8_0" --dtype f32 --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" \
    --logits-out "$TMP/deq.logits" --output "$TMP/deq.json" 2>"$TMP/deq.err"
st=$?
[ $st -eq 0 ] && [ "$(grep -c 'dequantized to f32' "$TMP/deq.err")" = 1 ]
check "e2e_quant a q8_0 chunk with --dtype f32: dequantized at load, one note" $? "exit $st: $(cat "$TMP/deq.err")"
ref "tiny-llama-q8_0-dequantized-f32" "$TMP/ck/tl-q8_0/chunks/1nodes" "$TMP/deq.logits" "$TMP/deq.json" 1e-4 \
    --float-act

# Float chunks, secondaries told --dtype q4_0 through the run configuration:
# they quantize at load, and the ring equals standalone --dtype q4_0.
F="$TMP/ck/tl-f32"
"$PM" "$SRC" --n-nodes 3 --out "$F" --no-progress >>"$TMP/prepare.log" 2>&1
cfg="$TMP/cfg_load.json"
mkcfg "$cfg" 2
start_secondary "$cfg" 0 && start_secondary "$cfg" 1
run_with_timeout 60 "$ST" --ckpt "$F" --nodes-config "$cfg" --dtype q4_0 --n-samples 1 --prompt-ids "$IDS" \
    --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/ring_load.logits" --output "$TMP/ring_load.json" \
    2>>"$TMP/starter.log"
st=$?
cmp -s "$TMP/ring_load.logits" "$TMP/sa_q4_0.logits"
check "e2e_quant ring of float chunks with --dtype q4_0: secondaries quantize at load, logits equal the q4_0 chunk's" \
    $((st | $?)) "exit $st: $(tail -3 "$TMP/starter.log")"
stop_secondaries

# stories260K: rows of 172 values (down projection) fall back to F16 with a note.
STORIES="$MDI_SHARED/models/stories260K"
if [ -f "$STORIES/model.safetensors" ]; then
    S="$TMP/ck/stories-q8"
    "$PM" "$STORIES" --n-nodes 1 --dtype q8_0 --out "$S" --no-progress >"$TMP/s.log" 2>&1
    st=$?
    "$PM" --inspect "$S/chunks/1nodes/model_starter.safetensors" >"$TMP/s.inspect" 2>&1
    [ $st -eq 0 ] && [ "$(grep -c 'has rows of 172 values, not a multiple of 32: stored as f16 instead of q8_0' "$TMP/s.log")" = 5 ] &&
        [ "$(grep -cE 'down_proj\.weight +f16 ' "$TMP/s.inspect")" = 5 ] &&
        [ "$(grep -cE 'up_proj\.weight +q8_0 ' "$TMP/s.inspect")" = 5 ]
    check "e2e_quant stories260K --dtype q8_0: the 5 down projections stay f16, one note each" $? \
        "exit $st: $(grep -E 'note|172' "$TMP/s.log" | head -3)"
    "$ST" --ckpt "$S" --prompt "Once upon a time" --n-tokens 24 --temperature 0 --n-threads 1 --output "$TMP/s.json" \
        >"$TMP/s.txt" 2>>"$TMP/starter.log"
    grep -q "Once upon a time, there was a little girl" "$TMP/s.txt"
    check "e2e_quant stories260K q8_0 tells its story" $? "$(head -c 200 "$TMP/s.txt")"
    IDS=1,403,370,261
    "$ST" --ckpt "$S" --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/s.logits" \
        --output "$TMP/s2.json" 2>>"$TMP/starter.log"
    ref "stories260K-q8_0" "$S/chunks/1nodes" "$TMP/s.logits" "$TMP/s2.json" 1e-3
    "$ST" --ckpt "$STORIES" --dtype q4_0 --prompt "Once upon a time" --n-tokens 24 "${ONE[@]}" \
        2>"$TMP/s4.err"
    st=$?
    [ $st -eq 0 ] && [ "$(grep -c 'has rows of 172 values, not a multiple of 32: kept as f16 instead of q4_0' "$TMP/s4.err")" = 5 ]
    check "e2e_quant starter --dtype q4_0 on stories260K runs, f16 fallback noted" $? "exit $st: $(head -3 "$TMP/s4.err")"
    # llama2.c's .bin quantizes to the same blocks (q/k rows are permuted
    # whole, so every row's blocks are the same): the same logits.
    L2C="$MDI_SHARED/models/stories260K-llama2c"
    if [ -d "$L2C" ]; then
        for src in "$STORIES" "$L2C"; do
            "$PM" "$src" --n-nodes 1 --dtype q4_0 --out "$TMP/ck/$(basename "$src")-q4" --no-progress \
                >>"$TMP/prepare.log" 2>&1 &&
                "$ST" --ckpt "$TMP/ck/$(basename "$src")-q4" --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" \
                    --logits-out "$TMP/$(basename "$src")-q4.logits" 2>>"$TMP/starter.log"
        done
        cmp -s "$TMP/stories260K-q4.logits" "$TMP/stories260K-llama2c-q4.logits"
        check "e2e_quant llama2.c .bin --dtype q4_0 equals the Hugging Face layout's q4_0, logits bit for bit" $? \
            "$(tail -3 "$TMP/starter.log")"
    fi
else
    echo "SKIP: e2e_quant stories260K: $STORIES not found"
fi

# ---- bad input: one clear line each ----
# st_file PATH HEADER_JSON DATA_BYTES: a safetensors file by hand.
st_file() {
    $PY - "$@" <<'EOF'
import struct, sys
path, hdr, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
hdr += b" " * (-len(hdr) % 8)
open(path, "wb").write(struct.pack("<Q", len(hdr)) + hdr + bytes(n))
EOF
}
st_file "$TMP/bad_size.safetensors" \
    '{"w":{"dtype":"Q8_0","shape":[2,64],"data_offsets":[0,130]}}' 130
"$PM" --inspect "$TMP/bad_size.safetensors" >/dev/null 2>"$TMP/e1"
one_line "e2e_quant bad input: Q8_0 tensor whose byte size does not match its shape" $? "$TMP/e1" \
    'bad_size\.safetensors: tensor w: 130 data bytes, but Q8_0 of shape \[2, 64\] takes 136 bytes'
st_file "$TMP/bad_cols.safetensors" \
    '{"w":{"dtype":"Q8_0","shape":[64,172],"data_offsets":[0,11696]}}' 11696
"$PM" --inspect "$TMP/bad_cols.safetensors" >/dev/null 2>"$TMP/e2"
one_line "e2e_quant bad input: Q8_0 chunk header with rows of 172 values" $? "$TMP/e2" \
    'bad_cols\.safetensors: tensor w: dtype Q8_0 needs a last dimension that is a multiple of 32, shape is \[64, 172\]'
st_file "$TMP/bad_type.safetensors" \
    '{"w":{"dtype":"Q2_K","shape":[2,256],"data_offsets":[0,168]}}' 168
"$PM" --inspect "$TMP/bad_type.safetensors" >/dev/null 2>"$TMP/e3"
one_line "e2e_quant bad input: unknown dtype in a chunk header" $? "$TMP/e3" \
    'tensor w has dtype Q2_K \(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q8_K\)'
"$PM" "$SRC" --n-nodes 1 --dtype q5_0 --out "$TMP/ck/bad" >/dev/null 2>"$TMP/e4"
one_line "e2e_quant bad input: prepare_model --dtype q5_0" $? "$TMP/e4" \
    'unknown dtype "q5_0" \(accepted: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q8_k\)'
"$ST" --ckpt "$SRC" --dtype q5_0 --prompt-ids 1 --n-tokens 1 --quiet >/dev/null 2>"$TMP/e5"
one_line "e2e_quant bad input: starter --dtype q5_0" $? "$TMP/e5" \
    'unknown dtype "q5_0" \(accepted: auto, f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q8_k\)'
exit 0

#!/usr/bin/env bash
# tools/export_llama2c.py on the real stories260K: the Hugging Face layout
# exported to llama2.c's legacy .bin must equal the published llama2.c file
# byte for byte up to the rotary table (the weights: header, embeddings,
# every layer, the final norm), the table within float32 rounding, and the
# tokenizer.bin written from tokenizer.json must equal tok512.bin. Our engine
# loading the exported pair must then give the golden greedy text.
set -u
BIN=${BIN:-bin}
SHARED=${MDI_SHARED:-../shared}
HF=$SHARED/models/stories260K
REF=$SHARED/models/stories260K-llama2c
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f "$HF/model.safetensors" ] || [ ! -f "$REF/stories260K.bin" ]; then
    echo "SKIP: export_llama2c: stories260K not found under $SHARED/models"
    exit 0
fi
if ! /usr/bin/python3 tools/export_llama2c.py --ckpt "$HF" --out "$tmp/model.bin" \
        --tokenizer-out "$tmp/tokenizer.bin" >"$tmp/export.out" 2>&1; then
    echo "FAIL: export_llama2c exited with an error: $(tail -n 1 "$tmp/export.out")"
    exit 0
fi

# Offset of freq_cis_real: header, then dim 64, hidden 172, 5 layers,
# kv_dim 32, vocab 512, tied (no classifier at the end).
weights=$(( 28 + 4 * (512 * 64 + 5 * (64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 64 + 3 * 172 * 64) + 64) ))
if [ "$(stat -c %s "$tmp/model.bin")" = "$(stat -c %s "$REF/stories260K.bin")" ]; then
    echo "PASS: exported .bin has the size of the published stories260K.bin"
else
    echo "FAIL: exported .bin is $(stat -c %s "$tmp/model.bin") bytes, published $(stat -c %s "$REF/stories260K.bin")"
fi
if cmp -s -n "$weights" "$tmp/model.bin" "$REF/stories260K.bin"; then
    echo "PASS: exported header and weights equal the published ones byte for byte ($weights bytes)"
else
    echo "FAIL: exported weights differ: $(cmp -n "$weights" "$tmp/model.bin" "$REF/stories260K.bin" 2>&1)"
fi
/usr/bin/python3 - "$tmp/model.bin" "$REF/stories260K.bin" "$weights" <<'PY'
import sys
import numpy as np
a, b, off = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.fromfile(a, dtype="<f4", offset=off)
y = np.fromfile(b, dtype="<f4", offset=off)
err = float(np.max(np.abs(x - y))) if x.shape == y.shape else float("inf")
print(("PASS" if err <= 1e-6 else "FAIL") + ": rotary table within float32 rounding (max |diff| %.2g)" % err)
PY
if cmp -s "$tmp/tokenizer.bin" "$REF/tok512.bin"; then
    echo "PASS: tokenizer.bin from tokenizer.json equals tok512.bin"
else
    echo "FAIL: tokenizer.bin differs from tok512.bin: $(cmp "$tmp/tokenizer.bin" "$REF/tok512.bin" 2>&1)"
fi

# The golden text of $SHARED/models/README.md, from the exported pair.
/usr/bin/python3 - "$SHARED/models/README.md" "$tmp/golden.txt" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
block = re.findall(r"```\n(.*?)```", text[text.index("### Golden output"):], re.S)[0]
open(sys.argv[2], "w", encoding="utf-8").write(block.rstrip("\n"))
PY
if [ ! -x "$BIN/starter" ]; then
    echo "SKIP: golden text from the exported checkpoint: $BIN/starter not built"
elif "$BIN/starter" --ckpt "$tmp/model.bin" --temperature 0 --n-tokens 200 --n-threads 1 --quiet \
        --output "$tmp/out.json" >/dev/null 2>"$tmp/run.err"; then
    /usr/bin/python3 -c 'import json, sys; sys.stdout.write(json.load(open(sys.argv[1]))["samples"][0]["text"])' \
        "$tmp/out.json" >"$tmp/got.txt"
    if cmp -s "$tmp/golden.txt" "$tmp/got.txt"; then
        echo "PASS: golden greedy text from the exported llama2.c checkpoint"
    else
        echo "FAIL: greedy text from the exported checkpoint differs from the golden text"
        diff "$tmp/golden.txt" "$tmp/got.txt" | head -n 6
    fi
else
    echo "FAIL: starter on the exported checkpoint exited with an error: $(tail -n 1 "$tmp/run.err")"
fi

# A synthetic tiny Llama with what stories260K lacks: an untied classifier,
# BF16 storage and peaked attention (large weights), so that a wrong q/k
# permutation or a misplaced classifier changes the tokens. Our engine must
# generate the same greedy ids from its Hugging Face folder and from the
# export.
if ! /usr/bin/python3 tools/gen_synthetic.py --shape tiny-llama --dtype bf16 --out "$tmp/tiny" \
        >"$tmp/gen.out" 2>&1; then
    echo "SKIP: untied BF16 export: tools/gen_synthetic.py failed: $(tail -n 1 "$tmp/gen.out")"
    exit 0
fi
mkdir -p "$tmp/tiny-llama2c"
if ! /usr/bin/python3 tools/export_llama2c.py --ckpt "$tmp/tiny" --out "$tmp/tiny-llama2c/model.bin" \
        --tokenizer-out "$tmp/tiny-llama2c/tokenizer.bin" >"$tmp/export.out" 2>&1; then
    echo "FAIL: export_llama2c of the tiny BF16 checkpoint: $(tail -n 1 "$tmp/export.out")"
    exit 0
fi
vocab=$(/usr/bin/python3 -c 'import struct, sys; print(struct.unpack("<7i", open(sys.argv[1], "rb").read(28))[5])' \
    "$tmp/tiny-llama2c/model.bin")
[ "$vocab" = -32000 ] && echo "PASS: untied classifier flagged by a negative vocab_size" \
    || echo "FAIL: header vocab_size $vocab, -32000 expected for an untied classifier"
[ -x "$BIN/starter" ] || { echo "SKIP: tiny export against our engine: $BIN/starter not built"; exit 0; }
for src in "$tmp/tiny" "$tmp/tiny-llama2c/model.bin"; do
    "$BIN/starter" --ckpt "$src" --prompt-ids 1,450,4799,29871,338,263,1243 --n-tokens 40 --temperature 0 \
        --n-threads 1 --dtype f32 --quiet --output "$tmp/ids.json" >/dev/null 2>"$tmp/run.err" \
        || { echo "FAIL: starter on $src: $(tail -n 1 "$tmp/run.err")"; exit 0; }
    /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["samples"][0]["generated_ids"])' \
        "$tmp/ids.json" >>"$tmp/ids.txt"
done
if [ "$(sed -n 1p "$tmp/ids.txt")" = "$(sed -n 2p "$tmp/ids.txt")" ]; then
    echo "PASS: same greedy ids from the tiny BF16 checkpoint and its llama2.c export"
else
    echo "FAIL: greedy ids differ between the tiny checkpoint and its export"
    head -c 400 "$tmp/ids.txt"
fi

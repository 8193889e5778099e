#!/usr/bin/env bash
# e2e_gguf: GGUF files as checkpoints. bin/gguf_tool from-hf writes synthetic
# checkpoints as GGUF the way llama.cpp's converter lays them out (ggml
# names and shape order, metadata, llama's q/k rows in the interleaved
# rotary order), in F32 and in the block types; the starter runs each file
# mapped as it is, and its greedy tokens equal the safetensors checkpoint's
# run with the same weights (--dtype quantizes at load into the same
# bytes). The GGUFs carry the tokenizer (tokenizer.ggml.*), which encodes
# as tokenizer.json does.
#
# Bounds: qwen2 and qwen3 GGUFs keep Hugging Face's row order, so their logits equal
# the safetensors run's bit for bit. llama GGUFs rotate interleaved pairs
# over rows in another order: q . k sums the same products in another
# order, so logits differ by float rounding: with F32 weights about 1e-6 of
# max |logit| (bound 1e-4). With block types the activations are quantized
# (Q8_0, Q8_K) before each matrix, and a value that rounding moves across a
# quantization boundary changes by one step, which shows in the logits of
# the decode steps: measured up to 3.2e-2 of max |logit| (q4_k on an AVX2
# machine, 9e-3 on an AVX-512 one, whose OpenBLAS rounds the prefill
# otherwise), bound 6e-2, stated loosely on purpose: a wrong row order or
# block layout is off by about 1 from the first logits on, and the qwen2
# files check the same bytes exactly. With noise of that size, the greedy
# tokens of a random synthetic model may part where its top two logits
# nearly tie: there the tokens must be equal wherever the safetensors run's
# top-two margin exceeds twice the bound, the logits compared up to where
# they part.
#
# Also: prepare_model splits a GGUF into chunks that keep each tensor's
# type and bytes, and a 3-node ring over them equals the standalone GGUF
# run token for token and logits bit for bit; split files
# (-00001-of-00003.gguf) equal the single file; a malformed GGUF fails with
# one line.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh
PM=$BIN/prepare_model
ST=$BIN/starter
GG=$BIN/gguf_tool
if [ ! -x "$PM" ] || [ ! -x "$ST" ] || [ ! -x "$GG" ]; then echo "SKIP: e2e_gguf: binaries not built"; exit 0; fi

IDS=1,15,27,300,9,1200,77
NTOK=8
ONE=(--temperature 0 --quiet --n-threads 1)

# Rows of 256 values, so that every block type applies to every matrix.
TL="$TMP/tl"
TQ="$TMP/tq"
TQ3="$TMP/tq3"
if ! $PY tools/gen_synthetic.py --shape tiny-llama --dtype f32 --hidden 256 --inter 512 --layers 5 --heads 4 \
        --kv-heads 2 --vocab 4096 --std 0.1 --out "$TL" >"$TMP/gen.log" 2>&1 ||
   ! $PY tools/gen_synthetic.py --shape tiny-qwen2 --dtype f32 --hidden 256 --inter 512 --layers 2 --heads 4 \
        --kv-heads 2 --vocab 4096 --std 0.1 --out "$TQ" >>"$TMP/gen.log" 2>&1 ||
   ! $PY tools/gen_synthetic.py --shape tiny-qwen3 --dtype f32 --hidden 256 --inter 512 --layers 2 --heads 4 \
        --kv-heads 2 --head-dim 128 --vocab 4096 --std 0.1 --out "$TQ3" >>"$TMP/gen.log" 2>&1; then
    fail "e2e_gguf synthetic checkpoints" "$(tail -3 "$TMP/gen.log")"; exit 1
fi

# close A B BOUND: max |a - b| / max |a| over the raw f32 logits <= BOUND.
close() {
    $PY - "$@" <<'PYEOF'
import sys
import numpy as np
a = np.fromfile(sys.argv[1], dtype=np.float32)
b = np.fromfile(sys.argv[2], dtype=np.float32)
if a.size == 0 or a.size != b.size:
    print("sizes %d and %d" % (a.size, b.size)); sys.exit(1)
e = float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
if e > float(sys.argv[3]):
    print("normalised max error %.3g > %s" % (e, sys.argv[3])); sys.exit(1)
PYEOF
}

# close_greedy A B A.json B.json BOUND: the same greedy run on two
# numerically different paths. Per generated position, while the tokens
# agree: max |a - b| / max |a| <= BOUND. Where they part, A's top-two
# margin there (over max |a|) must be <= 2 * BOUND: a near-tie the noise
# may flip; after it the sequences differ and nothing more is compared.
close_greedy() {
    $PY - "$@" <<'PYEOF'
import json, sys
import numpy as np
ta = json.load(open(sys.argv[3]))["samples"][0]["generated_ids"]
tb = json.load(open(sys.argv[4]))["samples"][0]["generated_ids"]
bound = float(sys.argv[5])
a = np.fromfile(sys.argv[1], dtype=np.float32)
b = np.fromfile(sys.argv[2], dtype=np.float32)
if not ta or a.size == 0 or a.size != b.size or a.size % len(ta):
    print("logits sizes %d and %d for %d tokens" % (a.size, b.size, len(ta))); sys.exit(1)
a = a.reshape(len(ta), -1); b = b.reshape(len(ta), -1)
if len(ta) != len(tb):
    print("%d and %d tokens" % (len(ta), len(tb))); sys.exit(1)
worst = 0.0
for i in range(len(ta)):
    top = float(np.max(np.abs(a[i])))
    e = float(np.max(np.abs(a[i] - b[i]))) / top
    worst = max(worst, e)
    if e > bound:
        print("position %d: normalised max error %.3g > %g" % (i, e, bound)); sys.exit(1)
    if ta[i] != tb[i]:
        s = np.sort(a[i])
        margin = float(s[-1] - s[-2]) / top
        if margin > 2 * bound:
            print("position %d: tokens %d and %d with a top-two margin of %.3g > %g" % (i, ta[i], tb[i], margin, 2 * bound))
            sys.exit(1)
        print("equal for %d of %d tokens (a near-tie, margin %.3g, parts them), max error %.3g" % (i, len(ta), margin, worst))
        sys.exit(0)
print("equal for all %d tokens, max error %.3g" % (len(ta), worst))
PYEOF
}

# run NAME CKPT [args]: a standalone greedy run, NAME.logits and NAME.json.
run() {
    local name=$1 ck=$2; shift 2
    "$ST" --ckpt "$ck" --prompt-ids "$IDS" --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/$name.logits" \
        --output "$TMP/$name.json" "$@" 2>>"$TMP/starter.log"
}

for arch in llama qwen2 qwen3; do
    src=$TL
    [ $arch = qwen2 ] && src=$TQ
    [ $arch = qwen3 ] && src=$TQ3
    for dt in f32 q8_0 q4_0 q4_k q5_k q6_k; do
        g="$src/$arch-$dt.gguf" # beside tokenizer.json: the starter reads the tokenizer there
        if ! "$GG" from-hf "$src" "$g" --dtype $dt >>"$TMP/gguf.log" 2>&1; then
            fail "e2e_gguf $arch $dt: bin/gguf_tool from-hf" "$(tail -3 "$TMP/gguf.log")"; continue
        fi
        extra=()
        [ $dt != f32 ] && extra=(--dtype $dt)
        run "st-$arch-$dt" "$src" "${extra[@]}"
        st1=$?
        run "gg-$arch-$dt" "$g"
        st2=$?
        if [ $arch = llama ] && [ $dt != f32 ]; then
            msg=$(close_greedy "$TMP/st-$arch-$dt.logits" "$TMP/gg-$arch-$dt.logits" \
                "$TMP/st-$arch-$dt.json" "$TMP/gg-$arch-$dt.json" 6e-2 2>&1); st=$?
            [ $((st1 | st2)) -ne 0 ] && msg="exit $st1/$st2: $(tail -3 "$TMP/starter.log")"
            check "e2e_gguf $arch $dt: greedy tokens equal the safetensors run's but at a near-tie, logits within 6e-2 (interleaved RoPE)" \
                $((st1 | st2 | st)) "$msg"
            [ $((st1 | st2 | st)) -eq 0 ] && echo "INFO: e2e_gguf $arch $dt: $msg"
            continue
        fi
        msg=$(same_ids "$TMP/st-$arch-$dt.json" "$TMP/gg-$arch-$dt.json" 2>&1); same=$?
        [ $((st1 | st2)) -ne 0 ] && msg="exit $st1/$st2: $(tail -3 "$TMP/starter.log")"
        check "e2e_gguf $arch $dt: the GGUF's greedy tokens equal the safetensors run's" $((st1 | st2 | same)) "$msg"
        if [ $arch != llama ]; then
            cmp -s "$TMP/st-$arch-$dt.logits" "$TMP/gg-$arch-$dt.logits"
            check "e2e_gguf $arch $dt: logits equal bit for bit" $? "logits differ"
        else
            msg=$(close "$TMP/st-$arch-$dt.logits" "$TMP/gg-$arch-$dt.logits" 1e-4); st=$?
            check "e2e_gguf $arch $dt: logits within 1e-4 (interleaved RoPE)" $st "$msg"
        fi
    done
done

# Llama 3.1 RoPE scaling as llama.cpp stores it (rope_freqs.weight, a divisor
# per frequency): tiny-llama3's original context of 64 positions puts a
# 70-token prompt across all three bands. Same tokens, logits within 1e-4
# (measured 1.5e-6).
L3="$TMP/l3"
LIDS=$(seq -s, 5 74)
if $PY tools/gen_synthetic.py --shape tiny-llama3 --dtype f32 --vocab 4096 --out "$L3" >>"$TMP/gen.log" 2>&1 &&
   "$GG" from-hf "$L3" "$L3/l3.gguf" >>"$TMP/gguf.log" 2>&1; then
    "$GG" show "$L3/l3.gguf" | grep -qE '^  rope_freqs\.weight +F32 +ne \[8\]'
    check "e2e_gguf llama3 scaling written as rope_freqs.weight" $? "$("$GG" show "$L3/l3.gguf" | grep rope)"
    "$ST" --ckpt "$L3" --prompt-ids "$LIDS" --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/l3a.logits" \
        --output "$TMP/l3a.json" 2>>"$TMP/starter.log"
    st1=$?
    "$ST" --ckpt "$L3/l3.gguf" --prompt-ids "$LIDS" --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/l3b.logits" \
        --output "$TMP/l3b.json" 2>>"$TMP/starter.log"
    st2=$?
    msg=$(same_ids "$TMP/l3a.json" "$TMP/l3b.json" 2>&1); same=$?
    [ $((st1 | st2)) -ne 0 ] && msg="exit $st1/$st2: $(tail -3 "$TMP/starter.log")"
    check "e2e_gguf llama3 rope_freqs: greedy tokens equal the safetensors run's" $((st1 | st2 | same)) "$msg"
    msg=$(close "$TMP/l3a.logits" "$TMP/l3b.logits" 1e-4); st=$?
    check "e2e_gguf llama3 rope_freqs: logits within 1e-4" $st "$msg"
    a=$("$BIN/tokenize" "$L3" "Hello world, 123456 ok" 2>&1)
    b=$("$BIN/tokenize" "$L3/l3.gguf" "Hello world, 123456 ok" 2>&1)
    [ -n "$a" ] && [ "$a" = "$b" ]
    check "e2e_gguf llama3: the GGUF's own tokenizer (llama-bpe) encodes as tokenizer.json" $? "[$a] vs [$b]"
else
    fail "e2e_gguf llama3 GGUF" "$(tail -3 "$TMP/gguf.log" "$TMP/gen.log")"
fi

# The tokenizer written into the GGUF (tokenizer.ggml.*) encodes as tokenizer.json.
TXT="Hello world, this is 🦙.cpp: Führer  of   spaces 123456"
for arch in llama qwen2; do
    src=$TL
    [ $arch = qwen2 ] && src=$TQ
    a=$("$BIN/tokenize" "$src" "$TXT" 2>&1)
    b=$("$BIN/tokenize" "$src/$arch-f32.gguf" "$TXT" 2>&1)
    [ -n "$a" ] && [ "$a" = "$b" ]
    check "e2e_gguf $arch: the GGUF's own tokenizer encodes as tokenizer.json" $? "[$a] vs [$b]"
done

# The tensors as bin/gguf_tool show lists them: ggml names, reversed shapes, types.
"$GG" show "$TL/llama-q4_k.gguf" >"$TMP/show.txt" 2>&1
grep -qE '^  blk\.0\.attn_q\.weight +Q4_K +ne \[256, 256\]' "$TMP/show.txt" &&
    grep -qE '^  token_embd\.weight +Q4_K +ne \[256, 4096\]' "$TMP/show.txt" &&
    grep -qE '^  llama\.attention\.head_count_kv +uint32 +2$' "$TMP/show.txt"
check "e2e_gguf bin/gguf_tool show lists names, types and ggml shapes" $? "$(head -5 "$TMP/show.txt")"

# An independent parser, @huggingface/gguf from npm (installed by .ci/run
# into tests/node_modules), reads every file written here: the same
# version, metadata keys and values, tensor names, types, shapes and data
# offsets as our reader.
if [ -d tests/node_modules/@huggingface/gguf ] && command -v node >/dev/null; then
    files=$(ls "$TL"/llama-*.gguf "$TQ"/qwen2-*.gguf "$TQ3"/qwen3-*.gguf "$L3/l3.gguf" 2>/dev/null)
    node tests/gguf_check.mjs $files >"$TMP/hf_gguf.txt" 2>"$TMP/hf_gguf.err"
    st=$?
    for f in $files; do "$GG" show "$f"; done >"$TMP/our_gguf.txt" 2>&1
    $PY - "$TMP/hf_gguf.txt" "$TMP/our_gguf.txt" <<'PYEOF'
import re, sys
hf = open(sys.argv[1]).read().split("version ")[1:]
ours = re.split(r"^(?=\S+: GGUF version)", open(sys.argv[2]).read(), flags=re.M)[1:]
if len(hf) != len(ours) or not hf:
    sys.exit("%d files read by @huggingface/gguf, %d by gguf_tool" % (len(hf), len(ours)))
def num(x):
    try:
        return float(x)
    except ValueError:
        return x
for h, o in zip(hf, ours):
    head = re.match(r"(\S+): GGUF version (\d+), (\d+) metadata pairs, (\d+) tensors, alignment \d+, data at byte (\d+)", o)
    name, data_at = head.group(1), int(head.group(5))
    hl = h.splitlines()
    if hl[0] != head.group(2) or hl[1] != "tensors " + head.group(4):
        sys.exit("%s: version/tensor count %s %s vs %s %s" % (name, hl[0], hl[1], head.group(2), head.group(4)))
    hkv = {l.split(" ", 2)[1]: (l.split(" ", 2) + [""])[2] for l in hl if l.startswith("kv ")}
    okv = {}
    for m in re.finditer(r"^  (\S+) +(uint8|int8|uint16|int16|uint32|int32|float32|bool|string|array|uint64|int64|float64) +(.*)$", o, re.M):
        v = m.group(3)
        if m.group(2) == "array":
            v = "[" + v.split("]")[0].lstrip("[") + "]"
        okv[m.group(1)] = v
    if set(hkv) != set(okv):
        sys.exit("%s: keys differ: %s" % (name, sorted(set(hkv) ^ set(okv))))
    for k in hkv:
        a, b = num(hkv[k]), num(okv[k])
        if isinstance(a, float) and isinstance(b, float):
            if abs(a - b) > 1e-6 * max(1.0, abs(a)):
                sys.exit("%s: %s = %s vs %s" % (name, k, hkv[k], okv[k]))
        elif hkv[k] != okv[k]:
            sys.exit("%s: %s = %r vs %r" % (name, k, hkv[k], okv[k]))
    ht = [l.split(" ", 1)[1] for l in hl if l.startswith("tensor ")]
    ot = ["%s %s [%s] %d" % (m.group(1), m.group(2), m.group(3), int(m.group(4)) - data_at)
          for m in re.finditer(r"^  (\S+) +(\S+) +ne \[([^\]]*)\] \d+ bytes at (\d+)$", o, re.M)]
    if ht != ot:
        d = [(x, y) for x, y in zip(ht, ot) if x != y][:2]
        sys.exit("%s: tensors differ: %s" % (name, d or (len(ht), len(ot))))
print("%d files" % len(hf))
PYEOF
    st2=$?
    [ $st -ne 0 ] && echo "node: $(tail -3 "$TMP/hf_gguf.err")"
    check "e2e_gguf @huggingface/gguf reads every GGUF written here as our reader does (keys, values, tensors, offsets)" \
        $((st | st2)) "see above"
else
    echo "SKIP: e2e_gguf @huggingface/gguf: tests/node_modules/@huggingface/gguf missing (.ci/run installs it)"
fi

# --mmap and --no-mmap (the default: the file read into anonymous memory)
# give the same logits bit for bit; a split GGUF too.
run mm "$TL/llama-q4_k.gguf" --mmap
st=$?
cmp -s "$TMP/mm.logits" "$TMP/gg-llama-q4_k.logits"
check "e2e_gguf --mmap (borrowed from the mapping) equals --no-mmap (anonymous memory) bit for bit" $((st | $?)) \
    "exit $st: $(tail -3 "$TMP/starter.log")"

# Split files equal the single file.
"$GG" from-hf "$TL" "$TL/sp.gguf" --dtype q4_k --split 3 >>"$TMP/gguf.log" 2>&1
run sp "$TL/sp-00001-of-00003.gguf"
st=$?
cmp -s "$TMP/sp.logits" "$TMP/gg-llama-q4_k.logits"
check "e2e_gguf split files -00001-of-00003.gguf run equal to the single file" $((st | $?)) \
    "exit $st: $(tail -3 "$TMP/starter.log")"
run spm "$TL/sp-00001-of-00003.gguf" --mmap
st=$?
cmp -s "$TMP/spm.logits" "$TMP/gg-llama-q4_k.logits"
check "e2e_gguf split files mapped (--mmap) run equal to the single file" $((st | $?)) \
    "exit $st: $(tail -3 "$TMP/starter.log")"
"$ST" --ckpt "$TL/sp-00002-of-00003.gguf" --prompt-ids 1 --n-tokens 1 --quiet >/dev/null 2>"$TMP/e_sp"
st=$?
[ $st -ne 0 ] && grep -q 'opened by its first part' "$TMP/e_sp"
check "e2e_gguf a split GGUF's second part alone is refused" $? "exit $st: $(cat "$TMP/e_sp")"

# prepare_model on a GGUF: chunks keep each tensor's bytes; a ring equals standalone.
G="$TL/llama-q4_k.gguf"
CK="$TMP/ck"
if ! prepare "$G" "$CK" 1 2 3 4 5; then
    fail "e2e_gguf prepare_model on a GGUF" "$(tail -3 "$TMP/prepare.log")"
else
    $PY - "$CK/chunks" "$TMP/show.txt" "$G" <<'PYEOF'
import collections, hashlib, json, os, re, struct, sys
# Every chunk tensor's bytes against the GGUF's (offsets from bin/gguf_tool
# show): the multiset of tensor contents is the same for each node count.
show = open(sys.argv[2]).read()
g = open(sys.argv[3], "rb").read()
want = collections.Counter(hashlib.sha256(g[int(m.group(2)):int(m.group(2)) + int(m.group(1))]).hexdigest()
                           for m in re.finditer(r"^  (?!rope_freqs)\S+ +\S+ +ne \[[^\]]*\] (\d+) bytes at (\d+)$", show, re.M))
for n in range(1, 6):
    d = os.path.join(sys.argv[1], "%dnodes" % n)
    seen, got = set(), collections.Counter()
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        b = open(os.path.join(d, f), "rb").read()
        hl = struct.unpack("<Q", b[:8])[0]
        for k, v in json.loads(b[8:8 + hl]).items():
            if k == "__metadata__":
                continue
            if k in seen:
                sys.exit("%d nodes: tensor %s in two chunks" % (n, k))
            seen.add(k)
            o = 8 + hl + v["data_offsets"][0]
            got[hashlib.sha256(b[o:8 + hl + v["data_offsets"][1]]).hexdigest()] += 1
    if got != want:
        sys.exit("%d nodes: %d tensors, the GGUF has %d; %d contents differ" % (n, sum(got.values()),
                 sum(want.values()), sum((got - want).values())))
PYEOF
    check "e2e_gguf prepare_model N = 1..5: every GGUF tensor in exactly one chunk, byte for byte" $? "see above"
    a=$("$BIN/tokenize" "$CK" "Hello world, 123" 2>&1)
    b=$("$BIN/tokenize" "$G" "Hello world, 123" 2>&1)
    [ -f "$CK/tokenizer.gguf" ] && [ -n "$b" ] && [ "$a" = "$b" ]
    check "e2e_gguf prepare_model keeps the GGUF's tokenizer beside the chunks (tokenizer.gguf)" $? "[$a] vs [$b]"
    run ck1 "$CK"
    cmp -s "$TMP/ck1.logits" "$TMP/gg-llama-q4_k.logits"
    check "e2e_gguf chunks of a GGUF run equal to the GGUF, logits bit for bit" $? "logits differ"
    cfg="$TMP/cfg.json"
    mkcfg "$cfg" 2
    ok=0
    start_secondary "$cfg" 0 || ok=1
    start_secondary "$cfg" 1 || ok=1
    check "e2e_gguf ring: secondaries start" $ok "$(cat "$TMP"/sec*.log 2>/dev/null | tail -3)"
    run_with_timeout 60 "$ST" --ckpt "$CK" --nodes-config "$cfg" --n-samples 1 --prompt-ids "$IDS" \
        --n-tokens $NTOK "${ONE[@]}" --logits-out "$TMP/ring.logits" --output "$TMP/ring.json" 2>>"$TMP/starter.log"
    st=$?
    msg=$(same_ids "$TMP/gg-llama-q4_k.json" "$TMP/ring.json" 2>&1); same=$?
    [ $st -ne 0 ] && msg="starter exit $st: $(tail -3 "$TMP/starter.log")"
    check "e2e_gguf 3-node ring over a GGUF's chunks equals the standalone GGUF token for token" $((st | same)) "$msg"
    cmp -s "$TMP/ring.logits" "$TMP/gg-llama-q4_k.logits"
    check "e2e_gguf 3-node ring logits equal the standalone GGUF's bit for bit" $? "logits differ"
    stop_secondaries
fi

# Malformed files: one line each, naming the file.
head -c $(( $(stat -c %s "$G") - 5000 )) "$G" >"$TL/trunc.gguf"
"$ST" --ckpt "$TL/trunc.gguf" --prompt-ids 1 --n-tokens 1 --quiet >/dev/null 2>"$TMP/e1"
st=$?
[ $st -ne 0 ] && [ "$(grep -c . "$TMP/e1")" = 1 ] && grep -q 'trunc.gguf: truncated tensor data: tensor ' "$TMP/e1"
check "e2e_gguf truncated GGUF: one line naming the file and the tensor" $? "exit $st: $(head -3 "$TMP/e1")"
head -c 100000 "$G" >"$TL/trunc2.gguf"
"$ST" --ckpt "$TL/trunc2.gguf" --prompt-ids 1 --n-tokens 1 --quiet >/dev/null 2>"$TMP/e1"
st=$?
[ $st -ne 0 ] && [ "$(grep -c . "$TMP/e1")" = 1 ] &&
    grep -q 'trunc2.gguf: metadata tokenizer.ggml.tokens at byte [0-9]*: [0-9]* strings cannot fit' "$TMP/e1"
check "e2e_gguf GGUF cut in its metadata: one line naming the key and the byte" $? "exit $st: $(head -3 "$TMP/e1")"
printf 'GGUF\003\000\000\000' >"$TL/short.gguf"
"$ST" --ckpt "$TL/short.gguf" --prompt-ids 1 --n-tokens 1 --quiet >/dev/null 2>"$TMP/e2"
st=$?
[ $st -ne 0 ] && [ "$(grep -c . "$TMP/e2")" = 1 ] && grep -q 'short.gguf: truncated file' "$TMP/e2"
check "e2e_gguf 8-byte GGUF: one line" $? "exit $st: $(head -3 "$TMP/e2")"
exit 0

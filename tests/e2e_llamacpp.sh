#!/usr/bin/env bash
# e2e_llamacpp: an independent engine on the GGUF files we write. bin/gguf_tool
# from-hf turns synthetic checkpoints (random weights, the real llama2 and
# qwen3 vocabularies, so that llama.cpp accepts the tokenizer) into GGUF in
# every supported type; node-llama-cpp (npm, pinned in .ci/run; its prebuilt
# llama.cpp library, CPU only) tokenizes a prompt and decodes greedily on
# each (tests/llamacpp_run.mjs), and so does our starter on the same file
# with the tokenizer from the file's metadata. Both tokenizer kinds
# (llama = SentencePiece-style, gpt2 = byte-level BPE) and the three
# architectures (llama with its interleaved q/k rows, qwen2 with biases,
# qwen3 with q/k RMSNorm per head), and llama with linear RoPE scaling
# (rope.scaling.type linear, factor 4).
#
# The prompt ids must be equal. The greedy tokens must be equal, with one
# rule for random weights, whose best logits are often close: the two
# engines round differently (llama.cpp keeps F16/BF16 weights' activations
# in F16/BF16, sums in other orders, has its own exp and RMSNorm, and a
# value that rounding moves across a Q8_0/Q8_K boundary moves by a step),
# so a step where llama.cpp's token is nearly our best may go either way.
# Near-tie rule: where the tokens first differ, if our logit for
# llama.cpp's token is within NEAR_TIE (1% of that step's largest |logit|)
# of our best, the step counts as agreement (an INFO line gives the step
# and the gap) and the comparison goes on from llama.cpp's token: the
# starter is given the prompt and llama.cpp's tokens so far as prompt ids,
# and its continuation must equal llama.cpp's (up to 3 ties per file).
# Otherwise it fails. Our greedy tokens must not be one token repeated:
# the random models are meaningful, their tokens vary.
#
# The tokenizers are also compared on their full vocabularies (llama2,
# Llama 3, Qwen) over the texts of ../shared/tokenizers/vectors.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh
GG=$BIN/gguf_tool
ST=$BIN/starter
if [ ! -x "$GG" ] || [ ! -x "$ST" ]; then echo "SKIP: e2e_llamacpp: binaries not built"; exit 0; fi
if ! command -v node >/dev/null || [ ! -d tests/node_modules/node-llama-cpp ] ||
   ! ls -d tests/node_modules/@node-llama-cpp/linux-* >/dev/null 2>&1; then
    echo "SKIP: e2e_llamacpp: node-llama-cpp and its prebuilt binaries not in tests/node_modules" \
         "(.ci/run installs them with npm; npm unreachable?)"
    exit 0
fi

NTOK=12
NEAR_TIE=0.01
TXT="Hello world, this is 🦙.cpp: Führer  of   spaces 123456"
TYPES="f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k"
G="$TMP/g"
mkdir -p "$G"
gen() { $PY tools/gen_synthetic.py --dtype f32 --layers 2 --heads 4 --kv-heads 2 --std 0.1 "$@" >>"$TMP/gen.log" 2>&1; }

# 1. Tokenizers with their full vocabularies (llama2's SentencePiece-style,
# Llama 3's llama-bpe, Qwen's qwen2), on the texts of
# ../shared/tokenizers/vectors: the ids llama.cpp gives from the GGUF's
# metadata equal ours.
$PY - "$MDI_SHARED/tokenizers/vectors" "$TMP" <<'PYEOF'
import json, sys
for name in ("llama-spm", "llama-bpe", "qwen2"):
    texts = open("%s/%s.inp" % (sys.argv[1], name), encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
    json.dump([t for t in texts if t], open("%s/%s.texts.json" % (sys.argv[2], name), "w"))
PYEOF
tokfiles=()
for v in "tiny-llama llama-spm" "tiny-llama3 llama-bpe" "tiny-qwen2 qwen2"; do
    set -- $v
    if gen --shape $1 --hidden 64 --inter 64 --out "$TMP/v-$2" &&
       "$GG" from-hf "$TMP/v-$2" "$G/vocab-$2.gguf" >>"$TMP/gguf.log" 2>&1; then
        tokfiles+=("$G/vocab-$2.gguf")
    else
        fail "e2e_llamacpp vocabulary $2: GGUF" "$(tail -3 "$TMP/gen.log" "$TMP/gguf.log")"
    fi
    rm -rf "${TMP:?}/v-$2"
done
# SmolLM's pre-tokenizer (each digit apart, then GPT-2's regex; llama.cpp's
# name smollm): Qwen's vocabulary with SmolLM's pre_tokenizer in
# tokenizer.json; bin/gguf_tool from-hf names it smollm.
cp "$TMP/qwen2.texts.json" "$TMP/smollm.texts.json"
if gen --shape tiny-qwen2 --hidden 64 --inter 64 --out "$TMP/v-smollm" && $PY -c 'import json, sys
p = sys.argv[1]; t = json.load(open(p, encoding="utf-8"))
t["normalizer"] = None
t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
json.dump(t, open(p, "w", encoding="utf-8"), ensure_ascii=False)' "$TMP/v-smollm/tokenizer.json" &&
   "$GG" from-hf "$TMP/v-smollm" "$G/vocab-smollm.gguf" >>"$TMP/gguf.log" 2>&1; then
    tokfiles+=("$G/vocab-smollm.gguf")
    "$GG" show "$G/vocab-smollm.gguf" | grep -qE '^  tokenizer\.ggml\.pre +string +smollm$'
    check "e2e_llamacpp bin/gguf_tool from-hf names a Digits + ByteLevel pre-tokenizer smollm" $? \
        "$("$GG" show "$G/vocab-smollm.gguf" | grep pre)"
    a=$("$BIN/tokenize" "$TMP/v-smollm" --no-parse-special --json "$TMP/smollm.texts.json" 2>&1)
    b=$("$BIN/tokenize" "$G/vocab-smollm.gguf" --no-parse-special --json "$TMP/smollm.texts.json" 2>&1)
    [ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" != "$("$BIN/tokenize" "$G/vocab-qwen2.gguf" --no-parse-special \
        --json "$TMP/smollm.texts.json" 2>&1)" ]
    check "e2e_llamacpp smollm: the GGUF encodes as tokenizer.json (Digits), not as qwen2" $? "${a:0:200} vs ${b:0:200}"
else
    fail "e2e_llamacpp vocabulary smollm: GGUF" "$(tail -3 "$TMP/gen.log" "$TMP/gguf.log")"
fi
rm -rf "${TMP:?}/v-smollm"

# The padding id: tokenizer_config.json's pad_token, written as
# tokenizer.ggml.padding_token_id and read back; llama.cpp reads the same key.
for v in qwen2; do
    f="$G/vocab-$v.gguf"
    [ -f "$f" ] || continue
    want=$("$GG" show "$f" | awk '$1 == "tokenizer.ggml.padding_token_id" {print $3}')
    got=$("$BIN/tokenize" "$f" --info 2>&1)
    [ -n "$want" ] && [[ "$got" == *" pad $want "* ]]
    check "e2e_llamacpp $v: the padding id written and read back (pad $want)" $? "$got"
done

for f in "${tokfiles[@]}"; do
    name=$(basename "$f" .gguf)
    node tests/llamacpp_run.mjs tokenize "$TMP/${name#vocab-}.texts.json" "$f" >"$TMP/$name.peer" 2>>"$TMP/peer.err"
    "$BIN/tokenize" "$f" --no-parse-special --json "$TMP/${name#vocab-}.texts.json" >"$TMP/$name.ours" 2>&1
    $PY - "$TMP/$name.peer" "$TMP/$name.ours" "$TMP/${name#vocab-}.texts.json" "$name" <<'PYEOF'
import json, sys
name = sys.argv[4]
try:
    peer = json.loads(open(sys.argv[1]).read())
    ours = json.loads(open(sys.argv[2]).read())
except ValueError as e:
    print("FAIL: e2e_llamacpp %s: no result: %s" % (name, open(sys.argv[2]).read()[:200])); sys.exit()
if "error" in peer:
    print("FAIL: e2e_llamacpp %s: node-llama-cpp: %s" % (name, peer["error"])); sys.exit()
texts = json.load(open(sys.argv[3]))
bad = [i for i in range(len(texts)) if peer["ids"][i] != ours[i]]
if bad:
    i = bad[0]
    print("FAIL: e2e_llamacpp %s: %d of %d texts differ, first %r: ours %s, llama.cpp %s" % (
        name, len(bad), len(texts), texts[i], ours[i], peer["ids"][i]))
else:
    print("PASS: e2e_llamacpp %s: the GGUF tokenizer's ids equal llama.cpp's on %d texts" % (name, len(texts)))
PYEOF
done

# 2. Greedy decoding. Rows of 256 values, so that every block type applies
# to every matrix. The vocabularies are cut to their first 4096 tokens and
# their single characters (merges among them; the rest renumbered after
# them, added tokens included), so that the embedding stays small and the
# files are quick to write.
K=4096
shrink() { # shrink SHARED_TOKENIZER_DIR [CKPT_DIR]: prints the new vocabulary size; rewrites CKPT_DIR
    $PY - "$K" "$@" <<'PYEOF'
import json, os, sys
K = int(sys.argv[1])
tj = json.load(open(os.path.join(sys.argv[2], "tokenizer.json"), encoding="utf-8"))
m = tj["model"]
# kept: the first K ids, every single character (SentencePiece vocabularies
# list them last; without them a text falls back to bytes), added tokens
keep = sorted(set(i for t, i in m["vocab"].items() if i < K or len(t) == 1) |
              set(a["id"] for a in tj["added_tokens"]))
remap = {old: new for new, old in enumerate(keep)}
if len(sys.argv) < 4:
    print(len(keep)); sys.exit()
d = sys.argv[3]
m["vocab"] = {t: remap[i] for t, i in m["vocab"].items() if i in remap}
def pair(x):
    return x.split(" ", 1) if isinstance(x, str) else x
m["merges"] = [x for x in m["merges"] if all(p in m["vocab"] for p in pair(x)) and "".join(pair(x)) in m["vocab"]]
for a in tj["added_tokens"]:
    a["id"] = remap.get(a["id"], a["id"])
json.dump(tj, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
def fix(v):
    return [remap.get(x, x) for x in v] if isinstance(v, list) else remap.get(v, v)
for fn in ("config.json", "generation_config.json"):
    p = os.path.join(d, fn)
    if os.path.exists(p):
        c = json.load(open(p))
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if k in c and c[k] is not None:
                c[k] = fix(c[k])
        json.dump(c, open(p, "w"), indent=2)
p = os.path.join(d, "tokenizer_config.json")
c = json.load(open(p, encoding="utf-8"))
if "added_tokens_decoder" in c:
    c["added_tokens_decoder"] = {str(remap.get(int(k), int(k))): v for k, v in c["added_tokens_decoder"].items()}
json.dump(c, open(p, "w", encoding="utf-8"), ensure_ascii=False, indent=2)
PYEOF
}
files=()
for v in "llama tiny-llama llama2" "qwen2 tiny-qwen2 qwen3" "qwen3 tiny-qwen3 qwen3"; do
    set -- $v
    arch=$1
    tdir="$MDI_SHARED/tokenizers/$3"
    extra=()
    [ $arch = qwen3 ] && extra=(--head-dim 64)
    if ! gen --shape $2 --hidden 256 --inter 512 --vocab "$(shrink "$tdir")" "${extra[@]}" --out "$TMP/$arch" ||
       ! shrink "$tdir" "$TMP/$arch" >>"$TMP/gen.log" 2>&1; then
        fail "e2e_llamacpp $arch synthetic checkpoint" "$(tail -3 "$TMP/gen.log")"; continue
    fi
    if [ $arch = llama ]; then
        # linear RoPE scaling (factor 4), as rope.scaling.type/factor in the GGUF
        mkdir -p "$TMP/llama-linear"
        cp "$TMP/llama"/* "$TMP/llama-linear/"
        $PY -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p))
c["rope_scaling"] = {"rope_type": "linear", "factor": 4.0}; json.dump(c, open(p, "w"))' "$TMP/llama-linear/config.json"
        for dt in f32 q4_k; do
            "$GG" from-hf "$TMP/llama-linear" "$G/llama-linear-$dt.gguf" --dtype $dt >>"$TMP/gguf.log" 2>&1 &&
                files+=("$G/llama-linear-$dt.gguf") ||
                fail "e2e_llamacpp llama linear $dt: bin/gguf_tool from-hf" "$(tail -3 "$TMP/gguf.log")"
        done
    fi
    for dt in $TYPES; do
        # In a folder of its own: the starter takes the tokenizer from the GGUF.
        if "$GG" from-hf "$TMP/$arch" "$G/$arch-$dt.gguf" --dtype $dt >>"$TMP/gguf.log" 2>&1; then
            files+=("$G/$arch-$dt.gguf")
        else
            fail "e2e_llamacpp $arch $dt: bin/gguf_tool from-hf" "$(tail -3 "$TMP/gguf.log")"
        fi
    done
done

node tests/llamacpp_run.mjs greedy $NTOK "$TXT" "${files[@]}" >"$TMP/peer.jsonl" 2>>"$TMP/peer.err"
st=$?
if [ $st -ne 0 ] || [ ! -s "$TMP/peer.jsonl" ]; then
    fail "e2e_llamacpp node-llama-cpp runs" "exit $st: $(tail -3 "$TMP/peer.err")"; exit 0
fi

# step F: one comparison round on file F: our run in $TMP/$name.json and
# .logits against llama.cpp's tokens from offset OFF on. Prints "equal N",
# "tie N GAP SCALE" or "differ N DETAIL", N the steps that agree.
step() {
    $PY - "$TMP/peer.jsonl" "$1" "$TMP/$name.json" "$TMP/$name.logits" "$2" $NEAR_TIE <<'PYEOF'
import json, sys
import numpy as np
peer_f, f, ours_f, logits_f, off, near = sys.argv[1:7]
peer = [p for p in map(json.loads, open(peer_f)) if p["file"] == f][0]
b = peer["generated_ids"][int(off):]
a = json.load(open(ours_f))["samples"][0]["generated_ids"]
logits = np.fromfile(logits_f, dtype=np.float32)
vocab = logits.size // max(len(a), 1)
n = 0
while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
if n == len(a) == len(b):
    print("equal", n)
elif n < len(a) and n < len(b):
    l = logits[n * vocab:(n + 1) * vocab]
    gap, scale = float(l[a[n]] - l[b[n]]), float(np.max(np.abs(l)))
    print("tie" if gap < float(near) * scale else "differ", n, "%.3g" % gap, "%.3g" % scale)
else:
    print("differ", n, "lengths", len(a), len(b))
PYEOF
}

# Near-tie re-synchronisation: after a near tie at step N the starter is
# given the prompt and llama.cpp's first N + 1 tokens as prompt ids, and its
# greedy continuation is compared with llama.cpp's rest (the same history on
# both sides), up to 3 times per file.
total=0
for f in "${files[@]}"; do
    name=$(basename "$f" .gguf)
    peer=$(grep -F "\"file\":\"$f\"" "$TMP/peer.jsonl")
    if [ -z "$peer" ] || [[ "$peer" == *'"error"'* ]]; then
        fail "e2e_llamacpp $name: node-llama-cpp" "${peer:-no result}"; continue
    fi
    "$ST" --ckpt "$f" --prompt "$TXT" --n-tokens $NTOK --temperature 0 --quiet --n-threads 1 \
        --logits-out "$TMP/$name.logits" --output "$TMP/$name.json" 2>>"$TMP/starter.log"
    st=$?
    if [ $st -ne 0 ]; then
        fail "e2e_llamacpp $name: starter" "exit $st: $(tail -3 "$TMP/starter.log")"; continue
    fi
    read -r pids gids varied < <($PY -c '
import json, sys
p = json.loads(sys.argv[1]); o = json.load(open(sys.argv[2]))["samples"][0]
ok = o["prompt_ids"] == p["prompt_ids"]
print(",".join(map(str, o["prompt_ids"])) if ok else "differ", ",".join(map(str, p["generated_ids"])),
      int(len(set(o["generated_ids"])) > 1))' "$peer" "$TMP/$name.json")
    if [ "$pids" = differ ]; then
        fail "e2e_llamacpp $name: prompt ids equal llama.cpp's" "$peer; ours: $(head -c 400 "$TMP/$name.json")"; continue
    fi
    pass "e2e_llamacpp $name: prompt ids equal llama.cpp's"
    [ "$varied" = 1 ]
    check "e2e_llamacpp $name: our greedy tokens vary (the model is not degenerate)" $? "$gids"
    off=0; agreed=0; ties=""; res=""
    for round in 1 2 3 4; do
        read -r kind n gap scale < <(step "$f" $off)
        agreed=$((agreed + n))
        res="$kind $n $gap $scale"
        [ "$kind" = tie ] && [ $round -lt 4 ] || break
        ties="$ties step $((off + n)) (llama.cpp's token $gap below our best logit of max |logit| $scale);"
        off=$((off + n + 1))
        agreed=$((agreed + 1)) # llama.cpp's token, taken as agreed at the tie
        ctx=$pids,$(echo "$gids" | cut -d, -f1-$off)
        left=$(( $(echo "$gids" | tr , '\n' | wc -l) - off ))
        if [ $left -le 0 ]; then res="equal 0"; break; fi
        "$ST" --ckpt "$f" --prompt-ids "$ctx" --n-tokens $left --temperature 0 --quiet --n-threads 1 \
            --logits-out "$TMP/$name.logits" --output "$TMP/$name.json" 2>>"$TMP/starter.log" || { res="differ 0 starter"; break; }
    done
    [ -n "$ties" ] && echo "INFO: e2e_llamacpp $name: near ties at$ties re-synchronised on llama.cpp's tokens"
    set -- $res
    [ "$1" = equal ]
    check "e2e_llamacpp $name: greedy tokens equal llama.cpp's ($agreed of $NTOK steps${ties:+, near-tie rule})" $? \
        "$res at step $((off + ${2:-0})): llama.cpp $gids, ours $(head -c 300 "$TMP/$name.json")"
    total=$((total + agreed))
done
if [ -f "$TMP/llama-linear-f32.logits" ]; then
    ! cmp -s "$TMP/llama-f32.logits" "$TMP/llama-linear-f32.logits"
    check "e2e_llamacpp linear RoPE scaling changes the logits (it is applied, as llama.cpp applies it)" $? "equal"
fi
echo "INFO: e2e_llamacpp: $total greedy steps agree over ${#files[@]} files"
exit 0

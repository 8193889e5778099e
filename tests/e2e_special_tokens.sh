#!/usr/bin/env bash
# e2e_special_tokens: special tokens written in a prompt (<|im_start|>, <s>,
# <|eot_id|> ...) are recognised as Hugging Face tokenizers do by default,
# and taken as text with --no-parse-special (Hugging Face's
# split_special_tokens=True). The reference is @huggingface/transformers
# from npm, an independent implementation, run on the same local tokenizer
# files (installed by .ci/run into tests/node_modules; SKIP without it).
# Then the starter: a prompt's special token becomes its id, or text with
# --no-parse-special.
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
MDI_SHARED=${MDI_SHARED:-$(cd .. && pwd)/shared}
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/texts.json" <<'JSON'
["Hello <|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
 "<s>[INST] Who are you? [/INST] I am a model.</s><s>[INST] And? [/INST]",
 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
 "a<|eot_id|>b <|begin_of_text|> c",
 " <s> x</s>y",
 "<|endoftext|><|im_end|>\n",
 "no special token here, only text: <b>bold</b> and <|not a token|>",
 "<|im_start|><|im_start|>twice<|im_end|><|im_end|>",
 "Unicode: café, naïve, 日本語 <|im_end|> émoji 😀</s>",
 "  leading spaces <s>  and trailing  ",
 "<unk><pad><s></s>[INST]",
 ""]
JSON

if [ ! -d tests/node_modules/@huggingface/transformers ] || ! command -v node >/dev/null; then
    echo "SKIP: special tokens vs @huggingface/transformers: tests/node_modules/@huggingface/transformers missing (.ci/run installs it)"
else
    for t in llama2 llama3 mistral qwen3; do
        dir="$MDI_SHARED/tokenizers/$t"
        [ -d "$dir" ] || { echo "SKIP: special tokens $t: $dir missing"; continue; }
        for flag in "" --no-parse-special; do
            name="special tokens $t ${flag:-(parsed)} equal to @huggingface/transformers"
            if ! node tests/hf_tokenize.mjs "$dir" "$tmp/texts.json" $flag >"$tmp/hf.json" 2>"$tmp/hf.err"; then
                echo "FAIL: $name: node: $(tail -n 2 "$tmp/hf.err")"; continue
            fi
            if ! "$BIN/tokenize" "$dir" --json "$tmp/texts.json" $flag >"$tmp/us.json" 2>"$tmp/us.err"; then
                echo "FAIL: $name: tokenize: $(tail -n 2 "$tmp/us.err")"; continue
            fi
            $PY - "$tmp/hf.json" "$tmp/us.json" "$tmp/texts.json" "$name" <<'PYEOF'
import json, sys
hf, us, texts = (json.load(open(p)) for p in sys.argv[1:4])
bad = [i for i in range(len(texts)) if hf[i] != us[i]]
if bad:
    i = bad[0]
    print("FAIL: %s: %d of %d texts differ, first %r:\n  hf %s\n  us %s" % (sys.argv[4], len(bad), len(texts), texts[i], hf[i], us[i]))
else:
    print("PASS: %s (%d texts, %d ids)" % (sys.argv[4], len(texts), sum(map(len, us))))
PYEOF
        done
    done
fi

# The starter's prompt: parsed by default, text with --no-parse-special.
if $PY tools/gen_synthetic.py --shape tiny-qwen2 --dtype bf16 --out "$tmp/qw" >/dev/null 2>&1; then
    for flag in "" --no-parse-special; do
        "$BIN/starter" --ckpt "$tmp/qw" --prompt "Hi<|im_end|>" --n-tokens 1 --temperature 0 --quiet $flag \
            --output "$tmp/o.json" 2>"$tmp/err" || { echo "FAIL: starter ${flag:-parsing}: $(tail -n 1 "$tmp/err")"; continue; }
        $PY - "$tmp/o.json" "$flag" <<'PYEOF'
import json, sys
ids = json.load(open(sys.argv[1]))["samples"][0]["prompt_ids"]
flag = sys.argv[2]
ok = (151645 in ids) == (flag == "")
what = "--no-parse-special keeps <|im_end|> as text" if flag else "a prompt's <|im_end|> is token 151645"
print(("PASS: starter: %s %s" if ok else "FAIL: starter: %s: prompt ids %s") % (what, ids))
PYEOF
    done
else
    echo "FAIL: special tokens: cannot generate tiny-qwen2"
fi
exit 0

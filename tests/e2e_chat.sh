#!/usr/bin/env bash
# --chat: the starter wraps the prompt in the model's chat template, picked
# from tokenizer_config.json, and encodes its special tokens as such. Checked
# on synthetic checkpoints with the real Llama 3 and Qwen3 tokenizers: the
# prompt ids must be exactly the template's, and the ids of the template's
# special tokens must come from the vocabulary, not be spelled out as text.
set -u
BIN=${BIN:-bin}
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

$PY tools/gen_synthetic.py --shape tiny-llama3 --dtype bf16 --out "$tmp/l3" >/dev/null 2>&1 || { echo "FAIL: chat: cannot generate tiny-llama3"; exit 0; }
$PY tools/gen_synthetic.py --shape tiny-qwen2 --dtype bf16 --out "$tmp/qw" >/dev/null 2>&1 || { echo "FAIL: chat: cannot generate tiny-qwen2"; exit 0; }

check() { # name, ckpt, expected ids (python list literal)
    if ! "$BIN/starter" --ckpt "$2" --chat --prompt "Hello" --n-tokens 2 --temperature 0 --quiet \
        --output "$tmp/o.json" 2>"$tmp/err"; then
        echo "FAIL: $1: starter failed: $(tail -n 1 "$tmp/err")"
        return
    fi
    $PY - "$tmp/o.json" "$3" "$1" <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))["samples"][0]["prompt_ids"]
want = eval(sys.argv[2])
print("PASS: %s: %d template ids" % (sys.argv[3], len(got)) if got == want
      else "FAIL: %s: prompt ids %s, expected %s" % (sys.argv[3], got, want))
PY
}
# <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
check "Llama 3 chat template" "$tmp/l3" "[128000, 128006, 882, 128007, 271, 9906, 128009, 128006, 78191, 128007, 271]"
# <|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n
check "ChatML chat template (Qwen)" "$tmp/qw" "[151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]"

# A tokenizer without a template: a clear error, not a silent plain prompt.
"$BIN/starter" --ckpt "${MDI_SHARED:-../shared}/models/stories260K" --chat --prompt "Hi" --n-tokens 2 \
    >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q "chat template" "$tmp/err" && echo "PASS: --chat without a template is refused" \
    || echo "FAIL: --chat without a template: exit $rc, $(cat "$tmp/err")"
exit 0

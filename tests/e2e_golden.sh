#!/usr/bin/env bash
# Golden outputs: greedy decoding of the real stories260K model, from both
# of its layouts (Hugging Face and llama2.c), must give exactly the texts
# published in $MDI_SHARED/models/README.md ("### Golden output" section):
# 200 new tokens from BOS alone, and 120 tokens in all from BOS + "The dog".
set -u
BIN=${BIN:-bin}
SHARED=${MDI_SHARED:-../shared}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The README's first two ``` blocks after "### Golden output".
/usr/bin/python3 - "$SHARED/models/README.md" "$tmp" <<'PY'
import sys, re
text = open(sys.argv[1], encoding="utf-8").read()
section = text[text.index("### Golden output"):]
blocks = re.findall(r"```\n(.*?)```", section, re.S)
for i, b in enumerate(blocks[:2]):
    open(f"{sys.argv[2]}/golden{i}.txt", "w", encoding="utf-8").write(b[:-1] if b.endswith("\n") else b)
PY

check() { # name, expected file, got file
    if cmp -s "$2" "$3"; then
        echo "PASS: $1"
    else
        echo "FAIL: $1: output differs from the golden text"
        diff "$2" "$3" | head -n 10
    fi
}

json_text() { # output.json -> prompt + generated text of sample 0
    /usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["samples"][0]; sys.stdout.write(s["prompt"]+s["text"])' "$1"
}

for layout in stories260K stories260K-llama2c; do
    ckpt="$SHARED/models/$layout"
    if ! "$BIN/starter" --ckpt "$ckpt" --temperature 0 --n-tokens 200 --output "$tmp/a.json" \
        >"$tmp/a.out" 2>"$tmp/a.err"; then
        echo "FAIL: golden from BOS ($layout): starter exited with $?: $(tail -n 1 "$tmp/a.err")"
        continue
    fi
    json_text "$tmp/a.json" >"$tmp/a.txt"
    check "golden greedy text from BOS, 200 tokens ($layout, --output JSON)" "$tmp/golden0.txt" "$tmp/a.txt"
    printf '\n' >>"$tmp/a.txt"
    check "golden greedy text from BOS, 200 tokens ($layout, streamed stdout)" "$tmp/a.txt" "$tmp/a.out"

    # BOS + "The dog" is 4 prompt tokens (<s> ▁The ▁d og). "120 tokens in all"
    # counts forward steps as llama2.c's -n does: 4 prompt positions and 116
    # fed-back tokens, each step producing one: 117 new tokens.
    if ! "$BIN/starter" --ckpt "$ckpt" --temperature 0 --prompt "The dog" --n-tokens 117 --quiet \
        --output "$tmp/b.json" >/dev/null 2>"$tmp/b.err"; then
        echo "FAIL: golden with prompt ($layout): starter exited with $?: $(tail -n 1 "$tmp/b.err")"
        continue
    fi
    n_prompt=$(/usr/bin/python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["samples"][0]["prompt_ids"]))' "$tmp/b.json")
    [ "$n_prompt" = 4 ] && echo "PASS: \"The dog\" is BOS + 3 tokens ($layout)" || echo "FAIL: \"The dog\" gave $n_prompt prompt tokens ($layout)"
    json_text "$tmp/b.json" >"$tmp/b.txt"
    check "golden greedy text from \"The dog\", 120 tokens in all ($layout)" "$tmp/golden1.txt" "$tmp/b.txt"
done

# Other memory layouts give the same golden texts: an F16 KV cache (within
# its rounding, greedy tokens do not move on this model), weights mapped or
# in anonymous memory, locked or not; stats report the cache's bytes (f16
# half of f32).
ckpt="$SHARED/models/stories260K"
for flags in "--kv-dtype f16" "--kv-dtype f32" "--mmap" "--no-mmap" "--mmap --mlock" "--no-mmap --mlock"; do
    "$BIN/starter" --ckpt "$ckpt" --temperature 0 --n-tokens 200 --quiet $flags --output "$tmp/m.json" \
        2>"$tmp/m.err" && json_text "$tmp/m.json" >"$tmp/m.txt" \
        && check "golden greedy text from BOS with $flags" "$tmp/golden0.txt" "$tmp/m.txt" \
        || echo "FAIL: golden with $flags: $(tail -n 1 "$tmp/m.err")"
    cp "$tmp/m.json" "$tmp/m${flags##* }.json" 2>/dev/null
done
/usr/bin/python3 - "$tmp/mf16.json" "$tmp/mf32.json" <<'PY'
import json, sys
try:
    a, b = (json.load(open(p))["stats"] for p in sys.argv[1:3])
    ok = a["kv_dtype"] == "f16" and b["kv_dtype"] == "f32" and a["kv_bytes"] > 0 and 2 * a["kv_bytes"] == b["kv_bytes"]
    why = "f16 %s, f32 %s" % (a.get("kv_bytes"), b.get("kv_bytes"))
except Exception as e:
    ok, why = False, e
print("PASS: stats kv_bytes: an f16 cache is half an f32 one" if ok else "FAIL: stats kv_bytes: %s" % why)
PY
# --mlock where locking is not allowed (no CAP_IPC_LOCK, a 64 KiB
# RLIMIT_MEMLOCK): one warning line, the run goes on unlocked.
if grep -qa "__asan_init" "$BIN/starter"; then
    echo "SKIP: --mlock not allowed: AddressSanitizer makes mlock a no-op"
elif command -v setpriv >/dev/null && (ulimit -l 64 && setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock true) 2>/dev/null; then
    (ulimit -l 64; exec setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock "$BIN/starter" --ckpt "$ckpt" \
        --temperature 0 --n-tokens 200 --quiet --mlock --output "$tmp/l.json" 2>"$tmp/l.err"); rc=$?
    json_text "$tmp/l.json" >"$tmp/l.txt" 2>/dev/null
    [ $rc -eq 0 ] && [ "$(grep -c "mlock" "$tmp/l.err")" = 1 ] && grep -q "RLIMIT_MEMLOCK is 64 KiB" "$tmp/l.err" \
        && cmp -s "$tmp/golden0.txt" "$tmp/l.txt" \
        && echo "PASS: --mlock not allowed: one warning line naming RLIMIT_MEMLOCK, golden text unlocked" \
        || echo "FAIL: --mlock not allowed: exit $rc, $(cat "$tmp/l.err")"
else
    echo "SKIP: --mlock not allowed: cannot drop CAP_IPC_LOCK here (setpriv)"
fi
"$BIN/starter" --ckpt "$ckpt" --kv-dtype bf16 >"$tmp/e.out" 2>"$tmp/e.err"; rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <"$tmp/e.err")" -eq 1 ] && grep -q -- "--kv-dtype: expected f32 or f16" "$tmp/e.err" \
    && echo "PASS: --kv-dtype bf16: one line" || echo "FAIL: --kv-dtype bf16: exit $rc, $(cat "$tmp/e.err")"

# Same seed, same output; sampling with temperature differs from greedy.
ckpt="$SHARED/models/stories260K"
"$BIN/starter" --ckpt "$ckpt" --temperature 1.0 --top-p 0.9 --seed 7 --n-tokens 60 --quiet --output "$tmp/s1.json" 2>/dev/null
"$BIN/starter" --ckpt "$ckpt" --temperature 1.0 --top-p 0.9 --seed 7 --n-tokens 60 --quiet --output "$tmp/s2.json" 2>/dev/null
"$BIN/starter" --ckpt "$ckpt" --temperature 1.0 --top-p 0.9 --seed 8 --n-tokens 60 --quiet --output "$tmp/s3.json" 2>/dev/null
ids() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["samples"][0]["generated_ids"])' "$1"; }
[ -s "$tmp/s1.json" ] && [ "$(ids "$tmp/s1.json")" = "$(ids "$tmp/s2.json")" ] \
    && echo "PASS: same seed gives the same sampled tokens" || echo "FAIL: same seed gave different tokens"
[ -s "$tmp/s3.json" ] && [ "$(ids "$tmp/s1.json")" != "$(ids "$tmp/s3.json")" ] \
    && echo "PASS: another seed gives other tokens" || echo "FAIL: seeds 7 and 8 gave the same tokens"

# Stats in the output JSON.
/usr/bin/python3 - "$tmp/a.json" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))["stats"]
need = ["ttft_s", "prefill_tok_s", "decode_tok_s", "peak_rss_bytes", "blas_core", "simd"]
missing = [k for k in need if k not in st]
ok = not missing and st["decode_tok_s"] > 0 and st["peak_rss_bytes"] > 0 and st["blas_core"]
print(("PASS: --output stats present (blas_core %s, simd %s)" % (st.get("blas_core"), st.get("simd"))) if ok
      else "FAIL: --output stats incomplete: missing %s in %s" % (missing, st))
PY

# Prompts from a file, one per paragraph: each sample gets its own.
printf 'The dog\n\nOnce upon a time\n' >"$tmp/prompts.txt"
"$BIN/starter" --ckpt "$ckpt" --temperature 0 --prompt "FILE:$tmp/prompts.txt" --n-samples 2 --n-tokens 10 \
    --quiet --output "$tmp/f.json" 2>/dev/null
/usr/bin/python3 - "$tmp/f.json" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))["samples"]
    ok = [x["prompt"] for x in s] == ["The dog", "Once upon a time"] and all(len(x["generated_ids"]) == 10 for x in s)
except Exception as e:
    ok, s = False, e
print("PASS: --prompt FILE: gives one sample per paragraph" if ok else "FAIL: --prompt FILE: %s" % s)
PY

# Without --ckpt the starter takes the one model under checkpoints/ that is
# prepared for its number of nodes (here 1), and says which it took.
mkdir -p "$tmp/cwd"
"$BIN/prepare_model" "$ckpt" --n-nodes 1 --out "$tmp/cwd/checkpoints/stories" >/dev/null 2>&1
top=$(pwd)
case "$BIN" in /*) abs_bin=$BIN ;; *) abs_bin=$top/$BIN ;; esac
(cd "$tmp/cwd" && "$abs_bin/starter" --temperature 0 --n-tokens 200 --quiet --output "$tmp/n.json" 2>"$tmp/n.err")
json_text "$tmp/n.json" >"$tmp/n.txt" 2>/dev/null
grep -q "checkpoints/stories" "$tmp/n.err" && check "no --ckpt: the one prepared model is used (golden text)" "$tmp/golden0.txt" "$tmp/n.txt" \
    || echo "FAIL: no --ckpt: $(cat "$tmp/n.err")"
"$BIN/prepare_model" "$ckpt" --n-nodes 1 --out "$tmp/cwd/checkpoints/other" >/dev/null 2>&1
(cd "$tmp/cwd" && "$abs_bin/starter" --n-tokens 2 --quiet 2>"$tmp/n.err"); rc=$?
[ $rc -ne 0 ] && grep -q "several models" "$tmp/n.err" && echo "PASS: no --ckpt with two candidates: refused, naming them" \
    || echo "FAIL: no --ckpt with two candidates: exit $rc, $(cat "$tmp/n.err")"

# Bad input: one clear line, non-zero exit, nothing on stdout.
"$BIN/starter" --ckpt /nonexistent --prompt x >"$tmp/e.out" 2>"$tmp/e.err"; rc=$?
if [ $rc -ne 0 ] && [ ! -s "$tmp/e.out" ] && [ "$(wc -l <"$tmp/e.err")" -eq 1 ] && grep -q /nonexistent "$tmp/e.err"; then
    echo "PASS: missing checkpoint: one line naming it, exit $rc"
else
    echo "FAIL: missing checkpoint: exit $rc, stderr: $(cat "$tmp/e.err")"
fi
"$BIN/starter" --ckpt "$ckpt" --n-tokens many >/dev/null 2>"$tmp/e.err"; rc=$?
[ $rc -ne 0 ] && grep -q -- "--n-tokens" "$tmp/e.err" && echo "PASS: bad flag value named" || echo "FAIL: bad flag value: $(cat "$tmp/e.err")"
exit 0

#!/usr/bin/env bash
# e2e_interactive: bin/starter --chat --interactive driven through a
# pseudo-terminal (tests/pty_drive.py) on a synthetic Qwen2-shaped model
# with the real Qwen3 tokenizer (ChatML):
#  - two turns, /exit: exit 0; the second turn runs only its own tokens
#    (the --output JSON's pos_start and prompt_ids), and its reply equals a
#    one-shot run of the whole history given as --prompt-ids;
#  - Ctrl-D and Ctrl-C at the prompt end the conversation cleanly; Ctrl-C
#    while a reply streams stops that reply and keeps the conversation;
#  - -i on a 2-node ring gives the standalone conversation's tokens.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

QW="$TMP/qw"
if ! $PY tools/gen_synthetic.py --shape tiny-qwen2 --dtype bf16 --out "$QW" >>"$TMP/gen.log" 2>&1; then
    fail "e2e_interactive" "cannot generate tiny-qwen2: $(tail -n 2 "$TMP/gen.log")"; exit 0
fi
DRIVE="$PY tests/pty_drive.py"
CHAT=("$BIN/starter" --ckpt "$QW" -i --n-tokens 12 --temperature 0 --n-threads 1)

# Two turns, /exit.
printf 'expect > \nsend Hello\nexpect > \nsend How are you?\nexpect > \nsend /exit\nwait\n' |
    $DRIVE "$TMP/two.log" "$TMP/two.err" -- "${CHAT[@]}" --output "$TMP/two.json"
rc=$?
check "interactive: two turns and /exit, exit status 0" $rc "exit $rc: $(tail -n 3 "$TMP/two.err")"
$PY - "$TMP/two.json" >"$TMP/history" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))["samples"]
assert len(s) == 2, "%d turns" % len(s)
a, b = s
print(",".join(str(i) for i in a["prompt_ids"] + a["generated_ids"][:-1] + b["prompt_ids"]))
ok = (a["pos_start"] == 0 and b["pos_start"] == len(a["prompt_ids"]) + len(a["generated_ids"]) - 1
      and b["prompt_ids"][0] == a["generated_ids"][-1]
      and b["prompt_ids"][1:4] == [151645, 198, 151644])
print("turn 2 starts at %d with %d tokens of its own (turn 1: %d + %d)" %
      (b["pos_start"], len(b["prompt_ids"]), len(a["prompt_ids"]), len(a["generated_ids"])), file=sys.stderr)
sys.exit(0 if ok else 1)
PYEOF
check "interactive: the second turn is prefilled with its own tokens only, after the first" $? \
    "$(cat "$TMP/two.json" 2>/dev/null | head -c 600)"
if [ -s "$TMP/history" ]; then
    "$BIN/starter" --ckpt "$QW" --prompt-ids "$(head -n 1 "$TMP/history")" --n-tokens 12 --temperature 0 --quiet \
        --n-threads 1 --output "$TMP/oneshot.json" 2>>"$TMP/starter.log"
    $PY - "$TMP/two.json" "$TMP/oneshot.json" <<'PYEOF'
import json, sys
chat = json.load(open(sys.argv[1]))["samples"][1]["generated_ids"]
one = json.load(open(sys.argv[2]))["samples"][0]["generated_ids"]
sys.exit(0 if chat == one else 1)
PYEOF
    check "interactive: the second reply equals a one-shot run of the whole history (KV cache kept)" $? \
        "chat and one-shot replies differ"
fi
grep -q "How are you?" "$TMP/two.log"
check "interactive: the conversation is shown on the terminal" $? "$(head -c 300 "$TMP/two.log" | tr -cd '[:print:]\n')"

# Ctrl-D at the prompt.
printf 'expect > \nsend Hi\nexpect > \nkey ctrl-d\nwait\n' |
    $DRIVE "$TMP/eof.log" "$TMP/eof.err" -- "${CHAT[@]}" --output "$TMP/eof.json"
rc=$?
n=$($PY -c "import json,sys; print(len(json.load(open(sys.argv[1]))['samples']))" "$TMP/eof.json" 2>/dev/null)
[ $rc -eq 0 ] && [ "$n" = 1 ]
check "interactive: Ctrl-D ends the conversation, exit 0" $? "exit $rc, $n turns: $(tail -n 2 "$TMP/eof.err")"

# Ctrl-C while a reply streams, then Ctrl-C at the prompt.
printf '%s\n' 'expect > ' 'send Tell me a long story' 'expect story\n' 'sleep 0.3' 'key ctrl-c' 'expect [stopped]' \
    'expect > ' 'send Again' 'expect Again\n' 'sleep 0.3' 'key ctrl-c' 'expect [stopped]' 'expect > ' 'key ctrl-c' 'wait' |
    $DRIVE "$TMP/int.log" "$TMP/int.err" -- "$BIN/starter" --ckpt "$QW" -i --n-tokens 3500 --max-seq-len 4000 \
    --temperature 0 --n-threads 1 --output "$TMP/int.json"
rc=$?
$PY - "$TMP/int.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))["samples"]
sys.exit(0 if len(s) == 2 and s[0]["n_generated"] < 3500 and s[1]["n_generated"] < 3500 and
         s[1]["pos_start"] == len(s[0]["prompt_ids"]) + s[0]["n_generated"] - 1 else 1)
PYEOF
same=$?
check "interactive: Ctrl-C stops a reply and the conversation goes on; Ctrl-C at the prompt ends it, exit 0" \
    $((rc | same)) "exit $rc: $(tail -c 300 "$TMP/int.log" | tr -cd '[:print:]\n')"

# On the ring: the same conversation, token for token (stdin not a terminal).
mkcfg "$TMP/cfg2.json" 1
prepare "$QW" "$TMP/ck/qw" 2 || fail "interactive ring: prepare" "$(tail -n 3 "$TMP/prepare.log")"
if start_secondary "$TMP/cfg2.json" 0; then
    printf 'Hello\nHow are you?\n' | run_with_timeout 60 "$BIN/starter" --ckpt "$TMP/ck/qw" -i --n-tokens 12 \
        --temperature 0 --n-threads 1 --nodes-config "$TMP/cfg2.json" --output "$TMP/ring.json" \
        >"$TMP/ring.out" 2>>"$TMP/starter.log"
    rc=$?
    msg=$(same_ids "$TMP/two.json" "$TMP/ring.json" 2>&1); same=$?
    [ $rc -ne 0 ] && msg="exit $rc: $(tail -n 3 "$TMP/starter.log")"
    check "interactive on 2 nodes: both turns equal to standalone's" $((rc | same)) "$msg"
    st=$(status_field 0 state)
    check "interactive on 2 nodes: the secondary is idle after the conversation" $([ "$st" = idle ]; echo $?) "state $st"
    stop_secondaries
else
    fail "interactive ring" "secondary did not start: $(cat "$TMP/sec0.log")"
fi
exit 0

#!/usr/bin/env bash
# e2e_batch: batched decode does not change a sample's tokens. Several
# samples run at once (standalone: one batch per decode step; on a 3-node
# ring: every node runs the decode frames it has ready as one batch) must
# each give, token for token, what that sample gives when it runs alone:
# greedy and sampled (sample i of a run seeded S draws with seed S + i, so
# its lone run uses --seed S + i), prompts of different lengths, and more
# samples than standalone's slots (the later ones take the slots of those
# that finished). stories260K.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_batch: $STORIES missing"; exit 0; fi
CK="$TMP/ck/stories260K"
if ! prepare "$STORIES" "$CK" 1 3; then
    fail "e2e_batch prepare stories260K" "$(tail -3 "$TMP/prepare.log")"; exit 1
fi

PROMPTS=("Once upon a time" "The little dog ran to the park because he wanted to" "Lily saw a big red ball. She"
         "Tom" "One day, a bird flew over the house and the children looked up at the sky and")
N=${#PROMPTS[@]}
: >"$TMP/prompts.txt"
for ((i = 0; i < N; i++)); do printf '%s\n\n' "${PROMPTS[$i]}" >>"$TMP/prompts.txt"; done
COMMON=(--quiet --n-threads 1 --n-tokens 30)
SAMPLED=(--temperature 0.8 --top-p 0.9)
SEED=100

# Each prompt alone: greedy, and sampled with the seed its index gives it.
ok=0
for ((i = 0; i < N; i++)); do
    "$BIN/starter" --ckpt "$CK" --prompt "${PROMPTS[$i]}" --temperature 0 "${COMMON[@]}" \
        --output "$TMP/alone_g_$i.json" 2>>"$TMP/starter.log" || ok=1
    "$BIN/starter" --ckpt "$CK" --prompt "${PROMPTS[$i]}" "${SAMPLED[@]}" --seed $((SEED + i)) "${COMMON[@]}" \
        --output "$TMP/alone_s_$i.json" 2>>"$TMP/starter.log" || ok=1
done
check "e2e_batch: each sample alone" $ok "$(tail -3 "$TMP/starter.log")"

# same_as_alone RUN.json KIND N_SAMPLES: sample i equals alone_KIND_(i mod N).
same_as_alone() {
    $PY - "$TMP" "$1" "$2" "$3" "$N" <<'PYEOF'
import json, sys
tmp, run, kind, n, n_prompts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
got = json.load(open(run))["samples"]
if len(got) != n:
    print("%d samples, expected %d" % (len(got), n)); sys.exit(1)
for i in range(n):
    alone = json.load(open("%s/alone_%s_%d.json" % (tmp, kind, i % n_prompts)))["samples"][0]
    if got[i]["generated_ids"] != alone["generated_ids"]:
        print("sample %d differs from its run alone:\n  %s\n  %s" % (i, got[i]["generated_ids"], alone["generated_ids"]))
        sys.exit(1)
    if not alone["generated_ids"]:
        print("sample %d generated nothing" % i); sys.exit(1)
PYEOF
}

# Standalone: the N prompts as one batch, greedy and sampled; then 20
# samples (more than the 16 slots), greedy.
"$BIN/starter" --ckpt "$CK" --prompt "FILE:$TMP/prompts.txt" --n-samples $N --temperature 0 "${COMMON[@]}" \
    --output "$TMP/sa_g.json" 2>>"$TMP/starter.log"
rc=$?; msg=$(same_as_alone "$TMP/sa_g.json" g $N 2>&1); same=$?
[ $rc -ne 0 ] && msg="starter exit $rc: $(tail -3 "$TMP/starter.log")"
check "e2e_batch standalone, $N samples in one batch, greedy: each as alone" $((rc | same)) "$msg"
"$BIN/starter" --ckpt "$CK" --prompt "FILE:$TMP/prompts.txt" --n-samples $N "${SAMPLED[@]}" --seed $SEED \
    "${COMMON[@]}" --output "$TMP/sa_s.json" 2>>"$TMP/starter.log"
rc=$?; msg=$(same_as_alone "$TMP/sa_s.json" s $N 2>&1); same=$?
[ $rc -ne 0 ] && msg="starter exit $rc: $(tail -3 "$TMP/starter.log")"
check "e2e_batch standalone, $N samples in one batch, sampled: each as alone" $((rc | same)) "$msg"
"$BIN/starter" --ckpt "$CK" --prompt "FILE:$TMP/prompts.txt" --n-samples 20 --temperature 0 "${COMMON[@]}" \
    --output "$TMP/sa_20.json" 2>>"$TMP/starter.log"
rc=$?; msg=$(same_as_alone "$TMP/sa_20.json" g 20 2>&1); same=$?
[ $rc -ne 0 ] && msg="starter exit $rc: $(tail -3 "$TMP/starter.log")"
check "e2e_batch standalone, 20 samples on 16 slots, greedy: each as alone" $((rc | same)) "$msg"
# The texts come out in the samples' order.
"$BIN/starter" --ckpt "$CK" --prompt "FILE:$TMP/prompts.txt" --n-samples $N --temperature 0 --n-threads 1 \
    --n-tokens 30 >"$TMP/sa_text.out" 2>>"$TMP/starter.log"
order=$(grep -o '^--- sample [0-9]* ---' "$TMP/sa_text.out" | tr -dc '0-9\n' | tr '\n' ' ')
[ "$order" = "0 1 2 3 4 " ]
check "e2e_batch standalone: texts printed in the samples' order" $? "order: $order"

# A 3-node ring: the same runs.
cfg="$TMP/cfg3.json"
mkcfg "$cfg" 2
ok=0
for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
check "e2e_batch 3 nodes: secondaries start" $ok "$(cat "$TMP"/sec*.log)"
for kind in g s; do
    if [ $kind = g ]; then args=(--temperature 0); label=greedy; else args=("${SAMPLED[@]}" --seed $SEED); label=sampled; fi
    out="$TMP/ring_$kind.json"
    run_with_timeout 60 "$BIN/starter" --ckpt "$CK" --nodes-config "$cfg" --prompt "FILE:$TMP/prompts.txt" \
        --n-samples $N "${args[@]}" "${COMMON[@]}" --output "$out" 2>>"$TMP/starter.log"
    rc=$?; msg=$(same_as_alone "$out" $kind $N 2>&1); same=$?
    [ $rc -ne 0 ] && msg="starter exit $rc: $(tail -3 "$TMP/starter.log")"
    check "e2e_batch 3 nodes, $N samples, $label: each as alone" $((rc | same)) "$msg"
done
# How many decode rows ran in batches of several, per node (the starter's
# head and layers, each secondary's layers).
batched=$($PY - "$TMP/ring_g.json" <<'PYEOF' 2>/dev/null
import json, sys
nodes = json.load(open(sys.argv[1]))["nodes"]
print(" ".join("%s:%s" % (n["role"] + str(n.get("secondary_index", "")), n.get("batched_tokens", 0)) for n in nodes))
PYEOF
)
echo "INFO: e2e_batch 3 nodes, greedy: rows run in batches of several per node: $batched"
# Five samples' prompts leave the starter back to back: some node finds
# several decode frames waiting at least once.
total=0
for node in $batched; do total=$((total + ${node#*:})); done
[ $total -gt 0 ]
check "e2e_batch 3 nodes: decode frames ran in batches" $? "rows in batches per node: $batched"
# The engine on the ring: more samples than slots (70 on 64: the later
# ones take a slot once its RELEASE came back round the ring), prompts of
# different lengths, one of them longer than a prefill chunk (256 tokens):
# each sample's text and tokens as its prompt's alone, standalone.
ONE="Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog."
LONG=$ONE
for ((r = 0; r < 10; r++)); do LONG="$LONG $ONE"; done
"$BIN/starter" --ckpt "$CK" --prompt "$LONG" --temperature 0 "${COMMON[@]}" --output "$TMP/alone_g_$N.json" \
    2>>"$TMP/starter.log"
check "e2e_batch: the long prompt alone" $? "$(tail -3 "$TMP/starter.log")"
cp "$TMP/prompts.txt" "$TMP/prompts_long.txt"
printf '%s\n\n' "$LONG" >>"$TMP/prompts_long.txt"
out="$TMP/ring_70.json"
run_with_timeout 120 "$BIN/starter" --ckpt "$CK" --nodes-config "$cfg" --prompt "FILE:$TMP/prompts_long.txt" \
    --n-samples 70 --temperature 0 "${COMMON[@]}" --output "$out" 2>>"$TMP/starter.log"
rc=$?
msg=$($PY - "$TMP" "$out" $((N + 1)) <<'PYEOF' 2>&1
import json, sys
tmp, run, n_prompts = sys.argv[1], sys.argv[2], int(sys.argv[3])
got = json.load(open(run))["samples"]
if len(got) != 70:
    print("%d samples, expected 70" % len(got)); sys.exit(1)
long_n = json.load(open("%s/alone_g_%d.json" % (tmp, n_prompts - 1)))["samples"][0]
if len(long_n["prompt_ids"]) <= 256:
    print("the long prompt has %d tokens only" % len(long_n["prompt_ids"])); sys.exit(1)
for i in range(70):
    alone = json.load(open("%s/alone_g_%d.json" % (tmp, i % n_prompts)))["samples"][0]
    if got[i]["generated_ids"] != alone["generated_ids"] or got[i]["text"] != alone["text"]:
        print("sample %d differs from its prompt alone:\n  %s\n  %s" % (i, got[i]["text"], alone["text"]))
        sys.exit(1)
PYEOF
)
same=$?
[ $rc -ne 0 ] && msg="starter exit $rc: $(tail -3 "$TMP/starter.log")"
check "e2e_batch 3 nodes, engine: 70 samples on 64 slots, one prompt of two prefill chunks: each as alone" \
    $((rc | same)) "$msg"
stop_secondaries
check "e2e_batch 3 nodes: secondaries exit on SIGTERM" $? "a secondary outlived SIGTERM"

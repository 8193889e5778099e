#!/usr/bin/env bash
# bench_peers: decode speed of our standalone engine beside a peer, llama2.c's
# run.c, on the same machine, in the same run, on the same weights.
#
#   LLAMA2C_RUN=/path/to/llama2.c/run tools/bench_peers.sh
#   BENCH_PEERS_MODELS=stories260K BENCH_PEERS_REPS=5 LLAMA2C_RUN=... tools/bench_peers.sh
#
# The peer is not part of this project: build it wherever you keep it, e.g.
# gcc -Ofast -fopenmp -march=native run.c -lm -o run (OpenMP, as its README
# recommends), and name the binary in LLAMA2C_RUN; without it the script
# prints a SKIP line and exits 0.
#
# Models:
#   stories260K     real weights: ../shared/models/stories260K (ours) and
#                   ../shared/models/stories260K-llama2c/stories260K.bin (peer)
#   tinyllama-1.1b  synthetic (random) weights with TinyLlama 1.1B's shapes,
#                   checkpoints/synthetic-tinyllama-1.1b-{f32,bf16} from
#                   tools/gen_synthetic.py, exported for the peer by
#                   tools/export_llama2c.py into <that folder>-llama2c/
# All of it is cached under checkpoints/ (ignored by git).
#
# Both programs compute in f32 from BOS alone, greedily, for STEPS positions:
#
#   OMP_NUM_THREADS=T run model.bin -z tok.bin -t 0 -n STEPS        "achieved tok/s: X"
#   bin/starter --ckpt DIR --prompt-ids 1 --n-tokens STEPS-1 --temperature 0
#               --n-threads T --dtype f32 --quiet --output out.json  stats.decode_tok_s
#
# Both rates leave out the first forward pass (run.c starts its clock after
# it; ours counts it as prefill). run.c's clock counts milliseconds, so the
# small model runs 256 positions (about 20 ms; greedy stories260K reaches BOS,
# where run.c stops, at 346) to keep the rounding near 5%; the 1.1B runs 64
# (BENCH_PEERS_STEPS, BENCH_PEERS_STEPS_LARGE).
# For each model and thread count the two programs alternate, REPS times
# (the one to go first swaps every repetition); the median of each is
# reported with ratio = ours / llama2.c (above 1: we are faster). The load
# average is printed with every repetition: on a shared machine other work
# skews the 2-thread figures most. Writes plots/bench_peers.csv:
#
#   model,synthetic,threads,ours_tok_s,llama2c_tok_s,ratio
#
# It also cross-checks correctness: our greedy tokens, decoded with the
# peer's tokenizer as run.c prints them, against the peer's text. On the real
# stories260K they must agree on every token (PASS/FAIL line); on synthetic
# weights, where near-ties between logits are common, the agreement is shown.
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=${BIN:-bin}
PY=/usr/bin/python3
SHARED=${MDI_SHARED:-../shared}
MODELS=${BENCH_PEERS_MODELS:-"stories260K tinyllama-1.1b"}
THREADS=${BENCH_PEERS_THREADS:-"1 2"}
REPS=${BENCH_PEERS_REPS:-3}
STEPS_SMALL=${BENCH_PEERS_STEPS:-256}
STEPS_LARGE=${BENCH_PEERS_STEPS_LARGE:-64}
CSV=plots/bench_peers.csv
STARTER=$BIN/starter
PEER=${LLAMA2C_RUN:-}

if [ -z "$PEER" ]; then
    echo "SKIP: bench_peers: LLAMA2C_RUN is not set (path to a built llama2.c run)"
    exit 0
fi
if [ ! -x "$PEER" ]; then
    echo "SKIP: bench_peers: LLAMA2C_RUN=$PEER is not an executable"
    exit 0
fi
if [ ! -x "$STARTER" ]; then
    echo "bench_peers: $STARTER not built (make first)" >&2
    exit 1
fi
mkdir -p plots checkpoints
tmp=$(mktemp -d /tmp/mdi-bench-peers.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failures=0

free_bytes() { echo $(( $(df -Pk "$1" | awk 'NR==2 {print $4}') * 1024 )); }

# ---- models: sets OURS_DIR, PEER_BIN, PEER_TOK, SYNTH, STEPS for $1.
prepare_model() {
    case "$1" in
    stories260K)
        OURS_DIR=$SHARED/models/stories260K
        PEER_BIN=$SHARED/models/stories260K-llama2c/stories260K.bin
        PEER_TOK=$SHARED/models/stories260K-llama2c/tok512.bin
        SYNTH=no; STEPS=$STEPS_SMALL
        [ -f "$OURS_DIR/model.safetensors" ] && [ -f "$PEER_BIN" ] && [ -f "$PEER_TOK" ] || {
            echo "bench_peers: stories260K not found under $SHARED/models" >&2; return 1; }
        ;;
    *)
        local d
        OURS_DIR=
        for d in f32 bf16; do
            if [ -f "checkpoints/synthetic-$1-$d/model.safetensors" ]; then
                OURS_DIR=checkpoints/synthetic-$1-$d; break
            fi
        done
        if [ -z "$OURS_DIR" ]; then
            # BF16 storage halves the disk; both engines compute in f32 anyway.
            local need
            need=$($PY tools/gen_synthetic.py --shape "$1" --dtype bf16 --out x --print-bytes) || return 1
            if [ $(( need * 3 + (2 << 30) )) -gt "$(free_bytes checkpoints)" ]; then
                echo "bench_peers: not enough disk for synthetic $1 and its export" >&2; return 1
            fi
            OURS_DIR=checkpoints/synthetic-$1-bf16
            echo "bench_peers: generating $OURS_DIR (synthetic)"
            $PY tools/gen_synthetic.py --shape "$1" --dtype bf16 --out "$OURS_DIR" || return 1
        fi
        PEER_BIN=$OURS_DIR-llama2c/model.bin
        PEER_TOK=$OURS_DIR-llama2c/tokenizer.bin
        if [ ! -f "$PEER_TOK" ] || [ "$PEER_BIN" -ot "$OURS_DIR/model.safetensors" ]; then
            local f32_bytes
            f32_bytes=$($PY -c "import json; c = json.load(open('$OURS_DIR/config.json'))
h, i, l, v = c['hidden_size'], c['intermediate_size'], c['num_hidden_layers'], c['vocab_size']
kv = c.get('num_key_value_heads', c['num_attention_heads']) * h // c['num_attention_heads']
print(4 * (2 * v * h + l * (2 * h * h + 2 * kv * h + 3 * h * i)))")
            if [ $(( f32_bytes + (2 << 30) )) -gt "$(free_bytes checkpoints)" ]; then
                echo "bench_peers: not enough disk for the llama2.c export of $OURS_DIR ($(( f32_bytes >> 20 )) MiB)" >&2
                return 1
            fi
            mkdir -p "$OURS_DIR-llama2c"
            rm -f "$PEER_BIN" "$PEER_TOK"
            $PY tools/export_llama2c.py --ckpt "$OURS_DIR" --out "$PEER_BIN" --tokenizer-out "$PEER_TOK" || return 1
        fi
        SYNTH=yes; STEPS=$STEPS_LARGE
        ;;
    esac
}

# ---- one run of each program: prints tok/s, leaves the output in $tmp.
run_ours() { # threads steps -> tok/s
    timeout 900 "$STARTER" --ckpt "$OURS_DIR" --prompt-ids 1 --n-tokens $(( $2 - 1 )) --temperature 0 \
        --n-threads "$1" --dtype f32 --quiet --output "$tmp/ours.json" >"$tmp/ours.out" 2>"$tmp/ours.err" || {
        echo "bench_peers: starter failed: $(tail -n 2 "$tmp/ours.err" | tr '\n' ' ')" >&2; return 1; }
    $PY -c "import json, sys; print('%.3f' % json.load(open(sys.argv[1]))['stats']['decode_tok_s'])" "$tmp/ours.json"
}
run_peer() { # threads steps -> tok/s
    OMP_NUM_THREADS=$1 timeout 900 "$PEER" "$PEER_BIN" -z "$PEER_TOK" -t 0 -n "$2" -s 1 \
        >"$tmp/peer.out" 2>"$tmp/peer.err" || {
        echo "bench_peers: llama2.c failed: $(tail -n 2 "$tmp/peer.err" | tr '\n' ' ')" >&2; return 1; }
    awk '/^achieved tok\/s:/ {printf "%.3f\n", $3; found = 1} END {exit !found}' "$tmp/peer.err" || {
        echo "bench_peers: no \"achieved tok/s\" from llama2.c" >&2; return 1; }
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# ---- greedy agreement: how many of our tokens, decoded as run.c prints
# them (leading space dropped after BOS, <0xXX> as the byte, unprintable
# single bytes skipped), make a prefix of the peer's text.
agreement() { # -> "K N": K of our first N tokens agree (N: up to a BOS)
    $PY - "$tmp/ours.json" "$tmp/peer.out" "$PEER_TOK" <<'EOF'
import json, re, struct, sys
ours, peer_out, tok = sys.argv[1:4]
ids = json.load(open(ours))["samples"][0]["generated_ids"]
# run.c stops when it samples BOS: compare up to there.
ids = ids[:ids.index(1)] if 1 in ids else ids
data = open(tok, "rb").read()
off, pieces = 4, []
while off < len(data):
    _, n = struct.unpack_from("<fi", data, off)
    pieces.append(data[off + 8: off + 8 + n]); off += 8 + n
text = open(peer_out, "rb").read()
out, prev, k = b"", 1, 0
for t in ids:
    p = pieces[t] if t < len(pieces) else b""
    if prev == 1 and p.startswith(b" "):
        p = p[1:]
    m = re.fullmatch(rb"<0x([0-9A-Fa-f]{2})>", p)
    if m:
        p = bytes([int(m.group(1), 16)])
    if len(p) == 1 and not (0x20 <= p[0] < 0x7f or p[0] in b" \t\n\v\f\r"):
        p = b""     # run.c's safe_printf: C-locale isprint or isspace only
    if not text.startswith(out + p):
        break
    out += p; prev = t; k += 1
print(k, len(ids))
EOF
}

echo "model,synthetic,threads,ours_tok_s,llama2c_tok_s,ratio" >"$CSV"
start=$(date +%s)
echo "bench_peers: ours $STARTER, peer $PEER; $REPS repetitions, programs alternating"
for m in $MODELS; do
    prepare_model "$m" || { failures=$((failures + 1)); continue; }
    label=$m; [ "$SYNTH" = yes ] && label="synthetic-$m"
    # Bring both weight files into the page cache so neither run pays the disk.
    cat "$OURS_DIR"/*.safetensors "$PEER_BIN" >/dev/null
    for t in $THREADS; do
        ours=(); peer=()
        for r in $(seq 1 "$REPS"); do
            if [ $(( r % 2 )) = 1 ]; then
                o=$(run_ours "$t" "$STEPS") && p=$(run_peer "$t" "$STEPS") || { failures=$((failures + 1)); break; }
            else
                p=$(run_peer "$t" "$STEPS") && o=$(run_ours "$t" "$STEPS") || { failures=$((failures + 1)); break; }
            fi
            ours+=("$o"); peer+=("$p")
            echo "  $label ${t}t rep $r: ours $o tok/s, llama2.c $p tok/s (load average $(cut -d' ' -f1 /proc/loadavg))"
        done
        [ "${#ours[@]}" -gt 0 ] || continue
        mo=$(median "${ours[@]}"); mp=$(median "${peer[@]}")
        ratio=$(awk -v a="$mo" -v b="$mp" 'BEGIN {printf "%.3f", (b > 0) ? a / b : 0}')
        echo "$label,$SYNTH,$t,$mo,$mp,$ratio" >>"$CSV"
        read -r k n < <(agreement)
        if [ "$SYNTH" = no ]; then
            if [ "$k" = "$n" ]; then
                echo "PASS: greedy tokens agree with llama2.c on $m, ${t}t ($k/$n)"
            else
                echo "FAIL: greedy tokens part from llama2.c on $m, ${t}t after $k of $n"
                failures=$((failures + 1))
            fi
        else
            echo "  greedy agreement with llama2.c on $label, ${t}t: $k/$n tokens (random weights: near-ties expected)"
        fi
    done
done

echo
echo "Decode tok/s, ours vs llama2.c run.c (median of $REPS, f32 compute; $(( $(date +%s) - start ))s):"
column -s, -t <"$CSV" 2>/dev/null || cat "$CSV"
echo "wrote $CSV"
[ "$failures" -eq 0 ]

#!/usr/bin/env bash
# bench_peers: our standalone engine beside peers on the same machine, in the
# same run, on the same weights: llama2.c's run.c (decode) and llama.cpp's CPU
# backend through its llama-bench (prefill and decode, F32, F16 and BF16).
#
#   LLAMA2C_RUN=/path/to/llama2.c/run tools/bench_peers.sh
#   BENCH_PEERS_MODELS=stories260K BENCH_PEERS_REPS=5 LLAMA2C_RUN=... tools/bench_peers.sh
#   LLAMACPP_BENCH=/path/to/llama-bench LLAMACPP_GGUF_F32=tl-f32.gguf \
#       LLAMACPP_GGUF_F16=tl-f16.gguf LLAMACPP_GGUF_BF16=tl-bf16.gguf \
#       LLAMACPP_GGUF_Q8_0=tl-q8_0.gguf LLAMACPP_GGUF_Q4_0=tl-q4_0.gguf \
#       [LLAMACPP_SIMPLE=/path/to/llama-simple] tools/bench_peers.sh
#
# The peers are not part of this project: build them wherever you keep them
# and name the binaries in the variables above; a peer whose variable is unset
# gets a SKIP line, and with neither the script exits 0 having run nothing.
#
# ---- llama2.c
# Build it e.g. with gcc -Ofast -fopenmp -march=native run.c -lm -o run
# (OpenMP, as its README recommends), and name the binary in LLAMA2C_RUN.
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
# reported with ratio = ours / peer (above 1: we are faster). The load
# average is printed with every repetition: on a shared machine other work
# skews the 2-thread figures most.
#
# It also cross-checks correctness: our greedy tokens, decoded with the
# peer's tokenizer as run.c prints them, against the peer's text. On the real
# stories260K they must agree on every token (PASS/FAIL line); on synthetic
# weights, where near-ties between logits are common, the agreement is shown.
#
# ---- llama.cpp
# Build its llama-bench (and llama-simple, for the greedy check) with its
# CMake, CPU backend, native flags, Release; name them in LLAMACPP_BENCH and
# LLAMACPP_SIMPLE. LLAMACPP_GGUF_F32, LLAMACPP_GGUF_F16 and LLAMACPP_GGUF_BF16
# are GGUF files (architecture llama, tensors F32, or F16/BF16 with F32 norms)
# holding the same weights as checkpoints/synthetic-tinyllama-1.1b-f32 and
# -bf16, with the q and k rows in llama.cpp's interleaved rotary order, as
# its own converter writes them (BENCH_PEERS_LLAMACPP_CKPT names another
# pair of folders, without the -f32/-bf16). A dtype whose file is not given
# is skipped. For each dtype and thread count, alternating, REPS times:
#
#   llama-bench -m F.gguf -p 128 -n 32 -t T -r 1 -mmp 0 -o csv  avg_ts of pp128, tg32
#   bin/starter --ckpt DIR --prompt-ids <128 ids> --n-tokens 32 --temperature 0
#               --n-threads T --dtype DTYPE [--no-mmap] --quiet --output out.json
#                                           stats.prefill_tok_s, stats.decode_tok_s
#
# Weights in anonymous memory for both: on a machine that reclaims clean
# file pages (workingset_refault_file in /proc/vmstat), weights read from a
# file mapping are read from disk again and again, and the figures measure
# the disk. llama-bench gets -mmp 0 (it reads the file into its buffers).
# Ours converts weights whose stored dtype differs from --dtype into
# anonymous buffers, and borrows the others from the file mapping; when the
# starter has --no-mmap it is given that and reads DIR-DTYPE (F16: the -f32
# folder), otherwise each dtype is read from a folder of another dtype, so
# that it is converted: F32 and F16 from -bf16, BF16 from -f32 (the same
# shapes; random weights, so the values do not change the work).
#
# Q8_0 and Q4_0 (LLAMACPP_GGUF_Q8_0/Q4_0: made from the F32 GGUF with
# llama-quantize --pure, which quantizes every matrix, embedding and output
# included, with the reference rounding): ours is the -f32 folder quantized
# by bin/prepare_model --dtype into DIR-q8_0 / DIR-q4_0 (made when missing),
# with every matrix quantized too. These run twice, weights in anonymous
# memory and borrowed from the file mapping (phases *_mmap; set
# BENCH_PEERS_MMAP_TOO=0 to skip). BENCH_PEERS_DTYPES picks the dtypes
# (default "f32 f16 bf16 q8_0 q4_0"). Our peak RSS is printed per run.
#
# Both count the 128-token prefill as one batch and each decode step as one
# forward pass of one token (llama-bench decodes from an empty cache, ours
# after the 128 prompt tokens: a 1B model's attention over 160 positions is
# under 1% of its matvec work). llama-bench warms up once in every run
# (BENCH_PEERS_LLAMACPP_R sets its own repetitions, default 1); llama.cpp
# keeps its KV cache in f16, ours in f32. With LLAMACPP_SIMPLE the greedy
# continuation of a fixed text prompt is compared as text (shown, not judged:
# random weights).
#
# Writes plots/bench_peers.csv, replacing only the rows of the peers that ran
# (rows of the older layout, without the peer column, are kept as llama2.c's):
#
#   peer,model,synthetic,dtype,threads,phase,ours_tok_s,peer_tok_s,ratio
#
# phase: decode (both peers) or prefill (llama.cpp, 128 tokens).
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=${BIN:-bin}
PY=/usr/bin/python3
. tools/bench_lib.sh
SHARED=${MDI_SHARED:-../shared}
MODELS=${BENCH_PEERS_MODELS:-"stories260K tinyllama-1.1b"}
THREADS=${BENCH_PEERS_THREADS:-"1 2"}
REPS=${BENCH_PEERS_REPS:-3}
STEPS_SMALL=${BENCH_PEERS_STEPS:-256}
STEPS_LARGE=${BENCH_PEERS_STEPS_LARGE:-64}
CSV=plots/bench_peers.csv
STARTER=$BIN/starter
PEER=${LLAMA2C_RUN:-}
LLAMACPP=${LLAMACPP_BENCH:-}
LLAMACPP_CKPT=${BENCH_PEERS_LLAMACPP_CKPT:-checkpoints/synthetic-tinyllama-1.1b}
LLAMACPP_R=${BENCH_PEERS_LLAMACPP_R:-1}
LLAMACPP_DTYPES=${BENCH_PEERS_DTYPES:-"f32 f16 bf16 q8_0 q4_0"}
LLAMACPP_MMAP_TOO=${BENCH_PEERS_MMAP_TOO:-1}
CSV_HEADER="peer,model,synthetic,dtype,threads,phase,ours_tok_s,peer_tok_s,ratio"

run_llama2c=yes run_llamacpp=yes
if [ -z "$PEER" ]; then
    echo "SKIP: bench_peers: LLAMA2C_RUN is not set (path to a built llama2.c run)"
    run_llama2c=no
elif [ ! -x "$PEER" ]; then
    echo "SKIP: bench_peers: LLAMA2C_RUN=$PEER is not an executable"
    run_llama2c=no
fi
if [ -z "$LLAMACPP" ]; then
    echo "SKIP: bench_peers: LLAMACPP_BENCH is not set (path to a built llama.cpp llama-bench)"
    run_llamacpp=no
elif [ ! -x "$LLAMACPP" ]; then
    echo "SKIP: bench_peers: LLAMACPP_BENCH=$LLAMACPP is not an executable"
    run_llamacpp=no
fi
[ "$run_llama2c" = yes ] || [ "$run_llamacpp" = yes ] || exit 0
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

# ---- CSV: this layout's header, then the rows of the (peer, model) pairs
# that do not run now (rows of the older layout, without the peer column,
# are llama2.c's).
csv_prepare() {
    local old=$tmp/old.csv
    if [ -f "$CSV" ]; then cp "$CSV" "$old"; else : >"$old"; fi
    echo "$CSV_HEADER" >"$CSV"
    $PY - "$old" "$run_llama2c" "$run_llamacpp" "$MODELS" "$(basename "${LLAMACPP_CKPT:-none}")" >>"$CSV" <<'EOF'
import csv, sys
path, l2c, lcpp, l2c_models, lcpp_model = sys.argv[1:6]
l2c_models = set(l2c_models.split()) | {"synthetic-" + m for m in l2c_models.split()}
rows = list(csv.reader(open(path)))
head, rows = (rows[0], rows[1:]) if rows else ([], [])
for r in rows:
    if head[:1] != ["peer"]:
        r = ["llama2.c", r[0], r[1], "f32", r[2], "decode"] + r[3:6]
    if (r[0] == "llama2.c" and l2c == "yes" and r[1] in l2c_models) or \
       (r[0] == "llama.cpp" and lcpp == "yes" and r[1] == lcpp_model):
        continue
    print(",".join(r))
EOF
}

bench_llama2c() {
    local m t r o p mo mp ratio k n label ours peer
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
            echo "llama2.c,$label,$SYNTH,f32,$t,decode,$mo,$mp,$ratio" >>"$CSV"
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
}

# ---- llama.cpp: one run of each program. Ours is given 128 prompt ids, BOS
# and then ids spread over the vocabulary (llama-bench draws them at random:
# the work does not depend on them).
prompt_ids() { # dir -> 128 comma-separated ids
    $PY -c "import json, sys; v = json.load(open(sys.argv[1]))['vocab_size']
print(','.join(['1'] + [str(3 + i * 7919 % (v - 3)) for i in range(1, 128)]))" "$1/config.json"
}
run_ours_pd() { # dir dtype threads -> "prefill decode" tok/s
    # shellcheck disable=SC2086 # OURS_MMAP_FLAG is empty or one flag
    timeout 900 "$STARTER" --ckpt "$1" --prompt-ids "$(prompt_ids "$1")" --n-tokens 32 --temperature 0 \
        --n-threads "$3" --dtype "$2" $OURS_MMAP_FLAG --quiet --output "$tmp/ours.json" >"$tmp/ours.out" 2>"$tmp/ours.err" || {
        echo "bench_peers: starter failed: $(tail -n 2 "$tmp/ours.err" | tr '\n' ' ')" >&2; return 1; }
    $PY -c "import json, sys; s = json.load(open(sys.argv[1]))['stats']; print('%.3f %.3f %d' % (s['prefill_tok_s'], s['decode_tok_s'], s.get('peak_rss_bytes', 0) >> 20))" "$tmp/ours.json"
}
run_llamacpp() { # gguf threads -> "prefill decode" tok/s
    timeout 900 "$LLAMACPP" -m "$1" -p 128 -n 32 -t "$2" -r "$LLAMACPP_R" -mmp "${LLAMACPP_MMP:-0}" -o csv >"$tmp/lcpp.csv" 2>"$tmp/lcpp.err" || {
        echo "bench_peers: llama-bench failed: $(tail -n 2 "$tmp/lcpp.err" | tr '\n' ' ')" >&2; return 1; }
    $PY - "$tmp/lcpp.csv" <<'EOF'
import csv, sys
pp = tg = None
for r in csv.DictReader(open(sys.argv[1])):
    if r["n_prompt"] == "128" and r["n_gen"] == "0":
        pp = float(r["avg_ts"])
    if r["n_prompt"] == "0" and r["n_gen"] == "32":
        tg = float(r["avg_ts"])
if pp is None or tg is None:
    sys.exit("bench_peers: no pp128 and tg32 rows in llama-bench's CSV")
print("%.3f %.3f" % (pp, tg))
EOF
}

# Greedy continuation of one text prompt, ours against llama-simple's, as
# text: how many of our characters its output repeats after the prompt.
llamacpp_greedy() { # dir dtype gguf -> "K/N"
    local prompt="The quick brown fox jumps over the lazy dog"
    "$STARTER" --ckpt "$1" --prompt "$prompt" --n-tokens 16 --temperature 0 --n-threads 2 --dtype "$2" \
        --quiet --output "$tmp/greedy.json" >/dev/null 2>&1 &&
        timeout 300 "$LLAMACPP_SIMPLE" -m "$3" -n 16 "$prompt" >"$tmp/simple.out" 2>/dev/null || {
        echo "?/? (a program failed)"; return 0; }
    $PY - "$tmp/greedy.json" "$tmp/simple.out" "$prompt" <<'EOF'
import json, sys
ours = json.load(open(sys.argv[1]))["samples"][0]["text"]
out = open(sys.argv[2], encoding="utf-8", errors="replace").read()
prompt = sys.argv[3]
rest = out[out.index(prompt) + len(prompt):] if prompt in out else ""
k = 0
while k < min(len(ours), len(rest)) and ours[k] == rest[k]:
    k += 1
print("%d/%d" % (k, len(ours)))
EOF
}

bench_llamacpp() {
    local d t r gguf dir same o p a b c e rss phase mo mp ratio label synth kn ours_dtype modes sfx
    local ours_pf ours_dc peer_pf peer_dc
    label=$(basename "$LLAMACPP_CKPT")
    # Our weights in anonymous memory (see the header).
    OURS_MMAP_FLAG=
    if "$STARTER" --help 2>&1 | grep -q -- '--no-mmap'; then OURS_MMAP_FLAG=--no-mmap; fi
    echo "bench_peers: ours $STARTER, peer $LLAMACPP; $REPS repetitions, programs alternating;" \
        "weights in anonymous memory (llama-bench -mmp 0, ours ${OURS_MMAP_FLAG:-converted at load})"
    local mode weights base_flag base_mmp
    base_flag=$OURS_MMAP_FLAG base_mmp=0
    for d in $LLAMACPP_DTYPES; do
        case $d in
        f32) gguf=${LLAMACPP_GGUF_F32:-} ;;
        f16) gguf=${LLAMACPP_GGUF_F16:-} ;;
        bf16) gguf=${LLAMACPP_GGUF_BF16:-} ;;
        q8_0) gguf=${LLAMACPP_GGUF_Q8_0:-} ;;
        q4_0) gguf=${LLAMACPP_GGUF_Q4_0:-} ;;
        *) echo "bench_peers: unknown dtype $d in BENCH_PEERS_DTYPES" >&2; failures=$((failures + 1)); continue ;;
        esac
        # the folder holding the GGUF's values (greedy check); F16 from the F32 draw
        case $d in f16) same=$LLAMACPP_CKPT-f32 ;; *) same=$LLAMACPP_CKPT-$d ;; esac
        if [ -n "$OURS_MMAP_FLAG" ]; then
            dir=$same
        else
            case $d in bf16) dir=$LLAMACPP_CKPT-f32 ;; *) dir=$LLAMACPP_CKPT-bf16 ;; esac
        fi
        if [ -z "$gguf" ] || [ ! -f "$gguf" ]; then
            echo "SKIP: bench_peers: llama.cpp at $d: LLAMACPP_GGUF_${d^^} is not set or not a file"
            continue
        fi
        ours_dtype=$d
        case $d in
        q8_0|q4_0)
            # Ours: the F32 draw quantized by prepare_model --dtype into one
            # chunk (the bytes llama-quantize --pure writes from the same F32
            # values), used as stored.
            dir=$LLAMACPP_CKPT-$d same=$dir ours_dtype=auto
            if [ ! -f "$dir/chunks/1nodes/manifest.json" ]; then
                echo "bench_peers: quantizing $LLAMACPP_CKPT-f32 to $d into $dir"
                "$BIN/prepare_model" "$LLAMACPP_CKPT-f32" --n-nodes 1 --dtype "$d" --out "$dir" --no-progress \
                    >"$tmp/prep.log" 2>&1 || { echo "bench_peers: prepare_model failed: $(tail -n 2 "$tmp/prep.log")" >&2
                    failures=$((failures + 1)); continue; }
            fi
            weights=$dir/chunks/1nodes/model_starter.safetensors
            ;;
        *) weights=$dir/model.safetensors ;;
        esac
        if [ ! -f "$weights" ]; then
            echo "bench_peers: $weights not found (tools/gen_synthetic.py makes it)" >&2
            failures=$((failures + 1)); continue
        fi
        synth=$($PY -c "import json, sys; print('yes' if json.load(open(sys.argv[1])).get('_synthetic') else 'no')" "$dir/config.json")
        # Bring both weight files into the page cache so neither run pays the disk.
        cat "$weights" "$gguf" >/dev/null
        # Block types run both ways: weights in anonymous memory (ours
        # --no-mmap, llama-bench -mmp 0) and borrowed from the file mapping
        # (--mmap, -mmp 1); phases of the latter are named prefill_mmap and
        # decode_mmap.
        modes=anon
        case $d in q8_0|q4_0) [ "$LLAMACPP_MMAP_TOO" = 1 ] && [ -n "$base_flag" ] && modes="anon mmap" ;; esac
        for mode in $modes; do
        if [ "$mode" = mmap ]; then OURS_MMAP_FLAG=--mmap LLAMACPP_MMP=1; else OURS_MMAP_FLAG=$base_flag LLAMACPP_MMP=$base_mmp; fi
        sfx=; [ "$mode" = mmap ] && sfx=_mmap
        for t in $THREADS; do
            ours_pf=(); ours_dc=(); peer_pf=(); peer_dc=()
            for r in $(seq 1 "$REPS"); do
                if [ $(( r % 2 )) = 1 ]; then
                    o=$(run_ours_pd "$dir" "$ours_dtype" "$t") && p=$(run_llamacpp "$gguf" "$t") || { failures=$((failures + 1)); break; }
                else
                    p=$(run_llamacpp "$gguf" "$t") && o=$(run_ours_pd "$dir" "$ours_dtype" "$t") || { failures=$((failures + 1)); break; }
                fi
                read -r a b rss <<<"$o"; read -r c e <<<"$p"
                ours_pf+=("$a"); ours_dc+=("$b"); peer_pf+=("$c"); peer_dc+=("$e")
                echo "  $label $d $mode ${t}t rep $r: prefill ours $a, llama.cpp $c; decode ours $b, llama.cpp $e tok/s; our peak RSS $rss MiB (load average $(cut -d' ' -f1 /proc/loadavg))"
            done
            [ "${#ours_pf[@]}" -gt 0 ] || continue
            for phase in prefill decode; do
                if [ "$phase" = prefill ]; then
                    mo=$(median "${ours_pf[@]}"); mp=$(median "${peer_pf[@]}")
                else
                    mo=$(median "${ours_dc[@]}"); mp=$(median "${peer_dc[@]}")
                fi
                ratio=$(awk -v x="$mo" -v y="$mp" 'BEGIN {printf "%.3f", (y > 0) ? x / y : 0}')
                echo "llama.cpp,$label,$synth,$d,$t,$phase$sfx,$mo,$mp,$ratio" >>"$CSV"
            done
        done
        done
        OURS_MMAP_FLAG=$base_flag LLAMACPP_MMP=$base_mmp
        if [ -n "${LLAMACPP_SIMPLE:-}" ] && [ -x "$LLAMACPP_SIMPLE" ]; then
            read -r kn < <(llamacpp_greedy "$same" "$d" "$gguf")
            if [ "$synth" = yes ]; then
                echo "  greedy text agreement with llama.cpp on $label $d: $kn characters of 16 tokens (random weights: near-ties possible)"
            elif [ "${kn%%/*}" = "${kn#*/}" ]; then
                echo "PASS: greedy text agrees with llama.cpp on $label $d ($kn characters)"
            else
                echo "FAIL: greedy text parts from llama.cpp on $label $d ($kn characters)"
                failures=$((failures + 1))
            fi
        fi
    done
}

csv_prepare
start=$(date +%s)
[ "$run_llama2c" = no ] || bench_llama2c
[ "$run_llamacpp" = no ] || bench_llamacpp

echo
echo "tok/s, ours vs peers (median of $REPS; ratio = ours / peer; f32 compute for llama2.c; $(( $(date +%s) - start ))s):"
column -s, -t <"$CSV" 2>/dev/null || cat "$CSV"
echo "wrote $CSV"
[ "$failures" -eq 0 ]

#!/usr/bin/env bash
# bench_serve: the service under load, side by side with llama.cpp's
# llama-server on the same weights and machine, in one run: our service
# standalone, on a 2-node and on a 3-node ring (every node on this host),
# and llama-server with as many slots; the same load against each.
#
#   make bench                                   (with the other benchmarks)
#   LLAMA_SERVER=/path/to/llama-server BENCH_SERVE_GGUF_DIR=/path/to/gguf tools/bench_serve.sh
#   BENCH_SERVE_FILES=tl-q4_0 BENCH_SERVE_NODES=1 BENCH_SERVE_CONCURRENCY=1,4 \
#       BENCH_SERVE_DURATION=5 BENCH_SERVE_N_TOKENS=8 tools/bench_serve.sh          (a short one)
#
# Files (BENCH_SERVE_FILES, names under BENCH_SERVE_GGUF_DIR, default
# checkpoints/gguf; default "tl-bf16 tl-q4_0"): synthetic (random) weights
# with TinyLlama 1.1B's shapes, BF16 and Q4_0 (how to make them: see
# tools/bench_gguf.sh). A file that is missing is skipped with one line.
#
# The load (bin/bench_load, see its header): for each concurrency C in
# BENCH_SERVE_CONCURRENCY (default 1,2,4,8,16), C clients each sending
# streamed /v1/completions one after the other for BENCH_SERVE_DURATION
# seconds (default 10; or BENCH_SERVE_REQUESTS requests each): a prompt of
# BENCH_SERVE_PROMPT_WORDS words (default 32, one token each: 33 tokens
# with BOS), BENCH_SERVE_N_TOKENS new tokens (default 32) generated whatever
# the model says (ignore_eos), greedy, no prompt cache reuse; one warm-up
# request first. A stream that does not deliver exactly that many tokens is
# an error.
#
# The engines, weights in anonymous memory for both:
#   mdi, 1 node   bin/starter --serve --ckpt F.gguf --slots S --max-seq-len CTX
#                 --n-threads T (T = BENCH_THREADS, default all CPUs)
#   mdi, N nodes  the same with --nodes-config (N - 1 bin/secondary on
#                 127.0.0.1, each given its chunk with --chunk), the chunks
#                 from bin/prepare_model F.gguf --n-nodes N (made once, under
#                 checkpoints/bench-serve-NAME); T / N threads per node (at
#                 least 1); BENCH_SERVE_NODES (default "1 2 3")
#   llama-server  LLAMA_SERVER -m F.gguf -np S -c S*CTX --no-mmap -t T --metrics
#                 (continuous batching is its default; its /metrics gives
#                 the decode calls and the slots busy in each); without LLAMA_SERVER
#                 one line says so and our side runs alone
# S = BENCH_SERVE_SLOTS (default: the highest concurrency), CTX =
# BENCH_SERVE_CTX (default 128: KV positions per slot).
#
# Writes plots/bench_serve.csv (bench_load's rows: engine,nodes,model,
# concurrency,prompt_tokens,max_tokens,requests,errors,tokens,wall_s,tok_s,
# ttft_p50_ms,ttft_p99_ms,tpot_p50_ms,tpot_p99_ms), prints a table per model
# (aggregate tok/s per engine, ours over llama-server's; the standalone
# service's tok/s at each concurrency over its own at 1, and the same for
# decode alone estimated as concurrency / per-token p50: issue 9's targets
# are at least 4 at 8 and at least llama-server's at every concurrency),
# after each of our runs where the time went (the service's GET /metrics:
# each node's compute and wait seconds, kept in plots/bench_serve_metrics.txt;
# each secondary's own compute, wait and decode batches from its GET /),
# and draws plots/bench_serve.png (aggregate tok/s against concurrency, one
# line per engine, one panel per model).
#
# How long: per engine and file, start-up (loading the weights) plus for
# each concurrency the duration and the requests running at its end; the
# default (2 files x 4 engines x 5 concurrencies x 10 s) takes about 12
# minutes on a quiet 2-core machine.
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=${BIN:-bin}
PY=/usr/bin/python3
. tools/bench_lib.sh
DIR=${BENCH_SERVE_GGUF_DIR:-checkpoints/gguf}
FILES=${BENCH_SERVE_FILES:-"tl-bf16 tl-q4_0"}
NODES=${BENCH_SERVE_NODES-"1 2 3"}
CONC=${BENCH_SERVE_CONCURRENCY:-1,2,4,8,16}
DURATION=${BENCH_SERVE_DURATION:-10}
REQUESTS=${BENCH_SERVE_REQUESTS:-}
WORDS=${BENCH_SERVE_PROMPT_WORDS:-32}
NTOK=${BENCH_SERVE_N_TOKENS:-32}
CTX=${BENCH_SERVE_CTX:-128}
THREADS=${BENCH_THREADS:-$(nproc)}
START_TIMEOUT=${BENCH_SERVE_START_TIMEOUT:-600}
LLAMA=${LLAMA_SERVER:-}
CSV=plots/bench_serve.csv
PNG=plots/bench_serve.png
METRICS=plots/bench_serve_metrics.txt
SLOTS=${BENCH_SERVE_SLOTS:-$(echo "$CONC" | tr ',' '\n' | sort -n | tail -n 1)}

for b in "$BIN/starter" "$BIN/secondary" "$BIN/prepare_model" "$BIN/bench_load"; do
    [ -x "$b" ] || { echo "bench_serve: $b not built (make first)" >&2; exit 1; }
done
if [ -z "$LLAMA" ] || [ ! -x "$LLAMA" ]; then
    echo "SKIP: bench_serve: LLAMA_SERVER is not set to a built llama-server: our side only"
    LLAMA=
fi
if [ $((CTX)) -lt $((WORDS + NTOK + 2)) ]; then
    echo "bench_serve: BENCH_SERVE_CTX $CTX is too short for $WORDS prompt words + $NTOK tokens" >&2; exit 1
fi
mkdir -p plots
bench_setup serve
# Written under $TMP and moved into plots/ at the end: a run that skips
# everything leaves the last figures where they are.
OUT_CSV=$CSV OUT_METRICS=$METRICS
CSV=$TMP/bench_serve.csv METRICS=$TMP/bench_serve_metrics.txt
: >"$METRICS"
failures=0
LOAD_ARGS=(--concurrency "$CONC" --prompt-words "$WORDS" --max-tokens "$NTOK" --csv "$CSV")
if [ -n "$REQUESTS" ]; then LOAD_ARGS+=(--requests "$REQUESTS"); else LOAD_ARGS+=(--duration "$DURATION"); fi

# wait_up URL PID LOG WHAT: until URL answers 200, while PID lives.
wait_up() {
    local t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
        curl -sf -o /dev/null --max-time 2 "$1" && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.5
    done
    echo "bench_serve: $4 did not come up: $(tail -n 3 "$3" | tr '\n' ' ')" >&2
    return 1
}

# stop PID...: SIGTERM (the starter stops its secondaries), up to 20 s
# each, then SIGKILL.
stop() {
    local p
    for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
    for p in "$@"; do
        for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    PIDS=""
}

# write_cfg FILE STARTER_RING_PORT "HTTP RING" ...: a nodes configuration, all on 127.0.0.1.
write_cfg() {
    local file=$1 sport=$2 sec="" h r e; shift 2
    for e in "$@"; do
        read -r h r <<<"$e"
        sec="$sec${sec:+,}{\"addr\": \"127.0.0.1\", \"communication\": {\"starter_addr\": \"127.0.0.1\", \"port\": $h}, \"inference\": {\"port_in\": $r, \"port_out\": 1}}"
    done
    echo "{\"nodes\": {\"starter\": {\"addr\": \"127.0.0.1\", \"communication\": {\"port\": 1}, \"inference\": {\"port_in\": $sport, \"port_out\": 1}}, \"secondary\": [$sec]}}" >"$file"
}

# Where the time went, from a /metrics scrape: each node's compute and
# wait seconds (mdi_node_compute_seconds, mdi_node_wait_seconds, labelled
# node/role/addr; any other sample whose name says compute or wait is
# shown as it is), and the service's own TTFT and per-token means.
cat >"$TMP/metrics.py" <<'EOF'
import re, sys
nodes, other, h = {}, [], {}
for line in open(sys.argv[1]):
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
    if not m:
        continue
    name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
    lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    if name in ("mdi_node_compute_seconds", "mdi_node_wait_seconds"):
        key = (lab.get("node", "?"), lab.get("role", ""), lab.get("addr", ""))
        nodes.setdefault(key, {})["compute" if "compute" in name else "wait"] = value
    elif re.search(r"_(sum|count)$", name):
        h[name] = value
    elif re.search(r"compute|wait", name) and not name.endswith("_bucket"):
        other.append("%s%s %g" % (name, labels, value))
for (node, role, addr), v in nodes.items():
    c, w = v.get("compute", 0.0), v.get("wait", 0.0)
    t = c + w
    print("    node %s %-9s %-21s compute %8.2f s (%3.0f%%)  wait %8.2f s (%3.0f%%)" % (
        node, role, addr, c, 100 * c / t if t else 0, w, 100 * w / t if t else 0))
for o in other:
    print("    " + o)
for name, what in (("mdi_time_to_first_token_seconds", "TTFT"), ("mdi_token_latency_seconds", "per-token latency")):
    n = h.get(name + "_count", 0)
    if n:
        print("    the service's mean %s: %.1f ms over %d" % (what, 1e3 * h.get(name + "_sum", 0) / n, n))
if not nodes and not other:
    print("    (no per-node compute/wait figures in /metrics)")
EOF

# run_ours NAME FILE NODES: the service on NODES nodes, under load.
run_ours() {
    local name=$1 f=$2 n=$3 nsec=$(($3 - 1)) i ports cfg=() ckpt=$2
    local tpn=$((THREADS / $3)); [ "$tpn" -ge 1 ] || tpn=1
    [ "$n" = 1 ] && tpn=$THREADS
    read -r -a ports <<<"$(free_ports $((2 + 2 * nsec)))"
    local api=${ports[0]} spids=()
    if [ "$n" -gt 1 ]; then
        ckpt=checkpoints/bench-serve-$name
        local m=$ckpt/chunks/${n}nodes/manifest.json
        if [ ! -f "$m" ] || [ "$m" -ot "$f" ]; then
            echo "bench_serve: preparing $n-node chunks of $f under $ckpt"
            "$BIN/prepare_model" "$f" --n-nodes "$n" --out "$ckpt" --no-progress >"$TMP/prepare.log" 2>&1 || {
                echo "bench_serve: prepare_model $f: $(tail -n 2 "$TMP/prepare.log" | tr '\n' ' ')" >&2; return 1; }
        fi
        local entries=()
        for ((i = 0; i < nsec; i++)); do entries+=("${ports[$((2 + 2 * i))]} ${ports[$((3 + 2 * i))]}"); done
        write_cfg "$TMP/nodes$n.json" "${ports[1]}" "${entries[@]}"
        cfg=(--nodes-config "$TMP/nodes$n.json")
        for ((i = 0; i < nsec; i++)); do
            "$BIN/secondary" "$TMP/nodes$n.json" "$i" --chunk "$ckpt/chunks/${n}nodes/model_secondary$i.safetensors" \
                --cache-dir "$TMP/cache$i" --n-threads "$tpn" >"$TMP/sec$i.log" 2>&1 &
            spids+=($!); PIDS="$PIDS $!"
            wait_up "http://127.0.0.1:${ports[$((2 + 2 * i))]}/" "$!" "$TMP/sec$i.log" "secondary $i" ||
                { stop "${spids[@]}"; return 1; }
        done
    fi
    local t0=$SECONDS
    "$BIN/starter" --serve --host 127.0.0.1 --port "$api" --slots "$SLOTS" --max-seq-len "$CTX" \
        --n-threads "$tpn" --ckpt "$ckpt" "${cfg[@]}" >"$TMP/starter.log" 2>&1 &
    local sp=$!
    PIDS="$PIDS $sp"
    if ! wait_up "http://127.0.0.1:$api/health" "$sp" "$TMP/starter.log" "bin/starter --serve"; then
        stop "$sp"; stop "${spids[@]}"; return 1
    fi
    echo "== mdi, $n node(s), $tpn thread(s) each, $SLOTS slots, $name (up in $((SECONDS - t0)) s)"
    "$BIN/bench_load" --url "http://127.0.0.1:$api" --engine mdi --nodes "$n" --model-label "$name" "${LOAD_ARGS[@]}"
    local rc=$?
    { echo "# mdi $n node(s) $name"; curl -s --max-time 10 "http://127.0.0.1:$api/metrics"; } >"$TMP/metrics.txt"
    cat "$TMP/metrics.txt" >>"$METRICS"
    echo "  where the time went (GET /metrics, since the service started):"
    $PY "$TMP/metrics.py" "$TMP/metrics.txt"
    # Each secondary's own figures for the run so far (its control port's
    # GET /): compute, wait, and the frames it ran per decode batch.
    for ((i = 0; i < nsec; i++)); do
        curl -s --max-time 10 "http://127.0.0.1:${ports[$((2 + 2 * i))]}/" >"$TMP/sec$i.json"
        $PY - "$TMP/sec$i.json" "$i" <<'EOF'
import json, sys
def find(o, k):
    if isinstance(o, dict):
        if k in o: return o[k]
        for v in o.values():
            r = find(v, k)
            if r is not None: return r
    return None
try:
    d = json.load(open(sys.argv[1]))
except ValueError:
    print("    secondary %s: no status" % sys.argv[2]); sys.exit(0)
c, w = find(d, "compute_s") or 0.0, find(d, "wait_s") or 0.0
b, t = find(d, "decode_batches") or 0, find(d, "batched_tokens") or 0
print("    secondary %s (its GET /)      compute %8.2f s (%3.0f%%)  wait %8.2f s (%3.0f%%)  %d decode batches, %.2f frames each"
      % (sys.argv[2], c, 100 * c / (c + w) if c + w else 0, w, 100 * w / (c + w) if c + w else 0, b, t / b if b else 0))
EOF
    done
    stop "$sp"; stop "${spids[@]}"
    return $rc
}

# run_peer NAME FILE: llama-server under the same load.
run_peer() {
    local name=$1 f=$2 port
    port=$(free_ports 1)
    local t0=$SECONDS
    "$LLAMA" -m "$f" -np "$SLOTS" -c $((SLOTS * CTX)) --no-mmap -t "$THREADS" --host 127.0.0.1 --port "$port" \
        --metrics >"$TMP/llama.log" 2>&1 &
    local lp=$!
    PIDS="$PIDS $lp"
    disown "$lp" # it may abort in its teardown after SIGTERM: no "Aborted" line from bash
    wait_up "http://127.0.0.1:$port/health" "$lp" "$TMP/llama.log" "llama-server" || { stop "$lp"; return 1; }
    echo "== llama-server, $THREADS thread(s), $SLOTS slots, $name (up in $((SECONDS - t0)) s)"
    "$BIN/bench_load" --url "http://127.0.0.1:$port" --engine llama-server --nodes 1 --model-label "$name" \
        "${LOAD_ARGS[@]}"
    local rc=$?
    { echo "# llama-server $name"; curl -s --max-time 10 "http://127.0.0.1:$port/metrics"; } >"$TMP/metrics.txt"
    cat "$TMP/metrics.txt" >>"$METRICS"
    # Its batches: decode calls, and the slots busy in each on average.
    awk '/^llamacpp:n_decode_total / {d = $2} /^llamacpp:n_busy_slots_per_decode / {b = $2}
         /^llamacpp:tokens_predicted_total / {t = $2} /^llamacpp:prompt_tokens_total / {p = $2}
         END {if (d) printf "  llama-server: %d decode calls, %.2f slots busy per call; %d prompt and %d generated tokens\n", d, b, p, t}' \
        "$TMP/metrics.txt"
    stop "$lp"
    return $rc
}

T0=$SECONDS
if [ -n "$REQUESTS" ]; then per="$REQUESTS requests per client"; else per="$DURATION s per concurrency"; fi
echo "bench_serve: concurrency $CONC, $per," \
     "$WORDS prompt words, $NTOK new tokens, $SLOTS slots of $CTX positions, $THREADS threads; load average" \
     "$(cut -d' ' -f1-3 /proc/loadavg)"
for name in $FILES; do
    f=$DIR/$name.gguf
    if [ ! -f "$f" ]; then echo "SKIP: bench_serve: $f missing"; continue; fi
    cat "$f" >/dev/null # into the page cache: no engine pays the disk
    if [ -n "$LLAMA" ]; then run_peer "$name" "$f" || failures=$((failures + 1)); fi
    for n in $NODES; do run_ours "$name" "$f" "$n" || failures=$((failures + 1)); done
done

if [ ! -f "$CSV" ]; then # every file skipped (or every run failed)
    echo "SKIP: bench_serve: no figures"; [ "$failures" -eq 0 ]; exit
fi
cp "$CSV" "$OUT_CSV" && cp "$METRICS" "$OUT_METRICS" || exit 1
CSV=$OUT_CSV METRICS=$OUT_METRICS
$PY - "$CSV" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for model in dict.fromkeys(r["model"] for r in rows):
    rs = [r for r in rows if r["model"] == model]
    engines = list(dict.fromkeys((r["engine"], int(r["nodes"])) for r in rs))
    conc = sorted({int(r["concurrency"]) for r in rs})
    fig = {(r["engine"], int(r["nodes"]), int(r["concurrency"])): r for r in rs}
    peer = next((e for e in engines if e[0] != "mdi"), None)
    print("\n%s: aggregate tok/s (errors), TTFT p50 / per-token p50 in ms" % model)
    print("%11s " % "concurrency" + " ".join("%26s" % ("%s %dn" % e) for e in engines) +
          ("  %10s" % "1n/peer" if peer else "") + "  %8s  %8s" % ("1n x c=1", "dec x"))
    for c in conc:
        line = "%11d " % c
        for e in engines:
            r = fig.get(e + (c,))
            line += " %26s" % (("%.2f (%s) %.0f/%.1f" % (float(r["tok_s"]), r["errors"], float(r["ttft_p50_ms"]),
                                float(r["tpot_p50_ms"]))) if r else "-")
        ours, one = fig.get(("mdi", 1, c)), fig.get(("mdi", 1, conc[0]))
        if peer:
            p = fig.get(peer + (c,))
            line += "  %10s" % ("%.2f" % (float(ours["tok_s"]) / float(p["tok_s"]))
                                if ours and p and float(p["tok_s"]) > 0 else "-")
        line += "  %8s" % ("%.2f" % (float(ours["tok_s"]) / float(one["tok_s"]))
                           if ours and one and float(one["tok_s"]) > 0 else "-")
        # decode alone: c streams each at one token per per-token p50, over the same at the lowest concurrency
        line += "  %8s" % ("%.2f" % ((c / float(ours["tpot_p50_ms"])) / (conc[0] / float(one["tpot_p50_ms"])))
                           if ours and one and float(ours["tpot_p50_ms"]) > 0 and float(one["tpot_p50_ms"]) > 0
                           else "-")
        print(line)
print("\n1n x c=1: the standalone service's aggregate tok/s (prefill included) over its own at the lowest "
      "concurrency;\ndec x: the same for decode alone, estimated as concurrency / per-token p50")
print("targets (issue 9): aggregate decode at 8 >= 4 x at 1; 1n/peer >= 1 at every concurrency")
EOF

if command -v gnuplot >/dev/null 2>&1; then
    models=$(tail -n +2 "$CSV" | cut -d, -f3 | awk '!s[$0]++')
    nm=$(echo "$models" | wc -l)
    plots=""
    for m in $models; do
        cmd=""
        for e in $(tail -n +2 "$CSV" | awk -F, -v m="$m" '$3 == m {print $1 ":" $2}' | awk '!s[$0]++'); do
            eng=${e%:*} nn=${e#*:}
            awk -F, -v m="$m" -v e="$eng" -v n="$nn" '$3 == m && $1 == e && $2 == n {print $4, $11}' "$CSV" \
                >"$TMP/$m-$eng-$nn.dat"
            title="$eng"; [ "$eng" = mdi ] && title="mdi, $nn node$([ "$nn" = 1 ] || echo s)"
            cmd="$cmd${cmd:+, }\"$TMP/$m-$eng-$nn.dat\" using 1:2 with linespoints lw 2 title \"$title\""
        done
        plots="$plots
set title \"$m\"
plot $cmd"
    done
    gnuplot >"$TMP/gnuplot.log" 2>&1 <<EOF || echo "bench_serve: gnuplot failed: $(tail -n 2 "$TMP/gnuplot.log")" >&2
set terminal pngcairo noenhanced size $((nm > 1 ? 650 * nm : 800)),520 font ",10"
set output "$PNG"
set multiplot layout 1,$nm title "Service under load: aggregate tokens/s vs concurrent streams\n$NTOK new tokens, $WORDS-word prompt, greedy, $SLOTS slots; $(nproc) CPUs"
set grid ytics
set key top left
set logscale x 2
set xlabel "concurrent requests"; set ylabel "aggregate generated tokens/s"
set yrange [0:*]
$plots
unset multiplot
EOF
    [ -f "$PNG" ] && echo "bench_serve: wrote $PNG"
fi
echo "bench_serve: wrote $CSV and $METRICS in $((SECONDS - T0)) s"
[ "$failures" -eq 0 ]

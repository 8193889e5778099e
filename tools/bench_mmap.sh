#!/usr/bin/env bash
# bench_mmap: weights borrowed from the file mapping (--mmap) against weights
# read into anonymous memory (--no-mmap), and each with --mlock: decode and
# prefill tokens/s, peak RSS, load time, the run's major page faults (pages
# read from disk on access: a mapped weight page that was reclaimed and is
# touched again), and workingset_refault_file from /proc/vmstat over the run
# (system-wide: other processes' refaults count too).
#
#   tools/bench_mmap.sh [CKPT] [N_THREADS] [N_TOKENS] [REPEATS]
#
# CKPT defaults to checkpoints/synthetic-tinyllama-1.1b-f32. Modes alternate,
# REPEATS (default 1) rounds; one CSV row per run on stdout and in
# plots/bench_mmap.csv. Figures, never assertions.
set -u
cd "$(dirname "$0")/.."
CKPT=${1:-checkpoints/synthetic-tinyllama-1.1b-f32}
NT=${2:-1}
NTOK=${3:-32}
REPEATS=${4:-1}
BIN=${BIN:-bin}
OUT=plots/bench_mmap.csv
if [ ! -e "$CKPT/config.json" ]; then
    echo "SKIP: bench_mmap: $CKPT/config.json missing (make bench generates the synthetic checkpoints)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
refaults() { awk '/^workingset_refault_file /{print $2}' /proc/vmstat 2>/dev/null || echo 0; }
mkdir -p plots
echo "mode,n_threads,n_tokens,load_s,prefill_tok_s,decode_tok_s,peak_rss_mib,major_faults,system_file_refaults" | tee "$OUT"
TIME=()
[ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "majflt %F" -o "$tmp/time")
for ((r = 0; r < REPEATS; r++)); do
    for mode in "--no-mmap" "--mmap" "--no-mmap --mlock" "--mmap --mlock"; do
        before=$(refaults)
        t0=$(date +%s.%N)
        # shellcheck disable=SC2086
        echo "majflt -1" >"$tmp/time"
        "${TIME[@]}" "$BIN/starter" --ckpt "$CKPT" --prompt-ids 1,15,27,300,9,42,7,100 --n-tokens "$NTOK" --temperature 0 \
            --n-threads "$NT" --quiet $mode --output "$tmp/o.json" 2>"$tmp/err" || {
            echo "bench_mmap: $mode failed: $(tail -1 "$tmp/err")" >&2
            continue
        }
        t1=$(date +%s.%N)
        after=$(refaults)
        majflt=$(awk '/^majflt/{print $2}' "$tmp/time")
        /usr/bin/python3 - "$tmp/o.json" "$mode" "$NT" "$NTOK" "$t0" "$t1" "$((after - before))" "$majflt" <<'PY' | tee -a "$OUT"
import json, sys
st = json.load(open(sys.argv[1]))["stats"]
mode, nt, ntok, t0, t1, refault, majflt = sys.argv[2:9]
# load time: wall time less the generation's own
load = float(t1) - float(t0) - st["total_s"]
print("%s,%s,%s,%.2f,%.2f,%.2f,%d,%s,%s" % (mode.replace(" ", "+"), nt, ntok, load, st["prefill_tok_s"],
      st["decode_tok_s"], st["peak_rss_bytes"] >> 20, majflt, refault))
PY
        grep -i "mlock" "$tmp/err" >&2
    done
done

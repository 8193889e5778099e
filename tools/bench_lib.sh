# bench_lib.sh: helpers the benchmark scripts source (they set PY first).

# N distinct free TCP ports on 127.0.0.1 (bound at once, so they differ).
free_ports() {
    $PY - "$1" <<'PYEOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYEOF
}

# The median of the numbers given (the mean of the middle two for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# bench_setup NAME: $TMP, a scratch folder removed at exit, and $PIDS, the
# processes the script starts, killed at exit (then bench_cleanup_more, when
# the script defines one, before the folder goes); OPENBLAS_NUM_THREADS=1.
bench_setup() {
    TMP=$(mktemp -d "/tmp/mdi-bench-$1.XXXXXX")
    PIDS=""
    trap bench_cleanup EXIT
    trap 'exit 143' INT TERM
    export OPENBLAS_NUM_THREADS=1
}

bench_cleanup() {
    local p
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    if declare -F bench_cleanup_more >/dev/null; then bench_cleanup_more; fi
    rm -rf "$TMP"
}

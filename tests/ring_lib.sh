# ring_lib.sh: helpers the end-to-end ring tests source: free ports, node
# configurations, secondaries started and reaped, results compared.
# Every process a test starts is recorded in $PIDS and killed on exit, so
# that no test leaves anything behind even when it fails.

BIN=${BIN:-bin}
MDI_SHARED=${MDI_SHARED:-$(cd .. && pwd)/shared}
PY=/usr/bin/python3
PIDS=""
# secondaries measure their capabilities at start (caps.h): small and quick here
export MDI_CAPS_BYTES=${MDI_CAPS_BYTES:-8388608}
TMP=$(mktemp -d /tmp/mdi_e2e_XXXXXX)

cleanup() {
    for p in $PIDS; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap "exit 143" TERM INT

pass() { echo "PASS: $1"; }
# One line, so that tests/run.sh shows the whole detail.
fail() { echo "FAIL: $1: $(printf '%s' "$2" | tr '\n' ' ')"; }
check() { # check NAME CONDITION-STATUS DETAIL
    if [ "$2" -eq 0 ]; then pass "$1"; else fail "$1" "$3"; fi
}

# N distinct free TCP ports (bound at once, so they differ), below the
# kernel's ephemeral range when there is room: a port from that range may
# be taken by then as the source port of some connection (a test's hostile
# clients open hundreds), and a node that listens on it fails to start.
free_ports() {
    $PY - "$1" <<'PYEOF'
import random, socket, sys
n = int(sys.argv[1])
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    lo = 0
socks = []
if lo - 10000 >= 2000:
    for p in random.sample(range(10000, lo), min(lo - 10000, 400)):
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", p))
        except OSError:
            s.close(); continue
        socks.append(s)
        if len(socks) == n: break
while len(socks) < n:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYEOF
}

# mkcfg FILE N_SECONDARIES [SECRET]: a fresh configuration on 127.0.0.1
# with free ports; sets STARTER_PORT, HTTP_PORT[i], RING_PORT[i].
mkcfg() {
    local file=$1 n=$2 secret=${3:-}
    local ports=($(free_ports $((2 * n + 1))))
    STARTER_PORT=${ports[0]}
    HTTP_PORT=(); RING_PORT=()
    local sec="" i
    for ((i = 0; i < n; i++)); do
        HTTP_PORT[$i]=${ports[$((1 + 2 * i))]}
        RING_PORT[$i]=${ports[$((2 + 2 * i))]}
        [ -n "$sec" ] && sec="$sec,"
        sec="$sec{\"addr\": \"127.0.0.1\", \"communication\": {\"starter_addr\": \"127.0.0.1\", \"port\": ${HTTP_PORT[$i]}}, \"inference\": {\"port_in\": ${RING_PORT[$i]}, \"port_out\": 1}}"
    done
    local sfield=""
    [ -n "$secret" ] && sfield="\"secret\": \"$secret\","
    cat >"$file" <<JSON
{$sfield "nodes": {"starter": {"addr": "127.0.0.1", "communication": {"port": 1}, "inference": {"port_in": $STARTER_PORT, "port_out": 1}},
 "secondary": [$sec]}}
JSON
}

# start_secondary CFG INDEX [extra args...]: starts it in the background
# (log in $TMP/secINDEX.log) and waits until its HTTP port answers. A port
# that another process took since mkcfg chose it is chosen again (in CFG,
# HTTP_PORT and RING_PORT), at most 3 times.
start_secondary() {
    local cfg=$1 idx=$2; shift 2
    local try
    for try in 1 2 3; do
        local mark
        mark=0
        [ -f "$TMP/sec$idx.log" ] && mark=$(wc -l <"$TMP/sec$idx.log")
        "$BIN/secondary" "$cfg" "$idx" --cache-dir "$TMP/cache$idx" --n-threads 1 "$@" >>"$TMP/sec$idx.log" 2>&1 &
        local pid=$!
        PIDS="$PIDS $pid"
        eval "SEC_PID_$idx=$pid"
        local port=${HTTP_PORT[$idx]}
        for _ in $(seq 100); do
            curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null && return 0
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -0 "$pid" 2>/dev/null && return 1
        tail -n +"$((mark + 1))" "$TMP/sec$idx.log" | grep -q "already in use" || return 1
        local new=($(free_ports 2))
        sed -i -e "s/\"port\": $port}/\"port\": ${new[0]}}/" \
            -e "s/\"port_in\": ${RING_PORT[$idx]},/\"port_in\": ${new[1]},/" "$cfg"
        HTTP_PORT[$idx]=${new[0]}
        RING_PORT[$idx]=${new[1]}
    done
    return 1
}

sec_pid() { eval "echo \$SEC_PID_$1"; }

# status_field IDX FIELD [SECRET]: one field of secondary IDX's GET /
# (signed with the secret by bin/node_probe when one is given).
status_field() {
    if [ -n "${3:-}" ]; then
        MDI_SECRET=$3 "$BIN/node_probe" status 127.0.0.1 "${HTTP_PORT[$1]}" 2>/dev/null
    else
        curl -s --max-time 2 "http://127.0.0.1:${HTTP_PORT[$1]}/"
    fi | $PY -c "import json,sys; v=json.load(sys.stdin).get('$2'); print(v)" 2>/dev/null
}

# stop_secondaries: SIGTERM to each started secondary; they must exit in 5 s.
stop_secondaries() {
    local ok=0 p
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
    for p in $PIDS; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$p" 2>/dev/null; then ok=1; fi
    done
    wait 2>/dev/null
    PIDS=""
    return $ok
}

# same_ids A.json B.json [N]: samples[i].generated_ids equal for i < N
# (default all of A's samples).
same_ids() {
    $PY - "$@" <<'PYEOF'
import json, sys
a = json.load(open(sys.argv[1]))["samples"]
b = json.load(open(sys.argv[2]))["samples"]
n = int(sys.argv[3]) if len(sys.argv) > 3 else len(a)
for i in range(n):
    if a[i]["generated_ids"] != b[i]["generated_ids"]:
        print("sample %d differs:\n  %s\n  %s" % (i, a[i]["generated_ids"], b[i]["generated_ids"]))
        sys.exit(1)
    if not a[i]["generated_ids"]:
        print("sample %d generated nothing" % i); sys.exit(1)
PYEOF
}

# prepare CKPT_SOURCE OUT N...: chunks for each node count.
prepare() {
    local src=$1 out=$2; shift 2
    local n
    for n in "$@"; do
        "$BIN/prepare_model" "$src" --n-nodes "$n" --out "$out" --no-progress >>"$TMP/prepare.log" 2>&1 || return 1
    done
}

# tcp_cut_works: 0 when `ss -K` can destroy a TCP connection here (root,
# and a kernel built with CONFIG_INET_DIAG_DESTROY), tried on a loopback
# connection of its own: the peer must see it end within 2 s.
tcp_cut_works() {
    command -v ss >/dev/null || return 1
    $PY - <<'PYEOF' 2>/dev/null
import socket, subprocess, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
c = socket.create_connection(("127.0.0.1", port)); s, _ = srv.accept()
subprocess.run(["ss", "-K", "-tn", "state", "established", "( dport = :%d )" % port], capture_output=True)
s.settimeout(2)
try:
    sys.exit(0 if s.recv(1) == b"" else 1)
except socket.timeout:
    sys.exit(1)
except OSError:
    sys.exit(0)
PYEOF
}

# tcp_cut_cmd PORT: the command that destroys the established connections
# to port PORT on this host (a ring link: the node that connects to the
# next node's inference port_in), printing each one cut.
tcp_cut_cmd() { echo "ss -K -tnH state established '( dport = :$1 )'"; }

# run_with_timeout SECONDS CMD...: the command, killed after SECONDS (exit 124).
run_with_timeout() { timeout -k 2 "$@"; }

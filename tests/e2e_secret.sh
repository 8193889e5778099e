#!/usr/bin/env bash
# e2e_secret: a 3-node cluster with a shared secret, as an attacker on the
# LAN sees it. Each case asserts the nodes stay up and serve the next
# legitimate run.
#   capture   loopback traffic of a run (tcpdump; without it, a recording
#             proxy on the first hop) holds neither the secret, nor a frame
#             header in clear other than the handshake's HELLOs, nor any 16
#             bytes of the activations that the same run without a secret
#             puts on the wire (the positive control);
#   http      a request replayed byte for byte, or its signature moved to
#             another method, and a wrong secret: 401;
#   hello     ring handshakes with a wrong secret, none, a wrong node index,
#             or meant for another node: refused and logged;
#   frames    a proxy on the first hop alters, replays, reorders, drops or
#             injects sealed bytes: that connection ends with "fails
#             authentication", the starter reports it, nothing crashes;
#   lobby     silent connections and impostors without the secret that
#             stop after the challenge (tests/hostile.py), held on the ring
#             port while runs start, and impostors that answer the
#             challenge with a made-up proof during the runs: refused at
#             the handshake, and the runs neither wait on them nor end.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_secret: $STORIES missing"; exit 0; fi
CK="$TMP/ck/stories260K"
prepare "$STORIES" "$CK" 3 || { fail "e2e_secret prepare" "$(tail -3 "$TMP/prepare.log")"; exit 1; }
SECRET="correct-horse-battery-staple-e2e"
COMMON=(--temperature 0 --quiet --n-threads 1 --timeout 2 --prompt "Once upon a time" --n-tokens 24)

wait_state() { # wait_state IDX STATE [SECRET]: up to 5 s
    for _ in $(seq 100); do [ "$(status_field "$1" state "${3:-}")" = "$2" ] && return 0; sleep 0.05; done
    return 1
}

good_run() { # good_run CFG NAME [OUT]
    run_with_timeout 30 "$BIN/starter" --ckpt "$CK" --nodes-config "$1" "${COMMON[@]}" \
        --output "${3:-$TMP/good.json}" >/dev/null 2>>"$TMP/starter.log"
    check "$2" $? "$(tail -2 "$TMP/starter.log")"
}

# capture_start FILE PORTS...: tcpdump of loopback on those ports. Sets CAP_PID
# (empty when tcpdump cannot capture here).
capture_start() {
    local file=$1 filter="" p; shift
    CAP_PID=""
    command -v tcpdump >/dev/null || return 1
    for p in "$@"; do filter="$filter${filter:+ or }port $p"; done
    tcpdump -i lo -U -s 0 -w "$file" "tcp and ($filter)" 2>"$file.log" &
    CAP_PID=$!
    PIDS="$PIDS $CAP_PID"
    for _ in $(seq 100); do
        grep -q "listening on" "$file.log" 2>/dev/null && return 0
        kill -0 "$CAP_PID" 2>/dev/null || { CAP_PID=""; return 1; }
        sleep 0.05
    done
    return 1
}
capture_stop() { [ -n "$CAP_PID" ] && { sleep 0.3; kill -INT "$CAP_PID"; wait "$CAP_PID" 2>/dev/null; }; }

# The proxy between the starter and secondary 0's ring port: passes bytes
# both ways, records what goes towards the node, and in the mode named by
# its mode file (read at each connection) tampers with the first sealed
# bytes after the handshake (the connecting side's HELLOs: 76 + 72 bytes).
cat >"$TMP/proxy.py" <<'EOF'
import socket, sys, threading
listen_port, target_port, mode_file, record = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
HANDSHAKE, REC = 148, 56                  # bytes A sends in the handshake; a sealed header record
PLAIN = b"MDIR" + bytes([1, 0, 2, 0]) + bytes(32)
def tamper(mode, b):
    if mode == "flip":    return b[:60] + bytes([b[60] ^ 1]) + b[61:]
    if mode == "replay":  return b[:REC] + b[:REC] + b[REC:]
    if mode == "reorder": return b[REC:2 * REC] + b[:REC] + b[2 * REC:]
    if mode == "drop":    return b[REC:]
    if mode == "inject":  return PLAIN + b
    return b
def pump(src, dst, mode, rec):
    sent, buf, done = 0, b"", mode == "pass"
    while True:
        try: data = src.recv(65536)
        except OSError: data = b""
        if not data: break
        if rec:
            with open(record, "ab") as f: f.write(data)
        if not done:
            if sent < HANDSHAKE:
                k = min(HANDSHAKE - sent, len(data)); dst.sendall(data[:k]); sent += k; data = data[k:]
            buf += data; data = b""
            if len(buf) >= 2 * REC:
                data, buf, done = tamper(mode, buf), b"", True
        if data:
            try: dst.sendall(data)
            except OSError: break
    for s in (dst, src):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", listen_port)); ls.listen(8)
print("proxy up", flush=True)
while True:
    c, _ = ls.accept()
    mode = open(mode_file).read().strip()
    try: u = socket.create_connection(("127.0.0.1", target_port))
    except OSError: c.close(); continue
    threading.Thread(target=pump, args=(c, u, mode, True), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, "pass", False), daemon=True).start()
EOF

# ---- capture: the same run without and with the secret ----
mkcfg "$TMP/plain.json" 2
start_secondary "$TMP/plain.json" 0 && start_secondary "$TMP/plain.json" 1
grep -q "open to anyone on the network" "$TMP/sec0.log"
check "e2e_secret without a secret the secondary warns at start" $? "$(head -3 "$TMP/sec0.log")"
USE_TCPDUMP=1
capture_start "$TMP/plain.pcap" "$STARTER_PORT" "${RING_PORT[@]}" "${HTTP_PORT[@]}" || USE_TCPDUMP=0
run_with_timeout 30 "$BIN/starter" --ckpt "$CK" --nodes-config "$TMP/plain.json" "${COMMON[@]}" \
    --output "$TMP/plain_out.json" >/dev/null 2>"$TMP/plain_starter.txt"
check "e2e_secret run without a secret" $? "$(tail -2 "$TMP/plain_starter.txt")"
[ "$(grep -c "open to anyone on the network" "$TMP/plain_starter.txt")" = 1 ]
check "e2e_secret without a secret the starter warns once" $? "$(cat "$TMP/plain_starter.txt")"
capture_stop
stop_secondaries
rm -f "$TMP"/sec*.log

mkcfg "$TMP/cfg.json" 2 "$SECRET"
start_secondary "$TMP/cfg.json" 0 && start_secondary "$TMP/cfg.json" 1
! grep -q "open to anyone" "$TMP/sec0.log"
check "e2e_secret with a secret no warning" $? "$(head -3 "$TMP/sec0.log")"
[ "$USE_TCPDUMP" = 1 ] && capture_start "$TMP/sealed.pcap" "$STARTER_PORT" "${RING_PORT[@]}" "${HTTP_PORT[@]}"
good_run "$TMP/cfg.json" "e2e_secret run with a secret" "$TMP/sealed_out.json"
capture_stop
same_ids "$TMP/plain_out.json" "$TMP/sealed_out.json" >"$TMP/same.txt"
check "e2e_secret sealed ring generates the same tokens" $? "$(cat "$TMP/same.txt")"

# Finds the activations of the plain capture (DATA payloads of the ring
# flows, frames parsed) and looks for any 16 of their bytes, the magic and
# the secret in the sealed capture.
cat >"$TMP/pcap.py" <<'EOF'
import struct, sys
def flows(path):
    d = open(path, "rb").read()
    link = struct.unpack("<I", d[20:24])[0]
    off, out = 24, {}
    while off + 16 <= len(d):
        incl = struct.unpack("<I", d[off + 8:off + 12])[0]
        pkt = d[off + 16:off + 16 + incl]; off += 16 + incl
        ip = pkt[14:] if link == 1 else pkt[16:] if link == 113 else pkt[4:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6: continue
        ihl = (ip[0] & 15) * 4; tot = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:tot]
        sport, dport = struct.unpack(">HH", tcp[:4])
        data = tcp[(tcp[12] >> 4) * 4:]
        if data: out.setdefault((sport, dport), []).append(data)
    return {k: b"".join(v) for k, v in out.items()}
def payloads(stream):
    i, out = 0, []
    while i + 40 <= len(stream):
        magic, ver, typ = struct.unpack("<IHH", stream[i:i + 8])
        if magic != 0x5249444D: i += 1; continue
        n = struct.unpack("<Q", stream[i + 24:i + 32])[0]
        if typ == 2: out.append(stream[i + 40:i + 40 + n])
        i += 40 + n
    return out
plain, sealed, secret, ring_ports = sys.argv[1], sys.argv[2], sys.argv[3].encode(), {int(p) for p in sys.argv[4:]}
pf = flows(plain)
needles = set()
for (s, d), st in pf.items():
    if d not in ring_ports: continue
    for p in payloads(st):
        for j in range(0, len(p) - 16, 8):
            w = p[j:j + 16]
            if len(set(w)) >= 8: needles.add(w)
if not needles: print("positive control failed: no activation bytes found in the plain capture"); sys.exit(2)
sf = flows(sealed)
ring_bytes = sum(len(v) for (s, d), v in sf.items() if d in ring_ports)
if ring_bytes < 1000: print("the sealed capture holds only %d ring bytes" % ring_bytes); sys.exit(2)
blob = b"\0".join(sf.values())
bad = []
if secret in blob: bad.append("the secret")
clear = [blob[i + 6] for i in range(len(blob)) if blob.startswith(b"MDIR", i) and i + 8 <= len(blob)]
if any(t != 1 for t in clear): bad.append("%d frame headers in clear other than HELLO" % sum(t != 1 for t in clear))
hits = sum(1 for w in needles if w in blob)
if hits: bad.append("%d of %d activation windows" % (hits, len(needles)))
print("plain: %d activation windows; sealed: %d ring bytes, %d HELLO headers in clear; found: %s" % (
    len(needles), ring_bytes, len(clear), ", ".join(bad) or "nothing"))
sys.exit(1 if bad else 0)
EOF
if [ "$USE_TCPDUMP" = 1 ]; then
    # The plain run's ring ports differ from the sealed run's: pass both sets.
    PLAIN_RING=$($PY -c "import json; c=json.load(open('$TMP/plain.json'))['nodes']; print(c['starter']['inference']['port_in'], *[s['inference']['port_in'] for s in c['secondary']])")
    $PY "$TMP/pcap.py" "$TMP/plain.pcap" "$TMP/sealed.pcap" "$SECRET" $PLAIN_RING "$STARTER_PORT" "${RING_PORT[@]}" >"$TMP/pcap.txt" 2>&1
    check "e2e_secret loopback capture holds neither the secret nor activations" $? "$(cat "$TMP/pcap.txt")"
    echo "INFO: tcpdump: $(cat "$TMP/pcap.txt")"
fi

# ---- http: replay, signature moved, wrong secret ----
H=${HTTP_PORT[0]}
hdr=$(MDI_SECRET=$SECRET "$BIN/node_probe" sign GET /)
c1=$(curl -s -o /dev/null -w '%{http_code}' -H "$hdr" "http://127.0.0.1:$H/")
c2=$(curl -s -o /dev/null -w '%{http_code}' -H "$hdr" "http://127.0.0.1:$H/")
[ "$c1" = 200 ] && [ "$c2" = 401 ]
check "e2e_secret replayed HTTP request gets 401" $? "first $c1, replay $c2"
hdr=$(MDI_SECRET=$SECRET "$BIN/node_probe" sign GET /)
c3=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "$hdr" "http://127.0.0.1:$H/stop")
[ "$c3" = 401 ]
check "e2e_secret a signature moved to another method and path gets 401" $? "got $c3"
MDI_SECRET=wrong-secret "$BIN/node_probe" status 127.0.0.1 "$H" >/dev/null 2>"$TMP/wrong.txt"
[ $? -ne 0 ] && grep -q "401.*wrong secret" "$TMP/wrong.txt"
check "e2e_secret wrong secret gets 401" $? "$(cat "$TMP/wrong.txt")"
good_run "$TMP/cfg.json" "e2e_secret after refused HTTP requests the next run succeeds"

# ---- hello: wrong secret, none, wrong node, meant for another node ----
R=${RING_PORT[0]}
hello_refused() { # hello_refused NAME PATTERN SECRET ARGS...
    local name=$1 pattern=$2 sec=$3; shift 3
    MDI_SECRET=$sec run_with_timeout 10 "$BIN/node_probe" hello 127.0.0.1 "$R" "$@" >"$TMP/hello.txt" 2>&1
    local rc=$?
    [ $rc = 1 ] && grep -qE "$pattern" "$TMP/hello.txt"
    check "$name" $? "exit $rc: $(cat "$TMP/hello.txt")"
}
hello_refused "e2e_secret ring HELLO with a wrong secret refused" "wrong secret" wrong-secret 0 1
hello_refused "e2e_secret ring HELLO without the secret refused" "requires the shared secret" "" 0 1
hello_refused "e2e_secret ring HELLO from a wrong node index refused" "expects node 0, not node 2" "$SECRET" 2 1
hello_refused "e2e_secret ring HELLO meant for another node refused" "this is node 1, not node 2" "$SECRET" 0 2
sleep 0.3
[ "$(grep -c "rejected connection" "$TMP/sec0.log")" -ge 4 ]
check "e2e_secret refused handshakes are logged" $? "$(grep -c "rejected connection" "$TMP/sec0.log") lines"
good_run "$TMP/cfg.json" "e2e_secret after refused handshakes the next run succeeds"
stop_secondaries

# ---- frames: a proxy on the first hop tampers with sealed bytes ----
mkcfg "$TMP/d.json" 2 "$SECRET"
PROXY_PORT=$(free_ports 1)
sed "s/\"port_in\": ${RING_PORT[0]}/\"port_in\": $PROXY_PORT/" "$TMP/d.json" >"$TMP/d_starter.json"
echo pass >"$TMP/mode"
$PY "$TMP/proxy.py" "$PROXY_PORT" "${RING_PORT[0]}" "$TMP/mode" "$TMP/record.bin" >"$TMP/proxy.log" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 50); do grep -q "proxy up" "$TMP/proxy.log" && break; sleep 0.05; done
start_secondary "$TMP/d.json" 0 && start_secondary "$TMP/d.json" 1
good_run "$TMP/d_starter.json" "e2e_secret run through the proxy"
if [ "$USE_TCPDUMP" = 0 ]; then
    # (bytes compared in Python: a shell word cannot hold the header's NUL)
    found=$($PY - "$TMP/record.bin" "$SECRET" <<'PYEOF'
import sys
b = open(sys.argv[1], "rb").read()
if len(b) < 1000: print("only %d bytes recorded" % len(b))
elif sys.argv[2].encode() in b: print("the secret")
elif b"MDIR\x01\x00\x02\x00" in b: print("a DATA header in clear")
PYEOF
)
    [ -z "$found" ]
    check "e2e_secret recorded first hop holds neither the secret nor a DATA header" $? "$found in $TMP/record.bin"
fi
for mode in flip replay reorder drop inject; do
    echo "$mode" >"$TMP/mode"
    : >"$TMP/sec0.log"
    run_with_timeout 20 "$BIN/starter" --ckpt "$CK" --nodes-config "$TMP/d_starter.json" "${COMMON[@]}" \
        >/dev/null 2>"$TMP/tamper.txt"
    rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -q "fails authentication" "$TMP/tamper.txt" &&
        grep -q "secondary 0: receiving from starter.*fails authentication" "$TMP/sec0.log"
    check "e2e_secret $mode of sealed bytes ends that connection with a clear error" $? \
        "starter exit $rc: $(tail -2 "$TMP/tamper.txt") / $(grep -m1 "error" "$TMP/sec0.log")"
    kill -0 "$(sec_pid 0)" 2>/dev/null && kill -0 "$(sec_pid 1)" 2>/dev/null &&
        wait_state 0 idle "$SECRET" && wait_state 1 idle "$SECRET"
    check "e2e_secret after $mode both secondaries are up and idle" $? \
        "states $(status_field 0 state "$SECRET") $(status_field 1 state "$SECRET")"
done
echo pass >"$TMP/mode"
good_run "$TMP/d_starter.json" "e2e_secret after tampering the next run succeeds"
stop_secondaries

# ---- lobby: silent connections and impostors without the secret ----
mkcfg "$TMP/l.json" 2 "$SECRET"
start_secondary "$TMP/l.json" 0 && start_secondary "$TMP/l.json" 1
R=${RING_PORT[0]}
HOSTILE="$PY tests/hostile.py"
$HOSTILE silent "$R" --n 2 --hold 60 >"$TMP/h_silent.txt" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 100); do grep -q ready "$TMP/h_silent.txt" && break; sleep 0.05; done
# they begin the handshake as the starter (node 0) and never prove it; each
# gets its challenge at once, none waiting on another
t0=$(date +%s.%N)
$HOSTILE challenge "$R" --index 0 --n 8 --hold 60 >"$TMP/h_stall.txt" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 200); do grep -q ready "$TMP/h_stall.txt" && break; sleep 0.05; done
dt=$($PY -c "print('%.1f' % ($(date +%s.%N) - $t0))")
grep -q "^HELLO HELLO HELLO HELLO HELLO HELLO HELLO HELLO$" "$TMP/h_stall.txt" &&
    $PY -c "import sys; sys.exit(0 if $dt < 2 else 1)"
check "e2e_secret lobby: 8 impostors posing as the starter get the challenge at once ($dt s) and stop there" $? \
    "$(cat "$TMP/h_stall.txt")"
# while the runs go: impostors that answer the challenge without the secret
( for i in 1 2 3; do $HOSTILE challenge "$R" --index 0 --prove --hold 0 >"$TMP/h_prove$i.txt" 2>&1; sleep 0.3; done ) &
prover=$!
PIDS="$PIDS $prover"
t0=$(date +%s.%N)
good_run "$TMP/l.json" "e2e_secret lobby: silent and stalled connections held, impostors mid-run: the run succeeds"
dt=$($PY -c "print('%.1f' % ($(date +%s.%N) - $t0))")
$PY -c "import sys; sys.exit(0 if $dt < 5 else 1)"
check "e2e_secret lobby: ... and is not held up by them ($dt s)" $? "took $dt s"
good_run "$TMP/l.json" "e2e_secret lobby: ... and the next run too"
wait $prover
ok=0
for i in 1 2 3; do grep -q "^HELLO ERROR$" "$TMP/h_prove$i.txt" || ok=1; done
check "e2e_secret lobby: a made-up proof is refused at the handshake" $ok "$(cat "$TMP"/h_prove*.txt)"
# the stalled ones are dropped at their deadline (5 s after the challenge)
for _ in $(seq 80); do [ "$(grep -c "of the challenge" "$TMP/sec0.log")" -ge 4 ] && break; sleep 0.1; done
[ "$(grep -c "wrong secret in HELLO from node 0" "$TMP/sec0.log")" -ge 3 ] &&
    [ "$(grep -c "said nothing within .* of the challenge" "$TMP/sec0.log")" -ge 4 ]
check "e2e_secret lobby: impostors refused and stalled handshakes dropped, each with a log line" $? \
    "$(grep "ring port" "$TMP/sec0.log" | tail -6)"
kill -0 "$(sec_pid 0)" 2>/dev/null && wait_state 0 idle "$SECRET" && wait_state 1 idle "$SECRET"
check "e2e_secret lobby: both secondaries up and idle" $? \
    "states $(status_field 0 state "$SECRET") $(status_field 1 state "$SECRET")"
good_run "$TMP/l.json" "e2e_secret lobby: after them the next run succeeds"
stop_secondaries

#!/usr/bin/env bash
# e2e_faults: what the starter does when the ring goes wrong. Each case
# asserts the starter's exit code (non-zero, and not killed by the test's
# own time limit: no hang), that its message names the node, and that the
# surviving secondaries are idle and serve the next run. At the end no
# process of the test is left.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_faults: $STORIES missing"; exit 0; fi
CK="$TMP/ck/stories260K"
prepare "$STORIES" "$CK" 2 3 || { fail "e2e_faults prepare" "$(tail -3 "$TMP/prepare.log")"; exit 1; }
# A model slow enough (a few seconds per run) to be hit in the middle of a run.
SLOW="$TMP/ck/slow"
$PY tools/gen_synthetic.py --shape tiny-llama --hidden 256 --inter 1024 --layers 4 --heads 8 --kv-heads 4 \
    --vocab 1024 --out "$TMP/slow-src" >>"$TMP/prepare.log" 2>&1 && prepare "$TMP/slow-src" "$SLOW" 3 ||
    { fail "e2e_faults prepare slow model" "$(tail -3 "$TMP/prepare.log")"; exit 1; }
SLOW_IDS=$($PY -c "print(','.join(str(3 + 37 * i % 1000) for i in range(12)))")
COMMON=(--temperature 0 --quiet --n-threads 1 --timeout 2)

# starter_expect NAME PATTERN MAX_SECONDS ARGS...: the starter must fail
# (exit not 0, not 124) within MAX_SECONDS with PATTERN in its messages.
starter_expect() {
    local name=$1 pattern=$2 max=$3; shift 3
    local t0=$(date +%s.%N)
    run_with_timeout "$max" "$BIN/starter" "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"
    local rc=$?
    local dt=$($PY -c "print('%.1f' % ($(date +%s.%N) - $t0))")
    if [ $rc -eq 0 ]; then fail "$name" "starter succeeded; wanted an error matching '$pattern'"
    elif [ $rc -ge 124 ]; then fail "$name" "starter did not end within $max s (hang)"
    elif ! grep -qE "$pattern" "$TMP/err.txt"; then fail "$name" "message lacks '$pattern': $(tail -2 "$TMP/err.txt")"
    else pass "$name (exit $rc after $dt s)"; fi
    cat "$TMP/err.txt" >>"$TMP/starter.log"
}

good_run() { # good_run CFG NAME: a valid run on CFG succeeds
    run_with_timeout 30 "$BIN/starter" --ckpt "$CK" --nodes-config "$1" --prompt "Once upon a time" --n-tokens 20 \
        "${COMMON[@]}" >/dev/null 2>>"$TMP/starter.log"
    check "$2" $? "$(tail -2 "$TMP/starter.log")"
}

wait_state() { # wait_state IDX STATE: up to 5 s
    for _ in $(seq 100); do [ "$(status_field $1 state)" = "$2" ] && return 0; sleep 0.05; done
    return 1
}

# ---- a secondary killed (kill -9) in the middle of a run ----
cfg="$TMP/cfg3.json"
mkcfg "$cfg" 2
start_secondary "$cfg" 0 && start_secondary "$cfg" 1
# --failover-timeout 0: the failure ends the run (no failover; e2e_failover.sh has it)
SLOW_ARGS=(--ckpt "$SLOW" --nodes-config "$cfg" --prompt-ids "$SLOW_IDS" --n-tokens 400 --n-samples 6 --failover-timeout 0 "${COMMON[@]}")
( wait_state 1 running && sleep 0.3 && kill -9 "$(sec_pid 1)" ) &
killer=$!
starter_expect "e2e_faults kill -9 of secondary 1 mid-run: starter names it" \
    "secondary 1 \(127.0.0.1:${HTTP_PORT[1]}\)" 15 "${SLOW_ARGS[@]}"
wait $killer
wait_state 0 idle
check "e2e_faults after kill -9: secondary 0 is idle" $? "state $(status_field 0 state)"
start_secondary "$cfg" 1
good_run "$cfg" "e2e_faults after kill -9: the survivor serves the next run"

# ---- a secondary that hangs (SIGSTOP) in the middle of a run ----
( wait_state 1 running && sleep 0.3 && kill -STOP "$(sec_pid 1)" ) &
killer=$!
starter_expect "e2e_faults SIGSTOP of secondary 1 mid-run: starter names the hung node" \
    "secondary 1 \(127.0.0.1:${HTTP_PORT[1]}\).*(does not answer|hung)" 15 "${SLOW_ARGS[@]}"
wait $killer
wait_state 0 idle
check "e2e_faults after a hang: secondary 0 is idle" $? "state $(status_field 0 state)"
kill -CONT "$(sec_pid 1)"
wait_state 1 idle
check "e2e_faults a hung secondary resumed finds its way back to idle" $? "state $(status_field 1 state)"
good_run "$cfg" "e2e_faults after a hang: both serve the next run"

# ---- garbage on a real secondary's ring and HTTP ports ----
$PY - "${RING_PORT[0]}" "${HTTP_PORT[0]}" <<'PYEOF'
import socket, struct, sys
ring, http = int(sys.argv[1]), int(sys.argv[2])
for payload in (b"\x00" * 64, b"GET / HTTP/1.0\r\n\r\n",
                struct.pack("<IHHIIIHHQII", 0x5249444D, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                struct.pack("<IHHIIIHHQII", 0x5249444D, 1, 1, 0, 0, 0, 0, 0, 1 << 40, 0, 0)):
    s = socket.create_connection(("127.0.0.1", ring)); s.sendall(payload); s.close()
s = socket.create_connection(("127.0.0.1", http)); s.sendall(b"\x16\x03\x01garbage\r\n\r\n\xff" * 10)
try: s.recv(100)
except OSError: pass
s.close()
PYEOF
sleep 0.5
grep -q "rejected connection" "$TMP/sec0.log"
check "e2e_faults garbage on the ring port is logged" $? "no 'rejected connection' in secondary 0's log"
good_run "$cfg" "e2e_faults after garbage: the secondary serves the next run"

# ---- unreachable node at start ----
kill -9 "$(sec_pid 1)"; wait "$(sec_pid 1)" 2>/dev/null
starter_expect "e2e_faults unreachable secondary named" \
    "secondary 1 \(127.0.0.1:${HTTP_PORT[1]}\): unreachable" 10 \
    --ckpt "$CK" --nodes-config "$cfg" --prompt "Once" --n-tokens 10 --connect-timeout 1 "${COMMON[@]}"
stop_secondaries

# ---- wrong secret ----
cfg="$TMP/cfg_secret.json"
mkcfg "$cfg" 1 right-secret
start_secondary "$cfg" 0
sed 's/right-secret/wrong-secret/' "$cfg" >"$TMP/cfg_wrong.json"
starter_expect "e2e_faults wrong secret refused, node named" \
    "secondary 0 \(127.0.0.1:${HTTP_PORT[0]}\).*401.*secret" 10 \
    --ckpt "$CK" --nodes-config "$TMP/cfg_wrong.json" --prompt "Once" --n-tokens 10 "${COMMON[@]}"
[ "$(status_field 0 init right-secret)" = False ] && [ "$(status_field 0 chunks_received right-secret)" = 0 ]
check "e2e_faults wrong secret changed nothing" $? "init/chunks changed"
good_run "$cfg" "e2e_faults with the right secret the run succeeds"
stop_secondaries

# ---- chunk hash mismatch ----
cp -r "$CK" "$TMP/ck_bad"
$PY - "$TMP/ck_bad/chunks/2nodes/model_secondary0.safetensors" <<'PYEOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-100] ^= 0xff; open(p, "wb").write(b)
PYEOF
cfg="$TMP/cfg2.json"
mkcfg "$cfg" 1
rm -rf "$TMP/cache0"
start_secondary "$cfg" 0
starter_expect "e2e_faults chunk hash mismatch named" \
    "secondary 0 \(127.0.0.1:${HTTP_PORT[0]}\).*hash mismatch" 10 \
    --ckpt "$TMP/ck_bad" --nodes-config "$cfg" --prompt "Once" --n-tokens 10 "${COMMON[@]}"
good_run "$cfg" "e2e_faults after a refused chunk the right one is accepted"

# ---- ports in use ----
stop_secondaries
$PY tests/fake_node.py ring-port 1 "${RING_PORT[0]}" >"$TMP/holder.txt" &
holder=$!
PIDS="$PIDS $holder"
for _ in $(seq 50); do grep -q ready "$TMP/holder.txt" 2>/dev/null && break; sleep 0.05; done
run_with_timeout 10 "$BIN/secondary" "$cfg" 0 --cache-dir "$TMP/cache0" >"$TMP/busy.txt" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -q "secondary 0.*port ${RING_PORT[0]} already in use" "$TMP/busy.txt"
check "e2e_faults secondary on a busy ring port: clear error" $? "exit $rc: $(cat "$TMP/busy.txt")"
kill -9 $holder; wait $holder 2>/dev/null
$PY tests/fake_node.py ring-port 1 "$STARTER_PORT" >"$TMP/holder.txt" &
holder=$!
PIDS="$PIDS $holder"
for _ in $(seq 50); do grep -q ready "$TMP/holder.txt" 2>/dev/null && break; sleep 0.05; done
start_secondary "$cfg" 0
starter_expect "e2e_faults starter on a busy port: clear error" \
    "starter \(127.0.0.1\).*port $STARTER_PORT already in use" 10 \
    --ckpt "$CK" --nodes-config "$cfg" --prompt "Once" --n-tokens 10 "${COMMON[@]}"
kill -9 $holder; wait $holder 2>/dev/null
stop_secondaries

# ---- a node that sends garbage on the ring, and one that answers HTTP with garbage ----
cfg="$TMP/cfg_fake.json"
mkcfg "$cfg" 1
$PY tests/fake_node.py ring-garbage "${HTTP_PORT[0]}" "${RING_PORT[0]}" >"$TMP/fake.txt" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 50); do grep -q ready "$TMP/fake.txt" 2>/dev/null && break; sleep 0.05; done
starter_expect "e2e_faults garbage frames from a node: rejected, node named" \
    "secondary 0 \(127.0.0.1:${HTTP_PORT[0]}\).*bad magic" 10 \
    --ckpt "$CK" --nodes-config "$cfg" --prompt "Once" --n-tokens 10 --connect-timeout 1 "${COMMON[@]}"
# When the garbage came after the ring closed (else the start itself fails),
# the ring closes again once (no node named: the same nodes), bounded: the
# fake node's new connection, still for run epoch 0, is refused, and the
# error says so.
if grep -q "closing the ring again" "$TMP/err.txt"; then
    grep -qE "failover: .*refused.*run epoch 0" "$TMP/err.txt"
    check "e2e_faults ... the ring closed again, the connection for run epoch 0 refused and named" $? \
        "$(tail -2 "$TMP/err.txt")"
fi
stop_secondaries
mkcfg "$cfg" 1
$PY tests/fake_node.py http-garbage "${HTTP_PORT[0]}" "${RING_PORT[0]}" >"$TMP/fake.txt" 2>&1 &
PIDS="$PIDS $!"
for _ in $(seq 50); do grep -q ready "$TMP/fake.txt" 2>/dev/null && break; sleep 0.05; done
starter_expect "e2e_faults garbage on a node's HTTP port: node named" \
    "secondary 0 \(127.0.0.1:${HTTP_PORT[0]}\)" 10 \
    --ckpt "$CK" --nodes-config "$cfg" --prompt "Once" --n-tokens 10 --connect-timeout 1 "${COMMON[@]}"
stop_secondaries

left=$(pgrep -f "$TMP" | tr '\n' ' ')
check "e2e_faults no process left behind" $([ -z "$left" ]; echo $?) "still running: $left"
exit 0

#!/usr/bin/env bash
# e2e_crafted_init: a hostile POST /init (tests/crafted_init.py: head widths
# that wrap in 32-bit int to the real chunk's shapes), followed by the chunk,
# POST /start and a DATA frame on the ring port, must be refused with 400
# naming the field; the secondary stays up and idle, and serves the next
# legitimate run.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_crafted_init: $STORIES missing"; exit 0; fi
CK="$TMP/ck/stories260K"
prepare "$STORIES" "$CK" 2 || { fail "e2e_crafted_init prepare" "$(tail -3 "$TMP/prepare.log")"; exit 1; }
cfg="$TMP/nodes.json"
mkcfg "$cfg" 1
start_secondary "$cfg" 0 || { fail "e2e_crafted_init start" "$(tail -3 "$TMP/sec0.log")"; exit 1; }
pid=$(sec_pid 0)
$PY tests/crafted_init.py "${HTTP_PORT[0]}" "${RING_PORT[0]}" "$CK/chunks/2nodes/model_secondary0.safetensors" 2 5 \
    >"$TMP/attack.txt" 2>&1
grep -q '^init 400 .*head_dim' "$TMP/attack.txt"
check "e2e_crafted_init: /init with int-wrapping head widths refused (400 naming head_dim)" $? "$(head -1 "$TMP/attack.txt")"
grep -q '^start 409 ' "$TMP/attack.txt"
check "e2e_crafted_init: /start after the refused /init refused (409)" $? "$(sed -n 3p "$TMP/attack.txt")"
sleep 0.5
kill -0 "$pid" 2>/dev/null
check "e2e_crafted_init: the secondary is still up" $? "$(tail -3 "$TMP/sec0.log")"
[ "$(status_field 0 state)" = idle ]
check "e2e_crafted_init: the secondary is idle" $? "state $(status_field 0 state)"
run_with_timeout 30 "$BIN/starter" --ckpt "$CK" --nodes-config "$cfg" --prompt "Once upon a time" --n-tokens 20 \
    --temperature 0 --quiet --n-threads 1 --timeout 2 >"$TMP/out.txt" 2>"$TMP/starter.log"
check "e2e_crafted_init: the next legitimate run succeeds" $? "$(tail -2 "$TMP/starter.log")"
stop_secondaries
check "e2e_crafted_init: the secondary exits on SIGTERM" $? "still running"

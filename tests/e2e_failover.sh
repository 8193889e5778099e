#!/usr/bin/env bash
# e2e_failover: a 3-node ring (stories260K) on the engine losing its last
# secondary (kill -9) mid-generation (tests/test_failover.c drives it):
#   1. one spare listed and started: the spare takes the node's layers (its
#      chunk uploaded), the requests replay and end with the tokens of an
#      undisturbed run, greedy and sampled;
#   2. no spare: the killed node restarted takes its place again;
#   3. the spare killed too, after it took the place: every request ends
#      with an error naming the spare and the node, the engine refuses work;
#   4. the CLI's batch mode (bin/starter --n-samples) on a synthetic model
#      slow enough to be hit mid-run, with a spare: its greedy samples equal
#      an undisturbed run's;
#   5. the same with no node lost: the ring connection from secondary 0 to
#      secondary 1 destroyed mid-run (ss -K; root and a kernel that allows
#      it, else SKIP): every node still answers, the diagnosis names none,
#      the ring closes again with the same nodes, and the greedy samples
#      equal the undisturbed run's.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh
BUILD=${BUILD:-build}

STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_failover: $STORIES missing"; exit 0; fi
CK="$TMP/ck/stories260K"
if ! prepare "$STORIES" "$CK" 3; then
    fail "e2e_failover prepare stories260K" "$(tail -3 "$TMP/prepare.log")"; exit 1
fi

# mkcfg_spare FILE: 2 secondaries and one spare on free ports (SPARE_HTTP).
mkcfg_spare() {
    mkcfg "$1" 2
    local p=($(free_ports 2))
    SPARE_HTTP=${p[0]}
    $PY - "$1" "${p[0]}" "${p[1]}" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["nodes"]["spare"] = [{"addr": "127.0.0.1", "communication": {"starter_addr": "127.0.0.1", "port": int(sys.argv[2])},
                        "inference": {"port_in": int(sys.argv[3]), "port_out": 1}}]
json.dump(c, open(sys.argv[1], "w"))
PYEOF
}

start_spare() {
    "$BIN/secondary" "$1" --spare 0 --cache-dir "$TMP/cache_spare" --n-threads 1 >>"$TMP/spare.log" 2>&1 &
    SPARE_PID=$!
    PIDS="$PIDS $SPARE_PID"
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$SPARE_HTTP/" 2>/dev/null && return 0
        kill -0 "$SPARE_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# drive NAME [VAR=VALUE...]: test_failover with the environment given.
drive() {
    local name=$1; shift
    env "$@" timeout -k 2 180 "$BUILD/tests/test_failover" >"$TMP/$name.out" 2>"$TMP/$name.log" &
    DRIVER=$!
}
finish_drive() {
    local name=$1
    wait $DRIVER
    local rc=$?
    sed "s/^\(PASS\|FAIL\|INFO\): failover: /\1: e2e_failover $name: /" "$TMP/$name.out"
    if [ $rc -ne 0 ] && ! grep -q '^FAIL:' "$TMP/$name.out"; then
        fail "e2e_failover $name: test_failover exit $rc" "$(tail -5 "$TMP/$name.log")"
    fi
    grep -h 'failover: ' "$TMP/$name.log" | sed 's/^.*failover: /INFO: e2e_failover '"$name"': /' | head -3
}

# 1. a spare takes the place
cfg="$TMP/cfg_spare.json"
mkcfg_spare "$cfg"
ok=0
for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
start_spare "$cfg" || ok=1
check "e2e_failover spare: nodes start" $ok "$(cat "$TMP"/sec*.log "$TMP"/spare.log)"
drive spare MDI_FAILOVER_NODES="$cfg" MDI_FAILOVER_CKPT="$CK" MDI_FAILOVER_KILL_PID=$(sec_pid 1)
finish_drive spare
grep -q 'takes the place of secondary 1' "$TMP/spare.log"
check "e2e_failover spare: the spare took secondary 1's place" $? "$(tail -5 "$TMP/spare.log")"
stop_secondaries
rm -f "$TMP"/sec*.log "$TMP"/spare.log

# 2. no spare: the node itself restarted
cfg="$TMP/cfg_restart.json"
mkcfg "$cfg" 2
ok=0
for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
check "e2e_failover restart: secondaries start" $ok "$(cat "$TMP"/sec*.log)"
killed="$TMP/killed"
rm -f "$killed"
drive restart MDI_FAILOVER_NODES="$cfg" MDI_FAILOVER_CKPT="$CK" MDI_FAILOVER_KILL_PID=$(sec_pid 1) \
    MDI_FAILOVER_KILLED_FILE="$killed"
for _ in $(seq 600); do [ -e "$killed" ] && break; kill -0 $DRIVER 2>/dev/null || break; sleep 0.05; done
ok=1
if [ -e "$killed" ]; then
    old=$(sec_pid 1)
    for _ in $(seq 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.05; done
    start_secondary "$cfg" 1; ok=$?
fi
check "e2e_failover restart: the killed node restarted" $ok "$(tail -3 "$TMP/sec1.log")"
finish_drive restart
stop_secondaries
rm -f "$TMP"/sec*.log

# 3. the spare dies too
cfg="$TMP/cfg_both.json"
mkcfg_spare "$cfg"
ok=0
for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
start_spare "$cfg" || ok=1
check "e2e_failover spare dies too: nodes start" $ok "$(cat "$TMP"/sec*.log "$TMP"/spare.log)"
drive both MDI_FAILOVER_NODES="$cfg" MDI_FAILOVER_CKPT="$CK" MDI_FAILOVER_KILL_PID=$(sec_pid 1) \
    MDI_FAILOVER_KILL_PID2=$SPARE_PID MDI_FAILOVER_EXPECT=error MDI_FAILOVER_TIMEOUT=2
finish_drive both
stop_secondaries
rm -f "$TMP"/sec*.log "$TMP"/spare.log

# 4. the CLI's batch mode
SLOW="$TMP/ck/slow"
if $PY tools/gen_synthetic.py --shape tiny-llama --hidden 256 --inter 1024 --layers 4 --heads 8 --kv-heads 4 \
    --vocab 1024 --out "$TMP/slow-src" >>"$TMP/prepare.log" 2>&1 && prepare "$TMP/slow-src" "$SLOW" 3; then
    cfg="$TMP/cfg_cli.json"
    mkcfg_spare "$cfg"
    rm -rf "$TMP/cache_spare"
    ok=0
    for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
    start_spare "$cfg" || ok=1
    check "e2e_failover cli: nodes start" $ok "$(cat "$TMP"/sec*.log "$TMP"/spare.log)"
    ids=$($PY -c "print(','.join(str(3 + 37 * i % 1000) for i in range(12)))")
    args=(--ckpt "$SLOW" --nodes-config "$cfg" --prompt-ids "$ids" --n-tokens 300 --n-samples 4 --temperature 0
          --quiet --n-threads 1 --timeout 2 --failover-timeout 10)
    run_with_timeout 120 "$BIN/starter" "${args[@]}" --output "$TMP/cli_ref.json" >/dev/null 2>"$TMP/cli_ref.log"
    check "e2e_failover cli: the undisturbed run" $? "$(tail -3 "$TMP/cli_ref.log")"
    ( for _ in $(seq 100); do [ "$(status_field 1 state)" = running ] && break; sleep 0.05; done
      sleep 0.4; kill -9 "$(sec_pid 1)" ) &
    killer=$!
    run_with_timeout 120 "$BIN/starter" "${args[@]}" --output "$TMP/cli_run.json" >/dev/null 2>"$TMP/cli_run.log"
    rc=$?
    wait $killer
    check "e2e_failover cli: secondary 1 killed mid-run, the run completes" $rc "$(tail -3 "$TMP/cli_run.log")"
    grep -q 'failover: secondary 1 .* replaced by spare 0' "$TMP/cli_run.log"
    check "e2e_failover cli: the failover logged (node, time lost)" $? "$(grep -i 'fail' "$TMP/cli_run.log" | head -3)"
    grep -h 'failover: ' "$TMP/cli_run.log" | sed 's/^.*failover: /INFO: e2e_failover cli: /' | head -1
    if [ $rc -eq 0 ]; then
        d=$(same_ids "$TMP/cli_ref.json" "$TMP/cli_run.json")
        check "e2e_failover cli: greedy samples equal the undisturbed run's" $? "$d"
    fi
    stop_secondaries

    # 5. a ring link cut, no node lost
    if ! tcp_cut_works; then
        echo "SKIP: e2e_failover ring cut: ss -K cannot destroy a TCP connection here (needs root)"
    else
        cfg="$TMP/cfg_cut.json"
        mkcfg "$cfg" 2
        ok=0
        for i in 0 1; do start_secondary "$cfg" $i || ok=1; done
        check "e2e_failover ring cut: secondaries start" $ok "$(cat "$TMP"/sec*.log)"
        args[3]=$cfg # the value of --nodes-config
        ( for _ in $(seq 100); do [ "$(status_field 1 state)" = running ] && break; sleep 0.05; done
          sleep 0.4; eval "$(tcp_cut_cmd "${RING_PORT[1]}")" >"$TMP/cut.out" 2>&1 ) &
        killer=$!
        run_with_timeout 120 "$BIN/starter" "${args[@]}" --output "$TMP/cut_run.json" >/dev/null 2>"$TMP/cut_run.log"
        rc=$?
        wait $killer
        [ -s "$TMP/cut.out" ]
        check "e2e_failover ring cut: the connection from secondary 0 to secondary 1 destroyed mid-run" $? \
            "ss -K cut nothing"
        check "e2e_failover ring cut: the run completes" $rc "$(tail -3 "$TMP/cut_run.log")"
        grep -q 'failover: the ring re-closed, no node failed' "$TMP/cut_run.log" &&
            ! grep -q 'replaced by' "$TMP/cut_run.log"
        check "e2e_failover ring cut: logged as a failover with no node replaced" $? \
            "$(grep -iE 'fail|ring' "$TMP/cut_run.log" | head -4)"
        grep -h 'failover: ' "$TMP/cut_run.log" | sed 's/^.*failover: /INFO: e2e_failover ring cut: /' | head -1
        if [ $rc -eq 0 ]; then
            d=$(same_ids "$TMP/cli_ref.json" "$TMP/cut_run.json")
            check "e2e_failover ring cut: greedy samples equal the undisturbed run's" $? "$d"
        fi
        stop_secondaries
    fi
else
    fail "e2e_failover cli: prepare the synthetic model" "$(tail -3 "$TMP/prepare.log")"
fi
exit 0

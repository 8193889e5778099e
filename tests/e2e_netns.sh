#!/usr/bin/env bash
# e2e_netns: the equality test with each node in its own network namespace,
# the namespaces linked by veth pairs to a bridge (a LAN in miniature):
# 3 nodes, 3 samples, greedy output equal to standalone mode. Needs root and
# a working `ip netns`; otherwise it says it skipped.
set -u
cd "$(dirname "$0")/.."
. tests/ring_lib.sh

if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null; then
    echo "SKIP: e2e_netns: needs root and iproute2"; exit 0
fi
STORIES="$MDI_SHARED/models/stories260K"
if [ ! -d "$STORIES" ]; then echo "SKIP: e2e_netns: $STORIES missing"; exit 0; fi

TAG=m$(( $$ % 100000 ))
NET=10.$(( 100 + $$ % 100 )).$(( $$ / 100 % 250 ))
HUB=${TAG}hub
NS=(${TAG}s ${TAG}a ${TAG}b)
netns_cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    PIDS=""
    for n in "${NS[@]}" "$HUB"; do ip netns del "$n" 2>/dev/null; done
}
trap 'netns_cleanup; cleanup' EXIT

if ! ip netns add "$HUB" 2>/dev/null; then echo "SKIP: e2e_netns: ip netns does not work here"; exit 0; fi
setup() {
    ip -n "$HUB" link add br0 type bridge && ip -n "$HUB" link set br0 up && ip -n "$HUB" link set lo up || return 1
    local k
    for k in 0 1 2; do
        ip netns add "${NS[$k]}" || return 1
        ip link add "${TAG}h$k" netns "$HUB" type veth peer name eth0 netns "${NS[$k]}" || return 1
        ip -n "$HUB" link set "${TAG}h$k" master br0 up || return 1
        ip -n "${NS[$k]}" addr add "$NET.$((k + 1))/24" dev eth0 || return 1
        ip -n "${NS[$k]}" link set eth0 up && ip -n "${NS[$k]}" link set lo up || return 1
    done
}
if ! setup 2>"$TMP/setup.txt"; then echo "SKIP: e2e_netns: cannot build the namespaces: $(head -1 "$TMP/setup.txt")"; exit 0; fi

CK="$TMP/ck/stories260K"
prepare "$STORIES" "$CK" 1 3 || { fail "e2e_netns prepare" "$(tail -3 "$TMP/prepare.log")"; exit 1; }
cfg="$TMP/cfg.json"
cat >"$cfg" <<JSON
{"secret": "netns", "nodes": {
  "starter": {"addr": "$NET.1", "communication": {"port": 8088}, "inference": {"port_in": 5088, "port_out": 5089}},
  "secondary": [
    {"addr": "$NET.2", "communication": {"starter_addr": "$NET.1", "port": 8088}, "inference": {"port_in": 5088, "port_out": 5089}},
    {"addr": "$NET.3", "communication": {"starter_addr": "$NET.1", "port": 8088}, "inference": {"port_in": 5088, "port_out": 5089}}]}}
JSON
ok=0
for i in 0 1; do
    ip netns exec "${NS[$((i + 1))]}" "$BIN/secondary" "$cfg" $i --cache-dir "$TMP/cache$i" --n-threads 1 \
        >"$TMP/sec$i.log" 2>&1 &
    PIDS="$PIDS $!"
done
for i in 0 1; do
    up=1
    for _ in $(seq 100); do
        ip netns exec "${NS[$((i + 1))]}" curl -s -o /dev/null --max-time 1 -H "X-MDI-Secret: netns" \
            "http://$NET.$((i + 2)):8088/" && { up=0; break; }
        sleep 0.05
    done
    [ $up = 0 ] || ok=1
done
check "e2e_netns secondaries start in their namespaces" $ok "$(cat "$TMP"/sec*.log)"

COMMON=(--temperature 0 --quiet --n-threads 1 --n-tokens 40 --n-samples 3)
"$BIN/starter" --ckpt "$CK" --prompt "Once upon a time" "${COMMON[@]}" --output "$TMP/ref.json" 2>>"$TMP/starter.log"
run_with_timeout 30 ip netns exec "${NS[0]}" "$BIN/starter" --ckpt "$CK" --nodes-config "$cfg" \
    --prompt "Once upon a time" "${COMMON[@]}" --output "$TMP/d.json" 2>>"$TMP/starter.log"
rc=$?
msg=$(same_ids "$TMP/ref.json" "$TMP/d.json" 2>&1); same=$?
[ $rc -ne 0 ] && msg="starter exit $rc: $(tail -3 "$TMP/starter.log")"
check "e2e_netns 3 nodes in 3 namespaces: equal to standalone" $((rc | same)) "$msg"
exit 0

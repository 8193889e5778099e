#!/usr/bin/env bash
# e2e_prepare: bin/prepare_model as a user runs it: the default output
# layout, re-runs, --inspect, one clear line and a non-zero exit for each bad
# input, a full disk (a 200 KiB tmpfs, when we may mount one) leaving nothing
# half-written, and hub repository ids served by tests/hub_server.py
# (download then split, llama2.c files, a gated repo, a dropped connection).
# The structure and bit-exactness of the chunks are checked in test_prepare.c.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-bin}
case "$BIN" in /*) PM="$BIN/prepare_model" ;; *) PM="$ROOT/$BIN/prepare_model" ;; esac
SHARED=${MDI_SHARED:-$(cd .. && pwd)/shared}
HF="$SHARED/models/stories260K"
L2C="$SHARED/models/stories260K-llama2c"
PY=/usr/bin/python3

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1: $2"; }
skip() { echo "SKIP: $1: $2"; }
check() { # check NAME CONDITION-EXIT-STATUS DETAIL
    if [ "$2" -eq 0 ]; then pass "$1"; else fail "$1" "$3"; fi
}

if [ ! -x "$PM" ]; then fail "prepare_model built" "$PM missing"; exit 1; fi
if [ ! -d "$HF" ]; then skip "prepare_model e2e" "no $HF"; exit 0; fi

TMP=$(mktemp -d /tmp/e2e_prepare.XXXXXX)
SERVER_PID=
MNT=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "$MNT" ] && umount "$MNT" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

# ---- the default layout, from a scratch working folder ----
mkdir -p "$TMP/work"
out=$(cd "$TMP/work" && "$PM" "$HF" --n-nodes 3 2>"$TMP/err"); rc=$?
D="$TMP/work/checkpoints/stories260K"
[ $rc -eq 0 ] && [ "$out" = "checkpoints/stories260K/chunks/3nodes/manifest.json" ] &&
    [ -f "$D/config.json" ] && [ -f "$D/tokenizer.json" ] && [ -f "$D/tokenizer_config.json" ] &&
    [ -f "$D/generation_config.json" ] && [ -f "$D/chunks/3nodes/model_starter.safetensors" ] &&
    [ -f "$D/chunks/3nodes/model_secondary0.safetensors" ] && [ -f "$D/chunks/3nodes/model_secondary1.safetensors" ] &&
    cmp -s "$D/config.json" "$HF/config.json"
check "default output checkpoints/stories260K/chunks/3nodes" $? "rc $rc, stdout '$out': $(tail -n 3 "$TMP/err")"

# the manifest against the files, independently of our C reader
$PY - "$D/chunks/3nodes" <<'EOF' >"$TMP/py" 2>&1
import hashlib, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
assert m["complete"] is True and m["n_nodes"] == 3 and m["n_layers"] == 5, m
assert m["config_sha256"] == hashlib.sha256(open(os.path.join(d, "../../config.json"), "rb").read()).hexdigest()
nxt = 0
for i, c in enumerate(m["chunks"]):
    p = os.path.join(d, c["file"])
    data = open(p, "rb").read()
    assert len(data) == c["size"] and hashlib.sha256(data).hexdigest() == c["sha256"], c["file"]
    n = int.from_bytes(data[:8], "little")
    hdr = json.loads(data[8:8 + n])
    meta = hdr.pop("__metadata__")
    assert meta["role"] == c["role"] and int(meta["layer_begin"]) == c["layer_begin"] == nxt, meta
    assert sorted(hdr) == sorted(c["tensors"]), c["file"]
    nxt = c["layer_end"]
assert nxt == 5
print("ok")
EOF
check "manifest sizes and sha256 match the files (python reader)" $? "$(cat "$TMP/py")"

(cd "$TMP/work" && "$PM" "$HF" --n-nodes 3 >/dev/null 2>"$TMP/err"); rc=$?
[ $rc -eq 0 ] && [ "$(grep -c ': reused model_' "$TMP/err")" -eq 3 ]
check "re-run reuses the 3 finished chunks" $? "rc $rc: $(cat "$TMP/err")"

"$PM" --inspect "$D/chunks/3nodes/model_secondary0.safetensors" >"$TMP/insp" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "chunk: secondary0, layers \[1, 3) of 5" "$TMP/insp" &&
    grep -q "model.layers.2.self_attn.q_proj.weight *f32 *\[64, 64\] 16384 bytes" "$TMP/insp"
check "--inspect a chunk" $? "rc $rc: $(head -5 "$TMP/insp")"
"$PM" --inspect "$D/chunks/3nodes/manifest.json" --verify >"$TMP/insp" 2>&1; rc=$?
[ $rc -eq 0 ] && [ "$(grep -c 'ok (hash checked)' "$TMP/insp")" -eq 3 ]
check "--inspect --verify a manifest" $? "rc $rc: $(head -5 "$TMP/insp")"

# llama2.c: the tokenizer .bin travels, config.json comes from the header
"$PM" "$L2C" --n-nodes 2 --dtype bf16 --out "$TMP/l2c" >/dev/null 2>"$TMP/err"; rc=$?
[ $rc -eq 0 ] && [ -f "$TMP/l2c/tok512.bin" ] && grep -q '"num_hidden_layers": 5' "$TMP/l2c/config.json" &&
    "$PM" --inspect "$TMP/l2c" --verify >/dev/null 2>&1
check "llama2.c source with --dtype bf16" $? "rc $rc: $(tail -n 3 "$TMP/err")"

# ---- bad input: one line on stderr, non-zero exit, nothing written ----
bad() { # bad NAME PATTERN ARGS...
    local name=$1 pattern=$2; shift 2
    rm -rf "$TMP/bad"
    "$PM" "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
    local last; last=$(tail -n 1 "$TMP/err")
    if [ $rc -ne 0 ] && [ "$(grep -c '^prepare_model: ' "$TMP/err")" -eq 1 ] && [[ "$last" == prepare_model:* ]] &&
        grep -q -- "$pattern" "$TMP/err" && [ ! -e "$TMP/bad/chunks" ]; then
        pass "$name"
    else
        fail "$name" "rc $rc, stderr: $(cat "$TMP/err")"
    fi
}
mkcopy() { rm -rf "$TMP/$1"; mkdir -p "$TMP/$1"; cp "$HF"/* "$TMP/$1/"; chmod u+w "$TMP/$1"/*; }

bad "bad input: missing source" "no such file or folder" "$TMP/nope" --n-nodes 2 --out "$TMP/bad"
bad "bad input: no --n-nodes" "--n-nodes is required" "$HF" --out "$TMP/bad"
bad "bad input: unknown option" "unknown option --n-node" "$HF" --n-node 2 --out "$TMP/bad"
bad "bad input: more nodes than layers" "only 5 layers" "$HF" --n-nodes 6 --out "$TMP/bad"
bad "bad input: --layers not summing" "sum to 4 but the model has 5" "$HF" --n-nodes 2 --layers 2,2 --out "$TMP/bad"
bad "bad input: --layers count" "gives 3 counts but --n-nodes is 2" "$HF" --n-nodes 2 --layers 1,2,2 --out "$TMP/bad"
bad "bad input: --layers malformed" "expected counts" "$HF" --n-nodes 2 --layers 2,three --out "$TMP/bad"
bad "bad input: bad --dtype" 'unknown dtype "q4" (accepted: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q8_k)' "$HF" --n-nodes 2 --dtype q4 --out "$TMP/bad"
mkcopy gpt2; sed -i 's/"model_type": "llama"/"model_type": "gpt2"/' "$TMP/gpt2/config.json"
bad "bad input: unknown architecture" 'unknown model_type "gpt2"' "$TMP/gpt2" --n-nodes 2 --out "$TMP/bad"
mkcopy trunc; truncate -s 300000 "$TMP/trunc/model.safetensors"
bad "bad input: truncated safetensors" "model.safetensors: truncated" "$TMP/trunc" --n-nodes 2 --out "$TMP/bad"
mkcopy hdr; printf '\xff\xff\xff\xff\x00\x00\x00\x00' | dd of="$TMP/hdr/model.safetensors" conv=notrunc status=none
bad "bad input: oversized safetensors header" "model.safetensors" "$TMP/hdr" --n-nodes 2 --out "$TMP/bad"
mkcopy unread; chmod 000 "$TMP/unread/model.safetensors"
if [ "$(id -u)" -ne 0 ]; then
    bad "bad input: unreadable weights" "model.safetensors" "$TMP/unread" --n-nodes 2 --out "$TMP/bad"
else
    skip "bad input: unreadable weights" "root reads any file"
fi
bad "bad input: --inspect a missing file" "no such file" --inspect "$TMP/nope.safetensors"

# ---- a full disk: a 200 KiB tmpfs cannot hold the 1 MiB of chunks ----
MNT="$TMP/small"
mkdir -p "$MNT"
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o size=200k tmpfs "$MNT" 2>/dev/null; then
    "$PM" "$HF" --n-nodes 2 --out "$MNT/ck" >/dev/null 2>"$TMP/err"; rc=$?
    left=$(find "$MNT" -name '*.tmp' | wc -l)
    complete=$(grep -c '"complete": true' "$MNT/ck/chunks/2nodes/manifest.json" 2>/dev/null)
    [ $rc -ne 0 ] && grep -q "No space left on device" "$TMP/err" && [ "$left" -eq 0 ] && [ "${complete:-0}" -eq 0 ] &&
        [ "$(grep -c '^prepare_model: ' "$TMP/err")" -eq 1 ]
    check "full disk: clear error, no .tmp left, manifest not complete" $? \
        "rc $rc, $left .tmp files, complete=$complete: $(cat "$TMP/err")"
    # whatever the manifest lists is whole
    if [ -f "$MNT/ck/chunks/2nodes/manifest.json" ]; then
        "$PM" --inspect "$MNT/ck/chunks/2nodes" --verify >/dev/null 2>"$TMP/err"
        check "full disk: every chunk the manifest lists is whole" $? "$(cat "$TMP/err")"
    fi
    umount "$MNT"; MNT=
else
    skip "full disk" "cannot mount a tmpfs (needs root)"
    MNT=
fi

# ---- the hub, served locally ----
start_server() { # start_server ARGS... ; sets PORT, SERVER_PID
    rm -f "$TMP/port"
    $PY tests/hub_server.py --port 0 --log "$TMP/hub.log" "$@" >"$TMP/port" 2>"$TMP/server.err" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        [ -s "$TMP/port" ] && break
        sleep 0.05
    done
    PORT=$(head -n 1 "$TMP/port")
    export HF_ENDPOINT="http://127.0.0.1:$PORT"
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=
}

if [ ! -f tests/hub_server.py ]; then
    skip "hub" "tests/hub_server.py missing"
    exit 0
fi
mkdir -p "$TMP/repo_l2c/stories260K"
cp "$L2C/stories260K.bin" "$L2C/tok512.bin" "$TMP/repo_l2c/stories260K/"
start_server --map "test-org/stories260K=$HF" --map "karpathy/tinyllamas=$TMP/repo_l2c" \
    --map "gated/stories260K=$HF" --drop-after 100000
if [ -z "$PORT" ]; then
    fail "hub server starts" "$(cat "$TMP/server.err")"
    exit 1
fi
unset HF_TOKEN

# a transformers repo id: download into checkpoints/NAME/source/, then split;
# the first GET of model.safetensors is cut after 100000 bytes and resumed
(cd "$TMP/work" && "$PM" test-org/stories260K --n-nodes 2 --no-progress >"$TMP/out" 2>"$TMP/err"); rc=$?
H="$TMP/work/checkpoints/stories260K"
[ $rc -eq 0 ] && cmp -s "$H/source/model.safetensors" "$HF/model.safetensors" &&
    [ -f "$H/chunks/2nodes/manifest.json" ] && [ -f "$H/tokenizer.json" ] &&
    grep -q "range=bytes=100000-" "$TMP/hub.log"
check "hub: repo id downloaded (resumed after a drop) and split" $? "rc $rc: $(tail -n 5 "$TMP/err")"
# the same bytes as a local split with the same arguments
"$PM" "$HF" --n-nodes 2 --out "$TMP/local2" >/dev/null 2>&1
cmp -s "$H/chunks/2nodes/model_starter.safetensors" "$TMP/local2/chunks/2nodes/model_starter.safetensors" &&
    cmp -s "$H/chunks/2nodes/model_secondary0.safetensors" "$TMP/local2/chunks/2nodes/model_secondary0.safetensors"
check "hub: chunks identical to those of the local folder" $? "chunks differ"

: >"$TMP/hub.log"
(cd "$TMP/work" && "$PM" test-org/stories260K --n-nodes 2 --no-progress >/dev/null 2>"$TMP/err"); rc=$?
[ $rc -eq 0 ] && ! grep -q "^GET .* 20[06]$" "$TMP/hub.log" && [ "$(grep -c ': reused model_' "$TMP/err")" -eq 2 ]
check "hub: re-run downloads nothing and reuses the chunks" $? "rc $rc: $(cat "$TMP/hub.log" "$TMP/err" | tail -n 8)"

# llama2.c files of a repo folder, as the README demo fetches karpathy/tinyllamas
mkdir -p "$TMP/work2"
(cd "$TMP/work2" && "$PM" karpathy/tinyllamas --hub-files stories260K/stories260K.bin,stories260K/tok512.bin \
    --n-nodes 2 --no-progress >/dev/null 2>"$TMP/err"); rc=$?
T="$TMP/work2/checkpoints/stories260K"
[ $rc -eq 0 ] && [ -f "$T/source/stories260K.bin" ] && [ -f "$T/tok512.bin" ] &&
    "$PM" --inspect "$T/chunks/2nodes" --verify >/dev/null 2>&1
check "hub: llama2.c files (--hub-files), default NAME from their folder" $? "rc $rc: $(tail -n 5 "$TMP/err")"
stop_server

# a gated repository: 401 without the token, fine with --hf-token or HF_TOKEN
start_server --map "gated/stories260K=$HF" --token s3cret
"$PM" gated/stories260K --n-nodes 2 --out "$TMP/gated" --no-progress >/dev/null 2>"$TMP/err"; rc=$?
[ $rc -ne 0 ] && grep -q -i "token" "$TMP/err" && [ ! -e "$TMP/gated/chunks" ] &&
    [ "$(grep -c '^prepare_model: ' "$TMP/err")" -eq 1 ]
check "hub: gated repo without a token fails clearly (401)" $? "rc $rc: $(cat "$TMP/err")"
"$PM" gated/stories260K --n-nodes 2 --out "$TMP/gated" --hf-token s3cret --no-progress >/dev/null 2>"$TMP/err"; rc=$?
check "hub: gated repo with --hf-token" $rc "$(tail -n 3 "$TMP/err")"
rm -rf "$TMP/gated"
HF_TOKEN=s3cret "$PM" gated/stories260K --n-nodes 3 --out "$TMP/gated" --no-progress >/dev/null 2>"$TMP/err"; rc=$?
check "hub: gated repo with HF_TOKEN" $rc "$(tail -n 3 "$TMP/err")"
"$PM" gated/nothere --n-nodes 2 --out "$TMP/missing" --hf-token s3cret --no-progress >/dev/null 2>"$TMP/err"; rc=$?
[ $rc -ne 0 ] && grep -q "404\|not found\|Not Found" "$TMP/err" && [ ! -e "$TMP/missing/chunks" ]
check "hub: unknown repo fails clearly" $? "rc $rc: $(cat "$TMP/err")"
stop_server

# a wrong size announced by the server
start_server --map "test-org/stories260K=$HF" --wrong-size model.safetensors
"$PM" test-org/stories260K --n-nodes 2 --out "$TMP/wrong" --no-progress >/dev/null 2>"$TMP/err"; rc=$?
[ $rc -ne 0 ] && grep -q "size" "$TMP/err" && [ ! -e "$TMP/wrong/chunks" ] && [ ! -e "$TMP/wrong/source/model.safetensors" ]
check "hub: wrong size is a clear error, nothing kept" $? "rc $rc: $(cat "$TMP/err")"
stop_server
exit 0

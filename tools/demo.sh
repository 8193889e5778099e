#!/usr/bin/env bash
# The demo: generate text with a real model, first on one node, then on a
# ring of three nodes on this host (starter + two secondaries on 127.0.0.1).
#
#   make demo                       # ../shared/models/stories260K, or fetched from the hub
#   make demo MODEL=path/to/ckpt    # any supported checkpoint
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
MODEL=${MODEL:-}
PROMPT=${PROMPT:-Once upon a time}
if [ -z "$MODEL" ]; then
    if [ -d ../shared/models/stories260K ]; then
        MODEL=../shared/models/stories260K
    else
        # karpathy/tinyllamas keeps stories260K (llama2.c format) in a folder
        echo "../shared/models/stories260K not found: fetching karpathy/tinyllamas/stories260K from the hub"
        "$BIN/prepare_model" karpathy/tinyllamas --hub-files stories260K/stories260K.bin,stories260K/tok512.bin \
            --n-nodes 3 --out checkpoints/stories260K
        MODEL=checkpoints/stories260K/source
    fi
fi
echo "== standalone: $MODEL"
"$BIN/starter" --ckpt "$MODEL" --prompt "$PROMPT" --n-tokens 120 --temperature 0

name=demo-$(basename "$MODEL")
echo
echo "== prepare_model: 3 chunks under checkpoints/$name"
"$BIN/prepare_model" "$MODEL" --n-nodes 3 --out "checkpoints/$name"
echo
echo "== 3 nodes on 127.0.0.1 (settings-distr/config-3nodes-localhost.json), 3 samples"
logs=$(mktemp -d)
"$BIN/secondary" settings-distr/config-3nodes-localhost.json 0 >"$logs/s0.log" 2>&1 &
s0=$!
"$BIN/secondary" settings-distr/config-3nodes-localhost.json 1 >"$logs/s1.log" 2>&1 &
s1=$!
trap 'kill $s0 $s1 2>/dev/null; wait 2>/dev/null; rm -rf "$logs"' EXIT
sleep 0.5
"$BIN/starter" --ckpt "checkpoints/$name" --nodes-config settings-distr/config-3nodes-localhost.json \
    --n-samples 3 --n-tokens 120 --temperature 0.8 --prompt "$PROMPT"

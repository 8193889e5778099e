#!/usr/bin/env bash
# make_corpus.sh: writes the seed corpus of each fuzz target into
# tests/fuzz/corpus/<target>/ from real files: ../shared's stories260K (its
# config, tokenizer, safetensors header and llama2.c header), a tiny
# synthetic checkpoint made into GGUF by gguf_tool, the settings-distr
# examples, a real manifest from prepare_model, real ring frames. Seeds are
# kept small (a few KiB) so that the fuzzers mutate structure, not bulk.
# Needs the programs built (make) and /usr/bin/python3 with numpy.
set -eu
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
SHARED=${MDI_SHARED:-$(cd .. && pwd)/shared}
C=tests/fuzz/corpus
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$C"
mkdir -p $C/config $C/run_config $C/nodes_config $C/manifest $C/tokenizer $C/safetensors $C/llama2c $C/gguf $C/proto
PY=/usr/bin/python3

# a tiny checkpoint of each architecture, and GGUFs of one
for shape in tiny-llama tiny-llama3 tiny-mistral tiny-qwen2 tiny-qwen3; do
    $PY tools/gen_synthetic.py --shape $shape --layers 1 --hidden 32 --inter 32 --heads 2 --kv-heads 1 \
        --vocab 64 --max-pos 16 --out "$TMP/$shape" >/dev/null
    cp "$TMP/$shape/config.json" "$C/config/$shape.json"
done
cp "$SHARED/models/stories260K/config.json" $C/config/stories260K.json
cp "$SHARED/models/stories260K/tokenizer.json" "$TMP/tiny-llama/tokenizer.json"
"$BIN/gguf_tool" from-hf "$TMP/tiny-llama" "$TMP/f32.gguf" >/dev/null 2>&1
"$BIN/gguf_tool" from-hf "$TMP/tiny-llama" "$TMP/q8.gguf" --dtype q8_0 >/dev/null 2>&1

$PY - "$SHARED" "$TMP" "$C" <<'PYEOF'
import json, os, struct, sys
shared, tmp, C = sys.argv[1:4]

# safetensors: the tiny checkpoint, and stories260K's real header over its
# first three tensors only (offsets rebased, data present)
data = open(os.path.join(tmp, "tiny-llama", "model.safetensors"), "rb").read()
open(os.path.join(C, "safetensors", "tiny-llama.safetensors"), "wb").write(data)
raw = open(os.path.join(shared, "models/stories260K/model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
meta = hdr.pop("__metadata__", None)
names = sorted(k for k in hdr if hdr[k]["data_offsets"][1] - hdr[k]["data_offsets"][0] <= 1024)[:3]
out, body, off = {}, b"", 0
if meta: out["__metadata__"] = meta
for k in names:
    b, e = hdr[k]["data_offsets"]
    out[k] = dict(hdr[k], data_offsets=[off, off + e - b])
    body += raw[8 + n + b: 8 + n + e]
    off += e - b
h = json.dumps(out, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
open(os.path.join(C, "safetensors", "stories260K-3.safetensors"), "wb").write(struct.pack("<Q", len(h)) + h + body)

# llama2.c: stories260K's header, over a model shrunk to fit (shared and
# unshared classifier: vocab positive and negative)
dim, hidden, layers, heads, kv, vocab, seq = struct.unpack("<7i", open(
    os.path.join(shared, "models/stories260K-llama2c/stories260K.bin"), "rb").read(28))
def llama2c(dim, hidden, layers, heads, kv, vocab, seq):
    hs = dim // heads
    n = abs(vocab) * dim + layers * (dim + dim * dim + 2 * dim * kv * hs + dim * dim + dim + 3 * dim * hidden) + dim + seq * hs
    if vocab < 0: n += -vocab * dim
    return struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq) + struct.pack("<%df" % n, *([0.01] * n))
open(os.path.join(C, "llama2c", "stories260K-header.bin"), "wb").write(struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq))
open(os.path.join(C, "llama2c", "shared.bin"), "wb").write(llama2c(8, 8, 1, 2, 1, 8, 4))
open(os.path.join(C, "llama2c", "unshared.bin"), "wb").write(llama2c(8, 8, 1, 2, 2, -8, 4))

# tokenizers: stories260K's, and the byte-level BPE ones cut to 300 tokens
# and 200 merges (their pre-tokenizers, decoders and added tokens kept)
open(os.path.join(C, "tokenizer", "stories260K.json"), "wb").write(
    open(os.path.join(shared, "models/stories260K/tokenizer.json"), "rb").read())
for name in ("llama3", "qwen3", "mistral", "llama2"):
    p = os.path.join(shared, "tokenizers", name, "tokenizer.json")
    if not os.path.exists(p): continue
    t = json.load(open(p))
    m = t.get("model", {})
    if isinstance(m.get("vocab"), dict):
        keep = sorted(m["vocab"].items(), key=lambda kv: kv[1])[:300]
        m["vocab"] = dict(keep)
        kept = set(m["vocab"])
        merges = []
        for mg in m.get("merges", []):
            a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
            if a in kept and b in kept and a + b in kept: merges.append(mg)
            if len(merges) >= 200: break
        m["merges"] = merges
    t["added_tokens"] = [a for a in t.get("added_tokens", [])][:8]
    for a in t["added_tokens"]:
        a["id"] = min(a["id"], 299)
    json.dump(t, open(os.path.join(C, "tokenizer", name + ".json"), "w"))

# run configuration: what a starter posts for stories260K, secondary 0 of 2
cfg = json.load(open(os.path.join(shared, "models/stories260K/config.json")))
rc = {"role": "secondary", "node_index": 0, "n_nodes": 3, "model": "stories260K", "model_config": cfg,
      "layers": [2, 4], "dtype": "auto", "wire_dtype": "bf16", "kv_dtype": "f16", "mmap": False, "mlock": False,
      "n_samples": 3, "max_seq": 256, "max_batch": 64, "is_last": False,
      "prev": {"addr": "127.0.0.1", "port": 9000}, "next": {"addr": "127.0.0.1", "port": 9002},
      "chunk_sha256": "ab" * 32, "chunk_size": 548344, "timeout_s": 10.0}
json.dump(rc, open(os.path.join(C, "run_config", "stories260K.json"), "w"))
cfg2 = json.load(open(os.path.join(tmp, "tiny-llama3", "config.json")))
json.dump(dict(rc, model_config=cfg2, layers=[0, 1], wire_dtype="q8_0", dtype="q4_0", is_last=True),
          open(os.path.join(C, "run_config", "tiny-llama3.json"), "w"))

# ring frames: mode byte, then HELLO, DATA (f32 and bf16 rows of 64),
# RELEASE, STOP, ERROR as a node sends them
def frame(typ, sid=0, pos=0, n=0, dt=0, flags=0, payload=b"", seq=0):
    return struct.pack("<IHHIIIHHQII", 0x5249444D, 1, typ, sid, pos, n, dt, flags, len(payload), seq, 0) + payload
stream = frame(1, 0, payload=b"") + frame(2, 1, 0, 2, 0, 1, struct.pack("<128f", *([0.5] * 128)), 1) \
    + frame(2, 2, 5, 1, 2, 1, b"\x80\x3f" * 64, 2) + frame(3, 1, seq=3) + frame(5, payload=b"node 2: out of memory", seq=4) \
    + frame(4, seq=5)
open(os.path.join(C, "proto", "frames"), "wb").write(b"\x06" + stream)
open(os.path.join(C, "proto", "frames-nolimits"), "wb").write(b"\x00" + stream)
open(os.path.join(C, "proto", "hello-open"), "wb").write(b"\x01" + frame(1, 1))
open(os.path.join(C, "proto", "hello-secret"), "wb").write(b"\x03" + frame(1, 1, payload=b"s3cret"))
open(os.path.join(C, "proto", "hello-wrong"), "wb").write(b"\x03" + frame(1, 1, payload=b"guess"))
# with a secret: the challenge (meant for node 1, from node 0) and a proof
open(os.path.join(C, "proto", "hello-sealed"), "wb").write(
    b"\x07" + frame(1, 0, flags=2, payload=struct.pack("<I", 1) + bytes(range(32))) + frame(1, 0, flags=2, payload=b"\x11" * 32))
# frames read through a sealed channel (they fail their tag)
open(os.path.join(C, "proto", "frames-sealed"), "wb").write(b"\x0e" + stream)
PYEOF

for f in "$TMP/f32.gguf" "$TMP/q8.gguf"; do cp "$f" "$C/gguf/"; done
cp settings-distr/config-*.json $C/nodes_config/
echo '{"addr": "10.0.0.2", "communication": {"starter_addr": "10.0.0.1", "port": 8089}, "inference": {"port_in": 5089, "port_out": 5090}}' \
    >$C/nodes_config/per-node.json

"$BIN/prepare_model" "$SHARED/models/stories260K" --n-nodes 3 --out "$TMP/ck" --no-progress >/dev/null 2>&1
cp "$TMP/ck/chunks/3nodes/manifest.json" $C/manifest/stories260K-3nodes.json
chmod -R u+w,go+r $C
du -sh $C/* | sed 's/^/corpus /'

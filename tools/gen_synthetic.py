#!/usr/bin/python3
"""gen_synthetic: writes a random-weight ("synthetic") checkpoint in Hugging
Face layout, with the exact shapes and config.json fields of a real model
family, for tests and benchmarks where the real weights are not at hand.

    tools/gen_synthetic.py --shape tinyllama-1.1b --dtype bf16 --out DIR
    tools/gen_synthetic.py --shape tiny-llama --dtype f32 --shard-size 4MB --out DIR

The folder it writes:

    DIR/config.json                     the family's real fields, "_synthetic": true
    DIR/generation_config.json          bos/eos as the family has them
    DIR/model.safetensors               or model-0000K-of-0000N.safetensors
    DIR/model.safetensors.index.json    (sharded only) {"metadata", "weight_map"}
    DIR/tokenizer.json                  copied from the shared tokenizer
    DIR/tokenizer_config.json

A safetensors file, written by hand:

    +----------+---------------------------------+------------------------+
    | u64 LE N | N bytes JSON header, space pad  | raw little-endian data |
    +----------+---------------------------------+------------------------+
    header: {"__metadata__": {"format": "pt", "synthetic": "true"},
             "name": {"dtype": "F32"|"BF16"|"F16", "shape": [...],
                      "data_offsets": [begin, end]}, ...}   offsets from data start

Weights are N(0, std) (std 0.02 for the real shapes, larger for the tiny test
shapes so that attention is peaked and RoPE matters); norm weights are 1 plus
small noise; biases N(0, std). Tensors are drawn and written in row chunks, so
a 1B-class checkpoint never needs more than one chunk in memory. BF16 is the
round-to-nearest-even upper half of the F32 value.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

LLAMA3_ROPE = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
               "original_max_position_embeddings": 8192, "rope_type": "llama3"}

# Shapes. "family" selects the config.json template; "tokenizer" the folder
# under <shared>/tokenizers. The real shapes are those of the published models.
SHAPES = {
    "tinyllama-1.1b": dict(family="llama", hidden=2048, inter=5632, layers=22,
                           heads=32, kv_heads=4, head_dim=None, vocab=32000,
                           tied=False, theta=10000.0, eps=1e-5, max_pos=2048,
                           rope_scaling=None, tokenizer="llama2", bos=1, eos=2,
                           std=0.02),
    "llama3.2-1b": dict(family="llama", hidden=2048, inter=8192, layers=16,
                        heads=32, kv_heads=8, head_dim=64, vocab=128256,
                        tied=True, theta=500000.0, eps=1e-5, max_pos=131072,
                        rope_scaling=LLAMA3_ROPE, tokenizer="llama3",
                        bos=128000, eos=[128001, 128008, 128009], std=0.02),
    "qwen2.5-0.5b": dict(family="qwen2", hidden=896, inter=4864, layers=24,
                         heads=14, kv_heads=2, head_dim=None, vocab=151936,
                         tied=True, theta=1000000.0, eps=1e-6, max_pos=32768,
                         rope_scaling=None, tokenizer="qwen3", bos=None,
                         eos=151643, std=0.02),
    # Small test shapes with the real vocabularies.
    "tiny-llama": dict(family="llama", hidden=64, inter=160, layers=3,
                       heads=4, kv_heads=2, head_dim=None, vocab=32000,
                       tied=False, theta=10000.0, eps=1e-5, max_pos=2048,
                       rope_scaling=None, tokenizer="llama2", bos=1, eos=2,
                       std=0.25),
    "tiny-qwen2": dict(family="qwen2", hidden=32, inter=96, layers=2,
                       heads=4, kv_heads=2, head_dim=None, vocab=151936,
                       tied=True, theta=1000000.0, eps=1e-6, max_pos=32768,
                       rope_scaling=None, tokenizer="qwen3", bos=None,
                       eos=151643, std=0.3),
    # The original context is shrunk to 64 positions so that a test prompt of
    # a few dozen tokens already sees all three bands of the llama3 frequency
    # scaling (unchanged, smoothed, divided by factor); head_dim 16 gives
    # wavelengths from 6 to 1e5 positions.
    "tiny-llama3": dict(family="llama", hidden=64, inter=128, layers=2,
                        heads=4, kv_heads=2, head_dim=16, vocab=128256,
                        tied=True, theta=500000.0, eps=1e-5, max_pos=131072,
                        rope_scaling=dict(LLAMA3_ROPE,
                                          original_max_position_embeddings=64),
                        tokenizer="llama3", bos=128000,
                        eos=[128001, 128008, 128009], std=0.25),
    # Qwen3: qwen2's layout without biases, with an RMSNorm on each q and k
    # head, and a head_dim apart from hidden / heads.
    "tiny-qwen3": dict(family="qwen3", hidden=64, inter=128, layers=2,
                       heads=4, kv_heads=2, head_dim=32, vocab=151936,
                       tied=True, theta=1000000.0, eps=1e-6, max_pos=40960,
                       rope_scaling=None, tokenizer="qwen3", bos=None,
                       eos=151645, std=0.25),
    # Mistral: llama's layout with a sliding attention window; the window is
    # shrunk to 16 positions so that a test prompt of 40 tokens crosses it.
    "tiny-mistral": dict(family="mistral", hidden=64, inter=160, layers=2,
                         heads=4, kv_heads=2, head_dim=None, vocab=32000,
                         tied=False, theta=10000.0, eps=1e-5, max_pos=32768,
                         rope_scaling=None, tokenizer="mistral", bos=1, eos=2,
                         std=0.25, sliding_window=16),
}

DTYPES = {"f32": ("F32", 4), "bf16": ("BF16", 2), "f16": ("F16", 2)}
TORCH_DTYPE = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def config_json(s, dtype):
    """The config.json of the family with the shape's numbers."""
    hd = s["head_dim"]
    if s["family"] in ("llama", "mistral"):
        c = {
            "architectures": ["MistralForCausalLM" if s["family"] == "mistral" else "LlamaForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": s["bos"],
            "eos_token_id": s["eos"],
        }
        if hd is not None:
            c["head_dim"] = hd
        c.update({
            "hidden_act": "silu",
            "hidden_size": s["hidden"],
            "initializer_range": 0.02,
            "intermediate_size": s["inter"],
            "max_position_embeddings": s["max_pos"],
            "mlp_bias": False,
            "model_type": s["family"],
            "num_attention_heads": s["heads"],
            "num_hidden_layers": s["layers"],
            "num_key_value_heads": s["kv_heads"],
            "pretraining_tp": 1,
            "rms_norm_eps": s["eps"],
            "rope_scaling": s["rope_scaling"],
            "rope_theta": s["theta"],
            "tie_word_embeddings": s["tied"],
            "torch_dtype": TORCH_DTYPE[dtype],
            "use_cache": True,
            "vocab_size": s["vocab"],
        })
        if s["family"] == "mistral":
            for k in ("attention_bias", "mlp_bias", "pretraining_tp"):
                c.pop(k, None)
            c["sliding_window"] = s["sliding_window"]
    else:
        c = {
            "architectures": ["Qwen3ForCausalLM" if s["family"] == "qwen3" else "Qwen2ForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": s["bos"],
            "eos_token_id": s["eos"],
        }
        if hd is not None:
            c["head_dim"] = hd
        c.update({
            "hidden_act": "silu",
            "hidden_size": s["hidden"],
            "initializer_range": 0.02,
            "intermediate_size": s["inter"],
            "max_position_embeddings": s["max_pos"],
            "max_window_layers": s["layers"],
            "model_type": s["family"],
            "num_attention_heads": s["heads"],
            "num_hidden_layers": s["layers"],
            "num_key_value_heads": s["kv_heads"],
            "rms_norm_eps": s["eps"],
        })
        if s["rope_scaling"] is not None:
            c["rope_scaling"] = s["rope_scaling"]
        if s["family"] == "qwen3":
            c["attention_bias"] = False
        c.update({
            "rope_theta": s["theta"],
            "sliding_window": s["max_pos"],
            "tie_word_embeddings": s["tied"],
            "torch_dtype": TORCH_DTYPE[dtype],
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": s["vocab"],
        })
    c["_synthetic"] = True
    return c


def generation_config_json(s):
    g = {"bos_token_id": s["bos"], "eos_token_id": s["eos"]}
    if s["family"] == "llama" and s["tokenizer"] == "llama2":
        g.update({"max_length": s["max_pos"], "pad_token_id": 0})
    else:
        g["do_sample"] = False
    g["_synthetic"] = True
    return g


def tensor_list(s):
    """(name, shape, kind) in the order the Hugging Face exporter writes them;
    kind is "w" (matrix), "norm" or "bias"."""
    d, hid = s["hidden"], s["inter"]
    hd = s["head_dim"] or d // s["heads"]
    qd, kvd = s["heads"] * hd, s["kv_heads"] * hd
    out = [("model.embed_tokens.weight", (s["vocab"], d), "w")]
    for i in range(s["layers"]):
        p = "model.layers.%d." % i
        out += [
            (p + "input_layernorm.weight", (d,), "norm"),
            (p + "self_attn.q_proj.weight", (qd, d), "w"),
            (p + "self_attn.k_proj.weight", (kvd, d), "w"),
            (p + "self_attn.v_proj.weight", (kvd, d), "w"),
        ]
        if s["family"] == "qwen2":
            out += [
                (p + "self_attn.q_proj.bias", (qd,), "bias"),
                (p + "self_attn.k_proj.bias", (kvd,), "bias"),
                (p + "self_attn.v_proj.bias", (kvd,), "bias"),
            ]
        if s["family"] == "qwen3":
            out += [
                (p + "self_attn.q_norm.weight", (hd,), "norm"),
                (p + "self_attn.k_norm.weight", (hd,), "norm"),
            ]
        out += [
            (p + "self_attn.o_proj.weight", (d, qd), "w"),
            (p + "post_attention_layernorm.weight", (d,), "norm"),
            (p + "mlp.gate_proj.weight", (hid, d), "w"),
            (p + "mlp.up_proj.weight", (hid, d), "w"),
            (p + "mlp.down_proj.weight", (d, hid), "w"),
        ]
    out.append(("model.norm.weight", (d,), "norm"))
    if not s["tied"]:
        out.append(("lm_head.weight", (s["vocab"], d), "w"))
    return out


def f32_to_bf16_bits(a):
    """Round-to-nearest-even of float32 values to bfloat16, as uint16 bits."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return r.astype(np.uint16)


def encode(a, dtype):
    if dtype == "f32":
        return a.astype("<f4", copy=False).tobytes()
    if dtype == "bf16":
        return f32_to_bf16_bits(a).astype("<u2", copy=False).tobytes()
    return a.astype("<f2").tobytes()


CHUNK_ELEMS = 1 << 23   # 8M values (32 MB of f32) drawn at a time


def write_tensor(f, rng, shape, kind, std, dtype):
    """Draws the tensor row chunk by row chunk and appends it to f."""
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, CHUNK_ELEMS // cols)
    for r in range(0, rows, step):
        n = min(step, rows - r) * cols
        a = rng.standard_normal(n, dtype=np.float32)
        if kind == "norm":
            a *= np.float32(0.05)
            a += np.float32(1.0)
        else:
            a *= np.float32(std)
        f.write(encode(a, dtype))


def header_bytes(entries, dtype):
    """Safetensors header for [(name, shape)] laid out back to back."""
    st_dtype, size = DTYPES[dtype]
    h = {"__metadata__": {"format": "pt", "synthetic": "true"}}
    off = 0
    for name, shape in entries:
        n = int(np.prod(shape)) * size
        h[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    js = json.dumps(h, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 8)   # data starts 8-aligned, as the reference writer does
    return len(js).to_bytes(8, "little") + js, off


def parse_size(text):
    t = text.strip().upper().rstrip("B")
    mult = 1
    for suf, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if t.endswith(suf):
            t, mult = t[:-1], m
            break
    return int(float(t) * mult)


def shared_dir():
    if os.environ.get("MDI_SHARED"):
        return os.environ["MDI_SHARED"]
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "..", "shared"), "/work/shared"):
        if os.path.isdir(os.path.join(cand, "tokenizers")):
            return os.path.abspath(cand)
    return os.path.abspath(os.path.join(here, "..", "..", "shared"))


def main():
    ap = argparse.ArgumentParser(description="Write a synthetic (random-weight) checkpoint in Hugging Face layout.")
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--dtype", default="f32", choices=sorted(DTYPES), help="storage dtype of matrices, norms and biases")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--shard-size", default=None, help="largest shard, e.g. 4MB or 2GB; writes model.safetensors.index.json")
    ap.add_argument("--std", type=float, default=None, help="weight standard deviation (default by shape)")
    for k in ("layers", "hidden", "inter", "heads", "kv-heads", "head-dim", "vocab", "max-pos"):
        ap.add_argument("--" + k, type=int, default=None, help="override the shape's " + k)
    ap.add_argument("--tied", choices=("0", "1"), default=None, help="override tied embeddings")
    ap.add_argument("--rope-theta", type=float, default=None)
    ap.add_argument("--print-bytes", action="store_true", help="print the bytes of tensor data it would write, and exit")
    a = ap.parse_args()

    s = dict(SHAPES[a.shape])
    for k in ("layers", "hidden", "inter", "heads", "kv_heads", "head_dim", "vocab", "max_pos"):
        v = getattr(a, k)
        if v is not None:
            s[k] = v
    if a.tied is not None:
        s["tied"] = a.tied == "1"
    if a.rope_theta is not None:
        s["theta"] = a.rope_theta
    if a.std is not None:
        s["std"] = a.std
    if s["heads"] % s["kv_heads"]:
        sys.exit("gen_synthetic: heads (%d) must be a multiple of kv heads (%d)" % (s["heads"], s["kv_heads"]))
    if s["head_dim"] is None and s["hidden"] % s["heads"]:
        sys.exit("gen_synthetic: hidden %d not divisible by heads %d; give --head-dim" % (s["hidden"], s["heads"]))
    if (s["head_dim"] or s["hidden"] // s["heads"]) % 2:
        sys.exit("gen_synthetic: head_dim must be even for RoPE")

    tensors = tensor_list(s)
    size = DTYPES[a.dtype][1]
    if a.print_bytes:
        print(sum(int(np.prod(sh)) for _, sh, _ in tensors) * size)
        return
    os.makedirs(a.out, exist_ok=True)

    # Group tensors into shards no larger than shard_size (a tensor bigger
    # than that gets a shard of its own).
    shards = [[]]
    if a.shard_size:
        limit, used = parse_size(a.shard_size), 0
        for t in tensors:
            n = int(np.prod(t[1])) * size
            if shards[-1] and used + n > limit:
                shards.append([])
                used = 0
            shards[-1].append(t)
            used += n
    else:
        shards[0] = tensors

    # Remove what a previous run with a different sharding left behind.
    for fn in os.listdir(a.out):
        if fn.startswith("model") and (fn.endswith(".safetensors") or fn.endswith(".safetensors.index.json")):
            os.remove(os.path.join(a.out, fn))

    rng = np.random.default_rng(a.seed)
    weight_map, total = {}, 0
    for k, group in enumerate(shards):
        fn = "model.safetensors" if not a.shard_size else \
            "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        hdr, nbytes = header_bytes([(n, sh) for n, sh, _ in group], a.dtype)
        tmp = os.path.join(a.out, fn + ".tmp")
        with open(tmp, "wb") as f:
            f.write(hdr)
            for name, shape, kind in group:
                write_tensor(f, rng, shape, kind, s["std"], a.dtype)
                weight_map[name] = fn
        os.replace(tmp, os.path.join(a.out, fn))
        total += nbytes
    if a.shard_size:
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total, "synthetic": "true"},
                       "weight_map": weight_map}, f, indent=2)
            f.write("\n")

    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config_json(s, a.dtype), f, indent=2)
        f.write("\n")
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump(generation_config_json(s), f, indent=2)
        f.write("\n")
    tokdir = os.path.join(shared_dir(), "tokenizers", s["tokenizer"])
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(tokdir, fn)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(a.out, fn))
        else:
            print("gen_synthetic: warning: %s not found; no tokenizer copied" % src, file=sys.stderr)
    n_params = sum(int(np.prod(sh)) for _, sh, _ in tensors)
    print("gen_synthetic: %s %s: %d parameters, %d bytes in %d file(s) -> %s (synthetic)"
          % (a.shape, a.dtype, n_params, total, len(shards), a.out))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""export_llama2c: converts a Hugging Face layout Llama checkpoint into the
legacy (version 0) checkpoint of llama2.c's run.c and a tokenizer.bin for its
vocabulary, so that the same weights can be run by both engines.

    tools/export_llama2c.py --ckpt DIR --out model.bin [--tokenizer-out tok.bin]
                            [--seq-len N]

Input: DIR/config.json and DIR/model.safetensors (or the shards listed in
DIR/model.safetensors.index.json), tensors stored as F32, BF16 or F16, read by
hand (numpy only) through a memory map, one tensor at a time.

Output, model.bin (little endian, every array float32, row major):

    +---------------------------------------------------------------------+
    | int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,    |
    |       seq_len             vocab_size < 0: classifier untied, at end  |
    +---------------------------------------------------------------------+
    | token_embedding (vocab, dim)                                         |
    | rms_att (L, dim) | wq (L, dim, dim) | wk (L, kv_dim, dim)            |
    | wv (L, kv_dim, dim) | wo (L, dim, dim)                               |
    | rms_ffn (L, dim) | w1 (L, hidden, dim) | w2 (L, dim, hidden)         |
    | w3 (L, hidden, dim) | rms_final (dim)                                |
    | freq_cis_real (seq_len, head_size/2) | freq_cis_imag (same)          |
    | [wcls (vocab, dim)]                                                  |
    +---------------------------------------------------------------------+

Hugging Face stores the rows of q and k for rotate-half rotary embeddings,
llama2.c for interleaved pairs; within a head of size hd,

    HF row h*hd + p*hd/2 + i  <-  llama2.c row h*hd + 2*i + p   (p in {0, 1})

so the export applies the inverse permutation to wq and wk.

Output, tokenizer.bin:

    int32 max_token_length, then per token: float32 score, int32 len, bytes

Pieces are decoded to bytes ('\u2581' becomes a space for SentencePiece
vocabularies, the GPT-2 byte alphabet is undone for byte-level ones); BOS and
EOS are written as "\\n<s>\\n" and "\\n</s>\\n" as llama2.c's own tokenizer.py
does. Special and byte-fallback tokens score 0, every other piece -rank (its
merge priority), which is what SentencePiece BPE models hold; pieces the
merge list ranks out of id order score -1e9 (see export_tokenizer).

llama2.c computes rotary embeddings with theta 10000 and head_size =
dim / n_heads and has no attention biases: the exporter refuses checkpoints
it could not represent and warns where run.c would compute something else.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

ST_DTYPES = {"F32": ("<f4", 4), "BF16": ("<u2", 2), "F16": ("<f2", 2)}


class SafeTensors:
    """The tensors of one checkpoint, by name, read through memory maps."""

    def __init__(self, ckpt):
        index = os.path.join(ckpt, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self.tensors = {}
        for name in files:
            self._open(os.path.join(ckpt, name))

    def _open(self, path):
        # A safetensors file: u64 LE header length N, N bytes of JSON, data.
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        data = np.memmap(path, dtype=np.uint8, mode="r")
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in ST_DTYPES:
                raise SystemExit("%s: tensor %s has dtype %s (F32, BF16 or F16 expected)"
                                 % (path, name, info["dtype"]))
            begin, end = info["data_offsets"]
            self.tensors[name] = (data, base + begin, base + end, info["dtype"], info["shape"])

    def has(self, name):
        return name in self.tensors

    def get(self, name, shape):
        """The tensor as a float32 array of the given shape."""
        if name not in self.tensors:
            raise SystemExit("checkpoint has no tensor %s" % name)
        data, begin, end, dtype, stored = self.tensors[name]
        if list(stored) != list(shape):
            raise SystemExit("tensor %s has shape %s, %s expected" % (name, stored, list(shape)))
        np_dtype, size = ST_DTYPES[dtype]
        count = int(np.prod(shape))
        if end - begin != count * size:
            raise SystemExit("tensor %s: %d bytes for %d values" % (name, end - begin, count))
        raw = data[begin:end].view(np_dtype)
        if dtype == "BF16":
            # A bfloat16 is the upper half of the float32 with the same bits.
            a = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            a = raw.astype(np.float32)
        return a.reshape(shape)


def unpermute_rotary(w, n_heads, head_dim):
    """HF rotate-half rows -> llama2.c interleaved rows: (n_heads*hd, cols)."""
    cols = w.shape[1]
    return (w.reshape(n_heads, 2, head_dim // 2, cols)
             .transpose(0, 2, 1, 3)
             .reshape(n_heads * head_dim, cols))


def write_f32(f, a):
    f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


def export_model(ckpt, cfg, out_path, seq_len):
    dim = cfg["hidden_size"]
    hidden = cfg["intermediate_size"]
    n_layers = cfg["num_hidden_layers"]
    n_heads = cfg["num_attention_heads"]
    n_kv_heads = cfg.get("num_key_value_heads") or n_heads
    vocab = cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or dim // n_heads
    kv_dim = n_kv_heads * head_dim
    theta = float(cfg.get("rope_theta", 10000.0))

    if head_dim * n_heads != dim:
        raise SystemExit("head_dim %d x %d heads != hidden %d: llama2.c assumes head_size = dim / n_heads"
                         % (head_dim, n_heads, dim))
    if theta != 10000.0:
        print("export_llama2c: warning: rope_theta %g, run.c uses 10000" % theta, file=sys.stderr)
    if cfg.get("rope_scaling"):
        print("export_llama2c: warning: rope_scaling is not applied by run.c", file=sys.stderr)

    st = SafeTensors(ckpt)
    biases = sorted(n for n in st.tensors if n.endswith(".bias"))
    if biases:
        raise SystemExit("%s has biases (%s, ...): llama2.c has none" % (ckpt, biases[0]))
    tied = bool(cfg.get("tie_word_embeddings", False)) or not st.has("lm_head.weight")
    layer = "model.layers.%d."

    with open(out_path, "wb") as f:
        f.write(struct.pack("<7i", dim, hidden, n_layers, n_heads, n_kv_heads,
                            vocab if tied else -vocab, seq_len))
        write_f32(f, st.get("model.embed_tokens.weight", (vocab, dim)))
        for name, shape, heads in (
                ("input_layernorm.weight", (dim,), 0),
                ("self_attn.q_proj.weight", (dim, dim), n_heads),
                ("self_attn.k_proj.weight", (kv_dim, dim), n_kv_heads),
                ("self_attn.v_proj.weight", (kv_dim, dim), 0),
                ("self_attn.o_proj.weight", (dim, dim), 0),
                ("post_attention_layernorm.weight", (dim,), 0),
                ("mlp.gate_proj.weight", (hidden, dim), 0),
                ("mlp.down_proj.weight", (dim, hidden), 0),
                ("mlp.up_proj.weight", (hidden, dim), 0)):
            for l in range(n_layers):
                w = st.get(layer % l + name, shape)
                write_f32(f, unpermute_rotary(w, heads, head_dim) if heads else w)
        write_f32(f, st.get("model.norm.weight", (dim,)))
        # The rotary table as llama2.c's model.py computes it: frequencies and
        # angles in float32, cos and sin rounded from double (torch's float32
        # cos differs in the last bit at some entries). run.c recomputes the
        # table and skips these arrays.
        freqs = np.float32(1.0) / (np.float32(theta) ** (
            np.arange(0, head_dim, 2, dtype=np.float32)[: head_dim // 2] / np.float32(head_dim)))
        angles = np.outer(np.arange(seq_len, dtype=np.float32), freqs).astype(np.float64)
        write_f32(f, np.cos(angles))
        write_f32(f, np.sin(angles))
        if not tied:
            write_f32(f, st.get("lm_head.weight", (vocab, dim)))
    return tied


def byte_level_decoder():
    """GPT-2's byte alphabet: printable stand-in character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def export_tokenizer(ckpt, cfg, out_path):
    with open(os.path.join(ckpt, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    if model.get("type") != "BPE":
        raise SystemExit("tokenizer.json model type %s: only BPE is exported" % model.get("type"))
    vocab = cfg["vocab_size"]
    pieces = {}
    for piece, i in model["vocab"].items():
        pieces[i] = piece
    special = set()
    for added in tok.get("added_tokens", []):
        pieces[added["id"]] = added["content"]
        if added.get("special"):
            special.add(added["id"])
    byte_level = "ByteLevel" in json.dumps(tok.get("decoder") or {})
    unbyte = byte_level_decoder() if byte_level else None
    bos = cfg.get("bos_token_id")
    eos = cfg.get("eos_token_id")
    eos = set(eos if isinstance(eos, list) else [eos])

    # The Hugging Face converter writes merges in SentencePiece score order,
    # so a piece whose first merge comes after that of the next merged piece
    # in id order had a far lower score than its id says (Llama 2's runs of
    # spaces, scored -1e9): keep them out of the way of run.c's merging.
    first_merge = {}
    for r, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        first_merge.setdefault(a + b, r)
    merged = [i for i in sorted(pieces) if pieces[i] in first_merge]
    demoted = set(i for i, j in zip(merged, merged[1:])
                  if first_merge[pieces[i]] > first_merge[pieces[j]])

    entries = []
    rank = 0
    for i in range(vocab):
        piece = pieces.get(i)
        if piece is None:
            # run.c reads exactly vocab_size entries and cannot read an empty one.
            entries.append((0.0, ("<pad_%d>" % i).encode()))
            continue
        if i == bos:
            entries.append((0.0, b"\n<s>\n"))
        elif i in eos and not byte_level:
            entries.append((0.0, b"\n</s>\n"))
        elif i in special:
            entries.append((0.0, piece.encode("utf-8")))
        elif (not byte_level and len(piece) == 6 and piece.startswith("<0x")
              and piece.endswith(">")):
            entries.append((0.0, piece.encode("utf-8")))
        elif i in demoted:
            entries.append((-1e9, piece.replace("\u2581", " ").encode("utf-8")))
            rank += 1
        else:
            if byte_level:
                data = bytes(unbyte.get(c, 0x3f) for c in piece)
            else:
                data = piece.replace("\u2581", " ").encode("utf-8")
            entries.append((-float(rank), data))
            rank += 1
    max_len = max(len(b) for _, b in entries)
    with open(out_path, "wb") as f:
        f.write(struct.pack("<i", max_len))
        for score, data in entries:
            # The first ranked piece scores -0.0, as in SentencePiece's own files.
            f.write(struct.pack("<fi", score, len(data)))
            f.write(data)


def main():
    ap = argparse.ArgumentParser(description="Export a Hugging Face Llama checkpoint to llama2.c's legacy .bin.")
    ap.add_argument("--ckpt", required=True, help="Hugging Face checkpoint folder")
    ap.add_argument("--out", required=True, help="llama2.c checkpoint to write")
    ap.add_argument("--tokenizer-out", default=None, help="llama2.c tokenizer.bin to write")
    ap.add_argument("--seq-len", type=int, default=None,
                    help="context written in the header (default: max_position_embeddings)")
    args = ap.parse_args()

    with open(os.path.join(args.ckpt, "config.json")) as f:
        cfg = json.load(f)
    seq_len = args.seq_len or cfg.get("max_position_embeddings") or 2048
    tied = export_model(args.ckpt, cfg, args.out, seq_len)
    print("export_llama2c: wrote %s (%d bytes, %s classifier, seq_len %d)"
          % (args.out, os.path.getsize(args.out), "tied" if tied else "untied", seq_len))
    if args.tokenizer_out:
        export_tokenizer(args.ckpt, cfg, args.tokenizer_out)
        print("export_llama2c: wrote %s" % args.tokenizer_out)


if __name__ == "__main__":
    main()

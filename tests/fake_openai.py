#!/usr/bin/env python3
"""fake_openai: an OpenAI-compatible completion server whose streams are
right or wrong on purpose, for tests/e2e_bench_load.sh. The prompt names
what /v1/completions does (max_tokens from the request):

  ok        one chunk per token, a finish chunk, a usage chunk, [DONE] (ours)
  llama     llama-server's shape: timings.predicted_n in every chunk, one
            chunk carrying two tokens, usage in the finish chunk, [DONE]
  short     one token fewer than max_tokens, finish_reason "stop"
  cut       half the tokens, then the connection closes (no finish, no [DONE])
  lie       one chunk more than usage.completion_tokens says
  errevent  one token, then an error event
  http500   status 500 with an error body

  fake_openai.py PORT_FILE    listens on a free port of 127.0.0.1 and writes it to PORT_FILE
"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def send(self, obj):
        data = obj if isinstance(obj, str) else json.dumps(obj)
        self.wfile.write(("data: %s\n\n" % data).encode())
        self.wfile.flush()
        time.sleep(0.002)

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode, n = req["prompt"], int(req["max_tokens"])
        if mode == "http500":
            body = b'{"error": {"message": "boom", "type": "server_error", "code": 500}}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = lambda text, fin=None: {"object": "text_completion", "choices": [
            {"text": text, "index": 0, "finish_reason": fin}]}
        usage = lambda k: {"completion_tokens": k, "prompt_tokens": 3, "total_tokens": k + 3}
        if mode == "llama":
            i = 0
            while i < n:
                k = 2 if i == 1 and n >= 3 else 1
                i += k
                c = chunk(" w%d" % i)
                c["timings"] = {"predicted_n": i}
                self.send(c)
            c = chunk("", "length")
            c["usage"] = usage(n)
            self.send(c)
            self.send("[DONE]")
            return
        k = {"ok": n, "short": n - 1, "cut": n // 2, "lie": n + 1, "errevent": 1}[mode]
        for i in range(k):
            self.send(chunk(" w%d" % i))
        if mode == "cut":
            return
        if mode == "errevent":
            self.send({"error": {"message": "a node failed", "type": "server_error", "code": 503}})
            self.send("[DONE]")
            return
        self.send(chunk("", "stop" if mode == "short" else "length"))
        self.send({"object": "text_completion", "choices": [], "usage": usage(n if mode == "lie" else k)})
        self.send("[DONE]")


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as f:
    f.write(str(srv.server_address[1]))
srv.serve_forever()

#!/usr/bin/python3
"""
hub_server: a stand-in for the Hugging Face hub that serves local folders in
the hub's file layout, for tests/test_hub.c.

    GET|HEAD /{owner}/{name}/resolve/{revision}/{path}

Repositories come from --map owner/name=/folder (repeatable); only revision
"main" exists. Every file is answered with ETag and X-Linked-ETag = quoted
sha256 of the file and X-Linked-Size = its size, like the hub's LFS files.
"Range: bytes=N-" and "bytes=N-M" get 206 with Content-Range, or 416 with
"Content-Range: bytes */size" past the end.

Faults, for the client's error paths:
  --token T          requests without "Authorization: Bearer T" get 401
  --drop-after N     the first full GET of each file larger than N bytes
                     sends N bytes of the body, then closes the connection
  --stall-after N    the same, but stalls 60 s instead of closing
  --ignore-range     answers Range requests with 200 and the whole file
  --wrong-size PATH  advertises X-Linked-Size = size + 1000 for that path
                     inside any repo (the body is right, the claim is not)
  --redirect         answers resolve URLs like the hub does for LFS files:
                     302 to /cdn/{owner}/{name}/{path} with X-Linked-Size
                     and X-Linked-ETag; the /cdn/ URL serves the bytes with
                     an ETag that is not a sha256 and no X-Linked headers
  --log FILE         appends one line per request:
                     "METHOD /path range=<Range or -> auth=<yes|no> status"

--port 0 binds a free port on 127.0.0.1; the first line of stdout is the port.
"""
import argparse
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

ARGS = None
LOCK = threading.Lock()
FAULTED = set()   # files whose first full GET already got --drop/--stall-after
SHA = {}          # (path, mtime, size) -> sha256 hex


def sha256_of(path):
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    with LOCK:
        if key in SHA:
            return SHA[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    with LOCK:
        SHA[key] = h.hexdigest()
    return SHA[key]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: drops are clean

    def log_message(self, fmt, *args):
        pass

    def note(self, status):
        if not ARGS.log:
            return
        line = "%s %s range=%s auth=%s %d\n" % (
            self.command, self.path, self.headers.get("Range", "-"),
            "yes" if self.headers.get("Authorization") else "no", status)
        with LOCK:
            with open(ARGS.log, "a") as f:
                f.write(line)

    def error(self, status, code, message):
        body = json.dumps({"error": message}).encode()
        self.note(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def resolve(self):
        """Returns (repo-relative path, local file, cdn) or None after an
        error; cdn is True for /cdn/ URLs."""
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        if len(parts) >= 5 and parts[1] == "cdn":
            # "", "cdn", owner, name, path...: the CDN checks no token
            parts = [urllib.parse.unquote(p) for p in parts]
            repo = parts[2] + "/" + parts[3]
            rel = "/".join(parts[4:])
            local = os.path.join(ARGS.maps.get(repo, "/nonexistent"), rel)
            if ".." in parts or not os.path.isfile(local):
                self.error(404, "EntryNotFound", "Entry not found")
                return None
            return rel, local, True
        if ARGS.token is not None:
            if self.headers.get("Authorization") != "Bearer " + ARGS.token:
                self.error(401, "GatedRepo", "Access to this repository is restricted")
                return None
        # "", owner, name, "resolve", revision, path...
        if len(parts) < 6 or parts[3] != "resolve":
            self.error(404, "EntryNotFound", "Not a resolve URL")
            return None
        parts = [urllib.parse.unquote(p) for p in parts]
        repo = parts[1] + "/" + parts[2]
        if repo not in ARGS.maps:
            self.error(404, "RepoNotFound", "Repository not found")
            return None
        if parts[4] != "main":
            self.error(404, "RevisionNotFound", "Invalid rev id: " + parts[4])
            return None
        rel = "/".join(parts[5:])
        if not rel or any(p in ("", ".", "..") for p in parts[5:]):
            self.error(404, "EntryNotFound", "Entry not found")
            return None
        local = os.path.join(ARGS.maps[repo], rel)
        if not os.path.isfile(local):
            self.error(404, "EntryNotFound", "Entry not found")
            return None
        return rel, local, False

    def do_HEAD(self):
        self.serve()

    def do_GET(self):
        self.serve()

    def serve(self):
        found = self.resolve()
        if not found:
            return
        rel, local, cdn = found
        size = os.path.getsize(local)
        sha = sha256_of(local)
        linked = size + 1000 if rel in ARGS.wrong_size else size

        if ARGS.redirect and not cdn:
            parts = urllib.parse.urlsplit(self.path).path.split("/")
            self.note(302)
            self.send_response(302)
            self.send_header("Location", "/cdn/%s/%s/%s" % (parts[1], parts[2],
                                                            "/".join(parts[5:])))
            self.send_header("Content-Length", "0")
            self.send_header("ETag", '"%s"' % sha)
            self.send_header("X-Linked-ETag", '"%s"' % sha)
            self.send_header("X-Linked-Size", str(linked))
            self.end_headers()
            return

        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and not ARGS.ignore_range:
            try:
                unit, spec = rng.split("=", 1)
                a, b = spec.split("-", 1)
                if unit.strip() != "bytes" or "," in spec:
                    raise ValueError
                start = int(a)
                end = int(b) if b else size - 1
            except ValueError:
                self.error(400, "BadRange", "Bad Range header")
                return
            if start >= size or end < start:
                self.note(416)
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(end, size - 1)
            status = 206

        self.note(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if cdn:
            self.send_header("ETag", '"%s-1"' % sha[:32])
        else:
            self.send_header("ETag", '"%s"' % sha)
            self.send_header("X-Linked-ETag", '"%s"' % sha)
            self.send_header("X-Linked-Size", str(linked))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if self.command == "HEAD":
            return

        cut = None
        fault = ARGS.drop_after if ARGS.drop_after is not None else ARGS.stall_after
        if fault is not None and status == 200 and not rng and size > fault:
            with LOCK:
                if local not in FAULTED:
                    FAULTED.add(local)
                    cut = fault
        with open(local, "rb") as f:
            f.seek(start)
            left = end - start + 1 if cut is None else cut
            while left > 0:
                block = f.read(min(left, 1 << 16))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)
        self.wfile.flush()
        if cut is not None:
            if ARGS.stall_after is not None:
                time.sleep(60)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--map", action="append", default=[], metavar="OWNER/NAME=DIR")
    p.add_argument("--token")
    p.add_argument("--drop-after", type=int)
    p.add_argument("--stall-after", type=int)
    p.add_argument("--ignore-range", action="store_true")
    p.add_argument("--wrong-size", action="append", default=[], metavar="PATH")
    p.add_argument("--redirect", action="store_true")
    p.add_argument("--log")
    ARGS = p.parse_args()
    ARGS.maps = {}
    for m in ARGS.map:
        repo, _, folder = m.partition("=")
        if repo.count("/") != 1 or not folder:
            p.error("--map wants owner/name=/folder, got " + m)
        ARGS.maps[repo] = folder

    server = http.server.ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""Deliberately broken counters for testing edgebench's checks (article API: /read,
/increment, /health).

  python3 fake_counter.py PORT stale   # increments apply at once; reads show a snapshot
                                       # refreshed every 300 ms (no staleness header)
  python3 fake_counter.py PORT lossy   # every third acknowledged increment is dropped
  python3 fake_counter.py PORT honest  # a correct counter
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[2]
lock = threading.Lock()
state = {"value": 0, "snapshot": 0, "snap_at": 0.0, "increments": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self.reply({"status": "healthy"})
        if self.path != "/read":
            return self.reply({"error": "not found"}, 404)
        with lock:
            if MODE == "stale":
                now = time.monotonic()
                if now - state["snap_at"] >= 0.3:
                    state["snapshot"], state["snap_at"] = state["value"], now
                value = state["snapshot"]
            else:
                value = state["value"]
        self.reply({"value": value, "region": "fake"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != "/increment":
            return self.reply({"error": "not found"}, 404)
        with lock:
            state["increments"] += 1
            if not (MODE == "lossy" and state["increments"] % 3 == 0):
                state["value"] += 1
            value = state["value"]
        self.reply({"value": value, "region": "fake"})


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("ready", flush=True)
server.serve_forever()

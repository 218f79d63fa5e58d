"""Fixtures for the integration tests: real edgestate processes on 127.0.0.1.

Every process a test starts is tracked by PID and killed at the end of the test, so a failing
test never leaves a server behind.
"""
import http.client
import threading
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from ports import free_port_range, free_ports  # noqa: E402,F401  (the tests' ports)

BIN = os.environ.get("EDGESTATE_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "edgestate")
POPULATE_BIN = os.environ.get("EDGESTATE_POPULATE_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "edgestate-populate")

# Sanitizer builds start and run more slowly; every wait scales with this.
SLOW = 4.0 if "asan" in os.path.abspath(BIN) else 1.0



def wait_until(condition, timeout, what, interval=0.05):
    """Polls `condition` until it returns a truthy value, which it returns; fails the test with
    `what` (and the last value) after `timeout` seconds scaled by SLOW.

    Tests wait on conditions, never on fixed sleeps, and their timeouts are deadlines for a
    fault (something that never happens), not latency bounds: make them generous.
    """
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout * SLOW:.0f} s (last: {last!r})")
        time.sleep(interval)


READY = re.compile(rb"edgestate listening on https?://[^:]+:(\d+) ")


class Node:
    """One `edgestate serve` process."""

    def __init__(self, data_dir, args=(), env=None):
        self.data_dir = data_dir
        self.args = list(args)
        self.env = env
        self.proc = None
        self.port = None
        self.output = b""
        self.tls_context = None  # An ssl.SSLContext: conn() speaks HTTPS with it.

    def start(self, timeout=10.0):
        env = dict(os.environ)
        for k in ("PORT", "EDGESTATE_REGION", "FLY_REGION", "EDGESTATE_DATA_DIR",
                  "EDGESTATE_API_KEY"):
            env.pop(k, None)
        env.update(self.env or {})
        cmd = [BIN, "serve", "--listen", "127.0.0.1", "--port", "0",
               "--data-dir", self.data_dir] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.monotonic() + timeout * SLOW
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                m = READY.search(buf)
                if m:
                    self.port = int(m.group(1))
                    self.output = buf
                    return self
        self.kill()
        raise AssertionError(f"edgestate did not start: {buf.decode(errors='replace')}")

    def read_output(self):
        """Whatever the process printed since start (non-blocking)."""
        fd = self.proc.stdout.fileno()
        while True:
            r, _, _ = select.select([fd], [], [], 0)
            if not r:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.output += chunk
        return self.output.decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        rc = self.proc.wait(timeout=timeout * SLOW)
        self.read_output()
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def alive(self):
        return self.proc.poll() is None

    def conn(self, timeout=10.0):
        if self.tls_context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout * SLOW,
                                               context=self.tls_context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout * SLOW)

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        """One request on a fresh connection; returns (status, headers dict, parsed body)."""
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = data.decode(errors="replace")
            return r.status, hdrs, parsed
        finally:
            c.close()

    def value(self, name=None):
        path = "/read" if name is None else f"/v1/counters/{name}"
        status, _, body = self.request("GET", path)
        assert status == 200, body
        return body["value"]


def raw_exchange(port, payload, timeout=5.0):
    """Sends raw bytes, returns everything the server sends until it closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        s.sendall(payload)
        out = b""
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def parse_raw_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


class Load:
    """`conns` clients, each on its own keep-alive connection, incrementing until stopped.

    sent: requests fully written to a socket; acked: 200 responses received.
    """

    def __init__(self, port, conns=50, path="/increment", body=None):
        self.port, self.path, self.body = port, path, body
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(conns)]

    def _run(self):
        deadline = time.monotonic() + 60 * SLOW  # Bounded even if stop is never set.
        c = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
                    c.connect()
                with self.lock:
                    self.sent += 1  # Counted before sending: an upper bound on what reached it.
                c.request("POST", self.path, body=self.body)
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    with self.lock:
                        self.acked += 1
                else:
                    with self.lock:
                        self.errors += 1
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.errors += 1
                if c is not None:
                    c.close()
                c = None
                if self.stop.wait(0.01):
                    break
        if c is not None:
            c.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def wait_for_acks(self, n, timeout=30.0):
        """Waits until at least n increments were acknowledged (a busy machine may need longer
        than any fixed sleep would give)."""
        wait_until(lambda: self.acked >= n, timeout, f"{n} acknowledged increments")

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30 * SLOW)



@pytest.fixture
def tmpdir_path():
    d = tempfile.mkdtemp(prefix="edgestate-it-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def nodes(tmpdir_path):
    """Factory: nodes(args=..., env=..., data_dir=...) -> started Node; all killed at the end."""
    started = []

    def make(args=(), env=None, data_dir=None, start=True):
        n = Node(data_dir or os.path.join(tmpdir_path, "data"), args, env)
        started.append(n)
        return n.start() if start else n

    yield make
    for n in started:
        n.kill()


@pytest.fixture
def node(nodes):
    return nodes()

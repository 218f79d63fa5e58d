#!/usr/bin/env python3
"""How closely the WAN emulator's added delay follows the RTT model.

Starts `edgestate wan` (pinned to CPU 0) with every region's target on one local echo server,
and pings through a few of its links from CPU 1: one byte, echoed, `--pings` times per link
per run. The same pings go straight to the echo server in the same run, so the loopback and
the echo server's own time are measured beside the emulated links and subtracted.

Per link it prints the model's round trip and, medians over --runs runs, the error of the
emulated round trip (measured minus model minus the direct round trip's median): p50, p99 and
max; the share of round trips that came back early (must be 0: the emulator never delivers
before the model's time); and the emulator's own figure of how late chunks left (from
GET /links). `--busy` repeats everything with a busy loop sharing the emulator's core, which
is what a loaded CI machine looks like to it.

Usage: bench/wan_bench.py [--runs 3] [--pings 200] [--busy]
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGESTATE = os.path.join(ROOT, "build", "edgestate")
REGIONS = ["iad", "lhr", "fra", "syd"]
LINKS = [("lhr", "fra"), ("iad", "lhr"), ("iad", "syd")]  # Short, medium and long.


def echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with c:
            while True:
                d = c.recv(4096)
                if not d:
                    return
                c.sendall(d)

    def accept():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def ping(port, n):
    """n one-byte round trips on one connection; milliseconds each."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    try:
        for _ in range(n):
            t = time.monotonic()
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise RuntimeError("echo broke")
            out.append((time.monotonic() - t) * 1000)
    finally:
        s.close()
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def one_run(echo_port, pings, busy):
    targets = sum((["--target", f"{r}=127.0.0.1:{echo_port}"] for r in REGIONS), [])
    wan = subprocess.Popen(["taskset", "-c", "0", EDGESTATE, "wan", "--regions", ",".join(REGIONS)]
                           + targets, stdout=subprocess.PIPE, text=True)
    hog = None
    try:
        ports, model, control = {}, {}, None
        deadline = time.monotonic() + 30
        for line in wan.stdout:
            m = re.match(r"link (\w+) (\w+) 127.0.0.1:(\d+) one_way_ms=([\d.]+)", line)
            if m:
                ports[(m.group(1), m.group(2))] = int(m.group(3))
                model[(m.group(1), m.group(2))] = 2 * float(m.group(4))
            m = re.match(r"wan\s+(http://\S+/links) ready", line)
            if m:
                control = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if control is None:
            raise RuntimeError("edgestate wan did not start")
        if busy:
            hog = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c",
                                    "import time\nt=time.monotonic()+600\n"
                                    "while time.monotonic()<t: pass"])
        direct = ping(echo_port, pings)
        base = statistics.median(direct)
        rows = {}
        for link in LINKS:
            rtts = ping(ports[link], pings)
            err = [x - model[link] - base for x in rtts]
            rows[link] = {"model_ms": model[link], "p50": pct(err, 0.5), "p99": pct(err, 0.99),
                          "max": max(err), "early": sum(1 for x in rtts if x < model[link])}
        with urllib.request.urlopen(control, timeout=10) as r:
            stats = json.loads(r.read())
        for l in stats:
            link = (l["from"], l["to"])
            if link in rows:
                rows[link]["late_p50"] = l.get("late_p50_ms")
                rows[link]["late_p99"] = l.get("late_p99_ms")
        return {"direct_p50": base, "direct_p99": pct(direct, 0.99), "links": rows}
    finally:
        if hog:
            hog.kill()
            hog.wait()
        wan.terminate()
        try:
            wan.wait(timeout=10)
        except subprocess.TimeoutExpired:
            wan.kill()
            wan.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--busy", action="store_true", help="also measure with CPU 0 kept busy")
    a = ap.parse_args()
    if not os.access(EDGESTATE, os.X_OK):
        sys.exit(f"{EDGESTATE} not built: run scripts/setup.sh")
    os.sched_setaffinity(0, {1})
    srv, echo_port = echo_server()
    for busy in ([False, True] if a.busy else [False]):
        runs = [one_run(echo_port, a.pings, busy) for _ in range(a.runs)]
        med = lambda f: statistics.median(f(r) for r in runs)
        print(f"\n{'CPU 0 busy' if busy else 'idle'}: {a.runs} runs x {a.pings} pings per link; "
              f"direct loopback+echo p50 {med(lambda r: r['direct_p50']):.3f} ms, "
              f"p99 {med(lambda r: r['direct_p99']):.3f} ms")
        print(f"{'link':<10} {'model rtt':>9} {'err p50':>8} {'err p99':>8} {'err max':>8} "
              f"{'early':>5} {'late p50':>8} {'late p99':>8}   (ms; medians over runs)")
        for link in LINKS:
            m = lambda k: med(lambda r: r["links"][link][k] or 0)
            print(f"{link[0] + '-' + link[1]:<10} {runs[0]['links'][link]['model_ms']:>9.1f} "
                  f"{m('p50'):>8.3f} {m('p99'):>8.3f} {m('max'):>8.3f} "
                  f"{sum(r['links'][link]['early'] for r in runs):>5} "
                  f"{m('late_p50'):>8.3f} {m('late_p99'):>8.3f}")
    srv.close()


if __name__ == "__main__":
    main()

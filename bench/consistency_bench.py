#!/usr/bin/env python3
"""Consistency per request in the eight-region demo (issue 10).

Starts `edgestate demo` (all eight nodes and the WAN emulator pinned to CPU 0) and drives it with
edgebench from CPU 1: 64 VUs, the article's load (one hot counter, read=90 increment=10, 100 ms
pause between requests), --duration seconds per scenario, --runs times; medians over runs.

  (a) session: every VU keeps its session token and sends each request to a random region
      (--hop): session violations (must be 0), read p99 per region, share of requests held.
  (b) bounded, M in 150 250 500 1000: share served at once, after waiting (held, then served),
      refused (503 staleness_unavailable), and reads served with a bound above M (must be 0).
  (c) local: the staleness bound each region's reads carry (sampled every 50 ms at every
      region during a local run), with watermarks (--max-clock-error-ms 10) and without
      (--max-clock-error-ms 0: the clock-free bound alone).

Usage: bench/consistency_bench.py [--runs 3] [--duration 30] [--vus 64]
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGESTATE = os.path.join(ROOT, "build", "edgestate")
EDGEBENCH = os.path.join(ROOT, "build", "edgebench")
REGIONS = ["iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"]
BOUNDS = [150, 250, 500, 1000]
BASE_PORT = 27080


def start_demo(work, node_args=()):
    cmd = ["taskset", "-c", "0", EDGESTATE, "demo", "--base-port", str(BASE_PORT),
           "--data-dir", work] + [f"--node-arg={a}" for a in node_args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    for line in p.stdout:
        if line.startswith("demo ready"):
            break
        if time.monotonic() > deadline:
            break
    else:
        raise RuntimeError("demo did not start")
    # Every link up and every bound known.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(read(r)[1] is not None for r in range(len(REGIONS))):
            return p
        time.sleep(0.2)
    raise RuntimeError("the demo's regions never heard from each other")


def stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def read(i):
    with urllib.request.urlopen(f"http://127.0.0.1:{BASE_PORT + i}/v1/counters/bench-probe",
                                timeout=10) as r:
        body = json.loads(r.read())
    return body["value"], body["staleness_ms"]


def edgebench(args, duration, vus):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    targets = sum((["--target", f"{r}=http://127.0.0.1:{BASE_PORT + i}"]
                   for i, r in enumerate(REGIONS)), [])
    cmd = (["taskset", "-c", "1", EDGEBENCH] + targets +
           ["--vus", str(vus), "--duration", f"{duration}s", "--think-ms", "100", "--settle",
            "10s", "--no-progress", "--json", out] + args)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=duration + 120)
    with open(out) as f:
        d = json.load(f)
    os.unlink(out)
    return d


def session_run(duration, vus):
    d = edgebench(["--consistency", "session", "--hop"], duration, vus)
    c = d["consistency"]
    reqs = d["overall"]["requests"]
    return {"violations": c["session_violations"],
            "held_pct": 100.0 * c["waited"] / max(1, reqs),
            "wait_p99": c["waited_p99_ms"],
            "read_p99": {r: d["regions"][r]["read"]["p99_ms"] for r in REGIONS},
            "errors": d["errors_by_kind"], "requests": reqs}


def bounded_run(m, duration, vus):
    d = edgebench(["--consistency", "bounded", "--max-staleness-ms", str(m)], duration, vus)
    total = d["overall"]["requests"]
    refused = sum(n for k, n in d["errors_by_kind"].items() if "staleness_unavailable" in k)
    served = total - d["overall"]["errors"]
    held = d["consistency"]["waited"]
    return {"at_once_pct": 100.0 * max(0, served - held) / max(1, total),
            "waited_pct": 100.0 * held / max(1, total),
            "refused_pct": 100.0 * refused / max(1, total),
            "above_m": d["consistency"]["reads_above_max_staleness"],
            "bound_violations": d["stale_reads"]["bound_violations"]}


def local_bounds(duration, vus):
    """Runs a local load and samples each region's bound meanwhile."""
    samples = {r: [] for r in REGIONS}
    stop_flag = threading.Event()

    def sampler():
        while not stop_flag.is_set():
            for i, r in enumerate(REGIONS):
                try:
                    _, s = read(i)
                    if s is not None:
                        samples[r].append(s)
                except OSError:
                    pass
            stop_flag.wait(0.05)

    t = threading.Thread(target=sampler)
    t.start()
    d = edgebench([], duration, vus)
    stop_flag.set()
    t.join()
    med = {r: statistics.median(v) for r, v in samples.items() if v}
    return {"p50_by_region": med, "p50_all": statistics.median([x for v in samples.values()
                                                                 for x in v]),
            "bound_violations": d["stale_reads"]["bound_violations"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--vus", type=int, default=64)
    a = ap.parse_args()
    for b in (EDGESTATE, EDGEBENCH):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not built: run scripts/setup.sh")
    sess, bnd, loc, loc_free = [], {m: [] for m in BOUNDS}, [], []
    for run in range(a.runs):
        with tempfile.TemporaryDirectory() as work:
            demo = start_demo(os.path.join(work, "demo"))
            try:
                sess.append(session_run(a.duration, a.vus))
                for m in BOUNDS:
                    bnd[m].append(bounded_run(m, a.duration, a.vus))
                loc.append(local_bounds(a.duration, a.vus))
            finally:
                stop(demo)
        with tempfile.TemporaryDirectory() as work:
            demo = start_demo(os.path.join(work, "demo"), ["--max-clock-error-ms=0"])
            try:
                loc_free.append(local_bounds(a.duration, a.vus))
            finally:
                stop(demo)
        print(f"run {run + 1}/{a.runs} done", file=sys.stderr)

    med = statistics.median
    print(f"\nedgestate demo, 8 regions, {a.vus} VUs, article load, {a.duration} s per scenario, "
          f"medians of {a.runs} runs (nodes and emulator on CPU 0, edgebench on CPU 1)\n")
    print("(a) session tokens, every request to a random region:")
    print(f"    session violations: {[s['violations'] for s in sess]} (per run)")
    print(f"    requests held by the node: {med([s['held_pct'] for s in sess]):.2f} %, "
          f"wait p99 {med([s['wait_p99'] for s in sess]):.0f} ms")
    print("    read p99 ms: " + "  ".join(
        f"{r} {med([s['read_p99'][r] for s in sess]):.1f}" for r in REGIONS))
    print("\n(b) bounded:")
    print(f"    {'M ms':>6} {'at once %':>10} {'waited %':>9} {'refused %':>10} "
          f"{'above M':>8} {'bound viol.':>12}")
    for m in BOUNDS:
        rows = bnd[m]
        print(f"    {m:>6} {med([r['at_once_pct'] for r in rows]):>10.2f} "
              f"{med([r['waited_pct'] for r in rows]):>9.2f} "
              f"{med([r['refused_pct'] for r in rows]):>10.2f} "
              f"{sum(r['above_m'] for r in rows):>8} "
              f"{sum(r['bound_violations'] for r in rows):>12}")
    print("\n(c) staleness bound of local reads, p50 ms per region:")
    print(f"    {'':<22}" + "".join(f"{r:>7}" for r in REGIONS) + f"{'all':>7}")
    for name, rows in (("clock-free (E=0)", loc_free), ("with watermarks (E=10)", loc)):
        print(f"    {name:<22}" + "".join(
            f"{med([x['p50_by_region'].get(r, 0) for x in rows]):>7.0f}" for r in REGIONS) +
            f"{med([x['p50_all'] for x in rows]):>7.0f}")
    print(f"    reads outside their bound: {sum(x['bound_violations'] for x in loc + loc_free)}")


if __name__ == "__main__":
    main()

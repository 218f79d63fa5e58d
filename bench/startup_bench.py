#!/usr/bin/env python3
"""Cold start with a large store (issue 14): for each size, fills a data directory with that many
counters and as many keys (build/edgestate-populate: own writes, indexed, as a node writes
them), then starts the node --runs times and measures

  - spawn to the first correct answer: a client on CPU 1 connects and asks for a random stored
    counter from the moment before the node's spawn (fork and exec included), until a 200 with the stored value comes back (then a
    stored key is read too, and must come back whole);
  - throughput during the first second after that answer and during the next one (wrk, random
    stored counters), and steady throughput once every counter is in memory: "full speed
    within a second" is the second window's ratio to steady;
  - exec to the node's "loaded N counters" line (the background load's end);
  - resident memory once loaded (VmRSS) and its peak (VmHWM).

The node runs on CPU 0, the clients on CPU 1. Medians over the runs.

Usage: bench/startup_bench.py [--sizes 0,1000000,10000000] [--runs 5] [--bin BIN]
       bench/startup_bench.py --sizes 1000000 --compare OLD,NEW [--starts 12]
(the second: spawn to first answer only, the binaries alternating on one data directory).
Needs wrk (bench/setup.sh).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "edgestate")
POPULATE = os.path.join(ROOT, "build", "edgestate-populate")
WRK_SCRIPT = os.path.join(ROOT, "bench", "wrk", "counter_get_random.lua")
VALUE_BYTES = 100


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path):
    """One GET on a fresh connection; (status, body) or None when the port is not open yet."""
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None
    try:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        c.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        return None
    return int(head[9:12]), body


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    return 0.0


def wrk(port, seconds, counters):
    env = dict(os.environ, COUNTERS=str(max(counters, 1)))
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{seconds}s", "-s",
                          WRK_SCRIPT, f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         env=env, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out:
        raise RuntimeError("wrk failed:\n" + out)
    return float(m.group(1))


def spawn_until_first_answer(bin_path, data, size, log):
    """Spawns the node on CPU 0 and asks it for a random stored counter from CPU 1 until the
    right value comes back; returns (the node's Popen, its port, milliseconds from before the
    spawn)."""
    port = free_port()
    want = random.randrange(size) if size else 0
    expected = want % 1000 + 1 if size else 0
    # The node inherits CPU 0 from this process at its spawn (no taskset exec in the measured
    # time); this process then polls from CPU 1.
    os.sched_setaffinity(0, {0})
    start = time.monotonic()
    p = subprocess.Popen([bin_path, "serve", "--listen", "127.0.0.1", "--port", str(port),
                          "--data-dir", data], stdout=log, stderr=subprocess.STDOUT)
    os.sched_setaffinity(0, {1})
    deadline = start + 30
    while True:
        r = http_get(port, f"/v1/counters/counter-{want}")
        if r is not None:
            break
        if time.monotonic() > deadline or p.poll() is not None:
            p.kill()
            p.wait()
            raise RuntimeError(f"the node did not answer; log: {log.name}")
    first_ms = (time.monotonic() - start) * 1000
    status, body = r
    if status != 200 or json.loads(body)["value"] != expected:
        p.kill()
        p.wait()
        raise RuntimeError(f"first answer {status} {body!r}, wanted value {expected}")
    return p, port, first_ms


def one_start(bin_path, data, size, log_path):
    log = open(log_path, "w")
    p, port, first_ms = spawn_until_first_answer(bin_path, data, size, log)
    deadline = time.monotonic() + 30
    try:
        if size:
            k = random.randrange(size)
            status, body = http_get(port, f"/v1/kv/key-{k}")
            if status != 200 or len(body) != VALUE_BYTES:
                raise RuntimeError(f"key-{k}: {status} {len(body)} bytes")
        first_second = wrk(port, 1, size)
        second_second = wrk(port, 1, size)
        loaded_ms = None
        while loaded_ms is None:
            m = re.search(r"loaded (\d+) counters (?:from \S+ )?in (\d+) ms", open(log_path).read())
            if m:
                if int(m.group(1)) != size:
                    raise RuntimeError(f"loaded {m.group(1)} counters, wanted {size}")
                loaded_ms = int(m.group(2))
            elif time.monotonic() > deadline + 120 or p.poll() is not None:
                raise RuntimeError("the load did not finish; log: " + open(log_path).read())
            else:
                time.sleep(0.05)
        steady = wrk(port, 3, size)
        rss = proc_status(p.pid, "VmRSS")
        hwm = proc_status(p.pid, "VmHWM")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        log.close()
    return {"first_ms": first_ms, "loaded_ms": loaded_ms, "first_second": first_second,
            "second_second": second_second, "steady": steady, "rss_mib": rss, "hwm_mib": hwm}


def compare(bins, data, size, starts, work):
    """Spawn to first correct answer only, the binaries alternating on one data directory."""
    ms = {b: [] for b in bins}
    for i in range(starts):
        for b in bins:
            with open(os.path.join(work, "compare.log"), "w") as log:
                p, _, first_ms = spawn_until_first_answer(b, data, size, log)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            ms[b].append(first_ms)
    print(f"\nspawn to first correct 200, {size:,} counters + keys, {starts} alternating starts "
          "(node on CPU 0, client on CPU 1)")
    print("| binary | median | min-max |")
    print("|---|---|---|")
    for b in bins:
        v = ms[b]
        print(f"| {b} | **{statistics.median(v):.1f} ms** | {min(v):.1f}-{max(v):.1f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0,1000000,10000000",
                    help="counters (and as many keys) per data directory, comma-separated")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--bin", default=BIN, help="the edgestate binary to start (default: %(default)s)")
    ap.add_argument("--compare", metavar="BIN,BIN...",
                    help="only spawn to first answer, these binaries alternating, --starts times "
                         "each on one data directory of the first size")
    ap.add_argument("--starts", type=int, default=12)
    args = ap.parse_args()
    if args.runs < 1 or args.starts < 1:
        ap.error("--runs and --starts must be at least 1")
    random.seed(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        work = tempfile.mkdtemp(prefix="edgestate-startup-", dir="/var/tmp")
        data = os.path.join(work, "data")
        try:
            if size:
                out = subprocess.run([POPULATE, "--data-dir", data, "--count", str(size), "--keys",
                                      str(size), "--value-bytes", str(VALUE_BYTES)], check=True,
                                     capture_output=True, text=True).stdout
                print(out.strip())
            else:
                os.makedirs(data)
            if args.compare:
                compare(args.compare.split(","), data, size, args.starts, work)
                return
            runs = []
            for i in range(args.runs):
                r = one_start(args.bin, data, size, os.path.join(work, f"log{i}"))
                runs.append(r)
                print(f"{size} records, run {i + 1}: first 200 after {r['first_ms']:.1f} ms, "
                      f"loaded after {r['loaded_ms']} ms, first second {r['first_second']:.0f} "
                      f"req/s, next second {r['second_second']:.0f} req/s, steady "
                      f"{r['steady']:.0f} req/s, RSS {r['rss_mib']:.0f} MiB "
                      f"(peak {r['hwm_mib']:.0f})", flush=True)
            du = subprocess.run(["du", "-sh", data], capture_output=True,
                                text=True).stdout.split()[0]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            med["min_first"] = min(r["first_ms"] for r in runs)
            med["max_first"] = max(r["first_ms"] for r in runs)
            rows.append((size, du, med))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {args.runs} starts (node on CPU 0, clients on CPU 1)")
    print("| counters + keys | on disk | spawn to first 200 (min-max) | spawn to loaded | "
          "first second / steady | next second / steady | RSS loaded (peak) |")
    print("|---|---|---|---|---|---|---|")
    for size, du, m in rows:
        print(f"| {size:,} + {size:,} | {du} | **{m['first_ms']:.1f} ms** ({m['min_first']:.1f}-"
              f"{m['max_first']:.1f}) | {m['loaded_ms']:.0f} ms | {m['first_second']:,.0f} / "
              f"{m['steady']:,.0f} req/s ({m['first_second'] / m['steady']:.2f}x) | "
              f"{m['second_second']:,.0f} req/s ({m['second_second'] / m['steady']:.2f}x) | "
              f"{m['rss_mib']:.0f} MiB ({m['hwm_mib']:.0f}) |")


if __name__ == "__main__":
    main()

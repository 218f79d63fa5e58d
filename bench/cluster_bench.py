#!/usr/bin/env python3
"""Three-region cluster on one machine: sustained increments on all three nodes at once.

Reports
  - convergence lag: from an increment's acknowledgment at its origin until every other node
    shows it (probe counters polled every millisecond while the load runs), p50/p99/max;
  - the staleness bound the reads reported meanwhile (Edgestate-Staleness-Ms);
  - the sustained increment rate of the replicating cluster against one node alone and
    against three independent nodes (no replication), all on the same machine.

Servers are pinned to CPU 0, load generators (wrk, the probe) to CPU 1. Medians of --runs.
Usage: bench/cluster_bench.py [--runs 3] [--duration 10] [--interval 100]
"""
import argparse
import http.client
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGESTATE = os.path.join(ROOT, "build", "edgestate")
POST_LUA = os.path.join(ROOT, "bench", "wrk", "post.lua")
REGIONS = ("iad", "lhr", "fra")
SECRET = "bench-cluster-secret"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_node(work, region, extra):
    cmd = ["taskset", "-c", "0", EDGESTATE, "serve", "--listen", "127.0.0.1", "--port", "0",
           "--region", region, "--data-dir", os.path.join(work, region)] + extra
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    m = re.search(r":(\d+) region", line)
    if not m:
        p.kill()
        raise RuntimeError(f"{region} did not start: {line}")
    return p, int(m.group(1))


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def start_cluster(work, interval, replicate=True):
    peer_ports = dict(zip(REGIONS, free_ports(len(REGIONS))))
    procs, ports = [], {}
    for r in REGIONS:
        extra = []
        if replicate:
            peers = ",".join(f"{o}=127.0.0.1:{peer_ports[o]}" for o in REGIONS if o != r)
            extra = ["--peer-listen", f"127.0.0.1:{peer_ports[r]}", "--peers", peers,
                     "--cluster-secret", SECRET, "--replication-interval", str(interval)]
        p, port = start_node(work, r, extra)
        procs.append(p)
        ports[r] = port
    time.sleep(0.5)
    return procs, ports


def wrk(port, conns, duration):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "-s", POST_LUA,
           f"http://127.0.0.1:{port}/v1/counters/load/increment"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def rps(proc):
    out = proc.communicate(timeout=120)[0]
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def probe(ports, duration, results):
    """Increments probe counters at random origins; polls the other nodes until visible."""
    os.sched_setaffinity(0, {1})
    conns = {r: http.client.HTTPConnection("127.0.0.1", p, timeout=10) for r, p in ports.items()}
    rng = random.Random(7)
    end = time.monotonic() + duration
    i = 0
    while time.monotonic() < end:
        i += 1
        origin = rng.choice(REGIONS)
        name = f"probe-{i}"
        c = conns[origin]
        c.request("POST", f"/v1/counters/{name}/increment")
        r = c.getresponse()
        r.read()
        acked = time.monotonic()
        if r.status != 200:
            continue
        pending = [x for x in REGIONS if x != origin]
        deadline = acked + 10
        while pending and time.monotonic() < deadline:
            for x in list(pending):
                conns[x].request("GET", f"/v1/counters/{name}")
                resp = conns[x].getresponse()
                body = resp.read()
                st = resp.getheader("Edgestate-Staleness-Ms")
                if st and st != "inf":
                    results["staleness"].append(int(st))
                if b'"value":1,' in body:
                    pending.remove(x)
            if pending:
                time.sleep(0.001)
        if not pending:
            results["lag"].append((time.monotonic() - acked) * 1000)
        time.sleep(0.02)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--interval", type=int, default=100)
    ap.add_argument("--conns", type=int, default=48, help="total connections, split over nodes")
    args = ap.parse_args()
    if not os.path.exists(EDGESTATE) or not shutil.which("wrk"):
        sys.exit("cluster_bench: needs build/edgestate and wrk (bench/setup.sh)")
    d = args.duration
    single, independent, cluster, lags, stale = [], [], [], [], []
    for run in range(args.runs):
        work = tempfile.mkdtemp(prefix="edgestate-cluster-bench-")
        try:
            p, port = start_node(work, "solo", [])
            single.append(rps(wrk(port, args.conns, d)))
            stop([p])
            procs, ports = start_cluster(work + "/indep", args.interval, replicate=False)
            ws = [wrk(ports[r], args.conns // 3, d) for r in REGIONS]
            independent.append(sum(rps(w) for w in ws))
            stop(procs)
            procs, ports = start_cluster(work + "/cluster", args.interval)
            res = {"lag": [], "staleness": []}
            ws = [wrk(ports[r], args.conns // 3, d) for r in REGIONS]
            t = threading.Thread(target=probe, args=(ports, d - 1, res))
            t.start()
            total = sum(rps(w) for w in ws)
            t.join()
            cluster.append(total)
            lags.extend(res["lag"])
            stale.extend(res["staleness"])
            # The load counter must agree everywhere once the load stops.
            vals = set()
            for _ in range(100):
                vals = set()
                for r in REGIONS:
                    c = http.client.HTTPConnection("127.0.0.1", ports[r], timeout=10)
                    c.request("GET", "/v1/counters/load")
                    vals.add(re.search(rb'"value":(\d+)', c.getresponse().read()).group(1))
                    c.close()
                if len(vals) == 1:
                    break
                time.sleep(0.05)
            stop(procs)
            print(f"run {run + 1}: single {single[-1]:.0f}/s, three independent "
                  f"{independent[-1]:.0f}/s, replicating cluster {cluster[-1]:.0f}/s, "
                  f"{len(res['lag'])} probes, lag p50 {pct(res['lag'], 50):.1f} ms "
                  f"p99 {pct(res['lag'], 99):.1f} ms, converged={len(vals) == 1}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    ms, mi, mc = statistics.median(single), statistics.median(independent), statistics.median(cluster)
    print()
    print(f"Replication interval {args.interval} ms; {args.runs} runs of {d} s; servers on CPU 0, "
          f"load on CPU 1; {args.conns} connections in all.\n")
    print("| figure | value |")
    print("|---|---|")
    print(f"| convergence lag p50 / p99 / max ({len(lags)} probes) | {pct(lags, 50):.1f} / "
          f"{pct(lags, 99):.1f} / {max(lags):.1f} ms |")
    print(f"| staleness bound reported by reads p50 / p99 / max ({len(stale)} reads) | "
          f"{pct(stale, 50)} / {pct(stale, 99)} / {max(stale) if stale else 'n/a'} ms |")
    print(f"| increments/s, one node alone (median) | {ms:.0f} |")
    print(f"| increments/s, three nodes without replication (median) | {mi:.0f} |")
    print(f"| increments/s, three replicating nodes (median) | {mc:.0f} |")
    print(f"| replicating cluster / one node | {mc / ms:.2f}x |")
    print(f"| replicating cluster / three independent nodes | {mc / mi:.2f}x |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Three-region cluster on one machine: sustained increments on all three nodes at once.

Reports
  - convergence lag: from an increment's acknowledgment at its origin until every other node
    shows it (probe counters polled every millisecond while the load runs), p50/p99/max;
  - the staleness bound the reads reported meanwhile (Edgestate-Staleness-Ms);
  - the sustained increment rate of the replicating cluster against one node alone and
    against three independent nodes (no replication), all on the same machine.

With --tls-cost, what encrypting the peer links costs instead: the same replicating cluster
with TLS (the default) and with --peer-insecure-plaintext, side by side in each run (rate and
convergence lag), and catch-up throughput: a node that was down receives the 1 KiB keys written
meanwhile (MB/s and records/s until it has applied all of them).

Servers are pinned to CPU 0, load generators (wrk, the probe) to CPU 1. Medians of --runs.
Usage: bench/cluster_bench.py [--runs 3] [--duration 10] [--interval 100] [--tls-cost]
"""
import json
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
KV_PUT_LUA = os.path.join(ROOT, "bench", "wrk", "kv_put.lua")
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


def cluster_args(region, regions, peer_ports, interval, more):
    peers = ",".join(f"{o}=127.0.0.1:{peer_ports[o]}" for o in regions if o != region)
    return ["--peer-listen", f"127.0.0.1:{peer_ports[region]}", "--peers", peers,
            "--cluster-secret", SECRET, "--replication-interval", str(interval)] + more


def start_cluster(work, interval, replicate=True, more=()):
    peer_ports = dict(zip(REGIONS, free_ports(len(REGIONS))))
    procs, ports = [], {}
    for r in REGIONS:
        extra = cluster_args(r, REGIONS, peer_ports, interval, list(more)) if replicate else []
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


def get_json(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    body = c.getresponse().read()
    c.close()
    return json.loads(body)


def run_cluster(work, interval, conns, d, more=()):
    """The replicating cluster under load with the probe: (rate, lags, staleness, converged)."""
    procs, ports = start_cluster(work, interval, more=more)
    res = {"lag": [], "staleness": []}
    ws = [wrk(ports[r], conns // 3, d) for r in REGIONS]
    t = threading.Thread(target=probe, args=(ports, d - 1, res))
    t.start()
    total = sum(rps(w) for w in ws)
    t.join()
    # The load counter must agree everywhere once the load stops.
    vals = set()
    for _ in range(100):
        vals = {get_json(ports[r], "/v1/counters/load")["value"] for r in REGIONS}
        if len(vals) == 1:
            break
        time.sleep(0.05)
    stop(procs)
    return total, res["lag"], res["staleness"], len(vals) == 1


def catch_up(work, interval, conns, d, more=()):
    """iad takes d seconds of 1 KiB PUTs alone; then lhr starts empty. Returns (MB/s, records/s,
    records) of lhr's catch-up: from its start until it has applied every write of iad."""
    regions = ("iad", "lhr")
    peer_ports = dict(zip(regions, free_ports(2)))
    args = {r: cluster_args(r, regions, peer_ports, interval, list(more)) for r in regions}
    iad, iad_port = start_node(work, "iad", args["iad"])
    w = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{d}s", "-s",
                          KV_PUT_LUA, f"http://127.0.0.1:{iad_port}"],
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "KV_OFFSET": "0"})
    w.communicate(timeout=120)
    target = get_json(iad_port, "/v1/cluster")["committed_seq"]
    start = time.monotonic()
    lhr, lhr_port = start_node(work, "lhr", args["lhr"])
    peer = {}
    deadline = start + 120
    while time.monotonic() < deadline:
        peer = get_json(lhr_port, "/v1/cluster")["peers"][0]
        if peer["applied_seq"] >= target:
            break
        time.sleep(0.005)
    elapsed = time.monotonic() - start
    stop([iad, lhr])
    if peer.get("applied_seq", 0) < target:
        raise RuntimeError(f"lhr did not catch up: {peer}")
    return peer["received"]["bytes"] / elapsed / 1e6, target / elapsed, target


def tls_cost(args):
    d = args.duration
    rows = {"tls": [], "plaintext": []}
    for run in range(args.runs):
        work = tempfile.mkdtemp(prefix="edgestate-tls-bench-")
        try:
            for mode, more in (("tls", []), ("plaintext", ["--peer-insecure-plaintext"])):
                rate, lags, _, converged = run_cluster(f"{work}/{mode}", args.interval,
                                                       args.conns, d, more)
                mbs, recs, n = catch_up(f"{work}/{mode}-catchup", args.interval, args.conns,
                                        max(2, d // 3), more)
                rows[mode].append((rate, pct(lags, 50), pct(lags, 99), mbs, recs))
                print(f"run {run + 1} {mode}: cluster {rate:.0f} increments/s, lag p50 "
                      f"{pct(lags, 50):.1f} ms p99 {pct(lags, 99):.1f} ms ({len(lags)} probes), "
                      f"converged={converged}; catch-up of {n} 1 KiB keys {mbs:.1f} MB/s, "
                      f"{recs:.0f} records/s", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    med = {m: [statistics.median(r[i] for r in rows[m]) for i in range(5)] for m in rows}
    print()
    print(f"Replication interval {args.interval} ms; {args.runs} runs; servers on CPU 0, load on "
          f"CPU 1; {args.conns} connections; medians.\n")
    print("| figure | TLS 1.3 (PSK) | plaintext | TLS / plaintext |")
    print("|---|---|---|---|")
    names = ["increments/s, three replicating nodes", "convergence lag p50 (ms)",
             "convergence lag p99 (ms)", "catch-up MB/s", "catch-up records/s"]
    for i, name in enumerate(names):
        t, p = med["tls"][i], med["plaintext"][i]
        print(f"| {name} | {t:.1f} | {p:.1f} | {t / p:.2f}x |")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--interval", type=int, default=100)
    ap.add_argument("--conns", type=int, default=48, help="total connections, split over nodes")
    ap.add_argument("--tls-cost", action="store_true",
                    help="compare encrypted and plaintext peer links instead")
    args = ap.parse_args()
    if not os.path.exists(EDGESTATE) or not shutil.which("wrk"):
        sys.exit("cluster_bench: needs build/edgestate and wrk (bench/setup.sh)")
    if args.tls_cost:
        tls_cost(args)
        return
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
            total, lag, staleness, converged = run_cluster(work + "/cluster", args.interval,
                                                           args.conns, d)
            cluster.append(total)
            lags.extend(lag)
            stale.extend(staleness)
            print(f"run {run + 1}: single {single[-1]:.0f}/s, three independent "
                  f"{independent[-1]:.0f}/s, replicating cluster {cluster[-1]:.0f}/s, "
                  f"{len(lag)} probes, lag p50 {pct(lag, 50):.1f} ms "
                  f"p99 {pct(lag, 99):.1f} ms, converged={converged}", flush=True)
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

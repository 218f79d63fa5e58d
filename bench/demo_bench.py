#!/usr/bin/env python3
"""The eight-region demo under edgebench (issue 4).

Starts `edgestate demo` (all eight nodes and the WAN emulator pinned to CPU 0) and runs
edgebench against every region from CPU 1, --runs times. Reports per-region read and increment
latency (medians over runs), the stale-read rate beside the staleness bounds the reads carried,
lost updates, convergence per region pair against the RTT model, and how closely the emulated
links match the model (replication round trips sampled from /v1/cluster during the load).

Usage: bench/demo_bench.py [--runs 3] [--duration 30] [--vus 64] [--keys 1000]
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


def model():
    rows = [l.strip().split(",") for l in open(os.path.join(ROOT, "tools", "netem", "rtt-8-regions.csv"))
            if l.strip() and not l.startswith("#")]
    header = rows[0][1:]
    return {(r[0], header[i]): float(v) for r in rows[1:] for i, v in enumerate(r[1:])}


def start_demo(work, base):
    p = subprocess.Popen(["taskset", "-c", "0", EDGESTATE, "demo", "--base-port", str(base),
                          "--data-dir", os.path.join(work, "demo")],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    urls = {}
    for line in p.stdout:
        m = re.match(r"(\w+)\s+(http://\S+)\s+\(pid", line)
        if m:
            urls[m.group(1)] = m.group(2)
        m = re.match(r"wan\s+(http://\S+)/links", line)
        if m:
            urls["_wan"] = m.group(1)
        if line.startswith("demo ready"):
            break
    wan = urls.pop("_wan", None)
    if len(urls) != len(REGIONS) or not wan:
        p.kill()
        sys.exit("demo_bench: the demo did not start")
    return p, urls, wan


def sample_rtts(urls, stop, out):
    while not stop.is_set():
        for region, url in urls.items():
            try:
                with urllib.request.urlopen(url + "/v1/cluster", timeout=5) as r:
                    info = json.loads(r.read())
                for peer in info["peers"]:
                    if peer["rtt_ms"] > 0:
                        out.append((region, peer["region"], peer["rtt_ms"]))
            except OSError:
                pass
        stop.wait(1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--vus", type=int, default=64)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--base-port", type=int, default=28080)
    args = ap.parse_args()
    rtt_model = model()
    results, rtts, lateness = [], [], []
    for run in range(args.runs):
        work = tempfile.mkdtemp(prefix="edgestate-demo-bench-")
        demo, urls, wan = start_demo(work, args.base_port)
        try:
            time.sleep(2)  # Links up.
            stop = threading.Event()
            sampler = threading.Thread(target=sample_rtts, args=(urls, stop, rtts))
            sampler.start()
            out = os.path.join(work, "eb.json")
            cmd = ["taskset", "-c", "1", EDGEBENCH, "--no-progress", "--json", out,
                   "--vus", str(args.vus), "--duration", f"{args.duration}s", "--keys",
                   str(args.keys), "--mix", "read=90,increment=10", "--convergence-probes", "5",
                   "--rtt-file", "default", "--interval-ms", "100"]
            for r in REGIONS:
                cmd += ["--target", f"{r}={urls[r]}"]
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL,
                           timeout=args.duration + 300)
            stop.set()
            sampler.join()
            with urllib.request.urlopen(wan + "/links", timeout=5) as r:
                lateness.extend((l["late_p50_ms"], l["late_p99_ms"]) for l in json.loads(r.read())
                                if l["late_samples"] > 0)
            results.append(json.load(open(out)))
            d = results[-1]
            print(f"run {run + 1}: {d['overall']['requests']} requests, p99 "
                  f"{d['overall']['p99_ms']:.2f} ms, stale {100 * d['overall']['stale_rate']:.2f} %, "
                  f"lost {d['lost_updates']['max_over_regions']}", flush=True)
        finally:
            demo.send_signal(signal.SIGTERM)
            demo.wait(timeout=30)
            subprocess.run(["rm", "-rf", work])

    med = lambda xs: statistics.median(xs)
    print(f"\nEight regions, {args.vus} VUs (8 per region), {args.duration} s, read=90 "
          f"increment=10 over {args.keys} counters, closed loop; medians of {args.runs} runs.\n")
    print("| region | read p50 | read p95 | read p99 | increment p50 | increment p95 | increment p99 | stale reads |")
    print("|---|---|---|---|---|---|---|---|")
    for r in REGIONS:
        rr = [d["regions"][r] for d in results]
        print(f"| {r} | {med([x['read']['p50_ms'] for x in rr]):.2f} | "
              f"{med([x['read']['p95_ms'] for x in rr]):.2f} | {med([x['read']['p99_ms'] for x in rr]):.2f} | "
              f"{med([x['increment']['p50_ms'] for x in rr]):.2f} | {med([x['increment']['p95_ms'] for x in rr]):.2f} | "
              f"{med([x['increment']['p99_ms'] for x in rr]):.2f} | "
              f"{med([100.0 * x['stale_reads'] / max(1, x['reads']) for x in rr]):.1f} % |")
    o = [d["overall"] for d in results]
    s = [d["stale_reads"] for d in results]
    print(f"\n- requests/s (all regions): {med([x['rps'] for x in o]):.0f}; errors: "
          f"{sum(x['errors'] for x in o)} in all runs")
    print(f"- stale reads: {med([100 * x['stale_rate'] for x in o]):.2f} % (a read is stale when "
          f"it misses an increment acknowledged anywhere before it was sent); reported staleness "
          f"bound p50 {med([x['reported_staleness_p50_ms'] for x in s]):.0f} ms, p99 "
          f"{med([x['reported_staleness_p99_ms'] for x in s]):.0f} ms; reads that missed an "
          f"increment older than their own bound: {sum(x['bound_violations'] for x in s)}")
    print(f"- lost updates: {[d['lost_updates']['max_over_regions'] for d in results]} "
          f"(acknowledged increments: {[d['lost_updates']['acknowledged'] for d in results]})")
    conv = [e for d in results for e in d["convergence"]]
    within = sum(1 for e in conv if e["within_model"])
    excess = [e["max_ms"] - e["model_one_way_ms"] for e in conv]
    print(f"- convergence: {within} of {len(conv)} (run, pair) maxima within one-way delay + one "
          f"interval (+20 ms); time beyond the one-way delay: median {med(excess):.0f} ms, max "
          f"{max(excess):.0f} ms (interval 100 ms)")
    print(f"- WAN emulator accuracy under this load: chunks left their link a median "
          f"{med([x[0] for x in lateness]):.3f} ms after their intended release (median over links "
          f"and runs; worst link p99 {max(x[1] for x in lateness):.2f} ms)")
    diffs = [abs(ms - rtt_model[(a, b)]) for a, b, ms in rtts]
    print(f"- replication round trips under load (heartbeat to acknowledgment, which includes "
          f"the receiving node's queueing) minus the model: median {med(diffs):.2f} ms, p99 "
          f"{sorted(diffs)[int(0.99 * len(diffs))]:.2f} ms ({len(diffs)} samples)")
    print("\nConvergence per pair (median over runs of each run's max, ms; model one-way):\n")
    print("| from \\ to | " + " | ".join(REGIONS) + " |")
    print("|---|" + "---|" * len(REGIONS))
    for a in REGIONS:
        cells = []
        for b in REGIONS:
            if a == b:
                cells.append("-")
                continue
            xs = [e["max_ms"] for e in conv if e["from"] == a and e["to"] == b]
            cells.append(f"{med(xs):.0f} ({rtt_model[(a, b)] / 2:.0f})" if xs else "n/a")
        print(f"| {a} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

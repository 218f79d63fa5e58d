#!/usr/bin/env python3
"""Overload (issue 13): a flood of durable PUTs from thousands of connections, far beyond what
the node can commit, while a second client reads. Reports, per run and as medians:

- what the node committed (2xx PUT/s) against what the flood asked (PUT answers/s, the 503
  `overloaded` ones included), so the ratio says how far past its capacity it was driven;
- GET p99 of a 1 KiB key at 50 connections, alone and during the flood (floor: within 3x);
- the node's resident memory before and at its peak during the flood (sampled every 100 ms).

The node runs on CPU 0 with its default bounds (--max-pending-writes 4096, 64 MB); both wrk
processes on CPU 1. Every process started here is stopped by PID.

With --sched-trace, each run also records the scheduler (`perf sched record`, 4 s in the middle
of the read during the flood) and reports how long the node's I/O thread was kept off CPU 0,
whether it was asleep or preempted, and which of the node's threads (or others) had the core
meanwhile: the measurement behind docs/benchmarks.md, "A scheduler trace of the 4 ms".

Usage: bench/overload_bench.py [--runs 3] [--duration 10] [--flood-conns 2000]
                               [--max-pending-writes N] [--sched-trace]
"""
import argparse
import collections
import os
import re
import subprocess
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import node_bench as nb  # noqa: E402  (Proc, wrk, free_port)
import kv_bench as kb  # noqa: E402  (put, rss_mb)


def flood(port, conns, duration, out, nice):
    r = nb.wrk(f"http://127.0.0.1:{port}/", conns, duration, "kv_put.lua", nice=nice)
    refused_per_s = r["non2xx"] / duration
    out.update(refused=r["non2xx"], socket_errors=r["socket_errors"], answered_per_s=r["rps"],
               committed_per_s=r["rps"] - refused_per_s)


def sched_summary(data):
    """Parses `perf sched timehist`: the node's busiest I/O thread (named es-http-N; its writer
    is es-writer, docs/threading.md) and the intervals it spent off CPU 0, and what ran in the
    long ones."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", data], capture_output=True,
                         text=True, timeout=600).stdout
    runs = []  # (cpu, who, start ms, end ms, sched delay ms)
    for line in out.splitlines():
        f = line.split()
        if len(f) < 6 or not f[0][0].isdigit() or not f[1].startswith("["):
            continue
        try:
            end, delay, run = float(f[0]) * 1000, float(f[-2]), float(f[-1])
        except ValueError:
            continue
        who = re.sub(r"\[.*\]$", "", f[2])
        runs.append((f[1], who, end - run, end, delay))
    busy = collections.Counter()
    for cpu, who, b, e, _ in runs:
        busy[who] += e - b
    io = max((w for w in busy if w.startswith("es-http")), key=lambda w: busy[w], default=None)
    if io is None:
        return "sched trace: no node thread seen"
    mine = [r for r in runs if r[1] == io]
    # Each interval off the CPU is either a preemption (still runnable: no wakeup, delay 0), all
    # of it waiting for the core, or a sleep whose last part (the delay) waited for the core.
    gaps, waits, long_waits, preempted, long_others = [], [], 0, 0, collections.Counter()
    for a, b in zip(mine, mine[1:]):
        g = b[2] - a[3]
        w = g if b[4] == 0 else min(g, b[4])
        gaps.append(g)
        waits.append(w)
        if w > 2.0:
            long_waits += 1
            preempted += b[4] == 0
            for cpu, who, s0, e0, _ in runs:
                if cpu == a[0] and who != io and e0 > b[2] - w and s0 < b[2]:
                    long_others[who] += min(e0, b[2]) - max(s0, b[2] - w)
    gaps.sort()
    waits.sort()
    q = lambda v, x: v[min(len(v) - 1, int(len(v) * x))]
    total = sum(busy.values())
    shares = ", ".join(f"{w} {busy[w] / 1000:.2f} s" for w, _ in busy.most_common(4))
    others = ", ".join(f"{w} {t:.0f} ms" for w, t in long_others.most_common(3))
    return (f"sched trace: CPU time {shares} (of {total / 1000:.2f} s seen); I/O thread off CPU "
            f"p50 {q(gaps, 0.5):.2f} p90 {q(gaps, 0.9):.2f} p99 {q(gaps, 0.99):.2f} ms, of which "
            f"waiting for the core p50 {q(waits, 0.5):.2f} p90 {q(waits, 0.9):.2f} p99 "
            f"{q(waits, 0.99):.2f} ms; {long_waits} waits over 2 ms ({preempted} preempted, the "
            f"rest woken and kept waiting); the core meanwhile: {others or 'nothing'}")


def one_run(node, port, args):
    get_url = f"http://127.0.0.1:{port}/v1/kv/k1"
    alone = nb.wrk(get_url, 50, args.duration)
    rss_before = kb.rss_mb(node.p.pid)[0]
    peak = [rss_before]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            peak[0] = max(peak[0], kb.rss_mb(node.p.pid)[0])

    sampler = threading.Thread(target=sample)
    sampler.start()
    f = {}
    ft = threading.Thread(target=flood, args=(port, args.flood_conns, args.duration + 4, f,
                                              args.flood_nice))
    ft.start()
    time.sleep(2)  # The flood's connections are open and its queue full.
    tracer = None
    if args.sched_trace:
        trace = os.path.join(tempfile.gettempdir(), f"overload-sched-{os.getpid()}.data")

        recorded = {}

        def record():
            time.sleep(max(0.0, (args.duration - 4) / 2))
            try:
                recorded["run"] = subprocess.run(
                    ["perf", "sched", "record", "-o", trace, "--", "sleep", "4"],
                    capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                recorded["run"] = None

        tracer = threading.Thread(target=record)
        tracer.start()
    during = nb.wrk(get_url, 50, args.duration)
    sched = ""
    if tracer:
        tracer.join()
        rec = recorded.get("run")
        if rec is None:
            sched = "sched trace: perf sched record did not finish within 60 s"
        elif rec.returncode == 0 and os.path.exists(trace):
            sched = sched_summary(trace)
        else:  # Not root, or perf cannot open the scheduler's tracepoints here.
            lines = rec.stderr.strip().splitlines() or ["no output"]
            sched = f"sched trace: perf sched record failed ({rec.returncode}): {lines[-1]}"
        if os.path.exists(trace):
            os.unlink(trace)
    ft.join()
    stop.set()
    sampler.join()
    r = {"get_p99_alone": alone["p99"], "get_p99_flood": during["p99"],
         "get_rps_alone": alone["rps"], "get_rps_flood": during["rps"],
         "get_non2xx": during["non2xx"], "rss_before": rss_before, "rss_peak": peak[0],
         "sched": sched, **f}
    r["p99_ratio"] = r["get_p99_flood"] / r["get_p99_alone"]
    r["drive"] = r["answered_per_s"] / max(1.0, r["committed_per_s"])
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--flood-conns", type=int, default=2000)
    ap.add_argument("--max-pending-writes", type=int, help="passed to the node (default: its own)")
    ap.add_argument("--max-batch-writes", type=int, help="passed to the node (default: its own)")
    ap.add_argument("--sched-trace", action="store_true",
                    help="record the scheduler during the flood's reads (perf, root) and report "
                         "where the node's I/O thread waited")
    ap.add_argument("--flood-nice", type=int, default=19,
                    help="the flood's wrk runs at this nice level, so it does not delay the "
                         "reading wrk beside it on CPU 1 (0: as before session 11)")
    args = ap.parse_args()
    for tool in ("wrk", "taskset") + (("perf",) if args.sched_trace else ()):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run bench/setup.sh")
    if not os.path.exists(nb.EDGESTATE):
        sys.exit("build/edgestate is missing (run scripts/setup.sh)")
    # Thousands of sockets on each side; children inherit the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.flood_conns + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 2 * args.flood_conns + 256:
        sys.exit(f"the open-file limit ({hard}) is too low for {args.flood_conns} connections")

    runs = []
    for i in range(args.runs):
        # A fresh node per run: a flood leaves flushes and compactions behind that would slow
        # the next run's unloaded reads.
        work = tempfile.mkdtemp(prefix="overload-bench-")
        node = None
        try:
            port = nb.free_port()
            node = nb.Proc("edgestate-overload",
                           [nb.EDGESTATE, "serve", "--port", str(port), "--region", "bench",
                            "--listen", "127.0.0.1", "--data-dir", os.path.join(work, "es")]
                           + (["--max-pending-writes", str(args.max_pending_writes)]
                              if args.max_pending_writes else [])
                           + (["--max-batch-writes", str(args.max_batch_writes)]
                              if args.max_batch_writes is not None else []), port)
            kb.put(port, "k1", b"v" * 1024)
            runs.append(one_run(node, port, args))
        finally:
            if node:
                node.stop()
            shutil.rmtree(work, ignore_errors=True)
        r = runs[-1]
        print(f"run {i + 1}: flood {r['answered_per_s']:.0f} PUT answers/s, "
              f"{r['committed_per_s']:.0f} committed/s ({r['drive']:.1f}x), "
              f"{r['refused']} refused, socket errors: {r['socket_errors'] or 'none'}; GET p99 "
              f"{r['get_p99_alone']:.2f} ms alone, {r['get_p99_flood']:.2f} ms during "
              f"({r['p99_ratio']:.2f}x), {r['get_rps_flood']:.0f}/s, non-2xx "
              f"{r['get_non2xx']}; RSS {r['rss_before']:.0f} -> peak {r['rss_peak']:.0f} MB",
              flush=True)
        if r["sched"]:
            print("  " + r["sched"], flush=True)

    def med(k):
        return statistics.median(r[k] for r in runs)

    print(f"\nmedians of {len(runs)} runs, flood of {args.flood_conns} connections, "
          f"--max-pending-writes {args.max_pending_writes or 'default'}, --max-batch-writes "
          f"{'default' if args.max_batch_writes is None else args.max_batch_writes}:")
    print("| measure | median | per run |\n|---|---|---|")
    for k, label, fmt in (
            ("answered_per_s", "PUT answers/s during the flood", "{:.0f}"),
            ("committed_per_s", "PUTs committed/s during the flood", "{:.0f}"),
            ("drive", "answers / commits", "{:.1f}x"),
            ("get_p99_alone", "GET p99 alone (ms)", "{:.2f}"),
            ("get_p99_flood", "GET p99 during the flood (ms)", "{:.2f}"),
            ("p99_ratio", "GET p99 flood / alone (floor 3x)", "{:.2f}x"),
            ("get_rps_flood", "GET/s during the flood", "{:.0f}"),
            ("rss_before", "RSS before the flood (MB)", "{:.0f}"),
            ("rss_peak", "RSS peak during the flood (MB)", "{:.0f}")):
        print(f"| {label} | {fmt.format(med(k))} | "
              + ", ".join(fmt.format(r[k]) for r in runs) + " |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Overload (issue 13): a flood of durable PUTs from thousands of connections, far beyond what
the node can commit, while a second client reads. Reports, per run and as medians:

- what the node committed (2xx PUT/s) against what the flood asked (PUT answers/s, the 503
  `overloaded` ones included), so the ratio says how far past its capacity it was driven;
- GET p99 of a 1 KiB key at 50 connections, alone and during the flood (floor: within 3x);
- the node's resident memory before and at its peak during the flood (sampled every 100 ms).

The node runs on CPU 0 with its default bounds (--max-pending-writes 4096, 64 MB); both wrk
processes on CPU 1. Every process started here is stopped by PID.

Usage: bench/overload_bench.py [--runs 3] [--duration 10] [--flood-conns 2000]
                               [--max-pending-writes N]
"""
import argparse
import os
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
    during = nb.wrk(get_url, 50, args.duration)
    ft.join()
    stop.set()
    sampler.join()
    r = {"get_p99_alone": alone["p99"], "get_p99_flood": during["p99"],
         "get_rps_alone": alone["rps"], "get_rps_flood": during["rps"],
         "get_non2xx": during["non2xx"], "rss_before": rss_before, "rss_peak": peak[0], **f}
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
    ap.add_argument("--flood-nice", type=int, default=19,
                    help="the flood's wrk runs at this nice level, so it does not delay the "
                         "reading wrk beside it on CPU 1 (0: as before session 11)")
    args = ap.parse_args()
    for tool in ("wrk", "taskset"):
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

#!/usr/bin/env python3
"""Start-up time with a large store: fills a data directory with --count counters
(build/edgestate-populate), then starts the node --runs times and reports the time from exec
to the "listening" line and the node's own load time, medians.

Usage: bench/startup_bench.py [--count 1000000] [--runs 3]
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edgestate-startup-")
    data = os.path.join(work, "data")
    try:
        out = subprocess.run([os.path.join(ROOT, "build", "edgestate-populate"), "--data-dir", data,
                              "--count", str(args.count)], check=True, capture_output=True,
                             text=True).stdout
        print(out.strip())
        du = subprocess.run(["du", "-sh", data], capture_output=True, text=True).stdout.split()[0]
        ready, loads = [], []
        for i in range(args.runs):
            start = time.monotonic()
            p = subprocess.Popen(["taskset", "-c", "0", os.path.join(ROOT, "build", "edgestate"),
                                  "serve", "--listen", "127.0.0.1", "--port", "0",
                                  "--data-dir", data], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            log = ""
            for line in p.stdout:
                log += line
                if "listening on" in line:
                    break
            ready.append((time.monotonic() - start) * 1000)
            m = re.search(r"loaded (\d+) counters from .* in (\d+) ms", log)
            assert m and int(m.group(1)) == args.count, log
            loads.append(int(m.group(2)))
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
            print(f"run {i + 1}: ready after {ready[-1]:.0f} ms (loading {loads[-1]} ms)")
        print(f"\n{args.count} counters ({du} on disk): exec to listening median "
              f"{statistics.median(ready):.0f} ms, load median {statistics.median(loads):.0f} ms "
              f"over {args.runs} starts")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Sessions and the geo cache over the eight-region demo (issue 12).

Starts `edgestate demo` (eight nodes and the WAN emulator pinned to CPU 0, every node with
--cache-origin pointing at the origin edgebench serves) and runs from CPU 1, --runs times:

  session  edgebench --workload session at consistency=session with a share of requests sent to
           another region (roaming users), then the same load at consistency=local for contrast;
           violations (read after own delete, older than own write, past expiry, missing) and
           latency per operation.
  cache    edgebench --workload cache: Zipf --zipf-s over --keys keys; hit ratio, origin
           requests per key per region, and purge propagation per region pair against the RTT
           model (one-way + replication interval + 20 ms).

Reports medians over runs. Every process started here is stopped by PID.

Usage: bench/geo_bench.py [--runs 3] [--duration 20] [--vus 64] [--keys 100000]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_bench as db  # noqa: E402  (start_demo with the demo's regions, EDGEBENCH)


def start_demo(work, base, origin_port):
    p = subprocess.Popen(["taskset", "-c", "0", db.EDGESTATE, "demo", "--base-port", str(base),
                          "--data-dir", os.path.join(work, "demo"),
                          f"--node-arg=--cache-origin=http://127.0.0.1:{origin_port}"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    urls = {}
    for line in p.stdout:
        parts = line.split()
        if len(parts) >= 2 and parts[0] in db.REGIONS and parts[1].startswith("http://"):
            urls[parts[0]] = parts[1]
        if line.startswith("demo ready"):
            break
    if len(urls) != len(db.REGIONS):
        p.kill()
        sys.exit("geo_bench: the demo did not start")
    return p, urls


def edgebench(urls, work, name, args):
    out = os.path.join(work, f"{name}.json")
    cmd = ["taskset", "-c", "1", db.EDGEBENCH, "--no-progress", "--json", out] + args
    for region, url in urls.items():
        cmd += ["--target", f"{region}={url}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode not in (0, 4) or not os.path.exists(out):
        sys.exit(f"geo_bench: edgebench failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr}")
    return json.load(open(out)), r.stdout


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--vus", type=int, default=64)
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--zipf-s", type=float, default=0.99)
    ap.add_argument("--purges", type=int, default=40)
    ap.add_argument("--hop-share", type=float, default=0.2)
    ap.add_argument("--base-port", type=int, default=29080)
    ap.add_argument("--origin-port", type=int, default=29790)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="geo-bench-")
    results = []
    for run in range(args.runs):
        demo, urls = start_demo(os.path.join(work, f"run{run}"), args.base_port,
                                args.origin_port)
        try:
            common = ["--vus", str(args.vus), "--duration", f"{args.duration}s"]
            session, _ = edgebench(urls, work, f"session{run}", common + [
                "--workload", "session", "--hop-share", str(args.hop_share),
                "--session-ttl-ms", "2000", "--think-ms", "10"])
            local, _ = edgebench(urls, work, f"local{run}", common + [
                "--workload", "session", "--hop-share", str(args.hop_share),
                "--session-ttl-ms", "2000", "--think-ms", "10", "--consistency", "local"])
            cache, text = edgebench(urls, work, f"cache{run}", common + [
                "--workload", "cache", "--origin", f"127.0.0.1:{args.origin_port}",
                "--keys", str(args.keys), "--dist", "zipf", "--zipf-s", str(args.zipf_s),
                "--purge-probes", str(args.purges), "--rtt-file", "default",
                "--interval-ms", "100"])
            results.append((session, local, cache))
            print(f"run {run + 1}: session violations {session['violations']['total']}, "
                  f"local violations {local['violations']['total']}, cache hit ratio "
                  f"{100 * cache['hit_ratio']:.1f} %, purge p99 {cache['purge']['p99_ms']:.0f} ms",
                  flush=True)
        finally:
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()

    print(f"\neight regions, {args.runs} runs of {args.duration} s, {args.vus} VUs; medians\n")
    print("sessions (TTL 2 s, 20 requests per login, "
          f"{100 * args.hop_share:.0f} % of requests to another region):")
    print(f"{'level':<8} {'violations':>10} {'get p50':>8} {'get p99':>8} {'login p99':>9} "
          f"{'touch p99':>9} {'logins':>7}")
    for label, idx in (("session", 0), ("local", 1)):
        rs = [r[idx] for r in results]
        ops = lambda op, q: med([r["operations"][op][q] for r in rs])  # noqa: E731
        print(f"{label:<8} {med([r['violations']['total'] for r in rs]):>10.0f} "
              f"{ops('get', 'p50_ms'):>8.1f} {ops('get', 'p99_ms'):>8.1f} "
              f"{ops('login', 'p99_ms'):>9.1f} {ops('touch', 'p99_ms'):>9.1f} "
              f"{med([r['logins'] for r in rs]):>7.0f}")
    kinds = {}
    for r in results:
        for k, n in r[1]["violations"]["by_kind"].items():
            kinds.setdefault(k, []).append(n)
    print("local violations by kind (median): " +
          ", ".join(f"{k} {med(v):.0f}" for k, v in sorted(kinds.items())))

    cs = [r[2] for r in results]
    print(f"\ncache (Zipf s={args.zipf_s} over {args.keys} keys, origin max-age 600 s):")
    print(f"hit ratio {100 * med([c['hit_ratio'] for c in cs]):.1f} % "
          f"(runs: {', '.join('%.1f' % (100 * c['hit_ratio']) for c in cs)}); "
          f"origin requests per key per region: mean "
          f"{med([c['origin']['requests_per_key_per_region'] for c in cs]):.3f}, max "
          f"{max(c['origin']['max_requests_per_key_per_region'] for c in cs)}")
    print(f"get p50 {med([c['operations']['get']['p50_ms'] for c in cs]):.2f} ms, "
          f"p99 {med([c['operations']['get']['p99_ms'] for c in cs]):.2f} ms, "
          f"requests/s {med([c['requests'] / c['config']['duration_s'] for c in cs]):.0f}")
    print(f"purge propagation: p50 {med([c['purge']['p50_ms'] for c in cs]):.1f} ms, "
          f"p99 {med([c['purge']['p99_ms'] for c in cs]):.1f} ms, max "
          f"{max(c['purge']['max_ms'] for c in cs):.1f} ms; purges failed "
          f"{sum(c['purge']['failed'] for c in cs)}")
    outside = [(c_i, p) for c_i, c in enumerate(cs) for p in c["purge"]["pairs"]
               if not p.get("within_model", True)]
    pairs = sum(len(c["purge"]["pairs"]) for c in cs)
    print(f"pairs within one-way + interval + 20 ms (max over samples): {pairs - len(outside)} "
          f"of {pairs}")
    for run, p in outside[:10]:
        print(f"  run {run + 1} {p['from']}->{p['to']}: max {p['max_ms']:.1f} ms, limit "
              f"{p['model_limit_ms']:.0f} ms")
    print(f"\nJSON per run in {work}")


if __name__ == "__main__":
    main()

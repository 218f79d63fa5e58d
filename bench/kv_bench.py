#!/usr/bin/env python3
"""Keys on one node (issue 12): GET /v1/kv of a 1 KiB value against nginx's fixed 200, durable
PUT of 1 KiB values against Redis SET with appendfsync always (redis-benchmark -d 1024), both
at 50 connections in one run; and the resident memory of a node holding --fill-gb of sessions
with --cache-mb 256.

Servers are pinned to CPU 0, wrk and redis-benchmark to CPU 1. Each comparison runs --runs
times; the report gives medians and ratios. Every process started here is stopped by PID.

Usage: bench/kv_bench.py [--runs 3] [--duration 10] [--fill-gb 2] [--skip-fill]
"""
import argparse
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import node_bench as nb  # noqa: E402  (Proc, wrk, free_port, med)

CACHE_MB = 256


def put(port, key, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/kv/{key}", data=body, method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (200, 201)


def redis_set(port, n):
    out = subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-t", "set",
                          "-d", "1024", "-c", "50", "-n", str(n), "-r", "100000", "--csv"],
                         capture_output=True, text=True, timeout=600).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    row = next(r for r in rows if r["test"] == "SET")
    return {"rps": float(row["rps"]), "p50": float(row["p50_latency_ms"]),
            "p99": float(row["p99_latency_ms"]), "secs": n / float(row["rps"])}


def thread_cpu(pid):
    """CPU seconds (user + system) of the process's threads, summed by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # The thread ended.
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_delta(before, after):
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def commit_stats(port):
    """The node's group-commit counters: synced writes (count, seconds) and batched ops."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = ("edgestate_fsync_seconds_sum", "edgestate_fsync_seconds_count",
            "edgestate_commit_batch_size_sum")
    out = dict.fromkeys(want, 0.0)
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in out:
            out[name] = float(value)
    return out


def measured(pid, stats_port, run):
    """Runs run() and returns its result with the server's CPU per request (us) by part, and
    with stats_port, its group commits: batches, ops per batch, and the synced write's mean."""
    cpu0 = thread_cpu(pid)
    c0 = commit_stats(stats_port) if stats_port else None
    res = run()
    cpu = cpu_delta(cpu0, thread_cpu(pid))
    ops = res["rps"] * res["secs"]
    parts = {"writer": 0.0, "io": 0.0, "background": 0.0}  # Other threads count in cpu_us only.
    for name, secs in cpu.items():
        part = ("writer" if name == "es-writer" else "io" if name.startswith("es-http")
                else "background" if name.startswith("rocksdb") else None)
        if part:
            parts[part] += secs
    res["cpu_us"] = sum(cpu.values()) / ops * 1e6
    res.update({f"{k}_us": v / ops * 1e6 for k, v in parts.items()})
    if c0:
        c1 = commit_stats(stats_port)
        d = {k: c1[k] - c0[k] for k in c1}
        n = d["edgestate_fsync_seconds_count"]
        res["batches_per_s"] = n / res["secs"]
        res["batch"] = d["edgestate_commit_batch_size_sum"] / n if n else 0.0
        res["sync_ms"] = d["edgestate_fsync_seconds_sum"] / n * 1e3 if n else 0.0
    return res


def explain(res):
    """Where a durable write's time goes, and what 0.9x of Redis would leave for it.

    Fifty clients in a closed loop: each waits for its answer before it writes again, so a commit
    cycle (stage the batch, append and fdatasync the WAL, insert into the memtable, answer, read
    the next requests) serves at most one write per client, and whatever the node does per write
    between two fdatasyncs adds to every client's wait."""
    print("\nPer write, medians (CPU from /proc; commits from the node's /metrics):\n")
    print("| run | req/s | CPU us per write (writer / I/O / background) | commits/s | writes "
          "per commit | synced write (WAL + fdatasync + memtable) ms | rest of the cycle per "
          "write us |\n|---|---|---|---|---|---|---|")
    for name, label in (("put", "edgestate PUT /v1/kv 1 KiB"), ("inc", "edgestate POST /increment"),
                        ("redis", "Redis SET -d 1024, appendfsync always")):
        runs = res[name]
        row = f"| {label} | {nb.med(runs, 'rps'):.0f} | {nb.med(runs, 'cpu_us'):.1f}"
        if name == "redis":
            print(row + " | | | | |")
            continue
        rest = [(1e6 / r["batches_per_s"] - r["sync_ms"] * 1e3) / r["batch"] for r in runs]
        row += (f" ({nb.med(runs, 'writer_us'):.1f} / {nb.med(runs, 'io_us'):.1f} / "
                f"{nb.med(runs, 'background_us'):.1f}) | {nb.med(runs, 'batches_per_s'):.0f} | "
                f"{nb.med(runs, 'batch'):.1f} | {nb.med(runs, 'sync_ms'):.3f} | "
                f"{statistics.median(rest):.1f} |")
        print(row)
    target = 0.9 * nb.med(res["redis"], "rps")
    batch, sync_ms = nb.med(res["put"], "batch"), nb.med(res["put"], "sync_ms")
    cycle_us = batch / target * 1e6
    print(f"\n0.9x Redis is {target:.0f} PUT/s: a commit of {batch:.1f} writes every "
          f"{cycle_us:.0f} us, of which the synced write took {sync_ms * 1e3:.0f} us; that leaves "
          f"{(cycle_us - sync_ms * 1e3) / batch:.1f} us per write for the rest of the cycle, and "
          f"{1e6 / target:.1f} us of the core per write in all (measured: "
          f"{nb.med(res['put'], 'cpu_us'):.1f}; Redis: {nb.med(res['redis'], 'cpu_us'):.1f}).")


def rss_mb(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def du_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--fill-gb", type=float, default=2.0)
    ap.add_argument("--skip-fill", action="store_true")
    ap.add_argument("--server-env", action="append", default=[],
                    help="K=V for edgestate's environment (e.g. LD_PRELOAD=... to try an allocator)")
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "redis-server", "redis-benchmark", "taskset"):
        if not (shutil.which(tool) or os.path.exists("/usr/sbin/" + tool)):
            sys.exit(f"{tool} is missing: run bench/setup.sh")
    work = tempfile.mkdtemp(prefix="kv-bench-")
    procs = []
    try:
        ngx_port, es_port, redis_port = nb.free_port(), nb.free_port(), nb.free_port()
        ngx_dir = os.path.join(work, "nginx")
        os.makedirs(ngx_dir)
        conf = open(os.path.join(nb.BENCH, "nginx.conf.in")).read()
        with open(os.path.join(ngx_dir, "nginx.conf"), "w") as f:
            f.write(conf.replace("@PORT@", str(ngx_port)).replace("@DIR@", ngx_dir))
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(nb.Proc("nginx", [nginx_bin, "-p", ngx_dir, "-c",
                                       os.path.join(ngx_dir, "nginx.conf"), "-g",
                                       "daemon off; master_process off;"], ngx_port))
        server_env = dict(os.environ, **dict(kv.split("=", 1) for kv in args.server_env))
        procs.append(nb.Proc("edgestate", [nb.EDGESTATE, "serve", "--port", str(es_port),
                                           "--region", "bench", "--data-dir",
                                           os.path.join(work, "es"), "--listen", "127.0.0.1",
                                           "--cache-mb", str(CACHE_MB)], es_port,
                             env=server_env))
        procs.append(nb.Proc("redis", ["redis-server", "--port", str(redis_port), "--save", "",
                                       "--appendonly", "yes", "--appendfsync", "always",
                                       "--dir", work, "--bind", "127.0.0.1"], redis_port))
        put(es_port, "k1", b"v" * 1024)
        d = args.duration
        es_pid, redis_pid = procs[1].p.pid, procs[2].p.pid

        def es_wrk(path, script):
            return dict(nb.wrk(f"http://127.0.0.1:{es_port}{path}", 50, d, script), secs=d)

        res = {"nginx": [], "get": [], "put": [], "redis": [], "inc": []}
        for i in range(args.runs):
            res["nginx"].append(nb.wrk(f"http://127.0.0.1:{ngx_port}/", 50, d))
            res["get"].append(nb.wrk(f"http://127.0.0.1:{es_port}/v1/kv/k1", 50, d))
            res["put"].append(measured(es_pid, es_port, lambda: es_wrk("/", "kv_put.lua")))
            # About as many SETs as the PUT run made, so both runs last about as long.
            n = max(50000, int(res["put"][-1]["rps"] * d))
            res["redis"].append(measured(redis_pid, None, lambda: redis_set(redis_port, n)))
            # Durable increments: the same HTTP layer and group commit with a few bytes per write.
            res["inc"].append(measured(es_pid, es_port, lambda: es_wrk("/increment", "post.lua")))
            print(f"run {i + 1}: nginx {res['nginx'][-1]['rps']:.0f}/s, GET /v1/kv "
                  f"{res['get'][-1]['rps']:.0f}/s (p99 {res['get'][-1]['p99']:.2f} ms); PUT "
                  f"{res['put'][-1]['rps']:.0f}/s (p99 {res['put'][-1]['p99']:.2f} ms), Redis SET "
                  f"{res['redis'][-1]['rps']:.0f}/s (p99 {res['redis'][-1]['p99']:.2f} ms); "
                  f"non-2xx {res['get'][-1]['non2xx'] + res['put'][-1]['non2xx']}", flush=True)
        print("\n| system | req/s | p50 ms | p99 ms |\n|---|---|---|---|")
        for name, label in (("nginx", "nginx fixed 200"), ("get", "edgestate GET /v1/kv (1 KiB)"),
                            ("redis", "Redis SET -d 1024, appendfsync always"),
                            ("put", "edgestate PUT /v1/kv (1 KiB, fsync)")):
            print(f"| {label} | {nb.med(res[name], 'rps'):.0f} | {nb.med(res[name], 'p50'):.2f} | "
                  f"{nb.med(res[name], 'p99'):.2f} |")
        get_ratio = nb.med(res["get"], "rps") / nb.med(res["nginx"], "rps")
        put_ratio = nb.med(res["put"], "rps") / nb.med(res["redis"], "rps")
        print(f"\nGET /v1/kv / nginx: {get_ratio:.2f}x (floor 0.8x); per run "
              + ", ".join(f"{g['rps'] / n['rps']:.2f}x" for g, n in zip(res["get"], res["nginx"])))
        print(f"PUT / Redis SET (durable): {put_ratio:.2f}x (floor 0.9x); per run "
              + ", ".join(f"{p['rps'] / r['rps']:.2f}x" for p, r in zip(res["put"], res["redis"])))
        print(f"p99 PUT {nb.med(res['put'], 'p99'):.2f} ms vs Redis {nb.med(res['redis'], 'p99'):.2f}"
              " ms (floor: no worse)")
        explain(res)

        if args.skip_fill:
            return
        # Resident memory while holding --fill-gb of 1 KiB sessions (1-day TTL).
        es = procs[1]
        target = int(args.fill_gb * 2**30 / 1024)
        written, t0 = 0, time.monotonic()
        env = dict(os.environ, KV_TTL_MS=str(24 * 3600 * 1000))
        while written < target:
            env["KV_OFFSET"] = str(written)
            cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d20s", "--timeout", "5s", "-s",
                   os.path.join(nb.BENCH, "wrk", "kv_put.lua"), f"http://127.0.0.1:{es_port}/"]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120).stdout
            n = int(out.split(" requests in")[0].split()[-1])
            assert "Non-2xx" not in out, out
            written += n
            rss, hwm = rss_mb(es.p.pid)
            print(f"  {written} sessions ({written * 1024 / 2**30:.2f} GiB of values), RSS "
                  f"{rss:.0f} MB, peak {hwm:.0f} MB, data dir {du_mb(os.path.join(work, 'es')):.0f} "
                  f"MB, {time.monotonic() - t0:.0f} s", flush=True)
        env = dict(os.environ, KV_KEYS=str(written))
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d20s", "--latency",
                              "-s", os.path.join(nb.BENCH, "wrk", "kv_get_random.lua"),
                              f"http://127.0.0.1:{es_port}/"],
                             capture_output=True, text=True, env=env, timeout=120).stdout
        reads = out.split("Requests/sec:")[1].split()[0]
        rss, hwm = rss_mb(es.p.pid)
        print(f"\nafter 20 s of random GETs over all {written} sessions ({reads} req/s): RSS "
              f"{rss:.0f} MB, peak {hwm:.0f} MB; limit --cache-mb + 128 = {CACHE_MB + 128} MB: "
              f"{'ok' if hwm <= CACHE_MB + 128 else 'OVER'}")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

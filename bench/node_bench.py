#!/usr/bin/env python3
"""Single-node HTTP benchmark: edgestate against nginx (the HTTP ceiling) and the article's
Express + JSON-file counter, measured in one run with wrk.

Server processes are pinned to CPU 0 and wrk to CPU 1. Each configuration runs --runs times;
the report gives medians and ratios, the lost-increment check for both counters, and the
single-connection p50. Every process this script starts is stopped by PID at the end.

Usage: bench/node_bench.py [--runs 3] [--duration 10] [--out docs/benchmarks-node.md]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
EDGESTATE = os.path.join(ROOT, "build", "edgestate")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Proc:
    def __init__(self, name, cmd, port, env=None, cwd=None):
        self.name, self.port = name, port
        self.log = open(os.path.join(tempfile.gettempdir(), f"bench-{name}.log"), "w")
        self.p = subprocess.Popen(["taskset", "-c", "0"] + cmd, env=env, cwd=cwd,
                                  stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(port)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def http_json(method, url, attempts=50):
    """GET/POST and parse JSON. The Express-style counter answers 500 while its file is torn by
    a concurrent rewrite, so retry for a while before giving up."""
    for i in range(attempts):
        try:
            req = urllib.request.Request(url, method=method)
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except (urllib.error.HTTPError, ValueError):
            if i == attempts - 1:
                raise
            time.sleep(0.1)


def to_ms(s):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", s)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def wrk(url, conns, duration, script=None, nice=0):
    cmd = (["nice", "-n", str(nice)] if nice else []) + [
        "taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
        "--timeout", "5s"]
    if script:
        cmd += ["-s", os.path.join(BENCH, "wrk", script)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        res[f"p{q}"] = to_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"ACKED (\d+) FAILED (\d+)", out)
    if m:
        res["acked"], res["failed"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1) if m else ""
    return res


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--out", help="also write the markdown report to this file")
    args = ap.parse_args()

    for tool in ("wrk", "nginx", "node", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"node_bench: {tool} is not installed (run bench/setup.sh)")
    if not os.path.exists(EDGESTATE):
        sys.exit("node_bench: build/edgestate is missing (run scripts/setup.sh)")
    express_dir = os.path.join(BENCH, "baselines", "express-counter")
    if not os.path.isdir(os.path.join(express_dir, "node_modules", "express")):
        sys.exit("node_bench: express is not installed (run bench/setup.sh)")

    work = tempfile.mkdtemp(prefix="edgestate-bench-")
    procs = []
    try:
        # nginx: the ceiling.
        ngx_port = free_port()
        ngx_dir = os.path.join(work, "nginx")
        os.makedirs(ngx_dir)
        conf = open(os.path.join(BENCH, "nginx.conf.in")).read()
        conf = conf.replace("@DIR@", ngx_dir).replace("@PORT@", str(ngx_port))
        with open(os.path.join(ngx_dir, "nginx.conf"), "w") as f:
            f.write(conf)
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(Proc("nginx", [nginx_bin, "-p", ngx_dir, "-c", os.path.join(ngx_dir, "nginx.conf"),
                                    "-g", "daemon off; master_process off;"], ngx_port))
        # edgestate, fsync and async.
        es = {}
        for mode in ("fsync", "async"):
            port = free_port()
            p = Proc(f"edgestate-{mode}", [EDGESTATE, "serve", "--listen", "127.0.0.1", "--port",
                                           str(port), "--data-dir", os.path.join(work, f"es-{mode}"),
                                           "--durability", mode], port)
            procs.append(p)
            es[mode] = p
        # The article's Express design.
        ex_port = free_port()
        ex_data = os.path.join(work, "express")
        os.makedirs(ex_data)
        env = dict(os.environ, PORT=str(ex_port), DATA_DIR=ex_data)
        procs.append(Proc("express", ["node", "server.js"], ex_port, env=env, cwd=express_dir))

        targets = {
            "nginx": f"http://127.0.0.1:{ngx_port}",
            "edgestate": f"http://127.0.0.1:{es['fsync'].port}",
            "edgestate-async": f"http://127.0.0.1:{es['async'].port}",
            "express": f"http://127.0.0.1:{ex_port}",
        }
        results = {k: {"read": [], "incr": [], "loss": []} for k in targets}
        d = args.duration
        for run in range(args.runs):
            for name, base in targets.items():
                if name != "edgestate-async":
                    r = wrk(base + "/read", args.conns, d)
                    results[name]["read"].append(r)
                    print(f"run {run + 1} {name:16} GET  /read      {r['rps']:9.0f} req/s  "
                          f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms", flush=True)
                r = wrk(base + "/increment", args.conns, d, "post.lua")
                results[name]["incr"].append(r)
                print(f"run {run + 1} {name:16} POST /increment {r['rps']:9.0f} req/s  "
                      f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms", flush=True)
                if name == "nginx":
                    continue
                # Lost increments: acknowledged (HTTP 200 seen by wrk) against the counter's move.
                before = http_json("GET", base + "/read")["value"]
                r = wrk(base + "/increment", args.conns, min(d, 5), "post_count.lua")
                time.sleep(0.5)
                after = http_json("GET", base + "/read")["value"]
                moved = after - before
                lost = max(0, r["acked"] - moved)
                results[name]["loss"].append({"acked": r["acked"], "moved": moved, "lost": lost})
                print(f"run {run + 1} {name:16} acked {r['acked']} counter moved {moved} "
                      f"lost {lost} ({100.0 * lost / max(1, r['acked']):.1f} %)", flush=True)

        single = {}
        for ep, script in (("/read", None), ("/increment", "post.lua")):
            rs = [wrk(targets["edgestate"] + ep, 1, min(d, 5), script) for _ in range(args.runs)]
            single[ep] = med(rs, "p50")

        metrics = urllib.request.urlopen(targets["edgestate-async"] + "/metrics", timeout=10).read().decode()
        unsynced = {}
        for key in ("sum", "count"):
            m = re.search(rf"^edgestate_async_unsynced_writes_{key} (\S+)", metrics, re.M)
            unsynced[key] = float(m.group(1)) if m else 0.0
        buckets = re.findall(r'^edgestate_async_unsynced_writes_bucket\{le="([^"]+)"\} (\d+)', metrics, re.M)
        max_le = next((le for le, c in buckets if int(c) == int(unsynced["count"])), "+Inf")

        ngx_read, ngx_incr = med(results["nginx"]["read"], "rps"), med(results["nginx"]["incr"], "rps")
        ex_read, ex_incr = med(results["express"]["read"], "rps"), med(results["express"]["incr"], "rps")
        lines = []
        lines.append(f"Medians of {args.runs} runs, {d} s each, {args.conns} connections, "
                     f"server on CPU 0, `wrk -t1` on CPU 1.\n")
        lines.append("| system | GET /read req/s | p50 ms | p99 ms | POST /increment req/s | p50 ms | p99 ms |")
        lines.append("|---|---|---|---|---|---|---|")
        for name in targets:
            rd = results[name]["read"]
            inc = results[name]["incr"]
            rcols = (f"{med(rd, 'rps'):.0f} | {med(rd, 'p50'):.2f} | {med(rd, 'p99'):.2f}"
                     if rd else "(same node as edgestate) | | ")
            lines.append(f"| {name} | {rcols} | {med(inc, 'rps'):.0f} | {med(inc, 'p50'):.2f} | "
                         f"{med(inc, 'p99'):.2f} |")
        es_read = med(results["edgestate"]["read"], "rps")
        es_incr = med(results["edgestate"]["incr"], "rps")
        lines.append("")
        lines.append("| ratio | GET /read | POST /increment (fsync) |")
        lines.append("|---|---|---|")
        lines.append(f"| edgestate / nginx | {es_read / ngx_read:.2f}x | {es_incr / ngx_incr:.2f}x |")
        lines.append(f"| edgestate / Express-style counter | {es_read / ex_read:.1f}x | {es_incr / ex_incr:.1f}x |")
        lines.append("")
        lines.append("| lost increments (acknowledged - counter moved), per run | edgestate (fsync) | edgestate (async) | Express-style |")
        lines.append("|---|---|---|---|")
        for i in range(args.runs):
            cells = []
            for name in ("edgestate", "edgestate-async", "express"):
                l = results[name]["loss"][i]
                cells.append(f"{l['lost']} of {l['acked']} ({100.0 * l['lost'] / max(1, l['acked']):.1f} %)")
            lines.append(f"| run {i + 1} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"Single connection, edgestate (fsync): p50 GET /read {single['/read']:.3f} ms, "
                     f"p50 POST /increment {single['/increment']:.3f} ms.")
        lines.append("")
        mean_unsynced = unsynced["sum"] / unsynced["count"] if unsynced["count"] else 0
        lines.append(f"Async durability: at each 100 ms WAL sync, acknowledged-but-unsynced writes "
                     f"averaged {mean_unsynced:.0f} (largest bucket le={max_le}) over "
                     f"{int(unsynced['count'])} syncs: the most a power loss could have taken.")
        report = "\n".join(lines)
        print()
        print(report)
        if args.out:
            with open(args.out, "w") as f:
                f.write(report + "\n")
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

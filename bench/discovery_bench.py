#!/usr/bin/env python3
"""Peer discovery by DNS (issue 14): how long a DNS change takes to change replication.

dnsmasq on 127.0.0.1 serves Fly.io's records (vms.app.internal TXT, ID.vm.app.internal AAAA as
IPv4-mapped loopback addresses) for two nodes, iad and lhr, run with
--peers-dns fly:app --peers-dns-interval-ms INTERVAL (nodes on CPU 0, this script on CPU 1).
Each round:

  - join: lhr's record is published; measured from dnsmasq answering it to the first moment an
    increment made at iad just after the publish is read at lhr (discovery + link + one
    replication interval);
  - leave: lhr's record is withdrawn; measured until iad's /v1/cluster no longer lists lhr
    (three answers in a row without it, by design: between 2 and 3 x INTERVAL).

Medians over --rounds, with min and max. Needs dnsmasq (scripts/setup.sh installs it).

Usage: bench/discovery_bench.py [--rounds 5] [--interval 500]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node_bench import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "edgestate")
SECRET = "discovery-bench-secret"


def answers(port, name):
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00\x00\x10\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    try:
        s.sendto(q, ("127.0.0.1", port))
        return s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()


class Dns:
    def __init__(self, workdir):
        self.dir, self.port, self.proc = workdir, free_port(), None

    def serve(self, machines):
        self.stop()
        txt = ",".join(f"{mid} {region}" for mid, region, _ in machines)
        lines = [f'txt-record=vms.app.internal,"{txt}"']
        lines += [f"host-record={mid}.vm.app.internal,::ffff:{ip}" for mid, _, ip in machines]
        conf = os.path.join(self.dir, "dnsmasq.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground",
             f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
             "--no-resolv", "--no-hosts", "--user=root", "--pid-file=", f"--conf-file={conf}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while answers(self.port, "vms.app.internal") is None:
            if time.monotonic() > deadline:
                raise RuntimeError("dnsmasq did not answer")
            time.sleep(0.005)
        return time.monotonic()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def http(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval", type=int, default=500, help="--peers-dns-interval-ms")
    a = ap.parse_args()
    if a.rounds < 1 or not 100 <= a.interval <= 60000:
        ap.error("--rounds >= 1, --interval in [100, 60000]")
    work = tempfile.mkdtemp(prefix="edgestate-discovery-bench-")
    dns = Dns(work)
    nodes = {}
    peer_port = free_port()
    machines = {"iad": ("m1", "127.0.0.2"), "lhr": ("m2", "127.0.0.3")}
    try:
        dns.serve([("m1", "iad", "127.0.0.2")])
        for region, (mid, ip) in machines.items():
            port = free_port()
            env = dict(os.environ, FLY_MACHINE_ID=mid)
            proc = subprocess.Popen(
                ["taskset", "-c", "0", BIN, "serve", "--listen", "127.0.0.1", "--port", str(port),
                 "--region", region, "--data-dir", os.path.join(work, region), "--peer-listen",
                 f"{ip}:{peer_port}", "--peers-dns", "fly:app", "--peers-dns-server",
                 f"127.0.0.1:{dns.port}", "--peers-dns-interval-ms", str(a.interval),
                 "--cluster-secret", SECRET, "--replication-interval", "50"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            nodes[region] = (proc, port)
        for _, port in nodes.values():
            deadline = time.monotonic() + 10
            while True:
                try:
                    http(port, "GET", "/health")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        iad, lhr = nodes["iad"][1], nodes["lhr"][1]
        joins, leaves = [], []
        expected = 0
        for r in range(a.rounds):
            published = dns.serve([("m1", "iad", "127.0.0.2"), ("m2", "lhr", "127.0.0.3")])
            expected = http(iad, "POST", "/v1/counters/d/increment")["value"]
            while http(lhr, "GET", "/v1/counters/d")["value"] < expected:
                if time.monotonic() - published > 30:
                    raise RuntimeError("lhr never received iad's write")
                time.sleep(0.002)
            joins.append((time.monotonic() - published) * 1000)
            withdrawn = dns.serve([("m1", "iad", "127.0.0.2")])
            while any(p["region"] == "lhr" for p in http(iad, "GET", "/v1/cluster")["peers"]):
                if time.monotonic() - withdrawn > 30:
                    raise RuntimeError("iad never dropped lhr")
                time.sleep(0.002)
            leaves.append((time.monotonic() - withdrawn) * 1000)
            print(f"round {r + 1}: join {joins[-1]:.0f} ms, leave {leaves[-1]:.0f} ms", flush=True)
        for what, xs, model in (("join (publish -> write replicated)", joins,
                                 f"<= interval {a.interval} + link + 50"),
                                ("leave (withdraw -> link dropped)", leaves,
                                 f"2 to 3 x interval = {2 * a.interval} to {3 * a.interval}")):
            print(f"{what}: median {statistics.median(xs):.0f} ms (min {min(xs):.0f}, "
                  f"max {max(xs):.0f}); model {model} ms")
    finally:
        for proc, _ in nodes.values():
            proc.kill()
            proc.wait()
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

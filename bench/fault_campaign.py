#!/usr/bin/env python3
"""Fault campaign: three replicating nodes (iad, lhr, fra) over the WAN emulator under
continuous increments and key writes, and --rounds rounds of a random fault at a random moment:

  kill       kill -9 of a node, restarted after the hold time
  stop       SIGSTOP of a node, SIGCONT after the hold time
  partition  a region cut off from both others (the emulator's isolate), healed after it
  disk       a node's filesystem (a 160 MiB tmpfs of its own) filled, freed after it

Faults come in shuffled blocks of every kind, one at a time; each begins 0.2-1 s after the
previous heal and holds 0.3-2 s. Writers keep writing to every region throughout: increments
of a few hot counters, and keys written once each with a unique value. A write answered 200 is
acknowledged; one that timed out, failed or got a 5xx has an unknown outcome (it may have
been applied). At the end every acknowledged write must be in every region, no counter may
exceed what was sent, and the regions must be equal. The tally: faults injected, writes
acknowledged, writes lost (must be 0), time to converge after the last heal. Exit 1 when
anything was lost or the regions differ.

Mounting the tmpfs needs root (the disk fault is left out otherwise, and the tally says so).
Every process this script starts is stopped by PID at the end; the mounts are undone.

Usage: bench/fault_campaign.py [--rounds 100] [--seed N] [--writers 4] [--faults kill,stop,...]
tests/integration/test_faults.py runs a short campaign through run_campaign().
"""
import argparse
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from ports import free_ports  # Below the ephemeral range: a restarted node finds its port free.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGESTATE = os.path.join(ROOT, "build", "edgestate")
REGIONS = ("iad", "lhr", "fra")
FAULTS = ("kill", "stop", "partition", "disk")
COUNTERS = [f"campaign-{i}" for i in range(6)]
SECRET = "fault-campaign-cluster-secret"


def fill(path):
    """Writes zeros to `path` until its filesystem is full (unbuffered: nothing is pending)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


class Campaign:
    """The cluster, its emulator, the writers and the fault injector of one campaign."""

    def __init__(self, work, binary, seed, faults, slow, log):
        self.work, self.bin, self.slow, self.log = work, binary, slow, log
        self.rng = random.Random(seed)
        self.faults = list(faults)
        self.procs = {}  # region -> Popen of its node
        self.wan = None
        self.mounts = []
        self.http_port, self.peer_port, self.data, self.args = {}, {}, {}, {}
        self.lock = threading.Lock()
        self.inc_acked = {c: 0 for c in COUNTERS}
        self.inc_sent = {c: 0 for c in COUNTERS}  # Acknowledged or unknown outcome.
        self.keys_acked = {}  # key -> value
        self.keys_unknown = 0
        self.refused = 0  # 4xx: never applied (must stay 0: the writers send valid requests)
        self.injected = {f: 0 for f in FAULTS}
        self.stop_writers = threading.Event()

    # --- processes ---

    def start(self):
        ports = free_ports(2 * len(REGIONS))
        for i, r in enumerate(REGIONS):
            self.http_port[r], self.peer_port[r] = ports[2 * i], ports[2 * i + 1]
            self.data[r] = os.path.join(self.work, r)
            if "disk" in self.faults:
                mnt = os.path.join(self.work, f"fs-{r}")
                os.makedirs(mnt)
                out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", mnt],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    raise RuntimeError(f"cannot mount a tmpfs for the disk fault: {out.stderr}")
                self.mounts.append(mnt)
                self.data[r] = os.path.join(mnt, "data")
        targets = [f"--target={r}=127.0.0.1:{self.peer_port[r]}" for r in REGIONS]
        self.wan = subprocess.Popen([self.bin, "wan", "--regions", ",".join(REGIONS), *targets],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        links, self.control = {}, None
        buf, deadline = b"", time.monotonic() + 20 * self.slow
        while self.control is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.wan.stdout], [], [], 0.2)
            if r:
                chunk = os.read(self.wan.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                for m in re.finditer(rb"link (\w+) (\w+) 127\.0\.0\.1:(\d+)", buf):
                    links[(m.group(1).decode(), m.group(2).decode())] = int(m.group(3))
                m = re.search(rb"wan\s+http://127\.0\.0\.1:(\d+)/links ready", buf)
                if m:
                    self.control = int(m.group(1))
        if self.control is None:
            raise RuntimeError(f"the WAN emulator did not start: {buf!r}")
        for r in REGIONS:
            peers = ",".join(f"{p}=127.0.0.1:{links[(r, p)]}" for p in REGIONS if p != r)
            self.args[r] = [self.bin, "serve", "--listen", "127.0.0.1",
                            "--port", str(self.http_port[r]), "--region", r,
                            "--data-dir", self.data[r],
                            "--peer-listen", f"127.0.0.1:{self.peer_port[r]}", "--peers", peers,
                            "--cluster-secret", SECRET, "--replication-interval", "50",
                            "--request-timeout-ms", "5000"]
            self.start_node(r)
        for r in REGIONS:
            self.wait_healthy(r)

    def start_node(self, r):
        log = open(os.path.join(self.work, f"{r}.log"), "ab")
        self.procs[r] = subprocess.Popen(self.args[r], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_healthy(self, r, timeout=30):
        deadline = time.monotonic() + timeout * self.slow
        while time.monotonic() < deadline:
            if self.procs[r].poll() is not None:
                path = os.path.join(self.work, r + ".log")
                with open(path, "rb") as f:
                    f.seek(max(0, os.path.getsize(path) - 2000))
                    tail = f.read().decode(errors="replace")
                raise RuntimeError(f"{r} exited with {self.procs[r].returncode}; the end of "
                                   f"{path}:\n{tail}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.http_port[r], timeout=1)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{r} did not answer /health within {timeout * self.slow:.0f} s")

    def stop_all(self):
        for p in list(self.procs.values()) + ([self.wan] if self.wan else []):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.terminate()
                    p.wait(timeout=15)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    p.kill()
                    p.wait()
        for mnt in self.mounts:
            subprocess.run(["umount", "-l", mnt], capture_output=True)

    def control_post(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.control}{path}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    # --- writers ---

    def writer(self, index):
        rng = random.Random(self.rng.random())
        conns, seq = {}, 0
        while not self.stop_writers.is_set():
            r = rng.choice(REGIONS)
            if rng.random() < 0.7:
                counter = rng.choice(COUNTERS)
                method, path, body, key = "POST", f"/v1/counters/{counter}/increment", None, None
            else:
                seq += 1
                key = f"w{index}-{seq}"
                body = f"{key}:{rng.getrandbits(64):016x}".encode()
                method, path = "PUT", f"/v1/kv/{key}"
            try:
                c = conns.get(r)
                if c is None:
                    c = conns[r] = http.client.HTTPConnection("127.0.0.1", self.http_port[r],
                                                              timeout=2 * self.slow)
                c.request(method, path, body=body)
                resp = c.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conns.pop(r, None)
                status = None  # Unknown: it may have been applied.
            with self.lock:
                if key is None:
                    if status is None or status >= 500 or status == 200:
                        self.inc_sent[counter] += 1
                    if status == 200:
                        self.inc_acked[counter] += 1
                    elif status is not None and status < 500:
                        self.refused += 1
                elif status in (200, 201):
                    self.keys_acked[key] = body
                elif status is None or status >= 500:
                    self.keys_unknown += 1
                else:
                    self.refused += 1
            if status is None:
                time.sleep(0.05)  # A dead or frozen node: do not spin on it.

    # --- faults ---

    def fill(self, r):
        path = os.path.join(os.path.dirname(self.data[r]), "filler")
        fill(path)
        return path

    def inject(self, fault, r, hold):
        self.injected[fault] += 1
        if fault == "kill":
            self.procs[r].kill()
            self.procs[r].wait()
            time.sleep(hold)
            self.start_node(r)
            self.wait_healthy(r)
        elif fault == "stop":
            self.procs[r].send_signal(signal.SIGSTOP)
            time.sleep(hold)
            self.procs[r].send_signal(signal.SIGCONT)
        elif fault == "partition":
            self.control_post(f"/regions/{r}/isolate")
            time.sleep(hold)
            self.control_post(f"/regions/{r}/rejoin")
        elif fault == "disk":
            filler = self.fill(r)
            time.sleep(hold)
            os.remove(filler)

    # --- the end ---

    def check_alive(self):
        """Raises, with the end of its log, when a node's process has exited (a node must
        survive every fault the campaign injects)."""
        for r, p in self.procs.items():
            if p.poll() is not None:
                path = os.path.join(self.work, f"{r}.log")
                with open(path, "rb") as f:
                    tail = f.read()[-20000:].decode(errors="replace")
                raise RuntimeError(f"{r} exited with {p.returncode}; the end of {path}:\n{tail}")

    def caught_up(self):
        """True when every node has applied every other node's writes up to its committed
        sequence (GET /v1/cluster): the regions hold the same writes."""
        info = {}
        for r in REGIONS:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port[r]}/v1/cluster",
                                            timeout=5) as resp:
                    info[r] = json.loads(resp.read())
            except OSError:
                return False
        for r in REGIONS:
            for peer in info[r]["peers"]:
                if peer["applied_seq"] != info[peer["region"]]["committed_seq"]:
                    return False
        return True

    def read_all(self):
        """Per region: counter values and the acknowledged keys' values (None when missing)."""
        with self.lock:
            keys = dict(self.keys_acked)
        out = {}
        for r in REGIONS:
            c = http.client.HTTPConnection("127.0.0.1", self.http_port[r], timeout=10 * self.slow)
            counters = {}
            for name in COUNTERS:
                c.request("GET", f"/v1/counters/{name}")
                resp = c.getresponse()
                counters[name] = json.loads(resp.read())["value"]
            values = {}
            for key in keys:
                c.request("GET", f"/v1/kv/{key}")
                resp = c.getresponse()
                data = resp.read()
                values[key] = data if resp.status == 200 else None
            c.close()
            out[r] = (counters, values)
        return out, keys

    def verdict(self, snapshot, keys):
        lost = phantom = 0
        for r in REGIONS:
            counters, values = snapshot[r]
            for name in COUNTERS:
                lost += max(0, self.inc_acked[name] - counters[name])
                phantom += max(0, counters[name] - self.inc_sent[name])
            lost += sum(1 for k, v in keys.items() if values[k] != v)
        equal = all(snapshot[r] == snapshot[REGIONS[0]] for r in REGIONS)
        return lost, phantom, equal


def run_campaign(rounds, seed, work, binary=EDGESTATE, writers=4, faults=FAULTS, slow=1.0,
                 log=print, converge_timeout=60):
    """Runs one campaign in `work` and returns its tally (a dict)."""
    c = Campaign(work, binary, seed, faults, slow, log)
    threads = []
    try:
        c.start()
        threads = [threading.Thread(target=c.writer, args=(i,), daemon=True)
                   for i in range(writers)]
        for t in threads:
            t.start()
        started = time.monotonic()
        plan = []
        last_heal = time.monotonic()
        for i in range(rounds):
            if not plan:
                plan = list(c.faults)
                c.rng.shuffle(plan)
            fault, victim = plan.pop(), c.rng.choice(REGIONS)
            time.sleep(c.rng.uniform(0.2, 1.0))
            hold = c.rng.uniform(0.3, 2.0)
            log(f"round {i + 1:>3}/{rounds}: {fault:9} {victim} for {hold:.1f} s")
            c.inject(fault, victim, hold)
            last_heal = time.monotonic()
        time.sleep(0.5)
        c.stop_writers.set()
        for t in threads:
            t.join(timeout=30 * slow)
        writes_done = time.monotonic()
        # Converged: every node applied every other's writes (cheap, polled); then the full
        # check reads everything (slow with many keys, so not part of the time), and waits
        # on only if it finds a difference.
        deadline = writes_done + converge_timeout * slow
        while not c.caught_up() and time.monotonic() < deadline:
            time.sleep(0.05)
        converged = time.monotonic()
        c.check_alive()
        while True:
            snapshot, keys = c.read_all()
            lost, phantom, equal = c.verdict(snapshot, keys)
            if (lost == 0 and equal) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return {
            "rounds": rounds,
            "faults": dict(c.injected),
            "increments_acknowledged": sum(c.inc_acked.values()),
            "increments_unknown": sum(c.inc_sent.values()) - sum(c.inc_acked.values()),
            "keys_acknowledged": len(keys),
            "keys_unknown": c.keys_unknown,
            "refused": c.refused,
            "lost": lost,
            "phantom_increments": phantom,
            "regions_equal": equal,
            "converge_after_last_heal_s": round(converged - last_heal, 2),
            "converge_after_writes_stopped_s": round(converged - writes_done, 2),
            "duration_s": round(time.monotonic() - started, 1),
            "disk_fault": "disk" in c.faults,
        }
    finally:
        c.stop_writers.set()
        c.stop_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--json", help="also write the tally to this file")
    args = ap.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    if any(f not in FAULTS for f in faults):
        sys.exit(f"fault_campaign: --faults takes {','.join(FAULTS)}")
    if "disk" in faults and os.geteuid() != 0:
        print("fault_campaign: not root, so no tmpfs: the disk fault is left out")
        faults.remove("disk")
    if not os.path.exists(EDGESTATE):
        sys.exit("fault_campaign: build/edgestate is missing (run scripts/setup.sh)")
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"seed {seed}")
    work = tempfile.mkdtemp(prefix="edgestate-faults-")
    try:
        tally = run_campaign(args.rounds, seed, work, writers=args.writers, faults=faults)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(tally, indent=2))
    print(f"faults injected: {sum(tally['faults'].values())} "
          f"({', '.join(f'{k} {v}' for k, v in tally['faults'].items())}); "
          f"writes acknowledged: {tally['increments_acknowledged']} increments, "
          f"{tally['keys_acknowledged']} keys; lost: {tally['lost']}; "
          f"regions equal: {tally['regions_equal']}; converged "
          f"{tally['converge_after_last_heal_s']} s after the last heal")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(tally, seed=seed), f, indent=2)
    sys.exit(0 if tally["lost"] == 0 and tally["regions_equal"] and
             tally["phantom_increments"] == 0 else 1)


if __name__ == "__main__":
    main()

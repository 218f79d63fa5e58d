"""`edgestate demo`: regions over the emulated WAN, clean start and stop, cut and heal."""
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

from conftest import BIN, SLOW, free_port_range


def start_demo(tmpdir, regions, interval=100, extra=()):
    # One range for the client ports and the control port: a control port drawn on its own
    # could be one of the client ports (both were free when drawn).
    base = free_port_range(len(regions) + 1)
    ctl = base + len(regions)
    p = subprocess.Popen([BIN, "demo", "--base-port", str(base), "--data-dir",
                          os.path.join(tmpdir, "demo"), "--regions", ",".join(regions),
                          "--replication-interval", str(interval), "--control-port", str(ctl)]
                         + list(extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 30 * SLOW
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("demo ready"):
            break
    urls = {}
    pids = []
    for line in lines:
        m = re.match(r"(\w+)\s+(http://\S+)\s+\(pid (\d+)\)", line)
        if m:
            urls[m.group(1)] = m.group(2)
            pids.append(int(m.group(3)))
    if list(urls) != list(regions):
        p.kill()
        p.wait()
        raise AssertionError(f"demo did not start: stdout {lines!r}; stderr {p.stderr.read()[-3000:]}")
    return p, urls, pids, f"http://127.0.0.1:{ctl}"


def http(method, url, timeout=5):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout * SLOW) as r:
        return r.status, json.loads(r.read())


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not a stray: it has exited and only awaits its parent.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_demo_starts_serves_and_stops_without_strays(tmpdir_path):
    p, urls, pids, ctl = start_demo(tmpdir_path, ["iad", "lhr", "fra"])
    try:
        for region, url in urls.items():
            st, body = http("GET", url + "/read")
            assert st == 200 and body["region"] == region
        st, links = http("GET", ctl + "/links")
        assert len(links) == 6  # One per directed link.
        iad_lhr = next(l for l in links if l["from"] == "iad" and l["to"] == "lhr")
        assert iad_lhr["one_way_ms"] == 40  # Half of the model's 80 ms round trip.
        http("POST", urls["iad"] + "/increment")
        deadline = time.monotonic() + 5 * SLOW
        while time.monotonic() < deadline and http("GET", urls["fra"] + "/read")[1]["value"] < 1:
            time.sleep(0.05)
        assert http("GET", urls["fra"] + "/read")[1]["value"] == 1
    finally:
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=20 * SLOW)
    assert rc == 0, p.stderr.read()
    for pid in pids:
        assert not alive(pid), f"region process {pid} outlived the demo"


def test_demo_sigkill_leaves_no_strays(tmpdir_path):
    p, urls, pids, ctl = start_demo(tmpdir_path, ["iad", "sjc"])
    p.kill()
    p.wait()
    # Each region gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and shuts down within its own
    # bounds: the HTTP drain (5 s) and the replication loop's grace (10 s) come one after the
    # other. A stray is a region past them all, not one still in its graceful shutdown.
    deadline = time.monotonic() + 30 * SLOW
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)


def test_cut_and_heal_converges_soon_after_the_heal(tmpdir_path):
    interval, rtt = 100, 80  # iad-lhr in the model.
    p, urls, pids, ctl = start_demo(tmpdir_path, ["iad", "lhr"], interval)
    try:
        # Both directions up and heartbeats measured before the partition.
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline:
            infos = [http("GET", urls[r] + "/v1/cluster")[1] for r in ("iad", "lhr")]
            if all(peer["outbound"] == "connected" and peer["inbound"] == "connected" and
                   peer["lag_ms"] is not None for info in infos for peer in info["peers"]):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"links never came up: {infos}")
        assert http("POST", ctl + "/regions/lhr/isolate")[0] == 200
        http("POST", urls["iad"] + "/v1/counters/cut/increment")
        time.sleep(1.0)
        st, body = http("GET", urls["lhr"] + "/v1/counters/cut")
        assert body["value"] == 0, "a partitioned region must not see the write"
        assert body["staleness_ms"] is not None and body["staleness_ms"] >= 900
        st, links = http("GET", ctl + "/links")
        assert all(l["cut"] for l in links)
        healed = time.monotonic()
        assert http("POST", ctl + "/regions/lhr/rejoin")[0] == 200
        while time.monotonic() - healed < 30 * SLOW:
            if http("GET", urls["lhr"] + "/v1/counters/cut")[1]["value"] == 1:
                break
            time.sleep(0.005)
        took_ms = (time.monotonic() - healed) * 1000
        assert http("GET", urls["lhr"] + "/v1/counters/cut")[1]["value"] == 1
        # The links survive the cut (the emulator holds their bytes), so the write arrives about
        # an interval and a round trip after the heal (bench/demo_bench.py measures it). A
        # reconnect with back-off or a wait for the next anti-entropy round would take seconds;
        # the bound is ten times the expected figure, so only such a fault crosses it.
        assert took_ms <= 10 * (interval + rtt) * SLOW, f"converged {took_ms:.0f} ms after heal"
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20 * SLOW) == 0


def test_demo_rejects_bad_options(tmpdir_path):
    for args in (["--regions", "iad,xyz"], ["--regions", "iad,iad"],
                 ["--rtt-file", "/nonexistent.csv"], ["--base-port", "65530"]):
        r = subprocess.run([BIN, "demo", "--data-dir", tmpdir_path] + args, capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 2, (args, r.stderr)


def test_wan_subcommand_relays_with_the_model_delay():
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    echo_port = srv.getsockname()[1]

    def echo():
        c, _ = srv.accept()
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
        c.close()

    threading.Thread(target=echo, daemon=True).start()
    p = subprocess.Popen([BIN, "wan", "--regions", "iad,lhr", "--target",
                          f"lhr=127.0.0.1:{echo_port}"], stdout=subprocess.PIPE, text=True)
    try:
        links = {}
        for line in p.stdout:
            m = re.match(r"link (\w+) (\w+) 127.0.0.1:(\d+)", line)
            if m:
                links[(m.group(1), m.group(2))] = int(m.group(3))
            if "ready" in line:
                break
        s = socket.create_connection(("127.0.0.1", links[("iad", "lhr")]), timeout=30)
        rtts = []
        for _ in range(5):
            start = time.monotonic()
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            rtts.append((time.monotonic() - start) * 1000)
        s.close()
        rtts.sort()
        # iad-lhr is 80 ms in the model: never less; and the delay is applied once per
        # direction (twice would be 160 ms). Accuracy is a figure of bench/wan_bench.py.
        assert rtts[0] >= 80, rtts
        assert rtts[2] < 160, rtts
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10) == 0
        srv.close()

"""edgebench against real processes: edgestate, and deliberately stale and lossy fakes."""
import json
import os
import subprocess
import sys

import pytest

from conftest import SLOW, free_ports

EDGEBENCH = os.environ.get("EDGEBENCH_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "edgebench")


def edgebench(args, tmpdir, timeout=60):
    out = os.path.join(tmpdir, "eb.json")
    r = subprocess.run([EDGEBENCH, "--no-progress", "--json", out] + args, capture_output=True,
                       text=True, timeout=timeout * SLOW)
    data = json.load(open(out)) if os.path.exists(out) else None
    return r, data


@pytest.fixture
def fake(tmpdir_path):
    procs = []

    def start(mode):
        port = free_ports(1)[0]
        p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                           "fake_counter.py"), str(port), mode],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_honest_node_has_no_stale_reads_and_no_losses(node, tmpdir_path):
    r, d = edgebench(["--target", f"local=http://127.0.0.1:{node.port}", "--vus", "8",
                      "--duration", "2s", "--threshold", "lost<=0",
                      "--threshold", "stale_rate<=0"], tmpdir_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert d["overall"]["requests"] > 50
    assert d["stale_reads"]["stale"] == 0
    assert d["lost_updates"]["max_over_regions"] == 0
    assert d["lost_updates"]["acknowledged"] > 0
    assert d["lost_updates"]["settled"] is True
    for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "rps", "errors"):
        assert key in d["regions"]["local"], key
    assert "p99" in r.stdout and "local" in r.stdout


def test_detects_stale_reads(fake, tmpdir_path):
    url = fake("stale")
    r, d = edgebench(["--target", f"x={url}", "--vus", "4", "--duration", "2s",
                      "--mix", "read=50,increment=50", "--threshold", "stale_rate<0.01"],
                     tmpdir_path)
    assert d["stale_reads"]["stale"] > 0, r.stdout
    assert d["lost_updates"]["max_over_regions"] == 0
    assert r.returncode == 3  # The threshold is breached.


def test_detects_lost_updates(fake, tmpdir_path):
    url = fake("lossy")
    r, d = edgebench(["--target", f"x={url}", "--vus", "4", "--duration", "2s",
                      "--mix", "read=20,increment=80", "--threshold", "lost<=0",
                      "--settle", "1s"], tmpdir_path)
    acked = d["lost_updates"]["acknowledged"]
    lost = d["lost_updates"]["max_over_regions"]
    assert acked > 50
    assert abs(lost - acked / 3) <= acked * 0.05 + 2, (lost, acked)  # Every third one dropped.
    assert r.returncode == 3


def test_threshold_breach_and_open_loop(node, tmpdir_path):
    r, d = edgebench(["--target", f"local=http://127.0.0.1:{node.port}", "--vus", "16",
                      "--duration", "2s", "--rate", "200", "--threshold", "p99<0.001"],
                     tmpdir_path)
    assert r.returncode == 3
    assert d["thresholds"][0]["ok"] is False
    # Open loop at 200/s for 2 s schedules 400 requests: never more. A busy machine may send
    # fewer in time (16 VUs leave a wide margin); a rate off by a factor would be far below.
    assert 200 <= d["overall"]["requests"] <= 401, d["overall"]["requests"]


def test_errors_are_counted_by_kind(tmpdir_path):
    port = free_ports(1)[0]  # Nothing listens there.
    r, d = edgebench(["--target", f"x=http://127.0.0.1:{port}", "--vus", "1", "--duration",
                      "1s", "--api", "v1", "--settle", "0s"], tmpdir_path)
    assert d["overall"]["errors"] > 0
    assert "connect" in d["errors_by_kind"]


def test_bad_flags_exit_2(tmpdir_path):
    for args in (["--target", "bad"], ["--target", "x=ftp://h:1"], ["--target", "x=http://h:1",
                 "--mix", "write=5"], ["--target", "x=http://h:1", "--threshold", "p42<1"],
                 ["--target", "x=http://h:1", "--duration", "5parsecs"], []):
        r = subprocess.run([EDGEBENCH] + args, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.stderr)
    for price in ("-1", "0", "cheap", "5"):
        r = subprocess.run([EDGEBENCH, "article", "--price-per-cpu-second", price],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (price, r.stderr)
        assert "--price-per-cpu-second" in r.stderr, r.stderr

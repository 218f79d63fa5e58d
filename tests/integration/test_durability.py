"""Durability with real processes: kill -9 under load, graceful shutdown, full disk."""
import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import Load, Node, SLOW, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from fault_campaign import fill  # noqa: E402  (one way to fill a filesystem)


@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_kill_9_under_load_loses_no_acknowledged_increment(nodes, durability):
    n = nodes(args=["--durability", durability])
    for round_no in range(3):
        before = n.value()
        load = Load(n.port).start()
        load.wait_for_acks(100 * (round_no + 1))
        n.proc.send_signal(signal.SIGKILL)  # At an arbitrary moment mid-load.
        n.proc.wait(timeout=10)
        load.finish()
        n.start()
        after = n.value()
        gained = after - before
        assert gained >= load.acked, (
            f"{durability}: lost {load.acked - gained} acknowledged increments "
            f"(acked {load.acked}, counter moved {gained})")
        assert gained <= load.sent, f"counter moved {gained} but only {load.sent} were sent"


# Shutdown bounds below are a tenth of the request timeout these nodes run with (100 s): a node
# that waited for its keep-alive clients to time out would cross them, a busy machine does not.
LONG_TIMEOUT = ["--request-timeout-ms", "100000"]


def test_sigterm_drains_in_flight_and_exits_0(nodes):
    n = nodes(args=LONG_TIMEOUT)
    load = Load(n.port, conns=30).start()
    load.wait_for_acks(200)
    start = time.monotonic()
    n.signal(signal.SIGTERM)
    rc = n.wait(timeout=30)
    took = time.monotonic() - start
    load.finish()
    assert rc == 0, n.read_output()
    assert took < 10 * SLOW, f"shutdown took {took:.1f}s"
    assert "shut down cleanly" in n.read_output()
    n.start()
    assert load.acked <= n.value() <= load.sent


def test_sigint_exits_0_and_state_survives(nodes):
    n = nodes()
    for _ in range(5):
        n.request("POST", "/v1/counters/s/increment", body='{"delta": 3}')
    n.signal(signal.SIGINT)
    assert n.wait(timeout=10) == 0
    n.start()
    assert n.value("s") == 15


def test_idle_keepalive_clients_do_not_delay_shutdown(nodes):
    n = nodes(args=LONG_TIMEOUT)
    idle = [n.conn() for _ in range(20)]
    for c in idle:
        c.request("GET", "/health")
        c.getresponse().read()
    start = time.monotonic()
    n.signal(signal.SIGTERM)
    assert n.wait(timeout=30) == 0
    assert time.monotonic() - start < 10 * SLOW
    for c in idle:
        c.close()


@pytest.fixture
def small_fs(tmpdir_path):
    """A 160 MiB tmpfs (RocksDB resumes once 64 MiB are free) the test can fill; needs root (CI runs as root)."""
    mnt = os.path.join(tmpdir_path, "small")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", mnt],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs for the full-disk test: {r.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", mnt], check=False)


def test_full_disk_fails_writes_cleanly_and_recovers(nodes, small_fs):
    n = nodes(data_dir=os.path.join(small_fs, "data"))
    acked = 0
    for _ in range(50):
        assert n.request("POST", "/increment")[0] == 200
        acked += 1
    filler = os.path.join(small_fs, "filler")
    fill(filler)
    # Writes now fail with a JSON 503 (the WAL cannot grow); the node stays up.
    statuses = set()
    for _ in range(3000):
        st, _, body = n.request("POST", "/v1/counters/big/increment",
                                body='{"delta": 1}')
        statuses.add(st)
        if st != 200:
            assert st == 503, body
            assert body["error"]["code"] == "unavailable"
            break
    assert 503 in statuses, "writes never failed on a full disk"
    st, _, body = n.request("GET", "/health")
    assert st == 503 and body["status"] == "unhealthy"
    assert n.alive()
    assert n.value() == acked  # Reads keep working.
    os.remove(filler)
    # RocksDB's recovery polls every few seconds.
    wait_until(lambda: n.request("GET", "/health")[0] == 200, 30, "healthy once the disk has room")
    assert n.request("POST", "/increment")[2]["value"] == acked + 1
    n.signal(signal.SIGTERM)
    assert n.wait(timeout=10) == 0
    n.start()
    assert n.value() == acked + 1


def test_a_key_write_refused_on_a_full_disk_is_never_read(nodes, small_fs):
    """The record cache takes a write only once RocksDB did: a PUT refused on a full disk leaves
    the key's acknowledged value to every read, before and after the disk has room again."""
    n = nodes(data_dir=os.path.join(small_fs, "data"))
    assert n.request("PUT", "/v1/kv/session", body=b"before")[0] in (200, 201)
    assert n.request("GET", "/v1/kv/session")[2] == "before"  # Now in the record cache.
    filler = os.path.join(small_fs, "filler")
    fill(filler)
    acked, refused = "before", False
    for i in range(3000):
        st, _, body = n.request("PUT", "/v1/kv/session", body=b"during-%d" % i)
        if st != 200:
            assert st == 503 and body["error"]["code"] == "unavailable", (st, body)
            refused = True
            break
        acked = "during-%d" % i
        assert n.request("GET", "/v1/kv/session")[2] == acked
    assert refused, "key writes never failed on a full disk"
    for _ in range(2):
        assert n.request("GET", "/v1/kv/session")[2] == acked
    os.remove(filler)
    # RocksDB's recovery polls every few seconds.
    wait_until(lambda: n.request("GET", "/health")[0] == 200, 30, "healthy once the disk has room")
    assert n.request("GET", "/v1/kv/session")[2] == acked


def test_a_damaged_data_file_is_refused_with_its_name(nodes):
    n = nodes()
    for i in range(300):
        st, _, _ = n.request("POST", f"/v1/counters/c{i}/increment", body='{"delta": 2}')
        assert st == 200
    n.signal(signal.SIGTERM)
    assert n.wait(timeout=10) == 0
    n.start()  # Recovery moves the WAL into a table file.
    assert n.value("c7") == 2
    n.signal(signal.SIGTERM)
    assert n.wait(timeout=10) == 0
    tables = sorted(f for f in os.listdir(n.data_dir) if f.endswith(".sst"))
    assert tables, os.listdir(n.data_dir)
    victim = os.path.join(n.data_dir, tables[0])
    size = os.path.getsize(victim)
    with open(victim, "r+b") as f:  # Flip bytes across the data blocks (the file's first half).
        for off in range(64, size // 2, 512):
            f.seek(off)
            b = f.read(16)
            f.seek(off)
            f.write(bytes(x ^ 0xFF for x in b))
    r = subprocess.run([n.proc.args[0], "serve", "--listen", "127.0.0.1", "--port", "0",
                        "--data-dir", n.data_dir], capture_output=True, text=True,
                       timeout=30 * SLOW)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert tables[0] in out and "Corruption" in out, out
    assert "the data directory is damaged" in out and "docs/storage.md" in out, out


def test_a_data_directory_that_cannot_be_opened_for_writing_stops_the_node(nodes):
    """A start serves reads from a read-only open while the read-write one runs (docs/storage.md,
    "Start-up"); when the latter fails, the node must stop with its error, not serve on."""
    n = nodes()
    st, _, _ = n.request("POST", "/v1/counters/c/increment", body='{"delta": 3}')
    assert st == 200
    n.signal(signal.SIGTERM)
    assert n.wait(timeout=10) == 0
    # RocksDB's own lock held elsewhere (as by a node of an earlier release, which does not know
    # edgestate.lock): the read-only open works, the read-write one is refused.
    # The lock's holder has just made its write-ahead log (empty): a start removes the empty logs
    # RocksDB leaves behind (docs/storage.md), never while another process holds that lock.
    live_log = os.path.join(n.data_dir, "999999.log")
    with open(os.path.join(n.data_dir, "LOCK"), "a+") as held:
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        open(live_log, "w").close()
        r = subprocess.run([n.proc.args[0], "serve", "--listen", "127.0.0.1", "--port", "0",
                            "--data-dir", n.data_dir], capture_output=True, text=True,
                           timeout=30 * SLOW)
        assert os.path.exists(live_log)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    out = r.stdout + r.stderr
    assert "cannot open store in" in out and "LOCK" in out, out
    # Nothing was lost: the directory opens again once the lock is gone, and the empty log left
    # by the process that held it is gone.
    n.start()
    assert n.value("c") == 3
    assert not os.path.exists(live_log)

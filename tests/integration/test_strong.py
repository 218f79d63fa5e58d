"""consistency=strong between real processes: voters, forwarding, faults, and the checker."""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error

import pytest

from conftest import BIN, SLOW, Node, wait_until
from test_demo import http, start_demo
from test_edgebench import EDGEBENCH
from test_replication import Cluster, cluster_info

VOTERS = ("lhr", "fra", "iad")  # lhr leads shared counters.
REGIONS = ("lhr", "fra", "iad", "syd")  # syd is not a voter: it forwards.
TIMEOUT_MS = 1000


class StrongCluster(Cluster):
    def __init__(self, tmpdir, env=None):
        super().__init__(tmpdir, regions=REGIONS)
        self.env = env or {}

    def args(self, region):
        return super().args(region) + ["--strong-voters", ",".join(VOTERS),
                                       "--strong-timeout-ms", str(TIMEOUT_MS)]

    def start(self, region):
        n = self.nodes.get(region)
        if n is None:
            n = Node(os.path.join(self.tmpdir, region), self.args(region), env=self.env)
            self.nodes[region] = n
        n.start()
        return n

    def strong(self, region, method, path, **kw):
        sep = "&" if "?" in path else "?"
        return self.nodes[region].request(method, f"{path}{sep}consistency=strong", **kw)

    def wait_links(self):
        def up():
            for r in self.regions:
                info = cluster_info(self.nodes[r])
                if not all(v["reachable"] for v in info["strong"]["voters"]):
                    return False
            return True
        wait_until(up, 20 * SLOW, "every node reaches every voter")


@pytest.fixture
def strong_cluster(tmpdir_path):
    c = StrongCluster(tmpdir_path)
    yield c
    c.kill_all()


def run_edgebench(targets, tmpdir, seconds, keys=4, extra=()):
    out = os.path.join(tmpdir, f"eb-{time.monotonic_ns()}.json")
    args = [EDGEBENCH, "--no-progress", "--json", out, "--duration", f"{seconds}s", "--vus", "12",
            "--keys", str(keys), "--mix", "read=50,increment=50", "--consistency", "strong",
            "--check", "linearizability", "--timeout", "3s", "--settle", "20s"] + list(extra)
    if os.environ.get("EB_HISTORY_DIR"):  # Keep the checked history, to study a failure.
        args += ["--history", os.path.join(os.environ["EB_HISTORY_DIR"], "history.jsonl")]
    for region, node in targets.items():
        args += ["--target", f"{region}=http://127.0.0.1:{node.port}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, out


def finish_edgebench(p, out, timeout):
    stdout, stderr = p.communicate(timeout=timeout * SLOW)
    data = json.load(open(out)) if os.path.exists(out) else None
    return p.returncode, stdout, stderr, data


def test_strong_operations_everywhere_on_every_api(strong_cluster):
    c = strong_cluster.start_all()
    c.wait_links()
    expect = 0
    for region in ("syd", "lhr", "iad", "fra", "syd"):
        st, h, body = c.strong(region, "POST", "/v1/counters/s1/increment", body='{"delta": 5}')
        expect += 5
        assert st == 200, body
        assert body["value"] == expect and body["consistency"] == "strong"
        assert h["edgestate-voter"] in VOTERS
        assert "edgestate-session" in h
    # The forwarder's reads are linearizable: they see every increment acknowledged before.
    st, h, body = c.strong("syd", "GET", "/v1/counters/s1")
    assert st == 200 and body["value"] == expect
    # The article's endpoints, the header form of the level.
    st, _, body = c.nodes["syd"].request("POST", "/increment",
                                         headers={"Edgestate-Consistency": "strong"})
    assert st == 200 and body["value"] == 1 and body["region"] == "syd"
    st, _, body = c.strong("iad", "GET", "/read")
    assert st == 200 and body["value"] == 1
    # Strong increments are ordinary writes too: every region's local reads reach them.
    assert c.converge("s1") == expect
    info = cluster_info(c.nodes["syd"])["strong"]
    assert info["role"] == "forwarder" and info["leader"] == "lhr"
    assert info["forwards"]["ok"] >= 3
    assert cluster_info(c.nodes["lhr"])["strong"]["role"] == "voter"
    st, _, metrics = c.nodes["lhr"].request("GET", "/metrics")
    assert 'edgestate_strong_operations_total{result="ok"}' in metrics
    assert "edgestate_strong_rounds_total" in metrics


def test_strong_keys_conditional_writes_from_every_region(strong_cluster):
    """consistency=strong on keys: conditional writes are linearizable per key, from voters and
    forwarders alike, so read-modify-write loops racing from four regions lose nothing."""
    c = strong_cluster.start_all()
    c.wait_links()
    st, h, body = c.strong("syd", "PUT", "/v1/kv/acct", body="0",
                           headers={"If-None-Match": "*", "Content-Type": "text/plain"})
    assert st == 201, body
    assert h["edgestate-voter"] in VOTERS and "edgestate-session" in h
    etag = h["etag"]
    assert body["etag"] == etag and body["size"] == 1
    # The key exists everywhere at once: a second create fails at another region.
    st, _, body = c.strong("lhr", "PUT", "/v1/kv/acct", body="x", headers={"If-None-Match": "*"})
    assert st == 412 and body["error"]["code"] == "precondition_failed", body
    st, h, body = c.strong("fra", "GET", "/v1/kv/acct")
    assert st == 200 and body == 0 and h["etag"] == etag, (st, body)
    assert h["content-type"] == "text/plain" and h["edgestate-staleness-ms"] == "0"
    st, _, body = c.strong("iad", "PUT", "/v1/kv/acct", body="9", headers={"If-Match": '"1.0.x"'})
    assert st == 412, body

    # Read-modify-write from four regions at once: every acknowledged write counts exactly once.
    wins, errors = {r: [] for r in REGIONS}, []

    def worker(region):
        deadline = time.monotonic() + 20 * SLOW
        while len(wins[region]) < 6 and time.monotonic() < deadline:
            st, h, body = c.strong(region, "GET", "/v1/kv/acct")
            if st != 200:
                errors.append((region, "GET", st, body))
                continue
            st2, _, b2 = c.strong(region, "PUT", "/v1/kv/acct", body=str(int(body) + 1),
                                  headers={"If-Match": h["etag"]})
            if st2 == 200:
                wins[region].append(int(body))
            elif st2 != 412:
                errors.append((region, "PUT", st2, b2))

    threads = [threading.Thread(target=worker, args=(r,)) for r in REGIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    won = sorted(v for r in REGIONS for v in wins[r])
    assert len(won) == 24, wins
    # Each write replaced a distinct value: no two succeeded on the same read.
    assert won == list(range(24)), won
    st, h, body = c.strong("syd", "GET", "/v1/kv/acct")
    assert st == 200 and body == 24, body
    etag = h["etag"]
    # Strong writes are ordinary writes too: every region's local reads reach them.
    def local_everywhere(expect):
        return all(c.nodes[r].request("GET", "/v1/kv/acct")[2] == expect for r in REGIONS)
    wait_until(lambda: local_everywhere(24), 10 * SLOW, "every region reads 24 locally")

    # Touch, then a conditional delete; the key is gone for every level.
    st, h, body = c.strong("iad", "POST", "/v1/kv/acct/touch?ttl_ms=600000",
                           headers={"If-Match": etag})
    assert st == 200 and body["expires_at"] is not None, body
    st, _, body = c.strong("syd", "DELETE", "/v1/kv/acct", headers={"If-Match": etag})
    assert st == 412, body  # The touch made a new write.
    st, _, body = c.strong("syd", "DELETE", "/v1/kv/acct", headers={"If-Match": h["etag"]})
    assert st == 200 and body["deleted"] and body["existed"], body
    st, _, body = c.strong("lhr", "GET", "/v1/kv/acct")
    assert st == 404 and body["error"]["code"] == "not_found", body
    st, _, body = c.strong("fra", "POST", "/v1/kv/acct/touch?ttl_ms=1000")
    assert st == 404, body
    wait_until(lambda: all(c.nodes[r].request("GET", "/v1/kv/acct")[0] == 404 for r in REGIONS),
               10 * SLOW, "the delete reaches every region")
    # Listings and the cache have no strong level.
    st, _, body = c.strong("lhr", "GET", "/v1/kv?prefix=a")
    assert st == 400 and "strong" in body["error"]["message"], body
    st, _, body = c.strong("lhr", "GET", "/v1/cache/a")
    assert st == 400, body


def test_default_consistency_strong(tmpdir_path):
    c = StrongCluster(tmpdir_path)
    try:
        orig = c.args
        c.args = lambda r: orig(r) + ["--default-consistency", "strong"]
        c.start_all()
        c.wait_links()
        st, h, body = c.nodes["syd"].request("POST", "/increment")
        assert st == 200 and body["value"] == 1 and h["edgestate-voter"] in VOTERS
        st, h, body = c.nodes["fra"].request("GET", "/read")
        assert st == 200 and body["value"] == 1 and "edgestate-voter" in h
        # local still answers locally when named.
        st, h, body = c.nodes["fra"].request("GET", "/read?consistency=local")
        assert st == 200 and "edgestate-voter" not in h
        # Keys default to strong too; listings and the cache, which have none, to local.
        st, h, body = c.nodes["syd"].request("PUT", "/v1/kv/k", body="v")
        assert st == 201 and h["edgestate-voter"] in VOTERS, body
        st, h, body = c.nodes["iad"].request("GET", "/v1/kv/k")
        assert st == 200 and body == "v" and "edgestate-voter" in h
        st, _, body = c.nodes["fra"].request("GET", "/v1/kv?prefix=k")
        assert st == 200, body
        st, _, body = c.nodes["fra"].request("GET", "/v1/kv?prefix=k&consistency=strong")
        assert st == 400, body
    finally:
        c.kill_all()


def test_bad_voter_lists_are_refused(tmpdir_path):
    base = ["serve", "--region", "lhr", "--data-dir", os.path.join(tmpdir_path, "x"),
            "--peer-listen", "127.0.0.1:0", "--peers", "fra=127.0.0.1:1,iad=127.0.0.1:2",
            "--cluster-secret", "secret-123"]
    for voters, why in (("lhr,fra", "3 or 5"), ("lhr,fra,fra", "twice"),
                        ("lhr,fra,xyz", "neither this node's region nor a peer")):
        r = subprocess.run([BIN] + base + ["--strong-voters", voters], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 2, (voters, r.stderr)
        assert why in r.stderr, r.stderr
    r = subprocess.run([BIN] + base + ["--strong-timeout-ms", "0"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "strong timeout" in r.stderr


def test_one_voter_down_continues_a_majority_down_fails_in_time(strong_cluster):
    c = strong_cluster.start_all()
    c.wait_links()
    assert c.strong("syd", "POST", "/v1/counters/f/increment")[0] == 200
    c.nodes["fra"].signal(signal.SIGSTOP)
    try:
        # A stopped voter keeps its connections open; the others notice its silence (within
        # max(500 ms, 5 replication intervals)) and stop sending it operations.
        wait_until(lambda: not voter_reachable(c.nodes["syd"], "fra"), 10 * SLOW,
                   "syd notices fra stopped")
        for region in ("syd", "lhr", "iad"):
            st, _, body = c.strong(region, "POST", "/v1/counters/f/increment")
            assert st == 200, (region, body)
        c.nodes["iad"].signal(signal.SIGSTOP)
        try:
            for region in ("lhr", "syd"):
                start = time.monotonic()
                st, h, body = c.strong(region, "POST", "/v1/counters/f/increment")
                took = time.monotonic() - start
                assert st == 503 and body["error"]["code"] == "strong_unavailable", body
                assert h["retry-after"] == "1"
                # It waited for a majority for the timeout, no less and not much more.
                assert took >= TIMEOUT_MS / 1000 * 0.9, took
                assert took < 10 * TIMEOUT_MS / 1000 * SLOW, took
                st, _, body = c.strong(region, "GET", "/v1/counters/f")
                assert st == 503, body
            # Local reads are served all along.
            st, _, body = c.nodes["syd"].request("GET", "/v1/counters/f")
            assert st == 200 and body["value"] >= 4
        finally:
            c.nodes["iad"].signal(signal.SIGCONT)
    finally:
        c.nodes["fra"].signal(signal.SIGCONT)
    # Healed: the value holds every acknowledged increment and at most the two indeterminate.
    wait_until(lambda: c.strong("syd", "GET", "/v1/counters/f")[0] == 200, 10 * SLOW,
               "strong reads after the heal")
    v = c.strong("syd", "GET", "/v1/counters/f")[2]["value"]
    assert 4 <= v <= 6, v
    st, _, body = c.strong("iad", "POST", "/v1/counters/f/increment")
    assert st == 200 and body["value"] == v + 1


def voter_reachable(node, voter):
    info = cluster_info(node)["strong"]
    return next(v for v in info["voters"] if v["region"] == voter)["reachable"]


def test_leader_killed_mid_load_changes_no_outcome(strong_cluster, tmpdir_path):
    """kill -9 of the leading voter in the middle of rounds, restarted: the whole history stays
    linearizable and nothing acknowledged is lost."""
    c = strong_cluster.start_all()
    c.wait_links()
    targets = {r: c.nodes[r] for r in ("fra", "iad", "syd")}
    p, out = run_edgebench(targets, tmpdir_path, seconds=8)
    try:
        time.sleep(2.5)
        c.nodes["lhr"].proc.kill()  # SIGKILL, mid-round.
        c.nodes["lhr"].proc.wait()
        time.sleep(1.5)
        c.start("lhr")
    finally:
        rc, stdout, stderr, data = finish_edgebench(p, out, timeout=90)
    assert data is not None, stderr
    lin = data["linearizability"]
    assert lin["violations"] == 0 and lin["unknown"] == 0, (lin, stdout)
    assert lin["operations"] > 200, stdout
    assert data["lost_updates"]["max_over_regions"] == 0, stdout
    assert rc == 0, stdout + stderr
    # The restarted leader is a voter again, in a new life.
    c.wait_links()
    assert cluster_info(c.nodes["lhr"])["strong"]["incarnation"] >= 2


def test_partitioned_non_voter_gets_503_and_keeps_serving_local(tmpdir_path):
    p, urls, pids, ctl = start_demo(tmpdir_path, list(REGIONS),
                                    extra=["--node-arg=--strong-timeout-ms=800"])
    try:
        wait_until(lambda: status_of("POST", urls["syd"] + "/v1/counters/p/increment"
                                     "?consistency=strong") == 200, 30 * SLOW,
                   "a strong increment from syd")
        # The strong write replicates to syd like any other; then syd is cut off.
        wait_until(lambda: http("GET", urls["syd"] + "/v1/counters/p")[1]["value"] == 1,
                   10 * SLOW, "the strong write at syd's replica")
        assert http("POST", ctl + "/regions/syd/isolate")[0] == 200
        start = time.monotonic()
        try:
            http("POST", urls["syd"] + "/v1/counters/p/increment?consistency=strong")
            raise AssertionError("a partitioned forwarder answered a strong increment")
        except urllib.error.HTTPError as e:
            assert e.code == 503
            assert json.loads(e.read())["error"]["code"] == "strong_unavailable"
        assert time.monotonic() - start < 10 * SLOW
        st, body = http("GET", urls["syd"] + "/v1/counters/p")
        assert st == 200 and body["value"] == 1
        # The voters go on without it.
        st, body = http("POST", urls["iad"] + "/v1/counters/p/increment?consistency=strong")
        assert st == 200 and body["value"] >= 2
        assert http("POST", ctl + "/regions/syd/rejoin")[0] == 200
        wait_until(lambda: status_of("GET", urls["syd"] + "/v1/counters/p?consistency=strong")
                   == 200, 30 * SLOW, "strong reads at syd after the heal")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30 * SLOW) == 0


def status_of(method, url):
    try:
        return http(method, url)[0]
    except urllib.error.HTTPError as e:
        return e.code


def test_checker_catches_a_deliberately_broken_strong_read(tmpdir_path):
    """Test builds compile in EDGESTATE_FAULT_STRONG_READS=local: strong reads served from the
    local replica. The checker must report the violation (edgebench exits 4)."""
    c = StrongCluster(tmpdir_path, env={"EDGESTATE_FAULT_STRONG_READS": "local"})
    try:
        c.start_all()
        if "FAULT INJECTION" not in c.nodes["syd"].read_output():
            pytest.skip("this edgestate was built without -DEDGESTATE_FAULT_INJECTION=ON "
                        "(scripts/test.sh builds with it, so CI runs this test)")
        c.wait_links()
        targets = {r: c.nodes[r] for r in REGIONS}
        p, out = run_edgebench(targets, tmpdir_path, seconds=5, keys=2)
        rc, stdout, stderr, data = finish_edgebench(p, out, timeout=90)
        assert data is not None, stderr
        lin = data["linearizability"]
        assert lin["violations"] >= 1, stdout
        assert rc == 4, stdout + stderr
        failure = lin["failures"][0]
        assert failure["verdict"] == "violation" and failure["offending"], failure
        assert "VIOLATE" in stdout
    finally:
        c.kill_all()

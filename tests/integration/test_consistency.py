"""Consistency per request across real processes: session tokens over the emulated WAN (a
client that writes in one region and reads in another), a writer's region cut off, bounded
staleness, and the flags."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from conftest import BIN, SLOW
from test_demo import start_demo


def call(method, url, headers=None, timeout=30):
    """(status, headers, body) of one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout * SLOW) as r:
            return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, json.loads(e.read())


def session(token):
    return {"Edgestate-Session": token}


def stop(p):
    p.send_signal(2)
    assert p.wait(timeout=30 * SLOW) == 0


def test_a_roaming_session_reads_its_writes_and_a_cut_off_writer_gives_503(tmpdir_path):
    p, urls, pids, ctl = start_demo(tmpdir_path, ["iad", "lhr", "fra"], interval=100)
    try:
        # Write in iad, read in lhr and fra with the token: every read holds the write, at once
        # or after waiting for it, never stale.
        token = None
        for i in range(1, 6):
            st, h, body = call("POST", urls["iad"] + "/v1/counters/s/increment",
                               session(token) if token else None)
            assert st == 200, body
            token = h["edgestate-session"]
            assert len(token) <= 128
            for region in ("lhr", "fra"):
                st, h, body = call("GET", urls[region] + "/v1/counters/s", session(token))
                assert st == 200, body
                assert body["value"] >= i, f"{region} served {body['value']} after {i} writes"
                token = h["edgestate-session"]
        # The article's endpoints take tokens too.
        st, h, body = call("GET", urls["fra"] + "/read", session(token))
        assert st == 200 and "edgestate-session" in h

        # Cut iad off, write there: a session read in lhr waits, then 503 naming iad (never the
        # old value, never 404).
        assert call("POST", ctl + "/regions/iad/isolate")[0] == 200
        st, h, body = call("POST", urls["iad"] + "/v1/counters/s/increment", session(token))
        assert st == 200
        cut_token = h["edgestate-session"]
        start = time.monotonic()
        st, h, body = call("GET", urls["lhr"] + "/v1/counters/s", session(cut_token))
        waited = time.monotonic() - start
        assert st == 503, body
        assert body["error"]["code"] == "session_unavailable"
        assert body["error"]["missing"] == ["iad"]
        assert h["retry-after"] == "1"
        assert waited >= 0.9, f"answered after {waited:.2f}s, before the 1 s session wait"
        # Without the token the read is served locally, and says how stale it may be.
        st, h, body = call("GET", urls["lhr"] + "/v1/counters/s")
        assert st == 200 and body["value"] == 5

        # Healed: the same token is served, with the write.
        assert call("POST", ctl + "/regions/iad/rejoin")[0] == 200
        deadline = time.monotonic() + 30 * SLOW
        while True:
            st, h, body = call("GET", urls["lhr"] + "/v1/counters/s", session(cut_token))
            if st == 200 or time.monotonic() > deadline:
                break
        assert st == 200 and body["value"] == 6, body
    finally:
        stop(p)


def test_bounded_reads_never_exceed_m_and_impossible_bounds_are_refused(tmpdir_path):
    p, urls, pids, ctl = start_demo(tmpdir_path, ["iad", "syd"], interval=100)
    try:
        # Until every peer was heard from, no bound can be given.
        deadline = time.monotonic() + 30 * SLOW
        while call("GET", urls["syd"] + "/v1/counters/b")[2]["staleness_ms"] is None:
            assert time.monotonic() < deadline, "syd never heard from iad"
            time.sleep(0.05)
        served = refused = 0
        for m in (5000, 1000, 500, 400):
            for _ in range(10):
                st, h, body = call(
                    "GET", urls["syd"] + f"/v1/counters/b?consistency=bounded&max_staleness_ms={m}")
                if st == 200:
                    served += 1
                    assert body["staleness_ms"] <= m, (m, body)
                    assert int(h["edgestate-staleness-ms"]) <= m
                else:
                    refused += 1
                    assert st == 503 and body["error"]["code"] == "staleness_unavailable", body
        assert served > 0
        # iad-syd is 230 ms round trip in the model: no bound can fall below the one-way delay
        # (115 ms; plus the clock error with watermarks), so 50 is refused at once.
        # The floor is known once a round trip to the peer was measured (null before; the first
        # heartbeat's answer can come after the first reads on a slow machine).
        deadline = time.monotonic() + 10 * SLOW
        while True:
            st, h, body = call("GET",
                               urls["syd"] + "/read?consistency=bounded&max_staleness_ms=50")
            assert st == 503, body
            assert body["error"]["code"] == "staleness_unavailable"
            if body["error"]["floor_ms"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert body["error"]["floor_ms"] >= 115
        assert body["error"]["staleness_ms"] > 50
        # A partitioned origin: the bound grows past M and reads are refused, not served stale.
        assert call("POST", ctl + "/regions/iad/isolate")[0] == 200
        time.sleep(1.5)  # The scenario: a partition older than M.
        st, h, body = call("GET", urls["syd"] + "/read?consistency=bounded&max_staleness_ms=1000")
        assert st == 503 and body["error"]["code"] == "staleness_unavailable", body
        assert body["error"]["staleness_ms"] > 1000
    finally:
        stop(p)


def test_a_skewed_clock_is_flagged_and_the_bound_stays_honest(tmpdir_path):
    p, urls, pids, ctl = start_demo(tmpdir_path, ["iad", "lhr", "fra"], interval=100,
                                    extra=["--clock-offset", "fra=150"])
    try:
        def peers_of(region):
            return {q["region"]: q for q in call("GET", urls[region] + "/v1/cluster")[2]["peers"]}
        deadline = time.monotonic() + 30 * SLOW
        while True:
            peers = peers_of("iad")
            if (all(q["clock"] is not None for q in peers.values()) and
                    peers["lhr"]["clock_bound_ms"] is not None):
                break
            assert time.monotonic() < deadline, peers
            time.sleep(0.1)
        # fra's clock is 150 ms ahead: flagged, and its watermarks unused (the bound for its
        # writes is the clock-free one); lhr's is fine and its watermarks tighten the bound.
        fra, lhr = peers["fra"], peers["lhr"]
        assert fra["clock"]["within_error"] is False, fra
        assert 100 <= fra["clock"]["offset_ms"] <= 200, fra
        assert fra["clock_bound_ms"] is None
        assert lhr["clock"]["within_error"] is True, lhr
        assert lhr["clock_bound_ms"] is not None
        with urllib.request.urlopen(urls["iad"] + "/metrics", timeout=30) as r:
            text = r.read().decode()
        assert 'edgestate_peer_clock_within_error{peer="fra"} 0' in text
        assert 'edgestate_peer_clock_within_error{peer="lhr"} 1' in text
        # Honest: every read at iad that claims to be at most S ms stale, taken more than S ms
        # after fra acknowledged a write, holds that write.
        lies = checked = 0
        for i in range(1, 6):
            st, _, _ = call("POST", urls["fra"] + "/v1/counters/skew/increment")
            acked = time.monotonic()
            assert st == 200
            end = acked + 1.0
            while time.monotonic() < end:
                t = time.monotonic()
                st, h, body = call("GET", urls["iad"] + "/v1/counters/skew")
                s_ms = body["staleness_ms"]
                if s_ms is not None and t - s_ms / 1000.0 > acked:
                    checked += 1
                    lies += body["value"] < i
                time.sleep(0.01)
        assert checked > 0
        assert lies == 0, f"{lies} of {checked} reads claimed a bound they did not hold"
    finally:
        stop(p)


def test_levels_tokens_and_flags_on_one_node(nodes, tmpdir_path):
    n = nodes(args=["--default-consistency", "strong", "--session-cookie"])
    st, h, body = n.request("POST", "/increment")
    assert st == 503 and body["error"]["code"] == "strong_unavailable"
    st, h, body = n.request("POST", "/increment?consistency=local")
    assert st == 200 and body["value"] == 1
    token = h["edgestate-session"]
    assert h["set-cookie"].startswith(f"edgestate_session={token};")
    st, h, body = n.request("GET", "/read", headers={"Cookie": f"edgestate_session={token}",
                                                       "Edgestate-Consistency": "session"})
    assert st == 200 and body["value"] == 1
    for bad in (token[:-2], token[:10] + ("A" if token[10] != "A" else "B") + token[11:], "x" * 300):
        st, h, body = n.request("GET", "/read?consistency=local", headers=session(bad))
        assert st == 400 and body["error"]["code"] == "bad_session_token", body
    st, h, body = n.request("GET", "/read?consistency=sometimes")
    assert st == 400 and "local, bounded, session or strong" in body["error"]["message"]
    # A token survives a restart of the node (its secret is kept in the data directory).
    n.kill()
    n.args = []
    n.start()
    st, h, body = n.request("GET", "/read", headers=session(token))
    assert st == 200 and body["value"] == 1
    # A recreated data directory is a new life: a token from the old one is lost for good.
    n.kill()
    import shutil
    shutil.rmtree(n.data_dir)
    time.sleep(1.1)  # Epochs are whole seconds: the new directory's must be later.
    n.start()
    st, h, body = n.request("GET", "/read", headers=session(token))
    assert st in (400, 409), body  # A new secret (400) or a lost life (409), never a wait.


def test_bad_consistency_flags_exit_2(tmpdir_path):
    for args, needle in [(["--default-consistency", "eventual"], "default-consistency"),
                         (["--default-consistency", "bounded"], "bounded"),
                         (["--session-wait-ms", "-1"], "session wait"),
                         (["--session-wait-ms", "600000"], "session wait")]:
        r = subprocess.run([BIN, "serve", "--data-dir", tmpdir_path] + args, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr, (args, r.stderr)

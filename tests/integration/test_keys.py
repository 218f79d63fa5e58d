"""Keys (sessions) and the geo cache between real processes: the API, bad input, convergence,
partitions, expiry, single flight and purges (docs/keys.md, docs/cache.md)."""
import http.client
import http.server
import json
import os
import threading
import time
import urllib.parse

import pytest

from conftest import SLOW, free_ports, wait_until
from test_demo import http as demo_http, start_demo
from test_replication import Cluster


def req(node_or_port, method, path, body=None, headers=None, timeout=10.0):
    """One request; returns (status, headers dict with lower-case names, raw body bytes)."""
    port = node_or_port if isinstance(node_or_port, int) else node_or_port.port
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def error_code(raw):
    return json.loads(raw)["error"]["code"]


def test_put_get_list_touch_delete(node):
    st, h, body = req(node, "PUT", "/v1/kv/user%2F1?ttl_ms=60000", b"\x00alice\xff",
                      {"Content-Type": "application/x-session"})
    assert st == 201, body
    put = json.loads(body)
    assert put["key"] == "user/1" and put["size"] == 7 and put["expires_at"]
    assert h["etag"] == put["etag"]
    st, h, body = req(node, "GET", "/v1/kv/user/1")  # A raw slash is the same key.
    assert st == 200 and body == b"\x00alice\xff"
    assert h["content-type"] == "application/x-session"
    assert h["etag"] == put["etag"] and h["edgestate-expires-at"] == put["expires_at"]
    assert h["edgestate-staleness-ms"] == "0" and h["edgestate-session"]
    # Overwrite: 200, a new ETag; no Content-Type means octet-stream on the way out.
    st, h2, body = req(node, "PUT", "/v1/kv/user%2F1", b"bob")
    assert st == 200 and h2["etag"] != put["etag"] and json.loads(body)["expires_at"] is None
    st, h, body = req(node, "GET", "/v1/kv/user%2F1")
    assert body == b"bob" and h["content-type"] == "application/octet-stream"
    assert "edgestate-expires-at" not in h
    # Touch sets an expiry (header form of the TTL).
    st, _, body = req(node, "POST", "/v1/kv/user%2F1/touch", headers={"Edgestate-TTL-Ms": "300"})
    assert st == 200 and json.loads(body)["expires_at"]
    wait_until(lambda: req(node, "GET", "/v1/kv/user%2F1")[0] == 404, 5 * SLOW, "expiry")
    st, _, body = req(node, "POST", "/v1/kv/user%2F1/touch?ttl_ms=1000")
    assert st == 404 and error_code(body) == "not_found"  # Expired keys cannot be touched.
    # Listing with pagination skips dead keys.
    for i in range(5):
        assert req(node, "PUT", f"/v1/kv/s%2F{i}", b"v")[0] == 201
    assert req(node, "DELETE", "/v1/kv/s%2F2")[0] == 200
    names, after, pages = [], "", 0
    while True:
        q = "/v1/kv?prefix=s%2F&limit=2" + (f"&after={urllib.parse.quote(after, safe='')}"
                                             if after else "")
        st, _, body = req(node, "GET", q)
        assert st == 200, body
        page = json.loads(body)
        names += [k["key"] for k in page["keys"]]
        assert all(k["size"] == 1 and k["etag"] for k in page["keys"])
        pages += 1
        if page["next"] is None:
            break
        after = page["next"]
    assert names == ["s/0", "s/1", "s/3", "s/4"] and pages == 2
    # Delete is idempotent and says whether the key was there.
    st, _, body = req(node, "DELETE", "/v1/kv/s%2F0")
    assert st == 200 and json.loads(body) == {"key": "s/0", "deleted": True, "existed": True}
    st, _, body = req(node, "DELETE", "/v1/kv/s%2F0")
    assert st == 200 and json.loads(body)["existed"] is False
    assert req(node, "GET", "/v1/kv/s%2F0")[0] == 404
    assert req(node, "GET", "/v1/kv/never")[0] == 404


def test_conditional_writes(node):
    st, h, _ = req(node, "PUT", "/v1/kv/c", b"1", {"If-None-Match": "*"})
    assert st == 201
    etag = h["etag"]
    st, _, body = req(node, "PUT", "/v1/kv/c", b"2", {"If-None-Match": "*"})
    assert st == 412 and error_code(body) == "precondition_failed"
    st, h, _ = req(node, "PUT", "/v1/kv/c", b"2", {"If-Match": etag})
    assert st == 200
    st, _, body = req(node, "PUT", "/v1/kv/c", b"3", {"If-Match": etag})  # Stale ETag.
    assert st == 412
    assert req(node, "GET", "/v1/kv/c")[2] == b"2"
    assert req(node, "DELETE", "/v1/kv/c", headers={"If-Match": etag})[0] == 412
    assert req(node, "DELETE", "/v1/kv/c", headers={"If-Match": h["etag"]})[0] == 200
    assert req(node, "PUT", "/v1/kv/c", b"4", {"If-Match": "*"})[0] == 412  # Nothing live.


def test_one_mib_values_and_the_limit(node):
    big = os.urandom(1 << 20)
    st, _, body = req(node, "PUT", "/v1/kv/big", big)
    assert st == 201, body
    st, _, body = req(node, "GET", "/v1/kv/big")
    assert st == 200 and body == big
    st, _, body = req(node, "PUT", "/v1/kv/big", big + b"x")
    assert st == 413 and error_code(body) == "payload_too_large"
    assert req(node, "GET", "/v1/kv/big")[2] == big


@pytest.mark.parametrize("method,path,headers,code", [
    ("PUT", "/v1/kv/" + "k" * 513, {}, 400),                    # Key over 512 bytes.
    ("PUT", "/v1/kv/a%01b", {}, 400),                           # Control character.
    ("PUT", "/v1/kv/%ff", {}, 400),                             # Not UTF-8.
    ("PUT", "/v1/kv/a%zz", {}, 400),                            # Bad escape.
    ("GET", "/v1/kv/", {}, 200),                                # The listing.
    ("PUT", "/v1/kv/a?ttl_ms=0", {}, 400),
    ("PUT", "/v1/kv/a?ttl_ms=-5", {}, 400),
    ("PUT", "/v1/kv/a?ttl_ms=abc", {}, 400),
    ("PUT", "/v1/kv/a?ttl_ms=2592000001", {}, 400),             # Over 30 days.
    ("PUT", "/v1/kv/a?ttl_ms=10&ttl_ms=10", {}, 400),           # Twice.
    ("PUT", "/v1/kv/a?ttl_ms=10", {"Edgestate-TTL-Ms": "20"}, 400),
    ("PUT", "/v1/kv/a", {"Edgestate-TTL-Ms": ""}, 400),
    ("PUT", "/v1/kv/a", {"If-Match": "no-quotes"}, 400),
    ("PUT", "/v1/kv/a", {"If-None-Match": "\"x\""}, 400),
    ("PUT", "/v1/kv/a?consistency=strong", {}, 503),            # No voter set here.
    ("GET", "/v1/kv?consistency=strong", {}, 400),              # Listings: no strong level.
    ("GET", "/v1/cache/a?consistency=strong", {}, 400),         # Nor the cache.
    ("PUT", "/v1/kv/a?consistency=nope", {}, 400),
    ("PUT", "/v1/kv/a", {"Edgestate-Session": "garbage"}, 400),
    ("POST", "/v1/kv/a", {}, 405),
    ("POST", "/v1/kv/a/touch", {}, 400),                        # Touch needs a TTL.
    ("GET", "/v1/kv?limit=0", {}, 400),
    ("GET", "/v1/kv?limit=1001", {}, 400),
    ("GET", "/v1/kv?prefix=" + "p" * 513, {}, 400),
    ("PUT", "/v1/cache/a", {"If-None-Match": "*"}, 400),        # Cache writes: no conditions.
    ("POST", "/v1/cache/purge", {}, 400),                       # No body.
    ("PATCH", "/v1/cache/a", {}, 405),
])
def test_bad_input_gets_clear_errors(node, method, path, headers, code):
    body = b"" if path == "/v1/cache/purge" else b"v"
    st, h, raw = req(node, method, path, body, headers)
    assert st == code, raw
    if code != 200:
        err = json.loads(raw)["error"]
        assert err["code"] and err["message"]
    if code == 405:
        assert "allow" in h


def test_bad_purge_bodies_and_content_types(node):
    for bad in [b"[]", b"{\"prefix\": 1}", b"{\"prefix\": \"a\", \"x\": 1}", b"nope",
                json.dumps({"prefix": "a" * 513}).encode()]:
        st, _, raw = req(node, "POST", "/v1/cache/purge", bad)
        assert st == 400, (bad, raw)
    # A header value with a byte outside visible ASCII is refused, not stored.
    st, _, raw = req(node, "PUT", "/v1/kv/ct", b"v", {"Content-Type": "text/\x80plain"})
    assert st == 400, raw


class Origin:
    """A counting origin server: /slow/* answers after a delay, /hang/* after HANG_S (far past
    any timeout the tests give the node), /gone/* is 404, /fail/* is 500, /nostore/* says
    no-store, /garbage/* answers bytes that are not HTTP, anything else answers 'body-of-<key>'
    with max-age=60."""

    HANG_S = 30

    def __init__(self, delay=0.5):
        self.counts, self.delay, self.lock = {}, delay, threading.Lock()
        self.via = set()
        self.hangs_answered = 0  # /hang/* requests whose wait is over.
        origin = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                key = urllib.parse.unquote(self.path[1:])
                with origin.lock:
                    origin.via.add(self.headers.get("Via"))
                    origin.counts[key] = origin.counts.get(key, 0) + 1
                    n = origin.counts[key]
                if key.startswith("slow/"):
                    time.sleep(origin.delay)
                if key.startswith("hang/"):
                    time.sleep(origin.HANG_S)
                    with origin.lock:
                        origin.hangs_answered += 1
                if key.startswith("gone/"):
                    self.send_response(404)
                    self.end_headers()
                    return
                if key.startswith("garbage/"):  # Not HTTP at all.
                    self.wfile.write(b"\x00\xffHELLO\r\n\r\n\x01")
                    self.close_connection = True
                    return
                if key.startswith("fail/"):
                    self.send_response(500)
                    self.end_headers()
                    return
                data = f"body-of-{key}-{n}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Cache-Control",
                                 "no-store" if key.startswith("nostore/") else "max-age=60")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, key):
        with self.lock:
            return self.counts.get(key, 0)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def test_cache_fill_single_flight_and_origin_errors(nodes, origin):
    n = nodes(["--cache-origin", f"http://127.0.0.1:{origin.port}", "--origin-timeout-ms",
               "1000"])
    # Twenty concurrent misses of one key: one origin request, every caller served.
    results = []

    def get():
        results.append(req(n, "GET", "/v1/cache/slow%2Fa"))

    threads = [threading.Thread(target=get) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200] * 20
    assert {r[2] for r in results} == {b"body-of-slow/a-1"}
    assert {r[1]["edgestate-cache"] for r in results} == {"miss"}
    assert origin.count("slow/a") == 1
    region = json.loads(req(n, "GET", "/v1/cluster")[2])["region"]
    assert origin.via == {"1.1 edgestate-" + region}, origin.via  # The fetching region.
    st, h, body = req(n, "GET", "/v1/cache/slow%2Fa")
    assert st == 200 and h["edgestate-cache"] == "hit" and body == b"body-of-slow/a-1"
    assert h["content-type"] == "text/plain" and h["edgestate-expires-at"]
    assert origin.count("slow/a") == 1
    # no-store is served but never stored.
    assert req(n, "GET", "/v1/cache/nostore%2Fx")[0] == 200
    assert req(n, "GET", "/v1/cache/nostore%2Fx")[1]["edgestate-cache"] == "miss"
    assert origin.count("nostore/x") == 2
    # The origin's failures map to 404, 502 and 504 with JSON bodies; the node stays up.
    st, h, raw = req(n, "GET", "/v1/cache/gone%2Fx")
    assert st == 404 and error_code(raw) == "not_found"
    st, h, raw = req(n, "GET", "/v1/cache/fail%2Fx")
    assert st == 502 and error_code(raw) == "bad_gateway"
    st, h, raw = req(n, "GET", "/v1/cache/garbage%2Fx")
    assert st == 502 and error_code(raw) == "bad_gateway", raw
    # The node's deadline (1 s) answers 504 while the origin is still holding the request.
    st, h, raw = req(n, "GET", "/v1/cache/hang%2Fx", timeout=Origin.HANG_S / 2)
    assert st == 504 and error_code(raw) == "timeout"
    assert origin.hangs_answered == 0
    # A slow origin holds only the requests for its key: others are answered while it hangs.
    slow = threading.Thread(target=lambda: req(n, "GET", "/v1/cache/hang%2Fy"))
    slow.start()
    wait_until(lambda: origin.count("hang/y") == 1, 10 * SLOW, "the fetch of hang/y")
    assert req(n, "GET", "/v1/cache/slow%2Fa")[0] == 200
    assert req(n, "GET", "/read")[0] == 200
    assert origin.hangs_answered == 0
    slow.join()
    # Explicit fills and purges on one node.
    assert req(n, "PUT", "/v1/cache/manual", b"m", {"Content-Type": "text/x-m"})[0] == 201
    st, h, body = req(n, "GET", "/v1/cache/manual")
    assert (st, h["edgestate-cache"], body) == (200, "hit", b"m")
    assert req(n, "DELETE", "/v1/cache/manual")[0] == 200
    st, h, body = req(n, "GET", "/v1/cache/manual")  # Gone from the cache: the origin again.
    assert st == 200 and h["edgestate-cache"] == "miss" and body == b"body-of-manual-1"


def test_a_miss_after_a_purge_never_joins_an_older_fetch(nodes, origin):
    n = nodes(["--cache-origin", f"http://127.0.0.1:{origin.port}"])
    first = []
    # A miss starts a slow fetch (the origin answers after 0.5 s) ...
    t = threading.Thread(target=lambda: first.append(req(n, "GET", "/v1/cache/slow%2Fp")))
    t.start()
    wait_until(lambda: origin.count("slow/p") == 1, 10 * SLOW, "the first fetch")
    # ... a purge of the key is acknowledged while it is in flight ...
    assert req(n, "DELETE", "/v1/cache/slow%2Fp")[0] == 200
    # ... so a miss after the purge fetches afresh instead of joining it.
    st, h, body = req(n, "GET", "/v1/cache/slow%2Fp")
    assert (st, body) == (200, b"body-of-slow/p-2"), (st, body)
    t.join()
    assert first[0][0] == 200 and first[0][2] == b"body-of-slow/p-1"  # Asked before the purge.
    assert origin.count("slow/p") == 2
    # What stays cached is the fetch that began after the purge.
    st, h, body = req(n, "GET", "/v1/cache/slow%2Fp")
    assert (st, h["edgestate-cache"], body) == (200, "hit", b"body-of-slow/p-2")


def test_only_if_cached_never_fetches(nodes, origin):
    n = nodes(["--cache-origin", f"http://127.0.0.1:{origin.port}"])
    only = {"Cache-Control": "max-age=0, Only-If-Cached"}
    st, h, raw = req(n, "GET", "/v1/cache/oic", headers=only)
    assert st == 504 and h["edgestate-cache"] == "miss", raw
    assert error_code(raw) == "timeout" and origin.count("oic") == 0
    assert req(n, "GET", "/v1/cache/oic")[0] == 200  # A plain miss fetches.
    st, h, body = req(n, "GET", "/v1/cache/oic", headers=only)
    assert (st, h["edgestate-cache"], body) == (200, "hit", b"body-of-oic-1")
    assert origin.count("oic") == 1


def test_cache_without_origin_misses_with_404(node):
    st, h, raw = req(node, "GET", "/v1/cache/x")
    assert st == 404 and h["edgestate-cache"] == "miss"


@pytest.fixture
def cluster3(tmpdir_path):
    c = Cluster(tmpdir_path)
    yield c
    c.kill_all()


def test_keys_replicate_converge_and_expire_together(cluster3):
    c = cluster3.start_all()
    nodes = [c.nodes[r] for r in c.regions]
    # Concurrent writes of one key in every region converge to one value everywhere.
    for round_ in range(5):
        threads = [threading.Thread(target=req, args=(n, "PUT", "/v1/kv/hot",
                                                      f"{r}-{round_}".encode()))
                   for r, n in zip(c.regions, nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def same():
            got = [req(n, "GET", "/v1/kv/hot") for n in nodes]
            return (all(g[0] == 200 for g in got) and len({g[2] for g in got}) == 1
                    and len({g[1]["etag"] for g in got}) == 1)
        wait_until(same, 10 * SLOW, "concurrent writes to converge")
    # A session token carries a write to a region that must wait for it.
    st, h, _ = req(nodes[0], "PUT", "/v1/kv/sess", b"mine")
    token = h["edgestate-session"]
    st, _, body = req(nodes[1], "GET", "/v1/kv/sess?consistency=session",
                      headers={"Edgestate-Session": token})
    assert st == 200 and body == b"mine"
    # Expiry is one absolute time everywhere.
    st, h, body = req(nodes[0], "PUT", "/v1/kv/ttl?ttl_ms=5000", b"short")
    expires = json.loads(body)["expires_at"]
    # Replication takes an interval (50 ms) and a loopback hop: well within the TTL.
    wait_until(lambda: all(req(n, "GET", "/v1/kv/ttl")[0] == 200 for n in nodes), 4.0,
               "the key everywhere before it expires")
    assert {req(n, "GET", "/v1/kv/ttl")[1]["edgestate-expires-at"] for n in nodes} == {expires}
    wait_until(lambda: req(nodes[0], "GET", "/v1/kv/ttl")[0] == 404, 8 * SLOW, "expiry")
    assert [req(n, "GET", "/v1/kv/ttl")[0] for n in nodes] == [404, 404, 404]
    # Deletes replicate; purges reach every region's cache.
    req(nodes[2], "DELETE", "/v1/kv/sess")
    wait_until(lambda: all(req(n, "GET", "/v1/kv/sess")[0] == 404 for n in nodes), 10 * SLOW,
               "the delete everywhere")
    for n in nodes:
        assert req(n, "PUT", "/v1/cache/img%2F1", b"old")[0] == 201
    assert req(nodes[1], "POST", "/v1/cache/purge", json.dumps({"prefix": "img/"}).encode())[0] \
        == 200
    wait_until(lambda: all(req(n, "GET", "/v1/cache/img%2F1")[0] == 404 for n in nodes),
               10 * SLOW, "the purge in every region")
    # A restart keeps every key, and the node catches up with what it missed.
    c.nodes["fra"].kill()
    req(nodes[0], "PUT", "/v1/kv/while-down", b"x")
    c.start("fra")
    wait_until(lambda: req(c.nodes["fra"], "GET", "/v1/kv/while-down")[0] == 200, 10 * SLOW,
               "catch-up after restart")
    assert req(c.nodes["fra"], "GET", "/v1/kv/hot")[0] == 200


def test_delete_during_a_partition_is_not_undone_by_the_heal(tmpdir_path):
    regions = ["lhr", "fra", "iad"]
    p, urls, pids, ctl = start_demo(tmpdir_path, regions, extra=["--strong-voters", "none"])
    ports = {r: urllib.parse.urlparse(u).port for r, u in urls.items()}
    try:
        assert req(ports["fra"], "PUT", "/v1/kv/k", b"v1")[0] == 201
        wait_until(lambda: all(req(ports[r], "GET", "/v1/kv/k")[2] == b"v1" for r in regions),
                   10 * SLOW, "v1 everywhere")
        assert demo_http("POST", ctl + "/regions/iad/isolate")[0] == 200
        # iad writes while cut off; lhr deletes afterwards (a later clock).
        assert req(ports["iad"], "PUT", "/v1/kv/k", b"iad-write")[0] == 200
        assert req(ports["iad"], "PUT", "/v1/kv/k2", b"only-iad")[0] == 201
        time.sleep(0.01)
        assert req(ports["lhr"], "DELETE", "/v1/kv/k")[0] == 200
        # And iad deletes a key the others still have.
        assert req(ports["fra"], "PUT", "/v1/kv/k3", b"x")[0] == 201
        wait_until(lambda: req(ports["lhr"], "GET", "/v1/kv/k3")[0] == 200, 10 * SLOW, "k3")
        wait_until(lambda: req(ports["fra"], "GET", "/v1/kv/k")[0] == 404, 10 * SLOW, "delete")
        assert req(ports["iad"], "GET", "/v1/kv/k")[2] == b"iad-write"
        assert req(ports["iad"], "DELETE", "/v1/kv/k3")[0] == 200
        time.sleep(0.5)
        assert req(ports["lhr"], "GET", "/v1/kv/k3")[0] == 200  # Still cut off.
        assert demo_http("POST", ctl + "/regions/iad/rejoin")[0] == 200
        wait_until(lambda: all(req(ports[r], "GET", "/v1/kv/k")[0] == 404 and
                               req(ports[r], "GET", "/v1/kv/k3")[0] == 404 and
                               req(ports[r], "GET", "/v1/kv/k2")[0] == 200 for r in regions),
                   15 * SLOW, "the heal")
        # Nothing comes back later either.
        time.sleep(1.0)
        assert [req(ports[r], "GET", "/v1/kv/k")[0] for r in regions] == [404] * 3
        assert [req(ports[r], "GET", "/v1/kv/k3")[0] for r in regions] == [404] * 3
    finally:
        p.send_signal(15)
        assert p.wait(timeout=30 * SLOW) == 0


def metric(node, name):
    st, _, raw = req(node, "GET", "/metrics")
    total = 0.0
    for line in raw.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_dead_keys_are_collected_once_every_region_has_them(cluster3):
    c = cluster3.start_all()
    nodes = [c.nodes[r] for r in c.regions]
    value = b"s" * 20000
    for i in range(50):
        assert req(nodes[0], "PUT", f"/v1/kv/short{i}?ttl_ms=300", value)[0] == 201
        assert req(nodes[1], "PUT", f"/v1/kv/del{i}", b"x")[0] == 201
    for i in range(50):
        assert req(nodes[1], "DELETE", f"/v1/kv/del{i}")[0] == 200
    assert req(nodes[2], "PUT", "/v1/kv/keep", b"k")[0] == 201
    # Expired and deleted records disappear from every region's store (the sweep runs every
    # second; the origin's acknowledgments reach the others with its heartbeats).
    def collected():
        return all(metric(n, "edgestate_collected_total") >= 100 for n in nodes)
    wait_until(collected, 20 * SLOW, "dead keys collected everywhere")

    def counted():
        infos = [json.loads(req(n, "GET", "/v1/cluster")[2])["keyspace"] for n in nodes]
        return all(i["keys"]["live"] == 1 and i["keys"]["dead"] == 0 for i in infos)
    wait_until(counted, 10 * SLOW, "a sweep pass counting one live key")
    assert all(req(n, "GET", "/v1/kv/keep")[2] == b"k" for n in nodes)
    assert all(req(n, "GET", "/v1/kv/del7")[0] == 404 for n in nodes)
    # Nothing comes back: a restarted region has nothing older to send.
    c.nodes["lhr"].kill()
    c.start("lhr")
    time.sleep(1.0)
    assert all(req(n, "GET", "/v1/kv/del7")[0] == 404 for n in [c.nodes[r] for r in c.regions])
    assert metric(c.nodes["iad"], "edgestate_expired_total") + \
        metric(c.nodes["iad"], "edgestate_collected_total") >= 100

"""Hostile clients: slow and idle sockets, connection floods, write floods, random bytes."""
import http.client
import json
import random
import socket
import threading
import time

from conftest import parse_raw_response, raw_exchange, wait_until, SLOW


def open_partial(port, n, payload=b"GET /read HTTP/1.1\r\nHost: x\r\n"):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            s.sendall(payload)
        socks.append(s)
    return socks


def closed_by_peer(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_hundreds_of_half_open_sockets_do_not_starve_clients(nodes):
    # The slow sockets would hold the node for the request timeout (100 s) if they starved it;
    # the bound below is a tenth of that.
    node = nodes(args=["--request-timeout-ms", "100000"])
    slow = open_partial(node.port, 300) + open_partial(node.port, 100, payload=b"")
    try:
        start = time.monotonic()
        for _ in range(20):
            st, _, body = node.request("POST", "/increment", timeout=30)
            assert st == 200
        elapsed = time.monotonic() - start
        assert elapsed < 10 * SLOW, f"20 requests took {elapsed:.2f}s beside 400 slow sockets"
        assert node.value() == 20
    finally:
        for s in slow:
            s.close()


def test_slow_header_is_cut_at_request_timeout(nodes):
    n = nodes(args=["--request-timeout-ms", "800"])
    s = socket.create_connection(("127.0.0.1", n.port), timeout=5)
    start = time.monotonic()
    s.sendall(b"GET /read HTTP/1.1\r\n")
    closed = False
    # Trickle one header byte every 100 ms for up to 20 s: were each byte to extend the
    # deadline, the connection would stay open to the end.
    while time.monotonic() - start < 20:
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if closed_by_peer(s, 0.1):
            closed = True
            break
    elapsed = time.monotonic() - start
    s.close()
    assert closed, f"slow client held for {elapsed:.2f}s"
    assert elapsed < 8, f"slow client held for {elapsed:.2f}s, ten times the timeout"


def test_idle_connection_is_closed(nodes):
    n = nodes(args=["--request-timeout-ms", "500"])
    s = socket.create_connection(("127.0.0.1", n.port), timeout=5)
    start = time.monotonic()
    assert closed_by_peer(s, 20)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.45, f"closed {elapsed:.2f}s after connecting, before the 500 ms timeout"
    assert elapsed < 5, f"closed {elapsed:.2f}s after connecting, ten times the timeout"
    s.close()


def test_connection_limit_rejects_then_recovers(nodes):
    n = nodes(args=["--max-connections", "20", "--request-timeout-ms", "3000"])
    keep = n.conn()
    keep.request("GET", "/health")
    assert keep.getresponse().read()  # An established keep-alive client.
    idle = open_partial(n.port, 19, payload=b"")
    try:
        # Once the node has accepted the 19 idle sockets, the next client is refused.
        def refused():
            raw = raw_exchange(n.port, b"GET /read HTTP/1.1\r\nHost: x\r\n"
                                       b"Connection: close\r\n\r\n")
            return parse_raw_response(raw) if raw.startswith(b"HTTP/1.1 503") else None
        status, _, body = wait_until(refused, 2, "a client beyond the limit refused")
        assert status == 503 and b"too many connections" in body
        # The established client keeps working while the limit is reached.
        keep.request("POST", "/increment")
        assert keep.getresponse().status == 200
        # Once the idle sockets time out, new clients get in.
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            raw = raw_exchange(n.port, b"GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
            if raw.startswith(b"HTTP/1.1 200"):
                break
            time.sleep(0.2)
        assert raw.startswith(b"HTTP/1.1 200"), raw
    finally:
        keep.close()
        for s in idle:
            s.close()


def test_write_flood_beyond_the_pending_bound_gets_503_and_loses_nothing(nodes):
    n = nodes(args=["--max-pending-writes", "2"])
    lock = threading.Lock()
    tally = {"ok": 0, "overloaded": 0, "other": [], "reads": 0, "bad_reads": []}
    stop = threading.Event()
    reading = threading.Event()  # Writers start once reads are going on.

    def writer():
        c = n.conn()
        reading.wait(timeout=30 * SLOW)
        deadline = time.monotonic() + 20 * SLOW
        try:
            for _ in range(400):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                c.request("POST", "/v1/counters/flood/increment")
                r = c.getresponse()
                body = r.read()
                with lock:
                    if r.status == 200:
                        tally["ok"] += 1
                    elif (r.status == 503 and r.getheader("Retry-After") == "1"
                          and json.loads(body)["error"]["code"] == "overloaded"):
                        tally["overloaded"] += 1
                    else:
                        tally["other"].append((r.status, body[:200]))
                    if tally["overloaded"] >= 50 and tally["ok"] >= 100 and tally["reads"] >= 20:
                        stop.set()
        finally:
            c.close()

    def reader():
        c = n.conn()
        try:
            while not stop.is_set():
                c.request("GET", "/v1/counters/flood")
                r = c.getresponse()
                r.read()
                with lock:
                    tally["reads"] += 1
                    if r.status != 200:
                        tally["bad_reads"].append(r.status)
                reading.set()
        finally:
            c.close()

    threads = [threading.Thread(target=writer) for _ in range(48)]
    threads.append(threading.Thread(target=reader))
    for t in reversed(threads):
        t.start()
    for t in threads[:-1]:
        t.join(timeout=60 * SLOW)
    stop.set()
    threads[-1].join(timeout=30 * SLOW)
    assert not any(t.is_alive() for t in threads)
    assert tally["other"] == [], tally["other"][:5]
    assert tally["overloaded"] > 0, tally  # Beyond two pending writes, refused at once.
    assert tally["reads"] > 0 and tally["bad_reads"] == [], tally
    # Every acknowledged increment is in the counter, and no refused one.
    assert n.value("flood") == tally["ok"]
    # The flood over, writes are admitted again.
    st, _, body = n.request("POST", "/v1/counters/flood/increment")
    assert st == 200 and body["value"] == tally["ok"] + 1, body
    st, _, metrics = n.request("GET", "/metrics")
    assert f"edgestate_writes_overloaded_total {tally['overloaded']}" in metrics


def test_random_bytes_never_crash_the_node(node):
    rng = random.Random(1234)
    prefixes = [b"", b"GET / HTTP/1.1\r\n", b"POST /v1/counters/x/increment HTTP/1.1\r\n",
                b"GET /read HTTP/1.1\r\nContent-Length: 5\r\n\r\n"]
    for i in range(150):
        payload = rng.choice(prefixes) + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        if i % 3 == 0:
            payload += b"\r\n\r\n"
        raw_exchange(node.port, payload, timeout=0.3)
    assert node.alive()
    assert node.request("GET", "/health")[0] == 200
    assert node.request("POST", "/increment")[0] == 200


def test_client_vanishing_mid_request_is_harmless(node):
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", node.port))
        s.sendall(b"POST /v1/counters/v/increment HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"de")
        s.close()
        s = socket.create_connection(("127.0.0.1", node.port))
        s.sendall(b"POST /increment HTTP/1.1\r\n\r\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST while the increment is being committed.
    assert node.alive()
    assert node.value("v") == 0
    assert node.request("GET", "/health")[0] == 200

"""The HTTP API over a real socket: article endpoints, versioned API, errors, metrics."""
import json
import re
import socket
import time

from conftest import parse_raw_response, raw_exchange, SLOW


def assert_error(resp, status, code):
    st, headers, body = resp
    assert st == status, (st, body)
    assert headers.get("content-type") == "application/json"
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_article_endpoints(node):
    st, _, body = node.request("GET", "/read")
    assert st == 200 and body == {"value": 0, "region": "local", "lastUpdated": None}
    for i in range(1, 4):
        st, _, body = node.request("POST", "/increment")
        assert st == 200 and body == {"value": i, "region": "local"}
    st, headers, body = node.request("GET", "/read")
    assert body["value"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["lastUpdated"])
    assert headers["edgestate-staleness-ms"] == "0"
    st, _, body = node.request("GET", "/health")
    assert st == 200 and body["status"] == "healthy" and body["region"] == "local"


def test_versioned_counters(node):
    st, _, body = node.request("POST", "/v1/counters/views%2Fhome/increment",
                               body='{"delta": 10}')
    assert st == 200 and body["value"] == 10 and body["name"] == "views/home"
    st, _, body = node.request("POST", "/v1/counters/views%2Fhome/increment", body='{"delta": -3}')
    assert body["value"] == 7
    st, _, body = node.request("POST", "/v1/counters/views%2Fhome/increment")
    assert body["value"] == 8
    st, headers, body = node.request("GET", "/v1/counters/views%2Fhome")
    assert st == 200
    assert set(body) == {"name", "value", "region", "updated_at", "staleness_ms"}
    assert body["value"] == 8 and body["staleness_ms"] == 0
    assert headers["edgestate-staleness-ms"] == "0"
    # The article's counter is the v1 counter named "default".
    node.request("POST", "/increment")
    assert node.value("default") == 1


def test_int64_limits_and_overflow(node):
    big = 9223372036854775807
    st, _, body = node.request("POST", "/v1/counters/o/increment", body=f'{{"delta": {big}}}')
    assert st == 200 and body["value"] == big
    assert_error(node.request("POST", "/v1/counters/o/increment"), 409, "conflict")
    assert node.value("o") == big
    st, _, body = node.request("POST", "/v1/counters/n/increment",
                               body='{"delta": -9223372036854775808}')
    assert st == 200 and body["value"] == -big - 1
    assert_error(node.request("POST", "/v1/counters/n/increment", body='{"delta": -1}'),
                 409, "conflict")


def test_bad_requests(node):
    assert_error(node.request("GET", "/nope"), 404, "not_found")
    assert_error(node.request("GET", "/v1/counters/a/b"), 404, "not_found")
    r = node.request("GET", "/increment")
    assert_error(r, 405, "method_not_allowed")
    assert r[1]["allow"] == "POST"
    r = node.request("PUT", "/read")
    assert_error(r, 405, "method_not_allowed")
    assert r[1]["allow"] == "GET"
    for body in ["{", "[1]", '{"delta": 1.5}', '{"delta": "1"}', '{"delta": 1e400}',
                 '{"delta": 9223372036854775808}', '{"delta": -9223372036854775809}',
                 '{"delta": 1, "extra": 2}', "\xff"]:
        assert_error(node.request("POST", "/v1/counters/a/increment", body=body.encode("latin-1")),
                     400, "bad_request")
    assert_error(node.request("GET", "/v1/counters/" + "a" * 257), 400, "bad_request")
    assert_error(node.request("GET", "/v1/counters/a%01b"), 400, "bad_request")
    assert_error(node.request("GET", "/v1/counters/a%7F"), 400, "bad_request")
    assert_error(node.request("GET", "/v1/counters/%zz"), 400, "bad_request")
    assert node.request("GET", "/v1/counters/" + "a" * 256)[0] == 200
    assert node.value("a") == 0  # None of the bad increments changed anything.


def test_body_over_1mib_is_413(node):
    r = node.request("POST", "/v1/counters/a/increment", body=b" " * (1024 * 1024 + 1))
    assert_error(r, 413, "payload_too_large")
    assert node.request("POST", "/v1/counters/a/increment", body=b" " * (1024 * 1024))[0] == 200


def test_oversized_headers_are_431(node):
    raw = raw_exchange(node.port, b"GET /read HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 +
                       b"\r\n\r\n")
    status, headers, body = parse_raw_response(raw)
    assert status == 431 and b"headers_too_large" in body
    assert headers.get("connection") == "close"


def test_malformed_http_gets_400_and_close(node):
    for payload in [b"GARBAGE\r\n\r\n", b"GET /read HTTP/9.9\r\n\r\n",
                    b"GET /read HTTP/1.1\r\nBad Header\r\n\r\n",
                    b"POST /increment HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                    b"POST /increment HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"\x00\x01\x02\x03\r\n\r\n"]:
        raw = raw_exchange(node.port, payload)
        status, headers, body = parse_raw_response(raw)
        assert status == 400, (payload, raw)
        assert headers.get("connection") == "close"
        assert b'"bad_request"' in body
    assert node.request("GET", "/health")[0] == 200


def test_api_key(nodes):
    n = nodes(args=["--api-key", "k3y"])
    assert_error(n.request("GET", "/read"), 401, "unauthorized")
    assert_error(n.request("POST", "/increment", headers={"Authorization": "Bearer nope"}),
                 401, "unauthorized")
    assert_error(n.request("GET", "/metrics", headers={"Authorization": "Basic k3y"}),
                 401, "unauthorized")
    assert_error(n.request("GET", "/v1/counters/a", headers={"Authorization": "Bearer  k3y"}),
                 401, "unauthorized")
    ok = {"Authorization": "Bearer k3y"}
    assert n.request("POST", "/increment", headers=ok)[0] == 200
    assert n.request("GET", "/read", headers=ok)[2]["value"] == 1
    assert n.request("GET", "/health")[0] == 200
    # The key is never shown nor logged, not even when a wrong one is offered.
    shown = (json.dumps(n.request("GET", "/v1/cluster", headers=ok)[2])
             + n.request("GET", "/metrics", headers=ok)[2] + n.read_output())
    assert "k3y" not in shown and "nope" not in shown


def test_metrics(node):
    node.request("POST", "/increment")
    node.request("GET", "/read")
    node.request("GET", "/nope")
    st, headers, text = node.request("GET", "/metrics")
    assert st == 200 and headers["content-type"].startswith("text/plain")
    for needle in ['edgestate_http_requests_total{route="/increment",status="200"} 1',
                   'edgestate_http_requests_total{route="/read",status="200"} 1',
                   'edgestate_http_requests_total{route="none",status="404"} 1',
                   'edgestate_http_request_duration_seconds_bucket{route="/read",le="+Inf"} 1',
                   "edgestate_commit_batch_size_count", "edgestate_fsync_seconds_count",
                   "edgestate_counters 1"]:
        assert needle in text, needle
    # Every sample line is "name{labels} number".
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r'[a-z_]+(\{.*\})? [-+0-9.eInf]+', line), line


def test_keep_alive_and_pipelining(node):
    s = socket.create_connection(("127.0.0.1", node.port), timeout=5 * SLOW)
    s.sendall(b"POST /increment HTTP/1.1\r\nHost: x\r\n\r\n" * 3 +
              b"GET /read HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    deadline = time.monotonic() + 5 * SLOW
    while data.count(b"HTTP/1.1 200") < 4 and time.monotonic() < deadline:
        data += s.recv(65536)
    s.close()
    assert data.count(b"HTTP/1.1 200") == 4
    assert b'{"value":3,"region":"local","lastUpdated"' in data


def test_http10_without_keepalive_closes(node):
    raw = raw_exchange(node.port, b"GET /read HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200")

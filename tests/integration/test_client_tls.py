"""TLS on the client port (docs/security.md, "Client connections"): HTTPS with --tls-cert and
--tls-key, the certificate reloaded on SIGHUP without dropping connections, bad files and
flags refused."""
import os
import signal
import socket
import ssl
import subprocess

from conftest import BIN, wait_until


def make_cert(dirname, name):
    """A self-signed certificate for 127.0.0.1: returns (cert, key) paths."""
    os.makedirs(dirname, exist_ok=True)
    cert, key = os.path.join(dirname, f"{name}.pem"), os.path.join(dirname, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def trusting(cert):
    """A client context that accepts only `cert` (and checks that it names 127.0.0.1)."""
    return ssl.create_default_context(cafile=cert)


def served_certificate(port):
    """The DER certificate a fresh TLS connection to `port` is shown (verification off)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            return s.getpeercert(binary_form=True)


def der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_https_serves_the_api_and_plain_http_gets_no_answer(nodes, tmpdir_path):
    cert, key = make_cert(os.path.join(tmpdir_path, "certs"), "site-a")
    n = nodes(args=["--tls-cert", cert, "--tls-key", key])
    assert "listening on https://" in n.read_output()
    n.tls_context = trusting(cert)
    status, _, body = n.request("POST", "/v1/counters/tls-hits/increment")
    assert status == 200 and body["value"] == 1, body
    assert n.value("tls-hits") == 1
    status, headers, _ = n.request("PUT", "/v1/kv/session-1", body=b"secret",
                                   headers={"Content-Type": "text/plain"})
    assert status in (200, 201)
    # A plain HTTP client gets no HTTP answer: the bytes are not a TLS ClientHello.
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(b"GET /v1/counters/tls-hits HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    assert b"HTTP/1.1" not in got and b"tls-hits" not in got
    # A client that does not trust the certificate refuses the connection.
    n.tls_context = ssl.create_default_context()
    try:
        n.request("GET", "/health")
        raise AssertionError("an untrusted certificate was accepted")
    except ssl.SSLCertVerificationError:
        pass
    assert n.alive()


def test_sighup_reloads_the_certificate_without_dropping_connections(nodes, tmpdir_path):
    certs = os.path.join(tmpdir_path, "certs")
    cert_a, key_a = make_cert(certs, "site-a")
    cert_b, key_b = make_cert(certs, "site-b")
    live_cert, live_key = os.path.join(certs, "live.pem"), os.path.join(certs, "live.key")
    os.link(cert_a, live_cert)
    os.link(key_a, live_key)
    n = nodes(args=["--tls-cert", live_cert, "--tls-key", live_key])
    assert served_certificate(n.port) == der(cert_a)

    # A keep-alive connection opened before the reload.
    n.tls_context = trusting(cert_a)
    old = n.conn()
    old.request("POST", "/v1/counters/reload/increment")
    assert old.getresponse().read() and n.value("reload") == 1

    # Rotate the files in place (as certbot or a Kubernetes secret update would), then SIGHUP.
    for src, dst in ((cert_b, live_cert), (key_b, live_key)):
        os.replace(src, dst)
    n.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: reloaded" in n.read_output(), 10, "the reload is logged")
    assert served_certificate(n.port) == der(live_cert)
    # The old connection goes on with the session it negotiated.
    old.request("POST", "/v1/counters/reload/increment")
    r = old.getresponse()
    assert r.status == 200 and b'"value":2' in r.read()
    old.close()
    n.tls_context = trusting(live_cert)
    assert n.value("reload") == 2

    # A broken file on the next SIGHUP keeps the current certificate in service.
    with open(live_key, "w") as f:
        f.write("not a key\n")
    n.signal(signal.SIGHUP)
    wait_until(lambda: "keeping the current certificate" in n.read_output(), 10,
               "the failed reload is logged")
    assert live_key in n.read_output()
    assert n.alive()
    assert served_certificate(n.port) == der(live_cert)
    assert n.value("reload") == 2


def test_sighup_without_tls_changes_nothing(node):
    node.signal(signal.SIGHUP)
    wait_until(lambda: "no client certificate to reload" in node.read_output(), 10,
               "SIGHUP is logged")
    assert node.alive()
    assert node.request("GET", "/health")[0] == 200


def test_bad_tls_files_and_flags_are_refused(tmpdir_path):
    def serve(*args):
        return subprocess.run([BIN, "serve", "--port", "0", "--data-dir",
                               os.path.join(tmpdir_path, "d"), *args],
                              capture_output=True, text=True, timeout=30)

    r = serve("--tls-cert", "/etc/site.pem")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--tls-key" in r.stderr
    missing = os.path.join(tmpdir_path, "no-such-cert.pem")
    r = serve("--tls-cert", missing, "--tls-key", missing)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert missing in r.stderr + r.stdout
    cert_a, _ = make_cert(os.path.join(tmpdir_path, "c"), "site-a")
    _, key_b = make_cert(os.path.join(tmpdir_path, "c"), "site-b")
    r = serve("--tls-cert", cert_a, "--tls-key", key_b)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert key_b in r.stderr + r.stdout

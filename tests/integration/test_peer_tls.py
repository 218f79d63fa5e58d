"""Peer links are encrypted (docs/security.md): what an observer of the wire sees, certificates,
and plaintext only when every node asks for it."""
import os
import shutil
import signal
import socket
import subprocess
import threading

import pytest

from conftest import BIN, Node, free_ports, wait_until
from test_replication import Cluster, cluster_info

# Written in lhr and replicated to iad through the tap; none of it may cross the wire in clear.
COUNTER = "observer-visible-counter-name"
KEY = "observer-visible-session-key"
VALUE = b"observer-visible-session-value-0123456789"


class Tap:
    """A TCP relay in front of one listener that records every byte it forwards (both ways)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                a.close()
                continue
            b.settimeout(None)
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def bytes(self):
        with self.lock:
            return bytes(self.seen)

    def close(self):
        self.closed = True
        self.listener.close()


class TappedPair(Cluster):
    """iad and lhr; lhr reaches iad's peer port through a Tap."""

    def __init__(self, tmpdir, extra=()):
        super().__init__(tmpdir, regions=("iad", "lhr"), interval=20)
        self.tap = Tap(self.peer_ports["iad"])
        for r in self.regions:
            self.extra[r] = list(extra)

    def args(self, region):
        a = super().args(region)
        if region == "lhr":
            i = a.index("--peers")
            a[i + 1] = f"iad=127.0.0.1:{self.tap.port}"
        return a


def write_through_tap(pair):
    pair.start_all()
    lhr, iad = pair.nodes["lhr"], pair.nodes["iad"]
    for _ in range(3):
        assert lhr.request("POST", f"/v1/counters/{COUNTER}/increment")[0] == 200
    assert lhr.request("PUT", f"/v1/kv/{KEY}", body=VALUE)[0] in (200, 201)
    wait_until(lambda: iad.value(COUNTER) == 3, 10, "the counter reached iad through the tap")
    wait_until(lambda: iad.request("GET", f"/v1/kv/{KEY}")[0] == 200, 10,
               "the key reached iad through the tap")
    return pair.tap.bytes()


@pytest.fixture
def pair_factory(tmpdir_path):
    made = []

    def make(extra=()):
        p = TappedPair(tmpdir_path, extra)
        made.append(p)
        return p
    yield make
    for p in made:
        p.kill_all()
        p.tap.close()


def test_a_passive_observer_of_the_peer_link_sees_no_name_and_no_value(pair_factory):
    pair = pair_factory()
    seen = write_through_tap(pair)
    assert len(seen) > 1000  # The tap did carry the replication traffic.
    for needle in (COUNTER.encode(), KEY.encode(), VALUE):
        assert needle not in seen, needle
    assert cluster_info(pair.nodes["iad"])["peer_tls"] == "psk"


def test_plaintext_only_when_asked_and_then_the_observer_reads_everything(pair_factory):
    # The same observation with --peer-insecure-plaintext on both nodes: the test above would
    # fail if the links were not encrypted.
    pair = pair_factory(["--peer-insecure-plaintext"])
    seen = write_through_tap(pair)
    assert COUNTER.encode() in seen and VALUE in seen
    assert cluster_info(pair.nodes["iad"])["peer_tls"] == "plaintext"
    assert "NOT encrypted" in pair.nodes["iad"].read_output()


def test_a_plaintext_node_and_an_encrypted_node_never_exchange_writes(pair_factory):
    pair = pair_factory()
    pair.extra["lhr"] = ["--peer-insecure-plaintext"]
    pair.start_all()
    lhr, iad = pair.nodes["lhr"], pair.nodes["iad"]
    assert lhr.request("POST", f"/v1/counters/{COUNTER}/increment")[0] == 200
    assert iad.request("POST", f"/v1/counters/{COUNTER}/increment")[0] == 200

    def refused():
        return "refused peer connection" in iad.read_output() and all(
            p["inbound"] == "disconnected" and p["outbound"] != "connected"
            for p in cluster_info(iad)["peers"])
    wait_until(refused, 10, "iad refuses the plaintext node both ways")
    assert iad.value(COUNTER) == 1 and lhr.value(COUNTER) == 1


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(dirname, name):
    """A CA and one node certificate it signed: returns (cert, key, ca) paths."""
    os.makedirs(dirname, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name} CA",
            cwd=dirname)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "node.key", "-out", "node.csr", "-subj", f"/CN={name} node", cwd=dirname)
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "node.pem", "-days", "2", cwd=dirname)
    return [os.path.join(dirname, f) for f in ("node.pem", "node.key", "ca.pem")]


def cert_flags(paths):
    cert, key, ca = paths
    return ["--peer-tls-cert", cert, "--peer-tls-key", key, "--peer-tls-ca", ca]


def test_certificates_signed_by_the_cluster_ca_replicate_encrypted(pair_factory, tmpdir_path):
    pair = pair_factory(cert_flags(make_ca(os.path.join(tmpdir_path, "ca1"), "cluster")))
    seen = write_through_tap(pair)
    assert COUNTER.encode() not in seen and VALUE not in seen
    assert cluster_info(pair.nodes["iad"])["peer_tls"] == "certificates"


def test_a_certificate_from_another_ca_is_refused(pair_factory, tmpdir_path):
    pair = pair_factory(cert_flags(make_ca(os.path.join(tmpdir_path, "ca1"), "cluster")))
    pair.extra["lhr"] = cert_flags(make_ca(os.path.join(tmpdir_path, "ca2"), "intruder"))
    pair.start_all()
    lhr, iad = pair.nodes["lhr"], pair.nodes["iad"]
    assert lhr.request("POST", f"/v1/counters/{COUNTER}/increment")[0] == 200
    wait_until(lambda: "certificate verify failed" in iad.read_output() + lhr.read_output(), 10,
               "a certificate of another CA fails verification")
    wait_until(lambda: "refused peer connection" in iad.read_output(), 10, "iad refuses lhr")
    assert iad.value(COUNTER) == 0


def test_unreadable_certificate_files_stop_the_node_naming_the_file(tmpdir_path):
    ports = free_ports(2)
    missing = os.path.join(tmpdir_path, "no-such-cert.pem")
    r = subprocess.run(
        [BIN, "serve", "--port", "0", "--data-dir", os.path.join(tmpdir_path, "d"),
         "--region", "iad", "--peer-listen", f"127.0.0.1:{ports[0]}",
         "--peers", f"lhr=127.0.0.1:{ports[1]}", "--cluster-secret", "a-cluster-secret",
         "--peer-tls-cert", missing, "--peer-tls-key", missing, "--peer-tls-ca", missing],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert missing in r.stderr + r.stdout


def test_peer_tls_flags_are_validated(tmpdir_path):
    for args, needle in [(["--peer-tls-cert", "/a.pem"], "go together"),
                         (["--peer-tls-cert", "/a", "--peer-tls-key", "/b", "--peer-tls-ca", "/c",
                           "--peer-insecure-plaintext"], "contradicts")]:
        r = subprocess.run([BIN, "serve", "--port", "0", "--data-dir",
                            os.path.join(tmpdir_path, "v"), *args],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert needle in r.stderr, (args, r.stderr)


def test_peer_certificates_are_reloaded_on_sighup(pair_factory, tmpdir_path):
    """Files rotated in place + SIGHUP: new links use them, established ones go on; a broken
    file keeps the current certificate."""
    ca1 = make_ca(os.path.join(tmpdir_path, "ca1"), "cluster")
    ca2 = make_ca(os.path.join(tmpdir_path, "ca2"), "rotated")
    files = {}
    for r in ("iad", "lhr"):
        d = os.path.join(tmpdir_path, f"{r}-files")
        os.makedirs(d)
        files[r] = [os.path.join(d, os.path.basename(p)) for p in ca1]
        for src, dst in zip(ca1, files[r]):
            shutil.copy(src, dst)

    def rotate(region, to):
        for src, dst in zip(to, files[region]):
            shutil.copy(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)

    pair = pair_factory()
    for r in ("iad", "lhr"):
        pair.extra[r] = cert_flags(files[r])
    pair.start_all()
    lhr, iad = pair.nodes["lhr"], pair.nodes["iad"]

    def write_and_see(n):
        assert lhr.request("POST", f"/v1/counters/{COUNTER}/increment")[0] == 200
        wait_until(lambda: iad.value(COUNTER) == n, 10, f"increment {n} reaches iad")

    write_and_see(1)
    # iad moves to the new CA: its established link from lhr goes on.
    rotate("iad", ca2)
    iad.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: reloaded the peer certificate" in iad.read_output(), 10,
               "iad reloads its peer certificate")
    write_and_see(2)
    # A new link from lhr, still on the old CA, is refused by iad's new contexts.
    lhr.signal(signal.SIGTERM)
    assert lhr.wait(timeout=10) == 0
    lhr.start()
    assert lhr.request("POST", f"/v1/counters/{COUNTER}/increment")[0] == 200
    wait_until(lambda: "refused peer connection" in iad.read_output(), 10,
               "iad refuses a certificate of the old CA")
    assert iad.value(COUNTER) == 2
    # lhr rotates too: its next attempt uses the new files and its writes flow again.
    rotate("lhr", ca2)
    lhr.signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: reloaded the peer certificate" in lhr.read_output(), 10,
               "lhr reloads its peer certificate")
    wait_until(lambda: iad.value(COUNTER) == 3, 20, "lhr's write reaches iad over the new CA")
    # A broken key on the next SIGHUP keeps the current files in service.
    with open(files["iad"][1], "w") as f:
        f.write("not a key\n")
    iad.signal(signal.SIGHUP)
    wait_until(lambda: "keeping the current peer certificate" in iad.read_output(), 10,
               "a broken key is refused")
    assert files["iad"][1] in iad.read_output()
    write_and_see(4)

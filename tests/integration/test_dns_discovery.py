"""Peers found by DNS (--peers-dns), against dnsmasq on loopback serving the records Fly.io's
internal DNS and a Kubernetes headless service publish: peers appear, change and disappear
without a restart; a DNS outage keeps the peers found before; IPv6 peer links."""
import os
import shutil
import socket
import subprocess

import pytest

from conftest import BIN, Node, free_ports, wait_until

SECRET = "dns-discovery-cluster-secret"


def _dnsmasq():
    path = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(path):
        pytest.fail("dnsmasq is missing: scripts/setup.sh installs it (dnsmasq-base)")
    return path


def _query(port, name, qtype=16):
    """One DNS query over UDP; the raw answer, or None."""
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    q += qtype.to_bytes(2, "big") + b"\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(q, ("127.0.0.1", port))
        return s.recv(4096)
    except OSError:
        return None
    finally:
        s.close()


class Dns:
    """dnsmasq on 127.0.0.1:port answering only the records given (no upstream, no hosts)."""

    def __init__(self, tmpdir):
        self.dir = tmpdir
        self.port = free_ports(1)[0]
        self.proc = None

    def serve(self, lines, probe):
        self.stop()
        conf = os.path.join(self.dir, "dnsmasq.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [_dnsmasq(), "--keep-in-foreground", "--log-facility=-", f"--port={self.port}",
             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
             "--user=root", "--pid-file=", f"--conf-file={conf}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _query(self.port, probe), 10, "dnsmasq answers")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def dns(tmpdir_path):
    d = Dns(tmpdir_path)
    yield d
    d.stop()


@pytest.fixture
def started():
    nodes = []
    yield nodes
    for n in nodes:
        n.kill()


def peers_of(node):
    status, _, body = node.request("GET", "/v1/cluster")
    assert status == 200, body
    return {p["region"]: p for p in body["peers"]}


def fly_records(machines):
    """vms.app.internal TXT ("ID REGION" pairs) and ID.vm.app.internal AAAA records."""
    txt = ",".join(f"{mid} {region}" for mid, region, _ in machines)
    lines = [f'txt-record=vms.app.internal,"{txt}"']
    lines += [f"host-record={mid}.vm.app.internal,{addr}" for mid, _, addr in machines]
    return lines


def test_fly_peers_appear_change_and_disappear_without_a_restart(tmpdir_path, dns, started):
    # Three machines on three loopback addresses, one peer port (as on Fly's 6PN), their
    # addresses published as IPv4-mapped IPv6 (AAAA) records.
    port = free_ports(1)[0]
    machines = {"iad": ("m1", "127.0.0.2"), "lhr": ("m2", "127.0.0.3"), "fra": ("m3", "127.0.0.4")}

    def record(region):
        mid, ip = machines[region]
        return (mid, region, "::ffff:" + ip)

    dns.serve(fly_records([record("iad"), record("lhr")]), "vms.app.internal")
    nodes = {}
    for region, (mid, ip) in machines.items():
        n = Node(os.path.join(tmpdir_path, region),
                 ["--region", region, "--peer-listen", f"{ip}:{port}", "--peers-dns", "fly:app",
                  "--peers-dns-server", f"127.0.0.1:{dns.port}", "--peers-dns-interval-ms", "100",
                  "--cluster-secret", SECRET, "--replication-interval", "50"],
                 env={"FLY_MACHINE_ID": mid})
        started.append(n)
        nodes[region] = n.start()
    iad, lhr, fra = nodes["iad"], nodes["lhr"], nodes["fra"]

    # iad and lhr find each other; fra is not published, so nobody links to it.
    wait_until(lambda: set(peers_of(iad)) == {"lhr"}, 20, "iad finds lhr")
    assert peers_of(iad)["lhr"]["address"] == f"[::ffff:127.0.0.3]:{port}"
    assert iad.request("POST", "/v1/counters/c/increment", '{"delta": 5}')[0] == 200
    wait_until(lambda: lhr.value("c") == 5, 20, "lhr applies iad's write")
    status, headers, _ = iad.request("POST", "/v1/counters/c/increment", '{"delta": 1}')
    token = headers["edgestate-session"]
    # The session token names its regions: lhr, which never had a region list, honours it.
    wait_until(lambda: lhr.request("GET", "/v1/counters/c", headers={"Edgestate-Session": token})
               [0] == 200, 20, "lhr serves iad's session")
    assert fra.value("c") == 0

    # fra is published: everyone links to it, and it catches up with what it missed.
    dns.serve(fly_records([record("iad"), record("lhr"), record("fra")]), "vms.app.internal")
    wait_until(lambda: set(peers_of(iad)) == {"lhr", "fra"}, 20, "iad finds fra")
    wait_until(lambda: fra.value("c") == 6, 20, "fra catches up")
    assert fra.request("POST", "/v1/counters/c/increment", '{"delta": 10}')[0] == 200
    wait_until(lambda: iad.value("c") == 16 and lhr.value("c") == 16, 20, "fra's write arrives")

    # lhr leaves the app: iad and fra drop it; its links close.
    dns.serve(fly_records([record("iad"), record("fra")]), "vms.app.internal")
    wait_until(lambda: set(peers_of(iad)) == {"fra"} and set(peers_of(fra)) == {"iad"}, 20,
               "lhr is dropped")

    # DNS goes away: the peers found before stay, and the failures are counted and shown.
    dns.stop()
    discovery = wait_until(
        lambda: (lambda d: d if d["last_error"] else None)(
            iad.request("GET", "/v1/cluster")[2]["discovery"]), 20, "a failed resolution shows")
    assert discovery["source"] == "fly:app" and discovery["peers"] == 1, discovery
    assert discovery["failures"] >= 1 and "vms.app.internal" in discovery["last_error"], discovery
    assert "edgestate_peer_discovery_failures_total 0" not in iad.request("GET", "/metrics")[2]
    assert set(peers_of(iad)) == {"fra"}
    assert iad.request("POST", "/v1/counters/c/increment", '{"delta": 100}')[0] == 200
    wait_until(lambda: fra.value("c") == 116, 20, "links stand while DNS is down")


def test_srv_peers_over_ipv6(tmpdir_path, dns, started):
    # A Kubernetes headless service: SRV targets edgestate-REGION-0 with each pod's port, and
    # AAAA records (::1): peer links over IPv6.
    regions = ("iad", "lhr")
    ports = dict(zip(regions, free_ports(len(regions))))
    name = "_peer._tcp.edgestate-peers.test"
    lines = []
    for r in regions:
        target = f"edgestate-{r}-0.edgestate-peers.test"
        lines += [f"srv-host={name},{target},{ports[r]}", f"host-record={target},::1"]
    # A second pod of iad's StatefulSet: the lowest ordinal is the region's node.
    lines += [f"srv-host={name},edgestate-iad-1.edgestate-peers.test,9",
              "host-record=edgestate-iad-1.edgestate-peers.test,::1"]
    dns.serve(lines, name)
    nodes = {}
    for r in regions:
        n = Node(os.path.join(tmpdir_path, r),
                 ["--region", r, "--peer-listen", f"[::1]:{ports[r]}", "--peers-dns",
                  f"srv:{name}", "--peers-dns-server", f"127.0.0.1:{dns.port}",
                  "--peers-dns-interval-ms", "100", "--cluster-secret", SECRET,
                  "--replication-interval", "50"])
        started.append(n)
        nodes[r] = n.start()
    wait_until(lambda: "lhr" in peers_of(nodes["iad"]) and "iad" in peers_of(nodes["lhr"]), 20,
               "iad and lhr find each other")
    assert peers_of(nodes["lhr"])["iad"]["address"] == f"[::1]:{ports['iad']}"
    status, _, body = nodes["lhr"].request("GET", "/v1/cluster")
    assert body["peer_listen"] == f"[::1]:{ports['lhr']}" and body["peers_from_dns"] is True
    assert nodes["iad"].request("POST", "/v1/counters/s/increment", '{"delta": 3}')[0] == 200
    assert nodes["lhr"].request("POST", "/v1/counters/s/increment", '{"delta": 4}')[0] == 200
    wait_until(lambda: nodes["iad"].value("s") == 7 and nodes["lhr"].value("s") == 7, 20,
               "writes cross the IPv6 links")


def test_bad_discovery_flags_exit_2(tmpdir_path):
    base = [BIN, "serve", "--data-dir", tmpdir_path, "--region", "iad", "--peer-listen",
            "127.0.0.1:7946", "--cluster-secret", SECRET]
    cases = [
        (["--peers-dns", "consul:x"], "fly:APP nor srv:NAME"),
        (["--peers-dns", "fly:bad name"], "not a DNS name"),
        (["--peers-dns", "fly:app", "--peers", "lhr=127.0.0.1:1"], "exclude each other"),
        (["--peers-dns", "fly:app", "--peers-dns-port", "70000"], "--peers-dns-port"),
        (["--peers-dns", "fly:app", "--peers-dns-interval-ms", "5"], "--peers-dns-interval-ms"),
        (["--peers-dns", "fly:app", "--peers-dns-server", "nowhere"], "--peers-dns-server"),
    ]
    for args, needle in cases:
        r = subprocess.run(base + args, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert needle in r.stderr, (args, r.stderr)
    r = subprocess.run([BIN, "serve", "--data-dir", tmpdir_path, "--region", "iad", "--peer-listen",
                        "127.0.0.1:0", "--cluster-secret", SECRET, "--peers-dns", "fly:app"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "port 0" in r.stderr, r.stderr
    r = subprocess.run([BIN, "serve", "--data-dir", tmpdir_path, "--region", "iad",
                        "--peers-dns", "fly:app"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--peer-listen" in r.stderr, r.stderr

"""deploy/fly/fly.toml: it parses, names only variables and ports the binary has, keeps peers and
metrics off the public services, and the environment it gives a Machine works: nodes given it
(addresses moved to 127.0.0.1, FLY_REGION as Fly sets it) replicate, pass the health check and
serve the metrics port.
"""
import os
import re
import tomllib

from conftest import Node, free_ports, wait_until
from test_deploy_k8s import serve_help

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
FLY = os.path.join(ROOT, "deploy", "fly", "fly.toml")
# The article's eight regions (tools/netem/rtt-8-regions.csv).
ARTICLE_REGIONS = {"iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"}


def load():
    with open(FLY, "rb") as f:
        return tomllib.load(f)


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def test_fly_toml_names_only_what_the_binary_has_and_keeps_peers_private():
    fly = load()
    env = fly["env"]
    _, envs = serve_help()
    for name in env:
        assert name in envs, f"fly.toml sets {name}, which edgestate does not read"
    app = fly["app"]
    svc = fly["http_service"]
    assert svc["internal_port"] == int(env["EDGESTATE_PORT"])
    assert svc["auto_stop_machines"] in ("off", False)
    assert svc["min_machines_running"] == len(ARTICLE_REGIONS)
    assert svc["concurrency"]["hard_limit"] <= 10000  # --max-connections' default.
    checks = svc["checks"]
    assert checks and all(c["path"] == "/health" and c["method"] == "GET" for c in checks)
    # Peers: found in this app's records of Fly's internal DNS (test_dns_discovery.py serves
    # them), on this node's peer port; no static list beside it.
    peer_port = port_of(env["EDGESTATE_PEER_LISTEN"])
    assert env["EDGESTATE_PEERS_DNS"] == f"fly:{app}"
    assert "EDGESTATE_PEERS" not in env and "EDGESTATE_PEERS_DNS_PORT" not in env
    assert set(env["EDGESTATE_STRONG_VOTERS"].split(",")) <= ARTICLE_REGIONS
    # Metrics on the private listener; neither it nor the peer port is a public service.
    assert fly["metrics"]["port"] == port_of(env["EDGESTATE_METRICS_LISTEN"])
    assert fly["metrics"]["path"] == "/metrics"
    public = {svc["internal_port"]} | {s.get("internal_port") for s in fly.get("services", [])}
    assert peer_port not in public and fly["metrics"]["port"] not in public
    # State on a volume where the node keeps it; secrets never in the file.
    assert fly["mounts"][0]["destination"] == env["EDGESTATE_DATA_DIR"]
    assert "EDGESTATE_CLUSTER_SECRET" not in env and "EDGESTATE_API_KEY" not in env
    assert fly["kill_signal"] == "SIGTERM"
    assert fly["deploy"]["strategy"] == "rolling"


def test_machines_configured_by_fly_toml_replicate_and_serve_health_and_metrics(nodes,
                                                                              tmpdir_path):
    fly = load()
    regions = ["iad", "lhr", "fra"]  # Three Machines: the strong voters' regions.
    ports = dict(zip(regions, free_ports(len(regions))))
    started = {}
    for r in regions:
        env = dict(fly["env"])
        env["FLY_REGION"] = r  # Fly sets it; edgestate takes its region from it.
        env["EDGESTATE_CLUSTER_SECRET"] = "fly-test-secret"  # A Fly secret in production.
        env["EDGESTATE_API_KEY"] = "fly-test-api-key"
        env["EDGESTATE_DATA_DIR"] = os.path.join(tmpdir_path, r)
        env["EDGESTATE_PEER_LISTEN"] = f"127.0.0.1:{ports[r]}"
        env["EDGESTATE_METRICS_LISTEN"] = "127.0.0.1:0"
        # Fly's DNS is not here (test_dns_discovery.py serves its records): a static list of
        # the three on loopback instead.
        env.pop("EDGESTATE_PEERS_DNS")
        env["EDGESTATE_PEERS"] = ",".join(
            f"{p}=127.0.0.1:{ports[p]}" for p in regions)
        n = nodes(env=env, data_dir=env["EDGESTATE_DATA_DIR"])
        started[r] = n
        assert n.request("GET", "/health")[0] == 200  # Fly's check needs no key.
        m = re.search(rb"metrics_port=(\d+)", n.output)
        scrape = Node(n.data_dir)
        scrape.port = int(m.group(1))
        st, _, body = scrape.request("GET", "/metrics")
        assert st == 200 and "edgestate_" in body
    auth = {"Authorization": "Bearer fly-test-api-key"}
    st, _, body = started["iad"].request("POST", "/v1/counters/fly/increment", body='{"delta": 5}',
                                         headers=auth)
    assert st == 200 and body["region"] == "iad", body
    for r in ("lhr", "fra"):
        def seen(r=r):
            st, _, body = started[r].request("GET", "/v1/counters/fly", headers=auth)
            return st == 200 and body["value"] == 5
        wait_until(seen, 20, f"the increment reaches {r}")

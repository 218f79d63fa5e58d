"""deploy/k8s: the manifests parse, name only flags, variables and ports the binary has, agree
with each other, and the configuration they give a node works: three real nodes configured
from them (addresses moved to 127.0.0.1) replicate to each other.
"""
import glob
import os
import re
import subprocess

import pytest
import yaml

from conftest import BIN, Node, wait_until
from test_dns_discovery import dns  # noqa: F401  (the fixture: dnsmasq on loopback)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
K8S = os.path.join(ROOT, "deploy", "k8s")


def load_all():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((os.path.basename(path), d))
    return docs


def of_kind(docs, kind):
    return [d for _, d in docs if d.get("kind") == kind]


def serve_help():
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    flags = set(re.findall(r"(--[a-z][a-z0-9-]+)", out.stdout))
    envs = set(re.findall(r"Env:\s*([A-Z_][A-Z0-9_]*)", out.stdout))
    return flags, envs


def pod_env(sts, configmaps):
    """The environment a StatefulSet's container gets: its ConfigMaps, then its own env."""
    c = sts["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for src in c.get("envFrom", []):
        env.update(configmaps[src["configMapRef"]["name"]]["data"])
    for e in c.get("env", []):
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    return env


def test_manifests_parse_and_name_only_what_the_binary_has():
    docs = load_all()
    kust = yaml.safe_load(open(os.path.join(K8S, "kustomization.yaml")))
    listed = set(kust["resources"])
    files = {name for name, _ in docs} - {"kustomization.yaml"}
    assert files == listed, f"kustomization lists {sorted(listed)}, directory has {sorted(files)}"

    flags, envs = serve_help()
    assert "EDGESTATE_PEER_LISTEN" in envs and "EDGESTATE_CLUSTER_SECRET" in envs, envs
    configmaps = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    statefulsets = of_kind(docs, "StatefulSet")
    services = {d["metadata"]["name"]: d for d in of_kind(docs, "Service")}
    assert len(statefulsets) >= 3

    regions = {}
    for sts in statefulsets:
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        c = pod["containers"][0]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["replicas"] == 1
        assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
        # Scheduled by region.
        terms = pod["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert any(e["key"] == "topology.kubernetes.io/region"
                   for t in terms for e in t["matchExpressions"])
        # The arguments are a subcommand and flags the binary has.
        assert c["args"][0] == "serve"
        for a in c["args"][1:]:
            assert a.split("=")[0] in flags, a
        env = pod_env(sts, configmaps)
        for name in env:
            assert name in envs or name == "PORT", f"{sts['metadata']['name']}: unknown {name}"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == int(env.get("EDGESTATE_PORT", "8080"))
        assert ports["peer"] == int(env["EDGESTATE_PEER_LISTEN"].rsplit(":", 1)[1])
        # Prometheus scrapes the private metrics listener, which needs no API key.
        assert ports["metrics"] == int(env["EDGESTATE_METRICS_LISTEN"].rsplit(":", 1)[1])
        annotations = spec["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == ports["metrics"]
        assert annotations["prometheus.io/path"] == "/metrics"
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ("http", ports["http"])
            assert c[probe]["httpGet"]["path"] == "/health"
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        claims = {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
        assert mounts["data"] == env["EDGESTATE_DATA_DIR"] and "data" in claims
        for ref in (e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e):
            # The secret is made by kubectl (kustomization.yaml says how), never committed.
            assert ref["name"] == "edgestate-secrets"
            assert f"--from-literal={ref['key']}=" in open(
                os.path.join(K8S, "kustomization.yaml")).read()
        # Peers reach each pod through the headless service the StatefulSet names.
        peers_svc = services[spec["serviceName"]]
        assert peers_svc["spec"]["clusterIP"] == "None"
        assert peers_svc["spec"]["ports"][0]["port"] == ports["peer"]
        regions[env["EDGESTATE_REGION"]] = (sts["metadata"]["name"], env)

    # Every node finds its peers in the headless service's SRV records for its peer port, and
    # each StatefulSet's pod 0 is a target that names the region (APP-REGION-ORDINAL).
    for name, env in regions.values():
        assert "EDGESTATE_PEERS" not in env
        dns = env["EDGESTATE_PEERS_DNS"]
        port_name = peers_svc["spec"]["ports"][0]["name"]
        assert dns == f"srv:_{port_name}._tcp.{peers_svc['metadata']['name']}", dns
        assert set(env["EDGESTATE_STRONG_VOTERS"].split(",")) <= set(regions)
    for region, (name, _) in regions.items():
        assert name == f"edgestate-{region}", name  # Pod edgestate-REGION-0: region REGION.
    # Clients of each region reach that region's pod.
    for region, (name, _) in regions.items():
        svc = services[f"edgestate-{region}"]
        assert svc["spec"]["selector"]["edgestate.dev/region"] == region
    pdb = of_kind(docs, "PodDisruptionBudget")[0]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "edgestate"}


def test_three_nodes_configured_by_the_manifests_replicate(nodes, tmpdir_path, dns):
    """The manifests' environment, addresses moved to loopback, runs a working cluster; its
    peers come from DNS as in a cluster: dnsmasq serves the SRV records the headless service
    publishes (one target per StatefulSet's pod 0, each with its pod's peer port)."""
    from conftest import free_ports
    docs = load_all()
    configmaps = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    statefulsets = of_kind(docs, "StatefulSet")
    peer_ports = dict(zip(sorted(pod_env(s, configmaps)["EDGESTATE_REGION"]
                                 for s in statefulsets), free_ports(len(statefulsets))))
    srv_name = configmaps["edgestate-config"]["data"]["EDGESTATE_PEERS_DNS"].split(":", 1)[1]
    service = srv_name.rsplit(".", 1)[1]  # _peer._tcp.SERVICE
    records = []
    for sts in statefulsets:
        region = pod_env(sts, configmaps)["EDGESTATE_REGION"]
        target = f"{sts['metadata']['name']}-0.{service}"
        records += [f"srv-host={srv_name},{target},{peer_ports[region]}",
                    f"host-record={target},127.0.0.1"]
    dns.serve(records, srv_name)
    started = {}
    for sts in statefulsets:
        env = {k: v for k, v in pod_env(sts, configmaps).items() if isinstance(v, str)}
        region = env["EDGESTATE_REGION"]
        env["EDGESTATE_CLUSTER_SECRET"] = "k8s-test-secret"
        env["EDGESTATE_DATA_DIR"] = os.path.join(tmpdir_path, region)
        env["EDGESTATE_PEER_LISTEN"] = f"127.0.0.1:{peer_ports[region]}"
        env["EDGESTATE_METRICS_LISTEN"] = "127.0.0.1:0"
        # The ConfigMap's discovery as it is, asked of the test's DNS server.
        env["EDGESTATE_PEERS_DNS_SERVER"] = f"127.0.0.1:{dns.port}"
        n = nodes(env=env, data_dir=env["EDGESTATE_DATA_DIR"])
        started[region] = n
        assert n.request("GET", "/health")[0] == 200  # The probes' path.
        m = re.search(rb"metrics_port=(\d+)", n.output)
        scrape = Node(n.data_dir)
        scrape.port = int(m.group(1))
        assert scrape.request("GET", "/metrics")[0] == 200  # Prometheus' scrape.
    first, *others = sorted(started)
    st, _, _ = started[first].request("POST", "/v1/counters/k8s/increment", body='{"delta": 3}')
    assert st == 200
    for r in others:
        wait_until(lambda: started[r].value("k8s") == 3, 20, f"the increment reaches {r}")
    # The strong voters of the ConfigMap form a working voter set.
    st, _, body = started[others[0]].request(
        "POST", "/v1/counters/k8s-strong/increment?consistency=strong", body='{"delta": 2}')
    assert st == 200, body

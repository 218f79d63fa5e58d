"""deploy/Containerfile: the image builds (scripts/image.sh --prebuilt, around the release
binary), runs as a non-root user with a health check, and three containers configured only by
EDGESTATE_* variables replicate an increment to each other.

Needs root and podman (scripts/setup.sh installs it); without them the test is skipped and
says why. The image is built from build/edgestate, so the sanitizer run skips it (the release
run tests it).
"""
import os
import shutil
import subprocess

import pytest

from conftest import BIN, Node, free_ports, wait_until

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
TAG = f"localhost/edgestate:test-{os.getpid()}"


def podman(*args, check=True, timeout=120):
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "scripts", "podman-containers.conf"))
    r = subprocess.run(PODMAN + list(args), capture_output=True, text=True, env=env,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture
def image():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh installs it): image not tested")
    if os.geteuid() != 0:
        pytest.skip("podman runs as root on these machines: image not tested")
    if "asan" in os.path.abspath(BIN):
        pytest.skip("the image holds the release binary: tested in the release run")
    if not os.path.samefile(BIN, os.path.join(ROOT, "build", "edgestate")):
        pytest.skip(f"the image is built from build/edgestate, not {BIN}")
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(ROOT, "scripts", "podman-containers.conf"))
    r = subprocess.run([os.path.join(ROOT, "scripts", "image.sh"), "--prebuilt", TAG],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, f"scripts/image.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    yield TAG
    podman("rmi", "-f", TAG, check=False)


def test_three_containers_replicate(image, tmpdir_path):
    # The image's own settings: non-root, a health check on /health, the entry point.
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert user.split(":")[0] == "10001", user
    hc = podman("image", "inspect", "--format", "{{.Config.Healthcheck}}", image).stdout
    assert "/health" in hc, hc
    entry = podman("image", "inspect", "--format", "{{.Config.Entrypoint}}", image).stdout
    assert "edgestate" in entry, entry

    regions = ["iad", "lhr", "fra"]
    ports = free_ports(2 * len(regions))
    client = dict(zip(regions, ports[:3]))
    peer = dict(zip(regions, ports[3:]))
    peers = ",".join(f"{r}=127.0.0.1:{peer[r]}" for r in regions)
    names = []
    try:
        for r in regions:
            data = os.path.join(tmpdir_path, r)
            os.makedirs(data)
            os.chown(data, 10001, 10001)
            name = f"edgestate-test-{os.getpid()}-{r}"
            podman("run", "-d", "--rm", "--name", name, "--network", "host",
                   "-v", f"{data}:/data",
                   "-e", f"EDGESTATE_REGION={r}",
                   "-e", "EDGESTATE_LISTEN=127.0.0.1",
                   "-e", f"EDGESTATE_PORT={client[r]}",
                   "-e", f"EDGESTATE_PEER_LISTEN=127.0.0.1:{peer[r]}",
                   "-e", f"EDGESTATE_PEERS={peers}",
                   "-e", "EDGESTATE_CLUSTER_SECRET=image-test-secret",
                   image)
            names.append(name)
        nodes = {}
        for r in regions:
            n = Node(os.path.join(tmpdir_path, r))
            n.port = client[r]

            def healthy(n=n):
                try:
                    return n.request("GET", "/health", timeout=2)[0] == 200
                except OSError:
                    return False
            wait_until(healthy, 30, f"container {r} answers /health")
            nodes[r] = n
        st, _, body = nodes["iad"].request("POST", "/v1/counters/image/increment",
                                           body='{"delta": 7}')
        assert st == 200 and body["region"] == "iad", body
        for r in ("lhr", "fra"):
            wait_until(lambda r=r: nodes[r].value("image") == 7, 30, f"the increment reaches {r}")
        # The image's health check passes on a serving node.
        assert podman("healthcheck", "run", names[0], check=False).returncode == 0
        # The store is on the volume, written by the container's user.
        assert os.stat(os.path.join(tmpdir_path, "iad", "CURRENT")).st_uid == 10001
    finally:
        for name in names:
            podman("rm", "-f", "-t", "5", name, check=False)

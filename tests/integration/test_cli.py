"""`edgestate` command line: help, flags, environment, config file, exit codes."""
import os
import re
import socket
import subprocess

from conftest import BIN, Node, SLOW


def run(args, env=None, timeout=10):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([BIN] + args, capture_output=True, text=True, env=e,
                          timeout=timeout * SLOW)


def test_help_lists_subcommands_and_flags():
    r = run(["--help"])
    assert r.returncode == 0
    assert "serve" in r.stdout
    r = run(["serve", "--help"])
    assert r.returncode == 0
    for flag in ("--port", "--listen", "--region", "--data-dir", "--durability", "--api-key",
                 "--config", "PORT", "EDGESTATE_REGION", "FLY_REGION", "EDGESTATE_DATA_DIR",
                 "EDGESTATE_API_KEY"):
        assert flag in r.stdout, flag


def test_no_subcommand_is_usage_error():
    r = run([])
    assert r.returncode == 2
    assert "serve" in r.stderr or "subcommand" in r.stderr.lower()


def test_bad_flags_exit_2_with_clear_message(tmpdir_path):
    d = ["--data-dir", tmpdir_path]
    cases = [
        (["serve", "--bogus"], "bogus"),
        (["serve", "--port", "notanumber"], "port"),
        (["serve", "--port", "70000"] + d, "--port"),
        (["serve", "--durability", "maybe"] + d, "fsync or async"),
        (["serve", "--region", "Bad Region"] + d, "region"),
        (["serve", "--listen", "localhost:80"] + d, "listen address"),
        (["serve", "--config", "/nonexistent.toml"] + d, "/nonexistent.toml"),
        (["serve", "--cache-mb", "4"] + d, "cache size"),
        (["serve", "--cache-origin", "https://origin.example"] + d, "cache origin"),
        (["serve", "--cache-origin", "http://:80"] + d, "cache origin"),
        (["serve", "--cache-origin", "http://o.example:99999"] + d, "cache origin"),
        (["serve", "--cache-default-ttl-ms", "-1"] + d, "cache default TTL"),
        (["serve", "--origin-timeout-ms", "5"] + d, "origin timeout"),
        (["serve", "--max-pending-writes", "0"] + d, "max pending writes"),
        (["serve", "--max-pending-write-mb", "-3"] + d, "max pending write"),
    ]
    for args, needle in cases:
        r = run(args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert needle in r.stderr, (args, r.stderr)


def test_bad_environment_value_exits_2(tmpdir_path):
    r = run(["serve", "--data-dir", tmpdir_path], env={"PORT": "eighty"})
    assert r.returncode == 2
    assert "PORT" in r.stderr


def test_every_serve_flag_has_a_variable_and_a_flag_beats_it(tmpdir_path, nodes):
    help_text = run(["serve", "--help"]).stdout
    flags = set(re.findall(r"^\s+(--[a-z][a-z0-9-]+)", help_text, re.M)) - {"--help"}
    for flag in flags:
        env = "EDGESTATE_" + flag[2:].upper().replace("-", "_")
        assert f"Env:{env}" in help_text, (flag, env)
    # Variables beat the config file and flags beat variables.
    conf = os.path.join(tmpdir_path, "c.toml")
    with open(conf, "w") as f:
        f.write('durability = "fsync"\nregion = "syd"\n')
    n = nodes(args=["--config", conf], env={"EDGESTATE_DURABILITY": "async"})
    assert b"durability=async" in n.output and b"region=syd" in n.output, n.output
    n.kill()
    n = nodes(args=["--config", conf, "--durability", "fsync"],
              env={"EDGESTATE_DURABILITY": "async"})
    assert b"durability=fsync" in n.output, n.output
    # A bad value from a variable is refused like the flag's.
    r = run(["serve", "--data-dir", tmpdir_path], env={"EDGESTATE_MAX_CONNECTIONS": "many"})
    assert r.returncode == 2 and "--max-connections" in r.stderr, r.stderr
    r = run(["serve", "--data-dir", tmpdir_path], env={"EDGESTATE_DURABILITY": "sometimes"})
    assert r.returncode == 2 and "fsync or async" in r.stderr, r.stderr


def test_bad_config_values_exit_2(tmpdir_path):
    for text, needle in [("port = \"x\"\n", "port must be an integer"),
                         ("colour = 1\n", "unknown key"),
                         ("durability = \"sometimes\"\n", "fsync or async"),
                         ("port = [\n", "line"),
                         ("cache_mb = \"big\"\n", "cache_mb"),
                         ("cache_origin = \"ftp://x\"\n", "cache origin")]:
        path = os.path.join(tmpdir_path, "bad.toml")
        with open(path, "w") as f:
            f.write(text)
        r = run(["serve", "--config", path, "--data-dir", tmpdir_path])
        assert r.returncode == 2, text
        assert needle in r.stderr, (text, r.stderr)


def test_environment_fallbacks(tmpdir_path, nodes):
    n = nodes(env={"FLY_REGION": "lhr"})
    assert n.request("POST", "/increment")[2]["region"] == "lhr"
    n.kill()
    n = nodes(env={"FLY_REGION": "lhr", "EDGESTATE_REGION": "fra"})
    assert n.request("GET", "/read")[2]["region"] == "fra"
    n.kill()
    n = nodes(args=["--region", "syd"], env={"EDGESTATE_REGION": "fra"})
    assert n.request("GET", "/read")[2]["region"] == "syd"


def test_port_and_data_dir_from_environment(tmpdir_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = os.path.join(tmpdir_path, "envdata")
    env = dict(os.environ, PORT=str(port), EDGESTATE_DATA_DIR=data)
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = p.stdout.readline().decode()
        while "listening" not in line and line:
            line = p.stdout.readline().decode()
        assert f":{port} " in line, line
        assert os.path.isdir(data)
    finally:
        p.kill()
        p.wait()


def test_config_file_and_flag_precedence(tmpdir_path, nodes):
    path = os.path.join(tmpdir_path, "edgestate.toml")
    with open(path, "w") as f:
        f.write('region = "nrt"\napi_key = "from-file"\ndurability = "async"\n')
    n = nodes(args=["--config", path])
    status, _, body = n.request("GET", "/read", headers={"Authorization": "Bearer from-file"})
    assert status == 200 and body["region"] == "nrt"
    assert n.request("GET", "/read")[0] == 401
    n.kill()
    n = nodes(args=["--config", path, "--region", "gru", "--api-key", "from-flag"])
    status, _, body = n.request("GET", "/read", headers={"Authorization": "Bearer from-flag"})
    assert status == 200 and body["region"] == "gru"


def test_port_in_use_exits_1(tmpdir_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(["serve", "--listen", "127.0.0.1", "--port", str(port), "--data-dir", tmpdir_path])
        assert r.returncode == 1
        assert "cannot listen" in r.stdout + r.stderr


def test_second_node_on_same_data_dir_is_refused(node):
    other = Node(node.data_dir)
    try:
        other.start(timeout=3)
        raise AssertionError("a second node opened a locked data directory")
    except AssertionError as e:
        assert "did not start" in str(e) and "lock" in str(e).lower(), str(e)


def test_metrics_listener_serves_only_metrics_without_the_key(nodes):
    n = nodes(args=["--api-key", "k8s-scrape-test", "--metrics-listen", "127.0.0.1:0"])
    m = re.search(rb"metrics_port=(\d+)", n.output)
    assert m and int(m.group(1)) > 0, n.output
    scrape = Node(n.data_dir)
    scrape.port = int(m.group(1))
    st, hdrs, body = scrape.request("GET", "/metrics")
    assert st == 200 and "# TYPE edgestate_http_connections gauge" in body, (st, body[:200])
    assert hdrs["content-type"].startswith("text/plain")
    for path in ("/read", "/v1/counters/a", "/health"):
        assert scrape.request("GET", path)[0] == 404, path
    assert scrape.request("POST", "/increment")[0] == 404
    # The client port still wants the key for /metrics.
    assert n.request("GET", "/metrics")[0] == 401
    assert n.request("GET", "/metrics",
                     headers={"Authorization": "Bearer k8s-scrape-test"})[0] == 200
    # Without the flag there is no metrics listener.
    n.kill()
    plain = nodes()
    assert b"metrics_port=0" in plain.output, plain.output


def test_a_metrics_port_in_use_stops_the_node_naming_it(tmpdir_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(["serve", "--listen", "127.0.0.1", "--port", "0", "--data-dir", tmpdir_path,
                 "--metrics-listen", f"127.0.0.1:{port}"], timeout=30)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert str(port) in r.stdout + r.stderr, r.stdout + r.stderr

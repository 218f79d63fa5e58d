#!/usr/bin/env python3
"""Client-port TLS: edgestate (--tls-cert/--tls-key) against nginx serving the same certificate,
measured in one run with wrk.

Both servers run pinned to CPU 0 (one worker each), wrk to CPU 1. Three workloads per server:
plain HTTP keep-alive, HTTPS keep-alive (the cost of encrypting records), and HTTPS with
"Connection: close" (a full handshake per request: the cost of the handshake). nginx answers a
fixed 200; edgestate reads a counter. Each configuration runs --runs times; the report gives
medians and the ratios edgestate / nginx and HTTPS / HTTP. Every process this script starts
is stopped by PID at the end.

Usage: bench/tls_bench.py [--runs 3] [--duration 10] [--conns 50]
"""
import argparse
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import node_bench as nb  # noqa: E402  (Proc, wrk, free_port, med)

NGINX_CONF = """
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path @DIR@/body;
  proxy_temp_path @DIR@/proxy;
  fastcgi_temp_path @DIR@/fastcgi;
  uwsgi_temp_path @DIR@/uwsgi;
  scgi_temp_path @DIR@/scgi;
  keepalive_requests 1000000;
  default_type application/json;
  server {
    listen 127.0.0.1:@PLAIN@;
    location / { return 200 '{"value":0,"region":"local"}'; }
  }
  server {
    listen 127.0.0.1:@TLS@ ssl;
    ssl_certificate @CERT@;
    ssl_certificate_key @KEY@;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { return 200 '{"value":0,"region":"local"}'; }
  }
}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=50)
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "openssl", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"tls_bench: {tool} is not installed (run bench/setup.sh)")
    if not os.path.exists(nb.EDGESTATE):
        sys.exit("tls_bench: build/edgestate is missing (run scripts/setup.sh)")

    work = tempfile.mkdtemp(prefix="edgestate-tls-bench-")
    procs = []
    try:
        cert, key = os.path.join(work, "site.pem"), os.path.join(work, "site.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        ngx_dir = os.path.join(work, "nginx")
        os.makedirs(ngx_dir)
        ngx_plain, ngx_tls = nb.free_port(), nb.free_port()
        conf = (NGINX_CONF.replace("@DIR@", ngx_dir).replace("@PLAIN@", str(ngx_plain))
                .replace("@TLS@", str(ngx_tls)).replace("@CERT@", cert).replace("@KEY@", key))
        with open(os.path.join(ngx_dir, "nginx.conf"), "w") as f:
            f.write(conf)
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        procs.append(nb.Proc("nginx-tls", [nginx_bin, "-p", ngx_dir, "-c",
                                           os.path.join(ngx_dir, "nginx.conf"),
                                           "-g", "daemon off; master_process off;"], ngx_tls))
        es_plain, es_tls = nb.free_port(), nb.free_port()
        for port, extra in ((es_plain, []), (es_tls, ["--tls-cert", cert, "--tls-key", key])):
            procs.append(nb.Proc(f"edgestate-{port}",
                                 [nb.EDGESTATE, "serve", "--listen", "127.0.0.1", "--port",
                                  str(port), "--data-dir", os.path.join(work, f"es-{port}"),
                                  *extra], port))
        # The counter edgestate reads (the bench's own certificate: no verification).
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        for url in (f"https://127.0.0.1:{es_tls}", f"http://127.0.0.1:{es_plain}"):
            req = urllib.request.Request(url + "/v1/counters/bench/increment", method="POST")
            urllib.request.urlopen(req, timeout=30, context=unverified).read()

        targets = {
            ("nginx", "http"): f"http://127.0.0.1:{ngx_plain}/v1/counters/bench",
            ("nginx", "https"): f"https://127.0.0.1:{ngx_tls}/v1/counters/bench",
            ("edgestate", "http"): f"http://127.0.0.1:{es_plain}/v1/counters/bench",
            ("edgestate", "https"): f"https://127.0.0.1:{es_tls}/v1/counters/bench",
        }
        workloads = [("http", "keep-alive", None), ("https", "keep-alive", None),
                     ("https", "close", "close.lua")]
        results = {}
        for run in range(args.runs):
            for scheme, mode, script in workloads:
                for server in ("nginx", "edgestate"):
                    r = nb.wrk(targets[(server, scheme)], args.conns, args.duration, script)
                    if r["non2xx"]:
                        sys.exit(f"tls_bench: {server} {scheme} {mode}: {r['non2xx']} non-2xx")
                    results.setdefault((server, scheme, mode), []).append(r)
                    print(f"run {run + 1} {server:9} {scheme:5} {mode:10} "
                          f"{r['rps']:>9.0f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms "
                          f"{r['socket_errors']}", flush=True)

        print()
        print(f"medians of {args.runs} runs, {args.duration} s each, wrk -t1 -c{args.conns} on "
              "CPU 1, servers on CPU 0")
        print("| workload | nginx req/s | edgestate req/s | edgestate / nginx | nginx p99 ms "
              "| edgestate p99 ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for scheme, mode, _ in workloads:
            n, e = results[("nginx", scheme, mode)], results[("edgestate", scheme, mode)]
            print(f"| {scheme} {mode} | {nb.med(n, 'rps'):.0f} | {nb.med(e, 'rps'):.0f} | "
                  f"{nb.med(e, 'rps') / nb.med(n, 'rps'):.2f}x | {nb.med(n, 'p99'):.2f} | "
                  f"{nb.med(e, 'p99'):.2f} |")
        for server in ("nginx", "edgestate"):
            plain = nb.med(results[(server, "http", "keep-alive")], "rps")
            tls = nb.med(results[(server, "https", "keep-alive")], "rps")
            close = nb.med(results[(server, "https", "close")], "rps")
            print(f"{server}: https / http keep-alive {tls / plain:.2f}x; "
                  f"handshake per request {close / plain:.3f}x of plain keep-alive")
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

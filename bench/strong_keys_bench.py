#!/usr/bin/env python3
"""consistency=strong on keys in the eight-region demo (issue 12), against the latency model.

Starts `edgestate demo` (eight nodes and the WAN emulator pinned to CPU 0) with a voter set and
runs read-modify-write loops (GET, then PUT of the value + 1 with If-Match: the GET's ETag) from
CPU 1, --runs times:

  (a) own keys: one client per region on a key of its own (no contention). Per region p50/p99
      of the strong GET and the conditional PUT, against strong_bench's model for uncontended
      operations: RTT(region, nearest voter) + that voter's quorum round trip.
  (b) hot key: --clients clients per region on one key. Successful and refused (412) writes,
      and the key's final value, which must equal the successful writes (every acknowledged
      compare-and-set counted once).
  (c) the same hot-key loop at consistency=local, for contrast: conditions checked against
      each region's replica, so concurrent regions succeed on the same value and the final
      value is below the successful writes (lost updates).
  (d) edgebench --workload session at consistency=strong (32 VUs, 20 % of requests to another
      region, TTL 10 s): its violations (a VU reading its session after its own delete, older
      than its own write, or past its expiry) and latency per operation.

Prints medians over runs. Every process started here is stopped by PID (its process group).

Usage: bench/strong_keys_bench.py [--runs 3] [--duration 10] [--clients 2] [--voters lhr,fra,iad]
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import strong_bench as sb  # noqa: E402  (demo, RTT model)


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Client:
    def __init__(self, i, level):
        self.conn = http.client.HTTPConnection("127.0.0.1", sb.BASE_PORT + i, timeout=10)
        self.level = level

    def call(self, method, key, body=None, headers=None):
        t0 = time.monotonic()
        self.conn.request(method, f"/v1/kv/{key}?consistency={self.level}", body=body,
                          headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, r.getheader("ETag"), data, (time.monotonic() - t0) * 1000


def loop(i, key, level, until, out):
    """Read-modify-write of `key` until `until`; appends (op, status, ms) and the values the
    successful writes replaced to `out`."""
    c = Client(i, level)
    while time.monotonic() < until:
        try:
            st, etag, data, ms = c.call("GET", key)
            out["ops"].append(("get", st, ms))
            if st != 200:
                continue
            n = int(data)
            st, _, _, ms = c.call("PUT", key, str(n + 1), {"If-Match": etag})
            out["ops"].append(("put", st, ms))
            if st == 200:
                out["replaced"].append(n)
        except (OSError, http.client.HTTPException, ValueError) as e:
            out["ops"].append(("error", type(e).__name__, 0))
            c = Client(i, level)


def run_loops(key_of, level, clients, duration):
    until = time.monotonic() + duration
    outs = {r: {"ops": [], "replaced": []} for r in sb.REGIONS}
    threads = [threading.Thread(target=loop, args=(i, key_of(r), level, until, outs[r]))
               for i, r in enumerate(sb.REGIONS) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


def create(key, value="0"):
    st, _, data, _ = Client(sb.REGIONS.index("lhr"), "strong").call("PUT", key, value)
    if st not in (200, 201):
        raise RuntimeError(f"creating {key}: {st} {data!r}")


def final_value(key):
    st, _, data, _ = Client(0, "strong").call("GET", key)
    return int(data) if st == 200 else None


def one_run(work, args, voters, run):
    p, _ = sb.start_demo(work, voters)
    try:
        res = {}
        prefix = f"r{run}-{int(time.time())}"
        for r in sb.REGIONS:
            create(f"{prefix}-own-{r}")
        own = run_loops(lambda r: f"{prefix}-own-{r}", "strong", 1, args.duration)
        res["own"] = {r: {op: [ms for o, st, ms in own[r]["ops"] if o == op and st == 200]
                          for op in ("get", "put")} for r in sb.REGIONS}
        res["own_errors"] = sum(1 for r in sb.REGIONS for o in own[r]["ops"] if o[1] != 200)
        for mode in ("strong", "local"):
            key = f"{prefix}-hot-{mode}"
            create(key)
            time.sleep(1)  # The create reaches every region before local loops read it.
            outs = run_loops(lambda r: key, mode, args.clients, args.duration)
            time.sleep(2)  # Local writes converge (replication) before the final read.
            replaced = [n for r in sb.REGIONS for n in outs[r]["replaced"]]
            ops = [o for r in sb.REGIONS for o in outs[r]["ops"]]
            res[mode] = {
                "ok": len(replaced),
                "distinct": len(set(replaced)),
                "refused": sum(1 for o in ops if o[0] == "put" and o[1] == 412),
                "errors": sum(1 for o in ops if o[0] == "error" or o[1] not in (200, 412)),
                "error_kinds": sorted({f"{o[0]} {o[1]}" for o in ops
                                       if o[0] == "error" or o[1] not in (200, 412)}),
                "final": final_value(key),
                "put_p50": pct([o[2] for o in ops if o[0] == "put" and o[1] == 200], 0.5),
                "put_p99": pct([o[2] for o in ops if o[0] == "put" and o[1] == 200], 0.99),
            }
        out = os.path.join(work, "session.json")
        cmd = ["taskset", "-c", "1", sb.EDGEBENCH, "--no-progress", "--json", out, "--workload",
               "session", "--vus", "32", "--duration", f"{args.duration}s", "--hop-share", "0.2",
               "--session-ttl-ms", "10000", "--think-ms", "10", "--consistency", "strong"]
        for i, r in enumerate(sb.REGIONS):
            cmd += ["--target", f"{r}=http://127.0.0.1:{sb.BASE_PORT + i}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode not in (0, 4) or not os.path.exists(out):
            raise RuntimeError(f"edgebench failed ({done.returncode}): {done.stdout[-2000:]}")
        res["session"] = json.load(open(out))
        return res
    finally:
        sb.stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--voters", default="lhr,fra,iad")
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})  # The clients; the demo runs on CPU 0.
    voters = args.voters.split(",")
    work = tempfile.mkdtemp(prefix="strong-keys-bench-")
    runs = []
    for run in range(args.runs):
        runs.append(one_run(os.path.join(work, f"run{run}"), args, voters, run))
        s, l = runs[-1]["strong"], runs[-1]["local"]
        print(f"run {run + 1}: hot strong {s['ok']} ok / final {s['final']}, local {l['ok']} ok "
              f"/ final {l['final']}", flush=True)
    med = statistics.median
    print(f"\nstrong keys, voters {args.voters}; {args.runs} runs of {args.duration} s; medians\n")
    print("(a) own keys, one client per region: strong GET and conditional PUT (ms)")
    print(f"{'region':<6} {'model':>6} {'get p50':>8} {'get p99':>8} {'put p50':>8} "
          f"{'put p99':>8} {'puts':>5}")
    for r in sb.REGIONS:
        g50 = med([pct(x["own"][r]["get"], 0.5) for x in runs])
        g99 = med([pct(x["own"][r]["get"], 0.99) for x in runs])
        p50 = med([pct(x["own"][r]["put"], 0.5) for x in runs])
        p99 = med([pct(x["own"][r]["put"], 0.99) for x in runs])
        n = med([len(x["own"][r]["put"]) for x in runs])
        print(f"{r:<6} {sb.model_own(r, voters):>6.0f} {g50:>8.1f} {g99:>8.1f} {p50:>8.1f} "
              f"{p99:>8.1f} {n:>5.0f}")
    print(f"errors: {sum(x['own_errors'] for x in runs)}")
    print(f"\n(b, c) one hot key, {args.clients} clients per region, read-modify-write with "
          "If-Match")
    print(f"{'level':<7} {'writes ok':>9} {'distinct':>8} {'final':>6} {'lost':>5} {'412':>6} "
          f"{'errors':>6} {'ok/s':>6} {'put p50':>8} {'put p99':>8}")
    for mode in ("strong", "local"):
        xs = [x[mode] for x in runs]
        ok = med([x["ok"] for x in xs])
        lost = med([x["ok"] - (x["final"] or 0) for x in xs])
        print(f"{mode:<7} {ok:>9.0f} {med([x['distinct'] for x in xs]):>8.0f} "
              f"{med([x['final'] or 0 for x in xs]):>6.0f} {lost:>5.0f} "
              f"{med([x['refused'] for x in xs]):>6.0f} {med([x['errors'] for x in xs]):>6.0f} "
              f"{ok / args.duration:>6.1f} {med([x['put_p50'] for x in xs]):>8.1f} "
              f"{med([x['put_p99'] for x in xs]):>8.1f}")
    print("lost = successful writes - final value: acknowledged compare-and-sets overwritten")
    kinds = sorted({k for x in runs for m in ("strong", "local") for k in x[m]["error_kinds"]})
    print(f"errors by kind (all runs): {', '.join(kinds) or 'none'}")
    ss = [x["session"] for x in runs]
    print("\n(d) edgebench --workload session at consistency=strong, 32 VUs, 20 % hops: "
          f"violations {', '.join(str(x['violations']['total']) for x in ss)} (per run)")
    print(f"{'op':<8} {'p50 ms':>8} {'p99 ms':>8}")
    for op in ("login", "get", "touch", "update", "logout"):
        print(f"{op:<8} {med([x['operations'][op]['p50_ms'] for x in ss]):>8.1f} "
              f"{med([x['operations'][op]['p99_ms'] for x in ss]):>8.1f}")


if __name__ == "__main__":
    main()

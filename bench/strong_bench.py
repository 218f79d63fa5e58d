#!/usr/bin/env python3
"""consistency=strong in the eight-region demo (issue 11), against the latency model.

Starts `edgestate demo` (eight nodes and the WAN emulator pinned to CPU 0) with a voter set and
drives it with edgebench from CPU 1, every operation strong and checked for linearizability:

  (a) own keys: each region's clients write and read only that region's counters (no
      contention); 8 edgebench processes at once, 2 VUs each, read=50 increment=50.
      Model: RTT(region, nearest voter) + that voter's quorum round trip.
  (b) hot key: one counter written and read from all eight regions at once (32 VUs).
      Model: RTT(region, nearest voter v) + RTT(v, leader) when v is not the leader
      + W + Q(leader): the wait W for the round in flight (batching: one round at a time per
      counter) and then the operation's own round Q. A request arriving at a random moment
      waits half a round on average (W = Q/2); a closed-loop client in the leader's own region
      sends its next request the moment its answer ends a round, just after the next round
      began, and waits a whole one (W = Q).
  (c) open loop: one hot counter at --rate increments/s from all regions; must keep up (no
      errors, achieved rate = offered) with p99 within 2x the model of (b).
  (d) faults (--fault-seconds, once per voter set): (b)'s load with 256 VUs on 4 counters
      while a fault is injected every few seconds: one voter cut off, two voters cut off (a lost
      majority), a non-voter cut off, a voter stopped (SIGSTOP) and resumed; each healed
      before the next. Linearizability of every recorded operation, errors by kind.

Prints per-region p50/p99 against the model, the floors (a: p50 <= model*1.1 + 5 ms; b: p50 <=
model*1.25 + 10 ms), and writes everything to --json. Medians over --runs.

Usage: bench/strong_bench.py [--runs 3] [--duration 15] [--voters lhr,fra,iad]
                             [--voters2 iad,sjc,gru] [--rate 2000] [--fault-seconds 150]
       bench/strong_bench.py --from-json FILE   (the report of an earlier run, models
                                                recomputed with the formulas above)
"""
import argparse
import csv
import json
import os
import random
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGESTATE = os.path.join(ROOT, "build", "edgestate")
EDGEBENCH = os.path.join(ROOT, "build", "edgebench")
REGIONS = ["iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"]
BASE_PORT = 28080


def load_rtt():
    rows = [r for r in csv.reader(open(os.path.join(ROOT, "tools", "netem", "rtt-8-regions.csv")))
            if r and not r[0].startswith("#")]
    names = rows[0][1:]
    return {(a[0], b): float(v) for a in rows[1:] for b, v in zip(names, a[1:])}


RTT = load_rtt()


def quorum_rtt(v, voters):
    """The round trip from v to the nearest majority of the voters (v counts itself)."""
    others = sorted(RTT[(v, u)] for u in voters if u != v)
    return others[len(voters) // 2 - 1]


def nearest(r, voters):
    return min(voters, key=lambda v: (RTT[(r, v)], voters.index(v)))


def model_own(r, voters):
    v = nearest(r, voters)
    return RTT[(r, v)] + quorum_rtt(v, voters)


def model_hot(r, voters):
    v, leader = nearest(r, voters), voters[0]
    q = quorum_rtt(leader, voters)
    wait = q if r == leader else q / 2
    return RTT[(r, v)] + (RTT[(v, leader)] if v != leader else 0) + wait + q


def start_demo(work, voters):
    cmd = ["taskset", "-c", "0", EDGESTATE, "demo", "--base-port", str(BASE_PORT), "--data-dir",
           work, "--strong-voters", ",".join(voters)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    pids = {}
    deadline = time.monotonic() + 60
    for line in p.stdout:
        parts = line.split()
        if len(parts) >= 4 and parts[0] in REGIONS and parts[-1].endswith(")"):
            pids[parts[0]] = int(parts[-1].rstrip(")"))
        if line.startswith("demo ready") or time.monotonic() > deadline:
            break
    if len(pids) != len(REGIONS):
        stop(p)
        raise RuntimeError("demo did not start")
    # Every node reaches every voter.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if all(all(v["reachable"] for v in cluster(i)["strong"]["voters"])
                   for i in range(len(REGIONS))):
                return p, pids
        except OSError:
            pass
        time.sleep(0.2)
    stop(p)
    raise RuntimeError("the voters never became reachable")


def cluster(i):
    with urllib.request.urlopen(f"http://127.0.0.1:{BASE_PORT + i}/v1/cluster", timeout=10) as r:
        return json.loads(r.read())


def control(path):
    req = urllib.request.Request(f"http://127.0.0.1:{BASE_PORT + 100}{path}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def edgebench(targets, args, out):
    cmd = ["taskset", "-c", "1", EDGEBENCH, "--no-progress", "--json", out, "--consistency",
           "strong", "--check", "linearizability", "--api", "v1", "--settle", "30s"] + args
    for r in targets:
        cmd += ["--target", f"{r}=http://127.0.0.1:{BASE_PORT + REGIONS.index(r)}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(p, out):
    stdout, stderr = p.communicate(timeout=600)
    if not os.path.exists(out):
        raise RuntimeError(f"edgebench failed ({p.returncode}): {stderr[-2000:]}")
    data = json.load(open(out))
    data["exit_code"] = p.returncode
    return data


def scenario_own(work, duration, run):
    procs = []
    for r in REGIONS:
        out = os.path.join(work, f"own-{r}.json")
        procs.append((r, out, edgebench([r], ["--vus", "2", "--keys", "4", "--duration",
                                              f"{duration}s", "--mix", "read=50,increment=50",
                                              "--key-prefix", f"own-{r}-{run}-", "--seed",
                                              str(run + 1)], out)))
    res = {}
    for r, out, p in procs:
        res[r] = collect(p, out)
    return res


def scenario_hot(work, duration, run, vus=32, rate=0, keys=1, mix="read=50,increment=50",
                 timeout="5s"):
    out = os.path.join(work, f"hot-{run}-{rate}-{keys}.json")
    args = ["--vus", str(vus), "--keys", str(keys), "--duration", f"{duration}s", "--mix", mix,
            "--key-prefix", f"hot-{run}-{rate}-", "--timeout", timeout, "--seed", str(run + 1)]
    if rate:
        args += ["--rate", str(rate)]
    return collect(edgebench(REGIONS, args, out), out)


def faults(pids, voters, seconds, stop_event, log):
    non_voters = [r for r in REGIONS if r not in voters]
    rng = random.Random(11)
    kinds = ["one_voter", "two_voters", "non_voter", "sigstop_voter"]
    i = 0
    time.sleep(3)
    while not stop_event.is_set():
        kind = kinds[i % len(kinds)]
        i += 1
        if kind == "one_voter":
            victims = [rng.choice(voters)]
        elif kind == "two_voters":
            victims = rng.sample(voters, 2)
        elif kind == "non_voter":
            victims = [rng.choice(non_voters)]
        else:
            victims = [rng.choice(voters)]
        log.append({"t": time.monotonic(), "fault": kind, "regions": victims})
        if kind == "sigstop_voter":
            os.kill(pids[victims[0]], signal.SIGSTOP)
        else:
            for v in victims:
                control(f"/regions/{v}/isolate")
        stop_event.wait(2.0 if kind == "two_voters" else 3.0)
        if kind == "sigstop_voter":
            os.kill(pids[victims[0]], signal.SIGCONT)
        else:
            for v in victims:
                control(f"/regions/{v}/rejoin")
        stop_event.wait(3.0)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_set(voters, args, work):
    result = {"voters": voters, "own": {}, "hot": {}, "open": None, "faults": None}
    own_runs, hot_runs, open_runs = [], [], []
    for run in range(args.runs):
        d = os.path.join(work, f"{'-'.join(voters)}-{run}")
        os.makedirs(d)
        p, pids = start_demo(os.path.join(d, "demo"), voters)
        try:
            own_runs.append(scenario_own(d, args.duration, run))
            hot_runs.append(scenario_hot(d, args.duration, run))
            open_runs.append(scenario_hot(d, args.duration, run, vus=max(400, args.rate // 4),
                                          rate=args.rate, mix="read=0,increment=100"))
        finally:
            stop(p)
    viol = 0
    ops = 0
    for r in REGIONS:
        own = [x[r]["regions"][r] for x in own_runs]
        result["own"][r] = {"model_ms": model_own(r, voters),
                            "p50_ms": median([o["p50_ms"] for o in own]),
                            "p99_ms": median([o["p99_ms"] for o in own]),
                            "errors": sum(o["errors"] for o in own)}
        hot = [x["regions"][r] for x in hot_runs]
        result["hot"][r] = {"model_ms": model_hot(r, voters),
                            "p50_ms": median([h["p50_ms"] for h in hot]),
                            "p99_ms": median([h["p99_ms"] for h in hot]),
                            "errors": sum(h["errors"] for h in hot)}
        opn = [x["regions"][r] for x in open_runs]
        result.setdefault("open_regions", {})[r] = {
            "model_ms": model_hot(r, voters), "p50_ms": median([o["p50_ms"] for o in opn]),
            "p99_ms": median([o["p99_ms"] for o in opn])}
    for x in [y for run in own_runs for y in run.values()] + hot_runs + open_runs:
        viol += x["linearizability"]["violations"]
        ops += x["linearizability"]["operations"]
    result["open"] = {"offered_per_s": args.rate,
                      "achieved_per_s": median([o["overall"]["rps"] for o in open_runs]),
                      "errors": sum(o["overall"].get("errors", 0) for o in open_runs),
                      "p99_ms": median([o["overall"]["p99_ms"] for o in open_runs])}
    result["checked"] = {"operations": ops, "violations": viol}
    if args.fault_seconds > 0:
        d = os.path.join(work, f"{'-'.join(voters)}-faults")
        os.makedirs(d)
        p, pids = start_demo(os.path.join(d, "demo"), voters)
        log = []
        stop_event = threading.Event()
        try:
            t = threading.Thread(target=faults, args=(pids, voters, args.fault_seconds,
                                                      stop_event, log))
            out = os.path.join(d, "faults.json")
            eb = edgebench(REGIONS, ["--vus", "256", "--keys", "4", "--duration",
                                     f"{args.fault_seconds}s", "--mix", "read=50,increment=50",
                                     "--key-prefix", "faults-", "--timeout", "5s"], out)
            t.start()
            time.sleep(args.fault_seconds)
            stop_event.set()
            t.join()
            data = collect(eb, out)
        finally:
            stop(p)
        lin = data["linearizability"]
        result["faults"] = {"seconds": args.fault_seconds, "injected": len(log),
                            "by_kind": {k: sum(1 for f in log if f["fault"] == k)
                                        for k in sorted({f["fault"] for f in log})},
                            "operations": lin["operations"],
                            "indeterminate": lin["indeterminate"],
                            "violations": lin["violations"], "unknown": lin["unknown"],
                            "errors_by_kind": data["errors_by_kind"],
                            "lost_updates": data["lost_updates"]["max_over_regions"]}
    return result


def report(res):
    v = res["voters"]
    print(f"\n== voters {','.join(v)} (leader {v[0]})")
    print(f"{'region':6} | {'(a) own keys: model':>19} {'p50':>7} {'p99':>7} {'floor':>6} | "
          f"{'(b) hot key: model':>18} {'p50':>7} {'p99':>7} {'floor':>6} | {'(c) p99':>8} "
          f"{'2x model':>8}")
    for r in REGIONS:
        a, b, c = res["own"][r], res["hot"][r], res["open_regions"][r]
        fa = "ok" if a["p50_ms"] <= a["model_ms"] * 1.1 + 5 else "MISS"
        fb = "ok" if b["p50_ms"] <= b["model_ms"] * 1.25 + 10 else "MISS"
        fc = "ok" if c["p99_ms"] <= 2 * c["model_ms"] else "MISS"
        print(f"{r:6} | {a['model_ms']:19.0f} {a['p50_ms']:7.1f} {a['p99_ms']:7.1f} {fa:>6} | "
              f"{b['model_ms']:18.0f} {b['p50_ms']:7.1f} {b['p99_ms']:7.1f} {fb:>6} | "
              f"{c['p99_ms']:8.1f} {2 * c['model_ms']:6.0f} {fc}")
    o = res["open"]
    print(f"(c) open loop: offered {o['offered_per_s']}/s, achieved {o['achieved_per_s']:.0f}/s, "
          f"errors {o['errors']}, p99 {o['p99_ms']:.1f} ms (all regions)")
    ch = res["checked"]
    print(f"linearizability (a)-(c): {ch['operations']} operations checked, "
          f"{ch['violations']} violations")
    if res["faults"]:
        f = res["faults"]
        print(f"(d) faults: {f['injected']} injected over {f['seconds']} s {f['by_kind']}; "
              f"{f['operations']} operations checked ({f['indeterminate']} indeterminate), "
              f"{f['violations']} violations, {f['unknown']} undecided, lost updates "
              f"{f['lost_updates']}; errors {f['errors_by_kind']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--voters", default="lhr,fra,iad")
    ap.add_argument("--voters2", default="iad,sjc,gru", help="another set ('' for none)")
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--fault-seconds", type=int, default=150)
    ap.add_argument("--json", default="strong-bench.json")
    ap.add_argument("--from-json", help="print the report of an earlier run's JSON")
    args = ap.parse_args()
    if args.from_json:
        for res in json.load(open(args.from_json))["sets"]:
            for r in REGIONS:
                res["own"][r]["model_ms"] = model_own(r, res["voters"])
                res["hot"][r]["model_ms"] = model_hot(r, res["voters"])
                res["open_regions"][r]["model_ms"] = model_hot(r, res["voters"])
            report(res)
        return
    sets = [args.voters.split(",")] + ([args.voters2.split(",")] if args.voters2 else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="strong-bench-") as work:
        for voters in sets:
            res = run_set(voters, args, work)
            report(res)
            results.append(res)
    json.dump({"sets": results, "runs": args.runs, "duration_s": args.duration}, open(args.json, "w"),
              indent=2)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

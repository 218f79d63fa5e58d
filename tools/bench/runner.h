// Runner: one edgebench run against a set of regional targets (see edgebench.cc for the
// tool). Single-threaded: all virtual users are coroutines on one io_context.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bench/histogram.h"
#include "bench/options.h"

namespace edgestate::bench {

struct Config {
  std::vector<Target> targets;
  int vus = 8;
  std::chrono::milliseconds duration{10000};
  std::chrono::milliseconds timeout{5000};
  Mix mix;
  int keys = 1;
  std::string dist = "uniform";
  double zipf_s = 1.0;
  double rate = 0;
  double last_mile_ms = 0;
  double think_ms = 0;  // Closed loop: pause after each response (k6's sleep()).
  std::vector<Threshold> thresholds;
  std::string json_file;
  std::string api = "auto";  // article | v1 | auto (article when keys == 1)
  std::string key_prefix;
  std::string api_key;
  int convergence_probes = 0;
  std::chrono::milliseconds settle{15000};
  std::string rtt_file;
  double interval_ms = 100;
  uint64_t seed = 1;
  bool progress = true;
  bool print_report = true;
  // Consistency (docs/consistency.md): the level every request asks for (empty: none named),
  // M for bounded, and whether VUs keep their session token and send it back (on with session).
  std::string consistency;
  int64_t max_staleness_ms = -1;
  bool sessions = false;
  // The share of each VU's requests sent to another region's node, chosen at random (a roaming
  // client whose route changed); 1: every request to a random region.
  double hop = 0;
  // Record every operation with its invocation and response times and check each key's
  // history for linearizability (tools/lincheck); history_file: also write it as JSON lines.
  bool check_linearizability = false;
  std::string history_file;

  // --workload (kv_workloads.h): counter (this file), session or cache.
  std::string workload = "counter";
  // session: each login's TTL, and how many requests (GET, touch, update) a login makes before
  // its logout; touch_pct and update_pct of them are touches and updates, the rest reads.
  int64_t session_ttl_ms = 5000;
  int session_requests = 20;
  int touch_pct = 20;
  int update_pct = 10;
  // cache: the origin edgebench serves (HOST:PORT; the nodes' --cache-origin points there), the
  // max-age it sends, the size of its bodies, and how many purges are timed after the load.
  std::string origin_listen;
  int64_t origin_max_age_s = 600;
  size_t value_bytes = 512;
  int purge_probes = 8;
};

// What a run measured, for callers that compare runs (edgebench article).
struct RunSummary {
  // The article's "global" figure: the mean over regions of each region's percentile, so a
  // region whose clients wait longer (and send fewer requests) weighs as much as the others.
  double RegionAverage(double q) const;
  bool ok = false;
  std::string error;  // Why the run could not happen (ok == false).
  double seconds = 0;
  LatencyHistogram all;
  std::vector<std::pair<std::string, LatencyHistogram>> regions;
  uint64_t requests = 0, errors = 0, reads = 0, stale_reads = 0, bound_violations = 0;
  int64_t lost_updates = 0, acknowledged = 0;
  bool settled = false;
  double staleness_p50_ms = 0, staleness_p99_ms = 0;
  std::map<std::string, uint64_t> errors_by_kind;
  // A VU saw a counter (which only grows) below a value it had already seen, or an increment
  // of its own return no more than it had seen: read-your-writes or monotonic reads broken.
  uint64_t session_violations = 0;
  uint64_t waited = 0;   // Responses the node held before serving (Edgestate-Waited-Ms).
  uint64_t above_m = 0;  // Bounded reads served with a bound above M: must be 0.
  // --check linearizability: operations checked (indeterminate ones among them), keys whose
  // history has no linearization, and keys the search gave up on.
  uint64_t lin_ops = 0, lin_indeterminate = 0, lin_violations = 0, lin_unknown = 0;
  int exit_code = 0;  // 0, 3 when a threshold was breached, 4 on a linearizability violation.
};

// Runs the load, settles, probes, prints the report (when print_report) and writes JSON (when
// json_file is set).
RunSummary RunLoad(Config config);

}  // namespace edgestate::bench

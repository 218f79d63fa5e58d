// `edgebench article`: the article's benchmark on one machine, three designs side by side, with
// the same clients over the same emulated WAN in one run:
//   - edgestate: `edgestate demo` (eight regions replicating over the emulated WAN);
//   - isolate:   a Worker + Durable Object counter in workerd (Miniflare), homed in iad;
//                clients in other regions reach it across the emulated WAN;
//   - vm:        an Express counter per region posting its whole value to the others every
//                100 ms across the emulated WAN (last writer wins).
// Prints the article's table (p50/p95/p99 global and per region, stale reads, lost updates,
// requests/s, errors), then what each design's servers cost (peak resident memory, CPU seconds
// per million requests and their price, cold start), writes JSON and an SVG chart of the
// latency distributions.
#pragma once

#include <string>
#include <vector>

#include "bench/runner.h"

namespace edgestate::bench {

// edgestate with local reads; with session tokens, each VU sending one request in ten to
// another region's node (a roaming client whose anycast route changed); with bounded reads
// (M = 250 ms); then the article's two designs.
inline const std::vector<std::string> kArticleDesigns = {
    "edgestate", "edgestate-session", "edgestate-bounded", "edgestate-strong", "isolate", "vm"};

// The default price of a CPU second: Fly.io's shared-cpu-1x machine with 256 MB, about $2.02
// per 30-day month as checked against fly.io/docs/about/pricing on 2026-06-07 (Fly's own
// announcement of these machines listed $1.94), over the seconds of that month. A design's
// cost per million requests is its CPU seconds per million requests times this.
inline constexpr double kDefaultPricePerCpuSecond = 2.02 / (30 * 86400.0);

struct ArticleOptions {
  std::string edgestate_binary;  // The `edgestate` executable (for `edgestate demo`).
  std::string baselines_dir;     // bench/baselines (node_modules installed by scripts/setup.sh).
  std::string work_dir;          // Data and logs of every process started.
  std::vector<std::string> designs = kArticleDesigns;
  std::chrono::milliseconds duration{10000};
  int vus = 64;
  Mix mix{90, 10};
  std::chrono::milliseconds timeout{5000};
  double last_mile_ms = 0;
  double think_ms = 100;   // The article's k6 script sleeps 0.1 s between requests.
  uint16_t base_port = 0;  // 0: find free ports (the run needs base .. base + 307).
  std::string json_file;
  std::string chart_file = "article-latency.svg";
  double price_per_cpu_second = kDefaultPricePerCpuSecond;  // US dollars.
};

// Runs every design in turn. Returns 0 when all ran, 1 when a design failed to start or run
// (the failure is printed and the table marks it), never a silent partial result.
int RunArticle(const ArticleOptions& options);

}  // namespace edgestate::bench

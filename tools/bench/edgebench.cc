// edgebench: a k6-style load tool that knows about regions, stale reads and lost updates.
//
//   edgebench --target iad=http://127.0.0.1:8080 --target lhr=http://127.0.0.1:8082
//             --vus 32 --duration 30s --mix read=90,increment=10 --threshold 'p99<100'
//   edgebench article      (the article's benchmark, three designs side by side)
//
// Virtual users are spread over the targets (each talks only to its region's node). Closed
// loop by default; --rate R schedules R requests/s in all (open loop) and measures each from
// its scheduled time, so a slow server cannot hide latency (no coordinated omission). After
// the run it waits for the nodes to agree, then reports per-region latency percentiles
// (histograms with <= 1 % error), requests/s, errors by kind, stale reads, lost updates, and,
// with --convergence-probes, the time from an increment's acknowledgment at one region to its
// visibility at each other. Exit code: 0, 1 for an error in the run itself, 2 for bad flags,
// 3 when a --threshold is breached, 4 when --check linearizability finds a violation (or the
// session or cache workload one of its own, kv_workloads.h).
//
//   edgebench --workload session --target ... --session-ttl-ms 2000 --hop-share 0.5
//   edgebench --workload cache --target ... --origin 127.0.0.1:9700 --keys 100000 --dist zipf
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string_view>

#include "bench/article.h"
#include "bench/kv_workloads.h"
#include "bench/runner.h"
#include "common/strings.h"
#include "consistency/consistency.h"
#include "replication/peers.h"

int main(int argc, char** argv) {
  using namespace edgestate::bench;
  CLI::App app{"edgebench: region-aware load for edgestate and HTTP counters.", "edgebench"};
  Config c;
  std::vector<std::string> targets, thresholds;
  std::string duration = "10s", timeout = "5s", mix = "read=90,increment=10", settle = "15s";
  app.add_option("--target", targets, "REGION=http://HOST:PORT (repeatable)");
  app.add_option("--vus", c.vus, "Virtual users, spread round-robin over the targets")
      ->check(CLI::Range(1, 100000));
  app.add_option("--duration", duration, "Length of the run: 30s, 500ms, 2m");
  app.add_option("--timeout", timeout, "Per-request timeout (default 5s)");
  app.add_option("--mix", mix, "Operation weights, e.g. read=90,increment=10");
  app.add_option("--keys", c.keys,
                 "Number of counters (default 1: the article's /read and /increment)")
      ->check(CLI::Range(1, 10'000'000));
  app.add_option("--dist", c.dist, "Key distribution: uniform or zipf")
      ->check(CLI::IsMember({"uniform", "zipf"}));
  app.add_option("--zipf-s", c.zipf_s, "Zipf exponent (default 1.0)")->check(CLI::Range(0.0, 10.0));
  app.add_option("--think-ms", c.think_ms, "Closed loop: pause after each response (default 0)")
      ->check(CLI::Range(0.0, 600000.0));
  app.add_option("--rate", c.rate, "Open loop: requests/s in all (0: closed loop)")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--last-mile-ms", c.last_mile_ms,
                 "One-way client-to-node delay added before each request and after each response")
      ->check(CLI::Range(0.0, 10000.0));
  app.add_option("--threshold", thresholds,
                 "e.g. 'p99<100' (ms), 'error_rate<0.01', 'stale_rate<0.05', 'lost<=0'; a breach "
                 "exits 3");
  app.add_option("--json", c.json_file, "Write the results as JSON here");
  app.add_option("--api", c.api, "article (/read, /increment), v1 (/v1/counters/KEY) or auto")
      ->check(CLI::IsMember({"article", "v1", "auto"}));
  app.add_option("--key-prefix", c.key_prefix, "v1 counter name prefix (default: random per run)");
  app.add_option("--api-key", c.api_key, "Bearer key for the targets");
  app.add_option("--convergence-probes", c.convergence_probes,
                 "After the run, increment at each region N times and time visibility elsewhere")
      ->check(CLI::Range(0, 10000));
  app.add_option("--settle", settle, "How long to wait for the regions to agree (default 15s)");
  app.add_option("--rtt-file", c.rtt_file,
                 "RTT model to compare convergence with ('default' = the shipped model)");
  app.add_option("--interval-ms", c.interval_ms, "Replication interval assumed by that comparison");
  app.add_option("--seed", c.seed, "Random seed");
  app.add_flag("!--no-progress", c.progress, "No progress line on the terminal");
  app.add_option("--consistency", c.consistency,
                 "Level every request asks for: local, bounded, session or strong (session: VUs "
                 "keep their token and send it back)");
  app.add_option("--max-staleness-ms", c.max_staleness_ms, "M for --consistency bounded")
      ->check(CLI::Range(int64_t{0}, int64_t{86'400'000}));
  std::string check;
  app.add_option("--check", check,
                 "linearizability: record every operation (invocation, response, result; "
                 "timed-out increments are indeterminate) and check each key's history; exits 4 "
                 "on a violation")
      ->check(CLI::IsMember({"linearizability"}));
  app.add_option("--history", c.history_file,
                 "With --check: also write the recorded operations here, one JSON object per line");
  bool hop = false;
  app.add_flag("--hop", hop, "Send each request of a VU to a random region (a roaming client)");
  app.add_option("--hop-share", c.hop,
                 "Send this share of each VU's requests to another random region (0..1)")
      ->check(CLI::Range(0.0, 1.0));

  app.add_option("--workload", c.workload,
                 "counter (the default: counters, --mix), session (log in with a TTL, read, touch, "
                 "update, log out; checks each VU's own session) or cache (Zipf GETs through "
                 "/v1/cache over an origin edgebench serves; hit ratio, origin requests, purge "
                 "propagation)")
      ->check(CLI::IsMember({"counter", "session", "cache"}));
  app.add_option("--session-ttl-ms", c.session_ttl_ms, "session: each login's TTL (default 5000)")
      ->check(CLI::Range(int64_t{1}, int64_t{2'592'000'000}));
  app.add_option("--session-requests", c.session_requests,
                 "session: requests per login before its logout (default 20)")
      ->check(CLI::Range(0, 1'000'000));
  app.add_option("--touch-pct", c.touch_pct, "session: % of those requests that touch (default 20)")
      ->check(CLI::Range(0, 100));
  app.add_option("--update-pct", c.update_pct,
                 "session: % of those requests that rewrite the session (default 10)")
      ->check(CLI::Range(0, 100));
  app.add_option("--origin", c.origin_listen,
                 "cache: IP:PORT where edgebench serves the origin (the nodes' --cache-origin)");
  app.add_option("--origin-max-age-s", c.origin_max_age_s,
                 "cache: the origin's Cache-Control max-age (default 600)")
      ->check(CLI::Range(int64_t{0}, int64_t{2'592'000}));
  app.add_option("--value-bytes", c.value_bytes, "cache: origin body size (default 512)")
      ->check(CLI::Range(size_t{16}, size_t{1} << 20));
  app.add_option("--purge-probes", c.purge_probes,
                 "cache: purges timed after the load, from each region in turn (default 8)")
      ->check(CLI::Range(0, 10000));

  ArticleOptions article;
  std::string article_duration = "10s", article_mix = "read=90,increment=10", designs;
  CLI::App* art = app.add_subcommand(
      "article",
      "The article's benchmark: edgestate, the isolate design (Worker + Durable Object in "
      "workerd, homed in iad) and the VM design (Express per region, whole-value replication) "
      "over the same emulated WAN, same clients; prints the table, writes JSON and an SVG chart.");
  art->add_option("--duration", article_duration, "Per design (default 10s)");
  art->add_option("--vus", article.vus, "Virtual users in all, 8 regions (default 64)")
      ->check(CLI::Range(8, 100000));
  art->add_option("--mix", article_mix, "Default read=90,increment=10");
  art->add_option("--last-mile-ms", article.last_mile_ms, "Client-to-entry-point delay, one way");
  art->add_option("--think-ms", article.think_ms,
                  "Pause after each response, as the article's k6 script's sleep(0.1) "
                  "(default 100)");
  art->add_option("--json", article.json_file, "Write {\"systems\": [...]} here");
  art->add_option("--chart", article.chart_file, "SVG chart (default article-latency.svg)");
  art->add_option("--price-per-cpu-second", article.price_per_cpu_second,
                  "US dollars per CPU second for the cost column (default: Fly.io's shared-cpu-1x "
                  "256 MB, about $2.02 per 30-day month as of 2026-06)")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            double d = 0;
            try {
              size_t used = 0;
              d = std::stod(v, &used);
              if (used != v.size()) d = 0;
            } catch (const std::exception&) {
              d = 0;
            }
            return d > 0 && d < 1 ? std::string() : "must be a price above 0 and below 1 (dollars)";
          },
          "DOLLARS"));
  art->add_option("--designs", designs,
                  "Subset of edgestate, edgestate-session, edgestate-bounded, edgestate-strong, "
                  "isolate, vm "
                  "(default all)");
  art->add_option("--base-port", article.base_port,
                  "First of 308 ports used (default: a free range)");
  art->add_option("--work-dir", article.work_dir, "Data and logs (default: a temporary dir)");
  art->add_option("--baselines", article.baselines_dir,
                  "The baselines folder (default: bench/baselines of this checkout)");
  app.require_subcommand(0, 1);
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_name() == "--target") opt->required(false);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "edgebench: %s\n", e.what());
    return 2;
  }
  auto fail = [](const edgestate::Status& s) {
    std::fprintf(stderr, "edgebench: %s\n", s.message().c_str());
    return 2;
  };
  if (art->parsed()) {
    auto d = ParseDuration(article_duration);
    if (!d.ok() || d->count() <= 0)
      return fail(edgestate::Status::InvalidArgument("bad --duration"));
    article.duration = *d;
    auto m = ParseMix(article_mix);
    if (!m.ok()) return fail(m.status());
    article.mix = *m;
    if (!designs.empty()) {
      article.designs.clear();
      for (const std::string& name : edgestate::SplitList(designs)) {
        if (std::find(kArticleDesigns.begin(), kArticleDesigns.end(), name) ==
            kArticleDesigns.end()) {
          return fail(edgestate::Status::InvalidArgument("unknown design " + name));
        }
        article.designs.push_back(name);
      }
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    std::filesystem::path bin_dir =
        std::filesystem::path(n > 0 ? std::string(self, n) : argv[0]).parent_path();
    article.edgestate_binary = (bin_dir / "edgestate").string();
    if (article.baselines_dir.empty()) {
      article.baselines_dir = (bin_dir.parent_path() / "bench" / "baselines").string();
    }
    std::error_code ec;
    auto canonical = std::filesystem::weakly_canonical(article.baselines_dir, ec);
    if (!ec) article.baselines_dir = canonical.string();
    // A work dir of our own is removed after a clean run and kept (and named) after a failed
    // one, for its logs; a --work-dir the user gave is always kept.
    const bool own_work_dir = article.work_dir.empty();
    if (own_work_dir) {
      std::error_code tmp_ec;
      std::string tmpl =
          (std::filesystem::temp_directory_path(tmp_ec) / "edgebench-article-XXXXXX").string();
      char* dir = tmp_ec ? nullptr : mkdtemp(tmpl.data());
      if (dir == nullptr) return fail(edgestate::Status::Unavailable("cannot create a work dir"));
      article.work_dir = dir;
    }
    int rc = RunArticle(article);
    if (own_work_dir && rc == 0) {
      std::error_code ignored;
      std::filesystem::remove_all(article.work_dir, ignored);
    } else if (own_work_dir) {
      std::fprintf(stderr, "edgebench article: logs kept in %s\n", article.work_dir.c_str());
    }
    return rc;
  }
  if (targets.empty()) return fail(edgestate::Status::InvalidArgument("--target is required"));
  for (const auto& t : targets) {
    auto p = ParseTarget(t);
    if (!p.ok()) return fail(p.status());
    c.targets.push_back(*p);
  }
  for (const auto& t : thresholds) {
    auto p = ParseThreshold(t);
    if (!p.ok()) return fail(p.status());
    c.thresholds.push_back(*p);
  }
  auto d = ParseDuration(duration);
  if (!d.ok()) return fail(d.status());
  c.duration = *d;
  auto to = ParseDuration(timeout);
  if (!to.ok() || to->count() <= 0)
    return fail(edgestate::Status::InvalidArgument("bad --timeout"));
  c.timeout = *to;
  auto se = ParseDuration(settle);
  if (!se.ok()) return fail(se.status());
  c.settle = *se;
  auto m = ParseMix(mix);
  if (!m.ok()) return fail(m.status());
  c.mix = *m;
  if (hop) c.hop = 1.0;
  c.check_linearizability = check == "linearizability";
  if (!c.history_file.empty() && !c.check_linearizability) {
    return fail(edgestate::Status::InvalidArgument("--history goes with --check linearizability"));
  }
  if (!c.consistency.empty()) {
    auto level = edgestate::consistency::ParseLevel(c.consistency);
    if (!level.ok()) return fail(level.status());
    if ((*level == edgestate::consistency::Level::kBounded) != (c.max_staleness_ms >= 0)) {
      return fail(edgestate::Status::InvalidArgument(
          "--max-staleness-ms goes with --consistency bounded, and bounded needs it"));
    }
    c.sessions = *level == edgestate::consistency::Level::kSession;
  } else if (c.max_staleness_ms >= 0) {
    return fail(
        edgestate::Status::InvalidArgument("--max-staleness-ms needs --consistency bounded"));
  }
  if (c.api == "article" && c.keys > 1) {
    return fail(edgestate::Status::InvalidArgument("--api article has one counter; use --keys 1"));
  }
  if (c.workload != "counter") {
    if (c.check_linearizability || c.convergence_probes > 0 || c.api == "article" || c.rate > 0 ||
        !c.thresholds.empty()) {
      return fail(edgestate::Status::InvalidArgument(
          "--check, --convergence-probes, --api article, --rate and --threshold go with "
          "--workload counter"));
    }
    if (c.workload == "session") {
      if (c.touch_pct + c.update_pct > 100) {
        return fail(edgestate::Status::InvalidArgument("--touch-pct + --update-pct exceed 100"));
      }
      // Sessions are what session consistency is for: the default level, tokens kept.
      if (c.consistency.empty()) {
        c.consistency = "session";
        c.sessions = true;
      }
      return RunSessionWorkload(std::move(c));
    }
    if (c.origin_listen.empty()) {
      return fail(edgestate::Status::InvalidArgument(
          "--workload cache needs --origin IP:PORT (the nodes' --cache-origin)"));
    }
    if (auto hp = edgestate::replication::ParseHostPort(c.origin_listen); !hp.ok()) {
      return fail(edgestate::Status::InvalidArgument("--origin: " + hp.status().message()));
    }
    if (c.consistency == "strong") {
      return fail(edgestate::Status::InvalidArgument("the cache has no strong reads"));
    }
    return RunCacheWorkload(std::move(c));
  }
  RunSummary s = RunLoad(std::move(c));
  if (!s.ok) {
    std::fprintf(stderr, "edgebench: %s\n", s.error.c_str());
    return 1;
  }
  return s.exit_code;
}

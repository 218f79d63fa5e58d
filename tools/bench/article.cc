#include "bench/article.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "bench/procstat.h"
#include "demo/process.h"
#include "net/net.h"
#include "netem/rtt_model.h"
#include "netem/wan.h"

namespace edgestate::bench {
namespace {

namespace fs = std::filesystem;
using demo::ChildProcess;

const std::vector<std::string> kRegions = {"iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"};
constexpr const char* kHome = "iad";  // Where the isolate design's Durable Object lives.

// What a design's server processes cost during its run (the article's other rows).
struct Resources {
  double cpu_seconds = 0;  // User + system time of its servers from the load's start to its end.
  double peak_rss_mb = 0;  // The sum of each server process's peak resident set.
  int processes = 0;
  double cold_start_ms = -1;  // Exec to the first 200 of one fresh server; -1: not measured.
  std::string cold_start_error;
};

struct Design {
  std::string name;
  std::string description;
  RunSummary summary;
  Resources resources;
  std::string error;
};

// A run's summary and what its servers used meanwhile.
struct Measured {
  RunSummary summary;
  Resources resources;
};

// Runs the load, reading the servers' CPU time before and after with `measure`.
Measured RunMeasured(const Config& c, const std::function<Usage()>& measure) {
  Measured m;
  const Usage before = measure();
  m.summary = RunLoad(c);
  const Usage after = measure();
  m.resources.cpu_seconds = std::max(0.0, after.cpu_seconds - before.cpu_seconds);
  m.resources.peak_rss_mb = static_cast<double>(after.peak_rss_bytes) / (1 << 20);
  m.resources.processes = after.processes;
  return m;
}

// Stops every process of a design on every way out of its run.
struct StopOnExit {
  std::vector<ChildProcess>& procs;
  ~StopOnExit() { demo::StopProcesses(procs); }
};

Config LoadConfig(const ArticleOptions& o) {
  Config c;
  c.vus = o.vus;
  c.duration = o.duration;
  c.timeout = o.timeout;
  c.mix = o.mix;
  c.keys = 1;
  c.api = "article";
  c.last_mile_ms = o.last_mile_ms;
  c.think_ms = o.think_ms;
  c.settle = std::chrono::seconds(5);
  c.print_report = false;
  c.progress = true;
  return c;
}

Target MakeTarget(const std::string& region, uint16_t port) {
  return Target{region, "127.0.0.1", port};
}

std::string LogPath(const ArticleOptions& o, const std::string& name) {
  return (fs::path(o.work_dir) / (name + ".log")).string();
}

Status CheckNodeModules(const ArticleOptions& o, const std::string& baseline,
                        const std::string& package) {
  fs::path p = fs::path(o.baselines_dir) / baseline / "node_modules" / package;
  if (!fs::exists(p)) {
    return Status::FailedPrecondition(
        fmt::format("{} is not installed ({} missing); run scripts/setup.sh", package, p.string()));
  }
  return Status::Ok();
}

// GET `path` on 127.0.0.1:port; true on a 200 status line. Never blocks beyond a second.
bool AnswersOk(uint16_t port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req =
        "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    char head[12];
    size_t got = 0;
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      while (got < sizeof(head)) {
        ssize_t n = recv(fd, head + got, sizeof(head) - got, 0);
        if (n <= 0) break;
        got += static_cast<size_t>(n);
      }
    }
    ok = got == sizeof(head) && std::string_view(head + 8, 4) == " 200";
  }
  close(fd);
  return ok;
}

// Cold start, as the article compares them: exec of one fresh server of `design` (an empty
// data directory) to its first successful answer to the article's read, polled every
// millisecond.
StatusOr<double> ColdStartMs(const ArticleOptions& o, const std::string& design, uint16_t port) {
  const std::string dir = (fs::path(o.work_dir) / ("cold-" + design)).string();
  fs::create_directories(dir);
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
  if (design == "isolate") {
    argv = {"node", (fs::path(o.baselines_dir) / "isolate-counter" / "server.mjs").string(),
            std::to_string(port), dir};
  } else if (design == "vm") {
    argv = {"node", (fs::path(o.baselines_dir) / "express-counter" / "server.js").string()};
    env = {{"PORT", std::to_string(port)},
           {"FLY_REGION", kHome},
           {"DATA_DIR", dir},
           {"PEERS", ""},
           {"REPLICATION_INTERVAL_MS", "100"}};
  } else {
    argv = {o.edgestate_binary,   "serve",      "--listen", "127.0.0.1", "--port",
            std::to_string(port), "--data-dir", dir,        "--region",  kHome};
  }
  std::vector<ChildProcess> procs;
  StopOnExit stop{procs};
  const auto start = std::chrono::steady_clock::now();
  auto p = demo::SpawnProcess(design + " (cold start)", argv, LogPath(o, "cold-" + design), env);
  if (!p.ok()) return p.status();
  procs.push_back(*p);
  const auto deadline = start + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (AnswersOk(port, "/read")) {
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
          .count();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Status::Unavailable(design + " did not answer within 60 s of exec");
}

// edgestate: the demo, with every region's clients on their own node. `variant` is one of the
// edgestate rows of kArticleDesigns: local reads, session tokens with roaming clients, bounded
// reads, or strong reads and increments (voters lhr,fra,iad, every operation checked for
// linearizability).
StatusOr<Measured> RunEdgestate(const ArticleOptions& o, const std::string& variant) {
  std::vector<ChildProcess> procs;
  StopOnExit stop{procs};
  auto demo =
      demo::SpawnProcess("edgestate demo",
                         {o.edgestate_binary, "demo", "--base-port", std::to_string(o.base_port),
                          "--data-dir", (fs::path(o.work_dir) / variant).string(), "--control-port",
                          std::to_string(o.base_port + 100)},
                         LogPath(o, variant + "-demo"));
  if (!demo.ok()) return demo.status();
  procs.push_back(*demo);
  auto ready = demo::AwaitOutput(&procs[0], std::regex("demo ready"), std::chrono::seconds(30));
  if (!ready.ok()) return ready.status();
  Config c = LoadConfig(o);
  for (size_t i = 0; i < kRegions.size(); ++i) {
    c.targets.push_back(MakeTarget(kRegions[i], static_cast<uint16_t>(o.base_port + i)));
  }
  if (variant == "edgestate-session") {
    c.consistency = "session";
    c.sessions = true;
    c.hop = 0.1;
  } else if (variant == "edgestate-bounded") {
    c.consistency = "bounded";
    c.max_staleness_ms = 250;
  } else if (variant == "edgestate-strong") {
    c.consistency = "strong";
    c.check_linearizability = true;
  }
  // Replication links up (on loopback they take milliseconds; the strong row also needs every
  // node's links to the voters).
  std::this_thread::sleep_for(std::chrono::seconds(variant == "edgestate-strong" ? 3 : 1));
  // The nodes only: the demo process itself hosts the WAN emulator, which the other designs
  // get from this process.
  const pid_t demo_pid = procs[0].pid;
  return RunMeasured(c, [demo_pid] { return MeasureProcesses({demo_pid}, false); });
}

// isolate: one Worker + Durable Object in iad; other regions cross the WAN to reach it.
StatusOr<Measured> RunIsolate(const ArticleOptions& o) {
  if (Status s = CheckNodeModules(o, "isolate-counter", "miniflare"); !s.ok()) return s;
  const uint16_t port = static_cast<uint16_t>(o.base_port + 200);
  std::vector<ChildProcess> procs;
  StopOnExit stop{procs};
  auto worker = demo::SpawnProcess(
      "isolate design (workerd)",
      {"node", (fs::path(o.baselines_dir) / "isolate-counter" / "server.mjs").string(),
       std::to_string(port), (fs::path(o.work_dir) / "isolate").string()},
      LogPath(o, "isolate"));
  if (!worker.ok()) return worker.status();
  procs.push_back(*worker);
  auto ready = demo::AwaitOutput(&procs[0], std::regex("ready"), std::chrono::seconds(60));
  if (!ready.ok()) return ready.status();
  const netem::RttModel& model = netem::RttModel::Default();
  netem::WanEmulator wan;
  Config c = LoadConfig(o);
  for (const auto& r : kRegions) {
    if (r == kHome) {
      c.targets.push_back(MakeTarget(r, port));
      continue;
    }
    netem::LinkSpec spec;
    spec.from = r;
    spec.to = kHome;
    spec.one_way_ms = model.RttMs(r, kHome) / 2;
    spec.target_port = port;
    if (Status s = wan.AddLink(spec); !s.ok()) return s;
    c.targets.push_back(MakeTarget(r, wan.LinkPort(r, kHome)));
  }
  if (Status s = wan.Start(); !s.ok()) return s;
  const pid_t worker_pid = procs[0].pid;  // node, and workerd under it.
  Measured m = RunMeasured(c, [worker_pid] { return MeasureProcesses({worker_pid}); });
  wan.Stop();
  return m;
}

// vm: an Express counter per region, replicating whole values over the WAN every 100 ms.
StatusOr<Measured> RunVm(const ArticleOptions& o) {
  if (Status s = CheckNodeModules(o, "express-counter", "express"); !s.ok()) return s;
  const netem::RttModel& model = netem::RttModel::Default();
  netem::WanEmulator wan;
  if (Status s = netem::AddMesh(&wan, model, kRegions, 0); !s.ok()) return s;
  std::vector<ChildProcess> procs;
  StopOnExit stop{procs};
  Config c = LoadConfig(o);
  for (size_t i = 0; i < kRegions.size(); ++i) {
    const std::string& r = kRegions[i];
    const uint16_t port = static_cast<uint16_t>(o.base_port + 300 + i);
    std::string peers;
    for (const auto& q : kRegions) {
      if (q == r) continue;
      if (!peers.empty()) peers += ",";
      peers += fmt::format("{}=http://127.0.0.1:{}", q, wan.LinkPort(r, q));
      wan.SetTarget(q, r, "127.0.0.1", port).IgnoreError();
    }
    fs::path data = fs::path(o.work_dir) / "vm" / r;
    fs::create_directories(data);
    auto p = demo::SpawnProcess(
        "vm design " + r,
        {"node", (fs::path(o.baselines_dir) / "express-counter" / "server.js").string()},
        LogPath(o, "vm-" + r),
        {{"PORT", std::to_string(port)},
         {"FLY_REGION", r},
         {"DATA_DIR", data.string()},
         {"PEERS", peers},
         {"REPLICATION_INTERVAL_MS", "100"}});
    if (!p.ok()) return p.status();
    procs.push_back(*p);
    c.targets.push_back(MakeTarget(r, port));
  }
  for (auto& p : procs) {
    auto ready = demo::AwaitOutput(&p, std::regex("listening"), std::chrono::seconds(30));
    if (!ready.ok()) return ready.status();
  }
  if (Status s = wan.Start(); !s.ok()) return s;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::vector<pid_t> pids;
  for (const auto& p : procs) pids.push_back(p.pid);
  Measured m = RunMeasured(c, [&pids] { return MeasureProcesses(pids); });
  wan.Stop();
  return m;
}

double Ms(uint64_t us) { return static_cast<double>(us) / 1000.0; }

std::string Svg(const std::vector<Design>& designs) {
  // Latency CDF per design, log-scaled x axis from 0.01 ms to 10 s.
  const double w = 760, h = 420, left = 60, right = 20, top = 40, bottom = 50;
  const double lo = std::log10(0.01), hi = std::log10(10000.0);
  auto x = [&](double ms) {
    double v = std::log10(std::max(ms, 0.01));
    return left + (std::min(v, hi) - lo) / (hi - lo) * (w - left - right);
  };
  auto y = [&](double q) { return top + (1 - q) * (h - top - bottom); };
  // By design, in kArticleDesigns order: edgestate greens (strong darkest), isolate, vm.
  const char* colors[] = {"#1b7f3b", "#6fbf73", "#a3d9a5", "#0b4220",
                          "#c0392b", "#2c6fbb", "#8e44ad"};
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"22\" font-size=\"15\">Latency distribution per "
      "design, all requests of the eight regions (edgebench article)</text>\n",
      w, h, left);
  for (double ms : {0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0}) {
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#ddd\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
        x(ms), top, h - bottom, h - bottom + 16,
        ms < 1 ? fmt::format("{} ms", ms) : fmt::format("{:g} ms", ms));
  }
  for (double q : {0.0, 0.25, 0.5, 0.75, 0.9, 1.0}) {
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{2}\" y1=\"{1:.1f}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}%</text>\n",
        left, y(q), w - right, left - 6, y(q) + 4, q * 100);
  }
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency (log scale)</text>\n",
                     (left + w - right) / 2, h - 12);
  for (size_t d = 0; d < designs.size(); ++d) {
    const auto& s = designs[d].summary;
    const char* color = colors[d % 7];
    svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{} (global p99 {:.1f} ms)</text>\n",
                       w - right - 250,
                       h - bottom - 12 - 18 * static_cast<double>(designs.size() - 1 - d), color,
                       designs[d].name, s.ok ? s.RegionAverage(0.99) : 0.0);
    if (!s.ok || s.all.count() == 0) continue;
    std::string points;
    for (int i = 1; i <= 400; ++i) {
      double q = i / 400.0;
      points += fmt::format("{:.1f},{:.1f} ", x(Ms(s.all.Percentile(q))), y(q));
    }
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
                       color, points);
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace

int RunArticle(const ArticleOptions& options) {
  ::signal(SIGPIPE, SIG_IGN);
  ArticleOptions o = options;
  if (o.base_port == 0) {
    o.base_port = net::FindFreePortRange(308);
    if (o.base_port == 0) {
      std::fprintf(stderr, "edgebench article: no free range of ports found\n");
      return 1;
    }
  }
  fs::create_directories(o.work_dir);
  std::vector<Design> designs;
  bool failed = false;
  for (const auto& name : o.designs) {
    Design d;
    d.name = name;
    std::fprintf(stderr, "edgebench article: running %s for %.0f s...\n", name.c_str(),
                 static_cast<double>(o.duration.count()) / 1000);
    StatusOr<Measured> r = name == "isolate" ? RunIsolate(o)
                           : name == "vm"    ? RunVm(o)
                                             : RunEdgestate(o, name);
    if (!r.ok()) {
      d.error = r.status().message();
    } else if (!r->summary.ok) {
      d.error = r->summary.error;
    } else {
      d.summary = std::move(r->summary);
      d.resources = r->resources;
      StatusOr<double> cold = ColdStartMs(o, name, static_cast<uint16_t>(o.base_port + 250));
      if (cold.ok()) {
        d.resources.cold_start_ms = *cold;
      } else {
        d.resources.cold_start_error = cold.status().message();
      }
    }
    if (!d.error.empty()) {
      failed = true;
      std::fprintf(stderr, "edgebench article: %s FAILED: %s\n", name.c_str(), d.error.c_str());
    }
    designs.push_back(std::move(d));
  }

  std::printf(
      "\nThe article's benchmark, reproduced: eight regions on one machine over the "
      "emulated WAN, %d VUs (%d per region, %.0f ms pause between requests), %.0f s per "
      "design, read=%d increment=%d, timeout %.0f s. Global percentiles are averaged "
      "over the regions, as in the article.\n\n",
      o.vus, o.vus / 8, o.think_ms, static_cast<double>(o.duration.count()) / 1000, o.mix.read,
      o.mix.increment, static_cast<double>(o.timeout.count()) / 1000);
  std::printf("%-18s %9s %9s %9s %9s %10s %10s %9s %9s %8s\n", "design", "p50 ms", "p95 ms",
              "p99 ms", "stale %", "lost upd.", "session v.", "requests", "req/s", "errors");
  nlohmann::json systems = nlohmann::json::array();
  for (const auto& d : designs) {
    const RunSummary& s = d.summary;
    if (!d.error.empty()) {
      std::printf("%-18s FAILED: %s\n", d.name.c_str(), d.error.c_str());
      systems.push_back({{"name", d.name}, {"error", d.error}});
      continue;
    }
    double stale_pct = s.reads ? 100.0 * s.stale_reads / s.reads : 0;
    std::printf("%-18s %9.2f %9.2f %9.2f %9.2f %10lld %10llu %9llu %9.0f %8llu\n", d.name.c_str(),
                s.RegionAverage(0.5), s.RegionAverage(0.95), s.RegionAverage(0.99), stale_pct,
                static_cast<long long>(s.lost_updates),
                static_cast<unsigned long long>(s.session_violations),
                static_cast<unsigned long long>(s.requests), s.requests / s.seconds,
                static_cast<unsigned long long>(s.errors));
    nlohmann::json regions = nlohmann::json::object();
    for (const auto& [region, h] : s.regions) {
      regions[region] = {{"p50_ms", Ms(h.Percentile(0.5))},
                         {"p95_ms", Ms(h.Percentile(0.95))},
                         {"p99_ms", Ms(h.Percentile(0.99))},
                         {"requests", h.count()}};
    }
    systems.push_back({{"name", d.name},
                       {"p50_ms", s.RegionAverage(0.5)},
                       {"p95_ms", s.RegionAverage(0.95)},
                       {"p99_ms", s.RegionAverage(0.99)},
                       {"all_requests_p50_ms", Ms(s.all.Percentile(0.5))},
                       {"all_requests_p99_ms", Ms(s.all.Percentile(0.99))},
                       {"max_ms", Ms(s.all.max())},
                       {"stale_read_pct", stale_pct},
                       {"stale_reads", s.stale_reads},
                       {"reads", s.reads},
                       {"bound_violations", s.bound_violations},
                       {"staleness_bound_p50_ms", s.staleness_p50_ms},
                       {"staleness_bound_p99_ms", s.staleness_p99_ms},
                       {"lost_updates", s.lost_updates},
                       {"session_violations", s.session_violations},
                       {"waited", s.waited},
                       {"reads_above_max_staleness", s.above_m},
                       {"acknowledged_increments", s.acknowledged},
                       {"settled", s.settled},
                       {"requests", s.requests},
                       {"rps", s.requests / s.seconds},
                       {"errors", s.errors},
                       {"errors_by_kind", s.errors_by_kind},
                       {"linearizability",
                        {{"checked", s.lin_ops > 0},
                         {"operations", s.lin_ops},
                         {"indeterminate", s.lin_indeterminate},
                         {"violations", s.lin_violations},
                         {"unknown", s.lin_unknown}}},
                       {"regions", regions}});
  }
  std::printf(
      "\nWhat each design's servers cost during its run (CPU time from the load's start to its "
      "end, settling included; peak resident memory summed over its processes; price at $%.3g "
      "per CPU second, --price-per-cpu-second); cold start: exec of one fresh server to its "
      "first 200:\n",
      o.price_per_cpu_second);
  std::printf("%-18s %10s %9s %9s %14s %14s %14s\n", "design", "peak MB", "procs", "CPU s",
              "CPU s/1M req", "$/1M req", "cold start ms");
  for (size_t i = 0; i < designs.size(); ++i) {
    const Design& d = designs[i];
    if (!d.error.empty()) continue;
    const Resources& r = d.resources;
    const double per_million =
        d.summary.requests > 0 ? r.cpu_seconds * 1e6 / static_cast<double>(d.summary.requests) : 0;
    const double cost = per_million * o.price_per_cpu_second;
    std::string cold = r.cold_start_ms >= 0 ? fmt::format("{:.1f}", r.cold_start_ms) : "failed";
    std::printf("%-18s %10.1f %9d %9.2f %14.1f %14.6f %14s\n", d.name.c_str(), r.peak_rss_mb,
                r.processes, r.cpu_seconds, per_million, cost, cold.c_str());
    if (!r.cold_start_error.empty()) {
      std::printf("  cold start of %s: %s\n", d.name.c_str(), r.cold_start_error.c_str());
    }
    for (auto& sys : systems) {
      if (sys["name"] != d.name) continue;
      sys["peak_rss_mb"] = r.peak_rss_mb;
      sys["processes"] = r.processes;
      sys["cpu_seconds"] = r.cpu_seconds;
      sys["cpu_seconds_per_million"] = per_million;
      sys["cost_per_million_usd"] = cost;
      sys["cold_start_ms"] =
          r.cold_start_ms >= 0 ? nlohmann::json(r.cold_start_ms) : nlohmann::json(nullptr);
    }
  }
  for (const auto& d : designs) {
    if (!d.error.empty() || d.summary.lin_ops == 0) continue;
    std::printf(
        "%s: %llu operations checked for linearizability (%llu indeterminate): %llu "
        "violations\n",
        d.name.c_str(), static_cast<unsigned long long>(d.summary.lin_ops),
        static_cast<unsigned long long>(d.summary.lin_indeterminate),
        static_cast<unsigned long long>(d.summary.lin_violations));
  }
  std::printf("\np99 per region (ms):\n%-18s", "design");
  for (const auto& r : kRegions) std::printf(" %8s", r.c_str());
  std::printf("\n");
  for (const auto& d : designs) {
    if (!d.error.empty()) continue;
    std::printf("%-18s", d.name.c_str());
    for (const auto& [region, h] : d.summary.regions) std::printf(" %8.1f", Ms(h.Percentile(0.99)));
    std::printf("\n");
  }
  for (const auto& d : designs) {
    // Strong reads carry no staleness bound: they are linearizable (reported above).
    if (d.error.empty() && d.name.rfind("edgestate", 0) == 0 && d.summary.lin_ops == 0) {
      std::printf(
          "\n%s: reads carried a staleness bound of p50 %.0f ms, p99 %.0f ms; reads that missed "
          "an increment older than their bound: %llu; requests held by the node: %llu",
          d.name.c_str(), d.summary.staleness_p50_ms, d.summary.staleness_p99_ms,
          static_cast<unsigned long long>(d.summary.bound_violations),
          static_cast<unsigned long long>(d.summary.waited));
      for (const auto& [kind, n] : d.summary.errors_by_kind) {
        std::printf("; %s %llu", kind.c_str(), static_cast<unsigned long long>(n));
      }
      std::printf(".\n");
    }
  }
  if (!o.json_file.empty()) {
    nlohmann::json j;
    j["systems"] = systems;
    j["config"] = {{"vus", o.vus},
                   {"duration_s", o.duration.count() / 1000.0},
                   {"mix", {{"read", o.mix.read}, {"increment", o.mix.increment}}},
                   {"timeout_s", o.timeout.count() / 1000.0},
                   {"regions", kRegions},
                   {"isolate_home", kHome},
                   {"price_per_cpu_second", o.price_per_cpu_second},
                   {"last_mile_ms", o.last_mile_ms}};
    std::ofstream(o.json_file) << j.dump(2) << "\n";
  }
  if (!o.chart_file.empty()) {
    std::ofstream(o.chart_file) << Svg(designs);
    std::printf("chart: %s\n", o.chart_file.c_str());
  }
  // A design that lost its run fails the command; so does a strong history with no
  // linearization (edgestate's own promise, unlike the stale reads the table reports).
  bool violated = false;
  for (const auto& d : designs) violated |= d.error.empty() && d.summary.lin_violations > 0;
  return failed ? 1 : violated ? 4 : 0;
}

}  // namespace edgestate::bench

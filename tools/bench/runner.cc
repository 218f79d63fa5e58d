// The load runner behind edgebench: a k6-style load tool that knows about regions, stale reads and
// lost updates.
//
//   edgebench --target iad=http://127.0.0.1:8080 --target lhr=http://127.0.0.1:8082
//             --vus 32 --duration 30s --mix read=90,increment=10 --threshold 'p99<100'
//
// Virtual users are spread over the targets (each talks only to its region's node). Closed
// loop by default; --rate R schedules R requests/s in all (open loop) and measures each from
// its scheduled time, so a slow server cannot hide latency (no coordinated omission). After
// the run it waits for the nodes to agree, then reports per-region latency percentiles
// (histograms with <= 1 % error), requests/s, errors by kind, stale reads, lost updates, and,
// with --convergence-probes, the time from an increment's acknowledgment at one region to its
// visibility at each other. Exit code: 0, 1 for an error in the run itself, 2 for bad flags,
// 3 when a --threshold is breached.
#include "bench/runner.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

#include "bench/checker.h"
#include "bench/client.h"
#include "bench/histogram.h"
#include "bench/options.h"
#include "env/clock.h"
#include "lincheck/lincheck.h"
#include "netem/rtt_model.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace edgestate::bench {
namespace {

// How far back the stale-read check keeps acknowledgment times: bounds up to this long are
// checked exactly (see ReadChecker).
constexpr std::chrono::seconds kCheckWindow{300};

std::optional<int64_t> ParseValue(std::string_view body) {
  size_t p = body.find("\"value\":");
  if (p == std::string_view::npos) return std::nullopt;
  p += 8;
  while (p < body.size() && body[p] == ' ') ++p;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(body.data() + p, body.data() + body.size(), v);
  if (ec != std::errc()) return std::nullopt;
  return v;
}

struct RegionStats {
  LatencyHistogram all, reads, increments;
  uint64_t ok = 0, errors = 0;
  std::map<std::string, uint64_t> errors_by_kind;
};

class Runner {
 public:
  explicit Runner(Config c) : c_(std::move(c)), stats_(c_.targets.size()) {
    v1_ = c_.api == "v1" || (c_.api == "auto" && c_.keys > 1);
    if (!c_.consistency.empty()) {
      query_ = "?consistency=" + c_.consistency;
      if (c_.max_staleness_ms >= 0)
        query_ += fmt::format("&max_staleness_ms={}", c_.max_staleness_ms);
    }
    if (c_.key_prefix.empty()) {
      std::random_device rd;
      c_.key_prefix = fmt::format("eb{:08x}-", rd());
    }
    acked_.assign(c_.keys, 0);
    sent_.assign(c_.keys, 0);
    base_.assign(c_.keys, 0);
  }

  RunSummary Run();

 private:
  // The load's requests name the level; the harness's own (base, settle) do not.
  std::string ReadPath(int key, bool with_level = false) const {
    return (v1_ ? fmt::format("/v1/counters/{}{}", c_.key_prefix, key) : std::string("/read")) +
           (with_level ? query_ : std::string());
  }
  std::string IncrementPath(int key, bool with_level = false) const {
    return (v1_ ? fmt::format("/v1/counters/{}{}/increment", c_.key_prefix, key)
                : std::string("/increment")) +
           (with_level ? query_ : std::string());
  }
  int PickKey(std::mt19937_64& rng) const { return picker_.Pick(rng); }
  awaitable<void> Sleep(double ms) { return SleepMs(ioc_, ms); }
  awaitable<void> Vu(int id, uint32_t region);
  void RecordOperation(int key, uint32_t region, bool increment, int64_t sent_ns,
                       int64_t received_ns, const Result& r);
  awaitable<void> Progress();
  awaitable<void> ReadBase();
  awaitable<void> Settle();
  awaitable<void> Probe();
  void Report(RunSummary* out);

  Config c_;
  bool v1_ = false;
  std::string query_;  // "?consistency=..." when a level is named.
  uint64_t session_violations_ = 0;
  uint64_t above_m_ = 0;     // Bounded reads served with a bound above M (or none): must be 0.
  LatencyHistogram waited_;  // How long held requests waited, ms.
  asio::io_context ioc_{1};
  std::vector<RegionStats> stats_;
  KeyPicker picker_{c_.keys, c_.dist, c_.zipf_s};
  // Set once the base values are known. Memory: the reads of the last few seconds and the
  // acknowledgment times of the last kCheckWindow, whatever the run's length.
  std::optional<ReadChecker> checker_;
  // --check linearizability: each key's operations, and the region each was sent to.
  std::vector<std::vector<lincheck::Op>> lin_;
  std::vector<std::vector<uint32_t>> lin_region_;
  std::vector<int64_t> acked_, sent_, base_;
  std::vector<std::vector<int64_t>> final_;
  bool settled_ = false;
  LatencyHistogram staleness_seen_;  // Reported bounds, in ms (the histogram is unit-free).
  int64_t start_ns_ = 0, end_ns_ = 0;
  uint64_t next_slot_ = 0;
  uint64_t done_ = 0;
  std::map<std::pair<uint32_t, uint32_t>, std::vector<double>> convergence_;
  std::string fatal_;
};

awaitable<void> Runner::ReadBase() {
  // Counters start where the first region says; fresh v1 keys start at 0.
  if (v1_) co_return;
  Client client(ioc_, c_.targets[0], c_.timeout, c_.api_key);
  // A linearizability check starts from the linearizable value.
  Result r = co_await client.Do(bhttp::verb::get, ReadPath(0, c_.check_linearizability), "");
  auto v = r.ok ? ParseValue(r.body) : std::nullopt;
  if (!v) {
    fatal_ = fmt::format("cannot read the starting value from {} ({})", c_.targets[0].region,
                         r.ok ? "no value in response" : r.error);
    co_return;
  }
  base_[0] = *v;
}

awaitable<void> Runner::Vu(int id, uint32_t home) {
  // One keep-alive connection per region this VU talks to (its home, and where it hops).
  std::vector<std::unique_ptr<Client>> clients(c_.targets.size());
  std::mt19937_64 rng(c_.seed * 1'000'003 + id);
  const int total_weight = c_.mix.read + c_.mix.increment;
  std::string token;                      // The VU's session token (with c_.sessions).
  std::unordered_map<int, int64_t> seen;  // Highest value of each key this VU saw.
  for (;;) {
    int64_t scheduled;
    if (c_.rate > 0) {
      scheduled =
          start_ns_ + static_cast<int64_t>(static_cast<double>(next_slot_++) * 1e9 / c_.rate);
      if (scheduled >= end_ns_) break;
      int64_t wait = scheduled - RealClock()->MonotonicNanos();
      if (wait > 0) co_await Sleep(static_cast<double>(wait) / 1e6);
    } else {
      scheduled = RealClock()->MonotonicNanos();
      if (scheduled >= end_ns_) break;
    }
    bool increment = std::uniform_int_distribution<int>(1, total_weight)(rng) > c_.mix.read;
    int key = PickKey(rng);
    uint32_t region = home;
    if (c_.hop > 0 && c_.targets.size() > 1 &&
        std::uniform_real_distribution<double>(0, 1)(rng) < c_.hop) {
      // Another region than home, uniformly.
      region = static_cast<uint32_t>(
          std::uniform_int_distribution<size_t>(0, c_.targets.size() - 2)(rng));
      if (region >= home) ++region;
    }
    if (!clients[region])
      clients[region] = std::make_unique<Client>(ioc_, c_.targets[region], c_.timeout, c_.api_key);
    Client& client = *clients[region];
    RegionStats& st = stats_[region];
    co_await Sleep(c_.last_mile_ms);
    int64_t sent_ns = RealClock()->MonotonicNanos();
    if (increment) sent_[key]++;
    // No co_await inside ?: (GCC 12 destroys such temporaries twice).
    Result r;
    std::string_view send_token = c_.sessions ? std::string_view(token) : std::string_view();
    if (increment) {
      r = co_await client.Do(bhttp::verb::post, IncrementPath(key, true), "", send_token);
    } else {
      r = co_await client.Do(bhttp::verb::get, ReadPath(key, true), "", send_token);
    }
    if (r.waited_ms >= 0) {
      waited_.Record(static_cast<uint64_t>(r.waited_ms));
    }
    int64_t received_ns = RealClock()->MonotonicNanos();
    if (c_.check_linearizability) RecordOperation(key, region, increment, sent_ns, received_ns, r);
    co_await Sleep(c_.last_mile_ms);
    uint64_t micros = static_cast<uint64_t>(
        std::max<int64_t>(0, RealClock()->MonotonicNanos() - scheduled) / 1000);
    done_++;
    if (!r.ok) {
      st.errors++;
      st.errors_by_kind[r.error]++;
      st.all.Record(micros);
      if (c_.rate <= 0) co_await Sleep(c_.think_ms);
      continue;
    }
    st.ok++;
    st.all.Record(micros);
    if (c_.sessions && !r.session.empty()) token = std::move(r.session);
    // Session guarantees, as this VU sees them: values only grow, and its own increment returns
    // more than anything it saw before.
    if (auto v = ParseValue(r.body)) {
      auto [it, fresh] = seen.try_emplace(key, *v);
      if (!fresh) {
        if (*v < it->second + (increment ? 1 : 0)) ++session_violations_;
        it->second = std::max(it->second, *v);
      }
    }
    if (increment) {
      st.increments.Record(micros);
      checker_->AddAck(static_cast<uint32_t>(key), received_ns);
      acked_[key]++;
    } else {
      st.reads.Record(micros);
      if (c_.max_staleness_ms >= 0 &&
          (r.staleness_ms < 0 || r.staleness_ms > c_.max_staleness_ms)) {
        ++above_m_;
      }
      if (auto v = ParseValue(r.body)) {
        checker_->AddRead({static_cast<uint32_t>(key), region, sent_ns, *v, r.staleness_ms});
        if (r.staleness_ms >= 0) staleness_seen_.Record(static_cast<uint64_t>(r.staleness_ms));
      } else {
        st.errors_by_kind["bad_body"]++;
      }
    }
    if (c_.rate <= 0) co_await Sleep(c_.think_ms);
  }
}

void Runner::RecordOperation(int key, uint32_t region, bool increment, int64_t sent_ns,
                             int64_t received_ns, const Result& r) {
  lincheck::Op op;
  op.read = !increment;
  op.delta = 1;
  op.invoke_ns = sent_ns;
  op.response_ns = received_ns;
  std::optional<int64_t> v = r.ok ? ParseValue(r.body) : std::nullopt;
  if (v) {
    op.has_value = true;
    op.value = *v;
  } else if (increment && (r.status == 0 || r.status >= 500)) {
    // A timeout, a broken connection or a 503 after the request left: it may have been applied.
    op.response_ns = lincheck::kNever;
  } else {
    return;  // A failed read, or a refused increment: no effect.
  }
  op.id = lin_[key].size();
  lin_[key].push_back(op);
  lin_region_[key].push_back(region);
}

awaitable<void> Runner::Progress() {
  const bool tty = c_.progress && isatty(STDERR_FILENO);
  int64_t last_done = 0;
  // A read is checked once every request sent before it has completed or timed out, so every
  // acknowledgment it could have depended on is known.
  const int64_t check_lag_ns = c_.timeout.count() * 1'000'000 +
                               static_cast<int64_t>(2 * c_.last_mile_ms * 1e6) + 1'000'000'000;
  while (RealClock()->MonotonicNanos() < end_ns_) {
    co_await Sleep(1000);
    checker_->Flush(RealClock()->MonotonicNanos() - check_lag_ns);
    if (!tty) continue;
    double elapsed = static_cast<double>(RealClock()->MonotonicNanos() - start_ns_) / 1e9;
    double total = static_cast<double>(end_ns_ - start_ns_) / 1e9;
    uint64_t errors = 0;
    for (auto& s : stats_) errors += s.errors;
    std::fprintf(stderr, "\r[%5.1fs / %.0fs] %llu requests, %llu/s, %llu errors   ", elapsed, total,
                 static_cast<unsigned long long>(done_),
                 static_cast<unsigned long long>(done_ - last_done),
                 static_cast<unsigned long long>(errors));
    last_done = static_cast<int64_t>(done_);
  }
  if (tty) std::fprintf(stderr, "\r%80s\r", "");
}

awaitable<void> Runner::Settle() {
  // Waits until every region reports the same value for every key that was written.
  std::vector<int> keys;
  for (int k = 0; k < c_.keys; ++k) {
    if (sent_[k] > 0) keys.push_back(k);
  }
  final_.assign(c_.targets.size(), base_);
  std::vector<std::unique_ptr<Client>> clients;
  for (auto& t : c_.targets)
    clients.push_back(std::make_unique<Client>(ioc_, t, c_.timeout, c_.api_key));
  int64_t deadline = RealClock()->MonotonicNanos() + c_.settle.count() * 1'000'000;
  for (;;) {
    bool agree = true;
    for (int k : keys) {
      std::optional<int64_t> first;
      for (size_t r = 0; r < c_.targets.size(); ++r) {
        Result res = co_await clients[r]->Do(bhttp::verb::get, ReadPath(k), "");
        auto v = res.ok ? ParseValue(res.body) : std::nullopt;
        if (!v) {
          agree = false;
          continue;
        }
        final_[r][k] = *v;
        if (!first) first = *v;
        if (*v != *first) agree = false;
      }
    }
    if (agree) {
      settled_ = true;
      co_return;
    }
    if (RealClock()->MonotonicNanos() > deadline) co_return;
    co_await Sleep(50);
  }
}

awaitable<void> Runner::Probe() {
  std::vector<std::unique_ptr<Client>> clients;
  for (auto& t : c_.targets)
    clients.push_back(std::make_unique<Client>(ioc_, t, c_.timeout, c_.api_key));
  const std::string key_name = c_.key_prefix + "probe";
  for (int i = 0; i < c_.convergence_probes; ++i) {
    for (uint32_t origin = 0; origin < c_.targets.size(); ++origin) {
      std::string inc = v1_ ? fmt::format("/v1/counters/{}/increment", key_name) : "/increment";
      std::string read = v1_ ? fmt::format("/v1/counters/{}", key_name) : "/read";
      Result r = co_await clients[origin]->Do(bhttp::verb::post, inc, "");
      auto v = r.ok ? ParseValue(r.body) : std::nullopt;
      if (!v) continue;
      int64_t acked = RealClock()->MonotonicNanos();
      std::vector<bool> seen(c_.targets.size(), false);
      seen[origin] = true;
      size_t remaining = c_.targets.size() - 1;
      int64_t deadline = acked + c_.settle.count() * 1'000'000;
      while (remaining > 0 && RealClock()->MonotonicNanos() < deadline) {
        for (uint32_t d = 0; d < c_.targets.size(); ++d) {
          if (seen[d]) continue;
          Result rr = co_await clients[d]->Do(bhttp::verb::get, read, "");
          auto dv = rr.ok ? ParseValue(rr.body) : std::nullopt;
          if (dv && *dv >= *v) {
            seen[d] = true;
            --remaining;
            convergence_[{origin, d}].push_back(
                static_cast<double>(RealClock()->MonotonicNanos() - acked) / 1e6);
          }
        }
        if (remaining > 0) co_await Sleep(1);
      }
    }
  }
}

void Runner::Report(RunSummary* summary) {
  FILE* out = c_.print_report ? stdout : nullptr;
  auto print = [out](const char* fmt, auto... args) {
    if (out) std::fprintf(out, fmt, args...);
  };
  const double secs = static_cast<double>(end_ns_ - start_ns_) / 1e9;
  LatencyHistogram all;
  uint64_t ok = 0, errors = 0;
  std::map<std::string, uint64_t> kinds;
  for (auto& s : stats_) {
    all.Merge(s.all);
    ok += s.ok;
    errors += s.errors;
    for (auto& [k, n] : s.errors_by_kind) kinds[k] += n;
  }
  checker_->FlushAll();
  const ReadCheck& rc = checker_->result();
  LossCheck lc = CheckFinal(base_, acked_, sent_, final_);
  int64_t lost = 0;
  for (int64_t l : lc.lost_by_region) lost = std::max(lost, l);

  auto ms = [](uint64_t us) { return static_cast<double>(us) / 1000.0; };
  print(
      "edgebench: %zu regions, %d VUs, %.1f s, mix read=%d increment=%d, %d key(s) (%s), "
      "%s, api %s\n\n",
      c_.targets.size(), c_.vus, secs, c_.mix.read, c_.mix.increment, c_.keys, c_.dist.c_str(),
      c_.rate > 0 ? fmt::format("open loop at {} req/s", c_.rate).c_str() : "closed loop",
      v1_ ? "v1" : "article");
  print("%-6s %9s %8s %8s %8s %8s %8s %9s %7s %7s\n", "region", "requests", "req/s", "p50 ms",
        "p90 ms", "p95 ms", "p99 ms", "max ms", "errors", "stale");
  nlohmann::json regions = nlohmann::json::object();
  auto row = [&](const std::string& name, const LatencyHistogram& h, uint64_t errs, uint64_t stale,
                 uint64_t nreads) {
    print("%-6s %9llu %8.0f %8.2f %8.2f %8.2f %8.2f %9.2f %7llu %6.2f%%\n", name.c_str(),
          static_cast<unsigned long long>(h.count()), h.count() / secs, ms(h.Percentile(0.5)),
          ms(h.Percentile(0.9)), ms(h.Percentile(0.95)), ms(h.Percentile(0.99)), ms(h.max()),
          static_cast<unsigned long long>(errs), nreads ? 100.0 * stale / nreads : 0.0);
    return nlohmann::json{{"requests", h.count()},
                          {"rps", h.count() / secs},
                          {"p50_ms", ms(h.Percentile(0.5))},
                          {"p90_ms", ms(h.Percentile(0.9))},
                          {"p95_ms", ms(h.Percentile(0.95))},
                          {"p99_ms", ms(h.Percentile(0.99))},
                          {"max_ms", ms(h.max())},
                          {"errors", errs},
                          {"reads", nreads},
                          {"stale_reads", stale}};
  };
  for (size_t r = 0; r < c_.targets.size(); ++r) {
    regions[c_.targets[r].region] = row(c_.targets[r].region, stats_[r].all, stats_[r].errors,
                                        rc.stale_by_region[r], rc.reads_by_region[r]);
    regions[c_.targets[r].region]["lost_updates"] =
        lc.lost_by_region.empty() ? 0 : lc.lost_by_region[r];
  }
  nlohmann::json overall = row("all", all, errors, rc.stale, rc.reads);
  print("\n%-6s %9s %8s %8s %8s   %9s %8s %8s %8s\n", "region", "reads", "p50 ms", "p95 ms",
        "p99 ms", "increments", "p50 ms", "p95 ms", "p99 ms");
  for (size_t r = 0; r < c_.targets.size(); ++r) {
    const auto& rd = stats_[r].reads;
    const auto& in = stats_[r].increments;
    print("%-6s %9llu %8.2f %8.2f %8.2f   %9llu %8.2f %8.2f %8.2f\n", c_.targets[r].region.c_str(),
          static_cast<unsigned long long>(rd.count()), ms(rd.Percentile(0.5)),
          ms(rd.Percentile(0.95)), ms(rd.Percentile(0.99)),
          static_cast<unsigned long long>(in.count()), ms(in.Percentile(0.5)),
          ms(in.Percentile(0.95)), ms(in.Percentile(0.99)));
    auto& jr = regions[c_.targets[r].region];
    jr["read"] = {{"count", rd.count()},
                  {"p50_ms", ms(rd.Percentile(0.5))},
                  {"p95_ms", ms(rd.Percentile(0.95))},
                  {"p99_ms", ms(rd.Percentile(0.99))}};
    jr["increment"] = {{"count", in.count()},
                       {"p50_ms", ms(in.Percentile(0.5))},
                       {"p95_ms", ms(in.Percentile(0.95))},
                       {"p99_ms", ms(in.Percentile(0.99))}};
  }
  const double error_rate = all.count() ? static_cast<double>(errors) / all.count() : 0;
  const double stale_rate = rc.reads ? static_cast<double>(rc.stale) / rc.reads : 0;
  print("\n");
  const LatencyHistogram& st = staleness_seen_;
  print(
      "stale reads: %llu of %llu (%.3f %%), %llu increments missed; reads outside their "
      "reported bound: %llu\n",
      static_cast<unsigned long long>(rc.stale), static_cast<unsigned long long>(rc.reads),
      100.0 * stale_rate, static_cast<unsigned long long>(rc.missed_increments),
      static_cast<unsigned long long>(rc.bound_violations));
  if (checker_->bounds_unchecked() > 0) {
    print("stale reads whose bound reached back more than %lld s (not checked against it): %llu\n",
          static_cast<long long>(kCheckWindow.count()),
          static_cast<unsigned long long>(checker_->bounds_unchecked()));
  }
  if (st.count() > 0) {
    print("reported staleness bound: p50 %llu ms, p99 %llu ms, max %llu ms (%llu reads)\n",
          static_cast<unsigned long long>(st.Percentile(0.5)),
          static_cast<unsigned long long>(st.Percentile(0.99)),
          static_cast<unsigned long long>(st.max()), static_cast<unsigned long long>(st.count()));
  }
  int64_t total_acked = 0, total_sent = 0;
  for (int k = 0; k < c_.keys; ++k) {
    total_acked += acked_[k];
    total_sent += sent_[k];
  }
  print("increments: %lld acknowledged, %lld sent; after %s: lost updates %lld",
        static_cast<long long>(total_acked), static_cast<long long>(total_sent),
        settled_ ? "the regions agreed" : "the settle timeout (regions still DISAGREE)",
        static_cast<long long>(lost));
  nlohmann::json lost_json = nlohmann::json::object();
  for (size_t r = 0; r < c_.targets.size() && r < lc.lost_by_region.size(); ++r) {
    lost_json[c_.targets[r].region] = lc.lost_by_region[r];
    if (lc.lost_by_region[r] > 0)
      print(" [%s: %lld]", c_.targets[r].region.c_str(),
            static_cast<long long>(lc.lost_by_region[r]));
  }
  print("\n");
  if (!c_.consistency.empty() || c_.sessions || c_.hop > 0) {
    print(
        "consistency %s%s, %s, %.0f %% of requests to another region: session violations %llu; "
        "held by the node %llu (%.2f %%; wait p50 %llu ms, p99 %llu ms)\n",
        c_.consistency.empty() ? "(node default)" : c_.consistency.c_str(),
        c_.max_staleness_ms >= 0 ? fmt::format(" M={} ms", c_.max_staleness_ms).c_str() : "",
        c_.sessions ? "session tokens kept" : "no session tokens", 100.0 * c_.hop,
        static_cast<unsigned long long>(session_violations_),
        static_cast<unsigned long long>(waited_.count()),
        all.count() ? 100.0 * waited_.count() / all.count() : 0.0,
        static_cast<unsigned long long>(waited_.Percentile(0.5)),
        static_cast<unsigned long long>(waited_.Percentile(0.99)));
    if (c_.max_staleness_ms >= 0) {
      print("bounded reads served with a bound above M: %llu\n",
            static_cast<unsigned long long>(above_m_));
    }
  } else {
    print("session violations (a VU saw a counter go below a value it had seen): %llu\n",
          static_cast<unsigned long long>(session_violations_));
  }
  if (!kinds.empty()) {
    print("errors by kind:");
    for (auto& [k, n] : kinds) print(" %s=%llu", k.c_str(), static_cast<unsigned long long>(n));
    print("\n");
  }

  nlohmann::json conv = nlohmann::json::array();
  if (!convergence_.empty()) {
    std::optional<netem::RttModel> model;
    if (!c_.rtt_file.empty()) {
      auto m = netem::RttModel::LoadOrDefault(c_.rtt_file);
      if (m.ok()) model = std::move(m).value();
    }
    print("\nconvergence (ack at origin -> visible at destination), ms:\n");
    print("%-6s %-6s %8s %8s %8s %s\n", "from", "to", "p50", "max", "n",
          model ? "model one-way .. one-way+interval" : "");
    for (auto& [pair, v] : convergence_) {
      const auto& from = c_.targets[pair.first].region;
      const auto& to = c_.targets[pair.second].region;
      nlohmann::json e{{"from", from},
                       {"to", to},
                       {"p50_ms", SamplePercentile(v, 0.5)},
                       {"max_ms", SamplePercentile(v, 1.0)},
                       {"samples", v.size()}};
      std::string model_text;
      if (model && model->Has(from) && model->Has(to)) {
        double one_way = model->RttMs(from, to) / 2;
        e["model_one_way_ms"] = one_way;
        e["within_model"] = SamplePercentile(v, 1.0) <= one_way + c_.interval_ms + 20;
        model_text = fmt::format("{:.0f} .. {:.0f}{}", one_way, one_way + c_.interval_ms,
                                 e["within_model"].get<bool>() ? "" : "  OUTSIDE");
      }
      print("%-6s %-6s %8.1f %8.1f %8zu %s\n", from.c_str(), to.c_str(), SamplePercentile(v, 0.5),
            SamplePercentile(v, 1.0), v.size(), model_text.c_str());
      conv.push_back(std::move(e));
    }
  }

  nlohmann::json th = nlohmann::json::array();
  bool breached = false;
  for (const Threshold& t : c_.thresholds) {
    double observed = 0;
    if (t.metric == "p50")
      observed = ms(all.Percentile(0.5));
    else if (t.metric == "p90")
      observed = ms(all.Percentile(0.9));
    else if (t.metric == "p95")
      observed = ms(all.Percentile(0.95));
    else if (t.metric == "p99")
      observed = ms(all.Percentile(0.99));
    else if (t.metric == "max")
      observed = ms(all.max());
    else if (t.metric == "error_rate")
      observed = error_rate;
    else if (t.metric == "stale_rate")
      observed = stale_rate;
    else if (t.metric == "lost")
      observed = static_cast<double>(lost);
    bool holds = ThresholdHolds(t, observed);
    breached |= !holds;
    print("threshold %-16s observed %-10.3f %s\n", t.text.c_str(), observed,
          holds ? "ok" : "BREACHED");
    th.push_back({{"threshold", t.text}, {"observed", observed}, {"ok", holds}});
  }
  if (breached) summary->exit_code = 3;
  nlohmann::json lin_json;
  if (c_.check_linearizability) {
    nlohmann::json bad = nlohmann::json::array();
    std::unique_ptr<std::ofstream> history;
    if (!c_.history_file.empty()) history = std::make_unique<std::ofstream>(c_.history_file);
    for (size_t k = 0; k < lin_.size(); ++k) {
      const auto& ops = lin_[k];
      if (ops.empty()) continue;
      summary->lin_ops += ops.size();
      for (size_t i = 0; i < ops.size(); ++i) {
        const lincheck::Op& o = ops[i];
        if (o.response_ns == lincheck::kNever) ++summary->lin_indeterminate;
        if (history) {
          nlohmann::json e = {
              {"key", k},
              {"id", o.id},
              {"f", o.read ? "read" : "inc"},
              {"region", c_.targets[lin_region_[k][i]].region},
              {"invoke_ns", o.invoke_ns},
              {"response_ns", o.response_ns == lincheck::kNever ? nlohmann::json()
                                                                : nlohmann::json(o.response_ns)},
              {"value", o.has_value ? nlohmann::json(o.value) : nlohmann::json()}};
          *history << e.dump() << "\n";
        }
      }
      lincheck::Result res = lincheck::Check(ops, base_[k]);
      if (res.verdict == lincheck::Verdict::kOk) continue;
      if (res.verdict == lincheck::Verdict::kViolation) {
        ++summary->lin_violations;
      } else {
        ++summary->lin_unknown;
      }
      if (bad.size() < 20) {
        bad.push_back({{"key", k},
                       {"verdict", lincheck::VerdictName(res.verdict)},
                       {"explanation", res.explanation},
                       {"offending", res.offending}});
      }
      print("linearizability: key %zu: %s: %s\n", k, lincheck::VerdictName(res.verdict),
            res.explanation.substr(0, 2000).c_str());
    }
    print("linearizability: %llu operations on %zu key(s) (%llu indeterminate): %s\n",
          static_cast<unsigned long long>(summary->lin_ops), lin_.size(),
          static_cast<unsigned long long>(summary->lin_indeterminate),
          summary->lin_violations > 0
              ? fmt::format("{} key(s) VIOLATE linearizability", summary->lin_violations).c_str()
          : summary->lin_unknown > 0
              ? fmt::format("{} key(s) undecided (search budget)", summary->lin_unknown).c_str()
              : "linearizable");
    if (summary->lin_violations > 0) summary->exit_code = 4;
    lin_json = {{"operations", summary->lin_ops},
                {"indeterminate", summary->lin_indeterminate},
                {"violations", summary->lin_violations},
                {"unknown", summary->lin_unknown},
                {"failures", std::move(bad)}};
  }
  summary->ok = true;
  summary->seconds = secs;
  summary->all = all;
  for (size_t r = 0; r < c_.targets.size(); ++r) {
    summary->regions.emplace_back(c_.targets[r].region, stats_[r].all);
  }
  summary->requests = all.count();
  summary->errors = errors;
  summary->reads = rc.reads;
  summary->stale_reads = rc.stale;
  summary->bound_violations = rc.bound_violations;
  summary->lost_updates = lost;
  summary->acknowledged = total_acked;
  summary->settled = settled_;
  summary->staleness_p50_ms = static_cast<double>(st.Percentile(0.5));
  summary->staleness_p99_ms = static_cast<double>(st.Percentile(0.99));
  summary->errors_by_kind = kinds;
  summary->session_violations = session_violations_;
  summary->above_m = above_m_;
  summary->waited = waited_.count();

  if (!c_.json_file.empty()) {
    nlohmann::json j;
    j["config"] = {{"vus", c_.vus},
                   {"duration_s", secs},
                   {"mix", {{"read", c_.mix.read}, {"increment", c_.mix.increment}}},
                   {"keys", c_.keys},
                   {"distribution", c_.dist},
                   {"rate", c_.rate},
                   {"last_mile_ms", c_.last_mile_ms},
                   {"api", v1_ ? "v1" : "article"}};
    j["overall"] = overall;
    j["overall"]["error_rate"] = error_rate;
    j["overall"]["stale_rate"] = stale_rate;
    j["regions"] = regions;
    j["errors_by_kind"] = kinds;
    j["stale_reads"] = {{"stale", rc.stale},
                        {"reads", rc.reads},
                        {"missed_increments", rc.missed_increments},
                        {"bound_violations", rc.bound_violations},
                        {"bounds_unchecked", checker_->bounds_unchecked()},
                        {"reported_staleness_p50_ms", st.Percentile(0.5)},
                        {"reported_staleness_p99_ms", st.Percentile(0.99)}};
    j["lost_updates"] = {{"max_over_regions", lost},
                         {"by_region", lost_json},
                         {"acknowledged", total_acked},
                         {"sent", total_sent},
                         {"settled", settled_}};
    j["consistency"] = {{"level", c_.consistency},
                        {"max_staleness_ms", c_.max_staleness_ms},
                        {"session_tokens", c_.sessions},
                        {"hop_share", c_.hop},
                        {"session_violations", session_violations_},
                        {"reads_above_max_staleness", above_m_},
                        {"waited", waited_.count()},
                        {"waited_p50_ms", waited_.Percentile(0.5)},
                        {"waited_p99_ms", waited_.Percentile(0.99)}};
    j["convergence"] = conv;
    if (c_.check_linearizability) j["linearizability"] = lin_json;
    j["thresholds"] = th;
    std::ofstream(c_.json_file) << j.dump(2) << "\n";
  }
}

RunSummary Runner::Run() {
  RunSummary summary;
  asio::co_spawn(
      ioc_,
      [this]() -> awaitable<void> {
        co_await ReadBase();
        if (!fatal_.empty()) co_return;
        lin_.resize(static_cast<size_t>(c_.keys));
        lin_region_.resize(static_cast<size_t>(c_.keys));
        checker_.emplace(base_, static_cast<uint32_t>(c_.targets.size()),
                         std::chrono::nanoseconds(kCheckWindow).count());
        start_ns_ = RealClock()->MonotonicNanos();
        end_ns_ = start_ns_ + c_.duration.count() * 1'000'000;
        for (int i = 0; i < c_.vus; ++i) {
          uint32_t region = static_cast<uint32_t>(i % c_.targets.size());
          asio::co_spawn(ioc_, Vu(i, region), asio::detached);
        }
        co_await Progress();
        // Let the VUs' last requests finish (bounded by the request timeout).
        co_await Sleep(static_cast<double>(c_.timeout.count()) / 10);
      },
      asio::detached);
  ioc_.run();
  if (!fatal_.empty()) {
    summary.error = fatal_;
    summary.exit_code = 1;
    return summary;
  }
  end_ns_ = std::max(end_ns_, start_ns_ + 1);
  ioc_.restart();
  asio::co_spawn(
      ioc_,
      [this]() -> awaitable<void> {
        co_await Settle();
        if (c_.convergence_probes > 0) co_await Probe();
      },
      asio::detached);
  ioc_.run();
  Report(&summary);
  return summary;
}

}  // namespace

double RunSummary::RegionAverage(double q) const {
  double sum = 0;
  int n = 0;
  for (const auto& [region, h] : regions) {
    if (h.count() == 0) continue;
    sum += static_cast<double>(h.Percentile(q)) / 1000.0;
    ++n;
  }
  return n ? sum / n : 0;
}

RunSummary RunLoad(Config config) {
  Runner runner(std::move(config));
  return runner.Run();
}

}  // namespace edgestate::bench

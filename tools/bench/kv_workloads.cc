#include "bench/kv_workloads.h"

#include <fmt/format.h>

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
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <unordered_set>
#include <utility>

#include "bench/client.h"
#include "bench/histogram.h"
#include "common/strings.h"
#include "env/clock.h"
#include "netem/rtt_model.h"
#include "replication/peers.h"

namespace edgestate::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;

constexpr size_t kMaxExamples = 10;

int64_t WallMs() { return RealClock()->NowUnixMillis(); }
int64_t MonoNs() { return RealClock()->MonotonicNanos(); }
double Ms(uint64_t micros) { return static_cast<double>(micros) / 1000.0; }

nlohmann::json HistogramJson(const LatencyHistogram& h) {
  return {{"count", h.count()},
          {"p50_ms", Ms(h.Percentile(0.5))},
          {"p95_ms", Ms(h.Percentile(0.95))},
          {"p99_ms", Ms(h.Percentile(0.99))},
          {"max_ms", Ms(h.max())}};
}

// What both workloads share: the clock window, the hop choice, latency per operation and per
// region, errors, and the violations found.
class KvRun {
 protected:
  explicit KvRun(Config c) : c_(std::move(c)), regions_(c_.targets.size()) {
    if (c_.key_prefix.empty()) {
      std::random_device rd;
      c_.key_prefix = fmt::format("eb{:08x}-", rd());
    }
    if (!c_.consistency.empty()) {
      level_ = "consistency=" + c_.consistency;
      if (c_.max_staleness_ms >= 0)
        level_ += fmt::format("&max_staleness_ms={}", c_.max_staleness_ms);
    }
  }

  struct RegionStats {
    LatencyHistogram all;
    uint64_t errors = 0;
  };
  // A VU's connections (one per region it talks to) and random state.
  struct VuState {
    std::vector<std::unique_ptr<Client>> clients;
    std::mt19937_64 rng;
    uint32_t home = 0;
    std::string token;  // Session token, kept and sent back when c_.sessions.
  };
  // One timed request.
  struct Timed {
    Result r;
    uint32_t region = 0;
    int64_t invoke_ms = 0;    // Wall clock when it was sent.
    int64_t response_ms = 0;  // Wall clock when its answer arrived.
  };

  VuState NewVu(int id, uint32_t home) const {
    VuState v;
    v.clients.resize(c_.targets.size());
    v.rng.seed(c_.seed * 1'000'003 + static_cast<uint64_t>(id));
    v.home = home;
    return v;
  }

  bool Running() const { return MonoNs() < end_ns_; }

  awaitable<void> Sleep(double ms) { return SleepMs(ioc_, ms); }

  // Home, or (with probability c_.hop) another region, uniformly.
  uint32_t PickRegion(VuState& v) const {
    if (c_.hop <= 0 || c_.targets.size() < 2 ||
        std::uniform_real_distribution<double>(0, 1)(v.rng) >= c_.hop) {
      return v.home;
    }
    auto r = static_cast<uint32_t>(
        std::uniform_int_distribution<size_t>(0, c_.targets.size() - 2)(v.rng));
    return r >= v.home ? r + 1 : r;
  }

  // Sends one request of operation `op` to `region`, records its latency and error (any answer
  // but 2xx and `expected`), and keeps the session token it returns.
  awaitable<Timed> Send(VuState& v, uint32_t region, const std::string& op, bhttp::verb verb,
                        const std::string& path, const std::string& body = {},
                        const Headers* extra = nullptr, unsigned expected = 404) {
    if (!v.clients[region]) {
      v.clients[region] =
          std::make_unique<Client>(ioc_, c_.targets[region], c_.timeout, c_.api_key);
    }
    Timed t;
    t.region = region;
    co_await Sleep(c_.last_mile_ms);
    const int64_t start = MonoNs();
    t.invoke_ms = WallMs();
    std::string_view token = c_.sessions ? std::string_view(v.token) : std::string_view();
    t.r = co_await v.clients[region]->Do(verb, path, body, token, extra);
    t.response_ms = WallMs();
    co_await Sleep(c_.last_mile_ms);
    const auto micros = static_cast<uint64_t>(std::max<int64_t>(0, MonoNs() - start) / 1000);
    ops_[op].Record(micros);
    regions_[region].all.Record(micros);
    ++requests_;
    // `expected` is an answer, not an error (404: a logged-out session; 504: not cached).
    if (!t.r.ok && t.r.status != expected) {
      ++regions_[region].errors;
      ++errors_by_kind_[t.r.error];
    }
    if (c_.sessions && !t.r.session.empty()) v.token = t.r.session;
    co_return t;
  }

  void Violation(const std::string& kind, std::string detail) {
    ++violations_[kind];
    if (examples_.size() < kMaxExamples) examples_.push_back(kind + ": " + std::move(detail));
  }

  uint64_t Violations() const {
    uint64_t n = 0;
    for (const auto& [kind, count] : violations_) n += count;
    return n;
  }

  std::string Query(std::string_view extra = {}) const {
    std::string q;
    for (std::string_view part : {std::string_view(level_), extra}) {
      if (part.empty()) continue;
      q += q.empty() ? "?" : "&";
      q += part;
    }
    return q;
  }

  // Opens the load's window: VUs run until `duration` from now.
  void Start() {
    start_ns_ = MonoNs();
    end_ns_ = start_ns_ + c_.duration.count() * 1'000'000;
  }
  double Seconds() const {
    return static_cast<double>(std::max<int64_t>(end_ns_ - start_ns_, 1)) / 1e9;
  }

  // Prints the per-operation and per-region tables, errors and violations; returns them as
  // JSON members.
  nlohmann::json ReportCommon(FILE* out) const {
    auto print = [out](const std::string& s) {
      if (out) std::fputs(s.c_str(), out);
    };
    nlohmann::json j;
    print(fmt::format("{:<8} {:>9} {:>8} {:>8} {:>8} {:>9}\n", "op", "requests", "p50 ms", "p95 ms",
                      "p99 ms", "max ms"));
    for (const auto& [op, h] : ops_) {
      print(fmt::format("{:<8} {:>9} {:>8.2f} {:>8.2f} {:>8.2f} {:>9.2f}\n", op, h.count(),
                        Ms(h.Percentile(0.5)), Ms(h.Percentile(0.95)), Ms(h.Percentile(0.99)),
                        Ms(h.max())));
      j["operations"][op] = HistogramJson(h);
    }
    print(fmt::format("\n{:<8} {:>9} {:>8} {:>8} {:>8} {:>7}\n", "region", "requests", "req/s",
                      "p50 ms", "p99 ms", "errors"));
    for (size_t r = 0; r < regions_.size(); ++r) {
      const LatencyHistogram& h = regions_[r].all;
      print(fmt::format("{:<8} {:>9} {:>8.0f} {:>8.2f} {:>8.2f} {:>7}\n", c_.targets[r].region,
                        h.count(), static_cast<double>(h.count()) / Seconds(),
                        Ms(h.Percentile(0.5)), Ms(h.Percentile(0.99)), regions_[r].errors));
      j["regions"][c_.targets[r].region] = HistogramJson(h);
      j["regions"][c_.targets[r].region]["errors"] = regions_[r].errors;
    }
    j["requests"] = requests_;
    uint64_t errors = 0;
    for (const RegionStats& r : regions_) errors += r.errors;
    j["errors"] = errors;
    j["errors_by_kind"] = errors_by_kind_;
    if (!errors_by_kind_.empty()) {
      std::string line = "errors by kind:";
      for (const auto& [k, n] : errors_by_kind_) line += fmt::format(" {}={}", k, n);
      print(line + "\n");
    }
    j["violations"] = {{"total", Violations()}, {"by_kind", violations_}, {"examples", examples_}};
    print(fmt::format("\nviolations: {}", Violations()));
    for (const auto& [k, n] : violations_) print(fmt::format(" [{}: {}]", k, n));
    print("\n");
    for (const std::string& e : examples_) print("  " + e + "\n");
    return j;
  }

  int Finish(nlohmann::json j) const {
    if (!c_.json_file.empty()) std::ofstream(c_.json_file) << j.dump(2) << "\n";
    return Violations() > 0 ? 4 : 0;
  }

  Config c_;
  asio::io_context ioc_{1};
  std::string level_;  // "consistency=..." when a level is named.
  int64_t start_ns_ = 0, end_ns_ = 0;
  std::map<std::string, LatencyHistogram> ops_;
  std::vector<RegionStats> regions_;
  uint64_t requests_ = 0;
  std::map<std::string, uint64_t> errors_by_kind_;
  std::map<std::string, uint64_t> violations_;
  std::vector<std::string> examples_;
};

// ---------------------------------------------------------------------------------------------
// session

class SessionRun : public KvRun {
 public:
  explicit SessionRun(Config c) : KvRun(std::move(c)) {}

  int Run() {
    Start();
    for (int i = 0; i < c_.vus; ++i) {
      asio::co_spawn(ioc_, Vu(i, static_cast<uint32_t>(i % c_.targets.size())), asio::detached);
    }
    ioc_.run();
    return Report();
  }

 private:
  // What the VU knows of its session key: it is the key's only writer.
  struct Session {
    std::string key;
    int64_t acked_w = -1;  // The last acknowledged write's number (-1: none).
    bool deleted = false;  // Its delete was acknowledged.
    // Bounds on the key's expiry: at least exp_lo (from acknowledged writes: the node's clock
    // at the write was past the request's sending), at most exp_hi (any write, acknowledged or
    // not, was stamped before its answer came back).
    int64_t exp_lo = 0, exp_hi = 0;
    // A write got no answer at all (timeout, broken connection): the node may still apply it
    // at any later time, so nothing more is checked on this session.
    bool unknown = false;
  };

  std::string Body(int vu, int n, int64_t w) const {
    return fmt::format(R"({{"vu":{},"login":{},"w":{}}})", vu, n, w);
  }

  // A write that may or may not have been applied: the node answered 5xx or not at all.
  static bool Indeterminate(const Result& r) { return r.status == 0 || r.status >= 500; }

  void Wrote(Session& s, const Timed& t, std::optional<int64_t> w) {
    const int64_t ttl = c_.session_ttl_ms;
    if (t.r.status == 0 && !s.unknown) {
      s.unknown = true;
      ++unchecked_;
    }
    if (t.r.ok || Indeterminate(t.r)) s.exp_hi = std::max(s.exp_hi, t.response_ms + ttl);
    if (!t.r.ok) return;
    s.exp_lo = std::max(s.exp_lo, t.invoke_ms + ttl);
    if (w) s.acked_w = *w;
  }

  // Checks a read (or a touch's answer) of the VU's own key.
  void Check(const Session& s, const Timed& t, bool touch) {
    const std::string where = fmt::format("{} at {}", s.key, c_.targets[t.region].region);
    if (!touch && (t.r.ok || t.r.status == 404)) ++(t.r.ok ? reads_found_ : reads_gone_);
    if (s.unknown) return;
    if (t.r.status == 404) {
      if (!s.deleted && s.acked_w >= 0 && t.response_ms < s.exp_lo) {
        Violation("session_missing",
                  fmt::format("{}: 404 from a {} {} ms before the session's earliest expiry", where,
                              touch ? "touch" : "read", s.exp_lo - t.response_ms));
      }
      return;
    }
    if (!t.r.ok) return;
    if (s.deleted) {
      Violation("read_after_delete", where + ": served after the VU's acknowledged delete");
    }
    if (t.invoke_ms > s.exp_hi) {
      Violation("past_expiry", fmt::format("{}: served {} ms after the latest possible expiry",
                                           where, t.invoke_ms - s.exp_hi));
    }
    if (!t.r.expires_at.empty()) {
      std::optional<int64_t> at = ParseIso8601Millis(t.r.expires_at);
      if (at && *at < t.invoke_ms) {
        Violation("past_expiry", fmt::format("{}: served with Edgestate-Expires-At {} before the "
                                             "request",
                                             where, t.r.expires_at));
      }
    }
    if (touch) return;
    auto j = nlohmann::json::parse(t.r.body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("w") || !j["w"].is_number_integer()) {
      Violation("bad_body", where + ": " + t.r.body.substr(0, 80));
      return;
    }
    const int64_t w = j["w"].get<int64_t>();
    if (w < s.acked_w) {
      Violation(
          "older_than_own_write",
          fmt::format("{}: write #{} served after #{} was acknowledged", where, w, s.acked_w));
    }
  }

  awaitable<void> Vu(int id, uint32_t home) {
    VuState v = NewVu(id, home);
    const std::string ttl = fmt::format("ttl_ms={}", c_.session_ttl_ms);
    for (int n = 1; Running(); ++n) {
      Session s;
      s.key = fmt::format("{}s{}-{}", c_.key_prefix, id, n);
      const std::string path = "/v1/kv/" + s.key;
      ++logins_;
      Timed t = co_await Send(v, PickRegion(v), "login", bhttp::verb::put, path + Query(ttl),
                              Body(id, n, 0));
      Wrote(s, t, 0);
      int64_t w = 0;
      for (int i = 0; i < c_.session_requests && Running(); ++i) {
        const int roll = std::uniform_int_distribution<int>(0, 99)(v.rng);
        const uint32_t region = PickRegion(v);
        if (roll < c_.touch_pct) {
          t = co_await Send(v, region, "touch", bhttp::verb::post, path + "/touch" + Query(ttl));
          Check(s, t, /*touch=*/true);
          Wrote(s, t, std::nullopt);
        } else if (roll < c_.touch_pct + c_.update_pct) {
          ++w;
          t = co_await Send(v, region, "update", bhttp::verb::put, path + Query(ttl),
                            Body(id, n, w));
          Wrote(s, t, w);
        } else {
          t = co_await Send(v, region, "get", bhttp::verb::get, path + Query());
          Check(s, t, /*touch=*/false);
        }
        co_await Sleep(c_.think_ms);
      }
      t = co_await Send(v, PickRegion(v), "logout", bhttp::verb::delete_, path + Query());
      if (!t.r.ok) continue;  // Not known to be deleted: nothing more to check.
      s.deleted = true;
      ++logouts_;
      t = co_await Send(v, PickRegion(v), "get", bhttp::verb::get, path + Query());
      Check(s, t, /*touch=*/false);
      co_await Sleep(c_.think_ms);
    }
  }

  int Report() {
    FILE* out = c_.print_report ? stdout : nullptr;
    if (out) {
      std::fprintf(out,
                   "edgebench session: %zu regions, %d VUs, %.1f s, TTL %lld ms, %d requests per "
                   "login (touch %d %%, update %d %%), consistency %s, %.0f %% of requests to "
                   "another region\n\n",
                   c_.targets.size(), c_.vus, Seconds(), static_cast<long long>(c_.session_ttl_ms),
                   c_.session_requests, c_.touch_pct, c_.update_pct,
                   c_.consistency.empty() ? "(node default)" : c_.consistency.c_str(),
                   100.0 * c_.hop);
    }
    nlohmann::json j = ReportCommon(out);
    if (out) {
      std::fprintf(out,
                   "logins %llu, logouts acknowledged %llu; reads answered 200 %llu, 404 %llu "
                   "(expired, logged out, or missing); sessions unchecked after a write got no "
                   "answer %llu\n",
                   static_cast<unsigned long long>(logins_),
                   static_cast<unsigned long long>(logouts_),
                   static_cast<unsigned long long>(reads_found_),
                   static_cast<unsigned long long>(reads_gone_),
                   static_cast<unsigned long long>(unchecked_));
    }
    j["workload"] = "session";
    j["config"] = {{"vus", c_.vus},
                   {"duration_s", Seconds()},
                   {"session_ttl_ms", c_.session_ttl_ms},
                   {"session_requests", c_.session_requests},
                   {"touch_pct", c_.touch_pct},
                   {"update_pct", c_.update_pct},
                   {"consistency", c_.consistency},
                   {"session_tokens", c_.sessions},
                   {"hop_share", c_.hop}};
    j["logins"] = logins_;
    j["logouts"] = logouts_;
    j["reads"] = {{"found", reads_found_}, {"gone", reads_gone_}};
    j["sessions_unchecked"] = unchecked_;
    return Finish(std::move(j));
  }

  uint64_t logins_ = 0, logouts_ = 0, reads_found_ = 0, reads_gone_ = 0, unchecked_ = 0;
};

// ---------------------------------------------------------------------------------------------
// cache

// The origin edgebench serves: GET /KEY answers "v<version> KEY" padded to value_bytes, with
// Cache-Control: max-age, and counts requests per key and per region (from Via).
class Origin {
 public:
  Origin(asio::io_context& ioc, const Config& c) : ioc_(ioc), c_(c), acceptor_(ioc) {}

  Status Listen() {
    auto hp = replication::ParseHostPort(c_.origin_listen);
    if (!hp.ok()) return hp.status();
    error_code ec;
    auto address = asio::ip::make_address(hp->host, ec);
    if (ec) return Status::InvalidArgument("--origin needs an IP address, not " + hp->host);
    tcp::endpoint ep(address, hp->port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      return Status::Unavailable("cannot listen on " + c_.origin_listen + ": " + ec.message());
    asio::co_spawn(ioc_, Accept(), asio::detached);
    return Status::Ok();
  }

  void Stop() {
    error_code ec;
    acceptor_.close(ec);
  }

  uint64_t Version(const std::string& key) const {
    auto it = versions_.find(key);
    return it == versions_.end() ? 1 : it->second;
  }
  uint64_t Bump(const std::string& key) { return versions_[key] = Version(key) + 1; }

  // Requests per region (by Via), and per (key, region).
  const std::map<std::string, uint64_t>& by_region() const { return by_region_; }
  const std::map<std::pair<std::string, std::string>, uint64_t>& by_key_region() const {
    return by_key_region_;
  }
  uint64_t total() const { return total_; }

 private:
  awaitable<void> Accept() {
    for (;;) {
      error_code ec;
      tcp::socket s(ioc_);
      co_await acceptor_.async_accept(s, redirect_error(use_awaitable, ec));
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
      if (ec) continue;
      asio::co_spawn(ioc_, Serve(std::move(s)), asio::detached);
    }
  }

  awaitable<void> Serve(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
      error_code ec;
      bhttp::request<bhttp::empty_body> req;
      stream.expires_after(std::chrono::seconds(30));
      co_await bhttp::async_read(stream, buffer, req, redirect_error(use_awaitable, ec));
      if (ec) co_return;
      std::string key(req.target().substr(req.target().empty() ? 0 : 1));
      std::string region = "?";
      if (auto it = req.find(bhttp::field::via); it != req.end()) {
        std::string_view via = it->value();
        constexpr std::string_view kPrefix = "1.1 edgestate-";
        if (via.starts_with(kPrefix)) region = std::string(via.substr(kPrefix.size()));
      }
      ++total_;
      ++by_region_[region];
      ++by_key_region_[{key, region}];
      bhttp::response<bhttp::string_body> res{bhttp::status::ok, req.version()};
      res.set(bhttp::field::content_type, "text/plain");
      res.set(bhttp::field::cache_control, fmt::format("max-age={}", c_.origin_max_age_s));
      std::string body = fmt::format("v{} {}", Version(key), key);
      if (body.size() < c_.value_bytes) body.resize(c_.value_bytes, '.');
      res.body() = std::move(body);
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      co_await bhttp::async_write(stream, res, redirect_error(use_awaitable, ec));
      if (ec || !res.keep_alive()) co_return;
    }
  }

  asio::io_context& ioc_;
  const Config& c_;
  tcp::acceptor acceptor_;
  std::unordered_map<std::string, uint64_t> versions_;
  std::map<std::string, uint64_t> by_region_;
  std::map<std::pair<std::string, std::string>, uint64_t> by_key_region_;
  uint64_t total_ = 0;
};

// "v<version> KEY....": the version when the body is KEY's, nullopt otherwise.
std::optional<uint64_t> VersionOf(std::string_view body, std::string_view key) {
  if (!body.starts_with('v')) return std::nullopt;
  uint64_t v = 0;
  auto [p, e] = std::from_chars(body.data() + 1, body.data() + body.size(), v);
  if (e != std::errc()) return std::nullopt;
  std::string_view rest(p, body.data() + body.size() - p);
  if (!rest.starts_with(' ') || !rest.substr(1).starts_with(key)) return std::nullopt;
  rest = rest.substr(1 + key.size());
  if (!rest.empty() && rest.front() != '.') return std::nullopt;
  return v;
}

class CacheRun : public KvRun {
 public:
  explicit CacheRun(Config c)
      : KvRun(std::move(c)),
        origin_(ioc_, c_),
        stats_(c_.targets.size()),
        picker_(c_.keys, c_.dist, c_.zipf_s) {}

  int Run() {
    if (Status s = origin_.Listen(); !s.ok()) {
      std::fprintf(stderr, "edgebench: %s\n", s.message().c_str());
      return 1;
    }
    Start();
    for (int i = 0; i < c_.vus; ++i) {
      asio::co_spawn(ioc_, Vu(i, static_cast<uint32_t>(i % c_.targets.size())), asio::detached);
    }
    asio::co_spawn(ioc_, AfterLoad(), asio::detached);
    ioc_.run();
    return Report();
  }

 private:
  struct CacheStats {
    uint64_t hits = 0, misses = 0;
    std::unordered_set<int> keys;  // Keys requested here.
  };

  std::string KeyName(int k) const { return fmt::format("{}k{}", c_.key_prefix, k); }

  awaitable<void> Vu(int id, uint32_t home) {
    VuState v = NewVu(id, home);
    while (Running()) {
      const int k = picker_.Pick(v.rng);
      const std::string key = KeyName(k);
      const uint32_t region = PickRegion(v);
      Timed t = co_await Send(v, region, "get", bhttp::verb::get, "/v1/cache/" + key + Query());
      if (t.r.ok) {
        CacheStats& st = stats_[region];
        st.keys.insert(k);
        (t.r.cache == "hit" ? st.hits : st.misses)++;
        if (!VersionOf(t.r.body, key)) {
          Violation("wrong_value",
                    fmt::format("{} at {}: {:.40}", key, c_.targets[region].region, t.r.body));
        }
      }
      co_await Sleep(c_.think_ms);
    }
    ++vus_done_;
  }

  // After the load: the purge probes, then the origin closes.
  awaitable<void> AfterLoad() {
    while (vus_done_ < c_.vus) co_await Sleep(20);
    VuState v = NewVu(-1, 0);
    for (int i = 0; i < c_.purge_probes; ++i) co_await PurgeProbe(v, i);
    origin_.Stop();
  }

  // Reads `key` at `region` until a hit; returns its version (nullopt: never a hit).
  awaitable<std::optional<uint64_t>> Warm(VuState& v, uint32_t region, const std::string& key) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      Timed t = co_await Send(v, region, "warm", bhttp::verb::get, "/v1/cache/" + key);
      if (t.r.ok && t.r.cache == "hit") co_return VersionOf(t.r.body, key);
    }
    co_return std::nullopt;
  }

  awaitable<void> PurgeProbe(VuState& v, int i) {
    const std::string key = fmt::format("{}purge-{}", c_.key_prefix, i);
    const auto from = static_cast<uint32_t>(i % static_cast<int>(c_.targets.size()));
    for (uint32_t d = 0; d < c_.targets.size(); ++d) {
      std::optional<uint64_t> cached = co_await Warm(v, d, key);
      if (!cached) {
        ++probes_failed_;
        co_return;
      }
    }
    const uint64_t fresh = origin_.Bump(key);
    // Half by key, half by prefix (the key itself as the prefix).
    Timed t;
    if (i % 2 == 0) {
      t = co_await Send(v, from, "purge", bhttp::verb::delete_, "/v1/cache/" + key);
    } else {
      const std::string body = nlohmann::json{{"prefix", key}}.dump();
      t = co_await Send(v, from, "purge", bhttp::verb::post, "/v1/cache/purge", body);
    }
    if (!t.r.ok) {
      ++probes_failed_;
      co_return;
    }
    const int64_t acked = MonoNs();
    // Every region polled at once, each on its own connection, so one region's answer does not
    // delay the detection at another.
    std::vector<bool> done(c_.targets.size(), false);
    size_t remaining = c_.targets.size();
    size_t polling = c_.targets.size();
    for (uint32_t d = 0; d < c_.targets.size(); ++d) {
      asio::co_spawn(ioc_, PollUntil(v, d, key, fresh, from, acked, &done),
                     [&remaining, &polling, &done, d](std::exception_ptr) {
                       --polling;
                       if (done[d]) --remaining;
                     });
    }
    while (polling > 0) co_await Sleep(1);
    if (remaining > 0) {
      Violation("purge_not_propagated",
                fmt::format("{}: {} region(s) still served the old version {} s after the purge",
                            key, remaining, c_.settle.count() / 1000));
    }
    // No region goes back to the old version (a late fill, an old replica).
    for (uint32_t d = 0; d < c_.targets.size(); ++d) {
      Timed r = co_await Send(v, d, "poll", bhttp::verb::get, "/v1/cache/" + key);
      std::optional<uint64_t> version = r.r.ok ? VersionOf(r.r.body, key) : std::nullopt;
      if (done[d] && version && *version < fresh) {
        Violation("purge_undone", fmt::format("{} at {}: v{} again after v{}", key,
                                              c_.targets[d].region, *version, fresh));
      }
    }
  }

  // Reads `key` at region d until its cache no longer holds the old version (or the settle time
  // passes), and records how long after `acked` that was.
  awaitable<void> PollUntil(VuState& v, uint32_t d, std::string key, uint64_t fresh, uint32_t from,
                            int64_t acked, std::vector<bool>* done) {
    const int64_t deadline = acked + c_.settle.count() * 1'000'000;
    // only-if-cached: the region's cache alone answers (504 once the purge removed the entry),
    // so the time measured is the purge's, not an origin fetch's.
    static const Headers kCachedOnly = {{"Cache-Control", "only-if-cached"}};
    while (MonoNs() < deadline) {
      Timed r = co_await Send(v, d, "poll", bhttp::verb::get, "/v1/cache/" + key, {}, &kCachedOnly,
                              /*expected=*/504);
      std::optional<uint64_t> version = r.r.ok ? VersionOf(r.r.body, key) : std::nullopt;
      if (r.r.status == 504 || (version && *version >= fresh)) {
        (*done)[d] = true;
        propagation_[{from, d}].push_back(static_cast<double>(MonoNs() - acked) / 1e6);
        co_return;
      }
      co_await Sleep(1);
    }
  }

  int Report() {
    FILE* out = c_.print_report ? stdout : nullptr;
    auto print = [out](const std::string& s) {
      if (out) std::fputs(s.c_str(), out);
    };
    print(fmt::format(
        "edgebench cache: {} regions, {} VUs, {:.1f} s, {} keys ({}{}), origin max-age {} s, "
        "{} B values\n\n",
        c_.targets.size(), c_.vus, Seconds(), c_.keys, c_.dist,
        c_.dist == "zipf" ? fmt::format(" s={}", c_.zipf_s) : std::string(), c_.origin_max_age_s,
        c_.value_bytes));
    nlohmann::json j = ReportCommon(out);
    j["workload"] = "cache";
    j["config"] = {{"vus", c_.vus},
                   {"duration_s", Seconds()},
                   {"keys", c_.keys},
                   {"distribution", c_.dist},
                   {"zipf_s", c_.zipf_s},
                   {"origin_max_age_s", c_.origin_max_age_s},
                   {"value_bytes", c_.value_bytes},
                   {"hop_share", c_.hop}};
    // Hit ratio and origin requests per key, per region.
    print(fmt::format("\n{:<8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9}\n", "region", "hits", "misses",
                      "hit %", "keys", "origin", "per key"));
    uint64_t hits = 0, misses = 0;
    uint64_t max_per_key = 0;
    for (const auto& [kr, n] : origin_.by_key_region()) {
      if (kr.first.find("purge-") == std::string::npos) max_per_key = std::max(max_per_key, n);
    }
    double per_key_sum = 0;
    int per_key_regions = 0;
    for (size_t r = 0; r < c_.targets.size(); ++r) {
      const CacheStats& st = stats_[r];
      const std::string& name = c_.targets[r].region;
      hits += st.hits;
      misses += st.misses;
      // Origin requests for the load's keys (the purge probes' are counted apart).
      uint64_t fetched = 0;
      for (const auto& [kr, n] : origin_.by_key_region()) {
        if (kr.second == name && kr.first.find("purge-") == std::string::npos) fetched += n;
      }
      const double per_key =
          st.keys.empty() ? 0 : static_cast<double>(fetched) / static_cast<double>(st.keys.size());
      if (!st.keys.empty()) {
        per_key_sum += per_key;
        ++per_key_regions;
      }
      const uint64_t total = st.hits + st.misses;
      const double ratio = total ? static_cast<double>(st.hits) / static_cast<double>(total) : 0;
      print(fmt::format("{:<8} {:>9} {:>9} {:>7.2f}% {:>8} {:>9} {:>9.3f}\n", name, st.hits,
                        st.misses, 100 * ratio, st.keys.size(), fetched, per_key));
      j["regions"][name]["hits"] = st.hits;
      j["regions"][name]["misses"] = st.misses;
      j["regions"][name]["hit_ratio"] = ratio;
      j["regions"][name]["keys_requested"] = st.keys.size();
      j["regions"][name]["origin_requests"] = fetched;
      j["regions"][name]["origin_requests_per_key"] = per_key;
    }
    const double ratio =
        hits + misses ? static_cast<double>(hits) / static_cast<double>(hits + misses) : 0;
    const double per_key = per_key_regions ? per_key_sum / per_key_regions : 0;
    print(fmt::format(
        "hit ratio {:.2f} % ({} hits, {} misses); origin requests per key per region: mean {:.3f}, "
        "max {}; origin requests in all {}\n",
        100 * ratio, hits, misses, per_key, max_per_key, origin_.total()));
    j["hit_ratio"] = ratio;
    j["origin"] = {{"requests", origin_.total()},
                   {"by_region", origin_.by_region()},
                   {"requests_per_key_per_region", per_key},
                   {"max_requests_per_key_per_region", max_per_key}};
    // Purge propagation.
    std::optional<netem::RttModel> model;
    if (!c_.rtt_file.empty()) {
      auto m = netem::RttModel::LoadOrDefault(c_.rtt_file);
      if (m.ok()) model = std::move(m).value();
    }
    std::vector<double> all;
    nlohmann::json pairs = nlohmann::json::array();
    bool within = true;
    if (!propagation_.empty()) {
      print(
          fmt::format("\npurge propagation (purge acknowledged -> the region serves the new "
                      "version), ms:\n{:<6} {:<6} {:>8} {:>8} {}\n",
                      "from", "to", "p50", "max", model ? "model one-way + interval + 20" : ""));
    }
    for (const auto& [pair, v] : propagation_) {
      all.insert(all.end(), v.begin(), v.end());
      const std::string& from = c_.targets[pair.first].region;
      const std::string& to = c_.targets[pair.second].region;
      nlohmann::json e{{"from", from},
                       {"to", to},
                       {"p50_ms", SamplePercentile(v, 0.5)},
                       {"max_ms", SamplePercentile(v, 1.0)},
                       {"samples", v.size()}};
      std::string model_text;
      if (model && model->Has(from) && model->Has(to)) {
        const double limit = model->RttMs(from, to) / 2 + c_.interval_ms + 20;
        e["model_limit_ms"] = limit;
        e["within_model"] = SamplePercentile(v, 1.0) <= limit;
        within &= e["within_model"].get<bool>();
        model_text =
            fmt::format("{:.0f}{}", limit, e["within_model"].get<bool>() ? "" : "  OUTSIDE");
      }
      print(fmt::format("{:<6} {:<6} {:>8.1f} {:>8.1f} {}\n", from, to, SamplePercentile(v, 0.5),
                        SamplePercentile(v, 1.0), model_text));
      pairs.push_back(std::move(e));
    }
    if (!all.empty()) {
      print(fmt::format(
          "purges timed: {} ({} failed); propagation p50 {:.1f} ms, p99 {:.1f} ms, "
          "max {:.1f} ms{}\n",
          c_.purge_probes - probes_failed_, probes_failed_, SamplePercentile(all, 0.5),
          SamplePercentile(all, 0.99), SamplePercentile(all, 1.0),
          model ? (within ? "; every pair within the model" : "; OUTSIDE the model") : ""));
    }
    j["purge"] = {{"probes", c_.purge_probes},
                  {"failed", probes_failed_},
                  {"p50_ms", SamplePercentile(all, 0.5)},
                  {"p99_ms", SamplePercentile(all, 0.99)},
                  {"max_ms", SamplePercentile(all, 1.0)},
                  {"pairs", pairs}};
    if (model) j["purge"]["within_model"] = within;
    return Finish(std::move(j));
  }

  Origin origin_;
  std::vector<CacheStats> stats_;
  KeyPicker picker_;
  int vus_done_ = 0;
  int probes_failed_ = 0;
  std::map<std::pair<uint32_t, uint32_t>, std::vector<double>> propagation_;
};

}  // namespace

int RunSessionWorkload(Config config) {
  SessionRun run(std::move(config));
  return run.Run();
}

int RunCacheWorkload(Config config) {
  CacheRun run(std::move(config));
  return run.Run();
}

}  // namespace edgestate::bench

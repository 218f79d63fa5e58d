#include "http/origin.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/thread_name.h"
#include "crdt/lww_register.h"

namespace edgestate::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::awaitable;
using asio::use_awaitable;
using asio::ip::tcp;

StatusOr<OriginUrl> ParseOriginUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) {
    return Status::InvalidArgument("the cache origin must be an http:// URL");
  }
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  while (path.ends_with('/')) path.remove_suffix(1);
  if (path.find_first_of("?#") != std::string_view::npos) {
    return Status::InvalidArgument("the cache origin URL may not carry a query or fragment");
  }
  OriginUrl out;
  if (authority.starts_with('[')) {  // [IPv6]:port
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return Status::InvalidArgument("unclosed [ in origin");
    out.host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty()) {
      if (authority[0] != ':') return Status::InvalidArgument("junk after ] in origin");
      out.port = std::string(authority.substr(1));
    }
  } else {
    size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) out.port = std::string(authority.substr(colon + 1));
  }
  if (out.host.empty()) return Status::InvalidArgument("the cache origin URL has no host");
  unsigned port = 0;
  auto [p, ec] = std::from_chars(out.port.data(), out.port.data() + out.port.size(), port);
  if (ec != std::errc() || p != out.port.data() + out.port.size() || port == 0 || port > 65535) {
    return Status::InvalidArgument("the cache origin URL has a bad port");
  }
  out.base_path = std::string(path);
  return out;
}

CachePolicy PolicyFor(std::string_view cache_control, int64_t default_ttl_ms) {
  std::optional<int64_t> s_maxage, max_age;
  while (!cache_control.empty()) {
    size_t comma = cache_control.find(',');
    std::string_view d = cache_control.substr(0, comma);
    cache_control =
        comma == std::string_view::npos ? std::string_view() : cache_control.substr(comma + 1);
    while (!d.empty() && (d.front() == ' ' || d.front() == '\t')) d.remove_prefix(1);
    while (!d.empty() && (d.back() == ' ' || d.back() == '\t')) d.remove_suffix(1);
    std::string lower(d.substr(0, d.find('=')));
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower == "no-store" || lower == "private") return CachePolicy{false, 0};
    if (lower != "s-maxage" && lower != "max-age") continue;
    size_t eq = d.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view v = d.substr(eq + 1);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    int64_t seconds = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), seconds);
    if (p != v.data() + v.size() || seconds < 0) continue;  // Malformed: ignored (RFC 9111).
    if (ec == std::errc::result_out_of_range)
      seconds = INT64_MAX / 1000;
    else if (ec != std::errc())
      continue;
    (lower == "s-maxage" ? s_maxage : max_age) = seconds;
  }
  std::optional<int64_t> seconds = s_maxage ? s_maxage : max_age;
  if (seconds) {
    if (*seconds == 0) return CachePolicy{false, 0};
    return CachePolicy{true, std::min<int64_t>(*seconds, crdt::kMaxTtlMs / 1000) * 1000};
  }
  if (default_ttl_ms <= 0) return CachePolicy{false, 0};
  return CachePolicy{true, std::min<int64_t>(default_ttl_ms, crdt::kMaxTtlMs)};
}

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  // "." and ".." would be dot segments, which the origin may resolve: /base/.. is not the key.
  if (s == ".") return "%2E";
  if (s == "..") return "%2E%2E";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

namespace {
// How long after a stored fill a new miss of its key reads the cache again instead of fetching:
// far longer than a local read takes to reach Fetch, far shorter than any useful TTL.
constexpr std::chrono::milliseconds kRecentFill{1000};
constexpr size_t kMaxRecent = 100'000;
}  // namespace

struct OriginClient::Impl {
  OriginOptions options;
  OriginUrl url;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  // One key's fetch: the callers waiting for its result, then (once it succeeded, until
  // Release) the callers held for the fill to be stored. I/O thread only.
  struct Flight {
    uint64_t id = 0;
    std::string key;
    std::vector<Callback> waiting;
  };
  uint64_t next_flight = 1;
  // Each key's current flight (new misses join it); a purge detaches it (Invalidate).
  std::map<std::string, std::shared_ptr<Flight>, std::less<>> flights;
  // Flights whose fetch succeeded, until their Release (current or detached).
  std::unordered_map<uint64_t, std::shared_ptr<Flight>> fetched;
  // Keys whose fill was stored lately, oldest first (see Fetch). I/O thread only.
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> recent_order;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> recent;
  Counter* ok = nullptr;
  Counter* not_found = nullptr;
  Counter* timeout = nullptr;
  Counter* failed = nullptr;
  Counter* joined = nullptr;
  Histogram* seconds = nullptr;

  awaitable<StatusOr<OriginResponse>> Get(std::string key) {
    beast::tcp_stream stream(co_await asio::this_coro::executor);
    stream.expires_after(options.timeout);
    boost::system::error_code ec;
    tcp::resolver resolver(co_await asio::this_coro::executor);
    auto endpoints = co_await resolver.async_resolve(url.host, url.port,
                                                     asio::redirect_error(use_awaitable, ec));
    if (ec) co_return Status::Unavailable("cannot resolve the origin: " + ec.message());
    co_await stream.async_connect(endpoints, asio::redirect_error(use_awaitable, ec));
    if (ec == beast::error::timeout) co_return Status::DeadlineExceeded("origin connect timed out");
    if (ec) co_return Status::Unavailable("cannot connect to the origin: " + ec.message());
    bhttp::request<bhttp::empty_body> req(bhttp::verb::get,
                                          url.base_path + "/" + PercentEncode(key), 11);
    req.set(bhttp::field::host, url.host);
    req.set(bhttp::field::user_agent, "edgestate");
    req.set(bhttp::field::via, options.region.empty() ? std::string("1.1 edgestate")
                                                      : "1.1 edgestate-" + options.region);
    co_await bhttp::async_write(stream, req, asio::redirect_error(use_awaitable, ec));
    if (ec == beast::error::timeout) co_return Status::DeadlineExceeded("origin timed out");
    if (ec) co_return Status::Unavailable("writing to the origin failed: " + ec.message());
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(options.max_body_bytes);
    co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (ec == beast::error::timeout) {
      co_return Status::DeadlineExceeded(
          fmt::format("the origin did not answer within {} ms", options.timeout.count()));
    }
    if (ec == bhttp::error::body_limit) {
      co_return Status::Unavailable(
          fmt::format("the origin's response exceeds {} bytes", options.max_body_bytes));
    }
    if (ec) co_return Status::Unavailable("reading the origin's response failed: " + ec.message());
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    auto& res = parser.get();
    if (res.result() == bhttp::status::not_found) {
      co_return Status::NotFound("the origin has no such key");
    }
    if (res.result() != bhttp::status::ok) {
      co_return Status::Unavailable(fmt::format("the origin answered {}", res.result_int()));
    }
    OriginResponse out;
    out.body = std::move(res.body());
    if (auto it = res.find(bhttp::field::content_type); it != res.end()) {
      out.content_type = std::string(it->value());
    }
    if (auto it = res.find(bhttp::field::cache_control); it != res.end()) {
      out.cache_control = std::string(it->value());
    }
    co_return out;
  }

  // Drops what is no longer recent (and the oldest beyond kMaxRecent).
  void Forget(std::chrono::steady_clock::time_point now) {
    while (!recent_order.empty() &&
           (now - recent_order.front().first >= kRecentFill || recent_order.size() > kMaxRecent)) {
      auto it = recent.find(recent_order.front().second);
      if (it != recent.end() && it->second == recent_order.front().first) recent.erase(it);
      recent_order.pop_front();
    }
  }
  // On the I/O thread.
  void Start(std::string key, bool refetch, Callback done) {
    Forget(std::chrono::steady_clock::now());
    if (!refetch && !flights.contains(key) && recent.contains(key)) {
      // It missed just before the fill landed: read the cache again.
      joined->Inc();
      return done(Status::Aborted("the fill was just stored: read the cache again"), false);
    }
    std::shared_ptr<Flight>& f = flights[key];
    if (f) {
      joined->Inc();
      f->waiting.push_back(std::move(done));
      return;
    }
    f = std::make_shared<Flight>();
    f->id = next_flight++;
    f->key = std::move(key);
    f->waiting.push_back(std::move(done));
    asio::co_spawn(ioc, Run(f), asio::detached);
  }

  // A purge of `pattern` ("=key" or "*prefix") is being applied: flights of the keys it covers
  // stop taking new callers (those who asked before the purge still get their result; the fill
  // is refused by the keyspace), so a miss after the purge fetches afresh.
  void Invalidate(const std::string& pattern) {
    if (pattern.empty()) return;
    const std::string_view target = std::string_view(pattern).substr(1);
    if (pattern[0] == '=') {
      if (auto it = flights.find(target); it != flights.end()) flights.erase(it);
      return;
    }
    for (auto it = flights.lower_bound(target);
         it != flights.end() && std::string_view(it->first).starts_with(target);) {
      it = flights.erase(it);
    }
  }

  awaitable<void> Run(std::shared_ptr<Flight> f) {
    const std::string& key = f->key;
    auto started = std::chrono::steady_clock::now();
    StatusOr<OriginResponse> r = Status::Unavailable("origin fetch failed");
    try {
      r = co_await Get(key);
    } catch (const std::exception& e) {
      r = Status::Unavailable(std::string("origin fetch failed: ") + e.what());
    }
    seconds->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    Counter* outcome = r.ok()                                               ? ok
                       : r.status().code() == StatusCode::kNotFound         ? not_found
                       : r.status().code() == StatusCode::kDeadlineExceeded ? timeout
                                                                            : failed;
    outcome->Inc();
    std::vector<Callback> callers = std::move(f->waiting);
    f->waiting.clear();
    auto current = flights.find(key);
    const bool is_current = current != flights.end() && current->second == f;
    if (r.ok()) {
      r->flight = f->id;
      fetched[f->id] = f;  // Open (holding new callers, while current) until Release.
    } else if (is_current) {
      flights.erase(current);
    }
    bool first = true;
    for (Callback& cb : callers) cb(r, std::exchange(first, false));
  }

  void Release(uint64_t id, bool stored) {
    auto node = fetched.extract(id);
    if (node.empty()) return;
    std::shared_ptr<Flight> f = std::move(node.mapped());
    auto current = flights.find(f->key);
    if (current != flights.end() && current->second == f) {
      flights.erase(current);
      if (stored) {
        const auto now = std::chrono::steady_clock::now();
        Forget(now);
        recent[f->key] = now;
        recent_order.emplace_back(now, f->key);
      }
    }
    for (Callback& cb : f->waiting) {
      cb(Status::Aborted("the fill was stored or refused: read the cache again"), false);
    }
  }
};

StatusOr<std::unique_ptr<OriginClient>> OriginClient::Create(OriginOptions options,
                                                             MetricsRegistry* metrics) {
  StatusOr<OriginUrl> url = ParseOriginUrl(options.url);
  if (!url.ok()) return url.status();
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->url = std::move(url).value();
  const std::string kHelp = "Cache fills fetched from the origin, by outcome.";
  impl->ok = &metrics->AddCounter("edgestate_origin_fetches_total", kHelp, "result=\"ok\"");
  impl->not_found =
      &metrics->AddCounter("edgestate_origin_fetches_total", kHelp, "result=\"not_found\"");
  impl->timeout =
      &metrics->AddCounter("edgestate_origin_fetches_total", kHelp, "result=\"timeout\"");
  impl->failed = &metrics->AddCounter("edgestate_origin_fetches_total", kHelp, "result=\"error\"");
  impl->joined = &metrics->AddCounter(
      "edgestate_origin_joined_total",
      "Cache misses that joined a fetch of the same key already in flight (single flight).");
  impl->seconds =
      &metrics->AddHistogram("edgestate_origin_fetch_seconds", "Latency of origin fetches.",
                             ExponentialBuckets(0.001, 2, 14));
  impl->work.emplace(impl->ioc.get_executor());
  impl->thread = std::thread([p = impl.get()] {
    NameThisThread("es-origin");
    p->ioc.run();
  });
  return std::unique_ptr<OriginClient>(new OriginClient(std::move(impl)));
}

OriginClient::OriginClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OriginClient::~OriginClient() {
  impl_->work.reset();
  impl_->ioc.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  std::set<std::shared_ptr<Impl::Flight>> left;
  for (auto& [key, flight] : impl_->flights) left.insert(flight);
  for (auto& [id, flight] : impl_->fetched) left.insert(flight);
  impl_->flights.clear();
  impl_->fetched.clear();
  for (const auto& flight : left) {
    for (Callback& cb : flight->waiting) cb(Status::Unavailable("node is shutting down"), false);
  }
}

void OriginClient::Fetch(std::string key, bool refetch, Callback done) {
  asio::post(impl_->ioc,
             [impl = impl_.get(), key = std::move(key), refetch, done = std::move(done)]() mutable {
               impl->Start(std::move(key), refetch, std::move(done));
             });
}

void OriginClient::Release(uint64_t flight, bool stored) {
  asio::post(impl_->ioc, [impl = impl_.get(), flight, stored] { impl->Release(flight, stored); });
}

void OriginClient::Invalidate(std::string pattern) {
  asio::post(impl_->ioc,
             [impl = impl_.get(), pattern = std::move(pattern)] { impl->Invalidate(pattern); });
}

}  // namespace edgestate::http

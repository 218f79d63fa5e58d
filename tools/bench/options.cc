#include "bench/options.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "common/region.h"
#include "replication/peers.h"

namespace edgestate::bench {

StatusOr<Target> ParseTarget(std::string_view s) {
  size_t eq = s.find('=');
  if (eq == std::string_view::npos) {
    return Status::InvalidArgument(fmt::format("target \"{}\" is not REGION=URL", s));
  }
  Target t;
  t.region = std::string(s.substr(0, eq));
  if (Status st = ValidateRegionName(t.region); !st.ok()) return st;
  std::string_view url = s.substr(eq + 1);
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) {
    return Status::InvalidArgument(fmt::format("target URL \"{}\" must start with http://", url));
  }
  url.remove_prefix(kScheme.size());
  if (url.ends_with("/")) url.remove_suffix(1);
  if (url.find('/') != std::string_view::npos) {
    return Status::InvalidArgument(fmt::format("target URL for {} must not have a path", t.region));
  }
  auto hp = replication::ParseHostPort(url);
  if (!hp.ok()) return hp.status();
  t.host = hp->host;
  t.port = hp->port;
  return t;
}

StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view s) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || v < 0)
    return Status::InvalidArgument(fmt::format("bad duration \"{}\"", s));
  std::string_view unit(ptr, s.data() + s.size() - ptr);
  double ms;
  if (unit.empty() || unit == "s") {
    ms = v * 1000;
  } else if (unit == "ms") {
    ms = v;
  } else if (unit == "m") {
    ms = v * 60'000;
  } else if (unit == "h") {
    ms = v * 3'600'000;
  } else {
    return Status::InvalidArgument(fmt::format("bad duration unit in \"{}\"", s));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

StatusOr<Mix> ParseMix(std::string_view s) {
  Mix m{0, 0};
  while (!s.empty()) {
    size_t comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    s = comma == std::string_view::npos ? std::string_view() : s.substr(comma + 1);
    size_t eq = item.find('=');
    int w = -1;
    if (eq != std::string_view::npos) {
      auto v = item.substr(eq + 1);
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), w);
      if (ec != std::errc() || ptr != v.data() + v.size()) w = -1;
    }
    if (w < 0) return Status::InvalidArgument(fmt::format("bad mix entry \"{}\"", item));
    auto name = item.substr(0, eq);
    if (name == "read") {
      m.read = w;
    } else if (name == "increment") {
      m.increment = w;
    } else {
      return Status::InvalidArgument(fmt::format("unknown operation \"{}\" in mix", name));
    }
  }
  if (m.read + m.increment <= 0) return Status::InvalidArgument("mix has no operations");
  return m;
}

StatusOr<Threshold> ParseThreshold(std::string_view s) {
  Threshold t;
  t.text = std::string(s);
  size_t op = s.find_first_of("<>");
  if (op == std::string_view::npos || op == 0) {
    return Status::InvalidArgument(fmt::format("threshold \"{}\" is not METRIC<VALUE", s));
  }
  t.metric = std::string(s.substr(0, op));
  size_t vstart = op + 1;
  t.op = std::string(1, s[op]);
  if (vstart < s.size() && s[vstart] == '=') {
    t.op += '=';
    ++vstart;
  }
  auto v = s.substr(vstart);
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), t.value);
  if (ec != std::errc() || ptr != v.data() + v.size()) {
    return Status::InvalidArgument(fmt::format("threshold \"{}\" has a bad value", s));
  }
  static const std::vector<std::string> kMetrics = {"p50", "p90",        "p95",        "p99",
                                                    "max", "error_rate", "stale_rate", "lost"};
  if (std::find(kMetrics.begin(), kMetrics.end(), t.metric) == kMetrics.end()) {
    return Status::InvalidArgument(fmt::format(
        "threshold metric \"{}\" is not one of p50 p90 p95 p99 max error_rate stale_rate lost",
        t.metric));
  }
  return t;
}

bool ThresholdHolds(const Threshold& t, double x) {
  if (t.op == "<") return x < t.value;
  if (t.op == "<=") return x <= t.value;
  if (t.op == ">") return x > t.value;
  return x >= t.value;
}

KeyPicker::KeyPicker(int keys, const std::string& dist, double zipf_s) : keys_(std::max(1, keys)) {
  if (dist != "zipf" || keys_ == 1) return;
  double sum = 0;
  for (int k = 1; k <= keys_; ++k) sum += 1.0 / std::pow(k, zipf_s);
  double acc = 0;
  cdf_.reserve(static_cast<size_t>(keys_));
  for (int k = 1; k <= keys_; ++k) {
    acc += 1.0 / std::pow(k, zipf_s) / sum;
    cdf_.push_back(acc);
  }
}

int KeyPicker::Pick(std::mt19937_64& rng) const {
  if (keys_ == 1) return 0;
  if (cdf_.empty()) return std::uniform_int_distribution<int>(0, keys_ - 1)(rng);
  const double u = std::uniform_real_distribution<double>(0, 1)(rng);
  const auto at = std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
  return static_cast<int>(std::min<ptrdiff_t>(at, keys_ - 1));
}

}  // namespace edgestate::bench

// edgebench's option parsing helpers. Pure; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace edgestate::bench {

struct Target {
  std::string region;
  std::string host;
  uint16_t port = 0;
};

// "REGION=http://host:port" (a trailing path is rejected; https is not supported).
StatusOr<Target> ParseTarget(std::string_view s);

// "30s", "500ms", "2m", "1h", or a bare number of seconds.
StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view s);

struct Mix {
  int read = 90;
  int increment = 10;
};
// "read=90,increment=10" (weights, at least one positive).
StatusOr<Mix> ParseMix(std::string_view s);

struct Threshold {
  std::string metric;  // p50 p90 p95 p99 max (ms), error_rate, stale_rate (0..1), lost.
  std::string op;      // < <= > >=
  double value = 0;
  std::string text;
};
StatusOr<Threshold> ParseThreshold(std::string_view s);
bool ThresholdHolds(const Threshold& t, double observed);

// Draws key indexes 0..keys-1: uniformly, or ("zipf") with P(k) proportional to 1/(k+1)^s.
// Immutable after construction; Pick is thread-safe given one generator per thread.
class KeyPicker {
 public:
  KeyPicker(int keys, const std::string& dist, double zipf_s);
  int Pick(std::mt19937_64& rng) const;

 private:
  int keys_;
  std::vector<double> cdf_;  // Zipf only.
};

}  // namespace edgestate::bench

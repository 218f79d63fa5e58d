// Prometheus-style metrics: counters, gauges and fixed-bucket histograms, rendered in the
// Prometheus text exposition format (version 0.0.4).
//
// Registration happens at start-up and returns references to registry-owned objects that stay
// valid for the registry's lifetime; the hot path then touches only relaxed atomics.
//
// Thread-safety: Counter::Inc and Histogram::Observe are lock-free and safe from any thread.
// Registration and Render take the registry's mutex and are safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace edgestate {

class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Histogram {
 public:
  // `upper_bounds` must be strictly increasing; an implicit +Inf bucket follows them.
  explicit Histogram(std::vector<double> upper_bounds);

  void Observe(double v);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> counts;  // Per bucket (not cumulative); size = bounds + 1 (+Inf).
    uint64_t count = 0;
    double sum = 0;
  };
  Snapshot Take() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0};
};

// Exponential bucket bounds: start, start*factor, ... (count values).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // `labels` is the rendered label set without braces, e.g. `route="/read",status="200"`, or
  // empty. Registering the same (name, labels) twice returns the same object.
  Counter& AddCounter(const std::string& name, const std::string& help,
                      const std::string& labels = "");
  Histogram& AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> upper_bounds, const std::string& labels = "");
  // A gauge whose value is read by calling `read` at render time. `read` must be thread-safe
  // and must outlive the registry's last Render call.
  void AddGauge(const std::string& name, const std::string& help, std::function<double()> read,
                const std::string& labels = "");

  // The whole registry in Prometheus text format.
  std::string Render() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Series {
    std::string labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> gauge;
  };
  struct Family {
    std::string name;
    std::string help;
    Kind kind;
    std::vector<std::unique_ptr<Series>> series;
  };
  Family& FamilyFor(const std::string& name, const std::string& help, Kind kind);
  Series* FindSeries(Family& f, const std::string& labels);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;  // GUARDED_BY(mu_), in registration order.
};

}  // namespace edgestate

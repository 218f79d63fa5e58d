#include "common/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace edgestate {

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  s.counts.resize(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    s.counts[i] = buckets_[i].load(std::memory_order_relaxed);
    s.count += s.counts[i];
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  out.reserve(count);
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) out.push_back(v);
  return out;
}

MetricsRegistry::Family& MetricsRegistry::FamilyFor(const std::string& name,
                                                    const std::string& help, Kind kind) {
  for (auto& f : families_) {
    if (f->name == name) {
      if (f->kind != kind)
        throw std::logic_error("metric " + name + " registered twice as two kinds");
      return *f;
    }
  }
  families_.push_back(std::make_unique<Family>(Family{name, help, kind, {}}));
  return *families_.back();
}

MetricsRegistry::Series* MetricsRegistry::FindSeries(Family& f, const std::string& labels) {
  for (auto& s : f.series) {
    if (s->labels == labels) return s.get();
  }
  return nullptr;
}

Counter& MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                     const std::string& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyFor(name, help, Kind::kCounter);
  if (Series* s = FindSeries(f, labels)) return *s->counter;
  auto s = std::make_unique<Series>();
  s->labels = labels;
  s->counter = std::make_unique<Counter>();
  f.series.push_back(std::move(s));
  return *f.series.back()->counter;
}

Histogram& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> upper_bounds,
                                         const std::string& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyFor(name, help, Kind::kHistogram);
  if (Series* s = FindSeries(f, labels)) return *s->histogram;
  auto s = std::make_unique<Series>();
  s->labels = labels;
  s->histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  f.series.push_back(std::move(s));
  return *f.series.back()->histogram;
}

void MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                               std::function<double()> read, const std::string& labels) {
  std::lock_guard lock(mu_);
  Family& f = FamilyFor(name, help, Kind::kGauge);
  if (Series* s = FindSeries(f, labels)) {
    s->gauge = std::move(read);
    return;
  }
  auto s = std::make_unique<Series>();
  s->labels = labels;
  s->gauge = std::move(read);
  f.series.push_back(std::move(s));
}

namespace {

std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return fmt::format("{}", v);
}

std::string Braced(const std::string& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  if (labels.empty()) return "{" + extra + "}";
  if (extra.empty()) return "{" + labels + "}";
  return "{" + labels + "," + extra + "}";
}

}  // namespace

std::string MetricsRegistry::Render() const {
  std::lock_guard lock(mu_);
  std::string out;
  out.reserve(8192);
  for (const auto& f : families_) {
    const char* type = f->kind == Kind::kCounter ? "counter"
                       : f->kind == Kind::kGauge ? "gauge"
                                                 : "histogram";
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f->name, f->help, f->name, type);
    for (const auto& s : f->series) {
      switch (f->kind) {
        case Kind::kCounter:
          out += fmt::format("{}{} {}\n", f->name, Braced(s->labels), s->counter->value());
          break;
        case Kind::kGauge:
          out += fmt::format("{}{} {}\n", f->name, Braced(s->labels), FormatValue(s->gauge()));
          break;
        case Kind::kHistogram: {
          Histogram::Snapshot snap = s->histogram->Take();
          uint64_t cumulative = 0;
          for (size_t i = 0; i < snap.counts.size(); ++i) {
            cumulative += snap.counts[i];
            std::string le = i < snap.upper_bounds.size() ? FormatValue(snap.upper_bounds[i])
                                                          : std::string("+Inf");
            out += fmt::format("{}_bucket{} {}\n", f->name, Braced(s->labels, "le=\"" + le + "\""),
                               cumulative);
          }
          out += fmt::format("{}_sum{} {}\n", f->name, Braced(s->labels), FormatValue(snap.sum));
          out += fmt::format("{}_count{} {}\n", f->name, Braced(s->labels), snap.count);
          break;
        }
      }
    }
  }
  return out;
}

}  // namespace edgestate

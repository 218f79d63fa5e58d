#include "bench/histogram.h"

#include <algorithm>
#include <cmath>

namespace edgestate::bench {

// Values below kSub map one-to-one; above, bucket (e, s) covers
// [(kSub + s) << (e - 1), (kSub + s + 1) << (e - 1)) for e >= 1.
int LatencyHistogram::Index(uint64_t v) {
  if (v < static_cast<uint64_t>(kSub)) return static_cast<int>(v);
  int msb = 63 - __builtin_clzll(v);
  int e = msb - kSubBits + 1;
  if (e > kMaxExponent) return (kMaxExponent + 1) * kSub - 1;
  int s = static_cast<int>((v >> (e - 1)) - kSub);
  return e * kSub + s;
}

uint64_t LatencyHistogram::Lower(int index) {
  int e = index / kSub, s = index % kSub;
  if (e == 0) return static_cast<uint64_t>(s);
  return (static_cast<uint64_t>(kSub) + s) << (e - 1);
}

uint64_t LatencyHistogram::Upper(int index) {
  int e = index / kSub, s = index % kSub;
  if (e == 0) return static_cast<uint64_t>(s);
  return ((static_cast<uint64_t>(kSub) + s + 1) << (e - 1)) - 1;
}

void LatencyHistogram::Record(uint64_t micros) {
  buckets_[Index(micros)]++;
  count_++;
  sum_ += micros;
  max_ = std::max(max_, micros);
  min_ = std::min(min_, micros);
}

void LatencyHistogram::Merge(const LatencyHistogram& o) {
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += o.buckets_[i];
  count_ += o.count_;
  sum_ += o.sum_;
  max_ = std::max(max_, o.max_);
  min_ = std::min(min_, o.min_);
}

uint64_t LatencyHistogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    seen += buckets_[i];
    if (seen >= rank) {
      uint64_t mid = (Lower(static_cast<int>(i)) + Upper(static_cast<int>(i))) / 2;
      return std::clamp(mid, min(), max_);
    }
  }
  return max_;
}

double SamplePercentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(idx, 1, v.size()) - 1];
}

}  // namespace edgestate::bench

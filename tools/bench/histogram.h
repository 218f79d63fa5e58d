// LatencyHistogram: log-linear buckets over microseconds (128 sub-buckets per power of two),
// so every percentile it reports is within 1 % (relative) of the exact value. Fixed memory,
// O(1) record; not thread-safe (one per thread, then Merge).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace edgestate::bench {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 7;  // 128 sub-buckets: relative error <= 1/128.
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kMaxExponent = 40;  // Up to ~2^40 us (12 days).

  void Record(uint64_t micros);
  void Merge(const LatencyHistogram& other);

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0; }
  // The q-quantile (0 < q <= 1) in microseconds: the midpoint of the bucket holding the
  // ceil(q * count)-th smallest value, clamped to [min, max]. 0 when empty.
  uint64_t Percentile(double q) const;

 private:
  static int Index(uint64_t v);
  static uint64_t Lower(int index);
  static uint64_t Upper(int index);

  std::array<uint64_t, (kMaxExponent + 1) * kSub> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
  uint64_t min_ = UINT64_MAX;
};

// The q-quantile (0 < q <= 1) of a small sample, exactly: its ceil(q * n)-th smallest value.
// 0 when empty.
double SamplePercentile(std::vector<double> v, double q);

}  // namespace edgestate::bench

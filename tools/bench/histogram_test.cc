#include "bench/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace edgestate::bench {
namespace {

uint64_t Exact(std::vector<uint64_t> v, double q) {
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::max<size_t>(rank, 1) - 1];
}

void ExpectWithinOnePercent(const std::vector<uint64_t>& values, const char* what) {
  LatencyHistogram h;
  for (uint64_t v : values) h.Record(v);
  for (double q : {0.5, 0.9, 0.95, 0.99, 0.999}) {
    double exact = static_cast<double>(Exact(values, q));
    double got = static_cast<double>(h.Percentile(q));
    EXPECT_LE(std::abs(got - exact), std::max(1.0, exact * 0.01))
        << what << " q=" << q << " exact=" << exact << " got=" << got;
  }
  EXPECT_EQ(h.max(), *std::max_element(values.begin(), values.end()));
  EXPECT_EQ(h.count(), values.size());
}

TEST(LatencyHistogramTest, UniformWithinOnePercent) {
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<uint64_t> d(100, 500'000);
  std::vector<uint64_t> v(200'000);
  for (auto& x : v) x = d(rng);
  ExpectWithinOnePercent(v, "uniform");
}

TEST(LatencyHistogramTest, ExponentialWithinOnePercent) {
  std::mt19937_64 rng(2);
  std::exponential_distribution<double> d(1.0 / 20'000);
  std::vector<uint64_t> v(200'000);
  for (auto& x : v) x = static_cast<uint64_t>(d(rng)) + 1;
  ExpectWithinOnePercent(v, "exponential");
}

TEST(LatencyHistogramTest, LogNormalHeavyTailWithinOnePercent) {
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> d(8.0, 1.5);
  std::vector<uint64_t> v(200'000);
  for (auto& x : v) x = static_cast<uint64_t>(d(rng));
  ExpectWithinOnePercent(v, "lognormal");
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverything) {
  LatencyHistogram a, b, all;
  for (uint64_t i = 1; i < 10'000; ++i) {
    (i % 2 ? a : b).Record(i * 37);
    all.Record(i * 37);
  }
  a.Merge(b);
  for (double q : {0.5, 0.99}) EXPECT_EQ(a.Percentile(q), all.Percentile(q));
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(LatencyHistogram().Percentile(0.5), 0u);
}

}  // namespace
}  // namespace edgestate::bench

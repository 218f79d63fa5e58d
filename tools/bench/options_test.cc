#include "bench/options.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace edgestate::bench {
namespace {

TEST(KeyPickerTest, UniformCoversEveryKeyAndNothingElse) {
  KeyPicker p(10, "uniform", 1.0);
  std::mt19937_64 rng(1);
  std::vector<int> seen(10, 0);
  for (int i = 0; i < 10000; ++i) {
    int k = p.Pick(rng);
    ASSERT_GE(k, 0);
    ASSERT_LT(k, 10);
    ++seen[static_cast<size_t>(k)];
  }
  for (int n : seen) EXPECT_GT(n, 800);  // 1000 expected each.
}

TEST(KeyPickerTest, ZipfFollowsItsLaw) {
  // P(k) = (1/(k+1)^s) / H: with s = 1 over 100 keys, key 0 gets 1/H(100) = 19.3 %, key 1 half
  // of that, and the picks never leave the range.
  KeyPicker p(100, "zipf", 1.0);
  std::mt19937_64 rng(7);
  std::vector<int> seen(100, 0);
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    int k = p.Pick(rng);
    ASSERT_GE(k, 0);
    ASSERT_LT(k, 100);
    ++seen[static_cast<size_t>(k)];
  }
  double h = 0;
  for (int k = 1; k <= 100; ++k) h += 1.0 / k;
  EXPECT_NEAR(static_cast<double>(seen[0]) / n, 1.0 / h, 0.01);
  EXPECT_NEAR(static_cast<double>(seen[1]) / n, 0.5 / h, 0.01);
  EXPECT_GT(seen[0], seen[10]);
}

TEST(KeyPickerTest, OneKeyIsAlwaysKeyZero) {
  for (const char* dist : {"uniform", "zipf"}) {
    KeyPicker p(1, dist, 0.99);
    std::mt19937_64 rng(3);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(p.Pick(rng), 0);
  }
}

}  // namespace
}  // namespace edgestate::bench

#include "consistency/clock_bound.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <vector>

namespace edgestate::consistency {
namespace {

TEST(ClockBoundTest, OffsetFromFourTimestamps) {
  // Peer 25 ms ahead, 40 ms each way, 1 ms to answer.
  OffsetSample s = MeasureOffset(1'000'000, 1'065'000, 1'066'000, 1'081'000);
  EXPECT_EQ(s.offset_us, 25'000);
  EXPECT_EQ(s.delay_us, 80'000);
  // Behind by 7 ms.
  s = MeasureOffset(0, 40'000 - 7'000, 41'000 - 7'000, 81'000);
  EXPECT_EQ(s.offset_us, -7'000);
  EXPECT_TRUE(ClockWithin(s, 10'000));
  EXPECT_FALSE(ClockWithin(s, 5'000));
}

TEST(ClockBoundTest, FilterKeepsTheQuickestOfTheLastEight) {
  ClockFilter f;
  EXPECT_FALSE(f.Best().has_value());
  f.Add({30'000, 200'000});  // Queued: slow and skewed.
  f.Add({1'000, 80'000});
  f.Add({12'000, 120'000});
  EXPECT_EQ(f.Best()->offset_us, 1'000);
  for (int i = 0; i < 8; ++i) f.Add({50'000, 90'000});  // The quick sample ages out.
  EXPECT_EQ(f.Best()->offset_us, 50'000);
}

// One origin, one reader, over simulated true time. The origin's clock runs at `offset_us` plus
// `drift_ppm` from true time; the reader's is true. Writes are acknowledged at random times,
// watermarks travel `one_way_us`; every read checks the bound it would state against the
// writes it holds. Returns the number of reads whose bound was a lie.
struct SimResult {
  int violations = 0;
  int reads = 0;
  int64_t max_bound_us = 0;
  bool clock_trusted = false;
};

SimResult Simulate(int64_t offset_us, double drift_ppm, int64_t max_error_us, uint64_t seed) {
  constexpr int64_t kOneWay = 40'000, kInterval = 100'000, kEnd = 20'000'000;
  std::mt19937_64 rng(seed);
  auto origin_clock = [&](int64_t t) {
    return t + offset_us + static_cast<int64_t>(drift_ppm * 1e-6 * static_cast<double>(t));
  };
  std::vector<int64_t> acked_at;  // True time of each acknowledged write; seq = index + 1.
  struct Mark {
    int64_t arrives, origin_time;
    uint64_t seq;
  };
  std::vector<Mark> in_flight;
  int64_t covered = INT64_MIN;
  uint64_t applied = 0;
  ClockFilter filter;
  SimResult run;
  int64_t next_write = 0, next_mark = 0, next_read = 500'000;
  for (int64_t t = 0; t < kEnd; t += 100) {
    if (t >= next_write) {
      acked_at.push_back(t);
      next_write = t + 100 + static_cast<int64_t>(rng() % 5'000);
    }
    if (t >= next_mark) {  // Clock read first, then the sequence.
      in_flight.push_back({t + kOneWay, origin_clock(t), acked_at.size()});
      // The reader's own heartbeat to the origin and its acknowledgment: an NTP exchange.
      int64_t t1 = t, t2 = origin_clock(t + kOneWay), t3 = origin_clock(t + kOneWay + 200),
              t4 = t + 2 * kOneWay + 200 + static_cast<int64_t>(rng() % 3'000);
      filter.Add(MeasureOffset(t1, t2, t3, t4));
      next_mark = t + kInterval;
    }
    while (!in_flight.empty() && in_flight.front().arrives <= t) {
      applied = std::max(applied, in_flight.front().seq);
      covered = std::max(covered, in_flight.front().origin_time);
      in_flight.erase(in_flight.begin());
    }
    if (t >= next_read && covered != INT64_MIN) {
      int64_t bound = ClockBoundUs(t, covered, max_error_us);
      run.max_bound_us = std::max(run.max_bound_us, bound);
      ++run.reads;
      // Every write acknowledged before t - bound must be applied.
      for (size_t i = applied; i < acked_at.size(); ++i) {
        if (acked_at[i] < t - bound) {
          ++run.violations;
          break;
        }
      }
      next_read = t + 1'000 + static_cast<int64_t>(rng() % 20'000);
    }
  }
  run.clock_trusted = filter.Best() && ClockWithin(*filter.Best(), max_error_us);
  return run;
}

TEST(ClockBoundTest, HonestWhileTheClocksAgreeWithinTheError) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    for (int64_t offset : {-10'000, -3'000, 0, 4'000, 10'000}) {
      SimResult r = Simulate(offset, 0, 10'000, seed);
      EXPECT_GT(r.reads, 500);
      EXPECT_EQ(r.violations, 0) << "offset " << offset << " seed " << seed;
      // Trusted when well inside the error (the estimate itself is off by up to half the
      // path's asymmetry, here up to 1.5 ms).
      if (std::abs(offset) <= 8'000) {
        EXPECT_TRUE(r.clock_trusted) << offset;
      }
      // One way, an interval and the error (plus what a clock behind adds): tighter than the
      // clock-free bound, a round trip (80 ms) plus the interval.
      EXPECT_LE(r.max_bound_us, 40'000 + 100'000 + 10'000 + std::max<int64_t>(0, -offset) + 1'000)
          << offset;
    }
    // A drifting clock (50 ppm: 1 ms over the 20 s run) stays within the error too.
    EXPECT_EQ(Simulate(5'000, 50, 10'000, seed).violations, 0);
  }
}

TEST(ClockBoundTest, AClockOutsideTheErrorMakesTheBoundLieAndIsDetected) {
  // The origin's clock 50 ms ahead while the bound assumes 10 ms: watermarks vouch for writes
  // that happen later; reads would claim more than they hold. The offset check catches it, so
  // a node never uses that bound.
  SimResult r = Simulate(50'000, 0, 10'000, 7);
  EXPECT_GT(r.violations, 0) << "the simulation must be able to see a lying bound";
  EXPECT_FALSE(r.clock_trusted);
  // A drift that carries the clock out of the error during the run: detected by the end.
  r = Simulate(0, 2'000, 10'000, 7);  // 2000 ppm: 40 ms off after 20 s.
  EXPECT_FALSE(r.clock_trusted);
  // A clock behind only makes the bound loose, never a lie; still flagged beyond the error.
  r = Simulate(-50'000, 0, 10'000, 7);
  EXPECT_EQ(r.violations, 0);
  EXPECT_FALSE(r.clock_trusted);
}

}  // namespace
}  // namespace edgestate::consistency

#include "bench/checker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace edgestate::bench {
namespace {

constexpr int64_t kMs = 1'000'000;

TEST(CheckReadsTest, FreshReadsAreNotStale) {
  std::vector<AckRecord> acks = {{0, 10 * kMs}, {0, 20 * kMs}};
  std::vector<ReadRecord> reads = {
      {0, 0, 5 * kMs, 100, -1}, {0, 1, 15 * kMs, 101, 0}, {0, 0, 25 * kMs, 102, 0}};
  ReadCheck c = CheckReads(reads, acks, {100}, 2);
  EXPECT_EQ(c.reads, 3u);
  EXPECT_EQ(c.stale, 0u);
}

TEST(CheckReadsTest, MissingAnAcknowledgedIncrementIsStale) {
  std::vector<AckRecord> acks = {{0, 20 * kMs}, {0, 10 * kMs}, {1, 5 * kMs}};
  // At 30 ms two increments of key 0 were acknowledged; a read showing one of them is stale.
  std::vector<ReadRecord> reads = {{0, 1, 30 * kMs, 1, -1}, {1, 0, 30 * kMs, 1, -1}};
  ReadCheck c = CheckReads(reads, acks, {0, 0}, 2);
  EXPECT_EQ(c.stale, 1u);
  EXPECT_EQ(c.stale_by_region[1], 1u);
  EXPECT_EQ(c.missed_increments, 1u);
}

TEST(CheckReadsTest, StaleWithinItsBoundIsNoViolation) {
  std::vector<AckRecord> acks = {{0, 10 * kMs}, {0, 28 * kMs}};
  // Read at 30 ms sees 1 of 2; it claimed 5 ms staleness: only the ack at 10 ms is vouched for.
  std::vector<ReadRecord> ok = {{0, 0, 30 * kMs, 1, 5}};
  ReadCheck c = CheckReads(ok, acks, {0}, 1);
  EXPECT_EQ(c.stale, 1u);
  EXPECT_EQ(c.bound_violations, 0u);
  // Claiming 1 ms while missing the increment acknowledged 2 ms earlier is a violation.
  std::vector<ReadRecord> bad = {{0, 0, 30 * kMs, 1, 1}};
  c = CheckReads(bad, acks, {0}, 1);
  EXPECT_EQ(c.bound_violations, 1u);
}

// A simulated run: one counter per key on a lagging replica, reads that report a bound.
// Streaming with periodic flushes must give exactly the all-at-once result, with memory that
// stays within the window.
TEST(ReadCheckerTest, StreamingMatchesAllAtOnceWithBoundedMemory) {
  std::mt19937_64 rng(7);
  const int keys = 5;
  std::vector<int64_t> base(keys, 0);
  for (int k = 0; k < keys; ++k) base[k] = static_cast<int64_t>(rng() % 100);
  std::vector<AckRecord> acks;
  std::vector<ReadRecord> reads;
  std::vector<std::vector<int64_t>> ack_times(keys);
  const int64_t window = 200 * kMs;
  ReadChecker streaming(base, 3, window);
  size_t max_held_acks = 0;
  int64_t now = 0;
  for (int step = 0; step < 200000; ++step) {
    now += static_cast<int64_t>(rng() % 50'000);  // Up to 50 us apart: ~8 s in all.
    uint32_t key = static_cast<uint32_t>(rng() % keys);
    if (rng() % 4 == 0) {
      acks.push_back({key, now});
      ack_times[key].push_back(now);
      streaming.AddAck(key, now);
    } else {
      // The replica lags 0..60 ms and reports a bound that is sometimes too small.
      int64_t lag = static_cast<int64_t>(rng() % (60 * kMs));
      const auto& t = ack_times[key];
      int64_t seen = std::lower_bound(t.begin(), t.end(), now - lag) - t.begin();
      int64_t bound_ms = rng() % 10 == 0 ? lag / kMs / 2 : lag / kMs + 1;
      // Reads complete (and are added) up to 30 ms after they were sent.
      ReadRecord r{key, static_cast<uint32_t>(rng() % 3),
                   now - static_cast<int64_t>(rng() % (30 * kMs)), base[key] + seen, bound_ms};
      r.sent_ns = std::max<int64_t>(r.sent_ns, 0);
      reads.push_back(r);
      streaming.AddRead(r);
    }
    if (step % 1000 == 0) streaming.Flush(now - 40 * kMs);  // Past the longest request.
    max_held_acks = std::max(max_held_acks, streaming.held_acks());
  }
  streaming.FlushAll();
  ReadCheck all = CheckReads(reads, acks, base, 3);
  const ReadCheck& s = streaming.result();
  EXPECT_GT(all.stale, 1000u);
  EXPECT_GT(all.bound_violations, 100u);
  EXPECT_EQ(s.reads, all.reads);
  EXPECT_EQ(s.stale, all.stale);
  EXPECT_EQ(s.missed_increments, all.missed_increments);
  EXPECT_EQ(s.bound_violations, all.bound_violations);
  EXPECT_EQ(s.stale_by_region, all.stale_by_region);
  EXPECT_EQ(streaming.bounds_unchecked(), 0u);
  // About 0.25 acks per 25 us over a 200 ms window plus a flush period: far below 50 000.
  EXPECT_LT(max_held_acks, 6000u);
  EXPECT_EQ(streaming.held_reads(), 0u);
}

TEST(ReadCheckerTest, BoundsReachingPastTheWindowAreCountedUnchecked) {
  ReadChecker c({0}, 1, /*window_ns=*/100 * kMs);
  c.AddAck(0, 10 * kMs);
  c.AddAck(0, 500 * kMs);
  c.Flush(600 * kMs);  // Forgets the time of the first ack (keeps its count).
  // Sent at 700 ms, missing both acks: stale (exact), but a 1 s bound reaches back to before
  // the horizon, so it can be neither confirmed nor refuted.
  c.AddRead({0, 0, 700 * kMs, 0, 1000});
  // Missing the ack at 500 ms while claiming 100 ms: a violation the window still shows.
  c.AddRead({0, 0, 700 * kMs, 1, 100});
  c.FlushAll();
  EXPECT_EQ(c.result().stale, 2u);
  EXPECT_EQ(c.result().missed_increments, 3u);
  EXPECT_EQ(c.result().bound_violations, 1u);
  EXPECT_EQ(c.bounds_unchecked(), 1u);
}

TEST(CheckFinalTest, LostAndPhantom) {
  LossCheck l = CheckFinal({10, 0}, {5, 3}, {6, 3}, {{15, 3}, {12, 3}, {17, 3}});
  EXPECT_EQ(l.lost_by_region, (std::vector<int64_t>{0, 3, 0}));
  EXPECT_EQ(l.phantom_by_region, (std::vector<int64_t>{0, 0, 1}));
}

}  // namespace
}  // namespace edgestate::bench

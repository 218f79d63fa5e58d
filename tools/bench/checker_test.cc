#include "bench/checker.h"

#include <gtest/gtest.h>

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

TEST(CheckFinalTest, LostAndPhantom) {
  LossCheck l = CheckFinal({10, 0}, {5, 3}, {6, 3}, {{15, 3}, {12, 3}, {17, 3}});
  EXPECT_EQ(l.lost_by_region, (std::vector<int64_t>{0, 3, 0}));
  EXPECT_EQ(l.phantom_by_region, (std::vector<int64_t>{0, 0, 1}));
}

}  // namespace
}  // namespace edgestate::bench

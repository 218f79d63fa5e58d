#include "crdt/lww_register.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

namespace edgestate::crdt {
namespace {

LwwRegister Write(int64_t wall, uint32_t logical, std::string origin, std::string value,
                  int64_t expires = 0) {
  LwwRegister r;
  r.hlc = {wall, logical};
  r.origin = std::move(origin);
  r.value = std::move(value);
  r.expires_at_ms = expires;
  return r;
}

LwwRegister Tombstone(int64_t wall, uint32_t logical, std::string origin) {
  LwwRegister r;
  r.hlc = {wall, logical};
  r.origin = std::move(origin);
  r.deleted = true;
  return r;
}

TEST(LwwRegisterTest, LaterClockWins) {
  LwwRegister r = Write(100, 0, "lhr", "a");
  EXPECT_TRUE(Merge(&r, Write(100, 1, "fra", "b")));
  EXPECT_EQ(r.value, "b");
  EXPECT_FALSE(Merge(&r, Write(99, 7, "syd", "c")));  // Older wall time loses.
  EXPECT_EQ(r.value, "b");
  EXPECT_FALSE(Merge(&r, r));  // Idempotent.
}

TEST(LwwRegisterTest, TiesBreakOnOriginTheSameEverywhere) {
  LwwRegister a = Write(100, 0, "fra", "from-fra");
  LwwRegister b = Write(100, 0, "lhr", "from-lhr");
  LwwRegister x = a, y = b;
  Merge(&x, b);
  Merge(&y, a);
  EXPECT_EQ(x, y);
  EXPECT_EQ(x.value, "from-lhr");  // "lhr" > "fra".
}

TEST(LwwRegisterTest, DeleteIsAWriteThatOlderWritesCannotUndo) {
  LwwRegister r = Write(100, 0, "lhr", "session");
  EXPECT_TRUE(Merge(&r, Tombstone(200, 0, "fra")));
  EXPECT_FALSE(IsLive(r, 150));
  // A partitioned region heals and sends its older write: still deleted.
  EXPECT_FALSE(Merge(&r, Write(150, 3, "syd", "stale")));
  EXPECT_TRUE(r.deleted);
  // A write after the delete brings the key back.
  EXPECT_TRUE(Merge(&r, Write(201, 0, "syd", "new")));
  EXPECT_TRUE(IsLive(r, 300));
}

TEST(LwwRegisterTest, ExpiryIsAbsolute) {
  LwwRegister r = Write(1000, 0, "lhr", "v", /*expires=*/1500);
  EXPECT_TRUE(IsLive(r, 1000));
  EXPECT_TRUE(IsLive(r, 1499));
  EXPECT_FALSE(IsLive(r, 1500));  // Dead from its expiry on, on every replica.
  EXPECT_TRUE(IsDead(r, 1501));
  EXPECT_TRUE(IsLive(Write(1, 0, "lhr", "v"), std::numeric_limits<int64_t>::max()));
  // An older write without expiry arriving later does not revive an expired newer one.
  EXPECT_FALSE(Merge(&r, Write(900, 0, "fra", "older")));
  EXPECT_FALSE(IsLive(r, 2000));
}

TEST(LwwRegisterTest, TtlArithmeticAtTheEdges) {
  EXPECT_EQ(*ExpiresAt(1000, 1), 1001);
  EXPECT_EQ(*ExpiresAt(1000, kMaxTtlMs), 1000 + kMaxTtlMs);
  EXPECT_FALSE(ExpiresAt(1000, 0).ok());
  EXPECT_FALSE(ExpiresAt(1000, -1).ok());
  EXPECT_FALSE(ExpiresAt(1000, kMaxTtlMs + 1).ok());
  EXPECT_FALSE(ExpiresAt(1000, std::numeric_limits<int64_t>::max()).ok());
  EXPECT_FALSE(ExpiresAt(-1, 10).ok());
  EXPECT_FALSE(ExpiresAt(std::numeric_limits<int64_t>::max() - 5, 10).ok());
  EXPECT_EQ(*ExpiresAt(std::numeric_limits<int64_t>::max() - 10, 10),
            std::numeric_limits<int64_t>::max());
  EXPECT_EQ(ExpiresAt(1000, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(HlcClockTest, MonotoneAndAboveWhatItSaw) {
  HlcClock clock;
  Hlc a = clock.Next(100);
  EXPECT_EQ(a, (Hlc{100, 0}));
  Hlc b = clock.Next(100);
  EXPECT_EQ(b, (Hlc{100, 1}));
  Hlc c = clock.Next(50);  // The wall clock went back: still later.
  EXPECT_GT(c, b);
  clock.Observe(Hlc{500, 9});
  Hlc d = clock.Next(120);
  EXPECT_EQ(d, (Hlc{500, 10}));
  // A floor from the key being overwritten (written before a restart with a later clock).
  HlcClock fresh;
  EXPECT_EQ(fresh.Next(10, Hlc{900, 4}), (Hlc{900, 5}));
  EXPECT_EQ(fresh.Next(1000), (Hlc{1000, 0}));
}

TEST(HlcClockTest, LogicalOverflowBorrowsAMillisecond) {
  HlcClock clock;
  clock.Observe(Hlc{7, std::numeric_limits<uint32_t>::max()});
  EXPECT_EQ(clock.Next(7), (Hlc{8, 0}));
  EXPECT_EQ(clock.Next(7), (Hlc{8, 1}));
}

// Seeded random writes from several origins: merging any permutation, grouping or repetition
// of them gives the same register, which is the greatest write.
TEST(LwwRegisterTest, MergeIsCommutativeAssociativeIdempotent) {
  const std::vector<std::string> origins = {"fra", "iad", "lhr", "syd"};
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937_64 rng(seed);
    std::vector<LwwRegister> writes;
    size_t n = 2 + rng() % 10;
    for (size_t i = 0; i < n; ++i) {
      // Few distinct clocks, so ties on hlc are common and the tie-break is exercised.
      LwwRegister w = Write(static_cast<int64_t>(rng() % 4), static_cast<uint32_t>(rng() % 2),
                            origins[rng() % origins.size()], std::to_string(rng() % 3),
                            rng() % 3 == 0 ? static_cast<int64_t>(rng() % 5) : 0);
      if (rng() % 4 == 0) {
        w.deleted = true;
        w.value.clear();
      }
      w.origin_seq = rng() % 3;
      writes.push_back(w);
    }
    LwwRegister expected = *std::max_element(
        writes.begin(), writes.end(),
        [](const LwwRegister& a, const LwwRegister& b) { return Compare(a, b) < 0; });

    for (int trial = 0; trial < 10; ++trial) {
      std::vector<LwwRegister> order = writes;
      std::shuffle(order.begin(), order.end(), rng);
      // Repeat some writes (redelivery).
      for (size_t i = 0, extra = rng() % 4; i < extra; ++i) order.push_back(order[rng() % n]);
      // Fold left into one replica.
      LwwRegister left;
      for (const auto& w : order) Merge(&left, w);
      // Fold into two replicas that then merge each other (associativity, grouping).
      size_t cut = rng() % order.size();
      LwwRegister x, y;
      for (size_t i = 0; i < order.size(); ++i) Merge(i < cut ? &x : &y, order[i]);
      LwwRegister xy = x, yx = y;
      Merge(&xy, y);
      Merge(&yx, x);
      ASSERT_EQ(left, expected) << "seed " << seed;
      ASSERT_EQ(xy, expected) << "seed " << seed;
      ASSERT_EQ(yx, expected) << "seed " << seed;
      LwwRegister again = xy;
      EXPECT_FALSE(Merge(&again, xy));
      ASSERT_EQ(again, expected);
    }
  }
}

}  // namespace
}  // namespace edgestate::crdt

#include "crdt/pn_counter.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>

namespace edgestate::crdt {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

TEST(PnCounterTest, AddsAndSubtracts) {
  PnCounter c;
  EXPECT_EQ(c.Value(), 0);
  EXPECT_EQ(*c.Add("iad", 5, 10), 5);
  EXPECT_EQ(*c.Add("iad", -7, 20), -2);
  EXPECT_EQ(*c.Add("lhr", 3, 15), 1);
  EXPECT_EQ(c.Value(), 1);
  EXPECT_EQ(c.UpdatedAtMs(), 20);
  EXPECT_EQ(c.Find("iad")->version, 2u);
  EXPECT_EQ(c.Find("iad")->inc, 5u);
  EXPECT_EQ(c.Find("iad")->dec, 7u);
  EXPECT_EQ(c.Find("sjc"), nullptr);
}

TEST(PnCounterTest, TakeSlotRemovesOneOriginOnly) {
  PnCounter c;
  ASSERT_TRUE(c.Add("iad", 3, 1).ok());
  ASSERT_TRUE(c.Add("lhr", 4, 1).ok());
  std::optional<Slot> taken = c.TakeSlot("lhr");
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->inc, 4u);
  EXPECT_EQ(c.Value(), 3);
  EXPECT_EQ(c.Find("lhr"), nullptr);
  EXPECT_FALSE(c.TakeSlot("lhr").has_value());
  EXPECT_EQ(c.slots().size(), 1u);
}

TEST(PnCounterTest, RejectsOverflowWithoutChange) {
  PnCounter c;
  ASSERT_TRUE(c.Add("iad", kMax, 1).ok());
  PnCounter before = c;
  StatusOr<int64_t> r = c.Add("iad", 1, 2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c, before);
  EXPECT_EQ(*c.Add("iad", kMin, 3), -1);
  EXPECT_EQ(*c.Add("iad", kMin + 1, 4), kMin);
  EXPECT_FALSE(c.Add("iad", -1, 5).ok());
  EXPECT_EQ(c.Value(), kMin);
}

TEST(PnCounterTest, ConcurrentOverflowSaturatesInsteadOfWrapping) {
  // Each region accepts kMax - 10 locally; merged, the exact sum is far above int64.
  PnCounter a, b;
  ASSERT_TRUE(a.Add("iad", kMax - 10, 1).ok());
  ASSERT_TRUE(b.Add("lhr", kMax - 10, 1).ok());
  a.Merge(b);
  EXPECT_EQ(a.ExactValue(), 2 * static_cast<__int128>(kMax - 10));
  EXPECT_EQ(a.Value(), kMax);
  // Further growth is refused and changes nothing; a decrement is accepted and stays exact.
  PnCounter before = a;
  EXPECT_FALSE(a.Add("iad", 1, 2).ok());
  EXPECT_EQ(a, before);
  EXPECT_EQ(*a.Add("iad", -5, 3), kMax);
  EXPECT_EQ(a.ExactValue(), 2 * static_cast<__int128>(kMax - 10) - 5);
  // Coming back all the way into range gives exact values again.
  ASSERT_TRUE(a.Add("lhr", kMin, 4).ok());
  EXPECT_EQ(a.ExactValue(), 2 * static_cast<__int128>(kMax - 10) - 5 + kMin);
  EXPECT_EQ(a.Value(), static_cast<int64_t>(a.ExactValue()));

  PnCounter c, d;
  ASSERT_TRUE(c.Add("iad", kMin + 1, 1).ok());
  ASSERT_TRUE(d.Add("lhr", kMin + 1, 1).ok());
  c.Merge(d);
  EXPECT_EQ(c.Value(), kMin);
  EXPECT_FALSE(c.Add("iad", -1, 2).ok());
  EXPECT_EQ(*c.Add("iad", 1, 3), kMin);
}

TEST(PnCounterTest, RejectsSlotExhaustion) {
  PnCounter c;
  // inc grows by 2*kMax per round while the value stays at 0; the slot runs out first.
  ASSERT_TRUE(c.Add("iad", kMax, 1).ok());
  ASSERT_TRUE(c.Add("iad", -kMax, 1).ok());
  ASSERT_TRUE(c.Add("iad", kMax, 1).ok());
  ASSERT_TRUE(c.Add("iad", -kMax, 1).ok());
  PnCounter before = c;
  StatusOr<int64_t> r = c.Add("iad", kMax, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(c, before);
  EXPECT_EQ(c.Value(), 0);
}

TEST(PnCounterTest, MinDeltaMagnitude) {
  PnCounter c;
  EXPECT_EQ(*c.Add("x", kMin, 1), kMin);
  EXPECT_EQ(c.Find("x")->dec, uint64_t{1} << 63);
}

// Seeded random replicas: each origin writes only through its own replica; replicas exchange
// state by merge in random order with random repetition.
struct World {
  std::vector<std::string> origins{"iad", "sjc", "lhr", "fra", "nrt"};
  std::vector<PnCounter> replicas = std::vector<PnCounter>(5);
  int64_t expected_sum = 0;
};

PnCounter RandomState(std::mt19937_64& rng, int64_t* sum) {
  static const std::vector<std::string> kOrigins = {"a", "b", "c", "d"};
  PnCounter c;
  std::uniform_int_distribution<int> pick(0, 3);
  std::uniform_int_distribution<int64_t> delta(-1000, 1000);
  for (int i = 0; i < 20; ++i) {
    int64_t d = delta(rng);
    if (!c.Add(kOrigins[pick(rng)], d, i).ok()) ADD_FAILURE() << "unexpected overflow";
    *sum += d;
  }
  return c;
}

class PnCounterPropertyTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(PnCounterPropertyTest, MergeIsCommutativeAssociativeIdempotent) {
  std::mt19937_64 rng(GetParam());
  for (int round = 0; round < 200; ++round) {
    int64_t ignored = 0;
    PnCounter a = RandomState(rng, &ignored);
    PnCounter b = RandomState(rng, &ignored);
    PnCounter c = RandomState(rng, &ignored);

    PnCounter ab = a, ba = b;
    ab.Merge(b);
    ba.Merge(a);
    EXPECT_EQ(ab, ba) << "commutativity, seed " << GetParam();

    PnCounter ab_c = ab;
    ab_c.Merge(c);
    PnCounter bc = b;
    bc.Merge(c);
    PnCounter a_bc = a;
    a_bc.Merge(bc);
    EXPECT_EQ(ab_c, a_bc) << "associativity, seed " << GetParam();

    PnCounter aa = a;
    aa.Merge(a);
    EXPECT_EQ(aa, a) << "idempotence, seed " << GetParam();
  }
}

TEST_P(PnCounterPropertyTest, ValueEqualsSumOfAllIncrementsAfterAnyGossip) {
  std::mt19937_64 rng(GetParam());
  World w;
  std::uniform_int_distribution<int> pick(0, 4);
  std::uniform_int_distribution<int64_t> delta(-1'000'000, 1'000'000);
  std::uniform_int_distribution<int> coin(0, 2);
  for (int step = 0; step < 2000; ++step) {
    if (coin(rng) == 0) {
      int from = pick(rng), to = pick(rng);
      w.replicas[to].Merge(w.replicas[from]);  // Possibly stale, repeated or self.
    } else {
      int r = pick(rng);
      int64_t d = delta(rng);
      ASSERT_TRUE(w.replicas[r].Add(w.origins[r], d, step).ok());
      w.expected_sum += d;
    }
  }
  // Full exchange in a random order, twice (duplicates must not matter).
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<int> order = {0, 1, 2, 3, 4};
    std::shuffle(order.begin(), order.end(), rng);
    for (int from : order)
      for (int to : order) w.replicas[to].Merge(w.replicas[from]);
  }
  for (const PnCounter& r : w.replicas) {
    EXPECT_EQ(r.Value(), w.expected_sum) << "seed " << GetParam();
    EXPECT_EQ(r, w.replicas[0]);
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, PnCounterPropertyTest,
                         ::testing::Values(1, 2, 3, 42, 1234567, 0xdeadbeef));

}  // namespace
}  // namespace edgestate::crdt

namespace edgestate::crdt {
namespace {

// The article's replication: each region keeps one integer and, on a timer, posts its whole
// value to the others, which overwrite theirs. The same schedule of increments and exchanges
// on PN-counters loses nothing.
TEST(WholeValueReplicationTest, LosesConcurrentIncrementsWhereCrdtDoesNot) {
  std::mt19937_64 rng(99);
  constexpr int kRegions = 3;
  std::vector<int64_t> whole(kRegions, 0);
  std::vector<PnCounter> crdt(kRegions);
  const std::vector<std::string> names = {"iad", "lhr", "fra"};
  int64_t acknowledged = 0;
  std::uniform_int_distribution<int> pick(0, kRegions - 1);
  for (int tick = 0; tick < 100; ++tick) {
    // Between two exchanges every region acknowledges a few increments.
    for (int i = 0; i < 10; ++i) {
      int r = pick(rng);
      whole[r] += 1;
      ASSERT_TRUE(crdt[r].Add(names[r], 1, tick).ok());
      ++acknowledged;
    }
    // Every region posts its state to every other region.
    std::vector<int64_t> sent = whole;
    std::vector<PnCounter> sent_crdt = crdt;
    for (int from = 0; from < kRegions; ++from) {
      for (int to = 0; to < kRegions; ++to) {
        if (from == to) continue;
        whole[to] = sent[from];  // Last writer wins.
        crdt[to].Merge(sent_crdt[from]);
      }
    }
  }
  for (int r = 0; r < kRegions; ++r) {
    EXPECT_EQ(crdt[r].Value(), acknowledged);
    EXPECT_LT(whole[r], acknowledged / 2) << "whole-value replication kept most increments?";
  }
}

}  // namespace
}  // namespace edgestate::crdt

#include "consistency/session_token.h"

#include <gtest/gtest.h>

#include <random>

namespace edgestate::consistency {
namespace {

const std::vector<std::string> kEight = {"iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"};

Position Full(uint64_t seq) {
  Position p;
  for (size_t i = 0; i < kEight.size(); ++i) p.push_back({1'764'000'000u + uint32_t(i), seq + i});
  return p;
}

TEST(SessionCodecTest, RegionsAreSortedAndIndexed) {
  SessionCodec c(kEight, "secret");
  EXPECT_EQ(c.regions().front(), "fra");
  EXPECT_EQ(c.regions().back(), "syd");
  EXPECT_EQ(*c.IndexOf("iad"), 2u);
  EXPECT_FALSE(c.IndexOf("xyz").has_value());
  SessionCodec shuffled({"syd", "iad", "jnb", "fra", "lhr", "gru", "nrt", "sjc", "iad"}, "secret");
  EXPECT_EQ(shuffled.regions(), c.regions());
}

TEST(SessionCodecTest, RoundTripsAndStaysSmallForEightRegions) {
  SessionCodec c(kEight, "secret");
  for (uint64_t seq : {0ull, 1ull, 1'000'000ull, 1ull << 40}) {
    Position p = Full(seq);
    std::string t = c.Encode(p);
    EXPECT_LE(t.size(), 128u) << seq;
    EXPECT_EQ(
        t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        std::string::npos);
    auto back = c.Decode(t);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, p);
  }
}

TEST(SessionCodecTest, RefusesForgedTruncatedAndForeignTokens) {
  SessionCodec c(kEight, "secret");
  std::string t = c.Encode(Full(42));
  // Every single-character change is caught (the MAC covers every byte).
  for (size_t i = 0; i < t.size(); ++i) {
    std::string bad = t;
    bad[i] = bad[i] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(c.Decode(bad).ok()) << i;
  }
  for (size_t n = 0; n < t.size(); ++n) EXPECT_FALSE(c.Decode(t.substr(0, n)).ok()) << n;
  EXPECT_FALSE(c.Decode(t + "A").ok());
  EXPECT_FALSE(c.Decode(t + "==").ok());
  EXPECT_FALSE(c.Decode(std::string(5000, 'A')).ok());
  EXPECT_FALSE(c.Decode("not a token!").ok());
  // Another secret, or other regions: a foreign cluster.
  EXPECT_FALSE(SessionCodec(kEight, "other").Decode(t).ok());
  std::vector<std::string> seven(kEight.begin(), kEight.end() - 1);
  EXPECT_FALSE(SessionCodec(seven, "secret").Decode(t).ok());
  auto st = SessionCodec(kEight, "other").Decode(t).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

TEST(SessionCodecTest, RandomBytesNeverDecode) {
  SessionCodec c(kEight, "secret");
  std::mt19937_64 rng(7);
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (int i = 0; i < 2000; ++i) {
    std::string t(rng() % 200, 'A');
    for (char& ch : t) ch = alphabet[rng() % alphabet.size()];
    EXPECT_FALSE(c.Decode(t).ok()) << t;
  }
}

TEST(PositionTest, MergeIsALatticeJoin) {
  std::mt19937_64 rng(11);
  auto random_position = [&] {
    Position p(4);
    for (auto& o : p) o = {uint32_t(rng() % 3), rng() % 5};
    return p;
  };
  for (int i = 0; i < 500; ++i) {
    Position a = random_position(), b = random_position(), c = random_position();
    EXPECT_EQ(Merge(a, b), Merge(b, a));
    EXPECT_EQ(Merge(Merge(a, b), c), Merge(a, Merge(b, c)));
    EXPECT_EQ(Merge(a, a), a);
    // The merge covers both, as a node at the merged position would.
    EXPECT_TRUE(Covers(Merge(a, b), a).missing.empty());
    EXPECT_TRUE(Covers(Merge(a, b), b).missing.empty());
  }
  EXPECT_EQ(Merge({{5, 9}}, {{6, 1}}), (Position{{6, 1}}));  // A later life wins.
  EXPECT_EQ(Merge({{5, 9}}, {{5, 10}, {1, 1}}), (Position{{5, 10}, {1, 1}}));
}

TEST(PositionTest, CoversComparesWithinALifeAndSeesLostLives) {
  Position node = {{10, 100}, {20, 5}, {0, 0}};
  EXPECT_TRUE(Covers(node, {{10, 100}, {20, 5}, {0, 0}}).ok());
  EXPECT_TRUE(Covers(node, {{10, 99}, {0, 0}, {0, 0}}).ok());
  Coverage c = Covers(node, {{10, 101}, {20, 5}, {7, 1}});
  EXPECT_EQ(c.missing, (std::vector<size_t>{0, 2}));  // Behind; and a region never heard from.
  EXPECT_TRUE(c.lost.empty());
  c = Covers(node, {{9, 3}, {21, 1}, {0, 0}});
  EXPECT_EQ(c.lost, (std::vector<size_t>{0}));     // The node knows a newer life of region 0.
  EXPECT_EQ(c.missing, (std::vector<size_t>{1}));  // Region 1's newer life has not reached it.
  // A token that saw nothing of a region's new life asks for nothing of it.
  EXPECT_TRUE(Covers(node, {{11, 0}, {0, 0}, {0, 0}}).ok());
}

}  // namespace
}  // namespace edgestate::consistency

#include "consistency/session_token.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace edgestate::consistency {
namespace {

const std::vector<std::string> kEight = {"iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"};
const std::string kBase64UrlAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
// A version-2 token of {lhr: epoch 7, seq 300} under the secret "secret", computed outside the
// code (KnownTokensOfBothVersionsAreStable).
const std::string kNamedToken = "AgoNCgNsaHIVBwAAABisAsf-Xyk6lRF4";

Position Full(uint64_t seq) {
  std::vector<std::string> sorted = kEight;
  std::sort(sorted.begin(), sorted.end());
  Position p;
  for (size_t i = 0; i < sorted.size(); ++i) {
    p.push_back({sorted[i], {1'764'000'000u + uint32_t(i), seq + i + 1}});
  }
  return p;
}

TEST(SessionCodecTest, RoundTripsAndStaysSmallForEightRegions) {
  SessionCodec c(kEight, "secret");
  for (uint64_t seq : {0ull, 1ull, 1'000'000ull, (1ull << 42) - 9}) {
    Position p = Full(seq);
    std::string t = c.Encode(p);
    EXPECT_LE(t.size(), 128u) << seq;  // Positional: the regions are configured.
    EXPECT_EQ(t.find_first_not_of(kBase64UrlAlphabet), std::string::npos);
    auto back = c.Decode(t);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, p);
    // A node given no region list (peers found by DNS) names them: longer, decodes anywhere.
    std::string named = SessionCodec({}, "secret").Encode(p);
    EXPECT_LE(named.size(), 256u) << seq;
    back = c.Decode(named);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, p);
  }
  auto empty = c.Decode(c.Encode({}));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(SessionCodecTest, RegionsOutsideTheConfiguredListAreNamed) {
  // Regions found by DNS join and leave: a position naming a region outside the configured list
  // is encoded with names, and decodes at a node configured with other regions, or none.
  SessionCodec three({"iad", "lhr", "fra"}, "secret");
  Position p = {{"ams", {7, 1}}, {"lhr", {9, 4}}, {"zzz-new_1", {3, 2}}};
  std::string t = three.Encode(p);
  for (const SessionCodec& other :
       {SessionCodec({}, "secret"), SessionCodec({"syd"}, "secret"), three}) {
    auto back = other.Decode(t);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, p);
  }
  EXPECT_FALSE(SessionCodec({}, "other").Decode(t).ok());  // Another cluster's secret.
  // A positional token needs the same configured list.
  std::string positional = three.Encode({{"lhr", {9, 4}}});
  EXPECT_LT(positional.size(), t.size());
  EXPECT_TRUE(SessionCodec({"lhr", "fra", "iad", "iad"}, "secret").Decode(positional).ok());
  EXPECT_FALSE(SessionCodec({"iad", "lhr"}, "secret").Decode(positional).ok());
  EXPECT_FALSE(SessionCodec({}, "secret").Decode(positional).ok());
  EXPECT_FALSE(SessionCodec({"lhr", "iad", "fra"}, "other").Decode(positional).ok());
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
  // Another secret: a foreign cluster.
  EXPECT_FALSE(SessionCodec(kEight, "other").Decode(t).ok());
  auto st = SessionCodec(kEight, "other").Decode(t).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

// Tokens outlive the node that issued them (clients keep them across a rolling upgrade), so the
// encoding is fixed: these were computed independently (Python's hmac and base64 modules over
// the protobuf bytes written out by hand) and must decode and encode the same forever.
TEST(SessionCodecTest, KnownTokensOfBothVersionsAreStable) {
  struct Known {
    std::vector<std::string> regions;  // Configured: version 1 while the position names only these.
    Position position;
    std::string token;
  };
  for (const Known& k :
       {Known{{"iad", "fra"}, {{"fra", {7, 300}}}, "AQoIBwAAAAAAAAASA6wCAEQ9zCFakXgE"},
        Known{{}, {{"lhr", {7, 300}}}, kNamedToken}}) {
    SessionCodec c(k.regions, "secret");
    EXPECT_EQ(c.Encode(k.position), k.token);
    auto back = c.Decode(k.token);
    ASSERT_TRUE(back.ok()) << k.token << ": " << back.status().ToString();
    EXPECT_EQ(*back, k.position) << k.token;
  }
}

// One spelling per token: no padding, white space, standard-alphabet characters or trailing bits
// that differ from the encoder's, even where a lenient decoder would yield the same bytes.
TEST(SessionCodecTest, RefusesOtherSpellingsOfAGoodToken) {
  SessionCodec c({}, "secret");
  const std::string& t = kNamedToken;
  ASSERT_TRUE(c.Decode(t).ok());
  EXPECT_FALSE(c.Decode(t + "=").ok());
  EXPECT_FALSE(c.Decode(" " + t).ok());
  EXPECT_FALSE(c.Decode(t.substr(0, 10) + "\n" + t.substr(10)).ok());
  std::string standard = t;
  std::replace(standard.begin(), standard.end(), '-', '+');
  EXPECT_FALSE(c.Decode(standard).ok());
  // 24 bytes encode to 32 characters exactly; the last character of 23 bytes (31 characters)
  // carries 2 unused bits: setting one gives a second spelling of the same bytes.
  std::string short_token = c.Encode({{"lhr", {7, 3}}});
  ASSERT_EQ(short_token.size() % 4, 3u) << short_token;
  ASSERT_TRUE(c.Decode(short_token).ok());
  std::string other = short_token;
  other.back() = kBase64UrlAlphabet[kBase64UrlAlphabet.find(other.back()) | 1];
  ASSERT_NE(other, short_token);
  EXPECT_FALSE(c.Decode(other).ok());
}

TEST(SessionCodecTest, RefusesBodiesThatAreNotCanonicalEvenWithAGoodMac) {
  // A node never issues these; a leaked secret must still not crash or confuse a node.
  SessionCodec c({}, "secret");
  for (const Position& bad : std::vector<Position>{
           {{"lhr", {1, 1}}, {"fra", {1, 1}}},  // Unsorted.
           {{"lhr", {1, 1}}, {"lhr", {2, 1}}},  // Repeated.
           {{"lhr", {1, 0}}},                   // Nothing seen, listed.
           {{"LHR", {1, 1}}},                   // Not a region name.
           {{"", {1, 1}}},
           {{std::string(33, 'a'), {1, 1}}},
       }) {
    EXPECT_FALSE(c.Decode(c.Encode(bad)).ok()) << bad.front().region;
  }
  Position many;
  for (size_t i = 0; i <= kMaxTokenRegions; ++i) many.push_back({fmt::format("r{:03}", i), {1, 1}});
  EXPECT_FALSE(c.Decode(c.Encode(many)).ok());
  many.pop_back();
  auto ok = c.Decode(c.Encode(many));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(*ok, many);
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

TEST(PositionTest, AtAndSetAtKeepPositionsCanonical) {
  Position p;
  SetAt(&p, "lhr", {2, 5});
  SetAt(&p, "fra", {1, 3});
  SetAt(&p, "syd", {4, 1});
  EXPECT_EQ(p, (Position{{"fra", {1, 3}}, {"lhr", {2, 5}}, {"syd", {4, 1}}}));
  SetAt(&p, "lhr", {2, 6});
  EXPECT_EQ(At(p, "lhr"), (OriginPosition{2, 6}));
  SetAt(&p, "lhr", {3, 0});  // Nothing seen of the new life: no entry.
  EXPECT_EQ(p, (Position{{"fra", {1, 3}}, {"syd", {4, 1}}}));
  EXPECT_EQ(At(p, "iad"), OriginPosition{});
}

TEST(PositionTest, MergeIsALatticeJoin) {
  std::mt19937_64 rng(11);
  const std::vector<std::string> names = {"a", "b", "c", "d"};
  auto random_position = [&] {
    Position p;
    for (const std::string& r : names) {
      if (rng() % 3 == 0) continue;
      SetAt(&p, r, {uint32_t(rng() % 3), rng() % 5});
    }
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
  EXPECT_EQ(Merge({{"a", {5, 9}}}, {{"a", {6, 1}}}), (Position{{"a", {6, 1}}}));  // Later life.
  EXPECT_EQ(Merge({{"a", {5, 9}}}, {{"a", {5, 10}}, {"b", {1, 1}}}),
            (Position{{"a", {5, 10}}, {"b", {1, 1}}}));
}

TEST(PositionTest, CoversComparesWithinALifeAndSeesLostLives) {
  Position node = {{"a", {10, 100}}, {"b", {20, 5}}};
  EXPECT_TRUE(Covers(node, {{"a", {10, 100}}, {"b", {20, 5}}}).ok());
  EXPECT_TRUE(Covers(node, {{"a", {10, 99}}}).ok());
  Coverage c = Covers(node, {{"a", {10, 101}}, {"b", {20, 5}}, {"c", {7, 1}}});
  EXPECT_EQ(c.missing, (std::vector<std::string>{"a", "c"}));  // Behind; a region never heard.
  EXPECT_TRUE(c.lost.empty());
  c = Covers(node, {{"a", {9, 3}}, {"b", {21, 1}}});
  EXPECT_EQ(c.lost, (std::vector<std::string>{"a"}));     // The node knows a newer life of a.
  EXPECT_EQ(c.missing, (std::vector<std::string>{"b"}));  // b's newer life has not reached it.
  EXPECT_TRUE(Covers(node, {}).ok());
}

}  // namespace
}  // namespace edgestate::consistency
